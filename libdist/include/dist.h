/*  dist.h - the libdist umbrella header: include this to get the whole
 *  public API. Each module's header documents its own contract.
 *
 *  C++ includes these headers as they are: each one wraps its own
 *  declarations in extern "C" (this one declares nothing, so it needs no
 *  guard), and tests/test_cxx.cpp builds them as C++17 with -pedantic.
 */
#ifndef DIST_H_INCLUDED
#define DIST_H_INCLUDED

#include "dist/common.h"
#include "dist/error.h"
#include "dist/process.h"
#include "dist/pipe.h"
#include "dist/queue.h"
#include "dist/task.h"
#include "dist/value.h"
#include "dist/pool.h"
#include "dist/shm.h"
#include "dist/subprocess.h"
#include "dist/sync.h"
#include "dist/wire.h"
#include "dist/log.h"
#include "dist/master.h"
#include "dist/worker.h"
#include "dist/client.h"
#include "dist/security.h"

#endif

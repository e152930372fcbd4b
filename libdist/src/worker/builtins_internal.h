/*  builtins_internal.h - the switch that lets dist.exec run commands.
 *
 *  The built-in tasks (builtins.c) run inside pool processes, which are
 *  forked when the pool is created: a worker sets the switch before it
 *  creates its pool so that the processes inherit it. It is one switch per
 *  program (the threads backend reads it at run time), so two workers in
 *  one process share it.
 */
#ifndef DIST_BUILTINS_INTERNAL_H_INCLUDED
#define DIST_BUILTINS_INTERNAL_H_INCLUDED

#include <stdbool.h>

void dist__builtins_allow_exec(bool allow);

#endif

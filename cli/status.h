/*  status.h - `dist status` as a table: the master, its workers, its
 *  queues, the counters and the rates of a STATUS answer
 *  (docs/PROTOCOL.md section 7b). Fields that are missing or of another
 *  type print as "-"; unknown fields are ignored. */
#ifndef DIST_CLI_STATUS_H_INCLUDED
#define DIST_CLI_STATUS_H_INCLUDED

#include <msgpack.h>
#include <stdio.h>

void cli_status_print(const msgpack_object *status, FILE *out);

#endif

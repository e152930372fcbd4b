/*  status.h - `dist status` as a table: the master, its workers, its
 *  queues, the counters and the rates of a STATUS answer
 *  (docs/PROTOCOL.md section 7b). Fields that are missing or of another
 *  type print as "-"; unknown fields are ignored. */
#ifndef DIST_CLI_STATUS_H_INCLUDED
#define DIST_CLI_STATUS_H_INCLUDED

#include <dist.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>

void cli_status_print(const msgpack_object *status, FILE *out);

/* `dist status --task ID`: one task as a readable block, or as a JSON
 * object (keys id, task, state, priority, worker, error, attempts [{attempt,
 * worker, reason}], submitted_ms, started_ms, finished_ms, not_before_ms;
 * task, worker and error null when the master did not say; the caller
 * owns it). Text from the master is printed with control
 * characters replaced. */
void cli_task_print(const dist_task_info_t *t, FILE *out);
json_t *cli_task_json(const dist_task_info_t *t);

#endif

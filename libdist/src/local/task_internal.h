/*  task_internal.h - running a task function: shared by the Pool (process
 *  and thread backends) and the distributed worker. */
#ifndef DIST_TASK_INTERNAL_H_INCLUDED
#define DIST_TASK_INTERNAL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dist/task.h"

#define DIST__TASK_ERR_MAX 1024

struct dist_task_ctx {
    const char *name;
    bool failed;
    bool retry;        /* dist_task_retry was called */
    uint32_t retry_ms; /* its delay */
    char err[DIST__TASK_ERR_MAX];
};

/* What a worker keeps between tasks: the zone the arguments are unpacked
 * into and the buffer the result is packed into, both reused. */
typedef struct {
    msgpack_zone zone;
    msgpack_sbuffer out;
} dist__runner_t;

/* 0 or DIST_ENOMEM. */
int dist__runner_init(dist__runner_t *r);
void dist__runner_fini(dist__runner_t *r);

/* Runs fn on the packed argument array (args, len) and leaves the outcome in
 * r->out: on success (return 0) exactly one packed value; on failure (return
 * a negative DIST_E* code) a NUL-terminated message saying what went wrong
 * (the task's own message, or why its arguments or result were refused).
 * Codes: DIST_ETASK (the task failed), DIST_EPROTO (arguments not one
 * array, or the task packed zero or several values), DIST_ENOMEM, and
 * DIST_ERETRY (the task called dist_task_retry): then the message
 * "retry requested: REASON" and its NUL are followed by the delay, 4 bytes
 * in native order (dist__task_retry_ms reads it back), so that it travels
 * with the message through the pool's result queue. */
int dist__task_run(dist__runner_t *r, dist_task_fn fn, const char *name, const void *args,
                   size_t len);

/* The delay at the end of a DIST_ERETRY outcome of len bytes (see
 * dist__task_run), and the length of the message before it (with its
 * NUL); 0 and len unchanged when it is too short to hold one. */
static inline uint32_t dist__task_retry_ms(const char *data, size_t *len)
{
    uint32_t ms = 0;
    if (*len >= sizeof ms + 1) {
        *len -= sizeof ms;
        memcpy(&ms, data + *len, sizeof ms);
    }
    return ms;
}

/* True when the byte starts a MessagePack array (fixarray, array16/32). */
static inline bool dist__msgpack_is_array(unsigned char b)
{
    return (b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd;
}

#endif

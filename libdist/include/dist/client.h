/*  dist/client.h - submit tasks to a libdist cluster and use its named
 *  queues, from any program.
 *
 *  A client connects to a master (docs/PROTOCOL.md), introduces itself by
 *  name, and then submits tasks (one, a batch, or a whole map), waits for
 *  their results through futures, and puts to and gets from named remote
 *  queues - the queues that Python's BaseManager shares in the classic
 *  "distributed processes" example.
 *
 *  Delivery is exactly once from the caller's point of view: the master
 *  keeps each result until the client acknowledges it, re-sends
 *  unacknowledged results when a client of the same name reconnects, and
 *  the client drops any duplicate.
 *
 *  Threads: a client may be used from several threads; calls are
 *  serialized by an internal lock, and the client does its network I/O
 *  inside whichever call is waiting. Futures belong to their client and
 *  must be destroyed before it.
 */
#ifndef DIST_CLIENT_H_INCLUDED
#define DIST_CLIENT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include "common.h"
#include "log.h"
#include "pool.h"
#include "value.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dist_client dist_client_t;
typedef struct dist_future dist_future_t;

typedef struct {
    const char *master;            /* endpoint; NULL: $DIST_MASTER, else tcp://127.0.0.1:5555 */
    const char *name;              /* reuse a name to collect results after a restart;
                                      default "host:pid:random" */
    int connect_timeout_ms;        /* wait for the master's welcome; default 5000 */
    size_t max_message;            /* bytes; default 64 MiB */
    const char *key;               /* own secret key file; NULL: $DIST_KEY */
    const char *server_key;        /* master's public key file; NULL: $DIST_SERVER_KEY */
    bool insecure;                 /* allow a non-loopback master without keys */
    dist_log_fn log;
    void *log_userdata;
    dist_log_level_t log_level;
} dist_client_opts_t;

/* Connects and waits for the master's welcome. NULL with errno: the
 * positive code of DIST_ENOMASTER (no welcome within the connect timeout;
 * dist_strerror(errno) names it), EINVAL (bad options, or a non-loopback
 * master without keys and without insecure), ENOMEM. */
DIST_EXPORT dist_client_t *dist_client_new(const dist_client_opts_t *opts);

/* Closes the connection (acknowledging what was taken), frees;
 * *self_p = NULL. Accepts NULL. */
DIST_EXPORT void dist_client_destroy(dist_client_t **self_p);

/* The client's name. Borrowed. */
DIST_EXPORT const char *dist_client_name(const dist_client_t *self);

/* Submits one task: name, packed argument array (args, len), and a
 * per-task timeout in ms (0: none). Returns when the master has accepted
 * it, or NULL with errno set to the positive code: DIST_ENOENT (no worker
 * ever announced the task), DIST_EFULL (queue full), DIST_EMSGSIZE,
 * DIST_EREFUSED (other refusals), DIST_ENOMASTER (no answer). */
DIST_EXPORT dist_future_t *dist_client_submit(dist_client_t *self, const char *task,
                                              const void *args, size_t len, int task_timeout_ms);

/* Submits n tasks of one name in batches; futures[i] is the future of
 * items[i] (NULL for a refused item, whose code goes to errors[i] when
 * errors is not NULL). Returns the number accepted, or a negative code
 * when the master could not be reached. */
DIST_EXPORT long dist_client_submit_batch(dist_client_t *self, const char *task,
                                          const dist_bytes_t *items, size_t n, int task_timeout_ms,
                                          dist_future_t **futures, int *errors);

/* Waits up to timeout_ms for the result. Returns its status (0 for a
 * value; DIST_ETASK, DIST_ECRASHED, DIST_ETIMEDOUT, DIST_EGAVEUP, ... for
 * a failure, whose message names the task, host, pid and signal) and sets
 * *result, borrowed until the future is destroyed; DIST_ETIMEDOUT when it
 * has not arrived (result NULL) - check dist_future_ready() to tell a task
 * timeout from a wait timeout. */
DIST_EXPORT int dist_future_get(dist_future_t *self, int timeout_ms, dist_result_t **result);
DIST_EXPORT bool dist_future_ready(dist_future_t *self);
DIST_EXPORT void dist_future_destroy(dist_future_t **self_p);

/* Submit and wait: *result is owned by the caller. */
DIST_EXPORT int dist_client_call(dist_client_t *self, const char *task, const void *args,
                                 size_t len, int timeout_ms, dist_result_t **result);

/* Progress of a map: called from the calling thread as results arrive. */
typedef void (*dist_progress_fn)(size_t done, size_t total, void *userdata);

/* Runs the task on each of n argument arrays across the cluster and waits
 * up to timeout_ms (DIST_FOREVER: no bound) for all results. *results
 * (owned by the caller) holds them in input order. Returns 0 when all
 * succeeded, DIST_ETASK when some failed, DIST_ETIMEDOUT (results so far
 * are in *results; the missing ones carry DIST_ETIMEDOUT), or a negative
 * code before anything was submitted. progress may be NULL. */
DIST_EXPORT int dist_client_map(dist_client_t *self, const char *task, const dist_bytes_t *items,
                                size_t n, int task_timeout_ms, int timeout_ms,
                                dist_progress_fn progress, void *userdata,
                                dist_results_t **results);

/* The same, with results in completion order: called once per result with
 * its input index; the result is borrowed for the call. */
typedef void (*dist_result_fn)(size_t index, dist_result_t *result, void *userdata);
DIST_EXPORT int dist_client_map_unordered(dist_client_t *self, const char *task,
                                          const dist_bytes_t *items, size_t n,
                                          int task_timeout_ms, int timeout_ms,
                                          dist_result_fn on_result, void *userdata);

/* Named remote queues. put: waits up to timeout_ms for room (0: at once):
 * 0, DIST_EFULL, DIST_ENOMASTER, DIST_EINVAL (bad name). get: waits up to
 * timeout_ms for an item: 0 with *buf (malloc'd, the caller frees it) and
 * *len, DIST_ETIMEDOUT, DIST_ENOMASTER. */
DIST_EXPORT int dist_client_qput(dist_client_t *self, const char *queue, const void *buf,
                                 size_t len, int timeout_ms);
DIST_EXPORT int dist_client_qget(dist_client_t *self, const char *queue, void **buf, size_t *len,
                                 int timeout_ms);

/* The cluster's state (docs/PROTOCOL.md section 7b) as a result whose value
 * is the status map. *status is owned by the caller. 0, DIST_ETIMEDOUT. */
DIST_EXPORT int dist_client_status(dist_client_t *self, int timeout_ms, dist_result_t **status);

#ifdef __cplusplus
}
#endif

#endif

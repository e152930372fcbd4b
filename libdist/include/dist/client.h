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
 *  the client drops any duplicate. A result is acknowledged once it is
 *  stored in its future or map; results of tasks this client object did
 *  not submit (duplicates, tasks of an abandoned future, or of an earlier
 *  process that used the same name) are acknowledged and dropped.
 *
 *  Master restarts: the client says HELLO again under the same name and
 *  re-sends what the master had not answered yet (submission is
 *  idempotent). A master with --store keeps the tasks it accepted and
 *  their results arrive as usual. A new instance of the master (WELCOME
 *  names another instance: an in-memory master started again, which lost
 *  every task) is given again every task the client still waits for -
 *  futures keep their task name and arguments until their result, maps
 *  hold their items while they run - so a task may run twice
 *  (at-least-once execution). Until a worker offering the task has joined
 *  the new instance, its "unknown task" refusals mean "not yet". A master
 *  that stops cleanly says BYE, and the client says HELLO again at once
 *  instead of waiting for its silence. A master that falls silent for
 *  connect_timeout_ms while a call waits for its answer (ACCEPTED, a queue
 *  reply) makes that call fail with DIST_ENOMASTER.
 *
 *  When the master accepts tasks of a name no connected worker offers, or
 *  the last such worker leaves while tasks of it wait, the client logs at
 *  WARN "no connected worker offers task NAME: its tasks wait" (once per
 *  name), and "a worker offering task NAME joined" when one comes.
 *
 *  Threads: a client may be used from several threads. It has no thread
 *  of its own: the call that waits does the network I/O for all, and the
 *  others wait for it (calls that only send never block on another's
 *  wait). Callbacks (progress, results of a map) run in the thread that
 *  called the map, with no lock held: they may call into the client.
 *  Futures belong to their client and must be destroyed before it.
 */
#ifndef DIST_CLIENT_H_INCLUDED
#define DIST_CLIENT_H_INCLUDED

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
    const char *master;            /* endpoint; NULL: $DIST_MASTER, else DIST_DEFAULT_ENDPOINT */
    const char *name;              /* how the master knows this client (1-128 bytes): results
                                      wait for a name while it is away; default
                                      "host:pid:random" */
    int connect_timeout_ms;        /* wait for the master's welcome, and longest silence of
                                      the master while a call waits for its answer;
                                      default 5000 */
    size_t max_message;            /* bytes; default 64 MiB */
    const char *key;               /* own secret key file (NAME.key, mode 0600 or
                                      stricter); NULL: $DIST_KEY. With server_key, the
                                      connection uses CURVE (docs/PROTOCOL.md section 9) */
    const char *server_key;        /* master's public key file; NULL: $DIST_SERVER_KEY */
    bool insecure;                 /* allow a non-loopback master without keys */
    dist_log_fn log;               /* NULL: silent */
    void *log_userdata;
    dist_log_level_t log_level;    /* most verbose level passed to log (0: errors only) */
} dist_client_opts_t;

/* Connects and waits for the master's welcome, saying HELLO every second.
 * NULL with errno: the positive code of DIST_ENOMASTER (no welcome within
 * the connect timeout; dist_strerror(errno) names it; also what a master
 * whose key is not server_key looks like), the positive code of
 * DIST_EREFUSED (the master does not know our key, or refused it in the
 * client role; a client whose key is refused later, at a reconnection,
 * fails its calls with DIST_EREFUSED), EINVAL (bad options or endpoint, one key without the
 * other, or a non-loopback master without keys and without insecure),
 * EACCES (a secret key file others can access), ENOENT (a missing key
 * file), EPROTO (the master speaks another protocol
 * version), ENOTSUP (libzmq older than 4.3.3), ENOMEM. Blocks up to
 * connect_timeout_ms. Does not change the program's signal handlers. */
DIST_EXPORT dist_client_t *dist_client_new(const dist_client_opts_t *opts);

/* Closes the connection (acknowledging what was taken, then BYE), frees;
 * *self_p = NULL. Accepts NULL. Every future must be destroyed first. */
DIST_EXPORT void dist_client_destroy(dist_client_t **self_p);

/* The client's name. Borrowed. */
DIST_EXPORT const char *dist_client_name(const dist_client_t *self);

/* Submits one task: name, packed argument array (args, len, copied), and
 * a per-task timeout in ms (0: none; the worker stops the task after it).
 * Returns when the master has accepted it, or NULL with errno set to the
 * positive code: DIST_ENOENT (no worker ever announced the task),
 * DIST_EFULL (queue full: retry later), DIST_EMSGSIZE, DIST_EREFUSED
 * (other refusals), DIST_ENOMASTER (no answer), EINVAL (bad name). */
DIST_EXPORT dist_future_t *dist_client_submit(dist_client_t *self, const char *task,
                                              const void *args, size_t len, int task_timeout_ms);

/* The same, but a full master is waited for: when the task is refused
 * with queue_full (the master holds --max-queued tasks, or the client's
 * --max-results bound is reached) or store_failed, it is submitted again
 * after a pause (10 ms doubling to 500 ms) until wait_ms has passed
 * (DIST_FOREVER: no bound; 0: one try). Meanwhile the client keeps
 * working: results of other futures are taken, heartbeats are sent.
 * Returns the future once accepted, or NULL with errno: DIST_EFULL (still
 * full after wait_ms), or any code of dist_client_submit. Blocks up to
 * wait_ms plus one submission. */
DIST_EXPORT dist_future_t *dist_client_submit_wait(dist_client_t *self, const char *task,
                                                   const void *args, size_t len,
                                                   int task_timeout_ms, int wait_ms);

/* Submits n tasks of one name in batches (at most the master's max_batch
 * and max_message each) and waits for their acceptance; futures[i] is the
 * future of items[i] (NULL for a refused item, whose code goes to
 * errors[i] when errors is not NULL; 0 for accepted ones). Returns the
 * number accepted, or a negative code (DIST_ENOMASTER, DIST_EINVAL,
 * DIST_ENOMEM) with every futures[i] NULL. */
DIST_EXPORT long dist_client_submit_batch(dist_client_t *self, const char *task,
                                          const dist_bytes_t *items, size_t n, int task_timeout_ms,
                                          dist_future_t **futures, int *errors);

/* A future has the methods of the pool's async handle (dist/pool.h):
 * wait, ready, successful, get. */

/* Waits up to timeout_ms for the result. 0 once it is there (a value, a
 * failure, or the master's refusal), DIST_ETIMEDOUT when it has not
 * arrived, or the client's fatal code (DIST_EREFUSED, DIST_EPROTO). */
DIST_EXPORT int dist_future_wait(dist_future_t *self, int timeout_ms);

/* Waits like dist_future_wait, then returns the result's status (0 for a
 * value; DIST_ETASK, DIST_ECRASHED, DIST_ETIMEDOUT, DIST_EGAVEUP, ... for
 * a failure, whose message names the task, host, pid and signal) and sets
 * *result (may be NULL) to the result LENT by the future: valid until
 * dist_future_destroy; dist_result_destroy on it is harmless (it only sets
 * the pointer to NULL), dist_result_dup makes an owned copy. DIST_ETIMEDOUT
 * when it has not arrived (*result NULL) - dist_future_ready() tells a
 * task timeout from a wait timeout. */
DIST_EXPORT int dist_future_get(dist_future_t *self, int timeout_ms, dist_result_t **result);

/* Ready: the result is there (reads what has arrived; does not wait).
 * Successful: ready and a value, not a failure (false while not ready). */
DIST_EXPORT bool dist_future_ready(dist_future_t *self);
DIST_EXPORT bool dist_future_successful(dist_future_t *self);

/* Frees the future and its result; *self_p = NULL. Accepts NULL. A result
 * that comes after this is acknowledged and dropped. */
DIST_EXPORT void dist_future_destroy(dist_future_t **self_p);

/* Submits one task (without a timeout of its own) and waits up to
 * timeout_ms for its result. Returns as dist_future_get; *result is owned
 * by the caller: the value, the task's error, or, when the master refused
 * the task (DIST_ENOENT, DIST_EFULL, ...), an error carrying the master's
 * message. *result is NULL for DIST_ETIMEDOUT (no result in time),
 * DIST_ENOMASTER and DIST_EINVAL. */
DIST_EXPORT int dist_client_call(dist_client_t *self, const char *task, const void *args,
                                 size_t len, int timeout_ms, dist_result_t **result);

/* Progress of a map: called from the calling thread as results arrive. */
typedef void (*dist_progress_fn)(size_t done, size_t total, void *userdata);

/* Runs the task on each of n argument arrays across the cluster and waits
 * up to timeout_ms (DIST_FOREVER: no bound; dist_client_map_opts below
 * takes the same with named options) for all results. *results
 * (owned by the caller) holds them in input order. Returns 0 when all
 * succeeded, DIST_ETASK when some failed, DIST_ETIMEDOUT (results so far
 * are in *results; the missing ones carry DIST_ETIMEDOUT and "no result
 * within N ms"), or a negative code with *results NULL when nothing was
 * accepted: DIST_ENOMASTER, DIST_EINVAL, DIST_ENOMEM. progress may be NULL.
 *
 * At most 100,000 tasks (32 SUBMITs) are in flight at once, so a long map
 * neither floods the master nor holds much memory; the items are read
 * while the call runs and not retained. A refusal with queue_full (or
 * store_failed) is back-pressure: nothing more is sent during a backoff
 * (10 ms doubling to 1 s, one step per round of refusals), then the map
 * keeps about as many tasks in flight as the master held, growing again
 * as they are accepted. An unknown task fails every item with
 * DIST_ENOENT and the master's message. */
DIST_EXPORT int dist_client_map(dist_client_t *self, const char *task, const dist_bytes_t *items,
                                size_t n, int task_timeout_ms, int timeout_ms,
                                dist_progress_fn progress, void *userdata,
                                dist_results_t **results);

/* The same, with results in completion order: on_result is called once
 * per item with its input index, in the calling thread; the result is
 * borrowed for the call. When timeout_ms passes first, each missing item
 * is reported once as DIST_ETIMEDOUT. Returns as dist_client_map. */
typedef void (*dist_result_fn)(size_t index, dist_result_t *result, void *userdata);
DIST_EXPORT int dist_client_map_unordered(dist_client_t *self, const char *task,
                                          const dist_bytes_t *items, size_t n,
                                          int task_timeout_ms, int timeout_ms,
                                          dist_result_fn on_result, void *userdata);

/* Options of a map (dist_client_map_opts). Zero is the default of every
 * field, so `dist_map_opts_t o = { .wait_ms = 60000 };` says only what
 * differs. New fields come at the end and keep the old behaviour at zero
 * (README, "Compatibility"). */
typedef struct {
    int task_timeout_ms;       /* per task: the worker stops it after this; 0: none */
    int wait_ms;               /* for the whole map; 0 or DIST_FOREVER: no bound */
    bool unordered;            /* results in completion order through on_result,
                                  instead of *results in input order */
    dist_progress_fn progress; /* ordered maps: called as results arrive; may be NULL */
    dist_result_fn on_result;  /* unordered maps: once per item (required) */
    void *userdata;            /* passed to progress and on_result */
    /* Per task, as in dist_submit_opts_t (dist/pool.h; zero: default) */
    int priority;              /* 0-9, higher first */
    int64_t delay_ms;          /* hold each task this long (max 30 days) */
    int64_t at_ms;             /* or until this unix time in ms (not with delay_ms) */
    int max_attempts;          /* 1-1000; 0: the master's default */
    int backoff_ms;            /* retry backoff base; 0: at once */
    double backoff_factor;     /* >= 1.0; 0: 2.0 */
    int backoff_max_ms;        /* 0: one hour */
    bool retry_on_error;       /* a task's own error is retried too */
    /* When *stop becomes non-zero (a signal handler may set it), the map
     * stops: what has arrived is reported, the tasks without a result are
     * cancelled (CANCEL to the master, up to connect_timeout_ms for its
     * answer; items never sent are not sent), each reported (unordered) or
     * stored (ordered) as DIST_ECANCELLED "cancelled: the map was stopped",
     * and the map returns DIST_ECANCELLED. NULL: never. */
    const volatile sig_atomic_t *stop;
} dist_map_opts_t;

/* Runs the task on each of n argument arrays (dist_batch_items() builds
 * them) with the options o (NULL: all defaults). Ordered (the default):
 * *results as dist_client_map; unordered: on_result per item as
 * dist_client_map_unordered, and results may be NULL (set to NULL).
 * Returns as dist_client_map. */
DIST_EXPORT int dist_client_map_opts(dist_client_t *self, const char *task,
                                     const dist_bytes_t *items, size_t n,
                                     const dist_map_opts_t *o, dist_results_t **results);

/* ---- task control: ids, results by id, lookup, cancel, dead letters ---------------------- */

/* Submits one task with options (dist/pool.h: timeout_ms is the task's
 * own time limit; callback, error_callback and userdata are not used
 * here). opts->id names the task: submitting an id the master knows is
 * idempotent (the same task, not a second one). Ids are strings of 1-128
 * bytes 0x21-0x7e; 32 lowercase hex digits are taken as the id's own
 * bytes (the form the library prints for ids it chose), any other string
 * is hashed to the 16 bytes of the wire (docs/PROTOCOL.md section 6.7).
 * Returns as dist_client_submit; EINVAL (errno) also for an option out of
 * range (priority, delay, attempts, backoff; delay_ms with at_ms), and
 * DIST_ESTATE's code for an id this client already has a live future of
 * (destroy that one first: the master runs one task per id). A future's id
 * never changes, also when the task is given again to a new master. */
DIST_EXPORT dist_future_t *dist_client_submit_opts(dist_client_t *self, const char *task,
                                                   const void *args, size_t len,
                                                   const dist_submit_opts_t *opts);

/* The id of a future's task: the caller's id if one was given, else the
 * 32 hex digits of the one the library chose. Borrowed: valid as long as
 * the future. Any client may use it (dist_client_result, _lookup, ...). */
DIST_EXPORT const char *dist_future_id(dist_future_t *self);

/* The result of task `id` (any client's; the master keeps it until its
 * submitter takes it, or --result-ttl), waiting up to wait_ms (0: only
 * asks; DIST_FOREVER: no bound) for the task to finish. Returns the
 * result's status (0 for a value, DIST_ETASK, DIST_ECANCELLED, ... for a
 * failure) with *result owned by the caller (dist_result_destroy);
 * DIST_ENOENT when the master does not know the id or its result expired
 * (*result then an error result saying which: "unknown task id ..." or
 * "the result of task ... expired"); DIST_ETIMEDOUT when it is not
 * finished within wait_ms (*result NULL); DIST_EINVAL (bad id),
 * DIST_ENOMASTER. Does not take the result away from its submitter. */
DIST_EXPORT int dist_client_result(dist_client_t *self, const char *id, int wait_ms,
                                   dist_result_t **result);

/* One attempt of a task: its number (from 1), the worker that ran it and
 * why it ended ("" while it runs, or for a success). */
typedef struct {
    unsigned attempt;
    char *worker;
    char *reason;
} dist_attempt_info_t;

/* A task as the master shows it. Strings are owned by the info ("" when
 * absent); state is one of the static strings "queued", "delayed",
 * "waiting", "leased" (running, worker names where), "done", "failed",
 * "cancelled", "expired", "unknown". Times are unix ms, 0 when not yet. */
typedef struct {
    char *id;             /* the caller's id if it gave one, else 32 hex digits */
    char *task;
    const char *state;
    int priority;
    char *worker;
    char *error;          /* failed or cancelled: why */
    int64_t submitted_ms, started_ms, finished_ms;
    int64_t not_before_ms; /* delayed: when it may run */
    dist_attempt_info_t *attempts;
    size_t nattempts;
} dist_task_info_t;

/* Frees an info; *self_p = NULL. Accepts NULL. */
DIST_EXPORT void dist_task_info_destroy(dist_task_info_t **self_p);

/* Looks task `id` up. 0 with *info (owned; state "unknown" for an id the
 * master does not know), DIST_EINVAL (bad id), DIST_ETIMEDOUT (no answer
 * within timeout_ms), DIST_ENOMASTER, DIST_ENOMEM. */
DIST_EXPORT int dist_client_lookup(dist_client_t *self, const char *id, int timeout_ms,
                                   dist_task_info_t **info);

/* Cancels n tasks. A queued or delayed task is cancelled at once; a
 * running one is stopped by its worker; the final state is "cancelled"
 * and whoever waits for it gets DIST_ECANCELLED. A finished task is left
 * as it is. states (may be NULL; n entries) receives each id's state
 * after the call (static strings: "cancelled", or the final state it had,
 * or "unknown"). 0, DIST_EINVAL (a bad id: nothing is sent),
 * DIST_ETIMEDOUT (no answer within timeout_ms, per batch of ids),
 * DIST_ENOMASTER, DIST_ENOMEM. */
DIST_EXPORT int dist_client_cancel(dist_client_t *self, const char *const *ids, size_t n,
                                   int timeout_ms, const char **states);

/* The dead letters: tasks that ended failed (retries spent included),
 * newest first, at most max (0: all the master keeps, which fit in one
 * message). 0 with *list (an owned array of *n infos; free with
 * dist_task_infos_destroy), or the codes of dist_client_lookup. */
DIST_EXPORT int dist_client_failed(dist_client_t *self, size_t max, int timeout_ms,
                                   dist_task_info_t ***list, size_t *n);
DIST_EXPORT void dist_task_infos_destroy(dist_task_info_t ***list_p, size_t n);

/* Submits dead letters again (same id and options, fresh attempts) and
 * takes them off the list. states as dist_client_cancel: "queued" (or
 * "delayed") when submitted again, "unknown" for an id not in the list,
 * "failed" when the master cannot take it now. */
DIST_EXPORT int dist_client_retry(dist_client_t *self, const char *const *ids, size_t n,
                                  int timeout_ms, const char **states);

/* Named remote queues (names: 1-128 letters, digits and `._:-`). The
 * master does the waiting; the client waits 2 s longer for its answer.
 * DIST_FOREVER is sent as the largest timeout the wire has (49 days).
 * put: waits up to timeout_ms for room (0: at once): 0, DIST_EFULL,
 * DIST_EMSGSIZE, DIST_ENOMASTER, DIST_EINVAL (bad name). get: waits up to
 * timeout_ms for an item: 0 with *buf (malloc'd, the caller frees it) and
 * *len, DIST_ETIMEDOUT, DIST_ENOMASTER. An item that the master hands out
 * after the client gave up on the get is put back into its queue. */
DIST_EXPORT int dist_client_qput(dist_client_t *self, const char *queue, const void *buf,
                                 size_t len, int timeout_ms);
DIST_EXPORT int dist_client_qget(dist_client_t *self, const char *queue, void **buf, size_t *len,
                                 int timeout_ms);

/* The cluster's state (docs/PROTOCOL.md section 7b) as a result whose value
 * is the master's STATUS body, a map (with its `req` field). *status is
 * owned by the caller. 0, DIST_ETIMEDOUT, DIST_ENOMASTER. */
DIST_EXPORT int dist_client_status(dist_client_t *self, int timeout_ms, dist_result_t **status);

#ifdef __cplusplus
}
#endif

#endif

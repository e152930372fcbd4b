/*  dist/pool.h - a pool of worker processes (or threads) running tasks,
 *  like Python's multiprocessing.Pool and multiprocessing.pool.ThreadPool.
 *
 *  Tasks are dist/task.h functions: MessagePack arguments in, one
 *  MessagePack value (or an error) out; each outcome is a dist_result_t.
 *  Submit one call (apply, apply_async) or many (map, map_async, imap,
 *  imap_unordered); refer to the task by function, DIST_FN(f), or by its
 *  registered name, DIST_NAMED("name").
 *
 *  Processes. At creation the pool forks a small fork server; every pool
 *  process is forked by it, from that clean single-threaded state, so that
 *  the threads of the parent (the pool's own manager thread, a ZeroMQ
 *  context, anything holding a lock) can never deadlock a child. Task and
 *  result messages travel through shared-memory queues; a manager thread
 *  in the parent dispatches work, collects results and runs callbacks.
 *  Consequences: functions and data the tasks use must exist when the pool
 *  is created (register tasks and dlopen plugins first); the fork server is
 *  itself forked from the creating process, so create pools early, before
 *  other threads that might hold locks the tasks need (stdio, a sanitizer's
 *  allocator); pool processes die with the fork server, which dies with the
 *  thread that created the pool (PR_SET_PDEATHSIG) - create pools from a
 *  thread that outlives them.
 *
 *  Random numbers: forks would inherit one random state and draw the same
 *  sequence, so each new pool process reseeds rand()/random() (srand,
 *  srandom) and drand48() and its family (seed48) with a seed of its own,
 *  from getrandom() (its pid and the time if the kernel's generator is not
 *  ready), before the initializer runs: an initializer may seed again for
 *  a reproducible sequence. The threads backend reseeds nothing (its
 *  threads share the program's state).
 *
 *  Failures (where this pool differs from Python's):
 *  - a pool process that dies while running a task (signal, exit, abort)
 *    fails exactly that task with DIST_ECRASHED and a message naming the
 *    task, the pid and the signal or exit status; the process is replaced
 *    and every other task completes normally; nothing waits forever;
 *  - a task that runs past its timeout is killed with its process and
 *    reported as DIST_ETIMEDOUT; the process is replaced;
 *  - a task that fails, or returns something that is not one MessagePack
 *    value, yields an ordinary error result.
 *  Threads backend: the same API and semantics, except that a crashing task
 *  takes the whole program down (there is no process boundary), and a task
 *  past its timeout is reported as DIST_ETIMEDOUT while its thread is left
 *  to finish (its late result is discarded) and replaced.
 *
 *  Lifecycle: close() stops new submissions, join() (after close or
 *  terminate) waits for the work and the processes, terminate() stops at
 *  once (unfinished tasks fail with DIST_ECLOSED). destroy() terminates,
 *  joins and frees: no process is left behind. The same misuse errors as
 *  Python: submit after close and join before close are DIST_ESTATE.
 *
 *  Threads: every function may be called from any thread, concurrently.
 *  Callbacks run on the pool's manager thread, one at a time, and must not
 *  block for long; they may submit more work but must not join the pool.
 */
#ifndef DIST_POOL_H_INCLUDED
#define DIST_POOL_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>

#include "common.h"
#include "task.h"
#include "value.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dist_pool dist_pool_t;
typedef struct dist_async dist_async_t;
typedef struct dist_imap dist_imap_t;

/* Largest argument array or result the default pool accepts: 4 MiB. */
#define DIST_POOL_DEFAULT_MAX_MESSAGE ((size_t)4 << 20)

typedef struct {
    int processes;          /* pool size; 0: the number of online CPUs */
    void (*initializer)(void *arg); /* run once in each new process/thread */
    void *initarg;
    int maxtasksperchild;   /* messages (tasks or map chunks) a process runs before it is
                               replaced; 0: no limit */
    int timeout_ms;         /* default per-task timeout; 0 or DIST_FOREVER: none */
    bool threads;           /* the ThreadPool backend */
    size_t max_message;     /* largest args or result in bytes; 0: the default */
} dist_pool_opts_t;

/* Creates a pool (opts NULL: all defaults). Forks the fork server and the
 * processes (or starts the threads) before returning. NULL with errno:
 * EINVAL (bad option), ENOMEM, or the errno of fork/pthread_create. */
DIST_EXPORT dist_pool_t *dist_pool_new(const dist_pool_opts_t *opts);

/* Terminates and joins if still running, then frees; *self_p = NULL.
 * Outstanding async handles stay valid until destroyed (they fail with
 * DIST_ECLOSED if unfinished). Accepts NULL. */
DIST_EXPORT void dist_pool_destroy(dist_pool_t **self_p);

/* Per-submission options for apply_async and map_async (NULL: none). */
typedef struct {
    /* Called once, on the manager thread, when the submission finishes:
     * callback on success, error_callback on failure. For map_async the
     * result passed is a summary: status 0, or the first failure. */
    void (*callback)(dist_result_t *result, void *userdata);
    void (*error_callback)(dist_result_t *result, void *userdata);
    void *userdata;
    int timeout_ms; /* per-task timeout; 0: the pool's default */
    /* Task control (dist_client_submit_opts, dist/client.h; a local pool
     * ignores them). Zero is the default of each. */
    const char *id;         /* the caller's id: 1-128 printable ASCII bytes without space;
                               NULL: the library chooses one */
    int priority;           /* 0 (default) to 9, higher first */
    int64_t delay_ms;       /* hold the task this long after acceptance (max 30 days) */
    int64_t at_ms;          /* or run it at this unix time in ms (not with delay_ms) */
    int max_attempts;       /* 1-1000; 0: the master's --max-attempts */
    int backoff_ms;         /* delay before a retry: backoff_ms * factor^(k-2) for attempt
                               k, capped, with jitter; 0: retry at once */
    double backoff_factor;  /* >= 1.0; 0: 2.0 */
    int backoff_max_ms;     /* 0: one hour */
    bool retry_on_error;    /* an error the task returns is retried too */
} dist_submit_opts_t;

/* Runs one task and waits for it. On return *result (owned by the caller)
 * holds the value or the error. Returns the result's status (0 on
 * success), or DIST_ESTATE (pool closed), DIST_ENOENT (unknown name, and
 * then *result is an error result too), DIST_ENOMEM. */
DIST_EXPORT int dist_pool_apply(dist_pool_t *self, dist_task_ref_t task, const void *args,
                                size_t len, dist_result_t **result);

/* dist_pool_apply with the arguments packed from a format string (see
 * dist/value.h, "one call"): dist_pool_applyf(pool, task, &r, "is", 7, "x")
 * runs task(7, "x"). DIST_EINVAL for a bad format (*result NULL). */
DIST_EXPORT int dist_pool_applyf(dist_pool_t *self, dist_task_ref_t task, dist_result_t **result,
                                 const char *fmt, ...);

/* Submits one task; the arguments are copied. Returns a handle the caller
 * destroys with dist_async_destroy (at any time: an unfinished task still
 * runs and its callbacks still fire). NULL with errno set to the positive
 * code (dist_strerror(errno) names it): DIST_ESTATE when the pool is
 * closed, DIST_ENOENT for an unknown task name, DIST_ENOMEM. */
DIST_EXPORT dist_async_t *dist_pool_apply_async(dist_pool_t *self, dist_task_ref_t task,
                                                const void *args, size_t len,
                                                const dist_submit_opts_t *opts);

/* Runs the task on each of n argument arrays and waits. *results (owned
 * by the caller, freed with dist_results_destroy) holds the outcome of
 * items[i] at index i. chunksize 0 picks one like Python
 * (n / (4 * processes), rounded up). The items are read while the call
 * runs and not retained. Returns 0 when every task succeeded, DIST_ETASK
 * when at least one failed (see dist_results_status), or DIST_ESTATE,
 * DIST_ENOENT, DIST_ENOMEM before anything ran (*results is then NULL).
 *
 * Within a map chunk a process hands results back in batches (at least
 * every few milliseconds); if it dies mid-chunk, the failing item gets the
 * error and the items whose results had not been handed back yet are run
 * again. Tasks should therefore be idempotent, as for any retry. */
DIST_EXPORT int dist_pool_map(dist_pool_t *self, dist_task_ref_t task, const dist_bytes_t *items,
                              size_t n, size_t chunksize, dist_results_t **results);

/* The same without waiting. items must stay valid until the handle is
 * ready; then dist_async_results() gives the results. */
DIST_EXPORT dist_async_t *dist_pool_map_async(dist_pool_t *self, dist_task_ref_t task,
                                              const dist_bytes_t *items, size_t n,
                                              size_t chunksize, const dist_submit_opts_t *opts);

/* The results of a ready map_async handle, borrowed until the handle is
 * destroyed; NULL when not ready or not a map. */
DIST_EXPORT dist_results_t *dist_async_results(dist_async_t *self);

/* Lazy iterators: results in input order (imap) or completion order
 * (imap_unordered). items must stay valid until the iterator is exhausted
 * or destroyed; arguments are copied only as processes become free, so a
 * long input does not fill memory. NULL with errno as apply_async. */
DIST_EXPORT dist_imap_t *dist_pool_imap(dist_pool_t *self, dist_task_ref_t task,
                                        const dist_bytes_t *items, size_t n, size_t chunksize);
DIST_EXPORT dist_imap_t *dist_pool_imap_unordered(dist_pool_t *self, dist_task_ref_t task,
                                                  const dist_bytes_t *items, size_t n,
                                                  size_t chunksize);

/* Next result, waiting up to timeout_ms. Returns 1 with *result (owned by
 * the caller) and, if index is not NULL, its input position; 0 when every
 * result has been returned; DIST_ETIMEDOUT. */
DIST_EXPORT int dist_imap_next(dist_imap_t *self, dist_result_t **result, size_t *index,
                               int timeout_ms);

/* Frees the iterator; results not yet taken are discarded (tasks already
 * dispatched still run). Accepts NULL. */
DIST_EXPORT void dist_imap_destroy(dist_imap_t **self_p);

/* Waits up to timeout_ms for the handle to be ready. 0 when ready,
 * DIST_ETIMEDOUT otherwise. */
DIST_EXPORT int dist_async_wait(dist_async_t *self, int timeout_ms);

/* Waits like wait(), then returns the result's status (0 on success) and
 * sets *result to the result LENT by the handle: valid until
 * dist_async_destroy; dist_result_destroy on it is harmless (it only sets
 * the pointer to NULL). result may be NULL. DIST_ETIMEDOUT if not ready.
 * For a map_async handle the result is a summary (nil, or the first
 * failure); dist_async_results() has the values. The same methods exist
 * on a client's future (dist/client.h). */
DIST_EXPORT int dist_async_get(dist_async_t *self, int timeout_ms, dist_result_t **result);

/* Ready: finished, with a value or an error. Successful: ready and no
 * error (false while not ready). */
DIST_EXPORT bool dist_async_ready(dist_async_t *self);
DIST_EXPORT bool dist_async_successful(dist_async_t *self);

/* Releases the handle (see apply_async). Accepts NULL. */
DIST_EXPORT void dist_async_destroy(dist_async_t **self_p);

/* Stops accepting work; queued work still runs. Idempotent. */
DIST_EXPORT int dist_pool_close(dist_pool_t *self);

/* Stops now: kills the processes (threads are abandoned), fails unfinished
 * work with DIST_ECLOSED. Idempotent. Returns 0. */
DIST_EXPORT int dist_pool_terminate(dist_pool_t *self);

/* After close: waits up to timeout_ms for all submitted work and for the
 * processes to exit. After terminate: reaps. Returns 0, DIST_ETIMEDOUT, or
 * DIST_ESTATE when neither close nor terminate was called. */
DIST_EXPORT int dist_pool_join(dist_pool_t *self, int timeout_ms);

/* Number of processes (or threads). */
DIST_EXPORT int dist_pool_size(const dist_pool_t *self);

/* The pids of the pool processes now running, into pids[0..max); returns
 * how many there are (may exceed max). 0 for the threads backend. */
DIST_EXPORT size_t dist_pool_pids(dist_pool_t *self, pid_t *pids, size_t max);

/* Counters since creation. */
typedef struct {
    unsigned long submitted, completed, failed, crashed, timed_out, respawned;
} dist_pool_stats_t;
DIST_EXPORT void dist_pool_stats(dist_pool_t *self, dist_pool_stats_t *out);

#ifdef __cplusplus
}
#endif

#endif

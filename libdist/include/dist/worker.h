/*  dist/worker.h - a worker node of a libdist cluster, embeddable.
 *
 *  A worker forks its local Pool (dist/pool.h) before it creates any
 *  ZeroMQ context, connects to the master, announces its name, host, pid,
 *  slots and every registered task name (dist/task.h), takes tasks by
 *  credit, runs them in the pool, returns results (errors name the host,
 *  pid and signal), heartbeats, and reconnects by itself when the master
 *  restarts. Stopping drains: it takes no new tasks, hands back those not
 *  started, finishes the running ones, says BYE and returns.
 *
 *  Register tasks (DIST_TASK, dist_task_register, or dlopen plugins that
 *  use DIST_TASK) before dist_worker_new(): the pool's processes are forked
 *  then. Built-in tasks: dist.echo (returns its arguments), dist.sleep
 *  (milliseconds; returns them), dist.exec (runs a command; refused unless
 *  allow_exec).
 */
#ifndef DIST_WORKER_H_INCLUDED
#define DIST_WORKER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include "common.h"
#include "log.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dist_worker dist_worker_t;

typedef struct {
    const char *master;            /* endpoint; NULL: $DIST_MASTER, else DIST_DEFAULT_ENDPOINT */
    const char *name;              /* default "host:pid" */
    int procs;                     /* pool processes; default: online CPUs */
    bool threads;                  /* run tasks in threads instead (embedded use) */
    int max_prefetch;              /* most tasks held beyond the pool size; default 256 */
    size_t max_message;            /* bytes; default DIST_MAX_MESSAGE_DEFAULT (64 MiB), as
                                      the master's: also the largest task arguments or value
                                      its pool takes (its shared rings are sized from it and
                                      give back pages they no longer use) */
    bool allow_exec;               /* accept dist.exec (and announce it: without this
                                      the worker does not offer it) */
    const char *key;               /* own secret key file (NAME.key, mode 0600 or
                                      stricter); NULL: $DIST_KEY. With server_key, the
                                      connection uses CURVE (docs/PROTOCOL.md section 9) */
    const char *server_key;        /* master's public key file; NULL: $DIST_SERVER_KEY */
    bool insecure;                 /* allow a non-loopback master without keys */
    dist_log_fn log;
    void *log_userdata;
    dist_log_level_t log_level;
} dist_worker_opts_t;

/* Registers the built-in tasks (dist.echo, dist.sleep, dist.exec); called
 * by dist_worker_new, idempotent. */
DIST_EXPORT void dist_worker_register_builtins(void);

/* Creates the worker: forks its pool, then connects. NULL with errno on
 * failure (EINVAL: bad options, only one of the two keys, or a
 * non-loopback master without keys and without insecure; EACCES: a secret
 * key file others can access; ENOENT: a missing key file). Keys are
 * checked before the pool is forked. Does not wait for the master. A key
 * the master refuses in the worker role makes dist_worker_run() return
 * DIST_EREFUSED.
 * The pool's processes die with the thread that calls this (see
 * dist/pool.h): call it from a thread that outlives the worker. They also
 * inherit the descriptors open at that moment: create the worker before
 * opening sockets (a listening one would stay open in them). */
DIST_EXPORT dist_worker_t *dist_worker_new(const dist_worker_opts_t *opts);

/* Stops if running, then frees; the pool's processes are gone when it
 * returns. *self_p = NULL. */
DIST_EXPORT void dist_worker_destroy(dist_worker_t **self_p);

/* Runs until stopped (then drains) or a fatal error. Returns 0 after a
 * clean drain, DIST_EINTR when a second stop cut the drain short,
 * DIST_ESTATE when called twice, or another negative code (the pool or
 * the socket failed). */
DIST_EXPORT int dist_worker_run(dist_worker_t *self);

/* Starts draining (async-signal-safe, any thread); run() returns when done.
 * A second call stops at once: running tasks are abandoned (the master
 * requeues them). */
DIST_EXPORT void dist_worker_stop(dist_worker_t *self);

#ifdef __cplusplus
}
#endif

#endif

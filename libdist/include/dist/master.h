/*  dist/master.h - the broker of a libdist cluster, embeddable.
 *
 *  A master binds a ZeroMQ ROUTER endpoint and speaks docs/PROTOCOL.md:
 *  it keeps task queues (one per task name) with leases, dispatches tasks
 *  to workers by credit, requeues the tasks of dead workers, retries up to
 *  max_attempts, routes each result to its submitting client and keeps it
 *  until acknowledged, and serves named queues and status. It is a single
 *  event loop; memory per peer is bounded.
 *
 *  dist-master is a thin program over this API. Embedders either run the
 *  loop in a thread of their own (dist_master_run) or let the master start
 *  one (dist_master_start).
 *
 *  Options left at 0 / NULL take the defaults shown.
 *
 *  Durability. Without `store` everything is in memory: a restart loses
 *  queued tasks and undelivered results. With `store` (an SQLite file in
 *  WAL mode, created when missing, locked by one master at a time), each
 *  loop turn commits what it changed in one transaction before it sends
 *  any reply that depends on it: ACCEPTED only once the tasks are in the
 *  file, a result to its client only once it is DONE in the file. A new
 *  master on the same file recovers every task that was not acknowledged:
 *  not done ones are queued again (one whose attempt was leased gets
 *  attempt + 1, or gave_up beyond max_attempts, as when a worker dies),
 *  done ones wait for their client name; task names announced by workers
 *  stay known. Named queues are not stored. A commit is in the kernel
 *  when it returns, so it survives the process being killed; only with
 *  store_fsync is it also on disk (survives power loss), at the cost of
 *  an fsync per turn. When the file cannot be written (disk full, I/O
 *  error), new tasks are refused with store_failed, nothing accepted is
 *  lost, the master keeps serving from memory and retries every second.
 */
#ifndef DIST_MASTER_H_INCLUDED
#define DIST_MASTER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include "common.h"
#include "log.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dist_master dist_master_t;

typedef struct {
    const char *bind;              /* endpoint; default DIST_DEFAULT_ENDPOINT; a port of
                                      0 or "*" picks a free one (see dist_master_endpoint) */
    const char *name;              /* default "host:pid" */
    int heartbeat_ms;              /* default 1000 */
    int heartbeat_timeout_ms;      /* a worker silent this long is dead; default 3000 */
    int max_attempts;              /* attempts before a task gives up; default 3 */
    int lease_ms;                  /* lease of a task without timeout; default 3600000.
                                      A task without a timeout is never taken back from a
                                      worker whose heartbeats arrive (its lease is renewed):
                                      this now bounds nothing while the worker lives, and is
                                      kept for compatibility */
    size_t max_queued;             /* tasks queued (and items per named queue); default 10,000,000 */
    size_t max_results;            /* results waiting per client name; default 1,000,000 */
    size_t max_message;            /* bytes; default 64 MiB */
    const char *store;             /* SQLite file for durable state (see below);
                                      NULL: everything in memory, lost on restart */
    bool store_fsync;              /* fsync the store at every commit: survives power
                                      loss too (slower); default off */
    /* Security (docs/PROTOCOL.md section 9, dist/security.h). With key,
     * every connection is CURVE-encrypted and authenticated against the
     * allow lists (at least one is required; a key in allow_workers may
     * only act as a worker, one in allow_clients only as a client). The
     * directories are read again when they change. Without key, binding
     * to anything but loopback (127.0.0.0/8, ::1, localhost, ipc://,
     * inproc://) fails with EINVAL unless insecure. */
    const char *key;               /* the master's secret key file (`dist keygen master`:
                                      master.key, mode 0600 or stricter) */
    const char *allow_workers;     /* directory of worker public keys (NAME.pub) */
    const char *allow_clients;     /* directory of client public keys */
    bool insecure;                 /* allow a non-loopback bind without key */
    /* Observability (docs/OBSERVABILITY.md): "HOST:PORT" of an HTTP
     * endpoint serving Prometheus metrics at /metrics, the status as JSON
     * at /api/status and a live dashboard at /. It has no authentication,
     * so an address other than loopback (127.0.0.0/8, ::1, localhost)
     * needs insecure. Port 0 picks a free one (dist_master_metrics_port).
     * The server runs in a thread of its own, started by dist_master_new;
     * the loop hands it a snapshot about twice a second. NULL: none. */
    const char *metrics;
    dist_log_fn log;               /* NULL: silent */
    void *log_userdata;
    dist_log_level_t log_level;    /* most verbose level passed to log; default INFO
                                      (0, which is also DIST_LOG_ERROR, means INFO:
                                      filter in the callback for errors only) */
    /* A result nobody collects (ACK) is forgotten this long after its task
     * finished, counted (expired_results) and reported as "expired" by id.
     * 0: the default, 86,400,000 (24 h); negative: never. */
    int64_t result_ttl_ms;
} dist_master_opts_t;

/* Creates a master and binds its endpoint. NULL with errno on failure
 * (EADDRINUSE, EINVAL for bad options or a refused insecure bind or
 * metrics address, EADDRINUSE also for a metrics port in use,
 * EACCES for a key file others can access, ENOENT for a missing key file
 * or allow-list directory, ENOTDIR,
 * EPROTONOSUPPORT for an unknown transport, ENOTSUP for a libzmq older
 * than 4.3.3, ...); the reason is also logged ("cannot bind tcp://...:
 * Address already in use"). A store that cannot be used fails it too:
 * EACCES or EROFS (not writable), EBUSY (another master has it), EINVAL
 * (not a libdist store, or damaged), ENOTSUP (written by a newer libdist),
 * or the errno of opening it. Opening the store loads it: this takes
 * time proportional to what it holds. Uses czmq's global ZeroMQ context:
 * create masters after any fork(). */
DIST_EXPORT dist_master_t *dist_master_new(const dist_master_opts_t *opts);

/* Stops the loop if it runs, closes everything, frees; *self_p = NULL. */
DIST_EXPORT void dist_master_destroy(dist_master_t **self_p);

/* The endpoint actually bound, e.g. "tcp://127.0.0.1:41233". Borrowed,
 * valid until destroy; safe to call from any thread. */
DIST_EXPORT const char *dist_master_endpoint(const dist_master_t *self);

/* The port of the metrics endpoint (opts.metrics), or 0 without one.
 * Safe to call from any thread. */
DIST_EXPORT int dist_master_metrics_port(const dist_master_t *self);

/* Runs the event loop in the calling thread until dist_master_stop().
 * Returns 0, DIST_ESTATE when the loop already runs, or a negative code
 * for a fatal error. A master runs its loop once at a time; the loop owns
 * the master while it runs (only stop and endpoint may be called then). */
DIST_EXPORT int dist_master_run(dist_master_t *self);

/* Runs the event loop in a new thread. 0 or -errno. */
DIST_EXPORT int dist_master_start(dist_master_t *self);

/* Asks the loop to finish, from any thread; stopping is sticky (a later
 * run returns at once). With dist_master_run this is async-signal-safe
 * (an atomic store and a write to a pipe), so a SIGTERM handler may call
 * it. When the master was started with dist_master_start it also waits
 * for the loop's thread, which is not async-signal-safe: do not call it
 * from a handler then (dist_master_destroy joins in any case). */
DIST_EXPORT void dist_master_stop(dist_master_t *self);

#ifdef __cplusplus
}
#endif

#endif

/*  dist/process.h - a child process running a C function, like Python's
 *  multiprocessing.Process.
 *
 *  A process object is created with a target function and its argument,
 *  configured (name, daemon flag), then started once: start() forks, the
 *  child runs target(arg) and exits with its return value (0-255), flushing
 *  stdio first and skipping the parent's atexit handlers. The parent joins
 *  it (with an optional timeout), asks whether it is alive, sends SIGTERM or
 *  SIGKILL, and reads its exit code: the exit status, or minus the signal
 *  number when a signal ended it, or DIST_EXITCODE_NONE while it has not
 *  finished (or not started).
 *
 *  Ownership: the object owns its child. dist_process_destroy() reaps it: a
 *  daemon child that still runs is sent SIGTERM (SIGKILL after one second)
 *  and reaped; a non-daemon child is never killed silently, so destroy waits
 *  for it to finish. No zombie is ever left behind.
 *
 *  Threads and fork: one object is used by one thread at a time. start()
 *  calls fork(); in a multi-threaded parent the child may only use
 *  async-signal-safe functions until it execs (see POSIX) - use the Pool,
 *  which forks from a single-threaded fork server, when that matters. The
 *  library must not reap our children behind our back: do not set SIGCHLD
 *  to SIG_IGN in the parent.
 */
#ifndef DIST_PROCESS_H_INCLUDED
#define DIST_PROCESS_H_INCLUDED

#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dist_process dist_process_t;

/* A process target: runs in the child; its return value (masked to 0-255)
 * becomes the child's exit status. */
typedef int (*dist_process_fn)(void *arg);

/* dist_process_exitcode() while the child runs or before it started. */
#define DIST_EXITCODE_NONE INT_MIN

/* Creates a process that will run target(arg). `name` is copied; NULL picks
 * "Process-N" like Python. Returns NULL with errno EINVAL (no target) or
 * ENOMEM. The caller owns the object and frees it with destroy. */
DIST_EXPORT dist_process_t *dist_process_new(dist_process_fn target, void *arg,
                                             const char *name);

/* Reaps the child as described above, frees the object and sets *self_p to
 * NULL. Accepts NULL and a pointer to NULL. May block (non-daemon child). */
DIST_EXPORT void dist_process_destroy(dist_process_t **self_p);

/* Marks the process as a daemon (killed when its object is destroyed) or
 * not (the default; destroy waits for it). Only before start: DIST_ESTATE
 * afterwards. */
DIST_EXPORT int dist_process_set_daemon(dist_process_t *self, bool daemon);
DIST_EXPORT bool dist_process_daemon(const dist_process_t *self);

/* The process's name; borrowed, valid until destroy. The child also gets
 * it (first 15 bytes) as its kernel thread name, visible in ps and top. */
DIST_EXPORT const char *dist_process_name(const dist_process_t *self);

/* Forks the child. Returns 0, DIST_ESTATE if already started, or -errno
 * of the failed system call (e.g. -EAGAIN when fork hits RLIMIT_NPROC). */
DIST_EXPORT int dist_process_start(dist_process_t *self);

/* Waits up to timeout_ms (DIST_FOREVER: no bound) for the child to end and
 * reaps it. Returns 0 once it has ended (again 0 on later calls),
 * DIST_ETIMEDOUT if it still runs (the child is left untouched),
 * DIST_ESTATE if never started, DIST_ECHILD if somebody else reaped it. */
DIST_EXPORT int dist_process_join(dist_process_t *self, int timeout_ms);

/* True between a successful start and the child's end (checked now, without
 * blocking; an ended child is reaped on the way). */
DIST_EXPORT bool dist_process_is_alive(dist_process_t *self);

/* Sends SIGTERM (terminate), SIGKILL (kill) or any signal to the child.
 * Returns 0, also when the child has already ended (nothing is sent then,
 * as in Python); DIST_ESTATE if never started. Does not wait: join after. */
DIST_EXPORT int dist_process_terminate(dist_process_t *self);
DIST_EXPORT int dist_process_kill(dist_process_t *self);
DIST_EXPORT int dist_process_signal(dist_process_t *self, int signum);

/* The child's pid; 0 before start. Stays valid (for messages) after the
 * child has been reaped, although the kernel may reuse the number. */
DIST_EXPORT pid_t dist_process_pid(const dist_process_t *self);

/* Exit status (0-255), -signal when a signal ended it, or
 * DIST_EXITCODE_NONE while it has not ended or not started. Does not block;
 * polls and reaps an ended child. */
DIST_EXPORT int dist_process_exitcode(dist_process_t *self);

#ifdef __cplusplus
}
#endif

#endif

/*  child_internal.h - waiting for one child process with a timeout.
 *
 *  Process, subprocess and pool all own children that must be reaped exactly
 *  once and waited for with a deadline. An unbounded wait is a blocking
 *  waitpid(). A bounded one opens a pidfd (Linux 5.3+), which becomes
 *  readable when the child ends, so that the wait is one poll(2); on older
 *  kernels it falls back to polling waitpid(WNOHANG) with a short sleep.
 */
#ifndef DIST_CHILD_INTERNAL_H_INCLUDED
#define DIST_CHILD_INTERNAL_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;    /* 0 when nothing is tracked */
    int pidfd;    /* -1 when unavailable or released */
    int status;   /* waitpid status, valid once reaped */
    bool reaped;
} dist__child_t;

/* Starts tracking `pid` (a child of ours). Never fails. */
void dist__child_track(dist__child_t *c, pid_t pid);

/* Waits until `deadline` (see util_internal.h) for the child to end and
 * reaps it. 0 once reaped (idempotent), DIST_ETIMEDOUT, DIST_ECHILD if it
 * is not our child any more. */
int dist__child_wait(dist__child_t *c, int64_t deadline);

/* Python-style exit code of a reaped child: status, or -signal. */
int dist__status_code(int status);

/* Closes the pidfd (the pid is kept for messages). */
void dist__child_release(dist__child_t *c);

/* Creates a pidfd for pid, or -1. */
int dist__pidfd_open(pid_t pid);

#endif

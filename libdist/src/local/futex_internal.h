/*  futex_internal.h - process-shared futex wait and wake.
 *
 *  Shared-memory objects (queue, and the sync primitives) sleep on a 32-bit
 *  sequence word instead of a pthread condition variable: a process killed
 *  while waiting on a futex leaves nothing behind, whereas a process-shared
 *  condvar can be left with a waiter count that makes it unusable.
 *  The words live in MAP_SHARED memory, so the non-PRIVATE ops are used.
 */
#ifndef DIST_FUTEX_INTERNAL_H_INCLUDED
#define DIST_FUTEX_INTERNAL_H_INCLUDED

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "util_internal.h"

/* Sleeps while *word == expected, at most until `deadline` (monotonic ns,
 * INT64_MAX for none). Returns 0 when woken or the word changed (callers
 * re-check their condition either way), DIST_ETIMEDOUT-like -ETIMEDOUT. */
static inline int dist__futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t deadline)
{
    struct timespec ts, *tp = NULL;
    if (deadline != INT64_MAX) {
        int64_t left = dist__left_ns(deadline);
        if (left == 0)
            return -ETIMEDOUT;
        ts = dist__ns_to_timespec(left);
        tp = &ts;
    }
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, tp, NULL, 0);
    if (r < 0 && errno == ETIMEDOUT)
        return -ETIMEDOUT;
    return 0; /* woken, EAGAIN (value changed) or EINTR: re-check */
}

/* Wakes up to n sleepers on word (INT_MAX: all). */
static inline void dist__futex_wake(_Atomic uint32_t *word, int n)
{
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
}

#endif

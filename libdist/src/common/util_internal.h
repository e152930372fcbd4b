/*  util_internal.h - small helpers shared by libdist's source files.
 *
 *  Deadlines: a blocking call converts its `timeout_ms` into an absolute
 *  deadline on CLOCK_MONOTONIC once, then asks how much is left before each
 *  wait, so that spurious wake-ups and retries never stretch the bound.
 */
#ifndef DIST_UTIL_INTERNAL_H_INCLUDED
#define DIST_UTIL_INTERNAL_H_INCLUDED

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "dist/common.h"

/* Monotonic clock in nanoseconds. */
static inline int64_t dist__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A cheaper monotonic clock with a resolution of a scheduler tick (1-4
 * ms): for hot loops that only need "has a millisecond or so passed". */
static inline int64_t dist__now_coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Absolute deadline for `timeout_ms`; INT64_MAX for DIST_FOREVER (any
 * negative value). */
static inline int64_t dist__deadline(int timeout_ms)
{
    if (timeout_ms < 0)
        return INT64_MAX;
    return dist__now_ns() + (int64_t)timeout_ms * 1000000;
}

/* Nanoseconds left before `deadline` (0 when it has passed, INT64_MAX when
 * there is none). */
static inline int64_t dist__left_ns(int64_t deadline)
{
    if (deadline == INT64_MAX)
        return INT64_MAX;
    int64_t left = deadline - dist__now_ns();
    return left > 0 ? left : 0;
}

/* Milliseconds left, rounded up, for poll(2): -1 without a deadline. */
static inline int dist__left_ms(int64_t deadline)
{
    if (deadline == INT64_MAX)
        return -1;
    int64_t ns = dist__left_ns(deadline);
    int64_t ms = (ns + 999999) / 1000000;
    return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

static inline struct timespec dist__ns_to_timespec(int64_t ns)
{
    struct timespec ts = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
    return ts;
}

/* vsnprintf into buf (size > 0) and the length of what is there: the
 * formatted length clamped to size - 1 when it was truncated, 0 on an
 * encoding error (buf is then empty). */
__attribute__((format(printf, 3, 0)))
static inline size_t dist__vformat(char *buf, size_t size, const char *fmt, va_list ap)
{
    int n = vsnprintf(buf, size, fmt, ap);
    if (n < 0) {
        buf[0] = '\0';
        return 0;
    }
    return (size_t)n < size ? (size_t)n : size - 1;
}

#endif

/*  dist/sync.h - process-shared synchronisation primitives, like Python's
 *  multiprocessing.Lock, RLock, Semaphore, BoundedSemaphore, Event,
 *  Condition and Barrier.
 *
 *  Each object lives in its own MAP_SHARED anonymous mapping. Create it,
 *  then fork: the parent and every child forked afterwards share it, and
 *  every thread of those processes may use it at once. Each process destroys
 *  its own handle; the memory goes away with the last process that maps it.
 *  The objects are not meant for unrelated processes (no name): use them in
 *  a family of forked processes.
 *
 *  Timeouts are `int timeout_ms` as everywhere in libdist: DIST_FOREVER (-1)
 *  waits without bound, 0 tries once without blocking, a positive value is
 *  an upper bound. A call that gives up returns DIST_ETIMEDOUT (also for a
 *  timeout of 0).
 *
 *  Ownership and death: Lock and RLock belong to the thread that acquired
 *  them; only that thread may release them (DIST_ESTATE otherwise). When
 *  the owner dies holding one (its process is killed, or the thread exits),
 *  the next acquirer gets the lock together with DIST_EOWNERDEAD: the lock
 *  works normally afterwards, but whatever it protected may be half-updated.
 *  Semaphores and Events have no owner; a process killed while waiting on
 *  any of these objects leaves nothing behind.
 *
 *  Waiting never uses a process-shared pthread condition variable (a waiter
 *  killed inside one can leave it unusable): waiters sleep on futexes.
 */
#ifndef DIST_SYNC_H_INCLUDED
#define DIST_SYNC_H_INCLUDED

#include <stdbool.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* --- Lock: a non-recursive mutual-exclusion lock ------------------------ */

typedef struct dist_lock dist_lock_t;

/* Creates an unlocked Lock. Returns NULL with errno ENOMEM (or the mmap or
 * pthread errno). The caller frees it with destroy. */
DIST_EXPORT dist_lock_t *dist_lock_new(void);

/* Unmaps this process's view and sets *self_p to NULL; accepts NULL. If
 * the calling thread holds the lock it is released first. Other processes
 * keep using it. */
DIST_EXPORT void dist_lock_destroy(dist_lock_t **self_p);

/* Acquires the lock, waiting up to timeout_ms. Returns 0; DIST_EOWNERDEAD
 * (acquired: the previous owner died holding it); DIST_ETIMEDOUT;
 * DIST_EDEADLK when the calling thread already holds it (at once, instead
 * of waiting for itself); or -errno. Thread- and fork-safe. */
DIST_EXPORT int dist_lock_acquire(dist_lock_t *self, int timeout_ms);

/* Releases the lock. Returns 0, or DIST_ESTATE when the calling thread does
 * not hold it (never a crash, and the lock is left as it was). */
DIST_EXPORT int dist_lock_release(dist_lock_t *self);

/* --- RLock: a recursive lock -------------------------------------------- */

typedef struct dist_rlock dist_rlock_t;

/* Creates an unlocked RLock; NULL with errno on failure. */
DIST_EXPORT dist_rlock_t *dist_rlock_new(void);

/* As dist_lock_destroy(); every level the calling thread holds is
 * released first. */
DIST_EXPORT void dist_rlock_destroy(dist_rlock_t **self_p);

/* Acquires one more level (at once when the calling thread already holds
 * it). Returns 0, DIST_EOWNERDEAD (acquired at level 1 from a dead owner),
 * DIST_ETIMEDOUT, or -errno (-EAGAIN past the recursion limit). */
DIST_EXPORT int dist_rlock_acquire(dist_rlock_t *self, int timeout_ms);

/* Releases one level. Returns 0, or DIST_ESTATE when the calling thread
 * does not hold it. */
DIST_EXPORT int dist_rlock_release(dist_rlock_t *self);

/* --- Semaphore and BoundedSemaphore ------------------------------------- */

typedef struct dist_sem dist_sem_t;

/* Creates a semaphore with the given initial value. NULL with errno
 * EINVAL (value above INT32_MAX) or ENOMEM. */
DIST_EXPORT dist_sem_t *dist_sem_new(unsigned value);

/* Creates a bounded semaphore: release() refuses to raise the value above
 * the initial one. NULL with errno as dist_sem_new(). */
DIST_EXPORT dist_sem_t *dist_sem_new_bounded(unsigned value);

/* Unmaps this process's view and sets *self_p to NULL; accepts NULL. */
DIST_EXPORT void dist_sem_destroy(dist_sem_t **self_p);

/* Decrements the value, waiting up to timeout_ms while it is 0. Returns 0
 * or DIST_ETIMEDOUT. Thread- and fork-safe. */
DIST_EXPORT int dist_sem_acquire(dist_sem_t *self, int timeout_ms);

/* Increments the value and wakes the waiters. Any thread or process may
 * release. Returns 0; DIST_ESTATE when a bounded semaphore is already at
 * its initial value (Python's "released too many times"); -EOVERFLOW
 * above INT32_MAX. */
DIST_EXPORT int dist_sem_release(dist_sem_t *self);

/* The value now (a snapshot). */
DIST_EXPORT unsigned dist_sem_value(const dist_sem_t *self);

/* --- Event -------------------------------------------------------------- */

typedef struct dist_event dist_event_t;

/* Creates an event whose flag is clear; NULL with errno on failure. */
DIST_EXPORT dist_event_t *dist_event_new(void);

/* Unmaps this process's view and sets *self_p to NULL; accepts NULL. */
DIST_EXPORT void dist_event_destroy(dist_event_t **self_p);

/* Sets the flag and wakes every waiter. Never fails. */
DIST_EXPORT void dist_event_set(dist_event_t *self);

/* Clears the flag. */
DIST_EXPORT void dist_event_clear(dist_event_t *self);

/* The flag now. */
DIST_EXPORT bool dist_event_is_set(const dist_event_t *self);

/* Waits up to timeout_ms for the flag to be set. Returns 0 when it is set,
 * or was set while this call waited (even if cleared again since, as in
 * Python), else DIST_ETIMEDOUT. */
DIST_EXPORT int dist_event_wait(dist_event_t *self, int timeout_ms);

/* --- Condition ---------------------------------------------------------- */

typedef struct dist_cond dist_cond_t;

/* Creates a condition bound to `lock` (borrowed: it must outlive the
 * condition in every process), or to a Lock of its own when lock is NULL
 * (reach it with dist_cond_lock()). NULL with errno on failure. */
DIST_EXPORT dist_cond_t *dist_cond_new(dist_lock_t *lock);

/* Unmaps this process's view and sets *self_p to NULL; accepts NULL.
 * A borrowed lock is left alone. */
DIST_EXPORT void dist_cond_destroy(dist_cond_t **self_p);

/* The condition's lock (borrowed, valid until destroy). Acquire and release
 * it with dist_lock_acquire() / dist_lock_release(). */
DIST_EXPORT dist_lock_t *dist_cond_lock(dist_cond_t *self);

/* Called with the lock held: releases it, sleeps until notified or until
 * timeout_ms passes, and re-acquires it (without a bound) before returning,
 * in every case but DIST_ESTATE. Returns 0 when woken - possibly without a
 * notify of its own (a spurious wake-up), so wait in a loop that re-checks
 * the state, or use wait_for; DIST_ETIMEDOUT; DIST_EOWNERDEAD (woken, and
 * the lock was re-acquired from a dead owner); DIST_ESTATE when the calling
 * thread does not hold the lock. */
DIST_EXPORT int dist_cond_wait(dist_cond_t *self, int timeout_ms);

/* A predicate for wait_for: called with the lock held. */
typedef bool (*dist_cond_pred_fn)(void *arg);

/* Called with the lock held: waits until pred(arg) is true, at most
 * timeout_ms in all. Returns 0 when it is true (at once if it already is),
 * DIST_ETIMEDOUT when it is still false at the deadline, DIST_ESTATE
 * (lock not held), or DIST_EOWNERDEAD (see wait; pred was not re-checked).
 * The lock is held on return except with DIST_ESTATE. */
DIST_EXPORT int dist_cond_wait_for(dist_cond_t *self, dist_cond_pred_fn pred, void *arg,
                                   int timeout_ms);

/* Called with the lock held: wakes up to n waiters (notify_all: all of
 * them). Returns 0, or DIST_ESTATE when the calling thread does not hold
 * the lock. A waiter killed after being woken takes its notification with
 * it: where processes may be killed, prefer notify_all. */
DIST_EXPORT int dist_cond_notify(dist_cond_t *self, int n);
DIST_EXPORT int dist_cond_notify_all(dist_cond_t *self);

/* --- Barrier ------------------------------------------------------------ */

typedef struct dist_barrier dist_barrier_t;

/* Creates a barrier for `parties` callers (at least 1). NULL with errno
 * EINVAL or ENOMEM. */
DIST_EXPORT dist_barrier_t *dist_barrier_new(unsigned parties);

/* Unmaps this process's view and sets *self_p to NULL; accepts NULL. */
DIST_EXPORT void dist_barrier_destroy(dist_barrier_t **self_p);

/* Waits until `parties` callers (threads or processes) have called wait,
 * then releases them all. Returns the caller's arrival index, 0 to
 * parties - 1 (exactly one caller gets each), or: DIST_EBROKEN when the
 * barrier is broken or becomes broken while waiting (abort, reset, another
 * caller's timeout); DIST_ETIMEDOUT when this caller's timeout passed
 * first - which breaks the barrier for the others, as in Python. */
DIST_EXPORT int dist_barrier_wait(dist_barrier_t *self, int timeout_ms);

/* Breaks the barrier: current and future waiters get DIST_EBROKEN until
 * reset. Returns 0 or -errno. */
DIST_EXPORT int dist_barrier_abort(dist_barrier_t *self);

/* Returns the barrier to its initial, empty state; callers waiting now
 * get DIST_EBROKEN. Returns 0 or -errno. */
DIST_EXPORT int dist_barrier_reset(dist_barrier_t *self);

DIST_EXPORT unsigned dist_barrier_parties(const dist_barrier_t *self);
/* Callers waiting now (0 while broken). */
DIST_EXPORT unsigned dist_barrier_n_waiting(const dist_barrier_t *self);
DIST_EXPORT bool dist_barrier_broken(const dist_barrier_t *self);

#ifdef __cplusplus
}
#endif

#endif

/*  sync_internal.h - the robust process-shared mutex that every shared-memory
 *  object locks, and the shared anonymous mappings that hold them.
 *
 *  Queue, the sync primitives and shm's Value/Array keep their state in
 *  MAP_SHARED|MAP_ANONYMOUS memory created before fork. Their mutexes are
 *  pthread mutexes that are process-shared and robust: when the owner dies,
 *  the next locker gets EOWNERDEAD together with the lock and must repair
 *  the state it guards before calling pthread_mutex_consistent().
 *
 *  struct dist_lock is defined here (not in sync.c) so that shm.c can embed
 *  the lock of a Value or Array in the same mapping as its data.
 */
#ifndef DIST_SYNC_INTERNAL_H_INCLUDED
#define DIST_SYNC_INTERNAL_H_INCLUDED

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "dist/sync.h"

/* A Lock, wherever it lives (its own mapping, or inside another object's). */
struct dist_lock {
    pthread_mutex_t m;
    /* Set when a thread found the owner dead while only checking whether it
     * held the lock itself (dist_cond_notify): the next acquirer reports it. */
    _Atomic uint32_t owner_died;
};

static inline void dist__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Initialises a process-shared robust mutex of `type` (PTHREAD_MUTEX_NORMAL,
 * _ERRORCHECK or _RECURSIVE) in shared memory. Returns 0 or -errno. */
int dist__mutex_init(pthread_mutex_t *m, int type);

/* Locks m, spinning briefly before it sleeps, until `deadline` (monotonic
 * ns, INT64_MAX for none; 0 for a single try). Returns 0; -EOWNERDEAD when
 * the lock was taken from a dead owner (the caller holds it, repairs what it
 * guards and calls pthread_mutex_consistent); -ETIMEDOUT; -EDEADLK for an
 * error-checking mutex the caller already holds; or another -errno. */
int dist__mutex_lock(pthread_mutex_t *m, int64_t deadline);


/* Releases every hold the calling thread has on l (used before its memory
 * is unmapped: a held robust mutex sits on the thread's robust list, and an
 * unmapped list entry would break later lock operations). */
void dist__lock_drop(struct dist_lock *l);

/* A zero-filled MAP_SHARED|MAP_ANONYMOUS mapping of `size` bytes that
 * processes forked afterwards share, or NULL with errno set. unmap accepts
 * NULL. */
void *dist__shared_map(size_t size);
void dist__shared_unmap(void *p, size_t size);

/* Initialises the mutex m of `type` that lies inside `map`, a fresh mapping
 * of `size` bytes (not NULL). Returns map, or unmaps it and returns NULL
 * with errno set: constructors end with `return dist__shared_with_mutex(...)`. */
void *dist__shared_with_mutex(void *map, size_t size, pthread_mutex_t *m, int type);

/* The same for a Lock (error-checking) inside map. */
static inline void *dist__shared_with_lock(void *map, size_t size, struct dist_lock *l)
{
    return dist__shared_with_mutex(map, size, &l->m, PTHREAD_MUTEX_ERRORCHECK);
}

#endif

/*  sync.c - process-shared Lock, RLock, Semaphore, Event, Condition and
 *  Barrier (see dist/sync.h), and the robust mutex helpers of
 *  sync_internal.h.
 *
 *  Each object is one shared anonymous mapping; the handle a process holds
 *  is the address of that mapping, identical in every forked child, so the
 *  objects need no per-process state at all.
 *
 *  Lock and RLock are robust process-shared pthread mutexes (error-checking,
 *  resp. recursive): the kernel's robust-futex list hands a dead owner's
 *  mutex to the next locker with EOWNERDEAD, which we mark consistent at
 *  once and report. Everything that waits for something other than a mutex
 *  sleeps on a 32-bit futex word and re-checks its condition after every
 *  wake-up, so a process killed while waiting leaves at most a stale waiter
 *  count behind (which costs a spare wake-up system call, nothing more).
 *  Semaphores, Events and Barriers wake every sleeper rather than one: a
 *  single woken process killed before it acts would otherwise strand the
 *  others while the resource is free.
 */
#include "dist/sync.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>

#include "dist/error.h"
#include "futex_internal.h"
#include "sync_internal.h"
#include "util_internal.h"

/* glibc's robust mutexes never spin: a contended lock goes straight to a
 * futex sleep, and the unlocker to a wake-up system call. Critical sections
 * guarded by these locks are usually short, so try for a while first. */
#define LOCK_SPINS 200

/* ---- helpers of sync_internal.h ----------------------------------------- */

void *dist__shared_map(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void dist__shared_unmap(void *p, size_t size)
{
    if (p)
        munmap(p, size);
}

int dist__mutex_init(pthread_mutex_t *m, int type)
{
    pthread_mutexattr_t a;
    int r = pthread_mutexattr_init(&a);
    if (r)
        return -r;
    if (!(r = pthread_mutexattr_settype(&a, type)) &&
        !(r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)) &&
        !(r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)))
        r = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return -r;
}

int dist__mutex_lock(pthread_mutex_t *m, int64_t deadline)
{
    int r = pthread_mutex_trylock(m);
    if (r != EBUSY)
        return -r;
    if (dist__left_ns(deadline) == 0)
        return -ETIMEDOUT; /* a poll: one try, no spinning */
    for (int i = 0; i < LOCK_SPINS && r == EBUSY; i++) {
        for (int j = 0; j < 8; j++)
            dist__cpu_relax();
        r = pthread_mutex_trylock(m);
    }
    if (r != EBUSY)
        return -r;
    if (deadline == INT64_MAX)
        return -pthread_mutex_lock(m);
    /* clocklock: the deadline is on CLOCK_MONOTONIC, immune to clock steps. */
    struct timespec ts = dist__ns_to_timespec(deadline);
    return -pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
}

void *dist__shared_with_mutex(void *map, size_t size, pthread_mutex_t *m, int type)
{
    int r = dist__mutex_init(m, type);
    if (r) {
        dist__shared_unmap(map, size);
        errno = -r;
        return NULL;
    }
    return map;
}

/* Releases every hold the calling thread has on m (one for a Lock, any
 * number for an RLock). Unlocking a robust mutex that another thread holds
 * fails with EPERM and changes nothing, so this only ever drops our own. */
static void s_mutex_drop(pthread_mutex_t *m)
{
    for (int i = 0; i < INT_MAX && pthread_mutex_unlock(m) == 0; i++)
        ;
}

void dist__lock_drop(struct dist_lock *l) { s_mutex_drop(&l->m); }

/* ---- Lock --------------------------------------------------------------- */

/* Acquires l until deadline and reports a dead previous owner, including
 * one noticed (and absorbed) by s_lock_held() in the meantime. */
static int s_lock_acquire(struct dist_lock *l, int64_t deadline)
{
    int r = dist__mutex_lock(&l->m, deadline);
    if (r == -EOWNERDEAD) {
        pthread_mutex_consistent(&l->m);
        atomic_store(&l->owner_died, 0);
        return DIST_EOWNERDEAD;
    }
    if (r == 0 && atomic_load_explicit(&l->owner_died, memory_order_relaxed) &&
        atomic_exchange(&l->owner_died, 0))
        return DIST_EOWNERDEAD;
    return r;
}

/* Whether the calling thread holds l, without waiting. An error-checking
 * mutex answers EDEADLK to a trylock by its owner. A trylock that succeeds
 * means nobody held it: undo. When it succeeds with EOWNERDEAD we must make
 * the mutex consistent before releasing it, so keep the news for the next
 * acquirer in owner_died. */
static bool s_lock_held(struct dist_lock *l)
{
    int r = pthread_mutex_trylock(&l->m);
    if (r == EDEADLK)
        return true;
    if (r == EOWNERDEAD) {
        atomic_store(&l->owner_died, 1);
        pthread_mutex_consistent(&l->m);
    }
    if (r == 0 || r == EOWNERDEAD)
        pthread_mutex_unlock(&l->m);
    return false;
}

dist_lock_t *dist_lock_new(void)
{
    struct dist_lock *l = dist__shared_map(sizeof *l);
    return l ? dist__shared_with_lock(l, sizeof *l, l) : NULL;
}

void dist_lock_destroy(dist_lock_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist__lock_drop(*self_p);
    dist__shared_unmap(*self_p, sizeof **self_p);
    *self_p = NULL;
}

int dist_lock_acquire(dist_lock_t *self, int timeout_ms)
{
    if (!self)
        return DIST_EINVAL;
    return s_lock_acquire(self, dist__deadline(timeout_ms));
}

int dist_lock_release(dist_lock_t *self)
{
    if (!self)
        return DIST_EINVAL;
    int r = pthread_mutex_unlock(&self->m);
    return r == EPERM ? DIST_ESTATE : -r;
}

/* ---- RLock -------------------------------------------------------------- */

struct dist_rlock {
    pthread_mutex_t m;
};

dist_rlock_t *dist_rlock_new(void)
{
    dist_rlock_t *l = dist__shared_map(sizeof *l);
    return l ? dist__shared_with_mutex(l, sizeof *l, &l->m, PTHREAD_MUTEX_RECURSIVE) : NULL;
}

void dist_rlock_destroy(dist_rlock_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    s_mutex_drop(&(*self_p)->m);
    dist__shared_unmap(*self_p, sizeof **self_p);
    *self_p = NULL;
}

int dist_rlock_acquire(dist_rlock_t *self, int timeout_ms)
{
    if (!self)
        return DIST_EINVAL;
    int r = dist__mutex_lock(&self->m, dist__deadline(timeout_ms));
    if (r == -EOWNERDEAD) {
        pthread_mutex_consistent(&self->m);
        return DIST_EOWNERDEAD;
    }
    return r;
}

int dist_rlock_release(dist_rlock_t *self)
{
    if (!self)
        return DIST_EINVAL;
    int r = pthread_mutex_unlock(&self->m);
    return r == EPERM ? DIST_ESTATE : -r;
}

/* ---- Semaphore ---------------------------------------------------------- */

/* The value itself is the futex word: a waiter sleeps while it is 0. */
struct dist_sem {
    _Atomic uint32_t value;
    _Atomic uint32_t waiters; /* may over-count after a waiter is killed */
    uint32_t max;             /* INT32_MAX, or the initial value when bounded */
    bool bounded;
};

static dist_sem_t *s_sem_new(unsigned value, bool bounded)
{
    if (value > INT32_MAX) {
        errno = EINVAL;
        return NULL;
    }
    dist_sem_t *s = dist__shared_map(sizeof *s);
    if (!s)
        return NULL;
    atomic_store(&s->value, value);
    s->bounded = bounded;
    s->max = bounded ? value : INT32_MAX;
    return s;
}

dist_sem_t *dist_sem_new(unsigned value) { return s_sem_new(value, false); }
dist_sem_t *dist_sem_new_bounded(unsigned value) { return s_sem_new(value, true); }

void dist_sem_destroy(dist_sem_t **self_p)
{
    if (self_p) {
        dist__shared_unmap(*self_p, sizeof(dist_sem_t));
        *self_p = NULL;
    }
}

int dist_sem_acquire(dist_sem_t *self, int timeout_ms)
{
    if (!self)
        return DIST_EINVAL;
    int64_t deadline = dist__deadline(timeout_ms);
    for (;;) {
        uint32_t v = atomic_load(&self->value);
        while (v > 0)
            if (atomic_compare_exchange_weak(&self->value, &v, v - 1))
                return 0;
        if (dist__left_ns(deadline) == 0)
            return DIST_ETIMEDOUT;
        /* Register, then sleep only if the value is still 0 (the kernel
         * checks it atomically). A releaser increments the value before it
         * reads `waiters`; both are sequentially consistent, so either it
         * sees us and wakes us, or our futex check sees its increment. */
        atomic_fetch_add(&self->waiters, 1);
        dist__futex_wait(&self->value, 0, deadline);
        atomic_fetch_sub(&self->waiters, 1);
    }
}

int dist_sem_release(dist_sem_t *self)
{
    if (!self)
        return DIST_EINVAL;
    uint32_t v = atomic_load(&self->value);
    do {
        if (v >= self->max)
            return self->bounded ? DIST_ESTATE : -EOVERFLOW;
    } while (!atomic_compare_exchange_weak(&self->value, &v, v + 1));
    if (atomic_load(&self->waiters))
        dist__futex_wake(&self->value, INT_MAX);
    return 0;
}

unsigned dist_sem_value(const dist_sem_t *self)
{
    return atomic_load(&((dist_sem_t *)self)->value);
}

/* ---- Event -------------------------------------------------------------- */

/* One futex word: bit 0 is the flag, the other bits count the sets that
 * raised it. A waiter that saw the flag clear sleeps on the whole word; any
 * change it sees later can only come from a set (clearing a clear flag
 * changes nothing), so it reports the event even if it was cleared again
 * before the waiter ran - Python's semantics. */
struct dist_event {
    _Atomic uint32_t word;
};

dist_event_t *dist_event_new(void) { return dist__shared_map(sizeof(struct dist_event)); }

void dist_event_destroy(dist_event_t **self_p)
{
    if (self_p) {
        dist__shared_unmap(*self_p, sizeof(dist_event_t));
        *self_p = NULL;
    }
}

void dist_event_set(dist_event_t *self)
{
    uint32_t w = atomic_load(&self->word);
    do {
        if (w & 1)
            return;
    } while (!atomic_compare_exchange_weak(&self->word, &w, (w + 2) | 1));
    dist__futex_wake(&self->word, INT_MAX);
}

void dist_event_clear(dist_event_t *self) { atomic_fetch_and(&self->word, ~1u); }

bool dist_event_is_set(const dist_event_t *self)
{
    return atomic_load(&((dist_event_t *)self)->word) & 1;
}

int dist_event_wait(dist_event_t *self, int timeout_ms)
{
    uint32_t w = atomic_load(&self->word);
    if (w & 1)
        return 0;
    int64_t deadline = dist__deadline(timeout_ms);
    for (;;) {
        int r = dist__futex_wait(&self->word, w, deadline);
        if (atomic_load(&self->word) != w)
            return 0;
        if (r == -ETIMEDOUT)
            return DIST_ETIMEDOUT;
    }
}

/* ---- Condition ---------------------------------------------------------- */

/* Waiters sample `seq` and register in `waiters` while holding the lock; a
 * notifier holding the lock bumps `seq` only when somebody is registered.
 * So a waiter between its unlock and its futex sleep cannot miss a notify:
 * the kernel sees the bumped word and does not put it to sleep. */
struct dist_cond {
    struct dist_lock *lock; /* &own, or a borrowed Lock mapped at the same address in every process */
    _Atomic uint32_t seq;
    _Atomic uint32_t waiters;
    struct dist_lock own;
};

dist_cond_t *dist_cond_new(dist_lock_t *lock)
{
    dist_cond_t *c = dist__shared_map(sizeof *c);
    if (!c)
        return NULL;
    c->lock = lock ? lock : &c->own;
    return lock ? c : dist__shared_with_lock(c, sizeof *c, &c->own);
}

void dist_cond_destroy(dist_cond_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_cond_t *c = *self_p;
    if (c->lock == &c->own)
        dist__lock_drop(&c->own);
    dist__shared_unmap(c, sizeof *c);
    *self_p = NULL;
}

dist_lock_t *dist_cond_lock(dist_cond_t *self) { return self->lock; }

static int s_cond_wait(dist_cond_t *c, int64_t deadline)
{
    uint32_t seq = atomic_load(&c->seq);
    atomic_fetch_add(&c->waiters, 1);
    if (pthread_mutex_unlock(&c->lock->m)) { /* EPERM: not ours */
        atomic_fetch_sub(&c->waiters, 1);
        return DIST_ESTATE;
    }
    int w = dist__futex_wait(&c->seq, seq, deadline);
    atomic_fetch_sub(&c->waiters, 1);
    /* As in Python, the lock is re-taken without a bound. */
    int r = s_lock_acquire(c->lock, INT64_MAX);
    if (r)
        return r;
    if (w == -ETIMEDOUT && atomic_load(&c->seq) == seq)
        return DIST_ETIMEDOUT;
    return 0;
}

int dist_cond_wait(dist_cond_t *self, int timeout_ms)
{
    if (!self)
        return DIST_EINVAL;
    return s_cond_wait(self, dist__deadline(timeout_ms));
}

int dist_cond_wait_for(dist_cond_t *self, dist_cond_pred_fn pred, void *arg, int timeout_ms)
{
    if (!self || !pred)
        return DIST_EINVAL;
    int64_t deadline = dist__deadline(timeout_ms);
    while (!pred(arg)) {
        if (dist__left_ns(deadline) == 0)
            return DIST_ETIMEDOUT;
        int r = s_cond_wait(self, deadline);
        if (r == DIST_ESTATE || r == DIST_EOWNERDEAD)
            return r;
    }
    return 0;
}

int dist_cond_notify(dist_cond_t *self, int n)
{
    if (!self)
        return DIST_EINVAL;
    if (!s_lock_held(self->lock))
        return DIST_ESTATE;
    if (n > 0 && atomic_load(&self->waiters)) {
        atomic_fetch_add(&self->seq, 1);
        dist__futex_wake(&self->seq, n);
    }
    return 0;
}

int dist_cond_notify_all(dist_cond_t *self) { return dist_cond_notify(self, INT_MAX); }

/* ---- Barrier ------------------------------------------------------------ */

/* State under a robust mutex; waiters sleep on `seq`, which every state
 * change bumps. A generation `gen` ends either by release (the last party
 * arrives) or by reset. Waiters of generation g learn which from bit g % 64
 * of `broken_gens` when they wake (a waiter would have to sleep through 64
 * later generations to read a stale bit). Within a generation, `broken`
 * (abort, timeout) sends everybody away with DIST_EBROKEN until reset.
 * Releasing does not wait for the released parties to leave, so a party
 * killed on its way out cannot block the next generation. */
struct dist_barrier {
    pthread_mutex_t m;
    uint32_t parties;
    uint32_t gen;
    uint64_t broken_gens;
    _Atomic uint32_t count; /* parties waiting in this generation */
    _Atomic bool broken;
    _Atomic uint32_t seq;
};

static void s_barrier_bump(dist_barrier_t *b)
{
    atomic_fetch_add(&b->seq, 1);
    dist__futex_wake(&b->seq, INT_MAX);
}

/* Locks the barrier. A process that died inside its (short) critical
 * section may have counted itself in: break the barrier rather than let a
 * generation release with a dead party. */
static int s_barrier_lock(dist_barrier_t *b)
{
    int r = dist__mutex_lock(&b->m, INT64_MAX);
    if (r == -EOWNERDEAD) {
        atomic_store(&b->broken, true);
        s_barrier_bump(b);
        pthread_mutex_consistent(&b->m);
        return 0;
    }
    return r;
}

dist_barrier_t *dist_barrier_new(unsigned parties)
{
    if (parties == 0 || parties > INT_MAX) {
        errno = EINVAL;
        return NULL;
    }
    dist_barrier_t *b = dist__shared_map(sizeof *b);
    if (!b)
        return NULL;
    b->parties = parties;
    return dist__shared_with_mutex(b, sizeof *b, &b->m, PTHREAD_MUTEX_NORMAL);
}

void dist_barrier_destroy(dist_barrier_t **self_p)
{
    if (self_p) {
        dist__shared_unmap(*self_p, sizeof(dist_barrier_t));
        *self_p = NULL;
    }
}

int dist_barrier_wait(dist_barrier_t *self, int timeout_ms)
{
    if (!self)
        return DIST_EINVAL;
    int64_t deadline = dist__deadline(timeout_ms);
    int r = s_barrier_lock(self);
    if (r)
        return r;
    if (atomic_load(&self->broken)) {
        pthread_mutex_unlock(&self->m);
        return DIST_EBROKEN;
    }
    uint32_t g = self->gen, idx = atomic_fetch_add(&self->count, 1);
    uint64_t bit = (uint64_t)1 << (g % 64);
    if (idx + 1 == self->parties) {
        self->broken_gens &= ~bit;
        self->gen++;
        atomic_store(&self->count, 0);
        s_barrier_bump(self);
        pthread_mutex_unlock(&self->m);
        return (int)idx;
    }
    for (;;) {
        uint32_t seq = atomic_load(&self->seq);
        pthread_mutex_unlock(&self->m);
        int w = dist__futex_wait(&self->seq, seq, deadline);
        if ((r = s_barrier_lock(self)))
            return r;
        if (self->gen != g) {
            bool was_broken = self->broken_gens & bit;
            pthread_mutex_unlock(&self->m);
            return was_broken ? DIST_EBROKEN : (int)idx;
        }
        if (atomic_load(&self->broken)) {
            atomic_fetch_sub(&self->count, 1);
            pthread_mutex_unlock(&self->m);
            return DIST_EBROKEN;
        }
        if (w == -ETIMEDOUT || dist__left_ns(deadline) == 0) {
            atomic_store(&self->broken, true);
            atomic_fetch_sub(&self->count, 1);
            s_barrier_bump(self);
            pthread_mutex_unlock(&self->m);
            return DIST_ETIMEDOUT;
        }
    }
}

int dist_barrier_abort(dist_barrier_t *self)
{
    int r = s_barrier_lock(self);
    if (r)
        return r;
    atomic_store(&self->broken, true);
    s_barrier_bump(self);
    pthread_mutex_unlock(&self->m);
    return 0;
}

int dist_barrier_reset(dist_barrier_t *self)
{
    int r = s_barrier_lock(self);
    if (r)
        return r;
    /* End the current generation as broken, so that whoever waits in it
     * (or sleeps through the reset) leaves with DIST_EBROKEN. */
    self->broken_gens |= (uint64_t)1 << (self->gen % 64);
    self->gen++;
    atomic_store(&self->count, 0);
    atomic_store(&self->broken, false);
    s_barrier_bump(self);
    pthread_mutex_unlock(&self->m);
    return 0;
}

unsigned dist_barrier_parties(const dist_barrier_t *self) { return self->parties; }

unsigned dist_barrier_n_waiting(const dist_barrier_t *self)
{
    dist_barrier_t *b = (dist_barrier_t *)self;
    return atomic_load(&b->broken) ? 0 : atomic_load(&b->count);
}

bool dist_barrier_broken(const dist_barrier_t *self)
{
    return atomic_load(&((dist_barrier_t *)self)->broken);
}

/*  queue.c - shared-memory MPMC ring with a robust mutex (see dist/queue.h).
 *
 *  Layout: one MAP_SHARED|MAP_ANONYMOUS mapping holding `struct shared`
 *  followed by the ring. A message is a 4-byte length and its bytes,
 *  wrapping around the end of the ring. `head` and `tail` are byte counters
 *  that only grow; the ring offset is the counter modulo the capacity.
 *
 *  Crash safety rests on one rule: the state changes of put and get are
 *  committed by a single release-store (of `tail`, resp. `head`) after all
 *  the bytes they depend on are in place. A process that dies before that
 *  store changed nothing visible; one that dies after it completed its
 *  operation. `count` is derived data: the process that inherits a dead
 *  owner's lock (EOWNERDEAD) recounts the messages between head and tail.
 *
 *  Memory: the counters only grow, so a ring touches every page of its
 *  capacity after one lap, and keeps them. A large ring (TRIM_MIN and up,
 *  sized for a few messages of the largest size, as a pool's rings are for
 *  max_message) gives back, every TRIM_STEP bytes consumed, the whole pages
 *  that lie more than TRIM_KEEP bytes behind the head (MADV_REMOVE, under
 *  the lock, outside [head, tail)); the next lap faults them in again as
 *  zero pages. Its resident size then follows the data in flight, not the
 *  largest message it could take.
 *
 *  Waiting: getters sleep on the `put_seq` futex, putters on `get_seq`; a
 *  commit bumps the word and wakes every sleeper only when one is
 *  registered (see s_wait). Waking all rather than one means that a woken
 *  process killed before it acts cannot strand the others. Before sleeping,
 *  a waiter spins briefly on the counter it waits for: on two cores a
 *  producer and a consumer then hand messages over without a system call.
 */
#include "dist/queue.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dist/error.h"
#include "futex_internal.h"
#include "queue_internal.h"
#include "sync_internal.h"
#include "util_internal.h"

#define HDR 4
#define MIN_CAPACITY 64
#define MAX_CAPACITY ((size_t)1 << 40)
#define SPIN_ROUNDS 2000
#define TRIM_MIN ((uint64_t)32 << 20)
#define TRIM_STEP ((uint64_t)4 << 20)
#define TRIM_KEEP ((uint64_t)4 << 20)

/* head and tail sit on cache lines of their own: a waiter spins reading
 * one of them and should not steal the lock's line from the process that
 * is about to commit. */
struct shared {
    pthread_mutex_t lock;
    uint64_t cap;
    uint64_t maxsize;
    _Atomic uint64_t count; /* messages between head and tail */
    _Alignas(64) _Atomic uint64_t head; /* bytes consumed so far */
    _Alignas(64) _Atomic uint64_t tail; /* bytes produced so far */
    _Alignas(64) char seq_line;
    _Atomic uint32_t put_seq, get_seq;
    _Atomic uint32_t getters_waiting, putters_waiting;
    _Atomic uint32_t closed;
    _Atomic uint32_t recoveries; /* times a dead owner's lock was repaired */
    uint64_t trimmed; /* byte counter up to which pages were given back (lock) */
    unsigned char ring[];
};

struct dist_queue {
    struct shared *sh;
    size_t map_len;
};

/* Copy in and out of the ring at a byte counter, wrapping. */
static void s_ring_write(struct shared *sh, uint64_t pos, const void *src, size_t n)
{
    size_t off = (size_t)(pos % sh->cap);
    size_t first = sh->cap - off < n ? sh->cap - off : n;
    memcpy(sh->ring + off, src, first);
    memcpy(sh->ring, (const unsigned char *)src + first, n - first);
}

static void s_ring_read(const struct shared *sh, uint64_t pos, void *dst, size_t n)
{
    size_t off = (size_t)(pos % sh->cap);
    size_t first = sh->cap - off < n ? sh->cap - off : n;
    memcpy(dst, sh->ring + off, first);
    memcpy((unsigned char *)dst + first, sh->ring, n - first);
}

static uint32_t s_len_at(const struct shared *sh, uint64_t pos)
{
    unsigned char h[HDR];
    s_ring_read(sh, pos, h, HDR);
    return (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
}

/* Gives back the pages of ring offsets [from, to) (to - from <= cap), whole
 * pages only. */
static void s_release(struct shared *sh, uint64_t from, uint64_t to)
{
    static uintptr_t page;
    if (!page)
        page = (uintptr_t)sysconf(_SC_PAGESIZE);
    while (from < to) {
        size_t off = (size_t)(from % sh->cap);
        size_t n = sh->cap - off < to - from ? sh->cap - off : (size_t)(to - from);
        uintptr_t a = (uintptr_t)(sh->ring + off), b = a + n;
        a = (a + page - 1) & ~(page - 1);
        b &= ~(page - 1);
        if (b > a)
            (void)madvise((void *)a, b - a, MADV_REMOVE);
        from += n;
    }
}

/* With the lock held, after a get: see "Memory" above. */
static void s_trim(struct shared *sh, uint64_t head)
{
    if (sh->cap < TRIM_MIN || head - sh->trimmed < TRIM_STEP + TRIM_KEEP)
        return;
    uint64_t to = head - TRIM_KEEP;
    uint64_t tail = atomic_load_explicit(&sh->tail, memory_order_relaxed);
    /* Never a byte of [head, tail): a counter below tail - cap shares its
     * ring offset with one of them (or one past the tail), so the range
     * starts there at the earliest; it is then at most one lap long. */
    uint64_t lap = tail > sh->cap ? tail - sh->cap : 0;
    uint64_t from = sh->trimmed > lap ? sh->trimmed : lap;
    if (from < to)
        s_release(sh, from, to);
    sh->trimmed = to;
}

/* Called with the lock inherited from a dead owner: recount messages, and
 * cut the ring back to the last whole message should a record be bad. */
static void s_recover(struct shared *sh)
{
    uint64_t pos = atomic_load(&sh->head), tail = atomic_load(&sh->tail), n = 0;
    while (tail - pos >= HDR) {
        uint64_t need = HDR + (uint64_t)s_len_at(sh, pos);
        if (need > tail - pos)
            break;
        pos += need;
        n++;
    }
    atomic_store(&sh->tail, pos);
    atomic_store(&sh->count, n);
    atomic_fetch_add(&sh->recoveries, 1);
}

/* Locks the queue (spinning a little first: see dist__mutex_lock), and
 * repairs it when the previous owner died inside put or get. */
static int s_lock(struct shared *sh)
{
    int r = dist__mutex_lock(&sh->lock, INT64_MAX);
    if (r == -EOWNERDEAD) {
        s_recover(sh);
        pthread_mutex_consistent(&sh->lock);
        return 0;
    }
    return r;
}

static void s_unlock(struct shared *sh) { pthread_mutex_unlock(&sh->lock); }

dist_queue_t *dist_queue_new(size_t maxsize, size_t capacity)
{
    if (capacity == 0)
        capacity = DIST_QUEUE_DEFAULT_CAPACITY;
    if (capacity < MIN_CAPACITY || capacity > MAX_CAPACITY) {
        errno = EINVAL;
        return NULL;
    }
    dist_queue_t *self = malloc(sizeof *self);
    if (!self)
        return NULL;
    self->map_len = sizeof(struct shared) + capacity;
    void *mem = mmap(NULL, self->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        int e = errno;
        free(self);
        errno = e;
        return NULL;
    }
    struct shared *sh = mem; /* zero-filled by mmap */
    int r = dist__mutex_init(&sh->lock, PTHREAD_MUTEX_NORMAL);
    if (r) {
        munmap(mem, self->map_len);
        free(self);
        errno = -r;
        return NULL;
    }
    sh->cap = capacity;
    sh->maxsize = maxsize;
    self->sh = sh;
    return self;
}

size_t dist__queue_resident(dist_queue_t *self)
{
    static size_t page;
    if (!page)
        page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (self->map_len + page - 1) / page, n = 0;
    unsigned char *vec = malloc(pages);
    if (!vec)
        return 0;
    if (mincore(self->sh, self->map_len, vec) == 0)
        for (size_t i = 0; i < pages; i++)
            n += vec[i] & 1;
    free(vec);
    return n * page;
}

void dist_queue_destroy(dist_queue_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    /* No pthread_mutex_destroy: other processes may still use the queue;
     * the memory goes away with the last mapping. */
    munmap((*self_p)->sh, (*self_p)->map_len);
    free(*self_p);
    *self_p = NULL;
}

/* Spins a little while the counter `pos` (tail for a getter, head for a
 * putter) stays at `seen`, with the lock released; true if it moved. */
static bool s_spin_for_change(_Atomic uint64_t *pos, uint64_t seen)
{
    for (int i = 1; i <= SPIN_ROUNDS; i++) {
        if (atomic_load_explicit(pos, memory_order_relaxed) != seen)
            return true;
        dist__cpu_relax();
        /* The process we wait for may share our CPU: let it run. */
        if (i % 256 == 0)
            sched_yield();
    }
    return false;
}

/* Called with the lock held and the condition false: waits until the other
 * side commits, the deadline passes or the queue is closed. Returns with
 * the lock held again: 0, or a lock error.
 *
 * The sleeper registers in `waiters` under the lock and samples the futex
 * word under the lock; a committer reads `waiters` under the lock and only
 * then bumps the word. So either the committer sees the sleeper and bumps
 * (the futex wait returns at once or is woken), or the sleeper sampled the
 * state after the commit and does not sleep at all. Committers pay for the
 * word and the wake-up only when somebody sleeps. */
static int s_wait(struct shared *sh, _Atomic uint64_t *pos, _Atomic uint32_t *word,
                  _Atomic uint32_t *waiters, int64_t deadline)
{
    uint64_t seen_pos = atomic_load_explicit(pos, memory_order_relaxed);
    s_unlock(sh);
    if (s_spin_for_change(pos, seen_pos))
        return s_lock(sh);
    int r = s_lock(sh);
    if (r)
        return r;
    if (atomic_load_explicit(pos, memory_order_relaxed) != seen_pos || atomic_load(&sh->closed))
        return 0;
    atomic_fetch_add(waiters, 1);
    uint32_t seen = atomic_load(word);
    s_unlock(sh);
    dist__futex_wait(word, seen, deadline);
    r = s_lock(sh);
    atomic_fetch_sub(waiters, 1);
    return r;
}

/* With the lock held, after a commit: if somebody sleeps on `word`, bump it
 * and return true so that the caller wakes them once it has unlocked. */
static bool s_must_wake(_Atomic uint32_t *word, _Atomic uint32_t *waiters)
{
    if (!atomic_load_explicit(waiters, memory_order_relaxed))
        return false;
    atomic_fetch_add(word, 1);
    return true;
}

int dist_queue_put(dist_queue_t *self, const void *buf, size_t len, bool block, int timeout_ms)
{
    if (!self || (len && !buf))
        return DIST_EINVAL;
    struct shared *sh = self->sh;
    if (len > UINT32_MAX || len + HDR > sh->cap)
        return DIST_EMSGSIZE;
    int64_t deadline = block ? dist__deadline(timeout_ms) : 0;
    uint64_t need = HDR + len;
    int r = s_lock(sh);
    if (r)
        return r;
    for (;;) {
        if (atomic_load(&sh->closed)) {
            s_unlock(sh);
            return DIST_ECLOSED;
        }
        uint64_t tail = atomic_load_explicit(&sh->tail, memory_order_relaxed);
        uint64_t used = tail - atomic_load_explicit(&sh->head, memory_order_relaxed);
        bool room = used + need <= sh->cap &&
                    (sh->maxsize == 0 || atomic_load(&sh->count) < sh->maxsize);
        if (room) {
            unsigned char h[HDR] = { (unsigned char)len, (unsigned char)(len >> 8),
                                     (unsigned char)(len >> 16), (unsigned char)(len >> 24) };
            s_ring_write(sh, tail, h, HDR);
            s_ring_write(sh, tail + HDR, buf, len);
            atomic_store_explicit(&sh->tail, tail + need, memory_order_release); /* commit */
            atomic_store_explicit(&sh->count, atomic_load_explicit(&sh->count, memory_order_relaxed) + 1,
                                  memory_order_relaxed);
            bool wake = s_must_wake(&sh->put_seq, &sh->getters_waiting);
            s_unlock(sh);
            if (wake)
                dist__futex_wake(&sh->put_seq, INT_MAX);
            return 0;
        }
        if (!block) {
            s_unlock(sh);
            return DIST_EFULL;
        }
        if (dist__left_ns(deadline) == 0) {
            s_unlock(sh);
            return DIST_ETIMEDOUT;
        }
        if ((r = s_wait(sh, &sh->head, &sh->get_seq, &sh->putters_waiting, deadline)))
            return r;
    }
}

/* The common part of get and get_into: when `into` is NULL, allocate. */
static int s_get(dist_queue_t *self, void **out, void *into, size_t cap, size_t *len, bool block,
                 int timeout_ms)
{
    if (!self || !len || (!out && !into && cap))
        return DIST_EINVAL;
    struct shared *sh = self->sh;
    int64_t deadline = block ? dist__deadline(timeout_ms) : 0;
    int r = s_lock(sh);
    if (r)
        return r;
    for (;;) {
        uint64_t head = atomic_load_explicit(&sh->head, memory_order_relaxed);
        if (atomic_load_explicit(&sh->tail, memory_order_relaxed) != head) {
            size_t n = s_len_at(sh, head);
            void *dst = into;
            if (!into) {
                dst = malloc(n ? n : 1);
                if (!dst) {
                    s_unlock(sh);
                    return DIST_ENOMEM;
                }
            } else if (n > cap) {
                s_unlock(sh);
                *len = n;
                return DIST_EMSGSIZE;
            }
            s_ring_read(sh, head + HDR, dst, n);
            atomic_store_explicit(&sh->head, head + HDR + n, memory_order_release); /* commit */
            atomic_store_explicit(&sh->count, atomic_load_explicit(&sh->count, memory_order_relaxed) - 1,
                                  memory_order_relaxed);
            s_trim(sh, head + HDR + n);
            bool wake = s_must_wake(&sh->get_seq, &sh->putters_waiting);
            s_unlock(sh);
            if (wake)
                dist__futex_wake(&sh->get_seq, INT_MAX);
            if (out)
                *out = dst;
            *len = n;
            return 0;
        }
        if (atomic_load(&sh->closed)) {
            s_unlock(sh);
            return DIST_ECLOSED;
        }
        if (!block) {
            s_unlock(sh);
            return DIST_EEMPTY;
        }
        if (dist__left_ns(deadline) == 0) {
            s_unlock(sh);
            return DIST_ETIMEDOUT;
        }
        if ((r = s_wait(sh, &sh->tail, &sh->put_seq, &sh->getters_waiting, deadline)))
            return r;
    }
}

int dist_queue_get(dist_queue_t *self, void **buf, size_t *len, bool block, int timeout_ms)
{
    if (!buf)
        return DIST_EINVAL;
    *buf = NULL;
    return s_get(self, buf, NULL, 0, len, block, timeout_ms);
}

int dist_queue_get_into(dist_queue_t *self, void *buf, size_t cap, size_t *len, bool block,
                        int timeout_ms)
{
    if (!buf && cap)
        return DIST_EINVAL;
    /* A NULL buffer of capacity 0 still receives empty messages. */
    static unsigned char s_none;
    return s_get(self, NULL, buf ? buf : &s_none, cap, len, block, timeout_ms);
}

int dist_queue_put_nowait(dist_queue_t *self, const void *buf, size_t len)
{
    return dist_queue_put(self, buf, len, false, 0);
}

int dist_queue_get_nowait(dist_queue_t *self, void **buf, size_t *len)
{
    return dist_queue_get(self, buf, len, false, 0);
}

size_t dist_queue_qsize(dist_queue_t *self) { return (size_t)atomic_load(&self->sh->count); }
bool dist_queue_empty(dist_queue_t *self) { return dist_queue_qsize(self) == 0; }
size_t dist_queue_capacity(const dist_queue_t *self) { return (size_t)self->sh->cap; }

size_t dist_queue_bytes(dist_queue_t *self)
{
    return (size_t)(atomic_load(&self->sh->tail) - atomic_load(&self->sh->head));
}

bool dist_queue_full(dist_queue_t *self)
{
    struct shared *sh = self->sh;
    if (sh->maxsize && atomic_load(&sh->count) >= sh->maxsize)
        return true;
    return dist_queue_bytes(self) + HDR > sh->cap;
}

int dist_queue_close(dist_queue_t *self)
{
    struct shared *sh = self->sh;
    int r = s_lock(sh);
    if (r)
        return r;
    atomic_store(&sh->closed, 1);
    /* Bump both words under the lock, like a commit, and wake everybody. */
    atomic_fetch_add(&sh->put_seq, 1);
    atomic_fetch_add(&sh->get_seq, 1);
    s_unlock(sh);
    dist__futex_wake(&sh->put_seq, INT_MAX);
    dist__futex_wake(&sh->get_seq, INT_MAX);
    return 0;
}

bool dist_queue_closed(dist_queue_t *self) { return atomic_load(&self->sh->closed) != 0; }

unsigned dist__queue_recoveries(dist_queue_t *self) { return atomic_load(&self->sh->recoveries); }

/* test_sync.c - dist/sync.h: Lock, RLock, Semaphore, BoundedSemaphore,
 * Event, Condition and Barrier across processes; 4 processes counting to
 * 4,000,000 under a Lock; a lock holder killed with SIGKILL; timeouts
 * within their bounds. Children report through their exit status (cmocka
 * asserts only run in the test process). */
#include <dist.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

/* ---- Lock --------------------------------------------------------------- */

static void test_lock_basics_and_bad_use(void **state)
{
    (void)state;
    dist_lock_t *l = dist_lock_new();
    assert_non_null(l);
    assert_int_equal(dist_lock_release(l), DIST_ESTATE); /* not held */
    assert_int_equal(dist_lock_acquire(l, DIST_FOREVER), 0);
    assert_int_equal(dist_lock_acquire(l, 1000), DIST_EDEADLK); /* at once, not after 1 s */
    assert_int_equal(dist_lock_release(l), 0);
    assert_int_equal(dist_lock_release(l), DIST_ESTATE);
    assert_int_equal(dist_lock_acquire(l, 0), 0);
    assert_int_equal(dist_lock_release(l), 0);
    assert_int_equal(dist_lock_acquire(NULL, 0), DIST_EINVAL);
    assert_int_equal(dist_lock_release(NULL), DIST_EINVAL);
    /* Destroying a held lock releases it first (no crash, nothing left). */
    assert_int_equal(dist_lock_acquire(l, 0), 0);
    dist_lock_destroy(&l);
    assert_null(l);
    dist_lock_destroy(&l);
    dist_lock_destroy(NULL);
}

static int s_try_release_other(void *arg)
{
    /* The parent holds the lock: we may neither take nor release it. */
    dist_lock_t *l = arg;
    if (dist_lock_release(l) != DIST_ESTATE)
        return 1;
    return dist_lock_acquire(l, 0) == DIST_ETIMEDOUT ? 0 : 2;
}

static void test_lock_timeout_and_foreign_release(void **state)
{
    (void)state;
    dist_lock_t *l = dist_lock_new();
    assert_int_equal(dist_lock_acquire(l, DIST_FOREVER), 0);
    dt_join_ok(dt_fork(s_try_release_other, l));
    assert_int_equal(dist_lock_acquire(l, 0), DIST_EDEADLK);
    assert_int_equal(dist_lock_release(l), 0);
    dist_lock_destroy(&l);

    /* A timed acquire against a holder in another process. */
    l = dist_lock_new();
    dist_event_t *held = dist_event_new();
    pid_t pid = fork();
    if (pid == 0) {
        dt_child_init();
        dist_lock_acquire(l, DIST_FOREVER);
        dist_event_set(held);
        pause();
        _exit(0);
    }
    assert_int_equal(dist_event_wait(held, 10000), 0);
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_lock_acquire(l, 300), DIST_ETIMEDOUT);
    dt_assert_took(t0, 300);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    dist_event_destroy(&held);
    dist_lock_destroy(&l);
}

static void *s_thread_release(void *arg)
{
    return (void *)(intptr_t)dist_lock_release(arg);
}

static void test_lock_release_by_other_thread(void **state)
{
    (void)state;
    dist_lock_t *l = dist_lock_new();
    assert_int_equal(dist_lock_acquire(l, 0), 0);
    pthread_t t;
    void *res;
    assert_int_equal(pthread_create(&t, NULL, s_thread_release, l), 0);
    pthread_join(t, &res);
    assert_int_equal((int)(intptr_t)res, DIST_ESTATE);
    assert_int_equal(dist_lock_release(l), 0);
    dist_lock_destroy(&l);
}

/* 4 processes each add 1 to a plain (non-atomic) shared integer 1,000,000
 * times under the Value's Lock: any lost update shows in the total. */
#define COUNT_PROCS 4
#define COUNT_EACH 1000000

static int s_count(void *arg)
{
    dist_value_t *v = arg;
    dist_lock_t *l = dist_value_lock(v);
    int64_t *p = dist_value_ptr(v);
    for (int i = 0; i < COUNT_EACH; i++) {
        if (dist_lock_acquire(l, DIST_FOREVER))
            return 1;
        int64_t x = *(volatile int64_t *)p;
        *(volatile int64_t *)p = x + 1;
        if (dist_lock_release(l))
            return 2;
    }
    return 0;
}

static void test_four_processes_count_to_four_million(void **state)
{
    (void)state;
    dist_value_t *v = dist_value_new(DIST_CTYPE_INT64, true);
    assert_non_null(v);
    pid_t pids[COUNT_PROCS];
    for (int i = 0; i < COUNT_PROCS; i++)
        pids[i] = dt_fork(s_count, v);
    for (int i = 0; i < COUNT_PROCS; i++)
        dt_join_ok(pids[i]);
    assert_int_equal(dist_value_get_int(v), (int64_t)COUNT_PROCS * COUNT_EACH);
    dist_value_destroy(&v);
}

struct holder {
    dist_lock_t *lock;
    dist_event_t *held;
};

static int s_hold_forever(void *arg)
{
    struct holder *h = arg;
    if (dist_lock_acquire(h->lock, DIST_FOREVER))
        return 1;
    dist_event_set(h->held);
    for (;;)
        pause();
}

static int s_acquire_release(void *arg)
{
    dist_lock_t *l = arg;
    int r = dist_lock_acquire(l, 10000);
    return r == 0 && dist_lock_release(l) == 0 ? 0 : 1;
}

static void test_lock_holder_killed(void **state)
{
    (void)state;
    struct holder h = { dist_lock_new(), dist_event_new() };
    pid_t pid = dt_fork(s_hold_forever, &h);
    assert_int_equal(dist_event_wait(h.held, 10000), 0);
    /* While the holder lives, the lock is taken. */
    assert_int_equal(dist_lock_acquire(h.lock, 50), DIST_ETIMEDOUT);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    assert_int_equal(dist_lock_acquire(h.lock, 5000), DIST_EOWNERDEAD);
    assert_int_equal(dist_lock_release(h.lock), 0);
    /* The lock works normally afterwards, here and in another process. */
    assert_int_equal(dist_lock_acquire(h.lock, 0), 0);
    assert_int_equal(dist_lock_release(h.lock), 0);
    dt_join_ok(dt_fork(s_acquire_release, h.lock));
    dist_event_destroy(&h.held);
    dist_lock_destroy(&h.lock);
}

/* A waiter blocked in acquire (not the holder) is killed: nothing breaks. */
static void test_lock_waiter_killed(void **state)
{
    (void)state;
    dist_lock_t *l = dist_lock_new();
    assert_int_equal(dist_lock_acquire(l, 0), 0);
    pid_t pid = dt_fork(s_acquire_release, l);
    dt_sleep_ms(50);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    assert_int_equal(dist_lock_release(l), 0);
    dt_join_ok(dt_fork(s_acquire_release, l));
    assert_int_equal(dist_lock_acquire(l, 0), 0); /* not EOWNERDEAD */
    assert_int_equal(dist_lock_release(l), 0);
    dist_lock_destroy(&l);
}

/* ---- RLock -------------------------------------------------------------- */

static int s_rlock_try(void *arg)
{
    return dist_rlock_acquire(arg, 0) == DIST_ETIMEDOUT && dist_rlock_release(arg) == DIST_ESTATE
               ? 0
               : 1;
}

static int s_rlock_hold_forever(void *arg)
{
    dist_rlock_t *l = arg;
    dist_rlock_acquire(l, DIST_FOREVER);
    dist_rlock_acquire(l, DIST_FOREVER);
    while (pause() < 0) /* until SIGKILL */
        ;
    return 0;
}

static void test_rlock(void **state)
{
    (void)state;
    dist_rlock_t *l = dist_rlock_new();
    assert_non_null(l);
    assert_int_equal(dist_rlock_release(l), DIST_ESTATE);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dist_rlock_acquire(l, 0), 0);
    dt_join_ok(dt_fork(s_rlock_try, l));
    for (int i = 0; i < 3; i++)
        assert_int_equal(dist_rlock_release(l), 0);
    assert_int_equal(dist_rlock_release(l), DIST_ESTATE);

    /* A holder killed at depth 2: the next owner starts at depth 1. */
    pid_t pid = dt_fork(s_rlock_hold_forever, l);
    int64_t t0 = dt_now_ms();
    int r;
    while ((r = dist_rlock_acquire(l, 0)) == 0) { /* wait until it holds it */
        dist_rlock_release(l);
        assert_true(dt_now_ms() - t0 < 10000);
        dt_sleep_ms(1);
    }
    assert_int_equal(r, DIST_ETIMEDOUT);
    t0 = dt_now_ms();
    assert_int_equal(dist_rlock_acquire(l, 200), DIST_ETIMEDOUT);
    dt_assert_took(t0, 200);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    assert_int_equal(dist_rlock_acquire(l, 5000), DIST_EOWNERDEAD);
    assert_int_equal(dist_rlock_release(l), 0);
    assert_int_equal(dist_rlock_release(l), DIST_ESTATE);
    assert_int_equal(dist_rlock_acquire(l, 0), 0);
    dist_rlock_destroy(&l); /* held: released first */
    assert_null(l);
}

/* ---- Semaphore ---------------------------------------------------------- */

static void test_semaphore_and_bounded(void **state)
{
    (void)state;
    dist_sem_t *s = dist_sem_new(2);
    assert_int_equal(dist_sem_value(s), 2);
    assert_int_equal(dist_sem_acquire(s, 0), 0);
    assert_int_equal(dist_sem_acquire(s, 0), 0);
    assert_int_equal(dist_sem_acquire(s, 0), DIST_ETIMEDOUT);
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_sem_acquire(s, 150), DIST_ETIMEDOUT);
    dt_assert_took(t0, 150);
    for (int i = 0; i < 5; i++) /* an unbounded one goes above its start */
        assert_int_equal(dist_sem_release(s), 0);
    assert_int_equal(dist_sem_value(s), 5);
    dist_sem_destroy(&s);
    assert_null(s);

    s = dist_sem_new_bounded(1);
    assert_int_equal(dist_sem_release(s), DIST_ESTATE); /* released too many times */
    assert_int_equal(dist_sem_acquire(s, 0), 0);
    assert_int_equal(dist_sem_release(s), 0);
    assert_int_equal(dist_sem_release(s), DIST_ESTATE);
    assert_int_equal(dist_sem_value(s), 1);
    dist_sem_destroy(&s);

    errno = 0;
    assert_null(dist_sem_new(0x80000000u));
    assert_int_equal(errno, EINVAL);
}

struct sem_args {
    dist_sem_t *sem;
    dist_value_t *done;
};

static int s_sem_taker(void *arg)
{
    struct sem_args *a = arg;
    if (dist_sem_acquire(a->sem, 10000))
        return 1;
    dist_value_add(a->done, 1);
    return 0;
}

/* 4 processes block on a semaphore at 0; each release lets exactly one
 * through. */
static void test_semaphore_across_processes(void **state)
{
    (void)state;
    struct sem_args a = { dist_sem_new(0), dist_value_new(DIST_CTYPE_INT32, false) };
    pid_t pids[4];
    for (int i = 0; i < 4; i++)
        pids[i] = dt_fork(s_sem_taker, &a);
    dt_sleep_ms(100);
    assert_int_equal(dist_value_get_int(a.done), 0);
    for (int k = 1; k <= 4; k++) {
        assert_int_equal(dist_sem_release(a.sem), 0);
        int64_t t0 = dt_now_ms();
        while (dist_value_get_int(a.done) < k && dt_now_ms() - t0 < 10000)
            dt_sleep_ms(1);
        dt_sleep_ms(20); /* nobody else slips through */
        assert_int_equal(dist_value_get_int(a.done), k);
    }
    for (int i = 0; i < 4; i++)
        dt_join_ok(pids[i]);
    assert_int_equal(dist_sem_value(a.sem), 0);
    dist_sem_destroy(&a.sem);
    dist_value_destroy(&a.done);
}

/* ---- Event -------------------------------------------------------------- */

struct event_args {
    dist_event_t *ev;
    dist_sem_t *ready;
};

static int s_event_waiter(void *arg)
{
    struct event_args *a = arg;
    dist_sem_release(a->ready);
    return dist_event_wait(a->ev, 10000) == 0 ? 0 : 1;
}

static void test_event(void **state)
{
    (void)state;
    struct event_args a = { dist_event_new(), dist_sem_new(0) };
    assert_false(dist_event_is_set(a.ev));
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_event_wait(a.ev, 200), DIST_ETIMEDOUT);
    dt_assert_took(t0, 200);
    assert_int_equal(dist_event_wait(a.ev, 0), DIST_ETIMEDOUT);

    /* Three waiters, one set wakes them all. */
    pid_t pids[3];
    for (int i = 0; i < 3; i++)
        pids[i] = dt_fork(s_event_waiter, &a);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dist_sem_acquire(a.ready, 10000), 0);
    dt_sleep_ms(50);
    dist_event_set(a.ev);
    assert_true(dist_event_is_set(a.ev));
    for (int i = 0; i < 3; i++)
        dt_join_ok(pids[i]);
    assert_int_equal(dist_event_wait(a.ev, 0), 0);
    dist_event_set(a.ev); /* idempotent */
    dist_event_clear(a.ev);
    assert_false(dist_event_is_set(a.ev));

    /* set then clear at once: a waiter asleep at that moment still returns
     * 0, as in Python. */
    pid_t pid = dt_fork(s_event_waiter, &a);
    assert_int_equal(dist_sem_acquire(a.ready, 10000), 0);
    dt_sleep_ms(200);
    dist_event_set(a.ev);
    dist_event_clear(a.ev);
    dt_join_ok(pid);
    dist_event_destroy(&a.ev);
    dist_sem_destroy(&a.ready);
}

/* ---- Condition ---------------------------------------------------------- */

struct cond_args {
    dist_cond_t *cond;
    dist_value_t *items; /* guarded by the condition's lock */
    dist_value_t *woken;
};

static bool s_has_item(void *arg)
{
    struct cond_args *a = arg;
    return *(int64_t *)dist_value_ptr(a->items) > 0;
}

/* Consumer: waits for an item, takes it. */
static int s_consumer(void *arg)
{
    struct cond_args *a = arg;
    dist_lock_t *l = dist_cond_lock(a->cond);
    if (dist_lock_acquire(l, 10000))
        return 1;
    int r = dist_cond_wait_for(a->cond, s_has_item, a, 10000);
    if (r == 0)
        (*(int64_t *)dist_value_ptr(a->items))--;
    dist_value_add(a->woken, 1);
    if (dist_lock_release(l))
        return 3;
    return r == 0 ? 0 : 2;
}

static void test_condition_producer_consumers(void **state)
{
    (void)state;
    struct cond_args a = { dist_cond_new(NULL), dist_value_new(DIST_CTYPE_INT64, false),
                           dist_value_new(DIST_CTYPE_INT64, false) };
    assert_non_null(a.cond);
    dist_lock_t *l = dist_cond_lock(a.cond);
    pid_t pids[3];
    for (int i = 0; i < 3; i++)
        pids[i] = dt_fork(s_consumer, &a);
    dt_sleep_ms(100);
    /* One item and notify(1): one consumer takes it. */
    assert_int_equal(dist_lock_acquire(l, 5000), 0);
    (*(int64_t *)dist_value_ptr(a.items))++;
    assert_int_equal(dist_cond_notify(a.cond, 1), 0);
    assert_int_equal(dist_lock_release(l), 0);
    int64_t t0 = dt_now_ms();
    while (dist_value_get_int(a.woken) < 1 && dt_now_ms() - t0 < 10000)
        dt_sleep_ms(1);
    assert_int_equal(dist_value_get_int(a.woken), 1);
    /* Two more and notify_all: the other two take them. */
    assert_int_equal(dist_lock_acquire(l, 5000), 0);
    *(int64_t *)dist_value_ptr(a.items) += 2;
    assert_int_equal(dist_cond_notify_all(a.cond), 0);
    assert_int_equal(dist_lock_release(l), 0);
    for (int i = 0; i < 3; i++)
        dt_join_ok(pids[i]);
    assert_int_equal(dist_value_get_int(a.items), 0);
    dist_cond_destroy(&a.cond);
    assert_null(a.cond);
    dist_value_destroy(&a.items);
    dist_value_destroy(&a.woken);
}

static bool s_never(void *arg)
{
    (void)arg;
    return false;
}

static void test_condition_timeouts_and_bad_use(void **state)
{
    (void)state;
    dist_lock_t *l = dist_lock_new();
    dist_cond_t *c = dist_cond_new(l); /* bound to a lock of ours */
    assert_ptr_equal(dist_cond_lock(c), l);
    assert_int_equal(dist_cond_wait(c, 100), DIST_ESTATE); /* lock not held */
    assert_int_equal(dist_cond_notify(c, 1), DIST_ESTATE);
    assert_int_equal(dist_cond_notify_all(c), DIST_ESTATE);
    assert_int_equal(dist_lock_acquire(l, 0), 0); /* the checks left it free */
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_cond_wait(c, 200), DIST_ETIMEDOUT);
    dt_assert_took(t0, 200);
    t0 = dt_now_ms();
    assert_int_equal(dist_cond_wait_for(c, s_never, NULL, 200), DIST_ETIMEDOUT);
    dt_assert_took(t0, 200);
    assert_int_equal(dist_cond_notify(c, 1), 0); /* nobody waits: fine */
    assert_int_equal(dist_lock_release(l), 0);  /* held again after the waits */
    assert_int_equal(dist_lock_release(l), DIST_ESTATE);
    dist_cond_destroy(&c);
    dist_lock_destroy(&l); /* the borrowed lock outlives the condition */
}

/* ---- Barrier ------------------------------------------------------------ */

#define B_PARTIES 4
#define B_ROUNDS 200

struct barrier_args {
    dist_barrier_t *b;
    dist_array_t *arrived; /* int32 per round: parties past the start of it */
    dist_array_t *seen;    /* uint8 [round][index]: index handed out */
};

static int s_barrier_party(void *arg)
{
    struct barrier_args *a = arg;
    int32_t *arrived = dist_array_int32(a->arrived);
    uint8_t *seen = dist_array_uint8(a->seen);
    for (int round = 0; round < B_ROUNDS; round++) {
        __atomic_add_fetch(&arrived[round], 1, __ATOMIC_SEQ_CST);
        int idx = dist_barrier_wait(a->b, 20000);
        if (idx < 0 || idx >= B_PARTIES)
            return 1;
        /* Nobody leaves a round before everybody has entered it. */
        if (__atomic_load_n(&arrived[round], __ATOMIC_SEQ_CST) != B_PARTIES)
            return 2;
        if (__atomic_exchange_n(&seen[round * B_PARTIES + idx], 1, __ATOMIC_SEQ_CST))
            return 3; /* index handed out twice */
    }
    return 0;
}

static void test_barrier_four_processes(void **state)
{
    (void)state;
    struct barrier_args a = { dist_barrier_new(B_PARTIES),
                              dist_array_new(DIST_CTYPE_INT32, B_ROUNDS, NULL, false),
                              dist_array_new(DIST_CTYPE_UINT8, B_ROUNDS * B_PARTIES, NULL, false) };
    assert_int_equal(dist_barrier_parties(a.b), B_PARTIES);
    pid_t pids[B_PARTIES];
    for (int i = 0; i < B_PARTIES; i++)
        pids[i] = dt_fork(s_barrier_party, &a);
    for (int i = 0; i < B_PARTIES; i++)
        dt_join_ok(pids[i]);
    uint8_t *seen = dist_array_uint8(a.seen);
    for (int i = 0; i < B_ROUNDS * B_PARTIES; i++)
        assert_int_equal(seen[i], 1);
    assert_false(dist_barrier_broken(a.b));
    assert_int_equal(dist_barrier_n_waiting(a.b), 0);
    dist_barrier_destroy(&a.b);
    dist_array_destroy(&a.arrived);
    dist_array_destroy(&a.seen);
}

static int s_barrier_expect_broken(void *arg)
{
    return dist_barrier_wait(arg, 20000) == DIST_EBROKEN ? 0 : 1;
}

static void s_wait_n_waiting(dist_barrier_t *b, unsigned n)
{
    int64_t t0 = dt_now_ms();
    while (dist_barrier_n_waiting(b) != n && dt_now_ms() - t0 < 10000)
        dt_sleep_ms(1);
    assert_int_equal(dist_barrier_n_waiting(b), n);
}

static void test_barrier_timeout_abort_reset(void **state)
{
    (void)state;
    dist_barrier_t *b = dist_barrier_new(3);
    /* A timeout breaks the barrier: the waiter that timed out says so, the
     * other one is sent away broken. */
    pid_t pid = dt_fork(s_barrier_expect_broken, b);
    s_wait_n_waiting(b, 1);
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_barrier_wait(b, 200), DIST_ETIMEDOUT);
    dt_assert_took(t0, 200);
    dt_join_ok(pid);
    assert_true(dist_barrier_broken(b));
    assert_int_equal(dist_barrier_n_waiting(b), 0);
    assert_int_equal(dist_barrier_wait(b, 1000), DIST_EBROKEN); /* at once */

    /* reset: usable again. */
    assert_int_equal(dist_barrier_reset(b), 0);
    assert_false(dist_barrier_broken(b));

    /* abort wakes waiters with DIST_EBROKEN. */
    pid_t p1 = dt_fork(s_barrier_expect_broken, b), p2 = dt_fork(s_barrier_expect_broken, b);
    s_wait_n_waiting(b, 2);
    assert_int_equal(dist_barrier_abort(b), 0);
    dt_join_ok(p1);
    dt_join_ok(p2);
    assert_int_equal(dist_barrier_reset(b), 0);

    /* reset while two wait: they get DIST_EBROKEN, the barrier is empty. */
    p1 = dt_fork(s_barrier_expect_broken, b);
    p2 = dt_fork(s_barrier_expect_broken, b);
    s_wait_n_waiting(b, 2);
    assert_int_equal(dist_barrier_reset(b), 0);
    dt_join_ok(p1);
    dt_join_ok(p2);
    assert_false(dist_barrier_broken(b));
    assert_int_equal(dist_barrier_n_waiting(b), 0);
    dist_barrier_destroy(&b);

    /* A barrier of one never waits; zero parties is refused. */
    b = dist_barrier_new(1);
    assert_int_equal(dist_barrier_wait(b, 0), 0);
    dist_barrier_destroy(&b);
    errno = 0;
    assert_null(dist_barrier_new(0));
    assert_int_equal(errno, EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lock_basics_and_bad_use, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_lock_timeout_and_foreign_release, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_lock_release_by_other_thread, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_four_processes_count_to_four_million, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_lock_holder_killed, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_lock_waiter_killed, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_rlock, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_semaphore_and_bounded, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_semaphore_across_processes, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_event, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_condition_producer_consumers, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_condition_timeouts_and_bad_use, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_barrier_four_processes, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_barrier_timeout_abort_reset, dt_setup, dt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_queue.c - dist/queue.h: FIFO semantics, bounds, timeouts, close,
 * 4x4 processes moving 1,000,000 messages, and processes SIGKILLed inside
 * get and put. */
#include <dist.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "queue_internal.h"
#include "testutil.h"

static void test_fifo_and_counts(void **state)
{
    (void)state;
    dist_queue_t *q = dist_queue_new(0, 4096);
    assert_non_null(q);
    assert_true(dist_queue_empty(q));
    assert_int_equal(dist_queue_capacity(q), 4096);
    for (int i = 0; i < 10; i++)
        assert_int_equal(dist_queue_put(q, &i, sizeof i, true, DIST_FOREVER), 0);
    assert_int_equal(dist_queue_qsize(q), 10);
    assert_int_equal(dist_queue_bytes(q), 10 * (sizeof(int) + DIST_QUEUE_MSG_OVERHEAD));
    for (int i = 0; i < 10; i++) {
        void *m;
        size_t n;
        assert_int_equal(dist_queue_get(q, &m, &n, true, DIST_FOREVER), 0);
        assert_int_equal(n, sizeof(int));
        assert_int_equal(*(int *)m, i);
        free(m);
    }
    assert_true(dist_queue_empty(q));
    dist_queue_destroy(&q);
    assert_null(q);
}

static void test_wraparound_keeps_bytes(void **state)
{
    (void)state;
    dist_queue_t *q = dist_queue_new(0, 100); /* odd size: records straddle the end */
    unsigned char buf[64], out[64];
    for (int round = 0; round < 1000; round++) {
        size_t len = (size_t)(round * 7) % 60;
        for (size_t i = 0; i < len; i++)
            buf[i] = (unsigned char)(round + i);
        assert_int_equal(dist_queue_put_nowait(q, buf, len), 0);
        size_t n;
        assert_int_equal(dist_queue_get_into(q, out, sizeof out, &n, false, 0), 0);
        assert_int_equal(n, len);
        assert_memory_equal(out, buf, len);
    }
    dist_queue_destroy(&q);
}

static void test_nowait_empty_full_and_maxsize(void **state)
{
    (void)state;
    dist_queue_t *q = dist_queue_new(3, 1024);
    void *m;
    size_t n;
    assert_int_equal(dist_queue_get_nowait(q, &m, &n), DIST_EEMPTY);
    assert_null(m);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dist_queue_put_nowait(q, "abc", 3), 0);
    assert_true(dist_queue_full(q));
    assert_int_equal(dist_queue_put_nowait(q, "abc", 3), DIST_EFULL);
    assert_int_equal(dist_queue_put(q, "abc", 3, false, 5000), DIST_EFULL);
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_queue_put(q, "abc", 3, true, 100), DIST_ETIMEDOUT);
    int64_t took = dt_now_ms() - t0;
    assert_true(took >= 95 && took < 2000);
    assert_int_equal(dist_queue_qsize(q), 3);
    dist_queue_destroy(&q);

    /* Byte bound without maxsize. */
    q = dist_queue_new(0, 64);
    char big[64] = { 0 };
    assert_int_equal(dist_queue_put_nowait(q, big, 40), 0);
    assert_int_equal(dist_queue_put_nowait(q, big, 40), DIST_EFULL);
    assert_int_equal(dist_queue_put_nowait(q, big, 61), DIST_EMSGSIZE); /* 61 + 4 > 64 */
    assert_int_equal(dist_queue_put_nowait(q, big, 60), DIST_EFULL);    /* fits when empty */
    assert_int_equal(dist_queue_get_nowait(q, &m, &n), 0);
    free(m);
    assert_int_equal(dist_queue_put_nowait(q, big, 60), 0);
    dist_queue_destroy(&q);
}

static void test_get_timeout_and_get_into_too_small(void **state)
{
    (void)state;
    dist_queue_t *q = dist_queue_new(0, 0);
    assert_int_equal(dist_queue_capacity(q), DIST_QUEUE_DEFAULT_CAPACITY);
    void *m;
    size_t n;
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_queue_get(q, &m, &n, true, 100), DIST_ETIMEDOUT);
    int64_t took = dt_now_ms() - t0;
    assert_true(took >= 95 && took < 2000);
    assert_int_equal(dist_queue_put_nowait(q, "0123456789", 10), 0);
    char small[4];
    assert_int_equal(dist_queue_get_into(q, small, sizeof small, &n, false, 0), DIST_EMSGSIZE);
    assert_int_equal(n, 10);
    assert_int_equal(dist_queue_qsize(q), 1); /* still there */
    assert_int_equal(dist_queue_get(q, &m, &n, false, 0), 0);
    assert_memory_equal(m, "0123456789", 10);
    free(m);
    dist_queue_destroy(&q);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    errno = 0;
    assert_null(dist_queue_new(0, 8));
    assert_int_equal(errno, EINVAL);
    dist_queue_t *q = dist_queue_new(0, 1024);
    assert_int_equal(dist_queue_put(q, NULL, 5, false, 0), DIST_EINVAL);
    assert_int_equal(dist_queue_get(q, NULL, NULL, false, 0), DIST_EINVAL);
    assert_int_equal(dist_queue_put(NULL, "x", 1, false, 0), DIST_EINVAL);
    dist_queue_destroy(&q);
    dist_queue_destroy(&q);
}

/* The classic producer/consumer across processes, with a 1 MiB message. */
static void test_big_message_between_processes(void **state)
{
    (void)state;
    size_t size = (size_t)1 << 20;
    dist_queue_t *q = dist_queue_new(0, 2 * size);
    pid_t pid = fork();
    if (pid == 0) {
        dt_child_init();
        unsigned char *b = malloc(size);
        for (size_t i = 0; i < size; i++)
            b[i] = (unsigned char)(i * 31 >> 3);
        _exit(dist_queue_put(q, b, size, true, 10000) ? 1 : 0);
    }
    void *m;
    size_t n;
    assert_int_equal(dist_queue_get(q, &m, &n, true, 10000), 0);
    assert_int_equal(n, size);
    for (size_t i = 0; i < size; i++)
        if (((unsigned char *)m)[i] != (unsigned char)(i * 31 >> 3))
            fail_msg("byte %zu differs", i);
    free(m);
    dt_join_ok(pid);
    dist_queue_destroy(&q);
}

/* A large ring (a pool's, sized for 64 MiB messages) gives back the pages
 * behind its head: 256 laps' worth of 1 MiB messages from another process
 * through a 64 MiB ring arrive intact, and the ring ends with a small part
 * of its capacity resident. A small ring keeps its pages (no trimming). */
static void test_large_ring_gives_pages_back(void **state)
{
    (void)state;
    size_t size = (size_t)1 << 20, cap = (size_t)64 << 20;
    int count = 256;
    dist_queue_t *q = dist_queue_new(0, cap);
    assert_non_null(q);
    pid_t pid = fork();
    if (pid == 0) {
        dt_child_init();
        unsigned char *b = malloc(size);
        for (int k = 0; k < count; k++) {
            for (size_t i = 0; i < size; i += 64)
                b[i] = (unsigned char)(k + i / 64);
            if (dist_queue_put(q, b, size - (size_t)k, true, 30000))
                _exit(1);
        }
        _exit(0);
    }
    size_t peak = 0;
    for (int k = 0; k < count; k++) {
        void *m;
        size_t n;
        assert_int_equal(dist_queue_get(q, &m, &n, true, 30000), 0);
        assert_int_equal(n, size - (size_t)k);
        for (size_t i = 0; i < n; i += 64)
            if (((unsigned char *)m)[i] != (unsigned char)(k + i / 64))
                fail_msg("message %d: byte %zu differs", k, i);
        free(m);
        size_t res = dist__queue_resident(q);
        if (res > peak)
            peak = res;
    }
    dt_join_ok(pid);
    /* In flight (the producer runs ahead by up to the whole ring), plus
     * what trimming keeps behind the head. At the end nothing is in flight. */
    size_t end = dist__queue_resident(q);
    if (end > ((size_t)12 << 20))
        fail_msg("%zu MiB of a drained 64 MiB ring still resident", end >> 20);
    if (peak >= cap + (1 << 20) && end == peak)
        fail_msg("the ring never gave pages back (peak %zu MiB)", peak >> 20);
    dist_queue_destroy(&q);

    /* Below the trimming size a ring keeps what it touched. */
    q = dist_queue_new(0, (size_t)8 << 20);
    void *buf = calloc(1, size);
    for (int k = 0; k < 24; k++) {
        void *m;
        size_t n;
        assert_int_equal(dist_queue_put(q, buf, size, false, 0), 0);
        assert_int_equal(dist_queue_get(q, &m, &n, false, 0), 0);
        free(m);
    }
    free(buf);
    assert_true(dist__queue_resident(q) >= ((size_t)7 << 20));
    dist_queue_destroy(&q);
}

/* Children blocked in get (and in put on a full queue) all wake with
 * DIST_ECLOSED when the parent closes the queue. */
static void test_close_wakes_blocked_getters_and_putters(void **state)
{
    (void)state;
    dist_queue_t *empty = dist_queue_new(0, 1024);
    dist_queue_t *full = dist_queue_new(1, 1024);
    assert_int_equal(dist_queue_put_nowait(full, "x", 1), 0);
    pid_t kids[6];
    for (int i = 0; i < 6; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            dt_child_init();
            void *m;
            size_t n;
            int r = i < 3 ? dist_queue_get(empty, &m, &n, true, 30000)
                          : dist_queue_put(full, "y", 1, true, 30000);
            _exit(r == DIST_ECLOSED ? 0 : 1);
        }
    }
    dt_sleep_ms(200); /* let them block */
    assert_int_equal(dist_queue_close(empty), 0);
    assert_int_equal(dist_queue_close(full), 0);
    assert_int_equal(dist_queue_close(full), 0); /* idempotent */
    for (int i = 0; i < 6; i++) {
        dt_join_ok(kids[i]);
    }
    /* A closed queue still hands out what it holds, then says closed. */
    assert_true(dist_queue_closed(full));
    assert_int_equal(dist_queue_put_nowait(full, "z", 1), DIST_ECLOSED);
    void *m;
    size_t n;
    assert_int_equal(dist_queue_get_nowait(full, &m, &n), 0);
    free(m);
    assert_int_equal(dist_queue_get(full, &m, &n, true, DIST_FOREVER), DIST_ECLOSED);
    dist_queue_destroy(&empty);
    dist_queue_destroy(&full);
}

/* 4 producers and 4 consumers move 1,000,000 messages. Each message is
 * (producer, sequence). Consumers mark a shared bitmap (a second mark is a
 * duplicate), check that each producer's sequence numbers rise, and report
 * their counts and sums. */
#define NPROD 4
#define NCONS 4
#define PER_PROD 250000

struct tally {
    _Atomic uint64_t count, sum, dups, disorder;
    _Atomic uint8_t seen[NPROD * PER_PROD];
};

static void test_4x4_million_messages(void **state)
{
    (void)state;
    struct tally *t = mmap(NULL, sizeof *t, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(t != MAP_FAILED);
    dist_queue_t *q = dist_queue_new(0, 1 << 16); /* small: producers block often */
    pid_t prod[NPROD], cons[NCONS];
    for (int c = 0; c < NCONS; c++) {
        cons[c] = fork();
        if (cons[c] == 0) {
            dt_child_init();
            uint32_t last[NPROD] = { 0 };
            bool any[NPROD] = { false };
            uint32_t msg[2];
            size_t n;
            uint64_t count = 0, sum = 0;
            int r;
            while ((r = dist_queue_get_into(q, msg, sizeof msg, &n, true, 60000)) == 0) {
                if (n != sizeof msg || msg[0] >= NPROD || msg[1] >= PER_PROD)
                    _exit(3);
                if (any[msg[0]] && msg[1] <= last[msg[0]])
                    atomic_fetch_add(&t->disorder, 1);
                any[msg[0]] = true;
                last[msg[0]] = msg[1];
                if (atomic_exchange(&t->seen[msg[0] * PER_PROD + msg[1]], 1))
                    atomic_fetch_add(&t->dups, 1);
                count++;
                sum += msg[1];
            }
            atomic_fetch_add(&t->count, count);
            atomic_fetch_add(&t->sum, sum);
            _exit(r == DIST_ECLOSED ? 0 : 4);
        }
    }
    for (int p = 0; p < NPROD; p++) {
        prod[p] = fork();
        if (prod[p] == 0) {
            dt_child_init();
            for (uint32_t i = 0; i < PER_PROD; i++) {
                uint32_t msg[2] = { (uint32_t)p, i };
                if (dist_queue_put(q, msg, sizeof msg, true, 60000))
                    _exit(5);
            }
            _exit(0);
        }
    }
    for (int p = 0; p < NPROD; p++) {
        dt_join_ok(prod[p]);
    }
    dist_queue_close(q); /* consumers drain, then see DIST_ECLOSED */
    for (int c = 0; c < NCONS; c++) {
        dt_join_ok(cons[c]);
    }
    assert_int_equal(t->count, (uint64_t)NPROD * PER_PROD);
    assert_int_equal(t->dups, 0);
    assert_int_equal(t->disorder, 0);
    assert_int_equal(t->sum, (uint64_t)NPROD * ((uint64_t)PER_PROD * (PER_PROD - 1) / 2));
    for (size_t i = 0; i < (size_t)NPROD * PER_PROD; i++)
        if (!t->seen[i])
            fail_msg("message %zu lost", i);
    munmap(t, sizeof *t);
    dist_queue_destroy(&q);
}

/* A child SIGKILLed while blocked in get: the queue keeps working. */
static void test_killed_while_blocked_in_get(void **state)
{
    (void)state;
    dist_queue_t *q = dist_queue_new(0, 4096);
    pid_t pid = fork();
    if (pid == 0) {
        dt_child_init();
        void *m;
        size_t n;
        dist_queue_get(q, &m, &n, true, DIST_FOREVER);
        _exit(0);
    }
    dt_sleep_ms(100);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    /* Another consumer gets what the parent puts. */
    pid_t other = fork();
    if (other == 0) {
        dt_child_init();
        void *m;
        size_t n;
        int r = dist_queue_get(q, &m, &n, true, 10000);
        _exit(r == 0 && n == 4 && memcmp(m, "ping", 4) == 0 ? 0 : 1);
    }
    assert_int_equal(dist_queue_put(q, "ping", 4, true, 1000), 0);
    dt_join_ok(other);
    dist_queue_destroy(&q);
}

/* Big messages make put and get spend their time copying under the lock,
 * so a SIGKILL lands inside them. Each message is stamped with its
 * sequence number at both ends and filled with a pattern derived from it;
 * survivors must be whole, and the queue must keep working. */
#define BIG (2u << 20)

static void s_fill(unsigned char *b, uint32_t seq)
{
    memset(b, (int)(seq & 0xff), BIG);
    memcpy(b, &seq, 4);
    memcpy(b + BIG - 4, &seq, 4);
}

static bool s_intact(const unsigned char *b, size_t n)
{
    uint32_t a, z;
    if (n != BIG)
        return false;
    memcpy(&a, b, 4);
    memcpy(&z, b + BIG - 4, 4);
    return a == z && b[BIG / 2] == (unsigned char)(a & 0xff);
}

static void test_killed_in_the_middle_of_put_and_get(void **state)
{
    (void)state;
    dist_queue_t *q = dist_queue_new(0, 8 * (BIG + 4));
    unsigned char *buf = malloc(BIG);
    unsigned start = dist__queue_recoveries(q);
    srand(12345);
    for (int round = 0; round < 40 && dist__queue_recoveries(q) - start < 4; round++) {
        bool putter = round % 2 == 0;
        if (!putter) /* give the getter something to chew on */
            for (uint32_t s = 0; dist_queue_put_nowait(q, (s_fill(buf, s), buf), BIG) == 0; s++)
                ;
        pid_t pid = fork();
        if (pid == 0) {
            dt_child_init();
            unsigned char *b = malloc(BIG);
            for (uint32_t s = 0;; s++) {
                if (putter) {
                    s_fill(b, s);
                    dist_queue_put(q, b, BIG, true, DIST_FOREVER);
                } else {
                    size_t n;
                    dist_queue_get_into(q, b, BIG, &n, true, DIST_FOREVER);
                    dist_queue_put(q, b, n, true, DIST_FOREVER); /* keep it busy */
                }
            }
        }
        dt_sleep_ms(5 + rand() % 20);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        /* The survivor can lock, and every message left is whole. */
        size_t n;
        int r;
        while ((r = dist_queue_get_into(q, buf, BIG, &n, false, 0)) == 0)
            assert_true(s_intact(buf, n));
        assert_int_equal(r, DIST_EEMPTY);
        assert_int_equal(dist_queue_qsize(q), 0);
        assert_int_equal(dist_queue_bytes(q), 0);
    }
    /* The kills did land inside the lock (the test would prove nothing
     * otherwise), and the queue still works. */
    print_message("recoveries after kills: %u\n", dist__queue_recoveries(q) - start);
    assert_true(dist__queue_recoveries(q) - start >= 1);
    s_fill(buf, 77);
    assert_int_equal(dist_queue_put(q, buf, BIG, true, 1000), 0);
    size_t n;
    assert_int_equal(dist_queue_get_into(q, buf, BIG, &n, true, 1000), 0);
    assert_true(s_intact(buf, n));
    free(buf);
    dist_queue_destroy(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fifo_and_counts, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_wraparound_keeps_bytes, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_nowait_empty_full_and_maxsize, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_get_timeout_and_get_into_too_small, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_big_message_between_processes, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_large_ring_gives_pages_back, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_close_wakes_blocked_getters_and_putters, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_4x4_million_messages, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_killed_while_blocked_in_get, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_killed_in_the_middle_of_put_and_get, dt_setup, dt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

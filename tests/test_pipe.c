/* test_pipe.c - dist/pipe.h: framing, directions, EOF, large messages,
 * timeouts. */
#include <dist.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static void test_duplex_both_ways(void **state)
{
    (void)state;
    dist_pipe_t *a, *b;
    assert_int_equal(dist_pipe_pair(&a, &b, true), 0);
    assert_int_equal(dist_pipe_send(a, "hello", 5), 0);
    assert_int_equal(dist_pipe_send(a, "", 0), 0);
    assert_int_equal(dist_pipe_send(b, "back", 4), 0);
    void *m;
    size_t n;
    assert_int_equal(dist_pipe_recv(b, &m, &n, 1000), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(m, "hello", 5);
    free(m);
    assert_int_equal(dist_pipe_recv(b, &m, &n, 1000), 0);
    assert_int_equal(n, 0);
    assert_non_null(m);
    free(m);
    assert_int_equal(dist_pipe_recv(a, &m, &n, 1000), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(m, "back", 4);
    free(m);
    dist_pipe_destroy(&a);
    dist_pipe_destroy(&b);
    assert_null(a);
}

static void test_one_way_enforces_direction(void **state)
{
    (void)state;
    dist_pipe_t *r, *w;
    assert_int_equal(dist_pipe_pair(&r, &w, false), 0);
    void *m;
    size_t n;
    assert_int_equal(dist_pipe_send(r, "x", 1), DIST_EBADF);
    assert_int_equal(dist_pipe_recv(w, &m, &n, 0), DIST_EBADF);
    assert_int_equal(dist_pipe_send(w, "x", 1), 0);
    assert_int_equal(dist_pipe_recv(r, &m, &n, 0), 0);
    assert_int_equal(n, 1);
    free(m);
    dist_pipe_destroy(&r);
    dist_pipe_destroy(&w);
}

static void test_poll_and_recv_timeouts(void **state)
{
    (void)state;
    dist_pipe_t *a, *b;
    assert_int_equal(dist_pipe_pair(&a, &b, true), 0);
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_pipe_poll(a, 100), 0);
    int64_t took = dt_now_ms() - t0;
    assert_true(took >= 95 && took < 2000);
    void *m;
    size_t n;
    t0 = dt_now_ms();
    assert_int_equal(dist_pipe_recv(a, &m, &n, 100), DIST_ETIMEDOUT);
    took = dt_now_ms() - t0;
    assert_true(took >= 95 && took < 2000);
    assert_int_equal(dist_pipe_recv(a, &m, &n, 0), DIST_ETIMEDOUT);
    assert_int_equal(dist_pipe_send(b, "z", 1), 0);
    assert_int_equal(dist_pipe_poll(a, 1000), 1);
    assert_int_equal(dist_pipe_poll(a, 0), 1); /* still there until recv */
    assert_int_equal(dist_pipe_recv(a, &m, &n, 0), 0);
    free(m);
    dist_pipe_destroy(&a);
    dist_pipe_destroy(&b);
}

/* Many small messages arrive whole and in order (exercises the buffering). */
static void test_many_small_messages_in_order(void **state)
{
    (void)state;
    dist_pipe_t *a, *b;
    assert_int_equal(dist_pipe_pair(&a, &b, true), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dt_child_init();
        dist_pipe_destroy(&a);
        for (unsigned i = 0; i < 100000; i++) {
            char msg[32];
            size_t len = (size_t)(i % 28) + 5;
            memset(msg, (int)(i & 0x7f), len);
            memcpy(msg, &i, sizeof i);
            if (dist_pipe_send(b, msg, len))
                _exit(1);
        }
        _exit(0);
    }
    dist_pipe_destroy(&b);
    for (unsigned i = 0; i < 100000; i++) {
        void *m;
        size_t n;
        assert_int_equal(dist_pipe_recv(a, &m, &n, 10000), 0);
        assert_int_equal(n, (size_t)(i % 28) + 5);
        unsigned got;
        memcpy(&got, m, sizeof got);
        assert_int_equal(got, i);
        assert_int_equal(((unsigned char *)m)[n - 1], i & 0x7f);
        free(m);
    }
    void *m;
    size_t n;
    assert_int_equal(dist_pipe_recv(a, &m, &n, 10000), DIST_ECLOSED);
    dt_join_ok(pid);
    dist_pipe_destroy(&a);
}

/* The child sends three messages and exits: the parent reads them, then gets
 * DIST_ECLOSED (not a hang), and sending to it is DIST_ECLOSED (no SIGPIPE). */
static void test_eof_after_child_exits(void **state)
{
    (void)state;
    dist_pipe_t *a, *b;
    assert_int_equal(dist_pipe_pair(&a, &b, true), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dt_child_init();
        dist_pipe_destroy(&a);
        dist_pipe_send(b, "1", 1);
        dist_pipe_send(b, "2", 1);
        dist_pipe_send(b, "3", 1);
        _exit(0);
    }
    dist_pipe_destroy(&b);
    for (char c = '1'; c <= '3'; c++) {
        void *m;
        size_t n;
        assert_int_equal(dist_pipe_recv(a, &m, &n, 5000), 0);
        assert_int_equal(((char *)m)[0], c);
        free(m);
    }
    void *m;
    size_t n;
    assert_int_equal(dist_pipe_recv(a, &m, &n, 5000), DIST_ECLOSED);
    assert_int_equal(dist_pipe_poll(a, 0), DIST_ECLOSED);
    assert_int_equal(dist_pipe_recv(a, &m, &n, DIST_FOREVER), DIST_ECLOSED);
    waitpid(pid, NULL, 0);
    assert_int_equal(dist_pipe_send(a, "x", 1), DIST_ECLOSED);
    dist_pipe_destroy(&a);
}

/* A child killed while the parent waits in recv: the parent wakes. */
static void test_eof_when_peer_is_killed(void **state)
{
    (void)state;
    dist_pipe_t *a, *b;
    assert_int_equal(dist_pipe_pair(&a, &b, true), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dt_child_init();
        dist_pipe_destroy(&a);
        pause();
        _exit(0);
    }
    dist_pipe_destroy(&b);
    dt_sleep_ms(50);
    kill(pid, SIGKILL);
    void *m;
    size_t n;
    assert_int_equal(dist_pipe_recv(a, &m, &n, 10000), DIST_ECLOSED);
    waitpid(pid, NULL, 0);
    dist_pipe_destroy(&a);
}

/* A child echoes one message of `size` bytes back; the content survives. */
static void s_echo_roundtrip(size_t size)
{
    dist_pipe_t *a, *b;
    assert_int_equal(dist_pipe_pair(&a, &b, true), 0);
    pid_t pid = fork();
    if (pid == 0) {
        dt_child_init();
        dist_pipe_destroy(&a);
        void *m;
        size_t n;
        if (dist_pipe_recv(b, &m, &n, 30000))
            _exit(1);
        if (dist_pipe_send(b, m, n))
            _exit(2);
        free(m);
        _exit(0);
    }
    dist_pipe_destroy(&b);
    unsigned char *big = malloc(size);
    assert_non_null(big);
    for (size_t i = 0; i < size; i++)
        big[i] = (unsigned char)(i * 2654435761u >> 13);
    assert_int_equal(dist_pipe_send(a, big, size), 0);
    void *m;
    size_t n;
    assert_int_equal(dist_pipe_recv(a, &m, &n, 30000), 0);
    assert_int_equal(n, size);
    assert_memory_equal(m, big, size);
    free(m);
    free(big);
    dt_join_ok(pid);
    dist_pipe_destroy(&a);
}

static void test_1mib_message(void **state)
{
    (void)state;
    s_echo_roundtrip((size_t)1 << 20);
}

static void test_64mib_message(void **state)
{
    (void)state;
    s_echo_roundtrip((size_t)64 << 20);
}

static void test_oversized_message_refused(void **state)
{
    (void)state;
    dist_pipe_t *a, *b;
    assert_int_equal(dist_pipe_pair(&a, &b, true), 0);
    static char byte;
    /* The length is checked before the buffer is touched. */
    assert_int_equal(dist_pipe_send(a, &byte, DIST_PIPE_MAX_MSG + 1), DIST_EMSGSIZE);
    /* A corrupt header from a raw writer is a protocol error, not a huge
     * allocation. */
    unsigned char hdr[4] = { 0xff, 0xff, 0xff, 0xff };
    assert_int_equal(write(dist_pipe_fd(a), hdr, 4), 4);
    void *m;
    size_t n;
    assert_int_equal(dist_pipe_recv(b, &m, &n, 1000), DIST_EPROTO);
    assert_int_equal(dist_pipe_pair(NULL, &b, true), DIST_EINVAL);
    dist_pipe_destroy(&a);
    dist_pipe_destroy(&b);
}

int main(void)
{
    signal(SIGPIPE, SIG_DFL); /* prove that we never raise it */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_duplex_both_ways, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_one_way_enforces_direction, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_poll_and_recv_timeouts, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_many_small_messages_in_order, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_eof_after_child_exits, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_eof_when_peer_is_killed, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_1mib_message, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_64mib_message, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_oversized_message_refused, dt_setup, dt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_manager.c - dist/manager.h against real masters on 127.0.0.1: one
 * manager serves (its master runs in a thread of this process) on a free
 * port, a second one connects to it, and values go from one to the other
 * through named queues. Also: timeouts, qsize/empty, bad names and
 * formats, items that are not MessagePack, connecting to nothing, CURVE
 * in serve mode, and destroy while other threads wait in get. */
#include <dist.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

/* A serving manager on a free loopback port and one connected to it. */
static void s_pair(dist_manager_t **serve, dist_manager_t **conn)
{
    char bind[64];
    snprintf(bind, sizeof bind, "tcp://127.0.0.1:%d", dt_free_port());
    *serve = dist_manager_new(&(dist_manager_opts_t){ .bind = bind, .name = "serve" });
    assert_non_null(*serve);
    assert_string_equal(dist_manager_endpoint(*serve), bind);
    *conn = dist_manager_new(&(dist_manager_opts_t){ .master = bind, .name = "conn" });
    assert_non_null(*conn);
    assert_string_equal(dist_manager_endpoint(*conn), bind);
    assert_non_null(dist_manager_client(*conn));
}

static void test_values_across_managers(void **state)
{
    (void)state;
    dist_manager_t *s, *c;
    s_pair(&s, &c);
    dist_mqueue_t *in = dist_manager_queue(c, "values");
    dist_mqueue_t *out = dist_manager_queue(s, "values");
    assert_non_null(in);
    assert_ptr_equal(out, dist_manager_queue(s, "values")); /* one handle per name */
    assert_string_equal(dist_mqueue_name(out), "values");

    static const char zbin[] = { 'a', 0, 'b' };
    assert_int_equal(dist_mqueue_put(in, "i", -7), 0);
    assert_int_equal(dist_mqueue_put(in, "I", (int64_t)1 << 40), 0);
    assert_int_equal(dist_mqueue_put(in, "d", 2.5), 0);
    assert_int_equal(dist_mqueue_put(in, "t", true), 0);
    assert_int_equal(dist_mqueue_put(in, "s", "hello"), 0);
    assert_int_equal(dist_mqueue_put(in, "S", zbin, sizeof zbin), 0);
    assert_int_equal(dist_mqueue_put(in, "b", zbin, sizeof zbin), 0);
    assert_int_equal(dist_mqueue_put(in, "n"), 0);
    assert_int_equal(dist_mqueue_put_timeout(in, 0, "isdt", 7, "x", 0.5, false), 0);

    int i = 0;
    int64_t l = 0;
    double d = 0;
    bool b = false;
    const char *str;
    const void *bin;
    size_t len;
    assert_int_equal(dist_mqueue_get_fmt(out, 5000, "i", &i), 0);
    assert_int_equal(i, -7);
    assert_int_equal(dist_mqueue_get_fmt(out, 5000, "I", &l), 0);
    assert_true(l == (int64_t)1 << 40);
    assert_int_equal(dist_mqueue_get_fmt(out, 5000, "d", &d), 0);
    assert_true(d == 2.5);
    assert_int_equal(dist_mqueue_get_fmt(out, 5000, "t", &b), 0);
    assert_true(b);
    /* An owned value, readable after later gets. */
    dist_result_t *r;
    assert_int_equal(dist_mqueue_get(out, 5000, &r), 0);
    assert_int_equal(dist_result_str(r, &str, &len), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(str, "hello", 5);
    assert_int_equal(dist_mqueue_get_fmt(out, 5000, "s", &str, &len), 0);
    assert_int_equal(len, sizeof zbin);
    assert_memory_equal(str, zbin, sizeof zbin);
    assert_int_equal(dist_mqueue_get_fmt(out, 5000, "b", &bin, &len), 0);
    assert_int_equal(len, sizeof zbin);
    assert_memory_equal(bin, zbin, sizeof zbin);
    assert_int_equal(dist_mqueue_get_fmt(out, 5000, "n"), 0);
    assert_int_equal(dist_mqueue_get_fmt(out, 5000, "isdt", &i, &str, &len, &d, &b), 0);
    assert_int_equal(i, 7);
    assert_int_equal(len, 1);
    assert_memory_equal(str, "x", 1);
    assert_true(d == 0.5);
    assert_false(b);
    dist_result_destroy(&r);

    /* A value of another shape is taken and reported, and stays readable. */
    assert_int_equal(dist_mqueue_put(in, "I", (int64_t)1 << 40), 0);
    assert_int_equal(dist_mqueue_get_fmt(out, 5000, "i", &i), DIST_EPROTO);
    const msgpack_object *last = dist_mqueue_last(out);
    assert_non_null(last);
    assert_int_equal(dist_obj_int(last, &l), 0);
    assert_true(l == (int64_t)1 << 40);
    assert_int_equal(dist_mqueue_put(in, "is", 1, "a"), 0);
    assert_int_equal(dist_mqueue_get_fmt(out, 5000, "i", &i), DIST_EPROTO);
    assert_int_equal(dist_mqueue_put(in, "s", "a"), 0);
    assert_int_equal(dist_mqueue_get_fmt(out, 5000, "is", &i, &str, &len), DIST_EPROTO);

    /* A packed value goes as it is. */
    dist_args_t *a = dist_args_new();
    dist_args_int(a, 3);
    dist_args_str(a, "packed");
    const void *data = dist_args_data(a, &len);
    assert_int_equal(dist_mqueue_put_packed(in, data, len, 0), 0);
    assert_int_equal(dist_mqueue_get_fmt(out, 5000, "is", &i, &str, &len), 0);
    assert_int_equal(i, 3);
    assert_int_equal(len, 6);
    dist_args_destroy(&a);

    dist_manager_destroy(&c);
    dist_manager_destroy(&s);
    assert_null(s);
    dist_manager_destroy(&s); /* NULL is accepted */
}

static void test_timeouts_and_size(void **state)
{
    (void)state;
    dist_manager_t *s, *c;
    s_pair(&s, &c);
    dist_mqueue_t *q = dist_manager_queue(c, "sized");
    dist_mqueue_t *qs = dist_manager_queue(s, "sized");
    dist_result_t *r = (dist_result_t *)1;

    /* Nothing there: DIST_ETIMEDOUT after the timeout (Python's queue.Empty),
     * at once with 0. */
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_mqueue_get(q, 0, &r), DIST_ETIMEDOUT);
    assert_null(r);
    assert_true(dt_now_ms() - t0 < 1000);
    t0 = dt_now_ms();
    assert_int_equal(dist_mqueue_get(q, 1200, &r), DIST_ETIMEDOUT); /* more than one slice */
    int64_t took = dt_now_ms() - t0;
    assert_true(took >= 1100);
    assert_true(took < 4000);

    /* A queue the master has not seen, then one that holds items. */
    assert_int_equal(dist_mqueue_qsize(q), 0);
    assert_int_equal(dist_mqueue_empty(q), 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dist_mqueue_put(qs, "i", i), 0);
    assert_int_equal(dist_mqueue_qsize(q), 3);
    assert_int_equal(dist_mqueue_empty(q), 0);
    assert_int_equal(dist_mqueue_qsize(dist_manager_queue(s, "other")), 0);
    int v;
    assert_int_equal(dist_mqueue_get_fmt(q, 5000, "i", &v), 0);
    assert_int_equal(v, 0); /* first in, first out */
    assert_int_equal(dist_mqueue_qsize(qs), 2);

    /* A get that waits is served by a later put. */
    assert_int_equal(dist_mqueue_get_fmt(q, 0, "i", &v), 0);
    assert_int_equal(dist_mqueue_get_fmt(q, 0, "i", &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(dist_mqueue_empty(qs), 1);

    dist_manager_destroy(&c);
    dist_manager_destroy(&s);
}

static void test_bad_input(void **state)
{
    (void)state;
    dist_manager_t *s, *c;
    s_pair(&s, &c);
    char long_name[130];
    memset(long_name, 'a', 129);
    long_name[129] = 0;
    const char *bad[] = { "", "with space", "slash/", "é", long_name, NULL };
    for (int i = 0; i < 6; i++) {
        errno = 0;
        assert_null(dist_manager_queue(c, bad[i]));
        assert_int_equal(errno, EINVAL);
    }
    long_name[128] = 0; /* 128 is allowed */
    assert_non_null(dist_manager_queue(c, long_name));

    dist_mqueue_t *q = dist_manager_queue(c, "bad");
    int v;
    assert_int_equal(dist_mqueue_put(q, "x", 1), DIST_EINVAL);
    assert_int_equal(dist_mqueue_put(q, ""), DIST_EINVAL);
    assert_int_equal(dist_mqueue_put(q, NULL), DIST_EINVAL);
    assert_int_equal(dist_mqueue_put_packed(q, "\xc1", 1, 0), DIST_EINVAL); /* never used */
    assert_int_equal(dist_mqueue_put_packed(q, "\x01\x02", 2, 0), DIST_EINVAL); /* two */
    /* A bad get format takes nothing. */
    assert_int_equal(dist_mqueue_put(q, "i", 5), 0);
    assert_int_equal(dist_mqueue_get_fmt(q, 0, "q", &v), DIST_EINVAL);
    assert_int_equal(dist_mqueue_qsize(q), 1);
    assert_int_equal(dist_mqueue_get_fmt(q, 0, "i", &v), 0);
    assert_int_equal(v, 5);

    /* Another client of the master puts bytes that are not MessagePack. */
    assert_int_equal(dist_client_qput(dist_manager_client(s), "bad", "\xc1\xc1", 2, 0), 0);
    assert_int_equal(dist_mqueue_get_fmt(q, 5000, "i", &v), DIST_EPROTO);
    assert_null(dist_mqueue_last(q));
    assert_int_equal(dist_client_qput(dist_manager_client(s), "bad", "\x92\x01", 2, 0), 0);
    dist_result_t *r;
    assert_int_equal(dist_mqueue_get(q, 5000, &r), 0);
    assert_null(dist_result_value(r));
    dist_result_destroy(&r);

    /* Options that cannot go together. */
    errno = 0;
    assert_null(dist_manager_new(&(dist_manager_opts_t){ .bind = "tcp://127.0.0.1:0",
                                                         .master = "tcp://127.0.0.1:1" }));
    assert_int_equal(errno, EINVAL);
    assert_null(dist_manager_new(&(dist_manager_opts_t){ .allow_clients = "/tmp" }));
    assert_int_equal(errno, EINVAL);
    /* Serving where the first one serves. */
    errno = 0;
    assert_null(dist_manager_new(&(dist_manager_opts_t){ .bind = dist_manager_endpoint(s) }));
    assert_int_equal(errno, EADDRINUSE);

    dist_manager_destroy(&c);
    dist_manager_destroy(&s);
}

static void test_connect_to_nothing(void **state)
{
    (void)state;
    /* Serving without a key while the environment names one: refused at
     * once (no thread of ours runs yet, so setenv is safe here). */
    setenv("DIST_KEY", "/nonexistent/own.key", 1);
    errno = 0;
    assert_null(dist_manager_new(&(dist_manager_opts_t){ .bind = "tcp://127.0.0.1:0" }));
    assert_int_equal(errno, EINVAL);
    unsetenv("DIST_KEY");

    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", dt_free_port());
    int64_t t0 = dt_now_ms();
    errno = 0;
    assert_null(dist_manager_new(&(dist_manager_opts_t){ .master = ep,
                                                         .connect_timeout_ms = 500 }));
    assert_int_equal(errno, -DIST_ENOMASTER);
    assert_true(dt_now_ms() - t0 < 3000);
    /* A served master on port 0 gets one picked, and says which. */
    dist_manager_t *m = dist_manager_new(&(dist_manager_opts_t){ .bind = "tcp://127.0.0.1:0" });
    assert_non_null(m);
    assert_string_not_equal(dist_manager_endpoint(m), "tcp://127.0.0.1:0");
    assert_int_equal(strncmp(dist_manager_endpoint(m), "tcp://127.0.0.1:", 16), 0);
    dist_manager_destroy(&m);
}

struct waiter {
    dist_mqueue_t *q;
    int rc;
    int got;
};

static void *s_get_forever(void *arg)
{
    struct waiter *w = arg;
    w->rc = dist_mqueue_get_fmt(w->q, DIST_FOREVER, "i", &w->got);
    return NULL;
}

static void test_destroy_with_pending_gets(void **state)
{
    (void)state;
    dist_manager_t *s, *c;
    s_pair(&s, &c);
    /* Several threads on one manager: each item goes to exactly one. */
    struct waiter w[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        w[i] = (struct waiter){ .q = dist_manager_queue(c, "waiting"), .rc = 1, .got = -1 };
        assert_int_equal(pthread_create(&t[i], NULL, s_get_forever, &w[i]), 0);
    }
    dt_sleep_ms(300);
    assert_int_equal(dist_mqueue_put(dist_manager_queue(s, "waiting"), "i", 42), 0);
    int64_t end = dt_now_ms() + 5000;
    int served = 0;
    while (served == 0 && dt_now_ms() < end) {
        dt_sleep_ms(20);
        for (int i = 0; i < 3; i++)
            served += __atomic_load_n(&w[i].rc, __ATOMIC_SEQ_CST) == 0;
    }
    assert_int_equal(served, 1);
    /* The other two still wait (DIST_FOREVER): destroy ends them. */
    int64_t t0 = dt_now_ms();
    dist_manager_destroy(&c);
    assert_true(dt_now_ms() - t0 < 4000);
    int closed = 0, got = 0;
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        closed += w[i].rc == DIST_ECLOSED;
        got += w[i].rc == 0 && w[i].got == 42;
    }
    assert_int_equal(closed, 2);
    assert_int_equal(got, 1);
    /* The item nobody took stays with the master, not lost: none here. */
    assert_int_equal(dist_mqueue_qsize(dist_manager_queue(s, "waiting")), 0);
    dist_manager_destroy(&s);
}

/* Serve mode with CURVE: the master's own .pub is in allow_clients (the
 * manager connects to itself with that key), and so is the peer's. */
static void test_serve_with_keys(void **state)
{
    (void)state;
    char dir[] = "/tmp/dist-test-manager-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], allow[256], mkey[256], mpub[256], pkey[256];
    snprintf(allow, sizeof allow, "%s/clients", dir);
    assert_int_equal(mkdir(allow, 0700), 0);
    snprintf(path, sizeof path, "%s/clients/master", dir);
    assert_int_equal(dist_keygen(path, false), 0);
    snprintf(path, sizeof path, "%s/clients/peer", dir);
    assert_int_equal(dist_keygen(path, false), 0);
    /* The secret keys live outside the allow list. */
    snprintf(mkey, sizeof mkey, "%s/master.key", dir);
    snprintf(path, sizeof path, "%s/clients/master.key", dir);
    assert_int_equal(rename(path, mkey), 0);
    snprintf(pkey, sizeof pkey, "%s/peer.key", dir);
    snprintf(path, sizeof path, "%s/clients/peer.key", dir);
    assert_int_equal(rename(path, pkey), 0);
    snprintf(mpub, sizeof mpub, "%s/clients/master.pub", dir);

    char bind[64];
    snprintf(bind, sizeof bind, "tcp://127.0.0.1:%d", dt_free_port());
    dist_manager_t *s = dist_manager_new(&(dist_manager_opts_t){
        .bind = bind, .key = mkey, .allow_clients = allow });
    assert_non_null(s);
    dist_manager_t *c = dist_manager_new(&(dist_manager_opts_t){
        .master = bind, .key = pkey, .server_key = mpub });
    assert_non_null(c);
    assert_int_equal(dist_mqueue_put(dist_manager_queue(c, "secret"), "s", "sealed"), 0);
    const char *str;
    size_t len;
    assert_int_equal(dist_mqueue_get_fmt(dist_manager_queue(s, "secret"), 5000, "s", &str, &len),
                     0);
    assert_int_equal(len, 6);
    assert_memory_equal(str, "sealed", 6);
    dist_manager_destroy(&c);
    /* Without keys, nobody gets in: refused (the master wants keys), or
     * no welcome before the timeout when no handshake failed yet. */
    errno = 0;
    assert_null(dist_manager_new(&(dist_manager_opts_t){ .master = bind,
                                                         .connect_timeout_ms = 500 }));
    assert_true(errno == -DIST_EREFUSED || errno == -DIST_ENOMASTER);
    dist_manager_destroy(&s);
    dt_rm_tree(dir);
}

int main(void)
{
    /* Keys from the environment would change what these tests connect with. */
    unsetenv("DIST_KEY");
    unsetenv("DIST_SERVER_KEY");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_values_across_managers, dt_teardown),
        cmocka_unit_test_teardown(test_timeouts_and_size, dt_teardown),
        cmocka_unit_test_teardown(test_bad_input, dt_teardown),
        cmocka_unit_test_teardown(test_connect_to_nothing, dt_teardown),
        cmocka_unit_test_teardown(test_destroy_with_pending_gets, dt_teardown),
        cmocka_unit_test_teardown(test_serve_with_keys, dt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

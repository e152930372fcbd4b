/* test_cluster.c - the real programs together on 127.0.0.1: dist-master,
 * several dist-worker processes, and the client API in this process.
 *
 * Every program is started on a free port, killed by pid at the end of its
 * test, and its pool processes die with it. */
#include <dist.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static char s_ep[64];

/* Starts a program (ready once it listens on ready_port, when > 0); its
 * stderr goes to /dev/null unless DIST_TEST_VERBOSE. dt_teardown kills
 * whatever is still running. */
static pid_t s_spawn(char *const argv[], int ready_port)
{
    dt_spawn_opts_t o = { .err = { getenv("DIST_TEST_VERBOSE") ? DT_IO_INHERIT : DT_IO_NULL },
                          .ready_port = ready_port };
    return dt_spawn((const char *const *)argv, &o);
}

static pid_t s_master(const char *extra)
{
    int port = dt_free_port();
    snprintf(s_ep, sizeof s_ep, "tcp://127.0.0.1:%d", port);
    char *argv[] = { DIST_MASTER_BIN, "--bind", s_ep, "--heartbeat-timeout", "1500",
                     "--log-level", "info", (char *)extra, NULL };
    return s_spawn(argv, port);
}

static pid_t s_worker(const char *name, const char *procs)
{
    char *argv[] = { DIST_WORKER_BIN, "--master", s_ep, "--procs", (char *)procs, "--name",
                     (char *)name, "--tasks", DIST_TEST_PLUGIN, "--log-level", "info", NULL };
    return s_spawn(argv, 0);
}

/* Signals pid (one of ours) and reaps it. */
static void s_stop(pid_t pid, int sig)
{
    if (dt_signal(pid, sig) == 0)
        dt_wait(pid, 60000);
}

static dist_client_t *s_client(void)
{
    dist_client_opts_t o = { .master = s_ep, .connect_timeout_ms = 10000 };
    dist_client_t *c = dist_client_new(&o);
    assert_non_null(c);
    return c;
}

/* The status map's workers array; the result is kept in *keep. */
static const msgpack_object *s_workers(dist_client_t *c, dist_result_t **keep)
{
    assert_int_equal(dist_client_status(c, 5000, keep), 0);
    const msgpack_object *w = dist_wire_map_get(dist_result_value(*keep), "workers");
    assert_non_null(w);
    assert_int_equal(w->type, MSGPACK_OBJECT_ARRAY);
    return w;
}

static void s_wait_workers(dist_client_t *c, size_t n)
{
    for (int i = 0; i < 1500; i++) {
        dist_result_t *st;
        size_t have = s_workers(c, &st)->via.array.size;
        dist_result_destroy(&st);
        if (have >= n)
            return;
        dt_sleep_ms(20);
    }
    fail_msg("fewer than %zu workers joined", n);
}

/* Asserts that the master knows n workers and that every one of them
 * finished at least one task. */
static void s_assert_all_worked(dist_client_t *c, uint32_t n)
{
    dist_result_t *st;
    const msgpack_object *w = s_workers(c, &st);
    assert_int_equal(w->via.array.size, n);
    uint32_t idle = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t done = 0;
        dist_wire_get_u64(dist_wire_map_get(&w->via.array.ptr[i], "done"), &done);
        idle += done == 0;
    }
    dist_result_destroy(&st);
    assert_int_equal(idle, 0);
}

/* [i] for i in 0..n-1, in one buffer. */
struct items {
    unsigned char *buf;
    dist_bytes_t *v;
};

static struct items s_ints(size_t n, int64_t base)
{
    struct items it = { malloc(n * 10), malloc(n * sizeof(dist_bytes_t)) };
    dist_args_t *a = dist_args_new();
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        dist_args_clear(a);
        dist_args_int(a, base + (int64_t)i);
        size_t len;
        const void *d = dist_args_data(a, &len);
        memcpy(it.buf + off, d, len);
        it.v[i] = (dist_bytes_t){ it.buf + off, len };
        off += len;
    }
    dist_args_destroy(&a);
    return it;
}

static void s_items_free(struct items *it)
{
    free(it->buf);
    free(it->v);
}

static void s_check_squares(dist_results_t *rs, size_t n)
{
    assert_int_equal(dist_results_count(rs), n);
    for (size_t i = 0; i < n; i++) {
        int64_t v;
        dist_result_t *r = dist_results_at(rs, i);
        if (dist_result_int(r, &v) || v != (int64_t)(i * i))
            fail_msg("item %zu: %s", i, dist_result_error(r) ? dist_result_error(r) : "wrong value");
    }
}

static void test_100k_tasks_over_3_workers(void **state)
{
    (void)state;
    s_master(NULL);
    s_worker("w1", "2");
    s_worker("w2", "2");
    s_worker("w3", "2");
    dist_client_t *c = s_client();
    s_wait_workers(c, 3);
    enum { N = 100000 };
    struct items it = s_ints(N, 0);
    dist_results_t *rs;
    assert_int_equal(dist_client_map(c, "test.square", it.v, N, 0, 300000, NULL, NULL, &rs), 0);
    s_check_squares(rs, N);
    dist_results_destroy(&rs);
    s_assert_all_worked(c, 3);
    dist_client_destroy(&c);
    s_items_free(&it);
}

struct seen {
    _Atomic int *count;
    size_t n;
    int dups;
};

static void s_on_result(size_t index, dist_result_t *r, void *ud)
{
    struct seen *s = ud;
    int64_t v;
    assert_true(index < s->n);
    assert_int_equal(dist_result_int(r, &v), 0);
    assert_int_equal(v, (int64_t)(index * index));
    if (atomic_fetch_add(&s->count[index], 1))
        s->dups++;
}

struct killer {
    pid_t victim;
    int after_ms;
};

static void *s_kill_later(void *arg)
{
    struct killer *k = arg;
    dt_sleep_ms(k->after_ms);
    dt_signal(k->victim, SIGKILL);
    return NULL;
}

/* A worker SIGKILLed in the middle of a map: every result arrives, none
 * twice; then a replacement worker with the same name joins and works. */
static void test_worker_killed_mid_map_and_restarted(void **state)
{
    (void)state;
    s_master(NULL);
    pid_t victim = s_worker("victim", "2");
    s_worker("survivor", "2");
    dist_client_t *c = s_client();
    s_wait_workers(c, 2);
    enum { N = 4000 };
    /* test.sleep_square sleeps a millisecond: the map lasts long enough for
     * the kill to land in the middle. */
    struct items it = s_ints(N, 0);
    struct seen s = { calloc(N, sizeof(_Atomic int)), N, 0 };
    struct killer k = { victim, 300 };
    pthread_t t;
    pthread_create(&t, NULL, s_kill_later, &k);
    assert_int_equal(dist_client_map_unordered(c, "test.sleep_square", it.v, N, 0, 120000,
                                               s_on_result, &s),
                     0);
    pthread_join(t, NULL);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(s.count[i], 1);
    assert_int_equal(s.dups, 0);
    s_stop(victim, SIGKILL);

    /* Restart it: it rejoins and takes work again. */
    s_worker("victim", "2");
    bool back = false;
    for (int i = 0; i < 500 && !back; i++) {
        dist_result_t *st;
        const msgpack_object *w = s_workers(c, &st);
        for (uint32_t j = 0; j < w->via.array.size; j++)
            back |= dist_wire_str_eq(dist_wire_map_get(&w->via.array.ptr[j], "name"), "victim");
        dist_result_destroy(&st);
        if (!back)
            dt_sleep_ms(20);
    }
    assert_true(back);
    dist_results_t *rs;
    assert_int_equal(dist_client_map(c, "test.square", it.v, 1000, 0, 60000, NULL, NULL, &rs), 0);
    s_check_squares(rs, 1000);
    dist_results_destroy(&rs);
    dist_client_destroy(&c);
    free(s.count);
    s_items_free(&it);
}

static void test_unknown_task_is_a_clear_error(void **state)
{
    (void)state;
    s_master(NULL);
    s_worker("w1", "1");
    dist_client_t *c = s_client();
    s_wait_workers(c, 1);
    errno = 0;
    dist_future_t *f = dist_client_submit(c, "no.such.task", "\x90", 1, 0);
    assert_null(f);
    assert_int_equal(errno, -DIST_ENOENT);
    dist_result_t *r;
    assert_int_equal(dist_client_call(c, "no.such.task", "\x90", 1, 5000, &r), DIST_ENOENT);
    if (r) {
        assert_non_null(strstr(dist_result_error(r), "no.such.task"));
        dist_result_destroy(&r);
    }
    dist_client_destroy(&c);
}

static void test_no_master_times_out_clearly(void **state)
{
    (void)state;
    snprintf(s_ep, sizeof s_ep, "tcp://127.0.0.1:%d", dt_free_port());
    dist_client_opts_t o = { .master = s_ep, .connect_timeout_ms = 500 };
    int64_t t0 = dt_now_ms();
    errno = 0;
    assert_null(dist_client_new(&o));
    int64_t took = dt_now_ms() - t0;
    assert_int_equal(errno, -DIST_ENOMASTER);
    assert_true(took >= 450 && took < 5000);
    assert_string_equal(dist_strerror(errno), "no master answered");
}

static void test_50_single_slot_workers_all_get_work(void **state)
{
    (void)state;
    s_master(NULL);
    char names[50][16];
    for (int i = 0; i < 50; i++) {
        snprintf(names[i], sizeof names[i], "one-%02d", i);
        s_worker(names[i], "1");
    }
    dist_client_t *c = s_client();
    s_wait_workers(c, 50);
    enum { N = 400 };
    struct items it = s_ints(N, 0);
    dist_results_t *rs;
    assert_int_equal(dist_client_map(c, "test.sleep_square", it.v, N, 0, 120000, NULL, NULL, &rs), 0);
    s_check_squares(rs, N);
    dist_results_destroy(&rs);
    s_assert_all_worked(c, 50);
    dist_client_destroy(&c);
    s_items_free(&it);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_100k_tasks_over_3_workers, dt_teardown),
        cmocka_unit_test_teardown(test_worker_killed_mid_map_and_restarted, dt_teardown),
        cmocka_unit_test_teardown(test_unknown_task_is_a_clear_error, dt_teardown),
        cmocka_unit_test_teardown(test_no_master_times_out_clearly, dt_teardown),
        cmocka_unit_test_teardown(test_50_single_slot_workers_all_get_work, dt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

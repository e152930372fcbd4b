/* test_client_restart.c - the client and dist against the real dist-master
 * and dist-worker when the master goes away: killed (a new in-memory
 * instance that lost every task comes up on the same port), stopped
 * cleanly (BYE), full (--max-queued), or without a worker for a task.
 * Each test starts its own programs on 127.0.0.1 and stops them. */
#include <dist.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto_internal.h"
#include "testutil.h"

static struct {
    int port;
    char endpoint[64];
    char log[96];
    pid_t master, worker;
} g;

static void s_master(const char *max_queued)
{
    char bind[64];
    snprintf(bind, sizeof bind, "tcp://127.0.0.1:%d", g.port);
    const char *argv[] = { DIST_MASTER_BIN, "--bind", bind, "--log-level", "info",
                           max_queued ? "--max-queued" : NULL, max_queued, NULL };
    dt_spawn_opts_t o = { .in = { DT_IO_NULL }, .out = { DT_IO_APPEND, g.log, NULL },
                          .err = { DT_IO_STDOUT }, .ready_port = g.port };
    g.master = dt_spawn(argv, &o);
}

static void s_worker(void)
{
    const char *argv[] = { DIST_WORKER_BIN, "--master", g.endpoint, "--procs", "2",
                           "--log-level", "warn", NULL };
    dt_spawn_opts_t o = { .in = { DT_IO_NULL }, .out = { DT_IO_NULL }, .err = { DT_IO_NULL } };
    g.worker = dt_spawn(argv, &o);
}

static dist_client_t *s_client(void)
{
    dist_client_opts_t co = { .master = g.endpoint, .connect_timeout_ms = 10000 };
    dist_client_t *c = dist_client_new(&co);
    assert_non_null(c);
    return c;
}

/* A counter of the master's STATUS, or -1. */
static int64_t s_counter(dist_client_t *c, const char *key, int *workers)
{
    dist_result_t *st;
    if (dist_client_status(c, 3000, &st))
        return -1;
    const msgpack_object *cs = dist_obj_map_get(dist_result_value(st), "counters");
    const msgpack_object *v = cs ? dist_obj_map_get(cs, key) : NULL;
    int64_t x = -1;
    if (v)
        dist_obj_int(v, &x);
    const msgpack_object *w;
    size_t n = 0;
    if (workers && dist__get_array(dist_result_value(st), "workers", &w, &n) == 0)
        *workers = (int)n;
    dist_result_destroy(&st);
    return x;
}

static void s_wait_worker(dist_client_t *c)
{
    int workers = 0;
    int64_t end = dt_now_ms() + 20000;
    while (dt_now_ms() < end && (s_counter(c, "submitted", &workers) < 0 || workers < 1))
        dt_sleep_ms(50);
    assert_true(workers >= 1);
}

/* A master (with --max-queued when given), a worker, and a client that
 * has seen the worker join. */
static dist_client_t *s_cluster(const char *max_queued)
{
    s_master(max_queued);
    s_worker();
    dist_client_t *c = s_client();
    s_wait_worker(c);
    return c;
}

/* A future of dist.sleep [ms]; *a holds its arguments. */
static dist_future_t *s_sleep(dist_client_t *c, int ms, dist_args_t **a)
{
    *a = dist_args_pack("i", ms);
    size_t len;
    const void *args = dist_args_data(*a, &len);
    dist_future_t *f = dist_client_submit(c, "dist.sleep", args, len, 0);
    assert_non_null(f);
    return f;
}

static int s_setup(void **state)
{
    (void)state;
    g.port = dt_free_port();
    snprintf(g.endpoint, sizeof g.endpoint, "tcp://127.0.0.1:%d", g.port);
    snprintf(g.log, sizeof g.log, "/tmp/dist-restart-%d-%d.log", (int)getpid(), g.port);
    unlink(g.log);
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    dt_stop_all();
    unlink(g.log);
    return 0;
}

static size_t s_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    int ch;
    while (f && (ch = fgetc(f)) != EOF)
        n += ch == '\n';
    if (f)
        fclose(f);
    return n;
}

/* A 20,000-item dist map while the master is SIGKILLed and started again
 * (in memory: the new instance knows none of the tasks): every result
 * arrives, in order. */
static void test_map_across_a_killed_master(void **state)
{
    (void)state;
    dist_client_t *c = s_cluster(NULL);
    dist_client_destroy(&c);
    enum { N = 20000 };
    char in[64], out[64];
    snprintf(in, sizeof in, "/tmp/dist-restart-in-%d", (int)getpid());
    snprintf(out, sizeof out, "/tmp/dist-restart-out-%d", (int)getpid());
    FILE *f = fopen(in, "w");
    for (int i = 0; i < N; i++)
        fprintf(f, "[%d]\n", i);
    fclose(f);
    const char *argv[] = { DIST_CLI_BIN, "--master", g.endpoint, "map", "dist.echo", NULL };
    dt_spawn_opts_t o = { .in = { DT_IO_FILE, in, NULL }, .out = { DT_IO_FILE, out, NULL },
                          .err = { DT_IO_NULL } };
    pid_t cli = dt_spawn(argv, &o);
    int64_t end = dt_now_ms() + 30000;
    while (s_lines(out) == 0 && dt_now_ms() < end)
        dt_sleep_ms(2);
    size_t at_kill = s_lines(out);
    dt_signal(g.master, SIGKILL);
    assert_int_equal(dt_wait(g.master, 5000), 128 + SIGKILL);
    s_master(NULL);
    assert_int_equal(dt_wait(cli, 120000), 0);
    if (at_kill >= N)
        fail_msg("the map ended before the master was killed");
    f = fopen(out, "r");
    char line[64], want[64];
    for (int i = 0; i < N; i++) {
        snprintf(want, sizeof want, "[%d]\n", i);
        assert_non_null(fgets(line, sizeof line, f));
        assert_string_equal(line, want);
    }
    assert_null(fgets(line, sizeof line, f));
    fclose(f);
    unlink(in);
    unlink(out);
}

/* A C API future whose task the killed master had accepted. */
static void test_future_across_a_killed_master(void **state)
{
    (void)state;
    dist_client_t *c = s_cluster(NULL);
    dist_args_t *a;
    dist_future_t *f = s_sleep(c, 1500, &a);
    dt_sleep_ms(200); /* running on the worker */
    dt_signal(g.master, SIGKILL);
    assert_int_equal(dt_wait(g.master, 5000), 128 + SIGKILL);
    s_master(NULL);
    assert_int_equal(dist_future_wait(f, 60000), 0);
    assert_true(dist_future_successful(f));
    dist_future_destroy(&f);
    dist_args_destroy(&a);
    dist_client_destroy(&c);
}

/* A master that stops cleanly says BYE: with the next one up, the
 * client's pending call completes well before 3.5 s of silence. */
static void test_bye_then_a_new_master(void **state)
{
    (void)state;
    dist_client_t *c = s_cluster(NULL);
    dist_args_t *a;
    dist_future_t *f = s_sleep(c, 300, &a);
    dt_signal(g.master, SIGTERM);
    assert_int_equal(dt_wait(g.master, 10000), 0);
    /* The client reads the BYE while it waits. */
    assert_int_equal(dist_future_wait(f, 100), DIST_ETIMEDOUT);
    s_master(NULL);
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_future_wait(f, 10000), 0);
    int64_t took = dt_now_ms() - t0;
    if (took >= 2500)
        fail_msg("the call completed %lld ms after the restart", (long long)took);
    dist_future_destroy(&f);
    dist_args_destroy(&a);
    dist_client_destroy(&c);
}

/* --max-queued 10 and a 200-item map: refusals are a few per round, not
 * thousands. */
static void test_small_max_queued(void **state)
{
    (void)state;
    dist_client_t *c = s_cluster("10");
    dist_batch_t *b = dist_batch_new();
    for (int i = 0; i < 200; i++)
        dist_batch_add(b, "i", i);
    dist_results_t *rs = NULL;
    dist_map_opts_t o = { .wait_ms = 60000 };
    assert_int_equal(dist_client_map_opts(c, "dist.echo", dist_batch_items(b), 200, &o, &rs), 0);
    for (size_t i = 0; i < 200; i++) {
        int64_t v = -1;
        assert_int_equal(dist_arg_int(dist_result_value(dist_results_at(rs, i)), 0, &v), 0);
        assert_int_equal(v, (int64_t)i);
    }
    dist_results_destroy(&rs);
    int64_t refused = s_counter(c, "refused", NULL);
    print_message("refused: %lld\n", (long long)refused);
    assert_true(refused >= 0 && refused <= 400);
    dist_batch_destroy(&b);
    dist_client_destroy(&c);
}

/* dist submit of a task whose worker has left: stderr names it. */
static void test_cli_warns_unserved(void **state)
{
    (void)state;
    dist_client_t *c = s_cluster(NULL);
    dist_client_destroy(&c);
    assert_int_equal(dt_stop(g.worker, 5000), 0);
    const char *argv[] = { DIST_CLI_BIN, "--master", g.endpoint, "submit", "--wait", "3000",
                           "dist.echo", "1", NULL };
    char *out = NULL, *err = NULL;
    int rc = dt_run(argv, NULL, "", &out, &err, 20000);
    assert_int_not_equal(rc, 0);
    if (!strstr(err, "no connected worker offers task dist.echo"))
        fail_msg("stderr: %s", err);
    free(out);
    free(err);
}

int main(void)
{
    unsetenv("DIST_MASTER");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_map_across_a_killed_master, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_future_across_a_killed_master, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_bye_then_a_new_master, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_small_max_queued, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_cli_warns_unserved, s_setup, s_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    zsys_shutdown();
    return rc;
}

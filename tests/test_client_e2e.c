/* test_client_e2e.c - the client library and the dist program against the
 * real dist-master and dist-worker of this tree (DIST_MASTER_BIN,
 * DIST_WORKER_BIN, DIST_CLI_BIN), on 127.0.0.1 with a port the master
 * picks. One master and one worker with two processes serve every test;
 * the group teardown stops them (SIGTERM, then SIGKILL) and checks that no
 * process is left. */
#include <dist.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto_internal.h"
#include "testutil.h"

static struct {
    pid_t master, worker;
    char log[64];
    char endpoint[64];
    dist_client_t *c;
} g;

/* Waits for "listening on tcp://..." in the master's log. */
static bool s_read_endpoint(void)
{
    int64_t end = dt_now_ms() + 10000;
    while (dt_now_ms() < end) {
        FILE *f = fopen(g.log, "r");
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
            char *at = strstr(line, "listening on tcp://127.0.0.1:");
            if (at) {
                at += strlen("listening on ");
                size_t n = strcspn(at, " \n,;)");
                snprintf(g.endpoint, sizeof g.endpoint, "%.*s", (int)n, at);
                fclose(f);
                return true;
            }
        }
        if (f)
            fclose(f);
        dt_sleep_ms(20);
    }
    return false;
}

static int s_workers(void)
{
    dist_result_t *st;
    if (dist_client_status(g.c, 2000, &st))
        return -1;
    const msgpack_object *w;
    size_t n = 0;
    if (dist__get_array(dist_result_value(st), "workers", &w, &n))
        n = 0;
    dist_result_destroy(&st);
    return (int)n;
}

static int s_group_setup(void **state)
{
    (void)state;
    snprintf(g.log, sizeof g.log, "/tmp/dist-e2e-master-%d.log", (int)getpid());
    const char *margv[] = { DIST_MASTER_BIN, "--bind", "tcp://127.0.0.1:0", "--log-level",
                            "info", NULL };
    dt_spawn_opts_t mo = { .in = { DT_IO_NULL }, .out = { DT_IO_FILE, g.log, NULL },
                           .err = { DT_IO_STDOUT }, .ready_text = "listening on" };
    g.master = dt_spawn(margv, &mo);
    assert_true(s_read_endpoint());
    const char *wargv[] = { DIST_WORKER_BIN, "--master", g.endpoint, "--procs", "2",
                            "--log-level", "warn", NULL };
    dt_spawn_opts_t wo = { .in = { DT_IO_NULL }, .out = { DT_IO_NULL }, .err = { DT_IO_NULL } };
    g.worker = dt_spawn(wargv, &wo);
    dist_client_opts_t co = { .master = g.endpoint, .name = "e2e" };
    g.c = dist_client_new(&co);
    assert_non_null(g.c);
    int64_t end = dt_now_ms() + 10000;
    while (s_workers() < 1 && dt_now_ms() < end)
        dt_sleep_ms(50);
    assert_int_equal(s_workers(), 1);
    return 0;
}

/* SIGTERM, then SIGKILL after 10 s. */
static void s_stop(pid_t *pid)
{
    if (*pid > 0)
        dt_stop(*pid, 10000);
    *pid = 0;
}

static int s_group_teardown(void **state)
{
    (void)state;
    dist_client_destroy(&g.c);
    s_stop(&g.worker);
    s_stop(&g.master);
    unlink(g.log);
    dt_kill_children();
    return 0;
}

static void test_submit_and_call(void **state)
{
    (void)state;
    dist_args_t *a = dist_args_new();
    dist_args_int(a, 1);
    dist_args_str(a, "two");
    size_t len;
    const void *args = dist_args_data(a, &len);
    dist_future_t *f = dist_client_submit(g.c, "dist.echo", args, len, 0);
    assert_non_null(f);
    dist_result_t *r;
    assert_int_equal(dist_future_get(f, 10000, &r), 0);
    size_t rlen;
    const void *data = dist_result_data(r, &rlen);
    assert_int_equal(rlen, len);
    assert_memory_equal(data, args, len);
    dist_future_destroy(&f);

    /* An unknown task: refused with the master's message. */
    assert_int_equal(dist_client_call(g.c, "no.such.task", args, len, 5000, &r), DIST_ENOENT);
    assert_non_null(strstr(dist_result_error(r), "no.such.task"));
    dist_result_destroy(&r);

    /* A task past its timeout: killed, retried, given up, and the message
     * says why. */
    dist_args_clear(a);
    dist_args_int(a, 3000);
    args = dist_args_data(a, &len);
    f = dist_client_submit(g.c, "dist.sleep", args, len, 100);
    assert_non_null(f);
    int rc = dist_future_get(f, 20000, &r);
    assert_true(rc == DIST_EGAVEUP || rc == DIST_ETIMEDOUT);
    assert_true(dist_future_ready(f));
    assert_non_null(dist_result_error(r));
    dist_future_destroy(&f);
    dist_args_destroy(&a);
}

static void test_maps(void **state)
{
    (void)state;
    enum { N = 20000 };
    uint8_t *buf = malloc(N * 6);
    dist_bytes_t *items = malloc(N * sizeof *items);
    for (uint32_t i = 0; i < N; i++) {
        uint8_t *p = buf + 6 * i; /* [i] as array of one uint32 */
        p[0] = 0x91;
        p[1] = 0xce;
        p[2] = (uint8_t)(i >> 24);
        p[3] = (uint8_t)(i >> 16);
        p[4] = (uint8_t)(i >> 8);
        p[5] = (uint8_t)i;
        items[i].data = p;
        items[i].len = 6;
    }
    dist_results_t *rs;
    assert_int_equal(dist_client_map(g.c, "dist.echo", items, N, 0, 60000, NULL, NULL, &rs), 0);
    for (size_t i = 0; i < N; i++) { /* the same value, packed as the worker packs it */
        uint64_t v = UINT64_MAX;
        assert_int_equal(dist_arg_uint(dist_result_value(dist_results_at(rs, i)), 0, &v), 0);
        assert_int_equal(v, i);
    }
    dist_results_destroy(&rs);
    free(items);
    free(buf);
}

static void test_queues_and_status(void **state)
{
    (void)state;
    assert_int_equal(dist_client_qput(g.c, "e2e.q", "hello", 5, 1000), 0);
    void *buf;
    size_t len;
    assert_int_equal(dist_client_qget(g.c, "e2e.q", &buf, &len, 1000), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(buf, "hello", 5);
    free(buf);
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_client_qget(g.c, "e2e.q", &buf, &len, 300), DIST_ETIMEDOUT);
    dt_assert_took(t0, 300);

    dist_result_t *st;
    assert_int_equal(dist_client_status(g.c, 5000, &st), 0);
    const msgpack_object *v = dist_result_value(st), *qs;
    size_t n;
    assert_int_equal(dist__get_array(v, "queues", &qs, &n), 0);
    bool echo = false;
    for (size_t i = 0; i < n; i++) {
        const char *name;
        size_t nl;
        echo |= !dist__get_str(&qs[i], "name", &name, &nl) && nl == 9 &&
                !memcmp(name, "dist.echo", 9);
    }
    assert_true(echo);
    dist_result_destroy(&st);
}

/* Runs dist with args and stdin; returns its exit status and output. */
static int s_dist(const char *const *argv, const char *input, char **out)
{
    dt_spawn_opts_t o = { .err = { DT_IO_NULL } };
    int rc = dt_run(argv, &o, input ? input : "", out, NULL, 30000);
    assert_int_not_equal(rc, DT_TIMEOUT);
    return rc;
}

static void test_dist_program(void **state)
{
    (void)state;
    char *out;
    const char *sub[] = { DIST_CLI_BIN, "--master", g.endpoint, "submit", "dist.echo", "1",
                          "\"x\"", "[2.5]", NULL };
    assert_int_equal(s_dist(sub, NULL, &out), 0);
    assert_string_equal(out, "[1,\"x\",[2.5]]\n");
    free(out);

    char in[2000], want[2000];
    size_t il = 0, wl = 0;
    for (int i = 0; i < 100; i++) {
        il += (size_t)snprintf(in + il, sizeof in - il, "[%d]\n", i);
        wl += (size_t)snprintf(want + wl, sizeof want - wl, "[%d]\n", i);
    }
    const char *map[] = { DIST_CLI_BIN, "--master", g.endpoint, "map", "dist.echo", NULL };
    assert_int_equal(s_dist(map, in, &out), 0);
    assert_string_equal(out, want);
    free(out);

    const char *st[] = { DIST_CLI_BIN, "--master", g.endpoint, "status", "--json", NULL };
    assert_int_equal(s_dist(st, NULL, &out), 0);
    json_error_t je;
    json_t *j = json_loads(out, 0, &je);
    assert_non_null(j);
    assert_int_equal(json_array_size(json_object_get(j, "workers")), 1);
    json_decref(j);
    free(out);
}

int main(void)
{
    unsetenv("DIST_MASTER");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_submit_and_call),
        cmocka_unit_test(test_maps),
        cmocka_unit_test(test_queues_and_status),
        cmocka_unit_test(test_dist_program),
    };
    int rc = cmocka_run_group_tests(tests, s_group_setup, s_group_teardown);
    zsys_shutdown();
    return rc;
}

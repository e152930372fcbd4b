/* test_cli.c - the `dist` program (DIST_CLI_BIN) against the fake master
 * of fake_master.h, running in a thread of this process on
 * tcp://127.0.0.1 with a free port: output, ordering, exit codes, usage
 * errors, no master. */
#include <dist.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_master.h"
#include "testutil.h"

typedef struct {
    int rc;
    char *out, *err;
} run_t;

static run_t s_run(const char *const *argv, const char *input)
{
    run_t r = { 0 };
    r.rc = dt_run(argv, NULL, input ? input : "", &r.out, &r.err, 30000);
    if (r.rc == DT_TIMEOUT)
        fail_msg("dist did not finish: stdout %s; stderr %s", r.out, r.err);
    return r;
}

static void s_free(run_t *r)
{
    free(r->out);
    free(r->err);
}

#define ARGV(...) ((const char *const[]){ DIST_CLI_BIN, __VA_ARGS__, NULL })

static void s_expect(run_t *r, int rc, const char *out, const char *err_part)
{
    if (r->rc != rc)
        fail_msg("exit %d, expected %d; stdout: %s; stderr: %s", r->rc, rc, r->out, r->err);
    if (out && strcmp(r->out, out) != 0)
        fail_msg("stdout '%s', expected '%s' (stderr: %s)", r->out, out, r->err);
    if (err_part && !strstr(r->err, err_part))
        fail_msg("stderr '%s' lacks '%s'", r->err, err_part);
}

static void test_submit(void **state)
{
    (void)state;
    fm_t *fm = fm_new(NULL);
    const char *ep = fm_endpoint(fm);
    run_t r = s_run(ARGV("--master", ep, "submit", "add", "2", "3"), NULL);
    s_expect(&r, 0, "5\n", NULL);
    s_free(&r);
    /* Every kind of JSON argument; a negative number is not an option;
     * options may follow the command. */
    r = s_run(ARGV("submit", "echo", "\"x\"", "[1,2]", "{\"a\":null}", "-2.5", "true",
                   "{\"$bin\":\"AAE=\"}", "--master", ep),
              NULL);
    s_expect(&r, 0, "[\"x\",[1,2],{\"a\":null},-2.5,true,{\"$bin\":\"AAE=\"}]\n", NULL);
    s_free(&r);
    /* --timeout is the task's own limit, sent to the master. */
    int before = fm_count(fm, DIST__CMD_SUBMIT);
    r = s_run(ARGV("--master", ep, "submit", "--timeout", "1500", "echo"), NULL);
    s_expect(&r, 0, "[]\n", NULL);
    s_free(&r);
    dist_wire_msg_t *m = fm_wait(fm, DIST__CMD_SUBMIT, before + 1, 1000);
    assert_non_null(m);
    const msgpack_object *tasks;
    size_t n;
    assert_int_equal(dist__get_array(dist_wire_msg_root(m), "tasks", &tasks, &n), 0);
    dist__task_t t;
    assert_int_equal(dist__parse_task(&tasks[0], false, &t), 0);
    assert_int_equal(t.timeout_ms, 1500);
    assert_int_equal(t.args_len, 1); /* [] */
    dist_wire_msg_destroy(&m);

    /* A failed task: its message on stderr, exit 1. */
    r = s_run(ARGV("--master", ep, "submit", "fail", "1"), NULL);
    s_expect(&r, 1, "", "fail: boom");
    s_free(&r);
    r = s_run(ARGV("--master", ep, "submit", "nosuch"), NULL);
    s_expect(&r, 1, "", "no worker has announced this task");
    s_free(&r);
    r = s_run(ARGV("--master", ep, "submit", "--wait", "300", "never"), NULL);
    s_expect(&r, 1, "", "no result within 300 ms");
    s_free(&r);

    /* Unsigned integers up to 2^64-1 go through exactly. */
    r = s_run(ARGV("--master", ep, "submit", "echo", "18446744073709551615", "9223372036854775808"),
              NULL);
    s_expect(&r, 0, "[18446744073709551615,9223372036854775808]\n", NULL);
    s_free(&r);
    r = s_run(ARGV("--master", ep, "submit", "echo", "18446744073709551616"), NULL);
    s_expect(&r, 2, "", "argument 1 is not valid JSON");
    s_free(&r);

    /* @FILE and @-: an argument too large for a command line. */
    char dir[] = "/tmp/dist-cli-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/arg.json", dir);
    size_t big = 1 << 20;
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputc('"', f);
    for (size_t i = 0; i < big; i++)
        fputc('a' + (int)(i % 26), f);
    fputs("\"\n", f);
    fclose(f);
    char at[80];
    snprintf(at, sizeof at, "@%s", path);
    r = s_run(ARGV("--master", ep, "submit", "echo", at, "@-", "3"), "{\"k\": [1, 2]}\n");
    s_expect(&r, 0, NULL, NULL);
    assert_int_equal(strlen(r.out), big + 4 + strlen("{\"k\":[1,2]},3]\n"));
    assert_memory_equal(r.out, "[\"abcdefghij", 12);
    assert_non_null(strstr(r.out, "\",{\"k\":[1,2]},3]\n"));
    s_free(&r);
    /* Bad @ arguments: a clear usage error, nothing submitted. */
    before = fm_count(fm, DIST__CMD_SUBMIT);
    char missing[80];
    snprintf(missing, sizeof missing, "@%s/nope.json", dir);
    r = s_run(ARGV("--master", ep, "submit", "echo", missing), NULL);
    s_expect(&r, 2, "", "cannot open");
    s_free(&r);
    r = s_run(ARGV("--master", ep, "submit", "echo", "@"), NULL);
    s_expect(&r, 2, "", "needs a file name");
    s_free(&r);
    r = s_run(ARGV("--master", ep, "submit", "echo", "@-", "@-"), "1");
    s_expect(&r, 2, "", "only once");
    s_free(&r);
    r = s_run(ARGV("--master", ep, "submit", "echo", "@-"), "[1,");
    s_expect(&r, 2, "", "stdin does not hold one JSON value");
    s_free(&r);
    assert_int_equal(fm_count(fm, DIST__CMD_SUBMIT), before);
    unlink(path);
    rmdir(dir);

    /* $DIST_MASTER when there is no --master. */
    setenv("DIST_MASTER", ep, 1);
    r = s_run(ARGV("submit", "add", "40", "2"), NULL);
    s_expect(&r, 0, "42\n", NULL);
    s_free(&r);
    unsetenv("DIST_MASTER");
    fm_destroy(&fm);
}

static void test_map(void **state)
{
    (void)state;
    fm_opts_t fo = { .shuffle = true, .max_batch = 13 };
    fm_t *fm = fm_new(&fo);
    const char *ep = fm_endpoint(fm);
    enum { N = 300 };
    char *in = malloc(N * 16), *want = malloc(N * 16);
    size_t ilen = 0, wlen = 0;
    for (int i = 0; i < N; i++) {
        ilen += (size_t)sprintf(in + ilen, i == 7 ? "\n  [%d] \n" : "[%d]\n", i);
        wlen += (size_t)sprintf(want + wlen, "[%d]\n", i);
    }
    /* In input order, although the master answers in random order. */
    run_t r = s_run(ARGV("--master", ep, "map", "echo"), in);
    s_expect(&r, 0, want, NULL);
    s_free(&r);

    /* --unordered: every index once, with its result. */
    r = s_run(ARGV("--master", ep, "map", "--unordered", "echo"), in);
    s_expect(&r, 0, NULL, NULL);
    char *seen = calloc(N, 1);
    int lines = 0;
    for (char *line = strtok(r.out, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        assert_non_null(j);
        json_int_t idx = json_integer_value(json_object_get(j, "index"));
        json_t *res = json_object_get(j, "result");
        assert_true(idx >= 0 && idx < N);
        assert_false(seen[idx]);
        seen[idx] = 1;
        assert_int_equal(json_integer_value(json_array_get(res, 0)), idx);
        json_decref(j);
    }
    assert_int_equal(lines, N);
    free(seen);
    s_free(&r);

    /* Failed items: {"error": ...} in their place, exit 1. */
    r = s_run(ARGV("--master", ep, "map", "fail"), "[1]\n[2]\n");
    s_expect(&r, 1, "{\"error\":\"fail: boom\"}\n{\"error\":\"fail: boom\"}\n", NULL);
    s_free(&r);
    r = s_run(ARGV("--master", ep, "map", "--unordered", "fail"), "[1]\n");
    s_expect(&r, 1, "{\"index\":0,\"error\":\"fail: boom\"}\n", NULL);
    s_free(&r);
    /* Nothing in, nothing out. */
    r = s_run(ARGV("--master", ep, "map", "echo"), "");
    s_expect(&r, 0, "", NULL);
    s_free(&r);

    /* A malformed line is named, and nothing is submitted. */
    int before = fm_count(fm, DIST__CMD_SUBMIT);
    r = s_run(ARGV("--master", ep, "map", "echo"), "[1]\n[2]\nnot json\n[4]\n");
    s_expect(&r, 2, "", "line 3");
    s_free(&r);
    r = s_run(ARGV("--master", ep, "map", "echo"), "[1]\n5\n");
    s_expect(&r, 2, "", "line 2: expected a JSON array");
    s_free(&r);
    assert_int_equal(fm_count(fm, DIST__CMD_SUBMIT), before);
    free(in);
    free(want);
    fm_destroy(&fm);
}

static void test_status(void **state)
{
    (void)state;
    fm_t *fm = fm_new(NULL);
    const char *ep = fm_endpoint(fm);
    run_t r = s_run(ARGV("--master", ep, "status", "--json"), NULL);
    s_expect(&r, 0, NULL, NULL);
    json_error_t je;
    json_t *j = json_loads(r.out, 0, &je);
    if (!j)
        fail_msg("not JSON: %s: %s", je.text, r.out);
    assert_null(json_object_get(j, "req"));
    json_t *w = json_array_get(json_object_get(j, "workers"), 0);
    assert_string_equal(json_string_value(json_object_get(w, "name")), "w1");
    assert_int_equal(json_integer_value(json_object_get(j, "clients")), 1);
    assert_true(json_real_value(json_object_get(json_object_get(j, "rates"), "completed_per_s")) ==
                1.25);
    assert_true(json_is_null(json_object_get(json_object_get(j, "master"), "store")));
    json_decref(j);
    s_free(&r);

    r = s_run(ARGV("--master", ep, "status"), NULL);
    s_expect(&r, 0, NULL, NULL);
    const char *want[] = { "workers (1)", "NAME", "LAST SEEN", "w1", "hostA", "s ago",
                           "queues (1)", "IN FLIGHT", "echo", "task", "submitted 20",
                           "completed 1.25/s", "up 1h02m", "in memory" };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!strstr(r.out, want[i]))
            fail_msg("status lacks '%s':\n%s", want[i], r.out);
    s_free(&r);
    fm_destroy(&fm);
}

static void test_usage_errors_and_help(void **state)
{
    (void)state;
    const char *const *bad[] = {
        ARGV("--bogus"),
        ARGV("frobnicate"),
        ARGV("submit"),
        ARGV("submit", "echo", "hello"),
        ARGV("submit", "bad name"),
        ARGV("--connect-timeout", "abc", "status"),
        ARGV("--connect-timeout", "0", "status"),
        ARGV("--log-level", "loud", "status"),
        ARGV("submit", "--timeout", "-5", "echo"),
        ARGV("status", "--unordered"),
        ARGV("map"),
        ARGV("map", "echo", "1"),
        ARGV("status", "extra"),
        ARGV("--master"),
        ARGV("--json=yes", "status"),
        ARGV("help", "frobnicate"),
        /* task control: values out of range, options of other commands */
        ARGV("submit", "--priority", "10", "echo"),
        ARGV("submit", "--priority", "x", "echo"),
        ARGV("map", "--priority", "-1", "echo"),
        ARGV("submit", "--delay", "-5", "echo"),
        ARGV("submit", "--delay", "2592000001", "echo"),
        ARGV("submit", "--delay", "5", "--at", "2026-12-08T10:00:00Z", "echo"),
        ARGV("submit", "--at", "tomorrow", "echo"),
        ARGV("submit", "--at", "2026-12-08T10:00:00", "echo"),
        ARGV("submit", "--at", "2026-02-30T10:00:00Z", "echo"),
        ARGV("submit", "--at", "2026-12-08T10:00:00.Z", "echo"),
        ARGV("submit", "--max-attempts", "0", "echo"),
        ARGV("submit", "--max-attempts", "1001", "echo"),
        ARGV("submit", "--backoff", "", "echo"),
        ARGV("submit", "--backoff", "100,0.5", "echo"),
        ARGV("submit", "--backoff", "100,2,0", "echo"),
        ARGV("submit", "--backoff", "-1", "echo"),
        ARGV("submit", "--id", "has space", "echo"),
        ARGV("submit", "--id", "", "echo"),
        ARGV("map", "--id", "x", "echo"),
        ARGV("map", "--no-wait", "echo"),
        ARGV("status", "--priority", "1"),
        ARGV("status", "--task", "bad id"),
        ARGV("result"),
        ARGV("result", "a", "b"),
        ARGV("cancel"),
        ARGV("cancel", "ok-id", "bad id"),
        ARGV("retry"),
        ARGV("failed", "extra"),
        ARGV("cancel", "--json", "x"),
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        run_t r = s_run(bad[i], NULL);
        if (r.rc != 2 || !strstr(r.err, "dist: ") || !strstr(r.err, "--help"))
            fail_msg("case %zu: exit %d, stderr: %s", i, r.rc, r.err);
        /* One line of error, one line of hint (the JSON hint adds one). */
        s_free(&r);
    }
    run_t r = s_run(ARGV("submit", "echo", "hello"), NULL);
    s_expect(&r, 2, "", "'\"hello\"'");
    s_free(&r);
    r = s_run((const char *const[]){ DIST_CLI_BIN, NULL }, NULL);
    s_expect(&r, 2, "", "no command");
    s_free(&r);

    const char *const *help[] = { ARGV("--help"), ARGV("help"), ARGV("-h") };
    for (size_t i = 0; i < 3; i++) {
        r = s_run(help[i], NULL);
        s_expect(&r, 0, NULL, NULL);
        assert_non_null(strstr(r.out, "Usage: dist [OPTIONS] COMMAND"));
        assert_non_null(strstr(r.out, "Exit status"));
        assert_non_null(strstr(r.out, "DIST_MASTER"));
        s_free(&r);
    }
    const char *const *sub[] = { ARGV("help", "submit"), ARGV("submit", "--help"),
                                        ARGV("map", "-h"),      ARGV("help", "status"),
                                        ARGV("help", "result"), ARGV("cancel", "--help"),
                                        ARGV("help", "failed"), ARGV("help", "retry") };
    static const char *const heads[] = { "Usage: dist submit", "Usage: dist submit",
                                         "Usage: dist map",    "Usage: dist status",
                                         "Usage: dist result", "Usage: dist cancel",
                                         "Usage: dist failed", "Usage: dist retry" };
    for (size_t i = 0; i < 8; i++) {
        r = s_run(sub[i], NULL);
        s_expect(&r, 0, NULL, NULL);
        assert_non_null(strstr(r.out, heads[i]));
        assert_non_null(strstr(r.out, "(default:"));
        s_free(&r);
    }
    r = s_run(ARGV("--version"), NULL);
    s_expect(&r, 0, "dist " DIST_VERSION_STRING " (libdist " DIST_VERSION_STRING ")\n", NULL);
    s_free(&r);
}

static void test_no_master(void **state)
{
    (void)state;
    fm_opts_t fo = { .silent = true };
    fm_t *fm = fm_new(&fo);
    char want[128];
    snprintf(want, sizeof want, "dist: no master answered at %s within 500 ms\n", fm_endpoint(fm));
    static const char *const cmds[][3] = { { "submit", "echo", NULL },
                                           { "map", "echo", NULL },
                                           { "status", NULL, NULL } };
    for (size_t i = 0; i < 3; i++) {
        const char *argv[] = { DIST_CLI_BIN, "--connect-timeout", "500", "--master",
                               fm_endpoint(fm), cmds[i][0], cmds[i][1], NULL };
        run_t r = s_run(argv, "[1]\n");
        s_expect(&r, 3, "", NULL);
        if (strcmp(r.err, want) != 0)
            fail_msg("stderr '%s', expected '%s'", r.err, want);
        s_free(&r);
    }
    fm_destroy(&fm);
    /* One key without the other is refused, not ignored (CURVE itself is
     * tested in test_security). */
    setenv("DIST_KEY", "/nonexistent.key", 1);
    run_t r = s_run(ARGV("status"), NULL);
    s_expect(&r, 2, "", "CURVE needs both keys");
    s_free(&r);
    unsetenv("DIST_KEY");
}

int main(void)
{
    unsetenv("DIST_MASTER");
    unsetenv("DIST_KEY");
    unsetenv("DIST_SERVER_KEY");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_submit, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_map, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_status, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_usage_errors_and_help, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_no_master, dt_setup, dt_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    zsys_shutdown();
    return rc;
}

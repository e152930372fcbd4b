/* test_testutil.c - the program helper of testutil.h (dt_spawn and its
 * friends), with /bin/sh as the program: streams, environment, readiness,
 * stop with escalation to SIGKILL, and the cleanup that leaves nothing
 * behind. The other tests rely on it to never leave a process running. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include "testutil.h"

#define SH(script) ((const char *const[]){ "/bin/sh", "-c", script, NULL })

static void test_run_streams_and_status(void **state)
{
    (void)state;
    char *out = NULL, *err = NULL;
    /* stdin in, stdout and stderr apart, the exit code back. */
    int rc = dt_run(SH("tr a-z A-Z; echo oops >&2; exit 3"), NULL, "hello\n", &out, &err, 10000);
    assert_int_equal(rc, 3);
    assert_string_equal(out, "HELLO\n");
    assert_string_equal(err, "oops\n");
    free(out);
    free(err);
    /* No input: stdin is empty; nothing written: "". */
    rc = dt_run(SH("cat; exit 0"), NULL, NULL, &out, &err, 10000);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "");
    assert_string_equal(err, "");
    free(out);
    free(err);
    /* More output than a pipe holds, and more input. */
    enum { BIG = 300000 };
    char *in = malloc(BIG + 1);
    assert_non_null(in);
    memset(in, 'x', BIG);
    in[BIG] = 0;
    rc = dt_run(SH("cat"), NULL, in, &out, NULL, 10000);
    assert_int_equal(rc, 0);
    assert_string_equal(out, in);
    free(out);
    free(in);
    /* Killed by a signal: 128 + the signal. */
    assert_int_equal(dt_run(SH("kill -USR1 $$"), NULL, NULL, NULL, NULL, 10000), 128 + SIGUSR1);
    /* A name without a slash is looked up in PATH. */
    const char *const path_argv[] = { "true", NULL };
    assert_int_equal(dt_run(path_argv, NULL, NULL, NULL, NULL, 10000), 0);
    assert_int_equal(dt_children(), 0);
}

static void test_run_timeout_kills(void **state)
{
    (void)state;
    char *out = NULL;
    int64_t t0 = dt_now_ms();
    int rc = dt_run(SH("echo started; exec sleep 30"), NULL, NULL, &out, NULL, 300);
    assert_int_equal(rc, DT_TIMEOUT);
    assert_true(dt_now_ms() - t0 < 5000);
    assert_string_equal(out, "started\n");
    free(out);
    assert_int_equal(dt_children(), 0);
}

static void test_environment(void **state)
{
    (void)state;
    setenv("DT_KEEP", "kept", 1);
    setenv("DT_GONE", "present", 1);
    setenv("DT_SET", "old", 1);
    dt_spawn_opts_t o = { .env = (const char *const[]){ "DT_GONE", "DT_SET=new", "DT_ADD=added",
                                                        NULL } };
    char *out = NULL;
    int rc = dt_run(SH("echo \"$DT_KEEP ${DT_GONE-unset} $DT_SET $DT_ADD\""), &o, NULL, &out, NULL,
                    10000);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "kept unset new added\n");
    free(out);
    /* The test's own environment is untouched. */
    assert_string_equal(getenv("DT_GONE"), "present");
    assert_string_equal(getenv("DT_SET"), "old");
    unsetenv("DT_KEEP");
    unsetenv("DT_GONE");
    unsetenv("DT_SET");
}

static void test_files_and_ready_text(void **state)
{
    (void)state;
    char dir[] = "/tmp/dt_testutil_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char log[128], in[128];
    snprintf(log, sizeof log, "%s/log", dir);
    snprintf(in, sizeof in, "%s/in", dir);
    FILE *f = fopen(in, "w");
    assert_non_null(f);
    fputs("from a file\n", f);
    fclose(f);
    /* Ready only once the line is in the log, written after a delay. */
    dt_spawn_opts_t o = { .in = { DT_IO_FILE, in, NULL }, .out = { DT_IO_FILE, log, NULL },
                          .err = { DT_IO_STDOUT }, .ready_text = "ready now" };
    pid_t pid = dt_spawn(SH("sleep 0.3; cat; echo ready now >&2; exec sleep 30"), &o);
    assert_true(dt_wait_text(log, "from a file", 0));
    assert_true(dt_wait_text(log, "ready now", 0));
    assert_int_equal(dt_wait(pid, 0), DT_TIMEOUT); /* still running */
    assert_int_equal(dt_stop(pid, 5000), 128 + SIGTERM);
    /* Appending keeps what was there. */
    o = (dt_spawn_opts_t){ .out = { DT_IO_APPEND, log, NULL } };
    assert_int_equal(dt_wait(dt_spawn(SH("echo second"), &o), 10000), 0);
    assert_true(dt_wait_text(log, "from a file", 0));
    assert_true(dt_wait_text(log, "second", 0));
    assert_false(dt_wait_text(log, "never written", 50));
    dt_rm_tree(dir);
}

static void test_ready_port(void **state)
{
    (void)state;
    int port = dt_free_port();
    assert_false(dt_wait_port(port, 0));
    /* A listener that appears late: this process binds it in a child. */
    char script[256];
    snprintf(script, sizeof script,
             "sleep 0.3; exec python3 -c 'import socket,time; s=socket.socket(); "
             "s.bind((\"127.0.0.1\", %d)); s.listen(); time.sleep(30)'",
             port);
    if (access("/usr/bin/python3", X_OK) != 0)
        skip();
    int64_t t0 = dt_now_ms();
    pid_t pid = dt_spawn(SH(script), &(dt_spawn_opts_t){ .ready_port = port });
    assert_true(dt_now_ms() - t0 >= 250);
    assert_true(dt_wait_port(port, 0));
    assert_int_equal(dt_stop(pid, 5000), 128 + SIGTERM);
}

static void test_stop_escalates_and_signal_only_ours(void **state)
{
    (void)state;
    /* SIGTERM ignored: SIGKILL after the grace period. */
    pid_t pid = dt_spawn(SH("trap '' TERM; echo up; while :; do sleep 0.05; done"),
                         &(dt_spawn_opts_t){ .out = { DT_IO_NULL } });
    dt_sleep_ms(200); /* let the shell install its trap */
    int64_t t0 = dt_now_ms();
    assert_int_equal(dt_stop(pid, 300), 128 + SIGKILL);
    assert_true(dt_now_ms() - t0 >= 290);
    /* Reaped: no longer ours, so never signalled again. */
    assert_int_equal(dt_signal(pid, SIGTERM), -1);
    assert_int_equal(dt_signal(getpid(), 0), -1); /* not a program of ours */
    /* SIGSTOP then SIGCONT through dt_signal. */
    int fd = -1;
    dt_spawn_opts_t piped = { .in = { DT_IO_PIPE, NULL, &fd } };
    pid = dt_spawn(SH("read x; test \"$x\" = y"), &piped);
    assert_int_equal(dt_signal(pid, SIGSTOP), 0);
    assert_int_equal(dt_signal(pid, SIGCONT), 0);
    assert_int_equal(write(fd, "y\n", 2), 2);
    close(fd);
    assert_int_equal(dt_wait(pid, 10000), 0);
}

static void test_teardown_kills_what_is_left(void **state)
{
    (void)state;
    /* Three programs left running, one of them stopped: the teardown
     * (dt_stop_all) kills and reaps all of them. */
    pid_t a = dt_spawn(SH("exec sleep 30"), NULL);
    pid_t b = dt_spawn(SH("exec sleep 30"), NULL);
    pid_t c = dt_spawn(SH("trap '' TERM; exec sleep 30"), NULL);
    dt_signal(b, SIGSTOP);
    assert_int_equal(dt_children(), 3);
    assert_int_equal(dt_stop_all(), 3);
    assert_int_equal(dt_children(), 0);
    assert_int_equal(dt_signal(a, 0), -1);
    assert_int_equal(dt_signal(c, 0), -1);
    /* And dt_teardown does the same for a test that forgot one. */
    dt_spawn(SH("exec sleep 30"), NULL);
    assert_int_equal(dt_teardown(NULL), 0);
    assert_int_equal(dt_children(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_run_streams_and_status, dt_teardown),
        cmocka_unit_test_teardown(test_run_timeout_kills, dt_teardown),
        cmocka_unit_test_teardown(test_environment, dt_teardown),
        cmocka_unit_test_teardown(test_files_and_ready_text, dt_teardown),
        cmocka_unit_test_teardown(test_ready_port, dt_teardown),
        cmocka_unit_test_teardown(test_stop_escalates_and_signal_only_ours, dt_teardown),
        cmocka_unit_test_teardown(test_teardown_kills_what_is_left, dt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_subprocess.c - dist/subprocess.h: argv and shell, environment and
 * directory, every stdio mode, exec failures reported by the call itself,
 * communicate without deadlock (16 MiB in and out through cat, 16 MiB on
 * stderr before stdin is read), timeouts that leave the child running and
 * can be continued, signals and return codes, the helpers, and no leaked
 * descriptors. Only local programs from coreutils and /bin/sh are run. */
#include <dist.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#define MIB16 ((size_t)16 << 20)

static char *s_pattern(size_t n)
{
    char *b = malloc(n);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = (char)('a' + (i * 7 + i / 4096) % 26);
    return b;
}

/* A scratch file path unique to this run. */
static const char *s_tmp(const char *tag)
{
    static char buf[300];
    snprintf(buf, sizeof buf, "/tmp%s", dt_unique_name("dist_test_subprocess", tag));
    return buf;
}

/* ---- starting ----------------------------------------------------------- */

static void test_argv_without_shell_and_with_shell(void **state)
{
    (void)state;
    char *out;
    size_t n;
    /* No shell: $HOME and ; are plain arguments. */
    const char *echo[] = { "echo", "$HOME;", "x", NULL };
    assert_int_equal(dist_check_output(echo, NULL, NULL, 0, 10000, &out, &n, NULL), 0);
    assert_string_equal(out, "$HOME; x\n");
    assert_int_equal(n, 9);
    free(out);

    /* Shell: argv[0] is the command line, argv[1] is $0, like Python. */
    dist_subprocess_opts_t o = { .shell = true, .err = { DIST_STDIO_STDOUT } };
    const char *sh[] = { "echo $0-$1; echo oops >&2", "zero", "one", NULL };
    assert_int_equal(dist_check_output(sh, &o, NULL, 0, 10000, &out, &n, NULL), 0);
    assert_string_equal(out, "zero-one\noops\n");
    free(out);
}

static void test_env_cwd_and_session(void **state)
{
    (void)state;
    const char *env[] = { "FOO=bar baz", NULL };
    dist_subprocess_opts_t o = { .shell = true, .env = env, .cwd = "/tmp" };
    const char *argv[] = { "echo \"$FOO\"; pwd; echo \"${HOME-unset}\"", NULL };
    char *out;
    size_t n;
    assert_int_equal(dist_check_output(argv, &o, NULL, 0, 10000, &out, &n, NULL), 0);
    assert_string_equal(out, "bar baz\n/tmp\nunset\n");
    free(out);

    /* new_session: the child leads its own session (field 6 of stat). */
    dist_subprocess_opts_t s = { .new_session = true, .out = { DIST_STDIO_PIPE } };
    const char *stat_argv[] = { "/bin/sh", "-c", "cut -d' ' -f6 /proc/$$/stat", NULL };
    dist_subprocess_t *p = dist_subprocess_new(stat_argv, &s);
    assert_non_null(p);
    assert_int_equal(dist_subprocess_communicate(p, NULL, 0, &out, &n, NULL, NULL, 10000), 0);
    assert_int_equal(atoi(out), dist_subprocess_pid(p));
    free(out);
    dist_subprocess_destroy(&p);
}

static void test_exec_failures_are_reported_by_new(void **state)
{
    (void)state;
    struct {
        const char *prog;
        int err;
    } cases[] = { { "/nonexistent/dist-prog", ENOENT }, { "dist-no-such-program-xyz", ENOENT } };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *argv[] = { cases[i].prog, NULL };
        errno = 0;
        assert_null(dist_subprocess_new(argv, NULL));
        assert_int_equal(errno, cases[i].err);
    }
    /* A file that is not executable, and one that is but is no program. */
    const char *path = s_tmp("notexec");
    FILE *f = fopen(path, "w");
    fputs("just text\n", f);
    fclose(f);
    chmod(path, 0644);
    const char *argv[] = { path, NULL };
    errno = 0;
    assert_null(dist_subprocess_new(argv, NULL));
    assert_int_equal(errno, EACCES);
    chmod(path, 0755);
    errno = 0;
    assert_null(dist_subprocess_new(argv, NULL));
    assert_int_equal(errno, ENOEXEC);
    unlink(path);
    /* A working directory that does not exist. */
    const char *t[] = { "true", NULL };
    dist_subprocess_opts_t o = { .cwd = "/nonexistent/dir" };
    errno = 0;
    assert_null(dist_subprocess_new(t, &o));
    assert_int_equal(errno, ENOENT);
    /* Helpers pass the error on. */
    assert_int_equal(dist_call((const char *[]){ "/nonexistent/x", NULL }, NULL, 1000, NULL),
                     -ENOENT);
    assert_int_equal(dt_children(), 0); /* no child exited with 127 behind us */
}

static void test_bad_arguments(void **state)
{
    (void)state;
    const char *t[] = { "true", NULL };
    const char *empty[] = { NULL };
    const char *blank[] = { "", NULL };
    errno = 0;
    assert_null(dist_subprocess_new(NULL, NULL));
    assert_int_equal(errno, EINVAL);
    assert_null(dist_subprocess_new(empty, NULL));
    assert_null(dist_subprocess_new(blank, NULL));
    dist_subprocess_opts_t o = { .out = { DIST_STDIO_STDOUT } };
    assert_null(dist_subprocess_new(t, &o));
    o = (dist_subprocess_opts_t){ .in = { DIST_STDIO_FD, -1 } };
    assert_null(dist_subprocess_new(t, &o));
    o = (dist_subprocess_opts_t){ .err = { (dist_stdio_mode_t)42 } };
    assert_null(dist_subprocess_new(t, &o));
    assert_int_equal(errno, EINVAL);
    /* Pipes nobody would read, and check_output's own stream. */
    o = (dist_subprocess_opts_t){ .out = { DIST_STDIO_PIPE } };
    assert_int_equal(dist_call(t, &o, 1000, NULL), DIST_EINVAL);
    assert_int_equal(dist_check_call(t, &o, 1000, NULL), DIST_EINVAL);
    char *out;
    assert_int_equal(dist_check_output(t, &o, NULL, 0, 1000, &out, NULL, NULL), DIST_EINVAL);
    assert_null(out);
    o = (dist_subprocess_opts_t){ .in = { DIST_STDIO_DEVNULL } };
    assert_int_equal(dist_check_output(t, &o, "x", 1, 1000, &out, NULL, NULL), DIST_EINVAL);
    /* Input for a child whose stdin is not a pipe. */
    dist_subprocess_t *p = dist_subprocess_new(t, NULL);
    assert_int_equal(dist_subprocess_communicate(p, "x", 1, NULL, NULL, NULL, NULL, 1000),
                     DIST_EINVAL);
    assert_int_equal(dist_subprocess_communicate(p, NULL, 5, NULL, NULL, NULL, NULL, 1000),
                     DIST_EINVAL);
    dist_subprocess_destroy(&p);
    dist_subprocess_destroy(&p);
    assert_null(p);
}

/* ---- stdio modes -------------------------------------------------------- */

static void test_devnull_and_given_descriptors(void **state)
{
    (void)state;
    char *out, *err;
    size_t n;
    /* stdin from /dev/null: cat ends at once; stdout to /dev/null. */
    dist_subprocess_opts_t o = { .in = { DIST_STDIO_DEVNULL }, .out = { DIST_STDIO_PIPE } };
    dist_subprocess_t *p = dist_subprocess_new((const char *[]){ "cat", NULL }, &o);
    assert_int_equal(dist_subprocess_stdin_fd(p), -1);
    assert_true(dist_subprocess_stdout_fd(p) >= 0);
    assert_int_equal(dist_subprocess_communicate(p, NULL, 0, &out, &n, &err, NULL, 10000), 0);
    assert_string_equal(out, "");
    assert_int_equal(n, 0);
    assert_null(err); /* stderr was not a pipe */
    free(out);
    assert_int_equal(dist_subprocess_returncode(p), 0);
    dist_subprocess_destroy(&p);

    o = (dist_subprocess_opts_t){ .out = { DIST_STDIO_DEVNULL } };
    assert_int_equal(dist_check_call((const char *[]){ "echo", "hidden", NULL }, &o, 10000, NULL), 0);

    /* stdout into a file given by descriptor (close-on-exec: it must still
     * reach the child), stdin from a pipe's read end. */
    const char *path = s_tmp("out");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int pfd[2];
    assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
    assert_int_equal(write(pfd[1], "via fd\n", 7), 7);
    close(pfd[1]);
    o = (dist_subprocess_opts_t){ .in = { DIST_STDIO_FD, pfd[0] }, .out = { DIST_STDIO_FD, fd } };
    assert_int_equal(dist_check_call((const char *[]){ "cat", NULL }, &o, 10000, NULL), 0);
    close(fd);
    close(pfd[0]);
    FILE *f = fopen(path, "r");
    char line[32] = { 0 };
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    unlink(path);
    assert_string_equal(line, "via fd\n");
}

/* The parent started with stdin closed: the first pipe end created (the
 * child's end of its stdin pipe) gets number 0, and each stream must still
 * end up in the right place. */
static void test_parent_with_closed_stdin(void **state)
{
    (void)state;
    int saved = fcntl(0, F_DUPFD_CLOEXEC, 10);
    assert_true(saved >= 0);
    close(0);
    dist_subprocess_opts_t o = { .in = { DIST_STDIO_PIPE }, .out = { DIST_STDIO_PIPE },
                                 .err = { DIST_STDIO_PIPE } };
    dist_subprocess_t *p =
        dist_subprocess_new((const char *[]){ "/bin/sh", "-c", "cat; echo e >&2", NULL }, &o);
    char *out = NULL, *err = NULL;
    int r = p ? dist_subprocess_communicate(p, "abc", 3, &out, NULL, &err, NULL, 10000) : -1;
    dup2(saved, 0);
    close(saved);
    assert_non_null(p);
    assert_int_equal(r, 0);
    assert_string_equal(out, "abc");
    assert_string_equal(err, "e\n");
    free(out);
    free(err);
    dist_subprocess_destroy(&p);
}

/* ---- communicate -------------------------------------------------------- */

static void test_communicate_16mib_through_cat(void **state)
{
    (void)state;
    char *in = s_pattern(MIB16);
    dist_subprocess_opts_t o = { .in = { DIST_STDIO_PIPE }, .out = { DIST_STDIO_PIPE } };
    dist_subprocess_t *p = dist_subprocess_new((const char *[]){ "cat", NULL }, &o);
    assert_non_null(p);
    char *out;
    size_t n;
    assert_int_equal(dist_subprocess_communicate(p, in, MIB16, &out, &n, NULL, NULL, 60000), 0);
    assert_int_equal(n, MIB16);
    assert_memory_equal(out, in, MIB16);
    assert_int_equal(dist_subprocess_returncode(p), 0);
    /* A later call hands nothing more over. */
    free(out);
    assert_int_equal(dist_subprocess_communicate(p, NULL, 0, &out, &n, NULL, NULL, 1000), 0);
    assert_null(out);
    dist_subprocess_destroy(&p);
    free(in);
}

static void test_communicate_16mib_stderr_before_stdin(void **state)
{
    (void)state;
    char *in = s_pattern(MIB16);
    dist_subprocess_opts_t o = { .in = { DIST_STDIO_PIPE }, .out = { DIST_STDIO_PIPE },
                                 .err = { DIST_STDIO_PIPE } };
    const char *argv[] = { "/bin/sh", "-c", "head -c 16777216 /dev/zero >&2; cat", NULL };
    dist_subprocess_t *p = dist_subprocess_new(argv, &o);
    assert_non_null(p);
    char *out, *err;
    size_t n, en;
    assert_int_equal(dist_subprocess_communicate(p, in, MIB16, &out, &n, &err, &en, 60000), 0);
    assert_int_equal(n, MIB16);
    assert_memory_equal(out, in, MIB16);
    assert_int_equal(en, MIB16);
    for (size_t i = 0; i < en; i += 4093)
        assert_int_equal(err[i], 0);
    assert_int_equal(dist_subprocess_returncode(p), 0);
    free(out);
    free(err);
    dist_subprocess_destroy(&p);
    free(in);
}

static void test_communicate_timeout_leaves_child_running(void **state)
{
    (void)state;
    dist_subprocess_opts_t o = { .out = { DIST_STDIO_PIPE } };
    dist_subprocess_t *p = dist_subprocess_new((const char *[]){ "sleep", "30", NULL }, &o);
    char *out = (char *)"untouched";
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_subprocess_communicate(p, NULL, 0, &out, NULL, NULL, NULL, 300),
                     DIST_ETIMEDOUT);
    dt_assert_took(t0, 300);
    assert_null(out);
    assert_int_equal(dist_subprocess_poll(p), 0); /* still running */
    assert_int_equal(dist_subprocess_returncode(p), DIST_EXITCODE_NONE);
    assert_int_equal(dist_subprocess_kill(p), 0);
    assert_int_equal(dist_subprocess_communicate(p, NULL, 0, &out, NULL, NULL, NULL, 10000), 0);
    assert_string_equal(out, "");
    free(out);
    assert_int_equal(dist_subprocess_returncode(p), -SIGKILL);
    dist_subprocess_destroy(&p);
}

static void test_communicate_continues_after_timeout(void **state)
{
    (void)state;
    /* Output collected before the timeout is kept. */
    dist_subprocess_opts_t o = { .out = { DIST_STDIO_PIPE } };
    const char *argv[] = { "/bin/sh", "-c", "echo first; sleep 0.5; echo second", NULL };
    dist_subprocess_t *p = dist_subprocess_new(argv, &o);
    char *out;
    size_t n;
    assert_int_equal(dist_subprocess_communicate(p, NULL, 0, &out, &n, NULL, NULL, 150),
                     DIST_ETIMEDOUT);
    assert_int_equal(dist_subprocess_communicate(p, NULL, 0, &out, &n, NULL, NULL, 10000), 0);
    assert_string_equal(out, "first\nsecond\n");
    free(out);
    dist_subprocess_destroy(&p);

    /* Input: the same buffer again continues where writing stopped. */
    size_t len = (size_t)1 << 20;
    char *in = s_pattern(len);
    o = (dist_subprocess_opts_t){ .in = { DIST_STDIO_PIPE }, .out = { DIST_STDIO_PIPE } };
    const char *slow_cat[] = { "/bin/sh", "-c", "sleep 0.3; cat", NULL };
    p = dist_subprocess_new(slow_cat, &o);
    assert_int_equal(dist_subprocess_communicate(p, in, len, &out, &n, NULL, NULL, 100),
                     DIST_ETIMEDOUT);
    assert_int_equal(dist_subprocess_communicate(p, in, 1, &out, &n, NULL, NULL, 100), DIST_EINVAL);
    assert_int_equal(dist_subprocess_communicate(p, in, len, &out, &n, NULL, NULL, 30000), 0);
    assert_int_equal(n, len);
    assert_memory_equal(out, in, len);
    free(out);
    dist_subprocess_destroy(&p);
    free(in);
}

static void test_child_that_ignores_its_input(void **state)
{
    (void)state;
    /* `true` never reads: the write fails with EPIPE, which is not an error
     * and must not kill us with SIGPIPE (default disposition here). */
    size_t len = (size_t)4 << 20;
    char *in = s_pattern(len);
    dist_subprocess_opts_t o = { .in = { DIST_STDIO_PIPE } };
    for (int i = 0; i < 3; i++) {
        dist_subprocess_t *p = dist_subprocess_new((const char *[]){ "true", NULL }, &o);
        assert_int_equal(dist_subprocess_communicate(p, in, len, NULL, NULL, NULL, NULL, 10000), 0);
        assert_int_equal(dist_subprocess_returncode(p), 0);
        dist_subprocess_destroy(&p);
    }
    sigset_t pending;
    sigpending(&pending);
    assert_false(sigismember(&pending, SIGPIPE));
    free(in);
}

/* ---- waiting, signals, return codes ------------------------------------- */

static void test_wait_poll_signals_returncode(void **state)
{
    (void)state;
    dist_subprocess_t *p = dist_subprocess_new((const char *[]){ "sleep", "30", NULL }, NULL);
    assert_non_null(p);
    assert_true(dist_subprocess_pid(p) > 0);
    assert_int_equal(dist_subprocess_poll(p), 0);
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_subprocess_wait(p, 200), DIST_ETIMEDOUT);
    dt_assert_took(t0, 200);
    assert_int_equal(dist_subprocess_terminate(p), 0);
    assert_int_equal(dist_subprocess_wait(p, 10000), 0);
    assert_int_equal(dist_subprocess_returncode(p), -SIGTERM);
    assert_int_equal(dist_subprocess_poll(p), 1);
    assert_int_equal(dist_subprocess_kill(p), 0); /* ended: nothing sent */
    assert_int_equal(dist_subprocess_wait(p, 0), 0);
    dist_subprocess_destroy(&p);

    p = dist_subprocess_new((const char *[]){ "/bin/sh", "-c", "exit 3", NULL }, NULL);
    assert_int_equal(dist_subprocess_wait(p, DIST_FOREVER), 0);
    assert_int_equal(dist_subprocess_returncode(p), 3);
    dist_subprocess_destroy(&p);

    p = dist_subprocess_new((const char *[]){ "sleep", "30", NULL }, NULL);
    assert_int_equal(dist_subprocess_send_signal(p, SIGUSR1), 0);
    assert_int_equal(dist_subprocess_wait(p, 10000), 0);
    assert_int_equal(dist_subprocess_returncode(p), -SIGUSR1);
    dist_subprocess_destroy(&p);
}

static void test_destroy_closes_pipes_and_reaps(void **state)
{
    (void)state;
    /* cat waits on stdin: destroy closes it, cat ends, destroy returns. */
    dist_subprocess_opts_t o = { .in = { DIST_STDIO_PIPE }, .out = { DIST_STDIO_PIPE } };
    dist_subprocess_t *p = dist_subprocess_new((const char *[]){ "cat", NULL }, &o);
    assert_int_equal(write(dist_subprocess_stdin_fd(p), "x", 1), 1);
    int64_t t0 = dt_now_ms();
    dist_subprocess_destroy(&p);
    assert_null(p);
    assert_true(dt_now_ms() - t0 < 5000);
    assert_int_equal(dt_children(), 0);

    /* close_stdin gives the child its end of file. */
    p = dist_subprocess_new((const char *[]){ "cat", NULL }, &o);
    assert_int_equal(write(dist_subprocess_stdin_fd(p), "yz", 2), 2);
    assert_int_equal(dist_subprocess_close_stdin(p), 0);
    assert_int_equal(dist_subprocess_stdin_fd(p), -1);
    char *out;
    assert_int_equal(dist_subprocess_communicate(p, NULL, 0, &out, NULL, NULL, NULL, 10000), 0);
    assert_string_equal(out, "yz");
    free(out);
    dist_subprocess_destroy(&p);
}

/* ---- helpers ------------------------------------------------------------ */

static void test_call_check_call_check_output(void **state)
{
    (void)state;
    const char *exit7[] = { "/bin/sh", "-c", "echo partial; exit 7", NULL };
    dist_subprocess_opts_t quiet = { .out = { DIST_STDIO_DEVNULL } };
    int rc = 0;
    assert_int_equal(dist_call(exit7, &quiet, 10000, &rc), 0);
    assert_int_equal(rc, 7);
    assert_int_equal(dist_check_call(exit7, &quiet, 10000, &rc), DIST_EEXITSTATUS);
    assert_int_equal(rc, 7);
    assert_int_equal(dist_check_call((const char *[]){ "true", NULL }, NULL, 10000, &rc), 0);
    assert_int_equal(rc, 0);

    char *out;
    size_t n;
    assert_int_equal(dist_check_output(exit7, NULL, NULL, 0, 10000, &out, &n, &rc),
                     DIST_EEXITSTATUS);
    assert_string_equal(out, "partial\n"); /* the output comes with the error */
    assert_int_equal(rc, 7);
    free(out);

    assert_int_equal(dist_check_output((const char *[]){ "tr", "a-z", "A-Z", NULL }, NULL,
                                       "hello", 5, 10000, &out, &n, NULL),
                     0);
    assert_string_equal(out, "HELLO");
    free(out);

    /* Killed by a signal counts as failure. */
    const char *killself[] = { "/bin/sh", "-c", "kill -TERM $$", NULL };
    assert_int_equal(dist_check_call(killself, NULL, 10000, &rc), DIST_EEXITSTATUS);
    assert_int_equal(rc, -SIGTERM);
}

static void test_helper_timeouts_kill_and_reap(void **state)
{
    (void)state;
    const char *argv[] = { "sleep", "30", NULL };
    int rc;
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_call(argv, NULL, 200, &rc), DIST_ETIMEDOUT);
    dt_assert_took(t0, 200);
    assert_int_equal(rc, -SIGKILL);
    assert_int_equal(dt_children(), 0);
    char *out;
    t0 = dt_now_ms();
    assert_int_equal(dist_check_output(argv, NULL, NULL, 0, 200, &out, NULL, &rc), DIST_ETIMEDOUT);
    dt_assert_took(t0, 200);
    assert_null(out);
    assert_int_equal(dt_children(), 0);
}

/* ---- descriptors -------------------------------------------------------- */

static void test_no_descriptor_leaks(void **state)
{
    (void)state;
    /* Descriptors opened without O_CLOEXEC, including a high one. */
    int plain = open("/dev/null", O_RDONLY);
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(dup2(p[1], 100), 100);
    assert_true(plain >= 3);
    dist_subprocess_opts_t o = { .in = { DIST_STDIO_PIPE }, .out = { DIST_STDIO_PIPE },
                                 .err = { DIST_STDIO_PIPE } };
    /* ls opens the directory itself, as the lowest free number: 3. */
    const char *argv[] = { "ls", "/proc/self/fd", NULL };
    for (int round = 0; round < 2; round++) {
        if (round == 1) /* and with every stream inherited */
            o = (dist_subprocess_opts_t){ .out = { DIST_STDIO_PIPE } };
        dist_subprocess_t *sp = dist_subprocess_new(argv, &o);
        char *out;
        assert_int_equal(dist_subprocess_communicate(sp, NULL, 0, &out, NULL, NULL, NULL, 10000), 0);
        dist_subprocess_destroy(&sp);
        int seen = 0;
        for (char *tok = strtok(out, "\n"); tok; tok = strtok(NULL, "\n")) {
            int fd = atoi(tok);
            if (fd > 3)
                fail_msg("descriptor %d leaked into the child", fd);
            seen |= 1 << fd;
        }
        free(out);
        assert_int_equal(seen & 7, 7); /* 0, 1 and 2 are there */
    }
    close(plain);
    close(p[0]);
    close(p[1]);
    close(100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_argv_without_shell_and_with_shell, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_env_cwd_and_session, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_exec_failures_are_reported_by_new, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_devnull_and_given_descriptors, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_parent_with_closed_stdin, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_communicate_16mib_through_cat, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_communicate_16mib_stderr_before_stdin, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_communicate_timeout_leaves_child_running, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_communicate_continues_after_timeout, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_child_that_ignores_its_input, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_wait_poll_signals_returncode, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_closes_pipes_and_reaps, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_call_check_call_check_output, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_helper_timeouts_kill_and_reap, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_no_descriptor_leaks, dt_setup, dt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

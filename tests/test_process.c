/* test_process.c - dist/process.h: start, join, exit codes, signals,
 * daemon semantics, and no zombies. */
#include <dist.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

static int t_return(void *arg)
{
    dt_child_init();
    return (int)(intptr_t)arg;
}

static int t_sleep(void *arg)
{
    dt_child_init();
    dt_sleep_ms((int)(intptr_t)arg);
    return 0;
}

static int t_forever(void *arg)
{
    (void)arg;
    dt_child_init();
    for (;;)
        pause();
    return 0;
}

static int t_segv(void *arg)
{
    (void)arg;
    dt_child_init();
    signal(SIGSEGV, SIG_DFL); /* past any sanitizer's handler */
    raise(SIGSEGV);
    return 0;
}

static void test_exitcode_from_return_value(void **state)
{
    (void)state;
    dist_process_t *p = dist_process_new(t_return, (void *)(intptr_t)7, NULL);
    assert_non_null(p);
    assert_int_equal(dist_process_exitcode(p), DIST_EXITCODE_NONE);
    assert_int_equal(dist_process_pid(p), 0);
    assert_false(dist_process_is_alive(p));
    assert_int_equal(dist_process_start(p), 0);
    assert_true(dist_process_pid(p) > 0);
    assert_int_equal(dist_process_join(p, DIST_FOREVER), 0);
    assert_int_equal(dist_process_exitcode(p), 7);
    assert_false(dist_process_is_alive(p));
    /* join again is fine, and signals to an ended child are no-ops */
    assert_int_equal(dist_process_join(p, 0), 0);
    assert_int_equal(dist_process_terminate(p), 0);
    assert_int_equal(dist_process_exitcode(p), 7);
    dist_process_destroy(&p);
    assert_null(p);
    assert_int_equal(dt_children(), 0);
}

static void test_sigkill_exitcode_is_minus_9(void **state)
{
    (void)state;
    dist_process_t *p = dist_process_new(t_forever, NULL, "victim");
    assert_int_equal(dist_process_start(p), 0);
    assert_true(dist_process_is_alive(p));
    assert_int_equal(dist_process_exitcode(p), DIST_EXITCODE_NONE);
    assert_int_equal(dist_process_kill(p), 0);
    assert_int_equal(dist_process_join(p, 5000), 0);
    assert_int_equal(dist_process_exitcode(p), -SIGKILL);
    dist_process_destroy(&p);
}

static void test_terminate_and_segv_codes(void **state)
{
    (void)state;
    dist_process_t *p = dist_process_new(t_forever, NULL, NULL);
    assert_int_equal(dist_process_start(p), 0);
    assert_int_equal(dist_process_terminate(p), 0);
    assert_int_equal(dist_process_join(p, 5000), 0);
    assert_int_equal(dist_process_exitcode(p), -SIGTERM);
    dist_process_destroy(&p);

    p = dist_process_new(t_segv, NULL, NULL);
    assert_int_equal(dist_process_start(p), 0);
    assert_int_equal(dist_process_join(p, 5000), 0);
    assert_int_equal(dist_process_exitcode(p), -SIGSEGV);
    dist_process_destroy(&p);
}

static void test_join_timeout_leaves_child_running(void **state)
{
    (void)state;
    dist_process_t *p = dist_process_new(t_sleep, (void *)(intptr_t)1500, NULL);
    assert_int_equal(dist_process_start(p), 0);
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_process_join(p, 100), DIST_ETIMEDOUT);
    int64_t took = dt_now_ms() - t0;
    assert_true(took >= 95);
    assert_true(took < 1400);
    assert_true(dist_process_is_alive(p));
    assert_int_equal(dist_process_exitcode(p), DIST_EXITCODE_NONE);
    assert_int_equal(dist_process_join(p, 10000), 0);
    assert_int_equal(dist_process_exitcode(p), 0);
    dist_process_destroy(&p);
}

static void test_misuse_is_an_error(void **state)
{
    (void)state;
    errno = 0;
    assert_null(dist_process_new(NULL, NULL, NULL));
    assert_int_equal(errno, EINVAL);
    dist_process_t *p = dist_process_new(t_return, 0, NULL);
    assert_int_equal(dist_process_join(p, 0), DIST_ESTATE);
    assert_int_equal(dist_process_terminate(p), DIST_ESTATE);
    assert_int_equal(dist_process_start(p), 0);
    assert_int_equal(dist_process_start(p), DIST_ESTATE);
    assert_int_equal(dist_process_set_daemon(p, true), DIST_ESTATE);
    assert_int_equal(dist_process_join(p, DIST_FOREVER), 0);
    dist_process_destroy(&p);
    dist_process_destroy(&p); /* NULL is accepted */
    dist_process_destroy(NULL);
}

static void test_names(void **state)
{
    (void)state;
    dist_process_t *a = dist_process_new(t_sleep, (void *)(intptr_t)2000, NULL);
    dist_process_t *b = dist_process_new(t_return, 0, "my-worker");
    assert_non_null(strstr(dist_process_name(a), "Process-"));
    assert_string_equal(dist_process_name(b), "my-worker");
    assert_int_equal(dist_process_start(a), 0);
    /* The child carries its name as its kernel comm: wait until it has set it. */
    char path[64], comm[64] = "";
    snprintf(path, sizeof path, "/proc/%d/comm", (int)dist_process_pid(a));
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        assert_non_null(fgets(comm, sizeof comm, f));
        fclose(f);
        comm[strcspn(comm, "\n")] = 0;
        if (strncmp(comm, "Process-", 8) == 0)
            break;
        dt_sleep_ms(5);
    }
    assert_int_equal(strncmp(comm, "Process-", 8), 0);
    dist_process_kill(a);
    dist_process_join(a, DIST_FOREVER);
    dist_process_destroy(&a);
    dist_process_destroy(&b);
}

static void test_destroy_kills_running_daemon(void **state)
{
    (void)state;
    dist_process_t *p = dist_process_new(t_forever, NULL, NULL);
    assert_int_equal(dist_process_set_daemon(p, true), 0);
    assert_true(dist_process_daemon(p));
    assert_int_equal(dist_process_start(p), 0);
    pid_t pid = dist_process_pid(p);
    dist_process_destroy(&p);
    /* Reaped: not even a zombie. */
    assert_int_equal(dt_proc_state(pid), 0);
    assert_int_equal(dt_children(), 0);
}

static int t_ignore_term(void *arg)
{
    (void)arg;
    dt_child_init();
    signal(SIGTERM, SIG_IGN);
    for (;;)
        pause();
    return 0;
}

static void test_destroy_kills_daemon_that_ignores_sigterm(void **state)
{
    (void)state;
    dist_process_t *p = dist_process_new(t_ignore_term, NULL, NULL);
    dist_process_set_daemon(p, true);
    assert_int_equal(dist_process_start(p), 0);
    dt_sleep_ms(50); /* let it install SIG_IGN */
    dist_process_destroy(&p);
    assert_int_equal(dt_children(), 0);
}

static int t_write_after_sleep(void *arg)
{
    dt_child_init();
    dt_sleep_ms(300);
    int fd = (int)(intptr_t)arg;
    return write(fd, "done", 4) == 4 ? 0 : 1;
}

static void test_destroy_waits_for_non_daemon(void **state)
{
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    dist_process_t *p = dist_process_new(t_write_after_sleep, (void *)(intptr_t)fds[1], NULL);
    assert_int_equal(dist_process_start(p), 0);
    int64_t t0 = dt_now_ms();
    dist_process_destroy(&p); /* must not kill it: it finishes its work */
    assert_true(dt_now_ms() - t0 >= 250);
    char buf[8] = "";
    assert_int_equal(read(fds[0], buf, sizeof buf), 4);
    assert_memory_equal(buf, "done", 4);
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(dt_children(), 0);
}

/* start() reports a failed fork with errno: run in a helper child where
 * RLIMIT_NPROC is 0 (and, as root, an unprivileged uid so it applies). */
static void test_start_failure_reports_errno(void **state)
{
    (void)state;
    pid_t helper = fork();
    assert_true(helper >= 0);
    if (helper == 0) {
        dt_child_init();
        struct rlimit rl = { 0, 0 };
        if (setrlimit(RLIMIT_NPROC, &rl) < 0)
            _exit(10);
        if (getuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0))
            _exit(11);
        dist_process_t *p = dist_process_new(t_return, 0, NULL);
        int r = dist_process_start(p);
        int code = r == -EAGAIN ? 0 : 12;
        if (r == 0)
            dist_process_join(p, DIST_FOREVER);
        dist_process_destroy(&p);
        _exit(code);
    }
    dt_join_ok(helper);
}

static void test_many_processes_no_zombies(void **state)
{
    (void)state;
    enum { N = 64 };
    dist_process_t *ps[N];
    for (int i = 0; i < N; i++) {
        ps[i] = dist_process_new(t_return, (void *)(intptr_t)(i % 256), NULL);
        assert_int_equal(dist_process_start(ps[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(dist_process_join(ps[i], 10000), 0);
        assert_int_equal(dist_process_exitcode(ps[i]), i % 256);
        dist_process_destroy(&ps[i]);
    }
    assert_int_equal(dt_children(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exitcode_from_return_value, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_sigkill_exitcode_is_minus_9, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_terminate_and_segv_codes, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_join_timeout_leaves_child_running, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_misuse_is_an_error, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_names, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_kills_running_daemon, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_kills_daemon_that_ignores_sigterm, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_destroy_waits_for_non_daemon, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_start_failure_reports_errno, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_many_processes_no_zombies, dt_setup, dt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

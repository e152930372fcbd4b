/*  testutil.h - helpers shared by the cmocka tests.
 *
 *  Every test must leave no process behind. dt_children() lists the live
 *  and zombie children of the test process from /proc, so a test can assert
 *  that none remain; dt_kill_children() is the emergency cleanup in
 *  teardowns (by pid, never by name). Children started by tests call
 *  dt_child_init() so they die with the test process even if it is killed
 *  by the ctest timeout.
 */
#ifndef DIST_TESTUTIL_H_INCLUDED
#define DIST_TESTUTIL_H_INCLUDED

#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <cmocka.h>

/* Number of children (running or zombie) of this process. */
int dt_children(void);

/* SIGKILLs and reaps every child of this process; returns how many. */
int dt_kill_children(void);

/* cmocka setup/teardown: the teardown stops the programs of dt_spawn still
 * running, then checks that no other child is left (and kills leftovers). */
int dt_setup(void **state);
int dt_teardown(void **state);

/* In a forked child: die when the parent dies. */
void dt_child_init(void);

/* Monotonic milliseconds. */
int64_t dt_now_ms(void);

/* Sleep for ms milliseconds. */
void dt_sleep_ms(int ms);

/* The state (one letter, as in /proc/PID/stat) of pid, or 0 if gone. */
char dt_proc_state(pid_t pid);

/* Forks a child that calls dt_child_init(), runs fn(arg) and exits with its
 * return value (children report through their exit status: cmocka asserts
 * only work in the test process). Returns the pid; asserts fork worked. */
pid_t dt_fork(int (*fn)(void *arg), void *arg);

/* Reaps pid and asserts that it exited with status 0. */
void dt_join_ok(pid_t pid);

/* Asserts that a call which gave up after timeout_ms, started at t0
 * (dt_now_ms), took a plausible time: not early (>= 95 %), and not absurdly
 * late on a busy machine (< timeout + 2 s). Never a speed assertion. */
void dt_assert_took(int64_t t0, int timeout_ms);

/* "/<prefix>_<pid>_<tag>": a name unique to this test run. Static buffer,
 * overwritten by the next call. */
const char *dt_unique_name(const char *prefix, const char *tag);

/* A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick
 * for a socket bound to port 0), for the programs a test starts. */
int dt_free_port(void);

/* A reproducible PRNG (xorshift64*) for the tests' random choices:
 * dt_seed starts it from $DIST_TEST_SEED when set, else from dflt, so a
 * failure seen with one seed can be replayed. Not thread-safe. */
void dt_seed(uint64_t dflt);
uint32_t dt_rand(void);

/* Removes dir and everything below it (a test's scratch directory). */
void dt_rm_tree(const char *dir);

/* ---- programs ------------------------------------------------------------------------
 *
 * The one way the tests start the real programs (dist-master, dist-worker,
 * dist, and tools such as strace or tcpdump). Every program started is
 * recorded by pid until it is reaped; dt_teardown, and an atexit handler
 * of the test process, SIGKILL and reap whatever is still recorded, and
 * each program gets PR_SET_PDEATHSIG so that even a test killed by the
 * ctest timeout leaves none behind. That signal belongs to the thread that
 * forked: start programs from the main thread. Only recorded pids are ever
 * signalled, so a recycled pid is never hit. */

/* How one standard stream of a program is connected. */
typedef enum {
    DT_IO_INHERIT = 0, /* the test's own stream (the default) */
    DT_IO_NULL,        /* /dev/null */
    DT_IO_PIPE,        /* a pipe; the test's end (O_CLOEXEC) goes to *fd */
    DT_IO_FILE,        /* path: truncated for output, read for stdin */
    DT_IO_APPEND,      /* path: appended to */
    DT_IO_STDOUT,      /* stderr only: wherever stdout goes */
} dt_io_t;

typedef struct {
    dt_io_t how;
    const char *path; /* DT_IO_FILE, DT_IO_APPEND */
    int *fd;          /* DT_IO_PIPE: receives the test's end */
} dt_stream_t;

typedef struct {
    /* "NAME=value" entries that override the test's environment, and
     * "NAME" entries that remove NAME from it; NULL-terminated. */
    const char *const *env;
    dt_stream_t in, out, err;
    /* Readiness, checked before dt_spawn returns (it fails the test when
     * the program exits first or the bound passes): a socket listens on
     * 127.0.0.1:ready_port (dt_wait_port), and/or ready_text appears in
     * the file that stdout goes to (DT_IO_FILE or DT_IO_APPEND). */
    int ready_port;
    const char *ready_text;
    int ready_ms; /* the bound for both; 0 means 20 s */
} dt_spawn_opts_t;

/* What dt_wait, dt_stop and dt_run return for a program still running at
 * the deadline (dt_run has killed and reaped it by then). */
#define DT_TIMEOUT (-1000)

/* Starts argv[0] (a path, or a name looked up in PATH) with argv and opts
 * (NULL: all defaults) and returns its pid, recorded for the cleanup.
 * Fails the test if it cannot. */
pid_t dt_spawn(const char *const *argv, const dt_spawn_opts_t *opts);

/* Waits at most timeout_ms for pid (one of ours) to end and reaps it.
 * Returns its exit code, 128 + the signal that killed it, or DT_TIMEOUT
 * (it is then left running and recorded). */
int dt_wait(pid_t pid, int timeout_ms);

/* Sends sig to pid if it is one of ours and not reaped yet: 0, else -1. */
int dt_signal(pid_t pid, int sig);

/* SIGTERM, then SIGKILL if pid has not ended after grace_ms; reaps it and
 * returns its status as dt_wait does (128 + SIGKILL when it had to). */
int dt_stop(pid_t pid, int grace_ms);

/* SIGKILLs and reaps every program still recorded; returns how many. */
int dt_stop_all(void);

/* Runs argv to its end, at most timeout_ms (then it is killed and
 * DT_TIMEOUT returned): input (NULL: /dev/null) on its stdin, its stdout
 * and stderr into *out and *err (malloc'd, NUL-terminated, to free) when
 * those are non-NULL, else as opts says. opts may be NULL. Returns the
 * status as dt_wait does. */
int dt_run(const char *const *argv, const dt_spawn_opts_t *opts, const char *input, char **out,
           char **err, int timeout_ms);

/* True once a socket listens on 127.0.0.1:port, polled for ms (read from
 * /proc/net/tcp, without connecting). */
bool dt_wait_port(int port, int ms);

/* True once needle appears in the file at path, polled for ms. */
bool dt_wait_text(const char *path, const char *needle, int ms);

/* Reads fd into buf (NUL-terminated) until want shows up (true), the
 * writer closes, buf is full or ms pass (false). */
bool dt_read_until(int fd, const char *want, char *buf, size_t cap, int ms);

#endif

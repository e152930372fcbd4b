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
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <cmocka.h>

/* Number of children (running or zombie) of this process. */
int dt_children(void);

/* SIGKILLs and reaps every child of this process; returns how many. */
int dt_kill_children(void);

/* cmocka setup/teardown that checks no child is left (and kills leftovers). */
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

/* Removes dir and everything below it (a test's scratch directory). */
void dt_rm_tree(const char *dir);

#endif

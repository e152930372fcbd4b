/*  test_tasks.c - tasks for tests, built as a plugin for dist-worker
 *  (--tasks libdist_test_tasks.so) and compiled into test programs that
 *  run a worker in-process.
 *
 *    test.square [x]        -> x * x
 *    test.add    [a, b]     -> a + b
 *    test.fail   [msg?]     fails with msg (default: "failing on purpose")
 *    test.crash  []         dies of SIGSEGV
 *    test.exit   [status]   exits with that status without answering
 *    test.sleep  [ms]       sleeps, returns ms
 *    test.sleep_square [x]  sleeps 1 ms, returns x * x (for maps that must
 *                           last long enough to be interrupted)
 *    test.mark   [path, ms] creates the file `path` (so that a test knows
 *                           the task has started), sleeps, returns ms
 *    test.pid    []         the pid of the process that ran it
 *    test.bytes  [n]        a bin of n bytes (0x61, 'a')
 *    test.none   []         returns without a value (a broken task)
 *    test.count_square [path, x, ms]
 *                           appends one byte to the file `path` (so that a
 *                           test can count executions), sleeps ms, returns
 *                           x * x
 *    test.count_crash [path]
 *                           appends one byte to `path`, then dies of SIGSEGV
 */
#include <dist.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int s_square(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t x;
    if (dist_arg_int(args, 0, &x) || x > 3037000499 || x < -3037000499)
        return dist_task_fail(ctx, "test.square: expected one integer of at most 3037000499");
    return msgpack_pack_int64(out, x * x);
}
DIST_TASK("test.square", s_square)

static int s_add(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    double a, b;
    if (dist_arg_double(args, 0, &a) || dist_arg_double(args, 1, &b))
        return dist_task_fail(ctx, "test.add: expected two numbers");
    int64_t ia, ib;
    if (dist_arg_int(args, 0, &ia) == 0 && dist_arg_int(args, 1, &ib) == 0)
        return msgpack_pack_int64(out, ia + ib);
    return msgpack_pack_double(out, a + b);
}
DIST_TASK("test.add", s_add)

static int s_fail(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)out;
    const char *s;
    size_t n;
    if (dist_arg_str(args, 0, &s, &n) == 0)
        return dist_task_fail(ctx, "%.*s", (int)n, s);
    return dist_task_fail(ctx, "failing on purpose");
}
DIST_TASK("test.fail", s_fail)

static int s_crash(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    (void)out;
    /* The default action, not a sanitizer's handler: the process must die
     * of the signal, as an ordinary crashing task would. */
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
    return -1;
}
DIST_TASK("test.crash", s_crash)

static int s_exit(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)out;
    int64_t st;
    if (dist_arg_int(args, 0, &st))
        return dist_task_fail(ctx, "test.exit: expected [status]");
    _exit((int)st);
}
DIST_TASK("test.exit", s_exit)

static int s_sleep(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t ms;
    if (dist_arg_int(args, 0, &ms) || ms < 0)
        return dist_task_fail(ctx, "test.sleep: expected [milliseconds]");
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };
    while (nanosleep(&ts, &ts) != 0)
        ;
    return msgpack_pack_int64(out, ms);
}
DIST_TASK("test.sleep", s_sleep)

/* [delay_ms, reason]: asks to be run again after delay_ms. */
static int s_retry(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)out;
    int64_t ms;
    const char *s;
    size_t n;
    char reason[256];
    if (dist_arg_int(args, 0, &ms) || ms < 0 || ms > INT32_MAX || dist_arg_str(args, 1, &s, &n))
        return dist_task_fail(ctx, "test.retry: expected [delay_ms, reason]");
    snprintf(reason, sizeof reason, "%.*s", (int)(n < 255 ? n : 255), s);
    return dist_task_retry(ctx, (int)ms, reason);
}
DIST_TASK("test.retry", s_retry)

static int s_sleep_square(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    struct timespec ts = { 0, 1000000 };
    nanosleep(&ts, NULL);
    return s_square(ctx, args, out);
}
DIST_TASK("test.sleep_square", s_sleep_square)

static int s_mark(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    const char *path;
    size_t n;
    char buf[4096];
    if (dist_arg_str(args, 0, &path, &n) || n == 0 || n >= sizeof buf)
        return dist_task_fail(ctx, "test.mark: expected [path, milliseconds]");
    memcpy(buf, path, n);
    buf[n] = 0;
    int fd = open(buf, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return dist_task_fail(ctx, "test.mark: cannot create %s", buf);
    close(fd);
    msgpack_object rest = *args; /* [ms] for test.sleep: the second element */
    rest.via.array.ptr++;
    rest.via.array.size--;
    return s_sleep(ctx, &rest, out);
}
DIST_TASK("test.mark", s_mark)

static int s_pid(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    return msgpack_pack_int64(out, getpid());
}
DIST_TASK("test.pid", s_pid)

static int s_bytes(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    uint64_t n;
    if (dist_arg_uint(args, 0, &n) || n > ((uint64_t)1 << 30))
        return dist_task_fail(ctx, "test.bytes: expected [n], at most 2^30");
    char *buf = malloc(n ? n : 1);
    if (!buf)
        return dist_task_fail(ctx, "test.bytes: out of memory");
    memset(buf, 'a', n);
    int r = msgpack_pack_bin_with_body(out, buf, n);
    free(buf);
    return r;
}
DIST_TASK("test.bytes", s_bytes)

static int s_none(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    (void)out;
    return 0;
}
DIST_TASK("test.none", s_none)

/* Appends one byte to the file named by argument 0: one byte per
 * execution, written before anything else the task does, with O_APPEND so
 * that concurrent executions on several workers all count. */
static int s_count(dist_task_ctx_t *ctx, const msgpack_object *args, const char *who)
{
    const char *path;
    size_t n;
    char buf[4096];
    if (dist_arg_str(args, 0, &path, &n) || n == 0 || n >= sizeof buf)
        return dist_task_fail(ctx, "%s: expected a path first", who);
    memcpy(buf, path, n);
    buf[n] = 0;
    int fd = open(buf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return dist_task_fail(ctx, "%s: cannot open %s", who, buf);
    ssize_t w = write(fd, "x", 1);
    close(fd);
    if (w != 1)
        return dist_task_fail(ctx, "%s: cannot write %s", who, buf);
    return 0;
}

static int s_count_square(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t x, ms;
    if (dist_arg_int(args, 1, &x) || dist_arg_int(args, 2, &ms) || ms < 0 || x > 3037000499 ||
        x < -3037000499)
        return dist_task_fail(ctx, "test.count_square: expected [path, x, milliseconds]");
    int rc = s_count(ctx, args, "test.count_square");
    if (rc)
        return rc;
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };
    while (nanosleep(&ts, &ts) != 0)
        ;
    return msgpack_pack_int64(out, x * x);
}
DIST_TASK("test.count_square", s_count_square)

static int s_count_crash(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int rc = s_count(ctx, args, "test.count_crash");
    if (rc)
        return rc;
    return s_crash(ctx, args, out);
}
DIST_TASK("test.count_crash", s_count_crash)

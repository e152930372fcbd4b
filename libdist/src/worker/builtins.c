/*  builtins.c - the tasks every worker offers (see dist/worker.h):
 *
 *    dist.echo  [any...]                        -> the same array
 *    dist.sleep [ms]                            -> ms, after sleeping that long
 *    dist.fail  [message?]                      -> fails with message ("dist.fail")
 *    dist.exec  [argv, stdin?, timeout_ms?, check?] -> {status, stdout, stderr}
 *
 *  dist.fail exists to try failure handling (retry policies, dead letters)
 *  by hand. dist.exec runs a program (no shell) through dist/subprocess.h:
 *  argv is an array of strings, stdin an optional str or bin (nil or
 *  absent: none), and timeout_ms an optional bound (0, nil or absent: none)
 *  after which the program is killed and the task fails. `status` is the
 *  program's exit status, or -N when signal N ended it. With check true
 *  (Python's check_call) a status other than 0 fails the task instead, with
 *  the status and the head of stderr in the message, so that shell commands
 *  can use the master's retry policies. A worker refuses dist.exec unless its operator
 *  allowed it (--allow-exec): task payloads are data and must not be able
 *  to run commands on a worker that did not opt in.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "builtins_internal.h"
#include "dist/error.h"
#include "dist/subprocess.h"
#include "dist/task.h"
#include "dist/value.h"
#include "dist/worker.h"

static atomic_bool s_allow_exec;

void dist__builtins_allow_exec(bool allow) { atomic_store(&s_allow_exec, allow); }

static int s_echo(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    return msgpack_pack_object(out, *args);
}

static int s_fail(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)out;
    const char *msg = "dist.fail";
    size_t n = 9;
    size_t nargs = dist_arg_count(args);
    if (nargs > 1 || (nargs == 1 && !dist_arg_is_nil(args, 0) && dist_arg_str(args, 0, &msg, &n)))
        return dist_task_fail(ctx, "dist.fail: expected [message?] with message a string");
    return dist_task_fail(ctx, "%.*s", (int)(n > INT_MAX ? INT_MAX : n), msg);
}

static int s_sleep(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    uint64_t ms;
    if (dist_arg_count(args) != 1 || dist_arg_uint(args, 0, &ms) || ms > INT32_MAX)
        return dist_task_fail(ctx, "dist.sleep: expected [milliseconds], an integer from 0 to %d",
                              INT32_MAX);
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000 };
    /* nanosleep leaves the time still to sleep in ts when a signal cuts it
     * short, so the total stays what was asked. */
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return msgpack_pack_uint64(out, ms);
}

/* argv as NUL-terminated copies (a NULL-terminated array the caller frees
 * with s_free_argv), or NULL after failing the task with the reason. */
static char **s_exec_argv(dist_task_ctx_t *ctx, const msgpack_object *a)
{
    if (!a || a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size == 0) {
        dist_task_fail(ctx, "dist.exec: expected [argv, stdin?, timeout_ms?, check?] with argv a "
                            "non-empty array of strings");
        return NULL;
    }
    size_t n = a->via.array.size;
    char **argv = calloc(n + 1, sizeof *argv);
    if (!argv) {
        dist_task_fail(ctx, "dist.exec: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const char *s;
        size_t len;
        if (dist_obj_str(&a->via.array.ptr[i], &s, &len) || memchr(s, 0, len)) {
            dist_task_fail(ctx, "dist.exec: argv[%zu] is not a string without NUL bytes", i);
            goto fail;
        }
        argv[i] = strndup(s, len);
        if (!argv[i]) {
            dist_task_fail(ctx, "dist.exec: out of memory");
            goto fail;
        }
    }
    return argv;
fail:
    for (size_t i = 0; i < n; i++)
        free(argv[i]);
    free(argv);
    return NULL;
}

static void s_free_argv(char **argv)
{
    for (size_t i = 0; argv[i]; i++)
        free(argv[i]);
    free(argv);
}

/* The message of a checked command that did not succeed: its status (or
 * signal) and the head of its stderr, made printable ASCII and cut to fit. */
#define STDERR_HEAD 256

static void s_check_failed(dist_task_ctx_t *ctx, const char *prog, int status, const char *err,
                           size_t elen)
{
    char head[STDERR_HEAD + 4];
    size_t n = elen < STDERR_HEAD ? elen : STDERR_HEAD;
    while (n && (err[n - 1] == '\n' || err[n - 1] == '\r' || err[n - 1] == ' '))
        n--; /* the usual trailing newline says nothing */
    for (size_t i = 0; i < n; i++)
        head[i] = err[i] >= 32 && err[i] < 127 ? err[i] : '?'; /* ASCII: cut anywhere */
    if (elen > STDERR_HEAD) {
        memcpy(head + n, "...", 3);
        n += 3;
    }
    head[n] = 0;
    char how[64];
    if (status < 0)
        snprintf(how, sizeof how, "was killed by signal %d", -status);
    else
        snprintf(how, sizeof how, "exited with status %d", status);
    if (n)
        dist_task_fail(ctx, "dist.exec: %s %s; stderr: %s", prog, how, head);
    else
        dist_task_fail(ctx, "dist.exec: %s %s (nothing on stderr)", prog, how);
}

static int s_exec(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    if (!atomic_load(&s_allow_exec))
        return dist_task_fail(ctx, "dist.exec is disabled on this worker (start it with --allow-exec)");
    size_t nargs = dist_arg_count(args);
    if (nargs > 4)
        return dist_task_fail(ctx, "dist.exec: expected [argv, stdin?, timeout_ms?, check?], got %zu "
                                   "arguments", nargs);
    const void *input = NULL;
    size_t in_len = 0;
    if (nargs >= 2 && !dist_arg_is_nil(args, 1)) {
        const char *s;
        if (dist_arg_str(args, 1, &s, &in_len) == 0)
            input = s;
        else if (dist_arg_bin(args, 1, &input, &in_len))
            return dist_task_fail(ctx, "dist.exec: stdin must be a string, bytes or nil");
    }
    uint64_t timeout = 0;
    if (nargs >= 3 && !dist_arg_is_nil(args, 2) &&
        (dist_arg_uint(args, 2, &timeout) || timeout > INT32_MAX))
        return dist_task_fail(ctx, "dist.exec: timeout_ms must be an integer from 0 to %d", INT32_MAX);
    bool check = false;
    if (nargs >= 4 && !dist_arg_is_nil(args, 3) && dist_arg_bool(args, 3, &check))
        return dist_task_fail(ctx, "dist.exec: check must be a boolean");
    char **argv = s_exec_argv(ctx, dist_arg(args, 0));
    if (!argv)
        return -1;
    dist_subprocess_opts_t o = { 0 };
    o.in.mode = input ? DIST_STDIO_PIPE : DIST_STDIO_DEVNULL;
    o.out.mode = DIST_STDIO_PIPE;
    o.err.mode = DIST_STDIO_PIPE;
    dist_subprocess_t *p = dist_subprocess_new((const char *const *)argv, &o);
    if (!p) {
        int e = errno;
        dist_task_fail(ctx, "dist.exec: cannot run %s: %s", argv[0], strerror(e));
        s_free_argv(argv);
        return -1;
    }
    char *sout = NULL, *serr = NULL;
    size_t olen = 0, elen = 0;
    int rc = dist_subprocess_communicate(p, input, in_len, &sout, &olen, &serr, &elen,
                                         timeout ? (int)timeout : DIST_FOREVER);
    if (rc == DIST_ETIMEDOUT) {
        dist_subprocess_kill(p);
        dist_task_fail(ctx, "dist.exec: %s did not finish within %d ms and was killed", argv[0],
                       (int)timeout);
    } else if (rc) {
        dist_task_fail(ctx, "dist.exec: running %s: %s", argv[0], dist_strerror(rc));
    } else if (check && dist_subprocess_returncode(p) != 0) {
        s_check_failed(ctx, argv[0], dist_subprocess_returncode(p), serr, elen);
        rc = -1;
    } else {
        msgpack_pack_map(out, 3);
        msgpack_pack_str_with_body(out, "status", 6);
        msgpack_pack_int(out, dist_subprocess_returncode(p));
        msgpack_pack_str_with_body(out, "stdout", 6);
        msgpack_pack_bin_with_body(out, sout ? sout : "", olen);
        msgpack_pack_str_with_body(out, "stderr", 6);
        msgpack_pack_bin_with_body(out, serr ? serr : "", elen);
    }
    dist_subprocess_destroy(&p);
    free(sout);
    free(serr);
    s_free_argv(argv);
    return rc ? -1 : 0;
}

void dist_worker_register_builtins(void)
{
    /* Registering the same pair again is a no-op, which makes this
     * idempotent without a flag of its own. */
    (void)dist_task_register("dist.echo", s_echo);
    (void)dist_task_register("dist.sleep", s_sleep);
    (void)dist_task_register("dist.fail", s_fail);
    (void)dist_task_register("dist.exec", s_exec);
}

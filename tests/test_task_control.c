/* test_task_control.c - task control (issue 12) end to end: the dist
 * program and the client API against a real dist-master (in memory, and
 * with --store across a kill -9) and a real dist-worker: caller ids,
 * --no-wait and `dist result` from another process, `dist status --task`
 * in every state, cancel (queued, delayed, running), retry policies,
 * delays, priorities, dead letters, and `dist map` interrupted. Each test
 * starts its own programs on 127.0.0.1 and stops them. */
#include <czmq.h>
#include <dist.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static struct {
    int port;
    char endpoint[64];
    char log[96];
    char store[96];
    pid_t master, worker;
    dist_client_t *c;
} g;

/* A master, with --store when asked, and a short --result-ttl when ttl. */
static void s_master_ttl(bool store, const char *ttl)
{
    char bind[64];
    snprintf(bind, sizeof bind, "tcp://127.0.0.1:%d", g.port);
    const char *argv[10] = { DIST_MASTER_BIN, "--bind", bind, "--log-level", "info" };
    int n = 5;
    if (store) {
        argv[n++] = "--store";
        argv[n++] = g.store;
    }
    if (ttl) {
        argv[n++] = "--result-ttl";
        argv[n++] = ttl;
    }
    dt_spawn_opts_t o = { .in = { DT_IO_NULL }, .out = { DT_IO_APPEND, g.log, NULL },
                          .err = { DT_IO_STDOUT }, .ready_port = g.port };
    g.master = dt_spawn(argv, &o);
}

static void s_master(bool store) { s_master_ttl(store, NULL); }

/* A worker with one pool process (so that one long task makes it busy). */
static void s_worker(void)
{
    const char *argv[] = { DIST_WORKER_BIN, "--master", g.endpoint, "--procs", "1",
                           "--allow-exec", "--log-level", "warn", NULL };
    dt_spawn_opts_t o = { .in = { DT_IO_NULL }, .out = { DT_IO_APPEND, g.log, NULL },
                          .err = { DT_IO_STDOUT } };
    g.worker = dt_spawn(argv, &o);
}

static dist_client_t *s_client(void)
{
    dist_client_opts_t co = { .master = g.endpoint, .connect_timeout_ms = 10000 };
    dist_client_t *c = dist_client_new(&co);
    assert_non_null(c);
    return c;
}

/* A queue's field in the master's STATUS (depth, in_flight, delayed), or -1. */
static int64_t s_queue(const char *name, const char *field)
{
    dist_result_t *st;
    if (dist_client_status(g.c, 3000, &st))
        return -1;
    const msgpack_object *qs = dist_obj_map_get(dist_result_value(st), "queues");
    int64_t x = -1;
    for (size_t i = 0; qs && qs->type == MSGPACK_OBJECT_ARRAY && i < qs->via.array.size; i++) {
        const msgpack_object *q = &qs->via.array.ptr[i];
        const msgpack_object *n = dist_obj_map_get(q, "name");
        if (n && n->type == MSGPACK_OBJECT_STR && n->via.str.size == strlen(name) &&
            memcmp(n->via.str.ptr, name, strlen(name)) == 0) {
            const msgpack_object *v = dist_obj_map_get(q, field);
            if (v)
                dist_obj_int(v, &x);
        }
    }
    dist_result_destroy(&st);
    return x;
}

/* A counter of the master's STATUS, or -1. */
static int64_t s_counter(const char *key)
{
    dist_result_t *st;
    if (dist_client_status(g.c, 3000, &st))
        return -1;
    const msgpack_object *cs = dist_obj_map_get(dist_result_value(st), "counters");
    const msgpack_object *v = cs ? dist_obj_map_get(cs, key) : NULL;
    int64_t x = -1;
    if (v)
        dist_obj_int(v, &x);
    dist_result_destroy(&st);
    return x;
}

static void s_wait_worker(void)
{
    int64_t end = dt_now_ms() + 20000;
    while (dt_now_ms() < end && s_queue("dist.sleep", "depth") < 0)
        dt_sleep_ms(50);
    assert_true(s_queue("dist.sleep", "depth") >= 0);
}

static void s_cluster_ttl(bool store, const char *ttl)
{
    s_master_ttl(store, ttl);
    s_worker();
    g.c = s_client();
    s_wait_worker();
}

static void s_cluster(bool store) { s_cluster_ttl(store, NULL); }

static int s_setup(void **state)
{
    (void)state;
    g.port = dt_free_port();
    snprintf(g.endpoint, sizeof g.endpoint, "tcp://127.0.0.1:%d", g.port);
    snprintf(g.log, sizeof g.log, "/tmp/dist-tc-%d-%d.log", (int)getpid(), g.port);
    snprintf(g.store, sizeof g.store, "/tmp/dist-tc-%d-%d.db", (int)getpid(), g.port);
    unlink(g.log);
    unlink(g.store);
    return 0;
}

static int s_teardown(void **state)
{
    (void)state;
    dist_client_destroy(&g.c);
    dt_stop_all();
    unlink(g.log);
    unlink(g.store);
    char side[128];
    snprintf(side, sizeof side, "%s-wal", g.store);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", g.store);
    unlink(side);
    return 0;
}

/* ---- running dist ------------------------------------------------------------------ */

typedef struct {
    int rc;
    char *out, *err;
} run_t;

static void s_free(run_t *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

/* Runs `dist --master EP [submit --no-wait] ARGS...` to its end. */
static run_t s_vdist(bool no_wait, const char *first, va_list ap)
{
    const char *argv[32] = { DIST_CLI_BIN, "--master", g.endpoint, "submit", "--no-wait" };
    int n = no_wait ? 5 : 3;
    for (const char *a = first; a && n < 31; a = va_arg(ap, const char *))
        argv[n++] = a;
    argv[n] = NULL;
    run_t r = { 0 };
    r.rc = dt_run(argv, NULL, "", &r.out, &r.err, 60000);
    if (r.rc == DT_TIMEOUT)
        fail_msg("dist %s did not finish: stdout %s; stderr %s", first, r.out, r.err);
    return r;
}

static run_t s_dist(const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    run_t r = s_vdist(false, first, ap);
    va_end(ap);
    return r;
}

#define DIST(...) s_dist(__VA_ARGS__, (const char *)NULL)

static void s_expect(const run_t *r, int rc, const char *out, const char *err_part)
{
    if (r->rc != rc)
        fail_msg("exit %d, expected %d; stdout: %s; stderr: %s", r->rc, rc, r->out, r->err);
    if (out && strcmp(r->out, out) != 0)
        fail_msg("stdout '%s', expected '%s' (stderr: %s)", r->out, out, r->err);
    if (err_part && !strstr(r->err, err_part))
        fail_msg("stderr '%s' lacks '%s'", r->err, err_part);
}

/* `dist status --task ID --json`, parsed (the caller decrefs). */
static json_t *s_task_json(const char *id)
{
    run_t r = DIST("status", "--task", id, "--json");
    s_expect(&r, 0, NULL, NULL);
    json_error_t je;
    json_t *j = json_loads(r.out, 0, &je);
    if (!j)
        fail_msg("status --task %s: not JSON: %s", id, r.out);
    s_free(&r);
    return j;
}

static const char *s_jstr(json_t *j, const char *key)
{
    const char *s = json_string_value(json_object_get(j, key));
    return s ? s : "";
}

/* Asserts the state `dist status --task ID --json` shows. */
static void s_assert_cli_state(const char *id, const char *state)
{
    json_t *j = s_task_json(id);
    if (strcmp(s_jstr(j, "state"), state) != 0)
        fail_msg("status --task %s: %s, expected %s", id, s_jstr(j, "state"), state);
    json_decref(j);
}

/* The state of a task through the C API. Static string. */
static const char *s_state(const char *id)
{
    dist_task_info_t *t = NULL;
    assert_int_equal(dist_client_lookup(g.c, id, 5000, &t), 0);
    const char *st = t->state;
    dist_task_info_destroy(&t);
    return st;
}

/* Waits up to ms for task id to reach state. */
static void s_wait_state(const char *id, const char *state, int ms)
{
    int64_t end = dt_now_ms() + ms;
    const char *st = s_state(id);
    while (strcmp(st, state) != 0 && dt_now_ms() < end) {
        dt_sleep_ms(20);
        st = s_state(id);
    }
    if (strcmp(st, state) != 0)
        fail_msg("task %s is %s, not %s, after %d ms", id, st, state, ms);
}

/* Submits without waiting; returns the printed id (static buffer). */
static const char *s_no_wait(const char *a, ...)
{
    static char id[160];
    va_list ap;
    va_start(ap, a);
    run_t r = s_vdist(true, a, ap);
    va_end(ap);
    s_expect(&r, 0, NULL, NULL);
    size_t len = strcspn(r.out, "\n");
    assert_true(len > 0 && len < sizeof id);
    memcpy(id, r.out, len);
    id[len] = 0;
    s_free(&r);
    return id;
}

#define NO_WAIT(...) s_no_wait(__VA_ARGS__, (const char *)NULL)

/* Keeps the one pool process busy for ms with a task of id. */
static void s_busy(const char *id, const char *ms)
{
    NO_WAIT("--id", id, "dist.sleep", ms);
    s_wait_state(id, "leased", 5000);
}

/* ---- tests ----------------------------------------------------------------------------- */

/* A caller's id: the same id twice is one task (the second submission's
 * arguments are not run); --no-wait prints the id and `dist result` in
 * another process prints the value; a library-chosen id is 32 hex digits
 * and works the same way. */
static void test_ids_no_wait_and_result(void **state)
{
    (void)state;
    s_cluster(false);
    assert_string_equal(NO_WAIT("--id", "order-17", "dist.echo", "1"), "order-17");
    assert_string_equal(NO_WAIT("--id", "order-17", "dist.echo", "2"), "order-17");
    run_t r = DIST("result", "order-17", "--wait", "10000");
    s_expect(&r, 0, "[1]\n", NULL);
    s_free(&r);
    char hex[64];
    snprintf(hex, sizeof hex, "%s", NO_WAIT("dist.echo", "\"x\""));
    assert_int_equal(strlen(hex), 32);
    assert_int_equal(strspn(hex, "0123456789abcdef"), 32);
    r = DIST("result", hex, "--wait", "10000");
    s_expect(&r, 0, "[\"x\"]\n", NULL);
    s_free(&r);
    /* Asking again: a FETCH does not consume the result. */
    r = DIST("result", hex);
    s_expect(&r, 0, "[\"x\"]\n", NULL);
    s_free(&r);
    r = DIST("result", "no-such-task");
    s_expect(&r, 1, "", "unknown task id no-such-task");
    s_free(&r);
    /* Not finished within --wait: exit 1, and the state is named. */
    s_busy("busy-1", "3000");
    r = DIST("result", "busy-1", "--wait", "200");
    s_expect(&r, 1, "", "not finished within --wait 200 ms (state: leased)");
    s_free(&r);

    /* The C API: an id given, the future's id, a result by id. */
    dist_args_t *a = dist_args_pack("i", 7);
    size_t len;
    const void *args = dist_args_data(a, &len);
    dist_submit_opts_t so = { .id = "c-api-1", .priority = 3 };
    dist_future_t *f = dist_client_submit_opts(g.c, "dist.echo", args, len, &so);
    assert_non_null(f);
    assert_string_equal(dist_future_id(f), "c-api-1");
    dist_result_t *res = NULL;
    assert_int_equal(dist_client_result(g.c, "c-api-1", 10000, &res), 0);
    int64_t v = 0;
    assert_int_equal(dist_arg_int(dist_result_value(res), 0, &v), 0);
    assert_int_equal(v, 7);
    dist_result_destroy(&res);
    assert_int_equal(dist_future_wait(f, 10000), 0);
    assert_true(dist_future_successful(f));
    dist_future_destroy(&f);
    /* Bad ids and options are refused before anything is sent. */
    so = (dist_submit_opts_t){ .id = "has space" };
    assert_null(dist_client_submit_opts(g.c, "dist.echo", args, len, &so));
    so = (dist_submit_opts_t){ .priority = 10 };
    assert_null(dist_client_submit_opts(g.c, "dist.echo", args, len, &so));
    so = (dist_submit_opts_t){ .delay_ms = 10, .at_ms = 10 };
    assert_null(dist_client_submit_opts(g.c, "dist.echo", args, len, &so));
    assert_int_equal(dist_client_result(g.c, "", 0, &res), DIST_EINVAL);
    assert_int_equal(dist_client_result(g.c, "unknown-1", 0, &res), DIST_ENOENT);
    assert_non_null(res);
    assert_non_null(strstr(dist_result_error(res), "unknown task id unknown-1"));
    dist_result_destroy(&res);
    dist_args_destroy(&a);
}

/* `dist status --task` in each state: leased (with the worker), queued,
 * delayed (with its time), done, failed (with the error), cancelled,
 * unknown; the text form too. */
static void test_status_task_states(void **state)
{
    (void)state;
    s_cluster(false);
    s_busy("st-run", "4000");
    /* The worker prefetches a little: of several, the last stay queued. */
    const char *ids[] = { "st-q1", "st-q2", "st-q3", "st-q4" };
    for (int i = 0; i < 4; i++)
        NO_WAIT("--id", ids[i], "dist.sleep", "10");
    NO_WAIT("--id", "st-delayed", "--delay", "60000", "dist.echo", "1");
    NO_WAIT("--id", "st-done", "--priority", "9", "dist.echo", "1");
    /* The queue table shows the delayed task and the depth by priority. */
    run_t st = DIST("status");
    s_expect(&st, 0, NULL, NULL);
    assert_non_null(strstr(st.out, "DELAYED  BY PRIORITY"));
    const char *echo = strstr(st.out, "  dist.echo ");
    assert_non_null(echo);
    unsigned long depth = 9, inflight = 9, delayed = 9;
    assert_int_equal(sscanf(echo, " dist.echo task %lu %lu %lu", &depth, &inflight, &delayed), 3);
    assert_int_equal(delayed, 1);
    s_free(&st);
    json_t *j = s_task_json("st-run");
    assert_string_equal(s_jstr(j, "state"), "leased");
    assert_true(strlen(s_jstr(j, "worker")) > 0);
    assert_int_equal(json_integer_value(json_object_get(j, "priority")), 0);
    assert_true(json_integer_value(json_object_get(j, "started_ms")) > 0);
    assert_true(json_is_array(json_object_get(j, "attempts")));
    json_decref(j);
    j = s_task_json("st-q4");
    assert_string_equal(s_jstr(j, "state"), "queued");
    assert_true(json_is_null(json_object_get(j, "worker")));
    json_decref(j);
    j = s_task_json("st-delayed");
    assert_string_equal(s_jstr(j, "state"), "delayed");
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    int64_t nb = json_integer_value(json_object_get(j, "not_before_ms"));
    assert_true(nb > now + 50000 && nb < now + 61000);
    json_decref(j);
    s_wait_state("st-done", "done", 15000);
    j = s_task_json("st-done");
    assert_int_equal(json_integer_value(json_object_get(j, "priority")), 9);
    assert_true(json_integer_value(json_object_get(j, "finished_ms")) > 0);
    json_decref(j);
    NO_WAIT("--id", "st-failed", "--max-attempts", "1", "dist.fail", "\"no luck\"");
    s_wait_state("st-failed", "failed", 15000);
    j = s_task_json("st-failed");
    assert_non_null(strstr(s_jstr(j, "error"), "no luck"));
    json_decref(j);
    run_t r = DIST("cancel", "st-delayed");
    s_expect(&r, 0, "st-delayed cancelled\n", NULL);
    s_free(&r);
    s_assert_cli_state("st-delayed", "cancelled");
    s_assert_cli_state("never-submitted", "unknown");
    r = DIST("status", "--task", "st-failed");
    s_expect(&r, 0, NULL, NULL);
    assert_non_null(strstr(r.out, "state       failed"));
    assert_non_null(strstr(r.out, "no luck"));
    s_free(&r);
}

/* Cancel a queued, a delayed and a running task: each ends cancelled; the
 * caller waiting for the running one gets a cancelled error at once; the
 * worker's process is free again; a finished task is left as it was. */
static void test_cancel(void **state)
{
    (void)state;
    s_cluster(false);
    char out[128], err[128];
    snprintf(out, sizeof out, "%s.out", g.log);
    snprintf(err, sizeof err, "%s.err", g.log);
    const char *argv[] = { DIST_CLI_BIN, "--master", g.endpoint, "submit", "--id", "long-1",
                           "dist.sleep", "30000", NULL };
    dt_spawn_opts_t o = { .in = { DT_IO_NULL }, .out = { DT_IO_FILE, out, NULL },
                          .err = { DT_IO_FILE, err, NULL } };
    pid_t waiter = dt_spawn(argv, &o);
    s_wait_state("long-1", "leased", 10000);
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "cq-%d", i);
        NO_WAIT("--id", id, "dist.echo", "1");
    }
    NO_WAIT("--id", "cd-1", "--delay", "60000", "dist.echo", "1");
    NO_WAIT("--id", "finished-1", "--priority", "9", "dist.echo", "1");
    int64_t t0 = dt_now_ms();
    run_t r = DIST("cancel", "long-1", "cq-2", "cd-1");
    s_expect(&r, 0, "long-1 cancelled\ncq-2 cancelled\ncd-1 cancelled\n", NULL);
    s_free(&r);
    /* The waiting submit ends with the cancelled error, well before 30 s. */
    assert_int_equal(dt_wait(waiter, 10000), 1);
    assert_true(dt_now_ms() - t0 < 10000);
    assert_true(dt_wait_text(err, "cancelled", 1000));
    /* Its submitter took the cancelled result (ACK): the master may have
     * forgotten it since; it is not running anywhere. */
    const char *st = s_state("long-1");
    if (strcmp(st, "cancelled") != 0 && strcmp(st, "unknown") != 0)
        fail_msg("long-1 is %s after its cancel", st);
    assert_string_equal(s_state("cd-1"), "cancelled");
    /* The pool process was stopped: other tasks run at once. */
    s_wait_state("finished-1", "done", 10000);
    s_wait_state("cq-0", "done", 10000);
    assert_string_equal(s_state("cq-2"), "cancelled");
    r = DIST("result", "cd-1");
    s_expect(&r, 1, "", "cancelled");
    s_free(&r);
    /* Cancelling a finished task changes nothing and says so. */
    r = DIST("cancel", "finished-1", "not-a-task");
    s_expect(&r, 1, "finished-1 done\nnot-a-task unknown\n", NULL);
    s_free(&r);
    assert_string_equal(s_state("finished-1"), "done");
    /* The C API: states as static strings. */
    NO_WAIT("--id", "cd-2", "--delay", "60000", "dist.echo", "1");
    const char *ids[] = { "cd-2", "finished-1" };
    const char *states[2] = { NULL, NULL };
    assert_int_equal(dist_client_cancel(g.c, ids, 2, 5000, states), 0);
    assert_string_equal(states[0], "cancelled");
    assert_string_equal(states[1], "done");
    const char *bad[] = { "" };
    assert_int_equal(dist_client_cancel(g.c, bad, 1, 5000, states), DIST_EINVAL);
    unlink(out);
    unlink(err);
}

static int64_t s_took(run_t *r, int64_t t0, int rc, const char *err_part)
{
    s_expect(r, rc, NULL, err_part);
    s_free(r);
    return dt_now_ms() - t0;
}

/* Retry policies: --max-attempts with --retry-on-error (dist.fail, and
 * dist.exec with check), no retry of a task's own error without it,
 * --backoff spacing the attempts, a task waiting for its retry shown
 * delayed. */
static void test_retry_policies(void **state)
{
    (void)state;
    s_cluster(false);
    run_t r = DIST("submit", "--max-attempts", "3", "--retry-on-error", "dist.fail", "\"boom\"");
    s_expect(&r, 1, "", "gave up after 3 attempts");
    assert_non_null(strstr(r.err, "boom"));
    s_free(&r);
    /* Without --retry-on-error a task's error is final at once. */
    r = DIST("submit", "--max-attempts", "3", "dist.fail", "\"once\"");
    s_expect(&r, 1, "", "once");
    assert_null(strstr(r.err, "gave up"));
    s_free(&r);
    /* dist.exec with check: a non-zero exit is an error, retried. */
    r = DIST("submit", "--max-attempts", "2", "--retry-on-error", "dist.exec",
             "[\"sh\", \"-c\", \"exit 3\"]", "\"\"", "0", "true");
    s_expect(&r, 1, "", "gave up after 2 attempts");
    assert_non_null(strstr(r.err, "status 3"));
    s_free(&r);
    /* --backoff 300,2: attempts 2 and 3 wait about 300 and 600 ms (jitter
     * 0.8 to 1.2), so at least 720 ms in all. */
    int64_t t0 = dt_now_ms();
    r = DIST("submit", "--max-attempts", "3", "--retry-on-error", "--backoff", "300,2,10000",
             "dist.fail", "\"slow\"");
    int64_t took = s_took(&r, t0, 1, "gave up after 3 attempts");
    print_message("3 attempts with --backoff 300,2: %lld ms\n", (long long)took);
    assert_true(took >= 720);
    assert_true(took < 8000);
    /* Waiting for its retry, a task is delayed (not queued). */
    NO_WAIT("--id", "rw-1", "--max-attempts", "2", "--retry-on-error", "--backoff", "20000",
            "dist.fail", "\"later\"");
    s_wait_state("rw-1", "delayed", 10000);
    dist_task_info_t *t = NULL;
    assert_int_equal(dist_client_lookup(g.c, "rw-1", 5000, &t), 0);
    assert_true(t->not_before_ms > 0);
    dist_task_info_destroy(&t);
    const char *ids[] = { "rw-1" };
    assert_int_equal(dist_client_cancel(g.c, ids, 1, 5000, NULL), 0);
}

static void s_iso(char *out, size_t cap, int64_t ms)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char day[32];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, cap, "%s.%03dZ", day, (int)(ms % 1000));
}

/* --delay and --at hold a task until its time (never earlier); --at in
 * the past runs now and says so. */
static void test_delay_and_at(void **state)
{
    (void)state;
    s_cluster(false);
    int64_t t0 = dt_now_ms();
    run_t r = DIST("submit", "--delay", "600", "dist.echo", "1");
    s_expect(&r, 0, "[1]\n", NULL);
    s_free(&r);
    int64_t took = dt_now_ms() - t0;
    assert_true(took >= 590);
    assert_true(took < 5000);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    char at[64];
    s_iso(at, sizeof at, now + 800);
    t0 = dt_now_ms();
    r = DIST("submit", "--at", at, "dist.echo", "2");
    s_expect(&r, 0, "[2]\n", NULL);
    s_free(&r);
    took = dt_now_ms() - t0;
    assert_true(took >= 700);
    assert_true(took < 5000);
    /* Unix milliseconds, in the past. */
    char past[32];
    snprintf(past, sizeof past, "%lld", (long long)(now - 60000));
    r = DIST("submit", "--at", past, "dist.echo", "3");
    s_expect(&r, 0, "[3]\n", "in the past: the task runs now");
    s_free(&r);
    /* A map with --delay: every item waits. */
    t0 = dt_now_ms();
    const char *argv[] = { DIST_CLI_BIN, "--master", g.endpoint, "map", "--delay", "400",
                           "dist.echo", NULL };
    char *out = NULL;
    assert_int_equal(dt_run(argv, NULL, "[1]\n[2]\n", &out, NULL, 30000), 0);
    assert_string_equal(out, "[1]\n[2]\n");
    free(out);
    assert_true(dt_now_ms() - t0 >= 390);
}

/* A busy one-process worker; low-priority tasks, then a high one: the
 * high one starts before the low ones that were still queued. */
static void test_priorities(void **state)
{
    (void)state;
    s_cluster(false);
    s_busy("p-busy", "1500");
    enum { NLOW = 6 };
    char low[NLOW][16];
    for (int i = 0; i < NLOW; i++) {
        snprintf(low[i], sizeof low[i], "p-low-%d", i);
        NO_WAIT("--id", low[i], "dist.sleep", "50");
    }
    NO_WAIT("--id", "p-high", "--priority", "7", "dist.sleep", "50");
    s_wait_state("p-high", "done", 20000);
    for (int i = 0; i < NLOW; i++)
        s_wait_state(low[i], "done", 20000);
    dist_task_info_t *t = NULL;
    assert_int_equal(dist_client_lookup(g.c, "p-high", 5000, &t), 0);
    int64_t high = t->started_ms;
    dist_task_info_destroy(&t);
    int after = 0;
    for (int i = 0; i < NLOW; i++) {
        assert_int_equal(dist_client_lookup(g.c, low[i], 5000, &t), 0);
        after += t->started_ms > high;
        dist_task_info_destroy(&t);
    }
    /* The worker may hold a prefetched low one or two already. */
    print_message("low tasks started after the high one: %d of %d\n", after, NLOW);
    assert_true(after >= NLOW - 2);
}

/* The dead letters: a task that failed for good is listed with its
 * reasons; `dist retry` submits it again with fresh attempts. */
static void test_failed_and_retry(void **state)
{
    (void)state;
    s_cluster(false);
    NO_WAIT("--id", "dl-1", "--max-attempts", "1", "dist.fail", "\"dead letter\"");
    s_wait_state("dl-1", "failed", 10000);
    run_t r = DIST("failed", "--json");
    s_expect(&r, 0, NULL, NULL);
    json_t *j = json_loads(r.out, 0, NULL);
    s_free(&r);
    assert_true(json_is_array(j));
    bool found = false;
    for (size_t i = 0; i < json_array_size(j); i++) {
        json_t *t = json_array_get(j, i);
        if (strcmp(s_jstr(t, "id"), "dl-1") == 0) {
            found = true;
            assert_string_equal(s_jstr(t, "state"), "failed");
            assert_non_null(strstr(s_jstr(t, "error"), "dead letter"));
        }
    }
    json_decref(j);
    assert_true(found);
    r = DIST("failed");
    s_expect(&r, 0, NULL, NULL);
    assert_non_null(strstr(r.out, "dl-1"));
    s_free(&r);
    r = DIST("retry", "dl-1", "not-dead");
    s_expect(&r, 1, NULL, NULL);
    if (!strstr(r.out, "dl-1 queued\n") && !strstr(r.out, "dl-1 leased\n") &&
        !strstr(r.out, "dl-1 failed\n"))
        fail_msg("retry printed %s", r.out);
    assert_non_null(strstr(r.out, "not-dead unknown\n"));
    s_free(&r);
    /* It runs again (and fails again): back in the list. */
    s_wait_state("dl-1", "failed", 10000);
    dist_task_info_t **list = NULL;
    size_t n = 0;
    assert_int_equal(dist_client_failed(g.c, 0, 5000, &list, &n), 0);
    found = false;
    for (size_t i = 0; i < n; i++)
        found |= strcmp(list[i]->id, "dl-1") == 0;
    dist_task_infos_destroy(&list, n);
    assert_true(found);
}

static size_t s_count(const char *s, char c)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

/* `dist map` of 200 x dist.sleep 200 on a one-process worker, SIGINT
 * after about a second: exit 130, whole lines, the summary on stderr, and
 * nothing of the map left queued or running in the master. */
static void test_map_interrupted(void **state)
{
    (void)state;
    s_cluster(false);
    char in[128], out[128], err[128];
    snprintf(in, sizeof in, "%s.in", g.log);
    snprintf(out, sizeof out, "%s.out", g.log);
    snprintf(err, sizeof err, "%s.err", g.log);
    FILE *f = fopen(in, "w");
    for (int i = 0; i < 200; i++)
        fprintf(f, "[200]\n");
    fclose(f);
    const char *argv[] = { DIST_CLI_BIN, "--master", g.endpoint, "map", "dist.sleep", NULL };
    dt_spawn_opts_t o = { .in = { DT_IO_FILE, in, NULL }, .out = { DT_IO_FILE, out, NULL },
                          .err = { DT_IO_FILE, err, NULL } };
    pid_t p = dt_spawn(argv, &o);
    /* About a second in: once the master has a first result (a loaded
     * machine may take longer to start), half a second more. Its output
     * is buffered: the file shows nothing before the end. */
    dt_sleep_ms(500);
    int64_t until = dt_now_ms() + 15000;
    while (s_counter("completed") < 1 && dt_now_ms() < until)
        dt_sleep_ms(20);
    assert_true(s_counter("completed") >= 1);
    dt_sleep_ms(500);
    dt_signal(p, SIGINT);
    assert_int_equal(dt_wait(p, 15000), 130);
    FILE *fo = fopen(out, "r");
    char text[8192] = "";
    size_t len = fread(text, 1, sizeof text - 1, fo);
    fclose(fo);
    text[len] = 0;
    size_t lines = s_count(text, '\n');
    assert_true(len == 0 || text[len - 1] == '\n'); /* never half a line */
    for (char *l = text; *l; l = strchr(l, '\n') + 1)
        assert_memory_equal(l, "200\n", 4);
    assert_true(dt_wait_text(err, "dist: interrupted: ", 1000));
    FILE *fe = fopen(err, "r");
    char line[256] = "";
    size_t written = 0, cancelled = 0;
    while (fgets(line, sizeof line, fe))
        if (sscanf(line, "dist: interrupted: %zu results written, %zu tasks cancelled", &written,
                   &cancelled) == 2)
            break;
    fclose(fe);
    print_message("%zu written, %zu cancelled\n", written, cancelled);
    assert_int_equal(written, lines);
    assert_int_equal(written + cancelled, 200);
    assert_true(written >= 1 && written < 150);
    /* Nothing of it waits or runs in the master. */
    int64_t end = dt_now_ms() + 5000;
    while (dt_now_ms() < end &&
           (s_queue("dist.sleep", "depth") != 0 || s_queue("dist.sleep", "in_flight") != 0))
        dt_sleep_ms(50);
    assert_int_equal(s_queue("dist.sleep", "depth"), 0);
    assert_int_equal(s_queue("dist.sleep", "in_flight"), 0);
    assert_int_equal(s_queue("dist.sleep", "delayed"), 0);
    unlink(in);
    unlink(out);
    unlink(err);
}

/* With --store, a kill -9 of the master keeps a delayed task delayed, a
 * task waiting for its retry waiting, a cancelled task cancelled. */
static void test_store_keeps_states(void **state)
{
    (void)state;
    s_cluster(true);
    NO_WAIT("--id", "k-delayed", "--delay", "60000", "dist.echo", "1");
    NO_WAIT("--id", "k-retry", "--max-attempts", "3", "--retry-on-error", "--backoff", "60000",
            "dist.fail", "\"again\"");
    NO_WAIT("--id", "k-cancel", "--delay", "60000", "dist.echo", "1");
    run_t r = DIST("cancel", "k-cancel");
    s_expect(&r, 0, "k-cancel cancelled\n", NULL);
    s_free(&r);
    s_wait_state("k-retry", "delayed", 10000);
    dist_client_destroy(&g.c);
    dt_signal(g.master, SIGKILL);
    assert_int_equal(dt_wait(g.master, 5000), 128 + SIGKILL);
    s_master(true);
    g.c = s_client();
    s_assert_cli_state("k-delayed", "delayed");
    s_assert_cli_state("k-retry", "delayed");
    s_assert_cli_state("k-cancel", "cancelled");
    r = DIST("result", "k-cancel");
    s_expect(&r, 1, "", "cancelled");
    s_free(&r);
}

/* A result nobody takes is dropped after --result-ttl: `dist result` and
 * `dist status --task` say expired. */
static void test_result_expires(void **state)
{
    (void)state;
    s_cluster_ttl(false, "300");
    NO_WAIT("--id", "ttl-1", "dist.echo", "1");
    s_wait_state("ttl-1", "expired", 5000);
    run_t r = DIST("result", "ttl-1");
    s_expect(&r, 1, "", "the result of task ttl-1 expired");
    s_free(&r);
    s_assert_cli_state("ttl-1", "expired");
}

int main(void)
{
    unsetenv("DIST_MASTER");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ids_no_wait_and_result, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_status_task_states, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_cancel, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_retry_policies, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_delay_and_at, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_priorities, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_failed_and_retry, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_map_interrupted, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_store_keeps_states, s_setup, s_teardown),
        cmocka_unit_test_setup_teardown(test_result_expires, s_setup, s_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    zsys_shutdown();
    return rc;
}

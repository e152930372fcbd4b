/* test_worker.c - the worker (dist/worker.h) against a fake master: a
 * ROUTER socket in this test, driven through proto_internal.h. The worker
 * runs in a thread of this process (dist_worker_new here, dist_worker_run
 * there), or as the dist-worker program in a child process. The test
 * tasks (tests/plugins/test_tasks.c) are compiled in, and loaded by the
 * program as a plugin. */
#include <czmq.h>
#include <dist.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "proto_internal.h"
#include "testutil.h"

static char s_host[256];

static void s_tlog(dist_log_level_t level, const char *component, const char *msg, void *ud)
{
    (void)ud;
    if (getenv("DIST_TEST_LOG"))
        fprintf(stderr, "[%s] %s: %s\n", dist_log_level_name(level), component, msg);
}

/* ---- the fake master ---------------------------------------------------- */

typedef struct {
    zsock_t *router;
    char ep[64];
    uint8_t rid[256];
    size_t rid_len;
    dist_wire_buf_t *buf;
    long credit;   /* capacity of the last CREDIT, -1 before any */
    int credits;   /* CREDITs seen */
} fm_t;

/* Picks a free port on 127.0.0.1 for the fake master, without binding it
 * yet: a worker created in this process forks its pool, and the pool's
 * processes would keep a listening socket that exists then open (see
 * s_start). */
static void fm_reserve(fm_t *f)
{
    memset(f, 0, sizeof *f);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t alen = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    snprintf(f->ep, sizeof f->ep, "tcp://127.0.0.1:%d", ntohs(a.sin_port));
    f->buf = dist_wire_buf_new(0);
    f->credit = -1;
}

/* Binds the fake master's ROUTER (again, after a restart). */
static void fm_bind(fm_t *f)
{
    f->router = zsock_new(ZMQ_ROUTER);
    assert_non_null(f->router);
    dist__sock_setup(f->router, true, NULL);
    if (zsock_bind(f->router, "%s", f->ep) < 0)
        fail_msg("cannot bind %s: %s", f->ep, zmq_strerror(errno));
}

static void fm_open(fm_t *f)
{
    fm_reserve(f);
    fm_bind(f);
}

static void fm_close(fm_t *f)
{
    zsock_destroy(&f->router);
    dist_wire_buf_destroy(&f->buf);
}

/* The next message from the worker within timeout_ms: 0 or DIST_ETIMEDOUT. */
static int fm_recv(fm_t *f, int timeout_ms, dist__inmsg_t *m)
{
    int64_t end = dt_now_ms() + timeout_ms;
    dist_wire_limits_t lim = dist__body_limits(0);
    for (;;) {
        int r = dist__proto_recv(f->router, true, &lim, m);
        if (r == 0) {
            memcpy(f->rid, m->rid, m->rid_len);
            f->rid_len = m->rid_len;
            if (m->cmd == DIST__CMD_CREDIT) {
                dist__credit_t c;
                assert_int_equal(dist__parse_credit(m->root, &c), 0);
                f->credit = c.capacity;
                f->credits++;
            }
            return 0;
        }
        assert_int_equal(r, DIST_EAGAIN); /* the worker sends nothing malformed */
        int64_t left = end - dt_now_ms();
        if (left <= 0)
            return DIST_ETIMEDOUT;
        zmq_pollitem_t it = { zsock_resolve(f->router), 0, ZMQ_POLLIN, 0 };
        zmq_poll(&it, 1, (long)left);
    }
}

/* Waits for a message of command cmd, skipping HEARTBEAT and CREDIT (the
 * latter recorded in f->credit); anything else fails the test. */
static void fm_expect(fm_t *f, dist__cmd_t cmd, int timeout_ms, dist__inmsg_t *m)
{
    int64_t end = dt_now_ms() + timeout_ms;
    for (;;) {
        int64_t left = end - dt_now_ms();
        if (fm_recv(f, left > 0 ? (int)left : 0, m) != 0)
            fail_msg("no %s within %d ms", dist__cmd_name(cmd), timeout_ms);
        if (m->cmd == cmd)
            return;
        if (m->cmd != DIST__CMD_HEARTBEAT && m->cmd != DIST__CMD_CREDIT)
            fail_msg("expected %s, got %s", dist__cmd_name(cmd), dist__cmd_name(m->cmd));
        dist__inmsg_clear(m);
    }
}

static void fm_send(fm_t *f, dist__cmd_t cmd)
{
    assert_int_equal(dist__proto_send_buf(f->router, f->rid, f->rid_len, cmd, f->buf), 0);
    dist_wire_buf_reset(f->buf);
}

static void fm_welcome(fm_t *f, uint32_t hb_ms, uint32_t hb_timeout_ms)
{
    dist__welcome_t w = { .master = { "fake:1", 6 }, .version = { "test", 4 },
                          .heartbeat_ms = hb_ms, .heartbeat_timeout_ms = hb_timeout_ms,
                          .max_message = 64 << 20, .max_batch = 10000 };
    dist__pack_welcome(dist_wire_buf_packer(f->buf), &w);
    fm_send(f, DIST__CMD_WELCOME);
}

/* Reads the HELLO and answers WELCOME; returns the capacity announced. */
static uint32_t fm_accept(fm_t *f, uint32_t hb_ms, uint32_t hb_timeout_ms)
{
    dist__inmsg_t m;
    fm_expect(f, DIST__CMD_HELLO, 5000, &m);
    dist__hello_t h;
    assert_int_equal(dist__parse_hello(m.root, &h, NULL), 0);
    dist__inmsg_clear(&m);
    fm_welcome(f, hb_ms, hb_timeout_ms);
    return h.capacity;
}

/* ---- tasks and their answers ---------------------------------------------- */

#define A_NONE (-1)
#define A_RETURNED 100

typedef struct {
    dist__task_t t;
    int status; /* A_NONE, a dist__status_t, or A_RETURNED */
    int answers;
    uint32_t retry_ms;
    char error[1024];
    unsigned char value[256];
    size_t value_len;
} ans_t;

static void s_task(ans_t *a, const char *name, const void *args, size_t len, uint32_t timeout_ms)
{
    memset(a, 0, sizeof *a);
    assert_int_equal(dist__id_random(&a->t.id), 0);
    a->t.attempt = 1;
    a->t.task = name;
    a->t.task_len = strlen(name);
    a->t.args = args;
    a->t.args_len = len;
    a->t.timeout_ms = timeout_ms;
    a->status = A_NONE;
}

static void fm_send_tasks(fm_t *f, ans_t *a, size_t n)
{
    msgpack_packer *pk = dist_wire_buf_packer(f->buf);
    dist__pack_list_head(pk, DIST__CMD_TASKS, n);
    for (size_t i = 0; i < n; i++)
        dist__pack_task(pk, &a[i].t, true);
    fm_send(f, DIST__CMD_TASKS);
}

static ans_t *s_find(ans_t *a, size_t n, const dist__id_t *id)
{
    for (size_t i = 0; i < n; i++)
        if (dist__id_eq(&a[i].t.id, id))
            return &a[i];
    fail_msg("an answer for a task that was never sent");
    return NULL;
}

/* Files the RESULTS or RETURN in m; returns how many items it had. */
static size_t s_file(ans_t *a, size_t n, const dist__inmsg_t *m)
{
    const msgpack_object *items;
    size_t k;
    if (m->cmd == DIST__CMD_RETURN) {
        assert_int_equal(dist__parse_list(m->root, DIST__CMD_RETURN, &items, &k), 0);
        for (size_t i = 0; i < k; i++) {
            dist__id_t id;
            assert_true(dist__list_id(&items[i], &id));
            ans_t *x = s_find(a, n, &id);
            x->answers++;
            x->status = A_RETURNED;
        }
        return k;
    }
    assert_int_equal(m->cmd, DIST__CMD_RESULTS);
    assert_int_equal(dist__parse_list(m->root, DIST__CMD_RESULTS, &items, &k), 0);
    for (size_t i = 0; i < k; i++) {
        dist__result_t r;
        assert_int_equal(dist__parse_result(&items[i], true, &r), 0);
        ans_t *x = s_find(a, n, &r.id);
        assert_int_equal(r.attempt, x->t.attempt);
        x->answers++;
        x->status = (int)r.status;
        if (r.status == DIST__ST_OK) {
            assert_true(r.value_len <= sizeof x->value);
            memcpy(x->value, r.value, r.value_len);
            x->value_len = r.value_len;
        } else {
            snprintf(x->error, sizeof x->error, "%.*s", (int)r.error_len, r.error);
            x->retry_ms = r.retry_ms;
        }
    }
    return k;
}

static bool s_all_answered(const ans_t *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i].answers == 0)
            return false;
    return true;
}

/* Receives until every task in a[0..n) is answered; each exactly once. */
static void fm_collect(fm_t *f, ans_t *a, size_t n, int timeout_ms)
{
    int64_t end = dt_now_ms() + timeout_ms;
    while (!s_all_answered(a, n)) {
        int64_t left = end - dt_now_ms();
        dist__inmsg_t m;
        if (fm_recv(f, left > 0 ? (int)left : 0, &m) != 0)
            fail_msg("tasks still unanswered after %d ms", timeout_ms);
        if (m.cmd == DIST__CMD_RESULTS || m.cmd == DIST__CMD_RETURN)
            s_file(a, n, &m);
        else if (m.cmd != DIST__CMD_HEARTBEAT && m.cmd != DIST__CMD_CREDIT)
            fail_msg("unexpected %s", dist__cmd_name(m.cmd));
        dist__inmsg_clear(&m);
    }
    for (size_t i = 0; i < n; i++)
        assert_int_equal(a[i].answers, 1);
}

static void s_assert_error(const ans_t *a, int status, const char *part)
{
    if (a->status != status)
        fail_msg("task %s: status %d, expected %d (%s)", a->t.task, a->status, status, a->error);
    if (!strstr(a->error, part))
        fail_msg("task %s: \"%s\" does not say \"%s\"", a->t.task, a->error, part);
    if (!strstr(a->error, s_host))
        fail_msg("task %s: \"%s\" does not name the host", a->t.task, a->error);
}

/* A file name for test.mark, and waiting for the file. */
static const char *s_mark_path(int n)
{
    static char buf[4][128];
    snprintf(buf[n], sizeof buf[n], "/tmp/dist_test_worker_%d_%d", (int)getpid(), n);
    unlink(buf[n]);
    return buf[n];
}

static void s_wait_file(const char *path, int timeout_ms)
{
    int64_t end = dt_now_ms() + timeout_ms;
    struct stat st;
    while (stat(path, &st) != 0) {
        if (dt_now_ms() > end)
            fail_msg("%s was not created within %d ms", path, timeout_ms);
        dt_sleep_ms(5);
    }
    unlink(path);
}

/* [path, ms] for test.mark, packed into buf. */
static size_t s_mark_args(unsigned char *buf, size_t cap, const char *path, int ms)
{
    dist_args_t *a = dist_args_new();
    dist_args_str(a, path);
    dist_args_int(a, ms);
    size_t len;
    const void *d = dist_args_data(a, &len);
    assert_true(len <= cap);
    memcpy(buf, d, len);
    dist_args_destroy(&a);
    return len;
}

/* ---- a worker in a thread of this process ----------------------------------- */

typedef struct {
    dist_worker_t *w;
    pthread_t th;
    int rc;
    bool joined;
} wr_t;

static void *s_run(void *arg)
{
    wr_t *r = arg;
    r->rc = dist_worker_run(r->w);
    return NULL;
}

static dist_worker_opts_t s_opts(int procs, int max_prefetch)
{
    dist_worker_opts_t o = { 0 };
    o.procs = procs;
    o.max_prefetch = max_prefetch;
    o.log = s_tlog;
    o.log_level = DIST_LOG_DEBUG;
    return o;
}

static void wr_start(wr_t *r, const dist_worker_opts_t *o)
{
    memset(r, 0, sizeof *r);
    r->w = dist_worker_new(o);
    assert_non_null(r->w);
    assert_int_equal(pthread_create(&r->th, NULL, s_run, r), 0);
}

/* A worker in a thread, then its fake master: the worker forks its pool
 * before the master's listening socket exists, as dist-worker does before
 * it has any socket. (A pool forked later would inherit the listening
 * socket, and a master could not bind its port again after a restart.) */
static void s_start(fm_t *f, wr_t *r, dist_worker_opts_t *o)
{
    fm_reserve(f);
    o->master = f->ep;
    wr_start(r, o);
    fm_bind(f);
}

/* Waits (a bounded time) for run() to return; its return value. */
static int wr_join(wr_t *r, int timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    if (pthread_timedjoin_np(r->th, NULL, &ts) != 0)
        fail_msg("dist_worker_run did not return within %d ms", timeout_ms);
    r->joined = true;
    return r->rc;
}

static void wr_destroy(wr_t *r)
{
    dist_worker_destroy(&r->w); /* stops a running worker and waits for it */
    if (!r->joined)
        pthread_join(r->th, NULL);
    assert_null(r->w);
}

/* A fake master and a worker in a thread with options o, welcomed: the
 * capacity it announced. */
static uint32_t s_setup_opts(fm_t *f, wr_t *r, dist_worker_opts_t *o)
{
    s_start(f, r, o);
    return fm_accept(f, 1000, 5000);
}

static uint32_t s_setup(fm_t *f, wr_t *r, int procs, int max_prefetch)
{
    dist_worker_opts_t o = s_opts(procs, max_prefetch);
    return s_setup_opts(f, r, &o);
}

static void s_teardown(fm_t *f, wr_t *r)
{
    wr_destroy(r);
    fm_close(f);
}

/* For a worker with one slot: sends a[0] = test.mark for ms and a[1] =
 * test.sleep [10] in one TASKS, and returns once a[0] has started; a[1]
 * then waits in the worker. n picks the mark file. */
static void s_running_and_queued(fm_t *f, ans_t a[2], int n, int ms)
{
    static unsigned char args[4][256];
    const char *path = s_mark_path(n);
    size_t len = s_mark_args(args[n], sizeof args[n], path, ms);
    s_task(&a[0], "test.mark", args[n], len, 0);
    s_task(&a[1], "test.sleep", "\x91\x0a", 2, 0);
    fm_send_tasks(f, a, 2);
    s_wait_file(path, 10000);
}

/* ---- tests --------------------------------------------------------------------- */

static bool s_has_name(const msgpack_object *items, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (items[i].type == MSGPACK_OBJECT_STR && items[i].via.str.size == strlen(name) &&
            memcmp(items[i].via.str.ptr, name, strlen(name)) == 0)
            return true;
    return false;
}

/* The first ZeroMQ socket of a process (czmq) installs SIGINT and SIGTERM
 * handlers that only set a flag; the worker keeps the program's own. This
 * test must create the process's first socket: it runs first. */
static void test_signal_handling_untouched(void **state)
{
    (void)state;
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    dist_worker_opts_t o = s_opts(1, 0);
    o.master = "tcp://127.0.0.1:1";
    dist_worker_t *w = dist_worker_new(&o);
    assert_non_null(w);
    struct sigaction sa;
    sigaction(SIGTERM, NULL, &sa);
    assert_true(sa.sa_handler == SIG_DFL);
    sigaction(SIGINT, NULL, &sa);
    assert_true(sa.sa_handler == SIG_DFL);
    dist_worker_destroy(&w);
}

static void test_hello_heartbeat_bye(void **state)
{
    (void)state;
    fm_t f;
    wr_t r;
    dist_worker_opts_t o = s_opts(2, 0);
    o.name = "w1";
    s_start(&f, &r, &o);

    dist__inmsg_t m;
    fm_expect(&f, DIST__CMD_HELLO, 5000, &m);
    dist__hello_t h;
    assert_int_equal(dist__parse_hello(m.root, &h, NULL), 0);
    assert_int_equal(h.role, DIST__PEER_WORKER);
    assert_true(h.name.n == 2 && memcmp(h.name.s, "w1", 2) == 0);
    assert_true(h.host.n == strlen(s_host) && memcmp(h.host.s, s_host, h.host.n) == 0);
    assert_int_equal(h.pid, getpid());
    assert_int_equal(h.slots, 2);
    assert_int_equal(h.capacity, 4); /* slots + one prefetched task per slot */
    const msgpack_object *names = h.tasks;
    size_t n = h.ntasks;
    assert_int_equal(n, dist_task_count());
    for (const char *const *t = (const char *const[]){ "dist.echo", "dist.sleep", "dist.exec",
                                                       "test.square", "test.crash", NULL };
         *t; t++)
        if (!s_has_name(names, n, *t))
            fail_msg("HELLO does not announce %s", *t);
    dist__inmsg_clear(&m);

    /* Not welcomed: HELLO again, about a second later. */
    int64_t t0 = dt_now_ms();
    fm_expect(&f, DIST__CMD_HELLO, 3000, &m);
    assert_true(dt_now_ms() - t0 >= 500);
    dist__inmsg_clear(&m);

    /* Welcomed with 100 ms heartbeats: an idle worker heartbeats. */
    fm_welcome(&f, 100, 5000);
    fm_expect(&f, DIST__CMD_HEARTBEAT, 2000, &m);
    dist__inmsg_clear(&m);
    fm_expect(&f, DIST__CMD_HEARTBEAT, 2000, &m);
    dist__inmsg_clear(&m);

    /* Stopping an idle worker: CREDIT 0, BYE, run() returns 0. */
    dist_worker_stop(r.w);
    fm_expect(&f, DIST__CMD_BYE, 5000, &m);
    dist__inmsg_clear(&m);
    assert_int_equal(f.credit, 0);
    assert_int_equal(wr_join(&r, 5000), 0);
    s_teardown(&f, &r);
}

static void test_results_of_every_kind(void **state)
{
    (void)state;
    fm_t f;
    wr_t r;
    assert_int_equal(s_setup(&f, &r, 2, 0), 4);

    /* Within the capacity of 4: answered at once (unknown, bad args) or run. */
    ans_t a[4];
    s_task(&a[0], "dist.echo", "\x92\x01\xa1x", 4, 0);
    s_task(&a[1], "test.square", "\x91\x07", 2, 0);
    s_task(&a[2], "test.fail", "\x91\xa4" "boom", 6, 0);
    s_task(&a[3], "nope.task", "\x90", 1, 0);
    fm_send_tasks(&f, a, 4);
    fm_collect(&f, a, 4, 10000);
    assert_int_equal(a[0].status, DIST__ST_OK);
    assert_int_equal(a[0].value_len, 4);
    assert_memory_equal(a[0].value, "\x92\x01\xa1x", 4);
    assert_int_equal(a[1].status, DIST__ST_OK);
    assert_int_equal(a[1].value_len, 1);
    assert_int_equal(a[1].value[0], 49);
    s_assert_error(&a[2], DIST__ST_FAILED, "boom");
    s_assert_error(&a[2], DIST__ST_FAILED, "test.fail");
    s_assert_error(&a[3], DIST__ST_UNKNOWN_TASK, "nope.task");

    ans_t b[4];
    s_task(&b[0], "test.square", "\x05", 1, 0);    /* not an array */
    s_task(&b[1], "test.square", "\x92\x01", 2, 0); /* an array cut short */
    s_task(&b[2], "test.crash", "\x90", 1, 0);
    s_task(&b[3], "test.sleep", "\x91\xcd\x13\x88", 4, 300); /* 5000 ms, timeout 300 */
    fm_send_tasks(&f, b, 4);
    fm_collect(&f, b, 4, 15000);
    s_assert_error(&b[0], DIST__ST_BAD_ARGS, "not one MessagePack array");
    s_assert_error(&b[1], DIST__ST_BAD_ARGS, "not one MessagePack array");
    s_assert_error(&b[2], DIST__ST_CRASHED, "signal 11");
    s_assert_error(&b[2], DIST__ST_CRASHED, "SIGSEGV");
    s_assert_error(&b[2], DIST__ST_CRASHED, "pool process ");
    s_assert_error(&b[2], DIST__ST_CRASHED, "test.crash");
    s_assert_error(&b[3], DIST__ST_TIMEOUT, "timed out");
    s_assert_error(&b[3], DIST__ST_TIMEOUT, "test.sleep");

    ans_t c[4];
    s_task(&c[0], "test.none", "\x90", 1, 0);
    s_task(&c[1], "dist.exec", "\x91\x91\xa4true", 7, 0);
    s_task(&c[2], "dist.sleep", "\x91\x0a", 2, 0);
    c[2].t.attempt = 3; /* answered with the attempt it was sent with */
    s_task(&c[3], "test.bytes", "\x91\xce\x00\x4c\x4b\x40", 6, 0); /* 5,000,000 > 4 MiB */
    fm_send_tasks(&f, c, 4);
    fm_collect(&f, c, 4, 10000);
    assert_int_equal(c[0].status, DIST__ST_OK); /* packed nothing: nil */
    assert_int_equal(c[0].value_len, 1);
    assert_int_equal((unsigned char)c[0].value[0], 0xc0);
    s_assert_error(&c[1], DIST__ST_FAILED,
                   "dist.exec is disabled on this worker (start it with --allow-exec)");
    assert_int_equal(c[2].status, DIST__ST_OK);
    assert_int_equal(c[2].value[0], 10);
    s_assert_error(&c[3], DIST__ST_TOO_LARGE, "exceeds");

    /* Task maps the codec refuses: answered when they can be named. */
    ans_t d[2];
    s_task(&d[0], "test.square", "\x91\x01", 2, 0);
    s_task(&d[1], "x y", "\x90", 1, 0);
    msgpack_packer *pk = dist_wire_buf_packer(f.buf);
    msgpack_pack_map(pk, 1);
    dist__pk_str(pk, "tasks");
    msgpack_pack_array(pk, 3);
    msgpack_pack_map(pk, 3); /* no args */
    dist__pk_kv_id(pk, "id", &d[0].t.id);
    dist__pk_kv_u64(pk, "attempt", 1);
    dist__pk_kv_str(pk, "task", "test.square");
    dist__pack_task(pk, &d[1].t, true); /* not a valid name */
    msgpack_pack_map(pk, 1);            /* nothing to answer to */
    dist__pk_kv_str(pk, "task", "test.square");
    fm_send(&f, DIST__CMD_TASKS);
    fm_collect(&f, d, 2, 10000);
    s_assert_error(&d[0], DIST__ST_BAD_ARGS, "malformed task map");
    s_assert_error(&d[1], DIST__ST_UNKNOWN_TASK, "not a valid task name");

    s_teardown(&f, &r);
}

/* [[sh, -c, script], nil, timeout_ms, check] for dist.exec, packed into buf. */
static size_t s_sh_args(unsigned char *buf, size_t cap, const char *script, int timeout_ms, int check)
{
    dist_args_t *a = dist_args_new();
    msgpack_packer *pk = dist_args_packer(a);
    msgpack_pack_array(pk, 3);
    dist__pk_str(pk, "sh");
    dist__pk_str(pk, "-c");
    dist__pk_str(pk, script);
    dist_args_nil(a);
    dist_args_int(a, timeout_ms);
    if (check == 0 || check == 1)
        dist_args_bool(a, check == 1);
    else
        dist_args_str(a, "yes"); /* not a boolean */
    size_t len;
    const void *d = dist_args_data(a, &len);
    assert_true(len <= cap);
    memcpy(buf, d, len);
    dist_args_destroy(&a);
    return len;
}

/* The integer value of an ok answer, or its field `key` when not NULL. */
static int64_t s_value_int(const ans_t *a, const char *key)
{
    assert_int_equal(a->status, DIST__ST_OK);
    dist_wire_msg_t *v = dist_wire_msg_decode(a->value, a->value_len, NULL, NULL);
    assert_non_null(v);
    const msgpack_object *root = dist_wire_msg_root(v);
    int64_t x;
    assert_int_equal(dist_obj_int(key ? dist_wire_map_get(root, key) : root, &x), 0);
    dist_wire_msg_destroy(&v);
    return x;
}

/* dist.fail fails with its message; dist.exec with check fails on a
 * status other than 0 (or a signal), naming it and the head of stderr. */
static void test_fail_and_exec_check(void **state)
{
    (void)state;
    fm_t f;
    wr_t r;
    dist_worker_opts_t o = s_opts(2, 0);
    o.allow_exec = true;
    s_setup_opts(&f, &r, &o);

    ans_t a[3];
    s_task(&a[0], "dist.fail", "\x90", 1, 0);
    s_task(&a[1], "dist.fail", "\x91\xa4" "oops", 6, 0);
    s_task(&a[2], "dist.fail", "\x91\x01", 2, 0);
    fm_send_tasks(&f, a, 3);
    fm_collect(&f, a, 3, 10000);
    s_assert_error(&a[0], DIST__ST_FAILED, ": dist.fail");
    s_assert_error(&a[1], DIST__ST_FAILED, ": oops");
    s_assert_error(&a[2], DIST__ST_FAILED, "dist.fail: expected [message?]");

    static unsigned char args[6][256];
    ans_t e[6];
    size_t n0 = s_sh_args(args[0], sizeof args[0], "echo 'it broke' >&2; exit 4", 0, 1);
    size_t n1 = s_sh_args(args[1], sizeof args[1], "kill -9 $$", 0, 1);
    size_t n2 = s_sh_args(args[2], sizeof args[2], "echo fine", 0, 1);
    size_t n3 = s_sh_args(args[3], sizeof args[3], "exit 3", 0, 0);
    size_t n4 = s_sh_args(args[4], sizeof args[4], "exit 0", 0, 2);
    size_t n5 = s_sh_args(args[5], sizeof args[5], "exit 5", 0, 1);
    s_task(&e[0], "dist.exec", args[0], n0, 0);
    s_task(&e[1], "dist.exec", args[1], n1, 0);
    s_task(&e[2], "dist.exec", args[2], n2, 0);
    s_task(&e[3], "dist.exec", args[3], n3, 0);
    s_task(&e[4], "dist.exec", args[4], n4, 0);
    s_task(&e[5], "dist.exec", args[5], n5, 0);
    fm_send_tasks(&f, e, 2);
    fm_collect(&f, e, 2, 10000);
    fm_send_tasks(&f, e + 2, 4);
    fm_collect(&f, e + 2, 4, 10000);
    s_assert_error(&e[0], DIST__ST_FAILED, "dist.exec: sh exited with status 4; stderr: it broke");
    s_assert_error(&e[1], DIST__ST_FAILED, "dist.exec: sh was killed by signal 9");
    assert_int_equal(e[2].status, DIST__ST_OK); /* checked and 0: the usual map */
    assert_int_equal(s_value_int(&e[2], "status"), 0);
    assert_int_equal(e[3].status, DIST__ST_OK); /* not checked: a status, not an error */
    assert_int_equal(s_value_int(&e[3], "status"), 3);
    s_assert_error(&e[4], DIST__ST_FAILED, "dist.exec: check must be a boolean");
    s_assert_error(&e[5], DIST__ST_FAILED, "exited with status 5 (nothing on stderr)");
    s_teardown(&f, &r);
}

/* CANCEL {ids} from the (fake) master. */
static void fm_cancel(fm_t *f, const dist__id_t *ids, size_t n)
{
    msgpack_packer *pk = dist_wire_buf_packer(f->buf);
    dist__ids_req_t q = { .nids = n };
    dist__pack_ids_req(pk, &q, false);
    for (size_t i = 0; i < n; i++)
        dist__pk_id(pk, &ids[i]);
    fm_send(f, DIST__CMD_CANCEL);
}

/* The pid of the worker's (one) pool process, by test.pid. */
static int64_t s_pool_pid(fm_t *f)
{
    ans_t a;
    s_task(&a, "test.pid", "\x90", 1, 0);
    fm_send_tasks(f, &a, 1);
    fm_collect(f, &a, 1, 10000);
    return s_value_int(&a, NULL);
}

/* CANCEL: a task waiting in the worker is RETURNed; a running one (a
 * 20-second sleep) is killed at once and answered `cancelled`, its pool
 * process replaced, and the next task runs. Ids not held are ignored. */
static void test_cancel(void **state)
{
    (void)state;
    fm_t f;
    wr_t r;
    assert_int_equal(s_setup(&f, &r, 1, 0), 2);
    int64_t pid0 = s_pool_pid(&f);

    ans_t a[2];
    s_running_and_queued(&f, a, 0, 20000); /* a[0] runs (test.mark: a sleep), a[1] waits */
    fm_cancel(&f, &a[1].t.id, 1);
    fm_collect(&f, a + 1, 1, 5000);
    assert_int_equal(a[1].status, A_RETURNED);

    dist__id_t ids[2] = { a[0].t.id };
    assert_int_equal(dist__id_random(&ids[1]), 0); /* unknown here */
    int64_t t0 = dt_now_ms();
    fm_cancel(&f, ids, 2);
    fm_collect(&f, a, 1, 10000);
    int64_t took = dt_now_ms() - t0;
    if (took > 5000)
        fail_msg("the cancelled task was answered after %lld ms", (long long)took);
    s_assert_error(&a[0], DIST__ST_CANCELLED, "test.mark was cancelled while running");
    s_assert_error(&a[0], DIST__ST_CANCELLED, "was stopped");

    /* A second CANCEL of it: already answered, nothing more is sent. */
    fm_cancel(&f, &a[0].t.id, 1);
    int64_t pid1 = s_pool_pid(&f);
    assert_true(pid1 != pid0);
    ans_t b;
    s_task(&b, "test.square", "\x91\x07", 2, 0);
    fm_send_tasks(&f, &b, 1);
    fm_collect(&f, &b, 1, 10000);
    assert_int_equal(b.status, DIST__ST_OK);
    assert_int_equal(b.value[0], 49);

    /* A malformed CANCEL is dropped, and the worker goes on. */
    msgpack_packer *pk = dist_wire_buf_packer(f.buf);
    msgpack_pack_map(pk, 1);
    dist__pk_str(pk, "ids");
    msgpack_pack_array(pk, 1);
    dist__pk_str(pk, "not an id");
    fm_send(&f, DIST__CMD_CANCEL);
    s_task(&b, "test.square", "\x91\x03", 2, 0);
    fm_send_tasks(&f, &b, 1);
    fm_collect(&f, &b, 1, 10000);
    assert_int_equal(b.value[0], 9);
    s_teardown(&f, &r);
}

/* dist_task_retry: status retry with retry_ms and the reason. */
static void test_retry_status(void **state)
{
    (void)state;
    fm_t f;
    wr_t r;
    s_setup(&f, &r, 1, 0);
    ans_t a[2];
    s_task(&a[0], "test.retry", "\x92\xcd\x05\xdc\xa7" "db busy", 12, 0); /* [1500, "db busy"] */
    s_task(&a[1], "test.retry", "\x92\x00\xa0", 3, 0);                     /* [0, ""] */
    fm_send_tasks(&f, a, 2);
    fm_collect(&f, a, 2, 10000);
    s_assert_error(&a[0], DIST__ST_RETRY, "test.retry on host");
    s_assert_error(&a[0], DIST__ST_RETRY, ": retry requested: db busy");
    assert_int_equal(a[0].retry_ms, 1500);
    s_assert_error(&a[1], DIST__ST_RETRY, ": retry requested");
    assert_int_equal(a[1].retry_ms, 0);
    s_teardown(&f, &r);
}

static void test_threads_backend(void **state)
{
    (void)state;
    fm_t f;
    wr_t r;
    dist_worker_opts_t o = s_opts(2, 0);
    o.threads = true;
    s_setup_opts(&f, &r, &o);
    ans_t a[2];
    s_task(&a[0], "test.square", "\x91\x09", 2, 0);
    s_task(&a[1], "test.fail", "\x90", 1, 0);
    fm_send_tasks(&f, a, 2);
    fm_collect(&f, a, 2, 10000);
    assert_int_equal(a[0].status, DIST__ST_OK);
    assert_int_equal(a[0].value[0], 81);
    s_assert_error(&a[1], DIST__ST_FAILED, "failing on purpose");
    dist_worker_stop(r.w);
    assert_int_equal(wr_join(&r, 5000), 0);
    s_teardown(&f, &r);
}

/* A master that sends more than the credit gets the extra tasks back at
 * once, unstarted; the worker never holds more than its capacity. */
static void test_flood_beyond_credit(void **state)
{
    (void)state;
    fm_t f;
    wr_t r;
    assert_int_equal(s_setup(&f, &r, 2, 1), 3);

    enum { N1 = 10, N2 = 2 };
    ans_t a[N1 + N2];
    for (int i = 0; i < N1 + N2; i++)
        s_task(&a[i], "test.sleep", "\x91\xcd\x03\xe8", 4, 0); /* 1000 ms */
    fm_send_tasks(&f, a, N1);
    /* The 7 beyond the capacity come back... */
    int returned = 0;
    while (returned < N1 - 3) {
        dist__inmsg_t m;
        fm_expect(&f, DIST__CMD_RETURN, 5000, &m);
        returned += (int)s_file(a, N1 + N2, &m);
        dist__inmsg_clear(&m);
    }
    assert_int_equal(returned, N1 - 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(a[i].answers, 0);
    /* ...and so does anything more while 3 are held. */
    fm_send_tasks(&f, a + N1, N2);
    while (returned < N1 - 3 + N2) {
        dist__inmsg_t m;
        fm_expect(&f, DIST__CMD_RETURN, 5000, &m);
        returned += (int)s_file(a, N1 + N2, &m);
        dist__inmsg_clear(&m);
    }
    assert_int_equal(a[N1].status, A_RETURNED);
    assert_int_equal(a[N1 + 1].status, A_RETURNED);
    /* Drain: the queued one comes back, the two running ones finish. */
    dist_worker_stop(r.w);
    fm_collect(&f, a, N1 + N2, 10000);
    int ok = 0;
    for (int i = 0; i < N1 + N2; i++)
        ok += a[i].status == DIST__ST_OK;
    assert_int_equal(ok, 2);
    dist__inmsg_t m;
    fm_expect(&f, DIST__CMD_BYE, 5000, &m);
    dist__inmsg_clear(&m);
    assert_int_equal(wr_join(&r, 5000), 0);
    s_teardown(&f, &r);
}

/* Tiny tasks: a master that keeps the credit full sees it grow beyond the
 * initial one task per slot. (How far depends on the machine: on an idle
 * one it reaches dozens at once; on a saturated one the pool's service
 * rate, and with it what 2 ms of work is, can be low.) */
static void test_prefetch_grows_with_tiny_tasks(void **state)
{
    (void)state;
    fm_t f;
    wr_t r;
    long cap = s_setup(&f, &r, 2, 0);
    assert_int_equal(cap, 4);
    long held = 0, sent = 0, done = 0;
    int64_t end = dt_now_ms() + 15000;
    enum { BATCH = 512 };
    static ans_t a[BATCH];
    while (f.credit <= 4) {
        if (dt_now_ms() > end)
            fail_msg("capacity still %ld after %ld tiny tasks", f.credit < 0 ? cap : f.credit, done);
        long room = (f.credit < 0 ? cap : f.credit) - held;
        if (room > BATCH)
            room = BATCH;
        if (room > 0) {
            for (long i = 0; i < room; i++)
                s_task(&a[i], "dist.echo", "\x91\x01", 2, 0);
            fm_send_tasks(&f, a, (size_t)room);
            held += room;
            sent += room;
        }
        dist__inmsg_t m;
        if (fm_recv(&f, 1000, &m) != 0)
            continue;
        if (m.cmd == DIST__CMD_RESULTS) {
            const msgpack_object *items;
            size_t k;
            assert_int_equal(dist__get_array(m.root, "results", &items, &k), 0);
            for (size_t i = 0; i < k; i++) {
                dist__result_t res;
                assert_int_equal(dist__parse_result(&items[i], true, &res), 0);
                assert_int_equal(res.status, DIST__ST_OK);
            }
            held -= (long)k;
            done += (long)k;
        } else if (m.cmd == DIST__CMD_RETURN) {
            fail_msg("the worker returned tasks although the credit was respected");
        }
        dist__inmsg_clear(&m);
    }
    assert_true(f.credit > 4);
    assert_true(f.credit <= 2 + 256);
    assert_true(done <= sent);
    s_teardown(&f, &r);
}

/* RECONNECT: HELLO again at once. The task running goes on, its result is
 * sent; the unstarted one is returned after the new WELCOME; the capacity
 * leaves room for the task still running from the old session. */
static void test_reconnect_says_hello_again(void **state)
{
    (void)state;
    fm_t f;
    wr_t r;
    assert_int_equal(s_setup(&f, &r, 1, 1), 2);
    ans_t a[2];
    s_running_and_queued(&f, a, 0, 800);

    dist_wire_buf_reset(f.buf);
    fm_send(&f, DIST__CMD_RECONNECT);
    dist__inmsg_t m;
    fm_expect(&f, DIST__CMD_HELLO, 2000, &m);
    uint32_t cap;
    assert_int_equal(dist__get_u32(m.root, "capacity", &cap), 0);
    assert_int_equal(cap, 1); /* 2, less the task still running */
    dist__inmsg_clear(&m);
    fm_welcome(&f, 1000, 5000);
    fm_collect(&f, a, 2, 10000);
    assert_int_equal(a[0].status, DIST__ST_OK);
    assert_int_equal(a[1].status, A_RETURNED);
    /* Once the old task is done, the whole capacity is offered again. */
    int64_t end = dt_now_ms() + 5000;
    while (f.credit != 2) {
        if (dt_now_ms() > end)
            fail_msg("no CREDIT 2 after the old session's task finished");
        if (fm_recv(&f, 500, &m) == 0)
            dist__inmsg_clear(&m);
    }
    s_teardown(&f, &r);
}

/* A master silent for its heartbeat timeout is lost: HELLO again. */
static void test_silent_master_is_lost(void **state)
{
    (void)state;
    fm_t f;
    wr_t r;
    dist_worker_opts_t o = s_opts(1, 0);
    s_start(&f, &r, &o);
    fm_accept(&f, 100, 400);
    dist__inmsg_t m;
    fm_expect(&f, DIST__CMD_HELLO, 3000, &m); /* after heartbeats, unanswered */
    dist__inmsg_clear(&m);
    fm_welcome(&f, 100, 5000);
    fm_expect(&f, DIST__CMD_HEARTBEAT, 2000, &m);
    dist__inmsg_clear(&m);
    s_teardown(&f, &r);
}

/* The master goes away and comes back (a restart on the same endpoint):
 * ZeroMQ reconnects, the worker says HELLO once at the new connection -
 * not once for every second of the absence - and the result of the task
 * that ran meanwhile still arrives. */
static void test_master_restart(void **state)
{
    (void)state;
    fm_t f;
    wr_t r;
    dist_worker_opts_t o = s_opts(1, 1);
    s_start(&f, &r, &o);
    fm_accept(&f, 100, 400); /* lost soon after the master goes */
    ans_t a[2];
    s_running_and_queued(&f, a, 0, 1500);
    zsock_destroy(&f.router);
    dt_sleep_ms(2500);
    fm_bind(&f);

    int hellos = 0;
    int64_t quiet_until = 0, end = dt_now_ms() + 10000;
    while (!quiet_until || dt_now_ms() < quiet_until) {
        if (dt_now_ms() > end)
            fail_msg("no HELLO after the master came back");
        dist__inmsg_t m;
        if (fm_recv(&f, 100, &m) != 0)
            continue;
        if (m.cmd == DIST__CMD_HELLO) {
            assert_int_equal(++hellos, 1);
            fm_welcome(&f, 1000, 5000);
            quiet_until = dt_now_ms() + 900; /* before the one-second HELLO timer */
        } else if (m.cmd == DIST__CMD_RESULTS || m.cmd == DIST__CMD_RETURN) {
            s_file(a, 2, &m);
        }
        dist__inmsg_clear(&m);
    }
    fm_collect(&f, a, 2, 10000);
    assert_int_equal(a[0].status, DIST__ST_OK);
    s_teardown(&f, &r);
}

/* Stop drains: CREDIT 0, the unstarted task returned, the running one's
 * result, tasks arriving meanwhile returned, then BYE. */
static void test_drain_on_stop(void **state)
{
    (void)state;
    fm_t f;
    wr_t r;
    assert_int_equal(s_setup(&f, &r, 1, 1), 2);
    ans_t a[3];
    s_running_and_queued(&f, a, 1, 500);
    s_task(&a[2], "test.square", "\x91\x03", 2, 0);
    dist_worker_stop(r.w);
    dist__inmsg_t m;
    fm_expect(&f, DIST__CMD_RETURN, 5000, &m);
    assert_int_equal(f.credit, 0); /* CREDIT 0 came first */
    s_file(a, 3, &m);
    dist__inmsg_clear(&m);
    assert_int_equal(a[1].status, A_RETURNED);
    fm_send_tasks(&f, a + 2, 1); /* sent before the master saw CREDIT 0 */
    fm_collect(&f, a, 3, 10000);
    assert_int_equal(a[0].status, DIST__ST_OK);
    assert_int_equal(a[2].status, A_RETURNED);
    assert_int_equal(f.credit, 0);
    fm_expect(&f, DIST__CMD_BYE, 5000, &m);
    dist__inmsg_clear(&m);
    assert_int_equal(wr_join(&r, 5000), 0);
    s_teardown(&f, &r);
}

/* A second stop does not wait for the running task. */
static void test_second_stop_is_immediate(void **state)
{
    (void)state;
    fm_t f;
    wr_t r;
    s_setup(&f, &r, 1, 1);
    ans_t a[2];
    s_running_and_queued(&f, a, 2, 60000);
    dist_worker_stop(r.w);
    dist__inmsg_t m;
    fm_expect(&f, DIST__CMD_RETURN, 5000, &m);
    s_file(a, 2, &m);
    dist__inmsg_clear(&m);
    dist_worker_stop(r.w);
    fm_expect(&f, DIST__CMD_BYE, 5000, &m); /* and no RESULTS before it */
    dist__inmsg_clear(&m);
    assert_int_equal(wr_join(&r, 10000), DIST_EINTR);
    assert_int_equal(a[0].answers, 0);
    assert_int_equal(a[1].status, A_RETURNED);
    s_teardown(&f, &r);
}

static void test_bad_options(void **state)
{
    (void)state;
    dist_worker_opts_t o = { 0 };
    o.master = "tcp://127.0.0.1:1";
    o.procs = -1;
    assert_null(dist_worker_new(&o));
    assert_int_equal(errno, EINVAL);
    o.procs = 1;
    o.key = "/nonexistent/key";
    assert_null(dist_worker_new(&o));
    assert_int_equal(errno, EINVAL);
    o.key = NULL;
    o.master = "nonsense";
    assert_null(dist_worker_new(&o));
    assert_int_equal(errno, EINVAL);
    /* Stopped before it runs: run() returns at once (nothing was held,
     * no master ever welcomed it), and only once. */
    o.master = "tcp://127.0.0.1:1";
    dist_worker_t *w = dist_worker_new(&o);
    assert_non_null(w);
    dist_worker_stop(w);
    assert_int_equal(dist_worker_run(w), 0);
    assert_int_equal(dist_worker_run(w), DIST_ESTATE);
    dist_worker_destroy(&w);
    assert_null(w);
    w = dist_worker_new(&o); /* destroyed without running */
    assert_non_null(w);
    dist_worker_destroy(&w);
    dist_worker_register_builtins(); /* idempotent */
    dist_worker_register_builtins();
    assert_non_null(dist_task_lookup("dist.exec"));
    dist_worker_destroy(NULL);
    dist_worker_stop(NULL);
    assert_int_equal(dist_worker_run(NULL), DIST_EINVAL);
}

/* ---- the dist-worker program ------------------------------------------------------ */

/* argv (32 slots) = DIST_WORKER_BIN then args. */
static void s_argv(const char **argv, const char *const *args)
{
    size_t n = 0;
    argv[n++] = DIST_WORKER_BIN;
    for (; *args && n < 31; args++)
        argv[n++] = *args;
    argv[n] = NULL;
}

/* Starts dist-worker with args; env (a "NAME=value", or NULL) replaces
 * DIST_MASTER in the environment. *out and *err get pipes when not NULL. */
static pid_t s_spawn(const char *const *args, const char *env, int *out, int *err)
{
    const char *argv[32];
    s_argv(argv, args);
    dt_spawn_opts_t o = { .env = (const char *const[]){ "DIST_MASTER", env, NULL } };
    if (out)
        o.out = (dt_stream_t){ DT_IO_PIPE, NULL, out };
    if (err)
        o.err = (dt_stream_t){ DT_IO_PIPE, NULL, err };
    return dt_spawn(argv, &o);
}

/* The exit status of pid, waiting at most timeout_ms (then it fails). */
static int s_exit_status(pid_t pid, int timeout_ms)
{
    int rc = dt_wait(pid, timeout_ms);
    if (rc == DT_TIMEOUT)
        fail_msg("dist-worker did not exit within %d ms", timeout_ms);
    if (rc > 128)
        fail_msg("dist-worker was killed by signal %d", rc - 128);
    return rc;
}

/* Runs dist-worker to completion: exit status, stdout, stderr. */
static int s_run_program(const char *const *args, char *out, char *err, size_t cap)
{
    const char *argv[32];
    s_argv(argv, args);
    char *o = NULL, *e = NULL;
    int rc = dt_run(argv, &(dt_spawn_opts_t){ .env = (const char *const[]){ "DIST_MASTER", NULL } },
                    NULL, &o, &e, 20000);
    snprintf(out, cap, "%s", o);
    snprintf(err, cap, "%s", e);
    free(o);
    free(e);
    if (rc == DT_TIMEOUT)
        fail_msg("dist-worker did not exit within 20000 ms");
    if (rc > 128)
        fail_msg("dist-worker was killed by signal %d", rc - 128);
    return rc;
}

static int s_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_program_usage(void **state)
{
    (void)state;
    static char out[16384], err[16384];
    assert_int_equal(s_run_program((const char *const[]){ "--help", NULL }, out, err, sizeof out), 0);
    for (const char *const *w = (const char *const[]){ "--master", "--connect", "--procs", "--tasks",
                                                       "--name", "--allow-exec", "--max-prefetch",
                                                       "--threads", "--log-level", "--version",
                                                       "DIST_MASTER", "Exit status", "default", NULL };
         *w; w++)
        if (!strstr(out, *w))
            fail_msg("--help does not mention %s", *w);
    assert_int_equal(s_run_program((const char *const[]){ "--version", NULL }, out, err, sizeof out), 0);
    assert_non_null(strstr(out, "dist-worker " DIST_VERSION_STRING));
    assert_int_equal(s_run_program((const char *const[]){ "--bogus", NULL }, out, err, sizeof out), 2);
    assert_non_null(strstr(err, "unknown option '--bogus'"));
    assert_non_null(strstr(err, "--help"));
    assert_int_equal(s_lines(err), 2);
    assert_int_equal(s_run_program((const char *const[]){ "--procs", "many", NULL }, out, err, sizeof out), 2);
    assert_non_null(strstr(err, "--procs"));
    assert_int_equal(s_run_program((const char *const[]){ "--procs", NULL }, out, err, sizeof out), 2);
    assert_int_equal(s_run_program((const char *const[]){ "--log-level", "loud", NULL }, out, err,
                                   sizeof out), 2);
    assert_int_equal(s_run_program((const char *const[]){ "extra", NULL }, out, err, sizeof out), 2);
    assert_int_equal(s_run_program((const char *const[]){ "--master", "nonsense", "--procs", "1", NULL },
                                   out, err, sizeof out), 2);
    assert_non_null(strstr(err, "'nonsense' is not an endpoint"));
}

static void test_program_plugin_load_failure(void **state)
{
    (void)state;
    static char out[16384], err[16384];
    assert_int_equal(s_run_program((const char *const[]){ "--tasks", "/nonexistent/plugin.so", NULL },
                                   out, err, sizeof out), 1);
    assert_non_null(strstr(err, "cannot load plugin /nonexistent/plugin.so: "));
    assert_null(strstr(err, "write ./"));
    /* A bare name is looked up in the library path: the error says how to
     * name a file. */
    assert_int_equal(s_run_program((const char *const[]){ "--tasks", "no_such_plugin.so", NULL },
                                   out, err, sizeof out), 1);
    assert_non_null(strstr(err, "write ./no_such_plugin.so"));
    /* A library that registers no task loads, with a warning (here the
     * worker then stops at its bad endpoint). */
    assert_int_equal(s_run_program((const char *const[]){ "--tasks", "libm.so.6", "--master",
                                                          "nonsense", NULL },
                                   out, err, sizeof out), 2);
    assert_non_null(strstr(err, "plugin libm.so.6 registered no task"));
}

/* The program with the test plugin and --allow-exec: HELLO names the
 * plugin's tasks; tasks run; SIGTERM drains and exits 0. */
static void test_program_plugin_exec_and_drain(void **state)
{
    (void)state;
    fm_t f;
    fm_open(&f);
    pid_t pid = s_spawn((const char *const[]){ "--connect", f.ep, "--tasks", DIST_TEST_PLUGIN, "--procs",
                                               "1", "--allow-exec", "--name", "pw", "--log-level",
                                               "warn", NULL },
                        NULL, NULL, NULL);
    dist__inmsg_t m;
    fm_expect(&f, DIST__CMD_HELLO, 10000, &m);
    const msgpack_object *names;
    size_t n;
    assert_int_equal(dist__get_array(m.root, "tasks", &names, &n), 0);
    assert_true(s_has_name(names, n, "test.square"));
    assert_true(s_has_name(names, n, "test.mark"));
    assert_true(s_has_name(names, n, "dist.exec"));
    uint32_t pid_seen;
    assert_int_equal(dist__get_u32(m.root, "pid", &pid_seen), 0);
    assert_int_equal(pid_seen, pid);
    dist__inmsg_clear(&m);
    fm_welcome(&f, 1000, 5000);

    dist_args_t *ex = dist_args_new();
    msgpack_packer *pk = dist_args_packer(ex);
    msgpack_pack_array(pk, 2);
    dist__pk_str(pk, "cat");
    dist__pk_str(pk, "-");
    dist_args_str(ex, "hi\n");
    size_t exlen;
    const void *exargs = dist_args_data(ex, &exlen);
    ans_t a[2];
    s_task(&a[0], "test.square", "\x91\x09", 2, 0);
    s_task(&a[1], "dist.exec", exargs, exlen, 0);
    fm_send_tasks(&f, a, 2);
    fm_collect(&f, a, 2, 10000);
    assert_int_equal(a[0].status, DIST__ST_OK);
    assert_int_equal(a[0].value[0], 81);
    assert_int_equal(a[1].status, DIST__ST_OK);
    /* {status: 0, stdout: "hi\n", stderr: ""} */
    dist_wire_msg_t *v = dist_wire_msg_decode(a[1].value, a[1].value_len, NULL, NULL);
    assert_non_null(v);
    const msgpack_object *root = dist_wire_msg_root(v);
    int64_t status;
    const void *p;
    size_t plen;
    assert_int_equal(dist_obj_int(dist_wire_map_get(root, "status"), &status), 0);
    assert_int_equal(status, 0);
    assert_int_equal(dist__get_bin(root, "stdout", &p, &plen), 0);
    assert_int_equal(plen, 3);
    assert_memory_equal(p, "hi\n", 3);
    dist_wire_msg_destroy(&v);
    dist_args_destroy(&ex);

    /* A command that exits 3, and one past dist.exec's own timeout. */
    ans_t e[2];
    s_task(&e[0], "dist.exec", "\x91\x93\xa2" "sh" "\xa2" "-c" "\xa6" "exit 3", 15, 0);
    s_task(&e[1], "dist.exec", "\x93\x92\xa5" "sleep" "\xa1" "5" "\xc0\xcc\xc8", 13, 0); /* 200 ms */
    fm_send_tasks(&f, e, 2);
    fm_collect(&f, e, 2, 10000);
    assert_int_equal(e[0].status, DIST__ST_OK);
    v = dist_wire_msg_decode(e[0].value, e[0].value_len, NULL, NULL);
    assert_non_null(v);
    assert_int_equal(dist_obj_int(dist_wire_map_get(dist_wire_msg_root(v), "status"), &status), 0);
    assert_int_equal(status, 3);
    dist_wire_msg_destroy(&v);
    s_assert_error(&e[1], DIST__ST_FAILED, "did not finish within 200 ms");

    ans_t c;
    s_task(&c, "test.crash", "\x90", 1, 0);
    fm_send_tasks(&f, &c, 1);
    fm_collect(&f, &c, 1, 10000);
    s_assert_error(&c, DIST__ST_CRASHED, "signal 11");
    s_assert_error(&c, DIST__ST_CRASHED, "(worker pw)");

    dt_signal(pid, SIGTERM);
    fm_expect(&f, DIST__CMD_BYE, 10000, &m);
    dist__inmsg_clear(&m);
    assert_int_equal(s_exit_status(pid, 10000), 0);
    fm_close(&f);
}

/* $DIST_MASTER names the master; a second SIGTERM exits 1 at once. */
static void test_program_second_sigterm(void **state)
{
    (void)state;
    fm_t f;
    fm_open(&f);
    char env[96];
    snprintf(env, sizeof env, "DIST_MASTER=%s", f.ep);
    pid_t pid = s_spawn((const char *const[]){ "--tasks", DIST_TEST_PLUGIN, "--procs", "1",
                                               "--max-prefetch", "1", "--log-level", "error", NULL },
                        env, NULL, NULL);
    assert_int_equal(fm_accept(&f, 1000, 5000), 2);
    ans_t a[2];
    s_running_and_queued(&f, a, 3, 60000);
    dt_signal(pid, SIGTERM);
    dist__inmsg_t m;
    fm_expect(&f, DIST__CMD_RETURN, 5000, &m); /* the first signal was handled */
    s_file(a, 2, &m);
    dist__inmsg_clear(&m);
    dt_signal(pid, SIGTERM);
    fm_expect(&f, DIST__CMD_BYE, 5000, &m);
    dist__inmsg_clear(&m);
    assert_int_equal(s_exit_status(pid, 10000), 1);
    assert_int_equal(a[0].answers, 0);
    fm_close(&f);
}

int main(void)
{
    gethostname(s_host, sizeof s_host - 1);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_signal_handling_untouched, dt_teardown),
        cmocka_unit_test_teardown(test_hello_heartbeat_bye, dt_teardown),
        cmocka_unit_test_teardown(test_results_of_every_kind, dt_teardown),
        cmocka_unit_test_teardown(test_fail_and_exec_check, dt_teardown),
        cmocka_unit_test_teardown(test_cancel, dt_teardown),
        cmocka_unit_test_teardown(test_retry_status, dt_teardown),
        cmocka_unit_test_teardown(test_flood_beyond_credit, dt_teardown),
        cmocka_unit_test_teardown(test_prefetch_grows_with_tiny_tasks, dt_teardown),
        cmocka_unit_test_teardown(test_reconnect_says_hello_again, dt_teardown),
        cmocka_unit_test_teardown(test_silent_master_is_lost, dt_teardown),
        cmocka_unit_test_teardown(test_master_restart, dt_teardown),
        cmocka_unit_test_teardown(test_drain_on_stop, dt_teardown),
        cmocka_unit_test_teardown(test_second_stop_is_immediate, dt_teardown),
        cmocka_unit_test_teardown(test_bad_options, dt_teardown),
        /* After every test that forks a pool: the threads of a destroyed
         * ThreadPool end in the background, and a fork while one of them
         * is inside ASan's allocator would leave its lock taken in the
         * child. The program tests only fork to exec. */
        cmocka_unit_test_teardown(test_threads_backend, dt_teardown),
        cmocka_unit_test_teardown(test_program_usage, dt_teardown),
        cmocka_unit_test_teardown(test_program_plugin_load_failure, dt_teardown),
        cmocka_unit_test_teardown(test_program_plugin_exec_and_drain, dt_teardown),
        cmocka_unit_test_teardown(test_program_second_sigterm, dt_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    zsys_shutdown();
    return rc;
}

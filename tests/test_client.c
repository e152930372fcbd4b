/* test_client.c - the client library (dist/client.h) against a fake master
 * (fake_master.h) that speaks docs/PROTOCOL.md from a thread of this
 * process, on tcp://127.0.0.1 with a free port. */
#include <dist.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_master.h"
#include "proto_internal.h"
#include "testutil.h"

static dist_client_t *s_client(fm_t *fm, const char *name)
{
    dist_client_opts_t o = { .master = fm_endpoint(fm), .name = name, .connect_timeout_ms = 3000 };
    dist_client_t *c = dist_client_new(&o);
    assert_non_null(c);
    return c;
}

/* A packed argument array of integers. */
static dist_args_t *s_ints(int n, ...)
{
    dist_args_t *a = dist_args_new();
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        dist_args_int(a, va_arg(ap, int));
    va_end(ap);
    return a;
}

/* n argument arrays: [i], or [lo, i] for the first half and [hi, i] for
 * the second when lo >= 0. *keep holds what the items point into. */
static dist_bytes_t *s_items(size_t n, int lo, int hi, dist_args_t ***keep)
{
    dist_bytes_t *items = calloc(n, sizeof *items);
    *keep = calloc(n, sizeof **keep);
    for (size_t i = 0; i < n; i++) {
        (*keep)[i] = lo < 0 ? s_ints(1, (int)i) : s_ints(2, i < n / 2 ? lo : hi, (int)i);
        items[i].data = dist_args_data((*keep)[i], &items[i].len);
    }
    return items;
}

static void s_items_free(dist_bytes_t *items, dist_args_t **keep, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dist_args_destroy(&keep[i]);
    free(keep);
    free(items);
}

/* The result of echo [i]. */
static void s_assert_echo(dist_result_t *r, size_t i)
{
    assert_int_equal(dist_result_status(r), 0);
    int64_t v = -1;
    assert_int_equal(dist_arg_int(dist_result_value(r), 0, &v), 0);
    assert_int_equal(v, (int64_t)i);
}

static void s_assert_str(const msgpack_object *map, const char *key, const char *want)
{
    const char *s;
    size_t n;
    assert_int_equal(dist__get_str(map, key, &s, &n), 0);
    if (n != strlen(want) || memcmp(s, want, n) != 0)
        fail_msg("%s: '%.*s', expected '%s'", key, (int)n, s, want);
}

/* In a child that has not touched ZeroMQ yet (fork before any context):
 * creating a client leaves SIGINT and SIGTERM as they were, although czmq
 * installs its own handlers when it starts. */
static int s_child_signals(void *arg)
{
    (void)arg;
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_IGN);
    dist_client_opts_t o = { .master = "tcp://127.0.0.1:1", .connect_timeout_ms = 100 };
    dist_client_t *c = dist_client_new(&o); /* nobody there: ENOMASTER */
    struct sigaction si, st;
    sigaction(SIGINT, NULL, &si);
    sigaction(SIGTERM, NULL, &st);
    int bad = c != NULL || errno != -DIST_ENOMASTER || si.sa_handler != SIG_DFL ||
              st.sa_handler != SIG_IGN;
    zsys_shutdown();
    return bad;
}

static void test_signal_handlers_untouched(void **state)
{
    (void)state;
    dt_join_ok(dt_fork(s_child_signals, NULL));
}

static void test_connect_says_hello(void **state)
{
    (void)state;
    fm_t *fm = fm_new(NULL);
    dist_client_t *c = s_client(fm, "tc-hello");
    assert_string_equal(dist_client_name(c), "tc-hello");
    dist_wire_msg_t *m = fm_wait(fm, DIST__CMD_HELLO, 1, 1000);
    assert_non_null(m);
    const msgpack_object *b = dist_wire_msg_root(m);
    s_assert_str(b, "role", "client");
    s_assert_str(b, "name", "tc-hello");
    s_assert_str(b, "version", DIST_VERSION_STRING);
    const char *host;
    size_t n;
    assert_int_equal(dist__get_str(b, "host", &host, &n), 0);
    assert_true(n > 0);
    uint32_t pid;
    assert_int_equal(dist__get_u32(b, "pid", &pid), 0);
    assert_int_equal(pid, getpid());
    /* The master's parser takes it as a client's HELLO. */
    dist__hello_t h;
    assert_int_equal(dist__parse_hello(b, &h, NULL), 0);
    assert_int_equal(h.role, DIST__PEER_CLIENT);
    dist_wire_msg_destroy(&m);
    dist_client_destroy(&c);
    assert_null(c);
    /* BYE on the way out. */
    m = fm_wait(fm, DIST__CMD_BYE, 1, 2000);
    assert_non_null(m);
    dist_wire_msg_destroy(&m);

    /* The default name is host:pid:random. */
    c = s_client(fm, NULL);
    char prefix[64];
    snprintf(prefix, sizeof prefix, ":%d:", (int)getpid());
    assert_non_null(strstr(dist_client_name(c), prefix));
    dist_client_destroy(&c);
    dist_client_destroy(&c); /* NULL is fine */
    fm_destroy(&fm);
}

static void test_no_master(void **state)
{
    (void)state;
    /* A master that never answers: HELLO is repeated every second, then
     * the client gives up after its connect timeout. */
    fm_opts_t fo = { .silent = true };
    fm_t *fm = fm_new(&fo);
    dist_client_opts_t o = { .master = fm_endpoint(fm), .connect_timeout_ms = 1500 };
    int64_t t0 = dt_now_ms();
    dist_client_t *c = dist_client_new(&o);
    assert_null(c);
    assert_int_equal(errno, -DIST_ENOMASTER);
    assert_string_equal(dist_strerror(errno), "no master answered");
    dt_assert_took(t0, 1500);
    assert_true(fm_count(fm, DIST__CMD_HELLO) >= 2);
    fm_destroy(&fm);

    /* One key without the other: refused, not ignored. (The fake
     * master's endpoint went with it.) */
    o.master = "tcp://127.0.0.1:1";
    setenv("DIST_KEY", "/nonexistent.key", 1);
    o.connect_timeout_ms = 100;
    assert_null(dist_client_new(&o));
    assert_int_equal(errno, EINVAL);
    unsetenv("DIST_KEY");
    /* A bad name or endpoint. */
    o.name = "";
    assert_null(dist_client_new(&o));
    assert_int_equal(errno, EINVAL);
    o.name = NULL;
    o.master = "nonsense://x";
    assert_null(dist_client_new(&o));
    assert_int_equal(errno, EINVAL);
}

static void test_submit_get_and_ack(void **state)
{
    (void)state;
    fm_t *fm = fm_new(NULL);
    dist_client_t *c = s_client(fm, "tc-submit");
    dist_args_t *a = s_ints(2, 2, 3);
    size_t len;
    const void *args = dist_args_data(a, &len);
    dist_future_t *f = dist_client_submit(c, "add", args, len, 1500);
    assert_non_null(f);

    dist_wire_msg_t *m = fm_wait(fm, DIST__CMD_SUBMIT, 1, 1000);
    assert_non_null(m);
    const msgpack_object *tasks;
    size_t n;
    assert_int_equal(dist__get_array(dist_wire_msg_root(m), "tasks", &tasks, &n), 0);
    assert_int_equal(n, 1);
    dist__task_t t;
    assert_int_equal(dist__parse_task(&tasks[0], false, &t), 0);
    assert_memory_equal(t.task, "add", 3);
    assert_int_equal(t.task_len, 3);
    assert_int_equal(t.args_len, len);
    assert_memory_equal(t.args, args, len);
    assert_int_equal(t.timeout_ms, 1500);
    dist_wire_msg_destroy(&m);

    dist_result_t *r;
    assert_int_equal(dist_future_get(f, 2000, &r), 0);
    assert_true(dist_future_ready(f));
    int64_t v;
    assert_int_equal(dist_result_int(r, &v), 0);
    assert_int_equal(v, 5);
    /* The result is acknowledged by id. */
    m = fm_wait(fm, DIST__CMD_ACK, 1, 2000);
    assert_non_null(m);
    const msgpack_object *ids;
    assert_int_equal(dist__get_array(dist_wire_msg_root(m), "ids", &ids, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0].type, MSGPACK_OBJECT_BIN);
    assert_memory_equal(ids[0].via.bin.ptr, t.id.b, 16);
    dist_wire_msg_destroy(&m);
    dist_future_destroy(&f);
    assert_null(f);

    /* A failing task: its error is the worker's message. */
    f = dist_client_submit(c, "fail", args, len, 0);
    assert_non_null(f);
    assert_int_equal(dist_future_get(f, 2000, &r), DIST_ETASK);
    assert_string_equal(dist_result_error(r), "fail: boom");
    dist_future_destroy(&f);

    /* A wait that times out is not a task timeout. */
    f = dist_client_submit(c, "never", args, len, 0);
    assert_non_null(f);
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_future_get(f, 200, &r), DIST_ETIMEDOUT);
    dt_assert_took(t0, 200);
    assert_null(r);
    assert_false(dist_future_ready(f));
    dist_future_destroy(&f);

    /* call: submit, wait, and the caller owns the result. */
    assert_int_equal(dist_client_call(c, "add", args, len, 2000, &r), 0);
    assert_int_equal(dist_result_int(r, &v), 0);
    assert_int_equal(v, 5);
    dist_result_destroy(&r);
    dist_args_destroy(&a);
    dist_client_destroy(&c);
    int64_t t1 = dt_now_ms(); /* the last ACK may still be on its way */
    while (fm_unacked(fm) != 1 && dt_now_ms() - t1 < 3000)
        dt_sleep_ms(5);
    assert_int_equal(fm_unacked(fm), 1); /* only "never" is left */
    fm_destroy(&fm);
}

static void test_refusals_map_to_codes(void **state)
{
    (void)state;
    fm_opts_t fo = { .full_refusals = 1 };
    fm_t *fm = fm_new(&fo);
    dist_client_t *c = s_client(fm, "tc-refused");
    dist_args_t *a = s_ints(1, 1);
    size_t len;
    const void *args = dist_args_data(a, &len);
    errno = 0;
    assert_null(dist_client_submit(c, "nosuch", args, len, 0));
    assert_int_equal(errno, -DIST_ENOENT);
    assert_null(dist_client_submit(c, "big", args, len, 0));
    assert_int_equal(errno, -DIST_EMSGSIZE);
    /* The first "full" is refused, the next ones accepted. */
    dist_bytes_t items[3] = { { args, len }, { args, len }, { args, len } };
    dist_future_t *fs[3];
    int errs[3];
    assert_int_equal(dist_client_submit_batch(c, "full", items, 3, 0, fs, errs), 2);
    assert_null(fs[0]);
    assert_int_equal(errs[0], DIST_EFULL);
    for (int i = 1; i < 3; i++) {
        assert_non_null(fs[i]);
        assert_int_equal(errs[i], 0);
        dist_result_t *r;
        assert_int_equal(dist_future_get(fs[i], 2000, &r), 0);
        dist_future_destroy(&fs[i]);
    }
    dist_client_destroy(&c);
    fm_destroy(&fm);

    /* A SUBMIT refused as a whole, by an ERROR without req: its tasks are
     * refused with that code; a map takes it as back-pressure. */
    fo = (fm_opts_t){ .submit_errors = 2 };
    fm = fm_new(&fo);
    c = s_client(fm, "tc-refused2");
    assert_null(dist_client_submit(c, "echo", args, len, 0));
    assert_int_equal(errno, -DIST_EFULL);
    dist_results_t *rs;
    assert_int_equal(dist_client_map(c, "echo", items, 3, 0, 5000, NULL, NULL, &rs), 0);
    assert_int_equal(dist_results_count(rs), 3);
    dist_results_destroy(&rs);
    /* The refused SUBMITs' tasks went again: after a refusal the map
     * probes with a smaller window, so the 3 items take between one more
     * SUBMIT and one each (timing decides), never more. */
    assert_in_range(fm_count(fm, DIST__CMD_SUBMIT), 3, 2 + 3);

    /* call keeps the master's message. */
    dist_result_t *r;
    assert_int_equal(dist_client_call(c, "nosuch", args, len, 1000, &r), DIST_ENOENT);
    assert_non_null(r);
    assert_string_equal(dist_result_error(r), "no worker has announced this task");
    dist_result_destroy(&r);
    /* Refused locally. */
    assert_null(dist_client_submit(c, "bad name", args, len, 0));
    assert_int_equal(errno, EINVAL);
    assert_null(dist_client_submit(c, NULL, args, len, 0));
    assert_int_equal(errno, EINVAL);
    dist_args_destroy(&a);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

static void test_duplicates_are_dropped(void **state)
{
    (void)state;
    fm_opts_t fo = { .duplicate = true };
    fm_t *fm = fm_new(&fo);
    dist_client_t *c = s_client(fm, "tc-dup");
    enum { N = 20 };
    dist_args_t **keep;
    dist_bytes_t *items = s_items(N, -1, 0, &keep);
    dist_future_t *fs[N];
    assert_int_equal(dist_client_submit_batch(c, "echo", items, N, 0, fs, NULL), N);
    for (int i = 0; i < N; i++) {
        dist_result_t *r;
        assert_int_equal(dist_future_get(fs[i], 2000, &r), 0);
        size_t rlen;
        const void *d = dist_result_data(r, &rlen);
        assert_int_equal(rlen, items[i].len);
        assert_memory_equal(d, items[i].data, rlen);
    }
    /* Every result again (as after a reconnect): dropped, acknowledged. */
    fm_resend_results(fm);
    dist_result_t *st;
    assert_int_equal(dist_client_status(c, 2000, &st), 0);
    dist_result_destroy(&st);
    for (int i = 0; i < N; i++) {
        dist_result_t *r;
        assert_int_equal(dist_future_get(fs[i], 0, &r), 0);
        int64_t v;
        const msgpack_object *o = dist_result_value(r);
        assert_non_null(o);
        assert_int_equal(dist_arg_int(o, 0, &v), 0);
        assert_int_equal(v, i);
        dist_future_destroy(&fs[i]);
    }
    s_items_free(items, keep, N);
    int64_t t0 = dt_now_ms();
    while (fm_unacked(fm) && dt_now_ms() - t0 < 3000)
        dt_sleep_ms(5);
    assert_int_equal(fm_unacked(fm), 0);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

struct progress {
    size_t calls, last, total;
    bool monotonic;
};

static void s_progress(size_t done, size_t total, void *ud)
{
    struct progress *p = ud;
    if (done < p->last)
        p->monotonic = false;
    p->last = done;
    p->total = total;
    p->calls++;
}

static void test_map_in_input_order(void **state)
{
    (void)state;
    /* The fake master answers in random order and random batch sizes, and
     * says every result twice. */
    fm_opts_t fo = { .shuffle = true, .duplicate = true, .max_batch = 97 };
    fm_t *fm = fm_new(&fo);
    dist_client_t *c = s_client(fm, "tc-map");
    enum { N = 3000 };
    dist_args_t **keep;
    dist_bytes_t *items = s_items(N, -1, 0, &keep);
    struct progress p = { .monotonic = true };
    dist_results_t *rs = NULL;
    assert_int_equal(dist_client_map(c, "echo", items, N, 0, 20000, s_progress, &p, &rs), 0);
    assert_int_equal(dist_results_count(rs), N);
    for (size_t i = 0; i < N; i++)
        s_assert_echo(dist_results_at(rs, i), i);
    assert_int_equal(dist_results_status(rs, NULL), 0);
    assert_true(p.calls >= 1);
    assert_true(p.monotonic);
    assert_int_equal(p.last, N);
    assert_int_equal(p.total, N);
    dist_results_destroy(&rs);
    /* Batches respect max_batch. */
    int nsub = fm_count(fm, DIST__CMD_SUBMIT);
    assert_true(nsub >= N / 97);
    for (int k = 1; k <= nsub; k++) {
        dist_wire_msg_t *m = fm_wait(fm, DIST__CMD_SUBMIT, k, 100);
        const msgpack_object *tasks;
        size_t n;
        assert_int_equal(dist__get_array(dist_wire_msg_root(m), "tasks", &tasks, &n), 0);
        assert_true(n >= 1 && n <= 97);
        dist_wire_msg_destroy(&m);
    }
    /* An empty map. */
    assert_int_equal(dist_client_map(c, "echo", items, 0, 0, 1000, NULL, NULL, &rs), 0);
    assert_int_equal(dist_results_count(rs), 0);
    dist_results_destroy(&rs);
    dist_client_destroy(&c);
    int64_t t0 = dt_now_ms();
    while (fm_unacked(fm) && dt_now_ms() - t0 < 3000)
        dt_sleep_ms(5);
    assert_int_equal(fm_unacked(fm), 0);
    fm_destroy(&fm);
    s_items_free(items, keep, N);
}

struct seen {
    char *hits;
    size_t n, calls, failed;
    int code;
};

static void s_on_result(size_t index, dist_result_t *r, void *ud)
{
    struct seen *s = ud;
    s->calls++;
    if (index >= s->n || s->hits[index]++)
        fail_msg("index %zu reported twice or out of range", index);
    if (dist_result_status(r)) {
        s->failed++;
        s->code = dist_result_status(r);
        assert_non_null(dist_result_error(r));
    } else {
        s_assert_echo(r, index);
    }
}

static void test_map_unordered(void **state)
{
    (void)state;
    fm_opts_t fo = { .shuffle = true };
    fm_t *fm = fm_new(&fo);
    dist_client_t *c = s_client(fm, "tc-unordered");
    enum { N = 1000 };
    dist_args_t **keep;
    dist_bytes_t *items = s_items(N, -1, 0, &keep);
    struct seen s = { calloc(N, 1), N, 0, 0, 0 };
    assert_int_equal(dist_client_map_unordered(c, "echo", items, N, 0, 20000, s_on_result, &s), 0);
    assert_int_equal(s.calls, N);
    assert_int_equal(s.failed, 0);

    /* On a timeout every missing item is reported once, as timed out. */
    memset(s.hits, 0, N);
    s.calls = 0;
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_client_map_unordered(c, "never", items, 10, 0, 300, s_on_result, &s),
                     DIST_ETIMEDOUT);
    dt_assert_took(t0, 300);
    assert_int_equal(s.calls, 10);
    assert_int_equal(s.failed, 10);
    assert_int_equal(s.code, DIST_ETIMEDOUT);
    free(s.hits);
    dist_client_destroy(&c);
    fm_destroy(&fm);
    s_items_free(items, keep, N);
}

/* A future has the pool handle's methods (wait, ready, successful, get),
 * and the result it lends may be destroyed by the caller harmlessly. */
static void test_future_methods_and_lent_results(void **state)
{
    (void)state;
    fm_t *fm = fm_new(NULL);
    dist_client_t *c = s_client(fm, "tc-future");
    dist_args_t *a = s_ints(2, 4, 5);
    size_t len;
    const void *args = dist_args_data(a, &len);
    dist_future_t *f = dist_client_submit(c, "add", args, len, 0);
    assert_non_null(f);
    assert_int_equal(dist_future_wait(f, 2000), 0);
    assert_true(dist_future_ready(f));
    assert_true(dist_future_successful(f));
    dist_result_t *r = NULL;
    assert_int_equal(dist_future_get(f, 0, &r), 0);
    dist_result_destroy(&r); /* lent: only the pointer goes */
    assert_null(r);
    assert_int_equal(dist_future_get(f, 0, &r), 0);
    int64_t v = 0;
    assert_int_equal(dist_result_int(r, &v), 0);
    assert_int_equal(v, 9);
    dist_result_destroy(&r);
    dist_future_destroy(&f); /* frees the result once */

    f = dist_client_submit(c, "fail", args, len, 0);
    assert_int_equal(dist_future_wait(f, 2000), 0);
    assert_true(dist_future_ready(f));
    assert_false(dist_future_successful(f));
    assert_int_equal(dist_future_get(f, 0, &r), DIST_ETASK);
    dist_result_destroy(&r);
    dist_future_destroy(&f);

    f = dist_client_submit(c, "never", args, len, 0);
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_future_wait(f, 200), DIST_ETIMEDOUT);
    dt_assert_took(t0, 200);
    assert_false(dist_future_ready(f));
    assert_false(dist_future_successful(f));
    dist_future_destroy(&f);
    assert_int_equal(dist_future_wait(NULL, 0), DIST_EINVAL);
    assert_false(dist_future_successful(NULL));

    /* call hands its result over: the caller frees it. */
    assert_int_equal(dist_client_call(c, "add", args, len, 2000, &r), 0);
    dist_result_destroy(&r);
    assert_null(r);
    dist_args_destroy(&a);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

/* dist_client_map_opts: zero is every default (no bound on the wait, no
 * task timeout, in input order); the task timeout reaches the SUBMIT. */
static void test_map_opts(void **state)
{
    (void)state;
    fm_t *fm = fm_new(NULL);
    dist_client_t *c = s_client(fm, "tc-mapopts");
    enum { N = 50 };
    dist_args_t **keep;
    dist_bytes_t *items = s_items(N, -1, 0, &keep);
    dist_results_t *rs = NULL;
    assert_int_equal(dist_client_map_opts(c, "echo", items, N, NULL, &rs), 0);
    assert_int_equal(dist_results_count(rs), N);
    for (size_t i = 0; i < N; i++)
        s_assert_echo(dist_results_at(rs, i), i);
    dist_result_t *lent = dist_results_at(rs, 0);
    dist_result_destroy(&lent); /* lent by the container: harmless */
    s_assert_echo(dist_results_at(rs, 0), 0);
    dist_results_destroy(&rs);
    dist_wire_msg_t *m = fm_wait(fm, DIST__CMD_SUBMIT, 1, 100);
    const msgpack_object *tasks;
    size_t n;
    dist__task_t t;
    assert_int_equal(dist__get_array(dist_wire_msg_root(m), "tasks", &tasks, &n), 0);
    assert_int_equal(dist__parse_task(&tasks[0], false, &t), 0);
    assert_int_equal(t.timeout_ms, 0);
    dist_wire_msg_destroy(&m);

    struct progress p = { .monotonic = true };
    dist_map_opts_t o = { .task_timeout_ms = 1234, .progress = s_progress, .userdata = &p };
    int nsub = fm_count(fm, DIST__CMD_SUBMIT);
    assert_int_equal(dist_client_map_opts(c, "echo", items, N, &o, &rs), 0);
    assert_int_equal(p.last, N);
    dist_results_destroy(&rs);
    m = fm_wait(fm, DIST__CMD_SUBMIT, nsub + 1, 100);
    assert_int_equal(dist__get_array(dist_wire_msg_root(m), "tasks", &tasks, &n), 0);
    assert_int_equal(dist__parse_task(&tasks[0], false, &t), 0);
    assert_int_equal(t.timeout_ms, 1234);
    dist_wire_msg_destroy(&m);

    /* Unordered: on_result per item, results stay NULL. */
    struct seen s = { calloc(N, 1), N, 0, 0, 0 };
    dist_map_opts_t u = { .unordered = true, .on_result = s_on_result, .userdata = &s };
    rs = (dist_results_t *)&s; /* must be set to NULL */
    assert_int_equal(dist_client_map_opts(c, "echo", items, N, &u, &rs), 0);
    assert_null(rs);
    assert_int_equal(s.calls, N);
    /* A bounded wait. */
    memset(s.hits, 0, N);
    s.calls = s.failed = 0;
    u.wait_ms = 200;
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_client_map_opts(c, "never", items, 5, &u, NULL), DIST_ETIMEDOUT);
    dt_assert_took(t0, 200);
    assert_int_equal(s.failed, 5);
    free(s.hits);
    /* Misuse. */
    u.on_result = NULL;
    assert_int_equal(dist_client_map_opts(c, "echo", items, N, &u, NULL), DIST_EINVAL);
    assert_int_equal(dist_client_map_opts(c, "echo", items, N, NULL, NULL), DIST_EINVAL);
    dist_client_destroy(&c);
    fm_destroy(&fm);
    s_items_free(items, keep, N);
}

static void test_map_failures_refusals_and_timeouts(void **state)
{
    (void)state;
    fm_opts_t fo = { .full_refusals = 5, .max_batch = 3 };
    fm_t *fm = fm_new(&fo);
    dist_client_t *c = s_client(fm, "tc-mapfail");
    enum { N = 40 };
    dist_args_t **keep;
    dist_bytes_t *items = s_items(N, -1, 0, &keep);
    dist_results_t *rs;
    size_t at;

    /* Every item fails with the task's message. */
    assert_int_equal(dist_client_map(c, "fail", items, N, 0, 5000, NULL, NULL, &rs), DIST_ETASK);
    assert_int_equal(dist_results_status(rs, &at), DIST_ETASK);
    assert_int_equal(at, 0);
    assert_string_equal(dist_result_error(dist_results_at(rs, N - 1)), "fail: boom");
    dist_results_destroy(&rs);

    /* An unknown task: each item carries the master's refusal. */
    assert_int_equal(dist_client_map(c, "nosuch", items, N, 0, 5000, NULL, NULL, &rs), DIST_ETASK);
    for (size_t i = 0; i < N; i++) {
        dist_result_t *r = dist_results_at(rs, i);
        assert_int_equal(dist_result_status(r), DIST_ENOENT);
        assert_string_equal(dist_result_error(r), "no worker has announced this task");
    }
    dist_results_destroy(&rs);
    /* ... and nothing more was sent after the first refusal came back
     * than what was already in flight. */

    /* "queue full" is back-pressure: those items are submitted again. */
    assert_int_equal(dist_client_map(c, "full", items, N, 0, 10000, NULL, NULL, &rs), 0);
    for (size_t i = 0; i < N; i++)
        s_assert_echo(dist_results_at(rs, i), i);
    dist_results_destroy(&rs);

    /* A wait that ends first: results so far, the rest timed out. */
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_client_map(c, "never", items, 5, 0, 300, NULL, NULL, &rs),
                     DIST_ETIMEDOUT);
    dt_assert_took(t0, 300);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(dist_result_status(dist_results_at(rs, i)), DIST_ETIMEDOUT);
        assert_string_equal(dist_result_error(dist_results_at(rs, i)), "no result within 300 ms");
    }
    dist_results_destroy(&rs);
    assert_int_equal(dist_client_map(c, "x y", items, 5, 0, 300, NULL, NULL, &rs), DIST_EINVAL);
    assert_null(rs);
    dist_client_destroy(&c);
    fm_destroy(&fm);
    s_items_free(items, keep, N);
}

/* With a small message limit a map splits its items over several SUBMITs
 * by size, and an item too large for any message fails alone, in place.
 * The task is "fail": its short answers fit the limit too (the fake
 * master would batch the echoes of big items past it). */
static void test_map_splits_by_size(void **state)
{
    (void)state;
    fm_t *fm = fm_new(NULL);
    dist_client_opts_t o = { .master = fm_endpoint(fm), .name = "tc-mapsize",
                             .connect_timeout_ms = 3000, .max_message = 4096 };
    dist_client_t *c = dist_client_new(&o);
    assert_non_null(c);
    enum { N = 8 };
    static char pad[5000];
    memset(pad, 'x', sizeof pad - 1);
    /* Items 2 and 5 are too large for 4 KiB; two of the others fill most
     * of a body. */
    size_t pad_len[N] = { 0, 1400, 4500, 1400, 1400, 4900, 1400, 0 };
    dist_args_t *keep[N];
    dist_bytes_t items[N];
    for (size_t i = 0; i < N; i++) {
        keep[i] = s_ints(1, (int)i);
        assert_int_equal(dist_args_strn(keep[i], pad, pad_len[i]), 0);
        items[i].data = dist_args_data(keep[i], &items[i].len);
    }
    dist_results_t *rs;
    assert_int_equal(dist_client_map(c, "fail", items, N, 0, 5000, NULL, NULL, &rs), DIST_ETASK);
    for (size_t i = 0; i < N; i++) {
        dist_result_t *r = dist_results_at(rs, i);
        if (pad_len[i] > 4096) {
            assert_int_equal(dist_result_status(r), DIST_EMSGSIZE);
            assert_string_equal(dist_result_error(r),
                                "the task's arguments exceed the master's message size limit");
        } else {
            assert_int_equal(dist_result_status(r), DIST_ETASK);
            assert_string_equal(dist_result_error(r), "fail: boom");
        }
    }
    dist_results_destroy(&rs);
    /* The six that fit went out, in more than one SUBMIT. */
    int nsub = fm_count(fm, DIST__CMD_SUBMIT);
    assert_true(nsub >= 2);
    size_t sent = 0;
    for (int k = 1; k <= nsub; k++) {
        dist_wire_msg_t *m = fm_wait(fm, DIST__CMD_SUBMIT, k, 100);
        const msgpack_object *tasks;
        size_t n;
        assert_int_equal(dist__get_array(dist_wire_msg_root(m), "tasks", &tasks, &n), 0);
        sent += n;
        dist_wire_msg_destroy(&m);
    }
    assert_int_equal(sent, N - 2);
    dist_client_destroy(&c);
    fm_destroy(&fm);
    for (size_t i = 0; i < N; i++)
        dist_args_destroy(&keep[i]);
}

struct putter {
    const char *endpoint;
    int delay_ms;
};

static void *s_put_later(void *arg)
{
    struct putter *p = arg;
    dist_client_opts_t o = { .master = p->endpoint, .name = "tc-putter" };
    dist_client_t *c = dist_client_new(&o);
    if (!c)
        return (void *)1;
    dt_sleep_ms(p->delay_ms);
    int rc = dist_client_qput(c, "jobs", "late", 4, 1000);
    dist_client_destroy(&c);
    return rc ? (void *)2 : NULL;
}

static void test_named_queues(void **state)
{
    (void)state;
    fm_t *fm = fm_new(NULL);
    dist_client_t *c = s_client(fm, "tc-queues");
    assert_int_equal(dist_client_qput(c, "jobs", "A", 1, 0), 0);
    assert_int_equal(dist_client_qput(c, "jobs", "", 0, 0), 0);
    dist_wire_msg_t *m = fm_wait(fm, DIST__CMD_QPUT, 1, 1000);
    const msgpack_object *b = dist_wire_msg_root(m);
    s_assert_str(b, "queue", "jobs");
    uint64_t req;
    assert_int_equal(dist__get_u64(b, "req", &req), 0);
    const msgpack_object *its;
    size_t n;
    assert_int_equal(dist__get_array(b, "items", &its, &n), 0);
    assert_int_equal(n, 1);
    dist_wire_msg_destroy(&m);

    void *buf;
    size_t len;
    assert_int_equal(dist_client_qget(c, "jobs", &buf, &len, 0), 0);
    assert_int_equal(len, 1);
    assert_memory_equal(buf, "A", 1);
    free(buf);
    assert_int_equal(dist_client_qget(c, "jobs", &buf, &len, 0), 0);
    assert_int_equal(len, 0);
    free(buf);
    /* Empty: at once, then after a wait. */
    assert_int_equal(dist_client_qget(c, "jobs", &buf, &len, 0), DIST_ETIMEDOUT);
    assert_null(buf);
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_client_qget(c, "jobs", &buf, &len, 300), DIST_ETIMEDOUT);
    dt_assert_took(t0, 300);
    /* Another client puts while this one waits. */
    struct putter p = { fm_endpoint(fm), 200 };
    pthread_t th;
    pthread_create(&th, NULL, s_put_later, &p);
    assert_int_equal(dist_client_qget(c, "jobs", &buf, &len, 5000), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(buf, "late", 4);
    free(buf);
    void *ret;
    pthread_join(th, &ret);
    assert_null(ret);
    /* The fake's queues hold four items: the fifth put is "full". */
    for (int i = 0; i < 4; i++)
        assert_int_equal(dist_client_qput(c, "small", "x", 1, 0), 0);
    assert_int_equal(dist_client_qput(c, "small", "x", 1, 0), DIST_EFULL);
    /* Bad names are refused here. */
    assert_int_equal(dist_client_qput(c, "bad name", "x", 1, 0), DIST_EINVAL);
    assert_int_equal(dist_client_qget(c, "", &buf, &len, 0), DIST_EINVAL);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

static void test_late_qget_reply_puts_items_back(void **state)
{
    (void)state;
    /* The master answers a QGET after the client gave up on it: the item
     * it took goes back into the queue instead of being lost. */
    fm_opts_t fo = { .qget_delay_ms = 2500, .heartbeat = true };
    fm_t *fm = fm_new(&fo);
    dist_client_t *c = s_client(fm, "tc-late");
    assert_int_equal(dist_client_qput(c, "jobs", "X", 1, 0), 0);
    void *buf;
    size_t len;
    assert_int_equal(dist_client_qget(c, "jobs", &buf, &len, 0), DIST_ENOMASTER);
    /* The late answer arrives while the client waits for something else. */
    dist_result_t *st;
    dt_sleep_ms(700);
    assert_int_equal(dist_client_status(c, 2000, &st), 0);
    dist_result_destroy(&st);
    int64_t t0 = dt_now_ms();
    while (fm_count(fm, DIST__CMD_QPUT) < 2 && dt_now_ms() - t0 < 3000)
        dt_sleep_ms(10);
    assert_int_equal(fm_count(fm, DIST__CMD_QPUT), 2);
    dist_wire_msg_t *m = fm_wait(fm, DIST__CMD_QPUT, 2, 100);
    const msgpack_object *items;
    size_t n;
    assert_int_equal(dist__get_array(dist_wire_msg_root(m), "items", &items, &n), 0);
    assert_int_equal(n, 1);
    assert_memory_equal(items[0].via.bin.ptr, "X", 1);
    s_assert_str(dist_wire_msg_root(m), "queue", "jobs");
    dist_wire_msg_destroy(&m);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

static void test_status(void **state)
{
    (void)state;
    fm_t *fm = fm_new(NULL);
    dist_client_t *c = s_client(fm, "tc-status");
    dist_result_t *st;
    assert_int_equal(dist_client_status(c, 2000, &st), 0);
    const msgpack_object *v = dist_result_value(st);
    assert_non_null(v);
    assert_int_equal(v->type, MSGPACK_OBJECT_MAP);
    const msgpack_object *workers;
    size_t n;
    assert_int_equal(dist__get_array(v, "workers", &workers, &n), 0);
    assert_int_equal(n, 1);
    s_assert_str(&workers[0], "name", "w1");
    uint64_t clients;
    assert_int_equal(dist__get_u64(v, "clients", &clients), 0);
    assert_int_equal(clients, 1);
    dist_result_destroy(&st);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

static void test_reconnect(void **state)
{
    (void)state;
    fm_opts_t fo = { .heartbeat_ms = 100, .heartbeat = true };
    fm_t *fm = fm_new(&fo);
    dist_client_t *c = s_client(fm, "tc-reconnect");
    dist_args_t *a = s_ints(1, 300);
    size_t len;
    const void *args = dist_args_data(a, &len);
    /* A task in flight when the master restarts (keeping its results, as
     * with --store): the client says HELLO again with the same name and
     * gets its result once. */
    dist_future_t *f = dist_client_submit(c, "slow", args, len, 0);
    assert_non_null(f);
    fm_forget(fm, true);
    dist_result_t *r;
    assert_int_equal(dist_future_get(f, 5000, &r), 0);
    s_assert_echo(r, 300);
    dist_future_destroy(&f);
    assert_true(fm_count(fm, DIST__CMD_HELLO) >= 2);
    for (int k = 1; k <= fm_count(fm, DIST__CMD_HELLO); k++) {
        dist_wire_msg_t *m = fm_wait(fm, DIST__CMD_HELLO, k, 100);
        s_assert_str(dist_wire_msg_root(m), "name", "tc-reconnect");
        dist_wire_msg_destroy(&m);
    }

    /* A SUBMIT that the restarted master answers with RECONNECT is sent
     * again, with the same id, after the new WELCOME. */
    int hellos = fm_count(fm, DIST__CMD_HELLO);
    int submits = fm_count(fm, DIST__CMD_SUBMIT);
    fm_forget(fm, false);
    dist_args_t *b = s_ints(1, 7);
    args = dist_args_data(b, &len);
    f = dist_client_submit(c, "echo", args, len, 0);
    assert_non_null(f);
    assert_int_equal(dist_future_get(f, 5000, &r), 0);
    s_assert_echo(r, 7);
    dist_future_destroy(&f);
    assert_true(fm_count(fm, DIST__CMD_HELLO) > hellos);
    int now = fm_count(fm, DIST__CMD_SUBMIT);
    if (now >= submits + 2) {
        dist_wire_msg_t *m1 = fm_wait(fm, DIST__CMD_SUBMIT, now - 1, 100);
        dist_wire_msg_t *m2 = fm_wait(fm, DIST__CMD_SUBMIT, now, 100);
        const msgpack_object *t1, *t2;
        size_t n;
        dist__get_array(dist_wire_msg_root(m1), "tasks", &t1, &n);
        dist__get_array(dist_wire_msg_root(m2), "tasks", &t2, &n);
        dist__id_t i1, i2;
        assert_int_equal(dist__get_id(t1, "id", &i1), 0);
        assert_int_equal(dist__get_id(t2, "id", &i2), 0);
        assert_true(dist__id_eq(&i1, &i2));
        dist_wire_msg_destroy(&m1);
        dist_wire_msg_destroy(&m2);
    }
    dist_args_destroy(&a);
    dist_args_destroy(&b);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

/* How many ACKs the fake master got for this id. */
static int s_acks_for(fm_t *fm, const dist__id_t *id)
{
    int hits = 0, n = fm_count(fm, DIST__CMD_ACK);
    for (int k = 1; k <= n; k++) {
        dist_wire_msg_t *m = fm_wait(fm, DIST__CMD_ACK, k, 100);
        const msgpack_object *ids;
        size_t nids;
        if (m && !dist__get_array(dist_wire_msg_root(m), "ids", &ids, &nids))
            for (size_t i = 0; i < nids; i++)
                hits += ids[i].via.bin.size == 16 && !memcmp(ids[i].via.bin.ptr, id->b, 16);
        dist_wire_msg_destroy(&m);
    }
    return hits;
}

static void test_reconnect_redelivers_without_duplicates(void **state)
{
    (void)state;
    /* The master keeps results whose ACK it lost, restarts with them (as
     * with --store), and sends them all again on the next HELLO. */
    fm_opts_t fo = { .heartbeat_ms = 100, .heartbeat = true, .ignore_acks = true };
    fm_t *fm = fm_new(&fo);
    dist_client_t *c = s_client(fm, "tc-redeliver");
    enum { N = 5 };
    dist_args_t **keep;
    dist_bytes_t *items = s_items(N, -1, 0, &keep);
    dist_future_t *fs[N];
    assert_int_equal(dist_client_submit_batch(c, "echo", items, N, 0, fs, NULL), N);
    dist_result_t *r;
    for (int i = 0; i < N; i++)
        assert_int_equal(dist_future_get(fs[i], 2000, &r), 0);
    dist_wire_msg_t *m = fm_wait(fm, DIST__CMD_SUBMIT, 1, 100);
    const msgpack_object *tasks;
    size_t n;
    assert_int_equal(dist__get_array(dist_wire_msg_root(m), "tasks", &tasks, &n), 0);
    assert_int_equal(n, N);
    dist__id_t ids[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(dist__get_id(&tasks[i], "id", &ids[i]), 0);
    dist_wire_msg_destroy(&m);
    int64_t t0 = dt_now_ms();
    while (s_acks_for(fm, &ids[N - 1]) < 1 && dt_now_ms() - t0 < 2000)
        dt_sleep_ms(5);

    fm_forget(fm, true);
    dist_args_t *b = s_ints(1, 99);
    size_t len;
    const void *args = dist_args_data(b, &len);
    dist_future_t *f = dist_client_submit(c, "echo", args, len, 0);
    assert_non_null(f);
    assert_int_equal(dist_future_get(f, 5000, &r), 0);
    s_assert_echo(r, 99);
    dist_future_destroy(&f);
    /* The old results came again: dropped, acknowledged a second time. */
    for (int i = 0; i < N; i++) {
        t0 = dt_now_ms();
        while (s_acks_for(fm, &ids[i]) < 2 && dt_now_ms() - t0 < 3000)
            dt_sleep_ms(10);
        assert_true(s_acks_for(fm, &ids[i]) >= 2);
        assert_int_equal(dist_future_get(fs[i], 0, &r), 0);
        s_assert_echo(r, (size_t)i);
        dist_future_destroy(&fs[i]);
    }
    s_items_free(items, keep, N);
    dist_args_destroy(&b);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

struct restart {
    fm_t *fm;
    int after_ms;
};

static void *s_restart_later(void *arg)
{
    struct restart *rs = arg;
    dt_sleep_ms(rs->after_ms);
    fm_forget(rs->fm, true);
    return NULL;
}

static void s_on_slow(size_t index, dist_result_t *r, void *ud)
{
    struct seen *s = ud;
    s->calls++;
    if (index >= s->n || s->hits[index]++)
        fail_msg("index %zu reported twice or out of range", index);
    int64_t v = -1;
    if (dist_result_status(r) || dist_arg_int(dist_result_value(r), 1, &v) || v != (int64_t)index)
        s->failed++;
}

static void test_map_across_a_master_restart(void **state)
{
    (void)state;
    /* Tasks are running when the master restarts (keeping them, as with
     * --store): the map gets each result exactly once. */
    fm_opts_t fo = { .heartbeat_ms = 100, .heartbeat = true, .shuffle = true };
    fm_t *fm = fm_new(&fo);
    dist_client_t *c = s_client(fm, "tc-maprestart");
    enum { N = 40 };
    dist_args_t **keep;
    dist_bytes_t *items = s_items(N, 10, 400, &keep); /* half done before the restart */
    struct restart rs = { fm, 150 };
    pthread_t th;
    pthread_create(&th, NULL, s_restart_later, &rs);
    struct seen s = { calloc(N, 1), N, 0, 0, 0 };
    assert_int_equal(dist_client_map_unordered(c, "slow", items, N, 0, 10000, s_on_slow, &s), 0);
    pthread_join(th, NULL);
    assert_int_equal(s.calls, N);
    assert_int_equal(s.failed, 0);
    assert_true(fm_count(fm, DIST__CMD_HELLO) >= 2);
    free(s.hits);
    s_items_free(items, keep, N);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

/* A new instance of the master (in memory: it lost every task) gets the
 * tasks the client still waits for again: a future's and a map's. */
static fm_t *s_forget_fm;

static void s_forget_once(size_t done, size_t total, void *ud)
{
    (void)total;
    bool *forgot = ud;
    if (done >= 1 && !*forgot) {
        *forgot = true;
        fm_forget(s_forget_fm, false);
    }
}

static void test_new_instance_gets_tasks_again(void **state)
{
    (void)state;
    fm_t *fm = fm_new(NULL);
    dist_client_t *c = s_client(fm, "tc-instance");
    dist_args_t *a = s_ints(1, 400);
    size_t len;
    const void *args = dist_args_data(a, &len);
    dist_future_t *f = dist_client_submit(c, "slow", args, len, 0);
    assert_non_null(f);
    char id_before[33];
    snprintf(id_before, sizeof id_before, "%s", dist_future_id(f));
    int subs = fm_count(fm, DIST__CMD_SUBMIT);
    fm_forget(fm, false); /* its result will never come from this master */
    dist_result_t *r = NULL;
    assert_int_equal(dist_future_get(f, 10000, &r), 0);
    int64_t v = 0;
    assert_int_equal(dist_arg_int(dist_result_value(r), 0, &v), 0);
    assert_int_equal(v, 400);
    assert_true(fm_count(fm, DIST__CMD_SUBMIT) > subs);
    /* The same arguments went again. */
    dist_wire_msg_t *m = fm_wait(fm, DIST__CMD_SUBMIT, fm_count(fm, DIST__CMD_SUBMIT), 100);
    const msgpack_object *tasks;
    size_t n;
    dist__task_t t;
    assert_int_equal(dist__get_array(dist_wire_msg_root(m), "tasks", &tasks, &n), 0);
    assert_int_equal(dist__parse_task(&tasks[0], false, &t), 0);
    assert_int_equal(t.args_len, len);
    assert_memory_equal(t.args, args, len);
    /* ... under the same id: the one the caller may have kept. */
    char id_sent[33];
    dist__id_hex(&t.id, id_sent);
    assert_string_equal(id_sent, id_before);
    assert_string_equal(dist_future_id(f), id_before);
    dist_wire_msg_destroy(&m);
    dist_future_destroy(&f);

    /* A map: the first half done at once, the second half takes 500 ms
     * and is lost with the first instance. */
    enum { N = 40 };
    dist_args_t **keep;
    dist_bytes_t *items = s_items(N, 0, 500, &keep);
    bool forgot = false;
    s_forget_fm = fm;
    dist_results_t *rs = NULL;
    assert_int_equal(dist_client_map(c, "slow", items, N, 0, 15000, s_forget_once, &forgot, &rs),
                     0);
    assert_true(forgot);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(dist_arg_int(dist_result_value(dist_results_at(rs, i)), 1, &v), 0);
        assert_int_equal(v, (int64_t)i);
    }
    dist_results_destroy(&rs);
    s_items_free(items, keep, N);
    dist_args_destroy(&a);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

/* BYE: the client says HELLO at once, not after the master's silence. */
static void test_bye_says_hello_at_once(void **state)
{
    (void)state;
    fm_t *fm = fm_new(NULL); /* heartbeat timeout 3000 ms */
    dist_client_t *c = s_client(fm, "tc-bye");
    dist_args_t *a = s_ints(1, 1);
    size_t len;
    const void *args = dist_args_data(a, &len);
    dist_future_t *f = dist_client_submit(c, "never", args, len, 0);
    assert_non_null(f);
    int hellos = fm_count(fm, DIST__CMD_HELLO);
    fm_bye(fm);
    assert_int_equal(dist_future_wait(f, 800), DIST_ETIMEDOUT);
    assert_true(fm_count(fm, DIST__CMD_HELLO) > hellos);
    dist_future_destroy(&f);
    dist_args_destroy(&a);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

static struct {
    char text[4096];
} s_logged;

static void s_log_keep(dist_log_level_t level, const char *component, const char *msg, void *ud)
{
    (void)component;
    (void)ud;
    if (level <= DIST_LOG_WARN)
        snprintf(s_logged.text + strlen(s_logged.text), sizeof s_logged.text - strlen(s_logged.text),
                 "%s\n", msg);
}

static int s_occurs(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* ACCEPTED unserved and NOTICE: warned once per name, and when a worker
 * offering it joins. */
static void test_unserved_tasks_are_warned(void **state)
{
    (void)state;
    s_logged.text[0] = 0;
    fm_t *fm = fm_new(NULL);
    dist_client_opts_t o = { .master = fm_endpoint(fm), .name = "tc-unserved",
                             .connect_timeout_ms = 3000, .log = s_log_keep,
                             .log_level = DIST_LOG_INFO };
    dist_client_t *c = dist_client_new(&o);
    assert_non_null(c);
    dist_args_t *a = s_ints(1, 1);
    size_t len;
    const void *args = dist_args_data(a, &len);
    const char *warn = "no connected worker offers task unserved: its tasks wait";
    const char *joined = "a worker offering task unserved joined";
    dist_future_t *f = dist_client_submit(c, "unserved", args, len, 0);
    assert_non_null(f);
    assert_int_equal(s_occurs(s_logged.text, warn), 1);
    dist_future_t *g = dist_client_submit(c, "unserved", args, len, 0);
    assert_int_equal(s_occurs(s_logged.text, warn), 1); /* once per name */
    fm_notice(fm, "unserved", true);
    dist_future_wait(f, 300);
    assert_int_equal(s_occurs(s_logged.text, joined), 1);
    fm_notice(fm, "unserved", false); /* its last worker left again */
    dist_future_wait(f, 300);
    assert_int_equal(s_occurs(s_logged.text, warn), 2);
    dist_future_destroy(&f);
    dist_future_destroy(&g);
    dist_args_destroy(&a);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

static void test_heartbeats_and_lost_master(void **state)
{
    (void)state;
    fm_opts_t fo = { .heartbeat_ms = 100, .heartbeat_timeout_ms = 400 };
    fm_t *fm = fm_new(&fo);
    dist_client_opts_t o = { .master = fm_endpoint(fm), .name = "tc-hb",
                             .connect_timeout_ms = 800 };
    dist_client_t *c = dist_client_new(&o);
    assert_non_null(c);
    dist_args_t *a = s_ints(0);
    size_t len;
    const void *args = dist_args_data(a, &len);
    dist_future_t *f = dist_client_submit(c, "never", args, len, 0);
    assert_non_null(f);
    dist_result_t *r;
    /* Idle inside a wait: heartbeats; this fake master does not send any,
     * so after heartbeat_timeout_ms the client says HELLO again. */
    assert_int_equal(dist_future_get(f, 700, &r), DIST_ETIMEDOUT);
    assert_true(fm_count(fm, DIST__CMD_HEARTBEAT) >= 3);
    assert_true(fm_count(fm, DIST__CMD_HELLO) >= 2);
    dist_future_destroy(&f);
    /* The master goes away: a submit gives up with DIST_ENOMASTER. */
    fm_destroy(&fm);
    int64_t t0 = dt_now_ms();
    assert_null(dist_client_submit(c, "echo", args, len, 0));
    assert_int_equal(errno, -DIST_ENOMASTER);
    dt_assert_took(t0, 800);
    dist_results_t *rs;
    assert_int_equal(dist_client_map(c, "echo", (dist_bytes_t[]){ { args, len } }, 1, 0, 5000,
                                     NULL, NULL, &rs),
                     DIST_ENOMASTER);
    assert_null(rs);
    void *buf;
    assert_int_equal(dist_client_qget(c, "q", &buf, &len, 0), DIST_ENOMASTER);
    dist_args_destroy(&a);
    dist_client_destroy(&c);
}

struct worker_arg {
    dist_client_t *c;
    int base;
};

static void *s_thread_submits(void *arg)
{
    struct worker_arg *w = arg;
    for (int i = 0; i < 50; i++) {
        dist_args_t *a = s_ints(2, w->base, i);
        size_t len;
        const void *args = dist_args_data(a, &len);
        dist_result_t *r;
        int rc = dist_client_call(w->c, "add", args, len, 5000, &r);
        int64_t v = -1;
        if (rc == 0)
            dist_result_int(r, &v);
        dist_result_destroy(&r);
        dist_args_destroy(&a);
        if (v != w->base + i)
            return (void *)1;
    }
    return NULL;
}

static void test_threads_share_a_client(void **state)
{
    (void)state;
    fm_t *fm = fm_new(NULL);
    dist_client_t *c = s_client(fm, "tc-threads");
    /* One thread blocks in a long QGET while others submit and wait: nobody
     * waits for the other's timeout. */
    pthread_t th[3];
    struct worker_arg wa[3] = { { c, 1000 }, { c, 2000 }, { c, 3000 } };
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, s_thread_submits, &wa[i]);
    void *buf;
    size_t len;
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_client_qget(c, "nothing", &buf, &len, 600), DIST_ETIMEDOUT);
    assert_true(dt_now_ms() - t0 < 600 + 2500);
    for (int i = 0; i < 3; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        assert_null(ret);
    }
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* First: it forks before this process starts ZeroMQ. */
        cmocka_unit_test_setup_teardown(test_signal_handlers_untouched, dt_setup, dt_teardown),
        cmocka_unit_test(test_connect_says_hello),
        cmocka_unit_test(test_no_master),
        cmocka_unit_test(test_submit_get_and_ack),
        cmocka_unit_test(test_refusals_map_to_codes),
        cmocka_unit_test(test_duplicates_are_dropped),
        cmocka_unit_test(test_map_in_input_order),
        cmocka_unit_test(test_map_unordered),
        cmocka_unit_test(test_future_methods_and_lent_results),
        cmocka_unit_test(test_map_opts),
        cmocka_unit_test(test_map_failures_refusals_and_timeouts),
        cmocka_unit_test(test_map_splits_by_size),
        cmocka_unit_test(test_named_queues),
        cmocka_unit_test(test_late_qget_reply_puts_items_back),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_reconnect),
        cmocka_unit_test(test_reconnect_redelivers_without_duplicates),
        cmocka_unit_test(test_map_across_a_master_restart),
        cmocka_unit_test(test_new_instance_gets_tasks_again),
        cmocka_unit_test(test_bye_says_hello_at_once),
        cmocka_unit_test(test_unserved_tasks_are_warned),
        cmocka_unit_test(test_heartbeats_and_lost_master),
        cmocka_unit_test(test_threads_share_a_client),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    zsys_shutdown();
    return rc;
}

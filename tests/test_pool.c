/* test_pool.c - dist/pool.h: the functional tests run on both backends
 * (processes and threads); the failure tests (killed, crashing, exiting
 * pool processes) on the process backend. */
#include <dist.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pool_internal.h"
#include "task_internal.h"
#include "testutil.h"

/* ---- tasks -------------------------------------------------------------- */

static int t_square(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t x;
    if (dist_arg_int(args, 0, &x))
        return dist_task_fail(ctx, "square: expected an integer");
    return msgpack_pack_int64(out, x * x);
}
DIST_TASK("test.square", t_square)

static int t_fail(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)out;
    int64_t x = 0;
    dist_arg_int(args, 0, &x);
    return dist_task_fail(ctx, "boom %lld", (long long)x);
}

static int t_sleep(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    int64_t ms = 0;
    dist_arg_int(args, 0, &ms);
    dt_sleep_ms((int)ms);
    return msgpack_pack_int64(out, ms);
}

static int t_pid(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    return msgpack_pack_int64(out, getpid());
}

static int t_segv(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    (void)out;
    signal(SIGSEGV, SIG_DFL); /* past the sanitizer's handler */
    raise(SIGSEGV);
    return 0;
}

static int t_exit3(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    (void)out;
    _exit(3);
}

static int t_abort(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    (void)out;
    signal(SIGABRT, SIG_DFL);
    abort();
}

static int t_two_values(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    msgpack_pack_int(out, 1);
    return msgpack_pack_int(out, 2);
}

static int t_no_value(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    (void)out;
    return 0;
}

static int t_echo_len(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    const void *p;
    size_t n;
    if (dist_arg_bin(args, 0, &p, &n))
        return dist_task_fail(ctx, "echo_len: expected bytes");
    return msgpack_pack_uint64(out, n);
}

/* Asks for a retry ([delay_ms, reason] or [delay_ms]), after failing:
 * the retry request wins. */
static int t_retry(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)out;
    int64_t ms = 0;
    const char *s = NULL;
    size_t n = 0;
    dist_arg_int(args, 0, &ms);
    char reason[64];
    if (dist_arg_str(args, 1, &s, &n) == 0)
        snprintf(reason, sizeof reason, "%.*s", (int)n, s);
    dist_task_fail(ctx, "not this message");
    return dist_task_retry(ctx, (int)ms, s ? reason : NULL);
}

/* The first random numbers a fresh pool process draws, with its pid. */
static int t_rand(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    msgpack_pack_array(out, 3);
    msgpack_pack_int64(out, getpid());
    msgpack_pack_int64(out, rand());
    return msgpack_pack_int64(out, (int64_t)(drand48() * 281474976710656.0)); /* 2^48 */
}
DIST_TASK("test.rand", t_rand)

/* Shared with every pool process: where tasks and initializers report. */
struct board {
    _Atomic int inits;
    _Atomic int victim_pid;
    _Atomic int printed;
};
static struct board *s_board;

static void s_init(void *arg)
{
    (void)arg;
    atomic_fetch_add(&s_board->inits, 1);
}

/* Publishes its pid, then sleeps: the parent kills it mid-task. */
static int t_victim(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    atomic_store(&s_board->victim_pid, getpid());
    dt_sleep_ms(20000);
    return msgpack_pack_nil(out);
}
DIST_TASK("test.victim", t_victim)

static int t_print(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    /* Takes the stdio lock, which a parent thread holds for the whole test:
     * only a process forked from a clean state gets past this. */
    fprintf(stdout, "%s", "");
    fflush(stdout);
    atomic_fetch_add(&s_board->printed, 1);
    return msgpack_pack_int64(out, getpid());
}

/* ---- helpers -------------------------------------------------------------- */

static bool s_threads_backend;

static dist_pool_t *s_pool(int procs, int maxtasks, int timeout_ms, size_t max_message)
{
    dist_pool_opts_t o = { .processes = procs, .maxtasksperchild = maxtasks,
                           .timeout_ms = timeout_ms, .threads = s_threads_backend,
                           .max_message = max_message, .initializer = s_init };
    dist_pool_t *p = dist_pool_new(&o);
    assert_non_null(p);
    return p;
}

/* [x] packed into buf (at most 10 bytes). */
static size_t s_pack_int(unsigned char *buf, int64_t x)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_int64(&pk, x);
    memcpy(buf, sb.data, sb.size);
    size_t n = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

/* Maps `task` over n empty argument arrays, one item per message (with
 * maxtasksperchild=1, one fresh process per item); asserts success. */
static dist_results_t *s_map_no_args(dist_pool_t *p, dist_task_ref_t task, size_t n)
{
    dist_bytes_t items[64];
    assert_true(n <= 64);
    for (size_t i = 0; i < n; i++)
        items[i] = (dist_bytes_t){ "\x90", 1 };
    dist_results_t *rs;
    assert_int_equal(dist_pool_map(p, task, items, n, 1, &rs), 0);
    return rs;
}

static int s_setup(void **state)
{
    (void)state;
    atomic_store(&s_board->inits, 0);
    atomic_store(&s_board->victim_pid, 0);
    atomic_store(&s_board->printed, 0);
    return 0;
}

/* ---- functional tests (both backends) ------------------------------------- */

static void test_apply_and_errors(void **state)
{
    (void)state;
    dist_pool_t *p = s_pool(2, 0, 0, 0);
    assert_int_equal(dist_pool_size(p), 2);
    unsigned char a[16];
    size_t n = s_pack_int(a, 7);
    dist_result_t *r;
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_square), a, n, &r), 0);
    int64_t v;
    assert_int_equal(dist_result_int(r, &v), 0);
    assert_int_equal(v, 49);
    dist_result_destroy(&r);

    /* By name. */
    assert_int_equal(dist_pool_apply(p, DIST_NAMED("test.square"), a, n, &r), 0);
    assert_int_equal(dist_result_int(r, &v), 0);
    assert_int_equal(v, 49);
    dist_result_destroy(&r);

    /* A failing task is a normal error result with its message. */
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_fail), a, n, &r), DIST_ETASK);
    assert_false(dist_result_ok(r));
    assert_string_equal(dist_result_error(r), "boom 7");
    dist_result_destroy(&r);

    /* Unknown name: refused at once, with a message. */
    assert_int_equal(dist_pool_apply(p, DIST_NAMED("no.such.task"), a, n, &r), DIST_ENOENT);
    assert_non_null(r);
    assert_non_null(strstr(dist_result_error(r), "no.such.task"));
    dist_result_destroy(&r);

    /* Wrong argument type, arguments that are not an array, bad results. */
    dist_args_t *args = dist_args_new();
    dist_args_str(args, "seven");
    size_t alen;
    const void *ad = dist_args_data(args, &alen);
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_square), ad, alen, &r), DIST_ETASK);
    assert_non_null(strstr(dist_result_error(r), "expected an integer"));
    dist_result_destroy(&r);
    dist_args_destroy(&args);
    const unsigned char notarray[] = { 0x05 };
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_square), notarray, 1, &r), DIST_EPROTO);
    dist_result_destroy(&r);
    const unsigned char liar[] = { 0xdd, 0x7f, 0xff, 0xff, 0xff }; /* array32 of 2^31 */
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_square), liar, sizeof liar, &r), DIST_EPROTO);
    dist_result_destroy(&r);
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_two_values), NULL, 0, &r), DIST_EPROTO);
    assert_non_null(strstr(dist_result_error(r), "more than one value"));
    dist_result_destroy(&r);
    /* A task that packs nothing returns nil, as a Python function that
     * returns nothing gives None. */
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_no_value), NULL, 0, &r), 0);
    assert_true(dist_result_ok(r));
    assert_non_null(dist_result_value(r));
    assert_int_equal(dist_result_value(r)->type, MSGPACK_OBJECT_NIL);
    dist_result_destroy(&r);

    /* The pool still works after all that. */
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_square), a, n, &r), 0);
    dist_result_destroy(&r);
    dist_pool_destroy(&p);
    assert_null(p);
}

static _Atomic int s_cb_ok, s_cb_err;
static _Atomic uint8_t s_cb_seen[1000];

static void s_on_ok(dist_result_t *r, void *ud)
{
    int64_t v;
    assert_int_equal(dist_result_int(r, &v), 0);
    intptr_t i = (intptr_t)ud;
    assert_int_equal(v, (int64_t)i * i);
    atomic_fetch_add(&s_cb_seen[i], 1);
    atomic_fetch_add(&s_cb_ok, 1);
}

static void s_on_err(dist_result_t *r, void *ud)
{
    assert_false(dist_result_ok(r));
    atomic_fetch_add(&s_cb_seen[(intptr_t)ud], 1);
    atomic_fetch_add(&s_cb_err, 1);
}

static void test_apply_async_callbacks_exactly_once(void **state)
{
    (void)state;
    dist_pool_t *p = s_pool(2, 0, 0, 0);
    atomic_store(&s_cb_ok, 0);
    atomic_store(&s_cb_err, 0);
    memset((void *)s_cb_seen, 0, sizeof s_cb_seen);
    dist_async_t *h[1000];
    for (int i = 0; i < 1000; i++) {
        unsigned char a[16];
        size_t n = s_pack_int(a, i);
        dist_submit_opts_t o = { .callback = s_on_ok, .error_callback = s_on_err,
                                 .userdata = (void *)(intptr_t)i };
        h[i] = dist_pool_apply_async(p, i % 10 == 0 ? DIST_FN(t_fail) : DIST_FN(t_square), a, n, &o);
        assert_non_null(h[i]);
        if (i % 3 == 0) /* dropping the handle early must not drop the callback */
            dist_async_destroy(&h[i]);
    }
    for (int i = 0; i < 1000; i++) {
        if (!h[i])
            continue;
        dist_result_t *r;
        int st = dist_async_get(h[i], 30000, &r);
        assert_true(dist_async_ready(h[i]));
        if (i % 10 == 0) {
            assert_int_equal(st, DIST_ETASK);
            assert_false(dist_async_successful(h[i]));
        } else {
            assert_int_equal(st, 0);
            assert_true(dist_async_successful(h[i]));
            int64_t v;
            assert_int_equal(dist_result_int(r, &v), 0);
            assert_int_equal(v, (int64_t)i * i);
        }
        dist_async_destroy(&h[i]);
    }
    /* Callbacks run on the manager thread after the result is visible:
     * close and join to be sure all have run. */
    assert_int_equal(dist_pool_close(p), 0);
    assert_int_equal(dist_pool_join(p, 30000), 0);
    assert_int_equal(atomic_load(&s_cb_ok), 900);
    assert_int_equal(atomic_load(&s_cb_err), 100);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(s_cb_seen[i], 1);
    dist_pool_destroy(&p);
}

/* One ownership rule: a result lent by a handle (dist_async_get, a
 * callback, dist_async_results) may be destroyed by the caller: that only
 * NULLs the pointer, the handle still holds it and frees it once. */
static void s_destroy_lent(dist_result_t *r, void *ud)
{
    (void)ud;
    dist_result_destroy(&r); /* lent to the callback: harmless */
}

static void test_lent_results_destroy_harmlessly(void **state)
{
    (void)state;
    dist_pool_t *p = s_pool(2, 0, 0, 0);
    unsigned char a[16];
    size_t n = s_pack_int(a, 9);
    dist_submit_opts_t o = { .callback = s_destroy_lent, .error_callback = s_destroy_lent };
    dist_async_t *h = dist_pool_apply_async(p, DIST_FN(t_square), a, n, &o);
    assert_non_null(h);
    /* The same methods as a client's future: wait, ready, successful, get. */
    assert_int_equal(dist_async_wait(h, 30000), 0);
    assert_true(dist_async_ready(h));
    assert_true(dist_async_successful(h));
    dist_result_t *r = NULL;
    assert_int_equal(dist_async_get(h, 0, &r), 0);
    dist_result_destroy(&r);
    assert_null(r);
    assert_int_equal(dist_async_get(h, 0, &r), 0); /* still there */
    int64_t v = 0;
    assert_int_equal(dist_result_int(r, &v), 0);
    assert_int_equal(v, 81);
    dist_result_t *copy = dist_result_dup(r); /* an owned copy outlives the handle */
    dist_result_destroy(&r);
    dist_async_destroy(&h);
    assert_int_equal(dist_result_int(copy, &v), 0);
    assert_int_equal(v, 81);
    dist_result_destroy(&copy);

    /* A failure, and a map's summary and items. */
    h = dist_pool_apply_async(p, DIST_FN(t_fail), a, n, &o);
    assert_int_equal(dist_async_get(h, 30000, &r), DIST_ETASK);
    assert_false(dist_async_successful(h));
    dist_result_destroy(&r);
    dist_async_destroy(&h);
    dist_bytes_t items[3] = { { a, n }, { a, n }, { a, n } };
    h = dist_pool_map_async(p, DIST_FN(t_square), items, 3, 1, NULL);
    assert_int_equal(dist_async_get(h, 30000, &r), 0);
    assert_true(dist_async_successful(h));
    dist_result_destroy(&r);
    dist_result_t *item = dist_results_at(dist_async_results(h), 2);
    dist_result_destroy(&item);
    assert_int_equal(dist_result_int(dist_results_at(dist_async_results(h), 2), &v), 0);
    assert_int_equal(v, 81);
    dist_async_destroy(&h);

    /* apply hands its result over: the caller owns and frees it. */
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_square), a, n, &r), 0);
    dist_result_destroy(&r);
    assert_null(r);
    dist_pool_destroy(&p);
}

static void test_map_million_ordered(void **state)
{
    (void)state;
    enum { N = 1000000 };
    unsigned char *buf = malloc((size_t)N * 10);
    dist_bytes_t *items = malloc(N * sizeof *items);
    size_t off = 0;
    for (int i = 0; i < N; i++) {
        size_t n = s_pack_int(buf + off, i);
        items[i] = (dist_bytes_t){ buf + off, n };
        off += n;
    }
    dist_pool_t *p = s_pool(2, 0, 0, 0);
    dist_results_t *rs;
    assert_int_equal(dist_pool_map(p, DIST_FN(t_square), items, N, 0, &rs), 0);
    assert_int_equal(dist_results_count(rs), N);
    assert_int_equal(dist_results_status(rs, NULL), 0);
    for (int i = 0; i < N; i++) {
        int64_t v;
        if (dist_result_int(dist_results_at(rs, (size_t)i), &v) || v != (int64_t)i * i)
            fail_msg("item %d: wrong result", i);
    }
    assert_null(dist_results_at(rs, N));
    dist_results_destroy(&rs);

    /* A failing item among good ones: map reports it, the rest are fine. */
    dist_bytes_t few[3] = { items[1], { "\x91\xa1x", 3 }, items[3] };
    assert_int_equal(dist_pool_map(p, DIST_FN(t_square), few, 3, 1, &rs), DIST_ETASK);
    size_t bad;
    assert_int_equal(dist_results_status(rs, &bad), DIST_ETASK);
    assert_int_equal(bad, 1);
    int64_t v;
    assert_int_equal(dist_result_int(dist_results_at(rs, 2), &v), 0);
    assert_int_equal(v, 9);
    dist_result_t *copy = dist_result_dup(dist_results_at(rs, 1));
    dist_results_destroy(&rs);
    assert_non_null(strstr(dist_result_error(copy), "expected an integer"));
    dist_result_destroy(&copy);

    /* Empty map. */
    assert_int_equal(dist_pool_map(p, DIST_FN(t_square), NULL, 0, 0, &rs), 0);
    assert_int_equal(dist_results_count(rs), 0);
    dist_results_destroy(&rs);
    dist_pool_destroy(&p);
    free(items);
    free(buf);
}

static void s_imap_check(bool ordered)
{
    enum { N = 5000 };
    unsigned char buf[N * 10];
    dist_bytes_t items[N];
    size_t off = 0;
    for (int i = 0; i < N; i++) {
        size_t n = s_pack_int(buf + off, i);
        items[i] = (dist_bytes_t){ buf + off, n };
        off += n;
    }
    dist_pool_t *p = s_pool(2, 0, 0, 0);
    dist_imap_t *it = ordered ? dist_pool_imap(p, DIST_FN(t_square), items, N, 7)
                              : dist_pool_imap_unordered(p, DIST_FN(t_square), items, N, 0);
    assert_non_null(it);
    static uint8_t seen[N];
    memset(seen, 0, sizeof seen);
    dist_result_t *r;
    size_t idx, count = 0;
    int rc;
    while ((rc = dist_imap_next(it, &r, &idx, 30000)) == 1) {
        if (ordered)
            assert_int_equal(idx, count);
        int64_t v;
        assert_int_equal(dist_result_int(r, &v), 0);
        assert_int_equal(v, (int64_t)idx * (int64_t)idx);
        assert_int_equal(seen[idx]++, 0);
        dist_result_destroy(&r);
        count++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(count, N);
    assert_int_equal(dist_imap_next(it, &r, &idx, 0), 0);
    dist_imap_destroy(&it);

    /* Destroying an iterator early is fine. */
    it = dist_pool_imap(p, DIST_FN(t_square), items, N, 1);
    assert_int_equal(dist_imap_next(it, &r, &idx, 30000), 1);
    dist_result_destroy(&r);
    dist_imap_destroy(&it);
    dist_result_t *again;
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_square), items[3].data, items[3].len, &again), 0);
    dist_result_destroy(&again);
    dist_pool_destroy(&p);
}

static void test_imap_ordered(void **state)
{
    (void)state;
    s_imap_check(true);
}

static void test_imap_unordered_every_result_once(void **state)
{
    (void)state;
    s_imap_check(false);
}

static void test_initializer_once_per_worker(void **state)
{
    (void)state;
    dist_pool_t *p = s_pool(3, 0, 0, 0);
    unsigned char a[16];
    size_t n = s_pack_int(a, 2);
    dist_result_t *r;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(dist_pool_apply(p, DIST_FN(t_square), a, n, &r), 0);
        dist_result_destroy(&r);
    }
    dist_pool_close(p);
    assert_int_equal(dist_pool_join(p, 30000), 0);
    assert_int_equal(atomic_load(&s_board->inits), 3);
    dist_pool_destroy(&p);
}

static void test_misuse_errors(void **state)
{
    (void)state;
    dist_pool_t *p = s_pool(1, 0, 0, 0);
    assert_int_equal(dist_pool_join(p, 0), DIST_ESTATE); /* join before close */
    assert_int_equal(dist_pool_close(p), 0);
    assert_int_equal(dist_pool_close(p), 0);
    errno = 0;
    assert_null(dist_pool_apply_async(p, DIST_FN(t_square), "\x91\x01", 2, NULL));
    assert_int_equal(errno, -DIST_ESTATE);
    dist_result_t *r;
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_square), "\x91\x01", 2, &r), DIST_ESTATE);
    assert_null(r);
    assert_int_equal(dist_pool_join(p, 30000), 0);
    assert_int_equal(dist_pool_terminate(p), 0); /* after join: harmless */
    dist_pool_destroy(&p);

    dist_pool_opts_t bad = { .processes = -1 };
    errno = 0;
    assert_null(dist_pool_new(&bad));
    assert_int_equal(errno, EINVAL);
    dist_pool_destroy(NULL);
}

static void test_timeout_kills_and_replaces(void **state)
{
    (void)state;
    dist_pool_t *p = s_pool(2, 0, 300, 0);
    unsigned char a[16];
    size_t n = s_pack_int(a, 20000);
    dist_result_t *r;
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_sleep), a, n, &r), DIST_ETIMEDOUT);
    int64_t took = dt_now_ms() - t0;
    assert_true(took >= 290 && took < 10000);
    assert_non_null(strstr(dist_result_error(r), "timed out"));
    dist_result_destroy(&r);
    /* A per-submission timeout overrides the pool's. */
    n = s_pack_int(a, 500);
    dist_submit_opts_t o = { .timeout_ms = 5000 };
    dist_async_t *h = dist_pool_apply_async(p, DIST_FN(t_sleep), a, n, &o);
    assert_int_equal(dist_async_get(h, 30000, &r), 0);
    dist_async_destroy(&h);
    /* Work goes on. */
    n = s_pack_int(a, 9);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(dist_pool_apply(p, DIST_FN(t_square), a, n, &r), 0);
        dist_result_destroy(&r);
    }
    dist_pool_stats_t st;
    dist_pool_stats(p, &st);
    assert_int_equal(st.timed_out, 1);
    dist_pool_destroy(&p);
}

static void test_message_size_limits(void **state)
{
    (void)state;
    dist_pool_t *p = s_pool(1, 0, 0, 4096);
    dist_args_t *args = dist_args_new();
    static char big[8192];
    dist_args_bin(args, big, sizeof big);
    size_t len;
    const void *d = dist_args_data(args, &len);
    dist_result_t *r;
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_echo_len), d, len, &r), DIST_EMSGSIZE);
    assert_non_null(strstr(dist_result_error(r), "exceed"));
    dist_result_destroy(&r);
    dist_args_clear(args);
    dist_args_bin(args, big, 100);
    d = dist_args_data(args, &len);
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_echo_len), d, len, &r), 0);
    dist_result_destroy(&r);
    dist_args_destroy(&args);
    dist_pool_destroy(&p);
}

static int t_big_result(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    static char big[8192];
    msgpack_pack_bin(out, sizeof big);
    return msgpack_pack_bin_body(out, big, sizeof big);
}

/* The error for an oversized result names the task in full, even when the
 * name is as long as names may be, and carries nothing after the message. */
static void test_oversized_result_long_name(void **state)
{
    (void)state;
    char name[DIST_TASK_NAME_MAX + 1];
    memset(name, 'n', DIST_TASK_NAME_MAX);
    name[DIST_TASK_NAME_MAX] = 0;
    assert_int_equal(dist_task_register(name, t_big_result), 0);
    dist_pool_t *p = s_pool(1, 0, 0, 4096);
    dist_result_t *r;
    assert_int_equal(dist_pool_apply(p, DIST_NAMED(name), NULL, 0, &r), DIST_EMSGSIZE);
    char want[DIST_TASK_NAME_MAX + 128];
    snprintf(want, sizeof want, "task %s: result of %d bytes exceeds the pool's limit of %d", name,
             8192 + 3, 4096); /* bin 16: 3 bytes of header */
    assert_string_equal(dist_result_error(r), want);
    dist_result_destroy(&r);
    dist_pool_destroy(&p);
}

static void test_terminate_fails_pending(void **state)
{
    (void)state;
    dist_pool_t *p = s_pool(1, 0, 0, 0);
    unsigned char a[16];
    size_t n = s_pack_int(a, 30000);
    dist_async_t *h[5];
    for (int i = 0; i < 5; i++)
        h[i] = dist_pool_apply_async(p, DIST_FN(t_sleep), a, n, NULL);
    dt_sleep_ms(100);
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_pool_terminate(p), 0);
    assert_true(dt_now_ms() - t0 < 10000);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(dist_async_get(h[i], 0, NULL), DIST_ECLOSED);
        dist_async_destroy(&h[i]);
    }
    dist_pool_destroy(&p);
}

/* ---- failure tests (process backend) ---------------------------------------- */

static void test_killed_process_fails_only_its_task(void **state)
{
    (void)state;
    enum { N = 10000 };
    dist_pool_t *p = s_pool(2, 0, 0, 0);
    dist_async_t *victim = dist_pool_apply_async(p, DIST_FN(t_victim), NULL, 0, NULL);
    static dist_async_t *h[N];
    for (int i = 0; i < N; i++) {
        unsigned char a[16];
        size_t n = s_pack_int(a, i);
        h[i] = dist_pool_apply_async(p, DIST_FN(t_square), a, n, NULL);
        assert_non_null(h[i]);
    }
    int vpid = 0;
    for (int i = 0; i < 2000 && !(vpid = atomic_load(&s_board->victim_pid)); i++)
        dt_sleep_ms(5);
    assert_true(vpid > 0);
    assert_int_equal(kill(vpid, SIGKILL), 0);
    dist_result_t *r;
    assert_int_equal(dist_async_get(victim, 30000, &r), DIST_ECRASHED);
    char want[64];
    snprintf(want, sizeof want, "pool process %d was killed by signal 9 (SIGKILL)", vpid);
    assert_non_null(strstr(dist_result_error(r), want));
    assert_non_null(strstr(dist_result_error(r), "task test.victim"));
    dist_async_destroy(&victim);
    for (int i = 0; i < N; i++) {
        assert_int_equal(dist_async_get(h[i], 30000, &r), 0);
        int64_t v;
        assert_int_equal(dist_result_int(r, &v), 0);
        assert_int_equal(v, (int64_t)i * i);
        dist_async_destroy(&h[i]);
    }
    /* The process was replaced: two alive, neither the victim. */
    pid_t pids[4];
    size_t np = 0;
    for (int i = 0; i < 200 && (np = dist_pool_pids(p, pids, 4)) != 2; i++)
        dt_sleep_ms(10);
    assert_int_equal(np, 2);
    assert_true(pids[0] != vpid && pids[1] != vpid);
    dist_pool_stats_t st;
    dist_pool_stats(p, &st);
    assert_int_equal(st.crashed, 1);
    assert_int_equal(st.completed, N);
    dist_pool_destroy(&p);
}

static void test_crashing_tasks_report_signal_or_status(void **state)
{
    (void)state;
    dist_pool_t *p = s_pool(2, 0, 0, 0);
    dist_result_t *r;
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_segv), "\x90", 1, &r), DIST_ECRASHED);
    assert_non_null(strstr(dist_result_error(r), "signal 11 (SIGSEGV)"));
    assert_non_null(strstr(dist_result_error(r), "pool process "));
    dist_result_destroy(&r);
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_exit3), "\x90", 1, &r), DIST_ECRASHED);
    assert_non_null(strstr(dist_result_error(r), "exited with status 3"));
    dist_result_destroy(&r);
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_abort), "\x90", 1, &r), DIST_ECRASHED);
    assert_non_null(strstr(dist_result_error(r), "SIGABRT"));
    dist_result_destroy(&r);

    /* Crashes inside a map: exactly the bad items fail, all others succeed. */
    enum { N = 2000 };
    static unsigned char buf[N * 10];
    static dist_bytes_t items[N];
    size_t off = 0;
    for (int i = 0; i < N; i++) {
        size_t n = s_pack_int(buf + off, i);
        items[i] = (dist_bytes_t){ buf + off, n };
        off += n;
    }
    dist_results_t *rs;
    assert_int_equal(dist_pool_map(p, DIST_NAMED("test.square"), items, N, 50, &rs), 0);
    dist_results_destroy(&rs);
    dist_pool_destroy(&p);
}

/* A map whose every 500th item segfaults: those fail, the rest are right. */
static int t_square_or_crash(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t x;
    if (dist_arg_int(args, 0, &x))
        return dist_task_fail(ctx, "expected an integer");
    if (x % 500 == 499) {
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
    }
    return msgpack_pack_int64(out, x * x);
}

static void test_map_with_crashing_items(void **state)
{
    (void)state;
    enum { N = 5000 };
    static unsigned char buf[N * 10];
    static dist_bytes_t items[N];
    size_t off = 0;
    for (int i = 0; i < N; i++) {
        size_t n = s_pack_int(buf + off, i);
        items[i] = (dist_bytes_t){ buf + off, n };
        off += n;
    }
    dist_pool_t *p = s_pool(2, 0, 0, 0);
    dist_results_t *rs;
    assert_int_equal(dist_pool_map(p, DIST_FN(t_square_or_crash), items, N, 0, &rs), DIST_ETASK);
    int crashed = 0;
    for (int i = 0; i < N; i++) {
        dist_result_t *r = dist_results_at(rs, (size_t)i);
        if (i % 500 == 499) {
            assert_int_equal(dist_result_status(r), DIST_ECRASHED);
            assert_non_null(strstr(dist_result_error(r), "SIGSEGV"));
            crashed++;
        } else {
            int64_t v;
            if (dist_result_int(r, &v) || v != (int64_t)i * i)
                fail_msg("item %d: %s", i, dist_result_error(r) ? dist_result_error(r) : "wrong value");
        }
    }
    assert_int_equal(crashed, N / 500);
    dist_results_destroy(&rs);
    dist_pool_destroy(&p);
}

static void test_maxtasksperchild_recycles(void **state)
{
    (void)state;
    dist_pool_t *p = s_pool(2, 1, 0, 0);
    enum { N = 12 };
    dist_results_t *rs = s_map_no_args(p, DIST_FN(t_pid), N);
    int64_t pids[N];
    int distinct = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(dist_result_int(dist_results_at(rs, (size_t)i), &pids[i]), 0);
        bool dup = false;
        for (int k = 0; k < i; k++)
            dup |= pids[k] == pids[i];
        distinct += !dup;
    }
    dist_results_destroy(&rs);
    /* One task per process: every task ran in a fresh process. */
    assert_int_equal(distinct, N);
    /* And the results of real work stay right while processes turn over. */
    unsigned char buf[100 * 10];
    dist_bytes_t sq[100];
    size_t off = 0;
    for (int i = 0; i < 100; i++) {
        size_t n = s_pack_int(buf + off, i);
        sq[i] = (dist_bytes_t){ buf + off, n };
        off += n;
    }
    assert_int_equal(dist_pool_map(p, DIST_FN(t_square), sq, 100, 3, &rs), 0);
    for (int i = 0; i < 100; i++) {
        int64_t v;
        assert_int_equal(dist_result_int(dist_results_at(rs, (size_t)i), &v), 0);
        assert_int_equal(v, (int64_t)i * i);
    }
    dist_results_destroy(&rs);
    dist_pool_close(p);
    assert_int_equal(dist_pool_join(p, 30000), 0);
    assert_true(atomic_load(&s_board->inits) >= N + 2);
    dist_pool_destroy(&p);
}

/* Pool processes are forks of one fork server and would share its random
 * state: each must draw its own sequence from rand() and drand48(). One
 * task per process (maxtasksperchild=1), so every result is the first
 * draw of a fresh process. */
static void test_processes_have_own_random_state(void **state)
{
    (void)state;
    dist_pool_t *p = s_pool(2, 1, 0, 0);
    enum { N = 12 };
    dist_results_t *rs = s_map_no_args(p, DIST_NAMED("test.rand"), N);
    int64_t v[N][3];
    for (int i = 0; i < N; i++) {
        const msgpack_object *o = dist_result_value(dist_results_at(rs, (size_t)i));
        assert_non_null(o);
        for (size_t k = 0; k < 3; k++)
            assert_int_equal(dist_arg_int(o, k, &v[i][k]), 0);
    }
    dist_results_destroy(&rs);
    int pairs = 0;
    for (int i = 0; i < N; i++)
        for (int k = 0; k < i; k++)
            if (v[i][0] != v[k][0]) {
                pairs++;
                assert_true(v[i][1] != v[k][1]); /* rand() */
                assert_true(v[i][2] != v[k][2]); /* drand48() */
            }
    assert_true(pairs > 0); /* several processes did run it */
    dist_pool_destroy(&p);
}

static void *s_hold_stdout(void *arg)
{
    _Atomic int *stop = arg;
    flockfile(stdout);
    while (!atomic_load(stop))
        dt_sleep_ms(5);
    funlockfile(stdout);
    return NULL;
}

/* A parent thread holds the stdio lock while the pool forks new processes
 * (maxtasksperchild=1): processes forked from the parent would inherit the
 * lock held and hang in printf; ours come from the fork server. */
static void test_parent_threads_do_not_deadlock_children(void **state)
{
    (void)state;
    dist_pool_t *p = s_pool(2, 1, 0, 0);
    _Atomic int stop = 0;
    pthread_t t;
    pthread_create(&t, NULL, s_hold_stdout, &stop);
    dt_sleep_ms(50);
    dist_async_t *h[10];
    for (int i = 0; i < 10; i++)
        h[i] = dist_pool_apply_async(p, DIST_FN(t_print), NULL, 0, NULL);
    int ok = 0;
    for (int i = 0; i < 10; i++) {
        ok += dist_async_get(h[i], 20000, NULL) == 0;
        dist_async_destroy(&h[i]);
    }
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    assert_int_equal(ok, 10);
    dist_pool_destroy(&p);
}

static void test_destroy_leaves_no_process(void **state)
{
    (void)state;
    dist_pool_t *p = s_pool(3, 0, 0, 0);
    unsigned char a[16];
    size_t n = s_pack_int(a, 30000);
    dist_async_t *h = dist_pool_apply_async(p, DIST_FN(t_sleep), a, n, NULL);
    pid_t pids[3];
    size_t np = 0;
    for (int i = 0; i < 500 && (np = dist_pool_pids(p, pids, 3)) < 3; i++)
        dt_sleep_ms(10);
    assert_int_equal(np, 3);
    dist_pool_destroy(&p);
    for (size_t i = 0; i < np; i++)
        assert_true(kill(pids[i], 0) < 0 && errno == ESRCH);
    assert_int_equal(dt_children(), 0);
    assert_int_equal(dist_async_get(h, 0, NULL), DIST_ECLOSED);
    dist_async_destroy(&h);
}

/* A local Pool has no master to retry with: dist_task_retry gives an
 * error result that says so, with the reason; the delay travels with it
 * (the distributed worker reads it), and map results keep exactly the
 * message. */
static void test_retry_request_is_an_error(void **state)
{
    (void)state;
    dist_pool_t *p = s_pool(2, 0, 0, 0);
    dist_args_t *a = dist_args_pack("is", 1500, "db busy");
    size_t alen;
    const void *ad = dist_args_data(a, &alen);
    dist_async_t *h = dist_pool_apply_async(p, DIST_FN(t_retry), ad, alen, NULL);
    assert_non_null(h);
    dist_result_t *r;
    assert_int_equal(dist_async_get(h, 10000, &r), DIST_ERETRY);
    assert_false(dist_result_ok(r));
    assert_string_equal(dist_result_error(r), "retry requested: db busy");
    assert_int_equal(dist__pool_retry_ms(h), 1500);
    dist_async_destroy(&h);

    /* No reason, a negative delay (none). */
    dist_args_t *b = dist_args_pack("i", -5);
    size_t blen;
    const void *bd = dist_args_data(b, &blen);
    h = dist_pool_apply_async(p, DIST_FN(t_retry), bd, blen, NULL);
    assert_int_equal(dist_async_get(h, 10000, &r), DIST_ERETRY);
    assert_string_equal(dist_result_error(r), "retry requested");
    assert_int_equal(dist__pool_retry_ms(h), 0);
    dist_async_destroy(&h);

    dist_bytes_t items[3] = { { ad, alen }, { bd, blen }, { ad, alen } };
    dist_results_t *rs;
    assert_int_equal(dist_pool_map(p, DIST_FN(t_retry), items, 3, 1, &rs), DIST_ETASK);
    for (size_t i = 0; i < 3; i++) {
        dist_result_t *it = dist_results_at(rs, i);
        assert_int_equal(dist_result_status(it), DIST_ERETRY);
        assert_string_equal(dist_result_error(it), i == 1 ? "retry requested" : "retry requested: db busy");
    }
    dist_results_destroy(&rs);
    dist_args_destroy(&a);
    dist_args_destroy(&b);
    dist_pool_destroy(&p);
}

/* dist__pool_cancel (the distributed worker's CANCEL): a task still in
 * the pool is dropped, a running one is stopped as a timeout stops it
 * (process killed and replaced), well before it would have ended; both
 * results are DIST_ECANCELLED, and work goes on. */
static void test_cancel_one_task(void **state)
{
    (void)state;
    dist_pool_t *p = s_pool(1, 0, 0, 0);
    unsigned char a[16], b[16];
    size_t n = s_pack_int(a, 20000), m = s_pack_int(b, 4);
    dist_result_t *r;
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_pid), NULL, 0, &r), 0);
    int64_t pid0;
    assert_int_equal(dist_result_int(r, &pid0), 0);
    dist_result_destroy(&r);

    dist_async_t *running = dist_pool_apply_async(p, DIST_FN(t_sleep), a, n, NULL);
    dist_async_t *waiting[3];
    for (int i = 0; i < 3; i++)
        waiting[i] = dist_pool_apply_async(p, DIST_FN(t_square), b, m, NULL);
    dt_sleep_ms(200); /* the sleep has started */
    assert_false(dist_async_ready(running));
    /* The last one is still in the pool's own list (the slot holds two);
     * the one behind the sleep in the slot is stopped when it would start. */
    assert_int_equal(dist__pool_cancel(p, waiting[2]), 0);
    assert_int_equal(dist_async_get(waiting[2], 0, &r), DIST_ECANCELLED);
    assert_string_equal(dist_result_error(r), "task test.square: cancelled before it started");
    int rc = dist__pool_cancel(p, waiting[1]);
    assert_true(rc == 0 || rc == 1);

    int64_t t0 = dt_now_ms();
    assert_int_equal(dist__pool_cancel(p, running), 1);
    assert_int_equal(dist_async_get(running, 10000, &r), DIST_ECANCELLED);
    assert_true(dt_now_ms() - t0 < 5000);
    assert_non_null(strstr(dist_result_error(r), "was cancelled while running; pool "));
    assert_int_equal(dist_async_get(waiting[1], 10000, &r), DIST_ECANCELLED);
    assert_non_null(strstr(dist_result_error(r), "cancelled before it started"));
    /* Not cancelled: it runs, in the replacement. */
    assert_int_equal(dist_async_get(waiting[0], 10000, &r), 0);
    int64_t v;
    assert_int_equal(dist_result_int(r, &v), 0);
    assert_int_equal(v, 16);
    assert_int_equal(dist__pool_cancel(p, waiting[0]), DIST_ESTATE);
    assert_int_equal(dist__pool_cancel(p, running), DIST_ESTATE);
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_pid), NULL, 0, &r), 0);
    int64_t pid1;
    assert_int_equal(dist_result_int(r, &pid1), 0);
    dist_result_destroy(&r);
    if (!s_threads_backend)
        assert_true(pid1 != pid0);
    for (int i = 0; i < 3; i++)
        dist_async_destroy(&waiting[i]);
    dist_async_destroy(&running);
    dist_pool_destroy(&p);
}

/* ---- main ------------------------------------------------------------------ */

static int s_use_processes(void **state)
{
    s_threads_backend = false;
    return s_setup(state);
}

static int s_use_threads(void **state)
{
    s_threads_backend = true;
    return s_setup(state);
}

#define PROCS(t) cmocka_unit_test_setup_teardown(t, s_use_processes, dt_teardown)
#define THREADS(t) cmocka_unit_test_setup_teardown(t, s_use_threads, dt_teardown)

int main(void)
{
    s_board = mmap(NULL, sizeof *s_board, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    /* Every process-backend test runs before the threads-backend ones: a
     * timed-out thread is abandoned and may still be running when the next
     * test forks a fork server, and under AddressSanitizer (whose allocator
     * lock is not taken around fork, unlike glibc's malloc) a child forked
     * while such a thread allocates can inherit that lock held. */
    const struct CMUnitTest tests[] = {
        PROCS(test_apply_and_errors),
        PROCS(test_retry_request_is_an_error),
        PROCS(test_cancel_one_task),
        PROCS(test_apply_async_callbacks_exactly_once),
        PROCS(test_lent_results_destroy_harmlessly),
        PROCS(test_map_million_ordered),
        PROCS(test_imap_ordered),
        PROCS(test_imap_unordered_every_result_once),
        PROCS(test_initializer_once_per_worker),
        PROCS(test_misuse_errors),
        PROCS(test_timeout_kills_and_replaces),
        PROCS(test_message_size_limits),
        PROCS(test_oversized_result_long_name),
        PROCS(test_terminate_fails_pending),
        PROCS(test_killed_process_fails_only_its_task),
        PROCS(test_crashing_tasks_report_signal_or_status),
        PROCS(test_map_with_crashing_items),
        PROCS(test_maxtasksperchild_recycles),
        PROCS(test_processes_have_own_random_state),
        PROCS(test_parent_threads_do_not_deadlock_children),
        PROCS(test_destroy_leaves_no_process),
        THREADS(test_apply_and_errors),
        THREADS(test_retry_request_is_an_error),
        THREADS(test_cancel_one_task),
        THREADS(test_apply_async_callbacks_exactly_once),
        THREADS(test_map_million_ordered),
        THREADS(test_imap_ordered),
        THREADS(test_imap_unordered_every_result_once),
        THREADS(test_initializer_once_per_worker),
        THREADS(test_misuse_errors),
        THREADS(test_timeout_kills_and_replaces),
        THREADS(test_message_size_limits),
        THREADS(test_oversized_result_long_name),
        THREADS(test_terminate_fails_pending),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

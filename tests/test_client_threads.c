/* test_client_threads.c - one dist_client_t used from several threads at
 * once, as dist/client.h allows: threads that submit and wait for their
 * own futures while another maps, and futures submitted in one thread and
 * waited for in others (the wait that does the network I/O may belong to
 * any thread). Against the fake master of fake_master.h. Written to be
 * run under ThreadSanitizer too (scripts/test runs it in build-tsan). */
#include <dist.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>

#include "fake_master.h"
#include "testutil.h"

enum { THREADS = 4, PER_THREAD = 40 };

static dist_client_t *s_client(fm_t *fm, const char *name)
{
    dist_client_opts_t o = { .master = fm_endpoint(fm), .name = name, .connect_timeout_ms = 10000 };
    dist_client_t *c = dist_client_new(&o);
    assert_non_null(c);
    return c;
}

/* Submits `add [a, b]`; NULL when the submit failed. */
static dist_future_t *s_add(dist_client_t *c, int a, int b)
{
    dist_args_t *args = dist_args_new();
    dist_args_int(args, a);
    dist_args_int(args, b);
    size_t len;
    const void *p = dist_args_data(args, &len);
    dist_future_t *f = dist_client_submit(c, "add", p, len, 0);
    dist_args_destroy(&args);
    return f;
}

/* The value of f's result, or a negative number on any failure. */
static int64_t s_value(dist_future_t *f, int timeout_ms)
{
    dist_result_t *r;
    int64_t v = -1;
    if (dist_future_get(f, timeout_ms, &r) != 0 || dist_result_int(r, &v) != 0)
        return -1;
    return v;
}

struct submitter {
    dist_client_t *c;
    int base;
    int bad; /* results that were missing or wrong */
};

/* Submits PER_THREAD futures at once, then waits for each. */
static void *s_submit_and_wait(void *arg)
{
    struct submitter *s = arg;
    dist_future_t *f[PER_THREAD];
    for (int i = 0; i < PER_THREAD; i++)
        f[i] = s_add(s->c, s->base, i);
    for (int i = PER_THREAD - 1; i >= 0; i--) { /* in reverse: not in arrival order */
        if (!f[i] || s_value(f[i], 20000) != s->base + i)
            s->bad++;
        dist_future_destroy(&f[i]);
    }
    return NULL;
}

static void test_threads_submit_and_wait_during_a_map(void **state)
{
    (void)state;
    fm_t *fm = fm_new(&(fm_opts_t){ .shuffle = true });
    dist_client_t *c = s_client(fm, "threads-submit");
    pthread_t th[THREADS];
    struct submitter s[THREADS];
    for (int i = 0; i < THREADS; i++) {
        s[i] = (struct submitter){ c, 1000 * (i + 1), 0 };
        assert_int_equal(pthread_create(&th[i], NULL, s_submit_and_wait, &s[i]), 0);
    }
    /* Meanwhile this thread maps. */
    enum { N = 200 };
    dist_args_t *a[N];
    dist_bytes_t items[N];
    for (int i = 0; i < N; i++) {
        a[i] = dist_args_new();
        dist_args_int(a[i], i);
        dist_args_int(a[i], i);
        items[i].data = dist_args_data(a[i], &items[i].len);
    }
    dist_results_t *rs = NULL;
    assert_int_equal(dist_client_map(c, "add", items, N, 0, 30000, NULL, NULL, &rs), 0);
    assert_int_equal(dist_results_count(rs), N);
    for (size_t i = 0; i < N; i++) {
        int64_t v = -1;
        assert_int_equal(dist_result_int(dist_results_at(rs, i), &v), 0);
        assert_int_equal(v, 2 * (int64_t)i);
    }
    dist_results_destroy(&rs);
    for (int i = 0; i < N; i++)
        dist_args_destroy(&a[i]);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(s[i].bad, 0);
    }
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

struct waiter {
    dist_future_t **f;
    int from, to; /* waits for f[from..to) */
    int bad;
};

static void *s_wait_range(void *arg)
{
    struct waiter *w = arg;
    for (int i = w->from; i < w->to; i++)
        if (s_value(w->f[i], 20000) != 7 + i)
            w->bad++;
    return NULL;
}

/* Futures submitted here, waited for in other threads while this one
 * polls dist_future_ready on all of them. */
static void test_futures_waited_in_other_threads(void **state)
{
    (void)state;
    fm_t *fm = fm_new(&(fm_opts_t){ .shuffle = true });
    dist_client_t *c = s_client(fm, "threads-futures");
    enum { N = 120 };
    dist_future_t *f[N];
    for (int i = 0; i < N; i++) {
        f[i] = s_add(c, 7, i);
        assert_non_null(f[i]);
    }
    pthread_t th[THREADS];
    struct waiter w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct waiter){ f, i * N / THREADS, (i + 1) * N / THREADS, 0 };
        assert_int_equal(pthread_create(&th[i], NULL, s_wait_range, &w[i]), 0);
    }
    int64_t end = dt_now_ms() + 20000;
    int ready;
    do {
        ready = 0;
        for (int i = 0; i < N; i++)
            ready += dist_future_ready(f[i]);
        if (ready < N)
            dt_sleep_ms(5);
    } while (ready < N && dt_now_ms() < end);
    assert_int_equal(ready, N);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].bad, 0);
    }
    for (int i = 0; i < N; i++)
        dist_future_destroy(&f[i]);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_submit_and_wait_during_a_map),
        cmocka_unit_test(test_futures_waited_in_other_threads),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    zsys_shutdown();
    return rc;
}

/* test_client_control.c - task control in the client library (issue 12)
 * against the fake master (fake_master.h): the task options on the wire
 * (a caller's id, priority, delay, retry policy), future ids, a map told
 * to stop (CANCEL for what is left, nothing more sent), and the CANCEL,
 * FETCH and LOOKUP calls. The real master's side is in test_task_control. */
#include <dist.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_master.h"
#include "proto_internal.h"
#include "testutil.h"

static dist_client_t *s_client(fm_t *fm)
{
    dist_client_opts_t o = { .master = fm_endpoint(fm), .connect_timeout_ms = 3000 };
    dist_client_t *c = dist_client_new(&o);
    assert_non_null(c);
    return c;
}

/* The task maps of the nth SUBMIT the fake master received. */
static dist_wire_msg_t *s_submit(fm_t *fm, int nth, const msgpack_object **tasks, size_t *n)
{
    dist_wire_msg_t *m = fm_wait(fm, DIST__CMD_SUBMIT, nth, 5000);
    assert_non_null(m);
    assert_int_equal(dist__parse_list(dist_wire_msg_root(m), DIST__CMD_SUBMIT, tasks, n), 0);
    return m;
}

/* Options reach the wire as PROTOCOL.md 6.7 says; a caller's id is the
 * task's id (hashed) and the future's id; without one, 32 hex digits of
 * the id that was sent; bad options are refused before anything is sent. */
static void test_submit_options_on_the_wire(void **state)
{
    (void)state;
    fm_t *fm = fm_new(NULL);
    dist_client_t *c = s_client(fm);
    dist_args_t *a = dist_args_pack("i", 1);
    size_t len;
    const void *args = dist_args_data(a, &len);
    dist_submit_opts_t so = { .timeout_ms = 2500, .id = "job-7", .priority = 5, .delay_ms = 100,
                              .max_attempts = 4, .backoff_ms = 10, .backoff_factor = 3.0,
                              .backoff_max_ms = 500, .retry_on_error = true };
    dist_future_t *f = dist_client_submit_opts(c, "echo", args, len, &so);
    assert_non_null(f);
    assert_string_equal(dist_future_id(f), "job-7");
    const msgpack_object *tasks;
    size_t n;
    dist_wire_msg_t *m = s_submit(fm, 1, &tasks, &n);
    assert_int_equal(n, 1);
    dist__task_t t;
    assert_int_equal(dist__parse_task(&tasks[0], false, &t), 0);
    dist__id_t want;
    assert_int_equal(dist__id_from_key("job-7", 5, &want), 0);
    assert_true(dist__id_eq(&t.id, &want));
    assert_int_equal(t.timeout_ms, 2500);
    dist__submit_opts_t o;
    assert_int_equal(dist__parse_submit_opts(&tasks[0], &o, NULL), 0);
    assert_int_equal(o.key.n, 5);
    assert_memory_equal(o.key.s, "job-7", 5);
    assert_int_equal(o.priority, 5);
    assert_true(o.has_delay && !o.has_at);
    assert_int_equal(o.delay_ms, 100);
    assert_int_equal(o.max_attempts, 4);
    assert_int_equal(o.backoff_ms, 10);
    assert_true(o.backoff_factor == 3.0);
    assert_int_equal(o.backoff_max_ms, 500);
    assert_true(o.retry_on_error);
    dist_wire_msg_destroy(&m);
    assert_int_equal(dist_future_wait(f, 5000), 0);
    assert_true(dist_future_successful(f));
    dist_future_destroy(&f);

    /* No id: 32 hex digits, the id on the wire; no options, no fields. */
    f = dist_client_submit_opts(c, "echo", args, len, NULL);
    assert_non_null(f);
    m = s_submit(fm, 2, &tasks, &n);
    assert_int_equal(dist__parse_task(&tasks[0], false, &t), 0);
    char hex[33];
    dist__id_hex(&t.id, hex);
    assert_string_equal(dist_future_id(f), hex);
    assert_int_equal(dist__parse_submit_opts(&tasks[0], &o, NULL), 0);
    assert_int_equal(dist__submit_opts_count(&o), 0);
    dist_wire_msg_destroy(&m);
    dist_future_destroy(&f);

    /* A map: the same options on every task (no key). */
    dist_batch_t *b = dist_batch_new();
    for (int i = 0; i < 3; i++)
        dist_batch_add(b, "i", i);
    dist_results_t *rs = NULL;
    dist_map_opts_t mo = { .wait_ms = 5000, .priority = 9, .at_ms = 1800000000000ll };
    assert_int_equal(dist_client_map_opts(c, "echo", dist_batch_items(b), 3, &mo, &rs), 0);
    dist_results_destroy(&rs);
    m = s_submit(fm, 3, &tasks, &n);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(dist__parse_submit_opts(&tasks[i], &o, NULL), 0);
        assert_int_equal(o.priority, 9);
        assert_true(o.has_at && !o.has_delay);
        assert_true(o.at_ms == 1800000000000ull);
        assert_int_equal(o.key.n, 0);
    }
    dist_wire_msg_destroy(&m);

    /* Refused before sending: EINVAL, and no fourth SUBMIT. */
    const dist_submit_opts_t bad[] = {
        { .id = "" },          { .id = "a b" },        { .priority = -1 },
        { .priority = 10 },    { .delay_ms = -1 },     { .delay_ms = 2592000001ll },
        { .delay_ms = 5, .at_ms = 5 }, { .max_attempts = 1001 }, { .backoff_ms = -1 },
        { .backoff_factor = 0.5 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        errno = 0;
        assert_null(dist_client_submit_opts(c, "echo", args, len, &bad[i]));
        assert_int_equal(errno, EINVAL);
    }
    mo = (dist_map_opts_t){ .priority = 10 };
    assert_int_equal(dist_client_map_opts(c, "echo", dist_batch_items(b), 3, &mo, &rs),
                     DIST_EINVAL);
    dt_sleep_ms(100);
    assert_int_equal(fm_count(fm, DIST__CMD_SUBMIT), 3);
    dist_batch_destroy(&b);
    dist_args_destroy(&a);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

typedef struct {
    size_t ok, cancelled, other;
} s_counts_t;

static void s_count(size_t index, dist_result_t *r, void *ud)
{
    (void)index;
    s_counts_t *k = ud;
    int st = dist_result_status(r);
    if (st == 0)
        k->ok++;
    else if (st == DIST_ECANCELLED)
        k->cancelled++;
    else
        k->other++;
}

static volatile sig_atomic_t s_stop;

static void *s_stop_later(void *arg)
{
    (void)arg;
    dt_sleep_ms(300);
    s_stop = 1;
    return NULL;
}

/* A map told to stop: what arrived is reported, every task without a
 * result is cancelled in one CANCEL (after its SUBMIT), reported as
 * DIST_ECANCELLED, and the call returns DIST_ECANCELLED. */
static void test_map_stop_cancels_the_rest(void **state)
{
    (void)state;
    fm_t *fm = fm_new(NULL);
    dist_client_t *c = s_client(fm);
    dist_batch_t *b = dist_batch_new();
    for (int i = 0; i < 10; i++)
        dist_batch_add(b, "i", i);
    s_counts_t k = { 0 };
    /* echo first (results come), then never (no result ever). */
    dist_map_opts_t mo = { .unordered = true, .on_result = s_count, .userdata = &k };
    assert_int_equal(dist_client_map_opts(c, "echo", dist_batch_items(b), 10, &mo, NULL), 0);
    assert_int_equal(k.ok, 10);
    k = (s_counts_t){ 0 };
    s_stop = 0;
    mo.stop = &s_stop;
    pthread_t th;
    pthread_create(&th, NULL, s_stop_later, NULL);
    int64_t t0 = dt_now_ms();
    assert_int_equal(dist_client_map_opts(c, "never", dist_batch_items(b), 10, &mo, NULL),
                     DIST_ECANCELLED);
    pthread_join(th, NULL);
    assert_true(dt_now_ms() - t0 < 3000);
    assert_int_equal(k.cancelled, 10);
    assert_int_equal(k.ok + k.other, 0);
    dist_wire_msg_t *m = fm_wait(fm, DIST__CMD_CANCEL, 1, 3000);
    assert_non_null(m);
    dist__ids_req_t q;
    assert_int_equal(dist__parse_ids_req(dist_wire_msg_root(m), true, &q), 0);
    assert_int_equal(q.nids, 10);
    dist_wire_msg_destroy(&m);
    /* An ordered map: the cancelled items hold DIST_ECANCELLED. */
    s_stop = 1;
    dist_results_t *rs = NULL;
    mo = (dist_map_opts_t){ .stop = &s_stop };
    assert_int_equal(dist_client_map_opts(c, "never", dist_batch_items(b), 10, &mo, &rs),
                     DIST_ECANCELLED);
    for (size_t i = 0; i < 10; i++)
        assert_int_equal(dist_result_status(dist_results_at(rs, i)), DIST_ECANCELLED);
    dist_results_destroy(&rs);
    dist_batch_destroy(&b);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

/* CANCEL, FETCH and LOOKUP by id. */
static void test_cancel_result_lookup(void **state)
{
    (void)state;
    /* The submitter's ACK would make the fake master forget the result. */
    fm_opts_t fo = { .ignore_acks = true };
    fm_t *fm = fm_new(&fo);
    dist_client_t *c = s_client(fm);
    dist_args_t *a = dist_args_pack("i", 42);
    size_t len;
    const void *args = dist_args_data(a, &len);
    dist_submit_opts_t so = { .id = "stuck" };
    dist_future_t *stuck = dist_client_submit_opts(c, "never", args, len, &so);
    assert_non_null(stuck);
    /* A second live future of the same id would never complete: refused. */
    errno = 0;
    assert_null(dist_client_submit_opts(c, "never", args, len, &so));
    assert_int_equal(errno, -DIST_ESTATE);
    so.id = "quick";
    dist_future_t *quick = dist_client_submit_opts(c, "echo", args, len, &so);
    assert_non_null(quick);
    /* By id from a second client; the result stays for its submitter. */
    dist_client_t *other = s_client(fm);
    dist_result_t *r = NULL;
    int rc = DIST_ETIMEDOUT;
    for (int i = 0; i < 100 && rc == DIST_ETIMEDOUT; i++) {
        rc = dist_client_result(other, "quick", 0, &r);
        if (rc == DIST_ETIMEDOUT)
            dt_sleep_ms(20);
    }
    assert_int_equal(rc, 0);
    int64_t v = 0;
    assert_int_equal(dist_arg_int(dist_result_value(r), 0, &v), 0);
    assert_int_equal(v, 42);
    dist_result_destroy(&r);
    assert_int_equal(dist_client_result(other, "stuck", 0, &r), DIST_ETIMEDOUT);
    assert_null(r);
    assert_int_equal(dist_client_result(other, "nobody", 0, &r), DIST_ENOENT);
    assert_non_null(strstr(dist_result_error(r), "unknown task id nobody"));
    dist_result_destroy(&r);

    dist_task_info_t *t = NULL;
    assert_int_equal(dist_client_lookup(other, "stuck", 3000, &t), 0);
    assert_string_equal(t->state, "leased");
    assert_string_equal(t->id, "stuck");
    dist_task_info_destroy(&t);
    assert_null(t);
    assert_int_equal(dist_client_lookup(other, "nobody", 3000, &t), 0);
    assert_string_equal(t->state, "unknown");
    assert_string_equal(t->id, "nobody");
    dist_task_info_destroy(&t);
    assert_int_equal(dist_client_lookup(other, "bad id", 3000, &t), DIST_EINVAL);

    const char *ids[] = { "stuck", "nobody" };
    const char *states[2];
    assert_int_equal(dist_client_cancel(other, ids, 2, 3000, states), 0);
    assert_string_equal(states[0], "cancelled");
    assert_string_equal(states[1], "unknown");
    /* The submitter's future ends with the cancellation. */
    assert_int_equal(dist_future_get(stuck, 5000, &r), DIST_ECANCELLED);
    assert_int_equal(dist_future_wait(quick, 5000), 0);
    dist_future_destroy(&stuck);
    dist_future_destroy(&quick);
    dist_args_destroy(&a);
    dist_client_destroy(&other);
    dist_client_destroy(&c);
    fm_destroy(&fm);
}

int main(void)
{
    unsetenv("DIST_MASTER");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_submit_options_on_the_wire, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_map_stop_cancels_the_rest, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_result_lookup, dt_setup, dt_teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    zsys_shutdown();
    return rc;
}

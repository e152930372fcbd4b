/* fakepeer.c - fake workers and clients for the master's tests (see
 * fakepeer.h). */
#include "fakepeer.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

/* Fake peers that must stay alive: every wait sends them heartbeats. */
static zsock_t *g_alive[4];
static size_t g_nalive;

void fp_keep_alive(zsock_t *a, zsock_t *b)
{
    g_nalive = 0;
    if (a)
        g_alive[g_nalive++] = a;
    if (b)
        g_alive[g_nalive++] = b;
}

/* ---- fixtures ------------------------------------------------------------------------ */

/* DIST_TEST_LOG=1 shows the master's log while debugging a test. */
void fp_log(dist_log_level_t level, const char *component, const char *msg, void *ud)
{
    (void)ud;
    fprintf(stderr, "%lld %s %s: %s\n", (long long)dt_now_ms(), dist_log_level_name(level),
            component, msg);
}

dist_master_t *fp_start(const dist_master_opts_t *opts)
{
    dist_master_opts_t o;
    memset(&o, 0, sizeof o);
    if (opts)
        o = *opts;
    if (getenv("DIST_TEST_LOG")) {
        o.log = fp_log;
        o.log_level = DIST_LOG_DEBUG;
    }
    if (!o.bind)
        o.bind = "tcp://127.0.0.1:0";
    if (!o.heartbeat_timeout_ms)
        o.heartbeat_timeout_ms = FP_SAFE_TIMEOUT_MS;
    g_nalive = 0;
    dist_master_t *m = dist_master_new(&o);
    assert_non_null(m);
    assert_int_equal(dist_master_start(m), 0);
    return m;
}

zsock_t *fp_connect_ep(const char *endpoint)
{
    zsock_t *s = zsock_new(ZMQ_DEALER);
    assert_non_null(s);
    dist__sock_setup(s, false, NULL);
    assert_int_equal(zsock_connect(s, "%s", endpoint), 0);
    return s;
}

zsock_t *fp_connect(dist_master_t *m)
{
    return fp_connect_ep(dist_master_endpoint(m));
}

dist_wire_buf_t *fp_buf(msgpack_packer **pk)
{
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    assert_non_null(b);
    *pk = dist_wire_buf_packer(b);
    return b;
}

dist_wire_buf_t *fp_batch(msgpack_packer **pk, const char *key, size_t n)
{
    dist_wire_buf_t *b = fp_buf(pk);
    msgpack_pack_map(*pk, 1);
    dist__pk_str(*pk, key);
    msgpack_pack_array(*pk, n);
    return b;
}

void fp_send(zsock_t *s, dist__cmd_t cmd, dist_wire_buf_t *b)
{
    assert_int_equal(dist__proto_send_buf(s, NULL, 0, cmd, b), 0);
    dist_wire_buf_destroy(&b);
}

/* The next message other than HEARTBEAT within ms, while the peers of
 * g_alive send a heartbeat every 100 ms. 0 or DIST_ETIMEDOUT. */
int fp_recv(zsock_t *s, int ms, dist__inmsg_t *m)
{
    int64_t end = dt_now_ms() + ms, next_ka = 0;
    dist_wire_limits_t lim = dist__body_limits(0);
    size_t nka = g_nalive;
    for (;;) {
        int64_t now = dt_now_ms();
        if (nka && now >= next_ka) {
            for (size_t i = 0; i < nka; i++)
                dist__proto_send_empty(g_alive[i], NULL, 0, DIST__CMD_HEARTBEAT);
            next_ka = now + 100;
        }
        int rc = dist__proto_recv(s, false, &lim, m);
        if (rc == 0) {
            if (m->cmd != DIST__CMD_HEARTBEAT)
                return 0;
            dist__inmsg_clear(m);
            continue;
        }
        assert_int_equal(rc, DIST_EAGAIN);
        if (now >= end)
            return DIST_ETIMEDOUT;
        zmq_pollitem_t it = { zsock_resolve(s), 0, ZMQ_POLLIN, 0 };
        long wait = (long)(end - now);
        if (nka && wait > 50)
            wait = 50;
        zmq_poll(&it, 1, wait);
    }
}

void fp_expect(zsock_t *s, dist__cmd_t cmd, dist__inmsg_t *m)
{
    if (fp_recv(s, FP_WAIT_MS, m))
        fail_msg("expected %s, got nothing", dist__cmd_name(cmd));
    if (m->cmd != cmd) {
        dist__error_t e;
        dist__parse_error(m->root, &e);
        fail_msg("expected %s, got %s %.*s %.*s", dist__cmd_name(cmd), dist__cmd_name(m->cmd),
                 (int)e.code.n, e.code.s, (int)e.error.n, e.error.s);
    }
}

void fp_expect_any(zsock_t *s, dist__inmsg_t *m)
{
    if (fp_recv(s, FP_WAIT_MS, m))
        fail_msg("expected a message, got nothing");
}

void fp_expect_none(zsock_t *s, int ms)
{
    dist__inmsg_t m;
    if (fp_recv(s, ms, &m) == 0) {
        const char *name = dist__cmd_name(m.cmd);
        dist__inmsg_clear(&m);
        fail_msg("unexpected %s", name);
    }
}

/* Asserts m is ERROR with this code. */
void fp_expect_error(zsock_t *s, const char *code)
{
    dist__inmsg_t m;
    fp_expect(s, DIST__CMD_ERROR, &m);
    dist__error_t e;
    assert_int_equal(dist__parse_error(m.root, &e), 0);
    if (e.code.n != strlen(code) || memcmp(e.code.s, code, e.code.n) != 0)
        fail_msg("expected ERROR %s, got %.*s", code, (int)e.code.n, e.code.s);
    dist__inmsg_clear(&m);
}

bool fp_str_is(const msgpack_object *map, const char *key, const char *want)
{
    const char *s;
    size_t n;
    return dist__get_str(map, key, &s, &n) == 0 && n == strlen(want) && memcmp(s, want, n) == 0;
}

dist__id_t fp_id(int n)
{
    dist__id_t id;
    memset(&id, 0xA5, sizeof id);
    memcpy(id.b, &n, sizeof n);
    return id;
}

int fp_id_num(const dist__id_t *id)
{
    int n;
    memcpy(&n, id->b, sizeof n);
    return n;
}

/* ---- fake peers ---------------------------------------------------------------------- */

void fp_hello_worker(zsock_t *s, const char *name, uint32_t slots, uint32_t cap,
                     const char *const *tasks, size_t n)
{
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_buf(&pk);
    dist__str_t *names = calloc(n + 1, sizeof *names);
    assert_non_null(names);
    for (size_t i = 0; i < n; i++)
        names[i] = (dist__str_t){ tasks[i], strlen(tasks[i]) };
    dist__hello_t h = { .role = DIST__PEER_WORKER, .name = { name, strlen(name) },
                        .host = { "testhost", 8 }, .pid = 4242, .slots = slots, .capacity = cap,
                        .names = names, .ntasks = n };
    dist__pack_hello(pk, &h);
    free(names);
    fp_send(s, DIST__CMD_HELLO, b);
}

zsock_t *fp_worker_ep(const char *endpoint, const char *name, uint32_t slots, uint32_t cap,
                      const char *task)
{
    zsock_t *s = fp_connect_ep(endpoint);
    fp_hello_worker(s, name, slots, cap, &task, 1);
    dist__inmsg_t msg;
    fp_expect(s, DIST__CMD_WELCOME, &msg);
    dist__inmsg_clear(&msg);
    return s;
}

zsock_t *fp_worker(dist_master_t *m, const char *name, uint32_t slots, uint32_t cap,
                   const char *task)
{
    return fp_worker_ep(dist_master_endpoint(m), name, slots, cap, task);
}

void fp_hello_client(zsock_t *s, const char *name)
{
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_buf(&pk);
    dist__hello_t h = { .role = DIST__PEER_CLIENT, .name = { name, strlen(name) },
                        .host = { "testhost", 8 }, .pid = 77 };
    dist__pack_hello(pk, &h);
    fp_send(s, DIST__CMD_HELLO, b);
}

/* A client; *pending gets WELCOME's pending_results when not NULL. */
zsock_t *fp_client(dist_master_t *m, const char *name, uint64_t *pending)
{
    return fp_client_ep(dist_master_endpoint(m), name, pending);
}

zsock_t *fp_client_ep(const char *endpoint, const char *name, uint64_t *pending)
{
    zsock_t *s = fp_connect_ep(endpoint);
    fp_hello_client(s, name);
    dist__inmsg_t msg;
    fp_expect(s, DIST__CMD_WELCOME, &msg);
    dist__welcome_t w;
    assert_int_equal(dist__parse_welcome(msg.root, &w), 0);
    assert_true(w.client); /* pending_results is there */
    if (pending)
        *pending = w.pending_results;
    dist__inmsg_clear(&msg);
    return s;
}

/* SUBMIT tasks ids[0..n) of one name, args [i]. */
void fp_submit(zsock_t *c, const char *task, const int *ids, size_t n, uint32_t timeout_ms)
{
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_batch(&pk, "tasks", n);
    for (size_t i = 0; i < n; i++) {
        dist__id_t id = fp_id(ids[i]);
        uint8_t args[2] = { 0x91, (uint8_t)(ids[i] & 0x7f) };
        dist__task_t t = { id, 0, task, strlen(task), args, 2, timeout_ms };
        dist__pack_task(pk, &t, false);
    }
    fp_send(c, DIST__CMD_SUBMIT, b);
}

/* Waits for ACCEPTED: returns the number accepted; the first rejection's
 * code goes to code (when there is one). */
size_t fp_accepted(zsock_t *c, size_t *rejected, char *code, size_t codelen)
{
    dist__inmsg_t m;
    fp_expect(c, DIST__CMD_ACCEPTED, &m);
    dist__accepted_t a;
    assert_int_equal(dist__parse_accepted(m.root, &a), 0);
    if (rejected)
        *rejected = a.nrejected;
    if (code && codelen)
        code[0] = 0;
    for (size_t i = 0; i < a.nrejected; i++) {
        dist__reject_t r;
        assert_int_equal(dist__parse_reject(&a.rejected[i], &r), 0);
        assert_true(r.error.n > 0);
        if (i == 0 && code)
            snprintf(code, codelen, "%.*s", (int)r.code.n, r.code.s);
    }
    size_t n = a.nids;
    dist__inmsg_clear(&m);
    return n;
}

void fp_submit_ok(zsock_t *c, const char *task, const int *ids, size_t n)
{
    fp_submit(c, task, ids, n, 0);
    size_t rej;
    assert_int_equal(fp_accepted(c, &rej, NULL, 0), n);
    assert_int_equal(rej, 0);
}


/* Receives one TASKS message. */
size_t fp_tasks(zsock_t *w, fp_task_t *out, size_t max)
{
    dist__inmsg_t m;
    fp_expect(w, DIST__CMD_TASKS, &m);
    const msgpack_object *items;
    size_t n;
    assert_int_equal(dist__get_array(m.root, "tasks", &items, &n), 0);
    assert_true(n >= 1);
    assert_true(n <= max);
    for (size_t i = 0; i < n; i++) {
        dist__task_t t;
        assert_int_equal(dist__parse_task(&items[i], true, &t), 0);
        out[i].id = t.id;
        out[i].attempt = t.attempt;
        out[i].timeout_ms = t.timeout_ms;
        snprintf(out[i].task, sizeof out[i].task, "%.*s", (int)t.task_len, t.task);
        assert_int_equal(t.args_len, 2);
        assert_int_equal(((const uint8_t *)t.args)[0], 0x91);
    }
    dist__inmsg_clear(&m);
    return n;
}

/* RESULTS from a worker: one result; text is the value (ok) or error. */
void fp_result(zsock_t *w, const dist__id_t *id, uint32_t attempt, dist__status_t st,
               const char *text)
{
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_batch(&pk, "results", 1);
    dist__result_t r = { .id = *id, .attempt = attempt, .status = st };
    if (st == DIST__ST_OK) {
        r.value = text;
        r.value_len = strlen(text);
    } else {
        r.error = text;
        r.error_len = strlen(text);
    }
    dist__pack_result(pk, &r, true);
    fp_send(w, DIST__CMD_RESULTS, b);
}


/* Collects exactly `want` results from RESULTS messages to a client. */
void fp_results(zsock_t *c, fp_res_t *out, size_t want)
{
    size_t got = 0;
    while (got < want) {
        dist__inmsg_t m;
        fp_expect(c, DIST__CMD_RESULTS, &m);
        const msgpack_object *items;
        size_t n;
        assert_int_equal(dist__get_array(m.root, "results", &items, &n), 0);
        assert_true(got + n <= want);
        for (size_t i = 0; i < n; i++) {
            dist__result_t r;
            assert_int_equal(dist__parse_result(&items[i], false, &r), 0);
            assert_null(dist_wire_map_get(&items[i], "attempt"));
            out[got].id = r.id;
            out[got].status = r.status;
            if (r.status == DIST__ST_OK)
                snprintf(out[got].text, sizeof out[got].text, "%.*s", (int)r.value_len,
                         (const char *)r.value);
            else
                snprintf(out[got].text, sizeof out[got].text, "%.*s", (int)r.error_len, r.error);
            got++;
        }
        dist__inmsg_clear(&m);
    }
}

void fp_ids_msg(zsock_t *s, dist__cmd_t cmd, const dist__id_t *ids, size_t n)
{
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_batch(&pk, "ids", n);
    for (size_t i = 0; i < n; i++)
        dist__pk_id(pk, &ids[i]);
    fp_send(s, cmd, b);
}

/* STATUS: returns the reply (the caller clears it). */
void fp_status(zsock_t *c, dist__inmsg_t *m)
{
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_buf(&pk);
    dist__status_req_t sr = { 99 };
    dist__pack_status_req(pk, &sr);
    fp_send(c, DIST__CMD_STATUS, b);
    fp_expect(c, DIST__CMD_STATUS, m);
    assert_int_equal(dist__parse_status_req(m->root, &sr), 0);
    assert_int_equal(sr.req, 99);
}

uint64_t fp_counter(zsock_t *c, const char *name)
{
    dist__inmsg_t m;
    fp_status(c, &m);
    uint64_t v;
    assert_int_equal(dist__get_u64(dist_wire_map_get(m.root, "counters"), name, &v), 0);
    dist__inmsg_clear(&m);
    return v;
}

void fp_raw(zsock_t *s, int nframes, const char *const *frames, const size_t *lens)
{
    for (int i = 0; i < nframes; i++)
        zmq_send(zsock_resolve(s), frames[i], lens[i], i + 1 < nframes ? ZMQ_SNDMORE : 0);
}

/* ---- task control (issue 12) ------------------------------------------------------------- */

void fp_submit_opts(zsock_t *c, dist__id_t id, const dist__submit_opts_t *o)
{
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_batch(&pk, "tasks", 1);
    dist__task_t t = { .id = id, .task = "t", .task_len = 1, .args = "\x91\x01", .args_len = 2 };
    dist__pack_submit_task(pk, &t, o);
    fp_send(c, DIST__CMD_SUBMIT, b);
}

void fp_ids_req(zsock_t *c, dist__cmd_t cmd, uint64_t req, const int *ids, size_t n)
{
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_buf(&pk);
    dist__ids_req_t r = { .req = req, .nids = n };
    dist__pack_ids_req(pk, &r, true);
    for (size_t i = 0; i < n; i++) {
        dist__id_t id = fp_id(ids[i]);
        dist__pk_id(pk, &id);
    }
    fp_send(c, cmd, b);
}

void fp_reply(zsock_t *c, uint64_t req, const char *status, dist__inmsg_t *m, dist__reply_t *r)
{
    fp_expect(c, DIST__CMD_REPLY, m);
    assert_int_equal(dist__parse_reply(m->root, r), 0);
    assert_int_equal(r->req, req);
    assert_int_equal(r->status.n, strlen(status));
    assert_memory_equal(r->status.s, status, r->status.n);
}

static void s_str_check(dist__str_t got, const char *want, bool whole, const char *what)
{
    bool ok = whole ? got.n == strlen(want) && memcmp(got.s, want, got.n) == 0
                    : !*want || (got.n && memmem(got.s, got.n, want, strlen(want)));
    if (!ok)
        fail_msg("%s is \"%.*s\", expected %s\"%s\"", what, (int)got.n, got.s ? got.s : "",
                 whole ? "" : "it to contain ", want);
}

void fp_lookup_attempts(zsock_t *c, uint64_t req, int id, const char *state, const char *task,
                        const fp_attempt_t *want, size_t n)
{
    fp_ids_req(c, DIST__CMD_LOOKUP, req, &id, 1);
    dist__inmsg_t m;
    dist__reply_t r;
    fp_reply(c, req, "ok", &m, &r);
    assert_int_equal(r.nitems, 1);
    dist__task_info_t ti;
    assert_int_equal(dist__parse_task_info(&r.items[0], &ti), 0);
    s_str_check(ti.state, state, true, "state");
    s_str_check(ti.task, task, true, "task");
    assert_int_equal(ti.nattempts, n);
    for (size_t i = 0; i < n; i++) {
        dist__attempt_info_t a;
        assert_int_equal(dist__parse_attempt_info(&ti.attempt_maps[i], &a), 0);
        assert_int_equal(a.attempt, i + 1);
        s_str_check(a.worker, want[i].worker, true, "worker");
        s_str_check(a.reason, want[i].reason, false, "reason");
    }
    dist__inmsg_clear(&m);
}

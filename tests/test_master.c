/* test_master.c - the master (dist/master.h) against fake workers and
 * clients: DEALER sockets in this process that speak docs/PROTOCOL.md
 * through proto_internal.h, so every message on the wire is checked. The
 * master runs in its own thread (dist_master_start) on 127.0.0.1 with a
 * port picked by the kernel (fakepeer.h). The last test runs the
 * dist-master program.
 */
#include <czmq.h>
#include <dist.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "fakepeer.h"
#include "proto_internal.h"
#include "testutil.h"

/* Heartbeat timeout of the tests that kill workers; the others use
 * FP_SAFE_TIMEOUT_MS, so that a loaded machine never writes off a fake
 * peer by accident. */
#define DEATH_MS 1000

/* dist_master_new refuses o, setting errno to err. errno is cleared first:
 * a refusal must not pass on the errno an earlier one left behind. */
#define ASSERT_REFUSED(o, err)                                                                     \
    do {                                                                                           \
        errno = 0;                                                                                 \
        assert_null(dist_master_new(o));                                                           \
        assert_int_equal(errno, (err));                                                            \
    } while (0)

/* ---- sessions ---------------------------------------------------------------------------- */

static void test_welcome_and_reconnect(void **state)
{
    (void)state;
    dist_master_opts_t o = { .name = "m1", .heartbeat_ms = 700, .heartbeat_timeout_ms = 2100 };
    dist_master_t *m = fp_start(&o);
    assert_non_null(strstr(dist_master_endpoint(m), "tcp://127.0.0.1:"));
    assert_null(strstr(dist_master_endpoint(m), ":0"));

    zsock_t *c = fp_connect(m);
    fp_hello_client(c, "c1");
    dist__inmsg_t msg;
    fp_expect(c, DIST__CMD_WELCOME, &msg);
    uint64_t v;
    assert_true(fp_str_is(msg.root, "master", "m1"));
    assert_int_equal(dist__get_u64(msg.root, "heartbeat_ms", &v), 0);
    assert_int_equal(v, 700);
    assert_int_equal(dist__get_u64(msg.root, "heartbeat_timeout_ms", &v), 0);
    assert_int_equal(v, 2100);
    assert_int_equal(dist__get_u64(msg.root, "max_batch", &v), 0);
    assert_int_equal(v, DIST__MAX_BATCH);
    assert_int_equal(dist__get_u64(msg.root, "max_message", &v), 0);
    assert_int_equal(v, 64u << 20);
    assert_int_equal(dist__get_u64(msg.root, "pending_results", &v), 0);
    assert_int_equal(v, 0);
    dist__inmsg_clear(&msg);

    /* A peer the master does not know is told to say HELLO. */
    zsock_t *u = fp_connect(m);
    assert_int_equal(dist__proto_send_empty(u, NULL, 0, DIST__CMD_HEARTBEAT), 0);
    fp_expect(u, DIST__CMD_RECONNECT, &msg);
    dist__inmsg_clear(&msg);

    /* Master heartbeats reach an idle peer. */
    dist_wire_limits_t lim = dist__body_limits(0);
    zpoller_t *pl = zpoller_new(c, NULL);
    assert_non_null(zpoller_wait(pl, 2000));
    zpoller_destroy(&pl);
    assert_int_equal(dist__proto_recv(c, false, &lim, &msg), 0);
    assert_int_equal(msg.cmd, DIST__CMD_HEARTBEAT);
    dist__inmsg_clear(&msg);

    /* A worker's HELLO is checked: no tasks is malformed. */
    const char *none = NULL;
    zsock_t *w = fp_connect(m);
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_buf(&pk);
    msgpack_pack_map(pk, 4);
    dist__pk_kv_str(pk, "role", "worker");
    dist__pk_kv_str(pk, "name", "w");
    dist__pk_kv_str(pk, "host", "h");
    dist__pk_kv_u64(pk, "pid", 1);
    fp_send(w, DIST__CMD_HELLO, b);
    fp_expect_error(w, "malformed");
    /* After a failed HELLO the master knows the peer, not its session. */
    assert_int_equal(dist__proto_send_empty(w, NULL, 0, DIST__CMD_HEARTBEAT), 0);
    fp_expect_error(w, "not_welcome");
    fp_hello_worker(w, "w", 1, 1, &none, 0);
    fp_expect(w, DIST__CMD_WELCOME, &msg);
    assert_null(dist_wire_map_get(msg.root, "pending_results"));
    dist__inmsg_clear(&msg);

    zsock_destroy(&w);
    zsock_destroy(&u);
    zsock_destroy(&c);
    dist_master_destroy(&m);
    assert_null(m);
}

/* The instance of a master in its WELCOME (16 lowercase hex digits) into out[17]. */
static void s_instance(zsock_t *s, char *out)
{
    dist__inmsg_t msg;
    fp_expect(s, DIST__CMD_WELCOME, &msg);
    dist__welcome_t w;
    assert_int_equal(dist__parse_welcome(msg.root, &w), 0);
    assert_true(dist__instance_ok(w.instance.s, w.instance.n));
    memcpy(out, w.instance.s, DIST__INSTANCE_LEN);
    out[DIST__INSTANCE_LEN] = 0;
    dist__inmsg_clear(&msg);
}

/* One instance per run of a master, told to workers and clients alike,
 * kept by a store; BYE to every peer with a session when it stops. */
static void test_instance_and_bye(void **state)
{
    (void)state;
    char dir[] = "/tmp/dist-test-instance-XXXXXX", path[300];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/store.db", dir);
    dist_master_opts_t o = { .store = path };
    char i1[17], i1w[17], i2[17], i3[17];
    dist_master_t *m = fp_start(&o);
    zsock_t *c = fp_connect(m), *w = fp_connect(m), *stranger = fp_connect(m);
    fp_hello_client(c, "c");
    s_instance(c, i1);
    const char *t = "t";
    fp_hello_worker(w, "w", 1, 1, &t, 1);
    s_instance(w, i1w);
    assert_string_equal(i1, i1w);
    /* A peer without a session (it never said HELLO) gets no BYE. */
    assert_int_equal(dist__proto_send_empty(stranger, NULL, 0, DIST__CMD_HEARTBEAT), 0);
    dist__inmsg_t msg;
    fp_expect(stranger, DIST__CMD_RECONNECT, &msg);
    dist__inmsg_clear(&msg);

    dist_master_destroy(&m);
    fp_expect(c, DIST__CMD_BYE, &msg);
    assert_int_equal(msg.root->via.map.size, 0);
    dist__inmsg_clear(&msg);
    fp_expect(w, DIST__CMD_BYE, &msg);
    dist__inmsg_clear(&msg);
    fp_expect_none(stranger, 300);
    zsock_destroy(&stranger);
    zsock_destroy(&w);
    zsock_destroy(&c);

    /* Restarted on its store: the same instance (its tasks are there). */
    m = fp_start(&o);
    c = fp_connect(m);
    fp_hello_client(c, "c");
    s_instance(c, i2);
    assert_string_equal(i1, i2);
    zsock_destroy(&c);
    dist_master_destroy(&m);
    /* In memory: a new one each time. */
    m = fp_start(NULL);
    c = fp_connect(m);
    fp_hello_client(c, "c");
    s_instance(c, i3);
    assert_string_not_equal(i1, i3);
    zsock_destroy(&c);
    dist_master_destroy(&m);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

/* The names of an ACCEPTED's unserved list, comma-separated, into out. */
static size_t s_accepted_unserved(zsock_t *c, char *out, size_t len)
{
    dist__inmsg_t msg;
    fp_expect(c, DIST__CMD_ACCEPTED, &msg);
    dist__accepted_t a;
    assert_int_equal(dist__parse_accepted(msg.root, &a), 0);
    size_t ids = a.nids;
    out[0] = 0;
    for (size_t i = 0; i < a.nunserved; i++) {
        const char *s;
        size_t n;
        assert_int_equal(dist_wire_get_str(&a.unserved[i], &s, &n), 0);
        snprintf(out + strlen(out), len - strlen(out), "%s%.*s", i ? "," : "", (int)n, s);
    }
    dist__inmsg_clear(&msg);
    return ids;
}

/* The NOTICE the client gets next: "served:NAME" or "unserved:NAME". */
static void s_expect_notice(zsock_t *c, const char *want)
{
    dist__inmsg_t msg;
    fp_expect(c, DIST__CMD_NOTICE, &msg);
    dist__notice_t n;
    assert_int_equal(dist__parse_notice(msg.root, &n), 0);
    assert_int_equal(n.nserved + n.nunserved, 1);
    const char *s;
    size_t len;
    assert_int_equal(dist_wire_get_str(n.nserved ? &n.served[0] : &n.unserved[0], &s, &len), 0);
    char got[200];
    snprintf(got, sizeof got, "%s:%.*s", n.nserved ? "served" : "unserved", (int)len, s);
    assert_string_equal(got, want);
    dist__inmsg_clear(&msg);
}

/* A queue's depth and workers from STATUS. */
static void s_queue_workers(zsock_t *c, const char *name, uint64_t *depth, uint64_t *workers)
{
    dist__inmsg_t msg;
    fp_status(c, &msg);
    const msgpack_object *qs;
    size_t n;
    assert_int_equal(dist__get_array(msg.root, "queues", &qs, &n), 0);
    bool found = false;
    for (size_t i = 0; i < n; i++) {
        if (!fp_str_is(&qs[i], "name", name))
            continue;
        found = true;
        assert_int_equal(dist__get_u64(&qs[i], "depth", depth), 0);
        assert_int_equal(dist__get_u64(&qs[i], "workers", workers), 0);
    }
    assert_true(found);
    dist__inmsg_clear(&msg);
}

/* Tasks whose workers all left: the clients that wait for them are told,
 * and told again when a worker comes back; ACCEPTED says it at once. */
static void test_unserved_task_names(void **state)
{
    (void)state;
    dist_master_t *m = fp_start(NULL);
    zsock_t *w = fp_worker(m, "w1", 1, 1, "t");
    zsock_t *c = fp_client(m, "c", NULL), *other = fp_client(m, "other", NULL);
    fp_keep_alive(c, other);
    char names[300];
    fp_submit(c, "t", (int[]){ 1, 2, 3 }, 3, 0);
    assert_int_equal(s_accepted_unserved(c, names, sizeof names), 3);
    assert_string_equal(names, ""); /* served */
    fp_task_t g[1];
    assert_int_equal(fp_tasks(w, g, 1), 1);
    uint64_t depth, workers;
    s_queue_workers(c, "t", &depth, &workers);
    assert_int_equal(depth, 2);
    assert_int_equal(workers, 1);

    /* The last worker of t leaves: its task is requeued, 3 wait. */
    assert_int_equal(dist__proto_send_empty(w, NULL, 0, DIST__CMD_BYE), 0);
    s_expect_notice(c, "unserved:t");
    fp_expect_none(other, 200); /* nothing of t queued for it */
    s_queue_workers(c, "t", &depth, &workers);
    assert_int_equal(depth, 3);
    assert_int_equal(workers, 0);
    /* dist status says so, in words and in its JSON. */
    char *out = NULL;
    int rc = dt_run((const char *const[]){ DIST_CLI_BIN, "--master", dist_master_endpoint(m),
                                           "status", NULL },
                    NULL, NULL, &out, NULL, 20000);
    assert_int_equal(rc, 0);
    if (!strstr(out, "0 (unserved)") || !strstr(out, "unserved: 1 task queue(s)") ||
        !strstr(out, "WORKERS"))
        fail_msg("dist status:\n%s", out);
    free(out);
    out = NULL;
    rc = dt_run((const char *const[]){ DIST_CLI_BIN, "--master", dist_master_endpoint(m),
                                       "status", "--json", NULL },
                NULL, NULL, &out, NULL, 20000);
    assert_int_equal(rc, 0);
    if (!strstr(out, "\"depth\": 3,\n      \"in_flight\": 0,\n      \"workers\": 0"))
        fail_msg("dist status --json:\n%s", out);
    free(out);

    /* More tasks of t: accepted, and said to be unserved. */
    fp_submit(other, "t", (int[]){ 4 }, 1, 0);
    assert_int_equal(s_accepted_unserved(other, names, sizeof names), 1);
    assert_string_equal(names, "t");

    /* A worker of t joins: both clients hear it, once each. */
    zsock_t *w2 = fp_worker(m, "w2", 4, 4, "t");
    s_expect_notice(c, "served:t");
    s_expect_notice(other, "served:t");
    fp_task_t g2[4];
    size_t got = 0;
    while (got < 4)
        got += fp_tasks(w2, g2 + got, 4 - got);
    s_queue_workers(c, "t", &depth, &workers);
    assert_int_equal(depth, 0);
    assert_int_equal(workers, 1);
    fp_expect_none(c, 200);
    /* BUSY is what runs (4 slots), PREFETCHED what waits beyond them. */
    out = NULL;
    rc = dt_run((const char *const[]){ DIST_CLI_BIN, "--master", dist_master_endpoint(m),
                                       "status", NULL },
                NULL, NULL, &out, NULL, 20000);
    assert_int_equal(rc, 0);
    const char *row = strstr(out, "\n  w2 ");
    unsigned slots = 0, running = 0, prefetched = 9;
    if (strstr(out, "unserved") || !strstr(out, "BUSY  PREFETCHED") || !row ||
        sscanf(row, " w2 %*s %u %u %u", &slots, &running, &prefetched) != 3 || slots != 4 ||
        running != 4 || prefetched != 0)
        fail_msg("dist status:\n%s", out);
    free(out);

    /* A worker that announces again is no leave and no join. */
    const char *t = "t";
    fp_hello_worker(w2, "w2", 4, 4, &t, 1);
    dist__inmsg_t msg;
    fp_expect(w2, DIST__CMD_WELCOME, &msg);
    dist__inmsg_clear(&msg);
    fp_expect_none(c, 300);
    zsock_destroy(&w2);
    zsock_destroy(&other);
    zsock_destroy(&c);
    zsock_destroy(&w);
    dist_master_destroy(&m);
}

static void test_options_refused(void **state)
{
    (void)state;
    dist_master_opts_t o = { .bind = "tcp://127.0.0.1:0", .store = "" };
    ASSERT_REFUSED(&o, EINVAL);
    o.store = NULL;
    o.key = "k"; /* a key without an allow list */
    ASSERT_REFUSED(&o, EINVAL);
    o.key = NULL;
    o.allow_clients = "/tmp"; /* an allow list without a key */
    ASSERT_REFUSED(&o, EINVAL);
    o.allow_clients = NULL;
    o.heartbeat_ms = -1;
    ASSERT_REFUSED(&o, EINVAL);
    o.heartbeat_ms = 0;
    o.bind = "nonsense://x";
    assert_null(dist_master_new(&o));
    /* Taken endpoint. */
    dist_master_t *m = fp_start(NULL);
    o.bind = dist_master_endpoint(m);
    ASSERT_REFUSED(&o, EADDRINUSE);
    /* Run twice at once is refused; stop is idempotent. */
    assert_int_equal(dist_master_start(m), DIST_ESTATE);
    dist_master_stop(m);
    dist_master_stop(m);
    dist_master_destroy(&m);
    dist_master_destroy(&m);
    dist_master_destroy(NULL);
}

/* ---- the metrics endpoint ---------------------------------------------------------------- */

/* GET path from 127.0.0.1:port, the whole answer (headers and body) into
 * buf; the length, or -1. Bounded by a 5 s receive timeout. */
static ssize_t s_http_get(int port, const char *path, char *buf, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                     path);
    size_t len = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 && write(fd, req, (size_t)n) == n) {
        ssize_t k;
        while (len + 1 < cap && (k = read(fd, buf + len, cap - 1 - len)) > 0)
            len += (size_t)k;
    }
    close(fd);
    buf[len] = 0;
    return (ssize_t)len;
}

/* Polls /metrics until it holds every line of want (NULL-terminated);
 * fails after 10 s with the last scrape. */
static void s_metrics_until(int port, const char *const *want)
{
    static char body[1 << 20];
    for (int tries = 0; tries < 200; tries++) {
        s_http_get(port, "/metrics", body, sizeof body);
        bool all = true;
        for (const char *const *w = want; *w && all; w++) {
            char line[256];
            snprintf(line, sizeof line, "\n%s\n", *w);
            all = strstr(body, line) != NULL;
        }
        if (all)
            return;
        struct timespec ts = { 0, 50 * 1000000 };
        nanosleep(&ts, NULL);
    }
    fail_msg("/metrics never showed all of the expected lines; last:\n%s", body);
}

static void test_metrics_endpoint(void **state)
{
    (void)state;
    /* Refused before anything starts: not loopback without insecure, and
     * a malformed address. */
    dist_master_opts_t o = { .bind = "tcp://127.0.0.1:0", .metrics = "0.0.0.0:0" };
    ASSERT_REFUSED(&o, EINVAL);
    o.metrics = "127.evil.example:9464"; /* a name, not 127.0.0.0/8 */
    ASSERT_REFUSED(&o, EINVAL);
    o.metrics = "[::2]:9464";
    ASSERT_REFUSED(&o, EINVAL);
    o.metrics = "127.0.0.1";
    ASSERT_REFUSED(&o, EINVAL);

    dist_master_opts_t mo = { .metrics = "127.0.0.1:0" };
    dist_master_t *m = fp_start(&mo);
    int port = dist_master_metrics_port(m);
    assert_true(port > 0);
    assert_int_equal(dist_master_metrics_port(NULL), 0);

    /* The port is taken now. */
    char taken[64];
    snprintf(taken, sizeof taken, "127.0.0.1:%d", port);
    o.metrics = taken;
    ASSERT_REFUSED(&o, EADDRINUSE);

    zsock_t *w = fp_worker(m, "mw", 4, 4, "t");
    zsock_t *c = fp_client(m, "mc", NULL);
    fp_submit_ok(c, "t", (int[]){ 1, 2, 3 }, 3);
    fp_task_t g[3];
    size_t n = 0;
    while (n < 3)
        n += fp_tasks(w, g + n, 3 - n);
    fp_result(w, &g[0].id, 1, DIST__ST_OK, "v");
    fp_result(w, &g[1].id, 1, DIST__ST_FAILED, "bad \"input\"");
    fp_res_t r[2];
    fp_results(c, r, 2);
    s_metrics_until(port, (const char *const[]){
                              "dist_tasks_submitted_total{task=\"t\"} 3",
                              "dist_tasks_completed_total{task=\"t\"} 2",
                              "dist_tasks_failed_total{task=\"t\"} 1",
                              "dist_tasks_retried_total{task=\"t\"} 0",
                              "dist_task_latency_seconds_count{task=\"t\"} 2",
                              "dist_task_latency_seconds_bucket{task=\"t\",le=\"+Inf\"} 2",
                              "dist_queue_in_flight{queue=\"t\",kind=\"task\"} 1",
                              "dist_workers_alive 1",
                              "dist_worker_busy{worker=\"mw\",host=\"testhost\"} 1",
                              NULL });
    /* The failure and its reason, in the JSON. */
    static char js[1 << 16];
    assert_true(s_http_get(port, "/api/status", js, sizeof js) > 0);
    assert_non_null(strstr(js, "\"recent_failures\":[{\"task\":\"t\""));
    assert_non_null(strstr(js, "\"error\":\"bad \\\"input\\\"\""));
    assert_null(strstr(js, "\"req\":"));
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);

    /* Without metrics: no port. */
    m = fp_start(NULL);
    assert_int_equal(dist_master_metrics_port(m), 0);
    dist_master_destroy(&m);
}

/* Task names come from peers: past 1,000 the rest count as "(other)". */
static void test_metrics_names_bounded(void **state)
{
    (void)state;
    enum { NAMES = 1005 };
    dist_master_opts_t mo = { .metrics = "127.0.0.1:0" };
    dist_master_t *m = fp_start(&mo);
    int port = dist_master_metrics_port(m);
    static char names[NAMES][16];
    static const char *np[NAMES];
    for (int i = 0; i < NAMES; i++) {
        snprintf(names[i], sizeof names[i], "n%04d", i);
        np[i] = names[i];
    }
    zsock_t *w = fp_connect_ep(dist_master_endpoint(m));
    fp_hello_worker(w, "many", 1, 1, np, NAMES);
    dist__inmsg_t msg;
    fp_expect(w, DIST__CMD_WELCOME, &msg);
    dist__inmsg_clear(&msg);
    zsock_t *c = fp_client(m, "mc", NULL);
    for (int i = 0; i < NAMES; i++)
        fp_submit_ok(c, names[i], (int[]){ i + 1 }, 1);
    s_metrics_until(port, (const char *const[]){
                              "dist_tasks_submitted_total{task=\"(other)\"} 5",
                              "dist_tasks_submitted_total{task=\"n0000\"} 1",
                              "dist_tasks_submitted_total{task=\"n0999\"} 1",
                              NULL });
    static char body[1 << 20];
    assert_true(s_http_get(port, "/metrics", body, sizeof body) > 0);
    assert_null(strstr(body, "task=\"n1000\""));
    size_t series = 0;
    for (const char *p = body; (p = strstr(p, "\ndist_tasks_submitted_total{")); p++)
        series++;
    assert_int_equal(series, 1001);
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

/* ---- dispatch ------------------------------------------------------------------------------ */

static void test_dispatch_only_to_announcing_workers(void **state)
{
    (void)state;
    dist_master_t *m = fp_start(NULL);
    zsock_t *wa = fp_worker(m, "wa", 4, 8, "job.a");
    zsock_t *wb = fp_worker(m, "wb", 4, 8, "job.b");
    zsock_t *c = fp_client(m, "c", NULL);
    fp_submit_ok(c, "job.a", (int[]){ 1, 2 }, 2);
    fp_submit_ok(c, "job.b", (int[]){ 3, 4, 5 }, 3);
    fp_task_t g[8];
    size_t n = 0;
    while (n < 2)
        n += fp_tasks(wa, g + n, 8 - n);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(g[i].task, "job.a");
        assert_int_equal(g[i].attempt, 1);
    }
    assert_int_equal(fp_id_num(&g[0].id), 1); /* FIFO */
    n = 0;
    while (n < 3)
        n += fp_tasks(wb, g + n, 8 - n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(g[i].task, "job.b");
    assert_int_equal(fp_id_num(&g[0].id), 3);
    fp_expect_none(wa, 200);
    fp_expect_none(wb, 1);
    zsock_destroy(&c);
    zsock_destroy(&wb);
    zsock_destroy(&wa);
    dist_master_destroy(&m);
}

static void test_credit_batching_and_credit_message(void **state)
{
    (void)state;
    dist_master_t *m = fp_start(NULL);
    zsock_t *c = fp_client(m, "c", NULL);
    zsock_t *w = fp_worker(m, "w", 2, 3, "t");
    int ids[10];
    for (int i = 0; i < 10; i++)
        ids[i] = 100 + i;
    fp_submit_ok(c, "t", ids, 10);
    /* The whole credit in one batch, never more. */
    fp_task_t g[10];
    assert_int_equal(fp_tasks(w, g, 10), 3);
    fp_expect_none(w, 300);
    for (int i = 0; i < 3; i++)
        assert_int_equal(fp_id_num(&g[i].id), 100 + i);
    /* Two answers free two credits. */
    fp_result(w, &g[0].id, 1, DIST__ST_OK, "\x01");
    fp_result(w, &g[1].id, 1, DIST__ST_OK, "\x02");
    size_t n = 0;
    while (n < 2)
        n += fp_tasks(w, g + 3 + n, 10);
    assert_int_equal(n, 2);
    fp_expect_none(w, 300);
    /* CREDIT raises the capacity: 3 held, capacity 6 -> 3 more. */
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_buf(&pk);
    msgpack_pack_map(pk, 1);
    dist__pk_kv_u64(pk, "capacity", 6);
    fp_send(w, DIST__CMD_CREDIT, b);
    n = 0;
    while (n < 3)
        n += fp_tasks(w, g + 5 + n, 10);
    assert_int_equal(n, 3);
    fp_expect_none(w, 300);
    /* CREDIT 0: nothing more even when results free slots. */
    b = fp_buf(&pk);
    msgpack_pack_map(pk, 1);
    dist__pk_kv_u64(pk, "capacity", 0);
    fp_send(w, DIST__CMD_CREDIT, b);
    fp_result(w, &g[2].id, 1, DIST__ST_OK, "\x03");
    fp_expect_none(w, 300);
    fp_res_t r[3];
    fp_results(c, r, 3);
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

static void test_spread_to_idle_worker(void **state)
{
    (void)state;
    dist_master_t *m = fp_start(NULL);
    zsock_t *c = fp_client(m, "c", NULL);
    zsock_t *w1 = fp_worker(m, "w1", 2, 4, "t");
    fp_submit_ok(c, "t", (int[]){ 1, 2 }, 2);
    fp_task_t g[4];
    size_t n = 0;
    while (n < 2)
        n += fp_tasks(w1, g + n, 4);
    /* w1 runs two (long) tasks on both slots; w2 is idle: short tasks go
     * to w2 although w1 has prefetch credit left. */
    zsock_t *w2 = fp_worker(m, "w2", 2, 4, "t");
    fp_submit_ok(c, "t", (int[]){ 3, 4 }, 2);
    n = 0;
    while (n < 2)
        n += fp_tasks(w2, g + n, 4);
    fp_expect_none(w1, 200);
    zsock_destroy(&w2);
    zsock_destroy(&w1);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

/* ---- submit ----------------------------------------------------------------------------- */

static void test_submit_idempotent_and_rejections(void **state)
{
    (void)state;
    dist_master_opts_t o = { .max_message = 4096, .max_queued = 3 };
    dist_master_t *m = fp_start(&o);
    zsock_t *w = fp_worker(m, "w", 1, 1, "t");
    zsock_t *c = fp_client(m, "c", NULL);
    char code[64];
    size_t rej;
    /* Unknown task name. */
    fp_submit(c, "never.announced", (int[]){ 1 }, 1, 0);
    assert_int_equal(fp_accepted(c, &rej, code, sizeof code), 0);
    assert_int_equal(rej, 1);
    assert_string_equal(code, "unknown_task");
    /* A name outside the name rules is a bad request (section 6.4). */
    fp_submit(c, "no spaces", (int[]){ 1 }, 1, 0);
    assert_int_equal(fp_accepted(c, &rej, code, sizeof code), 0);
    assert_string_equal(code, "bad_request");
    /* The same id twice, in one batch and again later: one task. */
    fp_submit(c, "t", (int[]){ 7, 7 }, 2, 0);
    assert_int_equal(fp_accepted(c, &rej, NULL, 0), 2);
    fp_submit_ok(c, "t", (int[]){ 7 }, 1);
    assert_int_equal(fp_counter(c, "submitted"), 1);
    fp_task_t g[2];
    assert_int_equal(fp_tasks(w, g, 2), 1);
    /* Too large for the master's messages. */
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_buf(&pk);
    static uint8_t big[4000];
    memset(big, 0xc0, sizeof big);
    big[0] = 0x91;
    msgpack_pack_map(pk, 1);
    dist__pk_str(pk, "tasks");
    msgpack_pack_array(pk, 2);
    dist__task_t t = { fp_id(8), 0, "t", 1, big, sizeof big, 0 };
    dist__pack_task(pk, &t, false);
    /* ... and a task map with a 3-byte id: bad_request. */
    msgpack_pack_map(pk, 3);
    dist__pk_str(pk, "id");
    dist__pk_bin(pk, "abc", 3);
    dist__pk_kv_str(pk, "task", "t");
    dist__pk_kv_bin(pk, "args", "\x90", 1);
    fp_send(c, DIST__CMD_SUBMIT, b);
    dist__inmsg_t msg;
    fp_expect(c, DIST__CMD_ACCEPTED, &msg);
    const msgpack_object *r;
    size_t nr;
    assert_int_equal(dist__get_array(msg.root, "rejected", &r, &nr), 0);
    assert_int_equal(nr, 2);
    assert_true(fp_str_is(&r[0], "code", "too_large"));
    dist__id_t id;
    assert_int_equal(dist__get_id(&r[0], "id", &id), 0);
    assert_int_equal(fp_id_num(&id), 8);
    assert_true(fp_str_is(&r[1], "code", "bad_request"));
    uint64_t idx;
    assert_int_equal(dist__get_u64(&r[1], "index", &idx), 0);
    assert_int_equal(idx, 1);
    dist__inmsg_clear(&msg);
    /* --max-queued 3: one held, two more fit, the fourth does not. */
    fp_submit(c, "t", (int[]){ 10, 11, 12 }, 3, 0);
    assert_int_equal(fp_accepted(c, &rej, code, sizeof code), 2);
    assert_string_equal(code, "queue_full");
    /* An empty SUBMIT is a bad request; one without tasks malformed. */
    b = fp_buf(&pk);
    msgpack_pack_map(pk, 1);
    dist__pk_str(pk, "tasks");
    msgpack_pack_array(pk, 0);
    fp_send(c, DIST__CMD_SUBMIT, b);
    fp_expect_error(c, "bad_request");
    assert_int_equal(dist__proto_send_empty(c, NULL, 0, DIST__CMD_SUBMIT), 0);
    fp_expect_error(c, "malformed");
    zsock_destroy(&c);
    zsock_destroy(&w);
    dist_master_destroy(&m);
}

static void test_max_results_per_client(void **state)
{
    (void)state;
    dist_master_opts_t o = { .max_results = 2 };
    dist_master_t *m = fp_start(&o);
    zsock_t *w = fp_worker(m, "w", 1, 4, "t");
    zsock_t *c = fp_client(m, "c", NULL);
    char code[64];
    size_t rej;
    fp_submit(c, "t", (int[]){ 1, 2, 3 }, 3, 0);
    assert_int_equal(fp_accepted(c, &rej, code, sizeof code), 2);
    assert_string_equal(code, "queue_full");
    fp_task_t g[4];
    size_t n = 0;
    while (n < 2)
        n += fp_tasks(w, g + n, 4);
    fp_result(w, &g[0].id, 1, DIST__ST_OK, "a");
    fp_result(w, &g[1].id, 1, DIST__ST_OK, "b");
    fp_res_t r[2];
    fp_results(c, r, 2);
    /* Results wait until acknowledged: still full. */
    fp_submit(c, "t", (int[]){ 3 }, 1, 0);
    assert_int_equal(fp_accepted(c, &rej, code, sizeof code), 0);
    dist__id_t ids[2] = { r[0].id, r[1].id };
    fp_ids_msg(c, DIST__CMD_ACK, ids, 2);
    fp_submit_ok(c, "t", (int[]){ 3 }, 1);
    zsock_destroy(&c);
    zsock_destroy(&w);
    dist_master_destroy(&m);
}

/* ---- results ----------------------------------------------------------------------------- */

static void test_results_redelivered_until_ack(void **state)
{
    (void)state;
    dist_master_t *m = fp_start(NULL);
    zsock_t *w = fp_worker(m, "w", 2, 2, "t");
    zsock_t *c = fp_client(m, "carol", NULL);
    fp_submit_ok(c, "t", (int[]){ 1, 2 }, 2);
    fp_task_t g[2];
    size_t n = 0;
    while (n < 2)
        n += fp_tasks(w, g + n, 2);
    fp_result(w, &g[0].id, 1, DIST__ST_OK, "\x2a");
    fp_result(w, &g[1].id, 1, DIST__ST_FAILED, "task t: division by zero");
    fp_res_t r[2];
    fp_results(c, r, 2);
    /* The client goes away without ACK; its results wait. */
    zsock_destroy(&c);
    uint64_t pending;
    c = fp_client(m, "carol", &pending);
    assert_int_equal(pending, 2);
    fp_results(c, r, 2);
    int seen = 0;
    for (int i = 0; i < 2; i++) {
        if (r[i].status == DIST__ST_OK) {
            assert_string_equal(r[i].text, "\x2a");
            seen |= 1;
        } else {
            assert_int_equal(r[i].status, DIST__ST_FAILED);
            assert_string_equal(r[i].text, "task t: division by zero");
            seen |= 2;
        }
    }
    assert_int_equal(seen, 3);
    /* ACK one; a new connection with the name takes over and gets the
     * other one only. */
    dist__id_t acked = r[0].id;
    fp_ids_msg(c, DIST__CMD_ACK, &acked, 1);
    assert_int_equal(fp_counter(c, "results_waiting"), 1);
    zsock_t *c2 = fp_client(m, "carol", &pending);
    assert_int_equal(pending, 1);
    fp_results(c2, r, 1);
    assert_false(dist__id_eq(&r[0].id, &acked));
    fp_ids_msg(c2, DIST__CMD_ACK, &r[0].id, 1);
    /* The replaced connection is forgotten. */
    assert_int_equal(dist__proto_send_empty(c, NULL, 0, DIST__CMD_HEARTBEAT), 0);
    dist__inmsg_t msg;
    fp_expect(c, DIST__CMD_RECONNECT, &msg);
    dist__inmsg_clear(&msg);
    assert_int_equal(fp_counter(c2, "results_waiting"), 0);
    zsock_destroy(&c2);
    c2 = fp_client(m, "carol", &pending);
    assert_int_equal(pending, 0);
    fp_expect_none(c2, 200);
    zsock_destroy(&c2);
    zsock_destroy(&c);
    zsock_destroy(&w);
    dist_master_destroy(&m);
}

/* ---- failures ----------------------------------------------------------------------------- */

static void test_worker_death_requeues(void **state)
{
    (void)state;
    dist_master_opts_t o = { .heartbeat_ms = 100, .heartbeat_timeout_ms = DEATH_MS };
    dist_master_t *m = fp_start(&o);
    zsock_t *c = fp_client(m, "c", NULL);
    zsock_t *w1 = fp_worker(m, "w1", 1, 2, "t");
    fp_keep_alive(c, w1);
    fp_submit_ok(c, "t", (int[]){ 1, 2, 3 }, 3);
    fp_task_t g[2];
    size_t n = 0;
    while (n < 2)
        n += fp_tasks(w1, g + n, 2);
    /* w2 joins and takes the third; then w1 falls silent. */
    zsock_t *w2 = fp_worker(m, "w2", 1, 3, "t");
    fp_keep_alive(c, w2);
    fp_task_t h[3];
    assert_int_equal(fp_tasks(w2, h, 3), 1);
    assert_int_equal(fp_id_num(&h[0].id), 3);
    n = 0;
    while (n < 2)
        n += fp_tasks(w2, h + n, 3 - n);
    assert_int_equal(n, 2);
    /* The requeued tasks keep their order, attempt 2. */
    assert_int_equal(fp_id_num(&h[0].id), 1);
    assert_int_equal(fp_id_num(&h[1].id), 2);
    assert_int_equal(h[0].attempt, 2);
    assert_int_equal(h[1].attempt, 2);
    assert_int_equal(fp_counter(c, "dead_workers"), 1);
    assert_int_equal(fp_counter(c, "retried"), 2);
    /* The dead worker wakes up: it is told to say HELLO again. */
    assert_int_equal(dist__proto_send_empty(w1, NULL, 0, DIST__CMD_HEARTBEAT), 0);
    dist__inmsg_t msg;
    fp_expect(w1, DIST__CMD_RECONNECT, &msg);
    dist__inmsg_clear(&msg);
    zsock_destroy(&w2);
    zsock_destroy(&w1);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

static void test_gave_up_lists_every_attempt(void **state)
{
    (void)state;
    dist_master_opts_t o = { .heartbeat_ms = 100, .heartbeat_timeout_ms = DEATH_MS,
                             .max_attempts = 3 };
    dist_master_t *m = fp_start(&o);
    zsock_t *c = fp_client(m, "c", NULL);
    zsock_t *w = fp_worker(m, "w1", 1, 1, "t");
    fp_keep_alive(c, w);
    fp_submit_ok(c, "t", (int[]){ 5 }, 1);
    fp_task_t g[1];
    assert_int_equal(fp_tasks(w, g, 1), 1);
    assert_int_equal(g[0].attempt, 1);
    fp_result(w, &g[0].id, 1, DIST__ST_CRASHED, "task t: process 12 was killed by signal 9");
    assert_int_equal(fp_tasks(w, g, 1), 1);
    assert_int_equal(g[0].attempt, 2);
    fp_result(w, &g[0].id, 2, DIST__ST_TIMEOUT, "task t: ran past 100 ms");
    assert_int_equal(fp_tasks(w, g, 1), 1);
    assert_int_equal(g[0].attempt, 3);
    /* The third attempt dies with its worker (it falls silent). */
    fp_keep_alive(c, NULL);
    fp_res_t r[1];
    fp_results(c, r, 1);
    assert_int_equal(r[0].status, DIST__ST_GAVE_UP);
    assert_string_equal(r[0].text, "task t gave up after 3 attempts: "
                                   "1: crashed: task t: process 12 was killed by signal 9; "
                                   "2: timeout: task t: ran past 100 ms; "
                                   "3: worker w1 (host testhost, pid 4242) died");
    assert_int_equal(fp_counter(c, "gave_up"), 1);
    assert_int_equal(fp_counter(c, "failed"), 1);
    /* Before the ACK, LOOKUP shows each attempt with its worker and reason. */
    static const fp_attempt_t gave_up[] = { { "w1", "crashed: task t: process 12" },
                                            { "w1", "timeout: task t: ran past 100 ms" },
                                            { "w1", "worker w1 (host testhost" } };
    fp_lookup_attempts(c, 40, 5, "failed", "t", gave_up, 3);
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

/* A task that crashed on one worker, lost a second attempt with that
 * worker's death, then succeeded on another: LOOKUP shows the three
 * attempts, whose worker ran each and why it ended, and the task's name,
 * while it is running and after it finished (the submitter has not
 * acknowledged it), and nothing of it once acknowledged. */
static void test_lookup_attempts_after_finish(void **state)
{
    (void)state;
    dist_master_opts_t o = { .heartbeat_ms = 100, .heartbeat_timeout_ms = DEATH_MS };
    dist_master_t *m = fp_start(&o);
    zsock_t *c = fp_client(m, "c", NULL);
    zsock_t *c2 = fp_client(m, "c2", NULL);
    zsock_t *w1 = fp_worker(m, "w1", 1, 1, "t");
    fp_keep_alive(c, w1);
    fp_submit_ok(c, "t", (int[]){ 5 }, 1);
    fp_task_t g[1];
    assert_int_equal(fp_tasks(w1, g, 1), 1);
    fp_result(w1, &g[0].id, 1, DIST__ST_CRASHED, "task t: process 12 was killed by signal 11");
    assert_int_equal(fp_tasks(w1, g, 1), 1);
    assert_int_equal(g[0].attempt, 2);
    static const fp_attempt_t running[] = { { "w1", "crashed: task t: process 12" },
                                            { "w1", "" } };
    fp_lookup_attempts(c2, 1, 5, "leased", "t", running, 2);
    /* w1 falls silent with attempt 2; w2 runs attempt 3. */
    zsock_t *w2 = fp_worker(m, "w2", 1, 1, "t");
    fp_keep_alive(c, w2);
    assert_int_equal(fp_tasks(w2, g, 1), 1);
    assert_int_equal(g[0].attempt, 3);
    fp_result(w2, &g[0].id, 3, DIST__ST_OK, "v");
    fp_res_t r[1];
    fp_results(c, r, 1);
    assert_int_equal(r[0].status, DIST__ST_OK);
    static const fp_attempt_t done[] = { { "w1", "crashed: task t: process 12" },
                                         { "w1", "worker w1 (host testhost, pid 4242) died" },
                                         { "w2", "" } };
    fp_lookup_attempts(c2, 2, 5, "done", "t", done, 3);
    fp_lookup_attempts(c, 3, 5, "done", "t", done, 3);
    fp_ids_msg(c, DIST__CMD_ACK, &r[0].id, 1);
    fp_lookup_attempts(c, 4, 5, "unknown", "", NULL, 0); /* after the ACK: same socket */
    zsock_destroy(&w1);
    zsock_destroy(&w2);
    zsock_destroy(&c2);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

static void test_late_results(void **state)
{
    (void)state;
    dist_master_opts_t o = { .heartbeat_ms = 100, .heartbeat_timeout_ms = DEATH_MS };
    dist_master_t *m = fp_start(&o);
    zsock_t *c = fp_client(m, "c", NULL);
    zsock_t *w1 = fp_worker(m, "w1", 1, 2, "t");
    fp_keep_alive(c, NULL);
    fp_submit_ok(c, "t", (int[]){ 1, 2 }, 2);
    fp_task_t g[2];
    size_t n = 0;
    while (n < 2)
        n += fp_tasks(w1, g + n, 2);
    /* w1 is written off; w2 gets attempt 2 of both. */
    zsock_t *w2 = fp_worker(m, "w2", 1, 2, "t");
    fp_keep_alive(c, w2);
    fp_task_t h[2];
    n = 0;
    while (n < 2)
        n += fp_tasks(w2, h + n, 2 - n);
    assert_int_equal(h[0].attempt, 2);
    /* Task 1: w2 answers first; w1's late result is dropped. */
    fp_result(w2, &h[0].id, 2, DIST__ST_OK, "two");
    fp_res_t r[2];
    fp_results(c, r, 1);
    assert_string_equal(r[0].text, "two");
    fp_result(w1, &g[0].id, 1, DIST__ST_OK, "one");
    /* Task 2: w1's late final result arrives first and is kept; the
     * newer lease is cancelled and w2's answer is dropped. */
    fp_result(w1, &g[1].id, 1, DIST__ST_OK, "late");
    fp_results(c, r + 1, 1);
    assert_int_equal(fp_id_num(&r[1].id), 2);
    assert_string_equal(r[1].text, "late");
    fp_expect_none(c, 200);
    /* w2 still runs the cancelled lease: its credit comes back with its
     * answer, which is dropped. */
    fp_submit_ok(c, "t", (int[]){ 3, 4 }, 2);
    assert_int_equal(fp_tasks(w2, h, 2), 1);
    assert_int_equal(fp_id_num(&h[0].id), 3);
    fp_result(w2, &g[1].id, 2, DIST__ST_OK, "dropped");
    assert_int_equal(fp_tasks(w2, h + 1, 1), 1);
    assert_int_equal(fp_id_num(&h[1].id), 4);
    fp_expect_none(c, 200);
    assert_int_equal(fp_counter(c, "completed"), 2);
    zsock_destroy(&w2);
    zsock_destroy(&w1);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

static void test_return_and_lease_expiry(void **state)
{
    (void)state;
    dist_master_opts_t o = { .lease_ms = 1000 };
    dist_master_t *m = fp_start(&o);
    zsock_t *c = fp_client(m, "c", NULL);
    zsock_t *w = fp_worker(m, "w", 2, 2, "t");
    fp_submit_ok(c, "t", (int[]){ 1, 2, 3 }, 3);
    fp_task_t g[3];
    size_t n = 0;
    while (n < 2)
        n += fp_tasks(w, g + n, 2);
    /* RETURN hands both back unstarted: same attempt, at the front, in
     * order, ahead of task 3. */
    dist__id_t ids[2] = { g[0].id, g[1].id };
    fp_ids_msg(w, DIST__CMD_RETURN, ids, 2);
    n = 0;
    while (n < 2)
        n += fp_tasks(w, g + n, 2);
    assert_int_equal(fp_id_num(&g[0].id), 1);
    assert_int_equal(fp_id_num(&g[1].id), 2);
    assert_int_equal(g[0].attempt, 1);
    /* Hold them past the 1000 ms lease while w's heartbeats arrive: the
     * leases are renewed (issue 12), so a second worker gets only task 3,
     * never a second copy of 1 or 2. */
    fp_keep_alive(w, c);
    fp_expect_none(c, 1100);
    zsock_t *w2 = fp_worker(m, "w2", 3, 3, "t");
    fp_task_t h[3];
    assert_int_equal(fp_tasks(w2, h, 3), 1);
    assert_int_equal(fp_id_num(&h[0].id), 3);
    assert_int_equal(h[0].attempt, 1);
    fp_expect_none(w2, 300);
    fp_result(w2, &h[0].id, 1, DIST__ST_OK, "v");
    fp_result(w, &g[0].id, 1, DIST__ST_OK, "v");
    fp_result(w, &g[1].id, 1, DIST__ST_OK, "v");
    fp_res_t r[3];
    fp_results(c, r, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(r[i].status, DIST__ST_OK);
    zsock_destroy(&w2);
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

/* ---- task control (issue 12) ---------------------------------------------------------- */

static void s_submit_opts_ok(zsock_t *c, int id, const dist__submit_opts_t *o)
{
    fp_submit_opts(c, fp_id(id), o);
    size_t rej;
    assert_int_equal(fp_accepted(c, &rej, NULL, 0), 1);
    assert_int_equal(rej, 0);
}

static void s_submit_opts_rejected(zsock_t *c, int id, const dist__submit_opts_t *o)
{
    fp_submit_opts(c, fp_id(id), o);
    size_t rej;
    char code[64];
    assert_int_equal(fp_accepted(c, &rej, code, sizeof code), 0);
    assert_int_equal(rej, 1);
    assert_string_equal(code, "bad_request");
}

static int64_t s_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_priorities_and_delays(void **state)
{
    (void)state;
    dist_master_t *m = fp_start(NULL);
    zsock_t *c = fp_client(m, "c", NULL);
    zsock_t *w = fp_worker(m, "w", 1, 1, "t");
    fp_keep_alive(w, c);
    /* Task 100 takes the worker's only slot; the rest queue. */
    s_submit_opts_ok(c, 100, NULL);
    fp_task_t g[1];
    assert_int_equal(fp_tasks(w, g, 1), 1);
    int prio[5] = { 0, 5, 0, 9, 5 };
    for (int i = 0; i < 5; i++) {
        dist__submit_opts_t o = { .priority = (uint32_t)prio[i] };
        s_submit_opts_ok(c, i + 1, &o);
    }
    /* A delayed task, due in 1000 ms, with the highest priority (the order
     * checks below end well before). */
    dist__submit_opts_t d = { .priority = 9, .has_delay = true, .delay_ms = 1000 };
    int64_t t0 = s_ms();
    s_submit_opts_ok(c, 6, &d);
    /* Bad options: clear rejections, nothing queued. */
    dist__submit_opts_t bad1 = { .has_delay = true, .delay_ms = 5, .has_at = true, .at_ms = 5 };
    s_submit_opts_rejected(c, 7, &bad1);
    dist__submit_opts_t bad2 = { .has_at = true, .at_ms = (uint64_t)s_ms() + 31ull * 86400000 };
    s_submit_opts_rejected(c, 8, &bad2);
    dist__submit_opts_t bad3 = { .key = { "not-this-id", 11 } };
    s_submit_opts_rejected(c, 9, &bad3);
    dist__submit_opts_t bad4 = { .priority = 10 };
    s_submit_opts_rejected(c, 10, &bad4);
    dist__submit_opts_t bad5 = { .has_delay = true, .delay_ms = 2592000001u };
    s_submit_opts_rejected(c, 11, &bad5);
    /* A key that names the id is accepted; at_ms in the past runs now. */
    dist__submit_opts_t kp = { .key = { "report-2026", 11 }, .has_at = true, .at_ms = 1000 };
    dist__id_t kid;
    assert_int_equal(dist__id_from_key("report-2026", 11, &kid), 0);
    fp_submit_opts(c, kid, &kp);
    size_t krej;
    assert_int_equal(fp_accepted(c, &krej, NULL, 0), 1);
    /* Higher first, FIFO within a level: 4 (9), 2 and 5 (5), 1 and 3 (0),
     * then the keyed one (0, submitted last). */
    int want[5] = { 4, 2, 5, 1, 3 };
    dist__id_t prev = g[0].id;
    for (int i = 0; i < 5; i++) {
        fp_result(w, &prev, 1, DIST__ST_OK, "v");
        assert_int_equal(fp_tasks(w, g, 1), 1);
        assert_int_equal(fp_id_num(&g[0].id), want[i]);
        prev = g[0].id;
    }
    fp_result(w, &prev, 1, DIST__ST_OK, "v");
    assert_int_equal(fp_tasks(w, g, 1), 1);
    assert_true(dist__id_eq(&g[0].id, &kid));
    prev = g[0].id;
    fp_result(w, &prev, 1, DIST__ST_OK, "v");
    /* The delayed one comes at its time, not before. */
    assert_int_equal(fp_tasks(w, g, 1), 1);
    assert_int_equal(fp_id_num(&g[0].id), 6);
    assert_true(s_ms() - t0 >= 990);
    fp_result(w, &g[0].id, 1, DIST__ST_OK, "v");
    fp_res_t r[8];
    fp_results(c, r, 8);
    dist__inmsg_t st;
    fp_status(c, &st);
    const msgpack_object *qs;
    size_t nq;
    assert_int_equal(dist__get_array(st.root, "queues", &qs, &nq), 0);
    assert_int_equal(nq, 1);
    const msgpack_object *dp;
    size_t ndp;
    assert_int_equal(dist__get_array(&qs[0], "depth_by_priority", &dp, &ndp), 0);
    assert_int_equal(ndp, 10);
    uint64_t delayed = 1;
    assert_int_equal(dist__get_u64(&qs[0], "delayed", &delayed), 0);
    assert_int_equal(delayed, 0);
    dist__inmsg_clear(&st);
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

static bool s_is(dist__str_t s, const char *lit)
{
    return s.n == strlen(lit) && memcmp(s.s, lit, s.n) == 0;
}

static void test_cancel_lookup_fetch(void **state)
{
    (void)state;
    dist_master_t *m = fp_start(NULL);
    zsock_t *c = fp_client(m, "c", NULL);
    zsock_t *c2 = fp_client(m, "c2", NULL);
    zsock_t *w = fp_worker(m, "w", 1, 1, "t");
    fp_keep_alive(w, c);
    dist__submit_opts_t k = { .key = { "job-1", 5 } };
    dist__id_t kid;
    assert_int_equal(dist__id_from_key("job-1", 5, &kid), 0);
    (void)kid;
    fp_submit_ok(c, "t", (int[]){ 1, 2, 3 }, 3); /* 1 leased, 2 and 3 queued */
    fp_task_t g[1];
    assert_int_equal(fp_tasks(w, g, 1), 1);
    assert_int_equal(fp_id_num(&g[0].id), 1);
    (void)k;
    /* LOOKUP: leased with its worker, queued, unknown. */
    fp_ids_req(c2, DIST__CMD_LOOKUP, 5, (int[]){ 1, 2, 99 }, 3);
    dist__inmsg_t mm;
    dist__reply_t r;
    fp_reply(c2, 5, "ok", &mm, &r);
    assert_int_equal(r.list, DIST__REPLY_TASKS);
    assert_int_equal(r.nitems, 3);
    dist__task_info_t ti;
    assert_int_equal(dist__parse_task_info(&r.items[0], &ti), 0);
    assert_true(s_is(ti.state, "leased"));
    assert_true(s_is(ti.worker, "w"));
    assert_true(s_is(ti.task, "t"));
    assert_true(ti.started_ms > 0);
    assert_int_equal(dist__parse_task_info(&r.items[1], &ti), 0);
    assert_true(s_is(ti.state, "queued"));
    assert_int_equal(dist__parse_task_info(&r.items[2], &ti), 0);
    assert_true(s_is(ti.state, "unknown"));
    dist__inmsg_clear(&mm);
    /* A FETCH of task 2 from another client waits for it. */
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_buf(&pk);
    dist__fetch_t f = { .req = 6, .id = fp_id(2), .wait_ms = 5000 };
    dist__pack_fetch(pk, &f);
    fp_send(c2, DIST__CMD_FETCH, b);
    fp_expect_none(c2, 100);
    /* CANCEL the leased 1 and the queued 2: the worker is told about 1, both
     * end cancelled, the submitter gets cancelled results. */
    fp_ids_req(c2, DIST__CMD_CANCEL, 7, (int[]){ 1, 2, 98 }, 3);
    dist__inmsg_t cm;
    fp_expect(w, DIST__CMD_CANCEL, &cm);
    dist__ids_req_t cr;
    assert_int_equal(dist__parse_ids_req(cm.root, false, &cr), 0);
    assert_int_equal(cr.nids, 1);
    dist__id_t cid;
    assert_true(dist__list_id(&cr.ids[0], &cid));
    assert_int_equal(fp_id_num(&cid), 1);
    dist__inmsg_clear(&cm);
    /* The parked FETCH is answered by the cancel, then the CANCEL's REPLY. */
    fp_reply(c2, 6, "ok", &mm, &r);
    assert_true(s_is(r.state, "cancelled"));
    assert_non_null(r.result_map);
    dist__result_t res;
    assert_int_equal(dist__parse_result(r.result_map, false, &res), 0);
    assert_int_equal(res.status, DIST__ST_CANCELLED);
    dist__inmsg_clear(&mm);
    fp_reply(c2, 7, "ok", &mm, &r);
    assert_int_equal(r.list, DIST__REPLY_STATES);
    assert_int_equal(r.nitems, 3);
    const char *sv;
    size_t sn;
    assert_int_equal(dist_wire_get_str(&r.items[0], &sv, &sn), 0);
    assert_true(sn == 9 && memcmp(sv, "cancelled", 9) == 0);
    assert_int_equal(dist_wire_get_str(&r.items[2], &sv, &sn), 0);
    assert_true(sn == 7 && memcmp(sv, "unknown", 7) == 0);
    dist__inmsg_clear(&mm);
    fp_res_t rr[2];
    fp_results(c, rr, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(rr[i].status, DIST__ST_CANCELLED);
        assert_non_null(strstr(rr[i].text, "cancelled by c2"));
    }
    /* The worker's late answer for 1 is not delivered as done; its slot
     * comes back and task 3 runs. */
    fp_result(w, &g[0].id, 1, DIST__ST_OK, "too late");
    assert_int_equal(fp_tasks(w, g, 1), 1);
    assert_int_equal(fp_id_num(&g[0].id), 3);
    fp_result(w, &g[0].id, 1, DIST__ST_OK, "v3");
    fp_results(c, rr, 1);
    assert_int_equal(rr[0].status, DIST__ST_OK);
    /* Cancelling a finished task changes nothing; FETCH of a done one. */
    fp_ids_req(c2, DIST__CMD_CANCEL, 8, (int[]){ 3 }, 1);
    fp_reply(c2, 8, "ok", &mm, &r);
    assert_int_equal(dist_wire_get_str(&r.items[0], &sv, &sn), 0);
    assert_true(sn == 4 && memcmp(sv, "done", 4) == 0);
    dist__inmsg_clear(&mm);
    b = fp_buf(&pk);
    f = (dist__fetch_t){ .req = 9, .id = fp_id(3) };
    dist__pack_fetch(pk, &f);
    fp_send(c2, DIST__CMD_FETCH, b);
    fp_reply(c2, 9, "ok", &mm, &r);
    assert_int_equal(dist__parse_result(r.result_map, false, &res), 0);
    assert_int_equal(res.status, DIST__ST_OK);
    dist__inmsg_clear(&mm);
    b = fp_buf(&pk);
    f = (dist__fetch_t){ .req = 10, .id = fp_id(97) };
    dist__pack_fetch(pk, &f);
    fp_send(c2, DIST__CMD_FETCH, b);
    fp_reply(c2, 10, "not_found", &mm, &r);
    dist__inmsg_clear(&mm);
    /* A worker may not send client commands; a bad id list is bad_request. */
    fp_ids_req(w, DIST__CMD_CANCEL, 11, (int[]){ 3 }, 1);
    fp_expect_error(w, "forbidden");
    b = fp_buf(&pk);
    msgpack_pack_map(pk, 2);
    dist__pk_kv_u64(pk, "req", 12);
    dist__pk_kv_str(pk, "ids", "nope");
    fp_send(c2, DIST__CMD_LOOKUP, b);
    fp_expect_error(c2, "bad_request");
    assert_int_equal(fp_counter(c, "cancelled"), 2);
    zsock_destroy(&w);
    zsock_destroy(&c2);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

static void test_retry_policies(void **state)
{
    (void)state;
    dist_master_t *m = fp_start(NULL);
    zsock_t *c = fp_client(m, "c", NULL);
    zsock_t *w = fp_worker(m, "w", 1, 1, "t");
    fp_keep_alive(w, c);
    fp_task_t g[1];
    /* max_attempts 1: a crash gives up at once. */
    dist__submit_opts_t one = { .max_attempts = 1 };
    s_submit_opts_ok(c, 1, &one);
    assert_int_equal(fp_tasks(w, g, 1), 1);
    fp_result(w, &g[0].id, 1, DIST__ST_CRASHED, "boom");
    fp_res_t r[1];
    fp_results(c, r, 1);
    assert_int_equal(r[0].status, DIST__ST_GAVE_UP);
    /* retry_on_error: a failed result is retried; the worker's retry status
     * waits retry_ms (delayed), then attempt 3 runs. */
    dist__submit_opts_t roe = { .retry_on_error = true, .max_attempts = 3 };
    s_submit_opts_ok(c, 2, &roe);
    assert_int_equal(fp_tasks(w, g, 1), 1);
    fp_result(w, &g[0].id, 1, DIST__ST_FAILED, "bad luck");
    assert_int_equal(fp_tasks(w, g, 1), 1);
    assert_int_equal(g[0].attempt, 2);
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_batch(&pk, "results", 1);
    dist__result_t rr = { .id = g[0].id, .attempt = 2, .status = DIST__ST_RETRY,
                          .error = "later", .error_len = 5, .retry_ms = 300 };
    dist__pack_result(pk, &rr, true);
    int64_t t0 = s_ms();
    fp_send(w, DIST__CMD_RESULTS, b);
    fp_expect_none(w, 200);
    fp_ids_req(c, DIST__CMD_LOOKUP, 3, (int[]){ 2 }, 1);
    dist__inmsg_t mm;
    dist__reply_t rp;
    fp_reply(c, 3, "ok", &mm, &rp);
    dist__task_info_t ti;
    assert_int_equal(dist__parse_task_info(&rp.items[0], &ti), 0);
    assert_true(s_is(ti.state, "delayed"));
    assert_true(ti.not_before_ms > 0);
    assert_int_equal(ti.nattempts, 3);
    dist__attempt_info_t a;
    assert_int_equal(dist__parse_attempt_info(&ti.attempt_maps[1], &a), 0);
    assert_int_equal(a.attempt, 2);
    assert_non_null(memmem(a.reason.s, a.reason.n, "later", 5));
    dist__inmsg_clear(&mm);
    assert_int_equal(fp_tasks(w, g, 1), 1);
    assert_int_equal(g[0].attempt, 3);
    assert_true(s_ms() - t0 >= 290);
    fp_result(w, &g[0].id, 3, DIST__ST_FAILED, "still bad");
    fp_results(c, r, 1);
    assert_int_equal(r[0].status, DIST__ST_GAVE_UP);
    assert_non_null(strstr(r[0].text, "bad luck"));
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

static void test_result_ttl_and_dead_letters(void **state)
{
    (void)state;
    dist_master_opts_t o = { .result_ttl_ms = 300, .max_attempts = 2 };
    dist_master_t *m = fp_start(&o);
    zsock_t *c = fp_client(m, "c", NULL);
    zsock_t *w = fp_worker(m, "w", 1, 1, "t");
    fp_keep_alive(w, c);
    fp_task_t g[1];
    /* 1 succeeds and is never acknowledged: it expires. */
    fp_submit_ok(c, "t", (int[]){ 1 }, 1);
    assert_int_equal(fp_tasks(w, g, 1), 1);
    fp_result(w, &g[0].id, 1, DIST__ST_OK, "v1");
    fp_res_t r[1];
    fp_results(c, r, 1);
    /* 2 fails every attempt: a dead letter. */
    fp_submit_ok(c, "t", (int[]){ 2 }, 1);
    for (uint32_t a = 1; a <= 2; a++) {
        assert_int_equal(fp_tasks(w, g, 1), 1);
        assert_int_equal(g[0].attempt, a);
        fp_result(w, &g[0].id, a, DIST__ST_CRASHED, "died");
    }
    fp_results(c, r, 1);
    assert_int_equal(r[0].status, DIST__ST_GAVE_UP);
    dist__id_t two = fp_id(2);
    fp_ids_msg(c, DIST__CMD_ACK, &two, 1);
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_buf(&pk);
    dist__failed_req_t fr = { .req = 1 };
    dist__pack_failed_req(pk, &fr);
    fp_send(c, DIST__CMD_FAILED, b);
    dist__inmsg_t mm;
    dist__reply_t rp;
    fp_reply(c, 1, "ok", &mm, &rp);
    assert_int_equal(rp.nitems, 1);
    dist__task_info_t ti;
    assert_int_equal(dist__parse_task_info(&rp.items[0], &ti), 0);
    assert_int_equal(fp_id_num(&ti.id), 2);
    assert_true(s_is(ti.state, "failed"));
    assert_non_null(memmem(ti.error.s, ti.error.n, "died", 4));
    dist__inmsg_clear(&mm);
    /* RETRY: runs again with fresh attempts; an id not in the list is unknown. */
    fp_ids_req(c, DIST__CMD_RETRY, 2, (int[]){ 2, 5 }, 2);
    fp_reply(c, 2, "ok", &mm, &rp);
    const char *sv;
    size_t sn;
    assert_int_equal(dist_wire_get_str(&rp.items[0], &sv, &sn), 0);
    assert_true(sn == 6 && memcmp(sv, "queued", 6) == 0);
    assert_int_equal(dist_wire_get_str(&rp.items[1], &sv, &sn), 0);
    assert_true(sn == 7 && memcmp(sv, "unknown", 7) == 0);
    dist__inmsg_clear(&mm);
    assert_int_equal(fp_tasks(w, g, 1), 1);
    assert_int_equal(fp_id_num(&g[0].id), 2);
    assert_int_equal(g[0].attempt, 1);
    fp_result(w, &g[0].id, 1, DIST__ST_OK, "v2");
    fp_results(c, r, 1);
    assert_int_equal(r[0].status, DIST__ST_OK);
    fp_ids_msg(c, DIST__CMD_ACK, &two, 1);
    /* After the TTL (checked once a second), 1 is expired. */
    fp_expect_none(c, 1500);
    fp_ids_req(c, DIST__CMD_LOOKUP, 3, (int[]){ 1 }, 1);
    fp_reply(c, 3, "ok", &mm, &rp);
    assert_int_equal(dist__parse_task_info(&rp.items[0], &ti), 0);
    assert_true(s_is(ti.state, "expired"));
    dist__inmsg_clear(&mm);
    b = fp_buf(&pk);
    dist__fetch_t f = { .req = 4, .id = fp_id(1) };
    dist__pack_fetch(pk, &f);
    fp_send(c, DIST__CMD_FETCH, b);
    fp_reply(c, 4, "not_found", &mm, &rp);
    assert_true(s_is(rp.state, "expired"));
    dist__inmsg_clear(&mm);
    assert_int_equal(fp_counter(c, "expired_results"), 1);
    /* A new connection of the name gets nothing: the result is gone. */
    zsock_destroy(&c);
    uint64_t pending = 9;
    c = fp_client(m, "c", &pending);
    assert_int_equal(pending, 0);
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

/* ---- named queues ------------------------------------------------------------------------- */

static void s_qput(zsock_t *c, uint64_t req, const char *q, const char *item, uint32_t timeout)
{
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_buf(&pk);
    msgpack_pack_map(pk, 4);
    dist__pk_kv_u64(pk, "req", req);
    dist__pk_kv_str(pk, "queue", q);
    dist__pk_str(pk, "items");
    msgpack_pack_array(pk, 1);
    dist__pk_bin(pk, item, strlen(item));
    dist__pk_kv_u64(pk, "timeout_ms", timeout);
    fp_send(c, DIST__CMD_QPUT, b);
}

static void s_qget(zsock_t *c, uint64_t req, const char *q, uint32_t max, uint32_t timeout)
{
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_buf(&pk);
    msgpack_pack_map(pk, 4);
    dist__pk_kv_u64(pk, "req", req);
    dist__pk_kv_str(pk, "queue", q);
    dist__pk_kv_u64(pk, "max", max);
    dist__pk_kv_u64(pk, "timeout_ms", timeout);
    fp_send(c, DIST__CMD_QGET, b);
}

/* Expects QREPLY req with status; returns the items joined by ',' */
static void s_qreply(zsock_t *c, uint64_t req, const char *status, char *items, size_t cap)
{
    dist__inmsg_t m;
    fp_expect(c, DIST__CMD_QREPLY, &m);
    uint64_t r;
    assert_int_equal(dist__get_u64(m.root, "req", &r), 0);
    assert_int_equal(r, req);
    if (!fp_str_is(m.root, "status", status))
        fail_msg("req %llu: expected status %s", (unsigned long long)req, status);
    const msgpack_object *it;
    size_t n;
    assert_int_equal(dist__get_array(m.root, "items", &it, &n), 0);
    size_t off = 0;
    if (items)
        items[0] = 0;
    for (size_t i = 0; i < n && items; i++) {
        const void *p;
        size_t len;
        assert_int_equal(dist_wire_get_bin(&it[i], &p, &len), 0);
        off += (size_t)snprintf(items + off, cap - off, "%s%.*s", i ? "," : "", (int)len,
                                (const char *)p);
    }
    dist__inmsg_clear(&m);
}

static void test_named_queues(void **state)
{
    (void)state;
    dist_master_opts_t o = { .max_queued = 2 };
    dist_master_t *m = fp_start(&o);
    zsock_t *a = fp_client(m, "a", NULL);
    zsock_t *b = fp_client(m, "b", NULL);
    char items[256];
    s_qput(a, 1, "jobs", "x", 0);
    s_qreply(a, 1, "ok", NULL, 0);
    s_qput(a, 2, "jobs", "y", 0);
    s_qreply(a, 2, "ok", NULL, 0);
    /* Full: at once, or after waiting. */
    s_qput(a, 3, "jobs", "z", 0);
    s_qreply(a, 3, "full", NULL, 0);
    int64_t t0 = dt_now_ms();
    s_qput(a, 4, "jobs", "z", 200);
    s_qreply(a, 4, "full", NULL, 0);
    dt_assert_took(t0, 200);
    /* A waiting put is stored once a get makes room. */
    s_qput(a, 5, "jobs", "z", 3000);
    s_qget(b, 6, "jobs", 1, 0);
    s_qreply(b, 6, "ok", items, sizeof items);
    assert_string_equal(items, "x");
    s_qreply(a, 5, "ok", NULL, 0);
    s_qget(b, 7, "jobs", 10, 0);
    s_qreply(b, 7, "ok", items, sizeof items);
    assert_string_equal(items, "y,z");
    /* Empty: timeout at once, or after waiting. */
    s_qget(b, 8, "jobs", 1, 0);
    s_qreply(b, 8, "timeout", items, sizeof items);
    assert_string_equal(items, "");
    t0 = dt_now_ms();
    s_qget(b, 9, "jobs", 1, 200);
    s_qreply(b, 9, "timeout", NULL, 0);
    dt_assert_took(t0, 200);
    /* Blocking gets are served by later puts, in arrival order. */
    s_qget(b, 10, "jobs", 1, 3000);
    s_qget(a, 11, "jobs", 1, 3000);
    fp_expect_none(b, 100);
    s_qput(a, 12, "jobs", "first", 0);
    s_qreply(a, 12, "ok", NULL, 0);
    s_qreply(b, 10, "ok", items, sizeof items);
    assert_string_equal(items, "first");
    s_qput(b, 13, "jobs", "second", 0);
    s_qreply(b, 13, "ok", NULL, 0);
    s_qreply(a, 11, "ok", items, sizeof items);
    assert_string_equal(items, "second");
    /* A get whose client is gone gives its items back. */
    s_qget(b, 14, "gone", 1, 3000);
    fp_expect_none(b, 100);
    zsock_destroy(&b);
    dt_sleep_ms(200);
    s_qput(a, 15, "gone", "kept", 0);
    s_qreply(a, 15, "ok", NULL, 0);
    s_qget(a, 16, "gone", 1, 1000);
    s_qreply(a, 16, "ok", items, sizeof items);
    assert_string_equal(items, "kept");
    /* Bad names and requests. */
    s_qput(a, 17, "bad name", "x", 0);
    s_qreply(a, 17, "bad_request", NULL, 0);
    s_qget(a, 18, "jobs", 0, 0);
    s_qreply(a, 18, "bad_request", NULL, 0);
    zsock_destroy(&a);
    dist_master_destroy(&m);
}

/* ---- status ----------------------------------------------------------------------------- */

static void test_status_fields(void **state)
{
    (void)state;
    dist_master_opts_t o = { .name = "stat-master" };
    dist_master_t *m = fp_start(&o);
    zsock_t *w = fp_worker(m, "w", 2, 3, "t");
    zsock_t *c = fp_client(m, "c", NULL);
    fp_submit_ok(c, "t", (int[]){ 1, 2, 3, 4 }, 4);
    fp_task_t g[3];
    size_t n = 0;
    while (n < 3)
        n += fp_tasks(w, g + n, 3);
    fp_result(w, &g[0].id, 1, DIST__ST_OK, "v");
    fp_res_t r[1];
    fp_results(c, r, 1);
    assert_int_equal(fp_tasks(w, g, 1), 1);
    /* Two tasks refused (no worker runs "nope"): counted in refused. */
    fp_submit(c, "nope", (int[]){ 8, 9 }, 2, 0);
    size_t rej;
    assert_int_equal(fp_accepted(c, &rej, NULL, 0), 0);
    assert_int_equal(rej, 2);
    s_qput(c, 1, "named.q", "x", 0);
    s_qreply(c, 1, "ok", NULL, 0);

    dist__inmsg_t msg;
    fp_status(c, &msg);
    const msgpack_object *root = msg.root, *ma = dist_wire_map_get(root, "master");
    assert_true(fp_str_is(ma, "name", "stat-master"));
    assert_true(fp_str_is(ma, "version", DIST_VERSION_STRING));
    uint64_t v;
    assert_int_equal(dist__get_u64(ma, "uptime_s", &v), 0);
    assert_int_equal(dist_wire_map_get(ma, "store")->type, MSGPACK_OBJECT_NIL);

    const msgpack_object *ws;
    assert_int_equal(dist__get_array(root, "workers", &ws, &n), 0);
    assert_int_equal(n, 1);
    assert_true(fp_str_is(&ws[0], "name", "w"));
    assert_true(fp_str_is(&ws[0], "host", "testhost"));
    struct {
        const char *k;
        uint64_t want;
    } wf[] = { { "pid", 4242 }, { "slots", 2 }, { "capacity", 3 }, { "busy", 3 },
               { "running", 2 }, { "prefetched", 1 }, { "done", 1 }, { "failed", 0 } };
    for (size_t i = 0; i < sizeof wf / sizeof *wf; i++) {
        assert_int_equal(dist__get_u64(&ws[0], wf[i].k, &v), 0);
        if (v != wf[i].want)
            fail_msg("worker %s: %llu, expected %llu", wf[i].k, (unsigned long long)v,
                     (unsigned long long)wf[i].want);
    }
    assert_int_equal(dist__get_u64(&ws[0], "last_seen_ms", &v), 0);
    const msgpack_object *tn;
    assert_int_equal(dist__get_array(&ws[0], "tasks", &tn, &n), 0);
    assert_int_equal(n, 1);
    assert_true(dist_wire_str_eq(&tn[0], "t"));

    const msgpack_object *qs;
    assert_int_equal(dist__get_array(root, "queues", &qs, &n), 0);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        uint64_t depth, inf;
        assert_int_equal(dist__get_u64(&qs[i], "depth", &depth), 0);
        assert_int_equal(dist__get_u64(&qs[i], "in_flight", &inf), 0);
        if (fp_str_is(&qs[i], "name", "t")) {
            assert_true(fp_str_is(&qs[i], "kind", "task"));
            assert_int_equal(depth, 0);
            assert_int_equal(inf, 3);
            assert_int_equal(dist__get_u64(&qs[i], "workers", &v), 0);
            assert_int_equal(v, 1);
        } else {
            assert_null(dist_wire_map_get(&qs[i], "workers")); /* not for named queues */
            assert_true(fp_str_is(&qs[i], "name", "named.q"));
            assert_true(fp_str_is(&qs[i], "kind", "named"));
            assert_int_equal(depth, 1);
            assert_int_equal(inf, 0);
        }
    }
    assert_int_equal(dist__get_u64(root, "clients", &v), 0);
    assert_int_equal(v, 1);
    const msgpack_object *cs = dist_wire_map_get(root, "counters");
    const char *counters[] = { "submitted", "completed", "failed", "retried", "gave_up",
                               "dead_workers", "malformed", "refused_handshakes",
                               "results_waiting", "refused", "late_results" };
    uint64_t want[] = { 4, 1, 0, 0, 0, 0, 0, 0, 1, 2, 0 };
    for (size_t i = 0; i < sizeof counters / sizeof *counters; i++) {
        assert_int_equal(dist__get_u64(cs, counters[i], &v), 0);
        if (v != want[i])
            fail_msg("counter %s: %llu, expected %llu", counters[i], (unsigned long long)v,
                     (unsigned long long)want[i]);
    }
    /* Connections closed by the transport: counted, whatever their number here. */
    assert_int_equal(dist__get_u64(cs, "disconnected", &v), 0);
    const msgpack_object *rates = dist_wire_map_get(root, "rates");
    double d;
    assert_int_equal(dist_wire_get_f64(dist_wire_map_get(rates, "submitted_per_s"), &d), 0);
    assert_true(d > 0);
    assert_int_equal(dist_wire_get_f64(dist_wire_map_get(rates, "completed_per_s"), &d), 0);
    assert_true(d > 0);
    dist__inmsg_clear(&msg);
    /* STATUS without req is malformed. */
    assert_int_equal(dist__proto_send_empty(c, NULL, 0, DIST__CMD_STATUS), 0);
    fp_expect_error(c, "malformed");
    zsock_destroy(&c);
    zsock_destroy(&w);
    dist_master_destroy(&m);
}

/* ---- bad input ----------------------------------------------------------------------------- */

static void test_malformed_and_ban(void **state)
{
    (void)state;
    dist_master_t *m = fp_start(NULL);
    zsock_t *c = fp_client(m, "c", NULL);
    zsock_t *x = fp_connect(m);
    const char v1[] = "DST\x01";
    struct {
        int n;
        const char *f[4];
        size_t l[4];
    } bad[] = {
        { 2, { v1, "HELLO" }, { 4, 5 } },
        { 4, { v1, "HELLO", "\x80", "x" }, { 4, 5, 1, 1 } },
        { 3, { "XYZ\x01", "HELLO", "\x80" }, { 4, 5, 1 } },
        { 3, { v1, "NOPE", "\x80" }, { 4, 4, 1 } },
        { 3, { v1, "HELLO", "\x91\x01" }, { 4, 5, 2 } },
        { 3, { v1, "HELLO", "\xdd\xff\xff\xff\xff" }, { 4, 5, 5 } },
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        fp_raw(x, bad[i].n, bad[i].f, bad[i].l);
        fp_expect_error(x, "malformed");
    }
    assert_int_equal(fp_counter(c, "malformed"), 6);
    /* The master keeps serving, the same peer included. */
    fp_hello_client(x, "x");
    dist__inmsg_t msg;
    fp_expect(x, DIST__CMD_WELCOME, &msg);
    dist__inmsg_clear(&msg);
    /* More than 100 malformed in a row: banned, even for good messages. */
    zsock_t *y = fp_connect(m);
    for (int i = 0; i < 100; i++) {
        fp_raw(y, 1, (const char *const[]){ "junk" }, (size_t[]){ 4 });
        fp_expect_error(y, "malformed");
    }
    /* A command before HELLO is answered not_welcome (the master knows
     * the connection) and does not end the row. */
    assert_int_equal(dist__proto_send_empty(y, NULL, 0, DIST__CMD_HEARTBEAT), 0);
    fp_expect_error(y, "not_welcome");
    fp_raw(y, 1, (const char *const[]){ "junk" }, (size_t[]){ 4 });
    fp_expect_error(y, "banned");
    fp_hello_client(y, "y");
    fp_expect_error(y, "banned");
    assert_int_equal(fp_counter(c, "malformed"), 6 + 101);
    /* Still serving everyone else. */
    s_qput(x, 1, "q", "v", 0);
    s_qreply(x, 1, "ok", NULL, 0);
    zsock_destroy(&y);
    zsock_destroy(&x);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

static void test_unsupported_version(void **state)
{
    (void)state;
    dist_master_t *m = fp_start(NULL);
    zsock_t *x = fp_connect(m);
    fp_raw(x, 3, (const char *const[]){ "DST\x02", "HELLO", "\x80" }, (size_t[]){ 4, 5, 1 });
    dist__inmsg_t msg;
    fp_expect(x, DIST__CMD_ERROR, &msg);
    assert_true(fp_str_is(msg.root, "code", "unsupported_version"));
    assert_true(fp_str_is(msg.root, "error", "this master speaks protocol version 1"));
    dist__inmsg_clear(&msg);
    zsock_destroy(&x);
    dist_master_destroy(&m);
}

static void test_forbidden_commands(void **state)
{
    (void)state;
    dist_master_t *m = fp_start(NULL);
    zsock_t *w = fp_worker(m, "w", 1, 1, "t");
    zsock_t *c = fp_client(m, "c", NULL);
    /* A client sends worker commands, a worker client commands. */
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_buf(&pk);
    msgpack_pack_map(pk, 1);
    dist__pk_kv_u64(pk, "capacity", 5);
    fp_send(c, DIST__CMD_CREDIT, b);
    fp_expect_error(c, "forbidden");
    assert_int_equal(dist__proto_send_empty(c, NULL, 0, DIST__CMD_RESULTS), 0);
    fp_expect_error(c, "forbidden");
    fp_submit(w, "t", (int[]){ 1 }, 1, 0);
    fp_expect_error(w, "forbidden");
    assert_int_equal(dist__proto_send_empty(w, NULL, 0, DIST__CMD_STATUS), 0);
    fp_expect_error(w, "forbidden");
    /* Master-only commands. */
    assert_int_equal(dist__proto_send_empty(c, NULL, 0, DIST__CMD_TASKS), 0);
    fp_expect_error(c, "forbidden");
    /* Before HELLO: RECONNECT, results still taken. */
    zsock_t *u = fp_connect(m);
    fp_submit(u, "t", (int[]){ 1 }, 1, 0);
    dist__inmsg_t msg;
    fp_expect(u, DIST__CMD_RECONNECT, &msg);
    dist__inmsg_clear(&msg);
    assert_int_equal(fp_counter(c, "submitted"), 0);
    zsock_destroy(&u);
    zsock_destroy(&c);
    zsock_destroy(&w);
    dist_master_destroy(&m);
}

/* ---- the protocol's promises, one by one (docs/PROTOCOL.md) ---------------------------------- */

/* Submission is idempotent until the result is acknowledged: a repeated
 * id gets its result again, and after the ACK it is a new task. */
static void test_submit_idempotent_until_ack(void **state)
{
    (void)state;
    dist_master_t *m = fp_start(NULL);
    zsock_t *w = fp_worker(m, "w", 1, 1, "t");
    zsock_t *c = fp_client(m, "c", NULL);
    fp_submit_ok(c, "t", (int[]){ 5 }, 1);
    fp_task_t g[1];
    assert_int_equal(fp_tasks(w, g, 1), 1);
    fp_result(w, &g[0].id, 1, DIST__ST_OK, "first");
    fp_res_t r[1];
    fp_results(c, r, 1);
    assert_string_equal(r[0].text, "first");
    /* DONE, not acknowledged: accepted again, the result comes again,
     * nothing runs again. */
    fp_submit_ok(c, "t", (int[]){ 5 }, 1);
    fp_results(c, r, 1);
    assert_int_equal(fp_id_num(&r[0].id), 5);
    assert_string_equal(r[0].text, "first");
    fp_expect_none(w, 200);
    assert_int_equal(fp_counter(c, "submitted"), 1);
    /* Acknowledged: the master forgets the id, the same id runs again. */
    fp_ids_msg(c, DIST__CMD_ACK, &r[0].id, 1);
    fp_submit_ok(c, "t", (int[]){ 5 }, 1);
    assert_int_equal(fp_tasks(w, g, 1), 1);
    assert_int_equal(fp_id_num(&g[0].id), 5);
    assert_int_equal(g[0].attempt, 1);
    assert_int_equal(fp_counter(c, "submitted"), 2);
    zsock_destroy(&c);
    zsock_destroy(&w);
    dist_master_destroy(&m);
}

/* A body {key: [n ids fp_id(1..n)]}. */
static void s_many_ids(zsock_t *s, dist__cmd_t cmd, size_t n)
{
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_batch(&pk, "ids", n);
    for (size_t i = 0; i < n; i++) {
        dist__id_t id = fp_id((int)i + 1);
        dist__pk_id(pk, &id);
    }
    fp_send(s, cmd, b);
}

/* RESULTS, ACK and RETURN beyond max_batch are refused whole; ids that
 * are not bin16 are skipped; both count as malformed. */
static void test_batch_limits_and_bad_ids(void **state)
{
    (void)state;
    dist_master_t *m = fp_start(NULL);
    zsock_t *w = fp_worker(m, "w", 1, 1, "t");
    zsock_t *c = fp_client(m, "c", NULL);
    fp_submit_ok(c, "t", (int[]){ 1, 2 }, 2);
    fp_task_t g[1];
    assert_int_equal(fp_tasks(w, g, 1), 1);
    uint64_t bad = fp_counter(c, "malformed");

    /* RETURN of max_batch + 1 ids (the leased one among them): nothing
     * comes back. */
    s_many_ids(w, DIST__CMD_RETURN, DIST__MAX_BATCH + 1);
    fp_expect_error(w, "malformed");
    assert_int_equal(fp_counter(c, "malformed"), bad + 1);
    fp_expect_none(w, 200);
    /* RESULTS of max_batch + 1: none applied. */
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_batch(&pk, "results", DIST__MAX_BATCH + 1);
    for (size_t i = 0; i < DIST__MAX_BATCH + 1; i++) {
        dist__result_t res = { .id = g[0].id, .attempt = 1, .status = DIST__ST_OK,
                               .value = "\xc0", .value_len = 1 };
        dist__pack_result(pk, &res, true);
    }
    fp_send(w, DIST__CMD_RESULTS, b);
    fp_expect_error(w, "malformed");
    assert_int_equal(fp_counter(c, "malformed"), bad + 2);
    assert_int_equal(fp_counter(c, "completed"), 0);

    /* The worker finishes it properly. */
    fp_result(w, &g[0].id, 1, DIST__ST_OK, "x");
    fp_res_t r[1];
    fp_results(c, r, 1);
    /* ACK beyond max_batch: nothing acknowledged. */
    s_many_ids(c, DIST__CMD_ACK, DIST__MAX_BATCH + 1);
    fp_expect_error(c, "malformed");
    assert_int_equal(fp_counter(c, "results_waiting"), 1);
    assert_int_equal(fp_counter(c, "malformed"), bad + 3);
    /* ACK with a 3-byte id and an int besides the good one: the good one
     * is applied, the message counted once. */
    b = fp_batch(&pk, "ids", 3);
    dist__pk_bin(pk, "abc", 3);
    msgpack_pack_int(pk, 7);
    dist__pk_id(pk, &r[0].id);
    fp_send(c, DIST__CMD_ACK, b);
    fp_expect_error(c, "malformed");
    assert_int_equal(fp_counter(c, "results_waiting"), 0);
    assert_int_equal(fp_counter(c, "malformed"), bad + 4);
    /* RETURN with a bad id besides the leased one: the task comes back. */
    assert_int_equal(fp_tasks(w, g, 1), 1);
    b = fp_batch(&pk, "ids", 2);
    msgpack_pack_nil(pk);
    dist__pk_id(pk, &g[0].id);
    fp_send(w, DIST__CMD_RETURN, b);
    fp_expect_error(w, "malformed");
    assert_int_equal(fp_tasks(w, g, 1), 1);
    assert_int_equal(fp_id_num(&g[0].id), 2);
    assert_int_equal(fp_counter(c, "malformed"), bad + 5);
    zsock_destroy(&c);
    zsock_destroy(&w);
    dist_master_destroy(&m);
}

/* A connection without a session is answered at most 128 times a second:
 * a flood that does not read cannot pile up replies in the master. */
static void test_answers_without_session_limited(void **state)
{
    (void)state;
    dist_master_t *m = fp_start(NULL);
    zsock_t *c = fp_client(m, "c", NULL);
    zsock_t *x = fp_connect(m);
    uint64_t bad = fp_counter(c, "malformed");
    for (int i = 0; i < 400; i++)
        fp_raw(x, 3, (const char *const[]){ "DST\x01", "NOPE", "\x80" }, (size_t[]){ 4, 4, 1 });
    /* Every one is counted. */
    int64_t end = dt_now_ms() + FP_WAIT_MS;
    while (fp_counter(c, "malformed") < bad + 400 && dt_now_ms() < end)
        dt_sleep_ms(20);
    assert_int_equal(fp_counter(c, "malformed"), bad + 400);
    int answers = 0, banned = 0;
    dist__inmsg_t msg;
    while (fp_recv(x, 300, &msg) == 0) {
        answers++;
        banned += fp_str_is(msg.root, "code", "banned");
        dist__inmsg_clear(&msg);
    }
    /* 100 malformed, then banned; at most 128 a second (the 400 arrive
     * within a second or two). */
    assert_true(answers >= 101);
    assert_true(banned >= 1);
    assert_true(answers <= 3 * 128);
    zsock_destroy(&x);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

/* A frame above max_message closes its connection: counted and logged. */
static void test_oversized_frame_counted(void **state)
{
    (void)state;
    dist_master_opts_t o = { .max_message = 4096 };
    dist_master_t *m = fp_start(&o);
    zsock_t *c = fp_client(m, "c", NULL);
    uint64_t before = fp_counter(c, "disconnected");
    zsock_t *x = fp_client(m, "x", NULL);
    static char big[8192];
    memset(big, 0x80, sizeof big);
    fp_raw(x, 3, (const char *const[]){ "DST\x01", "STATUS", big }, (size_t[]){ 4, 6, sizeof big });
    int64_t end = dt_now_ms() + FP_WAIT_MS;
    while (fp_counter(c, "disconnected") == before && dt_now_ms() < end)
        dt_sleep_ms(20);
    assert_true(fp_counter(c, "disconnected") > before);
    zsock_destroy(&x);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

/* Hundreds of peers at once, then all of them leaving. */
static void test_many_peers(void **state)
{
    (void)state;
    dist_master_t *m = fp_start(NULL);
    enum { N = 200 };
    zsock_t *cs[N];
    for (int i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof name, "c%d", i);
        cs[i] = fp_connect(m);
        fp_hello_client(cs[i], name);
    }
    for (int i = 0; i < N; i++) {
        dist__inmsg_t msg;
        fp_expect(cs[i], DIST__CMD_WELCOME, &msg);
        dist__inmsg_clear(&msg);
    }
    dist__inmsg_t msg;
    fp_status(cs[0], &msg);
    uint64_t v;
    assert_int_equal(dist__get_u64(msg.root, "clients", &v), 0);
    assert_int_equal(v, N);
    dist__inmsg_clear(&msg);
    for (int i = 0; i < N; i++) {
        assert_int_equal(dist__proto_send_empty(cs[i], NULL, 0, DIST__CMD_BYE), 0);
        zsock_destroy(&cs[i]);
    }
    zsock_t *c = fp_client(m, "last", NULL);
    int64_t end = dt_now_ms() + FP_WAIT_MS;
    do {
        fp_status(c, &msg);
        assert_int_equal(dist__get_u64(msg.root, "clients", &v), 0);
        dist__inmsg_clear(&msg);
    } while (v != 1 && dt_now_ms() < end);
    assert_int_equal(v, 1);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

/* ---- random input ---------------------------------------------------------------------- */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint32_t s_rand(uint32_t n)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng % n);
}

static void s_rand_value(msgpack_packer *pk, const char *key, int depth);

/* A value for `key`: usually of the right type with values that collide
 * with real state (8 ids, 3 task names, small attempts), often not. */
static void s_rand_value(msgpack_packer *pk, const char *key, int depth)
{
    static const char *const names[] = { "a", "b", "c", "bad name", "" };
    static const char *const statuses[] = { "ok", "failed", "crashed", "timeout", "gave_up",
                                            "unknown_task", "bad_args", "too_large", "nope" };
    uint32_t pick = s_rand(10);
    if (pick < 7 && key) {
        if (!strcmp(key, "id")) {
            dist__id_t id = fp_id((int)s_rand(8));
            dist__pk_bin(pk, id.b, s_rand(8) ? 16 : s_rand(16));
            return;
        }
        if (!strcmp(key, "task") || !strcmp(key, "queue") || !strcmp(key, "name")) {
            dist__pk_str(pk, names[s_rand(5)]);
            return;
        }
        if (!strcmp(key, "status")) {
            dist__pk_str(pk, statuses[s_rand(9)]);
            return;
        }
        if (!strcmp(key, "role")) {
            dist__pk_str(pk, s_rand(2) ? "worker" : "client");
            return;
        }
        if (!strcmp(key, "args") || !strcmp(key, "value")) {
            dist__pk_bin(pk, "\x91\x01", s_rand(3));
            return;
        }
        if (!strcmp(key, "tasks") || !strcmp(key, "results") || !strcmp(key, "ids") ||
            !strcmp(key, "items")) {
            uint32_t n = s_rand(5);
            msgpack_pack_array(pk, n);
            static const char *const tkeys[] = { "id", "task", "args", "timeout_ms", "attempt",
                                                 "status", "value", "error" };
            for (uint32_t i = 0; i < n; i++) {
                if (!strcmp(key, "ids")) {
                    s_rand_value(pk, "id", depth + 1);
                } else if (!strcmp(key, "items")) {
                    dist__pk_bin(pk, "item", s_rand(5));
                } else if (depth < 3 && s_rand(8)) {
                    uint32_t k = s_rand(8);
                    msgpack_pack_map(pk, k);
                    for (uint32_t j = 0; j < k; j++) {
                        const char *tk = tkeys[s_rand(8)];
                        dist__pk_str(pk, tk);
                        s_rand_value(pk, tk, depth + 1);
                    }
                } else {
                    dist__pk_str(pk, names[s_rand(5)]);
                }
            }
            return;
        }
        msgpack_pack_uint64(pk, s_rand(4) ? s_rand(6) : s_rand(UINT32_MAX));
        return;
    }
    switch (s_rand(8)) {
    case 0: msgpack_pack_nil(pk); break;
    case 1: msgpack_pack_true(pk); break;
    case 2: msgpack_pack_int64(pk, -(int64_t)s_rand(1000) - 1); break;
    case 3: msgpack_pack_double(pk, 1.5); break;
    case 4: msgpack_pack_uint64(pk, UINT64_MAX - s_rand(3)); break;
    case 5: dist__pk_str(pk, "x"); break;
    case 6: msgpack_pack_array(pk, 0); break;
    default: msgpack_pack_map(pk, 0); break;
    }
}

/* A message of a random command (mostly one of the role's own, so that
 * the handlers get past the role check) with a random body. */
static void s_rand_message(zsock_t *s, bool worker)
{
    static const char *const keys[] = { "role", "name", "host", "pid", "slots", "capacity",
                                        "tasks", "results", "ids", "req", "queue", "items",
                                        "max", "timeout_ms", "version" };
    static const dist__cmd_t wcmds[] = { DIST__CMD_RESULTS, DIST__CMD_CREDIT, DIST__CMD_RETURN,
                                         DIST__CMD_HEARTBEAT };
    static const dist__cmd_t ccmds[] = { DIST__CMD_SUBMIT, DIST__CMD_ACK, DIST__CMD_QPUT,
                                         DIST__CMD_QGET, DIST__CMD_STATUS, DIST__CMD_HEARTBEAT };
    dist__cmd_t cmd = (dist__cmd_t)(1 + s_rand(DIST__CMD_COUNT - 1));
    if (s_rand(10) < 8)
        cmd = worker ? wcmds[s_rand(4)] : ccmds[s_rand(6)];
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_buf(&pk);
    uint32_t n = s_rand(6);
    msgpack_pack_map(pk, n);
    for (uint32_t i = 0; i < n; i++) {
        const char *k = keys[s_rand(15)];
        dist__pk_str(pk, k);
        s_rand_value(pk, k, 0);
    }
    assert_int_equal(dist__proto_send_buf(s, NULL, 0, cmd, b), 0);
    dist_wire_buf_destroy(&b);
}

/* Drops what the master sent, so the pipes never fill. */
static void s_drain(zsock_t *s)
{
    dist__inmsg_t m;
    dist_wire_limits_t lim = dist__body_limits(0);
    int rc;
    while ((rc = dist__proto_recv(s, false, &lim, &m)) != DIST_EAGAIN)
        if (rc == 0)
            dist__inmsg_clear(&m);
}

static void test_random_input(void **state)
{
    (void)state;
    /* DIST_TEST_SEED=n replays or varies the sequence, DIST_TEST_ROUNDS=n
     * makes it longer. */
    if (getenv("DIST_TEST_SEED"))
        g_rng = strtoull(getenv("DIST_TEST_SEED"), NULL, 10) * 0x9e3779b97f4a7c15ull + 1;
    dist_master_opts_t o = { .max_attempts = 2, .lease_ms = 50, .max_queued = 50 };
    dist_master_t *m = fp_start(&o);
    const char *names[] = { "a", "b" };
    zsock_t *p[5];
    for (int i = 0; i < 2; i++) {
        p[i] = fp_connect(m);
        fp_hello_worker(p[i], i ? "w1" : "w0", 2, 4, names, 2);
    }
    p[2] = fp_connect(m);
    fp_hello_client(p[2], "c0");
    p[3] = fp_connect(m);
    fp_hello_client(p[3], "c1");
    p[4] = fp_connect(m); /* a stranger */
    int rounds = getenv("DIST_TEST_ROUNDS") ? atoi(getenv("DIST_TEST_ROUNDS")) : 4000;
    for (int round = 0; round < rounds; round++) {
        uint32_t who = s_rand(5);
        zsock_t *s = p[who];
        if (round % 500 == 499)
            for (int i = 0; i < 2; i++)
                fp_hello_worker(p[i], i ? "w1" : "w0", 2, 4, names, 2);
        /* Now and then a valid submit, result or HELLO keeps state moving. */
        uint32_t kind = s_rand(20);
        if (kind == 0) {
            int id = (int)s_rand(8);
            fp_submit(s, names[s_rand(2)], &id, 1, s_rand(2) ? 0 : 20);
        } else if (kind == 1) {
            dist__id_t id = fp_id((int)s_rand(8));
            fp_result(s, &id, 1 + s_rand(3), (dist__status_t)s_rand(DIST__ST_COUNT), "r");
        } else if (kind == 2) {
            fp_hello_client(s, s_rand(2) ? "c0" : "c1");
        } else {
            s_rand_message(s, who < 2);
        }
        if (round % 64 == 0) {
            for (int i = 0; i < 5; i++)
                s_drain(p[i]);
            dt_sleep_ms(1);
        }
    }
    for (int i = 0; i < 5; i++)
        zsock_destroy(&p[i]);
    /* Still serving. */
    zsock_t *c = fp_client(m, "after", NULL);
    dist__inmsg_t msg;
    fp_status(c, &msg);
    const msgpack_object_kv *kv;
    size_t n;
    assert_int_equal(dist_wire_get_map(dist_wire_map_get(msg.root, "counters"), &kv, &n), 0);
    for (size_t i = 0; i < n && getenv("DIST_TEST_LOG"); i++)
        fprintf(stderr, "%.*s=%llu\n", (int)kv[i].key.via.str.size, kv[i].key.via.str.ptr,
                (unsigned long long)kv[i].val.via.u64);
    dist__inmsg_clear(&msg);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

/* ---- the program --------------------------------------------------------------------------- */

#ifdef DIST_MASTER_BIN
static void test_program(void **state)
{
    (void)state;
    char out[8192];
    int fd;
    const dt_spawn_opts_t piped = { .out = { DT_IO_PIPE, NULL, &fd }, .err = { DT_IO_STDOUT } };
    const dt_spawn_opts_t quiet = { .out = { DT_IO_NULL }, .err = { DT_IO_NULL } };
    pid_t pid = dt_spawn((const char *const[]){ DIST_MASTER_BIN, "--help", NULL }, &piped);
    assert_true(dt_read_until(fd, "Exit status", out, sizeof out, 5000));
    assert_non_null(strstr(out, "--heartbeat-timeout MS"));
    assert_non_null(strstr(out, "(default 3000)"));
    close(fd);
    assert_int_equal(dt_wait(pid, 10000), 0);

    pid = dt_spawn((const char *const[]){ DIST_MASTER_BIN, "--version", NULL }, &piped);
    assert_true(dt_read_until(fd, DIST_VERSION_STRING, out, sizeof out, 5000));
    close(fd);
    assert_int_equal(dt_wait(pid, 10000), 0);

    pid = dt_spawn((const char *const[]){ DIST_MASTER_BIN, "--no-such-flag", NULL }, &piped);
    assert_true(dt_read_until(fd, "--help", out, sizeof out, 5000));
    close(fd);
    assert_int_equal(dt_wait(pid, 10000), 2);
    const char *const bad1[] = { DIST_MASTER_BIN, "--max-attempts", "x", NULL };
    const char *const bad2[] = { DIST_MASTER_BIN, "--log-level", "loud", NULL };
    assert_int_equal(dt_wait(dt_spawn(bad1, &quiet), 10000), 2);
    assert_int_equal(dt_wait(dt_spawn(bad2, &quiet), 10000), 2);
    /* One endpoint per master: a second --bind is a usage error, not a
     * silent replacement of the first. */
    pid = dt_spawn((const char *const[]){ DIST_MASTER_BIN, "--bind", "tcp://127.0.0.1:0", "--bind",
                                          "ipc:///tmp/x", NULL },
                   &piped);
    /* Up to the end of the message: the pipe closed early would be a
     * SIGPIPE for the rest of it. */
    assert_true(dt_read_until(fd, "--help", out, sizeof out, 5000));
    assert_non_null(strstr(out, "--bind given twice"));
    close(fd);
    assert_int_equal(dt_wait(pid, 10000), 2);

    /* A taken endpoint: exit 1 with the reason. */
    zsock_t *taken = zsock_new(ZMQ_ROUTER);
    assert_int_equal(zmq_bind(zsock_resolve(taken), "tcp://127.0.0.1:0"), 0);
    char ep[256];
    size_t eplen = sizeof ep;
    assert_int_equal(zmq_getsockopt(zsock_resolve(taken), ZMQ_LAST_ENDPOINT, ep, &eplen), 0);
    pid = dt_spawn((const char *const[]){ DIST_MASTER_BIN, "--bind", ep, NULL }, &piped);
    assert_true(dt_read_until(fd, "Address already in use", out, sizeof out, 5000));
    assert_non_null(strstr(out, "cannot bind"));
    close(fd);
    assert_int_equal(dt_wait(pid, 10000), 1);
    zsock_destroy(&taken);

    /* A metrics port that is taken: the master fails, and never said it
     * was listening (scripts wait for that line). */
    int busy = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t salen = sizeof sa;
    assert_int_equal(bind(busy, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(busy, 1), 0);
    assert_int_equal(getsockname(busy, (struct sockaddr *)&sa, &salen), 0);
    char metrics[64];
    snprintf(metrics, sizeof metrics, "127.0.0.1:%d", ntohs(sa.sin_port));
    pid = dt_spawn((const char *const[]){ DIST_MASTER_BIN, "--bind", "tcp://127.0.0.1:0",
                                          "--metrics", metrics, NULL },
                   &piped);
    assert_int_equal(dt_wait(pid, 10000), 1);
    dt_read_until(fd, "\x01never", out, sizeof out, 2000); /* all of it, to the end */
    close(fd);
    close(busy);
    assert_non_null(strstr(out, metrics));
    assert_null(strstr(out, "listening on"));

    /* Serving, then SIGTERM: a clean exit 0. */
    const char *const serve[] = { DIST_MASTER_BIN, "--bind", "tcp://127.0.0.1:0", "--name", "prog",
                                  NULL };
    pid = dt_spawn(serve, &piped);
    assert_true(dt_read_until(fd, "listening on", out, sizeof out, 5000));
    char *at = strstr(out, "tcp://127.0.0.1:");
    assert_non_null(at);
    char url[64];
    assert_int_equal(sscanf(at, "%63[^ ]", url), 1);
    zsock_t *c = zsock_new(ZMQ_DEALER);
    dist__sock_setup(c, false, NULL);
    assert_int_equal(zsock_connect(c, "%s", url), 0);
    fp_hello_client(c, "pc");
    dist__inmsg_t msg;
    fp_expect(c, DIST__CMD_WELCOME, &msg);
    assert_true(fp_str_is(msg.root, "master", "prog"));
    dist__inmsg_clear(&msg);
    /* Listening is said once everything is set up: the metrics endpoint
     * too (a master that fails there never said it). */
    assert_non_null(strstr(out, "instance "));
    /* The client hears the master go. */
    dt_signal(pid, SIGTERM);
    fp_expect(c, DIST__CMD_BYE, &msg);
    dist__inmsg_clear(&msg);
    zsock_destroy(&c);
    assert_true(dt_read_until(fd, "stopped by SIGTERM", out, sizeof out, 5000));
    close(fd);
    assert_int_equal(dt_wait(pid, 10000), 0);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_welcome_and_reconnect, dt_teardown),
        cmocka_unit_test_teardown(test_instance_and_bye, dt_teardown),
        cmocka_unit_test_teardown(test_unserved_task_names, dt_teardown),
        cmocka_unit_test_teardown(test_options_refused, dt_teardown),
        cmocka_unit_test_teardown(test_metrics_endpoint, dt_teardown),
        cmocka_unit_test_teardown(test_metrics_names_bounded, dt_teardown),
        cmocka_unit_test_teardown(test_dispatch_only_to_announcing_workers, dt_teardown),
        cmocka_unit_test_teardown(test_credit_batching_and_credit_message, dt_teardown),
        cmocka_unit_test_teardown(test_spread_to_idle_worker, dt_teardown),
        cmocka_unit_test_teardown(test_submit_idempotent_and_rejections, dt_teardown),
        cmocka_unit_test_teardown(test_max_results_per_client, dt_teardown),
        cmocka_unit_test_teardown(test_results_redelivered_until_ack, dt_teardown),
        cmocka_unit_test_teardown(test_worker_death_requeues, dt_teardown),
        cmocka_unit_test_teardown(test_gave_up_lists_every_attempt, dt_teardown),
        cmocka_unit_test_teardown(test_lookup_attempts_after_finish, dt_teardown),
        cmocka_unit_test_teardown(test_late_results, dt_teardown),
        cmocka_unit_test_teardown(test_return_and_lease_expiry, dt_teardown),
        cmocka_unit_test_teardown(test_priorities_and_delays, dt_teardown),
        cmocka_unit_test_teardown(test_cancel_lookup_fetch, dt_teardown),
        cmocka_unit_test_teardown(test_retry_policies, dt_teardown),
        cmocka_unit_test_teardown(test_result_ttl_and_dead_letters, dt_teardown),
        cmocka_unit_test_teardown(test_named_queues, dt_teardown),
        cmocka_unit_test_teardown(test_status_fields, dt_teardown),
        cmocka_unit_test_teardown(test_malformed_and_ban, dt_teardown),
        cmocka_unit_test_teardown(test_unsupported_version, dt_teardown),
        cmocka_unit_test_teardown(test_forbidden_commands, dt_teardown),
        cmocka_unit_test_teardown(test_submit_idempotent_until_ack, dt_teardown),
        cmocka_unit_test_teardown(test_batch_limits_and_bad_ids, dt_teardown),
        cmocka_unit_test_teardown(test_answers_without_session_limited, dt_teardown),
        cmocka_unit_test_teardown(test_oversized_frame_counted, dt_teardown),
        cmocka_unit_test_teardown(test_many_peers, dt_teardown),
        cmocka_unit_test_teardown(test_random_input, dt_teardown),
#ifdef DIST_MASTER_BIN
        cmocka_unit_test_teardown(test_program, dt_teardown),
#endif
    };
    /* DIST_TEST_FILTER=test_random_input runs the matching tests only. */
    if (getenv("DIST_TEST_FILTER"))
        cmocka_set_test_filter(getenv("DIST_TEST_FILTER"));
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    zsys_shutdown();
    return rc;
}

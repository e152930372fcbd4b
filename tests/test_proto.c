/* test_proto.c - protocol version 1 framing and bodies (proto_internal.h):
 * a ROUTER and a DEALER over inproc exchange good and bad messages. */
#include <czmq.h>
#include <dist.h>
#include <string.h>
#include <zmq.h>

#include "proto_internal.h"
#include "testutil.h"

struct pair {
    zsock_t *router, *dealer;
};

static struct pair s_pair(void)
{
    static int n;
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://proto-%d", n++);
    struct pair p;
    p.router = zsock_new(ZMQ_ROUTER);
    dist__sock_setup(p.router, true, NULL);
    assert_int_equal(zsock_bind(p.router, "%s", ep), 0);
    p.dealer = zsock_new(ZMQ_DEALER);
    dist__sock_setup(p.dealer, false, NULL);
    assert_int_equal(zsock_connect(p.dealer, "%s", ep), 0);
    return p;
}

static void s_free(struct pair *p)
{
    zsock_destroy(&p->dealer);
    zsock_destroy(&p->router);
}

/* Receives on the router, waiting up to a second for something. */
static int s_recv(zsock_t *s, bool router, dist__inmsg_t *m)
{
    zpoller_t *pl = zpoller_new(s, NULL);
    zpoller_wait(pl, 1000);
    zpoller_destroy(&pl);
    dist_wire_limits_t lim = dist__body_limits(0);
    return dist__proto_recv(s, router, &lim, m);
}

/* Sends raw frames from the dealer. */
static void s_raw(zsock_t *s, int nframes, const char *const *frames, const size_t *lens)
{
    for (int i = 0; i < nframes; i++)
        zmq_send(zsock_resolve(s), frames[i], lens[i], i + 1 < nframes ? ZMQ_SNDMORE : 0);
}

static void test_hello_round_trip(void **state)
{
    (void)state;
    struct pair p = s_pair();
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    msgpack_packer *pk = dist_wire_buf_packer(b);
    msgpack_pack_map(pk, 5);
    dist__pk_kv_str(pk, "role", "worker");
    dist__pk_kv_str(pk, "name", "w1");
    dist__pk_kv_str(pk, "host", "h");
    dist__pk_kv_u64(pk, "pid", 42);
    dist__pk_str(pk, "tasks");
    msgpack_pack_array(pk, 2);
    dist__pk_str(pk, "a.b");
    dist__pk_str(pk, "c");
    assert_int_equal(dist__proto_send_buf(p.dealer, NULL, 0, DIST__CMD_HELLO, b), 0);
    dist__inmsg_t m;
    assert_int_equal(s_recv(p.router, true, &m), 0);
    assert_int_equal(m.cmd, DIST__CMD_HELLO);
    assert_true(m.rid_len > 0);
    const char *s;
    size_t n;
    assert_int_equal(dist__get_str(m.root, "role", &s, &n), 0);
    assert_int_equal(n, strlen("worker"));
    assert_memory_equal(s, "worker", n);
    uint32_t pid;
    assert_int_equal(dist__get_u32(m.root, "pid", &pid), 0);
    assert_int_equal(pid, 42);
    const msgpack_object *items;
    assert_int_equal(dist__get_array(m.root, "tasks", &items, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(dist__get_u32(m.root, "missing", &pid), DIST_EPROTO);
    uint32_t keep = 7;
    assert_int_equal(dist__opt_u32(m.root, "missing", &keep), 0);
    assert_int_equal(keep, 7);
    assert_int_equal(dist__opt_u32(m.root, "name", &keep), DIST_EPROTO);

    /* Reply through the routing id; the dealer sees a 3-frame message. */
    uint8_t rid[256];
    size_t rlen = m.rid_len;
    memcpy(rid, m.rid, rlen);
    dist__inmsg_clear(&m);
    assert_int_equal(dist__proto_send_empty(p.router, rid, rlen, DIST__CMD_WELCOME), 0);
    assert_int_equal(s_recv(p.dealer, false, &m), 0);
    assert_int_equal(m.cmd, DIST__CMD_WELCOME);
    dist__inmsg_clear(&m);

    /* A vanished routing id fails loudly (ROUTER_MANDATORY). */
    assert_int_equal(dist__proto_send_empty(p.router, "nobody", 6, DIST__CMD_HEARTBEAT), -EHOSTUNREACH);
    assert_int_equal(s_recv(p.dealer, false, &m), DIST_EAGAIN);
    dist_wire_buf_destroy(&b);
    s_free(&p);
}

static void test_bad_messages_are_dropped_with_a_reason(void **state)
{
    (void)state;
    struct pair p = s_pair();
    dist__inmsg_t m;
    const char v1[] = "DST\x01", v2[] = "DST\x02";
    const size_t four = 4;
    struct {
        int n;
        const char *f[6];
        size_t l[6];
        dist__bad_t bad;
    } cases[] = {
        { 2, { v1, "HELLO" }, { four, 5 }, DIST__BAD_FRAMES },
        { 5, { v1, "HELLO", "\x80", "x", "y" }, { four, 5, 1, 1, 1 }, DIST__BAD_FRAMES },
        { 3, { "XYZ\x01", "HELLO", "\x80" }, { four, 5, 1 }, DIST__BAD_SIGNATURE },
        { 3, { "DS", "HELLO", "\x80" }, { 2, 5, 1 }, DIST__BAD_SIGNATURE },
        { 3, { v2, "HELLO", "\x80" }, { four, 5, 1 }, DIST__BAD_VERSION },
        { 3, { v1, "HELO", "\x80" }, { four, 4, 1 }, DIST__BAD_COMMAND },
        { 3, { v1, "", "\x80" }, { four, 0, 1 }, DIST__BAD_COMMAND },
        { 3, { v1, "HEARTBEATHEARTBEAT", "\x80" }, { four, 18, 1 }, DIST__BAD_COMMAND },
        { 3, { v1, "HELLO", "\x91\x01" }, { four, 5, 2 }, DIST__BAD_BODY },    /* not a map */
        { 3, { v1, "HELLO", "\xdf\xff\xff\xff\xff" }, { four, 5, 5 }, DIST__BAD_BODY }, /* lies */
        { 3, { v1, "HELLO", "\x80\x80" }, { four, 5, 2 }, DIST__BAD_BODY },    /* trailing */
        { 3, { v1, "HELLO", "" }, { four, 5, 0 }, DIST__BAD_BODY },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        s_raw(p.dealer, cases[i].n, cases[i].f, cases[i].l);
        assert_int_equal(s_recv(p.router, true, &m), DIST_EPROTO);
        if (m.bad != cases[i].bad)
            fail_msg("case %zu: reason %d, expected %d", i, m.bad, cases[i].bad);
        assert_true(m.rid_len > 0);
        if (cases[i].bad == DIST__BAD_VERSION)
            assert_int_equal(m.version, 2);
        assert_null(m.body);
    }
    /* A message of 100,000 frames is read and dropped, and the next good
     * message still comes through. */
    void *h = zsock_resolve(p.dealer);
    zmq_send(h, v1, 4, ZMQ_SNDMORE);
    for (int i = 0; i < 100000; i++)
        zmq_send(h, "x", 1, ZMQ_SNDMORE);
    zmq_send(h, "x", 1, 0);
    assert_int_equal(s_recv(p.router, true, &m), DIST_EPROTO);
    assert_int_equal(m.bad, DIST__BAD_FRAMES);
    assert_int_equal(dist__proto_send_empty(p.dealer, NULL, 0, DIST__CMD_HEARTBEAT), 0);
    assert_int_equal(s_recv(p.router, true, &m), 0);
    assert_int_equal(m.cmd, DIST__CMD_HEARTBEAT);
    dist__inmsg_clear(&m);

    /* The unsupported-version reply keeps its form. */
    uint8_t rid[16];
    s_raw(p.dealer, 3, (const char *const[]){ v2, "HELLO", "\x80" }, (size_t[]){ 4, 5, 1 });
    assert_int_equal(s_recv(p.router, true, &m), DIST_EPROTO);
    memcpy(rid, m.rid, m.rid_len);
    assert_int_equal(dist__proto_send_bad_version(p.router, rid, m.rid_len), 0);
    assert_int_equal(s_recv(p.dealer, false, &m), 0);
    assert_int_equal(m.cmd, DIST__CMD_ERROR);
    const char *code;
    size_t n;
    assert_int_equal(dist__get_str(m.root, "code", &code, &n), 0);
    assert_int_equal(n, strlen("unsupported_version"));
    assert_memory_equal(code, "unsupported_version", n);
    dist__inmsg_clear(&m);
    s_free(&p);
}

static void test_task_and_result_bodies(void **state)
{
    (void)state;
    dist__task_t t = { .attempt = 3, .task = "mod.fn", .task_len = 6, .args = "\x91\x05",
                       .args_len = 2, .timeout_ms = 1500 };
    assert_int_equal(dist__id_random(&t.id), 0);
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    dist__pack_task(dist_wire_buf_packer(b), &t, true);
    size_t len;
    const void *d = dist_wire_buf_data(b, &len);
    dist_wire_msg_t *m = dist_wire_msg_decode(d, len, NULL, NULL);
    dist__task_t back;
    assert_int_equal(dist__parse_task(dist_wire_msg_root(m), true, &back), 0);
    assert_true(dist__id_eq(&back.id, &t.id));
    assert_int_equal(back.attempt, 3);
    assert_int_equal(back.timeout_ms, 1500);
    assert_memory_equal(back.task, "mod.fn", 6);
    assert_int_equal(back.args_len, 2);
    /* Without the attempt it is a SUBMIT task, and TASKS needs one. */
    dist_wire_msg_destroy(&m);
    dist_wire_buf_reset(b);
    dist__pack_task(dist_wire_buf_packer(b), &t, false);
    d = dist_wire_buf_data(b, &len);
    m = dist_wire_msg_decode(d, len, NULL, NULL);
    assert_int_equal(dist__parse_task(dist_wire_msg_root(m), false, &back), 0);
    assert_int_equal(dist__parse_task(dist_wire_msg_root(m), true, &back), DIST_EPROTO);
    dist_wire_msg_destroy(&m);

    dist__result_t r = { .id = t.id, .attempt = 2, .status = DIST__ST_CRASHED,
                         .error = "task x: process 9 was killed by signal 9", .error_len = 40 };
    dist_wire_buf_reset(b);
    dist__pack_result(dist_wire_buf_packer(b), &r, true);
    d = dist_wire_buf_data(b, &len);
    m = dist_wire_msg_decode(d, len, NULL, NULL);
    dist__result_t rb;
    assert_int_equal(dist__parse_result(dist_wire_msg_root(m), true, &rb), 0);
    assert_int_equal(rb.status, DIST__ST_CRASHED);
    assert_false(dist__status_final(rb.status));
    assert_int_equal(dist__status_errcode(rb.status), DIST_ECRASHED);
    assert_int_equal(rb.error_len, 40);
    dist_wire_msg_destroy(&m);

    /* Bad task maps: an id of 3 bytes, no args, a name with a space. */
    for (int i = 0; i < 3; i++) {
        dist_wire_buf_reset(b);
        msgpack_packer *pk = dist_wire_buf_packer(b);
        msgpack_pack_map(pk, i == 1 ? 2 : 3);
        dist__pk_str(pk, "id");
        dist__pk_bin(pk, "0123456789abcdef", i == 0 ? 3 : 16);
        dist__pk_kv_str(pk, "task", i == 2 ? "x y" : "x");
        if (i != 1)
            dist__pk_kv_bin(pk, "args", "\x90", 1);
        d = dist_wire_buf_data(b, &len);
        m = dist_wire_msg_decode(d, len, NULL, NULL);
        assert_non_null(m);
        assert_int_equal(dist__parse_task(dist_wire_msg_root(m), false, &back), DIST_EPROTO);
        dist_wire_msg_destroy(&m);
    }
    dist_wire_buf_destroy(&b);

    for (int st = 0; st < DIST__ST_COUNT; st++) {
        const char *name = dist__status_name((dist__status_t)st);
        assert_int_equal(dist__status_parse(name, strlen(name)), st);
    }
    assert_int_equal(dist__status_parse("nope", 4), DIST__ST_COUNT);
    assert_int_equal(dist__status_from_code(DIST_ECRASHED), DIST__ST_CRASHED);
    assert_int_equal(dist__status_from_code(DIST_ETASK), DIST__ST_FAILED);
    char hex[33];
    dist__id_t z = { { 0xab } };
    dist__id_hex(&z, hex);
    assert_string_equal(hex, "ab000000000000000000000000000000");
    assert_true(dist__name_ok("dist.echo", 9));
    assert_false(dist__name_ok("", 0));
    assert_false(dist__peer_name_ok("a\0b", 3));
    assert_int_equal(dist__zmq_version_ok(NULL, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_round_trip),
        cmocka_unit_test(test_bad_messages_are_dropped_with_a_reason),
        cmocka_unit_test(test_task_and_result_bodies),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    zsys_shutdown();
    return rc;
}

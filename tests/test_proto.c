/* test_proto.c - protocol version 1 framing and bodies (proto_internal.h):
 * a ROUTER and a DEALER over inproc exchange good and bad messages. */
#include <czmq.h>
#include <dist.h>
#include <stdarg.h>
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


/* ---- typed bodies (proto_msg.c) ------------------------------------------------ */

/* Packs with fn into a fresh buffer and decodes it: the caller parses the
 * root and destroys the message. */
static dist_wire_msg_t *s_decode(dist_wire_buf_t *b)
{
    size_t len;
    const void *d = dist_wire_buf_data(b, &len);
    assert_int_equal(dist_wire_buf_status(b), 0);
    dist_wire_msg_t *m = dist_wire_msg_decode(d, len, NULL, NULL);
    assert_non_null(m);
    return m;
}

/* A map packed by hand: n pairs of keys and values given as a printf-like
 * list of (key, kind, value): 's' str, 'u' u64, 'b' bin of 16 bytes,
 * 'i' an int that is negative (wrong type for u32 fields). */
static dist_wire_msg_t *s_map(dist_wire_buf_t *b, int n, ...)
{
    dist_wire_buf_reset(b);
    msgpack_packer *pk = dist_wire_buf_packer(b);
    msgpack_pack_map(pk, (size_t)n);
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++) {
        const char *key = va_arg(ap, const char *);
        int kind = va_arg(ap, int);
        dist__pk_str(pk, key);
        if (kind == 's') {
            const char *v = va_arg(ap, const char *);
            dist__pk_str(pk, v);
        } else if (kind == 'u') {
            msgpack_pack_uint64(pk, va_arg(ap, uint64_t));
        } else if (kind == 'b') {
            dist__pk_bin(pk, "0123456789abcdef", 16);
        } else {
            msgpack_pack_int64(pk, -1);
        }
    }
    va_end(ap);
    return s_decode(b);
}

static void test_hello_body(void **state)
{
    (void)state;
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    dist__str_t names[2] = { { "dist.echo", 9 }, { "m.f", 3 } };
    dist__hello_t h = { .role = DIST__PEER_WORKER, .name = { "w1", 2 }, .host = { "h\xc3\xa9", 3 },
                        .version = { "1.0", 3 }, .pid = 42, .slots = 4, .capacity = 8,
                        .names = names, .ntasks = 2 };
    dist__pack_hello(dist_wire_buf_packer(b), &h);
    dist_wire_msg_t *m = s_decode(b);
    dist__hello_t back;
    const char *why = "x";
    assert_int_equal(dist__parse_hello(dist_wire_msg_root(m), &back, &why), 0);
    assert_null(why);
    assert_int_equal(back.role, DIST__PEER_WORKER);
    assert_int_equal(back.name.n, 2);
    assert_memory_equal(back.host.s, "h\xc3\xa9", 3);
    assert_memory_equal(back.version.s, "1.0", 3);
    assert_int_equal(back.pid, 42);
    assert_int_equal(back.slots, 4);
    assert_int_equal(back.capacity, 8);
    assert_int_equal(back.ntasks, 2);
    assert_int_equal(back.tasks[1].via.str.size, 3);
    dist_wire_msg_destroy(&m);

    /* A client needs no slots, capacity or tasks; no version is fine. */
    dist__hello_t c = { .role = DIST__PEER_CLIENT, .name = { "c", 1 }, .host = { "h", 1 }, .pid = 7 };
    dist_wire_buf_reset(b);
    dist__pack_hello(dist_wire_buf_packer(b), &c);
    m = s_decode(b);
    assert_int_equal(dist__parse_hello(dist_wire_msg_root(m), &back, NULL), 0);
    assert_int_equal(back.role, DIST__PEER_CLIENT);
    assert_int_equal(back.version.n, 0);
    dist_wire_msg_destroy(&m);

    /* Refusals: each names the field. */
    static const struct {
        const char *name, *host, *role, *field;
    } bad[] = {
        { "c", "", "client", "host" },            /* an empty host */
        { "", "h", "client", "name" },            /* an empty name */
        { "c", "h\xff", "client", "host" },       /* not UTF-8 */
        { "c\xc0\x80", "h", "client", "name" },   /* an overlong NUL */
        { "c", "h", "boss", "role" },
        { "c", "h", "worker", "slots" },          /* a worker without slots */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        m = s_map(b, 4, "role", 's', bad[i].role, "name", 's', bad[i].name, "host", 's',
                  bad[i].host, "pid", 'u', (uint64_t)1);
        why = NULL;
        assert_int_equal(dist__parse_hello(dist_wire_msg_root(m), &back, &why), DIST_EPROTO);
        assert_non_null(why);
        assert_non_null(strstr(why, bad[i].field));
        dist_wire_msg_destroy(&m);
    }
    /* A NUL inside, a name of 129 bytes, a negative pid, a bad task name. */
    char longname[130];
    memset(longname, 'a', 129);
    longname[129] = 0;
    m = s_map(b, 4, "role", 's', "client", "name", 's', longname, "host", 's', "h", "pid", 'u',
              (uint64_t)1);
    assert_int_equal(dist__parse_hello(dist_wire_msg_root(m), &back, NULL), DIST_EPROTO);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 4, "role", 's', "client", "name", 's', "c", "host", 's', "h", "pid", 'i');
    assert_int_equal(dist__parse_hello(dist_wire_msg_root(m), &back, &why), DIST_EPROTO);
    assert_non_null(strstr(why, "pid"));
    dist_wire_msg_destroy(&m);
    dist__str_t badnames[1] = { { "a b", 3 } };
    h.names = badnames;
    h.ntasks = 1;
    dist_wire_buf_reset(b);
    dist__pack_hello(dist_wire_buf_packer(b), &h);
    m = s_decode(b);
    assert_int_equal(dist__parse_hello(dist_wire_msg_root(m), &back, &why), DIST_EPROTO);
    assert_non_null(strstr(why, "task names"));
    dist_wire_msg_destroy(&m);
    dist_wire_buf_reset(b);
    msgpack_packer *pk = dist_wire_buf_packer(b);
    msgpack_pack_map(pk, 4);
    dist__pk_kv_str(pk, "role", "client");
    dist__pk_str(pk, "name");
    dist__pk_strn(pk, "a\0b", 3);
    dist__pk_kv_str(pk, "host", "h");
    dist__pk_kv_u64(pk, "pid", 1);
    m = s_decode(b);
    assert_int_equal(dist__parse_hello(dist_wire_msg_root(m), &back, NULL), DIST_EPROTO);
    dist_wire_msg_destroy(&m);
    dist_wire_buf_destroy(&b);
}

static void test_welcome_body_and_clamping(void **state)
{
    (void)state;
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    dist__welcome_t w = { .master = { "m:1", 3 }, .version = { "1.2", 3 }, .heartbeat_ms = 500,
                          .heartbeat_timeout_ms = 1500, .max_message = 1 << 20, .max_batch = 100,
                          .pending_results = 9, .client = true,
                          .instance = { "0123456789abcdef", 16 } };
    dist__pack_welcome(dist_wire_buf_packer(b), &w);
    dist_wire_msg_t *m = s_decode(b);
    dist__welcome_t back;
    assert_int_equal(dist__parse_welcome(dist_wire_msg_root(m), &back), 0);
    assert_memory_equal(back.master.s, "m:1", 3);
    assert_int_equal(back.instance.n, 16);
    assert_memory_equal(back.instance.s, "0123456789abcdef", 16);
    assert_int_equal(back.heartbeat_ms, 500);
    assert_int_equal(back.heartbeat_timeout_ms, 1500);
    assert_int_equal(back.max_message, 1 << 20);
    assert_int_equal(back.max_batch, 100);
    assert_int_equal(back.pending_results, 9);
    assert_true(back.client);
    dist_wire_msg_destroy(&m);

    /* An empty WELCOME: every default. */
    m = s_map(b, 0);
    assert_int_equal(dist__parse_welcome(dist_wire_msg_root(m), &back), 0);
    assert_int_equal(back.heartbeat_ms, DIST__HEARTBEAT_MS);
    assert_int_equal(back.heartbeat_timeout_ms, DIST__HEARTBEAT_TIMEOUT_MS);
    assert_int_equal(back.max_batch, DIST__MAX_BATCH);
    assert_int_equal(back.max_message, DIST__MAX_MESSAGE_DEFAULT);
    assert_int_equal(back.master.n, 0);
    assert_int_equal(back.instance.n, 0);
    assert_false(back.client);
    dist_wire_msg_destroy(&m);

    /* An instance that is not 16 lowercase hex digits: the wrong type,
     * and unknown; an empty one is not packed at all. */
    const char *bad_instances[] = { "0123456789ABCDEF", "0123456789abcde", "0123456789abcdefa",
                                    "0123456789abcdeg" };
    for (size_t i = 0; i < sizeof bad_instances / sizeof *bad_instances; i++) {
        m = s_map(b, 1, "instance", 's', bad_instances[i]);
        assert_int_equal(dist__parse_welcome(dist_wire_msg_root(m), &back), DIST_EPROTO);
        assert_int_equal(back.instance.n, 0);
        dist_wire_msg_destroy(&m);
    }
    m = s_map(b, 1, "instance", 'u', (uint64_t)7);
    assert_int_equal(dist__parse_welcome(dist_wire_msg_root(m), &back), DIST_EPROTO);
    dist_wire_msg_destroy(&m);
    w.instance = (dist__str_t){ "", 0 };
    dist_wire_buf_reset(b);
    dist__pack_welcome(dist_wire_buf_packer(b), &w);
    m = s_decode(b);
    assert_null(dist_wire_map_get(dist_wire_msg_root(m), "instance"));
    assert_int_equal(dist_wire_msg_root(m)->via.map.size, 7);
    dist_wire_msg_destroy(&m);

    /* Out of bounds: clamped. A timeout below the interval is raised to it. */
    m = s_map(b, 4, "heartbeat_ms", 'u', (uint64_t)1, "heartbeat_timeout_ms", 'u', (uint64_t)5,
              "max_batch", 'u', (uint64_t)1000000, "max_message", 'u', (uint64_t)10);
    assert_int_equal(dist__parse_welcome(dist_wire_msg_root(m), &back), 0);
    assert_int_equal(back.heartbeat_ms, 10);
    assert_int_equal(back.heartbeat_timeout_ms, 10);
    assert_int_equal(back.max_batch, DIST__MAX_BATCH);
    assert_int_equal(back.max_message, 4096);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 2, "heartbeat_ms", 'u', (uint64_t)99999999, "heartbeat_timeout_ms", 'u',
              (uint64_t)99999999);
    assert_int_equal(dist__parse_welcome(dist_wire_msg_root(m), &back), 0);
    assert_int_equal(back.heartbeat_ms, 3600000);
    assert_int_equal(back.heartbeat_timeout_ms, 3600000);
    dist_wire_msg_destroy(&m);

    /* Wrong types: reported, and the default is used. */
    m = s_map(b, 2, "heartbeat_ms", 'i', "master", 'u', (uint64_t)3);
    assert_int_equal(dist__parse_welcome(dist_wire_msg_root(m), &back), DIST_EPROTO);
    assert_int_equal(back.heartbeat_ms, DIST__HEARTBEAT_MS);
    assert_int_equal(back.master.n, 0);
    dist_wire_msg_destroy(&m);
    dist_wire_buf_destroy(&b);
}

static void test_error_credit_and_request_bodies(void **state)
{
    (void)state;
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    dist__error_t e = { { "queue_full", 10 }, { "too many", 8 }, 77 };
    dist__pack_error(dist_wire_buf_packer(b), &e);
    dist_wire_msg_t *m = s_decode(b);
    dist__error_t eb;
    assert_int_equal(dist__parse_error(dist_wire_msg_root(m), &eb), 0);
    assert_memory_equal(eb.code.s, "queue_full", 10);
    assert_int_equal(eb.error.n, 8);
    assert_int_equal(eb.req, 77);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 1, "code", 's', "x"); /* no error */
    assert_int_equal(dist__parse_error(dist_wire_msg_root(m), &eb), DIST_EPROTO);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 3, "code", 's', "x", "error", 's', "y", "req", 'i');
    assert_int_equal(dist__parse_error(dist_wire_msg_root(m), &eb), DIST_EPROTO);
    dist_wire_msg_destroy(&m);

    dist__credit_t c = { 12 }, cb;
    dist_wire_buf_reset(b);
    dist__pack_credit(dist_wire_buf_packer(b), &c);
    m = s_decode(b);
    assert_int_equal(dist__parse_credit(dist_wire_msg_root(m), &cb), 0);
    assert_int_equal(cb.capacity, 12);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 1, "capacity", 'u', (uint64_t)1 << 33);
    assert_int_equal(dist__parse_credit(dist_wire_msg_root(m), &cb), DIST_EPROTO);
    dist_wire_msg_destroy(&m);

    /* QPUT: items are packed by the caller, last. */
    dist__qput_t qp = { .req = 5, .queue = { "jobs", 4 }, .nitems = 2, .timeout_ms = 30 }, qpb;
    dist_wire_buf_reset(b);
    msgpack_packer *pk = dist_wire_buf_packer(b);
    dist__pack_qput(pk, &qp);
    dist__pk_bin(pk, "a", 1);
    dist__pk_bin(pk, "bc", 2);
    m = s_decode(b);
    assert_int_equal(dist__parse_qput(dist_wire_msg_root(m), &qpb), 0);
    assert_int_equal(qpb.req, 5);
    assert_int_equal(qpb.nitems, 2);
    assert_int_equal(qpb.timeout_ms, 30);
    assert_memory_equal(qpb.queue.s, "jobs", 4);
    dist_wire_msg_destroy(&m);
    /* No req: DIST_EPROTO; a bad queue name or no items: DIST_EINVAL with req. */
    m = s_map(b, 1, "queue", 's', "jobs");
    assert_int_equal(dist__parse_qput(dist_wire_msg_root(m), &qpb), DIST_EPROTO);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 2, "req", 'u', (uint64_t)6, "queue", 's', "a b");
    assert_int_equal(dist__parse_qput(dist_wire_msg_root(m), &qpb), DIST_EINVAL);
    assert_int_equal(qpb.req, 6);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 2, "req", 'u', (uint64_t)6, "queue", 's', "ok");
    assert_int_equal(dist__parse_qput(dist_wire_msg_root(m), &qpb), DIST_EINVAL);
    dist_wire_msg_destroy(&m);

    dist__qget_t qg = { .req = 8, .queue = { "jobs", 4 }, .max = 3, .timeout_ms = 10 }, qgb;
    dist_wire_buf_reset(b);
    dist__pack_qget(dist_wire_buf_packer(b), &qg);
    m = s_decode(b);
    assert_int_equal(dist__parse_qget(dist_wire_msg_root(m), &qgb), 0);
    assert_int_equal(qgb.max, 3);
    assert_int_equal(qgb.timeout_ms, 10);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 2, "req", 'u', (uint64_t)8, "queue", 's', "jobs");
    assert_int_equal(dist__parse_qget(dist_wire_msg_root(m), &qgb), 0);
    assert_int_equal(qgb.max, 1); /* the default */
    dist_wire_msg_destroy(&m);
    m = s_map(b, 3, "req", 'u', (uint64_t)8, "queue", 's', "jobs", "max", 'u', (uint64_t)0);
    assert_int_equal(dist__parse_qget(dist_wire_msg_root(m), &qgb), DIST_EINVAL);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 1, "req", 'i');
    assert_int_equal(dist__parse_qget(dist_wire_msg_root(m), &qgb), DIST_EPROTO);
    dist_wire_msg_destroy(&m);

    dist__qreply_t qr = { .req = 9, .status = { "ok", 2 }, .nitems = 1 }, qrb;
    dist_wire_buf_reset(b);
    pk = dist_wire_buf_packer(b);
    dist__pack_qreply(pk, &qr);
    dist__pk_bin(pk, "z", 1);
    m = s_decode(b);
    assert_int_equal(dist__parse_qreply(dist_wire_msg_root(m), &qrb), 0);
    assert_int_equal(qrb.req, 9);
    assert_int_equal(qrb.nitems, 1);
    assert_memory_equal(qrb.status.s, "ok", 2);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 2, "req", 'u', (uint64_t)9, "status", 's', "ok"); /* no items */
    assert_int_equal(dist__parse_qreply(dist_wire_msg_root(m), &qrb), DIST_EPROTO);
    dist_wire_msg_destroy(&m);

    dist__status_req_t sr = { 11 }, srb;
    dist_wire_buf_reset(b);
    dist__pack_status_req(dist_wire_buf_packer(b), &sr);
    m = s_decode(b);
    assert_int_equal(dist__parse_status_req(dist_wire_msg_root(m), &srb), 0);
    assert_int_equal(srb.req, 11);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 0);
    assert_int_equal(dist__parse_status_req(dist_wire_msg_root(m), &srb), DIST_EPROTO);
    dist_wire_msg_destroy(&m);
    dist_wire_buf_destroy(&b);
}

static void test_list_and_accepted_bodies(void **state)
{
    (void)state;
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    static const dist__cmd_t lists[] = { DIST__CMD_TASKS, DIST__CMD_SUBMIT, DIST__CMD_RESULTS,
                                         DIST__CMD_ACK, DIST__CMD_RETURN };
    dist__id_t id;
    assert_int_equal(dist__id_random(&id), 0);
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        /* The patchable form: an array32 header with count UINT32_MAX. */
        dist_wire_buf_reset(b);
        msgpack_packer *pk = dist_wire_buf_packer(b);
        dist__pack_list_head(pk, lists[i], UINT32_MAX);
        size_t at;
        dist_wire_buf_data(b, &at);
        dist__pk_id(pk, &id);
        unsigned char *d = (unsigned char *)dist_wire_buf_data(b, &at);
        size_t hdr = at - 18 - 5; /* the id is 18 bytes, the array32 header 5 */
        assert_int_equal(d[hdr], 0xdd);
        d[hdr + 1] = d[hdr + 2] = d[hdr + 3] = 0;
        d[hdr + 4] = 1;
        dist_wire_msg_t *m = s_decode(b);
        const msgpack_object *items;
        size_t n;
        assert_int_equal(dist__parse_list(dist_wire_msg_root(m), lists[i], &items, &n), 0);
        assert_int_equal(n, 1);
        dist__id_t back;
        assert_true(dist__list_id(&items[0], &back));
        assert_true(dist__id_eq(&back, &id));
        /* Another command's list key is not this one's (ids vs tasks). */
        dist__cmd_t other = lists[i] == DIST__CMD_RESULTS ? DIST__CMD_ACK : DIST__CMD_RESULTS;
        assert_int_equal(dist__parse_list(dist_wire_msg_root(m), other, &items, &n), DIST_EPROTO);
        assert_int_equal(dist__parse_list(dist_wire_msg_root(m), DIST__CMD_HELLO, &items, &n),
                         DIST_EPROTO);
        dist_wire_msg_destroy(&m);
    }
    dist_wire_buf_reset(b);
    dist__pack_list_head(dist_wire_buf_packer(b), DIST__CMD_ACK, 1);
    msgpack_pack_uint64(dist_wire_buf_packer(b), 3);
    dist_wire_msg_t *m = s_decode(b);
    const msgpack_object *items;
    size_t n;
    assert_int_equal(dist__parse_list(dist_wire_msg_root(m), DIST__CMD_ACK, &items, &n), 0);
    dist__id_t back;
    assert_false(dist__list_id(&items[0], &back)); /* not a bin16: skipped by readers */
    dist_wire_msg_destroy(&m);

    /* ACCEPTED: one id, two rejections (one without an id). */
    dist_wire_buf_reset(b);
    msgpack_packer *pk = dist_wire_buf_packer(b);
    dist__pack_accepted(pk, 1);
    dist__pk_id(pk, &id);
    dist__pack_rejected(pk, 2);
    dist__reject_t r1 = { .index = 1, .has_id = true, .id = id, .code = { "queue_full", 10 },
                          .error = { "later", 5 } };
    dist__reject_t r2 = { .index = 2, .code = { "bad_request", 11 }, .error = { "no id", 5 } };
    dist__pack_reject(pk, &r1);
    dist__pack_reject(pk, &r2);
    m = s_decode(b);
    dist__accepted_t a;
    assert_int_equal(dist__parse_accepted(dist_wire_msg_root(m), &a), 0);
    assert_int_equal(a.nids, 1);
    assert_int_equal(a.nrejected, 2);
    dist__reject_t rb;
    assert_int_equal(dist__parse_reject(&a.rejected[0], &rb), 0);
    assert_true(rb.has_id);
    assert_true(dist__id_eq(&rb.id, &id));
    assert_int_equal(rb.index, 1);
    assert_memory_equal(rb.code.s, "queue_full", 10);
    assert_int_equal(dist__parse_reject(&a.rejected[1], &rb), 0);
    assert_false(rb.has_id);
    assert_int_equal(rb.index, 2);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 1, "ids", 's', "x");
    assert_int_equal(dist__parse_accepted(dist_wire_msg_root(m), &a), DIST_EPROTO);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 3, "index", 'u', (uint64_t)0, "code", 's', "x", "id", 's', "short");
    assert_int_equal(dist__parse_reject(dist_wire_msg_root(m), &rb), DIST_EPROTO);
    dist_wire_msg_destroy(&m);
    assert_null(a.unserved); /* the body above had none */

    /* ACCEPTED with unserved names; a bad name sinks it. */
    const dist__str_t names[2] = { { "sq", 2 }, { "dist.echo", 9 } };
    for (int bad = 0; bad < 2; bad++) {
        dist_wire_buf_reset(b);
        pk = dist_wire_buf_packer(b);
        dist__pack_accepted_head(pk, 1, true);
        dist__pk_id(pk, &id);
        dist__pack_rejected(pk, 0);
        const dist__str_t bad_names[2] = { { "sq", 2 }, { "no space", 8 } };
        dist__pack_names(pk, "unserved", bad ? bad_names : names, 2);
        m = s_decode(b);
        if (bad) {
            assert_int_equal(dist__parse_accepted(dist_wire_msg_root(m), &a), DIST_EPROTO);
        } else {
            assert_int_equal(dist__parse_accepted(dist_wire_msg_root(m), &a), 0);
            assert_int_equal(a.nids, 1);
            assert_int_equal(a.nunserved, 2);
            const char *t;
            size_t tn;
            assert_int_equal(dist_wire_get_str(&a.unserved[1], &t, &tn), 0);
            assert_int_equal(tn, 9);
            assert_memory_equal(t, "dist.echo", 9);
        }
        dist_wire_msg_destroy(&m);
    }
    dist_wire_buf_destroy(&b);
}

static void test_notice_body(void **state)
{
    (void)state;
    assert_string_equal(dist__cmd_name(DIST__CMD_NOTICE), "NOTICE");
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    const dist__str_t served[1] = { { "sq", 2 } }, unserved[2] = { { "a.b", 3 }, { "c", 1 } };
    dist__notice_t n = { .served_names = served, .nserved = 1, .unserved_names = unserved,
                         .nunserved = 2 };
    dist__pack_notice(dist_wire_buf_packer(b), &n);
    dist_wire_msg_t *m = s_decode(b);
    dist__notice_t back;
    assert_int_equal(dist__parse_notice(dist_wire_msg_root(m), &back), 0);
    assert_int_equal(back.nserved, 1);
    assert_int_equal(back.nunserved, 2);
    const char *t;
    size_t tn;
    assert_int_equal(dist_wire_get_str(&back.served[0], &t, &tn), 0);
    assert_memory_equal(t, "sq", 2);
    assert_int_equal(dist_wire_get_str(&back.unserved[0], &t, &tn), 0);
    assert_memory_equal(t, "a.b", 3);
    dist_wire_msg_destroy(&m);

    /* One list only: the other is not packed, and parses as empty. */
    n.nserved = 0;
    dist_wire_buf_reset(b);
    dist__pack_notice(dist_wire_buf_packer(b), &n);
    m = s_decode(b);
    assert_int_equal(dist_wire_msg_root(m)->via.map.size, 1);
    assert_int_equal(dist__parse_notice(dist_wire_msg_root(m), &back), 0);
    assert_int_equal(back.nserved, 0);
    assert_null(back.served);
    assert_int_equal(back.nunserved, 2);
    dist_wire_msg_destroy(&m);

    /* Wrong shapes. */
    m = s_map(b, 1, "served", 's', "sq");
    assert_int_equal(dist__parse_notice(dist_wire_msg_root(m), &back), DIST_EPROTO);
    dist_wire_msg_destroy(&m);
    dist_wire_buf_reset(b);
    msgpack_packer *pk = dist_wire_buf_packer(b);
    msgpack_pack_map(pk, 1);
    dist__pk_str(pk, "unserved");
    msgpack_pack_array(pk, 1);
    msgpack_pack_uint64(pk, 1);
    m = s_decode(b);
    assert_int_equal(dist__parse_notice(dist_wire_msg_root(m), &back), DIST_EPROTO);
    dist_wire_msg_destroy(&m);
    assert_int_equal(dist__parse_notice(NULL, &back), DIST_EPROTO);
    dist_wire_buf_destroy(&b);
}

/* ---- task control (issue 12) ------------------------------------------------------ */

static void test_ids_from_keys(void **state)
{
    (void)state;
    dist__id_t a, b, r;
    /* 32 lowercase hex digits are the id itself: what dist__id_hex prints comes back. */
    assert_int_equal(dist__id_random(&r), 0);
    char hex[33];
    dist__id_hex(&r, hex);
    assert_int_equal(dist__id_from_key(hex, 32, &a), 0);
    assert_true(dist__id_eq(&a, &r));
    /* Other keys hash: the same key gives the same id, another key another one. */
    assert_int_equal(dist__id_from_key("invoice-42", 10, &a), 0);
    assert_int_equal(dist__id_from_key("invoice-42", 10, &b), 0);
    assert_true(dist__id_eq(&a, &b));
    assert_int_equal(dist__id_from_key("invoice-43", 10, &b), 0);
    assert_false(dist__id_eq(&a, &b));
    /* Upper-case hex is a key like any other, not the id's bytes. */
    hex[0] = 'A';
    assert_int_equal(dist__id_from_key(hex, 32, &b), 0);
    assert_int_not_equal(b.b[0], 0xA0 | (r.b[0] & 15));
    /* Bad keys: empty, too long, a space, a control byte, non-ASCII. */
    char longk[130];
    memset(longk, 'k', sizeof longk);
    assert_int_equal(dist__id_from_key(longk, 128, &a), 0);
    assert_int_equal(dist__id_from_key(longk, 129, &a), DIST_EINVAL);
    assert_int_equal(dist__id_from_key("", 0, &a), DIST_EINVAL);
    assert_int_equal(dist__id_from_key("a b", 3, &a), DIST_EINVAL);
    assert_int_equal(dist__id_from_key("a\tb", 3, &a), DIST_EINVAL);
    assert_int_equal(dist__id_from_key("caf\xc3\xa9", 5, &a), DIST_EINVAL);
    /* Keys of every length up to two blocks spread: no two equal ids. */
    dist__id_t ids[20];
    for (int n = 1; n <= 20; n++) {
        assert_int_equal(dist__id_from_key(longk, (size_t)n, &ids[n - 1]), 0);
        for (int j = 0; j < n - 1; j++)
            assert_false(dist__id_eq(&ids[j], &ids[n - 1]));
    }
    assert_string_equal(dist_strerror(DIST_ECANCELLED), "task cancelled");
    assert_string_equal(dist_strerror(DIST_ERETRY), "task asked to be retried");
}

static void test_submit_options(void **state)
{
    (void)state;
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    dist__task_t t = { .task = "m.f", .task_len = 3, .args = "\x90", .args_len = 1 };
    assert_int_equal(dist__id_random(&t.id), 0);
    /* Without options a task is the same bytes as dist__pack_task's. */
    dist__pack_task(dist_wire_buf_packer(b), &t, false);
    size_t len0, len1;
    const void *d0 = dist_wire_buf_data(b, &len0);
    char old[256];
    assert_true(len0 < sizeof old);
    memcpy(old, d0, len0);
    dist__submit_opts_t none = { 0 };
    assert_int_equal(dist__submit_opts_count(&none), 0);
    dist_wire_buf_reset(b);
    dist__pack_submit_task(dist_wire_buf_packer(b), &t, &none);
    const void *d1 = dist_wire_buf_data(b, &len1);
    assert_int_equal(len1, len0);
    assert_memory_equal(d1, old, len0);
    dist_wire_msg_t *m = s_decode(b);
    dist__submit_opts_t o;
    assert_int_equal(dist__parse_submit_opts(dist_wire_msg_root(m), &o, NULL), 0);
    assert_int_equal(o.key.n, 0);
    assert_false(o.has_delay || o.has_at || o.retry_on_error);
    dist_wire_msg_destroy(&m);

    /* Every option round-trips, and the task map still parses as a task. */
    dist__submit_opts_t all = { .key = { "job-7", 5 }, .priority = 9, .has_delay = true,
                                .delay_ms = 250, .max_attempts = 4, .backoff_ms = 100,
                                .backoff_factor = 1.5, .backoff_max_ms = 9000,
                                .retry_on_error = true };
    assert_int_equal(dist__submit_opts_count(&all), 8);
    dist_wire_buf_reset(b);
    dist__pack_submit_task(dist_wire_buf_packer(b), &t, &all);
    m = s_decode(b);
    dist__task_t tb;
    assert_int_equal(dist__parse_task(dist_wire_msg_root(m), false, &tb), 0);
    assert_true(dist__id_eq(&tb.id, &t.id));
    assert_int_equal(dist__parse_submit_opts(dist_wire_msg_root(m), &o, NULL), 0);
    assert_memory_equal(o.key.s, "job-7", 5);
    assert_int_equal(o.priority, 9);
    assert_true(o.has_delay);
    assert_false(o.has_at);
    assert_int_equal(o.delay_ms, 250);
    assert_int_equal(o.max_attempts, 4);
    assert_int_equal(o.backoff_ms, 100);
    assert_true(o.backoff_factor == 1.5);
    assert_int_equal(o.backoff_max_ms, 9000);
    assert_true(o.retry_on_error);
    dist_wire_msg_destroy(&m);
    dist__submit_opts_t at = { .has_at = true, .at_ms = 1800000000000ull };
    dist_wire_buf_reset(b);
    dist__pack_submit_task(dist_wire_buf_packer(b), &t, &at);
    m = s_decode(b);
    assert_int_equal(dist__parse_submit_opts(dist_wire_msg_root(m), &o, NULL), 0);
    assert_true(o.has_at);
    assert_int_equal(o.at_ms, 1800000000000ull);
    dist_wire_msg_destroy(&m);

    /* Out of range: DIST_EINVAL with a reason; wrong type: DIST_EPROTO. */
    const char *why = NULL;
    m = s_map(b, 1, "priority", 'u', (uint64_t)10);
    assert_int_equal(dist__parse_submit_opts(dist_wire_msg_root(m), &o, &why), DIST_EINVAL);
    assert_non_null(strstr(why, "priority"));
    dist_wire_msg_destroy(&m);
    m = s_map(b, 1, "delay_ms", 'u', (uint64_t)2592000001ull);
    assert_int_equal(dist__parse_submit_opts(dist_wire_msg_root(m), &o, &why), DIST_EINVAL);
    assert_non_null(strstr(why, "delay_ms"));
    dist_wire_msg_destroy(&m);
    m = s_map(b, 1, "delay_ms", 'i'); /* negative */
    assert_int_equal(dist__parse_submit_opts(dist_wire_msg_root(m), &o, &why), DIST_EINVAL);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 2, "delay_ms", 'u', (uint64_t)5, "at_ms", 'u', (uint64_t)5);
    assert_int_equal(dist__parse_submit_opts(dist_wire_msg_root(m), &o, &why), DIST_EINVAL);
    assert_non_null(strstr(why, "exclude"));
    dist_wire_msg_destroy(&m);
    m = s_map(b, 1, "max_attempts", 'u', (uint64_t)0);
    assert_int_equal(dist__parse_submit_opts(dist_wire_msg_root(m), &o, &why), DIST_EINVAL);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 1, "max_attempts", 'u', (uint64_t)1001);
    assert_int_equal(dist__parse_submit_opts(dist_wire_msg_root(m), &o, &why), DIST_EINVAL);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 1, "key", 's', "has space");
    assert_int_equal(dist__parse_submit_opts(dist_wire_msg_root(m), &o, &why), DIST_EINVAL);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 1, "backoff_factor", 'u', (uint64_t)0);
    assert_int_equal(dist__parse_submit_opts(dist_wire_msg_root(m), &o, &why), DIST_EINVAL);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 1, "retry_on_error", 'u', (uint64_t)1);
    assert_int_equal(dist__parse_submit_opts(dist_wire_msg_root(m), &o, &why), DIST_EINVAL);
    dist_wire_msg_destroy(&m);

    /* The new statuses: cancelled is final, retry is not and carries retry_ms. */
    assert_true(dist__status_final(DIST__ST_CANCELLED));
    assert_false(dist__status_final(DIST__ST_RETRY));
    assert_int_equal(dist__status_errcode(DIST__ST_CANCELLED), DIST_ECANCELLED);
    assert_int_equal(dist__status_from_code(DIST_ECANCELLED), DIST__ST_CANCELLED);
    assert_int_equal(dist__status_from_code(DIST_ERETRY), DIST__ST_RETRY);
    dist__result_t r = { .id = t.id, .attempt = 1, .status = DIST__ST_RETRY,
                         .error = "later", .error_len = 5, .retry_ms = 1234 }, rb;
    dist_wire_buf_reset(b);
    dist__pack_result(dist_wire_buf_packer(b), &r, true);
    m = s_decode(b);
    assert_int_equal(dist__parse_result(dist_wire_msg_root(m), true, &rb), 0);
    assert_int_equal(rb.status, DIST__ST_RETRY);
    assert_int_equal(rb.retry_ms, 1234);
    assert_memory_equal(rb.error, "later", 5);
    dist_wire_msg_destroy(&m);
    dist_wire_buf_destroy(&b);
}

static void test_control_bodies(void **state)
{
    (void)state;
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    dist__id_t id1, id2;
    assert_int_equal(dist__id_random(&id1), 0);
    assert_int_equal(dist__id_random(&id2), 0);
    /* ids requests, with and without req (CANCEL master to worker). */
    for (int with_req = 0; with_req < 2; with_req++) {
        dist__ids_req_t ir = { .req = 21, .nids = 2 }, irb;
        dist_wire_buf_reset(b);
        msgpack_packer *pk = dist_wire_buf_packer(b);
        dist__pack_ids_req(pk, &ir, with_req);
        dist__pk_id(pk, &id1);
        dist__pk_id(pk, &id2);
        dist_wire_msg_t *m = s_decode(b);
        assert_int_equal(dist__parse_ids_req(dist_wire_msg_root(m), with_req, &irb), 0);
        assert_int_equal(irb.req, with_req ? 21 : 0);
        assert_int_equal(irb.nids, 2);
        dist__id_t back;
        assert_true(dist__list_id(&irb.ids[1], &back));
        assert_true(dist__id_eq(&back, &id2));
        dist_wire_msg_destroy(&m);
    }
    dist__ids_req_t irb;
    dist_wire_msg_t *m = s_map(b, 1, "ids", 'u', (uint64_t)1);
    assert_int_equal(dist__parse_ids_req(dist_wire_msg_root(m), true, &irb), DIST_EPROTO);
    assert_int_equal(dist__parse_ids_req(dist_wire_msg_root(m), false, &irb), DIST_EPROTO);
    dist_wire_msg_destroy(&m);
    /* An empty list and an id that is not 16 bytes: bad_request (EINVAL, req kept). */
    dist_wire_buf_reset(b);
    msgpack_packer *pk = dist_wire_buf_packer(b);
    msgpack_pack_map(pk, 2);
    dist__pk_kv_u64(pk, "req", 3);
    dist__pk_str(pk, "ids");
    msgpack_pack_array(pk, 0);
    m = s_decode(b);
    assert_int_equal(dist__parse_ids_req(dist_wire_msg_root(m), true, &irb), DIST_EINVAL);
    assert_int_equal(irb.req, 3);
    dist_wire_msg_destroy(&m);
    dist_wire_buf_reset(b);
    pk = dist_wire_buf_packer(b);
    msgpack_pack_map(pk, 2);
    dist__pk_kv_u64(pk, "req", 3);
    dist__pk_str(pk, "ids");
    msgpack_pack_array(pk, 1);
    dist__pk_bin(pk, "short", 5);
    m = s_decode(b);
    assert_int_equal(dist__parse_ids_req(dist_wire_msg_root(m), true, &irb), DIST_EINVAL);
    dist_wire_msg_destroy(&m);

    dist__fetch_t f = { .req = 4, .id = id1, .wait_ms = 500 }, fb;
    dist_wire_buf_reset(b);
    dist__pack_fetch(dist_wire_buf_packer(b), &f);
    m = s_decode(b);
    assert_int_equal(dist__parse_fetch(dist_wire_msg_root(m), &fb), 0);
    assert_true(dist__id_eq(&fb.id, &id1));
    assert_int_equal(fb.wait_ms, 500);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 2, "req", 'u', (uint64_t)4, "id", 's', "abc");
    assert_int_equal(dist__parse_fetch(dist_wire_msg_root(m), &fb), DIST_EINVAL);
    dist_wire_msg_destroy(&m);

    dist__failed_req_t fr = { .req = 5, .max = 10 }, frb;
    dist_wire_buf_reset(b);
    dist__pack_failed_req(dist_wire_buf_packer(b), &fr);
    m = s_decode(b);
    assert_int_equal(dist__parse_failed_req(dist_wire_msg_root(m), &frb), 0);
    assert_int_equal(frb.max, 10);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 1, "max", 'u', (uint64_t)1);
    assert_int_equal(dist__parse_failed_req(dist_wire_msg_root(m), &frb), DIST_EPROTO);
    dist_wire_msg_destroy(&m);

    /* REPLY with task infos (LOOKUP): a full one and an unknown one. */
    dist__attempt_info_t att[2] = { { 1, { "w1", 2 }, { "crashed", 7 } }, { 2, { "w2", 2 }, { "", 0 } } };
    dist__task_info_t ti = { .id = id1, .key = { "k1", 2 }, .task = { "m.f", 3 },
                             .state = { "leased", 6 }, .worker = { "w2", 2 }, .priority = 3,
                             .submitted_ms = 100, .started_ms = 200, .attempts = att,
                             .nattempts = 2 };
    dist__task_info_t unk = { .id = id2, .state = { "unknown", 7 } };
    dist__reply_t rp = { .req = 6, .status = { "ok", 2 }, .list = DIST__REPLY_TASKS, .nitems = 2 };
    dist_wire_buf_reset(b);
    pk = dist_wire_buf_packer(b);
    dist__pack_reply(pk, &rp);
    dist__pack_task_info(pk, &ti);
    dist__pack_task_info(pk, &unk);
    m = s_decode(b);
    dist__reply_t rb;
    assert_int_equal(dist__parse_reply(dist_wire_msg_root(m), &rb), 0);
    assert_int_equal(rb.req, 6);
    assert_int_equal(rb.list, DIST__REPLY_TASKS);
    assert_int_equal(rb.nitems, 2);
    assert_null(rb.result_map);
    dist__task_info_t tb;
    assert_int_equal(dist__parse_task_info(&rb.items[0], &tb), 0);
    assert_true(dist__id_eq(&tb.id, &id1));
    assert_memory_equal(tb.state.s, "leased", 6);
    assert_memory_equal(tb.worker.s, "w2", 2);
    assert_memory_equal(tb.key.s, "k1", 2);
    assert_int_equal(tb.priority, 3);
    assert_int_equal(tb.started_ms, 200);
    assert_int_equal(tb.finished_ms, 0);
    assert_int_equal(tb.nattempts, 2);
    dist__attempt_info_t ab;
    assert_int_equal(dist__parse_attempt_info(&tb.attempt_maps[0], &ab), 0);
    assert_int_equal(ab.attempt, 1);
    assert_memory_equal(ab.reason.s, "crashed", 7);
    assert_int_equal(dist__parse_task_info(&rb.items[1], &tb), 0);
    assert_memory_equal(tb.state.s, "unknown", 7);
    assert_int_equal(tb.task.n, 0);
    dist_wire_msg_destroy(&m);

    /* REPLY of a FETCH: state and the result map; of a CANCEL: states. */
    dist__result_t res = { .id = id1, .status = DIST__ST_CANCELLED, .error = "cancelled by c",
                           .error_len = 14 };
    dist__reply_t fp = { .req = 7, .status = { "ok", 2 }, .state = { "cancelled", 9 },
                         .result = &res };
    dist_wire_buf_reset(b);
    dist__pack_reply(dist_wire_buf_packer(b), &fp);
    m = s_decode(b);
    assert_int_equal(dist__parse_reply(dist_wire_msg_root(m), &rb), 0);
    assert_int_equal(rb.list, DIST__REPLY_NONE);
    assert_non_null(rb.result_map);
    dist__result_t resb;
    assert_int_equal(dist__parse_result(rb.result_map, false, &resb), 0);
    assert_int_equal(resb.status, DIST__ST_CANCELLED);
    dist_wire_msg_destroy(&m);
    dist__reply_t cp = { .req = 8, .status = { "ok", 2 }, .list = DIST__REPLY_STATES, .nitems = 1 };
    dist_wire_buf_reset(b);
    pk = dist_wire_buf_packer(b);
    dist__pack_reply(pk, &cp);
    dist__pk_str(pk, "cancelled");
    m = s_decode(b);
    assert_int_equal(dist__parse_reply(dist_wire_msg_root(m), &rb), 0);
    assert_int_equal(rb.list, DIST__REPLY_STATES);
    assert_int_equal(rb.nitems, 1);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 2, "req", 'u', (uint64_t)8, "status", 'u', (uint64_t)1);
    assert_int_equal(dist__parse_reply(dist_wire_msg_root(m), &rb), DIST_EPROTO);
    dist_wire_msg_destroy(&m);
    m = s_map(b, 3, "req", 'u', (uint64_t)8, "status", 's', "ok", "states", 'u', (uint64_t)1);
    assert_int_equal(dist__parse_reply(dist_wire_msg_root(m), &rb), DIST_EPROTO);
    dist_wire_msg_destroy(&m);
    assert_string_equal(dist__cmd_name(DIST__CMD_LOOKUP), "LOOKUP");
    assert_string_equal(dist__cmd_name(DIST__CMD_REPLY), "REPLY");
    dist_wire_buf_destroy(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_round_trip),
        cmocka_unit_test(test_bad_messages_are_dropped_with_a_reason),
        cmocka_unit_test(test_task_and_result_bodies),
        cmocka_unit_test(test_hello_body),
        cmocka_unit_test(test_welcome_body_and_clamping),
        cmocka_unit_test(test_error_credit_and_request_bodies),
        cmocka_unit_test(test_list_and_accepted_bodies),
        cmocka_unit_test(test_notice_body),
        cmocka_unit_test(test_ids_from_keys),
        cmocka_unit_test(test_submit_options),
        cmocka_unit_test(test_control_bodies),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    zsys_shutdown();
    return rc;
}

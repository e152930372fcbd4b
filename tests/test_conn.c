/* test_conn.c - a peer's connection to its master (net/conn_internal.h):
 * where the endpoint comes from, the errno of a key setup, the words for
 * failed handshakes, WELCOME bookkeeping, and that sending never blocks,
 * even on a connection whose master refused our key (libzmq does not
 * reconnect after a ZAP refusal, so a blocking send would wait forever). */
#include <czmq.h>
#include <dist.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "conn_internal.h"
#include "testutil.h"
#include "util_internal.h"

static void test_endpoint_resolution_order(void **state)
{
    (void)state;
    const char *saved = getenv("DIST_MASTER");
    char *keep = saved ? strdup(saved) : NULL;

    unsetenv("DIST_MASTER");
    assert_string_equal(dist__conn_endpoint(NULL), DIST_DEFAULT_ENDPOINT);
    assert_string_equal(dist__conn_endpoint(""), DIST_DEFAULT_ENDPOINT);
    assert_string_equal(dist__conn_endpoint("tcp://127.0.0.1:7001"), "tcp://127.0.0.1:7001");

    setenv("DIST_MASTER", "tcp://127.0.0.1:7002", 1);
    assert_string_equal(dist__conn_endpoint(NULL), "tcp://127.0.0.1:7002");
    assert_string_equal(dist__conn_endpoint(""), "tcp://127.0.0.1:7002");
    /* The option comes first. */
    assert_string_equal(dist__conn_endpoint("tcp://127.0.0.1:7001"), "tcp://127.0.0.1:7001");

    setenv("DIST_MASTER", "", 1); /* empty counts as unset */
    assert_string_equal(dist__conn_endpoint(NULL), DIST_DEFAULT_ENDPOINT);

    if (keep)
        setenv("DIST_MASTER", keep, 1);
    else
        unsetenv("DIST_MASTER");
    free(keep);
}

static void test_errno_of_key_setup_and_failure_words(void **state)
{
    (void)state;
    assert_int_equal(dist__conn_errno(-ENOENT), ENOENT);
    assert_int_equal(dist__conn_errno(-EACCES), EACCES);
    assert_int_equal(dist__conn_errno(DIST_ENOMEM), ENOMEM);
    assert_int_equal(dist__conn_errno(-EINVAL), EINVAL);
    assert_int_equal(dist__conn_errno(DIST_EPROTO), EINVAL);

    /* Missing key files: ENOENT, found before any socket exists. */
    dist__logger_t lg = { 0 };
    dist__conn_opts_t o = { .master = "tcp://127.0.0.1:1", .key = "/nonexistent/me.key",
                            .server_key = "/nonexistent/master.pub", .who = "client" };
    assert_int_equal(dist__conn_check(&o, &lg), ENOENT);
    dist__conn_t c;
    assert_int_equal(dist__conn_open(&c, &o, &lg), ENOENT);
    /* Protected mode: no keys and a remote endpoint is refused. */
    dist__conn_opts_t remote = { .master = "tcp://198.18.0.1:5555", .who = "worker" };
    assert_int_equal(dist__conn_check(&remote, &lg), EINVAL);
    remote.insecure = true;
    assert_int_equal(dist__conn_check(&remote, &lg), 0);

    /* Failed handshakes in words: what the peer can do about each. */
    dist__conn_t k = { .who = "client", .secure = true };
    snprintf(k.server_key, sizeof k.server_key, "keys/master.pub");
    assert_non_null(strstr(dist__conn_failure(&k, ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, 400),
                           "the master refused this client's key"));
    assert_true(k.why_final);
    assert_non_null(strstr(dist__conn_failure(&k, ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL,
                                              ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH),
                           "the master has no CURVE keys"));
    assert_non_null(strstr(dist__conn_failure(&k, ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL,
                                              ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC),
                           "the master's key is not keys/master.pub"));
    /* The reason "Broken pipe" stood for, with keys and without. */
    assert_non_null(strstr(dist__conn_failure(&k, ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL, EPIPE),
                           "the master's key is not keys/master.pub"));
    assert_null(strstr(k.why, "pipe"));
    dist__conn_t nk = { .who = "worker", .secure = false };
    assert_non_null(strstr(dist__conn_failure(&nk, ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL, EPIPE),
                           "requires CURVE keys and this worker has none"));
    assert_non_null(strstr(dist__conn_failure(&nk, ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL,
                                              ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH),
                           "requires CURVE keys"));
    assert_true(nk.why_final);
    assert_non_null(strstr(dist__conn_failure(&nk, ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL, ETIMEDOUT),
                           "did not complete"));
    assert_false(nk.why_final);

    /* Endpoints without a transport: refused with the fix. */
    char why[200];
    assert_true(dist__endpoint_check("tcp://h:1", why, sizeof why));
    assert_false(dist__endpoint_check("h:5555", why, sizeof why));
    assert_non_null(strstr(why, "write tcp://h:5555"));
    dist__conn_opts_t bare = { .master = "127.0.0.1:5555", .who = "client" };
    assert_int_equal(dist__conn_check(&bare, &lg), EINVAL);
}

static void test_welcome_bookkeeping(void **state)
{
    (void)state;
    dist__logger_t lg = { 0 };
    dist__conn_opts_t o = { .master = "tcp://127.0.0.1:1", .who = "client" };
    dist__conn_t c;
    assert_int_equal(dist__conn_open(&c, &o, &lg), 0);
    /* Defaults before any WELCOME. */
    assert_int_equal(c.wl.heartbeat_ms, DIST__HEARTBEAT_MS);
    assert_int_equal(c.wl.heartbeat_timeout_ms, DIST__HEARTBEAT_TIMEOUT_MS);
    int64_t now = dist__now_ns();
    assert_true(dist__conn_hello_due(&c, now));
    assert_false(dist__conn_silent(&c, now));
    assert_true(dist__conn_silent(&c, now + (int64_t)4000 * 1000000));

    dist_wire_buf_t *b = dist_wire_buf_new(0);
    dist__welcome_t w = { .master = { "m:1", 3 }, .heartbeat_ms = 200,
                          .heartbeat_timeout_ms = 600, .max_message = 1 << 20, .max_batch = 5 };
    for (int round = 0; round < 3; round++) {
        if (round == 2)
            w.master = (dist__str_t){ "m:2", 3 };
        dist_wire_buf_reset(b);
        dist__pack_welcome(dist_wire_buf_packer(b), &w);
        size_t len;
        const void *d = dist_wire_buf_data(b, &len);
        dist_wire_msg_t *m = dist_wire_msg_decode(d, len, NULL, NULL);
        bool other = dist__conn_welcome(&c, dist_wire_msg_root(m));
        dist_wire_msg_destroy(&m);
        /* New at first, the same master next, another one at the last. */
        assert_int_equal(other, round != 1);
    }
    dist_wire_buf_destroy(&b);
    assert_string_equal(c.master, "m:2");
    assert_int_equal(c.wl.master.n, 3);
    assert_int_equal(c.wl.heartbeat_timeout_ms, 600);
    c.last_sent_ns = c.last_heard_ns = now;
    assert_true(dist__conn_next_ns(&c, false) == now + (int64_t)200 * 1000000);
    c.last_hello_ns = now;
    assert_false(dist__conn_hello_due(&c, now + 999 * 1000000LL));
    assert_true(dist__conn_hello_due(&c, now + 1000 * 1000000LL));
    assert_true(dist__conn_next_ns(&c, true) == now + (int64_t)1000 * 1000000);
    dist__conn_close(&c, true);
    dist__conn_close(&c, true); /* twice is harmless */
}

static void s_welcome(dist__conn_t *c, const char *instance)
{
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    dist__welcome_t w = { .master = { "m", 1 },
                          .instance = { instance, instance ? strlen(instance) : 0 } };
    dist__pack_welcome(dist_wire_buf_packer(b), &w);
    size_t len;
    const void *d = dist_wire_buf_data(b, &len);
    dist_wire_msg_t *m = dist_wire_msg_decode(d, len, NULL, NULL);
    assert_non_null(m);
    dist__conn_welcome(c, dist_wire_msg_root(m));
    dist_wire_msg_destroy(&m);
    dist_wire_buf_destroy(&b);
}

/* A master restarted without its store is a new instance; one that
 * answers a repeated HELLO, or says nothing of its instance, is not. */
static void test_new_instance_and_bye(void **state)
{
    (void)state;
    dist__logger_t lg = { 0 };
    dist__conn_opts_t o = { .master = "tcp://127.0.0.1:1", .who = "worker" };
    dist__conn_t c;
    assert_int_equal(dist__conn_open(&c, &o, &lg), 0);
    s_welcome(&c, "00000000000000aa");
    assert_false(c.new_instance); /* the first one known: nothing was lost */
    assert_string_equal(c.instance, "00000000000000aa");
    assert_int_equal(c.wl.instance.n, 16);
    s_welcome(&c, "00000000000000aa");
    assert_false(c.new_instance);
    s_welcome(&c, NULL);
    assert_false(c.new_instance);
    assert_string_equal(c.instance, "00000000000000aa");
    s_welcome(&c, "00000000000000bb");
    assert_true(c.new_instance);
    assert_string_equal(c.old_instance, "00000000000000aa");
    assert_string_equal(c.instance, "00000000000000bb");
    s_welcome(&c, "00000000000000bb");
    assert_false(c.new_instance);

    /* BYE: HELLO due at once; the BYE counts as heard (a peer's wait for
     * the next master starts from it, not from a rewound clock); a
     * WELCOME ends it. */
    int64_t now = dist__now_ns();
    c.last_heard_ns = c.last_hello_ns = now;
    int64_t heard = c.last_heard_ns;
    assert_false(dist__conn_silent(&c, now));
    assert_false(dist__conn_hello_due(&c, now));
    dist__conn_lost(&c);
    assert_true(c.bye);
    now = dist__now_ns();
    assert_true(c.last_heard_ns == heard);
    assert_false(dist__conn_silent(&c, now));
    assert_true(dist__conn_hello_due(&c, now));
    assert_true(dist__conn_next_ns(&c, true) <= now);
    s_welcome(&c, "00000000000000bb");
    assert_false(c.bye);
    dist__conn_close(&c, true);
}

/* A master with CURVE and allow lists in which our key is not: the
 * handshake is refused (ZAP), libzmq stops reconnecting, and every send
 * must still return at once. */
static void test_send_never_blocks_after_a_zap_refusal(void **state)
{
    (void)state;
    char dir[] = "/tmp/dist-test-conn-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[4][300];
    snprintf(path[0], sizeof path[0], "%s/master", dir);
    snprintf(path[1], sizeof path[1], "%s/stranger", dir);
    snprintf(path[2], sizeof path[2], "%s/workers", dir);
    snprintf(path[3], sizeof path[3], "%s/clients", dir);
    assert_int_equal(dist_keygen(path[0], false), 0);
    assert_int_equal(dist_keygen(path[1], false), 0);
    assert_int_equal(mkdir(path[2], 0700), 0);
    assert_int_equal(mkdir(path[3], 0700), 0);
    char mkey[320], mpub[320], skey[320];
    snprintf(mkey, sizeof mkey, "%s.key", path[0]);
    snprintf(mpub, sizeof mpub, "%s.pub", path[0]);
    snprintf(skey, sizeof skey, "%s.key", path[1]);

    dist_master_opts_t mo = { .bind = "tcp://127.0.0.1:0", .key = mkey,
                              .allow_workers = path[2], .allow_clients = path[3] };
    dist_master_t *master = dist_master_new(&mo);
    assert_non_null(master);
    assert_int_equal(dist_master_start(master), 0);

    dist__logger_t lg = { 0 };
    dist__conn_opts_t o = { .master = dist_master_endpoint(master), .key = skey,
                            .server_key = mpub, .who = "client" };
    dist__conn_t c;
    assert_int_equal(dist__conn_open(&c, &o, &lg), 0);
    assert_true(c.secure);
    assert_non_null(c.mon);
    int64_t until = dist__now_ns() + (int64_t)5000 * 1000000;
    while (!c.refused && dist__now_ns() < until) {
        zmq_pollitem_t it = { zsock_resolve(c.mon), 0, ZMQ_POLLIN, 0 };
        if (zmq_poll(&it, 1, 100) > 0)
            dist__conn_on_monitor(&c);
    }
    assert_int_equal(c.refused, DIST_EREFUSED);

    /* Fill whatever the socket will hold, and more: every send returns 0
     * or DIST_EAGAIN, and the whole loop is quick. */
    int64_t t0 = dist__now_ns();
    size_t again = 0;
    static const uint8_t body[32] = { 0x80 };
    for (int i = 0; i < 2 * DIST__HWM + 1000; i++) {
        int rc = dist__conn_send(&c, DIST__CMD_HEARTBEAT, body, 1);
        assert_true(rc == 0 || rc == DIST_EAGAIN);
        again += rc == DIST_EAGAIN;
    }
    assert_true(again > 0);
    /* A plain blocking send on the same socket: the send timeout of 0
     * makes it return too. */
    assert_int_equal(zmq_send(c.zh, body, sizeof body, 0), -1);
    assert_int_equal(zmq_errno(), EAGAIN);
    int64_t ms = (dist__now_ns() - t0) / 1000000;
    assert_true(ms < 10000);

    dist__conn_close(&c, true);
    dist_master_destroy(&master);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoint_resolution_order),
        cmocka_unit_test(test_errno_of_key_setup_and_failure_words),
        cmocka_unit_test(test_welcome_bookkeeping),
        cmocka_unit_test(test_new_instance_and_bye),
        cmocka_unit_test(test_send_never_blocks_after_a_zap_refusal),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    zsys_shutdown();
    return rc;
}

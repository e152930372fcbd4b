/*  proto.c - framing, socket options and message bodies of protocol
 *  version 1 (see proto_internal.h and docs/PROTOCOL.md).
 *
 *  Receiving goes through libzmq directly rather than zmsg_recv(): czmq
 *  reads every frame of a message into memory, and ZMQ_MAXMSGSIZE bounds
 *  only each frame, so a peer could send millions of tiny frames. Here
 *  frames beyond the expected count are received one at a time and closed
 *  at once.
 */
#include "proto_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <zmq.h>

#include "dist/error.h"
#include "utf8_internal.h"

static const char *const s_cmds[DIST__CMD_COUNT] = {
    [DIST__CMD_HELLO] = "HELLO",       [DIST__CMD_WELCOME] = "WELCOME",
    [DIST__CMD_RECONNECT] = "RECONNECT", [DIST__CMD_HEARTBEAT] = "HEARTBEAT",
    [DIST__CMD_BYE] = "BYE",           [DIST__CMD_TASKS] = "TASKS",
    [DIST__CMD_RESULTS] = "RESULTS",   [DIST__CMD_CREDIT] = "CREDIT",
    [DIST__CMD_RETURN] = "RETURN",     [DIST__CMD_SUBMIT] = "SUBMIT",
    [DIST__CMD_ACCEPTED] = "ACCEPTED", [DIST__CMD_ACK] = "ACK",
    [DIST__CMD_QPUT] = "QPUT",         [DIST__CMD_QGET] = "QGET",
    [DIST__CMD_QREPLY] = "QREPLY",     [DIST__CMD_STATUS] = "STATUS",
    [DIST__CMD_ERROR] = "ERROR",       [DIST__CMD_NOTICE] = "NOTICE",
    [DIST__CMD_LOOKUP] = "LOOKUP",     [DIST__CMD_FETCH] = "FETCH",
    [DIST__CMD_CANCEL] = "CANCEL",     [DIST__CMD_FAILED] = "FAILED",
    [DIST__CMD_RETRY] = "RETRY",       [DIST__CMD_REPLY] = "REPLY",
};

const char *dist__cmd_name(dist__cmd_t cmd)
{
    return cmd > DIST__CMD_NONE && cmd < DIST__CMD_COUNT ? s_cmds[cmd] : NULL;
}

static dist__cmd_t s_cmd_parse(const void *p, size_t n)
{
    for (int c = 1; c < DIST__CMD_COUNT; c++)
        if (strlen(s_cmds[c]) == n && memcmp(s_cmds[c], p, n) == 0)
            return (dist__cmd_t)c;
    return DIST__CMD_NONE;
}

/* ---- ids -------------------------------------------------------------------- */

int dist__id_random(dist__id_t *id)
{
    size_t got = 0;
    while (got < sizeof id->b) {
        ssize_t r = getrandom(id->b + got, sizeof id->b - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)r;
    }
    return 0;
}

void dist__id_hex(const dist__id_t *id, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hex[id->b[i] >> 4];
        out[2 * i + 1] = hex[id->b[i] & 15];
    }
    out[32] = 0;
}

/* SipHash-2-4 with 128-bit output (Aumasson and Bernstein), written from
 * the paper's description: a keyed hash, so that the ids of keys a caller
 * chooses spread like random ids, and fixed here so that every program
 * maps a key to the same id. */
#define S_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void s_sipround(uint64_t v[4])
{
    v[0] += v[1]; v[1] = S_ROTL(v[1], 13); v[1] ^= v[0]; v[0] = S_ROTL(v[0], 32);
    v[2] += v[3]; v[3] = S_ROTL(v[3], 16); v[3] ^= v[2];
    v[0] += v[3]; v[3] = S_ROTL(v[3], 21); v[3] ^= v[0];
    v[2] += v[1]; v[1] = S_ROTL(v[1], 17); v[1] ^= v[2]; v[2] = S_ROTL(v[2], 32);
}

static uint64_t s_le64(const uint8_t *p)
{
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = (x << 8) | p[i];
    return x;
}

static void s_siphash128(const uint8_t key[16], const uint8_t *in, size_t n, uint8_t out[16])
{
    uint64_t k0 = s_le64(key), k1 = s_le64(key + 8);
    uint64_t v[4] = { k0 ^ 0x736f6d6570736575ull, k1 ^ 0x646f72616e646f6dull,
                      k0 ^ 0x6c7967656e657261ull, k1 ^ 0x7465646279746573ull };
    v[1] ^= 0xee;
    size_t full = n - n % 8;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = s_le64(in + i);
        v[3] ^= m;
        s_sipround(v);
        s_sipround(v);
        v[0] ^= m;
    }
    uint64_t b = (uint64_t)n << 56;
    for (size_t i = 0; i < n % 8; i++)
        b |= (uint64_t)in[full + i] << (8 * i);
    v[3] ^= b;
    s_sipround(v);
    s_sipround(v);
    v[0] ^= b;
    v[2] ^= 0xee;
    for (int r = 0; r < 4; r++)
        s_sipround(v);
    uint64_t h[2];
    h[0] = v[0] ^ v[1] ^ v[2] ^ v[3];
    v[1] ^= 0xdd;
    for (int r = 0; r < 4; r++)
        s_sipround(v);
    h[1] = v[0] ^ v[1] ^ v[2] ^ v[3];
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < 8; i++)
            out[8 * w + i] = (uint8_t)(h[w] >> (8 * i));
}

bool dist__key_ok(const char *s, size_t n)
{
    if (!s || n == 0 || n > DIST__KEY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

static int s_hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int dist__id_from_key(const char *s, size_t n, dist__id_t *id)
{
    /* The fixed hash key: changing it changes every caller's id. */
    static const uint8_t key[16] = { 'l', 'i', 'b', 'd', 'i', 's', 't', '-',
                                     't', 'a', 's', 'k', '-', 'i', 'd', '1' };
    if (!dist__key_ok(s, n))
        return DIST_EINVAL;
    bool hex = n == 32;
    for (size_t i = 0; hex && i < n; i++)
        hex = s_hexval(s[i]) >= 0;
    if (hex) {
        for (int i = 0; i < 16; i++)
            id->b[i] = (uint8_t)(s_hexval(s[2 * i]) << 4 | s_hexval(s[2 * i + 1]));
        return 0;
    }
    s_siphash128(key, (const uint8_t *)s, n, id->b);
    return 0;
}

/* ---- statuses ------------------------------------------------------------------ */

static const struct {
    const char *name;
    bool final;
    int code;
} s_status[DIST__ST_COUNT] = {
    [DIST__ST_OK] = { "ok", true, 0 },
    [DIST__ST_FAILED] = { "failed", true, DIST_ETASK },
    [DIST__ST_UNKNOWN_TASK] = { "unknown_task", true, DIST_ENOENT },
    [DIST__ST_BAD_ARGS] = { "bad_args", true, DIST_EPROTO },
    [DIST__ST_TOO_LARGE] = { "too_large", true, DIST_EMSGSIZE },
    [DIST__ST_CRASHED] = { "crashed", false, DIST_ECRASHED },
    [DIST__ST_TIMEOUT] = { "timeout", false, DIST_ETIMEDOUT },
    [DIST__ST_GAVE_UP] = { "gave_up", true, DIST_EGAVEUP },
    [DIST__ST_CANCELLED] = { "cancelled", true, DIST_ECANCELLED },
    [DIST__ST_RETRY] = { "retry", false, DIST_ERETRY },
};

const char *dist__status_name(dist__status_t st)
{
    return st < DIST__ST_COUNT ? s_status[st].name : "?";
}

dist__status_t dist__status_parse(const char *s, size_t n)
{
    for (int i = 0; i < DIST__ST_COUNT; i++)
        if (strlen(s_status[i].name) == n && memcmp(s_status[i].name, s, n) == 0)
            return (dist__status_t)i;
    return DIST__ST_COUNT;
}

bool dist__status_final(dist__status_t st) { return st >= DIST__ST_COUNT || s_status[st].final; }

int dist__status_errcode(dist__status_t st)
{
    return st < DIST__ST_COUNT ? s_status[st].code : DIST_EPROTO;
}

dist__status_t dist__status_from_code(int code)
{
    switch (code) {
    case 0: return DIST__ST_OK;
    case DIST_ECRASHED: return DIST__ST_CRASHED;
    case DIST_ETIMEDOUT: return DIST__ST_TIMEOUT;
    case DIST_ENOENT: return DIST__ST_UNKNOWN_TASK;
    case DIST_EPROTO: return DIST__ST_BAD_ARGS;
    case DIST_EMSGSIZE: return DIST__ST_TOO_LARGE;
    case DIST_ECANCELLED: return DIST__ST_CANCELLED;
    case DIST_ERETRY: return DIST__ST_RETRY;
    default: return DIST__ST_FAILED;
    }
}

/* ---- sockets -------------------------------------------------------------------- */

/* czmq installs SIGINT and SIGTERM handlers that only set a flag when its
 * first socket creates the context: a program embedding a worker or a
 * client would no longer stop on Ctrl-C or SIGTERM. A library must not
 * change that behind the program's back, so keep whatever dispositions the
 * program had. */
zsock_t *dist__sock_new(int type)
{
    struct sigaction old_int, old_term;
    sigaction(SIGINT, NULL, &old_int);
    sigaction(SIGTERM, NULL, &old_term);
    zsock_t *sock = zsock_new(type);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return sock;
}

void dist__sock_setup(zsock_t *sock, bool router, const dist__sockopts_t *o)
{
    dist__sockopts_t d = { 0, 0, 0, 0, -1 };
    if (o)
        d = *o;
    size_t max = d.max_message ? d.max_message : DIST__MAX_MESSAGE_DEFAULT;
    if (max > INT32_MAX)
        max = INT32_MAX;
    zsock_set_maxmsgsize(sock, (int)max);
    zsock_set_handshake_ivl(sock, d.handshake_ms ? d.handshake_ms : DIST__HANDSHAKE_MS);
    zsock_set_heartbeat_ivl(sock, d.heartbeat_ms ? d.heartbeat_ms : DIST__HEARTBEAT_MS);
    int hb_to = d.heartbeat_timeout_ms ? d.heartbeat_timeout_ms : DIST__HEARTBEAT_TIMEOUT_MS;
    zsock_set_heartbeat_timeout(sock, hb_to);
    zsock_set_heartbeat_ttl(sock, hb_to);
    zsock_set_linger(sock, d.linger_ms >= 0 ? d.linger_ms : router ? 0 : 500);
    /* Every send is non-blocking already (ZMQ_DONTWAIT); a send timeout of
     * 0 makes sure that no send through another path can block either: a
     * DEALER whose master refused it (ZAP) is never reconnected by libzmq,
     * and a blocking send on it would wait forever. */
    zsock_set_sndtimeo(sock, 0);
    zsock_set_sndhwm(sock, DIST__HWM);
    zsock_set_rcvhwm(sock, router ? DIST__ROUTER_RCVHWM : DIST__HWM);
    if (router) {
        zsock_set_router_mandatory(sock, 1);
    } else {
        zsock_set_reconnect_ivl(sock, 100);
        zsock_set_reconnect_ivl_max(sock, 2000);
    }
}

int dist__zmq_version_ok(char *err, size_t errlen)
{
    int major, minor, patch;
    zmq_version(&major, &minor, &patch);
    if (major * 10000 + minor * 100 + patch >= 40303)
        return 0;
    if (err)
        snprintf(err, errlen, "libzmq %d.%d.%d is too old: 4.3.3 or newer is required (known CVEs)",
                 major, minor, patch);
    return DIST_ESTATE;
}

int dist__poll(zmq_pollitem_t *items, int n, long timeout_ms, int spin_us)
{
    if (timeout_ms != 0 && spin_us > 0) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC_COARSE, &t0);
        int64_t until = (int64_t)t0.tv_sec * 1000000000 + t0.tv_nsec + (int64_t)spin_us * 1000;
        /* The coarse clock ticks every few ms: also bound the spin by a
         * count, so a short spin stays short. */
        for (int i = 0; i < spin_us / 2; i++) {
            int r = zmq_poll(items, n, 0);
            if (r != 0)
                return r;
            clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
            if ((int64_t)t.tv_sec * 1000000000 + t.tv_nsec > until)
                break;
            sched_yield();
        }
    }
    return zmq_poll(items, n, timeout_ms);
}

/* ---- receiving --------------------------------------------------------------------- */

dist_wire_limits_t dist__body_limits(size_t max_message)
{
    dist_wire_limits_t l = { DIST__BODY_DEPTH, DIST__BODY_OBJECTS,
                             max_message ? max_message : DIST__MAX_MESSAGE_DEFAULT };
    return l;
}

void dist__inmsg_clear(dist__inmsg_t *m)
{
    dist_wire_msg_destroy(&m->body);
    m->root = NULL;
}

int dist__proto_check(dist__inmsg_t *m, bool frames_ok, const uint8_t *sig, size_t sig_len,
                      const void *cmd, size_t cmd_len, const void *body, size_t body_len,
                      const dist_wire_limits_t *limits)
{
    if (!frames_ok) {
        m->bad = DIST__BAD_FRAMES;
    } else if (sig_len != DIST__PROTO_SIG_LEN || memcmp(sig, "DST", 3) != 0) {
        m->bad = DIST__BAD_SIGNATURE;
    } else if (sig[3] != DIST__PROTO_VERSION) {
        m->bad = DIST__BAD_VERSION;
        m->version = sig[3];
    } else if (cmd_len == 0 || cmd_len > 16 ||
               (m->cmd = s_cmd_parse(cmd, cmd_len)) == DIST__CMD_NONE) {
        m->bad = DIST__BAD_COMMAND;
    } else {
        int err = 0;
        m->body = dist_wire_msg_decode(body, body_len, limits, &err);
        if (m->body && dist_wire_msg_root(m->body)->type == MSGPACK_OBJECT_MAP) {
            m->root = dist_wire_msg_root(m->body);
            return 0;
        }
        dist_wire_msg_destroy(&m->body);
        m->bad = DIST__BAD_BODY;
    }
    return DIST_EPROTO;
}

int dist__proto_recv(zsock_t *sock, bool router, const dist_wire_limits_t *limits, dist__inmsg_t *m)
{
    m->rid_len = 0;
    m->cmd = DIST__CMD_NONE;
    m->body = NULL;
    m->root = NULL;
    m->bad = DIST__BAD_NONE;
    m->version = 0;
    m->user_id[0] = 0;
    void *h = zsock_resolve(sock);
    int want = router ? 4 : 3, first = router ? 1 : 0;
    int n = 0;
    bool more = true;
    uint8_t sig[DIST__PROTO_SIG_LEN];
    size_t sig_len = 0;
    char cmd[17];
    size_t cmd_len = 0;
    zmq_msg_t body;
    bool have_body = false;
    zmq_msg_init(&body);
    while (more) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        /* Multipart messages arrive whole: only the first frame may be
         * missing. */
        int r = zmq_msg_recv(&f, h, n == 0 ? ZMQ_DONTWAIT : 0);
        if (r < 0) {
            int e = errno;
            zmq_msg_close(&f);
            zmq_msg_close(&body);
            if (n == 0)
                return e == EAGAIN || e == EINTR ? DIST_EAGAIN : -e;
            return -e;
        }
        more = zmq_msg_more(&f);
        int idx = n++;
        size_t sz = zmq_msg_size(&f);
        const uint8_t *data = zmq_msg_data(&f);
        if (router && idx == 0) {
            m->rid_len = sz < sizeof m->rid ? sz : sizeof m->rid;
            memcpy(m->rid, data, m->rid_len);
        } else if (idx == first) {
            sig_len = sz;
            memcpy(sig, data, sz < sizeof sig ? sz : sizeof sig);
        } else if (idx == first + 1) {
            cmd_len = sz;
            memcpy(cmd, data, sz < sizeof cmd - 1 ? sz : sizeof cmd - 1);
            /* The commands whose handling depends on who the peer is
             * (section 9): read the connection's ZAP user id. */
            if (router && ((sz == 5 && memcmp(data, "HELLO", 5) == 0) ||
                           (sz == 7 && memcmp(data, "RESULTS", 7) == 0))) {
                const char *uid = zmq_msg_gets(&f, "User-Id");
                if (uid)
                    snprintf(m->user_id, sizeof m->user_id, "%s", uid);
            }
        } else if (idx == first + 2) {
            zmq_msg_move(&body, &f);
            have_body = true;
        }
        /* Frames past the expected ones are closed as they come. */
        zmq_msg_close(&f);
    }
    /* n == want means the body frame came (it is the last one). */
    int rc = dist__proto_check(m, n == want && have_body, sig, sig_len, cmd, cmd_len,
                               zmq_msg_data(&body), zmq_msg_size(&body), limits);
    zmq_msg_close(&body);
    return rc;
}

/* ---- sending -------------------------------------------------------------------------- */

int dist__proto_send(zsock_t *sock, const void *rid, size_t rid_len, dist__cmd_t cmd,
                     const void *body, size_t len)
{
    void *h = zsock_resolve(sock);
    static const uint8_t sig[DIST__PROTO_SIG_LEN] = { 'D', 'S', 'T', DIST__PROTO_VERSION };
    const char *name = dist__cmd_name(cmd);
    if (!name)
        return DIST_EINVAL;
    if (rid && zmq_send(h, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return errno == EAGAIN ? DIST_EAGAIN : -errno;
    /* Once the first frame is in, the rest of the message goes through. */
    if (zmq_send(h, sig, sizeof sig, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return errno == EAGAIN ? DIST_EAGAIN : -errno;
    if (zmq_send(h, name, strlen(name), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -errno;
    static const uint8_t empty_map = 0x80;
    if (!body || !len) {
        body = &empty_map;
        len = 1;
    }
    if (zmq_send(h, body, len, ZMQ_DONTWAIT) < 0)
        return -errno;
    return 0;
}

int dist__proto_send_buf(zsock_t *sock, const void *rid, size_t rid_len, dist__cmd_t cmd,
                         dist_wire_buf_t *buf)
{
    int st = dist_wire_buf_status(buf);
    if (st)
        return st;
    size_t len;
    const void *data = dist_wire_buf_data(buf, &len);
    return dist__proto_send(sock, rid, rid_len, cmd, data, len);
}

int dist__proto_send_empty(zsock_t *sock, const void *rid, size_t rid_len, dist__cmd_t cmd)
{
    return dist__proto_send(sock, rid, rid_len, cmd, NULL, 0);
}

int dist__proto_send_error(zsock_t *sock, const void *rid, size_t rid_len, const char *code,
                           const char *error, uint64_t req)
{
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    if (!b)
        return DIST_ENOMEM;
    dist__error_t e = { { code, strlen(code) }, { error, strlen(error) }, req };
    dist__pack_error(dist_wire_buf_packer(b), &e);
    int r = dist__proto_send_buf(sock, rid, rid_len, DIST__CMD_ERROR, b);
    dist_wire_buf_destroy(&b);
    return r;
}

int dist__proto_send_bad_version(zsock_t *sock, const void *rid, size_t rid_len)
{
    return dist__proto_send_error(sock, rid, rid_len, "unsupported_version",
                                  "this master speaks protocol version 1", 0);
}

/* ---- packing ------------------------------------------------------------------------------ */

void dist__pk_strn(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

void dist__pk_str(msgpack_packer *pk, const char *s) { dist__pk_strn(pk, s, s ? strlen(s) : 0); }

void dist__pk_bin(msgpack_packer *pk, const void *p, size_t n)
{
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, p, n);
}

void dist__pk_id(msgpack_packer *pk, const dist__id_t *id) { dist__pk_bin(pk, id->b, sizeof id->b); }

void dist__pk_kv_str(msgpack_packer *pk, const char *key, const char *val)
{
    dist__pk_str(pk, key);
    dist__pk_str(pk, val);
}

void dist__pk_kv_u64(msgpack_packer *pk, const char *key, uint64_t val)
{
    dist__pk_str(pk, key);
    msgpack_pack_uint64(pk, val);
}

void dist__pk_kv_f64(msgpack_packer *pk, const char *key, double val)
{
    dist__pk_str(pk, key);
    msgpack_pack_double(pk, val);
}

void dist__pk_kv_bool(msgpack_packer *pk, const char *key, bool val)
{
    dist__pk_str(pk, key);
    if (val)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

void dist__pk_kv_bin(msgpack_packer *pk, const char *key, const void *p, size_t n)
{
    dist__pk_str(pk, key);
    dist__pk_bin(pk, p, n);
}

void dist__pk_kv_id(msgpack_packer *pk, const char *key, const dist__id_t *id)
{
    dist__pk_str(pk, key);
    dist__pk_id(pk, id);
}

/* ---- reading fields ------------------------------------------------------------------------ */

int dist__get_str(const msgpack_object *map, const char *key, const char **s, size_t *n)
{
    return dist_wire_get_str(dist_wire_map_get(map, key), s, n);
}

int dist__get_u64(const msgpack_object *map, const char *key, uint64_t *v)
{
    return dist_wire_get_u64(dist_wire_map_get(map, key), v);
}

int dist__get_u32(const msgpack_object *map, const char *key, uint32_t *v)
{
    uint64_t x;
    if (dist__get_u64(map, key, &x) || x > UINT32_MAX)
        return DIST_EPROTO;
    *v = (uint32_t)x;
    return 0;
}

int dist__get_bin(const msgpack_object *map, const char *key, const void **p, size_t *n)
{
    return dist_wire_get_bin(dist_wire_map_get(map, key), p, n);
}

int dist__get_id(const msgpack_object *map, const char *key, dist__id_t *id)
{
    const void *p;
    size_t n;
    if (dist__get_bin(map, key, &p, &n) || n != sizeof id->b)
        return DIST_EPROTO;
    memcpy(id->b, p, sizeof id->b);
    return 0;
}

int dist__get_array(const msgpack_object *map, const char *key, const msgpack_object **items,
                    size_t *n)
{
    return dist_wire_get_array(dist_wire_map_get(map, key), items, n);
}

int dist__opt_u32(const msgpack_object *map, const char *key, uint32_t *v)
{
    return dist_wire_map_get(map, key) ? dist__get_u32(map, key, v) : 0;
}

int dist__opt_str(const msgpack_object *map, const char *key, const char **s, size_t *n)
{
    return dist_wire_map_get(map, key) ? dist__get_str(map, key, s, n) : 0;
}

/* ---- typed bodies ------------------------------------------------------------------------- */

bool dist__name_ok(const char *s, size_t n)
{
    if (n == 0 || n > DIST__NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

bool dist__peer_name_ok(const char *s, size_t n)
{
    return n > 0 && n <= DIST__NAME_MAX && dist__utf8_ok(s, n);
}

int dist__parse_task(const msgpack_object *o, bool with_attempt, dist__task_t *t)
{
    t->attempt = 0;
    t->timeout_ms = 0;
    if (!o || o->type != MSGPACK_OBJECT_MAP || dist__get_id(o, "id", &t->id) ||
        dist__get_str(o, "task", &t->task, &t->task_len) || !dist__name_ok(t->task, t->task_len) ||
        dist__get_bin(o, "args", &t->args, &t->args_len) ||
        dist__opt_u32(o, "timeout_ms", &t->timeout_ms))
        return DIST_EPROTO;
    if (with_attempt && (dist__get_u32(o, "attempt", &t->attempt) || t->attempt == 0))
        return DIST_EPROTO;
    return 0;
}

int dist__parse_result(const msgpack_object *o, bool with_attempt, dist__result_t *r)
{
    const char *st;
    size_t stn;
    r->attempt = 0;
    r->value = NULL;
    r->value_len = 0;
    r->error = NULL;
    r->error_len = 0;
    r->retry_ms = 0;
    if (!o || o->type != MSGPACK_OBJECT_MAP || dist__get_id(o, "id", &r->id) ||
        dist__get_str(o, "status", &st, &stn))
        return DIST_EPROTO;
    r->status = dist__status_parse(st, stn);
    if (r->status == DIST__ST_COUNT)
        return DIST_EPROTO;
    if (with_attempt && (dist__get_u32(o, "attempt", &r->attempt) || r->attempt == 0))
        return DIST_EPROTO;
    if (r->status == DIST__ST_OK)
        return dist__get_bin(o, "value", &r->value, &r->value_len);
    if (r->status == DIST__ST_RETRY && dist__opt_u32(o, "retry_ms", &r->retry_ms))
        return DIST_EPROTO;
    return dist__get_str(o, "error", &r->error, &r->error_len);
}

static void s_pack_task(msgpack_packer *pk, const dist__task_t *t, bool with_attempt,
                        size_t extra)
{
    msgpack_pack_map(pk, (with_attempt ? 5 : 4) + extra);
    dist__pk_kv_id(pk, "id", &t->id);
    if (with_attempt)
        dist__pk_kv_u64(pk, "attempt", t->attempt);
    dist__pk_str(pk, "task");
    dist__pk_strn(pk, t->task, t->task_len);
    dist__pk_kv_bin(pk, "args", t->args, t->args_len);
    dist__pk_kv_u64(pk, "timeout_ms", t->timeout_ms);
}

void dist__pack_task(msgpack_packer *pk, const dist__task_t *t, bool with_attempt)
{
    s_pack_task(pk, t, with_attempt, 0);
}

void dist__pack_submit_task(msgpack_packer *pk, const dist__task_t *t,
                            const dist__submit_opts_t *s)
{
    size_t n = s ? dist__submit_opts_count(s) : 0;
    s_pack_task(pk, t, false, n);
    if (n)
        dist__pack_submit_opts(pk, s);
}

void dist__pack_result(msgpack_packer *pk, const dist__result_t *r, bool with_attempt)
{
    bool retry = r->status == DIST__ST_RETRY;
    msgpack_pack_map(pk, (with_attempt ? 4 : 3) + (retry ? 1 : 0));
    dist__pk_kv_id(pk, "id", &r->id);
    if (retry)
        dist__pk_kv_u64(pk, "retry_ms", r->retry_ms);
    if (with_attempt)
        dist__pk_kv_u64(pk, "attempt", r->attempt);
    dist__pk_kv_str(pk, "status", dist__status_name(r->status));
    if (r->status == DIST__ST_OK) {
        dist__pk_kv_bin(pk, "value", r->value, r->value_len);
    } else {
        dist__pk_str(pk, "error");
        dist__pk_strn(pk, r->error ? r->error : "", r->error ? r->error_len : 0);
    }
}

void dist__monitor_name(char *buf, size_t len, const char *who)
{
    static atomic_uint_fast64_t next;
    snprintf(buf, len, "inproc://dist-%s-monitor-%llu", who,
             (unsigned long long)atomic_fetch_add(&next, 1));
}

bool dist__monitor_event(zsock_t *mon, uint16_t *event, uint32_t *value, char *ep, size_t eplen)
{
    /* Frame 1: the event (16 bits) and its value (32 bits), in host order;
     * frame 2: the endpoint. */
    void *h = zsock_resolve(mon);
    zmq_msg_t f;
    zmq_msg_init(&f);
    if (zmq_msg_recv(&f, h, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&f);
        return false;
    }
    *event = 0;
    if (value)
        *value = 0;
    if (ep && eplen)
        ep[0] = 0;
    if (zmq_msg_size(&f) >= 6) {
        memcpy(event, zmq_msg_data(&f), 2);
        if (value)
            memcpy(value, (uint8_t *)zmq_msg_data(&f) + 2, 4);
    }
    bool more = zmq_msg_more(&f);
    zmq_msg_close(&f);
    while (more) {
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, h, 0) < 0) {
            zmq_msg_close(&f);
            break;
        }
        size_t n = zmq_msg_size(&f);
        if (ep && eplen && !ep[0] && n) {
            n = n < eplen - 1 ? n : eplen - 1;
            memcpy(ep, zmq_msg_data(&f), n);
            ep[n] = 0;
        }
        more = zmq_msg_more(&f);
        zmq_msg_close(&f);
    }
    return true;
}

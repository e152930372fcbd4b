/*  fuzz_wire.c - libFuzzer harness for the wire codec (dist/wire.h).
 *
 *  Each input is taken whole as one frame and checked under three sets of
 *  limits: the defaults, the loosest allowed, and tight ones derived from
 *  a hash of the input (so a crash reproduces from the file alone). The
 *  invariants, checked with abort() so libFuzzer reports them:
 *
 *  - validate returns 0, DIST_EPROTO or DIST_EMSGSIZE, agrees with
 *    validate_seq, dist_wire_decode and dist_wire_msg_decode, and is
 *    monotonic (accepted under tight limits => accepted under loose ones;
 *    malformed under loose limits => rejected under any);
 *  - whatever validates decodes with msgpack_unpack as SUCCESS consuming
 *    every byte, into a zone of (objects - 1) * sizeof(msgpack_object)
 *    bytes without growing it (the bound dist_wire_msg_t relies on);
 *  - the decoded tree respects the limits, its payloads point into the
 *    message's own bytes, every accessor agrees with the object's type, and
 *    map_get finds the first entry of each str key;
 *  - packing the tree again gives bytes that validate under the same
 *    limits and decode to the same tree, and a size-limited dist_wire_buf
 *    either holds the same bytes or reports DIST_EMSGSIZE within its limit.
 *
 *  - every message-body parser of the protocol (net/proto_msg.c) answers a
 *    decoded map with 0 or its documented error and never crashes; a HELLO
 *    it accepts packs back to one it accepts with the same fields, and a
 *    WELCOME's clamped values are a fixed point (parse, pack, parse again
 *    gives the same numbers).
 *
 *  Memory bombs show up as libFuzzer's malloc limit: run it with
 *  -malloc_limit_mb=256 -rss_limit_mb=512 (scripts/fuzz does).
 */
#include <dist.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_wire: %s:%d: invariant failed: %s\n", __FILE__, __LINE__,        \
                    #cond);                                                                        \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Facts gathered by walking a decoded tree. */
struct walk {
    size_t objects;
    size_t depth; /* deepest container nesting */
    size_t longest; /* longest str/bin/ext payload */
    const char *lo, *hi; /* where payloads must lie, when lo is set */
};

/* A str/bin/ext payload: inside the message's bytes, and the longest yet? */
static void s_payload(struct walk *w, const char *p, size_t n)
{
    if (n > w->longest)
        w->longest = n;
    if (w->lo && n > 0)
        CHECK(p >= w->lo && p + n <= w->hi);
}

/* Every accessor on o must agree with o's type. */
static void s_accessors(const msgpack_object *o)
{
    uint64_t u;
    int64_t i;
    double f;
    bool b;
    const char *s;
    const void *p;
    const msgpack_object *items;
    const msgpack_object_kv *kv;
    size_t n;
    msgpack_object_type t = o->type;
    CHECK((dist_wire_get_u64(o, &u) == 0) == (t == MSGPACK_OBJECT_POSITIVE_INTEGER));
    int ri = dist_wire_get_i64(o, &i);
    CHECK((ri == 0) == (t == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
                        (t == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)));
    if (ri == 0 && t == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        CHECK(i < 0);
    CHECK((dist_wire_get_f64(o, &f) == 0) ==
          (t == MSGPACK_OBJECT_POSITIVE_INTEGER || t == MSGPACK_OBJECT_NEGATIVE_INTEGER ||
           t == MSGPACK_OBJECT_FLOAT32 || t == MSGPACK_OBJECT_FLOAT64));
    CHECK((dist_wire_get_bool(o, &b) == 0) == (t == MSGPACK_OBJECT_BOOLEAN));
    CHECK((dist_wire_get_str(o, &s, &n) == 0) == (t == MSGPACK_OBJECT_STR));
    if (t == MSGPACK_OBJECT_STR)
        CHECK(s != NULL && n == o->via.str.size);
    CHECK((dist_wire_get_bin(o, &p, &n) == 0) == (t == MSGPACK_OBJECT_BIN));
    if (t == MSGPACK_OBJECT_BIN)
        CHECK(p != NULL && n == o->via.bin.size);
    CHECK((dist_wire_get_array(o, &items, &n) == 0) == (t == MSGPACK_OBJECT_ARRAY));
    CHECK((dist_wire_get_map(o, &kv, &n) == 0) == (t == MSGPACK_OBJECT_MAP));
    CHECK(dist_wire_map_get(o, "") == NULL || t == MSGPACK_OBJECT_MAP);
}

/* map_get(map, key) must return the value of the first entry whose key is
 * the str `key`. */
static void s_map_lookup(const msgpack_object *map, const msgpack_object *key)
{
    char cstr[64];
    const char *ptr;
    size_t n;
    CHECK(dist_wire_get_str(key, &ptr, &n) == 0);
    if (n >= sizeof cstr || memchr(ptr, 0, n))
        return; /* not expressible as a short C string */
    memcpy(cstr, ptr, n);
    cstr[n] = 0;
    const msgpack_object *v = dist_wire_map_get(map, cstr);
    CHECK(v != NULL);
    CHECK(dist_wire_str_eq(key, cstr));
    for (uint32_t j = 0; j < map->via.map.size; j++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[j];
        if (dist_wire_str_eq(&kv->key, cstr)) {
            CHECK(v == &kv->val);
            break;
        }
    }
}

static void s_walk(const msgpack_object *o, size_t depth, struct walk *w)
{
    w->objects++;
    s_accessors(o);
    switch (o->type) {
    case MSGPACK_OBJECT_STR: s_payload(w, o->via.str.ptr, o->via.str.size); break;
    case MSGPACK_OBJECT_BIN: s_payload(w, o->via.bin.ptr, o->via.bin.size); break;
    case MSGPACK_OBJECT_EXT: s_payload(w, o->via.ext.ptr, o->via.ext.size); break;
    case MSGPACK_OBJECT_ARRAY:
        if (depth + 1 > w->depth)
            w->depth = depth + 1;
        for (uint32_t i = 0; i < o->via.array.size; i++)
            s_walk(&o->via.array.ptr[i], depth + 1, w);
        break;
    case MSGPACK_OBJECT_MAP:
        if (depth + 1 > w->depth)
            w->depth = depth + 1;
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            s_walk(&o->via.map.ptr[i].key, depth + 1, w);
            s_walk(&o->via.map.ptr[i].val, depth + 1, w);
            if (o->via.map.ptr[i].key.type == MSGPACK_OBJECT_STR)
                s_map_lookup(o, &o->via.map.ptr[i].key);
        }
        break;
    default: break;
    }
}

/* Structural equality where NaN equals NaN (msgpack_object_equal says a
 * NaN differs from itself, and re-packing must keep NaNs). */
static bool s_equal(const msgpack_object *a, const msgpack_object *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return a->via.f64 == b->via.f64 || (isnan(a->via.f64) && isnan(b->via.f64));
    case MSGPACK_OBJECT_ARRAY:
        if (a->via.array.size != b->via.array.size)
            return false;
        for (uint32_t i = 0; i < a->via.array.size; i++)
            if (!s_equal(&a->via.array.ptr[i], &b->via.array.ptr[i]))
                return false;
        return true;
    case MSGPACK_OBJECT_MAP:
        if (a->via.map.size != b->via.map.size)
            return false;
        for (uint32_t i = 0; i < a->via.map.size; i++)
            if (!s_equal(&a->via.map.ptr[i].key, &b->via.map.ptr[i].key) ||
                !s_equal(&a->via.map.ptr[i].val, &b->via.map.ptr[i].val))
                return false;
        return true;
    default: return msgpack_object_equal(*a, *b);
    }
}

static dist_wire_limits_t s_resolved(const dist_wire_limits_t *l)
{
    dist_wire_limits_t r = dist_wire_limits_default();
    if (!l)
        return r;
    if (l->max_depth)
        r.max_depth = l->max_depth < DIST_WIRE_DEPTH_MAX ? l->max_depth : DIST_WIRE_DEPTH_MAX;
    if (l->max_objects)
        r.max_objects = l->max_objects;
    if (l->max_str)
        r.max_str = l->max_str;
    return r;
}

/* Runs every check for one (input, limits) pair; returns validate's code. */
static int s_one(const uint8_t *data, size_t size, const dist_wire_limits_t *lim)
{
    int rc = dist_wire_validate(data, size, lim);
    CHECK(rc == 0 || rc == DIST_EPROTO || rc == DIST_EMSGSIZE);
    int seq = dist_wire_validate_seq(data, size, lim);
    CHECK(seq >= 1 || seq == DIST_EPROTO || seq == DIST_EMSGSIZE);
    if (rc == 0)
        CHECK(seq == 1);
    if (seq > 1)
        CHECK(rc == DIST_EPROTO); /* more than one value: trailing bytes */

    int err = 0;
    dist_wire_msg_t *m = dist_wire_msg_decode(data, size, lim, &err);
    CHECK((m != NULL) == (rc == 0));
    CHECK(err == rc);
    if (rc != 0) {
        msgpack_zone zone;
        CHECK(msgpack_zone_init(&zone, 64));
        msgpack_object o;
        CHECK(dist_wire_decode(data, size, lim, &zone, &o) == rc);
        msgpack_zone_destroy(&zone);
        return rc;
    }

    dist_wire_limits_t r = s_resolved(lim);
    size_t mlen;
    const char *mdata = dist_wire_msg_data(m, &mlen);
    CHECK(mlen == size && memcmp(mdata, data, size) == 0);
    const msgpack_object *root = dist_wire_msg_root(m);
    struct walk w = { .lo = mdata, .hi = mdata + mlen };
    s_walk(root, 0, &w);
    CHECK(w.depth <= r.max_depth);
    CHECK(w.objects <= r.max_objects && w.objects <= size);
    CHECK(w.longest <= r.max_str);

    /* msgpack-c itself, into a zone sized as dist_wire_msg_t sizes its own:
     * it must succeed, consume everything, and never need a second chunk. */
    msgpack_zone zone;
    size_t chunk = (w.objects - 1) * sizeof(msgpack_object) + 64;
    CHECK(msgpack_zone_init(&zone, chunk));
    void *head = zone.chunk_list.head;
    size_t off = 0;
    msgpack_object ref;
    CHECK(msgpack_unpack((const char *)data, size, &off, &zone, &ref) == MSGPACK_UNPACK_SUCCESS);
    CHECK(off == size);
    CHECK(zone.chunk_list.head == head);
    CHECK(s_equal(&ref, root));
    msgpack_object mine;
    CHECK(dist_wire_decode(data, size, lim, &zone, &mine) == 0);
    CHECK(s_equal(&mine, root));
    msgpack_zone_destroy(&zone);

    /* Re-pack: the canonical form validates under the same limits and
     * decodes to the same tree. */
    dist_wire_buf_t *buf = dist_wire_buf_new(0);
    CHECK(buf);
    CHECK(msgpack_pack_object(dist_wire_buf_packer(buf), *root) == 0);
    CHECK(dist_wire_buf_status(buf) == 0);
    size_t plen;
    const void *packed = dist_wire_buf_data(buf, &plen);
    dist_wire_msg_t *again = dist_wire_msg_decode(packed, plen, lim, &err);
    CHECK(again != NULL);
    CHECK(s_equal(dist_wire_msg_root(again), root));
    dist_wire_msg_destroy(&again);

    /* A size-limited buffer stops at its limit and says so. */
    size_t max = 1 + (size * 7) % (plen + 2);
    dist_wire_buf_t *small = dist_wire_buf_new(max);
    CHECK(small);
    msgpack_pack_object(dist_wire_buf_packer(small), *root);
    size_t slen;
    const void *sdata = dist_wire_buf_data(small, &slen);
    CHECK(slen <= max);
    if (plen <= max) {
        CHECK(dist_wire_buf_status(small) == 0);
        CHECK(slen == plen && memcmp(sdata, packed, plen) == 0);
    } else {
        CHECK(dist_wire_buf_status(small) == DIST_EMSGSIZE);
        CHECK(slen == 0 || memcmp(sdata, packed, slen) == 0);
    }
    size_t rlen;
    void *released = dist_wire_buf_release(small, &rlen);
    CHECK(rlen == slen);
    free(released);
    CHECK(dist_wire_buf_status(small) == 0);
    dist_wire_buf_destroy(&small);
    dist_wire_buf_destroy(&buf);
    dist_wire_msg_destroy(&m);
    return 0;
}

/* Packs with the body packer into a fresh buffer and decodes it. */
static dist_wire_msg_t *s_redecode(dist_wire_buf_t *b)
{
    size_t len;
    const void *d = dist_wire_buf_data(b, &len);
    CHECK(dist_wire_buf_status(b) == 0);
    dist_wire_msg_t *m = dist_wire_msg_decode(d, len, NULL, NULL);
    CHECK(m != NULL);
    return m;
}

static bool s_str_same(dist__str_t a, dist__str_t b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.s, b.s, a.n) == 0);
}

/* Every body parser on one decoded value. */
static void s_bodies(const msgpack_object *o)
{
    dist__hello_t h;
    const char *why = NULL;
    int rc = dist__parse_hello(o, &h, &why);
    CHECK(rc == 0 ? why == NULL : (rc == DIST_EPROTO && why != NULL));
    if (rc == 0) {
        dist__str_t names[64];
        if (h.ntasks <= 64) {
            for (size_t i = 0; i < h.ntasks; i++)
                names[i] = (dist__str_t){ h.tasks[i].via.str.ptr, h.tasks[i].via.str.size };
            h.names = names;
            dist_wire_buf_t *b = dist_wire_buf_new(0);
            dist__pack_hello(dist_wire_buf_packer(b), &h);
            dist_wire_msg_t *m = s_redecode(b);
            dist__hello_t h2;
            CHECK(dist__parse_hello(dist_wire_msg_root(m), &h2, NULL) == 0);
            CHECK(h2.role == h.role && h2.pid == h.pid && h2.slots == h.slots &&
                  h2.capacity == h.capacity && h2.ntasks == h.ntasks);
            CHECK(s_str_same(h2.name, h.name) && s_str_same(h2.host, h.host) &&
                  s_str_same(h2.version, h.version));
            dist_wire_msg_destroy(&m);
            dist_wire_buf_destroy(&b);
        }
    }
    dist__welcome_t w, w2;
    rc = dist__parse_welcome(o, &w);
    CHECK(rc == 0 || rc == DIST_EPROTO);
    CHECK(w.heartbeat_ms >= 10 && w.heartbeat_ms <= 3600000);
    CHECK(w.heartbeat_timeout_ms >= w.heartbeat_ms && w.heartbeat_timeout_ms <= 3600000);
    CHECK(w.max_batch >= 1 && w.max_batch <= DIST__MAX_BATCH && w.max_message >= 4096);
    CHECK(w.master.n <= DIST__NAME_MAX && w.version.n <= DIST__NAME_MAX);
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    dist__pack_welcome(dist_wire_buf_packer(b), &w);
    dist_wire_msg_t *m = s_redecode(b);
    CHECK(dist__parse_welcome(dist_wire_msg_root(m), &w2) == 0);
    CHECK(w2.heartbeat_ms == w.heartbeat_ms && w2.heartbeat_timeout_ms == w.heartbeat_timeout_ms &&
          w2.max_batch == w.max_batch && w2.max_message == w.max_message &&
          w2.pending_results == w.pending_results && w2.client == w.client &&
          s_str_same(w2.master, w.master) && s_str_same(w2.version, w.version));
    dist_wire_msg_destroy(&m);
    dist_wire_buf_destroy(&b);

    dist__error_t e;
    rc = dist__parse_error(o, &e);
    CHECK(rc == 0 || rc == DIST_EPROTO);
    dist__credit_t c;
    rc = dist__parse_credit(o, &c);
    CHECK(rc == 0 || rc == DIST_EPROTO);
    static const dist__cmd_t lists[] = { DIST__CMD_TASKS, DIST__CMD_RESULTS, DIST__CMD_ACK };
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        const msgpack_object *items;
        size_t n;
        if (dist__parse_list(o, lists[i], &items, &n))
            continue;
        for (size_t k = 0; k < n; k++) {
            dist__task_t t;
            dist__result_t r;
            dist__id_t id;
            CHECK(dist__parse_task(&items[k], true, &t) <= 0);
            CHECK(dist__parse_result(&items[k], false, &r) <= 0);
            (void)dist__list_id(&items[k], &id);
        }
    }
    dist__accepted_t a;
    if (dist__parse_accepted(o, &a) == 0)
        for (size_t k = 0; k < a.nrejected; k++) {
            dist__reject_t r;
            rc = dist__parse_reject(&a.rejected[k], &r);
            CHECK(rc == 0 || rc == DIST_EPROTO);
        }
    dist__qput_t qp;
    rc = dist__parse_qput(o, &qp);
    CHECK(rc == 0 || rc == DIST_EPROTO || rc == DIST_EINVAL);
    if (rc == 0)
        CHECK(qp.nitems >= 1 && qp.nitems <= DIST__MAX_BATCH && dist__name_ok(qp.queue.s, qp.queue.n));
    dist__qget_t qg;
    rc = dist__parse_qget(o, &qg);
    CHECK(rc == 0 || rc == DIST_EPROTO || rc == DIST_EINVAL);
    if (rc == 0)
        CHECK(qg.max >= 1);
    dist__qreply_t qr;
    rc = dist__parse_qreply(o, &qr);
    CHECK(rc == 0 || rc == DIST_EPROTO);
    dist__status_req_t sr;
    rc = dist__parse_status_req(o, &sr);
    CHECK(rc == 0 || rc == DIST_EPROTO);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Tight limits from an FNV-1a hash of the input: reproducible from the
     * input alone, and different for every input. */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    dist_wire_limits_t tight = {
        .max_depth = 1 + h % 6,
        .max_objects = 1 + (h >> 3) % 64,
        .max_str = 1 + (h >> 9) % 32,
    };
    dist_wire_limits_t loose = {
        .max_depth = DIST_WIRE_DEPTH_MAX,
        .max_objects = SIZE_MAX,
        .max_str = SIZE_MAX,
    };
    int rd = s_one(data, size, NULL);
    int rl = s_one(data, size, &loose);
    int rt = s_one(data, size, &tight);
    if (rt == 0 || rd == 0)
        CHECK(rl == 0);
    if (rl == DIST_EPROTO) /* tighter limits may trip before the flaw is reached */
        CHECK(rd != 0 && rt != 0);
    if (rd == 0) {
        dist_wire_msg_t *m = dist_wire_msg_decode(data, size, NULL, NULL);
        CHECK(m != NULL);
        s_bodies(dist_wire_msg_root(m));
        dist_wire_msg_destroy(&m);
    }
    return 0;
}

/*  proto_msg.c - the bodies of HELLO, WELCOME, ERROR, CREDIT, the list
 *  bodies (TASKS, SUBMIT, RESULTS, ACK, RETURN), ACCEPTED, NOTICE, the
 *  requests (QPUT, QGET, QREPLY, STATUS), and task control (the options of a
 *  SUBMIT task, LOOKUP, FETCH, CANCEL, FAILED, RETRY, REPLY): one parse and
 *  one pack function each
 *  (proto_internal.h, docs/PROTOCOL.md sections 4 to 8).
 *
 *  Why one place: the master, the worker, the client, the fakes of the
 *  tests and the fuzzers used to read these maps each in their own way,
 *  and the two peers clamped WELCOME differently. A rule about a field now
 *  lives here once, next to the code that packs it.
 */
#include "proto_internal.h"

#include <string.h>

#include "dist/error.h"
#include "utf8_internal.h"

static bool s_str_eq(dist__str_t s, const char *lit)
{
    return s.n == strlen(lit) && memcmp(s.s, lit, s.n) == 0;
}

static void s_pk_kv_strn(msgpack_packer *pk, const char *key, dist__str_t v)
{
    dist__pk_str(pk, key);
    dist__pk_strn(pk, v.s ? v.s : "", v.s ? v.n : 0);
}

/* Each of items[0..n) a str that dist__name_ok accepts. */
static bool s_names_ok(const msgpack_object *items, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *t;
        size_t tn;
        if (dist_wire_get_str(&items[i], &t, &tn) || !dist__name_ok(t, tn))
            return false;
    }
    return true;
}

/* ---- HELLO -------------------------------------------------------------------------- */

int dist__parse_hello(const msgpack_object *o, dist__hello_t *h, const char **why)
{
    const char *bad = NULL;
    dist__str_t role = { 0 };
    memset(h, 0, sizeof *h);
    h->version.s = "";
    if (!o || o->type != MSGPACK_OBJECT_MAP || dist__get_str(o, "role", &role.s, &role.n))
        bad = "HELLO needs role";
    else if (s_str_eq(role, "worker"))
        h->role = DIST__PEER_WORKER;
    else if (s_str_eq(role, "client"))
        h->role = DIST__PEER_CLIENT;
    else
        bad = "HELLO role must be \"worker\" or \"client\"";
    if (bad) {
    } else if (dist__get_str(o, "name", &h->name.s, &h->name.n) ||
               !dist__peer_name_ok(h->name.s, h->name.n)) {
        bad = "HELLO name must be a str of 1-128 bytes of UTF-8 without NUL";
    } else if (dist__get_str(o, "host", &h->host.s, &h->host.n) ||
               !dist__peer_name_ok(h->host.s, h->host.n)) {
        bad = "HELLO host must be a str of 1-128 bytes of UTF-8 without NUL";
    } else if (dist__get_u32(o, "pid", &h->pid)) {
        bad = "HELLO pid must be a u32";
    } else if (dist__opt_str(o, "version", &h->version.s, &h->version.n) ||
               h->version.n > DIST__NAME_MAX || !dist__utf8_ok(h->version.s, h->version.n)) {
        bad = "HELLO version must be a str of at most 128 bytes of UTF-8 without NUL";
    } else if (h->role == DIST__PEER_WORKER) {
        if (dist__get_u32(o, "slots", &h->slots) || h->slots == 0)
            bad = "a worker's HELLO needs slots >= 1";
        else if (dist__get_u32(o, "capacity", &h->capacity) || h->capacity == 0)
            bad = "a worker's HELLO needs capacity >= 1";
        else if (dist__get_array(o, "tasks", &h->tasks, &h->ntasks) ||
                 h->ntasks > DIST__MAX_BATCH)
            bad = "a worker's HELLO needs tasks, an array of at most 10000 names";
        else if (!s_names_ok(h->tasks, h->ntasks))
            bad = "task names are 1-128 letters, digits and ._:-";
    }
    if (why)
        *why = bad;
    return bad ? DIST_EPROTO : 0;
}

void dist__pack_hello(msgpack_packer *pk, const dist__hello_t *h)
{
    bool worker = h->role == DIST__PEER_WORKER;
    bool version = h->version.s && h->version.n;
    msgpack_pack_map(pk, 4 + (version ? 1 : 0) + (worker ? 3 : 0));
    dist__pk_kv_str(pk, "role", worker ? "worker" : "client");
    s_pk_kv_strn(pk, "name", h->name);
    s_pk_kv_strn(pk, "host", h->host);
    dist__pk_kv_u64(pk, "pid", h->pid);
    if (version)
        s_pk_kv_strn(pk, "version", h->version);
    if (!worker)
        return;
    dist__pk_kv_u64(pk, "slots", h->slots);
    dist__pk_kv_u64(pk, "capacity", h->capacity);
    dist__pk_str(pk, "tasks");
    msgpack_pack_array(pk, h->ntasks);
    for (size_t i = 0; i < h->ntasks; i++)
        dist__pk_strn(pk, h->names[i].s, h->names[i].n);
}

/* ---- WELCOME ------------------------------------------------------------------------ */

/* An optional u32: absent or 0 gives `def`, then clamped to [lo, hi]. *bad
 * is set for a present field of the wrong type. */
static uint32_t s_u32_clamped(const msgpack_object *o, const char *key, uint32_t def, uint32_t lo,
                              uint32_t hi, bool *bad)
{
    uint32_t v = 0;
    if (dist__opt_u32(o, key, &v)) {
        *bad = true;
        v = 0;
    }
    if (v == 0)
        v = def;
    return v < lo ? lo : v > hi ? hi : v;
}

static dist__str_t s_str_cut(const msgpack_object *o, const char *key, bool *bad)
{
    dist__str_t s = { "", 0 };
    if (dist__opt_str(o, key, &s.s, &s.n)) {
        *bad = true;
        s.s = "";
        s.n = 0;
    }
    if (s.n > DIST__NAME_MAX)
        s.n = DIST__NAME_MAX;
    return s;
}

static bool s_instance_ok(dist__str_t s)
{
    if (s.n != DIST__INSTANCE_LEN)
        return false;
    for (size_t i = 0; i < s.n; i++)
        if (!((s.s[i] >= '0' && s.s[i] <= '9') || (s.s[i] >= 'a' && s.s[i] <= 'f')))
            return false;
    return true;
}

int dist__parse_welcome(const msgpack_object *o, dist__welcome_t *w)
{
    static const msgpack_object empty = { .type = MSGPACK_OBJECT_MAP };
    bool bad = false;
    if (!o || o->type != MSGPACK_OBJECT_MAP) {
        o = &empty;
        bad = true;
    }
    memset(w, 0, sizeof *w);
    w->master = s_str_cut(o, "master", &bad);
    w->version = s_str_cut(o, "version", &bad);
    w->heartbeat_ms = s_u32_clamped(o, "heartbeat_ms", DIST__HEARTBEAT_MS, 10, 3600000, &bad);
    w->heartbeat_timeout_ms = s_u32_clamped(o, "heartbeat_timeout_ms", DIST__HEARTBEAT_TIMEOUT_MS,
                                            w->heartbeat_ms, 3600000, &bad);
    w->max_batch = s_u32_clamped(o, "max_batch", DIST__MAX_BATCH, 1, DIST__MAX_BATCH, &bad);
    uint32_t mm = DIST__MAX_MESSAGE_DEFAULT > UINT32_MAX ? UINT32_MAX
                                                         : (uint32_t)DIST__MAX_MESSAGE_DEFAULT;
    w->max_message = s_u32_clamped(o, "max_message", mm, 4096, UINT32_MAX, &bad);
    w->pending_results = s_u32_clamped(o, "pending_results", 0, 0, UINT32_MAX, &bad);
    w->client = dist_wire_map_get(o, "pending_results") != NULL;
    w->instance = s_str_cut(o, "instance", &bad);
    if (w->instance.n && !s_instance_ok(w->instance)) {
        bad = true;
        w->instance = (dist__str_t){ "", 0 };
    }
    return bad ? DIST_EPROTO : 0;
}

void dist__pack_welcome(msgpack_packer *pk, const dist__welcome_t *w)
{
    bool instance = w->instance.s && w->instance.n;
    msgpack_pack_map(pk, 6 + (w->client ? 1 : 0) + (instance ? 1 : 0));
    s_pk_kv_strn(pk, "master", w->master);
    s_pk_kv_strn(pk, "version", w->version);
    dist__pk_kv_u64(pk, "heartbeat_ms", w->heartbeat_ms);
    dist__pk_kv_u64(pk, "heartbeat_timeout_ms", w->heartbeat_timeout_ms);
    dist__pk_kv_u64(pk, "max_message", w->max_message);
    dist__pk_kv_u64(pk, "max_batch", w->max_batch);
    if (w->client)
        dist__pk_kv_u64(pk, "pending_results", w->pending_results);
    if (instance)
        s_pk_kv_strn(pk, "instance", w->instance);
}

/* ---- ERROR, CREDIT ------------------------------------------------------------------ */

int dist__parse_error(const msgpack_object *o, dist__error_t *e)
{
    memset(e, 0, sizeof *e);
    e->code.s = e->error.s = "";
    if (!o || o->type != MSGPACK_OBJECT_MAP || dist__get_str(o, "code", &e->code.s, &e->code.n) ||
        dist__get_str(o, "error", &e->error.s, &e->error.n) ||
        (dist_wire_map_get(o, "req") && dist__get_u64(o, "req", &e->req)))
        return DIST_EPROTO;
    return 0;
}

void dist__pack_error(msgpack_packer *pk, const dist__error_t *e)
{
    msgpack_pack_map(pk, e->req ? 3 : 2);
    s_pk_kv_strn(pk, "code", e->code);
    s_pk_kv_strn(pk, "error", e->error);
    if (e->req)
        dist__pk_kv_u64(pk, "req", e->req);
}

int dist__parse_credit(const msgpack_object *o, dist__credit_t *c)
{
    c->capacity = 0;
    if (!o || o->type != MSGPACK_OBJECT_MAP || dist__get_u32(o, "capacity", &c->capacity))
        return DIST_EPROTO;
    return 0;
}

void dist__pack_credit(msgpack_packer *pk, const dist__credit_t *c)
{
    msgpack_pack_map(pk, 1);
    dist__pk_kv_u64(pk, "capacity", c->capacity);
}

/* ---- lists -------------------------------------------------------------------------- */

static const char *s_list_key(dist__cmd_t cmd)
{
    switch (cmd) {
    case DIST__CMD_TASKS:
    case DIST__CMD_SUBMIT: return "tasks";
    case DIST__CMD_RESULTS: return "results";
    case DIST__CMD_ACK:
    case DIST__CMD_RETURN: return "ids";
    default: return NULL;
    }
}

void dist__pack_list_head(msgpack_packer *pk, dist__cmd_t cmd, size_t n)
{
    const char *key = s_list_key(cmd);
    msgpack_pack_map(pk, 1);
    dist__pk_str(pk, key ? key : "?");
    if (n >= UINT32_MAX) {
        /* msgpack-c picks the shortest header: write the array32 form
         * by hand so that the count can be patched in place. */
        static const unsigned char a32[5] = { 0xdd, 0xff, 0xff, 0xff, 0xff };
        msgpack_pack_str_body(pk, a32, sizeof a32); /* raw bytes: no header of its own */
    } else {
        msgpack_pack_array(pk, n);
    }
}

int dist__parse_list(const msgpack_object *o, dist__cmd_t cmd, const msgpack_object **items,
                     size_t *n)
{
    const char *key = s_list_key(cmd);
    *items = NULL;
    *n = 0;
    if (!key || !o || o->type != MSGPACK_OBJECT_MAP || dist__get_array(o, key, items, n))
        return DIST_EPROTO;
    return 0;
}

bool dist__list_id(const msgpack_object *item, dist__id_t *id)
{
    const void *p;
    size_t n;
    if (dist_wire_get_bin(item, &p, &n) || n != sizeof id->b)
        return false;
    memcpy(id->b, p, sizeof id->b);
    return true;
}

/* ---- ACCEPTED ----------------------------------------------------------------------- */

/* An optional array of task names: absent leaves *n 0; anything but an
 * array of at most DIST__MAX_BATCH dist__name_ok strs is DIST_EPROTO. */
static int s_opt_names(const msgpack_object *o, const char *key, const msgpack_object **items,
                       size_t *n)
{
    *items = NULL;
    *n = 0;
    if (!dist_wire_map_get(o, key))
        return 0;
    if (dist__get_array(o, key, items, n) || *n > DIST__MAX_BATCH || !s_names_ok(*items, *n))
        return DIST_EPROTO;
    return 0;
}

void dist__pack_names(msgpack_packer *pk, const char *key, const dist__str_t *names, size_t n)
{
    dist__pk_str(pk, key);
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++)
        dist__pk_strn(pk, names[i].s, names[i].n);
}

int dist__parse_accepted(const msgpack_object *o, dist__accepted_t *a)
{
    memset(a, 0, sizeof *a);
    if (!o || o->type != MSGPACK_OBJECT_MAP || dist__get_array(o, "ids", &a->ids, &a->nids) ||
        dist__get_array(o, "rejected", &a->rejected, &a->nrejected) ||
        s_opt_names(o, "unserved", &a->unserved, &a->nunserved))
        return DIST_EPROTO;
    return 0;
}

void dist__pack_accepted_head(msgpack_packer *pk, size_t nids, bool unserved)
{
    msgpack_pack_map(pk, unserved ? 3 : 2);
    dist__pk_str(pk, "ids");
    msgpack_pack_array(pk, nids);
}

void dist__pack_accepted(msgpack_packer *pk, size_t nids)
{
    dist__pack_accepted_head(pk, nids, false);
}

void dist__pack_rejected(msgpack_packer *pk, size_t nrejected)
{
    dist__pk_str(pk, "rejected");
    msgpack_pack_array(pk, nrejected);
}

int dist__parse_reject(const msgpack_object *o, dist__reject_t *r)
{
    memset(r, 0, sizeof *r);
    if (!o || o->type != MSGPACK_OBJECT_MAP || dist__get_u32(o, "index", &r->index) ||
        dist__get_str(o, "code", &r->code.s, &r->code.n) ||
        dist__get_str(o, "error", &r->error.s, &r->error.n))
        return DIST_EPROTO;
    if (dist_wire_map_get(o, "id")) {
        if (dist__get_id(o, "id", &r->id))
            return DIST_EPROTO;
        r->has_id = true;
    }
    return 0;
}

void dist__pack_reject(msgpack_packer *pk, const dist__reject_t *r)
{
    msgpack_pack_map(pk, r->has_id ? 4 : 3);
    if (r->has_id)
        dist__pk_kv_id(pk, "id", &r->id);
    dist__pk_kv_u64(pk, "index", r->index);
    s_pk_kv_strn(pk, "code", r->code);
    s_pk_kv_strn(pk, "error", r->error);
}

/* ---- NOTICE ------------------------------------------------------------------------- */

int dist__parse_notice(const msgpack_object *o, dist__notice_t *n)
{
    memset(n, 0, sizeof *n);
    if (!o || o->type != MSGPACK_OBJECT_MAP ||
        s_opt_names(o, "served", &n->served, &n->nserved) ||
        s_opt_names(o, "unserved", &n->unserved, &n->nunserved))
        return DIST_EPROTO;
    return 0;
}

void dist__pack_notice(msgpack_packer *pk, const dist__notice_t *n)
{
    msgpack_pack_map(pk, (n->nserved ? 1 : 0) + (n->nunserved ? 1 : 0));
    if (n->nserved)
        dist__pack_names(pk, "served", n->served_names, n->nserved);
    if (n->nunserved)
        dist__pack_names(pk, "unserved", n->unserved_names, n->nunserved);
}

/* ---- requests ----------------------------------------------------------------------- */

/* req, then queue: DIST_EPROTO without req, DIST_EINVAL for a bad queue. */
static int s_req_head(const msgpack_object *o, uint64_t *req, dist__str_t *queue)
{
    *req = 0;
    if (!o || o->type != MSGPACK_OBJECT_MAP || dist__get_u64(o, "req", req))
        return DIST_EPROTO;
    if (!queue)
        return 0;
    if (dist__get_str(o, "queue", &queue->s, &queue->n) || !dist__name_ok(queue->s, queue->n))
        return DIST_EINVAL;
    return 0;
}

static bool s_all_bins(const msgpack_object *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (items[i].type != MSGPACK_OBJECT_BIN)
            return false;
    return true;
}

int dist__parse_qput(const msgpack_object *o, dist__qput_t *q)
{
    memset(q, 0, sizeof *q);
    int rc = s_req_head(o, &q->req, &q->queue);
    if (rc)
        return rc;
    if (dist__get_array(o, "items", &q->items, &q->nitems) || q->nitems < 1 ||
        q->nitems > DIST__MAX_BATCH || !s_all_bins(q->items, q->nitems) ||
        dist__opt_u32(o, "timeout_ms", &q->timeout_ms))
        return DIST_EINVAL;
    return 0;
}

void dist__pack_qput(msgpack_packer *pk, const dist__qput_t *q)
{
    msgpack_pack_map(pk, 4);
    dist__pk_kv_u64(pk, "req", q->req);
    s_pk_kv_strn(pk, "queue", q->queue);
    dist__pk_kv_u64(pk, "timeout_ms", q->timeout_ms);
    dist__pk_str(pk, "items");
    msgpack_pack_array(pk, q->nitems);
}

int dist__parse_qget(const msgpack_object *o, dist__qget_t *q)
{
    memset(q, 0, sizeof *q);
    q->max = 1;
    int rc = s_req_head(o, &q->req, &q->queue);
    if (rc)
        return rc;
    if (dist__opt_u32(o, "max", &q->max) || q->max == 0 ||
        dist__opt_u32(o, "timeout_ms", &q->timeout_ms))
        return DIST_EINVAL;
    return 0;
}

void dist__pack_qget(msgpack_packer *pk, const dist__qget_t *q)
{
    msgpack_pack_map(pk, 4);
    dist__pk_kv_u64(pk, "req", q->req);
    s_pk_kv_strn(pk, "queue", q->queue);
    dist__pk_kv_u64(pk, "max", q->max);
    dist__pk_kv_u64(pk, "timeout_ms", q->timeout_ms);
}

int dist__parse_qreply(const msgpack_object *o, dist__qreply_t *r)
{
    memset(r, 0, sizeof *r);
    r->status.s = "";
    if (s_req_head(o, &r->req, NULL) || dist__get_str(o, "status", &r->status.s, &r->status.n) ||
        dist__get_array(o, "items", &r->items, &r->nitems) || !s_all_bins(r->items, r->nitems))
        return DIST_EPROTO;
    return 0;
}

void dist__pack_qreply(msgpack_packer *pk, const dist__qreply_t *r)
{
    msgpack_pack_map(pk, 3);
    dist__pk_kv_u64(pk, "req", r->req);
    s_pk_kv_strn(pk, "status", r->status);
    dist__pk_str(pk, "items");
    msgpack_pack_array(pk, r->nitems);
}

int dist__parse_status_req(const msgpack_object *o, dist__status_req_t *s)
{
    return s_req_head(o, &s->req, NULL);
}

void dist__pack_status_req(msgpack_packer *pk, const dist__status_req_t *s)
{
    msgpack_pack_map(pk, 1);
    dist__pk_kv_u64(pk, "req", s->req);
}

/* ---- task control (issue 12) ------------------------------------------------------- */

static int s_opt_bool(const msgpack_object *o, const char *key, bool *v)
{
    const msgpack_object *f = dist_wire_map_get(o, key);
    return f ? dist_wire_get_bool(f, v) : 0;
}

/* True when a task map has a key other than the four of every task: the
 * common case (no option) then costs one pass over its few keys. */
static bool s_has_options(const msgpack_object *o)
{
    static const char *const base[] = { "id", "task", "args", "timeout_ms" };
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        bool known = false;
        for (size_t j = 0; !known && j < sizeof base / sizeof *base; j++)
            known = k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(base[j]) &&
                    memcmp(k->via.str.ptr, base[j], k->via.str.size) == 0;
        if (!known)
            return true;
    }
    return false;
}

int dist__parse_submit_opts(const msgpack_object *o, dist__submit_opts_t *s, const char **why)
{
    const char *bad = NULL;
    int rc = DIST_EINVAL;
    memset(s, 0, sizeof *s);
    s->key.s = "";
    const msgpack_object *f;
    bool map = o && o->type == MSGPACK_OBJECT_MAP;
    if (map && !s_has_options(o)) {
        if (why)
            *why = NULL;
        return 0;
    }
    if (map) {
        s->has_delay = dist_wire_map_get(o, "delay_ms") != NULL;
        s->has_at = dist_wire_map_get(o, "at_ms") != NULL;
    }
    if (!map) {
        bad = "a task is a map";
        rc = DIST_EPROTO;
    } else if (dist__opt_str(o, "key", &s->key.s, &s->key.n) ||
               (dist_wire_map_get(o, "key") && !dist__key_ok(s->key.s, s->key.n))) {
        bad = "key must be 1-128 printable ASCII bytes without space";
    } else if (dist__opt_u32(o, "priority", &s->priority) ||
               s->priority >= DIST__PRIORITY_LEVELS) {
        bad = "priority must be 0 to 9";
    } else if (dist__opt_u32(o, "delay_ms", &s->delay_ms) ||
               s->delay_ms > DIST__DELAY_MAX_MS) {
        bad = "delay_ms must be 0 to 2592000000 (30 days)";
    } else if ((f = dist_wire_map_get(o, "at_ms")) && dist_wire_get_u64(f, &s->at_ms)) {
        bad = "at_ms must be unix milliseconds (u64)";
    } else if (s->has_delay && s->has_at) {
        bad = "delay_ms and at_ms exclude each other";
    } else if (dist__opt_u32(o, "max_attempts", &s->max_attempts) ||
               (dist_wire_map_get(o, "max_attempts") &&
                (s->max_attempts < 1 || s->max_attempts > DIST__ATTEMPTS_MAX))) {
        bad = "max_attempts must be 1 to 1000";
    } else if (dist__opt_u32(o, "backoff_ms", &s->backoff_ms) ||
               dist__opt_u32(o, "backoff_max_ms", &s->backoff_max_ms)) {
        bad = "backoff_ms and backoff_max_ms must be u32";
    } else if ((f = dist_wire_map_get(o, "backoff_factor")) &&
               (dist_wire_get_f64(f, &s->backoff_factor) || !(s->backoff_factor >= 1.0) ||
                s->backoff_factor > 1000.0)) {
        bad = "backoff_factor must be a number from 1.0 to 1000";
    } else if (s_opt_bool(o, "retry_on_error", &s->retry_on_error)) {
        bad = "retry_on_error must be a boolean";
    }
    if (why)
        *why = bad;
    return bad ? rc : 0;
}

size_t dist__submit_opts_count(const dist__submit_opts_t *s)
{
    return (s->key.n ? 1 : 0) + (s->priority ? 1 : 0) + (s->has_delay ? 1 : 0) +
           (s->has_at ? 1 : 0) + (s->max_attempts ? 1 : 0) + (s->backoff_ms ? 1 : 0) +
           (s->backoff_factor > 0 ? 1 : 0) + (s->backoff_max_ms ? 1 : 0) +
           (s->retry_on_error ? 1 : 0);
}

void dist__pack_submit_opts(msgpack_packer *pk, const dist__submit_opts_t *s)
{
    if (s->key.n)
        s_pk_kv_strn(pk, "key", s->key);
    if (s->priority)
        dist__pk_kv_u64(pk, "priority", s->priority);
    if (s->has_delay)
        dist__pk_kv_u64(pk, "delay_ms", s->delay_ms);
    if (s->has_at)
        dist__pk_kv_u64(pk, "at_ms", s->at_ms);
    if (s->max_attempts)
        dist__pk_kv_u64(pk, "max_attempts", s->max_attempts);
    if (s->backoff_ms)
        dist__pk_kv_u64(pk, "backoff_ms", s->backoff_ms);
    if (s->backoff_factor > 0)
        dist__pk_kv_f64(pk, "backoff_factor", s->backoff_factor);
    if (s->backoff_max_ms)
        dist__pk_kv_u64(pk, "backoff_max_ms", s->backoff_max_ms);
    if (s->retry_on_error)
        dist__pk_kv_bool(pk, "retry_on_error", true);
}

static bool s_all_ids(const msgpack_object *items, size_t n)
{
    dist__id_t id;
    for (size_t i = 0; i < n; i++)
        if (!dist__list_id(&items[i], &id))
            return false;
    return true;
}

int dist__parse_ids_req(const msgpack_object *o, bool with_req, dist__ids_req_t *r)
{
    memset(r, 0, sizeof *r);
    if (with_req ? s_req_head(o, &r->req, NULL) : (!o || o->type != MSGPACK_OBJECT_MAP))
        return DIST_EPROTO;
    if (dist__get_array(o, "ids", &r->ids, &r->nids) || r->nids < 1 ||
        r->nids > DIST__MAX_BATCH || !s_all_ids(r->ids, r->nids))
        return with_req ? DIST_EINVAL : DIST_EPROTO;
    return 0;
}

void dist__pack_ids_req(msgpack_packer *pk, const dist__ids_req_t *r, bool with_req)
{
    msgpack_pack_map(pk, with_req ? 2 : 1);
    if (with_req)
        dist__pk_kv_u64(pk, "req", r->req);
    dist__pk_str(pk, "ids");
    msgpack_pack_array(pk, r->nids);
}

int dist__parse_fetch(const msgpack_object *o, dist__fetch_t *f)
{
    memset(f, 0, sizeof *f);
    int rc = s_req_head(o, &f->req, NULL);
    if (rc)
        return rc;
    if (dist__get_id(o, "id", &f->id) || dist__opt_u32(o, "wait_ms", &f->wait_ms))
        return DIST_EINVAL;
    return 0;
}

void dist__pack_fetch(msgpack_packer *pk, const dist__fetch_t *f)
{
    msgpack_pack_map(pk, 3);
    dist__pk_kv_u64(pk, "req", f->req);
    dist__pk_kv_id(pk, "id", &f->id);
    dist__pk_kv_u64(pk, "wait_ms", f->wait_ms);
}

int dist__parse_failed_req(const msgpack_object *o, dist__failed_req_t *f)
{
    memset(f, 0, sizeof *f);
    int rc = s_req_head(o, &f->req, NULL);
    if (rc)
        return rc;
    return dist__opt_u32(o, "max", &f->max) ? DIST_EINVAL : 0;
}

void dist__pack_failed_req(msgpack_packer *pk, const dist__failed_req_t *f)
{
    msgpack_pack_map(pk, 2);
    dist__pk_kv_u64(pk, "req", f->req);
    dist__pk_kv_u64(pk, "max", f->max);
}

/* An optional str into a dist__str_t ("" when absent). */
static int s_opt_s(const msgpack_object *o, const char *key, dist__str_t *v)
{
    v->s = "";
    v->n = 0;
    return dist__opt_str(o, key, &v->s, &v->n);
}

static int s_opt_u64(const msgpack_object *o, const char *key, uint64_t *v)
{
    return dist_wire_map_get(o, key) ? dist__get_u64(o, key, v) : 0;
}

int dist__parse_attempt_info(const msgpack_object *o, dist__attempt_info_t *a)
{
    memset(a, 0, sizeof *a);
    if (!o || o->type != MSGPACK_OBJECT_MAP || dist__get_u32(o, "attempt", &a->attempt) ||
        s_opt_s(o, "worker", &a->worker) || s_opt_s(o, "reason", &a->reason))
        return DIST_EPROTO;
    return 0;
}

int dist__parse_task_info(const msgpack_object *o, dist__task_info_t *t)
{
    memset(t, 0, sizeof *t);
    if (!o || o->type != MSGPACK_OBJECT_MAP || dist__get_id(o, "id", &t->id) ||
        dist__get_str(o, "state", &t->state.s, &t->state.n) || s_opt_s(o, "key", &t->key) ||
        s_opt_s(o, "task", &t->task) || s_opt_s(o, "worker", &t->worker) ||
        s_opt_s(o, "error", &t->error) || dist__opt_u32(o, "priority", &t->priority) ||
        s_opt_u64(o, "submitted_ms", &t->submitted_ms) ||
        s_opt_u64(o, "started_ms", &t->started_ms) ||
        s_opt_u64(o, "finished_ms", &t->finished_ms) ||
        s_opt_u64(o, "not_before_ms", &t->not_before_ms))
        return DIST_EPROTO;
    if (dist_wire_map_get(o, "attempts") &&
        dist__get_array(o, "attempts", &t->attempt_maps, &t->nattempts))
        return DIST_EPROTO;
    return 0;
}

void dist__pack_task_info(msgpack_packer *pk, const dist__task_info_t *t)
{
    if (s_str_eq(t->state, "unknown")) {
        msgpack_pack_map(pk, 2);
        dist__pk_kv_id(pk, "id", &t->id);
        s_pk_kv_strn(pk, "state", t->state);
        return;
    }
    msgpack_pack_map(pk, 8 + (t->key.n ? 1 : 0) + (t->worker.n ? 1 : 0) + (t->error.n ? 1 : 0) +
                             (t->not_before_ms ? 1 : 0));
    dist__pk_kv_id(pk, "id", &t->id);
    if (t->key.n)
        s_pk_kv_strn(pk, "key", t->key);
    s_pk_kv_strn(pk, "task", t->task);
    s_pk_kv_strn(pk, "state", t->state);
    dist__pk_kv_u64(pk, "priority", t->priority);
    if (t->worker.n)
        s_pk_kv_strn(pk, "worker", t->worker);
    if (t->error.n)
        s_pk_kv_strn(pk, "error", t->error);
    dist__pk_kv_u64(pk, "submitted_ms", t->submitted_ms);
    dist__pk_kv_u64(pk, "started_ms", t->started_ms);
    dist__pk_kv_u64(pk, "finished_ms", t->finished_ms);
    if (t->not_before_ms)
        dist__pk_kv_u64(pk, "not_before_ms", t->not_before_ms);
    dist__pk_str(pk, "attempts");
    msgpack_pack_array(pk, t->nattempts);
    for (size_t i = 0; i < t->nattempts; i++) {
        const dist__attempt_info_t *a = &t->attempts[i];
        msgpack_pack_map(pk, 3);
        dist__pk_kv_u64(pk, "attempt", a->attempt);
        s_pk_kv_strn(pk, "worker", a->worker);
        s_pk_kv_strn(pk, "reason", a->reason);
    }
}

int dist__parse_reply(const msgpack_object *o, dist__reply_t *r)
{
    memset(r, 0, sizeof *r);
    r->status.s = "";
    if (s_req_head(o, &r->req, NULL) || dist__get_str(o, "status", &r->status.s, &r->status.n) ||
        s_opt_s(o, "state", &r->state))
        return DIST_EPROTO;
    const msgpack_object *res = dist_wire_map_get(o, "result");
    if (res && res->type != MSGPACK_OBJECT_MAP)
        return DIST_EPROTO;
    r->result_map = res;
    if (dist_wire_map_get(o, "tasks")) {
        r->list = DIST__REPLY_TASKS;
        return dist__get_array(o, "tasks", &r->items, &r->nitems);
    }
    if (dist_wire_map_get(o, "states")) {
        r->list = DIST__REPLY_STATES;
        if (dist__get_array(o, "states", &r->items, &r->nitems))
            return DIST_EPROTO;
        for (size_t i = 0; i < r->nitems; i++)
            if (r->items[i].type != MSGPACK_OBJECT_STR)
                return DIST_EPROTO;
    }
    return 0;
}

void dist__pack_reply(msgpack_packer *pk, const dist__reply_t *r)
{
    msgpack_pack_map(pk, 2 + (r->state.n ? 1 : 0) + (r->result ? 1 : 0) +
                             (r->list != DIST__REPLY_NONE ? 1 : 0));
    dist__pk_kv_u64(pk, "req", r->req);
    s_pk_kv_strn(pk, "status", r->status);
    if (r->state.n)
        s_pk_kv_strn(pk, "state", r->state);
    if (r->result) {
        dist__pk_str(pk, "result");
        dist__pack_result(pk, r->result, false);
    }
    if (r->list != DIST__REPLY_NONE) {
        dist__pk_str(pk, r->list == DIST__REPLY_TASKS ? "tasks" : "states");
        msgpack_pack_array(pk, r->nitems);
    }
}

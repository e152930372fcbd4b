/*  fake_master.c - see fake_master.h. One thread owns the ROUTER; the
 *  test thread talks to it only through the recorded messages and a few
 *  flags under the mutex. */
#include "fake_master.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "dist/error.h"
#include "dist/value.h"
#include "testutil.h"
#include "util_internal.h"

typedef struct {
    uint8_t rid[256];
    size_t rid_len;
    char name[DIST__NAME_MAX + 1];
} fm_peer_t;

typedef struct {
    char client[DIST__NAME_MAX + 1];
    dist__id_t id;
    dist__status_t status;
    char *data; /* value or error */
    size_t len;
    int64_t due_ns; /* slow tasks: not done before */
    bool done;      /* ready to be sent and waiting for its ACK */
} fm_result_t;

typedef struct {
    char name[DIST__NAME_MAX + 1];
    char **items;
    size_t *lens;
    size_t n, cap;
} fm_queue_t;

typedef struct {
    uint8_t rid[256];
    size_t rid_len;
    uint64_t req;
    char queue[DIST__NAME_MAX + 1];
    uint32_t max;
    int64_t not_before_ns, deadline_ns;
} fm_waiter_t;

typedef struct {
    dist__cmd_t cmd;
    dist_wire_msg_t *body;
} fm_record_t;

struct fm {
    fm_opts_t o;
    zsock_t *sock;
    char endpoint[64];
    char name[64];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop, forget, keep_results, resend, bye;
    char notice_task[64]; /* fm_notice: the name, and whether served */
    bool notice, notice_served;
    char instance[DIST__INSTANCE_LEN + 1];
    int ninstance;
    fm_record_t *recs;
    size_t nrecs, caprecs;
    int unacked;
    /* owned by the thread */
    fm_peer_t peers[16];
    size_t npeers;
    zhashx_t *res;        /* hex id -> fm_result_t*: every result not yet ACKed */
    fm_result_t **slow;   /* results not done yet */
    size_t nslow, capslow;
    dist__id_t *out; /* shuffle mode: results to send */
    size_t nout, capout;
    int64_t out_since;
    fm_queue_t queues[8];
    size_t nqueues;
    fm_waiter_t waiters[16];
    size_t nwaiters;
    int full_left;
    int submit_errors_left;
    unsigned seed;
    int64_t last_hb;
    int gen;
};

static int s_max_batch(const fm_t *self) { return self->o.max_batch ? self->o.max_batch : 10000; }

static void s_record(fm_t *self, const dist__inmsg_t *m)
{
    size_t len;
    const void *data = dist_wire_msg_data(m->body, &len);
    dist_wire_msg_t *copy = dist_wire_msg_decode(data, len, NULL, NULL);
    pthread_mutex_lock(&self->mu);
    if (self->nrecs == self->caprecs) {
        self->caprecs = self->caprecs ? self->caprecs * 2 : 64;
        self->recs = realloc(self->recs, self->caprecs * sizeof *self->recs);
    }
    self->recs[self->nrecs++] = (fm_record_t){ m->cmd, copy };
    pthread_cond_broadcast(&self->cv);
    pthread_mutex_unlock(&self->mu);
}

static fm_peer_t *s_peer_by_rid(fm_t *self, const uint8_t *rid, size_t len)
{
    for (size_t i = 0; i < self->npeers; i++)
        if (self->peers[i].rid_len == len && memcmp(self->peers[i].rid, rid, len) == 0)
            return &self->peers[i];
    return NULL;
}

static fm_peer_t *s_peer_by_name(fm_t *self, const char *name)
{
    for (size_t i = 0; i < self->npeers; i++)
        if (strcmp(self->peers[i].name, name) == 0)
            return &self->peers[i];
    return NULL;
}

static void s_send(fm_t *self, const uint8_t *rid, size_t rid_len, dist__cmd_t cmd,
                   dist_wire_buf_t *b)
{
    dist__proto_send_buf(self->sock, rid, rid_len, cmd, b);
}

static fm_result_t *s_result(fm_t *self, const dist__id_t *id)
{
    char hex[33];
    dist__id_hex(id, hex);
    return zhashx_lookup(self->res, hex);
}

static void s_result_free(void **item)
{
    fm_result_t *r = *item;
    if (r) {
        free(r->data);
        free(r);
        *item = NULL;
    }
}

/* Sends the given results to their clients, in RESULTS messages of at
 * most max_batch items (random sizes when asked). */
static void s_send_results(fm_t *self, const dist__id_t *ids, size_t nids, bool random_batches)
{
    fm_result_t **rs = malloc((nids + 1) * sizeof *rs);
    size_t n = 0;
    for (size_t i = 0; i < nids; i++)
        if ((rs[n] = s_result(self, &ids[i])) != NULL)
            n++;
    size_t i = 0;
    while (i < n) {
        fm_result_t *first = rs[i];
        fm_peer_t *p = s_peer_by_name(self, first->client);
        size_t batch = (size_t)s_max_batch(self);
        if (random_batches)
            batch = 1 + (size_t)rand_r(&self->seed) % batch;
        size_t k = 0;
        while (i + k < n && k < batch && strcmp(rs[i + k]->client, first->client) == 0)
            k++;
        if (p) {
            dist_wire_buf_t *b = dist_wire_buf_new(0);
            msgpack_packer *pk = dist_wire_buf_packer(b);
            dist__pack_list_head(pk, DIST__CMD_RESULTS, k);
            for (size_t j = 0; j < k; j++) {
                fm_result_t *r = rs[i + j];
                dist__result_t w = { .id = r->id, .status = r->status };
                if (r->status == DIST__ST_OK) {
                    w.value = r->data;
                    w.value_len = r->len;
                } else {
                    w.error = r->data;
                    w.error_len = r->len;
                }
                dist__pack_result(pk, &w, false);
            }
            s_send(self, p->rid, p->rid_len, DIST__CMD_RESULTS, b);
            dist_wire_buf_destroy(&b);
        }
        i += k;
    }
    free(rs);
}

/* Done: its result goes out with the next batch. */
static void s_result_ready(fm_t *self, fm_result_t *r)
{
    r->done = true;
    if (self->nout == self->capout) {
        self->capout = self->capout ? self->capout * 2 : 256;
        self->out = realloc(self->out, self->capout * sizeof *self->out);
    }
    if (!self->nout)
        self->out_since = dist__now_ns();
    self->out[self->nout++] = r->id;
}

/* Sends the results that are done: at once in arrival order, or (shuffle)
 * once 64 have gathered or 20 ms passed, in random order and batches. */
static void s_flush_out(fm_t *self)
{
    if (!self->nout)
        return;
    if (!self->o.shuffle) {
        s_send_results(self, self->out, self->nout, false);
        if (self->o.duplicate)
            s_send_results(self, self->out, self->nout, false);
        self->nout = 0;
        return;
    }
    if (self->nout < 64 && dist__now_ns() - self->out_since < 20000000)
        return;
    for (size_t i = self->nout - 1; i > 0; i--) {
        size_t j = (size_t)rand_r(&self->seed) % (i + 1);
        dist__id_t t = self->out[i];
        self->out[i] = self->out[j];
        self->out[j] = t;
    }
    s_send_results(self, self->out, self->nout, true);
    if (self->o.duplicate)
        s_send_results(self, self->out, self->nout, true);
    self->nout = 0;
}

static void s_resend_all(fm_t *self, const char *client)
{
    dist__id_t *idx = malloc((zhashx_size(self->res) + 1) * sizeof *idx);
    size_t n = 0;
    for (fm_result_t *r = zhashx_first(self->res); r; r = zhashx_next(self->res))
        if (r->done && (!client || strcmp(r->client, client) == 0))
            idx[n++] = r->id;
    s_send_results(self, idx, n, false);
    free(idx);
}

static void s_update_unacked(fm_t *self)
{
    int n = (int)zhashx_size(self->res);
    pthread_mutex_lock(&self->mu);
    self->unacked = n;
    pthread_mutex_unlock(&self->mu);
}

/* Runs one task; returns false when it is refused (code and message set). */
static bool s_run_task(fm_t *self, const char *client, const dist__task_t *t, const char **code,
                       const char **msg)
{
    char name[DIST__NAME_MAX + 1];
    snprintf(name, sizeof name, "%.*s", (int)t->task_len, t->task);
    if (strcmp(name, "full") == 0 && self->full_left > 0) {
        self->full_left--;
        *code = "queue_full";
        *msg = "the queue is full: retry later";
        return false;
    }
    if (strcmp(name, "big") == 0) {
        *code = "too_large";
        *msg = "task too large";
        return false;
    }
    bool known = !strcmp(name, "echo") || !strcmp(name, "add") || !strcmp(name, "fail") ||
                 !strcmp(name, "slow") || !strcmp(name, "never") || !strcmp(name, "full") ||
                 !strcmp(name, "unserved");
    if (!known) {
        *code = "unknown_task";
        *msg = "no worker has announced this task";
        return false;
    }
    /* Idempotent submission: a known id changes nothing. */
    if (s_result(self, &t->id))
        return true;
    fm_result_t *r = calloc(1, sizeof *r);
    snprintf(r->client, sizeof r->client, "%s", client);
    r->id = t->id;
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    msgpack_object args;
    bool ok = dist_wire_decode(t->args, t->args_len, NULL, &z, &args) == 0 &&
              args.type == MSGPACK_OBJECT_ARRAY;
    if (!ok || !strcmp(name, "fail")) {
        r->status = DIST__ST_FAILED;
        r->data = strdup(ok ? "fail: boom" : "bad arguments");
        r->len = strlen(r->data);
    } else if (!strcmp(name, "add")) {
        int64_t sum = 0, x;
        for (size_t i = 0; i < args.via.array.size; i++)
            if (dist_obj_int(&args.via.array.ptr[i], &x) == 0)
                sum += x;
        dist_wire_buf_t *b = dist_wire_buf_new(0);
        msgpack_pack_int64(dist_wire_buf_packer(b), sum);
        r->data = dist_wire_buf_release(b, &r->len);
        dist_wire_buf_destroy(&b);
    } else {
        r->data = malloc(t->args_len + 1);
        memcpy(r->data, t->args, t->args_len);
        r->len = t->args_len;
        int64_t ms = 0;
        if (!strcmp(name, "slow") && args.via.array.size)
            dist_obj_int(&args.via.array.ptr[0], &ms);
        r->due_ns = !strcmp(name, "never") || !strcmp(name, "unserved")
                        ? INT64_MAX : dist__now_ns() + ms * 1000000;
    }
    msgpack_zone_destroy(&z);
    char hex[33];
    dist__id_hex(&r->id, hex);
    zhashx_insert(self->res, hex, r);
    /* Done at once or later, its result goes out after ACCEPTED, from the
     * timers, as a master's would. */
    if (self->nslow == self->capslow) {
        self->capslow = self->capslow ? self->capslow * 2 : 64;
        self->slow = realloc(self->slow, self->capslow * sizeof *self->slow);
    }
    self->slow[self->nslow++] = r;
    return true;
}

static void s_on_submit(fm_t *self, fm_peer_t *p, const msgpack_object *root)
{
    const msgpack_object *tasks;
    size_t n;
    if (dist__parse_list(root, DIST__CMD_SUBMIT, &tasks, &n))
        return;
    if (self->submit_errors_left > 0) { /* the whole SUBMIT refused, as out of memory */
        self->submit_errors_left--;
        dist__proto_send_error(self->sock, p->rid, p->rid_len, "queue_full",
                               "the master is out of memory: retry later", 0);
        return;
    }
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    msgpack_packer *pk = dist_wire_buf_packer(b);
    dist__id_t *ok = calloc(n + 1, sizeof *ok);
    size_t nok = 0, nrej = 0;
    bool unserved = false;
    dist__reject_t *rej = calloc(n + 1, sizeof *rej);
    for (size_t i = 0; i < n; i++) {
        dist__task_t t;
        if (dist__parse_task(&tasks[i], false, &t))
            continue;
        const char *code, *msg;
        bool ok_task = s_run_task(self, p->name, &t, &code, &msg);
        if (ok_task)
            unserved |= t.task_len == 8 && memcmp(t.task, "unserved", 8) == 0;
        if (ok_task)
            ok[nok++] = t.id;
        else
            rej[nrej++] = (dist__reject_t){ (uint32_t)i, true, t.id, { code, strlen(code) },
                                            { msg, strlen(msg) } };
    }
    dist__pack_accepted_head(pk, nok, unserved);
    for (size_t i = 0; i < nok; i++)
        dist__pk_id(pk, &ok[i]);
    dist__pack_rejected(pk, nrej);
    for (size_t i = 0; i < nrej; i++)
        dist__pack_reject(pk, &rej[i]);
    if (unserved) { /* no worker here offers it (section 6.4) */
        dist__str_t nm = { "unserved", 8 };
        dist__pack_names(pk, "unserved", &nm, 1);
    }
    s_send(self, p->rid, p->rid_len, DIST__CMD_ACCEPTED, b);
    dist_wire_buf_destroy(&b);
    free(ok);
    free(rej);
    s_update_unacked(self);
}

static void s_on_ack(fm_t *self, const msgpack_object *root)
{
    const msgpack_object *ids;
    size_t n;
    if (dist__parse_list(root, DIST__CMD_ACK, &ids, &n))
        return;
    for (size_t i = 0; i < n; i++) {
        dist__id_t id;
        if (!dist__list_id(&ids[i], &id))
            continue;
        fm_result_t *r = s_result(self, &id);
        if (r && r->done) {
            char hex[33];
            dist__id_hex(&id, hex);
            zhashx_delete(self->res, hex);
        }
    }
    s_update_unacked(self);
}

static fm_queue_t *s_queue(fm_t *self, const char *name, size_t n)
{
    for (size_t i = 0; i < self->nqueues; i++)
        if (strlen(self->queues[i].name) == n && memcmp(self->queues[i].name, name, n) == 0)
            return &self->queues[i];
    if (self->nqueues == sizeof self->queues / sizeof *self->queues)
        return NULL;
    fm_queue_t *q = &self->queues[self->nqueues++];
    memset(q, 0, sizeof *q);
    /* memcpy, not snprintf: the caller may pass a name that lives in
     * self (a waiter's), which GCC's -Wrestrict flags at -O2. */
    n = n < sizeof q->name - 1 ? n : sizeof q->name - 1;
    memcpy(q->name, name, n);
    q->name[n] = '\0';
    return q;
}

static void s_qreply(fm_t *self, const uint8_t *rid, size_t rid_len, uint64_t req,
                     const char *status, fm_queue_t *q, size_t take)
{
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    msgpack_packer *pk = dist_wire_buf_packer(b);
    dist__qreply_t r = { .req = req, .status = { status, strlen(status) }, .nitems = take };
    dist__pack_qreply(pk, &r);
    for (size_t i = 0; i < take; i++)
        dist__pk_bin(pk, q->items[i], q->lens[i]);
    s_send(self, rid, rid_len, DIST__CMD_QREPLY, b);
    dist_wire_buf_destroy(&b);
    for (size_t i = 0; i < take; i++)
        free(q->items[i]);
    if (take) {
        memmove(q->items, q->items + take, (q->n - take) * sizeof *q->items);
        memmove(q->lens, q->lens + take, (q->n - take) * sizeof *q->lens);
        q->n -= take;
    }
}

static void s_serve_waiters(fm_t *self)
{
    int64_t now = dist__now_ns();
    for (size_t i = 0; i < self->nwaiters;) {
        fm_waiter_t *w = &self->waiters[i];
        fm_queue_t *q = s_queue(self, w->queue, strlen(w->queue));
        if (now < w->not_before_ns) {
            i++;
            continue;
        }
        if (q && q->n) {
            s_qreply(self, w->rid, w->rid_len, w->req, "ok", q, q->n < w->max ? q->n : w->max);
        } else if (now >= w->deadline_ns) {
            s_qreply(self, w->rid, w->rid_len, w->req, "timeout", q, 0);
        } else {
            i++;
            continue;
        }
        self->waiters[i] = self->waiters[--self->nwaiters];
    }
}

static void s_on_queue(fm_t *self, const dist__inmsg_t *m)
{
    dist__qput_t put;
    dist__qget_t get;
    bool is_put = m->cmd == DIST__CMD_QPUT;
    if (is_put ? dist__parse_qput(m->root, &put) != 0 : dist__parse_qget(m->root, &get) != 0) {
        dist__proto_send_error(self->sock, m->rid, m->rid_len, "bad_request", "bad queue request",
                               0);
        return;
    }
    uint64_t req = is_put ? put.req : get.req;
    const char *name = is_put ? put.queue.s : get.queue.s;
    size_t nlen = is_put ? put.queue.n : get.queue.n;
    uint32_t timeout = is_put ? put.timeout_ms : get.timeout_ms;
    fm_queue_t *q = s_queue(self, name, nlen);
    if (is_put) {
        const msgpack_object *items = put.items;
        size_t n = put.nitems;
        if (q->n + n > 4) { /* this fake's queues hold four items */
            s_qreply(self, m->rid, m->rid_len, req, "full", q, 0);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            const void *p;
            size_t len;
            if (dist_wire_get_bin(&items[i], &p, &len))
                continue;
            if (q->n == q->cap) {
                q->cap = q->cap ? q->cap * 2 : 8;
                q->items = realloc(q->items, q->cap * sizeof *q->items);
                q->lens = realloc(q->lens, q->cap * sizeof *q->lens);
            }
            q->items[q->n] = malloc(len + 1);
            memcpy(q->items[q->n], p, len);
            q->lens[q->n++] = len;
        }
        s_qreply(self, m->rid, m->rid_len, req, "ok", q, 0);
        s_serve_waiters(self);
        return;
    }
    uint32_t max = get.max;
    int64_t delay = (int64_t)self->o.qget_delay_ms * 1000000;
    if (!delay && (q->n || timeout == 0)) {
        size_t take = q->n < max ? q->n : max;
        s_qreply(self, m->rid, m->rid_len, req, q->n ? "ok" : "timeout", q, take);
        return;
    }
    fm_waiter_t *w = &self->waiters[self->nwaiters++];
    memcpy(w->rid, m->rid, m->rid_len);
    w->rid_len = m->rid_len;
    w->req = req;
    snprintf(w->queue, sizeof w->queue, "%.*s", (int)nlen, name);
    w->max = max;
    w->not_before_ns = dist__now_ns() + delay;
    w->deadline_ns = w->not_before_ns + (int64_t)timeout * 1000000;
}

static void s_on_status(fm_t *self, const dist__inmsg_t *m)
{
    dist__status_req_t sr = { 0 };
    dist__parse_status_req(m->root, &sr);
    uint64_t req = sr.req;
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    msgpack_packer *pk = dist_wire_buf_packer(b);
    msgpack_pack_map(pk, 7);
    dist__pk_kv_u64(pk, "req", req);
    dist__pk_str(pk, "master");
    msgpack_pack_map(pk, 4);
    dist__pk_kv_str(pk, "name", self->name);
    dist__pk_kv_str(pk, "version", "0.1.0");
    dist__pk_kv_u64(pk, "uptime_s", 3725);
    dist__pk_str(pk, "store");
    msgpack_pack_nil(pk);
    dist__pk_str(pk, "workers");
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 10);
    dist__pk_kv_str(pk, "name", "w1");
    dist__pk_kv_str(pk, "host", "hostA");
    dist__pk_kv_u64(pk, "pid", 4242);
    dist__pk_kv_u64(pk, "slots", 2);
    dist__pk_kv_u64(pk, "capacity", 4);
    dist__pk_kv_u64(pk, "busy", 1);
    dist__pk_kv_u64(pk, "done", 17);
    dist__pk_kv_u64(pk, "failed", 2);
    dist__pk_kv_u64(pk, "last_seen_ms", 250);
    dist__pk_str(pk, "tasks");
    msgpack_pack_array(pk, 1);
    dist__pk_str(pk, "echo");
    dist__pk_str(pk, "queues");
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, 4);
    dist__pk_kv_str(pk, "name", "echo");
    dist__pk_kv_str(pk, "kind", "task");
    dist__pk_kv_u64(pk, "depth", 3);
    dist__pk_kv_u64(pk, "in_flight", 1);
    dist__pk_kv_u64(pk, "clients", 1);
    dist__pk_str(pk, "counters");
    msgpack_pack_map(pk, 2);
    dist__pk_kv_u64(pk, "submitted", 20);
    dist__pk_kv_u64(pk, "completed", 17);
    dist__pk_str(pk, "rates");
    msgpack_pack_map(pk, 2);
    dist__pk_kv_f64(pk, "submitted_per_s", 1.5);
    dist__pk_kv_f64(pk, "completed_per_s", 1.25);
    s_send(self, m->rid, m->rid_len, DIST__CMD_STATUS, b);
    dist_wire_buf_destroy(&b);
}

static void s_on_hello(fm_t *self, const dist__inmsg_t *m)
{
    dist__hello_t h;
    if (dist__parse_hello(m->root, &h, NULL))
        return;
    const char *name = h.name.s;
    size_t n = h.name.n;
    char nm[DIST__NAME_MAX + 1];
    snprintf(nm, sizeof nm, "%.*s", (int)n, name);
    fm_peer_t *p = s_peer_by_rid(self, m->rid, m->rid_len);
    fm_peer_t *old = s_peer_by_name(self, nm);
    if (!p)
        p = old ? old : self->npeers < 16 ? &self->peers[self->npeers++] : NULL;
    if (!p)
        return;
    memcpy(p->rid, m->rid, m->rid_len); /* the newest connection takes over the name */
    p->rid_len = m->rid_len;
    snprintf(p->name, sizeof p->name, "%s", nm);
    int pending = 0;
    for (fm_result_t *r = zhashx_first(self->res); r; r = zhashx_next(self->res))
        if (r->done && strcmp(r->client, nm) == 0)
            pending++;
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    dist__welcome_t wl = { .master = { self->name, strlen(self->name) }, .version = { "0.1.0", 5 },
                           .heartbeat_ms = self->o.heartbeat_ms ? self->o.heartbeat_ms : 1000,
                           .heartbeat_timeout_ms = self->o.heartbeat_timeout_ms
                                                       ? self->o.heartbeat_timeout_ms
                                                       : 3000,
                           .max_message = 64u << 20, .max_batch = (uint32_t)s_max_batch(self),
                           .pending_results = (uint32_t)pending, .client = true,
                           .instance = { self->instance, strlen(self->instance) } };
    dist__pack_welcome(dist_wire_buf_packer(b), &wl);
    s_send(self, p->rid, p->rid_len, DIST__CMD_WELCOME, b);
    dist_wire_buf_destroy(&b);
    s_resend_all(self, nm);
}

/* ---- task control: CANCEL, FETCH, LOOKUP (a minimal subset) ----------------------- */

/* A task's state as LOOKUP names it: not done yet is "leased". */
static const char *s_task_state(const fm_result_t *r)
{
    if (!r)
        return "unknown";
    if (!r->done && r->due_ns != 0)
        return "leased";
    return r->status == DIST__ST_OK ? "done" : r->status == DIST__ST_CANCELLED ? "cancelled"
                                                                            : "failed";
}

static void s_reply_head(dist_wire_buf_t *b, uint64_t req, const char *status, const char *state,
                         const dist__result_t *res, dist__reply_list_t list, size_t n)
{
    dist__reply_t rp = { .req = req, .status = { status, strlen(status) },
                         .state = { state, state ? strlen(state) : 0 }, .result = res,
                         .list = list, .nitems = n };
    dist__pack_reply(dist_wire_buf_packer(b), &rp);
}

/* CANCEL: a task without its result yet gets the result "cancelled" (sent
 * by the timers); states answer for each id. LOOKUP: id and state.
 * FETCH: the result if done, else "timeout" at once (no waiting). */
static void s_on_control(fm_t *self, fm_peer_t *p, const dist__inmsg_t *m)
{
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    if (m->cmd == DIST__CMD_FETCH) {
        dist__fetch_t f;
        if (dist__parse_fetch(m->root, &f) == 0) {
            fm_result_t *r = s_result(self, &f.id);
            const char *st = s_task_state(r);
            dist__result_t res = { .id = f.id };
            bool final = r && (r->done || r->due_ns == 0);
            if (final) {
                res.status = r->status;
                if (r->status == DIST__ST_OK) {
                    res.value = r->data;
                    res.value_len = r->len;
                } else {
                    res.error = r->data;
                    res.error_len = r->len;
                }
            }
            s_reply_head(b, f.req, !r ? "not_found" : final ? "ok" : "timeout", st,
                         final ? &res : NULL, DIST__REPLY_NONE, 0);
            s_send(self, p->rid, p->rid_len, DIST__CMD_REPLY, b);
        }
        dist_wire_buf_destroy(&b);
        return;
    }
    dist__ids_req_t q;
    if (dist__parse_ids_req(m->root, true, &q)) {
        dist_wire_buf_destroy(&b);
        return;
    }
    bool cancel = m->cmd == DIST__CMD_CANCEL;
    s_reply_head(b, q.req, "ok", NULL, NULL, cancel ? DIST__REPLY_STATES : DIST__REPLY_TASKS,
                 q.nids);
    msgpack_packer *pk = dist_wire_buf_packer(b);
    for (size_t i = 0; i < q.nids; i++) {
        dist__id_t id;
        dist__list_id(&q.ids[i], &id);
        fm_result_t *r = s_result(self, &id);
        if (cancel && r && !r->done && r->due_ns != 0) {
            free(r->data);
            r->status = DIST__ST_CANCELLED;
            r->data = strdup("cancelled by a client");
            r->len = strlen(r->data);
            r->due_ns = 0; /* the timers send it */
        }
        const char *st = s_task_state(r);
        if (cancel) {
            dist__pk_str(pk, st);
        } else {
            dist__task_info_t ti = { .id = id, .state = { st, strlen(st) },
                                     .task = { "fake", 4 } };
            dist__pack_task_info(pk, &ti);
        }
    }
    s_send(self, p->rid, p->rid_len, DIST__CMD_REPLY, b);
    dist_wire_buf_destroy(&b);
}

static void s_handle(fm_t *self, dist__inmsg_t *m)
{
    s_record(self, m);
    if (self->o.silent)
        return;
    if (m->cmd == DIST__CMD_HELLO) {
        s_on_hello(self, m);
        return;
    }
    fm_peer_t *p = s_peer_by_rid(self, m->rid, m->rid_len);
    if (!p) {
        dist__proto_send_empty(self->sock, m->rid, m->rid_len, DIST__CMD_RECONNECT);
        return;
    }
    switch (m->cmd) {
    case DIST__CMD_SUBMIT: s_on_submit(self, p, m->root); break;
    case DIST__CMD_ACK:
        if (!self->o.ignore_acks)
            s_on_ack(self, m->root);
        break;
    case DIST__CMD_QPUT:
    case DIST__CMD_QGET: s_on_queue(self, m); break;
    case DIST__CMD_STATUS: s_on_status(self, m); break;
    case DIST__CMD_CANCEL:
    case DIST__CMD_FETCH:
    case DIST__CMD_LOOKUP: s_on_control(self, p, m); break;
    case DIST__CMD_BYE:
        *p = self->peers[--self->npeers];
        break;
    default: break;
    }
}

static void s_timers(fm_t *self)
{
    int64_t now = dist__now_ns();
    for (size_t i = 0; i < self->nslow;) {
        fm_result_t *r = self->slow[i];
        if (r->due_ns <= now) {
            s_result_ready(self, r);
            self->slow[i] = self->slow[--self->nslow];
        } else {
            i++;
        }
    }
    s_flush_out(self);
    s_serve_waiters(self);
    int hb = self->o.heartbeat_ms ? self->o.heartbeat_ms : 1000;
    if (self->o.heartbeat && now - self->last_hb >= (int64_t)hb * 1000000) {
        self->last_hb = now;
        for (size_t i = 0; i < self->npeers; i++)
            dist__proto_send_empty(self->sock, self->peers[i].rid, self->peers[i].rid_len,
                                   DIST__CMD_HEARTBEAT);
    }
}

static void *s_thread(void *arg)
{
    fm_t *self = arg;
    dist_wire_limits_t lim = dist__body_limits(0);
    for (;;) {
        pthread_mutex_lock(&self->mu);
        bool stop = self->stop, forget = self->forget, keep = self->keep_results;
        bool resend = self->resend, bye = self->bye, notice = self->notice;
        bool served = self->notice_served;
        char task[64];
        snprintf(task, sizeof task, "%s", self->notice_task);
        self->forget = self->resend = self->bye = self->notice = false;
        pthread_mutex_unlock(&self->mu);
        if (stop)
            break;
        if (bye) /* a clean stop: goodbye to every peer */
            for (size_t i = 0; i < self->npeers; i++)
                dist__proto_send(self->sock, self->peers[i].rid, self->peers[i].rid_len,
                                 DIST__CMD_BYE, NULL, 0);
        if (notice) {
            dist__str_t nm = { task, strlen(task) };
            dist__notice_t nt = { .served_names = &nm, .nserved = served,
                                  .unserved_names = &nm, .nunserved = !served };
            dist_wire_buf_t *b = dist_wire_buf_new(0);
            dist__pack_notice(dist_wire_buf_packer(b), &nt);
            for (size_t i = 0; i < self->npeers; i++)
                s_send(self, self->peers[i].rid, self->peers[i].rid_len, DIST__CMD_NOTICE, b);
            dist_wire_buf_destroy(&b);
        }
        if (forget) {
            self->npeers = 0;
            self->nwaiters = 0;
            self->nout = 0;
            self->gen++;
            snprintf(self->name, sizeof self->name, "fake:%d:%d", (int)getpid(), self->gen);
            if (!keep) { /* running tasks are lost too; with a store they go on */
                zhashx_purge(self->res);
                self->nslow = 0;
                snprintf(self->instance, sizeof self->instance, "%016x", ++self->ninstance);
            }
            s_update_unacked(self);
            pthread_mutex_lock(&self->mu);
            pthread_cond_broadcast(&self->cv);
            pthread_mutex_unlock(&self->mu);
        }
        if (resend)
            s_resend_all(self, NULL);
        zmq_pollitem_t it = { zsock_resolve(self->sock), 0, ZMQ_POLLIN, 0 };
        zmq_poll(&it, 1, 5);
        for (int k = 0; k < 1000; k++) {
            dist__inmsg_t m;
            int rc = dist__proto_recv(self->sock, true, &lim, &m);
            if (rc == DIST_EAGAIN || (rc < 0 && rc != DIST_EPROTO))
                break;
            if (rc == 0) {
                s_handle(self, &m);
                dist__inmsg_clear(&m);
            }
        }
        s_timers(self);
    }
    return NULL;
}

fm_t *fm_new(const fm_opts_t *opts)
{
    fm_t *self = calloc(1, sizeof *self);
    if (opts)
        self->o = *opts;
    self->full_left = self->o.full_refusals;
    self->submit_errors_left = self->o.submit_errors;
    self->res = zhashx_new();
    zhashx_set_destructor(self->res, s_result_free);
    self->seed = (unsigned)getpid();
    snprintf(self->name, sizeof self->name, "fake:%d:0", (int)getpid());
    snprintf(self->instance, sizeof self->instance, "%016x", 0);
    pthread_mutex_init(&self->mu, NULL);
    pthread_cond_init(&self->cv, NULL);
    self->sock = zsock_new(ZMQ_ROUTER);
    dist__sock_setup(self->sock, true, NULL);
    int port = zsock_bind(self->sock, "tcp://127.0.0.1:*");
    if (port < 0) {
        zsock_destroy(&self->sock);
        free(self);
        return NULL;
    }
    snprintf(self->endpoint, sizeof self->endpoint, "tcp://127.0.0.1:%d", port);
    pthread_create(&self->thread, NULL, s_thread, self);
    return self;
}

void fm_destroy(fm_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fm_t *self = *self_p;
    pthread_mutex_lock(&self->mu);
    self->stop = true;
    pthread_mutex_unlock(&self->mu);
    pthread_join(self->thread, NULL);
    zsock_destroy(&self->sock);
    for (size_t i = 0; i < self->nrecs; i++)
        dist_wire_msg_destroy(&self->recs[i].body);
    free(self->recs);
    zhashx_destroy(&self->res);
    free(self->slow);
    free(self->out);
    for (size_t i = 0; i < self->nqueues; i++) {
        for (size_t k = 0; k < self->queues[i].n; k++)
            free(self->queues[i].items[k]);
        free(self->queues[i].items);
        free(self->queues[i].lens);
    }
    pthread_cond_destroy(&self->cv);
    pthread_mutex_destroy(&self->mu);
    free(self);
    *self_p = NULL;
}

const char *fm_endpoint(const fm_t *self) { return self->endpoint; }

int fm_count(fm_t *self, dist__cmd_t cmd)
{
    int n = 0;
    pthread_mutex_lock(&self->mu);
    for (size_t i = 0; i < self->nrecs; i++)
        n += self->recs[i].cmd == cmd;
    pthread_mutex_unlock(&self->mu);
    return n;
}

dist_wire_msg_t *fm_wait(fm_t *self, dist__cmd_t cmd, int nth, int timeout_ms)
{
    int64_t deadline = dist__deadline(timeout_ms);
    dist_wire_msg_t *copy = NULL;
    pthread_mutex_lock(&self->mu);
    for (;;) {
        int seen = 0;
        for (size_t i = 0; i < self->nrecs && !copy; i++)
            if (self->recs[i].cmd == cmd && ++seen == nth && self->recs[i].body) {
                size_t len;
                const void *d = dist_wire_msg_data(self->recs[i].body, &len);
                copy = dist_wire_msg_decode(d, len, NULL, NULL);
            }
        if (copy || dist__left_ns(deadline) == 0)
            break;
        pthread_mutex_unlock(&self->mu);
        dt_sleep_ms(2);
        pthread_mutex_lock(&self->mu);
    }
    pthread_mutex_unlock(&self->mu);
    return copy;
}

void fm_forget(fm_t *self, bool keep_results)
{
    pthread_mutex_lock(&self->mu);
    self->forget = true;
    self->keep_results = keep_results;
    while (self->forget)
        pthread_cond_wait(&self->cv, &self->mu);
    pthread_mutex_unlock(&self->mu);
}

void fm_resend_results(fm_t *self)
{
    pthread_mutex_lock(&self->mu);
    self->resend = true;
    pthread_mutex_unlock(&self->mu);
}

int fm_unacked(fm_t *self)
{
    pthread_mutex_lock(&self->mu);
    int n = self->unacked;
    pthread_mutex_unlock(&self->mu);
    return n;
}

void fm_bye(fm_t *self)
{
    pthread_mutex_lock(&self->mu);
    self->bye = true;
    pthread_mutex_unlock(&self->mu);
}

void fm_notice(fm_t *self, const char *task, bool served)
{
    pthread_mutex_lock(&self->mu);
    snprintf(self->notice_task, sizeof self->notice_task, "%s", task);
    self->notice_served = served;
    self->notice = true;
    pthread_mutex_unlock(&self->mu);
}

/*  master.c - the broker's lifecycle, event loop, sessions and sending
 *  (see dist/master.h and docs/PROTOCOL.md sections 1-5, 8 and 11).
 *
 *  One thread runs the loop: zmq_poll on the ROUTER socket and on a pipe
 *  that dist_master_stop() writes to (a write is async-signal-safe). Each
 *  turn reads a bounded batch of messages, handles the timers that are
 *  due (worker deaths, lease and park deadlines, heartbeats, retries of
 *  sends that met the high-water mark), then dispatches tasks and sends
 *  results once for the whole batch, so that every hop batches.
 *
 *  Peer input is never trusted: every message went through the codec's
 *  validation (proto.c) and every field is read with a typed accessor;
 *  anything else is answered with ERROR and counted. A peer is forgotten
 *  only at a safe point (the end of a message or of a loop phase), since
 *  a send deep inside a handler can find its connection gone.
 *
 *  With a store, the turn commits everything its messages and timers
 *  changed before any reply that promises durability leaves: a client's
 *  ACCEPTED waits in its outbox ("held") with every later message to that
 *  client, so its replies keep their order, and results are sent only
 *  after the commit that made them DONE (master_store.c).
 *
 *  For tests and the fuzzer, dist__m_feed() hands the loop's per-message
 *  handler frames that did not come from the socket, dist__m_turn() runs
 *  the rest of a turn at a given time, and a sink takes what the master
 *  sends.
 */
#include "master_internal.h"
#include "conn_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "dist/error.h"

#define DEFAULT_LEASE_MS 3600000
#define DEFAULT_MAX_QUEUED 10000000
#define DEFAULT_MAX_RESULTS 1000000
/* Messages read per loop turn: enough to batch, few enough to keep
 * timers and dispatch responsive. */
#define READ_BATCH 512
/* A peer whose outbox grows beyond this many messages or bytes is not
 * reading: forget it. Also when the outboxes of all peers together would
 * pass OUTBOX_TOTAL. With ROUTER_SNDHWM messages in ZeroMQ's queue of
 * each connection, these bound what the master holds for a peer that
 * does not read (docs/PROTOCOL.md section 11). */
#define OUTBOX_MAX 1000
#define OUTBOX_BYTES ((size_t)64 << 20)
#define OUTBOX_TOTAL ((size_t)256 << 20)
#define ROUTER_SNDHWM 1000
/* A connection without a session (a stranger, a refused HELLO, a banned
 * one) gets at most this many replies per second; the rest of what it
 * sends is dropped unanswered (and counted when malformed), so that a
 * flood that does not read its answers cannot pile them up here. */
#define NOSESSION_ANSWERS 128
/* How soon sends that met the high-water mark are retried. */
#define RETRY_MS 5
/* Clients and strangers are forgotten (not declared dead) after this many
 * heartbeat timeouts of silence. */
#define IDLE_FACTOR 10
/* With a store, a turn stops reading once the SUBMITs it holds for the
 * commit reach this many bytes. */
#define HELD_BYTES_MAX ((size_t)64 << 20)
/* Internal: an outbox whose next message waits for the commit. */
#define OUTBOX_HELD 1

static int64_t s_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- timers: a binary min-heap of intrusive nodes ---------------------------------- */

static void s_heap_set(dist__heap_t *h, size_t i, dist__hnode_t *n)
{
    h->v[i] = n;
    n->idx = (uint32_t)i;
}

static void s_heap_up(dist__heap_t *h, size_t i)
{
    dist__hnode_t *n = h->v[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->v[parent]->at <= n->at)
            break;
        s_heap_set(h, i, h->v[parent]);
        i = parent;
    }
    s_heap_set(h, i, n);
}

static void s_heap_down(dist__heap_t *h, size_t i)
{
    dist__hnode_t *n = h->v[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && h->v[c + 1]->at < h->v[c]->at)
            c++;
        if (n->at <= h->v[c]->at)
            break;
        s_heap_set(h, i, h->v[c]);
        i = c;
    }
    s_heap_set(h, i, n);
}

int dist__m_timer_reserve(dist_master_t *s, size_t more)
{
    dist__heap_t *h = &s->timers;
    if (h->n + more <= h->cap)
        return 0;
    if (more > UINT32_MAX - 1 - h->n)
        return DIST_ENOMEM;
    size_t cap = h->cap ? h->cap : 256;
    while (cap < h->n + more)
        cap *= 2;
    dist__hnode_t **v = realloc(h->v, cap * sizeof *v);
    if (!v)
        return DIST_ENOMEM;
    h->v = v;
    h->cap = cap;
    return 0;
}

int dist__m_timer_add(dist_master_t *s, dist__hnode_t *n, int64_t at, dist__timer_kind_t kind)
{
    int rc = dist__m_timer_reserve(s, 1);
    if (rc)
        return rc;
    n->at = at;
    n->kind = (uint8_t)kind;
    dist__heap_t *h = &s->timers;
    h->v[h->n] = n;
    n->idx = (uint32_t)h->n++;
    s_heap_up(h, n->idx);
    return 0;
}

void dist__m_timer_del(dist_master_t *s, dist__hnode_t *n)
{
    dist__heap_t *h = &s->timers;
    if (n->idx == UINT32_MAX)
        return;
    size_t i = n->idx;
    n->idx = UINT32_MAX;
    h->n--;
    if (i == h->n)
        return;
    dist__hnode_t *moved = h->v[h->n];
    s_heap_set(h, i, moved);
    /* The moved node may belong above or below its new place. */
    s_heap_up(h, i);
    s_heap_down(h, moved->idx);
}

/* ---- name-keyed objects ------------------------------------------------------------- */

bool dist__m_key_eq(const void *item, const void *key, size_t klen)
{
    const dist__mkey_t *k = item;
    return k->len == klen && memcmp(k->name, key, klen) == 0;
}

void *dist__m_named_find(dist_master_t *s, const dist__hmap_t *idx, const char *name, size_t len)
{
    return dist__hmap_get(idx, dist__hash(&s->hkey, name, len), name, len);
}

void *dist__m_named_new(dist_master_t *s, dist__hmap_t *idx, const char *name, size_t len,
                        size_t size)
{
    dist__mkey_t *k = calloc(1, size);
    if (!k)
        return NULL;
    memcpy(k->name, name, len);
    k->len = len;
    k->hash = dist__hash(&s->hkey, name, len);
    if (dist__hmap_add(idx, k->hash, k)) {
        free(k);
        return NULL;
    }
    return k;
}

/* ---- peers ------------------------------------------------------------------------- */

static bool s_peer_eq(const void *item, const void *key, size_t klen)
{
    const dist__mpeer_t *p = item;
    return p->rid_len == klen && memcmp(p->rid, key, klen) == 0;
}

static dist__mpeer_t *s_peer_find(dist_master_t *s, const uint8_t *rid, size_t len)
{
    return dist__hmap_get(&s->peers, dist__hash(&s->hkey, rid, len), rid, len);
}

static dist__dlist_t *s_live_list(dist_master_t *s, const dist__mpeer_t *p);

static dist__mpeer_t *s_peer_new(dist_master_t *s, const uint8_t *rid, size_t len)
{
    dist__mpeer_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    memcpy(p->rid, rid, len);
    p->rid_len = len;
    p->hash = dist__hash(&s->hkey, rid, len);
    dist__dl_init(&p->leased);
    dist__dl_init(&p->ghosts);
    dist__dl_init(&p->parked);
    dist__dl_init(&p->fetches);
    dist__dl_init(&p->outbox);
    p->joined = p->last_seen = p->last_sent = s->now;
    snprintf(p->name, sizeof p->name, "?");
    if (dist__hmap_add(&s->peers, p->hash, p)) {
        free(p);
        return NULL;
    }
    s->npeers++;
    dist__dl_push_back(s_live_list(s, p), &p->live);
    return p;
}

const char *dist__m_peer_desc(const dist__mpeer_t *p, char *buf, size_t len)
{
    if (p->role == DIST__ROLE_NONE) {
        char hex[2 * 16 + 1];
        size_t n = p->rid_len < 16 ? p->rid_len : 16;
        for (size_t i = 0; i < n; i++)
            snprintf(hex + 2 * i, 3, "%02x", p->rid[i]);
        hex[2 * n] = 0;
        snprintf(buf, len, "peer %s", hex);
    } else {
        snprintf(buf, len, "%s %s (host %s, pid %u)",
                 p->role == DIST__ROLE_WORKER ? "worker" : "client", p->name, p->host,
                 (unsigned)p->pid);
    }
    return buf;
}

/* Workers are watched for death; clients and strangers only for idleness. */
static dist__dlist_t *s_live_list(dist_master_t *s, const dist__mpeer_t *p)
{
    return p->role == DIST__ROLE_WORKER ? &s->live : &s->idle;
}

static void s_touch(dist_master_t *s, dist__mpeer_t *p)
{
    p->last_seen = s->now;
    dist__dl_move_back(s_live_list(s, p), &p->live);
}

bool dist__m_peer_ready(const dist__mpeer_t *p)
{
    return !p->gone && !dist__dn_linked(&p->blocked);
}

void dist__m_block(dist_master_t *s, dist__mpeer_t *p)
{
    if (!dist__dn_linked(&p->blocked))
        dist__dl_push_back(&s->blocked, &p->blocked);
    if (!s->retry_at)
        s->retry_at = s->now + RETRY_MS;
}

void dist__m_peer_gone(dist_master_t *s, dist__mpeer_t *p)
{
    if (p->gone)
        return;
    p->gone = true;
    /* Out of the lists that loops walk while sending, so that no loop
     * meets it again; the rest happens in s_reap. */
    if (dist__dn_linked(&p->hb))
        dist__dl_remove(&s->hb, &p->hb);
    if (dist__dn_linked(&p->dirty))
        dist__dl_remove(&s->dirty_workers, &p->dirty);
    if (dist__dn_linked(&p->blocked))
        dist__dl_remove(&s->blocked, &p->blocked);
    dist__dl_push_back(&s->reap, &p->reap);
}

/* Frees a kept message (its QREPLY items already dealt with: the array only). */
static void s_out_free(dist__mout_t *o)
{
    free(o->items);
    free(o->bytes);
    free(o->codes);
    dist_wire_msg_destroy(&o->sub);
    free(o);
}

static void s_outbox_drop(dist_master_t *s, dist__mpeer_t *p)
{
    dist__dnode_t *d;
    while ((d = dist__dl_pop_front(&p->outbox))) {
        dist__mout_t *o = DIST__CONTAINER_OF(d, dist__mout_t, node);
        if (o->nitems) {
            dist__m_putback(s, o->queue, o->items, o->nitems); /* takes the array */
            o->items = NULL;
        }
        s_out_free(o);
    }
    s->outbox_total -= p->outbox_bytes;
    p->outbox_bytes = 0;
    if (dist__dn_linked(&p->holdn))
        dist__dl_remove(&s->held, &p->holdn);
}

/* Ends the peer's session (role state), leaving the record itself. */
static void s_session_end(dist_master_t *s, dist__mpeer_t *p, const char *why)
{
    if (p->role == DIST__ROLE_WORKER) {
        dist__m_worker_release(s, p, why);
        s->nworkers--;
    } else if (p->role == DIST__ROLE_CLIENT) {
        dist__m_unpark_peer(s, p);
        dist__m_unfetch_peer(s, p);
        dist__m_client_detach(s, p);
        s->nclients--;
    }
    dist__dl_remove(s_live_list(s, p), &p->live);
    p->role = DIST__ROLE_NONE;
    dist__dl_push_back(s_live_list(s, p), &p->live);
    if (dist__dn_linked(&p->hb))
        dist__dl_remove(&s->hb, &p->hb);
    if (dist__dn_linked(&p->dirty))
        dist__dl_remove(&s->dirty_workers, &p->dirty);
}

/* Forgets the peer entirely. `why` is the reason given to its tasks. */
static void s_forget(dist_master_t *s, dist__mpeer_t *p, const char *why)
{
    s_session_end(s, p, why);
    s_outbox_drop(s, p);
    dist__dl_remove(s_live_list(s, p), &p->live);
    if (dist__dn_linked(&p->blocked))
        dist__dl_remove(&s->blocked, &p->blocked);
    if (dist__dn_linked(&p->reap))
        dist__dl_remove(&s->reap, &p->reap);
    dist__hmap_del(&s->peers, p->hash, p);
    s->npeers--;
    free(p);
}

/* Forgets the peers whose connection went away. */
static void s_reap(dist_master_t *s)
{
    dist__dnode_t *d;
    while ((d = dist__dl_first(&s->reap))) {
        dist__mpeer_t *p = DIST__CONTAINER_OF(d, dist__mpeer_t, reap);
        char desc[300], why[400];
        dist__m_peer_desc(p, desc, sizeof desc);
        if (p->role == DIST__ROLE_WORKER) {
            dist__log(&s->log, DIST_LOG_WARN, "worker left: %s, connection lost, %zu task(s) requeued",
                      desc, p->leased.n);
            /* Gone without BYE, as a silent one is: a dead-worker event
             * for the operator, however the master noticed it. */
            s->c.dead_workers++;
        }
        else if (p->role == DIST__ROLE_CLIENT && p->replaced)
            dist__log(&s->log, DIST_LOG_INFO, "client left: %s, a newer connection took its name",
                      desc);
        else if (p->role == DIST__ROLE_CLIENT)
            dist__log(&s->log, DIST_LOG_INFO, "client left: %s, connection lost", desc);
        snprintf(why, sizeof why, "%s lost its connection", desc);
        s_forget(s, p, why);
    }
}

/* ---- sending -------------------------------------------------------------------------- */

/* Every message leaves through these two: the socket, or the sink. */
static int s_wire_send(dist_master_t *s, const uint8_t *rid, size_t rid_len, dist__cmd_t cmd,
                       const void *body, size_t len)
{
    if (s->sink)
        return s->sink(s->sink_ud, rid, rid_len, cmd, body, len);
    return dist__proto_send(s->sock, rid, rid_len, cmd, body, len);
}

/* ERROR {code, error} to a routing id, without a peer record. */
static int s_wire_error(dist_master_t *s, const uint8_t *rid, size_t rid_len, const char *code,
                        const char *error)
{
    if (!s->sink)
        return dist__proto_send_error(s->sock, rid, rid_len, code, error, 0);
    dist_wire_buf_reset(s->out);
    dist__error_t e = { { code, strlen(code) }, { error, strlen(error) }, 0 };
    dist__pack_error(dist_wire_buf_packer(s->out), &e);
    size_t len;
    const void *data = dist_wire_buf_data(s->out, &len);
    return s_wire_send(s, rid, rid_len, DIST__CMD_ERROR, data, len);
}

/* The unsupported-version reply of section 8 (proto.c's exact words). */
static int s_wire_bad_version(dist_master_t *s, const uint8_t *rid, size_t rid_len)
{
    if (!s->sink)
        return dist__proto_send_bad_version(s->sock, rid, rid_len);
    return s_wire_error(s, rid, rid_len, "unsupported_version",
                        "this master speaks protocol version 1");
}

static void s_items_free(dist__mitem_t **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i]);
    free(items);
}

static void s_sent(dist_master_t *s, dist__mpeer_t *p)
{
    p->last_sent = s->now;
    if (p->role != DIST__ROLE_NONE && !p->banned)
        dist__dl_move_back(&s->hb, &p->hb);
}

static int s_send_now(dist_master_t *s, dist__mpeer_t *p, dist__cmd_t cmd, dist_wire_buf_t *buf)
{
    if (!buf)
        return s_wire_send(s, p->rid, p->rid_len, cmd, NULL, 0);
    int st = dist_wire_buf_status(buf);
    if (st)
        return st;
    size_t len;
    const void *data = dist_wire_buf_data(buf, &len);
    return s_wire_send(s, p->rid, p->rid_len, cmd, data, len);
}

/* Tries once, keeping nothing: TASKS and RESULTS are rebuilt from state
 * when they are retried. 0, DIST_EAGAIN (blocked; retried soon), or an
 * error (the peer is gone). */
int dist__m_try_send(dist_master_t *s, dist__mpeer_t *p, dist__cmd_t cmd, dist_wire_buf_t *buf)
{
    if (p->gone)
        return -EHOSTUNREACH;
    if (!dist__dl_empty(&p->outbox)) {
        dist__m_block(s, p);
        return DIST_EAGAIN;
    }
    int rc = s_send_now(s, p, cmd, buf);
    if (rc == 0) {
        s_sent(s, p);
    } else if (rc == DIST_EAGAIN) {
        dist__m_block(s, p);
    } else if (rc == DIST_EMSGSIZE || rc == DIST_ENOMEM) {
        char desc[300];
        dist__log(&s->log, DIST_LOG_ERROR, "cannot pack %s for %s: %s", dist__cmd_name(cmd),
                  dist__m_peer_desc(p, desc, sizeof desc), dist_strerror(rc));
    } else {
        dist__m_peer_gone(s, p);
    }
    return rc;
}

int dist__m_send(dist_master_t *s, dist__mpeer_t *p, dist__cmd_t cmd, dist_wire_buf_t *buf,
                 const char *queue, dist__mitem_t **items, size_t nitems)
{
    int rc = buf ? dist_wire_buf_status(buf) : 0;
    if (rc) {
        /* Our own packing failed (no memory, or a body beyond the limit):
         * the peer is not to blame. */
        dist__log(&s->log, DIST_LOG_ERROR, "cannot pack %s: %s", dist__cmd_name(cmd),
                  dist_strerror(rc));
        if (nitems)
            dist__m_putback(s, queue, items, nitems);
        else
            free(items);
        return rc;
    }
    rc = p->gone ? -EHOSTUNREACH : DIST_EAGAIN;
    if (!p->gone && dist__dl_empty(&p->outbox) && !dist__dn_linked(&p->holdn))
        rc = s_send_now(s, p, cmd, buf);
    if (rc == 0) {
        s_sent(s, p);
        s_items_free(items, nitems);
        return 0;
    }
    size_t len = 0;
    const void *data = buf ? dist_wire_buf_data(buf, &len) : NULL;
    if (rc == DIST_EAGAIN && p->outbox.n < OUTBOX_MAX && p->outbox_bytes + len <= OUTBOX_BYTES &&
        s->outbox_total + len <= OUTBOX_TOTAL) {
        /* Keep it, in order behind anything already waiting. */
        dist__mout_t *o = calloc(1, sizeof *o);
        if (o && (!len || (o->bytes = malloc(len)))) {
            if (len)
                memcpy(o->bytes, data, len);
            o->len = len;
            o->cmd = cmd;
            o->items = items;
            o->nitems = nitems;
            if (queue)
                snprintf(o->queue, sizeof o->queue, "%s", queue);
            dist__dl_push_back(&p->outbox, &o->node);
            p->outbox_bytes += len;
            s->outbox_total += len;
            if (!dist__dn_linked(&p->holdn))
                dist__m_block(s, p);
            return 0;
        }
        free(o);
        rc = DIST_ENOMEM;
    }
    if (rc == DIST_EAGAIN || rc == DIST_ENOMEM) {
        char desc[300];
        dist__log(&s->log, DIST_LOG_WARN, "%s does not read its messages: forgotten",
                  dist__m_peer_desc(p, desc, sizeof desc));
    }
    if (nitems)
        dist__m_putback(s, queue, items, nitems);
    else
        free(items);
    dist__m_peer_gone(s, p);
    return rc == DIST_EAGAIN ? -EHOSTUNREACH : rc;
}

void dist__m_error(dist_master_t *s, dist__mpeer_t *p, const char *code, uint64_t req,
                   const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dist_wire_buf_reset(s->out);
    dist__error_t e = { { code, strlen(code) }, { msg, strlen(msg) }, req };
    dist__pack_error(dist_wire_buf_packer(s->out), &e);
    dist__m_send(s, p, DIST__CMD_ERROR, s->out, NULL, NULL, 0);
}

/* Sends what waits in the peer's outbox, in order, up to an ACCEPTED
 * that still waits for the commit; then lets dispatch and results look at
 * it again. The peer is marked blocked (EAGAIN) or gone as sends say. */
static void s_flush_outbox(dist_master_t *s, dist__mpeer_t *p)
{
    dist__dnode_t *d;
    int rc = 0;
    while ((d = dist__dl_first(&p->outbox))) {
        dist__mout_t *o = DIST__CONTAINER_OF(d, dist__mout_t, node);
        if (o->sub) {
            rc = OUTBOX_HELD;
            break;
        }
        rc = s_wire_send(s, p->rid, p->rid_len, o->cmd, o->bytes, o->len);
        if (rc)
            break;
        s_sent(s, p);
        dist__dl_remove(&p->outbox, d);
        p->outbox_bytes -= o->len;
        s->outbox_total -= o->len;
        s_items_free(o->items, o->nitems);
        o->items = NULL;
        s_out_free(o);
    }
    if (rc == OUTBOX_HELD)
        return; /* dist__m_release_held flushes it again */
    if (rc == DIST_EAGAIN) {
        dist__m_block(s, p);
        return;
    }
    if (rc) {
        dist__m_peer_gone(s, p);
        return;
    }
    if (p->role == DIST__ROLE_WORKER)
        dist__m_worker_dirty(s, p);
    else if (p->role == DIST__ROLE_CLIENT && p->cn && p->cn->unsent.n &&
             !dist__dn_linked(&p->cn->dirty))
        dist__dl_push_back(&s->dirty_clients, &p->cn->dirty);
}

/* Retries blocked peers: their outboxes in order, then whatever was
 * refused (TASKS, RESULTS) by marking them dirty again. */
static void s_retry_blocked(dist_master_t *s)
{
    s->retry_at = 0;
    size_t n = s->blocked.n;
    for (size_t i = 0; i < n; i++) {
        dist__mpeer_t *p = DIST__CONTAINER_OF(dist__dl_first(&s->blocked), dist__mpeer_t, blocked);
        dist__dl_remove(&s->blocked, &p->blocked);
        s_flush_outbox(s, p);
    }
}

/* ---- replies held for the store's commit ------------------------------------------------ */

int dist__m_hold_accepted(dist_master_t *s, dist__mpeer_t *p, dist_wire_msg_t *sub,
                          uint8_t *codes)
{
    if (p->gone || p->outbox.n >= OUTBOX_MAX)
        return -EHOSTUNREACH;
    dist__mout_t *o = calloc(1, sizeof *o);
    if (!o)
        return DIST_ENOMEM;
    size_t len = 0;
    dist_wire_msg_data(sub, &len);
    o->cmd = DIST__CMD_ACCEPTED;
    o->sub = sub;
    o->codes = codes;
    dist__dl_push_back(&p->outbox, &o->node);
    if (!dist__dn_linked(&p->holdn))
        dist__dl_push_back(&s->held, &p->holdn);
    s->held_bytes += len;
    return 0;
}

void dist__m_release_held(dist_master_t *s)
{
    bool recheck = dist__m_store_refusing(s);
    dist__dnode_t *d;
    while ((d = dist__dl_pop_front(&s->held))) {
        dist__mpeer_t *p = DIST__CONTAINER_OF(d, dist__mpeer_t, holdn);
        dist__dnode_t *e = dist__dl_first(&p->outbox), *next;
        for (; e; e = next) {
            next = dist__dl_next(&p->outbox, e);
            dist__mout_t *o = DIST__CONTAINER_OF(e, dist__mout_t, node);
            if (!o->sub)
                continue;
            dist__m_accepted_pack(s, p, dist_wire_msg_root(o->sub), o->codes, recheck);
            size_t len = 0;
            const void *data = dist_wire_buf_data(s->out, &len);
            int st = dist_wire_buf_status(s->out);
            o->bytes = st ? NULL : malloc(len);
            free(o->codes);
            o->codes = NULL;
            dist_wire_msg_destroy(&o->sub);
            if (!o->bytes) {
                /* No memory for the reply: the client resubmits after its
                 * timeout, and submission is idempotent. */
                dist__log(&s->log, DIST_LOG_ERROR, "cannot pack ACCEPTED: %s",
                          dist_strerror(st ? st : DIST_ENOMEM));
                dist__dl_remove(&p->outbox, e);
                s_out_free(o);
                continue;
            }
            memcpy(o->bytes, data, len);
            o->len = len;
            p->outbox_bytes += len;
            s->outbox_total += len;
        }
        /* A send tried while the replies were held (a heartbeat, say)
         * marked the peer blocked: the outbox can go now all the same. */
        if (dist__dn_linked(&p->blocked))
            dist__dl_remove(&s->blocked, &p->blocked);
        s_flush_outbox(s, p);
    }
    s->held_bytes = 0;
}

/* ---- malformed input and bans ----------------------------------------------------------- */

static const char *s_bad_reason(dist__bad_t bad)
{
    switch (bad) {
    case DIST__BAD_FRAMES: return "a message must have 3 frames";
    case DIST__BAD_SIGNATURE: return "frame 0 must be the signature DST and a version byte";
    case DIST__BAD_VERSION: return "unsupported protocol version";
    case DIST__BAD_COMMAND: return "unknown command";
    case DIST__BAD_BODY: return "the body must be one valid MessagePack map within the limits";
    default: return "malformed";
    }
}

/* Whether p may be answered now: always with a session, else within
 * NOSESSION_ANSWERS per second. */
static bool s_may_answer(dist_master_t *s, dist__mpeer_t *p)
{
    if (p->role != DIST__ROLE_NONE)
        return true;
    if (s->now - p->answers_at >= 1000) {
        p->answers_at = s->now;
        p->answers = 0;
    }
    return p->answers++ < NOSESSION_ANSWERS;
}

/* ERROR banned to a banned connection, within its answer budget. */
static void s_banned(dist_master_t *s, dist__mpeer_t *p)
{
    s_touch(s, p);
    if (s_may_answer(s, p))
        dist__m_error(s, p, "banned", 0, "too many malformed messages: this connection is banned");
}

static void s_ban(dist_master_t *s, dist__mpeer_t *p)
{
    char desc[300], why[400];
    dist__m_peer_desc(p, desc, sizeof desc);
    dist__log(&s->log, DIST_LOG_WARN, "banned %s: more than %d malformed messages in a row", desc,
              DIST__MAX_MALFORMED_IN_A_ROW);
    snprintf(why, sizeof why, "%s was banned for malformed messages", desc);
    s_session_end(s, p, why);
    p->banned = true;
}

/* Counts a malformed message from a peer (creating a record for a stranger
 * so that it can be banned) and answers it. version_reply: answer with the
 * unsupported-version form of section 8. */
static void s_malformed_rid(dist_master_t *s, dist__mpeer_t *p, const uint8_t *rid, size_t rid_len,
                            bool version_reply, const char *why)
{
    s->c.malformed++;
    if (!p)
        p = s_peer_new(s, rid, rid_len);
    if (!p) {
        /* No memory for a record: still answer, without state. */
        if (version_reply)
            s_wire_bad_version(s, rid, rid_len);
        else
            s_wire_error(s, rid, rid_len, "malformed", why);
        return;
    }
    if (p->banned) {
        s_banned(s, p);
        return;
    }
    s_touch(s, p);
    char desc[300];
    dist__m_peer_desc(p, desc, sizeof desc);
    dist__log(&s->log, p->bad_in_a_row ? DIST_LOG_DEBUG : DIST_LOG_WARN,
              "malformed message from %s: %s", desc, why);
    if (++p->bad_in_a_row > DIST__MAX_MALFORMED_IN_A_ROW) {
        s_ban(s, p);
        s_banned(s, p);
        return;
    }
    if (!s_may_answer(s, p))
        return;
    if (version_reply) {
        int rc = s_wire_bad_version(s, p->rid, p->rid_len);
        if (rc == 0)
            s_sent(s, p);
    } else {
        dist__m_error(s, p, "malformed", 0, "%s", why);
    }
}

void dist__m_malformed(dist_master_t *s, dist__mpeer_t *p, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    s_malformed_rid(s, p, p->rid, p->rid_len, false, why);
}

/* ---- refusals (docs/PROTOCOL.md section 9) ---------------------------------------------- */

/* Kinds of refusal, each with its own log budget, so that a flood of one
 * (a keyless peer retrying) does not hide another (a key in the wrong
 * role); CLOSED: connections closed by the transport. */
enum { REFUSED_PROTOCOL, REFUSED_AUTH, REFUSED_ROLE, REFUSED_OTHER, CLOSED };

/* Counts a refused connection or HELLO (or, kind CLOSED, a connection
 * the transport closed) and logs it: every one while they are rare, then
 * at most a few per second and kind (a peer with a bad key retries every
 * few hundred milliseconds), with the number left unsaid. */
static void s_refused(dist_master_t *s, int kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_refused(dist_master_t *s, int kind, const char *fmt, ...)
{
    if (kind == CLOSED)
        s->c.disconnected++;
    else
        s->c.refused_handshakes++;
    int64_t now = s_clock_ms();
    __typeof__(s->refused_log[0]) *l = &s->refused_log[kind];
    if (now - l->at >= 1000) {
        if (l->quiet)
            dist__log(&s->log, DIST_LOG_WARN, "%u more %s like the last one not logged",
                      l->quiet, kind == CLOSED ? "closed connection(s)" : "refusal(s)");
        l->at = now;
        l->logged = 0;
        l->quiet = 0;
    }
    if (l->logged >= 5) {
        l->quiet++;
        return;
    }
    l->logged++;
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    dist__log(&s->log, kind == CLOSED ? DIST_LOG_INFO : DIST_LOG_WARN, "%s%s",
              kind == CLOSED ? "" : "refused ", msg);
}

static const char *s_protocol_error(uint32_t code)
{
    switch (code) {
    case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
        return "it has no CURVE key (or it has one and this master has none)";
    case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC:
        return "cryptographic error: it expects another master key (--server-key)";
    default: return "CURVE/ZMTP handshake error";
    }
}

/* Reads the socket monitor: each failed handshake is a refusal. */
static void s_on_monitor(dist_master_t *s)
{
    uint16_t event;
    uint32_t value;
    char ep[256];
    for (int i = 0; i < 256 && dist__monitor_event(s->mon, &event, &value, ep, sizeof ep); i++) {
        char key[41], from[64];
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
            if (s->zap && dist__zap_take_denial(s->zap, key, from))
                s_refused(s, REFUSED_AUTH, "a connection from %s: key %s is not in the allow lists",
                          from, key);
            else
                s_refused(s, REFUSED_AUTH,
                          "a connection on %s: authentication failed (ZAP status %u)", ep,
                          (unsigned)value);
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
            s_refused(s, REFUSED_PROTOCOL, "a connection on %s: %s", ep, s_protocol_error(value));
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL && s->zap &&
                   (value == EPIPE || value == ECONNRESET)) {
            /* A peer that sees the mechanism mismatch first (it has no
             * key) or fails to decrypt (another master key) closes the
             * connection: this side only sees the close, in about half
             * of those refusals. */
            s_refused(s, REFUSED_PROTOCOL,
                      "a connection on %s: the peer broke off the CURVE handshake (%s): it has "
                      "no key, or expects another master key (--server-key)",
                      ep, zmq_strerror((int)value));
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
            s_refused(s, REFUSED_OTHER, "a connection on %s: the handshake did not complete (%s)",
                      ep, zmq_strerror((int)value));
        } else if (event == ZMQ_EVENT_DISCONNECTED) {
            /* ZeroMQ does not say why: a peer that closed its socket, a
             * TCP connection that failed, or a frame above --max-message,
             * which is dropped with its connection before it is buffered. */
            s_refused(s, CLOSED, "a connection on %s was closed (the peer left, its connection "
                      "failed, or it sent a frame above the %zu-byte limit)", ep, s->max_message);
        }
    }
}

/* ---- sessions ----------------------------------------------------------------------------- */

static void s_copy_str(char *dst, size_t cap, const char *src, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

static void s_welcome(dist_master_t *s, dist__mpeer_t *p, size_t pending)
{
    dist_wire_buf_reset(s->out);
    dist__welcome_t w = { .master = { s->name, strlen(s->name) },
                          .version = { DIST_VERSION_STRING, strlen(DIST_VERSION_STRING) },
                          .heartbeat_ms = (uint32_t)s->hb_ms,
                          .heartbeat_timeout_ms = (uint32_t)s->hb_timeout_ms,
                          .max_message = s->max_message > UINT32_MAX ? UINT32_MAX
                                                                     : (uint32_t)s->max_message,
                          .max_batch = DIST__MAX_BATCH,
                          .pending_results = pending > UINT32_MAX ? UINT32_MAX : (uint32_t)pending,
                          .client = p->role == DIST__ROLE_CLIENT };
    dist__pack_welcome(dist_wire_buf_packer(s->out), &w);
    dist__m_send(s, p, DIST__CMD_WELCOME, s->out, NULL, NULL, 0);
}

/* HELLO: checks every field before it changes anything. */
static void s_hello(dist_master_t *s, dist__mpeer_t *p, const dist__inmsg_t *m)
{
    dist__hello_t h;
    const char *bad = NULL;
    dist__parse_hello(m->root, &h, &bad);
    int r = h.role == DIST__PEER_WORKER ? DIST__ROLE_WORKER : DIST__ROLE_CLIENT;
    const char *name = h.name.s, *host = h.host.s;
    size_t name_n = h.name.n, host_n = h.host.n, ntasks = h.ntasks;
    uint32_t slots = h.slots, capacity = h.capacity;
    if (bad) {
        if (p && p->banned)
            s_banned(s, p);
        else
            s_malformed_rid(s, p, m->rid, m->rid_len, false, bad);
        return;
    }
    /* Role separation: the allow list a key came from decides the role it
     * may take (security_internal.h). */
    if (s->zap) {
        char key[41] = "?";
        int roles = dist__zap_roles(m->user_id, key);
        int need = r == DIST__ROLE_WORKER ? 1 : 2;
        if (!(roles & need)) {
            const char *as = r == DIST__ROLE_WORKER ? "worker" : "client";
            s_refused(s, REFUSED_ROLE,
                      "HELLO as %s %.*s (host %.*s): key %s is not in the %ss' allow list", as,
                      (int)name_n, name, (int)host_n, host, key, as);
            char msg[128];
            snprintf(msg, sizeof msg, "this key may not act as a %s", as);
            s_wire_error(s, m->rid, m->rid_len, "forbidden", msg);
            return;
        }
    }
    if (!p && !(p = s_peer_new(s, m->rid, m->rid_len)))
        return; /* no memory: the peer will say HELLO again */
    if (p->banned) {
        s_banned(s, p);
        return;
    }
    char desc[300];
    if (p->role != DIST__ROLE_NONE && p->role != r) {
        snprintf(desc, sizeof desc, "%s said HELLO again with another role", p->name);
        s_session_end(s, p, desc);
    }
    bool first = p->role == DIST__ROLE_NONE;
    if (first) {
        dist__dl_remove(s_live_list(s, p), &p->live);
        p->role = r;
        dist__dl_push_back(s_live_list(s, p), &p->live);
        p->joined = s->now;
        if (r == DIST__ROLE_WORKER)
            s->nworkers++;
        else
            s->nclients++;
    }
    p->bad_in_a_row = 0;
    s_touch(s, p);
    s_copy_str(p->name, sizeof p->name, name, name_n);
    s_copy_str(p->host, sizeof p->host, host, host_n);
    s_copy_str(p->version, sizeof p->version, h.version.s, h.version.n);
    p->pid = h.pid;
    dist__m_peer_desc(p, desc, sizeof desc);
    if (r == DIST__ROLE_WORKER) {
        p->slots = slots;
        p->capacity = capacity;
        if (dist__m_worker_names(s, p, h.tasks, ntasks)) {
            dist__m_error(s, p, "malformed", 0, "the master is out of memory");
            dist__m_peer_gone(s, p);
            return;
        }
        s_welcome(s, p, 0);
        dist__m_worker_dirty(s, p);
        dist__log(&s->log, first ? DIST_LOG_INFO : DIST_LOG_DEBUG,
                  "worker %s: %s, %u slot(s), capacity %u, %zu task name(s)",
                  first ? "joined" : "announced again", desc, (unsigned)slots, (unsigned)capacity,
                  ntasks);
    } else {
        dist__mclient_t *cn = dist__m_client_attach(s, p, name, name_n);
        if (!cn) {
            dist__m_error(s, p, "malformed", 0, "the master is out of memory");
            dist__m_peer_gone(s, p);
            return;
        }
        size_t waiting = cn->unsent.n + cn->sent.n;
        s_welcome(s, p, waiting);
        dist__log(&s->log, first ? DIST_LOG_INFO : DIST_LOG_DEBUG,
                  "client %s: %s, %zu result(s) waiting", first ? "joined" : "said HELLO again",
                  desc, waiting);
    }
}

static void s_credit(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *b)
{
    dist__credit_t c;
    if (dist__parse_credit(b, &c)) {
        dist__m_malformed(s, p, "CREDIT needs capacity, a u32");
        return;
    }
    p->capacity = c.capacity;
    dist__m_worker_dirty(s, p);
}

static void s_bye(dist_master_t *s, dist__mpeer_t *p)
{
    char desc[300], why[400];
    dist__m_peer_desc(p, desc, sizeof desc);
    if (p->role == DIST__ROLE_WORKER)
        dist__log(&s->log, DIST_LOG_INFO, "worker left: %s, %zu task(s) requeued", desc,
                  p->leased.n);
    else
        dist__log(&s->log, DIST_LOG_INFO, "client left: %s", desc);
    snprintf(why, sizeof why, "%s left while it held the task", desc);
    s_forget(s, p, why);
}

typedef void (*s_handler_fn)(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *body);

/* Who may send each command, and what handles it. */
static const struct {
    int role;
    s_handler_fn fn;
} s_handlers[DIST__CMD_COUNT] = {
    [DIST__CMD_RESULTS] = { DIST__ROLE_WORKER, dist__m_results },
    [DIST__CMD_CREDIT] = { DIST__ROLE_WORKER, s_credit },
    [DIST__CMD_RETURN] = { DIST__ROLE_WORKER, dist__m_return },
    [DIST__CMD_SUBMIT] = { DIST__ROLE_CLIENT, dist__m_submit },
    [DIST__CMD_ACK] = { DIST__ROLE_CLIENT, dist__m_ack },
    [DIST__CMD_QPUT] = { DIST__ROLE_CLIENT, dist__m_qput },
    [DIST__CMD_QGET] = { DIST__ROLE_CLIENT, dist__m_qget },
    [DIST__CMD_STATUS] = { DIST__ROLE_CLIENT, dist__m_status },
    [DIST__CMD_LOOKUP] = { DIST__ROLE_CLIENT, dist__m_lookup },
    [DIST__CMD_FETCH] = { DIST__ROLE_CLIENT, dist__m_fetch },
    [DIST__CMD_CANCEL] = { DIST__ROLE_CLIENT, dist__m_cancel },
    [DIST__CMD_FAILED] = { DIST__ROLE_CLIENT, dist__m_failed },
    [DIST__CMD_RETRY] = { DIST__ROLE_CLIENT, dist__m_retry },
};

static void s_handle(dist_master_t *s, const dist__inmsg_t *m)
{
    dist__mpeer_t *p = s_peer_find(s, m->rid, m->rid_len);
    if (m->cmd == DIST__CMD_HELLO) {
        s_hello(s, p, m);
        return;
    }
    if (p && p->banned) {
        s_banned(s, p);
        return;
    }
    if (!p || p->role == DIST__ROLE_NONE) {
        /* Results are idempotent: keep the work even from a worker the
         * master does not know (say after it was written off). */
        if (m->cmd == DIST__CMD_RESULTS &&
            (!s->zap || (dist__zap_roles(m->user_id, NULL) & 1)))
            dist__m_results(s, NULL, m->root);
        if (p) {
            /* A record without a session (a refused HELLO, malformed
             * messages): the row of malformed messages goes on. */
            s_touch(s, p);
            if (s_may_answer(s, p))
                dist__m_error(s, p, "not_welcome", 0, "say HELLO first");
        } else {
            s_wire_send(s, m->rid, m->rid_len, DIST__CMD_RECONNECT, NULL, 0);
        }
        return;
    }
    s_touch(s, p);
    p->bad_in_a_row = 0;
    if (m->cmd == DIST__CMD_HEARTBEAT)
        return;
    if (m->cmd == DIST__CMD_BYE) {
        s_bye(s, p);
        return;
    }
    int role = s_handlers[m->cmd].role;
    if (!role)
        dist__m_error(s, p, "forbidden", 0, "%s is sent by the master only",
                      dist__cmd_name(m->cmd));
    else if (role != p->role)
        dist__m_error(s, p, "forbidden", 0, "%s is a %s command", dist__cmd_name(m->cmd),
                      role == DIST__ROLE_WORKER ? "worker" : "client");
    else
        s_handlers[m->cmd].fn(s, p, m->root);
}

/* Handles one message as dist__proto_recv returned it (0 or DIST_EPROTO). */
static void s_on_message(dist_master_t *s, int rc, dist__inmsg_t *m)
{
    if (rc == 0) {
        s->cur = m;
        s_handle(s, m);
        s->cur = NULL;
        dist__inmsg_clear(m);
    } else {
        dist__mpeer_t *p = s_peer_find(s, m->rid, m->rid_len);
        s_malformed_rid(s, p, m->rid, m->rid_len, m->bad == DIST__BAD_VERSION,
                        s_bad_reason(m->bad));
    }
    s_reap(s);
}

/* Reads up to READ_BATCH messages; true when the socket is drained. */
static bool s_read_batch(dist_master_t *s)
{
    for (int i = 0; i < READ_BATCH; i++) {
        /* Held SUBMITs wait for the commit: commit before keeping more. */
        if (s->held_bytes >= HELD_BYTES_MAX)
            return false;
        dist__inmsg_t m;
        int rc = dist__proto_recv(s->sock, true, &s->limits, &m);
        if (rc == DIST_EAGAIN)
            return true;
        if (rc != 0 && rc != DIST_EPROTO) {
            dist__log(&s->log, DIST_LOG_ERROR, "receiving: %s", dist_strerror(rc));
            return true;
        }
        s_on_message(s, rc, &m);
    }
    return false;
}

/* The checks dist__proto_recv makes, on frames given by a test. */
void dist__m_feed(dist_master_t *s, const uint8_t *rid, size_t rid_len,
                  const void *const *frames, const size_t *lens, size_t nframes)
{
    dist__inmsg_t m;
    memset(&m, 0, sizeof m);
    m.rid_len = rid_len < sizeof m.rid ? rid_len : sizeof m.rid;
    memcpy(m.rid, rid, m.rid_len);
    bool ok = nframes == 3;
    int rc = dist__proto_check(&m, ok, ok ? frames[0] : NULL, ok ? lens[0] : 0,
                               ok ? frames[1] : NULL, ok ? lens[1] : 0, ok ? frames[2] : NULL,
                               ok ? lens[2] : 0, &s->limits);
    s_on_message(s, rc, &m);
}

/* ---- timers --------------------------------------------------------------------------- */

static int64_t s_idle_ms(const dist_master_t *s)
{
    return (int64_t)s->hb_timeout_ms * IDLE_FACTOR;
}

/* drained: every message that arrived has been read, so silence is real
 * (after a stall of the master itself, heartbeats may still be waiting in
 * the socket: no worker is declared dead before they are read). */
static void s_timers(dist_master_t *s, bool drained)
{
    dist__dnode_t *d;
    /* Workers silent for the heartbeat timeout are dead. */
    while (drained && (d = dist__dl_first(&s->live))) {
        dist__mpeer_t *p = DIST__CONTAINER_OF(d, dist__mpeer_t, live);
        if (s->now - p->last_seen < s->hb_timeout_ms)
            break;
        char desc[300], why[400];
        dist__m_peer_desc(p, desc, sizeof desc);
        dist__log(&s->log, DIST_LOG_WARN, "worker dead: %s, silent for %lld ms, %zu task(s) requeued",
                  desc, (long long)(s->now - p->last_seen), p->leased.n);
        snprintf(why, sizeof why, "%s died", desc);
        s->c.dead_workers++;
        s_forget(s, p, why);
    }
    /* Clients and strangers that fell silent are forgotten quietly: a
     * client's results wait for its name. */
    while (drained && (d = dist__dl_first(&s->idle))) {
        dist__mpeer_t *p = DIST__CONTAINER_OF(d, dist__mpeer_t, live);
        if (s->now - p->last_seen < s_idle_ms(s))
            break;
        char desc[300];
        dist__log(&s->log, DIST_LOG_DEBUG, "forgetting silent %s",
                  dist__m_peer_desc(p, desc, sizeof desc));
        s_forget(s, p, "silent");
    }
    /* Deadlines. */
    while (s->timers.n && s->timers.v[0]->at <= s->now) {
        dist__hnode_t *n = s->timers.v[0];
        dist__m_timer_del(s, n);
        switch (n->kind) {
        case DIST__TIMER_LEASE:
            dist__m_lease_expired(s, DIST__CONTAINER_OF(n, dist__mtask_t, timer));
            break;
        case DIST__TIMER_GHOST:
            dist__m_ghost_expired(s, DIST__CONTAINER_OF(n, dist__mghost_t, timer));
            break;
        case DIST__TIMER_PARK:
            dist__m_park_expired(s, DIST__CONTAINER_OF(n, dist__mpark_t, timer));
            break;
        case DIST__TIMER_DUE:
            dist__m_task_due(s, DIST__CONTAINER_OF(n, dist__mtask_t, timer));
            break;
        case DIST__TIMER_FETCH:
            dist__m_fetch_expired(s, n);
            break;
        }
    }
    /* Heartbeats to peers we have not written to for heartbeat_ms. */
    while ((d = dist__dl_first(&s->hb))) {
        dist__mpeer_t *p = DIST__CONTAINER_OF(d, dist__mpeer_t, hb);
        if (s->now - p->last_sent < s->hb_ms)
            break;
        if (dist__m_peer_ready(p)) {
            dist__m_try_send(s, p, DIST__CMD_HEARTBEAT, NULL);
        }
        if (dist__dn_linked(&p->hb) && dist__dl_first(&s->hb) == d) {
            /* Blocked, or the send failed: look again later. */
            p->last_sent = s->now;
            dist__dl_move_back(&s->hb, &p->hb);
        }
    }
    if (s->blocked.n && s->retry_at && s->now >= s->retry_at)
        s_retry_blocked(s);
    s_reap(s);
}

/* Milliseconds until the next timer is due (at most 1 s). */
static long s_next_timeout(const dist_master_t *s)
{
    int64_t next = s->now + 1000;
    dist__dnode_t *d;
    if ((d = dist__dl_first(&s->live))) {
        const dist__mpeer_t *p = DIST__CONTAINER_OF(d, dist__mpeer_t, live);
        if (p->last_seen + s->hb_timeout_ms < next)
            next = p->last_seen + s->hb_timeout_ms;
    }
    if ((d = dist__dl_first(&s->idle))) {
        const dist__mpeer_t *p = DIST__CONTAINER_OF(d, dist__mpeer_t, live);
        if (p->last_seen + s_idle_ms(s) < next)
            next = p->last_seen + s_idle_ms(s);
    }
    if ((d = dist__dl_first(&s->hb))) {
        const dist__mpeer_t *p = DIST__CONTAINER_OF(d, dist__mpeer_t, hb);
        if (p->last_sent + s->hb_ms < next)
            next = p->last_sent + s->hb_ms;
    }
    if (s->timers.n && s->timers.v[0]->at < next)
        next = s->timers.v[0]->at;
    if (s->blocked.n && s->retry_at && s->retry_at < next)
        next = s->retry_at;
    if (s->store_failed && s->store_retry_at < next)
        next = s->store_retry_at;
    if (dist__m_obs_next(s) < next)
        next = dist__m_obs_next(s);
    if (s->dirty_tqs.n || s->dirty_workers.n || s->dirty_clients.n || s->reap.n ||
        (s->store && !s->store_failed && (s->sd_head || s->sq_head)))
        next = s->now;
    return next <= s->now ? 0 : (long)(next - s->now);
}

/* The rest of a loop turn, once the messages are read: timers (deaths
 * only when the socket was drained), the commit and the replies it
 * holds, then dispatch and results, which only ever send what is
 * committed. */
static void s_turn(dist_master_t *s, bool drained)
{
    s_timers(s, drained);
    dist__m_expire_results(s);
    dist__m_store_turn(s);
    dist__m_dispatch(s);
    dist__m_flush_results(s);
    s_reap(s);
    dist__m_obs_turn(s);
}

void dist__m_turn(dist_master_t *s, int64_t now)
{
    if (now > s->now)
        s->now = now;
    s_turn(s, true);
}

int64_t dist__m_now(const dist_master_t *s) { return s->now; }

void dist__m_set_sink(dist_master_t *s, dist__m_sink_fn fn, void *ud)
{
    s->sink = fn;
    s->sink_ud = ud;
}

void dist__m_fail_commits(dist_master_t *s, unsigned n, int err)
{
    atomic_store(&s->fail_err, err);
    atomic_store(&s->fail_commits, n);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static void s_free(dist_master_t *s)
{
    dist__m_obs_close(s);
    dist__m_queues_free(s);
    dist__m_store_close(s);
    dist__m_tasks_free(s);
    dist__m_control_free(s);
    for (size_t i = 0; i < s->peers.cap; i++) {
        dist__mpeer_t *p = s->peers.slots ? s->peers.slots[i].item : NULL;
        if (!p)
            continue;
        dist__dnode_t *d;
        while ((d = dist__dl_pop_front(&p->outbox))) {
            dist__mout_t *o = DIST__CONTAINER_OF(d, dist__mout_t, node);
            s_items_free(o->items, o->nitems);
            o->items = NULL;
            s_out_free(o);
        }
        free(p);
    }
    dist__hmap_fini(&s->peers);
    dist__hmap_fini(&s->tasks);
    dist__hmap_fini(&s->tq_index);
    dist__hmap_fini(&s->cn_index);
    dist__hmap_fini(&s->nq_index);
    free(s->timers.v);
    free(s->cand);
    if (s->mon) {
        zmq_socket_monitor(zsock_resolve(s->sock), NULL, 0);
        zsock_destroy(&s->mon);
    }
    zsock_destroy(&s->sock);
    /* After the socket: no handshake of ours can ask the handler now. */
    dist__zap_unregister(&s->zap);
    free(s->endpoint);
    dist_wire_buf_destroy(&s->out);
    if (s->wake[0] >= 0)
        close(s->wake[0]);
    if (s->wake[1] >= 0)
        close(s->wake[1]);
    free(s);
}

static int s_check_opts(const dist_master_opts_t *o, const char **why)
{
    if (o->heartbeat_ms < 0 || o->heartbeat_timeout_ms < 0 || o->max_attempts < 0 ||
        o->lease_ms < 0) {
        *why = "heartbeat, heartbeat timeout, max attempts and lease must not be negative";
        return -1;
    }
    if (o->max_message && (o->max_message < 1024 || o->max_message > INT32_MAX)) {
        *why = "max message must be between 1024 and 2147483647 bytes";
        return -1;
    }
    if (o->key && !*o->key) {
        *why = "the key must be a file name";
        return -1;
    }
    if (o->key && !o->allow_workers && !o->allow_clients) {
        *why = "a master key needs an allow list (allow_workers, allow_clients): without one no "
               "peer could ever connect";
        return -1;
    }
    if (!o->key && (o->allow_workers || o->allow_clients)) {
        *why = "allow lists need the master's own key (key, from `dist keygen master`)";
        return -1;
    }
    if (o->store && !*o->store) {
        *why = "the store must be a file name";
        return -1;
    }
    if (o->name && !dist__peer_name_ok(o->name, strlen(o->name))) {
        *why = "the master's name must be 1-128 bytes";
        return -1;
    }
    return 0;
}

dist_master_t *dist_master_new(const dist_master_opts_t *opts)
{
    dist_master_opts_t o;
    memset(&o, 0, sizeof o);
    if (opts)
        o = *opts;
    dist__logger_t lg = { o.log, o.log_userdata,
                          o.log_level ? o.log_level : DIST_LOG_INFO, "master" };
    const char *why = NULL;
    if (s_check_opts(&o, &why)) {
        dist__log(&lg, DIST_LOG_ERROR, "%s", why);
        errno = EINVAL;
        return NULL;
    }
    char verr[200];
    if (dist__zmq_version_ok(verr, sizeof verr)) {
        dist__log(&lg, DIST_LOG_ERROR, "%s", verr);
        errno = ENOTSUP;
        return NULL;
    }
    /* Protected mode: decided on the endpoint as given, before anything
     * listens. A name or a wildcard counts as reachable from the network. */
    const char *bind = o.bind ? o.bind : DIST_DEFAULT_ENDPOINT;
    if (!o.key && !o.insecure && !dist__endpoint_local(bind) && strstr(bind, "://")) {
        dist__log(&lg, DIST_LOG_ERROR,
                  "refusing to bind %s without CURVE keys: anyone who can reach it could run "
                  "tasks and read results. Create keys with `dist keygen master` (and `dist "
                  "keygen NAME` for each worker and client, their NAME.pub files going into the "
                  "allow-list directories), then give --key master.key --allow-workers DIR "
                  "--allow-clients DIR; or accept the risk with --insecure",
                  bind);
        errno = EINVAL;
        return NULL;
    }
    char pub[41] = "", sec[41] = "";
    if (o.key) {
        char kerr[600];
        int rc = dist__key_read_secret(o.key, pub, sec, kerr, sizeof kerr);
        if (rc) {
            dist__log(&lg, DIST_LOG_ERROR, "%s", kerr);
            errno = rc == DIST_ENOMEM ? ENOMEM : -rc;
            return NULL;
        }
    }
    dist_master_t *s = calloc(1, sizeof *s);
    if (!s) {
        errno = ENOMEM;
        return NULL;
    }
    s->log = lg;
    s->wake[0] = s->wake[1] = -1;
    s->hb_ms = o.heartbeat_ms ? o.heartbeat_ms : DIST__HEARTBEAT_MS;
    s->hb_timeout_ms = o.heartbeat_timeout_ms ? o.heartbeat_timeout_ms : DIST__HEARTBEAT_TIMEOUT_MS;
    s->max_attempts = o.max_attempts ? o.max_attempts : 3;
    s->lease_ms = o.lease_ms ? o.lease_ms : DEFAULT_LEASE_MS;
    s->jitter = (uint64_t)dist__m_unix_ms() * 2654435761u | 1;
    s->result_ttl_ms = o.result_ttl_ms < 0 ? 0 : o.result_ttl_ms ? o.result_ttl_ms : 86400000;
    s->max_queued = o.max_queued ? o.max_queued : DEFAULT_MAX_QUEUED;
    s->max_results = o.max_results ? o.max_results : DEFAULT_MAX_RESULTS;
    s->max_message = o.max_message ? o.max_message : DIST__MAX_MESSAGE_DEFAULT;
    s->limits = dist__body_limits(s->max_message);
    if (o.name) {
        snprintf(s->name, sizeof s->name, "%s", o.name);
    } else {
        char host[256] = "localhost";
        gethostname(host, sizeof host - 1);
        snprintf(s->name, sizeof s->name, "%.100s:%d", host, (int)getpid());
    }
    s->now = s->started = s_clock_ms();
    s->tq_gc_at = 100000;
    dist__hkey_init(&s->hkey);
    dist__hmap_init(&s->peers, s_peer_eq);
    dist__m_tasks_init(s);
    dist__m_queues_init(s);
    dist__dl_init(&s->fetches);
    dist__dl_init(&s->live);
    dist__dl_init(&s->idle);
    dist__dl_init(&s->hb);
    dist__dl_init(&s->dirty_tqs);
    dist__dl_init(&s->dirty_workers);
    dist__dl_init(&s->dirty_clients);
    dist__dl_init(&s->blocked);
    dist__dl_init(&s->reap);
    dist__dl_init(&s->held);
    int err = ENOMEM;
    s->out = dist_wire_buf_new(0);
    if (!s->out)
        goto fail;
    /* The store before the socket: a master that cannot keep its promises
     * must not be reachable at all. */
    if (o.store) {
        int rc = dist__m_store_open(s, o.store, o.store_fsync);
        if (rc) {
            err = -rc;
            goto fail;
        }
    }
    if (pipe2(s->wake, O_NONBLOCK | O_CLOEXEC) < 0) {
        err = errno;
        dist__log(&s->log, DIST_LOG_ERROR, "cannot create the stop pipe: %s", strerror(err));
        goto fail;
    }
    s->sock = zsock_new(ZMQ_ROUTER);
    if (!s->sock) {
        err = errno ? errno : ENOMEM;
        dist__log(&s->log, DIST_LOG_ERROR, "cannot create a ZeroMQ socket: %s", zmq_strerror(err));
        goto fail;
    }
    dist__sockopts_t so = { s->max_message, 0, 0, 0, -1 };
    dist__sock_setup(s->sock, true, &so);
    zsock_set_sndhwm(s->sock, ROUTER_SNDHWM);
    /* No transport heartbeats from this side: libzmq 4.3.4 aborts
     * (stream_engine_base.cpp, "!_io_error") when the heartbeat timer of a
     * connection fires after its input stopped at the high-water mark and
     * its peer hung up, which any peer that floods and disconnects can
     * cause. Liveness is the application heartbeats' job (section 5); the
     * peers' own transport heartbeats still run. */
    zsock_set_heartbeat_ivl(s->sock, 0);
    if (o.key) {
        /* The handler first: a CURVE server in a context without one
         * would let every key in. */
        char domain[32], zerr[600] = "cannot start the ZAP handler";
        s->zap = dist__zap_register(o.allow_workers, o.allow_clients, domain, zerr, sizeof zerr);
        if (!s->zap) {
            err = errno ? errno : ENOMEM;
            dist__log(&s->log, DIST_LOG_ERROR, "%s", zerr);
            goto fail;
        }
        zcert_t *cert = dist__cert_from_txt(pub, sec);
        if (!cert)
            goto fail;
        zcert_apply(cert, s->sock);
        zcert_destroy(&cert);
        zsock_set_curve_server(s->sock, 1);
        zsock_set_zap_domain(s->sock, domain);
    }
    explicit_bzero(sec, sizeof sec);
    /* Every connection that fails its handshake (no key, an unknown key,
     * the wrong idea of our key, or silence) is logged and counted. */
    char mon[64];
    dist__monitor_name(mon, sizeof mon, "master");
    if (zmq_socket_monitor(zsock_resolve(s->sock), mon,
                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_DISCONNECTED) == 0) {
        s->mon = zsock_new(ZMQ_PAIR);
        if (s->mon && zsock_connect(s->mon, "%s", mon) != 0)
            zsock_destroy(&s->mon);
        if (!s->mon)
            zmq_socket_monitor(zsock_resolve(s->sock), NULL, 0);
    }
    char ep_why[600];
    if (!dist__endpoint_check(bind, ep_why, sizeof ep_why)) {
        err = EINVAL;
        dist__log(&s->log, DIST_LOG_ERROR, "cannot bind: %s", ep_why);
        goto fail;
    }
    /* zmq_bind rather than zsock_bind: libzmq lets the kernel pick a port
     * for ":0" and ":*", where czmq would scan a port range itself. */
    if (zmq_bind(zsock_resolve(s->sock), bind) < 0) {
        err = errno;
        dist__log(&s->log, DIST_LOG_ERROR, "cannot bind %s: %s", bind, zmq_strerror(err));
        goto fail;
    }
    char ep[1024];
    size_t eplen = sizeof ep;
    if (zmq_getsockopt(zsock_resolve(s->sock), ZMQ_LAST_ENDPOINT, ep, &eplen) < 0 || !eplen)
        snprintf(ep, sizeof ep, "%s", bind);
    s->endpoint = strdup(ep);
    if (!s->endpoint)
        goto fail;
    if (o.key)
        dist__log(&s->log, DIST_LOG_INFO, "CURVE on: master key %s, workers from %s, clients "
                  "from %s", pub, o.allow_workers ? o.allow_workers : "(none)",
                  o.allow_clients ? o.allow_clients : "(none)");
    else if (!dist__endpoint_local(s->endpoint))
        dist__log(&s->log, DIST_LOG_WARN,
                  "%s is reachable from other hosts and the traffic is neither authenticated nor "
                  "encrypted (--insecure)",
                  s->endpoint);
    dist__log(&s->log, DIST_LOG_INFO, "master %s listening on %s (protocol %d, libdist %s)",
              s->name, s->endpoint, DIST__PROTO_VERSION, DIST_VERSION_STRING);
    /* The metrics endpoint last: its thread starts here, after anything
     * that could fail for the master's own reasons. */
    if (o.metrics) {
        int rc = dist__m_obs_open(s, o.metrics, o.insecure);
        if (rc) {
            err = -rc;
            goto fail;
        }
    }
    return s;
fail:
    explicit_bzero(sec, sizeof sec);
    s_free(s);
    errno = err;
    return NULL;
}

const char *dist_master_endpoint(const dist_master_t *self)
{
    return self ? self->endpoint : NULL;
}

int dist_master_metrics_port(const dist_master_t *self)
{
    /* obs is set once in dist_master_new and only read afterwards. */
    return self ? dist__m_obs_port(self) : 0;
}

int dist_master_run(dist_master_t *s)
{
    if (!s)
        return DIST_EINVAL;
    if (atomic_exchange(&s->running, true))
        return DIST_ESTATE;
    zmq_pollitem_t items[3] = {
        { zsock_resolve(s->sock), 0, ZMQ_POLLIN, 0 },
        { NULL, s->wake[0], ZMQ_POLLIN, 0 },
        { s->mon ? zsock_resolve(s->mon) : NULL, 0, ZMQ_POLLIN, 0 },
    };
    int rc = 0;
    s->now = s_clock_ms();
    while (!atomic_load(&s->stop)) {
        int n = dist__poll(items, s->mon ? 3 : 2, s_next_timeout(s), DIST__SPIN_US);
        if (n < 0 && errno != EINTR) {
            rc = -errno;
            dist__log(&s->log, DIST_LOG_ERROR, "poll: %s", zmq_strerror(errno));
            break;
        }
        if (n > 0 && items[1].revents) {
            char junk[64];
            while (read(s->wake[0], junk, sizeof junk) > 0)
                ;
        }
        if (atomic_load(&s->stop))
            break;
        s->now = s_clock_ms();
        if (n > 0 && s->mon && (items[2].revents & ZMQ_POLLIN))
            s_on_monitor(s);
        bool drained = true;
        if (n > 0 && (items[0].revents & ZMQ_POLLIN))
            drained = s_read_batch(s);
        s->now = s_clock_ms();
        /* A socket that stays busy for a whole heartbeat timeout does not
         * postpone deaths any longer. */
        if (drained)
            s->busy_since = 0;
        else if (!s->busy_since)
            s->busy_since = s->now;
        s_turn(s, drained || s->now - s->busy_since >= s->hb_timeout_ms);
    }
    /* What the last turn changed after its commit (leases) is committed
     * on the way out. */
    s->now = s_clock_ms();
    dist__m_store_turn(s);
    dist__log(&s->log, DIST_LOG_INFO, "master %s stopping: %zu task(s) queued or leased, %zu "
              "result(s) waiting", s->name, s->outstanding, s->results_waiting);
    atomic_store(&s->running, false);
    return rc;
}

static void *s_thread(void *arg)
{
    dist_master_run(arg);
    return NULL;
}

int dist_master_start(dist_master_t *s)
{
    if (!s)
        return DIST_EINVAL;
    if (atomic_load(&s->running) || atomic_exchange(&s->joinable, true))
        return DIST_ESTATE;
    int rc = pthread_create(&s->thread, NULL, s_thread, s);
    if (rc) {
        atomic_store(&s->joinable, false);
        return -rc;
    }
    return 0;
}

void dist_master_stop(dist_master_t *s)
{
    if (!s)
        return;
    int saved = errno;
    atomic_store(&s->stop, true);
    /* A full pipe already holds a wake-up. */
    ssize_t w = write(s->wake[1], "x", 1);
    (void)w;
    errno = saved;
    if (atomic_load(&s->joinable) && !pthread_equal(pthread_self(), s->thread) &&
        atomic_exchange(&s->joinable, false))
        pthread_join(s->thread, NULL);
}

void dist_master_destroy(dist_master_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_master_t *s = *self_p;
    *self_p = NULL;
    dist_master_stop(s);
    s_free(s);
}

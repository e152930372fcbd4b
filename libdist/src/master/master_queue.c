/*  master_queue.c - named queues shared by clients: QPUT, QGET and their
 *  QREPLY (docs/PROTOCOL.md section 7a), the remote queues of Python's
 *  BaseManager example.
 *
 *  A queue is a ring of opaque items, created on first use and freed when
 *  it is empty and nobody waits on it. It holds at most max_queued items.
 *  A request that cannot be served at once waits ("parks") up to its
 *  timeout; parked requests are served strictly in arrival order: a QGET
 *  takes items as soon as there are any, a QPUT is stored whole as soon as
 *  it fits, and one that is still waiting holds back the QPUTs behind it.
 *  Each peer may park at most MAX_PARKED requests, so a client cannot grow
 *  the master's memory by waiting.
 *
 *  Items of a QREPLY that cannot be delivered (the client is gone, or
 *  stopped reading) go back to the front of their queue in order; they
 *  are only freed once the reply is on its way.
 */
#include "master_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/error.h"

#define MAX_PARKED 1024          /* parked requests per peer */
#define MAX_NAMED_QUEUES 100000  /* queues at once */

void dist__m_queues_init(dist_master_t *s)
{
    dist__hmap_init(&s->nq_index, dist__m_key_eq);
    dist__dl_init(&s->nqs);
}

static dist__mnq_t *s_nq_find(dist_master_t *s, const char *name, size_t len)
{
    return dist__m_named_find(s, &s->nq_index, name, len);
}

static dist__mnq_t *s_nq_get(dist_master_t *s, const char *name, size_t len)
{
    dist__mnq_t *nq = s_nq_find(s, name, len);
    if (nq || s->nqs.n >= MAX_NAMED_QUEUES ||
        !(nq = dist__m_named_new(s, &s->nq_index, name, len, sizeof *nq)))
        return nq;
    dist__dl_init(&nq->puts);
    dist__dl_init(&nq->gets);
    dist__dl_push_back(&s->nqs, &nq->all);
    return nq;
}

static void s_nq_maybe_free(dist_master_t *s, dist__mnq_t *nq)
{
    if (nq->n || nq->puts.n || nq->gets.n || nq->pumping || nq->marked)
        return;
    dist__hmap_del(&s->nq_index, nq->key.hash, nq);
    dist__dl_remove(&s->nqs, &nq->all);
    free(nq->ring);
    free(nq);
}

/* ---- the ring ------------------------------------------------------------------------ */

static int s_ring_reserve(dist__mnq_t *nq, size_t more)
{
    if (nq->n + more <= nq->cap)
        return 0;
    size_t cap = nq->cap ? nq->cap : 16;
    while (cap < nq->n + more) {
        if (cap > SIZE_MAX / 2 / sizeof *nq->ring)
            return DIST_ENOMEM;
        cap *= 2;
    }
    dist__mitem_t **ring = malloc(cap * sizeof *ring);
    if (!ring)
        return DIST_ENOMEM;
    for (size_t i = 0; i < nq->n; i++)
        ring[i] = nq->ring[(nq->head + i) % nq->cap];
    free(nq->ring);
    nq->ring = ring;
    nq->cap = cap;
    nq->head = 0;
    return 0;
}

/* Both need room (s_ring_reserve first). */
static void s_ring_push_back(dist__mnq_t *nq, dist__mitem_t *it)
{
    nq->ring[(nq->head + nq->n) % nq->cap] = it;
    nq->n++;
}

static void s_ring_push_front(dist__mnq_t *nq, dist__mitem_t *it)
{
    nq->head = (nq->head + nq->cap - 1) % nq->cap;
    nq->ring[nq->head] = it;
    nq->n++;
}

static dist__mitem_t *s_ring_pop_front(dist__mnq_t *nq)
{
    dist__mitem_t *it = nq->ring[nq->head];
    nq->head = (nq->head + 1) % nq->cap;
    nq->n--;
    return it;
}

static void s_items_free(dist__mitem_t **items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(items[i]);
}

/* Copies n bins into out[]. 0 or DIST_ENOMEM (nothing kept). */
static int s_items_copy(const msgpack_object *bins, size_t n, dist__mitem_t **out)
{
    for (size_t i = 0; i < n; i++) {
        const void *p;
        size_t len;
        dist_wire_get_bin(&bins[i], &p, &len); /* checked by the caller */
        out[i] = malloc(sizeof **out + len);
        if (!out[i]) {
            s_items_free(out, i);
            return DIST_ENOMEM;
        }
        out[i]->len = (uint32_t)len;
        memcpy(out[i]->data, p, len);
    }
    return 0;
}

/* Takes up to max items from the front within one message. Returns a
 * malloc'd array and its count in *n (NULL, 0 when there is nothing or no
 * memory). */
static dist__mitem_t **s_take(dist_master_t *s, dist__mnq_t *nq, uint32_t max, size_t *n)
{
    size_t lim = max < DIST__MAX_BATCH ? max : DIST__MAX_BATCH, k = 0, bytes = 64;
    size_t budget = s->max_message - 256;
    while (k < lim && k < nq->n) {
        size_t len = nq->ring[(nq->head + k) % nq->cap]->len + 8;
        if (k && bytes + len > budget)
            break;
        bytes += len;
        k++;
    }
    *n = 0;
    dist__mitem_t **items = k ? malloc(k * sizeof *items) : NULL;
    if (!items)
        return NULL;
    for (size_t i = 0; i < k; i++)
        items[i] = s_ring_pop_front(nq);
    *n = k;
    return items;
}

/* QREPLY {req, status, items}; hands the items (a malloc'd array) over. */
static void s_reply(dist_master_t *s, dist__mpeer_t *p, uint64_t req, const char *status,
                    const char *queue, dist__mitem_t **items, size_t n)
{
    dist_wire_buf_reset(s->out);
    msgpack_packer *pk = dist_wire_buf_packer(s->out);
    dist__qreply_t r = { .req = req, .status = { status, strlen(status) }, .nitems = n };
    dist__pack_qreply(pk, &r);
    for (size_t i = 0; i < n; i++)
        dist__pk_bin(pk, items[i]->data, items[i]->len);
    dist__m_send(s, p, DIST__CMD_QREPLY, s->out, queue, items, n);
}

/* ---- parked requests ------------------------------------------------------------------ */

static void s_park_remove(dist_master_t *s, dist__mpark_t *k)
{
    dist__dl_remove(k->put ? &k->nq->puts : &k->nq->gets, &k->qnode);
    dist__dl_remove(&k->peer->parked, &k->pnode);
    dist__m_timer_del(s, &k->timer);
}

/* Serves parked requests in arrival order until nothing more can move. */
static void s_pump(dist_master_t *s, dist__mnq_t *nq)
{
    if (nq->pumping)
        return;
    nq->pumping = true;
    bool progress = true;
    while (progress) {
        progress = false;
        dist__dnode_t *d;
        while (nq->n && (d = dist__dl_first(&nq->gets))) {
            dist__mpark_t *k = DIST__CONTAINER_OF(d, dist__mpark_t, qnode);
            size_t n;
            dist__mitem_t **items = s_take(s, nq, k->max, &n);
            if (!items)
                break;
            s_park_remove(s, k);
            /* A failed delivery puts the items back in front (not
             * re-entering this pump) for the next request. */
            s_reply(s, k->peer, k->req, "ok", nq->key.name, items, n);
            free(k);
            progress = true;
        }
        while ((d = dist__dl_first(&nq->puts))) {
            dist__mpark_t *k = DIST__CONTAINER_OF(d, dist__mpark_t, qnode);
            if (nq->n + k->nitems > s->max_queued || s_ring_reserve(nq, k->nitems))
                break;
            for (size_t i = 0; i < k->nitems; i++)
                s_ring_push_back(nq, k->items[i]);
            s_park_remove(s, k);
            s_reply(s, k->peer, k->req, "ok", NULL, NULL, 0);
            free(k);
            progress = true;
        }
    }
    nq->pumping = false;
    s_nq_maybe_free(s, nq);
}

static bool s_park(dist_master_t *s, dist__mpeer_t *p, dist__mnq_t *nq, uint64_t req, bool put,
                   uint32_t max, const msgpack_object *bins, size_t n, uint32_t timeout_ms)
{
    dist__mpark_t *k = calloc(1, sizeof *k + n * sizeof(dist__mitem_t *));
    if (!k)
        return false;
    if (n && s_items_copy(bins, n, k->items)) {
        free(k);
        return false;
    }
    k->peer = p;
    k->nq = nq;
    k->req = req;
    k->put = put;
    k->max = max;
    k->nitems = n;
    k->timer.idx = UINT32_MAX;
    if (dist__m_timer_add(s, &k->timer, s->now + timeout_ms, DIST__TIMER_PARK)) {
        s_items_free(k->items, n);
        free(k);
        return false;
    }
    dist__dl_push_back(put ? &nq->puts : &nq->gets, &k->qnode);
    dist__dl_push_back(&p->parked, &k->pnode);
    return true;
}

void dist__m_park_expired(dist_master_t *s, dist__mpark_t *k)
{
    dist__mnq_t *nq = k->nq;
    s_park_remove(s, k);
    s_reply(s, k->peer, k->req, k->put ? "full" : "timeout", NULL, NULL, 0);
    s_items_free(k->items, k->nitems);
    free(k);
    /* The QPUTs behind an expired one may fit. */
    s_pump(s, nq);
}

void dist__m_unpark_peer(dist_master_t *s, dist__mpeer_t *p)
{
    /* First drop them all, then serve the queues they were in: serving
     * could otherwise answer this very peer's next request. */
    size_t n = p->parked.n, m = 0;
    dist__mnq_t **touched = n ? malloc(n * sizeof *touched) : NULL;
    dist__dnode_t *d;
    while ((d = dist__dl_first(&p->parked))) {
        dist__mpark_t *k = DIST__CONTAINER_OF(d, dist__mpark_t, pnode);
        dist__mnq_t *nq = k->nq;
        s_park_remove(s, k);
        s_items_free(k->items, k->nitems);
        free(k);
        if (touched && !nq->marked) {
            nq->marked = true;
            touched[m++] = nq;
        }
    }
    for (size_t i = 0; i < m; i++) {
        touched[i]->marked = false;
        s_pump(s, touched[i]);
    }
    free(touched);
}

void dist__m_putback(dist_master_t *s, const char *queue, dist__mitem_t **items, size_t n)
{
    dist__mnq_t *nq = queue ? s_nq_get(s, queue, strlen(queue)) : NULL;
    if (!nq || s_ring_reserve(nq, n)) {
        dist__log(&s->log, DIST_LOG_ERROR, "lost %zu item(s) of queue %s: out of memory", n,
                  queue ? queue : "?");
        s_items_free(items, n);
        free(items);
        return;
    }
    for (size_t i = n; i-- > 0;)
        s_ring_push_front(nq, items[i]);
    free(items);
    s_pump(s, nq);
}

/* ---- requests ------------------------------------------------------------------------------ */

/* A request the parser refused: ERROR malformed without a req to echo,
 * else QREPLY bad_request. */
static void s_bad_req(dist_master_t *s, dist__mpeer_t *p, int rc, dist__cmd_t cmd, uint64_t req)
{
    if (rc == DIST_EPROTO)
        dist__m_malformed(s, p, "%s needs req, a u64", dist__cmd_name(cmd));
    else
        s_reply(s, p, req, "bad_request", NULL, NULL, 0);
}

void dist__m_qput(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root)
{
    dist__qput_t q;
    int rc = dist__parse_qput(root, &q);
    if (rc) {
        s_bad_req(s, p, rc, DIST__CMD_QPUT, q.req);
        return;
    }
    uint64_t req = q.req;
    const char *name = q.queue.s;
    size_t len = q.queue.n, n = q.nitems;
    const msgpack_object *bins = q.items;
    uint32_t timeout = q.timeout_ms;
    if (n > s->max_queued) {
        s_reply(s, p, req, "full", NULL, NULL, 0);
        return;
    }
    dist__mnq_t *nq = s_nq_get(s, name, len);
    if (!nq) {
        s_reply(s, p, req, "queue_full", NULL, NULL, 0);
        return;
    }
    if (!nq->puts.n && nq->n + n <= s->max_queued) {
        dist__mitem_t **copies = malloc(n * sizeof *copies);
        if (!copies || s_ring_reserve(nq, n) || s_items_copy(bins, n, copies)) {
            free(copies);
            s_reply(s, p, req, "queue_full", NULL, NULL, 0);
            s_nq_maybe_free(s, nq);
            return;
        }
        for (size_t i = 0; i < n; i++)
            s_ring_push_back(nq, copies[i]);
        free(copies);
        s_reply(s, p, req, "ok", NULL, NULL, 0);
        s_pump(s, nq);
        return;
    }
    if (!timeout)
        s_reply(s, p, req, "full", NULL, NULL, 0);
    else if (p->parked.n >= MAX_PARKED || !s_park(s, p, nq, req, true, 0, bins, n, timeout))
        s_reply(s, p, req, "queue_full", NULL, NULL, 0);
    s_nq_maybe_free(s, nq);
}

void dist__m_qget(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root)
{
    dist__qget_t q;
    int rc = dist__parse_qget(root, &q);
    if (rc) {
        s_bad_req(s, p, rc, DIST__CMD_QGET, q.req);
        return;
    }
    uint64_t req = q.req;
    const char *name = q.queue.s;
    size_t len = q.queue.n;
    uint32_t max = q.max, timeout = q.timeout_ms;
    dist__mnq_t *nq = s_nq_find(s, name, len);
    if (nq && nq->n) {
        /* Items and parked QGETs never coexist (s_pump), so this one is
         * not overtaking anybody. */
        size_t n;
        dist__mitem_t **items = s_take(s, nq, max, &n);
        s_reply(s, p, req, items ? "ok" : "queue_full", nq->key.name, items, n);
        s_pump(s, nq);
        return;
    }
    if (!timeout) {
        s_reply(s, p, req, "timeout", NULL, NULL, 0);
        return;
    }
    if (p->parked.n >= MAX_PARKED || !(nq = s_nq_get(s, name, len))) {
        s_reply(s, p, req, "queue_full", NULL, NULL, 0);
        return;
    }
    if (!s_park(s, p, nq, req, false, max, NULL, 0, timeout)) {
        s_reply(s, p, req, "queue_full", NULL, NULL, 0);
        s_nq_maybe_free(s, nq);
    }
}

void dist__m_queues_free(dist_master_t *s)
{
    dist__dnode_t *d;
    while ((d = dist__dl_pop_front(&s->nqs))) {
        dist__mnq_t *nq = DIST__CONTAINER_OF(d, dist__mnq_t, all);
        while (nq->n)
            free(s_ring_pop_front(nq));
        dist__dlist_t *lists[2] = { &nq->puts, &nq->gets };
        for (int i = 0; i < 2; i++) {
            dist__dnode_t *e;
            while ((e = dist__dl_pop_front(lists[i]))) {
                dist__mpark_t *k = DIST__CONTAINER_OF(e, dist__mpark_t, qnode);
                s_items_free(k->items, k->nitems);
                free(k);
            }
        }
        free(nq->ring);
        free(nq);
    }
}

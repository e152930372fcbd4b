/*  master_control.c - the task-control requests of clients (issue 12,
 *  docs/PROTOCOL.md section 7.4): LOOKUP (a task's state by id), FETCH (a
 *  result by id, from any client, waiting for it when asked), CANCEL,
 *  FAILED (the dead letters) and RETRY (a dead letter submitted again);
 *  and what they need beyond the tasks themselves: the tombstones of
 *  expired results and the dead letters, both bounded. With a store, both
 *  are written by the loop turn's group commit (master_store.c) and read
 *  back by the recovery: each carries a sequence number (its row), so the
 *  ones added since the last commit are the newest ones, and those that
 *  fell off the bounds are every row below the oldest kept. A dead letter
 *  dropped from the middle (RETRY, or the same task failing again) is
 *  remembered by row until the commit deletes it.
 *
 *  They are here rather than in master_task.c because they only read a
 *  task and call its named transitions (dist__m_task_cancel); the arrows
 *  themselves stay in master_task.c. A FETCH never consumes a result: it
 *  stays for its submitter and other FETCHes until the submitter's ACK.
 *
 *  A FETCH that waits is parked on the peer (at most MAX_FETCHES) and on
 *  the master's list; a task becoming final answers the ones parked on
 *  its id (a scan of that list, which holds only waiting FETCHes).
 */
#include "master_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/error.h"

#define MAX_FETCHES 1024 /* parked FETCHes per peer, like parked QGETs */

typedef struct {
    dist__dnode_t node;  /* in s->fetches */
    dist__dnode_t pnode; /* in peer->fetches */
    dist__hnode_t timer;
    dist__mpeer_t *peer;
    dist__id_t id;
    uint64_t req;
} dist__mfetch_t;

/* Tombstones: a ring of the newest DIST__TOMBSTONES expired ids, indexed
 * by id; the newest has sequence number tomb_seq, the others count down.
 * Dead letters: a list, oldest first, indexed by id. *_saved: the newest
 * sequence number committed to the store. */
struct dist__mctl {
    dist__id_t *ring;
    size_t head, n;
    dist__hmap_t tombs; /* items: pointers into ring */
    int64_t tomb_seq, tomb_saved;
    dist__dlist_t dead;
    dist__hmap_t dead_index;
    size_t dead_bytes;
    int64_t dead_seq, dead_saved;
    int64_t *gone;      /* rows of stored dead letters dropped from the middle */
    size_t ngone, capgone;
};

static bool s_id_eq(const void *item, const void *key, size_t klen)
{
    (void)klen;
    return memcmp(item, key, 16) == 0;
}

static bool s_dead_eq(const void *item, const void *key, size_t klen)
{
    (void)klen;
    return memcmp(((const dist__mdead_t *)item)->id.b, key, 16) == 0;
}

static uint64_t s_hash(const dist_master_t *s, const dist__id_t *id)
{
    return dist__hash(&s->hkey, id->b, sizeof id->b);
}

static struct dist__mctl *s_ctl(dist_master_t *s)
{
    if (!s->ctl && (s->ctl = calloc(1, sizeof *s->ctl))) {
        dist__hmap_init(&s->ctl->tombs, s_id_eq);
        dist__hmap_init(&s->ctl->dead_index, s_dead_eq);
        dist__dl_init(&s->ctl->dead);
    }
    return s->ctl;
}

void dist__m_tomb_add(dist_master_t *s, const dist__id_t *id)
{
    struct dist__mctl *c = s_ctl(s);
    if (!c || (!c->ring && !(c->ring = malloc(DIST__TOMBSTONES * sizeof *c->ring))))
        return; /* without memory the id reads "unknown" rather than "expired" */
    if (dist__hmap_reserve(&c->tombs, 1))
        return;
    size_t at = (c->head + c->n) % DIST__TOMBSTONES;
    if (c->n == DIST__TOMBSTONES) { /* the oldest goes */
        dist__hmap_del(&c->tombs, s_hash(s, &c->ring[at]), &c->ring[at]);
        c->head = (c->head + 1) % DIST__TOMBSTONES;
        c->n--;
    }
    c->ring[at] = *id;
    c->n++;
    c->tomb_seq++;
    dist__hmap_add(&c->tombs, s_hash(s, id), &c->ring[at]);
}

bool dist__m_tomb_has(const dist_master_t *s, const dist__id_t *id)
{
    return s->ctl && s->ctl->n && dist__hmap_get(&s->ctl->tombs, s_hash(s, id), id->b, 16);
}

/* Remembers that a stored dead letter's row must go at the next commit.
 * Without memory for it the row stays, and after a restart the letter is
 * listed again (RETRY then answers with the task's state if it runs). */
static void s_dead_forget(dist_master_t *s, const dist__mdead_t *d)
{
    struct dist__mctl *c = s->ctl;
    if (!s->store || d->srow > c->dead_saved)
        return;
    if (c->ngone == c->capgone) {
        size_t cap = c->capgone ? 2 * c->capgone : 16;
        int64_t *g = realloc(c->gone, cap * sizeof *g);
        if (!g)
            return;
        c->gone = g;
        c->capgone = cap;
    }
    c->gone[c->ngone++] = d->srow;
}

static void s_dead_drop(dist_master_t *s, dist__mdead_t *d)
{
    struct dist__mctl *c = s->ctl;
    dist__dl_remove(&c->dead, &d->node);
    dist__hmap_del(&c->dead_index, s_hash(s, &d->id), d);
    c->dead_bytes -= d->len;
    free(d->key);
    free(d->error);
    free(d->hist);
    free(d);
}

/* Adds the dead letter r (borrowed), newest, dropping an older one of
 * the same id and the oldest ones beyond the bounds. */
static int s_dead_put(dist_master_t *s, const dist__sdead_t *r)
{
    struct dist__mctl *c = s_ctl(s);
    if (!c || dist__hmap_reserve(&c->dead_index, 1))
        return DIST_ENOMEM;
    if (r->len > DIST__DEAD_BYTES)
        return 0;
    dist__mdead_t *old = dist__hmap_get(&c->dead_index, s_hash(s, &r->id), r->id.b, 16);
    if (old) { /* the same task failed again after a RETRY */
        s_dead_forget(s, old);
        s_dead_drop(s, old);
    }
    dist__mdead_t *d = calloc(1, sizeof *d + r->len);
    if (!d)
        return DIST_ENOMEM;
    d->error = strndup(r->error, r->error_len);
    d->key = r->key ? strdup(r->key) : NULL;
    d->hist_len = (uint32_t)r->hist_len;
    d->hist = d->hist_len ? malloc(d->hist_len) : NULL;
    if (!d->error || (r->key && !d->key) || (d->hist_len && !d->hist)) {
        free(d->error);
        free(d->key);
        free(d->hist);
        free(d);
        return DIST_ENOMEM;
    }
    if (d->hist_len)
        memcpy(d->hist, r->hist, d->hist_len);
    d->srow = r->row ? r->row : c->dead_seq + 1;
    if (d->srow > c->dead_seq)
        c->dead_seq = d->srow;
    d->id = r->id;
    snprintf(d->task, sizeof d->task, "%.*s", (int)r->task_len, r->task);
    snprintf(d->client, sizeof d->client, "%.*s", (int)r->client_len, r->client);
    d->o = dist__m_opts_of_row(&r->o);
    d->timeout_ms = r->timeout_ms;
    d->attempts = r->attempts;
    d->submitted_ms = r->submitted_ms;
    d->started_ms = r->started_ms;
    d->finished_ms = r->finished_ms;
    d->len = (uint32_t)r->len;
    memcpy(d->args, r->args, r->len);
    dist__dnode_t *o;
    while ((c->dead.n >= DIST__DEAD_MAX || c->dead_bytes + d->len > DIST__DEAD_BYTES) &&
           (o = dist__dl_first(&c->dead)))
        s_dead_drop(s, DIST__CONTAINER_OF(o, dist__mdead_t, node)); /* trimmed at commit */
    dist__dl_push_back(&c->dead, &d->node);
    dist__hmap_add(&c->dead_index, s_hash(s, &d->id), d); /* reserved */
    c->dead_bytes += d->len;
    return 0;
}

/* The stored form of a dead letter (borrowing d). */
static void s_dead_row(const dist__mdead_t *d, dist__sdead_t *r)
{
    *r = (dist__sdead_t){
        .row = d->srow, .id = d->id, .key = d->key, .error = d->error,
        .error_len = strlen(d->error), .task = d->task, .task_len = strlen(d->task),
        .client = d->client, .client_len = strlen(d->client), .timeout_ms = d->timeout_ms,
        .attempts = d->attempts, .submitted_ms = d->submitted_ms, .started_ms = d->started_ms,
        .finished_ms = d->finished_ms, .hist = d->hist, .hist_len = d->hist_len,
        .args = d->args, .len = d->len,
    };
    dist__m_opts_to_row(&d->o, &r->o);
}

void dist__m_dead_add(dist_master_t *s, const dist__mtask_t *t, int st, const void *error,
                      size_t len)
{
    (void)st;
    dist__sdead_t r = {
        .id = t->id, .key = t->key, .error = error ? error : "", .error_len = error ? len : 0,
        .task = t->q->key.name, .task_len = t->q->key.len,
        .client = t->cn->key.name, .client_len = t->cn->key.len,
        .timeout_ms = t->timeout_ms, .attempts = t->attempt, .submitted_ms = t->submitted_ms,
        .started_ms = t->started_ms, .finished_ms = dist__m_unix_ms(),
        .hist = t->hist ? t->hist->b : NULL, .hist_len = t->hist ? t->hist->len : 0,
        .args = t->data, .len = t->len,
    };
    dist__m_opts_to_row(&t->o, &r.o);
    (void)s_dead_put(s, &r); /* without memory the task is not listed */
}

int dist__m_dead_restore(dist_master_t *s, const dist__sdead_t *d)
{
    int rc = s_dead_put(s, d);
    if (!rc && s->ctl)
        s->ctl->dead_saved = s->ctl->dead_seq;
    return rc;
}

int dist__m_tomb_restore(dist_master_t *s, int64_t row, const dist__id_t *id)
{
    dist__m_tomb_add(s, id);
    if (!s->ctl || !s->ctl->ring)
        return DIST_ENOMEM;
    s->ctl->tomb_seq = s->ctl->tomb_saved = row;
    return 0;
}

size_t dist__m_dead_count(const dist_master_t *s) { return s->ctl ? s->ctl->dead.n : 0; }

size_t dist__m_tomb_count(const dist_master_t *s) { return s->ctl ? s->ctl->n : 0; }

bool dist__m_control_dirty(const dist_master_t *s)
{
    const struct dist__mctl *c = s->ctl;
    return c && (c->ngone || c->dead_seq > c->dead_saved || c->tomb_seq > c->tomb_saved);
}

void dist__m_control_write(dist_master_t *s)
{
    struct dist__mctl *c = s->ctl;
    if (!dist__m_control_dirty(s))
        return;
    for (size_t i = 0; i < c->ngone; i++)
        dist__store_dead_del(s->store, c->gone[i]);
    /* The new ones are the newest: from the end back to the first saved. */
    const dist__dnode_t *n = c->dead.n ? c->dead.root.prev : NULL;
    while (n && n != &c->dead.root) {
        const dist__mdead_t *d = DIST__CONTAINER_OF(n, dist__mdead_t, node);
        if (d->srow <= c->dead_saved)
            break;
        dist__sdead_t r;
        s_dead_row(d, &r);
        dist__store_dead_put(s->store, &r);
        n = n->prev;
    }
    const dist__dnode_t *first = dist__dl_first(&c->dead);
    dist__store_dead_trim(s->store, first ? DIST__CONTAINER_OF(first, dist__mdead_t, node)->srow
                                          : c->dead_seq + 1);
    int64_t fresh = c->tomb_seq - c->tomb_saved;
    if (fresh > (int64_t)c->n)
        fresh = (int64_t)c->n;
    for (int64_t k = fresh; k > 0; k--) {
        size_t at = (c->head + c->n - (size_t)k) % DIST__TOMBSTONES;
        dist__store_tomb_put(s->store, c->tomb_seq - k + 1, &c->ring[at]);
    }
    dist__store_tomb_trim(s->store, c->tomb_seq - (int64_t)c->n + 1);
}

void dist__m_control_committed(dist_master_t *s)
{
    struct dist__mctl *c = s->ctl;
    if (!c)
        return;
    c->ngone = 0;
    c->dead_saved = c->dead_seq;
    c->tomb_saved = c->tomb_seq;
}

void dist__m_control_free(dist_master_t *s)
{
    dist__dnode_t *d;
    while ((d = dist__dl_pop_front(&s->fetches)))
        free(DIST__CONTAINER_OF(d, dist__mfetch_t, node));
    struct dist__mctl *c = s->ctl;
    if (!c)
        return;
    while ((d = dist__dl_first(&c->dead)))
        s_dead_drop(s, DIST__CONTAINER_OF(d, dist__mdead_t, node));
    dist__hmap_fini(&c->dead_index);
    dist__hmap_fini(&c->tombs);
    free(c->ring);
    free(c->gone);
    free(c);
    s->ctl = NULL;
}


static dist__str_t s_str(const char *c)
{
    dist__str_t r = { c ? c : "", c ? strlen(c) : 0 };
    return r;
}

/* The attempts recorded in hist[0..len) (borrowed), then, for a task
 * that is not final, its current attempt (with its worker while leased).
 * Returns how many were filled. */
static size_t s_attempts(const uint8_t *hist, size_t len, const dist__mtask_t *t,
                         dist__attempt_info_t *a, size_t max)
{
    size_t n = 0, off = 0;
    while (n < max && hist && dist__m_hist_next(hist, len, &off, &a[n]))
        n++;
    if (t && t->state != DIST__T_DONE && n < max && (!n || a[n - 1].attempt < t->attempt)) {
        a[n].attempt = t->attempt;
        a[n].worker = s_str(t->state == DIST__T_LEASED ? t->worker->name : NULL);
        a[n].reason = s_str(NULL);
        n++;
    }
    return n;
}

static void s_pack_info(const dist_master_t *s, msgpack_packer *pk, const dist__id_t *id,
                        const dist__mtask_t *t)
{
    dist__task_info_t ti = { .id = *id, .state = s_str(t ? dist__m_task_state(t) : "unknown") };
    if (!t && dist__m_tomb_has(s, id))
        ti.state = s_str("expired");
    dist__attempt_info_t att[DIST__HIST_MAX + 1];
    if (t) {
        ti.key = s_str(t->key);
        ti.task = dist__m_task_name(t);
        ti.worker = s_str(t->state == DIST__T_LEASED ? t->worker->name : NULL);
        if (t->state == DIST__T_DONE && t->status != DIST__ST_OK) {
            ti.error.s = (const char *)dist__mtask_bytes(t);
            ti.error.n = t->len;
        }
        ti.priority = t->o.prio;
        ti.submitted_ms = (uint64_t)t->submitted_ms;
        ti.started_ms = (uint64_t)t->started_ms;
        ti.finished_ms = (uint64_t)t->finished_ms;
        ti.not_before_ms = t->state == DIST__T_DELAYED ? (uint64_t)t->not_before_ms : 0;
        ti.attempts = att;
        ti.nattempts = s_attempts(t->hist ? t->hist->b : NULL, t->hist ? t->hist->len : 0, t,
                                  att, sizeof att / sizeof *att);
    }
    dist__pack_task_info(pk, &ti);
}

bool dist__m_pack_lookup(const dist_master_t *s, msgpack_packer *pk, const dist__id_t *id)
{
    const dist__mtask_t *t = dist__m_task_find(s, id);
    s_pack_info(s, pk, id, t);
    return t || dist__m_tomb_has(s, id);
}

/* After parsing a request (rc of its parser): false when it was answered
 * already, malformed without a req, else bad_request saying `what`. */
static bool s_parsed(dist_master_t *s, dist__mpeer_t *p, int rc, dist__cmd_t cmd, uint64_t req,
                     const char *what)
{
    if (rc == DIST_EPROTO)
        dist__m_malformed(s, p, "%s needs req, a u64", dist__cmd_name(cmd));
    else if (rc)
        dist__m_error(s, p, "bad_request", req, "%s %s", dist__cmd_name(cmd), what);
    return rc == 0;
}

/* The ids request of LOOKUP, CANCEL or RETRY: false when answered already. */
static bool s_ids_req(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root,
                      dist__cmd_t cmd, dist__ids_req_t *r)
{
    int rc = dist__parse_ids_req(root, true, r);
    return s_parsed(s, p, rc, cmd, r->req, "needs ids, an array of 1 to 10000 bins of 16 bytes");
}

void dist__m_lookup(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root)
{
    dist__ids_req_t r;
    if (!s_ids_req(s, p, root, DIST__CMD_LOOKUP, &r))
        return;
    dist_wire_buf_reset(s->out);
    msgpack_packer *pk = dist_wire_buf_packer(s->out);
    dist__reply_t rp = { .req = r.req, .status = s_str("ok"), .list = DIST__REPLY_TASKS,
                         .nitems = r.nids };
    dist__pack_reply(pk, &rp);
    for (size_t i = 0; i < r.nids; i++) {
        dist__id_t id;
        dist__list_id(&r.ids[i], &id); /* checked by the parser */
        s_pack_info(s, pk, &id, dist__m_task_find(s, &id));
    }
    if (dist_wire_buf_status(s->out)) {
        dist__m_error(s, p, "too_large", r.req, "the answer does not fit in one message: "
                      "look up fewer ids at a time");
        return;
    }
    dist__m_send(s, p, DIST__CMD_REPLY, s->out, NULL, NULL, 0);
}

/* REPLY {req, states} with one state per id of r. */
static void s_send_states(dist_master_t *s, dist__mpeer_t *p, const dist__ids_req_t *r,
                          const char *const *states)
{
    dist_wire_buf_reset(s->out);
    msgpack_packer *pk = dist_wire_buf_packer(s->out);
    dist__reply_t rp = { .req = r->req, .status = s_str("ok"), .list = DIST__REPLY_STATES,
                         .nitems = r->nids };
    dist__pack_reply(pk, &rp);
    for (size_t i = 0; i < r->nids; i++)
        dist__pk_str(pk, states[i]);
    dist__m_send(s, p, DIST__CMD_REPLY, s->out, NULL, NULL, 0);
}

/* The ids request of CANCEL or RETRY with room for its answer's states:
 * NULL when answered already. */
static const char **s_states_req(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root,
                                 dist__cmd_t cmd, dist__ids_req_t *r)
{
    if (!s_ids_req(s, p, root, cmd, r))
        return NULL;
    const char **states = malloc(r->nids * sizeof *states);
    if (!states)
        dist__m_error(s, p, "queue_full", r->req, "the master is out of memory: retry later");
    return states;
}

void dist__m_cancel(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root)
{
    dist__ids_req_t r;
    const char **states = s_states_req(s, p, root, DIST__CMD_CANCEL, &r);
    if (!states)
        return;
    /* Each cancel may send a CANCEL to a worker through s->out: the
     * answer is packed after them all. */
    for (size_t i = 0; i < r.nids; i++) {
        dist__id_t id;
        dist__list_id(&r.ids[i], &id); /* checked by the parser */
        dist__mtask_t *t = dist__m_task_find(s, &id);
        if (t && t->state != DIST__T_DONE)
            dist__m_task_cancel(s, t, p->name);
        states[i] = t ? dist__m_task_state(t) : dist__m_tomb_has(s, &id) ? "expired" : "unknown";
    }
    s_send_states(s, p, &r, states);
    free(states);
}

/* REPLY to a FETCH: the result when t is final, else its state. */
static void s_fetch_answer(dist_master_t *s, dist__mpeer_t *p, uint64_t req, const dist__id_t *id,
                           const dist__mtask_t *t)
{
    dist__result_t res;
    dist__reply_t rp = { .req = req, .status = s_str(!t ? "not_found" : "ok"),
                         .state = s_str(t ? dist__m_task_state(t) : "unknown") };
    if (!t && dist__m_tomb_has(s, id))
        rp.state = s_str("expired");
    if (t && t->state == DIST__T_DONE) {
        memset(&res, 0, sizeof res);
        res.id = t->id;
        res.status = (dist__status_t)t->status;
        if (t->status == DIST__ST_OK) {
            res.value = dist__mtask_bytes(t);
            res.value_len = t->len;
        } else {
            res.error = (const char *)dist__mtask_bytes(t);
            res.error_len = t->len;
        }
        rp.result = &res;
    } else if (t) {
        rp.status = s_str("timeout");
    }
    dist_wire_buf_reset(s->out);
    dist__pack_reply(dist_wire_buf_packer(s->out), &rp);
    dist__m_send(s, p, DIST__CMD_REPLY, s->out, NULL, NULL, 0);
}

static void s_fetch_free(dist_master_t *s, dist__mfetch_t *f)
{
    dist__dl_remove(&s->fetches, &f->node);
    dist__dl_remove(&f->peer->fetches, &f->pnode);
    dist__m_timer_del(s, &f->timer);
    free(f);
}

void dist__m_fetch(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root)
{
    dist__fetch_t f;
    int rc = dist__parse_fetch(root, &f);
    if (!s_parsed(s, p, rc, DIST__CMD_FETCH, f.req, "needs id, a bin of 16 bytes, and wait_ms, a u32"))
        return;
    const dist__mtask_t *t = dist__m_task_find(s, &f.id);
    if (!t || t->state == DIST__T_DONE || !f.wait_ms) {
        s_fetch_answer(s, p, f.req, &f.id, t);
        return;
    }
    if (p->fetches.n >= MAX_FETCHES) {
        dist__m_error(s, p, "queue_full", f.req, "%d FETCHes of this client wait already",
                      MAX_FETCHES);
        return;
    }
    dist__mfetch_t *k = malloc(sizeof *k);
    if (!k || dist__m_timer_add(s, &k->timer, s->now + f.wait_ms, DIST__TIMER_FETCH)) {
        free(k);
        dist__m_error(s, p, "queue_full", f.req, "the master is out of memory: retry later");
        return;
    }
    k->peer = p;
    k->id = f.id;
    k->req = f.req;
    dist__dl_push_back(&s->fetches, &k->node);
    dist__dl_push_back(&p->fetches, &k->pnode);
}

void dist__m_fetch_expired(dist_master_t *s, dist__hnode_t *n)
{
    dist__mfetch_t *k = DIST__CONTAINER_OF(n, dist__mfetch_t, timer);
    dist__mpeer_t *p = k->peer;
    uint64_t req = k->req;
    dist__id_t id = k->id;
    s_fetch_free(s, k);
    s_fetch_answer(s, p, req, &id, dist__m_task_find(s, &id));
}

void dist__m_task_final(dist_master_t *s, dist__mtask_t *t)
{
    dist__dnode_t *d = dist__dl_first(&s->fetches);
    while (d) {
        dist__dnode_t *next = dist__dl_next(&s->fetches, d);
        dist__mfetch_t *k = DIST__CONTAINER_OF(d, dist__mfetch_t, node);
        if (dist__id_eq(&k->id, &t->id)) {
            dist__mpeer_t *p = k->peer;
            uint64_t req = k->req;
            s_fetch_free(s, k);
            /* s->out may hold a message being built by the caller (a
             * CANCEL to a worker was sent already): answer with a buffer
             * of its own. */
            dist_wire_buf_t *keep = s->out;
            dist_wire_buf_t *b = dist_wire_buf_new(0);
            if (b) {
                s->out = b;
                s_fetch_answer(s, p, req, &t->id, t);
                dist_wire_buf_destroy(&b);
            }
            s->out = keep;
        }
        d = next;
    }
}

void dist__m_unfetch_peer(dist_master_t *s, dist__mpeer_t *p)
{
    dist__dnode_t *d;
    while ((d = dist__dl_first(&p->fetches)))
        s_fetch_free(s, DIST__CONTAINER_OF(d, dist__mfetch_t, pnode));
}

/* ---- dead letters: FAILED, RETRY --------------------------------------------------------- */

const dist__mdead_t *dist__m_dead_older(const dist_master_t *s, const dist__mdead_t *d)
{
    if (!s->ctl || !s->ctl->dead.n)
        return NULL;
    const dist__dnode_t *n = d ? d->node.prev : s->ctl->dead.root.prev;
    return n == &s->ctl->dead.root ? NULL : DIST__CONTAINER_OF(n, dist__mdead_t, node);
}

void dist__m_failed(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root)
{
    dist__failed_req_t f;
    int rc = dist__parse_failed_req(root, &f);
    if (!s_parsed(s, p, rc, DIST__CMD_FAILED, f.req, "takes max, a u32"))
        return;
    const dist__dlist_t *dead = s->ctl ? &s->ctl->dead : NULL;
    size_t n = dead ? dead->n : 0;
    if (f.max && f.max < n)
        n = f.max;
    /* Newest first, as many as fit in one message. */
    for (;;) {
        dist_wire_buf_reset(s->out);
        msgpack_packer *pk = dist_wire_buf_packer(s->out);
        dist__reply_t rp = { .req = f.req, .status = s_str("ok"), .list = DIST__REPLY_TASKS,
                             .nitems = n };
        dist__pack_reply(pk, &rp);
        const dist__dnode_t *d = n ? dead->root.prev : NULL;
        for (size_t i = 0; i < n; i++, d = d->prev) {
            const dist__mdead_t *x = DIST__CONTAINER_OF(d, dist__mdead_t, node);
            dist__attempt_info_t att[DIST__HIST_MAX];
            dist__task_info_t ti = { .id = x->id, .key = s_str(x->key), .task = s_str(x->task),
                                     .state = s_str("failed"), .error = s_str(x->error),
                                     .priority = x->o.prio,
                                     .submitted_ms = (uint64_t)x->submitted_ms,
                                     .started_ms = (uint64_t)x->started_ms,
                                     .finished_ms = (uint64_t)x->finished_ms,
                                     .attempts = att };
            ti.nattempts = s_attempts(x->hist, x->hist_len, NULL, att, DIST__HIST_MAX);
            dist__pack_task_info(pk, &ti);
        }
        if (dist_wire_buf_status(s->out) == 0 || n == 0)
            break;
        n /= 2;
    }
    dist__m_send(s, p, DIST__CMD_REPLY, s->out, NULL, NULL, 0);
}

void dist__m_retry(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root)
{
    dist__ids_req_t r;
    const char **states = s_states_req(s, p, root, DIST__CMD_RETRY, &r);
    if (!states)
        return;
    for (size_t i = 0; i < r.nids; i++) {
        dist__id_t id;
        dist__list_id(&r.ids[i], &id);
        dist__mdead_t *d = s->ctl ? dist__hmap_get(&s->ctl->dead_index, s_hash(s, &id), id.b, 16)
                                  : NULL;
        states[i] = "unknown";
        if (!d)
            continue;
        /* NULL: not now (no such task name any more, full, store failing). */
        const char *st = dist__m_task_resubmit(s, d, p->cn);
        states[i] = st ? st : "failed";
        if (st) {
            s_dead_forget(s, d);
            s_dead_drop(s, d);
        }
    }
    s_send_states(s, p, &r, states);
    free(states);
}

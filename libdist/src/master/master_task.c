/*  master_task.c - a task's life in the master, from SUBMIT to ACK
 *  (docs/PROTOCOL.md section 6).
 *
 *  QUEUED tasks wait in the FIFO of their task name; dispatch leases them
 *  to workers that announced the name, never beyond a worker's free credit
 *  (capacity minus what it holds), in TASKS batches. When a batch is
 *  smaller than the free credit of the workers that could take it, it is
 *  spread like water: each task goes to the worker with the most idle
 *  slots left (slots minus held, then prefetch), so a short task does not
 *  queue behind a long one on a busy node while another node idles.
 *
 *  A lease ends with the worker's result for that attempt, a RETURN, the
 *  worker's death, or its deadline. Retryable endings requeue the task at
 *  the front with attempt + 1 and a reason, until max_attempts, then it is
 *  DONE with gave_up and every reason. A lease that ends while the worker
 *  may still be running the task (deadline, or a final result that
 *  arrived from elsewhere) leaves a "ghost" that keeps counting against
 *  the worker's credit until the worker answers for that id.
 *
 *  A task's state changes only in the transition functions (s_t_submit,
 *  s_t_lease, s_t_return, s_t_requeue, s_t_give_up, s_t_finish,
 *  s_t_resend, s_t_acked, s_t_recover, s_t_unsubmit), one per arrow of
 *  the diagram in docs/PROTOCOL.md section 6.1, each with the lists,
 *  counters, store mark and log line of its arrow; the handlers below
 *  only decide which arrow a message means.
 *
 *  DONE tasks keep their result in the task itself (in place of the args
 *  when it fits) in their client name's unsent list, then its sent list
 *  until acknowledged. Each hot step is O(1) amortized: hash lookups,
 *  list moves, heap updates; nothing scans all tasks. (One walk: when
 *  the last worker of a task name leaves, or one comes back, its QUEUED
 *  tasks are walked once to find the clients to tell, dist__m_notices.)
 *
 *  With a store, every state change a restart must know about marks the
 *  task for the next commit (dist__m_store_mark): NEW when submitted,
 *  LEASE when sent to a worker, META when it goes back to its queue,
 *  DONE when finished; an acknowledged task is dropped through the store,
 *  which frees it after the commit that deletes its row. The ACCEPTED of
 *  a SUBMIT is held until that commit (dist__m_hold_accepted).
 */
#include "master_internal.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist/error.h"

#define GRACE_MS 5000      /* added to a task's own timeout for its lease */
#define REASON_MAX 300     /* bytes kept of one attempt's reason */
#define REASONS_MAX 8192   /* bytes kept of all of them */
#define ITEM_OVERHEAD 96   /* packing bytes of one task or result map beyond its payload */
#define TQ_GC_MIN 100000   /* task names kept before unused ones are swept */
#define UNSERVED_MAX 64    /* names an ACCEPTED lists as unserved (a SUBMIT has few) */

struct dist__mcand {
    dist__mpeer_t *w;
    int64_t key;  /* slots - held: idle slots, negative once prefetching */
    int64_t f;    /* free credit */
    int64_t give;
};

/* ---- indexes ------------------------------------------------------------------------- */

static bool s_task_eq(const void *item, const void *key, size_t klen)
{
    (void)klen;
    return memcmp(((const dist__mtask_t *)item)->id.b, key, 16) == 0;
}

void dist__m_tasks_init(dist_master_t *s)
{
    dist__hmap_init(&s->tasks, s_task_eq);
    dist__hmap_init(&s->tq_index, dist__m_key_eq);
    dist__hmap_init(&s->cn_index, dist__m_key_eq);
    dist__dl_init(&s->tqs);
    dist__dl_init(&s->notice_tqs);
}

static uint64_t s_id_hash(const dist_master_t *s, const dist__id_t *id)
{
    return dist__hash(&s->hkey, id->b, sizeof id->b);
}

static dist__mtask_t *s_task_find(const dist_master_t *s, const dist__id_t *id)
{
    return dist__hmap_get(&s->tasks, s_id_hash(s, id), id->b, sizeof id->b);
}

dist__mtask_t *dist__m_task_find(const dist_master_t *s, const dist__id_t *id)
{
    return s_task_find(s, id);
}

int64_t dist__m_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *dist__m_task_state(const dist__mtask_t *t)
{
    switch (t->state) {
    case DIST__T_QUEUED: return "queued";
    case DIST__T_DELAYED: return "delayed";
    case DIST__T_LEASED: return "leased";
    case DIST__T_DONE:
        return t->status == DIST__ST_OK          ? "done"
               : t->status == DIST__ST_CANCELLED ? "cancelled"
                                                 : "failed";
    default: return "unknown";
    }
}

void dist__m_task_free(dist__mtask_t *t)
{
    free(t->key);
    free(t->res);
    free(t->hist);
    free(t);
}

dist__mtq_t *dist__m_tq_find(dist_master_t *s, const char *name, size_t len)
{
    return dist__m_named_find(s, &s->tq_index, name, len);
}

/* The queue of a task name, created when new. announce: a name the
 * store does not know yet (not one it is loading). */
static dist__mtq_t *s_tq_get(dist_master_t *s, const char *name, size_t len, bool announce)
{
    dist__mtq_t *q = dist__m_tq_find(s, name, len);
    if (q || !(q = dist__m_named_new(s, &s->tq_index, name, len, sizeof *q)))
        return q;
    for (int i = 0; i < DIST__PRIORITY_LEVELS; i++)
        dist__dl_init(&q->lv[i]);
    dist__dl_push_back(&s->tqs, &q->all);
    if (announce)
        dist__m_store_name(s, q, true);
    return q;
}

void dist__m_tq_free_mem(dist__mtq_t *q)
{
    free(q->ws);
    free(q);
}

static void s_tq_free(dist_master_t *s, dist__mtq_t *q)
{
    dist__hmap_del(&s->tq_index, q->key.hash, q);
    dist__dl_remove(&s->tqs, &q->all);
    if (dist__dn_linked(&q->dirty))
        dist__dl_remove(&s->dirty_tqs, &q->dirty);
    if (dist__dn_linked(&q->notice))
        dist__dl_remove(&s->notice_tqs, &q->notice);
    if (!dist__m_store_name(s, q, false))
        dist__m_tq_free_mem(q);
}

/* A name stays known once announced (section 6.4), but a stream of
 * made-up names must not grow memory forever: beyond TQ_GC_MIN names,
 * those no worker announces and no task uses are forgotten. */
static void s_tq_gc(dist_master_t *s)
{
    if (s->tqs.n <= s->tq_gc_at)
        return;
    dist__dnode_t *d = dist__dl_first(&s->tqs);
    while (d) {
        dist__dnode_t *next = dist__dl_next(&s->tqs, d);
        dist__mtq_t *q = DIST__CONTAINER_OF(d, dist__mtq_t, all);
        if (!q->nws && !q->refs)
            s_tq_free(s, q);
        d = next;
    }
    s->tq_gc_at = s->tqs.n * 2 > TQ_GC_MIN ? s->tqs.n * 2 : TQ_GC_MIN;
}

static void s_tq_dirty(dist_master_t *s, dist__mtq_t *q)
{
    if (!dist__dn_linked(&q->dirty))
        dist__dl_push_back(&s->dirty_tqs, &q->dirty);
}

void dist__m_worker_dirty(dist_master_t *s, dist__mpeer_t *w)
{
    if (!w->gone && w->role == DIST__ROLE_WORKER && !dist__dn_linked(&w->dirty))
        dist__dl_push_back(&s->dirty_workers, &w->dirty);
}

static void s_cn_dirty(dist_master_t *s, dist__mclient_t *cn)
{
    if (cn->peer && cn->unsent.n && !dist__dn_linked(&cn->dirty))
        dist__dl_push_back(&s->dirty_clients, &cn->dirty);
}

/* ---- client names ------------------------------------------------------------------------ */

static dist__mclient_t *s_cn_get(dist_master_t *s, const char *name, size_t len)
{
    dist__mclient_t *cn = dist__m_named_find(s, &s->cn_index, name, len);
    if (cn || !(cn = dist__m_named_new(s, &s->cn_index, name, len, sizeof *cn)))
        return cn;
    dist__dl_init(&cn->unsent);
    dist__dl_init(&cn->sent);
    return cn;
}

static void s_cn_maybe_free(dist_master_t *s, dist__mclient_t *cn)
{
    if (cn->peer || cn->pending || cn->unsent.n || cn->sent.n)
        return;
    if (dist__dn_linked(&cn->dirty))
        dist__dl_remove(&s->dirty_clients, &cn->dirty);
    dist__hmap_del(&s->cn_index, cn->key.hash, cn);
    free(cn);
}

dist__mclient_t *dist__m_client_attach(dist_master_t *s, dist__mpeer_t *p, const char *name,
                                       size_t len)
{
    dist__mclient_t *cn = s_cn_get(s, name, len);
    if (!cn)
        return NULL;
    if (cn->peer && cn->peer != p) {
        /* The newest connection takes the name over (section 4). */
        dist__mpeer_t *old = cn->peer;
        old->cn = NULL;
        old->replaced = true;
        cn->peer = NULL;
        dist__m_peer_gone(s, old);
    }
    if (p->cn && p->cn != cn)
        dist__m_client_detach(s, p);
    cn->peer = p;
    p->cn = cn;
    /* Every HELLO re-sends every unacknowledged result. */
    dist__dl_splice_front(&cn->unsent, &cn->sent);
    for (dist__dnode_t *d = dist__dl_first(&cn->unsent); d; d = dist__dl_next(&cn->unsent, d))
        DIST__CONTAINER_OF(d, dist__mtask_t, node)->sent = 0;
    s_cn_dirty(s, cn);
    return cn;
}

void dist__m_client_detach(dist_master_t *s, dist__mpeer_t *p)
{
    dist__mclient_t *cn = p->cn;
    if (!cn)
        return;
    p->cn = NULL;
    if (cn->peer == p)
        cn->peer = NULL;
    if (dist__dn_linked(&cn->dirty))
        dist__dl_remove(&s->dirty_clients, &cn->dirty);
    s_cn_maybe_free(s, cn);
}

/* ---- leases and ghosts ---------------------------------------------------------------------- */

/* ---- attempts (dist__mhist_t) ------------------------------------------------------------ */

bool dist__m_hist_next(const uint8_t *b, size_t len, size_t *off, dist__attempt_info_t *a)
{
    if (len < 6 || *off > len - 6)
        return false;
    const uint8_t *p = b + *off;
    size_t wl = p[4], rl = p[5];
    if (wl + rl > len - 6 - *off)
        return false;
    a->attempt = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    a->worker.s = (const char *)p + 6;
    a->worker.n = wl;
    a->reason.s = (const char *)p + 6 + wl;
    a->reason.n = rl;
    *off += 6 + wl + rl;
    return true;
}

dist__str_t dist__m_task_name(const dist__mtask_t *t)
{
    if (t->q)
        return (dist__str_t){ t->q->key.name, t->q->key.len };
    if (t->hist && t->hist->tlen)
        return (dist__str_t){ (const char *)t->hist->b + t->hist->len, t->hist->tlen };
    return (dist__str_t){ "", 0 };
}

/* Appends one attempt's record to t's history (not DONE yet), the oldest
 * going beyond DIST__HIST_MAX; without memory the record is lost, not the
 * task. */
static void s_hist_add(dist__mtask_t *t, uint32_t attempt, const char *w, size_t wlen,
                       const char *reason, size_t rlen)
{
    dist__mhist_t *h = t->hist;
    wlen = wlen > DIST__NAME_MAX ? DIST__NAME_MAX : wlen;
    rlen = rlen > DIST__HIST_REASON_MAX ? DIST__HIST_REASON_MAX : rlen;
    if (h && h->n >= DIST__HIST_MAX) {
        size_t off = 0;
        dist__attempt_info_t a;
        if (dist__m_hist_next(h->b, h->len, &off, &a)) {
            memmove(h->b, h->b + off, h->len - off);
            h->len -= (uint32_t)off;
            h->n--;
        }
    }
    size_t used = h ? h->len : 0, rec = 6 + wlen + rlen;
    dist__mhist_t *nh = realloc(h, sizeof *h + used + rec);
    if (!nh)
        return;
    if (!h)
        memset(nh, 0, sizeof *nh);
    uint8_t *p = nh->b + used;
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(attempt >> (8 * i));
    p[4] = (uint8_t)wlen;
    p[5] = (uint8_t)rlen;
    memcpy(p + 6, w, wlen);
    memcpy(p + 6 + wlen, reason, rlen);
    nh->len = (uint32_t)(used + rec);
    nh->n++;
    t->hist = nh;
}

/* Records how the current attempt ended: its worker while leased. */
static void s_add_reason(dist__mtask_t *t, const char *reason, size_t rlen)
{
    const char *w = t->state == DIST__T_LEASED && t->worker ? t->worker->name : "";
    s_hist_add(t, t->attempt, w, strlen(w), reason, rlen);
}

/* Keeps the task name after the records: t is becoming DONE and lets go
 * of its queue (without memory the name is lost, not the result). */
static void s_hist_keep_name(dist__mtask_t *t, const char *name, size_t len)
{
    size_t used = t->hist ? t->hist->len : 0;
    len = len > DIST__NAME_MAX ? DIST__NAME_MAX : len;
    dist__mhist_t *h = realloc(t->hist, sizeof *h + used + len);
    if (!h)
        return;
    if (!t->hist)
        memset(h, 0, sizeof *h);
    memcpy(h->b + used, name, len);
    h->tlen = (uint8_t)len;
    t->hist = h;
}

/* "1: why; 2: why" of t's history into buf (the error of a task that gave up). */
static void s_hist_text(const dist__mtask_t *t, char *buf, size_t cap)
{
    size_t off = 0, at = 0;
    dist__attempt_info_t a;
    buf[0] = '\0';
    while (t->hist && dist__m_hist_next(t->hist->b, t->hist->len, &off, &a) && at < cap) {
        int n = snprintf(buf + at, cap - at, "%s%u: %.*s", at ? "; " : "", (unsigned)a.attempt,
                         (int)a.reason.n, a.reason.s);
        if (n < 0)
            break;
        at += (size_t)n;
    }
}

static int64_t s_lease_ms(const dist_master_t *s, const dist__mtask_t *t)
{
    return t->timeout_ms ? (int64_t)t->timeout_ms + GRACE_MS : s->lease_ms;
}

/* Ends t's lease; t leaves its worker's list. ghost_until > 0: the worker
 * may still run the task, so a ghost holds its credit until then or
 * until the worker answers for the id. */
static void s_unlease(dist_master_t *s, dist__mtask_t *t, int64_t ghost_until)
{
    dist__mpeer_t *w = t->worker;
    dist__dl_remove(&w->leased, &t->node);
    dist__m_timer_del(s, &t->timer);
    t->q->in_flight--;
    t->worker = NULL;
    if (ghost_until > 0) {
        dist__mghost_t *g = malloc(sizeof *g);
        if (g) {
            g->id = t->id;
            g->worker = w;
            g->timer.idx = UINT32_MAX;
            if (dist__m_timer_add(s, &g->timer, ghost_until, DIST__TIMER_GHOST) == 0) {
                dist__dl_push_back(&w->ghosts, &g->node);
                return;
            }
            free(g);
        }
    }
    w->held--;
    dist__m_worker_dirty(s, w);
}

static void s_ghost_free(dist_master_t *s, dist__mghost_t *g)
{
    dist__mpeer_t *w = g->worker;
    dist__dl_remove(&w->ghosts, &g->node);
    dist__m_timer_del(s, &g->timer);
    free(g);
    w->held--;
    dist__m_worker_dirty(s, w);
}

/* The worker answered for an id whose lease was cancelled. */
static bool s_ghost_release(dist_master_t *s, dist__mpeer_t *w, const dist__id_t *id)
{
    for (dist__dnode_t *d = dist__dl_first(&w->ghosts); d; d = dist__dl_next(&w->ghosts, d)) {
        dist__mghost_t *g = DIST__CONTAINER_OF(d, dist__mghost_t, node);
        if (dist__id_eq(&g->id, id)) {
            s_ghost_free(s, g);
            return true;
        }
    }
    return false;
}

void dist__m_ghost_expired(dist_master_t *s, dist__mghost_t *g)
{
    s_ghost_free(s, g);
}

/* ---- task transitions (docs/PROTOCOL.md section 6.1) ------------------------------------------
 *
 * The only code that assigns t->state. Each transition is named after an
 * arrow of the diagram, asserts the states it may start from, and does
 * everything that belongs to it: the lists, the counters, the store mark
 * and the log line. Leaving a state is s_leave's job, so that a new state
 * adds one case there and its own transitions here.
 */

#define T_QUEUED DIST__T_BIT(DIST__T_QUEUED)
#define T_LEASED DIST__T_BIT(DIST__T_LEASED)
#define T_DONE DIST__T_BIT(DIST__T_DONE)
#define T_NONE DIST__T_BIT(DIST__T_NONE)
#define T_DELAYED DIST__T_BIT(DIST__T_DELAYED)
#define T_FROM(t, legal) assert((DIST__T_BIT((t)->state) & (legal)) && "illegal task transition")

/* Takes t out of the list of its current state. ghost_until: see s_unlease. */
static void s_leave(dist_master_t *s, dist__mtask_t *t, int64_t ghost_until)
{
    switch (t->state) {
    case DIST__T_QUEUED: {
        dist__dlist_t *l = &t->q->lv[t->o.prio];
        dist__dl_remove(l, &t->node);
        t->q->nready--;
        if (!l->n)
            t->q->mask &= (uint16_t)~(1u << t->o.prio);
        break;
    }
    case DIST__T_DELAYED:
        dist__m_timer_del(s, &t->timer);
        t->q->delayed--;
        break;
    case DIST__T_LEASED:
        s_unlease(s, t, ghost_until);
        break;
    case DIST__T_DONE:
        dist__dl_remove(t->sent ? &t->cn->sent : &t->cn->unsent, &t->node);
        break;
    default:
        break;
    }
}

/* Into its queue's level, at the back (new) or the front (back from a lease). */
static void s_enter_queued(dist_master_t *s, dist__mtask_t *t, bool front)
{
    dist__dlist_t *l = &t->q->lv[t->o.prio];
    t->state = DIST__T_QUEUED;
    t->not_before_ms = 0;
    if (front)
        dist__dl_push_front(l, &t->node);
    else
        dist__dl_push_back(l, &t->node);
    t->q->nready++;
    t->q->mask |= (uint16_t)(1u << t->o.prio);
    s_tq_dirty(s, t->q);
}

/* Into the timer heap until delay_ms from now (its slot was reserved). */
static void s_enter_delayed(dist_master_t *s, dist__mtask_t *t, int64_t delay_ms)
{
    t->state = DIST__T_DELAYED;
    t->not_before_ms = dist__m_unix_ms() + delay_ms;
    t->q->delayed++;
    dist__m_timer_add(s, &t->timer, s->now + delay_ms, DIST__TIMER_DUE);
}

/* (none) -> QUEUED: a new task of q, accepted from a SUBMIT. */
static void s_t_submit(dist_master_t *s, dist__mtask_t *t, dist__mtq_t *q, int64_t delay_ms)
{
    T_FROM(t, T_NONE);
    t->q = q;
    q->refs++;
    s->outstanding++;
    t->cn->pending++;
    s->c.submitted++;
    dist__m_obs_submitted(s, q, 1);
    if (s->store) {
        t->srow = s->next_row++;
        dist__m_store_mark(s, t, DIST__S_NEW);
    }
    if (delay_ms > 0)
        s_enter_delayed(s, t, delay_ms); /* the arrow "delay" of a new task */
    else
        s_enter_queued(s, t, false);
}

/* DELAYED -> QUEUED ("due"): its time came; to the back of its level. */
static void s_t_due(dist_master_t *s, dist__mtask_t *t)
{
    T_FROM(t, T_DELAYED);
    t->q->delayed--; /* the heap already let go of its timer */
    s_enter_queued(s, t, false);
    dist__m_store_mark(s, t, DIST__S_META);
}

/* QUEUED -> (none): a SUBMIT the store refused after all; t is freed by
 * the store. */
static void s_t_unsubmit(dist_master_t *s, dist__mtask_t *t)
{
    T_FROM(t, T_QUEUED | T_DELAYED);
    s_leave(s, t, 0);
    dist__m_obs_submitted(s, t->q, -1);
    t->q->refs--;
    t->q = NULL;
    s->outstanding--;
    t->cn->pending--;
    t->cn = NULL;
    s->c.submitted--;
    t->state = DIST__T_NONE;
    dist__m_store_drop(s, t);
}

/* QUEUED -> LEASED: t, the first of its queue, was sent to w in a TASKS. */
static void s_t_lease(dist_master_t *s, dist__mtask_t *t, dist__mpeer_t *w)
{
    T_FROM(t, T_QUEUED);
    s_leave(s, t, 0);
    t->state = DIST__T_LEASED;
    t->worker = w;
    t->started_ms = dist__m_unix_ms();
    dist__dl_push_back(&w->leased, &t->node);
    dist__m_store_mark(s, t, DIST__S_LEASE);
    dist__m_timer_add(s, &t->timer, s->now + s_lease_ms(s, t), DIST__TIMER_LEASE); /* reserved */
    w->held++;
    t->q->in_flight++;
}

/* LEASED -> QUEUED (RETURN): to the front, the same attempt (it never ran). */
static void s_t_return(dist_master_t *s, dist__mtask_t *t)
{
    T_FROM(t, T_LEASED);
    s_leave(s, t, 0);
    s_enter_queued(s, t, true);
    dist__m_store_mark(s, t, DIST__S_META);
}

/* QUEUED | LEASED -> DONE: keep the result for its client (ghost_until:
 * a lease it ends may still run, see s_unlease). */
static void s_t_finish(dist_master_t *s, dist__mtask_t *t, dist__status_t st, const void *bytes,
                       size_t len, int64_t ghost_until)
{
    static const char nomem[] = "the master ran out of memory for this result";
    T_FROM(t, T_QUEUED | T_LEASED | T_DELAYED);
    /* How the attempt that ran ended, unless the retry path recorded it
     * already (gave_up). */
    if (t->state == DIST__T_LEASED) {
        size_t off = 0, last = 0;
        dist__attempt_info_t a;
        while (t->hist && dist__m_hist_next(t->hist->b, t->hist->len, &off, &a))
            last = a.attempt;
        if (last != t->attempt)
            s_add_reason(t, st == DIST__ST_OK ? "" : (const char *)bytes, st == DIST__ST_OK ? 0 : len);
    }
    if (st != DIST__ST_OK && st != DIST__ST_CANCELLED)
        dist__m_dead_add(s, t, st, bytes, len); /* while data still holds the args */
    s_leave(s, t, ghost_until);
    t->finished_ms = dist__m_unix_ms();
    t->not_before_ms = 0;
    dist__m_obs_finished(s, t, st, bytes, len);
    s_hist_keep_name(t, t->q->key.name, t->q->key.len);
    t->q->refs--;
    t->q = NULL;
    s->outstanding--;
    t->cn->pending--;
    if (len > t->cap) {
        t->res = malloc(len);
        if (!t->res) {
            st = DIST__ST_FAILED;
            bytes = nomem;
            len = sizeof nomem - 1 < t->cap ? sizeof nomem - 1 : t->cap;
        }
    }
    if (len)
        memcpy(t->res ? t->res : t->data, bytes, len);
    t->len = (uint32_t)len;
    t->status = (uint8_t)st;
    t->state = DIST__T_DONE;
    t->sent = 0;
    dist__m_store_mark(s, t, DIST__S_DONE);
    dist__dl_push_back(&t->cn->unsent, &t->node);
    s->results_waiting++;
    s_cn_dirty(s, t->cn);
    s->c.completed++;
    if (st != DIST__ST_OK)
        s->c.failed++;
    dist__m_rate_add(s, 0, 1);
    dist__m_task_final(s, t);
}

/* QUEUED | DELAYED | LEASED -> DONE with status cancelled ("cancel"). A
 * leased task's worker is told (CANCEL {ids}); its lease becomes a ghost
 * until the worker answers for the id or the lease's deadline. */
static void s_t_cancel(dist_master_t *s, dist__mtask_t *t, const char *by)
{
    T_FROM(t, T_QUEUED | T_DELAYED | T_LEASED);
    char msg[DIST__NAME_MAX + 32], hex[33];
    int n = snprintf(msg, sizeof msg, "cancelled by %s", by);
    int64_t ghost_until = 0;
    if (t->state == DIST__T_LEASED) {
        dist__mpeer_t *w = t->worker;
        ghost_until = t->timer.at > s->now ? t->timer.at : s->now + GRACE_MS;
        dist_wire_buf_reset(s->out);
        msgpack_packer *pk = dist_wire_buf_packer(s->out);
        dist__ids_req_t c = { .nids = 1 };
        dist__pack_ids_req(pk, &c, false);
        dist__pk_id(pk, &t->id);
        dist__m_send(s, w, DIST__CMD_CANCEL, s->out, NULL, NULL, 0);
    }
    dist__id_hex(&t->id, hex);
    dist__log(&s->log, DIST_LOG_INFO, "task %s (id %s) %s", t->q->key.name, hex, msg);
    s->c.cancelled++;
    s_t_finish(s, t, DIST__ST_CANCELLED, msg, n < 0 ? 0 : (size_t)n, ghost_until);
}

void dist__m_task_cancel(dist_master_t *s, dist__mtask_t *t, const char *by)
{
    s_t_cancel(s, t, by);
}

void dist__m_task_due(dist_master_t *s, dist__mtask_t *t)
{
    s_t_due(s, t);
}

/* -> DONE with gave_up: the attempts are spent. */
static void s_t_give_up(dist_master_t *s, dist__mtask_t *t, int64_t ghost_until)
{
    char msg[REASONS_MAX + 256], hex[33], reasons[REASONS_MAX];
    s_hist_text(t, reasons, sizeof reasons);
    int n = snprintf(msg, sizeof msg, "task %s gave up after %u attempt%s: %s", t->q->key.name,
                     (unsigned)t->attempt, t->attempt == 1 ? "" : "s",
                     reasons[0] ? reasons : "no reason recorded");
    size_t len = n < 0 ? 0 : (size_t)n >= sizeof msg ? sizeof msg - 1 : (size_t)n;
    dist__id_hex(&t->id, hex);
    dist__log(&s->log, DIST_LOG_INFO, "%s (id %s)", msg, hex);
    s->c.gave_up++;
    s_t_finish(s, t, DIST__ST_GAVE_UP, msg, len, ghost_until);
}

static uint32_t s_max_attempts(const dist_master_t *s, const dist__mtask_t *t)
{
    return t->o.max_attempts ? t->o.max_attempts : (uint32_t)s->max_attempts;
}

/* The delay before attempt k (>= 2) of t: backoff_ms * factor^(k-2),
 * capped at backoff_max_ms, times a jitter uniform in [0.8, 1.2] (so that
 * tasks that failed together do not come back together). */
static int64_t s_backoff(dist_master_t *s, const dist__mtask_t *t, uint32_t k)
{
    if (!t->o.backoff_ms || k < 2)
        return 0;
    double d = t->o.backoff_ms;
    double f = t->o.backoff_factor > 0 ? t->o.backoff_factor : DIST__BACKOFF_FACTOR_DEFAULT;
    double cap = t->o.backoff_max_ms ? t->o.backoff_max_ms : DIST__BACKOFF_MAX_DEFAULT;
    for (uint32_t i = 2; i < k && d < cap; i++)
        d *= f;
    if (d > cap)
        d = cap;
    s->jitter ^= s->jitter << 13;
    s->jitter ^= s->jitter >> 7;
    s->jitter ^= s->jitter << 17;
    d *= 0.8 + 0.4 * (double)(s->jitter >> 11) / 9007199254740992.0;
    return (int64_t)d;
}

/* LEASED -> QUEUED with attempt + 1 (the worker died, the lease expired,
 * or a retryable result), at the front; or LEASED -> DELAYED
 * ("retry_later") when its backoff or the worker's retry_ms asks for a
 * wait; or -> DONE (gave_up) when it had its max_attempts. */
static void s_t_requeue(dist_master_t *s, dist__mtask_t *t, const char *reason, int64_t ghost_until,
                        uint32_t retry_ms)
{
    T_FROM(t, T_LEASED);
    s_add_reason(t, reason, strlen(reason));
    if (t->attempt >= s_max_attempts(s, t) || dist__m_timer_reserve(s, 2)) {
        s_t_give_up(s, t, ghost_until);
        return;
    }
    s_leave(s, t, ghost_until);
    t->attempt++;
    s->c.retried++;
    dist__m_obs_retried(s, t->q);
    int64_t delay = s_backoff(s, t, t->attempt);
    if (delay < retry_ms)
        delay = retry_ms;
    if (delay > (int64_t)DIST__DELAY_MAX_MS)
        delay = (int64_t)DIST__DELAY_MAX_MS;
    if (delay > 0)
        s_enter_delayed(s, t, delay);
    else
        s_enter_queued(s, t, true);
    dist__m_store_mark(s, t, DIST__S_META);
    char hex[33];
    dist__id_hex(&t->id, hex);
    dist__log(&s->log, DIST_LOG_DEBUG, "task %s (id %s) %s for attempt %u: %s",
              t->q->key.name, hex, delay > 0 ? "delayed" : "requeued", (unsigned)t->attempt,
              reason);
}

/* DONE -> (gone): the client acknowledged the result; the store frees t
 * after its commit (or t is freed now). */
static void s_t_acked(dist_master_t *s, dist__mtask_t *t, uint64_t hash)
{
    T_FROM(t, T_DONE);
    s_leave(s, t, 0);
    t->state = DIST__T_NONE;
    dist__hmap_del(&s->tasks, hash, t);
    s->results_waiting--;
    if (!dist__m_store_drop(s, t))
        dist__m_task_free(t);
}

/* DONE -> (gone) ("expire"): nobody acknowledged the result within
 * --result-ttl; its id is remembered as expired (a bounded set). The
 * caller frees the client name when it was the last thing it held. */
static void s_t_expire(dist_master_t *s, dist__mtask_t *t)
{
    T_FROM(t, T_DONE);
    s->c.expired_results++;
    dist__m_tomb_add(s, &t->id);
    s_t_acked(s, t, s_id_hash(s, &t->id));
}

void dist__m_task_expire(dist_master_t *s, dist__mtask_t *t)
{
    dist__mclient_t *cn = t->cn;
    s_t_expire(s, t);
    s_cn_maybe_free(s, cn);
}

/* Expires from the front of l while its tasks are older than the TTL
 * (results are appended as they finish, so the front is the oldest; a
 * result sent again moves back and may wait one more TTL at most). */
static void s_expire_list(dist_master_t *s, dist__dlist_t *l, int64_t before)
{
    dist__dnode_t *d;
    while ((d = dist__dl_first(l))) {
        dist__mtask_t *t = DIST__CONTAINER_OF(d, dist__mtask_t, node);
        if (t->finished_ms > before)
            break;
        s_t_expire(s, t);
    }
}

void dist__m_expire_results(dist_master_t *s)
{
    if (!s->result_ttl_ms || !s->results_waiting || s->now < s->expire_at)
        return;
    s->expire_at = s->now + 1000;
    int64_t before = dist__m_unix_ms() - s->result_ttl_ms;
    /* A client name freed here leaves the index while it is walked: an
     * entry moved by that may be skipped until the next look, a second
     * later, which the TTL's precision allows. */
    for (size_t i = 0; i < s->cn_index.cap && s->results_waiting; i++) {
        dist__mclient_t *cn = s->cn_index.slots[i].item;
        if (!cn || !(cn->sent.n + cn->unsent.n))
            continue;
        s_expire_list(s, &cn->sent, before);
        s_expire_list(s, &cn->unsent, before);
        s_cn_maybe_free(s, cn);
    }
}

/* Submits a dead letter again with fresh attempts, for its submitter when
 * that name is still known, else for the requester. A DONE task of the
 * same id (its result not yet acknowledged) is replaced. */
const char *dist__m_task_resubmit(dist_master_t *s, const dist__mdead_t *d,
                                  dist__mclient_t *requester)
{
    uint64_t h = s_id_hash(s, &d->id);
    dist__mtask_t *old = dist__hmap_get(&s->tasks, h, d->id.b, sizeof d->id.b);
    if (old && old->state != DIST__T_DONE)
        return dist__m_task_state(old); /* submitted again already */
    dist__mtq_t *q = dist__m_tq_find(s, d->task, strlen(d->task));
    if (!q || dist__m_store_refusing(s) || s->outstanding >= s->max_queued)
        return NULL;
    dist__mclient_t *cn = old ? old->cn : dist__m_named_find(s, &s->cn_index, d->client,
                                                               strlen(d->client));
    if (!cn)
        cn = requester;
    if (!cn)
        return NULL;
    dist__mtask_t *t = dist__hmap_reserve(&s->tasks, 1) ? NULL : malloc(sizeof *t + d->len);
    char *key = t && d->key ? strdup(d->key) : NULL;
    if (!t || (d->key && !key)) {
        free(t);
        return NULL;
    }
    if (old)
        s_t_acked(s, old, h); /* its result is replaced by the new run's */
    memset(t, 0, sizeof *t);
    t->id = d->id;
    t->cn = cn;
    t->key = key;
    t->attempt = 1;
    t->timeout_ms = d->timeout_ms;
    t->o = d->o;
    t->submitted_ms = dist__m_unix_ms();
    t->len = t->cap = d->len;
    memcpy(t->data, d->args, d->len);
    t->timer.idx = UINT32_MAX;
    t->accepted_at = s->now;
    dist__hmap_add(&s->tasks, h, t); /* reserved */
    s_t_submit(s, t, q, 0);
    dist__m_rate_add(s, 1, 0);
    return dist__m_task_state(t);
}

/* DONE -> DONE: the result goes to its client again (a SUBMIT repeated
 * before the ACK: the client lost the first delivery). */
static void s_t_resend(dist_master_t *s, dist__mtask_t *t)
{
    T_FROM(t, T_DONE);
    if (!t->sent)
        return; /* on its way already */
    s_leave(s, t, 0);
    t->sent = 0;
    dist__dl_push_back(&t->cn->unsent, &t->node);
    s_cn_dirty(s, t->cn);
}

/* (none) -> QUEUED or DONE: a task read back from the store. One that was
 * leased when the master stopped may have started: that attempt counts,
 * as if its worker had died. */
static void s_t_recover(dist_master_t *s, dist__mtask_t *t, dist__mtq_t *q, bool done, bool leased,
                        int64_t delay_ms)
{
    T_FROM(t, T_NONE);
    if (done) {
        t->state = DIST__T_DONE;
        dist__dl_push_back(&t->cn->unsent, &t->node);
        s->results_waiting++;
        return;
    }
    t->q = q;
    q->refs++;
    s->outstanding++;
    t->cn->pending++;
    if (delay_ms > 0 && !leased) {
        /* Delayed (before its time or waiting for a retry): until then,
         * by the master's clock; its timer slot was reserved. */
        int64_t nb = t->not_before_ms;
        s_enter_delayed(s, t, delay_ms);
        t->not_before_ms = nb;
        return;
    }
    s_enter_queued(s, t, false);
    if (!leased)
        return;
    static const char stopped[] = "the master stopped while the task was leased";
    s_add_reason(t, stopped, sizeof stopped - 1);
    if (t->attempt >= s_max_attempts(s, t)) {
        s_t_give_up(s, t, 0);
    } else {
        t->attempt++;
        dist__m_store_mark(s, t, DIST__S_META);
    }
}

void dist__m_lease_expired(dist_master_t *s, dist__mtask_t *t)
{
    char desc[300], why[400], hex[33];
    int64_t ms = s_lease_ms(s, t);
    if (!t->timeout_ms && s->now - t->worker->last_seen < s->hb_timeout_ms) {
        /* Lease renewal: a task without a timeout runs as long as its
         * worker lives (its heartbeats arrive); the worker's death, not
         * the lease, gives it to another worker. */
        dist__m_timer_add(s, &t->timer, s->now + ms, DIST__TIMER_LEASE); /* just freed */
        return;
    }
    dist__m_peer_desc(t->worker, desc, sizeof desc);
    dist__id_hex(&t->id, hex);
    dist__log(&s->log, DIST_LOG_INFO, "lease of task %s (id %s, attempt %u) on %s expired after %lld ms",
              t->q->key.name, hex, (unsigned)t->attempt, desc, (long long)ms);
    snprintf(why, sizeof why, "lease expired after %lld ms on %s", (long long)ms, desc);
    s_t_requeue(s, t, why, s->now + ms, 0);
}

/* ---- workers --------------------------------------------------------------------------------- */

/* q's workers changed: dist__m_notices looks at it at the end of the
 * turn (a worker that announces again is removed and added back in one
 * message, which must not look like a leave). */
static void s_notice_mark(dist_master_t *s, dist__mtq_t *q)
{
    if (!dist__dn_linked(&q->notice))
        dist__dl_push_back(&s->notice_tqs, &q->notice);
}

static void s_worker_unname(dist_master_t *s, dist__mpeer_t *w)
{
    for (size_t i = 0; i < w->nnames; i++) {
        dist__mtq_t *q = w->names[i].q;
        uint32_t qi = w->names[i].qi;
        s_notice_mark(s, q);
        q->nws--;
        if (qi != q->nws) {
            q->ws[qi] = q->ws[q->nws];
            q->ws[qi].w->names[q->ws[qi].wi].qi = qi;
        }
    }
    free(w->names);
    w->names = NULL;
    w->nnames = 0;
}

int dist__m_worker_names(dist_master_t *s, dist__mpeer_t *w, const msgpack_object *names,
                         size_t n)
{
    s_worker_unname(s, w);
    if (!n)
        return 0;
    w->names = malloc(n * sizeof *w->names);
    if (!w->names)
        return DIST_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        const char *name;
        size_t len;
        if (dist_wire_get_str(&names[i], &name, &len))
            continue; /* checked by the caller */
        dist__mtq_t *q = s_tq_get(s, name, len, true);
        if (!q)
            return DIST_ENOMEM;
        /* This worker's entries are appended last, so a name it repeats
         * is at the end. */
        if (q->nws && q->ws[q->nws - 1].w == w)
            continue;
        if (q->nws == q->capws) {
            size_t cap = q->capws ? q->capws * 2 : 4;
            void *ws = realloc(q->ws, cap * sizeof *q->ws);
            if (!ws)
                return DIST_ENOMEM;
            q->ws = ws;
            q->capws = cap;
        }
        q->ws[q->nws].w = w;
        q->ws[q->nws].wi = (uint32_t)w->nnames;
        w->names[w->nnames].q = q;
        w->names[w->nnames].qi = (uint32_t)q->nws;
        w->nnames++;
        q->nws++;
        s_notice_mark(s, q);
    }
    s_tq_gc(s);
    return 0;
}

void dist__m_worker_release(dist_master_t *s, dist__mpeer_t *w, const char *why)
{
    dist__dnode_t *d;
    /* From the last leased to the first, each to the front of its queue:
     * they end up in their original order, ahead of newer tasks. */
    while ((d = dist__dl_last(&w->leased))) {
        s_t_requeue(s, DIST__CONTAINER_OF(d, dist__mtask_t, node), why, 0, 0);
    }
    while ((d = dist__dl_first(&w->ghosts)))
        s_ghost_free(s, DIST__CONTAINER_OF(d, dist__mghost_t, node));
    w->held = 0;
    s_worker_unname(s, w);
    if (dist__dn_linked(&w->dirty))
        dist__dl_remove(&s->dirty_workers, &w->dirty);
}

/* ---- NOTICE ---------------------------------------------------------------------------------- */

/* NOTICE {served|unserved: [q's name]} to every connected client with a
 * task of q QUEUED, once each. */
static void s_notice_q(dist_master_t *s, dist__mtq_t *q, bool served)
{
    dist__str_t name = { q->key.name, q->key.len };
    dist__notice_t n = { .served_names = &name, .nserved = served ? 1 : 0,
                         .unserved_names = &name, .nunserved = served ? 0 : 1 };
    uint64_t round = ++s->notice_round;
    size_t told = 0;
    for (int lv = 0; lv < DIST__PRIORITY_LEVELS; lv++) {
        dist__dlist_t *l = &q->lv[lv];
        for (dist__dnode_t *d = dist__dl_first(l); d; d = dist__dl_next(l, d)) {
            dist__mclient_t *cn = DIST__CONTAINER_OF(d, dist__mtask_t, node)->cn;
            if (!cn->peer || cn->mark == round)
                continue;
            cn->mark = round;
            /* Packed for each: a send that meets a full pipe keeps s->out's
             * bytes, and nothing else may pack in between. */
            dist_wire_buf_reset(s->out);
            dist__pack_notice(dist_wire_buf_packer(s->out), &n);
            dist__m_send(s, cn->peer, DIST__CMD_NOTICE, s->out, NULL, NULL, 0);
            told++;
        }
    }
    if (told && served)
        dist__log(&s->log, DIST_LOG_INFO, "task %s is served again: told %zu client(s)",
                  q->key.name, told);
    else if (told)
        dist__log(&s->log, DIST_LOG_WARN, "no connected worker offers task %s any more (%zu "
                  "queued): told %zu client(s)", q->key.name, q->nready, told);
}

void dist__m_notices(dist_master_t *s)
{
    dist__dnode_t *d;
    while ((d = dist__dl_pop_front(&s->notice_tqs))) {
        dist__mtq_t *q = DIST__CONTAINER_OF(d, dist__mtq_t, notice);
        bool served = q->nws > 0;
        if (served == q->served)
            continue;
        q->served = served;
        if (!served && q->nready) {
            s_notice_q(s, q, false);
            q->told = true;
        } else if (served && q->told) {
            s_notice_q(s, q, true);
            q->told = false;
        }
    }
}

/* ---- dispatch ------------------------------------------------------------------------------- */

/* Offers of candidate i: one per free credit, valued key, key-1, ...,
 * key-f+1. The number of offers valued at least T: */
static int64_t s_offers(const struct dist__mcand *c, size_t k, int64_t T)
{
    int64_t n = 0;
    for (size_t i = 0; i < k; i++) {
        int64_t x = c[i].key - T + 1;
        if (x > 0)
            n += x < c[i].f ? x : c[i].f;
    }
    return n;
}

/* Gives the R best offers (R less than all of them): the highest
 * threshold T that still has R offers at or above it, everything above T,
 * and the rest at exactly T, rotating the start among equals. */
static void s_water_fill(struct dist__mcand *c, size_t k, int64_t R, unsigned rot)
{
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (size_t i = 0; i < k; i++) {
        if (c[i].key - c[i].f + 1 < lo)
            lo = c[i].key - c[i].f + 1;
        if (c[i].key > hi)
            hi = c[i].key;
    }
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        if (s_offers(c, k, mid) >= R)
            lo = mid;
        else
            hi = mid - 1;
    }
    int64_t T = lo, given = 0;
    for (size_t i = 0; i < k; i++) {
        int64_t x = c[i].key - T;
        c[i].give = x <= 0 ? 0 : x < c[i].f ? x : c[i].f;
        given += c[i].give;
    }
    for (size_t j = 0; j < k && given < R; j++) {
        struct dist__mcand *ci = &c[(j + rot) % k];
        if (ci->key >= T && ci->key - ci->f + 1 <= T) {
            ci->give++;
            given++;
        }
    }
}

/* How many tasks from the front of l go in one message: at most lim,
 * within max_message counting each task's bytes plus `extra` (at least
 * one, which always fits: SUBMIT checked its size). */
static size_t s_batch_size(const dist_master_t *s, const dist__dlist_t *l, size_t lim,
                           size_t extra)
{
    size_t n = 0, bytes = 256;
    for (const dist__dnode_t *d = dist__dl_first(l); d && n < lim; d = dist__dl_next(l, d)) {
        size_t est = DIST__CONTAINER_OF(d, dist__mtask_t, node)->len + extra;
        if (n && bytes + est > s->max_message)
            break;
        bytes += est;
        n++;
    }
    return n;
}

/* Starts the body {key: [n items]} of cmd in s->out. */
static msgpack_packer *s_batch_begin(dist_master_t *s, dist__cmd_t cmd, size_t n)
{
    dist_wire_buf_reset(s->out);
    msgpack_packer *pk = dist_wire_buf_packer(s->out);
    dist__pack_list_head(pk, cmd, n);
    return pk;
}

/* Leases up to `count` tasks from the front of q to w, in TASKS messages
 * within max_batch and max_message. A task is leased only once its
 * message is on its way. */
static void s_send_tasks(dist_master_t *s, dist__mpeer_t *w, dist__mtq_t *q, int64_t count)
{
    dist__dlist_t *l;
    while (count > 0 && (l = dist__mtq_top(q)) && dist__m_peer_ready(w)) {
        /* One level per batch: the highest first (strict priority). */
        size_t lim = count < DIST__MAX_BATCH ? (size_t)count : DIST__MAX_BATCH;
        size_t n = s_batch_size(s, l, lim, q->key.len + ITEM_OVERHEAD);
        if (dist__m_timer_reserve(s, n))
            return;
        msgpack_packer *pk = s_batch_begin(s, DIST__CMD_TASKS, n);
        dist__dnode_t *d = dist__dl_first(l);
        for (size_t i = 0; i < n; i++, d = dist__dl_next(l, d)) {
            const dist__mtask_t *t = DIST__CONTAINER_OF(d, dist__mtask_t, node);
            dist__task_t tt = { t->id, t->attempt, q->key.name, q->key.len, t->data, t->len, t->timeout_ms };
            dist__pack_task(pk, &tt, true);
        }
        if (dist__m_try_send(s, w, DIST__CMD_TASKS, s->out))
            return;
        for (size_t i = 0; i < n; i++) {
            s_t_lease(s, DIST__CONTAINER_OF(dist__dl_first(l), dist__mtask_t, node), w);
        }
        count -= (int64_t)n;
    }
}

static void s_dispatch_q(dist_master_t *s, dist__mtq_t *q)
{
    if (!q->nready || !q->nws)
        return;
    if (q->nws > s->capcand) {
        size_t cap = q->nws * 2;
        struct dist__mcand *c = realloc(s->cand, cap * sizeof *c);
        if (!c)
            return;
        s->cand = c;
        s->capcand = cap;
    }
    size_t k = 0;
    int64_t total = 0;
    for (size_t i = 0; i < q->nws; i++) {
        dist__mpeer_t *w = q->ws[i].w;
        if (!dist__m_peer_ready(w) || w->capacity <= w->held)
            continue;
        struct dist__mcand *c = &s->cand[k++];
        c->w = w;
        c->f = (int64_t)w->capacity - (int64_t)w->held;
        c->key = (int64_t)w->slots - (int64_t)w->held;
        c->give = 0;
        total += c->f;
    }
    if (!k)
        return;
    int64_t R = (int64_t)q->nready;
    if (R >= total) {
        for (size_t i = 0; i < k; i++)
            s->cand[i].give = s->cand[i].f;
    } else {
        s_water_fill(s->cand, k, R, s->rr++);
    }
    for (size_t i = 0; i < k && q->nready; i++)
        if (s->cand[i].give > 0)
            s_send_tasks(s, s->cand[i].w, q, s->cand[i].give);
}

void dist__m_dispatch(dist_master_t *s)
{
    dist__dnode_t *d;
    while ((d = dist__dl_pop_front(&s->dirty_workers))) {
        dist__mpeer_t *w = DIST__CONTAINER_OF(d, dist__mpeer_t, dirty);
        if (w->capacity <= w->held)
            continue;
        for (size_t i = 0; i < w->nnames; i++)
            if (w->names[i].q->nready)
                s_tq_dirty(s, w->names[i].q);
    }
    while ((d = dist__dl_pop_front(&s->dirty_tqs)))
        s_dispatch_q(s, DIST__CONTAINER_OF(d, dist__mtq_t, dirty));
}

/* ---- results to clients ----------------------------------------------------------------------- */

void dist__m_flush_results(dist_master_t *s)
{
    dist__dnode_t *d;
    while ((d = dist__dl_pop_front(&s->dirty_clients))) {
        dist__mclient_t *cn = DIST__CONTAINER_OF(d, dist__mclient_t, dirty);
        dist__mpeer_t *p = cn->peer;
        while (p && cn->unsent.n && dist__m_peer_ready(p)) {
            size_t n = s_batch_size(s, &cn->unsent, DIST__MAX_BATCH, ITEM_OVERHEAD);
            msgpack_packer *pk = s_batch_begin(s, DIST__CMD_RESULTS, n);
            dist__dnode_t *e = dist__dl_first(&cn->unsent);
            for (size_t i = 0; i < n; i++, e = dist__dl_next(&cn->unsent, e)) {
                const dist__mtask_t *t = DIST__CONTAINER_OF(e, dist__mtask_t, node);
                dist__result_t r = { .id = t->id, .status = (dist__status_t)t->status };
                if (t->status == DIST__ST_OK) {
                    r.value = dist__mtask_bytes(t);
                    r.value_len = t->len;
                } else {
                    r.error = (const char *)dist__mtask_bytes(t);
                    r.error_len = t->len;
                }
                dist__pack_result(pk, &r, false);
            }
            if (dist__m_try_send(s, p, DIST__CMD_RESULTS, s->out))
                break;
            for (size_t i = 0; i < n; i++) {
                dist__mtask_t *t =
                    DIST__CONTAINER_OF(dist__dl_pop_front(&cn->unsent), dist__mtask_t, node);
                t->sent = 1;
                dist__dl_push_back(&cn->sent, &t->node);
            }
        }
    }
}

/* ---- SUBMIT ---------------------------------------------------------------------------------- */

enum {
    SUB_OK = 0, SUB_BAD, SUB_LARGE, SUB_UNKNOWN, SUB_FULL, SUB_FULL_RESULTS, SUB_NOMEM, SUB_STORE
};

/* Stores one task of a SUBMIT. *last caches the previous task's queue:
 * a batch is usually of one name, so this saves a hash per task. */
static int s_submit_one(dist_master_t *s, dist__mclient_t *cn, const msgpack_object *o, bool room,
                        dist__mtq_t **last, uint64_t *fresh)
{
    dist__task_t t;
    dist__submit_opts_t so;
    if (dist__parse_task(o, false, &t) || dist__parse_submit_opts(o, &so, NULL))
        return SUB_BAD;
    if (so.key.n) {
        /* A caller's key must name the id it comes with (section 6.6). */
        dist__id_t kid;
        if (dist__id_from_key(so.key.s, so.key.n, &kid) || !dist__id_eq(&kid, &t.id))
            return SUB_BAD;
    }
    int64_t delay = so.delay_ms;
    if (so.has_at) {
        int64_t now = dist__m_unix_ms();
        if ((int64_t)so.at_ms > now + (int64_t)DIST__DELAY_MAX_MS)
            return SUB_BAD;
        delay = (int64_t)so.at_ms > now ? (int64_t)so.at_ms - now : 0; /* the past: now */
    }
    uint64_t h = s_id_hash(s, &t.id); /* once: for the lookup and the add */
    dist__mtask_t *old = dist__hmap_get(&s->tasks, h, t.id.b, sizeof t.id.b);
    if (old) {
        /* Idempotent until the ACK: nothing changes, unless the first
         * submission has not reached the store and cannot now; a result
         * its own client has not acknowledged is sent to it again. */
        if ((old->sflags & DIST__S_NEW) && dist__m_store_refusing(s))
            return SUB_STORE;
        if (old->state == DIST__T_DONE && old->cn == cn)
            s_t_resend(s, old);
        return SUB_OK;
    }
    if (t.args_len + t.task_len + ITEM_OVERHEAD > s->max_message)
        return SUB_LARGE;
    dist__mtq_t *q = *last;
    if (!q || q->key.len != t.task_len || memcmp(q->key.name, t.task, t.task_len) != 0)
        q = *last = dist__m_tq_find(s, t.task, t.task_len);
    if (!q)
        return SUB_UNKNOWN;
    if (dist__m_store_refusing(s))
        return SUB_STORE;
    if (s->outstanding >= s->max_queued)
        return SUB_FULL;
    if (cn->pending + cn->unsent.n + cn->sent.n >= s->max_results)
        return SUB_FULL_RESULTS;
    dist__mtask_t *task = room && !(delay > 0 && dist__m_timer_reserve(s, 1))
                              ? malloc(sizeof *task + t.args_len)
                              : NULL;
    char *key = task && so.key.n ? strndup(so.key.s, so.key.n) : NULL;
    if (!task || (so.key.n && !key)) {
        free(task);
        return SUB_NOMEM;
    }
    memset(task, 0, sizeof *task);
    task->key = key;
    task->o.prio = (uint8_t)so.priority;
    task->o.retry_on_error = so.retry_on_error;
    task->o.max_attempts = (uint16_t)so.max_attempts;
    task->o.backoff_ms = so.backoff_ms;
    task->o.backoff_factor = (float)so.backoff_factor;
    task->o.backoff_max_ms = so.backoff_max_ms;
    task->submitted_ms = dist__m_unix_ms();
    task->id = t.id;
    task->cn = cn;
    task->attempt = 1;
    task->timeout_ms = t.timeout_ms;
    task->len = task->cap = (uint32_t)t.args_len;
    memcpy(task->data, t.args, t.args_len);
    task->timer.idx = UINT32_MAX;
    task->accepted_at = s->now;
    dist__hmap_add(&s->tasks, h, task); /* reserved: cannot fail */
    s_t_submit(s, task, q, delay);
    (*fresh)++;
    return SUB_OK;
}

/* Why a task map is not a valid SUBMIT task. */
static const char *s_bad_task(const msgpack_object *o)
{
    dist__id_t id;
    const char *str;
    const void *bin;
    size_t n;
    uint32_t u;
    if (o->type != MSGPACK_OBJECT_MAP)
        return "a task must be a map";
    if (dist__get_id(o, "id", &id))
        return "id must be a bin of 16 bytes";
    if (dist__get_str(o, "task", &str, &n) || !dist__name_ok(str, n))
        return "task must be a name of 1-128 letters, digits and ._:-";
    if (dist__get_bin(o, "args", &bin, &n))
        return "args must be a bin holding one MessagePack array";
    if (dist__opt_u32(o, "timeout_ms", &u))
        return "timeout_ms must be a u32";
    dist__submit_opts_t so;
    const char *why = NULL;
    if (dist__parse_submit_opts(o, &so, &why))
        return why;
    if (so.key.n)
        return "key does not name the task's id (dist__id_from_key)";
    if (so.has_at)
        return "at_ms is more than 30 days (2592000000 ms) ahead of the master's clock";
    return "bad task";
}

static void s_pack_rejection(dist_master_t *s, msgpack_packer *pk, const dist__mclient_t *cn,
                             const msgpack_object *o, size_t index, int code)
{
    char msg[512];
    const char *name = "";
    size_t name_n = 0, args_n = 0;
    const void *args;
    dist__get_str(o, "task", &name, &name_n);
    dist__get_bin(o, "args", &args, &args_n);
    if (name_n > DIST__NAME_MAX)
        name_n = DIST__NAME_MAX;
    const char *codename = "queue_full";
    switch (code) {
    case SUB_BAD:
        codename = "bad_request";
        snprintf(msg, sizeof msg, "%s", s_bad_task(o));
        break;
    case SUB_LARGE:
        codename = "too_large";
        snprintf(msg, sizeof msg, "task %.*s: %zu bytes of args exceed the master's limit of %zu "
                 "bytes per message", (int)name_n, name, args_n, s->max_message);
        break;
    case SUB_UNKNOWN:
        codename = "unknown_task";
        snprintf(msg, sizeof msg, "no worker has announced task %.*s", (int)name_n, name);
        break;
    case SUB_FULL:
        snprintf(msg, sizeof msg, "the master holds %zu tasks (--max-queued %zu): retry later",
                 s->outstanding, s->max_queued);
        break;
    case SUB_FULL_RESULTS:
        if (cn)
            snprintf(msg, sizeof msg, "%zu tasks and results are pending for client %s "
                     "(--max-results %zu): acknowledge results, then retry",
                     cn->pending + cn->unsent.n + cn->sent.n, cn->key.name, s->max_results);
        else
            snprintf(msg, sizeof msg, "too many tasks and results are pending for this client "
                     "(--max-results %zu): acknowledge results, then retry", s->max_results);
        break;
    case SUB_STORE:
        codename = "store_failed";
        snprintf(msg, sizeof msg, "the master's store cannot write (%s): nothing was accepted; "
                 "retry later", dist__m_store_why(s));
        break;
    default:
        snprintf(msg, sizeof msg, "the master is out of memory: retry later");
        break;
    }
    dist__reject_t r = { .index = (uint32_t)index, .code = { codename, strlen(codename) },
                         .error = { msg, strlen(msg) } };
    r.has_id = o->type == MSGPACK_OBJECT_MAP && dist__get_id(o, "id", &r.id) == 0;
    dist__pack_reject(pk, &r);
}

/* ACCEPTED {ids, rejected[, unserved]} for a SUBMIT's tasks and their
 * codes, into s->out. */
static void s_pack_accepted(dist_master_t *s, const dist__mclient_t *cn,
                            const msgpack_object *items, size_t n, const uint8_t *codes)
{
    size_t accepted = 0;
    for (size_t i = 0; i < n; i++)
        accepted += codes[i] == SUB_OK;
    s->c.refused += n - accepted;
    /* The names of accepted tasks that no connected worker offers, once
     * each (a batch is mostly of one name: the last one is remembered). */
    dist__str_t unserved[UNSERVED_MAX];
    size_t nun = 0;
    const dist__mtq_t *last = NULL;
    for (size_t i = 0; i < n && nun < UNSERVED_MAX; i++) {
        const char *name;
        size_t len;
        if (codes[i] != SUB_OK || dist__get_str(&items[i], "task", &name, &len))
            continue;
        if (last && last->key.len == len && memcmp(last->key.name, name, len) == 0)
            continue;
        dist__mtq_t *q = dist__m_tq_find(s, name, len);
        last = q;
        if (!q || q->nws)
            continue;
        size_t j = 0;
        while (j < nun && (unserved[j].n != len || memcmp(unserved[j].s, name, len) != 0))
            j++;
        if (j == nun)
            unserved[nun++] = (dist__str_t){ q->key.name, q->key.len };
        q->told = true; /* a worker that joins is announced (dist__m_notices) */
    }
    dist_wire_buf_reset(s->out);
    msgpack_packer *pk = dist_wire_buf_packer(s->out);
    dist__pack_accepted_head(pk, accepted, nun > 0);
    for (size_t i = 0; i < n; i++) {
        dist__id_t id;
        if (codes[i] == SUB_OK && dist__get_id(&items[i], "id", &id) == 0)
            dist__pk_id(pk, &id);
    }
    dist__pack_rejected(pk, n - accepted);
    for (size_t i = 0; i < n; i++)
        if (codes[i] != SUB_OK)
            s_pack_rejection(s, pk, cn, &items[i], i, codes[i]);
    if (nun)
        dist__pack_names(pk, "unserved", unserved, nun);
}

void dist__m_submit(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root)
{
    const msgpack_object *items;
    size_t n;
    if (dist__parse_list(root, DIST__CMD_SUBMIT, &items, &n)) {
        dist__m_malformed(s, p, "SUBMIT needs tasks, an array of task maps");
        return;
    }
    if (n == 0 || n > DIST__MAX_BATCH) {
        dist__m_error(s, p, "bad_request", 0, "a SUBMIT carries 1 to %d tasks, not %zu",
                      DIST__MAX_BATCH, n);
        return;
    }
    dist__mclient_t *cn = p->cn;
    uint8_t *codes = malloc(n);
    if (!cn || !codes) {
        free(codes);
        dist__m_error(s, p, "queue_full", 0, "the master is out of memory: retry later");
        return;
    }
    bool room = dist__hmap_reserve(&s->tasks, n) == 0;
    uint64_t fresh = 0;
    dist__mtq_t *last = NULL;
    for (size_t i = 0; i < n; i++)
        codes[i] = (uint8_t)s_submit_one(s, cn, &items[i], room, &last, &fresh);
    if (fresh)
        dist__m_rate_add(s, fresh, 0);
    if (s->store) {
        /* The reply waits for the commit, with the SUBMIT it answers. If
         * it cannot wait, the client hears nothing and submits again
         * (idempotent) rather than hear "accepted" too early. */
        dist__inmsg_t *m = s->cur;
        if (m && m->root == root && dist__m_hold_accepted(s, p, m->body, codes) == 0) {
            m->body = NULL;
            return;
        }
        free(codes);
        return;
    }
    s_pack_accepted(s, cn, items, n, codes);
    free(codes);
    dist__m_send(s, p, DIST__CMD_ACCEPTED, s->out, NULL, NULL, 0);
}

void dist__m_accepted_pack(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root,
                           uint8_t *codes, bool recheck)
{
    const msgpack_object *items = NULL;
    size_t n = 0;
    dist__parse_list(root, DIST__CMD_SUBMIT, &items, &n); /* it was there when it came */
    for (size_t i = 0; recheck && i < n; i++) {
        dist__id_t id;
        if (codes[i] != SUB_OK || dist__get_id(&items[i], "id", &id))
            continue;
        const dist__mtask_t *t = s_task_find(s, &id);
        if (!t || (t->sflags & DIST__S_NEW))
            codes[i] = SUB_STORE;
    }
    s_pack_accepted(s, p->cn, items, n, codes);
}

/* ---- RESULTS, RETURN, ACK ----------------------------------------------------------------------- */

static void s_result(dist_master_t *s, dist__mpeer_t *w, const dist__result_t *r)
{
    bool final = dist__status_final(r->status);
    const void *bytes = r->status == DIST__ST_OK ? r->value : r->error;
    size_t len = r->status == DIST__ST_OK ? r->value_len : r->error_len;
    if (w) {
        if (r->status == DIST__ST_OK)
            w->done++;
        else
            w->failed++;
    }
    dist__mtask_t *t = s_task_find(s, &r->id);
    if (!t || t->state == DIST__T_DONE) {
        /* A late duplicate: a worker written off that woke up, or a lease
         * cancelled by another attempt's final result. The first result
         * stays the only one delivered. */
        s->c.late_results++;
        if (w)
            s_ghost_release(s, w, &r->id);
        return;
    }
    if (t->state == DIST__T_LEASED && w && t->worker == w && r->attempt == t->attempt) {
        if (final && !(r->status == DIST__ST_FAILED && t->o.retry_on_error)) {
            s_t_finish(s, t, r->status, bytes, len, 0);
        } else {
            char why[REASON_MAX];
            snprintf(why, sizeof why, "%s: %.*s", dist__status_name(r->status),
                     (int)(r->error_len < REASON_MAX ? r->error_len : REASON_MAX), r->error);
            s_t_requeue(s, t, why, 0, r->status == DIST__ST_RETRY ? r->retry_ms : 0);
        }
        return;
    }
    /* Not the answer of the current lease: the answer to a cancelled one
     * (its credit comes back), or one from a worker written off. */
    if (w)
        s_ghost_release(s, w, &r->id);
    if (!final) {
        s->c.late_results++;
        return; /* the task has already moved on to another attempt */
    }
    /* A final result completes the task after all (section 6.3); a newer
     * lease is cancelled silently and its result will be dropped. */
    s_t_finish(s, t, r->status, bytes, len, t->state == DIST__T_LEASED ? t->timer.at : 0);
}

void dist__m_results(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root)
{
    const msgpack_object *items;
    size_t n;
    if (dist__parse_list(root, DIST__CMD_RESULTS, &items, &n)) {
        if (p)
            dist__m_malformed(s, p, "RESULTS needs results, an array of result maps");
        else
            s->c.malformed++;
        return;
    }
    if (n > DIST__MAX_BATCH) {
        /* Beyond the announced limit nothing is applied: a correct worker
         * never sends it, and the work comes back by lease expiry. */
        if (p)
            dist__m_malformed(s, p, "a RESULTS carries at most %d results, not %zu",
                              DIST__MAX_BATCH, n);
        else
            s->c.malformed++;
        return;
    }
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        dist__result_t r;
        if (dist__parse_result(&items[i], true, &r)) {
            bad++;
            continue;
        }
        s_result(s, p, &r);
    }
    if (bad && p)
        dist__m_malformed(s, p, "%zu of %zu result maps lack id (bin16), attempt (u32 >= 1), "
                          "a known status, and value (bin) or error (str)", bad, n);
    else if (bad)
        s->c.malformed++;
}

/* The `ids` array of RETURN and ACK; answers malformed when it is not
 * there or holds more than max_batch ids (then none is applied). */
static bool s_ids(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root,
                  dist__cmd_t cmd, const msgpack_object **ids, size_t *n)
{
    if (dist__parse_list(root, cmd, ids, n)) {
        dist__m_malformed(s, p, "%s needs ids, an array of bin16", dist__cmd_name(cmd));
        return false;
    }
    if (*n > DIST__MAX_BATCH) {
        dist__m_malformed(s, p, "%s carries at most %d ids, not %zu", dist__cmd_name(cmd),
                          DIST__MAX_BATCH, *n);
        return false;
    }
    return true;
}

/* After RETURN or ACK applied its valid ids: the others make the message
 * malformed (counted and answered once). */
static void s_bad_ids(dist_master_t *s, dist__mpeer_t *p, const char *cmd, size_t bad, size_t n)
{
    if (bad)
        dist__m_malformed(s, p, "%s: %zu of %zu ids are not a bin of 16 bytes (skipped)", cmd,
                          bad, n);
}

void dist__m_return(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root)
{
    const msgpack_object *ids;
    size_t n;
    if (!s_ids(s, p, root, DIST__CMD_RETURN, &ids, &n))
        return;
    /* Backwards, each to the front: they keep their order. */
    size_t bad = 0;
    for (size_t i = n; i-- > 0;) {
        dist__id_t id;
        if (!dist__list_id(&ids[i], &id)) {
            bad++;
            continue;
        }
        dist__mtask_t *t = s_task_find(s, &id);
        if (t && t->state == DIST__T_LEASED && t->worker == p)
            s_t_return(s, t);
        else
            s_ghost_release(s, p, &id);
    }
    s_bad_ids(s, p, "RETURN", bad, n);
}

void dist__m_ack(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root)
{
    const msgpack_object *ids;
    size_t n;
    if (!s_ids(s, p, root, DIST__CMD_ACK, &ids, &n))
        return;
    dist__mclient_t *cn = p->cn;
    size_t bad = 0;
    for (size_t i = 0; i < n && cn; i++) {
        dist__id_t id;
        if (!dist__list_id(&ids[i], &id)) {
            bad++;
            continue;
        }
        uint64_t h = s_id_hash(s, &id);
        dist__mtask_t *t = dist__hmap_get(&s->tasks, h, id.b, sizeof id.b);
        if (t && t->state == DIST__T_DONE && t->cn == cn)
            s_t_acked(s, t, h);
    }
    s_bad_ids(s, p, "ACK", bad, n);
}

/* ---- the store: recovery and refused inserts ---------------------------------------------- */

int dist__m_restore_name(dist_master_t *s, const char *name, size_t len)
{
    return s_tq_get(s, name, len, false) ? 0 : DIST_ENOMEM;
}

/* The attempts of a stored task: its attempts column, or the reasons
 * text of a store written before it ("1: why; 2: why", no workers); then
 * the name of a DONE one. A damaged history is dropped, not the task. */
static void s_restore_hist(dist__mtask_t *t, const dist__srow_t *r)
{
    size_t off = 0;
    dist__attempt_info_t a;
    while (r->attempts && dist__m_hist_next(r->attempts, r->attempts_len, &off, &a))
        s_hist_add(t, a.attempt, a.worker.s, a.worker.n, a.reason.s, a.reason.n);
    for (const char *p = r->attempts ? NULL : r->reasons; p && *p;) {
        char *end;
        unsigned long k = strtoul(p, &end, 10);
        if (end == p || *end != ':')
            break;
        const char *text = end + (end[1] == ' ' ? 2 : 1);
        const char *next = strstr(text, "; ");
        while (next && !(next[2] >= '0' && next[2] <= '9'))
            next = strstr(next + 2, "; ");
        s_hist_add(t, (uint32_t)k, "", 0, text, next ? (size_t)(next - text) : strlen(text));
        p = next ? next + 2 : NULL;
    }
    if (r->done && !(r->task_len == 1 && r->task[0] == '-'))
        s_hist_keep_name(t, r->task, r->task_len);
}

void dist__m_opts_to_row(const dist__mopts_t *o, dist__sopts_t *r)
{
    r->priority = o->prio;
    r->max_attempts = o->max_attempts;
    r->backoff_ms = o->backoff_ms;
    r->backoff_factor = o->backoff_factor;
    r->backoff_max_ms = o->backoff_max_ms;
    r->retry_on_error = o->retry_on_error;
}

dist__mopts_t dist__m_opts_of_row(const dist__sopts_t *r)
{
    dist__mopts_t o = { .prio = (uint8_t)r->priority, .retry_on_error = r->retry_on_error,
                        .max_attempts = (uint16_t)r->max_attempts, .backoff_ms = r->backoff_ms,
                        .backoff_max_ms = r->backoff_max_ms,
                        .backoff_factor = (float)r->backoff_factor };
    return o;
}

int dist__m_restore_task(dist_master_t *s, const dist__srow_t *r)
{
    if (s_task_find(s, &r->id))
        return DIST_EINVAL; /* the same id twice: not a store this master wrote */
    if (dist__hmap_reserve(&s->tasks, 1) || dist__m_timer_reserve(s, 1))
        return DIST_ENOMEM;
    dist__mclient_t *cn = s_cn_get(s, r->client, r->client_len);
    /* A name missing from the names table is known again from now on. */
    dist__mtq_t *q = cn && !r->done ? s_tq_get(s, r->task, r->task_len, true) : NULL;
    dist__mtask_t *t = cn && (q || r->done) ? malloc(sizeof *t + r->len) : NULL;
    char *key = r->key && t ? strndup(r->key, DIST__KEY_MAX) : NULL;
    if (!t || (r->key && !key)) {
        free(key);
        free(t);
        if (cn)
            s_cn_maybe_free(s, cn);
        return DIST_ENOMEM;
    }
    memset(t, 0, sizeof *t);
    t->id = r->id;
    t->cn = cn;
    t->attempt = r->attempt;
    t->timeout_ms = r->timeout_ms;
    t->len = t->cap = (uint32_t)r->len;
    memcpy(t->data, r->data, r->len);
    t->key = key;
    s_restore_hist(t, r);
    t->o = dist__m_opts_of_row(&r->o);
    t->not_before_ms = r->not_before_ms;
    t->submitted_ms = r->submitted_ms;
    t->started_ms = r->started_ms;
    t->finished_ms = r->finished_ms;
    t->timer.idx = UINT32_MAX;
    t->srow = r->row;
    t->accepted_at = s->now; /* its latency counts from the recovery */
    dist__hmap_add(&s->tasks, s_id_hash(s, &t->id), t); /* reserved */
    if (r->done)
        t->status = (uint8_t)r->status;
    int64_t delay = r->not_before_ms ? r->not_before_ms - dist__m_unix_ms() : 0;
    if (delay > (int64_t)DIST__DELAY_MAX_MS)
        delay = (int64_t)DIST__DELAY_MAX_MS; /* a clock set back: still bounded */
    s_t_recover(s, t, q, r->done, r->leased, delay);
    return 0;
}

void dist__m_unsubmit(dist_master_t *s, dist__mtask_t *t)
{
    dist__mclient_t *cn = t->cn;
    dist__hmap_del(&s->tasks, s_id_hash(s, &t->id), t);
    s_t_unsubmit(s, t);
    s_cn_maybe_free(s, cn);
}

/* ---- teardown ------------------------------------------------------------------------------------ */

void dist__m_tasks_free(dist_master_t *s)
{
    for (size_t i = 0; i < s->tasks.cap; i++)
        if (s->tasks.slots[i].item)
            dist__m_task_free(s->tasks.slots[i].item);
    for (size_t i = 0; i < s->peers.cap; i++) {
        dist__mpeer_t *p = s->peers.slots[i].item;
        if (!p)
            continue;
        dist__dnode_t *d;
        while ((d = dist__dl_pop_front(&p->ghosts)))
            free(DIST__CONTAINER_OF(d, dist__mghost_t, node));
        free(p->names);
        p->names = NULL;
    }
    dist__dnode_t *d;
    while ((d = dist__dl_pop_front(&s->tqs))) {
        dist__mtq_t *q = DIST__CONTAINER_OF(d, dist__mtq_t, all);
        free(q->ws);
        free(q);
    }
    for (size_t i = 0; i < s->cn_index.cap; i++)
        free(s->cn_index.slots[i].item);
}

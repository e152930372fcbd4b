/*  master_check.c - a full consistency check of a master's state, for
 *  tests and the fuzzer (dist__m_check in master_internal.h).
 *
 *  Every task is in exactly the list its state says, every count matches
 *  what it counts, every index points back, the deadline heap is a heap,
 *  and the store's dirty lists hold each object once. It walks
 *  everything, so it is never called by the loop itself.
 */
#include "master_internal.h"

#include <stdlib.h>

/* Returns from dist__m_check with the broken invariant. */
#define CHECK(cond, what)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return what;                                                                           \
    } while (0)

static const char *s_check_tasks(dist_master_t *s)
{
    size_t outstanding = 0, waiting = 0;
    for (size_t i = 0; i < s->tasks.cap; i++) {
        const dist__mtask_t *t = s->tasks.slots[i].item;
        if (!t)
            continue;
        CHECK(!(t->sflags & DIST__S_GONE), "a forgotten task is still indexed");
        CHECK(t->attempt >= 1, "a task has attempt 0");
        CHECK(t->cn, "a task has no client name");
        CHECK(t->len <= t->cap || t->res, "a task's bytes overflow it");
        CHECK(!s->store || (t->srow > 0 && t->srow < s->next_row), "a task has a bad store row");
        CHECK(s->store || !t->sflags, "a task is marked without a store");
        CHECK(!t->sflags || (t->sflags & DIST__S_DIRTY), "a task is marked but not on the list");
        switch (t->state) {
        case DIST__T_QUEUED:
            CHECK(t->q && !t->worker, "a QUEUED task has no queue, or a worker");
            CHECK(t->timer.idx == UINT32_MAX, "a QUEUED task has a deadline");
            outstanding++;
            break;
        case DIST__T_LEASED:
            CHECK(t->q && t->worker, "a LEASED task has no queue or no worker");
            CHECK(t->timer.idx < s->timers.n && s->timers.v[t->timer.idx] == &t->timer,
                  "a LEASED task has no deadline");
            outstanding++;
            break;
        case DIST__T_DELAYED:
            CHECK(t->q && !t->worker && !dist__dn_linked(&t->node),
                  "a DELAYED task has no queue, or a worker, or a list");
            CHECK(t->timer.idx < s->timers.n && s->timers.v[t->timer.idx] == &t->timer &&
                      t->timer.kind == DIST__TIMER_DUE,
                  "a DELAYED task has no due time");
            outstanding++;
            break;
        case DIST__T_DONE:
            CHECK(!t->q && !t->worker, "a DONE task keeps its queue or worker");
            CHECK(t->status < DIST__ST_COUNT && dist__status_final(t->status),
                  "a DONE task has a status that is not final");
            waiting++;
            break;
        default:
            return "a task has no state";
        }
    }
    CHECK(outstanding == s->outstanding, "outstanding is not the number of QUEUED/LEASED tasks");
    CHECK(waiting == s->results_waiting, "results_waiting is not the number of DONE tasks");
    return NULL;
}

static const char *s_check_queues(dist_master_t *s)
{
    size_t total = 0;
    for (const dist__dnode_t *d = dist__dl_first(&s->tqs); d; d = dist__dl_next(&s->tqs, d)) {
        const dist__mtq_t *q = DIST__CONTAINER_OF(d, dist__mtq_t, all);
        CHECK(dist__m_tq_find(s, q->key.name, q->key.len) == q, "a task queue is not indexed");
        CHECK(!(q->sflags & DIST__S_GONE), "a forgotten task name is still listed");
        size_t n = 0;
        const dist__dnode_t *e;
        for (int p = 0; p < DIST__PRIORITY_LEVELS; p++) {
            const dist__dlist_t *l = &q->lv[p];
            size_t m = 0;
            for (e = dist__dl_first(l); e; e = dist__dl_next(l, e)) {
                const dist__mtask_t *t = DIST__CONTAINER_OF(e, dist__mtask_t, node);
                CHECK(t->state == DIST__T_QUEUED && t->q == q && t->o.prio == p,
                      "a ready list holds a foreign task");
                m++;
            }
            CHECK(m == l->n, "a ready list's count is wrong");
            CHECK(!!(q->mask & (1u << p)) == (m > 0), "a queue's priority mask is wrong");
            n += m;
        }
        CHECK(n == q->nready, "a queue's ready count is wrong");
        CHECK(q->refs == q->nready + q->in_flight + q->delayed,
              "a queue's refs are not ready + in flight + delayed");
        for (size_t i = 0; i < q->nws; i++) {
            const dist__mpeer_t *w = q->ws[i].w;
            CHECK(w->role == DIST__ROLE_WORKER && q->ws[i].wi < w->nnames &&
                      w->names[q->ws[i].wi].q == q && w->names[q->ws[i].wi].qi == i,
                  "a queue's worker does not point back at it");
        }
        total += q->refs;
    }
    CHECK(total == s->outstanding, "the queues' refs do not add up to outstanding");
    CHECK(s->tq_index.len == s->tqs.n, "task queue index and list differ");
    return NULL;
}

static const char *s_check_peers(dist_master_t *s)
{
    size_t workers = 0, clients = 0, leased = 0, outboxes = 0;
    for (size_t i = 0; i < s->peers.cap; i++) {
        const dist__mpeer_t *p = s->peers.slots[i].item;
        if (!p)
            continue;
        workers += p->role == DIST__ROLE_WORKER;
        clients += p->role == DIST__ROLE_CLIENT;
        CHECK(p->role == DIST__ROLE_WORKER || (!p->leased.n && !p->ghosts.n && !p->nnames),
              "a peer that is not a worker holds tasks");
        CHECK(p->held == p->leased.n + p->ghosts.n, "a worker's held is not leased + ghosts");
        for (const dist__dnode_t *e = dist__dl_first(&p->leased); e;
             e = dist__dl_next(&p->leased, e)) {
            const dist__mtask_t *t = DIST__CONTAINER_OF(e, dist__mtask_t, node);
            CHECK(t->state == DIST__T_LEASED && t->worker == p,
                  "a leased list holds a foreign task");
            leased++;
        }
        CHECK(!p->cn || p->role == DIST__ROLE_CLIENT, "a peer that is not a client has a name");
        CHECK(!p->cn || p->cn->peer == p, "a client's name belongs to another peer");
        size_t bytes = 0;
        for (const dist__dnode_t *e = dist__dl_first(&p->outbox); e;
             e = dist__dl_next(&p->outbox, e)) {
            const dist__mout_t *o = DIST__CONTAINER_OF(e, dist__mout_t, node);
            CHECK(!o->sub || dist__dn_linked(&p->holdn), "a held reply outlived its commit");
            bytes += o->len;
        }
        CHECK(bytes == p->outbox_bytes, "an outbox's byte count is wrong");
        outboxes += bytes;
    }
    CHECK(outboxes == s->outbox_total, "the outboxes' total byte count is wrong");
    CHECK(workers == s->nworkers && clients == s->nclients, "peer counts are wrong");
    CHECK(s->peers.len == s->npeers, "peer index and count differ");
    size_t in_flight = 0;
    for (const dist__dnode_t *d = dist__dl_first(&s->tqs); d; d = dist__dl_next(&s->tqs, d))
        in_flight += DIST__CONTAINER_OF(d, dist__mtq_t, all)->in_flight;
    CHECK(leased == in_flight, "leased lists and in_flight counts differ");
    return NULL;
}

static const char *s_check_clients(dist_master_t *s)
{
    size_t pending = 0, waiting = 0;
    for (size_t i = 0; i < s->cn_index.cap; i++) {
        const dist__mclient_t *cn = s->cn_index.slots[i].item;
        if (!cn)
            continue;
        CHECK(!cn->peer || cn->peer->cn == cn, "a client name's peer does not point back");
        for (int sent = 0; sent < 2; sent++) {
            const dist__dlist_t *l = sent ? &cn->sent : &cn->unsent;
            for (const dist__dnode_t *e = dist__dl_first(l); e; e = dist__dl_next(l, e)) {
                const dist__mtask_t *t = DIST__CONTAINER_OF(e, dist__mtask_t, node);
                CHECK(t->state == DIST__T_DONE && t->cn == cn && t->sent == sent,
                      "a result list holds a foreign task");
            }
        }
        pending += cn->pending;
        waiting += cn->unsent.n + cn->sent.n;
    }
    CHECK(pending == s->outstanding, "client names' pending do not add up to outstanding");
    CHECK(waiting == s->results_waiting, "client names' results do not add up");
    return NULL;
}

static const char *s_check_store(dist_master_t *s)
{
    size_t n = 0, limit = s->tasks.len + 1;
    const dist__mtask_t *last = NULL;
    for (const dist__mtask_t *t = s->sd_head; t; t = t->snext) {
        CHECK(t->sflags & DIST__S_DIRTY, "a task on the dirty list is not marked");
        if (!(t->sflags & DIST__S_GONE))
            CHECK(++n <= limit, "the dirty list holds a task twice");
        last = t;
    }
    CHECK(last == s->sd_tail, "the dirty list's tail is wrong");
    const dist__mtq_t *lq = NULL;
    for (const dist__mtq_t *q = s->sq_head; q; q = q->snext) {
        CHECK(q->sflags & DIST__S_DIRTY, "a task name on the dirty list is not marked");
        lq = q;
    }
    CHECK(lq == s->sq_tail, "the dirty names' tail is wrong");
    CHECK(s->store || (!s->sd_head && !s->sq_head && !s->held.n), "dirty lists without a store");
    return NULL;
}

static const char *s_check_timers(dist_master_t *s)
{
    const dist__heap_t *h = &s->timers;
    for (size_t i = 0; i < h->n; i++) {
        CHECK(h->v[i]->idx == i, "a deadline does not know its place in the heap");
        CHECK(i == 0 || h->v[(i - 1) / 2]->at <= h->v[i]->at, "the deadline heap is not a heap");
    }
    return NULL;
}

const char *dist__m_check(dist_master_t *s)
{
    const char *why;
    if ((why = s_check_tasks(s)) || (why = s_check_queues(s)) || (why = s_check_peers(s)) ||
        (why = s_check_clients(s)) || (why = s_check_store(s)) || (why = s_check_timers(s)))
        return why;
    return NULL;
}

/*  pool_manager.c - the pool's manager thread (see pool_internal.h): it
 *  hands pending work to the slots, files the results the workers send
 *  back, runs the callbacks, fails or requeues the items of a worker that
 *  died or timed out, and starts its replacement.
 *
 *  Contract: everything here runs on the manager thread with the pool's
 *  lock held (the lock is let go only while it sleeps on the result queue
 *  and while callbacks run), except the small helpers the header exports,
 *  which the caller's side also uses under the lock. The manager is the
 *  only reader of the result queue and the only writer of the slot
 *  queues; every item that reaches a slot is resolved exactly once:
 *  delivered, failed, or requeued and sent again.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "dist/error.h"
#include "pool_internal.h"
#include "task_internal.h"
#include "util_internal.h"
#include "value_internal.h"

#define MAX_INIT_FAILURES 3   /* processes dying in the initializer before the pool gives up */

/* ---- small helpers -------------------------------------------------------- */

/* The next unresolved item of r: its job and index. */
static struct job *s_rec_peek(const struct msg_rec *r, size_t *index)
{
    const struct run *ru = &r->runs[r->cur_run];
    *index = ru->start + r->cur_off;
    return ru->job;
}

static void s_rec_advance(struct msg_rec *r)
{
    r->resolved++;
    if (++r->cur_off == r->runs[r->cur_run].count) {
        r->cur_run++;
        r->cur_off = 0;
    }
}

static const char *s_sig_name(int sig)
{
    const char *n = sigabbrev_np(sig);
    return n ? n : "?";
}

/* Describes how a process ended, for error messages. */
static void s_describe_status(char *buf, size_t cap, int status)
{
    if (WIFSIGNALED(status))
        snprintf(buf, cap, "was killed by signal %d (SIG%s)", WTERMSIG(status),
                 s_sig_name(WTERMSIG(status)));
    else if (WIFEXITED(status))
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
    else
        snprintf(buf, cap, "ended (wait status %#x)", (unsigned)status);
}

static void *s_grow(void *ptr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return ptr;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *g = realloc(ptr, c * elem);
    if (g)
        *cap = c;
    return g;
}

int dist__pool_server_cmd(dist_pool_t *p, uint32_t op, uint32_t slot, uint32_t gen, int sig)
{
    struct fcmd c = { op, slot, gen, sig };
    ssize_t r;
    do
        r = send(p->ctl, &c, sizeof c, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r == (ssize_t)sizeof c ? 0 : -errno;
}

/* ---- the manager: jobs, delivery ------------------------------------------ */

void dist__pool_pending_add(dist_pool_t *p, struct job *j)
{
    if (j->pending)
        return;
    j->pending = true;
    j->pnext = NULL;
    j->pprev = p->pend_tail;
    if (p->pend_tail)
        p->pend_tail->pnext = j;
    else
        p->pend_head = j;
    p->pend_tail = j;
}

void dist__pool_pending_remove(dist_pool_t *p, struct job *j)
{
    if (!j->pending)
        return;
    if (j->pprev)
        j->pprev->pnext = j->pnext;
    else
        p->pend_head = j->pnext;
    if (j->pnext)
        j->pnext->pprev = j->pprev;
    else
        p->pend_tail = j->pprev;
    j->pending = false;
    j->pnext = j->pprev = NULL;
}

void dist__pool_finish(dist_pool_t *p, struct job *j)
{
    if (j->kind == J_MAP) {
        size_t idx = 0;
        int st = dist_results_status(j->m->rs, &idx);
        if (st) {
            char msg[DIST__TASK_ERR_MAX + 64];
            snprintf(msg, sizeof msg, "item %zu: %s", idx, j->m->rs->items[idx].data);
            j->result = dist__result_lend(dist__result_new(st, msg, strlen(msg)), true);
        } else {
            static const unsigned char nil = 0xc0;
            j->result = dist__result_lend(dist__result_new(0, &nil, 1), true);
        }
    }
    atomic_store_explicit(&j->finished, true, memory_order_release);
    p->active_jobs--;
    if (j->opts.callback || j->opts.error_callback) {
        j->cbnext = NULL;
        if (p->cb_tail)
            p->cb_tail->cbnext = j;
        else
            p->cb_head = j;
        p->cb_tail = j;
    } else {
        dist__pool_job_unref(j);
    }
}

static const char s_oom[] = "out of memory";

/* A result for one outcome; when there is no memory for it, the (smaller)
 * out-of-memory error in its place. */
static dist_result_t *s_result_new(int status, const char *data, size_t len)
{
    dist_result_t *r = dist__result_new(status, data, len);
    return r ? r : dist__result_new(DIST_ENOMEM, s_oom, sizeof s_oom - 1);
}

static void s_count_outcome(dist_pool_t *p, int status)
{
    if (status == 0)
        p->stats.completed++;
    else {
        p->stats.failed++;
        if (status == DIST_ECRASHED)
            p->stats.crashed++;
        else if (status == DIST_ETIMEDOUT)
            p->stats.timed_out++;
    }
}

/* Stores a map item's outcome in the job's results. `keep` is a
 * result-message buffer the value may point into: map results are stored
 * in place, and the buffer handed to the results container, once. Returns
 * true when the buffer was taken. */
static bool s_store_map_result(struct job *j, size_t index, int status, const char *data,
                               size_t len, void *keep)
{
    dist_result_t *r = &j->m->rs->items[index];
    if (status && len && data[len - 1] == 0)
        len--; /* messages arrive with their NUL */
    if (keep && (status == 0 || (len < 1 || data[len] == 0))) {
        if (dist__results_keep(j->m->rs, keep) == 0) {
            dist__result_init(r, status, data, len, 0);
            return true;
        }
    }
    /* Not from a kept buffer (a parent-made error), or the buffer could not
     * be kept: own a copy. */
    char *copy = malloc(len + 1);
    if (copy) {
        memcpy(copy, data, len);
        copy[len] = 0;
        dist__result_init(r, status, copy, len, DIST__R_OWNS_DATA);
    } else {
        dist__result_init(r, DIST_ENOMEM, s_oom, sizeof s_oom - 1, 0);
    }
    return false;
}

/* Stores the outcome of item `index` of job j. data is the value or the
 * message; `keep` is a result-message buffer the value may point into
 * (see s_store_map_result). Returns true when the buffer was taken. */
static bool s_deliver(dist_pool_t *p, struct job *j, size_t index, int status, const char *data,
                      size_t len, void *keep)
{
    bool taken = false;
    s_count_outcome(p, status);
    if (j->cancel_requested)
        p->ncancel--;
    if (!j->cancelled) {
        switch (j->kind) {
        case J_APPLY: /* kept by the handle, lent by dist_async_get */
            j->result = dist__result_lend(s_result_new(status, data, len), true);
            break;
        case J_MAP:
            taken = s_store_map_result(j, index, status, data, len, keep);
            break;
        case J_IMAP:
        case J_IMAPU:
            j->m->iout[index] = s_result_new(status, data, len);
            if (j->kind == J_IMAPU)
                j->m->uq[j->m->utail++] = index;
            break;
        }
    }
    atomic_fetch_add_explicit(&j->events, 1, memory_order_release);
    if (++j->resolved == j->n)
        dist__pool_finish(p, j);
    return taken;
}

/* An item the manager itself fails (crash, timeout, terminate, size). */
static void s_fail_item(dist_pool_t *p, struct job *j, size_t index, int code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void s_fail_item(dist_pool_t *p, struct job *j, size_t index, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    size_t n = dist__vformat(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s_deliver(p, j, index, code, msg, n, NULL);
}

static void s_requeue(dist_pool_t *p, struct job *j, size_t index)
{
    if (j->cancel_requested) { /* it never ran: dropped, not run again */
        s_fail_item(p, j, index, DIST_ECANCELLED, "task %s: cancelled before it started", j->name);
        return;
    }
    if (!j->m) { /* an apply job: its one item is pending again */
        j->next = 0;
        p->pending_items++;
        dist__pool_pending_add(p, j);
        return;
    }
    size_t *g = s_grow(j->m->retry, &j->m->retry_cap, j->nretry + 1, sizeof *g);
    if (!g) {
        s_fail_item(p, j, index, DIST_ENOMEM, "task %s: out of memory while requeueing it", j->name);
        return;
    }
    j->m->retry = g;
    j->m->retry[j->nretry++] = index;
    p->pending_items++;
    dist__pool_pending_add(p, j);
}

/* Fails every item a job has not dispatched yet. */
static void s_fail_pending(dist_pool_t *p, struct job *j, int code, const char *why)
{
    dist__pool_pending_remove(p, j);
    size_t rest = dist__pool_remaining(j);
    p->pending_items -= rest;
    /* The last failure may finish the job and drop the pool's reference:
     * hold one of our own until the loop is over. */
    atomic_fetch_add(&j->refs, 1);
    while (j->nretry)
        s_fail_item(p, j, j->m->retry[--j->nretry], code, "task %s: %s", j->name, why);
    while (j->next < j->n)
        s_fail_item(p, j, j->next++, code, "task %s: %s", j->name, why);
    dist__pool_job_unref(j);
}

static void s_free_recs(struct pslot *s)
{
    while (s->head) {
        struct msg_rec *r = s->head;
        s->head = r->next;
        free(r);
    }
    s->tail = NULL;
    s->nmsgs = 0;
}

/* Why a slot's worker is gone: it died on its own, or we stopped it. */
enum lost { L_DIED, L_TIMEOUT, L_CANCEL };

/* A slot's worker is gone (died, exited, or abandoned). Blame the item it
 * was running, run the rest again. `how` describes the end. */
static void s_slot_lost(dist_pool_t *p, struct pslot *s, uint64_t culprit, pid_t pid, const char *how,
                        enum lost why)
{
    const char *what = dist__pool_threads(p) ? "thread of process" : "process";
    for (struct msg_rec *r = s->head; r; r = r->next)
        while (r->resolved < r->n) {
            uint64_t seq = r->first_seq + r->resolved;
            size_t index;
            struct job *j = s_rec_peek(r, &index);
            s_rec_advance(r);
            if (seq == culprit && culprit) {
                if (why == L_TIMEOUT)
                    s_fail_item(p, j, index, DIST_ETIMEDOUT,
                                "task %s timed out after %d ms; pool %s %d was stopped", j->name,
                                j->timeout_ms, what, (int)pid);
                else if (why == L_CANCEL)
                    s_fail_item(p, j, index, DIST_ECANCELLED,
                                "task %s was cancelled while running; pool %s %d was stopped",
                                j->name, what, (int)pid);
                else
                    s_fail_item(p, j, index, DIST_ECRASHED,
                                "task %s: pool process %d %s while running it", j->name, (int)pid,
                                how);
            } else {
                s_requeue(p, j, index);
            }
        }
    s_free_recs(s);
    s->active = false;
    s->timeout_seq = 0;
    s->cancel_seq = 0;
}

void dist__pool_respawn(dist_pool_t *p, uint32_t slot)
{
    struct pslot *s = &p->slots[slot];
    s->gen++;
    s->pid = 0;
    if (dist__pool_threads(p)) {
        if (dist__pool_thread_spawn(p, slot) == 0)
            s->active = true;
    } else {
        atomic_store(&s->ws->cur_seq, 0);
        atomic_store(&s->ws->initialized, 0);
        if (dist__pool_server_cmd(p, C_SPAWN, slot, s->gen, 0) == 0)
            s->active = true;
    }
    if (s->active)
        p->stats.respawned++;
}

static void s_break(dist_pool_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_break(dist_pool_t *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->broken_msg, sizeof p->broken_msg, fmt, ap);
    va_end(ap);
    p->broken = true;
    while (p->pend_head)
        s_fail_pending(p, p->pend_head, DIST_ECRASHED, p->broken_msg);
}

static void s_on_died(dist_pool_t *p, const struct rmsg *h)
{
    struct pslot *s = &p->slots[h->slot];
    if (h->gen != s->gen || !s->active)
        return;
    uint64_t culprit = atomic_load(&s->ws->cur_seq);
    bool initialized = atomic_load(&s->ws->initialized) != 0;
    char how[96];
    s_describe_status(how, sizeof how, h->status);
    enum lost why = !culprit                     ? L_DIED
                    : culprit == s->timeout_seq  ? L_TIMEOUT
                    : culprit == s->cancel_seq   ? L_CANCEL
                                                 : L_DIED;
    /* Killed for a cancelled item that finished just before the signal
     * landed: the item it had started since is not to blame (it runs
     * again). */
    if (why == L_DIED && s->cancel_seq && WIFSIGNALED(h->status) && WTERMSIG(h->status) == SIGKILL)
        culprit = 0;
    s_slot_lost(p, s, culprit, h->pid, how, why);
    /* Whatever is left in the slot's queue was requeued above: drop it so
     * the next process does not run it a second time. */
    void *m;
    size_t n;
    while (dist_queue_get_nowait(s->q, &m, &n) == 0)
        free(m);
    if (p->state != P_RUNNING && p->state != P_CLOSED)
        return;
    if (p->stopping)
        return;
    if (!initialized) {
        if (++s->init_failures >= MAX_INIT_FAILURES) {
            s_break(p, "pool processes die before they are ready (the last one %s)", how);
            return;
        }
    } else {
        s->init_failures = 0;
    }
    dist__pool_respawn(p, h->slot);
}

static void s_on_results(dist_pool_t *p, unsigned char *buf, size_t len)
{
    struct rmsg h;
    memcpy(&h, buf, sizeof h);
    bool kept = false;
    if (h.slot >= (uint32_t)p->n)
        goto out;
    struct pslot *s = &p->slots[h.slot];
    if (h.gen != s->gen || !s->active)
        goto out; /* from a worker we have written off */
    if (h.pid && !s->pid)
        s->pid = h.pid;
    size_t off = sizeof h;
    for (int i = 0; i < h.count; i++) {
        struct ritem ri;
        if (off + sizeof ri > len)
            break;
        memcpy(&ri, buf + off, sizeof ri);
        off += sizeof ri;
        if (ri.len > len - off)
            break;
        const char *data = (const char *)buf + off;
        off += ri.len;
        struct msg_rec *r = s->head;
        if (!r)
            break;
        if (r->first_seq + r->resolved != h.first_seq + (uint64_t)i)
            continue; /* not the item we expect: ignore rather than misfile */
        size_t index, dlen = ri.len;
        struct job *j = s_rec_peek(r, &index);
        s_rec_advance(r);
        if (ri.status == DIST_ERETRY)
            j->retry_ms = dist__task_retry_ms(data, &dlen);
        if (s_deliver(p, j, index, ri.status, data, dlen, kept ? NULL : buf))
            kept = true;
        if (r->resolved == r->n) {
            s->head = r->next;
            if (!s->head)
                s->tail = NULL;
            s->nmsgs--;
            free(r);
        }
    }
out:
    if (!kept)
        free(buf);
}

/* ---- the manager: dispatch ------------------------------------------------- */
/* A message being built for one slot: what is picked so far (the items in
 * p->scratch, their runs in p->picks), and where the walk over the pending
 * jobs stands. Picking changes no job: the picks are taken out of their
 * jobs only once the slot's queue has accepted the message. */
struct pick {
    struct job *first;  /* the message's task and timeout are this job's */
    struct job *j;      /* the job being walked */
    size_t r_idx;       /* retries of j not picked yet (taken from the end) */
    size_t cursor;      /* the next never dispatched index of j */
    size_t name_len;
    size_t used;        /* bytes of p->scratch in use */
    size_t npick, nruns;
};

/* Items per message: a map's chunksize; for apply jobs, the live slots'
 * fair share of what is pending, between 1 and DIST__POOL_MAX_BATCH. */
static size_t s_batch_limit(const dist_pool_t *p, const struct job *first, int active)
{
    if (first->m)
        return first->m->chunksize;
    size_t share = p->pending_items / (size_t)(active ? active * DIST__POOL_PREFETCH : 1);
    return share < 1 ? 1 : share > DIST__POOL_MAX_BATCH ? DIST__POOL_MAX_BATCH : share;
}

/* Finds the next item to pick: j's retries first, then its unsent items,
 * then those of the next apply jobs that can share the message (same
 * function and timeout). False when nothing more fits this message. */
static bool s_pick_next(struct pick *k, size_t *index)
{
    for (;;) {
        struct job *j = k->j;
        if (k->r_idx > 0) {
            *index = j->m->retry[k->r_idx - 1];
            return true;
        }
        if (k->cursor < j->n) {
            *index = k->cursor;
            return true;
        }
        struct job *nx = j->pnext;
        if (j->kind != J_APPLY || !nx || nx->kind != J_APPLY || nx->fn != k->first->fn ||
            nx->timeout_ms != k->first->timeout_ms)
            return false;
        k->j = nx;
        k->r_idx = nx->nretry;
        k->cursor = nx->next;
    }
}

/* Fails an item whose arguments alone exceed the pool's limit. Called only
 * before anything was picked, so j is the first pending job and index its
 * next item. j may be gone afterwards. */
static void s_fail_oversized(dist_pool_t *p, struct job *j, size_t index, size_t alen)
{
    if (j->nretry)
        j->nretry--;
    else
        j->next++;
    p->pending_items--;
    if (dist__pool_remaining(j) == 0)
        dist__pool_pending_remove(p, j);
    s_fail_item(p, j, index, DIST_EMSGSIZE,
                "task %s: arguments of %zu bytes exceed the pool's limit of %zu", j->name, alen,
                p->max_message);
}

/* Adds item `index` of k->j to the message: its arguments to p->scratch,
 * the item to the last run when it continues it (the common case: the
 * next index of a map chunk), else to a new run. DIST_ENOMEM when either
 * cannot grow. */
static int s_pick_add(dist_pool_t *p, struct pick *k, size_t index, const void *args, size_t alen)
{
    size_t need = sizeof(struct titem) + alen;
    unsigned char *grown = s_grow(p->scratch, &p->scratch_cap, k->used + need, 1);
    if (!grown)
        return DIST_ENOMEM;
    p->scratch = grown;
    struct titem ti = { (uint32_t)alen };
    memcpy(p->scratch + k->used, &ti, sizeof ti);
    memcpy(p->scratch + k->used + sizeof ti, args, alen);
    k->used += need;
    struct run *last = k->nruns ? &p->picks[k->nruns - 1] : NULL;
    if (k->r_idx == 0 && last && last->job == k->j && !last->from_retry &&
        last->start + last->count == index) {
        last->count++;
    } else {
        struct run *grown_runs = s_grow(p->picks, &p->picks_cap, k->nruns + 1, sizeof *p->picks);
        if (!grown_runs)
            return DIST_ENOMEM;
        p->picks = grown_runs;
        p->picks[k->nruns++] = (struct run){ k->j, index, 1, k->r_idx > 0 };
    }
    k->npick++;
    if (k->r_idx > 0)
        k->r_idx--;
    else
        k->cursor++;
    return 0;
}

/* The slot took the message: take the picked items out of their jobs, and
 * remember what the slot holds (rec) behind what it held already. */
static void s_commit(dist_pool_t *p, struct pslot *s, struct msg_rec *rec, const struct pick *k)
{
    *rec = (struct msg_rec){ .first_seq = p->next_seq + 1, .n = k->npick, .nruns = k->nruns };
    memcpy(rec->runs, p->picks, k->nruns * sizeof(struct run));
    for (size_t i = 0; i < k->nruns; i++) {
        struct job *jj = p->picks[i].job;
        if (p->picks[i].from_retry)
            jj->nretry -= p->picks[i].count;
        else
            jj->next += p->picks[i].count;
        if (dist__pool_remaining(jj) == 0)
            dist__pool_pending_remove(p, jj);
    }
    p->pending_items -= k->npick;
    p->next_seq += k->npick;
    if (s->tail)
        s->tail->next = rec;
    else
        s->head = rec;
    s->tail = rec;
    s->nmsgs++;
}

/* Writes the message header and offers the message to the slot's queue
 * without waiting. 1 when sent, 0 when the queue is full or memory short
 * (the picks stay pending). */
static int s_send_picked(dist_pool_t *p, struct pslot *s, const struct pick *k)
{
    struct tmsg th = { M_TASK, (uint32_t)k->npick, k->first->fn, p->next_seq + 1,
                       k->first->timeout_ms, (uint32_t)k->name_len };
    memcpy(p->scratch, &th, sizeof th);
    memcpy(p->scratch + sizeof th, k->first->name, k->name_len);
    struct msg_rec *rec = malloc(sizeof *rec + k->nruns * sizeof(struct run));
    if (!rec)
        return 0;
    if (dist_queue_put_nowait(s->q, p->scratch, k->used)) {
        free(rec);
        return 0;
    }
    s_commit(p, s, rec, k);
    return 1;
}

/* Builds and sends one message to slot s from the pending work; `active`
 * is the number of live slots, which apply batches share. Returns 1 when
 * sent (or when an oversized item was failed and work remains), 0 when
 * there was nothing to send or no room. */
static int s_send_one(dist_pool_t *p, struct pslot *s, int active)
{
    struct job *first = p->pend_head;
    if (!first)
        return 0;
    size_t limit = s_batch_limit(p, first, active);
    struct pick k = { .first = first, .j = first, .r_idx = first->nretry, .cursor = first->next,
                      .name_len = strlen(first->name) };
    k.used = sizeof(struct tmsg) + k.name_len;
    size_t index;
    while (k.npick < limit && s_pick_next(&k, &index)) {
        struct job *j = k.j;
        const void *args = j->m ? j->m->items[index].data : j->args;
        size_t alen = j->m ? j->m->items[index].len : j->args_len;
        if (k.used + sizeof(struct titem) + alen >
            p->max_message + sizeof(struct tmsg) + DIST_TASK_NAME_MAX) {
            if (k.npick)
                break;
            s_fail_oversized(p, j, index, alen);
            return p->pend_head ? 1 : 0; /* the job may be gone: start over */
        }
        if (s_pick_add(p, &k, index, args, alen))
            return 0;
    }
    if (k.npick == 0)
        return 0;
    return s_send_picked(p, s, &k);
}

static void s_dispatch(dist_pool_t *p)
{
    if (!p->pend_head)
        return;
    /* Sending changes no slot's liveness: count the live ones once here,
     * not in every s_send_one (which made a dispatch O(n^2) in slots). */
    int active = 0;
    for (int i = 0; i < p->n; i++)
        active += p->slots[i].active;
    bool progress = true;
    while (progress && p->pend_head) {
        progress = false;
        for (int k = 0; k < p->n && p->pend_head; k++) {
            struct pslot *s = &p->slots[(p->rr + k) % p->n];
            if (s->active && s->nmsgs < DIST__POOL_PREFETCH && s_send_one(p, s, active))
                progress = true;
        }
        p->rr = (p->rr + 1) % p->n;
    }
}

/* Stops the worker of slot i, which runs item seq: a process is killed
 * (its death notice then fails the item, see s_on_died), a thread is
 * abandoned and replaced at once. */
static void s_stop_slot(dist_pool_t *p, uint32_t i, uint64_t seq, enum lost why)
{
    struct pslot *s = &p->slots[i];
    if (dist__pool_threads(p)) {
        dist__pool_abandon(s);
        s_slot_lost(p, s, seq, getpid(), why == L_TIMEOUT ? "timed out" : "cancelled", why);
        if (p->state == P_RUNNING || p->state == P_CLOSED)
            dist__pool_respawn(p, i);
    } else {
        dist__pool_server_cmd(p, C_KILL, i, s->gen, SIGKILL);
    }
}

/* The job of item seq if slot s holds it, else NULL. */
static struct job *s_slot_job(const struct pslot *s, uint64_t seq)
{
    for (const struct msg_rec *r = s->head; r; r = r->next) {
        if (seq < r->first_seq + r->resolved || seq >= r->first_seq + r->n)
            continue;
        size_t off = (size_t)(seq - r->first_seq);
        for (size_t k = 0; k < r->nruns; k++) {
            if (off < r->runs[k].count)
                return r->runs[k].job;
            off -= r->runs[k].count;
        }
    }
    return NULL;
}

/* Stops the workers running an item that was cancelled. An item still
 * waiting in its slot's queue cannot be taken back: it is stopped when it
 * starts (the manager looks every 10 ms while one waits). */
static void s_check_cancels(dist_pool_t *p)
{
    for (int i = 0; i < p->n; i++) {
        struct pslot *s = &p->slots[i];
        if (!s->active || !s->ws)
            continue;
        uint64_t seq = atomic_load_explicit(&s->ws->cur_seq, memory_order_acquire);
        if (!seq || seq == s->cancel_seq || seq == s->timeout_seq)
            continue;
        struct job *j = s_slot_job(s, seq);
        if (!j || !j->cancel_requested)
            continue;
        s->cancel_seq = seq;
        s_stop_slot(p, (uint32_t)i, seq, L_CANCEL);
    }
}

/* Kills (processes) or abandons (threads) workers past their item's
 * timeout, or running a cancelled item. Returns true while any running item has a timeout, so the
 * manager knows to wake up and look again. */
static bool s_check_timeouts(dist_pool_t *p)
{
    bool any = false;
    int64_t now = dist__now_coarse_ns(); /* the clock the workers stamp with */
    for (int i = 0; i < p->n; i++) {
        struct pslot *s = &p->slots[i];
        if (!s->active || !s->ws)
            continue;
        uint64_t seq = atomic_load_explicit(&s->ws->cur_seq, memory_order_acquire);
        int32_t t = atomic_load_explicit(&s->ws->timeout_ms, memory_order_relaxed);
        int64_t started = atomic_load_explicit(&s->ws->started_ns, memory_order_relaxed);
        if (!seq || t <= 0)
            continue;
        any = true;
        if (now - started < (int64_t)t * 1000000 || s->timeout_seq == seq || s->cancel_seq == seq)
            continue;
        if (atomic_load(&s->ws->cur_seq) != seq)
            continue; /* it moved on while we looked */
        s->timeout_seq = seq;
        s_stop_slot(p, (uint32_t)i, seq, L_TIMEOUT);
    }
    if (p->ncancel) {
        s_check_cancels(p);
        any = true; /* a cancelled item waiting in a slot is stopped once it starts */
    }
    return any;
}

/* ---- for the distributed worker ---------------------------------------------- */

uint32_t dist__pool_retry_ms(dist_async_t *a)
{
    struct job *j = (struct job *)a;
    if (!atomic_load_explicit(&j->finished, memory_order_acquire))
        return 0;
    return j->retry_ms; /* written before finished was set, never after */
}

int dist__pool_cancel(dist_pool_t *p, dist_async_t *a)
{
    struct job *j = (struct job *)a;
    if (!p || !j || j->kind != J_APPLY)
        return DIST_EINVAL;
    pthread_mutex_lock(&p->lock);
    int rc = 1;
    if (atomic_load(&j->finished) || j->cancel_requested || j->pool != p) {
        rc = DIST_ESTATE;
    } else if (j->pending) {
        s_fail_pending(p, j, DIST_ECANCELLED, "cancelled before it started");
        rc = 0;
    } else {
        j->cancel_requested = true;
        p->ncancel++;
        s_check_cancels(p);
    }
    /* The manager runs the callbacks, and looks for the cancelled item
     * every 10 ms from now on: wake it. */
    bool wake = rc >= 0 && p->sleeping && !p->wake_posted;
    p->wake_posted |= wake;
    pthread_mutex_unlock(&p->lock);
    if (wake)
        (void)dist_queue_put_nowait(p->resq, &(struct rmsg){ M_WAKE, 0, 0, 0, 0, 0, 0 },
                                    sizeof(struct rmsg)); /* full: the manager is awake anyway */
    return rc;
}

/* ---- the manager thread ------------------------------------------------------ */

static bool s_idle(const dist_pool_t *p) { return p->active_jobs == 0; }

static void s_fail_everything(dist_pool_t *p, const char *why)
{
    for (int i = 0; i < p->n; i++) {
        struct pslot *s = &p->slots[i];
        for (struct msg_rec *r = s->head; r; r = r->next)
            while (r->resolved < r->n) {
                size_t index;
                struct job *j = s_rec_peek(r, &index);
                s_rec_advance(r);
                s_fail_item(p, j, index, DIST_ECLOSED, "task %s: %s", j->name, why);
            }
        s_free_recs(s);
    }
    while (p->pend_head)
        s_fail_pending(p, p->pend_head, DIST_ECLOSED, why);
}

static void s_run_callbacks(dist_pool_t *p)
{
    while (p->cb_head) {
        struct job *j = p->cb_head;
        p->cb_head = NULL;
        p->cb_tail = NULL;
        pthread_mutex_unlock(&p->lock);
        while (j) {
            struct job *nx = j->cbnext;
            dist_result_t *r = j->result;
            if (r && r->status == 0 && j->opts.callback)
                j->opts.callback(r, j->opts.userdata);
            else if (r && r->status != 0 && j->opts.error_callback)
                j->opts.error_callback(r, j->opts.userdata);
            dist__pool_job_unref(j);
            j = nx;
        }
        pthread_mutex_lock(&p->lock);
    }
}

/* Graceful end of the workers after close(), once all work is done. */
static void s_begin_stop(dist_pool_t *p)
{
    p->stopping = true;
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].q)
            dist_queue_close(p->slots[i].q);
    if (!dist__pool_threads(p))
        dist__pool_server_cmd(p, C_STOP, 0, 0, 0);
}

static bool s_all_stopped(const dist_pool_t *p)
{
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].active)
            return false;
    return true;
}

/* Threads end on their own once their queues close; nothing to reap (the
 * fork server reaps processes first). */
static void s_release_threads(dist_pool_t *p)
{
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].active) {
            dist__pool_abandon(&p->slots[i]);
            p->slots[i].active = false;
        }
}

/* The manager's work before it sleeps: dispatch, timeouts, the graceful
 * stop after close(). Sets *timeouts while a running item has one.
 * Returns false when the manager is to leave its loop (terminating, or
 * every worker stopped after close). */
static bool s_manager_turn(dist_pool_t *p, bool *timeouts)
{
    if (p->state == P_TERMINATING)
        return false;
    if (!p->stopping)
        s_dispatch(p);
    *timeouts = s_check_timeouts(p);
    if (p->state == P_CLOSED && s_idle(p) && !p->stopping)
        s_begin_stop(p);
    if (p->stopping && dist__pool_threads(p))
        s_release_threads(p);
    if (p->stopping && s_all_stopped(p))
        return false;
    if (p->waiters)
        pthread_cond_broadcast(&p->done_cond);
    return true;
}

/* Handles one message from the result queue, and frees it (or hands it
 * to the results it holds). */
static void s_handle_message(dist_pool_t *p, unsigned char *buf, size_t len)
{
    struct rmsg h;
    if (len >= sizeof h) {
        memcpy(&h, buf, sizeof h);
        if (h.kind == M_RESULTS) {
            s_on_results(p, buf, len);
            return;
        }
        if (h.kind == M_DIED && h.slot < (uint32_t)p->n)
            s_on_died(p, &h);
        else if (h.kind == M_SPAWNED && h.slot < (uint32_t)p->n && h.gen == p->slots[h.slot].gen)
            p->slots[h.slot].pid = h.pid;
    }
    free(buf);
}

/* Sleeps on the result queue (without the lock) for up to wait_ms, then
 * handles what arrived and whatever else is already there: a bounded
 * number, so that timeouts and callbacks get their turn. */
static void s_receive(dist_pool_t *p, int wait_ms)
{
    p->sleeping = true;
    pthread_mutex_unlock(&p->lock);

    unsigned char *buf = NULL;
    size_t len = 0;
    int r = dist_queue_get(p->resq, (void **)&buf, &len, true, wait_ms);

    pthread_mutex_lock(&p->lock);
    p->sleeping = false;
    p->wake_posted = false;
    for (int k = 0; r == 0; k++) {
        s_handle_message(p, buf, len);
        buf = NULL;
        if (p->state == P_TERMINATING || k == 255)
            break;
        s_dispatch(p);
        r = dist_queue_get_nowait(p->resq, (void **)&buf, &len);
    }
}

/* The fork server may die (killed by someone): then so did the processes,
 * and no notice will ever come. Looked at every 100 ms. */
static void s_check_server(dist_pool_t *p)
{
    if (dist__pool_threads(p) || dist__now_ns() < p->next_server_check)
        return;
    p->next_server_check = dist__now_ns() + 100000000;
    if (dist__child_wait(&p->server, 0) == DIST_ETIMEDOUT || p->broken)
        return;
    s_break(p, "the pool's fork server died");
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].active)
            s_slot_lost(p, &p->slots[i], atomic_load(&p->slots[i].ws->cur_seq), 0,
                        "died with the fork server", L_DIED);
    s_fail_everything(p, "the pool's fork server died");
}

/* After the loop (terminating, or stopped after close; lock held): fails
 * what is left, waits for the fork server, and marks the pool done. */
static void s_manager_end(dist_pool_t *p)
{
    if (p->state == P_TERMINATING) {
        if (dist__pool_threads(p))
            for (int i = 0; i < p->n; i++)
                dist__pool_abandon(&p->slots[i]);
        s_fail_everything(p, "the pool was terminated");
        s_run_callbacks(p);
    }
    pthread_mutex_unlock(&p->lock);
    if (!dist__pool_threads(p)) {
        if (p->state == P_TERMINATING)
            dist__pool_server_cmd(p, C_EXIT, 0, 0, 0);
        dist__child_wait(&p->server, dist__deadline(DIST_FOREVER));
    }
    pthread_mutex_lock(&p->lock);
    p->state = P_DONE;
    for (int i = 0; i < p->n; i++)
        p->slots[i].active = false;
    pthread_cond_broadcast(&p->done_cond);
    pthread_mutex_unlock(&p->lock);
}

void *dist__pool_manager_main(void *arg)
{
    dist_pool_t *p = arg;
    pthread_mutex_lock(&p->lock);
    bool timeouts = false;
    while (s_manager_turn(p, &timeouts)) {
        s_receive(p, timeouts ? 10 : 200);
        s_check_server(p);
        s_run_callbacks(p);
    }
    s_manager_end(p);
    return NULL;
}

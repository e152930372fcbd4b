/*  master_store.c - what the master writes to its store, when, and what
 *  happens when it cannot (docs/PROTOCOL.md sections 6.4 and 10).
 *
 *  What is stored: the task names workers announced, every task that
 *  is not acknowledged yet - QUEUED (with its attempt, attempts and whether
 *  that attempt was leased) or DONE (with its result) - and the dead
 *  letters and tombstones of expired results (master_control.c says which
 *  changed). Worker sessions,
 *  leases' deadlines and ghosts, named queues, counters and rates are not:
 *  a restart starts them afresh.
 *
 *  When: the handlers and timers of a loop turn mark what they change
 *  (dist__m_store_mark); at the end of the turn one transaction writes
 *  each marked object once, in its current state (group commit). Only
 *  then do the replies that promise durability leave: ACCEPTED for new
 *  tasks waits in its client's outbox ("held"), and a result is sent to
 *  its client only after the commit that made it DONE, so a client never
 *  sees a task or a result that a restart could take back. Leases are
 *  marked when TASKS leaves and committed by the next turn: a lease lost
 *  in a crash only means the attempt number is not incremented for it.
 *
 *  Recovery (dist__m_store_open): the dead letters and tombstones come
 *  back first (a task that gives up in the recovery is then the newest
 *  dead letter); every stored task comes back; one whose
 *  attempt was leased may have run, so it counts like a worker's death
 *  (attempt + 1, or gave_up after max_attempts); DONE results wait for
 *  their client names; known names are known again.
 *
 *  Failures: a commit that fails (disk full, I/O error) is rolled back.
 *  The new tasks it held are forgotten and their SUBMITs answered with
 *  store_failed; every other change stays marked and is written by the
 *  next commit that works. Until then new tasks are refused with
 *  store_failed, everything in memory is served as usual (results still
 *  reach clients, though a crash now could send one again), and a commit
 *  is tried every STORE_RETRY_MS. Each transition is logged once.
 */
#include "master_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dist/error.h"

#define STORE_RETRY_MS 1000

/* ---- recovery ----------------------------------------------------------------------- */

static int s_on_name(void *ud, const char *name, size_t len)
{
    return dist__m_restore_name(ud, name, len);
}

static int s_on_task(void *ud, const dist__srow_t *r)
{
    return dist__m_restore_task(ud, r);
}

static int s_on_dead(void *ud, const dist__sdead_t *d)
{
    return dist__m_dead_restore(ud, d);
}

static int s_on_tomb(void *ud, int64_t row, const dist__id_t *id)
{
    return dist__m_tomb_restore(ud, row, id);
}

int dist__m_store_open(dist_master_t *s, const char *path, bool full_sync)
{
    char why[1024];
    s->store = dist__store_open(path, full_sync, why, sizeof why);
    if (!s->store) {
        int err = errno ? errno : EIO;
        dist__log(&s->log, DIST_LOG_ERROR, "%s", why);
        return -err;
    }
    int64_t max_row = 0;
    int rc = dist__store_load_control(s->store, s_on_dead, s_on_tomb, s, why, sizeof why);
    if (!rc)
        rc = dist__store_load(s->store, s_on_name, s_on_task, s, &max_row, why, sizeof why);
    if (rc) {
        dist__log(&s->log, DIST_LOG_ERROR, "%s", why);
        return rc;
    }
    s->next_row = max_row + 1;
    /* The tasks outlive this run: so does the instance the peers know. */
    char fresh[DIST__INSTANCE_LEN + 1];
    memcpy(fresh, s->instance, sizeof fresh);
    rc = dist__store_instance(s->store, fresh, s->instance);
    if (rc) {
        dist__log(&s->log, DIST_LOG_ERROR, "store %s: cannot keep the instance id: %s", path,
                  dist__store_error(s->store));
        return rc;
    }
    size_t requeued = 0;
    for (const dist__mtask_t *t = s->sd_head; t; t = t->snext)
        requeued += t->state == DIST__T_QUEUED;
    dist__log(&s->log, DIST_LOG_INFO,
              "store %s: %zu task(s) queued (%zu of them were leased: attempt + 1), %zu "
              "result(s) waiting, %zu task name(s) known, %zu dead letter(s), %zu expired "
              "id(s) (commits survive a kill of the master%s)",
              path, s->outstanding, requeued, s->results_waiting, s->tqs.n,
              dist__m_dead_count(s), dist__m_tomb_count(s),
              full_sync ? " and a power loss" : ", not a power loss");
    return 0;
}

void dist__m_store_close(dist_master_t *s)
{
    /* Objects the master already forgot live only on the dirty lists. */
    dist__mtask_t *t, *tn;
    for (t = s->sd_head; t; t = tn) {
        tn = t->snext;
        if (t->sflags & DIST__S_GONE)
            dist__m_task_free(t);
    }
    dist__mtq_t *q, *qn;
    for (q = s->sq_head; q; q = qn) {
        qn = q->snext;
        if (q->sflags & DIST__S_GONE)
            dist__m_tq_free_mem(q);
    }
    s->sd_head = s->sd_tail = NULL;
    s->sq_head = s->sq_tail = NULL;
    dist__store_close(&s->store);
}

/* ---- marking ------------------------------------------------------------------------ */

bool dist__m_store_name(dist_master_t *s, dist__mtq_t *q, bool add)
{
    if (!s->store)
        return false;
    if (!(q->sflags & DIST__S_DIRTY)) {
        q->snext = NULL;
        if (s->sq_tail)
            s->sq_tail->snext = q;
        else
            s->sq_head = q;
        s->sq_tail = q;
    }
    q->sflags |= (uint8_t)(DIST__S_DIRTY | (add ? DIST__S_NEW : DIST__S_GONE));
    return !add;
}

bool dist__m_store_refusing(const dist_master_t *s)
{
    return s->store && s->store_failed;
}

const char *dist__m_store_why(const dist_master_t *s)
{
    return s->store ? dist__store_error(s->store) : "no store";
}

/* ---- committing --------------------------------------------------------------------- */

/* The row of a task as it is now. */
static void s_row_of(const dist__mtask_t *t, dist__srow_t *r)
{
    memset(r, 0, sizeof *r);
    r->row = t->srow;
    r->id = t->id;
    r->client = t->cn->key.name;
    r->client_len = t->cn->key.len;
    /* A task DONE before its first commit no longer has its queue: its
     * history kept the name ("-" when memory ran out). */
    dist__str_t name = dist__m_task_name(t);
    r->task = name.n ? name.s : "-";
    r->task_len = name.n ? name.n : 1;
    r->done = t->state == DIST__T_DONE;
    r->leased = t->state == DIST__T_LEASED;
    r->attempt = t->attempt;
    r->timeout_ms = t->timeout_ms;
    r->status = (dist__status_t)t->status;
    r->data = dist__mtask_bytes(t);
    r->len = t->len;
    r->attempts = t->hist && t->hist->len ? t->hist->b : NULL;
    r->attempts_len = t->hist ? t->hist->len : 0;
    r->key = t->key;
    dist__m_opts_to_row(&t->o, &r->o);
    r->not_before_ms = t->state == DIST__T_DELAYED ? t->not_before_ms : 0;
    r->submitted_ms = t->submitted_ms;
    r->started_ms = t->started_ms;
    r->finished_ms = t->finished_ms;
}

/* Writes every marked object once, in its current state. */
static void s_write(dist_master_t *s)
{
    dist__store_t *st = s->store;
    for (const dist__mtq_t *q = s->sq_head; q; q = q->snext) {
        if ((q->sflags & (DIST__S_GONE | DIST__S_NEW)) == DIST__S_GONE)
            dist__store_name_del(st, q->key.name, q->key.len);
        else if (q->sflags == (DIST__S_DIRTY | DIST__S_NEW))
            dist__store_name_put(st, q->key.name, q->key.len);
    }
    for (const dist__mtask_t *t = s->sd_head; t; t = t->snext) {
        uint8_t f = t->sflags;
        if (f & DIST__S_GONE) {
            if (!(f & DIST__S_NEW))
                dist__store_task_del(st, t->srow);
        } else if (f & DIST__S_NEW) {
            dist__srow_t r;
            s_row_of(t, &r);
            dist__store_task_put(st, &r);
        } else if (t->state == DIST__T_DONE || (f & DIST__S_META) ||
                   t->state != DIST__T_LEASED) {
            dist__srow_t r;
            s_row_of(t, &r);
            if (t->state == DIST__T_DONE)
                dist__store_task_done(st, &r);
            else
                dist__store_task_meta(st, &r);
        } else {
            dist__store_task_lease(st, t->srow);
        }
    }
    dist__m_control_write(s);
}

/* After a commit that worked: nothing is marked any more, and what the
 * master forgot is freed. */
static void s_committed(dist_master_t *s)
{
    dist__mtask_t *t, *tn;
    for (t = s->sd_head; t; t = tn) {
        tn = t->snext;
        if (t->sflags & DIST__S_GONE)
            dist__m_task_free(t);
        else
            t->sflags = 0;
    }
    dist__mtq_t *q, *qn;
    for (q = s->sq_head; q; q = qn) {
        qn = q->snext;
        if (q->sflags & DIST__S_GONE)
            dist__m_tq_free_mem(q);
        else
            q->sflags = 0;
    }
    s->sd_head = s->sd_tail = NULL;
    s->sq_head = s->sq_tail = NULL;
    dist__m_control_committed(s);
}

/* After a commit that failed: new tasks that were never leased are
 * forgotten (their SUBMIT gets store_failed), everything else stays
 * marked for the next attempt. */
static void s_rolled_back(dist_master_t *s)
{
    dist__mtask_t *t, *tn, *prev = NULL;
    for (t = s->sd_head; t; t = tn) {
        tn = t->snext;
        if ((t->sflags & (DIST__S_NEW | DIST__S_GONE)) == DIST__S_NEW &&
            t->state == DIST__T_QUEUED)
            dist__m_unsubmit(s, t);
        if ((t->sflags & (DIST__S_NEW | DIST__S_GONE)) == (DIST__S_NEW | DIST__S_GONE)) {
            /* Never stored, now forgotten: nothing to write, ever. */
            if (prev)
                prev->snext = tn;
            else
                s->sd_head = tn;
            dist__m_task_free(t);
            continue;
        }
        prev = t;
    }
    s->sd_tail = prev;
}

static void s_commit(dist_master_t *s)
{
    unsigned inject = atomic_exchange(&s->fail_commits, 0);
    if (inject)
        dist__store_fail_next(s->store, inject, atomic_load(&s->fail_err));
    int rc;
    if (!s->sd_head && !s->sq_head && !dist__m_control_dirty(s)) {
        rc = dist__store_probe(s->store, s->now);
    } else if ((rc = dist__store_begin(s->store)) == 0) {
        s_write(s);
        rc = dist__store_commit(s->store);
    }
    if (rc == 0) {
        s_committed(s);
        if (s->store_failed) {
            s->store_failed = false;
            dist__log(&s->log, DIST_LOG_WARN,
                      "store %s: writable again after %.1f s; accepting new tasks",
                      dist__store_path(s->store), (double)(s->now - s->store_failed_at) / 1000.0);
        }
        return;
    }
    s_rolled_back(s);
    s->store_retry_at = s->now + STORE_RETRY_MS;
    if (!s->store_failed) {
        s->store_failed = true;
        s->store_failed_at = s->now;
        dist__log(&s->log, DIST_LOG_ERROR,
                  "store %s: cannot write: %s; new tasks are refused (store_failed) until it "
                  "can, retrying every %d ms; nothing already accepted is lost",
                  dist__store_path(s->store), dist__store_error(s->store), STORE_RETRY_MS);
    } else {
        dist__log(&s->log, DIST_LOG_DEBUG, "store %s: still cannot write: %s",
                  dist__store_path(s->store), dist__store_error(s->store));
    }
}

void dist__m_store_turn(dist_master_t *s)
{
    if (!s->store)
        return;
    bool dirty = s->sd_head || s->sq_head || dist__m_control_dirty(s);
    if (dirty && !s->store_failed)
        s_commit(s);
    else if (s->store_failed && s->now >= s->store_retry_at)
        s_commit(s); /* with nothing marked, a probe: new tasks wait for it */
    dist__m_release_held(s);
}

/*  client_map.c - maps: run one task over n argument arrays, keep up to a
 *  bounded number in flight, gather the results in input order (into a
 *  dist_results_t whose values live in a few large chunks) or report them
 *  as they complete.
 *
 *  Refusals: "queue_full" and "store_failed" are back-pressure: those
 *  items are submitted again after a backoff. "unknown_task" fails the
 *  item and every item not yet sent. Callbacks run in the calling thread
 *  with the client's mutex released.
 */
#include "client_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/error.h"
#include "util_internal.h"
#include "value_internal.h"

#define S_MAP_IN_FLIGHT 100000 /* most tasks of one map sent and not answered */
#define S_MAP_BATCHES 32       /* ... and at most this many SUBMITs of it at once */
#define S_ARENA_CHUNK ((size_t)256 << 10)
#define S_BACKOFF_MIN_MS 10
#define S_BACKOFF_MAX_MS 1000

static const char s_oom[] = "out of memory";

typedef struct {
    size_t index;
    int code;
    size_t off, len; /* in rbuf; off SIZE_MAX: the static "out of memory" */
} s_report_t;

struct dist__job {
    const char *task;
    size_t task_len;
    uint32_t task_timeout;
    const dist__submit_opts_t *so; /* every task's options (NULL: none) */
    const volatile sig_atomic_t *stop; /* set: cancel what is left and end */
    const dist_bytes_t *items;
    size_t n;
    dist__slot_t *slots;
    size_t next;       /* first item never submitted */
    size_t *retry;     /* items refused with "retry later" */
    size_t nretry, capretry;
    int64_t retry_at; /* when the retry list may be sent; 0: it is empty */
    int backoff_ms;
    size_t in_flight;  /* sent, not answered by a result */
    size_t done;
    size_t limit;      /* most in flight */
    /* Most in flight for now: shrinks to what the master holds after a
     * round of "full" refusals, grows by one per accepted task, so that a
     * small --max-queued sees a few refusals per round, not the map. */
    size_t window;
    bool shrink;       /* a round of refusals came: shrink at the next step */
    bool resubmitted;  /* a new master instance lost tasks of this map */
    bool enoent_told;
    bool failed;
    bool waiting;      /* nothing accepted yet: a silent master is "no master" */
    int stop_code;     /* set: every item not yet sent fails with it */
    char *stop_msg;
    /* in order: the results container and the arena its values live in */
    dist_results_t *results;
    char *arena;
    size_t arena_used, arena_cap;
    /* completion order: what arrived since the caller last reported */
    s_report_t *rep;
    size_t nrep, caprep;
    char *rbuf;
    size_t rlen, rcap;
    bool unordered;
    bool unreported; /* a result could not be queued for on_result (ENOMEM) */
    bool report_progress;
    size_t reported;
};

/* Copies a value or message into memory that lives as long as the
 * results container; NULL on ENOMEM. */
static char *s_arena_copy(dist__job_t *j, const char *data, size_t len)
{
    if (j->arena_cap - j->arena_used < len + 1) {
        size_t cap = len + 1 > S_ARENA_CHUNK ? len + 1 : S_ARENA_CHUNK;
        char *chunk = malloc(cap);
        if (!chunk)
            return NULL;
        if (dist__results_keep(j->results, chunk)) {
            free(chunk);
            return NULL;
        }
        j->arena = chunk;
        j->arena_used = 0;
        j->arena_cap = cap;
    }
    char *p = j->arena + j->arena_used;
    if (len)
        memcpy(p, data, len);
    p[len] = 0;
    j->arena_used += len + 1;
    return p;
}

void dist__job_deliver(dist__job_t *j, size_t index, int code, const char *data, size_t len)
{
    if (code && len && data[len - 1] == 0)
        len--;
    j->done++;
    if (j->slots[index].state == DIST__SL_SENT || j->slots[index].state == DIST__SL_ACCEPTED ||
        j->slots[index].state == DIST__SL_DONE)
        j->in_flight--;
    j->slots[index].state = DIST__SL_DONE;
    if (code)
        j->failed = true;
    if (!j->unordered) {
        char *p = s_arena_copy(j, data, len);
        if (p)
            dist__result_init(&j->results->items[index], code, p, len, 0);
        else
            dist__result_init(&j->results->items[index], DIST_ENOMEM, s_oom, sizeof s_oom - 1, 0);
        return;
    }
    s_report_t rep = { index, code, SIZE_MAX, 0 };
    if (j->rcap - j->rlen < len + 1) {
        size_t cap = j->rcap ? j->rcap : 4096;
        while (cap - j->rlen < len + 1)
            cap *= 2;
        char *grown = realloc(j->rbuf, cap);
        if (grown) {
            j->rbuf = grown;
            j->rcap = cap;
        }
    }
    if (j->rcap - j->rlen >= len + 1) {
        if (len)
            memcpy(j->rbuf + j->rlen, data, len);
        j->rbuf[j->rlen + len] = 0;
        rep.off = j->rlen;
        rep.len = len;
        j->rlen += len + 1;
    } else {
        rep.code = DIST_ENOMEM;
    }
    if (j->nrep == j->caprep) {
        size_t cap = j->caprep ? j->caprep * 2 : 256;
        s_report_t *grown = realloc(j->rep, cap * sizeof *grown);
        if (!grown) {
            j->unreported = true; /* the map ends with DIST_ENOMEM */
            return;
        }
        j->rep = grown;
        j->caprep = cap;
    }
    j->rep[j->nrep++] = rep;
}

static void s_job_fail_item(dist__job_t *j, size_t index, int code, const char *msg)
{
    j->slots[index].state = DIST__SL_SENT; /* counted as in flight by deliver */
    j->in_flight++;
    dist__job_deliver(j, index, code, msg, strlen(msg));
}

/* Puts an item on the retry list (it is not in flight any more); false
 * when there is no memory for it: the item has failed then. */
static bool s_retry_push(dist__job_t *j, dist__slot_t *s)
{
    s->state = DIST__SL_NEW;
    j->in_flight--;
    if (j->nretry == j->capretry) {
        size_t cap = j->capretry ? j->capretry * 2 : 64;
        size_t *grown = realloc(j->retry, cap * sizeof *grown);
        if (!grown) {
            s_job_fail_item(j, s->index, DIST_ENOMEM, s_oom);
            return false;
        }
        j->retry = grown;
        j->capretry = cap;
    }
    j->retry[j->nretry++] = s->index;
    return true;
}

/* ACCEPTED news for a map's slot: code 0 accepted, 1 "retry later",
 * otherwise the item fails with that code and the master's message. */
void dist__job_refused(dist_client_t *self, dist__job_t *j, dist__slot_t *s, int code,
                       const char *msg, size_t len)
{
    if (code == 0) {
        j->waiting = false;
        j->backoff_ms = 0;
        if (j->window < j->limit)
            j->window++;
        return;
    }
    if (code == DIST_ENOENT && j->resubmitted) {
        /* A new master instance to which no worker has offered the task
         * yet: it had accepted the task before, so wait for a worker. */
        if (!j->enoent_told)
            dist__log(&self->log, DIST_LOG_WARN, "the new master instance does not know task "
                      "%.*s yet: its items are submitted again until a worker offers it",
                      (int)j->task_len, j->task);
        j->enoent_told = true;
        code = 1;
    }
    if (code == 1) {
        j->shrink = true;
        /* One backoff step per round of refusals, not per refused item:
         * a SUBMIT of 10,000 tasks of which 9,996 are refused would
         * otherwise jump straight to the longest pause, and a map against
         * a small --max-queued would crawl at a few tasks per second. The
         * round starts when the retry list is empty. */
        if (j->nretry == 0) {
            j->backoff_ms = j->backoff_ms ? j->backoff_ms * 2 : S_BACKOFF_MIN_MS;
            if (j->backoff_ms > S_BACKOFF_MAX_MS)
                j->backoff_ms = S_BACKOFF_MAX_MS;
            j->retry_at = dist__now_ns() + (int64_t)j->backoff_ms * 1000000;
        }
        s_retry_push(j, s);
        return;
    }
    j->waiting = false;
    const char *text = len ? msg : dist_strerror(code);
    size_t tlen = len ? len : strlen(text);
    if (code == DIST_ENOENT && !j->stop_code) {
        /* No worker ever announced the task: the rest would be refused too. */
        j->stop_msg = strndup(text, tlen);
        j->stop_code = code;
        dist__log(&self->log, DIST_LOG_INFO, "master refused task %.*s: %.*s", (int)j->task_len,
                  j->task, (int)tlen, text);
    }
    dist__job_deliver(j, s->index, code, text, tlen);
}

void dist__job_resubmit(dist_client_t *self, dist__job_t *j, dist__slot_t *s)
{
    (void)self;
    j->resubmitted = true;
    if (s && s_retry_push(j, s)) {
        j->retry_at = 1; /* at once */
        j->backoff_ms = 0;
    }
}

/* Queues as many SUBMITs as the in-flight bound allows. */
static void s_job_step(dist_client_t *self, void *arg)
{
    dist__job_t *j = arg;
    if (j->stop_code) {
        const char *msg = j->stop_msg ? j->stop_msg : dist_strerror(j->stop_code);
        while (j->nretry)
            s_job_fail_item(j, j->retry[--j->nretry], j->stop_code, msg);
        while (j->next < j->n)
            s_job_fail_item(j, j->next++, j->stop_code, msg);
        j->retry_at = 0;
        return;
    }
    if (j->shrink) {
        j->shrink = false;
        j->window = j->in_flight ? j->in_flight : 1;
    }
    bool retry_ok = j->nretry && dist__now_ns() >= j->retry_at;
    /* During a backoff nothing is sent: the master said it is full. */
    if (j->in_flight >= j->window || (j->nretry && !retry_ok) || (!retry_ok && j->next >= j->n))
        return;
    /* Refill by whole batches: topping up a few tasks at a time as results
     * trickle in would send many tiny SUBMITs. */
    size_t room = j->window - j->in_flight, left = j->n - j->next + j->nretry;
    size_t want = self->max_batch < j->window / 2 ? self->max_batch : j->window / 2;
    if (room < want && room < left)
        return;
    size_t bytes_room = dist__body_room(self);
    size_t cap = self->max_batch;
    dist__slot_t *slots[64];
    const dist_bytes_t *args[64];
    dist__slot_t **ps = cap <= 64 ? slots : malloc(cap * sizeof *ps);
    const dist_bytes_t **pa = cap <= 64 ? args : malloc(cap * sizeof *pa);
    if (!ps || !pa) {
        j->stop_code = DIST_ENOMEM; /* the next step fails what is left */
        retry_ok = false;
        j->limit = j->window = 0;
    }
    while (j->in_flight < j->window && (retry_ok || j->next < j->n)) {
        size_t count = 0, bytes = 0;
        while (count < cap && j->in_flight + count < j->window) {
            bool from_retry = retry_ok && j->nretry;
            if (!from_retry && j->next >= j->n)
                break;
            size_t idx = from_retry ? j->retry[j->nretry - 1] : j->next;
            size_t tb = dist__task_bytes(j->task_len, j->items[idx].len);
            bool alone_too_large = tb > bytes_room;
            if (!alone_too_large && bytes + tb > bytes_room)
                break; /* for the next batch */
            if (from_retry)
                j->nretry--;
            else
                j->next++;
            if (alone_too_large) { /* it would never fit: fail it here */
                s_job_fail_item(j, idx, DIST_EMSGSIZE, DIST__TOO_LARGE_MSG);
                continue;
            }
            bytes += tb;
            dist__slot_t *s = &j->slots[idx];
            s->job = j;
            s->index = idx;
            ps[count] = s;
            pa[count] = &j->items[idx];
            count++;
        }
        if (!count)
            break;
        if (dist__batch_add(self, j, j->task, j->task_len, j->task_timeout, j->so, ps, pa,
                            count)) {
            for (size_t i = 0; i < count; i++)
                s_job_fail_item(j, ps[i]->index, DIST_ENOMEM, s_oom);
            break;
        }
        j->in_flight += count;
        if (!j->nretry) {
            retry_ok = false;
            j->retry_at = 0;
        }
    }
    if (ps != slots)
        free(ps);
    if (pa != args)
        free(pa);
}

static bool s_job_ready(dist_client_t *self, void *arg)
{
    (void)self;
    dist__job_t *j = arg;
    return j->done == j->n || (j->unordered && j->nrep) || (j->stop && *j->stop) ||
           (j->report_progress && j->done != j->reported);
}

/* Hands what arrived to the caller's callbacks, with the mutex released
 * (a callback may take its time, and other threads go on meanwhile). */
static void s_job_report(dist_client_t *self, dist__job_t *j, dist_progress_fn progress,
                         dist_result_fn on_result, void *userdata)
{
    if (j->unordered && j->nrep) {
        s_report_t *rep = j->rep;
        char *rbuf = j->rbuf;
        size_t nrep = j->nrep, caprep = j->caprep, rcap = j->rcap;
        j->rep = NULL;
        j->rbuf = NULL;
        j->nrep = j->caprep = j->rlen = j->rcap = 0;
        dist__client_unlock(self);
        for (size_t i = 0; i < nrep; i++) {
            dist_result_t r;
            if (rep[i].off == SIZE_MAX)
                dist__result_init(&r, DIST_ENOMEM, s_oom, sizeof s_oom - 1, 0);
            else
                dist__result_init(&r, rep[i].code, rbuf + rep[i].off, rep[i].len, 0);
            if (on_result)
                on_result(rep[i].index, &r, userdata);
            dist__result_clear(&r);
        }
        dist__client_lock(self);
        if (!j->rep) { /* keep the memory for the next round */
            j->rep = rep;
            j->caprep = caprep;
            rep = NULL;
        }
        free(rep);
        if (!j->rbuf) {
            j->rbuf = rbuf;
            j->rcap = rcap;
            rbuf = NULL;
        }
        free(rbuf);
    }
    if (progress && j->done != j->reported) {
        size_t done = j->done;
        j->reported = done;
        dist__client_unlock(self);
        progress(done, j->n, userdata);
        dist__client_lock(self);
    }
}

/* Every item without a result fails with `code`: the map ends. */
static void s_job_abandon(dist_client_t *self, dist__job_t *j, int code, const char *msg)
{
    for (size_t i = 0; i < j->n; i++) {
        dist__slot_t *s = &j->slots[i];
        if (s->state == DIST__SL_DONE)
            continue;
        dist__idmap_del(&self->ids, s);
        if (s->state == DIST__SL_NEW)
            s_job_fail_item(j, i, code, msg);
        else
            dist__job_deliver(j, i, code, msg, strlen(msg));
    }
    dist__batches_drop(self, j);
}

/* The map was told to stop: its tasks without a result are cancelled at
 * the master (those never sent are not sent) and fail with
 * DIST_ECANCELLED. SUBMITs not yet written to the socket are dropped
 * first, so that no CANCEL can overtake its task's SUBMIT. */
static void s_job_cancel(dist_client_t *self, dist__job_t *j)
{
    static const char msg[] = "cancelled: the map was stopped";
    dist__batches_drop(self, j);
    dist__id_t *ids = malloc((j->n ? j->n : 1) * sizeof *ids);
    size_t nids = 0;
    for (size_t i = 0; i < j->n; i++) {
        dist__slot_t *s = &j->slots[i];
        if (s->state == DIST__SL_DONE)
            continue;
        if (ids && (s->state == DIST__SL_SENT || s->state == DIST__SL_ACCEPTED))
            ids[nids++] = s->id;
        /* a result that still comes is acknowledged and dropped */
        dist__idmap_del(&self->ids, s);
    }
    j->nretry = 0;
    j->retry_at = 0;
    j->next = j->n;
    if (nids) {
        int rc = dist__cancel_ids(self, ids, nids,
                                  dist__deadline(self->connect_timeout_ms), NULL);
        if (rc)
            dist__log(&self->log, DIST_LOG_WARN, "cancelling %zu tasks of a stopped map: %s",
                      nids, dist_strerror(rc));
    }
    free(ids);
    for (size_t i = 0; i < j->n; i++)
        if (j->slots[i].state != DIST__SL_DONE) {
            if (j->slots[i].state == DIST__SL_NEW || j->slots[i].state == DIST__SL_REJECTED)
                s_job_fail_item(j, i, DIST_ECANCELLED, msg);
            else
                dist__job_deliver(j, i, DIST_ECANCELLED, msg, sizeof msg - 1);
        }
}

static int s_map(dist_client_t *self, const char *task, const dist_bytes_t *items, size_t n,
                 int task_timeout_ms, int timeout_ms, const dist__submit_opts_t *so,
                 const volatile sig_atomic_t *stop, dist_progress_fn progress,
                 dist_result_fn on_result, void *userdata, dist_results_t **results)
{
    if (results)
        *results = NULL;
    if (!self || !task || (n && !items) || !dist__name_ok(task, strlen(task)) ||
        (!on_result && !results))
        return DIST_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!items[i].data && items[i].len)
            return DIST_EINVAL;
    dist__job_t j = { .task = task,
                      .task_len = strlen(task),
                      .task_timeout = task_timeout_ms > 0 ? (uint32_t)task_timeout_ms : 0,
                      .so = so,
                      .stop = stop,
                      .items = items,
                      .n = n,
                      .waiting = true,
                      .unordered = !results,
                      .report_progress = progress != NULL };
    j.slots = calloc(n ? n : 1, sizeof *j.slots);
    if (!j.unordered)
        j.results = dist__results_new(n);
    if (!j.slots || (!j.unordered && !j.results)) {
        free(j.slots);
        dist_results_destroy(&j.results);
        return DIST_ENOMEM;
    }
    int64_t deadline = dist__deadline(timeout_ms);
    dist__client_lock(self);
    j.limit = self->max_batch * S_MAP_BATCHES;
    if (j.limit > S_MAP_IN_FLIGHT)
        j.limit = S_MAP_IN_FLIGHT;
    j.window = j.limit;
    dist__wait_t w = { .ready = s_job_ready, .step = s_job_step, .arg = &j, .live = &j.waiting,
                       .wake_ns = &j.retry_at };
    int rc = 0;
    bool stopped = false;
    while (j.done < n || j.nrep) {
        rc = dist__client_run(self, &w, deadline);
        if (rc == 0 && stop && *stop && !stopped) {
            /* What arrived first is reported as it is; the rest is cancelled. */
            stopped = true;
            s_job_report(self, &j, progress, on_result, userdata);
            s_job_cancel(self, &j);
        }
        if (rc == DIST_ENOMASTER && j.waiting)
            break;
        if (rc) {
            char msg[96];
            if (rc == DIST_ETIMEDOUT)
                snprintf(msg, sizeof msg, "no result within %d ms", timeout_ms);
            else
                snprintf(msg, sizeof msg, "%s", dist_strerror(rc));
            s_job_abandon(self, &j, rc == DIST_ENOMASTER ? DIST_ETIMEDOUT : rc, msg);
        }
        s_job_report(self, &j, progress, on_result, userdata);
        if (rc)
            break;
    }
    for (size_t i = 0; i < n; i++)
        dist__idmap_del(&self->ids, &j.slots[i]);
    dist__batches_drop(self, &j);
    dist__client_ack_now(self);
    dist__client_unlock(self);
    free(j.slots);
    free(j.retry);
    free(j.rep);
    free(j.rbuf);
    free(j.stop_msg);
    if (rc == DIST_ENOMASTER && j.waiting) {
        dist_results_destroy(&j.results);
        return DIST_ENOMASTER;
    }
    if (results)
        *results = j.results;
    if (rc == DIST_ENOMASTER)
        rc = DIST_ETIMEDOUT;
    if (!rc && j.unreported)
        rc = DIST_ENOMEM;
    if (!rc && stopped)
        rc = DIST_ECANCELLED;
    return rc ? rc : j.failed ? DIST_ETASK : 0;
}

int dist_client_map_opts(dist_client_t *self, const char *task, const dist_bytes_t *items,
                         size_t n, const dist_map_opts_t *o, dist_results_t **results)
{
    dist_map_opts_t d = { 0 };
    if (!o)
        o = &d;
    if (results)
        *results = NULL;
    if (o->unordered ? !o->on_result : !results)
        return DIST_EINVAL;
    int wait_ms = o->wait_ms ? o->wait_ms : DIST_FOREVER;
    dist__submit_opts_t so;
    if (dist__task_opts(&so, NULL, o->priority, o->delay_ms, o->at_ms, o->max_attempts,
                        o->backoff_ms, o->backoff_factor, o->backoff_max_ms, o->retry_on_error))
        return DIST_EINVAL;
    return s_map(self, task, items, n, o->task_timeout_ms, wait_ms,
                 dist__submit_opts_count(&so) ? &so : NULL, o->stop,
                 o->unordered ? NULL : o->progress,
                 o->unordered ? o->on_result : NULL, o->userdata, o->unordered ? NULL : results);
}

int dist_client_map(dist_client_t *self, const char *task, const dist_bytes_t *items, size_t n,
                    int task_timeout_ms, int timeout_ms, dist_progress_fn progress, void *userdata,
                    dist_results_t **results)
{
    if (!results)
        return DIST_EINVAL;
    return s_map(self, task, items, n, task_timeout_ms, timeout_ms, NULL, NULL, progress, NULL,
                 userdata, results);
}

int dist_client_map_unordered(dist_client_t *self, const char *task, const dist_bytes_t *items,
                              size_t n, int task_timeout_ms, int timeout_ms,
                              dist_result_fn on_result, void *userdata)
{
    if (!on_result)
        return DIST_EINVAL;
    return s_map(self, task, items, n, task_timeout_ms, timeout_ms, NULL, NULL, NULL, on_result,
                 userdata, NULL);
}

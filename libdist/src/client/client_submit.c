/*  client_submit.c - SUBMIT batches and their ACCEPTED answers, futures,
 *  and the calls built on them: submit, submit_wait, submit_batch, call.
 *
 *  A SUBMIT stays in the outbox, body and all, until every task in it is
 *  answered, so that it can be sent again after a RECONNECT. Waiting for
 *  ACCEPTED gives up with DIST_ENOMASTER when the master falls silent for
 *  the connect timeout.
 */
#include "client_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "dist/error.h"
#include "util_internal.h"
#include "value_internal.h"

#define S_TASK_OVERHEAD 64 /* bytes of a packed task map besides name and args */
#define S_BODY_SLACK 1024  /* room left in max_message for the rest of a body */
#define S_FULL_BACKOFF_MIN_MS 10   /* dist_client_submit_wait: first pause after queue_full */
#define S_FULL_BACKOFF_MAX_MS 500  /* and the longest, so a freed slot is seen soon */
#define S_PARKED_MS 250            /* a new master instance refused a task for now: retry */

static dist__batch_t *s_batch_find(dist_client_t *self, uint32_t seq)
{
    size_t lo = 0, hi = self->nbatches;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        /* seq wraps after 2^32 SUBMITs: compare by distance */
        int32_t d = (int32_t)(self->batches[mid].seq - seq);
        if (d == 0)
            return &self->batches[mid];
        if (d < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void s_batch_remove(dist_client_t *self, dist__batch_t *b)
{
    free(b->body);
    size_t i = (size_t)(b - self->batches);
    memmove(b, b + 1, (self->nbatches - i - 1) * sizeof *b);
    self->nbatches--;
}

/* One task of a SUBMIT was answered (accepted, rejected, or its result
 * came first). */
void dist__batch_answered(dist_client_t *self, dist__slot_t *s)
{
    dist__batch_t *b = s_batch_find(self, s->batch);
    if (b && --b->pending == 0)
        s_batch_remove(self, b);
}

void dist__batches_drop(dist_client_t *self, const void *owner)
{
    for (size_t i = 0; i < self->nbatches;)
        if (self->batches[i].owner == owner)
            s_batch_remove(self, &self->batches[i]);
        else
            i++;
}

bool dist__batches_of(const dist_client_t *self, const void *owner)
{
    for (size_t i = 0; i < self->nbatches; i++)
        if (self->batches[i].owner == owner)
            return true;
    return false;
}

/* Bytes a task takes in a SUBMIT body (an upper bound). */
size_t dist__task_bytes(size_t task_len, size_t args_len)
{
    return S_TASK_OVERHEAD + task_len + args_len;
}

size_t dist__body_room(const dist_client_t *self)
{
    return self->max_message > 2 * S_BODY_SLACK ? self->max_message - S_BODY_SLACK
                                                : self->max_message / 2;
}

/* Packs one SUBMIT of `count` tasks of one name, gives each slot a random
 * id, puts the slots in the id map and the body in the outbox. 0 or
 * DIST_ENOMEM (nothing changed then). */
int dist__batch_add(dist_client_t *self, const void *owner, const char *task, size_t task_len,
                    uint32_t timeout_ms, const dist__submit_opts_t *so, dist__slot_t **slots,
                    const dist_bytes_t **args, size_t count)
{
    if (self->nbatches == self->capbatches) {
        size_t cap = self->capbatches ? self->capbatches * 2 : 16;
        dist__batch_t *grown = realloc(self->batches, cap * sizeof *grown);
        if (!grown)
            return DIST_ENOMEM;
        self->batches = grown;
        self->capbatches = cap;
    }
    if (dist__idmap_reserve(&self->ids, count))
        return DIST_ENOMEM;
    dist__id_t *ids = malloc(count * sizeof *ids);
    dist_wire_buf_t *buf = dist_wire_buf_new(0);
    if (!ids || !buf) {
        free(ids);
        dist_wire_buf_destroy(&buf);
        return DIST_ENOMEM;
    }
    /* One getrandom for the whole batch: 16 random bytes per id, as the
     * protocol asks, without a system call per task. */
    size_t got = 0, want = count * sizeof *ids;
    while (got < want) {
        ssize_t r = getrandom((uint8_t *)ids + got, want - got, 0);
        if (r < 0 && errno != EINTR) {
            free(ids);
            dist_wire_buf_destroy(&buf);
            return -errno;
        }
        got += r > 0 ? (size_t)r : 0;
    }
    uint32_t seq = self->next_seq++;
    msgpack_packer *pk = dist_wire_buf_packer(buf);
    dist__pack_list_head(pk, DIST__CMD_SUBMIT, count);
    for (size_t i = 0; i < count; i++) {
        dist__slot_t *s = slots[i];
        if (!s->fixed_id)
            s->id = ids[i];
        dist__task_t t = { .id = s->id, .task = task, .task_len = task_len,
                           .args = args[i]->data, .args_len = args[i]->len,
                           .timeout_ms = timeout_ms };
        dist__pack_submit_task(pk, &t, so);
    }
    free(ids);
    if (dist_wire_buf_status(buf)) {
        dist_wire_buf_destroy(&buf);
        return DIST_ENOMEM;
    }
    size_t len;
    void *body = dist_wire_buf_release(buf, &len);
    dist_wire_buf_destroy(&buf);
    for (size_t i = 0; i < count; i++) {
        slots[i]->state = DIST__SL_SENT;
        slots[i]->batch = seq;
        dist__idmap_put(&self->ids, slots[i]);
    }
    self->batches[self->nbatches++] = (dist__batch_t){ .seq = seq, .pending = (uint32_t)count,
                                                   .owner = owner, .body = body, .len = len };
    dist__client_wake(self);
    return 0;
}

typedef struct {
    int tag; /* the owner of this call's batches is the struct's address */
} s_call_t;

static bool s_call_ready(dist_client_t *self, void *arg) { return !dist__batches_of(self, arg); }

static void s_future_free(dist_future_t *f)
{
    if (f) {
        dist__result_free(&f->result);
        free(f->task);
        free(f);
    }
}

/* Submits futures again (a new master instance lost them), in SUBMITs of
 * consecutive futures of one name, timeout and owner. A future that
 * cannot be queued (ENOMEM) is parked and tried again later. */
static void s_futures_submit(dist_client_t *self, dist_future_t **fs, size_t n)
{
    size_t room = dist__body_room(self);
    dist__slot_t **ps = malloc(self->max_batch * sizeof *ps);
    const dist_bytes_t **pa = malloc(self->max_batch * sizeof *pa);
    for (size_t i = 0; i < n;) {
        dist_future_t *first = fs[i];
        size_t count = 0, bytes = 0;
        while (i < n && ps && pa && count < self->max_batch) {
            dist_future_t *f = fs[i];
            size_t tb = dist__task_bytes(f->task_len, f->args.len);
            /* A future with task options goes alone: its key is its own. */
            if (count && (f->owner != first->owner || f->timeout_ms != first->timeout_ms ||
                          dist__submit_opts_count(&f->so) ||
                          dist__submit_opts_count(&first->so) ||
                          f->task_len != first->task_len ||
                          memcmp(f->task, first->task, f->task_len) != 0 || bytes + tb > room))
                break;
            bytes += tb;
            f->resubmitted = true;
            ps[count] = &f->slot;
            pa[count++] = &f->args;
            i++;
        }
        if (!count) { /* no memory for the lists: later */
            first->resubmitted = true;
            dist__future_park(self, first, DIST_EFULL, true);
            i++;
        } else if (dist__batch_add(self, first->owner, first->task, first->task_len,
                                   first->timeout_ms, &first->so, ps, pa, count)) {
            for (size_t j = i - count; j < i; j++)
                dist__future_park(self, fs[j], DIST_EFULL, true);
        }
    }
    free(ps);
    free(pa);
}

bool dist__future_park(dist_client_t *self, dist_future_t *f, int code, bool retry)
{
    if (!f->resubmitted || !(retry || code == DIST_ENOENT) || f->parked)
        return f->parked;
    f->slot.state = DIST__SL_NEW;
    f->parked = true;
    f->parked_next = self->parked;
    self->parked = f;
    if (!self->parked_at)
        self->parked_at = dist__now_ns() + (int64_t)S_PARKED_MS * 1000000;
    return true;
}

void dist__future_unpark(dist_client_t *self, dist_future_t *f)
{
    if (!f->parked)
        return;
    for (dist_future_t **p = &self->parked; *p; p = &(*p)->parked_next)
        if (*p == f) {
            *p = f->parked_next;
            break;
        }
    f->parked = false;
    f->parked_next = NULL;
    if (!self->parked)
        self->parked_at = 0;
}

void dist__parked_submit(dist_client_t *self, int64_t now)
{
    if (!self->parked || now < self->parked_at)
        return;
    size_t n = 0;
    for (dist_future_t *f = self->parked; f; f = f->parked_next)
        n++;
    dist_future_t **fs = malloc(n * sizeof *fs);
    if (!fs) {
        self->parked_at = now + (int64_t)S_PARKED_MS * 1000000;
        return;
    }
    n = 0;
    while (self->parked) {
        dist_future_t *f = self->parked;
        self->parked = f->parked_next;
        f->parked = false;
        f->parked_next = NULL;
        fs[n++] = f;
    }
    self->parked_at = 0;
    s_futures_submit(self, fs, n);
    free(fs);
}

void dist__resubmit_all(dist_client_t *self)
{
    size_t n = self->ids.n, nf = 0;
    dist__slot_t **lost = malloc((n ? n : 1) * sizeof *lost);
    dist_future_t **fs = malloc((n ? n : 1) * sizeof *fs);
    if (!lost || !fs) {
        free(lost);
        free(fs);
        dist__log(&self->log, DIST_LOG_ERROR, "out of memory: the tasks a new master lost "
                  "are not submitted again");
        return;
    }
    size_t all = dist__idmap_all(&self->ids, lost, n);
    n = 0;
    for (size_t i = 0; i < all; i++) {
        dist__slot_t *s = lost[i];
        if (s->state != DIST__SL_ACCEPTED) {
            /* Sent, not answered: its SUBMIT goes again as it is, to a
             * master that may not know its task yet. */
            if (s->job)
                dist__job_resubmit(self, s->job, NULL);
            else
                ((dist_future_t *)s)->resubmitted = true;
            continue;
        }
        n++;
        dist__idmap_del(&self->ids, s);
        s->state = DIST__SL_NEW;
        if (s->job)
            dist__job_resubmit(self, s->job, s);
        else
            fs[nf++] = (dist_future_t *)s;
    }
    s_futures_submit(self, fs, nf);
    /* Parked futures go at once too: a new master, a new chance. */
    if (self->parked)
        self->parked_at = 1;
    if (n)
        dist__log(&self->log, DIST_LOG_WARN, "master %s is a new instance (%s, was %s): it lost "
                  "the %zu tasks of this client it had accepted; submitting them again",
                  self->conn.endpoint, self->conn.instance, self->conn.old_instance, n);
    free(lost);
    free(fs);
}

/* Submits n tasks and waits for their ACCEPTED. Rejected futures are kept
 * (holding the master's message as their result) when keep_rejected. */
static long s_submit(dist_client_t *self, const char *task, const dist_bytes_t *items, size_t n,
                     int task_timeout_ms, const dist__submit_opts_t *so, dist_future_t **futures,
                     int *errors, bool keep_rejected)
{
    dist__id_t fixed;
    bool has_key = so && so->key.n;
    if (!self || !task || !futures || (n && !items) || !dist__name_ok(task, strlen(task)) ||
        (has_key && (n != 1 || dist__id_from_key(so->key.s, so->key.n, &fixed))))
        return DIST_EINVAL;
    for (size_t i = 0; i < n; i++) {
        futures[i] = NULL;
        if (errors)
            errors[i] = 0;
    }
    size_t task_len = strlen(task);
    uint32_t tt = task_timeout_ms > 0 ? (uint32_t)task_timeout_ms : 0;
    s_call_t call;
    for (size_t i = 0; i < n; i++) {
        futures[i] = calloc(1, sizeof **futures);
        /* The name and arguments stay with the future until its result:
         * a new master instance that lost the task is given it again. */
        char *keep = futures[i] ? malloc(task_len + 1 + items[i].len) : NULL;
        if (!keep) {
            free(futures[i]);
            for (size_t k = 0; k < i; k++)
                s_future_free(futures[k]), futures[k] = NULL;
            return DIST_ENOMEM;
        }
        memcpy(keep, task, task_len + 1);
        if (items[i].len)
            memcpy(keep + task_len + 1, items[i].data, items[i].len);
        *futures[i] = (dist_future_t){ .client = self, .task = keep, .task_len = task_len,
                                       .args = { keep + task_len + 1, items[i].len },
                                       .timeout_ms = tt, .owner = &call };
        if (so)
            futures[i]->so = *so;
        if (has_key) {
            memcpy(futures[i]->key, so->key.s, so->key.n);
            futures[i]->so.key.s = futures[i]->key;
            futures[i]->slot.id = fixed;
            futures[i]->slot.fixed_id = true;
        }
    }
    dist__client_lock(self);
    /* A caller's id this client still waits for: a second future of it
     * would never complete (the master runs the task once and the result
     * goes to the first). */
    if (has_key && dist__idmap_find(&self->ids, &fixed)) {
        dist__client_unlock(self);
        s_future_free(futures[0]);
        futures[0] = NULL;
        if (errors)
            errors[0] = DIST_ESTATE;
        return DIST_ESTATE;
    }
    size_t room = dist__body_room(self);
    dist__slot_t **ps = malloc(self->max_batch * sizeof *ps);
    const dist_bytes_t **pa = malloc(self->max_batch * sizeof *pa);
    int rc = ps && pa ? 0 : DIST_ENOMEM;
    for (size_t i = 0; i < n && !rc;) {
        size_t count = 0, bytes = 0;
        for (; i < n && count < self->max_batch; i++) {
            size_t tb = dist__task_bytes(task_len, items[i].len);
            if (tb > room) {
                futures[i]->slot.state = DIST__SL_REJECTED;
                futures[i]->result = dist__result_lend(
                    dist__result_new(DIST_EMSGSIZE, DIST__TOO_LARGE_MSG,
                                     sizeof DIST__TOO_LARGE_MSG - 1), true);
                continue;
            }
            if (bytes + tb > room)
                break;
            bytes += tb;
            ps[count] = &futures[i]->slot;
            pa[count] = &items[i];
            count++;
        }
        if (count)
            rc = dist__batch_add(self, &call, task, task_len, tt, so, ps, pa, count);
        /* A future's id is chosen once: given again to a new master
         * instance (or after a refusal) it stays the one the caller may
         * already have from dist_future_id. */
        for (size_t k = 0; k < count && !rc; k++)
            ps[k]->fixed_id = true;
    }
    free(ps);
    free(pa);
    if (!rc) {
        bool live = true;
        dist__wait_t w = { .ready = s_call_ready, .arg = &call, .live = &live };
        rc = dist__client_run(self, &w, INT64_MAX);
    }
    long accepted = 0;
    for (size_t i = 0; i < n; i++) {
        dist_future_t *f = futures[i];
        f->owner = NULL;
        if (rc) {
            dist__idmap_del(&self->ids, &f->slot);
            dist__future_unpark(self, f);
            continue;
        }
        /* Parked: accepted by an earlier master instance, to be given to
         * the new one again. */
        if (f->slot.state == DIST__SL_ACCEPTED || f->slot.state == DIST__SL_DONE || f->parked ||
            (f->resubmitted && f->slot.state == DIST__SL_SENT)) {
            accepted++;
            continue;
        }
        int code = f->result ? f->result->status : DIST_EREFUSED;
        if (errors)
            errors[i] = code;
        if (!keep_rejected) {
            s_future_free(f);
            futures[i] = NULL;
        }
    }
    if (rc)
        dist__batches_drop(self, &call);
    dist__client_unlock(self);
    if (rc) {
        for (size_t i = 0; i < n; i++)
            s_future_free(futures[i]), futures[i] = NULL;
        return rc;
    }
    return accepted;
}

long dist_client_submit_batch(dist_client_t *self, const char *task, const dist_bytes_t *items,
                              size_t n, int task_timeout_ms, dist_future_t **futures, int *errors)
{
    return s_submit(self, task, items, n, task_timeout_ms, NULL, futures, errors, false);
}

/* One task, with options or not: the future, or NULL with errno. */
static dist_future_t *s_submit_one(dist_client_t *self, const char *task, const void *args,
                                   size_t len, int task_timeout_ms, const dist__submit_opts_t *so)
{
    dist_bytes_t item = { args, len };
    dist_future_t *f = NULL;
    int err = 0;
    long rc = s_submit(self, task, &item, 1, task_timeout_ms, so, &f, &err, false);
    if (rc < 0 || !f) {
        errno = -(int)(rc < 0 ? rc : err ? err : DIST_EREFUSED);
        return NULL;
    }
    return f;
}

dist_future_t *dist_client_submit(dist_client_t *self, const char *task, const void *args,
                                  size_t len, int task_timeout_ms)
{
    return s_submit_one(self, task, args, len, task_timeout_ms, NULL);
}

int dist__task_opts(dist__submit_opts_t *so, const char *key, int priority, int64_t delay_ms,
                    int64_t at_ms, int max_attempts, int backoff_ms, double backoff_factor,
                    int backoff_max_ms, bool retry_on_error)
{
    memset(so, 0, sizeof *so);
    if ((key && !dist__key_ok(key, strlen(key))) || priority < 0 ||
        priority >= DIST__PRIORITY_LEVELS || delay_ms < 0 ||
        (uint64_t)delay_ms > DIST__DELAY_MAX_MS || at_ms < 0 || (delay_ms && at_ms) ||
        max_attempts < 0 || max_attempts > DIST__ATTEMPTS_MAX || backoff_ms < 0 ||
        backoff_max_ms < 0 || (backoff_factor != 0 && !(backoff_factor >= 1.0)))
        return DIST_EINVAL;
    if (key)
        so->key = (dist__str_t){ key, strlen(key) };
    so->priority = (uint32_t)priority;
    so->has_delay = delay_ms > 0;
    so->delay_ms = (uint32_t)delay_ms;
    so->has_at = at_ms > 0;
    so->at_ms = (uint64_t)at_ms;
    so->max_attempts = (uint32_t)max_attempts;
    so->backoff_ms = (uint32_t)backoff_ms;
    so->backoff_factor = backoff_factor;
    so->backoff_max_ms = (uint32_t)backoff_max_ms;
    so->retry_on_error = retry_on_error;
    return 0;
}

dist_future_t *dist_client_submit_opts(dist_client_t *self, const char *task, const void *args,
                                       size_t len, const dist_submit_opts_t *o)
{
    dist_submit_opts_t d = { 0 };
    if (!o)
        o = &d;
    dist__submit_opts_t so;
    if (dist__task_opts(&so, o->id, o->priority, o->delay_ms, o->at_ms, o->max_attempts,
                        o->backoff_ms, o->backoff_factor, o->backoff_max_ms, o->retry_on_error)) {
        errno = EINVAL;
        return NULL;
    }
    return s_submit_one(self, task, args, len, o->timeout_ms, &so);
}

const char *dist_future_id(dist_future_t *self)
{
    if (!self)
        return NULL;
    /* The id is fixed once submitted; the hex form is made on first use,
     * under the lock (two threads may ask at once). */
    dist__client_lock(self->client);
    if (!self->key[0])
        dist__id_hex(&self->slot.id, self->key);
    dist__client_unlock(self->client);
    return self->key;
}

static bool s_never(dist_client_t *self, void *arg)
{
    (void)self;
    (void)arg;
    return false;
}

dist_future_t *dist_client_submit_wait(dist_client_t *self, const char *task, const void *args,
                                       size_t len, int task_timeout_ms, int wait_ms)
{
    int64_t deadline = dist__deadline(wait_ms);
    int backoff_ms = S_FULL_BACKOFF_MIN_MS;
    for (;;) {
        dist_future_t *f = dist_client_submit(self, task, args, len, task_timeout_ms);
        if (f || errno != -DIST_EFULL)
            return f;
        int64_t now = dist__now_ns();
        if (now >= deadline)
            break;
        /* Back off while the client goes on working (heartbeats, results
         * of other futures), then ask again: the master keeps no list of
         * waiting submitters, so asking again is how one waits. */
        int64_t until = now + (int64_t)backoff_ms * 1000000;
        if (until > deadline)
            until = deadline;
        dist__client_lock(self);
        dist__wait_t w = { .ready = s_never };
        int rc = dist__client_run(self, &w, until);
        dist__client_unlock(self);
        if (rc != DIST_ETIMEDOUT) {
            errno = -rc;
            return NULL;
        }
        backoff_ms = backoff_ms * 2 > S_FULL_BACKOFF_MAX_MS ? S_FULL_BACKOFF_MAX_MS
                                                            : backoff_ms * 2;
    }
    errno = -DIST_EFULL;
    return NULL;
}

static bool s_future_ready(dist_client_t *self, void *arg)
{
    (void)self;
    return ((dist_future_t *)arg)->result != NULL;
}

int dist_future_wait(dist_future_t *self, int timeout_ms)
{
    if (!self)
        return DIST_EINVAL;
    dist_client_t *c = self->client;
    dist__client_lock(c);
    dist__wait_t w = { .ready = s_future_ready, .arg = self };
    int rc = dist__client_run(c, &w, dist__deadline(timeout_ms));
    dist__client_unlock(c);
    return rc;
}

int dist_future_get(dist_future_t *self, int timeout_ms, dist_result_t **result)
{
    if (result)
        *result = NULL;
    int rc = dist_future_wait(self, timeout_ms);
    if (rc)
        return rc;
    /* Set once and never replaced after: safe to read without the lock. */
    if (result)
        *result = self->result; /* lent: the future keeps it */
    return self->result->status;
}

bool dist_future_ready(dist_future_t *self) { return dist_future_wait(self, 0) == 0; }

bool dist_future_successful(dist_future_t *self)
{
    return dist_future_ready(self) && self->result->status == 0;
}

void dist_future_destroy(dist_future_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_future_t *f = *self_p;
    dist__client_lock(f->client);
    /* A result that comes later finds no slot: acknowledged and dropped. */
    dist__idmap_del(&f->client->ids, &f->slot);
    dist__future_unpark(f->client, f);
    if (f->slot.state == DIST__SL_SENT)
        dist__batch_answered(f->client, &f->slot);
    dist__client_unlock(f->client);
    s_future_free(f);
    *self_p = NULL;
}

int dist_client_call(dist_client_t *self, const char *task, const void *args, size_t len,
                     int timeout_ms, dist_result_t **result)
{
    if (result)
        *result = NULL;
    if (!result)
        return DIST_EINVAL;
    int64_t deadline = dist__deadline(timeout_ms); /* the bound covers submitting too */
    dist_bytes_t item = { args, len };
    dist_future_t *f = NULL;
    int err = 0;
    long rc = s_submit(self, task, &item, 1, 0, NULL, &f, &err, true);
    if (rc < 0)
        return (int)rc;
    int st = dist_future_get(f, dist__left_ms(deadline), NULL);
    if (f->result) {
        *result = dist__result_lend(f->result, false); /* the caller owns it now */
        f->result = NULL;
    }
    dist_future_destroy(&f);
    return st;
}

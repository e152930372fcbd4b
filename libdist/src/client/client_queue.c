/*  client_queue.c - named remote queues (QPUT, QGET) and STATUS: requests
 *  with a number (req) that their QREPLY or STATUS answer echoes.
 *
 *  The master may hold a QPUT or QGET for its timeout; the client waits a
 *  little longer so that the master's own "timeout" answer comes first. A
 *  QGET given up before its answer came keeps a copy in the request list:
 *  if the answer still comes, its items are put back into their queue.
 */
#include "client_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/error.h"
#include "util_internal.h"
#include "value_internal.h"

#define S_REPLY_GRACE_MS 2000 /* how much longer than its timeout a request waits */

/* Puts the items of a QGET reply nobody waits for any more back into
 * their queue, so that a late reply loses nothing. */
static void s_put_back(dist_client_t *self, const char *queue, const msgpack_object *items,
                       size_t n);

dist__req_t *dist__req_find(dist_client_t *self, uint64_t req)
{
    for (dist__req_t *r = self->reqs; r; r = r->next)
        if (r->req == req)
            return r;
    return NULL;
}

void dist__req_unlink(dist_client_t *self, dist__req_t *q)
{
    for (dist__req_t **p = &self->reqs; *p; p = &(*p)->next)
        if (*p == q) {
            *p = q->next;
            return;
        }
}

void dist__req_clear(dist__req_t *q)
{
    free(q->body);
    q->body = NULL;
    dist_wire_msg_destroy(&q->reply);
}

/* Frees a request that lives on the heap (an abandoned one). */
void dist__req_drop(dist__req_t *q)
{
    dist__req_clear(q);
    free(q);
}

/* Gives the request a number, packs its body with fill() and queues it. */
int dist__req_start(dist_client_t *self, dist__req_t *q, dist__cmd_t cmd,
                    void (*fill)(msgpack_packer *pk, uint64_t req, const void *arg),
                    const void *arg)
{
    q->req = ++self->next_req;
    q->cmd = cmd;
    dist_wire_buf_t *buf = dist_wire_buf_new(0);
    if (!buf)
        return DIST_ENOMEM;
    fill(dist_wire_buf_packer(buf), q->req, arg);
    int st = dist_wire_buf_status(buf);
    if (!st)
        q->body = dist_wire_buf_release(buf, &q->len);
    dist_wire_buf_destroy(&buf);
    if (st)
        return st;
    q->next = self->reqs;
    self->reqs = q;
    dist__client_wake(self);
    return 0;
}

/* The code a QREPLY status or an ERROR code maps to (section 7a, 8). */
int dist__reply_code(const char *s, size_t n)
{
    if (dist__str_is(s, n, "ok"))
        return 0;
    if (dist__str_is(s, n, "timeout"))
        return DIST_ETIMEDOUT;
    if (dist__str_is(s, n, "full") || dist__str_is(s, n, "queue_full"))
        return DIST_EFULL;
    if (dist__str_is(s, n, "bad_request") || dist__str_is(s, n, "malformed"))
        return DIST_EINVAL;
    if (dist__str_is(s, n, "too_large"))
        return DIST_EMSGSIZE;
    if (dist__str_is(s, n, "unknown_task") || dist__str_is(s, n, "not_found"))
        return DIST_ENOENT;
    return DIST_EREFUSED;
}

void dist__on_reply(dist_client_t *self, dist__inmsg_t *m)
{
    dist__qreply_t r = { 0 };
    dist__status_req_t st;
    dist__reply_t rp;
    bool qreply = m->cmd == DIST__CMD_QREPLY, reply = m->cmd == DIST__CMD_REPLY;
    if (qreply ? dist__parse_qreply(m->root, &r) != 0
        : reply ? dist__parse_reply(m->root, &rp) != 0
                : dist__parse_status_req(m->root, &st) != 0) {
        self->malformed++;
        return;
    }
    dist__req_t *q = dist__req_find(self, qreply ? r.req : reply ? rp.req : st.req);
    /* The answer must be of the request's kind: QREPLY for queues, STATUS
     * for STATUS, REPLY for the task-control requests. */
    bool want_reply = q && q->cmd != DIST__CMD_STATUS && q->cmd != DIST__CMD_QPUT &&
                      q->cmd != DIST__CMD_QGET;
    if (!q || q->done || (m->cmd == DIST__CMD_STATUS) != (q->cmd == DIST__CMD_STATUS) ||
        reply != want_reply)
        return;
    int code = qreply  ? dist__reply_code(r.status.s, r.status.n)
               : reply ? dist__reply_code(rp.status.s, rp.status.n)
                       : 0;
    if (q->abandoned) {
        if (q->cmd == DIST__CMD_QGET && r.nitems)
            s_put_back(self, q->queue, r.items, r.nitems);
        dist__req_unlink(self, q);
        dist__req_drop(q);
        return;
    }
    q->done = true;
    q->code = code;
    q->reply = m->body; /* the caller reads it */
    m->body = NULL;
    m->root = NULL;
}

static bool s_req_ready(dist_client_t *self, void *arg)
{
    (void)self;
    return ((dist__req_t *)arg)->done;
}

/* The deadline of a request the master may hold for timeout_ms: a little
 * longer, so that the master's own "timeout" answer arrives first. */
int64_t dist__req_deadline(int timeout_ms)
{
    return timeout_ms < 0 ? INT64_MAX
                          : dist__deadline(timeout_ms) + (int64_t)S_REPLY_GRACE_MS * 1000000;
}

/* Waits for the reply of a started request until `deadline`. Returns the
 * reply's code, DIST_ETIMEDOUT when no reply came, DIST_ENOMASTER when
 * the master fell silent. On return the request is out of the list (a
 * QGET given up keeps a copy there, see dist__on_reply). */
int dist__req_wait(dist_client_t *self, dist__req_t *q, int64_t deadline)
{
    bool live = true;
    dist__wait_t w = { .ready = s_req_ready, .arg = q, .live = &live };
    int rc = dist__client_run(self, &w, deadline);
    if (rc == 0) {
        rc = q->code;
    } else if (q->cmd == DIST__CMD_QGET && q->sent) {
        /* The master may still answer with items: keep a copy of the
         * request to put them back when it does. */
        dist__req_t *h = malloc(sizeof *h);
        dist__req_unlink(self, q);
        if (h) {
            *h = *q;
            h->abandoned = h->heap = true;
            free(h->body);
            h->body = NULL;
            q->body = NULL;
            h->next = self->reqs;
            self->reqs = h;
        }
        return rc;
    }
    dist__req_unlink(self, q);
    return rc;
}

struct s_qput {
    const char *queue;
    const void *const *bufs;
    const size_t *lens;
    size_t n;
    uint32_t timeout;
};

static void s_fill_qput(msgpack_packer *pk, uint64_t req, const void *arg)
{
    const struct s_qput *a = arg;
    dist__qput_t q = { .req = req, .queue = { a->queue, strlen(a->queue) }, .nitems = a->n,
                       .timeout_ms = a->timeout };
    dist__pack_qput(pk, &q);
    for (size_t i = 0; i < a->n; i++)
        dist__pk_bin(pk, a->bufs[i], a->lens[i]);
}

static uint32_t s_wire_timeout(int timeout_ms)
{
    /* The wire has no "forever": the largest u32 is 49 days. */
    return timeout_ms < 0 ? UINT32_MAX : (uint32_t)timeout_ms;
}

static void s_put_back(dist_client_t *self, const char *queue, const msgpack_object *items,
                       size_t n)
{
    dist__req_t *q = calloc(1, sizeof *q);
    const void **bufs = calloc(n, sizeof *bufs);
    size_t *lens = calloc(n, sizeof *lens);
    size_t k = 0;
    for (size_t i = 0; q && bufs && lens && i < n; i++)
        if (!dist_wire_get_bin(&items[i], &bufs[k], &lens[k]))
            k++;
    struct s_qput a = { queue, bufs, lens, k, 0 };
    if (q && bufs && lens && k) {
        q->heap = q->abandoned = true; /* nobody waits for its reply */
        snprintf(q->queue, sizeof q->queue, "%s", queue);
        if (dist__req_start(self, q, DIST__CMD_QPUT, s_fill_qput, &a) == 0)
            q = NULL;
    }
    if (q || !k)
        dist__log(&self->log, DIST_LOG_WARN,
                  "lost %zu item(s) of queue %s taken after a QGET gave up", n, queue);
    else
        dist__log(&self->log, DIST_LOG_INFO, "put %zu item(s) back into queue %s (late QGET reply)",
                  k, queue);
    if (q) {
        free(q->body);
        free(q);
    }
    free(bufs);
    free(lens);
}

int dist_client_qput(dist_client_t *self, const char *queue, const void *buf, size_t len,
                     int timeout_ms)
{
    if (!self || !queue || (!buf && len) || !dist__name_ok(queue, strlen(queue)))
        return DIST_EINVAL;
    dist__client_lock(self);
    if (len + strlen(queue) + 128 > self->max_message) {
        dist__client_unlock(self);
        return DIST_EMSGSIZE;
    }
    dist__req_t q = { 0 };
    const void *bufs[1] = { buf ? buf : "" };
    size_t lens[1] = { len };
    struct s_qput a = { queue, bufs, lens, 1, s_wire_timeout(timeout_ms) };
    int rc = dist__req_start(self, &q, DIST__CMD_QPUT, s_fill_qput, &a);
    if (!rc)
        rc = dist__req_wait(self, &q, dist__req_deadline(timeout_ms));
    dist__client_unlock(self);
    dist__req_clear(&q);
    if (rc == DIST_ETIMEDOUT) /* the master's "timeout", or no answer at all */
        rc = q.done ? DIST_EFULL : DIST_ENOMASTER;
    return rc;
}

struct s_qget {
    const char *queue;
    uint32_t timeout;
};

static void s_fill_qget(msgpack_packer *pk, uint64_t req, const void *arg)
{
    const struct s_qget *a = arg;
    dist__qget_t q = { .req = req, .queue = { a->queue, strlen(a->queue) }, .max = 1,
                       .timeout_ms = a->timeout };
    dist__pack_qget(pk, &q);
}

static void s_fill_status(msgpack_packer *pk, uint64_t req, const void *arg)
{
    (void)arg;
    dist__status_req_t s = { req };
    dist__pack_status_req(pk, &s);
}

int dist_client_qget(dist_client_t *self, const char *queue, void **buf, size_t *len,
                     int timeout_ms)
{
    if (buf)
        *buf = NULL;
    if (len)
        *len = 0;
    if (!self || !queue || !buf || !len || !dist__name_ok(queue, strlen(queue)))
        return DIST_EINVAL;
    dist__client_lock(self);
    dist__req_t q = { 0 };
    snprintf(q.queue, sizeof q.queue, "%s", queue);
    struct s_qget a = { queue, s_wire_timeout(timeout_ms) };
    int rc = dist__req_start(self, &q, DIST__CMD_QGET, s_fill_qget, &a);
    if (!rc)
        rc = dist__req_wait(self, &q, dist__req_deadline(timeout_ms));
    dist__client_unlock(self);
    if (rc == DIST_ETIMEDOUT && !q.done)
        rc = DIST_ENOMASTER; /* not even the master's "timeout" came */
    if (rc == 0) {
        const void *p;
        size_t plen;
        dist__qreply_t r;
        if (dist__parse_qreply(dist_wire_msg_root(q.reply), &r) || r.nitems == 0)
            rc = DIST_ETIMEDOUT; /* "ok" with nothing: nothing came in time */
        else if (dist_wire_get_bin(&r.items[0], &p, &plen))
            rc = DIST_EPROTO;
        else if (!(*buf = malloc(plen ? plen : 1)))
            rc = DIST_ENOMEM;
        else {
            memcpy(*buf, p, plen);
            *len = plen;
        }
    }
    dist__req_clear(&q);
    return rc;
}

int dist_client_status(dist_client_t *self, int timeout_ms, dist_result_t **status)
{
    if (status)
        *status = NULL;
    if (!self || !status)
        return DIST_EINVAL;
    dist__client_lock(self);
    dist__req_t q = { 0 };
    int rc = dist__req_start(self, &q, DIST__CMD_STATUS, s_fill_status, NULL);
    if (!rc)
        rc = dist__req_wait(self, &q, dist__deadline(timeout_ms));
    dist__client_unlock(self);
    if (rc == 0) {
        size_t len;
        const void *data = dist_wire_msg_data(q.reply, &len);
        *status = dist__result_new(0, data, len);
        if (!*status)
            rc = DIST_ENOMEM;
    }
    dist__req_clear(&q);
    return rc;
}

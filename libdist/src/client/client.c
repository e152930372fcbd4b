/*  client.c - the connection of a client (dist/client.h) to its master:
 *  sessions (HELLO, WELCOME, RECONNECT, heartbeats), the pump that moves
 *  messages through the one DEALER socket, dispatching what arrives, and
 *  waiting. Submitting, maps and queues build on it (client_internal.h).
 *
 *  Contract: a task id is random and known to the client before it is
 *  sent; every id waiting for its answer is in the id map (client_idmap.c),
 *  pointing at its slot (inside a future, or in a map's slot array). A
 *  result is stored in its slot, taken out of the id map, and only then
 *  acknowledged, so a result is delivered to the caller exactly once: a
 *  duplicate (re-sent after a reconnect, or late from a retried task)
 *  finds no slot and is acknowledged and dropped.
 *
 *  Threads: the client has no thread of its own. All state is under one
 *  mutex. Sending never blocks: SUBMIT batches, requests and ACKs are put
 *  in an outbox, and whichever call is waiting owns the socket (io_busy)
 *  and pumps it: it flushes the outbox, polls the socket (with the mutex
 *  released) and dispatches what arrived. Other waiting threads sleep on a
 *  condition variable that the pumper broadcasts after each round; a
 *  thread that queued something while another pumps wakes the pumper
 *  through an eventfd that is polled with the socket.
 *
 *  Reconnects: a RECONNECT (the master does not know us: it restarted)
 *  makes the client say HELLO again with the same name and, once welcomed,
 *  re-send every SUBMIT and request not yet answered (submission is
 *  idempotent). Tasks the old master had accepted are not resubmitted: an
 *  in-memory master lost them and their futures wait until the caller's
 *  timeout; a master with --store recovers them and their results arrive.
 */
#include "client_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>
#include <zmq.h>

#include "dist/error.h"
#include "security_internal.h"
#include "util_internal.h"
#include "value_internal.h"

#define S_CONNECT_TIMEOUT_MS 5000
#define S_DRAIN_MAX 256       /* messages read in one round before sending again */

/* Tells a thread blocked in zmq_poll that the outbox has changed. */
void dist__client_wake(dist_client_t *self)
{
    if (self->io_busy) {
        uint64_t one = 1;
        ssize_t r = write(self->wake_fd, &one, sizeof one);
        (void)r; /* EAGAIN: the counter is already non-zero */
    }
}

static int s_send(dist_client_t *self, dist__cmd_t cmd, const void *body, size_t len)
{
    int rc = dist__conn_send(&self->conn, cmd, body, len);
    if (rc == 0)
        return 0;
    if (rc == DIST_EAGAIN)
        self->blocked = true;
    else
        dist__log(&self->log, DIST_LOG_WARN, "sending %s failed: %s", dist__cmd_name(cmd),
                  dist_strerror(rc));
    return rc;
}

static int s_send_out(dist_client_t *self, dist__cmd_t cmd)
{
    int st = dist_wire_buf_status(self->out);
    if (st)
        return st;
    size_t len;
    const void *data = dist_wire_buf_data(self->out, &len);
    return s_send(self, cmd, data, len);
}

static void s_send_hello(dist_client_t *self)
{
    dist__hello_t h = { .role = DIST__PEER_CLIENT,
                        .name = { self->name, strlen(self->name) },
                        .host = { self->host, strlen(self->host) },
                        .version = { DIST_VERSION_STRING, strlen(DIST_VERSION_STRING) },
                        .pid = (uint32_t)getpid() };
    dist_wire_buf_reset(self->out);
    dist__pack_hello(dist_wire_buf_packer(self->out), &h);
    /* Paced even when the socket refuses it (no connection yet). */
    self->conn.last_hello_ns = dist__now_ns();
    s_send_out(self, DIST__CMD_HELLO);
}

/* ---- sending what is due ----------------------------------------------------------- */

static void s_flush_acks(dist_client_t *self)
{
    if (!self->connected)
        return; /* section 4: nothing but HELLO before WELCOME */
    while (self->nacks) {
        size_t n = self->nacks < self->max_batch ? self->nacks : self->max_batch;
        dist_wire_buf_reset(self->out);
        msgpack_packer *pk = dist_wire_buf_packer(self->out);
        dist__pack_list_head(pk, DIST__CMD_ACK, n);
        for (size_t i = 0; i < n; i++)
            dist__pk_id(pk, &self->acks[self->nacks - n + i]);
        int rc = s_send_out(self, DIST__CMD_ACK);
        if (rc == DIST_EAGAIN)
            return;
        if (rc)
            dist__log(&self->log, DIST_LOG_WARN, "dropping %zu acknowledgements", n);
        self->nacks -= n;
    }
}

/* Sends what is due: HELLO while not welcomed (every second), then the
 * outbox, then a HEARTBEAT when nothing else went out for a while. ACKs
 * go out when a full batch has gathered or, `idle`, before the caller
 * blocks: prompt, yet one ACK for many RESULTS while they stream in.
 * Called by the thread that owns the socket. */
static void s_housekeeping(dist_client_t *self, bool idle)
{
    int64_t now = dist__now_ns();
    self->blocked = false;
    if (self->connected && !self->lost && dist__conn_silent(&self->conn, now)) {
        self->lost = true;
        self->conn.last_hello_ns = 0; /* say it now */
        if (!self->conn.bye) /* after a BYE, said already */
            dist__log(&self->log, DIST_LOG_WARN, "master %s silent for %u ms: saying HELLO again",
                      self->conn.endpoint, self->conn.wl.heartbeat_timeout_ms);
    }
    if ((!self->connected || self->lost) && dist__conn_hello_due(&self->conn, now))
        s_send_hello(self);
    if (!self->connected)
        return; /* section 4: nothing but HELLO before WELCOME */
    if (idle || self->nacks >= self->max_batch)
        s_flush_acks(self);
    dist__parked_submit(self, now);
    for (size_t i = 0; i < self->nbatches && !self->blocked; i++) {
        dist__batch_t *b = &self->batches[i];
        if (!b->sent && s_send(self, DIST__CMD_SUBMIT, b->body, b->len) != DIST_EAGAIN)
            b->sent = true; /* a hard failure is not retried; the wait times out */
    }
    for (dist__req_t *q = self->reqs; q && !self->blocked; q = q->next)
        if (!q->sent && !q->done && q->body && s_send(self, q->cmd, q->body, q->len) != DIST_EAGAIN)
            q->sent = true;
    if (!self->blocked &&
        now - self->conn.last_sent_ns >= (int64_t)self->conn.wl.heartbeat_ms * 1000000)
        s_send(self, DIST__CMD_HEARTBEAT, NULL, 0);
}

/* ---- dispatching what arrives -------------------------------------------------------- */

/* The code a SUBMIT rejection maps to (section 6.4); *retry for the codes
 * that say "try again later". */
static int s_reject_code(const char *s, size_t n, bool *retry)
{
    *retry = false;
    if (dist__str_is(s, n, "unknown_task"))
        return DIST_ENOENT;
    if (dist__str_is(s, n, "too_large"))
        return DIST_EMSGSIZE;
    if (dist__str_is(s, n, "queue_full") || dist__str_is(s, n, "store_failed")) {
        *retry = true;
        return DIST_EFULL;
    }
    return DIST_EREFUSED;
}

static void s_forgotten(dist_client_t *self)
{
    /* Whatever the master had not answered, it will never answer: send it
     * all again once welcomed. Abandoned requests are simply forgotten. */
    for (size_t i = 0; i < self->nbatches; i++)
        self->batches[i].sent = false;
    for (dist__req_t **p = &self->reqs; *p;) {
        dist__req_t *q = *p;
        if (q->abandoned && !q->body) { /* a QGET nobody waits for */
            *p = q->next;
            dist__req_drop(q);
            continue;
        }
        q->sent = false;
        p = &q->next;
    }
}

static void s_on_welcome(dist_client_t *self, const msgpack_object *b)
{
    bool said_bye = self->conn.bye; /* cleared by the WELCOME */
    bool other_master = dist__conn_welcome(&self->conn, b) && self->welcomed_once;
    const dist__welcome_t *wl = &self->conn.wl;
    self->max_batch = wl->max_batch;
    self->max_message = self->own_max_message;
    if (wl->max_message < self->max_message)
        self->max_message = wl->max_message;
    bool renewed = self->conn.new_instance && self->welcomed_once;
    /* A master that said BYE took what it had not answered with it. */
    bool resend = !self->connected || other_master || said_bye || renewed;
    if (resend && self->welcomed_once)
        s_forgotten(self);
    if (renewed)
        dist__resubmit_all(self);
    if (!self->connected || self->lost)
        dist__log(&self->log, self->welcomed_once ? DIST_LOG_INFO : DIST_LOG_DEBUG,
                  "welcomed by master %s at %s as %s (%u results waiting)", self->conn.master,
                  self->conn.endpoint, self->name, wl->pending_results);
    self->connected = true;
    self->welcomed_once = true;
    self->lost = false;
}

static void s_on_reconnect(dist_client_t *self)
{
    if (self->connected)
        dist__log(&self->log, DIST_LOG_INFO, "master %s does not know us (restarted?): HELLO again",
                  self->conn.endpoint);
    self->connected = false;
    s_forgotten(self);
    /* Every message the old connection sent gets a RECONNECT: one HELLO per
     * burst is enough (the timer repeats it). */
    if (dist__now_ns() - self->conn.last_hello_ns > 100 * 1000000)
        s_send_hello(self);
}

static void s_ack_push(dist_client_t *self, const dist__id_t *id)
{
    if (self->nacks == self->capacks) {
        size_t cap = self->capacks ? self->capacks * 2 : 256;
        dist__id_t *grown = realloc(self->acks, cap * sizeof *grown);
        if (!grown)
            return; /* unacknowledged: the master sends it again later */
        self->acks = grown;
        self->capacks = cap;
    }
    self->acks[self->nacks++] = *id;
}

/* A task of a SUBMIT was refused with `code` (section 6.4). */
static void s_refuse(dist_client_t *self, dist__slot_t *s, const char *code, size_t clen,
                     const char *msg, size_t mlen)
{
    bool retry;
    int rc = s_reject_code(code, clen, &retry);
    dist__batch_answered(self, s);
    dist__idmap_del(&self->ids, s);
    if (s->job) {
        dist__job_refused(self, s->job, s, retry ? 1 : rc, msg, mlen);
        return;
    }
    dist_future_t *f = (dist_future_t *)s;
    if (dist__future_park(self, f, rc, retry))
        return; /* a new master instance: "not yet", submitted again soon */
    s->state = DIST__SL_REJECTED;
    dist__result_free(&f->result);
    f->result = dist__result_lend(dist__result_new(rc, mlen ? msg : dist_strerror(rc),
                                                   mlen ? mlen : strlen(dist_strerror(rc))),
                                  true);
    dist__log(&self->log, DIST_LOG_DEBUG, "task refused: %.*s: %.*s", (int)clen, code, (int)mlen,
              msg);
}

/* The index of a name in the unserved list, or nunserved. */
static size_t s_unserved_find(const dist_client_t *self, const char *name, size_t n)
{
    size_t i = 0;
    while (i < self->nunserved && !dist__str_is(name, n, self->unserved[i]))
        i++;
    return i;
}

/* The master says no connected worker offers these task names: warn once
 * per name (until a worker offering it joins), since their tasks wait. */
static void s_unserved(dist_client_t *self, const msgpack_object *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *name = names[i].via.str.ptr;
        size_t len = names[i].via.str.size;
        if (s_unserved_find(self, name, len) < self->nunserved)
            continue;
        dist__log(&self->log, DIST_LOG_WARN, "no connected worker offers task %.*s: its tasks "
                  "wait", (int)len, name);
        if (self->nunserved == self->capunserved) {
            size_t cap = self->capunserved ? self->capunserved * 2 : 4;
            void *grown = realloc(self->unserved, cap * sizeof *self->unserved);
            if (!grown)
                continue; /* warned again next time: no harm */
            self->unserved = grown;
            self->capunserved = cap;
        }
        memcpy(self->unserved[self->nunserved], name, len);
        self->unserved[self->nunserved++][len] = 0;
    }
}

static void s_on_notice(dist_client_t *self, const msgpack_object *b)
{
    dist__notice_t nt;
    if (dist__parse_notice(b, &nt)) {
        self->malformed++;
        return;
    }
    s_unserved(self, nt.unserved, nt.nunserved);
    for (size_t i = 0; i < nt.nserved; i++) {
        const char *name = nt.served[i].via.str.ptr;
        size_t len = nt.served[i].via.str.size;
        size_t k = s_unserved_find(self, name, len);
        if (k < self->nunserved)
            memcpy(self->unserved[k], self->unserved[--self->nunserved], sizeof *self->unserved);
        dist__log(&self->log, DIST_LOG_WARN, "a worker offering task %.*s joined", (int)len, name);
    }
}

static void s_on_accepted(dist_client_t *self, const msgpack_object *b)
{
    dist__accepted_t a;
    if (dist__parse_accepted(b, &a)) {
        self->malformed++;
        return;
    }
    s_unserved(self, a.unserved, a.nunserved);
    for (size_t i = 0; i < a.nids; i++) {
        dist__id_t id;
        if (!dist__list_id(&a.ids[i], &id))
            continue;
        dist__slot_t *s = dist__idmap_find(&self->ids, &id);
        if (!s || s->state != DIST__SL_SENT)
            continue;
        s->state = DIST__SL_ACCEPTED;
        dist__batch_answered(self, s);
        if (s->job)
            dist__job_refused(self, s->job, s, 0, NULL, 0); /* code 0: accepted */
    }
    for (size_t i = 0; i < a.nrejected; i++) {
        dist__reject_t r;
        if (dist__parse_reject(&a.rejected[i], &r) || !r.has_id)
            continue;
        dist__slot_t *s = dist__idmap_find(&self->ids, &r.id);
        if (s && s->state == DIST__SL_SENT)
            s_refuse(self, s, r.code.s, r.code.n, r.error.s, r.error.n);
    }
}

/* An ERROR without a req that refuses a whole SUBMIT (the master could not
 * take any of it; SUBMIT has no req to echo): the master answers messages
 * in order, so it answers the oldest SUBMIT still waiting. Every task of
 * that SUBMIT is refused with the code. false when none waits. */
static bool s_on_submit_error(dist_client_t *self, const char *code, size_t clen,
                              const char *msg, size_t mlen)
{
    bool retry;
    if (s_reject_code(code, clen, &retry) == DIST_EREFUSED &&
        !dist__str_is(code, clen, "bad_request"))
        return false; /* not a code that refuses tasks */
    dist__batch_t *b = NULL;
    for (size_t i = 0; i < self->nbatches && !b; i++)
        if (self->batches[i].sent)
            b = &self->batches[i];
    if (!b)
        return false;
    size_t n = b->pending;
    dist__slot_t **slots = malloc(n * sizeof *slots);
    if (!slots)
        return false;
    n = dist__idmap_collect(&self->ids, b->seq, slots, n);
    /* The batch goes away with its last task: nothing may touch b below. */
    for (size_t i = 0; i < n; i++)
        s_refuse(self, slots[i], code, clen, msg, mlen);
    free(slots);
    return n > 0;
}

static void s_on_results(dist_client_t *self, const msgpack_object *b)
{
    const msgpack_object *items;
    size_t n;
    if (dist__parse_list(b, DIST__CMD_RESULTS, &items, &n)) {
        self->malformed++;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        dist__result_t r;
        if (dist__parse_result(&items[i], false, &r)) {
            self->malformed++;
            continue;
        }
        dist__slot_t *s = dist__idmap_find(&self->ids, &r.id);
        if (!s) {
            /* A duplicate, or the result of a future destroyed before it
             * came: taken, and dropped. */
            self->dropped++;
            s_ack_push(self, &r.id);
            continue;
        }
        int code = dist__status_errcode(r.status);
        const char *data = code ? r.error : r.value;
        size_t len = code ? r.error_len : r.value_len;
        if (!s->job) {
            dist_future_t *f = (dist_future_t *)s;
            dist_result_t *res = dist__result_new(code, data, len);
            if (!res)
                continue; /* not acknowledged: it comes again after the next HELLO */
            dist__result_free(&f->result);
            f->result = dist__result_lend(res, true); /* dist_future_get lends it */
        }
        if (s->state == DIST__SL_SENT)
            dist__batch_answered(self, s);
        s->state = DIST__SL_DONE;
        dist__idmap_del(&self->ids, s);
        if (s->job)
            dist__job_deliver(s->job, s->index, code, data, len);
        s_ack_push(self, &r.id);
    }
}

static void s_on_error(dist_client_t *self, const msgpack_object *b)
{
    dist__error_t e;
    if (!dist__conn_error(&self->conn, b, &e, &self->malformed))
        return;
    const char *code = e.code.s, *msg = e.error.s;
    size_t clen = e.code.n, mlen = e.error.n;
    if (e.req) {
        dist__req_t *q = dist__req_find(self, e.req);
        if (q && !q->done) {
            dist__log(&self->log, DIST_LOG_WARN, "master: %.*s: %.*s", (int)clen, code, (int)mlen,
                      msg);
            if (q->abandoned) {
                dist__req_unlink(self, q);
                dist__req_drop(q);
            } else {
                q->done = true;
                q->code = dist__reply_code(code, clen);
                if (q->code == 0)
                    q->code = DIST_EREFUSED;
            }
            return;
        }
    }
    if (dist__str_is(code, clen, "not_welcome")) {
        s_on_reconnect(self);
        return;
    }
    if (s_on_submit_error(self, code, clen, msg, mlen)) {
        dist__log(&self->log, DIST_LOG_INFO, "master refused a SUBMIT: %.*s: %.*s", (int)clen,
                  code, (int)mlen, msg);
        return;
    }
    dist_log_level_t lvl = DIST_LOG_WARN;
    if (dist__str_is(code, clen, "unsupported_version")) {
        self->fatal = DIST_EPROTO;
        lvl = DIST_LOG_ERROR;
    } else if (dist__str_is(code, clen, "banned") || dist__str_is(code, clen, "forbidden")) {
        self->fatal = DIST_EREFUSED;
        lvl = DIST_LOG_ERROR;
    }
    dist__log(&self->log, lvl, "master %s: %.*s: %.*s", self->conn.endpoint, (int)clen, code,
              (int)mlen, msg);
}

static void s_dispatch(dist_client_t *self, dist__inmsg_t *m)
{
    switch (m->cmd) {
    case DIST__CMD_WELCOME: s_on_welcome(self, m->root); break;
    case DIST__CMD_RECONNECT: s_on_reconnect(self); break;
    case DIST__CMD_HEARTBEAT: break;
    case DIST__CMD_ACCEPTED: s_on_accepted(self, m->root); break;
    case DIST__CMD_RESULTS: s_on_results(self, m->root); break;
    case DIST__CMD_QREPLY:
    case DIST__CMD_REPLY:
    case DIST__CMD_STATUS: dist__on_reply(self, m); break;
    case DIST__CMD_ERROR: s_on_error(self, m->root); break;
    case DIST__CMD_NOTICE: s_on_notice(self, m->root); break;
    case DIST__CMD_BYE:
        /* A clean stop: find the next master now, not after its silence. */
        dist__log(&self->log, DIST_LOG_INFO, "master %s said BYE: saying HELLO again",
                  self->conn.endpoint);
        dist__conn_lost(&self->conn);
        if (self->connected)
            self->lost = true;
        break;
    default:
        self->malformed++;
        dist__log(&self->log, DIST_LOG_DEBUG, "unexpected %s from the master",
                  dist__cmd_name(m->cmd));
        break;
    }
}

/* Reads and dispatches what is waiting, without blocking. Returns how many
 * messages were read. */
static int s_drain(dist_client_t *self)
{
    int n = 0;
    while (n < S_DRAIN_MAX) {
        dist__inmsg_t m;
        int rc = dist__proto_recv(self->conn.sock, false, &self->limits, &m);
        if (rc == DIST_EAGAIN)
            break;
        n++;
        if (rc == DIST_EPROTO) {
            self->malformed++;
            if (m.bad == DIST__BAD_VERSION) {
                self->fatal = DIST_EPROTO;
                dist__log(&self->log, DIST_LOG_ERROR,
                          "master %s speaks protocol version %d, this client version %d",
                          self->conn.endpoint, m.version, DIST__PROTO_VERSION);
            }
            continue;
        }
        if (rc < 0)
            break;
        dist__conn_heard(&self->conn, dist__now_ns());
        s_dispatch(self, &m);
        dist__inmsg_clear(&m);
    }
    return n;
}

/* Connection events. With CURVE, a master whose ZAP handler refuses our
 * key says so during the handshake: that is final for this client (libzmq
 * does not reconnect after it), so every call then fails with
 * DIST_EREFUSED instead of waiting for a master that will never answer. A
 * new connection is a new peer to the master: HELLO at once when a
 * session is to be found again. */
static void s_on_monitor(dist_client_t *self)
{
    bool up = dist__conn_on_monitor(&self->conn);
    if (self->conn.refused && !self->fatal)
        self->fatal = self->conn.refused;
    if (up && self->welcomed_once && (!self->connected || self->lost) && !self->fatal)
        self->conn.last_hello_ns = 0;
}

/* One round with the socket owned: read what waits, send what is due, and
 * if nothing came, poll (mutex released) until something comes, the
 * outbox changes, or `until`, a heartbeat or a HELLO is due. */
static void s_pump(dist_client_t *self, int64_t until)
{
    if (s_drain(self) > 0) {
        s_housekeeping(self, false);
        return;
    }
    s_housekeeping(self, true);
    int64_t now = dist__now_ns();
    int64_t t = until;
    int64_t next = dist__conn_next_ns(&self->conn, !self->connected || self->lost);
    if (next < t)
        t = next;
    if (self->blocked && now + 10 * 1000000 < t)
        t = now + 10 * 1000000;
    if (self->parked && self->connected && self->parked_at < t)
        t = self->parked_at;
    long ms = t == INT64_MAX ? -1 : t <= now ? 0 : (long)((t - now + 999999) / 1000000);
    zsock_t *mon = self->conn.mon;
    zmq_pollitem_t items[3] = {
        { self->conn.zh, 0, ZMQ_POLLIN, 0 },
        { NULL, self->wake_fd, ZMQ_POLLIN, 0 },
        { mon ? zsock_resolve(mon) : NULL, 0, ZMQ_POLLIN, 0 },
    };
    dist__client_unlock(self);
    int rc = dist__poll(items, mon ? 3 : 2, ms, DIST__SPIN_US);
    dist__client_lock(self);
    if (rc > 0 && items[1].revents) {
        uint64_t v;
        ssize_t r = read(self->wake_fd, &v, sizeof v);
        (void)r;
    }
    if (rc > 0 && mon && (items[2].revents & ZMQ_POLLIN))
        s_on_monitor(self);
    s_drain(self);
    s_housekeeping(self, false);
}

/* ---- waiting ------------------------------------------------------------------------ */

static void s_cond_wait_until(dist_client_t *self, int64_t until)
{
    if (until == INT64_MAX) {
        pthread_cond_wait(&self->cv, &self->mu);
        return;
    }
    struct timespec ts = dist__ns_to_timespec(until);
    pthread_cond_timedwait(&self->cv, &self->mu, &ts);
}

/* Sends the ACKs gathered so far unless another thread owns the socket
 * (it sends them before it blocks). */
void dist__client_ack_now(dist_client_t *self)
{
    if (self->io_busy || !self->nacks)
        return;
    self->io_busy = true;
    s_flush_acks(self);
    self->io_busy = false;
    pthread_cond_broadcast(&self->cv);
}

/* Runs the client until w->ready, `deadline` (DIST_ETIMEDOUT), a silent
 * master (DIST_ENOMASTER, when w->live) or a fatal refusal. Pumps at
 * least once when the socket is free, so that a zero timeout still reads
 * what has arrived. Mutex held. */
int dist__client_run(dist_client_t *self, const dist__wait_t *w, int64_t deadline)
{
    int64_t start = dist__now_ns();
    bool pumped = false;
    for (;;) {
        if (w->step)
            w->step(self, w->arg);
        if (w->ready(self, w->arg)) {
            if (!w->step) /* a map comes back at once: it acknowledges at its end */
                dist__client_ack_now(self);
            return 0;
        }
        if (self->fatal)
            return self->fatal;
        int64_t now = dist__now_ns();
        int64_t until = deadline;
        if (w->live && *w->live) {
            int64_t heard = self->conn.last_heard_ns > start ? self->conn.last_heard_ns : start;
            int64_t end = heard + (int64_t)self->connect_timeout_ms * 1000000;
            if (now >= end && pumped)
                return DIST_ENOMASTER;
            if (end < until)
                until = end;
        }
        if (now >= deadline && (pumped || self->io_busy))
            return DIST_ETIMEDOUT;
        if (w->wake_ns && *w->wake_ns > now && *w->wake_ns < until)
            until = *w->wake_ns;
        if (self->io_busy) {
            s_cond_wait_until(self, until);
            pumped = true; /* somebody else is reading for us */
            continue;
        }
        self->io_busy = true;
        s_pump(self, until);
        self->io_busy = false;
        pthread_cond_broadcast(&self->cv);
        pumped = true;
    }
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static bool s_welcomed(dist_client_t *self, void *arg)
{
    (void)arg;
    return self->connected;
}

static void s_free(dist_client_t *self)
{
    while (self->reqs) {
        dist__req_t *q = self->reqs;
        self->reqs = q->next;
        if (q->heap)
            dist__req_drop(q);
    }
    for (size_t i = 0; i < self->nbatches; i++)
        free(self->batches[i].body);
    free(self->batches);
    free(self->ids.tab);
    free(self->acks);
    free(self->unserved);
    dist_wire_buf_destroy(&self->out);
    /* Not welcomed: nobody to deliver HELLOs to, exit at once. */
    dist__conn_close(&self->conn, !self->connected);
    if (self->wake_fd >= 0)
        close(self->wake_fd);
    pthread_cond_destroy(&self->cv);
    pthread_mutex_destroy(&self->mu);
    free(self);
}

/* The client's own state, before any connection. NULL with errno. */
static dist_client_t *s_alloc(const dist_client_opts_t *o, const dist__logger_t *lg)
{
    dist_client_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init(&self->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&self->cv, &ca);
    pthread_condattr_destroy(&ca);
    self->log = *lg;
    self->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : S_CONNECT_TIMEOUT_MS;
    self->own_max_message = o->max_message ? o->max_message : DIST__MAX_MESSAGE_DEFAULT;
    if (self->own_max_message < 4096)
        self->own_max_message = 4096;
    self->max_message = self->own_max_message;
    self->max_batch = DIST__MAX_BATCH;
    self->limits = dist__body_limits(self->own_max_message);
    if (gethostname(self->host, sizeof self->host - 1) != 0 || !self->host[0])
        snprintf(self->host, sizeof self->host, "localhost");
    if (o->name) {
        snprintf(self->name, sizeof self->name, "%s", o->name);
    } else {
        uint32_t rnd = 0;
        if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
            rnd = (uint32_t)dist__now_ns();
        /* Keep the host part short enough for the 128-byte limit. */
        snprintf(self->name, sizeof self->name, "%.100s:%d:%08x", self->host, (int)getpid(), rnd);
    }
    self->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    self->out = dist_wire_buf_new(0);
    if (self->wake_fd < 0 || !self->out) {
        int e = errno ? errno : ENOMEM;
        s_free(self);
        errno = e;
        return NULL;
    }
    return self;
}

dist_client_t *dist_client_new(const dist_client_opts_t *opts)
{
    dist_client_opts_t o = { 0 };
    if (opts)
        o = *opts;
    dist__logger_t lg = { o.log, o.log_userdata, o.log_level, "client" };
    dist__conn_opts_t co = { o.master, o.key, o.server_key, o.insecure, 0, "client" };
    bool bad = o.connect_timeout_ms < 0 || (o.name && !dist__peer_name_ok(o.name, strlen(o.name)));
    int e = bad ? EINVAL : dist__conn_check(&co, &lg);
    dist_client_t *self = e ? NULL : s_alloc(&o, &lg);
    if (!self) {
        errno = e ? e : errno;
        return NULL;
    }
    co.max_message = self->own_max_message;
    if ((e = dist__conn_open(&self->conn, &co, &self->log)) != 0) {
        s_free(self);
        errno = e;
        return NULL;
    }
    dist__client_lock(self);
    s_send_hello(self);
    dist__wait_t w = { .ready = s_welcomed };
    int rc = dist__client_run(self, &w, dist__deadline(self->connect_timeout_ms));
    dist__client_unlock(self);
    if (rc == DIST_ETIMEDOUT && self->conn.why[0] && self->conn.why_final) {
        /* Every handshake failed for a reason waiting will not cure (our
         * keys, or the lack of them, logged as it happened): a refusal,
         * not a silent master. */
        rc = DIST_EREFUSED;
    } else if (rc == DIST_ETIMEDOUT) {
        rc = DIST_ENOMASTER;
        /* The caller gets the code: this is only a note. */
        dist__log(&lg, DIST_LOG_INFO, "no master answered at %s within %d ms%s",
                  self->conn.endpoint, self->connect_timeout_ms,
                  self->conn.secure ? " (with CURVE, a master whose key is not the server key "
                                      "we were given stays silent)" : "");
    }
    if (rc) {
        s_free(self);
        errno = -rc;
        return NULL;
    }
    return self;
}

void dist_client_destroy(dist_client_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_client_t *self = *self_p;
    dist__client_lock(self);
    while (self->io_busy)
        pthread_cond_wait(&self->cv, &self->mu);
    self->io_busy = true;
    s_drain(self); /* take (and acknowledge) what already arrived */
    if (self->connected) {
        s_flush_acks(self);
        s_send(self, DIST__CMD_BYE, NULL, 0);
    }
    if (self->dropped || self->malformed)
        dist__log(&self->log, DIST_LOG_DEBUG, "%llu duplicate or unclaimed results dropped, "
                  "%llu malformed messages", (unsigned long long)self->dropped,
                  (unsigned long long)self->malformed);
    dist__client_unlock(self);
    s_free(self);
    *self_p = NULL;
}

const char *dist_client_name(const dist_client_t *self) { return self ? self->name : NULL; }

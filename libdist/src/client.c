/*  client.c - the client side of docs/PROTOCOL.md: HELLO/WELCOME, task
 *  submission (SUBMIT/ACCEPTED), results (RESULTS/ACK), named queues
 *  (QPUT/QGET/QREPLY) and STATUS, over one DEALER socket.
 *
 *  Contract (see dist/client.h): a task id is random and known to the
 *  client before it is sent; every id waiting for its answer is in a hash
 *  map from id to its slot (inside a future, or in a map's slot array).
 *  A result is stored in its slot, taken out of the id map, and only then
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
#include "dist/client.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>
#include <zmq.h>

#include "dist/error.h"
#include "log_internal.h"
#include "proto_internal.h"
#include "util_internal.h"
#include "value_internal.h"

#define S_ENDPOINT_DEFAULT "tcp://127.0.0.1:5555"
#define S_CONNECT_TIMEOUT_MS 5000
#define S_HELLO_EVERY_MS 1000     /* section 4: repeat HELLO every second */
#define S_MAP_IN_FLIGHT 100000    /* most tasks of one map sent and not answered */
#define S_MAP_BATCHES 32          /* ... and at most this many SUBMITs of it at once */
#define S_TASK_OVERHEAD 64        /* bytes of a packed task map besides name and args */
#define S_BODY_SLACK 1024         /* room left in max_message for the rest of a body */
#define S_DRAIN_MAX 256           /* messages read in one round before sending again */
#define S_REPLY_GRACE_MS 2000     /* how much longer than its timeout a request waits */
#define S_ARENA_CHUNK ((size_t)256 << 10)
#define S_BACKOFF_MIN_MS 10
#define S_BACKOFF_MAX_MS 1000

static const char s_oom[] = "out of memory";
static const char s_too_large[] = "the task's arguments exceed the master's message size limit";

/* ---- slots and the id map ------------------------------------------------ */

typedef struct s_job s_job_t;

enum { SL_NEW = 0, SL_SENT, SL_ACCEPTED, SL_REJECTED, SL_DONE };

/* One submitted task, from before it is sent until its result. */
typedef struct {
    dist__id_t id;
    s_job_t *job;     /* the map it belongs to; NULL: the slot of a future */
    size_t index;     /* its input index in the map */
    uint32_t batch;   /* the SUBMIT that carries it, while SL_SENT */
    uint8_t state;
    bool mapped;      /* in the id map */
} s_slot_t;

struct dist_future {
    s_slot_t slot;    /* first member: a slot without a job is a future */
    dist_client_t *client;
    dist_result_t *result;
};

/* Open addressing with linear probing and backward-shift deletion, so
 * that removals leave no tombstones behind in a long-running client. */
typedef struct {
    s_slot_t **tab;
    size_t mask; /* capacity - 1; capacity is a power of two */
    size_t n;
} s_idmap_t;

static inline size_t s_id_hash(const dist__id_t *id)
{
    /* Ids are random, but a map's ids come from one getrandom call and a
     * peer could send anything: mix both halves anyway. */
    uint64_t a, b;
    memcpy(&a, id->b, 8);
    memcpy(&b, id->b + 8, 8);
    uint64_t h = a ^ (b * 0x9e3779b97f4a7c15ull);
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return (size_t)h;
}

static s_slot_t *s_idmap_find(const s_idmap_t *m, const dist__id_t *id)
{
    if (!m->n)
        return NULL;
    for (size_t i = s_id_hash(id) & m->mask;; i = (i + 1) & m->mask) {
        s_slot_t *s = m->tab[i];
        if (!s)
            return NULL;
        if (dist__id_eq(&s->id, id))
            return s;
    }
}

static void s_idmap_place(s_slot_t **tab, size_t mask, s_slot_t *s)
{
    size_t i = s_id_hash(&s->id) & mask;
    while (tab[i])
        i = (i + 1) & mask;
    tab[i] = s;
}

/* Makes room for `more` entries at a load of at most one half. */
static int s_idmap_reserve(s_idmap_t *m, size_t more)
{
    size_t cap = m->tab ? m->mask + 1 : 0;
    if ((m->n + more) * 2 <= cap)
        return 0;
    size_t ncap = cap ? cap : 64;
    while ((m->n + more) * 2 > ncap)
        ncap *= 2;
    s_slot_t **tab = calloc(ncap, sizeof *tab);
    if (!tab)
        return DIST_ENOMEM;
    for (size_t i = 0; i < cap; i++)
        if (m->tab[i])
            s_idmap_place(tab, ncap - 1, m->tab[i]);
    free(m->tab);
    m->tab = tab;
    m->mask = ncap - 1;
    return 0;
}

/* The caller reserved room first. */
static void s_idmap_put(s_idmap_t *m, s_slot_t *s)
{
    s_idmap_place(m->tab, m->mask, s);
    m->n++;
    s->mapped = true;
}

static void s_idmap_del(s_idmap_t *m, s_slot_t *s)
{
    if (!s->mapped)
        return;
    size_t i = s_id_hash(&s->id) & m->mask;
    while (m->tab[i] != s)
        i = (i + 1) & m->mask;
    /* Backward shift: move up every later entry of the cluster whose home
     * is not between the hole and itself. */
    for (size_t j = (i + 1) & m->mask; m->tab[j]; j = (j + 1) & m->mask) {
        size_t k = s_id_hash(&m->tab[j]->id) & m->mask;
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            m->tab[i] = m->tab[j];
            i = j;
        }
    }
    m->tab[i] = NULL;
    m->n--;
    s->mapped = false;
    if (m->n == 0 && m->mask >= 4096) { /* give back what a big map used */
        free(m->tab);
        m->tab = NULL;
        m->mask = 0;
    }
}

/* ---- the outbox ------------------------------------------------------------ */

/* A SUBMIT waiting for its ACCEPTED. The body is kept to send it again
 * after a reconnect. Kept sorted by seq. */
typedef struct {
    uint32_t seq;
    uint32_t pending; /* its tasks not yet accepted or rejected */
    bool sent;
    const void *owner; /* the call or map that sent it */
    void *body;
    size_t len;
} s_batch_t;

/* A QPUT, QGET or STATUS waiting for its reply. Lives on the caller's
 * stack, or on the heap when orphaned (see s_on_reply). */
typedef struct s_req {
    struct s_req *next;
    uint64_t req;
    dist__cmd_t cmd;
    void *body; /* owned */
    size_t len;
    bool sent, done;
    bool abandoned; /* the caller gave up: a late QGET reply is put back */
    bool heap;      /* free it when done */
    char queue[DIST__NAME_MAX + 1];
    int code;
    dist_wire_msg_t *reply; /* owned */
} s_req_t;

/* ---- the client -------------------------------------------------------------- */

struct dist_client {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool io_busy;      /* a thread owns the socket (pumps or flushes) */
    int wake_fd;       /* eventfd: "the outbox has something new" */
    zsock_t *sock;
    void *zh;
    dist__logger_t log;
    char *endpoint;
    char name[DIST__NAME_MAX + 1];
    char host[256];
    char master[DIST__NAME_MAX + 1]; /* its name from WELCOME */
    int connect_timeout_ms;
    size_t max_message;   /* ours, then the smaller of ours and the master's */
    size_t own_max_message;
    size_t max_batch;
    int heartbeat_ms, heartbeat_timeout_ms;
    dist_wire_limits_t limits;

    bool connected;  /* welcomed and not told RECONNECT since */
    bool welcomed_once;
    bool lost;       /* the master has been silent too long: say HELLO again */
    int fatal;       /* the master refuses to talk to us (version, ban) */
    int64_t last_sent_ns, last_heard_ns, last_hello_ns;
    bool blocked;    /* a send hit the high-water mark: retry soon */

    s_idmap_t ids;
    s_batch_t *batches;
    size_t nbatches, capbatches;
    uint32_t next_seq;
    s_req_t *reqs;
    uint64_t next_req;
    dist__id_t *acks;
    size_t nacks, capacks;
    dist_wire_buf_t *out; /* scratch for small bodies */
    uint64_t dropped, malformed;
};

static void s_lock(dist_client_t *self) { pthread_mutex_lock(&self->mu); }
static void s_unlock(dist_client_t *self) { pthread_mutex_unlock(&self->mu); }

/* Tells a thread blocked in zmq_poll that the outbox has changed. */
static void s_wake(dist_client_t *self)
{
    if (self->io_busy) {
        uint64_t one = 1;
        ssize_t r = write(self->wake_fd, &one, sizeof one);
        (void)r; /* EAGAIN: the counter is already non-zero */
    }
}

static int s_send(dist_client_t *self, dist__cmd_t cmd, const void *body, size_t len)
{
    int rc = dist__proto_send(self->sock, NULL, 0, cmd, body, len);
    if (rc == 0)
        self->last_sent_ns = dist__now_ns();
    else if (rc == DIST_EAGAIN)
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
    dist_wire_buf_reset(self->out);
    msgpack_packer *pk = dist_wire_buf_packer(self->out);
    msgpack_pack_map(pk, 5);
    dist__pk_kv_str(pk, "role", "client");
    dist__pk_kv_str(pk, "name", self->name);
    dist__pk_kv_str(pk, "host", self->host);
    dist__pk_kv_u64(pk, "pid", (uint64_t)getpid());
    dist__pk_kv_str(pk, "version", DIST_VERSION_STRING);
    self->last_hello_ns = dist__now_ns();
    s_send_out(self, DIST__CMD_HELLO);
}

/* ---- batches ----------------------------------------------------------------- */

static s_batch_t *s_batch_find(dist_client_t *self, uint32_t seq)
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

static void s_batch_remove(dist_client_t *self, s_batch_t *b)
{
    free(b->body);
    size_t i = (size_t)(b - self->batches);
    memmove(b, b + 1, (self->nbatches - i - 1) * sizeof *b);
    self->nbatches--;
}

/* One task of a SUBMIT was answered (accepted, rejected, or its result
 * came first). */
static void s_batch_answered(dist_client_t *self, s_slot_t *s)
{
    s_batch_t *b = s_batch_find(self, s->batch);
    if (b && --b->pending == 0)
        s_batch_remove(self, b);
}

static void s_batches_drop_owner(dist_client_t *self, const void *owner)
{
    for (size_t i = 0; i < self->nbatches;)
        if (self->batches[i].owner == owner)
            s_batch_remove(self, &self->batches[i]);
        else
            i++;
}

static bool s_batches_of(const dist_client_t *self, const void *owner)
{
    for (size_t i = 0; i < self->nbatches; i++)
        if (self->batches[i].owner == owner)
            return true;
    return false;
}

/* Bytes a task takes in a SUBMIT body (an upper bound). */
static size_t s_task_bytes(size_t task_len, size_t args_len)
{
    return S_TASK_OVERHEAD + task_len + args_len;
}

static size_t s_body_room(const dist_client_t *self)
{
    return self->max_message > 2 * S_BODY_SLACK ? self->max_message - S_BODY_SLACK
                                                : self->max_message / 2;
}

/* Packs one SUBMIT of `count` tasks of one name, gives each slot a random
 * id, puts the slots in the id map and the body in the outbox. 0 or
 * DIST_ENOMEM (nothing changed then). */
static int s_batch_add(dist_client_t *self, const void *owner, const char *task, size_t task_len,
                       uint32_t timeout_ms, s_slot_t **slots, const dist_bytes_t **args,
                       size_t count)
{
    if (self->nbatches == self->capbatches) {
        size_t cap = self->capbatches ? self->capbatches * 2 : 16;
        s_batch_t *grown = realloc(self->batches, cap * sizeof *grown);
        if (!grown)
            return DIST_ENOMEM;
        self->batches = grown;
        self->capbatches = cap;
    }
    if (s_idmap_reserve(&self->ids, count))
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
    msgpack_pack_map(pk, 1);
    dist__pk_str(pk, "tasks");
    msgpack_pack_array(pk, count);
    for (size_t i = 0; i < count; i++) {
        s_slot_t *s = slots[i];
        s->id = ids[i];
        dist__task_t t = { .id = s->id, .task = task, .task_len = task_len,
                           .args = args[i]->data, .args_len = args[i]->len,
                           .timeout_ms = timeout_ms };
        dist__pack_task(pk, &t, false);
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
        slots[i]->state = SL_SENT;
        slots[i]->batch = seq;
        s_idmap_put(&self->ids, slots[i]);
    }
    self->batches[self->nbatches++] = (s_batch_t){ .seq = seq, .pending = (uint32_t)count,
                                                   .owner = owner, .body = body, .len = len };
    s_wake(self);
    return 0;
}

/* ---- requests (QPUT, QGET, STATUS) ---------------------------------------------- */

static s_req_t *s_req_find(dist_client_t *self, uint64_t req)
{
    for (s_req_t *r = self->reqs; r; r = r->next)
        if (r->req == req)
            return r;
    return NULL;
}

static void s_req_unlink(dist_client_t *self, s_req_t *q)
{
    for (s_req_t **p = &self->reqs; *p; p = &(*p)->next)
        if (*p == q) {
            *p = q->next;
            return;
        }
}

static void s_req_clear(s_req_t *q)
{
    free(q->body);
    q->body = NULL;
    dist_wire_msg_destroy(&q->reply);
}

/* Frees a request that lives on the heap (an abandoned one). */
static void s_req_drop(s_req_t *q)
{
    s_req_clear(q);
    free(q);
}

/* Gives the request a number, packs its body with fill() (which packs the
 * fields after "req": `nfields` of them) and queues it. */
static int s_req_start(dist_client_t *self, s_req_t *q, dist__cmd_t cmd, size_t nfields,
                       void (*fill)(msgpack_packer *pk, const void *arg), const void *arg)
{
    q->req = ++self->next_req;
    q->cmd = cmd;
    dist_wire_buf_t *buf = dist_wire_buf_new(0);
    if (!buf)
        return DIST_ENOMEM;
    msgpack_packer *pk = dist_wire_buf_packer(buf);
    msgpack_pack_map(pk, 1 + nfields);
    dist__pk_kv_u64(pk, "req", q->req);
    if (fill)
        fill(pk, arg);
    int st = dist_wire_buf_status(buf);
    if (!st)
        q->body = dist_wire_buf_release(buf, &q->len);
    dist_wire_buf_destroy(&buf);
    if (st)
        return st;
    q->next = self->reqs;
    self->reqs = q;
    s_wake(self);
    return 0;
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
        msgpack_pack_map(pk, 1);
        dist__pk_str(pk, "ids");
        msgpack_pack_array(pk, n);
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
    if (self->connected && !self->lost &&
        now - self->last_heard_ns > (int64_t)self->heartbeat_timeout_ms * 1000000) {
        self->lost = true;
        self->last_hello_ns = 0; /* say it now */
        dist__log(&self->log, DIST_LOG_WARN, "master %s silent for %d ms: saying HELLO again",
                  self->endpoint, self->heartbeat_timeout_ms);
    }
    if ((!self->connected || self->lost) &&
        now - self->last_hello_ns >= (int64_t)S_HELLO_EVERY_MS * 1000000)
        s_send_hello(self);
    if (!self->connected)
        return; /* section 4: nothing but HELLO before WELCOME */
    if (idle || self->nacks >= self->max_batch)
        s_flush_acks(self);
    for (size_t i = 0; i < self->nbatches && !self->blocked; i++) {
        s_batch_t *b = &self->batches[i];
        if (!b->sent && s_send(self, DIST__CMD_SUBMIT, b->body, b->len) != DIST_EAGAIN)
            b->sent = true; /* a hard failure is not retried; the wait times out */
    }
    for (s_req_t *q = self->reqs; q && !self->blocked; q = q->next)
        if (!q->sent && !q->done && q->body && s_send(self, q->cmd, q->body, q->len) != DIST_EAGAIN)
            q->sent = true;
    if (!self->blocked && now - self->last_sent_ns >= (int64_t)self->heartbeat_ms * 1000000)
        s_send(self, DIST__CMD_HEARTBEAT, NULL, 0);
}

/* ---- dispatching what arrives -------------------------------------------------------- */

static void s_job_deliver(s_job_t *j, size_t index, int code, const char *data, size_t len);
static void s_job_refused(dist_client_t *self, s_job_t *j, s_slot_t *s, int code, const char *msg,
                          size_t len);

/* The code a SUBMIT rejection maps to (section 6.4); *retry for the codes
 * that say "try again later". */
static int s_reject_code(const char *s, size_t n, bool *retry)
{
    *retry = false;
#define S_IS(lit) (n == sizeof lit - 1 && memcmp(s, lit, n) == 0)
    if (S_IS("unknown_task"))
        return DIST_ENOENT;
    if (S_IS("too_large"))
        return DIST_EMSGSIZE;
    if (S_IS("queue_full") || S_IS("store_failed")) {
        *retry = true;
        return DIST_EFULL;
    }
    return DIST_EREFUSED;
}

/* The code a QREPLY status or an ERROR code maps to (section 7a, 8). */
static int s_reply_code(const char *s, size_t n)
{
    if (S_IS("ok"))
        return 0;
    if (S_IS("timeout"))
        return DIST_ETIMEDOUT;
    if (S_IS("full") || S_IS("queue_full"))
        return DIST_EFULL;
    if (S_IS("bad_request") || S_IS("malformed"))
        return DIST_EINVAL;
    if (S_IS("too_large"))
        return DIST_EMSGSIZE;
    if (S_IS("unknown_task"))
        return DIST_ENOENT;
    return DIST_EREFUSED;
#undef S_IS
}

static void s_forgotten(dist_client_t *self)
{
    /* Whatever the master had not answered, it will never answer: send it
     * all again once welcomed. Abandoned requests are simply forgotten. */
    for (size_t i = 0; i < self->nbatches; i++)
        self->batches[i].sent = false;
    for (s_req_t **p = &self->reqs; *p;) {
        s_req_t *q = *p;
        if (q->abandoned && !q->body) { /* a QGET nobody waits for */
            *p = q->next;
            s_req_drop(q);
            continue;
        }
        q->sent = false;
        p = &q->next;
    }
}

static void s_on_welcome(dist_client_t *self, const msgpack_object *b)
{
    uint32_t hb = DIST__HEARTBEAT_MS, hbto = DIST__HEARTBEAT_TIMEOUT_MS, mb = DIST__MAX_BATCH;
    uint32_t mm = 0, pending = 0;
    const char *name = "";
    size_t nlen = 0;
    dist__opt_u32(b, "heartbeat_ms", &hb);
    dist__opt_u32(b, "heartbeat_timeout_ms", &hbto);
    dist__opt_u32(b, "max_batch", &mb);
    dist__opt_u32(b, "max_message", &mm);
    dist__opt_u32(b, "pending_results", &pending);
    dist__opt_str(b, "master", &name, &nlen);
    if (nlen > DIST__NAME_MAX)
        nlen = DIST__NAME_MAX;
    self->heartbeat_ms = hb ? (int)(hb < 3600000 ? hb : 3600000) : DIST__HEARTBEAT_MS;
    self->heartbeat_timeout_ms = hbto ? (int)(hbto < 3600000 ? hbto : 3600000)
                                      : DIST__HEARTBEAT_TIMEOUT_MS;
    self->max_batch = mb ? (mb < DIST__MAX_BATCH ? mb : DIST__MAX_BATCH) : DIST__MAX_BATCH;
    self->max_message = self->own_max_message;
    if (mm >= 4096 && mm < self->max_message)
        self->max_message = mm;
    bool other_master = self->welcomed_once &&
                        (strlen(self->master) != nlen || memcmp(self->master, name, nlen) != 0);
    bool resend = !self->connected || other_master;
    if (resend && self->welcomed_once)
        s_forgotten(self);
    memcpy(self->master, name, nlen);
    self->master[nlen] = 0;
    if (!self->connected || self->lost)
        dist__log(&self->log, self->welcomed_once ? DIST_LOG_INFO : DIST_LOG_DEBUG,
                  "welcomed by master %s at %s as %s (%u results waiting)", self->master,
                  self->endpoint, self->name, pending);
    self->connected = true;
    self->welcomed_once = true;
    self->lost = false;
}

static void s_on_reconnect(dist_client_t *self)
{
    if (self->connected)
        dist__log(&self->log, DIST_LOG_INFO, "master %s does not know us (restarted?): HELLO again",
                  self->endpoint);
    self->connected = false;
    s_forgotten(self);
    /* Every message the old connection sent gets a RECONNECT: one HELLO per
     * burst is enough (the timer repeats it). */
    if (dist__now_ns() - self->last_hello_ns > 100 * 1000000)
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

static void s_on_accepted(dist_client_t *self, const msgpack_object *b)
{
    const msgpack_object *ids, *rej;
    size_t n, nrej;
    if (dist__get_array(b, "ids", &ids, &n))
        n = 0;
    if (dist__get_array(b, "rejected", &rej, &nrej))
        nrej = 0;
    for (size_t i = 0; i < n; i++) {
        const void *p;
        size_t len;
        dist__id_t id;
        if (dist_wire_get_bin(&ids[i], &p, &len) || len != sizeof id.b)
            continue;
        memcpy(id.b, p, sizeof id.b);
        s_slot_t *s = s_idmap_find(&self->ids, &id);
        if (!s || s->state != SL_SENT)
            continue;
        s->state = SL_ACCEPTED;
        s_batch_answered(self, s);
        if (s->job)
            s_job_refused(self, s->job, s, 0, NULL, 0); /* code 0: accepted */
    }
    for (size_t i = 0; i < nrej; i++) {
        dist__id_t id;
        const char *code = "", *msg = "";
        size_t clen = 0, mlen = 0;
        if (dist__get_id(&rej[i], "id", &id))
            continue;
        dist__opt_str(&rej[i], "code", &code, &clen);
        dist__opt_str(&rej[i], "error", &msg, &mlen);
        s_slot_t *s = s_idmap_find(&self->ids, &id);
        if (!s || s->state != SL_SENT)
            continue;
        bool retry;
        int rc = s_reject_code(code, clen, &retry);
        s_batch_answered(self, s);
        s_idmap_del(&self->ids, s);
        if (s->job) {
            s_job_refused(self, s->job, s, retry ? 1 : rc, msg, mlen);
            continue;
        }
        s->state = SL_REJECTED;
        dist_future_t *f = (dist_future_t *)s;
        dist_result_destroy(&f->result);
        f->result = dist__result_new(rc, mlen ? msg : dist_strerror(rc),
                                     mlen ? mlen : strlen(dist_strerror(rc)));
        dist__log(&self->log, DIST_LOG_DEBUG, "task refused: %.*s: %.*s", (int)clen, code,
                  (int)mlen, msg);
    }
}

static void s_on_results(dist_client_t *self, const msgpack_object *b)
{
    const msgpack_object *items;
    size_t n;
    if (dist__get_array(b, "results", &items, &n)) {
        self->malformed++;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        dist__result_t r;
        if (dist__parse_result(&items[i], false, &r)) {
            self->malformed++;
            continue;
        }
        s_slot_t *s = s_idmap_find(&self->ids, &r.id);
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
            dist_result_destroy(&f->result);
            f->result = res;
        }
        if (s->state == SL_SENT)
            s_batch_answered(self, s);
        s->state = SL_DONE;
        s_idmap_del(&self->ids, s);
        if (s->job)
            s_job_deliver(s->job, s->index, code, data, len);
        s_ack_push(self, &r.id);
    }
}

/* Puts the items of a QGET reply nobody waits for any more back into
 * their queue, so that a late reply loses nothing. */
static void s_put_back(dist_client_t *self, const char *queue, const msgpack_object *items,
                       size_t n);

static void s_on_reply(dist_client_t *self, dist__inmsg_t *m)
{
    uint64_t req;
    if (dist__get_u64(m->root, "req", &req)) {
        self->malformed++;
        return;
    }
    s_req_t *q = s_req_find(self, req);
    if (!q || q->done || (m->cmd == DIST__CMD_STATUS) != (q->cmd == DIST__CMD_STATUS))
        return;
    int code = 0;
    if (m->cmd == DIST__CMD_QREPLY) {
        const char *st;
        size_t stn;
        code = dist__get_str(m->root, "status", &st, &stn) ? DIST_EPROTO : s_reply_code(st, stn);
    }
    if (q->abandoned) {
        const msgpack_object *items;
        size_t n;
        if (q->cmd == DIST__CMD_QGET && !dist__get_array(m->root, "items", &items, &n) && n)
            s_put_back(self, q->queue, items, n);
        s_req_unlink(self, q);
        s_req_drop(q);
        return;
    }
    q->done = true;
    q->code = code;
    q->reply = m->body; /* the caller reads it */
    m->body = NULL;
    m->root = NULL;
}

static void s_on_error(dist_client_t *self, const msgpack_object *b)
{
    const char *code = "", *msg = "";
    size_t clen = 0, mlen = 0;
    uint64_t req = 0;
    dist__opt_str(b, "code", &code, &clen);
    dist__opt_str(b, "error", &msg, &mlen);
    if (dist_wire_map_get(b, "req") && !dist__get_u64(b, "req", &req)) {
        s_req_t *q = s_req_find(self, req);
        if (q && !q->done) {
            dist__log(&self->log, DIST_LOG_WARN, "master: %.*s: %.*s", (int)clen, code, (int)mlen,
                      msg);
            if (q->abandoned) {
                s_req_unlink(self, q);
                s_req_drop(q);
            } else {
                q->done = true;
                q->code = s_reply_code(code, clen);
                if (q->code == 0)
                    q->code = DIST_EREFUSED;
            }
            return;
        }
    }
#define S_CODE(lit) (clen == sizeof lit - 1 && memcmp(code, lit, clen) == 0)
    if (S_CODE("not_welcome")) {
        s_on_reconnect(self);
        return;
    }
    dist_log_level_t lvl = DIST_LOG_WARN;
    if (S_CODE("unsupported_version")) {
        self->fatal = DIST_EPROTO;
        lvl = DIST_LOG_ERROR;
    } else if (S_CODE("banned") || S_CODE("forbidden")) {
        self->fatal = DIST_EREFUSED;
        lvl = DIST_LOG_ERROR;
    }
#undef S_CODE
    dist__log(&self->log, lvl, "master %s: %.*s: %.*s", self->endpoint, (int)clen, code,
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
    case DIST__CMD_STATUS: s_on_reply(self, m); break;
    case DIST__CMD_ERROR: s_on_error(self, m->root); break;
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
        int rc = dist__proto_recv(self->sock, false, &self->limits, &m);
        if (rc == DIST_EAGAIN)
            break;
        n++;
        if (rc == DIST_EPROTO) {
            self->malformed++;
            if (m.bad == DIST__BAD_VERSION) {
                self->fatal = DIST_EPROTO;
                dist__log(&self->log, DIST_LOG_ERROR,
                          "master %s speaks protocol version %d, this client version %d",
                          self->endpoint, m.version, DIST__PROTO_VERSION);
            }
            continue;
        }
        if (rc < 0)
            break;
        self->last_heard_ns = dist__now_ns();
        s_dispatch(self, &m);
        dist__inmsg_clear(&m);
    }
    return n;
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
    int64_t next = self->connected && !self->lost
                       ? self->last_sent_ns + (int64_t)self->heartbeat_ms * 1000000
                       : self->last_hello_ns + (int64_t)S_HELLO_EVERY_MS * 1000000;
    if (next < t)
        t = next;
    if (self->connected && !self->lost) {
        int64_t silent = self->last_heard_ns + (int64_t)self->heartbeat_timeout_ms * 1000000 + 1;
        if (silent < t)
            t = silent;
    }
    if (self->blocked && now + 10 * 1000000 < t)
        t = now + 10 * 1000000;
    long ms = t == INT64_MAX ? -1 : t <= now ? 0 : (long)((t - now + 999999) / 1000000);
    zmq_pollitem_t items[2] = {
        { self->zh, 0, ZMQ_POLLIN, 0 },
        { NULL, self->wake_fd, ZMQ_POLLIN, 0 },
    };
    s_unlock(self);
    int rc = zmq_poll(items, 2, ms);
    s_lock(self);
    if (rc > 0 && items[1].revents) {
        uint64_t v;
        ssize_t r = read(self->wake_fd, &v, sizeof v);
        (void)r;
    }
    s_drain(self);
    s_housekeeping(self, false);
}

/* ---- waiting ------------------------------------------------------------------------ */

typedef struct {
    bool (*ready)(dist_client_t *self, void *arg);
    void (*step)(dist_client_t *self, void *arg); /* queues more to send; may be NULL */
    void *arg;
    /* Non-NULL and true: give up with DIST_ENOMASTER when the master has
     * been silent for connect_timeout_ms. */
    const bool *live;
} s_wait_t;

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
static void s_ack_now(dist_client_t *self)
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
static int s_run(dist_client_t *self, const s_wait_t *w, int64_t deadline)
{
    int64_t start = dist__now_ns();
    bool pumped = false;
    for (;;) {
        if (w->step)
            w->step(self, w->arg);
        if (w->ready(self, w->arg)) {
            if (!w->step) /* a map comes back at once: it acknowledges at its end */
                s_ack_now(self);
            return 0;
        }
        if (self->fatal)
            return self->fatal;
        int64_t now = dist__now_ns();
        int64_t until = deadline;
        if (w->live && *w->live) {
            int64_t heard = self->last_heard_ns > start ? self->last_heard_ns : start;
            int64_t end = heard + (int64_t)self->connect_timeout_ms * 1000000;
            if (now >= end && pumped)
                return DIST_ENOMASTER;
            if (end < until)
                until = end;
        }
        if (now >= deadline && (pumped || self->io_busy))
            return DIST_ETIMEDOUT;
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

/* ---- maps ----------------------------------------------------------------------------- */

typedef struct {
    size_t index;
    int code;
    size_t off, len; /* in rbuf; off SIZE_MAX: the static "out of memory" */
} s_report_t;

struct s_job {
    const char *task;
    size_t task_len;
    uint32_t task_timeout;
    const dist_bytes_t *items;
    size_t n;
    s_slot_t *slots;
    size_t next;       /* first item never submitted */
    size_t *retry;     /* items refused with "retry later" */
    size_t nretry, capretry;
    int64_t retry_at;
    int backoff_ms;
    size_t in_flight;  /* sent, not answered by a result */
    size_t done;
    size_t limit;      /* most in flight */
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
    bool report_progress;
    size_t reported;
};

/* Copies a value or message into memory that lives as long as the
 * results container; NULL on ENOMEM. */
static char *s_arena_copy(s_job_t *j, const char *data, size_t len)
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

static void s_job_deliver(s_job_t *j, size_t index, int code, const char *data, size_t len)
{
    if (code && len && data[len - 1] == 0)
        len--;
    j->done++;
    if (j->slots[index].state == SL_SENT || j->slots[index].state == SL_ACCEPTED ||
        j->slots[index].state == SL_DONE)
        j->in_flight--;
    j->slots[index].state = SL_DONE;
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
            j->done--; /* cannot report it: count it again when it times out */
            j->slots[index].state = SL_ACCEPTED;
            j->in_flight++;
            return;
        }
        j->rep = grown;
        j->caprep = cap;
    }
    j->rep[j->nrep++] = rep;
}

static void s_job_fail_item(s_job_t *j, size_t index, int code, const char *msg)
{
    j->slots[index].state = SL_SENT; /* counted as in flight by deliver */
    j->in_flight++;
    s_job_deliver(j, index, code, msg, strlen(msg));
}

/* ACCEPTED news for a map's slot: code 0 accepted, 1 "retry later",
 * otherwise the item fails with that code and the master's message. */
static void s_job_refused(dist_client_t *self, s_job_t *j, s_slot_t *s, int code, const char *msg,
                          size_t len)
{
    if (code == 0) {
        j->waiting = false;
        j->backoff_ms = 0;
        return;
    }
    if (code == 1) {
        s->state = SL_NEW;
        j->in_flight--;
        if (j->nretry == j->capretry) {
            size_t cap = j->capretry ? j->capretry * 2 : 64;
            size_t *grown = realloc(j->retry, cap * sizeof *grown);
            if (!grown) {
                s_job_fail_item(j, s->index, DIST_ENOMEM, s_oom);
                return;
            }
            j->retry = grown;
            j->capretry = cap;
        }
        j->retry[j->nretry++] = s->index;
        j->backoff_ms = j->backoff_ms ? j->backoff_ms * 2 : S_BACKOFF_MIN_MS;
        if (j->backoff_ms > S_BACKOFF_MAX_MS)
            j->backoff_ms = S_BACKOFF_MAX_MS;
        j->retry_at = dist__now_ns() + (int64_t)j->backoff_ms * 1000000;
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
    s_job_deliver(j, s->index, code, text, tlen);
}

/* Queues as many SUBMITs as the in-flight bound allows. */
static void s_job_step(dist_client_t *self, void *arg)
{
    s_job_t *j = arg;
    if (j->stop_code) {
        const char *msg = j->stop_msg ? j->stop_msg : dist_strerror(j->stop_code);
        while (j->nretry)
            s_job_fail_item(j, j->retry[--j->nretry], j->stop_code, msg);
        while (j->next < j->n)
            s_job_fail_item(j, j->next++, j->stop_code, msg);
        return;
    }
    bool retry_ok = j->nretry && dist__now_ns() >= j->retry_at;
    if (j->in_flight >= j->limit || (!retry_ok && j->next >= j->n))
        return;
    /* Refill by whole batches: topping up a few tasks at a time as results
     * trickle in would send many tiny SUBMITs. */
    size_t room = j->limit - j->in_flight, left = j->n - j->next + j->nretry;
    size_t want = self->max_batch < j->limit / 2 ? self->max_batch : j->limit / 2;
    if (room < want && room < left)
        return;
    size_t bytes_room = s_body_room(self);
    size_t cap = self->max_batch;
    s_slot_t *slots[64];
    const dist_bytes_t *args[64];
    s_slot_t **ps = cap <= 64 ? slots : malloc(cap * sizeof *ps);
    const dist_bytes_t **pa = cap <= 64 ? args : malloc(cap * sizeof *pa);
    if (!ps || !pa) {
        j->stop_code = DIST_ENOMEM; /* the next step fails what is left */
        retry_ok = false;
        j->limit = 0;
    }
    while (j->in_flight < j->limit && (retry_ok || j->next < j->n)) {
        size_t count = 0, bytes = 0;
        while (count < cap && j->in_flight + count < j->limit) {
            size_t idx;
            if (retry_ok && j->nretry)
                idx = j->retry[j->nretry - 1];
            else if (j->next < j->n)
                idx = j->next;
            else
                break;
            size_t tb = s_task_bytes(j->task_len, j->items[idx].len);
            if (tb > bytes_room) { /* alone it is too large: fail it here */
                if (retry_ok && j->nretry)
                    j->nretry--;
                else
                    j->next++;
                s_job_fail_item(j, idx, DIST_EMSGSIZE, s_too_large);
                continue;
            }
            if (bytes + tb > bytes_room)
                break;
            bytes += tb;
            if (retry_ok && j->nretry)
                j->nretry--;
            else
                j->next++;
            s_slot_t *s = &j->slots[idx];
            s->job = j;
            s->index = idx;
            ps[count] = s;
            pa[count] = &j->items[idx];
            count++;
        }
        if (!count)
            break;
        if (s_batch_add(self, j, j->task, j->task_len, j->task_timeout, ps, pa, count)) {
            for (size_t i = 0; i < count; i++)
                s_job_fail_item(j, ps[i]->index, DIST_ENOMEM, s_oom);
            break;
        }
        j->in_flight += count;
        if (!j->nretry)
            retry_ok = false;
    }
    if (ps != slots)
        free(ps);
    if (pa != args)
        free(pa);
}

static bool s_job_ready(dist_client_t *self, void *arg)
{
    (void)self;
    s_job_t *j = arg;
    return j->done == j->n || (j->unordered && j->nrep) ||
           (j->report_progress && j->done != j->reported);
}

/* Hands what arrived to the caller's callbacks, with the mutex released
 * (a callback may take its time, and other threads go on meanwhile). */
static void s_job_report(dist_client_t *self, s_job_t *j, dist_progress_fn progress,
                         dist_result_fn on_result, void *userdata)
{
    if (j->unordered && j->nrep) {
        s_report_t *rep = j->rep;
        char *rbuf = j->rbuf;
        size_t nrep = j->nrep, caprep = j->caprep, rcap = j->rcap;
        j->rep = NULL;
        j->rbuf = NULL;
        j->nrep = j->caprep = j->rlen = j->rcap = 0;
        s_unlock(self);
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
        s_lock(self);
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
        s_unlock(self);
        progress(done, j->n, userdata);
        s_lock(self);
    }
}

/* Every item without a result fails with `code`: the map ends. */
static void s_job_abandon(dist_client_t *self, s_job_t *j, int code, const char *msg)
{
    for (size_t i = 0; i < j->n; i++) {
        s_slot_t *s = &j->slots[i];
        if (s->state == SL_DONE)
            continue;
        s_idmap_del(&self->ids, s);
        if (s->state == SL_NEW)
            s_job_fail_item(j, i, code, msg);
        else
            s_job_deliver(j, i, code, msg, strlen(msg));
    }
    s_batches_drop_owner(self, j);
}

static int s_map(dist_client_t *self, const char *task, const dist_bytes_t *items, size_t n,
                 int task_timeout_ms, int timeout_ms, dist_progress_fn progress,
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
    s_job_t j = { .task = task, .task_len = strlen(task),
                  .task_timeout = task_timeout_ms > 0 ? (uint32_t)task_timeout_ms : 0,
                  .items = items, .n = n, .waiting = true, .unordered = !results,
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
    s_lock(self);
    j.limit = self->max_batch * S_MAP_BATCHES;
    if (j.limit > S_MAP_IN_FLIGHT)
        j.limit = S_MAP_IN_FLIGHT;
    s_wait_t w = { s_job_ready, s_job_step, &j, &j.waiting };
    int rc = 0;
    while (j.done < n || j.nrep) {
        rc = s_run(self, &w, deadline);
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
        s_idmap_del(&self->ids, &j.slots[i]);
    s_batches_drop_owner(self, &j);
    s_ack_now(self);
    s_unlock(self);
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
    return rc ? rc : j.failed ? DIST_ETASK : 0;
}

int dist_client_map(dist_client_t *self, const char *task, const dist_bytes_t *items, size_t n,
                    int task_timeout_ms, int timeout_ms, dist_progress_fn progress, void *userdata,
                    dist_results_t **results)
{
    if (!results)
        return DIST_EINVAL;
    return s_map(self, task, items, n, task_timeout_ms, timeout_ms, progress, NULL, userdata,
                 results);
}

int dist_client_map_unordered(dist_client_t *self, const char *task, const dist_bytes_t *items,
                              size_t n, int task_timeout_ms, int timeout_ms,
                              dist_result_fn on_result, void *userdata)
{
    if (!on_result)
        return DIST_EINVAL;
    return s_map(self, task, items, n, task_timeout_ms, timeout_ms, NULL, on_result, userdata,
                 NULL);
}

/* ---- submitting and futures --------------------------------------------------------------- */

typedef struct {
    int tag; /* the owner of this call's batches is the struct's address */
} s_call_t;

static bool s_call_ready(dist_client_t *self, void *arg) { return !s_batches_of(self, arg); }

static void s_future_free(dist_future_t *f)
{
    if (f) {
        dist_result_destroy(&f->result);
        free(f);
    }
}

/* Submits n tasks and waits for their ACCEPTED. Rejected futures are kept
 * (holding the master's message as their result) when keep_rejected. */
static long s_submit(dist_client_t *self, const char *task, const dist_bytes_t *items, size_t n,
                     int task_timeout_ms, dist_future_t **futures, int *errors, bool keep_rejected)
{
    if (!self || !task || !futures || (n && !items) || !dist__name_ok(task, strlen(task)))
        return DIST_EINVAL;
    for (size_t i = 0; i < n; i++) {
        futures[i] = NULL;
        if (errors)
            errors[i] = 0;
    }
    for (size_t i = 0; i < n; i++) {
        futures[i] = calloc(1, sizeof **futures);
        if (!futures[i]) {
            for (size_t k = 0; k < i; k++)
                s_future_free(futures[k]), futures[k] = NULL;
            return DIST_ENOMEM;
        }
        futures[i]->client = self;
    }
    size_t task_len = strlen(task);
    uint32_t tt = task_timeout_ms > 0 ? (uint32_t)task_timeout_ms : 0;
    s_call_t call;
    s_lock(self);
    size_t room = s_body_room(self);
    s_slot_t **ps = malloc(self->max_batch * sizeof *ps);
    const dist_bytes_t **pa = malloc(self->max_batch * sizeof *pa);
    int rc = ps && pa ? 0 : DIST_ENOMEM;
    for (size_t i = 0; i < n && !rc;) {
        size_t count = 0, bytes = 0;
        for (; i < n && count < self->max_batch; i++) {
            size_t tb = s_task_bytes(task_len, items[i].len);
            if (tb > room) {
                futures[i]->slot.state = SL_REJECTED;
                futures[i]->result =
                    dist__result_new(DIST_EMSGSIZE, s_too_large, sizeof s_too_large - 1);
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
            rc = s_batch_add(self, &call, task, task_len, tt, ps, pa, count);
    }
    free(ps);
    free(pa);
    if (!rc) {
        bool live = true;
        s_wait_t w = { s_call_ready, NULL, &call, &live };
        rc = s_run(self, &w, INT64_MAX);
    }
    long accepted = 0;
    for (size_t i = 0; i < n; i++) {
        dist_future_t *f = futures[i];
        if (rc) {
            s_idmap_del(&self->ids, &f->slot);
            continue;
        }
        if (f->slot.state == SL_ACCEPTED || f->slot.state == SL_DONE) {
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
        s_batches_drop_owner(self, &call);
    s_unlock(self);
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
    return s_submit(self, task, items, n, task_timeout_ms, futures, errors, false);
}

dist_future_t *dist_client_submit(dist_client_t *self, const char *task, const void *args,
                                  size_t len, int task_timeout_ms)
{
    dist_bytes_t item = { args, len };
    dist_future_t *f = NULL;
    int err = 0;
    long rc = s_submit(self, task, &item, 1, task_timeout_ms, &f, &err, false);
    if (rc < 0 || !f) {
        errno = -(int)(rc < 0 ? rc : err ? err : DIST_EREFUSED);
        return NULL;
    }
    return f;
}

static bool s_future_ready(dist_client_t *self, void *arg)
{
    (void)self;
    return ((dist_future_t *)arg)->result != NULL;
}

int dist_future_get(dist_future_t *self, int timeout_ms, dist_result_t **result)
{
    if (result)
        *result = NULL;
    if (!self)
        return DIST_EINVAL;
    dist_client_t *c = self->client;
    s_lock(c);
    s_wait_t w = { s_future_ready, NULL, self, NULL };
    int rc = s_run(c, &w, dist__deadline(timeout_ms));
    if (rc == 0) {
        rc = self->result->status;
        if (result)
            *result = self->result;
    }
    s_unlock(c);
    return rc;
}

bool dist_future_ready(dist_future_t *self)
{
    if (!self)
        return false;
    dist_client_t *c = self->client;
    s_lock(c);
    s_wait_t w = { s_future_ready, NULL, self, NULL };
    int rc = s_run(c, &w, 0);
    s_unlock(c);
    return rc == 0;
}

void dist_future_destroy(dist_future_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_future_t *f = *self_p;
    s_lock(f->client);
    /* A result that comes later finds no slot: acknowledged and dropped. */
    s_idmap_del(&f->client->ids, &f->slot);
    if (f->slot.state == SL_SENT)
        s_batch_answered(f->client, &f->slot);
    s_unlock(f->client);
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
    dist_bytes_t item = { args, len };
    dist_future_t *f = NULL;
    int err = 0;
    long rc = s_submit(self, task, &item, 1, 0, &f, &err, true);
    if (rc < 0)
        return (int)rc;
    int st = dist_future_get(f, timeout_ms, NULL);
    if (f->result) {
        *result = f->result; /* the caller owns it now */
        f->result = NULL;
    }
    dist_future_destroy(&f);
    return st;
}

/* ---- named queues and status ---------------------------------------------------------- */

static bool s_req_ready(dist_client_t *self, void *arg)
{
    (void)self;
    return ((s_req_t *)arg)->done;
}

/* The deadline of a request the master may hold for timeout_ms: a little
 * longer, so that the master's own "timeout" answer arrives first. */
static int64_t s_req_deadline(int timeout_ms)
{
    return timeout_ms < 0 ? INT64_MAX
                          : dist__deadline(timeout_ms) + (int64_t)S_REPLY_GRACE_MS * 1000000;
}

/* Waits for the reply of a started request until `deadline`. Returns the
 * reply's code, DIST_ETIMEDOUT when no reply came, DIST_ENOMASTER when
 * the master fell silent. On return the request is out of the list (a
 * QGET given up keeps a copy there, see s_on_reply). */
static int s_req_wait(dist_client_t *self, s_req_t *q, int64_t deadline)
{
    bool live = true;
    s_wait_t w = { s_req_ready, NULL, q, &live };
    int rc = s_run(self, &w, deadline);
    if (rc == 0) {
        rc = q->code;
    } else if (q->cmd == DIST__CMD_QGET && q->sent) {
        /* The master may still answer with items: keep a copy of the
         * request to put them back when it does. */
        s_req_t *h = malloc(sizeof *h);
        s_req_unlink(self, q);
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
    s_req_unlink(self, q);
    return rc;
}

struct s_qput {
    const char *queue;
    const void *const *bufs;
    const size_t *lens;
    size_t n;
    uint32_t timeout;
};

static void s_fill_qput(msgpack_packer *pk, const void *arg)
{
    const struct s_qput *a = arg;
    dist__pk_kv_str(pk, "queue", a->queue);
    dist__pk_str(pk, "items");
    msgpack_pack_array(pk, a->n);
    for (size_t i = 0; i < a->n; i++)
        dist__pk_bin(pk, a->bufs[i], a->lens[i]);
    dist__pk_kv_u64(pk, "timeout_ms", a->timeout);
}

static uint32_t s_wire_timeout(int timeout_ms)
{
    /* The wire has no "forever": the largest u32 is 49 days. */
    return timeout_ms < 0 ? UINT32_MAX : (uint32_t)timeout_ms;
}

static void s_put_back(dist_client_t *self, const char *queue, const msgpack_object *items,
                       size_t n)
{
    s_req_t *q = calloc(1, sizeof *q);
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
        if (s_req_start(self, q, DIST__CMD_QPUT, 3, s_fill_qput, &a) == 0)
            q = NULL;
    }
    if (q || !k)
        dist__log(&self->log, DIST_LOG_WARN, "lost %zu item(s) of queue %s taken after a QGET gave up",
                  n, queue);
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
    s_lock(self);
    if (len + strlen(queue) + 128 > self->max_message) {
        s_unlock(self);
        return DIST_EMSGSIZE;
    }
    s_req_t q = { 0 };
    const void *bufs[1] = { buf ? buf : "" };
    size_t lens[1] = { len };
    struct s_qput a = { queue, bufs, lens, 1, s_wire_timeout(timeout_ms) };
    int rc = s_req_start(self, &q, DIST__CMD_QPUT, 3, s_fill_qput, &a);
    if (!rc)
        rc = s_req_wait(self, &q, s_req_deadline(timeout_ms));
    s_unlock(self);
    s_req_clear(&q);
    if (rc == DIST_ETIMEDOUT) /* the master's "timeout", or no answer at all */
        rc = q.done ? DIST_EFULL : DIST_ENOMASTER;
    return rc;
}

struct s_qget {
    const char *queue;
    uint32_t timeout;
};

static void s_fill_qget(msgpack_packer *pk, const void *arg)
{
    const struct s_qget *a = arg;
    dist__pk_kv_str(pk, "queue", a->queue);
    dist__pk_kv_u64(pk, "max", 1);
    dist__pk_kv_u64(pk, "timeout_ms", a->timeout);
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
    s_lock(self);
    s_req_t q = { 0 };
    snprintf(q.queue, sizeof q.queue, "%s", queue);
    struct s_qget a = { queue, s_wire_timeout(timeout_ms) };
    int rc = s_req_start(self, &q, DIST__CMD_QGET, 3, s_fill_qget, &a);
    if (!rc)
        rc = s_req_wait(self, &q, s_req_deadline(timeout_ms));
    s_unlock(self);
    if (rc == DIST_ETIMEDOUT && !q.done)
        rc = DIST_ENOMASTER; /* not even the master's "timeout" came */
    const msgpack_object *items;
    size_t n;
    if (rc == 0) {
        const void *p;
        size_t plen;
        if (dist__get_array(dist_wire_msg_root(q.reply), "items", &items, &n) || n == 0)
            rc = DIST_ETIMEDOUT; /* "ok" with nothing: nothing came in time */
        else if (dist_wire_get_bin(&items[0], &p, &plen))
            rc = DIST_EPROTO;
        else if (!(*buf = malloc(plen ? plen : 1)))
            rc = DIST_ENOMEM;
        else {
            memcpy(*buf, p, plen);
            *len = plen;
        }
    }
    s_req_clear(&q);
    return rc;
}

int dist_client_status(dist_client_t *self, int timeout_ms, dist_result_t **status)
{
    if (status)
        *status = NULL;
    if (!self || !status)
        return DIST_EINVAL;
    s_lock(self);
    s_req_t q = { 0 };
    int rc = s_req_start(self, &q, DIST__CMD_STATUS, 0, NULL, NULL);
    if (!rc)
        rc = s_req_wait(self, &q, dist__deadline(timeout_ms));
    s_unlock(self);
    if (rc == 0) {
        size_t len;
        const void *data = dist_wire_msg_data(q.reply, &len);
        *status = dist__result_new(0, data, len);
        if (!*status)
            rc = DIST_ENOMEM;
    }
    s_req_clear(&q);
    return rc;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

/* czmq installs SIGINT and SIGTERM handlers that only set a flag when it
 * first creates its context: a library must not change how the program
 * reacts to Ctrl-C. Keep whatever dispositions the program had. */
static zsock_t *s_socket_new(void)
{
    struct sigaction old_int, old_term;
    sigaction(SIGINT, NULL, &old_int);
    sigaction(SIGTERM, NULL, &old_term);
    zsock_t *s = zsock_new(ZMQ_DEALER);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    return s;
}

static bool s_welcomed(dist_client_t *self, void *arg)
{
    (void)arg;
    return self->connected;
}

static void s_free(dist_client_t *self)
{
    while (self->reqs) {
        s_req_t *q = self->reqs;
        self->reqs = q->next;
        if (q->heap)
            s_req_drop(q);
    }
    for (size_t i = 0; i < self->nbatches; i++)
        free(self->batches[i].body);
    free(self->batches);
    free(self->ids.tab);
    free(self->acks);
    dist_wire_buf_destroy(&self->out);
    if (self->sock && !self->connected)
        zsock_set_linger(self->sock, 0); /* nobody to deliver HELLOs to: exit at once */
    zsock_destroy(&self->sock);
    if (self->wake_fd >= 0)
        close(self->wake_fd);
    free(self->endpoint);
    pthread_cond_destroy(&self->cv);
    pthread_mutex_destroy(&self->mu);
    free(self);
}

dist_client_t *dist_client_new(const dist_client_opts_t *opts)
{
    dist_client_opts_t o = { 0 };
    if (opts)
        o = *opts;
    dist__logger_t lg = { o.log, o.log_userdata, o.log_level, "client" };
    const char *key = o.key ? o.key : getenv("DIST_KEY");
    const char *server_key = o.server_key ? o.server_key : getenv("DIST_SERVER_KEY");
    if ((key && *key) || (server_key && *server_key)) {
        dist__log(&lg, DIST_LOG_ERROR, "CURVE keys (key, server_key, $DIST_KEY, $DIST_SERVER_KEY) "
                                       "are not supported yet");
        errno = EINVAL;
        return NULL;
    }
    if (o.connect_timeout_ms < 0 || (o.name && !dist__peer_name_ok(o.name, strlen(o.name)))) {
        errno = EINVAL;
        return NULL;
    }
    char err[128];
    if (dist__zmq_version_ok(err, sizeof err)) {
        dist__log(&lg, DIST_LOG_ERROR, "%s", err);
        errno = ENOTSUP;
        return NULL;
    }
    const char *ep = o.master;
    if (!ep || !*ep)
        ep = getenv("DIST_MASTER");
    if (!ep || !*ep)
        ep = S_ENDPOINT_DEFAULT;

    dist_client_t *self = calloc(1, sizeof *self);
    if (!self) {
        errno = ENOMEM;
        return NULL;
    }
    self->wake_fd = -1;
    pthread_mutex_init(&self->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&self->cv, &ca);
    pthread_condattr_destroy(&ca);
    self->log = lg;
    self->connect_timeout_ms = o.connect_timeout_ms ? o.connect_timeout_ms : S_CONNECT_TIMEOUT_MS;
    self->own_max_message = o.max_message ? o.max_message : DIST__MAX_MESSAGE_DEFAULT;
    if (self->own_max_message < 4096)
        self->own_max_message = 4096;
    self->max_message = self->own_max_message;
    self->max_batch = DIST__MAX_BATCH;
    self->heartbeat_ms = DIST__HEARTBEAT_MS;
    self->heartbeat_timeout_ms = DIST__HEARTBEAT_TIMEOUT_MS;
    self->limits = dist__body_limits(self->own_max_message);
    if (gethostname(self->host, sizeof self->host - 1) != 0 || !self->host[0])
        snprintf(self->host, sizeof self->host, "localhost");
    if (o.name) {
        snprintf(self->name, sizeof self->name, "%s", o.name);
    } else {
        uint32_t rnd = 0;
        if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
            rnd = (uint32_t)dist__now_ns();
        /* Keep the host part short enough for the 128-byte limit. */
        snprintf(self->name, sizeof self->name, "%.100s:%d:%08x", self->host, (int)getpid(), rnd);
    }
    self->endpoint = strdup(ep);
    self->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    self->out = dist_wire_buf_new(0);
    self->sock = s_socket_new();
    if (!self->endpoint || self->wake_fd < 0 || !self->out || !self->sock) {
        int e = errno ? errno : ENOMEM;
        s_free(self);
        errno = e;
        return NULL;
    }
    self->zh = zsock_resolve(self->sock);
    dist__sockopts_t so = { .max_message = self->own_max_message, .linger_ms = -1 };
    dist__sock_setup(self->sock, false, &so);
    if (zsock_connect(self->sock, "%s", ep) != 0) {
        dist__log(&lg, DIST_LOG_ERROR, "cannot connect to %s: %s", ep, zmq_strerror(zmq_errno()));
        s_free(self);
        errno = EINVAL;
        return NULL;
    }
    s_lock(self);
    self->last_heard_ns = dist__now_ns();
    s_send_hello(self);
    s_wait_t w = { s_welcomed, NULL, NULL, NULL };
    int rc = s_run(self, &w, dist__deadline(self->connect_timeout_ms));
    s_unlock(self);
    if (rc) {
        if (rc == DIST_ETIMEDOUT) {
            rc = DIST_ENOMASTER;
            /* The caller gets the code: this is only a note. */
            dist__log(&lg, DIST_LOG_INFO, "no master answered at %s within %d ms", ep,
                      self->connect_timeout_ms);
        }
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
    s_lock(self);
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
    s_unlock(self);
    s_free(self);
    *self_p = NULL;
}

const char *dist_client_name(const dist_client_t *self) { return self ? self->name : NULL; }

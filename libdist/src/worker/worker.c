/*  worker.c - a worker node (dist/worker.h; the protocol is
 *  docs/PROTOCOL.md, sections 4 to 6).
 *
 *  Threads. The thread in dist_worker_run() owns the socket, the records
 *  and every counter. The pool's manager thread only runs s_on_done(),
 *  which puts a finished record on a mutex-protected list and, when the
 *  list was empty, writes the eventfd that the loop polls next to the
 *  socket. dist_worker_stop() bumps a counter and writes the same eventfd:
 *  both are async-signal-safe.
 *
 *  Tasks. Every task received becomes a record: queued here, then handed
 *  to the pool, then answered in RESULTS and recycled - or handed back in
 *  RETURN. Only the pool's size plus about a millisecond of work is handed
 *  to the pool at a time; the rest waits here, so that a drain knows
 *  exactly which tasks never started. Records live in fixed chunks (a
 *  record's address is the pool callback's userdata) and are recycled, and
 *  a record keeps its pool handle, whose result it reads in place: the
 *  worker allocates nothing per task beyond what the pool does. A CANCEL
 *  from the master RETURNs a task that has not started (here or in the
 *  pool) and has the pool stop a running one as a timeout would (its
 *  process killed and replaced): RESULTS status `cancelled`. A task that
 *  called dist_task_retry is answered with status `retry` and its delay.
 *
 *  Credit. capacity = slots + prefetch. prefetch starts at one per slot
 *  and follows the pool's service rate (completions per second of busy
 *  pool, an EWMA) so that it covers about 2 ms of work, between 1 and
 *  max_prefetch, with a dead band (it grows when it covers less than
 *  1.6 ms, shrinks when more than 4 ms, at most twice a second), so
 *  CREDIT is rare. Tasks beyond the announced capacity (a master that
 *  ignores credit, or tasks already in flight when the capacity went down:
 *  those get a second of grace at the old value) are returned at once,
 *  unstarted.
 *
 *  Sessions. After a RECONNECT, or after the master was silent for its
 *  heartbeat timeout, the worker says HELLO again every second. Tasks still
 *  held then belong to the old session: at the next WELCOME the unstarted
 *  ones are RETURNed (the master requeued them, or will take them back),
 *  running ones go on and their results are sent (results are idempotent),
 *  and until they finish the capacity announced is lowered by their number
 *  so that the worker never holds more than slots + prefetch.
 */
#include "dist/worker.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include "builtins_internal.h"
#include "conn_internal.h"
#include "dist/error.h"
#include "dist/pool.h"
#include "dist/task.h"
#include "log_internal.h"
#include "mpcheck_internal.h"
#include "pool_internal.h"
#include "proto_internal.h"
#include "security_internal.h"
#include "task_internal.h"
#include "util_internal.h"

#define DEFAULT_MAX_PREFETCH 256
#define MAX_PREFETCH_LIMIT 1000000
#define PREFETCH_COVER_S 0.002 /* prefetch: about 2 ms of work */
#define POOL_COVER_S 0.001     /* handed to the pool beyond its size: about 1 ms */
#define RATE_SAMPLE_NS 5000000 /* busy pool time per rate sample */
#define RATE_GAIN 0.3          /* EWMA weight of a new sample */
#define SHRINK_AFTER_NS 500000000LL /* prefetch shrinks at most this often */
#define SHORT_TASK_S 0.01      /* tasks quicker than this keep a spare one per slot in the pool */
#define CREDIT_GRACE_NS 1000000000LL
#define RECV_BURST 256         /* messages read before the loop does anything else */
#define REC_CHUNK 256
#define RESULT_OVERHEAD 96     /* a result map without its value or message */
#define DRAIN_FLUSH_NS 5000000000LL

/* ---- records ----------------------------------------------------------- */

/* A TASKS message kept while records point into it (their arguments). */
struct inref {
    dist__inmsg_t m;
    uint32_t refs;
};

enum { R_FREE, R_QUEUED, R_POOL };

typedef struct rec {
    dist_worker_t *w;
    struct rec *next;   /* local queue or free list (loop thread) */
    struct rec *dnext;  /* done list (under done_lock) */
    dist_async_t *h;    /* R_POOL */
    struct inref *msg;  /* R_QUEUED: where args live */
    const void *args;
    size_t args_len;
    dist__id_t id;
    uint32_t attempt, timeout_ms, session, task;
    uint8_t state;
    uint8_t cancel;     /* R_POOL: X_NONE, or what a CANCEL made of it */
} rec_t;

/* A CANCEL for a task in the pool: dropped there before it started (then
 * it is RETURNed), or being stopped (then its result says so). */
enum { X_NONE, X_RETURN, X_STOP };

/* The tasks this worker can run are a snapshot of the registry at
 * creation (the pool's processes know exactly these functions): names
 * borrowed from the registry, which never frees them, as HELLO packs them. */

/* A RESULTS or RETURN message being built: {key: [items...]}. The array
 * header is packed in its 32-bit form and its count patched at flush, so
 * that items can be appended before their number is known. */
typedef struct {
    dist_wire_buf_t *buf;
    dist__cmd_t cmd;
    size_t count, count_at;
} batch_t;

/* A message the socket refused for now (high-water mark). */
struct outmsg {
    struct outmsg *next;
    dist__cmd_t cmd;
    size_t len;
    unsigned char data[];
};

struct dist_worker {
    dist__logger_t log;
    dist__conn_t conn; /* the socket, its monitor, the session's clocks, WELCOME */
    char *name;
    char host[256];
    pid_t pid;
    int slots;
    uint32_t max_prefetch;
    dist_wire_limits_t limits;
    dist_pool_t *pool;
    int efd;

    /* run / stop */
    _Atomic int stops;
    pthread_mutex_t run_lock;
    pthread_cond_t run_cond;
    bool running, ran;
    int drain; /* 0 running, 1 draining, 2 stopping now */
    int fatal; /* a negative code once the pool is unusable */

    /* tasks */
    dist__str_t *tasks;
    size_t ntasks;
    uint32_t *tslots; /* open addressing: task index + 1, 0 empty */
    size_t tmask;

    /* records */
    rec_t **chunks;
    size_t nchunks;
    rec_t *free_recs;
    rec_t *q_head, *q_tail;
    uint32_t n_queued, n_pool, n_recs, n_session;

    /* hand-off from the pool's manager thread */
    pthread_mutex_t done_lock;
    rec_t *done_head, *done_tail;

    /* outgoing */
    batch_t results, returns;
    dist_wire_buf_t *scratch;
    struct outmsg *out_head, *out_tail;

    /* session */
    bool welcomed, ever_welcomed, rehello;
    uint32_t session;
    uint32_t max_batch;
    size_t master_max;
    uint32_t announced, grace_cap;
    int64_t grace_until;
    uint64_t malformed;

    /* adaptive prefetch */
    double rate; /* tasks per second with every slot busy; 0: unknown */
    int64_t tick_ns, busy_ns, prefetch_ns; /* prefetch_ns: its last change */
    uint64_t window_done;
    uint32_t pool_prev, prefetch, pool_extra;

    /* counters for the last log line */
    uint64_t n_ok, n_failed, n_returned, n_cancelled;
};

/* ---- small helpers ---------------------------------------------------------- */

static uint32_t s_min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

static uint32_t s_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* The registered task names this worker announces: all of them, but
 * dist.exec only when allowed (a master would send it tasks it refuses). */
static int s_tasks_snapshot(dist_worker_t *w, bool allow_exec)
{
    size_t n = dist_task_count();
    if (n > DIST__MAX_BATCH)
        n = DIST__MAX_BATCH; /* HELLO carries at most 10,000 names */
    size_t size = 16;
    while (size < 2 * n)
        size *= 2;
    w->tasks = calloc(n ? n : 1, sizeof *w->tasks);
    w->tslots = calloc(size, sizeof *w->tslots);
    if (!w->tasks || !w->tslots)
        return DIST_ENOMEM;
    w->tmask = size - 1;
    for (size_t i = 0; i < n; i++) {
        const char *name = dist_task_name_at(i);
        if (!name)
            break;
        if (!allow_exec && strcmp(name, "dist.exec") == 0)
            continue;
        w->tasks[w->ntasks] = (dist__str_t){ name, strlen(name) };
        size_t k = s_hash(name, w->tasks[w->ntasks].n) & w->tmask;
        while (w->tslots[k])
            k = (k + 1) & w->tmask;
        w->tslots[k] = (uint32_t)++w->ntasks;
    }
    return 0;
}

/* The index of a task by name, or -1. */
static long s_task_find(const dist_worker_t *w, const char *s, size_t n)
{
    for (size_t k = s_hash(s, n) & w->tmask; w->tslots[k]; k = (k + 1) & w->tmask) {
        const dist__str_t *t = &w->tasks[w->tslots[k] - 1];
        if (t->n == n && memcmp(t->s, s, n) == 0)
            return (long)w->tslots[k] - 1;
    }
    return -1;
}

static void s_msg_unref(struct inref *r)
{
    if (r && --r->refs == 0) {
        dist__inmsg_clear(&r->m);
        free(r);
    }
}

static rec_t *s_rec_alloc(dist_worker_t *w)
{
    if (!w->free_recs) {
        rec_t **grown = realloc(w->chunks, (w->nchunks + 1) * sizeof *grown);
        if (!grown)
            return NULL;
        w->chunks = grown;
        rec_t *c = calloc(REC_CHUNK, sizeof *c);
        if (!c)
            return NULL;
        w->chunks[w->nchunks++] = c;
        for (size_t i = REC_CHUNK; i-- > 0;) {
            c[i].w = w;
            c[i].next = w->free_recs;
            w->free_recs = &c[i];
        }
    }
    rec_t *r = w->free_recs;
    w->free_recs = r->next;
    r->next = NULL;
    r->dnext = NULL;
    r->cancel = X_NONE;
    r->session = w->session;
    w->n_recs++;
    w->n_session++;
    return r;
}

static void s_rec_free(dist_worker_t *w, rec_t *r)
{
    if (r->state == R_QUEUED)
        s_msg_unref(r->msg);
    dist_async_destroy(&r->h);
    r->msg = NULL;
    r->state = R_FREE;
    w->n_recs--;
    if (r->session == w->session)
        w->n_session--;
    r->next = w->free_recs;
    w->free_recs = r;
}

static rec_t *s_queue_pop(dist_worker_t *w)
{
    rec_t *r = w->q_head;
    if (r) {
        w->q_head = r->next;
        if (!w->q_head)
            w->q_tail = NULL;
        r->next = NULL;
        w->n_queued--;
    }
    return r;
}

/* ---- sending ------------------------------------------------------------------ */

/* Sends a body; a message the socket refuses for now (high-water mark) is
 * kept, in order, when `keep` (results, returns, credit, bye: what must
 * not be lost), and dropped otherwise (hello, heartbeat: they repeat). */
static int s_send(dist_worker_t *w, dist__cmd_t cmd, const void *data, size_t len, bool keep)
{
    if (!w->out_head || !keep) {
        int r = dist__conn_send(&w->conn, cmd, data, len);
        if (r == 0)
            return 0;
        if (r != DIST_EAGAIN || !keep) {
            if (r != DIST_EAGAIN)
                dist__log(&w->log, DIST_LOG_ERROR, "cannot send %s: %s", dist__cmd_name(cmd),
                          dist_strerror(r));
            return r;
        }
    }
    struct outmsg *o = malloc(sizeof *o + len);
    if (!o) {
        dist__log(&w->log, DIST_LOG_ERROR, "out of memory: %s dropped", dist__cmd_name(cmd));
        return DIST_ENOMEM;
    }
    o->next = NULL;
    o->cmd = cmd;
    o->len = len;
    memcpy(o->data, data, len);
    if (w->out_tail)
        w->out_tail->next = o;
    else
        w->out_head = o;
    w->out_tail = o;
    return 0;
}

static void s_flush_outbox(dist_worker_t *w)
{
    while (w->out_head) {
        struct outmsg *o = w->out_head;
        int r = dist__conn_send(&w->conn, o->cmd, o->data, o->len);
        if (r == DIST_EAGAIN)
            return;
        if (r)
            dist__log(&w->log, DIST_LOG_ERROR, "cannot send %s: %s", dist__cmd_name(o->cmd),
                      dist_strerror(r));
        w->out_head = o->next;
        if (!w->out_head)
            w->out_tail = NULL;
        free(o);
    }
}

/* Sends the body packed in w->scratch. */
static void s_send_scratch(dist_worker_t *w, dist__cmd_t cmd, bool keep)
{
    int st = dist_wire_buf_status(w->scratch);
    size_t len;
    const void *data = dist_wire_buf_data(w->scratch, &len);
    if (st)
        dist__log(&w->log, DIST_LOG_ERROR, "cannot pack %s: %s", dist__cmd_name(cmd), dist_strerror(st));
    else
        s_send(w, cmd, data, len, keep);
}

static void s_batch_flush(dist_worker_t *w, batch_t *b)
{
    if (!b->count)
        return;
    size_t len;
    unsigned char *data = (unsigned char *)dist_wire_buf_data(b->buf, &len);
    int st = dist_wire_buf_status(b->buf);
    if (st) {
        dist__log(&w->log, DIST_LOG_ERROR, "cannot pack %s of %zu items: %s",
                  dist__cmd_name(b->cmd), b->count, dist_strerror(st));
    } else {
        /* The buffer is ours, not const: patch the array32 count. */
        uint32_t n = (uint32_t)b->count;
        data[b->count_at + 1] = (unsigned char)(n >> 24);
        data[b->count_at + 2] = (unsigned char)(n >> 16);
        data[b->count_at + 3] = (unsigned char)(n >> 8);
        data[b->count_at + 4] = (unsigned char)n;
        s_send(w, b->cmd, data, len, true);
    }
    b->count = 0;
    dist_wire_buf_reset(b->buf);
}

/* Makes room for one more item of about `size` bytes and returns the
 * packer to append it with. */
static msgpack_packer *s_batch_add(dist_worker_t *w, batch_t *b, size_t size)
{
    if (b->count) {
        size_t len;
        dist_wire_buf_data(b->buf, &len);
        if (b->count >= w->max_batch || len + size > w->master_max)
            s_batch_flush(w, b);
    }
    msgpack_packer *pk = dist_wire_buf_packer(b->buf);
    if (!b->count) {
        dist_wire_buf_reset(b->buf);
        dist__pack_list_head(pk, b->cmd, UINT32_MAX); /* 0xdd + 4 bytes, patched at flush */
        dist_wire_buf_data(b->buf, &b->count_at);
        b->count_at -= 5;
    }
    b->count++;
    return pk;
}

static void s_return_id(dist_worker_t *w, const dist__id_t *id)
{
    dist__pk_id(s_batch_add(w, &w->returns, 24), id);
    w->n_returned++;
}

/* ---- results ---------------------------------------------------------------- */

static void s_result_value(dist_worker_t *w, const dist__id_t *id, uint32_t attempt,
                           const void *value, size_t len)
{
    dist__result_t r = { .id = *id, .attempt = attempt, .status = DIST__ST_OK, .value = value,
                         .value_len = len };
    dist__pack_result(s_batch_add(w, &w->results, len + RESULT_OVERHEAD), &r, true);
    w->n_ok++;
}

/* An error result. The message gets the host and the worker's name: the
 * pool's messages name the task, the pool process and the signal; a
 * task's own message may name none of them. */
static void s_result_error_ms(dist_worker_t *w, const dist__id_t *id, uint32_t attempt,
                              dist__status_t st, const char *task, const char *msg,
                              uint32_t retry_ms)
{
    char text[DIST__TASK_ERR_MAX + 512];
    size_t tl = strlen(task);
    if (strncmp(msg, "task ", 5) == 0 && strncmp(msg + 5, task, tl) == 0)
        snprintf(text, sizeof text, "%s on host %s (worker %s)", msg, w->host, w->name);
    else
        snprintf(text, sizeof text, "task %s %son host %s (worker %s): %s", task,
                 st == DIST__ST_FAILED ? "failed " : "", w->host, w->name, msg);
    size_t n = strlen(text);
    dist__result_t r = { .id = *id, .attempt = attempt, .status = st, .error = text, .error_len = n,
                         .retry_ms = retry_ms };
    dist__pack_result(s_batch_add(w, &w->results, n + RESULT_OVERHEAD), &r, true);
    w->n_failed++;
}

static void s_result_error(dist_worker_t *w, const dist__id_t *id, uint32_t attempt,
                           dist__status_t st, const char *task, const char *msg)
{
    s_result_error_ms(w, id, attempt, st, task, msg, 0);
}

static void s_result_errorf(dist_worker_t *w, const dist__id_t *id, uint32_t attempt,
                            dist__status_t st, const char *task, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static void s_result_errorf(dist_worker_t *w, const dist__id_t *id, uint32_t attempt,
                            dist__status_t st, const char *task, const char *fmt, ...)
{
    char msg[DIST__TASK_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s_result_error(w, id, attempt, st, task, msg);
}

/* Answers a record the pool has finished, and recycles it. */
static void s_answer(dist_worker_t *w, rec_t *r)
{
    const char *task = w->tasks[r->task].s;
    dist_result_t *res = NULL;
    int code = dist_async_get(r->h, 0, &res);
    if (r->cancel == X_RETURN) {
        s_return_id(w, &r->id); /* never started: the master decides */
    } else if (!res) {
        /* The pool could not even store an outcome: a worker-side failure
         * that another attempt may not meet. */
        s_result_errorf(w, &r->id, r->attempt, DIST__ST_CRASHED, task,
                        "task %s: the worker ran out of memory (%s)", task, dist_strerror(code));
    } else if (code == 0) {
        size_t len;
        const void *value = dist_result_data(res, &len);
        if (len + RESULT_OVERHEAD + 64 > w->master_max)
            s_result_errorf(w, &r->id, r->attempt, DIST__ST_TOO_LARGE, task,
                            "task %s: its value of %zu bytes exceeds the master's message limit "
                            "of %zu bytes", task, len, w->master_max);
        else
            s_result_value(w, &r->id, r->attempt, value, len);
    } else {
        /* The arguments were checked before the pool saw them, so
         * DIST_EPROTO from the pool is about the task's result (none,
         * several values, not MessagePack): the task failed. */
        dist__status_t st = code == DIST_EPROTO ? DIST__ST_FAILED : dist__status_from_code(code);
        const char *msg = dist_result_error(res);
        /* dist_task_retry: status retry, with the delay the task asked for. */
        uint32_t retry_ms = st == DIST__ST_RETRY ? dist__pool_retry_ms(r->h) : 0;
        s_result_error_ms(w, &r->id, r->attempt, st, task, msg ? msg : dist_strerror(code), retry_ms);
    }
    w->n_pool--;
    w->window_done++;
    s_rec_free(w, r);
}

/* ---- the pool ------------------------------------------------------------------- */

/* On the pool's manager thread: hand the record to the loop. */
static void s_on_done(dist_result_t *result, void *userdata)
{
    (void)result; /* read later, from the handle, by the loop */
    rec_t *r = userdata;
    dist_worker_t *w = r->w;
    pthread_mutex_lock(&w->done_lock);
    bool was_empty = !w->done_head;
    r->dnext = NULL;
    if (w->done_tail)
        w->done_tail->dnext = r;
    else
        w->done_head = r;
    w->done_tail = r;
    pthread_mutex_unlock(&w->done_lock);
    if (was_empty) {
        uint64_t one = 1;
        ssize_t n = write(w->efd, &one, sizeof one);
        (void)n; /* a full counter still wakes the loop */
    }
}

static void s_take_done(dist_worker_t *w)
{
    pthread_mutex_lock(&w->done_lock);
    rec_t *r = w->done_head;
    w->done_head = w->done_tail = NULL;
    pthread_mutex_unlock(&w->done_lock);
    while (r) {
        rec_t *next = r->dnext;
        if (w->drain == 2) { /* stopped at once: the master requeues these */
            w->n_pool--;
            s_rec_free(w, r);
        } else {
            s_answer(w, r);
        }
        r = next;
    }
}

/* Hands queued tasks to the pool while it has fewer than its size plus
 * about a millisecond of work. */
static void s_submit(dist_worker_t *w)
{
    uint32_t limit = (uint32_t)w->slots + w->pool_extra;
    while (w->n_pool < limit && w->q_head && !w->fatal) {
        rec_t *r = s_queue_pop(w);
        dist_submit_opts_t so = { .callback = s_on_done, .error_callback = s_on_done,
                                  .userdata = r,
                                  .timeout_ms = r->timeout_ms > INT_MAX ? INT_MAX
                                                                        : (int)r->timeout_ms };
        r->h = dist_pool_apply_async(w->pool, DIST_NAMED(w->tasks[r->task].s), r->args,
                                     r->args_len, &so);
        if (!r->h) {
            int code = -errno;
            if (code == DIST_ESTATE || code == DIST_ECRASHED) {
                dist__log(&w->log, DIST_LOG_ERROR, "the pool cannot run tasks any more: %s",
                          dist_strerror(code));
                w->fatal = code;
            } else {
                dist__log(&w->log, DIST_LOG_WARN, "cannot hand task %s to the pool: %s; returned it",
                          w->tasks[r->task].s, dist_strerror(code));
            }
            s_return_id(w, &r->id);
            s_rec_free(w, r);
            continue;
        }
        s_msg_unref(r->msg); /* the pool has its own copy of the arguments */
        r->msg = NULL;
        r->state = R_POOL;
        w->n_pool++;
    }
}

/* RETURNs every task not handed to the pool yet. */
static uint32_t s_return_queued(dist_worker_t *w)
{
    uint32_t n = 0;
    rec_t *r;
    while ((r = s_queue_pop(w))) {
        s_return_id(w, &r->id);
        s_rec_free(w, r);
        n++;
    }
    return n;
}

/* ---- credit ------------------------------------------------------------------------ */

/* Busy pool time since the last call, weighted by how many slots had work. */
static void s_account(dist_worker_t *w, int64_t now)
{
    int64_t dt = now - w->tick_ns;
    w->tick_ns = now;
    uint32_t occ = s_min_u32(w->pool_prev, (uint32_t)w->slots);
    if (dt > 0 && occ)
        w->busy_ns += dt * occ / w->slots;
}

static uint32_t s_ceil_u32(double x)
{
    if (x >= (double)UINT32_MAX)
        return UINT32_MAX;
    uint32_t n = (uint32_t)x;
    return (double)n < x ? n + 1 : n;
}

/* Folds the last window into the rate, and the rate into prefetch. */
static void s_adapt(dist_worker_t *w)
{
    w->pool_prev = w->n_pool;
    if (w->busy_ns < RATE_SAMPLE_NS || !w->window_done)
        return;
    double sample = (double)w->window_done * 1e9 / (double)w->busy_ns;
    w->rate = w->rate > 0 ? w->rate + RATE_GAIN * (sample - w->rate) : sample;
    w->busy_ns = 0;
    w->window_done = 0;
    /* Grow as soon as prefetch covers clearly less than 2 ms of work; shrink
     * only when it covers more than twice that, and not right after a
     * change. The dead band and the hold keep noise in the rate (and its
     * feedback: how much the pool holds changes the rate it shows on a
     * saturated machine) from turning into a stream of CREDITs. */
    double cover = w->rate * PREFETCH_COVER_S;
    uint32_t p = w->prefetch, want = p;
    int64_t now = dist__now_coarse_ns();
    if (cover > p * 1.25 || (cover < p * 0.5 && now - w->prefetch_ns >= SHRINK_AFTER_NS))
        want = s_ceil_u32(cover);
    if (want < 1)
        want = 1;
    if (want > w->max_prefetch)
        want = w->max_prefetch;
    if (want != p) {
        dist__log(&w->log, DIST_LOG_DEBUG, "prefetch %u -> %u (%.0f tasks/s per busy pool)", p, want,
                  w->rate);
        w->prefetch = want;
        w->prefetch_ns = now;
    }
    /* Beyond its size, the pool gets about a millisecond of work, and at
     * least a spare task per slot when tasks are short (slots / rate is
     * what a task costs a slot, hand-offs included): then the hand-offs
     * between this loop, the pool's manager and its processes (several
     * wake-ups, each a scheduler's delay on a busy machine) overlap with
     * running tasks instead of leaving slots idle. Long tasks get no
     * spare: it would wait behind another task in one slot's queue instead
     * of going to the next free slot, or back to the master on a drain. */
    double extra = w->rate * POOL_COVER_S;
    uint32_t e = extra >= w->prefetch ? w->prefetch : (uint32_t)extra;
    if ((double)w->slots < w->rate * SHORT_TASK_S && e < (uint32_t)w->slots)
        e = s_min_u32((uint32_t)w->slots, w->prefetch);
    w->pool_extra = e;
}

/* The capacity to announce: slots + prefetch, less the tasks still held
 * from an older session (the master does not count those), at least 1;
 * 0 while draining. */
static uint32_t s_capacity(const dist_worker_t *w)
{
    if (w->drain)
        return 0;
    uint64_t target = (uint64_t)w->slots + w->prefetch;
    uint32_t orphans = w->n_recs - w->n_session;
    if (target > UINT32_MAX)
        target = UINT32_MAX;
    return target > (uint64_t)orphans + 1 ? (uint32_t)(target - orphans) : 1;
}

/* Records a new announced capacity. Tasks the master sent before it saw a
 * lower one are still accepted for a while at the old value. */
static void s_announce(dist_worker_t *w, uint32_t cap)
{
    int64_t now = dist__now_ns();
    if (cap < w->announced) {
        uint32_t old = now < w->grace_until && w->grace_cap > w->announced ? w->grace_cap : w->announced;
        w->grace_cap = old;
        w->grace_until = now + CREDIT_GRACE_NS;
    }
    w->announced = cap;
}

static uint32_t s_hold_limit(const dist_worker_t *w)
{
    if (w->grace_cap > w->announced && dist__now_ns() < w->grace_until)
        return w->grace_cap;
    return w->announced;
}

static void s_credit(dist_worker_t *w)
{
    if (!w->welcomed)
        return;
    uint32_t cap = s_capacity(w);
    if (cap == w->announced)
        return;
    dist__log(&w->log, DIST_LOG_DEBUG, "credit %u -> %u", w->announced, cap);
    s_announce(w, cap);
    dist_wire_buf_reset(w->scratch);
    dist__credit_t c = { cap };
    dist__pack_credit(dist_wire_buf_packer(w->scratch), &c);
    s_send_scratch(w, DIST__CMD_CREDIT, true);
}

/* ---- session ------------------------------------------------------------------------ */

static void s_send_hello(dist_worker_t *w)
{
    w->conn.last_hello_ns = dist__now_ns();
    /* While there is no connection, a HELLO would wait in the socket, and a
     * master that comes back after a long absence would get one for every
     * second of it. The handshake sends one instead (s_on_monitor). */
    if (w->conn.mon && !w->conn.up)
        return;
    /* Tasks now in the pool will still be held after the WELCOME; the
     * unstarted ones will be returned then. */
    uint32_t cap = 1;
    if (!w->drain) {
        uint64_t target = (uint64_t)w->slots + w->prefetch;
        cap = target > (uint64_t)w->n_pool + 1 ? (uint32_t)(target - w->n_pool) : 1;
    }
    dist__hello_t h = { .role = DIST__PEER_WORKER,
                        .name = { w->name, strlen(w->name) },
                        .host = { w->host, strlen(w->host) },
                        .version = { DIST_VERSION_STRING, strlen(DIST_VERSION_STRING) },
                        .pid = (uint32_t)w->pid, .slots = (uint32_t)w->slots, .capacity = cap,
                        .names = w->tasks, .ntasks = w->ntasks };
    dist_wire_buf_reset(w->scratch);
    dist__pack_hello(dist_wire_buf_packer(w->scratch), &h);
    s_send_scratch(w, DIST__CMD_HELLO, false);
    s_announce(w, cap);
}

/* Starts saying HELLO again (after RECONNECT or a silent master). */
static void s_rehello(dist_worker_t *w)
{
    w->welcomed = false;
    w->rehello = true;
    s_send_hello(w);
}

static void s_on_welcome(dist_worker_t *w, const msgpack_object *b)
{
    dist__conn_welcome(&w->conn, b);
    if (w->conn.new_instance)
        /* Its leases went with the old instance: results for them are
         * dropped by the new one, and their tasks are the clients' to
         * submit again. */
        dist__log(&w->log, DIST_LOG_WARN, "master instance %s replaced %s: it knows none of the "
                  "tasks this worker holds", w->conn.instance, w->conn.old_instance);
    const dist__welcome_t *wl = &w->conn.wl;
    const char *master = wl->master.n ? wl->master.s : "?";
    size_t master_len = wl->master.n ? wl->master.n : 1;
    w->max_batch = wl->max_batch;
    w->master_max = wl->max_message;
    if (w->welcomed)
        return; /* the answer to a repeated HELLO: same session */
    w->welcomed = true;
    if (w->rehello && w->ever_welcomed) {
        /* A new session: what is still held was leased in the old one. */
        w->session++;
        w->n_session = 0;
        uint32_t n = s_return_queued(w);
        dist__log(&w->log, DIST_LOG_INFO,
                  "welcomed again by master %.*s: returned %u unstarted tasks, %u still running",
                  (int)master_len, master, n, w->n_pool);
    } else {
        dist__log(&w->log, DIST_LOG_INFO, "welcomed by master %.*s (heartbeat %u ms, timeout %u ms)",
                  (int)master_len, master, wl->heartbeat_ms, wl->heartbeat_timeout_ms);
    }
    w->ever_welcomed = true;
    w->rehello = false;
}

/* A task map that dist__parse_task refused: answer it if it can be named. */
static void s_bad_task(dist_worker_t *w, const msgpack_object *o)
{
    dist__id_t id;
    uint32_t attempt;
    w->malformed++;
    if (dist__get_id(o, "id", &id) || dist__get_u32(o, "attempt", &attempt) || attempt == 0) {
        dist__log(&w->log, DIST_LOG_WARN, "dropped a task without a valid id and attempt");
        return;
    }
    /* The name as far as it can be shown: the master may send any bytes. */
    char name[DIST__NAME_MAX + 1] = "?";
    const char *s;
    size_t n;
    bool named = dist__get_str(o, "task", &s, &n) == 0;
    if (named) {
        size_t k = n < DIST__NAME_MAX ? n : DIST__NAME_MAX;
        for (size_t i = 0; i < k; i++)
            name[i] = s[i] > 32 && s[i] < 127 ? s[i] : '?';
        name[k ? k : 1] = 0;
    }
    if (named && !dist__name_ok(s, n))
        s_result_errorf(w, &id, attempt, DIST__ST_UNKNOWN_TASK, name,
                        "task %s is not registered (not a valid task name)", name);
    else
        s_result_errorf(w, &id, attempt, DIST__ST_BAD_ARGS, name,
                        "task %s: the master sent a malformed task map (a field is missing or of "
                        "the wrong type)", name);
}

static void s_on_tasks(dist_worker_t *w, dist__inmsg_t *m)
{
    const msgpack_object *items;
    size_t n;
    if (dist__parse_list(m->root, DIST__CMD_TASKS, &items, &n)) {
        w->malformed++;
        dist__log(&w->log, DIST_LOG_WARN, "dropped a TASKS message without a tasks array");
        return;
    }
    uint32_t limit = s_hold_limit(w);
    struct inref *ref = NULL;
    size_t excess = 0;
    for (size_t i = 0; i < n; i++) {
        dist__task_t t;
        if (dist__parse_task(&items[i], true, &t)) {
            s_bad_task(w, &items[i]);
            continue;
        }
        long ti = s_task_find(w, t.task, t.task_len);
        if (ti < 0) {
            char name[DIST__NAME_MAX + 1];
            snprintf(name, sizeof name, "%.*s", (int)t.task_len, t.task);
            s_result_errorf(w, &t.id, t.attempt, DIST__ST_UNKNOWN_TASK, name,
                            "task %s is not registered", name);
            continue;
        }
        const char *tname = w->tasks[ti].s;
        if (!t.args_len || !dist__msgpack_is_array(*(const unsigned char *)t.args) ||
            !dist__mp_is_one_value(t.args, t.args_len)) {
            s_result_errorf(w, &t.id, t.attempt, DIST__ST_BAD_ARGS, tname,
                            "task %s: arguments are not one MessagePack array", tname);
            continue;
        }
        if (w->drain || w->fatal) {
            s_return_id(w, &t.id);
            continue;
        }
        if (w->n_session >= limit) {
            s_return_id(w, &t.id);
            excess++;
            continue;
        }
        if (!ref) {
            ref = malloc(sizeof *ref);
            if (!ref) {
                s_return_id(w, &t.id);
                continue;
            }
            ref->m = *m; /* the records point into its body from now on */
            ref->refs = 1; /* ours, until the loop is over */
            m->body = NULL;
            m->root = NULL;
        }
        rec_t *r = s_rec_alloc(w);
        if (!r) {
            s_return_id(w, &t.id);
            continue;
        }
        r->id = t.id;
        r->attempt = t.attempt;
        r->timeout_ms = t.timeout_ms;
        r->task = (uint32_t)ti;
        r->args = t.args;
        r->args_len = t.args_len;
        r->msg = ref;
        ref->refs++;
        r->state = R_QUEUED;
        if (w->q_tail)
            w->q_tail->next = r;
        else
            w->q_head = r;
        w->q_tail = r;
        w->n_queued++;
    }
    s_msg_unref(ref);
    if (excess)
        dist__log(&w->log, DIST_LOG_WARN,
                  "the master sent %zu tasks beyond the capacity of %u; returned them", excess, limit);
}

/* The record of a task held here, by id, or NULL. Records are few (at
 * most the capacity, plus tasks of an old session): a walk is enough for
 * a message as rare as CANCEL. */
static rec_t *s_rec_find(dist_worker_t *w, const dist__id_t *id)
{
    for (size_t c = 0; c < w->nchunks; c++)
        for (size_t i = 0; i < REC_CHUNK; i++) {
            rec_t *r = &w->chunks[c][i];
            if (r->state != R_FREE && dist__id_eq(&r->id, id))
                return r;
        }
    return NULL;
}

static void s_queue_unlink(dist_worker_t *w, rec_t *r)
{
    rec_t *prev = NULL;
    for (rec_t *q = w->q_head; q; prev = q, q = q->next) {
        if (q != r)
            continue;
        if (prev)
            prev->next = r->next;
        else
            w->q_head = r->next;
        if (w->q_tail == r)
            w->q_tail = prev;
        r->next = NULL;
        w->n_queued--;
        return;
    }
}

/* One id of a CANCEL: a task waiting here is RETURNed at once; one in the
 * pool is dropped there (RETURNed when the pool hands it back) or its
 * process is killed and replaced (RESULTS status cancelled). An id not
 * held (answered already, or never sent) needs nothing. */
static void s_cancel(dist_worker_t *w, const dist__id_t *id)
{
    rec_t *r = s_rec_find(w, id);
    char hex[33];
    dist__id_hex(id, hex);
    if (!r) {
        dist__log(&w->log, DIST_LOG_DEBUG, "CANCEL of task %s, which is not held here", hex);
        return;
    }
    const char *task = w->tasks[r->task].s;
    if (r->state == R_QUEUED) {
        s_queue_unlink(w, r);
        s_return_id(w, &r->id);
        s_rec_free(w, r);
        dist__log(&w->log, DIST_LOG_INFO, "cancelled task %s (%s) before it started: returned", hex,
                  task);
        return;
    }
    if (r->cancel != X_NONE)
        return;
    int rc = dist__pool_cancel(w->pool, r->h);
    if (rc == 0 || rc == 1) {
        r->cancel = rc == 0 ? X_RETURN : X_STOP;
        w->n_cancelled++;
        dist__log(&w->log, DIST_LOG_INFO, "cancelled task %s (%s)%s", hex, task,
                  rc == 0 ? " before it started: returned" : ": stopping its pool process");
    }
    /* DIST_ESTATE: it finished meanwhile; its result is on its way. */
}

static void s_on_cancel(dist_worker_t *w, const msgpack_object *b)
{
    dist__ids_req_t q;
    if (dist__parse_ids_req(b, false, &q)) {
        w->malformed++;
        dist__log(&w->log, DIST_LOG_WARN, "dropped a malformed CANCEL from the master");
        return;
    }
    for (size_t i = 0; i < q.nids; i++) {
        dist__id_t id;
        if (dist__list_id(&q.ids[i], &id))
            s_cancel(w, &id);
    }
}

static void s_on_error(dist_worker_t *w, const msgpack_object *b)
{
    dist__error_t e;
    if (!dist__conn_error(&w->conn, b, &e, &w->malformed))
        return;
    const char *code = e.code.s, *msg = e.error.s;
    size_t cl = e.code.n, ml = e.error.n;
    dist__log(&w->log, DIST_LOG_WARN, "master error %.*s: %.*s", (int)(cl > 64 ? 64 : cl), code,
              (int)(ml > 512 ? 512 : ml), msg);
    if (cl == 11 && memcmp(code, "not_welcome", 11) == 0 && w->welcomed)
        s_rehello(w);
    /* A key the master will not take in this role never will: stop
     * rather than knock forever. */
    if (cl == 9 && memcmp(code, "forbidden", 9) == 0 && !w->welcomed && !w->fatal) {
        dist__log(&w->log, DIST_LOG_ERROR, "the master refused this worker's key; stopping");
        w->fatal = DIST_EREFUSED;
    }
}

static void s_handle(dist_worker_t *w, dist__inmsg_t *m)
{
    switch (m->cmd) {
    case DIST__CMD_WELCOME:
        s_on_welcome(w, m->root);
        break;
    case DIST__CMD_TASKS:
        s_on_tasks(w, m);
        break;
    case DIST__CMD_RECONNECT:
        /* While HELLO is already being repeated, this answers a message
         * sent before it: nothing more to do. */
        if (w->welcomed) {
            dist__log(&w->log, DIST_LOG_INFO, "the master does not know us (it restarted?): "
                                              "saying HELLO again");
            s_rehello(w);
        }
        break;
    case DIST__CMD_ERROR:
        s_on_error(w, m->root);
        break;
    case DIST__CMD_CANCEL:
        s_on_cancel(w, m->root);
        break;
    case DIST__CMD_HEARTBEAT:
        break;
    case DIST__CMD_BYE:
        /* The master stops cleanly: look for the next one now rather
         * than after its heartbeat timeout (section 4). */
        if (w->welcomed) {
            dist__log(&w->log, DIST_LOG_WARN, "master %s said BYE: keeping %u tasks, saying "
                      "HELLO again", w->conn.master, w->n_recs);
            dist__conn_lost(&w->conn);
            s_rehello(w);
        }
        break;
    default:
        w->malformed++;
        dist__log(&w->log, DIST_LOG_DEBUG, "ignored %s from the master", dist__cmd_name(m->cmd));
        break;
    }
}

/* ---- the loop --------------------------------------------------------------------------- */

/* Connection events. A new connection is a new peer to the master's
 * ROUTER (and maybe a new master): HELLO at once, without waiting for
 * RECONNECT or the master's silence. */
static void s_on_monitor(dist_worker_t *w)
{
    /* A refused key is not final for a worker: the master may yet learn
     * it (its allow lists are re-read), so it keeps trying. */
    if (dist__conn_on_monitor(&w->conn)) {
        if (w->welcomed || w->rehello)
            s_rehello(w);
        else
            s_send_hello(w);
    }
}

static void s_timers(dist_worker_t *w, int64_t now)
{
    if (w->welcomed && dist__conn_silent(&w->conn, now)) {
        dist__log(&w->log, DIST_LOG_WARN,
                  "master lost: nothing heard for %u ms; keeping %u tasks, saying HELLO again",
                  w->conn.wl.heartbeat_timeout_ms, w->n_recs);
        s_rehello(w);
    } else if (!w->welcomed && dist__conn_hello_due(&w->conn, now)) {
        s_send_hello(w);
    } else if (w->welcomed &&
               now - w->conn.last_sent_ns >= (int64_t)w->conn.wl.heartbeat_ms * 1000000) {
        s_send(w, DIST__CMD_HEARTBEAT, NULL, 0, false);
    }
}

/* Milliseconds until the next timer, rounded up. */
static int s_poll_timeout(const dist_worker_t *w, int64_t now)
{
    int64_t next = dist__conn_next_ns(&w->conn, !w->welcomed);
    int64_t ms = (next - now + 999999) / 1000000;
    return ms < 0 ? 0 : ms > 1000 ? 1000 : (int)ms;
}

/* CREDIT goes first: when it goes down (a drain), a master that saw the
 * RETURN first would fill the freed credit again, with those very tasks. */
static void s_flush_all(dist_worker_t *w)
{
    s_credit(w);
    s_batch_flush(w, &w->results);
    s_batch_flush(w, &w->returns);
    s_flush_outbox(w);
}

static void s_begin_drain(dist_worker_t *w)
{
    w->drain = 1;
    uint32_t n = s_return_queued(w);
    dist__log(&w->log, DIST_LOG_INFO, "draining: returned %u unstarted tasks, waiting for %u running",
              n, w->n_pool);
}

static void s_bye(dist_worker_t *w)
{
    if (w->ever_welcomed)
        s_send(w, DIST__CMD_BYE, NULL, 0, true);
    s_flush_outbox(w);
}

/* The second stop: no waiting for running tasks. */
static int s_stop_now(dist_worker_t *w)
{
    w->drain = 2;
    uint32_t n = s_return_queued(w);
    dist__log(&w->log, DIST_LOG_WARN,
              "stopping now: returned %u unstarted tasks, abandoned %u running (the master requeues "
              "them)", n, w->n_pool);
    dist_pool_terminate(w->pool);
    s_batch_flush(w, &w->results);
    s_batch_flush(w, &w->returns);
    s_bye(w);
    return DIST_EINTR;
}

static int s_loop(dist_worker_t *w)
{
    int64_t now = dist__now_ns();
    w->tick_ns = now;
    w->prefetch_ns = dist__now_coarse_ns(); /* no shrinking on a cold start's first samples */
    w->conn.last_heard_ns = now;
    w->conn.last_sent_ns = now;
    s_send_hello(w); /* or, with a monitor, at the handshake */
    int64_t flush_deadline = 0;
    for (;;) {
        int stops = atomic_load(&w->stops);
        if (stops >= 2)
            return s_stop_now(w);
        if ((stops >= 1 || w->fatal) && !w->drain)
            s_begin_drain(w);

        for (int k = 0; k < RECV_BURST; k++) {
            dist__inmsg_t m;
            int r = dist__proto_recv(w->conn.sock, false, &w->limits, &m);
            if (r == DIST_EAGAIN)
                break;
            if (r == DIST_EPROTO) {
                if (w->malformed++ == 0)
                    dist__log(&w->log, DIST_LOG_WARN, "dropped a malformed message from the "
                                                      "master (reason %d)", (int)m.bad);
                continue;
            }
            if (r < 0) {
                dist__log(&w->log, DIST_LOG_ERROR, "receiving: %s", dist_strerror(r));
                return r;
            }
            dist__conn_heard(&w->conn, dist__now_ns());
            s_handle(w, &m);
            dist__inmsg_clear(&m);
        }
        s_take_done(w);
        s_submit(w);
        s_adapt(w);
        s_flush_all(w);
        now = dist__now_ns();
        s_timers(w, now);

        if (w->drain && w->n_recs == 0) {
            if (!w->out_head || (flush_deadline && now >= flush_deadline)) {
                s_bye(w);
                dist__log(&w->log, DIST_LOG_INFO, "stopped: %llu results sent (%llu errors), %llu "
                          "tasks returned, %llu cancelled", (unsigned long long)(w->n_ok + w->n_failed),
                          (unsigned long long)w->n_failed, (unsigned long long)w->n_returned,
                          (unsigned long long)w->n_cancelled);
                return w->fatal ? w->fatal : 0;
            }
            if (!flush_deadline)
                flush_deadline = now + DRAIN_FLUSH_NS;
        }

        zsock_t *mon = w->conn.mon;
        zmq_pollitem_t items[3] = {
            { w->conn.zh, 0, (short)(ZMQ_POLLIN | (w->out_head ? ZMQ_POLLOUT : 0)), 0 },
            { NULL, w->efd, ZMQ_POLLIN, 0 },
            { mon ? zsock_resolve(mon) : NULL, 0, ZMQ_POLLIN, 0 },
        };
        int rc = dist__poll(items, mon ? 3 : 2, s_poll_timeout(w, now), DIST__SPIN_US);
        if (rc < 0 && errno != EINTR) {
            int e = -errno;
            dist__log(&w->log, DIST_LOG_ERROR, "polling: %s", dist_strerror(e));
            return e;
        }
        if (rc > 0 && (items[1].revents & ZMQ_POLLIN)) {
            uint64_t v;
            ssize_t n = read(w->efd, &v, sizeof v);
            (void)n; /* EAGAIN: somebody read it first, nothing lost */
        }
        if (rc > 0 && mon && (items[2].revents & ZMQ_POLLIN))
            s_on_monitor(w);
        s_account(w, dist__now_ns());
    }
}

/* ---- the API ------------------------------------------------------------------------------ */

void dist_worker_stop(dist_worker_t *self)
{
    if (!self)
        return;
    int saved = errno; /* a signal handler must leave errno alone */
    atomic_fetch_add(&self->stops, 1);
    uint64_t one = 1;
    ssize_t n = write(self->efd, &one, sizeof one);
    (void)n;
    errno = saved;
}

int dist_worker_run(dist_worker_t *self)
{
    if (!self)
        return DIST_EINVAL;
    pthread_mutex_lock(&self->run_lock);
    bool busy = self->running || self->ran;
    if (!busy)
        self->running = self->ran = true;
    pthread_mutex_unlock(&self->run_lock);
    if (busy)
        return DIST_ESTATE;
    int rc = s_loop(self);
    pthread_mutex_lock(&self->run_lock);
    self->running = false;
    pthread_cond_broadcast(&self->run_cond);
    pthread_mutex_unlock(&self->run_lock);
    return rc;
}

static void s_free(dist_worker_t *w)
{
    /* The pool first: its callbacks touch the done list until it is gone. */
    dist_pool_destroy(&w->pool);
    for (size_t c = 0; c < w->nchunks; c++) {
        for (size_t i = 0; i < REC_CHUNK; i++) {
            rec_t *r = &w->chunks[c][i];
            if (r->state == R_QUEUED)
                s_msg_unref(r->msg);
            dist_async_destroy(&r->h);
        }
        free(w->chunks[c]);
    }
    free(w->chunks);
    while (w->out_head) {
        struct outmsg *o = w->out_head;
        w->out_head = o->next;
        free(o);
    }
    dist_wire_buf_destroy(&w->results.buf);
    dist_wire_buf_destroy(&w->returns.buf);
    dist_wire_buf_destroy(&w->scratch);
    dist__conn_close(&w->conn, false);
    if (w->efd >= 0)
        close(w->efd);
    free(w->tasks);
    free(w->tslots);
    free(w->name);
    pthread_mutex_destroy(&w->done_lock);
    pthread_mutex_destroy(&w->run_lock);
    pthread_cond_destroy(&w->run_cond);
    free(w);
}

void dist_worker_destroy(dist_worker_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_worker_t *w = *self_p;
    *self_p = NULL;
    pthread_mutex_lock(&w->run_lock);
    if (w->running) {
        /* run() is going on in another thread: stop it at once and wait. */
        atomic_store(&w->stops, 2);
        uint64_t one = 1;
        ssize_t n = write(w->efd, &one, sizeof one);
        (void)n;
        while (w->running)
            pthread_cond_wait(&w->run_cond, &w->run_lock);
    }
    pthread_mutex_unlock(&w->run_lock);
    s_free(w);
}

/* "started" line: the task names, cut to fit one log line. */
static void s_log_started(dist_worker_t *w, bool threads)
{
    char names[640];
    size_t used = 0;
    for (size_t i = 0; i < w->ntasks; i++) {
        size_t sep = i ? 2 : 0, len = w->tasks[i].n;
        if (used + sep + len + sizeof ", ..." > sizeof names) {
            memcpy(names + used, ", ...", 5);
            used += 5;
            break;
        }
        memcpy(names + used, ", ", sep);
        memcpy(names + used + sep, w->tasks[i].s, len);
        used += sep + len;
    }
    names[used] = 0;
    dist__log(&w->log, DIST_LOG_INFO, "worker %s started: a pool of %d %s, %zu tasks (%s), master %s",
              w->name, w->slots, threads ? "threads" : "processes", w->ntasks, names, w->conn.endpoint);
}

/* The worker's own state, and its pool: forked before any ZeroMQ context
 * or thread of ours exists, its processes knowing exactly the tasks
 * registered now. NULL with errno. */
static dist_worker_t *s_alloc(const dist_worker_opts_t *o, const dist__logger_t *lg)
{
    dist_worker_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->log = *lg;
    pthread_mutex_init(&w->done_lock, NULL);
    pthread_mutex_init(&w->run_lock, NULL);
    pthread_cond_init(&w->run_cond, NULL);
    w->pid = getpid();
    if (gethostname(w->host, sizeof w->host - 1) != 0 || !w->host[0])
        snprintf(w->host, sizeof w->host, "localhost");
    char buf[300];
    snprintf(buf, sizeof buf, "%.*s:%d", DIST__NAME_MAX - 12, w->host, (int)w->pid);
    w->name = strdup(o->name ? o->name : buf);
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->results = (batch_t){ dist_wire_buf_new(0), DIST__CMD_RESULTS, 0, 0 };
    w->returns = (batch_t){ dist_wire_buf_new(0), DIST__CMD_RETURN, 0, 0 };
    w->scratch = dist_wire_buf_new(0);
    dist_worker_register_builtins();
    dist__builtins_allow_exec(o->allow_exec);
    int err = w->efd < 0 ? errno : ENOMEM;
    if (w->efd < 0 || !w->name || !w->results.buf || !w->returns.buf || !w->scratch ||
        s_tasks_snapshot(w, o->allow_exec))
        goto fail;
    /* The pool takes what the master may send: a task the master
     * accepted must not be refused by the pool's own smaller default. */
    dist_pool_opts_t po = { .processes = o->procs, .threads = o->threads,
                            .max_message = o->max_message ? o->max_message
                                                          : DIST_MAX_MESSAGE_DEFAULT };
    if (!(w->pool = dist_pool_new(&po))) {
        err = errno;
        dist__log(lg, DIST_LOG_ERROR, "cannot start the pool: %s", strerror(err));
        goto fail;
    }
    w->slots = dist_pool_size(w->pool);
    w->max_prefetch = o->max_prefetch ? (uint32_t)o->max_prefetch : DEFAULT_MAX_PREFETCH;
    w->prefetch = s_min_u32((uint32_t)w->slots, w->max_prefetch);
    w->max_batch = DIST__MAX_BATCH;
    w->master_max = DIST__MAX_MESSAGE_DEFAULT;
    w->limits = dist__body_limits(o->max_message);
    return w;
fail:
    s_free(w);
    errno = err;
    return NULL;
}

dist_worker_t *dist_worker_new(const dist_worker_opts_t *opts)
{
    dist_worker_opts_t o = { 0 };
    if (opts)
        o = *opts;
    dist__logger_t lg = { o.log, o.log_userdata, o.log_level, "worker" };
    dist__conn_opts_t co = { o.master, o.key, o.server_key, o.insecure, o.max_message, "worker" };
    bool bad = o.procs < 0 || o.max_prefetch < 0 || o.max_prefetch > MAX_PREFETCH_LIMIT ||
               o.max_message > ((size_t)1 << 30) ||
               (o.name && !dist__peer_name_ok(o.name, strlen(o.name)));
    if (bad)
        dist__log(&lg, DIST_LOG_ERROR, "invalid worker options (procs, max_prefetch, max_message or name)");
    /* Keys and protected mode are checked before the pool is forked. */
    int e = bad ? EINVAL : dist__conn_check(&co, &lg);
    dist_worker_t *w = e ? NULL : s_alloc(&o, &lg);
    if (w && (e = dist__conn_open(&w->conn, &co, &w->log)) != 0)
        s_free(w);
    else if (w)
        s_log_started(w, o.threads);
    if (e || !w) {
        errno = e ? e : errno;
        return NULL;
    }
    return w;
}

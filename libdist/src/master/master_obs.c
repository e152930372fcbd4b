/*  master_obs.c - what the master's metrics endpoint shows (metrics.c
 *  serves it; docs/OBSERVABILITY.md describes every field).
 *
 *  With opts.metrics the master keeps, besides the counters every STATUS
 *  reply carries: counters per task name, a latency histogram per task
 *  name, the last failures with their errors, and a ten-minute history at
 *  five-second steps for the dashboard's charts. About twice a second the
 *  loop packs the STATUS body plus these fields and hands a copy to the
 *  metrics module, which swaps it in under its own lock: the HTTP thread
 *  renders from that copy and never touches the master's state, and the
 *  loop never waits for a request being served.
 *
 *  The newest dead letters go into the snapshot too. One task by id (GET
 *  /api/task) cannot come from a snapshot: the HTTP thread posts the id
 *  and wakes the loop, which answers on its next turn with the LOOKUP
 *  form (metrics_internal.h).
 *
 *  Costs on the task path: each task name gets its counters once (a
 *  lookup, then a pointer on its queue), so counting a submission or a
 *  result is a few additions. Task names are chosen by peers, so their
 *  number is bounded: past DIST__OBS_NAMES_MAX the rest count under one
 *  name, "(other)". Without opts.metrics none of this exists (s->obs is
 *  NULL and every hook returns at once).
 */
#include "master_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist/error.h"
#include "metrics_internal.h"

#define OBS_PUBLISH_MS 500
#define OBS_STEP_MS 5000
#define OBS_HISTORY 120  /* steps: ten minutes */
#define OBS_FAILURES 50
#define OBS_DEAD 50       /* newest dead letters in a snapshot */
#define OBS_ERROR_MAX 400 /* bytes of an error kept for the failures table */
#define DIST__OBS_NAMES_MAX 1000
#define OBS_OTHER "(other)"

/* Upper bounds of the latency buckets, in ms (one more bucket for +Inf). */
static const double s_bounds_ms[] = { 1,    2,    5,    10,    20,    50,    100,  200,
                                      500,  1000, 2000, 5000, 10000, 30000, 60000 };
#define OBS_BOUNDS (sizeof s_bounds_ms / sizeof s_bounds_ms[0])

typedef struct dist__mstat {
    dist__mkey_t key; /* first: the index's equality is dist__m_key_eq */
    uint64_t submitted, completed, failed, retried;
    uint64_t counts[OBS_BOUNDS + 1]; /* per bucket, not cumulative; they add up to completed */
    double sum_ms;
} dist__mstat_t;

typedef struct {
    char task[DIST__NAME_MAX + 1];
    char id[33];
    char error[OBS_ERROR_MAX + 1];
    uint64_t at_ms; /* epoch */
} s_failure_t;

typedef struct {
    uint64_t t; /* epoch seconds at the end of the step */
    double completed_per_s, submitted_per_s, p50_ms, p95_ms;
    bool latency; /* p50/p95 mean something: tasks completed in the step */
} s_step_t;

struct dist__mobs {
    dist__metrics_t *metrics;
    dist__hmap_t index;       /* dist__mstat_t by task name */
    dist__mstat_t **stats;    /* the same, in creation order */
    size_t nstats, capstats;
    dist__mstat_t *other;     /* where names past the limit count */
    s_failure_t failures[OBS_FAILURES]; /* a ring, newest at head - 1 */
    size_t fail_head, nfail;
    s_step_t steps[OBS_HISTORY]; /* a ring, oldest at step_head */
    size_t step_head, nsteps;
    int64_t step_start;       /* monotonic ms */
    uint64_t step_sub, step_done;
    uint64_t step_counts[OBS_BOUNDS + 1];
    int64_t next_publish;     /* monotonic ms */
    dist_wire_buf_t *buf;     /* reused for every snapshot */
};

static uint64_t s_epoch_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- per task name ----------------------------------------------------------------- */

static dist__mstat_t *s_stat_new(dist_master_t *s, const char *name, size_t len)
{
    dist__mobs_t *o = s->obs;
    if (o->nstats == o->capstats) {
        size_t cap = o->capstats ? 2 * o->capstats : 16;
        dist__mstat_t **v = realloc(o->stats, cap * sizeof *v);
        if (!v)
            return NULL;
        o->stats = v, o->capstats = cap;
    }
    dist__mstat_t *st = dist__m_named_new(s, &o->index, name, len, sizeof *st);
    if (st)
        o->stats[o->nstats++] = st;
    return st;
}

/* The counters of a task name, created on first use; NULL only without
 * memory (the event is then not counted per name). */
static dist__mstat_t *s_stat(dist_master_t *s, dist__mtq_t *q)
{
    if (q->stat)
        return q->stat;
    dist__mobs_t *o = s->obs;
    dist__mstat_t *st = dist__m_named_find(s, &o->index, q->key.name, q->key.len);
    if (!st) {
        if (o->nstats >= DIST__OBS_NAMES_MAX) {
            /* A real task may be called "(other)" too: share it then. */
            if (!o->other)
                o->other = dist__m_named_find(s, &o->index, OBS_OTHER, strlen(OBS_OTHER));
            if (!o->other)
                o->other = s_stat_new(s, OBS_OTHER, strlen(OBS_OTHER));
            st = o->other;
        } else {
            st = s_stat_new(s, q->key.name, q->key.len);
        }
    }
    /* The queue may be swept and made again later: the counters outlive
     * it in the index, and the new queue finds them there. */
    q->stat = st;
    return st;
}

void dist__m_obs_submitted(dist_master_t *s, dist__mtq_t *q, int delta)
{
    if (!s->obs)
        return;
    dist__mstat_t *st = s_stat(s, q);
    if (delta > 0) {
        s->obs->step_sub += (uint64_t)delta;
        if (st)
            st->submitted += (uint64_t)delta;
    } else {
        /* A submission whose commit failed never happened. */
        if (s->obs->step_sub)
            s->obs->step_sub--;
        if (st && st->submitted)
            st->submitted--;
    }
}

void dist__m_obs_retried(dist_master_t *s, dist__mtq_t *q)
{
    if (!s->obs)
        return;
    dist__mstat_t *st = s_stat(s, q);
    if (st)
        st->retried++;
}

static size_t s_bucket(double ms)
{
    size_t i = 0;
    while (i < OBS_BOUNDS && ms > s_bounds_ms[i])
        i++;
    return i;
}

void dist__m_obs_finished(dist_master_t *s, const dist__mtask_t *t, int st_code,
                          const void *error, size_t len)
{
    dist__mobs_t *o = s->obs;
    if (!o || !t->q)
        return;
    dist__mstat_t *st = s_stat(s, t->q);
    double ms = t->accepted_at && s->now > t->accepted_at ? (double)(s->now - t->accepted_at) : 0;
    size_t b = s_bucket(ms);
    o->step_done++;
    o->step_counts[b]++;
    if (st) {
        st->completed++;
        if (st_code != DIST__ST_OK)
            st->failed++;
        st->counts[b]++;
        st->sum_ms += ms;
    }
    if (st_code == DIST__ST_OK)
        return;
    s_failure_t *f = &o->failures[o->fail_head];
    o->fail_head = (o->fail_head + 1) % OBS_FAILURES;
    if (o->nfail < OBS_FAILURES)
        o->nfail++;
    snprintf(f->task, sizeof f->task, "%.*s", (int)t->q->key.len, t->q->key.name);
    dist__id_hex(&t->id, f->id);
    size_t n = len < OBS_ERROR_MAX ? len : OBS_ERROR_MAX;
    memcpy(f->error, error, n);
    f->error[n] = 0;
    /* The error is the worker's text: keep it printable (the JSON
     * converter makes it valid UTF-8; NUL would cut it here). */
    for (size_t i = 0; i < n; i++)
        if (f->error[i] == 0)
            f->error[i] = ' ';
    f->at_ms = s_epoch_ms();
}

/* ---- history ------------------------------------------------------------------------ */

/* The q-quantile of a step's latencies, interpolated inside its bucket as
 * Prometheus' histogram_quantile does (from 0 in the first bucket; the
 * +Inf bucket gives the largest finite bound). */
static double s_quantile(const uint64_t *counts, uint64_t total, double q)
{
    double rank = q * (double)total, cum = 0;
    for (size_t i = 0; i <= OBS_BOUNDS; i++) {
        double c = (double)counts[i];
        if (c > 0 && cum + c >= rank) {
            if (i == OBS_BOUNDS)
                return s_bounds_ms[OBS_BOUNDS - 1];
            double lo = i ? s_bounds_ms[i - 1] : 0, hi = s_bounds_ms[i];
            return lo + (hi - lo) * (rank - cum) / c;
        }
        cum += c;
    }
    return 0;
}

static void s_step_close(dist__mobs_t *o, uint64_t end_epoch_s)
{
    s_step_t *st = &o->steps[(o->step_head + o->nsteps) % OBS_HISTORY];
    if (o->nsteps == OBS_HISTORY)
        o->step_head = (o->step_head + 1) % OBS_HISTORY;
    else
        o->nsteps++;
    st->t = end_epoch_s;
    st->completed_per_s = (double)o->step_done * 1000.0 / OBS_STEP_MS;
    st->submitted_per_s = (double)o->step_sub * 1000.0 / OBS_STEP_MS;
    st->latency = o->step_done > 0;
    st->p50_ms = st->latency ? s_quantile(o->step_counts, o->step_done, 0.5) : 0;
    st->p95_ms = st->latency ? s_quantile(o->step_counts, o->step_done, 0.95) : 0;
    o->step_sub = o->step_done = 0;
    memset(o->step_counts, 0, sizeof o->step_counts);
}

/* Closes every step that ended by now; a loop that stalled longer than a
 * step records the steps it missed as empty. */
static void s_steps(dist_master_t *s)
{
    dist__mobs_t *o = s->obs;
    if (s->now - o->step_start < OBS_STEP_MS)
        return;
    uint64_t now_s = s_epoch_ms() / 1000;
    int64_t missed = (s->now - o->step_start) / OBS_STEP_MS;
    if (missed > OBS_HISTORY)
        missed = OBS_HISTORY;
    for (int64_t i = missed - 1; i >= 0; i--)
        s_step_close(o, now_s - (uint64_t)i * (OBS_STEP_MS / 1000));
    o->step_start += ((s->now - o->step_start) / OBS_STEP_MS) * OBS_STEP_MS;
}

/* ---- packing ------------------------------------------------------------------------ */

static int s_stat_cmp(const void *a, const void *b)
{
    const dist__mstat_t *x = *(dist__mstat_t *const *)a, *y = *(dist__mstat_t *const *)b;
    size_t n = x->key.len < y->key.len ? x->key.len : y->key.len;
    int c = memcmp(x->key.name, y->key.name, n);
    return c ? c : (x->key.len > y->key.len) - (x->key.len < y->key.len);
}

/* The newest dead letters (master_control.c keeps them), for the
 * dashboard's table; `dist failed` shows them all. */
static void s_pack_dead(const dist_master_t *s, msgpack_packer *pk)
{
    size_t n = 0;
    for (const dist__mdead_t *d = dist__m_dead_older(s, NULL); d && n < OBS_DEAD;
         d = dist__m_dead_older(s, d))
        n++;
    dist__pk_str(pk, "dead_letters");
    msgpack_pack_array(pk, n);
    const dist__mdead_t *d = dist__m_dead_older(s, NULL);
    for (size_t i = 0; i < n; i++, d = dist__m_dead_older(s, d)) {
        char hex[33];
        dist__id_hex(&d->id, hex);
        const char *err = d->error ? d->error : "";
        size_t elen = strlen(err);
        msgpack_pack_map(pk, d->key ? 7 : 6);
        dist__pk_kv_str(pk, "id", hex);
        if (d->key)
            dist__pk_kv_str(pk, "key", d->key);
        dist__pk_kv_str(pk, "task", d->task);
        dist__pk_kv_u64(pk, "priority", d->o.prio);
        dist__pk_kv_u64(pk, "attempts", d->attempts);
        dist__pk_str(pk, "error");
        dist__pk_strn(pk, err, elen < OBS_ERROR_MAX ? elen : OBS_ERROR_MAX);
        dist__pk_kv_u64(pk, "finished_ms", (uint64_t)d->finished_ms);
    }
}

void dist__m_obs_pack(const dist_master_t *s, msgpack_packer *pk)
{
    const dist__mobs_t *o = s->obs;
    /* Sorted by name, so that the snapshot reads the same from one publish
     * to the next (the order is that of creation otherwise). */
    if (o->nstats > 1)
        qsort(o->stats, o->nstats, sizeof *o->stats, s_stat_cmp);

    dist__pk_str(pk, "tasks");
    msgpack_pack_map(pk, o->nstats);
    for (size_t i = 0; i < o->nstats; i++) {
        const dist__mstat_t *st = o->stats[i];
        dist__pk_strn(pk, st->key.name, st->key.len);
        msgpack_pack_map(pk, 4);
        dist__pk_kv_u64(pk, "submitted", st->submitted);
        dist__pk_kv_u64(pk, "completed", st->completed);
        dist__pk_kv_u64(pk, "failed", st->failed);
        dist__pk_kv_u64(pk, "retried", st->retried);
    }

    dist__pk_str(pk, "latency");
    msgpack_pack_map(pk, 2);
    dist__pk_str(pk, "bounds_ms");
    msgpack_pack_array(pk, OBS_BOUNDS);
    for (size_t i = 0; i < OBS_BOUNDS; i++)
        msgpack_pack_double(pk, s_bounds_ms[i]);
    dist__pk_str(pk, "tasks");
    size_t nlat = 0;
    for (size_t i = 0; i < o->nstats; i++)
        nlat += o->stats[i]->completed > 0;
    msgpack_pack_map(pk, nlat);
    for (size_t i = 0; i < o->nstats; i++) {
        const dist__mstat_t *st = o->stats[i];
        if (!st->completed)
            continue;
        dist__pk_strn(pk, st->key.name, st->key.len);
        msgpack_pack_map(pk, 3);
        dist__pk_str(pk, "counts");
        msgpack_pack_array(pk, OBS_BOUNDS + 1);
        for (size_t k = 0; k <= OBS_BOUNDS; k++)
            msgpack_pack_uint64(pk, st->counts[k]);
        dist__pk_kv_f64(pk, "sum_ms", st->sum_ms);
        dist__pk_kv_u64(pk, "count", st->completed);
    }

    dist__pk_str(pk, "recent_failures");
    msgpack_pack_array(pk, o->nfail);
    for (size_t i = 0; i < o->nfail; i++) {
        const s_failure_t *f = &o->failures[(o->fail_head + OBS_FAILURES - 1 - i) % OBS_FAILURES];
        msgpack_pack_map(pk, 4);
        dist__pk_kv_str(pk, "task", f->task);
        dist__pk_kv_str(pk, "id", f->id);
        dist__pk_kv_str(pk, "error", f->error);
        dist__pk_kv_u64(pk, "at_ms", f->at_ms);
    }

    s_pack_dead(s, pk);

    dist__pk_str(pk, "history");
    msgpack_pack_array(pk, o->nsteps);
    for (size_t i = 0; i < o->nsteps; i++) {
        const s_step_t *st = &o->steps[(o->step_head + i) % OBS_HISTORY];
        msgpack_pack_map(pk, 5);
        dist__pk_kv_u64(pk, "t", st->t);
        dist__pk_kv_f64(pk, "completed_per_s", st->completed_per_s);
        dist__pk_kv_f64(pk, "submitted_per_s", st->submitted_per_s);
        dist__pk_str(pk, "p50_ms");
        if (st->latency)
            msgpack_pack_double(pk, st->p50_ms);
        else
            msgpack_pack_nil(pk);
        dist__pk_str(pk, "p95_ms");
        if (st->latency)
            msgpack_pack_double(pk, st->p95_ms);
        else
            msgpack_pack_nil(pk);
    }
}

/* ---- the loop's side ------------------------------------------------------------------ */

static void s_publish(dist_master_t *s)
{
    dist__mobs_t *o = s->obs;
    /* The full status first; a cluster too large for that (thousands of
     * workers with thousands of names) gets the compact form. */
    for (int compact = 0; compact < 2; compact++) {
        dist_wire_buf_reset(o->buf);
        dist__m_pack_status(s, o->buf, 0, compact, true);
        if (dist_wire_buf_status(o->buf) == 0) {
            size_t len;
            const void *p = dist_wire_buf_data(o->buf, &len);
            dist__metrics_publish(o->metrics, p, len);
            return;
        }
    }
    dist__log(&s->log, DIST_LOG_DEBUG, "metrics: the status does not fit in a snapshot");
}

/* A lookup the endpoint's thread posted (GET /api/task), answered with
 * the LOOKUP form of the task. */
static void s_lookup(dist_master_t *s)
{
    dist__mobs_t *o = s->obs;
    dist__id_t id;
    uint64_t ticket;
    if (!dist__metrics_lookup_take(o->metrics, id.b, &ticket))
        return;
    dist_wire_buf_reset(o->buf);
    bool known = dist__m_pack_lookup(s, dist_wire_buf_packer(o->buf), &id);
    size_t len = 0;
    const void *p = dist_wire_buf_data(o->buf, &len);
    /* A buffer that failed stays unanswered: the request ends in 503. */
    if (dist_wire_buf_status(o->buf) == 0)
        dist__metrics_lookup_answer(o->metrics, ticket, p, len, known);
}

void dist__m_obs_turn(dist_master_t *s)
{
    if (!s->obs)
        return;
    s_lookup(s);
    s_steps(s);
    if (s->now < s->obs->next_publish)
        return;
    s_publish(s);
    s->obs->next_publish = s->now + OBS_PUBLISH_MS;
}

int64_t dist__m_obs_next(const dist_master_t *s)
{
    if (!s->obs)
        return INT64_MAX;
    int64_t step_end = s->obs->step_start + OBS_STEP_MS;
    return s->obs->next_publish < step_end ? s->obs->next_publish : step_end;
}

int dist__m_obs_port(const dist_master_t *s)
{
    return s->obs ? dist__metrics_port(s->obs->metrics) : 0;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

/* True for a HOST:PORT only this host can reach (the host part as
 * security.c judges endpoints). */
static bool s_loopback(const char *hp)
{
    const char *colon = hp ? strrchr(hp, ':') : NULL;
    return colon && dist__host_loopback(hp, (size_t)(colon - hp));
}

/* HOST:PORT in its outline (metrics.c checks the rest), so that a typo
 * is called a bad address rather than a refused one. */
static bool s_well_formed(const char *hp)
{
    const char *colon = hp ? strrchr(hp, ':') : NULL;
    size_t pn = colon ? strlen(colon + 1) : 0;
    return colon && colon > hp && pn >= 1 && pn <= 5 && strspn(colon + 1, "0123456789") == pn;
}

int dist__m_obs_open(dist_master_t *s, const char *hostport, bool insecure)
{
    if (!s_well_formed(hostport)) {
        dist__log(&s->log, DIST_LOG_ERROR,
                  "metrics: bad address \"%.200s\": want HOST:PORT, e.g. 127.0.0.1:9464",
                  hostport ? hostport : "(null)");
        return DIST_EINVAL;
    }
    if (!s_loopback(hostport) && !insecure) {
        dist__log(&s->log, DIST_LOG_ERROR,
                  "metrics: refusing %s: the endpoint has no authentication and shows worker "
                  "hosts and task errors; use a loopback address (127.0.0.1:PORT) or "
                  "--insecure",
                  hostport ? hostport : "(null)");
        return DIST_EINVAL;
    }
    dist__mobs_t *o = calloc(1, sizeof *o);
    if (!o)
        return DIST_ENOMEM;
    dist__hmap_init(&o->index, dist__m_key_eq);
    o->buf = dist_wire_buf_new(0);
    if (!o->buf) {
        free(o);
        return DIST_ENOMEM;
    }
    o->step_start = s->now;
    s->obs = o;
    if (!s_loopback(hostport))
        dist__log(&s->log, DIST_LOG_WARN,
                  "metrics: %s may be reachable from other hosts and has no authentication "
                  "(--insecure)",
                  hostport);
    int err = 0;
    dist__logger_t lg = s->log;
    o->metrics = dist__metrics_new(hostport, &lg, &err);
    if (!o->metrics) {
        dist__m_obs_close(s);
        return err ? err : DIST_ESTATE;
    }
    /* GET /api/task wakes the loop with the pipe dist_master_stop uses
     * (the loop drains it and runs a turn, which answers the lookup). */
    dist__metrics_set_wake(o->metrics, s->wake[1]);
    return 0;
}

void dist__m_obs_close(dist_master_t *s)
{
    dist__mobs_t *o = s->obs;
    if (!o)
        return;
    /* The server first: its thread reads only its own copies, but it must
     * be gone before the logger it was given goes with the master. */
    dist__metrics_destroy(&o->metrics);
    for (size_t i = 0; i < o->nstats; i++)
        free(o->stats[i]);
    free(o->stats);
    dist__hmap_fini(&o->index);
    dist_wire_buf_destroy(&o->buf);
    free(o);
    s->obs = NULL;
}

/*  master_status.c - the STATUS reply (docs/PROTOCOL.md section 7b):
 *  workers, queues, clients, counters and rates.
 *
 *  Rates are kept in one-second buckets (a small ring), so counting costs
 *  two additions and the rate is the sum over the last 10 s divided by
 *  the part of those 10 s the master has been up. A status larger than
 *  one message (thousands of workers with thousands of names each) is
 *  sent again in a compact form: the first 1,000 workers with at most 100
 *  task names each and the first 1,000 queues, marked `truncated: true`.
 */
#include "master_internal.h"

#include <stdlib.h>

#include "dist/error.h"

#define COMPACT_WORKERS 1000
#define COMPACT_NAMES 100
#define COMPACT_QUEUES 1000

void dist__m_rate_add(dist_master_t *s, uint64_t submitted, uint64_t completed)
{
    int64_t sec = s->now / 1000;
    size_t i = (size_t)(sec % (DIST__RATE_SECONDS + 1));
    if (s->rate_sec[i] != sec) {
        s->rate_sec[i] = sec;
        s->rate_sub[i] = s->rate_done[i] = 0;
    }
    s->rate_sub[i] += submitted;
    s->rate_done[i] += completed;
}

static void s_rates(const dist_master_t *s, double *sub, double *done)
{
    int64_t sec = s->now / 1000;
    uint64_t a = 0, b = 0;
    for (size_t i = 0; i <= DIST__RATE_SECONDS; i++) {
        if (s->rate_sec[i] > sec - DIST__RATE_SECONDS && s->rate_sec[i] <= sec) {
            a += s->rate_sub[i];
            b += s->rate_done[i];
        }
    }
    double window = (double)(s->now - s->started) / 1000.0;
    if (window > DIST__RATE_SECONDS)
        window = DIST__RATE_SECONDS;
    if (window < 1.0)
        window = 1.0;
    *sub = (double)a / window;
    *done = (double)b / window;
}

static void s_pack_worker(const dist_master_t *s, msgpack_packer *pk, const dist__mpeer_t *w,
                          size_t max_names)
{
    /* busy (what it holds) stays for older readers; running and
     * prefetched split it: tasks beyond its slots wait in its pool. */
    size_t running = w->held < w->slots ? w->held : w->slots;
    msgpack_pack_map(pk, 12);
    dist__pk_kv_str(pk, "name", w->name);
    dist__pk_kv_str(pk, "host", w->host);
    dist__pk_kv_u64(pk, "pid", w->pid);
    dist__pk_kv_u64(pk, "slots", w->slots);
    dist__pk_kv_u64(pk, "capacity", w->capacity);
    dist__pk_kv_u64(pk, "busy", w->held);
    dist__pk_kv_u64(pk, "running", running);
    dist__pk_kv_u64(pk, "prefetched", w->held - running);
    dist__pk_kv_u64(pk, "done", w->done);
    dist__pk_kv_u64(pk, "failed", w->failed);
    dist__pk_kv_u64(pk, "last_seen_ms", (uint64_t)(s->now - w->last_seen));
    dist__pk_str(pk, "tasks");
    size_t n = w->nnames < max_names ? w->nnames : max_names;
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++)
        dist__pk_strn(pk, w->names[i].q->key.name, w->names[i].q->key.len);
}

/* tq: a task queue, which adds workers (connected workers offering its
 * name), depth_by_priority and delayed; NULL for a named queue. */
static void s_pack_queue(msgpack_packer *pk, const char *name, size_t len, const char *kind,
                         size_t depth, size_t in_flight, const dist__mtq_t *tq)
{
    msgpack_pack_map(pk, tq ? 7 : 4);
    dist__pk_str(pk, "name");
    dist__pk_strn(pk, name, len);
    dist__pk_kv_str(pk, "kind", kind);
    dist__pk_kv_u64(pk, "depth", depth);
    dist__pk_kv_u64(pk, "in_flight", in_flight);
    if (!tq)
        return;
    dist__pk_kv_u64(pk, "workers", tq->nws);
    dist__pk_str(pk, "depth_by_priority");
    msgpack_pack_array(pk, DIST__PRIORITY_LEVELS);
    for (int i = 0; i < DIST__PRIORITY_LEVELS; i++)
        msgpack_pack_uint64(pk, tq->lv[i].n);
    dist__pk_kv_u64(pk, "delayed", tq->delayed);
}

void dist__m_pack_status(const dist_master_t *s, dist_wire_buf_t *b, uint64_t req, bool compact,
                         bool extra)
{
    msgpack_packer *pk = dist_wire_buf_packer(b);
    size_t max_workers = compact ? COMPACT_WORKERS : SIZE_MAX;
    size_t max_names = compact ? COMPACT_NAMES : SIZE_MAX;
    size_t max_queues = compact ? COMPACT_QUEUES : SIZE_MAX;
    /* A snapshot for the metrics endpoint answers no request: no req. */
    extra = extra && s->obs;
    msgpack_pack_map(pk, 6 + (compact ? 1 : 0) + (extra ? DIST__OBS_FIELDS : 1));
    if (!extra)
        dist__pk_kv_u64(pk, "req", req);

    dist__pk_str(pk, "master");
    msgpack_pack_map(pk, 4);
    dist__pk_kv_str(pk, "name", s->name);
    dist__pk_kv_str(pk, "version", DIST_VERSION_STRING);
    dist__pk_kv_u64(pk, "uptime_s", (uint64_t)((s->now - s->started) / 1000));
    dist__pk_str(pk, "store");
    if (s->store)
        dist__pk_str(pk, dist__store_path(s->store));
    else
        msgpack_pack_nil(pk);

    dist__pk_str(pk, "workers");
    size_t nw = s->live.n < max_workers ? s->live.n : max_workers;
    msgpack_pack_array(pk, nw);
    const dist__dnode_t *d = dist__dl_first(&s->live);
    for (size_t i = 0; i < nw; i++, d = dist__dl_next(&s->live, d))
        s_pack_worker(s, pk, DIST__CONTAINER_OF(d, dist__mpeer_t, live), max_names);

    dist__pk_str(pk, "queues");
    size_t ntq = s->tqs.n < max_queues ? s->tqs.n : max_queues;
    size_t nnq = s->nqs.n < max_queues - ntq ? s->nqs.n : max_queues - ntq;
    msgpack_pack_array(pk, ntq + nnq);
    d = dist__dl_first(&s->tqs);
    for (size_t i = 0; i < ntq; i++, d = dist__dl_next(&s->tqs, d)) {
        const dist__mtq_t *q = DIST__CONTAINER_OF(d, dist__mtq_t, all);
        s_pack_queue(pk, q->key.name, q->key.len, "task", q->nready, q->in_flight, q);
    }
    d = dist__dl_first(&s->nqs);
    for (size_t i = 0; i < nnq; i++, d = dist__dl_next(&s->nqs, d)) {
        const dist__mnq_t *q = DIST__CONTAINER_OF(d, dist__mnq_t, all);
        s_pack_queue(pk, q->key.name, q->key.len, "named", q->n, 0, NULL);
    }

    dist__pk_kv_u64(pk, "clients", s->nclients);

    dist__pk_str(pk, "counters");
    msgpack_pack_map(pk, 14);
    dist__pk_kv_u64(pk, "submitted", s->c.submitted);
    dist__pk_kv_u64(pk, "completed", s->c.completed);
    dist__pk_kv_u64(pk, "failed", s->c.failed);
    dist__pk_kv_u64(pk, "retried", s->c.retried);
    dist__pk_kv_u64(pk, "gave_up", s->c.gave_up);
    dist__pk_kv_u64(pk, "dead_workers", s->c.dead_workers);
    dist__pk_kv_u64(pk, "malformed", s->c.malformed);
    dist__pk_kv_u64(pk, "refused_handshakes", s->c.refused_handshakes);
    dist__pk_kv_u64(pk, "refused", s->c.refused);
    dist__pk_kv_u64(pk, "late_results", s->c.late_results);
    dist__pk_kv_u64(pk, "disconnected", s->c.disconnected);
    dist__pk_kv_u64(pk, "results_waiting", s->results_waiting);
    dist__pk_kv_u64(pk, "cancelled", s->c.cancelled);
    dist__pk_kv_u64(pk, "expired_results", s->c.expired_results);

    double sub, done;
    s_rates(s, &sub, &done);
    dist__pk_str(pk, "rates");
    msgpack_pack_map(pk, 2);
    dist__pk_kv_f64(pk, "submitted_per_s", sub);
    dist__pk_kv_f64(pk, "completed_per_s", done);
    if (compact)
        dist__pk_kv_bool(pk, "truncated", true);
    if (extra)
        dist__m_obs_pack(s, pk);
}

void dist__m_status(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root)
{
    dist__status_req_t sr;
    if (dist__parse_status_req(root, &sr)) {
        dist__m_malformed(s, p, "STATUS needs req, a u64");
        return;
    }
    uint64_t req = sr.req;
    for (int compact = 0; compact < 2; compact++) {
        dist_wire_buf_t *b = dist_wire_buf_new(s->max_message - 256);
        if (!b)
            break;
        dist__m_pack_status(s, b, req, compact, false);
        if (dist_wire_buf_status(b) == 0) {
            dist__m_send(s, p, DIST__CMD_STATUS, b, NULL, NULL, 0);
            dist_wire_buf_destroy(&b);
            return;
        }
        dist_wire_buf_destroy(&b);
    }
    dist__m_error(s, p, "too_large", req, "the status does not fit in one message");
}

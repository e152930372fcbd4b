/*  metrics.c - the master's observability endpoint (see metrics_internal.h
 *  and docs/OBSERVABILITY.md): libmicrohttpd serves the latest snapshot the
 *  master published, as Prometheus text, as JSON, and through a dashboard
 *  page that polls the JSON.
 *
 *  A snapshot is immutable once published and reference counted: publish
 *  swaps the pointer under a mutex, and a request takes a reference for as
 *  long as it renders. What a snapshot renders to is cached on it as a
 *  libmicrohttpd response (responses are reference counted and reusable),
 *  so a Prometheus scraper and any number of dashboards cost one rendering
 *  per snapshot and per format, done in the server's thread, never in the
 *  master's loop. The master's side of publish is a validation pass and a
 *  copy.
 *
 *  GET /api/task is the one answer not taken from a snapshot: the server's
 *  thread posts the id to the master's loop (a slot under the lock and a
 *  byte on the loop's wake pipe), and waits at most a second for the loop
 *  to answer with the LOOKUP form of that task. The server has one
 *  thread, so a loop that does not answer holds other requests back for
 *  that second at most.
 *
 *  libmicrohttpd parses HTTP; this file only routes five paths. Connections
 *  are bounded in number and idle time, and no request body is kept.
 */
#include "metrics_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dist/error.h"
#include "dist/wire.h"
#include "mpjson_internal.h"
#include "proto_internal.h"

#define S_CONN_LIMIT 64     /* connections at once; libmicrohttpd refuses more */
#define S_CONN_TIMEOUT_S 10 /* an idle or slow connection is closed after this */
#define S_BACKLOG 64
#define S_LOOKUP_WAIT_MS 1000 /* GET /api/task waits this long for the master's loop */

/* The page must never load anything from elsewhere (the machines are
 * offline, and the page shows strings that peers chose). */
#define S_CSP                                                                               \
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "          \
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "      \
    "frame-ancestors 'none'"

enum { S_PROM = 0, S_JSON = 1, S_KINDS = 2 };

typedef struct s_snap {
    int refs;                               /* under the module's lock */
    struct MHD_Response *resp[S_KINDS];     /* rendered lazily; under the lock */
    size_t len;
    unsigned char data[];                   /* the MessagePack map */
} s_snap_t;

struct dist__metrics {
    struct MHD_Daemon *daemon;
    dist__logger_t lg;
    int port;
    pthread_mutex_t lock;
    s_snap_t *snap;                         /* under lock; NULL before the first publish */
    bool bad_publish;                       /* under lock: the last publish was refused */
    /* GET /api/task: one lookup at a time (the server has one thread),
     * posted here for the master's loop, which answers it through
     * dist__metrics_lookup_answer. Under lock but `pending`, which the
     * loop reads without it on every turn. */
    struct {
        int wake_fd;                        /* -1: lookups are not served */
        pthread_cond_t cond;                /* answered or closing */
        atomic_bool pending;                /* posted, not yet taken by the loop */
        bool closing;
        uint64_t seq;                       /* of the lookup posted last */
        uint64_t answered;                  /* seq of the answer held */
        unsigned char id[16];
        unsigned char *answer;              /* its MessagePack map, or NULL */
        size_t alen;
        bool known;
    } lk;
    /* Fixed answers, built once and reused by every request. */
    struct MHD_Response *r_html, *r_health, *r_404, *r_405, *r_503, *r_500;
};

/* ---- a growable text buffer --------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    bool oom; /* sticky: once a write fails, the text is incomplete */
} s_buf_t;

static bool s_reserve(s_buf_t *b, size_t more)
{
    if (b->oom)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p, b->cap = cap;
    return true;
}

static void s_put(s_buf_t *b, const char *s, size_t n)
{
    if (!s_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void s_puts(s_buf_t *b, const char *s)
{
    s_put(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void s_printf(s_buf_t *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof tmp) {
        s_put(b, tmp, (size_t)n);
        return;
    }
    if (!s_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Hands the text to the caller (malloc'd), or frees it and returns NULL
 * when a write failed. */
static char *s_take(s_buf_t *b, size_t *len)
{
    if (b->oom || !s_reserve(b, 0)) {
        free(b->p);
        return NULL;
    }
    *len = b->len;
    return b->p;
}

/* ---- numbers ------------------------------------------------------------------------ */

/* The shortest decimal that reads back as the same double, so that 0.001
 * prints as "0.001", not "0.0010000000000000000208"; and, as Prometheus'
 * own clients write floats, without an exponent below 1e6 (an `le` of 60,
 * not 6e+01). The caller has made the C locale current (a decimal comma
 * would break the format). */
static void s_fmt_f64(double v, char out[40])
{
    if (isnan(v)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    /* Formatted into a local buffer: GCC 12 at -O3 warns (wrongly) about a
     * null destination when snprintf writes straight to `out` here. */
    char tmp[40];
    int prec = 1;
    for (; prec < 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    snprintf(tmp, sizeof tmp, "%.*g", prec < 6 ? 6 : prec, v);
    memcpy(out, tmp, sizeof tmp);
}

/* A numeric field as Prometheus text: integers exactly, floats shortest.
 * false when o is missing or not a number. div > 0 converts units (ms to
 * s), making the value a float. */
static bool s_fmt_num(const msgpack_object *o, double div, char out[40])
{
    if (!o)
        return false;
    if (div > 0) {
        double d;
        if (dist_wire_get_f64(o, &d) != 0)
            return false;
        s_fmt_f64(d / div, out);
        return true;
    }
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        snprintf(out, 40, "%" PRIu64, o->via.u64);
        return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        snprintf(out, 40, "%" PRId64, o->via.i64);
        return true;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        s_fmt_f64(o->via.f64, out);
        return true;
    default:
        return false;
    }
}

/* ---- Prometheus text format 0.0.4 --------------------------------------------------- */

typedef struct {
    const char *name, *type, *help;
    bool started; /* HELP and TYPE written */
} s_fam_t;

typedef struct {
    const char *name;
    const char *v; /* not NUL-terminated; may be any bytes */
    size_t n;
} s_lbl_t;

/* A label value: UTF-8 (invalid sequences and NUL become U+FFFD) with
 * backslash, double quote and newline escaped, as the format requires. */
static void s_label_value(s_buf_t *b, const char *v, size_t n)
{
    char stack[256];
    char *clean = NULL;
    if (!dist__utf8_ok(v, n)) {
        clean = 3 * n + 1 <= sizeof stack ? stack : malloc(3 * n + 1);
        if (!clean) {
            b->oom = true;
            return;
        }
        n = dist__utf8_clean(v, n, true, clean);
        v = clean;
    }
    size_t run = 0; /* bytes copied in one piece between escapes */
    for (size_t i = 0; i < n; i++) {
        const char *esc = v[i] == '\\' ? "\\\\" : v[i] == '"' ? "\\\"" : v[i] == '\n' ? "\\n" : NULL;
        if (!esc)
            continue;
        s_put(b, v + run, i - run);
        s_put(b, esc, 2);
        run = i + 1;
    }
    s_put(b, v + run, n - run);
    if (clean != stack)
        free(clean);
}

/* name[suffix]{labels} value */
static void s_sample(s_buf_t *b, s_fam_t *f, const char *suffix, const s_lbl_t *l, int nl,
                     const char *value)
{
    if (!f->started) {
        s_printf(b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
        f->started = true;
    }
    s_puts(b, f->name);
    if (suffix)
        s_puts(b, suffix);
    for (int i = 0; i < nl; i++) {
        s_puts(b, i ? "," : "{");
        s_puts(b, l[i].name);
        s_puts(b, "=\"");
        s_label_value(b, l[i].v, l[i].n);
        s_puts(b, "\"");
    }
    s_puts(b, nl ? "} " : " ");
    s_puts(b, value);
    s_puts(b, "\n");
}

/* A sample without labels from a numeric field; left out when missing. */
static void s_scalar(s_buf_t *b, s_fam_t *f, const msgpack_object *o, double div)
{
    char v[40];
    if (s_fmt_num(o, div, v))
        s_sample(b, f, NULL, NULL, 0, v);
}

/* Rows of a table (workers, queues, task names), sorted by their label
 * values so that the output is stable and duplicates are adjacent. */
typedef struct {
    const char *k1, *k2;
    size_t n1, n2;
    const msgpack_object *o;
} s_row_t;

static int s_cmp_bytes(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an > bn) - (an < bn);
}

static int s_row_key_cmp(const s_row_t *a, const s_row_t *b)
{
    int c = s_cmp_bytes(a->k1, a->n1, b->k1, b->n1);
    return c ? c : s_cmp_bytes(a->k2, a->n2, b->k2, b->n2);
}

/* By label values, then by position in the snapshot (qsort is not stable,
 * and which of two duplicates is kept must not be left to chance). */
static int s_row_cmp(const void *pa, const void *pb)
{
    const s_row_t *a = pa, *b = pb;
    int c = s_row_key_cmp(a, b);
    return c ? c : (a->o > b->o) - (a->o < b->o);
}

/* Sorts the rows and drops repeated label sets, keeping the first in the
 * snapshot (a series must appear once per scrape); returns how many are
 * left. */
static size_t s_rows_finish(s_row_t *rows, size_t n)
{
    if (n == 0)
        return 0;
    qsort(rows, n, sizeof *rows, s_row_cmp);
    size_t k = 1;
    for (size_t i = 1; i < n; i++)
        if (s_row_key_cmp(&rows[k - 1], &rows[i]) != 0)
            rows[k++] = rows[i];
    return k;
}

/* Rows from an array of maps keyed by two str fields (key2 NULL: one). A
 * map without key1 is skipped; a missing key2 is the empty string. */
static s_row_t *s_rows_array(const msgpack_object *arr, const char *key1, const char *key2,
                             size_t *n_out, bool *oom)
{
    const msgpack_object *items;
    size_t n, k = 0;
    *n_out = 0;
    if (dist_wire_get_array(arr, &items, &n) != 0 || n == 0)
        return NULL;
    s_row_t *rows = malloc(n * sizeof *rows);
    if (!rows) {
        *oom = true;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        s_row_t r = { .k2 = "", .o = &items[i] };
        if (dist_wire_get_str(dist_wire_map_get(&items[i], key1), &r.k1, &r.n1) != 0)
            continue;
        if (key2)
            dist_wire_get_str(dist_wire_map_get(&items[i], key2), &r.k2, &r.n2);
        rows[k++] = r;
    }
    *n_out = s_rows_finish(rows, k);
    return rows;
}

/* Rows from a map whose keys are names (str) and values maps. */
static s_row_t *s_rows_map(const msgpack_object *map, size_t *n_out, bool *oom)
{
    const msgpack_object_kv *kv;
    size_t n, k = 0;
    *n_out = 0;
    if (dist_wire_get_map(map, &kv, &n) != 0 || n == 0)
        return NULL;
    s_row_t *rows = malloc(n * sizeof *rows);
    if (!rows) {
        *oom = true;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        s_row_t r = { .k2 = "", .o = &kv[i].val };
        if (dist_wire_get_str(&kv[i].key, &r.k1, &r.n1) == 0)
            rows[k++] = r;
    }
    *n_out = s_rows_finish(rows, k);
    return rows;
}

/* One family with a sample per row, from the row map's `field`. */
static void s_rows_family(s_buf_t *b, s_fam_t *f, const s_row_t *rows, size_t n,
                          const char *l1, const char *l2, const char *field, double div)
{
    for (size_t i = 0; i < n; i++) {
        char v[40];
        if (!s_fmt_num(dist_wire_map_get(rows[i].o, field), div, v))
            continue;
        s_lbl_t l[2] = { { l1, rows[i].k1, rows[i].n1 }, { l2, rows[i].k2, rows[i].n2 } };
        s_sample(b, f, NULL, l, l2 ? 2 : 1, v);
    }
}

static uint64_t s_add_sat(uint64_t a, uint64_t b)
{
    return a + b < a ? UINT64_MAX : a + b;
}

/* dist_task_latency_seconds from `latency`: bounds_ms are the buckets'
 * upper bounds, counts per task are per bucket (not cumulative) with one
 * more for +Inf. Prometheus wants cumulative buckets whose +Inf bucket
 * equals _count, which is made true here whatever the master sent. */
static void s_histogram(s_buf_t *b, const msgpack_object *latency, bool *oom)
{
    const msgpack_object *bo;
    size_t nb;
    if (dist_wire_get_array(dist_wire_map_get(latency, "bounds_ms"), &bo, &nb) != 0)
        return;
    double *bounds = malloc((nb ? nb : 1) * sizeof *bounds);
    char(*le)[40] = malloc((nb ? nb : 1) * sizeof *le);
    size_t nrows = 0;
    s_row_t *rows = NULL;
    if (!bounds || !le) {
        *oom = true;
        goto out;
    }
    for (size_t i = 0; i < nb; i++) {
        /* Bounds must be finite and increasing, or the buckets mean nothing. */
        if (dist_wire_get_f64(&bo[i], &bounds[i]) != 0 || !isfinite(bounds[i]) ||
            (i && bounds[i] <= bounds[i - 1]))
            goto out;
        s_fmt_f64(bounds[i] / 1000.0, le[i]);
    }
    rows = s_rows_map(dist_wire_map_get(latency, "tasks"), &nrows, oom);
    s_fam_t f = { "dist_task_latency_seconds", "histogram",
                  "Time from a task's acceptance by the master to its final result, by task name.",
                  false };
    for (size_t r = 0; r < nrows; r++) {
        const msgpack_object *co = NULL;
        size_t nc = 0;
        dist_wire_get_array(dist_wire_map_get(rows[r].o, "counts"), &co, &nc);
        uint64_t cum = 0, c;
        char v[40];
        s_lbl_t l[2] = { { "task", rows[r].k1, rows[r].n1 }, { "le", NULL, 0 } };
        for (size_t i = 0; i < nb; i++) {
            if (i < nc && dist_wire_get_u64(&co[i], &c) == 0)
                cum = s_add_sat(cum, c);
            snprintf(v, sizeof v, "%" PRIu64, cum);
            l[1].v = le[i], l[1].n = strlen(le[i]);
            s_sample(b, &f, "_bucket", l, 2, v);
        }
        for (size_t i = nb; i < nc; i++)
            if (dist_wire_get_u64(&co[i], &c) == 0)
                cum = s_add_sat(cum, c);
        uint64_t count;
        if (dist_wire_get_u64(dist_wire_map_get(rows[r].o, "count"), &count) != 0 || count < cum)
            count = cum;
        snprintf(v, sizeof v, "%" PRIu64, count);
        l[1].v = "+Inf", l[1].n = 4;
        s_sample(b, &f, "_bucket", l, 2, v);
        double sum_ms = 0;
        dist_wire_get_f64(dist_wire_map_get(rows[r].o, "sum_ms"), &sum_ms);
        char s[40];
        s_fmt_f64(sum_ms / 1000.0, s);
        s_sample(b, &f, "_sum", l, 1, s);
        s_sample(b, &f, "_count", l, 1, v);
    }
out:
    free(rows);
    free(le);
    free(bounds);
}

/* The per-task counters; from `counters`, without the task label, when an
 * older master sends no `tasks`. */
static const struct {
    const char *field, *name, *help;
} s_task_counters[] = {
    { "submitted", "dist_tasks_submitted_total", "Tasks accepted by the master, by task name." },
    { "completed", "dist_tasks_completed_total",
      "Tasks that reached a final result (success or failure), by task name." },
    { "failed", "dist_tasks_failed_total",
      "Tasks whose final result is an error (gave_up included), by task name." },
    { "retried", "dist_tasks_retried_total",
      "Attempts put back in their queue to run again (crash, timeout, lost worker), by task name." },
};

/* Scalars taken from `counters` (u64). */
static const struct {
    const char *field, *name, *type, *help;
} s_counters[] = {
    { "gave_up", "dist_tasks_gave_up_total", "counter",
      "Tasks that failed every attempt their retry budget allowed." },
    { "dead_workers", "dist_dead_workers_total", "counter",
      "Workers declared dead (silent past the heartbeat timeout)." },
    { "malformed", "dist_malformed_messages_total", "counter",
      "Messages dropped as malformed (framing, version, command or body)." },
    { "refused_handshakes", "dist_refused_handshakes_total", "counter",
      "Connections refused by authentication (CURVE/ZAP)." },
    { "results_waiting", "dist_results_waiting", "gauge",
      "Final results held by the master until their client acknowledges them." },
    { "refused", "dist_tasks_refused_total", "counter",
      "Tasks refused at submission (queue full, store failed, unknown task, ...)." },
    { "late_results", "dist_late_results_total", "counter",
      "Worker results dropped as late duplicates (the task was done or had moved on)." },
    { "disconnected", "dist_disconnected_total", "counter",
      "Connections closed by the transport (peer gone, or a frame above the size limit)." },
    { "cancelled", "dist_tasks_cancelled_total", "counter", "Tasks cancelled by a client." },
    { "expired_results", "dist_expired_results_total", "counter",
      "Results forgotten unacknowledged after the master's --result-ttl." },
};

/* Per-worker fields: {worker, host} labels. */
static const struct {
    const char *field, *name, *type, *help;
    double div;
} s_worker_fields[] = {
    { "slots", "dist_worker_slots", "gauge", "Pool processes of the worker (tasks run at once).", 0 },
    { "capacity", "dist_worker_capacity", "gauge",
      "Most tasks the worker holds, running and prefetched.", 0 },
    { "busy", "dist_worker_busy", "gauge", "Tasks the worker holds now (leased, unanswered).", 0 },
    { "done", "dist_worker_done_total", "counter", "Tasks the worker completed successfully.", 0 },
    { "failed", "dist_worker_failed_total", "counter", "Tasks the worker reported as failed.", 0 },
    { "last_seen_ms", "dist_worker_last_seen_seconds", "gauge",
      "Seconds since the worker's last message.", 1000.0 },
};

static void s_render_prom(s_buf_t *b, const msgpack_object *root, bool *oom)
{
    size_t n;
    s_row_t *rows;

    const msgpack_object *master = dist_wire_map_get(root, "master");
    const char *name = "", *version = "";
    size_t name_n = 0, version_n = 0;
    if (master && master->type == MSGPACK_OBJECT_MAP) {
        dist_wire_get_str(dist_wire_map_get(master, "name"), &name, &name_n);
        dist_wire_get_str(dist_wire_map_get(master, "version"), &version, &version_n);
        s_fam_t info = { "dist_master_info", "gauge",
                         "Always 1; the master's name and software version as labels.", false };
        s_lbl_t l[2] = { { "name", name, name_n }, { "version", version, version_n } };
        s_sample(b, &info, NULL, l, 2, "1");
        s_fam_t up = { "dist_master_uptime_seconds", "gauge", "Seconds since the master started.",
                       false };
        s_scalar(b, &up, dist_wire_map_get(master, "uptime_s"), 0);
    }

    const msgpack_object *counters = dist_wire_map_get(root, "counters");
    const msgpack_object *tasks = dist_wire_map_get(root, "tasks");
    rows = s_rows_map(tasks, &n, oom);
    for (size_t i = 0; i < sizeof s_task_counters / sizeof s_task_counters[0]; i++) {
        s_fam_t f = { s_task_counters[i].name, "counter", s_task_counters[i].help, false };
        if (tasks && tasks->type == MSGPACK_OBJECT_MAP)
            s_rows_family(b, &f, rows, n, "task", NULL, s_task_counters[i].field, 0);
        else
            s_scalar(b, &f, dist_wire_map_get(counters, s_task_counters[i].field), 0);
    }
    free(rows);
    for (size_t i = 0; i < sizeof s_counters / sizeof s_counters[0]; i++) {
        s_fam_t f = { s_counters[i].name, s_counters[i].type, s_counters[i].help, false };
        s_scalar(b, &f, dist_wire_map_get(counters, s_counters[i].field), 0);
    }

    rows = s_rows_array(dist_wire_map_get(root, "queues"), "name", "kind", &n, oom);
    s_fam_t depth = { "dist_queue_depth", "gauge", "Items waiting in the queue.", false };
    s_rows_family(b, &depth, rows, n, "queue", "kind", "depth", 0);
    s_fam_t inflight = { "dist_queue_in_flight", "gauge",
                         "Tasks of the queue leased to workers and not yet answered.", false };
    s_rows_family(b, &inflight, rows, n, "queue", "kind", "in_flight", 0);
    s_fam_t delayed = { "dist_queue_delayed", "gauge",
                        "Tasks of the queue held until their time (delay or retry backoff).",
                        false };
    s_rows_family(b, &delayed, rows, n, "queue", "kind", "delayed", 0);
    s_fam_t byprio = { "dist_queue_depth_by_priority", "gauge",
                       "Tasks waiting in the queue, by priority (0-9, higher first).", false };
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *lv;
        size_t nlv;
        if (dist_wire_get_array(dist_wire_map_get(rows[i].o, "depth_by_priority"), &lv, &nlv))
            continue;
        for (size_t p = 0; p < nlv && p < 10; p++) {
            char v[40], pr[4];
            if (!s_fmt_num(&lv[p], 0, v))
                continue;
            snprintf(pr, sizeof pr, "%zu", p);
            s_lbl_t l[2] = { { "queue", rows[i].k1, rows[i].n1 }, { "priority", pr, strlen(pr) } };
            s_sample(b, &byprio, NULL, l, 2, v);
        }
    }
    free(rows);

    const msgpack_object *workers = dist_wire_map_get(root, "workers");
    const msgpack_object *witems;
    size_t nw;
    if (dist_wire_get_array(workers, &witems, &nw) == 0) {
        s_fam_t alive = { "dist_workers_alive", "gauge", "Workers connected to the master.", false };
        char v[40];
        snprintf(v, sizeof v, "%zu", nw);
        s_sample(b, &alive, NULL, NULL, 0, v);
    }
    rows = s_rows_array(workers, "name", "host", &n, oom);
    for (size_t i = 0; i < sizeof s_worker_fields / sizeof s_worker_fields[0]; i++) {
        s_fam_t f = { s_worker_fields[i].name, s_worker_fields[i].type, s_worker_fields[i].help,
                      false };
        s_rows_family(b, &f, rows, n, "worker", "host", s_worker_fields[i].field,
                      s_worker_fields[i].div);
    }
    free(rows);

    s_fam_t clients = { "dist_clients_connected", "gauge", "Clients connected to the master.",
                        false };
    s_scalar(b, &clients, dist_wire_map_get(root, "clients"), 0);

    s_histogram(b, dist_wire_map_get(root, "latency"), oom);
}

/* Limits for a snapshot: it comes from our own master, so only what
 * msgpack-c itself needs (its nesting limit); the length bounds the rest. */
static dist_wire_limits_t s_limits(void)
{
    dist_wire_limits_t l = { .max_depth = DIST_WIRE_DEPTH_MAX, .max_objects = SIZE_MAX };
    return l;
}

static bool s_is_map(const unsigned char *p, size_t len)
{
    dist_wire_limits_t lim = s_limits();
    if (!p || len == 0 || dist_wire_validate(p, len, &lim) != 0)
        return false;
    return (p[0] >= 0x80 && p[0] <= 0x8f) || p[0] == 0xde || p[0] == 0xdf;
}

static int s_json_out(const char *p, size_t n, void *arg)
{
    s_put(arg, p, n);
    return ((s_buf_t *)arg)->oom ? -1 : 0;
}

/* Decodes a snapshot (validated at publish, but the test hook takes any
 * bytes) and renders it as `kind`. Returns malloc'd text or NULL with *err. */
static char *s_render(const void *p, size_t len, int kind, size_t *out_len, int *err)
{
    if (!s_is_map(p, len)) {
        *err = DIST_EPROTO;
        return NULL;
    }
    msgpack_zone zone;
    if (!msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE)) {
        *err = DIST_ENOMEM;
        return NULL;
    }
    msgpack_object root;
    dist_wire_limits_t lim = s_limits();
    int rc = dist_wire_decode(p, len, &lim, &zone, &root);
    if (rc != 0) {
        msgpack_zone_destroy(&zone);
        *err = rc;
        return NULL;
    }
    s_buf_t b = { 0 };
    bool oom = false;
    if (kind == S_PROM) {
        /* The format wants a '.' decimal point whatever locale an embedding
         * program chose; uselocale is per thread. */
        locale_t c = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
        locale_t old = c ? uselocale(c) : (locale_t)0;
        s_render_prom(&b, &root, &oom);
        if (c) {
            uselocale(old);
            freelocale(c);
        } else {
            oom = true;
        }
    } else {
        json_t *j = dist__mp_to_json(&root);
        if (!j || json_dump_callback(j, s_json_out, &b, JSON_COMPACT) != 0)
            oom = true;
        json_decref(j);
        s_put(&b, "\n", 1);
    }
    msgpack_zone_destroy(&zone);
    if (oom)
        b.oom = true;
    char *text = s_take(&b, out_len);
    if (!text)
        *err = DIST_ENOMEM;
    return text;
}

char *dist__metrics_render_prometheus(const void *status_map, size_t len, size_t *out_len,
                                      int *err)
{
    int e = 0;
    char *text = s_render(status_map, len, S_PROM, out_len, &e);
    if (err)
        *err = e;
    return text;
}

/* ---- snapshots ------------------------------------------------------------------------ */

static void s_snap_unref(dist__metrics_t *m, s_snap_t *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&m->lock);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&m->lock);
    if (!last)
        return;
    /* A connection still sending one of these responses holds its own
     * reference inside libmicrohttpd: destroying ours does not cut it. */
    for (int k = 0; k < S_KINDS; k++)
        if (s->resp[k])
            MHD_destroy_response(s->resp[k]);
    free(s);
}

void dist__metrics_publish(dist__metrics_t *m, const void *status_map, size_t len)
{
    if (!m)
        return;
    bool clear = !status_map || len == 0;
    if (!clear && !s_is_map(status_map, len)) {
        /* A master bug would repeat this twice a second: say it once. */
        pthread_mutex_lock(&m->lock);
        bool first = !m->bad_publish;
        m->bad_publish = true;
        pthread_mutex_unlock(&m->lock);
        if (first)
            dist__log(&m->lg, DIST_LOG_WARN,
                      "metrics: published status is not one MessagePack map (%zu bytes): "
                      "ignored, and so are the next ones like it",
                      len);
        return;
    }
    s_snap_t *s = NULL;
    if (!clear) {
        s = malloc(sizeof *s + len);
        if (!s) {
            dist__log(&m->lg, DIST_LOG_WARN, "metrics: out of memory for a %zu-byte status", len);
            return;
        }
        s->refs = 1;
        memset(s->resp, 0, sizeof s->resp);
        s->len = len;
        memcpy(s->data, status_map, len);
    }
    pthread_mutex_lock(&m->lock);
    s_snap_t *old = m->snap;
    m->snap = s;
    m->bad_publish = false;
    pthread_mutex_unlock(&m->lock);
    s_snap_unref(m, old);
}

/* ---- HTTP ------------------------------------------------------------------------------ */

/* Adds the headers every answer carries; destroys r on failure. */
static struct MHD_Response *s_typed(struct MHD_Response *r, const char *type)
{
    if (r && (MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type) != MHD_YES ||
              MHD_add_response_header(r, "X-Content-Type-Options", "nosniff") != MHD_YES ||
              MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES)) {
        MHD_destroy_response(r);
        return NULL;
    }
    return r;
}

static struct MHD_Response *s_fixed(const void *body, size_t len, const char *type)
{
    return s_typed(MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT),
                   type);
}

static struct MHD_Response *s_text(const char *body)
{
    return s_fixed(body, strlen(body), "text/plain; charset=utf-8");
}

/* Renders snapshot s as `kind` into a new response (NULL when out of
 * memory); libmicrohttpd frees the text with free() when done with it. */
static struct MHD_Response *s_build(dist__metrics_t *m, const s_snap_t *s, int kind)
{
    size_t len = 0;
    int err = 0;
    char *text = s_render(s->data, s->len, kind, &len, &err);
    if (!text) {
        dist__log(&m->lg, DIST_LOG_WARN, "metrics: cannot render the status: %s",
                  dist_strerror(err));
        return NULL;
    }
    /* From here libmicrohttpd frees the text, also when s_typed fails. */
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return NULL;
    }
    return s_typed(r, kind == S_PROM ? "text/plain; version=0.0.4; charset=utf-8"
                                     : "application/json");
}

/* Answers from the current snapshot, rendering it on first use. */
static enum MHD_Result s_dynamic(dist__metrics_t *m, struct MHD_Connection *c, int kind,
                                 unsigned *status)
{
    pthread_mutex_lock(&m->lock);
    s_snap_t *s = m->snap;
    struct MHD_Response *r = NULL;
    if (s) {
        s->refs++;
        r = s->resp[kind];
    }
    pthread_mutex_unlock(&m->lock);
    if (!s) {
        *status = MHD_HTTP_SERVICE_UNAVAILABLE;
        return MHD_queue_response(c, *status, m->r_503);
    }
    if (!r) {
        /* Rendered outside the lock, so publish never waits for it; when
         * two threads race, the first to install wins. */
        struct MHD_Response *mine = s_build(m, s, kind), *extra = NULL;
        pthread_mutex_lock(&m->lock);
        if (!s->resp[kind])
            s->resp[kind] = mine;
        else
            extra = mine;
        r = s->resp[kind];
        pthread_mutex_unlock(&m->lock);
        if (extra)
            MHD_destroy_response(extra);
    }
    enum MHD_Result ret;
    if (r) {
        *status = MHD_HTTP_OK;
        ret = MHD_queue_response(c, *status, r);
    } else {
        *status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        ret = MHD_queue_response(c, *status, m->r_500);
    }
    s_snap_unref(m, s);
    return ret;
}

/* ---- GET /api/task?id=ID ---------------------------------------------------------------- */

/* A JSON answer built for one request (libmicrohttpd copies the text). */
static enum MHD_Result s_json_answer(struct MHD_Connection *c, unsigned status, const char *text,
                                     size_t len)
{
    struct MHD_Response *r = s_typed(
        MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY),
        "application/json");
    if (!r)
        return MHD_NO;
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r); /* the queued answer keeps its own reference */
    return ret;
}

static enum MHD_Result s_json_error(struct MHD_Connection *c, unsigned status, const char *msg)
{
    char text[256];
    /* msg is one of this file's constants: nothing in it needs escaping. */
    int n = snprintf(text, sizeof text, "{\"error\":\"%s\"}\n", msg);
    return s_json_answer(c, status, text, (size_t)n);
}

/* Posts the lookup of id to the loop and waits for its answer: true with
 * *answer (malloc'd MessagePack map) and *known, false when the loop did
 * not answer in time or the module is closing. */
static bool s_lookup_wait(dist__metrics_t *m, const dist__id_t *id, unsigned char **answer,
                          size_t *alen, bool *known)
{
    pthread_mutex_lock(&m->lock);
    uint64_t seq = ++m->lk.seq;
    memcpy(m->lk.id, id->b, 16);
    /* An answer to an earlier lookup that gave up waiting is stale. */
    free(m->lk.answer);
    m->lk.answer = NULL;
    atomic_store(&m->lk.pending, true);
    pthread_mutex_unlock(&m->lock);

    /* Non-blocking: a full pipe already holds a wake-up. */
    ssize_t w = write(m->lk.wake_fd, "l", 1);
    (void)w;

    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += S_LOOKUP_WAIT_MS / 1000;
    until.tv_nsec += (long)(S_LOOKUP_WAIT_MS % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L)
        until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_mutex_lock(&m->lock);
    while (m->lk.answered != seq && !m->lk.closing)
        if (pthread_cond_timedwait(&m->lk.cond, &m->lock, &until) == ETIMEDOUT)
            break;
    bool ok = m->lk.answered == seq && m->lk.answer;
    if (ok) {
        *answer = m->lk.answer, *alen = m->lk.alen, *known = m->lk.known;
        m->lk.answer = NULL;
    } else {
        /* The loop must not take it later for nobody. */
        atomic_store(&m->lk.pending, false);
    }
    pthread_mutex_unlock(&m->lock);
    return ok;
}

/* The loop's answer as JSON, with the id in hex (the wire carries its 16
 * bytes, which the generic conversion would show as base64). */
static char *s_task_json(const unsigned char *p, size_t len, const dist__id_t *id, size_t *out)
{
    if (!s_is_map(p, len))
        return NULL;
    msgpack_zone zone;
    if (!msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE))
        return NULL;
    msgpack_object root;
    dist_wire_limits_t lim = s_limits();
    char *text = NULL;
    json_t *j = NULL;
    if (dist_wire_decode(p, len, &lim, &zone, &root) == 0 && (j = dist__mp_to_json(&root))) {
        char hex[33];
        dist__id_hex(id, hex);
        s_buf_t b = { 0 };
        if (json_object_set_new(j, "id", json_string(hex)) == 0 &&
            json_dump_callback(j, s_json_out, &b, JSON_COMPACT) == 0) {
            s_put(&b, "\n", 1);
            text = s_take(&b, out);
        } else {
            free(b.p);
        }
    }
    json_decref(j);
    msgpack_zone_destroy(&zone);
    return text;
}

static enum MHD_Result s_task(dist__metrics_t *m, struct MHD_Connection *c, unsigned *status)
{
    const char *arg = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "id");
    dist__id_t id;
    if (!arg || dist__id_from_key(arg, strlen(arg), &id) != 0) {
        *status = MHD_HTTP_BAD_REQUEST;
        return s_json_error(c, *status, "want id=ID: a task's key (1 to 128 printable bytes, "
                                        "no space) or 32 hex digits");
    }
    unsigned char *answer = NULL;
    size_t alen = 0, tlen = 0;
    bool known = false;
    if (m->lk.wake_fd < 0 || !s_lookup_wait(m, &id, &answer, &alen, &known)) {
        *status = MHD_HTTP_SERVICE_UNAVAILABLE;
        return s_json_error(c, *status, "the master did not answer in time");
    }
    char *text = s_task_json(answer, alen, &id, &tlen);
    free(answer);
    if (!text) {
        *status = MHD_HTTP_INTERNAL_SERVER_ERROR;
        return s_json_error(c, *status, "cannot render the task");
    }
    *status = known ? MHD_HTTP_OK : MHD_HTTP_NOT_FOUND;
    enum MHD_Result ret = s_json_answer(c, *status, text, tlen);
    free(text);
    return ret;
}

void dist__metrics_set_wake(dist__metrics_t *m, int fd)
{
    if (m)
        m->lk.wake_fd = fd;
}

bool dist__metrics_lookup_take(dist__metrics_t *m, unsigned char id[16], uint64_t *ticket)
{
    if (!m || !atomic_load(&m->lk.pending))
        return false;
    pthread_mutex_lock(&m->lock);
    bool got = atomic_exchange(&m->lk.pending, false);
    if (got) {
        memcpy(id, m->lk.id, 16);
        *ticket = m->lk.seq;
    }
    pthread_mutex_unlock(&m->lock);
    return got;
}

void dist__metrics_lookup_answer(dist__metrics_t *m, uint64_t ticket, const void *map, size_t len,
                                 bool known)
{
    if (!m)
        return;
    unsigned char *copy = len ? malloc(len) : NULL;
    if (copy)
        memcpy(copy, map, len);
    pthread_mutex_lock(&m->lock);
    if (ticket == m->lk.seq && copy) {
        free(m->lk.answer);
        m->lk.answer = copy, m->lk.alen = len, m->lk.known = known;
        m->lk.answered = ticket;
        copy = NULL;
        pthread_cond_broadcast(&m->lk.cond);
    }
    pthread_mutex_unlock(&m->lock);
    free(copy); /* the lookup gave up waiting, or another replaced it */
}

static enum MHD_Result s_handler(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
    (void)version, (void)upload_data;
    static int s_seen; /* marks a request whose headers were seen */
    dist__metrics_t *m = cls;
    unsigned status;
    enum MHD_Result ret;
    bool get = strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
    if (get && !*con_cls) {
        /* libmicrohttpd calls first with the headers alone, and closes the
         * connection after an answer given then; answering on the next
         * call keeps it open for the scraper's or the page's next poll. */
        *con_cls = &s_seen;
        return MHD_YES;
    }
    if (get && *upload_data_size) {
        *upload_data_size = 0; /* a GET with a body: the body means nothing */
        return MHD_YES;
    }
    /* HEAD is GET without the body (libmicrohttpd leaves it out). Another
     * method is answered at once, before any body is read. */
    if (!get) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        ret = MHD_queue_response(c, status, m->r_405);
    } else if (strcmp(url, "/metrics") == 0) {
        ret = s_dynamic(m, c, S_PROM, &status);
    } else if (strcmp(url, "/api/status") == 0) {
        ret = s_dynamic(m, c, S_JSON, &status);
    } else if (strcmp(url, "/api/task") == 0) {
        ret = s_task(m, c, &status);
    } else if (strcmp(url, "/") == 0) {
        status = MHD_HTTP_OK;
        ret = MHD_queue_response(c, status, m->r_html);
    } else if (strcmp(url, "/healthz") == 0) {
        status = MHD_HTTP_OK;
        ret = MHD_queue_response(c, status, m->r_health);
    } else {
        status = MHD_HTTP_NOT_FOUND;
        ret = MHD_queue_response(c, status, m->r_404);
    }
    dist__log(&m->lg, DIST_LOG_DEBUG, "metrics: %.16s %.200s -> %u", method, url, status);
    return ret;
}

/* libmicrohttpd's own messages, at debug level: most are about clients
 * (one that hung up mid-request, the connection limit reached), which a
 * port scan or a TCP health check would turn into a stream of warnings;
 * what stops the server is logged by this file itself. */
static void s_mhd_log(void *cls, const char *fmt, va_list ap)
{
    const dist__logger_t *lg = cls;
    if (!lg->fn || lg->level < DIST_LOG_DEBUG)
        return;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = 0;
    dist__log(lg, DIST_LOG_DEBUG, "metrics: http: %s", line);
}

/* ---- address and socket ------------------------------------------------------------------ */

/* Splits "HOST:PORT" / "[V6]:PORT" into host (NUL-terminated) and port. */
static int s_parse(const char *hp, char *host, size_t cap, unsigned *port, bool *v6)
{
    if (!hp)
        return DIST_EINVAL;
    const char *h = hp, *end, *p;
    *v6 = hp[0] == '[';
    if (*v6) {
        h = hp + 1;
        end = strchr(h, ']');
        if (!end || end[1] != ':')
            return DIST_EINVAL;
        p = end + 2;
    } else {
        end = strrchr(hp, ':');
        /* A bare IPv6 address is ambiguous: it must be in brackets. */
        if (!end || memchr(hp, ':', (size_t)(end - hp)))
            return DIST_EINVAL;
        p = end + 1;
    }
    size_t hn = (size_t)(end - h);
    if (hn == 0 || hn >= cap)
        return DIST_EINVAL;
    memcpy(host, h, hn);
    host[hn] = 0;
    size_t pn = strlen(p);
    if (pn == 0 || pn > 5 || strspn(p, "0123456789") != pn)
        return DIST_EINVAL;
    unsigned long v = strtoul(p, NULL, 10);
    if (v > 65535)
        return DIST_EINVAL;
    *port = (unsigned)v;
    return 0;
}

/* Binds and listens on the first address of host that accepts, and
 * returns the socket (or a negative code). The socket is ours rather than
 * libmicrohttpd's so that a failure says why (EADDRINUSE, EACCES, ...) and
 * an IPv6 socket is bound to IPv6 only. */
static int s_listen(const char *host, unsigned port, bool v6, int *bound_port)
{
    struct addrinfo hints = { .ai_family = v6 ? AF_INET6 : AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM,
                              .ai_flags = v6 ? AI_NUMERICHOST : 0 };
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, NULL, &hints, &res);
    if (g != 0)
        return g == EAI_MEMORY ? DIST_ENOMEM : g == EAI_SYSTEM && errno ? -errno : DIST_ENOENT;
    int rc = DIST_ENOENT;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        if (a->ai_family != AF_INET && a->ai_family != AF_INET6)
            continue;
        struct sockaddr_storage ss;
        memcpy(&ss, a->ai_addr, a->ai_addrlen);
        if (a->ai_family == AF_INET)
            ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
        else
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
        int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            rc = -errno;
            continue;
        }
        int one = 1;
        /* A restarted master rebinds at once despite connections in TIME_WAIT. */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (a->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        socklen_t sl = sizeof ss;
        if (bind(fd, (struct sockaddr *)&ss, a->ai_addrlen) != 0 || listen(fd, S_BACKLOG) != 0 ||
            getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
            rc = -errno;
            close(fd);
            continue;
        }
        *bound_port = ntohs(a->ai_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                    : ((struct sockaddr_in6 *)&ss)->sin6_port);
        rc = fd;
        break;
    }
    freeaddrinfo(res);
    return rc;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static void s_free(dist__metrics_t *m)
{
    struct MHD_Response **fixed[] = { &m->r_html, &m->r_health, &m->r_404,
                                      &m->r_405,  &m->r_503,    &m->r_500 };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (*fixed[i])
            MHD_destroy_response(*fixed[i]);
    s_snap_unref(m, m->snap);
    free(m->lk.answer);
    pthread_cond_destroy(&m->lk.cond);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

dist__metrics_t *dist__metrics_new(const char *hostport, const dist__logger_t *lg, int *err)
{
    int rc = 0;
    dist__metrics_t *m = calloc(1, sizeof *m);
    if (!m) {
        rc = DIST_ENOMEM;
        goto fail;
    }
    if (lg)
        m->lg = *lg;
    m->lk.wake_fd = -1;
    pthread_condattr_t ca;
    bool ca_ok = pthread_condattr_init(&ca) == 0;
    /* The wait of a lookup is bounded on the monotonic clock (a clock step
     * must not make it wait for hours). */
    bool cond_ok = ca_ok && pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
                   pthread_cond_init(&m->lk.cond, &ca) == 0;
    if (ca_ok)
        pthread_condattr_destroy(&ca);
    if (!cond_ok || pthread_mutex_init(&m->lock, NULL) != 0) {
        if (cond_ok)
            pthread_cond_destroy(&m->lk.cond);
        free(m);
        m = NULL;
        rc = DIST_ENOMEM;
        goto fail;
    }
    char host[256];
    unsigned port;
    bool v6;
    rc = s_parse(hostport, host, sizeof host, &port, &v6);
    if (rc != 0) {
        dist__log(&m->lg, DIST_LOG_ERROR, "metrics: bad address \"%.200s\": want HOST:PORT",
                  hostport ? hostport : "(null)");
        goto fail;
    }
    m->r_html = s_fixed(dist__dashboard_html, dist__dashboard_html_len, "text/html; charset=utf-8");
    m->r_health = s_text("ok\n");
    m->r_404 = s_text("not found\n");
    m->r_405 = s_text("method not allowed: GET or HEAD only\n");
    m->r_503 = s_text("no status published yet\n");
    m->r_500 = s_text("cannot render the status\n");
    if (!m->r_html || !m->r_health || !m->r_404 || !m->r_405 || !m->r_503 || !m->r_500 ||
        MHD_add_response_header(m->r_html, "Content-Security-Policy", S_CSP) != MHD_YES ||
        MHD_add_response_header(m->r_405, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") != MHD_YES) {
        rc = DIST_ENOMEM;
        goto fail;
    }
    int fd = s_listen(host, port, v6, &m->port);
    if (fd < 0) {
        rc = fd;
        dist__log(&m->lg, DIST_LOG_ERROR, "metrics: cannot listen on %s: %s", hostport,
                  dist_strerror(rc));
        goto fail;
    }
    /* libmicrohttpd owns fd from here: it closes it on stop, and (checked
     * with 0.9.75) when it fails to start, so it is not closed here. */
    errno = 0;
    m->daemon = MHD_start_daemon(
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0), 0, NULL, NULL,
        s_handler, m, MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log, &m->lg, MHD_OPTION_LISTEN_SOCKET,
        (MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)S_CONN_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)S_CONN_TIMEOUT_S, MHD_OPTION_END);
    if (!m->daemon) {
        rc = errno ? -errno : DIST_ESTATE;
        if (rc == DIST_EINVAL)
            rc = DIST_ESTATE;
        dist__log(&m->lg, DIST_LOG_ERROR, "metrics: cannot start the HTTP server on %s: %s",
                  hostport, dist_strerror(rc));
        goto fail;
    }
    dist__log(&m->lg, DIST_LOG_INFO, "metrics: serving http://%s%s%s:%d/ (/metrics, /api/status, /api/task, /healthz)",
              v6 ? "[" : "", host, v6 ? "]" : "", m->port);
    return m;
fail:
    if (m)
        s_free(m);
    if (err)
        *err = rc;
    errno = -rc;
    return NULL;
}

int dist__metrics_port(const dist__metrics_t *m)
{
    return m ? m->port : 0;
}

void dist__metrics_destroy(dist__metrics_t **mp)
{
    if (!mp || !*mp)
        return;
    dist__metrics_t *m = *mp;
    *mp = NULL;
    /* A lookup waiting for the loop (which may be the caller) stops
     * waiting at once. */
    pthread_mutex_lock(&m->lock);
    m->lk.closing = true;
    pthread_cond_broadcast(&m->lk.cond);
    pthread_mutex_unlock(&m->lock);
    /* Joins the server's thread and closes every connection; no handler
     * runs after this, so the fixed responses and the snapshot can go. */
    if (m->daemon)
        MHD_stop_daemon(m->daemon);
    s_free(m);
}

/*  status.c - see status.h. The answer comes from the master, so every
 *  field is read through the typed accessors of dist/wire.h and printed
 *  as "-" when it is missing or of the wrong type. */
#include "status.h"

#include <dist.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_COLS 8
#define S_CELL 64

typedef char s_row_t[S_COLS][S_CELL];

static void s_str(char *out, const msgpack_object *map, const char *key)
{
    const char *s;
    size_t n;
    if (dist_wire_get_str(dist_wire_map_get(map, key), &s, &n) || n == 0) {
        snprintf(out, S_CELL, "-");
        return;
    }
    snprintf(out, S_CELL, "%.*s", (int)(n < S_CELL - 1 ? n : S_CELL - 1), s);
    for (char *p = out; *p; p++) /* a peer's text must not drive the terminal */
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
}

static void s_u64(char *out, const msgpack_object *map, const char *key)
{
    uint64_t v;
    if (dist_wire_get_u64(dist_wire_map_get(map, key), &v))
        snprintf(out, S_CELL, "-");
    else
        snprintf(out, S_CELL, "%llu", (unsigned long long)v);
}

static void s_ago(char *out, const msgpack_object *map, const char *key)
{
    uint64_t ms;
    if (dist_wire_get_u64(dist_wire_map_get(map, key), &ms))
        snprintf(out, S_CELL, "-");
    else if (ms < 60000)
        snprintf(out, S_CELL, "%.1fs ago", (double)ms / 1000);
    else if (ms < 3600000)
        snprintf(out, S_CELL, "%llum ago", (unsigned long long)(ms / 60000));
    else
        snprintf(out, S_CELL, "%lluh ago", (unsigned long long)(ms / 3600000));
}

static void s_table(FILE *out, const char *const *head, size_t ncols, s_row_t *rows, size_t n)
{
    size_t w[S_COLS];
    for (size_t c = 0; c < ncols; c++) {
        w[c] = strlen(head[c]);
        for (size_t r = 0; r < n; r++)
            if (strlen(rows[r][c]) > w[c])
                w[c] = strlen(rows[r][c]);
    }
    for (size_t r = 0; r <= n; r++) {
        fputs("  ", out);
        for (size_t c = 0; c < ncols; c++) {
            const char *cell = r ? rows[r - 1][c] : head[c];
            if (c + 1 < ncols)
                fprintf(out, "%-*s  ", (int)w[c], cell);
            else
                fprintf(out, "%s\n", cell);
        }
    }
}

/* "name value, name value" for a map of numbers. */
static void s_pairs(FILE *out, const char *title, const msgpack_object *map, const char *unit)
{
    const msgpack_object_kv *kv;
    size_t n;
    fprintf(out, "%-9s", title);
    if (dist_wire_get_map(map, &kv, &n) || n == 0) {
        fputs("-\n", out);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const char *k;
        size_t kn;
        double d;
        uint64_t u;
        if (dist_wire_get_str(&kv[i].key, &k, &kn))
            continue;
        /* "submitted_per_s 1.50/s" says it twice: drop the suffix */
        if (*unit && kn > 6 && memcmp(k + kn - 6, "_per_s", 6) == 0)
            kn -= 6;
        fprintf(out, "%s%.*s ", i ? ", " : "", (int)kn, k);
        if (kv[i].val.type == MSGPACK_OBJECT_POSITIVE_INTEGER && !dist_wire_get_u64(&kv[i].val, &u))
            fprintf(out, "%llu%s", (unsigned long long)u, unit);
        else if (!dist_wire_get_f64(&kv[i].val, &d))
            fprintf(out, "%.2f%s", d, unit);
        else
            fputs("-", out);
    }
    fputc('\n', out);
}

static void s_uptime(char *out, uint64_t s)
{
    if (s < 3600)
        snprintf(out, S_CELL, "%llum%02llus", (unsigned long long)(s / 60),
                 (unsigned long long)(s % 60));
    else
        snprintf(out, S_CELL, "%lluh%02llum", (unsigned long long)(s / 3600),
                 (unsigned long long)(s % 3600 / 60));
}

/* A task queue's depth_by_priority (10 counts, priority 0 first) as
 * "9:3 0:120", highest first, non-zero levels only; "-" without any. */
static void s_by_priority(char *out, const msgpack_object *q)
{
    const msgpack_object *lv;
    size_t n, used = 0;
    snprintf(out, S_CELL, "-");
    if (dist_wire_get_array(dist_wire_map_get(q, "depth_by_priority"), &lv, &n))
        return;
    for (size_t i = n; i-- > 0;) {
        uint64_t d;
        if (dist_wire_get_u64(&lv[i], &d) || d == 0 || used >= S_CELL - 1)
            continue;
        int k = snprintf(out + used, S_CELL - used, "%s%zu:%llu", used ? " " : "", i,
                         (unsigned long long)d);
        used = k < 0 || used + (size_t)k >= S_CELL ? S_CELL - 1 : used + (size_t)k;
    }
}

void cli_status_print(const msgpack_object *st, FILE *out)
{
    const msgpack_object *master = dist_wire_map_get(st, "master");
    char name[S_CELL], version[S_CELL], store[S_CELL], up[S_CELL] = "-";
    s_str(name, master, "name");
    s_str(version, master, "version");
    s_str(store, master, "store");
    uint64_t v;
    if (!dist_wire_get_u64(dist_wire_map_get(master, "uptime_s"), &v))
        s_uptime(up, v);
    fprintf(out, "master   %s, version %s, up %s, store %s\n", name, version, up,
            strcmp(store, "-") ? store : "none (in memory)");
    char clients[S_CELL];
    s_u64(clients, st, "clients");
    fprintf(out, "clients  %s\n", clients);

    const msgpack_object *items;
    size_t n;
    if (dist_wire_get_array(dist_wire_map_get(st, "workers"), &items, &n))
        n = 0;
    fprintf(out, "\nworkers (%zu)\n", n);
    s_row_t *rows = n ? calloc(n, sizeof *rows) : NULL;
    for (size_t i = 0; rows && i < n; i++) {
        s_str(rows[i][0], &items[i], "name");
        s_str(rows[i][1], &items[i], "host");
        s_u64(rows[i][2], &items[i], "slots");
        /* BUSY is what runs; what waits in the worker's pool beyond its
         * slots is PREFETCHED. A master without the split sends busy. */
        bool split = dist_wire_map_get(&items[i], "running") != NULL;
        s_u64(rows[i][3], &items[i], split ? "running" : "busy");
        s_u64(rows[i][4], &items[i], "prefetched");
        s_u64(rows[i][5], &items[i], "done");
        s_u64(rows[i][6], &items[i], "failed");
        s_ago(rows[i][7], &items[i], "last_seen_ms");
    }
    static const char *const whead[] = { "NAME", "HOST", "SLOTS", "BUSY", "PREFETCHED", "DONE",
                                         "FAILED", "LAST SEEN" };
    if (rows)
        s_table(out, whead, 8, rows, n);
    free(rows);

    if (dist_wire_get_array(dist_wire_map_get(st, "queues"), &items, &n))
        n = 0;
    fprintf(out, "\nqueues (%zu)\n", n);
    rows = n ? calloc(n, sizeof *rows) : NULL;
    size_t unserved = 0;
    for (size_t i = 0; rows && i < n; i++) {
        s_str(rows[i][0], &items[i], "name");
        s_str(rows[i][1], &items[i], "kind");
        s_u64(rows[i][2], &items[i], "depth");
        s_u64(rows[i][3], &items[i], "in_flight");
        s_u64(rows[i][4], &items[i], "workers");
        s_u64(rows[i][5], &items[i], "delayed");
        s_by_priority(rows[i][6], &items[i]);
        /* Tasks that wait for a worker nobody runs: say so. */
        uint64_t depth, workers;
        if (!dist_wire_get_u64(dist_wire_map_get(&items[i], "depth"), &depth) && depth > 0 &&
            !dist_wire_get_u64(dist_wire_map_get(&items[i], "workers"), &workers) && workers == 0)
            unserved += (size_t)snprintf(rows[i][4], S_CELL, "0 (unserved)") > 0;
    }
    static const char *const qhead[] = { "NAME", "KIND", "DEPTH", "IN FLIGHT", "WORKERS",
                                         "DELAYED", "BY PRIORITY" };
    if (rows)
        s_table(out, qhead, 7, rows, n);
    if (unserved)
        fprintf(out, "  unserved: %zu task queue(s) wait with no connected worker offering their "
                "task\n", unserved);
    free(rows);

    fputc('\n', out);
    s_pairs(out, "counters", dist_wire_map_get(st, "counters"), "");
    s_pairs(out, "rates", dist_wire_map_get(st, "rates"), "/s");
}

/* ---- one task (status --task) ------------------------------------------------------- */

/* A master's text: control characters become '?'. */
static void s_safe(FILE *out, const char *s)
{
    for (; *s; s++)
        fputc((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s, out);
}

static void s_safe_line(FILE *out, const char *label, const char *s)
{
    fprintf(out, "%-12s", label);
    s_safe(out, s);
    fputc('\n', out);
}

/* Unix ms as ISO 8601 UTC with milliseconds, "-" for 0 (not yet). */
static void s_time(char out[32], int64_t ms)
{
    if (ms <= 0) {
        snprintf(out, 32, "-");
        return;
    }
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    char day[24];
    strftime(day, sizeof day, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%s.%03dZ", day, (int)(ms % 1000));
}

void cli_task_print(const dist_task_info_t *t, FILE *out)
{
    char buf[32];
    s_safe_line(out, "id", t->id);
    if (strcmp(t->state, "unknown") == 0) {
        fprintf(out, "%-12s%s\n", "state", t->state);
        return;
    }
    s_safe_line(out, "task", t->task[0] ? t->task : "-");
    if (t->worker[0]) {
        fprintf(out, "%-12s%s on ", "state", t->state);
        s_safe(out, t->worker);
        fputc('\n', out);
    } else {
        fprintf(out, "%-12s%s\n", "state", t->state);
    }
    fprintf(out, "%-12s%d\n", "priority", t->priority);
    s_time(buf, t->submitted_ms);
    fprintf(out, "%-12s%s\n", "submitted", buf);
    if (t->not_before_ms) {
        s_time(buf, t->not_before_ms);
        fprintf(out, "%-12s%s\n", "not before", buf);
    }
    s_time(buf, t->started_ms);
    fprintf(out, "%-12s%s\n", "started", buf);
    s_time(buf, t->finished_ms);
    fprintf(out, "%-12s%s\n", "finished", buf);
    if (t->error[0])
        s_safe_line(out, "error", t->error);
    fprintf(out, "%-12s%zu\n", "attempts", t->nattempts);
    for (size_t i = 0; i < t->nattempts; i++) {
        char label[32];
        snprintf(label, sizeof label, "  %u", t->attempts[i].attempt);
        char line[600];
        snprintf(line, sizeof line, "%s%s%s", t->attempts[i].worker[0] ? t->attempts[i].worker : "-",
                 t->attempts[i].reason[0] ? ": " : "", t->attempts[i].reason);
        s_safe_line(out, label, line);
    }
}

json_t *cli_task_json(const dist_task_info_t *t)
{
    json_t *j = json_object();
    json_t *att = json_array();
    for (size_t i = 0; j && att && i < t->nattempts; i++)
        json_array_append_new(att, json_pack("{s:I, s:s, s:s}", "attempt",
                                             (json_int_t)t->attempts[i].attempt, "worker",
                                             t->attempts[i].worker, "reason",
                                             t->attempts[i].reason));
    json_object_set_new(j, "id", json_string(t->id));
    json_object_set_new(j, "task", t->task[0] ? json_string(t->task) : json_null());
    json_object_set_new(j, "state", json_string(t->state));
    json_object_set_new(j, "priority", json_integer(t->priority));
    json_object_set_new(j, "worker", t->worker[0] ? json_string(t->worker) : json_null());
    json_object_set_new(j, "error", t->error[0] ? json_string(t->error) : json_null());
    json_object_set_new(j, "attempts", att);
    json_object_set_new(j, "submitted_ms", json_integer(t->submitted_ms));
    json_object_set_new(j, "started_ms", json_integer(t->started_ms));
    json_object_set_new(j, "finished_ms", json_integer(t->finished_ms));
    json_object_set_new(j, "not_before_ms", json_integer(t->not_before_ms));
    return j;
}

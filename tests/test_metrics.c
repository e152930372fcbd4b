/* test_metrics.c - the master's observability endpoint (metrics_internal.h):
 * the module runs on 127.0.0.1 with a free port, the test publishes
 * synthetic snapshots (written as JSON for readability and packed as
 * MessagePack) and reads the answers with a minimal HTTP/1.0 client. */
#include <arpa/inet.h>
#include <dist.h>
#include <stdatomic.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "metrics_internal.h"
#include "mpjson_internal.h"
#include "proto_internal.h"
#include "testutil.h"

/* ---- a minimal HTTP client (test only) ---------------------------------------------- */

typedef struct {
    int status;     /* 0: no answer */
    char *head;     /* status line and headers, NUL-terminated */
    char *body;     /* NUL-terminated */
    size_t body_len;
} resp_t;

static void resp_free(resp_t *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

static int s_connect(int family, int port)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int rc;
    if (family == AF_INET) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port) };
        a.sin6_addr = in6addr_loopback;
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    }
    if (rc != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Sends `request` (a whole HTTP request) and reads the answer to EOF. */
static resp_t s_raw(int family, int port, const char *request)
{
    resp_t r = { 0 };
    int fd = s_connect(family, port);
    if (fd < 0)
        return r;
    size_t n = strlen(request);
    if (send(fd, request, n, MSG_NOSIGNAL) != (ssize_t)n) {
        close(fd);
        return r;
    }
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        if (len + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t k = recv(fd, buf + len, cap - len - 1, 0);
        if (k <= 0)
            break;
        len += (size_t)k;
    }
    close(fd);
    buf[len] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.%*d %d", &r.status) != 1) {
        free(buf);
        r.status = 0;
        return r;
    }
    *sep = 0;
    r.head = strdup(buf);
    r.body_len = len - (size_t)(sep + 4 - buf);
    r.body = malloc(r.body_len + 1);
    assert_non_null(r.body);
    memcpy(r.body, sep + 4, r.body_len);
    r.body[r.body_len] = 0;
    free(buf);
    return r;
}

static resp_t s_get(int port, const char *path)
{
    char req[512];
    snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    return s_raw(AF_INET, port, req);
}

/* GETs path and asserts the answer's status. */
static void s_expect(int port, const char *path, int status)
{
    resp_t r = s_get(port, path);
    if (r.status != status)
        fail_msg("GET %s: %d, want %d", path, r.status, status);
    resp_free(&r);
}

/* A header's value (case-insensitive name), copied into out; false if absent. */
static bool s_header(const resp_t *r, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        const char *h = p + 2;
        if (strncasecmp(h, name, n) == 0 && h[n] == ':') {
            h += n + 1;
            while (*h == ' ')
                h++;
            const char *e = strstr(h, "\r\n");
            size_t len = e ? (size_t)(e - h) : strlen(h);
            if (len >= cap)
                len = cap - 1;
            memcpy(out, h, len);
            out[len] = 0;
            return true;
        }
    }
    return false;
}

/* True when `line` is one whole line of text. */
static bool s_has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return true;
    return false;
}

#define assert_line(text, line)                                                            \
    do {                                                                                   \
        if (!s_has_line((text), (line)))                                                   \
            fail_msg("missing line: %s\n--- in ---\n%s", (line), (text));                  \
    } while (0)

/* ---- snapshots: JSON text packed as MessagePack ---------------------------------------- */

static void s_pack_json(msgpack_packer *pk, const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, json_object_size(j));
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            dist__pk_str(pk, k);
            s_pack_json(pk, v);
        }
        break;
    }
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(j));
        for (size_t i = 0; i < json_array_size(j); i++)
            s_pack_json(pk, json_array_get(j, i));
        break;
    case JSON_STRING:
        dist__pk_strn(pk, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(j));
        break;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(j));
        break;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        break;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        break;
    }
}

static json_t *s_json(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j)
        fail_msg("bad test JSON at line %d: %s", e.line, e.text);
    return j;
}

/* Packs JSON text; the caller destroys the buffer. */
static dist_wire_buf_t *s_pack(const char *text)
{
    json_t *j = s_json(text);
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    s_pack_json(dist_wire_buf_packer(b), j);
    json_decref(j);
    assert_int_equal(dist_wire_buf_status(b), 0);
    return b;
}

static void s_publish_json(dist__metrics_t *m, const char *text)
{
    dist_wire_buf_t *b = s_pack(text);
    size_t len;
    const void *p = dist_wire_buf_data(b, &len);
    dist__metrics_publish(m, p, len);
    dist_wire_buf_destroy(&b);
}

/* Every field of docs/OBSERVABILITY.md, with a worker name that needs
 * escaping and a host that is not ASCII. */
static const char *const s_full =
    "{\"req\": 7,"
    " \"master\": {\"name\": \"m1:42\", \"version\": \"0.1.0\", \"uptime_s\": 12.5, \"store\": null},"
    " \"workers\": ["
    "   {\"name\": \"w1\", \"host\": \"hostA\", \"pid\": 100, \"slots\": 2, \"capacity\": 4,"
    "    \"busy\": 1, \"done\": 50, \"failed\": 2, \"last_seen_ms\": 250, \"tasks\": [\"sq\", \"sleep\"]},"
    "   {\"name\": \"w\\\"2\\\\x\\ny\", \"host\": \"h\\u00e9\", \"pid\": 101, \"slots\": 4, \"capacity\": 6,"
    "    \"busy\": 0, \"done\": 0, \"failed\": 0, \"last_seen_ms\": 1500, \"tasks\": []}],"
    " \"queues\": [{\"name\": \"sq\", \"kind\": \"task\", \"depth\": 7, \"in_flight\": 3,"
    "               \"depth_by_priority\": [4, 0, 0, 0, 0, 3, 0, 0, 0, 0], \"delayed\": 5},"
    "              {\"name\": \"jobs\", \"kind\": \"named\", \"depth\": 2, \"in_flight\": 0}],"
    " \"clients\": 3,"
    " \"counters\": {\"submitted\": 60, \"completed\": 52, \"failed\": 2, \"retried\": 1,"
    "   \"gave_up\": 1, \"dead_workers\": 4, \"malformed\": 5, \"refused_handshakes\": 6,"
    "   \"results_waiting\": 8, \"cancelled\": 9, \"expired_results\": 10},"
    " \"rates\": {\"submitted_per_s\": 10.5, \"completed_per_s\": 9.25},"
    " \"tasks\": {\"sq\": {\"submitted\": 40, \"completed\": 35, \"failed\": 1, \"retried\": 1},"
    "             \"sleep\": {\"submitted\": 20, \"completed\": 17, \"failed\": 1, \"retried\": 0}},"
    " \"latency\": {\"bounds_ms\": [1, 5, 10.5, 60000],"
    "   \"tasks\": {\"sq\": {\"counts\": [2, 3, 0, 1, 4], \"sum_ms\": 1234.5, \"count\": 10},"
    "               \"sleep\": {\"counts\": [0, 0, 0, 17, 0], \"sum_ms\": 85000, \"count\": 17}}},"
    " \"recent_failures\": [{\"task\": \"sq\", \"id\": \"00112233445566778899aabbccddeeff\","
    "   \"error\": \"sq: crashed (signal 9) on hostA pid 100\", \"at_ms\": 1700000000000}],"
    " \"history\": [{\"t\": 1700000000, \"completed_per_s\": 9.0, \"submitted_per_s\": 10.0,"
    "   \"p50_ms\": 2.5, \"p95_ms\": 9.0}]}";

/* Only the STATUS body of PROTOCOL.md 7b, as an older master sends it. */
static const char *const s_basic =
    "{\"master\": {\"name\": \"old\", \"version\": \"0.0.9\", \"uptime_s\": 3, \"store\": \"/s.db\"},"
    " \"workers\": [], \"queues\": [], \"clients\": 0,"
    " \"counters\": {\"submitted\": 5, \"completed\": 4, \"failed\": 1, \"retried\": 0,"
    "   \"gave_up\": 0, \"dead_workers\": 0, \"malformed\": 0, \"refused_handshakes\": 0,"
    "   \"results_waiting\": 0},"
    " \"rates\": {\"submitted_per_s\": 0.0, \"completed_per_s\": 0.0}}";

/* ---- fixture ----------------------------------------------------------------------------- */

static dist__metrics_t *s_start(void)
{
    int err = 0;
    dist__metrics_t *m = dist__metrics_new("127.0.0.1:0", NULL, &err);
    if (!m)
        fail_msg("dist__metrics_new: %s", dist_strerror(err));
    assert_true(dist__metrics_port(m) > 0);
    return m;
}

/* Checks the structure of a Prometheus text exposition: every sample's
 * family has HELP and TYPE lines before it, families are contiguous and
 * appear once, every line ends with a newline. */
static void s_check_exposition(const char *text)
{
    char seen[64][64];
    int nseen = 0;
    char cur[64] = "", cur_type[16] = "";
    assert_true(text[0] == 0 || text[strlen(text) - 1] == '\n');
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        assert_non_null(e);
        char line[1024];
        size_t n = (size_t)(e - p);
        assert_true(n < sizeof line);
        memcpy(line, p, n);
        line[n] = 0;
        p = e + 1;
        char name[64], type[16];
        if (sscanf(line, "# TYPE %63s %15s", name, type) == 2) {
            for (int i = 0; i < nseen; i++)
                if (strcmp(seen[i], name) == 0)
                    fail_msg("family %s appears twice", name);
            assert_true(nseen < 64);
            strcpy(seen[nseen++], name);
            strcpy(cur, name);
            strcpy(cur_type, type);
            continue;
        }
        if (strncmp(line, "# HELP ", 7) == 0)
            continue;
        assert_true(line[0] != '#');
        size_t nl = strcspn(line, "{ ");
        assert_true(nl < sizeof name);
        memcpy(name, line, nl);
        name[nl] = 0;
        size_t cl = strlen(cur);
        bool ok = strcmp(name, cur) == 0;
        if (!ok && strcmp(cur_type, "histogram") == 0 && strncmp(name, cur, cl) == 0)
            ok = !strcmp(name + cl, "_bucket") || !strcmp(name + cl, "_sum") ||
                 !strcmp(name + cl, "_count");
        if (!ok)
            fail_msg("sample of %s outside its family (current %s)", name, cur);
        /* a value after the last space */
        const char *v = strrchr(line, ' ');
        assert_non_null(v);
        assert_true(v[1] != 0);
    }
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_prometheus(void **state)
{
    (void)state;
    dist__metrics_t *m = s_start();
    s_publish_json(m, s_full);
    resp_t r = s_get(dist__metrics_port(m), "/metrics");
    assert_int_equal(r.status, 200);
    char ct[128];
    assert_true(s_header(&r, "Content-Type", ct, sizeof ct));
    assert_string_equal(ct, "text/plain; version=0.0.4; charset=utf-8");
    const char *t = r.body;
    s_check_exposition(t);

    assert_line(t, "# TYPE dist_tasks_submitted_total counter");
    assert_line(t, "dist_tasks_submitted_total{task=\"sleep\"} 20");
    assert_line(t, "dist_tasks_submitted_total{task=\"sq\"} 40");
    assert_line(t, "dist_tasks_completed_total{task=\"sq\"} 35");
    assert_line(t, "dist_tasks_failed_total{task=\"sleep\"} 1");
    assert_line(t, "dist_tasks_retried_total{task=\"sq\"} 1");
    assert_line(t, "dist_tasks_gave_up_total 1");
    assert_line(t, "# TYPE dist_queue_depth gauge");
    assert_line(t, "dist_queue_depth{queue=\"sq\",kind=\"task\"} 7");
    assert_line(t, "dist_queue_depth{queue=\"jobs\",kind=\"named\"} 2");
    assert_line(t, "dist_queue_in_flight{queue=\"sq\",kind=\"task\"} 3");
    assert_line(t, "dist_queue_delayed{queue=\"sq\",kind=\"task\"} 5");
    assert_line(t, "dist_queue_depth_by_priority{queue=\"sq\",priority=\"0\"} 4");
    assert_line(t, "dist_queue_depth_by_priority{queue=\"sq\",priority=\"5\"} 3");
    assert_line(t, "dist_tasks_cancelled_total 9");
    assert_line(t, "dist_expired_results_total 10");
    assert_line(t, "# TYPE dist_workers_alive gauge");
    assert_line(t, "dist_workers_alive 2");
    assert_line(t, "dist_worker_slots{worker=\"w1\",host=\"hostA\"} 2");
    assert_line(t, "dist_worker_busy{worker=\"w1\",host=\"hostA\"} 1");
    assert_line(t, "dist_worker_capacity{worker=\"w1\",host=\"hostA\"} 4");
    assert_line(t, "dist_worker_done_total{worker=\"w1\",host=\"hostA\"} 50");
    assert_line(t, "dist_worker_failed_total{worker=\"w1\",host=\"hostA\"} 2");
    assert_line(t, "dist_worker_last_seen_seconds{worker=\"w1\",host=\"hostA\"} 0.25");
    /* backslash, quote and newline escaped; UTF-8 passed through */
    assert_line(t, "dist_worker_slots{worker=\"w\\\"2\\\\x\\ny\",host=\"h\xc3\xa9\"} 4");
    assert_line(t, "# TYPE dist_dead_workers_total counter");
    assert_line(t, "dist_dead_workers_total 4");
    assert_line(t, "dist_malformed_messages_total 5");
    assert_line(t, "dist_refused_handshakes_total 6");
    assert_line(t, "# TYPE dist_results_waiting gauge");
    assert_line(t, "dist_results_waiting 8");
    assert_line(t, "dist_clients_connected 3");
    assert_line(t, "dist_master_info{name=\"m1:42\",version=\"0.1.0\"} 1");
    assert_line(t, "dist_master_uptime_seconds 12.5");

    /* histogram: cumulative buckets in seconds, +Inf equal to _count */
    assert_line(t, "# TYPE dist_task_latency_seconds histogram");
    assert_line(t, "dist_task_latency_seconds_bucket{task=\"sq\",le=\"0.001\"} 2");
    assert_line(t, "dist_task_latency_seconds_bucket{task=\"sq\",le=\"0.005\"} 5");
    assert_line(t, "dist_task_latency_seconds_bucket{task=\"sq\",le=\"0.0105\"} 5");
    assert_line(t, "dist_task_latency_seconds_bucket{task=\"sq\",le=\"60\"} 6");
    assert_line(t, "dist_task_latency_seconds_bucket{task=\"sq\",le=\"+Inf\"} 10");
    assert_line(t, "dist_task_latency_seconds_sum{task=\"sq\"} 1.2345");
    assert_line(t, "dist_task_latency_seconds_count{task=\"sq\"} 10");
    assert_line(t, "dist_task_latency_seconds_bucket{task=\"sleep\",le=\"0.0105\"} 0");
    assert_line(t, "dist_task_latency_seconds_bucket{task=\"sleep\",le=\"60\"} 17");
    assert_line(t, "dist_task_latency_seconds_bucket{task=\"sleep\",le=\"+Inf\"} 17");
    assert_line(t, "dist_task_latency_seconds_sum{task=\"sleep\"} 85");
    assert_line(t, "dist_task_latency_seconds_count{task=\"sleep\"} 17");
    resp_free(&r);
    dist__metrics_destroy(&m);
    assert_null(m);
}

static void test_api_status(void **state)
{
    (void)state;
    dist__metrics_t *m = s_start();
    /* The full snapshot, plus a bin field (JSON has no bytes: base64). */
    json_t *j = s_json(s_full);
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    msgpack_packer *pk = dist_wire_buf_packer(b);
    msgpack_pack_map(pk, json_object_size(j) + 1);
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        dist__pk_str(pk, k);
        s_pack_json(pk, v);
    }
    dist__pk_kv_bin(pk, "blob", "\x00\x01\x02\xff", 4);
    size_t len;
    const void *p = dist_wire_buf_data(b, &len);
    dist__metrics_publish(m, p, len);
    dist_wire_buf_destroy(&b);
    json_object_set_new(j, "blob", json_string("AAEC/w=="));

    resp_t r = s_get(dist__metrics_port(m), "/api/status");
    assert_int_equal(r.status, 200);
    char ct[128];
    assert_true(s_header(&r, "Content-Type", ct, sizeof ct));
    assert_string_equal(ct, "application/json");
    assert_true(s_header(&r, "Cache-Control", ct, sizeof ct));
    assert_string_equal(ct, "no-store");
    json_error_t e;
    json_t *got = json_loads(r.body, 0, &e);
    if (!got)
        fail_msg("not JSON: %s\n%s", e.text, r.body);
    if (!json_equal(got, j)) {
        char *a = json_dumps(got, JSON_INDENT(1)), *x = json_dumps(j, JSON_INDENT(1));
        fail_msg("got\n%s\nwant\n%s", a, x);
    }
    json_decref(got);
    json_decref(j);
    resp_free(&r);
    dist__metrics_destroy(&m);
}

/* The JSON forms of values JSON has no literal for. */
static void test_json_conversion(void **state)
{
    (void)state;
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    msgpack_packer *pk = dist_wire_buf_packer(b);
    msgpack_pack_map(pk, 9);
    dist__pk_str(pk, "nan");
    msgpack_pack_double(pk, 0.0 / 0.0);
    dist__pk_str(pk, "big");
    msgpack_pack_uint64(pk, UINT64_MAX);
    dist__pk_str(pk, "neg");
    msgpack_pack_int64(pk, -5);
    dist__pk_str(pk, "ext");
    msgpack_pack_ext(pk, 3, 7);
    msgpack_pack_ext_body(pk, "abc", 3);
    msgpack_pack_int(pk, 12); /* a key that is not a str */
    dist__pk_str(pk, "int key");
    dist__pk_str(pk, "bad");
    dist__pk_strn(pk, "a\xff" "b", 3);
    dist__pk_str(pk, "dup");
    msgpack_pack_int(pk, 1);
    dist__pk_str(pk, "dup");
    msgpack_pack_int(pk, 2);
    dist__pk_str(pk, "empty");
    dist__pk_strn(pk, "", 0);
    size_t len;
    const void *p = dist_wire_buf_data(b, &len);
    msgpack_zone z;
    msgpack_zone_init(&z, MSGPACK_ZONE_CHUNK_SIZE);
    msgpack_object o;
    assert_int_equal(dist_wire_decode(p, len, NULL, &z, &o), 0);
    json_t *got = dist__mp_to_json(&o);
    assert_non_null(got);
    json_t *want = s_json("{\"nan\": null, \"big\": 18446744073709551615.0, \"neg\": -5,"
                          " \"ext\": {\"ext_type\": 7, \"data\": \"YWJj\"}, \"12\": \"int key\","
                          " \"bad\": \"a\\ufffdb\", \"dup\": 1, \"empty\": \"\"}");
    if (!json_equal(got, want)) {
        char *a = json_dumps(got, 0);
        fail_msg("got %s", a);
    }
    json_decref(got);
    json_decref(want);
    msgpack_zone_destroy(&z);
    dist_wire_buf_destroy(&b);

    char out[64];
    assert_int_equal(dist__base64("", 0, out), 0);
    assert_int_equal(dist__base64("f", 1, out), 4);
    assert_string_equal(out, "Zg==");
    dist__base64("fo", 2, out);
    assert_string_equal(out, "Zm8=");
    dist__base64("foobar", 6, out);
    assert_string_equal(out, "Zm9vYmFy");
    /* overlong, surrogate, truncated, NUL */
    assert_false(dist__utf8_ok("\xc0\x80", 2));
    assert_false(dist__utf8_ok("\xed\xa0\x80", 3));
    assert_false(dist__utf8_ok("\xe2\x82", 2));
    assert_false(dist__utf8_ok("a\0b", 3));
    assert_true(dist__utf8_ok("h\xc3\xa9 \xf0\x9f\x98\x80", 8));
    char clean[32];
    assert_int_equal(dist__utf8_clean("a\0\xc0", 3, true, clean), 7);
    assert_string_equal(clean, "a\xef\xbf\xbd\xef\xbf\xbd");
}

static void test_dashboard(void **state)
{
    (void)state;
    dist__metrics_t *m = s_start();
    /* The page is served whether or not a status was published. */
    resp_t r = s_get(dist__metrics_port(m), "/");
    assert_int_equal(r.status, 200);
    char h[512];
    assert_true(s_header(&r, "Content-Type", h, sizeof h));
    assert_string_equal(h, "text/html; charset=utf-8");
    assert_true(s_header(&r, "Content-Security-Policy", h, sizeof h));
    assert_non_null(strstr(h, "default-src 'none'"));
    /* exactly the file it was generated from */
    FILE *f = fopen(DIST_DASHBOARD_SRC, "rb");
    assert_non_null(f);
    char *src = malloc(r.body_len + 2);
    size_t n = fread(src, 1, r.body_len + 1, f);
    fclose(f);
    assert_int_equal(n, r.body_len);
    assert_memory_equal(src, r.body, n);
    free(src);
    assert_int_equal(dist__dashboard_html_len, r.body_len);
    /* the hooks the end-to-end test relies on (docs/OBSERVABILITY.md) */
    static const char *const ids[] = {
        "id=\"counter-completed\"", "id=\"counter-submitted\"", "id=\"counter-failed\"",
        "id=\"counter-retried\"",   "id=\"counter-gave_up\"",   "id=\"counter-dead_workers\"",
        "id=\"counter-malformed\"", "id=\"counter-refused_handshakes\"",
        "id=\"counter-results_waiting\"", "id=\"counter-clients\"", "id=\"counter-workers\"",
        "id=\"rate-completed_per_s\"", "id=\"rate-submitted_per_s\"", "id=\"master-name\"",
        "id=\"workers-body\"", "id=\"queues-body\"", "id=\"tasks-body\"", "id=\"failures-body\"",
        "id=\"chart-throughput\"", "id=\"chart-latency\"", "\"data-worker\"", "\"data-queue\"",
        "\"data-task\"", "\"data-field\"", "\"data-value\"", "\"api/status\"",
    };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (!strstr(r.body, ids[i]))
            fail_msg("the page lacks %s", ids[i]);
    /* self-contained: nothing fetched from elsewhere */
    assert_null(strstr(r.body, "http://"));
    assert_null(strstr(r.body, "https://"));
    assert_null(strstr(r.body, "src=\""));
    assert_null(strstr(r.body, "innerHTML"));
    resp_free(&r);
    dist__metrics_destroy(&m);
}

static void test_healthz_404_405_head(void **state)
{
    (void)state;
    dist__metrics_t *m = s_start();
    int port = dist__metrics_port(m);
    resp_t r = s_get(port, "/healthz");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok\n");
    resp_free(&r);

    static const char *const missing[] = { "/nope", "/metrics/", "/api", "/api/status/x",
                                           "/index.html", "//metrics" };
    for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++)
        s_expect(port, missing[i], 404);
    s_expect(port, "/healthz?probe=1", 200); /* a query does not change the path */

    static const char *const methods[] = { "POST", "PUT", "DELETE", "PATCH" };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        char req[256];
        snprintf(req, sizeof req,
                 "%s /metrics HTTP/1.0\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", methods[i]);
        r = s_raw(AF_INET, port, req);
        assert_int_equal(r.status, 405);
        char allow[64];
        assert_true(s_header(&r, "Allow", allow, sizeof allow));
        assert_string_equal(allow, "GET, HEAD");
        resp_free(&r);
    }

    s_publish_json(m, s_basic);
    r = s_raw(AF_INET, port, "HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    resp_free(&r);

    /* garbage is answered by libmicrohttpd (400) or the connection closed */
    r = s_raw(AF_INET, port, "\x01\x02 nonsense\r\n\r\n");
    assert_true(r.status == 0 || r.status == 400);
    resp_free(&r);
    s_expect(port, "/healthz", 200);
    dist__metrics_destroy(&m);
}

static void test_before_publish_and_clear(void **state)
{
    (void)state;
    dist__metrics_t *m = s_start();
    int port = dist__metrics_port(m);
    s_expect(port, "/metrics", 503);
    s_expect(port, "/api/status", 503);
    s_publish_json(m, s_basic);
    s_expect(port, "/api/status", 200);
    dist__metrics_publish(m, NULL, 0);
    s_expect(port, "/metrics", 503);
    dist__metrics_destroy(&m);
}

static void test_publish_replaces(void **state)
{
    (void)state;
    dist__metrics_t *m = s_start();
    int port = dist__metrics_port(m);
    s_publish_json(m, s_full);
    resp_t r = s_get(port, "/metrics");
    assert_line(r.body, "dist_clients_connected 3");
    resp_free(&r);
    r = s_get(port, "/api/status"); /* renders and caches the JSON of the first */
    assert_non_null(strstr(r.body, "\"clients\":3"));
    resp_free(&r);
    s_publish_json(m, "{\"clients\": 11, \"workers\": []}");
    r = s_get(port, "/metrics");
    assert_line(r.body, "dist_clients_connected 11");
    assert_line(r.body, "dist_workers_alive 0");
    assert_null(strstr(r.body, "dist_worker_slots"));
    assert_null(strstr(r.body, "dist_task_latency_seconds"));
    resp_free(&r);
    r = s_get(port, "/api/status");
    json_t *got = json_loads(r.body, 0, NULL), *want = s_json("{\"clients\": 11, \"workers\": []}");
    assert_true(json_equal(got, want));
    json_decref(got);
    json_decref(want);
    resp_free(&r);

    /* Not a MessagePack map: ignored, the last good snapshot stays. */
    dist__metrics_publish(m, "\xc1", 1);
    dist__metrics_publish(m, "\x92\x01\x02", 3);     /* an array */
    dist__metrics_publish(m, "\x82\xa1" "a\x01", 4); /* truncated map */
    r = s_get(port, "/metrics");
    assert_int_equal(r.status, 200);
    assert_line(r.body, "dist_clients_connected 11");
    resp_free(&r);
    dist__metrics_destroy(&m);
}

static void test_older_master(void **state)
{
    (void)state;
    dist__metrics_t *m = s_start();
    int port = dist__metrics_port(m);
    s_publish_json(m, s_basic);
    resp_t r = s_get(port, "/metrics");
    assert_int_equal(r.status, 200);
    s_check_exposition(r.body);
    /* no `tasks`: the totals, without the task label */
    assert_line(r.body, "dist_tasks_submitted_total 5");
    assert_line(r.body, "dist_tasks_completed_total 4");
    assert_line(r.body, "dist_tasks_failed_total 1");
    assert_line(r.body, "dist_workers_alive 0");
    assert_line(r.body, "dist_clients_connected 0");
    assert_null(strstr(r.body, "dist_task_latency_seconds"));
    assert_null(strstr(r.body, "dist_queue_depth"));
    resp_free(&r);

    /* Fields of the wrong type are skipped; nothing crashes. */
    s_publish_json(m, "{\"workers\": \"x\", \"queues\": [1, {\"name\": 5}, {\"name\": \"q\"}],"
                      " \"counters\": {\"submitted\": \"many\", \"dead_workers\": -1},"
                      " \"tasks\": [], \"master\": 3, \"clients\": null,"
                      " \"latency\": {\"bounds_ms\": [5, 1],"
                      "   \"tasks\": {\"t\": {\"counts\": [1, 2, 3]}}}}");
    r = s_get(port, "/metrics");
    assert_int_equal(r.status, 200);
    s_check_exposition(r.body);
    assert_null(strstr(r.body, "dist_tasks_submitted_total"));
    assert_null(strstr(r.body, "dist_task_latency_seconds"));
    assert_null(strstr(r.body, "dist_workers_alive"));
    assert_null(strstr(r.body, "dist_master_info"));
    assert_line(r.body, "dist_dead_workers_total -1");
    resp_free(&r);
    s_expect(port, "/api/status", 200);

    /* A histogram with short count arrays and no sum: zeros, +Inf = count. */
    s_publish_json(m, "{\"latency\": {\"bounds_ms\": [2],"
                      "   \"tasks\": {\"t\": {\"counts\": [1], \"count\": 3}, \"u\": {}}}}");
    r = s_get(port, "/metrics");
    s_check_exposition(r.body);
    assert_line(r.body, "dist_task_latency_seconds_bucket{task=\"t\",le=\"0.002\"} 1");
    assert_line(r.body, "dist_task_latency_seconds_bucket{task=\"t\",le=\"+Inf\"} 3");
    assert_line(r.body, "dist_task_latency_seconds_count{task=\"t\"} 3");
    assert_line(r.body, "dist_task_latency_seconds_sum{task=\"t\"} 0");
    assert_line(r.body, "dist_task_latency_seconds_bucket{task=\"u\",le=\"+Inf\"} 0");
    resp_free(&r);

    /* An empty map is a valid (empty) status. */
    s_publish_json(m, "{}");
    r = s_get(port, "/metrics");
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    resp_free(&r);
    dist__metrics_destroy(&m);
}

static void test_render_hook(void **state)
{
    (void)state;
    size_t len;
    int err = 0;
    assert_null(dist__metrics_render_prometheus("\x91\x01", 2, &len, &err));
    assert_int_equal(err, DIST_EPROTO);
    assert_null(dist__metrics_render_prometheus(NULL, 0, &len, &err));
    assert_int_equal(err, DIST_EPROTO);

    /* Invalid UTF-8 and NUL in a label become U+FFFD; duplicate workers
     * (same name and host) give one series. */
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    msgpack_packer *pk = dist_wire_buf_packer(b);
    msgpack_pack_map(pk, 1);
    dist__pk_str(pk, "workers");
    msgpack_pack_array(pk, 3);
    for (int i = 0; i < 3; i++) {
        msgpack_pack_map(pk, 3);
        dist__pk_str(pk, "name");
        if (i < 2)
            dist__pk_strn(pk, "a\xff\0", 3);
        else
            dist__pk_str(pk, "b");
        dist__pk_kv_str(pk, "host", "h");
        dist__pk_kv_u64(pk, "slots", (uint64_t)i + 1);
    }
    const void *p = dist_wire_buf_data(b, &len);
    char *t = dist__metrics_render_prometheus(p, len, &len, &err);
    assert_non_null(t);
    assert_int_equal(strlen(t), len);
    assert_line(t, "dist_workers_alive 3");
    assert_line(t, "dist_worker_slots{worker=\"a\xef\xbf\xbd\xef\xbf\xbd\",host=\"h\"} 1");
    assert_line(t, "dist_worker_slots{worker=\"b\",host=\"h\"} 3");
    assert_null(strstr(t, "} 2\n"));
    free(t);
    dist_wire_buf_destroy(&b);
}

static void test_addresses(void **state)
{
    (void)state;
    static const char *const bad[] = { "",          "nope",        "127.0.0.1",   "127.0.0.1:",
                                       ":9464",     "127.0.0.1:x", "127.0.0.1:65536",
                                       "::1:9464",  "[::1]",       "[::1]9464",   "[]:1",
                                       "127.0.0.1:123456", "127.0.0.1:-1" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int err = 0;
        errno = 0;
        assert_null(dist__metrics_new(bad[i], NULL, &err));
        if (err != DIST_EINVAL)
            fail_msg("%s: %s", bad[i], dist_strerror(err));
        assert_int_equal(errno, EINVAL);
    }
    int err = 0;
    assert_null(dist__metrics_new(NULL, NULL, &err));
    assert_int_equal(err, DIST_EINVAL);

    /* a port in use */
    dist__metrics_t *a = s_start();
    char hp[64];
    snprintf(hp, sizeof hp, "127.0.0.1:%d", dist__metrics_port(a));
    assert_null(dist__metrics_new(hp, NULL, &err));
    assert_int_equal(err, -EADDRINUSE);
    dist__metrics_destroy(&a);
    dist__metrics_destroy(&a); /* NULL is fine */
    dist__metrics_destroy(NULL);

    /* a name from /etc/hosts (no DNS query) */
    a = dist__metrics_new("localhost:0", NULL, &err);
    assert_non_null(a);
    dist__metrics_destroy(&a);

    /* IPv6 loopback, when the machine has it */
    a = dist__metrics_new("[::1]:0", NULL, &err);
    if (!a) {
        assert_true(err == -EADDRNOTAVAIL || err == -EAFNOSUPPORT);
        return;
    }
    resp_t r = s_raw(AF_INET6, dist__metrics_port(a), "GET /healthz HTTP/1.0\r\n\r\n");
    assert_int_equal(r.status, 200);
    resp_free(&r);
    /* bound to ::1 only: not reachable over IPv4 */
    assert_int_equal(s_connect(AF_INET, dist__metrics_port(a)), -1);
    dist__metrics_destroy(&a);
}

/* Logging goes through the logger given, one line per event. */
static int s_log_lines;
static char s_log_first[256];

static void s_log(dist_log_level_t level, const char *component, const char *msg, void *ud)
{
    (void)level, (void)ud;
    assert_string_equal(component, "test");
    if (s_log_lines++ == 0)
        snprintf(s_log_first, sizeof s_log_first, "%s", msg);
}

static void test_logging(void **state)
{
    (void)state;
    dist__logger_t lg = { s_log, NULL, DIST_LOG_INFO, "test" };
    int err;
    dist__metrics_t *m = dist__metrics_new("127.0.0.1:0", &lg, &err);
    assert_non_null(m);
    assert_int_equal(s_log_lines, 1);
    assert_non_null(strstr(s_log_first, "metrics: serving http://127.0.0.1:"));
    dist__metrics_publish(m, "\xc1", 1);
    assert_int_equal(s_log_lines, 2);
    dist__metrics_publish(m, "\xc1", 1); /* the same mistake again: said once */
    assert_int_equal(s_log_lines, 2);
    dist__metrics_publish(m, "\x80", 1); /* {} */
    dist__metrics_publish(m, "\xc1", 1);
    assert_int_equal(s_log_lines, 3);
    dist__metrics_destroy(&m);
    assert_null(dist__metrics_new("127.0.0.1", &lg, &err));
    assert_int_equal(s_log_lines, 4);
}

/* Reads one HTTP/1.1 response with a Content-Length from fd; returns its
 * status and copies the body into out (NUL-terminated). */
static int s_read_one(int fd, char *out, size_t cap)
{
    char buf[8192] = "";
    size_t len = 0;
    char *sep = NULL;
    while (!(sep = strstr(buf, "\r\n\r\n"))) {
        ssize_t k = recv(fd, buf + len, 1, 0); /* byte by byte: never past this response */
        if (k <= 0 || ++len == sizeof buf)
            return 0;
        buf[len] = 0;
    }
    int status = 0;
    sscanf(buf, "HTTP/1.1 %d", &status);
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    size_t n = cl ? strtoul(cl + 17, NULL, 10) : 0;
    assert_true(n < cap);
    size_t got = 0;
    while (got < n) {
        ssize_t k = recv(fd, out + got, n - got, 0);
        if (k <= 0)
            return 0;
        got += (size_t)k;
    }
    out[n] = 0;
    return status;
}

/* One connection serves request after request (Prometheus and the page
 * poll every few seconds). */
static void test_keep_alive(void **state)
{
    (void)state;
    dist__metrics_t *m = s_start();
    s_publish_json(m, s_basic);
    int fd = s_connect(AF_INET, dist__metrics_port(m));
    assert_true(fd >= 0);
    static const char *const paths[] = { "/healthz", "/metrics", "/api/status", "/nope", "/healthz" };
    static const int want[] = { 200, 200, 200, 404, 200 };
    char *body = malloc(1 << 16);
    for (int i = 0; i < 5; i++) {
        char req[128];
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", paths[i]);
        assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
        assert_int_equal(s_read_one(fd, body, 1 << 16), want[i]);
    }
    assert_string_equal(body, "ok\n");
    free(body);
    close(fd);
    dist__metrics_destroy(&m);
}

/* ---- many clients at once, while the snapshot changes ------------------------------------- */

struct load {
    int port;
    int ok;
};

static void *s_client_thread(void *arg)
{
    struct load *l = arg;
    static const char *const paths[] = { "/metrics", "/api/status", "/", "/healthz" };
    for (int i = 0; i < 40; i++) {
        resp_t r = s_get(l->port, paths[i % 4]);
        if (r.status == 200 && r.body_len > 0)
            l->ok++;
        resp_free(&r);
    }
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    dist__metrics_t *m = s_start();
    int port = dist__metrics_port(m);
    s_publish_json(m, s_full);

    /* More idle connections than the limit: the extra ones are refused or
     * wait; none of this may break the server. */
    enum { IDLE = 100 };
    int idle[IDLE];
    for (int i = 0; i < IDLE; i++) {
        idle[i] = s_connect(AF_INET, port);
        if (idle[i] >= 0)
            send(idle[i], "GET /metrics HTTP/1.1\r\n", 23, MSG_NOSIGNAL); /* never finished */
    }
    for (int i = 0; i < IDLE; i++)
        if (idle[i] >= 0)
            close(idle[i]);

    enum { THREADS = 8 };
    pthread_t th[THREADS];
    struct load l[THREADS];
    for (int i = 0; i < THREADS; i++) {
        l[i] = (struct load){ port, 0 };
        assert_int_equal(pthread_create(&th[i], NULL, s_client_thread, &l[i]), 0);
    }
    /* the master publishing twice as fast as it will */
    dist_wire_buf_t *a = s_pack(s_full), *b = s_pack(s_basic);
    for (int i = 0; i < 200; i++) {
        size_t len;
        const void *p = dist_wire_buf_data(i % 2 ? a : b, &len);
        dist__metrics_publish(m, p, len);
        dt_sleep_ms(2);
    }
    int total = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        total += l[i].ok;
    }
    assert_int_equal(total, THREADS * 40);
    dist_wire_buf_destroy(&a);
    dist_wire_buf_destroy(&b);
    s_expect(port, "/healthz", 200);

    /* Destroy while a client is connected and mid-request. */
    int fd = s_connect(AF_INET, port);
    assert_true(fd >= 0);
    send(fd, "GET /", 5, MSG_NOSIGNAL);
    dist__metrics_destroy(&m);
    char c;
    struct pollfd pfd = { fd, POLLIN, 0 };
    assert_int_equal(poll(&pfd, 1, 5000), 1); /* closed by the server, not left hanging */
    assert_true(recv(fd, &c, 1, 0) <= 0);
    close(fd);
}

/* ---- GET /api/task: the lookup hand-off ------------------------------------------------------ */

/* A stand-in for the master's loop: waits on the wake pipe, takes the
 * posted lookup and answers it (the task "known" is queued at priority
 * 3; every other id is unknown), or never answers when `mute`. */
typedef struct {
    dist__metrics_t *m;
    int rd;
    atomic_bool stop, mute; /* set by the test, read by the loop thread */
    atomic_int answered;
} s_loop_t;

static void *s_loop_thread(void *arg)
{
    s_loop_t *l = arg;
    dist__id_t known;
    assert_int_equal(dist__id_from_key("known", 5, &known), 0);
    while (!l->stop) {
        struct pollfd pfd = { l->rd, POLLIN, 0 };
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        char junk[64];
        while (read(l->rd, junk, sizeof junk) > 0)
            ;
        dist__id_t id;
        uint64_t ticket;
        if (l->mute || !dist__metrics_lookup_take(l->m, id.b, &ticket))
            continue;
        bool is_known = dist__id_eq(&id, &known);
        dist__attempt_info_t att = { 1, { "w1", 2 }, { "", 0 } };
        dist__task_info_t ti = { .id = id, .state = { is_known ? "leased" : "unknown", 0 } };
        ti.state.n = strlen(ti.state.s);
        if (is_known) {
            ti.key = (dist__str_t){ "known", 5 };
            ti.task = (dist__str_t){ "t.work", 6 };
            ti.worker = (dist__str_t){ "w1", 2 };
            ti.priority = 3;
            ti.submitted_ms = 1000, ti.started_ms = 2000;
            ti.attempts = &att, ti.nattempts = 1;
        }
        dist_wire_buf_t *b = dist_wire_buf_new(0);
        dist__pack_task_info(dist_wire_buf_packer(b), &ti);
        size_t len;
        const void *p = dist_wire_buf_data(b, &len);
        dist__metrics_lookup_answer(l->m, ticket, p, len, is_known);
        dist_wire_buf_destroy(&b);
        l->answered++;
    }
    return NULL;
}

static double s_now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void test_task_lookup(void **state)
{
    (void)state;
    dist__metrics_t *m = s_start();
    int port = dist__metrics_port(m);
    /* Without a loop to ask: 503, and bad ids are refused before that. */
    s_expect(port, "/api/task?id=known", 503);
    s_expect(port, "/api/task", 400);

    int fds[2];
    assert_int_equal(pipe(fds), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(fcntl(fds[i], F_SETFL, O_NONBLOCK), 0);
    dist__metrics_set_wake(m, fds[1]);
    s_loop_t l = { .m = m, .rd = fds[0] };
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, s_loop_thread, &l), 0);

    resp_t r = s_get(port, "/api/task?id=known");
    assert_int_equal(r.status, 200);
    json_t *j = s_json(r.body);
    dist__id_t known;
    char hex[33];
    dist__id_from_key("known", 5, &known);
    dist__id_hex(&known, hex);
    assert_string_equal(json_string_value(json_object_get(j, "id")), hex);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "leased");
    assert_string_equal(json_string_value(json_object_get(j, "task")), "t.work");
    assert_string_equal(json_string_value(json_object_get(j, "worker")), "w1");
    assert_int_equal(json_integer_value(json_object_get(j, "priority")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "started_ms")), 2000);
    assert_int_equal(json_array_size(json_object_get(j, "attempts")), 1);
    json_decref(j);
    char ctype[64];
    assert_true(s_header(&r, "Content-Type", ctype, sizeof ctype));
    assert_string_equal(ctype, "application/json");
    resp_free(&r);

    /* The same task by its 32 hex digits. */
    char path[200];
    snprintf(path, sizeof path, "/api/task?id=%s", hex);
    s_expect(port, path, 200);

    /* Unknown: 404 with the LOOKUP form's state. */
    r = s_get(port, "/api/task?id=nobody");
    assert_int_equal(r.status, 404);
    j = s_json(r.body);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "unknown");
    json_decref(j);
    resp_free(&r);

    /* Bad ids: none, empty, a space, too long. The loop is not asked. */
    int before = l.answered;
    char longid[130];
    memset(longid, 'a', 129);
    longid[129] = 0;
    snprintf(path, sizeof path, "/api/task?id=%s", longid);
    const char *const bad[] = { "/api/task", "/api/task?id=", "/api/task?id=a%20b",
                                "/api/task?id=%01x", path };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = s_get(port, bad[i]);
        if (r.status != 400)
            fail_msg("GET %s: %d, want 400", bad[i], r.status);
        j = s_json(r.body);
        assert_non_null(json_string_value(json_object_get(j, "error")));
        json_decref(j);
        resp_free(&r);
    }
    assert_int_equal(l.answered, before);

    /* A loop that does not answer: 503 after about a second, and the
     * server still serves the rest. */
    l.mute = true;
    double t0 = s_now_s();
    s_expect(port, "/api/task?id=known", 503);
    double waited = s_now_s() - t0;
    assert_true(waited >= 0.9 && waited < 5.0);
    s_expect(port, "/healthz", 200);
    /* The loop comes back: a stale lookup is not answered for the next. */
    l.mute = false;
    s_expect(port, "/api/task?id=nobody", 404);
    s_expect(port, "/api/task?id=known", 200);

    l.stop = true;
    pthread_join(th, NULL);
    dist__metrics_destroy(&m);
    close(fds[0]);
    close(fds[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prometheus),
        cmocka_unit_test(test_api_status),
        cmocka_unit_test(test_json_conversion),
        cmocka_unit_test(test_dashboard),
        cmocka_unit_test(test_healthz_404_405_head),
        cmocka_unit_test(test_before_publish_and_clear),
        cmocka_unit_test(test_publish_replaces),
        cmocka_unit_test(test_older_master),
        cmocka_unit_test(test_render_hook),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_logging),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_task_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*  manager.c - Python's BaseManager for C: named queues of values over a
 *  client connection, and in serve mode the master too (dist/manager.h).
 *
 *  Built only on the public API (dist/client.h, dist/master.h,
 *  dist/value.h): the manager is what an application would write, done
 *  once. Puts and gets wait in slices on the master so that destroy can
 *  end them; a count of the calls under way lets destroy wait until the
 *  last one has left before it frees what they use.
 */
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist/client.h"
#include "dist/error.h"
#include "dist/manager.h"
#include "dist/master.h"
#include "value_internal.h"

/* Longest wait of one QPUT or QGET on the master: how long destroy may
 * wait for a blocked put or get to notice it. */
#define SLICE_MS 500
#define STATUS_TIMEOUT_MS 5000

struct dist_mqueue {
    dist_manager_t *mgr;
    dist_mqueue_t *next;
    dist_result_t *last;        /* the item of the last get_fmt */
    char name[];
};

struct dist_manager {
    dist_master_t *master;      /* serve mode only */
    dist_client_t *client;
    char *endpoint;
    pthread_mutex_t mu;
    pthread_cond_t idle;        /* signalled when active drops to 0 while closing */
    int active;                 /* puts, gets and qsizes under way */
    bool closing;
    dist_mqueue_t *queues;
    dist_log_fn log;
    void *log_userdata;
    dist_log_level_t log_level;
};

/* The master logs at INFO unless told otherwise; the manager's callers get
 * only what their level asks for, from the master as from the client. */
static void s_log(dist_log_level_t level, const char *component, const char *msg, void *ud)
{
    dist_manager_t *self = ud;
    if (self->log && level <= self->log_level)
        self->log(level, component, msg, self->log_userdata);
}

static void s_say(dist_manager_t *self, const char *msg, const char *name)
{
    if (!self->log)
        return;
    char line[256];
    snprintf(line, sizeof line, "%s: \"%.128s\"", msg, name);
    self->log(DIST_LOG_ERROR, "manager", line, self->log_userdata);
}

/* A master bound to every address is reached on loopback from here. */
static char *s_connect_endpoint(const char *bound)
{
    const char *any = "tcp://0.0.0.0:";
    size_t n = strlen(any);
    if (strncmp(bound, any, n) != 0)
        return strdup(bound);
    char *ep = malloc(strlen(bound) + 8);
    if (ep)
        sprintf(ep, "tcp://127.0.0.1:%s", bound + n);
    return ep;
}

dist_manager_t *dist_manager_new(const dist_manager_opts_t *opts)
{
    static const dist_manager_opts_t none;
    const dist_manager_opts_t *o = opts ? opts : &none;
    if ((o->bind && o->master) || (!o->bind && (o->allow_clients || o->allow_workers))) {
        errno = EINVAL;
        return NULL;
    }
    dist_manager_t *self = calloc(1, sizeof *self);
    if (!self) {
        errno = ENOMEM;
        return NULL;
    }
    self->log = o->log;
    self->log_userdata = o->log_userdata;
    self->log_level = o->log_level;
    pthread_mutex_init(&self->mu, NULL);
    pthread_cond_init(&self->idle, NULL);
    int err = 0;
    const char *server_key = o->server_key;
    if (o->bind && !o->key && (getenv("DIST_KEY") || getenv("DIST_SERVER_KEY"))) {
        /* The connection would take them and speak CURVE to a master
         * without keys, which looks like no master at all. */
        if (self->log)
            self->log(DIST_LOG_ERROR, "manager",
                      "serving without a key while $DIST_KEY or $DIST_SERVER_KEY is set: "
                      "give the master's key, or unset them",
                      self->log_userdata);
        err = EINVAL;
        goto fail;
    }
    if (o->bind) {
        dist_master_opts_t mo = {
            .bind = o->bind,
            .key = o->key,
            .allow_clients = o->allow_clients,
            .allow_workers = o->allow_workers,
            .insecure = o->insecure,
            .log = s_log,
            .log_userdata = self,
            .log_level = o->log_level,
        };
        self->master = dist_master_new(&mo);
        if (!self->master) {
            err = errno;
            goto fail;
        }
        if ((err = -dist_master_start(self->master)) != 0)
            goto fail;
        self->endpoint = s_connect_endpoint(dist_master_endpoint(self->master));
        if (!server_key)
            server_key = o->key; /* our own .key holds the master's public key */
    } else {
        const char *ep = o->master ? o->master : getenv("DIST_MASTER");
        self->endpoint = strdup(ep && *ep ? ep : "tcp://127.0.0.1:5555");
    }
    if (!self->endpoint) {
        err = ENOMEM;
        goto fail;
    }
    dist_client_opts_t co = {
        .master = self->endpoint,
        .name = o->name,
        .connect_timeout_ms = o->connect_timeout_ms,
        .key = o->key,
        .server_key = server_key,
        .insecure = o->insecure,
        .log = s_log,
        .log_userdata = self,
        .log_level = o->log_level,
    };
    self->client = dist_client_new(&co);
    if (!self->client) {
        err = errno;
        goto fail;
    }
    return self;
fail:
    dist_manager_destroy(&self);
    errno = err ? err : EINVAL;
    return NULL;
}

void dist_manager_destroy(dist_manager_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_manager_t *self = *self_p;
    pthread_mutex_lock(&self->mu);
    self->closing = true;
    while (self->active > 0)
        pthread_cond_wait(&self->idle, &self->mu);
    pthread_mutex_unlock(&self->mu);
    /* The client first: it says BYE to a master that still listens. */
    dist_client_destroy(&self->client);
    dist_master_destroy(&self->master);
    while (self->queues) {
        dist_mqueue_t *q = self->queues;
        self->queues = q->next;
        dist_result_destroy(&q->last);
        free(q);
    }
    free(self->endpoint);
    pthread_cond_destroy(&self->idle);
    pthread_mutex_destroy(&self->mu);
    free(self);
    *self_p = NULL;
}

const char *dist_manager_endpoint(const dist_manager_t *self)
{
    return self->endpoint;
}

dist_client_t *dist_manager_client(dist_manager_t *self)
{
    return self->client;
}

static bool s_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return false;
    }
    return true;
}

dist_mqueue_t *dist_manager_queue(dist_manager_t *self, const char *name)
{
    if (!s_name_ok(name)) {
        s_say(self, "bad queue name (1-128 letters, digits and ._:-)", name ? name : "(null)");
        errno = EINVAL;
        return NULL;
    }
    pthread_mutex_lock(&self->mu);
    dist_mqueue_t *q = self->queues;
    while (q && strcmp(q->name, name) != 0)
        q = q->next;
    if (!q) {
        size_t n = strlen(name) + 1;
        q = calloc(1, sizeof *q + n);
        if (q) {
            memcpy(q->name, name, n);
            q->mgr = self;
            q->next = self->queues;
            self->queues = q;
        }
    }
    pthread_mutex_unlock(&self->mu);
    if (!q)
        errno = ENOMEM;
    return q;
}

const char *dist_mqueue_name(const dist_mqueue_t *self)
{
    return self->name;
}

/* ---- calls under way ---------------------------------------------------------------------- */

static int s_enter(dist_manager_t *self)
{
    pthread_mutex_lock(&self->mu);
    int rc = self->closing ? DIST_ECLOSED : 0;
    if (!rc)
        self->active++;
    pthread_mutex_unlock(&self->mu);
    return rc;
}

static void s_leave(dist_manager_t *self)
{
    pthread_mutex_lock(&self->mu);
    if (--self->active == 0 && self->closing)
        pthread_cond_broadcast(&self->idle);
    pthread_mutex_unlock(&self->mu);
}

static bool s_closing(dist_manager_t *self)
{
    pthread_mutex_lock(&self->mu);
    bool c = self->closing;
    pthread_mutex_unlock(&self->mu);
    return c;
}

static int64_t s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The wait of the next slice: at most SLICE_MS, at most what is left of
 * timeout_ms (deadline < 0: no bound); -1 when the time is up. */
static int s_slice(int timeout_ms, int64_t deadline, bool first)
{
    if (timeout_ms == 0)
        return first ? 0 : -1;
    if (timeout_ms < 0)
        return SLICE_MS;
    int64_t left = deadline - s_now_ms();
    if (left <= 0)
        return first ? 0 : -1;
    return left < SLICE_MS ? (int)left : SLICE_MS;
}

/* One put or get, repeated slice by slice while its answer is "not yet"
 * (DIST_EFULL for a put, DIST_ETIMEDOUT for a get). */
static int s_sliced(dist_mqueue_t *q, int timeout_ms, const void *data, size_t len, void **buf,
                    size_t *blen)
{
    dist_manager_t *self = q->mgr;
    int rc = s_enter(self);
    if (rc)
        return rc;
    int64_t deadline = timeout_ms > 0 ? s_now_ms() + timeout_ms : -1;
    for (bool first = true;; first = false) {
        int slice = s_slice(timeout_ms, deadline, first);
        if (slice < 0)
            break; /* rc holds the last "not yet" */
        if (!first && s_closing(self)) {
            rc = DIST_ECLOSED;
            break;
        }
        if (buf) {
            rc = dist_client_qget(self->client, q->name, buf, blen, slice);
            if (rc != DIST_ETIMEDOUT)
                break;
        } else {
            rc = dist_client_qput(self->client, q->name, data, len, slice);
            if (rc != DIST_EFULL)
                break;
        }
    }
    s_leave(self);
    return rc;
}

/* Values are packed and unpacked with the format strings of dist/value.h
 * (dist_pack, dist_vunpack); dist__format_count checks a get's format
 * before an item is taken that could then not be read. */

/* ---- queue operations --------------------------------------------------------------------- */

int dist_mqueue_put_packed(dist_mqueue_t *self, const void *data, size_t len, int timeout_ms)
{
    if (!data || !len)
        return DIST_EINVAL;
    dist_result_t *check = dist_result_new_value(data, len);
    if (!check)
        return DIST_ENOMEM;
    bool one = dist_result_value(check) != NULL;
    dist_result_destroy(&check);
    if (!one)
        return DIST_EINVAL;
    return s_sliced(self, timeout_ms, data, len, NULL, NULL);
}

int dist_mqueue_vput(dist_mqueue_t *self, int timeout_ms, const char *fmt, va_list ap)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = dist__format_count(fmt, false) > 0 ? dist_vpack(&pk, fmt, ap) : DIST_EINVAL;
    /* msgpack_sbuffer_write fails only when out of memory, leaving the
     * buffer short: an empty one here, a value that does not parse below. */
    if (!rc && !sb.size)
        rc = DIST_ENOMEM;
    if (!rc)
        rc = s_sliced(self, timeout_ms, sb.data, sb.size, NULL, NULL);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

int dist_mqueue_put_timeout(dist_mqueue_t *self, int timeout_ms, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = dist_mqueue_vput(self, timeout_ms, fmt, ap);
    va_end(ap);
    return rc;
}

int dist_mqueue_put(dist_mqueue_t *self, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = dist_mqueue_vput(self, DIST_FOREVER, fmt, ap);
    va_end(ap);
    return rc;
}

int dist_mqueue_get(dist_mqueue_t *self, int timeout_ms, dist_result_t **value)
{
    *value = NULL;
    void *buf = NULL;
    size_t len = 0;
    int rc = s_sliced(self, timeout_ms, NULL, 0, &buf, &len);
    if (rc)
        return rc;
    /* An empty item (another client may put one) is no value: the result
     * still says so through dist_result_value() == NULL. */
    *value = dist_result_new_value(buf, len);
    free(buf);
    return *value ? 0 : DIST_ENOMEM;
}

int dist_mqueue_get_fmt(dist_mqueue_t *self, int timeout_ms, const char *fmt, ...)
{
    if (dist__format_count(fmt, true) <= 0)
        return DIST_EINVAL; /* before taking an item that could not be read */
    dist_result_t *r;
    int rc = dist_mqueue_get(self, timeout_ms, &r);
    if (rc)
        return rc;
    dist_result_destroy(&self->last);
    self->last = r;
    va_list ap;
    va_start(ap, fmt);
    const msgpack_object *o = dist_result_value(r);
    /* The format is valid: a failure is an item that does not match it. */
    rc = o ? dist_vunpack(o, fmt, ap) : DIST_EPROTO;
    va_end(ap);
    return rc == DIST_EINVAL ? DIST_EPROTO : rc;
}

const msgpack_object *dist_mqueue_last(dist_mqueue_t *self)
{
    return self->last ? dist_result_value(self->last) : NULL;
}

/* ---- size, from the master's STATUS ------------------------------------------------------- */

static bool s_str_is(const msgpack_object *o, const char *s)
{
    const char *p;
    size_t n;
    return o && dist_obj_str(o, &p, &n) == 0 && n == strlen(s) && memcmp(p, s, n) == 0;
}

long dist_mqueue_qsize(dist_mqueue_t *self)
{
    int rc = s_enter(self->mgr);
    if (rc)
        return rc;
    dist_result_t *st = NULL;
    rc = dist_client_status(self->mgr->client, STATUS_TIMEOUT_MS, &st);
    s_leave(self->mgr);
    if (rc) {
        dist_result_destroy(&st);
        return rc;
    }
    const msgpack_object *queues = dist_obj_map_get(dist_result_value(st), "queues");
    long size = queues && queues->type == MSGPACK_OBJECT_ARRAY ? 0 : DIST_EPROTO;
    for (uint32_t i = 0; size == 0 && i < queues->via.array.size; i++) {
        const msgpack_object *q = &queues->via.array.ptr[i];
        if (!s_str_is(dist_obj_map_get(q, "name"), self->name) || !s_str_is(dist_obj_map_get(q, "kind"), "named"))
            continue;
        uint64_t depth;
        const msgpack_object *d = dist_obj_map_get(q, "depth");
        size = d && dist_obj_uint(d, &depth) == 0 && depth <= LONG_MAX ? (long)depth : DIST_EPROTO;
        break;
    }
    dist_result_destroy(&st);
    return size;
}

int dist_mqueue_empty(dist_mqueue_t *self)
{
    long n = dist_mqueue_qsize(self);
    return n < 0 ? (int)n : n == 0;
}

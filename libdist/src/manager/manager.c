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

/* ---- values from format strings ----------------------------------------------------------- */

/* The number of conversions of fmt, or -1 for an unknown one. */
static int s_fmt_count(const char *fmt)
{
    if (!fmt || !*fmt)
        return -1;
    int n = 0;
    for (const char *p = fmt; *p; p++, n++)
        if (!strchr("ildbsSyn", *p))
            return -1;
    return n;
}

static int s_pack(msgpack_packer *pk, const char *fmt, va_list ap)
{
    int n = s_fmt_count(fmt);
    if (n < 0)
        return DIST_EINVAL;
    if (n > 1)
        msgpack_pack_array(pk, (size_t)n);
    for (const char *p = fmt; *p; p++) {
        const char *s;
        size_t len;
        switch (*p) {
        case 'i': msgpack_pack_int64(pk, va_arg(ap, int)); break;
        case 'l': msgpack_pack_int64(pk, va_arg(ap, int64_t)); break;
        case 'd': msgpack_pack_double(pk, va_arg(ap, double)); break;
        case 'b':
            if (va_arg(ap, int))
                msgpack_pack_true(pk);
            else
                msgpack_pack_false(pk);
            break;
        case 's':
        case 'S':
            s = va_arg(ap, const char *);
            len = *p == 's' ? (s ? strlen(s) : 0) : va_arg(ap, size_t);
            if (!s && len)
                return DIST_EINVAL;
            msgpack_pack_str(pk, len);
            msgpack_pack_str_body(pk, s ? s : "", len);
            break;
        case 'y':
            s = va_arg(ap, const void *);
            len = va_arg(ap, size_t);
            if (!s && len)
                return DIST_EINVAL;
            msgpack_pack_bin(pk, len);
            msgpack_pack_bin_body(pk, s ? s : "", len);
            break;
        default: msgpack_pack_nil(pk); break; /* 'n' */
        }
    }
    return 0;
}

static int s_unpack_one(const msgpack_object *o, char conv, va_list *ap)
{
    int64_t i64;
    int rc;
    switch (conv) {
    case 'i':
        rc = dist_obj_int(o, &i64);
        if (!rc && (i64 < INT_MIN || i64 > INT_MAX))
            rc = DIST_EINVAL;
        if (!rc)
            *va_arg(*ap, int *) = (int)i64;
        else
            (void)va_arg(*ap, int *);
        return rc;
    case 'l': return dist_obj_int(o, va_arg(*ap, int64_t *));
    case 'd': return dist_obj_double(o, va_arg(*ap, double *));
    case 'b': return dist_obj_bool(o, va_arg(*ap, bool *));
    case 's':
    case 'S': {
        const char **s = va_arg(*ap, const char **);
        return dist_obj_str(o, s, va_arg(*ap, size_t *));
    }
    case 'y': {
        const void **p = va_arg(*ap, const void **);
        return dist_obj_bin(o, p, va_arg(*ap, size_t *));
    }
    default: return o->type == MSGPACK_OBJECT_NIL ? 0 : DIST_EINVAL; /* 'n' */
    }
}

/* Every conversion is read, so that a mismatch in the middle still leaves
 * ap where the caller expects nothing more from it. */
static int s_unpack(const msgpack_object *item, const char *fmt, va_list ap)
{
    int n = s_fmt_count(fmt);
    if (!item)
        return DIST_EPROTO;
    const msgpack_object *el = item;
    if (n > 1) {
        if (item->type != MSGPACK_OBJECT_ARRAY || item->via.array.size != (uint32_t)n)
            return DIST_EPROTO;
        el = item->via.array.ptr;
    }
    int rc = 0;
    va_list cp;
    va_copy(cp, ap);
    for (int i = 0; i < n; i++)
        if (s_unpack_one(&el[n > 1 ? i : 0], fmt[i], &cp) && !rc)
            rc = DIST_EPROTO;
    va_end(cp);
    return rc;
}

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
    va_list cp;
    va_copy(cp, ap);
    int rc = s_pack(&pk, fmt, cp);
    va_end(cp);
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
    if (s_fmt_count(fmt) < 0)
        return DIST_EINVAL; /* before taking an item that could not be read */
    dist_result_t *r;
    int rc = dist_mqueue_get(self, timeout_ms, &r);
    if (rc)
        return rc;
    dist_result_destroy(&self->last);
    self->last = r;
    va_list ap;
    va_start(ap, fmt);
    rc = s_unpack(dist_result_value(r), fmt, ap);
    va_end(ap);
    return rc;
}

const msgpack_object *dist_mqueue_last(dist_mqueue_t *self)
{
    return self->last ? dist_result_value(self->last) : NULL;
}

/* ---- size, from the master's STATUS ------------------------------------------------------- */

static const msgpack_object *s_map_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, key, n) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

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
    const msgpack_object *queues = s_map_get(dist_result_value(st), "queues");
    long size = queues && queues->type == MSGPACK_OBJECT_ARRAY ? 0 : DIST_EPROTO;
    for (uint32_t i = 0; size == 0 && i < queues->via.array.size; i++) {
        const msgpack_object *q = &queues->via.array.ptr[i];
        if (!s_str_is(s_map_get(q, "name"), self->name) || !s_str_is(s_map_get(q, "kind"), "named"))
            continue;
        uint64_t depth;
        const msgpack_object *d = s_map_get(q, "depth");
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

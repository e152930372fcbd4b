/*  task.c - the task registry and the code that runs one task.
 *
 *  The registry is an append-only array under a mutex: entries are never
 *  removed, so names handed out stay valid for the life of the process
 *  (plugins are never unloaded).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/error.h"
#include "mpcheck_internal.h"
#include "task_internal.h"
#include "util_internal.h"

struct entry {
    char *name;
    dist_task_fn fn;
};

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *s_entries;
static size_t s_count, s_cap;

bool dist_task_name_valid(const char *name)
{
    if (!name || !*name)
        return false;
    size_t n = 0;
    for (const char *p = name; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok || n >= DIST_TASK_NAME_MAX)
            return false;
    }
    return true;
}

static struct entry *s_find(const char *name)
{
    for (size_t i = 0; i < s_count; i++)
        if (strcmp(s_entries[i].name, name) == 0)
            return &s_entries[i];
    return NULL;
}

int dist_task_register(const char *name, dist_task_fn fn)
{
    if (!fn || !dist_task_name_valid(name))
        return DIST_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&s_lock);
    struct entry *e = s_find(name);
    if (e) {
        rc = e->fn == fn ? 0 : -EEXIST;
        goto out;
    }
    if (s_count == s_cap) {
        size_t cap = s_cap ? s_cap * 2 : 32;
        struct entry *grown = realloc(s_entries, cap * sizeof *grown);
        if (!grown) {
            rc = DIST_ENOMEM;
            goto out;
        }
        s_entries = grown;
        s_cap = cap;
    }
    char *copy = strdup(name);
    if (!copy) {
        rc = DIST_ENOMEM;
        goto out;
    }
    s_entries[s_count++] = (struct entry){ copy, fn };
out:
    pthread_mutex_unlock(&s_lock);
    return rc;
}

dist_task_fn dist_task_lookup(const char *name)
{
    if (!name)
        return NULL;
    pthread_mutex_lock(&s_lock);
    struct entry *e = s_find(name);
    dist_task_fn fn = e ? e->fn : NULL;
    pthread_mutex_unlock(&s_lock);
    return fn;
}

const char *dist_task_name_of(dist_task_fn fn)
{
    const char *name = NULL;
    pthread_mutex_lock(&s_lock);
    for (size_t i = 0; i < s_count && !name; i++)
        if (s_entries[i].fn == fn)
            name = s_entries[i].name;
    pthread_mutex_unlock(&s_lock);
    return name;
}

size_t dist_task_count(void)
{
    pthread_mutex_lock(&s_lock);
    size_t n = s_count;
    pthread_mutex_unlock(&s_lock);
    return n;
}

const char *dist_task_name_at(size_t i)
{
    pthread_mutex_lock(&s_lock);
    const char *name = i < s_count ? s_entries[i].name : NULL;
    pthread_mutex_unlock(&s_lock);
    return name;
}

int dist_task_fail(dist_task_ctx_t *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
    va_end(ap);
    ctx->failed = true;
    return -1;
}

int dist_task_retry(dist_task_ctx_t *ctx, int delay_ms, const char *reason)
{
    snprintf(ctx->err, sizeof ctx->err, "%s", reason ? reason : "");
    ctx->retry_ms = delay_ms > 0 ? (uint32_t)delay_ms : 0;
    ctx->retry = true;
    ctx->failed = true;
    return -1;
}

const char *dist_task_ctx_name(const dist_task_ctx_t *ctx) { return ctx->name ? ctx->name : "?"; }

/* Replaces the contents of `out` with a NUL-terminated message. */
static int s_error(msgpack_sbuffer *out, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int s_error(msgpack_sbuffer *out, int code, const char *fmt, ...)
{
    char msg[DIST__TASK_ERR_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    size_t n = dist__vformat(msg, sizeof msg, fmt, ap);
    va_end(ap);
    msgpack_sbuffer_clear(out);
    if (msgpack_sbuffer_write(out, msg, n + 1) != 0)
        return DIST_ENOMEM;
    return code;
}

/* A retry request: the message, then the delay after its NUL (see
 * dist__task_run in task_internal.h). */
static int s_retry(msgpack_sbuffer *out, const dist_task_ctx_t *ctx)
{
    int rc = ctx->err[0] ? s_error(out, DIST_ERETRY, "retry requested: %s", ctx->err)
                         : s_error(out, DIST_ERETRY, "retry requested");
    if (rc == DIST_ERETRY &&
        msgpack_sbuffer_write(out, (const char *)&ctx->retry_ms, sizeof ctx->retry_ms) != 0)
        return DIST_ENOMEM;
    return rc;
}

/* Most argument arrays are a few scalars: decode those here, into objects
 * on the caller's stack, the way msgpack_unpack() would have (non-negative
 * signed ints are POSITIVE_INTEGER, float32 is widened into via.f64,
 * strings and bytes point into the buffer). msgpack_unpack() is a general
 * state machine with a zone; this is several times faster for the common
 * case. Returns false for anything else, which then takes the general
 * path. The buffer has been validated, so reads stay in bounds. */
#define FLAT_MAX 16

static uint64_t s_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static bool s_decode_flat(const void *buf, size_t len, msgpack_object *root, msgpack_object *items)
{
    const unsigned char *p = buf, *end = p + len;
    size_t n;
    if ((*p & 0xf0) == 0x90) {
        n = *p++ & 0x0f;
    } else if (*p == 0xdc && len >= 3) {
        n = (size_t)s_be(p + 1, 2);
        p += 3;
    } else {
        return false;
    }
    if (n > FLAT_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        msgpack_object *o = &items[i];
        size_t used = dist__mp_number(p, (size_t)(end - p), o);
        if (used) {
            p += used;
            continue;
        }
        if (p >= end)
            return false;
        unsigned char b = *p++;
        if ((b & 0xe0) == 0xa0 || b == 0xd9 || b == 0xda || b == 0xdb || b == 0xc4 || b == 0xc5 ||
            b == 0xc6) {
            int lw = (b & 0xe0) == 0xa0 ? 0 : (b == 0xd9 || b == 0xc4) ? 1 : (b == 0xda || b == 0xc5) ? 2 : 4;
            if ((size_t)(end - p) < (size_t)lw)
                return false;
            size_t sz = lw ? (size_t)s_be(p, lw) : (size_t)(b & 0x1f);
            p += lw;
            if ((size_t)(end - p) < sz)
                return false;
            bool bin = b >= 0xc4 && b <= 0xc6;
            o->type = bin ? MSGPACK_OBJECT_BIN : MSGPACK_OBJECT_STR;
            o->via.str.size = (uint32_t)sz;
            o->via.str.ptr = (const char *)p; /* bin shares the layout */
            p += sz;
            continue;
        }
        switch (b) {
        case 0xc0: o->type = MSGPACK_OBJECT_NIL; break;
        case 0xc2: case 0xc3:
            o->type = MSGPACK_OBJECT_BOOLEAN;
            o->via.boolean = b == 0xc3;
            break;
        default: return false; /* containers, ext, a cut number: the general path */
        }
    }
    if (p != end)
        return false;
    root->type = MSGPACK_OBJECT_ARRAY;
    root->via.array.size = (uint32_t)n;
    root->via.array.ptr = n ? items : NULL;
    return true;
}

int dist__runner_init(dist__runner_t *r)
{
    msgpack_sbuffer_init(&r->out);
    return msgpack_zone_init(&r->zone, 4096) ? 0 : DIST_ENOMEM;
}

void dist__runner_fini(dist__runner_t *r)
{
    msgpack_zone_destroy(&r->zone);
    msgpack_sbuffer_destroy(&r->out);
}

int dist__task_run(dist__runner_t *r, dist_task_fn fn, const char *name, const void *args,
                   size_t len)
{
    msgpack_sbuffer *out = &r->out;
    msgpack_sbuffer_clear(out);
    msgpack_zone_clear(&r->zone);
    if (!name)
        name = "?";
    static const unsigned char empty_array = 0x90;
    if (!args || len == 0) {
        args = &empty_array;
        len = 1;
    }
    /* Arguments come from another process: check them before msgpack-c,
     * which trusts every length it reads. The flat decoder checks every
     * bound itself; anything it declines goes through the validator. */
    msgpack_object obj, flat[FLAT_MAX];
    if (!s_decode_flat(args, len, &obj, flat)) {
        if (!dist__msgpack_is_array(*(const unsigned char *)args) || !dist__mp_is_one_value(args, len))
            return s_error(out, DIST_EPROTO, "task %s: arguments are not one MessagePack array",
                           name);
        size_t off = 0;
        msgpack_unpack_return ur = msgpack_unpack(args, len, &off, &r->zone, &obj);
        if (ur != MSGPACK_UNPACK_SUCCESS)
            return s_error(out, ur == MSGPACK_UNPACK_NOMEM_ERROR ? DIST_ENOMEM : DIST_EPROTO,
                           "task %s: cannot decode its arguments", name);
    }
    dist_task_ctx_t ctx; /* not `= {...}`: that would clear 1 KiB per task */
    ctx.name = name;
    ctx.failed = false;
    ctx.retry = false;
    ctx.err[0] = 0;
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    int rc = fn(&ctx, &obj, &pk);
    if (ctx.retry)
        return s_retry(out, &ctx);
    if (rc != 0 || ctx.failed) {
        if (ctx.err[0])
            return s_error(out, DIST_ETASK, "%s", ctx.err);
        return s_error(out, DIST_ETASK, "task %s failed (returned %d)", name, rc);
    }
    /* Packing nothing is returning nothing: nil, as Python's None. */
    if (out->size == 0)
        return msgpack_pack_nil(&pk) ? s_error(out, DIST_ENOMEM, "task %s: out of memory", name) : 0;
    if (!dist__mp_is_one_value(out->data, out->size)) {
        static const dist__mp_limits_t any = { DIST__MP_DEPTH_MAX, SIZE_MAX, SIZE_MAX };
        size_t objects;
        if (dist__mp_validate(out->data, out->size, &any, true, &objects) > 1)
            return s_error(out, DIST_EPROTO, "task %s produced more than one value", name);
        return s_error(out, DIST_EPROTO, "task %s produced a value that is not valid MessagePack", name);
    }
    return 0;
}

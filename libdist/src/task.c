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
#include "task_internal.h"

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

const char *dist_task_ctx_name(const dist_task_ctx_t *ctx) { return ctx->name ? ctx->name : "?"; }

/* Replaces the contents of `out` with a NUL-terminated message. */
static int s_error(msgpack_sbuffer *out, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int s_error(msgpack_sbuffer *out, int code, const char *fmt, ...)
{
    char msg[DIST__TASK_ERR_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = (int)sizeof msg - 1;
    msgpack_sbuffer_clear(out);
    if (msgpack_sbuffer_write(out, msg, (size_t)n + 1) != 0)
        return DIST_ENOMEM;
    return code;
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
     * which trusts every length it reads. */
    if (!dist__msgpack_is_array(*(const unsigned char *)args) || dist__msgpack_skip(args, len) != len)
        return s_error(out, DIST_EPROTO, "task %s: arguments are not one MessagePack array", name);
    msgpack_object obj;
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack(args, len, &off, &r->zone, &obj);
    if (ur != MSGPACK_UNPACK_SUCCESS)
        return s_error(out, ur == MSGPACK_UNPACK_NOMEM_ERROR ? DIST_ENOMEM : DIST_EPROTO,
                       "task %s: cannot decode its arguments", name);
    dist_task_ctx_t ctx = { .name = name, .failed = false, .err = "" };
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, msgpack_sbuffer_write);
    int rc = fn(&ctx, &obj, &pk);
    if (rc != 0 || ctx.failed) {
        if (ctx.err[0])
            return s_error(out, DIST_ETASK, "%s", ctx.err);
        return s_error(out, DIST_ETASK, "task %s failed (returned %d)", name, rc);
    }
    if (out->size == 0)
        return s_error(out, DIST_EPROTO, "task %s returned no value", name);
    size_t one = dist__msgpack_skip(out->data, out->size);
    if (one == 0)
        return s_error(out, DIST_EPROTO, "task %s produced a value that is not valid MessagePack", name);
    if (one != out->size)
        return s_error(out, DIST_EPROTO, "task %s produced more than one value", name);
    return 0;
}

/* Big-endian reads for the MessagePack headers. */
static uint64_t s_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

size_t dist__msgpack_skip(const void *buf, size_t len)
{
    const unsigned char *p = buf, *end = p + len;
    uint64_t need = 1; /* values still to read */
    while (need) {
        if (p >= end)
            return 0;
        unsigned char b = *p++;
        size_t left = (size_t)(end - p);
        uint64_t body = 0, children = 0; /* bytes of payload, nested values */
        int hdr = 0;                     /* bytes of length field after b */
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
            /* fixint, nil, bool */
        } else if ((b & 0xe0) == 0xa0) {
            body = b & 0x1f;
        } else if ((b & 0xf0) == 0x90) {
            children = b & 0x0f;
        } else if ((b & 0xf0) == 0x80) {
            children = (uint64_t)(b & 0x0f) * 2;
        } else {
            switch (b) {
            case 0xcc: case 0xd0: body = 1; break;
            case 0xcd: case 0xd1: body = 2; break;
            case 0xca: case 0xce: case 0xd2: body = 4; break;
            case 0xcb: case 0xcf: case 0xd3: body = 8; break;
            case 0xd4: body = 2; break; /* fixext: type byte + data */
            case 0xd5: body = 3; break;
            case 0xd6: body = 5; break;
            case 0xd7: body = 9; break;
            case 0xd8: body = 17; break;
            case 0xc4: case 0xd9: hdr = 1; break;
            case 0xc5: case 0xda: hdr = 2; break;
            case 0xc6: case 0xdb: hdr = 4; break;
            case 0xc7: hdr = 1; break; /* ext 8/16/32: length, then type byte */
            case 0xc8: hdr = 2; break;
            case 0xc9: hdr = 4; break;
            case 0xdc: hdr = 2; break;
            case 0xdd: hdr = 4; break;
            case 0xde: hdr = 2; break;
            case 0xdf: hdr = 4; break;
            default: return 0; /* 0xc1: never used */
            }
            if (hdr) {
                if (left < (size_t)hdr)
                    return 0;
                uint64_t n = s_be(p, hdr);
                p += hdr;
                left -= (size_t)hdr;
                if (b == 0xdc || b == 0xdd)
                    children = n;
                else if (b == 0xde || b == 0xdf)
                    children = n * 2;
                else if (b >= 0xc7 && b <= 0xc9)
                    body = n + 1;
                else
                    body = n;
            }
        }
        if (body > left)
            return 0;
        p += body;
        left -= (size_t)body;
        /* Each value still to read needs at least one byte: a count above
         * the bytes left is a lie, caught before it is believed. */
        if (children > left)
            return 0;
        need = need - 1 + children;
        if (need > left)
            return 0;
    }
    return (size_t)(p - (const unsigned char *)buf);
}

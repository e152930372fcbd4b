/*  format.c - packing and unpacking MessagePack values from a format string
 *  (dist/value.h: dist_pack, dist_args_pack, dist_args_add, dist_unpack,
 *  dist_args_unpack, dist_result_unpack).
 *
 *  One letter a value, in the spirit of czmq's zsock_send and jansson's
 *  json_pack: the common cases of building arguments and reading results
 *  become one call, and the letters are the same both ways. The grammar:
 *
 *      items  := item*           (spaces, commas and colons are ignored)
 *      item   := letter | '[' items ']' | '{' (item item)* '}'
 *
 *  Several items at the top of a format stand for an array of them (a
 *  result [n, s] is "is"); one item is the value itself ("i" reads 5, and
 *  "[i]" reads [5]). Packing checks the whole format before it packs
 *  anything, so a bad format never leaves half a value behind.
 */
#include "dist/value.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "dist/error.h"
#include "value_internal.h"

/* Nesting deeper than this is refused (the stack of open counts). */
#define S_DEPTH 32

static bool s_blank(char c)
{
    return c == ' ' || c == ',' || c == ':' || c == '\t' || c == '\n';
}

/* Skips blanks; the next significant character (or NUL). */
static const char *s_skip(const char *f)
{
    while (*f && s_blank(*f))
        f++;
    return f;
}

/* Counts the items of one level from f up to its closing bracket (or the
 * end of the format when close is 0), checking brackets and letters. *end
 * gets the position of the closing bracket (or the NUL). -1 for a bad
 * format. */
static long s_count(const char *f, char close, const char *letters, const char **end, int depth)
{
    long n = 0;
    /* Unpacking (the letter set with '*') looks map values up by key: a
     * map's keys there are 's' items, each taking the key string. */
    bool str_keys = close == '}' && strchr(letters, '*');
    for (f = s_skip(f); *f && *f != close; f = s_skip(f)) {
        if (str_keys && n % 2 == 0 && *f != 's')
            return -1;
        if (*f == '[' || *f == '{') {
            char c = *f == '[' ? ']' : '}';
            const char *e;
            if (depth >= S_DEPTH)
                return -1;
            long k = s_count(f + 1, c, letters, &e, depth + 1);
            if (k < 0 || *e != c || (c == '}' && k % 2))
                return -1;
            f = e + 1;
        } else if (*f == ']' || *f == '}' || !strchr(letters, *f)) {
            return -1;
        } else {
            f++;
        }
        n++;
    }
    if (*f != close)
        return -1;
    *end = f;
    return n;
}

/* ---- packing --------------------------------------------------------------- */

#define S_PACK_LETTERS "ntiIuUdsSbo"
#define S_UNPACK_LETTERS "ntiIuUdsSbo*"

long dist__format_count(const char *fmt, bool unpack)
{
    const char *e;
    return fmt ? s_count(fmt, 0, unpack ? S_UNPACK_LETTERS : S_PACK_LETTERS, &e, 0) : -1;
}

typedef struct {
    msgpack_packer *pk;
    va_list ap;
    int rc;
} packer_t;

static void s_pack_value(packer_t *p, const char **fp);

/* Packs the items of one level up to `close`; fp ends after it. */
static void s_pack_items(packer_t *p, const char **fp, char close)
{
    const char *f = s_skip(*fp);
    while (*f && *f != close) {
        s_pack_value(p, &f);
        f = s_skip(f);
    }
    *fp = *f ? f + 1 : f;
}

static int s_pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    if (!s)
        return msgpack_pack_nil(pk);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

static void s_pack_value(packer_t *p, const char **fp)
{
    const char *f = *fp;
    char c = *f++;
    msgpack_packer *pk = p->pk;
    int r = 0;
    switch (c) {
    case 'n': r = msgpack_pack_nil(pk); break;
    case 't': r = va_arg(p->ap, int) ? msgpack_pack_true(pk) : msgpack_pack_false(pk); break;
    case 'i': r = msgpack_pack_int64(pk, va_arg(p->ap, int)); break;
    case 'I': r = msgpack_pack_int64(pk, va_arg(p->ap, int64_t)); break;
    case 'u': r = msgpack_pack_uint64(pk, va_arg(p->ap, unsigned)); break;
    case 'U': r = msgpack_pack_uint64(pk, va_arg(p->ap, uint64_t)); break;
    case 'd': r = msgpack_pack_double(pk, va_arg(p->ap, double)); break;
    case 's': {
        const char *s = va_arg(p->ap, const char *);
        r = s_pack_str(pk, s, s ? strlen(s) : 0);
        break;
    }
    case 'S': {
        const char *s = va_arg(p->ap, const char *);
        size_t n = va_arg(p->ap, size_t);
        r = s_pack_str(pk, s, n);
        break;
    }
    case 'b': {
        const void *b = va_arg(p->ap, const void *);
        size_t n = va_arg(p->ap, size_t);
        r = msgpack_pack_bin(pk, b ? n : 0) || (b && n && msgpack_pack_bin_body(pk, b, n));
        break;
    }
    case 'o': {
        const msgpack_object *o = va_arg(p->ap, const msgpack_object *);
        r = o ? msgpack_pack_object(pk, *o) : msgpack_pack_nil(pk);
        break;
    }
    case '[':
    case '{': {
        const char *e;
        long n = s_count(f, c == '[' ? ']' : '}', S_PACK_LETTERS, &e, 0);
        r = c == '[' ? msgpack_pack_array(pk, (size_t)n) : msgpack_pack_map(pk, (size_t)n / 2);
        s_pack_items(p, &f, c == '[' ? ']' : '}');
        break;
    }
    }
    if (r && !p->rc)
        p->rc = DIST_ENOMEM;
    *fp = f;
}

/* Packs fmt as one value (several top-level items: an array of them) or,
 * with `flat`, as that many values one after the other. Returns the number
 * of values packed, or a negative code. */
static long s_vpack(msgpack_packer *pk, bool flat, const char *fmt, va_list ap)
{
    const char *e;
    long n = fmt ? s_count(fmt, 0, S_PACK_LETTERS, &e, 0) : -1;
    if (n < 0 || (!flat && n == 0))
        return DIST_EINVAL;
    packer_t p = { .pk = pk, .rc = 0 };
    va_copy(p.ap, ap);
    if (!flat && n > 1 && msgpack_pack_array(pk, (size_t)n))
        p.rc = DIST_ENOMEM;
    const char *f = fmt;
    s_pack_items(&p, &f, 0);
    va_end(p.ap);
    return p.rc ? p.rc : (flat ? n : 1);
}

int dist_vpack(msgpack_packer *pk, const char *fmt, va_list ap)
{
    if (!pk)
        return DIST_EINVAL;
    long rc = s_vpack(pk, false, fmt, ap);
    return rc < 0 ? (int)rc : 0;
}

int dist_pack(msgpack_packer *pk, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = dist_vpack(pk, fmt, ap);
    va_end(ap);
    return rc;
}

int dist_args_vadd(dist_args_t *self, const char *fmt, va_list ap)
{
    if (!self)
        return DIST_EINVAL;
    const char *e;
    if (!fmt || s_count(fmt, 0, S_PACK_LETTERS, &e, 0) < 0)
        return DIST_EINVAL; /* nothing packed: the array stays usable */
    long n = s_vpack(dist__args_pk(self), true, fmt, ap);
    return dist__args_added(self, n < 0 ? 0 : (size_t)n, n < 0 ? (int)n : 0);
}

int dist_args_add(dist_args_t *self, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = dist_args_vadd(self, fmt, ap);
    va_end(ap);
    return rc;
}

dist_args_t *dist_args_pack(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    dist_args_t *a = dist_args_vpack(fmt, ap);
    va_end(ap);
    return a;
}

dist_args_t *dist_args_vpack(const char *fmt, va_list ap)
{
    dist_args_t *a = dist_args_new();
    if (!a)
        return NULL;
    int rc = dist_args_vadd(a, fmt, ap);
    if (rc) {
        dist_args_destroy(&a);
        errno = -rc;
    }
    return a;
}

/* ---- unpacking --------------------------------------------------------------- */

typedef struct {
    va_list ap;
    int rc;
    char **copies[16]; /* 'S' strings handed out so far, freed on failure */
    size_t ncopies;
} unpacker_t;

static void s_unpack_value(unpacker_t *u, const char **fp, const msgpack_object *o);

/* After a failure, the 'S' copies already made are freed and NULLed: the
 * caller owns them only when the whole call succeeded. */
static void s_unpack_done(unpacker_t *u)
{
    for (size_t i = 0; u->rc && i < u->ncopies; i++) {
        free(*u->copies[i]);
        *u->copies[i] = NULL;
    }
}

static void s_fail(unpacker_t *u, int rc)
{
    if (!u->rc)
        u->rc = rc;
}

/* Reads a map's value for each key given as a 's' argument. */
static void s_unpack_map(unpacker_t *u, const char **fp, const msgpack_object *o)
{
    const char *f = s_skip(*fp);
    while (*f && *f != '}') {
        /* Keys are 's' items (s_count made sure) whose argument is the
         * key to look up. A NULL key fails the call, but its value's
         * arguments are still taken, to keep the va_list in step. */
        const char *key = va_arg(u->ap, const char *);
        f = s_skip(f + 1);
        const msgpack_object *v = NULL;
        if (key && o && o->type == MSGPACK_OBJECT_MAP)
            v = dist_obj_map_get(o, key);
        if (!v)
            s_fail(u, DIST_EINVAL);
        s_unpack_value(u, &f, v);
        f = s_skip(f);
    }
    *fp = *f ? f + 1 : f;
}

static void s_unpack_array(unpacker_t *u, const char **fp, const msgpack_object *o, long n)
{
    bool ok = o && o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == (uint32_t)n;
    if (!ok)
        s_fail(u, DIST_EINVAL);
    const char *f = s_skip(*fp);
    for (long i = 0; *f && *f != ']'; i++) {
        s_unpack_value(u, &f, ok ? &o->via.array.ptr[i] : NULL);
        f = s_skip(f);
    }
    *fp = *f ? f + 1 : f;
}

/* Takes the pointer arguments of one item (so that the va_list stays in
 * step after a failure) and fills them from o when it has the right type. */
static void s_unpack_value(unpacker_t *u, const char **fp, const msgpack_object *o)
{
    const char *f = *fp;
    char c = *f++;
    int r = 0;
    switch (c) {
    case 'n': r = o && o->type == MSGPACK_OBJECT_NIL ? 0 : DIST_EINVAL; break;
    case '*': r = o ? 0 : DIST_EINVAL; break;
    case 't': {
        bool b = false, *out = va_arg(u->ap, bool *);
        r = dist_obj_bool(o, &b);
        if (!r && out)
            *out = b;
        break;
    }
    case 'i': {
        int *out = va_arg(u->ap, int *);
        int64_t v = 0;
        r = dist_obj_int(o, &v);
        if (!r && (v < INT32_MIN || v > INT32_MAX))
            r = DIST_EINVAL;
        if (!r && out)
            *out = (int)v;
        break;
    }
    case 'I': {
        int64_t *out = va_arg(u->ap, int64_t *);
        int64_t v = 0;
        if (!(r = dist_obj_int(o, &v)) && out)
            *out = v;
        break;
    }
    case 'u': {
        unsigned *out = va_arg(u->ap, unsigned *);
        uint64_t v = 0;
        r = dist_obj_uint(o, &v);
        if (!r && v > UINT32_MAX)
            r = DIST_EINVAL;
        if (!r && out)
            *out = (unsigned)v;
        break;
    }
    case 'U': {
        uint64_t *out = va_arg(u->ap, uint64_t *);
        uint64_t v = 0;
        if (!(r = dist_obj_uint(o, &v)) && out)
            *out = v;
        break;
    }
    case 'd': {
        double *out = va_arg(u->ap, double *);
        double v = 0;
        if (!(r = dist_obj_double(o, &v)) && out)
            *out = v;
        break;
    }
    case 's':
    case 'b': {
        const void **out = va_arg(u->ap, const void **);
        size_t *len = va_arg(u->ap, size_t *);
        const void *p = NULL;
        size_t n = 0;
        r = c == 's' ? dist_obj_str(o, (const char **)&p, &n) : dist_obj_bin(o, &p, &n);
        if (!r) {
            if (out)
                *out = p;
            if (len)
                *len = n;
        }
        break;
    }
    case 'S': {
        char **out = va_arg(u->ap, char **);
        const char *p = NULL;
        size_t n = 0;
        r = dist_obj_str(o, &p, &n);
        if (!r && out && !u->rc) {
            if (u->ncopies == sizeof u->copies / sizeof *u->copies) {
                r = DIST_EINVAL; /* more 'S' than we keep track of */
            } else if (!(*out = malloc(n + 1))) {
                r = DIST_ENOMEM;
            } else {
                memcpy(*out, p, n);
                (*out)[n] = 0;
                u->copies[u->ncopies++] = out;
            }
        }
        break;
    }
    case 'o': {
        const msgpack_object **out = va_arg(u->ap, const msgpack_object **);
        r = o ? 0 : DIST_EINVAL;
        if (!r && out)
            *out = o;
        break;
    }
    case '[': {
        const char *e;
        long n = s_count(f, ']', S_UNPACK_LETTERS, &e, 0);
        s_unpack_array(u, &f, o, n);
        break;
    }
    case '{': s_unpack_map(u, &f, o); break;
    }
    if (r)
        s_fail(u, r);
    *fp = f;
}

int dist_vunpack(const msgpack_object *o, const char *fmt, va_list ap)
{
    const char *e;
    long n = fmt ? s_count(fmt, 0, S_UNPACK_LETTERS, &e, 0) : -1;
    if (n <= 0)
        return DIST_EINVAL;
    unpacker_t u = { .rc = 0, .ncopies = 0 };
    va_copy(u.ap, ap);
    const char *f = fmt;
    if (n == 1)
        s_unpack_value(&u, &f, o);
    else
        s_unpack_array(&u, &f, o, n);
    va_end(u.ap);
    s_unpack_done(&u);
    return u.rc;
}

int dist_unpack(const msgpack_object *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = dist_vunpack(o, fmt, ap);
    va_end(ap);
    return rc;
}

int dist_args_unpack(const msgpack_object *args, const char *fmt, ...)
{
    const char *e;
    long n = fmt ? s_count(fmt, 0, S_UNPACK_LETTERS, &e, 0) : -1;
    if (n < 0)
        return DIST_EINVAL;
    va_list ap;
    va_start(ap, fmt);
    unpacker_t u = { .rc = 0, .ncopies = 0 };
    va_copy(u.ap, ap);
    const char *f = fmt;
    s_unpack_array(&u, &f, args, n);
    va_end(u.ap);
    va_end(ap);
    s_unpack_done(&u);
    return u.rc;
}

int dist_result_unpack(dist_result_t *self, const char *fmt, ...)
{
    if (!self)
        return DIST_EINVAL;
    if (self->status)
        return self->status;
    const msgpack_object *o = dist_result_value(self);
    if (!o)
        return DIST_EPROTO;
    va_list ap;
    va_start(ap, fmt);
    int rc = dist_vunpack(o, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- batches of argument arrays ------------------------------------------------ */

struct dist_batch {
    msgpack_sbuffer buf;  /* the arrays back to back */
    size_t *offs;         /* where each starts */
    size_t n, cap;
    dist_bytes_t *items;  /* built by dist_batch_items, dropped by add */
};

dist_batch_t *dist_batch_new(void)
{
    dist_batch_t *self = calloc(1, sizeof *self);
    if (self)
        msgpack_sbuffer_init(&self->buf);
    return self;
}

void dist_batch_destroy(dist_batch_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_batch_t *self = *self_p;
    msgpack_sbuffer_destroy(&self->buf);
    free(self->offs);
    free(self->items);
    free(self);
    *self_p = NULL;
}

/* Room for one more item; 0 or DIST_ENOMEM. */
static int s_batch_grow(dist_batch_t *self)
{
    free(self->items);
    self->items = NULL;
    if (self->n < self->cap)
        return 0;
    size_t cap = self->cap ? self->cap * 2 : 256;
    size_t *grown = realloc(self->offs, cap * sizeof *grown);
    if (!grown)
        return DIST_ENOMEM;
    self->offs = grown;
    self->cap = cap;
    return 0;
}

int dist_batch_add(dist_batch_t *self, const char *fmt, ...)
{
    if (!self)
        return DIST_EINVAL;
    long n = dist__format_count(fmt, false);
    if (n < 0)
        return DIST_EINVAL;
    if (s_batch_grow(self))
        return DIST_ENOMEM;
    size_t start = self->buf.size;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &self->buf, msgpack_sbuffer_write);
    va_list ap;
    va_start(ap, fmt);
    long rc = msgpack_pack_array(&pk, (size_t)n) ? DIST_ENOMEM : s_vpack(&pk, true, fmt, ap);
    va_end(ap);
    if (rc < 0) {
        self->buf.size = start; /* nothing of a failed item stays */
        return (int)rc;
    }
    self->offs[self->n++] = start;
    return 0;
}

int dist_batch_add_packed(dist_batch_t *self, const void *data, size_t len)
{
    if (!self || !data || !len)
        return DIST_EINVAL;
    if (s_batch_grow(self))
        return DIST_ENOMEM;
    size_t start = self->buf.size;
    if (msgpack_sbuffer_write(&self->buf, data, len))
        return DIST_ENOMEM;
    self->offs[self->n++] = start;
    return 0;
}

size_t dist_batch_count(const dist_batch_t *self) { return self ? self->n : 0; }

const dist_bytes_t *dist_batch_items(dist_batch_t *self)
{
    if (!self || !self->n)
        return NULL;
    if (!self->items) {
        /* Pointers into buf are made only now: adding may move it. */
        self->items = malloc(self->n * sizeof *self->items);
        if (!self->items)
            return NULL;
        for (size_t i = 0; i < self->n; i++) {
            size_t end = i + 1 < self->n ? self->offs[i + 1] : self->buf.size;
            self->items[i] = (dist_bytes_t){ self->buf.data + self->offs[i], end - self->offs[i] };
        }
    }
    return self->items;
}

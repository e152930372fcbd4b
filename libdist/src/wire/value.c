/*  value.c - argument arrays, typed reads of msgpack objects, and results
 *  (see dist/value.h).
 *
 *  dist_args_t packs values into a buffer that keeps five bytes free at its
 *  start; dist_args_data() writes the array header, in its shortest form,
 *  right before the first value, so the finished array needs no copy.
 */
#include "dist/value.h"

#include <stdlib.h>
#include <string.h>

#include "dist/error.h"
#include "mpcheck_internal.h"
#include "value_internal.h"

#define ARGS_RESERVE 5

struct dist_args {
    msgpack_sbuffer buf;
    msgpack_packer pk;
    size_t count;
    bool broken; /* a write failed: refuse until cleared */
};

dist_args_t *dist_args_new(void)
{
    dist_args_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    msgpack_sbuffer_init(&self->buf);
    msgpack_packer_init(&self->pk, &self->buf, msgpack_sbuffer_write);
    dist_args_clear(self);
    return self;
}

void dist_args_destroy(dist_args_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    msgpack_sbuffer_destroy(&(*self_p)->buf);
    free(*self_p);
    *self_p = NULL;
}

void dist_args_clear(dist_args_t *self)
{
    static const char zeros[ARGS_RESERVE];
    msgpack_sbuffer_clear(&self->buf);
    self->count = 0;
    self->broken = msgpack_sbuffer_write(&self->buf, zeros, ARGS_RESERVE) != 0;
}

static int s_done(dist_args_t *self, int packed)
{
    if (packed != 0 || self->broken) {
        self->broken = true;
        return DIST_ENOMEM;
    }
    self->count++;
    return 0;
}

int dist_args_int(dist_args_t *self, int64_t v) { return s_done(self, msgpack_pack_int64(&self->pk, v)); }
int dist_args_uint(dist_args_t *self, uint64_t v) { return s_done(self, msgpack_pack_uint64(&self->pk, v)); }
int dist_args_double(dist_args_t *self, double v) { return s_done(self, msgpack_pack_double(&self->pk, v)); }
int dist_args_nil(dist_args_t *self) { return s_done(self, msgpack_pack_nil(&self->pk)); }

int dist_args_bool(dist_args_t *self, bool v)
{
    return s_done(self, v ? msgpack_pack_true(&self->pk) : msgpack_pack_false(&self->pk));
}

int dist_args_strn(dist_args_t *self, const char *s, size_t n)
{
    int r = msgpack_pack_str(&self->pk, n);
    if (r == 0 && n)
        r = msgpack_pack_str_body(&self->pk, s, n);
    return s_done(self, r);
}

int dist_args_str(dist_args_t *self, const char *s) { return dist_args_strn(self, s, s ? strlen(s) : 0); }

int dist_args_bin(dist_args_t *self, const void *p, size_t n)
{
    int r = msgpack_pack_bin(&self->pk, n);
    if (r == 0 && n)
        r = msgpack_pack_bin_body(&self->pk, p, n);
    return s_done(self, r);
}

msgpack_packer *dist__args_pk(dist_args_t *self) { return &self->pk; }

int dist__args_added(dist_args_t *self, size_t n, int rc)
{
    if (rc || self->broken) {
        self->broken = true;
        return rc ? rc : DIST_ENOMEM;
    }
    self->count += n;
    return 0;
}

msgpack_packer *dist_args_packer(dist_args_t *self)
{
    self->count++;
    return &self->pk;
}

size_t dist_args_count(const dist_args_t *self) { return self->count; }

const void *dist_args_data(dist_args_t *self, size_t *len)
{
    unsigned char *b = (unsigned char *)self->buf.data;
    size_t n = self->count, off;
    if (n < 16) {
        off = 4;
        b[4] = (unsigned char)(0x90 | n);
    } else if (n < 65536) {
        off = 2;
        b[2] = 0xdc;
        b[3] = (unsigned char)(n >> 8);
        b[4] = (unsigned char)n;
    } else {
        off = 0;
        b[0] = 0xdd;
        b[1] = (unsigned char)(n >> 24);
        b[2] = (unsigned char)(n >> 16);
        b[3] = (unsigned char)(n >> 8);
        b[4] = (unsigned char)n;
    }
    if (len)
        *len = self->buf.size - off;
    return b + off;
}

/* ---- typed reads --------------------------------------------------------- */

int dist_obj_int(const msgpack_object *o, int64_t *out)
{
    if (!o)
        return DIST_EINVAL;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = o->via.i64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
        *out = (int64_t)o->via.u64;
        return 0;
    }
    return DIST_EINVAL;
}

int dist_obj_uint(const msgpack_object *o, uint64_t *out)
{
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return DIST_EINVAL;
    *out = o->via.u64;
    return 0;
}

int dist_obj_double(const msgpack_object *o, double *out)
{
    if (!o)
        return DIST_EINVAL;
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; return 0;
    default: return DIST_EINVAL;
    }
}

int dist_obj_bool(const msgpack_object *o, bool *out)
{
    if (!o || o->type != MSGPACK_OBJECT_BOOLEAN)
        return DIST_EINVAL;
    *out = o->via.boolean;
    return 0;
}

int dist_obj_str(const msgpack_object *o, const char **s, size_t *n)
{
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return DIST_EINVAL;
    /* msgpack-c leaves ptr NULL for an empty str; a caller's
     * memcpy(dst, ptr, 0) would then be undefined behaviour. */
    *s = o->via.str.size ? o->via.str.ptr : "";
    *n = o->via.str.size;
    return 0;
}

int dist_obj_bin(const msgpack_object *o, const void **p, size_t *n)
{
    if (!o || o->type != MSGPACK_OBJECT_BIN)
        return DIST_EINVAL;
    *p = o->via.bin.size ? o->via.bin.ptr : ""; /* NULL when empty, as for str */
    *n = o->via.bin.size;
    return 0;
}

int dist_obj_array(const msgpack_object *o, const msgpack_object **items, size_t *n)
{
    if (!o || o->type != MSGPACK_OBJECT_ARRAY)
        return DIST_EINVAL;
    if (items)
        *items = o->via.array.ptr;
    if (n)
        *n = o->via.array.size;
    return 0;
}

const msgpack_object *dist_obj_map_get(const msgpack_object *o, const char *key)
{
    if (!o || !key || o->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            memcmp(k->via.str.ptr, key, klen) == 0)
            return &o->via.map.ptr[i].val;
    }
    return NULL;
}

size_t dist_arg_count(const msgpack_object *args)
{
    return args && args->type == MSGPACK_OBJECT_ARRAY ? args->via.array.size : 0;
}

const msgpack_object *dist_arg(const msgpack_object *args, size_t i)
{
    return i < dist_arg_count(args) ? &args->via.array.ptr[i] : NULL;
}

int dist_arg_int(const msgpack_object *a, size_t i, int64_t *out) { return dist_obj_int(dist_arg(a, i), out); }
int dist_arg_uint(const msgpack_object *a, size_t i, uint64_t *out) { return dist_obj_uint(dist_arg(a, i), out); }
int dist_arg_double(const msgpack_object *a, size_t i, double *out) { return dist_obj_double(dist_arg(a, i), out); }
int dist_arg_bool(const msgpack_object *a, size_t i, bool *out) { return dist_obj_bool(dist_arg(a, i), out); }

int dist_arg_str(const msgpack_object *a, size_t i, const char **s, size_t *n)
{
    return dist_obj_str(dist_arg(a, i), s, n);
}

int dist_arg_bin(const msgpack_object *a, size_t i, const void **p, size_t *n)
{
    return dist_obj_bin(dist_arg(a, i), p, n);
}

bool dist_arg_is_nil(const msgpack_object *a, size_t i)
{
    const msgpack_object *o = dist_arg(a, i);
    return o && o->type == MSGPACK_OBJECT_NIL;
}

/* ---- results ------------------------------------------------------------- */

struct decoded {
    msgpack_zone zone;
    msgpack_object obj;
    bool ok;
};

dist_result_t *dist_result_new_value(const void *data, size_t len)
{
    if (!data && len) {
        errno = EINVAL;
        return NULL;
    }
    return dist__result_new(0, data, len);
}

dist_result_t *dist_result_new_error(int code, const char *message)
{
    if (code >= 0) {
        errno = EINVAL;
        return NULL;
    }
    if (!message)
        message = dist_strerror(code);
    return dist__result_new(code, message, strlen(message));
}

dist_result_t *dist__result_new(int status, const void *data, size_t len)
{
    /* An error message may arrive with its NUL; store it without, then add
     * one, so that dist_result_error() is a C string. */
    if (status && len && ((const char *)data)[len - 1] == 0)
        len--;
    dist_result_t *self = malloc(sizeof *self + len + 1);
    if (!self)
        return NULL;
    char *copy = (char *)(self + 1);
    if (len)
        memcpy(copy, data, len);
    copy[len] = 0;
    dist__result_init(self, status, copy, len, DIST__R_STANDALONE);
    return self;
}

void dist__result_init(dist_result_t *self, int status, const char *data, size_t len, unsigned flags)
{
    self->status = status;
    self->flags = flags;
    self->data = data;
    self->len = len;
    self->dec = NULL;
}

void dist__result_clear(dist_result_t *self)
{
    /* Plain load first: most results were never unpacked, and an atomic
     * exchange per result is measurable on a map of millions. */
    struct decoded *d = atomic_load_explicit(&self->dec, memory_order_relaxed);
    if (d)
        d = atomic_exchange(&self->dec, NULL);
    if (d) {
        msgpack_zone_destroy(&d->zone);
        free(d);
    }
    if (self->flags & DIST__R_OWNS_DATA)
        free((void *)self->data);
    self->data = NULL;
    self->flags &= ~(unsigned)DIST__R_OWNS_DATA;
}

void dist__result_free(dist_result_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_result_t *self = *self_p;
    *self_p = NULL;
    /* Results borrowed from a dist_results_t are not ours to free. */
    if (!(self->flags & DIST__R_STANDALONE))
        return;
    dist__result_clear(self);
    free(self);
}

dist_result_t *dist__result_lend(dist_result_t *self, bool lent)
{
    if (self)
        self->flags = lent ? self->flags | DIST__R_LENT : self->flags & ~DIST__R_LENT;
    return self;
}

void dist_result_destroy(dist_result_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    /* A lent result belongs to its handle or future, which frees it: the
     * caller only lets go of it, so a destroy "to be safe" is harmless. */
    if ((*self_p)->flags & DIST__R_LENT) {
        *self_p = NULL;
        return;
    }
    dist__result_free(self_p);
}

dist_result_t *dist_result_dup(const dist_result_t *self)
{
    return dist__result_new(self->status, self->data, self->len);
}

int dist_result_status(const dist_result_t *self) { return self->status; }
bool dist_result_ok(const dist_result_t *self) { return self->status == 0; }
const char *dist_result_error(const dist_result_t *self) { return self->status ? self->data : NULL; }

const void *dist_result_data(const dist_result_t *self, size_t *len)
{
    if (len)
        *len = self->status ? 0 : self->len;
    return self->status ? NULL : self->data;
}

const msgpack_object *dist_result_value(dist_result_t *self)
{
    if (self->status)
        return NULL;
    struct decoded *d = atomic_load_explicit(&self->dec, memory_order_acquire);
    if (!d) {
        /* Two threads may decode at once (a callback and a waiter, say):
         * both do the work, the first to publish wins, the other frees. */
        d = malloc(sizeof *d);
        if (!d)
            return NULL;
        d->ok = false;
        if (!msgpack_zone_init(&d->zone, 256)) {
            free(d);
            return NULL;
        }
        size_t off = 0;
        if (self->len && dist__mp_is_one_value(self->data, self->len))
            d->ok = msgpack_unpack(self->data, self->len, &off, &d->zone, &d->obj) ==
                    MSGPACK_UNPACK_SUCCESS;
        struct decoded *expected = NULL;
        if (!atomic_compare_exchange_strong_explicit(&self->dec, &expected, d, memory_order_acq_rel,
                                                     memory_order_acquire)) {
            msgpack_zone_destroy(&d->zone);
            free(d);
            d = expected;
        }
    }
    return d->ok ? &d->obj : NULL;
}

/* Reads a lone number straight from its bytes: map results are mostly
 * numbers, and unpacking each into a zone of its own costs two mallocs.
 * Returns false when the value is not a number (the caller then unpacks). */
static bool s_number(const dist_result_t *self, msgpack_object *o)
{
    return self->len && dist__mp_number(self->data, self->len, o) == self->len;
}

int dist_result_int(dist_result_t *self, int64_t *out)
{
    if (self->status)
        return self->status;
    msgpack_object o;
    return dist_obj_int(s_number(self, &o) ? &o : dist_result_value(self), out);
}

int dist_result_double(dist_result_t *self, double *out)
{
    if (self->status)
        return self->status;
    msgpack_object o;
    return dist_obj_double(s_number(self, &o) ? &o : dist_result_value(self), out);
}

int dist_result_str(dist_result_t *self, const char **s, size_t *n)
{
    return self->status ? self->status : dist_obj_str(dist_result_value(self), s, n);
}

int dist_result_uint(dist_result_t *self, uint64_t *out)
{
    if (self->status)
        return self->status;
    msgpack_object o;
    return dist_obj_uint(s_number(self, &o) ? &o : dist_result_value(self), out);
}

int dist_result_bool(dist_result_t *self, bool *out)
{
    return self->status ? self->status : dist_obj_bool(dist_result_value(self), out);
}

int dist_result_array(dist_result_t *self, const msgpack_object **items, size_t *n)
{
    return self->status ? self->status : dist_obj_array(dist_result_value(self), items, n);
}

/* ---- many results -------------------------------------------------------- */

dist_results_t *dist__results_new(size_t n)
{
    dist_results_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->items = calloc(n ? n : 1, sizeof *self->items);
    if (!self->items) {
        free(self);
        return NULL;
    }
    self->n = n;
    return self;
}

int dist__results_keep(dist_results_t *self, void *buf)
{
    if (self->nbufs == self->capbufs) {
        size_t cap = self->capbufs ? self->capbufs * 2 : 8;
        void **grown = realloc(self->bufs, cap * sizeof *grown);
        if (!grown)
            return DIST_ENOMEM;
        self->bufs = grown;
        self->capbufs = cap;
    }
    self->bufs[self->nbufs++] = buf;
    return 0;
}

void dist_results_destroy(dist_results_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_results_t *self = *self_p;
    for (size_t i = 0; i < self->n; i++)
        dist__result_clear(&self->items[i]);
    for (size_t i = 0; i < self->nbufs; i++)
        free(self->bufs[i]);
    free(self->bufs);
    free(self->items);
    free(self);
    *self_p = NULL;
}

size_t dist_results_count(const dist_results_t *self) { return self->n; }

dist_result_t *dist_results_at(dist_results_t *self, size_t i)
{
    return i < self->n ? &self->items[i] : NULL;
}

int dist_results_status(const dist_results_t *self, size_t *index)
{
    for (size_t i = 0; i < self->n; i++)
        if (self->items[i].status) {
            if (index)
                *index = i;
            return self->items[i].status;
        }
    return 0;
}

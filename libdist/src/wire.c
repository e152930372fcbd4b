/*  wire.c - validate, decode, read and pack MessagePack (see dist/wire.h).
 *
 *  The validator is the security boundary: msgpack_unpack() allocates
 *  whatever its headers claim, so nothing reaches it until one pass here
 *  has proved that every claim is backed by bytes that are really there.
 *  The pass keeps one counter per open container in a fixed array of
 *  DIST_WIRE_DEPTH_MAX entries, so it never recurses and never allocates.
 *
 *  Once validated, a value of N objects makes msgpack_unpack() ask its zone
 *  for at most (N - 1) * sizeof(msgpack_object) bytes: an array of n
 *  elements takes n objects, a map of n pairs 2n, the root none. A
 *  dist_wire_msg_t sizes its zone's first chunk to exactly that, so a
 *  decode costs two allocations (the message and the zone's chunk)
 *  whatever the shape of the value.
 */
#include "dist/wire.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dist/error.h"

/* ---------------------------------------------------------------------- */
/* Limits                                                                 */

dist_wire_limits_t dist_wire_limits_default(void)
{
    dist_wire_limits_t l = {
        .max_depth = DIST_WIRE_DEFAULT_DEPTH,
        .max_objects = DIST_WIRE_DEFAULT_OBJECTS,
        .max_str = SIZE_MAX,
    };
    return l;
}

/* The limits in force: NULL and 0 fields become defaults, and the depth is
 * capped at what both our counter array and msgpack-c's stack can hold. */
static dist_wire_limits_t s_limits(const dist_wire_limits_t *in)
{
    dist_wire_limits_t l = dist_wire_limits_default();
    if (in) {
        if (in->max_depth)
            l.max_depth = in->max_depth;
        if (in->max_objects)
            l.max_objects = in->max_objects;
        if (in->max_str)
            l.max_str = in->max_str;
    }
    if (l.max_depth > DIST_WIRE_DEPTH_MAX)
        l.max_depth = DIST_WIRE_DEPTH_MAX;
    return l;
}

/* ---------------------------------------------------------------------- */
/* Validation                                                             */

/* How a type byte's value continues after it. */
enum s_kind {
    S_FIXED,  /* `size` more bytes, nothing else (ints, floats, nil, bool) */
    S_STR,    /* `size`-byte big-endian length, then that many bytes (str, bin) */
    S_EXT,    /* `size`-byte length, a type byte, then length bytes */
    S_FIXEXT, /* a type byte, then `size` bytes */
    S_ARRAY,  /* `size`-byte big-endian count of values follows */
    S_MAP,    /* `size`-byte count of key/value pairs follows */
    S_BAD,
};

struct s_type {
    uint8_t kind;
    uint8_t size;
};

/* The 0xc0..0xdf range, where each byte has its own meaning; the fix*
 * ranges are decoded arithmetically in s_value(). */
static const struct s_type s_types[32] = {
    [0x00] = { S_FIXED, 0 },  /* nil */
    [0x01] = { S_BAD, 0 },    /* never used */
    [0x02] = { S_FIXED, 0 },  /* false */
    [0x03] = { S_FIXED, 0 },  /* true */
    [0x04] = { S_STR, 1 },    /* bin 8 */
    [0x05] = { S_STR, 2 },    /* bin 16 */
    [0x06] = { S_STR, 4 },    /* bin 32 */
    [0x07] = { S_EXT, 1 },    /* ext 8 */
    [0x08] = { S_EXT, 2 },    /* ext 16 */
    [0x09] = { S_EXT, 4 },    /* ext 32 */
    [0x0a] = { S_FIXED, 4 },  /* float 32 */
    [0x0b] = { S_FIXED, 8 },  /* float 64 */
    [0x0c] = { S_FIXED, 1 },  /* uint 8 */
    [0x0d] = { S_FIXED, 2 },  /* uint 16 */
    [0x0e] = { S_FIXED, 4 },  /* uint 32 */
    [0x0f] = { S_FIXED, 8 },  /* uint 64 */
    [0x10] = { S_FIXED, 1 },  /* int 8 */
    [0x11] = { S_FIXED, 2 },  /* int 16 */
    [0x12] = { S_FIXED, 4 },  /* int 32 */
    [0x13] = { S_FIXED, 8 },  /* int 64 */
    [0x14] = { S_FIXEXT, 1 }, /* fixext 1 */
    [0x15] = { S_FIXEXT, 2 }, /* fixext 2 */
    [0x16] = { S_FIXEXT, 4 }, /* fixext 4 */
    [0x17] = { S_FIXEXT, 8 }, /* fixext 8 */
    [0x18] = { S_FIXEXT, 16 },/* fixext 16 */
    [0x19] = { S_STR, 1 },    /* str 8 */
    [0x1a] = { S_STR, 2 },    /* str 16 */
    [0x1b] = { S_STR, 4 },    /* str 32 */
    [0x1c] = { S_ARRAY, 2 },  /* array 16 */
    [0x1d] = { S_ARRAY, 4 },  /* array 32 */
    [0x1e] = { S_MAP, 2 },    /* map 16 */
    [0x1f] = { S_MAP, 4 },    /* map 32 */
};

static uint64_t s_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Checks one value starting at *pp and advances *pp past it, adding the
 * values it contains to *objects. Each header is checked against the bytes
 * left before anything is skipped, so no length can move p past `end`. */
static int s_value(const uint8_t **pp, const uint8_t *end, const dist_wire_limits_t *lim,
                   size_t *objects)
{
    const uint8_t *p = *pp;
    uint64_t left[DIST_WIRE_DEPTH_MAX]; /* values still expected per open container */
    size_t top = 0;                     /* open containers */

    do {
        if (p == end)
            return DIST_EPROTO;
        if (*objects >= lim->max_objects)
            return DIST_EMSGSIZE;
        ++*objects;
        uint8_t b = *p++;
        size_t avail = (size_t)(end - p);
        struct s_type t;
        uint64_t n; /* payload bytes, or elements for a container */

        if (b <= 0x7f || b >= 0xe0) {
            t = (struct s_type){ S_FIXED, 0 }; /* positive / negative fixint */
            n = 0;
        } else if (b <= 0x8f) {
            t = (struct s_type){ S_MAP, 0 };
            n = b & 0x0f;
        } else if (b <= 0x9f) {
            t = (struct s_type){ S_ARRAY, 0 };
            n = b & 0x0f;
        } else if (b <= 0xbf) {
            t = (struct s_type){ S_STR, 0 };
            n = b & 0x1f;
        } else {
            t = s_types[b - 0xc0];
            if (t.kind == S_BAD)
                return DIST_EPROTO;
            n = t.size;
            /* Headers with an explicit length or count: read it. */
            if (t.kind == S_STR || t.kind == S_EXT || t.kind == S_ARRAY || t.kind == S_MAP) {
                if (avail < t.size)
                    return DIST_EPROTO;
                n = s_be(p, t.size);
                p += t.size;
                avail -= t.size;
            }
        }

        if (t.kind == S_ARRAY || t.kind == S_MAP) {
            uint64_t elems = t.kind == S_MAP ? 2 * n : n; /* n < 2^32: no overflow */
            /* Every element takes at least one byte: a count the buffer
             * cannot hold is a lie, whatever the limits. */
            if (elems > avail)
                return DIST_EPROTO;
            if (top == lim->max_depth || elems > lim->max_objects - *objects)
                return DIST_EMSGSIZE;
            if (elems > 0) {
                left[top++] = elems;
                continue; /* read its first element */
            }
        } else {
            uint64_t payload = n; /* the limit applies to the data, not the type byte */
            if (t.kind == S_EXT || t.kind == S_FIXEXT)
                n += 1;
            if (n > avail)
                return DIST_EPROTO;
            if (t.kind != S_FIXED && payload > lim->max_str)
                return DIST_EMSGSIZE;
            p += n;
        }
        /* A value is complete: it completes every container it was the
         * last element of. */
        while (top > 0 && --left[top - 1] == 0)
            top--;
    } while (top > 0);

    *pp = p;
    return 0;
}

/* Validates one value (seq false) or a sequence of values (seq true).
 * Returns the number of values or a negative code; *objects gets the
 * total number of objects. */
static int s_validate(const void *buf, size_t len, const dist_wire_limits_t *limits, bool seq,
                      size_t *objects)
{
    *objects = 0;
    if (!buf && len > 0)
        return DIST_EINVAL;
    if (len == 0)
        return DIST_EPROTO;
    dist_wire_limits_t lim = s_limits(limits);
    const uint8_t *p = buf;
    const uint8_t *end = p + len;
    int count = 0;
    do {
        if (count == INT_MAX)
            return DIST_EMSGSIZE;
        int rc = s_value(&p, end, &lim, objects);
        if (rc)
            return rc;
        count++;
    } while (seq && p < end);
    if (p != end)
        return DIST_EPROTO; /* trailing bytes after the one value */
    return count;
}

int dist_wire_validate(const void *buf, size_t len, const dist_wire_limits_t *limits)
{
    size_t objects;
    int rc = s_validate(buf, len, limits, false, &objects);
    return rc < 0 ? rc : 0;
}

int dist_wire_validate_seq(const void *buf, size_t len, const dist_wire_limits_t *limits)
{
    size_t objects;
    return s_validate(buf, len, limits, true, &objects);
}

/* ---------------------------------------------------------------------- */
/* Decoding                                                               */

/* Unpacks a buffer that has passed validation. */
static int s_unpack(const void *buf, size_t len, msgpack_zone *zone, msgpack_object *out)
{
    size_t off = 0;
    msgpack_object obj;
    msgpack_unpack_return r = msgpack_unpack(buf, len, &off, zone, &obj);
    if (r == MSGPACK_UNPACK_SUCCESS && off == len) {
        *out = obj;
        return 0;
    }
    /* After validation the one way left to fail is the zone running out of
     * memory, which msgpack_unpack() reports as a parse error. */
    return r == MSGPACK_UNPACK_PARSE_ERROR || r == MSGPACK_UNPACK_NOMEM_ERROR ? DIST_ENOMEM
                                                                                : DIST_EPROTO;
}

int dist_wire_decode(const void *buf, size_t len, const dist_wire_limits_t *limits,
                     msgpack_zone *zone, msgpack_object *out)
{
    /* A zone with chunk_size 0 would make msgpack-c double 0 forever when
     * it needs a new chunk. */
    if (!zone || !out || zone->chunk_size == 0)
        return DIST_EINVAL;
    int rc = dist_wire_validate(buf, len, limits);
    if (rc)
        return rc;
    return s_unpack(buf, len, zone, out);
}

struct dist_wire_msg {
    msgpack_zone zone;
    msgpack_object root;
    size_t len;
    unsigned char data[]; /* the message's own copy of the bytes */
};

/* Zone bytes the objects need, plus room for the alignment the zone adds
 * to its chunk's start. Never 0: msgpack_zone_init wants a real chunk. */
static size_t s_zone_size(size_t objects)
{
    return (objects - 1) * sizeof(msgpack_object) + 64;
}

dist_wire_msg_t *dist_wire_msg_decode(const void *buf, size_t len,
                                      const dist_wire_limits_t *limits, int *err)
{
    size_t objects;
    int rc = s_validate(buf, len, limits, false, &objects);
    dist_wire_msg_t *self = NULL;
    if (rc < 0)
        goto fail;
    /* objects <= len, so the zone size cannot overflow unless len is
     * within a factor of 24 of SIZE_MAX, which no malloc could satisfy. */
    rc = DIST_ENOMEM;
    if (len > SIZE_MAX - sizeof *self || objects > (SIZE_MAX - 64) / sizeof(msgpack_object))
        goto fail;
    self = malloc(sizeof *self + len);
    if (!self)
        goto fail;
    memcpy(self->data, buf, len);
    self->len = len;
    if (!msgpack_zone_init(&self->zone, s_zone_size(objects))) {
        free(self);
        self = NULL;
        goto fail;
    }
    rc = s_unpack(self->data, len, &self->zone, &self->root);
    if (rc) {
        dist_wire_msg_destroy(&self);
        goto fail;
    }
    if (err)
        *err = 0;
    return self;
fail:
    if (err)
        *err = rc;
    errno = -rc;
    return NULL;
}

void dist_wire_msg_destroy(dist_wire_msg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_wire_msg_t *self = *self_p;
    msgpack_zone_destroy(&self->zone);
    free(self);
    *self_p = NULL;
}

const msgpack_object *dist_wire_msg_root(const dist_wire_msg_t *self)
{
    return &self->root;
}

const void *dist_wire_msg_data(const dist_wire_msg_t *self, size_t *len)
{
    if (len)
        *len = self->len;
    return self->data;
}

/* ---------------------------------------------------------------------- */
/* Accessors                                                              */

static bool s_str_eq(const msgpack_object *obj, const char *s, size_t len)
{
    return obj->type == MSGPACK_OBJECT_STR && obj->via.str.size == len &&
           (len == 0 || memcmp(obj->via.str.ptr, s, len) == 0);
}

const msgpack_object *dist_wire_map_get(const msgpack_object *obj, const char *key)
{
    if (!obj || !key || obj->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < obj->via.map.size; i++) {
        const msgpack_object_kv *kv = &obj->via.map.ptr[i];
        if (s_str_eq(&kv->key, key, klen))
            return &kv->val;
    }
    return NULL;
}

bool dist_wire_str_eq(const msgpack_object *obj, const char *s)
{
    return obj && s && s_str_eq(obj, s, strlen(s));
}

int dist_wire_get_u64(const msgpack_object *obj, uint64_t *out)
{
    if (!obj || obj->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return DIST_EPROTO;
    *out = obj->via.u64;
    return 0;
}

int dist_wire_get_i64(const msgpack_object *obj, int64_t *out)
{
    if (!obj)
        return DIST_EPROTO;
    if (obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (obj->via.u64 > INT64_MAX)
            return DIST_EPROTO;
        *out = (int64_t)obj->via.u64;
        return 0;
    }
    if (obj->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        *out = obj->via.i64;
        return 0;
    }
    return DIST_EPROTO;
}

int dist_wire_get_f64(const msgpack_object *obj, double *out)
{
    if (!obj)
        return DIST_EPROTO;
    switch (obj->type) {
    case MSGPACK_OBJECT_FLOAT32: /* msgpack-c widens float32 into via.f64 */
    case MSGPACK_OBJECT_FLOAT64: *out = obj->via.f64; return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)obj->via.u64; return 0;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)obj->via.i64; return 0;
    default: return DIST_EPROTO;
    }
}

int dist_wire_get_bool(const msgpack_object *obj, bool *out)
{
    if (!obj || obj->type != MSGPACK_OBJECT_BOOLEAN)
        return DIST_EPROTO;
    *out = obj->via.boolean;
    return 0;
}

int dist_wire_get_str(const msgpack_object *obj, const char **ptr, size_t *len)
{
    if (!obj || obj->type != MSGPACK_OBJECT_STR)
        return DIST_EPROTO;
    /* msgpack-c leaves ptr NULL for an empty str; a caller's
     * memcpy(dst, ptr, 0) would then be undefined behaviour. */
    *ptr = obj->via.str.size ? obj->via.str.ptr : "";
    *len = obj->via.str.size;
    return 0;
}

int dist_wire_get_bin(const msgpack_object *obj, const void **ptr, size_t *len)
{
    if (!obj || obj->type != MSGPACK_OBJECT_BIN)
        return DIST_EPROTO;
    *ptr = obj->via.bin.size ? obj->via.bin.ptr : ""; /* NULL when empty, as for str */
    *len = obj->via.bin.size;
    return 0;
}

int dist_wire_get_array(const msgpack_object *obj, const msgpack_object **items, size_t *n)
{
    if (!obj || obj->type != MSGPACK_OBJECT_ARRAY)
        return DIST_EPROTO;
    /* msgpack-c leaves a pointer to a zero-byte zone block for an empty
     * array; NULL says plainly that there is nothing to read. */
    *n = obj->via.array.size;
    *items = *n ? obj->via.array.ptr : NULL;
    return 0;
}

int dist_wire_get_map(const msgpack_object *obj, const msgpack_object_kv **entries, size_t *n)
{
    if (!obj || obj->type != MSGPACK_OBJECT_MAP)
        return DIST_EPROTO;
    *n = obj->via.map.size;
    *entries = *n ? obj->via.map.ptr : NULL;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Output buffer                                                          */

struct dist_wire_buf {
    msgpack_packer pk; /* its data pointer is this buffer */
    char *data;
    size_t len, cap;
    size_t max; /* SIZE_MAX: no limit */
    int err;    /* first write failure, sticky until reset */
};

#define S_BUF_MIN 256

/* The packer's write callback. msgpack_pack_* return what it returns, so
 * -1 makes every pack call after a failure fail as well. */
static int s_buf_write(void *data, const char *buf, size_t len)
{
    dist_wire_buf_t *self = data;
    if (self->err)
        return -1;
    if (len == 0)
        return 0; /* an empty str body comes with buf NULL: memcpy must not see it */
    if (len > self->max - self->len) {
        self->err = DIST_EMSGSIZE;
        return -1;
    }
    if (len > self->cap - self->len) {
        size_t need = self->len + len; /* <= max, no overflow */
        size_t cap = self->cap ? self->cap : S_BUF_MIN;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        if (cap > self->max)
            cap = self->max;
        char *p = realloc(self->data, cap);
        if (!p) {
            self->err = DIST_ENOMEM;
            return -1;
        }
        self->data = p;
        self->cap = cap;
    }
    memcpy(self->data + self->len, buf, len);
    self->len += len;
    return 0;
}

dist_wire_buf_t *dist_wire_buf_new(size_t max_size)
{
    dist_wire_buf_t *self = calloc(1, sizeof *self);
    if (!self) {
        errno = ENOMEM;
        return NULL;
    }
    self->max = max_size ? max_size : SIZE_MAX;
    msgpack_packer_init(&self->pk, self, s_buf_write);
    return self;
}

void dist_wire_buf_destroy(dist_wire_buf_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->data);
    free(*self_p);
    *self_p = NULL;
}

msgpack_packer *dist_wire_buf_packer(dist_wire_buf_t *self)
{
    return &self->pk;
}

int dist_wire_buf_status(const dist_wire_buf_t *self)
{
    return self->err;
}

const void *dist_wire_buf_data(const dist_wire_buf_t *self, size_t *len)
{
    if (len)
        *len = self->len;
    return self->data;
}

void dist_wire_buf_reset(dist_wire_buf_t *self)
{
    self->len = 0;
    self->err = 0;
}

void *dist_wire_buf_release(dist_wire_buf_t *self, size_t *len)
{
    void *data = self->len ? self->data : NULL;
    if (len)
        *len = self->len;
    if (data) {
        self->data = NULL;
        self->cap = 0;
    }
    self->len = 0;
    self->err = 0;
    return data;
}

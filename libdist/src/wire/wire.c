/*  wire.c - validate, decode, read and pack MessagePack (see dist/wire.h).
 *
 *  The validator is the security boundary: msgpack_unpack() allocates
 *  whatever its headers claim, so nothing reaches it until one pass of
 *  mpcheck.c has proved that every claim is backed by bytes that are really
 *  there. That pass never recurses and never allocates.
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
#include "dist/value.h"
#include "mpcheck_internal.h"

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

/* The validator itself is mpcheck.c, shared with the Pool. */
static int s_validate(const void *buf, size_t len, const dist_wire_limits_t *limits, bool seq,
                      size_t *objects)
{
    dist_wire_limits_t l = s_limits(limits);
    dist__mp_limits_t lim = { l.max_depth, l.max_objects, l.max_str };
    return dist__mp_validate(buf, len, &lim, seq, objects);
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

/* The typed reads are value.c's (dist_obj_*), with the protocol's error. */
static int s_proto(int rc) { return rc ? DIST_EPROTO : 0; }

int dist_wire_get_u64(const msgpack_object *obj, uint64_t *out) { return s_proto(dist_obj_uint(obj, out)); }
int dist_wire_get_i64(const msgpack_object *obj, int64_t *out) { return s_proto(dist_obj_int(obj, out)); }
int dist_wire_get_f64(const msgpack_object *obj, double *out) { return s_proto(dist_obj_double(obj, out)); }
int dist_wire_get_bool(const msgpack_object *obj, bool *out) { return s_proto(dist_obj_bool(obj, out)); }

int dist_wire_get_str(const msgpack_object *obj, const char **ptr, size_t *len)
{
    return s_proto(dist_obj_str(obj, ptr, len));
}

int dist_wire_get_bin(const msgpack_object *obj, const void **ptr, size_t *len)
{
    return s_proto(dist_obj_bin(obj, ptr, len));
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

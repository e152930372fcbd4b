/*  mpcheck_internal.h - one allocation-free pass that proves a buffer holds
 *  well-formed MessagePack within limits, before msgpack-c may see it.
 *  Public callers use dist_wire_validate() (dist/wire.h); the Pool calls
 *  this directly on task arguments and results from its processes. */
#ifndef DIST_MPCHECK_INTERNAL_H_INCLUDED
#define DIST_MPCHECK_INTERNAL_H_INCLUDED

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* msgpack-c's own nesting limit (its unpack stack). */
#define DIST__MP_DEPTH_MAX 32

typedef struct {
    size_t max_depth;   /* open containers at once (capped at DIST__MP_DEPTH_MAX) */
    size_t max_objects; /* values in all, containers and their elements */
    size_t max_str;     /* bytes of one str, bin or ext payload */
} dist__mp_limits_t;

/* Validates one value (seq false: exactly one, no trailing bytes) or values
 * back to back (seq true). Returns the number of values, or DIST_EPROTO
 * (malformed), DIST_EMSGSIZE (over a limit), DIST_EINVAL (NULL buffer).
 * *objects gets the number of objects seen. */
int dist__mp_validate(const void *buf, size_t len, const dist__mp_limits_t *limits, bool seq,
                      size_t *objects);

/* True when buf[0..len) is exactly one well-formed value within msgpack-c's
 * nesting limit (no other limit: len bounds the rest). */
bool dist__mp_is_one_value(const void *buf, size_t len);

/* Decodes the number (an int or float of any width) that buf starts with
 * into *o, the way msgpack_unpack() would: non-negative signed ints are
 * POSITIVE_INTEGER, a float32 is widened into via.f64. Returns the bytes it
 * took, or 0 when buf does not start with a whole number. For the fast
 * paths that skip msgpack_unpack() on scalars (task arguments, results);
 * inline because they run once per value. */
static inline size_t dist__mp_number(const void *buf, size_t len, msgpack_object *o)
{
    const unsigned char *p = buf;
    if (len == 0)
        return 0;
    unsigned char b = p[0];
    if (b <= 0x7f) {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = b;
        return 1;
    }
    if (b >= 0xe0) {
        o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
        o->via.i64 = (int8_t)b;
        return 1;
    }
    size_t w;
    switch (b) {
    case 0xcc: case 0xd0: w = 1; break;
    case 0xcd: case 0xd1: w = 2; break;
    case 0xce: case 0xd2: case 0xca: w = 4; break;
    case 0xcf: case 0xd3: case 0xcb: w = 8; break;
    default: return 0;
    }
    if (len - 1 < w)
        return 0;
    uint64_t u = 0;
    for (size_t i = 1; i <= w; i++)
        u = u << 8 | p[i];
    if (b == 0xca) {
        uint32_t u32 = (uint32_t)u;
        float f;
        memcpy(&f, &u32, sizeof f);
        o->type = MSGPACK_OBJECT_FLOAT32;
        o->via.f64 = f;
    } else if (b == 0xcb) {
        o->type = MSGPACK_OBJECT_FLOAT64;
        memcpy(&o->via.f64, &u, sizeof u);
    } else if (b >= 0xd0) { /* signed: sign-extend from w bytes */
        int64_t v = (int64_t)(u << (64 - 8 * w)) >> (64 - 8 * w);
        o->type = v < 0 ? MSGPACK_OBJECT_NEGATIVE_INTEGER : MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.i64 = v;
    } else {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = u;
    }
    return 1 + w;
}

#endif

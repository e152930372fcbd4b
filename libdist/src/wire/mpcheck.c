/*  mpcheck.c - the MessagePack validator (see mpcheck_internal.h).
 *
 *  This is the security boundary for every MessagePack buffer that comes
 *  from another process or host: msgpack_unpack() allocates whatever its
 *  headers claim, so nothing reaches it until one pass here has proved that
 *  every claim is backed by bytes that are really there. The pass keeps one
 *  counter per open container in a fixed array of DIST__MP_DEPTH_MAX
 *  entries, so it never recurses and never allocates. The Pool uses it on
 *  task arguments and results; the wire codec (wire.c) on network frames.
 */
#include "mpcheck_internal.h"

#include <limits.h>
#include <stdint.h>

#include "dist/error.h"

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
static int s_value(const uint8_t **pp, const uint8_t *end, const dist__mp_limits_t *lim,
                   size_t *objects)
{
    const uint8_t *p = *pp;
    uint64_t left[DIST__MP_DEPTH_MAX]; /* values still expected per open container */
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

int dist__mp_validate(const void *buf, size_t len, const dist__mp_limits_t *limits, bool seq,
                      size_t *objects)
{
    *objects = 0;
    if (!buf && len > 0)
        return DIST_EINVAL;
    if (len == 0)
        return DIST_EPROTO;
    dist__mp_limits_t lim = *limits;
    if (lim.max_depth > DIST__MP_DEPTH_MAX)
        lim.max_depth = DIST__MP_DEPTH_MAX;
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

/* Bytes a lone scalar takes, from its first byte; 0 when not a scalar of
 * fixed size. */
static size_t s_scalar_size(uint8_t b)
{
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return 1;
    switch (b) {
    case 0xcc: case 0xd0: return 2;
    case 0xcd: case 0xd1: return 3;
    case 0xca: case 0xce: case 0xd2: return 5;
    case 0xcb: case 0xcf: case 0xd3: return 9;
    default: return 0;
    }
}

bool dist__mp_is_one_value(const void *buf, size_t len)
{
    /* The common result is one number: settle it without the general pass. */
    size_t scalar = len ? s_scalar_size(*(const uint8_t *)buf) : 0;
    if (scalar)
        return scalar == len;
    static const dist__mp_limits_t any = { DIST__MP_DEPTH_MAX, SIZE_MAX, SIZE_MAX };
    size_t objects;
    return dist__mp_validate(buf, len, &any, false, &objects) == 1;
}

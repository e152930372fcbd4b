/*  mpcheck_internal.h - one allocation-free pass that proves a buffer holds
 *  well-formed MessagePack within limits, before msgpack-c may see it.
 *  Public callers use dist_wire_validate() (dist/wire.h); the Pool calls
 *  this directly on task arguments and results from its processes. */
#ifndef DIST_MPCHECK_INTERNAL_H_INCLUDED
#define DIST_MPCHECK_INTERNAL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

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

#endif

/*  mpjson_internal.h - MessagePack to JSON (jansson), for the metrics
 *  endpoint's /api/status and for anything else that shows a decoded
 *  message as JSON (e.g. `dist status --json`), so that both agree.
 *
 *  The conversion is total: every MessagePack value has a JSON form.
 *      nil, bool               null, true / false
 *      int                     integer; a positive one above INT64_MAX
 *                              becomes a real (JSON readers lose such
 *                              precision anyway)
 *      float                   real; NaN and infinities become null
 *      str                     string; invalid UTF-8 sequences become
 *                              U+FFFD (JSON text must be UTF-8)
 *      bin                     string, standard base64 with padding
 *      ext                     object {"ext_type": int, "data": base64}
 *      array, map              array, object; a map key that is not a str
 *                              is written as the compact JSON text of its
 *                              value (1 -> "1"); of repeated keys the first
 *                              wins, as in dist_wire_map_get
 *
 *  Nothing here keeps state; the functions are reentrant.
 */
#ifndef DIST_MPJSON_INTERNAL_H_INCLUDED
#define DIST_MPJSON_INTERNAL_H_INCLUDED

#include <jansson.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>

#include "utf8_internal.h"

/* The JSON form of o (a new reference, json_decref it), or NULL when out
 * of memory. o must come from a validated decode (its depth is bounded:
 * the conversion recurses once per level). */
json_t *dist__mp_to_json(const msgpack_object *o);

/* Standard base64 with padding of p[0..n) into out, which must hold
 * 4 * ((n + 2) / 3) + 1 bytes; NUL-terminated. Returns the length. */
size_t dist__base64(const void *p, size_t n, char *out);

#endif

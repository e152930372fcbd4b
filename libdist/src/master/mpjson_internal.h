/*  mpjson_internal.h - MessagePack to JSON (jansson) for the metrics
 *  endpoint's /api/status: the form for reading, by the dashboard, by
 *  scripts with curl and jq, never fed back to anything.
 *
 *  It differs on purpose from the dist command line's form (cli/json.h,
 *  used by `dist status --json` and for task values), which must
 *  round-trip and so marks bin and ext as {"$bin": ...} and {"$ext": ...}
 *  objects. Here a bin is a bare base64 string: a reader wants the value,
 *  and /api/status (docs/OBSERVABILITY.md "JSON forms") is a documented
 *  schema the dashboard reads as it is. They also differ in two details:
 *  the command line prints reals with the fewest digits that read back
 *  exactly (0.1; here jansson's 17 digits), and keeps a NUL in a str map
 *  key (U+FFFD here). The rest is the same in both.
 *
 *  The conversion is total: every MessagePack value has a JSON form.
 *      nil, bool               null, true / false
 *      int                     integer; a positive one above INT64_MAX
 *                              becomes a real (JSON readers lose such
 *                              precision anyway)
 *      float32, float64        real, printed by jansson with 17 significant
 *                              digits (0.1 is 0.10000000000000001, 1.0 is
 *                              1.0; a float32 is widened first); NaN and
 *                              infinities become null (JSON has no such
 *                              numbers)
 *      str                     string; each byte of an invalid UTF-8
 *                              sequence (overlongs and surrogates
 *                              included) becomes U+FFFD, since JSON text
 *                              must be UTF-8; NUL bytes stay (\u0000)
 *      bin                     string, standard base64 with padding
 *      ext                     object {"ext_type": T, "data": "<base64>"}
 *      array, map              array, object; a map key that is not a str
 *                              is written as the compact JSON text of its
 *                              value here (1 -> "1", a bin -> "\"AQ==\"");
 *                              in a str key invalid UTF-8 and NUL become
 *                              U+FFFD; of repeated keys (also keys that
 *                              print alike, 1 and "1") the first wins, as
 *                              in dist_wire_map_get
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

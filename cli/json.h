/*  json.h - how the dist command line maps JSON to MessagePack and back.
 *
 *  This is the command line's JSON form, made to round-trip: what dist
 *  prints (`dist submit` and `dist result` values, `dist map` lines,
 *  `dist status --json`) can be given back to dist as arguments and packs
 *  to the same MessagePack. It differs on purpose from the form of the
 *  metrics endpoint's /api/status (libdist/src/master/mpjson_internal.h,
 *  docs/OBSERVABILITY.md "JSON forms"), which is for reading and is never
 *  fed back: there a bin is a bare base64 string, indistinguishable from
 *  a str, and an ext is {"ext_type": T, "data": ...}; here both are
 *  marked objects that the way in recognises. They also differ in two
 *  details: reals print here with the fewest digits that read back
 *  exactly (0.1, where /api/status has jansson's 17 digits,
 *  0.10000000000000001), for people and for scripts comparing values; and
 *  a NUL in a str map key stays a NUL here (\u0000) but becomes U+FFFD
 *  there (jansson's plain object keys are C strings). Everything else
 *  below is the same in both. README "JSON in and out" is the user's
 *  summary.
 *
 *  JSON to MessagePack:
 *      null, true / false      nil, bool
 *      integer                 int; above INT64_MAX up to 2^64-1, uint64
 *                              (jansson stops at int64: cli_json_load
 *                              carries such a number as a tagged string);
 *                              anything beyond is an error
 *      real                    float64 (one beyond a double is an error)
 *      string                  str (\u0000 becomes a NUL byte)
 *      array                   array
 *      object                  map with str keys, in the text's order; of
 *                              repeated keys jansson keeps the last
 *      {"$bin": "<base64>"}    bin
 *      {"$ext": T, "data": "<base64>"}   ext of type T (-128..127)
 *  The last two only for an object of exactly those keys with valid values
 *  (standard base64 with padding); anything else is an ordinary map.
 *
 *  MessagePack to JSON, the reverse:
 *      nil, bool, int          null, true / false, integer; a positive int
 *                              above INT64_MAX prints as its exact digits
 *                              (cli_json_text)
 *      float32, float64        real; cli_json_text prints the fewest
 *                              significant digits that read back as the
 *                              same double (one precision for a whole
 *                              text: the most that any of its reals
 *                              needs), a float32 widened first (0.1f is
 *                              0.10000000149011612); NaN and infinities
 *                              become null (JSON has no such numbers)
 *      str                     string; each byte of an invalid UTF-8
 *                              sequence (overlongs and surrogates
 *                              included) becomes U+FFFD, since JSON text
 *                              is UTF-8; NUL bytes stay (\u0000)
 *      bin                     {"$bin": "<base64>"}
 *      ext                     {"$ext": T, "data": "<base64>"}
 *      array, map              array, object; a map key that is not a str
 *                              becomes the compact JSON text of its own
 *                              form ({1: "a"} -> {"1": "a"}, a bin key ->
 *                              "{\"$bin\":\"...\"}"); of repeated keys
 *                              (also keys that print alike, 1 and "1")
 *                              the first wins, as in dist_wire_map_get
 *  Only those last cases do not round-trip: NaN and
 *  infinities, invalid UTF-8, keys that are not str, repeated keys.
 *
 *  Parsing is jansson's; cli_json_load only looks, outside strings, for
 *  integers too large for jansson's int64 before handing it the text.
 */
#ifndef DIST_CLI_JSON_H_INCLUDED
#define DIST_CLI_JSON_H_INCLUDED

#include <jansson.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

/* Packs v as one MessagePack value. 0, or -1 with a one-line reason in
 * err (the packer may then hold part of the value). */
int cli_json_pack(const json_t *v, msgpack_packer *pk, char *err, size_t errlen);

/* jansson's json_loadb (one value of any type, NUL allowed in strings)
 * that also takes integers above INT64_MAX up to 2^64-1. */
json_t *cli_json_load(const char *text, size_t len, json_error_t *je);

/* Parses `text` (one JSON value, nothing after it) and packs it. 0, or -1
 * with jansson's reason (and the column) in err. */
int cli_json_pack_text(const char *text, msgpack_packer *pk, char *err, size_t errlen);

/* A new JSON value for a MessagePack object (the caller decrefs it), or
 * NULL when out of memory. */
json_t *cli_json_from_msgpack(const msgpack_object *o);

/* The compact one-line text of v (any JSON value, not only objects and
 * arrays), reals with the fewest digits that read back exactly. flags are
 * extra json_dumps flags (e.g. JSON_INDENT(2)). malloc'd; NULL on ENOMEM. */
char *cli_json_text(const json_t *v, size_t flags);

/* Standard base64 with padding. encode: malloc'd, NUL-terminated, NULL on
 * ENOMEM. decode: 0 with a malloc'd buffer, -1 for invalid input. */
char *cli_base64_encode(const void *data, size_t len);
int cli_base64_decode(const char *s, size_t len, uint8_t **out, size_t *outlen);

#endif

/*  json.h - how the dist command line maps JSON to MessagePack and back.
 *
 *  JSON to MessagePack: null, true/false, integers (int64, and uint64 above
 *  INT64_MAX up to 2^64-1), reals
 *  (float64), strings (str, NUL bytes included), arrays, and objects (maps
 *  with str keys). Two object forms stand for the MessagePack types JSON
 *  lacks, so that what dist prints can be fed back in:
 *    {"$bin": "<base64>"}                 -> bin
 *    {"$ext": <type -128..127>, "data": "<base64>"} -> ext
 *  (an object of exactly those keys with valid values; anything else is an
 *  ordinary map).
 *
 *  MessagePack to JSON: the reverse (unsigned integers above INT64_MAX are
 *  printed as their exact digits by cli_json_text), plus: float NaN and infinities become null, a map key
 *  that is not a str becomes its JSON text ({1: "a"} -> {"1": "a"}), and
 *  invalid UTF-8 in a str is replaced by U+FFFD (JSON text is UTF-8).
 *
 *  Parsing is jansson's; nothing here parses JSON by hand.
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

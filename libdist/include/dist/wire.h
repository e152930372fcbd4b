/*  dist/wire.h - the MessagePack codec every network frame goes through.
 *
 *  msgpack-c trusts its input: a 5-byte array32 header makes it reserve
 *  8 GiB, 32 nested array16 headers 64 MiB, and nothing bounds nesting
 *  below its compile-time stack of 32. So every frame from a peer is first
 *  checked by dist_wire_validate(): one pass over the bytes that allocates
 *  nothing and proves the buffer holds exactly one well-formed value within
 *  the given limits. Only then is it handed to msgpack_unpack(), whose
 *  memory use is then proportional to the number of objects (about 24 bytes
 *  each), which the limits and the buffer length both bound.
 *
 *  Decoding comes in two forms. dist_wire_decode() unpacks into a zone the
 *  caller provides and borrows from the input (zero copy). A
 *  dist_wire_msg_t copies the input and owns its zone, so one destroy call
 *  frees everything and nothing dangles when the frame goes away.
 *
 *  The accessors (dist_wire_get_*, dist_wire_map_get) read protocol fields
 *  without trusting their types: a wrong type, a missing field (a NULL
 *  object) or an out-of-range number is DIST_EPROTO, never a crash. They
 *  chain: dist_wire_get_u64(dist_wire_map_get(root, "id"), &id) fails
 *  cleanly when "id" is absent.
 *
 *  dist_wire_buf_t is a growable output buffer with an embedded
 *  msgpack_packer and an optional size limit; pack into it with the
 *  msgpack_pack_* functions and check for failure once at the end.
 *
 *  Threads: every function is reentrant. A decoded message or a buffer is
 *  used by one thread at a time; several threads may read one decoded
 *  message at once, since reading never modifies it. There is no global
 *  state, so the codec works the same in a forked child. Nothing here
 *  blocks.
 */
#ifndef DIST_WIRE_H_INCLUDED
#define DIST_WIRE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Deepest nesting msgpack-c can decode (its MSGPACK_EMBED_STACK_SIZE): a
 * max_depth above this is treated as this. */
#define DIST_WIRE_DEPTH_MAX 32

/* Defaults used for a NULL limits pointer or a field left at 0. */
#define DIST_WIRE_DEFAULT_DEPTH   16
#define DIST_WIRE_DEFAULT_OBJECTS 1000000

/* Limits checked by dist_wire_validate(). A field set to 0 takes its
 * default, so `dist_wire_limits_t l = { .max_depth = 4 };` is complete. */
typedef struct {
    /* Deepest nesting of containers: a scalar alone is depth 0, `[]` and
     * `[1]` are 1, `{"a": [1]}` is 2. Empty containers count too. Default
     * DIST_WIRE_DEFAULT_DEPTH, at most DIST_WIRE_DEPTH_MAX. */
    size_t max_depth;
    /* Most values in total, containers, map keys and map values included:
     * `[1, {"a": 2}]` is 5. Default DIST_WIRE_DEFAULT_OBJECTS. For
     * dist_wire_validate_seq() the total over the whole sequence. */
    size_t max_objects;
    /* Longest str, bin or ext payload in bytes. Default SIZE_MAX: no limit
     * beyond the buffer's length. */
    size_t max_str;
} dist_wire_limits_t;

/* The defaults, with every field filled in. Thread-safe. */
DIST_EXPORT dist_wire_limits_t dist_wire_limits_default(void);

/* Checks that buf[0..len) holds exactly one MessagePack value - no byte
 * missing, none left over - within `limits` (NULL: the defaults). Every
 * type byte must be valid (0xc1 is not), every str/bin/ext length must fit
 * in the bytes that remain, and every array count (twice the count for a
 * map) must not exceed them. Allocates nothing, recurses nowhere, reads
 * each byte at most once.
 * Returns 0 when the value is well formed, DIST_EPROTO when it is malformed
 * (including an empty buffer), DIST_EMSGSIZE when it is well formed as far
 * as read but exceeds a limit, DIST_EINVAL for buf NULL with len > 0.
 * A buffer that validates decodes with msgpack_unpack() as
 * MSGPACK_UNPACK_SUCCESS, consuming exactly len bytes. */
DIST_EXPORT int dist_wire_validate(const void *buf, size_t len, const dist_wire_limits_t *limits);

/* Like dist_wire_validate() for a buffer holding a sequence of one or more
 * values back to back; max_objects bounds the whole sequence and max_depth
 * each value. Returns the number of values (>= 1), or DIST_EPROTO,
 * DIST_EMSGSIZE (also for more than INT_MAX values) or DIST_EINVAL. */
DIST_EXPORT int dist_wire_validate_seq(const void *buf, size_t len, const dist_wire_limits_t *limits);

/* Validates buf[0..len) as dist_wire_validate() does, then unpacks it into
 * `zone` (initialized by the caller with msgpack_zone_init or
 * msgpack_zone_new and a non-zero chunk size, e.g. MSGPACK_ZONE_CHUNK_SIZE) and
 * stores the root in *out. Borrowing: containers in *out live in `zone`
 * until it is destroyed or cleared; str, bin and ext payloads point into
 * `buf`, which must stay unchanged as long as they are used. On failure
 * *out is untouched and the zone may hold unused memory until it is freed.
 * The zone grows by about 24 bytes per object decoded.
 * Returns 0, DIST_EPROTO, DIST_EMSGSIZE, DIST_EINVAL (a NULL argument or a
 * zone with chunk size 0) or DIST_ENOMEM. */
DIST_EXPORT int dist_wire_decode(const void *buf, size_t len, const dist_wire_limits_t *limits,
                                 msgpack_zone *zone, msgpack_object *out);

/* A decoded message that owns everything it points to. */
typedef struct dist_wire_msg dist_wire_msg_t;

/* Validates and decodes buf[0..len) into a new message that holds its own
 * copy of the bytes, so the caller may free or reuse `buf` at once. Returns
 * the message, or NULL with *err (when err is not NULL) and errno set:
 * *err is DIST_EPROTO, DIST_EMSGSIZE, DIST_EINVAL or DIST_ENOMEM, errno the
 * same code made positive. The caller destroys it with
 * dist_wire_msg_destroy(). */
DIST_EXPORT dist_wire_msg_t *dist_wire_msg_decode(const void *buf, size_t len,
                                                  const dist_wire_limits_t *limits, int *err);

/* Frees the message and everything decoded from it; sets *self_p to NULL.
 * Accepts NULL and a pointer to NULL. */
DIST_EXPORT void dist_wire_msg_destroy(dist_wire_msg_t **self_p);

/* The root value, borrowed: it and every object, string and payload
 * reached from it live until the message is destroyed. Never NULL for a
 * message that exists. */
DIST_EXPORT const msgpack_object *dist_wire_msg_root(const dist_wire_msg_t *self);

/* The message's copy of the encoded bytes (borrowed, lives as long as the
 * message) and its length, e.g. to forward a frame unchanged. */
DIST_EXPORT const void *dist_wire_msg_data(const dist_wire_msg_t *self, size_t *len);

/* --- accessors ---------------------------------------------------------
 * Each takes a possibly NULL object and returns 0 or DIST_EPROTO (NULL,
 * wrong type, or a number out of the target's range). Outputs are written
 * only on success. Pointers they return are borrowed from the object's
 * storage (the zone and input buffer of dist_wire_decode, or the message). */

/* The value stored under the str key `key` (compared bytewise over its
 * strlen, so it cannot match a key with an embedded NUL) in map `obj`;
 * the first such entry when a peer sent the key twice. NULL when obj is
 * NULL, is not a map, or has no such key. Linear in the map's size. */
DIST_EXPORT const msgpack_object *dist_wire_map_get(const msgpack_object *obj, const char *key);

/* true when obj is a str equal to the C string s (bytewise, full length). */
DIST_EXPORT bool dist_wire_str_eq(const msgpack_object *obj, const char *s);

/* A non-negative integer. */
DIST_EXPORT int dist_wire_get_u64(const msgpack_object *obj, uint64_t *out);

/* An integer in [INT64_MIN, INT64_MAX]; a positive one above INT64_MAX is
 * DIST_EPROTO. */
DIST_EXPORT int dist_wire_get_i64(const msgpack_object *obj, int64_t *out);

/* A float32, float64 or integer, converted to double (integers beyond
 * 2^53 are rounded to the nearest double). */
DIST_EXPORT int dist_wire_get_f64(const msgpack_object *obj, double *out);

/* A boolean (nil and integers are not booleans). */
DIST_EXPORT int dist_wire_get_bool(const msgpack_object *obj, bool *out);

/* A str: *ptr points at *len bytes that are NOT NUL-terminated and may
 * contain NUL bytes or invalid UTF-8 (msgpack-c does not check). *ptr is
 * never NULL, even for an empty str (msgpack-c itself stores NULL there:
 * read via.str.ptr directly only with that in mind). */
DIST_EXPORT int dist_wire_get_str(const msgpack_object *obj, const char **ptr, size_t *len);

/* A bin (a str is not accepted). *ptr is never NULL, as for a str. */
DIST_EXPORT int dist_wire_get_bin(const msgpack_object *obj, const void **ptr, size_t *len);

/* An array: *items is its first element (NULL when *n is 0). */
DIST_EXPORT int dist_wire_get_array(const msgpack_object *obj, const msgpack_object **items,
                                    size_t *n);

/* A map: *entries is its first key/value pair (NULL when *n is 0). */
DIST_EXPORT int dist_wire_get_map(const msgpack_object *obj, const msgpack_object_kv **entries,
                                  size_t *n);

/* --- output buffer ----------------------------------------------------- */

/* A growable byte buffer to pack messages into. */
typedef struct dist_wire_buf dist_wire_buf_t;

/* Creates an empty buffer that refuses to grow beyond max_size bytes (0:
 * no limit). Returns NULL with errno ENOMEM. Destroy with
 * dist_wire_buf_destroy(). */
DIST_EXPORT dist_wire_buf_t *dist_wire_buf_new(size_t max_size);

/* Frees the buffer and its bytes; sets *self_p to NULL. Accepts NULL. */
DIST_EXPORT void dist_wire_buf_destroy(dist_wire_buf_t **self_p);

/* The packer that appends to this buffer, borrowed for the buffer's life:
 * msgpack_pack_map(dist_wire_buf_packer(b), 2), ... Errors are sticky: once
 * a write fails (no memory, or max_size reached) every later write fails
 * too and the bytes stop growing, so checking dist_wire_buf_status() once
 * after packing a whole message is enough. */
DIST_EXPORT msgpack_packer *dist_wire_buf_packer(dist_wire_buf_t *self);

/* 0 while every write has succeeded, else the first failure:
 * DIST_EMSGSIZE (max_size would have been exceeded) or DIST_ENOMEM. */
DIST_EXPORT int dist_wire_buf_status(const dist_wire_buf_t *self);

/* The bytes packed so far, borrowed until the next write, reset, release
 * or destroy (NULL when nothing was packed yet), and their count. */
DIST_EXPORT const void *dist_wire_buf_data(const dist_wire_buf_t *self, size_t *len);

/* Empties the buffer and clears a sticky error; keeps the allocation. */
DIST_EXPORT void dist_wire_buf_reset(dist_wire_buf_t *self);

/* Hands the packed bytes to the caller, who frees them with free(), and
 * leaves the buffer empty and without error, as reset does. Returns NULL
 * with *len 0 when nothing was packed. Check dist_wire_buf_status() first:
 * after an error the bytes are an incomplete message. */
DIST_EXPORT void *dist_wire_buf_release(dist_wire_buf_t *self, size_t *len);

#ifdef __cplusplus
}
#endif

#endif

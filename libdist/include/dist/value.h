/*  dist/value.h - building task arguments and reading task values.
 *
 *  Arguments travel as one MessagePack array; results as one MessagePack
 *  value. These helpers make the simple cases short (ints, doubles,
 *  strings, bytes, bools, nil) and leave msgpack-c in reach for the rest:
 *  dist_args_packer() hands out the packer for one value of any shape.
 *
 *  Building:  dist_args_t *a = dist_args_new();
 *             dist_args_int(a, 6); dist_args_str(a, "x");
 *             size_t len; const void *buf = dist_args_data(a, &len);
 *  Reading (in a task): dist_arg_int(args, 0, &x), dist_arg_str(args, 1, &s, &n)
 *  Results: dist_result_t carries a value or an error (see below).
 */
#ifndef DIST_VALUE_H_INCLUDED
#define DIST_VALUE_H_INCLUDED

#include <msgpack.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- building an argument array ---------------------------------------- */

typedef struct dist_args dist_args_t;

/* A new, empty argument array. NULL with errno ENOMEM. */
DIST_EXPORT dist_args_t *dist_args_new(void);
DIST_EXPORT void dist_args_destroy(dist_args_t **self_p);
/* Empties the array for reuse (keeps its memory). */
DIST_EXPORT void dist_args_clear(dist_args_t *self);

/* Append one value. Return 0 or DIST_ENOMEM (the array is then unusable
 * until cleared). dist_args_str takes a NUL-terminated string. */
DIST_EXPORT int dist_args_int(dist_args_t *self, int64_t v);
DIST_EXPORT int dist_args_uint(dist_args_t *self, uint64_t v);
DIST_EXPORT int dist_args_double(dist_args_t *self, double v);
DIST_EXPORT int dist_args_bool(dist_args_t *self, bool v);
DIST_EXPORT int dist_args_nil(dist_args_t *self);
DIST_EXPORT int dist_args_str(dist_args_t *self, const char *s);
DIST_EXPORT int dist_args_strn(dist_args_t *self, const char *s, size_t n);
DIST_EXPORT int dist_args_bin(dist_args_t *self, const void *p, size_t n);

/* For any other value: returns the packer; pack exactly ONE value with
 * msgpack_pack_* before the next call on this array. Borrowed. */
DIST_EXPORT msgpack_packer *dist_args_packer(dist_args_t *self);

/* ---- one call: format strings --------------------------------------------
 *
 * One letter a value, the same letters both ways (spaces, commas and
 * colons in a format are ignored):
 *
 *   letter  packs (argument)              unpacks into (arguments)
 *   n       nil                           - (the value must be nil)
 *   t       bool (int)                    bool *
 *   i       integer (int)                 int * (range-checked)
 *   I       integer (int64_t)             int64_t *
 *   u       unsigned (unsigned)           unsigned * (range-checked)
 *   U       unsigned (uint64_t)           uint64_t *
 *   d       float64 (double)              double * (integers accepted)
 *   s       str (const char *, NUL-       const char **, size_t * (borrowed,
 *           terminated; NULL packs nil)   not NUL-terminated)
 *   S       str (const char *, size_t)    char ** (a malloc'd NUL-terminated
 *                                         copy: the caller frees it)
 *   b       bin (const void *, size_t)    const void **, size_t * (borrowed)
 *   o       any (const msgpack_object *)  const msgpack_object ** (borrowed)
 *   *       -                             - (any value, skipped)
 *   [...]   an array of the items inside  an array of exactly those items
 *   {...}   a map: key, value, key, ...   a map: "s" keys whose argument is
 *                                         the key to look up (const char *),
 *                                         each followed by its value's letter
 *
 * Several items at the top of a format stand for an array of them; one item
 * is the value itself. Any output pointer may be NULL (the value is still
 * checked). Returns 0, DIST_EINVAL (a bad format, or a value of another
 * type or array length or a missing map key: the outputs are then
 * unspecified, and 'S' copies already made are freed and NULLed), or
 * DIST_ENOMEM.
 *
 *     dist_args_t *a = dist_args_pack("isd", 7, "x", 2.5);   // [7, "x", 2.5]
 *     dist_args_add(a, "[ii]{s:i}", 1, 2, "k", 3);           // ..., [1, 2], {"k": 3}
 *     return dist_pack(out, "{s:i, s:s}", "n", n, "name", s); // in a task
 *     dist_args_unpack(args, "is", &n, &s, &slen);           // in a task
 *     dist_result_unpack(r, "is", &n, &s, &slen);            // a result [n, s]
 */

/* A new argument array holding one element per top-level item of fmt.
 * NULL with errno ENOMEM, or EINVAL (DIST_EINVAL's positive code) for a bad
 * format. */
DIST_EXPORT dist_args_t *dist_args_pack(const char *fmt, ...);
DIST_EXPORT dist_args_t *dist_args_vpack(const char *fmt, va_list ap);
/* Appends one element per top-level item of fmt. */
DIST_EXPORT int dist_args_add(dist_args_t *self, const char *fmt, ...);
DIST_EXPORT int dist_args_vadd(dist_args_t *self, const char *fmt, va_list ap);
/* Packs fmt as one value (several top-level items: an array), e.g. a
 * task's result into its `out` packer. */
DIST_EXPORT int dist_pack(msgpack_packer *pk, const char *fmt, ...);
DIST_EXPORT int dist_vpack(msgpack_packer *pk, const char *fmt, va_list ap);

/* ---- many argument arrays: the items of a map ---------------------------
 *
 * Python's pool.map(f, iterable) in C needs one argument array per item;
 * a batch holds them back to back in one buffer:
 *
 *     dist_batch_t *b = dist_batch_new();
 *     for (int i = 0; i < n; i++)
 *         dist_batch_add(b, "i", i);                  // the item [i]
 *     dist_pool_map(pool, task, dist_batch_items(b), dist_batch_count(b), 0, &rs);
 */

/* An argument array for map and imap: borrowed (data, len). */
typedef struct {
    const void *data;
    size_t len;
} dist_bytes_t;

typedef struct dist_batch dist_batch_t;

/* A new empty batch. NULL with errno ENOMEM. */
DIST_EXPORT dist_batch_t *dist_batch_new(void);
DIST_EXPORT void dist_batch_destroy(dist_batch_t **self_p);
/* Appends one item: an argument array of one element per top-level item
 * of fmt (the format of dist_args_pack). 0, DIST_EINVAL (bad format:
 * nothing appended) or DIST_ENOMEM. */
DIST_EXPORT int dist_batch_add(dist_batch_t *self, const char *fmt, ...);
/* Appends an argument array packed elsewhere (copied). */
DIST_EXPORT int dist_batch_add_packed(dist_batch_t *self, const void *data, size_t len);
DIST_EXPORT size_t dist_batch_count(const dist_batch_t *self);
/* The items, in order: borrowed, valid until the next add or destroy.
 * NULL with count 0, or on ENOMEM. */
DIST_EXPORT const dist_bytes_t *dist_batch_items(dist_batch_t *self);

/* Number of values appended. */
DIST_EXPORT size_t dist_args_count(const dist_args_t *self);

/* The packed array: borrowed, valid until the next change or destroy. */
DIST_EXPORT const void *dist_args_data(dist_args_t *self, size_t *len);

/* ---- reading an argument array (inside a task) ------------------------- */

/* Number of elements of `args` (0 when it is not an array). */
DIST_EXPORT size_t dist_arg_count(const msgpack_object *args);

/* The i-th element, or NULL when out of range or not an array. */
DIST_EXPORT const msgpack_object *dist_arg(const msgpack_object *args, size_t i);

/* Typed reads of the i-th element. Return 0, or DIST_EINVAL when missing or
 * of another type (ints out of the target range included). dist_arg_double
 * accepts integers too. Strings and bytes are borrowed from args (not
 * NUL-terminated). */
DIST_EXPORT int dist_arg_int(const msgpack_object *args, size_t i, int64_t *out);
DIST_EXPORT int dist_arg_uint(const msgpack_object *args, size_t i, uint64_t *out);
DIST_EXPORT int dist_arg_double(const msgpack_object *args, size_t i, double *out);
DIST_EXPORT int dist_arg_bool(const msgpack_object *args, size_t i, bool *out);
DIST_EXPORT int dist_arg_str(const msgpack_object *args, size_t i, const char **s, size_t *n);
DIST_EXPORT int dist_arg_bin(const msgpack_object *args, size_t i, const void **p, size_t *n);
DIST_EXPORT bool dist_arg_is_nil(const msgpack_object *args, size_t i);

/* The same reads on a single object (not an array element). */
DIST_EXPORT int dist_obj_int(const msgpack_object *o, int64_t *out);
DIST_EXPORT int dist_obj_uint(const msgpack_object *o, uint64_t *out);
DIST_EXPORT int dist_obj_double(const msgpack_object *o, double *out);
DIST_EXPORT int dist_obj_bool(const msgpack_object *o, bool *out);
DIST_EXPORT int dist_obj_str(const msgpack_object *o, const char **s, size_t *n);
DIST_EXPORT int dist_obj_bin(const msgpack_object *o, const void **p, size_t *n);

/* An array's elements (borrowed from o) and their count: 0, or DIST_EINVAL
 * when o is not an array. */
DIST_EXPORT int dist_obj_array(const msgpack_object *o, const msgpack_object **items, size_t *n);
/* The value of a map's str key (the first when repeated), or NULL when o is
 * not a map or has no such key. Borrowed from o. */
DIST_EXPORT const msgpack_object *dist_obj_map_get(const msgpack_object *o, const char *key);

/* Reads values with a format string (see "one call" above): dist_unpack
 * reads o itself; dist_args_unpack reads a task's argument array, one
 * top-level item per element, and wants exactly as many elements. */
DIST_EXPORT int dist_unpack(const msgpack_object *o, const char *fmt, ...);
DIST_EXPORT int dist_vunpack(const msgpack_object *o, const char *fmt, va_list ap);
DIST_EXPORT int dist_args_unpack(const msgpack_object *args, const char *fmt, ...);

/* ---- results ------------------------------------------------------------ */

/* The outcome of one task: a MessagePack value, or an error with a code
 * and a message that says what happened (task name, host, pid, signal).
 *
 * Ownership, one rule: a call that RETURNS a result through an out
 * parameter and keeps no handle (dist_pool_apply, dist_client_call,
 * dist_imap_next, dist_client_status, dist_result_new_*, dist_result_dup)
 * gives it to the caller, who destroys it. A GET on a handle that lives on
 * (dist_async_get, dist_future_get, and the result passed to a callback)
 * LENDS it: it is valid until the handle is destroyed (for a callback,
 * during the call), and dist_result_destroy on a lent result is harmless:
 * it only sets the caller's pointer to NULL. Results inside a
 * dist_results_t are lent the same way. So destroying every result one was
 * handed is always safe; dist_result_dup keeps one beyond its handle. */
typedef struct dist_result dist_result_t;

/* A success holding a copy of the packed value; an error with a copy of
 * the message (code must be negative). NULL with errno ENOMEM (EINVAL for
 * code >= 0). The caller owns the result. */
DIST_EXPORT dist_result_t *dist_result_new_value(const void *data, size_t len);
DIST_EXPORT dist_result_t *dist_result_new_error(int code, const char *message);
DIST_EXPORT void dist_result_destroy(dist_result_t **self_p);

/* 0 for a value; otherwise the error code: DIST_ETASK (the task failed),
 * DIST_ECRASHED (its process died), DIST_ETIMEDOUT, DIST_ENOENT (unknown
 * task), DIST_EPROTO (bad arguments or result), DIST_EMSGSIZE, ... */
DIST_EXPORT int dist_result_status(const dist_result_t *self);
DIST_EXPORT bool dist_result_ok(const dist_result_t *self);

/* The error message, or NULL for a value. Borrowed, lives as the result. */
DIST_EXPORT const char *dist_result_error(const dist_result_t *self);

/* The packed value (NULL/0 for an error). Borrowed, lives as the result. */
DIST_EXPORT const void *dist_result_data(const dist_result_t *self, size_t *len);

/* The value unpacked (on first use), or NULL for an error or when the bytes
 * are not one valid value. Borrowed, lives as the result. Thread-safe. */
DIST_EXPORT const msgpack_object *dist_result_value(dist_result_t *self);

/* Typed reads of the value, as dist_obj_*; DIST_EINVAL for another type,
 * the result's own code for an error result. */
DIST_EXPORT int dist_result_int(dist_result_t *self, int64_t *out);
DIST_EXPORT int dist_result_double(dist_result_t *self, double *out);
DIST_EXPORT int dist_result_str(dist_result_t *self, const char **s, size_t *n);
DIST_EXPORT int dist_result_uint(dist_result_t *self, uint64_t *out);
DIST_EXPORT int dist_result_bool(dist_result_t *self, bool *out);
/* The elements of an array value, borrowed from the result. */
DIST_EXPORT int dist_result_array(dist_result_t *self, const msgpack_object **items, size_t *n);

/* Reads the value with a format string (see "one call" above): a result
 * [n, s] is dist_result_unpack(r, "is", &n, &s, &slen). The result's own
 * code for an error result, DIST_EPROTO when the bytes are not one value. */
DIST_EXPORT int dist_result_unpack(dist_result_t *self, const char *fmt, ...);

/* A standalone copy of any result (also of one borrowed from a
 * dist_results_t). NULL with errno ENOMEM. */
DIST_EXPORT dist_result_t *dist_result_dup(const dist_result_t *self);

/* ---- many results ------------------------------------------------------- */

/* The outcomes of a map: n results in input order, stored compactly (one
 * allocation for the headers, the values in the buffers they arrived in). */
typedef struct dist_results dist_results_t;

DIST_EXPORT void dist_results_destroy(dist_results_t **self_p);
DIST_EXPORT size_t dist_results_count(const dist_results_t *self);

/* The i-th result, lent: valid until dist_results_destroy; passing it to
 * dist_result_destroy only NULLs the pointer (dist_result_dup makes an
 * owned copy). NULL when i is out of range. */
DIST_EXPORT dist_result_t *dist_results_at(dist_results_t *self, size_t i);

/* 0 when every result is a value; otherwise the status of the first
 * failure, whose index goes to *index when index is not NULL. */
DIST_EXPORT int dist_results_status(const dist_results_t *self, size_t *index);

#ifdef __cplusplus
}
#endif

#endif

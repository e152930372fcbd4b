/*  dist/shm.h - shared memory: typed values and arrays shared with forked
 *  children, like Python's multiprocessing.Value and Array, and named
 *  blocks that unrelated processes open by name, like
 *  multiprocessing.shared_memory.SharedMemory.
 *
 *  Value and Array live in a MAP_SHARED anonymous mapping: create them,
 *  then fork, and the parent and every child forked afterwards see the same
 *  bytes. Each process destroys its own handle; the memory goes away with
 *  the last mapping. Either may carry a Lock (dist/sync.h) for the caller's
 *  compound updates - Python's `with v.get_lock(): v.value += 1`. The
 *  scalar accessors of a Value (get, set, add) are atomic on their own and
 *  never take that lock.
 *
 *  A named block is a POSIX shared-memory object (shm_open, /dev/shm on
 *  Linux). Its creator owns the name: the name is removed (shm_unlink) when
 *  the owner calls dist_shm_unlink() or destroys its handle. Handles from
 *  dist_shm_open() never remove it, and neither does a forked child's copy
 *  of the owner's handle. Processes that still map a removed block keep
 *  using it; new opens fail with ENOENT.
 *
 *  Threads: handles may be shared between threads; the memory itself is
 *  plain shared memory, synchronised by the caller (atomics or a Lock).
 */
#ifndef DIST_SHM_H_INCLUDED
#define DIST_SHM_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "sync.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types (Python's typecodes 'q', 'i', 'B', 'd', and raw bytes). */
typedef enum {
    DIST_CTYPE_INT64 = 1,
    DIST_CTYPE_INT32,
    DIST_CTYPE_UINT8,
    DIST_CTYPE_DOUBLE,
    DIST_CTYPE_BYTES, /* Array only: raw bytes, 1 per element */
} dist_ctype_t;

/* Size in bytes of one element of `type`; 0 for an unknown type. */
DIST_EXPORT size_t dist_ctype_size(dist_ctype_t type);

/* --- Value: one shared scalar -------------------------------------------- */

typedef struct dist_value dist_value_t;

/* Creates a shared scalar of `type` (not DIST_CTYPE_BYTES), zero, with a
 * Lock of its own when `lock` is true. Returns NULL with errno EINVAL or
 * ENOMEM. The caller owns the handle and frees it with destroy. */
DIST_EXPORT dist_value_t *dist_value_new(dist_ctype_t type, bool lock);

/* Unmaps this process's view (releasing the Lock first if the calling
 * thread holds it) and sets *self_p to NULL; accepts NULL. */
DIST_EXPORT void dist_value_destroy(dist_value_t **self_p);

/* The value's Lock (borrowed, valid until destroy), or NULL when it was
 * created without one. */
DIST_EXPORT dist_lock_t *dist_value_lock(dist_value_t *self);

DIST_EXPORT dist_ctype_t dist_value_type(const dist_value_t *self);

/* The value's memory (borrowed, shared, valid until destroy): an int64_t,
 * int32_t, uint8_t or double according to the type. For plain reads and
 * writes under the Lock. */
DIST_EXPORT void *dist_value_ptr(dist_value_t *self);

/* Atomic accessors. Integers convert as C does: set_int on a UINT8 value
 * stores the low 8 bits, get_int on a DOUBLE truncates, and so on. */
DIST_EXPORT int64_t dist_value_get_int(const dist_value_t *self);
DIST_EXPORT void dist_value_set_int(dist_value_t *self, int64_t v);
DIST_EXPORT double dist_value_get_double(const dist_value_t *self);
DIST_EXPORT void dist_value_set_double(dist_value_t *self, double v);

/* Atomically adds delta (wrapping like the C type) and returns the new
 * value, converted to int64_t. */
DIST_EXPORT int64_t dist_value_add(dist_value_t *self, int64_t delta);

/* --- Array: a fixed-length shared array ----------------------------------- */

typedef struct dist_array dist_array_t;

/* Creates a shared array of `length` elements (at least 1) of `type`,
 * copied from `init` (length elements) or zero when init is NULL, with a
 * Lock of its own when `lock` is true. Returns NULL with errno EINVAL
 * (bad type or length, or a size overflow) or ENOMEM. */
DIST_EXPORT dist_array_t *dist_array_new(dist_ctype_t type, size_t length, const void *init,
                                         bool lock);

/* Unmaps this process's view (releasing the Lock first if the calling
 * thread holds it) and sets *self_p to NULL; accepts NULL. */
DIST_EXPORT void dist_array_destroy(dist_array_t **self_p);

/* The array's Lock (borrowed, valid until destroy), or NULL. */
DIST_EXPORT dist_lock_t *dist_array_lock(dist_array_t *self);

DIST_EXPORT dist_ctype_t dist_array_type(const dist_array_t *self);
DIST_EXPORT size_t dist_array_length(const dist_array_t *self);
/* length * dist_ctype_size(type). */
DIST_EXPORT size_t dist_array_size(const dist_array_t *self);

/* The elements (borrowed, shared, valid until destroy; 64-byte aligned). */
DIST_EXPORT void *dist_array_data(dist_array_t *self);

/* Typed views of the elements, or NULL when the array's type differs
 * (uint8 also views a DIST_CTYPE_BYTES array). Index them directly:
 * dist_array_int64(a)[i]. */
DIST_EXPORT int64_t *dist_array_int64(dist_array_t *self);
DIST_EXPORT int32_t *dist_array_int32(dist_array_t *self);
DIST_EXPORT uint8_t *dist_array_uint8(dist_array_t *self);
DIST_EXPORT double *dist_array_double(dist_array_t *self);

/* --- SharedMemory: a named block ------------------------------------------ */

typedef struct dist_shm dist_shm_t;

/* Longest name accepted, without the leading '/'. */
#define DIST_SHM_NAME_MAX 250

/* Creates a new named block of `size` bytes (at least 1), zero-filled, mode
 * 0600, and maps it. `name` may start with '/' and must not contain any
 * other; NULL picks a fresh unique name (read it with dist_shm_name()).
 * The calling process owns the name (see above). Returns NULL with errno
 * EEXIST (the name is taken), EINVAL (bad name or size), EACCES, EMFILE,
 * ENOMEM, ... The caller frees the handle with destroy. */
DIST_EXPORT dist_shm_t *dist_shm_new(const char *name, size_t size);

/* Opens and maps an existing block by name, at its current size. Never
 * removes it. Returns NULL with errno ENOENT (no such name), EINVAL (bad
 * name, or an empty block), EACCES, ... */
DIST_EXPORT dist_shm_t *dist_shm_open(const char *name);

/* Unmaps the block, and removes its name when this handle is the owner's
 * in the process that created it (and the name was not removed yet).
 * Sets *self_p to NULL; accepts NULL. */
DIST_EXPORT void dist_shm_destroy(dist_shm_t **self_p);

/* Removes the name now (the mapping stays usable). Returns 0 (also when
 * already removed by this handle), DIST_ESTATE for a handle that does not
 * own the name (opened, or inherited through fork), or -errno. */
DIST_EXPORT int dist_shm_unlink(dist_shm_t *self);

/* The mapping (borrowed, valid until destroy), its size in bytes, and the
 * name with its leading '/' (borrowed, valid until destroy). */
DIST_EXPORT void *dist_shm_data(dist_shm_t *self);
DIST_EXPORT size_t dist_shm_size(const dist_shm_t *self);
DIST_EXPORT const char *dist_shm_name(const dist_shm_t *self);

#ifdef __cplusplus
}
#endif

#endif

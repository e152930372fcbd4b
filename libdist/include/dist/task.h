/*  dist/task.h - task functions, their registry, and how they report.
 *
 *  A task is a C function that receives its arguments as a MessagePack
 *  array and packs exactly one MessagePack value as its result, or fails
 *  with a message. The same function runs unchanged in a local Pool
 *  process, a ThreadPool thread, or a remote dist-worker:
 *
 *      static int square(dist_task_ctx_t *ctx, const msgpack_object *args,
 *                        msgpack_packer *out)
 *      {
 *          int64_t x;
 *          if (dist_arg_int(args, 0, &x))
 *              return dist_task_fail(ctx, "square: expected one integer");
 *          return msgpack_pack_int64(out, x * x);
 *      }
 *      DIST_TASK("square", square);
 *
 *  `args` is always an array (possibly empty); dist/value.h has helpers to
 *  read it. Return 0 after packing one value into `out`; return non-zero to
 *  fail (dist_task_fail sets the message and returns -1). A task that packs
 *  nothing returns nil (Python's None); one that packs more than one value
 *  produces an error result instead.
 *
 *  Registry: DIST_TASK(name, fn) registers fn under name when the program
 *  starts, or when a plugin shared object that contains it is dlopen'ed
 *  (the macro expands to a constructor). dist-worker announces every
 *  registered name to its master. A Pool forks its processes from a fork
 *  server started when the Pool is created: register tasks (and load
 *  plugins) before creating pools that must run them by name.
 *
 *  Names: 1 to DIST_TASK_NAME_MAX bytes of letters, digits and `._:-`.
 *  Names starting with "dist." are reserved for built-in tasks.
 */
#ifndef DIST_TASK_H_INCLUDED
#define DIST_TASK_H_INCLUDED

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DIST_TASK_NAME_MAX 128

/* Per-call context handed to a task (borrowed; valid during the call). */
typedef struct dist_task_ctx dist_task_ctx_t;

typedef int (*dist_task_fn)(dist_task_ctx_t *ctx, const msgpack_object *args,
                            msgpack_packer *out);

/* Fails the current task with a printf-style message (truncated to 1 KiB).
 * Returns -1 so that a task can `return dist_task_fail(ctx, ...)`. */
DIST_EXPORT int dist_task_fail(dist_task_ctx_t *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Asks for the task to be run again later instead of failing for good:
 * `delay_ms` (0 or more; negative counts as 0) is the least time to wait
 * before the next attempt, `reason` (printf-free, may be NULL) says why.
 * Under a master the attempt counts against the task's attempts (see
 * docs/PROTOCOL.md, 6.3: status `retry`), and the master waits the larger
 * of delay_ms and the task's backoff. A local Pool has nobody to retry:
 * there the result is an error (DIST_ERETRY) whose message is "retry
 * requested: REASON". Returns -1 so that a task can `return
 * dist_task_retry(ctx, ...)`; it takes precedence over dist_task_fail. */
DIST_EXPORT int dist_task_retry(dist_task_ctx_t *ctx, int delay_ms, const char *reason);

/* The name the task was called by ("?" for an unregistered function).
 * Borrowed, valid during the call. */
DIST_EXPORT const char *dist_task_ctx_name(const dist_task_ctx_t *ctx);

/* Registers fn under name. Returns 0 (also when the same pair is already
 * registered), DIST_EINVAL for a bad name or NULL fn, -EEXIST when the name
 * is taken by another function, DIST_ENOMEM. Thread-safe. */
DIST_EXPORT int dist_task_register(const char *name, dist_task_fn fn);

/* The function registered under name, or NULL. Thread-safe. */
DIST_EXPORT dist_task_fn dist_task_lookup(const char *name);

/* The name under which fn was registered first, or NULL. Borrowed; the
 * registry never frees names. Thread-safe. */
DIST_EXPORT const char *dist_task_name_of(dist_task_fn fn);

/* Number of registered tasks, and the name of the i-th (registration
 * order; borrowed, valid for the life of the process). */
DIST_EXPORT size_t dist_task_count(void);
DIST_EXPORT const char *dist_task_name_at(size_t i);

/* True when name is well formed (see above). */
DIST_EXPORT bool dist_task_name_valid(const char *name);

/* Registers fn under name at load time (program start or dlopen). Use at
 * file scope, once per function. */
#define DIST_TASK(name, fn)                                                   \
    __attribute__((constructor)) static void dist_task_register_##fn(void)   \
    {                                                                         \
        (void)dist_task_register((name), (fn));                               \
    }

/* A reference to a task for the Pool: by function or by registered name.
 *     dist_pool_apply(pool, DIST_FN(square), ...)
 *     dist_pool_apply(pool, DIST_NAMED("square"), ...)  */
typedef struct {
    dist_task_fn fn;
    const char *name;
} dist_task_ref_t;

/* C spells the value as a compound literal; ISO C++ has neither those nor
 * (before C++20) designated initializers, so C++ gets the same value as a
 * braced temporary and both languages write DIST_FN(f). */
#ifdef __cplusplus
#define DIST_FN(f) (dist_task_ref_t{ (f), nullptr })
#define DIST_NAMED(n) (dist_task_ref_t{ nullptr, (n) })
#else
#define DIST_FN(f) ((dist_task_ref_t){ .fn = (f), .name = NULL })
#define DIST_NAMED(n) ((dist_task_ref_t){ .fn = NULL, .name = (n) })
#endif

#ifdef __cplusplus
}
#endif

#endif

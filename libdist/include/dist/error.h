/*  dist/error.h - the libdist error model.
 *
 *  Every function that can fail returns 0 (or a non-negative count) on
 *  success and a negative DIST_E* code on failure. Where a POSIX errno
 *  describes the failure the code is exactly -errno (DIST_ENOMEM == -ENOMEM),
 *  so callers may compare against either spelling. Failures that have no
 *  errno equivalent use codes below DIST__EBASE.
 *
 *  Constructors and the other functions that return a pointer (x_new,
 *  dist_pool_apply_async, dist_wire_msg_decode, ...) return NULL and set
 *  errno to the same code made positive: a plain errno value (EINVAL,
 *  ENOMEM, EADDRINUSE, ...) or the negation of a library code (errno ==
 *  -DIST_ENOMASTER). dist_strerror() takes either sign, so the message is
 *  always dist_strerror(errno):
 *
 *      dist_client_t *c = dist_client_new(&opts);
 *      if (!c)
 *          fprintf(stderr, "client: %s\n", dist_strerror(errno));
 *
 *  strerror(errno) is wrong there: the C library does not know the
 *  library's own codes (DIST_ENOMASTER is -10010; strerror(10010) is
 *  "Unknown error 10010"). Save errno before calling anything else that
 *  may change it.
 *
 *  The library never aborts or exits on bad input, a failing system call or
 *  a dead child process: it returns one of these codes.
 */
#ifndef DIST_ERROR_H_INCLUDED
#define DIST_ERROR_H_INCLUDED

#include <errno.h>
#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Codes that are -errno. */
#define DIST_EINVAL     (-EINVAL)     /* invalid argument */
#define DIST_ENOMEM     (-ENOMEM)     /* out of memory */
#define DIST_ETIMEDOUT  (-ETIMEDOUT)  /* the timeout expired first */
#define DIST_EAGAIN     (-EAGAIN)     /* would block */
#define DIST_EINTR      (-EINTR)      /* interrupted by a signal handler */
#define DIST_EMSGSIZE   (-EMSGSIZE)   /* message larger than the limit */
#define DIST_EOWNERDEAD (-EOWNERDEAD) /* acquired, but the previous owner died holding it */
#define DIST_EBADF      (-EBADF)      /* wrong direction (e.g. send on a read-only pipe end) */
#define DIST_ECHILD     (-ECHILD)     /* no such child process */
#define DIST_EPROTO     (-EPROTO)     /* malformed data from a peer */
#define DIST_ENOENT     (-ENOENT)     /* no such name (file, task, queue) */
#define DIST_EDEADLK    (-EDEADLK)    /* the caller already holds the (non-recursive) lock */

/* Codes without an errno equivalent. */
#define DIST__EBASE    (-10000)
#define DIST_ECLOSED   (DIST__EBASE - 1) /* closed: the other end or the object itself */
#define DIST_EEMPTY    (DIST__EBASE - 2) /* non-blocking get found nothing */
#define DIST_EFULL     (DIST__EBASE - 3) /* non-blocking put found no room */
#define DIST_ESTATE    (DIST__EBASE - 4) /* operation not valid in the object's current state */
#define DIST_ETASK     (DIST__EBASE - 5) /* the task failed; its error result says why */
#define DIST_ECRASHED  (DIST__EBASE - 6) /* the process running it died */
#define DIST_EEXITSTATUS (DIST__EBASE - 7) /* a child exited with a non-zero status or was killed */
#define DIST_EBROKEN   (DIST__EBASE - 8) /* the barrier is broken (aborted, reset or timed out) */
#define DIST_EGAVEUP   (DIST__EBASE - 9) /* the task failed every attempt its retry budget allowed */
#define DIST_ENOMASTER (DIST__EBASE - 10) /* no master answered in time */
#define DIST_EREFUSED  (DIST__EBASE - 11) /* the master refused the request (see its message) */
#define DIST_ECANCELLED (DIST__EBASE - 12) /* the task was cancelled before it finished */
#define DIST_ERETRY    (DIST__EBASE - 13) /* the task asked to be run again (dist_task_retry) */
#define DIST_ELAST     (DIST__EBASE - 13)

/* A short English description of `code`: a return value (negative), or
 * errno after a constructor failed (positive; see above). Either sign
 * names the same error; 0 gives "success", any other errno the C
 * library's text, and a value that is neither "unknown error". Returns a
 * static string that is never freed; thread-safe. */
DIST_EXPORT const char *dist_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif

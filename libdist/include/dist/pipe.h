/*  dist/pipe.h - two connected ends that carry whole messages, like
 *  Python's multiprocessing.Pipe.
 *
 *  dist_pipe_pair() returns two ends joined by a Unix stream socket. A
 *  message is a byte string of 0 to DIST_PIPE_MAX_MSG bytes; send() writes
 *  it whole, recv() returns it whole, in order. When every copy of the other
 *  end has been destroyed (or its process has died), recv() returns the
 *  messages already sent and then DIST_ECLOSED, and send() returns
 *  DIST_ECLOSED at once: never a hang and never SIGPIPE. A message cut short
 *  by the death of its sender is dropped.
 *
 *  Ends survive fork: create the pair, fork, and let each process destroy
 *  the end it does not use (otherwise its own copy keeps the other side
 *  open and EOF never comes - the same rule as Python's).
 *
 *  Threads: an end is used by one thread at a time, and by one process at a
 *  time for each direction (two processes sending on the same end can
 *  interleave the bytes of large messages).
 */
#ifndef DIST_PIPE_H_INCLUDED
#define DIST_PIPE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dist_pipe dist_pipe_t;

/* Largest message send() accepts and recv() returns: 256 MiB. */
#define DIST_PIPE_MAX_MSG ((size_t)256 << 20)

/* Creates a connected pair. duplex: both ends send and receive. One-way
 * (duplex false): *end0 only receives and *end1 only sends, as in Python's
 * Pipe(duplex=False). Returns 0, DIST_EINVAL, DIST_ENOMEM or -errno of
 * socketpair (e.g. -EMFILE). On failure *end0 and *end1 are NULL. */
DIST_EXPORT int dist_pipe_pair(dist_pipe_t **end0, dist_pipe_t **end1, bool duplex);

/* Closes this end and frees it; sets *self_p to NULL. Accepts NULL. */
DIST_EXPORT void dist_pipe_destroy(dist_pipe_t **self_p);

/* Sends one message of len bytes (buf may be NULL when len is 0). Blocks
 * until the whole message is handed to the kernel. Returns 0,
 * DIST_EMSGSIZE above DIST_PIPE_MAX_MSG, DIST_EBADF on a receive-only end,
 * DIST_ECLOSED when the other end is gone, or -errno. */
DIST_EXPORT int dist_pipe_send(dist_pipe_t *self, const void *buf, size_t len);

/* Receives one message, waiting up to timeout_ms for it to begin (once its
 * first bytes have arrived the rest is read without a deadline; the sender
 * writes whole messages). On success *buf is a malloc'd copy the caller
 * frees with free() (non-NULL even for an empty message) and *len its size.
 * Returns 0, DIST_ETIMEDOUT, DIST_ECLOSED (other end gone, nothing left),
 * DIST_EBADF on a send-only end, DIST_EPROTO for a length above the limit,
 * DIST_ENOMEM, or -errno. */
DIST_EXPORT int dist_pipe_recv(dist_pipe_t *self, void **buf, size_t *len, int timeout_ms);

/* Waits up to timeout_ms until recv() would not block. Returns 1 when a
 * message is ready, 0 on timeout, DIST_ECLOSED when the other end is gone
 * and nothing is left to read, or -errno. */
DIST_EXPORT int dist_pipe_poll(dist_pipe_t *self, int timeout_ms);

/* The underlying descriptor, for an external poll loop. It is readable when
 * poll() would return non-zero, except that bytes already buffered inside
 * the end do not show; call dist_pipe_poll(self, 0) first. Borrowed. */
DIST_EXPORT int dist_pipe_fd(const dist_pipe_t *self);

#ifdef __cplusplus
}
#endif

#endif

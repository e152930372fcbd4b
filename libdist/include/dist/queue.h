/*  dist/queue.h - a multi-producer, multi-consumer FIFO of byte messages
 *  shared by a process and the children it forks, like Python's
 *  multiprocessing.Queue.
 *
 *  The queue is a ring buffer in anonymous shared memory, guarded by a
 *  process-shared robust mutex; waiting is done on futexes. There is no
 *  feeder thread and no hidden pipe: put() has copied the message into the
 *  queue when it returns, and a process may exit right after it.
 *
 *  Create the queue, then fork: every child created after dist_queue_new()
 *  shares it. Each process destroys its own handle; the memory is released
 *  when the last process unmaps it.
 *
 *  Bounds: `capacity` bytes of ring, and optionally `maxsize` messages. A
 *  message of n bytes takes n + 4 bytes of the ring; a message that could
 *  not fit even into an empty queue is refused by put() with DIST_EMSGSIZE.
 *
 *  Crashes: a process killed with SIGKILL anywhere inside put() or get()
 *  does not leave the queue locked or corrupt. The next process to lock it
 *  repairs it; at most the dead process's own message in progress is lost
 *  (a put that had not committed, or a get that had committed but not yet
 *  returned).
 *
 *  Close: dist_queue_close() marks the queue closed for every process. Puts
 *  then fail with DIST_ECLOSED; gets still return the messages already in
 *  the queue and then DIST_ECLOSED; every blocked putter and getter wakes up
 *  with that code.
 *
 *  Threads: all functions are safe to call from several threads and
 *  processes at once on the same queue.
 */
#ifndef DIST_QUEUE_H_INCLUDED
#define DIST_QUEUE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dist_queue dist_queue_t;

/* Ring size used when dist_queue_new() is given a capacity of 0: 4 MiB. */
#define DIST_QUEUE_DEFAULT_CAPACITY ((size_t)4 << 20)

/* Bytes each message uses in the ring besides its payload. */
#define DIST_QUEUE_MSG_OVERHEAD 4

/* Creates a queue. maxsize: maximum number of messages, 0 for no limit
 * other than the bytes. capacity: ring size in bytes (0: the default),
 * at least 64 and at most 2^40. Returns NULL with errno EINVAL or ENOMEM
 * (or the mmap errno). */
DIST_EXPORT dist_queue_t *dist_queue_new(size_t maxsize, size_t capacity);

/* Unmaps this process's view and frees the handle; sets *self_p to NULL.
 * Other processes keep using the queue. Does not close it. */
DIST_EXPORT void dist_queue_destroy(dist_queue_t **self_p);

/* Copies a message of len bytes into the queue. With block false: returns
 * DIST_EFULL at once when there is no room. With block true: waits up to
 * timeout_ms (DIST_FOREVER: no bound) for room, then DIST_ETIMEDOUT.
 * Also DIST_EMSGSIZE (can never fit), DIST_ECLOSED (queue closed),
 * DIST_EINVAL. Returns 0 once the message is in the queue. */
DIST_EXPORT int dist_queue_put(dist_queue_t *self, const void *buf, size_t len,
                               bool block, int timeout_ms);

/* Takes the oldest message. On success *buf is a malloc'd copy the caller
 * frees with free() (non-NULL even when empty) and *len its size. With block
 * false: DIST_EEMPTY at once when there is none; with block true: waits up
 * to timeout_ms, then DIST_ETIMEDOUT. DIST_ECLOSED when the queue is closed
 * and drained. DIST_ENOMEM leaves the message in the queue. */
DIST_EXPORT int dist_queue_get(dist_queue_t *self, void **buf, size_t *len,
                               bool block, int timeout_ms);

/* Like dist_queue_get() but copies into the caller's buffer of `cap` bytes.
 * When the oldest message is larger, returns DIST_EMSGSIZE, sets *len to
 * its size and leaves it in the queue. */
DIST_EXPORT int dist_queue_get_into(dist_queue_t *self, void *buf, size_t cap, size_t *len,
                                    bool block, int timeout_ms);

/* put(..., false, 0) and get(..., false, 0). */
DIST_EXPORT int dist_queue_put_nowait(dist_queue_t *self, const void *buf, size_t len);
DIST_EXPORT int dist_queue_get_nowait(dist_queue_t *self, void **buf, size_t *len);

/* Number of messages now (a snapshot: others may change it at once). */
DIST_EXPORT size_t dist_queue_qsize(dist_queue_t *self);
DIST_EXPORT bool dist_queue_empty(dist_queue_t *self);
/* True when maxsize messages are queued, or when not even an empty message
 * would fit in the remaining bytes. */
DIST_EXPORT bool dist_queue_full(dist_queue_t *self);

/* Bytes of the ring in use, and its size. */
DIST_EXPORT size_t dist_queue_bytes(dist_queue_t *self);
DIST_EXPORT size_t dist_queue_capacity(const dist_queue_t *self);

/* Closes the queue for every process sharing it (see above). Idempotent.
 * Returns 0 or -errno if the lock cannot be taken. */
DIST_EXPORT int dist_queue_close(dist_queue_t *self);
DIST_EXPORT bool dist_queue_closed(dist_queue_t *self);

#ifdef __cplusplus
}
#endif

#endif

/*  dist/manager.h - shared named queues of values, the way Python's
 *  BaseManager shares them in the classic "distributed processes" example.
 *
 *  A manager is a client connection (dist/client.h) to a master, and in
 *  serve mode also that master, running in a thread of this process
 *  (BaseManager.start()). The program that serves and the programs that
 *  connect then use the same named queues, whose items are MessagePack
 *  values put and taken with one call each:
 *
 *      dist_manager_t *m = dist_manager_new(&(dist_manager_opts_t){
 *          .bind = "tcp://127.0.0.1:5555" });          // or .master = ...
 *      dist_mqueue_t *tasks = dist_manager_queue(m, "task_queue");
 *      dist_mqueue_put(tasks, "i", 42);
 *      int n;
 *      if (dist_mqueue_get_fmt(tasks, 1000, "i", &n) == DIST_ETIMEDOUT)
 *          ...                                          // queue.Empty
 *      dist_manager_destroy(&m);
 *
 *  The queues are the master's named queues (docs/PROTOCOL.md section 7a):
 *  created on first use, bounded by the master's max_queued, not stored
 *  by --store, and shared with every other client of that master
 *  (`dist status` lists them). A program that serves stops its master in
 *  dist_manager_destroy: the queues and what they hold go with it.
 *
 *  Format strings: those of dist/value.h ("one call"), the same letters as
 *  dist_pack and dist_unpack. A put packs the values its format names; a
 *  get unpacks the item into the variables its format names. One item is
 *  the value itself, several are an array of exactly that many values:
 *  dist_mqueue_put(q, "is", 7, "x") puts [7, "x"]. Strings and bytes read
 *  by a get ('s', 'b', 'o') are borrowed from the item, which the queue
 *  handle keeps until its next get_fmt or the manager's destroy; they are
 *  not NUL-terminated ('S' gives a malloc'd NUL-terminated copy instead).
 *
 *  Blocking: put waits for room in the queue and get for an item, up to
 *  their timeout (DIST_FOREVER: no bound). They wait in slices of at
 *  most 500 ms on the master (an item the master hands out as a slice
 *  ends is put back, never lost), so that destroy can end them.
 *
 *  Threads: a manager and its queue handles may be used from several
 *  threads (the client is), with one exception: the strings and bytes of
 *  dist_mqueue_get_fmt are borrowed from the handle, so call get_fmt on
 *  one handle from one thread at a time (dist_mqueue_get returns an owned
 *  value and has no such limit). dist_manager_destroy may be called while
 *  other threads wait in put or get: they return DIST_ECLOSED within a
 *  slice, and destroy returns once they have; no call may start after
 *  destroy returned.
 *
 *  Fork: a manager holds ZeroMQ sockets and, in serve mode, a thread.
 *  Never carry one across fork(): fork (or create pools) first, then
 *  create the manager; a child uses its own manager, never its parent's.
 */
#ifndef DIST_MANAGER_H_INCLUDED
#define DIST_MANAGER_H_INCLUDED

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "client.h"
#include "common.h"
#include "log.h"
#include "value.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dist_manager dist_manager_t;
typedef struct dist_mqueue dist_mqueue_t;

typedef struct {
    const char *bind;              /* serve mode: start a master bound here ("tcp://HOST:PORT",
                                      port 0 picks a free one: dist_manager_endpoint) */
    const char *master;            /* connect mode (bind NULL): the master's endpoint; NULL:
                                      $DIST_MASTER, else tcp://127.0.0.1:5555 */
    const char *name;              /* the client's name (dist_client_opts_t.name) */
    int connect_timeout_ms;        /* as dist_client_opts_t; default 5000 */
    /* CURVE (dist/security.h). Connect mode: key is our secret key,
     * server_key the master's public key, as for any client. Serve mode:
     * key is the master's secret key, clients in allow_clients may connect
     * (allow_workers: workers), and the manager's own connection uses key
     * as its client key too, with server_key defaulting to key (a .key
     * file holds the public key): so the master's .pub must also be in
     * allow_clients. NULL keys: $DIST_KEY, $DIST_SERVER_KEY for the
     * connection (connect mode); serving without key while either is
     * set fails with EINVAL, as the connection would use them. */
    const char *key;
    const char *server_key;
    const char *allow_clients;     /* serve mode only */
    const char *allow_workers;     /* serve mode only */
    bool insecure;                 /* allow a non-loopback endpoint without keys */
    dist_log_fn log;               /* NULL: silent */
    void *log_userdata;
    dist_log_level_t log_level;    /* most verbose level passed to log */
} dist_manager_opts_t;

/* Starts the master (serve mode: opts->bind set) and connects to it, or
 * connects to opts->master. NULL with errno on failure: EINVAL (bad
 * options: bind with master, allow lists without bind, see key above),
 * EADDRINUSE and the other codes of dist_master_new, and those of
 * dist_client_new (the positive code of DIST_ENOMASTER when nobody answers
 * within connect_timeout_ms, of DIST_EREFUSED for a refused key, ...);
 * dist_strerror(errno) names them. Blocks up to connect_timeout_ms. */
DIST_EXPORT dist_manager_t *dist_manager_new(const dist_manager_opts_t *opts);

/* Ends waiting puts and gets (DIST_ECLOSED) and waits for them to
 * return, closes the connection, stops and frees a served master, frees
 * every queue handle; *self_p = NULL. Accepts NULL. */
DIST_EXPORT void dist_manager_destroy(dist_manager_t **self_p);

/* The master's endpoint this manager is connected to (in serve mode the
 * one actually bound, e.g. "tcp://127.0.0.1:41233"). Borrowed, lives as
 * the manager. */
DIST_EXPORT const char *dist_manager_endpoint(const dist_manager_t *self);

/* The client connection, for anything else of dist/client.h (submit,
 * map, status). Borrowed, lives as the manager. */
DIST_EXPORT dist_client_t *dist_manager_client(dist_manager_t *self);

/* The queue named `name` (1-128 letters, digits and `._:-`), created on
 * the master by its first put. Borrowed: the same handle for the same
 * name, valid until dist_manager_destroy. NULL with errno EINVAL (bad
 * name, said through the log callback) or ENOMEM. Sends nothing. */
DIST_EXPORT dist_mqueue_t *dist_manager_queue(dist_manager_t *self, const char *name);

/* The queue's name. Borrowed, lives as the manager. */
DIST_EXPORT const char *dist_mqueue_name(const dist_mqueue_t *self);

/* Puts one value, packed from fmt and the arguments (see above), waiting
 * without bound for room. 0, DIST_EINVAL (bad format), DIST_EMSGSIZE,
 * DIST_ENOMASTER, DIST_ECLOSED (destroyed meanwhile), DIST_ENOMEM. */
DIST_EXPORT int dist_mqueue_put(dist_mqueue_t *self, const char *fmt, ...);

/* The same with a timeout for room: also DIST_EFULL when the queue is
 * still full after timeout_ms (0: at once). */
DIST_EXPORT int dist_mqueue_put_timeout(dist_mqueue_t *self, int timeout_ms, const char *fmt,
                                        ...);
DIST_EXPORT int dist_mqueue_vput(dist_mqueue_t *self, int timeout_ms, const char *fmt,
                                 va_list ap);

/* Puts one value already packed (data, len: exactly one MessagePack
 * value, copied). Returns as dist_mqueue_put_timeout; DIST_EINVAL when the
 * bytes are not one value. */
DIST_EXPORT int dist_mqueue_put_packed(dist_mqueue_t *self, const void *data, size_t len,
                                       int timeout_ms);

/* Takes one item, waiting up to timeout_ms. 0 with *value (owned by the
 * caller: dist_result_destroy; read it with dist_result_int, _str,
 * _value, ...), DIST_ETIMEDOUT (nothing came: Python's queue.Empty),
 * DIST_ENOMASTER, DIST_ECLOSED, DIST_ENOMEM; *value NULL then. */
DIST_EXPORT int dist_mqueue_get(dist_mqueue_t *self, int timeout_ms, dist_result_t **value);

/* Takes one item and unpacks it into the variables of fmt. Returns as
 * dist_mqueue_get, and DIST_EPROTO when the item does not match fmt (it
 * is taken all the same, and stays readable with dist_mqueue_last). */
DIST_EXPORT int dist_mqueue_get_fmt(dist_mqueue_t *self, int timeout_ms, const char *fmt, ...);

/* The item of the last successful dist_mqueue_get_fmt on this handle, or
 * NULL. Borrowed, until the next get_fmt on the handle. */
DIST_EXPORT const msgpack_object *dist_mqueue_last(dist_mqueue_t *self);

/* The number of items in the queue, as the master's STATUS reports it
 * (docs/PROTOCOL.md section 7b: the `depth` of the named queue; 0 for a
 * queue the master does not know yet): one STATUS round trip, a snapshot
 * that others may change at once (as Python's qsize). >= 0, or
 * DIST_ETIMEDOUT, DIST_ENOMASTER, DIST_EPROTO (a status without it). */
DIST_EXPORT long dist_mqueue_qsize(dist_mqueue_t *self);

/* 1 when qsize is 0, 0 when not, or qsize's negative code. */
DIST_EXPORT int dist_mqueue_empty(dist_mqueue_t *self);

#ifdef __cplusplus
}
#endif

#endif

/*  metrics_internal.h - the master's observability endpoint: an HTTP server
 *  (libmicrohttpd, one internal thread) that serves Prometheus metrics, the
 *  status as JSON, a live dashboard page and a health check.
 *
 *  The module knows nothing about the master's internals. The master
 *  publishes a snapshot of its state about twice a second - the STATUS body
 *  of docs/PROTOCOL.md section 7b plus the extension fields described in
 *  docs/OBSERVABILITY.md (`tasks`, `latency`, `recent_failures`,
 *  `history`) - and every request is answered from the latest snapshot:
 *
 *      GET /            the dashboard (one self-contained HTML page)
 *      GET /metrics     Prometheus text exposition format 0.0.4
 *      GET /api/status  the snapshot as JSON
 *      GET /api/task?id=ID  one task, asked of the master's loop (below)
 *      GET /healthz     "ok" while the module runs
 *
 *  Missing fields (an older master) leave out what depends on them; a
 *  field of the wrong type is skipped as if missing. The endpoint has no
 *  authentication: bind it to loopback unless the network is trusted.
 *
 *  Threads: the server runs in a thread of its own, started by new and
 *  joined by destroy. Create the module after any fork() (docs/DESIGN.md,
 *  "Fork rules": never carry a thread across fork). publish may be called
 *  from any thread. The log callback is called from the caller's thread
 *  (new, publish) and from the server's (debug lines about requests and
 *  libmicrohttpd's messages).
 */
#ifndef DIST_METRICS_INTERNAL_H_INCLUDED
#define DIST_METRICS_INTERNAL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log_internal.h"

typedef struct dist__metrics dist__metrics_t;

/* Starts an HTTP server on "HOST:PORT": an IPv4 address, a host name
 * (its first address), or an IPv6 address in brackets ("[::1]:9464").
 * Port 0 picks a free one (see dist__metrics_port). Binds only to that
 * address. lg may be NULL (silent); *lg is copied, its component string
 * must be static. Returns the module, or NULL with *err (when err is not
 * NULL) and errno set: DIST_EINVAL for a malformed HOST:PORT, DIST_ENOENT
 * for a host name that does not resolve, -EADDRINUSE, -EACCES, ... from
 * bind, DIST_ENOMEM, or DIST_ESTATE when the HTTP server cannot start. */
dist__metrics_t *dist__metrics_new(const char *hostport, const dist__logger_t *lg, int *err);

/* The bound port. */
int dist__metrics_port(const dist__metrics_t *m);

/* Replaces the snapshot with a copy of status_map[0..len): one MessagePack
 * map. A buffer that is not one well-formed map is ignored (logged at warn
 * level) and the previous snapshot stays. NULL / 0 clears the snapshot
 * (the data endpoints then answer 503 as before the first publish).
 * Thread-safe; never blocks on a request being served (rendering happens
 * in the server's thread, outside the lock). The caller keeps its buffer. */
void dist__metrics_publish(dist__metrics_t *m, const void *status_map, size_t len);

/* GET /api/task?id=ID (ID: a caller's key or 32 hex digits) is answered
 * by the master's loop, never from the server's thread: the server posts
 * the id, writes one byte to fd (the loop's non-blocking wake pipe) and
 * waits up to 1 s. The loop calls lookup_take on every turn (one atomic
 * load when nothing is posted) and answers the lookup it took with the
 * LOOKUP form of the task (docs/PROTOCOL.md section 7.4), `known` false
 * for an unknown id (404). No answer in time: 503. Without set_wake the
 * endpoint answers 503. fd must stay open until destroy. */
void dist__metrics_set_wake(dist__metrics_t *m, int fd);
bool dist__metrics_lookup_take(dist__metrics_t *m, unsigned char id[16], uint64_t *ticket);
/* Copies map[0..len); an answer for a lookup that gave up is dropped. */
void dist__metrics_lookup_answer(dist__metrics_t *m, uint64_t ticket, const void *map, size_t len,
                                 bool known);

/* Stops the server (closing its connections), joins its thread, frees
 * everything; *m = NULL. Accepts NULL and a pointer to NULL. */
void dist__metrics_destroy(dist__metrics_t **m);

/* ---- exposed for tests ------------------------------------------------------ */

/* Renders a snapshot in the Prometheus text format, as GET /metrics does.
 * Returns a malloc'd NUL-terminated string (*len its length without the
 * NUL), or NULL with *err DIST_EPROTO (not one MessagePack map) or
 * DIST_ENOMEM. */
char *dist__metrics_render_prometheus(const void *status_map, size_t len, size_t *out_len,
                                      int *err);

/* The dashboard page embedded at build time (generated from
 * libdist/src/master/dashboard.html by cmake/embed_file.cmake). */
extern const unsigned char dist__dashboard_html[];
extern const size_t dist__dashboard_html_len;

#endif

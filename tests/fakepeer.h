/* fakepeer.h - fake workers and clients for the master's tests.
 *
 * DEALER sockets in the test process that speak docs/PROTOCOL.md through
 * proto_internal.h, so every message on the wire is checked, plus helpers
 * to start a master in a thread (fp_start); programs are started with
 * dt_spawn of testutil.h. Waits (fp_recv and everything built on it) send a heartbeat
 * every 100 ms from the peers given to fp_keep_alive, so that they stay
 * alive while the test waits on another socket. Failures are cmocka
 * assertions: call these from the test process only.
 */
#ifndef DIST_FAKEPEER_H_INCLUDED
#define DIST_FAKEPEER_H_INCLUDED

#include <czmq.h>
#include <dist.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto_internal.h"
#include "testutil.h"

/* How long an expected message may take. */
#define FP_WAIT_MS 5000
/* Heartbeat timeout of masters started by fp_start (unless the test sets
 * one): long, so that a loaded machine never writes off a fake peer. */
#define FP_SAFE_TIMEOUT_MS 10000

/* A task as a fake worker received it. */
typedef struct {
    dist__id_t id;
    uint32_t attempt;
    uint32_t timeout_ms;
    char task[DIST__NAME_MAX + 1];
} fp_task_t;

/* A result as a fake client received it. */
typedef struct {
    dist__id_t id;
    dist__status_t status;
    char text[2048];
} fp_res_t;

/* ---- masters and programs ------------------------------------------------------------- */

/* Log callback for DIST_TEST_LOG=1 (every line to stderr). */
void fp_log(dist_log_level_t level, const char *component, const char *msg, void *ud);
/* A master in its own thread on tcp://127.0.0.1 (a free port) unless
 * opts says otherwise. */
dist_master_t *fp_start(const dist_master_opts_t *opts);

/* ---- sockets and messages --------------------------------------------------------------- */

void fp_keep_alive(zsock_t *a, zsock_t *b);
zsock_t *fp_connect(dist_master_t *m);
zsock_t *fp_connect_ep(const char *endpoint);
dist_wire_buf_t *fp_buf(msgpack_packer **pk);
/* A body {key: [...]} whose n items the caller packs next. */
dist_wire_buf_t *fp_batch(msgpack_packer **pk, const char *key, size_t n);
/* Sends the body packed in b (and destroys b). */
void fp_send(zsock_t *s, dist__cmd_t cmd, dist_wire_buf_t *b);
/* The next message other than HEARTBEAT within ms: 0 or DIST_ETIMEDOUT. */
int fp_recv(zsock_t *s, int ms, dist__inmsg_t *m);
void fp_expect(zsock_t *s, dist__cmd_t cmd, dist__inmsg_t *m);
/* The next message other than HEARTBEAT, whatever it is. */
void fp_expect_any(zsock_t *s, dist__inmsg_t *m);
void fp_expect_none(zsock_t *s, int ms);
void fp_expect_error(zsock_t *s, const char *code);
void fp_raw(zsock_t *s, int nframes, const char *const *frames, const size_t *lens);
bool fp_str_is(const msgpack_object *map, const char *key, const char *want);
/* Task ids made from small numbers, and back. */
dist__id_t fp_id(int n);
int fp_id_num(const dist__id_t *id);

/* ---- workers ----------------------------------------------------------------------------- */

void fp_hello_worker(zsock_t *s, const char *name, uint32_t slots, uint32_t cap,
                     const char *const *tasks, size_t n);
/* A welcomed worker of one task name (of the master m, or at endpoint). */
zsock_t *fp_worker(dist_master_t *m, const char *name, uint32_t slots, uint32_t cap,
                   const char *task);
zsock_t *fp_worker_ep(const char *endpoint, const char *name, uint32_t slots, uint32_t cap,
                      const char *task);
/* Receives one TASKS message (1 to max tasks, args [i]). */
size_t fp_tasks(zsock_t *w, fp_task_t *out, size_t max);
/* RESULTS with one result: text is the value (ok) or the error. */
void fp_result(zsock_t *w, const dist__id_t *id, uint32_t attempt, dist__status_t st,
               const char *text);

/* ---- clients ----------------------------------------------------------------------------- */

void fp_hello_client(zsock_t *s, const char *name);
/* A welcomed client; *pending gets WELCOME's pending_results. */
zsock_t *fp_client(dist_master_t *m, const char *name, uint64_t *pending);
zsock_t *fp_client_ep(const char *endpoint, const char *name, uint64_t *pending);
/* SUBMIT tasks fp_id(ids[i]) of one name, args [i & 0x7f]. */
void fp_submit(zsock_t *c, const char *task, const int *ids, size_t n, uint32_t timeout_ms);
/* Waits for ACCEPTED: the number accepted; the rejections' count and the
 * first one's code when asked. */
size_t fp_accepted(zsock_t *c, size_t *rejected, char *code, size_t codelen);
void fp_submit_ok(zsock_t *c, const char *task, const int *ids, size_t n);
/* Collects exactly `want` results from RESULTS messages. */
void fp_results(zsock_t *c, fp_res_t *out, size_t want);
/* ACK or RETURN of these ids. */
void fp_ids_msg(zsock_t *s, dist__cmd_t cmd, const dist__id_t *ids, size_t n);
/* Task control (issue 12): SUBMIT of one task `id` of name "t" with
 * options (args [1]); LOOKUP, CANCEL (and other {req, ids}) of fp_id(ids[i]);
 * the REPLY to req with that status (m is the caller's to clear). */
void fp_submit_opts(zsock_t *c, dist__id_t id, const dist__submit_opts_t *o);
void fp_ids_req(zsock_t *c, dist__cmd_t cmd, uint64_t req, const int *ids, size_t n);
void fp_reply(zsock_t *c, uint64_t req, const char *status, dist__inmsg_t *m, dist__reply_t *r);
/* One attempt a LOOKUP should show: its worker ("" for none) and a text
 * its reason contains ("" matches any). */
typedef struct {
    const char *worker, *reason;
} fp_attempt_t;
/* LOOKUP of fp_id(id) from c: asserts its state, task name and that its
 * attempts are n, attempt i + 1 matching want[i]. */
void fp_lookup_attempts(zsock_t *c, uint64_t req, int id, const char *state, const char *task,
                        const fp_attempt_t *want, size_t n);
/* STATUS (the caller clears the reply), or one of its counters. */
void fp_status(zsock_t *c, dist__inmsg_t *m);
uint64_t fp_counter(zsock_t *c, const char *name);

#endif

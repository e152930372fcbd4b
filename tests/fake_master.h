/*  fake_master.h - a small master for client tests, written from
 *  docs/PROTOCOL.md with the codec of proto_internal.h.
 *
 *  It binds a ROUTER on tcp://127.0.0.1 with a free port and serves in a
 *  thread of its own: HELLO/WELCOME (newest connection takes over a name),
 *  RECONNECT to unknown peers, SUBMIT/ACCEPTED, RESULTS kept per client
 *  name until ACKed and re-sent on every HELLO, QPUT/QGET with waiting,
 *  STATUS with a fixed cluster state. Tasks run inside it, by name:
 *
 *    echo   -> its argument array          add   -> the sum of its integers
 *    fail   -> status failed, "fail: boom"  slow  -> echo after args[0] ms
 *    never  -> accepted, no result ever      full  -> refused queue_full the
 *    big    -> refused too_large                       first `full_refusals` times
 *    unserved -> accepted with ACCEPTED unserved: ["unserved"], no result
 *    anything else -> refused unknown_task
 *
 *  Task control, a minimal subset: CANCEL (a task without its result yet
 *  gets a "cancelled" one), LOOKUP (id and state only: leased until done),
 *  FETCH (at once, without waiting; a result ACKed is forgotten).
 *
 *  WELCOME names an instance; fm_forget without keep_results starts a new
 *  one (as a restarted in-memory master).
 *
 *  Every message it receives is recorded, so a test can wait for the n-th
 *  message of a command and look at its body.
 */
#ifndef DIST_FAKE_MASTER_H_INCLUDED
#define DIST_FAKE_MASTER_H_INCLUDED

#include <stdbool.h>

#include "proto_internal.h"

typedef struct fm fm_t;

typedef struct {
    int heartbeat_ms;         /* in WELCOME; 0: 1000 */
    int heartbeat_timeout_ms; /* in WELCOME; 0: 3000 */
    int max_batch;            /* in WELCOME; 0: 10000 */
    bool silent;              /* answer nothing at all */
    bool shuffle;             /* send results in random order and random batches */
    bool duplicate;           /* send every result twice */
    bool heartbeat;           /* send HEARTBEAT to clients every heartbeat_ms */
    int full_refusals;        /* how many "full" tasks are refused before one is accepted */
    bool ignore_acks;         /* record ACKs but keep the results (as if the ACKs were lost) */
    int qget_delay_ms;        /* answer every QGET this much later than it should be */
    int submit_errors;        /* answer the first SUBMITs with ERROR queue_full (no req) */
} fm_opts_t;

fm_t *fm_new(const fm_opts_t *opts);
void fm_destroy(fm_t **self_p);

/* "tcp://127.0.0.1:PORT". */
const char *fm_endpoint(const fm_t *self);

/* Messages of `cmd` received so far. */
int fm_count(fm_t *self, dist__cmd_t cmd);

/* Waits up to timeout_ms for the nth (1-based) message of `cmd`; returns a
 * copy of its body (the caller destroys it) or NULL. */
dist_wire_msg_t *fm_wait(fm_t *self, dist__cmd_t cmd, int nth, int timeout_ms);

/* Forgets every peer, as a restarted master does; `keep_results`: the
 * results waiting for clients survive (as with --store). */
void fm_forget(fm_t *self, bool keep_results);

/* Sends BYE to every peer, as a master that stops cleanly (it goes on
 * serving: the test plays the next master). */
void fm_bye(fm_t *self);

/* Sends NOTICE {served: [task]} or {unserved: [task]} to every peer. */
void fm_notice(fm_t *self, const char *task, bool served);

/* Sends RESULTS for every result still waiting for the named client (as
 * on a HELLO), e.g. to test that duplicates are dropped. */
void fm_resend_results(fm_t *self);

/* Results waiting for their ACK, over all clients. */
int fm_unacked(fm_t *self);

#endif

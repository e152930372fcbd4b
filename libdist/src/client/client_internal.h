/*  client_internal.h - the state of a client (dist/client.h), shared by
 *  its source files:
 *
 *    client.c         the connection: HELLO/WELCOME/RECONNECT, heartbeats,
 *                     the socket pump, dispatching what arrives, waiting
 *    client_idmap.c   task ids to the slots waiting for their answer
 *    client_submit.c  SUBMIT batches, futures, submit and call
 *    client_map.c     maps, in input order and unordered
 *    client_queue.c   QPUT, QGET, STATUS requests
 *    client_control.c task control by id: FETCH, LOOKUP, CANCEL, FAILED,
 *                     RETRY (their REPLY answers)
 *
 *  Locking: every field is under the client's mutex, and only the thread
 *  that set io_busy touches the socket (see client.c). Functions here are
 *  called with the mutex held unless they say otherwise.
 */
#ifndef DIST_CLIENT_INTERNAL_H_INCLUDED
#define DIST_CLIENT_INTERNAL_H_INCLUDED

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "dist/client.h"
#include "log_internal.h"
#include "conn_internal.h"
#include "proto_internal.h"

#define DIST__TOO_LARGE_MSG "the task's arguments exceed the master's message size limit"

/* true when s[0..n) (from a message, not NUL-terminated) is `lit`. */
static inline bool dist__str_is(const char *s, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(s, lit, n) == 0;
}

/* ---- slots and the id map ------------------------------------------------ */

typedef struct dist__job dist__job_t;

enum { DIST__SL_NEW = 0, DIST__SL_SENT, DIST__SL_ACCEPTED, DIST__SL_REJECTED, DIST__SL_DONE };

/* One submitted task, from before it is sent until its result. */
typedef struct {
    dist__id_t id;
    dist__job_t *job; /* the map it belongs to; NULL: the slot of a future */
    size_t index;     /* its input index in the map */
    uint32_t batch;   /* the SUBMIT that carries it, while DIST__SL_SENT */
    uint8_t state;    /* DIST__SL_* */
    bool mapped;      /* in the id map */
    bool fixed_id;    /* the caller chose the id: dist__batch_add keeps it */
} dist__slot_t;

struct dist_future {
    dist__slot_t slot; /* first member: a slot without a job is a future */
    dist_client_t *client;
    dist_result_t *result; /* the result, or the master's refusal */
    /* What it was submitted with, kept until the result: a new instance of
     * the master (which lost every task) is given the task again. */
    char *task;              /* task name, NUL, then the args (one allocation) */
    size_t task_len;
    dist_bytes_t args;       /* points into `task` */
    uint32_t timeout_ms;
    const void *owner;       /* the submit call waiting for its ACCEPTED; NULL after */
    bool resubmitted;        /* given to a new instance: "unknown task" means "not yet" */
    struct dist_future *parked_next; /* in the client's parked list */
    bool parked;             /* refused by a new instance for now: submitted again soon */
    dist__submit_opts_t so;  /* its task options (so.key points into key) */
    char key[DIST__KEY_MAX + 1]; /* the caller's id, or its hex form once asked */
};

/* Ids of the tasks waiting for an answer (client_idmap.c). */
typedef struct {
    dist__slot_t **tab;
    size_t mask; /* capacity - 1; capacity is a power of two */
    size_t n;
} dist__idmap_t;

/* The slot with this id, or NULL. */
dist__slot_t *dist__idmap_find(const dist__idmap_t *m, const dist__id_t *id);
/* Makes room for `more` entries. 0 or DIST_ENOMEM. */
int dist__idmap_reserve(dist__idmap_t *m, size_t more);
/* Adds a slot (after dist__idmap_reserve); sets s->mapped. */
void dist__idmap_put(dist__idmap_t *m, dist__slot_t *s);
/* Removes a slot if it is in the map (s->mapped). */
void dist__idmap_del(dist__idmap_t *m, dist__slot_t *s);
/* Up to max slots of SUBMIT `batch` still waiting for ACCEPTED, into out.
 * Returns how many. Scans the whole map: for rare events only. */
size_t dist__idmap_collect(const dist__idmap_t *m, uint32_t batch, dist__slot_t **out,
                           size_t max);
/* Up to max slots of the map, into out. Returns how many. */
size_t dist__idmap_all(const dist__idmap_t *m, dist__slot_t **out, size_t max);

/* ---- the outbox ------------------------------------------------------------ */

/* A SUBMIT waiting for its ACCEPTED. The body is kept to send it again
 * after a reconnect. Kept sorted by seq. */
typedef struct {
    uint32_t seq;
    uint32_t pending; /* its tasks not yet accepted or rejected */
    bool sent;
    const void *owner; /* the call or map that sent it */
    void *body;
    size_t len;
} dist__batch_t;

/* A QPUT, QGET or STATUS waiting for its reply. Lives on the caller's
 * stack, or on the heap when orphaned (see dist__on_reply). */
typedef struct dist__req {
    struct dist__req *next;
    uint64_t req;
    dist__cmd_t cmd;
    void *body; /* owned */
    size_t len;
    bool sent, done;
    bool abandoned; /* the caller gave up: a late QGET reply is put back */
    bool heap;      /* free it when done */
    char queue[DIST__NAME_MAX + 1];
    int code;
    dist_wire_msg_t *reply; /* owned */
} dist__req_t;

/* ---- the client -------------------------------------------------------------- */

struct dist_client {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool io_busy;      /* a thread owns the socket (pumps or flushes) */
    int wake_fd;       /* eventfd: "the outbox has something new" */
    dist__conn_t conn; /* the socket, its monitor, the session's clocks, WELCOME */
    dist__logger_t log;
    char name[DIST__NAME_MAX + 1];
    char host[256];
    int connect_timeout_ms;
    size_t max_message;   /* ours, then the smaller of ours and the master's */
    size_t own_max_message;
    size_t max_batch;
    dist_wire_limits_t limits;

    bool connected;  /* welcomed and not told RECONNECT since */
    bool welcomed_once;
    bool lost;       /* the master has been silent too long: say HELLO again */
    int fatal;       /* the master refuses to talk to us (version, ban, our key) */
    bool blocked;    /* a send hit the high-water mark: retry soon */

    dist__idmap_t ids;
    dist__batch_t *batches;
    size_t nbatches, capbatches;
    uint32_t next_seq;
    dist__req_t *reqs;
    uint64_t next_req;
    dist__id_t *acks;
    size_t nacks, capacks;
    /* Futures given to a new master instance that refused them for now
     * (no worker has offered the task to it yet, or it is full): they are
     * submitted again at parked_at. */
    dist_future_t *parked;
    int64_t parked_at;
    /* Task names the master said no connected worker offers (warned once
     * until a worker offering one joins). */
    char (*unserved)[DIST__NAME_MAX + 1];
    size_t nunserved, capunserved;
    dist_wire_buf_t *out; /* scratch for small bodies */
    uint64_t dropped, malformed;
};

static inline void dist__client_lock(dist_client_t *self) { pthread_mutex_lock(&self->mu); }
static inline void dist__client_unlock(dist_client_t *self) { pthread_mutex_unlock(&self->mu); }

/* Wakes the thread that pumps the socket: the outbox has changed. */
void dist__client_wake(dist_client_t *self);

/* Sends the ACKs gathered so far, unless another thread owns the socket
 * (it sends them before it blocks). */
void dist__client_ack_now(dist_client_t *self);

typedef struct {
    bool (*ready)(dist_client_t *self, void *arg);
    void (*step)(dist_client_t *self, void *arg); /* queues more to send; may be NULL */
    void *arg;
    /* Non-NULL and true: give up with DIST_ENOMASTER when the master has
     * been silent for connect_timeout_ms. */
    const bool *live;
    /* Non-NULL and in the future: step has something to do then (a map's
     * retries after a backoff), so do not block past it. */
    const int64_t *wake_ns;
} dist__wait_t;

/* Runs the client until w->ready, `deadline` (DIST_ETIMEDOUT), a silent
 * master (DIST_ENOMASTER, when *w->live) or a fatal refusal (self->fatal).
 * Pumps at least once when the socket is free, so that a zero timeout
 * still reads what has arrived. Returns 0 when ready. */
int dist__client_run(dist_client_t *self, const dist__wait_t *w, int64_t deadline);

/* ---- batches (client_submit.c) ---------------------------------------------------- */

/* Bytes a task takes in a SUBMIT body (an upper bound), and the most a
 * body may hold. */
size_t dist__task_bytes(size_t task_len, size_t args_len);
size_t dist__body_room(const dist_client_t *self);

/* Packs one SUBMIT of `count` tasks of one name, gives each slot a random
 * id, puts the slots in the id map and the body in the outbox. 0, or
 * DIST_ENOMEM / -errno with nothing changed. */
int dist__batch_add(dist_client_t *self, const void *owner, const char *task, size_t task_len,
                    uint32_t timeout_ms, const dist__submit_opts_t *so, dist__slot_t **slots,
                    const dist_bytes_t **args, size_t count);

/* The wire options of a task from the public ones (key NULL: none; the
 * key is borrowed). 0 or DIST_EINVAL for a value out of range. */
int dist__task_opts(dist__submit_opts_t *so, const char *key, int priority, int64_t delay_ms,
                    int64_t at_ms, int max_attempts, int backoff_ms, double backoff_factor,
                    int backoff_max_ms, bool retry_on_error);

/* One task of a SUBMIT was answered (accepted, rejected, or its result
 * came first). */
void dist__batch_answered(dist_client_t *self, dist__slot_t *s);

/* Forgets the SUBMITs of an owner (a call or a map that ends). */
void dist__batches_drop(dist_client_t *self, const void *owner);
bool dist__batches_of(const dist_client_t *self, const void *owner);

/* A new instance of the master lost every task it had accepted: submits
 * them again (futures with their kept arguments, maps through their retry
 * lists) and re-sends every SUBMIT not yet answered. */
void dist__resubmit_all(dist_client_t *self);

/* Submits the parked futures again when their time has come. */
void dist__parked_submit(dist_client_t *self, int64_t now);

/* Takes a future out of the parked list, if it is there. */
void dist__future_unpark(dist_client_t *self, dist_future_t *f);

/* A refusal of a resubmitted future that says "not yet": parks it.
 * true when parked. */
bool dist__future_park(dist_client_t *self, dist_future_t *f, int code, bool retry);

/* ---- maps (client_map.c) ------------------------------------------------------------ */

/* A result for a map's slot (the slot is out of the id map already). */
void dist__job_deliver(dist__job_t *j, size_t index, int code, const char *data, size_t len);

/* ACCEPTED news for a map's slot: code 0 accepted, 1 "retry later",
 * otherwise the item fails with that code and the master's message. */
void dist__job_refused(dist_client_t *self, dist__job_t *j, dist__slot_t *s, int code,
                       const char *msg, size_t len);

/* A map's slot that a new master instance lost: submitted again. */
void dist__job_resubmit(dist_client_t *self, dist__job_t *j, dist__slot_t *s);

/* ---- requests (client_queue.c) --------------------------------------------------------- */

dist__req_t *dist__req_find(dist_client_t *self, uint64_t req);
void dist__req_unlink(dist_client_t *self, dist__req_t *q);
/* Frees what a request owns / a request on the heap (an abandoned one). */
void dist__req_clear(dist__req_t *q);
void dist__req_drop(dist__req_t *q);

/* Gives the request a number, packs its whole body with fill(pk, req,
 * arg) and queues it. 0 or DIST_ENOMEM. */
int dist__req_start(dist_client_t *self, dist__req_t *q, dist__cmd_t cmd,
                    void (*fill)(msgpack_packer *pk, uint64_t req, const void *arg),
                    const void *arg);

/* The deadline of a request the master may hold for timeout_ms (a little
 * longer, so that the master's own "timeout" comes first; <0: none). */
int64_t dist__req_deadline(int timeout_ms);
/* Waits for the reply of a started request until deadline: its code,
 * DIST_ETIMEDOUT (no reply), DIST_ENOMASTER. The request is out of the
 * list on return. */
int dist__req_wait(dist_client_t *self, dist__req_t *q, int64_t deadline);

/* The code a QREPLY status or an ERROR code maps to (sections 7a, 8). */
int dist__reply_code(const char *s, size_t n);

/* A QREPLY, STATUS or REPLY answer arrived. */
void dist__on_reply(dist_client_t *self, dist__inmsg_t *m);

/* ---- task control (client_control.c) ---------------------------------------------------- */

/* CANCELs n ids in batches and waits for the answers until deadline.
 * states (may be NULL) receives static strings. 0 or a negative code. */
int dist__cancel_ids(dist_client_t *self, const dist__id_t *ids, size_t n, int64_t deadline,
                     const char **states);

#endif

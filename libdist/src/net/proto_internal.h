/*  proto_internal.h - the libdist protocol, version 1 (docs/PROTOCOL.md):
 *  framing, socket options, and the encoding of every message body.
 *
 *  This is the one place where the wire format lives in C. The master, the
 *  worker and the client send and receive through these functions only, so
 *  that the three sides cannot drift apart. Reading a message:
 *
 *      dist__inmsg_t m;
 *      int rc = dist__proto_recv(sock, true, &lim, &m);   // ROUTER side
 *      if (rc == 0) { ... m.cmd, m.body (a validated map) ...; dist__inmsg_clear(&m); }
 *
 *  Writing one: pack the body into a dist_wire_buf_t with the dist__pk_*
 *  helpers (maps are packed with an explicit count), then dist__proto_send.
 *
 *  Threads: ZeroMQ sockets belong to one thread; these functions keep no
 *  state of their own.
 */
#ifndef DIST_PROTO_INTERNAL_H_INCLUDED
#define DIST_PROTO_INTERNAL_H_INCLUDED

#include <czmq.h>
#include <zmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dist/wire.h"

#define DIST__PROTO_VERSION 1
#define DIST__PROTO_SIG_LEN 4

/* Defaults (docs/PROTOCOL.md section 11). */
#define DIST__MAX_MESSAGE_DEFAULT DIST_MAX_MESSAGE_DEFAULT
#define DIST__MAX_BATCH 10000
#define DIST__BODY_DEPTH 16
#define DIST__BODY_OBJECTS 1000000
#define DIST__NAME_MAX 128
#define DIST__INSTANCE_LEN 16 /* WELCOME instance: 16 lowercase hex digits */
#define DIST__HANDSHAKE_MS 3000
#define DIST__HEARTBEAT_MS 1000
#define DIST__HEARTBEAT_TIMEOUT_MS 3000
#define DIST__HWM 100000
/* The master's inbound queue per connection, in messages: what a peer
 * that sends faster than the master reads can make it buffer (the rest
 * waits in the peer's socket and TCP). Messages are batches, so a few
 * hundred in flight keep the master busy; 100,000 small frames of a flood
 * made it hold tens of MiB per connection. */
#define DIST__ROUTER_RCVHWM 1000
#define DIST__MAX_MALFORMED_IN_A_ROW 100
#define DIST__SPIN_US 50 /* see dist__poll */

/* Commands (section 3). STATUS is used both ways. */
typedef enum {
    DIST__CMD_NONE = 0,
    DIST__CMD_HELLO,
    DIST__CMD_WELCOME,
    DIST__CMD_RECONNECT,
    DIST__CMD_HEARTBEAT,
    DIST__CMD_BYE,
    DIST__CMD_TASKS,
    DIST__CMD_RESULTS,
    DIST__CMD_CREDIT,
    DIST__CMD_RETURN,
    DIST__CMD_SUBMIT,
    DIST__CMD_ACCEPTED,
    DIST__CMD_ACK,
    DIST__CMD_QPUT,
    DIST__CMD_QGET,
    DIST__CMD_QREPLY,
    DIST__CMD_STATUS,
    DIST__CMD_ERROR,
    DIST__CMD_NOTICE,

    /* task control (issue 12, section 7.4): client to master, and CANCEL
     * master to worker; REPLY answers them */
    DIST__CMD_LOOKUP,
    DIST__CMD_FETCH,
    DIST__CMD_CANCEL,
    DIST__CMD_FAILED,
    DIST__CMD_RETRY,
    DIST__CMD_REPLY,
    DIST__CMD_COUNT
} dist__cmd_t;

/* "HELLO", ... ; NULL for an unknown value. */
const char *dist__cmd_name(dist__cmd_t cmd);

/* ---- task ids -------------------------------------------------------------- */

typedef struct {
    uint8_t b[16];
} dist__id_t;

/* 16 random bytes (getrandom). 0 or -errno. */
int dist__id_random(dist__id_t *id);

/* 32 lowercase hex digits and a NUL into out[33]. */
void dist__id_hex(const dist__id_t *id, char out[33]);

/* A caller's id ("key", issue 12): 1 to DIST__KEY_MAX bytes 0x21-0x7e
 * (printable ASCII without space). */
#define DIST__KEY_MAX 128
bool dist__key_ok(const char *s, size_t n);

/* The task id of a key: exactly 32 lowercase hex digits are the id's own
 * bytes (the form dist__id_hex prints), any other valid key is hashed to
 * 16 bytes with SipHash-2-4-128 under a fixed key (two distinct keys
 * collide with probability 2^-64 per pair, like two random ids of 64
 * bits would). 0, or DIST_EINVAL for an invalid key. */
int dist__id_from_key(const char *s, size_t n, dist__id_t *id);

static inline bool dist__id_eq(const dist__id_t *a, const dist__id_t *b)
{
    return memcmp(a->b, b->b, 16) == 0;
}

/* ---- result statuses (sections 6.3 and 6.5) ------------------------------- */

typedef enum {
    DIST__ST_OK = 0,
    DIST__ST_FAILED,       /* final: the task reported an error */
    DIST__ST_UNKNOWN_TASK, /* final */
    DIST__ST_BAD_ARGS,     /* final */
    DIST__ST_TOO_LARGE,    /* final */
    DIST__ST_CRASHED,      /* retryable: its process died */
    DIST__ST_TIMEOUT,      /* retryable: killed at its timeout */
    DIST__ST_GAVE_UP,      /* final, master only: the retry budget is spent */
    DIST__ST_CANCELLED,    /* final: cancelled by a client (CANCEL) */
    DIST__ST_RETRY,        /* retryable: the task asked for it (dist_task_retry), after retry_ms */
    DIST__ST_COUNT
} dist__status_t;

const char *dist__status_name(dist__status_t st);
/* Parses a status string; DIST__ST_COUNT when unknown. */
dist__status_t dist__status_parse(const char *s, size_t n);
bool dist__status_final(dist__status_t st);
/* The DIST_E* code a client sees for a status (0 for ok). */
int dist__status_errcode(dist__status_t st);
/* The status a worker reports for a pool result code (0, DIST_ETASK, ...). */
dist__status_t dist__status_from_code(int code);

/* ---- sockets ---------------------------------------------------------------- */

typedef struct {
    size_t max_message;   /* 0: DIST__MAX_MESSAGE_DEFAULT */
    int handshake_ms;     /* 0: DIST__HANDSHAKE_MS */
    int heartbeat_ms;     /* 0: DIST__HEARTBEAT_MS (transport heartbeats) */
    int heartbeat_timeout_ms; /* 0: DIST__HEARTBEAT_TIMEOUT_MS */
    int linger_ms;        /* -1: the role's default (master 0, peers 500) */
} dist__sockopts_t;

/* zsock_new() that leaves the process's SIGINT and SIGTERM handling as it
 * was (czmq's first socket would install handlers of its own). For the
 * sockets of the worker and the client, which live in other programs.
 * NULL when zsock_new fails. */
zsock_t *dist__sock_new(int type);

/* Applies the options of section 1 to a ROUTER (master) or DEALER (peer)
 * socket, before bind/connect. */
void dist__sock_setup(zsock_t *sock, bool router, const dist__sockopts_t *o);

/* Refuses libzmq older than 4.3.3 (known CVEs). 0 or DIST_ESTATE, with a
 * message in err[0..errlen) when non-NULL. */
int dist__zmq_version_ok(char *err, size_t errlen);

/* zmq_poll that first spins (polls without blocking) for up to spin_us
 * microseconds when timeout_ms allows: a message that is already on its way
 * then costs no sleep and wake-up of this thread, which on these machines
 * costs about 25 us per cross-CPU hop (docs/PERFORMANCE notes). Same
 * returns as zmq_poll. */
int dist__poll(zmq_pollitem_t *items, int n, long timeout_ms, int spin_us);

/* A name for a socket monitor's inproc endpoint, unique in this process
 * for its whole life: a name made from an object's address came back for
 * the next object at that address while libzmq still held the old
 * endpoint, and zmq_socket_monitor then failed, leaving that object
 * without its connection events. */
void dist__monitor_name(char *buf, size_t len, const char *who);

/* Reads one event from a socket monitor (zmq_socket_monitor's PAIR end)
 * without waiting: true with *event, and when not NULL *value and the
 * endpoint it concerns (NUL-terminated, cut to eplen), or false when none
 * is waiting. */
bool dist__monitor_event(zsock_t *mon, uint16_t *event, uint32_t *value, char *ep, size_t eplen);

/* ---- receiving ---------------------------------------------------------------- */

/* Why a message was dropped (for counters and logs). */
typedef enum {
    DIST__BAD_NONE = 0,
    DIST__BAD_FRAMES,     /* wrong number of frames */
    DIST__BAD_SIGNATURE,  /* frame 0 is not DST + version */
    DIST__BAD_VERSION,    /* DST with another version: reply unsupported_version */
    DIST__BAD_COMMAND,    /* unknown command */
    DIST__BAD_BODY,       /* not one valid MessagePack map within limits */
} dist__bad_t;

typedef struct {
    uint8_t rid[256];     /* routing id (ROUTER side only) */
    size_t rid_len;
    dist__cmd_t cmd;
    dist_wire_msg_t *body; /* owned; a map */
    const msgpack_object *root;
    dist__bad_t bad;      /* when dist__proto_recv returned DIST_EPROTO */
    int version;          /* the version byte seen, for DIST__BAD_VERSION */
    char user_id[64];     /* ROUTER side, HELLO and RESULTS only: the ZAP user id of the
                             connection ("" without one; see security_internal.h) */
} dist__inmsg_t;

/* Receives one message without blocking. ROUTER sockets expect a routing id
 * frame first. Checks frame count (draining and dropping extra frames
 * without keeping them), signature, version, command, and validates and
 * decodes the body. Returns 0 with *m filled (free it with
 * dist__inmsg_clear), DIST_EAGAIN when nothing is waiting, DIST_EPROTO for
 * a dropped message (m->bad says why; m->rid is set when known), or -errno. */
int dist__proto_recv(zsock_t *sock, bool router, const dist_wire_limits_t *limits,
                     dist__inmsg_t *m);

void dist__inmsg_clear(dist__inmsg_t *m);

/* The checks dist__proto_recv makes once it has the frames past the
 * routing id, in order: frames_ok (the count was right), signature,
 * version, command, body. Sets m->cmd, m->body and m->root and returns 0,
 * or sets m->bad (and m->version) and returns DIST_EPROTO. The frames are
 * only read; m->body is owned as for dist__proto_recv. Shared with the
 * master's dist__m_feed, so that tests and the fuzzer run these checks
 * rather than a copy of them. */
int dist__proto_check(dist__inmsg_t *m, bool frames_ok, const uint8_t *sig, size_t sig_len,
                      const void *cmd, size_t cmd_len, const void *body, size_t body_len,
                      const dist_wire_limits_t *limits);

/* The limits every body is checked against (section 11) for a given
 * maximum message size. */
dist_wire_limits_t dist__body_limits(size_t max_message);

/* ---- sending ------------------------------------------------------------------ */

/* Sends [rid] sig cmd body without blocking. rid NULL for DEALER sockets.
 * Returns 0, DIST_EAGAIN (high-water mark; keep the message and retry),
 * -EHOSTUNREACH (ROUTER: that peer is gone), or -errno. */
int dist__proto_send(zsock_t *sock, const void *rid, size_t rid_len, dist__cmd_t cmd,
                     const void *body, size_t len);

/* Sends a body held in a dist_wire_buf_t (checking its status first:
 * DIST_EMSGSIZE or DIST_ENOMEM when packing failed). */
int dist__proto_send_buf(zsock_t *sock, const void *rid, size_t rid_len, dist__cmd_t cmd,
                         dist_wire_buf_t *buf);

/* Sends a message with an empty map body. */
int dist__proto_send_empty(zsock_t *sock, const void *rid, size_t rid_len, dist__cmd_t cmd);

/* Sends ERROR {code, error[, req]}; req 0 leaves it out. */
int dist__proto_send_error(zsock_t *sock, const void *rid, size_t rid_len, const char *code,
                           const char *error, uint64_t req);

/* The unsupported-version reply of section 8. */
int dist__proto_send_bad_version(zsock_t *sock, const void *rid, size_t rid_len);

/* ---- packing helpers ------------------------------------------------------------ */

void dist__pk_str(msgpack_packer *pk, const char *s);
void dist__pk_strn(msgpack_packer *pk, const char *s, size_t n);
void dist__pk_bin(msgpack_packer *pk, const void *p, size_t n);
void dist__pk_id(msgpack_packer *pk, const dist__id_t *id);
/* key + value pairs, to be used inside msgpack_pack_map(pk, count) */
void dist__pk_kv_str(msgpack_packer *pk, const char *key, const char *val);
void dist__pk_kv_u64(msgpack_packer *pk, const char *key, uint64_t val);
void dist__pk_kv_f64(msgpack_packer *pk, const char *key, double val);
void dist__pk_kv_bool(msgpack_packer *pk, const char *key, bool val);
void dist__pk_kv_bin(msgpack_packer *pk, const char *key, const void *p, size_t n);
void dist__pk_kv_id(msgpack_packer *pk, const char *key, const dist__id_t *id);

/* ---- reading fields ------------------------------------------------------------- */

/* Each returns 0 or DIST_EPROTO (missing or wrong type). Strings and bins
 * are borrowed from the message. */
int dist__get_str(const msgpack_object *map, const char *key, const char **s, size_t *n);
int dist__get_u64(const msgpack_object *map, const char *key, uint64_t *v);
int dist__get_u32(const msgpack_object *map, const char *key, uint32_t *v);
int dist__get_bin(const msgpack_object *map, const char *key, const void **p, size_t *n);
int dist__get_id(const msgpack_object *map, const char *key, dist__id_t *id);
int dist__get_array(const msgpack_object *map, const char *key, const msgpack_object **items,
                    size_t *n);
/* Optional fields: *v keeps its value when the key is absent; DIST_EPROTO
 * only for a present field of the wrong type. */
int dist__opt_u32(const msgpack_object *map, const char *key, uint32_t *v);
int dist__opt_str(const msgpack_object *map, const char *key, const char **s, size_t *n);

/* ---- typed bodies -------------------------------------------------------------- */

/* A task as it travels in SUBMIT (attempt 0) and TASKS. Borrowed pointers. */
typedef struct {
    dist__id_t id;
    uint32_t attempt;
    const char *task;
    size_t task_len;
    const void *args;
    size_t args_len;
    uint32_t timeout_ms;
} dist__task_t;

/* A result as it travels in RESULTS (worker: with attempt; master to
 * client: attempt 0 and not packed). Borrowed pointers. */
typedef struct {
    dist__id_t id;
    uint32_t attempt;
    dist__status_t status;
    const void *value;   /* status ok */
    size_t value_len;
    const char *error;   /* otherwise */
    size_t error_len;
    uint32_t retry_ms;   /* status retry only: the delay the task asked for */
} dist__result_t;

/* Parses one task map / result map. `with_attempt`: the field is required
 * (TASKS, worker RESULTS) rather than absent. 0 or DIST_EPROTO. The args of
 * a task must be a bin holding one MessagePack array; that is checked by
 * whoever runs it, not here. */
int dist__parse_task(const msgpack_object *o, bool with_attempt, dist__task_t *t);
int dist__parse_result(const msgpack_object *o, bool with_attempt, dist__result_t *r);

/* Packs one task map / result map (inside an array the caller opened). */
void dist__pack_task(msgpack_packer *pk, const dist__task_t *t, bool with_attempt);
void dist__pack_result(msgpack_packer *pk, const dist__result_t *r, bool with_attempt);

/* Name checks: 1-128 bytes of letters, digits and `._:-` (task and queue
 * names), or 1-128 bytes of valid UTF-8 without NUL (peer names, hosts:
 * they end up in logs, JSON status and metrics labels). */
bool dist__name_ok(const char *s, size_t n);
bool dist__peer_name_ok(const char *s, size_t n);

/* ---- every other message body (proto_msg.c) ------------------------------------ */

/* Each body has a struct, one parse and one pack function. Parsers take the
 * body's root map, borrow every string, bin and array from the message
 * (valid while it lives), ignore unknown fields and return 0 or
 * DIST_EPROTO. Packers write one complete map, except where a body ends
 * with a list of opaque items: then the packer opens that array last and
 * the caller packs exactly the announced number of items. */

typedef struct {
    const char *s;
    size_t n;
} dist__str_t;

typedef enum { DIST__PEER_WORKER = 1, DIST__PEER_CLIENT = 2 } dist__peer_role_t;

/* HELLO (section 4). name and host: 1-128 bytes of UTF-8 without NUL;
 * version (optional; n 0 when absent): at most 128 bytes of UTF-8
 * without NUL. A worker also needs slots >= 1, capacity >= 1, and tasks:
 * at most DIST__MAX_BATCH names, each dist__name_ok. Packing reads the
 * task names from names[0..ntasks); parsing leaves them, validated, in
 * tasks[0..ntasks) (msgpack str objects). */
typedef struct {
    dist__peer_role_t role;
    dist__str_t name, host, version;
    uint32_t pid;
    uint32_t slots, capacity; /* worker */
    const dist__str_t *names; /* pack */
    const msgpack_object *tasks; /* parse */
    size_t ntasks;
} dist__hello_t;

/* On DIST_EPROTO, *why (when not NULL) names the field, in words the
 * master sends back in its ERROR. */
int dist__parse_hello(const msgpack_object *o, dist__hello_t *h, const char **why);
void dist__pack_hello(msgpack_packer *pk, const dist__hello_t *h);

/* WELCOME (section 4). The one set of clamping rules every peer applies
 * (a field absent, 0, or of the wrong type takes its default):
 *   heartbeat_ms          default 1000, within [10, 3600000]
 *   heartbeat_timeout_ms  default 3000, within [heartbeat_ms, 3600000]
 *   max_batch             default DIST__MAX_BATCH, within [1, DIST__MAX_BATCH]
 *   max_message           default DIST__MAX_MESSAGE_DEFAULT, at least 4096
 *   master, version       default "", cut to DIST__NAME_MAX bytes
 *   pending_results       default 0
 *   instance              default "" (unknown); anything but a str of
 *                         DIST__INSTANCE_LEN lowercase hex digits counts as
 *                         the wrong type
 * A WELCOME is never refused for its fields (the peer is welcomed in any
 * case): the parser returns DIST_EPROTO when a field had the wrong type,
 * with *w filled all the same. Packing writes pending_results only when
 * `client`, and instance only when it is not empty. */
typedef struct {
    dist__str_t master, version;
    dist__str_t instance; /* which run of the master: a new one lost every task */
    uint32_t heartbeat_ms, heartbeat_timeout_ms, max_message, max_batch;
    uint32_t pending_results;
    bool client;
} dist__welcome_t;

int dist__parse_welcome(const msgpack_object *o, dist__welcome_t *w);
void dist__pack_welcome(msgpack_packer *pk, const dist__welcome_t *w);

/* ERROR (section 8): code and error (str, required), req (u64, optional;
 * 0 when absent, and left out when packing 0). */
typedef struct {
    dist__str_t code, error;
    uint64_t req;
} dist__error_t;

int dist__parse_error(const msgpack_object *o, dist__error_t *e);
void dist__pack_error(msgpack_packer *pk, const dist__error_t *e);

/* CREDIT (section 6.2): capacity, u32. */
typedef struct {
    uint32_t capacity;
} dist__credit_t;

int dist__parse_credit(const msgpack_object *o, dist__credit_t *c);
void dist__pack_credit(msgpack_packer *pk, const dist__credit_t *c);

/* The bodies that are one list: {tasks: [...]} (TASKS, SUBMIT), {results:
 * [...]} (RESULTS), {ids: [...]} (ACK, RETURN). The head opens the map
 * and the array of n items (n UINT32_MAX: an array32 header whose count
 * the caller patches in its last 4 bytes); the caller packs the items
 * with dist__pack_task, dist__pack_result or dist__pk_id. Parsing checks
 * that the array is there, not the items (each is parsed on its own, so
 * that one bad item does not sink its batch). */
void dist__pack_list_head(msgpack_packer *pk, dist__cmd_t cmd, size_t n);
int dist__parse_list(const msgpack_object *o, dist__cmd_t cmd, const msgpack_object **items,
                     size_t *n);
/* An item of an id list: false for anything but a bin16. */
bool dist__list_id(const msgpack_object *item, dist__id_t *id);

/* ACCEPTED (section 6.4): {ids: [bin16...], rejected: [reject...],
 * unserved: [name...] (optional)}. Packing is in steps:
 * dist__pack_accepted (or dist__pack_accepted_head with `unserved` true,
 * for a map of three) opens the map and the ids array (the caller packs
 * nids ids with dist__pk_id), dist__pack_rejected opens the rejected
 * array (the caller packs nrejected dist__pack_reject), and then, only
 * after a head with `unserved`, dist__pack_names(pk, "unserved", ...).
 * Parsing: unserved absent gives nunserved 0; present, it must be an
 * array of at most DIST__MAX_BATCH dist__name_ok names (DIST_EPROTO). */
typedef struct {
    const msgpack_object *ids, *rejected, *unserved;
    size_t nids, nrejected, nunserved;
} dist__accepted_t;

typedef struct {
    uint32_t index;
    bool has_id;
    dist__id_t id;
    dist__str_t code, error;
} dist__reject_t;

int dist__parse_accepted(const msgpack_object *o, dist__accepted_t *a);
void dist__pack_accepted(msgpack_packer *pk, size_t nids);
void dist__pack_accepted_head(msgpack_packer *pk, size_t nids, bool unserved);
void dist__pack_rejected(msgpack_packer *pk, size_t nrejected);
/* A rejected map needs index, code and error; id is optional. */
int dist__parse_reject(const msgpack_object *o, dist__reject_t *r);
void dist__pack_reject(msgpack_packer *pk, const dist__reject_t *r);

/* Requests (section 7): QPUT, QGET and STATUS carry a req (u64) that the
 * answer echoes. Their parsers return DIST_EPROTO without a valid req
 * (the master answers ERROR malformed: it cannot name the request), and
 * DIST_EINVAL, with req set, when only another field is wrong (the
 * master answers bad_request for that req). */

/* QPUT: queue (dist__name_ok), items (1 to DIST__MAX_BATCH bins; packed
 * last, by the caller), timeout_ms (optional, 0). */
typedef struct {
    uint64_t req;
    dist__str_t queue;
    const msgpack_object *items; /* parse */
    size_t nitems;
    uint32_t timeout_ms;
} dist__qput_t;

int dist__parse_qput(const msgpack_object *o, dist__qput_t *q);
void dist__pack_qput(msgpack_packer *pk, const dist__qput_t *q);

/* QGET: queue, max (optional, default 1, >= 1), timeout_ms (optional, 0). */
typedef struct {
    uint64_t req;
    dist__str_t queue;
    uint32_t max, timeout_ms;
} dist__qget_t;

int dist__parse_qget(const msgpack_object *o, dist__qget_t *q);
void dist__pack_qget(msgpack_packer *pk, const dist__qget_t *q);

/* QREPLY: req, status (str), items (array of bins, packed last by the
 * caller; the parser checks that each is a bin). DIST_EPROTO without req. */
typedef struct {
    uint64_t req;
    dist__str_t status;
    const msgpack_object *items; /* parse */
    size_t nitems;
} dist__qreply_t;

int dist__parse_qreply(const msgpack_object *o, dist__qreply_t *r);
void dist__pack_qreply(msgpack_packer *pk, const dist__qreply_t *r);

/* STATUS from a client: {req}. The master's answer (master_status.c) is a
 * report rather than a body with fixed fields; its req is read with
 * dist__parse_status_req too. */
typedef struct {
    uint64_t req;
} dist__status_req_t;

int dist__parse_status_req(const msgpack_object *o, dist__status_req_t *s);
void dist__pack_status_req(msgpack_packer *pk, const dist__status_req_t *s);

/* A key and an array of task names (dist__str_t), inside a map the caller
 * opened: ACCEPTED's unserved, NOTICE's lists. */
void dist__pack_names(msgpack_packer *pk, const char *key, const dist__str_t *names, size_t n);

/* NOTICE, master to client (section 6.7): {served: [name...], unserved:
 * [name...]}, both optional (absent: n 0), each an array of at most
 * DIST__MAX_BATCH dist__name_ok names. unserved: no connected worker
 * offers these task names any more, and this client has tasks of them
 * queued; served: a worker offering them joined. Packing reads
 * served_names / unserved_names and writes only the non-empty lists;
 * parsing leaves the validated str objects in served / unserved. */
typedef struct {
    const dist__str_t *served_names, *unserved_names; /* pack */
    const msgpack_object *served, *unserved;          /* parse */
    size_t nserved, nunserved;
} dist__notice_t;

int dist__parse_notice(const msgpack_object *o, dist__notice_t *n);
void dist__pack_notice(msgpack_packer *pk, const dist__notice_t *n);

/* ---- task control (issue 12; docs/PROTOCOL.md sections 6.6 and 7.4) ------------- */

#define DIST__PRIORITY_LEVELS 10          /* priorities 0..9, higher first */
#define DIST__DELAY_MAX_MS 2592000000ull  /* 30 days: delay_ms, and at_ms beyond now */
#define DIST__ATTEMPTS_MAX 1000           /* max_attempts of a task */

/* The optional fields of a SUBMIT task map (client to master), parsed
 * beside dist__parse_task. Zero values mean absent; has_* tell present
 * fields apart where 0 is a value. Packed only when set, so that a task
 * without options is the same bytes as before. */
typedef struct {
    dist__str_t key;          /* n 0: none; else dist__key_ok */
    uint32_t priority;        /* 0..9 */
    bool has_delay, has_at;
    uint32_t delay_ms;        /* <= DIST__DELAY_MAX_MS */
    uint64_t at_ms;           /* unix ms; checked against now by the master */
    uint32_t max_attempts;    /* 0: the master's default; else 1..DIST__ATTEMPTS_MAX */
    uint32_t backoff_ms;      /* 0: retry at once */
    double backoff_factor;    /* 0: default 2.0; else >= 1.0 */
    uint32_t backoff_max_ms;  /* 0: default 3,600,000 */
    bool retry_on_error;
} dist__submit_opts_t;

#define DIST__BACKOFF_FACTOR_DEFAULT 2.0
#define DIST__BACKOFF_MAX_DEFAULT 3600000u

/* Reads the options of a task map (*o zeroed first). DIST_EPROTO for a
 * field of the wrong type, DIST_EINVAL for one out of range (the master
 * rejects the task with bad_request); *why, when not NULL, says which in
 * words. */
int dist__parse_submit_opts(const msgpack_object *o, dist__submit_opts_t *s, const char **why);
/* How many map entries dist__pack_submit_opts writes (0 for none set). */
size_t dist__submit_opts_count(const dist__submit_opts_t *s);
/* Writes those entries (inside a map the caller opened with room for them). */
void dist__pack_submit_opts(msgpack_packer *pk, const dist__submit_opts_t *s);
/* A SUBMIT task map with its options (NULL: dist__pack_task(pk, t, false)). */
void dist__pack_submit_task(msgpack_packer *pk, const dist__task_t *t,
                            const dist__submit_opts_t *s);

/* LOOKUP, CANCEL and RETRY from a client: {req, ids: [bin16] (1 to
 * DIST__MAX_BATCH)}; CANCEL from the master to a worker: {ids} (with_req
 * false: no req). The ids array is packed last by the caller (nids
 * dist__pk_id); the parser checks every item is a bin16 (read them with
 * dist__list_id). Requests: DIST_EPROTO without req, DIST_EINVAL for bad
 * ids (req set). */
typedef struct {
    uint64_t req;
    const msgpack_object *ids; /* parse */
    size_t nids;
} dist__ids_req_t;

int dist__parse_ids_req(const msgpack_object *o, bool with_req, dist__ids_req_t *r);
void dist__pack_ids_req(msgpack_packer *pk, const dist__ids_req_t *r, bool with_req);

/* FETCH: {req, id (bin16), wait_ms (optional, 0)}. */
typedef struct {
    uint64_t req;
    dist__id_t id;
    uint32_t wait_ms;
} dist__fetch_t;

int dist__parse_fetch(const msgpack_object *o, dist__fetch_t *f);
void dist__pack_fetch(msgpack_packer *pk, const dist__fetch_t *f);

/* FAILED: {req, max (optional; 0 or absent: all)}. */
typedef struct {
    uint64_t req;
    uint32_t max;
} dist__failed_req_t;

int dist__parse_failed_req(const msgpack_object *o, dist__failed_req_t *f);
void dist__pack_failed_req(msgpack_packer *pk, const dist__failed_req_t *f);

/* One attempt of a task as LOOKUP shows it. */
typedef struct {
    uint32_t attempt;
    dist__str_t worker, reason;
} dist__attempt_info_t;

/* One task as LOOKUP and FAILED show it. State "unknown" carries only id
 * (and state). Strings with n 0 are left out when packing (worker, key,
 * error); times are unix ms, 0 when not yet. */
typedef struct {
    dist__id_t id;
    dist__str_t key, task, state, worker, error;
    uint32_t priority;
    uint64_t submitted_ms, started_ms, finished_ms, not_before_ms;
    const dist__attempt_info_t *attempts; /* pack */
    const msgpack_object *attempt_maps;   /* parse: nattempts maps (dist__parse_attempt_info) */
    size_t nattempts;
} dist__task_info_t;

int dist__parse_task_info(const msgpack_object *o, dist__task_info_t *t);
void dist__pack_task_info(msgpack_packer *pk, const dist__task_info_t *t);
int dist__parse_attempt_info(const msgpack_object *o, dist__attempt_info_t *a);

/* REPLY (master to client): {req, status ("ok" or an error code of 6.4),
 * state (FETCH), result (FETCH, a result map of 6.5 when final), and one
 * list: tasks (LOOKUP, FAILED: task info maps) or states (CANCEL, RETRY:
 * strs)}. Packing writes the list's key and opens its array last (the
 * caller packs nitems items); list LIST_NONE writes none. Parsing: the
 * optional fields are NULL / n 0 when absent; DIST_EPROTO without req or
 * status, or for a field of the wrong type. */
typedef enum { DIST__REPLY_NONE = 0, DIST__REPLY_TASKS, DIST__REPLY_STATES } dist__reply_list_t;

typedef struct {
    uint64_t req;
    dist__str_t status, state;
    const dist__result_t *result;    /* pack (NULL: none) */
    const msgpack_object *result_map; /* parse (NULL: none) */
    dist__reply_list_t list;
    const msgpack_object *items;     /* parse */
    size_t nitems;
} dist__reply_t;

int dist__parse_reply(const msgpack_object *o, dist__reply_t *r);
void dist__pack_reply(msgpack_packer *pk, const dist__reply_t *r);

#endif

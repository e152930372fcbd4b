/*  conn_internal.h - the connection of a peer (a worker or a client) to its
 *  master: what both peers do the same way (docs/PROTOCOL.md sections 1, 4,
 *  5 and 9).
 *
 *      dist__conn_t c;
 *      dist__conn_opts_t o = { .master = ..., .key = ..., .who = "client" };
 *      int e = dist__conn_open(&c, &o, &log);        // 0 or an errno value
 *      ... dist__conn_send(&c, DIST__CMD_HELLO, body, len);
 *      ... poll c.sock (and c.mon when not NULL: dist__conn_on_monitor)
 *      ... dist__conn_heard(&c, now) for each message, dist__conn_welcome on
 *          WELCOME, dist__conn_hello_due / dist__conn_silent / dist__conn_next_ns
 *          for the timers
 *      dist__conn_close(&c);
 *
 *  It owns the DEALER socket, its monitor, the endpoint, and the session's
 *  clocks and the values the master announced in WELCOME. What a peer does
 *  with a session (a client's requests, a worker's leases) stays with the
 *  peer; so do its flags for "welcomed" and "lost".
 *
 *  Sending never blocks: every send is non-blocking (ZMQ_DONTWAIT) and the
 *  socket has a send timeout of 0 besides, so that a send that would block
 *  - no connection yet, the high-water mark, or a master whose ZAP handler
 *  refused our key, after which libzmq stops reconnecting - returns
 *  DIST_EAGAIN at once.
 *
 *  Threads: one thread at a time, like the socket.
 */
#ifndef DIST_CONN_INTERNAL_H_INCLUDED
#define DIST_CONN_INTERNAL_H_INCLUDED

#include "log_internal.h"
#include "proto_internal.h"

#define DIST__HELLO_EVERY_MS 1000 /* section 4: repeat HELLO every second until welcomed */

typedef struct {
    const char *master;      /* NULL or "": $DIST_MASTER, else DIST_DEFAULT_ENDPOINT */
    const char *key, *server_key; /* NULL: $DIST_KEY, $DIST_SERVER_KEY */
    bool insecure;
    size_t max_message;      /* 0: DIST__MAX_MESSAGE_DEFAULT */
    const char *who;         /* "client" or "worker", for messages (static) */
} dist__conn_opts_t;

typedef struct {
    const dist__logger_t *log; /* borrowed */
    const char *who;
    char *endpoint;
    zsock_t *sock;
    void *zh;                /* sock's libzmq handle */
    zsock_t *mon;            /* its connection events; NULL when unavailable */
    bool secure;             /* CURVE is on */
    bool up;                 /* (with a monitor) a handshake succeeded, no disconnect since */
    bool refusal_logged;     /* the last handshakes failed (said once per run of failures) */
    int refused;             /* DIST_EREFUSED once the master refused our key */
    char why[320];           /* why the last handshake failed, in words ("" when none);
                                also "cannot resolve host ..." from dist__conn_open */
    bool why_final;          /* why says the master refuses this peer (keys): waiting
                                longer will not help */
    char server_key[256];    /* the master key file given (option or env), for messages */
    int64_t last_hello_ns, last_heard_ns, last_sent_ns;
    dist__welcome_t wl;      /* the last WELCOME, clamped; defaults before */
    char master[DIST__NAME_MAX + 1]; /* its master name */
    char instance[DIST__INSTANCE_LEN + 1];     /* the instance of the last WELCOME ("": none) */
    char old_instance[DIST__INSTANCE_LEN + 1]; /* the one before, when new_instance */
    bool new_instance;       /* the last WELCOME came from another instance of the master
                                than the one before (which was known): every task of the
                                old one is gone */
    bool bye;                /* the master said BYE (dist__conn_lost); cleared by WELCOME */
} dist__conn_t;

/* The endpoint: the option, else $DIST_MASTER, else DIST_DEFAULT_ENDPOINT
 * (empty strings count as absent). Borrowed, never NULL. */
const char *dist__conn_endpoint(const char *opt);

/* The errno value for a code of dist__curve_peer_setup (ENOENT, EACCES,
 * ENOMEM, else EINVAL). */
int dist__conn_errno(int rc);

/* Checks the libzmq version (ENOTSUP when too old), the keys and
 * protected mode, without a socket: before a peer allocates anything (a
 * worker forks its pool after it). 0 or an errno value, the reason
 * logged. */
int dist__conn_check(const dist__conn_opts_t *o, const dist__logger_t *log);

/* Creates the DEALER socket (section 1 options, CURVE when keys are
 * given), its monitor, and connects. 0 or an errno value (EINVAL for a
 * bad endpoint, ENOENT/EACCES for key files, ENOMEM), the reason logged;
 * on failure *c holds nothing to close. */
int dist__conn_open(dist__conn_t *c, const dist__conn_opts_t *o, const dist__logger_t *log);

/* Closes the socket: at once when `now` (nobody to deliver to), else with
 * its linger. Accepts a closed or zeroed conn. */
void dist__conn_close(dist__conn_t *c, bool now);

/* dist__proto_send on the socket; records the time of a sent message.
 * Same returns. */
int dist__conn_send(dist__conn_t *c, dist__cmd_t cmd, const void *body, size_t len);

/* Events of the monitor, read without waiting. Logs failed handshakes in
 * words (once per run of failures); a refused key sets c->refused. Returns
 * true when a connection (re)came up: a new routing id to the master, to
 * which the peer says HELLO at once (section 5). */
bool dist__conn_on_monitor(dist__conn_t *c);

/* What a failed handshake event of the monitor means for this peer, in
 * words, into c->why (and c->why_final when the keys are the cause): a
 * peer without keys and a CURVE master, a master key that is not the one
 * given, a key not in the master's allow list. Returns c->why. */
const char *dist__conn_failure(dist__conn_t *c, uint16_t event, uint32_t value);

/* An endpoint a peer can connect to or a master bind: false, with the
 * reason in why, for one without a transport ("host:5555": the hint says
 * to write tcp://host:5555). */
bool dist__endpoint_check(const char *endpoint, char *why, size_t len);

/* Parses an ERROR from the master into *e: true, or false for a malformed
 * one, which is logged and counted in *malformed. */
bool dist__conn_error(dist__conn_t *c, const msgpack_object *body, dist__error_t *e,
                      uint64_t *malformed);

/* A message came from the master. */
void dist__conn_heard(dist__conn_t *c, int64_t now);

/* Parses a WELCOME into c->wl (dist__parse_welcome's clamping; a field of
 * the wrong type is logged), c->master and c->instance. Sets
 * c->new_instance when this WELCOME names an instance and the previous
 * one named another (then c->old_instance holds that one); a WELCOME
 * without an instance leaves the known one. Returns true when the
 * master's name changed since the previous WELCOME (another master). */
bool dist__conn_welcome(dist__conn_t *c, const msgpack_object *body);

/* The master said BYE: it is gone now, not in a heartbeat timeout. Makes
 * dist__conn_hello_due true at once and sets c->bye; the peer marks its
 * master lost itself, says HELLO right away, then every second until
 * welcomed. The time the BYE was heard stays the last time heard. */
void dist__conn_lost(dist__conn_t *c);

/* HELLO pacing: true when the last HELLO is a second old or more. */
bool dist__conn_hello_due(const dist__conn_t *c, int64_t now);

/* True when the master has been silent for its heartbeat timeout. */
bool dist__conn_silent(const dist__conn_t *c, int64_t now);

/* The next time something is due: the next HELLO when `hello` (not
 * welcomed, or the master lost), else the next HEARTBEAT or the silence
 * deadline, whichever comes first. */
int64_t dist__conn_next_ns(const dist__conn_t *c, bool hello);

#endif

/*  conn.c - a peer's connection to its master (conn_internal.h): endpoint,
 *  socket, CURVE, monitor, and the session's clocks.
 *
 *  The worker and the client each had their own copy of all of this, and
 *  the copies had drifted (different WELCOME clamping, different monitor
 *  events, three errno mappings of the key setup). The decisions a peer
 *  makes about its session stay with the peer; the mechanics live here.
 */
#include "conn_internal.h"

#include <errno.h>
#include <netdb.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "dist/error.h"
#include "security_internal.h"
#include "util_internal.h"

/* Every event a peer acts on or reports. */
#define S_MONITOR_EVENTS                                                                           \
    (ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |   \
     ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)

const char *dist__conn_endpoint(const char *opt)
{
    if (opt && *opt)
        return opt;
    const char *env = getenv("DIST_MASTER");
    return env && *env ? env : DIST_DEFAULT_ENDPOINT;
}

int dist__conn_errno(int rc)
{
    if (rc == DIST_ENOMEM)
        return ENOMEM;
    if (rc == -ENOENT || rc == -EACCES)
        return -rc;
    return EINVAL;
}

int dist__conn_check(const dist__conn_opts_t *o, const dist__logger_t *log)
{
    char why[600];
    if (dist__zmq_version_ok(why, sizeof why)) {
        dist__log(log, DIST_LOG_ERROR, "%s", why);
        return ENOTSUP;
    }
    if (!dist__endpoint_check(dist__conn_endpoint(o->master), why, sizeof why)) {
        dist__log(log, DIST_LOG_ERROR, "%s", why);
        return EINVAL;
    }
    bool secure;
    int rc = dist__curve_peer_setup(NULL, o->key, o->server_key, o->insecure,
                                    dist__conn_endpoint(o->master), log, &secure);
    return rc ? dist__conn_errno(rc) : 0;
}

/* The monitor: a PAIR socket that receives the DEALER's events. A peer
 * without one still works, on its one-second HELLO timer. */
static void s_monitor_open(dist__conn_t *c)
{
    char ep[64];
    dist__monitor_name(ep, sizeof ep, c->who);
    if (zmq_socket_monitor(c->zh, ep, S_MONITOR_EVENTS) != 0)
        return;
    c->mon = dist__sock_new(ZMQ_PAIR);
    if (c->mon && zsock_connect(c->mon, "%s", ep) != 0)
        zsock_destroy(&c->mon);
    if (!c->mon)
        zmq_socket_monitor(c->zh, NULL, 0);
}

/* For tcp://HOST:PORT with a host name: libzmq resolves it in the
 * background and retries forever, so a name that does not resolve looks
 * like a silent master. Say it once, in c->why, and carry on (DNS may come
 * up later, as in a compose cluster starting). */
static void s_check_host(dist__conn_t *c)
{
    const char *ep = c->endpoint;
    if (strncmp(ep, "tcp://", 6) != 0)
        return;
    const char *h = ep + 6, *end = strrchr(h, ':');
    if (*h == '[' || !end || end == h)
        return;
    char host[256];
    size_t n = (size_t)(end - h);
    if (n >= sizeof host)
        return;
    memcpy(host, h, n);
    host[n] = 0;
    if (strchr(host, ';'))
        return; /* source;destination form: left to libzmq */
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (res)
        freeaddrinfo(res);
    if (rc == 0)
        return;
    snprintf(c->why, sizeof c->why, "cannot resolve host %s (%s)", host, gai_strerror(rc));
    c->why_final = false;
    dist__log(c->log, DIST_LOG_ERROR, "%s: the %s keeps trying", c->why, c->who);
}

int dist__conn_open(dist__conn_t *c, const dist__conn_opts_t *o, const dist__logger_t *log)
{
    memset(c, 0, sizeof *c);
    c->log = log;
    c->who = o->who ? o->who : "peer";
    int64_t now = dist__now_ns();
    c->last_heard_ns = c->last_sent_ns = now;
    dist__parse_welcome(NULL, &c->wl); /* the defaults until a WELCOME says otherwise */
    c->wl.master.n = c->wl.version.n = 0;
    c->endpoint = strdup(dist__conn_endpoint(o->master));
    c->sock = c->endpoint ? dist__sock_new(ZMQ_DEALER) : NULL;
    if (!c->sock) {
        int e = errno ? errno : ENOMEM;
        dist__conn_close(c, true);
        return e;
    }
    c->zh = zsock_resolve(c->sock);
    dist__sockopts_t so = { .max_message = o->max_message, .linger_ms = -1 };
    dist__sock_setup(c->sock, false, &so);
    int rc = dist__curve_peer_setup(c->sock, o->key, o->server_key, o->insecure, c->endpoint, log,
                                    &c->secure);
    if (rc) {
        dist__conn_close(c, true);
        return dist__conn_errno(rc);
    }
    const char *sk = o->server_key && *o->server_key ? o->server_key : getenv("DIST_SERVER_KEY");
    if (sk)
        snprintf(c->server_key, sizeof c->server_key, "%s", sk);
    /* Before connecting, to see the first connection. */
    s_monitor_open(c);
    if (zsock_connect(c->sock, "%s", c->endpoint) != 0) {
        int e = errno == EPROTONOSUPPORT || errno == ENOENT || !errno ? EINVAL : errno;
        dist__log(log, DIST_LOG_ERROR, "cannot connect to %s: %s", c->endpoint,
                  zmq_strerror(zmq_errno()));
        dist__conn_close(c, true);
        return e;
    }
    s_check_host(c);
    return 0;
}

void dist__conn_close(dist__conn_t *c, bool now)
{
    if (c->mon) {
        zmq_socket_monitor(c->zh, NULL, 0);
        zsock_destroy(&c->mon);
    }
    if (c->sock && now)
        zsock_set_linger(c->sock, 0);
    zsock_destroy(&c->sock);
    c->zh = NULL;
    free(c->endpoint);
    c->endpoint = NULL;
}

int dist__conn_send(dist__conn_t *c, dist__cmd_t cmd, const void *body, size_t len)
{
    int rc = dist__proto_send(c->sock, NULL, 0, cmd, body, len);
    if (rc == 0) {
        c->last_sent_ns = dist__now_ns();
        if (cmd == DIST__CMD_HELLO)
            c->last_hello_ns = c->last_sent_ns;
    }
    return rc;
}

const char *dist__conn_failure(dist__conn_t *c, uint16_t event, uint32_t value)
{
    const char *sk = c->server_key[0] ? c->server_key : "the --server-key";
    c->why_final = true;
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH && value == 400)
        snprintf(c->why, sizeof c->why,
                 "the master refused this %s's key: it is not in the master's allow list", c->who);
    else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        /* 300 and 500 are a handler that could not decide. */
        snprintf(c->why, sizeof c->why,
                 "the master could not check this %s's key (its ZAP handler failed)", c->who);
    else if (!c->secure && event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL)
        /* No keys here: the one mismatch there can be is a master that
         * wants them. */
        snprintf(c->why, sizeof c->why,
                 "the master requires CURVE keys and this %s has none: give --key and "
                 "--server-key (or $DIST_KEY, $DIST_SERVER_KEY)", c->who);
    else if (!c->secure && (value == EPIPE || value == ECONNRESET))
        /* The same seen from here when the master notices first and
         * closes; a server that is no libdist master looks alike. */
        snprintf(c->why, sizeof c->why,
                 "the master closed the connection during the handshake: it requires CURVE "
                 "keys and this %s has none (give --key and --server-key), or it is not a "
                 "libdist master", c->who);
    else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
             value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
        snprintf(c->why, sizeof c->why,
                 "the master has no CURVE keys and this %s has: drop --key and --server-key, or "
                 "start the master with --key", c->who);
    else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || value == EPIPE || value == ECONNRESET)
        /* With keys, a master that cannot decrypt our HELLO closes the
         * connection: the key we were given for it is not its key. */
        snprintf(c->why, sizeof c->why, "the master's key is not %s (the master closed the "
                 "CURVE handshake)", sk);
    else {
        snprintf(c->why, sizeof c->why, "the handshake with the master did not complete (%s)",
                 zmq_strerror((int)value));
        c->why_final = false;
    }
    return c->why;
}

bool dist__endpoint_check(const char *endpoint, char *why, size_t len)
{
    if (endpoint && strstr(endpoint, "://"))
        return true;
    snprintf(why, len, "'%s' is not an endpoint: it has no transport (write tcp://%s)",
             endpoint ? endpoint : "", endpoint ? endpoint : "HOST:PORT");
    return false;
}

bool dist__conn_on_monitor(dist__conn_t *c)
{
    bool came_up = false;
    uint16_t ev;
    uint32_t value;
    for (int i = 0; i < 256 && c->mon && dist__monitor_event(c->mon, &ev, &value, NULL, 0); i++) {
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            c->up = true;
            c->refusal_logged = false;
            c->why[0] = 0;
            c->why_final = false;
            came_up = true;
            dist__log(c->log, DIST_LOG_INFO, "connected to %s", c->endpoint);
        } else if (ev == ZMQ_EVENT_DISCONNECTED) {
            if (c->up)
                dist__log(c->log, DIST_LOG_WARN, "disconnected from %s (reconnecting)",
                          c->endpoint);
            c->up = false;
        } else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH || ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
                   ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
            if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
                c->refused = DIST_EREFUSED;
            /* Said once per run of failures: libzmq retries by itself. */
            dist__log(c->log, c->refusal_logged ? DIST_LOG_DEBUG : DIST_LOG_ERROR,
                      "%s (%s at %s)", dist__conn_failure(c, ev, value), c->who, c->endpoint);
            c->refusal_logged = true;
        }
    }
    return came_up;
}

void dist__conn_heard(dist__conn_t *c, int64_t now) { c->last_heard_ns = now; }

bool dist__conn_error(dist__conn_t *c, const msgpack_object *body, dist__error_t *e,
                      uint64_t *malformed)
{
    if (dist__parse_error(body, e) == 0)
        return true;
    (*malformed)++;
    dist__log(c->log, DIST_LOG_WARN, "dropped a malformed ERROR from the master");
    return false;
}

bool dist__conn_welcome(dist__conn_t *c, const msgpack_object *body)
{
    if (dist__parse_welcome(body, &c->wl))
        dist__log(c->log, DIST_LOG_WARN, "WELCOME with a field of the wrong type: using its "
                  "default");
    dist__str_t m = c->wl.master;
    bool other = strlen(c->master) != m.n || memcmp(c->master, m.s, m.n) != 0;
    memcpy(c->master, m.s, m.n);
    c->master[m.n] = 0;
    /* The body goes away with its message: keep only what was copied. */
    c->wl.master = (dist__str_t){ c->master, m.n };
    c->wl.version = (dist__str_t){ "", 0 };
    dist__str_t in = c->wl.instance;
    c->new_instance = false;
    if (in.n) {
        c->new_instance = c->instance[0] && (strlen(c->instance) != in.n ||
                                             memcmp(c->instance, in.s, in.n) != 0);
        if (c->new_instance)
            memcpy(c->old_instance, c->instance, sizeof c->old_instance);
        memcpy(c->instance, in.s, in.n);
        c->instance[in.n] = 0;
    }
    c->wl.instance = (dist__str_t){ c->instance, strlen(c->instance) };
    c->bye = false;
    return other;
}

void dist__conn_lost(dist__conn_t *c)
{
    /* HELLO due at once (the monotonic clock may be younger than a second:
     * no absolute 0). last_heard_ns stays: the BYE was heard, and a peer's
     * wait for the next master counts from it. */
    c->last_hello_ns = dist__now_ns() - (int64_t)DIST__HELLO_EVERY_MS * 1000000;
    c->bye = true;
}

bool dist__conn_hello_due(const dist__conn_t *c, int64_t now)
{
    return now - c->last_hello_ns >= (int64_t)DIST__HELLO_EVERY_MS * 1000000;
}

bool dist__conn_silent(const dist__conn_t *c, int64_t now)
{
    return now - c->last_heard_ns > (int64_t)c->wl.heartbeat_timeout_ms * 1000000;
}

int64_t dist__conn_next_ns(const dist__conn_t *c, bool hello)
{
    if (hello)
        return c->last_hello_ns + (int64_t)DIST__HELLO_EVERY_MS * 1000000;
    int64_t hb = c->last_sent_ns + (int64_t)c->wl.heartbeat_ms * 1000000;
    int64_t silent = c->last_heard_ns + (int64_t)c->wl.heartbeat_timeout_ms * 1000000 + 1;
    return hb < silent ? hb : silent;
}

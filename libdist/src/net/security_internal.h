/*  security_internal.h - CURVE for the master, the worker and the client
 *  (docs/PROTOCOL.md section 9): key files, protected mode, and the ZAP
 *  handler that authenticates the master's connections.
 *
 *  The ZAP handler. libzmq asks "inproc://zeromq.zap.01" of its context
 *  whether a CURVE client key may connect; only one socket per context
 *  can bind that address, and czmq's zauth asserts when a second one
 *  tries. Several masters can live in one process (tests, embedders), so
 *  the process has one handler thread, started by the first master that
 *  registers and stopped by the last one to leave. Each master registers
 *  its two allow-list directories under a ZAP domain of its own, which it
 *  sets on its socket. The handler answers with a user id that names the
 *  role the key may take ("worker:KEY", "client:KEY", or "any:KEY" for a
 *  key found in both directories); the master reads it from each
 *  message's metadata ("User-Id") and refuses a HELLO in another role.
 *  A key is looked up in a czmq zcertstore, which re-reads its directory
 *  when the directory changed: a key removed from it is refused at its
 *  next connection.
 */
#ifndef DIST_SECURITY_INTERNAL_H_INCLUDED
#define DIST_SECURITY_INTERNAL_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>

#include "log_internal.h"

#define DIST__Z85_KEY_LEN 40

/* True for endpoints that only this host can reach: ipc://, inproc://,
 * tcp:// on 127.0.0.0/8, [::1] or localhost. Anything else (a name, a
 * wildcard, an interface) is treated as reachable from the network. */
bool dist__endpoint_local(const char *ep);

/* True for a host (host[0..n), no port) that names this host only:
 * 127.0.0.0/8 in digits and dots, ::1 or [::1], localhost. */
bool dist__host_loopback(const char *host, size_t n);

/* Reads a secret key file (`dist keygen`'s NAME.key). Refuses, with the
 * reason in err: a missing file (-ENOENT), a file that is not regular or
 * that its group or others may access (-EACCES, like ssh), a file that is
 * not a key pair or whose keys do not match (-EINVAL). 0 with pub and sec
 * (40 Z85 characters and a NUL each). */
int dist__key_read_secret(const char *path, char pub[41], char sec[41], char *err, size_t errlen);

/* Reads the public key of a key file (.pub or .key; a .key is checked as
 * above). 0, -ENOENT, -EACCES or -EINVAL with the reason in err. */
int dist__key_read_public(const char *path, char pub[41], char *err, size_t errlen);

/* A czmq certificate from Z85 keys (zcert_new_from_txt is a draft API).
 * NULL for bad keys or no memory. */
zcert_t *dist__cert_from_txt(const char pub[41], const char sec[41]);

/* The peer side (worker, client): resolves the keys (the options, else
 * $DIST_KEY and $DIST_SERVER_KEY), applies protected mode (no keys and a
 * non-loopback endpoint without insecure: refused) and makes sock a CURVE
 * client of the master. Call before connecting. 0, or -EINVAL / -ENOENT /
 * -EACCES with the reason logged at ERROR. *secure tells whether CURVE is
 * on. With sock NULL, only checks (to fail before costly work). */
int dist__curve_peer_setup(zsock_t *sock, const char *key, const char *server_key, bool insecure,
                           const char *endpoint, const dist__logger_t *lg, bool *secure);

/* ---- the ZAP handler (master side) -------------------------------------------------------- */

typedef struct dist__zap dist__zap_t;

/* Registers a master's allow lists (either may be NULL: no key may take
 * that role) and starts the process's handler when it is the first one.
 * The domain to set on the socket is copied to domain[32]. NULL with the
 * reason in err and errno set (ENOENT or ENOTDIR for a missing directory,
 * ENOMEM, EADDRINUSE when something else in this process bound the ZAP
 * endpoint). */
dist__zap_t *dist__zap_register(const char *workers_dir, const char *clients_dir,
                                char domain[32], char *err, size_t errlen);

/* Unregisters; the last one stops the handler thread. Accepts NULL. */
void dist__zap_unregister(dist__zap_t **self_p);

/* The oldest refusal the handler recorded for this master and not yet
 * taken (the key in Z85 and the peer's address), for the master's log.
 * false when none is left. Thread-safe. */
bool dist__zap_take_denial(dist__zap_t *self, char key[41], char addr[64]);

/* Roles a ZAP user id allows: bit 1 worker, bit 2 client (0: none, also
 * for NULL). The key part (after the colon) is copied to key[41] when
 * non-NULL. */
int dist__zap_roles(const char *user_id, char key[41]);

#endif

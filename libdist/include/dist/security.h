/*  dist/security.h - CURVE key files (docs/PROTOCOL.md section 9).
 *
 *  A cluster is secured with CurveZMQ: the master, every worker and every
 *  client has a key pair. `dist keygen NAME` (this function) writes
 *  NAME.pub, the public key that goes into the master's allow-list
 *  directories or to the peers (the master's), and NAME.key, the secret
 *  key that never leaves its host. Both are czmq certificate files (Z85
 *  text, "curve" section with "public-key" and, in NAME.key only,
 *  "secret-key"), so czmq's zcert and pyzmq's zmq.auth.load_certificate
 *  read them.
 *
 *  The libraries refuse a secret key file that its group or others can
 *  read or write (as ssh does), and the master, workers and clients take
 *  the paths of these files in their options (dist/master.h, dist/worker.h,
 *  dist/client.h).
 */
#ifndef DIST_SECURITY_H_INCLUDED
#define DIST_SECURITY_H_INCLUDED

#include <stdbool.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes a new key pair to `name`.pub (mode 0644) and `name`.key (mode
 * 0600 from its creation: it is never readable by others, not even for a
 * moment). Without force an existing file is left alone and -EEXIST is
 * returned; with force both are replaced atomically (rename).
 * Returns 0 or a negative code (-EEXIST, -ENOENT for a missing directory,
 * -EACCES, -ENAMETOOLONG, ...). Thread-safe; does not change the umask. */
DIST_EXPORT int dist_keygen(const char *name, bool force);

/* Reads the public key of a key file (.pub or .key) as 40 characters of
 * Z85 and a NUL into z85[41]. 0, -ENOENT, -EACCES (a secret key file with
 * group or other permissions), or -EINVAL (not a key file). */
DIST_EXPORT int dist_key_public(const char *path, char z85[41]);

#ifdef __cplusplus
}
#endif

#endif

/*  security.c - key files, protected mode and the process's ZAP handler
 *  (dist/security.h, security_internal.h, docs/PROTOCOL.md section 9).
 *
 *  Key files are czmq certificates. They are read here rather than with
 *  zcert_load(), which first tries "PATH_secret" next to the path it is
 *  given and reads the file by name after any permission check: here the
 *  file is opened once, checked on its descriptor (regular, owner-only for
 *  a secret key), read from that same descriptor, and parsed with
 *  zconfig. Keys are written with mkstemp() (mode 0600 from the start) and
 *  published with link() (never overwrites) or rename() (--force).
 */
#include "security_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "dist/error.h"
#include "dist/security.h"

#define KEYFILE_MAX 65536
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define DENIALS 16

/* ---- endpoints ------------------------------------------------------------------------ */

bool dist__endpoint_local(const char *ep)
{
    if (!ep)
        return false;
    if (strncmp(ep, "ipc://", 6) == 0 || strncmp(ep, "inproc://", 9) == 0)
        return true;
    if (strncmp(ep, "tcp://", 6) != 0)
        return false;
    const char *host = ep + 6;
    /* "tcp://src;dst": a source address given by the peer; look at the
     * destination. */
    const char *semi = strchr(host, ';');
    if (semi)
        host = semi + 1;
    const char *colon = strrchr(host, ':');
    return dist__host_loopback(host, colon ? (size_t)(colon - host) : strlen(host));
}

bool dist__host_loopback(const char *host, size_t n)
{
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        host++;
        n -= 2;
    }
    if (n == 3 && strncmp(host, "::1", 3) == 0)
        return true;
    if (n == 9 && strncmp(host, "localhost", 9) == 0)
        return true;
    if (n < 4 || strncmp(host, "127.", 4) != 0)
        return false;
    /* 127. followed by digits and dots only (not "127.example.com"). */
    for (size_t i = 4; i < n; i++)
        if (!((host[i] >= '0' && host[i] <= '9') || host[i] == '.'))
            return false;
    return true;
}

/* ---- key files -------------------------------------------------------------------------- */

static bool s_z85_key_ok(const char *s)
{
    uint8_t bin[32];
    return s && strlen(s) == DIST__Z85_KEY_LEN && zmq_z85_decode(bin, s) != NULL;
}

/* Opens, checks and parses a key file. `secret`: the file must hold a
 * secret key and be private to its owner. */
static int s_key_read(const char *path, bool secret, char pub[41], char sec[41], char *err,
                      size_t errlen)
{
    if (!path || !*path) {
        snprintf(err, errlen, "no key file given");
        return DIST_EINVAL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "cannot open key file %s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot read key file %s: %s", path, strerror(-rc));
    } else if (!S_ISREG(st.st_mode)) {
        rc = DIST_EINVAL;
        snprintf(err, errlen, "key file %s is not a regular file", path);
    } else if (st.st_size > KEYFILE_MAX) {
        rc = DIST_EINVAL;
        snprintf(err, errlen, "key file %s is too large to be a key file", path);
    }
    char *text = NULL;
    if (!rc && !(text = malloc((size_t)st.st_size + 1)))
        rc = DIST_ENOMEM;
    size_t got = 0;
    while (!rc && got < (size_t)st.st_size) {
        ssize_t r = read(fd, text + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break; /* shorter than it was: parse what is there */
        got += (size_t)r;
    }
    close(fd);
    if (rc) {
        free(text);
        return rc;
    }
    text[got] = 0;
    zconfig_t *root = zconfig_str_load(text);
    const char *p = root ? zconfig_get(root, "curve/public-key", NULL) : NULL;
    const char *s = root ? zconfig_get(root, "curve/secret-key", NULL) : NULL;
    if (!s_z85_key_ok(p)) {
        rc = DIST_EINVAL;
        snprintf(err, errlen, "%s is not a key file (no curve public-key; create keys with "
                 "`dist keygen NAME`)", path);
    } else if (s && !s_z85_key_ok(s)) {
        rc = DIST_EINVAL;
        snprintf(err, errlen, "%s: the secret-key is not 40 characters of Z85", path);
    } else if (secret && !s) {
        rc = DIST_EINVAL;
        snprintf(err, errlen, "%s holds no secret key: give the NAME.key file that "
                 "`dist keygen NAME` wrote, not NAME.pub", path);
    } else if (s && (st.st_mode & 077)) {
        /* Checked once we know it holds a secret: a public key file may
         * be world-readable. */
        rc = -EACCES;
        snprintf(err, errlen, "permissions %04o for secret key file %s are too open: it must "
                 "not be accessible by group or others (chmod 600 %s)",
                 (unsigned)(st.st_mode & 07777), path, path);
    }
    if (!rc && s) {
        char derived[41];
        if (zmq_curve_public(derived, s) != 0 || strcmp(derived, p) != 0) {
            rc = DIST_EINVAL;
            snprintf(err, errlen, "%s: its public key does not belong to its secret key", path);
        }
    }
    if (!rc) {
        memcpy(pub, p, 41);
        if (sec)
            memcpy(sec, s, 41);
    }
    zconfig_destroy(&root);
    /* The file's text held the secret: do not leave it in freed memory. */
    explicit_bzero(text, got);
    free(text);
    return rc;
}

int dist__key_read_secret(const char *path, char pub[41], char sec[41], char *err, size_t errlen)
{
    return s_key_read(path, true, pub, sec, err, errlen);
}

int dist__key_read_public(const char *path, char pub[41], char *err, size_t errlen)
{
    return s_key_read(path, false, pub, NULL, err, errlen);
}

int dist_key_public(const char *path, char z85[41])
{
    char err[256];
    return s_key_read(path, false, z85, NULL, err, sizeof err);
}

zcert_t *dist__cert_from_txt(const char pub[41], const char sec[41])
{
    uint8_t p[32], k[32];
    if (!zmq_z85_decode(p, pub) || !zmq_z85_decode(k, sec))
        return NULL;
    zcert_t *c = zcert_new_from(p, k);
    explicit_bzero(k, sizeof k);
    return c;
}

/* Writes text to a new temporary file next to `final` (mode `mode`), then
 * publishes it. 0 or -errno. */
static int s_write_tmp(const char *final, const char *text, mode_t mode, char *tmp, size_t tmplen)
{
    if ((size_t)snprintf(tmp, tmplen, "%s.XXXXXX", final) >= tmplen)
        return -ENAMETOOLONG;
    int fd = mkstemp(tmp); /* 0600, O_EXCL */
    if (fd < 0)
        return -errno;
    int rc = 0;
    size_t len = strlen(text), done = 0;
    while (done < len) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            rc = -errno;
            break;
        }
        done += (size_t)w;
    }
    if (!rc && fchmod(fd, mode) < 0)
        rc = -errno;
    if (!rc && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && !rc)
        rc = -errno;
    if (rc)
        unlink(tmp);
    return rc;
}

static int s_publish(const char *tmp, const char *final, bool force)
{
    int rc = force ? rename(tmp, final) : link(tmp, final);
    int e = rc < 0 ? errno : 0;
    if (!force || rc < 0)
        unlink(tmp);
    return -e;
}

int dist_keygen(const char *name, bool force)
{
    if (!name || !*name)
        return DIST_EINVAL;
    char pubf[4096], keyf[4096], tpub[4200], tkey[4200];
    if ((size_t)snprintf(pubf, sizeof pubf, "%s.pub", name) >= sizeof pubf ||
        (size_t)snprintf(keyf, sizeof keyf, "%s.key", name) >= sizeof keyf)
        return -ENAMETOOLONG;
    if (!force && (access(pubf, F_OK) == 0 || access(keyf, F_OK) == 0))
        return -EEXIST;
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0)
        return errno ? -errno : DIST_EINVAL;
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    char text_pub[512], text_key[640];
    snprintf(text_pub, sizeof text_pub,
             "#   ZeroMQ CURVE Public Certificate (libdist, %s)\n"
             "#   Give it to the master's allow list, or to the peers for a master's key.\n"
             "\n"
             "metadata\n"
             "curve\n"
             "    public-key = \"%s\"\n",
             stamp, pub);
    snprintf(text_key, sizeof text_key,
             "#   ZeroMQ CURVE **Secret** Certificate (libdist, %s)\n"
             "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n"
             "\n"
             "metadata\n"
             "curve\n"
             "    public-key = \"%s\"\n"
             "    secret-key = \"%s\"\n",
             stamp, pub, sec);
    explicit_bzero(sec, sizeof sec);
    int rc = s_write_tmp(keyf, text_key, 0600, tkey, sizeof tkey);
    explicit_bzero(text_key, sizeof text_key);
    if (rc)
        return rc;
    rc = s_write_tmp(pubf, text_pub, 0644, tpub, sizeof tpub);
    if (rc) {
        unlink(tkey);
        return rc;
    }
    rc = s_publish(tkey, keyf, force);
    if (rc) {
        unlink(tpub);
        return rc;
    }
    rc = s_publish(tpub, pubf, force);
    if (rc && !force)
        unlink(keyf); /* ours: the pair goes together or not at all */
    return rc;
}

/* ---- the peer side ------------------------------------------------------------------------ */

static const char *s_env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int dist__curve_peer_setup(zsock_t *sock, const char *key, const char *server_key, bool insecure,
                           const char *endpoint, const dist__logger_t *lg, bool *secure)
{
    *secure = false;
    const char *k = key && *key ? key : s_env("DIST_KEY");
    const char *sk = server_key && *server_key ? server_key : s_env("DIST_SERVER_KEY");
    if (!k && !sk) {
        /* Not an endpoint at all: connecting says so, better than we can. */
        if (dist__endpoint_local(endpoint) || insecure || !endpoint || !strstr(endpoint, "://"))
            return 0;
        dist__log(lg, DIST_LOG_ERROR,
                  "refusing to connect to %s without CURVE keys: tasks and results would cross "
                  "the network in clear, to a master nobody authenticated. Create keys with "
                  "`dist keygen NAME` (add NAME.pub to the master's allow list) and give "
                  "--key NAME.key --server-key master.pub (or $DIST_KEY, $DIST_SERVER_KEY); "
                  "or accept the risk with --insecure",
                  endpoint);
        return DIST_EINVAL;
    }
    if (!k || !sk) {
        dist__log(lg, DIST_LOG_ERROR, "CURVE needs both keys: %s is missing (--%s or $%s)",
                  k ? "the master's public key" : "our own secret key",
                  k ? "server-key" : "key", k ? "DIST_SERVER_KEY" : "DIST_KEY");
        return DIST_EINVAL;
    }
    char pub[41], sec[41], spub[41], err[600];
    int rc = dist__key_read_secret(k, pub, sec, err, sizeof err);
    if (!rc)
        rc = dist__key_read_public(sk, spub, err, sizeof err);
    if (rc) {
        explicit_bzero(sec, sizeof sec);
        dist__log(lg, DIST_LOG_ERROR, "%s", err);
        return rc;
    }
    *secure = true;
    if (!sock) {
        explicit_bzero(sec, sizeof sec);
        return 0;
    }
    zcert_t *cert = dist__cert_from_txt(pub, sec);
    explicit_bzero(sec, sizeof sec);
    if (!cert)
        return DIST_ENOMEM;
    zcert_apply(cert, sock);
    zcert_destroy(&cert);
    zsock_set_curve_serverkey(sock, spub);
    return 0;
}

/* ---- the ZAP handler ------------------------------------------------------------------------- */

struct dist__zap {
    char domain[32];
    zcertstore_t *workers, *clients; /* NULL: nobody in that role */
    char *workers_dir, *clients_dir;
    struct {
        char key[41];
        char addr[64];
    } denied[DENIALS];               /* a ring of the last refusals */
    unsigned dhead, dn;
    struct dist__zap *next;
};

/* s_zap_life serializes register and unregister (the handler's start and
 * stop) and is never taken by the handler thread; s_zap_lock guards the
 * registry, which the handler reads for every request. */
static pthread_mutex_t s_zap_life = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t s_zap_lock = PTHREAD_MUTEX_INITIALIZER;
static dist__zap_t *s_zaps;          /* registered masters */
static unsigned s_zap_seq;
static zsock_t *s_zap_sock;          /* REP bound to the ZAP endpoint */
static int s_zap_stop[2] = { -1, -1 };
static pthread_t s_zap_thread;

static dist__zap_t *s_zap_find(const char *domain, size_t n)
{
    for (dist__zap_t *z = s_zaps; z; z = z->next)
        if (strlen(z->domain) == n && memcmp(z->domain, domain, n) == 0)
            return z;
    return NULL;
}

static void s_frame_str(zframe_t *f, char *out, size_t cap)
{
    size_t n = f ? zframe_size(f) : 0;
    if (n >= cap)
        n = cap - 1;
    if (n)
        memcpy(out, zframe_data(f), n);
    out[n] = 0;
}

/* zcertstore re-reads a directory that changed, but keeps what it had
 * when the directory is gone: a removed allow list must allow nobody. */
static bool s_dir_ok(const char *dir)
{
    struct stat st;
    return dir && stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Answers one ZAP request (RFC 27): version, request id, domain, address,
 * identity, mechanism, then the mechanism's credentials. */
static void s_zap_answer(zmsg_t *req)
{
    zframe_t *version = zmsg_pop(req), *id = zmsg_pop(req), *domain = zmsg_pop(req),
             *address = zmsg_pop(req), *identity = zmsg_pop(req), *mech = zmsg_pop(req),
             *cred = zmsg_pop(req);
    const char *status = "400", *text = "no access";
    char user[64] = "";
    /* A REP socket must answer every request, even one it cannot read
     * (libzmq never sends such a thing). */
    if (!version || !zframe_streq(version, "1.0")) {
        text = "ZAP version 1.0 only";
    } else if (mech && zframe_streq(mech, "CURVE") && cred && zframe_size(cred) == 32 && domain) {
        char key[41];
        zmq_z85_encode(key, zframe_data(cred), 32);
        pthread_mutex_lock(&s_zap_lock);
        dist__zap_t *z = s_zap_find((const char *)zframe_data(domain), zframe_size(domain));
        if (z) {
            bool w = s_dir_ok(z->workers_dir) && zcertstore_lookup(z->workers, key);
            bool c = s_dir_ok(z->clients_dir) && zcertstore_lookup(z->clients, key);
            if (w || c) {
                status = "200";
                text = "OK";
                snprintf(user, sizeof user, "%s:%s", w && c ? "any" : w ? "worker" : "client", key);
            } else {
                text = "the key is not in the master's allow lists";
                unsigned i = (z->dhead + z->dn) % DENIALS;
                if (z->dn == DENIALS)
                    z->dhead = (z->dhead + 1) % DENIALS;
                else
                    z->dn++;
                memcpy(z->denied[i].key, key, sizeof key);
                s_frame_str(address, z->denied[i].addr, sizeof z->denied[i].addr);
            }
        } else {
            text = "unknown domain";
        }
        pthread_mutex_unlock(&s_zap_lock);
    } else {
        text = "CURVE is required";
    }
    zmsg_t *rep = zmsg_new();
    zmsg_addstr(rep, "1.0");
    if (id)
        zmsg_append(rep, &id);
    else
        zmsg_addmem(rep, NULL, 0);
    zmsg_addstr(rep, status);
    zmsg_addstr(rep, text);
    zmsg_addstr(rep, user);
    zmsg_addmem(rep, NULL, 0);
    zmsg_send(&rep, s_zap_sock);
    zframe_destroy(&version);
    zframe_destroy(&id);
    zframe_destroy(&domain);
    zframe_destroy(&address);
    zframe_destroy(&identity);
    zframe_destroy(&mech);
    zframe_destroy(&cred);
}

static void *s_zap_main(void *arg)
{
    (void)arg;
    for (;;) {
        zmq_pollitem_t items[2] = {
            { zsock_resolve(s_zap_sock), 0, ZMQ_POLLIN, 0 },
            { NULL, s_zap_stop[0], ZMQ_POLLIN, 0 },
        };
        int n = zmq_poll(items, 2, -1);
        if (n < 0 && errno != EINTR)
            break;
        if (items[1].revents)
            break;
        if (items[0].revents & ZMQ_POLLIN) {
            zmsg_t *req = zmsg_recv(s_zap_sock);
            if (!req)
                continue;
            s_zap_answer(req);
            zmsg_destroy(&req);
        }
    }
    return NULL;
}

static zcertstore_t *s_store(const char *dir, const char *what, char *err, size_t errlen)
{
    struct stat st;
    if (stat(dir, &st) < 0) {
        int e = errno;
        snprintf(err, errlen, "%s %s: %s", what, dir, strerror(e));
        errno = e;
        return NULL;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s %s is not a directory of public keys", what, dir);
        errno = ENOTDIR;
        return NULL;
    }
    zcertstore_t *cs = zcertstore_new(dir);
    if (!cs) {
        snprintf(err, errlen, "cannot read %s %s", what, dir);
        errno = ENOMEM;
    }
    return cs;
}

/* Frees a registration that did not complete; NULL with errno e. */
static dist__zap_t *s_zap_fail(dist__zap_t *z, int e)
{
    zcertstore_destroy(&z->workers);
    zcertstore_destroy(&z->clients);
    free(z->workers_dir);
    free(z->clients_dir);
    free(z);
    errno = e;
    return NULL;
}

dist__zap_t *dist__zap_register(const char *workers_dir, const char *clients_dir,
                                char domain[32], char *err, size_t errlen)
{
    dist__zap_t *z = calloc(1, sizeof *z);
    if (!z) {
        errno = ENOMEM;
        return NULL;
    }
    if ((workers_dir && !(z->workers = s_store(workers_dir, "workers' allow list", err, errlen))) ||
        (clients_dir && !(z->clients = s_store(clients_dir, "clients' allow list", err, errlen))) ||
        (workers_dir && !(z->workers_dir = strdup(workers_dir))) ||
        (clients_dir && !(z->clients_dir = strdup(clients_dir)))) {
        return s_zap_fail(z, errno ? errno : ENOMEM);
    }
    pthread_mutex_lock(&s_zap_life);
    pthread_mutex_lock(&s_zap_lock);
    int e = 0;
    if (!s_zaps) {
        /* The first master: bind the handler before any CURVE socket of
         * ours exists, since a CURVE server whose context has no handler
         * lets every key in. */
        zsock_t *sock = zsock_new(ZMQ_REP);
        if (!sock) {
            e = ENOMEM;
        } else if (zmq_bind(zsock_resolve(sock), ZAP_ENDPOINT) != 0) {
            e = errno;
            snprintf(err, errlen, "cannot bind the ZAP handler %s: %s (another ZAP handler in "
                     "this process?)", ZAP_ENDPOINT, zmq_strerror(e));
            zsock_destroy(&sock);
        } else {
            zsock_set_linger(sock, 0);
            s_zap_sock = sock;
            if (pipe2(s_zap_stop, O_CLOEXEC | O_NONBLOCK) != 0) {
                e = errno;
            } else {
                e = pthread_create(&s_zap_thread, NULL, s_zap_main, NULL);
                if (e) {
                    close(s_zap_stop[0]);
                    close(s_zap_stop[1]);
                }
            }
            if (e) {
                s_zap_stop[0] = s_zap_stop[1] = -1;
                snprintf(err, errlen, "cannot start the ZAP handler: %s", strerror(e));
                zsock_destroy(&s_zap_sock);
            }
        }
    }
    if (!e) {
        snprintf(z->domain, sizeof z->domain, "dist-master-%u", ++s_zap_seq);
        memcpy(domain, z->domain, sizeof z->domain);
        z->next = s_zaps;
        s_zaps = z;
    }
    pthread_mutex_unlock(&s_zap_lock);
    pthread_mutex_unlock(&s_zap_life);
    if (e)
        return s_zap_fail(z, e);
    return z;
}

void dist__zap_unregister(dist__zap_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist__zap_t *z = *self_p;
    *self_p = NULL;
    bool last = false;
    pthread_mutex_lock(&s_zap_life);
    pthread_mutex_lock(&s_zap_lock);
    for (dist__zap_t **pp = &s_zaps; *pp; pp = &(*pp)->next)
        if (*pp == z) {
            *pp = z->next;
            break;
        }
    last = s_zaps == NULL;
    if (last) {
        ssize_t w = write(s_zap_stop[1], "x", 1);
        (void)w;
        /* The thread takes s_zap_lock to answer: let it finish first
         * (s_zap_life keeps a new master from starting another handler
         * meanwhile). */
        pthread_mutex_unlock(&s_zap_lock);
        pthread_join(s_zap_thread, NULL);
        pthread_mutex_lock(&s_zap_lock);
        zsock_destroy(&s_zap_sock);
        close(s_zap_stop[0]);
        close(s_zap_stop[1]);
        s_zap_stop[0] = s_zap_stop[1] = -1;
    }
    pthread_mutex_unlock(&s_zap_lock);
    pthread_mutex_unlock(&s_zap_life);
    zcertstore_destroy(&z->workers);
    zcertstore_destroy(&z->clients);
    free(z->workers_dir);
    free(z->clients_dir);
    free(z);
}

bool dist__zap_take_denial(dist__zap_t *z, char key[41], char addr[64])
{
    pthread_mutex_lock(&s_zap_lock);
    bool got = z->dn > 0;
    if (got) {
        memcpy(key, z->denied[z->dhead].key, 41);
        memcpy(addr, z->denied[z->dhead].addr, 64);
        z->dhead = (z->dhead + 1) % DENIALS;
        z->dn--;
    }
    pthread_mutex_unlock(&s_zap_lock);
    return got;
}

int dist__zap_roles(const char *uid, char key[41])
{
    if (!uid)
        return 0;
    const char *colon = strchr(uid, ':');
    if (!colon)
        return 0;
    if (key) {
        snprintf(key, 41, "%s", colon + 1);
    }
    size_t n = (size_t)(colon - uid);
    if (n == 6 && memcmp(uid, "worker", 6) == 0)
        return 1;
    if (n == 6 && memcmp(uid, "client", 6) == 0)
        return 2;
    if (n == 3 && memcmp(uid, "any", 3) == 0)
        return 3;
    return 0;
}

/* test_security.c - CURVE security with the real programs (docs/PROTOCOL.md
 * section 9): key files, every refusal case, the refusal counter, protected
 * mode, connections that never finish their handshake under a low
 * open-file limit, and (run as `test_security capture`, root only) a
 * packet capture in a network namespace showing that task payloads cross
 * the wire in clear without CURVE and never with it.
 *
 * One master with keys (allow lists workers/ and clients/ in a temporary
 * directory) and one worker serve the group; each test starts its own
 * extra processes and stops them by pid. Addresses: 127.0.0.1 with ports
 * the master picks, 198.18.0.0/15 only for endpoints that must never be
 * reached (protected mode refuses before connecting), and a namespace of
 * our own for the capture. */
#include <dist.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static struct {
    char dir[64];
    char log[128];
    char endpoint[64];
    pid_t master, worker;
    dist_client_t *c; /* c1, a legitimate client */
} g;

/* ---- helpers ------------------------------------------------------------------------ */

static const char *s_path(const char *name)
{
    static char buf[4][256];
    static int i;
    i = (i + 1) % 4;
    snprintf(buf[i], sizeof buf[i], "%s/%s", g.dir, name);
    return buf[i];
}

static void s_keygen(const char *name)
{
    assert_int_equal(dist_keygen(s_path(name), false), 0);
}

/* Copies NAME.pub into an allow-list directory. */
static void s_allow(const char *name, const char *list)
{
    char from[256], to[256];
    snprintf(from, sizeof from, "%s/%s.pub", g.dir, name);
    snprintf(to, sizeof to, "%s/%s/%s.pub", g.dir, list, name);
    FILE *in = fopen(from, "r"), *out = fopen(to, "w");
    assert_non_null(in);
    assert_non_null(out);
    char buf[1024];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

/* The whole text of a file (malloc'd, NUL-terminated), "" when absent. */
static char *s_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0, cap = 0;
    if (f) {
        for (;;) {
            if (n + 4096 + 1 > cap) {
                cap = cap ? cap * 2 : 65536;
                buf = realloc(buf, cap);
                assert_non_null(buf);
            }
            size_t r = fread(buf + n, 1, cap - n - 1, f);
            if (!r)
                break;
            n += r;
        }
        fclose(f);
    }
    if (!buf)
        buf = calloc(1, 1);
    buf[n] = 0;
    if (len)
        *len = n;
    return buf;
}

/* Starts argv with stdout and stderr to log (created). */
static pid_t s_start(const char *const *argv, const char *log)
{
    dt_spawn_opts_t o = { .in = { DT_IO_NULL }, .out = { DT_IO_FILE, log, NULL },
                          .err = { DT_IO_STDOUT } };
    return dt_spawn(argv, &o);
}

/* SIGTERM, then SIGKILL if it lingers; returns the exit code. */
static int s_stop(pid_t *p)
{
    if (*p <= 0)
        return 0;
    int rc = dt_stop(*p, 15000);
    *p = 0;
    return rc;
}

/* Runs argv to its end (killed after timeout_ms), its output in *out when
 * out is non-NULL. Returns the exit code (DT_TIMEOUT on timeout). */
static int s_run(const char *const *argv, int timeout_ms, char **out)
{
    char log[160];
    snprintf(log, sizeof log, "%s/run.log", g.dir);
    pid_t p = s_start(argv, log);
    int rc = dt_wait(p, timeout_ms);
    if (rc == DT_TIMEOUT) {
        dt_signal(p, SIGKILL);
        dt_wait(p, 5000);
    }
    if (out)
        *out = s_slurp(log, NULL);
    return rc;
}

/* "listening on tcp://..." from a master's log. */
static bool s_read_endpoint(const char *log, char *ep, size_t cap)
{
    int64_t end = dt_now_ms() + 20000;
    while (dt_now_ms() < end) {
        char *t = s_slurp(log, NULL);
        char *at = strstr(t, "listening on tcp://");
        if (at) {
            at += strlen("listening on ");
            size_t n = strcspn(at, " \n,;)");
            snprintf(ep, cap, "%.*s", (int)n, at);
            free(t);
            return true;
        }
        free(t);
        dt_sleep_ms(20);
    }
    return false;
}

static dist_client_t *s_client(const char *key, const char *server_key, int timeout_ms)
{
    char k[256] = "", sk[256] = "";
    if (key)
        snprintf(k, sizeof k, "%s/%s.key", g.dir, key);
    if (server_key)
        snprintf(sk, sizeof sk, "%s/%s.pub", g.dir, server_key);
    dist_client_opts_t o = { .master = g.endpoint,
                             .key = key ? k : NULL,
                             .server_key = server_key ? sk : NULL,
                             .connect_timeout_ms = timeout_ms };
    return dist_client_new(&o);
}

static uint64_t s_counter(dist_client_t *c, const char *name)
{
    dist_result_t *st = NULL;
    assert_int_equal(dist_client_status(c, 10000, &st), 0);
    uint64_t v = 0;
    const msgpack_object *counters = dist_wire_map_get(dist_result_value(st), "counters");
    assert_int_equal(dist_wire_get_u64(dist_wire_map_get(counters, name), &v), 0);
    dist_result_destroy(&st);
    return v;
}

static uint64_t s_refused(void) { return s_counter(g.c, "refused_handshakes"); }

/* Waits (bounded) until the master has counted more than `than` refusals. */
static uint64_t s_wait_refused(uint64_t than)
{
    int64_t end = dt_now_ms() + 20000;
    uint64_t n = s_refused();
    while (n <= than && dt_now_ms() < end) {
        dt_sleep_ms(50);
        n = s_refused();
    }
    return n;
}

static int s_workers(dist_client_t *c)
{
    dist_result_t *st = NULL;
    if (dist_client_status(c, 10000, &st))
        return -1;
    const msgpack_object *w = dist_wire_map_get(dist_result_value(st), "workers");
    int n = w && w->type == MSGPACK_OBJECT_ARRAY ? (int)w->via.array.size : -1;
    dist_result_destroy(&st);
    return n;
}

static void s_wait_workers(dist_client_t *c, int n)
{
    int64_t end = dt_now_ms() + 20000;
    while (s_workers(c) != n && dt_now_ms() < end)
        dt_sleep_ms(50);
    assert_int_equal(s_workers(c), n);
}

/* ---- the group: a secured master and one worker ------------------------------------------ */

/* A temporary directory with keys for master, w1, w2, c1, c2 and
 * stranger, and allow lists: workers/ (w1, w2), clients/ (c1, c2). */
static void s_keys_setup(void)
{
    snprintf(g.dir, sizeof g.dir, "/tmp/dist-sec-XXXXXX");
    assert_non_null(mkdtemp(g.dir));
    char sub[128];
    snprintf(sub, sizeof sub, "%s/workers", g.dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    snprintf(sub, sizeof sub, "%s/clients", g.dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    const char *names[] = { "master", "w1", "w2", "c1", "c2", "stranger" };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        s_keygen(names[i]);
    s_allow("w1", "workers");
    s_allow("w2", "workers");
    s_allow("c1", "clients");
    s_allow("c2", "clients");
}

static void s_dir_remove(void)
{
    dt_rm_tree(g.dir);
}

static int s_group_setup(void **state)
{
    (void)state;
    s_keys_setup();
    snprintf(g.log, sizeof g.log, "%s/master.log", g.dir);
    char key[128], aw[128], ac[128];
    snprintf(key, sizeof key, "%s/master.key", g.dir);
    snprintf(aw, sizeof aw, "%s/workers", g.dir);
    snprintf(ac, sizeof ac, "%s/clients", g.dir);
    const char *margv[] = { DIST_MASTER_BIN, "--bind", "tcp://127.0.0.1:0", "--key", key,
                            "--allow-workers", aw, "--allow-clients", ac, "--log-level", "info",
                            NULL };
    g.master = s_start(margv, g.log);
    assert_true(s_read_endpoint(g.log, g.endpoint, sizeof g.endpoint));
    char wkey[128], spub[128];
    snprintf(wkey, sizeof wkey, "%s/w1.key", g.dir);
    snprintf(spub, sizeof spub, "%s/master.pub", g.dir);
    const char *wargv[] = { DIST_WORKER_BIN, "--master", g.endpoint, "--procs", "1", "--key", wkey,
                            "--server-key", spub, "--log-level", "warn", NULL };
    g.worker = s_start(wargv, s_path("worker.log"));
    g.c = s_client("c1", "master", 20000);
    assert_non_null(g.c);
    s_wait_workers(g.c, 1);
    return 0;
}

static int s_group_teardown(void **state)
{
    (void)state;
    dist_client_destroy(&g.c);
    s_stop(&g.worker);
    s_stop(&g.master);
    dt_kill_children();
    s_dir_remove();
    return 0;
}

/* ---- key files ----------------------------------------------------------------------------- */

static void test_keygen_files(void **state)
{
    (void)state;
    /* Whatever the umask, the secret is private from its creation. */
    mode_t old = umask(0);
    int rc = dist_keygen(s_path("k1"), false);
    umask(old);
    assert_int_equal(rc, 0);
    struct stat st;
    assert_int_equal(stat(s_path("k1.key"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(stat(s_path("k1.pub"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);
    char *pub = s_slurp(s_path("k1.pub"), NULL);
    assert_null(strstr(pub, "secret-key"));
    assert_non_null(strstr(pub, "public-key"));
    free(pub);
    char a[41], b[41];
    assert_int_equal(dist_key_public(s_path("k1.pub"), a), 0);
    assert_int_equal(dist_key_public(s_path("k1.key"), b), 0);
    assert_string_equal(a, b);
    assert_int_equal(strlen(a), 40);

    /* Never overwritten without force; replaced with it. */
    assert_int_equal(dist_keygen(s_path("k1"), false), -EEXIST);
    assert_int_equal(dist_key_public(s_path("k1.pub"), b), 0);
    assert_string_equal(a, b);
    assert_int_equal(dist_keygen(s_path("k1"), true), 0);
    assert_int_equal(dist_key_public(s_path("k1.pub"), b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(stat(s_path("k1.key"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);

    /* The command line: the same files, the same refusal. */
    const char *argv[] = { DIST_CLI_BIN, "keygen", s_path("k2"), NULL };
    char *out = NULL;
    assert_int_equal(s_run(argv, 20000, &out), 0);
    free(out);
    assert_int_equal(stat(s_path("k2.key"), &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(s_run(argv, 20000, &out), 1);
    assert_non_null(strstr(out, "not overwritten"));
    free(out);
}

static void test_key_permissions(void **state)
{
    (void)state;
    s_keygen("loose");
    s_allow("loose", "clients");
    assert_int_equal(chmod(s_path("loose.key"), 0644), 0);
    /* The library refuses it before connecting... */
    dist_client_t *c = s_client("loose", "master", 5000);
    assert_null(c);
    assert_int_equal(errno, EACCES);
    /* ...and the programs say why. */
    char key[256], spub[256];
    snprintf(key, sizeof key, "%s", s_path("loose.key"));
    snprintf(spub, sizeof spub, "%s", s_path("master.pub"));
    const char *argv[] = { DIST_CLI_BIN, "status", "--master", g.endpoint, "--key", key,
                           "--server-key", spub, NULL };
    char *out = NULL;
    assert_int_equal(s_run(argv, 20000, &out), 2);
    assert_non_null(strstr(out, "too open"));
    free(out);
    const char *wargv[] = { DIST_WORKER_BIN, "--master", g.endpoint, "--procs", "1", "--key", key,
                            "--server-key", spub, NULL };
    int rc = s_run(wargv, 20000, &out);
    assert_true(rc != 0 && rc != DT_TIMEOUT);
    assert_non_null(strstr(out, "too open"));
    free(out);
    /* Group-readable is too open as well; 0400 is fine. */
    assert_int_equal(chmod(s_path("loose.key"), 0640), 0);
    assert_null(s_client("loose", "master", 5000));
    assert_int_equal(errno, EACCES);
    assert_int_equal(chmod(s_path("loose.key"), 0400), 0);
    c = s_client("loose", "master", 20000);
    assert_non_null(c);
    dist_client_destroy(&c);
    /* A public key file is not a secret key. */
    dist_client_opts_t o = { .master = g.endpoint, .key = s_path("c1.pub"),
                             .server_key = s_path("master.pub"), .connect_timeout_ms = 5000 };
    assert_null(dist_client_new(&o));
    assert_int_equal(errno, EINVAL);
    /* Both keys or neither. */
    dist_client_opts_t half = { .master = g.endpoint, .key = s_path("c1.key"),
                                .connect_timeout_ms = 5000 };
    assert_null(dist_client_new(&half));
    assert_int_equal(errno, EINVAL);
}

/* ---- a legitimate cluster works -------------------------------------------------------------- */

static void test_keys_served(void **state)
{
    (void)state;
    dist_args_t *a = dist_args_new();
    dist_args_str(a, "hello over curve");
    size_t len;
    const void *args = dist_args_data(a, &len);
    dist_result_t *r = NULL;
    assert_int_equal(dist_client_call(g.c, "dist.echo", args, len, 20000, &r), 0);
    size_t rlen;
    const void *data = dist_result_data(r, &rlen);
    assert_int_equal(rlen, len);
    assert_memory_equal(data, args, len);
    dist_result_destroy(&r);
    dist_args_destroy(&a);

    /* Payloads are data: dist.exec stays refused on a worker that did not
     * allow it, however authenticated the client is: such a worker does
     * not even offer it, so the master knows no worker for it. */
    dist_args_t *x = dist_args_new();
    msgpack_packer *pk = dist_args_packer(x);
    msgpack_pack_array(pk, 2);
    msgpack_pack_str(pk, 9);
    msgpack_pack_str_body(pk, "/bin/echo", 9);
    msgpack_pack_str(pk, 5);
    msgpack_pack_str_body(pk, "pwned", 5);
    size_t xlen;
    const void *xargs = dist_args_data(x, &xlen);
    assert_int_equal(dist_client_call(g.c, "dist.exec", xargs, xlen, 20000, &r), DIST_ENOENT);
    dist_result_destroy(&r);
    dist_args_destroy(&x);

    /* The environment works where the options do. */
    setenv("DIST_KEY", s_path("c2.key"), 1);
    setenv("DIST_SERVER_KEY", s_path("master.pub"), 1);
    dist_client_opts_t o = { .master = g.endpoint, .connect_timeout_ms = 20000 };
    dist_client_t *c = dist_client_new(&o);
    unsetenv("DIST_KEY");
    unsetenv("DIST_SERVER_KEY");
    assert_non_null(c);
    assert_int_equal(s_workers(c), 1);
    dist_client_destroy(&c);

    /* And the command line, keys by flags. */
    char key[256], spub[256];
    snprintf(key, sizeof key, "%s", s_path("c1.key"));
    snprintf(spub, sizeof spub, "%s", s_path("master.pub"));
    const char *argv[] = { DIST_CLI_BIN, "submit", "--master", g.endpoint, "--key", key,
                           "--server-key", spub, "dist.echo", "\"via cli\"", NULL };
    char *out = NULL;
    assert_int_equal(s_run(argv, 30000, &out), 0);
    assert_non_null(strstr(out, "via cli"));
    free(out);
}

/* ---- refusals ---------------------------------------------------------------------------- */

static void test_refused_without_key(void **state)
{
    (void)state;
    uint64_t before = s_refused();
    dist_client_t *c = s_client(NULL, NULL, 1500);
    assert_null(c);
    /* Not a silent master: a refusal, whose reason the log says. */
    assert_int_equal(errno, -DIST_EREFUSED);
    assert_true(s_wait_refused(before) > before);
    /* Which side notices the mechanism mismatch first is a race: the
     * master sees the mismatch, or the peer breaking off the handshake;
     * either way its log names the likely cause, never a bare socket
     * error. */
    int64_t end = dt_now_ms() + 10000;
    while (!dt_wait_text(g.log, "it has no CURVE key", 0) &&
           !dt_wait_text(g.log, "it has no key, or expects another master key", 0) &&
           dt_now_ms() < end)
        dt_sleep_ms(20);
    assert_true(dt_wait_text(g.log, "it has no CURVE key", 0) ||
                dt_wait_text(g.log, "it has no key, or expects another master key", 0));
    assert_false(dt_wait_text(g.log, "the handshake did not complete", 0));
}

static void test_refused_unknown_key(void **state)
{
    (void)state;
    uint64_t before = s_refused();
    /* The master says no during the handshake: the client knows at once
     * (well within its 60 s connect timeout) that it never will get in. */
    assert_null(s_client("stranger", "master", 60000));
    assert_int_equal(errno, -DIST_EREFUSED);
    assert_true(s_wait_refused(before) > before);
    char pub[41], needle[100];
    assert_int_equal(dist_key_public(s_path("stranger.pub"), pub), 0);
    snprintf(needle, sizeof needle, "key %s is not in the allow lists", pub);
    assert_true(dt_wait_text(g.log, needle, 10000));
}

static void test_refused_wrong_server_key(void **state)
{
    (void)state;
    uint64_t before = s_refused();
    /* c1 is allowed, but it takes w1 for the master. */
    assert_null(s_client("c1", "w1", 1500));
    assert_int_equal(errno, -DIST_EREFUSED);
    assert_true(s_wait_refused(before) > before);
    assert_true(dt_wait_text(g.log, "expects another master key", 10000));
}

/* The dist command line tells a missing key, a wrong --server-key, a key
 * the master does not allow, an endpoint without a transport and a host
 * that does not resolve apart, instead of "no master answered" for all. */
static void test_cli_says_why(void **state)
{
    (void)state;
    char key[256], spub[256], wrong[256], stranger[256];
    snprintf(key, sizeof key, "%s", s_path("c1.key"));
    snprintf(spub, sizeof spub, "%s", s_path("master.pub"));
    snprintf(wrong, sizeof wrong, "%s", s_path("w1.pub"));
    snprintf(stranger, sizeof stranger, "%s", s_path("stranger.key"));
    struct {
        const char *argv[12];
        int rc;
        const char *says;
    } cases[] = {
        { { DIST_CLI_BIN, "status", "--master", g.endpoint, "--connect-timeout", "3000", NULL },
          3, "requires CURVE keys and this client has none" },
        { { DIST_CLI_BIN, "status", "--master", g.endpoint, "--connect-timeout", "3000", "--key",
            key, "--server-key", wrong, NULL },
          3, "the master's key is not " },
        { { DIST_CLI_BIN, "status", "--master", g.endpoint, "--connect-timeout", "3000", "--key",
            stranger, "--server-key", spub, NULL },
          3, "the master refused this client's key" },
        { { DIST_CLI_BIN, "status", "--master", "127.0.0.1:5555", NULL }, 3,
          "write tcp://127.0.0.1:5555" },
        { { DIST_CLI_BIN, "status", "--master", "tcp://no-such-host.invalid:5555", "--insecure",
            "--connect-timeout", "1000", NULL },
          3, "cannot resolve host no-such-host.invalid" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *out = NULL;
        int rc = s_run(cases[i].argv, 30000, &out);
        if (rc != cases[i].rc || !strstr(out, cases[i].says))
            fail_msg("case %zu: exit %d (expected %d), output lacks '%s':\n%s", i, rc,
                     cases[i].rc, cases[i].says, out);
        if (i < 3 && strstr(out, "no master answered"))
            fail_msg("case %zu: a refusal reported as a silent master:\n%s", i, out);
        free(out);
    }
}

static void test_worker_key_as_client(void **state)
{
    (void)state;
    uint64_t before = s_refused();
    dist_client_t *c = s_client("w2", "master", 20000);
    assert_null(c);
    assert_int_equal(errno, -DIST_EREFUSED);
    assert_true(s_wait_refused(before) > before);
    assert_true(dt_wait_text(g.log, "is not in the clients' allow list", 10000));
}

static void test_client_key_as_worker(void **state)
{
    (void)state;
    uint64_t before = s_refused();
    char key[256], spub[256];
    snprintf(key, sizeof key, "%s", s_path("c2.key"));
    snprintf(spub, sizeof spub, "%s", s_path("master.pub"));
    const char *argv[] = { DIST_WORKER_BIN, "--master", g.endpoint, "--procs", "1", "--key", key,
                           "--server-key", spub, NULL };
    char *out = NULL;
    /* It stops by itself: the master will never take it. */
    int rc = s_run(argv, 60000, &out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "forbidden"));
    free(out);
    assert_true(s_wait_refused(before) > before);
    assert_true(dt_wait_text(g.log, "is not in the workers' allow list", 10000));
    assert_int_equal(s_workers(g.c), 1); /* only w1 */
}

static void test_removed_key_refused(void **state)
{
    (void)state;
    s_keygen("c3");
    s_allow("c3", "clients");
    dist_client_t *c = s_client("c3", "master", 20000);
    assert_non_null(c);
    dist_client_destroy(&c);
    char gone[256];
    snprintf(gone, sizeof gone, "%s/clients/c3.pub", g.dir);
    assert_int_equal(unlink(gone), 0);
    uint64_t before = s_refused();
    assert_null(s_client("c3", "master", 60000));
    assert_int_equal(errno, -DIST_EREFUSED);
    assert_true(s_wait_refused(before) > before);
    /* The others are unaffected. */
    c = s_client("c2", "master", 20000);
    assert_non_null(c);
    dist_client_destroy(&c);
    /* Put back, it is welcome again. */
    s_allow("c3", "clients");
    c = s_client("c3", "master", 20000);
    assert_non_null(c);
    dist_client_destroy(&c);
}

/* A key in both allow lists may take either role. */
static void test_key_in_both_lists(void **state)
{
    (void)state;
    s_keygen("both");
    s_allow("both", "workers");
    s_allow("both", "clients");
    dist_client_t *c = s_client("both", "master", 20000);
    assert_non_null(c);
    char key[256], spub[256];
    snprintf(key, sizeof key, "%s", s_path("both.key"));
    snprintf(spub, sizeof spub, "%s", s_path("master.pub"));
    const char *argv[] = { DIST_WORKER_BIN, "--master", g.endpoint, "--procs", "1", "--key", key,
                           "--server-key", spub, "--name", "both-worker", NULL };
    pid_t w = s_start(argv, s_path("both-worker.log"));
    s_wait_workers(c, 2);
    assert_int_equal(s_stop(&w), 0);
    s_wait_workers(c, 1);
    dist_client_destroy(&c);
}

static void test_status_shows_refused(void **state)
{
    (void)state;
    uint64_t n = s_refused();
    assert_true(n > 0);
    char key[256], spub[256];
    snprintf(key, sizeof key, "%s", s_path("c1.key"));
    snprintf(spub, sizeof spub, "%s", s_path("master.pub"));
    const char *argv[] = { DIST_CLI_BIN, "status", "--json", "--master", g.endpoint, "--key", key,
                           "--server-key", spub, NULL };
    char *out = NULL;
    assert_int_equal(s_run(argv, 20000, &out), 0);
    const char *at = strstr(out, "\"refused_handshakes\"");
    assert_non_null(at);
    at = strchr(at, ':');
    assert_non_null(at);
    assert_true(strtoull(at + 1, NULL, 10) >= n);
    free(out);
    const char *targv[] = { DIST_CLI_BIN, "status", "--master", g.endpoint, "--key", key,
                            "--server-key", spub, NULL };
    assert_int_equal(s_run(targv, 20000, &out), 0);
    assert_non_null(strstr(out, "refused_handshakes"));
    free(out);
}

/* ---- protected mode ---------------------------------------------------------------------- */

static void test_protected_mode(void **state)
{
    (void)state;
    /* The master: refused at once, with the way out in the message. */
    const char *m1[] = { DIST_MASTER_BIN, "--bind", "tcp://198.18.0.1:0", NULL };
    char *out = NULL;
    assert_int_equal(s_run(m1, 20000, &out), 1);
    assert_non_null(strstr(out, "dist keygen"));
    assert_non_null(strstr(out, "--insecure"));
    free(out);
    const char *m2[] = { DIST_MASTER_BIN, "--bind", "tcp://*:0", NULL };
    assert_int_equal(s_run(m2, 20000, &out), 1);
    assert_non_null(strstr(out, "refusing to bind"));
    free(out);
    /* --insecure lets it try: 198.18.0.1 is not ours, so binding fails,
     * but for that reason and not protected mode. */
    const char *m3[] = { DIST_MASTER_BIN, "--bind", "tcp://198.18.0.1:0", "--insecure", NULL };
    assert_int_equal(s_run(m3, 20000, &out), 1);
    assert_null(strstr(out, "refusing to bind"));
    assert_non_null(strstr(out, "cannot bind"));
    free(out);

    /* A worker: refused before it connects; --insecure starts it. */
    const char *w1[] = { DIST_WORKER_BIN, "--master", "tcp://198.18.0.1:5555", "--procs", "1",
                         NULL };
    assert_int_equal(s_run(w1, 20000, &out), 2);
    assert_non_null(strstr(out, "dist keygen"));
    free(out);
    const char *w2[] = { DIST_WORKER_BIN, "--master", "tcp://198.18.0.1:5555", "--procs", "1",
                         "--insecure", NULL };
    pid_t w = s_start(w2, s_path("insecure-worker.log"));
    assert_true(dt_wait_text(s_path("insecure-worker.log"), "started", 20000));
    assert_int_equal(dt_wait(w, 0), DT_TIMEOUT); /* still running */
    assert_int_equal(s_stop(&w), 0);

    /* A client: the same. */
    dist_client_opts_t o = { .master = "tcp://198.18.0.1:5555", .connect_timeout_ms = 300 };
    assert_null(dist_client_new(&o));
    assert_int_equal(errno, EINVAL);
    o.insecure = true;
    assert_null(dist_client_new(&o));
    /* Allowed to try: no master there (or, where something on that
     * address accepts and closes, a refusal), not EINVAL. */
    assert_true(errno == -DIST_ENOMASTER || errno == -DIST_EREFUSED);
    const char *c1[] = { DIST_CLI_BIN, "status", "--master", "tcp://198.18.0.1:5555", NULL };
    assert_int_equal(s_run(c1, 20000, &out), 3);
    assert_non_null(strstr(out, "refusing to connect"));
    free(out);

    /* The library: the same refusal, and loopback stays open without keys. */
    dist_master_opts_t mo = { .bind = "tcp://198.18.0.1:0" };
    assert_null(dist_master_new(&mo));
    assert_int_equal(errno, EINVAL);
    mo.bind = "tcp://127.0.0.1:0";
    dist_master_t *lm = dist_master_new(&mo);
    assert_non_null(lm);
    dist_master_destroy(&lm);
}

/* Two secured masters in one process share the process's ZAP handler,
 * each with its own allow lists. */
static void test_two_masters_in_process(void **state)
{
    (void)state;
    char d1[256], d2[256];
    snprintf(d1, sizeof d1, "%s/only-c1", g.dir);
    snprintf(d2, sizeof d2, "%s/only-c2", g.dir);
    assert_int_equal(mkdir(d1, 0755), 0);
    assert_int_equal(mkdir(d2, 0755), 0);
    s_allow("c1", "only-c1");
    s_allow("c2", "only-c2");
    dist_master_opts_t o1 = { .bind = "tcp://127.0.0.1:0", .key = s_path("master.key"),
                              .allow_clients = d1 };
    dist_master_opts_t o2 = { .bind = "tcp://127.0.0.1:0", .key = s_path("master.key"),
                              .allow_clients = d2 };
    dist_master_t *m1 = dist_master_new(&o1), *m2 = dist_master_new(&o2);
    assert_non_null(m1);
    assert_non_null(m2);
    assert_int_equal(dist_master_start(m1), 0);
    assert_int_equal(dist_master_start(m2), 0);
    char saved[64];
    memcpy(saved, g.endpoint, sizeof saved);
    snprintf(g.endpoint, sizeof g.endpoint, "%s", dist_master_endpoint(m1));
    dist_client_t *a = s_client("c1", "master", 20000);
    assert_non_null(a);
    assert_null(s_client("c2", "master", 1000));
    snprintf(g.endpoint, sizeof g.endpoint, "%s", dist_master_endpoint(m2));
    dist_client_t *b = s_client("c2", "master", 20000);
    assert_non_null(b);
    assert_null(s_client("c1", "master", 1000));
    memcpy(g.endpoint, saved, sizeof saved);
    assert_true(s_counter(a, "refused_handshakes") > 0);
    assert_true(s_counter(b, "refused_handshakes") > 0);
    /* An allow list that disappears allows nobody any more (czmq's store
     * alone would keep what it had read). */
    char gone[300];
    snprintf(gone, sizeof gone, "%s/c1.pub", d1);
    assert_int_equal(unlink(gone), 0);
    assert_int_equal(rmdir(d1), 0);
    snprintf(g.endpoint, sizeof g.endpoint, "%s", dist_master_endpoint(m1));
    assert_null(s_client("c1", "master", 60000));
    assert_int_equal(errno, -DIST_EREFUSED);
    memcpy(g.endpoint, saved, sizeof saved);
    dist_client_destroy(&a);
    dist_client_destroy(&b);
    dist_master_destroy(&m1);
    /* The handler outlives the first master for the second. */
    snprintf(g.endpoint, sizeof g.endpoint, "%s", dist_master_endpoint(m2));
    b = s_client("c2", "master", 20000);
    memcpy(g.endpoint, saved, sizeof saved);
    assert_non_null(b);
    dist_client_destroy(&b);
    dist_master_destroy(&m2);
}

/* ---- silent connections under a low open-file limit ------------------------------------ */

static int s_fd_count(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    int n = 0;
    if (!d)
        return 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 2;
}

static void test_silent_connections(void **state)
{
    (void)state;
    char log[256], key[256], aw[256], ac[256], ep[64];
    snprintf(log, sizeof log, "%s", s_path("nofile-master.log"));
    snprintf(key, sizeof key, "%s", s_path("master.key"));
    snprintf(aw, sizeof aw, "%s", s_path("workers"));
    snprintf(ac, sizeof ac, "%s", s_path("clients"));
    /* 128 descriptors: a few hundred silent connections at once are sure
     * to exhaust them. */
    const char *argv[] = { "prlimit", "--nofile=128:128", DIST_MASTER_BIN, "--bind",
                           "tcp://127.0.0.1:0", "--key", key, "--allow-workers", aw,
                           "--allow-clients", ac, "--log-level", "info", NULL };
    pid_t m = s_start(argv, log);
    assert_true(s_read_endpoint(log, ep, sizeof ep));
    int port = atoi(strrchr(ep, ':') + 1);
    assert_true(port > 0);

    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < rl.rlim_max && rl.rlim_cur < 2048) {
        rl.rlim_cur = rl.rlim_max < 2048 ? rl.rlim_max : 2048;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    int batch = rl.rlim_cur > 800 ? 600 : (int)rl.rlim_cur / 2;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int total = 0, peak = 0;
    int *fds = calloc((size_t)batch, sizeof *fds);
    assert_non_null(fds);
    /* Thousands of connections that never say a word, many more at once
     * than the master has descriptors. */
    for (int round = 0; round < 6; round++) {
        int n = 0;
        for (int i = 0; i < batch; i++) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0)
                break;
            if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
                close(fd);
                continue;
            }
            fds[n++] = fd;
        }
        total += n;
        /* Hold them until the master has run out of descriptors (bounded:
         * the first round must get there; later ones just hold a while). */
        int64_t end = dt_now_ms() + (round == 0 ? 20000 : 300);
        do {
            int used = s_fd_count(m);
            if (used > peak)
                peak = used;
            if (round == 0 && peak >= 120)
                break;
            dt_sleep_ms(20);
        } while (dt_now_ms() < end);
        for (int i = 0; i < n; i++)
            close(fds[i]);
    }
    free(fds);
    assert_true(total >= 1000);
    assert_true(peak >= 120); /* it did run out */
    /* The master is still there, and serves a legitimate client. */
    assert_int_equal(dt_wait(m, 0), DT_TIMEOUT);
    char saved[64];
    memcpy(saved, g.endpoint, sizeof saved);
    memcpy(g.endpoint, ep, sizeof g.endpoint);
    dist_client_t *c = s_client("c1", "master", 60000);
    memcpy(g.endpoint, saved, sizeof saved);
    assert_non_null(c);
    assert_true(s_counter(c, "refused_handshakes") > 0);
    dist_client_destroy(&c);
    assert_int_equal(dt_wait(m, 0), DT_TIMEOUT);
    assert_int_equal(s_stop(&m), 0);

    /* A connection that never says a word is closed by the master at its
     * handshake timeout (3 s; waited for up to 30 s). */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    port = atoi(strrchr(g.endpoint, ':') + 1);
    sa.sin_port = htons((uint16_t)port);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int64_t t0 = dt_now_ms();
    bool closed = false;
    while (!closed && dt_now_ms() - t0 < 30000) {
        if (poll(&pfd, 1, 1000) <= 0)
            continue;
        char junk[256];
        ssize_t r = read(fd, junk, sizeof junk); /* the master's greeting first */
        closed = r == 0 || (r < 0 && errno == ECONNRESET);
    }
    close(fd);
    assert_true(closed);
}

/* ---- capture: root, a network namespace, tcpdump --------------------------------------- */

static char s_ns[32];

static int s_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int s_sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* One run in the namespace: tcpdump on its loopback, a master, a worker,
 * and `dist submit dist.echo MARKER`; returns the capture's bytes. */
static char *s_capture_run(bool curve, const char *marker, size_t *len)
{
    const char *tag = curve ? "curve" : "plain";
    char pcap[256], tdlog[256], mlog[256], wlog[256], ep[64], arg[128];
    snprintf(pcap, sizeof pcap, "%s/%s.pcap", g.dir, tag);
    snprintf(tdlog, sizeof tdlog, "%s/%s-tcpdump.log", g.dir, tag);
    snprintf(mlog, sizeof mlog, "%s/%s-master.log", g.dir, tag);
    snprintf(wlog, sizeof wlog, "%s/%s-worker.log", g.dir, tag);
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", curve ? 5556 : 5555);
    snprintf(arg, sizeof arg, "\"%s\"", marker);
    /* --immediate-mode: packets reach the file as they come, not when a
     * kernel buffer block fills; -Z root: keep the right to write into our
     * private directory. */
    const char *td[] = { "ip", "netns", "exec", s_ns, "tcpdump", "-i", "lo", "-U",
                         "--immediate-mode", "-Z", "root", "-s", "0", "-w", pcap, "tcp", NULL };
    pid_t cap = s_start(td, tdlog);
    assert_true(dt_wait_text(tdlog, "listening on", 20000));
    char key[256], aw[256], ac[256], wkey[256], ckey[256], spub[256];
    snprintf(key, sizeof key, "%s", s_path("master.key"));
    snprintf(aw, sizeof aw, "%s", s_path("workers"));
    snprintf(ac, sizeof ac, "%s", s_path("clients"));
    snprintf(wkey, sizeof wkey, "%s", s_path("w1.key"));
    snprintf(ckey, sizeof ckey, "%s", s_path("c1.key"));
    snprintf(spub, sizeof spub, "%s", s_path("master.pub"));
    const char *mplain[] = { "ip", "netns", "exec", s_ns, DIST_MASTER_BIN, "--bind", ep, NULL };
    const char *mcurve[] = { "ip", "netns", "exec", s_ns, DIST_MASTER_BIN, "--bind", ep, "--key",
                             key, "--allow-workers", aw, "--allow-clients", ac, NULL };
    pid_t m = s_start(curve ? mcurve : mplain, mlog);
    assert_true(dt_wait_text(mlog, "listening on", 20000));
    const char *wplain[] = { "ip", "netns", "exec", s_ns, DIST_WORKER_BIN, "--master", ep,
                             "--procs", "1", NULL };
    const char *wcurve[] = { "ip", "netns", "exec", s_ns, DIST_WORKER_BIN, "--master", ep,
                             "--procs", "1", "--key", wkey, "--server-key", spub, NULL };
    pid_t w = s_start(curve ? wcurve : wplain, wlog);
    assert_true(dt_wait_text(mlog, "worker joined", 30000));
    const char *cplain[] = { "ip", "netns", "exec", s_ns, DIST_CLI_BIN, "submit", "--master", ep,
                             "dist.echo", arg, NULL };
    const char *ccurve[] = { "ip", "netns", "exec", s_ns, DIST_CLI_BIN, "submit", "--master", ep,
                             "--key", ckey, "--server-key", spub, "dist.echo", arg, NULL };
    char *out = NULL;
    assert_int_equal(s_run(curve ? ccurve : cplain, 60000, &out), 0);
    assert_non_null(strstr(out, marker)); /* it did travel, both ways */
    free(out);
    assert_int_equal(s_stop(&w), 0);
    assert_int_equal(s_stop(&m), 0);
    dt_signal(cap, SIGINT);
    if (dt_wait(cap, 15000) == DT_TIMEOUT) {
        dt_signal(cap, SIGKILL);
        dt_wait(cap, 5000);
    }
    return s_slurp(pcap, len);
}

static bool s_has(const char *buf, size_t len, const char *needle)
{
    return memmem(buf, len, needle, strlen(needle)) != NULL;
}

static void test_capture(void **state)
{
    (void)state;
    char marker[64];
    snprintf(marker, sizeof marker, "MARKER-%d-payload-in-clear", (int)getpid());
    size_t n1 = 0, n2 = 0;
    char *plain = s_capture_run(false, marker, &n1);
    char *curve = s_capture_run(true, marker, &n2);
    /* Without CURVE the payload is on the wire; with it, the capture holds
     * the same conversation (the greeting names the mechanism) and never
     * the payload. */
    assert_true(n1 > 24 && n2 > 24);
    assert_true(s_has(plain, n1, marker));
    assert_true(s_has(plain, n1, "NULL"));
    assert_true(s_has(curve, n2, "CURVE"));
    assert_false(s_has(curve, n2, marker));
    assert_false(s_has(curve, n2, "dist.echo"));
    free(plain);
    free(curve);
}

static int s_capture_setup(void **state)
{
    snprintf(s_ns, sizeof s_ns, "dsec%d", (int)getpid());
    if (s_sh("ip netns add %s", s_ns) != 0 || s_sh("ip -n %s link set lo up", s_ns) != 0)
        return -1;
    (void)state;
    s_keys_setup();
    return 0;
}

static int s_capture_teardown(void **state)
{
    (void)state;
    dt_kill_children();
    s_sh("ip netns del %s", s_ns);
    s_dir_remove();
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (argc > 1 && strcmp(argv[1], "capture") == 0) {
        if (geteuid() != 0) {
            fprintf(stderr, "skipped: the capture needs root (network namespaces)\n");
            return 77;
        }
        if (s_sh("command -v tcpdump >/dev/null 2>&1") != 0 ||
            s_sh("command -v ip >/dev/null 2>&1") != 0) {
            fprintf(stderr, "skipped: tcpdump or ip is missing\n");
            return 77;
        }
        const struct CMUnitTest caps[] = {
            cmocka_unit_test_setup_teardown(test_capture, dt_setup, dt_teardown),
        };
        return cmocka_run_group_tests(caps, s_capture_setup, s_capture_teardown);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_keygen_files, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_key_permissions, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_keys_served, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_refused_without_key, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_refused_unknown_key, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_refused_wrong_server_key, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_cli_says_why, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_worker_key_as_client, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_client_key_as_worker, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_removed_key_refused, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_key_in_both_lists, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_status_shows_refused, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_protected_mode, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_two_masters_in_process, NULL, NULL),
        cmocka_unit_test_setup_teardown(test_silent_connections, NULL, NULL),
    };
    return cmocka_run_group_tests(tests, s_group_setup, s_group_teardown);
}

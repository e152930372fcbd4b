/*  bench_dist.c - cluster figures on loopback (see scripts/bench).
 *
 *  dist.tasks_per_s              200,000 trivial tasks (dist.echo) from one
 *                                client through dist-master to one
 *                                dist-worker with 2 pool processes, and back
 *  dist.tasks_per_s_store        the same with the master started with
 *                                --store FILE (a fresh file in a temporary
 *                                directory; group commit, no fsync), in the
 *                                same run, so that the two compare
 *  dist.tasks_per_s_curve        the same with CURVE on every connection
 *                                (keys from dist_keygen, a master with
 *                                allow lists): the cost of security
 *  dist.rtt_us                   median submit -> result of one such task
 *  dist.master_rss_1m_queued_mib dist-master's resident memory holding
 *                                1,000,000 queued tasks (no worker running)
 *  dist.delay_error_ms           median lateness of 1,000 tasks submitted
 *                                with delays of 200 to 400 ms (5 due per
 *                                millisecond): from each task's due time
 *                                (its submission + delay, on the client's
 *                                clock) to its result at the client
 *  dist.cancel_100k_queued_s     time to cancel 100,000 queued tasks (no
 *                                worker offers their name any more), by id,
 *                                in batches of 10,000
 *
 *  The master and the worker are the real programs, started as child
 *  processes, as Python's BaseManager server and workers are on the Python
 *  side (bench/py/dist.py).
 */
#include <dist.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include "bench_util.h"

static pid_t s_spawn(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", 1);
        if (null >= 0)
            dup2(null, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static void s_stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

static long s_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

/* Waits until a worker has said HELLO (status shows one). */
static void s_wait_worker(dist_client_t *c)
{
    for (int i = 0; i < 500; i++) {
        dist_result_t *st;
        if (dist_client_status(c, 2000, &st) == 0) {
            const msgpack_object *w = dist_wire_map_get(dist_result_value(st), "workers");
            bool any = w && w->type == MSGPACK_OBJECT_ARRAY && w->via.array.size > 0;
            dist_result_destroy(&st);
            if (any)
                return;
        }
        usleep(10000);
    }
    fprintf(stderr, "bench_dist: no worker showed up\n");
    exit(1);
}

enum { N = 200000 };

/* The timed map: N trivial tasks after a warm-up of 1,000; tasks per
 * second, or a negative value when the map failed. */
static double s_throughput(dist_client_t *c, const dist_bytes_t *items)
{
    dist_results_t *rs;
    dist_client_map(c, "dist.echo", items, 1000, 0, 60000, NULL, NULL, &rs); /* warm up */
    dist_results_destroy(&rs);
    double t0 = bench_now();
    int r = dist_client_map(c, "dist.echo", items, N, 0, 600000, NULL, NULL, &rs);
    double dt = bench_now() - t0;
    dist_results_destroy(&rs);
    if (r) {
        fprintf(stderr, "bench_dist: map: %s\n", dist_strerror(r));
        return -1;
    }
    return N / dt;
}

/* Removes a scratch directory and the files in it (no subdirectories). */
static void s_rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[512];
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (unlink(path) != 0)
                s_rmtree(path);
        }
    if (d)
        closedir(d);
    rmdir(dir);
}

/* The throughput figure against a cluster of its own: a master with the
 * extra flags mflags, a worker with wflags (both NULL-terminated, at most
 * 8), a client with key/server_key (NULL: none). */
static double s_throughput_own(const dist_bytes_t *items, char *const *mflags, char *const *wflags,
                               const char *key, const char *server_key)
{
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", s_free_port());
    char *margv[16] = { DIST_MASTER_BIN, "--bind", ep, "--log-level", "error" };
    char *wargv[16] = { DIST_WORKER_BIN, "--master", ep, "--procs", "2", "--log-level", "error" };
    for (int i = 0; mflags[i] && i < 8; i++)
        margv[5 + i] = mflags[i];
    for (int i = 0; wflags[i] && i < 8; i++)
        wargv[7 + i] = wflags[i];
    pid_t master = s_spawn(margv);
    pid_t worker = s_spawn(wargv);
    dist_client_opts_t co = { .master = ep, .key = key, .server_key = server_key,
                              .connect_timeout_ms = 10000 };
    dist_client_t *c = dist_client_new(&co);
    double v = -1;
    if (c) {
        s_wait_worker(c);
        v = s_throughput(c, items);
        dist_client_destroy(&c);
    } else {
        fprintf(stderr, "bench_dist: %s\n", dist_strerror(errno));
    }
    s_stop(worker);
    s_stop(master);
    return v;
}

/* dist.tasks_per_s_store: the master keeps its state in a fresh store in a
 * temporary directory (group commit, no fsync). */
static double s_throughput_store(const dist_bytes_t *items)
{
    char dir[] = "/tmp/bench_dist_XXXXXX", db[64];
    if (!mkdtemp(dir)) {
        perror("bench_dist: mkdtemp");
        return -1;
    }
    snprintf(db, sizeof db, "%s/master.db", dir);
    double v = s_throughput_own(items, (char *[]){ "--store", db, NULL }, (char *[]){ NULL },
                                NULL, NULL);
    s_rmtree(dir);
    return v;
}

/* dist.tasks_per_s_curve: CURVE on every connection, with keys made by
 * dist_keygen in a temporary directory and a master with allow lists. */
static double s_throughput_curve(const dist_bytes_t *items)
{
    char dir[] = "/tmp/bench-curve-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("bench_dist: mkdtemp");
        return -1;
    }
    char m[64], w[64], c[64], wl[64], cl[64], mkey[80], mpub[80], wkey[80], ckey[80], pub[80],
        lpub[80];
    snprintf(m, sizeof m, "%s/master", dir);
    snprintf(w, sizeof w, "%s/w", dir);
    snprintf(c, sizeof c, "%s/c", dir);
    snprintf(wl, sizeof wl, "%s/workers", dir);
    snprintf(cl, sizeof cl, "%s/clients", dir);
    snprintf(mkey, sizeof mkey, "%s.key", m);
    snprintf(mpub, sizeof mpub, "%s.pub", m);
    snprintf(wkey, sizeof wkey, "%s.key", w);
    snprintf(ckey, sizeof ckey, "%s.key", c);
    double v = -1;
    if (dist_keygen(m, false) || dist_keygen(w, false) || dist_keygen(c, false) ||
        mkdir(wl, 0755) || mkdir(cl, 0755)) {
        fprintf(stderr, "bench_dist: cannot make keys in %s\n", dir);
        goto out;
    }
    /* Each allow list holds one public key. */
    snprintf(pub, sizeof pub, "%s.pub", w);
    snprintf(lpub, sizeof lpub, "%s/w.pub", wl);
    if (link(pub, lpub))
        goto out;
    snprintf(pub, sizeof pub, "%s.pub", c);
    snprintf(lpub, sizeof lpub, "%s/c.pub", cl);
    if (link(pub, lpub))
        goto out;
    v = s_throughput_own(items,
                         (char *[]){ "--key", mkey, "--allow-workers", wl, "--allow-clients", cl,
                                     NULL },
                         (char *[]){ "--key", wkey, "--server-key", mpub, NULL }, ckey, mpub);
out:
    s_rmtree(dir);
    return v;
}

/* dist.delay_error_ms: see the top of the file. */
static double s_delay_error(dist_client_t *c, const dist_bytes_t *items)
{
    enum { D = 1000 };
    static dist_future_t *f[D];
    static double due[D], late[D];
    for (int i = 0; i < D; i++) {
        dist_submit_opts_t o = { .delay_ms = 200 + i / 5 };
        f[i] = dist_client_submit_opts(c, "dist.echo", items[i].data, items[i].len, &o);
        if (!f[i]) {
            fprintf(stderr, "bench_dist: delayed submit: %s\n", dist_strerror(errno));
            return -1;
        }
        due[i] = bench_now() + (double)o.delay_ms / 1000.0;
    }
    /* In order of due time: each wait ends when that result is there. */
    for (int i = 0; i < D; i++) {
        if (dist_future_wait(f[i], 30000) || !dist_future_successful(f[i])) {
            fprintf(stderr, "bench_dist: delayed task %d did not complete\n", i);
            return -1;
        }
        late[i] = (bench_now() - due[i]) * 1000.0;
        dist_future_destroy(&f[i]);
    }
    return bench_median(late, D);
}

/* dist.cancel_100k_queued_s: see the top of the file. */
static double s_cancel_queued(dist_client_t *c, const dist_bytes_t *items)
{
    const size_t M = 100000, B = 10000;
    dist_bytes_t *many = malloc(M * sizeof *many);
    dist_future_t **f = malloc(M * sizeof *f);
    const char **ids = malloc(M * sizeof *ids);
    const char **states = malloc(B * sizeof *states);
    double v = -1;
    if (!many || !f || !ids || !states)
        goto out;
    for (size_t i = 0; i < M; i++)
        many[i] = items[i % N];
    long accepted = dist_client_submit_batch(c, "dist.echo", many, M, 0, f, NULL);
    if (accepted != (long)M) {
        fprintf(stderr, "bench_dist: only %ld of %zu accepted\n", accepted, M);
        goto out;
    }
    for (size_t i = 0; i < M; i++)
        ids[i] = dist_future_id(f[i]);
    double t0 = bench_now();
    for (size_t i = 0; i < M; i += B) {
        int rc = dist_client_cancel(c, ids + i, B, 60000, states);
        if (rc || strcmp(states[0], "cancelled") != 0 || strcmp(states[B - 1], "cancelled") != 0) {
            fprintf(stderr, "bench_dist: cancel: %s (%s)\n", dist_strerror(rc),
                    rc ? "-" : states[0]);
            goto out;
        }
    }
    v = bench_now() - t0;
    for (size_t i = 0; i < M; i++)
        dist_future_destroy(&f[i]);
out:
    free(states);
    free(ids);
    free(f);
    free(many);
    return v;
}

int main(int argc, char **argv)
{
    bool tput = bench_wanted(argc, argv, "dist.tasks_per_s");
    bool tput_store = bench_wanted(argc, argv, "dist.tasks_per_s_store");
    bool rtt = bench_wanted(argc, argv, "dist.rtt_us");
    bool rss = bench_wanted(argc, argv, "dist.master_rss_1m_queued_mib");
    bool curve = bench_wanted(argc, argv, "dist.tasks_per_s_curve");
    bool delay = bench_wanted(argc, argv, "dist.delay_error_ms");
    bool cancel = bench_wanted(argc, argv, "dist.cancel_100k_queued_s");
    if (!tput && !tput_store && !rtt && !rss && !curve && !delay && !cancel)
        return 0;
    char ep[64], bind[64];
    int port = s_free_port();
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    snprintf(bind, sizeof bind, "tcp://127.0.0.1:%d", port);
    pid_t master = s_spawn((char *[]){ DIST_MASTER_BIN, "--bind", bind, "--log-level", "error", NULL });
    pid_t worker = s_spawn((char *[]){ DIST_WORKER_BIN, "--master", ep, "--procs", "2", "--log-level",
                                       "error", NULL });
    dist_client_opts_t co = { .master = ep, .connect_timeout_ms = 10000 };
    dist_client_t *c = dist_client_new(&co);
    if (!c) {
        fprintf(stderr, "bench_dist: %s\n", dist_strerror(errno));
        s_stop(worker);
        s_stop(master);
        return 1;
    }
    s_wait_worker(c);
    unsigned char *buf = malloc((size_t)N * 10);
    dist_bytes_t *items = malloc(N * sizeof *items);
    size_t off = 0;
    for (int i = 0; i < N; i++) {
        unsigned char *b = buf + off;
        b[0] = 0x91;
        b[1] = 0xce;
        b[2] = (unsigned char)(i >> 24);
        b[3] = (unsigned char)(i >> 16);
        b[4] = (unsigned char)(i >> 8);
        b[5] = (unsigned char)i;
        items[i] = (dist_bytes_t){ b, 6 };
        off += 6;
    }
    if (tput) {
        double v = s_throughput(c, items);
        if (v < 0)
            return 1;
        bench_report("dist.tasks_per_s", v, "tasks_per_s");
    }
    if (tput_store) {
        double v = s_throughput_store(items);
        if (v < 0)
            return 1;
        bench_report("dist.tasks_per_s_store", v, "tasks_per_s");
    }
    if (curve) {
        double v = s_throughput_curve(items);
        if (v < 0)
            return 1;
        bench_report("dist.tasks_per_s_curve", v, "tasks_per_s");
    }
    if (rtt) {
        enum { R = 2000 };
        static double t[R];
        for (int i = 0; i < R; i++) {
            double t0 = bench_now();
            dist_result_t *r;
            if (dist_client_call(c, "dist.echo", items[i].data, items[i].len, 10000, &r)) {
                fprintf(stderr, "bench_dist: call failed\n");
                return 1;
            }
            dist_result_destroy(&r);
            t[i] = (bench_now() - t0) * 1e6;
        }
        bench_report("dist.rtt_us", bench_median(t, R), "us");
    }
    if (delay) {
        double v = s_delay_error(c, items);
        if (v < 0)
            return 1;
        bench_report("dist.delay_error_ms", v, "ms");
    }
    if (cancel) {
        /* As for rss below: without the worker, tasks stay queued. */
        s_stop(worker);
        worker = 0;
        double v = s_cancel_queued(c, items);
        if (v < 0)
            return 1;
        bench_report("dist.cancel_100k_queued_s", v, "s");
    }
    if (rss) {
        /* The worker has announced dist.echo; without it, nothing runs and
         * everything submitted stays queued. */
        s_stop(worker);
        worker = 0;
        const size_t M = 1000000;
        dist_bytes_t *many = malloc(M * sizeof *many);
        for (size_t i = 0; i < M; i++)
            many[i] = items[i % N];
        dist_future_t **f = malloc(M * sizeof *f);
        long accepted = dist_client_submit_batch(c, "dist.echo", many, M, 0, f, NULL);
        if (accepted != (long)M) {
            fprintf(stderr, "bench_dist: only %ld of %zu accepted\n", accepted, M);
            return 1;
        }
        bench_report("dist.master_rss_1m_queued_mib", (double)s_rss_kib(master) / 1024.0, "MiB");
        for (size_t i = 0; i < M; i++)
            dist_future_destroy(&f[i]);
        free(f);
        free(many);
    }
    dist_client_destroy(&c);
    s_stop(worker);
    s_stop(master);
    free(items);
    free(buf);
    return 0;
}

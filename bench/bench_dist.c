/*  bench_dist.c - cluster figures on loopback (see scripts/bench).
 *
 *  dist.tasks_per_s              200,000 trivial tasks (dist.echo) from one
 *                                client through dist-master to one
 *                                dist-worker with 2 pool processes, and back
 *  dist.tasks_per_s_curve        the same with CURVE on every connection
 *                                (keys from dist_keygen, a master with
 *                                allow lists): the cost of security
 *  dist.rtt_us                   median submit -> result of one such task
 *  dist.master_rss_1m_queued_mib dist-master's resident memory holding
 *                                1,000,000 queued tasks (no worker running)
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

/* dist.tasks_per_s_curve: its own master, worker and client, with keys in
 * a temporary directory; the same map as dist.tasks_per_s. */
static int s_curve_tput(const dist_bytes_t *items, size_t n)
{
    char dir[] = "/tmp/bench-curve-XXXXXX", p[5][64], pubf[160];
    if (!mkdtemp(dir))
        return 1;
    const char *f[6] = { "master", "w", "c", "workers", "clients", NULL };
    for (int i = 0; i < 5; i++)
        snprintf(p[i], sizeof p[i], "%s/%s", dir, f[i]);
    char mkey[160], mpub[160], wkey[160], ckey[160], wl[160], cl[160], ep[64];
    snprintf(mkey, sizeof mkey, "%s.key", p[0]);
    snprintf(mpub, sizeof mpub, "%s.pub", p[0]);
    snprintf(wkey, sizeof wkey, "%s.key", p[1]);
    snprintf(ckey, sizeof ckey, "%s.key", p[2]);
    snprintf(wl, sizeof wl, "%s/w.pub", p[3]);
    snprintf(cl, sizeof cl, "%s/c.pub", p[4]);
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", s_free_port());
    int rc = 1;
    if (dist_keygen(p[0], false) || dist_keygen(p[1], false) || dist_keygen(p[2], false) ||
        mkdir(p[3], 0755) || mkdir(p[4], 0755))
        goto out;
    snprintf(pubf, sizeof pubf, "%s.pub", p[1]);
    if (link(pubf, wl))
        goto out;
    snprintf(pubf, sizeof pubf, "%s.pub", p[2]);
    if (link(pubf, cl))
        goto out;
    pid_t master = s_spawn((char *[]){ DIST_MASTER_BIN, "--bind", ep, "--key", mkey,
                                       "--allow-workers", p[3], "--allow-clients", p[4],
                                       "--log-level", "error", NULL });
    pid_t worker = s_spawn((char *[]){ DIST_WORKER_BIN, "--master", ep, "--procs", "2", "--key",
                                       wkey, "--server-key", mpub, "--log-level", "error", NULL });
    dist_client_opts_t co = { .master = ep, .key = ckey, .server_key = mpub,
                              .connect_timeout_ms = 10000 };
    dist_client_t *c = dist_client_new(&co);
    if (c) {
        s_wait_worker(c);
        dist_results_t *rs;
        dist_client_map(c, "dist.echo", items, 1000, 0, 60000, NULL, NULL, &rs); /* warm up */
        dist_results_destroy(&rs);
        double t0 = bench_now();
        int r = dist_client_map(c, "dist.echo", items, n, 0, 600000, NULL, NULL, &rs);
        double dt = bench_now() - t0;
        if (r == 0) {
            dist_results_destroy(&rs);
            bench_report("dist.tasks_per_s_curve", (double)n / dt, "tasks_per_s");
            rc = 0;
        } else {
            fprintf(stderr, "bench_dist: curve map: %s\n", dist_strerror(r));
        }
        dist_client_destroy(&c);
    } else {
        fprintf(stderr, "bench_dist: curve client: %s\n", dist_strerror(errno));
    }
    s_stop(worker);
    s_stop(master);
out:;
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_dist: could not remove %s\n", dir);
    return rc;
}

int main(int argc, char **argv)
{
    bool tput = bench_wanted(argc, argv, "dist.tasks_per_s");
    bool rtt = bench_wanted(argc, argv, "dist.rtt_us");
    bool rss = bench_wanted(argc, argv, "dist.master_rss_1m_queued_mib");
    bool curve = bench_wanted(argc, argv, "dist.tasks_per_s_curve");
    if (!tput && !rtt && !rss && !curve)
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
    enum { N = 200000 };
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
        dist_results_t *rs;
        dist_client_map(c, "dist.echo", items, 1000, 0, 60000, NULL, NULL, &rs); /* warm up */
        dist_results_destroy(&rs);
        double t0 = bench_now();
        int r = dist_client_map(c, "dist.echo", items, N, 0, 600000, NULL, NULL, &rs);
        double dt = bench_now() - t0;
        if (r) {
            fprintf(stderr, "bench_dist: map: %s\n", dist_strerror(r));
            return 1;
        }
        dist_results_destroy(&rs);
        bench_report("dist.tasks_per_s", N / dt, "tasks_per_s");
    }
    if (curve && s_curve_tput(items, N))
        return 1;
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

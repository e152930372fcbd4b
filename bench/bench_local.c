/*  bench_local.c - Process, Pipe and Queue figures (see scripts/bench).
 *
 *  process.spawn_join_per_s  start+join of a process with an empty target
 *  pipe.msgs_per_s           16-byte messages one way, child -> parent
 *  pipe.rtt_us               median ping-pong of a 16-byte message
 *  queue.msgs_per_s          1 producer -> 1 consumer, 2,000,000 16-byte messages
 *  queue.mpmc_msgs_per_s     2 producers -> 2 consumers, the same
 */
#include <dist.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"

static int s_empty(void *arg)
{
    (void)arg;
    return 0;
}

static void bench_spawn(void)
{
    int n = 2000;
    double t0 = bench_now();
    for (int i = 0; i < n; i++) {
        dist_process_t *p = dist_process_new(s_empty, NULL, "bench");
        if (!p || dist_process_start(p) || dist_process_join(p, DIST_FOREVER)) {
            fprintf(stderr, "spawn failed\n");
            exit(1);
        }
        dist_process_destroy(&p);
    }
    bench_report("process.spawn_join_per_s", n / (bench_now() - t0), "per_s");
}

struct pipe_args {
    dist_pipe_t *end;   /* the child's end */
    dist_pipe_t *other; /* the parent's end, closed in the child */
    long n;
};

static int s_pipe_sender(void *arg)
{
    struct pipe_args *a = arg;
    dist_pipe_destroy(&a->other);
    char msg[16] = "0123456789abcde";
    for (long i = 0; i < a->n; i++)
        if (dist_pipe_send(a->end, msg, sizeof msg))
            return 1;
    return 0;
}

static int s_pipe_echo(void *arg)
{
    struct pipe_args *a = arg;
    dist_pipe_destroy(&a->other);
    for (;;) {
        void *m;
        size_t n;
        if (dist_pipe_recv(a->end, &m, &n, DIST_FOREVER))
            return 0;
        dist_pipe_send(a->end, m, n);
        free(m);
    }
}

static void bench_pipe(int argc, char **argv)
{
    dist_pipe_t *a, *b;
    if (bench_wanted(argc, argv, "pipe.msgs_per_s")) {
        dist_pipe_pair(&a, &b, false);
        struct pipe_args args = { b, a, 1000000 };
        dist_process_t *p = dist_process_new(s_pipe_sender, &args, "sender");
        double t0 = bench_now();
        dist_process_start(p);
        dist_pipe_destroy(&b);
        char buf[16];
        for (long i = 0; i < args.n; i++) {
            void *m;
            size_t n;
            if (dist_pipe_recv(a, &m, &n, DIST_FOREVER))
                exit(1);
            memcpy(buf, m, sizeof buf);
            free(m);
        }
        bench_report("pipe.msgs_per_s", args.n / (bench_now() - t0), "msgs_per_s");
        dist_process_join(p, DIST_FOREVER);
        dist_process_destroy(&p);
        dist_pipe_destroy(&a);
    }
    if (bench_wanted(argc, argv, "pipe.rtt_us")) {
        dist_pipe_pair(&a, &b, true);
        struct pipe_args args = { b, a, 0 };
        dist_process_t *p = dist_process_new(s_pipe_echo, &args, "echo");
        dist_process_start(p);
        dist_pipe_destroy(&b);
        enum { N = 20000 };
        static double rtt[N];
        char msg[16] = "ping-ping-ping!";
        for (int i = 0; i < N; i++) {
            double t0 = bench_now();
            void *m;
            size_t n;
            dist_pipe_send(a, msg, sizeof msg);
            if (dist_pipe_recv(a, &m, &n, DIST_FOREVER))
                exit(1);
            free(m);
            rtt[i] = (bench_now() - t0) * 1e6;
        }
        bench_report("pipe.rtt_us", bench_median(rtt, N), "us");
        dist_pipe_destroy(&a);
        dist_process_join(p, DIST_FOREVER);
        dist_process_destroy(&p);
    }
}

struct queue_args {
    dist_queue_t *q;
    long n;
};

static int s_producer(void *arg)
{
    struct queue_args *a = arg;
    char msg[16] = "0123456789abcde";
    for (long i = 0; i < a->n; i++)
        if (dist_queue_put(a->q, msg, sizeof msg, true, DIST_FOREVER))
            return 1;
    return 0;
}

static int s_consumer(void *arg)
{
    struct queue_args *a = arg;
    char msg[16];
    size_t n;
    for (long i = 0; i < a->n; i++)
        if (dist_queue_get_into(a->q, msg, sizeof msg, &n, true, DIST_FOREVER))
            return 1;
    return 0;
}

/* nprod producers and ncons consumers, all child processes, move total
 * messages; the clock runs from the first start to the last join. */
static double s_queue_run(int nprod, int ncons, long total)
{
    dist_queue_t *q = dist_queue_new(0, 1 << 20);
    struct queue_args pa = { q, total / nprod }, ca = { q, total / ncons };
    dist_process_t *ps[8];
    int np = 0;
    double t0 = bench_now();
    for (int i = 0; i < ncons; i++)
        ps[np++] = dist_process_new(s_consumer, &ca, "consumer");
    for (int i = 0; i < nprod; i++)
        ps[np++] = dist_process_new(s_producer, &pa, "producer");
    for (int i = 0; i < np; i++)
        dist_process_start(ps[i]);
    int bad = 0;
    for (int i = 0; i < np; i++) {
        dist_process_join(ps[i], DIST_FOREVER);
        bad |= dist_process_exitcode(ps[i]) != 0;
        dist_process_destroy(&ps[i]);
    }
    double rate = total / (bench_now() - t0);
    dist_queue_destroy(&q);
    if (bad) {
        fprintf(stderr, "queue benchmark: a child failed\n");
        exit(1);
    }
    return rate;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (bench_wanted(argc, argv, "process.spawn_join_per_s"))
        bench_spawn();
    bench_pipe(argc, argv);
    /* Queue figures swing with where the scheduler puts the processes:
     * report the median of three runs. */
    if (bench_wanted(argc, argv, "queue.msgs_per_s")) {
        double r[3] = { s_queue_run(1, 1, 2000000), s_queue_run(1, 1, 2000000),
                        s_queue_run(1, 1, 2000000) };
        bench_report("queue.msgs_per_s", bench_median(r, 3), "msgs_per_s");
    }
    if (bench_wanted(argc, argv, "queue.mpmc_msgs_per_s")) {
        double r[3] = { s_queue_run(2, 2, 2000000), s_queue_run(2, 2, 2000000),
                        s_queue_run(2, 2, 2000000) };
        bench_report("queue.mpmc_msgs_per_s", bench_median(r, 3), "msgs_per_s");
    }
    return 0;
}

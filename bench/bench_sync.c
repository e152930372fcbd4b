/*  bench_sync.c - Lock and subprocess figures (see scripts/bench).
 *
 *  sync.lock_uncontended_ns       one acquire + release of a Lock, one process
 *  sync.lock_contended_ops_per_s  2 processes add 1 to a shared counter under
 *                                 one Lock; increments per second, all told
 *  subprocess.spawn_wait_per_s    spawn + wait of /bin/true
 */
#include <dist.h>
#include <signal.h>
#include <stdlib.h>

#include "bench_util.h"

static void bench_uncontended(void)
{
    dist_lock_t *l = dist_lock_new();
    long n = 10000000;
    double t0 = bench_now();
    for (long i = 0; i < n; i++) {
        dist_lock_acquire(l, DIST_FOREVER);
        dist_lock_release(l);
    }
    bench_report("sync.lock_uncontended_ns", (bench_now() - t0) * 1e9 / (double)n, "ns");
    dist_lock_destroy(&l);
}

#define CONTENDED_EACH 2000000

struct contended {
    dist_value_t *counter; /* its Lock guards its plain int64 */
    dist_barrier_t *start; /* 2 children + the parent: all start together */
};

static int s_incrementer(void *arg)
{
    struct contended *c = arg;
    dist_lock_t *l = dist_value_lock(c->counter);
    volatile int64_t *p = dist_value_ptr(c->counter);
    if (dist_barrier_wait(c->start, DIST_FOREVER) < 0)
        return 1;
    for (long i = 0; i < CONTENDED_EACH; i++) {
        if (dist_lock_acquire(l, DIST_FOREVER))
            return 1;
        *p = *p + 1;
        dist_lock_release(l);
    }
    return 0;
}

/* One run: the clock runs from the moment both children are ready (the
 * barrier; process start-up is not measured) to the last join. */
static double s_contended_run(void)
{
    struct contended c = { dist_value_new(DIST_CTYPE_INT64, true), dist_barrier_new(3) };
    dist_process_t *ps[2];
    for (int i = 0; i < 2; i++) {
        ps[i] = dist_process_new(s_incrementer, &c, "incrementer");
        dist_process_start(ps[i]);
    }
    dist_barrier_wait(c.start, DIST_FOREVER);
    double t0 = bench_now();
    int bad = 0;
    for (int i = 0; i < 2; i++) {
        dist_process_join(ps[i], DIST_FOREVER);
        bad |= dist_process_exitcode(ps[i]) != 0;
        dist_process_destroy(&ps[i]);
    }
    double rate = 2.0 * CONTENDED_EACH / (bench_now() - t0);
    if (bad || dist_value_get_int(c.counter) != 2 * CONTENDED_EACH) {
        fprintf(stderr, "contended lock benchmark: wrong count\n");
        exit(1);
    }
    dist_value_destroy(&c.counter);
    dist_barrier_destroy(&c.start);
    return rate;
}

static void bench_spawn_wait(void)
{
    const char *argv[] = { "/bin/true", NULL };
    int n = 2000;
    double t0 = bench_now();
    for (int i = 0; i < n; i++) {
        dist_subprocess_t *p = dist_subprocess_new(argv, NULL);
        if (!p || dist_subprocess_wait(p, DIST_FOREVER) || dist_subprocess_returncode(p) != 0) {
            fprintf(stderr, "spawn failed\n");
            exit(1);
        }
        dist_subprocess_destroy(&p);
    }
    bench_report("subprocess.spawn_wait_per_s", n / (bench_now() - t0), "per_s");
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if (bench_wanted(argc, argv, "sync.lock_uncontended_ns"))
        bench_uncontended();
    /* Contended figures depend on where the scheduler puts the two
     * processes: report the median of three runs. */
    if (bench_wanted(argc, argv, "sync.lock_contended_ops_per_s")) {
        double r[3] = { s_contended_run(), s_contended_run(), s_contended_run() };
        bench_report("sync.lock_contended_ops_per_s", bench_median(r, 3), "ops_per_s");
    }
    if (bench_wanted(argc, argv, "subprocess.spawn_wait_per_s"))
        bench_spawn_wait();
    return 0;
}

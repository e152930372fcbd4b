/*  bench_pool.c - Pool figures (see scripts/bench).
 *
 *  pool.map_tasks_per_s          map of x*x over 1,000,000 ints (auto chunksize)
 *  pool.apply_async_tasks_per_s  100,000 apply_async, then get each
 *  pool.apply_rtt_us             median blocking apply of x*x
 *  pool.pending_1m_rss_mib       parent RSS growth with 1,000,000 pending apply_async
 *
 *  Two pool processes, like the Python side (bench/py/pool.py).
 */
#include <dist.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"

static int square(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t x;
    if (dist_arg_int(args, 0, &x))
        return dist_task_fail(ctx, "square: expected an integer");
    return msgpack_pack_int64(out, x * x);
}

/* Blocks its pool process for a while, so that what is submitted after it
 * stays pending. */
static int blocker(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    (void)ctx;
    (void)args;
    sleep(30);
    return msgpack_pack_nil(out);
}

static size_t s_pack_int(unsigned char *buf, int64_t x)
{
    /* [x] as msgpack: fixarray(1) + int64 in its shortest form */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_int64(&pk, x);
    memcpy(buf, sb.data, sb.size);
    size_t n = sb.size;
    msgpack_sbuffer_destroy(&sb);
    return n;
}

static long s_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static dist_pool_t *s_pool(void)
{
    dist_pool_opts_t o = { .processes = 2 };
    dist_pool_t *p = dist_pool_new(&o);
    if (!p) {
        perror("dist_pool_new");
        exit(1);
    }
    return p;
}

static void bench_map(void)
{
    enum { N = 1000000 };
    unsigned char *buf = malloc((size_t)N * 10);
    dist_bytes_t *items = malloc(N * sizeof *items);
    size_t off = 0;
    for (int i = 0; i < N; i++) {
        size_t n = s_pack_int(buf + off, i);
        items[i] = (dist_bytes_t){ buf + off, n };
        off += n;
    }
    dist_pool_t *p = s_pool();
    dist_results_t *rs;
    dist_pool_map(p, DIST_FN(square), items, 1000, 0, &rs); /* warm up */
    dist_results_destroy(&rs);
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = bench_now();
        if (dist_pool_map(p, DIST_FN(square), items, N, 0, &rs)) {
            fprintf(stderr, "map failed\n");
            exit(1);
        }
        /* Reading every result is part of the job. */
        int64_t sum = 0, v;
        for (int i = 0; i < N; i++)
            if (dist_result_int(dist_results_at(rs, (size_t)i), &v) == 0)
                sum += v;
        double rate = N / (bench_now() - t0);
        dist_results_destroy(&rs);
        if (sum <= 0)
            exit(1);
        if (rate > best)
            best = rate;
    }
    bench_report("pool.map_tasks_per_s", best, "tasks_per_s");
    dist_pool_destroy(&p);
    free(items);
    free(buf);
}

static void bench_apply_async(void)
{
    enum { N = 100000 };
    dist_async_t **h = malloc(N * sizeof *h);
    dist_pool_t *p = s_pool();
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = bench_now();
        for (int i = 0; i < N; i++) {
            unsigned char a[16];
            size_t n = s_pack_int(a, i);
            h[i] = dist_pool_apply_async(p, DIST_FN(square), a, n, NULL);
        }
        for (int i = 0; i < N; i++) {
            if (dist_async_get(h[i], DIST_FOREVER, NULL)) {
                fprintf(stderr, "apply_async failed\n");
                exit(1);
            }
            dist_async_destroy(&h[i]);
        }
        double rate = N / (bench_now() - t0);
        if (rate > best)
            best = rate;
    }
    bench_report("pool.apply_async_tasks_per_s", best, "tasks_per_s");
    dist_pool_destroy(&p);
    free(h);
}

static void bench_apply_rtt(void)
{
    enum { N = 5000 };
    static double t[N];
    dist_pool_t *p = s_pool();
    unsigned char a[16];
    size_t n = s_pack_int(a, 12345);
    for (int i = 0; i < N; i++) {
        double t0 = bench_now();
        dist_result_t *r;
        if (dist_pool_apply(p, DIST_FN(square), a, n, &r))
            exit(1);
        dist_result_destroy(&r);
        t[i] = (bench_now() - t0) * 1e6;
    }
    bench_report("pool.apply_rtt_us", bench_median(t, N), "us");
    dist_pool_destroy(&p);
}

/* 1,000,000 apply_async queued behind a blocker: how much the parent grows. */
static void bench_pending(void)
{
    enum { N = 1000000 };
    dist_async_t **h = malloc(N * sizeof *h);
    dist_pool_opts_t o = { .processes = 1 };
    dist_pool_t *p = dist_pool_new(&o);
    dist_async_t *b = dist_pool_apply_async(p, DIST_FN(blocker), NULL, 0, NULL);
    long before = s_rss_kib();
    unsigned char a[16];
    size_t n = s_pack_int(a, 7);
    for (int i = 0; i < N; i++)
        h[i] = dist_pool_apply_async(p, DIST_FN(square), a, n, NULL);
    long after = s_rss_kib();
    bench_report("pool.pending_1m_rss_mib", (double)(after - before) / 1024.0, "MiB");
    dist_pool_terminate(p);
    dist_async_destroy(&b);
    for (int i = 0; i < N; i++)
        dist_async_destroy(&h[i]);
    dist_pool_destroy(&p);
    free(h);
}

int main(int argc, char **argv)
{
    if (bench_wanted(argc, argv, "pool.map_tasks_per_s"))
        bench_map();
    if (bench_wanted(argc, argv, "pool.apply_async_tasks_per_s"))
        bench_apply_async();
    if (bench_wanted(argc, argv, "pool.apply_rtt_us"))
        bench_apply_rtt();
    if (bench_wanted(argc, argv, "pool.pending_1m_rss_mib"))
        bench_pending();
    return 0;
}

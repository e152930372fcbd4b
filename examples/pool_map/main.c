/*  pool_map - Python's `Pool().map(f, range(n))` in C.
 *
 *  Squares 0..n-1 in a pool of processes, shows one failing item and one
 *  crashing item being reported instead of hanging the pool, and prints a
 *  checksum.
 *
 *      pool_map [N]      (default 100000)
 */
#include <dist.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int square(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t x;
    if (dist_arg_int(args, 0, &x))
        return dist_task_fail(ctx, "square: expected an integer");
    if (x == -1)
        return dist_task_fail(ctx, "square: -1 is not welcome here");
    if (x == -2)
        raise(SIGKILL); /* the process dies: only this item fails */
    return msgpack_pack_int64(out, x * x);
}
DIST_TASK("example.square", square)

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    if (n < 2) {
        fprintf(stderr, "usage: pool_map [N >= 2]\n");
        return 2;
    }
    /* Arguments: one msgpack array per item, all in one buffer. */
    dist_args_t *a = dist_args_new();
    unsigned char *buf = malloc((size_t)n * 12);
    dist_bytes_t *items = malloc((size_t)n * sizeof *items);
    size_t off = 0;
    for (long i = 0; i < n; i++) {
        dist_args_clear(a);
        dist_args_int(a, i == n - 2 ? -1 : i == n - 1 ? -2 : i);
        size_t len;
        const void *d = dist_args_data(a, &len);
        memcpy(buf + off, d, len);
        items[i] = (dist_bytes_t){ buf + off, len };
        off += len;
    }
    dist_pool_t *pool = dist_pool_new(NULL); /* one process per CPU */
    if (!pool) {
        perror("dist_pool_new");
        return 1;
    }
    dist_results_t *rs;
    int rc = dist_pool_map(pool, DIST_NAMED("example.square"), items, (size_t)n, 0, &rs);
    printf("map of %ld items over %d processes: %s\n", n, dist_pool_size(pool),
           rc == 0 ? "all succeeded" : "some failed");
    int64_t sum = 0;
    for (long i = 0; i < n; i++) {
        dist_result_t *r = dist_results_at(rs, (size_t)i);
        int64_t v;
        if (dist_result_int(r, &v) == 0)
            sum += v;
        else
            printf("item %ld: %s: %s\n", i, dist_strerror(dist_result_status(r)), dist_result_error(r));
    }
    printf("sum of squares of 0..%ld = %lld\n", n - 3, (long long)sum);
    dist_results_destroy(&rs);
    dist_pool_destroy(&pool); /* no process is left behind */
    free(items);
    free(buf);
    dist_args_destroy(&a);
    return 0;
}

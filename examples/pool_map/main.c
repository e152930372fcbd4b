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

static int square(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t x;
    if (dist_args_unpack(args, "I", &x))
        return dist_task_fail(ctx, "square: expected an integer");
    if (x == -1)
        return dist_task_fail(ctx, "square: -1 is not welcome here");
    if (x == -2)
        raise(SIGKILL); /* the process dies: only this item fails */
    return dist_pack(out, "I", x * x);
}
DIST_TASK("example.square", square)

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    if (n < 2) {
        fprintf(stderr, "usage: pool_map [N >= 2]\n");
        return 2;
    }
    dist_batch_t *items = dist_batch_new(); /* one argument array per item */
    for (long i = 0; i < n; i++)
        dist_batch_add(items, "I", (int64_t)(i == n - 2 ? -1 : i == n - 1 ? -2 : i));
    dist_pool_t *pool = dist_pool_new(NULL); /* one process per CPU */
    if (!pool) {
        perror("dist_pool_new");
        return 1;
    }
    dist_results_t *rs;
    int rc = dist_pool_map(pool, DIST_NAMED("example.square"), dist_batch_items(items),
                           dist_batch_count(items), 0, &rs);
    printf("map of %ld items over %d processes: %s\n", n, dist_pool_size(pool),
           rc == 0 ? "all succeeded" : "some failed");
    int64_t sum = 0, v;
    for (long i = 0; i < n; i++) {
        dist_result_t *r = dist_results_at(rs, (size_t)i);
        if (dist_result_unpack(r, "I", &v) == 0)
            sum += v;
        else
            printf("item %ld: %s: %s\n", i, dist_strerror(dist_result_status(r)), dist_result_error(r));
    }
    printf("sum of squares of 0..%ld = %lld\n", n - 3, (long long)sum);
    dist_results_destroy(&rs);
    dist_pool_destroy(&pool); /* no process is left behind */
    dist_batch_destroy(&items);
    return 0;
}

/*  bench_fork.c - the kernel's floor for process.spawn_join_per_s: a bare
 *  fork() + _exit() + waitpid() loop, nothing of libdist on the path.
 *
 *  Built twice (bench/CMakeLists.txt), so that the README's explanation of
 *  the spawn figure rests on printed numbers:
 *    bench_fork_local  linked to dist::local   process.fork_floor_per_s
 *    bench_fork_full   linked to dist::dist    process.fork_floor_full_lib_per_s
 *  The loop is the same; only the libraries mapped into the process differ
 *  (fork copies every memory area of the parent).
 */
#include <dist.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"

#ifndef BENCH_FORK_FIGURE
#error "BENCH_FORK_FIGURE names the figure"
#endif

int main(int argc, char **argv)
{
    if (!bench_wanted(argc, argv, BENCH_FORK_FIGURE))
        return 0;
    /* Use the library, so that the linker keeps it (and what it needs). */
    if (!dist_strerror(DIST_ECLOSED))
        return 1;
    enum { N = 2000 };
    double t0 = bench_now();
    for (int i = 0; i < N; i++) {
        pid_t p = fork();
        if (p < 0) {
            perror("bench_fork: fork");
            return 1;
        }
        if (p == 0)
            _exit(0);
        if (waitpid(p, NULL, 0) != p) {
            perror("bench_fork: waitpid");
            return 1;
        }
    }
    bench_report(BENCH_FORK_FIGURE, N / (bench_now() - t0), "per_s");
    return 0;
}

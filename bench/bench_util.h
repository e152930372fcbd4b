/*  bench_util.h - helpers for the benchmark programs.
 *
 *  Benchmarks print one figure per line, `name: value unit`, on stdout, so
 *  that scripts/bench can collect them and set them beside Python's.
 *  A benchmark may be given figure names as arguments to run only those.
 */
#ifndef DIST_BENCH_UTIL_H_INCLUDED
#define DIST_BENCH_UTIL_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void bench_report(const char *name, double value, const char *unit)
{
    printf("%s: %.6g %s\n", name, value, unit);
    fflush(stdout);
}

/* True when figure `name` was asked for (no arguments: all of them). */
static inline bool bench_wanted(int argc, char **argv, const char *name)
{
    if (argc < 2)
        return true;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return true;
    return false;
}

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static inline double bench_median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#endif

/*  queue_pipeline - a three-stage pipeline of processes joined by queues.
 *
 *      producer --q1--> 2 x square --q2--> consumer (the parent)
 *
 *  The producer closes q1 when done; the squarers drain it and exit; the
 *  parent closes q2 once both squarers have exited, drains it, and checks
 *  that every number arrived exactly once.
 */
#include <dist.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 100000

struct stages {
    dist_queue_t *q1, *q2;
};

static int producer(void *arg)
{
    struct stages *s = arg;
    for (uint64_t i = 0; i < N; i++)
        if (dist_queue_put(s->q1, &i, sizeof i, true, DIST_FOREVER))
            return 1;
    dist_queue_close(s->q1); /* the squarers drain it, then see DIST_ECLOSED */
    return 0;
}

static int squarer(void *arg)
{
    struct stages *s = arg;
    uint64_t x;
    size_t n;
    int r;
    while ((r = dist_queue_get_into(s->q1, &x, sizeof x, &n, true, DIST_FOREVER)) == 0) {
        uint64_t out[2] = { x, x * x };
        if (dist_queue_put(s->q2, out, sizeof out, true, DIST_FOREVER))
            return 1;
    }
    return r == DIST_ECLOSED ? 0 : 1;
}

int main(void)
{
    struct stages s = { dist_queue_new(1000, 0), dist_queue_new(1000, 0) };
    dist_process_t *p[3] = { dist_process_new(producer, &s, "producer"),
                             dist_process_new(squarer, &s, "squarer-1"),
                             dist_process_new(squarer, &s, "squarer-2") };
    for (int i = 0; i < 3; i++)
        if (dist_process_start(p[i])) {
            perror("start");
            return 1;
        }
    uint8_t *seen = calloc(N, 1);
    size_t got = 0, bad = 0;
    int exited = 0;
    while (got < N) {
        uint64_t m[2];
        size_t n;
        int r = dist_queue_get_into(s.q2, m, sizeof m, &n, true, 1000);
        if (r == DIST_ETIMEDOUT) {
            /* Nothing for a second: stop if every stage has finished. */
            exited = 0;
            for (int i = 0; i < 3; i++)
                exited += !dist_process_is_alive(p[i]);
            if (exited == 3 && dist_queue_empty(s.q2))
                break;
            continue;
        }
        if (r || m[0] >= N || m[1] != m[0] * m[0] || seen[m[0]]++)
            bad++;
        got++;
    }
    for (int i = 0; i < 3; i++) {
        dist_process_join(p[i], DIST_FOREVER);
        printf("%s exited with %d\n", dist_process_name(p[i]), dist_process_exitcode(p[i]));
        dist_process_destroy(&p[i]);
    }
    printf("received %zu of %d squares, %zu bad\n", got, N, bad);
    dist_queue_destroy(&s.q1);
    dist_queue_destroy(&s.q2);
    free(seen);
    return got == N && bad == 0 ? 0 : 1;
}

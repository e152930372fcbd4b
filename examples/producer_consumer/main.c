/*  queue_producer_consumer.c - the classic multiprocessing example in C.
 *
 *  One process writes "A", "B", "C" into a Queue; another reads and prints
 *  them forever; the parent joins the writer, waits until the reader has
 *  acknowledged the three items over a Pipe, then terminates the reader.
 *  The Python original:
 *
 *      q = Queue(); w = Process(target=writer, args=(q,)); r = Process(...)
 *      w.start(); r.start(); w.join(); ...; r.terminate()
 */
#include <dist.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct shared {
    dist_queue_t *q;
    dist_pipe_t *ack_rx, *ack_tx;
};

static int writer(void *arg)
{
    struct shared *s = arg;
    const char *items[] = { "A", "B", "C" };
    for (int i = 0; i < 3; i++) {
        int r = dist_queue_put(s->q, items[i], strlen(items[i]), true, DIST_FOREVER);
        if (r) {
            fprintf(stderr, "writer: put: %s\n", dist_strerror(r));
            return 1;
        }
        printf("writer: put %s\n", items[i]);
    }
    return 0;
}

static int reader(void *arg)
{
    struct shared *s = arg;
    dist_pipe_destroy(&s->ack_rx); /* this process only sends acks */
    for (;;) {
        char item[64];
        size_t n;
        int r = dist_queue_get_into(s->q, item, sizeof item - 1, &n, true, DIST_FOREVER);
        if (r) {
            fprintf(stderr, "reader: get: %s\n", dist_strerror(r));
            return 1;
        }
        item[n] = 0;
        printf("reader: got %s\n", item);
        fflush(stdout);
        dist_pipe_send(s->ack_tx, item, n);
    }
}

int main(void)
{
    struct shared s;
    s.q = dist_queue_new(0, 0);
    if (!s.q || dist_pipe_pair(&s.ack_rx, &s.ack_tx, false) != 0) {
        perror("setup");
        return 1;
    }
    dist_process_t *w = dist_process_new(writer, &s, "writer");
    dist_process_t *r = dist_process_new(reader, &s, "reader");
    if (!w || !r || dist_process_start(w) || dist_process_start(r)) {
        perror("start");
        return 1;
    }
    dist_pipe_destroy(&s.ack_tx); /* only the reader sends acks */

    dist_process_join(w, DIST_FOREVER);
    printf("parent: writer exited with %d\n", dist_process_exitcode(w));
    for (int i = 0; i < 3; i++) {
        void *m;
        size_t n;
        int rc = dist_pipe_recv(s.ack_rx, &m, &n, 10000);
        if (rc) {
            fprintf(stderr, "parent: waiting for the reader: %s\n", dist_strerror(rc));
            break;
        }
        free(m);
    }
    dist_process_terminate(r);
    dist_process_join(r, DIST_FOREVER);
    printf("parent: reader terminated, exit code %d\n", dist_process_exitcode(r));

    int ok = dist_process_exitcode(w) == 0 && dist_process_exitcode(r) == -15;
    dist_process_destroy(&w);
    dist_process_destroy(&r);
    dist_pipe_destroy(&s.ack_rx);
    dist_queue_destroy(&s.q);
    return ok ? 0 : 1;
}

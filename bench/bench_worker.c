/*  bench_worker.c - worker figures (see scripts/bench), against a fake
 *  master in this process (a ROUTER socket speaking the protocol through
 *  proto_internal.h) and a worker with two pool processes running in a
 *  thread:
 *
 *  worker.tiny_tasks_per_s  dist.echo [i], the master keeping the credit full
 *  worker.rtt_us            median TASKS -> RESULTS of one dist.echo at a time
 *
 *  They measure the worker alone: a real master adds its own hop.
 */
#include <czmq.h>
#include <dist.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "bench_util.h"
#include "proto_internal.h"

struct fake {
    zsock_t *router;
    uint8_t rid[256];
    size_t rid_len;
    dist_wire_buf_t *buf;
    long credit;
};

static int s_recv(struct fake *f, dist__inmsg_t *m, int timeout_ms)
{
    dist_wire_limits_t lim = dist__body_limits(0);
    for (;;) {
        int r = dist__proto_recv(f->router, true, &lim, m);
        if (r == 0) {
            memcpy(f->rid, m->rid, m->rid_len);
            f->rid_len = m->rid_len;
            if (m->cmd == DIST__CMD_CREDIT) {
                uint32_t c;
                if (dist__get_u32(m->root, "capacity", &c) == 0)
                    f->credit = c;
            }
            return 0;
        }
        if (r != DIST_EAGAIN)
            continue;
        zmq_pollitem_t it = { zsock_resolve(f->router), 0, ZMQ_POLLIN, 0 };
        if (zmq_poll(&it, 1, timeout_ms) <= 0)
            return -1;
    }
}

/* TASKS with n copies of dist.echo [i]. */
static void s_send_tasks(struct fake *f, long n, uint64_t *seq)
{
    msgpack_packer *pk = dist_wire_buf_packer(f->buf);
    msgpack_pack_map(pk, 1);
    dist__pk_str(pk, "tasks");
    msgpack_pack_array(pk, (size_t)n);
    for (long i = 0; i < n; i++) {
        unsigned char args[16] = { 0x91, 0xcf };
        uint64_t v = (*seq)++;
        for (int k = 0; k < 8; k++)
            args[2 + k] = (unsigned char)(v >> (56 - 8 * k));
        dist__task_t t = { .attempt = 1, .task = "dist.echo", .task_len = 9, .args = args,
                           .args_len = 10 };
        memcpy(t.id.b, &v, sizeof v);
        dist__pack_task(pk, &t, true);
    }
    dist__proto_send_buf(f->router, f->rid, f->rid_len, DIST__CMD_TASKS, f->buf);
    dist_wire_buf_reset(f->buf);
}

static long s_results(const dist__inmsg_t *m)
{
    const msgpack_object *items;
    size_t n;
    if (m->cmd != DIST__CMD_RESULTS || dist__get_array(m->root, "results", &items, &n))
        return 0;
    return (long)n;
}

static void *s_run(void *arg)
{
    dist_worker_run(arg);
    return NULL;
}

int main(int argc, char **argv)
{
    bool tiny = bench_wanted(argc, argv, "worker.tiny_tasks_per_s");
    bool rtt = bench_wanted(argc, argv, "worker.rtt_us");
    if (!tiny && !rtt)
        return 0;
    struct fake f = { .credit = -1 };
    f.router = zsock_new(ZMQ_ROUTER);
    dist__sock_setup(f.router, true, NULL);
    int port = zsock_bind(f.router, "tcp://127.0.0.1:*");
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    f.buf = dist_wire_buf_new(0);

    dist_worker_opts_t o = { .master = ep, .procs = 2 };
    dist_worker_t *w = dist_worker_new(&o);
    if (!w) {
        perror("dist_worker_new");
        return 1;
    }
    pthread_t th;
    pthread_create(&th, NULL, s_run, w);
    dist__inmsg_t m;
    if (s_recv(&f, &m, 5000) || m.cmd != DIST__CMD_HELLO) {
        fprintf(stderr, "no HELLO\n");
        return 1;
    }
    uint32_t cap;
    dist__get_u32(m.root, "capacity", &cap);
    f.credit = cap;
    dist__inmsg_clear(&m);
    msgpack_packer *pk = dist_wire_buf_packer(f.buf);
    msgpack_pack_map(pk, 1);
    dist__pk_kv_u64(pk, "heartbeat_ms", 1000);
    dist__proto_send_buf(f.router, f.rid, f.rid_len, DIST__CMD_WELCOME, f.buf);
    dist_wire_buf_reset(f.buf);
    uint64_t seq = 1;

    if (tiny) {
        enum { WARM = 50000, N = 300000 };
        long held = 0, done = 0;
        double t0 = 0;
        while (done < WARM + N) {
            if (done >= WARM && t0 == 0)
                t0 = bench_now();
            if (f.credit > held) {
                long k = f.credit - held;
                s_send_tasks(&f, k, &seq);
                held += k;
            }
            if (s_recv(&f, &m, 5000)) {
                fprintf(stderr, "worker.tiny_tasks_per_s: no answer\n");
                return 1;
            }
            long k = s_results(&m);
            held -= k;
            done += k;
            dist__inmsg_clear(&m);
        }
        bench_report("worker.tiny_tasks_per_s", N / (bench_now() - t0), "tasks_per_s");
        while (held > 0 && s_recv(&f, &m, 5000) == 0) {
            held -= s_results(&m);
            dist__inmsg_clear(&m);
        }
    }
    if (rtt) {
        enum { N = 3000 };
        static double t[N];
        for (int i = 0; i < N; i++) {
            double t0 = bench_now();
            s_send_tasks(&f, 1, &seq);
            long k = 0;
            while (k == 0) {
                if (s_recv(&f, &m, 5000)) {
                    fprintf(stderr, "worker.rtt_us: no answer\n");
                    return 1;
                }
                k = s_results(&m);
                dist__inmsg_clear(&m);
            }
            t[i] = (bench_now() - t0) * 1e6;
        }
        bench_report("worker.rtt_us", bench_median(t, N), "us");
    }
    dist_worker_stop(w);
    pthread_join(th, NULL);
    dist_worker_destroy(&w);
    dist_wire_buf_destroy(&f.buf);
    zsock_destroy(&f.router);
    return 0;
}

/*  embedded.c - a whole cluster inside one program: a master, a worker node
 *  and a client, with no binary of libdist started.
 *
 *      embedded [-n COUNT] [--procs N]
 *
 *  It computes the length of the Collatz sequence of 1..COUNT (default
 *  100,000) on a worker node and prints the longest one. The worker node is
 *  a child process made with dist_process (it forks its own pool of N
 *  processes, default 2); the master runs in a background thread of this
 *  process; the client maps the task over the inputs and waits.
 *
 *  The order matters: ZeroMQ contexts and threads do not survive fork(), so
 *  the worker node is forked first, while this process has neither. The
 *  master listens on an ipc:// endpoint in /tmp chosen before the fork, so
 *  both sides know it without talking first; the worker connects and
 *  reconnects by itself until the master is there.
 */
#include <dist.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The task: steps until n reaches 1. Registered by name so that the worker
 * node (this same binary, forked) can run it. */
static int collatz(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t n;
    if (dist_arg_int(args, 0, &n) || n < 1)
        return dist_task_fail(ctx, "embedded.collatz: expected one positive integer");
    int64_t steps = 0;
    for (uint64_t x = (uint64_t)n; x != 1; steps++)
        x = (x & 1) ? 3 * x + 1 : x / 2;
    return msgpack_pack_int64(out, steps);
}
DIST_TASK("embedded.collatz", collatz)

struct node {
    const char *endpoint;
    int procs;
};

static dist_worker_t *s_worker;

static void s_on_term(int sig)
{
    (void)sig;
    dist_worker_stop(s_worker); /* async-signal-safe: starts the drain */
}

/* Runs in the child: a worker node until SIGTERM. */
static int s_worker_node(void *arg)
{
    const struct node *n = arg;
    dist_worker_opts_t o = { .master = n->endpoint, .procs = n->procs, .name = "embedded-worker" };
    s_worker = dist_worker_new(&o);
    if (!s_worker) {
        fprintf(stderr, "embedded: worker: %s\n", dist_strerror(errno));
        return 1;
    }
    struct sigaction sa = { .sa_handler = s_on_term };
    sigaction(SIGTERM, &sa, NULL);
    int rc = dist_worker_run(s_worker);
    dist_worker_destroy(&s_worker);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    long count = 100000;
    int procs = 2;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            count = atol(argv[++i]);
        else if (strcmp(argv[i], "--procs") == 0 && i + 1 < argc)
            procs = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: embedded [-n COUNT] [--procs N]\n");
            return 2;
        }
    }
    if (count < 1 || count > 10000000 || procs < 1 || procs > 256) {
        fprintf(stderr, "embedded: -n must be 1..10000000 and --procs 1..256\n");
        return 2;
    }

    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "ipc:///tmp/libdist-embedded-%d.ipc", (int)getpid());
    struct node node = { endpoint, procs };

    /* 1. The worker node, forked before any ZeroMQ context exists here. */
    dist_process_t *wp = dist_process_new(s_worker_node, &node, "embedded-worker");
    if (!wp || dist_process_start(wp) != 0) {
        fprintf(stderr, "embedded: cannot start the worker node: %s\n", dist_strerror(errno));
        return 1;
    }

    /* 2. The master, in a background thread of this process. */
    int rc = 1;
    dist_client_t *client = NULL;
    dist_results_t *results = NULL;
    dist_bytes_t *items = NULL;
    dist_args_t **args = NULL;
    dist_master_opts_t mo = { .bind = endpoint };
    dist_master_t *master = dist_master_new(&mo);
    if (!master || dist_master_start(master) != 0) {
        fprintf(stderr, "embedded: cannot start the master: %s\n", dist_strerror(errno));
        goto out;
    }

    /* 3. The client: one task per input, results in input order. */
    dist_client_opts_t co = { .master = endpoint };
    client = dist_client_new(&co);
    items = calloc((size_t)count, sizeof *items);
    args = calloc((size_t)count, sizeof *args);
    if (!client || !items || !args) {
        fprintf(stderr, "embedded: cannot create the client: %s\n", dist_strerror(errno));
        goto out;
    }
    for (long i = 0; i < count; i++) {
        args[i] = dist_args_new();
        if (!args[i] || dist_args_int(args[i], i + 1) != 0)
            goto out;
        items[i].data = dist_args_data(args[i], &items[i].len);
    }
    /* The worker node may not have said hello yet, and the master refuses
     * a task nobody offers (DIST_ENOENT): one call, retried for up to ten
     * seconds, tells us it is there. */
    dist_result_t *first = NULL;
    int st;
    for (int tries = 0;; tries++) {
        st = dist_client_call(client, "embedded.collatz", items[0].data, items[0].len, 10000,
                              &first);
        dist_result_destroy(&first);
        if (st != DIST_ENOENT || tries == 100)
            break;
        usleep(100000);
    }
    dist_map_opts_t map_opts = { .wait_ms = 120000 };
    if (st == 0)
        st = dist_client_map_opts(client, "embedded.collatz", items, (size_t)count, &map_opts,
                                  &results);
    if (st != 0) {
        fprintf(stderr, "embedded: %s\n", dist_strerror(st));
        goto out;
    }
    long best = 0;
    int64_t best_steps = -1;
    for (long i = 0; i < count; i++) {
        int64_t steps;
        if (dist_result_int(dist_results_at(results, (size_t)i), &steps) != 0)
            goto out;
        if (steps > best_steps) {
            best_steps = steps;
            best = i + 1;
        }
    }
    printf("%ld tasks done; longest Collatz sequence below %ld: %ld, %lld steps\n", count,
           count + 1, best, (long long)best_steps);
    rc = 0;

out:
    dist_results_destroy(&results);
    if (args)
        for (long i = 0; i < count; i++)
            dist_args_destroy(&args[i]);
    free(args);
    free(items);
    dist_client_destroy(&client);
    /* SIGTERM drains the worker node; then the master stops. */
    dist_process_terminate(wp);
    if (dist_process_join(wp, 10000) != 0)
        dist_process_kill(wp);
    dist_process_destroy(&wp);
    dist_master_destroy(&master);
    unlink(endpoint + strlen("ipc://"));
    return rc;
}

/*  task_worker.c - the worker half of the classic "distributed processes"
 *  example: started on any host, it connects to the master, takes each n
 *  from the task queue and returns the string "n * n = n²".
 *
 *      task_worker [--master tcp://HOST:5555] [--procs N] [--name NAME]
 *                  [--key NAME.key --server-key master.pub] [--insecure]
 *
 *  Keys (from `dist keygen`) may also come from $DIST_KEY and
 *  $DIST_SERVER_KEY; a master that is not on loopback needs them (or
 *  --insecure, for a trusted network only).
 *
 *  It is dist-worker in a dozen lines: register a task, create a worker
 *  (which forks its pool first), run it until SIGTERM or Ctrl-C, which
 *  drain it: tasks not started go back to the master, running ones finish.
 */
#include <dist.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int square(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t n;
    if (dist_arg_int(args, 0, &n))
        return dist_task_fail(ctx, "example.square: expected one integer");
    char text[96];
    int len = snprintf(text, sizeof text, "%lld * %lld = %lld", (long long)n, (long long)n,
                       (long long)(n * n));
    msgpack_pack_str(out, (size_t)len);
    return msgpack_pack_str_body(out, text, (size_t)len);
}
DIST_TASK("example.square", square)

static dist_worker_t *s_worker;

static void s_on_signal(int sig)
{
    (void)sig;
    dist_worker_stop(s_worker); /* async-signal-safe: starts the drain */
}

static void s_log(dist_log_level_t level, const char *component, const char *msg, void *ud)
{
    (void)ud;
    fprintf(stderr, "task_worker: %s %s: %s\n", dist_log_level_name(level), component, msg);
}

int main(int argc, char **argv)
{
    dist_worker_opts_t o = { .procs = 2, .log = s_log, .log_level = DIST_LOG_INFO };
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--master") == 0 && i + 1 < argc)
            o.master = argv[++i];
        else if (strcmp(argv[i], "--procs") == 0 && i + 1 < argc)
            o.procs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
            o.name = argv[++i];
        else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            o.key = argv[++i];
        else if (strcmp(argv[i], "--server-key") == 0 && i + 1 < argc)
            o.server_key = argv[++i];
        else if (strcmp(argv[i], "--insecure") == 0)
            o.insecure = true;
        else {
            fprintf(stderr, "usage: task_worker [--master ENDPOINT] [--procs N] [--name NAME] "
                            "[--key FILE --server-key FILE] [--insecure]\n");
            return 2;
        }
    }
    s_worker = dist_worker_new(&o);
    if (!s_worker) {
        fprintf(stderr, "task_worker: %s\n", dist_strerror(errno));
        return 1;
    }
    struct sigaction sa = { .sa_handler = s_on_signal };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int rc = dist_worker_run(s_worker);
    dist_worker_destroy(&s_worker);
    return rc ? 1 : 0;
}

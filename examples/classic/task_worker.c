/*  task_worker.c - the worker half of the classic "distributed processes"
 *  example, as Python's task_worker.py: started on any host, it connects to
 *  the master, takes each n from the task queue and puts the string
 *  "n * n = n²" into the result queue.
 *
 *      task_worker [--master tcp://HOST:5555] [-n COUNT] [--name NAME]
 *                  [--key NAME.key --server-key master.pub] [--insecure]
 *
 *  The master is task_master (serving) or any dist-master; default
 *  $DIST_MASTER, else tcp://127.0.0.1:5555. Keys (from `dist keygen`) may
 *  also come from $DIST_KEY and $DIST_SERVER_KEY; a master that is not on
 *  loopback needs them (or --insecure, for a trusted network only).
 *
 *  It runs until it has done COUNT tasks (default: no limit) or until
 *  SIGTERM or Ctrl-C, which let the task in hand finish.
 */
#include <dist.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static void s_log(dist_log_level_t level, const char *component, const char *msg, void *ud)
{
    (void)ud;
    fprintf(stderr, "task_worker: %s %s: %s\n", dist_log_level_name(level), component, msg);
}

int main(int argc, char **argv)
{
    dist_manager_opts_t o = { .log = s_log };
    long count = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--master") == 0 && i + 1 < argc)
            o.master = argv[++i];
        else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            count = atol(argv[++i]);
        else if (strcmp(argv[i], "--name") == 0 && i + 1 < argc)
            o.name = argv[++i];
        else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            o.key = argv[++i];
        else if (strcmp(argv[i], "--server-key") == 0 && i + 1 < argc)
            o.server_key = argv[++i];
        else if (strcmp(argv[i], "--insecure") == 0)
            o.insecure = true;
        else {
            fprintf(stderr, "usage: task_worker [--master ENDPOINT] [-n COUNT] [--name NAME] "
                            "[--key FILE --server-key FILE] [--insecure]\n");
            return 2;
        }
    }
    dist_manager_t *manager = dist_manager_new(&o);
    if (!manager) {
        fprintf(stderr, "task_worker: %s\n", dist_strerror(errno));
        return 1;
    }
    dist_mqueue_t *task = dist_manager_queue(manager, "task_queue");
    dist_mqueue_t *result = dist_manager_queue(manager, "result_queue");
    struct sigaction sa = { .sa_handler = s_on_signal };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    int rc = 0;
    for (long done = 0; !s_stop && done != count && (!rc || rc == DIST_ETIMEDOUT);) {
        int n;
        rc = dist_mqueue_get_fmt(task, 1000, "i", &n); /* DIST_ETIMEDOUT is queue.Empty */
        if (rc == DIST_EPROTO) {
            fprintf(stderr, "task_worker: dropped a task that is not an integer\n");
            rc = 0;
        } else if (rc == 0) {
            printf("run task %d * %d...\n", n, n);
            char text[96];
            snprintf(text, sizeof text, "%d * %d = %lld", n, n, (long long)n * n);
            rc = dist_mqueue_put(result, "s", text);
            done++;
        }
    }
    if (rc && rc != DIST_ETIMEDOUT)
        fprintf(stderr, "task_worker: %s\n", dist_strerror(rc));
    else
        rc = 0;
    dist_manager_destroy(&manager);
    printf("worker exit.\n");
    return rc ? 1 : 0;
}

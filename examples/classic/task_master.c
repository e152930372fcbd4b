/*  task_master.c - the master program of the classic "distributed
 *  processes" example, as Python's task_master.py: it serves a task queue
 *  and a result queue, puts 10 random integers into the first and prints
 *  the 10 results that task_worker programs (on any host) put into the
 *  second.
 *
 *      task_master [--bind tcp://HOST:5555 | --master tcp://HOST:5555] [-n COUNT]
 *                  [--key NAME.key [--server-key master.pub] [--allow-clients DIR]]
 *                  [--insecure]
 *
 *  It serves on --bind, default tcp://127.0.0.1:5555 (BaseManager.start());
 *  with --master (or $DIST_MASTER, when --bind is not given) it uses the
 *  queues of a running dist-master instead (BaseManager.connect()). Serving anywhere but loopback needs keys:
 *  --key master.key --allow-clients DIR, where DIR holds the workers'
 *  public keys and master.pub itself. Keys may also come from $DIST_KEY
 *  and $DIST_SERVER_KEY when connecting.
 *
 *  Unlike Python's, the queues hold MessagePack values, not pickles: a
 *  peer can send wrong data, never code.
 */
#include <dist.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* Errors only: why a connection was refused (protected mode, a key file). */
static void s_log(dist_log_level_t level, const char *component, const char *msg, void *ud)
{
    (void)ud;
    fprintf(stderr, "task_master: %s %s: %s\n", dist_log_level_name(level), component, msg);
}

int main(int argc, char **argv)
{
    const char *env = getenv("DIST_MASTER");
    dist_manager_opts_t o = { .master = env, .bind = env ? NULL : "tcp://127.0.0.1:5555",
                              .log = s_log };
    int count = 10;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bind") == 0 && i + 1 < argc)
            o.bind = argv[++i], o.master = NULL;
        else if (strcmp(argv[i], "--master") == 0 && i + 1 < argc)
            o.master = argv[++i], o.bind = NULL;
        else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            count = atoi(argv[++i]);
        else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            o.key = argv[++i];
        else if (strcmp(argv[i], "--server-key") == 0 && i + 1 < argc)
            o.server_key = argv[++i];
        else if (strcmp(argv[i], "--allow-clients") == 0 && i + 1 < argc)
            o.allow_clients = argv[++i];
        else if (strcmp(argv[i], "--insecure") == 0)
            o.insecure = true;
        else {
            fprintf(stderr, "usage: task_master [--bind ENDPOINT | --master ENDPOINT] [-n COUNT] "
                            "[--key FILE [--server-key FILE] [--allow-clients DIR]] [--insecure]\n");
            return 2;
        }
    }
    if (count < 1 || count > 100000) {
        fprintf(stderr, "task_master: -n must be between 1 and 100000\n");
        return 2;
    }
    dist_manager_t *manager = dist_manager_new(&o);
    if (!manager) {
        fprintf(stderr, "task_master: %s\n", dist_strerror(errno));
        return 3;
    }
    dist_mqueue_t *task = dist_manager_queue(manager, "task_queue");
    dist_mqueue_t *result = dist_manager_queue(manager, "result_queue");
    int rc = 0;
    for (int i = 0; i < count && !rc; i++) {
        unsigned r;
        if (getrandom(&r, sizeof r, 0) != sizeof r)
            r = (unsigned)rand();
        int n = (int)(r % 10000);
        printf("Put task %d...\n", n);
        rc = dist_mqueue_put(task, "i", n);
    }
    printf("Try get results...\n");
    for (int i = 0; i < count && !rc; i++) {
        const char *s;
        size_t len;
        if (!(rc = dist_mqueue_get_fmt(result, 60000, "s", &s, &len)))
            printf("Result: %.*s\n", (int)len, s);
    }
    if (rc)
        fprintf(stderr, "task_master: %s\n", dist_strerror(rc));
    dist_manager_destroy(&manager);
    printf("master exit.\n");
    return rc ? 1 : 0;
}

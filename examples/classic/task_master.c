/*  task_master.c - the master program of the classic "distributed
 *  processes" example: it puts 10 random integers into the task queue and
 *  prints each result from the result queue, as workers on other hosts
 *  compute them.
 *
 *      task_master [--master tcp://HOST:5555] [-n COUNT]
 *                  [--key NAME.key --server-key master.pub] [--insecure]
 *
 *  Keys (from `dist keygen`) may also come from $DIST_KEY and
 *  $DIST_SERVER_KEY; a master that is not on loopback needs them.
 *
 *  In Python the example shares two queues through a BaseManager and trusts
 *  every pickle that comes back; here the task queue and the result queue
 *  are the master's, the payloads are MessagePack data, and a worker that
 *  dies mid-task costs a retry, not a hang.
 */
#include <dist.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

/* Errors only: why a connection was refused (protected mode, a key file). */
static void s_log(dist_log_level_t level, const char *component, const char *msg, void *ud)
{
    (void)ud;
    fprintf(stderr, "task_master: %s %s: %s\n", dist_log_level_name(level), component, msg);
}

int main(int argc, char **argv)
{
    dist_client_opts_t o = { .log = s_log };
    int count = 10;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--master") == 0 && i + 1 < argc)
            o.master = argv[++i];
        else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
            count = atoi(argv[++i]);
        else if (strcmp(argv[i], "--key") == 0 && i + 1 < argc)
            o.key = argv[++i];
        else if (strcmp(argv[i], "--server-key") == 0 && i + 1 < argc)
            o.server_key = argv[++i];
        else if (strcmp(argv[i], "--insecure") == 0)
            o.insecure = true;
        else {
            fprintf(stderr, "usage: task_master [--master ENDPOINT] [-n COUNT] "
                            "[--key FILE --server-key FILE] [--insecure]\n");
            return 2;
        }
    }
    if (count < 1 || count > 100000) {
        fprintf(stderr, "task_master: -n must be between 1 and 100000\n");
        return 2;
    }
    dist_client_t *c = dist_client_new(&o);
    if (!c) {
        fprintf(stderr, "task_master: %s\n", dist_strerror(errno));
        return 3;
    }
    dist_future_t **f = calloc((size_t)count, sizeof *f);
    dist_args_t *args = dist_args_new();
    int failed = 0, submitted = 0;
    for (int i = 0; i < count; i++) {
        unsigned r;
        if (getrandom(&r, sizeof r, 0) != sizeof r)
            r = (unsigned)rand();
        int n = (int)(r % 10000);
        dist_args_clear(args);
        dist_args_int(args, n);
        size_t len;
        const void *data = dist_args_data(args, &len);
        printf("Put task %d...\n", n);
        /* Right after the cluster starts, the workers may not have said
         * hello yet: the master refuses a task nobody offers (ENOENT).
         * Give them ten seconds. */
        for (int tries = 0; !(f[i] = dist_client_submit(c, "example.square", data, len, 0)); tries++) {
            if (errno != -DIST_ENOENT || tries == 100) {
                fprintf(stderr, "task_master: submit: %s\n", dist_strerror(errno));
                failed = 1;
                goto out;
            }
            if (tries == 0)
                fprintf(stderr, "task_master: no worker offers example.square yet; waiting\n");
            usleep(100000);
        }
        submitted++;
    }
    printf("Try get results...\n");
    for (int i = 0; i < submitted; i++) {
        dist_result_t *r;
        int st = dist_future_get(f[i], 60000, &r);
        const char *s;
        size_t n;
        if (st == 0 && dist_result_str(r, &s, &n) == 0) {
            printf("Result: %.*s\n", (int)n, s);
        } else {
            fprintf(stderr, "Result: error: %s\n", r ? dist_result_error(r) : dist_strerror(st));
            failed++;
        }
    }
out:
    for (int i = 0; i < submitted; i++)
        dist_future_destroy(&f[i]);
    free(f);
    dist_args_destroy(&args);
    dist_client_destroy(&c);
    printf("master exit.\n");
    return failed ? 1 : 0;
}

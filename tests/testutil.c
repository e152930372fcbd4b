/*  testutil.c - see testutil.h. */
#include "testutil.h"

#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Reads /proc/PID/stat: state letter and ppid. */
static int s_stat(pid_t pid, char *state, pid_t *ppid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the comm field may contain spaces */
    if (!p)
        return -1;
    int pp = 0;
    if (sscanf(p + 1, " %c %d", state, &pp) != 2)
        return -1;
    *ppid = pp;
    return 0;
}

static int s_list_children(pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    int n = 0;
    pid_t me = getpid();
    struct dirent *e;
    while ((e = readdir(d))) {
        pid_t pid = (pid_t)atoi(e->d_name);
        char st;
        pid_t pp;
        if (pid > 0 && s_stat(pid, &st, &pp) == 0 && pp == me) {
            if (n < max)
                out[n] = pid;
            n++;
        }
    }
    closedir(d);
    return n;
}

int dt_children(void)
{
    pid_t pids[1];
    return s_list_children(pids, 0);
}

int dt_kill_children(void)
{
    pid_t pids[4096];
    int n = s_list_children(pids, 4096);
    if (n > 4096)
        n = 4096;
    for (int i = 0; i < n; i++)
        kill(pids[i], SIGKILL);
    for (int i = 0; i < n; i++)
        waitpid(pids[i], NULL, 0);
    return n;
}

int dt_setup(void **state)
{
    (void)state;
    return 0;
}

int dt_teardown(void **state)
{
    (void)state;
    int left = dt_kill_children();
    if (left) {
        fprintf(stderr, "teardown: %d child process(es) were left behind\n", left);
        return -1; /* cmocka reports a failed teardown */
    }
    return 0;
}

void dt_child_init(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

int64_t dt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void dt_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    while (nanosleep(&ts, &ts) < 0)
        ;
}

char dt_proc_state(pid_t pid)
{
    char st;
    pid_t pp;
    return s_stat(pid, &st, &pp) == 0 ? st : 0;
}

pid_t dt_fork(int (*fn)(void *arg), void *arg)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dt_child_init();
        _exit(fn(arg));
    }
    return pid;
}

void dt_join_ok(pid_t pid)
{
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

void dt_assert_took(int64_t t0, int timeout_ms)
{
    int64_t took = dt_now_ms() - t0;
    assert_true(took >= timeout_ms * 95 / 100);
    assert_true(took < timeout_ms + 2000);
}

const char *dt_unique_name(const char *prefix, const char *tag)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "/%s_%d_%s", prefix, (int)getpid(), tag);
    return buf;
}

void dt_rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[512];
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) < 0)
            dt_rm_tree(path);
    }
    closedir(d);
    rmdir(dir);
}

int dt_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

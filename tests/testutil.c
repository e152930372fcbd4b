/*  testutil.c - see testutil.h. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
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
    dt_stop_all();
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

static uint64_t s_rng = 1;

void dt_seed(uint64_t dflt)
{
    const char *e = getenv("DIST_TEST_SEED");
    s_rng = e ? strtoull(e, NULL, 0) : dflt;
    if (!s_rng)
        s_rng = 1; /* xorshift stays at 0 forever */
}

uint32_t dt_rand(void)
{
    s_rng ^= s_rng >> 12;
    s_rng ^= s_rng << 25;
    s_rng ^= s_rng >> 27;
    return (uint32_t)((s_rng * 2685821657736338717ULL) >> 32);
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

/* ---- programs ------------------------------------------------------------------------ */

#define S_MAX_PROGS 256

/* The programs started and not reaped yet. A mutex, because a test may
 * reap from a helper thread what the main thread started. */
static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t s_progs[S_MAX_PROGS];
static int s_nprogs;
static pid_t s_owner; /* the test process: forked children never run the cleanup */

static void s_atexit(void)
{
    if (getpid() == s_owner)
        dt_stop_all();
}

static void s_record(pid_t pid)
{
    pthread_mutex_lock(&s_lock);
    if (!s_owner) {
        s_owner = getpid();
        atexit(s_atexit);
    }
    assert_true(s_nprogs < S_MAX_PROGS);
    s_progs[s_nprogs++] = pid;
    pthread_mutex_unlock(&s_lock);
}

static bool s_recorded(pid_t pid, bool forget)
{
    bool found = false;
    pthread_mutex_lock(&s_lock);
    for (int i = 0; i < s_nprogs; i++)
        if (s_progs[i] == pid) {
            found = true;
            if (forget)
                s_progs[i] = s_progs[--s_nprogs];
            break;
        }
    pthread_mutex_unlock(&s_lock);
    return found;
}

static int s_status(int st)
{
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int dt_wait(pid_t pid, int timeout_ms)
{
    int64_t end = dt_now_ms() + timeout_ms;
    int st, delay = 1;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            s_recorded(pid, true);
            return s_status(st);
        }
        if (r < 0 && errno != EINTR) {
            s_recorded(pid, true);
            fail_msg("waitpid(%d): %s", (int)pid, strerror(errno));
        }
        if (dt_now_ms() >= end)
            return DT_TIMEOUT;
        dt_sleep_ms(delay);
        delay = delay < 20 ? delay * 2 : 20;
    }
}

int dt_signal(pid_t pid, int sig)
{
    if (!s_recorded(pid, false))
        return -1;
    return kill(pid, sig);
}

int dt_stop(pid_t pid, int grace_ms)
{
    if (dt_signal(pid, SIGTERM) < 0)
        fail_msg("dt_stop: %d is not a running program of this test", (int)pid);
    int rc = dt_wait(pid, grace_ms);
    if (rc == DT_TIMEOUT) {
        kill(pid, SIGKILL);
        rc = dt_wait(pid, 60000); /* SIGKILL cannot be refused */
    }
    return rc;
}

int dt_stop_all(void)
{
    pthread_mutex_lock(&s_lock);
    int n = s_nprogs;
    for (int i = 0; i < n; i++) {
        kill(s_progs[i], SIGCONT); /* a SIGSTOPped program too */
        kill(s_progs[i], SIGKILL);
    }
    for (int i = 0; i < n; i++)
        waitpid(s_progs[i], NULL, 0);
    s_nprogs = 0;
    pthread_mutex_unlock(&s_lock);
    return n;
}

/* The child's environment: the test's, minus the names env removes or
 * overrides, plus env's assignments. Built before fork (no malloc after). */
static char **s_env(const char *const *env)
{
    extern char **environ;
    size_t ne = 0, nx = 0;
    while (environ[ne])
        ne++;
    while (env && env[nx])
        nx++;
    char **out = calloc(ne + nx + 1, sizeof *out);
    assert_non_null(out);
    size_t k = 0;
    for (size_t i = 0; i < ne; i++) {
        bool keep = true;
        for (size_t j = 0; j < nx && keep; j++) {
            size_t len = strcspn(env[j], "=");
            keep = !(strncmp(environ[i], env[j], len) == 0 && environ[i][len] == '=');
        }
        if (keep)
            out[k++] = environ[i];
    }
    for (size_t j = 0; j < nx; j++)
        if (strchr(env[j], '='))
            out[k++] = (char *)env[j];
    out[k] = NULL;
    return out;
}

/* Opens the test's side of one stream: the fd the child dup2s onto
 * target (-1: inherit), and for a pipe the test's end into *s->fd. */
static int s_stream(const dt_stream_t *s, int target)
{
    int p[2];
    switch (s->how) {
    case DT_IO_INHERIT:
        return -1;
    case DT_IO_NULL:
        return open("/dev/null", (target ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
    case DT_IO_FILE:
        assert_non_null(s->path);
        return target ? open(s->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)
                      : open(s->path, O_RDONLY | O_CLOEXEC);
    case DT_IO_APPEND:
        assert_non_null(s->path);
        return open(s->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    case DT_IO_PIPE:
        assert_non_null(s->fd);
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        *s->fd = target ? p[0] : p[1];
        return target ? p[1] : p[0];
    case DT_IO_STDOUT: /* the child copies its stdout */
        assert_int_equal(target, 2);
        return -1;
    }
    return -1;
}

/* In the child, between fork and exec: only async-signal-safe calls. */
static void s_dup(int fd, int target)
{
    if (fd < 0)
        return;
    if (fd == target)
        fcntl(fd, F_SETFD, 0); /* dup2 onto itself would keep O_CLOEXEC */
    else
        dup2(fd, target);
}

/* Whether a TCP socket listens on 127.0.0.1:port (or on any address),
 * from /proc/net/tcp: no connection is made, so the program does not see
 * (and count, or log) a probe that never says anything. */
static bool s_port_open(int port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    if (!f)
        return false;
    char line[512];
    bool found = false;
    while (!found && fgets(line, sizeof line, f)) {
        unsigned long addr;
        unsigned lport, st;
        if (sscanf(line, " %*d: %lx:%x %*x:%*x %x", &addr, &lport, &st) == 3)
            found = (int)lport == port && st == 0x0A /* LISTEN */ &&
                    (addr == 0 || addr == htonl(INADDR_LOOPBACK));
    }
    fclose(f);
    return found;
}

bool dt_wait_port(int port, int ms)
{
    int64_t end = dt_now_ms() + ms;
    while (!s_port_open(port)) {
        if (dt_now_ms() >= end)
            return false;
        dt_sleep_ms(10);
    }
    return true;
}

static bool s_file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t cap = 1 << 16, len = 0, r;
    char *buf = malloc(cap);
    assert_non_null(buf);
    while ((r = fread(buf + len, 1, cap - 1 - len, f)) > 0) {
        len += r;
        if (len + 1 == cap) {
            buf = realloc(buf, cap *= 2);
            assert_non_null(buf);
        }
    }
    fclose(f);
    buf[len] = 0;
    bool has = strstr(buf, needle) != NULL;
    free(buf);
    return has;
}

bool dt_wait_text(const char *path, const char *needle, int ms)
{
    int64_t end = dt_now_ms() + ms;
    while (!s_file_has(path, needle)) {
        if (dt_now_ms() >= end)
            return false;
        dt_sleep_ms(20);
    }
    return true;
}

bool dt_read_until(int fd, const char *want, char *buf, size_t cap, int ms)
{
    size_t off = 0;
    int64_t end = dt_now_ms() + ms;
    buf[0] = 0;
    while (dt_now_ms() < end && off + 1 < cap) {
        struct pollfd pf = { fd, POLLIN, 0 };
        if (poll(&pf, 1, 100) <= 0)
            continue;
        ssize_t r = read(fd, buf + off, cap - 1 - off);
        if (r <= 0)
            break;
        off += (size_t)r;
        buf[off] = 0;
        if (strstr(buf, want))
            return true;
    }
    return false;
}

/* Polls the readiness conditions of o until they hold, pid ends or the
 * bound passes; fails the test (after killing pid) unless they hold. */
static void s_wait_ready(pid_t pid, const char *name, const dt_spawn_opts_t *o)
{
    int64_t end = dt_now_ms() + (o->ready_ms > 0 ? o->ready_ms : 20000);
    const char *log = o->out.how == DT_IO_FILE || o->out.how == DT_IO_APPEND ? o->out.path : NULL;
    if (o->ready_text && !log)
        fail_msg("dt_spawn: ready_text needs stdout in a file");
    for (;;) {
        bool port = o->ready_port <= 0 || s_port_open(o->ready_port);
        bool text = !o->ready_text || s_file_has(log, o->ready_text);
        if (port && text)
            return;
        int rc = dt_wait(pid, 0);
        if (rc != DT_TIMEOUT)
            fail_msg("%s exited (status %d) before it was ready", name, rc);
        if (dt_now_ms() >= end) {
            kill(pid, SIGKILL);
            dt_wait(pid, 60000);
            fail_msg("%s was not ready within the bound (port %d, text '%s')", name, o->ready_port,
                     o->ready_text ? o->ready_text : "");
        }
        dt_sleep_ms(10);
    }
}

pid_t dt_spawn(const char *const *argv, const dt_spawn_opts_t *opts)
{
    static const dt_spawn_opts_t none;
    const dt_spawn_opts_t *o = opts ? opts : &none;
    assert_non_null(argv[0]);
    int in = s_stream(&o->in, 0), out = s_stream(&o->out, 1), err = s_stream(&o->err, 2);
    assert_true(o->in.how == DT_IO_INHERIT || in >= 0);
    assert_true(o->out.how == DT_IO_INHERIT || out >= 0);
    assert_true(o->err.how == DT_IO_INHERIT || o->err.how == DT_IO_STDOUT || err >= 0);
    char **envp = s_env(o->env);
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) /* the test died before the prctl */
            _exit(127);
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGPIPE, SIG_DFL); /* tests ignore it; programs get the default */
        s_dup(in, 0);
        s_dup(out, 1);
        if (o->err.how == DT_IO_STDOUT)
            dup2(1, 2);
        else
            s_dup(err, 2);
        execvpe(argv[0], (char *const *)argv, envp); /* a name without / is looked up in PATH */
        _exit(127);
    }
    free(envp);
    s_record(pid);
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    if (err >= 0)
        close(err);
    if (o->ready_port > 0 || o->ready_text)
        s_wait_ready(pid, argv[0], o);
    return pid;
}

/* Appends what fd has to *buf; false at end of file. */
static bool s_pump(int fd, char **buf, size_t *len, size_t *cap)
{
    if (*len + 4096 + 1 > *cap) {
        *cap = (*cap ? *cap * 2 : 8192) + 4096;
        *buf = realloc(*buf, *cap);
        assert_non_null(*buf);
    }
    ssize_t r = read(fd, *buf + *len, *cap - *len - 1);
    if (r > 0)
        *len += (size_t)r;
    (*buf)[*len] = 0;
    return r > 0 || (r < 0 && errno == EINTR);
}

int dt_run(const char *const *argv, const dt_spawn_opts_t *opts, const char *input, char **out,
           char **err, int timeout_ms)
{
    dt_spawn_opts_t o = opts ? *opts : (dt_spawn_opts_t){ 0 };
    int fds[3] = { -1, -1, -1 };
    o.in = input ? (dt_stream_t){ DT_IO_PIPE, NULL, &fds[0] }
                 : (dt_stream_t){ DT_IO_NULL, NULL, NULL };
    if (out)
        o.out = (dt_stream_t){ DT_IO_PIPE, NULL, &fds[1] };
    if (err)
        o.err = (dt_stream_t){ DT_IO_PIPE, NULL, &fds[2] };
    o.ready_port = 0;
    o.ready_text = NULL;
    pid_t pid = dt_spawn(argv, &o);
    size_t inlen = input ? strlen(input) : 0, inoff = 0;
    if (fds[0] >= 0 && inlen == 0) {
        close(fds[0]);
        fds[0] = -1;
    }
    if (fds[0] >= 0)
        fcntl(fds[0], F_SETFL, O_NONBLOCK);
    char *bufs[3] = { NULL, NULL, NULL };
    size_t lens[3] = { 0 }, caps[3] = { 0 };
    for (int i = 1; i < 3; i++)
        if (fds[i] >= 0)
            assert_non_null(bufs[i] = calloc(1, caps[i] = 1)); /* "" even with no output */
    int64_t end = dt_now_ms() + timeout_ms;
    bool late = false;
    while (fds[0] >= 0 || fds[1] >= 0 || fds[2] >= 0) {
        int64_t left = end - dt_now_ms();
        if (left <= 0) {
            late = true;
            break;
        }
        struct pollfd pf[3];
        for (int i = 0; i < 3; i++)
            pf[i] = (struct pollfd){ fds[i], i ? POLLIN : POLLOUT, 0 };
        if (poll(pf, 3, (int)(left < 100 ? left : 100)) <= 0)
            continue;
        if (fds[0] >= 0 && pf[0].revents) {
            ssize_t w = write(fds[0], input + inoff, inlen - inoff);
            if (w > 0)
                inoff += (size_t)w;
            if (inoff == inlen || (w < 0 && errno != EAGAIN && errno != EINTR)) {
                close(fds[0]);
                fds[0] = -1;
            }
        }
        for (int i = 1; i < 3; i++)
            if (fds[i] >= 0 && pf[i].revents && !s_pump(fds[i], &bufs[i], &lens[i], &caps[i])) {
                close(fds[i]);
                fds[i] = -1;
            }
    }
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    int rc = late ? DT_TIMEOUT : dt_wait(pid, (int)(end - dt_now_ms() > 0 ? end - dt_now_ms() : 0));
    if (rc == DT_TIMEOUT) {
        kill(pid, SIGKILL);
        dt_wait(pid, 60000);
    }
    if (out)
        *out = bufs[1];
    if (err)
        *err = bufs[2];
    return rc;
}

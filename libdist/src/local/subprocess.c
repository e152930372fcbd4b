/*  subprocess.c - start programs and talk to them (see dist/subprocess.h).
 *
 *  Starting: posix_spawn, because glibc implements it with
 *  clone(CLONE_VM|CLONE_VFORK): nothing of the parent is copied, the parent
 *  waits only until the exec, it is safe in multi-threaded programs, and
 *  glibc reports a failed exec (or chdir, or open) as the return value
 *  instead of a child that exits with 127. The file actions dup the
 *  requested descriptors onto 0-2 and then close every descriptor from 3 up
 *  (close_range in the child), so that nothing the parent opened without
 *  O_CLOEXEC leaks into the program.
 *
 *  A dup2 onto 0-2 can overwrite a source that is itself one of 0-2 and is
 *  still needed for a later stream (a parent started with stdin closed gets
 *  pipe ends numbered 0...). Sources below 3 are therefore first copied to
 *  a number >= 3, unless the source already is the target.
 *
 *  communicate: one poll loop over the three pipes, stdin non-blocking, so
 *  that the child never waits on a full pipe we are not reading. Its state
 *  (input offset, output so far) lives in the object so that a call that
 *  timed out can be continued, as in Python.
 */
#include "dist/subprocess.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "child_internal.h"
#include "dist/error.h"
#include "util_internal.h"

#if !defined(__GLIBC__) || !__GLIBC_PREREQ(2, 34)
#error "subprocess.c needs glibc 2.34 or later (posix_spawn_file_actions_addclosefrom_np)"
#endif

extern char **environ;

/* Collected output: grown geometrically, always room for a final NUL. */
struct s_buf {
    char *p;
    size_t len, cap;
};

struct dist_subprocess {
    dist__child_t child;
    int fd[3]; /* the parent's ends: stdin (write), stdout, stderr (read); -1 if none */
    bool piped[3];
    bool comm_started; /* communicate() has begun: in_off counts written input */
    size_t in_off;
    struct s_buf out[3]; /* [1] stdout and [2] stderr collected so far */
};

/* Smallest free space a read is offered (and the first allocation). */
#define READ_CHUNK ((size_t)64 << 10)
/* Largest single write to stdin: keeps each system call bounded. */
#define WRITE_CHUNK ((size_t)1 << 20)

static void s_close(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* ---- starting ----------------------------------------------------------- */

/* Descriptors opened while setting up a spawn, closed once it is done. */
struct s_setup {
    posix_spawn_file_actions_t fa;
    int parent[3]; /* our pipe ends, handed to the object on success */
    int temp[6];   /* child pipe ends and copies made above 2 */
    int ntemp;
};

/* A copy of fd numbered >= 3 (close-on-exec), or fd itself when it
 * already is; -1 with errno on failure. Copies are recorded in temp. */
static int s_above_stdio(struct s_setup *s, int fd)
{
    if (fd >= 3)
        return fd;
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (copy >= 0)
        s->temp[s->ntemp++] = copy;
    return copy;
}

/* Sets up child descriptor `target` (0, 1, 2) as io says. 0 or -errno. */
static int s_stream(struct s_setup *s, int target, const dist_stdio_t *io)
{
    switch (io->mode) {
    case DIST_STDIO_INHERIT:
        return 0;
    case DIST_STDIO_DEVNULL:
        return -posix_spawn_file_actions_addopen(&s->fa, target, "/dev/null",
                                                 target == 0 ? O_RDONLY : O_WRONLY, 0);
    case DIST_STDIO_STDOUT:
        return -posix_spawn_file_actions_adddup2(&s->fa, 1, 2);
    case DIST_STDIO_FD: {
        /* dup2(fd, fd) is how glibc clears close-on-exec on a descriptor
         * that already has the target's number. */
        int src = io->fd == target ? target : s_above_stdio(s, io->fd);
        if (src < 0)
            return -errno;
        return -posix_spawn_file_actions_adddup2(&s->fa, src, target);
    }
    case DIST_STDIO_PIPE: {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
            return -errno;
        int child_end = target == 0 ? p[0] : p[1];
        s->parent[target] = target == 0 ? p[1] : p[0];
        s->temp[s->ntemp++] = child_end;
        int src = s_above_stdio(s, child_end);
        if (src < 0)
            return -errno;
        return -posix_spawn_file_actions_adddup2(&s->fa, src, target);
    }
    }
    return DIST_EINVAL;
}

static bool s_opts_valid(const dist_subprocess_opts_t *o)
{
    const dist_stdio_t *io[3] = { &o->in, &o->out, &o->err };
    for (int i = 0; i < 3; i++) {
        dist_stdio_mode_t m = io[i]->mode;
        if (m < DIST_STDIO_INHERIT || m > DIST_STDIO_STDOUT || (m == DIST_STDIO_STDOUT && i != 2) ||
            (m == DIST_STDIO_FD && io[i]->fd < 0))
            return false;
    }
    return true;
}

/* Spawns with s's file actions; returns 0 or a positive errno. */
static int s_spawn(struct s_setup *s, pid_t *pid, const char *const argv[],
                   const dist_subprocess_opts_t *o)
{
    posix_spawnattr_t attr;
    int r = posix_spawnattr_init(&attr);
    if (r)
        return r;
    /* Python's restore_signals: a parent that ignores SIGPIPE (most network
     * programs) must not hand that on, or `cat` would see EPIPE instead of
     * dying quietly. An empty mask: a signal blocked by the calling thread
     * (say, for a signalfd) must still reach the child. */
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);
    sigaddset(&dfl, SIGXFSZ);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (o->new_session)
        flags |= POSIX_SPAWN_SETSID;
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setflags(&attr, flags);

    /* The shell form, exactly like Python's: /bin/sh -c argv[0] argv[1]... */
    size_t argc = 0;
    while (argv[argc])
        argc++;
    const char **sh_argv = NULL;
    if (o->shell) {
        sh_argv = malloc((argc + 3) * sizeof *sh_argv);
        if (!sh_argv) {
            posix_spawnattr_destroy(&attr);
            return ENOMEM;
        }
        sh_argv[0] = "/bin/sh";
        sh_argv[1] = "-c";
        memcpy(sh_argv + 2, argv, (argc + 1) * sizeof *sh_argv);
        argv = sh_argv;
    }
    char *const *av = (char *const *)argv;
    char *const *env = o->env ? (char *const *)o->env : environ;
    if (strchr(argv[0], '/'))
        r = posix_spawn(pid, argv[0], &s->fa, &attr, av, env);
    else
        r = posix_spawnp(pid, argv[0], &s->fa, &attr, av, env);
    free(sh_argv);
    posix_spawnattr_destroy(&attr);
    return r;
}

dist_subprocess_t *dist_subprocess_new(const char *const argv[], const dist_subprocess_opts_t *opts)
{
    static const dist_subprocess_opts_t s_defaults;
    if (!opts)
        opts = &s_defaults;
    if (!argv || !argv[0] || !argv[0][0] || !s_opts_valid(opts)) {
        errno = EINVAL;
        return NULL;
    }
    dist_subprocess_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    struct s_setup s = { .parent = { -1, -1, -1 } };
    int r = -posix_spawn_file_actions_init(&s.fa);
    if (r) {
        free(self);
        errno = -r;
        return NULL;
    }
    const dist_stdio_t *io[3] = { &opts->in, &opts->out, &opts->err };
    for (int i = 0; i < 3 && !r; i++)
        r = s_stream(&s, i, io[i]);
    if (!r && opts->cwd)
        r = -posix_spawn_file_actions_addchdir_np(&s.fa, opts->cwd);
    if (!r)
        r = -posix_spawn_file_actions_addclosefrom_np(&s.fa, 3);
    pid_t pid = 0;
    if (!r)
        r = -s_spawn(&s, &pid, argv, opts);
    posix_spawn_file_actions_destroy(&s.fa);
    for (int i = 0; i < s.ntemp; i++)
        close(s.temp[i]);
    if (r) {
        for (int i = 0; i < 3; i++)
            s_close(&s.parent[i]);
        free(self);
        errno = -r;
        return NULL;
    }
    dist__child_track(&self->child, pid);
    for (int i = 0; i < 3; i++) {
        self->fd[i] = s.parent[i];
        self->piped[i] = s.parent[i] >= 0;
    }
    return self;
}

void dist_subprocess_destroy(dist_subprocess_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_subprocess_t *self = *self_p;
    /* Close first: a child reading its stdin to the end, or blocked
     * writing into a full pipe, can then finish. */
    for (int i = 0; i < 3; i++) {
        s_close(&self->fd[i]);
        free(self->out[i].p);
    }
    dist__child_wait(&self->child, INT64_MAX);
    dist__child_release(&self->child);
    free(self);
    *self_p = NULL;
}

/* ---- waiting and signals ------------------------------------------------ */

int dist_subprocess_wait(dist_subprocess_t *self, int timeout_ms)
{
    if (!self)
        return DIST_EINVAL;
    return dist__child_wait(&self->child, dist__deadline(timeout_ms));
}

int dist_subprocess_poll(dist_subprocess_t *self)
{
    int r = dist_subprocess_wait(self, 0);
    return r == 0 ? 1 : r == DIST_ETIMEDOUT ? 0 : r;
}

int dist_subprocess_returncode(dist_subprocess_t *self)
{
    if (!self || dist_subprocess_poll(self) != 1)
        return DIST_EXITCODE_NONE;
    return dist__status_code(self->child.status);
}

int dist_subprocess_send_signal(dist_subprocess_t *self, int signum)
{
    /* Poll first: a reaped child's pid may already belong to somebody else. */
    int r = dist_subprocess_poll(self);
    if (r != 0)
        return r > 0 ? 0 : r;
    if (kill(self->child.pid, signum) < 0)
        return errno == ESRCH ? 0 : -errno;
    return 0;
}

int dist_subprocess_terminate(dist_subprocess_t *self) { return dist_subprocess_send_signal(self, SIGTERM); }
int dist_subprocess_kill(dist_subprocess_t *self) { return dist_subprocess_send_signal(self, SIGKILL); }
pid_t dist_subprocess_pid(const dist_subprocess_t *self) { return self->child.pid; }
int dist_subprocess_stdin_fd(const dist_subprocess_t *self) { return self->fd[0]; }
int dist_subprocess_stdout_fd(const dist_subprocess_t *self) { return self->fd[1]; }
int dist_subprocess_stderr_fd(const dist_subprocess_t *self) { return self->fd[2]; }

int dist_subprocess_close_stdin(dist_subprocess_t *self)
{
    if (!self)
        return DIST_EINVAL;
    s_close(&self->fd[0]);
    return 0;
}

/* ---- communicate -------------------------------------------------------- */

/* Reads what is available from fd into b: >0 bytes read, 0 end of file,
 * or -errno (DIST_ENOMEM when the buffer cannot grow). */
static ssize_t s_read_into(int fd, struct s_buf *b)
{
    if (b->cap - b->len < READ_CHUNK + 1) {
        size_t cap = b->cap ? b->cap * 2 : READ_CHUNK * 2;
        while (cap - b->len < READ_CHUNK + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return DIST_ENOMEM;
        b->p = p;
        b->cap = cap;
    }
    ssize_t n = read(fd, b->p + b->len, b->cap - b->len - 1);
    if (n < 0)
        return -errno;
    b->len += (size_t)n;
    return n;
}

/* Hands b over as a NUL-terminated string (or drops it when `out` is
 * NULL) and empties it. 0 or DIST_ENOMEM. */
static int s_take(struct s_buf *b, bool piped, char **out, size_t *out_len)
{
    if (!out || !piped) {
        free(b->p);
        *b = (struct s_buf){ 0 };
        return 0;
    }
    if (!b->p && !(b->p = malloc(1)))
        return DIST_ENOMEM;
    b->p[b->len] = '\0';
    *out = b->p;
    if (out_len)
        *out_len = b->len;
    *b = (struct s_buf){ 0 };
    return 0;
}

/* A write to a pipe whose reader has gone raises SIGPIPE, which would kill
 * the caller. SIGPIPE from write(2) is directed at the writing thread, so
 * block it in this thread while communicate() runs, and take away the one
 * our write raised - unless one was already pending, which is not ours. */
struct s_sigpipe {
    sigset_t old;
    bool was_pending;
};

static void s_sigpipe_block(struct s_sigpipe *s)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigpending(&pending);
    s->was_pending = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &set, &s->old);
}

static void s_sigpipe_restore(struct s_sigpipe *s, bool raised)
{
    if (raised && !s->was_pending) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        struct timespec zero = { 0, 0 };
        sigtimedwait(&set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &s->old, NULL);
}

/* Writes the next piece of input. 0, or -errno other than the child
 * having closed its end (which ends the input, as in Python). */
static int s_feed(dist_subprocess_t *self, const char *input, size_t in_len, bool *epipe)
{
    size_t n = in_len - self->in_off;
    ssize_t w = write(self->fd[0], input + self->in_off, n < WRITE_CHUNK ? n : WRITE_CHUNK);
    if (w >= 0) {
        self->in_off += (size_t)w;
        if (self->in_off == in_len)
            s_close(&self->fd[0]);
        return 0;
    }
    if (errno == EAGAIN || errno == EINTR)
        return 0;
    if (errno == EPIPE) {
        *epipe = true;
        s_close(&self->fd[0]);
        return 0;
    }
    return -errno;
}

/* The poll loop: until all pipes are closed (0), or the deadline
 * (DIST_ETIMEDOUT), or an error. */
static int s_pump(dist_subprocess_t *self, const char *input, size_t in_len, int64_t deadline,
                  bool *epipe)
{
    for (;;) {
        struct pollfd p[3];
        int which[3], n = 0;
        for (int i = 0; i < 3; i++) {
            if (self->fd[i] >= 0) {
                p[n] = (struct pollfd){ .fd = self->fd[i], .events = i == 0 ? POLLOUT : POLLIN };
                which[n++] = i;
            }
        }
        if (n == 0)
            return 0;
        int pr = poll(p, (nfds_t)n, dist__left_ms(deadline));
        if (pr < 0 && errno != EINTR)
            return -errno;
        if (pr <= 0) {
            if (dist__left_ns(deadline) == 0)
                return DIST_ETIMEDOUT;
            continue;
        }
        for (int k = 0; k < n; k++) {
            if (!p[k].revents)
                continue;
            int i = which[k], r = 0;
            if (i == 0) {
                r = s_feed(self, input, in_len, epipe);
            } else {
                ssize_t got = s_read_into(self->fd[i], &self->out[i]);
                if (got == 0)
                    s_close(&self->fd[i]);
                else if (got < 0 && got != -EAGAIN && got != -EINTR)
                    r = (int)got;
            }
            if (r)
                return r;
        }
    }
}

int dist_subprocess_communicate(dist_subprocess_t *self, const void *input, size_t in_len,
                                char **out, size_t *out_len, char **err, size_t *err_len,
                                int timeout_ms)
{
    char **outs[3] = { NULL, out, err };
    size_t *lens[3] = { NULL, out_len, err_len };
    for (int i = 1; i < 3; i++) {
        if (outs[i])
            *outs[i] = NULL;
        if (lens[i])
            *lens[i] = 0;
    }
    if (!self || (in_len && !input))
        return DIST_EINVAL;
    if (!input)
        in_len = 0;
    if (in_len) {
        if (self->comm_started ? in_len < self->in_off : self->fd[0] < 0)
            return DIST_EINVAL;
    }
    self->comm_started = true;
    if (self->in_off >= in_len)
        s_close(&self->fd[0]); /* nothing (more) to write: end of input */

    int64_t deadline = dist__deadline(timeout_ms);
    bool writing = self->fd[0] >= 0, epipe = false;
    struct s_sigpipe sp;
    if (writing) {
        s_sigpipe_block(&sp);
        fcntl(self->fd[0], F_SETFL, fcntl(self->fd[0], F_GETFL) | O_NONBLOCK);
    }
    int r = s_pump(self, input, in_len, deadline, &epipe);
    if (writing) {
        if (self->fd[0] >= 0) /* timed out: give the caller back a blocking fd */
            fcntl(self->fd[0], F_SETFL, fcntl(self->fd[0], F_GETFL) & ~O_NONBLOCK);
        s_sigpipe_restore(&sp, epipe);
    }
    if (r == 0)
        r = dist__child_wait(&self->child, deadline);
    if (r)
        return r;
    for (int i = 1; i < 3; i++) {
        if ((r = s_take(&self->out[i], self->piped[i], outs[i], lens[i]))) {
            if (i == 2 && out) { /* undo the first hand-over: all or nothing */
                free(*out);
                *out = NULL;
                if (out_len)
                    *out_len = 0;
            }
            return r;
        }
        self->piped[i] = false; /* handed over: later calls give NULL */
    }
    return 0;
}

/* ---- helpers ------------------------------------------------------------ */

/* After a timeout: kill the child and reap it. Only wait - draining its
 * pipes could block on a grandchild that still holds them, which is why
 * Python's run() does the same. */
static void s_kill_and_reap(dist_subprocess_t *p)
{
    dist_subprocess_kill(p);
    dist_subprocess_wait(p, DIST_FOREVER);
}

int dist_call(const char *const argv[], const dist_subprocess_opts_t *opts, int timeout_ms,
              int *returncode)
{
    if (returncode)
        *returncode = DIST_EXITCODE_NONE;
    if (opts && (opts->in.mode == DIST_STDIO_PIPE || opts->out.mode == DIST_STDIO_PIPE ||
                 opts->err.mode == DIST_STDIO_PIPE))
        return DIST_EINVAL;
    dist_subprocess_t *p = dist_subprocess_new(argv, opts);
    if (!p)
        return -errno;
    int r = dist_subprocess_wait(p, timeout_ms);
    if (r == DIST_ETIMEDOUT)
        s_kill_and_reap(p);
    if (returncode)
        *returncode = dist_subprocess_returncode(p);
    dist_subprocess_destroy(&p);
    return r;
}

int dist_check_call(const char *const argv[], const dist_subprocess_opts_t *opts, int timeout_ms,
                    int *returncode)
{
    int rc;
    int r = dist_call(argv, opts, timeout_ms, &rc);
    if (returncode)
        *returncode = rc;
    if (r)
        return r;
    return rc == 0 ? 0 : DIST_EEXITSTATUS;
}

int dist_check_output(const char *const argv[], const dist_subprocess_opts_t *opts,
                      const void *input, size_t in_len, int timeout_ms, char **out,
                      size_t *out_len, int *returncode)
{
    if (returncode)
        *returncode = DIST_EXITCODE_NONE;
    if (!out)
        return DIST_EINVAL;
    *out = NULL;
    if (out_len)
        *out_len = 0;
    dist_subprocess_opts_t o = opts ? *opts : (dist_subprocess_opts_t){ 0 };
    if (o.out.mode != DIST_STDIO_INHERIT || o.err.mode == DIST_STDIO_PIPE ||
        (input && o.in.mode != DIST_STDIO_INHERIT))
        return DIST_EINVAL;
    o.out.mode = DIST_STDIO_PIPE;
    if (input)
        o.in.mode = DIST_STDIO_PIPE;
    dist_subprocess_t *p = dist_subprocess_new(argv, &o);
    if (!p)
        return -errno;
    int r = dist_subprocess_communicate(p, input, in_len, out, out_len, NULL, NULL, timeout_ms);
    if (r == DIST_ETIMEDOUT)
        s_kill_and_reap(p);
    int rc = dist_subprocess_returncode(p);
    if (returncode)
        *returncode = rc;
    dist_subprocess_destroy(&p);
    if (r == 0 && rc != 0)
        r = DIST_EEXITSTATUS;
    return r;
}

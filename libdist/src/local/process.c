/*  process.c - a forked child running a C function (see dist/process.h).
 *
 *  The child leaves with _exit() after flushing stdio: the parent's atexit
 *  handlers and buffered output belong to the parent and must not run twice.
 */
#include "dist/process.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "child_internal.h"
#include "dist/error.h"
#include "util_internal.h"

/* How long destroy lets a daemon child handle SIGTERM before SIGKILL. */
#define DAEMON_GRACE_MS 1000

struct dist_process {
    dist_process_fn target;
    void *arg;
    char *name;
    bool daemon;
    bool started;
    dist__child_t child;
};

static atomic_uint s_counter;

dist_process_t *dist_process_new(dist_process_fn target, void *arg, const char *name)
{
    if (!target) {
        errno = EINVAL;
        return NULL;
    }
    dist_process_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    char auto_name[32];
    if (!name) {
        snprintf(auto_name, sizeof auto_name, "Process-%u", atomic_fetch_add(&s_counter, 1) + 1);
        name = auto_name;
    }
    self->name = strdup(name);
    if (!self->name) {
        free(self);
        return NULL;
    }
    self->target = target;
    self->arg = arg;
    self->child.pidfd = -1;
    return self;
}

void dist_process_destroy(dist_process_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_process_t *self = *self_p;
    if (self->started && !self->child.reaped) {
        if (self->daemon) {
            kill(self->child.pid, SIGTERM);
            if (dist__child_wait(&self->child, dist__deadline(DAEMON_GRACE_MS)) == DIST_ETIMEDOUT)
                kill(self->child.pid, SIGKILL);
        }
        /* A non-daemon child is never killed silently: wait for it. */
        dist__child_wait(&self->child, dist__deadline(DIST_FOREVER));
    }
    dist__child_release(&self->child);
    free(self->name);
    free(self);
    *self_p = NULL;
}

int dist_process_set_daemon(dist_process_t *self, bool daemon)
{
    if (self->started)
        return DIST_ESTATE;
    self->daemon = daemon;
    return 0;
}

bool dist_process_daemon(const dist_process_t *self) { return self->daemon; }
const char *dist_process_name(const dist_process_t *self) { return self->name; }
pid_t dist_process_pid(const dist_process_t *self) { return self->started ? self->child.pid : 0; }

int dist_process_start(dist_process_t *self)
{
    if (self->started)
        return DIST_ESTATE;
    /* Flush before fork so the child does not print the parent's buffered
     * output a second time when it flushes at exit. */
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        prctl(PR_SET_NAME, self->name, 0, 0, 0);
        int rc = self->target(self->arg);
        fflush(NULL);
        _exit(rc & 0xff);
    }
    self->started = true;
    dist__child_track(&self->child, pid);
    return 0;
}

int dist_process_join(dist_process_t *self, int timeout_ms)
{
    if (!self->started)
        return DIST_ESTATE;
    return dist__child_wait(&self->child, dist__deadline(timeout_ms));
}

bool dist_process_is_alive(dist_process_t *self)
{
    if (!self->started)
        return false;
    return dist__child_wait(&self->child, dist__deadline(0)) == DIST_ETIMEDOUT;
}

int dist_process_signal(dist_process_t *self, int signum)
{
    if (!self->started)
        return DIST_ESTATE;
    /* Poll first so that we never signal a pid that was reaped and reused. */
    if (!dist_process_is_alive(self))
        return 0;
    if (kill(self->child.pid, signum) < 0)
        return errno == ESRCH ? 0 : -errno;
    return 0;
}

int dist_process_terminate(dist_process_t *self) { return dist_process_signal(self, SIGTERM); }
int dist_process_kill(dist_process_t *self) { return dist_process_signal(self, SIGKILL); }

int dist_process_exitcode(dist_process_t *self)
{
    /* dist__child_wait returns 0 at once for a child already reaped, and
     * 0 only once it is reaped. */
    if (!self->started || dist__child_wait(&self->child, dist__deadline(0)) != 0)
        return DIST_EXITCODE_NONE;
    return dist__status_code(self->child.status);
}

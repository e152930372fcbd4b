/*  child.c - reap one child with a deadline (see child_internal.h). */
#include "child_internal.h"

#include <errno.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dist/error.h"
#include "util_internal.h"

int dist__pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
    /* pidfd_open sets O_CLOEXEC on the descriptor itself. */
    long fd = syscall(SYS_pidfd_open, pid, 0);
    return fd >= 0 ? (int)fd : -1;
#else
    (void)pid;
    return -1;
#endif
}

void dist__child_track(dist__child_t *c, pid_t pid)
{
    c->pid = pid;
    c->status = 0;
    c->reaped = false;
    /* The pidfd is opened on the first timed wait: an unreaped child stays
     * a zombie, so it can always be opened later, and many children are
     * only ever joined without a timeout. */
    c->pidfd = -1;
}

void dist__child_release(dist__child_t *c)
{
    if (c->pidfd >= 0)
        close(c->pidfd);
    c->pidfd = -1;
}

int dist__status_code(int status)
{
    if (WIFSIGNALED(status))
        return -WTERMSIG(status);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 0;
}

/* One reap attempt (blocking or not): 1 reaped, 0 still running, <0 error. */
static int s_try_reap(dist__child_t *c, int flags)
{
    int status;
    pid_t r;
    do
        r = waitpid(c->pid, &status, flags);
    while (r < 0 && errno == EINTR);
    if (r == c->pid) {
        c->status = status;
        c->reaped = true;
        dist__child_release(c);
        return 1;
    }
    if (r == 0)
        return 0;
    return -errno;
}

int dist__child_wait(dist__child_t *c, int64_t deadline)
{
    if (c->reaped)
        return 0;
    if (c->pid <= 0)
        return DIST_ECHILD;
    if (deadline == INT64_MAX) {
        int r = s_try_reap(c, 0);
        return r == 1 ? 0 : r;
    }
    for (;;) {
        int r = s_try_reap(c, WNOHANG);
        if (r == 1)
            return 0;
        if (r < 0)
            return r;
        int64_t left = dist__left_ns(deadline);
        if (left == 0)
            return DIST_ETIMEDOUT;
        if (c->pidfd < 0)
            c->pidfd = dist__pidfd_open(c->pid);
        if (c->pidfd >= 0) {
            struct pollfd p = { .fd = c->pidfd, .events = POLLIN };
            int pr = poll(&p, 1, dist__left_ms(deadline));
            if (pr < 0 && errno != EINTR)
                return -errno;
        } else {
            /* No pidfd: sleep a little, at most until the deadline. */
            int64_t nap = left < 2000000 ? left : 2000000;
            struct timespec ts = dist__ns_to_timespec(nap);
            nanosleep(&ts, NULL);
        }
    }
}

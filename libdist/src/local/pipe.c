/*  pipe.c - message framing over a Unix stream socket (see dist/pipe.h).
 *
 *  Each message is a 4-byte little-endian length followed by the bytes.
 *  The sender writes header and body with one sendmsg() (MSG_NOSIGNAL, so a
 *  closed peer is EPIPE instead of SIGPIPE). The receiver reads through a
 *  64 KiB buffer so that a stream of small messages costs one read(2) per
 *  bufferful, not two per message; a large body goes straight into the
 *  caller's allocation.
 */
#include "dist/pipe.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "dist/error.h"
#include "util_internal.h"

#define RBUF_SIZE 65536
#define HDR_SIZE 4

struct dist_pipe {
    int fd;
    bool can_read;
    bool can_write;
    bool eof;          /* the peer closed and we have seen it */
    size_t rpos, rlen; /* unread bytes are rbuf[rpos .. rpos+rlen) */
    unsigned char rbuf[RBUF_SIZE];
};

static dist_pipe_t *s_end_new(int fd, bool can_read, bool can_write)
{
    dist_pipe_t *self = malloc(sizeof *self);
    if (!self)
        return NULL;
    self->fd = fd;
    self->can_read = can_read;
    self->can_write = can_write;
    self->eof = false;
    self->rpos = self->rlen = 0;
    return self;
}

int dist_pipe_pair(dist_pipe_t **end0, dist_pipe_t **end1, bool duplex)
{
    if (!end0 || !end1)
        return DIST_EINVAL;
    *end0 = *end1 = NULL;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    if (!duplex) {
        /* Enforce the direction in the kernel too, so that a one-way pair
         * behaves like pipe(2) even for code that uses the raw fd. */
        shutdown(sv[0], SHUT_WR);
        shutdown(sv[1], SHUT_RD);
    }
    dist_pipe_t *a = s_end_new(sv[0], true, duplex);
    dist_pipe_t *b = s_end_new(sv[1], duplex, true);
    if (!a || !b) {
        free(a);
        free(b);
        close(sv[0]);
        close(sv[1]);
        return DIST_ENOMEM;
    }
    *end0 = a;
    *end1 = b;
    return 0;
}

void dist_pipe_destroy(dist_pipe_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    close((*self_p)->fd);
    free(*self_p);
    *self_p = NULL;
}

int dist_pipe_fd(const dist_pipe_t *self) { return self->fd; }

static int s_closed_errno(int e)
{
    return (e == EPIPE || e == ECONNRESET) ? DIST_ECLOSED : -e;
}

int dist_pipe_send(dist_pipe_t *self, const void *buf, size_t len)
{
    if (!self->can_write)
        return DIST_EBADF;
    if (len > DIST_PIPE_MAX_MSG)
        return DIST_EMSGSIZE;
    if (len && !buf)
        return DIST_EINVAL;
    unsigned char hdr[HDR_SIZE] = { (unsigned char)len, (unsigned char)(len >> 8),
                                    (unsigned char)(len >> 16), (unsigned char)(len >> 24) };
    struct iovec iov[2] = { { hdr, HDR_SIZE }, { (void *)buf, len } };
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };
    size_t left = HDR_SIZE + len;
    while (left) {
        ssize_t n = sendmsg(self->fd, &mh, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return s_closed_errno(errno);
        }
        left -= (size_t)n;
        /* Advance the iovecs past what was written. */
        while (n > 0 && mh.msg_iovlen) {
            size_t take = (size_t)n < mh.msg_iov->iov_len ? (size_t)n : mh.msg_iov->iov_len;
            mh.msg_iov->iov_base = (char *)mh.msg_iov->iov_base + take;
            mh.msg_iov->iov_len -= take;
            n -= (ssize_t)take;
            if (mh.msg_iov->iov_len == 0) {
                mh.msg_iov++;
                mh.msg_iovlen--;
            }
        }
    }
    return 0;
}

/* Reads more bytes into rbuf (blocking). 1 got some, DIST_ECLOSED on EOF,
 * -errno on error. */
static int s_fill(dist_pipe_t *self)
{
    if (self->eof)
        return DIST_ECLOSED;
    if (self->rlen && self->rpos)
        memmove(self->rbuf, self->rbuf + self->rpos, self->rlen);
    self->rpos = 0;
    for (;;) {
        ssize_t n = read(self->fd, self->rbuf + self->rlen, RBUF_SIZE - self->rlen);
        if (n > 0) {
            self->rlen += (size_t)n;
            return 1;
        }
        if (n == 0) {
            self->eof = true;
            return DIST_ECLOSED;
        }
        if (errno != EINTR)
            return s_closed_errno(errno);
    }
}

/* Does rbuf hold a complete header? */
static bool s_have_header(const dist_pipe_t *self) { return self->rlen >= HDR_SIZE; }

/* Before sleeping in poll(2), try non-blocking reads for a few dozen
 * microseconds. Waking a sleeping process on another CPU costs about as
 * much again on these machines (see ../shared/notes/pitfalls.md), so a reply
 * that is already on its way arrives sooner this way; a longer wait costs
 * only the spin. 1 data, 0 nothing yet, <0 EOF or error. */
#define BUSY_POLL_NS 50000

static int s_busy_poll(dist_pipe_t *self, int64_t deadline)
{
    int64_t until = dist__now_ns() + BUSY_POLL_NS;
    if (until > deadline)
        until = deadline;
    do {
        ssize_t n = recv(self->fd, self->rbuf, RBUF_SIZE, MSG_DONTWAIT);
        if (n > 0) {
            self->rpos = 0;
            self->rlen = (size_t)n;
            return 1;
        }
        if (n == 0) {
            self->eof = true;
            return DIST_ECLOSED;
        }
        if (errno != EAGAIN && errno != EINTR)
            return s_closed_errno(errno);
    } while (dist__now_ns() < until);
    return 0;
}

int dist_pipe_poll(dist_pipe_t *self, int timeout_ms)
{
    if (!self->can_read)
        return DIST_EBADF;
    if (self->rlen)
        return 1;
    if (self->eof)
        return DIST_ECLOSED;
    int64_t deadline = dist__deadline(timeout_ms);
    if (timeout_ms != 0) {
        int r = s_busy_poll(self, deadline);
        if (r != 0)
            return r;
    }
    for (;;) {
        struct pollfd p = { .fd = self->fd, .events = POLLIN };
        int r = poll(&p, 1, dist__left_ms(deadline));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            return 0;
        /* Readable: data, or EOF. Pull bytes in to tell which. */
        return s_fill(self);
    }
}

int dist_pipe_recv(dist_pipe_t *self, void **buf, size_t *len, int timeout_ms)
{
    if (!buf || !len)
        return DIST_EINVAL;
    *buf = NULL;
    *len = 0;
    if (!self->can_read)
        return DIST_EBADF;
    if (!self->rlen) {
        int r = dist_pipe_poll(self, timeout_ms);
        if (r == 0)
            return DIST_ETIMEDOUT;
        if (r < 0)
            return r;
    }
    while (!s_have_header(self)) {
        int r = s_fill(self);
        if (r < 0)
            return r; /* EOF inside a header: the sender died mid-message */
    }
    const unsigned char *h = self->rbuf + self->rpos;
    size_t n = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 | (size_t)h[3] << 24;
    if (n > DIST_PIPE_MAX_MSG)
        return DIST_EPROTO;
    unsigned char *out = malloc(n ? n : 1);
    if (!out)
        return DIST_ENOMEM;
    self->rpos += HDR_SIZE;
    self->rlen -= HDR_SIZE;
    size_t have = self->rlen < n ? self->rlen : n;
    memcpy(out, self->rbuf + self->rpos, have);
    self->rpos += have;
    self->rlen -= have;
    /* The rest of a large body goes straight into the destination. */
    while (have < n) {
        ssize_t r = read(self->fd, out + have, n - have);
        if (r > 0) {
            have += (size_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        free(out);
        if (r == 0) {
            /* The sender died mid-message: that message is dropped. */
            self->eof = true;
            return DIST_ECLOSED;
        }
        return s_closed_errno(errno);
    }
    *buf = out;
    *len = n;
    return 0;
}

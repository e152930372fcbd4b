/*  error.c - names for libdist error codes.
 *
 *  Every code the library itself returns has a fixed English text here, so
 *  messages read the same on every libc. Other -errno values (passed through
 *  from a system call) fall back to glibc's strerror, whose text for known
 *  errnos is static.
 */
#include "dist/error.h"

#include <string.h>

const char *dist_version(void) { return DIST_VERSION_STRING; }

int dist_size_parse(const char *text, uint64_t *out)
{
    if (!text || *text < '0' || *text > '9')
        return DIST_EINVAL;
    uint64_t v = 0;
    const char *p = text;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return DIST_EINVAL;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    int shift = 0;
    switch (*p) {
    case 0: break;
    case 'k': case 'K': shift = 10; break;
    case 'm': case 'M': shift = 20; break;
    case 'g': case 'G': shift = 30; break;
    default: return DIST_EINVAL;
    }
    if (shift && (p[1] || v > (UINT64_MAX >> shift)))
        return DIST_EINVAL;
    if (out)
        *out = v << shift;
    return 0;
}

const char *dist_strerror(int code)
{
    if (code > 0)
        code = -code;
    switch (code) {
    case 0: return "success";
    case DIST_ECLOSED: return "closed";
    case DIST_EEMPTY: return "empty";
    case DIST_EFULL: return "full";
    case DIST_ESTATE: return "operation not valid in the current state";
    case DIST_ETASK: return "task failed";
    case DIST_ECRASHED: return "process died";
    case DIST_EEXITSTATUS: return "child exited with non-zero status";
    case DIST_EBROKEN: return "barrier broken";
    case DIST_EGAVEUP: return "gave up after the last allowed attempt";
    case DIST_ENOMASTER: return "no master answered";
    case DIST_EREFUSED: return "refused by the master";
    case DIST_ECANCELLED: return "task cancelled";
    case DIST_ERETRY: return "task asked to be retried";
    /* The errno-based codes get our wording so that messages are the same
     * on every libc and the function stays thread-safe. */
    case DIST_EINVAL: return "invalid argument";
    case DIST_ENOMEM: return "out of memory";
    case DIST_ETIMEDOUT: return "timed out";
    case DIST_EAGAIN: return "resource temporarily unavailable";
    case DIST_EINTR: return "interrupted";
    case DIST_EMSGSIZE: return "message too large";
    case DIST_EOWNERDEAD: return "previous owner died";
    case DIST_EBADF: return "bad descriptor or wrong direction";
    case DIST_ECHILD: return "no such child process";
    case DIST_EPROTO: return "protocol error";
    case DIST_ENOENT: return "not found";
    case DIST_EDEADLK: return "lock already held by the caller";
    default: break;
    }
    if (code < 0 && code > DIST__EBASE)
        return strerror(-code); /* glibc returns static text for known errnos */
    return "unknown error";
}

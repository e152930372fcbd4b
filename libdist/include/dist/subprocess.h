/*  dist/subprocess.h - run programs, like Python's subprocess.Popen and
 *  its helpers call, check_call and check_output.
 *
 *  dist_subprocess_new() starts a program from an argv array - no shell is
 *  involved unless the options ask for one - with an optional environment
 *  and working directory, and each of stdin, stdout and stderr inherited,
 *  piped to the parent, sent to /dev/null, taken from a descriptor the
 *  caller gives, or (stderr) merged into stdout. A program that cannot be
 *  executed (not found, not executable, bad working directory) is reported
 *  by dist_subprocess_new() itself with errno, as Python raises OSError: no
 *  child is left behind that exits with 127.
 *
 *  The child receives only descriptors 0, 1 and 2: every other descriptor
 *  of the parent is closed in the child, including those opened without
 *  O_CLOEXEC. As with Python's restore_signals, SIGPIPE and SIGXFSZ get
 *  their default action back in the child (a parent that ignores SIGPIPE
 *  does not pass that on to `cat`), and the child starts with no signal
 *  blocked.
 *
 *  The child is started with posix_spawn (glibc: clone with CLONE_VM and
 *  CLONE_VFORK), which is safe in a multi-threaded parent and does not copy
 *  the parent's memory.
 *
 *  communicate() feeds the child's stdin and collects stdout and stderr
 *  together, so that no amount of data on any of them can deadlock; with a
 *  timeout, the child keeps running after DIST_ETIMEDOUT (kill it if you
 *  want it gone) and a later communicate() picks up where the first left
 *  off, keeping the output already collected - as in Python.
 *
 *  Ownership: the object owns the child and the parent's ends of the
 *  pipes. dist_subprocess_destroy() closes the pipes and then waits for the
 *  child to end, like Python's `with Popen(...)`: kill it first if it might
 *  not end by itself. No zombie is ever left behind.
 *
 *  Threads: one object is used by one thread at a time; distinct objects
 *  may be used from distinct threads. Do not set SIGCHLD to SIG_IGN (the
 *  kernel would then reap the children behind the library's back).
 */
#ifndef DIST_SUBPROCESS_H_INCLUDED
#define DIST_SUBPROCESS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common.h"
#include "process.h" /* DIST_EXITCODE_NONE */

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dist_subprocess dist_subprocess_t;

/* Where one of the child's standard streams goes. */
typedef enum {
    DIST_STDIO_INHERIT = 0, /* the parent's own descriptor (the default) */
    DIST_STDIO_PIPE,        /* a pipe to the parent: communicate() or the *_fd() accessors */
    DIST_STDIO_DEVNULL,     /* /dev/null */
    DIST_STDIO_FD,          /* the descriptor in `fd`, which the caller keeps and closes */
    DIST_STDIO_STDOUT,      /* stderr only: wherever stdout goes (2>&1) */
} dist_stdio_mode_t;

typedef struct {
    dist_stdio_mode_t mode;
    int fd; /* for DIST_STDIO_FD */
} dist_stdio_t;

/* Options; a zeroed struct (or NULL) means: argv[0] searched in PATH, the
 * parent's environment and directory, and all three streams inherited.
 * Pointers are borrowed for the duration of the call only. */
typedef struct {
    /* NULL-terminated "NAME=value" strings replacing the environment; NULL
     * keeps the parent's. */
    const char *const *env;
    /* Directory to run in; NULL keeps the parent's. A relative program path
     * is then resolved from it, as in Python. */
    const char *cwd;
    /* Run argv[0] as a /bin/sh command line: the child runs
     * /bin/sh -c argv[0] argv[1] ... (so argv[1] is $0), exactly like
     * Python's shell=True with a list. Only when you need the shell. */
    bool shell;
    /* Start the child in a new session (setsid), as start_new_session. */
    bool new_session;
    dist_stdio_t in, out, err;
} dist_subprocess_opts_t;

/* Starts argv[0] with arguments argv (NULL-terminated, at least one
 * element). argv[0] without a '/' is searched in the parent's PATH.
 * Returns the object, which the caller destroys; or NULL with errno:
 * ENOENT (no such program or directory), EACCES (not executable),
 * ENOEXEC (not a valid executable), EINVAL (bad arguments or options),
 * EMFILE, ENOMEM, EAGAIN (process limit), ... Thread-safe. */
DIST_EXPORT dist_subprocess_t *dist_subprocess_new(const char *const argv[],
                                                   const dist_subprocess_opts_t *opts);

/* Closes the parent's pipe ends, waits for the child to end, frees the
 * object and sets *self_p to NULL. Accepts NULL. Blocks until the child
 * ends (kill it first to make that prompt). */
DIST_EXPORT void dist_subprocess_destroy(dist_subprocess_t **self_p);

/* Writes `input` (in_len bytes; NULL when there is none) to the child's
 * stdin and closes it, while collecting everything the child writes to
 * stdout and stderr until both reach end of file; then waits for the child
 * to end. All of that within timeout_ms.
 *
 * On success returns 0 and, for each of stdout and stderr that is a pipe
 * and whose out-parameter is not NULL, hands over a malloc'd buffer the
 * caller frees (always NUL-terminated, for convenience; the length does
 * not count the NUL). Streams that are not pipes, and later calls after a
 * successful one, give NULL and 0. Output whose pointer is NULL is read
 * and dropped.
 *
 * DIST_ETIMEDOUT: the child keeps running and nothing is handed over. The
 * bytes of input already written and the output read so far are kept in
 * the object; call again to continue - passing the same input (those bytes
 * are skipped) or NULL to close stdin without writing the rest - and the
 * next successful call returns the whole output from the start.
 *
 * A child that exits without reading all of its input is not an error.
 * Other returns: DIST_EINVAL (input given but stdin is not a pipe, or
 * in_len shorter than what an earlier call already wrote), DIST_ENOMEM,
 * -errno. Never raises SIGPIPE. */
DIST_EXPORT int dist_subprocess_communicate(dist_subprocess_t *self, const void *input,
                                            size_t in_len, char **out, size_t *out_len, char **err,
                                            size_t *err_len, int timeout_ms);

/* Waits up to timeout_ms for the child to end and reaps it. Returns 0 once
 * it has ended (returncode() is then set), DIST_ETIMEDOUT, DIST_ECHILD
 * when somebody else reaped it. Beware: a child that fills a pipe nobody
 * reads never ends - use communicate() when stdout or stderr is a pipe. */
DIST_EXPORT int dist_subprocess_wait(dist_subprocess_t *self, int timeout_ms);

/* Checks without blocking: 1 if the child has ended (and is reaped), 0 if
 * it still runs, or a negative error as wait. */
DIST_EXPORT int dist_subprocess_poll(dist_subprocess_t *self);

/* Exit status 0-255, -N when signal N ended the child, or
 * DIST_EXITCODE_NONE while it runs (it polls, like Python's attribute
 * after poll()). */
DIST_EXPORT int dist_subprocess_returncode(dist_subprocess_t *self);

/* Sends a signal (SIGTERM, SIGKILL) to the child. Returns 0, also when the
 * child has already ended (nothing is sent then, so a reused pid is never
 * hit), or -errno. Does not wait. */
DIST_EXPORT int dist_subprocess_send_signal(dist_subprocess_t *self, int signum);
DIST_EXPORT int dist_subprocess_terminate(dist_subprocess_t *self);
DIST_EXPORT int dist_subprocess_kill(dist_subprocess_t *self);

DIST_EXPORT pid_t dist_subprocess_pid(const dist_subprocess_t *self);

/* The parent's ends of the pipes (borrowed; -1 when that stream is not a
 * pipe or has been closed). They are blocking and close-on-exec; the
 * object closes them (communicate closes each at end of file). */
DIST_EXPORT int dist_subprocess_stdin_fd(const dist_subprocess_t *self);
DIST_EXPORT int dist_subprocess_stdout_fd(const dist_subprocess_t *self);
DIST_EXPORT int dist_subprocess_stderr_fd(const dist_subprocess_t *self);

/* Closes the child's stdin pipe (end of input). Returns 0, also when
 * there is none. */
DIST_EXPORT int dist_subprocess_close_stdin(dist_subprocess_t *self);

/* --- helpers -------------------------------------------------------------
 * Each runs argv with opts (NULL: defaults) to completion. When timeout_ms
 * passes first, the child is killed and reaped and DIST_ETIMEDOUT is
 * returned. Errors starting it are returned as -errno (e.g. -ENOENT). */

/* Like Python's call(): returns 0 once the child has ended and stores its
 * returncode (see dist_subprocess_returncode) in *returncode (may be NULL).
 * opts may not ask for pipes (nobody would read them): DIST_EINVAL. */
DIST_EXPORT int dist_call(const char *const argv[], const dist_subprocess_opts_t *opts,
                          int timeout_ms, int *returncode);

/* Like Python's check_call(): as dist_call(), but returns DIST_EEXITSTATUS
 * when the child exited with a non-zero status or was killed by a signal
 * (*returncode says which). */
DIST_EXPORT int dist_check_call(const char *const argv[], const dist_subprocess_opts_t *opts,
                                int timeout_ms, int *returncode);

/* Like Python's check_output(): runs argv with stdout piped, writes `input`
 * (in_len bytes) to its stdin when input is not NULL, and collects stdout
 * into *out (malloc'd, NUL-terminated, freed by the caller) and *out_len.
 * Returns 0 when the child exited with status 0; DIST_EEXITSTATUS otherwise,
 * with *out still set to what it wrote (Python's CalledProcessError.output);
 * on any other error *out is NULL. opts->out must be left as
 * DIST_STDIO_INHERIT, opts->in too when input is given, and opts->err may
 * not be a pipe: DIST_EINVAL. */
DIST_EXPORT int dist_check_output(const char *const argv[], const dist_subprocess_opts_t *opts,
                                  const void *input, size_t in_len, int timeout_ms, char **out,
                                  size_t *out_len, int *returncode);

#ifdef __cplusplus
}
#endif

#endif

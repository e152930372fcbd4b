/*  subprocess/main.c - running programs from C, as with Python's subprocess.
 *
 *  1. check_output: run `uname -s` and capture what it prints.
 *  2. communicate: pipe 1 MiB through `cat` and get it back, with stdout
 *     and stderr collected together so that neither can deadlock.
 *  3. A missing program is an error from the call itself (errno ENOENT).
 *  The Python original:
 *
 *      out = subprocess.check_output(["uname", "-s"])
 *      p = subprocess.Popen(["cat"], stdin=PIPE, stdout=PIPE, stderr=PIPE)
 *      out, err = p.communicate(data, timeout=10)
 */
#include <dist.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    /* 1. check_output */
    const char *uname_argv[] = { "uname", "-s", NULL };
    char *out;
    size_t len;
    int rc;
    int r = dist_check_output(uname_argv, NULL, NULL, 0, 10000, &out, &len, &rc);
    if (r) {
        fprintf(stderr, "uname: %s (returncode %d)\n", dist_strerror(r), rc);
        free(out);
        return 1;
    }
    printf("check_output: uname -s said %s", out);
    free(out);

    /* 2. communicate through cat */
    size_t size = (size_t)1 << 20;
    char *data = malloc(size);
    if (!data)
        return 1;
    for (size_t i = 0; i < size; i++)
        data[i] = (char)('a' + i % 26);
    dist_subprocess_opts_t opts = {
        .in = { DIST_STDIO_PIPE }, .out = { DIST_STDIO_PIPE }, .err = { DIST_STDIO_PIPE }
    };
    const char *cat_argv[] = { "cat", NULL };
    dist_subprocess_t *p = dist_subprocess_new(cat_argv, &opts);
    if (!p) {
        perror("cat");
        free(data);
        return 1;
    }
    char *err;
    size_t err_len;
    r = dist_subprocess_communicate(p, data, size, &out, &len, &err, &err_len, 10000);
    if (r == DIST_ETIMEDOUT) { /* as in Python: the child still runs; we kill it */
        dist_subprocess_kill(p);
        dist_subprocess_wait(p, DIST_FOREVER);
    }
    int ok = r == 0 && len == size && memcmp(out, data, size) == 0 && err_len == 0;
    printf("communicate: sent %zu bytes through cat, got %zu back (%s), exit code %d\n", size,
           len, ok ? "identical" : "DIFFERENT", dist_subprocess_returncode(p));
    if (r == 0) {
        free(out);
        free(err);
    }
    dist_subprocess_destroy(&p); /* reaps the child */
    free(data);

    /* 3. a program that does not exist */
    const char *missing[] = { "no-such-program-here", NULL };
    p = dist_subprocess_new(missing, NULL);
    printf("missing program: %s\n", p ? "started?!" : strerror(errno));
    ok = ok && !p;
    dist_subprocess_destroy(&p);
    return ok ? 0 : 1;
}

/* test_error.c - error codes and their names. */
#include <dist.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

static void test_errno_codes_equal_minus_errno(void **state)
{
    (void)state;
    assert_int_equal(DIST_EINVAL, -EINVAL);
    assert_int_equal(DIST_ETIMEDOUT, -ETIMEDOUT);
    assert_int_equal(DIST_EOWNERDEAD, -EOWNERDEAD);
}

static void test_every_code_has_a_distinct_name(void **state)
{
    (void)state;
    int codes[] = { DIST_ECLOSED, DIST_EEMPTY, DIST_EFULL, DIST_ESTATE, DIST_ETASK,
                    DIST_ECRASHED, DIST_EINVAL, DIST_ENOMEM, DIST_ETIMEDOUT, DIST_EMSGSIZE,
                    DIST_EOWNERDEAD, DIST_EBADF, DIST_ECHILD, DIST_EPROTO, DIST_ENOENT,
                    DIST_EDEADLK, DIST_EEXITSTATUS, DIST_EBROKEN, DIST_EGAVEUP,
                    DIST_ENOMASTER, DIST_EREFUSED };
    size_t n = sizeof codes / sizeof *codes;
    for (size_t i = 0; i < n; i++) {
        const char *a = dist_strerror(codes[i]);
        assert_non_null(a);
        assert_string_not_equal(a, "unknown error");
        for (size_t j = i + 1; j < n; j++)
            assert_string_not_equal(a, dist_strerror(codes[j]));
        /* Either sign names the same error. */
        assert_string_equal(a, dist_strerror(-codes[i]));
    }
    assert_string_equal(dist_strerror(0), "success");
    assert_string_equal(dist_strerror(DIST__EBASE - 999), "unknown error");
    /* Pass-through errnos get the C library's text. */
    assert_string_equal(dist_strerror(-EMFILE), strerror(EMFILE));
}

/* A failed constructor leaves errno such that dist_strerror(errno) is the
 * message (dist/error.h): a plain errno value, and one of the library's own
 * codes, which strerror() does not know. */
static void test_failed_constructor_errno(void **state)
{
    (void)state;
    dist_pool_opts_t po = { .processes = -1 };
    errno = 0;
    assert_null(dist_pool_new(&po));
    assert_int_equal(errno, EINVAL);
    assert_string_equal(dist_strerror(errno), "invalid argument");
    assert_string_equal(dist_strerror(errno), dist_strerror(DIST_EINVAL));

    errno = 0;
    assert_null(dist_queue_new(0, 1)); /* a ring below 64 bytes */
    assert_string_equal(dist_strerror(errno), "invalid argument");

    dist_client_opts_t co = { .master = "no-such-transport://x", .connect_timeout_ms = 200 };
    errno = 0;
    assert_null(dist_client_new(&co));
    assert_int_equal(errno, EINVAL);
    assert_string_equal(dist_strerror(errno), "invalid argument");

    /* Nobody at this ipc path: no welcome within the connect timeout. */
    char dir[] = "/tmp/dist-error-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char ep[64];
    snprintf(ep, sizeof ep, "ipc://%s/nobody", dir);
    co.master = ep;
    errno = 0;
    assert_null(dist_client_new(&co));
    int e = errno;
    rmdir(dir);
    assert_int_equal(e, -DIST_ENOMASTER);
    assert_string_equal(dist_strerror(e), "no master answered");
    assert_string_not_equal(strerror(e), dist_strerror(e));
}

static void test_version(void **state)
{
    (void)state;
    assert_string_equal(dist_version(), DIST_VERSION_STRING);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errno_codes_equal_minus_errno),
        cmocka_unit_test(test_every_code_has_a_distinct_name),
        cmocka_unit_test(test_failed_constructor_errno),
        cmocka_unit_test(test_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

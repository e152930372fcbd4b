/* test_shm.c - dist/shm.h: typed Values and Arrays shared with forked
 * children, and named blocks opened by name from other processes (a forked
 * child that maps it afresh, and `cat` reading /dev/shm). Names include
 * the pid, so parallel runs do not collide. */
#include <dist.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

/* A name unique to this test run. */
static const char *s_name(const char *tag) { return dt_unique_name("dist_test", tag); }

/* ---- Value -------------------------------------------------------------- */

static void test_value_types_and_conversions(void **state)
{
    (void)state;
    dist_value_t *v = dist_value_new(DIST_CTYPE_INT64, false);
    assert_non_null(v);
    assert_null(dist_value_lock(v));
    assert_int_equal(dist_value_type(v), DIST_CTYPE_INT64);
    assert_int_equal(dist_value_get_int(v), 0);
    dist_value_set_int(v, INT64_C(1) << 40);
    assert_true(dist_value_add(v, 5) == (INT64_C(1) << 40) + 5);
    assert_true(*(int64_t *)dist_value_ptr(v) == (INT64_C(1) << 40) + 5);
    dist_value_destroy(&v);
    assert_null(v);
    dist_value_destroy(&v);

    v = dist_value_new(DIST_CTYPE_INT32, true);
    assert_non_null(dist_value_lock(v));
    dist_value_set_int(v, INT32_MAX);
    assert_int_equal(dist_value_add(v, 1), INT32_MIN); /* wraps like int32_t */
    dist_value_destroy(&v);

    v = dist_value_new(DIST_CTYPE_UINT8, false);
    dist_value_set_int(v, 300);
    assert_int_equal(dist_value_get_int(v), 44);
    assert_int_equal(dist_value_add(v, -45), 255);
    assert_true(dist_value_get_double(v) == 255.0);
    dist_value_destroy(&v);

    v = dist_value_new(DIST_CTYPE_DOUBLE, false);
    dist_value_set_double(v, 2.5);
    assert_true(dist_value_get_double(v) == 2.5);
    assert_int_equal(dist_value_get_int(v), 2); /* truncates */
    assert_int_equal(dist_value_add(v, 2), 4);
    assert_true(dist_value_get_double(v) == 4.5);
    dist_value_set_int(v, 7);
    assert_true(*(double *)dist_value_ptr(v) == 7.0);
    dist_value_destroy(&v);

    errno = 0;
    assert_null(dist_value_new(DIST_CTYPE_BYTES, false));
    assert_int_equal(errno, EINVAL);
    assert_null(dist_value_new((dist_ctype_t)99, false));
    assert_int_equal(dist_ctype_size(DIST_CTYPE_DOUBLE), 8);
    assert_int_equal(dist_ctype_size((dist_ctype_t)0), 0);
}

static int s_add_many(void *arg)
{
    for (int i = 0; i < 100000; i++)
        dist_value_add(arg, 1);
    return 0;
}

static void test_value_shared_atomic_add(void **state)
{
    (void)state;
    dist_value_t *v = dist_value_new(DIST_CTYPE_INT64, false);
    pid_t pids[4];
    for (int i = 0; i < 4; i++)
        pids[i] = dt_fork(s_add_many, v);
    for (int i = 0; i < 4; i++)
        dt_join_ok(pids[i]);
    assert_int_equal(dist_value_get_int(v), 400000); /* no lock needed for add */
    dist_value_destroy(&v);
}

/* ---- Array -------------------------------------------------------------- */

static int s_fill_squares(void *arg)
{
    dist_array_t *a = arg;
    double *d = dist_array_double(a);
    dist_lock_t *l = dist_array_lock(a);
    if (!d || !l || dist_lock_acquire(l, 10000))
        return 1;
    for (size_t i = 0; i < dist_array_length(a); i++)
        d[i] = d[i] * d[i];
    return dist_lock_release(l) ? 2 : 0;
}

static void test_array(void **state)
{
    (void)state;
    double init[5] = { 1, 2, 3, 4, 5 };
    dist_array_t *a = dist_array_new(DIST_CTYPE_DOUBLE, 5, init, true);
    assert_non_null(a);
    assert_int_equal(dist_array_length(a), 5);
    assert_int_equal(dist_array_size(a), 5 * sizeof(double));
    assert_int_equal(dist_array_type(a), DIST_CTYPE_DOUBLE);
    assert_int_equal((uintptr_t)dist_array_data(a) % 64, 0);
    assert_null(dist_array_int64(a));
    assert_null(dist_array_uint8(a));
    dt_join_ok(dt_fork(s_fill_squares, a)); /* the child's writes show here */
    double *d = dist_array_double(a);
    for (int i = 0; i < 5; i++)
        assert_true(d[i] == init[i] * init[i]);
    dist_array_destroy(&a);
    assert_null(a);

    a = dist_array_new(DIST_CTYPE_BYTES, 100, NULL, false);
    assert_null(dist_array_lock(a));
    assert_non_null(dist_array_uint8(a)); /* bytes view as uint8 */
    assert_int_equal(dist_array_uint8(a)[99], 0);
    dist_array_destroy(&a);

    a = dist_array_new(DIST_CTYPE_INT32, 3, (int32_t[]){ 7, 8, 9 }, false);
    assert_int_equal(dist_array_int32(a)[2], 9);
    dist_array_destroy(&a);

    errno = 0;
    assert_null(dist_array_new(DIST_CTYPE_INT64, 0, NULL, false));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(dist_array_new(DIST_CTYPE_INT64, SIZE_MAX / 4, NULL, false));
    assert_int_equal(errno, EINVAL);
    assert_null(dist_array_new((dist_ctype_t)42, 1, NULL, false));
}

/* ---- named blocks ------------------------------------------------------- */

static int s_open_and_answer(void *arg)
{
    /* A fresh mapping of the block by name, as an unrelated process would. */
    dist_shm_t *s = dist_shm_open(arg);
    if (!s || dist_shm_size(s) != 4096)
        return 1;
    char *p = dist_shm_data(s);
    if (strcmp(p, "question") != 0)
        return 2;
    strcpy(p + 100, "answer");
    if (dist_shm_unlink(s) != DIST_ESTATE) /* openers never unlink */
        return 3;
    dist_shm_destroy(&s);
    return 0;
}

static bool s_exists(const char *name)
{
    char path[160];
    snprintf(path, sizeof path, "/dev/shm%s", name);
    return access(path, F_OK) == 0;
}

static void test_named_block_create_open_unlink(void **state)
{
    (void)state;
    const char *name = s_name("a");
    dist_shm_t *s = dist_shm_new(name, 4096);
    assert_non_null(s);
    assert_string_equal(dist_shm_name(s), name);
    assert_int_equal(dist_shm_size(s), 4096);
    char *p = dist_shm_data(s);
    assert_int_equal(p[4095], 0);
    strcpy(p, "question");
    dt_join_ok(dt_fork(s_open_and_answer, (void *)name));
    assert_string_equal(p + 100, "answer");
    assert_true(s_exists(name)); /* the opener's destroy left it */

    /* The name is taken. */
    errno = 0;
    assert_null(dist_shm_new(name, 10));
    assert_int_equal(errno, EEXIST);

    /* Opened from this process too, without the leading '/'. */
    dist_shm_t *o = dist_shm_open(name + 1);
    assert_non_null(o);
    assert_string_equal((char *)dist_shm_data(o), "question");
    dist_shm_destroy(&o);
    assert_true(s_exists(name));

    /* The owner unlinks: mapping still usable, new opens fail. */
    assert_int_equal(dist_shm_unlink(s), 0);
    assert_int_equal(dist_shm_unlink(s), 0);
    assert_false(s_exists(name));
    p[0] = 'Q';
    errno = 0;
    assert_null(dist_shm_open(name));
    assert_int_equal(errno, ENOENT);
    dist_shm_destroy(&s);
    assert_null(s);
    dist_shm_destroy(&s);
}

static int s_destroy_inherited(void *arg)
{
    dist_shm_t *s = arg;
    int r = dist_shm_unlink(s) == DIST_ESTATE ? 0 : 1;
    dist_shm_destroy(&s);
    return r;
}

static void test_named_block_owner_destroy_and_fork(void **state)
{
    (void)state;
    dist_shm_t *s = dist_shm_new(s_name("b"), 100);
    char name[128];
    strcpy(name, dist_shm_name(s));
    /* A forked child destroying its copy of the owner's handle must not
     * remove the name. */
    dt_join_ok(dt_fork(s_destroy_inherited, s));
    assert_true(s_exists(name));
    strcpy(dist_shm_data(s), "hello shm");

    /* An unrelated program reads it by name. */
    char path[160];
    snprintf(path, sizeof path, "/dev/shm%s", name);
    const char *argv[] = { "head", "-c", "9", path, NULL };
    char *out;
    size_t n;
    assert_int_equal(dist_check_output(argv, NULL, NULL, 0, 10000, &out, &n, NULL), 0);
    assert_string_equal(out, "hello shm");
    free(out);

    dist_shm_destroy(&s); /* the owner's destroy removes the name */
    assert_false(s_exists(name));
}

static void test_named_block_bad_input_and_generated_names(void **state)
{
    (void)state;
    const char *bad[] = { "", "/", "a/b", "/a/b", ".", "..", NULL };
    for (int i = 0; bad[i]; i++) {
        errno = 0;
        assert_null(dist_shm_new(bad[i], 10));
        assert_int_equal(errno, EINVAL);
    }
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    errno = 0;
    assert_null(dist_shm_new(longname, 10));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(dist_shm_new(s_name("zero"), 0));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(dist_shm_open(NULL));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(dist_shm_open(s_name("missing")));
    assert_int_equal(errno, ENOENT);

    /* NULL picks distinct fresh names. */
    dist_shm_t *a = dist_shm_new(NULL, 10), *b = dist_shm_new(NULL, 10);
    assert_non_null(a);
    assert_non_null(b);
    assert_true(dist_shm_name(a)[0] == '/');
    assert_string_not_equal(dist_shm_name(a), dist_shm_name(b));
    char name_a[128];
    strcpy(name_a, dist_shm_name(a));
    dist_shm_destroy(&a);
    dist_shm_destroy(&b);
    assert_false(s_exists(name_a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_value_types_and_conversions, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_value_shared_atomic_add, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_array, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_named_block_create_open_unlink, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_named_block_owner_destroy_and_fork, dt_setup, dt_teardown),
        cmocka_unit_test_setup_teardown(test_named_block_bad_input_and_generated_names, dt_setup,
                                        dt_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

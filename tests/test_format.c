/* test_format.c - one-call packing and unpacking with format strings
 * (dist/value.h: dist_args_pack, dist_args_add, dist_pack, dist_unpack,
 * dist_args_unpack, dist_result_unpack) and the typed readers for bools,
 * unsigned integers, arrays and maps: exact bytes, round trips, type and
 * length mismatches, bad formats, and a task written with them in a pool. */
#include <dist.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static void s_expect_args(dist_args_t *a, const char *want, size_t wlen)
{
    size_t len;
    const void *got = dist_args_data(a, &len);
    if (len != wlen || memcmp(got, want, len) != 0) {
        fail_msg("packed %zu bytes, expected %zu", len, wlen);
    }
}

/* Decodes bytes into an object held by *z. */
static msgpack_object s_obj(msgpack_zone *z, const void *data, size_t len)
{
    msgpack_zone_init(z, 256);
    msgpack_object o;
    assert_int_equal(dist_wire_decode(data, len, NULL, z, &o), 0);
    return o;
}

static void test_pack(void **state)
{
    (void)state;
    dist_args_t *a = dist_args_pack("isd", 7, "x", 2.5);
    assert_non_null(a);
    assert_int_equal(dist_args_count(a), 3);
    s_expect_args(a, "\x93\x07\xa1x\xcb\x40\x04\x00\x00\x00\x00\x00\x00", 13);
    /* Appending: nested arrays and maps count as one element each. */
    assert_int_equal(dist_args_add(a, "[ii] {s:i}", 1, 2, "k", 3), 0);
    assert_int_equal(dist_args_count(a), 5);
    s_expect_args(a,
                  "\x95\x07\xa1x\xcb\x40\x04\x00\x00\x00\x00\x00\x00"
                  "\x92\x01\x02\x81\xa1k\x03",
                  20);
    dist_args_destroy(&a);

    /* Every letter. */
    int64_t big = -5000000000;
    const char bytes[] = { 0, 1 };
    msgpack_object nil = { .type = MSGPACK_OBJECT_NIL };
    a = dist_args_pack("n t t i I u U s s S b o", 1, 0, -1, big, 200u, UINT64_MAX, "ab",
                       (const char *)NULL, "cd!", (size_t)2, bytes, sizeof bytes, &nil);
    assert_non_null(a);
    s_expect_args(a,
                  "\x9c\xc0\xc3\xc2\xff\xd3\xff\xff\xff\xfe\xd5\xfa\x0e\x00\xcc\xc8"
                  "\xcf\xff\xff\xff\xff\xff\xff\xff\xff\xa2" "ab\xc0\xa2" "cd\xc4\x02\x00\x01\xc0",
                  37);
    dist_args_destroy(&a);

    /* Bad formats: refused before anything is packed. */
    const char *bad[] = { "x", "[i", "i]", "{s}", "{s:i", "[[i]", "q", NULL };
    a = dist_args_pack("i", 1);
    for (const char **f = bad; *f; f++) {
        assert_int_equal(dist_args_add(a, *f, 1, 2), DIST_EINVAL);
        assert_int_equal(dist_args_count(a), 1); /* untouched, still usable */
        errno = 0;
        dist_args_t *b = dist_args_pack(*f, 1, 2);
        assert_null(b);
        assert_int_equal(errno, -DIST_EINVAL);
    }
    assert_int_equal(dist_args_add(a, "i", 2), 0);
    s_expect_args(a, "\x92\x01\x02", 3);
    dist_args_destroy(&a);

    /* dist_pack: one item is the value itself, several an array. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(dist_pack(&pk, "i", 5), 0);
    assert_int_equal(dist_pack(&pk, "is", 5, "a"), 0);
    assert_int_equal(dist_pack(&pk, "[i]", 5), 0);
    assert_int_equal(dist_pack(&pk, "", 5), DIST_EINVAL);
    assert_int_equal(dist_pack(&pk, "[", 5), DIST_EINVAL);
    assert_int_equal(sb.size, 1 + 4 + 2);
    assert_memory_equal(sb.data, "\x05\x92\x05\xa1" "a\x91\x05", 7);
    msgpack_sbuffer_destroy(&sb);
}

static void test_unpack(void **state)
{
    (void)state;
    msgpack_zone z;
    /* [7, "xy", 2.5, [1, 2], {"k": 3, "s": "v"}, nil, true, 2^64-1] */
    const char data[] = "\x98\x07\xa2xy\xcb\x40\x04\x00\x00\x00\x00\x00\x00\x92\x01\x02"
                        "\x82\xa1k\x03\xa1s\xa1v\xc0\xc3\xcf\xff\xff\xff\xff\xff\xff\xff\xff";
    msgpack_object o = s_obj(&z, data, sizeof data - 1);
    int i = 0, k = 0;
    const char *s = NULL, *sv = NULL;
    size_t n = 0, svn = 0;
    double d = 0;
    int a1 = 0, a2 = 0;
    bool t = false;
    uint64_t u = 0;
    assert_int_equal(dist_unpack(&o, "isd[ii]{s:i s:s}ntU", &i, &s, &n, &d, &a1, &a2, "k", &k, "s",
                                 &sv, &svn, &t, &u),
                     0);
    assert_int_equal(i, 7);
    assert_int_equal(n, 2);
    assert_memory_equal(s, "xy", 2);
    assert_true(d == 2.5);
    assert_int_equal(a1, 1);
    assert_int_equal(a2, 2);
    assert_int_equal(k, 3);
    assert_int_equal(svn, 1);
    assert_memory_equal(sv, "v", 1);
    assert_true(t);
    assert_true(u == UINT64_MAX);
    /* dist_args_unpack: the same, read as a task's arguments. */
    char *copy = NULL;
    assert_int_equal(dist_args_unpack(&o, "* S * * o * * *", &copy, (const msgpack_object **)NULL),
                     0);
    assert_string_equal(copy, "xy");
    free(copy);

    /* Mismatches: DIST_EINVAL, and an 'S' copy made before is taken back. */
    copy = NULL;
    assert_int_equal(dist_args_unpack(&o, "* S s * * * * *", &copy, &s, &n), DIST_EINVAL);
    assert_null(copy);
    assert_int_equal(dist_args_unpack(&o, "i s", &i, &s, &n), DIST_EINVAL);          /* length */
    assert_int_equal(dist_unpack(&o, "i", &i), DIST_EINVAL);                         /* an array */
    assert_int_equal(dist_unpack(&o, "*****{s:i}**", "nope", &k), DIST_EINVAL);      /* no key */
    assert_int_equal(dist_unpack(&o, "*****{s:i}n*U", "k", &k, &u), DIST_EINVAL);    /* nil != true */
    assert_int_equal(dist_unpack(&o, "*****{s:i}**u", "k", &k, &k), DIST_EINVAL);    /* > UINT_MAX */
    assert_int_equal(dist_unpack(&o, "*****{s:i}**i", "k", &k, &k), DIST_EINVAL);    /* > INT_MAX */
    assert_int_equal(dist_unpack(&o, "i[", &i), DIST_EINVAL);                        /* format */
    /* Map keys read as 's' only; a NULL key fails without reading past
     * the arguments of the rest of the format. */
    assert_int_equal(dist_unpack(&o, "*****{i:i}**U", &k, &k, &u), DIST_EINVAL);
    msgpack_zone z2;
    msgpack_object m1 = s_obj(&z2, "\x91\x81\xa1k\x01", 5);        /* [{"k": 1}] */
    int a0 = -1;
    assert_int_equal(dist_unpack(&m1, "[{s i}]", (const char *)NULL, &a0), DIST_EINVAL);
    assert_int_equal(a0, -1);
    assert_int_equal(dist_unpack(&m1, "[{s i}]", "k", &a0), 0);
    assert_int_equal(a0, 1);
    msgpack_zone_destroy(&z2);
    assert_int_equal(dist_unpack(&o, "", &i), DIST_EINVAL);
    msgpack_zone_destroy(&z);

    /* int range: 2^40 is an I, not an i. */
    o = s_obj(&z, "\xcf\x00\x00\x01\x00\x00\x00\x00\x00", 9);
    int64_t v64 = 0;
    assert_int_equal(dist_unpack(&o, "i", &i), DIST_EINVAL);
    assert_int_equal(dist_unpack(&o, "I", &v64), 0);
    assert_true(v64 == (int64_t)1 << 40);
    msgpack_zone_destroy(&z);

    /* The typed readers for arrays and maps. */
    o = s_obj(&z, "\x82\xa1" "a\x92\x01\x02\xa1" "b\xc3", 9);
    const msgpack_object *items;
    assert_null(dist_obj_map_get(&o, "c"));
    assert_int_equal(dist_obj_array(dist_obj_map_get(&o, "a"), &items, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(items[1].via.u64, 2);
    assert_int_equal(dist_obj_array(&o, &items, &n), DIST_EINVAL);
    assert_null(dist_obj_map_get(&items[0], "a"));
    msgpack_zone_destroy(&z);
}

static void test_result_unpack(void **state)
{
    (void)state;
    dist_result_t *r = dist_result_new_value("\x92\x05\xa2hi", 5);
    int n = 0;
    const char *s;
    size_t len;
    assert_int_equal(dist_result_unpack(r, "is", &n, &s, &len), 0);
    assert_int_equal(n, 5);
    assert_int_equal(len, 2);
    assert_memory_equal(s, "hi", 2);
    const msgpack_object *items;
    size_t count;
    assert_int_equal(dist_result_array(r, &items, &count), 0);
    assert_int_equal(count, 2);
    bool b;
    assert_int_equal(dist_result_bool(r, &b), DIST_EINVAL);
    dist_result_destroy(&r);

    r = dist_result_new_value("\xc3", 1);
    assert_int_equal(dist_result_bool(r, &b), 0);
    assert_true(b);
    dist_result_destroy(&r);
    r = dist_result_new_value("\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9);
    uint64_t u;
    assert_int_equal(dist_result_uint(r, &u), 0);
    assert_true(u == UINT64_MAX);
    dist_result_destroy(&r);

    /* An error result gives its own code. */
    r = dist_result_new_error(DIST_ETASK, "boom");
    assert_int_equal(dist_result_unpack(r, "i", &n), DIST_ETASK);
    assert_int_equal(dist_result_bool(r, &b), DIST_ETASK);
    dist_result_destroy(&r);
    /* Bytes that are not one value. */
    r = dist_result_new_value("\x92\x01", 2);
    assert_int_equal(dist_result_unpack(r, "ii", &n, &n), DIST_EPROTO);
    dist_result_destroy(&r);
}

/* A task written with the one-call forms: [n, s] -> [2n, s, {"len": |s|}]. */
static int t_fmt(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int n;
    const char *s;
    size_t len;
    if (dist_args_unpack(args, "is", &n, &s, &len))
        return dist_task_fail(ctx, "t_fmt: expected an integer and a string");
    return dist_pack(out, "iS{s:U}", 2 * n, s, len, "len", (uint64_t)len);
}

static void test_task_in_pool(void **state)
{
    (void)state;
    dist_pool_opts_t po = { .processes = 1 };
    dist_pool_t *p = dist_pool_new(&po);
    assert_non_null(p);
    dist_args_t *a = dist_args_pack("is", 21, "abc");
    size_t len;
    const void *buf = dist_args_data(a, &len);
    dist_result_t *r = NULL;
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_fmt), buf, len, &r), 0);
    int n;
    char *s = NULL;
    uint64_t slen;
    assert_int_equal(dist_result_unpack(r, "iS{s:U}", &n, &s, "len", &slen), 0);
    assert_int_equal(n, 42);
    assert_string_equal(s, "abc");
    assert_int_equal(slen, 3);
    free(s);
    dist_result_destroy(&r);
    /* Wrong arguments: the task's own message. */
    dist_args_destroy(&a);
    a = dist_args_pack("si", "abc", 21);
    buf = dist_args_data(a, &len);
    assert_int_equal(dist_pool_apply(p, DIST_FN(t_fmt), buf, len, &r), DIST_ETASK);
    assert_non_null(strstr(dist_result_error(r), "expected an integer and a string"));
    dist_result_destroy(&r);
    dist_args_destroy(&a);
    /* The same in one call. */
    assert_int_equal(dist_pool_applyf(p, DIST_FN(t_fmt), &r, "is", 4, "hey"), 0);
    assert_int_equal(dist_result_unpack(r, "i**", &n), 0);
    assert_int_equal(n, 8);
    dist_result_destroy(&r);
    assert_int_equal(dist_pool_applyf(p, DIST_FN(t_fmt), &r, "i[", 4), DIST_EINVAL);
    assert_null(r);
    dist_pool_destroy(&p);
}

static void test_batch(void **state)
{
    (void)state;
    dist_batch_t *b = dist_batch_new();
    assert_non_null(b);
    assert_null(dist_batch_items(b));
    for (int i = 0; i < 1000; i++)
        assert_int_equal(dist_batch_add(b, "is", i, i % 2 ? "odd" : "even"), 0);
    /* A bad format appends nothing. */
    assert_int_equal(dist_batch_add(b, "i[", 1), DIST_EINVAL);
    assert_int_equal(dist_batch_count(b), 1000);
    const dist_bytes_t *items = dist_batch_items(b);
    assert_non_null(items);
    msgpack_zone z;
    for (int i = 0; i < 1000; i += 111) {
        msgpack_object o = s_obj(&z, items[i].data, items[i].len);
        int n;
        const char *s;
        size_t len;
        assert_int_equal(dist_args_unpack(&o, "is", &n, &s, &len), 0);
        assert_int_equal(n, i);
        assert_int_equal(len, i % 2 ? 3u : 4u);
        msgpack_zone_destroy(&z);
    }
    /* Adding after dist_batch_items: the items are built again. */
    assert_int_equal(dist_batch_add_packed(b, "\x91\xc3", 2), 0);
    assert_int_equal(dist_batch_add_packed(b, NULL, 2), DIST_EINVAL);
    items = dist_batch_items(b);
    assert_int_equal(dist_batch_count(b), 1001);
    assert_int_equal(items[1000].len, 2);
    assert_memory_equal(items[1000].data, "\x91\xc3", 2);
    assert_memory_equal(items[0].data, "\x92\x00\xa4" "even", 7);

    /* Through a pool's map, as in Python's pool.map(f, iterable). */
    dist_batch_t *m = dist_batch_new();
    for (int i = 0; i < 50; i++)
        dist_batch_add(m, "is", i, "x");
    dist_pool_opts_t po = { .processes = 2 };
    dist_pool_t *p = dist_pool_new(&po);
    dist_results_t *rs = NULL;
    assert_int_equal(
        dist_pool_map(p, DIST_FN(t_fmt), dist_batch_items(m), dist_batch_count(m), 0, &rs), 0);
    for (int i = 0; i < 50; i++) {
        int n;
        assert_int_equal(dist_result_unpack(dist_results_at(rs, (size_t)i), "i**", &n), 0);
        assert_int_equal(n, 2 * i);
    }
    dist_results_destroy(&rs);
    dist_pool_destroy(&p);
    dist_batch_destroy(&m);
    dist_batch_destroy(&b);
    assert_null(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack),
        cmocka_unit_test(test_unpack),
        cmocka_unit_test(test_result_unpack),
        cmocka_unit_test(test_task_in_pool),
        cmocka_unit_test(test_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_wire.c - the MessagePack validator, decoder, accessors and buffer.
 *
 * Every value the validator accepts must decode with msgpack_unpack()
 * consuming exactly its bytes; s_check() asserts that each time, so each
 * case below is a differential test against msgpack-c as well as a check
 * of the expected code. msgpack_unpack() is only ever run on input the
 * validator accepted or that is too short to hold a large header.
 */
#include <dist.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* Validates b[0..n) expecting `want`; for accepted input also checks that
 * msgpack_unpack() agrees and that both decoders give equal objects; for
 * rejected input checks that the decoders reject it with the same code. */
static void s_check(int want, const void *b, size_t n, const dist_wire_limits_t *lim)
{
    assert_int_equal(dist_wire_validate(b, n, lim), want);
    int err = 12345;
    errno = 0;
    dist_wire_msg_t *m = dist_wire_msg_decode(b, n, lim, &err);
    int saved_errno = errno;
    msgpack_zone zone;
    assert_true(msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE));
    msgpack_object obj = { .type = MSGPACK_OBJECT_NIL };
    int rc = dist_wire_decode(b, n, lim, &zone, &obj);
    assert_int_equal(rc, want);
    if (want == 0) {
        assert_non_null(m);
        assert_int_equal(err, 0);
        size_t off = 0;
        msgpack_object ref;
        assert_int_equal(msgpack_unpack(b, n, &off, &zone, &ref), MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(off, n);
        assert_true(msgpack_object_equal(ref, *dist_wire_msg_root(m)));
        assert_true(msgpack_object_equal(ref, obj));
        size_t len;
        const void *copy = dist_wire_msg_data(m, &len);
        assert_int_equal(len, n);
        assert_memory_equal(copy, b, n);
    } else {
        assert_null(m);
        assert_int_equal(err, want);
        assert_int_equal(saved_errno, -want);
        assert_int_equal(obj.type, MSGPACK_OBJECT_NIL); /* untouched */
    }
    msgpack_zone_destroy(&zone);
    dist_wire_msg_destroy(&m);
    assert_null(m);
}

#define CHECK(want, lim, ...)                                                                      \
    do {                                                                                           \
        static const uint8_t b_[] = { __VA_ARGS__ };                                               \
        s_check((want), b_, sizeof b_, (lim));                                                     \
    } while (0)

/* A buffer to pack test values into. */
static dist_wire_buf_t *s_buf(void)
{
    dist_wire_buf_t *b = dist_wire_buf_new(0);
    assert_non_null(b);
    return b;
}

static void s_check_buf(int want, dist_wire_buf_t *b, const dist_wire_limits_t *lim)
{
    assert_int_equal(dist_wire_buf_status(b), 0);
    size_t n;
    const void *p = dist_wire_buf_data(b, &n);
    s_check(want, p, n, lim);
}

/* --- valid values ------------------------------------------------------ */

static void test_every_scalar_type_round_trips(void **state)
{
    (void)state;
    dist_wire_buf_t *b = s_buf();
    msgpack_packer *pk = dist_wire_buf_packer(b);
    static const uint8_t blob[70000];
    /* One value at a time, each with a different encoding (first byte). */
    for (int i = 0;; i++) {
        dist_wire_buf_reset(b);
        switch (i) {
        case 0: msgpack_pack_nil(pk); break;
        case 1: msgpack_pack_true(pk); break;
        case 2: msgpack_pack_false(pk); break;
        case 3: msgpack_pack_fix_uint8(pk, 200); break;
        case 4: msgpack_pack_fix_uint16(pk, 60000); break;
        case 5: msgpack_pack_fix_uint32(pk, 4000000000u); break;
        case 6: msgpack_pack_fix_uint64(pk, UINT64_MAX); break;
        case 7: msgpack_pack_fix_int8(pk, -100); break;
        case 8: msgpack_pack_fix_int16(pk, -30000); break;
        case 9: msgpack_pack_fix_int32(pk, INT32_MIN); break;
        case 10: msgpack_pack_fix_int64(pk, INT64_MIN); break;
        case 11: msgpack_pack_int(pk, 5); break;   /* positive fixint */
        case 12: msgpack_pack_int(pk, -5); break;  /* negative fixint */
        case 13: msgpack_pack_float(pk, 1.5f); break;
        case 14: msgpack_pack_double(pk, -2.25); break;
        case 15: msgpack_pack_str_with_body(pk, "", 0); break;
        case 16: msgpack_pack_str_with_body(pk, blob, 31); break;    /* fixstr */
        case 17: msgpack_pack_str_with_body(pk, blob, 200); break;   /* str 8 */
        case 18: msgpack_pack_str_with_body(pk, blob, 60000); break; /* str 16 */
        case 19: msgpack_pack_str_with_body(pk, blob, 70000); break; /* str 32 */
        case 20: msgpack_pack_bin_with_body(pk, blob, 0); break;
        case 21: msgpack_pack_bin_with_body(pk, blob, 200); break;   /* bin 8 */
        case 22: msgpack_pack_bin_with_body(pk, blob, 60000); break; /* bin 16 */
        case 23: msgpack_pack_bin_with_body(pk, blob, 70000); break; /* bin 32 */
        case 24: msgpack_pack_ext_with_body(pk, blob, 1, 1); break;  /* fixext 1 */
        case 25: msgpack_pack_ext_with_body(pk, blob, 2, 2); break;
        case 26: msgpack_pack_ext_with_body(pk, blob, 4, 3); break;
        case 27: msgpack_pack_ext_with_body(pk, blob, 8, -1); break;
        case 28: msgpack_pack_ext_with_body(pk, blob, 16, 5); break; /* fixext 16 */
        case 29: msgpack_pack_ext_with_body(pk, blob, 0, 6); break;  /* ext 8, empty */
        case 30: msgpack_pack_ext_with_body(pk, blob, 3, 7); break;  /* ext 8 */
        case 31: msgpack_pack_ext_with_body(pk, blob, 300, 8); break;   /* ext 16 */
        case 32: msgpack_pack_ext_with_body(pk, blob, 70000, 9); break; /* ext 32 */
        default: dist_wire_buf_destroy(&b); return;
        }
        s_check_buf(0, b, NULL);
    }
}

static void test_containers_round_trip(void **state)
{
    (void)state;
    dist_wire_buf_t *b = s_buf();
    msgpack_packer *pk = dist_wire_buf_packer(b);
    /* fixarray, array 16, array 32, and the same sizes of map. */
    const uint32_t sizes[] = { 0, 1, 15, 16, 65535, 65536, 70000 };
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        dist_wire_buf_reset(b);
        msgpack_pack_array(pk, sizes[i]);
        for (uint32_t j = 0; j < sizes[i]; j++)
            msgpack_pack_uint32(pk, j);
        s_check_buf(0, b, NULL);

        dist_wire_buf_reset(b);
        msgpack_pack_map(pk, sizes[i]);
        for (uint32_t j = 0; j < sizes[i]; j++) {
            msgpack_pack_uint32(pk, j);
            msgpack_pack_nil(pk);
        }
        s_check_buf(0, b, NULL);
    }
    /* A nested protocol-like message. */
    dist_wire_buf_reset(b);
    msgpack_pack_map(pk, 3);
    msgpack_pack_str_with_body(pk, "v", 1);
    msgpack_pack_uint8(pk, 1);
    msgpack_pack_str_with_body(pk, "args", 4);
    msgpack_pack_array(pk, 3);
    msgpack_pack_double(pk, 0.5);
    msgpack_pack_bin_with_body(pk, "\0\1", 2);
    msgpack_pack_map(pk, 0);
    msgpack_pack_str_with_body(pk, "ok", 2);
    msgpack_pack_true(pk);
    s_check_buf(0, b, NULL);
    dist_wire_buf_destroy(&b);
}

/* Every buffer of one and two bytes: the validator accepts exactly what
 * msgpack_unpack() decodes whole. Two bytes cannot hold a header that
 * makes msgpack-c allocate much, so running it on everything is safe. */
static void test_all_short_buffers_agree_with_msgpack(void **state)
{
    (void)state;
    dist_wire_limits_t lim = { .max_depth = DIST_WIRE_DEPTH_MAX };
    int accepted = 0;
    for (unsigned n = 1; n <= 2; n++) {
        for (unsigned v = 0; v < (1u << (8 * n)); v++) {
            uint8_t b[2] = { (uint8_t)(n == 2 ? v >> 8 : v), (uint8_t)v };
            msgpack_zone zone;
            assert_true(msgpack_zone_init(&zone, 256));
            size_t off = 0;
            msgpack_object o;
            bool whole = msgpack_unpack((const char *)b, n, &off, &zone, &o) ==
                             MSGPACK_UNPACK_SUCCESS && off == n;
            msgpack_zone_destroy(&zone);
            int rc = dist_wire_validate(b, n, &lim);
            if (whole != (rc == 0))
                fail_msg("len %u bytes %02x %02x: validate %d, msgpack %s", n, b[0], b[1], rc,
                         whole ? "ok" : "fails");
            assert_true(rc == 0 || rc == DIST_EPROTO);
            accepted += whole;
        }
    }
    assert_true(accepted > 256); /* sanity: e.g. [1], {} alone are many */
}

/* --- malformed input --------------------------------------------------- */

static void test_empty_and_invalid_arguments(void **state)
{
    (void)state;
    assert_int_equal(dist_wire_validate("", 0, NULL), DIST_EPROTO);
    assert_int_equal(dist_wire_validate(NULL, 0, NULL), DIST_EPROTO);
    assert_int_equal(dist_wire_validate(NULL, 1, NULL), DIST_EINVAL);
    assert_int_equal(dist_wire_validate_seq(NULL, 0, NULL), DIST_EPROTO);
    int err = 0;
    assert_null(dist_wire_msg_decode(NULL, 0, NULL, &err));
    assert_int_equal(err, DIST_EPROTO);
    assert_null(dist_wire_msg_decode(NULL, 0, NULL, NULL)); /* err is optional */
    assert_int_equal(errno, EPROTO);
    msgpack_object o;
    msgpack_zone zone;
    assert_true(msgpack_zone_init(&zone, 64));
    assert_int_equal(dist_wire_decode("\xc0", 1, NULL, NULL, &o), DIST_EINVAL);
    assert_int_equal(dist_wire_decode("\xc0", 1, NULL, &zone, NULL), DIST_EINVAL);
    msgpack_zone_destroy(&zone);
    /* msgpack-c would loop forever growing a zone whose chunk size is 0. */
    assert_true(msgpack_zone_init(&zone, 0));
    assert_int_equal(dist_wire_decode("\x91\x01", 2, NULL, &zone, &o), DIST_EINVAL);
    msgpack_zone_destroy(&zone);
}

static void test_reserved_type_byte(void **state)
{
    (void)state;
    CHECK(DIST_EPROTO, NULL, 0xc1);
    CHECK(DIST_EPROTO, NULL, 0x92, 0x01, 0xc1);
    CHECK(DIST_EPROTO, NULL, 0x81, 0xc1, 0x01);
    CHECK(DIST_EPROTO, NULL, 0x81, 0x01, 0xc1);
}

static void test_trailing_bytes(void **state)
{
    (void)state;
    CHECK(DIST_EPROTO, NULL, 0x01, 0x02);
    CHECK(DIST_EPROTO, NULL, 0x90, 0x00);
    CHECK(DIST_EPROTO, NULL, 0x91, 0x01, 0x01);
    CHECK(DIST_EPROTO, NULL, 0xa1, 'a', 'b');
}

static void test_truncated_scalars(void **state)
{
    (void)state;
    CHECK(DIST_EPROTO, NULL, 0xcc);
    CHECK(DIST_EPROTO, NULL, 0xcd, 0x01);
    CHECK(DIST_EPROTO, NULL, 0xce, 0x01, 0x02, 0x03);
    CHECK(DIST_EPROTO, NULL, 0xcf, 1, 2, 3, 4, 5, 6, 7);
    CHECK(DIST_EPROTO, NULL, 0xd0);
    CHECK(DIST_EPROTO, NULL, 0xd3, 1, 2, 3, 4, 5, 6, 7);
    CHECK(DIST_EPROTO, NULL, 0xca, 0, 0, 0);
    CHECK(DIST_EPROTO, NULL, 0xcb, 0, 0, 0, 0, 0, 0, 0);
}

static void test_truncated_str_bin_ext(void **state)
{
    (void)state;
    CHECK(DIST_EPROTO, NULL, 0xa3, 'a', 'b');           /* fixstr */
    CHECK(DIST_EPROTO, NULL, 0xd9);                     /* str 8: no length */
    CHECK(DIST_EPROTO, NULL, 0xd9, 0x05, 'a');          /* str 8: short body */
    CHECK(DIST_EPROTO, NULL, 0xda, 0x00);               /* str 16: half a length */
    CHECK(DIST_EPROTO, NULL, 0xda, 0x00, 0x02, 'a');
    CHECK(DIST_EPROTO, NULL, 0xdb, 0x00, 0x00, 0x00);
    CHECK(DIST_EPROTO, NULL, 0xdb, 0xff, 0xff, 0xff, 0xff, 'a');
    CHECK(DIST_EPROTO, NULL, 0xc4);                     /* bin 8 */
    CHECK(DIST_EPROTO, NULL, 0xc4, 0x02, 0x00);
    CHECK(DIST_EPROTO, NULL, 0xc5, 0x01, 0x00);
    CHECK(DIST_EPROTO, NULL, 0xc6, 0x00, 0x00, 0x00, 0x02, 0x00);
    CHECK(DIST_EPROTO, NULL, 0xd4);                     /* fixext 1: no type */
    CHECK(DIST_EPROTO, NULL, 0xd4, 0x01);               /* fixext 1: no data */
    CHECK(DIST_EPROTO, NULL, 0xd8, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    CHECK(DIST_EPROTO, NULL, 0xc7);                     /* ext 8: no length */
    CHECK(DIST_EPROTO, NULL, 0xc7, 0x00);               /* ext 8: no type */
    CHECK(DIST_EPROTO, NULL, 0xc7, 0x02, 0x01, 'a');    /* ext 8: short data */
    CHECK(DIST_EPROTO, NULL, 0xc8, 0x00, 0x01, 0x01);
    CHECK(DIST_EPROTO, NULL, 0xc9, 0x7f, 0xff, 0xff, 0xff, 0x01, 'a');
    /* Just long enough is fine. */
    CHECK(0, NULL, 0xc7, 0x00, 0x05);
    CHECK(0, NULL, 0xd4, 0x01, 0x02);
    CHECK(0, NULL, 0xda, 0x00, 0x01, 'a');
}

static void test_truncated_and_lying_containers(void **state)
{
    (void)state;
    CHECK(DIST_EPROTO, NULL, 0x92, 0x01);               /* fixarray: one of two */
    CHECK(DIST_EPROTO, NULL, 0x91, 0x91);               /* inner array empty-handed */
    CHECK(DIST_EPROTO, NULL, 0xdc);                     /* array 16: no count */
    CHECK(DIST_EPROTO, NULL, 0xdc, 0x00);
    CHECK(DIST_EPROTO, NULL, 0xdc, 0x00, 0x03, 0x01, 0x02);
    CHECK(DIST_EPROTO, NULL, 0xdd, 0x00, 0x00, 0x00);
    /* The 5-byte headers that make msgpack-c reserve gigabytes. */
    CHECK(DIST_EPROTO, NULL, 0xdd, 0xff, 0xff, 0xff, 0xff);
    CHECK(DIST_EPROTO, NULL, 0xdd, 0x0f, 0xff, 0xff, 0xff);
    CHECK(DIST_EPROTO, NULL, 0xdf, 0xff, 0xff, 0xff, 0xff);
    CHECK(DIST_EPROTO, NULL, 0xdf, 0x0f, 0xff, 0xff, 0xff);
    CHECK(DIST_EPROTO, NULL, 0xde, 0xff, 0xff, 0x01, 0x01);
    CHECK(DIST_EPROTO, NULL, 0x81, 0x01);               /* key without value */
    CHECK(DIST_EPROTO, NULL, 0x82, 0x01, 0x02, 0x03);   /* 2 pairs need 4 values */
    CHECK(DIST_EPROTO, NULL, 0x82, 0x01, 0x02, 0x03, 0xc1);
    CHECK(DIST_EPROTO, NULL, 0x81);
    /* A count that fits the bytes but whose elements are longer than one
     * byte still runs out. */
    CHECK(DIST_EPROTO, NULL, 0x92, 0xcd, 0x00, 0x01);
    CHECK(0, NULL, 0x92, 0xcd, 0x00, 0x01, 0x02);
}

/* --- limits ------------------------------------------------------------ */

/* depth nested array16 headers of one element each around a nil. */
static uint8_t *s_nested(size_t depth, bool empty_inner, size_t *len)
{
    uint8_t *b = malloc(depth * 3 + 1);
    assert_non_null(b);
    size_t n = 0;
    for (size_t i = 0; i < depth; i++) {
        b[n++] = 0xdc;
        b[n++] = 0x00;
        b[n++] = (empty_inner && i == depth - 1) ? 0x00 : 0x01;
    }
    if (!empty_inner || depth == 0)
        b[n++] = 0xc0;
    *len = n;
    return b;
}

static void s_check_depth(int want, size_t depth, bool empty_inner, const dist_wire_limits_t *l)
{
    size_t len;
    uint8_t *b = s_nested(depth, empty_inner, &len);
    s_check(want, b, len, l);
    free(b);
}

static void test_depth_limit_exact(void **state)
{
    (void)state;
    /* Defaults: 16. */
    s_check_depth(0, 0, false, NULL);
    s_check_depth(0, DIST_WIRE_DEFAULT_DEPTH, false, NULL);
    s_check_depth(0, DIST_WIRE_DEFAULT_DEPTH, true, NULL);
    s_check_depth(DIST_EMSGSIZE, DIST_WIRE_DEFAULT_DEPTH + 1, false, NULL);
    s_check_depth(DIST_EMSGSIZE, DIST_WIRE_DEFAULT_DEPTH + 1, true, NULL); /* empty counts */
    /* The pitfall's bomb: 32 nested array16 headers. */
    s_check_depth(DIST_EMSGSIZE, 32, false, NULL);
    dist_wire_limits_t l = { .max_depth = 3 };
    s_check_depth(0, 3, false, &l);
    s_check_depth(DIST_EMSGSIZE, 4, false, &l);
    CHECK(0, &l, 0x91, 0x91, 0x91, 0x01);
    CHECK(0, &l, 0x81, 0x01, 0x81, 0x01, 0x90);          /* {1: {1: []}} */
    CHECK(DIST_EMSGSIZE, &l, 0x81, 0x01, 0x81, 0x01, 0x91, 0x90);
    CHECK(DIST_EMSGSIZE, &l, 0x91, 0x91, 0x91, 0x90);
    /* Siblings do not add up: depth is nesting, not count. */
    CHECK(0, &l, 0x93, 0x91, 0x91, 0x01, 0x91, 0x91, 0x01, 0x91, 0x91, 0x01);
    /* Above msgpack-c's own stack the limit is clamped to it: 32 decodes,
     * 33 is refused rather than failing inside msgpack_unpack. */
    l.max_depth = 1000;
    s_check_depth(0, DIST_WIRE_DEPTH_MAX, false, &l);
    s_check_depth(DIST_EMSGSIZE, DIST_WIRE_DEPTH_MAX + 1, false, &l);
    s_check_depth(DIST_EMSGSIZE, 10000, false, &l);
}

static void test_object_limit_exact(void **state)
{
    (void)state;
    dist_wire_limits_t l = { .max_objects = 5 };
    CHECK(0, &l, 0x92, 0x01, 0x81, 0xa1, 'a', 0x02);              /* [1, {"a": 2}] */
    CHECK(DIST_EMSGSIZE, &l, 0x93, 0x01, 0x81, 0xa1, 'a', 0x02, 0x03);
    l.max_objects = 1;
    CHECK(0, &l, 0x90);
    CHECK(0, &l, 0xa3, 'a', 'b', 'c');
    CHECK(DIST_EMSGSIZE, &l, 0x91, 0x01);
    /* A malformed buffer is malformed first, whatever the limits. */
    CHECK(DIST_EPROTO, &l, 0xdd, 0xff, 0xff, 0xff, 0xff);

    /* The default, at the boundary: an array of N nils is N + 1 objects. */
    size_t n = DIST_WIRE_DEFAULT_OBJECTS;
    uint8_t *b = malloc(n + 5);
    assert_non_null(b);
    memset(b, 0xc0, n + 5);
    b[0] = 0xdd;
    uint32_t cnt = (uint32_t)n - 1;
    b[1] = (uint8_t)(cnt >> 24), b[2] = (uint8_t)(cnt >> 16), b[3] = (uint8_t)(cnt >> 8),
    b[4] = (uint8_t)cnt;
    s_check(0, b, 5 + cnt, NULL);
    cnt = (uint32_t)n;
    b[1] = (uint8_t)(cnt >> 24), b[2] = (uint8_t)(cnt >> 16), b[3] = (uint8_t)(cnt >> 8),
    b[4] = (uint8_t)cnt;
    s_check(DIST_EMSGSIZE, b, 5 + cnt, NULL);
    free(b);
}

static void test_str_limit_exact(void **state)
{
    (void)state;
    dist_wire_limits_t l = { .max_str = 3 };
    CHECK(0, &l, 0xa3, 'a', 'b', 'c');
    CHECK(DIST_EMSGSIZE, &l, 0xa4, 'a', 'b', 'c', 'd');
    CHECK(0, &l, 0xd9, 0x03, 'a', 'b', 'c');
    CHECK(DIST_EMSGSIZE, &l, 0xd9, 0x04, 'a', 'b', 'c', 'd');
    CHECK(0, &l, 0xc4, 0x03, 1, 2, 3);
    CHECK(DIST_EMSGSIZE, &l, 0xc4, 0x04, 1, 2, 3, 4);
    /* ext: the limit is on the data, not the type byte. */
    CHECK(0, &l, 0xc7, 0x03, 0x01, 1, 2, 3);
    CHECK(DIST_EMSGSIZE, &l, 0xc7, 0x04, 0x01, 1, 2, 3, 4);
    CHECK(0, &l, 0xd5, 0x01, 1, 2);                          /* fixext 2 */
    CHECK(DIST_EMSGSIZE, &l, 0xd6, 0x01, 1, 2, 3, 4);        /* fixext 4 */
    /* Inside containers and as map keys. */
    CHECK(DIST_EMSGSIZE, &l, 0x81, 0xa4, 'a', 'b', 'c', 'd', 0x01);
    /* A truncated claim is malformed, not oversized. */
    CHECK(DIST_EPROTO, &l, 0xdb, 0xff, 0xff, 0xff, 0xff, 'a');
}

static void test_limits_defaults(void **state)
{
    (void)state;
    dist_wire_limits_t d = dist_wire_limits_default();
    assert_int_equal(d.max_depth, DIST_WIRE_DEFAULT_DEPTH);
    assert_int_equal(d.max_objects, DIST_WIRE_DEFAULT_OBJECTS);
    assert_true(d.max_str == SIZE_MAX);
    /* Zero fields mean the default, so a zeroed struct is like NULL. */
    dist_wire_limits_t z = { 0 };
    s_check_depth(0, DIST_WIRE_DEFAULT_DEPTH, false, &z);
    s_check_depth(DIST_EMSGSIZE, DIST_WIRE_DEFAULT_DEPTH + 1, false, &z);
}

/* --- sequences --------------------------------------------------------- */

static void test_validate_seq(void **state)
{
    (void)state;
    assert_int_equal(dist_wire_validate_seq("\x01", 1, NULL), 1);
    assert_int_equal(dist_wire_validate_seq("\x01\x02\xa1x\x90", 5, NULL), 4);
    assert_int_equal(dist_wire_validate_seq("\x01\x02\xa2x", 4, NULL), DIST_EPROTO);
    assert_int_equal(dist_wire_validate_seq("\x01\xc1", 2, NULL), DIST_EPROTO);
    assert_int_equal(dist_wire_validate_seq("", 0, NULL), DIST_EPROTO);
    /* max_objects is the total; max_depth applies to each value. */
    dist_wire_limits_t l = { .max_objects = 3, .max_depth = 1 };
    assert_int_equal(dist_wire_validate_seq("\x01\x02\x03", 3, &l), 3);
    assert_int_equal(dist_wire_validate_seq("\x01\x02\x03\x04", 4, &l), DIST_EMSGSIZE);
    assert_int_equal(dist_wire_validate_seq("\x91\x01\x90", 3, &l), 2);
    assert_int_equal(dist_wire_validate_seq("\x91\x91\x01", 3, &l), DIST_EMSGSIZE);
}

/* --- decoding and lifetimes --------------------------------------------- */

static void test_decode_borrows_msg_copies(void **state)
{
    (void)state;
    char buf[] = "\x82\xa4name\xa3" "abc\xa3raw\xc4\x02xy";
    size_t len = sizeof buf - 1;
    msgpack_zone zone;
    assert_true(msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE));
    msgpack_object root;
    assert_int_equal(dist_wire_decode(buf, len, NULL, &zone, &root), 0);
    const char *s;
    size_t n;
    assert_int_equal(dist_wire_get_str(dist_wire_map_get(&root, "name"), &s, &n), 0);
    assert_true(s >= buf && s + n <= buf + len); /* zero copy: points into buf */

    dist_wire_msg_t *m = dist_wire_msg_decode(buf, len, NULL, NULL);
    assert_non_null(m);
    memset(buf, 0, sizeof buf); /* the message keeps its own bytes */
    const msgpack_object *r = dist_wire_msg_root(m);
    assert_int_equal(dist_wire_get_str(dist_wire_map_get(r, "name"), &s, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(s, "abc", 3);
    const void *p;
    assert_int_equal(dist_wire_get_bin(dist_wire_map_get(r, "raw"), &p, &n), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(p, "xy", 2);
    size_t dlen;
    const char *data = dist_wire_msg_data(m, &dlen);
    assert_true(s >= data && s + 3 <= data + dlen);
    dist_wire_msg_destroy(&m);
    assert_null(m);
    dist_wire_msg_destroy(&m); /* pointer to NULL */
    dist_wire_msg_destroy(NULL);
    msgpack_zone_destroy(&zone);
}

/* --- accessors ---------------------------------------------------------- */

/* The message used by the accessor tests:
 * {"u": 7, "n": -3, "big": 2^64-1, "f": 0.5, "f32": 1.5f, "t": true,
 *  "s": "hi", "e": "", "b": bin"\0\1", "a": [1, 2], "m": {}, "z": nil,
 *  "u": 8, 5: "int key"} */
static dist_wire_msg_t *s_sample(void)
{
    dist_wire_buf_t *b = s_buf();
    msgpack_packer *pk = dist_wire_buf_packer(b);
    msgpack_pack_map(pk, 14);
    msgpack_pack_str_with_body(pk, "u", 1), msgpack_pack_int(pk, 7);
    msgpack_pack_str_with_body(pk, "n", 1), msgpack_pack_int(pk, -3);
    msgpack_pack_str_with_body(pk, "big", 3), msgpack_pack_uint64(pk, UINT64_MAX);
    msgpack_pack_str_with_body(pk, "f", 1), msgpack_pack_double(pk, 0.5);
    msgpack_pack_str_with_body(pk, "f32", 3), msgpack_pack_float(pk, 1.5f);
    msgpack_pack_str_with_body(pk, "t", 1), msgpack_pack_true(pk);
    msgpack_pack_str_with_body(pk, "s", 1), msgpack_pack_str_with_body(pk, "hi", 2);
    msgpack_pack_str_with_body(pk, "e", 1), msgpack_pack_str_with_body(pk, "", 0);
    msgpack_pack_str_with_body(pk, "b", 1), msgpack_pack_bin_with_body(pk, "\0\1", 2);
    msgpack_pack_str_with_body(pk, "a", 1), msgpack_pack_array(pk, 2);
    msgpack_pack_int(pk, 1), msgpack_pack_int(pk, 2);
    msgpack_pack_str_with_body(pk, "m", 1), msgpack_pack_map(pk, 0);
    msgpack_pack_str_with_body(pk, "z", 1), msgpack_pack_nil(pk);
    msgpack_pack_str_with_body(pk, "u", 1), msgpack_pack_int(pk, 8);
    msgpack_pack_int(pk, 5), msgpack_pack_str_with_body(pk, "int key", 7);
    assert_int_equal(dist_wire_buf_status(b), 0);
    size_t len;
    const void *data = dist_wire_buf_data(b, &len);
    int err;
    dist_wire_msg_t *m = dist_wire_msg_decode(data, len, NULL, &err);
    assert_non_null(m);
    dist_wire_buf_destroy(&b);
    return m;
}

static void test_map_get(void **state)
{
    (void)state;
    dist_wire_msg_t *m = s_sample();
    const msgpack_object *r = dist_wire_msg_root(m);
    uint64_t u = 0;
    assert_int_equal(dist_wire_get_u64(dist_wire_map_get(r, "u"), &u), 0);
    assert_int_equal(u, 7); /* the first of a duplicated key */
    assert_null(dist_wire_map_get(r, "missing"));
    assert_null(dist_wire_map_get(r, ""));
    assert_null(dist_wire_map_get(r, "bi"));  /* a prefix is not the key */
    assert_null(dist_wire_map_get(r, "bigg"));
    assert_null(dist_wire_map_get(r, "5"));   /* integer keys are not strings */
    assert_null(dist_wire_map_get(NULL, "u"));
    assert_null(dist_wire_map_get(r, NULL));
    assert_null(dist_wire_map_get(dist_wire_map_get(r, "a"), "u")); /* not a map */
    assert_null(dist_wire_map_get(dist_wire_map_get(r, "m"), "u")); /* empty map */
    /* A missing field chains into DIST_EPROTO, never a crash. */
    assert_int_equal(dist_wire_get_u64(dist_wire_map_get(r, "missing"), &u), DIST_EPROTO);
    assert_true(dist_wire_str_eq(dist_wire_map_get(r, "s"), "hi"));
    assert_false(dist_wire_str_eq(dist_wire_map_get(r, "s"), "h"));
    assert_false(dist_wire_str_eq(dist_wire_map_get(r, "s"), "hii"));
    assert_true(dist_wire_str_eq(dist_wire_map_get(r, "e"), ""));
    assert_false(dist_wire_str_eq(dist_wire_map_get(r, "b"), "\0\1"));
    assert_false(dist_wire_str_eq(NULL, "hi"));
    assert_false(dist_wire_str_eq(dist_wire_map_get(r, "s"), NULL));
    dist_wire_msg_destroy(&m);
}

static void test_numbers(void **state)
{
    (void)state;
    dist_wire_msg_t *m = s_sample();
    const msgpack_object *r = dist_wire_msg_root(m);
    uint64_t u = 99;
    int64_t i = 99;
    double f = 99;
    assert_int_equal(dist_wire_get_u64(dist_wire_map_get(r, "big"), &u), 0);
    assert_true(u == UINT64_MAX);
    u = 99;
    assert_int_equal(dist_wire_get_u64(dist_wire_map_get(r, "n"), &u), DIST_EPROTO);
    assert_int_equal(dist_wire_get_u64(dist_wire_map_get(r, "f"), &u), DIST_EPROTO);
    assert_int_equal(dist_wire_get_u64(dist_wire_map_get(r, "s"), &u), DIST_EPROTO);
    assert_int_equal(dist_wire_get_u64(dist_wire_map_get(r, "t"), &u), DIST_EPROTO);
    assert_int_equal(u, 99); /* untouched on failure */

    assert_int_equal(dist_wire_get_i64(dist_wire_map_get(r, "n"), &i), 0);
    assert_int_equal(i, -3);
    assert_int_equal(dist_wire_get_i64(dist_wire_map_get(r, "u"), &i), 0);
    assert_int_equal(i, 7);
    i = 99;
    assert_int_equal(dist_wire_get_i64(dist_wire_map_get(r, "big"), &i), DIST_EPROTO);
    assert_int_equal(dist_wire_get_i64(dist_wire_map_get(r, "f"), &i), DIST_EPROTO);
    assert_int_equal(dist_wire_get_i64(NULL, &i), DIST_EPROTO);
    assert_int_equal(i, 99);

    assert_int_equal(dist_wire_get_f64(dist_wire_map_get(r, "f"), &f), 0);
    assert_true(f == 0.5);
    assert_int_equal(dist_wire_get_f64(dist_wire_map_get(r, "f32"), &f), 0);
    assert_true(f == 1.5);
    assert_int_equal(dist_wire_get_f64(dist_wire_map_get(r, "n"), &f), 0);
    assert_true(f == -3.0);
    assert_int_equal(dist_wire_get_f64(dist_wire_map_get(r, "big"), &f), 0);
    assert_true(f == 18446744073709551616.0);
    f = 99;
    assert_int_equal(dist_wire_get_f64(dist_wire_map_get(r, "t"), &f), DIST_EPROTO);
    assert_int_equal(dist_wire_get_f64(dist_wire_map_get(r, "z"), &f), DIST_EPROTO);
    assert_int_equal(dist_wire_get_f64(NULL, &f), DIST_EPROTO);
    assert_true(f == 99);

    /* INT64_MIN and INT64_MAX exactly. */
    int64_t v;
    msgpack_object o = { .type = MSGPACK_OBJECT_NEGATIVE_INTEGER, .via.i64 = INT64_MIN };
    assert_int_equal(dist_wire_get_i64(&o, &v), 0);
    assert_true(v == INT64_MIN);
    o = (msgpack_object){ .type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = INT64_MAX };
    assert_int_equal(dist_wire_get_i64(&o, &v), 0);
    assert_true(v == INT64_MAX);
    o.via.u64 = (uint64_t)INT64_MAX + 1;
    assert_int_equal(dist_wire_get_i64(&o, &v), DIST_EPROTO);
    dist_wire_msg_destroy(&m);
}

static void test_bool_str_bin(void **state)
{
    (void)state;
    dist_wire_msg_t *m = s_sample();
    const msgpack_object *r = dist_wire_msg_root(m);
    bool t = false;
    assert_int_equal(dist_wire_get_bool(dist_wire_map_get(r, "t"), &t), 0);
    assert_true(t);
    assert_int_equal(dist_wire_get_bool(dist_wire_map_get(r, "z"), &t), DIST_EPROTO);
    assert_int_equal(dist_wire_get_bool(dist_wire_map_get(r, "u"), &t), DIST_EPROTO);
    assert_int_equal(dist_wire_get_bool(NULL, &t), DIST_EPROTO);

    const char *s = NULL;
    size_t n = 99;
    assert_int_equal(dist_wire_get_str(dist_wire_map_get(r, "e"), &s, &n), 0);
    assert_int_equal(n, 0);
    assert_non_null(s); /* msgpack-c stores NULL for an empty str; we never return it */
    const void *eb = NULL;
    dist_wire_msg_t *e = dist_wire_msg_decode("\xc4\x00", 2, NULL, NULL);
    assert_int_equal(dist_wire_get_bin(dist_wire_msg_root(e), &eb, &n), 0);
    assert_int_equal(n, 0);
    assert_non_null(eb);
    dist_wire_msg_destroy(&e);
    assert_int_equal(dist_wire_get_str(dist_wire_map_get(r, "b"), &s, &n), DIST_EPROTO);
    assert_int_equal(dist_wire_get_str(dist_wire_map_get(r, "u"), &s, &n), DIST_EPROTO);
    assert_int_equal(dist_wire_get_str(NULL, &s, &n), DIST_EPROTO);
    const void *p = NULL;
    assert_int_equal(dist_wire_get_bin(dist_wire_map_get(r, "b"), &p, &n), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(p, "\0\1", 2);
    p = NULL;
    assert_int_equal(dist_wire_get_bin(dist_wire_map_get(r, "s"), &p, &n), DIST_EPROTO);
    assert_int_equal(dist_wire_get_bin(NULL, &p, &n), DIST_EPROTO);
    assert_null(p);
    assert_int_equal(n, 2);
    dist_wire_msg_destroy(&m);
}

static void test_array_and_map(void **state)
{
    (void)state;
    dist_wire_msg_t *m = s_sample();
    const msgpack_object *r = dist_wire_msg_root(m);
    const msgpack_object *items = NULL;
    size_t n = 0;
    assert_int_equal(dist_wire_get_array(dist_wire_map_get(r, "a"), &items, &n), 0);
    assert_int_equal(n, 2);
    int64_t v;
    assert_int_equal(dist_wire_get_i64(&items[1], &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(dist_wire_get_array(dist_wire_map_get(r, "m"), &items, &n), DIST_EPROTO);
    assert_int_equal(dist_wire_get_array(r, &items, &n), DIST_EPROTO);
    assert_int_equal(dist_wire_get_array(NULL, &items, &n), DIST_EPROTO);

    const msgpack_object_kv *kv = NULL;
    assert_int_equal(dist_wire_get_map(r, &kv, &n), 0);
    assert_int_equal(n, 14);
    assert_true(dist_wire_str_eq(&kv[0].key, "u"));
    assert_int_equal(dist_wire_get_map(dist_wire_map_get(r, "m"), &kv, &n), 0);
    assert_int_equal(n, 0);
    assert_null(kv);
    assert_int_equal(dist_wire_get_map(dist_wire_map_get(r, "a"), &kv, &n), DIST_EPROTO);
    assert_int_equal(dist_wire_get_map(NULL, &kv, &n), DIST_EPROTO);

    /* An empty array gives NULL items. */
    dist_wire_msg_t *e = dist_wire_msg_decode("\x90", 1, NULL, NULL);
    assert_non_null(e);
    items = r;
    assert_int_equal(dist_wire_get_array(dist_wire_msg_root(e), &items, &n), 0);
    assert_int_equal(n, 0);
    assert_null(items);
    dist_wire_msg_destroy(&e);
    dist_wire_msg_destroy(&m);
}

/* --- output buffer ------------------------------------------------------ */

static void test_buf_limit_is_sticky(void **state)
{
    (void)state;
    dist_wire_buf_t *b = dist_wire_buf_new(10);
    assert_non_null(b);
    msgpack_packer *pk = dist_wire_buf_packer(b);
    size_t n = 99;
    assert_null(dist_wire_buf_data(b, &n));
    assert_int_equal(n, 0);
    assert_int_equal(msgpack_pack_array(pk, 2), 0);
    assert_int_equal(msgpack_pack_str_with_body(pk, "0123456789", 10), -1);
    assert_int_equal(dist_wire_buf_status(b), DIST_EMSGSIZE);
    /* Later writes fail even when they would fit. */
    assert_int_equal(msgpack_pack_nil(pk), -1);
    dist_wire_buf_data(b, &n);
    assert_true(n <= 10);
    dist_wire_buf_reset(b);
    assert_int_equal(dist_wire_buf_status(b), 0);
    assert_int_equal(msgpack_pack_str_with_body(pk, "012345678", 9), 0); /* exactly 10 */
    assert_int_equal(dist_wire_buf_status(b), 0);
    const void *d = dist_wire_buf_data(b, &n);
    assert_int_equal(n, 10);
    assert_int_equal(dist_wire_validate(d, n, NULL), 0);
    dist_wire_buf_destroy(&b);
    assert_null(b);
    dist_wire_buf_destroy(&b);
    dist_wire_buf_destroy(NULL);
}

static void test_buf_grows_and_releases(void **state)
{
    (void)state;
    dist_wire_buf_t *b = s_buf();
    msgpack_packer *pk = dist_wire_buf_packer(b);
    size_t n = 99;
    assert_null(dist_wire_buf_release(b, &n));
    assert_int_equal(n, 0);
    msgpack_pack_array(pk, 100000);
    for (int i = 0; i < 100000; i++)
        msgpack_pack_int(pk, i);
    assert_int_equal(dist_wire_buf_status(b), 0);
    void *bytes = dist_wire_buf_release(b, &n);
    assert_non_null(bytes);
    assert_int_equal(dist_wire_validate(bytes, n, NULL), 0);
    dist_wire_msg_t *m = dist_wire_msg_decode(bytes, n, NULL, NULL);
    free(bytes); /* the message has its own copy */
    const msgpack_object *items;
    size_t cnt;
    assert_int_equal(dist_wire_get_array(dist_wire_msg_root(m), &items, &cnt), 0);
    assert_int_equal(cnt, 100000);
    uint64_t v;
    assert_int_equal(dist_wire_get_u64(&items[99999], &v), 0);
    assert_int_equal(v, 99999);
    dist_wire_msg_destroy(&m);
    /* The buffer is empty and usable after release. */
    assert_null(dist_wire_buf_data(b, &n));
    assert_int_equal(n, 0);
    msgpack_pack_str_with_body(pk, "ok", 2);
    s_check_buf(0, b, NULL);
    dist_wire_buf_destroy(&b);
}

/* --- mutations ---------------------------------------------------------- */

/* Random byte flips, truncations and insertions of valid messages: whatever
 * the validator accepts must decode whole (s_check asserts it). A cheap,
 * deterministic cousin of fuzz/fuzz_wire.c that runs in every test run. */
static void test_mutations_never_break_the_contract(void **state)
{
    (void)state;
    dist_wire_msg_t *m = s_sample();
    size_t len;
    const uint8_t *orig = dist_wire_msg_data(m, &len);
    uint8_t buf[256];
    assert_true(len + 8 <= sizeof buf);
    uint32_t seed = 12345;
    int ok = 0, proto = 0, size = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, orig, len);
        size_t n = len;
        for (int k = 0; k < 1 + iter % 4; k++) {
            seed = seed * 1103515245u + 12345u;
            uint32_t r = seed >> 8;
            size_t pos = r % n;
            switch ((r >> 16) % 3) {
            case 0: buf[pos] = (uint8_t)(r >> 8); break;
            case 1: n = pos + 1; break;
            case 2:
                if (n < sizeof buf) {
                    memmove(buf + pos + 1, buf + pos, n - pos);
                    buf[pos] = (uint8_t)(r >> 4);
                    n++;
                }
                break;
            }
        }
        dist_wire_limits_t l = { .max_depth = 1 + iter % 3, .max_objects = 1 + iter % 40 };
        int rc = dist_wire_validate(buf, n, &l);
        assert_true(rc == 0 || rc == DIST_EPROTO || rc == DIST_EMSGSIZE);
        ok += rc == 0;
        proto += rc == DIST_EPROTO;
        size += rc == DIST_EMSGSIZE;
        if (rc == 0)
            s_check(0, buf, n, &l);
    }
    assert_true(ok > 0 && proto > 0 && size > 0);
    dist_wire_msg_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_scalar_type_round_trips),
        cmocka_unit_test(test_containers_round_trip),
        cmocka_unit_test(test_all_short_buffers_agree_with_msgpack),
        cmocka_unit_test(test_empty_and_invalid_arguments),
        cmocka_unit_test(test_reserved_type_byte),
        cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_truncated_scalars),
        cmocka_unit_test(test_truncated_str_bin_ext),
        cmocka_unit_test(test_truncated_and_lying_containers),
        cmocka_unit_test(test_depth_limit_exact),
        cmocka_unit_test(test_object_limit_exact),
        cmocka_unit_test(test_str_limit_exact),
        cmocka_unit_test(test_limits_defaults),
        cmocka_unit_test(test_validate_seq),
        cmocka_unit_test(test_decode_borrows_msg_copies),
        cmocka_unit_test(test_map_get),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_bool_str_bin),
        cmocka_unit_test(test_array_and_map),
        cmocka_unit_test(test_buf_limit_is_sticky),
        cmocka_unit_test(test_buf_grows_and_releases),
        cmocka_unit_test(test_mutations_never_break_the_contract),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

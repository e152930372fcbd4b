/* test_cli_json.c - the JSON <-> MessagePack converter of the dist command
 * line (cli/json.h): exact bytes one way, exact text the other, the
 * special forms, and malformed input. */
#include <dist.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "testutil.h"

/* Packs JSON text; returns the bytes (malloc'd) and their length. */
static char *s_pack(const char *text, size_t *len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    char err[128];
    if (cli_json_pack_text(text, &pk, err, sizeof err))
        fail_msg("'%s' did not pack: %s", text, err);
    *len = sb.size;
    return msgpack_sbuffer_release(&sb);
}

static void s_expect_bytes(const char *text, const char *want, size_t wlen)
{
    size_t len;
    char *got = s_pack(text, &len);
    if (len != wlen || memcmp(got, want, len) != 0)
        fail_msg("'%s' packed to %zu bytes, expected %zu", text, len, wlen);
    free(got);
}

/* MessagePack bytes -> JSON text. */
static char *s_text(const void *data, size_t len)
{
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    msgpack_object o;
    assert_int_equal(dist_wire_decode(data, len, NULL, &z, &o), 0);
    json_t *j = cli_json_from_msgpack(&o);
    assert_non_null(j);
    char *text = cli_json_text(j, 0);
    json_decref(j);
    msgpack_zone_destroy(&z);
    return text;
}

static void s_expect_text(const void *data, size_t len, const char *want)
{
    char *got = s_text(data, len);
    if (strcmp(got, want) != 0)
        fail_msg("got %s, expected %s", got, want);
    free(got);
}

/* JSON -> MessagePack -> JSON gives `want` back. */
static void s_round(const char *text, const char *want)
{
    size_t len;
    char *bytes = s_pack(text, &len);
    s_expect_text(bytes, len, want ? want : text);
    free(bytes);
}

static void test_json_to_msgpack_bytes(void **state)
{
    (void)state;
    s_expect_bytes("5", "\x05", 1);
    s_expect_bytes("-1", "\xff", 1);
    s_expect_bytes("null", "\xc0", 1);
    s_expect_bytes("true", "\xc3", 1);
    s_expect_bytes("false", "\xc2", 1);
    s_expect_bytes("300", "\xcd\x01\x2c", 3);
    s_expect_bytes("-9223372036854775808", "\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9);
    /* Unsigned integers above INT64_MAX, up to 2^64-1: uint64. */
    s_expect_bytes("9223372036854775807", "\xcf\x7f\xff\xff\xff\xff\xff\xff\xff", 9);
    s_expect_bytes("9223372036854775808", "\xcf\x80\x00\x00\x00\x00\x00\x00\x00", 9);
    s_expect_bytes("18446744073709551615", "\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9);
    s_expect_bytes("[18446744073709551615,1]", "\x92\xcf\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11);
    s_expect_bytes("{\"n\":18446744073709551615}",
                   "\x81\xa1n\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 12);
    /* ... not inside strings, nor as reals. */
    s_expect_bytes("\"18446744073709551615\"", "\xb4" "18446744073709551615", 21);
    s_expect_bytes("1.8446744073709551615e19", "\xcb\x43\xf0\x00\x00\x00\x00\x00\x00", 9);
    s_expect_bytes("2.5", "\xcb\x40\x04\x00\x00\x00\x00\x00\x00", 9);
    s_expect_bytes("\"x\"", "\xa1x", 2);
    s_expect_bytes("\"a\\u0000b\"", "\xa3" "a\0b", 4);
    s_expect_bytes("[]", "\x90", 1);
    s_expect_bytes("[1,[2]]", "\x92\x01\x91\x02", 4);
    s_expect_bytes("{}", "\x80", 1);
    s_expect_bytes("{\"a\":1}", "\x81\xa1" "a\x01", 4);
    /* The special forms. */
    s_expect_bytes("{\"$bin\":\"AAEC\"}", "\xc4\x03\x00\x01\x02", 5);
    s_expect_bytes("{\"$bin\":\"\"}", "\xc4\x00", 2);
    s_expect_bytes("{\"$ext\":5,\"data\":\"AQ==\"}", "\xd4\x05\x01", 3);
    s_expect_bytes("{\"$ext\":-1,\"data\":\"AQI=\"}", "\xd5\xff\x01\x02", 4);
    /* ... which are ordinary maps when anything is off. */
    s_expect_bytes("{\"$bin\":\"@@@@\"}", "\x81\xa4$bin\xa4@@@@", 11);
    s_expect_bytes("{\"$bin\":5}", "\x81\xa4$bin\x05", 7);
    s_expect_bytes("{\"$ext\":300,\"data\":\"AQ==\"}",
                   "\x82\xa4$ext\xcd\x01\x2c\xa4" "data\xa4" "AQ==", 19);
}

static void test_json_errors(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    char err[128];
    const char *bad[] = { "hello", "[1,", "1 2", "", "{\"a\"}", "'x'", "123456789012345678901234",
                          "18446744073709551616", "-9223372036854775809", "[99999999999999999999]",
                          "1e999", "[1,]" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err[0] = 0;
        if (cli_json_pack_text(bad[i], &pk, err, sizeof err) == 0)
            fail_msg("'%s' was accepted", bad[i]);
        assert_true(strlen(err) > 0);
    }
    msgpack_sbuffer_destroy(&sb);
}

static void test_msgpack_to_json(void **state)
{
    (void)state;
    s_round("5", NULL);
    s_round("-3", NULL);
    s_round("0.1", NULL);
    s_round("2.5", NULL);
    s_round("1e300", NULL);
    s_round("[0.1,0.2,1.5]", NULL);
    s_round("1.0", NULL);
    s_round("true", NULL);
    s_round("null", NULL);
    s_round("\"caf\\u00e9\"", "\"café\"");
    s_round("\"a\\u0000b\"", NULL);
    s_round("[1,[2,{\"a\":3}]]", NULL);
    s_round("{\"$bin\":\"AAEC\"}", NULL);
    s_round("{\"$ext\":5,\"data\":\"AQ==\"}", NULL);
    s_round("{\"b\":1,\"a\":2}", NULL); /* order kept */

    /* Unsigned beyond int64: its exact digits. NaN and infinities: null. */
    s_expect_text("\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9, "18446744073709551615");
    s_expect_text("\x92\xcf\x80\x00\x00\x00\x00\x00\x00\x00\xa1x", 12, "[9223372036854775808,\"x\"]");
    s_round("[18446744073709551615,{\"a\":18446744073709551614}]", NULL);
    s_expect_text("\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", 9, "null");
    s_expect_text("\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00", 9, "null");
    s_expect_text("\xcb\xff\xf0\x00\x00\x00\x00\x00\x00", 9, "null");
    s_expect_text("\xca\x3f\xc0\x00\x00", 5, "1.5"); /* float32 */
    s_expect_text("\xca\x3d\xcc\xcc\xcd", 5, "0.10000000149011612"); /* 0.1f, widened */
    /* Map keys that are not strings: their JSON text. */
    s_expect_text("\x83\x01\xa1" "a\xc0\x02\x91\x01\x03", 9, "{\"1\":\"a\",\"null\":2,\"[1]\":3}");
    /* Of repeated keys, and of keys that print alike, the first wins. */
    s_expect_text("\x82\xa1k\x01\xa1k\x02", 7, "{\"k\":1}");
    s_expect_text("\x82\x01\xa1" "a\xa1" "1\xa1" "b", 8, "{\"1\":\"a\"}");
    /* A bin key is the text of its marked form; a NUL in a str key stays. */
    s_expect_text("\x81\xc4\x01\x01\xc3", 5, "{\"{\\\"$bin\\\":\\\"AQ==\\\"}\":true}");
    s_expect_text("\x81\xa3" "a\0b\x01", 6, "{\"a\\u0000b\":1}");
    /* Invalid UTF-8 becomes U+FFFD, in values and keys. */
    s_expect_text("\xa3" "a\xff" "b", 4, "\"a\xef\xbf\xbd" "b\"");
    s_expect_text("\xa2\xc0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\""); /* overlong NUL */
    /* A surrogate. */
    s_expect_text("\xa3\xed\xa0\x80", 4, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    s_expect_text("\x81\xa1\xfe\x01", 4, "{\"\xef\xbf\xbd\":1}");
    s_expect_text("\xc4\x00", 2, "{\"$bin\":\"\"}");
    s_expect_text("\xc7\x03\x7f" "abc", 6, "{\"$ext\":127,\"data\":\"YWJj\"}");
    s_expect_text("\x90", 1, "[]");
    s_expect_text("\x80", 1, "{}");

    /* Indented output for status --json. */
    json_t *j = json_pack("{s:i}", "a", 1);
    char *t = cli_json_text(j, JSON_INDENT(2));
    assert_string_equal(t, "{\n  \"a\": 1\n}");
    free(t);
    json_decref(j);
}

static void test_base64(void **state)
{
    (void)state;
    static const char *const plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
    static const char *const enc[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
                                       "Zm9vYmFy" };
    for (size_t i = 0; i < 7; i++) {
        char *e = cli_base64_encode(plain[i], strlen(plain[i]));
        assert_string_equal(e, enc[i]);
        free(e);
        uint8_t *d;
        size_t n;
        assert_int_equal(cli_base64_decode(enc[i], strlen(enc[i]), &d, &n), 0);
        assert_int_equal(n, strlen(plain[i]));
        assert_memory_equal(d, plain[i], n);
        free(d);
    }
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    char *e = cli_base64_encode(all, sizeof all);
    uint8_t *d;
    size_t n;
    assert_int_equal(cli_base64_decode(e, strlen(e), &d, &n), 0);
    assert_int_equal(n, 256);
    assert_memory_equal(d, all, 256);
    free(d);
    free(e);
    static const char *const bad[] = { "abc", "a===", "ab=c", "@@@@", "Zg==Zg==", "Z===" };
    for (size_t i = 0; i < 6; i++) {
        d = (uint8_t *)"x";
        assert_int_equal(cli_base64_decode(bad[i], strlen(bad[i]), &d, &n), -1);
        assert_null(d);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_to_msgpack_bytes),
        cmocka_unit_test(test_json_errors),
        cmocka_unit_test(test_msgpack_to_json),
        cmocka_unit_test(test_base64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*  json.c - JSON <-> MessagePack for the dist command line (see json.h).
 *  jansson parses and prints; this file only walks the two trees.
 */
#include "json.h"

#include <errno.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- base64 ------------------------------------------------------------- */

static const char s_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *cli_base64_encode(const void *data, size_t len)
{
    const uint8_t *p = data;
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = s_b64[v >> 18];
        out[o++] = s_b64[(v >> 12) & 63];
        out[o++] = s_b64[(v >> 6) & 63];
        out[o++] = s_b64[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
        out[o++] = s_b64[v >> 18];
        out[o++] = s_b64[(v >> 12) & 63];
        out[o++] = i + 1 < len ? s_b64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = 0;
    return out;
}

static int s_b64_value(char c)
{
    const char *p = c ? strchr(s_b64, c) : NULL;
    return p ? (int)(p - s_b64) : -1;
}

int cli_base64_decode(const char *s, size_t len, uint8_t **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    if (len % 4)
        return -1;
    uint8_t *buf = malloc(len / 4 * 3 + 1);
    if (!buf)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad || (v[k] = s_b64_value(s[i + k])) < 0) {
                free(buf);
                return -1;
            }
        }
        uint32_t x =
            (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        buf[o++] = (uint8_t)(x >> 16);
        if (pad < 2)
            buf[o++] = (uint8_t)(x >> 8);
        if (pad < 1)
            buf[o++] = (uint8_t)x;
    }
    *out = buf;
    *outlen = o;
    return 0;
}

/* ---- JSON -> MessagePack ---------------------------------------------------- */

static int s_err(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
    return -1;
}

/* JSON has one number type and jansson keeps integers in int64, so an
 * unsigned integer above INT64_MAX (up to 2^64-1, MessagePack's uint64)
 * travels through jansson as a string behind this prefix: an object
 * {S_U64_KEY: "digits"} on the way in, a string S_U64_TAG "digits" on the
 * way out, turned back into bare digits by cli_json_text. The control
 * character keeps both apart from anything a user writes. */
#define S_U64_KEY "\001u64"
#define S_U64_TAG "\001u64:"

/* A copy of text[0..len) in which every integer token above INT64_MAX
 * that fits in a uint64 is written {S_U64_KEY: "digits"}; NULL when there
 * is none (or no memory: jansson then reports the number as too big). */
static char *s_wrap_big_uints(const char *text, size_t len)
{
    char *out = NULL;
    size_t olen = 0, ocap = 0, copied = 0;
    bool in_str = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = false;
            continue;
        }
        if (c == '"') {
            in_str = true;
            continue;
        }
        if (c < '0' || c > '9' || (i > 0 && strchr("-+.eE0123456789", text[i - 1])))
            continue;
        size_t j = i;
        while (j < len && text[j] >= '0' && text[j] <= '9')
            j++;
        size_t nd = j - i;
        if (nd < 19 || nd > 20 || (j < len && strchr(".eE", text[j]))) {
            i = j - 1;
            continue;
        }
        char digits[21];
        memcpy(digits, text + i, nd);
        digits[nd] = 0;
        errno = 0;
        unsigned long long u = strtoull(digits, NULL, 10);
        if (errno == ERANGE || u <= (unsigned long long)INT64_MAX) {
            i = j - 1;
            continue;
        }
        size_t need = olen + (i - copied) + nd + 32 + (len - j);
        if (need > ocap) {
            char *grown = realloc(out, need + 1);
            if (!grown) {
                free(out);
                return NULL;
            }
            out = grown;
            ocap = need;
        }
        memcpy(out + olen, text + copied, i - copied);
        olen += i - copied;
        olen += (size_t)sprintf(out + olen, "{\"\\u0001u64\": \"%s\"}", digits);
        copied = j;
        i = j - 1;
    }
    if (!out)
        return NULL;
    memcpy(out + olen, text + copied, len - copied);
    olen += len - copied;
    out[olen] = 0;
    return out;
}

json_t *cli_json_load(const char *text, size_t len, json_error_t *je)
{
    char *wrapped = s_wrap_big_uints(text, len);
    json_t *v = wrapped ? json_loads(wrapped, JSON_DECODE_ANY | JSON_ALLOW_NUL, je)
                        : json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, je);
    free(wrapped);
    return v;
}

/* The $bin / $ext forms: 1 when packed, 0 when v is an ordinary object. */
static int s_pack_special(const json_t *v, msgpack_packer *pk)
{
    size_t n = json_object_size(v);
    json_t *b64 = NULL, *type = NULL, *big;
    if (n == 1 && json_is_string(big = json_object_get(v, S_U64_KEY))) {
        msgpack_pack_uint64(pk, strtoull(json_string_value(big), NULL, 10));
        return 1;
    }
    if (n == 1 && json_is_string(b64 = json_object_get(v, "$bin"))) {
        type = NULL;
    } else if (n == 2 && json_is_integer(type = json_object_get(v, "$ext")) &&
               json_is_string(b64 = json_object_get(v, "data"))) {
        json_int_t t = json_integer_value(type);
        if (t < -128 || t > 127)
            return 0;
    } else {
        return 0;
    }
    uint8_t *bytes;
    size_t len;
    if (cli_base64_decode(json_string_value(b64), json_string_length(b64), &bytes, &len))
        return 0;
    if (type) {
        msgpack_pack_ext(pk, len, (int8_t)json_integer_value(type));
        msgpack_pack_ext_body(pk, bytes, len);
    } else {
        msgpack_pack_bin(pk, len);
        msgpack_pack_bin_body(pk, bytes, len);
    }
    free(bytes);
    return 1;
}

int cli_json_pack(const json_t *v, msgpack_packer *pk, char *err, size_t errlen)
{
    switch (json_typeof(v)) {
    case JSON_NULL: return msgpack_pack_nil(pk);
    case JSON_TRUE: return msgpack_pack_true(pk);
    case JSON_FALSE: return msgpack_pack_false(pk);
    case JSON_INTEGER: return msgpack_pack_int64(pk, json_integer_value(v));
    case JSON_REAL: return msgpack_pack_double(pk, json_real_value(v));
    case JSON_STRING: {
        size_t n = json_string_length(v);
        msgpack_pack_str(pk, n);
        return msgpack_pack_str_body(pk, json_string_value(v), n);
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        msgpack_pack_array(pk, n);
        for (size_t i = 0; i < n; i++)
            if (cli_json_pack(json_array_get(v, i), pk, err, errlen))
                return -1;
        return 0;
    }
    case JSON_OBJECT: {
        if (s_pack_special(v, pk))
            return 0;
        msgpack_pack_map(pk, json_object_size(v));
        const char *key;
        size_t klen;
        json_t *val;
        json_object_keylen_foreach((json_t *)v, key, klen, val)
        {
            msgpack_pack_str(pk, klen);
            msgpack_pack_str_body(pk, key, klen);
            if (cli_json_pack(val, pk, err, errlen))
                return -1;
        }
        return 0;
    }
    }
    return s_err(err, errlen, "unknown JSON type");
}

int cli_json_pack_text(const char *text, msgpack_packer *pk, char *err, size_t errlen)
{
    json_error_t je;
    json_t *v = cli_json_load(text, strlen(text), &je);
    if (!v) {
        if (err && errlen)
            snprintf(err, errlen, "%s (column %d)", je.text, je.column);
        return -1;
    }
    int rc = cli_json_pack(v, pk, err, errlen);
    json_decref(v);
    return rc;
}

/* ---- MessagePack -> JSON ------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at p (1-4), or 0 when invalid. */
static size_t s_utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0) {
        len = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* A JSON string for n bytes that may not be valid UTF-8. */
static json_t *s_string(const char *s, size_t n)
{
    json_t *v = json_stringn(s ? s : "", n);
    if (v)
        return v;
    /* Invalid UTF-8: replace each bad byte by U+FFFD. */
    char *fixed = malloc(n * 3 + 1);
    if (!fixed)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = s_utf8_seq((const unsigned char *)s + i, n - i);
        if (k) {
            memcpy(fixed + o, s + i, k);
            o += k;
            i += k;
        } else {
            memcpy(fixed + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    v = json_stringn(fixed, o);
    free(fixed);
    return v;
}

static json_t *s_bytes(const char *data, size_t len, bool ext, int8_t type)
{
    char *b64 = cli_base64_encode(data, len);
    if (!b64)
        return NULL;
    json_t *v = ext ? json_pack("{s:i, s:s}", "$ext", (int)type, "data", b64)
                    : json_pack("{s:s}", "$bin", b64);
    free(b64);
    return v;
}

/* The key a map entry gets in JSON. malloc'd text and its length. */
static char *s_key(const msgpack_object *k, size_t *len)
{
    if (k->type == MSGPACK_OBJECT_STR) {
        json_t *s = s_string(k->via.str.ptr, k->via.str.size);
        char *out = NULL;
        if (s) {
            *len = json_string_length(s);
            out = malloc(*len + 1);
            if (out)
                memcpy(out, json_string_value(s), *len + 1);
            json_decref(s);
        }
        return out;
    }
    json_t *kj = cli_json_from_msgpack(k);
    char *text = kj ? cli_json_text(kj, 0) : NULL;
    json_decref(kj);
    if (text)
        *len = strlen(text);
    return text;
}

json_t *cli_json_from_msgpack(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)INT64_MAX) {
            char tag[48];
            snprintf(tag, sizeof tag, S_U64_TAG "%llu", (unsigned long long)o->via.u64);
            return json_string(tag);
        }
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return isfinite(o->via.f64) ? json_real(o->via.f64) : json_null();
    case MSGPACK_OBJECT_STR: return s_string(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: return s_bytes(o->via.bin.ptr, o->via.bin.size, false, 0);
    case MSGPACK_OBJECT_EXT: return s_bytes(o->via.ext.ptr, o->via.ext.size, true, o->via.ext.type);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; a && i < o->via.array.size; i++)
            if (json_array_append_new(a, cli_json_from_msgpack(&o->via.array.ptr[i]))) {
                json_decref(a);
                a = NULL;
            }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; m && i < o->via.map.size; i++) {
            size_t klen;
            char *key = s_key(&o->via.map.ptr[i].key, &klen);
            /* Of repeated keys (or keys that print alike) the first wins,
             * as in dist_wire_map_get and the metrics' JSON. */
            if (key && json_object_getn(m, key, klen)) {
                free(key);
                continue;
            }
            json_t *val = key ? cli_json_from_msgpack(&o->via.map.ptr[i].val) : NULL;
            if (!val || json_object_setn_new_nocheck(m, key, klen, val)) {
                json_decref(m);
                m = NULL;
            }
            free(key);
        }
        return m;
    }
    }
    return json_null();
}

/* ---- printing ------------------------------------------------------------------ */

/* The fewest significant digits (1-17) that read back as x. */
static int s_digits(double x)
{
    char buf[40];
    for (int p = 1; p < 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, x);
        if (strtod(buf, NULL) == x)
            return p;
    }
    return 17;
}

static int s_max_digits(const json_t *v)
{
    int best = 0, d;
    size_t i;
    const char *key;
    json_t *x;
    switch (json_typeof(v)) {
    case JSON_REAL: return s_digits(json_real_value(v));
    case JSON_ARRAY:
        json_array_foreach((json_t *)v, i, x)
            if ((d = s_max_digits(x)) > best)
                best = d;
        return best;
    case JSON_OBJECT:
        json_object_foreach((json_t *)v, key, x)
            if ((d = s_max_digits(x)) > best)
                best = d;
        return best;
    default: return 0;
    }
}

char *cli_json_text(const json_t *v, size_t flags)
{
    /* jansson prints every real with 17 digits (0.1 as
     * 0.10000000000000001); one precision for the whole text, the largest
     * any of its reals needs, prints the others exactly as well, since %g
     * drops trailing zeros. */
    int digits = s_max_digits(v);
    if (digits)
        flags |= JSON_REAL_PRECISION(digits);
    if (!(flags & JSON_INDENT(31)))
        flags |= JSON_COMPACT;
    char *text = json_dumps(v, flags | JSON_ENCODE_ANY);
    /* "\u0001u64:DIGITS" (a uint64 above INT64_MAX, see S_U64_TAG) -> DIGITS,
     * in place: the text only gets shorter. */
    static const char tag[] = "\"\\u0001u64:";
    char *r = text ? strstr(text, tag) : NULL;
    if (!r)
        return text;
    char *w = r;
    while (r && *r) {
        char *hit = strstr(r, tag);
        if (!hit) {
            memmove(w, r, strlen(r) + 1);
            break;
        }
        memmove(w, r, (size_t)(hit - r));
        w += hit - r;
        r = hit + sizeof tag - 1;
        while (*r >= '0' && *r <= '9')
            *w++ = *r++;
        if (*r == '"')
            r++;
        *w = 0;
    }
    return text;
}

/*  mpjson.c - MessagePack to JSON through jansson (see mpjson_internal.h
 *  for the mapping). jansson builds and serializes the JSON; this file only
 *  decides what each MessagePack value becomes, and makes strings valid
 *  UTF-8 first, since jansson refuses anything else.
 */
#include "mpjson_internal.h"
#include "utf8_internal.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t dist__base64(const void *p, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *u = p;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)u[i] << 16 | (uint32_t)u[i + 1] << 8 | u[i + 2];
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = tab[(v >> 6) & 63];
        out[o++] = tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)u[i] << 16 | (i + 1 < n ? (uint32_t)u[i + 1] << 8 : 0);
        out[o++] = tab[v >> 18];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = 0;
    return o;
}

static json_t *s_base64(const void *p, size_t n)
{
    char *b = malloc(4 * ((n + 2) / 3) + 1);
    if (!b)
        return NULL;
    size_t len = dist__base64(p, n, b);
    json_t *j = json_stringn(b, len);
    free(b);
    return j;
}

/* A str as a JSON string. jansson checks the UTF-8 itself; only a string
 * it refuses is copied and cleaned (msgpack-c stores NULL for an empty str). */
static json_t *s_string(const char *p, size_t n)
{
    if (n == 0)
        return json_string("");
    json_t *j = json_stringn(p, n);
    if (j)
        return j;
    char *t = malloc(3 * n + 1);
    if (!t)
        return NULL;
    size_t len = dist__utf8_clean(p, n, false, t);
    j = json_stringn(t, len);
    free(t);
    return j;
}

/* A map key as a NUL-terminated UTF-8 string, malloc'd: jansson's object
 * keys are C strings, so a NUL inside one becomes U+FFFD. */
static char *s_key(const msgpack_object *k)
{
    if (k->type == MSGPACK_OBJECT_STR) {
        size_t n = k->via.str.size;
        char *t = malloc(3 * n + 1);
        if (t)
            dist__utf8_clean(n ? k->via.str.ptr : "", n, true, t);
        return t;
    }
    json_t *j = dist__mp_to_json(k);
    char *t = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(j);
    return t;
}

static json_t *s_map(const msgpack_object *o)
{
    json_t *obj = json_object();
    if (!obj)
        return NULL;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        char *key = s_key(&kv->key);
        if (!key)
            goto fail;
        if (json_object_get(obj, key)) { /* a repeated key: the first wins */
            free(key);
            continue;
        }
        json_t *v = dist__mp_to_json(&kv->val);
        int rc = v ? json_object_set_new(obj, key, v) : -1;
        free(key);
        if (rc != 0)
            goto fail;
    }
    return obj;
fail:
    json_decref(obj);
    return NULL;
}

json_t *dist__mp_to_json(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > INT64_MAX)
            return json_real((double)o->via.u64);
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: {
        json_t *j = json_real(o->via.f64); /* NULL for NaN and infinities */
        return j ? j : json_null();
    }
    case MSGPACK_OBJECT_STR:
        return s_string(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN:
        return s_base64(o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_EXT: {
        json_t *obj = json_object();
        if (!obj || json_object_set_new(obj, "ext_type", json_integer(o->via.ext.type)) != 0 ||
            json_object_set_new(obj, "data", s_base64(o->via.ext.ptr, o->via.ext.size)) != 0) {
            json_decref(obj);
            return NULL;
        }
        return obj;
    }
    case MSGPACK_OBJECT_ARRAY: {
        json_t *arr = json_array();
        for (uint32_t i = 0; arr && i < o->via.array.size; i++) {
            if (json_array_append_new(arr, dist__mp_to_json(&o->via.array.ptr[i])) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        }
        return arr;
    }
    case MSGPACK_OBJECT_MAP:
        return s_map(o);
    }
    return json_null();
}

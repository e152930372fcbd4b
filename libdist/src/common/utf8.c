/*  utf8.c - UTF-8 checks and repair, for text that leaves libdist as JSON
 *  (log lines, the metrics endpoint, `dist status --json`). Part of the
 *  local layer: no dependency beyond libc.
 */
#include "utf8_internal.h"

#include <stdint.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at s[0..n), n >= 1, or 0 when it is
 * not one (RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF). */
static size_t s_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    uint32_t cp, min;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

bool dist__utf8_ok(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] == 0)
            return false;
        if (u[i] < 0x80) { /* the common case: ASCII, one byte at a time */
            i++;
            continue;
        }
        size_t k = s_utf8_seq(u + i, n - i);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

size_t dist__utf8_clean(const char *s, size_t n, bool no_nul, char *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = s_utf8_seq(u + i, n - i);
        if (k && !(no_nul && u[i] == 0)) {
            memcpy(out + o, u + i, k);
            o += k, i += k;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3); /* U+FFFD REPLACEMENT CHARACTER */
            o += 3, i++;
        }
    }
    out[o] = 0;
    return o;
}

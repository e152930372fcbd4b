/*  utf8_internal.h - valid UTF-8 for text that becomes JSON (utf8.c). */
#ifndef DIST_UTF8_INTERNAL_H_INCLUDED
#define DIST_UTF8_INTERNAL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

/* Copies s[0..n) to out as valid UTF-8: each byte of an invalid or
 * truncated sequence (overlongs, surrogates and code points above U+10FFFF
 * included) becomes U+FFFD, and so does NUL when no_nul is set. out must
 * hold 3 * n + 1 bytes; the result is NUL-terminated. Returns its length. */
size_t dist__utf8_clean(const char *s, size_t n, bool no_nul, char *out);

/* True when s[0..n) is valid UTF-8 without NUL (no copy needed). */
bool dist__utf8_ok(const char *s, size_t n);

#endif

/*  log.c - log levels, the formatting helper components log through, and
 *  the line format the programs write (text, or JSON for log shippers). */
#include "dist/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log_internal.h"
#include "utf8_internal.h"

#define S_LINE_MAX 4096

static const char *const s_names[] = { "error", "warn", "info", "debug" };

const char *dist_log_level_name(dist_log_level_t level)
{
    return (unsigned)level < 4 ? s_names[level] : "?";
}

int dist_log_level_parse(const char *name)
{
    for (int i = 0; i < 4 && name; i++)
        if (strcmp(name, s_names[i]) == 0)
            return i;
    if (name && strcmp(name, "warning") == 0)
        return DIST_LOG_WARN;
    return -1;
}

void dist__log(const dist__logger_t *lg, dist_log_level_t level, const char *fmt, ...)
{
    if (!lg->fn || level > lg->level)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    lg->fn(level, lg->component, line, lg->userdata);
}

int dist_log_format_parse(const char *name)
{
    if (name && strcmp(name, "text") == 0)
        return DIST_LOG_FORMAT_TEXT;
    if (name && strcmp(name, "json") == 0)
        return DIST_LOG_FORMAT_JSON;
    return -1;
}

/* Appends s as the inside of a JSON string to out[*n..cap), stopping
 * before a character that would not fit whole (with room kept for the
 * closing of the object); s is valid UTF-8 without NUL. */
static void s_json_str(char *out, size_t *n, size_t cap, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        const char *e = NULL;
        size_t len = 1;
        if (c == '"')
            e = "\\\"";
        else if (c == '\\')
            e = "\\\\";
        else if (c == '\n')
            e = "\\n";
        else if (c == '\t')
            e = "\\t";
        else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            e = esc;
        }
        if (e)
            len = strlen(e);
        else if (c >= 0x80) /* a whole UTF-8 sequence, never cut inside */
            len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
        if (*n + len + 64 > cap) /* room for the fields and the closing */
            return;
        memcpy(out + *n, e ? e : s, len);
        *n += len;
        if (!e)
            s += len - 1;
    }
}

void dist_log_write(FILE *f, dist_log_format_t format, dist_log_level_t level,
                    const char *component, const char *msg, const char *program)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char when[96];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ts.tv_nsec / 1000000));
    if (!component)
        component = "?";
    if (!msg)
        msg = "";
    char line[S_LINE_MAX];
    if (format != DIST_LOG_FORMAT_JSON) {
        int k = snprintf(line, sizeof line, "%s %-5s %s: %s\n", when, dist_log_level_name(level),
                         component, msg);
        if (k < 0)
            return;
        if ((size_t)k >= sizeof line)
            line[sizeof line - 2] = '\n';
        fputs(line, f);
        fflush(f);
        return;
    }
    /* Strings from peers end up in messages: make them valid UTF-8 first,
     * or a shipper's JSON parser would drop the line. */
    size_t ml = strnlen(msg, S_LINE_MAX), cl = strnlen(component, 64);
    size_t pl = program ? strnlen(program, 64) : 0;
    char *m = malloc(3 * ml + 1), *c = malloc(3 * cl + 1), *p = malloc(3 * pl + 1);
    if (!m || !c || !p) {
        free(m), free(c), free(p);
        return;
    }
    dist__utf8_clean(msg, ml, true, m);
    dist__utf8_clean(component, cl, true, c);
    if (program)
        dist__utf8_clean(program, pl, true, p);
    size_t n = 0;
    n += (size_t)snprintf(line, sizeof line, "{\"time\":\"%s\",\"level\":\"%s\",\"component\":\"",
                          when, dist_log_level_name(level));
    s_json_str(line, &n, sizeof line, c);
    n += (size_t)snprintf(line + n, sizeof line - n, "\",\"message\":\"");
    s_json_str(line, &n, sizeof line - 200, m);
    n += (size_t)snprintf(line + n, sizeof line - n, "\",\"fields\":{");
    if (program) {
        n += (size_t)snprintf(line + n, sizeof line - n, "\"program\":\"");
        s_json_str(line, &n, sizeof line - 40, p);
        n += (size_t)snprintf(line + n, sizeof line - n, "\",");
    }
    n += (size_t)snprintf(line + n, sizeof line - n, "\"pid\":%ld}}\n", (long)getpid());
    free(m), free(c), free(p);
    if (n >= sizeof line)
        return; /* cannot happen: every part above kept room for the rest */
    fwrite(line, 1, n, f);
    fflush(f);
}

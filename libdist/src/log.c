/*  log.c - log levels, and the formatting helper components log through. */
#include "dist/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log_internal.h"

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

/*  log_internal.h - how components log: a logger holds the user's callback,
 *  the most verbose level wanted, and the component name. */
#ifndef DIST_LOG_INTERNAL_H_INCLUDED
#define DIST_LOG_INTERNAL_H_INCLUDED

#include "dist/log.h"

typedef struct {
    dist_log_fn fn;          /* NULL: silent */
    void *userdata;
    dist_log_level_t level;
    const char *component;   /* static */
} dist__logger_t;

/* Formats one line (truncated to 1 KiB) and passes it to the callback when
 * the level is wanted. Cheap when silent. */
void dist__log(const dist__logger_t *lg, dist_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif

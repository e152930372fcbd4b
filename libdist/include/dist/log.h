/*  dist/log.h - how libdist reports what happens inside a master, a worker
 *  or a client.
 *
 *  The library is silent unless given a log callback. Programs pass one
 *  that prints a line per event (dist-master, dist-worker and dist do, with
 *  a timestamp, the level and the component). The callback may be called
 *  from the component's own thread (and, for a master with a metrics
 *  endpoint, from that endpoint's HTTP thread too); it must not call back
 *  into the component.
 */
#ifndef DIST_LOG_H_INCLUDED
#define DIST_LOG_H_INCLUDED

#include <stdio.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    DIST_LOG_ERROR = 0,
    DIST_LOG_WARN = 1,
    DIST_LOG_INFO = 2,
    DIST_LOG_DEBUG = 3,
} dist_log_level_t;

/* component: "master", "worker", "client", ... (static string). msg: one
 * line without a trailing newline, valid during the call. */
typedef void (*dist_log_fn)(dist_log_level_t level, const char *component, const char *msg,
                            void *userdata);

/* "error", "warn", "info", "debug". */
DIST_EXPORT const char *dist_log_level_name(dist_log_level_t level);

/* Parses a level name (as above); -1 when unknown. */
DIST_EXPORT int dist_log_level_parse(const char *name);

/* How the programs write a log line (--log-format). */
typedef enum {
    DIST_LOG_FORMAT_TEXT = 0, /* 2026-01-02T03:04:05.678Z info  master: message */
    DIST_LOG_FORMAT_JSON = 1, /* one JSON object per line, for log shippers */
} dist_log_format_t;

/* Parses "text" or "json"; -1 when unknown. */
DIST_EXPORT int dist_log_format_parse(const char *name);

/* Writes one event as one line to f, with the current UTC time, in one
 * write so that lines from several threads do not interleave. Text: "TIME
 * LEVEL COMPONENT: MSG". JSON (docs/OBSERVABILITY.md): {"time": "...Z",
 * "level": "info", "component": "...", "message": "...", "fields":
 * {"program": PROGRAM, "pid": N}} with invalid UTF-8 replaced by U+FFFD
 * and control characters escaped. program may be NULL (left out). A line
 * longer than 4 KiB is cut (the JSON stays valid). Thread-safe. */
DIST_EXPORT void dist_log_write(FILE *f, dist_log_format_t format, dist_log_level_t level,
                                const char *component, const char *msg, const char *program);

#ifdef __cplusplus
}
#endif

#endif

/*  dist/common.h - definitions shared by every libdist header.
 *
 *  The export macro, the library version and the timeout convention. Every
 *  blocking call in libdist takes `int timeout_ms`: DIST_FOREVER (-1) waits
 *  without bound, 0 polls once and returns at once, a positive value is an
 *  upper bound in milliseconds measured on CLOCK_MONOTONIC.
 */
#ifndef DIST_COMMON_H_INCLUDED
#define DIST_COMMON_H_INCLUDED

#include <stdint.h>

#if defined(DIST_STATIC_DEFINE)
#  define DIST_EXPORT
#elif defined(__GNUC__)
#  define DIST_EXPORT __attribute__((visibility("default")))
#else
#  define DIST_EXPORT
#endif

#define DIST_VERSION_MAJOR 0
#define DIST_VERSION_MINOR 1
#define DIST_VERSION_PATCH 0
#define DIST_VERSION_STRING "0.1.0"

/* The master's endpoint when neither an option nor $DIST_MASTER names one
 * (and the master's default bind). */
#define DIST_DEFAULT_ENDPOINT "tcp://127.0.0.1:5555"

/* Wait without bound (for every `timeout_ms` parameter). */
#define DIST_FOREVER (-1)

/* The largest message a master, worker or client accepts unless told
 * otherwise (their max_message options and the programs' --max-message),
 * and the range the programs accept for it. A worker's pool takes the
 * worker's limit, so an argument the master accepts reaches the task. */
#define DIST_MAX_MESSAGE_DEFAULT ((size_t)64 << 20)
#define DIST_MAX_MESSAGE_MIN ((size_t)1 << 10)
#define DIST_MAX_MESSAGE_MAX ((size_t)1 << 30)

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the library that is linked (may differ from the header's
 * DIST_VERSION_STRING after an upgrade). Static string, never freed. */
DIST_EXPORT const char *dist_version(void);

/* Parses a size in bytes: decimal digits, optionally followed by K, M or G
 * (powers of 1024, either case), nothing else ("64M" is 67108864). 0, or
 * DIST_EINVAL for anything else, a sign or an overflow. For the programs'
 * size flags, so that all of them read sizes alike. */
DIST_EXPORT int dist_size_parse(const char *text, uint64_t *out);

#ifdef __cplusplus
}
#endif

#endif

/*  dist/common.h - definitions shared by every libdist header.
 *
 *  The export macro, the library version and the timeout convention. Every
 *  blocking call in libdist takes `int timeout_ms`: DIST_FOREVER (-1) waits
 *  without bound, 0 polls once and returns at once, a positive value is an
 *  upper bound in milliseconds measured on CLOCK_MONOTONIC.
 */
#ifndef DIST_COMMON_H_INCLUDED
#define DIST_COMMON_H_INCLUDED

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

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the library that is linked (may differ from the header's
 * DIST_VERSION_STRING after an upgrade). Static string, never freed. */
DIST_EXPORT const char *dist_version(void);

#ifdef __cplusplus
}
#endif

#endif

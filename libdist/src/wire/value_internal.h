/*  value_internal.h - result internals shared by the Pool and the
 *  distributed client.
 *
 *  A dist_result_t is a small header pointing at its bytes. Standalone
 *  results (DIST__R_STANDALONE) are one allocation holding the header and a
 *  copy of the bytes. Results inside a dist_results_t are elements of its
 *  array; their bytes live in message buffers the container keeps, or in a
 *  separate allocation (DIST__R_OWNS_DATA).
 */
#ifndef DIST_VALUE_INTERNAL_H_INCLUDED
#define DIST_VALUE_INTERNAL_H_INCLUDED

#include <stdatomic.h>

#include "dist/value.h"

#define DIST__R_STANDALONE 1u /* the header itself was malloc'd */
#define DIST__R_OWNS_DATA 2u  /* data was malloc'd separately */
/* Lent: an owner (a pool's async handle, a client's future) keeps the
 * result and hands it out for reading. dist_result_destroy on it only
 * NULLs the caller's pointer; the owner frees it with dist__result_free. */
#define DIST__R_LENT 4u

struct decoded;

struct dist_result {
    int status;         /* 0, or a negative DIST_E* code */
    unsigned flags;
    const char *data;   /* the packed value, or the message (NUL-terminated) */
    size_t len;         /* bytes of data, without the message's NUL */
    struct decoded *_Atomic dec; /* unpacked on first use (see dist_result_value) */
};

struct dist_results {
    size_t n;
    dist_result_t *items;
    void **bufs; /* message buffers the items point into, freed with us */
    size_t nbufs, capbufs;
};

/* The packer of an argument array, without counting a value (format.c
 * packs several), and the count of what was packed: rc is the packing's
 * result; a failure breaks the array as any failed append does. */
msgpack_packer *dist__args_pk(dist_args_t *self);
int dist__args_added(dist_args_t *self, size_t n, int rc);

/* The number of top-level items of a format string of dist/value.h, or -1
 * when it is not valid (for packing, or with `unpack` for unpacking). */
long dist__format_count(const char *fmt, bool unpack);

/* A standalone result: copies data (the value, or the message with or
 * without its NUL). NULL on ENOMEM. */
dist_result_t *dist__result_new(int status, const void *data, size_t len);

/* Frees a standalone result whether lent or not (for its owner);
 * *self_p = NULL. Accepts NULL. */
void dist__result_free(dist_result_t **self_p);

/* Marks a result as kept by its owner (DIST__R_LENT) or hands it over to
 * the caller (the flag cleared). Accepts NULL; returns self. */
dist_result_t *dist__result_lend(dist_result_t *self, bool lent);

/* Fills a header in place (no copy of data). */
void dist__result_init(dist_result_t *self, int status, const char *data, size_t len,
                       unsigned flags);

/* Releases what a header owns (decoded form, owned data), not the header. */
void dist__result_clear(dist_result_t *self);

/* A container of n empty results. NULL on ENOMEM. */
dist_results_t *dist__results_new(size_t n);

/* Hands a malloc'd buffer to the container, to be freed with it. */
int dist__results_keep(dist_results_t *self, void *buf);

#endif

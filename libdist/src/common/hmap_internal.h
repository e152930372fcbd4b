/*  hmap_internal.h - a keyed hash and an open-addressing hash index.
 *
 *  The master looks up task ids, routing ids and names chosen by its peers,
 *  so the hash is keyed (SipHash-1-3 with a random key per index owner):
 *  a peer cannot pick ids that collide on purpose and turn every lookup
 *  into a scan.
 *
 *  dist__hmap_t stores pointers to items the caller owns, with each item's
 *  64-bit hash beside it, so that probing and growing never touch the
 *  items; only a full hash match calls the equality callback. Linear
 *  probing with backward-shift deletion keeps it free of tombstones. It
 *  grows at 70 % load and shrinks below 1/8 (but not under 64 slots).
 *  Items are found by (hash, key) and removed by identity.
 *
 *  Not thread-safe: one owner at a time.
 */
#ifndef DIST_HMAP_INTERNAL_H_INCLUDED
#define DIST_HMAP_INTERNAL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t k0, k1;
} dist__hkey_t;

/* A random key (getrandom; falls back to time and addresses). */
void dist__hkey_init(dist__hkey_t *k);

/* SipHash-1-3 of p[0..n) under key k. */
uint64_t dist__hash(const dist__hkey_t *k, const void *p, size_t n);

/* true when item's key equals key[0..klen). */
typedef bool (*dist__hmap_eq_fn)(const void *item, const void *key, size_t klen);

typedef struct {
    uint64_t h;
    void *item; /* NULL: empty slot */
} dist__hslot_t;

typedef struct {
    dist__hslot_t *slots; /* cap entries; NULL while cap is 0 */
    size_t cap;           /* 0 or a power of two */
    size_t len;
    dist__hmap_eq_fn eq;
} dist__hmap_t;

void dist__hmap_init(dist__hmap_t *m, dist__hmap_eq_fn eq);

/* Frees the slots (not the items). */
void dist__hmap_fini(dist__hmap_t *m);

/* The item with this hash and key, or NULL. */
void *dist__hmap_get(const dist__hmap_t *m, uint64_t h, const void *key, size_t klen);

/* Adds an item whose key is not present yet. 0 or DIST_ENOMEM (nothing
 * changed). */
int dist__hmap_add(dist__hmap_t *m, uint64_t h, void *item);

/* Makes room for n more items now, so that the next n adds cannot fail.
 * 0 or DIST_ENOMEM. */
int dist__hmap_reserve(dist__hmap_t *m, size_t n);

/* Removes this very item (found by its hash); no-op when absent. */
void dist__hmap_del(dist__hmap_t *m, uint64_t h, const void *item);

#endif

/*  hmap.c - keyed hash and open-addressing hash index (see hmap_internal.h).
 *
 *  SipHash-1-3 rather than a plain multiplicative hash because the keys come
 *  from peers: with a secret key, flooding one probe chain takes guessing
 *  128 bits. One compression round is what Rust and Python use for hash
 *  tables; a 16-byte id costs about 20 ns.
 */
#include "hmap_internal.h"

#include <endian.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "dist/error.h"

#define MIN_CAP 64

void dist__hkey_init(dist__hkey_t *k)
{
    if (getrandom(k, sizeof *k, GRND_NONBLOCK) == (ssize_t)sizeof *k)
        return;
    /* Early boot without entropy: still different per process and run. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    k->k0 = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)k;
    k->k1 = (uint64_t)ts.tv_sec * 0xc2b2ae3d27d4eb4full ^ (uint64_t)(uintptr_t)&ts;
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1;                                                                                  \
        v1 = ROTL(v1, 13);                                                                         \
        v1 ^= v0;                                                                                  \
        v0 = ROTL(v0, 32);                                                                         \
        v2 += v3;                                                                                  \
        v3 = ROTL(v3, 16);                                                                         \
        v3 ^= v2;                                                                                  \
        v0 += v3;                                                                                  \
        v3 = ROTL(v3, 21);                                                                         \
        v3 ^= v0;                                                                                  \
        v2 += v1;                                                                                  \
        v1 = ROTL(v1, 17);                                                                         \
        v1 ^= v2;                                                                                  \
        v2 = ROTL(v2, 32);                                                                         \
    } while (0)

uint64_t dist__hash(const dist__hkey_t *k, const void *p, size_t n)
{
    const uint8_t *in = p;
    uint64_t v0 = 0x736f6d6570736575ull ^ k->k0;
    uint64_t v1 = 0x646f72616e646f6dull ^ k->k1;
    uint64_t v2 = 0x6c7967656e657261ull ^ k->k0;
    uint64_t v3 = 0x7465646279746573ull ^ k->k1;
    uint64_t b = (uint64_t)n << 56;
    size_t full = n & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m;
        memcpy(&m, in + i, 8);
        m = le64toh(m);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    for (size_t i = 0; i < (n & 7); i++)
        b |= (uint64_t)in[full + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

void dist__hmap_init(dist__hmap_t *m, dist__hmap_eq_fn eq)
{
    memset(m, 0, sizeof *m);
    m->eq = eq;
}

void dist__hmap_fini(dist__hmap_t *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->len = 0;
}

void *dist__hmap_get(const dist__hmap_t *m, uint64_t h, const void *key, size_t klen)
{
    if (!m->cap)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        const dist__hslot_t *s = &m->slots[i];
        if (!s->item)
            return NULL;
        if (s->h == h && m->eq(s->item, key, klen))
            return s->item;
    }
}

static void s_place(dist__hslot_t *slots, size_t cap, uint64_t h, void *item)
{
    size_t mask = cap - 1;
    size_t i = h & mask;
    while (slots[i].item)
        i = (i + 1) & mask;
    slots[i].h = h;
    slots[i].item = item;
}

static int s_resize(dist__hmap_t *m, size_t cap)
{
    dist__hslot_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return DIST_ENOMEM;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].item)
            s_place(slots, cap, m->slots[i].h, m->slots[i].item);
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

/* Fits `want` items under 70 % load. */
static size_t s_cap_for(size_t want)
{
    size_t cap = MIN_CAP;
    while (cap / 10 * 7 < want)
        cap *= 2;
    return cap;
}

int dist__hmap_reserve(dist__hmap_t *m, size_t n)
{
    if (n > SIZE_MAX / 4 - m->len)
        return DIST_ENOMEM;
    size_t cap = s_cap_for(m->len + n);
    return cap > m->cap ? s_resize(m, cap) : 0;
}

int dist__hmap_add(dist__hmap_t *m, uint64_t h, void *item)
{
    int rc = dist__hmap_reserve(m, 1);
    if (rc)
        return rc;
    s_place(m->slots, m->cap, h, item);
    m->len++;
    return 0;
}

void dist__hmap_del(dist__hmap_t *m, uint64_t h, const void *item)
{
    if (!m->cap)
        return;
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->slots[i].item != item) {
        if (!m->slots[i].item)
            return;
        i = (i + 1) & mask;
    }
    /* Backward shift: pull later entries of the run into the hole when
     * their home slot is not between the hole and them. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->slots[j].item; j = (j + 1) & mask) {
        size_t home = m->slots[j].h & mask;
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].item = NULL;
    m->slots[hole].h = 0;
    m->len--;
    if (m->cap > MIN_CAP && m->len < m->cap / 8)
        (void)s_resize(m, m->cap / 2); /* failing to shrink is harmless */
}

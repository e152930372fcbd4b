/*  client_idmap.c - task ids to the slots that wait for their answer.
 *
 *  Open addressing with linear probing and backward-shift deletion, so
 *  that removals leave no tombstones behind in a long-running client. The
 *  map holds pointers to slots, which hold the ids. Ids are random (the
 *  client chooses them), so a plain mix of their bits is a good hash; the
 *  master cannot add entries, only look up ids, so it cannot make the
 *  probe sequences long.
 */
#include "client_internal.h"

#include <stdlib.h>
#include <string.h>

#include "dist/error.h"

static inline size_t s_id_hash(const dist__id_t *id)
{
    /* Ids are random, but a map's ids come from one getrandom call and a
     * peer could send anything: mix both halves anyway. */
    uint64_t a, b;
    memcpy(&a, id->b, 8);
    memcpy(&b, id->b + 8, 8);
    uint64_t h = a ^ (b * 0x9e3779b97f4a7c15ull);
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return (size_t)h;
}

dist__slot_t *dist__idmap_find(const dist__idmap_t *m, const dist__id_t *id)
{
    if (!m->n)
        return NULL;
    for (size_t i = s_id_hash(id) & m->mask;; i = (i + 1) & m->mask) {
        dist__slot_t *s = m->tab[i];
        if (!s)
            return NULL;
        if (dist__id_eq(&s->id, id))
            return s;
    }
}

static void s_idmap_place(dist__slot_t **tab, size_t mask, dist__slot_t *s)
{
    size_t i = s_id_hash(&s->id) & mask;
    while (tab[i])
        i = (i + 1) & mask;
    tab[i] = s;
}

/* Makes room for `more` entries at a load of at most one half. */
int dist__idmap_reserve(dist__idmap_t *m, size_t more)
{
    size_t cap = m->tab ? m->mask + 1 : 0;
    if ((m->n + more) * 2 <= cap)
        return 0;
    size_t ncap = cap ? cap : 64;
    while ((m->n + more) * 2 > ncap)
        ncap *= 2;
    dist__slot_t **tab = calloc(ncap, sizeof *tab);
    if (!tab)
        return DIST_ENOMEM;
    for (size_t i = 0; i < cap; i++)
        if (m->tab[i])
            s_idmap_place(tab, ncap - 1, m->tab[i]);
    free(m->tab);
    m->tab = tab;
    m->mask = ncap - 1;
    return 0;
}

/* The caller reserved room first. */
void dist__idmap_put(dist__idmap_t *m, dist__slot_t *s)
{
    s_idmap_place(m->tab, m->mask, s);
    m->n++;
    s->mapped = true;
}

void dist__idmap_del(dist__idmap_t *m, dist__slot_t *s)
{
    if (!s->mapped)
        return;
    size_t i = s_id_hash(&s->id) & m->mask;
    while (m->tab[i] != s)
        i = (i + 1) & m->mask;
    /* Backward shift: move up every later entry of the cluster whose home
     * is not between the hole and itself. */
    for (size_t j = (i + 1) & m->mask; m->tab[j]; j = (j + 1) & m->mask) {
        size_t k = s_id_hash(&m->tab[j]->id) & m->mask;
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            m->tab[i] = m->tab[j];
            i = j;
        }
    }
    m->tab[i] = NULL;
    m->n--;
    s->mapped = false;
    if (m->n == 0 && m->mask >= 4096) { /* give back what a big map used */
        free(m->tab);
        m->tab = NULL;
        m->mask = 0;
    }
}

size_t dist__idmap_collect(const dist__idmap_t *m, uint32_t batch, dist__slot_t **out,
                           size_t max)
{
    size_t n = 0;
    for (size_t i = 0; m->tab && i <= m->mask && n < max; i++) {
        dist__slot_t *s = m->tab[i];
        if (s && s->state == DIST__SL_SENT && s->batch == batch)
            out[n++] = s;
    }
    return n;
}

size_t dist__idmap_all(const dist__idmap_t *m, dist__slot_t **out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; m->tab && i <= m->mask && n < max; i++)
        if (m->tab[i])
            out[n++] = m->tab[i];
    return n;
}

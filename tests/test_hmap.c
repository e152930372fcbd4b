/* test_hmap.c - the open-addressing hash index of common/hmap.c, directly.
 *
 * The caller gives each item's hash, so these tests choose hashes to put
 * items where they want them: runs that wrap from the last slot to the
 * first, deletions from the middle of such a run (the backward shift must
 * leave every remaining item reachable), growth and shrinking, and long
 * random sequences checked against a plain array, with a good hash and
 * with a bad one (many equal hashes, so the equality callback decides). */
#include <stdlib.h>
#include <string.h>

#include "hmap_internal.h"
#include "testutil.h"

#include "dist/error.h"

typedef struct {
    uint32_t key;
} item_t;

static bool s_eq(const void *item, const void *key, size_t klen)
{
    return klen == sizeof(uint32_t) && ((const item_t *)item)->key == *(const uint32_t *)key;
}

static item_t *s_get(const dist__hmap_t *m, uint64_t h, uint32_t key)
{
    return dist__hmap_get(m, h, &key, sizeof key);
}

/* The slot that holds item, or -1. */
static long s_slot_of(const dist__hmap_t *m, const void *item)
{
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].item == item)
            return (long)i;
    return -1;
}

/* The invariant of linear probing without tombstones: every item sits
 * in its home slot or after it, with no empty slot in between (else a
 * lookup would stop early). Also checks len. */
static void s_check_invariant(const dist__hmap_t *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].item)
            continue;
        n++;
        size_t mask = m->cap - 1;
        for (size_t j = m->slots[i].h & mask; j != i; j = (j + 1) & mask)
            if (!m->slots[j].item)
                fail_msg("slot %zu (home %zu) is cut off by the empty slot %zu", i,
                         (size_t)(m->slots[i].h & mask), j);
    }
    assert_int_equal(n, m->len);
}

static void test_insert_lookup_delete(void **state)
{
    (void)state;
    dist__hmap_t m;
    dist__hmap_init(&m, s_eq);
    assert_null(s_get(&m, 1, 1)); /* empty, no table yet */
    dist__hmap_del(&m, 1, &m);    /* absent: nothing happens */
    item_t a = { 1 }, b = { 2 }, c = { 3 };
    assert_int_equal(dist__hmap_add(&m, 100, &a), 0);
    assert_int_equal(dist__hmap_add(&m, 200, &b), 0);
    /* Same hash as a, another key: only the equality callback tells. */
    assert_int_equal(dist__hmap_add(&m, 100, &c), 0);
    assert_int_equal(m.len, 3);
    assert_ptr_equal(s_get(&m, 100, 1), &a);
    assert_ptr_equal(s_get(&m, 200, 2), &b);
    assert_ptr_equal(s_get(&m, 100, 3), &c);
    assert_null(s_get(&m, 100, 2)); /* b's key under a's hash */
    assert_null(s_get(&m, 300, 1));
    s_check_invariant(&m);

    dist__hmap_del(&m, 100, &a);
    assert_int_equal(m.len, 2);
    assert_null(s_get(&m, 100, 1));
    assert_ptr_equal(s_get(&m, 100, 3), &c);
    dist__hmap_del(&m, 100, &a); /* twice: no-op */
    assert_int_equal(m.len, 2);
    item_t a2 = { 1 };
    dist__hmap_del(&m, 100, &a2); /* same key, not the same item: no-op */
    assert_int_equal(m.len, 2);
    s_check_invariant(&m);
    dist__hmap_fini(&m);
    assert_null(m.slots);
    assert_int_equal(m.len, 0);
}

/* Items with the given homes in a 64-slot table, added in that order (a
 * run that wraps past slot 63; item `wrapped` lands at a low slot). Each
 * is deleted in turn from a fresh table, and every other item must still
 * be found. */
static void s_wrap_case(const unsigned *homes, int n, int wrapped)
{
    enum { MAX = 16 };
    assert_true(n <= MAX);
    for (int victim = 0; victim < n; victim++) {
        dist__hmap_t m;
        dist__hmap_init(&m, s_eq);
        item_t it[MAX];
        uint64_t h[MAX];
        for (int i = 0; i < n; i++) {
            it[i].key = (uint32_t)i;
            h[i] = ((uint64_t)(i + 1) << 32) | homes[i]; /* distinct hashes, chosen homes */
            assert_int_equal(dist__hmap_add(&m, h[i], &it[i]), 0);
        }
        assert_int_equal(m.cap, 64); /* the homes assume it */
        s_check_invariant(&m);
        assert_true(s_slot_of(&m, &it[wrapped]) < 8); /* the run did wrap */
        dist__hmap_del(&m, h[victim], &it[victim]);
        s_check_invariant(&m);
        assert_int_equal(m.len, n - 1);
        assert_int_equal(s_slot_of(&m, &it[victim]), -1);
        for (int i = 0; i < n; i++)
            if (i == victim)
                assert_null(s_get(&m, h[i], (uint32_t)i));
            else if (s_get(&m, h[i], (uint32_t)i) != &it[i])
                fail_msg("after deleting item %d (home %u), item %d (home %u) is lost", victim,
                         homes[victim], i, homes[i]);
        /* Delete the rest in another order: the table ends empty. */
        for (int i = n - 1; i >= 0; i--)
            if (i != victim)
                dist__hmap_del(&m, h[i], &it[i]);
        assert_int_equal(m.len, 0);
        for (size_t i = 0; i < m.cap; i++)
            assert_null(m.slots[i].item);
        dist__hmap_fini(&m);
    }
}

static void test_delete_in_wrapping_run(void **state)
{
    (void)state;
    /* A dense run over 60..63 and 0..5: deletions shift what follows. */
    s_wrap_case((const unsigned[]){ 60, 61, 61, 62, 63, 63, 63, 0, 0, 2 }, 10, 6);
    /* Deleting the first: the items at 63 and 0 (home 63) must stay, though
     * the hole (62) is before them and the second's index (0) below it. */
    s_wrap_case((const unsigned[]){ 62, 63, 63, 0, 2 }, 5, 2);
}

static void test_growth_and_shrink(void **state)
{
    (void)state;
    enum { N = 20000 };
    dist__hkey_t k;
    dist__hkey_init(&k);
    dist__hmap_t m;
    dist__hmap_init(&m, s_eq);
    item_t *it = calloc(N, sizeof *it);
    uint64_t *h = calloc(N, sizeof *h);
    assert_non_null(it);
    assert_non_null(h);
    size_t grew = 0, cap = 0;
    for (uint32_t i = 0; i < N; i++) {
        it[i].key = i;
        h[i] = dist__hash(&k, &i, sizeof i);
        assert_int_equal(dist__hmap_add(&m, h[i], &it[i]), 0);
        assert_int_equal(m.cap & (m.cap - 1), 0); /* a power of two */
        assert_true(m.len * 10 <= m.cap * 7);     /* at most 70 % full */
        if (m.cap != cap) {
            grew++;
            cap = m.cap;
        }
    }
    assert_true(grew >= 9); /* 64 -> 32768 at least */
    s_check_invariant(&m);
    for (uint32_t i = 0; i < N; i++)
        assert_ptr_equal(s_get(&m, h[i], i), &it[i]);
    assert_null(s_get(&m, dist__hash(&k, &(uint32_t){ N }, 4), N));

    /* Down to 100 items: the table shrinks, not below 64 slots, and keeps
     * what is left. */
    size_t big = m.cap;
    for (uint32_t i = 100; i < N; i++)
        dist__hmap_del(&m, h[i], &it[i]);
    assert_int_equal(m.len, 100);
    assert_true(m.cap < big);
    assert_true(m.cap >= 64);
    s_check_invariant(&m);
    for (uint32_t i = 0; i < N; i++)
        assert_ptr_equal(s_get(&m, h[i], i), i < 100 ? &it[i] : NULL);
    for (uint32_t i = 0; i < 100; i++)
        dist__hmap_del(&m, h[i], &it[i]);
    assert_int_equal(m.len, 0);
    assert_int_equal(m.cap, 64);

    /* reserve: the next n adds never move the table. */
    assert_int_equal(dist__hmap_reserve(&m, 5000), 0);
    dist__hslot_t *slots = m.slots;
    for (uint32_t i = 0; i < 5000; i++)
        assert_int_equal(dist__hmap_add(&m, h[i], &it[i]), 0);
    assert_ptr_equal(m.slots, slots);
    assert_int_equal(dist__hmap_reserve(&m, SIZE_MAX), DIST_ENOMEM);
    assert_int_equal(m.len, 5000);
    dist__hmap_fini(&m);
    free(it);
    free(h);
}

/* Random adds, deletes and lookups over keys 0..K-1, compared with an
 * array of which keys are in. bad_hash: 16 distinct hashes, all homed in
 * the last 8 slots of a small table, so long runs wrap and equal hashes
 * abound. */
static void s_random_ops(bool bad_hash)
{
    enum { K = 3000, OPS = 200000 };
    dist__hkey_t k;
    dist__hkey_init(&k);
    dist__hmap_t m;
    dist__hmap_init(&m, s_eq);
    item_t *it = calloc(K, sizeof *it);
    bool *in = calloc(K, sizeof *in);
    assert_non_null(it);
    assert_non_null(in);
    size_t n = 0;
    for (uint32_t i = 0; i < K; i++)
        it[i].key = i;
#define H(i) (bad_hash ? (uint64_t)(56 + (i) % 16) : dist__hash(&k, &(i), sizeof(i)))
    for (int op = 0; op < OPS; op++) {
        uint32_t i = dt_rand() % (bad_hash ? 300 : K); /* a bad hash makes every op a scan */
        uint32_t r = dt_rand() % 3;
        if (r == 0 && !in[i]) {
            assert_int_equal(dist__hmap_add(&m, H(i), &it[i]), 0);
            in[i] = true;
            n++;
        } else if (r == 1 && in[i]) {
            dist__hmap_del(&m, H(i), &it[i]);
            in[i] = false;
            n--;
        } else {
            item_t *got = s_get(&m, H(i), i);
            if (got != (in[i] ? &it[i] : NULL))
                fail_msg("op %d: key %u is %s but lookup gave %p", op, i, in[i] ? "in" : "out",
                         (void *)got);
        }
        assert_int_equal(m.len, n);
        if (op % 5000 == 0) {
            s_check_invariant(&m);
            for (uint32_t j = 0; j < K; j++)
                assert_ptr_equal(s_get(&m, H(j), j), in[j] ? &it[j] : NULL);
        }
    }
#undef H
    dist__hmap_fini(&m);
    free(it);
    free(in);
}

static void test_random_against_reference(void **state)
{
    (void)state;
    dt_seed(0x5eed1234ULL);
    s_random_ops(false);
    s_random_ops(true);
}

static void test_hash_is_keyed(void **state)
{
    (void)state;
    dist__hkey_t a = { 1, 2 }, b = { 1, 3 };
    const char msg[] = "task-0001";
    uint64_t ha = dist__hash(&a, msg, sizeof msg - 1);
    assert_int_equal(ha, dist__hash(&a, msg, sizeof msg - 1)); /* deterministic */
    assert_int_not_equal(ha, dist__hash(&b, msg, sizeof msg - 1));
    assert_int_not_equal(ha, dist__hash(&a, msg, sizeof msg - 2));
    /* Every length up to two blocks, tails included, and the empty input:
     * one changed byte changes the hash. */
    unsigned char buf[17] = { 0 };
    for (size_t n = 1; n <= sizeof buf; n++) {
        uint64_t h0 = dist__hash(&a, buf, n);
        buf[n - 1] ^= 1;
        assert_int_not_equal(h0, dist__hash(&a, buf, n));
        buf[n - 1] ^= 1;
    }
    assert_int_not_equal(dist__hash(&a, "", 0), dist__hash(&b, "", 0));
    dist__hkey_t r1, r2;
    dist__hkey_init(&r1);
    dist__hkey_init(&r2);
    assert_false(r1.k0 == r2.k0 && r1.k1 == r2.k1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_lookup_delete),
        cmocka_unit_test(test_delete_in_wrapping_run),
        cmocka_unit_test(test_growth_and_shrink),
        cmocka_unit_test(test_random_against_reference),
        cmocka_unit_test(test_hash_is_keyed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

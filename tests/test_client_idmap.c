/* test_client_idmap.c - the client's map from task ids to waiting slots
 * (client/client_idmap.c), directly.
 *
 * The map hashes ids itself, so the tests learn each id's home slot from
 * the map: in an empty 64-slot table an id lands exactly in its home.
 * With that they build runs that wrap from the last slot to the first,
 * delete from the middle of them (the backward shift must keep every
 * other id reachable), grow the map, and run long random sequences
 * checked against a plain array. Ids come from a seeded PRNG
 * (DIST_TEST_SEED) so a failure can be replayed. */
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "testutil.h"

static void s_seed(void)
{
    dt_seed(0x1d3a9ULL);
}

static uint64_t s_rand(void)
{
    return (uint64_t)dt_rand() << 32 | dt_rand();
}

static void s_random_id(dist__id_t *id)
{
    uint64_t a = s_rand(), b = s_rand();
    memcpy(id->b, &a, 8);
    memcpy(id->b + 8, &b, 8);
}

static long s_slot_of(const dist__idmap_t *m, const dist__slot_t *s)
{
    for (size_t i = 0; m->tab && i <= m->mask; i++)
        if (m->tab[i] == s)
            return (long)i;
    return -1;
}

/* The home slot of id in a table of 64: where it lands in an empty one. */
static size_t s_home64(const dist__id_t *id)
{
    dist__idmap_t m = { 0 };
    dist__slot_t s = { .id = *id };
    assert_int_equal(dist__idmap_reserve(&m, 1), 0);
    assert_int_equal(m.mask, 63);
    dist__idmap_put(&m, &s);
    long at = s_slot_of(&m, &s);
    dist__idmap_del(&m, &s);
    free(m.tab);
    assert_true(at >= 0);
    return (size_t)at;
}

/* Every slot is found from its id, and no other slot is in the table. */
static void s_check(const dist__idmap_t *m, dist__slot_t *const *in, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; m->tab && i <= m->mask; i++)
        count += m->tab[i] != NULL;
    assert_int_equal(count, n);
    assert_int_equal(m->n, n);
    for (size_t i = 0; i < n; i++)
        if (dist__idmap_find(m, &in[i]->id) != in[i])
            fail_msg("slot %zu of %zu is not found from its id", i, n);
}

static void test_put_find_del(void **state)
{
    (void)state;
    s_seed();
    dist__idmap_t m = { 0 };
    dist__slot_t a = { 0 }, b = { 0 };
    s_random_id(&a.id);
    s_random_id(&b.id);
    assert_null(dist__idmap_find(&m, &a.id)); /* no table yet */
    dist__idmap_del(&m, &a);                  /* not mapped: no-op */
    assert_int_equal(dist__idmap_reserve(&m, 2), 0);
    dist__idmap_put(&m, &a);
    assert_true(a.mapped);
    assert_ptr_equal(dist__idmap_find(&m, &a.id), &a);
    assert_null(dist__idmap_find(&m, &b.id));
    dist__idmap_put(&m, &b);
    dist__idmap_del(&m, &a);
    assert_false(a.mapped);
    assert_null(dist__idmap_find(&m, &a.id));
    assert_ptr_equal(dist__idmap_find(&m, &b.id), &b);
    dist__idmap_del(&m, &a); /* twice: no-op */
    assert_int_equal(m.n, 1);
    dist__idmap_del(&m, &b);
    assert_int_equal(m.n, 0);
    free(m.tab);
}

/* Ids with the given homes in a 64-slot table, put in that order (one run
 * that wraps past slot 63); each id is deleted in turn from a fresh map
 * and every other one must still be found. */
static void s_wrap_case(const size_t *homes, int n, int wrapped)
{
    enum { MAX = 16 };
    assert_true(n <= MAX);
    dist__slot_t slots[MAX];
    memset(slots, 0, sizeof slots);
    for (int i = 0; i < n; i++) {
        int tries = 0;
        do {
            s_random_id(&slots[i].id);
            assert_true(++tries < 100000);
        } while (s_home64(&slots[i].id) != homes[i]);
    }
    for (int victim = 0; victim < n; victim++) {
        dist__idmap_t m = { 0 };
        dist__slot_t *in[MAX];
        assert_int_equal(dist__idmap_reserve(&m, (size_t)n), 0);
        assert_int_equal(m.mask, 63); /* the homes assume it */
        for (int i = 0; i < n; i++) {
            slots[i].mapped = false;
            dist__idmap_put(&m, &slots[i]);
            in[i] = &slots[i];
        }
        assert_true(s_slot_of(&m, &slots[wrapped]) < 8); /* the run did wrap */
        s_check(&m, in, (size_t)n);
        dist__idmap_del(&m, &slots[victim]);
        assert_null(dist__idmap_find(&m, &slots[victim].id));
        in[victim] = in[n - 1];
        s_check(&m, in, (size_t)n - 1);
        for (int i = 0; i < n; i++)
            dist__idmap_del(&m, &slots[i]);
        assert_int_equal(m.n, 0);
        for (size_t i = 0; i <= m.mask; i++)
            assert_null(m.tab[i]);
        free(m.tab);
    }
}

static void test_delete_in_wrapping_run(void **state)
{
    (void)state;
    s_seed();
    /* A dense run from 61 to slot 4: every deletion shifts what follows. */
    s_wrap_case((const size_t[]){ 61, 61, 62, 63, 63, 0, 0, 1 }, 8, 5);
    /* Deleting the first: the ids at 63 and 0 (home 63) must stay where
     * they are, though the hole (62) is before them and the index of the
     * second (0) is below it. */
    s_wrap_case((const size_t[]){ 62, 63, 63, 0, 2 }, 5, 2);
}

static void test_growth_and_random_ops(void **state)
{
    (void)state;
    s_seed();
    enum { K = 6000, OPS = 200000 };
    dist__slot_t *slots = calloc(K, sizeof *slots);
    dist__slot_t **in = calloc(K, sizeof *in);
    size_t *pos = calloc(K, sizeof *pos); /* index in `in` of each mapped slot */
    assert_non_null(slots);
    assert_non_null(in);
    assert_non_null(pos);
    for (int i = 0; i < K; i++)
        s_random_id(&slots[i].id);
    dist__idmap_t m = { 0 };
    size_t n = 0;
    for (int op = 0; op < OPS; op++) {
        int i = (int)(s_rand() % K);
        switch (s_rand() % 3) {
        case 0:
            if (slots[i].mapped)
                break;
            assert_int_equal(dist__idmap_reserve(&m, 1), 0);
            assert_true((m.n + 1) * 2 <= m.mask + 1); /* at most half full */
            dist__idmap_put(&m, &slots[i]);
            pos[i] = n;
            in[n++] = &slots[i];
            break;
        case 1:
            if (!slots[i].mapped)
                break;
            dist__idmap_del(&m, &slots[i]);
            in[pos[i]] = in[--n];
            pos[in[pos[i]] - slots] = pos[i];
            break;
        default:
            if (dist__idmap_find(&m, &slots[i].id) != (slots[i].mapped ? &slots[i] : NULL))
                fail_msg("op %d: slot %d is %s but the lookup disagrees", op, i,
                         slots[i].mapped ? "mapped" : "not mapped");
        }
        if (op % 10000 == 0)
            s_check(&m, in, n);
    }
    s_check(&m, in, n);

    /* All of them: the table grows to hold K at most half full; emptied,
     * a table that big is given back. */
    for (int i = 0; i < K; i++)
        if (!slots[i].mapped) {
            assert_int_equal(dist__idmap_reserve(&m, 1), 0);
            dist__idmap_put(&m, &slots[i]);
            pos[i] = n;
            in[n++] = &slots[i];
        }
    s_check(&m, in, K);
    assert_true(m.mask + 1 >= 2 * K);
    for (int i = 0; i < K; i++)
        dist__idmap_del(&m, &slots[i]);
    assert_int_equal(m.n, 0);
    assert_null(m.tab);
    free(slots);
    free(in);
    free(pos);
}

/* collect finds exactly the slots of one SUBMIT batch still waiting for
 * their ACCEPTED. */
static void test_collect(void **state)
{
    (void)state;
    s_seed();
    enum { N = 300 };
    dist__slot_t slots[N];
    memset(slots, 0, sizeof slots);
    dist__idmap_t m = { 0 };
    assert_int_equal(dist__idmap_reserve(&m, N), 0);
    size_t want = 0;
    for (int i = 0; i < N; i++) {
        s_random_id(&slots[i].id);
        slots[i].batch = (uint32_t)(i % 3);
        slots[i].state = i % 5 ? DIST__SL_SENT : DIST__SL_ACCEPTED;
        want += slots[i].batch == 1 && slots[i].state == DIST__SL_SENT;
        dist__idmap_put(&m, &slots[i]);
    }
    dist__slot_t *out[N];
    size_t got = dist__idmap_collect(&m, 1, out, N);
    assert_int_equal(got, want);
    for (size_t i = 0; i < got; i++) {
        assert_int_equal(out[i]->batch, 1);
        assert_int_equal(out[i]->state, DIST__SL_SENT);
        for (size_t j = 0; j < i; j++)
            assert_ptr_not_equal(out[i], out[j]);
    }
    assert_int_equal(dist__idmap_collect(&m, 1, out, 5), 5); /* bounded by max */
    assert_int_equal(dist__idmap_collect(&m, 7, out, N), 0);
    for (int i = 0; i < N; i++)
        dist__idmap_del(&m, &slots[i]);
    free(m.tab);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_find_del),
        cmocka_unit_test(test_delete_in_wrapping_run),
        cmocka_unit_test(test_growth_and_random_ops),
        cmocka_unit_test(test_collect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

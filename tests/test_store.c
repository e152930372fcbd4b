/* test_store.c - the master's durable store (--store FILE): what survives
 * a restart, a SIGKILL and many of them, what a full disk or an I/O error
 * does, and which files are refused at startup.
 *
 * Fake workers and clients come from fakepeer.h. Tests that kill the
 * master run the real dist-master program on an ipc:// endpoint in a
 * scratch directory, so that a restarted master is found again at the
 * same address; the others run the master in a thread of this process.
 * DIST_TEST_LOG=1 shows the in-process master's log; the programs' logs
 * are printed when a test fails. DIST_TEST_SOAK=N runs the kill test with
 * N tasks instead of 50,000.
 */
#include <czmq.h>
#include <dist.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "fakepeer.h"
#include "master_internal.h"
#include "testutil.h"

/* ---- scratch directories and files -------------------------------------------------- */

typedef struct {
    char dir[64];
    char db[256];
    char log[256];
    char ep[256];    /* ipc endpoint for a program */
    char mnt[128];   /* a tmpfs mounted by the test, or "" */
} scratch_t;

static scratch_t g_scratch;

static scratch_t *s_scratch(void)
{
    scratch_t *x = &g_scratch;
    memset(x, 0, sizeof *x);
    snprintf(x->dir, sizeof x->dir, "/tmp/dist_store_XXXXXX");
    assert_non_null(mkdtemp(x->dir));
    snprintf(x->db, sizeof x->db, "%.63s/master.db", x->dir);
    snprintf(x->log, sizeof x->log, "%.63s/master.log", x->dir);
    snprintf(x->ep, sizeof x->ep, "ipc://%.63s/master.sock", x->dir);
    return x;
}

/* Shows the program's log (when the test failed) and removes everything. */
static int s_teardown(void **state)
{
    scratch_t *x = &g_scratch;
    int rc = dt_teardown(state);
    if (x->mnt[0]) {
        umount2(x->mnt, MNT_DETACH);
        x->mnt[0] = 0;
    }
    if (x->dir[0]) {
        dt_rm_tree(x->dir);
        x->dir[0] = 0;
    }
    return rc;
}

static void s_show_log(const scratch_t *x)
{
    FILE *f = fopen(x->log, "r");
    if (!f)
        return;
    char line[1024];
    fprintf(stderr, "---- %s\n", x->log);
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fclose(f);
}

/* The number of rows of a table of the store (the master must not run). */
static long s_rows(const char *db, const char *table)
{
    sqlite3 *h;
    assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    long n = (long)sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(h);
    return n;
}

static void s_sql(const char *db, const char *sql)
{
    sqlite3 *h;
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    char *err = NULL;
    if (sqlite3_exec(h, sql, NULL, NULL, &err) != SQLITE_OK)
        fail_msg("%s: %s", sql, err);
    sqlite3_close(h);
}

/* ---- peers ------------------------------------------------------------------------------ */

static dist_master_t *s_start(const scratch_t *x, const char *name)
{
    dist_master_opts_t o = { .store = x->db, .name = name };
    return fp_start(&o);
}

/* A master "m" on the store with client "c" and worker `wname` of task t
 * (one slot), both kept alive. */
static dist_master_t *s_start_pair(const scratch_t *x, zsock_t **c, zsock_t **w,
                                   const char *wname)
{
    dist_master_t *m = s_start(x, "m");
    *c = fp_client(m, "c", NULL);
    *w = fp_worker(m, wname, 1, 1, "t");
    fp_keep_alive(*w, *c);
    return m;
}

/* SUBMIT ids [first, first + n) of task t, in one message. */
static void s_submit_range(zsock_t *c, int first, size_t n)
{
    int *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = first + (int)i;
    fp_submit(c, "t", ids, n, 0);
    free(ids);
}

/* Takes exactly n tasks from TASKS messages. */
static void s_take(zsock_t *w, fp_task_t *out, size_t n)
{
    size_t got = 0;
    while (got < n)
        got += fp_tasks(w, out + got, n - got);
}

/* An ok result whose value is "v<n>". */
static void s_answer(zsock_t *w, const fp_task_t *t)
{
    char v[32];
    snprintf(v, sizeof v, "v%d", fp_id_num(&t->id));
    fp_result(w, &t->id, t->attempt, DIST__ST_OK, v);
}

/* Proves that what the client sent before is committed: a SUBMIT of a
 * known id is answered only after the commit of its loop turn, and the
 * master handles a peer's messages in order. */
static void s_sync(zsock_t *c, int known_id)
{
    fp_submit_ok(c, "t", &known_id, 1);
}

static void s_credit(zsock_t *w, uint32_t capacity)
{
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_buf(&pk);
    msgpack_pack_map(pk, 1);
    dist__pk_kv_u64(pk, "capacity", capacity);
    fp_send(w, DIST__CMD_CREDIT, b);
}

static int s_cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* ---- restart: everything accepted and not acknowledged comes back --------------------- */

static void test_restart_keeps_everything(void **state)
{
    (void)state;
    scratch_t *x = s_scratch();
    dist_master_t *m = s_start(x, "m1");
    zsock_t *w = fp_worker(m, "w1", 1, 10, "t");
    uint64_t pending;
    zsock_t *c = fp_client(m, "c1", &pending);
    assert_int_equal(pending, 0);
    fp_keep_alive(w, c);

    s_submit_range(c, 0, 100);
    size_t rej;
    assert_int_equal(fp_accepted(c, &rej, NULL, 0), 100);
    fp_task_t got[200];
    s_take(w, got, 10);
    for (int i = 0; i < 10; i++)
        assert_int_equal(got[i].attempt, 1);
    s_credit(w, 0); /* so that no new lease replaces the answered ones */
    for (int i = 0; i < 5; i++)
        s_answer(w, &got[i]);
    fp_res_t res[8];
    fp_results(c, res, 5);
    dist__id_t acked[3] = { res[0].id, res[1].id, res[2].id };
    fp_ids_msg(c, DIST__CMD_ACK, acked, 3);
    s_sync(c, 99);

    dist__inmsg_t msg;
    fp_status(c, &msg);
    assert_true(fp_str_is(dist_wire_map_get(msg.root, "master"), "store", x->db));
    dist__inmsg_clear(&msg);
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);

    /* A new master on the same file. */
    int unacked[2], leased[5];
    for (int i = 0, k = 0; i < 5; i++) {
        bool was_acked = false;
        for (int j = 0; j < 3; j++)
            was_acked |= dist__id_eq(&got[i].id, &acked[j]);
        if (!was_acked)
            unacked[k++] = fp_id_num(&got[i].id);
    }
    for (int i = 0; i < 5; i++)
        leased[i] = fp_id_num(&got[5 + i].id);
    qsort(unacked, 2, sizeof unacked[0], s_cmp_int);
    qsort(leased, 5, sizeof leased[0], s_cmp_int);

    m = s_start(x, "m2");
    c = fp_client(m, "c1", &pending);
    assert_int_equal(pending, 2);
    fp_keep_alive(c, NULL);
    fp_results(c, res, 2);
    int back[2] = { fp_id_num(&res[0].id), fp_id_num(&res[1].id) };
    qsort(back, 2, sizeof back[0], s_cmp_int);
    assert_memory_equal(back, unacked, sizeof back);
    char want[32];
    snprintf(want, sizeof want, "v%d", fp_id_num(&res[0].id));
    assert_string_equal(res[0].text, want);
    assert_int_equal(res[0].status, DIST__ST_OK);

    /* The task name is known before any worker says HELLO again. */
    zsock_t *c2 = fp_client(m, "c2", NULL);
    fp_keep_alive(c, c2);
    int extra = 1000;
    fp_submit_ok(c2, "t", &extra, 1);

    /* The worker gets the 95 unfinished tasks and the new one; the five
     * that were leased count an attempt. */
    w = fp_worker(m, "w1", 1, 200, "t");
    fp_keep_alive(w, c);
    s_take(w, got, 96);
    int second[5], nsecond = 0;
    for (int i = 0; i < 96; i++) {
        int n = fp_id_num(&got[i].id);
        assert_true((n >= 5 && n < 100) || n == 1000);
        if (got[i].attempt == 2 && nsecond < 5)
            second[nsecond++] = n;
        else
            assert_int_equal(got[i].attempt, 1);
    }
    assert_int_equal(nsecond, 5);
    qsort(second, 5, sizeof second[0], s_cmp_int);
    assert_memory_equal(second, leased, sizeof second);
    fp_expect_none(w, 200);
    zsock_destroy(&w);
    zsock_destroy(&c);
    zsock_destroy(&c2);
    dist_master_destroy(&m);
}

/* ---- SIGKILL: accepted tasks and undelivered results survive --------------------------- */

/* dist-master on x->ep with the store, its log in x->log. */
static pid_t s_program(const scratch_t *x, const char *const *extra)
{
    const char *args[32];
    int n = 0;
    args[n++] = DIST_MASTER_BIN;
    args[n++] = "--bind";
    args[n++] = x->ep;
    args[n++] = "--store";
    args[n++] = x->db;
    args[n++] = "--heartbeat-timeout";
    args[n++] = "10000";
    args[n++] = "--log-level";
    args[n++] = "debug";
    for (; extra && *extra && n < 31; extra++)
        args[n++] = *extra;
    args[n] = NULL;
    return dt_spawn(args, &(dt_spawn_opts_t){ .out = { DT_IO_APPEND, x->log, NULL },
                                              .err = { DT_IO_STDOUT } });
}

static void s_kill9(pid_t pid)
{
    dt_signal(pid, SIGKILL);
    assert_int_equal(dt_wait(pid, 10000), 128 + SIGKILL);
}

/* After a master restart: the peer's next message gets RECONNECT. */
static void s_expect_reconnect(zsock_t *p)
{
    dist__inmsg_t m;
    assert_int_equal(dist__proto_send_empty(p, NULL, 0, DIST__CMD_HEARTBEAT), 0);
    fp_expect(p, DIST__CMD_RECONNECT, &m);
    dist__inmsg_clear(&m);
}

/* WELCOME after a HELLO, skipping the RECONNECTs that answered what the
 * peer sent while the master was down. */
static void s_expect_welcome(zsock_t *p, dist__inmsg_t *m)
{
    for (;;) {
        fp_expect_any(p, m);
        if (m->cmd != DIST__CMD_RECONNECT)
            break;
        dist__inmsg_clear(m);
    }
    if (m->cmd != DIST__CMD_WELCOME)
        fail_msg("expected WELCOME, got %s", dist__cmd_name(m->cmd));
}

/* After a restart of the program: a worker of one task name (worker_task;
 * 1 slot, capacity 1) or a client (worker_task NULL) says HELLO again and
 * is welcomed. */
static void s_rejoin(zsock_t *p, const char *name, const char *worker_task)
{
    dist__inmsg_t m;
    s_expect_reconnect(p);
    if (worker_task)
        fp_hello_worker(p, name, 1, 1, &worker_task, 1);
    else
        fp_hello_client(p, name);
    s_expect_welcome(p, &m);
    dist__inmsg_clear(&m);
}

static void test_kill9_keeps_accepted_and_results(void **state)
{
    (void)state;
    scratch_t *x = s_scratch();
    pid_t pid = s_program(x, NULL);
    const char *t = "t";
    zsock_t *w = fp_worker_ep(x->ep, "w1", 10, 100, t);
    zsock_t *c = fp_client_ep(x->ep, "c1", NULL);
    fp_keep_alive(w, c);
    dist__inmsg_t msg;

    enum { N = 1000 };
    for (int b = 0; b < N; b += 250) {
        s_submit_range(c, b, 250);
        size_t rej;
        assert_int_equal(fp_accepted(c, &rej, NULL, 0), 250);
    }
    static fp_task_t got[N + 100];
    s_take(w, got, 100);
    s_credit(w, 0);
    for (int i = 0; i < 50; i++)
        s_answer(w, &got[i]);
    static fp_res_t res[N];
    static int seen[N];
    fp_results(c, res, 50);
    dist__id_t acked[20];
    for (int i = 0; i < 50; i++)
        seen[fp_id_num(&res[i].id)]++;
    for (int i = 0; i < 20; i++)
        acked[i] = res[i].id;
    fp_ids_msg(c, DIST__CMD_ACK, acked, 20);
    s_sync(c, N - 1);
    s_kill9(pid);

    pid = s_program(x, NULL);
    /* The client comes back and gets the 30 results it did not
     * acknowledge, and no other. */
    s_expect_reconnect(c);
    fp_hello_client(c, "c1");
    s_expect_welcome(c, &msg);
    uint64_t pending;
    assert_int_equal(dist__get_u64(msg.root, "pending_results", &pending), 0);
    assert_int_equal(pending, 30);
    dist__inmsg_clear(&msg);
    static fp_res_t res30[30];
    fp_results(c, res30, 30);
    for (int i = 0; i < 30; i++) {
        for (int k = 0; k < 20; k++)
            assert_false(dist__id_eq(&res30[i].id, &acked[k]));
        assert_int_equal(seen[fp_id_num(&res30[i].id)], 1);
    }
    /* The worker comes back and gets the 950 others: the 50 it held
     * without answering at attempt 2. */
    s_expect_reconnect(w);
    fp_hello_worker(w, "w1", 10, N, &t, 1);
    s_expect_welcome(w, &msg);
    dist__inmsg_clear(&msg);
    s_take(w, got + 100, N - 50);
    int second = 0;
    for (int i = 100; i < 100 + N - 50; i++) {
        int n = fp_id_num(&got[i].id);
        assert_true(n >= 0 && n < N);
        assert_int_equal(seen[n], 0);
        bool held = false;
        for (int k = 50; k < 100; k++)
            held |= dist__id_eq(&got[k].id, &got[i].id);
        assert_int_equal(got[i].attempt, held ? 2 : 1);
        second += held;
        s_answer(w, &got[i]);
    }
    assert_int_equal(second, 50);
    fp_results(c, res, N - 50);
    for (int i = 0; i < N - 50; i++) {
        int n = fp_id_num(&res[i].id);
        assert_int_equal(seen[n]++, 0);
        char want[32];
        snprintf(want, sizeof want, "v%d", n);
        assert_string_equal(res[i].text, want);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
    /* Everything acknowledged, then a new task (id N, which also proves
     * the ACKs committed): a clean stop leaves just that one. */
    dist__id_t ids[N];
    size_t k = 0;
    for (int i = 0; i < N - 50; i++)
        ids[k++] = res[i].id;
    for (int i = 0; i < 30; i++)
        ids[k++] = res30[i].id;
    fp_ids_msg(c, DIST__CMD_ACK, ids, k);
    s_sync(c, N);
    dt_signal(pid, SIGTERM);
    int st = dt_wait(pid, 10000);
    if (st != 0)
        s_show_log(x);
    assert_int_equal(st, 0);
    assert_int_equal(s_rows(x->db, "tasks"), 1);
    assert_int_equal(s_rows(x->db, "names"), 1);
    zsock_destroy(&w);
    zsock_destroy(&c);
}

/* ---- many SIGKILLs during a long run -------------------------------------------------------- */

/* A fake client and two fake workers driven by one poll loop, which come
 * back by themselves after each restart of the master (RECONNECT, then
 * HELLO), and a checker of what the client was promised against what it
 * got:
 *
 * - every id in an ACCEPTED must come back as a result (else: lost);
 * - with the value its worker computed (else: wrong);
 * - no result for an id that was never accepted (unexpected);
 * - no result again once its ACK is known to be committed (duplicated).
 *   A result may legitimately come again until then (every HELLO resends
 *   what is not acknowledged, and an ACK a killed master had not
 *   committed is lost). An ACK is known committed once an ACCEPTED comes
 *   for a SUBMIT sent after it to the same master: the master handles a
 *   peer's messages in order and answers a SUBMIT after its turn's commit.
 */
#define SOAK_BATCH 500
#define SOAK_WINDOW 8
#define SOAK_WORKERS 2

typedef struct {
    int n;
    uint8_t *accepted, *delivered;
    uint32_t *acked;          /* the ACK's sequence number, 0: not acknowledged */
    uint32_t ack_seq, confirmed;
    uint32_t *batch_seq;      /* ack_seq when the batch was last sent */
    int *batch_left;          /* ids of the batch not accepted yet */
    int next_batch, nbatches;
    int *window;              /* batches sent, not fully accepted */
    int nwindow;
    bool welcomed;
    dist__id_t *acks;
    size_t nacks;
    long lost, wrong, unexpected, duplicated, redelivered, execs, retried;
    long naccepted, ndelivered;
    long waiting;             /* results_waiting in the last STATUS, -1: none yet */
    zsock_t *c, *w[SOAK_WORKERS];
} soak_t;

static void s_soak_hello_worker(zsock_t *w, int i)
{
    const char *t = "t";
    char name[16];
    snprintf(name, sizeof name, "w%d", i);
    fp_hello_worker(w, name, 2, 200, &t, 1);
}

static void s_soak_send_batch(soak_t *k, int b)
{
    k->batch_seq[b] = k->ack_seq;
    int first = b * SOAK_BATCH;
    size_t n = (size_t)(first + SOAK_BATCH <= k->n ? SOAK_BATCH : k->n - first);
    s_submit_range(k->c, first, n);
}

static void s_soak_flush_acks(soak_t *k)
{
    if (!k->nacks || !k->welcomed)
        return;
    k->ack_seq++;
    for (size_t i = 0; i < k->nacks; i++)
        k->acked[fp_id_num(&k->acks[i])] = k->ack_seq;
    fp_ids_msg(k->c, DIST__CMD_ACK, k->acks, k->nacks);
    k->nacks = 0;
}

static void s_soak_client_msg(soak_t *k, const dist__inmsg_t *m)
{
    const msgpack_object *items;
    size_t n;
    switch (m->cmd) {
    case DIST__CMD_RECONNECT:
        k->welcomed = false;
        fp_hello_client(k->c, "soak");
        break;
    case DIST__CMD_WELCOME:
        k->welcomed = true;
        /* ACKs not known to be committed may have died with the master. */
        for (int i = 0; i < k->n; i++)
            if (k->acked[i] > k->confirmed)
                k->acked[i] = 0;
        for (int i = 0; i < k->nwindow; i++)
            s_soak_send_batch(k, k->window[i]);
        break;
    case DIST__CMD_ACCEPTED: {
        assert_int_equal(dist__get_array(m->root, "ids", &items, &n), 0);
        const msgpack_object *rej;
        size_t nrej;
        assert_int_equal(dist__get_array(m->root, "rejected", &rej, &nrej), 0);
        if (nrej) {
            const char *code = "", *err = "";
            size_t cn = 0, en = 0;
            dist__get_str(&rej[0], "code", &code, &cn);
            dist__get_str(&rej[0], "error", &err, &en);
            fail_msg("%zu task(s) rejected during the soak: %.*s: %.*s", nrej, (int)cn, code,
                     (int)en, err);
        }
        for (size_t i = 0; i < n; i++) {
            const void *b;
            size_t len;
            assert_int_equal(dist_wire_get_bin(&items[i], &b, &len), 0);
            dist__id_t id;
            memcpy(id.b, b, sizeof id.b);
            int x = fp_id_num(&id);
            assert_true(x >= 0 && x < k->n);
            int batch = x / SOAK_BATCH;
            if (i == 0 && k->batch_seq[batch] > k->confirmed)
                k->confirmed = k->batch_seq[batch];
            if (!k->accepted[x]) {
                k->accepted[x] = 1;
                k->naccepted++;
                if (--k->batch_left[batch] == 0) {
                    for (int j = 0; j < k->nwindow; j++)
                        if (k->window[j] == batch) {
                            k->window[j] = k->window[--k->nwindow];
                            break;
                        }
                }
            }
        }
        break;
    }
    case DIST__CMD_RESULTS:
        assert_int_equal(dist__get_array(m->root, "results", &items, &n), 0);
        for (size_t i = 0; i < n; i++) {
            dist__result_t r;
            assert_int_equal(dist__parse_result(&items[i], false, &r), 0);
            int x = fp_id_num(&r.id);
            if (x < 0 || x >= k->n || !k->accepted[x]) {
                k->unexpected++;
                continue;
            }
            uint8_t want[5] = { 0xce, (uint8_t)(x >> 24), (uint8_t)(x >> 16), (uint8_t)(x >> 8),
                                (uint8_t)x };
            if (r.status != DIST__ST_OK || r.value_len != 5 || memcmp(r.value, want, 5) != 0)
                k->wrong++;
            if (k->delivered[x]) {
                if (k->acked[x] && k->acked[x] <= k->confirmed)
                    k->duplicated++;
                else
                    k->redelivered++;
                if (k->acked[x])
                    continue; /* its ACK is on its way */
            } else {
                k->delivered[x] = 1;
                k->ndelivered++;
            }
            k->acks[k->nacks++] = r.id;
            if (k->nacks == SOAK_BATCH * 2)
                s_soak_flush_acks(k);
        }
        break;
    case DIST__CMD_STATUS: {
        uint64_t waiting;
        assert_int_equal(dist__get_u64(dist_wire_map_get(m->root, "counters"), "results_waiting",
                                       &waiting), 0);
        k->waiting = (long)waiting;
        break;
    }
    case DIST__CMD_ERROR:
    case DIST__CMD_HEARTBEAT:
    case DIST__CMD_NOTICE: /* the workers' names come and go with the kills */
        break;
    default:
        fail_msg("the client got %s", dist__cmd_name(m->cmd));
    }
}

/* A worker answers every task at once with its id as a MessagePack u32. */
static void s_soak_worker_msg(soak_t *k, int i, const dist__inmsg_t *m)
{
    zsock_t *w = k->w[i];
    if (m->cmd == DIST__CMD_RECONNECT) {
        s_soak_hello_worker(w, i);
        return;
    }
    if (m->cmd != DIST__CMD_TASKS)
        return;
    const msgpack_object *items;
    size_t n;
    assert_int_equal(dist__get_array(m->root, "tasks", &items, &n), 0);
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_batch(&pk, "results", n);
    for (size_t j = 0; j < n; j++) {
        dist__task_t t;
        assert_int_equal(dist__parse_task(&items[j], true, &t), 0);
        int x = fp_id_num(&t.id);
        uint8_t v[5] = { 0xce, (uint8_t)(x >> 24), (uint8_t)(x >> 16), (uint8_t)(x >> 8),
                         (uint8_t)x };
        k->execs++;
        k->retried += t.attempt > 1;
        dist__result_t r = { .id = t.id, .attempt = t.attempt, .status = DIST__ST_OK,
                             .value = v, .value_len = 5 };
        dist__pack_result(pk, &r, true);
    }
    fp_send(w, DIST__CMD_RESULTS, b);
}

/* Reads whatever waits on the peer's socket. */
static void s_soak_drain(soak_t *k, zsock_t *sock, int worker)
{
    dist_wire_limits_t lim = dist__body_limits(0);
    dist__inmsg_t m;
    int rc;
    while ((rc = dist__proto_recv(sock, false, &lim, &m)) != DIST_EAGAIN) {
        assert_int_equal(rc, 0);
        if (worker < 0)
            s_soak_client_msg(k, &m);
        else
            s_soak_worker_msg(k, worker, &m);
        dist__inmsg_clear(&m);
    }
}

static void test_kill9_soak(void **state)
{
    (void)state;
    scratch_t *x = s_scratch();
    soak_t k;
    memset(&k, 0, sizeof k);
    k.n = getenv("DIST_TEST_SOAK") ? atoi(getenv("DIST_TEST_SOAK")) : 50000;
    assert_true(k.n >= SOAK_BATCH);
    k.accepted = calloc((size_t)k.n, 1);
    k.delivered = calloc((size_t)k.n, 1);
    k.acked = calloc((size_t)k.n, sizeof *k.acked);
    k.nbatches = (k.n + SOAK_BATCH - 1) / SOAK_BATCH;
    k.batch_seq = calloc((size_t)k.nbatches, sizeof *k.batch_seq);
    k.batch_left = calloc((size_t)k.nbatches, sizeof *k.batch_left);
    k.window = calloc(SOAK_WINDOW, sizeof *k.window);
    k.acks = calloc(SOAK_BATCH * 2, sizeof *k.acks);
    for (int b = 0; b < k.nbatches; b++)
        k.batch_left[b] = b + 1 < k.nbatches ? SOAK_BATCH : k.n - b * SOAK_BATCH;
    const char *const extra[] = { "--max-attempts", "1000", NULL };
    pid_t pid = s_program(x, extra);

    /* Workers first: the task name must be known before the first SUBMIT. */
    for (int i = 0; i < SOAK_WORKERS; i++) {
        char name[16];
        snprintf(name, sizeof name, "w%d", i);
        k.w[i] = fp_worker_ep(x->ep, name, 2, 200, "t");
    }
    k.c = fp_connect_ep(x->ep);
    fp_hello_client(k.c, "soak");
    k.waiting = -1;
    /* Kills: once while tasks are still being accepted, then as results
     * come in. */
    long kill_at[] = { k.n * 3 / 10, k.n / 5, k.n * 2 / 5, k.n * 3 / 5, k.n * 4 / 5 };
    int kills = 0, nkills = sizeof kill_at / sizeof kill_at[0];
    int64_t end = dt_now_ms() + 100000, next_hb = 0, last_hello = dt_now_ms();
    int64_t last_progress = dt_now_ms();
    long last_delivered = 0;
    zmq_pollitem_t items[1 + SOAK_WORKERS];
    items[0] = (zmq_pollitem_t){ zsock_resolve(k.c), 0, ZMQ_POLLIN, 0 };
    for (int i = 0; i < SOAK_WORKERS; i++)
        items[1 + i] = (zmq_pollitem_t){ zsock_resolve(k.w[i]), 0, ZMQ_POLLIN, 0 };
    /* Until every result is in and acknowledged, and then until a STATUS
     * says that the master holds none any more. */
    int64_t next_status = 0;
    while (k.ndelivered < k.n || k.nacks || k.waiting != 0) {
        if (dt_now_ms() > end) {
            s_show_log(x);
            fail_msg("soak: %ld of %d accepted, %ld delivered after 100 s", k.naccepted, k.n,
                     k.ndelivered);
        }
        if (k.ndelivered != last_delivered) {
            last_delivered = k.ndelivered;
            last_progress = dt_now_ms();
        } else if (k.naccepted == k.n && dt_now_ms() - last_progress > 10000) {
            break; /* nothing more comes: count what is lost */
        }
        zmq_poll(items, 1 + SOAK_WORKERS, 20);
        s_soak_drain(&k, k.c, -1);
        for (int i = 0; i < SOAK_WORKERS; i++)
            s_soak_drain(&k, k.w[i], i);
        while (k.welcomed && k.nwindow < SOAK_WINDOW && k.next_batch < k.nbatches) {
            k.window[k.nwindow++] = k.next_batch;
            s_soak_send_batch(&k, k.next_batch++);
        }
        s_soak_flush_acks(&k);
        int64_t now = dt_now_ms();
        if (now >= next_hb) {
            dist__proto_send_empty(k.c, NULL, 0, DIST__CMD_HEARTBEAT);
            for (int i = 0; i < SOAK_WORKERS; i++)
                dist__proto_send_empty(k.w[i], NULL, 0, DIST__CMD_HEARTBEAT);
            next_hb = now + 200;
        }
        if (!k.welcomed && now - last_hello > 1000) {
            fp_hello_client(k.c, "soak");
            last_hello = now;
        }
        if (k.ndelivered == k.n && !k.nacks && k.welcomed && now >= next_status) {
            msgpack_packer *pk;
            dist_wire_buf_t *b = fp_buf(&pk);
            msgpack_pack_map(pk, 1);
            dist__pk_kv_u64(pk, "req", 1);
            fp_send(k.c, DIST__CMD_STATUS, b);
            next_status = now + 100;
        }
        long progress = kills == 0 ? k.naccepted : k.ndelivered;
        if (kills < nkills && progress >= kill_at[kills]) {
            s_kill9(pid);
            pid = s_program(x, extra);
            kills++;
        }
    }
    for (long i = 0; i < k.n; i++)
        k.lost += k.accepted[i] && !k.delivered[i];
    fprintf(stderr, "soak: %d tasks, %d kills: %ld accepted, %ld delivered, %ld executions (%ld "
            "retried), %ld redelivered before their ACK was committed; lost %ld, duplicated %ld, "
            "wrong %ld, unexpected %ld\n", k.n, kills, k.naccepted, k.ndelivered, k.execs,
            k.retried, k.redelivered, k.lost, k.duplicated, k.wrong, k.unexpected);
    assert_int_equal(kills, nkills);
    assert_int_equal(k.naccepted, k.n);
    assert_int_equal(k.lost, 0);
    assert_int_equal(k.duplicated, 0);
    assert_int_equal(k.wrong, 0);
    assert_int_equal(k.unexpected, 0);

    /* The master holds nothing any more: a clean stop leaves an empty
     * store. */
    assert_int_equal(k.waiting, 0);
    dt_signal(pid, SIGTERM);
    assert_int_equal(dt_wait(pid, 10000), 0);
    assert_int_equal(s_rows(x->db, "tasks"), 0);
    zsock_destroy(&k.c);
    for (int i = 0; i < SOAK_WORKERS; i++)
        zsock_destroy(&k.w[i]);
    free(k.accepted);
    free(k.delivered);
    free(k.acked);
    free(k.batch_seq);
    free(k.batch_left);
    free(k.window);
    free(k.acks);
}

/* ---- a store that cannot write ----------------------------------------------------------- */

/* SUBMITs ids [first, first + n) and returns how many were accepted;
 * every rejection must be store_failed. */
static size_t s_submit_count(zsock_t *c, int first, size_t n)
{
    s_submit_range(c, first, n);
    size_t rej;
    char code[64];
    size_t ok = fp_accepted(c, &rej, code, sizeof code);
    assert_int_equal(ok + rej, n);
    if (rej)
        assert_string_equal(code, "store_failed");
    return ok;
}

/* Submits one task every 100 ms until one is accepted (within 10 s):
 * the id accepted. */
static int s_until_accepted(zsock_t *c, int *next_id)
{
    int64_t end = dt_now_ms() + 10000;
    while (dt_now_ms() < end) {
        int id = (*next_id)++;
        if (s_submit_count(c, id, 1))
            return id;
        dt_sleep_ms(100);
    }
    fail_msg("the master did not accept tasks again");
    return -1;
}

/* The ids a worker holding everything gets, sorted, into out. */
static size_t s_drain_tasks(zsock_t *w, int *out, size_t max)
{
    fp_task_t t[64];
    size_t n = 0;
    dist__inmsg_t m;
    while (fp_recv(w, 500, &m) == 0) {
        assert_int_equal(m.cmd, DIST__CMD_TASKS);
        const msgpack_object *items;
        size_t k;
        assert_int_equal(dist__get_array(m.root, "tasks", &items, &k), 0);
        for (size_t i = 0; i < k; i++) {
            dist__task_t tt;
            assert_int_equal(dist__parse_task(&items[i], true, &tt), 0);
            assert_true(n < max);
            out[n++] = fp_id_num(&tt.id);
        }
        dist__inmsg_clear(&m);
    }
    (void)t;
    qsort(out, n, sizeof out[0], s_cmp_int);
    return n;
}

static void test_failed_commits_refuse_then_resume(void **state)
{
    (void)state;
    scratch_t *x = s_scratch();
    dist_master_t *m = s_start(x, "m1");
    zsock_t *w = fp_worker(m, "w1", 1, 1000, "t");
    zsock_t *c = fp_client(m, "c1", NULL);
    fp_keep_alive(w, c);
    assert_int_equal(s_submit_count(c, 0, 10), 10);
    fp_task_t got[16];
    s_take(w, got, 10);
    s_sync(c, 0);

    /* The next three commits fail: the SUBMIT whose commit fails, and
     * every one until a commit works again, is refused. */
    dist__m_fail_commits(m, 3, -ENOSPC);
    assert_int_equal(s_submit_count(c, 100, 10), 0);
    /* What is in memory is still served: results go out. */
    for (int i = 0; i < 10; i++)
        s_answer(w, &got[i]);
    fp_res_t res[10];
    fp_results(c, res, 10);
    assert_int_equal(s_submit_count(c, 200, 10), 0);
    int next = 300;
    int first_ok = s_until_accepted(c, &next);
    assert_int_equal(s_submit_count(c, 1000, 5), 5);
    /* A repeat of a refused id is a new submission now, and is taken. */
    assert_int_equal(s_submit_count(c, 100, 1), 1);
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);

    /* Everything accepted is there after a restart, nothing refused is. */
    m = s_start(x, "m2");
    uint64_t pending;
    c = fp_client(m, "c1", &pending);
    assert_int_equal(pending, 10);
    w = fp_worker(m, "w1", 1, 1000, "t");
    fp_keep_alive(w, c);
    int ids[64];
    size_t n = s_drain_tasks(w, ids, 64);
    int want[] = { 100, first_ok, 1000, 1001, 1002, 1003, 1004 };
    assert_int_equal(n, sizeof want / sizeof want[0]);
    qsort(want, n, sizeof want[0], s_cmp_int);
    assert_memory_equal(ids, want, sizeof want);
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

/* A big task: args [bin of size bytes]. */
static void s_submit_big(zsock_t *c, int first, size_t n, size_t size)
{
    uint8_t *args = calloc(1, size + 6);
    args[0] = 0x91;
    args[1] = 0xc6;
    args[2] = (uint8_t)(size >> 24);
    args[3] = (uint8_t)(size >> 16);
    args[4] = (uint8_t)(size >> 8);
    args[5] = (uint8_t)size;
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_batch(&pk, "tasks", n);
    for (size_t i = 0; i < n; i++) {
        dist__task_t t = { fp_id(first + (int)i), 0, "t", 1, args, size + 6, 0 };
        dist__pack_task(pk, &t, false);
    }
    fp_send(c, DIST__CMD_SUBMIT, b);
    free(args);
}

static void test_disk_full(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        fprintf(stderr, "test_disk_full: skipped (mounting a small tmpfs needs root)\n");
        skip();
    }
    scratch_t *x = s_scratch();
    snprintf(x->mnt, sizeof x->mnt, "%.63s/mnt", x->dir);
    assert_int_equal(mkdir(x->mnt, 0700), 0);
    if (mount("tmpfs", x->mnt, "tmpfs", 0, "size=1m") != 0) {
        fprintf(stderr, "test_disk_full: skipped (mount: %s)\n", strerror(errno));
        x->mnt[0] = 0;
        skip();
    }
    snprintf(x->db, sizeof x->db, "%s/master.db", x->mnt);
    dist_master_t *m = s_start(x, "m1");
    zsock_t *c = fp_client(m, "c1", NULL);
    zsock_t *w = fp_worker(m, "w1", 1, 1, "t");
    fp_keep_alive(w, c);
    assert_int_equal(s_submit_count(c, 0, 5), 5);

    /* Fill the file system, then submit big tasks until one is refused. */
    char filler[256];
    snprintf(filler, sizeof filler, "%s/filler", x->mnt);
    int fd = open(filler, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    static char block[4096];
    while (write(fd, block, sizeof block) > 0)
        ;
    assert_int_equal(errno, ENOSPC);
    close(fd);
    int next = 100;
    size_t refused = 0;
    int accepted[64], nacc = 0;
    for (int round = 0; round < 32 && !refused; round++) {
        s_submit_big(c, next, 2, 32 << 10);
        size_t rej;
        char code[64];
        size_t ok = fp_accepted(c, &rej, code, sizeof code);
        assert_int_equal(ok + rej, 2);
        if (rej)
            assert_string_equal(code, "store_failed");
        for (size_t i = 0; i < ok; i++)
            accepted[nacc++] = next + (int)i; /* all or nothing in one commit */
        refused += rej;
        next += 2;
    }
    assert_true(refused > 0);
    assert_int_equal(s_submit_count(c, next, 1), 0); /* still refused */
    next++;
    /* Room again: the master takes tasks again within a retry or two. */
    assert_int_equal(unlink(filler), 0);
    accepted[nacc++] = s_until_accepted(c, &next);
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);

    m = s_start(x, "m2");
    w = fp_worker(m, "w1", 1, 1000, "t");
    fp_keep_alive(w, NULL);
    int ids[128];
    size_t n = s_drain_tasks(w, ids, 128);
    int want[128];
    for (int i = 0; i < 5; i++)
        want[i] = i;
    for (int i = 0; i < nacc; i++)
        want[5 + i] = accepted[i];
    qsort(want, (size_t)(5 + nacc), sizeof want[0], s_cmp_int);
    assert_int_equal(n, (size_t)(5 + nacc));
    assert_memory_equal(ids, want, n * sizeof ids[0]);
    zsock_destroy(&w);
    dist_master_destroy(&m);
}

/* An I/O error: with --store-fsync every commit syncs the WAL, and
 * strace makes three of those fdatasync calls fail with EIO. */
static void test_io_error(void **state)
{
    (void)state;
    const char *strace = "/usr/bin/strace";
    if (access(strace, X_OK) != 0) {
        fprintf(stderr, "test_io_error: skipped (no %s)\n", strace);
        skip();
    }
    scratch_t *x = s_scratch();
    /* Creating a store syncs 7 times; the first commits of the test come
     * next. */
    const char *args[] = { strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync", "-e",
                           "inject=fdatasync:error=EIO:when=12..14", DIST_MASTER_BIN, "--bind",
                           x->ep, "--store", x->db, "--store-fsync", "--log-level", "debug",
                           NULL };
    pid_t tracer = dt_spawn(args, &(dt_spawn_opts_t){ .out = { DT_IO_APPEND, x->log, NULL },
                                                      .err = { DT_IO_STDOUT } });
    zsock_t *w = fp_connect_ep(x->ep);
    const char *t = "t";
    fp_hello_worker(w, "w1", 1, 1000, &t, 1);
    dist__inmsg_t msg;
    if (fp_recv(w, 10000, &msg) != 0) {
        s_show_log(x);
        fail_msg("no master under strace");
    }
    assert_int_equal(msg.cmd, DIST__CMD_WELCOME);
    /* The master's name is host:pid: the process to kill, under strace. */
    const char *name;
    size_t len;
    assert_int_equal(dist__get_str(msg.root, "master", &name, &len), 0);
    char nbuf[256];
    snprintf(nbuf, sizeof nbuf, "%.*s", (int)len, name);
    pid_t pid = (pid_t)atoi(strrchr(nbuf, ':') + 1);
    assert_true(pid > 0);
    dist__inmsg_clear(&msg);
    zsock_t *c = fp_client_ep(x->ep, "c1", NULL);
    fp_keep_alive(w, c);

    int accepted[64], nacc = 0, next = 0;
    bool refused = false;
    while (!refused && next < 40) {
        if (s_submit_count(c, next, 1))
            accepted[nacc++] = next;
        else
            refused = true;
        next++;
    }
    if (!refused) {
        s_show_log(x);
        fail_msg("no commit failed under strace's fault injection");
    }
    accepted[nacc++] = s_until_accepted(c, &next);
    accepted[nacc++] = s_until_accepted(c, &next);
    kill(pid, SIGKILL); /* strace's child, not ours: strace then exits */
    dt_wait(tracer, 10000);
    zsock_destroy(&w);
    zsock_destroy(&c);

    /* Every task accepted is back; none refused is. */
    pid = s_program(x, NULL);
    w = fp_worker_ep(x->ep, "w1", 1, 1000, t);
    fp_keep_alive(w, NULL);
    int ids[64];
    size_t n = s_drain_tasks(w, ids, 64);
    qsort(accepted, (size_t)nacc, sizeof accepted[0], s_cmp_int);
    if (n != (size_t)nacc || memcmp(ids, accepted, n * sizeof ids[0]) != 0) {
        s_show_log(x);
        fail_msg("%zu task(s) came back, %d were accepted", n, nacc);
    }
    dt_signal(pid, SIGTERM);
    assert_int_equal(dt_wait(pid, 10000), 0);
    if (getenv("DIST_TEST_LOG"))
        s_show_log(x);
    zsock_destroy(&w);
}

/* ---- task control (issue 12): delays, retries, cancels, keys, priorities ------------------ */

static bool s_is(dist__str_t s, const char *lit)
{
    return s.n == strlen(lit) && memcmp(s.s, lit, s.n) == 0;
}

static int64_t s_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* LOOKUP of one id: its info into *ti (m is the caller's to clear). */
static void s_lookup(zsock_t *c, int id, dist__inmsg_t *m, dist__task_info_t *ti)
{
    static uint64_t req = 1000;
    dist__reply_t r;
    fp_ids_req(c, DIST__CMD_LOOKUP, ++req, &id, 1);
    fp_reply(c, req, "ok", m, &r);
    assert_int_equal(r.nitems, 1);
    assert_int_equal(dist__parse_task_info(&r.items[0], ti), 0);
}

/* The attempts of a task (worker and reason of each) and its name survive
 * a restart: one that crashed twice then succeeded, one that gave up,
 * both results not acknowledged yet. */
static void test_attempts_survive_restart(void **state)
{
    (void)state;
    scratch_t *x = s_scratch();
    zsock_t *c, *w;
    dist_master_t *m = s_start_pair(x, &c, &w, "w1");
    size_t rej;
    fp_task_t g[1];
    dist__submit_opts_t three = { .max_attempts = 3 }, two = { .max_attempts = 2 };
    fp_submit_opts(c, fp_id(5), &three);
    assert_int_equal(fp_accepted(c, &rej, NULL, 0), 1);
    for (uint32_t k = 1; k <= 3; k++) {
        s_take(w, g, 1);
        assert_int_equal(g[0].attempt, k);
        fp_result(w, &g[0].id, k, k < 3 ? DIST__ST_CRASHED : DIST__ST_OK,
                  k == 1 ? "segfault one" : k == 2 ? "segfault two" : "v5");
    }
    fp_res_t res[2];
    fp_results(c, res, 1);
    fp_submit_opts(c, fp_id(6), &two);
    assert_int_equal(fp_accepted(c, &rej, NULL, 0), 1);
    for (uint32_t k = 1; k <= 2; k++) {
        s_take(w, g, 1);
        fp_result(w, &g[0].id, k, DIST__ST_CRASHED, k == 1 ? "abort one" : "abort two");
    }
    fp_results(c, res, 1);
    assert_int_equal(res[0].status, DIST__ST_GAVE_UP);
    s_sync(c, 9); /* its ACCEPTED waits for the commit of all the above */
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);

    m = s_start(x, "m");
    uint64_t pending = 0;
    c = fp_client(m, "c", &pending);
    assert_int_equal(pending, 2);
    fp_results(c, res, 2);
    static const fp_attempt_t done[] = { { "w1", "crashed: segfault one" },
                                         { "w1", "crashed: segfault two" },
                                         { "w1", "" } };
    fp_lookup_attempts(c, 1, 5, "done", "t", done, 3);
    static const fp_attempt_t gave_up[] = { { "w1", "crashed: abort one" },
                                            { "w1", "crashed: abort two" } };
    fp_lookup_attempts(c, 2, 6, "failed", "t", gave_up, 2);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

static void test_task_control_survives_restart(void **state)
{
    (void)state;
    scratch_t *x = s_scratch();
    zsock_t *c, *w;
    dist_master_t *m = s_start_pair(x, &c, &w, "w");
    size_t rej;
    /* 1: delayed 1500 ms, priority 7; 2: fails and waits for its retry. */
    dist__submit_opts_t d = { .priority = 7, .has_delay = true, .delay_ms = 1500 };
    fp_submit_opts(c, fp_id(1), &d);
    assert_int_equal(fp_accepted(c, &rej, NULL, 0), 1);
    dist__submit_opts_t r = { .retry_on_error = true, .max_attempts = 3, .backoff_ms = 2000 };
    fp_submit_opts(c, fp_id(2), &r);
    assert_int_equal(fp_accepted(c, &rej, NULL, 0), 1);
    fp_task_t g[1];
    s_take(w, g, 1);
    assert_int_equal(fp_id_num(&g[0].id), 2);
    fp_result(w, &g[0].id, 1, DIST__ST_FAILED, "first failure");
    /* 3 is leased when the master stops, 4 is cancelled (result not acknowledged). */
    fp_submit_ok(c, "t", (int[]){ 3, 4 }, 2);
    s_take(w, g, 1);
    assert_int_equal(fp_id_num(&g[0].id), 3);
    dist__inmsg_t mm;
    dist__reply_t rp;
    fp_ids_req(c, DIST__CMD_CANCEL, 1, (int[]){ 4 }, 1);
    fp_reply(c, 1, "ok", &mm, &rp);
    dist__inmsg_clear(&mm);
    fp_res_t res[1];
    fp_results(c, res, 1);
    assert_int_equal(res[0].status, DIST__ST_CANCELLED);
    dist__task_info_t ti;
    s_lookup(c, 2, &mm, &ti);
    assert_true(s_is(ti.state, "delayed"));
    uint64_t nb2 = ti.not_before_ms;
    dist__inmsg_clear(&mm);
    s_sync(c, 3);
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);

    m = s_start(x, "m");
    uint64_t pending = 0;
    c = fp_client(m, "c", &pending);
    assert_int_equal(pending, 1); /* the cancelled result of 4, not acknowledged */
    fp_results(c, res, 1);
    assert_int_equal(res[0].status, DIST__ST_CANCELLED);
    assert_int_equal(fp_id_num(&res[0].id), 4);
    s_lookup(c, 1, &mm, &ti);
    assert_true(s_is(ti.state, "delayed"));
    assert_int_equal(ti.priority, 7);
    uint64_t nb1 = ti.not_before_ms;
    assert_true(nb1 > 0 && ti.submitted_ms > 0);
    dist__inmsg_clear(&mm);
    s_lookup(c, 2, &mm, &ti);
    assert_true(s_is(ti.state, "delayed"));
    assert_int_equal(ti.not_before_ms, nb2);
    assert_true(ti.nattempts >= 1);
    dist__attempt_info_t a;
    assert_int_equal(dist__parse_attempt_info(&ti.attempt_maps[0], &a), 0);
    assert_non_null(memmem(a.reason.s, a.reason.n, "first failure", 13));
    dist__inmsg_clear(&mm);
    s_lookup(c, 4, &mm, &ti);
    assert_true(s_is(ti.state, "cancelled"));
    dist__inmsg_clear(&mm);
    /* 3 runs again at once (attempt 2); 1 and 2 only at their times. */
    w = fp_worker(m, "w", 1, 1, "t");
    fp_keep_alive(w, c);
    s_take(w, g, 1);
    assert_int_equal(fp_id_num(&g[0].id), 3);
    assert_int_equal(g[0].attempt, 2);
    fp_result(w, &g[0].id, 2, DIST__ST_OK, "v3");
    for (int i = 0; i < 2; i++) {
        s_take(w, g, 1);
        int id = fp_id_num(&g[0].id);
        assert_true(id == 1 || id == 2);
        assert_true((uint64_t)s_unix_ms() + 5 >= (id == 1 ? nb1 : nb2));
        assert_int_equal(g[0].attempt, id == 1 ? 1 : 2);
        fp_result(w, &g[0].id, g[0].attempt, DIST__ST_OK, "v");
    }
    fp_res_t rr[3];
    fp_results(c, rr, 3);
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);
}

/* FAILED of one client: the dead letters' ids into ids[0..max), their count. */
static size_t s_failed(zsock_t *c, uint64_t req, int *ids, size_t max)
{
    msgpack_packer *pk;
    dist_wire_buf_t *b = fp_buf(&pk);
    dist__failed_req_t fr = { .req = req };
    dist__pack_failed_req(pk, &fr);
    fp_send(c, DIST__CMD_FAILED, b);
    dist__inmsg_t mm;
    dist__reply_t rp;
    fp_reply(c, req, "ok", &mm, &rp);
    size_t n = rp.nitems;
    for (size_t i = 0; i < n && i < max; i++) {
        dist__task_info_t ti;
        assert_int_equal(dist__parse_task_info(&rp.items[i], &ti), 0);
        assert_true(s_is(ti.state, "failed"));
        assert_non_null(memmem(ti.error.s, ti.error.n, "died", 4));
        ids[i] = fp_id_num(&ti.id);
    }
    dist__inmsg_clear(&mm);
    return n;
}

/* RETRY of one id: its state afterwards is `want`. */
static void s_retry(zsock_t *c, uint64_t req, int id, const char *want)
{
    dist__inmsg_t mm;
    dist__reply_t rp;
    fp_ids_req(c, DIST__CMD_RETRY, req, &id, 1);
    fp_reply(c, req, "ok", &mm, &rp);
    const char *sv;
    size_t sn;
    assert_int_equal(dist_wire_get_str(&rp.items[0], &sv, &sn), 0);
    assert_true(sn == strlen(want) && memcmp(sv, want, sn) == 0);
    dist__inmsg_clear(&mm);
}

/* Runs the task with this id to an ok result (answering the others met first too). */
static void s_run_until(zsock_t *w, int id)
{
    fp_task_t g[1];
    int got;
    do {
        s_take(w, g, 1);
        got = fp_id_num(&g[0].id);
        fp_result(w, &g[0].id, g[0].attempt, DIST__ST_OK, "v");
    } while (got != id);
}

/* The dead letters and the ids of expired results survive a restart: a
 * task that gave up is listed by FAILED and RETRY runs it; one retried
 * before the restart is no longer listed; an expired id reads expired. */
static void test_dead_letters_and_tombstones_survive_restart(void **state)
{
    (void)state;
    scratch_t *x = s_scratch();
    dist_master_opts_t o = { .store = x->db, .name = "m", .result_ttl_ms = 300,
                             .max_attempts = 2 };
    dist_master_t *m = fp_start(&o);
    zsock_t *c = fp_client(m, "c", NULL);
    zsock_t *w = fp_worker(m, "w", 1, 1, "t");
    fp_keep_alive(w, c);
    fp_task_t g[1];
    fp_res_t res[1];
    /* 1 succeeds and is never acknowledged: it expires. */
    fp_submit_ok(c, "t", (int[]){ 1 }, 1);
    s_take(w, g, 1);
    fp_result(w, &g[0].id, 1, DIST__ST_OK, "v1");
    fp_results(c, res, 1);
    /* 2 and 3 crash on every attempt: dead letters; 3 is retried and succeeds. */
    for (int id = 2; id <= 3; id++) {
        fp_submit_ok(c, "t", &id, 1);
        for (uint32_t a = 1; a <= 2; a++) {
            s_take(w, g, 1);
            fp_result(w, &g[0].id, a, DIST__ST_CRASHED, "died");
        }
        fp_results(c, res, 1);
        assert_int_equal(res[0].status, DIST__ST_GAVE_UP);
        dist__id_t did = fp_id(id);
        fp_ids_msg(c, DIST__CMD_ACK, &did, 1);
    }
    int ids[4];
    assert_int_equal(s_failed(c, 1, ids, 4), 2);
    s_retry(c, 2, 3, "queued");
    s_run_until(w, 3);
    fp_results(c, res, 1);
    assert_int_equal(res[0].status, DIST__ST_OK);
    dist__id_t three = fp_id(3);
    fp_ids_msg(c, DIST__CMD_ACK, &three, 1);
    /* The TTL is looked at once a second. */
    dist__inmsg_t mm;
    dist__task_info_t ti;
    int64_t until = s_unix_ms() + 5000;
    bool expired = false;
    while (!expired && s_unix_ms() < until) {
        s_lookup(c, 1, &mm, &ti);
        expired = s_is(ti.state, "expired");
        dist__inmsg_clear(&mm);
        if (!expired)
            usleep(100 * 1000);
    }
    assert_true(expired);
    s_sync(c, 9);
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);
    assert_int_equal(s_rows(x->db, "dead"), 1);
    assert_int_equal(s_rows(x->db, "tombs"), 1);

    m = fp_start(&o);
    c = fp_client(m, "c", NULL);
    s_lookup(c, 1, &mm, &ti);
    assert_true(s_is(ti.state, "expired"));
    dist__inmsg_clear(&mm);
    assert_int_equal(s_failed(c, 3, ids, 4), 1);
    assert_int_equal(ids[0], 2);
    w = fp_worker(m, "w", 1, 1, "t");
    fp_keep_alive(w, c);
    s_retry(c, 4, 2, "queued");
    s_run_until(w, 2);
    bool two = false;
    while (!two) {
        fp_results(c, res, 1);
        two = fp_id_num(&res[0].id) == 2;
    }
    assert_int_equal(res[0].status, DIST__ST_OK);
    assert_int_equal(s_failed(c, 5, ids, 4), 0);
    s_sync(c, 9);
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);
    assert_int_equal(s_rows(x->db, "dead"), 0);
}

/* The same states through a SIGKILL of the real program. */
static void test_kill9_with_delayed_retrying_cancelled(void **state)
{
    (void)state;
    scratch_t *x = s_scratch();
    pid_t pid = s_program(x, NULL);
    const char *t = "t";
    zsock_t *w = fp_worker_ep(x->ep, "w", 1, 1, t);
    zsock_t *c = fp_client_ep(x->ep, "c", NULL);
    fp_keep_alive(w, c);
    size_t rej;
    dist__submit_opts_t d = { .has_delay = true, .delay_ms = 2000 };
    fp_submit_opts(c, fp_id(1), &d);
    assert_int_equal(fp_accepted(c, &rej, NULL, 0), 1);
    dist__submit_opts_t r = { .retry_on_error = true, .backoff_ms = 2000 };
    fp_submit_opts(c, fp_id(2), &r);
    assert_int_equal(fp_accepted(c, &rej, NULL, 0), 1);
    fp_task_t g[1];
    s_take(w, g, 1);
    assert_int_equal(fp_id_num(&g[0].id), 2);
    fp_result(w, &g[0].id, 1, DIST__ST_FAILED, "first failure");
    s_credit(w, 0);
    fp_submit_ok(c, "t", (int[]){ 3 }, 1);
    dist__inmsg_t mm;
    dist__reply_t rp;
    fp_ids_req(c, DIST__CMD_CANCEL, 1, (int[]){ 3 }, 1);
    fp_reply(c, 1, "ok", &mm, &rp);
    dist__inmsg_clear(&mm);
    fp_res_t res[1];
    fp_results(c, res, 1);
    assert_int_equal(res[0].status, DIST__ST_CANCELLED);
    s_sync(c, 1);
    s_kill9(pid);

    pid = s_program(x, NULL);
    s_rejoin(c, "c", NULL);
    fp_results(c, res, 1); /* the cancelled result, not acknowledged */
    assert_int_equal(res[0].status, DIST__ST_CANCELLED);
    assert_int_equal(fp_id_num(&res[0].id), 3);
    const char *want[3] = { "delayed", "delayed", "cancelled" };
    uint64_t nb[2] = { 0, 0 };
    for (int i = 0; i < 3; i++) {
        dist__task_info_t ti;
        s_lookup(c, i + 1, &mm, &ti);
        assert_true(s_is(ti.state, want[i]));
        if (i < 2)
            nb[i] = ti.not_before_ms;
        dist__inmsg_clear(&mm);
    }
    s_rejoin(w, "w", t);
    for (int i = 0; i < 2; i++) {
        s_take(w, g, 1);
        int id = fp_id_num(&g[0].id);
        assert_true(id == 1 || id == 2);
        assert_true((uint64_t)s_unix_ms() + 5 >= nb[id - 1]);
        fp_result(w, &g[0].id, g[0].attempt, DIST__ST_OK, "v");
    }
    fp_res_t rr[2];
    fp_results(c, rr, 2);
    dt_signal(pid, SIGTERM);
    assert_int_equal(dt_wait(pid, 10000), 0);
    zsock_destroy(&w);
    zsock_destroy(&c);
}

/* A store written before task control (schema 1) is migrated in place. */
static void test_schema_1_is_migrated(void **state)
{
    (void)state;
    scratch_t *x = s_scratch();
    s_sql(x->db, "PRAGMA application_id = 1145656148; PRAGMA user_version = 1;"
                 "CREATE TABLE meta(key TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID;"
                 "CREATE TABLE names(name BLOB PRIMARY KEY NOT NULL) WITHOUT ROWID;"
                 "CREATE TABLE tasks(row INTEGER PRIMARY KEY, id BLOB NOT NULL, client BLOB NOT "
                 "NULL, task BLOB NOT NULL, done INTEGER NOT NULL, leased INTEGER NOT NULL, "
                 "attempt INTEGER NOT NULL, timeout_ms INTEGER NOT NULL, status TEXT, data BLOB, "
                 "reasons TEXT);"
                 "INSERT INTO names(name) VALUES(x'74');"
                 "INSERT INTO tasks VALUES(1, x'07000000a5a5a5a5a5a5a5a5a5a5a5a5', x'63', x'74', 0, 0, "
                 "1, 0, NULL, x'9101', NULL);");
    dist_master_t *m = s_start(x, "m");
    zsock_t *c = fp_client(m, "c", NULL);
    zsock_t *w = fp_worker(m, "w", 1, 1, "t");
    fp_keep_alive(w, c);
    fp_task_t g[1];
    s_take(w, g, 1);
    assert_int_equal(fp_id_num(&g[0].id), 7);
    s_answer(w, g);
    fp_res_t res[1];
    fp_results(c, res, 1);
    s_sync(c, 8);
    zsock_destroy(&w);
    zsock_destroy(&c);
    dist_master_destroy(&m);
    sqlite3 *h;
    assert_int_equal(sqlite3_open_v2(x->db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), DIST__STORE_SCHEMA);
    sqlite3_finalize(q);
    assert_int_equal(sqlite3_prepare_v2(h, "SELECT priority, not_before_ms FROM tasks", -1, &q,
                                        NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW); /* 7's result, and 8 */
    sqlite3_finalize(q);
    sqlite3_close(h);
    assert_int_equal(s_rows(x->db, "dead"), 0); /* schema 4's tables exist */
    assert_int_equal(s_rows(x->db, "tombs"), 0);
}

/* ---- files that are not a store this master can use ------------------------------------- */

static char g_last_error[1024];

static void s_keep_error(dist_log_level_t level, const char *component, const char *msg, void *ud)
{
    (void)component;
    (void)ud;
    if (level == DIST_LOG_ERROR)
        snprintf(g_last_error, sizeof g_last_error, "%s", msg);
}

/* dist_master_new on the store fails with errno `err` and a logged
 * reason containing `why`. */
static void s_refused(const char *db, int err, const char *why)
{
    dist_master_opts_t o = { .bind = "tcp://127.0.0.1:0", .store = db, .log = s_keep_error };
    g_last_error[0] = 0;
    errno = 0;
    dist_master_t *m = dist_master_new(&o);
    if (m) {
        dist_master_destroy(&m);
        fail_msg("%s was accepted as a store", db);
    }
    if (err)
        assert_int_equal(errno, err);
    if (!strstr(g_last_error, why))
        fail_msg("expected \"%s\" in \"%s\"", why, g_last_error);
}

static void s_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_bad_store_files(void **state)
{
    (void)state;
    scratch_t *x = s_scratch();
    char path[256];

    snprintf(path, sizeof path, "%.63s/no/such/dir/s.db", x->dir);
    s_refused(path, 0, "cannot open the store");

    snprintf(path, sizeof path, "%.63s/text.db", x->dir);
    s_write_file(path, "this is not a database, it is a text file that is long enough to "
                       "fill the first hundred bytes of an SQLite header and then some more.\n");
    s_refused(path, EINVAL, "is not a libdist store (not an SQLite database)");

    snprintf(path, sizeof path, "%.63s/other.db", x->dir);
    s_sql(path, "CREATE TABLE notes(x)");
    s_refused(path, EINVAL, "an SQLite database of another program");

    /* A store of a newer schema. */
    dist_master_t *m = s_start(x, "m");
    dist_master_destroy(&m);
    s_sql(x->db, "PRAGMA user_version = 99");
    s_refused(x->db, ENOTSUP, "written by a newer libdist");
    char restore[64];
    snprintf(restore, sizeof restore, "PRAGMA user_version = %d", DIST__STORE_SCHEMA);
    s_sql(x->db, restore);

    /* A damaged row. */
    s_sql(x->db, "INSERT INTO tasks(row, id, client, task, done, leased, attempt, timeout_ms, "
                 "data) VALUES(7, x'0102', 'c', 't', 0, 0, 1, 0, x'90')");
    s_refused(x->db, EINVAL, "task row 7 has a bad id");
    s_sql(x->db, "DELETE FROM tasks");

    /* In use by another master. */
    m = s_start(x, "m");
    s_refused(x->db, EBUSY, "in use by another process");
    dist_master_destroy(&m);

    /* Not writable: a read-only file system (root ignores file modes). */
    if (geteuid() == 0) {
        snprintf(x->mnt, sizeof x->mnt, "%.63s/mnt", x->dir);
        assert_int_equal(mkdir(x->mnt, 0700), 0);
        if (mount("tmpfs", x->mnt, "tmpfs", 0, "size=1m") == 0) {
            char ro[256];
            snprintf(ro, sizeof ro, "%s/s.db", x->mnt);
            dist_master_opts_t o = { .bind = "tcp://127.0.0.1:0", .store = ro };
            m = dist_master_new(&o);
            assert_non_null(m);
            dist_master_destroy(&m);
            assert_int_equal(mount("tmpfs", x->mnt, "tmpfs", MS_REMOUNT | MS_RDONLY, "size=1m"), 0);
            s_refused(ro, 0, "not writable");
        } else {
            x->mnt[0] = 0;
        }
    } else {
        assert_int_equal(chmod(x->db, 0444), 0);
        s_refused(x->db, EACCES, "not writable");
    }

    /* The program says why and exits 1. */
    snprintf(path, sizeof path, "%.63s/text.db", x->dir);
    char out[8192];
    int fd;
    const dt_spawn_opts_t piped = { .out = { DT_IO_PIPE, NULL, &fd }, .err = { DT_IO_STDOUT } };
    const char *const argv[] = { DIST_MASTER_BIN, "--bind", x->ep, "--store", path, NULL };
    pid_t pid = dt_spawn(argv, &piped);
    assert_true(dt_read_until(fd, "not a libdist store", out, sizeof out, 5000));
    close(fd);
    assert_int_equal(dt_wait(pid, 10000), 1);
}

static void test_program_flags(void **state)
{
    (void)state;
    char out[16384];
    int fd;
    const dt_spawn_opts_t piped = { .out = { DT_IO_PIPE, NULL, &fd }, .err = { DT_IO_STDOUT } };
    const dt_spawn_opts_t quiet = { .out = { DT_IO_NULL }, .err = { DT_IO_NULL } };
    pid_t pid = dt_spawn((const char *const[]){ DIST_MASTER_BIN, "--help", NULL }, &piped);
    assert_true(dt_read_until(fd, "Exit status", out, sizeof out, 5000));
    close(fd);
    assert_int_equal(dt_wait(pid, 10000), 0);
    assert_non_null(strstr(out, "--store FILE"));
    assert_non_null(strstr(out, "everything is in memory"));
    assert_non_null(strstr(out, "--store-fsync"));
    const char *const bad1[] = { DIST_MASTER_BIN, "--store-fsync", NULL };
    const char *const bad2[] = { DIST_MASTER_BIN, "--store", "", NULL };
    assert_int_equal(dt_wait(dt_spawn(bad1, &quiet), 10000), 2);
    assert_int_equal(dt_wait(dt_spawn(bad2, &quiet), 10000), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_restart_keeps_everything, s_teardown),
        cmocka_unit_test_teardown(test_kill9_keeps_accepted_and_results, s_teardown),
        cmocka_unit_test_teardown(test_kill9_soak, s_teardown),
        cmocka_unit_test_teardown(test_failed_commits_refuse_then_resume, s_teardown),
        cmocka_unit_test_teardown(test_disk_full, s_teardown),
        cmocka_unit_test_teardown(test_io_error, s_teardown),
        cmocka_unit_test_teardown(test_bad_store_files, s_teardown),
        cmocka_unit_test_teardown(test_attempts_survive_restart, s_teardown),
        cmocka_unit_test_teardown(test_task_control_survives_restart, s_teardown),
        cmocka_unit_test_teardown(test_kill9_with_delayed_retrying_cancelled, s_teardown),
        cmocka_unit_test_teardown(test_dead_letters_and_tombstones_survive_restart, s_teardown),
        cmocka_unit_test_teardown(test_schema_1_is_migrated, s_teardown),
        cmocka_unit_test_teardown(test_program_flags, s_teardown),
    };
    if (getenv("DIST_TEST_FILTER"))
        cmocka_set_test_filter(getenv("DIST_TEST_FILTER"));
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    zsys_shutdown();
    return rc;
}

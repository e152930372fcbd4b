/*  fuzz_master.c - libFuzzer harness for the master's message handler.
 *
 *  Each input is a session: a sequence of records that eight peers (fixed
 *  routing ids) send to one master, with the passing of time and a few
 *  events in between. The master is real (dist_master_new on an inproc
 *  endpoint) but no socket carries anything: dist__m_feed() hands each
 *  message's frames to the loop's per-message handler, dist__m_turn() runs
 *  the rest of a loop turn (timers, the store's commit, dispatch, results)
 *  at a time the input chooses, and a sink takes everything the master
 *  sends. The first byte chooses a master without a store or with one (a
 *  file in /dev/shm, started fresh for each input), which the session may
 *  restart.
 *
 *  Record format (big-endian lengths; a record cut short by the end of
 *  the input is dropped):
 *
 *    op 0x00-0xEF  a message from peer op & 7 with ((op >> 3) & 7) frames
 *                  (0-4; 5-7 mean 3), each a u16 length and its bytes
 *    op 0xF0       a loop turn after u16 milliseconds
 *    op 0xF1       peer (byte & 7) is sent to as byte >> 3 & 3 says:
 *                  0 ok, 1 its pipe is full (EAGAIN), 2 it is gone
 *    op 0xF2       the master restarts on its store (a clean stop)
 *    op 0xF3       the next (byte & 3) commits fail as on a full disk
 *    others        a loop turn at the same time
 *
 *  Invariants, checked with abort() so that libFuzzer reports them: every
 *  message the master sends is one of its commands with a body that is a
 *  valid map within the protocol's limits; after every turn the master's
 *  state is consistent (dist__m_check); a restart after a successful
 *  commit brings back exactly as many tasks as there were. Crashes, leaks
 *  and memory growth are ASan's and libFuzzer's to find: run with
 *  -malloc_limit_mb=256 -rss_limit_mb=1024 (scripts/fuzz does).
 */
#include <dist.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "master_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PEERS 8
#define OP_TURN_AFTER 0xF0
#define OP_SEND_MODE 0xF1
#define OP_RESTART 0xF2
#define OP_FAIL 0xF3

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_master: %s:%d: invariant failed: %s: ", __FILE__, __LINE__,     \
                    #cond);                                                                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    const uint8_t *p, *end;
} s_in_t;

typedef struct {
    dist_master_t *m;
    int mode[PEERS];     /* 0 ok, 1 EAGAIN, 2 gone */
    char store[128];
    unsigned serial;
    bool trace;
    dist_wire_limits_t limits;
} s_session_t;

static bool s_take(s_in_t *in, void *out, size_t n)
{
    if ((size_t)(in->end - in->p) < n)
        return false;
    if (out)
        memcpy(out, in->p, n);
    in->p += n;
    return true;
}

static bool s_u16(s_in_t *in, uint16_t *v)
{
    uint8_t b[2];
    if (!s_take(in, b, 2))
        return false;
    *v = (uint16_t)(b[0] << 8 | b[1]);
    return true;
}

static void s_rid(int peer, uint8_t rid[5])
{
    /* The shape of ids libzmq picks: a zero byte, then four. */
    rid[0] = 0;
    rid[1] = 0x6b;
    rid[2] = 0x8b;
    rid[3] = 0x45;
    rid[4] = (uint8_t)peer;
}

/* Whatever the master sends, its peers' parsers (net/proto_msg.c) take. */
static void s_check_body(dist__cmd_t cmd, const void *body, size_t len,
                         const dist_wire_limits_t *lim)
{
    dist_wire_msg_t *m = dist_wire_msg_decode(body, len, lim, NULL);
    CHECK(m != NULL, "%s body does not decode", dist__cmd_name(cmd));
    const msgpack_object *o = dist_wire_msg_root(m), *items;
    size_t n;
    int rc = 0;
    switch (cmd) {
    case DIST__CMD_WELCOME: {
        dist__welcome_t w;
        rc = dist__parse_welcome(o, &w);
        break;
    }
    case DIST__CMD_ERROR: {
        dist__error_t e;
        rc = dist__parse_error(o, &e);
        break;
    }
    case DIST__CMD_QREPLY: {
        dist__qreply_t r;
        rc = dist__parse_qreply(o, &r);
        break;
    }
    case DIST__CMD_STATUS: {
        dist__status_req_t r;
        rc = dist__parse_status_req(o, &r);
        break;
    }
    case DIST__CMD_ACCEPTED: {
        dist__accepted_t a;
        rc = dist__parse_accepted(o, &a);
        for (size_t i = 0; rc == 0 && i < a.nrejected; i++) {
            dist__reject_t r;
            rc = dist__parse_reject(&a.rejected[i], &r);
        }
        break;
    }
    case DIST__CMD_TASKS:
        rc = dist__parse_list(o, cmd, &items, &n);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            dist__task_t t;
            rc = dist__parse_task(&items[i], true, &t);
        }
        break;
    case DIST__CMD_RESULTS:
        rc = dist__parse_list(o, cmd, &items, &n);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            dist__result_t r;
            rc = dist__parse_result(&items[i], false, &r);
        }
        break;
    case DIST__CMD_CANCEL: { /* to a worker: ids only */
        dist__ids_req_t c;
        rc = dist__parse_ids_req(o, false, &c);
        break;
    }
    case DIST__CMD_REPLY: { /* LOOKUP, FETCH, CANCEL: each item parses, a result too */
        dist__reply_t r;
        rc = dist__parse_reply(o, &r);
        for (size_t i = 0; rc == 0 && r.list == DIST__REPLY_TASKS && i < r.nitems; i++) {
            dist__task_info_t t;
            rc = dist__parse_task_info(&r.items[i], &t);
        }
        if (rc == 0 && r.result_map) {
            dist__result_t res;
            rc = dist__parse_result(r.result_map, false, &res);
            CHECK(rc != 0 || dist__status_final(res.status), "FETCH answered a non-final result");
        }
        break;
    }
    default:
        break;
    }
    CHECK(rc == 0, "the master sent a %s its peers cannot parse", dist__cmd_name(cmd));
    dist_wire_msg_destroy(&m);
}

/* The task-control invariants (issue 12), seen from what the master sends:
 * a task in a TASKS is QUEUED (never DELAYED before its time, never DONE:
 * a cancelled task does not run again), and a result sent to a client is
 * the task's one final state (a cancelled task is never delivered as
 * done). The sink sees a TASKS before its tasks are marked leased. */
static void s_check_tasks(dist_master_t *m, dist__cmd_t cmd, const void *body, size_t len,
                          const dist_wire_limits_t *lim)
{
    if (!m || (cmd != DIST__CMD_TASKS && cmd != DIST__CMD_RESULTS))
        return;
    dist_wire_msg_t *msg = dist_wire_msg_decode(body, len, lim, NULL);
    const msgpack_object *items;
    size_t n;
    if (!msg || dist__parse_list(dist_wire_msg_root(msg), cmd, &items, &n)) {
        dist_wire_msg_destroy(&msg);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        dist__task_t t;
        dist__result_t r;
        if (cmd == DIST__CMD_TASKS && dist__parse_task(&items[i], true, &t) == 0) {
            const dist__mtask_t *mt = dist__m_task_find(m, &t.id);
            CHECK(mt && mt->state == DIST__T_QUEUED, "a TASKS carries a task that is not queued");
        } else if (cmd == DIST__CMD_RESULTS && dist__parse_result(&items[i], false, &r) == 0) {
            const dist__mtask_t *mt = dist__m_task_find(m, &r.id);
            CHECK(mt && mt->state == DIST__T_DONE && mt->status == r.status,
                  "a result sent to a client is not its task's final state");
        }
    }
    dist_wire_msg_destroy(&msg);
}

/* Every message the master sends: check it, and answer as the input said
 * the peer's pipe is. */
static int s_sink(void *ud, const uint8_t *rid, size_t rid_len, dist__cmd_t cmd, const void *body,
                  size_t len)
{
    s_session_t *x = ud;
    static const uint8_t empty = 0x80;
    CHECK(cmd == DIST__CMD_WELCOME || cmd == DIST__CMD_RECONNECT || cmd == DIST__CMD_HEARTBEAT ||
              cmd == DIST__CMD_TASKS || cmd == DIST__CMD_RESULTS || cmd == DIST__CMD_ACCEPTED ||
              cmd == DIST__CMD_QREPLY || cmd == DIST__CMD_STATUS || cmd == DIST__CMD_ERROR ||
              cmd == DIST__CMD_REPLY || cmd == DIST__CMD_CANCEL,
          "the master sent %s", dist__cmd_name(cmd) ? dist__cmd_name(cmd) : "?");
    if (!body || !len) {
        body = &empty;
        len = 1;
    }
    int rc = dist_wire_validate(body, len, &x->limits);
    CHECK(rc == 0, "%s body does not validate (%d, %zu bytes)", dist__cmd_name(cmd), rc, len);
    uint8_t t = *(const uint8_t *)body;
    CHECK((t & 0xf0) == 0x80 || t == 0xde || t == 0xdf, "%s body is not a map",
          dist__cmd_name(cmd));
    s_check_body(cmd, body, len, &x->limits);
    s_check_tasks(x->m, cmd, body, len, &x->limits);
    if (x->trace) {
        /* FUZZ_MASTER_TRACE=1: what the master says, for reading seeds. */
        char code[64] = "";
        dist_wire_msg_t *m = dist_wire_msg_decode(body, len, &x->limits, NULL);
        dist__error_t e;
        if (m && cmd == DIST__CMD_ERROR && dist__parse_error(dist_wire_msg_root(m), &e) == 0)
            snprintf(code, sizeof code, " %.*s", (int)e.code.n, e.code.s);
        dist_wire_msg_destroy(&m);
        fprintf(stderr, "-> peer %d: %s%s (%zu bytes)\n", rid_len == 5 ? rid[4] : -1,
                dist__cmd_name(cmd), code, len);
    }
    if (rid_len == 5 && rid[0] == 0 && rid[4] < PEERS) {
        int mode = x->mode[rid[4]];
        return mode == 1 ? DIST_EAGAIN : mode == 2 ? -EHOSTUNREACH : 0;
    }
    return 0;
}

static void s_check(dist_master_t *m)
{
    const char *why = dist__m_check(m);
    CHECK(!why, "%s", why);
}

static dist_master_t *s_master(s_session_t *x)
{
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://fuzz-master-%u", x->serial++);
    /* Leases shorter than the heartbeat timeout: tasks with a timeout
     * reach lease expiry (and ghosts) as easily as a worker's death (the
     * others have their leases renewed while their worker lives). */
    dist_master_opts_t o = { .bind = ep, .name = "fuzz", .store = x->store[0] ? x->store : NULL,
                             .max_queued = 1000, .max_results = 1000, .max_attempts = 3,
                             .heartbeat_timeout_ms = 20000, .lease_ms = 8000 };
    dist_master_t *m = dist_master_new(&o);
    CHECK(m, "dist_master_new: %s", strerror(errno));
    dist__m_set_sink(m, s_sink, x);
    s_check(m);
    return m;
}

static void s_remove_store(const s_session_t *x)
{
    char path[160];
    unlink(x->store);
    snprintf(path, sizeof path, "%s-wal", x->store);
    unlink(path);
    snprintf(path, sizeof path, "%s-journal", x->store);
    unlink(path);
}

/* A clean stop (everything committed when the store can write), then a
 * new master on the same file: it must hold every task there was. */
static void s_restart(s_session_t *x)
{
    dist_master_t *m = x->m;
    dist__m_turn(m, dist__m_now(m));
    bool clean = !m->store_failed && !m->sd_head && !m->sq_head;
    size_t tasks = m->outstanding + m->results_waiting;
    dist_master_destroy(&x->m);
    x->m = s_master(x);
    if (clean)
        CHECK(x->m->outstanding + x->m->results_waiting == tasks,
              "%zu task(s) before the restart, %zu after", tasks,
              x->m->outstanding + x->m->results_waiting);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static s_session_t x;
    if (size < 1)
        return 0;
    memset(x.mode, 0, sizeof x.mode);
    x.limits = dist__body_limits(0);
    x.trace = getenv("FUZZ_MASTER_TRACE") != NULL;
    x.store[0] = 0;
    if (data[0] & 1) {
        snprintf(x.store, sizeof x.store, "/dev/shm/fuzz_master_%d.db", (int)getpid());
        s_remove_store(&x);
    }
    x.m = s_master(&x);
    s_in_t in = { data + 1, data + size };
    uint8_t op;
    while (s_take(&in, &op, 1)) {
        dist_master_t *m = x.m;
        if (op < 0xF0) {
            int peer = op & 7, nframes = (op >> 3) & 7;
            if (nframes > 4)
                nframes = 3;
            const void *frames[4];
            size_t lens[4];
            bool whole = true;
            for (int i = 0; i < nframes && whole; i++) {
                uint16_t len;
                whole = s_u16(&in, &len);
                frames[i] = in.p;
                lens[i] = len;
                whole = whole && s_take(&in, NULL, len);
            }
            if (!whole)
                break;
            uint8_t rid[5];
            s_rid(peer, rid);
            dist__m_feed(m, rid, sizeof rid, frames, lens, (size_t)nframes);
        } else if (op == OP_TURN_AFTER) {
            uint16_t ms;
            if (!s_u16(&in, &ms))
                break;
            dist__m_turn(m, dist__m_now(m) + ms);
            s_check(m);
        } else if (op == OP_SEND_MODE) {
            uint8_t b;
            if (!s_take(&in, &b, 1))
                break;
            x.mode[b & 7] = (b >> 3) & 3;
            if (x.mode[b & 7] == 3)
                x.mode[b & 7] = 0;
        } else if (op == OP_RESTART) {
            if (x.store[0])
                s_restart(&x);
        } else if (op == OP_FAIL) {
            uint8_t b;
            if (!s_take(&in, &b, 1))
                break;
            dist__m_fail_commits(m, b & 3, -ENOSPC);
        } else {
            dist__m_turn(m, dist__m_now(m));
            s_check(m);
        }
    }
    dist__m_turn(x.m, dist__m_now(x.m));
    s_check(x.m);
    dist_master_destroy(&x.m);
    if (x.store[0])
        s_remove_store(&x);
    return 0;
}

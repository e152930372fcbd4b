/*  master_internal.h - the state of a master and how its files share it.
 *
 *  The master is one event loop over one ROUTER socket (master.c). Its
 *  state is a handful of indexes over five kinds of objects:
 *
 *  - peers (dist__mpeer_t): one per routing id that said HELLO (a worker
 *    or a client), or that misbehaved before it did (a "stranger", kept
 *    only to count its malformed messages and to ban it);
 *  - task queues (dist__mtq_t): one per task name announced by a worker,
 *    holding the FIFO of QUEUED tasks and the workers that run the name;
 *  - tasks (dist__mtask_t): one allocation each, arguments inline, found
 *    by id in an open-addressing hash index; a task is in exactly one list
 *    at a time: its queue's ready list (QUEUED), its worker's leased list
 *    (LEASED), or its client's unsent/sent result list (DONE);
 *  - client names (dist__mclient_t): where results wait for the client
 *    name that submitted them, connected or not;
 *  - named queues (dist__mnq_t): opaque items plus parked QPUT/QGET
 *    requests (master_queue.c).
 *
 *  Lists are intrusive and circular (dist__dlist_t), deadlines live in one
 *  binary min-heap of intrusive nodes (dist__hnode_t) shared by leases,
 *  cancelled leases ("ghosts") and parked requests. Nothing here is
 *  thread-safe: only the loop's thread touches it.
 *
 *  Files: master.c (lifecycle, loop, sessions, sending, timers),
 *  master_task.c (tasks, dispatch, results), master_queue.c (named
 *  queues), master_status.c (STATUS, counters and rates), master_store.c
 *  (the durable store: what is written when, recovery, failures) over
 *  store.c (SQLite), master_check.c (a consistency check for tests and
 *  the fuzzer).
 */
#ifndef DIST_MASTER_INTERNAL_H_INCLUDED
#define DIST_MASTER_INTERNAL_H_INCLUDED

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dist/master.h"
#include "hmap_internal.h"
#include "log_internal.h"
#include "proto_internal.h"
#include "security_internal.h"
#include "store_internal.h"

#define DIST__CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* ---- intrusive circular lists --------------------------------------------------- */

typedef struct dist__dnode {
    struct dist__dnode *prev, *next; /* next NULL: not in a list */
} dist__dnode_t;

typedef struct {
    dist__dnode_t root;
    size_t n;
} dist__dlist_t;

static inline void dist__dl_init(dist__dlist_t *l)
{
    l->root.prev = l->root.next = &l->root;
    l->n = 0;
}

static inline bool dist__dl_empty(const dist__dlist_t *l) { return l->n == 0; }
static inline bool dist__dn_linked(const dist__dnode_t *d) { return d->next != NULL; }

static inline dist__dnode_t *dist__dl_first(const dist__dlist_t *l)
{
    return l->n ? l->root.next : NULL;
}

static inline dist__dnode_t *dist__dl_last(const dist__dlist_t *l)
{
    return l->n ? l->root.prev : NULL;
}

/* The node after d in l, or NULL. */
static inline dist__dnode_t *dist__dl_next(const dist__dlist_t *l, const dist__dnode_t *d)
{
    return d->next == &l->root ? NULL : d->next;
}

static inline void dist__dl_insert_after(dist__dlist_t *l, dist__dnode_t *at, dist__dnode_t *d)
{
    d->prev = at;
    d->next = at->next;
    at->next->prev = d;
    at->next = d;
    l->n++;
}

static inline void dist__dl_push_back(dist__dlist_t *l, dist__dnode_t *d)
{
    dist__dl_insert_after(l, l->root.prev, d);
}

static inline void dist__dl_push_front(dist__dlist_t *l, dist__dnode_t *d)
{
    dist__dl_insert_after(l, &l->root, d);
}

static inline void dist__dl_remove(dist__dlist_t *l, dist__dnode_t *d)
{
    d->prev->next = d->next;
    d->next->prev = d->prev;
    d->next = d->prev = NULL;
    l->n--;
}

static inline dist__dnode_t *dist__dl_pop_front(dist__dlist_t *l)
{
    dist__dnode_t *d = dist__dl_first(l);
    if (d)
        dist__dl_remove(l, d);
    return d;
}

/* Moves every node of `from` to the front of `to`, keeping their order. */
static inline void dist__dl_splice_front(dist__dlist_t *to, dist__dlist_t *from)
{
    if (!from->n)
        return;
    dist__dnode_t *first = from->root.next, *last = from->root.prev;
    last->next = to->root.next;
    to->root.next->prev = last;
    first->prev = &to->root;
    to->root.next = first;
    to->n += from->n;
    dist__dl_init(from);
}

/* Moves d to the back of l (linking it when it is not in l yet). */
static inline void dist__dl_move_back(dist__dlist_t *l, dist__dnode_t *d)
{
    if (dist__dn_linked(d))
        dist__dl_remove(l, d);
    dist__dl_push_back(l, d);
}

/* ---- deadlines: one binary min-heap of intrusive nodes ------------------------------ */

typedef enum {
    DIST__TIMER_LEASE = 1,
    DIST__TIMER_GHOST,
    DIST__TIMER_PARK,
    DIST__TIMER_DUE,   /* a DELAYED task's not_before (master_task.c) */
    DIST__TIMER_FETCH, /* a parked FETCH (master_control.c) */
} dist__timer_kind_t;

typedef struct {
    int64_t at;   /* monotonic ms */
    uint32_t idx; /* position in the heap; UINT32_MAX when not in it */
    uint8_t kind; /* dist__timer_kind_t */
} dist__hnode_t;

typedef struct {
    dist__hnode_t **v;
    size_t n, cap;
} dist__heap_t;

/* ---- objects ------------------------------------------------------------------------ */

/* The options a task keeps from its SUBMIT (issue 12), copied whole
 * between a task and its dead letter. */
typedef struct {
    uint8_t prio;            /* 0..9, higher first */
    uint8_t retry_on_error;  /* a failed result is retried too */
    uint16_t max_attempts;   /* 0: the master's --max-attempts */
    uint32_t backoff_ms, backoff_max_ms;
    float backoff_factor;
} dist__mopts_t;

/* The name that indexes a task queue, a client name or a named queue. It
 * is the first member of each, so that one equality serves the three
 * indexes (dist__m_named_find / dist__m_named_new). */
typedef struct {
    uint64_t hash;
    size_t len;
    char name[DIST__NAME_MAX + 1];
} dist__mkey_t;

typedef struct dist__mpeer dist__mpeer_t;
typedef struct dist__mtq dist__mtq_t;
typedef struct dist__mclient dist__mclient_t;
typedef struct dist__mnq dist__mnq_t;
typedef struct dist__mobs dist__mobs_t;

/* A task's states (docs/PROTOCOL.md section 6.1). Only the transition
 * functions of master_task.c assign one; each asserts its legal from-states
 * (DIST__T_BIT), so a new state is one enum value, its transitions and
 * their from-sets. NONE: being created or recovered, in no list. */
typedef enum {
    DIST__T_NONE = 0,
    DIST__T_QUEUED,
    DIST__T_LEASED,
    DIST__T_DONE,    /* final: ok, failed, gave_up or cancelled (t->status) */
    DIST__T_DELAYED, /* before its time, or waiting for a retry's backoff: in the timer heap only */
} dist__tstate_t;
#define DIST__T_BIT(st) (1u << (st))

/* What the store must write for a task or a task name at the next commit
 * (sflags). A changed object is put once on the master's dirty list. */
enum {
    DIST__S_DIRTY = 1,  /* on the dirty list */
    DIST__S_NEW = 2,    /* not in the store yet */
    DIST__S_LEASE = 4,  /* leased since the last commit */
    DIST__S_META = 8,   /* attempt, reasons or lease changed otherwise */
    DIST__S_DONE = 16,  /* DONE since the last commit */
    DIST__S_GONE = 32,  /* forgotten by the master: delete, then free at the commit */
};

/* A task's attempts so far (issue 12), kept until its result is
 * acknowledged or expires: NULL until an attempt ends, so a task that
 * never failed costs nothing while it waits. Records, oldest first, of
 * [attempt u32 LE][worker length u8][reason length u8][worker][reason]
 * (the newest DIST__HIST_MAX, reasons cut to DIST__HIST_REASON_MAX bytes);
 * once DONE the task name follows them (t->q is NULL then). The records
 * are also the store's attempts column and a dead letter's history. */
#define DIST__HIST_MAX 64
#define DIST__HIST_REASON_MAX 200
typedef struct {
    uint32_t len;  /* bytes of records in b */
    uint16_t n;    /* records */
    uint8_t tlen;  /* bytes of the task name after them (DONE), else 0 */
    uint8_t b[];
} dist__mhist_t;

typedef struct dist__mtask {
    dist__dnode_t node;      /* in q->ready, worker->leased, or cn->unsent / cn->sent */
    dist__hnode_t timer;     /* lease deadline while LEASED, due time while DELAYED */
    dist__id_t id;
    dist__mtq_t *q;          /* its task name; NULL once DONE */
    dist__mclient_t *cn;     /* the client name that submitted it */
    dist__mpeer_t *worker;   /* the lessee while LEASED */
    dist__mhist_t *hist;     /* its attempts once one ended (and its name once DONE), else NULL */
    uint8_t *res;            /* DONE: result bytes when they did not fit in data[] */
    uint32_t attempt;        /* the current (or next) attempt, from 1 */
    uint32_t timeout_ms;
    uint32_t len;            /* bytes of args (QUEUED, LEASED) or of the result (DONE) */
    uint32_t cap;            /* size of data[] */
    uint8_t state;           /* dist__tstate_t */
    uint8_t status;          /* DONE: dist__status_t */
    uint8_t sent;            /* DONE: in cn->sent (else cn->unsent) */
    uint8_t sflags;          /* DIST__S_*: what the store must write */
    struct dist__mtask *snext; /* next on the store's dirty list */
    int64_t srow;            /* its row in the store (with --store) */
    int64_t accepted_at;     /* monotonic ms of its SUBMIT (or of its recovery) */
    /* task control (issue 12): the options of its SUBMIT, and its times */
    char *key;               /* the caller's id string, or NULL */
    dist__mopts_t o;
    int64_t not_before_ms;   /* unix ms: DELAYED until then (0: not delayed) */
    int64_t submitted_ms, started_ms, finished_ms; /* unix ms, 0 when not yet */
    uint8_t data[];          /* the args; later the result when it fits */
} dist__mtask_t;

/* The bytes of a task's args or result. */
static inline const uint8_t *dist__mtask_bytes(const dist__mtask_t *t)
{
    return t->res ? t->res : t->data;
}

/* A lease that was cancelled while its worker may still run the task
 * (lease expired, or the task completed elsewhere): it keeps counting in
 * the worker's credit until the worker answers for that id, or until its
 * deadline. */
typedef struct {
    dist__dnode_t node;      /* in worker->ghosts */
    dist__hnode_t timer;
    dist__id_t id;
    dist__mpeer_t *worker;
} dist__mghost_t;

/* A worker's announced name and its slot in that queue's worker array. */
typedef struct {
    dist__mtq_t *q;
    uint32_t qi;
} dist__mname_t;

struct dist__mtq {
    dist__mkey_t key;        /* the task name */
    dist__dnode_t all;       /* in s->tqs */
    dist__dnode_t dirty;     /* in s->dirty_tqs while dispatch should look at it */
    dist__dlist_t lv[DIST__PRIORITY_LEVELS]; /* QUEUED tasks, one FIFO per priority */
    uint16_t mask;           /* bit p: lv[p] is not empty */
    size_t nready;           /* QUEUED tasks, every level */
    size_t in_flight;        /* LEASED tasks */
    size_t delayed;          /* DELAYED tasks */
    size_t refs;             /* tasks QUEUED, DELAYED or LEASED */
    struct {
        dist__mpeer_t *w;
        uint32_t wi;         /* index of this queue in w->names */
    } *ws;                   /* workers that announced the name */
    size_t nws, capws;
    dist__dnode_t notice;    /* in s->notice_tqs: its workers changed (dist__m_notices) */
    bool served;             /* it had workers at the last look */
    bool told;               /* a client heard that no worker offers it */
    struct dist__mtq *snext; /* next on the store's dirty list of names */
    uint8_t sflags;          /* DIST__S_DIRTY, _NEW (not stored yet), _GONE */
    struct dist__mstat *stat; /* its counters for the metrics (master_obs.c), or NULL */
};

/* The FIFO dispatch takes from: the highest non-empty priority (strict
 * priority: O(1) with the mask). NULL when nothing is QUEUED. */
static inline dist__dlist_t *dist__mtq_top(dist__mtq_t *q)
{
    return q->mask ? &q->lv[31 - __builtin_clz((unsigned)q->mask)] : NULL;
}

typedef enum { DIST__ROLE_NONE = 0, DIST__ROLE_WORKER, DIST__ROLE_CLIENT } dist__role_t;

struct dist__mpeer {
    dist__dnode_t live;      /* in s->live, ordered by last_seen */
    dist__dnode_t hb;        /* in s->hb, ordered by last_sent (welcomed peers) */
    dist__dnode_t dirty;     /* in s->dirty_workers (free credit to fill) */
    dist__dnode_t blocked;   /* in s->blocked (outbox to flush, or TASKS to retry) */
    dist__dnode_t reap;      /* in s->reap (gone: forget at the next safe point) */
    dist__dnode_t holdn;     /* in s->held: its replies wait for the store's commit */
    int role;                /* dist__role_t */
    bool banned;             /* replies only ERROR banned */
    bool gone;               /* its connection is gone (EHOSTUNREACH) */
    bool replaced;           /* a client whose name a newer connection took over */
    uint32_t bad_in_a_row;   /* malformed messages since the last good one */
    uint32_t answers;        /* without a session: replies in the second from answers_at */
    int64_t answers_at;
    int64_t last_seen, last_sent, joined;
    uint32_t pid;
    char name[DIST__NAME_MAX + 1];
    char host[DIST__NAME_MAX + 1];
    char version[64];
    /* worker */
    uint32_t slots, capacity;
    size_t held;             /* leased + ghosts: what counts against capacity */
    dist__dlist_t leased;    /* dist__mtask_t, in lease order */
    dist__dlist_t ghosts;    /* dist__mghost_t */
    dist__mname_t *names;
    size_t nnames;
    uint64_t done, failed;   /* results received: ok, other */
    /* client */
    dist__mclient_t *cn;
    dist__dlist_t parked;    /* dist__mpark_t waiting for a named queue */
    dist__dlist_t fetches;   /* dist__mfetch_t: parked FETCHes (master_control.c) */
    /* messages that met the high-water mark, in order */
    dist__dlist_t outbox;
    size_t outbox_bytes;
    uint64_t hash;
    size_t rid_len;
    uint8_t rid[256];
};

struct dist__mclient {
    dist__mkey_t key;        /* the client name */
    dist__dnode_t dirty;     /* in s->dirty_clients while results should be sent */
    dist__mpeer_t *peer;     /* the connected peer with this name, or NULL */
    dist__dlist_t unsent;    /* DONE tasks not sent since the last HELLO */
    dist__dlist_t sent;      /* DONE tasks sent, not acknowledged */
    size_t pending;          /* tasks QUEUED or LEASED */
    uint64_t mark;           /* the last NOTICE round that reached it (dist__m_notices) */
};

/* An item of a named queue. */
typedef struct {
    uint32_t len;
    uint8_t data[];
} dist__mitem_t;

struct dist__mnq {
    dist__mkey_t key;        /* the queue's name */
    dist__dnode_t all;       /* in s->nqs */
    dist__mitem_t **ring;    /* items, a ring of cap starting at head */
    size_t head, n, cap;
    dist__dlist_t puts, gets; /* parked requests, in arrival order */
    bool pumping;            /* serving parked requests: do not re-enter, do not free */
    bool marked;             /* scratch flag for dist__m_unpark_peer */
};

/* A QPUT or QGET waiting for room or items. */
typedef struct {
    dist__dnode_t qnode;     /* in nq->puts or nq->gets */
    dist__dnode_t pnode;     /* in peer->parked */
    dist__hnode_t timer;
    dist__mpeer_t *peer;
    dist__mnq_t *nq;
    uint64_t req;
    uint32_t max;            /* QGET */
    bool put;
    size_t nitems;           /* QPUT */
    dist__mitem_t *items[];
} dist__mpark_t;

/* A message kept because the peer's pipe was full (EAGAIN), or because
 * the peer's replies wait for the store's commit (held). A QREPLY that
 * carries items keeps them, to put them back if it is never delivered.
 * An ACCEPTED whose tasks are not committed yet is kept as its SUBMIT
 * (sub, codes) and packed once the commit is done (bytes NULL until then). */
typedef struct {
    dist__dnode_t node;
    dist__cmd_t cmd;
    void *bytes;
    size_t len;
    size_t nitems;
    dist__mitem_t **items;
    dist_wire_msg_t *sub;    /* the SUBMIT an ACCEPTED answers */
    uint8_t *codes;          /* per task of sub: accepted, or why not */
    char queue[DIST__NAME_MAX + 1];
} dist__mout_t;

/* ---- the master ------------------------------------------------------------------- */

typedef struct {
    uint64_t submitted, completed, failed, retried, gave_up, dead_workers, malformed,
        refused_handshakes;
    uint64_t refused;      /* tasks of SUBMITs answered with a rejection */
    uint64_t late_results; /* results dropped: the task was done or had moved on */
    uint64_t disconnected; /* connections closed by the transport (an oversized frame, ...) */
    uint64_t cancelled;    /* tasks cancelled (CANCEL) */
    uint64_t expired_results; /* results dropped after --result-ttl */
} dist__mcounters_t;

#define DIST__RATE_SECONDS 10

/* Test and fuzzing hook: takes every message the master sends instead of
 * the socket. Returns 0, DIST_EAGAIN or -EHOSTUNREACH as a send would. */
typedef int (*dist__m_sink_fn)(void *ud, const uint8_t *rid, size_t rid_len, dist__cmd_t cmd,
                               const void *body, size_t len);

struct dist_master {
    dist__logger_t log;
    /* options, defaults resolved */
    char name[DIST__NAME_MAX + 1];
    char instance[DIST__INSTANCE_LEN + 1]; /* WELCOME instance: this run (or its store) */
    int hb_ms, hb_timeout_ms, max_attempts;
    int64_t lease_ms;
    int64_t result_ttl_ms;   /* 0: results wait forever */
    uint64_t jitter;         /* xorshift state of the retry backoff's jitter */
    size_t max_queued, max_results, max_message;
    /* I/O */
    zsock_t *sock;
    char *endpoint;
    dist_wire_limits_t limits;
    dist_wire_buf_t *out;    /* reused for every message packed */
    int wake[2];             /* stop pipe: read end polled by the loop */
    /* security (security_internal.h): NULL without CURVE */
    dist__zap_t *zap;
    zsock_t *mon;            /* failed handshakes of sock (NULL: not watched) */
    struct {                 /* rate limit of the refusal log lines, per kind */
        int64_t at;
        unsigned logged, quiet;
    } refused_log[5];
    size_t outbox_total;     /* outbox_bytes of every peer */
    atomic_bool stop;
    bool bye_said;           /* the peers heard BYE (a clean stop) */
    atomic_bool running;
    atomic_bool joinable;
    pthread_t thread;
    /* indexes */
    dist__hkey_t hkey;
    dist__hmap_t tasks;      /* dist__mtask_t by id */
    dist__hmap_t peers;      /* dist__mpeer_t by routing id */
    dist__hmap_t tq_index;   /* dist__mtq_t by name */
    dist__hmap_t cn_index;   /* dist__mclient_t by name */
    dist__hmap_t nq_index;   /* dist__mnq_t by name */
    dist__dlist_t tqs, nqs;
    dist__dlist_t live;      /* workers by last_seen (death) */
    dist__dlist_t idle;      /* clients and strangers by last_seen (forgetting) */
    dist__dlist_t hb;        /* welcomed peers by last_sent (our heartbeats) */
    dist__dlist_t dirty_tqs, dirty_workers, dirty_clients, blocked, reap;
    dist__dlist_t notice_tqs; /* task names whose workers changed this turn */
    uint64_t notice_round;   /* counts dist__m_notices' rounds of NOTICEs (cn->mark) */
    dist__heap_t timers;
    dist__dlist_t fetches;   /* every parked FETCH (dist__mfetch_t), master_control.c */
    struct dist__mctl *ctl;  /* master_control.c: tombstones and dead letters (NULL until used) */
    int64_t expire_at;       /* monotonic ms of the next look for expired results */
    size_t tq_gc_at;         /* sweep unused task names beyond this many */
    /* totals */
    size_t outstanding;      /* tasks QUEUED or LEASED */
    size_t results_waiting;  /* tasks DONE, not acknowledged */
    size_t nworkers, nclients;
    size_t npeers;
    dist__mcounters_t c;
    /* rates: per-second buckets */
    int64_t rate_sec[DIST__RATE_SECONDS + 1];
    uint64_t rate_sub[DIST__RATE_SECONDS + 1], rate_done[DIST__RATE_SECONDS + 1];
    /* time */
    int64_t now;             /* monotonic ms, refreshed once per loop turn */
    int64_t started;
    int64_t retry_at;        /* > 0: retry blocked sends then */
    int64_t busy_since;      /* > 0: the socket has not been drained since then */
    unsigned rr;             /* rotates ties in dispatch */
    /* dispatch scratch */
    struct dist__mcand *cand;
    size_t ncand, capcand;
    /* the durable store (NULL: in memory only), master_store.c */
    dist__store_t *store;
    bool store_failed;       /* the last commit failed: new tasks are refused */
    int64_t store_retry_at;  /* when failed: the next commit attempt */
    int64_t store_failed_at;
    int64_t next_row;        /* the row of the next new task */
    dist__mtask_t *sd_head, *sd_tail; /* tasks to write at the next commit */
    dist__mtq_t *sq_head, *sq_tail;   /* task names to write */
    dist__dlist_t held;      /* peers whose replies wait for the commit */
    size_t held_bytes;       /* SUBMIT bodies kept for them */
    atomic_uint fail_commits; /* test hook: commits to fail */
    atomic_int fail_err;
    /* the message being handled (SUBMIT keeps its body while held) */
    dist__inmsg_t *cur;
    dist__m_sink_fn sink;
    void *sink_ud;
    /* observability (master_obs.c): NULL without a metrics endpoint */
    dist__mobs_t *obs;
};

/* ---- master.c ---------------------------------------------------------------------- */

/* Sends a message packed in buf (an empty body when buf is NULL) to a
 * peer, keeping a copy in the peer's outbox when its pipe is full. A
 * QREPLY hands over its items (a malloc'd array of nitems) and the name of
 * their queue: they are freed once sent, and put back at the front of the
 * queue if the reply can never be delivered. Returns 0 (sent or kept), a
 * packing error, or -EHOSTUNREACH when the peer is gone (it is then marked
 * gone). */
int dist__m_send(dist_master_t *s, dist__mpeer_t *p, dist__cmd_t cmd, dist_wire_buf_t *buf,
                 const char *queue, dist__mitem_t **items, size_t nitems);

/* Tries a send once and keeps nothing (TASKS and RESULTS are rebuilt from
 * state): 0, DIST_EAGAIN (the peer is marked blocked and retried soon), or
 * an error (packing, or the peer is gone and marked so). */
int dist__m_try_send(dist_master_t *s, dist__mpeer_t *p, dist__cmd_t cmd, dist_wire_buf_t *buf);

/* Counts and answers a message whose body does not fit its command. */
void dist__m_malformed(dist_master_t *s, dist__mpeer_t *p, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sends ERROR {code, error[, req]} to a peer (through dist__m_send). */
void dist__m_error(dist_master_t *s, dist__mpeer_t *p, const char *code, uint64_t req,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Marks a peer whose connection is gone, to be forgotten at the next safe
 * point (not at once: callers up the stack may still hold it). */
void dist__m_peer_gone(dist_master_t *s, dist__mpeer_t *p);

/* True when the peer can take another message now (not gone, nothing
 * waiting in its outbox). */
bool dist__m_peer_ready(const dist__mpeer_t *p);

/* Marks the peer blocked: retry its sends soon. */
void dist__m_block(dist_master_t *s, dist__mpeer_t *p);

/* Keeps the ACCEPTED for a SUBMIT (its body and the tasks' codes, both
 * taken) in the peer's outbox until dist__m_release_held, after the
 * commit; messages to the peer queue behind it. 0, DIST_ENOMEM or
 * -EHOSTUNREACH (nothing taken then). */
int dist__m_hold_accepted(dist_master_t *s, dist__mpeer_t *p, dist_wire_msg_t *sub,
                          uint8_t *codes);

/* Timers. */
int dist__m_timer_add(dist_master_t *s, dist__hnode_t *n, int64_t at, dist__timer_kind_t kind);
void dist__m_timer_del(dist_master_t *s, dist__hnode_t *n);
int dist__m_timer_reserve(dist_master_t *s, size_t more);

/* Name-keyed objects (they begin with a dist__mkey_t): the equality of
 * their indexes, lookup, and creation of a zeroed object of `size` bytes
 * that is added to the index (NULL without memory; the caller looked it
 * up first). */
bool dist__m_key_eq(const void *item, const void *key, size_t klen);
void *dist__m_named_find(dist_master_t *s, const dist__hmap_t *idx, const char *name, size_t len);
void *dist__m_named_new(dist_master_t *s, dist__hmap_t *idx, const char *name, size_t len,
                        size_t size);

/* "worker NAME (host H, pid P)" into buf. */
const char *dist__m_peer_desc(const dist__mpeer_t *p, char *buf, size_t len);

/* ---- master_task.c ------------------------------------------------------------------- */

/* Sets up the task, task-name and client-name indexes. */
void dist__m_tasks_init(dist_master_t *s);

void dist__m_submit(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root);
void dist__m_results(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root);
void dist__m_return(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root);
void dist__m_ack(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root);

/* Worker sessions: (re)announces names; 0 or DIST_ENOMEM. */
int dist__m_worker_names(dist_master_t *s, dist__mpeer_t *w, const msgpack_object *names,
                         size_t n);
/* The worker left (BYE), died, or is forgotten: requeue what it holds
 * (attempt + 1, with `why` as the reason), drop its ghosts and names. */
void dist__m_worker_release(dist_master_t *s, dist__mpeer_t *w, const char *why);
/* Its free credit may have grown: look at its queues in the next dispatch. */
void dist__m_worker_dirty(dist_master_t *s, dist__mpeer_t *w);

/* Client sessions: attach a peer to its name (re-sending every
 * unacknowledged result), or detach it. */
dist__mclient_t *dist__m_client_attach(dist_master_t *s, dist__mpeer_t *p, const char *name,
                                       size_t len);
void dist__m_client_detach(dist_master_t *s, dist__mpeer_t *p);

/* Expired timers. */
void dist__m_lease_expired(dist_master_t *s, dist__mtask_t *t);
void dist__m_ghost_expired(dist_master_t *s, dist__mghost_t *g);

/* Task names that lost their last worker, or got one back, this turn:
 * tells the connected clients with tasks of them QUEUED (NOTICE, section
 * 6.7). Before dispatch, while those tasks are still queued. */
void dist__m_notices(dist_master_t *s);

/* Runs dispatch for dirty queues and workers, then sends waiting results. */
void dist__m_dispatch(dist_master_t *s);
void dist__m_flush_results(dist_master_t *s);

/* Task queue by name (NULL when unknown). */
dist__mtq_t *dist__m_tq_find(dist_master_t *s, const char *name, size_t len);

/* Frees every task, queue, ghost and client name (destroy). */
void dist__m_tasks_free(dist_master_t *s);

/* Packs the ACCEPTED for a SUBMIT's tasks (body root) and their codes
 * into s->out. recheck: the store failed after they were accepted, so a
 * task that is not in the store after all is refused (store_failed). */
void dist__m_accepted_pack(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root,
                           uint8_t *codes, bool recheck);

/* Recovery, for master_store.c: a task name, a task row. 0 or a DIST_E code. */
int dist__m_restore_name(dist_master_t *s, const char *name, size_t len);
int dist__m_restore_task(dist_master_t *s, const dist__srow_t *r);

/* A new task whose insert could not be committed: forget it as if it had
 * never been submitted (it is QUEUED, never leased). */
void dist__m_unsubmit(dist_master_t *s, dist__mtask_t *t);

/* Frees a task's memory (it is in no index or list any more). */
void dist__m_task_free(dist__mtask_t *t);
/* Frees a task name's memory (out of the index and lists already). */
void dist__m_tq_free_mem(dist__mtq_t *q);

/* Sends the replies held for the commit: called after it. */
void dist__m_release_held(dist_master_t *s);

/* A task became DONE (master_control.c answers FETCHes parked on it). */
void dist__m_task_final(dist_master_t *s, dist__mtask_t *t);
/* A DELAYED task's time came. */
void dist__m_task_due(dist_master_t *s, dist__mtask_t *t);
/* The task of an id, or NULL. */
dist__mtask_t *dist__m_task_find(const dist_master_t *s, const dist__id_t *id);
/* The state name of a task (PLAN-12 names: queued, delayed, leased, done,
 * failed, cancelled). */
const char *dist__m_task_state(const dist__mtask_t *t);
/* The next record of a history's bytes b[0..len) from *off into a
 * (borrowing b): false at the end or at a damaged record. */
bool dist__m_hist_next(const uint8_t *b, size_t len, size_t *off, dist__attempt_info_t *a);
/* A task's name: its queue's, or the one its history kept once DONE ("" when lost). */
dist__str_t dist__m_task_name(const dist__mtask_t *t);
/* Cancels t (QUEUED, DELAYED or LEASED; the worker of a leased one is
 * told with CANCEL) with "cancelled by <by>" as its result. */
void dist__m_task_cancel(dist_master_t *s, dist__mtask_t *t, const char *by);
/* Unix ms now. */
int64_t dist__m_unix_ms(void);
/* A task's options as the store keeps them, and back. */
void dist__m_opts_to_row(const dist__mopts_t *o, dist__sopts_t *r);
dist__mopts_t dist__m_opts_of_row(const dist__sopts_t *r);

/* A dead letter: a task that ended failed (gave_up included, not
 * cancelled), kept with its args so that RETRY can submit it again. */
typedef struct {
    dist__dnode_t node;      /* in the control's list, oldest first */
    int64_t srow;            /* its row in the store's dead table: increasing */
    dist__id_t id;
    char *key;               /* or NULL */
    char *error;             /* its final error */
    char task[DIST__NAME_MAX + 1];
    char client[DIST__NAME_MAX + 1]; /* its submitter */
    dist__mopts_t o;
    uint32_t timeout_ms, attempts;
    int64_t submitted_ms, started_ms, finished_ms;
    uint8_t *hist;           /* its attempts' records (dist__mhist_t.b), or NULL */
    uint32_t hist_len;
    uint32_t len;            /* bytes of args */
    uint8_t args[];
} dist__mdead_t;

/* Results older than --result-ttl are forgotten (once a second at most):
 * each through dist__m_task_expire. */
void dist__m_expire_results(dist_master_t *s);
/* DONE -> gone after the TTL: counted, its id remembered as expired. */
void dist__m_task_expire(dist_master_t *s, dist__mtask_t *t);
/* Submits a dead letter again (RETRY): the state name after it. */
const char *dist__m_task_resubmit(dist_master_t *s, const dist__mdead_t *d,
                                  dist__mclient_t *requester);

/* ---- master_control.c: LOOKUP, FETCH, CANCEL, FAILED, RETRY (issue 12) -------------------- */

#define DIST__TOMBSTONES 100000     /* expired ids remembered */
#define DIST__DEAD_MAX 10000        /* dead letters kept, newest */
#define DIST__DEAD_BYTES (64u << 20) /* and at most this many bytes of their args */

void dist__m_failed(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root);
void dist__m_retry(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root);
/* t (still QUEUED/LEASED/DELAYED, args in data) ends with a failure of
 * status st and this error: keep it as a dead letter. */
void dist__m_dead_add(dist_master_t *s, const dist__mtask_t *t, int st, const void *error,
                      size_t len);
/* Remembers an expired id / asks whether an id expired. */
void dist__m_tomb_add(dist_master_t *s, const dist__id_t *id);
bool dist__m_tomb_has(const dist_master_t *s, const dist__id_t *id);
/* Frees the tombstones and dead letters (destroy). */
void dist__m_control_free(dist_master_t *s);
/* The store (master_store.c): a dead letter / tombstone read back by the
 * recovery, in row order; whether any changed since the last commit;
 * writing those changes into the open transaction; that commit worked. */
int dist__m_dead_restore(dist_master_t *s, const dist__sdead_t *d);
int dist__m_tomb_restore(dist_master_t *s, int64_t row, const dist__id_t *id);
bool dist__m_control_dirty(const dist_master_t *s);
size_t dist__m_dead_count(const dist_master_t *s);
size_t dist__m_tomb_count(const dist_master_t *s);
void dist__m_control_write(dist_master_t *s);
void dist__m_control_committed(dist_master_t *s);

void dist__m_lookup(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root);
/* One task info map of a LOOKUP reply for id (the metrics endpoint's
 * /api/task): false when the id is unknown (never seen, or forgotten). */
bool dist__m_pack_lookup(const dist_master_t *s, msgpack_packer *pk, const dist__id_t *id);
/* The dead letters, newest first: d NULL gives the newest, then each call
 * the one before d; NULL at the end. */
const dist__mdead_t *dist__m_dead_older(const dist_master_t *s, const dist__mdead_t *d);
void dist__m_fetch(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root);
void dist__m_cancel(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root);
void dist__m_fetch_expired(dist_master_t *s, dist__hnode_t *n);
/* Drops the FETCHes the peer has parked. */
void dist__m_unfetch_peer(dist_master_t *s, dist__mpeer_t *p);

/* ---- master_queue.c -------------------------------------------------------------------- */

void dist__m_queues_init(dist_master_t *s);

void dist__m_qput(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root);
void dist__m_qget(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root);
void dist__m_park_expired(dist_master_t *s, dist__mpark_t *k);
/* Drops every request the peer has parked. */
void dist__m_unpark_peer(dist_master_t *s, dist__mpeer_t *p);
/* Puts items back at the front of a named queue (a QREPLY that could not
 * be delivered); takes ownership of the items. */
void dist__m_putback(dist_master_t *s, const char *queue, dist__mitem_t **items, size_t n);
void dist__m_queues_free(dist_master_t *s);

/* ---- master_status.c -------------------------------------------------------------------- */

void dist__m_status(dist_master_t *s, dist__mpeer_t *p, const msgpack_object *root);
/* Counts n submitted / completed tasks in the current second. */
void dist__m_rate_add(dist_master_t *s, uint64_t submitted, uint64_t completed);

/* Packs the STATUS body (section 7b) into b; `extra` adds the extension
 * fields of docs/OBSERVABILITY.md (s->obs must then be set). */
void dist__m_pack_status(const dist_master_t *s, dist_wire_buf_t *b, uint64_t req, bool compact,
                         bool extra);

/* ---- master_obs.c: what the metrics endpoint shows --------------------------------------- */

/* Starts the endpoint on hostport (its thread too): 0 or a negative code,
 * logged. Refuses a non-loopback address unless insecure. */
int dist__m_obs_open(dist_master_t *s, const char *hostport, bool insecure);
/* Stops the endpoint and frees the counters. */
void dist__m_obs_close(dist_master_t *s);
/* Events, each cheap (no lookup once a task name has its counters). */
void dist__m_obs_submitted(dist_master_t *s, dist__mtq_t *q, int delta);
void dist__m_obs_retried(dist_master_t *s, dist__mtq_t *q);
/* t is becoming DONE with status st (t->q still set); error: the final
 * error text when st is not ok. */
void dist__m_obs_finished(dist_master_t *s, const dist__mtask_t *t, int st, const void *error,
                          size_t len);
/* Called every loop turn: closes history steps and publishes a snapshot
 * about twice a second. */
void dist__m_obs_turn(dist_master_t *s);
/* When the next publish is due (monotonic ms), or INT64_MAX. */
int64_t dist__m_obs_next(const dist_master_t *s);
/* Packs the extension fields (DIST__OBS_FIELDS key/value pairs) into pk. */
#define DIST__OBS_FIELDS 5
void dist__m_obs_pack(const dist_master_t *s, msgpack_packer *pk);
/* The endpoint's bound port (tests), or 0. */
int dist__m_obs_port(const dist_master_t *s);

/* ---- master_store.c -------------------------------------------------------------------- */

/* Opens the store and loads it into the (empty) master. 0 or a negative
 * code; the reason is logged. */
int dist__m_store_open(dist_master_t *s, const char *path, bool full_sync);
/* Commits what the loop turn changed, then releases the held replies. */
void dist__m_store_turn(dist_master_t *s);
/* True while new tasks are refused (the store cannot write). */
bool dist__m_store_refusing(const dist_master_t *s);
/* Why, for the rejection's message. */
const char *dist__m_store_why(const dist_master_t *s);
/* Frees what the dirty lists still hold and closes the store. */
void dist__m_store_close(dist_master_t *s);

/* Puts a changed task on the dirty list with what changed. */
static inline void dist__m_store_mark(dist_master_t *s, dist__mtask_t *t, uint8_t what)
{
    if (!s->store)
        return;
    if (!(t->sflags & DIST__S_DIRTY)) {
        t->snext = NULL;
        if (s->sd_tail)
            s->sd_tail->snext = t;
        else
            s->sd_head = t;
        s->sd_tail = t;
    }
    t->sflags |= (uint8_t)(what | DIST__S_DIRTY);
}

/* A task name was created (add) or is being freed: true when the store
 * keeps the freed name until the commit (the caller must not free it). */
bool dist__m_store_name(dist_master_t *s, dist__mtq_t *q, bool add);

/* The master forgets t (acknowledged, or never committed): true when the
 * store keeps it until the commit (the caller must not free it). */
static inline bool dist__m_store_drop(dist_master_t *s, dist__mtask_t *t)
{
    if (!s->store)
        return false;
    dist__m_store_mark(s, t, DIST__S_GONE);
    return true;
}

/* ---- master.c: tests and fuzzing ------------------------------------------------------ */

/* Sends everything through fn instead of the socket. */
void dist__m_set_sink(dist_master_t *s, dist__m_sink_fn fn, void *ud);
/* Handles one message from routing id rid, given as its frames (the
 * checks of dist__proto_recv applied to them), as the loop would. */
void dist__m_feed(dist_master_t *s, const uint8_t *rid, size_t rid_len,
                  const void *const *frames, const size_t *lens, size_t nframes);
/* The rest of a loop turn at time now (monotonic ms, never going back):
 * timers, commit, dispatch, results. */
void dist__m_turn(dist_master_t *s, int64_t now);
/* The master's clock (monotonic ms) as the loop reads it. */
int64_t dist__m_now(const dist_master_t *s);
/* Makes the next n commits fail with err (-ENOSPC, -EIO); thread-safe. */
void dist__m_fail_commits(dist_master_t *s, unsigned n, int err);

/* ---- master_check.c ------------------------------------------------------------------- */

/* Checks that every index, list and count agrees with the others. NULL,
 * or what is wrong (a static string). O(everything): tests only. */
const char *dist__m_check(dist_master_t *s);

#endif

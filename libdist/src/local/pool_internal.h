/*  pool_internal.h - what the three parts of the pool share (see
 *  dist/pool.h): the messages, the jobs, the slots and the pool record.
 *
 *  Moving parts, for the process backend:
 *
 *    user threads --jobs--> manager thread --task msgs--> slot queue i --> pool process i
 *                                ^                                            |
 *                                +------------- result queue <----------------+
 *                                                    ^
 *    fork server (forks and reaps pool processes) ---+ SPAWNED / DIED notices
 *
 *  - Every queue is a dist_queue in shared memory, created before the fork
 *    server is forked, so the server and its children share them.
 *  - The manager is the only reader of the result queue: results, the fork
 *    server's notices and the WAKE nudges of submitting threads all arrive
 *    there, in order. A DIED notice for a process is therefore always behind
 *    every result that process committed: when the manager handles it, what
 *    is still unresolved for that slot is known exactly.
 *  - Each slot has a small shared record (struct wstate) where its process
 *    writes the sequence number and start time of the item it runs. After a
 *    death that record names the culprit; while it runs, it lets the manager
 *    enforce timeouts.
 *  - The manager sends each slot at most DIST__POOL_PREFETCH messages, and
 *    remembers what each holds (struct msg_rec), in order. Results come back
 *    in the same order, batched by the worker (see pool_child.c).
 *
 *  The threads backend uses the same queues, messages and manager; a
 *  "process" is a thread with its own slot queue, and a timed-out thread is
 *  abandoned (it finishes in the background and its results are dropped)
 *  rather than killed.
 *
 *  The code is split by who runs it: pool_child.c (pool processes, the
 *  fork server, pool threads), pool_manager.c (the manager thread) and
 *  pool.c (the caller's side: the public API). Everything in struct
 *  dist_pool and in the jobs is guarded by the pool's lock, except what
 *  the comments say is atomic or shared with the workers.
 */
#ifndef DIST_POOL_INTERNAL_H_INCLUDED
#define DIST_POOL_INTERNAL_H_INCLUDED

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "child_internal.h"
#include "dist/pool.h"
#include "dist/queue.h"

#define DIST__POOL_PREFETCH 2     /* messages a slot may hold: one running, one waiting */
#define DIST__POOL_MAX_BATCH 1024 /* apply_async items per message */

/* ---- messages ------------------------------------------------------------ */

enum { M_TASK = 1, M_RESULTS, M_SPAWNED, M_DIED, M_WAKE };

/* Task message: header, task name, then `nitems` x (titem, bytes). The
 * items have consecutive sequence numbers from first_seq. All parties are
 * forks of one program, so native layout and function pointers are fine.
 * Items and results stay small (4 and 8 bytes of framing): a map of a
 * million ints moves tens of megabytes less. */
struct tmsg {
    uint32_t kind, nitems;
    dist_task_fn fn;
    uint64_t first_seq;
    int32_t timeout_ms;
    uint32_t name_len;
};
struct titem {
    uint32_t len;
};

/* Result message: header, then `count` x (ritem, bytes) for M_RESULTS,
 * the results of consecutive items from first_seq (a batch never spans two
 * task messages). For M_DIED, status is the waitpid status. */
struct rmsg {
    uint32_t kind, slot, gen;
    int32_t pid, count, status;
    uint64_t first_seq;
};
struct ritem {
    int32_t status;
    uint32_t len;
};

/* Fork server commands (SOCK_SEQPACKET keeps them whole). */
enum { C_SPAWN = 1, C_KILL, C_STOP, C_EXIT };
struct fcmd {
    uint32_t op, slot, gen;
    int32_t sig;
};

/* What a worker publishes for the manager (shared memory for processes). */
struct wstate {
    _Atomic uint64_t cur_seq; /* item running, 0 when none */
    _Atomic int64_t started_ns;
    _Atomic int32_t timeout_ms;
    _Atomic uint32_t initialized;
};

/* ---- jobs ---------------------------------------------------------------- */

enum jkind { J_APPLY, J_MAP, J_IMAP, J_IMAPU };

/* What only map and imap jobs need: kept apart so that a pending
 * apply_async costs little (a million of them must fit in 256 MiB). */
struct jmulti {
    const dist_bytes_t *items; /* borrowed from the caller */
    size_t chunksize;
    size_t *retry;             /* indices to run again, taken from the end */
    size_t retry_cap;
    dist_results_t *rs;        /* map */
    dist_result_t **iout;      /* imap: per index */
    size_t inext;              /* imap: next index to hand out */
    size_t *uq;                /* imap_unordered: completed indices, in order */
    size_t uhead, utail;
};

struct job {
    enum jkind kind;
    struct dist_pool *pool; /* only touched while the job is unfinished */
    _Atomic int refs;       /* the user's handle + the pool until finished */
    _Atomic bool finished;
    _Atomic uint32_t events; /* bumped on every delivery, for spinning waiters */
    bool cancelled;         /* imap destroyed early: discard what comes */
    bool cancel_requested;  /* apply: dist__pool_cancel asked to stop it */
    uint32_t retry_ms;      /* apply: the delay of a dist_task_retry outcome */
    dist_task_fn fn;
    const char *name;
    int timeout_ms;
    dist_submit_opts_t opts;

    /* input */
    size_t n, next;            /* items, and the next never dispatched */
    size_t nretry;             /* items to run again (m->retry) */
    const unsigned char *args; /* apply (inside this allocation) */
    size_t args_len;
    bool pending;              /* in the pool's pending list */
    struct job *pnext, *pprev;
    size_t resolved;
    dist_result_t *result;     /* apply: the result; map: the summary */
    struct jmulti *m;          /* map and imap only */
    struct job *cbnext;        /* on the manager's callback list */
};

/* What the manager sent a slot in one message: runs of items (a map chunk
 * is one run of consecutive indices; a retried item or an apply job is a
 * run of one), with consecutive sequence numbers from first_seq. Results
 * come back in the same order; (cur_run, cur_off) is the next expected. */
struct run {
    struct job *job;
    size_t start;
    size_t count;
    bool from_retry;
};
struct msg_rec {
    struct msg_rec *next;
    uint64_t first_seq;
    size_t n, resolved;
    size_t nruns, cur_run, cur_off;
    struct run runs[];
};

/* The next unresolved item of r: its job and index. */

/* Everything a worker needs, copied: an abandoned thread may outlive the
 * pool, and must not read it. */
struct wctx {
    dist_queue_t *q, *resq;
    struct wstate *ws;
    struct tworker *tw; /* threads backend only */
    uint32_t slot, gen;
    pid_t pid;
    size_t max_message;
    int maxtasks;
};

/* A thread of the threads backend, one per generation of a slot. Shared by
 * the manager and the thread (refs); `mu` makes abandonment atomic with the
 * thread's use of the result queue. */
struct tworker {
    _Atomic int refs;
    pthread_mutex_t mu;
    bool abandoned;
    dist_queue_t *q;
    struct wstate ws;
    struct wctx ctx;
    void (*initializer)(void *);
    void *initarg;
};

struct pslot {
    uint32_t gen;
    bool active;               /* a worker of this generation runs (or is starting) */
    pid_t pid;
    struct msg_rec *head, *tail;
    int nmsgs;
    uint64_t timeout_seq;      /* the item we killed for its timeout */
    uint64_t cancel_seq;       /* the item we killed because it was cancelled */
    dist_queue_t *q;
    struct wstate *ws;
    struct tworker *tw;
    int init_failures;
};

enum pstate { P_RUNNING, P_CLOSED, P_TERMINATING, P_DONE };

struct dist_pool {
    dist_pool_opts_t opts;
    int n;
    size_t max_message;
    pid_t parent_pid;

    pthread_mutex_t lock;
    pthread_cond_t done_cond; /* a job finished, or the pool is done */
    int waiters;
    pthread_t manager;
    bool manager_started;
    enum pstate state;
    bool stopping;            /* graceful stop underway (queues closed) */
    bool broken;
    char broken_msg[256];

    dist_queue_t *resq;
    struct pslot *slots;
    struct wstate *shared_ws; /* processes: one per slot, shared */
    dist_queue_t **slot_queues;
    int ctl;                  /* fork server control socket */
    dist__child_t server;
    int64_t next_server_check;

    struct job *pend_head, *pend_tail;
    size_t pending_items;
    size_t active_jobs;
    uint64_t next_seq;
    bool sleeping, wake_posted;
    int rr;                   /* round-robin start for dispatch */

    unsigned char *scratch;
    size_t scratch_cap;
    struct run *picks;        /* runs of the message being built */
    size_t picks_cap;
    struct job *cb_head, *cb_tail;
    size_t ncancel;           /* dispatched apply jobs with cancel_requested, unresolved */
    dist_pool_stats_t stats;
};


static inline bool dist__pool_threads(const dist_pool_t *p) { return p->opts.threads; }

/* Items of j not dispatched yet: never sent, plus those to run again. */
static inline size_t dist__pool_remaining(const struct job *j)
{
    return (j->n - j->next) + j->nretry;
}

/* ---- pool_child.c: run in the workers (and the fork server) ---------------- */

/* The fork server's main loop, in the process forked for it (ctl: its end
 * of the control socket). Never returns: it exits once the pool stops, or
 * when the control socket closes. */
void dist__pool_server_main(dist_pool_t *p, int ctl) __attribute__((noreturn));

/* Puts a header-only message (M_SPAWNED, M_DIED, M_WAKE) on q, waiting
 * for room. */
void dist__pool_post(dist_queue_t *q, uint32_t kind, uint32_t slot, uint32_t gen, pid_t pid,
                     int status);

/* Threads backend, called by the manager (or dist_pool_new) under the pool
 * lock: starts the thread of slot `slot`, generation slots[slot].gen. 0,
 * DIST_ENOMEM or -errno of pthread_create. */
int dist__pool_thread_spawn(dist_pool_t *p, uint32_t slot);

/* Threads backend: lets the slot's thread go; it may finish its task, but
 * nothing it does reaches the pool any more. No-op without a thread. */
void dist__pool_abandon(struct pslot *s);

/* ---- pool_manager.c: run on the manager thread (pool lock held) ----------- */

/* The manager thread's body; arg is the pool. */
void *dist__pool_manager_main(void *arg);

/* Starts the next generation of slot `slot` (a fork server command, or a
 * thread); slots[slot].active says whether that worked. */
void dist__pool_respawn(dist_pool_t *p, uint32_t slot);

/* Sends one command to the fork server: 0 or -errno. */
int dist__pool_server_cmd(dist_pool_t *p, uint32_t op, uint32_t slot, uint32_t gen, int sig);

/* The list of jobs with items to dispatch (idempotent both ways). */
void dist__pool_pending_add(dist_pool_t *p, struct job *j);
void dist__pool_pending_remove(dist_pool_t *p, struct job *j);

/* Marks j finished (every item resolved): builds a map's summary, queues
 * the callbacks or drops the pool's reference. */
void dist__pool_finish(dist_pool_t *p, struct job *j);

/* For the distributed worker (any thread; they take the pool's lock).
 * Both take the handle of an apply job: a dist_async_t is its job (its
 * first and only member, see pool.c). */

/* Cancels one apply job. Not started yet (pending in the pool): dropped,
 * its result is DIST_ECANCELLED, and 0 is returned. Handed to a pool
 * process or thread: it is stopped the way a timeout stops it (the
 * process is killed and replaced, the thread abandoned) as soon as it
 * runs, its result is DIST_ECANCELLED (or its real outcome, when it
 * finished first), and 1 is returned. DIST_ESTATE when it finished or
 * was cancelled already, DIST_EINVAL for a map or imap job. */
int dist__pool_cancel(dist_pool_t *p, dist_async_t *a);

/* The delay a finished task asked for with dist_task_retry (its result is
 * DIST_ERETRY); 0 otherwise, or before it finished. */
uint32_t dist__pool_retry_ms(dist_async_t *a);

/* ---- pool.c: the caller's side ---------------------------------------------- */

/* Drops one reference to j; the last one frees it. Any thread, no lock. */
void dist__pool_job_unref(struct job *j);

#endif

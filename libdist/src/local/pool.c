/*  pool.c - a pool of processes (or threads) running tasks (see
 *  dist/pool.h).
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
 *  - The manager sends each slot at most PREFETCH messages, and remembers
 *    what each holds (struct msg_rec), in order. Results come back in the
 *    same order, batched by the process (see s_worker_loop).
 *
 *  The threads backend uses the same queues, messages and manager; a
 *  "process" is a thread with its own slot queue, and a timed-out thread is
 *  abandoned (it finishes in the background and its results are dropped)
 *  rather than killed.
 */
#include "dist/pool.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child_internal.h"
#include "dist/error.h"
#include "dist/queue.h"
#include "task_internal.h"
#include "util_internal.h"
#include "value_internal.h"

#define PREFETCH 2            /* messages a slot may hold: one running, one waiting */
#define MAX_BATCH 1024        /* apply_async items per message */
#define FLUSH_BYTES (256 * 1024)
#define FLUSH_ITEMS 4096
#define FLUSH_NS 1000000      /* hand results back every millisecond or so (one
                                 tick of the coarse clock, at most 4 ms) */
#define MAX_INIT_FAILURES 3   /* processes dying in the initializer before the pool gives up */
#define SPIN_WAIT_NS 50000    /* a waiter spins this long before it sleeps */

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
static struct job *s_rec_peek(const struct msg_rec *r, size_t *index)
{
    const struct run *ru = &r->runs[r->cur_run];
    *index = ru->start + r->cur_off;
    return ru->job;
}

static void s_rec_advance(struct msg_rec *r)
{
    r->resolved++;
    if (++r->cur_off == r->runs[r->cur_run].count) {
        r->cur_run++;
        r->cur_off = 0;
    }
}

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
    dist_pool_stats_t stats;
};

struct dist_async {
    struct job job;
};
struct dist_imap {
    struct job job;
};

static void s_job_unref(struct job *j);

static struct wctx s_wctx(const dist_pool_t *p, dist_queue_t *q, struct wstate *ws,
                          struct tworker *tw, uint32_t slot, uint32_t gen)
{
    return (struct wctx){ q, p->resq, ws, tw, slot, gen, getpid(), p->max_message,
                          p->opts.maxtasksperchild };
}


/* ---- small helpers -------------------------------------------------------- */

static bool s_threads(const dist_pool_t *p) { return p->opts.threads; }

static int s_online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static const char *s_sig_name(int sig)
{
    const char *n = sigabbrev_np(sig);
    return n ? n : "?";
}

/* Describes how a process ended, for error messages. */
static void s_describe_status(char *buf, size_t cap, int status)
{
    if (WIFSIGNALED(status))
        snprintf(buf, cap, "was killed by signal %d (SIG%s)", WTERMSIG(status),
                 s_sig_name(WTERMSIG(status)));
    else if (WIFEXITED(status))
        snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
    else
        snprintf(buf, cap, "ended (wait status %#x)", (unsigned)status);
}

static void *s_grow(void *ptr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return ptr;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *g = realloc(ptr, c * elem);
    if (g)
        *cap = c;
    return g;
}

/* ---- the worker loop (a pool process, or a pool thread) ------------------- */

/* Results waiting to be handed back, as one M_RESULTS message. */
struct outbuf {
    unsigned char *data;
    size_t len, cap;
    int count;
    int64_t first_ns;
};

static int s_out_reserve(struct outbuf *o, size_t more)
{
    if (o->len + more <= o->cap)
        return 0;
    size_t cap = o->cap ? o->cap : 65536;
    while (cap < o->len + more)
        cap *= 2;
    unsigned char *g = realloc(o->data, cap);
    if (!g)
        return DIST_ENOMEM;
    o->data = g;
    o->cap = cap;
    return 0;
}

static void s_out_reset(struct outbuf *o, const struct wctx *w)
{
    struct rmsg h = { M_RESULTS, w->slot, w->gen, (int32_t)w->pid, 0, 0, 0 };
    o->len = sizeof h;
    o->count = 0;
    memcpy(o->data, &h, sizeof h);
}

/* Hands the batched results to the manager. A thread that was abandoned
 * drops them instead: the manager has already dealt with its items. */
static int s_out_flush(struct outbuf *o, const struct wctx *w)
{
    if (o->count == 0)
        return 0;
    struct rmsg h;
    memcpy(&h, o->data, sizeof h);
    h.count = o->count;
    memcpy(o->data, &h, sizeof h);
    int r = 0;
    if (w->tw) {
        pthread_mutex_lock(&w->tw->mu);
        if (!w->tw->abandoned)
            r = dist_queue_put(w->resq, o->data, o->len, true, DIST_FOREVER);
        else
            r = DIST_ECLOSED;
        pthread_mutex_unlock(&w->tw->mu);
    } else {
        r = dist_queue_put(w->resq, o->data, o->len, true, DIST_FOREVER);
    }
    s_out_reset(o, w);
    return r;
}

static bool s_abandoned(const struct wctx *w)
{
    if (!w->tw)
        return false;
    pthread_mutex_lock(&w->tw->mu);
    bool a = w->tw->abandoned;
    pthread_mutex_unlock(&w->tw->mu);
    return a;
}

enum { W_CLOSED, W_MAXTASKS, W_ABANDONED, W_ERROR };

/* Runs task messages from the slot queue until it is closed, the worker
 * has run maxtasksperchild messages, or (threads) it was abandoned.
 *
 * Results are batched: they go back when the message is done, when the
 * batch is big, or when the oldest waiting result is a millisecond old
 * (checked before each item, so a slow item never holds back the results
 * of fast ones before it). A process that dies loses only its unsent
 * batch; the manager runs those items again. */
static int s_worker_loop(struct wctx *w)
{
    size_t cap = w->max_message + 4096;
    unsigned char *in = malloc(cap);
    struct outbuf out = { 0 };
    dist__runner_t run;
    int why = W_ERROR;
    if (!in || s_out_reserve(&out, sizeof(struct rmsg)) || dist__runner_init(&run)) {
        free(in);
        free(out.data);
        return W_ERROR;
    }
    s_out_reset(&out, w);
    int done_msgs = 0;
    for (;;) {
        if (s_abandoned(w)) {
            why = W_ABANDONED;
            break;
        }
        size_t len;
        int r = dist_queue_get_into(w->q, in, cap, &len, true, DIST_FOREVER);
        if (r == DIST_ECLOSED) {
            why = W_CLOSED;
            break;
        }
        if (r)
            break;
        struct tmsg th;
        if (len < sizeof th)
            break;
        memcpy(&th, in, sizeof th);
        size_t off = sizeof th;
        char name[DIST_TASK_NAME_MAX + 1];
        size_t nl = th.name_len < DIST_TASK_NAME_MAX ? th.name_len : DIST_TASK_NAME_MAX;
        memcpy(name, in + off, nl);
        name[nl] = 0;
        off += th.name_len;
        for (uint32_t i = 0; i < th.nitems; i++) {
            struct titem ti;
            memcpy(&ti, in + off, sizeof ti);
            off += sizeof ti;
            /* The coarse clock (a tick of 1-4 ms) costs a fifth of the
             * precise one, and is read once per item. */
            int64_t now = dist__now_coarse_ns();
            if (out.count && (now - out.first_ns >= FLUSH_NS || out.count >= FLUSH_ITEMS))
                s_out_flush(&out, w);
            if (s_abandoned(w))
                goto abandoned;
            atomic_store_explicit(&w->ws->timeout_ms, th.timeout_ms, memory_order_relaxed);
            atomic_store_explicit(&w->ws->started_ns, now, memory_order_relaxed);
            uint64_t seq = th.first_seq + i;
            atomic_store_explicit(&w->ws->cur_seq, seq, memory_order_release);
            int status = dist__task_run(&run, th.fn, name, in + off, (size_t)ti.len);
            off += ti.len;
            if (s_abandoned(w)) /* timed out meanwhile: the pool may be gone */
                goto abandoned;
            const char *data = run.out.data;
            size_t dlen = run.out.size;
            /* Room for the longest name and two 20-digit sizes; the length
             * is taken from what is there, never from what snprintf
             * would have liked to write. */
            char big[DIST_TASK_NAME_MAX + 128];
            if (status == 0 && dlen > w->max_message) {
                status = DIST_EMSGSIZE;
                snprintf(big, sizeof big,
                         "task %s: result of %zu bytes exceeds the pool's limit of %zu", name, dlen,
                         w->max_message);
                dlen = strlen(big) + 1;
                data = big;
            }
            if (out.count && out.len + sizeof(struct ritem) + dlen > FLUSH_BYTES)
                s_out_flush(&out, w);
            if (s_out_reserve(&out, sizeof(struct ritem) + dlen))
                goto out;
            if (out.count == 0) {
                struct rmsg h;
                memcpy(&h, out.data, sizeof h);
                h.first_seq = seq;
                memcpy(out.data, &h, sizeof h);
            }
            struct ritem ri = { status, (uint32_t)dlen };
            memcpy(out.data + out.len, &ri, sizeof ri);
            memcpy(out.data + out.len + sizeof ri, data, dlen);
            out.len += sizeof ri + dlen;
            if (out.count++ == 0)
                out.first_ns = now;
            atomic_store_explicit(&w->ws->cur_seq, 0, memory_order_release);
        }
        s_out_flush(&out, w);
        if (w->maxtasks > 0 && ++done_msgs >= w->maxtasks) {
            why = W_MAXTASKS;
            break;
        }
    }
    goto out;
abandoned:
    why = W_ABANDONED;
out:
    dist__runner_fini(&run);
    free(in);
    free(out.data);
    return why;
}

/* ---- the fork server and pool processes ----------------------------------- */

static void s_post(dist_queue_t *q, uint32_t kind, uint32_t slot, uint32_t gen, pid_t pid, int status)
{
    struct rmsg h = { kind, slot, gen, (int32_t)pid, 0, status, 0 };
    dist_queue_put(q, &h, sizeof h, true, DIST_FOREVER);
}

/* Reset inherited signal handlers: the parent's (dist-worker's SIGTERM
 * drain handler, say) mean nothing in a pool process, and a terminal's
 * Ctrl-C is for the parent to act on, not for its workers. */
static void s_reset_signals(void)
{
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP || sig == SIGCHLD)
            continue;
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_IGN && sa.sa_handler != SIG_DFL)
            signal(sig, SIG_DFL);
    }
    signal(SIGINT, SIG_IGN);
}

static void s_die_with_parent(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) /* it died before prctl took effect */
        _exit(0);
}

static void s_process_main(dist_pool_t *p, uint32_t slot, uint32_t gen, pid_t server)
{
    s_die_with_parent(server);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    struct wctx w = s_wctx(p, p->slot_queues[slot], &p->shared_ws[slot], NULL, slot, gen);
    if (p->opts.initializer)
        p->opts.initializer(p->opts.initarg);
    atomic_store(&w.ws->initialized, 1);
    int why = s_worker_loop(&w);
    fflush(NULL);
    _exit(why == W_ERROR ? 70 : 0);
}

static void s_server_main(dist_pool_t *p, int ctl)
{
    s_die_with_parent(p->parent_pid);
    s_reset_signals();
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    pid_t *pids = calloc((size_t)p->n, sizeof *pids);
    uint32_t *gens = calloc((size_t)p->n, sizeof *gens);
    if (sfd < 0 || !pids || !gens)
        _exit(71);
    bool stopping = false;
    int live = 0;
    pid_t me = getpid();
    for (;;) {
        struct pollfd pf[2] = { { ctl, POLLIN, 0 }, { sfd, POLLIN, 0 } };
        /* Reap first: a DIED notice must follow every result the process
         * committed, and it does, since the process is dead by now. */
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof si) == sizeof si)
            ;
        int st;
        pid_t pid;
        while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
            for (int i = 0; i < p->n; i++)
                if (pids[i] == pid) {
                    pids[i] = 0;
                    live--;
                    s_post(p->resq, M_DIED, (uint32_t)i, gens[i], pid, st);
                }
        }
        if (stopping && live == 0)
            _exit(0);
        if (poll(pf, 2, -1) < 0 && errno != EINTR)
            _exit(72);
        if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        struct fcmd c;
        ssize_t r = recv(ctl, &c, sizeof c, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r != (ssize_t)sizeof c || c.op == C_EXIT) {
            /* EOF (the parent is gone) or terminate: kill and reap all. */
            for (int i = 0; i < p->n; i++)
                if (pids[i])
                    kill(pids[i], SIGKILL);
            for (int i = 0; i < p->n; i++)
                if (pids[i])
                    waitpid(pids[i], NULL, 0);
            _exit(0);
        }
        if (c.slot >= (uint32_t)p->n)
            continue;
        if (c.op == C_SPAWN && !pids[c.slot] && !stopping) {
            pid_t child = fork();
            if (child == 0) {
                close(ctl);
                close(sfd);
                s_process_main(p, c.slot, c.gen, me);
            }
            if (child > 0) {
                pids[c.slot] = child;
                gens[c.slot] = c.gen;
                live++;
                s_post(p->resq, M_SPAWNED, c.slot, c.gen, child, 0);
            } else {
                /* Report the failed fork as a death so the manager retries. */
                s_post(p->resq, M_DIED, c.slot, c.gen, 0, W_EXITCODE(71, 0));
            }
        } else if (c.op == C_KILL && pids[c.slot] && gens[c.slot] == c.gen) {
            kill(pids[c.slot], c.sig);
        } else if (c.op == C_STOP) {
            stopping = true;
        }
    }
}

static int s_server_cmd(dist_pool_t *p, uint32_t op, uint32_t slot, uint32_t gen, int sig)
{
    struct fcmd c = { op, slot, gen, sig };
    ssize_t r;
    do
        r = send(p->ctl, &c, sizeof c, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r == (ssize_t)sizeof c ? 0 : -errno;
}

/* ---- the threads backend --------------------------------------------------- */

static void s_tworker_unref(struct tworker *tw)
{
    if (atomic_fetch_sub(&tw->refs, 1) == 1) {
        dist_queue_destroy(&tw->q);
        pthread_mutex_destroy(&tw->mu);
        free(tw);
    }
}

static void *s_thread_main(void *arg)
{
    struct tworker *tw = arg;
    if (tw->initializer)
        tw->initializer(tw->initarg);
    atomic_store(&tw->ws.initialized, 1);
    int why = s_worker_loop(&tw->ctx);
    if (why == W_MAXTASKS || why == W_ERROR) {
        /* Tell the manager, unless it has let us go already. */
        pthread_mutex_lock(&tw->mu);
        if (!tw->abandoned)
            s_post(tw->ctx.resq, M_DIED, tw->ctx.slot, tw->ctx.gen, 0,
                   W_EXITCODE(why == W_ERROR ? 70 : 0, 0));
        pthread_mutex_unlock(&tw->mu);
    }
    s_tworker_unref(tw);
    return NULL;
}

/* Lets a thread go: it may finish its task, but nothing it does reaches the
 * pool any more. */
static void s_abandon(struct pslot *s)
{
    if (!s->tw)
        return;
    pthread_mutex_lock(&s->tw->mu);
    s->tw->abandoned = true;
    pthread_mutex_unlock(&s->tw->mu);
    dist_queue_close(s->tw->q);
    s_tworker_unref(s->tw);
    s->tw = NULL;
    s->q = NULL;
    s->ws = NULL;
}

static int s_thread_spawn(dist_pool_t *p, uint32_t slot)
{
    struct pslot *s = &p->slots[slot];
    struct tworker *tw = calloc(1, sizeof *tw);
    if (!tw)
        return DIST_ENOMEM;
    tw->q = dist_queue_new(0, 2 * p->max_message + 65536);
    if (!tw->q) {
        free(tw);
        return DIST_ENOMEM;
    }
    pthread_mutex_init(&tw->mu, NULL);
    atomic_init(&tw->refs, 2);
    tw->ctx = s_wctx(p, tw->q, &tw->ws, tw, slot, s->gen);
    tw->initializer = p->opts.initializer;
    tw->initarg = p->opts.initarg;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int r = pthread_create(&t, &attr, s_thread_main, tw);
    pthread_attr_destroy(&attr);
    if (r) {
        dist_queue_destroy(&tw->q);
        pthread_mutex_destroy(&tw->mu);
        free(tw);
        return -r;
    }
    s->tw = tw;
    s->q = tw->q;
    s->ws = &tw->ws;
    return 0;
}

/* ---- the manager: jobs, delivery ------------------------------------------ */

static void s_pending_add(dist_pool_t *p, struct job *j)
{
    if (j->pending)
        return;
    j->pending = true;
    j->pnext = NULL;
    j->pprev = p->pend_tail;
    if (p->pend_tail)
        p->pend_tail->pnext = j;
    else
        p->pend_head = j;
    p->pend_tail = j;
}

static void s_pending_remove(dist_pool_t *p, struct job *j)
{
    if (!j->pending)
        return;
    if (j->pprev)
        j->pprev->pnext = j->pnext;
    else
        p->pend_head = j->pnext;
    if (j->pnext)
        j->pnext->pprev = j->pprev;
    else
        p->pend_tail = j->pprev;
    j->pending = false;
    j->pnext = j->pprev = NULL;
}

static size_t s_remaining(const struct job *j) { return (j->n - j->next) + j->nretry; }

static void s_finish(dist_pool_t *p, struct job *j)
{
    if (j->kind == J_MAP) {
        size_t idx = 0;
        int st = dist_results_status(j->m->rs, &idx);
        if (st) {
            char msg[DIST__TASK_ERR_MAX + 64];
            snprintf(msg, sizeof msg, "item %zu: %s", idx, j->m->rs->items[idx].data);
            j->result = dist__result_new(st, msg, strlen(msg));
        } else {
            static const unsigned char nil = 0xc0;
            j->result = dist__result_new(0, &nil, 1);
        }
    }
    atomic_store_explicit(&j->finished, true, memory_order_release);
    p->active_jobs--;
    if (j->opts.callback || j->opts.error_callback) {
        j->cbnext = NULL;
        if (p->cb_tail)
            p->cb_tail->cbnext = j;
        else
            p->cb_head = j;
        p->cb_tail = j;
    } else {
        s_job_unref(j);
    }
}

static const char s_oom[] = "out of memory";

/* A result for one outcome; when there is no memory for it, the (smaller)
 * out-of-memory error in its place. */
static dist_result_t *s_result_new(int status, const char *data, size_t len)
{
    dist_result_t *r = dist__result_new(status, data, len);
    return r ? r : dist__result_new(DIST_ENOMEM, s_oom, sizeof s_oom - 1);
}

/* Stores the outcome of item `index` of job j. data is the value or the
 * message; `keep` is a result-message buffer the value may point into
 * (map results are stored in place, and the buffer handed to the job's
 * container, once). Returns true when the buffer was taken. */
static bool s_deliver(dist_pool_t *p, struct job *j, size_t index, int status, const char *data,
                      size_t len, void *keep)
{
    bool taken = false;
    if (status == 0)
        p->stats.completed++;
    else {
        p->stats.failed++;
        if (status == DIST_ECRASHED)
            p->stats.crashed++;
        else if (status == DIST_ETIMEDOUT)
            p->stats.timed_out++;
    }
    if (!j->cancelled) {
        switch (j->kind) {
        case J_APPLY:
            j->result = s_result_new(status, data, len);
            break;
        case J_MAP: {
            dist_result_t *r = &j->m->rs->items[index];
            if (status && len && data[len - 1] == 0)
                len--; /* messages arrive with their NUL */
            if (keep && (status == 0 || (len < 1 || data[len] == 0))) {
                if (dist__results_keep(j->m->rs, keep) == 0) {
                    taken = true;
                    dist__result_init(r, status, data, len, 0);
                    break;
                }
            }
            /* Not from a kept buffer (a parent-made error), or the buffer
             * could not be kept: own a copy. */
            char *copy = malloc(len + 1);
            if (copy) {
                memcpy(copy, data, len);
                copy[len] = 0;
                dist__result_init(r, status, copy, len, DIST__R_OWNS_DATA);
            } else {
                dist__result_init(r, DIST_ENOMEM, s_oom, sizeof s_oom - 1, 0);
            }
            break;
        }
        case J_IMAP:
        case J_IMAPU:
            j->m->iout[index] = s_result_new(status, data, len);
            if (j->kind == J_IMAPU)
                j->m->uq[j->m->utail++] = index;
            break;
        }
    }
    atomic_fetch_add_explicit(&j->events, 1, memory_order_release);
    if (++j->resolved == j->n)
        s_finish(p, j);
    return taken;
}

/* An item the manager itself fails (crash, timeout, terminate, size). */
static void s_fail_item(dist_pool_t *p, struct job *j, size_t index, int code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void s_fail_item(dist_pool_t *p, struct job *j, size_t index, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    size_t n = dist__vformat(msg, sizeof msg, fmt, ap);
    va_end(ap);
    s_deliver(p, j, index, code, msg, n, NULL);
}

static void s_requeue(dist_pool_t *p, struct job *j, size_t index)
{
    if (!j->m) { /* an apply job: its one item is pending again */
        j->next = 0;
        p->pending_items++;
        s_pending_add(p, j);
        return;
    }
    size_t *g = s_grow(j->m->retry, &j->m->retry_cap, j->nretry + 1, sizeof *g);
    if (!g) {
        s_fail_item(p, j, index, DIST_ENOMEM, "task %s: out of memory while requeueing it", j->name);
        return;
    }
    j->m->retry = g;
    j->m->retry[j->nretry++] = index;
    p->pending_items++;
    s_pending_add(p, j);
}

/* Fails every item a job has not dispatched yet. */
static void s_fail_pending(dist_pool_t *p, struct job *j, int code, const char *why)
{
    s_pending_remove(p, j);
    size_t rest = s_remaining(j);
    p->pending_items -= rest;
    /* The last failure may finish the job and drop the pool's reference:
     * hold one of our own until the loop is over. */
    atomic_fetch_add(&j->refs, 1);
    while (j->nretry)
        s_fail_item(p, j, j->m->retry[--j->nretry], code, "task %s: %s", j->name, why);
    while (j->next < j->n)
        s_fail_item(p, j, j->next++, code, "task %s: %s", j->name, why);
    s_job_unref(j);
}

static void s_free_recs(struct pslot *s)
{
    while (s->head) {
        struct msg_rec *r = s->head;
        s->head = r->next;
        free(r);
    }
    s->tail = NULL;
    s->nmsgs = 0;
}

/* A slot's worker is gone (died, exited, or abandoned). Blame the item it
 * was running, run the rest again. `how` describes the end. */
static void s_slot_lost(dist_pool_t *p, struct pslot *s, uint64_t culprit, pid_t pid, const char *how,
                        bool timed_out)
{
    for (struct msg_rec *r = s->head; r; r = r->next)
        while (r->resolved < r->n) {
            uint64_t seq = r->first_seq + r->resolved;
            size_t index;
            struct job *j = s_rec_peek(r, &index);
            s_rec_advance(r);
            if (seq == culprit && culprit) {
                if (timed_out)
                    s_fail_item(p, j, index, DIST_ETIMEDOUT,
                                "task %s timed out after %d ms; pool %s %d was stopped", j->name,
                                j->timeout_ms, s_threads(p) ? "thread of process" : "process",
                                (int)pid);
                else
                    s_fail_item(p, j, index, DIST_ECRASHED,
                                "task %s: pool process %d %s while running it", j->name, (int)pid,
                                how);
            } else {
                s_requeue(p, j, index);
            }
        }
    s_free_recs(s);
    s->active = false;
    s->timeout_seq = 0;
}

static void s_respawn(dist_pool_t *p, uint32_t slot)
{
    struct pslot *s = &p->slots[slot];
    s->gen++;
    s->pid = 0;
    if (s_threads(p)) {
        if (s_thread_spawn(p, slot) == 0)
            s->active = true;
    } else {
        atomic_store(&s->ws->cur_seq, 0);
        atomic_store(&s->ws->initialized, 0);
        if (s_server_cmd(p, C_SPAWN, slot, s->gen, 0) == 0)
            s->active = true;
    }
    if (s->active)
        p->stats.respawned++;
}

static void s_break(dist_pool_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_break(dist_pool_t *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->broken_msg, sizeof p->broken_msg, fmt, ap);
    va_end(ap);
    p->broken = true;
    while (p->pend_head)
        s_fail_pending(p, p->pend_head, DIST_ECRASHED, p->broken_msg);
}

static void s_on_died(dist_pool_t *p, const struct rmsg *h)
{
    struct pslot *s = &p->slots[h->slot];
    if (h->gen != s->gen || !s->active)
        return;
    uint64_t culprit = atomic_load(&s->ws->cur_seq);
    bool initialized = atomic_load(&s->ws->initialized) != 0;
    char how[96];
    s_describe_status(how, sizeof how, h->status);
    bool timed_out = culprit && culprit == s->timeout_seq;
    s_slot_lost(p, s, culprit, h->pid, how, timed_out);
    /* Whatever is left in the slot's queue was requeued above: drop it so
     * the next process does not run it a second time. */
    void *m;
    size_t n;
    while (dist_queue_get_nowait(s->q, &m, &n) == 0)
        free(m);
    if (p->state != P_RUNNING && p->state != P_CLOSED)
        return;
    if (p->stopping)
        return;
    if (!initialized) {
        if (++s->init_failures >= MAX_INIT_FAILURES) {
            s_break(p, "pool processes die before they are ready (the last one %s)", how);
            return;
        }
    } else {
        s->init_failures = 0;
    }
    s_respawn(p, h->slot);
}

static void s_on_results(dist_pool_t *p, unsigned char *buf, size_t len)
{
    struct rmsg h;
    memcpy(&h, buf, sizeof h);
    bool kept = false;
    if (h.slot >= (uint32_t)p->n)
        goto out;
    struct pslot *s = &p->slots[h.slot];
    if (h.gen != s->gen || !s->active)
        goto out; /* from a worker we have written off */
    if (h.pid && !s->pid)
        s->pid = h.pid;
    size_t off = sizeof h;
    for (int i = 0; i < h.count; i++) {
        struct ritem ri;
        if (off + sizeof ri > len)
            break;
        memcpy(&ri, buf + off, sizeof ri);
        off += sizeof ri;
        if (ri.len > len - off)
            break;
        const char *data = (const char *)buf + off;
        off += ri.len;
        struct msg_rec *r = s->head;
        if (!r)
            break;
        if (r->first_seq + r->resolved != h.first_seq + (uint64_t)i)
            continue; /* not the item we expect: ignore rather than misfile */
        size_t index;
        struct job *j = s_rec_peek(r, &index);
        s_rec_advance(r);
        if (s_deliver(p, j, index, ri.status, data, ri.len, kept ? NULL : buf))
            kept = true;
        if (r->resolved == r->n) {
            s->head = r->next;
            if (!s->head)
                s->tail = NULL;
            s->nmsgs--;
            free(r);
        }
    }
out:
    if (!kept)
        free(buf);
}

/* ---- the manager: dispatch ------------------------------------------------- */

/* Builds and sends one message to slot s from the pending work; `active`
 * is the number of live slots, which apply batches share. Returns 1 when
 * sent, 0 when there was nothing to send or no room. */
static int s_send_one(dist_pool_t *p, struct pslot *s, int active)
{
    struct job *first = p->pend_head;
    if (!first)
        return 0;
    size_t limit;
    if (!first->m) {
        size_t share = p->pending_items / (size_t)(active ? active * PREFETCH : 1);
        limit = share < 1 ? 1 : share > MAX_BATCH ? MAX_BATCH : share;
    } else {
        limit = first->m->chunksize;
    }
    const char *name = first->name;
    size_t name_len = strlen(name);
    size_t used = sizeof(struct tmsg) + name_len;
    size_t npick = 0, nruns = 0;
    /* Select without changing anything; commit only once the queue took it. */
    struct job *j = first;
    size_t r_idx = j->nretry, cursor = j->next;
    while (j && npick < limit) {
        size_t index;
        if (r_idx > 0)
            index = j->m->retry[r_idx - 1];
        else if (cursor < j->n)
            index = cursor;
        else if (j->kind == J_APPLY && j->pnext && j->pnext->kind == J_APPLY &&
                 j->pnext->fn == first->fn && j->pnext->timeout_ms == first->timeout_ms) {
            j = j->pnext;
            r_idx = j->nretry;
            cursor = j->next;
            continue;
        } else {
            break;
        }
        const void *args = j->m ? j->m->items[index].data : j->args;
        size_t alen = j->m ? j->m->items[index].len : j->args_len;
        size_t need = sizeof(struct titem) + alen;
        if (used + need > p->max_message + sizeof(struct tmsg) + DIST_TASK_NAME_MAX) {
            if (npick)
                break;
            /* Alone too big: fail it now and look again. Nothing has been
             * picked, so j is the first job and index its next item. */
            if (j->nretry)
                j->nretry--;
            else
                j->next++;
            p->pending_items--;
            if (s_remaining(j) == 0)
                s_pending_remove(p, j);
            s_fail_item(p, j, index, DIST_EMSGSIZE,
                        "task %s: arguments of %zu bytes exceed the pool's limit of %zu", name, alen,
                        p->max_message);
            return p->pend_head ? 1 : 0; /* the job may be gone: start over */
        }
        unsigned char *grown = s_grow(p->scratch, &p->scratch_cap, used + need, 1);
        if (!grown)
            return 0;
        p->scratch = grown;
        struct titem ti = { (uint32_t)alen };
        memcpy(p->scratch + used, &ti, sizeof ti);
        memcpy(p->scratch + used + sizeof ti, args, alen);
        used += need;
        struct run *last = nruns ? &p->picks[nruns - 1] : NULL;
        if (r_idx == 0 && last && last->job == j && !last->from_retry &&
            last->start + last->count == index) {
            last->count++; /* the common case: the next index of a map chunk */
        } else {
            struct run *grown_runs = s_grow(p->picks, &p->picks_cap, nruns + 1, sizeof *p->picks);
            if (!grown_runs)
                return 0;
            p->picks = grown_runs;
            p->picks[nruns++] = (struct run){ j, index, 1, r_idx > 0 };
        }
        npick++;
        if (r_idx > 0)
            r_idx--;
        else
            cursor++;
    }
    if (npick == 0)
        return 0;
    struct tmsg th = { M_TASK, (uint32_t)npick, first->fn, p->next_seq + 1, first->timeout_ms,
                       (uint32_t)name_len };
    memcpy(p->scratch, &th, sizeof th);
    memcpy(p->scratch + sizeof th, name, name_len);
    struct msg_rec *rec = malloc(sizeof *rec + nruns * sizeof(struct run));
    if (!rec)
        return 0;
    int r = dist_queue_put_nowait(s->q, p->scratch, used);
    if (r) {
        free(rec);
        return 0;
    }
    /* Commit: take the picked items out of their jobs. */
    *rec = (struct msg_rec){ .first_seq = p->next_seq + 1, .n = npick, .nruns = nruns };
    memcpy(rec->runs, p->picks, nruns * sizeof(struct run));
    for (size_t i = 0; i < nruns; i++) {
        struct job *jj = p->picks[i].job;
        if (p->picks[i].from_retry)
            jj->nretry -= p->picks[i].count;
        else
            jj->next += p->picks[i].count;
        if (s_remaining(jj) == 0)
            s_pending_remove(p, jj);
    }
    p->pending_items -= npick;
    p->next_seq += npick;
    if (s->tail)
        s->tail->next = rec;
    else
        s->head = rec;
    s->tail = rec;
    s->nmsgs++;
    return 1;
}

static void s_dispatch(dist_pool_t *p)
{
    if (!p->pend_head)
        return;
    /* Sending changes no slot's liveness: count the live ones once here,
     * not in every s_send_one (which made a dispatch O(n^2) in slots). */
    int active = 0;
    for (int i = 0; i < p->n; i++)
        active += p->slots[i].active;
    bool progress = true;
    while (progress && p->pend_head) {
        progress = false;
        for (int k = 0; k < p->n && p->pend_head; k++) {
            struct pslot *s = &p->slots[(p->rr + k) % p->n];
            if (s->active && s->nmsgs < PREFETCH && s_send_one(p, s, active))
                progress = true;
        }
        p->rr = (p->rr + 1) % p->n;
    }
}

/* Kills (processes) or abandons (threads) workers past their item's
 * timeout. Returns true while any running item has a timeout, so the
 * manager knows to wake up and look again. */
static bool s_check_timeouts(dist_pool_t *p)
{
    bool any = false;
    int64_t now = dist__now_coarse_ns(); /* the clock the workers stamp with */
    for (int i = 0; i < p->n; i++) {
        struct pslot *s = &p->slots[i];
        if (!s->active || !s->ws)
            continue;
        uint64_t seq = atomic_load_explicit(&s->ws->cur_seq, memory_order_acquire);
        int32_t t = atomic_load_explicit(&s->ws->timeout_ms, memory_order_relaxed);
        int64_t started = atomic_load_explicit(&s->ws->started_ns, memory_order_relaxed);
        if (!seq || t <= 0)
            continue;
        any = true;
        if (now - started < (int64_t)t * 1000000 || s->timeout_seq == seq)
            continue;
        if (atomic_load(&s->ws->cur_seq) != seq)
            continue; /* it moved on while we looked */
        s->timeout_seq = seq;
        if (s_threads(p)) {
            s_abandon(s);
            s_slot_lost(p, s, seq, getpid(), "timed out", true);
            if (p->state == P_RUNNING || p->state == P_CLOSED)
                s_respawn(p, (uint32_t)i);
        } else {
            s_server_cmd(p, C_KILL, (uint32_t)i, s->gen, SIGKILL);
        }
    }
    return any;
}

/* ---- the manager thread ------------------------------------------------------ */

static bool s_idle(const dist_pool_t *p) { return p->active_jobs == 0; }

static void s_fail_everything(dist_pool_t *p, const char *why)
{
    for (int i = 0; i < p->n; i++) {
        struct pslot *s = &p->slots[i];
        for (struct msg_rec *r = s->head; r; r = r->next)
            while (r->resolved < r->n) {
                size_t index;
                struct job *j = s_rec_peek(r, &index);
                s_rec_advance(r);
                s_fail_item(p, j, index, DIST_ECLOSED, "task %s: %s", j->name, why);
            }
        s_free_recs(s);
    }
    while (p->pend_head)
        s_fail_pending(p, p->pend_head, DIST_ECLOSED, why);
}

static void s_run_callbacks(dist_pool_t *p)
{
    while (p->cb_head) {
        struct job *j = p->cb_head;
        p->cb_head = NULL;
        p->cb_tail = NULL;
        pthread_mutex_unlock(&p->lock);
        while (j) {
            struct job *nx = j->cbnext;
            dist_result_t *r = j->result;
            if (r && r->status == 0 && j->opts.callback)
                j->opts.callback(r, j->opts.userdata);
            else if (r && r->status != 0 && j->opts.error_callback)
                j->opts.error_callback(r, j->opts.userdata);
            s_job_unref(j);
            j = nx;
        }
        pthread_mutex_lock(&p->lock);
    }
}

/* Graceful end of the workers after close(), once all work is done. */
static void s_begin_stop(dist_pool_t *p)
{
    p->stopping = true;
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].q)
            dist_queue_close(p->slots[i].q);
    if (!s_threads(p))
        s_server_cmd(p, C_STOP, 0, 0, 0);
}

static bool s_all_stopped(const dist_pool_t *p)
{
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].active)
            return false;
    return true;
}

static void *s_manager_main(void *arg)
{
    dist_pool_t *p = arg;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        if (p->state == P_TERMINATING)
            break;
        if (!p->stopping)
            s_dispatch(p);
        bool timeouts = s_check_timeouts(p);
        if (p->state == P_CLOSED && s_idle(p) && !p->stopping)
            s_begin_stop(p);
        if (p->stopping && s_threads(p)) {
            /* Threads end on their own once their queues close; nothing to
             * reap. Processes are reaped by the server first. */
            for (int i = 0; i < p->n; i++)
                if (p->slots[i].active) {
                    s_abandon(&p->slots[i]);
                    p->slots[i].active = false;
                }
        }
        if (p->stopping && s_all_stopped(p))
            break;
        if (p->waiters)
            pthread_cond_broadcast(&p->done_cond);
        int wait_ms = timeouts ? 10 : 200;
        p->sleeping = true;
        pthread_mutex_unlock(&p->lock);

        unsigned char *buf = NULL;
        size_t len = 0;
        int r = dist_queue_get(p->resq, (void **)&buf, &len, true, wait_ms);

        pthread_mutex_lock(&p->lock);
        p->sleeping = false;
        p->wake_posted = false;
        /* Handle what arrived, and whatever else is already there (a
         * bounded number, so that timeouts and callbacks get their turn). */
        for (int k = 0; r == 0; k++) {
            struct rmsg h;
            if (len >= sizeof h) {
                memcpy(&h, buf, sizeof h);
                if (h.kind == M_RESULTS) {
                    s_on_results(p, buf, len);
                    buf = NULL;
                } else if (h.kind == M_DIED && h.slot < (uint32_t)p->n) {
                    s_on_died(p, &h);
                } else if (h.kind == M_SPAWNED && h.slot < (uint32_t)p->n &&
                           h.gen == p->slots[h.slot].gen) {
                    p->slots[h.slot].pid = h.pid;
                }
            }
            free(buf);
            buf = NULL;
            if (p->state == P_TERMINATING || k == 255)
                break;
            s_dispatch(p);
            r = dist_queue_get_nowait(p->resq, (void **)&buf, &len);
        }
        /* The fork server may die (killed by someone): then so did the
         * processes, and no notice will ever come. */
        if (!s_threads(p) && dist__now_ns() >= p->next_server_check) {
            p->next_server_check = dist__now_ns() + 100000000;
            if (dist__child_wait(&p->server, 0) != DIST_ETIMEDOUT && !p->broken) {
                s_break(p, "the pool's fork server died");
                for (int i = 0; i < p->n; i++)
                    if (p->slots[i].active)
                        s_slot_lost(p, &p->slots[i], atomic_load(&p->slots[i].ws->cur_seq), 0,
                                    "died with the fork server", false);
                s_fail_everything(p, "the pool's fork server died");
            }
        }
        s_run_callbacks(p);
    }
    /* Terminating, or stopped after close. */
    if (p->state == P_TERMINATING) {
        if (s_threads(p))
            for (int i = 0; i < p->n; i++)
                s_abandon(&p->slots[i]);
        s_fail_everything(p, "the pool was terminated");
        s_run_callbacks(p);
    }
    pthread_mutex_unlock(&p->lock);
    if (!s_threads(p)) {
        if (p->state == P_TERMINATING)
            s_server_cmd(p, C_EXIT, 0, 0, 0);
        dist__child_wait(&p->server, dist__deadline(DIST_FOREVER));
    }
    pthread_mutex_lock(&p->lock);
    p->state = P_DONE;
    for (int i = 0; i < p->n; i++)
        p->slots[i].active = false;
    pthread_cond_broadcast(&p->done_cond);
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* ---- creation and destruction ---------------------------------------------- */

static void s_free_pool(dist_pool_t *p)
{
    if (p->slot_queues) {
        for (int i = 0; i < p->n; i++)
            dist_queue_destroy(&p->slot_queues[i]);
        free(p->slot_queues);
    }
    if (p->shared_ws)
        munmap(p->shared_ws, sizeof(struct wstate) * (size_t)p->n);
    dist_queue_destroy(&p->resq);
    if (p->ctl >= 0)
        close(p->ctl);
    dist__child_release(&p->server);
    free(p->slots);
    free(p->scratch);
    free(p->picks);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->done_cond);
    free(p);
}

dist_pool_t *dist_pool_new(const dist_pool_opts_t *opts)
{
    dist_pool_opts_t o = { 0 };
    if (opts)
        o = *opts;
    if (o.processes < 0 || o.maxtasksperchild < 0 || o.timeout_ms < -1 ||
        o.max_message > ((size_t)1 << 30)) {
        errno = EINVAL;
        return NULL;
    }
    if (o.processes == 0)
        o.processes = s_online_cpus();
    if (o.timeout_ms < 0)
        o.timeout_ms = 0;
    dist_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->opts = o;
    p->n = o.processes;
    p->max_message = o.max_message ? o.max_message : DIST_POOL_DEFAULT_MAX_MESSAGE;
    p->parent_pid = getpid();
    p->ctl = -1;
    p->server.pidfd = -1;
    pthread_mutex_init(&p->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->done_cond, &ca);
    pthread_condattr_destroy(&ca);

    int err = ENOMEM;
    p->slots = calloc((size_t)p->n, sizeof *p->slots);
    /* The result queue holds several full batches, or a few of the largest
     * results, whichever is more. */
    size_t rcap = 4 * (p->max_message + 4096);
    if (rcap < (size_t)(8 << 20))
        rcap = (size_t)8 << 20;
    p->resq = dist_queue_new(0, rcap);
    if (!p->slots || !p->resq)
        goto fail;
    if (!s_threads(p)) {
        p->slot_queues = calloc((size_t)p->n, sizeof *p->slot_queues);
        p->shared_ws = mmap(NULL, sizeof(struct wstate) * (size_t)p->n, PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p->shared_ws == MAP_FAILED) {
            p->shared_ws = NULL;
            err = errno;
            goto fail;
        }
        if (!p->slot_queues)
            goto fail;
        for (int i = 0; i < p->n; i++) {
            p->slot_queues[i] = dist_queue_new(0, PREFETCH * (p->max_message + 4096 + DIST_TASK_NAME_MAX));
            if (!p->slot_queues[i])
                goto fail;
            p->slots[i].q = p->slot_queues[i];
            p->slots[i].ws = &p->shared_ws[i];
        }
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
            err = errno;
            goto fail;
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            err = errno;
            close(sv[0]);
            close(sv[1]);
            goto fail;
        }
        if (pid == 0) {
            close(sv[0]);
            s_server_main(p, sv[1]);
            _exit(0);
        }
        close(sv[1]);
        p->ctl = sv[0];
        dist__child_track(&p->server, pid);
    }
    for (int i = 0; i < p->n; i++) {
        p->slots[i].gen = 0;
        s_respawn(p, (uint32_t)i);
        if (!p->slots[i].active) {
            err = EAGAIN;
            goto fail_running;
        }
    }
    p->stats.respawned = 0;
    int r = pthread_create(&p->manager, NULL, s_manager_main, p);
    if (r) {
        err = r;
        goto fail_running;
    }
    p->manager_started = true;
    return p;

fail_running:
    if (!s_threads(p)) {
        s_server_cmd(p, C_EXIT, 0, 0, 0);
        dist__child_wait(&p->server, dist__deadline(DIST_FOREVER));
    } else {
        for (int i = 0; i < p->n; i++)
            s_abandon(&p->slots[i]);
    }
fail:
    s_free_pool(p);
    errno = err;
    return NULL;
}

int dist_pool_size(const dist_pool_t *self) { return self->n; }

int dist_pool_close(dist_pool_t *self)
{
    pthread_mutex_lock(&self->lock);
    if (self->state == P_RUNNING)
        self->state = P_CLOSED;
    bool wake = self->sleeping && !self->wake_posted;
    self->wake_posted |= wake;
    pthread_mutex_unlock(&self->lock);
    if (wake)
        s_post(self->resq, M_WAKE, 0, 0, 0, 0);
    return 0;
}

/* One wait on done_cond (p->lock held) that ends by the deadline:
 * DIST_ETIMEDOUT once it has passed, else 0 (woken, maybe spuriously). */
static int s_wait_step(dist_pool_t *p, int64_t deadline)
{
    if (deadline == INT64_MAX) {
        pthread_cond_wait(&p->done_cond, &p->lock);
        return 0;
    }
    if (dist__left_ns(deadline) == 0)
        return DIST_ETIMEDOUT;
    struct timespec ts = dist__ns_to_timespec(deadline);
    pthread_cond_timedwait(&p->done_cond, &p->lock, &ts);
    return 0;
}

/* Waits until the manager is done (state P_DONE), up to the deadline. */
static int s_wait_done(dist_pool_t *p, int64_t deadline)
{
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    p->waiters++;
    while (p->state != P_DONE && (rc = s_wait_step(p, deadline)) == 0)
        ;
    p->waiters--;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int dist_pool_terminate(dist_pool_t *self)
{
    pthread_mutex_lock(&self->lock);
    if (self->state != P_DONE)
        self->state = P_TERMINATING;
    bool on_manager = self->manager_started && pthread_equal(pthread_self(), self->manager);
    pthread_mutex_unlock(&self->lock);
    /* Always nudge: the manager may be about to sleep. */
    s_post(self->resq, M_WAKE, 0, 0, 0, 0);
    if (on_manager)
        return 0; /* from a callback: the manager finishes after it */
    return s_wait_done(self, INT64_MAX);
}

int dist_pool_join(dist_pool_t *self, int timeout_ms)
{
    pthread_mutex_lock(&self->lock);
    enum pstate st = self->state;
    pthread_mutex_unlock(&self->lock);
    if (st == P_RUNNING)
        return DIST_ESTATE;
    if (self->manager_started && pthread_equal(pthread_self(), self->manager))
        return DIST_ESTATE;
    return s_wait_done(self, dist__deadline(timeout_ms));
}

void dist_pool_destroy(dist_pool_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_pool_t *p = *self_p;
    *self_p = NULL;
    dist_pool_terminate(p);
    pthread_join(p->manager, NULL);
    /* Let waiters on async handles (woken by the final broadcast) leave the
     * condition variable before it goes away. */
    pthread_mutex_lock(&p->lock);
    while (p->waiters) {
        pthread_cond_broadcast(&p->done_cond);
        pthread_mutex_unlock(&p->lock);
        sched_yield();
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    s_free_pool(p);
}

size_t dist_pool_pids(dist_pool_t *self, pid_t *pids, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&self->lock);
    if (!s_threads(self))
        for (int i = 0; i < self->n; i++)
            if (self->slots[i].active && self->slots[i].pid > 0) {
                if (n < max)
                    pids[n] = self->slots[i].pid;
                n++;
            }
    pthread_mutex_unlock(&self->lock);
    return n;
}

void dist_pool_stats(dist_pool_t *self, dist_pool_stats_t *out)
{
    pthread_mutex_lock(&self->lock);
    *out = self->stats;
    pthread_mutex_unlock(&self->lock);
}

/* ---- submission ---------------------------------------------------------------- */

/* Resolves a task reference: 0, or DIST_ENOENT / DIST_EINVAL. */
static int s_resolve(dist_task_ref_t t, dist_task_fn *fn, const char **name)
{
    if (t.fn) {
        *fn = t.fn;
        const char *n = dist_task_name_of(t.fn);
        *name = n ? n : (t.name ? t.name : "?");
        return 0;
    }
    if (!t.name)
        return DIST_EINVAL;
    *fn = dist_task_lookup(t.name);
    if (!*fn)
        return DIST_ENOENT;
    *name = dist_task_name_of(*fn);
    return 0;
}

static struct job *s_job_new(enum jkind kind, size_t extra)
{
    struct job *j = calloc(1, sizeof *j + extra);
    if (!j)
        return NULL;
    j->kind = kind;
    atomic_init(&j->refs, 2);
    return j;
}

static void s_job_free(struct job *j)
{
    dist_result_destroy(&j->result);
    if (j->m) {
        dist_results_destroy(&j->m->rs);
        if (j->m->iout) {
            for (size_t i = 0; i < j->n; i++)
                dist_result_destroy(&j->m->iout[i]);
            free(j->m->iout);
        }
        free(j->m->uq);
        free(j->m->retry);
    }
    free(j);
}

static void s_job_unref(struct job *j)
{
    if (atomic_fetch_sub(&j->refs, 1) == 1)
        s_job_free(j);
}

/* Queues a new job; on failure sets errno to the positive code, frees the
 * job and returns NULL. */
static struct job *s_submit(dist_pool_t *p, struct job *j)
{
    pthread_mutex_lock(&p->lock);
    int err = 0;
    if (p->state != P_RUNNING)
        err = -DIST_ESTATE;
    else if (p->broken)
        err = -DIST_ECRASHED;
    if (err) {
        pthread_mutex_unlock(&p->lock);
        s_job_free(j);
        errno = err;
        return NULL;
    }
    j->pool = p;
    p->stats.submitted += j->n;
    p->active_jobs++;
    if (j->n == 0) {
        p->active_jobs--;
        s_finish(p, j);
    } else {
        p->pending_items += j->n;
        s_pending_add(p, j);
    }
    bool wake = p->sleeping && !p->wake_posted;
    p->wake_posted |= wake;
    pthread_mutex_unlock(&p->lock);
    if (wake && dist_queue_put_nowait(p->resq, &(struct rmsg){ M_WAKE, 0, 0, 0, 0, 0, 0 },
                                      sizeof(struct rmsg)) != 0) {
        /* The result queue is full: the manager is busy and will see the
         * job when it next dispatches. */
    }
    return j;
}

static void s_apply_opts(dist_pool_t *p, struct job *j, const dist_submit_opts_t *opts)
{
    if (opts)
        j->opts = *opts;
    j->timeout_ms = j->opts.timeout_ms > 0 ? j->opts.timeout_ms : p->opts.timeout_ms;
}

dist_async_t *dist_pool_apply_async(dist_pool_t *self, dist_task_ref_t task, const void *args,
                                    size_t len, const dist_submit_opts_t *opts)
{
    dist_task_fn fn;
    const char *name;
    int r = s_resolve(task, &fn, &name);
    if (r) {
        errno = -r;
        return NULL;
    }
    struct job *j = s_job_new(J_APPLY, len ? len : 1);
    if (!j)
        return NULL;
    j->fn = fn;
    j->name = name;
    s_apply_opts(self, j, opts);
    j->n = 1;
    j->args = (const unsigned char *)(j + 1);
    if (len)
        memcpy((unsigned char *)(j + 1), args, len);
    j->args_len = len;
    return (dist_async_t *)s_submit(self, j);
}

static size_t s_auto_chunksize(const dist_pool_t *p, size_t n)
{
    size_t per = (size_t)p->n * 4;
    size_t c = n / per + (n % per ? 1 : 0);
    return c ? c : 1;
}

static struct job *s_map_job(dist_pool_t *p, enum jkind kind, dist_task_ref_t task,
                             const dist_bytes_t *items, size_t n, size_t chunksize,
                             const dist_submit_opts_t *opts)
{
    dist_task_fn fn;
    const char *name;
    int r = s_resolve(task, &fn, &name);
    if (r || (n && !items)) {
        errno = r ? -r : EINVAL;
        return NULL;
    }
    struct job *j = s_job_new(kind, sizeof(struct jmulti));
    if (!j)
        return NULL;
    j->m = (struct jmulti *)(j + 1);
    j->fn = fn;
    j->name = name;
    s_apply_opts(p, j, opts);
    j->n = n;
    j->m->items = items;
    if (kind == J_MAP)
        j->m->chunksize = chunksize ? chunksize : s_auto_chunksize(p, n);
    else
        j->m->chunksize = chunksize ? chunksize : 1; /* Python's imap default */
    if (j->m->chunksize > MAX_BATCH * 1024)
        j->m->chunksize = MAX_BATCH * 1024;
    if (kind == J_MAP)
        j->m->rs = dist__results_new(n);
    else
        j->m->iout = calloc(n ? n : 1, sizeof *j->m->iout);
    if (kind == J_IMAPU)
        j->m->uq = malloc((n ? n : 1) * sizeof *j->m->uq);
    if ((kind == J_MAP && !j->m->rs) || (kind != J_MAP && !j->m->iout) || (kind == J_IMAPU && !j->m->uq)) {
        s_job_free(j);
        errno = ENOMEM;
        return NULL;
    }
    return s_submit(p, j);
}

dist_async_t *dist_pool_map_async(dist_pool_t *self, dist_task_ref_t task, const dist_bytes_t *items,
                                  size_t n, size_t chunksize, const dist_submit_opts_t *opts)
{
    return (dist_async_t *)s_map_job(self, J_MAP, task, items, n, chunksize, opts);
}

dist_imap_t *dist_pool_imap(dist_pool_t *self, dist_task_ref_t task, const dist_bytes_t *items,
                            size_t n, size_t chunksize)
{
    return (dist_imap_t *)s_map_job(self, J_IMAP, task, items, n, chunksize, NULL);
}

dist_imap_t *dist_pool_imap_unordered(dist_pool_t *self, dist_task_ref_t task,
                                      const dist_bytes_t *items, size_t n, size_t chunksize)
{
    return (dist_imap_t *)s_map_job(self, J_IMAPU, task, items, n, chunksize, NULL);
}

/* ---- waiting ------------------------------------------------------------------ */

/* Waits until cond(j) holds (evaluated under the pool lock) or the deadline
 * passes. Spins briefly first, watching the job's event counter: a result
 * often arrives within microseconds, and sleeping costs a cross-CPU
 * wake-up. A finished job never touches its pool, which may be gone. */
static int s_wait_job(struct job *j, bool (*cond)(struct job *), int timeout_ms)
{
    if (atomic_load_explicit(&j->finished, memory_order_acquire))
        return cond(j) ? 0 : DIST_ECLOSED;
    dist_pool_t *p = j->pool;
    int64_t deadline = dist__deadline(timeout_ms);
    pthread_mutex_lock(&p->lock);
    bool ok = cond(j);
    pthread_mutex_unlock(&p->lock);
    if (ok)
        return 0;
    uint32_t seen = atomic_load_explicit(&j->events, memory_order_acquire);
    int64_t spin_until = dist__now_ns() + SPIN_WAIT_NS;
    /* Yield while spinning: on two cores the process that will produce the
     * result may be waiting for this very CPU. */
    while (atomic_load_explicit(&j->events, memory_order_acquire) == seen &&
           dist__now_ns() < spin_until && dist__left_ns(deadline) > 0)
        sched_yield();
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    p->waiters++;
    while (!cond(j)) {
        if (p->state == P_DONE) {
            rc = DIST_ECLOSED; /* cannot happen: a done pool fails everything */
            break;
        }
        if ((rc = s_wait_step(p, deadline)) != 0)
            break;
    }
    p->waiters--;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

static bool s_is_finished(struct job *j) { return atomic_load(&j->finished); }

int dist_async_wait(dist_async_t *self, int timeout_ms)
{
    return s_wait_job(&self->job, s_is_finished, timeout_ms);
}

int dist_async_get(dist_async_t *self, int timeout_ms, dist_result_t **result)
{
    if (result)
        *result = NULL;
    int r = dist_async_wait(self, timeout_ms);
    if (r)
        return r;
    if (result)
        *result = self->job.result;
    return self->job.result ? self->job.result->status : DIST_ENOMEM;
}

bool dist_async_ready(dist_async_t *self) { return atomic_load(&self->job.finished); }

bool dist_async_successful(dist_async_t *self)
{
    return dist_async_ready(self) && self->job.result && self->job.result->status == 0;
}

dist_results_t *dist_async_results(dist_async_t *self)
{
    return self->job.kind == J_MAP && dist_async_ready(self) ? self->job.m->rs : NULL;
}

void dist_async_destroy(dist_async_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    s_job_unref(&(*self_p)->job);
    *self_p = NULL;
}

int dist_pool_apply(dist_pool_t *self, dist_task_ref_t task, const void *args, size_t len,
                    dist_result_t **result)
{
    if (!result)
        return DIST_EINVAL;
    *result = NULL;
    dist_async_t *a = dist_pool_apply_async(self, task, args, len, NULL);
    if (!a) {
        int code = -errno;
        if (code == DIST_ENOENT) {
            char msg[DIST_TASK_NAME_MAX + 32];
            snprintf(msg, sizeof msg, "unknown task %.*s", DIST_TASK_NAME_MAX,
                     task.name ? task.name : "?");
            *result = dist_result_new_error(DIST_ENOENT, msg);
        }
        return code;
    }
    dist_async_wait(a, DIST_FOREVER);
    /* Take the result out of the handle. */
    *result = a->job.result;
    a->job.result = NULL;
    dist_async_destroy(&a);
    return *result ? (*result)->status : DIST_ENOMEM;
}

int dist_pool_map(dist_pool_t *self, dist_task_ref_t task, const dist_bytes_t *items, size_t n,
                  size_t chunksize, dist_results_t **results)
{
    if (!results)
        return DIST_EINVAL;
    *results = NULL;
    dist_async_t *a = dist_pool_map_async(self, task, items, n, chunksize, NULL);
    if (!a)
        return -errno;
    dist_async_wait(a, DIST_FOREVER);
    *results = a->job.m->rs;
    a->job.m->rs = NULL;
    dist_async_destroy(&a);
    return dist_results_status(*results, NULL) ? DIST_ETASK : 0;
}

static bool s_imap_has_next(struct job *j)
{
    if (j->kind == J_IMAPU)
        return j->m->uhead < j->m->utail || j->m->inext >= j->n;
    return j->m->inext >= j->n || j->m->iout[j->m->inext] != NULL;
}

int dist_imap_next(dist_imap_t *self, dist_result_t **result, size_t *index, int timeout_ms)
{
    struct job *j = &self->job;
    if (!result)
        return DIST_EINVAL;
    *result = NULL;
    int r = s_wait_job(j, s_imap_has_next, timeout_ms);
    if (r)
        return r;
    /* The manager writes iout and uq under the lock; a finished job is
     * ours alone. */
    bool fin = atomic_load_explicit(&j->finished, memory_order_acquire);
    if (!fin)
        pthread_mutex_lock(&j->pool->lock);
    int got = 0;
    size_t idx = 0;
    if (j->kind == J_IMAPU) {
        if (j->m->uhead < j->m->utail) {
            idx = j->m->uq[j->m->uhead++];
            j->m->inext++;
            got = 1;
        }
    } else if (j->m->inext < j->n) {
        idx = j->m->inext++;
        got = 1;
    }
    if (got) {
        *result = j->m->iout[idx];
        j->m->iout[idx] = NULL;
        if (index)
            *index = idx;
    }
    if (!fin)
        pthread_mutex_unlock(&j->pool->lock);
    return got;
}

void dist_imap_destroy(dist_imap_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    struct job *j = &(*self_p)->job;
    *self_p = NULL;
    if (!atomic_load_explicit(&j->finished, memory_order_acquire)) {
        /* Stop what has not been dispatched; what runs is discarded. */
        dist_pool_t *p = j->pool;
        pthread_mutex_lock(&p->lock);
        if (!atomic_load(&j->finished)) {
            j->cancelled = true;
            s_pending_remove(p, j);
            size_t rest = s_remaining(j);
            p->pending_items -= rest;
            j->next = j->n;
            j->nretry = 0;
            j->resolved += rest;
            if (rest && j->resolved == j->n)
                s_finish(p, j);
        }
        pthread_mutex_unlock(&p->lock);
    }
    s_job_unref(j);
}

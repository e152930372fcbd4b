/*  pool_child.c - the pool's workers: the loop that runs task messages in
 *  a pool process or a pool thread, the fork server that forks and reaps
 *  the pool processes, and the threads backend (see pool_internal.h).
 *
 *  Contract: a worker reads task messages from its slot queue and writes
 *  results to the result queue, and touches nothing else of the pool but
 *  its own struct wstate. A pool process and the fork server read only
 *  their copy of the pool record, made at fork and never written; a pool
 *  thread reads only its struct wctx, a copy, so that an abandoned thread
 *  may outlive the pool. The fork server answers the manager's commands
 *  (spawn, kill, stop, exit) and reports every fork and every death on the
 *  result queue. dist__pool_thread_spawn and dist__pool_abandon are the
 *  exceptions: the manager calls them, under the pool lock.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dist/error.h"
#include "pool_internal.h"
#include "task_internal.h"
#include "util_internal.h"

#define FLUSH_BYTES (256 * 1024)
#define FLUSH_ITEMS 4096
#define FLUSH_NS 1000000      /* hand results back every millisecond or so (one
                                 tick of the coarse clock, at most 4 ms) */

static struct wctx s_wctx(const dist_pool_t *p, dist_queue_t *q, struct wstate *ws,
                          struct tworker *tw, uint32_t slot, uint32_t gen)
{
    return (struct wctx){ q, p->resq, ws, tw, slot, gen, getpid(), p->max_message,
                          p->opts.maxtasksperchild };
}

/* ---- results waiting to be handed back ---------------------------------- */

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

/* Appends the outcome of item `seq` to the batch, handing the batch back
 * first when this one would make it too big. */
static int s_out_add(struct outbuf *o, const struct wctx *w, uint64_t seq, int status,
                     const char *data, size_t dlen, int64_t now)
{
    if (o->count && o->len + sizeof(struct ritem) + dlen > FLUSH_BYTES)
        s_out_flush(o, w);
    if (s_out_reserve(o, sizeof(struct ritem) + dlen))
        return DIST_ENOMEM;
    if (o->count == 0) {
        struct rmsg h;
        memcpy(&h, o->data, sizeof h);
        h.first_seq = seq;
        memcpy(o->data, &h, sizeof h);
    }
    struct ritem ri = { status, (uint32_t)dlen };
    memcpy(o->data + o->len, &ri, sizeof ri);
    memcpy(o->data + o->len + sizeof ri, data, dlen);
    o->len += sizeof ri + dlen;
    if (o->count++ == 0)
        o->first_ns = now;
    return 0;
}

/* ---- the worker loop (a pool process, or a pool thread) ------------------- */

static bool s_abandoned(const struct wctx *w)
{
    if (!w->tw)
        return false;
    pthread_mutex_lock(&w->tw->mu);
    bool a = w->tw->abandoned;
    pthread_mutex_unlock(&w->tw->mu);
    return a;
}

/* Why a worker loop ended; W_NEXT: it goes on. */
enum { W_NEXT, W_CLOSED, W_MAXTASKS, W_ABANDONED, W_ERROR };

/* A worker's buffers: the task message it runs, the results it holds. */
struct worker {
    struct wctx *w;
    unsigned char *in;
    size_t cap;
    struct outbuf out;
    dist__runner_t run;
};

static int s_worker_init(struct worker *wk, struct wctx *w)
{
    *wk = (struct worker){ .w = w, .cap = w->max_message + 4096 };
    wk->in = malloc(wk->cap);
    if (!wk->in || s_out_reserve(&wk->out, sizeof(struct rmsg)) || dist__runner_init(&wk->run)) {
        free(wk->in);
        free(wk->out.data);
        return DIST_ENOMEM;
    }
    s_out_reset(&wk->out, w);
    return 0;
}

static void s_worker_fini(struct worker *wk)
{
    dist__runner_fini(&wk->run);
    free(wk->in);
    free(wk->out.data);
}

/* Reads the header and the task name of a task message. Returns the
 * offset of its first item, or 0 when the message is too short. */
static size_t s_read_header(const unsigned char *in, size_t len, struct tmsg *th,
                            char name[DIST_TASK_NAME_MAX + 1])
{
    if (len < sizeof *th)
        return 0;
    memcpy(th, in, sizeof *th);
    size_t nl = th->name_len < DIST_TASK_NAME_MAX ? th->name_len : DIST_TASK_NAME_MAX;
    memcpy(name, in + sizeof *th, nl);
    name[nl] = 0;
    return sizeof *th + th->name_len;
}

/* Tells the manager which item runs from when, for its timeouts and for
 * blame should the process die. */
static void s_publish_start(struct wstate *ws, uint64_t seq, int32_t timeout_ms, int64_t now)
{
    atomic_store_explicit(&ws->timeout_ms, timeout_ms, memory_order_relaxed);
    atomic_store_explicit(&ws->started_ns, now, memory_order_relaxed);
    atomic_store_explicit(&ws->cur_seq, seq, memory_order_release);
}

/* Runs item `seq` and adds its outcome to the batch. A result over the
 * pool's limit becomes an error saying so. Returns W_NEXT, W_ABANDONED or
 * W_ERROR (no memory for the batch). */
static int s_run_item(struct worker *wk, const struct tmsg *th, const char *name, uint64_t seq,
                      const unsigned char *args, size_t alen)
{
    struct wctx *w = wk->w;
    /* The coarse clock (a tick of 1-4 ms) costs a fifth of the precise
     * one, and is read once per item. */
    int64_t now = dist__now_coarse_ns();
    if (wk->out.count && (now - wk->out.first_ns >= FLUSH_NS || wk->out.count >= FLUSH_ITEMS))
        s_out_flush(&wk->out, w);
    if (s_abandoned(w))
        return W_ABANDONED;
    s_publish_start(w->ws, seq, th->timeout_ms, now);
    int status = dist__task_run(&wk->run, th->fn, name, args, alen);
    if (s_abandoned(w)) /* timed out meanwhile: the pool may be gone */
        return W_ABANDONED;
    const char *data = wk->run.out.data;
    size_t dlen = wk->run.out.size;
    /* Room for the longest name and two 20-digit sizes; the length is
     * taken from what is there, never from what snprintf would have liked
     * to write. */
    char big[DIST_TASK_NAME_MAX + 128];
    if (status == 0 && dlen > w->max_message) {
        status = DIST_EMSGSIZE;
        snprintf(big, sizeof big, "task %s: result of %zu bytes exceeds the pool's limit of %zu",
                 name, dlen, w->max_message);
        dlen = strlen(big) + 1;
        data = big;
    }
    if (s_out_add(&wk->out, w, seq, status, data, dlen, now))
        return W_ERROR;
    atomic_store_explicit(&w->ws->cur_seq, 0, memory_order_release);
    return W_NEXT;
}

/* Runs every item of the task message in wk->in, then hands back what is
 * left of the batch. Returns W_NEXT, or why the loop must end. */
static int s_run_message(struct worker *wk, size_t len)
{
    struct tmsg th;
    char name[DIST_TASK_NAME_MAX + 1];
    size_t off = s_read_header(wk->in, len, &th, name);
    if (!off)
        return W_ERROR;
    for (uint32_t i = 0; i < th.nitems; i++) {
        struct titem ti;
        memcpy(&ti, wk->in + off, sizeof ti);
        off += sizeof ti;
        int why = s_run_item(wk, &th, name, th.first_seq + i, wk->in + off, (size_t)ti.len);
        if (why != W_NEXT)
            return why;
        off += ti.len;
    }
    s_out_flush(&wk->out, wk->w);
    return W_NEXT;
}

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
    struct worker wk;
    if (s_worker_init(&wk, w))
        return W_ERROR;
    int why = W_NEXT;
    for (int done_msgs = 0; why == W_NEXT;) {
        if (s_abandoned(w)) {
            why = W_ABANDONED;
            break;
        }
        size_t len;
        int r = dist_queue_get_into(w->q, wk.in, wk.cap, &len, true, DIST_FOREVER);
        if (r) {
            why = r == DIST_ECLOSED ? W_CLOSED : W_ERROR;
            break;
        }
        why = s_run_message(&wk, len);
        if (why == W_NEXT && w->maxtasks > 0 && ++done_msgs >= w->maxtasks)
            why = W_MAXTASKS;
    }
    s_worker_fini(&wk);
    return why;
}

/* ---- pool processes ----------------------------------------------------------- */

void dist__pool_post(dist_queue_t *q, uint32_t kind, uint32_t slot, uint32_t gen, pid_t pid,
                     int status)
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

/* Every pool process is a fork of the one fork server, and would inherit
 * its random state: rand(), random() and drand48() would give the same
 * sequence in every process. Each new process seeds them afresh, from the
 * kernel's generator (or its pid and the time when that is not ready
 * yet), before the initializer runs, so that an initializer that wants a
 * reproducible sequence can still seed its own. */
static void s_reseed(void)
{
    unsigned short s[4];
    if (getrandom(s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_sec ^
                     ((uint64_t)ts.tv_nsec << 16) ^ (uint64_t)dist__now_ns();
        memcpy(s, &x, sizeof s);
    }
    unsigned seed = (unsigned)s[0] | (unsigned)s[1] << 16;
    srandom(seed);
    srand(seed);
    unsigned short seed48v[3] = { s[1], s[2], s[3] };
    seed48(seed48v);
}

static void s_process_main(dist_pool_t *p, uint32_t slot, uint32_t gen, pid_t server)
{
    s_die_with_parent(server);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    s_reseed();
    struct wctx w = s_wctx(p, p->slot_queues[slot], &p->shared_ws[slot], NULL, slot, gen);
    if (p->opts.initializer)
        p->opts.initializer(p->opts.initarg);
    atomic_store(&w.ws->initialized, 1);
    int why = s_worker_loop(&w);
    fflush(NULL);
    _exit(why == W_ERROR ? 70 : 0);
}

/* ---- the fork server ------------------------------------------------------------ */

/* The fork server's state: a pid and a generation per slot. */
struct server {
    dist_pool_t *p;
    int ctl, sfd;       /* control socket, SIGCHLD signalfd */
    pid_t *pids;        /* per slot, 0 when none runs */
    uint32_t *gens;
    int live;
    bool stopping;      /* C_STOP: fork no more, exit once all are gone */
    pid_t me;
};

/* Blocks SIGCHLD (read through a signalfd instead) and allocates the
 * tables; exits the process when it cannot. */
static void s_server_init(struct server *sv, dist_pool_t *p, int ctl)
{
    s_die_with_parent(p->parent_pid);
    s_reset_signals();
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    *sv = (struct server){ .p = p, .ctl = ctl, .me = getpid() };
    sv->sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    sv->pids = calloc((size_t)p->n, sizeof *sv->pids);
    sv->gens = calloc((size_t)p->n, sizeof *sv->gens);
    if (sv->sfd < 0 || !sv->pids || !sv->gens)
        _exit(71);
}

/* Reaps every pool process that ended and posts its DIED notice. A DIED
 * notice must follow every result the process committed, and it does,
 * since the process is dead by now. */
static void s_server_reap(struct server *sv)
{
    struct signalfd_siginfo si;
    while (read(sv->sfd, &si, sizeof si) == sizeof si)
        ;
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        for (int i = 0; i < sv->p->n; i++)
            if (sv->pids[i] == pid) {
                sv->pids[i] = 0;
                sv->live--;
                dist__pool_post(sv->p->resq, M_DIED, (uint32_t)i, sv->gens[i], pid, st);
            }
    }
}

/* EOF (the parent is gone) or C_EXIT: kill and reap all, and exit. */
static void __attribute__((noreturn)) s_server_exit_all(struct server *sv)
{
    for (int i = 0; i < sv->p->n; i++)
        if (sv->pids[i])
            kill(sv->pids[i], SIGKILL);
    for (int i = 0; i < sv->p->n; i++)
        if (sv->pids[i])
            waitpid(sv->pids[i], NULL, 0);
    _exit(0);
}

static void s_server_spawn(struct server *sv, uint32_t slot, uint32_t gen)
{
    pid_t child = fork();
    if (child == 0) {
        close(sv->ctl);
        close(sv->sfd);
        s_process_main(sv->p, slot, gen, sv->me);
    }
    if (child > 0) {
        sv->pids[slot] = child;
        sv->gens[slot] = gen;
        sv->live++;
        dist__pool_post(sv->p->resq, M_SPAWNED, slot, gen, child, 0);
    } else {
        /* Report the failed fork as a death so the manager retries. */
        dist__pool_post(sv->p->resq, M_DIED, slot, gen, 0, W_EXITCODE(71, 0));
    }
}

static void s_server_command(struct server *sv, const struct fcmd *c)
{
    if (c->slot >= (uint32_t)sv->p->n)
        return;
    if (c->op == C_SPAWN && !sv->pids[c->slot] && !sv->stopping)
        s_server_spawn(sv, c->slot, c->gen);
    else if (c->op == C_KILL && sv->pids[c->slot] && sv->gens[c->slot] == c->gen)
        kill(sv->pids[c->slot], c->sig);
    else if (c->op == C_STOP)
        sv->stopping = true;
}

void dist__pool_server_main(dist_pool_t *p, int ctl)
{
    struct server sv;
    s_server_init(&sv, p, ctl);
    for (;;) {
        s_server_reap(&sv);
        if (sv.stopping && sv.live == 0)
            _exit(0);
        struct pollfd pf[2] = { { ctl, POLLIN, 0 }, { sv.sfd, POLLIN, 0 } };
        if (poll(pf, 2, -1) < 0 && errno != EINTR)
            _exit(72);
        if (!(pf[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        struct fcmd c;
        ssize_t r = recv(ctl, &c, sizeof c, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r != (ssize_t)sizeof c || c.op == C_EXIT)
            s_server_exit_all(&sv);
        s_server_command(&sv, &c);
    }
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
            dist__pool_post(tw->ctx.resq, M_DIED, tw->ctx.slot, tw->ctx.gen, 0,
                            W_EXITCODE(why == W_ERROR ? 70 : 0, 0));
        pthread_mutex_unlock(&tw->mu);
    }
    s_tworker_unref(tw);
    return NULL;
}

void dist__pool_abandon(struct pslot *s)
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

int dist__pool_thread_spawn(dist_pool_t *p, uint32_t slot)
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

/*  pool.c - the pool's public API (see dist/pool.h): creating and
 *  destroying a pool, submitting jobs, waiting for their results.
 *
 *  Contract: this code runs on the caller's threads, any number at once.
 *  It touches the pool's state only under the pool's lock, and hands work
 *  to the manager thread (pool_manager.c) through the pending list, with
 *  a WAKE nudge on the result queue when the manager sleeps; it never
 *  talks to the workers (pool_child.c) itself. A job is shared by the
 *  caller's handle and the pool (two references); a finished job no
 *  longer touches its pool, so handles may outlive the pool.
 */
#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dist/error.h"
#include "pool_internal.h"
#include "task_internal.h"
#include "util_internal.h"
#include "value_internal.h"

#define SPIN_WAIT_NS 50000    /* a waiter spins this long before it sleeps */

struct dist_async {
    struct job job;
};
struct dist_imap {
    struct job job;
};

static int s_online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
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


/* Checks the options and fills in the defaults: 0, or DIST_EINVAL. */
static int s_resolve_opts(const dist_pool_opts_t *opts, dist_pool_opts_t *o)
{
    *o = (dist_pool_opts_t){ 0 };
    if (opts)
        *o = *opts;
    if (o->processes < 0 || o->maxtasksperchild < 0 || o->timeout_ms < -1 ||
        o->max_message > ((size_t)1 << 30))
        return DIST_EINVAL;
    if (o->processes == 0)
        o->processes = s_online_cpus();
    if (o->timeout_ms < 0)
        o->timeout_ms = 0;
    return 0;
}

/* The pool record, its lock and condition, its slots and its result
 * queue; no worker yet. NULL with errno ENOMEM. */
static dist_pool_t *s_pool_alloc(const dist_pool_opts_t *o)
{
    dist_pool_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->opts = *o;
    p->n = o->processes;
    p->max_message = o->max_message ? o->max_message : DIST_POOL_DEFAULT_MAX_MESSAGE;
    p->parent_pid = getpid();
    p->ctl = -1;
    p->server.pidfd = -1;
    pthread_mutex_init(&p->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->done_cond, &ca);
    pthread_condattr_destroy(&ca);

    p->slots = calloc((size_t)p->n, sizeof *p->slots);
    /* The result queue holds several full batches, or a few of the largest
     * results, whichever is more. */
    size_t rcap = 4 * (p->max_message + 4096);
    if (rcap < (size_t)(8 << 20))
        rcap = (size_t)8 << 20;
    p->resq = dist_queue_new(0, rcap);
    if (!p->slots || !p->resq) {
        s_free_pool(p);
        errno = ENOMEM;
        return NULL;
    }
    return p;
}

/* Process backend: the slot queues and wstate records the processes will
 * share, made before the fork server is forked. 0 or a positive errno. */
static int s_make_shared_slots(dist_pool_t *p)
{
    p->slot_queues = calloc((size_t)p->n, sizeof *p->slot_queues);
    p->shared_ws = mmap(NULL, sizeof(struct wstate) * (size_t)p->n, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p->shared_ws == MAP_FAILED) {
        p->shared_ws = NULL;
        return errno;
    }
    if (!p->slot_queues)
        return ENOMEM;
    for (int i = 0; i < p->n; i++) {
        p->slot_queues[i] = dist_queue_new(
            0, DIST__POOL_PREFETCH * (p->max_message + 4096 + DIST_TASK_NAME_MAX));
        if (!p->slot_queues[i])
            return ENOMEM;
        p->slots[i].q = p->slot_queues[i];
        p->slots[i].ws = &p->shared_ws[i];
    }
    return 0;
}

/* Process backend: forks the fork server, with one end of a control
 * socket each. 0 or a positive errno. */
static int s_start_fork_server(dist_pool_t *p)
{
    int err = s_make_shared_slots(p);
    if (err)
        return err;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return errno;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        err = errno;
        close(sv[0]);
        close(sv[1]);
        return err;
    }
    if (pid == 0) {
        close(sv[0]);
        dist__pool_server_main(p, sv[1]);
    }
    close(sv[1]);
    p->ctl = sv[0];
    dist__child_track(&p->server, pid);
    return 0;
}

/* Starts the first process or thread of every slot: 0, or EAGAIN. The
 * first generation is not counted as respawned. */
static int s_start_workers(dist_pool_t *p)
{
    for (int i = 0; i < p->n; i++) {
        p->slots[i].gen = 0;
        dist__pool_respawn(p, (uint32_t)i);
        if (!p->slots[i].active)
            return EAGAIN;
    }
    p->stats.respawned = 0;
    return 0;
}

/* Undoes s_start_fork_server and s_start_workers when a later step of
 * creation fails: no process or thread of the pool is left. */
static void s_stop_workers(dist_pool_t *p)
{
    if (!dist__pool_threads(p)) {
        dist__pool_server_cmd(p, C_EXIT, 0, 0, 0);
        dist__child_wait(&p->server, dist__deadline(DIST_FOREVER));
    } else {
        for (int i = 0; i < p->n; i++)
            dist__pool_abandon(&p->slots[i]);
    }
}

dist_pool_t *dist_pool_new(const dist_pool_opts_t *opts)
{
    dist_pool_opts_t o;
    if (s_resolve_opts(opts, &o)) {
        errno = EINVAL;
        return NULL;
    }
    dist_pool_t *p = s_pool_alloc(&o);
    if (!p)
        return NULL;
    int err = dist__pool_threads(p) ? 0 : s_start_fork_server(p);
    if (err)
        goto fail;
    err = s_start_workers(p);
    if (!err)
        err = pthread_create(&p->manager, NULL, dist__pool_manager_main, p);
    if (err) {
        s_stop_workers(p);
        goto fail;
    }
    p->manager_started = true;
    return p;

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
        dist__pool_post(self->resq, M_WAKE, 0, 0, 0, 0);
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
    dist__pool_post(self->resq, M_WAKE, 0, 0, 0, 0);
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
    if (!dist__pool_threads(self))
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
    dist__result_free(&j->result);
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

void dist__pool_job_unref(struct job *j)
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
        dist__pool_finish(p, j);
    } else {
        p->pending_items += j->n;
        dist__pool_pending_add(p, j);
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
    if (j->m->chunksize > DIST__POOL_MAX_BATCH * 1024)
        j->m->chunksize = DIST__POOL_MAX_BATCH * 1024;
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
    dist__pool_job_unref(&(*self_p)->job);
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
    /* Take the result out of the handle: the caller owns it. */
    *result = dist__result_lend(a->job.result, false);
    a->job.result = NULL;
    dist_async_destroy(&a);
    return *result ? (*result)->status : DIST_ENOMEM;
}

int dist_pool_applyf(dist_pool_t *self, dist_task_ref_t task, dist_result_t **result,
                     const char *fmt, ...)
{
    if (!result)
        return DIST_EINVAL;
    *result = NULL;
    va_list ap;
    va_start(ap, fmt);
    dist_args_t *a = dist_args_vpack(fmt, ap);
    va_end(ap);
    if (!a)
        return -errno;
    size_t len;
    const void *args = dist_args_data(a, &len);
    int rc = dist_pool_apply(self, task, args, len, result);
    dist_args_destroy(&a);
    return rc;
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
            dist__pool_pending_remove(p, j);
            size_t rest = dist__pool_remaining(j);
            p->pending_items -= rest;
            j->next = j->n;
            j->nretry = 0;
            j->resolved += rest;
            if (rest && j->resolved == j->n)
                dist__pool_finish(p, j);
        }
        pthread_mutex_unlock(&p->lock);
    }
    dist__pool_job_unref(j);
}

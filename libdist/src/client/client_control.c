/*  client_control.c - task control by id (dist/client.h, issue 12;
 *  docs/PROTOCOL.md section 6.7): a result by id (FETCH), a task's state
 *  (LOOKUP), CANCEL, the dead letters (FAILED) and RETRY. Each is a
 *  request with a number that the master's REPLY echoes, waited for like
 *  the queue requests of client_queue.c.
 *
 *  Ids travel as the 16 bytes dist__id_from_key gives for the caller's
 *  string, so any program that knows the string reaches the same task.
 *  Requests with many ids go in batches of the master's max_batch.
 */
#include "client_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/error.h"
#include "util_internal.h"
#include "value_internal.h"

/* The states a REPLY may name; anything else reads as "unknown", so that
 * callers get static strings they can compare. */
static const char *const s_states[] = { "queued", "delayed", "waiting",  "leased", "done",
                                        "failed", "cancelled", "expired", "unknown" };

static const char *s_state(const char *s, size_t n)
{
    for (size_t i = 0; i < sizeof s_states / sizeof *s_states; i++)
        if (dist__str_is(s, n, s_states[i]))
            return s_states[i];
    return "unknown";
}

static int s_ids_from(const char *const *keys, size_t n, dist__id_t **out)
{
    *out = NULL;
    if (!keys || !n)
        return DIST_EINVAL;
    dist__id_t *ids = malloc(n * sizeof *ids);
    if (!ids)
        return DIST_ENOMEM;
    for (size_t i = 0; i < n; i++)
        if (!keys[i] || dist__id_from_key(keys[i], strlen(keys[i]), &ids[i])) {
            free(ids);
            return DIST_EINVAL;
        }
    *out = ids;
    return 0;
}

struct s_ids {
    const dist__id_t *ids;
    size_t n;
};

static void s_fill_ids(msgpack_packer *pk, uint64_t req, const void *arg)
{
    const struct s_ids *a = arg;
    dist__ids_req_t r = { .req = req, .nids = a->n };
    dist__pack_ids_req(pk, &r, true);
    for (size_t i = 0; i < a->n; i++)
        dist__pk_id(pk, &a->ids[i]);
}

/* One request of kind cmd per batch of ids; each answer's states go to
 * states (may be NULL). Called with the mutex held. */
static int s_ids_call(dist_client_t *self, dist__cmd_t cmd, const dist__id_t *ids, size_t n,
                      int64_t deadline, const char **states)
{
    for (size_t off = 0; off < n;) {
        size_t k = n - off < self->max_batch ? n - off : self->max_batch;
        struct s_ids a = { ids + off, k };
        dist__req_t q = { 0 };
        int rc = dist__req_start(self, &q, cmd, s_fill_ids, &a);
        if (!rc)
            rc = dist__req_wait(self, &q, deadline);
        dist__reply_t rp;
        if (!rc && (dist__parse_reply(dist_wire_msg_root(q.reply), &rp) ||
                    rp.list != DIST__REPLY_STATES || rp.nitems != k))
            rc = DIST_EPROTO;
        for (size_t i = 0; !rc && states && i < k; i++)
            states[off + i] = s_state(rp.items[i].via.str.ptr, rp.items[i].via.str.size);
        dist__req_clear(&q);
        if (rc)
            return rc;
        off += k;
    }
    return 0;
}

int dist__cancel_ids(dist_client_t *self, const dist__id_t *ids, size_t n, int64_t deadline,
                     const char **states)
{
    return s_ids_call(self, DIST__CMD_CANCEL, ids, n, deadline, states);
}

static int s_ids_public(dist_client_t *self, dist__cmd_t cmd, const char *const *keys, size_t n,
                        int timeout_ms, const char **states)
{
    if (!self)
        return DIST_EINVAL;
    dist__id_t *ids;
    int rc = s_ids_from(keys, n, &ids);
    if (rc)
        return rc;
    dist__client_lock(self);
    rc = s_ids_call(self, cmd, ids, n, dist__deadline(timeout_ms), states);
    dist__client_unlock(self);
    free(ids);
    return rc;
}

int dist_client_cancel(dist_client_t *self, const char *const *ids, size_t n, int timeout_ms,
                       const char **states)
{
    return s_ids_public(self, DIST__CMD_CANCEL, ids, n, timeout_ms, states);
}

int dist_client_retry(dist_client_t *self, const char *const *ids, size_t n, int timeout_ms,
                      const char **states)
{
    return s_ids_public(self, DIST__CMD_RETRY, ids, n, timeout_ms, states);
}

/* ---- FETCH --------------------------------------------------------------------------- */

static void s_fill_fetch(msgpack_packer *pk, uint64_t req, const void *arg)
{
    dist__fetch_t f = *(const dist__fetch_t *)arg;
    f.req = req;
    dist__pack_fetch(pk, &f);
}

int dist_client_result(dist_client_t *self, const char *id, int wait_ms, dist_result_t **result)
{
    if (result)
        *result = NULL;
    dist__fetch_t f = { 0 };
    if (!self || !id || !result || dist__id_from_key(id, strlen(id), &f.id))
        return DIST_EINVAL;
    /* The wire has no "forever": the largest u32 is 49 days. */
    f.wait_ms = wait_ms < 0 ? UINT32_MAX : (uint32_t)wait_ms;
    dist__client_lock(self);
    dist__req_t q = { 0 };
    int rc = dist__req_start(self, &q, DIST__CMD_FETCH, s_fill_fetch, &f);
    if (!rc)
        rc = dist__req_wait(self, &q, dist__req_deadline(wait_ms));
    dist__client_unlock(self);
    dist__reply_t rp;
    if (rc == DIST_ETIMEDOUT && !q.done)
        rc = DIST_ENOMASTER; /* not even the master's "timeout" came */
    else if ((rc == 0 || rc == DIST_ENOENT) &&
             (!q.reply || dist__parse_reply(dist_wire_msg_root(q.reply), &rp)))
        rc = rc == DIST_ENOENT && !q.reply ? DIST_EREFUSED : DIST_EPROTO;
    if (rc == DIST_ENOENT) {
        char msg[DIST__KEY_MAX + 64];
        bool expired = dist__str_is(rp.state.s, rp.state.n, "expired");
        snprintf(msg, sizeof msg, expired ? "the result of task %s expired"
                                          : "unknown task id %s", id);
        *result = dist__result_new(DIST_ENOENT, msg, strlen(msg));
    } else if (rc == 0) {
        dist__result_t r;
        if (!rp.result_map || dist__parse_result(rp.result_map, false, &r)) {
            rc = DIST_EPROTO;
        } else {
            int code = dist__status_errcode(r.status);
            *result = code ? dist__result_new(code, r.error, r.error_len)
                           : dist__result_new(0, r.value, r.value_len);
            rc = !*result ? DIST_ENOMEM : code;
        }
    }
    dist__req_clear(&q);
    return rc;
}

/* ---- LOOKUP, FAILED --------------------------------------------------------------------- */

static char *s_dup(dist__str_t s, bool *oom)
{
    char *p = strndup(s.s ? s.s : "", s.n);
    if (!p)
        *oom = true;
    return p;
}

void dist_task_info_destroy(dist_task_info_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_task_info_t *t = *self_p;
    for (size_t i = 0; i < t->nattempts; i++) {
        free(t->attempts[i].worker);
        free(t->attempts[i].reason);
    }
    free(t->attempts);
    free(t->id);
    free(t->task);
    free(t->worker);
    free(t->error);
    free(t);
    *self_p = NULL;
}

void dist_task_infos_destroy(dist_task_info_t ***list_p, size_t n)
{
    if (!list_p || !*list_p)
        return;
    for (size_t i = 0; i < n; i++)
        dist_task_info_destroy(&(*list_p)[i]);
    free(*list_p);
    *list_p = NULL;
}

/* An owned info from one task map of a REPLY. DIST_EPROTO, DIST_ENOMEM. */
static int s_info(const msgpack_object *o, dist_task_info_t **out)
{
    *out = NULL;
    dist__task_info_t ti;
    if (dist__parse_task_info(o, &ti))
        return DIST_EPROTO;
    dist_task_info_t *t = calloc(1, sizeof *t);
    if (!t)
        return DIST_ENOMEM;
    bool oom = false;
    char hex[33];
    dist__id_hex(&ti.id, hex);
    t->id = ti.key.n ? s_dup(ti.key, &oom) : strdup(hex);
    oom |= !t->id;
    t->task = s_dup(ti.task, &oom);
    t->state = s_state(ti.state.s, ti.state.n);
    t->priority = (int)ti.priority;
    t->worker = s_dup(ti.worker, &oom);
    t->error = s_dup(ti.error, &oom);
    t->submitted_ms = (int64_t)ti.submitted_ms;
    t->started_ms = (int64_t)ti.started_ms;
    t->finished_ms = (int64_t)ti.finished_ms;
    t->not_before_ms = (int64_t)ti.not_before_ms;
    if (ti.nattempts && !oom) {
        t->attempts = calloc(ti.nattempts, sizeof *t->attempts);
        oom |= !t->attempts;
    }
    int rc = oom ? DIST_ENOMEM : 0;
    for (size_t i = 0; !rc && i < ti.nattempts; i++) {
        dist__attempt_info_t a;
        if (dist__parse_attempt_info(&ti.attempt_maps[i], &a)) {
            rc = DIST_EPROTO;
            break;
        }
        dist_attempt_info_t *x = &t->attempts[t->nattempts++];
        x->attempt = a.attempt;
        x->worker = s_dup(a.worker, &oom);
        x->reason = s_dup(a.reason, &oom);
        if (oom)
            rc = DIST_ENOMEM;
    }
    if (rc) {
        dist_task_info_destroy(&t);
        return rc;
    }
    *out = t;
    return 0;
}

/* Sends a request of kind cmd and reads the task maps of its REPLY into
 * an owned list. */
static int s_info_call(dist_client_t *self, dist__cmd_t cmd,
                       void (*fill)(msgpack_packer *pk, uint64_t req, const void *arg),
                       const void *arg, int timeout_ms, dist_task_info_t ***list, size_t *n)
{
    *list = NULL;
    *n = 0;
    dist__client_lock(self);
    dist__req_t q = { 0 };
    int rc = dist__req_start(self, &q, cmd, fill, arg);
    if (!rc)
        rc = dist__req_wait(self, &q, dist__deadline(timeout_ms));
    dist__client_unlock(self);
    dist__reply_t rp;
    if (!rc && (dist__parse_reply(dist_wire_msg_root(q.reply), &rp) ||
                rp.list != DIST__REPLY_TASKS))
        rc = DIST_EPROTO;
    dist_task_info_t **l = NULL;
    if (!rc && !(l = calloc(rp.nitems ? rp.nitems : 1, sizeof *l)))
        rc = DIST_ENOMEM;
    size_t k = 0;
    for (; !rc && k < rp.nitems; k++)
        rc = s_info(&rp.items[k], &l[k]);
    dist__req_clear(&q);
    if (rc) {
        dist_task_infos_destroy(&l, k);
        return rc;
    }
    *list = l;
    *n = k;
    return 0;
}

int dist_client_lookup(dist_client_t *self, const char *id, int timeout_ms,
                       dist_task_info_t **info)
{
    if (info)
        *info = NULL;
    dist__id_t one;
    if (!self || !id || !info || dist__id_from_key(id, strlen(id), &one))
        return DIST_EINVAL;
    struct s_ids a = { &one, 1 };
    dist_task_info_t **l;
    size_t n;
    int rc = s_info_call(self, DIST__CMD_LOOKUP, s_fill_ids, &a, timeout_ms, &l, &n);
    if (!rc && n != 1) {
        dist_task_infos_destroy(&l, n);
        return DIST_EPROTO;
    }
    if (rc)
        return rc;
    *info = l[0];
    /* An unknown id comes back with only its id: show the caller's string. */
    if (strcmp((*info)->id, id) != 0) {
        char *copy = strdup(id);
        if (copy) {
            free((*info)->id);
            (*info)->id = copy;
        }
    }
    free(l);
    return 0;
}

static void s_fill_failed(msgpack_packer *pk, uint64_t req, const void *arg)
{
    dist__failed_req_t f = { .req = req, .max = *(const uint32_t *)arg };
    dist__pack_failed_req(pk, &f);
}

int dist_client_failed(dist_client_t *self, size_t max, int timeout_ms, dist_task_info_t ***list,
                       size_t *n)
{
    if (list)
        *list = NULL;
    if (n)
        *n = 0;
    if (!self || !list || !n)
        return DIST_EINVAL;
    uint32_t m = max > UINT32_MAX ? UINT32_MAX : (uint32_t)max;
    return s_info_call(self, DIST__CMD_FAILED, s_fill_failed, &m, timeout_ms, list, n);
}

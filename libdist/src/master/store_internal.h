/*  store_internal.h - the master's durable store: rows in one SQLite file.
 *
 *  The store knows rows, not the master: known task names, and one row per
 *  task that is not yet acknowledged (QUEUED, LEASED or DONE with its
 *  result). The master (master_store.c) decides what to write and when;
 *  this layer only makes it cheap and tells the truth about failures.
 *
 *  Rows are keyed by an integer the master hands out in increasing order
 *  (the SQLite rowid), not by the random task id: inserts then append to
 *  the end of the B-tree instead of touching a random page each, and the
 *  leases and deletions of a batch of tasks are usually runs of
 *  consecutive rows, written as one range statement.
 *
 *  Writes happen between dist__store_begin() and dist__store_commit(): one
 *  transaction, committed as a whole or not at all. The first error inside
 *  it is latched (later writes do nothing) and reported by the commit,
 *  which then rolls everything back. Each row gets at most one write per
 *  transaction: lease and delete runs are applied at commit, in no
 *  particular order relative to the other writes.
 *
 *  The file is opened in WAL mode with an exclusive lock held for as long
 *  as it is open, so a second master on the same file fails at once.
 *  synchronous=NORMAL (the default): a commit is in the WAL file, and so
 *  in the kernel, when it returns - it survives the master being killed,
 *  not the machine losing power. synchronous=FULL (full_sync) also fsyncs
 *  the WAL at every commit: it survives power loss, at the price of one
 *  fsync per loop turn.
 *
 *  Errors are negative -errno codes: -ENOSPC (disk or database full),
 *  -EIO (I/O error, corrupt file), -EBUSY (locked by another process),
 *  -EACCES / -EROFS (not writable), DIST_ENOMEM, DIST_EINVAL (not a
 *  libdist store), -ENOTSUP (written by a newer schema). dist__store_error
 *  gives a sentence for the log.
 *
 *  Not thread-safe: the master's loop thread owns it.
 */
#ifndef DIST_STORE_INTERNAL_H_INCLUDED
#define DIST_STORE_INTERNAL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto_internal.h"

/* The schema this code writes, and the newest it reads. Older schemas are
 * migrated in place when opened: the new columns are added with their
 * defaults (ALTER TABLE ADD COLUMN), which mean "no option" for every old
 * row. Schema 2 added task control, 3 each attempt's worker and reason
 * (the attempts column; older rows keep their reasons text), 4 the dead
 * letters and the tombstones of expired results (two tables, empty in a
 * migrated file). */
#define DIST__STORE_SCHEMA 4

typedef struct dist__store dist__store_t;

/* A task's retry and priority options (issue 12) as stored, in a task's
 * row and a dead letter's alike; 0 when unset. */
typedef struct {
    uint32_t priority, max_attempts, backoff_ms, backoff_max_ms;
    double backoff_factor;
    bool retry_on_error;
} dist__sopts_t;

/* One task as stored. Pointers are borrowed: from the caller when
 * writing, from SQLite (valid during the callback) when loading. */
typedef struct {
    int64_t row;             /* > 0 */
    dist__id_t id;
    const char *client;      /* the client name that submitted it */
    size_t client_len;
    const char *task;        /* the task name */
    size_t task_len;
    bool done;               /* DONE: data is the result */
    bool leased;             /* the current attempt was leased (may have started) */
    uint32_t attempt;
    uint32_t timeout_ms;
    dist__status_t status;   /* DONE only */
    const void *data;        /* args (QUEUED/LEASED) or result (DONE) */
    size_t len;
    const char *reasons;     /* load only: "1: ...; 2: ..." of a schema 2 row, or NULL */
    /* schema 2: task control (issue 12); 0 / NULL when unset */
    const char *key;         /* the caller's id string (NUL-terminated) */
    dist__sopts_t o;
    int64_t not_before_ms;   /* unix ms: DELAYED until then (not done) */
    int64_t submitted_ms, started_ms, finished_ms;
    /* schema 3: the attempts so far (dist__mhist_t records), or NULL */
    const uint8_t *attempts;
    size_t attempts_len;
} dist__srow_t;

/* One dead letter as stored (schema 4): a task that ended failed, with
 * its args for RETRY. Pointers are borrowed, as in dist__srow_t. */
typedef struct {
    int64_t row;             /* > 0, the master's sequence number: oldest first */
    dist__id_t id;
    const char *key;         /* NUL-terminated, or NULL */
    const char *error;       /* its final error */
    size_t error_len;
    const char *task, *client;
    size_t task_len, client_len;
    uint32_t timeout_ms, attempts;
    dist__sopts_t o;
    int64_t submitted_ms, started_ms, finished_ms;
    const uint8_t *hist;     /* dist__mhist_t records */
    size_t hist_len;
    const void *args;
    size_t len;
} dist__sdead_t;

/* Opens (creating when needed) the store at path, checks that it is a
 * libdist store of a schema this code reads, and takes its lock. NULL with
 * errno (the positive code) and a sentence in why[0..whylen). */
dist__store_t *dist__store_open(const char *path, bool full_sync, char *why, size_t whylen);

/* Closes the file (an open transaction is rolled back); *st_p = NULL. */
void dist__store_close(dist__store_t **st_p);

/* Reads every known task name, then every task in row order. A callback
 * returning non-zero stops the load with that code. Rows that are not
 * valid tasks fail the load (DIST_EINVAL, the row named in why). 0 or a
 * negative code; *max_row gets the largest row seen (0 when none). */
int dist__store_load(dist__store_t *st, int (*on_name)(void *ud, const char *name, size_t len),
                     int (*on_task)(void *ud, const dist__srow_t *r), void *ud, int64_t *max_row,
                     char *why, size_t whylen);

/* Reads every dead letter, then every tombstone (the id of an expired
 * result), each in row order, oldest first. As dist__store_load. */
int dist__store_load_control(dist__store_t *st, int (*on_dead)(void *ud, const dist__sdead_t *d),
                             int (*on_tomb)(void *ud, int64_t row, const dist__id_t *id),
                             void *ud, char *why, size_t whylen);

/* The master's instance (WELCOME instance, docs/PROTOCOL.md section 4):
 * the one kept in the file's meta table when it holds a valid one (the
 * file's tasks are still there: the same instance), else `fresh`, which
 * is then written in a transaction of its own. out[DIST__INSTANCE_LEN + 1]
 * gets it. 0 or a negative code (the store's error). */
int dist__store_instance(dist__store_t *st, const char *fresh, char *out);

/* ---- one transaction ------------------------------------------------------------- */

int dist__store_begin(dist__store_t *st);
void dist__store_name_put(dist__store_t *st, const char *name, size_t len);
void dist__store_name_del(dist__store_t *st, const char *name, size_t len);
/* Inserts the whole row. */
void dist__store_task_put(dist__store_t *st, const dist__srow_t *r);
/* The row's current attempt was leased. */
void dist__store_task_lease(dist__store_t *st, int64_t row);
/* A new attempt number, its attempts, leased or not, not_before_ms and
 * started_ms of r (RETURN, retries, delays, a delayed task due). */
void dist__store_task_meta(dist__store_t *st, const dist__srow_t *r);
/* The task is DONE with r's status and result (data), started_ms and finished_ms. */
void dist__store_task_done(dist__store_t *st, const dist__srow_t *r);
/* The row is gone (acknowledged). */
void dist__store_task_del(dist__store_t *st, int64_t row);
/* Dead letters: one inserted, one gone, every row below `below` gone
 * (fell off the bounds). */
void dist__store_dead_put(dist__store_t *st, const dist__sdead_t *d);
void dist__store_dead_del(dist__store_t *st, int64_t row);
void dist__store_dead_trim(dist__store_t *st, int64_t below);
/* Tombstones: one inserted, every row below `below` gone. */
void dist__store_tomb_put(dist__store_t *st, int64_t row, const dist__id_t *id);
void dist__store_tomb_trim(dist__store_t *st, int64_t below);
/* Commits: 0, or the transaction's first error (everything rolled back). */
int dist__store_commit(dist__store_t *st);
/* A transaction of its own that rewrites one small row: can the file be
 * written again? 0 or the error. */
int dist__store_probe(dist__store_t *st, int64_t stamp);

/* ---- facts ----------------------------------------------------------------------- */

const char *dist__store_path(const dist__store_t *st);
/* The last error as a sentence ("database or disk is full", ...). */
const char *dist__store_error(const dist__store_t *st);

/* Test hook: the next n commits fail with err (e.g. -ENOSPC) after
 * writing everything, as a full disk would at COMMIT. */
void dist__store_fail_next(dist__store_t *st, unsigned n, int err);

#endif

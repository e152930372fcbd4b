/*  store.c - the master's durable store on SQLite (see store_internal.h).
 *
 *  One file, five tables: `names` (task names workers announced, so that
 *  a SUBMIT right after a restart is not refused as unknown_task), `tasks`
 *  (one row per task not yet acknowledged), `dead` (the dead letters),
 *  `tombs` (the ids of expired results) and `meta` (who created the
 *  file; the master's instance id; a row that a failed store rewrites to
 *  see whether it can write again). The file is marked
 *  with an application id and a schema version (PRAGMA application_id and
 *  user_version), so that another SQLite file, or one written by a newer
 *  libdist, is refused with a clear reason instead of being misread.
 *
 *  Every write is a prepared statement bound with borrowed pointers
 *  (SQLITE_STATIC: SQLite copies what it keeps while it steps). Leases
 *  and deletions of consecutive rows are gathered into one range
 *  statement each: a TASKS batch leases, and an ACK batch acknowledges,
 *  tasks that were mostly submitted together.
 */
#include "store_internal.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/error.h"

/* "DIST" in the database header: a libdist store. */
#define APP_ID 0x44495354
/* Page cache: the rows being worked on are the newest ones, near the end
 * of the B-tree, so a small cache suffices. */
#define CACHE_KIB 8192
/* The WAL is copied into the file (a checkpoint, with an fsync) once it
 * holds this many pages (32 MiB): rows are rewritten several times in
 * their short lives (insert, lease, done, delete), and a page written
 * many times between checkpoints is copied once. */
#define WAL_PAGES 8192

enum {
    ST_BEGIN, ST_COMMIT, ST_ROLLBACK, ST_NAME_PUT, ST_NAME_DEL, ST_PUT, ST_PUT_PLAIN, ST_LEASE1,
    ST_LEASES,
    ST_META, ST_DONE, ST_DEL1, ST_DELS, ST_PROBE, ST_DEAD_PUT, ST_DEAD_DEL, ST_DEAD_TRIM,
    ST_TOMB_PUT, ST_TOMB_TRIM, ST_COUNT
};

static const char *const s_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_NAME_PUT] = "INSERT OR IGNORE INTO names(name) VALUES(?1)",
    [ST_NAME_DEL] = "DELETE FROM names WHERE name = ?1",
    [ST_PUT] = ("INSERT OR REPLACE INTO tasks(row, id, client, task, done, leased, attempt, "
                "timeout_ms, status, data, reasons, key, priority, not_before_ms, max_attempts, "
                "backoff_ms, backoff_factor, backoff_max_ms, retry_on_error, submitted_ms, "
                "started_ms, finished_ms, attempts) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
                "?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)"),
    /* Most tasks carry no task-control option and no attempt history yet:
     * their row leaves those columns to their defaults (0, NULL), 11 binds
     * fewer per insert. */
    [ST_PUT_PLAIN] = ("INSERT OR REPLACE INTO tasks(row, id, client, task, done, leased, attempt, "
                      "timeout_ms, status, data, reasons, submitted_ms) VALUES(?1, ?2, ?3, ?4, ?5, "
                      "?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
    [ST_LEASE1] = "UPDATE tasks SET leased = 1 WHERE row = ?1",
    [ST_LEASES] = "UPDATE tasks SET leased = 1 WHERE row BETWEEN ?1 AND ?2",
    [ST_META] = ("UPDATE tasks SET attempt = ?2, leased = ?3, reasons = NULL, attempts = ?4, "
                 "not_before_ms = ?5, started_ms = ?6 WHERE row = ?1"),
    [ST_DONE] = ("UPDATE tasks SET done = 1, leased = 0, status = ?2, data = ?3, reasons = NULL, "
                 "attempts = ?6, not_before_ms = 0, started_ms = ?4, finished_ms = ?5 "
                 "WHERE row = ?1"),
    [ST_DEL1] = "DELETE FROM tasks WHERE row = ?1",
    [ST_DELS] = "DELETE FROM tasks WHERE row BETWEEN ?1 AND ?2",
    [ST_PROBE] = "INSERT OR REPLACE INTO meta(key, value) VALUES('probe', ?1)",
    [ST_DEAD_PUT] = ("INSERT OR REPLACE INTO dead(row, id, key, error, task, client, timeout_ms, "
                     "attempts, priority, max_attempts, backoff_ms, backoff_factor, "
                     "backoff_max_ms, retry_on_error, submitted_ms, started_ms, finished_ms, "
                     "hist, args) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, "
                     "?14, ?15, ?16, ?17, ?18, ?19)"),
    [ST_DEAD_DEL] = "DELETE FROM dead WHERE row = ?1",
    [ST_DEAD_TRIM] = "DELETE FROM dead WHERE row < ?1",
    [ST_TOMB_PUT] = "INSERT OR REPLACE INTO tombs(row, id) VALUES(?1, ?2)",
    [ST_TOMB_TRIM] = "DELETE FROM tombs WHERE row < ?1",
};

#define S_COLUMNS_2                                                                              \
    " key TEXT, priority INTEGER NOT NULL DEFAULT 0, not_before_ms INTEGER NOT NULL DEFAULT 0,"    \
    " max_attempts INTEGER NOT NULL DEFAULT 0, backoff_ms INTEGER NOT NULL DEFAULT 0,"             \
    " backoff_factor REAL NOT NULL DEFAULT 0, backoff_max_ms INTEGER NOT NULL DEFAULT 0,"          \
    " retry_on_error INTEGER NOT NULL DEFAULT 0, submitted_ms INTEGER NOT NULL DEFAULT 0,"         \
    " started_ms INTEGER NOT NULL DEFAULT 0, finished_ms INTEGER NOT NULL DEFAULT 0,"          \
    " attempts BLOB"

/* Schema 4: the dead letters (tasks that ended failed, kept for FAILED
 * and RETRY) and the tombstones of expired results, both bounded by the
 * master as in memory (master_control.c). Rows are the master's sequence
 * numbers, oldest first. */
#define S_TABLES_4                                                                              \
    "CREATE TABLE dead("                                                                       \
    " row INTEGER PRIMARY KEY, id BLOB NOT NULL, key TEXT, error BLOB NOT NULL,"               \
    " task BLOB NOT NULL, client BLOB NOT NULL, timeout_ms INTEGER NOT NULL,"                  \
    " attempts INTEGER NOT NULL, priority INTEGER NOT NULL, max_attempts INTEGER NOT NULL,"    \
    " backoff_ms INTEGER NOT NULL, backoff_factor REAL NOT NULL,"                              \
    " backoff_max_ms INTEGER NOT NULL, retry_on_error INTEGER NOT NULL,"                       \
    " submitted_ms INTEGER NOT NULL, started_ms INTEGER NOT NULL,"                             \
    " finished_ms INTEGER NOT NULL, hist BLOB, args BLOB NOT NULL);"                          \
    "CREATE TABLE tombs(row INTEGER PRIMARY KEY, id BLOB NOT NULL);"

static const char s_schema[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID;"
    "INSERT INTO meta(key, value) VALUES('created_by', 'libdist " DIST_VERSION_STRING "');"
    "CREATE TABLE names(name BLOB PRIMARY KEY NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE tasks("
    " row INTEGER PRIMARY KEY,"  /* the master's sequence number */
    " id BLOB NOT NULL,"         /* 16 bytes */
    " client BLOB NOT NULL,"     /* the submitting client's name */
    " task BLOB NOT NULL,"       /* the task's name */
    " done INTEGER NOT NULL,"    /* 0: queued (or leased), 1: done, data is the result */
    " leased INTEGER NOT NULL,"  /* the current attempt was leased */
    " attempt INTEGER NOT NULL,"
    " timeout_ms INTEGER NOT NULL,"
    " status TEXT,"              /* done: ok, failed, ..., gave_up */
    " data BLOB,"                /* args, or the result's value or error */
    " reasons TEXT,"             /* schema 1-2: why earlier attempts failed (now in attempts) */
    S_COLUMNS_2 ");" S_TABLES_4;

/* The columns of schema 2 (task control), as CREATE TABLE lists them; the
 * migration of a schema 1 file adds each with ALTER TABLE ADD COLUMN. All
 * default to "unset", which is what an old row means. */
static const char *const s_columns_2[] = {
    "key TEXT",                              /* the caller's id string */
    "priority INTEGER NOT NULL DEFAULT 0",
    "not_before_ms INTEGER NOT NULL DEFAULT 0", /* unix ms: delayed until then */
    "max_attempts INTEGER NOT NULL DEFAULT 0",  /* 0: the master's */
    "backoff_ms INTEGER NOT NULL DEFAULT 0",
    "backoff_factor REAL NOT NULL DEFAULT 0",
    "backoff_max_ms INTEGER NOT NULL DEFAULT 0",
    "retry_on_error INTEGER NOT NULL DEFAULT 0",
    "submitted_ms INTEGER NOT NULL DEFAULT 0",
    "started_ms INTEGER NOT NULL DEFAULT 0",
    "finished_ms INTEGER NOT NULL DEFAULT 0",
};

/* Schema 3: each attempt's worker and reason, the master's own records
 * (master_internal.h, dist__mhist_t); NULL in an older row. */
static const char *const s_columns_3[] = {
    "attempts BLOB",
};

/* A run of consecutive rows waiting for one range statement. */
typedef struct {
    int64_t lo, hi; /* lo 0: empty */
} s_run_t;

struct dist__store {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *st[ST_COUNT];
    bool in_txn;
    int64_t version; /* the schema the file had when opened (0: new) */
    int err;        /* the first error of the current transaction */
    s_run_t leases, dels;
    unsigned fail_n;
    int fail_err;
    char msg[512];
};

/* ---- errors ------------------------------------------------------------------------ */

static int s_code(sqlite3 *db, int rc)
{
    int sys = db ? sqlite3_system_errno(db) : 0;
    switch (rc & 0xff) {
    case SQLITE_FULL: return -ENOSPC;
    case SQLITE_NOMEM: return DIST_ENOMEM;
    case SQLITE_IOERR:
        return rc == SQLITE_IOERR_NOMEM ? DIST_ENOMEM : sys == ENOSPC ? -ENOSPC : -EIO;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return -EBUSY;
    case SQLITE_READONLY: return -EROFS;
    case SQLITE_PERM:
    case SQLITE_AUTH: return -EACCES;
    case SQLITE_CANTOPEN: return sys > 0 ? -sys : -EACCES;
    case SQLITE_NOTADB: return DIST_EINVAL;
    case SQLITE_TOOBIG: return DIST_EMSGSIZE;
    default: return -EIO;
    }
}

/* SQLite's message, with the system's reason when it has one. */
static void s_describe(dist__store_t *st, int rc, char *out, size_t len)
{
    int sys = st->db ? sqlite3_system_errno(st->db) : 0;
    const char *what = st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc);
    if (sys > 0 && ((rc & 0xff) == SQLITE_IOERR || (rc & 0xff) == SQLITE_CANTOPEN ||
                    (rc & 0xff) == SQLITE_FULL))
        snprintf(out, len, "%s (%s)", what, strerror(sys));
    else
        snprintf(out, len, "%s", what);
}

/* Latches the first error of a transaction. */
static void s_fail(dist__store_t *st, int rc)
{
    if (st->err)
        return;
    st->err = s_code(st->db, rc);
    s_describe(st, rc, st->msg, sizeof st->msg);
}

/* Steps a bound statement to its end and resets it. */
static void s_run(dist__store_t *st, sqlite3_stmt *stmt)
{
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        s_fail(st, sqlite3_extended_errcode(st->db));
    sqlite3_reset(stmt);
}

/* ---- opening ------------------------------------------------------------------------ */

static int s_pragma_int(sqlite3 *db, const char *sql, int64_t *v)
{
    sqlite3_stmt *stmt;
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        *v = sqlite3_column_int64(stmt, 0);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        *v = 0;
        rc = SQLITE_OK;
    }
    sqlite3_finalize(stmt);
    return rc;
}

/* PRAGMA journal_mode=WAL: the mode SQLite actually chose into mode. */
static int s_wal(sqlite3 *db, char *mode, size_t len)
{
    sqlite3_stmt *stmt;
    int rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &stmt, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        const unsigned char *m = sqlite3_column_text(stmt, 0);
        snprintf(mode, len, "%s", m ? (const char *)m : "");
        rc = SQLITE_OK;
    }
    sqlite3_finalize(stmt);
    return rc;
}

/* Creates the schema of a new file, or checks an existing one's marks. */
static int s_check_or_create(dist__store_t *st, char *why, size_t whylen)
{
    int64_t app = 0, version = 0, objects = 0;
    int rc = s_pragma_int(st->db, "PRAGMA application_id", &app);
    if (rc == SQLITE_OK)
        rc = s_pragma_int(st->db, "PRAGMA user_version", &version);
    if (rc == SQLITE_OK)
        rc = s_pragma_int(st->db, "SELECT count(*) FROM sqlite_master", &objects);
    if (rc != SQLITE_OK)
        return rc;
    if (app == 0 && version == 0 && objects == 0)
        return SQLITE_OK; /* a new file: created once it is in WAL mode */
    if (app != APP_ID) {
        snprintf(why, whylen, "%s is not a libdist store (an SQLite database of another program)",
                 st->path);
        return -1;
    }
    if (version > DIST__STORE_SCHEMA) {
        snprintf(why, whylen, "%s was written by a newer libdist (store schema %lld; this "
                 "master reads schema %d or older)", st->path, (long long)version,
                 DIST__STORE_SCHEMA);
        return -2;
    }
    if (version < 1) {
        snprintf(why, whylen, "%s is not a libdist store (no schema version)", st->path);
        return -1;
    }
    st->version = version;
    return SQLITE_OK;
}

/* Adds the columns of one schema; an SQLite code. */
static int s_add_columns(dist__store_t *st, const char *const *cols, size_t n)
{
    int rc = SQLITE_OK;
    for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
        char sql[160];
        snprintf(sql, sizeof sql, "ALTER TABLE tasks ADD COLUMN %s", cols[i]);
        rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
    }
    return rc;
}

/* Schema 1, 2 or 3 -> 4 in one transaction: the new columns and tables,
 * then the version. */
static int s_migrate(dist__store_t *st)
{
    int rc = sqlite3_exec(st->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK && st->version < 2)
        rc = s_add_columns(st, s_columns_2, sizeof s_columns_2 / sizeof *s_columns_2);
    if (rc == SQLITE_OK && st->version < 3)
        rc = s_add_columns(st, s_columns_3, sizeof s_columns_3 / sizeof *s_columns_3);
    if (rc == SQLITE_OK && st->version < 4)
        rc = sqlite3_exec(st->db, S_TABLES_4, NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d; COMMIT", DIST__STORE_SCHEMA);
        rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK && !sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static int s_create(dist__store_t *st)
{
    char sql[sizeof s_schema + 256];
    snprintf(sql, sizeof sql, "BEGIN IMMEDIATE; %s PRAGMA application_id = %d; "
             "PRAGMA user_version = %d; COMMIT;", s_schema, APP_ID, DIST__STORE_SCHEMA);
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK && !sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* Explains a failed SQLite call made while opening. */
static int s_open_error(dist__store_t *st, int rc, char *why, size_t whylen)
{
    char what[400];
    int code = s_code(st->db, rc);
    s_describe(st, rc, what, sizeof what);
    if (code == -EBUSY)
        snprintf(why, whylen, "%s is in use by another process (another dist-master?)", st->path);
    else if ((rc & 0xff) == SQLITE_NOTADB)
        snprintf(why, whylen, "%s is not a libdist store (not an SQLite database)", st->path);
    else if ((rc & 0xff) == SQLITE_CORRUPT)
        snprintf(why, whylen, "%s is damaged: %s", st->path, what);
    else if ((rc & 0xff) == SQLITE_READONLY)
        snprintf(why, whylen, "%s is not writable: %s", st->path, what);
    else
        snprintf(why, whylen, "cannot open the store %s: %s", st->path, what);
    return code;
}

dist__store_t *dist__store_open(const char *path, bool full_sync, char *why, size_t whylen)
{
    dist__store_t *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        snprintf(why, whylen, "out of memory");
        errno = ENOMEM;
        return NULL;
    }
    int code = 0;
    int rc = sqlite3_open_v2(path, &st->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        code = s_open_error(st, rc, why, whylen);
        goto fail;
    }
    sqlite3_extended_result_codes(st->db, 1);
    if (sqlite3_db_readonly(st->db, "main") == 1) {
        snprintf(why, whylen, "%s is not writable", path);
        code = -EACCES;
        goto fail;
    }
    /* Exclusive: the lock is taken at the first read and held until
     * close, so two masters never share a file; WAL then keeps its index
     * in this process's memory (no -shm file). */
    rc = sqlite3_exec(st->db, "PRAGMA locking_mode = EXCLUSIVE", NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
        int marks = s_check_or_create(st, why, whylen);
        if (marks == -1 || marks == -2) {
            code = marks == -1 ? DIST_EINVAL : -ENOTSUP;
            goto fail;
        }
        rc = marks;
    }
    char mode[32] = "";
    if (rc == SQLITE_OK)
        rc = s_wal(st->db, mode, sizeof mode);
    if (rc != SQLITE_OK) {
        code = s_open_error(st, rc, why, whylen);
        goto fail;
    }
    bool in_memory = strcmp(path, ":memory:") == 0 && strcmp(mode, "memory") == 0;
    if (strcmp(mode, "wal") != 0 && !in_memory) {
        snprintf(why, whylen, "%s cannot be put in WAL mode (journal mode %s)", path, mode);
        code = -EIO;
        goto fail;
    }
    char sql[128];
    snprintf(sql, sizeof sql, "PRAGMA synchronous = %s; PRAGMA cache_size = -%d; "
             "PRAGMA wal_autocheckpoint = %d", full_sync ? "FULL" : "NORMAL", CACHE_KIB,
             WAL_PAGES);
    rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
    int64_t objects = 0;
    if (rc == SQLITE_OK)
        rc = s_pragma_int(st->db, "SELECT count(*) FROM sqlite_master", &objects);
    /* Creating the schema is also the proof that the file can be written
     * and locked; an existing store is proven by an empty transaction. */
    if (rc == SQLITE_OK)
        rc = !objects                             ? s_create(st)
             : st->version < DIST__STORE_SCHEMA ? s_migrate(st)
                                                 : sqlite3_exec(st->db, "BEGIN IMMEDIATE; COMMIT",
                                                                NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        code = s_open_error(st, rc, why, whylen);
        goto fail;
    }
    for (int i = 0; i < ST_COUNT; i++) {
        rc = sqlite3_prepare_v3(st->db, s_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->st[i], NULL);
        if (rc != SQLITE_OK) {
            snprintf(why, whylen, "%s is not a libdist store of schema %d: %s", path,
                     DIST__STORE_SCHEMA, sqlite3_errmsg(st->db));
            code = DIST_EINVAL;
            goto fail;
        }
    }
    return st;
fail:
    dist__store_close(&st);
    errno = -code;
    return NULL;
}

void dist__store_close(dist__store_t **st_p)
{
    if (!st_p || !*st_p)
        return;
    dist__store_t *st = *st_p;
    *st_p = NULL;
    if (st->db && !sqlite3_get_autocommit(st->db))
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(st->st[i]);
    sqlite3_close(st->db);
    free(st->path);
    free(st);
}

const char *dist__store_path(const dist__store_t *st) { return st->path; }

const char *dist__store_error(const dist__store_t *st) { return st->msg[0] ? st->msg : "no error"; }

void dist__store_fail_next(dist__store_t *st, unsigned n, int err)
{
    st->fail_n = n;
    st->fail_err = err ? err : -EIO;
}

/* ---- loading ---------------------------------------------------------------------- */

/* A column that must be a blob (or, when nullable, NULL for empty). */
static bool s_col_blob(sqlite3_stmt *q, int i, bool nullable, const void **p, size_t *n)
{
    int type = sqlite3_column_type(q, i);
    if (type == SQLITE_NULL && nullable) {
        *p = "";
        *n = 0;
        return true;
    }
    if (type != SQLITE_BLOB)
        return false;
    *n = (size_t)sqlite3_column_bytes(q, i);
    *p = sqlite3_column_blob(q, i);
    if (!*p)
        *p = "";
    return true;
}

static bool s_col_u32(sqlite3_stmt *q, int i, int64_t min, uint32_t *v)
{
    if (sqlite3_column_type(q, i) != SQLITE_INTEGER)
        return false;
    int64_t x = sqlite3_column_int64(q, i);
    if (x < min || x > UINT32_MAX)
        return false;
    *v = (uint32_t)x;
    return true;
}

/* The options of a task or dead letter: priority in column prio, then
 * max_attempts, backoff_ms, backoff_factor, backoff_max_ms and
 * retry_on_error from column rest on; NULL or what is wrong. */
static const char *s_col_opts(sqlite3_stmt *q, int prio, int rest, dist__sopts_t *o)
{
    uint32_t roe = 0;
    if (!s_col_u32(q, prio, 0, &o->priority) || o->priority >= DIST__PRIORITY_LEVELS)
        return "priority";
    if (!s_col_u32(q, rest, 0, &o->max_attempts) || o->max_attempts > DIST__ATTEMPTS_MAX)
        return "max_attempts";
    if (!s_col_u32(q, rest + 1, 0, &o->backoff_ms) ||
        !s_col_u32(q, rest + 3, 0, &o->backoff_max_ms))
        return "backoff";
    o->backoff_factor = sqlite3_column_double(q, rest + 2);
    if (!(o->backoff_factor == 0 || (o->backoff_factor >= 1.0 && o->backoff_factor <= 1000.0)))
        return "backoff_factor";
    if (!s_col_u32(q, rest + 4, 0, &roe) || roe > 1)
        return "retry_on_error";
    o->retry_on_error = roe;
    return NULL;
}

/* Columns 0 and 1 of a task or dead letter: its row and its id; NULL or
 * what is wrong. */
static const char *s_col_row_id(sqlite3_stmt *q, int64_t *row, dist__id_t *id)
{
    const void *p;
    size_t n;
    *row = sqlite3_column_int64(q, 0);
    if (*row <= 0)
        return "row number";
    if (!s_col_blob(q, 1, false, &p, &n) || n != sizeof id->b)
        return "id";
    memcpy(id->b, p, n);
    return NULL;
}

/* A task name column, or with peer a client name. */
static bool s_col_name(sqlite3_stmt *q, int i, bool peer, const char **name, size_t *len)
{
    const void *p;
    if (!s_col_blob(q, i, false, &p, len) ||
        !(peer ? dist__peer_name_ok(p, *len) : dist__name_ok(p, *len)))
        return false;
    *name = p;
    return true;
}

/* A key column: a caller's id string, or NULL. */
static bool s_col_key(sqlite3_stmt *q, int i, const char **key)
{
    int type = sqlite3_column_type(q, i);
    if (type == SQLITE_NULL)
        return true;
    if (type != SQLITE_TEXT)
        return false;
    *key = (const char *)sqlite3_column_text(q, i);
    return dist__key_ok(*key, strlen(*key));
}

/* Reads the current row of the task query into r; NULL or what is wrong. */
static const char *s_row(sqlite3_stmt *q, dist__srow_t *r)
{
    const void *p;
    uint32_t flag;
    memset(r, 0, sizeof *r);
    const char *bad = s_col_row_id(q, &r->row, &r->id);
    if (bad)
        return bad;
    if (!s_col_name(q, 2, true, &r->client, &r->client_len))
        return "client";
    if (!s_col_name(q, 3, false, &r->task, &r->task_len))
        return "task";
    if (!s_col_u32(q, 4, 0, &flag) || flag > 1)
        return "done";
    r->done = flag;
    if (!s_col_u32(q, 5, 0, &flag) || flag > 1)
        return "leased";
    r->leased = flag && !r->done;
    if (!s_col_u32(q, 6, 1, &r->attempt))
        return "attempt";
    if (!s_col_u32(q, 7, 0, &r->timeout_ms))
        return "timeout_ms";
    if (r->done) {
        const char *st = (const char *)sqlite3_column_text(q, 8);
        r->status = st ? dist__status_parse(st, strlen(st)) : DIST__ST_COUNT;
        if (r->status >= DIST__ST_COUNT || !dist__status_final(r->status))
            return "status";
    }
    if (!s_col_blob(q, 9, true, &r->data, &r->len) || r->len > UINT32_MAX)
        return "data";
    int type = sqlite3_column_type(q, 10);
    if (type == SQLITE_TEXT)
        r->reasons = (const char *)sqlite3_column_text(q, 10);
    else if (type != SQLITE_NULL)
        return "reasons";
    if (!s_col_key(q, 11, &r->key))
        return "key";
    bad = s_col_opts(q, 12, 14, &r->o);
    if (bad)
        return bad;
    r->not_before_ms = r->done ? 0 : sqlite3_column_int64(q, 13);
    r->submitted_ms = sqlite3_column_int64(q, 19);
    r->started_ms = sqlite3_column_int64(q, 20);
    r->finished_ms = sqlite3_column_int64(q, 21);
    if (sqlite3_column_type(q, 22) != SQLITE_NULL) {
        if (!s_col_blob(q, 22, false, &p, &r->attempts_len))
            return "attempts";
        r->attempts = p;
    }
    return NULL;
}

/* What the loaders' row callbacks pass on. */
typedef struct {
    int (*on_task)(void *ud, const dist__srow_t *r);
    int (*on_dead)(void *ud, const dist__sdead_t *d);
    int (*on_tomb)(void *ud, int64_t row, const dist__id_t *id);
    void *ud;
    int64_t *max_row;
} s_load_t;

/* Steps the query sql through its rows, giving each to each(), which
 * sets *bad to what is wrong with a damaged row or returns the code of
 * its callback; the first of either stops the load with a sentence in why
 * naming `what` and the row. 0 or a negative code. */
static int s_each(dist__store_t *st, const char *sql, const char *what,
                  int (*each)(sqlite3_stmt *q, void *ctx, const char **bad), void *ctx,
                  char *why, size_t whylen)
{
    sqlite3_stmt *q = NULL;
    int code = 0;
    int rc = sqlite3_prepare_v2(st->db, sql, -1, &q, NULL);
    while (!code && (rc == SQLITE_OK || rc == SQLITE_ROW)) {
        if ((rc = sqlite3_step(q)) != SQLITE_ROW)
            break;
        const char *bad = NULL;
        long long row = (long long)sqlite3_column_int64(q, 0);
        code = each(q, ctx, &bad);
        if (bad) {
            snprintf(why, whylen, "%s is damaged: %s row %lld has a bad %s", st->path, what, row,
                     bad);
            code = DIST_EINVAL;
        } else if (code) {
            snprintf(why, whylen, "cannot load %s: %s row %lld: %s", st->path, what, row,
                     dist_strerror(code));
        }
    }
    sqlite3_finalize(q);
    if (!code && rc != SQLITE_DONE)
        code = s_open_error(st, sqlite3_extended_errcode(st->db), why, whylen);
    return code;
}

static int s_task_each(sqlite3_stmt *q, void *ctx, const char **bad)
{
    const s_load_t *l = ctx;
    dist__srow_t r;
    if ((*bad = s_row(q, &r)) != NULL)
        return 0;
    if (r.row > *l->max_row)
        *l->max_row = r.row;
    return l->on_task(l->ud, &r);
}

int dist__store_load(dist__store_t *st, int (*on_name)(void *ud, const char *name, size_t len),
                     int (*on_task)(void *ud, const dist__srow_t *r), void *ud, int64_t *max_row,
                     char *why, size_t whylen)
{
    *max_row = 0;
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v2(st->db, "SELECT name FROM names", -1, &q, NULL);
    int code = 0;
    while (rc == SQLITE_OK || rc == SQLITE_ROW) {
        if ((rc = sqlite3_step(q)) != SQLITE_ROW)
            break;
        const void *p;
        size_t n;
        if (!s_col_blob(q, 0, false, &p, &n) || !dist__name_ok(p, n)) {
            snprintf(why, whylen, "%s is damaged: a task name is not valid", st->path);
            code = DIST_EINVAL;
            break;
        }
        if ((code = on_name(ud, p, n)) != 0) {
            snprintf(why, whylen, "cannot load %s: %s", st->path, dist_strerror(code));
            break;
        }
    }
    sqlite3_finalize(q);
    if (!code && rc != SQLITE_DONE)
        return s_open_error(st, sqlite3_extended_errcode(st->db), why, whylen);
    if (code)
        return code;
    s_load_t l = { .on_task = on_task, .ud = ud, .max_row = max_row };
    return s_each(st, "SELECT row, id, client, task, done, leased, attempt, timeout_ms, status, "
                  "data, reasons, key, priority, not_before_ms, max_attempts, backoff_ms, "
                  "backoff_factor, backoff_max_ms, retry_on_error, submitted_ms, started_ms, "
                  "finished_ms, attempts FROM tasks ORDER BY row",
                  "task", s_task_each, &l, why, whylen);
}

/* Reads the current row of the dead-letter query into d; NULL or what is wrong. */
static const char *s_dead_row(sqlite3_stmt *q, dist__sdead_t *d)
{
    const void *p;
    memset(d, 0, sizeof *d);
    const char *bad = s_col_row_id(q, &d->row, &d->id);
    if (bad)
        return bad;
    if (!s_col_key(q, 2, &d->key))
        return "key";
    if (!s_col_blob(q, 3, false, &p, &d->error_len))
        return "error";
    d->error = p;
    if (!s_col_name(q, 4, false, &d->task, &d->task_len))
        return "task";
    if (!s_col_name(q, 5, true, &d->client, &d->client_len))
        return "client";
    if (!s_col_u32(q, 6, 0, &d->timeout_ms) || !s_col_u32(q, 7, 0, &d->attempts))
        return "timeout_ms or attempts";
    bad = s_col_opts(q, 8, 9, &d->o);
    if (bad)
        return bad;
    d->submitted_ms = sqlite3_column_int64(q, 14);
    d->started_ms = sqlite3_column_int64(q, 15);
    d->finished_ms = sqlite3_column_int64(q, 16);
    if (!s_col_blob(q, 17, true, &p, &d->hist_len))
        return "hist";
    d->hist = p;
    if (!s_col_blob(q, 18, false, &d->args, &d->len) || d->len > UINT32_MAX)
        return "args";
    return NULL;
}

static int s_dead_each(sqlite3_stmt *q, void *ctx, const char **bad)
{
    const s_load_t *l = ctx;
    dist__sdead_t d;
    *bad = s_dead_row(q, &d);
    return *bad ? 0 : l->on_dead(l->ud, &d);
}

static int s_tomb_each(sqlite3_stmt *q, void *ctx, const char **bad)
{
    const s_load_t *l = ctx;
    int64_t row;
    dist__id_t id;
    *bad = s_col_row_id(q, &row, &id);
    return *bad ? 0 : l->on_tomb(l->ud, row, &id);
}

int dist__store_load_control(dist__store_t *st, int (*on_dead)(void *ud, const dist__sdead_t *d),
                             int (*on_tomb)(void *ud, int64_t row, const dist__id_t *id),
                             void *ud, char *why, size_t whylen)
{
    s_load_t l = { .on_dead = on_dead, .on_tomb = on_tomb, .ud = ud };
    int code = s_each(st, "SELECT row, id, key, error, task, client, timeout_ms, attempts, "
                      "priority, max_attempts, backoff_ms, backoff_factor, backoff_max_ms, "
                      "retry_on_error, submitted_ms, started_ms, finished_ms, hist, args "
                      "FROM dead ORDER BY row",
                      "dead letter", s_dead_each, &l, why, whylen);
    return code ? code : s_each(st, "SELECT row, id FROM tombs ORDER BY row", "tombstone",
                                s_tomb_each, &l, why, whylen);
}

/* ---- writing ---------------------------------------------------------------------- */

int dist__store_begin(dist__store_t *st)
{
    if (st->in_txn)
        return 0;
    st->err = 0;
    st->leases.lo = st->dels.lo = 0;
    s_run(st, st->st[ST_BEGIN]);
    if (st->err)
        return st->err;
    st->in_txn = true;
    return 0;
}

static void s_bind_blob(sqlite3_stmt *q, int i, const void *p, size_t n)
{
    /* A NULL pointer would bind NULL: an empty blob is still a blob. */
    sqlite3_bind_blob64(q, i, p ? p : "", n, SQLITE_STATIC);
}

/* The options, bound as s_col_opts reads them (parameters count from 1). */
static void s_bind_opts(sqlite3_stmt *q, int prio, int rest, const dist__sopts_t *o)
{
    sqlite3_bind_int64(q, prio, o->priority);
    sqlite3_bind_int64(q, rest, o->max_attempts);
    sqlite3_bind_int64(q, rest + 1, o->backoff_ms);
    sqlite3_bind_double(q, rest + 2, o->backoff_factor);
    sqlite3_bind_int64(q, rest + 3, o->backoff_max_ms);
    sqlite3_bind_int(q, rest + 4, o->retry_on_error);
}

/* A row's attempts, or NULL when it has none. */
static void s_bind_attempts(sqlite3_stmt *q, int i, const dist__srow_t *r)
{
    if (r->attempts)
        s_bind_blob(q, i, r->attempts, r->attempts_len);
    else
        sqlite3_bind_null(q, i);
}

void dist__store_name_put(dist__store_t *st, const char *name, size_t len)
{
    if (st->err)
        return;
    sqlite3_stmt *q = st->st[ST_NAME_PUT];
    s_bind_blob(q, 1, name, len);
    s_run(st, q);
}

void dist__store_name_del(dist__store_t *st, const char *name, size_t len)
{
    if (st->err)
        return;
    sqlite3_stmt *q = st->st[ST_NAME_DEL];
    s_bind_blob(q, 1, name, len);
    s_run(st, q);
}

void dist__store_task_put(dist__store_t *st, const dist__srow_t *r)
{
    if (st->err)
        return;
    bool plain = !r->key && !r->o.priority && !r->not_before_ms && !r->o.max_attempts &&
                 !r->o.backoff_ms && r->o.backoff_factor == 0 && !r->o.backoff_max_ms &&
                 !r->o.retry_on_error && !r->started_ms && !r->finished_ms && !r->attempts_len;
    sqlite3_stmt *q = st->st[plain ? ST_PUT_PLAIN : ST_PUT];
    sqlite3_bind_int64(q, 1, r->row);
    s_bind_blob(q, 2, r->id.b, sizeof r->id.b);
    s_bind_blob(q, 3, r->client, r->client_len);
    s_bind_blob(q, 4, r->task, r->task_len);
    sqlite3_bind_int(q, 5, r->done);
    sqlite3_bind_int(q, 6, r->leased);
    sqlite3_bind_int64(q, 7, r->attempt);
    sqlite3_bind_int64(q, 8, r->timeout_ms);
    /* A NULL text binds NULL (SQLite's documented behaviour). */
    sqlite3_bind_text(q, 9, r->done ? dist__status_name(r->status) : NULL, -1, SQLITE_STATIC);
    s_bind_blob(q, 10, r->data, r->len);
    sqlite3_bind_null(q, 11); /* the reasons of schema 2 are in attempts now */
    if (plain) {
        sqlite3_bind_int64(q, 12, r->submitted_ms);
        s_run(st, q);
        return;
    }
    sqlite3_bind_text(q, 12, r->key, -1, SQLITE_STATIC);
    s_bind_opts(q, 13, 15, &r->o);
    sqlite3_bind_int64(q, 14, r->not_before_ms);
    sqlite3_bind_int64(q, 20, r->submitted_ms);
    sqlite3_bind_int64(q, 21, r->started_ms);
    sqlite3_bind_int64(q, 22, r->finished_ms);
    s_bind_attempts(q, 23, r);
    s_run(st, q);
}

/* Writes a pending run with the one-row or the range statement. */
static void s_run_flush(dist__store_t *st, s_run_t *run, int one, int range)
{
    if (!run->lo || st->err) {
        run->lo = 0;
        return;
    }
    sqlite3_stmt *q = st->st[run->lo == run->hi ? one : range];
    sqlite3_bind_int64(q, 1, run->lo);
    if (run->lo != run->hi)
        sqlite3_bind_int64(q, 2, run->hi);
    s_run(st, q);
    run->lo = 0;
}

/* Extends a run by row, or writes it and starts another. */
static void s_run_add(dist__store_t *st, s_run_t *run, int64_t row, int one, int range)
{
    if (st->err)
        return;
    if (run->lo && row == run->hi + 1) {
        run->hi = row;
        return;
    }
    s_run_flush(st, run, one, range);
    run->lo = run->hi = row;
}

void dist__store_task_lease(dist__store_t *st, int64_t row)
{
    s_run_add(st, &st->leases, row, ST_LEASE1, ST_LEASES);
}

void dist__store_task_del(dist__store_t *st, int64_t row)
{
    s_run_add(st, &st->dels, row, ST_DEL1, ST_DELS);
}

void dist__store_task_meta(dist__store_t *st, const dist__srow_t *r)
{
    if (st->err)
        return;
    sqlite3_stmt *q = st->st[ST_META];
    sqlite3_bind_int64(q, 1, r->row);
    sqlite3_bind_int64(q, 2, r->attempt);
    sqlite3_bind_int(q, 3, r->leased);
    s_bind_attempts(q, 4, r);
    sqlite3_bind_int64(q, 5, r->not_before_ms);
    sqlite3_bind_int64(q, 6, r->started_ms);
    s_run(st, q);
}

void dist__store_task_done(dist__store_t *st, const dist__srow_t *r)
{
    if (st->err)
        return;
    sqlite3_stmt *q = st->st[ST_DONE];
    sqlite3_bind_int64(q, 1, r->row);
    sqlite3_bind_text(q, 2, dist__status_name(r->status), -1, SQLITE_STATIC);
    s_bind_blob(q, 3, r->data, r->len);
    sqlite3_bind_int64(q, 4, r->started_ms);
    sqlite3_bind_int64(q, 5, r->finished_ms);
    s_bind_attempts(q, 6, r);
    s_run(st, q);
}

void dist__store_dead_put(dist__store_t *st, const dist__sdead_t *d)
{
    if (st->err)
        return;
    sqlite3_stmt *q = st->st[ST_DEAD_PUT];
    sqlite3_bind_int64(q, 1, d->row);
    s_bind_blob(q, 2, d->id.b, sizeof d->id.b);
    sqlite3_bind_text(q, 3, d->key, -1, SQLITE_STATIC);
    s_bind_blob(q, 4, d->error, d->error_len);
    s_bind_blob(q, 5, d->task, d->task_len);
    s_bind_blob(q, 6, d->client, d->client_len);
    sqlite3_bind_int64(q, 7, d->timeout_ms);
    sqlite3_bind_int64(q, 8, d->attempts);
    s_bind_opts(q, 9, 10, &d->o);
    sqlite3_bind_int64(q, 15, d->submitted_ms);
    sqlite3_bind_int64(q, 16, d->started_ms);
    sqlite3_bind_int64(q, 17, d->finished_ms);
    if (d->hist_len)
        s_bind_blob(q, 18, d->hist, d->hist_len);
    else
        sqlite3_bind_null(q, 18);
    s_bind_blob(q, 19, d->args, d->len);
    s_run(st, q);
}

/* One statement bound with one row number. */
static void s_row_stmt(dist__store_t *st, int which, int64_t row)
{
    if (st->err)
        return;
    sqlite3_bind_int64(st->st[which], 1, row);
    s_run(st, st->st[which]);
}

void dist__store_dead_del(dist__store_t *st, int64_t row) { s_row_stmt(st, ST_DEAD_DEL, row); }

void dist__store_dead_trim(dist__store_t *st, int64_t below)
{
    s_row_stmt(st, ST_DEAD_TRIM, below);
}

void dist__store_tomb_put(dist__store_t *st, int64_t row, const dist__id_t *id)
{
    if (st->err)
        return;
    sqlite3_stmt *q = st->st[ST_TOMB_PUT];
    sqlite3_bind_int64(q, 1, row);
    s_bind_blob(q, 2, id->b, sizeof id->b);
    s_run(st, q);
}

void dist__store_tomb_trim(dist__store_t *st, int64_t below)
{
    s_row_stmt(st, ST_TOMB_TRIM, below);
}

int dist__store_instance(dist__store_t *st, const char *fresh, char *out)
{
    sqlite3_stmt *q = NULL;
    st->err = 0;
    int rc = sqlite3_prepare_v2(st->db, "SELECT value FROM meta WHERE key = 'instance'", -1, &q,
                                NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(q, 0);
        size_t n = v ? strlen(v) : 0;
        if (dist__instance_ok(v, n)) {
            memcpy(out, v, n + 1);
            sqlite3_finalize(q);
            return 0;
        }
        rc = SQLITE_DONE; /* not one of ours: replaced below */
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) {
        s_fail(st, rc);
        return st->err;
    }
    rc = sqlite3_prepare_v2(st->db,
                            "INSERT OR REPLACE INTO meta(key, value) VALUES('instance', ?1)", -1,
                            &q, NULL);
    if (rc != SQLITE_OK) {
        s_fail(st, rc);
        return st->err;
    }
    rc = dist__store_begin(st);
    if (!rc) {
        sqlite3_bind_text(q, 1, fresh, DIST__INSTANCE_LEN, SQLITE_STATIC);
        s_run(st, q);
        rc = dist__store_commit(st);
    }
    sqlite3_finalize(q);
    if (!rc)
        snprintf(out, DIST__INSTANCE_LEN + 1, "%s", fresh);
    return rc;
}

int dist__store_probe(dist__store_t *st, int64_t stamp)
{
    int rc = dist__store_begin(st);
    if (rc)
        return rc;
    sqlite3_bind_int64(st->st[ST_PROBE], 1, stamp);
    s_run(st, st->st[ST_PROBE]);
    return dist__store_commit(st);
}

int dist__store_commit(dist__store_t *st)
{
    if (!st->in_txn)
        return st->err;
    s_run_flush(st, &st->leases, ST_LEASE1, ST_LEASES);
    s_run_flush(st, &st->dels, ST_DEL1, ST_DELS);
    if (!st->err && st->fail_n) {
        st->fail_n--;
        st->err = st->fail_err;
        snprintf(st->msg, sizeof st->msg, "%s (injected by a test)", dist_strerror(st->fail_err));
    }
    if (!st->err)
        s_run(st, st->st[ST_COMMIT]);
    /* A failed COMMIT may leave the transaction open (SQLITE_BUSY) or
     * have rolled it back already (a full disk, an I/O error). */
    if (st->err && !sqlite3_get_autocommit(st->db)) {
        int rc = sqlite3_step(st->st[ST_ROLLBACK]);
        sqlite3_reset(st->st[ST_ROLLBACK]);
        (void)rc;
    }
    st->in_txn = false;
    return st->err;
}

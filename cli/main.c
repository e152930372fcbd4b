/*  main.c - `dist`, the libdist command line: run one task (submit), a
 *  task over many argument arrays read from stdin (map), or show the
 *  cluster (status); and control tasks by id (result, cancel, status
 *  --task, failed, retry). A thin layer over dist/client.h; JSON goes
 *  through jansson and json.c.
 *
 *  Exit status: 0 success, 1 a task failed (or some items of a map), 2
 *  usage error (bad option, value, argument or input line; nothing was
 *  submitted), 3 no master answered or the connection failed, 130 a map
 *  interrupted by SIGINT or SIGTERM.
 */
#include <dist.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "progress.h"
#include "status.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_NOMASTER = 3, EXIT_INTERRUPTED = 130 };


/* Commands, as bits: which options each accepts. */
enum {
    C_SUBMIT = 1, C_MAP = 2, C_STATUS = 4, C_HELP = 8, C_KEYGEN = 16, C_RESULT = 32,
    C_CANCEL = 64, C_FAILED = 128, C_RETRY = 256,
    C_NET = C_SUBMIT | C_MAP | C_STATUS | C_HELP | C_RESULT | C_CANCEL | C_FAILED | C_RETRY,
    C_ALL = C_NET | C_KEYGEN,
    C_TASKOPTS = C_SUBMIT | C_MAP /* the per-task options */
};

static const struct {
    const char *name;
    unsigned bit;
    const char *summary;
} s_cmds[] = {
    { "submit", C_SUBMIT, "run one task and print its result as JSON" },
    { "map", C_MAP, "run a task on every JSON array read from stdin, one result per line" },
    { "status", C_STATUS, "show workers, queues, counters and rates, or one task (--task)" },
    { "result", C_RESULT, "print the result of a task by id (from any client)" },
    { "cancel", C_CANCEL, "cancel tasks by id; prints each one's state" },
    { "failed", C_FAILED, "list the tasks that failed for good (dead letters)" },
    { "retry", C_RETRY, "submit dead letters again with fresh attempts" },
    { "keygen", C_KEYGEN, "write a CURVE key pair: NAME.pub and NAME.key (mode 0600)" },
    { "help", C_HELP, "show this help, or a command's" },
};

enum {
    O_MASTER, O_NAME, O_CONNECT, O_LOG, O_LOGFMT, O_TIMEOUT, O_WAIT, O_UNORDERED, O_JSON, O_HELP,
    O_VERSION, O_KEY, O_SERVER_KEY, O_INSECURE, O_FORCE, O_MAX_MESSAGE, O_ID, O_NO_WAIT,
    O_PRIORITY, O_DELAY, O_AT, O_MAX_ATTEMPTS, O_BACKOFF, O_RETRY_ON_ERROR, O_TASK
};

static const struct {
    const char *name;
    char short_name;
    bool has_arg;
    unsigned cmds;
} s_opts[] = {
    [O_MASTER] = { "master", 0, true, C_NET },
    [O_NAME] = { "name", 0, true, C_NET },
    [O_CONNECT] = { "connect-timeout", 0, true, C_NET },
    [O_LOG] = { "log-level", 0, true, C_NET },
    [O_LOGFMT] = { "log-format", 0, true, C_NET },
    [O_TIMEOUT] = { "timeout", 0, true, C_SUBMIT | C_MAP },
    [O_WAIT] = { "wait", 0, true, C_SUBMIT | C_MAP | C_STATUS | C_RESULT | C_CANCEL | C_FAILED |
                                  C_RETRY },
    [O_UNORDERED] = { "unordered", 0, false, C_MAP },
    [O_JSON] = { "json", 0, false, C_STATUS | C_FAILED },
    [O_HELP] = { "help", 'h', false, C_ALL },
    [O_VERSION] = { "version", 'V', false, C_ALL },
    [O_KEY] = { "key", 0, true, C_NET },
    [O_SERVER_KEY] = { "server-key", 0, true, C_NET },
    [O_INSECURE] = { "insecure", 0, false, C_NET },
    [O_FORCE] = { "force", 0, false, C_KEYGEN },
    [O_MAX_MESSAGE] = { "max-message", 0, true, C_NET },
    [O_ID] = { "id", 0, true, C_SUBMIT },
    [O_NO_WAIT] = { "no-wait", 0, false, C_SUBMIT },
    [O_PRIORITY] = { "priority", 0, true, C_TASKOPTS },
    [O_DELAY] = { "delay", 0, true, C_TASKOPTS },
    [O_AT] = { "at", 0, true, C_TASKOPTS },
    [O_MAX_ATTEMPTS] = { "max-attempts", 0, true, C_TASKOPTS },
    [O_BACKOFF] = { "backoff", 0, true, C_TASKOPTS },
    [O_RETRY_ON_ERROR] = { "retry-on-error", 0, false, C_TASKOPTS },
    [O_TASK] = { "task", 0, true, C_STATUS },
};

typedef struct {
    const char *cmd;
    unsigned cmd_bit;
    const char *master;
    const char *name;
    int connect_timeout_ms;
    size_t max_message;
    int log_level;
    int task_timeout_ms;
    int wait_ms; /* -1: forever */
    bool unordered, json, help, version, insecure, force;
    const char *key, *server_key;
    /* task control: the per-task options (id and timeout_ms set when used) */
    dist_submit_opts_t topts;
    const char *task_id;
    bool no_wait;
    const char *at_text;
    unsigned given; /* options seen, as 1 << O_* */
    const char **pos; /* arguments after the command */
    int npos;
} cli_t;

/* ---- messages --------------------------------------------------------------- */

static int s_usage(const cli_t *cli, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("dist: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (cli && cli->cmd && cli->cmd_bit != C_HELP)
        fprintf(stderr, "\nTry 'dist %s --help' for more information.\n", cli->cmd);
    else
        fputs("\nTry 'dist --help' for more information.\n", stderr);
    return EXIT_USAGE;
}

/* Set once while the options are read, before anything logs. */
static dist_log_format_t s_log_format = DIST_LOG_FORMAT_TEXT;

static void s_log(dist_log_level_t level, const char *component, const char *msg, void *ud)
{
    (void)ud;
    /* Text lines name the program in the component ("dist/client"); JSON
     * has a field for it. */
    char comp[64];
    snprintf(comp, sizeof comp, "dist/%s", component);
    dist_log_write(stderr, s_log_format, level,
                   s_log_format == DIST_LOG_FORMAT_JSON ? component : comp, msg, "dist");
}

static const char s_common_help[] =
    "Options of every command:\n"
    "  --master ENDPOINT      the master (default: $DIST_MASTER, else " DIST_DEFAULT_ENDPOINT ")\n"
    "  --name NAME            this client's name, as the master shows it\n"
    "                         (default: HOST:PID:RANDOM)\n"
    "  --connect-timeout MS   how long to wait for the master's welcome (default: 5000)\n"
    "  --max-message BYTES    largest message sent or taken; K, M and G suffixes, 1K to 1G\n"
    "                         (default 64M, as dist-master and dist-worker; the smaller\n"
    "                         of this and the master's applies)\n"
    "  --log-level LEVEL      error, warn, info or debug, logged to stderr (default: warn)\n"
    "  --log-format FORMAT    text (default) or json: one JSON object per log line\n"
    "  --key FILE             this client's secret key (NAME.key from 'dist keygen NAME';\n"
    "                         default: $DIST_KEY); with --server-key, CURVE is on\n"
    "  --server-key FILE      the master's public key (master.pub; default:\n"
    "                         $DIST_SERVER_KEY)\n"
    "  --insecure             allow a non-loopback master without keys\n"
    "  -h, --help             show help and exit\n"
    "  -V, --version          show the version and exit\n"
    "\n"
    "Environment:\n"
    "  DIST_MASTER            the master's endpoint when --master is not given\n"
    "  DIST_KEY, DIST_SERVER_KEY\n"
    "                         key files when --key / --server-key are not given\n"
    "\n"
    "Exit status:\n"
    "  0  success\n"
    "  1  the task failed, or some items of a map failed (the errors are on stderr or\n"
    "     in the output), or no result came within --wait\n"
    "  2  usage error: bad option, value, argument or input line (nothing was submitted);\n"
    "     also a key file that cannot be used\n"
    "  3  no master answered, the connection failed or was refused (a non-loopback\n"
    "     master without keys, or a key the master does not accept)\n";

static const char s_task_opts_help[] =
    "  --priority N   0 (default) to 9: higher runs first; within a priority, first\n"
    "                 come first served; a lower one waits while a higher one has\n"
    "                 tasks of the same name\n"
    "  --delay MS     hold the task(s) MS after acceptance (at most 30 days)\n"
    "  --at TIME      hold until TIME: unix milliseconds, or ISO 8601 UTC such as\n"
    "                 2026-12-08T10:00:00Z or 2026-12-08T10:00:00.250Z; a time in\n"
    "                 the past runs now (and says so on stderr); not with --delay\n"
    "  --max-attempts N\n"
    "                 attempts before giving up, 1 to 1000 (default: the master's\n"
    "                 --max-attempts)\n"
    "  --backoff BASE_MS[,FACTOR[,MAX_MS]]\n"
    "                 wait before a retry: attempt k waits BASE_MS * FACTOR^(k-2),\n"
    "                 at most MAX_MS, times a random 0.8 to 1.2 (defaults: FACTOR 2,\n"
    "                 MAX_MS one hour; without --backoff a retry is at once)\n"
    "  --retry-on-error\n"
    "                 retry an error the task returns too, not only crashes,\n"
    "                 timeouts and lost workers\n";

static void s_help(const char *cmd)
{
    if (cmd && strcmp(cmd, "submit") == 0) {
        printf("Usage: dist submit [OPTIONS] TASK [ARG ...]\n"
               "\n"
               "Runs TASK once with the given arguments and prints its result as JSON on\n"
               "stdout. Each ARG is one JSON value: 5, -2.5, true, null, '\"text\"', '[1,2]',\n"
               "'{\"a\": 1}' (quote strings twice: once for JSON, once for the shell).\n"
               "Binary values are printed as {\"$bin\": \"<base64>\"} and can be passed the\n"
               "same way. An ARG of the form @FILE is the JSON value held in FILE, and @- the\n"
               "one read from stdin (for values too large for a command line, e.g. 10 MB).\n"
               "A failed task prints its error on stderr and exits with 1.\n"
               "When the master is full (--max-queued), dist waits for room.\n"
               "\n"
               "Options:\n"
               "  --timeout MS   the task's own time limit: the worker stops it after MS\n"
               "                 (default: 0, none)\n"
               "  --wait MS      how long to wait for the result (default: forever)\n"
               "  --id ID        the task's id (1 to 128 printable ASCII characters, no\n"
               "                 space); submitting an id the master knows is the same task,\n"
               "                 not a second one (default: the library picks 32 hex digits)\n"
               "  --no-wait      print the task's id once the master has accepted it and\n"
               "                 exit 0; 'dist result ID' prints the result later\n"
               "%s"
               "\n%s",
               s_task_opts_help, s_common_help);
    } else if (cmd && strcmp(cmd, "map") == 0) {
        printf("Usage: dist map [OPTIONS] TASK < ARGS.jsonl > RESULTS.jsonl\n"
               "\n"
               "Reads one JSON array of arguments per line from stdin (blank lines are\n"
               "skipped), runs TASK on each across the cluster, and writes one JSON line per\n"
               "result to stdout, in input order: the result, or {\"error\": \"...\"} for an\n"
               "item that failed. A malformed line is an error naming its number, before\n"
               "anything is submitted. Progress goes to stderr when it is a terminal.\n"
               "When the master is full (--max-queued), the items it refuses are submitted\n"
               "again after a pause: none is dropped.\n"
               "\n"
               "Options:\n"
               "  --unordered    write results as they complete, each line\n"
               "                 {\"index\": I, \"result\": ...} or\n"
               "                 {\"index\": I, \"error\": \"...\"}\n"
               "                 (I counts input arrays from 0)\n"
               "  --timeout MS   each task's own time limit (default: 0, none)\n"
               "  --wait MS      how long to wait for all results; the missing ones fail\n"
               "                 with \"no result within MS ms\" (default: forever)\n"
               "%s"
               "\n"
               "SIGINT or SIGTERM (Ctrl-C): the results already received are written as\n"
               "whole lines (in input order, a missing one before them as\n"
               "{\"error\": \"cancelled\"}), the other tasks are cancelled in the master,\n"
               "\"dist: interrupted: N results written, M tasks cancelled\" goes to stderr,\n"
               "and dist exits with 130.\n"
               "\n%s",
               s_task_opts_help, s_common_help);
    } else if (cmd && strcmp(cmd, "keygen") == 0) {
        printf("Usage: dist keygen [--force] NAME\n"
               "\n"
               "Writes a new CURVE key pair: NAME.pub, the public key (mode 0644), and\n"
               "NAME.key, the secret key (created with mode 0600; keep it on its host). The\n"
               "master takes master.key; the public keys of workers and clients go into the\n"
               "master's --allow-workers and --allow-clients directories; workers and\n"
               "clients take --key NAME.key --server-key master.pub. Existing files are left\n"
               "alone unless --force is given.\n"
               "\n"
               "Example:\n"
               "  dist keygen master; dist keygen w1; dist keygen me\n"
               "  mkdir workers clients; mv w1.pub workers/; mv me.pub clients/\n"
               "  dist-master --bind tcp://0.0.0.0:5555 --key master.key \\\n"
               "      --allow-workers workers --allow-clients clients\n"
               "  dist-worker --master tcp://HOST:5555 --key w1.key --server-key master.pub\n"
               "  dist status --master tcp://HOST:5555 --key me.key --server-key master.pub\n"
               "\n"
               "Exit status: 0 written, 1 not written (a file exists, no permission), 2 usage.\n");
    } else if (cmd && strcmp(cmd, "status") == 0) {
        printf("Usage: dist status [OPTIONS]\n"
               "\n"
               "Shows the master, its workers (name, host, slots, busy, done, failed, last\n"
               "seen), its queues (name, kind, depth, in flight, delayed, and the depth of\n"
               "each non-empty priority, highest first: 9:3 0:120), counters and rates.\n"
               "Counters include malformed (messages dropped as malformed), refused (tasks\n"
               "refused at submission, e.g. queue full) and late_results (duplicate results\n"
               "dropped).\n"
               "\n"
               "With --task ID: one task instead: its state (queued, delayed, waiting,\n"
               "leased with the worker running it, done, failed, cancelled, expired or\n"
               "unknown), priority, times (submitted, not before, started, finished), its\n"
               "attempts with each one's reason, and its error. Exit 0 whenever the master\n"
               "answered, unknown ids included.\n"
               "\n"
               "Options:\n"
               "  --task ID      show the task ID\n"
               "  --json         print JSON instead: the master's status map, or with\n"
               "                 --task an object with the keys id, task, state, priority,\n"
               "                 worker, error, attempts [{attempt, worker, reason}],\n"
               "                 submitted_ms, started_ms, finished_ms, not_before_ms (unix\n"
               "                 ms, 0 when not yet; task, worker and error null when none)\n"
               "  --wait MS      how long to wait for the answer (default: the connect\n"
               "                 timeout)\n"
               "\n%s",
               s_common_help);
    } else if (cmd && strcmp(cmd, "result") == 0) {
        printf("Usage: dist result [OPTIONS] ID\n"
               "\n"
               "Prints the result of task ID as 'dist submit' would: the value as JSON on\n"
               "stdout, or the task's error on stderr with exit 1 (failed, cancelled).\n"
               "Works from any client, as long as the master keeps the result (until its\n"
               "submitter takes it, or dist-master --result-ttl). Asking does not take it\n"
               "away. An unknown id or an expired result is an error (exit 1).\n"
               "\n"
               "Options:\n"
               "  --wait MS      wait up to MS for the task to finish (default: 0, ask\n"
               "                 once); still not finished: exit 1 naming its state\n"
               "\n%s",
               s_common_help);
    } else if (cmd && (strcmp(cmd, "cancel") == 0 || strcmp(cmd, "retry") == 0)) {
        bool cancel = strcmp(cmd, "cancel") == 0;
        printf("Usage: dist %s [OPTIONS] ID...\n"
               "\n"
               "%s"
               "Prints one line 'ID STATE' per id; exit 1 when an id is unknown.\n"
               "\n"
               "Options:\n"
               "  --wait MS      how long to wait for the master's answer (default: the\n"
               "                 connect timeout)\n"
               "\n%s",
               cmd,
               cancel ? "Cancels tasks: a queued or delayed one at once; a running one is stopped\n"
                        "by its worker (the process running it is killed and replaced). The\n"
                        "state becomes cancelled, and whoever waits for the result gets a\n"
                        "cancelled error. A finished task is left as it is: its state says so.\n"
                      : "Submits dead letters (see 'dist failed') again, with their id, arguments\n"
                        "and options, and fresh attempts, and takes them off the list. The\n"
                        "state is queued (or delayed) when submitted, unknown for an id not in\n"
                        "the list, failed when the master cannot take it now.\n",
               s_common_help);
    } else if (cmd && strcmp(cmd, "failed") == 0) {
        printf("Usage: dist failed [OPTIONS]\n"
               "\n"
               "Lists the dead letters: tasks that ended failed for good (their own error,\n"
               "or every attempt spent), newest first, with their errors (each attempt's\n"
               "reason). The master keeps the newest 10,000, in memory. 'dist retry ID'\n"
               "submits one again.\n"
               "\n"
               "Options:\n"
               "  --json         a JSON array of the objects of 'dist status --task --json'\n"
               "  --wait MS      how long to wait for the answer (default: the connect\n"
               "                 timeout)\n"
               "\n%s",
               s_common_help);
    } else {
        printf("Usage: dist [OPTIONS] COMMAND [ARGS]\n"
               "\n"
               "The command line of libdist: runs tasks on a cluster of dist-worker\n"
               "processes through a dist-master.\n"
               "\n"
               "Commands:\n");
        for (size_t i = 0; i < sizeof s_cmds / sizeof *s_cmds; i++)
            printf("  %-8s %s\n", s_cmds[i].name, s_cmds[i].summary);
        printf("\n"
               "Examples:\n"
               "  dist submit dist.echo 1 '\"two\"' '[3]'\n"
               "  seq 10 | sed 's/.*/[&]/' | dist map dist.sleep\n"
               "  dist status --json\n"
               "\n"
               "'dist help COMMAND' or 'dist COMMAND --help' describes a command.\n"
               "\n%s",
               s_common_help);
    }
}

/* ---- options ------------------------------------------------------------------- */

static bool s_parse_ms(const char *s, bool allow_forever, int *out)
{
    if (allow_forever && (strcmp(s, "forever") == 0 || strcmp(s, "-1") == 0)) {
        *out = -1;
        return true;
    }
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > 0x7fffffff)
        return false;
    *out = (int)v;
    return true;
}

#define S_DELAY_MAX_MS 2592000000ll /* 30 days: the master's limit for --delay and --at */

/* A task id: 1 to 128 bytes of printable ASCII without space. */
static bool s_id_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/* An integer in [lo, hi]. */
static bool s_parse_int(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* --at: unix milliseconds, or ISO 8601 UTC "2026-12-08T10:00:00Z" with
 * optional milliseconds ".123" before the Z. */
static bool s_parse_at(const char *s, int64_t *ms)
{
    long long v;
    if (s_parse_int(s, 1, INT64_MAX / 2, &v)) {
        *ms = v;
        return true;
    }
    int y, mo, d, h, mi, sec, n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19 ||
        y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60 ||
        h < 0 || mi < 0 || sec < 0)
        return false;
    const char *p = s + n;
    int frac = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9' && digits < 3; p++, digits++)
            frac = frac * 10 + (*p - '0');
        if (digits == 0)
            return false;
        for (; digits < 3; digits++)
            frac *= 10;
    }
    if (strcmp(p, "Z") != 0)
        return false;
    struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                     .tm_min = mi, .tm_sec = sec };
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || tm.tm_mday != d) /* 2026-02-31 is not a day */
        return false;
    *ms = (int64_t)t * 1000 + frac;
    return true;
}

/* --backoff BASE_MS[,FACTOR[,MAX_MS]] */
static bool s_parse_backoff(cli_t *cli, const char *s)
{
    char buf[128];
    if (strlen(s) >= sizeof buf)
        return false;
    snprintf(buf, sizeof buf, "%s", s);
    char *f = strchr(buf, ','), *m = NULL;
    if (f) {
        *f++ = 0;
        if ((m = strchr(f, ',')))
            *m++ = 0;
    }
    long long base, max = 0;
    if (!s_parse_int(buf, 0, 0x7fffffff, &base) || (m && !s_parse_int(m, 1, 0x7fffffff, &max)))
        return false;
    double factor = 0;
    if (f) {
        char *end;
        errno = 0;
        factor = strtod(f, &end);
        if (errno || end == f || *end || !(factor >= 1.0) || factor > 1000)
            return false;
    }
    cli->topts.backoff_ms = (int)base;
    cli->topts.backoff_factor = factor;
    cli->topts.backoff_max_ms = (int)max;
    return true;
}

static int s_set_option(cli_t *cli, int o, const char *val)
{
    long long v; /* integer options */
    const char *name = s_opts[o].name;
    cli->given |= 1u << o;
    switch (o) {
    case O_MASTER: cli->master = val; break;
    case O_NAME:
        if (!*val || strlen(val) > 128)
            return s_usage(cli, "--name must be 1 to 128 bytes");
        cli->name = val;
        break;
    case O_CONNECT:
        if (!s_parse_ms(val, false, &cli->connect_timeout_ms) || cli->connect_timeout_ms == 0)
            return s_usage(cli, "--%s: '%s' is not a positive number of milliseconds", name, val);
        break;
    case O_LOG:
        if ((cli->log_level = dist_log_level_parse(val)) < 0)
            return s_usage(cli, "--log-level: '%s' is not one of error, warn, info, debug", val);
        break;
    case O_LOGFMT: {
        int f = dist_log_format_parse(val);
        if (f < 0)
            return s_usage(cli, "--log-format: '%s' is not one of text, json", val);
        s_log_format = (dist_log_format_t)f;
        break;
    }
    case O_TIMEOUT:
        if (!s_parse_ms(val, false, &cli->task_timeout_ms))
            return s_usage(cli, "--%s: '%s' is not a number of milliseconds", name, val);
        break;
    case O_WAIT:
        if (!s_parse_ms(val, true, &cli->wait_ms))
            return s_usage(cli, "--%s: '%s' is not a number of milliseconds (or 'forever')", name,
                           val);
        break;
    case O_UNORDERED: cli->unordered = true; break;
    case O_JSON: cli->json = true; break;
    case O_HELP: cli->help = true; break;
    case O_VERSION: cli->version = true; break;
    case O_KEY: cli->key = val; break;
    case O_SERVER_KEY: cli->server_key = val; break;
    case O_INSECURE: cli->insecure = true; break;
    case O_FORCE: cli->force = true; break;
    case O_ID:
        if (!s_id_ok(val))
            return s_usage(cli, "--id: '%s' is not an id (1 to 128 printable ASCII characters, "
                                "no space)", val);
        cli->topts.id = val;
        break;
    case O_NO_WAIT: cli->no_wait = true; break;
    case O_PRIORITY:
        if (!s_parse_int(val, 0, 9, &v))
            return s_usage(cli, "--priority: '%s' is not a priority from 0 to 9", val);
        cli->topts.priority = (int)v;
        break;
    case O_DELAY:
        if (!s_parse_int(val, 0, S_DELAY_MAX_MS, &v))
            return s_usage(cli, "--delay: '%s' is not a number of milliseconds from 0 to "
                                "2592000000 (30 days)", val);
        cli->topts.delay_ms = v;
        break;
    case O_AT:
        if (!s_parse_at(val, &cli->topts.at_ms))
            return s_usage(cli, "--at: '%s' is not a time: unix milliseconds, or ISO 8601 UTC "
                                "like 2026-12-08T10:00:00Z (optionally .mmm before the Z)", val);
        cli->at_text = val;
        break;
    case O_MAX_ATTEMPTS:
        if (!s_parse_int(val, 1, 1000, &v))
            return s_usage(cli, "--max-attempts: '%s' is not a number from 1 to 1000", val);
        cli->topts.max_attempts = (int)v;
        break;
    case O_BACKOFF:
        if (!s_parse_backoff(cli, val))
            return s_usage(cli, "--backoff: '%s' is not BASE_MS[,FACTOR[,MAX_MS]] (BASE_MS >= 0, "
                                "FACTOR from 1 to 1000, MAX_MS >= 1)", val);
        break;
    case O_RETRY_ON_ERROR: cli->topts.retry_on_error = true; break;
    case O_TASK:
        if (!s_id_ok(val))
            return s_usage(cli, "--task: '%s' is not a task id (1 to 128 printable ASCII "
                                "characters, no space)", val);
        cli->task_id = val;
        break;
    case O_MAX_MESSAGE: {
        uint64_t size;
        if (dist_size_parse(val, &size) || size < DIST_MAX_MESSAGE_MIN ||
            size > DIST_MAX_MESSAGE_MAX)
            return s_usage(cli, "--max-message: '%s' is not a size from 1K to 1G (e.g. 64M)", val);
        cli->max_message = (size_t)size;
        break;
    }
    }
    return 0;
}

/* Options may come before or after the command. An argument starting with
 * '-' and a digit or '.' is a value (a negative JSON number), not an
 * option; "--" ends the options. */
static int s_parse(cli_t *cli, int argc, char **argv)
{
    bool opts_done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!opts_done && strcmp(a, "--") == 0) {
            opts_done = true;
            continue;
        }
        bool is_opt =
            !opts_done && a[0] == '-' && a[1] && a[1] != '.' && (a[1] < '0' || a[1] > '9');
        if (!is_opt) {
            if (!cli->cmd)
                cli->cmd = a;
            else
                cli->pos[cli->npos++] = a;
            continue;
        }
        int o = -1;
        const char *val = NULL;
        if (a[1] == '-') {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            for (size_t k = 0; k < sizeof s_opts / sizeof *s_opts; k++)
                if (strlen(s_opts[k].name) == len && strncmp(s_opts[k].name, name, len) == 0)
                    o = (int)k;
            if (o < 0)
                return s_usage(cli, "unknown option '%s'", a);
            if (eq && !s_opts[o].has_arg)
                return s_usage(cli, "option '--%s' takes no value", s_opts[o].name);
            if (eq)
                val = eq + 1;
        } else {
            for (size_t k = 0; k < sizeof s_opts / sizeof *s_opts; k++)
                if (a[2] == 0 && s_opts[k].short_name == a[1])
                    o = (int)k;
            if (o < 0)
                return s_usage(cli, "unknown option '%s'", a);
        }
        if (s_opts[o].has_arg && !val) {
            if (i + 1 >= argc)
                return s_usage(cli, "option '--%s' needs a value", s_opts[o].name);
            val = argv[++i];
        }
        int rc = s_set_option(cli, o, val);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- shared steps --------------------------------------------------------------- */

static bool s_task_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || strchr("._:-", s[i])))
            return false;
    return true;
}

static int s_no_master(const cli_t *cli)
{
    fprintf(stderr, "dist: no master answered at %s within %d ms\n", cli->master,
            cli->connect_timeout_ms);
    return EXIT_NOMASTER;
}

static dist_client_t *s_connect(const cli_t *cli, int *exit_code)
{
    dist_client_opts_t o = { .master = cli->master,
                             .name = cli->name,
                             .key = cli->key,
                             .server_key = cli->server_key,
                             .insecure = cli->insecure,
                             .connect_timeout_ms = cli->connect_timeout_ms,
                             .max_message = cli->max_message,
                             .log = s_log,
                             .log_level = (dist_log_level_t)cli->log_level };
    dist_client_t *c = dist_client_new(&o);
    if (c)
        return c;
    if (errno == -DIST_ENOMASTER) {
        *exit_code = s_no_master(cli);
    } else if (errno == EACCES || errno == ENOENT) {
        /* A key file: the library logged which and why. */
        fprintf(stderr, "dist: cannot connect to %s: the key file cannot be used (see above)\n",
                cli->master);
        *exit_code = EXIT_USAGE;
    } else {
        fprintf(stderr, "dist: cannot connect to %s: %s\n", cli->master,
                errno == EINVAL ? "invalid endpoint, options or keys (see above)"
                                : dist_strerror(errno));
        *exit_code = EXIT_NOMASTER;
    }
    return NULL;
}

/* Prints a result value as one JSON line; false when it cannot. */
static bool s_print_value(dist_result_t *r, FILE *out)
{
    const msgpack_object *v = dist_result_value(r);
    json_t *j = v ? cli_json_from_msgpack(v) : NULL;
    char *text = j ? cli_json_text(j, 0) : NULL;
    json_decref(j);
    if (!text)
        return false;
    fprintf(out, "%s\n", text);
    free(text);
    return true;
}

/* ---- submit ----------------------------------------------------------------------- */

/* Reads all of f into a malloc'd buffer; NULL with errno set on failure. */
static char *s_slurp(FILE *f, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) {
            if (ferror(f)) {
                free(buf);
                errno = EIO;
                return NULL;
            }
            *len = n;
            return buf;
        }
        char *grown = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
        if (!grown) {
            free(buf);
            errno = ENOMEM;
            return NULL;
        }
        buf = grown;
        cap *= 2;
    }
    errno = ENOMEM;
    return NULL;
}

/* Packs argument i written @FILE (or @- for stdin, once) as the JSON value
 * the file holds. 0, or EXIT_USAGE after a message. */
static int s_pack_file_arg(cli_t *cli, int i, bool *stdin_used, msgpack_packer *pk)
{
    const char *path = cli->pos[i] + 1;
    bool is_stdin = strcmp(path, "-") == 0;
    if (!*path)
        return s_usage(cli, "argument %d: '@' needs a file name (@FILE, or @- for stdin)", i);
    if (is_stdin && *stdin_used)
        return s_usage(cli, "argument %d: stdin (@-) can be read only once", i);
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f)
        return s_usage(cli, "argument %d: cannot open %s: %s", i, path, strerror(errno));
    size_t len = 0;
    char *text = s_slurp(f, &len);
    int err_no = errno;
    if (is_stdin)
        *stdin_used = true;
    else
        fclose(f);
    if (!text)
        return s_usage(cli, "argument %d: cannot read %s: %s", i, is_stdin ? "stdin" : path,
                       strerror(err_no));
    json_error_t je;
    json_t *v = cli_json_load(text, len, &je);
    free(text);
    if (!v)
        return s_usage(cli, "argument %d: %s does not hold one JSON value: %s (line %d, column %d)",
                       i, is_stdin ? "stdin" : path, je.text, je.line, je.column);
    char err[160];
    int rc = cli_json_pack(v, pk, err, sizeof err);
    json_decref(v);
    if (rc)
        return s_usage(cli, "argument %d (%s): %s", i, is_stdin ? "stdin" : path, err);
    return 0;
}

/* The map options of the command line: --timeout per task, --wait for
 * all (whose 0, "give up at once", is 1 ms here: 0 means no bound there). */
static dist_map_opts_t s_map_opts(const cli_t *cli)
{
    dist_map_opts_t o = { .task_timeout_ms = cli->task_timeout_ms,
                          .wait_ms = cli->wait_ms ? cli->wait_ms : 1,
                          .priority = cli->topts.priority,
                          .delay_ms = cli->topts.delay_ms,
                          .at_ms = cli->topts.at_ms,
                          .max_attempts = cli->topts.max_attempts,
                          .backoff_ms = cli->topts.backoff_ms,
                          .backoff_factor = cli->topts.backoff_factor,
                          .backoff_max_ms = cli->topts.backoff_max_ms,
                          .retry_on_error = cli->topts.retry_on_error };
    return o;
}

/* --at in the past is allowed (the task runs now), but said. */
static void s_at_note(const cli_t *cli)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (cli->topts.at_ms && cli->topts.at_ms <= now)
        fprintf(stderr, "dist: --at %s is in the past: the task%s run%s now\n", cli->at_text,
                cli->cmd_bit == C_MAP ? "s" : "", cli->cmd_bit == C_MAP ? "" : "s");
}

/* A task's result as `dist submit` prints it: the value as JSON on
 * stdout (exit 0), or its error on stderr (exit 1). */
static int s_print_result(dist_result_t *r)
{
    if (!dist_result_ok(r)) {
        fprintf(stderr, "dist: %s\n", dist_result_error(r));
        return EXIT_FAILED;
    }
    if (!s_print_value(r, stdout)) {
        fprintf(stderr, "dist: the result is not one valid MessagePack value\n");
        return EXIT_FAILED;
    }
    return EXIT_OK;
}

/* submit --id / --no-wait: through a future, whose id can be printed. A
 * full master is asked again every 100 ms (within --wait). */
static int s_submit_future(cli_t *cli, dist_client_t *c, const char *task, const void *args,
                           size_t len)
{
    dist_submit_opts_t so = cli->topts;
    so.timeout_ms = cli->task_timeout_ms;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    dist_future_t *f;
    for (;;) {
        f = dist_client_submit_opts(c, task, args, len, &so);
        if (f || errno != -DIST_EFULL)
            break;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long waited = (long)(t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        if (cli->wait_ms >= 0 && waited >= cli->wait_ms)
            break;
        usleep(100000);
    }
    if (!f) {
        if (errno == -DIST_ENOMASTER)
            return s_no_master(cli);
        fprintf(stderr, "dist: the master did not take the task: %s\n", dist_strerror(errno));
        return EXIT_FAILED;
    }
    if (cli->no_wait) {
        printf("%s\n", dist_future_id(f));
        dist_future_destroy(&f);
        return EXIT_OK;
    }
    dist_result_t *r = NULL;
    int rc = dist_future_get(f, cli->wait_ms, &r);
    int code;
    if (rc == DIST_ETIMEDOUT && !dist_future_ready(f)) {
        fprintf(stderr, "dist: no result within %d ms ('dist result %s' fetches it later)\n",
                cli->wait_ms, dist_future_id(f));
        code = EXIT_FAILED;
    } else if (rc == DIST_ENOMASTER) {
        code = s_no_master(cli);
    } else if (!r) {
        fprintf(stderr, "dist: %s\n", dist_strerror(rc));
        code = EXIT_FAILED;
    } else {
        code = s_print_result(r);
    }
    dist_future_destroy(&f);
    return code;
}

static int s_cmd_submit(cli_t *cli)
{
    if (cli->npos < 1)
        return s_usage(cli, "submit needs a TASK");
    const char *task = cli->pos[0];
    if (!s_task_name_ok(task))
        return s_usage(cli, "'%s' is not a task name (1-128 letters, digits and ._:-)", task);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, (size_t)(cli->npos - 1));
    bool stdin_used = false;
    for (int i = 1; i < cli->npos; i++) {
        char err[160];
        if (cli->pos[i][0] == '@') {
            int rc = s_pack_file_arg(cli, i, &stdin_used, &pk);
            if (rc) {
                msgpack_sbuffer_destroy(&sb);
                return rc;
            }
            continue;
        }
        if (cli_json_pack_text(cli->pos[i], &pk, err, sizeof err)) {
            msgpack_sbuffer_destroy(&sb);
            const char *a = cli->pos[i];
            bool word = (a[0] >= 'a' && a[0] <= 'z') || (a[0] >= 'A' && a[0] <= 'Z');
            return s_usage(cli, "argument %d is not valid JSON: %s: %s%s%s%s", i, a, err,
                           word ? "\n(strings are JSON too: quote them, e.g. '\"" : "",
                           word ? a : "", word ? "\"')" : "");
        }
    }
    int code = EXIT_OK;
    dist_client_t *c = s_connect(cli, &code);
    if (!c) {
        msgpack_sbuffer_destroy(&sb);
        return code;
    }
    s_at_note(cli);
    if (cli->topts.id || cli->no_wait) {
        code = s_submit_future(cli, c, task, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        dist_client_destroy(&c);
        return code;
    }
    dist_bytes_t item = { sb.data, sb.size };
    dist_results_t *rs = NULL;
    dist_map_opts_t mo = s_map_opts(cli);
    int rc = dist_client_map_opts(c, task, &item, 1, &mo, &rs);
    msgpack_sbuffer_destroy(&sb);
    if (rc == DIST_ENOMASTER) {
        code = s_no_master(cli);
    } else if (!rs) {
        fprintf(stderr, "dist: %s\n", dist_strerror(rc));
        code = EXIT_FAILED;
    } else {
        code = s_print_result(dist_results_at(rs, 0));
    }
    dist_results_destroy(&rs);
    dist_client_destroy(&c);
    return code;
}

/* ---- map ---------------------------------------------------------------------------- */

/* Set by SIGINT / SIGTERM during a map: the map cancels what is left. */
static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

typedef struct {
    bool unordered;
    char **pending; /* in order: lines waiting for the ones before them */
    size_t next;    /* the next index to print */
    size_t failed;
    size_t written;   /* result lines written */
    size_t cancelled; /* items cancelled by an interruption */
    bool share_tty; /* results go to a terminal too: clear the bar around them */
    cli_progress_t progress;
} map_out_t;

/* The output line for one result (malloc'd); NULL on ENOMEM. */
static char *s_map_line(size_t index, dist_result_t *r, bool with_index)
{
    json_t *j = json_object();
    if (with_index)
        json_object_set_new(j, "index", json_integer((json_int_t)index));
    const msgpack_object *v = dist_result_ok(r) ? dist_result_value(r) : NULL;
    if (v) {
        json_t *val = cli_json_from_msgpack(v);
        if (!with_index) {
            json_decref(j);
            j = val;
        } else {
            json_object_set_new(j, "result", val);
        }
    } else {
        const char *msg = dist_result_ok(r) ? "the result is not one valid MessagePack value"
                                            : dist_result_error(r);
        json_object_set_new(j, "error", json_string(msg ? msg : "error"));
    }
    char *text = j ? cli_json_text(j, 0) : NULL;
    json_decref(j);
    return text;
}

/* One result line to stdout; on a terminal shared with the progress bar,
 * the bar is cleared first so that the line starts at column 0. */
static void s_map_emit(map_out_t *m, const char *line)
{
    if (m->share_tty)
        cli_progress_clear(&m->progress);
    puts(line);
}

static void s_map_result(size_t index, dist_result_t *r, void *ud)
{
    map_out_t *m = ud;
    if (s_stop && dist_result_status(r) == DIST_ECANCELLED) {
        m->cancelled++; /* no line: see s_map_interrupted */
        return;
    }
    bool ok = dist_result_ok(r) && dist_result_value(r);
    if (!ok)
        m->failed++;
    char *line = s_map_line(index, r, m->unordered);
    if (!line)
        line = strdup("{\"error\": \"out of memory\"}");
    bool wrote = false;
    if (m->unordered) {
        if (line) {
            s_map_emit(m, line);
            m->written++;
            wrote = true;
        }
        free(line);
    } else {
        m->pending[index] = line;
        while (m->next < m->progress.total && m->pending[m->next]) {
            s_map_emit(m, m->pending[m->next]);
            m->written++;
            wrote = true;
            free(m->pending[m->next]);
            m->pending[m->next++] = NULL;
        }
    }
    if (wrote && m->share_tty) {
        fflush(stdout);
        m->progress.done++;
        cli_progress_redraw(&m->progress);
    } else {
        cli_progress_update(&m->progress, 1);
    }
}

/* An interrupted ordered map: the results that arrived after a missing
 * one are written too, each missing one before them as a line
 * {"error": "cancelled"} so that line i stays item i. */
static void s_map_interrupted(map_out_t *m)
{
    size_t last = m->next;
    for (size_t i = m->next; m->pending && i < m->progress.total; i++)
        if (m->pending[i])
            last = i + 1;
    for (size_t i = m->next; i < last; i++) {
        if (m->pending[i]) {
            s_map_emit(m, m->pending[i]);
            m->written++;
            free(m->pending[i]);
            m->pending[i] = NULL;
        } else {
            s_map_emit(m, "{\"error\": \"cancelled\"}");
        }
    }
    m->next = last;
}

/* Reads stdin: every non-blank line one JSON array, packed back to back
 * into *buf; items[i] point into it. 0, or EXIT_USAGE after a message. */
static int s_read_items(cli_t *cli, msgpack_sbuffer *sb, dist_bytes_t **items_out, size_t *n_out)
{
    size_t n = 0, cap = 0, *offs = NULL;
    char *line = NULL;
    size_t lcap = 0, lineno = 0;
    ssize_t len;
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int rc = 0;
    while ((len = getline(&line, &lcap, stdin)) >= 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)len)
            continue;
        json_error_t je;
        json_t *v = cli_json_load(line, (size_t)len, &je);
        if (!v) {
            rc = s_usage(cli, "stdin line %zu: %s (column %d)", lineno, je.text, je.column);
            break;
        }
        if (!json_is_array(v)) {
            json_decref(v);
            rc = s_usage(cli, "stdin line %zu: expected a JSON array of arguments", lineno);
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 1024;
            size_t *grown = realloc(offs, (cap + 1) * sizeof *grown);
            if (!grown) {
                json_decref(v);
                rc = s_usage(cli, "out of memory reading stdin");
                break;
            }
            offs = grown;
        }
        offs[n++] = sb->size;
        char err[160];
        int prc = cli_json_pack(v, &pk, err, sizeof err);
        json_decref(v);
        if (prc) {
            rc = s_usage(cli, "stdin line %zu: %s", lineno, err);
            break;
        }
    }
    free(line);
    dist_bytes_t *items = NULL;
    if (!rc && !(items = calloc(n ? n : 1, sizeof *items)))
        rc = s_usage(cli, "out of memory reading stdin");
    for (size_t i = 0; !rc && i < n; i++) {
        items[i].data = sb->data + offs[i];
        items[i].len = (i + 1 < n ? offs[i + 1] : sb->size) - offs[i];
    }
    free(offs);
    *items_out = items;
    *n_out = n;
    return rc;
}

static int s_cmd_map(cli_t *cli)
{
    if (cli->npos != 1)
        return s_usage(cli, cli->npos ? "map takes one TASK; its arguments come from stdin"
                                      : "map needs a TASK");
    const char *task = cli->pos[0];
    if (!s_task_name_ok(task))
        return s_usage(cli, "'%s' is not a task name (1-128 letters, digits and ._:-)", task);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    dist_bytes_t *items = NULL;
    size_t n = 0;
    int code = s_read_items(cli, &sb, &items, &n);
    dist_client_t *c = code ? NULL : s_connect(cli, &code);
    map_out_t m = { .unordered = cli->unordered };
    if (c && !cli->unordered && !(m.pending = calloc(n ? n : 1, sizeof *m.pending))) {
        fprintf(stderr, "dist: out of memory\n");
        code = EXIT_FAILED;
    }
    if (c && !code) {
        cli_progress_init(&m.progress, n, isatty(STDERR_FILENO));
        m.share_tty = m.progress.on && isatty(STDOUT_FILENO);
        dist_map_opts_t mo = s_map_opts(cli);
        mo.unordered = true;
        mo.on_result = s_map_result;
        mo.userdata = &m;
        mo.stop = &s_stop;
        /* No SA_RESTART: the signal also ends the client's poll, so the
         * map sees the flag at once. */
        struct sigaction sa = { .sa_handler = s_on_signal };
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        s_at_note(cli);
        int rc = dist_client_map_opts(c, task, items, n, &mo, NULL);
        cli_progress_done(&m.progress);
        if (rc == DIST_ECANCELLED || s_stop) {
            if (!m.unordered)
                s_map_interrupted(&m);
            fflush(stdout);
            fprintf(stderr, "dist: interrupted: %zu results written, %zu tasks cancelled\n",
                    m.written, m.cancelled);
            code = EXIT_INTERRUPTED;
        } else if (rc == DIST_ENOMASTER)
            code = s_no_master(cli);
        else if (rc && rc != DIST_ETASK && rc != DIST_ETIMEDOUT) {
            fprintf(stderr, "dist: %s\n", dist_strerror(rc));
            code = EXIT_FAILED;
        } else if (m.failed) {
            code = EXIT_FAILED;
        }
    }
    if (fflush(stdout) != 0 && !code) {
        fprintf(stderr, "dist: writing the results failed: %s\n", strerror(errno));
        code = EXIT_FAILED;
    }
    for (size_t i = 0; m.pending && i < n; i++)
        free(m.pending[i]);
    free(m.pending);
    dist_client_destroy(&c);
    free(items);
    msgpack_sbuffer_destroy(&sb);
    return code;
}

/* ---- task control: result, cancel, retry, failed, status --task ---------------------- */

/* How long a control request waits for the master: --wait, else the
 * connect timeout. */
static int s_ctl_wait(const cli_t *cli)
{
    return cli->given & (1u << O_WAIT) ? cli->wait_ms : cli->connect_timeout_ms;
}

/* The IDs of cancel and retry: checked before anything is sent. */
static int s_ids_args(cli_t *cli, const char *what)
{
    if (cli->npos < 1)
        return s_usage(cli, "%s needs at least one task ID", what);
    for (int i = 0; i < cli->npos; i++)
        if (!s_id_ok(cli->pos[i]))
            return s_usage(cli, "'%s' is not a task id (1 to 128 printable ASCII characters, "
                                "no space)", cli->pos[i]);
    return 0;
}

/* A failed control request: 3 for a silent master, else 1. */
static int s_ctl_error(const cli_t *cli, const char *what, int rc)
{
    if (rc == DIST_ENOMASTER || rc == DIST_ETIMEDOUT) {
        fprintf(stderr, "dist: the master at %s did not answer %s\n", cli->master, what);
        return EXIT_NOMASTER;
    }
    fprintf(stderr, "dist: %s: %s\n", what, dist_strerror(rc));
    return EXIT_FAILED;
}

static int s_cmd_result(cli_t *cli)
{
    if (cli->npos != 1 || !s_id_ok(cli->pos[0]))
        return s_usage(cli, cli->npos == 1 ? "'%s' is not a task id" : "result takes one task ID",
                       cli->npos ? cli->pos[0] : "");
    int code = EXIT_OK;
    dist_client_t *c = s_connect(cli, &code);
    if (!c)
        return code;
    const char *id = cli->pos[0];
    int wait = cli->given & (1u << O_WAIT) ? cli->wait_ms : 0;
    dist_result_t *r = NULL;
    int rc = dist_client_result(c, id, wait, &r);
    if (rc == DIST_ETIMEDOUT) {
        dist_task_info_t *t = NULL;
        dist_client_lookup(c, id, cli->connect_timeout_ms, &t);
        fprintf(stderr, "dist: task %s is not finished within --wait %d ms (state: %s)\n", id,
                wait, t ? t->state : "unknown");
        dist_task_info_destroy(&t);
        code = EXIT_FAILED;
    } else if (r) {
        code = s_print_result(r); /* unknown and expired ids too: r says which */
    } else {
        code = s_ctl_error(cli, "FETCH", rc);
    }
    dist_result_destroy(&r);
    dist_client_destroy(&c);
    return code;
}

/* cancel and retry: one line "ID STATE" per id; exit 1 when an id is
 * unknown to the master. */
static int s_cmd_ids(cli_t *cli, bool cancel)
{
    int code = s_ids_args(cli, cancel ? "cancel" : "retry");
    if (code)
        return code;
    dist_client_t *c = s_connect(cli, &code);
    if (!c)
        return code;
    const char **states = calloc((size_t)cli->npos, sizeof *states);
    int rc = !states ? DIST_ENOMEM
             : cancel ? dist_client_cancel(c, cli->pos, (size_t)cli->npos, s_ctl_wait(cli), states)
                      : dist_client_retry(c, cli->pos, (size_t)cli->npos, s_ctl_wait(cli), states);
    if (rc) {
        code = s_ctl_error(cli, cancel ? "CANCEL" : "RETRY", rc);
    } else {
        for (int i = 0; i < cli->npos; i++) {
            printf("%s %s\n", cli->pos[i], states[i]);
            if (strcmp(states[i], "unknown") == 0)
                code = EXIT_FAILED;
        }
    }
    free(states);
    dist_client_destroy(&c);
    return code;
}

static void s_print_json(json_t *j)
{
    char *text = j ? cli_json_text(j, JSON_INDENT(2)) : NULL;
    if (text)
        puts(text);
    free(text);
    json_decref(j);
}

static int s_cmd_failed(cli_t *cli)
{
    if (cli->npos)
        return s_usage(cli, "failed takes no arguments");
    int code = EXIT_OK;
    dist_client_t *c = s_connect(cli, &code);
    if (!c)
        return code;
    dist_task_info_t **list = NULL;
    size_t n = 0;
    int rc = dist_client_failed(c, 0, s_ctl_wait(cli), &list, &n);
    if (rc) {
        code = s_ctl_error(cli, "FAILED", rc);
    } else if (cli->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, cli_task_json(list[i]));
        s_print_json(a);
    } else {
        for (size_t i = 0; i < n; i++) {
            if (i)
                putchar('\n');
            cli_task_print(list[i], stdout);
        }
        if (!n)
            printf("no failed tasks\n");
    }
    dist_task_infos_destroy(&list, n);
    dist_client_destroy(&c);
    return code;
}

static int s_cmd_task(cli_t *cli, dist_client_t *c)
{
    dist_task_info_t *t = NULL;
    int rc = dist_client_lookup(c, cli->task_id, s_ctl_wait(cli), &t);
    int code = EXIT_OK;
    if (rc)
        code = s_ctl_error(cli, "LOOKUP", rc);
    else if (cli->json)
        s_print_json(cli_task_json(t));
    else
        cli_task_print(t, stdout);
    dist_task_info_destroy(&t);
    dist_client_destroy(&c);
    return code;
}

/* ---- status ------------------------------------------------------------------------- */

static int s_cmd_status(cli_t *cli)
{
    if (cli->npos)
        return s_usage(cli, "status takes no arguments");
    int code = EXIT_OK;
    dist_client_t *c = s_connect(cli, &code);
    if (!c)
        return code;
    if (cli->task_id)
        return s_cmd_task(cli, c);
    int wait = s_ctl_wait(cli);
    dist_result_t *st = NULL;
    int rc = dist_client_status(c, wait, &st);
    const msgpack_object *v = rc == 0 ? dist_result_value(st) : NULL;
    if (rc == DIST_ETIMEDOUT || rc == DIST_ENOMASTER) {
        fprintf(stderr, "dist: the master at %s did not answer STATUS within %d ms\n", cli->master,
                wait);
        code = EXIT_NOMASTER;
    } else if (!v || v->type != MSGPACK_OBJECT_MAP) {
        fprintf(stderr, "dist: status: %s\n", rc ? dist_strerror(rc) : "malformed answer");
        code = EXIT_NOMASTER;
    } else if (cli->json) {
        json_t *j = cli_json_from_msgpack(v);
        json_object_del(j, "req");
        s_print_json(j);
    } else {
        cli_status_print(v, stdout);
    }
    dist_result_destroy(&st);
    dist_client_destroy(&c);
    return code;
}

/* ---- keygen ---------------------------------------------------------------------------- */

static int s_cmd_keygen(const cli_t *cli)
{
    if (cli->npos != 1)
        return s_usage(cli, "keygen wants one NAME (it writes NAME.pub and NAME.key)");
    const char *name = cli->pos[0];
    int rc = dist_keygen(name, cli->force);
    if (rc == -EEXIST) {
        fprintf(stderr, "dist: %s.pub or %s.key exists already: not overwritten (--force "
                        "replaces them)\n", name, name);
        return EXIT_FAILED;
    }
    if (rc) {
        fprintf(stderr, "dist: cannot write %s.pub and %s.key: %s\n", name, name,
                dist_strerror(rc));
        return EXIT_FAILED;
    }
    char pub[41];
    char path[4200];
    snprintf(path, sizeof path, "%s.pub", name);
    if (dist_key_public(path, pub) == 0)
        printf("%s.key (secret, mode 0600) and %s.pub (public key %s) written\n", name, name,
               pub);
    return EXIT_OK;
}

/* ---- main ---------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *pos[argc > 0 ? argc : 1];
    cli_t cli = { .connect_timeout_ms = 5000, .log_level = DIST_LOG_WARN, .wait_ms = -1,
                  .pos = pos };
    int rc = s_parse(&cli, argc, argv);
    if (rc)
        return rc;
    if (cli.version) {
        printf("dist %s (libdist %s)\n", DIST_VERSION_STRING, dist_version());
        return EXIT_OK;
    }
    if (cli.cmd) {
        for (size_t i = 0; i < sizeof s_cmds / sizeof *s_cmds; i++)
            if (strcmp(cli.cmd, s_cmds[i].name) == 0)
                cli.cmd_bit = s_cmds[i].bit;
        if (!cli.cmd_bit)
            return s_usage(NULL, "unknown command '%s'", cli.cmd);
    }
    if (cli.help || cli.cmd_bit == C_HELP) {
        const char *about = cli.cmd_bit == C_HELP ? (cli.npos ? cli.pos[0] : NULL) : cli.cmd;
        bool known = !about || strcmp(about, "help") == 0;
        for (size_t i = 0; i < sizeof s_cmds / sizeof *s_cmds; i++)
            known |= about && strcmp(about, s_cmds[i].name) == 0;
        if (!known)
            return s_usage(NULL, "unknown command '%s'", about);
        s_help(about);
        return EXIT_OK;
    }
    if (!cli.cmd)
        return s_usage(NULL, "no command given");
    for (size_t o = 0; o < sizeof s_opts / sizeof *s_opts; o++)
        if ((cli.given & (1u << o)) && !(s_opts[o].cmds & cli.cmd_bit))
            return s_usage(&cli, "option '--%s' does not apply to '%s'", s_opts[o].name, cli.cmd);
    if (cli.cmd_bit == C_KEYGEN)
        return s_cmd_keygen(&cli);
    if ((cli.given & (1u << O_DELAY)) && (cli.given & (1u << O_AT)))
        return s_usage(&cli, "--delay and --at exclude each other: give one");
    const char *key = cli.key ? cli.key : getenv("DIST_KEY");
    const char *server_key = cli.server_key ? cli.server_key : getenv("DIST_SERVER_KEY");
    bool has_key = key && *key, has_server_key = server_key && *server_key;
    if (has_key != has_server_key)
        return s_usage(&cli, "CURVE needs both keys: --key (or $DIST_KEY) and --server-key (or "
                             "$DIST_SERVER_KEY); %s is missing",
                       has_key ? "the master's public key" : "our own secret key");
    if (!cli.master || !*cli.master)
        cli.master = getenv("DIST_MASTER");
    if (!cli.master || !*cli.master)
        cli.master = DIST_DEFAULT_ENDPOINT;
    switch (cli.cmd_bit) {
    case C_SUBMIT: return s_cmd_submit(&cli);
    case C_MAP: return s_cmd_map(&cli);
    case C_RESULT: return s_cmd_result(&cli);
    case C_CANCEL: return s_cmd_ids(&cli, true);
    case C_RETRY: return s_cmd_ids(&cli, false);
    case C_FAILED: return s_cmd_failed(&cli);
    default: return s_cmd_status(&cli);
    }
}

/*  dist-master - the broker of a libdist cluster.
 *
 *  A thin program over dist/master.h: it parses flags, logs one line per
 *  event to stderr (UTC time, level, component, message), runs the
 *  master's loop in the main thread, and stops it cleanly on SIGTERM or
 *  SIGINT (the handler only calls dist_master_stop, which is
 *  async-signal-safe for a loop run with dist_master_run).
 *
 *  Exit status: 0 after a clean stop, 1 for a runtime failure (such as an
 *  endpoint that cannot be bound or a store that cannot be opened), 2 for
 *  a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "dist/error.h"
#include "dist/log.h"
#include "dist/master.h"

#define PROG "dist-master"

static dist_master_t *g_master;
static volatile sig_atomic_t g_signal;
static int g_level = DIST_LOG_INFO;
static dist_log_format_t g_format = DIST_LOG_FORMAT_TEXT;

static void s_usage(FILE *f)
{
    fprintf(f,
            "Usage: " PROG " [OPTION]...\n"
            "The broker of a libdist cluster: it queues tasks, leases them to workers,\n"
            "requeues the tasks of dead workers, routes results to clients until they\n"
            "acknowledge them, and serves named queues (docs/PROTOCOL.md).\n"
            "\n"
            "Options:\n"
            "  --bind ENDPOINT         endpoint to listen on (default " DIST_DEFAULT_ENDPOINT ";\n"
            "                          a port of 0 or * picks a free one, which is logged)\n"
            "  --name NAME             the master's name in status and logs (default HOST:PID)\n"
            "  --heartbeat MS          how often peers send heartbeats, and the master to\n"
            "                          them when otherwise silent (default 1000)\n"
            "  --heartbeat-timeout MS  silence after which a worker is dead and its tasks\n"
            "                          are requeued (default 3000)\n"
            "  --max-attempts N        attempts before a task gives up (default 3)\n"
            "  --lease MS              accepted for compatibility: a task without a timeout\n"
            "                          is never taken from a worker whose heartbeats arrive\n"
            "                          (its lease is renewed); one with a timeout gets it + 5 s\n"
            "  --result-ttl MS         forget a result nobody collects this long after its\n"
            "                          task finished (default 86400000, 24 h; 0: never)\n"
            "  --max-queued N          most tasks held, and most items per named queue\n"
            "                          (default 10000000)\n"
            "  --max-results N         most results waiting per client name (default 1000000)\n"
            "  --max-message BYTES     largest message accepted; K, M and G suffixes, 1K to\n"
            "                          1G (default 64M, as dist-worker and dist)\n"
            "  --store FILE            keep tasks and results in FILE (SQLite, created when\n"
            "                          missing) so that a restarted master carries on\n"
            "                          (default: none, everything is in memory and lost\n"
            "                          when the master stops)\n"
            "  --store-fsync           fsync FILE at every commit (default off; see below)\n"
            "  --metrics HOST:PORT     serve Prometheus metrics (/metrics), the status as\n"
            "                          JSON (/api/status) and a live dashboard (/) over\n"
            "                          HTTP on HOST:PORT, e.g. 127.0.0.1:9464 (default: off;\n"
            "                          port 0 picks a free one, which is logged)\n"
            "  --key FILE              the master's secret key (master.key from `dist keygen\n"
            "                          master`): turns CURVE on\n"
            "  --allow-workers DIR     directory of the public keys (NAME.pub) that may connect\n"
            "                          as workers\n"
            "  --allow-clients DIR     directory of the public keys that may connect as clients\n"
            "  --insecure              allow a non-loopback --bind without keys, and --metrics\n"
            "                          on an address other hosts can reach (it has no\n"
            "                          authentication)\n"
            "  --log-level LEVEL       error, warn, info or debug (default info)\n"
            "  --log-format FORMAT     text (default) or json: one JSON object per line with\n"
            "                          time, level, component, message and fields\n"
            "  -h, --help              show this help and exit\n"
            "  -V, --version           show the version and exit\n"
            "\n"
            "Environment:\n"
            "  " PROG " reads no environment variables (workers and clients read\n"
            "  DIST_MASTER, the endpoint they connect to).\n"
            "\n"
            "Durability: with --store, a task is committed to FILE before its ACCEPTED\n"
            "is sent, and a result before it is sent to its client (one commit per loop\n"
            "turn). Restarted with the same FILE, the master queues every task that was\n"
            "not done again (attempt + 1 for those a worker held) and keeps every result\n"
            "not yet acknowledged; workers and clients reconnect by themselves. Commits\n"
            "survive the master being killed (SIGKILL, a crash); without --store-fsync a\n"
            "power loss or kernel crash can lose those the kernel had not written out\n"
            "yet (the last few seconds). When\n"
            "FILE cannot be written (disk full, I/O error), new tasks are refused with\n"
            "store_failed, the rest is served from memory, and writing is retried every\n"
            "second. Named queues are kept in memory only.\n"
            "\n"
            "Security: with --key, every connection is encrypted and authenticated with\n"
            "CURVE; a key in --allow-workers may only act as a worker, one in\n"
            "--allow-clients only as a client (a key in both may do both). A key removed\n"
            "from a directory is refused at its next connection. Peers without a key, with\n"
            "an unknown key or expecting another master key get no session; each refusal\n"
            "is logged and counted (refused_handshakes in `dist status`). Without --key,\n"
            "binding to anything but loopback (127.0.0.0/8, ::1, ipc://) is refused unless\n"
            "--insecure is given. Create keys with `dist keygen NAME`. The metrics endpoint\n"
            "has no authentication: it is refused on a non-loopback address unless\n"
            "--insecure is given (docs/OBSERVABILITY.md).\n"
            "\n"
            "Exit status:\n"
            "  0  stopped cleanly (SIGTERM or SIGINT)\n"
            "  1  runtime failure (for example the endpoint or the metrics address cannot\n"
            "     be bound, a non-loopback --bind without --key, a key file or allow list\n"
            "     that cannot be used, or the store cannot be opened: not writable, in\n"
            "     use, not a libdist store)\n"
            "  2  usage error\n");
}

/* Called from the loop's thread and from the metrics server's:
 * dist_log_write writes each line at once. */
static void s_log(dist_log_level_t level, const char *component, const char *msg, void *ud)
{
    (void)ud;
    if ((int)level > g_level)
        return;
    dist_log_write(stderr, g_format, level, component, msg, PROG);
}

static void s_on_signal(int sig)
{
    g_signal = sig;
    dist_master_stop(g_master);
}

static _Noreturn void s_bad_usage(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, PROG ": ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "; try '" PROG " --help'\n");
    exit(2);
}

/* A decimal integer in [min, max], with K/M/G (powers of 1024) when
 * `suffix`. */
static unsigned long long s_number(const char *opt, const char *arg, unsigned long long min,
                                   unsigned long long max, bool suffix)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    bool ok = end != arg && arg[0] != '-' && errno == 0;
    if (ok && suffix && *end) {
        int shift = *end == 'K' || *end == 'k' ? 10 : *end == 'M' || *end == 'm' ? 20
                    : *end == 'G' || *end == 'g' ? 30 : -1;
        if (shift < 0 || end[1] || v > (ULLONG_MAX >> shift))
            ok = false;
        else
            v <<= shift, end++;
    }
    if (!ok || *end || v < min || v > max) {
        char range[96];
        snprintf(range, sizeof range, "a number from %llu to %llu", min, max);
        fprintf(stderr, PROG ": --%s: expected %s, got '%s'; try '" PROG " --help'\n", opt, range,
                arg);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    enum {
        O_BIND = 256, O_NAME, O_HB, O_HB_TIMEOUT, O_ATTEMPTS, O_LEASE, O_TTL, O_QUEUED, O_RESULTS,
        O_MESSAGE, O_LEVEL, O_STORE, O_FSYNC, O_METRICS, O_INSECURE, O_FORMAT, O_KEY,
        O_ALLOW_WORKERS, O_ALLOW_CLIENTS
    };
    static const struct option longopts[] = {
        { "bind", required_argument, NULL, O_BIND },
        { "name", required_argument, NULL, O_NAME },
        { "heartbeat", required_argument, NULL, O_HB },
        { "heartbeat-timeout", required_argument, NULL, O_HB_TIMEOUT },
        { "max-attempts", required_argument, NULL, O_ATTEMPTS },
        { "lease", required_argument, NULL, O_LEASE },
        { "result-ttl", required_argument, NULL, O_TTL },
        { "max-queued", required_argument, NULL, O_QUEUED },
        { "max-results", required_argument, NULL, O_RESULTS },
        { "max-message", required_argument, NULL, O_MESSAGE },
        { "log-level", required_argument, NULL, O_LEVEL },
        { "store", required_argument, NULL, O_STORE },
        { "store-fsync", no_argument, NULL, O_FSYNC },
        { "metrics", required_argument, NULL, O_METRICS },
        { "insecure", no_argument, NULL, O_INSECURE },
        { "log-format", required_argument, NULL, O_FORMAT },
        { "key", required_argument, NULL, O_KEY },
        { "allow-workers", required_argument, NULL, O_ALLOW_WORKERS },
        { "allow-clients", required_argument, NULL, O_ALLOW_CLIENTS },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    dist_master_opts_t o;
    memset(&o, 0, sizeof o);
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":hV", longopts, NULL)) != -1) {
        switch (c) {
        case O_BIND:
            /* One ROUTER socket, one endpoint: a second --bind would
             * silently replace the first. */
            if (o.bind)
                s_bad_usage("--bind given twice ('%s', then '%s'): a master listens on one "
                            "endpoint",
                            o.bind, optarg);
            o.bind = optarg;
            break;
        case O_NAME:
            if (!*optarg || strlen(optarg) > 128)
                s_bad_usage("--name: expected 1 to 128 bytes, got '%s'%s", optarg, "");
            o.name = optarg;
            break;
        case O_HB: o.heartbeat_ms = (int)s_number("heartbeat", optarg, 1, INT_MAX, false); break;
        case O_HB_TIMEOUT:
            o.heartbeat_timeout_ms = (int)s_number("heartbeat-timeout", optarg, 1, INT_MAX, false);
            break;
        case O_ATTEMPTS:
            o.max_attempts = (int)s_number("max-attempts", optarg, 1, INT_MAX, false);
            break;
        case O_LEASE: o.lease_ms = (int)s_number("lease", optarg, 1, INT_MAX, false); break;
        case O_TTL: {
            long long ttl = (long long)s_number("result-ttl", optarg, 0, INT64_MAX, false);
            o.result_ttl_ms = ttl ? ttl : -1; /* 0 on the command line: never */
            break;
        }
        case O_QUEUED: o.max_queued = s_number("max-queued", optarg, 1, SIZE_MAX, false); break;
        case O_RESULTS: o.max_results = s_number("max-results", optarg, 1, SIZE_MAX, false); break;
        case O_MESSAGE:
            o.max_message = s_number("max-message", optarg, DIST_MAX_MESSAGE_MIN,
                                     DIST_MAX_MESSAGE_MAX, true);
            break;
        case O_STORE:
            if (!*optarg)
                s_bad_usage("--store: expected a file name%s%s", "", "");
            o.store = optarg;
            break;
        case O_FSYNC: o.store_fsync = true; break;
        case O_METRICS:
            if (!*optarg)
                s_bad_usage("--metrics: expected HOST:PORT, e.g. 127.0.0.1:9464%s%s", "", "");
            o.metrics = optarg;
            break;
        case O_INSECURE: o.insecure = true; break;
        case O_FORMAT: {
            int f = dist_log_format_parse(optarg);
            if (f < 0)
                s_bad_usage("--log-format: expected text or json, got '%s'%s", optarg, "");
            g_format = (dist_log_format_t)f;
            break;
        }
        case O_KEY: o.key = optarg; break;
        case O_ALLOW_WORKERS: o.allow_workers = optarg; break;
        case O_ALLOW_CLIENTS: o.allow_clients = optarg; break;
        case O_LEVEL:
            g_level = dist_log_level_parse(optarg);
            if (g_level < 0)
                s_bad_usage("--log-level: expected error, warn, info or debug, got '%s'%s", optarg,
                            "");
            break;
        case 'h': s_usage(stdout); return 0;
        case 'V':
            printf(PROG " %s (libdist %s, protocol 1)\n", DIST_VERSION_STRING, dist_version());
            return 0;
        case ':': s_bad_usage("%s needs a value%s", argv[optind - 1], "");
        default: s_bad_usage("unknown option '%s'%s", argv[optind - 1], "");
        }
    }
    if (optind < argc)
        s_bad_usage("unexpected argument '%s'%s", argv[optind], "");
    if (o.store_fsync && !o.store)
        s_bad_usage("--store-fsync needs --store FILE%s%s", "", "");

    /* Each peer is a TCP connection: thousands of them need more than the
     * usual 1024 descriptors, so take what the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    /* The library filters below the level it is given; the callback
     * filters too, since 0 means "default" (info) to the library. */
    o.log = s_log;
    o.log_level = g_level == DIST_LOG_ERROR ? DIST_LOG_WARN : (dist_log_level_t)g_level;
    g_master = dist_master_new(&o);
    if (!g_master)
        return 1; /* the reason was logged */

    /* After dist_master_new: czmq installs its own handlers when it starts. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = dist_master_run(g_master);
    if (g_signal) {
        char line[64];
        snprintf(line, sizeof line, "stopped by %s", g_signal == SIGINT ? "SIGINT" : "SIGTERM");
        s_log(DIST_LOG_INFO, "master", line, NULL);
    }
    dist_master_destroy(&g_master);
    return rc ? 1 : 0;
}

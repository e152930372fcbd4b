/*  dist-worker - runs tasks for a libdist master (see --help).
 *
 *  A thin program over dist/worker.h: it parses the command line, loads
 *  the task plugins (before the worker forks its pool, so that the pool's
 *  processes have them), runs the worker, and turns SIGTERM and SIGINT
 *  into dist_worker_stop(): the first drains, the second stops at once.
 *  Log lines go to stderr: time (UTC), level, component, event.
 */
#include <dist.h>
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_OK = 0, EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

static dist_worker_t *s_worker;
static int s_level = DIST_LOG_INFO;
static dist_log_format_t s_format = DIST_LOG_FORMAT_TEXT;

static void s_log(dist_log_level_t level, const char *component, const char *msg, void *ud)
{
    (void)ud;
    dist_log_write(stderr, s_format, level, component, msg, "dist-worker");
}

/* The program's own events, in the library's format. */
static void s_say(dist_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_say(dist_log_level_t level, const char *fmt, ...)
{
    if ((int)level > s_level)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s_log(level, "worker", line, NULL);
}

static void s_on_signal(int sig)
{
    (void)sig;
    dist_worker_stop(s_worker); /* async-signal-safe */
}

static long s_online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? n : 1;
}

static void s_usage(void)
{
    printf("Usage: dist-worker [OPTION]...\n"
           "Runs tasks for a libdist master: connects to it, announces the tasks it can run,\n"
           "takes them by credit, runs them in a local pool of processes and sends the\n"
           "results back.\n"
           "\n"
           "Options:\n"
           "  -m, --master ENDPOINT   master to connect to (default: $DIST_MASTER, else\n"
           "                          " DIST_DEFAULT_ENDPOINT ")\n"
           "      --connect ENDPOINT  the same as --master\n"
           "  -p, --procs N           pool processes, 1 to 4096 (default: online CPUs, %ld here)\n"
           "  -t, --tasks PLUGIN.so   load the tasks of a plugin (a shared object whose tasks\n"
           "                          register with DIST_TASK); repeatable (default: none)\n"
           "  -n, --name NAME         name shown in the master's status (default: HOST:PID)\n"
           "      --key FILE          this worker's secret key (NAME.key from `dist keygen NAME`;\n"
           "                          default: $DIST_KEY); with --server-key, CURVE is on\n"
           "      --server-key FILE   the master's public key (master.pub; default:\n"
           "                          $DIST_SERVER_KEY)\n"
           "      --insecure          allow a non-loopback master without keys (traffic in\n"
           "                          clear, master not authenticated)\n"
           "      --allow-exec        offer and accept dist.exec, which runs commands\n"
           "                          (default: not offered, and refused)\n"
           "      --max-prefetch N    most tasks held beyond the pool size, 1 to 1000000\n"
           "                          (default: 256; the worker adapts below it)\n"
           "      --max-message BYTES largest message taken or sent, and largest task argument\n"
           "                          or result the pool carries; K, M and G suffixes, 1K to\n"
           "                          1G (default 64M, as the master and dist)\n"
           "      --threads           run tasks in threads instead of processes (a crashing\n"
           "                          task then takes the worker down)\n"
           "      --log-level LEVEL   error, warn, info or debug (default: info)\n"
           "      --log-format FMT    text (default) or json: one JSON object per line with\n"
           "                          time, level, component, message and fields\n"
           "  -h, --help              show this help and exit\n"
           "  -V, --version           show the version and exit\n"
           "\n"
           "Built-in tasks: dist.echo (returns its arguments), dist.sleep [ms],\n"
           "dist.exec [argv, stdin?, timeout_ms?] (only with --allow-exec).\n"
           "\n"
           "Signals: SIGTERM or SIGINT drains - no new tasks, unstarted ones go back to the\n"
           "master, running ones finish and their results are sent - then exits; a second\n"
           "one stops at once (the master requeues what was running). A master that stops\n"
           "cleanly says BYE: the worker says HELLO again at once, and keeps saying it\n"
           "every second until a master answers.\n"
           "\n"
           "Environment:\n"
           "  DIST_MASTER                master endpoint when --master is not given\n"
           "  DIST_KEY, DIST_SERVER_KEY  key files when --key / --server-key are not given\n"
           "\n"
           "Security: without keys, a master that is not on loopback (127.0.0.0/8, ::1,\n"
           "ipc://) is refused unless --insecure is given. A secret key file must not be\n"
           "accessible by group or others (chmod 600). Payloads are data: tasks are only\n"
           "what this binary and its --tasks plugins register; dist.exec only with\n"
           "--allow-exec.\n"
           "\n"
           "Exit status:\n"
           "  0  stopped after a clean drain\n"
           "  1  runtime failure (a plugin that does not load, no pool, a second signal)\n"
           "  2  usage error (also a bad endpoint, or settings refused by the library)\n",
           s_online_cpus());
}

static int s_bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int s_bad_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "dist-worker: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry 'dist-worker --help' for more information.\n");
    va_end(ap);
    return EXIT_USAGE;
}

/* A whole decimal integer in [lo, hi]. */
static bool s_parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

int main(int argc, char **argv)
{
    enum { O_CONNECT = 256, O_ALLOW_EXEC, O_MAX_PREFETCH, O_THREADS, O_LOG_LEVEL, O_LOG_FORMAT,
           O_KEY, O_SERVER_KEY, O_INSECURE, O_MAX_MESSAGE };
    static const struct option longopts[] = {
        { "master", required_argument, NULL, 'm' },
        { "connect", required_argument, NULL, O_CONNECT },
        { "procs", required_argument, NULL, 'p' },
        { "tasks", required_argument, NULL, 't' },
        { "name", required_argument, NULL, 'n' },
        { "allow-exec", no_argument, NULL, O_ALLOW_EXEC },
        { "key", required_argument, NULL, O_KEY },
        { "server-key", required_argument, NULL, O_SERVER_KEY },
        { "insecure", no_argument, NULL, O_INSECURE },
        { "max-prefetch", required_argument, NULL, O_MAX_PREFETCH },
        { "max-message", required_argument, NULL, O_MAX_MESSAGE },
        { "threads", no_argument, NULL, O_THREADS },
        { "log-level", required_argument, NULL, O_LOG_LEVEL },
        { "log-format", required_argument, NULL, O_LOG_FORMAT },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    dist_worker_opts_t o = { 0 };
    const char **plugins = calloc((size_t)argc, sizeof *plugins);
    size_t nplugins = 0;
    if (!plugins)
        return EXIT_RUNTIME;
    opterr = 0; /* our own one-line messages */
    int c, rc = EXIT_OK;
    while ((c = getopt_long(argc, argv, ":m:p:t:n:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
        case O_CONNECT:
            o.master = optarg;
            break;
        case 'p':
            if (!s_parse_int(optarg, 1, 4096, &o.procs))
                rc = s_bad_usage("--procs wants an integer from 1 to 4096, not '%s'", optarg);
            break;
        case 't':
            plugins[nplugins++] = optarg;
            break;
        case 'n':
            if (!*optarg || strlen(optarg) > 128)
                rc = s_bad_usage("--name wants 1 to 128 bytes");
            o.name = optarg;
            break;
        case O_ALLOW_EXEC:
            o.allow_exec = true;
            break;
        case O_KEY:
            o.key = optarg;
            break;
        case O_SERVER_KEY:
            o.server_key = optarg;
            break;
        case O_INSECURE:
            o.insecure = true;
            break;
        case O_MAX_PREFETCH:
            if (!s_parse_int(optarg, 1, 1000000, &o.max_prefetch))
                rc = s_bad_usage("--max-prefetch wants an integer from 1 to 1000000, not '%s'", optarg);
            break;
        case O_MAX_MESSAGE: {
            uint64_t v;
            if (dist_size_parse(optarg, &v) || v < DIST_MAX_MESSAGE_MIN || v > DIST_MAX_MESSAGE_MAX)
                rc = s_bad_usage("--max-message wants a size from 1K to 1G (e.g. 64M), not '%s'",
                                 optarg);
            else
                o.max_message = (size_t)v;
            break;
        }
        case O_THREADS:
            o.threads = true;
            break;
        case O_LOG_LEVEL:
            s_level = dist_log_level_parse(optarg);
            if (s_level < 0)
                rc = s_bad_usage("--log-level wants error, warn, info or debug, not '%s'", optarg);
            break;
        case O_LOG_FORMAT: {
            int f = dist_log_format_parse(optarg);
            if (f < 0)
                rc = s_bad_usage("--log-format wants text or json, not '%s'", optarg);
            else
                s_format = (dist_log_format_t)f;
            break;
        }
        case 'h':
            s_usage();
            free(plugins);
            return EXIT_OK;
        case 'V':
            printf("dist-worker %s (libdist %s, protocol 1)\n", DIST_VERSION_STRING, dist_version());
            free(plugins);
            return EXIT_OK;
        case ':':
            rc = s_bad_usage("option '%s' needs a value", argv[optind - 1]);
            break;
        default:
            rc = s_bad_usage("unknown option '%s'", argv[optind - 1]);
            break;
        }
        if (rc)
            break;
    }
    if (!rc && optind < argc)
        rc = s_bad_usage("unexpected argument '%s'", argv[optind]);
    if (rc) {
        free(plugins);
        return rc;
    }

    /* Plugins register their tasks from constructors when loaded: before
     * the worker forks its pool. They are never unloaded. */
    for (size_t i = 0; i < nplugins; i++) {
        size_t before = dist_task_count();
        /* dlopen() looks for a bare name in the library path only; a file
         * of that name here is what the user means. */
        char here[4096];
        const char *path = plugins[i];
        if (!strchr(path, '/') && access(path, F_OK) == 0 &&
            snprintf(here, sizeof here, "./%s", path) < (int)sizeof here)
            path = here;
        if (!dlopen(path, RTLD_NOW)) {
            /* A bare name that is no file here was looked up in the
             * library path: say how to name a file. */
            bool bare = !strchr(plugins[i], '/');
            s_say(DIST_LOG_ERROR, "cannot load plugin %s: %s%s%s%s", plugins[i], dlerror(),
                  bare ? " (a bare name is searched in the library path; for a file, write ./"
                       : "",
                  bare ? plugins[i] : "", bare ? " or its full path)" : "");
            free(plugins);
            return EXIT_RUNTIME;
        }
        size_t added = dist_task_count() - before;
        if (added == 0)
            s_say(DIST_LOG_WARN,
                  "plugin %s registered no task (is each one declared with DIST_TASK, or "
                  "registered from a constructor?)",
                  plugins[i]);
        else
            s_say(DIST_LOG_INFO, "loaded plugin %s: %zu tasks", plugins[i], added);
    }
    free(plugins);

    o.log = s_log;
    o.log_level = (dist_log_level_t)s_level;
    s_worker = dist_worker_new(&o);
    if (!s_worker) {
        /* EINVAL: a bad endpoint or setting (the line above says which),
         * from the command line or the environment: a usage error. */
        if (errno == EINVAL)
            return s_bad_usage("invalid settings (see the error above)");
        s_say(DIST_LOG_ERROR, "cannot start the worker: %s", strerror(errno));
        return EXIT_RUNTIME;
    }
    /* After dist_worker_new: the pool's processes are forked by then and
     * do not inherit these. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int r = dist_worker_run(s_worker);
    if (r == 0) {
        rc = EXIT_OK;
    } else if (r == DIST_EINTR) {
        s_say(DIST_LOG_WARN, "stopped without draining (second signal)");
        rc = EXIT_RUNTIME;
    } else {
        s_say(DIST_LOG_ERROR, "stopped: %s", dist_strerror(r));
        rc = EXIT_RUNTIME;
    }
    /* No handler may see the worker while it is being freed. */
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, NULL);
    dist_worker_destroy(&s_worker);
    return rc;
}

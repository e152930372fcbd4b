/* test_cxx.cpp - the public headers as C++ sees them.
 *
 * An embedder writing C++ includes <dist.h> (or one dist/<m>.h) and links
 * libdist; this file is that embedder, built as C++17 with -Wall -Wextra
 * -Werror -pedantic. Three things would break it:
 *
 * - A header that loses its extern "C" guard, or a function declared
 *   outside it: every exported function is declared here once more with
 *   C linkage (the list is made from the headers by tests/CMakeLists.txt),
 *   and C++ refuses two linkages for one function at compile time. The
 *   calls below would also fail to link.
 * - C-only syntax in a header or in a macro a C++ user expands (compound
 *   literals, designated initializers, implicit void * conversions): each
 *   header is also compiled alone (cxx_include_*.cpp), and the macros
 *   DIST_TASK, DIST_FN and DIST_NAMED are expanded here.
 * - A symbol the shared library does not export: it links dist::dist, as
 *   an installed program would, and calls into every module.
 *
 * No test framework (cmocka's header is C): CHECK prints the failed
 * condition and the test exits 1. Loopback and ipc:// only; the one
 * child process it starts is reaped before it returns.
 */
#include <dist.h>
#include <dist/client.h>
#include <dist/common.h>
#include <dist/error.h>
#include <dist/log.h>
#include <dist/master.h>
#include <dist/pipe.h>
#include <dist/pool.h>
#include <dist/process.h>
#include <dist/queue.h>
#include <dist/security.h>
#include <dist/shm.h>
#include <dist/subprocess.h>
#include <dist/sync.h>
#include <dist/task.h>
#include <dist/value.h>
#include <dist/wire.h>
#include <dist/worker.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <unistd.h>

/* Every DIST_EXPORT function, redeclared with C linkage: a compile error
 * ("conflicting declaration ... with 'C' linkage") for any that a header
 * declared with C++ linkage. */
#define DIST_CXX_C_LINKAGE(f) extern "C" decltype(f) f;
#include "dist_cxx_linkage.inc"
#undef DIST_CXX_C_LINKAGE

static int s_failures = 0;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            std::fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);   \
            s_failures++;                                                                  \
        }                                                                                  \
    } while (0)

/* A task written in C++, registered at load time by DIST_TASK. */
static int s_square(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    int64_t x = 0;
    if (dist_arg_int(args, 0, &x))
        return dist_task_fail(ctx, "%s: expected one integer", dist_task_ctx_name(ctx));
    return msgpack_pack_int64(out, x * x);
}
DIST_TASK("cxx.square", s_square)

/* common, error, log */
static void s_basics()
{
    CHECK(std::strcmp(dist_version(), DIST_VERSION_STRING) == 0);
    CHECK(std::strcmp(dist_strerror(0), "success") == 0);
    const char *msg = dist_strerror(DIST_ENOMASTER);
    CHECK(msg && *msg && std::strcmp(msg, "unknown error") != 0);
    CHECK(std::strcmp(dist_strerror(-DIST_ENOMASTER), msg) == 0);
    CHECK(dist_log_level_parse("debug") == DIST_LOG_DEBUG);
    CHECK(std::strcmp(dist_log_level_name(DIST_LOG_WARN), "warn") == 0);
    CHECK(dist_log_format_parse("json") == DIST_LOG_FORMAT_JSON);
}

/* value, wire: arguments built, packed, decoded and read back. */
static void s_value_wire()
{
    dist_args_t *a = dist_args_new();
    CHECK(a != nullptr);
    if (!a)
        return;
    CHECK(dist_args_int(a, 6) == 0);
    CHECK(dist_args_str(a, "six") == 0);
    CHECK(dist_args_count(a) == 2);
    size_t len = 0;
    const void *data = dist_args_data(a, &len);
    int err = 0;
    dist_wire_msg_t *m = dist_wire_msg_decode(data, len, nullptr, &err);
    CHECK(m != nullptr && err == 0);
    if (m) {
        const msgpack_object *root = dist_wire_msg_root(m);
        int64_t x = 0;
        const char *s = nullptr;
        size_t n = 0;
        CHECK(dist_arg_count(root) == 2);
        CHECK(dist_arg_int(root, 0, &x) == 0 && x == 6);
        CHECK(dist_arg_str(root, 1, &s, &n) == 0 && std::string(s, n) == "six");
        dist_wire_msg_destroy(&m);
        CHECK(m == nullptr);
    }
    dist_args_destroy(&a);
    CHECK(a == nullptr);

    dist_wire_buf_t *b = dist_wire_buf_new(4);
    CHECK(b != nullptr);
    if (b) {
        msgpack_pack_str(dist_wire_buf_packer(b), 10);
        CHECK(dist_wire_buf_status(b) == 0);
        msgpack_pack_str_body(dist_wire_buf_packer(b), "0123456789", 10);
        CHECK(dist_wire_buf_status(b) == DIST_EMSGSIZE); /* over its 4-byte limit */
        dist_wire_buf_destroy(&b);
    }
}

/* task, pool: the C++ task found by name and run by function and by name
 * in a thread pool (DIST_FN and DIST_NAMED expanded in C++). */
static void s_task_pool()
{
    CHECK(dist_task_name_valid("cxx.square"));
    CHECK(dist_task_lookup("cxx.square") == s_square);
    dist_pool_opts_t po{};
    po.processes = 1;
    po.threads = true;
    dist_pool_t *pool = dist_pool_new(&po);
    CHECK(pool != nullptr);
    if (!pool)
        return;
    dist_args_t *a = dist_args_new();
    CHECK(a && dist_args_int(a, 7) == 0);
    size_t len = 0;
    const void *data = a ? dist_args_data(a, &len) : nullptr;
    const dist_task_ref_t refs[] = { DIST_FN(s_square), DIST_NAMED("cxx.square") };
    for (const dist_task_ref_t &ref : refs) {
        dist_result_t *r = nullptr;
        CHECK(dist_pool_apply(pool, ref, data, len, &r) == 0);
        int64_t v = 0;
        CHECK(r && dist_result_int(r, &v) == 0 && v == 49);
        dist_result_destroy(&r);
    }
    /* A failing call reaches the C++ task's dist_task_fail. */
    dist_args_clear(a);
    data = dist_args_data(a, &len);
    dist_result_t *r = nullptr;
    CHECK(dist_pool_apply(pool, DIST_FN(s_square), data, len, &r) == DIST_ETASK);
    CHECK(r && std::strstr(dist_result_error(r), "cxx.square: expected one integer"));
    dist_result_destroy(&r);
    dist_args_destroy(&a);
    CHECK(dist_pool_close(pool) == 0);
    CHECK(dist_pool_join(pool, 10000) == 0);
    dist_pool_destroy(&pool);
    CHECK(pool == nullptr);
}

/* process, shm: a child writes a shared value the parent then reads. */
static int s_child(void *arg)
{
    dist_value_set_int(static_cast<dist_value_t *>(arg), 42);
    return 3;
}

static void s_process_shm()
{
    dist_value_t *v = dist_value_new(DIST_CTYPE_INT64, true);
    CHECK(v != nullptr);
    if (!v)
        return;
    dist_process_t *p = dist_process_new(s_child, v, "cxx-child");
    CHECK(p != nullptr);
    if (p) {
        CHECK(dist_process_start(p) == 0);
        CHECK(dist_process_join(p, 10000) == 0);
        CHECK(dist_process_exitcode(p) == 3);
        dist_process_destroy(&p);
    }
    CHECK(dist_value_get_int(v) == 42);
    dist_value_destroy(&v);
}

/* pipe, queue, sync: one message through each, one lock round trip. */
static void s_pipe_queue_sync()
{
    dist_pipe_t *e0 = nullptr, *e1 = nullptr;
    CHECK(dist_pipe_pair(&e0, &e1, false) == 0);
    if (e0 && e1) {
        CHECK(dist_pipe_send(e1, "ping", 4) == 0);
        void *buf = nullptr;
        size_t len = 0;
        CHECK(dist_pipe_recv(e0, &buf, &len, 5000) == 0);
        CHECK(buf && len == 4 && std::memcmp(buf, "ping", 4) == 0);
        std::free(buf);
    }
    dist_pipe_destroy(&e0);
    dist_pipe_destroy(&e1);

    dist_queue_t *q = dist_queue_new(0, 4096);
    CHECK(q != nullptr);
    if (q) {
        CHECK(dist_queue_put(q, "item", 4, false, 0) == 0);
        void *buf = nullptr;
        size_t len = 0;
        CHECK(dist_queue_get(q, &buf, &len, false, 0) == 0);
        CHECK(buf && len == 4 && std::memcmp(buf, "item", 4) == 0);
        std::free(buf);
        buf = nullptr;
        CHECK(dist_queue_get(q, &buf, &len, false, 0) == DIST_EEMPTY);
        dist_queue_destroy(&q);
        CHECK(q == nullptr);
    }

    dist_lock_t *l = dist_lock_new();
    CHECK(l != nullptr);
    if (l) {
        CHECK(dist_lock_acquire(l, 0) == 0);
        CHECK(dist_lock_acquire(l, 0) == DIST_EDEADLK);
        CHECK(dist_lock_release(l) == 0);
        dist_lock_destroy(&l);
    }
}

/* subprocess: a real child's exit status. */
static void s_subprocess()
{
    const char *const argv[] = { "/bin/sh", "-c", "exit 5", nullptr };
    int rc = -1;
    CHECK(dist_call(argv, nullptr, 10000, &rc) == 0);
    CHECK(rc == 5);
}

/* security, master, client, worker, in a private directory. */
static void s_net(const std::string &dir)
{
    std::string key = dir + "/cxx";
    CHECK(dist_keygen(key.c_str(), false) == 0);
    CHECK(dist_keygen(key.c_str(), false) == -EEXIST);
    char z85[41] = { 0 };
    CHECK(dist_key_public((key + ".pub").c_str(), z85) == 0);
    CHECK(std::strlen(z85) == 40);
    char z85_secret[41] = { 0 };
    CHECK(dist_key_public((key + ".key").c_str(), z85_secret) == 0);
    CHECK(std::strcmp(z85, z85_secret) == 0);
    unlink((key + ".pub").c_str());
    unlink((key + ".key").c_str());

    dist_master_opts_t mo{};
    mo.bind = "tcp://127.0.0.1:0";
    dist_master_t *master = dist_master_new(&mo);
    CHECK(master != nullptr);
    if (master) {
        CHECK(std::strncmp(dist_master_endpoint(master), "tcp://127.0.0.1:", 16) == 0);
        CHECK(std::strcmp(dist_master_endpoint(master), "tcp://127.0.0.1:0") != 0);
        dist_master_destroy(&master);
        CHECK(master == nullptr);
    }

    /* Nobody listens at this ipc path: no welcome, so NULL with errno the
     * positive code of DIST_ENOMASTER (dist/client.h). */
    std::string nobody = "ipc://" + dir + "/nobody";
    dist_client_opts_t co{};
    co.master = nobody.c_str();
    co.connect_timeout_ms = 300;
    errno = 0;
    dist_client_t *client = dist_client_new(&co);
    CHECK(client == nullptr);
    CHECK(errno == -DIST_ENOMASTER);
    CHECK(std::strcmp(dist_strerror(errno), dist_strerror(DIST_ENOMASTER)) == 0);
    dist_client_destroy(&client);

    /* A worker does not wait for its master (dist/worker.h). */
    dist_worker_opts_t wo{};
    wo.master = nobody.c_str();
    wo.procs = 1;
    wo.threads = true;
    dist_worker_t *worker = dist_worker_new(&wo);
    CHECK(worker != nullptr);
    dist_worker_destroy(&worker);
    CHECK(worker == nullptr);
}

int main()
{
    char tmpl[] = "/tmp/dist-cxx-XXXXXX";
    const char *dir = mkdtemp(tmpl);
    if (!dir) {
        std::perror("mkdtemp");
        return 1;
    }
    s_basics();
    s_value_wire();
    s_process_shm(); /* before any thread or ZeroMQ context: it forks */
    s_pipe_queue_sync();
    s_subprocess();
    s_task_pool();
    s_net(dir);
    rmdir(dir);
    if (s_failures) {
        std::fprintf(stderr, "test_cxx: %d check(s) failed\n", s_failures);
        return 1;
    }
    std::printf("test_cxx: all checks passed\n");
    return 0;
}

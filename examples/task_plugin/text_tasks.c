/*  text_tasks.c - a task plugin: three text tasks that any dist-worker can
 *  run once it loads this shared object.
 *
 *      dist-worker --tasks ./text_tasks.so
 *      dist submit text.words '"the quick brown fox"'      ->  4
 *      dist submit text.upper '"abc"'                       ->  "ABC"
 *      dist submit text.stats '"a bb\nccc"'                 ->  {"lines":2,"words":3,"bytes":8}
 *
 *  DIST_TASK registers each function when the worker dlopen()s the file.
 *  Tasks receive their arguments as a MessagePack array and pack exactly
 *  one value, or fail with a message that reaches the caller. They run in
 *  the worker's pool processes: a crash costs one retry, not the worker.
 *  Plugins are loaded only from paths on dist-worker's command line; no
 *  task payload can name code to load.
 */
#include <ctype.h>
#include <dist.h>
#include <stdlib.h>

struct counts {
    int64_t lines, words, bytes;
};

static struct counts s_count(const char *s, size_t n)
{
    struct counts c = { 0, 0, (int64_t)n };
    int in_word = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\n')
            c.lines++;
        if (isspace(ch)) {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            c.words++;
        }
    }
    if (n > 0 && s[n - 1] != '\n')
        c.lines++; /* a last line without its newline still counts */
    return c;
}

static int s_text_arg(dist_task_ctx_t *ctx, const msgpack_object *args, const char **s, size_t *n)
{
    if (dist_arg_count(args) != 1 || dist_arg_str(args, 0, s, n) != 0)
        return dist_task_fail(ctx, "%s: expected one string", dist_task_ctx_name(ctx));
    return 0;
}

static int words(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    const char *s;
    size_t n;
    if (s_text_arg(ctx, args, &s, &n))
        return -1;
    return msgpack_pack_int64(out, s_count(s, n).words);
}
DIST_TASK("text.words", words)

static int upper(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    const char *s;
    size_t n;
    if (s_text_arg(ctx, args, &s, &n))
        return -1;
    char *u = malloc(n ? n : 1);
    if (!u)
        return dist_task_fail(ctx, "text.upper: out of memory for %zu bytes", n);
    for (size_t i = 0; i < n; i++)
        u[i] = (char)toupper((unsigned char)s[i]);
    msgpack_pack_str(out, n);
    int rc = msgpack_pack_str_body(out, u, n);
    free(u);
    return rc;
}
DIST_TASK("text.upper", upper)

static void s_pack_key(msgpack_packer *out, const char *key, size_t len, int64_t v)
{
    msgpack_pack_str(out, len);
    msgpack_pack_str_body(out, key, len);
    msgpack_pack_int64(out, v);
}

/* A map result: how a task returns several named values. */
static int stats(dist_task_ctx_t *ctx, const msgpack_object *args, msgpack_packer *out)
{
    const char *s;
    size_t n;
    if (s_text_arg(ctx, args, &s, &n))
        return -1;
    struct counts c = s_count(s, n);
    msgpack_pack_map(out, 3);
    s_pack_key(out, "lines", 5, c.lines);
    s_pack_key(out, "words", 5, c.words);
    s_pack_key(out, "bytes", 5, c.bytes);
    return 0;
}
DIST_TASK("text.stats", stats)

/*  shm.c - shared Value and Array, and named shared-memory blocks (see
 *  dist/shm.h).
 *
 *  A Value or Array is one shared anonymous mapping holding its header,
 *  its optional Lock and its data; like the sync objects, the handle is the
 *  mapping's address, valid unchanged in every forked child. Value data is
 *  plain C storage accessed with the compiler's __atomic builtins, so that
 *  dist_value_ptr() can hand out an ordinary int64_t / double pointer for
 *  code that works under the Lock.
 *
 *  A named block's handle is per process (heap); it records the pid that
 *  created the name, because a forked child inherits a copy of the owner's
 *  handle and must not remove the name when it destroys that copy.
 */
#include "dist/shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dist/error.h"
#include "sync_internal.h"
#include "util_internal.h"

size_t dist_ctype_size(dist_ctype_t type)
{
    switch (type) {
    case DIST_CTYPE_INT64: return sizeof(int64_t);
    case DIST_CTYPE_INT32: return sizeof(int32_t);
    case DIST_CTYPE_UINT8: return sizeof(uint8_t);
    case DIST_CTYPE_DOUBLE: return sizeof(double);
    case DIST_CTYPE_BYTES: return 1;
    }
    return 0;
}

/* ---- Value -------------------------------------------------------------- */

struct dist_value {
    dist_ctype_t type;
    bool has_lock;
    struct dist_lock lock;
    union {
        int64_t i64;
        int32_t i32;
        uint8_t u8;
        double f64;
        uint64_t bits; /* the double's bits, for compare-and-swap */
    } u;
};

dist_value_t *dist_value_new(dist_ctype_t type, bool lock)
{
    if (dist_ctype_size(type) == 0 || type == DIST_CTYPE_BYTES) {
        errno = EINVAL;
        return NULL;
    }
    dist_value_t *v = dist__shared_map(sizeof *v);
    if (!v)
        return NULL;
    v->type = type;
    v->has_lock = lock;
    return lock ? dist__shared_with_lock(v, sizeof *v, &v->lock) : v;
}

void dist_value_destroy(dist_value_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    if ((*self_p)->has_lock)
        dist__lock_drop(&(*self_p)->lock);
    dist__shared_unmap(*self_p, sizeof **self_p);
    *self_p = NULL;
}

dist_lock_t *dist_value_lock(dist_value_t *self) { return self->has_lock ? &self->lock : NULL; }
dist_ctype_t dist_value_type(const dist_value_t *self) { return self->type; }
void *dist_value_ptr(dist_value_t *self) { return &self->u; }

int64_t dist_value_get_int(const dist_value_t *self)
{
    switch (self->type) {
    case DIST_CTYPE_INT32: return __atomic_load_n(&self->u.i32, __ATOMIC_SEQ_CST);
    case DIST_CTYPE_UINT8: return __atomic_load_n(&self->u.u8, __ATOMIC_SEQ_CST);
    case DIST_CTYPE_DOUBLE: return (int64_t)dist_value_get_double(self);
    default: return __atomic_load_n(&self->u.i64, __ATOMIC_SEQ_CST);
    }
}

void dist_value_set_int(dist_value_t *self, int64_t v)
{
    switch (self->type) {
    case DIST_CTYPE_INT32: __atomic_store_n(&self->u.i32, (int32_t)v, __ATOMIC_SEQ_CST); break;
    case DIST_CTYPE_UINT8: __atomic_store_n(&self->u.u8, (uint8_t)v, __ATOMIC_SEQ_CST); break;
    case DIST_CTYPE_DOUBLE: dist_value_set_double(self, (double)v); break;
    default: __atomic_store_n(&self->u.i64, v, __ATOMIC_SEQ_CST); break;
    }
}

static double s_bits_to_double(uint64_t bits)
{
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static uint64_t s_double_to_bits(double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    return bits;
}

double dist_value_get_double(const dist_value_t *self)
{
    if (self->type != DIST_CTYPE_DOUBLE)
        return (double)dist_value_get_int(self);
    return s_bits_to_double(__atomic_load_n(&self->u.bits, __ATOMIC_SEQ_CST));
}

void dist_value_set_double(dist_value_t *self, double v)
{
    if (self->type != DIST_CTYPE_DOUBLE)
        dist_value_set_int(self, (int64_t)v);
    else
        __atomic_store_n(&self->u.bits, s_double_to_bits(v), __ATOMIC_SEQ_CST);
}

int64_t dist_value_add(dist_value_t *self, int64_t delta)
{
    switch (self->type) {
    case DIST_CTYPE_INT32:
        return __atomic_add_fetch(&self->u.i32, (int32_t)delta, __ATOMIC_SEQ_CST);
    case DIST_CTYPE_UINT8:
        return __atomic_add_fetch(&self->u.u8, (uint8_t)delta, __ATOMIC_SEQ_CST);
    case DIST_CTYPE_DOUBLE: {
        /* No atomic add for doubles: compare-and-swap the bits. */
        uint64_t old = __atomic_load_n(&self->u.bits, __ATOMIC_SEQ_CST), next;
        do
            next = s_double_to_bits(s_bits_to_double(old) + (double)delta);
        while (!__atomic_compare_exchange_n(&self->u.bits, &old, next, true, __ATOMIC_SEQ_CST,
                                            __ATOMIC_SEQ_CST));
        return (int64_t)s_bits_to_double(next);
    }
    default:
        return __atomic_add_fetch(&self->u.i64, delta, __ATOMIC_SEQ_CST);
    }
}

/* ---- Array -------------------------------------------------------------- */

struct dist_array {
    dist_ctype_t type;
    bool has_lock;
    size_t length;
    size_t map_len;
    struct dist_lock lock;
    _Alignas(64) unsigned char data[];
};

dist_array_t *dist_array_new(dist_ctype_t type, size_t length, const void *init, bool lock)
{
    size_t item = dist_ctype_size(type);
    if (item == 0 || length == 0 || length > (SIZE_MAX - sizeof(struct dist_array)) / item) {
        errno = EINVAL;
        return NULL;
    }
    size_t map_len = sizeof(struct dist_array) + length * item;
    dist_array_t *a = dist__shared_map(map_len);
    if (!a)
        return NULL;
    a->type = type;
    a->has_lock = lock;
    a->length = length;
    a->map_len = map_len;
    if (init)
        memcpy(a->data, init, length * item);
    return lock ? dist__shared_with_lock(a, map_len, &a->lock) : a;
}

void dist_array_destroy(dist_array_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_array_t *a = *self_p;
    if (a->has_lock)
        dist__lock_drop(&a->lock);
    dist__shared_unmap(a, a->map_len);
    *self_p = NULL;
}

dist_lock_t *dist_array_lock(dist_array_t *self) { return self->has_lock ? &self->lock : NULL; }
dist_ctype_t dist_array_type(const dist_array_t *self) { return self->type; }
size_t dist_array_length(const dist_array_t *self) { return self->length; }
size_t dist_array_size(const dist_array_t *self) { return self->length * dist_ctype_size(self->type); }
void *dist_array_data(dist_array_t *self) { return self->data; }

int64_t *dist_array_int64(dist_array_t *self)
{
    return self->type == DIST_CTYPE_INT64 ? (int64_t *)(void *)self->data : NULL;
}

int32_t *dist_array_int32(dist_array_t *self)
{
    return self->type == DIST_CTYPE_INT32 ? (int32_t *)(void *)self->data : NULL;
}

uint8_t *dist_array_uint8(dist_array_t *self)
{
    return self->type == DIST_CTYPE_UINT8 || self->type == DIST_CTYPE_BYTES ? self->data : NULL;
}

double *dist_array_double(dist_array_t *self)
{
    return self->type == DIST_CTYPE_DOUBLE ? (double *)(void *)self->data : NULL;
}

/* ---- SharedMemory ------------------------------------------------------- */

struct dist_shm {
    char *name;      /* with the leading '/' */
    void *data;
    size_t size;
    pid_t owner_pid; /* the creating process; 0 for handles from open */
    bool unlinked;
};

/* "/name" from a user name with or without its '/', or NULL (EINVAL/ENOMEM). */
static char *s_shm_name(const char *name)
{
    if (name && name[0] == '/')
        name++;
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > DIST_SHM_NAME_MAX || strchr(name, '/') || !strcmp(name, ".") ||
        !strcmp(name, "..")) {
        errno = EINVAL;
        return NULL;
    }
    char *full = malloc(n + 2);
    if (full) {
        full[0] = '/';
        memcpy(full + 1, name, n + 1);
    }
    return full;
}

static dist_shm_t *s_shm_map(char *name, int fd, size_t size, pid_t owner)
{
    void *data = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    dist_shm_t *s = data == MAP_FAILED ? NULL : malloc(sizeof *s);
    if (!s) {
        int e = errno;
        if (data != MAP_FAILED)
            munmap(data, size);
        errno = e;
        return NULL;
    }
    *s = (dist_shm_t){ .name = name, .data = data, .size = size, .owner_pid = owner };
    return s;
}

/* Creates the object exclusively: fd, or -1 with errno. When `name` is
 * NULL, tries fresh names until one is free. */
static int s_shm_create(const char *name, char **full_out)
{
    static atomic_uint s_seq;
    for (int attempt = 0; attempt < 100; attempt++) {
        char gen[64];
        if (!name)
            snprintf(gen, sizeof gen, "dist_%d_%u_%llx", (int)getpid(), atomic_fetch_add(&s_seq, 1),
                     (unsigned long long)dist__now_ns());
        char *full = s_shm_name(name ? name : gen);
        if (!full)
            return -1;
        int fd = shm_open(full, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            *full_out = full;
            return fd;
        }
        int e = errno;
        free(full);
        errno = e;
        if (name || e != EEXIST)
            return -1;
    }
    return -1;
}

dist_shm_t *dist_shm_new(const char *name, size_t size)
{
    if (size == 0 || size > (size_t)INT64_MAX) {
        errno = EINVAL;
        return NULL;
    }
    char *full = NULL;
    int fd = s_shm_create(name, &full);
    if (fd < 0)
        return NULL;
    /* Reserve the pages now: a tmpfs that is too small then fails here with
     * ENOSPC, instead of killing with SIGBUS whoever touches the memory. */
    int r = ftruncate(fd, (off_t)size);
    if (r == 0 && (r = fallocate(fd, 0, 0, (off_t)size)) < 0 &&
        (errno == EOPNOTSUPP || errno == ENOSYS))
        r = 0;
    dist_shm_t *s = r == 0 ? s_shm_map(full, fd, size, getpid()) : NULL;
    int e = errno;
    close(fd);
    if (!s) {
        shm_unlink(full);
        free(full);
        errno = e;
    }
    return s;
}

dist_shm_t *dist_shm_open(const char *name)
{
    char *full = s_shm_name(name);
    if (!full)
        return NULL;
    int fd = shm_open(full, O_RDWR | O_CLOEXEC, 0);
    struct stat st;
    dist_shm_t *s = NULL;
    if (fd >= 0 && fstat(fd, &st) == 0) {
        if (st.st_size <= 0)
            errno = EINVAL;
        else
            s = s_shm_map(full, fd, (size_t)st.st_size, 0);
    }
    int e = errno;
    if (fd >= 0)
        close(fd);
    if (!s) {
        free(full);
        errno = e;
    }
    return s;
}

int dist_shm_unlink(dist_shm_t *self)
{
    if (!self)
        return DIST_EINVAL;
    if (self->owner_pid != getpid())
        return DIST_ESTATE;
    if (self->unlinked)
        return 0;
    if (shm_unlink(self->name) < 0 && errno != ENOENT)
        return -errno;
    self->unlinked = true;
    return 0;
}

void dist_shm_destroy(dist_shm_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    dist_shm_t *s = *self_p;
    dist_shm_unlink(s); /* a no-op for handles that do not own the name */
    munmap(s->data, s->size);
    free(s->name);
    free(s);
    *self_p = NULL;
}

void *dist_shm_data(dist_shm_t *self) { return self->data; }
size_t dist_shm_size(const dist_shm_t *self) { return self->size; }
const char *dist_shm_name(const dist_shm_t *self) { return self->name; }

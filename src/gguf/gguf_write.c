/* GGUF streaming writer (contract in gguf.h).
 *
 * Declarations (key/values, tensor infos) are kept in memory; each key/value
 * is serialised at once into its own small buffer (u32 type + payload), so
 * begin_data() only concatenates.  Tensor data is never held: write() passes
 * the caller's bytes through a fixed 1 MiB buffer to PATH.tmp, inserting the
 * zero padding after each tensor.  finish() fsyncs, renames PATH.tmp to PATH
 * and fsyncs the directory, so PATH is either absent/old or complete.
 *
 * Errors are sticky (w->failed): the first message is kept and every later
 * call returns -1, so a converter can check once at the end if it likes. */
#include "gguf/gguf.h"

#include "quant/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WBUF_SIZE (1u << 20)

typedef struct wkv {
    char *key;
    size_t keylen;
    uint8_t *val; /* u32 type + payload, as in the file */
    size_t vlen;
} wkv;

typedef struct wtensor {
    char *name;
    size_t namelen;
    int type;
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint64_t nbytes, offset;
} wtensor;

enum { W_DECL, W_DATA, W_DONE };

struct gguf_writer {
    char *path, *tmp;
    int fd;
    int state;
    bool failed;
    ds4_err err;
    uint32_t alignment;
    wkv *kv;
    size_t n_kv, cap_kv;
    wtensor *t;
    size_t n_t, cap_t;
    size_t cur;        /* tensor being written */
    uint64_t cur_done; /* its bytes so far */
    uint8_t *buf;
    size_t buf_n;
};

static int fail(gguf_writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(gguf_writer *w, const char *fmt, ...) {
    if (w->failed) return -1; /* keep the first message */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err.msg, sizeof w->err.msg, fmt, ap);
    va_end(ap);
    w->failed = true;
    return -1;
}

const char *gguf_writer_error(const gguf_writer *w) {
    return w && w->failed ? w->err.msg : "";
}

gguf_writer *gguf_writer_open(const char *path, ds4_err *err) {
    gguf_writer *w = calloc(1, sizeof *w);
    size_t n = strlen(path);
    if (w) {
        w->path = strdup(path);
        w->tmp = malloc(n + 5);
        w->buf = malloc(WBUF_SIZE);
    }
    if (!w || !w->path || !w->tmp || !w->buf) {
        ds4_err_set(err, "out of memory");
        if (w) { free(w->path); free(w->tmp); free(w->buf); free(w); }
        return NULL;
    }
    memcpy(w->tmp, path, n);
    memcpy(w->tmp + n, ".tmp", 5);
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        ds4_err_set(err, "%s: cannot create: %s", w->tmp, strerror(errno));
        free(w->path); free(w->tmp); free(w->buf); free(w);
        return NULL;
    }
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    w->state = W_DECL;
    return w;
}

/* ---- output ---- */

static int raw_write(gguf_writer *w, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t k = write(w->fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return fail(w, "%s: write: %s", w->tmp, strerror(errno));
        }
        if (k == 0) return fail(w, "%s: write returned 0", w->tmp);
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int flush(gguf_writer *w) {
    if (w->buf_n == 0) return 0;
    size_t n = w->buf_n;
    w->buf_n = 0;
    return raw_write(w, w->buf, n);
}

static int out(gguf_writer *w, const void *data, size_t n) {
    const uint8_t *p = data;
    if (n >= WBUF_SIZE) { /* large pieces bypass the buffer */
        if (flush(w)) return -1;
        return raw_write(w, p, n);
    }
    if (n > WBUF_SIZE - w->buf_n && flush(w)) return -1;
    memcpy(w->buf + w->buf_n, p, n);
    w->buf_n += n;
    return 0;
}

static int out_zeros(gguf_writer *w, uint64_t n) {
    static const uint8_t z[256];
    while (n > 0) {
        size_t k = n < sizeof z ? (size_t)n : sizeof z;
        if (out(w, z, k)) return -1;
        n -= k;
    }
    return 0;
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static int out32(gguf_writer *w, uint32_t v) { uint8_t b[4]; put32(b, v); return out(w, b, 4); }
static int out64(gguf_writer *w, uint64_t v) { uint8_t b[8]; put64(b, v); return out(w, b, 8); }

/* ---- declarations ---- */

static int check_decl(gguf_writer *w, const char *what) {
    if (w->failed) return -1;
    if (w->state != W_DECL) return fail(w, "%s after gguf_writer_begin_data", what);
    return 0;
}

static wkv *find_key(gguf_writer *w, const char *key, size_t len) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (w->kv[i].keylen == len && memcmp(w->kv[i].key, key, len) == 0) return &w->kv[i];
    return NULL;
}

/* general.alignment decides the data layout, so whichever way it is added,
 * the writer's alignment follows it. */
static int note_alignment(gguf_writer *w, const uint8_t *val, size_t vlen) {
    uint32_t t = (uint32_t)val[0] | (uint32_t)val[1] << 8 | (uint32_t)val[2] << 16 | (uint32_t)val[3] << 24;
    uint64_t v = 0;
    size_t es = gguf_vtype_size((enum gguf_vtype)t);
    bool is_int = t <= GGUF_TYPE_INT32 || t == GGUF_TYPE_UINT64 || t == GGUF_TYPE_INT64;
    if (!is_int || vlen != 4 + es)
        return fail(w, "general.alignment has type %s, expected u32", gguf_type_name((enum gguf_vtype)t));
    for (size_t i = 0; i < es; i++) v |= (uint64_t)val[4 + i] << (8 * i);
    bool neg = (t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 || t == GGUF_TYPE_INT64) &&
               (val[4 + es - 1] & 0x80);
    if (neg || v == 0 || v > 0x80000000u || (v & (v - 1)))
        return fail(w, "general.alignment = %s%" PRIu64 " is not a power of two", neg ? "-" : "", v);
    w->alignment = (uint32_t)v;
    return 0;
}

/* Takes ownership of val (u32 type + payload). */
static int add_kv_raw(gguf_writer *w, const char *key, size_t keylen, uint8_t *val, size_t vlen) {
    if (find_key(w, key, keylen)) {
        free(val);
        return fail(w, "duplicate key '%.*s'", (int)(keylen < 200 ? keylen : 200), key);
    }
    if (keylen == 17 && memcmp(key, "general.alignment", 17) == 0 && note_alignment(w, val, vlen)) {
        free(val);
        return -1;
    }
    if (w->n_kv == w->cap_kv) {
        size_t nc = w->cap_kv ? w->cap_kv * 2 : 32;
        wkv *p = realloc(w->kv, nc * sizeof *p);
        if (!p) { free(val); return fail(w, "out of memory"); }
        w->kv = p;
        w->cap_kv = nc;
    }
    char *k = malloc(keylen + 1);
    if (!k) { free(val); return fail(w, "out of memory"); }
    memcpy(k, key, keylen);
    k[keylen] = 0;
    w->kv[w->n_kv++] = (wkv){k, keylen, val, vlen};
    return 0;
}

/* Allocates the value buffer with its type and room for `payload` bytes. */
static uint8_t *new_val(gguf_writer *w, enum gguf_vtype t, uint64_t payload, size_t *vlen) {
    if (payload > SIZE_MAX - 4) { fail(w, "value too large"); return NULL; }
    uint8_t *v = malloc((size_t)payload + 4);
    if (!v) { fail(w, "out of memory for a %" PRIu64 "-byte value", payload); return NULL; }
    put32(v, (uint32_t)t);
    *vlen = (size_t)payload + 4;
    return v;
}

static bool is_scalar_num(enum gguf_vtype t) {
    return (unsigned)t < GGUF_TYPE_COUNT && t != GGUF_TYPE_STRING && t != GGUF_TYPE_ARRAY;
}

static int check_key(gguf_writer *w, const char *key) {
    if (check_decl(w, "adding a key")) return -1;
    if (!key || !*key) return fail(w, "empty or NULL key");
    return 0;
}

int gguf_writer_add_scalar(gguf_writer *w, const char *key, enum gguf_vtype type, const void *v) {
    if (check_key(w, key)) return -1;
    if (!is_scalar_num(type) || !v)
        return fail(w, "key '%s': add_scalar needs a numeric or bool type and a value, got %s", key,
                    gguf_type_name(type));
    size_t es = gguf_vtype_size(type), vlen;
    const uint8_t *src = v;
    if (type == GGUF_TYPE_BOOL && src[0] > 1)
        return fail(w, "key '%s': bool value %u is not 0 or 1", key, src[0]);
    uint8_t *val = new_val(w, type, es, &vlen);
    if (!val) return -1;
    /* Host values to little-endian bytes. */
    uint64_t u = 0;
    switch (es) {
    case 1: u = src[0]; break;
    case 2: { uint16_t x; memcpy(&x, v, 2); u = x; break; }
    case 4: { uint32_t x; memcpy(&x, v, 4); u = x; break; }
    default: memcpy(&u, v, 8); break;
    }
    for (size_t i = 0; i < es; i++) val[4 + i] = (uint8_t)(u >> (8 * i));
    return add_kv_raw(w, key, strlen(key), val, vlen);
}

int gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v) {
    return gguf_writer_add_scalar(w, key, GGUF_TYPE_UINT32, &v);
}
int gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v) {
    return gguf_writer_add_scalar(w, key, GGUF_TYPE_INT32, &v);
}
int gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v) {
    return gguf_writer_add_scalar(w, key, GGUF_TYPE_UINT64, &v);
}
int gguf_writer_add_f32(gguf_writer *w, const char *key, float v) {
    return gguf_writer_add_scalar(w, key, GGUF_TYPE_FLOAT32, &v);
}
int gguf_writer_add_bool(gguf_writer *w, const char *key, bool v) {
    uint8_t b = v ? 1 : 0;
    return gguf_writer_add_scalar(w, key, GGUF_TYPE_BOOL, &b);
}

int gguf_writer_add_str(gguf_writer *w, const char *key, const char *v) {
    if (check_key(w, key)) return -1;
    if (!v) return fail(w, "key '%s': NULL string", key);
    size_t n = strlen(v), vlen;
    uint8_t *val = new_val(w, GGUF_TYPE_STRING, 8 + (uint64_t)n, &vlen);
    if (!val) return -1;
    put64(val + 4, n);
    memcpy(val + 12, v, n);
    return add_kv_raw(w, key, strlen(key), val, vlen);
}

/* Array payload: u32 elem type + u64 n + element bytes. */
static uint8_t *arr_val(gguf_writer *w, enum gguf_vtype et, uint64_t n, uint64_t bytes, size_t *vlen) {
    if (bytes > UINT64_MAX - 12) { fail(w, "array too large"); return NULL; }
    uint8_t *val = new_val(w, GGUF_TYPE_ARRAY, 12 + bytes, vlen);
    if (!val) return NULL;
    put32(val + 4, (uint32_t)et);
    put64(val + 8, n);
    return val;
}

int gguf_writer_add_arr(gguf_writer *w, const char *key, enum gguf_vtype elem_type, const void *data, uint64_t n) {
    if (check_key(w, key)) return -1;
    if (!is_scalar_num(elem_type))
        return fail(w, "key '%s': add_arr needs a numeric or bool element type, got %s (use add_arr_str for strings)",
                    key, gguf_type_name(elem_type));
    size_t es = gguf_vtype_size(elem_type), vlen;
    if (n > 0 && !data) return fail(w, "key '%s': NULL data for %" PRIu64 " elements", key, n);
    if (n > (UINT64_MAX - 12) / es) return fail(w, "key '%s': array of %" PRIu64 " elements overflows", key, n);
    const uint8_t *src = data;
    if (elem_type == GGUF_TYPE_BOOL)
        for (uint64_t i = 0; i < n; i++)
            if (src[i] > 1) return fail(w, "key '%s': bool element %" PRIu64 " is %u, not 0 or 1", key, i, src[i]);
    uint8_t *val = arr_val(w, elem_type, n, n * es, &vlen);
    if (!val) return -1;
    if (n) memcpy(val + 16, data, (size_t)(n * es)); /* host is little-endian (x86-64, arm64) */
    return add_kv_raw(w, key, strlen(key), val, vlen);
}

static int add_strs(gguf_writer *w, const char *key, size_t keylen, uint64_t n, const char *const *cs,
                    const gguf_str *gs) {
    uint64_t bytes = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (cs && !cs[i]) return fail(w, "key '%.*s': string %" PRIu64 " is NULL", (int)keylen, key, i);
        uint64_t l = cs ? strlen(cs[i]) : gs[i].len;
        if (__builtin_add_overflow(bytes, 8 + l, &bytes)) return fail(w, "key '%.*s': array too large", (int)keylen, key);
    }
    size_t vlen;
    uint8_t *val = arr_val(w, GGUF_TYPE_STRING, n, bytes, &vlen);
    if (!val) return -1;
    uint8_t *p = val + 16;
    for (uint64_t i = 0; i < n; i++) {
        size_t l = cs ? strlen(cs[i]) : (size_t)gs[i].len;
        put64(p, l);
        if (l) memcpy(p + 8, cs ? cs[i] : gs[i].ptr, l);
        p += 8 + l;
    }
    return add_kv_raw(w, key, keylen, val, vlen);
}

int gguf_writer_add_arr_str(gguf_writer *w, const char *key, const char *const *strs, uint64_t n) {
    if (check_key(w, key)) return -1;
    if (n > 0 && !strs) return fail(w, "key '%s': NULL string list", key);
    return add_strs(w, key, strlen(key), n, strs, NULL);
}

int gguf_writer_copy_kv(gguf_writer *w, const gguf_kv *kv) {
    if (check_decl(w, "adding a key")) return -1;
    if (!kv || kv->key.len == 0) return fail(w, "copy_kv: NULL kv or empty key");
    const char *key = kv->key.ptr;
    size_t kl = (size_t)kv->key.len, vlen;
    int pk = (int)(kl < 200 ? kl : 200);
    uint8_t *val;
    if (kv->type == GGUF_TYPE_STRING) {
        uint64_t n = 0;
        for (int i = 0; i < 8; i++) n |= (uint64_t)kv->val[i] << (8 * i);
        if (!(val = new_val(w, kv->type, 8 + n, &vlen))) return -1;
        memcpy(val + 4, kv->val, (size_t)(8 + n));
    } else if (kv->type == GGUF_TYPE_ARRAY) {
        if (kv->arr_type == GGUF_TYPE_STRING) {
            if (kv->arr_n > 0 && !kv->strs) return fail(w, "key '%.*s': string array without a table", pk, key);
            return add_strs(w, key, kl, kv->arr_n, NULL, kv->strs);
        }
        if (!is_scalar_num(kv->arr_type))
            return fail(w, "key '%.*s': cannot copy an array of %s", pk, key, gguf_type_name(kv->arr_type));
        size_t es = gguf_vtype_size(kv->arr_type);
        if (kv->arr_n > (UINT64_MAX - 12) / es) return fail(w, "key '%.*s': array too large", pk, key);
        if (!(val = arr_val(w, kv->arr_type, kv->arr_n, kv->arr_n * es, &vlen))) return -1;
        if (kv->arr_n) memcpy(val + 16, kv->val, (size_t)(kv->arr_n * es));
    } else if (is_scalar_num(kv->type)) {
        size_t es = gguf_vtype_size(kv->type);
        if (!(val = new_val(w, kv->type, es, &vlen))) return -1;
        memcpy(val + 4, kv->val, es);
    } else {
        return fail(w, "key '%.*s': invalid value type %d", pk, key, (int)kv->type);
    }
    return add_kv_raw(w, key, kl, val, vlen);
}

void gguf_writer_set_alignment(gguf_writer *w, uint32_t alignment) {
    if (check_decl(w, "set_alignment")) return;
    if (alignment == 0 || (alignment & (alignment - 1))) {
        fail(w, "alignment %u is not a power of two", alignment);
        return;
    }
    wkv *k = find_key(w, "general.alignment", 17);
    if (k) { /* replace a copied value in place, keeping the key's position */
        uint8_t *v = realloc(k->val, 8);
        if (!v) { fail(w, "out of memory"); return; }
        put32(v, GGUF_TYPE_UINT32);
        put32(v + 4, alignment);
        k->val = v;
        k->vlen = 8;
        w->alignment = alignment;
        return;
    }
    gguf_writer_add_u32(w, "general.alignment", alignment);
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, int type, uint32_t n_dims, const int64_t *ne) {
    if (check_decl(w, "adding a tensor")) return -1;
    if (!name || !*name) return fail(w, "empty or NULL tensor name");
    size_t nl = strlen(name);
    if (n_dims > 0 && !ne) return fail(w, "tensor '%s': NULL shape", name);
    for (size_t i = 0; i < w->n_t; i++)
        if (w->t[i].namelen == nl && memcmp(w->t[i].name, name, nl) == 0)
            return fail(w, "duplicate tensor name '%s'", name);
    wtensor t = {.type = type, .n_dims = n_dims};
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t.ne[d] = 1;
    if (n_dims > GGUF_MAX_DIMS)
        return fail(w, "tensor '%s': n_dims = %u exceeds the maximum of %d", name, n_dims, GGUF_MAX_DIMS);
    for (uint32_t d = 0; d < n_dims; d++) t.ne[d] = ne[d];
    ds4_err e;
    if (gguf_tensor_nbytes(type, n_dims, t.ne, &t.nbytes, &e)) return fail(w, "tensor '%s': %s", name, e.msg);
    if (w->n_t == w->cap_t) {
        size_t nc = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *p = realloc(w->t, nc * sizeof *p);
        if (!p) return fail(w, "out of memory");
        w->t = p;
        w->cap_t = nc;
    }
    if (!(t.name = strdup(name))) return fail(w, "out of memory");
    t.namelen = nl;
    w->t[w->n_t] = t;
    return (int)w->n_t++;
}

/* ---- data ---- */

static uint64_t pad_of(uint64_t n, uint32_t a) { return (a - n % a) % a; }

int gguf_writer_begin_data(gguf_writer *w) {
    if (check_decl(w, "begin_data")) return -1;
    uint64_t off = 0, hdr = 24;
    for (size_t i = 0; i < w->n_t; i++) {
        w->t[i].offset = off;
        uint64_t p = w->t[i].nbytes + pad_of(w->t[i].nbytes, w->alignment);
        if (__builtin_add_overflow(off, p, &off)) return fail(w, "total tensor data size overflows");
    }
    if (out32(w, GGUF_MAGIC) || out32(w, 3) || out64(w, w->n_t) || out64(w, w->n_kv)) return -1;
    for (size_t i = 0; i < w->n_kv; i++) {
        const wkv *k = &w->kv[i];
        if (out64(w, k->keylen) || out(w, k->key, k->keylen) || out(w, k->val, k->vlen)) return -1;
        hdr += 8 + k->keylen + k->vlen;
    }
    for (size_t i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        if (out64(w, t->namelen) || out(w, t->name, t->namelen) || out32(w, t->n_dims)) return -1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            if (out64(w, (uint64_t)t->ne[d])) return -1;
        if (out32(w, (uint32_t)t->type) || out64(w, t->offset)) return -1;
        hdr += 8 + t->namelen + 4 + 8ull * t->n_dims + 4 + 8;
    }
    if (out_zeros(w, pad_of(hdr, w->alignment))) return -1;
    w->state = W_DATA;
    w->cur = 0;
    w->cur_done = 0;
    return 0;
}

int gguf_writer_write(gguf_writer *w, const void *data, size_t n) {
    if (w->failed) return -1;
    if (w->state != W_DATA)
        return fail(w, w->state == W_DECL ? "gguf_writer_write before gguf_writer_begin_data"
                                          : "gguf_writer_write after gguf_writer_finish");
    const uint8_t *p = data;
    while (n > 0) {
        if (w->cur >= w->n_t)
            return fail(w, "too many bytes: all %zu tensors are complete but %zu more bytes were written", w->n_t, n);
        wtensor *t = &w->t[w->cur];
        uint64_t left = t->nbytes - w->cur_done;
        size_t k = n < left ? n : (size_t)left;
        if (out(w, p, k)) return -1;
        p += k;
        n -= k;
        w->cur_done += k;
        if (w->cur_done == t->nbytes) {
            if (out_zeros(w, pad_of(t->nbytes, w->alignment))) return -1;
            w->cur++;
            w->cur_done = 0;
        }
    }
    return 0;
}

int gguf_writer_finish(gguf_writer *w) {
    if (w->failed) return -1;
    if (w->state == W_DONE) return fail(w, "gguf_writer_finish called twice");
    if (w->state == W_DECL && gguf_writer_begin_data(w)) return -1;
    if (w->cur < w->n_t) {
        const wtensor *t = &w->t[w->cur];
        return fail(w, "tensor '%s' (#%zu of %zu) got %" PRIu64 " of %" PRIu64 " bytes; every tensor must be written"
                    " in full before finish", t->name, w->cur, w->n_t, w->cur_done, t->nbytes);
    }
    if (flush(w)) return -1;
    if (fsync(w->fd) != 0) return fail(w, "%s: fsync: %s", w->tmp, strerror(errno));
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0) return fail(w, "%s: close: %s", w->tmp, strerror(errno));
    if (rename(w->tmp, w->path) != 0)
        return fail(w, "rename %s -> %s: %s", w->tmp, w->path, strerror(errno));
    w->state = W_DONE;
    /* Make the rename durable: fsync the directory (EINVAL: not supported there). */
    char *slash = strrchr(w->path, '/');
    char dir[4096];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else snprintf(dir, sizeof dir, "%.*s", slash == w->path ? 1 : (int)(slash - w->path), w->path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        int rc = fsync(dfd);
        int e = errno;
        close(dfd);
        if (rc != 0 && e != EINVAL) return fail(w, "%s: fsync of directory: %s", dir, strerror(e));
    }
    return 0;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    if (w->fd >= 0) close(w->fd);
    if (w->state != W_DONE) unlink(w->tmp);
    for (size_t i = 0; i < w->n_kv; i++) { free(w->kv[i].key); free(w->kv[i].val); }
    for (size_t i = 0; i < w->n_t; i++) free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w->buf);
    free(w->path);
    free(w->tmp);
    free(w);
}

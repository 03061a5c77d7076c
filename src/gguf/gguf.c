/* GGUF reader: mmap plus a validating one-pass parser (contract in gguf.h).
 *
 * Layout (all little-endian):
 *   u32 magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
 *   n_kv x { str key | u32 vtype | value }        str = u64 len + bytes
 *       value: scalar bytes | str | u32 elem_type + u64 n + n elements
 *   n_tensors x { str name | u32 n_dims | u64 ne[n_dims] | u32 type | u64 offset }
 *   zero padding to general.alignment, then the data section; each tensor's
 *   offset is relative to the data section and a multiple of the alignment.
 *
 * Every read goes through the cursor `rd`, which checks the bytes left first,
 * so nothing from the file is used before it is bounded by the file length.
 * The kv and tensor arrays grow as entries are really parsed, never from the
 * claimed counts, so a lying header cannot make us allocate much.  The hash
 * indexes are built after parsing, from the real counts, and detect
 * duplicates as a side effect. */
#include "gguf/gguf.h"

#include "quant/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct gguf_file {
    const uint8_t *base;
    size_t size;
    bool mapped;
    char *path;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    gguf_kv *kv;
    int64_t n_kv, cap_kv;
    gguf_tensor *t;
    int64_t n_t, cap_t;
    /* Open addressing, linear probing; a slot holds index + 1, 0 = empty. */
    uint64_t *kv_slots, *t_slots;
    uint64_t kv_mask, t_mask;
};

/* Longest name we print in a message; names come from the file. */
#define NAME_MAX_PRINT 200
#define PN(s) (int)((s).len < NAME_MAX_PRINT ? (s).len : NAME_MAX_PRINT), (s).ptr

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

static const char *const vtype_names[GGUF_TYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};
static const uint8_t vtype_sizes[GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *gguf_type_name(enum gguf_vtype t) {
    return (unsigned)t < GGUF_TYPE_COUNT ? vtype_names[t] : "invalid";
}

size_t gguf_vtype_size(enum gguf_vtype t) {
    return (unsigned)t < GGUF_TYPE_COUNT ? vtype_sizes[t] : 0;
}

bool gguf_str_eq(gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

char *gguf_str_copy(gguf_str s, char *buf, size_t buflen) {
    if (!buf || buflen == 0) return buf;
    size_t n = s.len < buflen - 1 ? (size_t)s.len : buflen - 1;
    if (n) memcpy(buf, s.ptr, n);
    buf[n] = 0;
    return buf;
}

int gguf_tensor_nbytes(int type, uint32_t n_dims, const int64_t *ne, uint64_t *out, ds4_err *err) {
    if (n_dims > GGUF_MAX_DIMS)
        return ds4_err_set(err, "n_dims = %u exceeds the maximum of %d", n_dims, GGUF_MAX_DIMS);
    int64_t nel = 1;
    for (uint32_t i = 0; i < n_dims; i++) {
        if (ne[i] <= 0) return ds4_err_set(err, "ne[%u] = %" PRId64 " is not positive", i, ne[i]);
        if (__builtin_mul_overflow(nel, ne[i], &nel))
            return ds4_err_set(err, "shape overflows: element count exceeds 2^63");
    }
    const ds4_type_traits *tr = ds4_type_traits_get(type);
    if (!tr || tr->blck <= 0 || tr->size == 0)
        return ds4_err_set(err, "unknown or unsupported tensor type id %d", type);
    int64_t ne0 = n_dims ? ne[0] : 1;
    if (ne0 % tr->blck)
        return ds4_err_set(err, "ne[0] = %" PRId64 " is not a multiple of the %s block size %" PRId64,
                           ne0, tr->name ? tr->name : "?", tr->blck);
    /* Bound the row size ourselves so ds4_row_size never sees an overflowing row. */
    if ((uint64_t)(ne0 / tr->blck) > (uint64_t)INT64_MAX / tr->size)
        return ds4_err_set(err, "shape overflows: byte size exceeds 2^63");
    size_t row = ds4_row_size(type, ne0);
    if (row == 0) return ds4_err_set(err, "ds4_row_size(%d, %" PRId64 ") = 0", type, ne0);
    uint64_t rows = (uint64_t)(nel / ne0), nb;
    if (__builtin_mul_overflow((uint64_t)row, rows, &nb) || nb > (uint64_t)INT64_MAX)
        return ds4_err_set(err, "shape overflows: byte size exceeds 2^63");
    *out = nb;
    return 0;
}

/* ---- bounds-checked cursor ---- */

typedef struct rd {
    const uint8_t *p;
    uint64_t size, pos;
    const char *what; /* section being read, for truncation messages */
    ds4_err *err;
} rd;

static int need(rd *r, uint64_t n) {
    if (n > r->size - r->pos)
        return ds4_err_set(r->err, "file truncated: %s ends at byte %" PRIu64 " but file has %" PRIu64 " bytes",
                           r->what, r->pos + n, r->size);
    return 0;
}

static int rd_u32(rd *r, uint32_t *v) {
    if (need(r, 4)) return -1;
    *v = le32(r->p + r->pos);
    r->pos += 4;
    return 0;
}

static int rd_u64(rd *r, uint64_t *v) {
    if (need(r, 8)) return -1;
    *v = le64(r->p + r->pos);
    r->pos += 8;
    return 0;
}

static int rd_str(rd *r, gguf_str *s) {
    uint64_t len;
    if (rd_u64(r, &len)) return -1;
    if (len > r->size - r->pos)
        return ds4_err_set(r->err, "file truncated or corrupt: %s: string length %" PRIu64 " at byte %" PRIu64
                           " runs past end of file (%" PRIu64 " bytes)", r->what, len, r->pos - 8, r->size);
    s->ptr = (const char *)r->p + r->pos;
    s->len = len;
    r->pos += len;
    return 0;
}

/* Grows *arr (of elem bytes each) so index n fits; capacity doubles. */
static int grow(void **arr, int64_t *cap, int64_t n, size_t elem, ds4_err *err) {
    if (n < *cap) return 0;
    int64_t nc = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, (size_t)nc * elem);
    if (!p) return ds4_err_set(err, "out of memory");
    *arr = p;
    *cap = nc;
    return 0;
}

/* ---- hash index ---- */

static uint64_t hash_bytes(const void *p, uint64_t n) {
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (uint64_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* Builds an index over n names (name_at(i)); returns the index of the first
 * duplicate found in *dup (else -1). */
static int build_index(uint64_t **slots, uint64_t *mask, int64_t n, const void *items, size_t stride,
                       size_t name_off, int64_t *dup, ds4_err *err) {
    uint64_t cap = 16;
    while (cap < (uint64_t)n * 2) cap *= 2;
    *slots = calloc(cap, sizeof **slots);
    if (!*slots) return ds4_err_set(err, "out of memory");
    *mask = cap - 1;
    *dup = -1;
    for (int64_t i = 0; i < n; i++) {
        const gguf_str *s = (const gguf_str *)((const char *)items + (size_t)i * stride + name_off);
        uint64_t h = hash_bytes(s->ptr, s->len) & *mask;
        for (;; h = (h + 1) & *mask) {
            uint64_t v = (*slots)[h];
            if (!v) { (*slots)[h] = (uint64_t)i + 1; break; }
            const gguf_str *o = (const gguf_str *)((const char *)items + (size_t)(v - 1) * stride + name_off);
            if (o->len == s->len && memcmp(o->ptr, s->ptr, s->len) == 0) { *dup = i; return 0; }
        }
    }
    return 0;
}

static int64_t index_find(const uint64_t *slots, uint64_t mask, const void *items, size_t stride, size_t name_off,
                          const char *name) {
    if (!slots || !name) return -1;
    size_t n = strlen(name);
    for (uint64_t h = hash_bytes(name, n) & mask;; h = (h + 1) & mask) {
        uint64_t v = slots[h];
        if (!v) return -1;
        const gguf_str *o = (const gguf_str *)((const char *)items + (size_t)(v - 1) * stride + name_off);
        if (o->len == n && memcmp(o->ptr, name, n) == 0) return (int64_t)v - 1;
    }
}

/* ---- parsing ---- */

static bool valid_vtype(uint32_t t) { return t < GGUF_TYPE_COUNT; }

static int check_bools(rd *r, const gguf_kv *kv, const uint8_t *p, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (p[i] > 1)
            return ds4_err_set(r->err, "key '%.*s': bool value %u at byte %" PRIu64 " is not 0 or 1", PN(kv->key),
                               p[i], (uint64_t)(p + i - r->p));
    return 0;
}

static int parse_value(rd *r, gguf_kv *kv) {
    uint32_t t;
    if (rd_u32(r, &t)) return -1;
    if (!valid_vtype(t)) return ds4_err_set(r->err, "key '%.*s': unknown value type %u", PN(kv->key), t);
    kv->type = (enum gguf_vtype)t;
    kv->arr_type = 0;
    kv->arr_n = 0;
    kv->strs = NULL;
    kv->val = r->p + r->pos;
    if (t == GGUF_TYPE_STRING) {
        gguf_str s;
        return rd_str(r, &s);
    }
    if (t != GGUF_TYPE_ARRAY) {
        if (need(r, vtype_sizes[t])) return -1;
        r->pos += vtype_sizes[t];
        return t == GGUF_TYPE_BOOL ? check_bools(r, kv, kv->val, 1) : 0;
    }
    uint32_t et;
    uint64_t n;
    if (rd_u32(r, &et) || rd_u64(r, &n)) return -1;
    if (et == GGUF_TYPE_ARRAY) return ds4_err_set(r->err, "key '%.*s': nested arrays are not supported", PN(kv->key));
    if (!valid_vtype(et))
        return ds4_err_set(r->err, "key '%.*s': unknown array element type %u", PN(kv->key), et);
    kv->arr_type = (enum gguf_vtype)et;
    kv->arr_n = n;
    kv->val = r->p + r->pos;
    uint64_t left = r->size - r->pos;
    if (et == GGUF_TYPE_STRING) {
        /* Each string needs at least its 8-byte length. */
        if (n > left / 8)
            return ds4_err_set(r->err, "key '%.*s': array of %" PRIu64 " strings cannot fit in the %" PRIu64
                               " bytes left in the file", PN(kv->key), n, left);
        if (n == 0) return 0;
        gguf_str *strs = malloc((size_t)n * sizeof *strs);
        if (!strs) return ds4_err_set(r->err, "key '%.*s': out of memory for %" PRIu64 " strings", PN(kv->key), n);
        kv->strs = strs; /* owned by the file, freed in gguf_close */
        for (uint64_t i = 0; i < n; i++)
            if (rd_str(r, &strs[i])) return ds4_err_prefix(r->err, "key '%.*s' element %" PRIu64, PN(kv->key), i);
        return 0;
    }
    uint64_t es = vtype_sizes[et];
    if (n > left / es)
        return ds4_err_set(r->err, "key '%.*s': array of %" PRIu64 " %s elements runs past end of file (%" PRIu64
                           " bytes left)", PN(kv->key), n, vtype_names[et], left);
    r->pos += n * es;
    return et == GGUF_TYPE_BOOL ? check_bools(r, kv, kv->val, n) : 0;
}

/* Reads an integer-typed scalar at p as sign + magnitude; false if t is not an integer type. */
static bool read_int(enum gguf_vtype t, const uint8_t *p, bool *neg, uint64_t *mag) {
    int64_t s;
    switch (t) {
    case GGUF_TYPE_UINT8: *neg = false; *mag = p[0]; return true;
    case GGUF_TYPE_UINT16: *neg = false; *mag = le16(p); return true;
    case GGUF_TYPE_UINT32: *neg = false; *mag = le32(p); return true;
    case GGUF_TYPE_UINT64: *neg = false; *mag = le64(p); return true;
    case GGUF_TYPE_INT8: s = (int8_t)p[0]; break;
    case GGUF_TYPE_INT16: s = (int16_t)le16(p); break;
    case GGUF_TYPE_INT32: s = (int32_t)le32(p); break;
    case GGUF_TYPE_INT64: s = (int64_t)le64(p); break;
    default: return false;
    }
    *neg = s < 0;
    *mag = s < 0 ? 0 - (uint64_t)s : (uint64_t)s;
    return true;
}

static int cmp_pair(const void *a, const void *b) {
    const uint64_t *x = a, *y = b;
    if (x[0] != y[0]) return x[0] < y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

static int parse(gguf_file *f, ds4_err *err) {
    rd r = {.p = f->base, .size = f->size, .pos = 0, .what = "header", .err = err};
    if (f->size < 4) return ds4_err_set(err, "file too small (%zu bytes), not a GGUF file", f->size);
    uint32_t magic = le32(f->base);
    if (magic != GGUF_MAGIC) return ds4_err_set(err, "bad magic 0x%08x, not a GGUF file", magic);
    r.pos = 4;
    uint64_t n_t, n_kv;
    if (rd_u32(&r, &f->version)) return -1;
    if (f->version != 2 && f->version != 3) {
        if (f->version >= 0x01000000u && (f->version & 0xffffu) == 0)
            return ds4_err_set(err, "unsupported GGUF version %u (a big-endian file?)", f->version);
        return ds4_err_set(err, "unsupported GGUF version %u", f->version);
    }
    if (rd_u64(&r, &n_t) || rd_u64(&r, &n_kv)) return -1;
    /* Smallest kv: 8 (key len) + 4 (type) + 1 (u8); smallest tensor info: 8 + 4 + 4 + 8. */
    uint64_t left = f->size - r.pos;
    if (n_kv > left / 13)
        return ds4_err_set(err, "file truncated or corrupt: n_kv = %" PRIu64 " key/values cannot fit in the %" PRIu64
                           " bytes left after the header", n_kv, left);
    if (n_t > left / 24)
        return ds4_err_set(err, "file truncated or corrupt: n_tensors = %" PRIu64 " tensor infos cannot fit in the %"
                           PRIu64 " bytes left after the header", n_t, left);

    r.what = "metadata";
    for (uint64_t i = 0; i < n_kv; i++) {
        if (grow((void **)&f->kv, &f->cap_kv, f->n_kv, sizeof *f->kv, err)) return -1;
        gguf_kv *kv = &f->kv[f->n_kv];
        memset(kv, 0, sizeof *kv);
        f->n_kv++; /* counted now so gguf_close frees kv->strs on failure */
        if (rd_str(&r, &kv->key)) return ds4_err_prefix(err, "key #%" PRIu64, i);
        if (parse_value(&r, kv)) return -1;
    }
    int64_t dup;
    if (build_index(&f->kv_slots, &f->kv_mask, f->n_kv, f->kv, sizeof *f->kv, offsetof(gguf_kv, key), &dup, err))
        return -1;
    if (dup >= 0) return ds4_err_set(err, "duplicate key '%.*s'", PN(f->kv[dup].key));

    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *al = gguf_find_kv(f, "general.alignment");
    if (al) {
        bool neg;
        uint64_t v;
        if (al->type == GGUF_TYPE_ARRAY || !read_int(al->type, al->val, &neg, &v))
            return ds4_err_set(err, "general.alignment has type %s, expected an integer", gguf_type_name(al->type));
        if (neg || v == 0 || v > 0x80000000u || (v & (v - 1)))
            return ds4_err_set(err, "general.alignment = %s%" PRIu64 " is not a power of two", neg ? "-" : "", v);
        f->alignment = (uint32_t)v;
    }

    r.what = "tensor directory";
    if (n_t > (f->size - r.pos) / 24)
        return ds4_err_set(err, "file truncated or corrupt: n_tensors = %" PRIu64 " tensor infos cannot fit in the %"
                           PRIu64 " bytes left after the metadata", n_t, f->size - r.pos);
    for (uint64_t i = 0; i < n_t; i++) {
        if (grow((void **)&f->t, &f->cap_t, f->n_t, sizeof *f->t, err)) return -1;
        gguf_tensor *t = &f->t[f->n_t++];
        memset(t, 0, sizeof *t);
        if (rd_str(&r, &t->name)) return ds4_err_prefix(err, "tensor #%" PRIu64, i);
        if (rd_u32(&r, &t->n_dims)) return -1;
        if (t->n_dims > GGUF_MAX_DIMS)
            return ds4_err_set(err, "tensor '%.*s': n_dims = %u exceeds the maximum of %d", PN(t->name), t->n_dims,
                               GGUF_MAX_DIMS);
        for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            uint64_t v;
            if (rd_u64(&r, &v)) return -1;
            t->ne[d] = (int64_t)v;
        }
        uint32_t type;
        if (rd_u32(&r, &type) || rd_u64(&r, &t->offset)) return -1;
        t->type = (int)type;
        if (type > INT32_MAX) return ds4_err_set(err, "tensor '%.*s': unknown or unsupported tensor type id %u",
                                                 PN(t->name), type);
    }
    f->data_offset = (r.pos + f->alignment - 1) & ~(uint64_t)(f->alignment - 1);
    if (build_index(&f->t_slots, &f->t_mask, f->n_t, f->t, sizeof *f->t, offsetof(gguf_tensor, name), &dup, err))
        return -1;
    if (dup >= 0) return ds4_err_set(err, "duplicate tensor name '%.*s'", PN(f->t[dup].name));

    for (int64_t i = 0; i < f->n_t; i++) {
        gguf_tensor *t = &f->t[i];
        if (gguf_tensor_nbytes(t->type, t->n_dims, t->ne, &t->nbytes, err))
            return ds4_err_prefix(err, "tensor '%.*s'", PN(t->name));
        if (t->offset % f->alignment)
            return ds4_err_set(err, "tensor '%.*s': offset %" PRIu64 " is not a multiple of the alignment %u",
                               PN(t->name), t->offset, f->alignment);
        uint64_t a, b;
        if (__builtin_add_overflow(f->data_offset, t->offset, &a) || __builtin_add_overflow(a, t->nbytes, &b))
            return ds4_err_set(err, "tensor '%.*s': offset %" PRIu64 " + size %" PRIu64 " overflows", PN(t->name),
                               t->offset, t->nbytes);
        if (b > f->size)
            return ds4_err_set(err, "tensor '%.*s': data [%" PRIu64 ", %" PRIu64 ") past end of file (%zu bytes)",
                               PN(t->name), a, b, f->size);
        t->data = f->base + a;
    }
    /* Overlapping data means a corrupt directory; sort (offset, index) pairs. */
    if (f->n_t > 1) {
        uint64_t(*ord)[2] = malloc((size_t)f->n_t * sizeof *ord);
        if (!ord) return ds4_err_set(err, "out of memory");
        for (int64_t i = 0; i < f->n_t; i++) { ord[i][0] = f->t[i].offset; ord[i][1] = (uint64_t)i; }
        qsort(ord, (size_t)f->n_t, sizeof *ord, cmp_pair);
        for (int64_t i = 1; i < f->n_t; i++) {
            const gguf_tensor *p = &f->t[ord[i - 1][1]], *q = &f->t[ord[i][1]];
            if (p->offset + p->nbytes > q->offset) {
                ds4_err_set(err, "tensors '%.*s' and '%.*s' overlap: [%" PRIu64 ", %" PRIu64 ") and [%" PRIu64
                            ", ...) in the data section", PN(p->name), PN(q->name), p->offset, p->offset + p->nbytes,
                            q->offset);
                free(ord);
                return -1;
            }
        }
        free(ord);
    }
    return 0;
}

/* ---- open / close ---- */

static gguf_file *open_common(gguf_file *f, ds4_err *err) {
    if (parse(f, err)) {
        gguf_close(f);
        return NULL;
    }
    return f;
}

gguf_file *gguf_open_mem(const void *buf, size_t len, ds4_err *err) {
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) { ds4_err_set(err, "out of memory"); return NULL; }
    f->base = buf;
    f->size = buf ? len : 0;
    return open_common(f, err);
}

gguf_file *gguf_open(const char *path, ds4_err *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ds4_err_set(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        ds4_err_set(err, "%s: fstat: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        ds4_err_set(err, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        ds4_err_set(err, "%s: file too large to map (%lld bytes)", path, (long long)st.st_size);
        close(fd);
        return NULL;
    }
    gguf_file *f = calloc(1, sizeof *f);
    char *p = strdup(path);
    if (!f || !p) {
        free(f);
        free(p);
        close(fd);
        ds4_err_set(err, "out of memory");
        return NULL;
    }
    f->path = p;
    f->size = (size_t)st.st_size;
    if (f->size > 0) {
        void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            ds4_err_set(err, "%s: mmap of %zu bytes: %s", path, f->size, strerror(errno));
            close(fd);
            free(f->path);
            free(f);
            return NULL;
        }
        f->base = m;
        f->mapped = true;
    }
    close(fd); /* the mapping keeps the file alive */
    if (parse(f, err)) {
        ds4_err_prefix(err, "%s", path);
        gguf_close(f);
        return NULL;
    }
    return f;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    for (int64_t i = 0; i < f->n_kv; i++) free((void *)f->kv[i].strs);
    free(f->kv);
    free(f->t);
    free(f->kv_slots);
    free(f->t_slots);
    if (f->mapped) munmap((void *)f->base, f->size);
    free(f->path);
    free(f);
}

uint32_t gguf_version(const gguf_file *f) { return f->version; }
uint32_t gguf_alignment(const gguf_file *f) { return f->alignment; }
const char *gguf_path(const gguf_file *f) { return f->path ? f->path : "<memory>"; }
size_t gguf_file_size(const gguf_file *f) { return f->size; }
const void *gguf_base(const gguf_file *f) { return f->base; }
uint64_t gguf_data_offset(const gguf_file *f) { return f->data_offset; }

int64_t gguf_n_kv(const gguf_file *f) { return f->n_kv; }
const gguf_kv *gguf_kv_at(const gguf_file *f, int64_t i) {
    return i >= 0 && i < f->n_kv ? &f->kv[i] : NULL;
}
const gguf_kv *gguf_find_kv(const gguf_file *f, const char *key) {
    int64_t i = index_find(f->kv_slots, f->kv_mask, f->kv, sizeof *f->kv, offsetof(gguf_kv, key), key);
    return i < 0 ? NULL : &f->kv[i];
}

int64_t gguf_n_tensors(const gguf_file *f) { return f->n_t; }
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i) {
    return i >= 0 && i < f->n_t ? &f->t[i] : NULL;
}
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    int64_t i = index_find(f->t_slots, f->t_mask, f->t, sizeof *f->t, offsetof(gguf_tensor, name), name);
    return i < 0 ? NULL : &f->t[i];
}

/* ---- typed getters ---- */

/* Looks key up; -1 (missing) with a message, else 0. */
static int lookup(const gguf_file *f, const char *key, const gguf_kv **kv, ds4_err *err) {
    *kv = gguf_find_kv(f, key);
    if (!*kv) return ds4_err_set(err, "key '%s' not found", key);
    return 0;
}

static int wrong_type(const gguf_kv *kv, const char *key, const char *want, ds4_err *err) {
    if (kv->type == GGUF_TYPE_ARRAY)
        ds4_err_set(err, "key '%s' is an array of %s, expected %s", key, gguf_type_name(kv->arr_type), want);
    else
        ds4_err_set(err, "key '%s' has type %s, expected %s", key, gguf_type_name(kv->type), want);
    return -2;
}

/* Integer getter core: the value as sign + magnitude, or -1/-2. */
static int get_int(const gguf_file *f, const char *key, bool *neg, uint64_t *mag, const gguf_kv **kvp,
                   ds4_err *err) {
    const gguf_kv *kv;
    if (lookup(f, key, &kv, err)) return -1;
    *kvp = kv;
    if (kv->type == GGUF_TYPE_ARRAY || !read_int(kv->type, kv->val, neg, mag))
        return wrong_type(kv, key, "an integer", err);
    return 0;
}

static int no_fit(const gguf_kv *kv, const char *key, bool neg, uint64_t mag, const char *want, ds4_err *err) {
    ds4_err_set(err, "key '%s' has type %s and value %s%" PRIu64 ", which does not fit %s", key,
                gguf_type_name(kv->type), neg ? "-" : "", mag, want);
    return -2;
}

int gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out, ds4_err *err) {
    bool neg;
    uint64_t m;
    const gguf_kv *kv;
    int rc = get_int(f, key, &neg, &m, &kv, err);
    if (rc) return rc;
    if (neg || m > UINT32_MAX) return no_fit(kv, key, neg, m, "u32", err);
    *out = (uint32_t)m;
    return 0;
}

int gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out, ds4_err *err) {
    bool neg;
    uint64_t m;
    const gguf_kv *kv;
    int rc = get_int(f, key, &neg, &m, &kv, err);
    if (rc) return rc;
    if (neg) return no_fit(kv, key, neg, m, "u64", err);
    *out = m;
    return 0;
}

static bool to_i64(bool neg, uint64_t m, int64_t *out) {
    if (!neg) {
        if (m > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)m;
    } else {
        if (m > (uint64_t)INT64_MAX + 1) return false;
        *out = m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m;
    }
    return true;
}

int gguf_get_i64(const gguf_file *f, const char *key, int64_t *out, ds4_err *err) {
    bool neg;
    uint64_t m;
    const gguf_kv *kv;
    int rc = get_int(f, key, &neg, &m, &kv, err);
    if (rc) return rc;
    if (!to_i64(neg, m, out)) return no_fit(kv, key, neg, m, "i64", err);
    return 0;
}

static float f32_at(const uint8_t *p) {
    uint32_t u = le32(p);
    float v;
    memcpy(&v, &u, 4);
    return v;
}

static double f64_at(const uint8_t *p) {
    uint64_t u = le64(p);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

int gguf_get_f32(const gguf_file *f, const char *key, float *out, ds4_err *err) {
    const gguf_kv *kv;
    if (lookup(f, key, &kv, err)) return -1;
    if (kv->type == GGUF_TYPE_FLOAT32) {
        *out = f32_at(kv->val);
        return 0;
    }
    if (kv->type == GGUF_TYPE_FLOAT64) {
        double d = f64_at(kv->val);
        /* A finite double beyond float range would silently become inf. */
        if (d == d && (d > 3.4028234663852886e38 || d < -3.4028234663852886e38) && d - d == 0) {
            ds4_err_set(err, "key '%s' has type f64 and value %g, which does not fit f32", key, d);
            return -2;
        }
        *out = (float)d;
        return 0;
    }
    return wrong_type(kv, key, "f32 or f64", err);
}

int gguf_get_bool(const gguf_file *f, const char *key, bool *out, ds4_err *err) {
    const gguf_kv *kv;
    if (lookup(f, key, &kv, err)) return -1;
    if (kv->type != GGUF_TYPE_BOOL) return wrong_type(kv, key, "bool", err);
    *out = kv->val[0] != 0;
    return 0;
}

int gguf_get_str(const gguf_file *f, const char *key, gguf_str *out, ds4_err *err) {
    const gguf_kv *kv;
    if (lookup(f, key, &kv, err)) return -1;
    if (kv->type != GGUF_TYPE_STRING) return wrong_type(kv, key, "string", err);
    out->len = le64(kv->val);
    out->ptr = (const char *)kv->val + 8;
    return 0;
}

int gguf_arr_i64(const gguf_kv *kv, uint64_t i, int64_t *out) {
    bool neg;
    uint64_t m;
    if (!kv || kv->type != GGUF_TYPE_ARRAY || i >= kv->arr_n) return -2;
    size_t es = gguf_vtype_size(kv->arr_type);
    if (kv->arr_type == GGUF_TYPE_BOOL) {
        *out = kv->val[i];
        return 0;
    }
    if (!read_int(kv->arr_type, kv->val + i * es, &neg, &m) || !to_i64(neg, m, out)) return -2;
    return 0;
}

int gguf_arr_f32(const gguf_kv *kv, uint64_t i, float *out) {
    if (!kv || kv->type != GGUF_TYPE_ARRAY || i >= kv->arr_n) return -2;
    size_t es = gguf_vtype_size(kv->arr_type);
    const uint8_t *p = kv->val + i * es;
    bool neg;
    uint64_t m;
    if (kv->arr_type == GGUF_TYPE_FLOAT32) *out = f32_at(p);
    else if (kv->arr_type == GGUF_TYPE_FLOAT64) *out = (float)f64_at(p);
    else if (kv->arr_type != GGUF_TYPE_BOOL && read_int(kv->arr_type, p, &neg, &m))
        *out = neg ? -(float)m : (float)m; /* integer arrays (e.g. per-layer ratios) read as floats */
    else return -2;
    return 0;
}

gguf_str gguf_arr_str(const gguf_kv *kv, uint64_t i) {
    gguf_str none = {NULL, 0};
    if (!kv || kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING || i >= kv->arr_n || !kv->strs)
        return none;
    return kv->strs[i];
}

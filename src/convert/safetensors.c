/* safetensors reader: mmap + jansson header parse + full bounds validation.
 * See safetensors.h for the contract. */
#include "convert/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct st_file {
    char *path;
    uint8_t *map;
    size_t size;
} st_file;

struct ds4_st {
    st_file *files;
    int n_files;
    ds4_st_tensor *t;
    int n, cap;
    uint64_t total;
};

static const struct { const char *name; size_t size; } dtypes[DS4_ST_DTYPE_COUNT] = {
    [DS4_ST_F32] = {"F32", 4},         [DS4_ST_F16] = {"F16", 2},
    [DS4_ST_BF16] = {"BF16", 2},       [DS4_ST_F8_E4M3] = {"F8_E4M3", 1},
    [DS4_ST_F8_E8M0] = {"F8_E8M0", 1}, [DS4_ST_I8] = {"I8", 1},
    [DS4_ST_U8] = {"U8", 1},           [DS4_ST_I32] = {"I32", 4},
    [DS4_ST_I64] = {"I64", 8},
};

size_t ds4_st_dtype_size(enum ds4_st_dtype t) { return (unsigned)t < DS4_ST_DTYPE_COUNT ? dtypes[t].size : 0; }
const char *ds4_st_dtype_name(enum ds4_st_dtype t) { return (unsigned)t < DS4_ST_DTYPE_COUNT ? dtypes[t].name : "?"; }

char *ds4_st_shape_str(const int64_t *shape, int n_dims, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < n_dims && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

int ds4_st_count(const ds4_st *st) { return st->n; }
const ds4_st_tensor *ds4_st_at(const ds4_st *st, int i) { return i >= 0 && i < st->n ? &st->t[i] : NULL; }
int ds4_st_index(const ds4_st *st, const ds4_st_tensor *t) { return (int)(t - st->t); }
const char *ds4_st_file_path(const ds4_st *st, int file) { return file >= 0 && file < st->n_files ? st->files[file].path : "?"; }
uint64_t ds4_st_total_bytes(const ds4_st *st) { return st->total; }

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const ds4_st_tensor *)a)->name, ((const ds4_st_tensor *)b)->name);
}

const ds4_st_tensor *ds4_st_find(const ds4_st *st, const char *name) {
    int lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(st->t[mid].name, name);
        if (!c) return &st->t[mid];
        if (c < 0) lo = mid + 1; else hi = mid - 1;
    }
    return NULL;
}

void ds4_st_close(ds4_st *st) {
    if (!st) return;
    for (int i = 0; i < st->n; i++) free((char *)st->t[i].name);
    free(st->t);
    for (int i = 0; i < st->n_files; i++) {
        if (st->files[i].map) munmap(st->files[i].map, st->files[i].size);
        free(st->files[i].path);
    }
    free(st->files);
    free(st);
}

typedef struct { uint64_t b, e; int idx; } span;
static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->b < y->b ? -1 : x->b > y->b ? 1 : (x->e < y->e ? -1 : x->e > y->e);
}

/* Parses one entry of a header object into st->t[st->n]. */
static int parse_entry(ds4_st *st, int fi, const char *key, json_t *v, const uint8_t *data, uint64_t data_size,
                       ds4_err *err) {
    const char *path = st->files[fi].path;
    if (!json_is_object(v)) return ds4_err_set(err, "%s: tensor '%s': header entry is not an object", path, key);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"), *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) || json_array_size(jo) != 2)
        return ds4_err_set(err, "%s: tensor '%s': header entry needs dtype, shape and data_offsets [begin, end]", path, key);
    const char *ds = json_string_value(jd);
    int dt = -1;
    for (int i = 0; i < DS4_ST_DTYPE_COUNT; i++)
        if (!strcmp(ds, dtypes[i].name)) dt = i;
    if (dt < 0) return ds4_err_set(err, "%s: tensor '%s': unsupported dtype '%s'", path, key, ds);
    size_t nd = json_array_size(js);
    if (nd > DS4_ST_MAX_DIMS) return ds4_err_set(err, "%s: tensor '%s': rank %zu > %d", path, key, nd, DS4_ST_MAX_DIMS);
    if (st->n == st->cap) {
        int nc = st->cap ? st->cap * 2 : 256;
        ds4_st_tensor *nt = realloc(st->t, sizeof *nt * (size_t)nc);
        if (!nt) return ds4_err_set(err, "out of memory reading %s", path);
        st->t = nt;
        st->cap = nc;
    }
    ds4_st_tensor *t = &st->t[st->n];
    memset(t, 0, sizeof *t);
    t->dtype = (enum ds4_st_dtype)dt;
    t->n_dims = (int)nd;
    t->file = fi;
    uint64_t ne = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return ds4_err_set(err, "%s: tensor '%s': shape entries must be non-negative integers", path, key);
        uint64_t di = (uint64_t)json_integer_value(d);
        if (di && ne > UINT64_MAX / di) return ds4_err_set(err, "%s: tensor '%s': element count overflows", path, key);
        ne *= di;
        t->shape[i] = (int64_t)di;
    }
    if (ne > (uint64_t)INT64_MAX / 8) return ds4_err_set(err, "%s: tensor '%s': element count overflows", path, key);
    t->n_elem = (int64_t)ne;
    json_t *b = json_array_get(jo, 0), *e = json_array_get(jo, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b))
        return ds4_err_set(err, "%s: tensor '%s': bad data_offsets", path, key);
    uint64_t ob = (uint64_t)json_integer_value(b), oe = (uint64_t)json_integer_value(e);
    if (oe > data_size)
        return ds4_err_set(err, "%s: tensor '%s': data [%llu, %llu) past end of data section (%llu bytes): file truncated?",
                           path, key, (unsigned long long)ob, (unsigned long long)oe, (unsigned long long)data_size);
    uint64_t want = ne * dtypes[dt].size;
    if (oe - ob != want)
        return ds4_err_set(err, "%s: tensor '%s': data size %llu does not match %s %s (%llu bytes)", path, key,
                           (unsigned long long)(oe - ob), ds, ds4_st_shape_str(t->shape, t->n_dims, (char[160]){0}, 160),
                           (unsigned long long)want);
    t->data = data + ob;
    t->nbytes = want;
    t->name = strdup(key);
    if (!t->name) return ds4_err_set(err, "out of memory");
    st->n++;
    st->total += want;
    return 0;
}

static int open_file(ds4_st *st, const char *path, ds4_err *err) {
    st_file *nf = realloc(st->files, sizeof *nf * (size_t)(st->n_files + 1));
    if (!nf) return ds4_err_set(err, "out of memory");
    st->files = nf;
    int fi = st->n_files++;
    st_file *f = &st->files[fi];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path) return ds4_err_set(err, "out of memory");
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ds4_err_set(err, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        return ds4_err_set(err, "%s: not a regular file", path);
    }
    if (sb.st_size < 8) {
        close(fd);
        return ds4_err_set(err, "%s: truncated safetensors file (%lld bytes, no header)", path, (long long)sb.st_size);
    }
    f->size = (size_t)sb.st_size;
    void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        f->size = 0;
        return ds4_err_set(err, "%s: mmap: %s", path, strerror(errno));
    }
    f->map = m;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | f->map[i];
    if (hlen > f->size - 8)
        return ds4_err_set(err, "%s: truncated safetensors file: header length %llu exceeds the %zu bytes after it", path,
                           (unsigned long long)hlen, f->size - 8);
    json_error_t je;
    json_t *root = json_loadb((const char *)f->map + 8, (size_t)hlen, 0, &je);
    if (!root) return ds4_err_set(err, "%s: bad safetensors header JSON: %s (line %d)", path, je.text, je.line);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = ds4_err_set(err, "%s: safetensors header is not a JSON object", path);
    } else {
        const uint8_t *data = f->map + 8 + hlen;
        uint64_t data_size = f->size - 8 - hlen;
        int first = st->n;
        const char *key;
        json_t *v;
        json_object_foreach(root, key, v) {
            if (!strcmp(key, "__metadata__")) continue;
            if ((rc = parse_entry(st, fi, key, v, data, data_size, err))) break;
        }
        /* No two tensors may share bytes (a corrupt header could alias them). */
        int cnt = st->n - first;
        if (!rc && cnt > 1) {
            span *sp = malloc(sizeof *sp * (size_t)cnt);
            if (!sp) rc = ds4_err_set(err, "out of memory");
            for (int i = 0; !rc && i < cnt; i++) {
                sp[i].b = (uint64_t)(st->t[first + i].data - data);
                sp[i].e = sp[i].b + st->t[first + i].nbytes;
                sp[i].idx = first + i;
            }
            if (!rc) qsort(sp, (size_t)cnt, sizeof *sp, cmp_span);
            for (int i = 1; !rc && i < cnt; i++)
                if (sp[i].b < sp[i - 1].e && sp[i].e > sp[i].b)
                    rc = ds4_err_set(err, "%s: tensors '%s' and '%s' overlap", path, st->t[sp[i - 1].idx].name,
                                     st->t[sp[i].idx].name);
            free(sp);
        }
    }
    json_decref(root);
    return rc;
}

static bool is_dir(const char *p) {
    struct stat sb;
    return !stat(p, &sb) && S_ISDIR(sb.st_mode);
}

static bool file_exists(const char *p) {
    struct stat sb;
    return !stat(p, &sb) && S_ISREG(sb.st_mode);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sharded checkpoint: open the shards the index names, then check the map. */
static int open_index(ds4_st *st, const char *dir, const char *index, ds4_err *err) {
    json_error_t je;
    json_t *root = json_load_file(index, 0, &je);
    if (!root) return ds4_err_set(err, "%s: %s (line %d)", index, je.text, je.line);
    int rc = 0;
    json_t *wm = json_object_get(root, "weight_map");
    size_t n = json_is_object(wm) ? json_object_size(wm) : 0;
    char **names = n ? calloc(n, sizeof *names) : NULL;
    if (!json_is_object(wm) || !n) rc = ds4_err_set(err, "%s: missing or empty \"weight_map\" object", index);
    else if (!names) rc = ds4_err_set(err, "out of memory");
    size_t k = 0;
    const char *key;
    json_t *v;
    if (!rc) json_object_foreach(wm, key, v) {
        if (!json_is_string(v)) { rc = ds4_err_set(err, "%s: weight_map['%s'] is not a string", index, key); break; }
        const char *fn = json_string_value(v);
        if (!*fn || fn[0] == '/' || strstr(fn, "..")) { rc = ds4_err_set(err, "%s: weight_map['%s'] = '%s': bad shard name", index, key, fn); break; }
        names[k++] = (char *)fn;
    }
    if (!rc) {
        qsort(names, k, sizeof *names, cmp_str);
        for (size_t i = 0; !rc && i < k; i++) {
            if (i && !strcmp(names[i], names[i - 1])) continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            rc = open_file(st, path, err);
        }
    }
    if (!rc) {
        qsort(st->t, (size_t)st->n, sizeof *st->t, cmp_name);
        json_object_foreach(wm, key, v) {
            const ds4_st_tensor *t = ds4_st_find(st, key);
            const char *fn = json_string_value(v);
            const char *tf = t ? strrchr(st->files[t->file].path, '/') + 1 : NULL;
            if (!t) { rc = ds4_err_set(err, "%s: tensor '%s' listed in the index is not in shard %s", index, key, fn); break; }
            if (strcmp(tf, fn)) { rc = ds4_err_set(err, "%s: tensor '%s' is indexed in %s but found in %s", index, key, fn, tf); break; }
        }
        if (!rc && (size_t)st->n != json_object_size(wm))
            rc = ds4_err_set(err, "%s: shards hold %d tensors but the index lists %zu", index, st->n, json_object_size(wm));
    }
    free(names);
    json_decref(root);
    return rc;
}

static int open_dir_glob(ds4_st *st, const char *dir, ds4_err *err) {
    DIR *d = opendir(dir);
    if (!d) return ds4_err_set(err, "%s: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 12 || strcmp(de->d_name + l - 12, ".safetensors")) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) { rc = ds4_err_set(err, "out of memory"); break; }
            names = nn;
        }
        if (!(names[n++] = strdup(de->d_name))) { rc = ds4_err_set(err, "out of memory"); break; }
    }
    closedir(d);
    if (!rc && !n) rc = ds4_err_set(err, "%s: no .safetensors files (and no model.safetensors.index.json)", dir);
    if (!rc) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; !rc && i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        rc = open_file(st, path, err);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

ds4_st *ds4_st_open(const char *path, ds4_err *err) {
    ds4_st *st = calloc(1, sizeof *st);
    if (!st) { ds4_err_set(err, "out of memory"); return NULL; }
    int rc;
    if (is_dir(path)) {
        char p[4096];
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", path);
        if (file_exists(p)) rc = open_index(st, path, p, err);
        else {
            snprintf(p, sizeof p, "%s/model.safetensors", path);
            rc = file_exists(p) ? open_file(st, p, err) : open_dir_glob(st, path, err);
        }
    } else {
        rc = open_file(st, path, err);
    }
    if (!rc) {
        qsort(st->t, (size_t)st->n, sizeof *st->t, cmp_name);
        for (int i = 1; i < st->n; i++)
            if (!strcmp(st->t[i].name, st->t[i - 1].name)) {
                rc = ds4_err_set(err, "tensor '%s' appears twice (%s and %s)", st->t[i].name,
                                 st->files[st->t[i - 1].file].path, st->files[st->t[i].file].path);
                break;
            }
    }
    if (rc) { ds4_st_close(st); return NULL; }
    return st;
}

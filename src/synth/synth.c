/* In-memory synthetic model; see synth.h. */
#include "synth/synth.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "convert/emit.h"
#include "convert/mkmodel.h"
#include "engine/pool.h"
#include "gguf/gguf.h"
#include "quant/quant.h"

/* ---- header: the gguf writer's bytes, read back from a temp file ---- */

static int hdr_skip(const uint8_t *p, size_t n, size_t *off, size_t k) {
    (void)p;
    if (*off + k > n) return -1;
    *off += k;
    return 0;
}

static int hdr_u64(const uint8_t *p, size_t n, size_t *off, uint64_t *v) {
    if (*off + 8 > n) return -1;
    memcpy(v, p + *off, 8);
    *off += 8;
    return 0;
}

static int hdr_u32(const uint8_t *p, size_t n, size_t *off, uint32_t *v) {
    if (*off + 4 > n) return -1;
    memcpy(v, p + *off, 4);
    *off += 4;
    return 0;
}

/* Length of the header (magic .. tensor directory) and the data size. */
static int hdr_parse(const uint8_t *p, size_t n, size_t *hdr_len, uint64_t *data_bytes) {
    size_t off = 0;
    uint32_t magic, ver, t;
    uint64_t nt, nkv, len, cnt;
    if (hdr_u32(p, n, &off, &magic) || magic != GGUF_MAGIC || hdr_u32(p, n, &off, &ver) ||
        hdr_u64(p, n, &off, &nt) || hdr_u64(p, n, &off, &nkv))
        return -1;
    for (uint64_t i = 0; i < nkv; i++) {
        if (hdr_u64(p, n, &off, &len) || hdr_skip(p, n, &off, len) || hdr_u32(p, n, &off, &t)) return -1;
        if (t == GGUF_TYPE_STRING) {
            if (hdr_u64(p, n, &off, &len) || hdr_skip(p, n, &off, len)) return -1;
        } else if (t == GGUF_TYPE_ARRAY) {
            uint32_t et;
            if (hdr_u32(p, n, &off, &et) || hdr_u64(p, n, &off, &cnt)) return -1;
            for (uint64_t j = 0; et == GGUF_TYPE_STRING && j < cnt; j++)
                if (hdr_u64(p, n, &off, &len) || hdr_skip(p, n, &off, len)) return -1;
            if (et != GGUF_TYPE_STRING && hdr_skip(p, n, &off, cnt * gguf_vtype_size((enum gguf_vtype)et))) return -1;
        } else if (hdr_skip(p, n, &off, gguf_vtype_size((enum gguf_vtype)t))) {
            return -1;
        }
    }
    uint64_t end = 0;
    for (uint64_t i = 0; i < nt; i++) {
        uint32_t nd;
        int64_t ne[GGUF_MAX_DIMS] = {1, 1, 1, 1};
        uint64_t o, nb;
        if (hdr_u64(p, n, &off, &len) || hdr_skip(p, n, &off, len) || hdr_u32(p, n, &off, &nd) || nd > GGUF_MAX_DIMS)
            return -1;
        for (uint32_t d = 0; d < nd; d++)
            if (hdr_u64(p, n, &off, (uint64_t *)&ne[d])) return -1;
        if (hdr_u32(p, n, &off, &t) || hdr_u64(p, n, &off, &o)) return -1;
        if (gguf_tensor_nbytes((int)t, nd, ne, &nb, NULL)) return -1;
        if (o + nb > end) end = o + nb;
    }
    *hdr_len = (off + GGUF_DEFAULT_ALIGNMENT - 1) / GGUF_DEFAULT_ALIGNMENT * GGUF_DEFAULT_ALIGNMENT;
    *data_bytes = (end + GGUF_DEFAULT_ALIGNMENT - 1) / GGUF_DEFAULT_ALIGNMENT * GGUF_DEFAULT_ALIGNMENT;
    return 0;
}

/* Writes metadata + directory for (hp, recipe) as ds4_emit_gguf would, plus
 * enough zero data that the buffered header reaches the file; returns the
 * file's bytes (malloc'd). */
static uint8_t *header_bytes(const ds4_hparams *hp, const ds4_tensor_spec *schema, int n, const char *recipe,
                             size_t *len, ds4_err *err) {
    const char *dir = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/ds4-synth-%d.gguf", dir && *dir ? dir : "/tmp", (int)getpid());
    gguf_writer *w = gguf_writer_open(path, err);
    if (!w) return NULL;
    uint8_t *buf = NULL;
    gguf_writer_set_alignment(w, GGUF_DEFAULT_ALIGNMENT);
    gguf_writer_add_str(w, "general.name", "ds4-synth");
    int fail = ds4_hparams_write_gguf(hp, w) != 0;
    int ft = ds4_recipe_file_type(recipe);
    if (ft >= 0) gguf_writer_add_u32(w, "general.file_type", (uint32_t)ft);
    gguf_writer_add_u32(w, "general.quantization_version", 2);
    gguf_writer_add_str(w, "ds4.recipe", recipe);
    gguf_writer_add_str(w, "tokenizer.ggml.model", "none");
    uint64_t total = 0;
    for (int i = 0; i < n && !fail; i++) {
        if (schema[i].optional) continue;
        int t = ds4_recipe_type(recipe, schema[i].role, schema[i].ne[0]);
        if (t < 0 || gguf_writer_add_tensor(w, schema[i].name, t, schema[i].n_dims, schema[i].ne) < 0) fail = 1;
        uint64_t nb = 0;
        if (!fail && gguf_tensor_nbytes(t, schema[i].n_dims, schema[i].ne, &nb, NULL) == 0) total += nb;
    }
    if (fail || gguf_writer_begin_data(w)) {
        ds4_err_set(err, "synthetic header: %s", gguf_writer_error(w) ? gguf_writer_error(w) : "recipe");
        gguf_writer_free(w);
        return NULL;
    }
    /* 3 MiB of data (or all of it) pushes the <1 MiB buffered header out */
    size_t zn = 1u << 20;
    uint8_t *zero = calloc(1, zn);
    uint64_t want = total < (3u << 20) ? total : (3u << 20);
    for (uint64_t done = 0; zero && done < want;) {
        size_t k = want - done < zn ? (size_t)(want - done) : zn;
        if (gguf_writer_write(w, zero, k)) break;
        done += k;
    }
    free(zero);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "rb");
    if (f) {
        fseek(f, 0, SEEK_END);
        long sz = ftell(f);
        fseek(f, 0, SEEK_SET);
        buf = sz > 0 ? malloc((size_t)sz) : NULL;
        if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) { free(buf); buf = NULL; }
        *len = buf ? (size_t)sz : 0;
        fclose(f);
    }
    gguf_writer_free(w); /* removes PATH.tmp */
    unlink(path);
    if (!buf) ds4_err_set(err, "synthetic header: cannot read back %s", tmp);
    return buf;
}

/* ---- data ---- */

static uint64_t smix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct fill_job {
    const ds4_hparams *hp;
    const ds4_tensor_spec *spec;
    const gguf_tensor *t;
    uint64_t seed;
    int64_t rows_per_task, nrows_total;
} fill_job;

#define FILL_ROWS 64

/* Random blocks with a scale that keeps values ~ N(0, 1/ne0). */
static void random_blocks(int type, uint8_t *dst, size_t nbytes, int64_t ne0, uint64_t *s) {
    const ds4_type_traits *tt = ds4_type_traits_get(type);
    float sigma = 1.0f / sqrtf((float)ne0);
    for (size_t i = 0; i + 8 <= nbytes; i += 8) {
        uint64_t v = smix(s);
        memcpy(dst + i, &v, 8);
    }
    for (size_t i = nbytes & ~(size_t)7; i < nbytes; i++) dst[i] = (uint8_t)smix(s);
    size_t nb = nbytes / tt->size;
    for (size_t b = 0; b < nb; b++) {
        uint8_t *p = dst + b * tt->size;
        if (type == DS4_TYPE_Q2_K) {
            block_q2_K *q = (block_q2_K *)p;
            for (int j = 0; j < 16; j++) q->scales[j] = (uint8_t)((q->scales[j] & 0x77) | 1);
            q->d = ds4_f32_to_fp16(sigma / 4.0f);
            q->dmin = ds4_f32_to_fp16(sigma / 8.0f);
        } else if (type == DS4_TYPE_Q4_K) {
            block_q4_K *q = (block_q4_K *)p;
            q->d = ds4_f32_to_fp16(sigma / 64.0f);
            q->dmin = ds4_f32_to_fp16(sigma / 64.0f);
        } else if (type == DS4_TYPE_IQ2_XXS) {
            block_iq2_xxs *q = (block_iq2_xxs *)p;
            q->d = ds4_f32_to_fp16(sigma / 25.0f);
        }
    }
}

static void fill_task(void *ctx, int64_t task) {
    const fill_job *j = ctx;
    const gguf_tensor *t = j->t;
    int64_t ne0 = t->ne[0];
    size_t rb = ds4_row_size(t->type, ne0);
    int64_t r0 = task * j->rows_per_task;
    int64_t r1 = r0 + j->rows_per_task < j->nrows_total ? r0 + j->rows_per_task : j->nrows_total;
    uint8_t *base = (uint8_t *)t->data;
    if (t->type == DS4_TYPE_Q2_K || t->type == DS4_TYPE_Q4_K || t->type == DS4_TYPE_IQ2_XXS) {
        uint64_t s = j->seed ^ ((uint64_t)task * 0x9e3779b97f4a7c15ull) ^ (uint64_t)t->offset;
        random_blocks(t->type, base + (size_t)r0 * rb, (size_t)(r1 - r0) * rb, ne0, &s);
        return;
    }
    /* rows of the generator, per 2-D slice (row index within the slice) */
    int64_t per_slice = t->ne[1];
    float *tmp = malloc(sizeof(float) * (size_t)ne0 * FILL_ROWS);
    if (!tmp) abort();
    const ds4_type_traits *tt = ds4_type_traits_get(t->type);
    for (int64_t r = r0; r < r1;) {
        int64_t slice = r / per_slice, row = r % per_slice;
        int64_t k = r1 - r < FILL_ROWS ? r1 - r : FILL_ROWS;
        if (k > per_slice - row) k = per_slice - row;
        ds4_mkmodel_rows(j->seed, j->hp, j->spec, slice, row, k, tmp, NULL);
        for (int64_t i = 0; i < k; i++) {
            uint8_t *dst = base + (size_t)(r + i) * rb;
            if (t->type == DS4_TYPE_I32) {
                for (int64_t e = 0; e < ne0; e++) ((int32_t *)dst)[e] = (int32_t)tmp[i * ne0 + e];
            } else {
                tt->from_float(tmp + i * ne0, dst, ne0);
            }
        }
        r += k;
    }
    free(tmp);
}

ds4_synth *ds4_synth_open(const ds4_hparams *hp_in, const char *recipe, uint64_t seed, int n_threads, ds4_err *err) {
    ds4_hparams hp = *hp_in;
    hp.n_mtp = 0; /* the engine does not run the MTP block; keep its bytes out */
    ds4_tensor_spec *schema = NULL;
    ds4_synth *s = NULL;
    uint8_t *hdr = NULL;
    size_t hlen = 0, hdr_len = 0;
    uint64_t data_bytes = 0;
    if (!ds4_recipe_known(recipe)) { ds4_err_set(err, "unknown recipe '%s'", recipe); return NULL; }
    if (ds4_hparams_validate(&hp, err)) return NULL;
    int n = ds4_schema_build(&hp, &schema, err);
    if (n < 0) return NULL;
    if (!(hdr = header_bytes(&hp, schema, n, recipe, &hlen, err))) goto fail;
    if (hdr_parse(hdr, hlen, &hdr_len, &data_bytes) || hdr_len > hlen) {
        ds4_err_set(err, "synthetic header: cannot parse the writer's output");
        goto fail;
    }
    s = calloc(1, sizeof *s);
    if (!s) { ds4_err_set(err, "out of memory"); goto fail; }
    s->image_bytes = hdr_len + data_bytes;
    s->image = mmap(NULL, s->image_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s->image == MAP_FAILED) {
        s->image = NULL;
        ds4_err_set(err, "cannot map %.1f GiB for the synthetic model", s->image_bytes / 1073741824.0);
        goto fail;
    }
    memcpy(s->image, hdr, hdr_len);
    gguf_file *f = gguf_open_mem(s->image, s->image_bytes, err);
    if (!f) goto fail;
    ds4_pool *pool = ds4_pool_new(n_threads);
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        const ds4_tensor_spec *sp = NULL;
        for (int k = 0; k < n && !sp; k++)
            if (strlen(schema[k].name) == t->name.len && !memcmp(schema[k].name, t->name.ptr, t->name.len))
                sp = &schema[k];
        if (!sp) continue;
        int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
        fill_job j = {&hp, sp, t, seed, 0, rows};
        int64_t tasks = rows < 256 ? 1 : 256;
        j.rows_per_task = (rows + tasks - 1) / tasks;
        ds4_pool_run(pool, (rows + j.rows_per_task - 1) / j.rows_per_task, fill_task, &j);
    }
    ds4_pool_free(pool);
    if (!(s->model = ds4_model_from_gguf(f, err))) goto fail; /* takes f, also on failure */
    free(hdr);
    free(schema);
    return s;
fail:
    free(hdr);
    free(schema);
    if (s) {
        if (s->image) munmap(s->image, s->image_bytes);
        free(s);
    }
    return NULL;
}

void ds4_synth_free(ds4_synth *s) {
    if (!s) return;
    ds4_model_free(s->model);
    if (s->image) munmap(s->image, s->image_bytes);
    free(s);
}

/* Schema-driven GGUF emitter shared by the converter and the generator; see emit.h. */
#include "convert/emit.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "gguf/gguf.h"
#include "quant/quant.h"
#include "text/tokenizer.h"

#define CHUNK_VALUES (8u << 20) /* f32 values per chunk (32 MB) */
#define MIN_PAR_VALUES (1u << 16) /* below this a chunk runs on the calling thread */

int ds4_recipe_file_type(const char *recipe) {
    static const struct { const char *r; int ft; } map[] = {
        {"f32", 0}, {"f16", 1}, {"q8_0", 7}, {"bf16", 32}, {"q2", 19 /* MOSTLY_IQ2_XXS */}, {"q4", 15 /* Q4_K_M */},
    };
    for (size_t i = 0; i < sizeof map / sizeof *map; i++)
        if (!strcasecmp(recipe, map[i].r)) return map[i].ft;
    return -1;
}

int ds4_emit_data_size(const ds4_hparams *hp, const ds4_tensor_spec *schema, int n_schema, const bool *skip,
                       const char *recipe, uint64_t *bytes, ds4_err *err) {
    (void)hp;
    *bytes = 0;
    if (!ds4_recipe_known(recipe)) return ds4_err_set(err, "unknown recipe '%s'", recipe);
    for (int i = 0; i < n_schema; i++) {
        if (skip && skip[i]) continue;
        const ds4_tensor_spec *s = &schema[i];
        int t = ds4_recipe_type(recipe, s->role, s->ne[0]);
        *bytes += (uint64_t)ds4_row_size(t, s->ne[0]) * (uint64_t)s->ne[1] * (uint64_t)s->ne[2];
    }
    return 0;
}

/* One chunk = rows [row0, row0+nrows) of one slice, split over threads. */
typedef struct job {
    ds4_emit_rows_fn rows;
    void *ud;
    const ds4_tensor_spec *s;
    int type;
    int64_t slice, row0, nrows, ne0;
    size_t row_bytes;
    uint8_t *out;          /* nrows * row_bytes */
    float *f32;            /* per-thread scratch, nrows*ne0 in total */
    uint32_t n_expert;
    int rc;
    ds4_err err;
} job;

static void run_job(job *j) {
    float *x = j->f32;
    j->rc = j->rows(j->ud, j->s, j->slice, j->row0, j->nrows, x, &j->err);
    if (j->rc) return;
    if (j->s->role == DS4_ROLE_TID2EID) {
        int32_t *o = (int32_t *)j->out;
        for (int64_t i = 0; i < j->nrows * j->ne0; i++) {
            float v = x[i];
            if (!(v >= 0 && v < (float)j->n_expert) || v != floorf(v)) {
                j->rc = ds4_err_set(&j->err, "tensor '%s': expert id %g at row %lld is outside [0, %u)", j->s->name,
                                    (double)v, (long long)(j->row0 + i / j->ne0), j->n_expert);
                return;
            }
            o[i] = (int32_t)v;
        }
        return;
    }
    for (int64_t r = 0; r < j->nrows; r++) {
        const float *row = x + r * j->ne0;
        for (int64_t i = 0; i < j->ne0; i++)
            if (!isfinite(row[i])) {
                j->rc = ds4_err_set(&j->err, "tensor '%s': non-finite value %g at slice %lld row %lld col %lld",
                                    j->s->name, (double)row[i], (long long)j->slice, (long long)(j->row0 + r),
                                    (long long)i);
                return;
            }
        ds4_type_traits_get(j->type)->from_float(row, j->out + (size_t)r * j->row_bytes, j->ne0);
    }
}

static void *thread_main(void *p) {
    run_job(p);
    return NULL;
}

static int online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 32 ? 32 : (int)n;
}

int ds4_emit_gguf(const char *out_path, const ds4_hparams *hp, const ds4_tensor_spec *schema, int n_schema,
                  const bool *skip, ds4_emit_rows_fn rows, void *ud, const ds4_emit_opts *o,
                  ds4_emit_stats *stats, ds4_err *err) {
    ds4_emit_stats st_local;
    if (!stats) stats = &st_local;
    memset(stats, 0, sizeof *stats);
    if (!ds4_recipe_known(o->recipe))
        return ds4_err_set(err, "unknown recipe '%s' (expected f32, bf16, f16, q8_0, q2 or q4)", o->recipe);
    if (ds4_hparams_validate(hp, err)) return -1;

    /* Types first: refuse before creating any file. */
    int *types = malloc(sizeof(int) * (size_t)(n_schema ? n_schema : 1));
    if (!types) return ds4_err_set(err, "out of memory");
    uint64_t total = 0;
    size_t max_row = 0;
    int64_t max_ne0 = 0;
    for (int i = 0; i < n_schema; i++) {
        const ds4_tensor_spec *s = &schema[i];
        if (skip && skip[i]) continue;
        int t = ds4_recipe_type(o->recipe, s->role, s->ne[0]);
        const ds4_type_traits *tr = ds4_type_traits_get(t);
        if (!tr || (s->role != DS4_ROLE_TID2EID && !tr->from_float)) {
            free(types);
            return ds4_err_set(err, "tensor '%s': recipe '%s' needs type %s, which has no quantizer", s->name, o->recipe,
                               ds4_type_name(t));
        }
        types[i] = t;
        size_t rb = ds4_row_size(t, s->ne[0]);
        total += (uint64_t)rb * (uint64_t)s->ne[1] * (uint64_t)s->ne[2];
        if (rb > max_row) max_row = rb;
        if (s->ne[0] > max_ne0) max_ne0 = s->ne[0];
    }

    int nt = o->n_threads > 0 ? o->n_threads : online_cpus();
    int64_t chunk_rows_max = (int64_t)(CHUNK_VALUES / (uint64_t)(max_ne0 ? max_ne0 : 1));
    if (chunk_rows_max < 1) chunk_rows_max = 1;
    float *f32 = malloc(sizeof(float) * (size_t)(chunk_rows_max * max_ne0 + 1));
    uint8_t *qbuf = malloc(max_row * (size_t)chunk_rows_max + 1);
    job *jobs = calloc((size_t)nt, sizeof *jobs);
    pthread_t *th = calloc((size_t)nt, sizeof *th);
    gguf_writer *w = NULL;
    int rc = -1;
    if (!f32 || !qbuf || !jobs || !th) { ds4_err_set(err, "out of memory"); goto out; }

    w = gguf_writer_open(out_path, err);
    if (!w) goto out;
    gguf_writer_set_alignment(w, GGUF_DEFAULT_ALIGNMENT);
    gguf_writer_add_str(w, "general.name", o->name ? o->name : "DeepSeek V4");
    if (ds4_hparams_write_gguf(hp, w)) goto werr;
    int ft = ds4_recipe_file_type(o->recipe);
    if (ft >= 0) gguf_writer_add_u32(w, "general.file_type", (uint32_t)ft);
    gguf_writer_add_u32(w, "general.quantization_version", 2);
    gguf_writer_add_str(w, "ds4.recipe", o->recipe);
    if (o->tok && ds4_tokenizer_write_gguf(o->tok, w, err)) goto out;
    /* Without a tokenizer the model runs from token ids; llama.cpp still
     * requires the key and knows "none" as "no vocabulary". */
    if (!o->tok && gguf_writer_add_str(w, "tokenizer.ggml.model", "none")) {
        ds4_err_set(err, "%s", gguf_writer_error(w));
        goto out;
    }
    for (int i = 0; i < n_schema; i++) {
        if (skip && skip[i]) continue;
        if (gguf_writer_add_tensor(w, schema[i].name, types[i], schema[i].n_dims, schema[i].ne) < 0) goto werr;
    }
    if (gguf_writer_begin_data(w)) goto werr;

    uint64_t done = 0;
    for (int i = 0; i < n_schema; i++) {
        const ds4_tensor_spec *s = &schema[i];
        if (skip && skip[i]) continue;
        size_t rb = ds4_row_size(types[i], s->ne[0]);
        for (int64_t e = 0; e < s->ne[2]; e++) {
            for (int64_t r0 = 0; r0 < s->ne[1]; r0 += chunk_rows_max) {
                int64_t nr = s->ne[1] - r0 < chunk_rows_max ? s->ne[1] - r0 : chunk_rows_max;
                int use = (uint64_t)(nr * s->ne[0]) < MIN_PAR_VALUES ? 1 : nt;
                if (use > nr) use = (int)nr;
                int64_t per = (nr + use - 1) / use, at = 0;
                int k = 0;
                for (; k < use && at < nr; k++) {
                    job *j = &jobs[k];
                    int64_t n = nr - at < per ? nr - at : per;
                    *j = (job){rows, ud, s, types[i], e, r0 + at, n, s->ne[0], rb, qbuf + (size_t)at * rb,
                               f32 + at * s->ne[0], hp->n_expert, 0, {{0}}};
                    at += n;
                }
                int started = 0;
                if (k == 1) run_job(&jobs[0]);
                else
                    for (; started < k; started++)
                        if (pthread_create(&th[started], NULL, thread_main, &jobs[started])) break;
                for (int t = started; k > 1 && t < k; t++) run_job(&jobs[t]); /* thread creation failed */
                for (int t = 0; k > 1 && t < started; t++) pthread_join(th[t], NULL);
                for (int t = 0; t < k; t++)
                    if (jobs[t].rc) {
                        ds4_err_set(err, "%s", jobs[t].err.msg);
                        goto out;
                    }
                if (gguf_writer_write(w, qbuf, (size_t)nr * rb)) goto werr;
                done += (uint64_t)nr * rb;
                if (o->progress) o->progress(o->progress_ud, s->name, done, total);
            }
        }
        stats->n_tensors++;
        if (types[i] >= 0 && types[i] < 64) stats->n_by_type[types[i]]++;
    }
    if (gguf_writer_finish(w)) goto werr;
    stats->data_bytes = done;
    rc = 0;
    goto out;
werr:
    ds4_err_set(err, "%s: %s", out_path, gguf_writer_error(w) ? gguf_writer_error(w) : "write failed");
out:
    if (w) gguf_writer_free(w);
    free(types);
    free(f32);
    free(qbuf);
    free(jobs);
    free(th);
    return rc;
}

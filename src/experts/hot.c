/* Hot-expert table file and model fingerprint.  Format in experts.h.
 *
 * The table is small (8 bytes per expert per layer: 88 KB for Flash) and is
 * read whole.  Corruption is checked before identity, so a damaged file says
 * "corrupt" rather than "another model". */
#include "experts/experts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quant/quant.h"

#define HOT_MAGIC "DS4HOTEX"
#define HOT_VERSION 1u
#define HOT_HEADER 104u  /* magic 8 + 4·u32 16 + 2·u64 16 + name 64 */

typedef struct fnv { uint64_t h; } fnv;
static void fnv_init(fnv *f) { f->h = 0xcbf29ce484222325ull; }
static void fnv_bytes(fnv *f, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) f->h = (f->h ^ b[i]) * 0x100000001b3ull;
}
static void fnv_u64(fnv *f, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    fnv_bytes(f, b, 8);
}

static void put_u32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static void put_u64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static uint32_t get_u32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t get_u64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

uint64_t ds4_experts_fingerprint(const ds4_model *m) {
    fnv f;
    fnv_init(&f);
    const ds4_hparams *hp = &m->hp;
    uint64_t dims[] = {hp->n_layer, hp->n_embd, hp->n_vocab, hp->n_head, hp->head_dim, hp->rope_dim, hp->q_lora,
                       hp->o_groups, hp->o_lora, hp->window, hp->n_expert, hp->n_expert_used, hp->n_expert_shared,
                       hp->expert_ff, hp->n_hash, hp->hc_mult, hp->idx_n_head, hp->idx_head_dim, hp->idx_topk};
    for (size_t i = 0; i < sizeof dims / sizeof *dims; i++) fnv_u64(&f, dims[i]);
    for (uint32_t i = 0; i < hp->n_compress; i++) fnv_u64(&f, (uint64_t)(int64_t)hp->compress[i]);
    for (int64_t i = 0; i < gguf_n_tensors(m->gguf); i++) {
        const gguf_tensor *t = gguf_tensor_at(m->gguf, i);
        fnv_bytes(&f, t->name.ptr, t->name.len);
        fnv_u64(&f, (uint64_t)t->type);
        for (int d = 0; d < GGUF_MAX_DIMS; d++) fnv_u64(&f, (uint64_t)t->ne[d]);
        fnv_u64(&f, t->offset);
    }
    /* Routers decide which experts are hot; their first bytes tell weights apart. */
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const ds4_weight *w = &m->layers[l].gate_inp;
        size_t n = ds4_row_size(w->type, w->ne[0]) * (size_t)w->ne[1];
        fnv_bytes(&f, w->data, n < 4096 ? n : 4096);
    }
    return f.h;
}

static void model_name(const ds4_model *m, char out[64]) {
    memset(out, 0, 64);
    gguf_str s;
    if (gguf_get_str(m->gguf, "general.name", &s, NULL) == 0) gguf_str_copy(s, out, 64);
}

int ds4_hot_write(const char *path, const ds4_model *m, const uint64_t *counts, uint64_t n_tokens, ds4_err *err) {
    uint32_t L = m->hp.n_layer, E = m->hp.n_expert;
    size_t n = HOT_HEADER + (size_t)L * E * 8 + 8;
    uint8_t *buf = calloc(1, n);
    if (!buf) return ds4_err_set(err, "out of memory");
    memcpy(buf, HOT_MAGIC, 8);
    put_u32(buf + 8, HOT_VERSION);
    put_u32(buf + 12, L);
    put_u32(buf + 16, E);
    put_u32(buf + 20, m->hp.n_expert_used);
    put_u64(buf + 24, ds4_experts_fingerprint(m));
    put_u64(buf + 32, n_tokens);
    model_name(m, (char *)buf + 40);
    for (size_t i = 0; i < (size_t)L * E; i++) put_u64(buf + HOT_HEADER + 8 * i, counts[i]);
    fnv f;
    fnv_init(&f);
    fnv_bytes(&f, buf, n - 8);
    put_u64(buf + n - 8, f.h);
    /* Write a temporary file and rename it, so a crash never leaves half a table. */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *fp = fopen(tmp, "wb");
    int rc = 0;
    if (!fp) rc = ds4_err_set(err, "%s: cannot create: %s", tmp, strerror(errno));
    else {
        if (fwrite(buf, 1, n, fp) != n) rc = ds4_err_set(err, "%s: write failed: %s", tmp, strerror(errno));
        if (fclose(fp) && !rc) rc = ds4_err_set(err, "%s: write failed: %s", tmp, strerror(errno));
        if (!rc && rename(tmp, path)) rc = ds4_err_set(err, "%s: cannot rename into place: %s", path, strerror(errno));
        if (rc) unlink(tmp);
    }
    free(buf);
    return rc;
}

ds4_hot_table *ds4_hot_read(const char *path, const ds4_model *m, ds4_err *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return ds4_err_set(err, "hot-expert table %s: %s", path, strerror(errno)), NULL;
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 65536;
            if (cap > ((size_t)1 << 30)) { fclose(fp); free(buf); return ds4_err_set(err, "hot-expert table %s: too large", path), NULL; }
            uint8_t *nb = realloc(buf, cap);
            if (!nb) { fclose(fp); free(buf); return ds4_err_set(err, "out of memory"), NULL; }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, fp);
        n += r;
        if (r == 0) break;
    }
    int ioerr = ferror(fp);
    fclose(fp);
    ds4_hot_table *t = NULL;
    if (ioerr) { ds4_err_set(err, "hot-expert table %s: read error", path); goto out; }
    if (n < HOT_HEADER + 8 || memcmp(buf, HOT_MAGIC, 8)) {
        ds4_err_set(err, "%s is not a hot-expert table (bad magic or too short: %zu bytes)", path, n);
        goto out;
    }
    uint32_t ver = get_u32(buf + 8), L = get_u32(buf + 12), E = get_u32(buf + 16);
    if (ver != HOT_VERSION) {
        ds4_err_set(err, "hot-expert table %s: version %u, this build reads version %u", path, ver, HOT_VERSION);
        goto out;
    }
    size_t want = HOT_HEADER + (size_t)L * E * 8 + 8;
    if (L > DS4_MAX_LAYERS || E > 65536 || n != want) {
        ds4_err_set(err, "hot-expert table %s is corrupt or truncated: %zu bytes, %u layers x %u experts need %zu",
                    path, n, L, E, want);
        goto out;
    }
    fnv f;
    fnv_init(&f);
    fnv_bytes(&f, buf, n - 8);
    if (f.h != get_u64(buf + n - 8)) {
        ds4_err_set(err, "hot-expert table %s is corrupt: checksum mismatch (stored %016llx, computed %016llx)", path,
                    (unsigned long long)get_u64(buf + n - 8), (unsigned long long)f.h);
        goto out;
    }
    t = calloc(1, sizeof *t);
    if (!t || !(t->counts = malloc((size_t)L * E * 8 + 8))) {
        free(t);
        t = NULL;
        ds4_err_set(err, "out of memory");
        goto out;
    }
    t->n_layer = L;
    t->n_expert = E;
    t->n_expert_used = get_u32(buf + 20);
    t->fingerprint = get_u64(buf + 24);
    t->n_tokens = get_u64(buf + 32);
    memcpy(t->model_name, buf + 40, 64);
    t->model_name[63] = 0;
    for (size_t i = 0; i < (size_t)L * E; i++) t->counts[i] = get_u64(buf + HOT_HEADER + 8 * i);
    if (m) {
        uint64_t fp_m = ds4_experts_fingerprint(m);
        if (L != m->hp.n_layer || E != m->hp.n_expert || t->fingerprint != fp_m) {
            char name[64];
            model_name(m, name);
            ds4_err_set(err,
                        "hot-expert table %s was made for another model: '%s' (%u layers, %u experts, fingerprint "
                        "%016llx), this model is '%s' (%u layers, %u experts, fingerprint %016llx)",
                        path, t->model_name, L, E, (unsigned long long)t->fingerprint, name, m->hp.n_layer,
                        m->hp.n_expert, (unsigned long long)fp_m);
            ds4_hot_free(t);
            t = NULL;
        }
    }
out:
    free(buf);
    return t;
}

void ds4_hot_free(ds4_hot_table *t) {
    if (!t) return;
    free(t->counts);
    free(t);
}

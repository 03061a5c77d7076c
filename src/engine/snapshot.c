/* Session snapshot payload: serialize / restore the per-sequence state of
 * ds4_session (format in engine.h and API.md §18.2).  Integers and floats are
 * written in host order, which is little-endian on every supported target
 * (x86-64, aarch64); a big-endian build refuses to compile. */
#include "engine/engine.h"

#include <stdlib.h>
#include <string.h>

#ifdef DS4_CUDA
#include "cuda/cuda_backend.h"
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "snapshot payloads are little-endian; add byte swapping for this target"
#endif

#define PAYLOAD_MAGIC 0x34565344u /* "DSV4" */
#define PAYLOAD_VERSION 1u
#define HDR_WORDS 13

static size_t frontier_len(const ds4_hparams *hp, int m) {
    size_t c = m == 4 ? 2 : 1;
    return (size_t)(c * m) * (c * hp->head_dim);
}

static size_t idx_frontier_len(const ds4_hparams *hp) { return (size_t)8 * 2 * hp->idx_head_dim; }

static uint32_t live_raw(const ds4_session *s) {
    uint32_t W = s->model->hp.window;
    return s->pos < W ? s->pos : W;
}

static uint32_t comp_cap_of(const ds4_session *s, int m) { return s->opts.ctx_max / (uint32_t)m + 2; }

uint64_t ds4_session_payload_size(const ds4_session *s) {
    const ds4_hparams *hp = &s->model->hp;
    uint64_t n = 4ull * HDR_WORDS + 4ull * s->pos + 4ull * hp->n_vocab + 8ull * hp->n_layer;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const ds4_layer_state *st = &s->ls[l];
        int m = s->model->layers[l].ratio;
        n += 4ull * live_raw(s) * hp->head_dim;
        if (m > 0) n += 4ull * (st->n_comp * (uint64_t)hp->head_dim + 2 * frontier_len(hp, m));
        if (m == 4) n += 4ull * (st->n_idx * (uint64_t)hp->idx_head_dim + 2 * idx_frontier_len(hp));
    }
    return n;
}

#define W_(p, n) do { if (write(ud, (p), (n))) return ds4_err_set(err, "snapshot write failed"); } while (0)

int ds4_session_payload_save(const ds4_session *s, const int32_t *tokens, const float *logits, ds4_write_fn write,
                             void *ud, ds4_err *err) {
    const ds4_hparams *hp = &s->model->hp;
#ifdef DS4_CUDA
    /* the live state is on the GPU: bring it into s->ls first */
    if (s->cuda && ds4_cuda_session_download((ds4_session *)s, err)) return -1;
#endif
    uint32_t W = hp->window, nraw = live_raw(s);
    uint32_t hdr[HDR_WORDS] = {PAYLOAD_MAGIC, PAYLOAD_VERSION, s->opts.ctx_max, (uint32_t)s->opts.max_batch, W, W,
                               s->comp_cap, s->pos, hp->n_layer, hp->head_dim, hp->idx_head_dim, hp->n_vocab, nraw};
    W_(hdr, sizeof hdr);
    if (s->pos) W_(tokens, sizeof(int32_t) * s->pos);
    if (logits) {
        W_(logits, sizeof(float) * hp->n_vocab);
    } else {
        float zero[256] = {0};
        for (uint32_t i = 0; i < hp->n_vocab; i += 256)
            W_(zero, sizeof(float) * (hp->n_vocab - i < 256 ? hp->n_vocab - i : 256));
    }
    for (uint32_t l = 0; l < hp->n_layer; l++) W_(&s->ls[l].n_comp, 4);
    for (uint32_t l = 0; l < hp->n_layer; l++) W_(&s->ls[l].n_idx, 4);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const ds4_layer_state *st = &s->ls[l];
        int m = s->model->layers[l].ratio;
        for (uint32_t p = s->pos - nraw; p < s->pos; p++) W_(st->raw + (size_t)(p % W) * hp->head_dim, 4 * hp->head_dim);
        if (m > 0) {
            W_(st->comp, 4 * (size_t)st->n_comp * hp->head_dim);
            W_(st->comp_kv, 4 * frontier_len(hp, m));
            W_(st->comp_sc, 4 * frontier_len(hp, m));
        }
        if (m == 4) {
            W_(st->idx, 4 * (size_t)st->n_idx * hp->idx_head_dim);
            W_(st->idx_kv, 4 * idx_frontier_len(hp));
            W_(st->idx_sc, 4 * idx_frontier_len(hp));
        }
    }
    return 0;
}

#define R_(p, n) do { if (read(ud, (p), (n))) { ds4_err_set(err, "snapshot payload truncated"); goto fail; } } while (0)

int ds4_session_payload_load(ds4_session *s, ds4_read_fn read, void *ud, int32_t **tokens, uint32_t *n_tokens,
                             float *logits, ds4_err *err) {
    const ds4_hparams *hp = &s->model->hp;
    uint32_t W = hp->window;
    int32_t *tok = NULL;
    float *lg = NULL;
    uint32_t *counts = NULL;
    ds4_session_reset(s);
    uint32_t h[HDR_WORDS];
    R_(h, sizeof h);
    if (h[0] != PAYLOAD_MAGIC) { ds4_err_set(err, "not a DS4 session payload (bad magic)"); goto fail; }
    if (h[1] != PAYLOAD_VERSION) { ds4_err_set(err, "unsupported payload version %u", h[1]); goto fail; }
    if (h[4] != W || h[5] != W || h[8] != hp->n_layer || h[9] != hp->head_dim || h[10] != hp->idx_head_dim ||
        h[11] != hp->n_vocab) {
        ds4_err_set(err, "payload is for another model layout (window %u, layers %u, head %u, indexer %u, vocab %u)",
                    h[5], h[8], h[9], h[10], h[11]);
        goto fail;
    }
    uint32_t n = h[7];
    if (n == 0 || n > s->opts.ctx_max) {
        ds4_err_set(err, "payload has %u tokens; this session holds 1..%u", n, s->opts.ctx_max);
        goto fail;
    }
    uint32_t nraw = n < W ? n : W;
    if (h[12] != nraw) { ds4_err_set(err, "payload raw row count %u inconsistent with %u tokens", h[12], n); goto fail; }
    tok = malloc(sizeof(int32_t) * n);
    lg = malloc(sizeof(float) * hp->n_vocab);
    counts = malloc(sizeof(uint32_t) * 2 * hp->n_layer);
    if (!tok || !lg || !counts) { ds4_err_set(err, "out of memory loading payload"); goto fail; }
    R_(tok, sizeof(int32_t) * n);
    for (uint32_t i = 0; i < n; i++)
        if (tok[i] < 0 || (uint32_t)tok[i] >= hp->n_vocab) {
            ds4_err_set(err, "payload token %u has id %d out of range", i, tok[i]);
            goto fail;
        }
    R_(lg, sizeof(float) * hp->n_vocab);
    R_(counts, sizeof(uint32_t) * 2 * hp->n_layer);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        int m = s->model->layers[l].ratio;
        uint32_t want_c = m > 0 ? n / (uint32_t)m : 0, want_i = m == 4 ? n / 4 : 0;
        if (counts[l] != want_c || counts[hp->n_layer + l] != want_i) {
            ds4_err_set(err, "payload layer %u row counts %u/%u inconsistent with %u tokens", l, counts[l],
                        counts[hp->n_layer + l], n);
            goto fail;
        }
        if (m > 0 && want_c > comp_cap_of(s, m)) { ds4_err_set(err, "payload exceeds the session context"); goto fail; }
    }
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        ds4_layer_state *st = &s->ls[l];
        int m = s->model->layers[l].ratio;
        for (uint32_t p = n - nraw; p < n; p++) R_(st->raw + (size_t)(p % W) * hp->head_dim, 4 * hp->head_dim);
        if (m > 0) {
            st->n_comp = counts[l];
            R_(st->comp, 4 * (size_t)st->n_comp * hp->head_dim);
            R_(st->comp_kv, 4 * frontier_len(hp, m));
            R_(st->comp_sc, 4 * frontier_len(hp, m));
        }
        if (m == 4) {
            st->n_idx = counts[hp->n_layer + l];
            st->n_idx8 = 0; /* the int8 copies are rebuilt from these rows */
            R_(st->idx, 4 * (size_t)st->n_idx * hp->idx_head_dim);
            R_(st->idx_kv, 4 * idx_frontier_len(hp));
            R_(st->idx_sc, 4 * idx_frontier_len(hp));
        }
    }
    s->pos = n;
#ifdef DS4_CUDA
    if (s->cuda && ds4_cuda_session_upload(s, err)) goto fail;
#endif
    if (logits) memcpy(logits, lg, sizeof(float) * hp->n_vocab);
    free(lg);
    free(counts);
    *tokens = tok;
    *n_tokens = n;
    return 0;
fail:
    free(tok);
    free(lg);
    free(counts);
    ds4_session_reset(s);
    return -1;
}

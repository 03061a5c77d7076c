/* Routed experts in VRAM: resident tensors or a slot cache; see cu_experts.cuh. */
#include "cuda/cu_experts.cuh"

#include <string.h>

extern "C" {
#include "gguf/gguf.h"
}

#define SLOT_ALIGN 256

struct cu_experts {
    const ds4_model *m;
    bool resident;
    uint32_t L, E;
    size_t sz_g, sz_u, sz_d;        /* bytes of one expert slice per tensor */
    /* resident */
    uint8_t **dev_g, **dev_u, **dev_d;                 /* [L] stacked tensors */
    const uint8_t ***tab_g, ***tab_u, ***tab_d;        /* [L] device arrays [E] */
    /* cache */
    uint8_t *pool;
    size_t slot_bytes;
    uint32_t n_slots;
    int32_t *map;                    /* [L*E] slot or -1 */
    int32_t *slot_key;               /* [n_slots] l*E+e or -1 */
    uint64_t *slot_used, *slot_tick; /* LRU stamp, fetch call that last used it */
    uint64_t clock, tick;
    cudaStream_t cp;
    cudaEvent_t done;
    const uint8_t **h_wtab;          /* pinned [3][cap] */
    int wtab_cap;
    bool pinned;
    /* stats */
    uint64_t lookups, hits, misses, bytes_copied;
};

static size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

static size_t slice_bytes(const ds4_weight *w) { return ds4_row_size(w->type, w->ne[0]) * (size_t)w->ne[1]; }

cu_experts *cu_experts_new(const ds4_model *m, uint64_t cache_mb, ds4_err *err) {
    const ds4_hparams *hp = &m->hp;
    cu_experts *x = (cu_experts *)calloc(1, sizeof *x);
    x->m = m;
    x->L = hp->n_layer;
    x->E = hp->n_expert;
    const ds4_layer *L0 = &m->layers[0];
    x->sz_g = slice_bytes(&L0->gate_exps);
    x->sz_u = slice_bytes(&L0->up_exps);
    x->sz_d = slice_bytes(&L0->down_exps);
    x->slot_bytes = align_up(x->sz_g, SLOT_ALIGN) + align_up(x->sz_u, SLOT_ALIGN) + align_up(x->sz_d, SLOT_ALIGN);
    uint64_t total = (uint64_t)x->slot_bytes * x->L * x->E;
    uint64_t budget;
    if (cache_mb) {
        budget = cache_mb << 20;
    } else {
        size_t fr = 0, tot = 0;
        CU_CHECK(cudaMemGetInfo(&fr, &tot));
        const char *r = getenv("DS4_CUDA_RESERVE_MB");
        uint64_t reserve = (uint64_t)(r ? atoll(r) : 4096) << 20;
        budget = fr > reserve ? fr - reserve : 0;
    }
    if (total <= budget) {
        x->resident = true;
        x->dev_g = (uint8_t **)calloc(x->L, sizeof(uint8_t *));
        x->dev_u = (uint8_t **)calloc(x->L, sizeof(uint8_t *));
        x->dev_d = (uint8_t **)calloc(x->L, sizeof(uint8_t *));
        x->tab_g = (const uint8_t ***)calloc(x->L, sizeof(void *));
        x->tab_u = (const uint8_t ***)calloc(x->L, sizeof(void *));
        x->tab_d = (const uint8_t ***)calloc(x->L, sizeof(void *));
        const uint8_t **h = (const uint8_t **)malloc(sizeof(void *) * x->E);
        for (uint32_t l = 0; l < x->L; l++) {
            const ds4_layer *S = &m->layers[l];
            const ds4_weight *ws[3] = {&S->gate_exps, &S->up_exps, &S->down_exps};
            uint8_t **dev[3] = {&x->dev_g[l], &x->dev_u[l], &x->dev_d[l]};
            const uint8_t ***tab[3] = {&x->tab_g[l], &x->tab_u[l], &x->tab_d[l]};
            size_t sz[3] = {x->sz_g, x->sz_u, x->sz_d};
            for (int i = 0; i < 3; i++) {
                size_t bytes = sz[i] * x->E;
                CU_CHECK(cudaMalloc((void **)dev[i], bytes));
                CU_CHECK(cudaMemcpy(*dev[i], ws[i]->data, bytes, cudaMemcpyHostToDevice));
                for (uint32_t e = 0; e < x->E; e++) h[e] = *dev[i] + (size_t)e * sz[i];
                CU_CHECK(cudaMalloc((void **)tab[i], sizeof(void *) * x->E));
                CU_CHECK(cudaMemcpy((void *)*tab[i], h, sizeof(void *) * x->E, cudaMemcpyHostToDevice));
            }
        }
        free(h);
        return x;
    }
    x->n_slots = (uint32_t)(budget / x->slot_bytes);
    if (x->n_slots < hp->n_expert_used) {
        ds4_err_set(err, "GPU expert cache of %llu MiB holds %u experts of %.1f MiB; a token needs %u",
                    (unsigned long long)(budget >> 20), x->n_slots, x->slot_bytes / 1048576.0, hp->n_expert_used);
        free(x);
        return NULL;
    }
    CU_CHECK(cudaMalloc((void **)&x->pool, (size_t)x->n_slots * x->slot_bytes));
    x->map = (int32_t *)malloc(sizeof(int32_t) * x->L * x->E);
    for (size_t i = 0; i < (size_t)x->L * x->E; i++) x->map[i] = -1;
    x->slot_key = (int32_t *)malloc(sizeof(int32_t) * x->n_slots);
    x->slot_used = (uint64_t *)calloc(x->n_slots, sizeof(uint64_t));
    x->slot_tick = (uint64_t *)calloc(x->n_slots, sizeof(uint64_t));
    for (uint32_t i = 0; i < x->n_slots; i++) x->slot_key[i] = -1;
    CU_CHECK(cudaStreamCreateWithFlags(&x->cp, cudaStreamNonBlocking));
    CU_CHECK(cudaEventCreateWithFlags(&x->done, cudaEventDisableTiming));
    /* Pinned host image: the whole file mapping (or memory image), read-only. */
    const void *base = gguf_base(m->gguf);
    size_t fsz = gguf_file_size(m->gguf);
    x->pinned = base && cudaHostRegister((void *)base, fsz, cudaHostRegisterReadOnly | cudaHostRegisterPortable) ==
                            cudaSuccess;
    if (!x->pinned) {
        cudaGetLastError();
        fprintf(stderr, "ds4-cuda: could not pin the model image (%.1f GiB); expert copies use pageable memory\n",
                fsz / 1073741824.0);
    }
    return x;
}

void cu_experts_free(cu_experts *x) {
    if (!x) return;
    if (x->resident) {
        for (uint32_t l = 0; l < x->L; l++) {
            cudaFree(x->dev_g[l]); cudaFree(x->dev_u[l]); cudaFree(x->dev_d[l]);
            cudaFree((void *)x->tab_g[l]); cudaFree((void *)x->tab_u[l]); cudaFree((void *)x->tab_d[l]);
        }
        free(x->dev_g); free(x->dev_u); free(x->dev_d);
        free(x->tab_g); free(x->tab_u); free(x->tab_d);
    } else {
        cudaStreamSynchronize(x->cp);
        if (x->pinned) cudaHostUnregister((void *)gguf_base(x->m->gguf));
        cudaFree(x->pool);
        cudaStreamDestroy(x->cp);
        cudaEventDestroy(x->done);
        if (x->h_wtab) cudaFreeHost(x->h_wtab);
        free(x->map); free(x->slot_key); free(x->slot_used); free(x->slot_tick);
    }
    free(x);
}

bool cu_experts_resident(const cu_experts *x) { return x->resident; }

void cu_experts_tables(cu_experts *x, uint32_t layer, const uint8_t *const **g, const uint8_t *const **u,
                       const uint8_t *const **d) {
    *g = x->tab_g[layer];
    *u = x->tab_u[layer];
    *d = x->tab_d[layer];
}

int cu_experts_fetch(cu_experts *x, uint32_t layer, const int32_t *seg_eid, int nseg, cudaStream_t st,
                     const uint8_t **wg, const uint8_t **wu, const uint8_t **wd, ds4_err *err) {
    if (nseg > x->wtab_cap) {
        if (x->h_wtab) cudaFreeHost(x->h_wtab);
        x->wtab_cap = nseg + 64;
        CU_CHECK(cudaMallocHost((void **)&x->h_wtab, sizeof(void *) * 3 * x->wtab_cap));
    }
    const ds4_layer *S = &x->m->layers[layer];
    const uint8_t *hg = (const uint8_t *)S->gate_exps.data, *hu = (const uint8_t *)S->up_exps.data,
                  *hd = (const uint8_t *)S->down_exps.data;
    x->tick++;
    const uint8_t **og = x->h_wtab, **ou = x->h_wtab + x->wtab_cap, **od = x->h_wtab + 2 * x->wtab_cap;
    for (int z = 0; z < nseg; z++) {
        int32_t e = seg_eid[z];
        if (e < 0) { og[z] = ou[z] = od[z] = NULL; continue; }
        int32_t key = (int32_t)(layer * x->E + (uint32_t)e);
        int32_t s = x->map[key];
        x->lookups++;
        if (s >= 0) {
            x->hits++;
        } else {
            /* LRU among slots the current layer does not use */
            uint64_t best = UINT64_MAX;
            for (uint32_t i = 0; i < x->n_slots; i++)
                if (x->slot_tick[i] != x->tick && x->slot_used[i] < best) { best = x->slot_used[i]; s = (int32_t)i; }
            if (s < 0)
                return ds4_err_set(err, "GPU expert cache (%u slots) is smaller than one layer's %d experts",
                                   x->n_slots, nseg);
            if (x->slot_key[s] >= 0) x->map[x->slot_key[s]] = -1;
            x->slot_key[s] = key;
            x->map[key] = s;
            uint8_t *p = x->pool + (size_t)s * x->slot_bytes;
            CU_CHECK(cudaMemcpyAsync(p, hg + (size_t)e * x->sz_g, x->sz_g, cudaMemcpyHostToDevice, x->cp));
            p += align_up(x->sz_g, SLOT_ALIGN);
            CU_CHECK(cudaMemcpyAsync(p, hu + (size_t)e * x->sz_u, x->sz_u, cudaMemcpyHostToDevice, x->cp));
            p += align_up(x->sz_u, SLOT_ALIGN);
            CU_CHECK(cudaMemcpyAsync(p, hd + (size_t)e * x->sz_d, x->sz_d, cudaMemcpyHostToDevice, x->cp));
            x->misses++;
            x->bytes_copied += x->sz_g + x->sz_u + x->sz_d;
        }
        x->slot_used[s] = ++x->clock;
        x->slot_tick[s] = x->tick;
        uint8_t *p = x->pool + (size_t)s * x->slot_bytes;
        og[z] = p;
        ou[z] = p + align_up(x->sz_g, SLOT_ALIGN);
        od[z] = p + align_up(x->sz_g, SLOT_ALIGN) + align_up(x->sz_u, SLOT_ALIGN);
    }
    CU_CHECK(cudaEventRecord(x->done, x->cp));
    CU_CHECK(cudaMemcpyAsync((void *)wg, og, sizeof(void *) * nseg, cudaMemcpyHostToDevice, st));
    CU_CHECK(cudaMemcpyAsync((void *)wu, ou, sizeof(void *) * nseg, cudaMemcpyHostToDevice, st));
    CU_CHECK(cudaMemcpyAsync((void *)wd, od, sizeof(void *) * nseg, cudaMemcpyHostToDevice, st));
    return 0;
}

void cu_experts_wait(cu_experts *x, cudaStream_t st) { CU_CHECK(cudaStreamWaitEvent(st, x->done, 0)); }

void cu_experts_stats(const cu_experts *x, char *buf, size_t len) {
    if (x->resident) {
        snprintf(buf, len, "experts resident (%.2f GiB)", (double)x->slot_bytes * x->L * x->E / 1073741824.0);
        return;
    }
    snprintf(buf, len, "expert cache %u slots (%.2f GiB, %s host), lookups %llu, hit %.1f%%, copied %.2f GiB",
             x->n_slots, (double)x->n_slots * x->slot_bytes / 1073741824.0, x->pinned ? "pinned" : "pageable",
             (unsigned long long)x->lookups, x->lookups ? 100.0 * x->hits / x->lookups : 0.0,
             x->bytes_copied / 1073741824.0);
}

/* The expert cache: slots, LRU, pinned hot experts, layer plans, prefetch.
 * Contract in experts.h.
 *
 * A slot is one contiguous buffer with three regions (gate, up, down), each
 * sized for the largest slice of that tensor over the layers plus one
 * alignment unit, so any expert of any layer fits any slot and an O_DIRECT
 * read of the aligned extent around a slice stays inside its region.  Slot
 * memory is one anonymous mapping: pages become resident as slots fill, so
 * RSS tracks what the cache actually holds.
 *
 * Read completions carry tag = slot·4 + part.  A slot is LOADING while any of
 * its three reads is in flight; a failed read empties it.  Reads are reaped
 * only on this thread, inside ds4_experts_get/layer (or when the request
 * table is full), so there are no locks. */
#include "experts/experts.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "experts/experts_int.h"
#include "quant/quant.h"

enum { S_EMPTY, S_LOADING, S_READY };

typedef struct slot {
    int32_t key;             /* layer·E + expert; -1 when empty */
    uint8_t state;
    uint8_t pending;         /* reads in flight */
    bool pinned, prefetched, failed;
    int err, failed_part;    /* first failed read: errno, which tensor */
    uint32_t busy;           /* == x->gen while admitted in the current group */
    int32_t prev, next;      /* LRU list of unpinned slots; head = most recent */
} slot;

struct ds4_experts {
    const ds4_model *m;
    ds4_experts_opts o;
    xio *io;
    uint32_t L, E;
    uint64_t *part_off;      /* [L][3] file offset of expert 0's slice */
    uint64_t *part_len;      /* [L][3] bytes of one expert's slice */
    uint64_t region[3], region_off[3];
    uint64_t slot_bytes;
    uint32_t n_slots;
    uint8_t *mem;
    size_t mem_bytes;
    slot *slots;
    int32_t *map;            /* [L·E] slot or -1 */
    int32_t lru_head, lru_tail;
    uint32_t gen;
    /* the current layer */
    bool active;
    uint32_t layer;
    int32_t *plan, *plan_slot; /* ascending distinct experts, their slots */
    uint32_t *cnt;           /* [E] scratch */
    int n_plan, g0, g1, cursor;
    int32_t *last;           /* [L][E] last plan per layer (prediction) */
    int *last_n;
    int inj_layer, inj_expert, inj_errno;
    ds4_expert_stats st;
};

static const ds4_weight *part_weight(const ds4_layer *L, int p) {
    return p == 0 ? &L->gate_exps : p == 1 ? &L->up_exps : &L->down_exps;
}

/* ---- LRU list ---- */

static void lru_unlink(ds4_experts *x, int32_t i) {
    slot *s = &x->slots[i];
    if (s->prev >= 0) x->slots[s->prev].next = s->next; else x->lru_head = s->next;
    if (s->next >= 0) x->slots[s->next].prev = s->prev; else x->lru_tail = s->prev;
    s->prev = s->next = -1;
}

static void lru_push_front(ds4_experts *x, int32_t i) {
    slot *s = &x->slots[i];
    s->prev = -1;
    s->next = x->lru_head;
    if (x->lru_head >= 0) x->slots[x->lru_head].prev = i; else x->lru_tail = i;
    x->lru_head = i;
}

static void lru_push_back(ds4_experts *x, int32_t i) {
    slot *s = &x->slots[i];
    s->next = -1;
    s->prev = x->lru_tail;
    if (x->lru_tail >= 0) x->slots[x->lru_tail].next = i; else x->lru_head = i;
    x->lru_tail = i;
}

/* Least recently used slot that is neither in the current group nor loading. */
static int32_t victim(ds4_experts *x) {
    for (int32_t i = x->lru_tail; i >= 0; i = x->slots[i].prev) {
        const slot *s = &x->slots[i];
        if (s->busy != x->gen && s->pending == 0) return i;
    }
    return -1;
}

/* ---- reads ---- */

static uint8_t *part_dst(ds4_experts *x, int32_t si, uint32_t layer, uint32_t e, int p, uint64_t *off) {
    *off = x->part_off[layer * 3 + p] + (uint64_t)e * x->part_len[layer * 3 + p];
    return x->mem + (size_t)si * x->slot_bytes + x->region_off[p] + (*off % DS4_XIO_ALIGN);
}

static void empty_slot(ds4_experts *x, int32_t si) {
    slot *s = &x->slots[si];
    if (s->key >= 0 && x->map[s->key] == si) x->map[s->key] = -1;
    s->key = -1;
    s->state = S_EMPTY;
    s->failed = s->prefetched = false;
    if (!s->pinned) { lru_unlink(x, si); lru_push_back(x, si); } /* reuse first */
}

static void complete(ds4_experts *x, uint64_t tag, int res) {
    int32_t si = (int32_t)(tag >> 2);
    slot *s = &x->slots[si];
    if (res < 0 && !s->failed) {
        s->failed = true;
        s->err = -res;
        s->failed_part = (int)(tag & 3);
    }
    if (--s->pending) return;
    if (!s->failed) { s->state = S_READY; return; }
    /* A failed read empties the slot; a slot a get() is waiting on keeps the
     * failure for that get() to report. */
    if (x->map[s->key] == si) x->map[s->key] = -1;
    s->state = S_EMPTY;
    if (s->busy != x->gen || !x->active) empty_slot(x, si);
}

static void wait_one(ds4_experts *x) {
    uint64_t tag;
    int res;
    if (xio_wait(x->io, &tag, &res) == 1) complete(x, tag, res);
}

static void drain(ds4_experts *x) {
    while (xio_inflight(x->io) > 0) wait_one(x);
}

/* Starts reading (layer, e) into slot si (evicting what it held). */
static void load(ds4_experts *x, int32_t si, uint32_t layer, uint32_t e, bool prefetch) {
    slot *s = &x->slots[si];
    if (s->key >= 0) {
        if (x->map[s->key] == si) x->map[s->key] = -1;
        if (s->state == S_READY) x->st.evictions++;
    }
    int32_t key = (int32_t)(layer * x->E + e);
    s->key = key;
    x->map[key] = si;
    s->state = S_LOADING;
    s->pending = 3;
    s->failed = false;
    s->prefetched = prefetch;
    bool inject = x->inj_errno && (x->inj_layer < 0 || (uint32_t)x->inj_layer == layer) &&
                  (x->inj_expert < 0 || (uint32_t)x->inj_expert == e);
    for (int p = 0; p < 3; p++) {
        uint64_t off, bytes = 0, tag = (uint64_t)si << 2 | (uint64_t)p;
        uint8_t *dst = part_dst(x, si, layer, e, p, &off);
        if (inject && p == 1) { xio_fail(x->io, tag, -x->inj_errno); continue; }
        if (xio_submit(x->io, dst, off, x->part_len[layer * 3 + p], tag, &bytes, NULL)) {
            xio_fail(x->io, tag, -EIO);
            continue;
        }
        x->st.reads++;
        x->st.bytes_read += bytes;
    }
}

/* ---- open / free ---- */

static int cmp_hot(const void *a, const void *b) {
    const uint64_t *x = a, *y = b; /* {count, key} */
    if (x[0] != y[0]) return x[0] > y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

static int load_hot(ds4_experts *x, ds4_err *err) {
    ds4_hot_table *t = ds4_hot_read(x->o.hot_path, x->m, err);
    if (!t) return -1;
    uint64_t n = 0, (*list)[2] = malloc(sizeof *list * (size_t)x->L * x->E);
    if (!list) { ds4_hot_free(t); return ds4_err_set(err, "out of memory"); }
    for (uint64_t k = 0; k < (uint64_t)x->L * x->E; k++)
        if (t->counts[k]) { list[n][0] = t->counts[k]; list[n][1] = k; n++; }
    ds4_hot_free(t);
    qsort(list, n, sizeof *list, cmp_hot);
    int pct = x->o.hot_pct > 0 ? x->o.hot_pct : 50;
    uint64_t max_pin = (uint64_t)x->n_slots * (uint64_t)(pct > 100 ? 100 : pct) / 100;
    if (max_pin >= x->n_slots) max_pin = x->n_slots - 1; /* keep one slot for streaming */
    if (n > max_pin) n = max_pin;
    for (uint64_t i = 0; i < n; i++) {
        int32_t si = x->lru_tail; /* all empty at open */
        lru_unlink(x, si);
        x->slots[si].pinned = true;
        load(x, si, (uint32_t)(list[i][1] / x->E), (uint32_t)(list[i][1] % x->E), false);
        if (xio_inflight(x->io) > 192) xio_flush(x->io);
    }
    free(list);
    xio_flush(x->io);
    drain(x);
    x->st.n_pinned = (uint32_t)n;
    for (uint32_t i = 0; i < x->n_slots; i++) {
        slot *s = &x->slots[i];
        if (s->pinned && s->state != S_READY)
            return ds4_err_set(err, "%s: loading hot expert (layer %d, expert %d): read failed: %s",
                               x->o.hot_path, s->key < 0 ? -1 : (int)(s->key / (int32_t)x->E),
                               s->key < 0 ? -1 : (int)(s->key % (int32_t)x->E), strerror(s->err));
    }
    x->st.reads = x->st.bytes_read = 0; /* stats count the run, not the warm-up */
    return 0;
}

ds4_experts *ds4_experts_open(const ds4_model *m, const ds4_experts_opts *o, uint64_t session_bytes, ds4_err *err) {
    const char *path = gguf_path(m->gguf);
    if (!path || !strcmp(path, "<memory>"))
        return ds4_err_set(err, "expert streaming needs a model loaded from a file"), NULL;
    ds4_experts *x = calloc(1, sizeof *x);
    if (!x) return ds4_err_set(err, "out of memory"), NULL;
    x->m = m;
    x->o = *o;
    x->L = m->hp.n_layer;
    x->E = m->hp.n_expert;
    x->lru_head = x->lru_tail = -1;
    x->gen = 1;
    const uint8_t *base = gguf_base(m->gguf);
    x->part_off = calloc((size_t)x->L * 3, sizeof *x->part_off);
    x->part_len = calloc((size_t)x->L * 3, sizeof *x->part_len);
    x->map = malloc(sizeof *x->map * (size_t)x->L * x->E);
    x->plan = malloc(sizeof *x->plan * x->E);
    x->plan_slot = malloc(sizeof *x->plan_slot * x->E);
    x->cnt = calloc(x->E, sizeof *x->cnt);
    x->last = malloc(sizeof *x->last * (size_t)x->L * x->E);
    x->last_n = calloc(x->L, sizeof *x->last_n);
    if (!x->part_off || !x->part_len || !x->map || !x->plan || !x->plan_slot || !x->cnt || !x->last || !x->last_n) {
        ds4_err_set(err, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < (size_t)x->L * x->E; i++) x->map[i] = -1;
    for (uint32_t l = 0; l < x->L; l++)
        for (int p = 0; p < 3; p++) {
            const ds4_weight *w = part_weight(&m->layers[l], p);
            uint64_t len = ds4_row_size(w->type, w->ne[0]) * (uint64_t)w->ne[1];
            x->part_off[l * 3 + p] = (uint64_t)((const uint8_t *)w->data - base);
            x->part_len[l * 3 + p] = len;
            uint64_t need = ((len + DS4_XIO_ALIGN - 1) / DS4_XIO_ALIGN + 1) * DS4_XIO_ALIGN;
            if (need > x->region[p]) x->region[p] = need;
            x->st.expert_bytes += len * x->E;
        }
    x->region_off[0] = 0;
    x->region_off[1] = x->region[0];
    x->region_off[2] = x->region[0] + x->region[1];
    x->slot_bytes = x->region[0] + x->region[1] + x->region[2];

    uint64_t cache = o->cache_mb << 20;
    if (!cache && ds4_experts_cache_from_budget(m, o->ram_budget_mb << 20, session_bytes, &cache, err)) goto fail;
    uint64_t ns = cache / x->slot_bytes;
    if (ns > (uint64_t)x->L * x->E) ns = (uint64_t)x->L * x->E; /* everything fits */
    if (ns < 1) {
        ds4_err_set(err, "expert cache of %.1f MiB is smaller than one expert slot (%.2f MiB)",
                    (double)cache / 1048576.0, (double)x->slot_bytes / 1048576.0);
        goto fail;
    }
    x->n_slots = (uint32_t)ns;
    x->mem_bytes = (size_t)ns * x->slot_bytes;
    x->mem = mmap(NULL, x->mem_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (x->mem == MAP_FAILED) {
        x->mem = NULL;
        ds4_err_set(err, "cannot map %zu bytes for the expert cache: %s", x->mem_bytes, strerror(errno));
        goto fail;
    }
    x->slots = calloc(ns, sizeof *x->slots);
    if (!x->slots) { ds4_err_set(err, "out of memory"); goto fail; }
    for (uint32_t i = 0; i < x->n_slots; i++) {
        x->slots[i].key = -1;
        lru_push_back(x, (int32_t)i);
    }
    x->io = xio_open(path, !o->no_direct, !o->no_uring, o->queue_depth, err);
    if (!x->io) goto fail;
    x->st.cache_bytes = x->mem_bytes;
    x->st.slot_bytes = x->slot_bytes;
    x->st.n_slots = x->n_slots;
    x->st.direct = xio_direct(x->io);
    x->st.uring = xio_uring(x->io);
    if (o->hot_path && load_hot(x, err)) goto fail;
    x->st.direct = xio_direct(x->io);
    return x;
fail:
    ds4_experts_free(x);
    return NULL;
}

void ds4_experts_free(ds4_experts *x) {
    if (!x) return;
    if (x->io) xio_close(x->io);
    if (x->mem) munmap(x->mem, x->mem_bytes);
    free(x->slots); free(x->part_off); free(x->part_len); free(x->map);
    free(x->plan); free(x->plan_slot); free(x->cnt); free(x->last); free(x->last_n);
    free(x);
}

/* ---- per layer ---- */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int admit_group_(ds4_experts *x, int from, ds4_err *err);

/* Admits plan entries from `from` on, as many as the cache holds beside the
 * slots already in this group, and submits their misses in one batch.  With
 * pread the reads happen right here, so that time is I/O wait. */
static int admit_group(ds4_experts *x, int from, ds4_err *err) {
    if (xio_uring(x->io)) return admit_group_(x, from, err);
    double t0 = now_s();
    int rc = admit_group_(x, from, err);
    x->st.io_wait_s += now_s() - t0;
    return rc;
}

static int admit_group_(ds4_experts *x, int from, ds4_err *err) {
    x->gen++;
    int i;
    for (;;) {
        for (i = from; i < x->n_plan; i++) {
            uint32_t e = (uint32_t)x->plan[i];
            int32_t key = (int32_t)(x->layer * x->E + e), si = x->map[key];
            x->st.lookups++;
            if (si >= 0) {
                slot *s = &x->slots[si];
                x->st.hits++;
                if (s->pinned) x->st.hits_pinned++;
                else if (s->prefetched) { x->st.hits_prefetch++; s->prefetched = false; }
                if (!s->pinned) { lru_unlink(x, si); lru_push_front(x, si); }
            } else {
                si = victim(x);
                if (si < 0) { x->st.lookups--; break; }
                x->st.misses++;
                load(x, si, x->layer, e, false);
                lru_unlink(x, si);
                lru_push_front(x, si);
            }
            x->slots[si].busy = x->gen;
            x->plan_slot[i] = si;
        }
        if (i > from) break;
        /* Nothing admitted: every free slot still has a prefetch in flight. */
        if (xio_inflight(x->io) == 0)
            return ds4_err_set(err, "expert cache: no slot available for layer %u (%u slots, %u pinned)", x->layer,
                               x->n_slots, x->st.n_pinned);
        wait_one(x);
    }
    xio_flush(x->io);
    x->g0 = from;
    x->g1 = i;
    return 0;
}

/* Reads ahead what layer l will likely use: exact on hash layers (routing by
 * token id), else the experts it chose last time. */
static void prefetch(ds4_experts *x, uint32_t l, const int32_t *tok, int n, int k) {
    const ds4_layer *L = &x->m->layers[l];
    uint32_t budget = x->n_slots / 8 ? x->n_slots / 8 : 1, issued = 0;
    int32_t *ids = x->plan_slot + x->n_plan; /* unused tail of the scratch (n_plan <= E) */
    int nid = 0;
    if (L->hash && L->tid2eid) {
        memset(x->cnt, 0, sizeof *x->cnt * x->E);
        for (int t = 0; t < n; t++)
            for (int i = 0; i < k; i++) {
                int32_t e = L->tid2eid[(size_t)tok[t] * k + i];
                if (e >= 0 && (uint32_t)e < x->E) x->cnt[e] = 1;
            }
        for (uint32_t e = 0; e < x->E; e++)
            if (x->cnt[e] && nid < (int)x->E - x->n_plan) ids[nid++] = (int32_t)e;
    } else {
        for (int i = 0; i < x->last_n[l] && nid < (int)x->E - x->n_plan; i++) ids[nid++] = x->last[(size_t)l * x->E + i];
    }
    for (int i = 0; i < nid && issued < budget; i++) {
        int32_t key = (int32_t)(l * x->E + (uint32_t)ids[i]);
        if (x->map[key] >= 0) continue;
        int32_t si = victim(x);
        if (si < 0) break;
        load(x, si, l, (uint32_t)ids[i], true);
        lru_unlink(x, si);
        lru_push_front(x, si);
        x->st.prefetches++;
        issued++;
    }
    xio_flush(x->io);
}

int ds4_experts_layer(ds4_experts *x, uint32_t layer, const int32_t *eid, int k, const int32_t *tok, int n,
                      ds4_err *err) {
    if (layer >= x->L) return ds4_err_set(err, "expert store: layer %u out of range", layer);
    if (layer == 0) x->st.tokens += (uint64_t)n;
    memset(x->cnt, 0, sizeof *x->cnt * x->E);
    for (int i = 0; i < n * k; i++) {
        if (eid[i] < 0 || (uint32_t)eid[i] >= x->E)
            return ds4_err_set(err, "layer %u: routed expert id %d out of range", layer, eid[i]);
        x->cnt[eid[i]]++;
    }
    x->n_plan = 0;
    for (uint32_t e = 0; e < x->E; e++)
        if (x->cnt[e]) x->plan[x->n_plan++] = (int32_t)e;
    memcpy(x->last + (size_t)layer * x->E, x->plan, sizeof *x->plan * (size_t)x->n_plan);
    x->last_n[layer] = x->n_plan;
    x->layer = layer;
    x->active = true;
    x->cursor = 0;
    if (admit_group(x, 0, err)) { x->active = false; return -1; }
    /* Read ahead only when this layer fit: otherwise the slots are all spoken for. */
    if (!x->o.no_prefetch && x->g1 == x->n_plan && layer + 1 < x->L && xio_uring(x->io))
        prefetch(x, layer + 1, tok, n, k);
    return 0;
}

int ds4_experts_get(ds4_experts *x, uint32_t layer, int32_t e, const void *w[3], ds4_err *err) {
    if (!x->active || layer != x->layer) return ds4_err_set(err, "expert store: layer %u not planned", layer);
    while (x->cursor < x->n_plan && x->plan[x->cursor] < e) x->cursor++;
    if (x->cursor >= x->n_plan || x->plan[x->cursor] != e)
        return ds4_err_set(err, "expert store: layer %u expert %d not in the plan", layer, e);
    if (x->cursor >= x->g1 && admit_group(x, x->cursor, err)) return -1;
    int32_t si = x->plan_slot[x->cursor];
    slot *s = &x->slots[si];
    if (s->pending) {
        double t0 = now_s();
        while (s->pending && xio_inflight(x->io) > 0) wait_one(x);
        x->st.io_wait_s += now_s() - t0;
    }
    if (s->failed || s->state != S_READY) {
        const ds4_weight *wt = part_weight(&x->m->layers[layer], s->failed ? s->failed_part : 0);
        uint64_t off;
        part_dst(x, si, layer, (uint32_t)e, s->failed ? s->failed_part : 0, &off);
        ds4_err_set(err, "layer %u expert %d: reading %s (%llu bytes at offset %llu of %s) failed: %s (errno %d)",
                    layer, e, wt->name, (unsigned long long)x->part_len[layer * 3 + (s->failed ? s->failed_part : 0)],
                    (unsigned long long)off, gguf_path(x->m->gguf), strerror(s->failed ? s->err : EIO),
                    s->failed ? s->err : EIO);
        drain(x);
        empty_slot(x, si);
        ds4_experts_layer_end(x);
        return -1;
    }
    for (int p = 0; p < 3; p++) {
        uint64_t off;
        w[p] = part_dst(x, si, layer, (uint32_t)e, p, &off);
    }
    return 0;
}

void ds4_experts_layer_end(ds4_experts *x) {
    x->active = false;
    x->gen++;
    /* Slots whose read failed while they were busy can be reused now. */
    for (uint32_t i = 0; i < x->n_slots; i++)
        if (x->slots[i].failed && !x->slots[i].pending) empty_slot(x, (int32_t)i);
}

/* ---- stats, testing ---- */

void ds4_experts_stats_get(const ds4_experts *x, ds4_expert_stats *st) { *st = x->st; }

void ds4_experts_stats_reset(ds4_experts *x) {
    ds4_expert_stats keep = x->st;
    memset(&x->st, 0, sizeof x->st);
    x->st.cache_bytes = keep.cache_bytes;
    x->st.slot_bytes = keep.slot_bytes;
    x->st.expert_bytes = keep.expert_bytes;
    x->st.n_slots = keep.n_slots;
    x->st.n_pinned = keep.n_pinned;
    x->st.direct = xio_direct(x->io);
    x->st.uring = keep.uring;
}

void ds4_experts_stats_print(FILE *f, const ds4_expert_stats *st) {
    double tok = st->tokens ? (double)st->tokens : 1.0;
    double hit = st->lookups ? 100.0 * (double)st->hits / (double)st->lookups : 0.0;
    double pin = st->lookups ? 100.0 * (double)st->hits_pinned / (double)st->lookups : 0.0;
    fprintf(f,
            "experts: %llu tokens, hit %.1f%% (pinned %.1f%%, prefetched %llu/%llu), %.2f MiB read/token, "
            "I/O wait %.2f ms/token; cache %u slots x %.2f MiB = %.0f MiB (%.0f%% of %.0f MiB experts), %u pinned, "
            "%s, %s\n",
            (unsigned long long)st->tokens, hit, pin, (unsigned long long)st->hits_prefetch,
            (unsigned long long)st->prefetches, (double)st->bytes_read / 1048576.0 / tok, st->io_wait_s * 1e3 / tok,
            st->n_slots, (double)st->slot_bytes / 1048576.0, (double)st->cache_bytes / 1048576.0,
            st->expert_bytes ? 100.0 * (double)st->cache_bytes / (double)st->expert_bytes : 0.0,
            (double)st->expert_bytes / 1048576.0, st->n_pinned, st->direct ? "O_DIRECT" : "buffered",
            st->uring ? "io_uring" : "pread");
}

void ds4_experts_inject_error(ds4_experts *x, int layer, int expert, int errno_val) {
    x->inj_layer = layer;
    x->inj_expert = expert;
    x->inj_errno = errno_val;
}

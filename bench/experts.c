/* bench/experts: decode speed and expert-cache behaviour of one
 * configuration (driven by bench/experts.sh).
 *
 * Prefills --prefill random tokens, then decodes --decode tokens (each next
 * token = argmax, so runs are deterministic), and prints one line:
 *   prefill tok/s, decode tok/s, decode hit rate, MiB read and I/O wait per
 *   decode token, peak RSS (VmHWM), and an FNV-1a hash of every logit
 * so that a streamed run can be checked bitwise against the resident one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/engine.h"
#include "experts/experts.h"
#include "model/model.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long vm_hwm_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) v = atol(line + 6);
    if (f) fclose(f);
    return v;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

int main(int argc, char **argv) {
    const char *model = NULL;
    int prefill = 64, decode = 64, threads = 0;
    uint64_t seed = 1;
    ds4_engine_opts o;
    ds4_engine_opts_default(&o);
    ds4_err err = {{0}};
    for (int i = 1; i < argc; i++) {
        int r = ds4_experts_parse_arg(&o.experts, argc, argv, &i, &err);
        if (r < 0) { fprintf(stderr, "experts: %s\n", err.msg); return 2; }
        if (r > 0) continue;
        const char *a = argv[i];
        if (i + 1 >= argc) { fprintf(stderr, "experts: bad option '%s'\n", a); return 2; }
        if (!strcmp(a, "-m")) model = argv[++i];
        else if (!strcmp(a, "--prefill")) prefill = atoi(argv[++i]);
        else if (!strcmp(a, "--decode")) decode = atoi(argv[++i]);
        else if (!strcmp(a, "--seed")) seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(a, "-t")) threads = atoi(argv[++i]);
        else { fprintf(stderr, "experts: bad option '%s'\n", a); return 2; }
    }
    if (!model || prefill < 1 || decode < 0) {
        fprintf(stderr, "usage: experts -m MODEL [--prefill N] [--decode N] [--seed S] [-t N] [expert flags]\n");
        ds4_experts_usage(stderr);
        return 2;
    }
    ds4_model *m = ds4_model_load(model, &err);
    if (!m) { fprintf(stderr, "experts: %s\n", err.msg); return 1; }
    uint32_t V = m->hp.n_vocab;
    o.n_threads = threads;
    o.ctx_max = (uint32_t)(prefill + decode + 1);
    ds4_session *s = ds4_session_new(m, &o, NULL, &err);
    if (!s) { fprintf(stderr, "experts: %s\n", err.msg); return 1; }
    int32_t *t = malloc(sizeof *t * (size_t)prefill);
    for (int i = 0; i < prefill; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        t[i] = (int32_t)((seed >> 33) % V);
    }
    float *lg = malloc(sizeof(float) * V);
    uint64_t h = 0xcbf29ce484222325ull;
    double t0 = now();
    if (ds4_session_eval(s, t, prefill, DS4_LOGITS_LAST, lg, &err)) { fprintf(stderr, "experts: %s\n", err.msg); return 1; }
    double t1 = now();
    h = fnv(h, lg, sizeof(float) * V);
    ds4_expert_stats pst = {0}, st = {0};
    if (s->experts) { ds4_experts_stats_get(s->experts, &pst); ds4_experts_stats_reset(s->experts); }
    for (int d = 0; d < decode; d++) {
        int32_t best = 0;
        for (uint32_t v = 1; v < V; v++)
            if (lg[v] > lg[best]) best = (int32_t)v;
        if (ds4_session_eval(s, &best, 1, DS4_LOGITS_LAST, lg, &err)) { fprintf(stderr, "experts: %s\n", err.msg); return 1; }
        h = fnv(h, lg, sizeof(float) * V);
    }
    double t2 = now();
    if (s->experts) ds4_experts_stats_get(s->experts, &st);
    double dt = decode ? (double)decode : 1.0;
    ds4_model_bytes mb;
    ds4_experts_model_bytes(m, &mb);
    printf("experts_mib=%.0f ", mb.experts / 1048576.0);
    printf("prefill_tok_s=%.2f decode_tok_s=%.3f hit_pct=%.1f pinned_pct=%.1f prefill_hit_pct=%.1f "
           "read_mib_tok=%.2f io_wait_ms_tok=%.2f cache_mib=%.0f slots=%u pinned=%u io=%s/%s peak_rss_mib=%.1f "
           "logits_fnv=%016llx\n",
           prefill / (t1 - t0), decode / (t2 - t1), st.lookups ? 100.0 * st.hits / st.lookups : 100.0,
           st.lookups ? 100.0 * st.hits_pinned / st.lookups : 0.0,
           pst.lookups ? 100.0 * pst.hits / pst.lookups : 100.0, st.bytes_read / 1048576.0 / dt,
           st.io_wait_s * 1e3 / dt, st.cache_bytes / 1048576.0, st.n_slots, st.n_pinned,
           s->experts ? (st.direct ? "direct" : "buffered") : "resident", s->experts ? (st.uring ? "uring" : "pread") : "mmap",
           vm_hwm_kb() / 1024.0, (unsigned long long)h);
    free(t);
    free(lg);
    ds4_session_free(s);
    ds4_model_free(m);
    return 0;
}

/* ds4-bench smoke test (no real benchmark): frontier schedules, a two-
 * frontier run on the tiny model (rows, roofline fields, generation restored
 * by snapshot so the next frontier's logits are bitwise those of a plain
 * prefill), the bandwidth probe on a small buffer, the per-phase profile
 * lines (--phases: every row has them, the phases add up to the measured
 * time; with the roofline, each phase's fraction of it agrees with its
 * bytes), the per-phase weight bytes against MODEL.md's shapes, and the
 * ds4-bench program's CSV + summary output. */
#include "test.h"

#include "bench/bench.h"
#include "convert/mkmodel.h"
#include "engine/engine.h"
#include "model/model.h"
#include "quant/quant.h"

static char tiny_path[512];

static const char *tiny_model(void) {
    if (tiny_path[0]) return tiny_path;
    snprintf(tiny_path, sizeof tiny_path, "%s/tiny.gguf", test_tmpdir());
    ds4_hparams hp;
    ds4_err err = {{0}};
    if (ds4_mkmodel_preset("tiny", &hp, &err)) { fprintf(stderr, "%s\n", err.msg); exit(2); }
    hp.idx_topk = 4; /* the indexer selects within the short test */
    ds4_mkmodel_opts o = {.recipe = "q8_0", .seed = 3, .n_threads = 2};
    if (ds4_mkmodel(tiny_path, &hp, &o, NULL, &err)) { fprintf(stderr, "mkmodel: %s\n", err.msg); exit(2); }
    return tiny_path;
}

static uint64_t fnv(const float *v, size_t n) {
    uint64_t h = 1469598103934665603ull;
    const unsigned char *p = (const unsigned char *)v;
    for (size_t i = 0; i < n * sizeof(float); i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

TEST(frontiers) {
    ds4_bench_opts o;
    ds4_bench_opts_default(&o);
    uint32_t f[16];
    o.ctx_start = 100; o.ctx_max = 1000; o.step_mul = 2;
    CHECK_EQ_INT(ds4_bench_frontiers(&o, f, 16), 4);
    CHECK(f[0] == 100 && f[1] == 200 && f[2] == 400 && f[3] == 800);
    o.step_mul = 0; o.step_incr = 300;
    CHECK_EQ_INT(ds4_bench_frontiers(&o, f, 16), 4);
    CHECK(f[0] == 100 && f[3] == 1000);
    o.step_incr = 0;
    CHECK_EQ_INT(ds4_bench_frontiers(&o, f, 16), 1);
    o.ctx_start = 2000;
    CHECK_EQ_INT(ds4_bench_frontiers(&o, f, 16), 0);
    o.ctx_start = 10; o.ctx_max = 12; o.step_mul = 1.01; /* ceil never stalls */
    CHECK_EQ_INT(ds4_bench_frontiers(&o, f, 16), 3);
}

TEST(ids_match_peer_lcg) {
    int32_t v[3];
    ds4_bench_ids(1, 2048, v, 3);
    /* st = 1*1664525+1013904223 = 1015568748; % 2048 = 1388 */
    CHECK_EQ_INT(v[0], 1015568748u % 2048);
    uint32_t st = 1015568748u;
    st = st * 1664525u + 1013904223u;
    CHECK_EQ_INT(v[1], st % 2048);
}

TEST(run_two_frontiers) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(tiny_model(), &err);
    CHECKF(m != NULL, "%s", err.msg);
    if (!m) return;
    size_t V = m->hp.n_vocab;
    ds4_bench_opts o;
    ds4_bench_opts_default(&o);
    o.ctx_start = 24; o.ctx_max = 48; o.step_incr = 24; o.gen = 5; o.n_threads = 2;
    o.roofline = true; o.bandwidth = 10e9; /* no measurement in the test */
    ds4_bench_result r, r0;
    CHECKF(ds4_bench_run(m, &o, &r, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(r.n_rows, 2);
    if (r.n_rows == 2) {
        CHECK(r.rows[0].frontier == 24 && r.rows[1].frontier == 48);
        CHECK(r.rows[0].n_prefill == 24 && r.rows[1].n_prefill == 24);
        for (int i = 0; i < 2; i++) {
            CHECK(r.rows[i].prefill_tps > 0 && isfinite(r.rows[i].prefill_tps));
            CHECK(r.rows[i].gen_tps > 0 && isfinite(r.rows[i].gen_tps));
            CHECK(r.rows[i].bytes_per_token > r.weight_bytes_per_token);
            CHECK(r.rows[i].roofline_fraction > 0);
            CHECK(r.rows[i].bandwidth == 10e9); /* a fixed bandwidth is used as given */
            double f = ds4_bench_prefill_flops(m, r.rows[i].frontier - r.rows[i].n_prefill, r.rows[i].n_prefill);
            CHECK(fabs(r.rows[i].prefill_gflops * 1e9 * r.rows[i].prefill_s / f - 1) < 1e-9);
        }
        CHECK(r.rows[1].kv_bytes > r.rows[0].kv_bytes);
        /* touched weights: more than the LM head, less than the whole file */
        CHECK(r.weight_bytes_per_token > (uint64_t)ds4_row_size(m->output.type, m->output.ne[0]) * V);
        CHECK(r.weight_bytes_per_token < gguf_file_size(m->gguf));
        CHECK(r.roofline_fraction > 0 && r.prefill_tps > 0 && r.gen_tps > 0);
    }

    /* generation is undone: gen 0 and gen 5 leave the same logits at 48, and
     * those are a plain 48-token prefill's last row */
    o.gen = 0; o.roofline = false;
    CHECKF(ds4_bench_run(m, &o, &r0, &err) == 0, "%s", err.msg);
    CHECK(r0.last_logits_hash == r.last_logits_hash);
    CHECK(r0.gen_tps == 0);
    ds4_bench_result_free(&r0);
    int32_t ids[48];
    ds4_bench_ids(1, (int32_t)V, ids, 48);
    float *lg = malloc(sizeof(float) * V * 48);
    ds4_engine_opts eo;
    ds4_engine_opts_default(&eo);
    eo.n_threads = 2;
    CHECK(lg && ds4_eval_sequence(m, &eo, ids, 48, 0, 0, lg, &err) == 0);
    if (lg) {
        CHECK(fnv(lg + 47 * V, V) == r.last_logits_hash);
        /* the first generated id is the greedy continuation of the prompt */
        int32_t best = 0;
        for (size_t t = 1; t < V; t++)
            if (lg[47 * V + t] > lg[47 * V + best]) best = (int32_t)t;
        CHECK_EQ_INT(r.generated[0], best);
    }
    free(lg);

    /* --repeat: every repeat starts from the same state, so the rows, the
     * last logits and the generated ids are those of a single run */
    o.gen = 5; o.roofline = true; o.repeat = 3;
    CHECKF(ds4_bench_run(m, &o, &r0, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(r0.n_rows, 2);
    CHECK(r0.last_logits_hash == r.last_logits_hash);
    CHECK(memcmp(r0.generated, r.generated, sizeof(int32_t) * 6) == 0);
    if (r0.n_rows == 2)
        for (int i = 0; i < 2; i++) {
            CHECK(r0.rows[i].kv_bytes == r.rows[i].kv_bytes);
            CHECK(r0.rows[i].bytes_per_token == r.rows[i].bytes_per_token);
            CHECK(r0.rows[i].prefill_tps > 0 && r0.rows[i].gen_tps > 0);
        }
    ds4_bench_result_free(&r0);
    o.repeat = 1;

    /* explicit tokens are cycled; out-of-range ids are refused */
    int32_t bad[2] = {1, (int32_t)V};
    o.tokens = bad; o.n_tokens = 2;
    CHECK(ds4_bench_run(m, &o, &r0, &err) != 0);
    CHECK_STR_CONTAINS(err.msg, "out of range");
    o.tokens = NULL; o.n_tokens = 0;

    /* the last frontier plus the generation must fit the model's context
     * length (lowered in memory): 48 + 5 past 52 is refused, 48 + 4 runs */
    o.roofline = false;
    m->hp.ctx_len = 52;
    CHECK(ds4_bench_run(m, &o, &r0, &err) != 0);
    CHECK_STR_CONTAINS(err.msg, "past the model's context length of 52");
    ds4_bench_result_free(&r0);
    o.gen = 4;
    CHECKF(ds4_bench_run(m, &o, &r0, &err) == 0, "%s", err.msg);
    CHECK_EQ_INT(r0.n_rows, 2);
    ds4_bench_result_free(&r0);
    ds4_bench_result_free(&r);
    ds4_model_free(m);
}

/* With expert streaming the rows carry the generation's cache figures, and
 * the streamed run computes exactly what the resident run does. */
TEST(expert_columns) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(tiny_model(), &err);
    CHECKF(m != NULL, "%s", err.msg);
    if (!m) return;
    ds4_bench_opts o;
    ds4_bench_opts_default(&o);
    o.ctx_start = 32; o.gen = 6; o.n_threads = 2;
    ds4_bench_result res, str;
    CHECKF(ds4_bench_run(m, &o, &res, &err) == 0, "%s", err.msg);
    o.experts.cache_mb = 1; /* well under the tiny model's routed experts */
    o.experts.no_direct = true;
    CHECKF(ds4_bench_run(m, &o, &str, &err) == 0, "%s", err.msg);
    if (str.n_rows == 1 && res.n_rows == 1) {
        const ds4_bench_row *r = &str.rows[0];
        CHECKF(r->expert_hit_rate >= 0 && r->expert_hit_rate < 1, "hit rate %g", r->expert_hit_rate);
        CHECK(r->expert_mb_per_token > 0);
        CHECK(r->expert_io_ms_per_token >= 0);
        CHECK_EQ_INT(res.rows[0].expert_mb_per_token, 0);
        CHECK(str.last_logits_hash == res.last_logits_hash);
        CHECK(memcmp(str.generated, res.generated, sizeof(int32_t) * (size_t)(o.gen + 1)) == 0);
    }
    ds4_bench_result_free(&res);
    ds4_bench_result_free(&str);
    ds4_model_free(m);
}

/* "# phases MODE frontier=F us_per_token k=v ... total=T": T, and whether
 * the line names phase `need`. */
static double phase_total(const char *line, const char *need, int *has) {
    const char *t = strstr(line, " total=");
    char key[32];
    snprintf(key, sizeof key, " %s=", need);
    *has = strstr(line, key) != NULL;
    return t ? atof(t + 7) : -1;
}

TEST(phases) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(tiny_model(), &err);
    CHECKF(m != NULL, "%s", err.msg);
    if (!m) return;
    ds4_bench_opts o;
    ds4_bench_opts_default(&o);
    o.ctx_start = 24; o.ctx_max = 48; o.step_incr = 24; o.gen = 4; o.n_threads = 2; o.phases = true;
    o.roofline = true; o.bandwidth = 10e9; /* and the per-phase roofline line */
    uint64_t by[DS4_PHASE_N];
    ds4_bench_phase_weight_bytes(m, by);
    double gu_us = -1;
    int roof = 0;
    char *buf = NULL;
    size_t len = 0;
    o.csv = open_memstream(&buf, &len);
    ds4_bench_result res;
    int rc = ds4_bench_run(m, &o, &res, &err);
    fclose(o.csv);
    CHECKF(rc == 0, "%s", err.msg);
    int pre = 0, gen = 0;
    for (char *line = buf, *nl; rc == 0 && line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = 0;
        int has;
        if (!strncmp(line, "# phases prefill frontier=", 26)) {
            const ds4_bench_row *r = &res.rows[pre < res.n_rows ? pre : 0];
            double tot = phase_total(line, "gate_up", &has), wall = r->prefill_s * 1e6 / r->n_prefill;
            CHECKF(has && tot > 0.5 * wall && tot <= wall * 1.01, "prefill phases total %g us/token, wall %g: %s",
                   tot, wall, line);
            pre++;
        } else if (!strncmp(line, "# phases gen frontier=", 22)) {
            const ds4_bench_row *r = &res.rows[gen < res.n_rows ? gen : 0];
            double tot = phase_total(line, "attn", &has), wall = r->gen_s * 1e6 / o.gen;
            CHECKF(has && tot > 0.5 * wall && tot <= wall * 1.01, "gen phases total %g us/token, wall %g: %s", tot,
                   wall, line);
            const char *g = strstr(line, " gate_up=");
            gu_us = g ? atof(g + 9) : -1;
            gen++;
        } else if (!strncmp(line, "# phases gen_roofline frontier=", 31)) {
            /* follows its row's gen line: fraction x time x bandwidth = the phase's bytes */
            const char *g = strstr(line, " gate_up="), *h = strstr(line, " attn=");
            double frac = g ? atof(g + 9) : -1, est = frac * 10e9 * gu_us * 1e-6;
            CHECKF(frac > 0 && gu_us > 0 && fabs(est / (double)by[DS4_PHASE_GATE_UP] - 1) < 0.05,
                   "gate_up %g of the roofline over %g us: %g bytes, want %llu", frac, gu_us, est,
                   (unsigned long long)by[DS4_PHASE_GATE_UP]);
            CHECK(h != NULL && strstr(line, " route=") == NULL); /* KV rows count; a tid2eid row is noise */
            roof++;
        }
    }
    CHECK_EQ_INT(pre, 2);
    CHECK_EQ_INT(gen, 2);
    CHECK_EQ_INT(roof, 2);
    if (rc == 0) ds4_bench_result_free(&res);
    free(buf);
    ds4_model_free(m);
}

TEST(membw_small) {
    double bw = ds4_bench_membw(2, (size_t)8 << 20, 1);
    CHECK(bw > 1e8 && isfinite(bw)); /* any machine reads more than 100 MB/s */
    ds4_membw *p = ds4_membw_new(2, (size_t)8 << 20);
    CHECK(p != NULL);
    for (int i = 0; i < 2; i++) { /* the probe is reusable */
        bw = ds4_membw_measure(p, 1);
        CHECK(bw > 1e8 && isfinite(bw));
    }
    ds4_membw_free(p);
    CHECK(ds4_membw_measure(NULL, 1) == 0);
}

TEST(program_output) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "%s/ds4-bench -m %s --ctx-start 16 --ctx-max 32 --step-incr 16 --gen 3 -t 2 --bandwidth 10 2>&1",
             test_bindir(), tiny_model());
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL);
    if (!p) return;
    char line[512], last[512] = "";
    int rows = 0, header = 0;
    while (fgets(line, sizeof line, p)) {
        if (!strncmp(line, "frontier,", 9)) header++;
        else if (line[0] >= '0' && line[0] <= '9') rows++;
        snprintf(last, sizeof last, "%s", line);
    }
    CHECK(pclose(p) == 0);
    CHECK_EQ_INT(header, 1);
    CHECK_EQ_INT(rows, 2);
    const char *lp = last; /* a pointer: the macro's NULL check on an array warns */
    CHECK_STR_CONTAINS(lp, "summary prefill_tps=");
    CHECK_STR_CONTAINS(lp, "roofline_fraction=");

    /* bad numbers are refused (exit 2) with the option and value named,
     * before any model is loaded */
    static const struct { const char *args, *msg; } bad[] = {
        { "--bandwidth -5", "--bandwidth expects a number in (0, 1e+06], got '-5'" },
        { "--bandwidth nan", "got 'nan'" },
        { "--step-mul abc", "--step-mul expects a number in (1, 1e+06], got 'abc'" },
        { "--step-mul 1", "got '1'" },
        { "--gen -1", "--gen expects an integer in [0, 4294967295], got '-1'" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s/ds4-bench -m /nonexistent.gguf %s 2>&1", test_bindir(), bad[i].args);
        p = popen(cmd, "r");
        CHECK(p != NULL);
        if (!p) continue;
        char out[512] = "";
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = 0;
        int st = pclose(p);
        CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s: status %d", bad[i].args, st);
        const char *op = out;
        CHECK_STR_CONTAINS(op, bad[i].msg);
    }
}

/* The arithmetic model against the shapes of MODEL.md, from the hparams
 * alone: position 0 (one attention row, no compressed row), one more row,
 * and the step where the indexer starts (more than top-k compressed rows
 * in a ratio-4 layer: its projections and scores, the rows capped); a
 * token without logits gets only the last layer's KV side. */
TEST(flops) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(tiny_model(), &err);
    CHECKF(m != NULL, "%s", err.msg);
    if (!m) return;
    const ds4_hparams *hp = &m->hp;
    double D = hp->n_embd, nh = hp->n_head, dh = hp->head_dim, F = hp->expert_ff, nI = hp->idx_n_head,
           dI = hp->idx_head_dim, att = 2 * nh * dh; /* q·k + p·v per row */
    double macs = 0, idx = 0, kvside = 0;
    int n4 = 0;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        int r = hp->compress[l];
        if (l + 1 == hp->n_layer) { /* the last layer's KV side: all a token without logits gets there */
            kvside = ds4_hc_mix(hp) * ds4_hc_dim(hp) + D * dh;
            if (r > 0) kvside += 2 * D * (r == 4 ? 2 : 1) * dh;
            if (r == 4) kvside += 2 * D * 2 * dI;
        }
        macs += 2.0 * ds4_hc_mix(hp) * ds4_hc_dim(hp);                 /* mHC mixes */
        macs += D * hp->q_lora + hp->q_lora * nh * dh + D * dh;        /* q_a, q_b, kv */
        macs += nh * dh * hp->o_lora + hp->o_groups * hp->o_lora * D; /* out_a (G groups), out_b */
        if (r > 0) macs += 2 * D * (r == 4 ? 2 : 1) * dh;              /* compressor kv, gate */
        if (r == 4) macs += 2 * D * 2 * dI, n4++;                      /* indexer compressor */
        macs += 3 * D * F * (hp->n_expert_shared + hp->n_expert_used); /* shared + routed */
        if (l >= hp->n_hash) macs += D * hp->n_expert;                  /* router */
        macs += att;                                                    /* one row */
    }
    /* the last layer's share, for a token whose output is read */
    double lastl = 2.0 * ds4_hc_mix(hp) * ds4_hc_dim(hp) + D * hp->q_lora + hp->q_lora * nh * dh + D * dh +
                   nh * dh * hp->o_lora + hp->o_groups * hp->o_lora * D +
                   3 * D * F * (hp->n_expert_shared + hp->n_expert_used) +
                   (hp->n_layer - 1 >= hp->n_hash ? D * hp->n_expert : 0) + att;
    int rl = hp->compress[hp->n_layer - 1];
    if (rl > 0) lastl += 2 * D * (rl == 4 ? 2 : 1) * dh;
    if (rl == 4) lastl += 2 * D * 2 * dI;
    CHECK(kvside > 0 && kvside < lastl);
    double head = (double)ds4_hc_dim(hp) * hp->hc_mult + D * hp->n_vocab;
    CHECK(ds4_bench_token_flops(m, 0, true) == 2 * (macs + head));
    CHECK(ds4_bench_token_flops(m, 0, false) == 2 * (macs - lastl + kvside));
    CHECK(ds4_bench_token_flops(m, 1, true) - ds4_bench_token_flops(m, 0, true) == 2 * att * hp->n_layer);
    CHECK(ds4_bench_token_flops(m, 1, false) - ds4_bench_token_flops(m, 0, false) == 2 * att * (hp->n_layer - 1));
    /* seen = 4·topk + 3 -> 4·topk + 4 positions (< window): one raw row more
     * everywhere; ratio-4 layers go from topk rows to the indexer's topk of
     * topk + 1 (its projections and scores); ratio 128 unchanged */
    uint32_t p = 4 * hp->idx_topk + 2;
    CHECK(p + 2 < hp->window && p + 2 < 128);
    idx = hp->q_lora * nI * dI + D * nI + nI * dI * (hp->idx_topk + 1);
    CHECK(ds4_bench_token_flops(m, p + 1, true) - ds4_bench_token_flops(m, p, true) ==
          2 * (att * hp->n_layer + idx * n4));
    double sum = 0;
    for (uint32_t i = 0; i < 24; i++) sum += ds4_bench_token_flops(m, 10 + i, i == 23);
    CHECK(ds4_bench_prefill_flops(m, 10, 24) == sum);
    ds4_model_free(m);
}

/* The per-phase weight bytes against the shapes of MODEL.md, from the
 * hparams and each tensor's storage type alone; the total is their sum
 * plus the f32 vectors. */
TEST(phase_bytes) {
    ds4_err err = {{0}};
    ds4_model *m = ds4_model_load(tiny_model(), &err);
    CHECKF(m != NULL, "%s", err.msg);
    if (!m) return;
    const ds4_hparams *hp = &m->hp;
    uint64_t D = hp->n_embd, nh = hp->n_head, dh = hp->head_dim, F = hp->expert_ff, nI = hp->idx_n_head,
             dI = hp->idx_head_dim, k = hp->n_expert_used, E = hp->n_expert, G = hp->o_groups, ro = hp->o_lora,
             HD = ds4_hc_dim(hp), mix = ds4_hc_mix(hp);
    uint64_t want[DS4_PHASE_N] = {0}, got[DS4_PHASE_N];
#define RS(w, n) ((uint64_t)ds4_row_size((w).type, (int64_t)(n)))
    want[DS4_PHASE_HC] = RS(m->tok_embd, D);
    want[DS4_PHASE_HEAD] = RS(m->output, D) * hp->n_vocab + RS(m->out_hc_fn, HD) * hp->hc_mult;
    int n4 = 0;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const ds4_layer *L = &m->layers[l];
        int r = hp->compress[l];
        uint64_t Fs = hp->n_expert_shared ? F * hp->n_expert_shared : 0;
        want[DS4_PHASE_HC] += (RS(L->hc_attn_fn, HD) + RS(L->hc_ffn_fn, HD)) * mix;
        want[DS4_PHASE_ATTN_PROJ] += RS(L->q_a, D) * hp->q_lora + RS(L->kv, D) * dh;
        if (r > 0) want[DS4_PHASE_ATTN_PROJ] += (RS(L->comp_kv, D) + RS(L->comp_gate, D)) * (r == 4 ? 2 : 1) * dh;
        if (r == 4) {
            want[DS4_PHASE_ATTN_PROJ] += (RS(L->idx_comp_kv, D) + RS(L->idx_comp_gate, D)) * 2 * dI + RS(L->idx_proj, D) * nI;
            want[DS4_PHASE_Q_B] += RS(L->idx_q_b, hp->q_lora) * nI * dI;
            n4++;
        }
        want[DS4_PHASE_Q_B] += RS(L->q_b, hp->q_lora) * nh * dh;
        want[DS4_PHASE_OUT_A] += RS(L->out_a, nh * dh / G) * G * ro;
        want[DS4_PHASE_OUT_B] += RS(L->out_b, G * ro) * D;
        if (l < hp->n_hash) { /* a decode step's k router rows */
            want[DS4_PHASE_ROUTE] += k * 4;
            want[DS4_PHASE_ROUTER] += RS(L->gate_inp, D) * k;
        } else {
            want[DS4_PHASE_ROUTER] += RS(L->gate_inp, D) * E + E * 4;
        }
        want[DS4_PHASE_GATE_UP] += (RS(L->gate_sh, D) + RS(L->up_sh, D)) * Fs + k * (RS(L->gate_exps, D) + RS(L->up_exps, D)) * F;
        want[DS4_PHASE_DOWN] += RS(L->down_sh, Fs) * D + k * RS(L->down_exps, F) * D;
    }
#undef RS
    CHECK(n4 > 0 && hp->n_hash > 0); /* the tiny model has indexer and hash layers */
    ds4_bench_phase_weight_bytes(m, got);
    uint64_t sum = 0;
    for (int i = 0; i < DS4_PHASE_N; i++) {
        CHECKF(got[i] == want[i], "phase %s: %llu bytes, want %llu", ds4_phase_name(i), (unsigned long long)got[i],
               (unsigned long long)want[i]);
        sum += got[i];
    }
    uint64_t vec = (2 * D + 2 * hp->hc_mult) * 4 +
                   hp->n_layer * (2 * D + hp->q_lora + dh + nh + 2 * mix + 6) * 4;
    CHECK(ds4_bench_weight_bytes_per_token(m) == sum + vec);
    ds4_model_free(m);
}

int main(void) {
    RUN(frontiers);
    RUN(flops);
    RUN(phase_bytes);
    RUN(ids_match_peer_lcg);
    RUN(run_two_frontiers);
    RUN(expert_columns);
    RUN(phases);
    RUN(membw_small);
    RUN(program_output);
    remove(tiny_path);
    rmdir(test_tmpdir());
    TEST_END();
}

/* Logits comparison of DwarfStar against a peer engine (llama.cpp).
 *
 *   build/bench/peercmp OURS.f32 VOCAB PEER.txt [--skip-margin M] [--tol T] [--per-pos]
 *
 * OURS.f32 is `ds4 --dump-logits` output: raw f32 [n_pos x VOCAB].  PEER.txt
 * is the text the peer harness (shared/peer/peer_llama.c -k K -a) prints:
 * lines "logits POS TOKEN:LOGIT ..." with the peer's top-K raw logits at
 * every prompt position, best first; other lines are ignored.
 *
 * Per position it compares our logits at the peer's K tokens with the
 * peer's values: relative error = ||ours - peer||_2 / ||peer||_2 over those
 * K entries (the full row is not available from the peer), and whether our
 * argmax over the whole vocabulary is the peer's top-1.  A top-1 mismatch
 * where the peer's own top-2 margin is below M (default 1e-3) is counted
 * separately as a near-tie, not as a disagreement.
 *
 * The peer prints logits with 5 decimals, so for logits of magnitude ~1-10
 * the relative error has a floor of ~1e-6; below that nothing is measured.
 *
 * Output: one summary line
 *   peercmp positions=N top1=A/N near_ties=T max_rel_err=E mean_rel_err=M max_abs_err=X worst_pos=P over_tol=C
 * where C counts positions whose relative error exceeds T (default 1e-4):
 * isolated outliers there are expected where the two engines break an exact
 * tie differently (e.g. the indexer's top-k among rows scoring exactly 0).
 * Exit status 0 when every position was found, 1 on bad input. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXK 64

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: peercmp OURS.f32 VOCAB PEER.txt [--skip-margin M] [--tol T] [--per-pos]\n");
        return 2;
    }
    long V = atol(argv[2]);
    double margin = 1e-3;
    double tol = 1e-4;
    int per_pos = 0;
    for (int i = 4; i < argc; i++) {
        if (!strcmp(argv[i], "--skip-margin") && i + 1 < argc) margin = atof(argv[++i]);
        else if (!strcmp(argv[i], "--tol") && i + 1 < argc) tol = atof(argv[++i]);
        else if (!strcmp(argv[i], "--per-pos")) per_pos = 1;
        else { fprintf(stderr, "peercmp: unknown option '%s'\n", argv[i]); return 2; }
    }
    if (V <= 0) { fprintf(stderr, "peercmp: bad vocab '%s'\n", argv[2]); return 1; }

    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    long n_pos = bytes / (long)sizeof(float) / V;
    if (n_pos <= 0 || n_pos * V * (long)sizeof(float) != bytes) {
        fprintf(stderr, "peercmp: %s has %ld bytes, not a multiple of %ld logits\n", argv[1], bytes, V);
        fclose(f);
        return 1;
    }
    float *ours = malloc((size_t)bytes);
    if (!ours || fread(ours, 1, (size_t)bytes, f) != (size_t)bytes) {
        fprintf(stderr, "peercmp: cannot read %s\n", argv[1]);
        fclose(f);
        return 1;
    }
    fclose(f);

    FILE *p = fopen(argv[3], "r");
    if (!p) { perror(argv[3]); free(ours); return 1; }
    char *line = NULL;
    size_t cap = 0;
    long seen = 0, top1 = 0, ties = 0, worst = -1, over = 0;
    double max_rel = 0, sum_rel = 0, max_abs = 0;
    unsigned char *found = calloc((size_t)n_pos, 1);
    while (getline(&line, &cap, p) > 0) {
        if (strncmp(line, "logits ", 7)) continue;
        char *s = line + 7, *end;
        long pos = strtol(s, &end, 10);
        if (end == s || pos < 0 || pos >= n_pos) continue;
        s = end;
        long tok[MAXK];
        double val[MAXK];
        int k = 0;
        while (k < MAXK) {
            long t = strtol(s, &end, 10);
            if (end == s || *end != ':') break;
            s = end + 1;
            double v = strtod(s, &end);
            if (end == s) break;
            s = end;
            if (t < 0 || t >= V) break;
            tok[k] = t;
            val[k++] = v;
        }
        if (k == 0) continue;
        const float *row = ours + pos * V;
        double d2 = 0, r2 = 0;
        for (int j = 0; j < k; j++) {
            double d = row[tok[j]] - val[j];
            d2 += d * d;
            r2 += val[j] * val[j];
            if (fabs(d) > max_abs) max_abs = fabs(d);
        }
        double rel = r2 > 0 ? sqrt(d2 / r2) : sqrt(d2);
        if (rel > max_rel) { max_rel = rel; worst = pos; }
        if (rel > tol) over++;
        sum_rel += rel;
        long am = 0;
        for (long t = 1; t < V; t++)
            if (row[t] > row[am]) am = t;
        if (per_pos) printf("pos %ld rel_err %.3g argmax %ld peer %ld\n", pos, rel, am, tok[0]);
        if (am == tok[0]) top1++;
        else if (k >= 2 && val[0] - val[1] < margin) ties++;
        if (!found[pos]) { found[pos] = 1; seen++; }
    }
    free(line);
    fclose(p);
    printf("peercmp positions=%ld top1=%ld/%ld near_ties=%ld max_rel_err=%.3g mean_rel_err=%.3g max_abs_err=%.3g "
           "worst_pos=%ld over_tol=%ld\n",
           seen, top1, seen, ties, max_rel, seen ? sum_rel / (double)seen : 0.0, max_abs, worst, over);
    int rc = seen == n_pos ? 0 : 1;
    if (rc) fprintf(stderr, "peercmp: peer output covers %ld of %ld positions\n", seen, n_pos);
    free(found);
    free(ours);
    return rc;
}

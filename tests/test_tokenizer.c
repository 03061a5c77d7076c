/* Tokenizer tests: every golden vector of shared/data/tokenizer (ids and
 * decodes), the streaming decoder on split characters, invalid UTF-8, the
 * two BPE paths, the GGUF-array constructor and a GGUF write/read round trip. */
#include <jansson.h>
#include <pthread.h>
#include <time.h>

#include "gguf/gguf.h"
#include "test.h"
#include "text/tokenizer.h"

static ds4_tokenizer *tok;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *path_in_shared(const char *rel) {
    static char buf[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/data/tokenizer/%s", test_shared_dir(), rel);
    return buf[k];
}

/* One jsonl case. */
typedef struct vcase {
    char name[128];
    char *text;
    size_t len;
    int32_t *ids;
    size_t n_ids;
    char **pieces; /* token_pieces.jsonl: raw bytes per token */
    size_t *piece_lens;
} vcase;

static int hexval(char c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

static vcase *load_cases(const char *file, size_t *n_out) {
    FILE *fp = fopen(path_in_shared(file), "r");
    *n_out = 0;
    if (!fp) {
        fprintf(stderr, "  cannot open %s\n", path_in_shared(file));
        return NULL;
    }
    vcase *v = NULL;
    size_t n = 0, cap = 0, lcap = 0;
    char *line = NULL;
    ssize_t ll;
    while ((ll = getline(&line, &lcap, fp)) > 0) {
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)ll, JSON_ALLOW_NUL, &je);
        CHECKF(o != NULL, "%s: %s", file, je.text);
        if (!o) continue;
        if (n == cap) v = realloc(v, (cap = cap ? cap * 2 : 128) * sizeof *v);
        vcase *c = &v[n++];
        memset(c, 0, sizeof *c);
        snprintf(c->name, sizeof c->name, "%s", json_string_value(json_object_get(o, "name")));
        json_t *t = json_object_get(o, "text");
        if (t) {
            c->len = json_string_length(t);
            c->text = malloc(c->len + 1);
            memcpy(c->text, json_string_value(t), c->len + 1);
        }
        json_t *ids = json_object_get(o, "ids");
        c->n_ids = json_array_size(ids);
        c->ids = malloc((c->n_ids + 1) * sizeof *c->ids);
        for (size_t i = 0; i < c->n_ids; i++) c->ids[i] = (int32_t)json_integer_value(json_array_get(ids, i));
        json_t *ph = json_object_get(o, "pieces_hex");
        if (ph) {
            size_t np = json_array_size(ph);
            c->pieces = calloc(np + 1, sizeof *c->pieces);
            c->piece_lens = calloc(np + 1, sizeof *c->piece_lens);
            for (size_t i = 0; i < np; i++) {
                const char *h = json_string_value(json_array_get(ph, i));
                size_t hl = strlen(h);
                c->pieces[i] = malloc(hl / 2 + 1);
                for (size_t j = 0; j + 1 < hl; j += 2) c->pieces[i][j / 2] = (char)(hexval(h[j]) * 16 + hexval(h[j + 1]));
                c->piece_lens[i] = hl / 2;
            }
        }
        json_decref(o);
    }
    free(line);
    fclose(fp);
    *n_out = n;
    return v;
}

static void free_cases(vcase *v, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(v[i].text);
        free(v[i].ids);
        if (v[i].pieces)
            for (size_t j = 0; j < v[i].n_ids; j++) free(v[i].pieces[j]);
        free(v[i].pieces);
        free(v[i].piece_lens);
    }
    free(v);
}

static bool ids_equal(const ds4_tok_ids *got, const int32_t *want, size_t n) {
    return got->n == n && (n == 0 || memcmp(got->ids, want, n * sizeof *want) == 0);
}

static void report_mismatch(const char *file, const vcase *c, const ds4_tok_ids *got) {
    size_t k = 0;
    while (k < got->n && k < c->n_ids && got->ids[k] == c->ids[k]) k++;
    fprintf(stderr, "  %s %s: %zu ids vs %zu expected, first difference at %zu (got %d, want %d)\n", file, c->name,
            got->n, c->n_ids, k, k < got->n ? got->ids[k] : -1, k < c->n_ids ? c->ids[k] : -1);
}

/* Encodes every case with flags; returns the number of exact matches and
 * checks decode(ids) == text. */
static size_t check_file(ds4_tokenizer *t, const char *file, unsigned flags, size_t *n_cases) {
    size_t n, ok = 0, dec_ok = 0;
    vcase *v = load_cases(file, &n);
    CHECKF(n > 0, "no cases in %s", file);
    for (size_t i = 0; i < n; i++) {
        ds4_tok_ids got = {0};
        ds4_err err = {{0}};
        CHECK(ds4_tok_encode(t, v[i].text, v[i].len, flags, &got, &err) == 0);
        if (ids_equal(&got, v[i].ids, v[i].n_ids)) ok++;
        else report_mismatch(file, &v[i], &got);
        char *d;
        size_t dl;
        if (ds4_tok_decode(t, v[i].ids, v[i].n_ids, &d, &dl, &err) == 0 && dl == v[i].len &&
            memcmp(d, v[i].text, dl) == 0)
            dec_ok++;
        else
            fprintf(stderr, "  %s %s: decode differs\n", file, v[i].name);
        free(d);
        ds4_tok_ids_free(&got);
    }
    printf("  %s: %zu/%zu exact ids, %zu/%zu exact decodes\n", file, ok, n, dec_ok, n);
    CHECK_EQ_INT(ok, n);
    CHECK_EQ_INT(dec_ok, n);
    free_cases(v, n);
    *n_cases = n;
    return ok;
}

TEST(load) {
    ds4_err err = {{0}};
    double t0 = now_s();
    tok = ds4_tokenizer_load_json(path_in_shared("tokenizer.json"), &err);
    double dt = now_s() - t0;
    CHECKF(tok != NULL, "%s", err.msg);
    if (!tok) exit(1);
    printf("  tokenizer.json loaded in %.3f s\n", dt);
#if defined(__SANITIZE_ADDRESS__)
    CHECK(dt < 5.0); /* ASan/UBSan slow the JSON parse several-fold */
#else
    CHECK(dt < 1.0);
#endif
    CHECK_EQ_INT(ds4_tok_n_vocab(tok), 129280);
    CHECK_EQ_INT(ds4_tok_n_merges(tok), 127741);
    CHECK_EQ_INT(ds4_tok_n_added(tok), 1283);
    CHECK_EQ_INT(ds4_tok_bos(tok), 0);
    CHECK_EQ_INT(ds4_tok_eos(tok), 1);
    CHECK_EQ_INT(ds4_tok_find_str(tok, "<\xEF\xBD\x9CUser\xEF\xBD\x9C>"), 128803);
    CHECK_EQ_INT(ds4_tok_find_str(tok, "<\xEF\xBD\x9C" "Assistant\xEF\xBD\x9C>"), 128804);
    CHECK_EQ_INT(ds4_tok_find_str(tok, "<think>"), 128821);
    CHECK_EQ_INT(ds4_tok_find_str(tok, "</think>"), 128822);
    CHECK_EQ_INT(ds4_tok_find_str(tok, "\xEF\xBD\x9C" "DSML\xEF\xBD\x9C"), 128825);
    CHECK_EQ_INT(ds4_tok_find_str(tok, "<|User|>"), -1);
    CHECK_EQ_INT(ds4_tok_find_str(tok, " "), 223);
    CHECK_EQ_INT(ds4_tok_find_str(tok, "Hello"), 19923);
    size_t len;
    const char *p = ds4_tok_piece(tok, 201, &len);
    CHECK(p && len == 1 && p[0] == '\n');
    p = ds4_tok_piece(tok, 0, &len);
    CHECK(p && len == strlen("<\xEF\xBD\x9C" "begin\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>"));
    CHECK(ds4_tok_piece(tok, 129280, &len) == NULL && len == 0);
    CHECK(ds4_tok_piece(tok, -1, &len) == NULL);
    CHECK_EQ_INT(ds4_tok_type(tok, 0), DS4_TOK_TYPE_CONTROL);
    CHECK_EQ_INT(ds4_tok_type(tok, 128803), DS4_TOK_TYPE_USER_DEFINED);
    CHECK_EQ_INT(ds4_tok_type(tok, 19923), DS4_TOK_TYPE_NORMAL);
    CHECK(ds4_tok_is_added(tok, 129279) && ds4_tok_is_added(tok, 2) && !ds4_tok_is_added(tok, 3));
    int n_added = 0;
    for (int32_t id = 0; id < ds4_tok_n_vocab(tok); id++) n_added += ds4_tok_is_added(tok, id);
    CHECK_EQ_INT(n_added, 1283);
}

TEST(vectors) {
    size_t n;
    check_file(tok, "vectors.jsonl", 0, &n);
    CHECK_EQ_INT(n, 89);
}

TEST(vectors_bpe_only) {
    size_t n;
    check_file(tok, "vectors_bpe_only.jsonl", DS4_TOK_ENC_NO_ADDED, &n);
    CHECK_EQ_INT(n, 23);
}

TEST(vectors_fuzz) {
    size_t n;
    check_file(tok, "vectors_fuzz.jsonl", 0, &n);
    CHECK_EQ_INT(n, 4000);
}

TEST(round_trip_fuzz) {
    size_t n, ok = 0;
    vcase *v = load_cases("vectors_fuzz.jsonl", &n);
    for (unsigned flags = 0; flags <= DS4_TOK_ENC_NO_ADDED; flags += DS4_TOK_ENC_NO_ADDED) {
        ok = 0;
        for (size_t i = 0; i < n; i++) {
            ds4_tok_ids ids = {0};
            char *d = NULL;
            size_t dl = 0;
            ds4_tok_encode(tok, v[i].text, v[i].len, flags, &ids, NULL);
            if (ds4_tok_decode(tok, ids.ids, ids.n, &d, &dl, NULL) == 0 && dl == v[i].len && !memcmp(d, v[i].text, dl))
                ok++;
            free(d);
            ds4_tok_ids_free(&ids);
        }
        printf("  round trip (flags %u): %zu/%zu\n", flags, ok, n);
        CHECK_EQ_INT(ok, n);
    }
    free_cases(v, n);
}

TEST(token_pieces) {
    size_t n, ok = 0, tokens = 0;
    vcase *v = load_cases("token_pieces.jsonl", &n);
    CHECK_EQ_INT(n, 14);
    for (size_t i = 0; i < n; i++) {
        bool good = true;
        for (size_t j = 0; j < v[i].n_ids; j++) {
            size_t len;
            const char *p = ds4_tok_piece(tok, v[i].ids[j], &len);
            if (!p || len != v[i].piece_lens[j] || memcmp(p, v[i].pieces[j], len) != 0) good = false;
            tokens++;
        }
        ok += good;
        CHECKF(good, "%s", v[i].name);
    }
    printf("  token_pieces.jsonl: %zu/%zu cases byte-exact (%zu tokens)\n", ok, n, tokens);
    free_cases(v, n);
}

/* Streams ids one at a time; every chunk must be valid UTF-8 and the
 * concatenation (plus flush) must equal want. */
static bool stream_ok(const int32_t *ids, size_t n, const char *want, size_t want_len, int *max_held) {
    ds4_tok_stream s;
    ds4_tok_stream_init(&s, tok, DS4_TOK_INVALID_REPLACE);
    char *acc = malloc(want_len * 3 + 16);
    size_t al = 0;
    bool ok = true;
    for (size_t i = 0; i < n; i++) {
        const char *txt;
        size_t len;
        if (ds4_tok_stream_push(&s, ids[i], &txt, &len, NULL) < 0) ok = false;
        if (!ds4_utf8_valid(txt, len, NULL)) ok = false;
        if (s.n_pend > *max_held) *max_held = s.n_pend;
        if (al + len <= want_len * 3 + 16) memcpy(acc + al, txt, len);
        al += len;
    }
    const char *txt;
    size_t len;
    ds4_tok_stream_flush(&s, &txt, &len, NULL);
    if (len != 0) ok = false; /* valid text leaves nothing behind */
    ok = ok && al == want_len && memcmp(acc, want, al) == 0;
    free(acc);
    ds4_tok_stream_free(&s);
    return ok;
}

TEST(stream_vectors) {
    const char *files[] = {"vectors.jsonl", "token_pieces.jsonl", "vectors_fuzz.jsonl"};
    int held = 0;
    for (int f = 0; f < 3; f++) {
        size_t n, ok = 0;
        vcase *v = load_cases(files[f], &n);
        for (size_t i = 0; i < n; i++) {
            if (!v[i].text) { /* token_pieces: the text is the decoded bytes */
                char *d;
                size_t dl;
                ds4_tok_decode(tok, v[i].ids, v[i].n_ids, &d, &dl, NULL);
                ok += stream_ok(v[i].ids, v[i].n_ids, d, dl, &held);
                free(d);
            } else {
                ok += stream_ok(v[i].ids, v[i].n_ids, v[i].text, v[i].len, &held);
            }
        }
        printf("  streaming %s: %zu/%zu\n", files[f], ok, n);
        CHECK_EQ_INT(ok, n);
        free_cases(v, n);
    }
    CHECK(held > 0 && held <= 3); /* split characters did occur */
}

static int32_t byte_tok(uint8_t b) {
    char c = (char)b;
    return ds4_tok_find(tok, &c, 1);
}

TEST(stream_split_chars) {
    /* "I love pizza 🍕": the emoji spans 3 tokens (TOKENIZER.md §7). */
    ds4_tok_ids ids = {0};
    const char *pizza = "I love pizza \xF0\x9F\x8D\x95";
    ds4_tok_encode(tok, pizza, strlen(pizza), 0, &ids, NULL);
    CHECK(ids.n >= 3 && ids.ids[ids.n - 3] == 7351 && ids.ids[ids.n - 2] == 238 && ids.ids[ids.n - 1] == 246);
    ds4_tok_stream s;
    ds4_tok_stream_init(&s, tok, DS4_TOK_INVALID_REPLACE);
    const char *txt;
    size_t len;
    for (size_t i = 0; i + 3 < ids.n; i++) ds4_tok_stream_push(&s, ids.ids[i], &txt, &len, NULL);
    ds4_tok_stream_push(&s, 7351, &txt, &len, NULL);
    CHECK(len == 1 && txt[0] == ' '); /* F0 9F held back */
    ds4_tok_stream_push(&s, 238, &txt, &len, NULL);
    CHECK_EQ_INT(len, 0);
    ds4_tok_stream_push(&s, 246, &txt, &len, NULL);
    CHECK(len == 4 && memcmp(txt, "\xF0\x9F\x8D\x95", 4) == 0);
    ds4_tok_ids_free(&ids);

    /* CJK 你 (E4 BD A0) byte by byte, then an invalid continuation. */
    ds4_tok_stream_push(&s, byte_tok(0xE4), &txt, &len, NULL);
    CHECK_EQ_INT(len, 0);
    ds4_tok_stream_push(&s, byte_tok(0xBD), &txt, &len, NULL);
    CHECK_EQ_INT(len, 0);
    ds4_tok_stream_push(&s, byte_tok(0xA0), &txt, &len, NULL);
    CHECK(len == 3 && memcmp(txt, "\xE4\xBD\xA0", 3) == 0);
    ds4_tok_stream_push(&s, byte_tok(0xE4), &txt, &len, NULL);
    ds4_tok_stream_push(&s, byte_tok(0xBD), &txt, &len, NULL);
    ds4_tok_stream_push(&s, byte_tok('A'), &txt, &len, NULL); /* E4 BD can no longer complete */
    CHECK(len == 4 && memcmp(txt, "\xEF\xBF\xBD" "A", 4) == 0);
    ds4_tok_stream_push(&s, byte_tok(0xFF), &txt, &len, NULL);
    CHECK(len == 3 && memcmp(txt, "\xEF\xBF\xBD", 3) == 0);
    /* Maximal subparts: E0 80 is two ill-formed units (E0 needs A0..BF). */
    ds4_tok_stream_push_bytes(&s, "\xE0\x80x", 3, &txt, &len, NULL);
    CHECK(len == 7 && memcmp(txt, "\xEF\xBF\xBD\xEF\xBF\xBDx", 7) == 0);
    ds4_tok_stream_push(&s, byte_tok(0xF0), &txt, &len, NULL);
    CHECK_EQ_INT(len, 0);
    ds4_tok_stream_flush(&s, &txt, &len, NULL);
    CHECK(len == 3 && memcmp(txt, "\xEF\xBF\xBD", 3) == 0);
    ds4_tok_stream_flush(&s, &txt, &len, NULL);
    CHECK_EQ_INT(len, 0);
    ds4_err err = {{0}};
    CHECK(ds4_tok_stream_push(&s, 999999, &txt, &len, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "out of range");
    ds4_tok_stream_free(&s);

    /* Raw mode passes bad bytes through, still holding incomplete tails. */
    ds4_tok_stream_init(&s, tok, DS4_TOK_INVALID_RAW);
    ds4_tok_stream_push_bytes(&s, "a\xFF\xE4\xBD", 4, &txt, &len, NULL);
    CHECK(len == 2 && memcmp(txt, "a\xFF", 2) == 0);
    ds4_tok_stream_push_bytes(&s, "\xA0", 1, &txt, &len, NULL);
    CHECK(len == 3 && memcmp(txt, "\xE4\xBD\xA0", 3) == 0);
    ds4_tok_stream_push_bytes(&s, "\xE4", 1, &txt, &len, NULL);
    ds4_tok_stream_flush(&s, &txt, &len, NULL);
    CHECK(len == 1 && (uint8_t)txt[0] == 0xE4);
    ds4_tok_stream_free(&s);

    /* Every emoji/CJK string fed as single-byte tokens. */
    const char *texts[] = {"\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9", "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C", "\xC3\xA8x"};
    for (int k = 0; k < 3; k++) {
        size_t tl = strlen(texts[k]);
        int32_t bt[64];
        for (size_t i = 0; i < tl; i++) bt[i] = byte_tok((uint8_t)texts[k][i]);
        int held = 0;
        CHECKF(stream_ok(bt, tl, texts[k], tl, &held), "byte tokens %d", k);
        CHECK(held >= 1);
    }
}

TEST(invalid_utf8) {
    const char bad[] = "ok \xFF\xFE caf\xC3 \xE4\xBD \xED\xA0\x80 \xF4\x90\x80\x80 \xC0\xAF<think>\xE4";
    size_t bl = sizeof bad - 1;
    ds4_tok_ids ids = {0};
    ds4_err err = {{0}};
    CHECK(ds4_tok_encode(tok, bad, bl, 0, &ids, &err) == 0);
    char *d;
    size_t dl;
    CHECK(ds4_tok_decode(tok, ids.ids, ids.n, &d, &dl, NULL) == 0);
    CHECK(dl == bl && memcmp(d, bad, bl) == 0);
    free(d);
    bool has_think = false;
    for (size_t i = 0; i < ids.n; i++) has_think |= ids.ids[i] == 128821;
    CHECK(has_think);
    ds4_tok_ids_free(&ids);
    CHECK(ds4_tok_encode(tok, bad, bl, DS4_TOK_ENC_STRICT_UTF8, &ids, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "offset 3");
    ds4_tok_ids_free(&ids);
    size_t off = 0;
    CHECK(!ds4_utf8_valid(bad, bl, &off) && off == 3);
    CHECK(ds4_utf8_valid("h\xC3\xA9llo \xF0\x9F\x8D\x95", 11, NULL));
    CHECK(!ds4_utf8_valid("h\xC3\xA9llo \xF0\x9F\x8D", 10, &off) && off == 7);

    /* Random bytes (biased to UTF-8 lead/continuation bytes and '<'): must
     * round-trip exactly and never crash. */
    unsigned seed = 12345;
    int ok = 0;
    char buf[300];
    for (int k = 0; k < 3000; k++) {
        size_t n = (size_t)(rand_r(&seed) % 200);
        for (size_t i = 0; i < n; i++) {
            int r = rand_r(&seed) % 8;
            buf[i] = (char)(r == 0 ? 0x80 + rand_r(&seed) % 64 : r == 1 ? 0xC0 + rand_r(&seed) % 64
                            : r == 2 ? '<' : r == 3 ? ' ' : rand_r(&seed) % 256);
        }
        ds4_tok_encode(tok, buf, n, 0, &ids, NULL);
        if (ds4_tok_decode(tok, ids.ids, ids.n, &d, &dl, NULL) == 0 && dl == n && !memcmp(d, buf, n)) ok++;
        free(d);
        ids.n = 0;
    }
    ds4_tok_ids_free(&ids);
    CHECK_EQ_INT(ok, 3000);
}

/* The O(n^2) and the heap BPE must agree; also covers long pieces. */
TEST(bpe_paths_agree) {
    size_t n;
    vcase *v = load_cases("vectors_fuzz.jsonl", &n);
    size_t n2;
    vcase *v2 = load_cases("vectors.jsonl", &n2);
    /* Long synthetic pieces: letters, whitespace, digits, mixed. */
    char *longs[4];
    size_t ll[4] = {3000, 3000, 3000, 3000};
    for (int k = 0; k < 4; k++) {
        longs[k] = malloc(ll[k] + 1);
        for (size_t i = 0; i < ll[k]; i++)
            longs[k][i] = k == 0 ? "abcabcx"[i % 7] : k == 1 ? " \t  \n"[i % 5] : k == 2 ? '7' : "aa aaa  ."[i % 9];
    }
    int diff = 0;
    for (size_t i = 0; i < n + n2 + 4; i++) {
        const char *s = i < n ? v[i].text : i < n + n2 ? v2[i - n].text : longs[i - n - n2];
        size_t sl = i < n ? v[i].len : i < n + n2 ? v2[i - n].len : ll[i - n - n2];
        ds4_tok_ids a = {0}, b = {0};
        ds4_tok_set_bpe_naive_max(tok, 0);
        ds4_tok_encode(tok, s, sl, DS4_TOK_ENC_NO_ADDED, &a, NULL);
        ds4_tok_set_bpe_naive_max(tok, 1 << 30);
        ds4_tok_encode(tok, s, sl, DS4_TOK_ENC_NO_ADDED, &b, NULL);
        if (!ids_equal(&a, b.ids, b.n)) diff++;
        ds4_tok_ids_free(&a);
        ds4_tok_ids_free(&b);
    }
    ds4_tok_set_bpe_naive_max(tok, 48);
    CHECK_EQ_INT(diff, 0);
    for (int k = 0; k < 4; k++) free(longs[k]);
    free_cases(v, n);
    free_cases(v2, n2);
}

TEST(huge_pieces) {
    /* 1 MB runs: one regex match / one BPE piece each. */
    size_t n = 1 << 20;
    char *s = malloc(n);
    const char fill[] = {' ', 'a', '\n', '9', '.', '\t'};
    for (int k = 0; k < 6; k++) {
        memset(s, fill[k], n);
        ds4_tok_ids ids = {0};
        ds4_err err = {{0}};
        double t0 = now_s();
        int rc = ds4_tok_encode(tok, s, n, 0, &ids, &err);
        double dt = now_s() - t0;
        CHECKF(rc == 0, "fill 0x%02x: %s", fill[k], err.msg);
        char *d;
        size_t dl;
        CHECK(ds4_tok_decode(tok, ids.ids, ids.n, &d, &dl, NULL) == 0 && dl == n && memcmp(d, s, n) == 0);
        CHECKF(dt < 5.0, "fill 0x%02x took %.2f s", fill[k], dt);
        free(d);
        ds4_tok_ids_free(&ids);
    }
    free(s);
}

/* Builds the GGUF arrays straight from tokenizer.json (independently of the
 * library's JSON reader) and checks the array constructor agrees. */
static ds4_tokenizer *from_json_arrays(void) {
    json_error_t je;
    json_t *root = json_load_file(path_in_shared("tokenizer.json"), 0, &je);
    if (!root) return NULL;
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    json_t *merges = json_object_get(json_object_get(root, "model"), "merges");
    json_t *added = json_object_get(root, "added_tokens");
    size_t n = 129280, nm = json_array_size(merges);
    const char **toks = calloc(n, sizeof *toks);
    int32_t *types = calloc(n, sizeof *types);
    const char **ms = calloc(nm, sizeof *ms);
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        toks[json_integer_value(val)] = key;
        types[json_integer_value(val)] = 1;
    }
    size_t i;
    json_array_foreach(added, i, val) {
        json_int_t id = json_integer_value(json_object_get(val, "id"));
        toks[id] = json_string_value(json_object_get(val, "content"));
        types[id] = json_is_true(json_object_get(val, "special")) ? 3 : 4;
    }
    json_array_foreach(merges, i, val) ms[i] = json_string_value(val);
    ds4_err err = {{0}};
    ds4_tokenizer *t = ds4_tokenizer_from_arrays(toks, NULL, (int64_t)n, ms, NULL, (int64_t)nm, types, 0, 1, &err);
    CHECKF(t != NULL, "%s", err.msg);
    free(toks);
    free(types);
    free(ms);
    json_decref(root);
    return t;
}

/* Same vocabulary, types, merges count and encodings as the JSON tokenizer. */
static void check_same(ds4_tokenizer *t, const char *what) {
    CHECK_EQ_INT(ds4_tok_n_vocab(t), ds4_tok_n_vocab(tok));
    CHECK_EQ_INT(ds4_tok_n_merges(t), ds4_tok_n_merges(tok));
    CHECK_EQ_INT(ds4_tok_n_added(t), 1283);
    CHECK_EQ_INT(ds4_tok_bos(t), 0);
    CHECK_EQ_INT(ds4_tok_eos(t), 1);
    int bad = 0;
    for (int32_t id = 0; id < ds4_tok_n_vocab(tok); id++) {
        size_t la, lb;
        const char *a = ds4_tok_piece(tok, id, &la), *b = ds4_tok_piece(t, id, &lb);
        if (!b || la != lb || memcmp(a, b, la) || ds4_tok_type(t, id) != ds4_tok_type(tok, id) ||
            ds4_tok_is_added(t, id) != ds4_tok_is_added(tok, id))
            bad++;
    }
    CHECKF(bad == 0, "%s: %d ids differ", what, bad);
    size_t n, same = 0;
    vcase *v = load_cases("vectors.jsonl", &n);
    for (size_t i = 0; i < n; i++) {
        ds4_tok_ids a = {0};
        ds4_tok_encode(t, v[i].text, v[i].len, 0, &a, NULL);
        same += ids_equal(&a, v[i].ids, v[i].n_ids);
        ds4_tok_ids_free(&a);
    }
    printf("  %s: vocabulary identical, %zu/%zu vectors exact\n", what, same, n);
    CHECK_EQ_INT(same, n);
    free_cases(v, n);
}

TEST(arrays_constructor) {
    ds4_tokenizer *t = from_json_arrays();
    if (!t) return;
    check_same(t, "GGUF arrays");
    ds4_tokenizer_free(t);
}

TEST(gguf_round_trip) {
    char path[1200];
    snprintf(path, sizeof path, "%s/tok.gguf", test_tmpdir());
    ds4_err err = {{0}};
    gguf_writer *w = gguf_writer_open(path, &err);
    CHECKF(w != NULL, "%s", err.msg);
    if (!w) return;
    CHECK(gguf_writer_add_str(w, "general.architecture", "deepseek4") == 0);
    CHECKF(ds4_tokenizer_write_gguf(tok, w, &err) == 0, "%s", err.msg);
    CHECK(gguf_writer_begin_data(w) == 0);
    CHECKF(gguf_writer_finish(w) == 0, "%s", gguf_writer_error(w));
    gguf_writer_free(w);
    gguf_file *f = gguf_open(path, &err);
    CHECKF(f != NULL, "%s", err.msg);
    if (!f) return;
    gguf_str s;
    CHECK(gguf_get_str(f, "tokenizer.ggml.model", &s, NULL) == 0 && gguf_str_eq(s, "gpt2"));
    CHECK(gguf_get_str(f, "tokenizer.ggml.pre", &s, NULL) == 0 && gguf_str_eq(s, "joyai-llm"));
    const gguf_kv *kv = gguf_find_kv(f, "tokenizer.ggml.tokens");
    CHECK(kv && gguf_str_eq(gguf_arr_str(kv, 223), "\xC4\xA0")); /* Ġ */
    CHECK(kv && gguf_str_eq(gguf_arr_str(kv, 128803), "<\xEF\xBD\x9CUser\xEF\xBD\x9C>"));
    kv = gguf_find_kv(f, "tokenizer.ggml.merges");
    CHECK(kv && gguf_str_eq(gguf_arr_str(kv, 0), "\xC4\xA0 t"));
    uint32_t bos = 9, eos = 9;
    CHECK(gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &bos, NULL) == 0 && bos == 0);
    CHECK(gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &eos, NULL) == 0 && eos == 1);
    ds4_tokenizer *t = ds4_tokenizer_load_gguf(f, &err);
    CHECKF(t != NULL, "%s", err.msg);
    if (t) check_same(t, "GGUF file");
    ds4_tokenizer_free(t);
    gguf_close(f);
    unlink(path);
}

TEST(errors) {
    ds4_err err = {{0}};
    CHECK(ds4_tokenizer_load_json("/nonexistent/tokenizer.json", &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "/nonexistent/tokenizer.json");
    CHECK(ds4_tokenizer_from_json_text("{\"model\": 3", 11, &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "tokenizer.json");
    const char *other = "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}";
    CHECK(ds4_tokenizer_from_json_text(other, strlen(other), &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "BPE");
    /* A tiny byte-level vocabulary: 256 byte tokens + "ab"; bad merges fail. */
    static char strs[257][4];
    const char *toks[257];
    int32_t types[257];
    for (int b = 0; b < 256; b++) {
        unsigned cp = b <= 0x20 ? 256u + (unsigned)b : (b >= 0x7F && b <= 0xA0) ? 256u + 33u + (unsigned)(b - 0x7F) : b == 0xAD ? 323u : (unsigned)b;
        if (cp < 0x80) { strs[b][0] = (char)cp; strs[b][1] = 0; }
        else { strs[b][0] = (char)(0xC0 | (cp >> 6)); strs[b][1] = (char)(0x80 | (cp & 0x3F)); strs[b][2] = 0; }
        toks[b] = strs[b];
        types[b] = 1;
    }
    toks[256] = "ab";
    types[256] = 1;
    const char *good[] = {"a b"}, *bad1[] = {"a c"}, *bad2[] = {"ab"}, *bad3[] = {"a \xE4\xBD\xA0"};
    ds4_tokenizer *t = ds4_tokenizer_from_arrays(toks, NULL, 257, good, NULL, 1, types, -1, -1, &err);
    CHECKF(t != NULL, "%s", err.msg);
    if (t) {
        ds4_tok_ids ids = {0};
        ds4_tok_encode(t, "xaby", 4, 0, &ids, NULL);
        CHECK(ids.n == 3 && ids.ids[1] == 256);
        CHECK_EQ_INT(ds4_tok_bos(t), -1);
        ds4_tok_ids_free(&ids);
        ds4_tokenizer_free(t);
    }
    CHECK(ds4_tokenizer_from_arrays(toks, NULL, 257, bad1, NULL, 1, types, -1, -1, &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "result is not a vocabulary token");
    CHECK(ds4_tokenizer_from_arrays(toks, NULL, 257, bad2, NULL, 1, types, -1, -1, &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "left right");
    CHECK(ds4_tokenizer_from_arrays(toks, NULL, 257, bad3, NULL, 1, types, -1, -1, &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "not a vocabulary token");
    CHECK(ds4_tokenizer_from_arrays(toks, NULL, 200, NULL, NULL, 0, types, -1, -1, &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "no token for byte");
    toks[256] = "\xE4\xBD\xA0"; /* not in the alphabet and not marked added */
    CHECK(ds4_tokenizer_from_arrays(toks, NULL, 257, NULL, NULL, 0, types, -1, -1, &err) == NULL);
    CHECK_STR_CONTAINS(err.msg, "GPT-2 byte alphabet");
    types[256] = 3; /* as an added token it is fine */
    t = ds4_tokenizer_from_arrays(toks, NULL, 257, NULL, NULL, 0, types, -1, -1, &err);
    CHECK(t && ds4_tok_n_added(t) == 1);
    ds4_tokenizer_free(t);
    ds4_tok_ids ids = {0};
    int32_t bad_id = 200000;
    char *d = (char *)"x";
    size_t dl;
    CHECK(ds4_tok_decode(tok, &bad_id, 1, &d, &dl, &err) == -1 && d == NULL);
    CHECK_STR_CONTAINS(err.msg, "out of range");
    CHECK(ds4_tok_encode(tok, "", 0, 0, &ids, &err) == 0 && ids.n == 0);
}

/* Concurrent encodes share one tokenizer (state pool). */
static void *enc_thread(void *arg) {
    vcase *v = arg;
    long bad = 0;
    for (int rep = 0; rep < 3; rep++)
        for (size_t i = 0; i < 500; i++) {
            ds4_tok_ids a = {0};
            ds4_tok_encode(tok, v[i].text, v[i].len, 0, &a, NULL);
            bad += !ids_equal(&a, v[i].ids, v[i].n_ids);
            ds4_tok_ids_free(&a);
        }
    return (void *)bad;
}

TEST(threads) {
    size_t n;
    vcase *v = load_cases("vectors_fuzz.jsonl", &n);
    if (n < 500) return;
    pthread_t th[4];
    for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, enc_thread, v);
    long bad = 0;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(th[i], &r);
        bad += (long)r;
    }
    CHECK_EQ_INT(bad, 0);
    free_cases(v, n);
}

int main(void) {
    RUN(load);
    RUN(vectors);
    RUN(vectors_bpe_only);
    RUN(vectors_fuzz);
    RUN(round_trip_fuzz);
    RUN(token_pieces);
    RUN(stream_vectors);
    RUN(stream_split_chars);
    RUN(invalid_utf8);
    RUN(bpe_paths_agree);
    RUN(huge_pieces);
    RUN(arrays_constructor);
    RUN(gguf_round_trip);
    RUN(errors);
    RUN(threads);
    ds4_tokenizer_free(tok);
    TEST_END();
}

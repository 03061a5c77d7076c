/* Disk KV cache (src/kv/kvcache.h) and its helpers (src/util/sha1.h).
 *
 * - SHA-1 / CRC-32 against published test vectors.
 * - Round trip: a session saved to a KVC file and loaded into a fresh session
 *   continues bitwise identically (next-token logits stored in the file, and
 *   the logits of further tokens evaluated after the restore).
 * - Lookup: longest key that is a byte prefix wins; non-prefix keys miss.
 * - Corruption: a flipped byte anywhere in the file, a truncated file and a
 *   wrong trailer are rejected (miss), the file is deleted, nothing crashes.
 * - Eviction keeps the directory within the budget and protects the file
 *   just written. */
#include "test.h"

#include <dirent.h>
#include <sys/stat.h>

#include "convert/mkmodel.h"
#include "engine/engine.h"
#include "kv/kvcache.h"
#include "model/model.h"
#include "server/srv_int.h"
#include "util/sha1.h"

static ds4_model *model;
static char kvdir[600];

/* Cache log lines only with DS4_TEST_VERBOSE (tests/run.sh shows indented lines). */
static void quiet(void *u, const char *m) {
    (void)u;
    if (getenv("DS4_TEST_VERBOSE")) fprintf(stderr, "[kv] %s\n", m);
}

static kv_cache *open_cache(uint64_t budget) {
    kv_opts o = {.dir = kvdir, .budget_bytes = budget, .min_tokens = 4, .ctx = 512, .quant_bits = 4, .log = quiet};
    ds4_err err = {{0}};
    kv_cache *c = kv_cache_open(&o, &err);
    CHECKF(c != NULL, "%s", err.msg);
    return c;
}

static ds4_session *new_session(void) {
    ds4_engine_opts o;
    ds4_engine_opts_default(&o);
    o.ctx_max = 512;
    o.n_threads = 2;
    ds4_err err = {{0}};
    ds4_session *s = ds4_session_new(model, &o, NULL, &err);
    CHECKF(s != NULL, "%s", err.msg);
    return s;
}

static int count_files(void) {
    DIR *d = opendir(kvdir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d))) n += strstr(de->d_name, ".kv") != NULL && !strstr(de->d_name, ".tmp");
    if (d) closedir(d);
    return n;
}

static void clear_dir(void) {
    DIR *d = opendir(kvdir);
    struct dirent *de;
    char p[1200];
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", kvdir, de->d_name);
        unlink(p);
    }
    if (d) closedir(d);
}

TEST(sha1_crc_vectors) {
    char h[41];
    ds4_sha1_hex("abc", 3, h);
    CHECK(!strcmp(h, "a9993e364706816aba3e25717850c26c9cd0d89d"));
    ds4_sha1_hex("", 0, h);
    CHECK(!strcmp(h, "da39a3ee5e6b4b0d3255bfef95601890afd80709"));
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    ds4_sha1_hex(m, strlen(m), h);
    CHECK(!strcmp(h, "84983e441c3bd26ebaae4aa1f95129e5e54670f1"));
    /* streaming in odd pieces equals one shot */
    char big[1000];
    for (int i = 0; i < 1000; i++) big[i] = (char)(i * 7);
    ds4_sha1 c;
    unsigned char d1[20], d2[20];
    ds4_sha1_init(&c);
    for (int i = 0; i < 1000; i += 37) ds4_sha1_update(&c, big + i, i + 37 <= 1000 ? 37 : (size_t)(1000 - i));
    ds4_sha1_final(&c, d1);
    ds4_sha1_init(&c);
    ds4_sha1_update(&c, big, 1000);
    ds4_sha1_final(&c, d2);
    CHECK(!memcmp(d1, d2, 20));
    CHECK(ds4_crc32(0, "123456789", 9) == 0xcbf43926u);
    CHECK(ds4_crc32(ds4_crc32(0, "1234", 4), "56789", 5) == 0xcbf43926u);
}

/* Evaluates toks into s one batch, returning the last logits. */
static void eval(ds4_session *s, const int32_t *t, int n, float *logits) {
    ds4_err err = {{0}};
    CHECKF(ds4_session_eval(s, t, n, DS4_LOGITS_LAST, logits, &err) == 0, "%s", err.msg);
}

TEST(roundtrip_bitwise) {
    clear_dir();
    int V = (int)model->hp.n_vocab, n = 300; /* past several ratio-128 and ratio-4 boundaries */
    int32_t toks[310];
    for (int i = 0; i < 310; i++) toks[i] = (int32_t)((i * 131 + 7) % V);
    float *la = malloc(sizeof(float) * V), *lb = malloc(sizeof(float) * V), *ll = malloc(sizeof(float) * V);
    ds4_session *a = new_session(), *b = new_session();
    eval(a, toks, n, la);
    kv_cache *c = open_cache(64ull << 20);
    const char *key = "key text of three hundred tokens";
    ds4_err err = {{0}};
    CHECKF(kv_cache_save(c, key, strlen(key), KV_REASON_COLD, a, toks, (uint32_t)n, la, "KTM\x01\0\0\0\0", 8, &err) == 0,
           "%s", err.msg);
    CHECK_EQ_INT(count_files(), 1);
    /* a prompt that does not start with the key misses */
    kv_hit hit = {0};
    CHECK_EQ_INT(kv_cache_load_prefix(c, "other text entirely, long enough to cover", 41, b, ll, 30000, &hit, &err), 0);
    char prompt[200];
    snprintf(prompt, sizeof prompt, "%s and a new suffix", key);
    CHECK_EQ_INT(kv_cache_load_prefix(c, prompt, strlen(prompt), b, ll, 30000, &hit, &err), 1);
    CHECK_EQ_INT(hit.n_tokens, n);
    CHECK_EQ_INT(hit.key_len, strlen(key));
    CHECK(hit.tokens && !memcmp(hit.tokens, toks, sizeof(int32_t) * n));
    CHECK_EQ_INT(hit.extra_len, 8);
    CHECK_EQ_INT(b->pos, n);
    CHECK(!memcmp(la, ll, sizeof(float) * V));  /* stored logits are the live ones */
    /* continue both timelines: decode-by-token and a batch, bitwise equal */
    for (int i = n; i < n + 4; i++) {
        eval(a, &toks[i], 1, la);
        eval(b, &toks[i], 1, lb);
        CHECKF(!memcmp(la, lb, sizeof(float) * V), "logits differ after restore at token %d", i);
    }
    eval(a, &toks[n + 4], 6, la);
    eval(b, &toks[n + 4], 6, lb);
    CHECK(!memcmp(la, lb, sizeof(float) * V));
    kv_hit_free(&hit);
    /* the hit count was bumped in place without breaking the checksum */
    ds4_session_reset(b);
    CHECK_EQ_INT(kv_cache_load_prefix(c, prompt, strlen(prompt), b, ll, 30000, &hit, &err), 1);
    kv_hit_free(&hit);
    /* a loaded prefix longer than cold_max is consumed (deleted) */
    ds4_session_reset(b);
    CHECK_EQ_INT(kv_cache_load_prefix(c, prompt, strlen(prompt), b, ll, 10, &hit, &err), 1);
    kv_hit_free(&hit);
    CHECK_EQ_INT(count_files(), 0);
    kv_cache_close(c);
    ds4_session_free(a);
    ds4_session_free(b);
    free(la);
    free(lb);
    free(ll);
}

static void save_one(kv_cache *c, ds4_session *s, const char *key, int n, int32_t *toks, float *lg,
                     enum kv_reason reason) {
    ds4_err err = {{0}};
    ds4_session_reset(s);
    eval(s, toks, n, lg);
    CHECKF(kv_cache_save(c, key, strlen(key), reason, s, toks, (uint32_t)n, lg, NULL, 0, &err) == 0, "%s", err.msg);
}

static char *only_file(void) {
    static char p[1200];
    DIR *d = opendir(kvdir);
    struct dirent *de;
    p[0] = 0;
    while (d && (de = readdir(d)))
        if (strstr(de->d_name, ".kv")) snprintf(p, sizeof p, "%s/%s", kvdir, de->d_name);
    if (d) closedir(d);
    return p;
}

TEST(longest_prefix_and_corruption) {
    clear_dir();
    int V = (int)model->hp.n_vocab;
    int32_t toks[64];
    for (int i = 0; i < 64; i++) toks[i] = (int32_t)((i * 17 + 3) % V);
    float *lg = malloc(sizeof(float) * V);
    ds4_session *s = new_session();
    kv_cache *c = open_cache(64ull << 20);
    save_one(c, s, "alpha", 16, toks, lg, KV_REASON_COLD);
    save_one(c, s, "alpha beta", 40, toks, lg, KV_REASON_EVICT);
    save_one(c, s, "alpha beta gamma delta", 50, toks, lg, KV_REASON_COLD);
    kv_hit hit = {0};
    ds4_err err = {{0}};
    CHECK_EQ_INT(kv_cache_load_prefix(c, "alpha beta gamma", 16, s, lg, 30000, &hit, &err), 1);
    CHECK_EQ_INT(hit.n_tokens, 40); /* "alpha beta gamma delta" is longer than the prompt */
    kv_hit_free(&hit);
    clear_dir();
    /* a longer continued checkpoint of the same text supersedes shorter continued ones only */
    save_one(c, s, "one", 16, toks, lg, KV_REASON_CONTINUED);
    save_one(c, s, "one two", 20, toks, lg, KV_REASON_CONTINUED);
    save_one(c, s, "other", 20, toks, lg, KV_REASON_CONTINUED);
    save_one(c, s, "one two three", 24, toks, lg, KV_REASON_CONTINUED);
    CHECK_EQ_INT(count_files(), 2);
    clear_dir();

    /* flip one byte at many offsets: every damaged file is rejected */
    save_one(c, s, "corrupt me", 24, toks, lg, KV_REASON_COLD);
    char *path = only_file();
    struct stat sb;
    CHECK(stat(path, &sb) == 0);
    FILE *f = fopen(path, "rb");
    long size = (long)sb.st_size;
    unsigned char *orig = malloc((size_t)size);
    CHECK(f && fread(orig, 1, (size_t)size, f) == (size_t)size);
    if (f) fclose(f);
    char saved_path[1200];
    snprintf(saved_path, sizeof saved_path, "%s", path);
    long offs[] = {0, 5, 9, 20, 50, 60, 100, size / 2, size - 20, size - 9, size - 3, size - 1};
    int rejected = 0;
    for (size_t k = 0; k < sizeof offs / sizeof *offs; k++) {
        unsigned char *m = malloc((size_t)size);
        memcpy(m, orig, (size_t)size);
        m[offs[k]] ^= 0x40;
        f = fopen(saved_path, "wb");
        fwrite(m, 1, (size_t)size, f);
        fclose(f);
        free(m);
        ds4_session_reset(s);
        int rc = kv_cache_load_prefix(c, "corrupt me please", 17, s, lg, 30000, &hit, &err);
        CHECKF(rc == 0, "flipped byte at %ld accepted", offs[k]);
        rejected += rc == 0;
        kv_hit_free(&hit);
        CHECK_EQ_INT(s->pos, 0);
    }
    CHECK_EQ_INT(rejected, (int)(sizeof offs / sizeof *offs));
    /* truncated */
    f = fopen(saved_path, "wb");
    fwrite(orig, 1, (size_t)size - 100, f);
    fclose(f);
    CHECK_EQ_INT(kv_cache_load_prefix(c, "corrupt me please", 17, s, lg, 30000, &hit, &err), 0);
    /* intact again: accepted */
    f = fopen(saved_path, "wb");
    fwrite(orig, 1, (size_t)size, f);
    fclose(f);
    CHECK_EQ_INT(kv_cache_load_prefix(c, "corrupt me please", 17, s, lg, 30000, &hit, &err), 1);
    kv_hit_free(&hit);
    free(orig);
    kv_cache_close(c);
    ds4_session_free(s);
    free(lg);
}

TEST(eviction_budget) {
    clear_dir();
    int V = (int)model->hp.n_vocab;
    int32_t toks[64];
    for (int i = 0; i < 64; i++) toks[i] = (int32_t)((i * 29 + 1) % V);
    float *lg = malloc(sizeof(float) * V);
    ds4_session *s = new_session();
    ds4_session_reset(s);
    eval(s, toks, 32, lg);
    uint64_t one = ds4_session_payload_size(s) + 200;
    kv_cache *c = open_cache(one * 5 / 2); /* room for two files */
    char key[32];
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof key, "key number %d", i);
        save_one(c, s, key, 32, toks, lg, KV_REASON_CONTINUED);
        CHECK(count_files() <= 2);
    }
    CHECK(kv_cache_disk_bytes(c) <= one * 5 / 2);
    /* the last one written survives */
    kv_hit hit = {0};
    ds4_err err = {{0}};
    CHECK_EQ_INT(kv_cache_load_prefix(c, "key number 4!", 13, s, lg, 30000, &hit, &err), 1);
    kv_hit_free(&hit);
    /* a checkpoint the incoming prompt needs is protected from eviction */
    clear_dir();
    save_one(c, s, "needed prefix", 32, toks, lg, KV_REASON_CONTINUED);
    save_one(c, s, "filler one", 32, toks, lg, KV_REASON_CONTINUED);
    kv_cache_protect(c, "needed prefix and the new turn", 30);
    save_one(c, s, "filler two", 32, toks, lg, KV_REASON_CONTINUED);
    kv_cache_protect(c, NULL, 0);
    CHECK_EQ_INT(kv_cache_load_prefix(c, "needed prefix!", 14, s, lg, 30000, &hit, &err), 1);
    kv_hit_free(&hit);
    kv_cache_close(c);
    ds4_session_free(s);
    free(lg);
}

TEST(tool_memory_ktm) {
    srv_toolmem *m = srv_toolmem_new(3);
    const char *ids1[2] = {"call_a", "call_b"};
    const char *blk1 = "\n\n<DSML block one>", *blk2 = "\n\n<DSML block two>";
    CHECK(srv_toolmem_put(m, ids1, 2, blk1, strlen(blk1)) == 0);
    size_t l = 0;
    char *g = srv_toolmem_get(m, "call_b", &l);
    CHECK(g && l == strlen(blk1) && !memcmp(g, blk1, l));
    free(g);
    const char *ids2[2] = {"call_c", "call_d"};
    CHECK(srv_toolmem_put(m, ids2, 2, blk2, strlen(blk2)) == 0);
    CHECK_EQ_INT(srv_toolmem_count(m), 3); /* bounded: the least recently used id went */
    CHECK(srv_toolmem_get(m, "call_a", &l) == NULL);
    /* export only blocks present in the text, import into a fresh memory */
    ds4_buf out = {0};
    char text[200];
    snprintf(text, sizeof text, "prefix%ssuffix", blk2);
    CHECK_EQ_INT(srv_toolmem_export(m, text, strlen(text), &out), 2);
    srv_toolmem *m2 = srv_toolmem_new(100);
    CHECK_EQ_INT(srv_toolmem_import(m2, out.data, out.len, 400), 2);
    g = srv_toolmem_get(m2, "call_d", &l);
    CHECK(g && l == strlen(blk2) && !memcmp(g, blk2, l));
    free(g);
    /* malformed sections never crash: truncations and a huge count */
    for (size_t cut = 0; cut < out.len; cut++) srv_toolmem_import(m2, out.data, cut, 400);
    unsigned char bad[8] = {'K', 'T', 'M', 1, 0xff, 0xff, 0xff, 0x7f};
    CHECK(srv_toolmem_import(m2, bad, 8, 400) < 0);
    ds4_buf_free(&out);
    srv_toolmem_free(m);
    srv_toolmem_free(m2);
}

int main(void) {
    char path[600];
    snprintf(path, sizeof path, "%s/kvtiny.gguf", test_tmpdir());
    snprintf(kvdir, sizeof kvdir, "%s/kv", test_tmpdir());
    ds4_hparams hp;
    ds4_err err = {{0}};
    ds4_mkmodel_opts mo = {.recipe = "q8_0", .seed = 5};
    if (ds4_mkmodel_preset("tiny", &hp, &err) || ds4_mkmodel(path, &hp, &mo, NULL, &err) ||
        !(model = ds4_model_load(path, &err))) {
        fprintf(stderr, "test_kvcache: cannot make the test model: %s\n", err.msg);
        return 1;
    }
    mkdir(kvdir, 0777);
    RUN(sha1_crc_vectors);
    RUN(roundtrip_bitwise);
    RUN(longest_prefix_and_corruption);
    RUN(eviction_budget);
    RUN(tool_memory_ktm);
    clear_dir();
    rmdir(kvdir);
    unlink(path);
    ds4_model_free(model);
    TEST_END();
}

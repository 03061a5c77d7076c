/* Disk KV cache; file format and policy in kvcache.h. */
#include "kv/kvcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util/sha1.h"

#define HDR_BYTES 48
#define TRAILER_BYTES 8
#define HALF_LIFE_S (6.0 * 3600.0)

struct kv_cache {
    kv_opts o;
    char *dir;
    uint64_t written;
    const char *protect;     /* borrowed, see kv_cache_protect */
    size_t protect_len;
};

void kv_cache_protect(kv_cache *c, const char *text, size_t len) {
    c->protect = text;
    c->protect_len = text ? len : 0;
}

static void logf_(kv_cache *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(kv_cache *c, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->o.log) c->o.log(c->o.log_user, msg);
}

static void put32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static void put64(unsigned char *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i)); }
static uint32_t get32(const unsigned char *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t get64(const unsigned char *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

/* CRC of a header with the mutable fields read as zero. */
static uint32_t crc_header(const unsigned char *h) {
    unsigned char t[HDR_BYTES];
    memcpy(t, h, HDR_BYTES);
    memset(t + 12, 0, 4);
    memset(t + 32, 0, 8);
    return ds4_crc32(0, t, HDR_BYTES);
}

kv_cache *kv_cache_open(const kv_opts *o, ds4_err *err) {
    if (!o->dir || !*o->dir) { ds4_err_set(err, "kv cache: no directory"); return NULL; }
    if (mkdir(o->dir, 0777) && errno != EEXIST) {
        ds4_err_set(err, "kv cache: cannot create %s: %s", o->dir, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (stat(o->dir, &sb) || !S_ISDIR(sb.st_mode)) {
        ds4_err_set(err, "kv cache: %s is not a directory", o->dir);
        return NULL;
    }
    kv_cache *c = calloc(1, sizeof *c);
    if (!c || !(c->dir = strdup(o->dir))) { free(c); ds4_err_set(err, "out of memory"); return NULL; }
    c->o = *o;
    c->o.dir = c->dir;
    if (c->o.quant_bits != 2) c->o.quant_bits = 4;
    return c;
}

void kv_cache_close(kv_cache *c) {
    if (!c) return;
    free(c->dir);
    free(c);
}

void kv_hit_free(kv_hit *h) {
    if (!h) return;
    free(h->tokens);
    free(h->extra);
    memset(h, 0, sizeof *h);
}

static void path_of(kv_cache *c, const char *name, char *out, size_t cap) {
    snprintf(out, cap, "%s/%s", c->dir, name);
}

void kv_cache_delete(kv_cache *c, const char *name) {
    char p[4096];
    path_of(c, name, p, sizeof p);
    if (unlink(p) == 0) logf_(c, "kv cache: deleted %s", name);
}

static bool valid_name(const char *n) {
    if (strlen(n) != 43 || strcmp(n + 40, ".kv")) return false;
    for (int i = 0; i < 40; i++)
        if (!((n[i] >= '0' && n[i] <= '9') || (n[i] >= 'a' && n[i] <= 'f'))) return false;
    return true;
}

/* ---- directory scan ---- */

typedef struct entry {
    char name[48];
    unsigned char hdr[HDR_BYTES];
    uint32_t key_len;
    uint64_t size;
} entry;

static int read_header(kv_cache *c, const char *name, entry *e) {
    char p[4096];
    path_of(c, name, p, sizeof p);
    FILE *f = fopen(p, "rb");
    if (!f) return -1;
    unsigned char kl[4];
    int ok = fread(e->hdr, 1, HDR_BYTES, f) == HDR_BYTES && fread(kl, 1, 4, f) == 4;
    struct stat sb;
    ok = ok && fstat(fileno(f), &sb) == 0;
    fclose(f);
    if (!ok) return -1;
    const unsigned char *h = e->hdr;
    e->key_len = get32(kl);
    e->size = (uint64_t)sb.st_size;
    snprintf(e->name, sizeof e->name, "%s", name);
    if (memcmp(h, "KVC", 3) || h[3] != 1 || (h[4] != 2 && h[4] != 4) || get32(h + 8) == 0) return -1;
    if ((uint64_t)HDR_BYTES + 4 + e->key_len + get64(h + 40) + TRAILER_BYTES > e->size) return -1;
    return 0;
}

static int scan(kv_cache *c, entry **out, size_t *n) {
    *out = NULL;
    *n = 0;
    DIR *d = opendir(c->dir);
    if (!d) return -1;
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!valid_name(de->d_name)) continue;
        entry e;
        if (read_header(c, de->d_name, &e)) {
            logf_(c, "kv cache: ignoring invalid file %s", de->d_name);
            continue;
        }
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            entry *ne = realloc(*out, nc * sizeof *ne);
            if (!ne) break;
            *out = ne;
            cap = nc;
        }
        (*out)[(*n)++] = e;
    }
    closedir(d);
    return 0;
}

uint64_t kv_cache_disk_bytes(kv_cache *c) {
    entry *es;
    size_t n;
    uint64_t t = 0;
    if (scan(c, &es, &n) == 0)
        for (size_t i = 0; i < n; i++) t += es[i].size;
    free(es);
    return t;
}

uint64_t kv_cache_written_bytes(kv_cache *c) { return c->written; }

static double score(const entry *e, double now) {
    const unsigned char *h = e->hdr;
    double age = now - (double)get64(h + 32);
    if (age < 0) age = 0;
    double hits = get32(h + 12) * pow(2.0, -age / HALF_LIFE_S);
    if (hits < 0.01) hits = 0;
    double s = (hits + 1) * (double)get32(h + 8) / (double)(e->size ? e->size : 1);
    int reason = h[5];
    if (reason == KV_REASON_COLD || reason == KV_REASON_EVICT || reason == KV_REASON_SHUTDOWN) s *= 4;
    return s;
}

static void evict(kv_cache *c, const char *protect) {
    entry *es;
    size_t n;
    if (scan(c, &es, &n)) return;
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) total += es[i].size;
    double now = (double)time(NULL);
    while (total > c->o.budget_bytes) {
        size_t worst = n;
        for (size_t i = 0; i < n; i++) {
            if (!es[i].size || !strcmp(es[i].name, protect)) continue;
            if (c->protect && es[i].key_len <= c->protect_len) {
                char want[48];
                ds4_sha1_hex(c->protect, es[i].key_len, want);
                strcat(want, ".kv");
                if (!strcmp(want, es[i].name)) continue;
            }
            if (worst == n) { worst = i; continue; }
            double a = score(&es[i], now), b = score(&es[worst], now);
            if (a < b || (a == b && get64(es[i].hdr + 32) < get64(es[worst].hdr + 32))) worst = i;
        }
        if (worst == n) break;
        logf_(c, "kv cache: evicting %s (%u tokens, %llu bytes) to stay within %llu bytes", es[worst].name,
              get32(es[worst].hdr + 8), (unsigned long long)es[worst].size, (unsigned long long)c->o.budget_bytes);
        kv_cache_delete(c, es[worst].name);
        total -= es[worst].size;
        es[worst].size = 0;
    }
    free(es);
}

/* ---- save ---- */

typedef struct wctx {
    FILE *f;
    uint32_t crc;
    uint64_t n;
} wctx;

static int wr(void *ud, const void *buf, size_t n) {
    wctx *w = ud;
    if (fwrite(buf, 1, n, w->f) != n) return -1;
    w->crc = ds4_crc32(w->crc, buf, n);
    w->n += n;
    return 0;
}

int kv_cache_save(kv_cache *c, const char *key, size_t key_len, enum kv_reason reason, const ds4_session *s,
                  const int32_t *tokens, uint32_t n, const float *logits, const void *extra, size_t extra_len,
                  ds4_err *err) {
    if (n < c->o.min_tokens || n == 0) return 1;
    if (s->pos != n) return ds4_err_set(err, "kv save: session holds %u tokens, asked to save %u", s->pos, n);
    if (key_len > UINT32_MAX) return ds4_err_set(err, "kv save: key text too long");
    uint64_t payload = ds4_session_payload_size(s);
    uint64_t size = HDR_BYTES + 4 + key_len + payload + extra_len + TRAILER_BYTES;
    if (size + size / 100 > c->o.budget_bytes) {
        logf_(c, "kv cache: not saving %u tokens (%llu bytes): over the %llu byte budget", n,
              (unsigned long long)size, (unsigned long long)c->o.budget_bytes);
        return 1;
    }
    char name[48], path[4096], tmp[4200];
    ds4_sha1_hex(key, key_len, name);
    strcat(name, ".kv");
    path_of(c, name, path, sizeof path);
    entry old;
    if (read_header(c, name, &old) == 0 && get32(old.hdr + 8) == n && old.key_len == key_len) {
        logf_(c, "kv cache: %s already holds these %u tokens; kept", name, n);
        return 1;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    double t0 = (double)clock() / CLOCKS_PER_SEC;
    FILE *f = fopen(tmp, "wb");
    if (!f) return ds4_err_set(err, "kv save: cannot create %s: %s", tmp, strerror(errno));
    unsigned char h[HDR_BYTES] = {0};
    memcpy(h, "KVC", 3);
    h[3] = 1;
    h[4] = c->o.quant_bits;
    h[5] = (unsigned char)reason;
    h[6] = extra_len ? KV_FLAG_TOOLMAP : 0;
    put32(h + 8, n);
    put32(h + 16, s->opts.ctx_max);
    uint64_t now = (uint64_t)time(NULL);
    put64(h + 24, now);
    put64(h + 32, now);
    put64(h + 40, payload);
    wctx w = {f, 0, 0};
    unsigned char kl[4];
    put32(kl, (uint32_t)key_len);
    int bad = fwrite(h, 1, HDR_BYTES, f) != HDR_BYTES;
    w.crc = crc_header(h);
    bad = bad || wr(&w, kl, 4) || wr(&w, key, key_len);
    uint64_t before = w.n;
    if (!bad && ds4_session_payload_save(s, tokens, logits, wr, &w, err)) {
        fclose(f);
        unlink(tmp);
        return -1;
    }
    bad = bad || w.n - before != payload;
    if (!bad && extra_len) bad = wr(&w, extra, extra_len);
    unsigned char tr[TRAILER_BYTES];
    memcpy(tr, "KCRC", 4);
    put32(tr + 4, w.crc);
    bad = bad || fwrite(tr, 1, TRAILER_BYTES, f) != TRAILER_BYTES;
    bad = bad || fflush(f) || fsync(fileno(f));
    bad = fclose(f) || bad;
    if (bad || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return ds4_err_set(err, "kv save: writing %s failed: %s", path, strerror(e));
    }
    int dfd = open(c->dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    c->written += size;
    static const char *const rn[] = {"unknown", "cold", "continued", "evict", "shutdown"};
    logf_(c, "kv cache: saved %s reason=%s tokens=%u key_bytes=%zu size=%llu time=%.2fs total_written=%llu", name,
          rn[reason <= 4 ? reason : 0], n, key_len, (unsigned long long)size,
          (double)clock() / CLOCKS_PER_SEC - t0, (unsigned long long)c->written);
    if (reason == KV_REASON_CONTINUED) {
        /* A longer continued checkpoint of the same conversation supersedes
         * the shorter ones (they would only evict each other, API.md §18.5). */
        entry *es;
        size_t ne;
        if (scan(c, &es, &ne) == 0) {
            for (size_t i = 0; i < ne; i++) {
                if (es[i].hdr[5] != KV_REASON_CONTINUED || es[i].key_len >= key_len) continue;
                char want[48];
                ds4_sha1_hex(key, es[i].key_len, want);
                strcat(want, ".kv");
                if (!strcmp(want, es[i].name)) kv_cache_delete(c, es[i].name);
            }
            free(es);
        }
    }
    evict(c, name);
    return 0;
}

/* ---- load ---- */

typedef struct rctx {
    FILE *f;
    uint32_t crc;
    uint64_t left;   /* payload bytes the loader may still read */
} rctx;

static int rd(void *ud, void *buf, size_t n) {
    rctx *r = ud;
    if (n > r->left || fread(buf, 1, n, r->f) != n) return -1;
    r->left -= n;
    r->crc = ds4_crc32(r->crc, buf, n);
    return 0;
}

static int cmp_entry(const void *a, const void *b) {
    const entry *x = a, *y = b;
    if (x->key_len != y->key_len) return x->key_len < y->key_len ? 1 : -1;
    uint32_t tx = get32(x->hdr + 8), ty = get32(y->hdr + 8);
    return tx < ty ? 1 : tx > ty ? -1 : 0;
}

/* Loads one candidate; 1 hit, 0 not usable, -1 corrupt (session reset). */
static int try_load(kv_cache *c, const entry *e, const char *text, ds4_session *s, float *logits, kv_hit *hit,
                    ds4_err *err) {
    char p[4096];
    path_of(c, e->name, p, sizeof p);
    FILE *f = fopen(p, "rb");
    if (!f) return 0;
    unsigned char h[HDR_BYTES], kl[4];
    char *key = NULL;
    int rc = -1;
    const char *why = "short read";
    if (fread(h, 1, HDR_BYTES, f) != HDR_BYTES || fread(kl, 1, 4, f) != 4) goto out;
    uint32_t key_len = get32(kl);
    if (key_len != e->key_len || memcmp(h, e->hdr, 12) || memcmp(h + 16, e->hdr + 16, 8) ||
        memcmp(h + 40, e->hdr + 40, 8)) { why = "file changed"; goto out; }
    if (!(key = malloc(key_len ? key_len : 1)) || fread(key, 1, key_len, f) != key_len) goto out;
    if (memcmp(key, text, key_len)) { rc = 0; goto out; } /* hash collision or stale: not ours */
    rctx r = {f, crc_header(h), get64(h + 40)};
    r.crc = ds4_crc32(r.crc, kl, 4);
    r.crc = ds4_crc32(r.crc, key, key_len);
    int32_t *toks = NULL;
    uint32_t nt = 0;
    ds4_err lerr = {{0}};
    if (ds4_session_payload_load(s, rd, &r, &toks, &nt, logits, &lerr)) {
        why = lerr.msg;
        goto out;
    }
    if (r.left) { ds4_session_reset(s); free(toks); why = "payload length mismatch"; goto out; }
    if (nt != get32(h + 8)) { ds4_session_reset(s); free(toks); why = "token count differs from the header"; goto out; }
    void *extra = NULL;
    uint64_t extra_len = e->size - (HDR_BYTES + 4 + key_len + get64(h + 40) + TRAILER_BYTES);
    if (extra_len) {
        if (!(h[6] & KV_FLAG_TOOLMAP) || extra_len > ((uint64_t)1 << 31) || !(extra = malloc(extra_len)) ||
            fread(extra, 1, extra_len, f) != extra_len) {
            free(extra);
            ds4_session_reset(s);
            free(toks);
            why = "bad appended section";
            goto out;
        }
        r.crc = ds4_crc32(r.crc, extra, extra_len);
    }
    unsigned char tr[TRAILER_BYTES];
    if (fread(tr, 1, TRAILER_BYTES, f) != TRAILER_BYTES || memcmp(tr, "KCRC", 4) || get32(tr + 4) != r.crc) {
        free(extra);
        ds4_session_reset(s);
        free(toks);
        why = "checksum mismatch";
        goto out;
    }
    memset(hit, 0, sizeof *hit);
    hit->tokens = toks;
    hit->n_tokens = nt;
    hit->key_len = key_len;
    hit->extra = extra;
    hit->extra_len = extra_len;
    hit->reason = (enum kv_reason)(h[5] <= 4 ? h[5] : 0);
    snprintf(hit->name, sizeof hit->name, "%s", e->name);
    rc = 1;
out:
    fclose(f);
    free(key);
    if (rc < 0) {
        logf_(c, "kv cache: rejected %s: %s; deleting it", e->name, why);
        kv_cache_delete(c, e->name);
    }
    (void)err;
    return rc;
}

static void touch(kv_cache *c, const char *name, uint32_t hits) {
    char p[4096];
    path_of(c, name, p, sizeof p);
    int fd = open(p, O_WRONLY);
    if (fd < 0) return;
    unsigned char b[8];
    put32(b, hits);
    ssize_t w1 = pwrite(fd, b, 4, 12);
    put64(b, (uint64_t)time(NULL));
    ssize_t w2 = pwrite(fd, b, 8, 32);
    (void)w1;
    (void)w2;
    close(fd);
}

int kv_cache_load_prefix(kv_cache *c, const char *text, size_t len, ds4_session *s, float *logits,
                         uint32_t cold_max, kv_hit *hit, ds4_err *err) {
    entry *es;
    size_t n;
    if (scan(c, &es, &n)) return ds4_err_set(err, "kv cache: cannot read %s", c->dir);
    if (n) qsort(es, n, sizeof *es, cmp_entry);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const unsigned char *h = es[i].hdr;
        if (es[i].key_len > len || get32(h + 8) < c->o.min_tokens || get32(h + 16) > c->o.ctx) continue;
        if (c->o.reject_different_quant && h[4] != c->o.quant_bits) continue;
        char want[48];
        ds4_sha1_hex(text, es[i].key_len, want);
        strcat(want, ".kv");
        if (strcmp(want, es[i].name)) continue;
        rc = try_load(c, &es[i], text, s, logits, hit, err);
        if (rc < 0) rc = 0; /* corrupt: next candidate */
        if (rc == 1) {
            if (hit->n_tokens > cold_max) kv_cache_delete(c, hit->name); /* consumed: live session re-saves it */
            else touch(c, hit->name, get32(h + 12) + 1);
        }
    }
    free(es);
    return rc;
}

int kv_cache_each_toolmap(kv_cache *c, void (*fn)(void *user, const void *data, size_t len), void *user) {
    entry *es;
    size_t n;
    if (scan(c, &es, &n)) return 0;
    int done = 0;
    unsigned char *buf = malloc(1 << 16);
    for (size_t i = 0; buf && i < n; i++) {
        const unsigned char *h = es[i].hdr;
        if (!(h[6] & KV_FLAG_TOOLMAP)) continue;
        uint64_t pre = HDR_BYTES + 4 + (uint64_t)es[i].key_len + get64(h + 40);
        uint64_t extra_len = es[i].size - pre - TRAILER_BYTES;
        if (es[i].size < pre + TRAILER_BYTES || extra_len == 0 || extra_len > ((uint64_t)1 << 31)) continue;
        char p[4096];
        path_of(c, es[i].name, p, sizeof p);
        FILE *f = fopen(p, "rb");
        if (!f) continue;
        unsigned char hh[HDR_BYTES];
        uint32_t crc = 0;
        bool ok = fread(hh, 1, HDR_BYTES, f) == HDR_BYTES;
        if (ok) crc = crc_header(hh);
        uint64_t left = pre - HDR_BYTES;
        while (ok && left) {
            size_t k = left < (1 << 16) ? (size_t)left : (1 << 16);
            ok = fread(buf, 1, k, f) == k;
            if (ok) crc = ds4_crc32(crc, buf, k);
            left -= k;
        }
        unsigned char *extra = ok ? malloc(extra_len) : NULL;
        unsigned char tr[TRAILER_BYTES];
        ok = extra && fread(extra, 1, extra_len, f) == extra_len && fread(tr, 1, TRAILER_BYTES, f) == TRAILER_BYTES;
        if (ok) crc = ds4_crc32(crc, extra, extra_len);
        fclose(f);
        if (ok && !memcmp(tr, "KCRC", 4) && get32(tr + 4) == crc) {
            fn(user, extra, extra_len);
            done++;
        } else {
            logf_(c, "kv cache: tool map of %s unreadable or corrupt; ignored", es[i].name);
        }
        free(extra);
    }
    free(buf);
    free(es);
    return done;
}

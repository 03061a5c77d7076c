/* DeepSeek V4 byte-level BPE tokenizer: construction, encoding, decoding.
 * Contract in tokenizer.h; algorithm in shared/spec/TOKENIZER.md (§ below).
 *
 * Encoding path for one call:
 *   added-token trie scan (§3) -> UTF-8 validation (bad bytes become single
 *   byte tokens) -> split 1 numbers -> split 2 CJK/kana -> split 3 main regex
 *   (§4, PCRE2) -> per piece: cache lookup, else BPE over ids (§6).
 * BPE never sees the GPT-2 alphabet: vocabulary and merges are converted to
 * raw bytes at load time and merges are keyed by (left id, right id). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/tokenizer_int.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ======================================================================
 * GPT-2 byte alphabet (§5) and UTF-8 helpers
 * ====================================================================== */

/* Printable bytes map to themselves; the 68 others (0x00-0x20, 0x7F-0xA0,
 * 0xAD), in increasing order, to U+0100..U+0143. */
uint32_t tok_byte_to_cp(uint8_t b) {
    if (b <= 0x20) return 256u + b;
    if (b >= 0x7F && b <= 0xA0) return 256u + 33u + (uint32_t)(b - 0x7F);
    if (b == 0xAD) return 256u + 67u;
    return b;
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 256) return tok_byte_to_cp((uint8_t)cp) == cp ? (int)cp : -1;
    if (cp <= 256 + 32) return (int)(cp - 256);
    if (cp <= 256 + 66) return (int)(0x7F + (cp - 256 - 33));
    if (cp == 256 + 67) return 0xAD;
    return -1;
}

/* Classifies the bytes at p (n >= 1 available) per Unicode Table 3-7:
 *   k > 0  a well-formed character of k bytes;
 *   0      ill-formed; *m = length of the maximal subpart (1..3), the unit
 *          that from_utf8_lossy replaces with one U+FFFD;
 *   -1     the n bytes are a valid but incomplete prefix. */
static int utf8_scan(const uint8_t *p, size_t n, int *m) {
    uint8_t b = p[0], lo = 0x80, hi = 0xBF;
    int need;
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) need = 1;
    else if (b == 0xE0) { need = 2; lo = 0xA0; }
    else if (b >= 0xE1 && b <= 0xEC) need = 2;
    else if (b == 0xED) { need = 2; hi = 0x9F; } /* no surrogates */
    else if (b == 0xEE || b == 0xEF) need = 2;
    else if (b == 0xF0) { need = 3; lo = 0x90; } /* no overlongs */
    else if (b >= 0xF1 && b <= 0xF3) need = 3;
    else if (b == 0xF4) { need = 3; hi = 0x8F; } /* <= U+10FFFF */
    else { *m = 1; return 0; }
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n) return -1;
        if (p[k] < lo || p[k] > hi) { *m = k; return 0; }
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

static int is_ascii8(const uint8_t *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    return (w & 0x8080808080808080ull) == 0;
}

bool ds4_utf8_valid(const char *s, size_t len, size_t *bad_off) {
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < len) {
        if (i + 8 <= len && is_ascii8(p + i)) { i += 8; continue; }
        int m, k = utf8_scan(p + i, len - i, &m);
        if (k <= 0) {
            if (bad_off) *bad_off = i;
            return false;
        }
        i += (size_t)k;
    }
    return true;
}

/* Decodes a GPT-2 alphabet string into raw bytes (out has room for len
 * bytes: every code point is >= 1 UTF-8 byte).  -1 if s is not valid UTF-8
 * or holds a code point outside the alphabet. */
static long alphabet_decode(const uint8_t *s, size_t len, uint8_t *out) {
    size_t i = 0, o = 0;
    while (i < len) {
        int m, k = utf8_scan(s + i, len - i, &m);
        if (k <= 0) return -1;
        uint32_t cp;
        if (k == 1) cp = s[i];
        else if (k == 2) cp = ((uint32_t)(s[i] & 0x1F) << 6) | (s[i + 1] & 0x3F);
        else return -1; /* the alphabet stops at U+0143 */
        int b = tok_cp_to_byte(cp);
        if (b < 0) return -1;
        out[o++] = (uint8_t)b;
        i += (size_t)k;
    }
    return (long)o;
}

static uint64_t hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    return h;
}

static uint32_t hash_pair(uint64_t key) {
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    return (uint32_t)(h >> 32) ^ (uint32_t)h;
}

/* ======================================================================
 * Vocabulary accessors
 * ====================================================================== */

int32_t ds4_tok_n_vocab(const ds4_tokenizer *t) { return t->n_vocab; }
int32_t ds4_tok_n_merges(const ds4_tokenizer *t) { return t->n_merges; }
int32_t ds4_tok_n_added(const ds4_tokenizer *t) { return t->n_added; }
int32_t ds4_tok_bos(const ds4_tokenizer *t) { return t->bos; }
int32_t ds4_tok_eos(const ds4_tokenizer *t) { return t->eos; }

const char *ds4_tok_piece(const ds4_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->piece_off[id + 1] - t->piece_off[id];
    return t->piece_bytes + t->piece_off[id];
}

int ds4_tok_type(const ds4_tokenizer *t, int32_t id) {
    return (id < 0 || id >= t->n_vocab) ? 0 : t->type[id];
}

static bool type_is_added(int type) { return type == DS4_TOK_TYPE_CONTROL || type == DS4_TOK_TYPE_USER_DEFINED; }

bool ds4_tok_is_added(const ds4_tokenizer *t, int32_t id) { return type_is_added(ds4_tok_type(t, id)); }

/* Probes the piece hash.  want_normal: only type-1 ids (merge resolution);
 * else an added id wins over a normal one with the same bytes. */
static int32_t find_piece(const ds4_tokenizer *t, const uint8_t *s, size_t len, bool want_normal) {
    uint32_t i = (uint32_t)hash_bytes(s, len) & t->ft_mask;
    int32_t normal = -1;
    for (;; i = (i + 1) & t->ft_mask) {
        int32_t id = t->ft[i];
        if (id < 0) return normal;
        size_t plen = t->piece_off[id + 1] - t->piece_off[id];
        if (plen != len || memcmp(t->piece_bytes + t->piece_off[id], s, len) != 0) continue;
        bool added = type_is_added(t->type[id]);
        if (want_normal) {
            if (!added) return id;
        } else {
            if (added) return id;
            if (normal < 0) normal = id;
        }
    }
}

int32_t ds4_tok_find(const ds4_tokenizer *t, const char *s, size_t len) {
    return find_piece(t, (const uint8_t *)s, len, false);
}

int32_t ds4_tok_find_str(const ds4_tokenizer *t, const char *z) { return ds4_tok_find(t, z, strlen(z)); }

static const tok_merge *merge_find(const ds4_tokenizer *t, int32_t l, int32_t r) {
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    for (uint32_t i = hash_pair(key) & t->mt_mask;; i = (i + 1) & t->mt_mask) {
        const tok_merge *e = &t->mt[i];
        if (e->key == key) return e;
        if (e->key == UINT64_MAX) return NULL;
    }
}

/* ======================================================================
 * Construction
 * ====================================================================== */

/* The three pre-tokenizer regexes of §4, for PCRE2.  \s and \S are not
 * used: Oniguruma's \s is the Unicode White_Space property, while PCRE2's
 * UCP \s is its own list (it lacks U+0085 and, through 10.42 at least,
 * includes U+180E, a Cf char: vectors_fuzz case fuzz_0082).  So split 3 is
 * built with \p{White_Space} (PCRE2 >= 10.40), or on older PCRE2 with that
 * property's fixed member list, which TOKENIZER.md §4 spells out. */
static const char RE_NUM[] = "\\p{N}{1,3}";
static const char RE_CJK[] = "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+";
#define RE_MAIN(WS)                                                                                               \
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"                                                         \
    "|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"                                                                \
    "| ?[\\p{P}\\p{S}]+[\\r\\n]*"                                                                                  \
    "|[" WS "]*[\\r\\n]+"                                                                                        \
    "|[" WS "]+(?![^" WS "])"                                                                                    \
    "|[" WS "]+"
static const char RE_MAIN_PROP[] = RE_MAIN("\\p{White_Space}");
static const char RE_MAIN_LIST[] =
    RE_MAIN("\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}");

/* The same regexes as tokenizer.json spells them (JSON-unescaped); a file
 * with other splits is refused rather than tokenized wrongly. */
static const char *const JSON_SPLITS[3] = {
    "\\p{N}{1,3}",
    u8"[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
};

static void *re_compile(const char *pat, const char *what, ds4_err *err) {
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        ds4_err_set(err, "tokenizer: compiling %s regex at offset %zu: %s", what, (size_t)eo, (char *)msg);
        return NULL;
    }
    /* JIT is a speed-up only: without it pcre2_match interprets. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

struct tok_state;
static void state_free(struct tok_state *st);

void ds4_tokenizer_free(ds4_tokenizer *t) {
    if (!t) return;
    while (t->pool) {
        struct tok_state *st = t->pool;
        t->pool = *(struct tok_state **)st; /* next is the first member */
        state_free(st);
    }
    pthread_mutex_destroy(&t->pool_mu);
    pcre2_code_free(t->re_num);
    pcre2_code_free(t->re_cjk);
    pcre2_code_free(t->re_main);
    free(t->type);
    free(t->piece_off);
    free(t->piece_bytes);
    free(t->merge_lr);
    free(t->mt);
    free(t->ft);
    free(t->trie);
    free(t);
}

static uint32_t pow2_at_least(uint64_t n) {
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

static int trie_add(ds4_tokenizer *t, const uint8_t *s, size_t len, int32_t id, ds4_err *err) {
    int32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t c = t->trie[node].child;
        while (c >= 0 && t->trie[c].byte != s[i]) c = t->trie[c].sibling;
        if (c < 0) {
            c = t->n_trie++; /* capacity reserved by the caller: total added bytes + 1 */
            t->trie[c] = (tok_trie_node){.child = -1, .sibling = t->trie[node].child, .id = -1, .byte = s[i]};
            t->trie[node].child = c;
        }
        node = c;
    }
    if (t->trie[node].id < 0) t->trie[node].id = id; /* duplicate string: the lower id wins */
    (void)err;
    return 0;
}

/* One merge side or token given as (pointer, length). */
typedef struct tok_sv {
    const char *p;
    size_t len;
} tok_sv;

/* Shared constructor.  strs[i]: id i in GPT-2 alphabet (type 1) or literal
 * (types 3/4); merges as (left, right) alphabet strings. */
static ds4_tokenizer *tok_build(const tok_sv *strs, int64_t n, const int32_t *types, const tok_sv *mleft,
                                const tok_sv *mright, int64_t n_merges, int32_t bos, int32_t eos, ds4_err *err) {
    if (n <= 0 || n > INT32_MAX / 2) return ds4_err_set(err, "tokenizer: bad vocabulary size %lld", (long long)n), NULL;
    if (n_merges < 0 || n_merges > INT32_MAX / 2)
        return ds4_err_set(err, "tokenizer: bad merge count %lld", (long long)n_merges), NULL;
    ds4_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return ds4_err_set(err, "tokenizer: out of memory"), NULL;
    pthread_mutex_init(&t->pool_mu, NULL);
    t->n_vocab = (int32_t)n;
    t->naive_max = 48;
    size_t total = 0, added_bytes = 0;
    for (int64_t i = 0; i < n; i++) {
        total += strs[i].len;
        if (type_is_added(types[i])) added_bytes += strs[i].len;
    }
    if (total >= UINT32_MAX) {
        ds4_err_set(err, "tokenizer: vocabulary strings too large (%zu bytes)", total);
        goto fail;
    }
    t->type = malloc((size_t)n);
    t->piece_off = malloc(((size_t)n + 1) * sizeof *t->piece_off);
    t->piece_bytes = malloc(total + 1);
    t->ft_mask = pow2_at_least((uint64_t)n * 2) - 1;
    t->ft = malloc(((size_t)t->ft_mask + 1) * sizeof *t->ft);
    t->trie = malloc((added_bytes + 1) * sizeof *t->trie);
    t->merge_lr = malloc(((size_t)n_merges * 2 + 1) * sizeof *t->merge_lr);
    t->mt_mask = pow2_at_least((uint64_t)n_merges * 2) - 1;
    t->mt = malloc(((size_t)t->mt_mask + 1) * sizeof *t->mt);
    if (!t->type || !t->piece_off || !t->piece_bytes || !t->ft || !t->trie || !t->merge_lr || !t->mt) {
        ds4_err_set(err, "tokenizer: out of memory");
        goto fail;
    }

    /* Pieces: raw bytes of every id. */
    size_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        int ty = types[i];
        t->type[i] = (uint8_t)(type_is_added(ty) ? ty : DS4_TOK_TYPE_NORMAL);
        t->piece_off[i] = (uint32_t)off;
        uint8_t *dst = (uint8_t *)t->piece_bytes + off;
        if (type_is_added(ty)) {
            if (strs[i].len == 0) {
                ds4_err_set(err, "tokenizer: added token %lld is empty", (long long)i);
                goto fail;
            }
            memcpy(dst, strs[i].p, strs[i].len);
            off += strs[i].len;
            t->n_added++;
        } else {
            long k = alphabet_decode((const uint8_t *)strs[i].p, strs[i].len, dst);
            if (k <= 0) {
                ds4_err_set(err, "tokenizer: token %lld \"%.*s\" is %s", (long long)i, (int)(strs[i].len > 60 ? 60 : strs[i].len),
                            strs[i].p, k == 0 ? "empty" : "not in the GPT-2 byte alphabet and not marked as an added token");
                goto fail;
            }
            off += (size_t)k;
        }
    }
    t->piece_off[n] = (uint32_t)off;

    /* Piece hash (duplicates kept: find_piece chooses) and byte tokens. */
    memset(t->ft, 0xFF, ((size_t)t->ft_mask + 1) * sizeof *t->ft);
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        const uint8_t *p = (const uint8_t *)t->piece_bytes + t->piece_off[i];
        size_t len = t->piece_off[i + 1] - t->piece_off[i];
        uint32_t h = (uint32_t)hash_bytes(p, len) & t->ft_mask;
        while (t->ft[h] >= 0) h = (h + 1) & t->ft_mask;
        t->ft[h] = i;
        if (len == 1 && t->type[i] == DS4_TOK_TYPE_NORMAL && t->byte_id[p[0]] < 0) t->byte_id[p[0]] = i;
    }
    for (int b = 0; b < 256; b++) {
        if (t->byte_id[b] < 0) {
            ds4_err_set(err, "tokenizer: no token for byte 0x%02X (byte-level BPE needs all 256)", b);
            goto fail;
        }
    }

    /* Merges, keyed by id pair. */
    memset(t->mt, 0xFF, ((size_t)t->mt_mask + 1) * sizeof *t->mt);
    t->n_merges = (int32_t)n_merges;
    {
        uint8_t buf[1024];
        for (int64_t r = 0; r < n_merges; r++) {
            const tok_sv *side[2] = {&mleft[r], &mright[r]};
            int32_t sid[2];
            size_t blen[2];
            for (int s = 0; s < 2; s++) {
                long k = side[s]->len <= 512 ? alphabet_decode((const uint8_t *)side[s]->p, side[s]->len, buf) : -1;
                sid[s] = k > 0 ? find_piece(t, buf, (size_t)k, true) : -1;
                if (sid[s] < 0) {
                    ds4_err_set(err, "tokenizer: merge %lld: side \"%.*s\" is not a vocabulary token", (long long)r,
                                (int)(side[s]->len > 60 ? 60 : side[s]->len), side[s]->p);
                    goto fail;
                }
                blen[s] = (size_t)k;
            }
            if (blen[0] + blen[1] > sizeof buf) {
                ds4_err_set(err, "tokenizer: merge %lld too long", (long long)r);
                goto fail;
            }
            memcpy(buf, t->piece_bytes + t->piece_off[sid[0]], blen[0]);
            memcpy(buf + blen[0], t->piece_bytes + t->piece_off[sid[1]], blen[1]);
            int32_t mid = find_piece(t, buf, blen[0] + blen[1], true);
            if (mid < 0) {
                ds4_err_set(err, "tokenizer: merge %lld (\"%.*s\" + \"%.*s\"): result is not a vocabulary token",
                            (long long)r, (int)side[0]->len, side[0]->p, (int)side[1]->len, side[1]->p);
                goto fail;
            }
            t->merge_lr[2 * r] = sid[0];
            t->merge_lr[2 * r + 1] = sid[1];
            uint64_t key = ((uint64_t)(uint32_t)sid[0] << 32) | (uint32_t)sid[1];
            uint32_t h = hash_pair(key) & t->mt_mask;
            while (t->mt[h].key != UINT64_MAX && t->mt[h].key != key) h = (h + 1) & t->mt_mask;
            if (t->mt[h].key == key) continue; /* duplicate pair: the lower rank stays */
            t->mt[h] = (tok_merge){.key = key, .rank = (int32_t)r, .id = mid};
        }
    }

    /* Added-token trie. */
    t->trie[0] = (tok_trie_node){.child = -1, .sibling = -1, .id = -1, .byte = 0};
    t->n_trie = 1;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (!type_is_added(t->type[i])) continue;
        const uint8_t *p = (const uint8_t *)t->piece_bytes + t->piece_off[i];
        trie_add(t, p, t->piece_off[i + 1] - t->piece_off[i], i, err);
        t->added_first[p[0]] = 1;
    }

    if (!(t->re_num = re_compile(RE_NUM, "number", err)) || !(t->re_cjk = re_compile(RE_CJK, "CJK", err)) ||
        !((t->re_main = re_compile(RE_MAIN_PROP, "main", NULL)) || (t->re_main = re_compile(RE_MAIN_LIST, "main", err))))
        goto fail;

    if (bos >= t->n_vocab || eos >= t->n_vocab) {
        ds4_err_set(err, "tokenizer: bos/eos id %d/%d out of range (vocabulary %d)", bos, eos, t->n_vocab);
        goto fail;
    }
    t->bos = bos >= 0 ? bos : ds4_tok_find_str(t, u8"<\uff5cbegin\u2581of\u2581sentence\uff5c>");
    t->eos = eos >= 0 ? eos : ds4_tok_find_str(t, u8"<\uff5cend\u2581of\u2581sentence\uff5c>");
    return t;
fail:
    ds4_tokenizer_free(t);
    return NULL;
}

ds4_tokenizer *ds4_tokenizer_from_arrays(const char *const *tokens, const size_t *tok_lens, int64_t n_tokens,
                                         const char *const *merges, const size_t *merge_lens, int64_t n_merges,
                                         const int32_t *token_type, int32_t bos_id, int32_t eos_id, ds4_err *err) {
    if (!tokens || !token_type || n_tokens <= 0 || (n_merges > 0 && !merges))
        return ds4_err_set(err, "tokenizer: tokens, token_type and merges arrays are required"), NULL;
    if ((uint64_t)n_tokens > SIZE_MAX / 4 || (uint64_t)n_merges > SIZE_MAX / 4)
        return ds4_err_set(err, "tokenizer: arrays too large"), NULL;
    tok_sv *strs = malloc((size_t)n_tokens * sizeof *strs);
    tok_sv *ml = malloc(((size_t)n_merges + 1) * sizeof *ml);
    tok_sv *mr = malloc(((size_t)n_merges + 1) * sizeof *mr);
    ds4_tokenizer *t = NULL;
    if (!strs || !ml || !mr) {
        ds4_err_set(err, "tokenizer: out of memory");
        goto done;
    }
    for (int64_t i = 0; i < n_tokens; i++) {
        if (!tokens[i]) {
            ds4_err_set(err, "tokenizer: token %lld is NULL", (long long)i);
            goto done;
        }
        strs[i] = (tok_sv){tokens[i], tok_lens ? tok_lens[i] : strlen(tokens[i])};
    }
    for (int64_t r = 0; r < n_merges; r++) {
        const char *m = merges[r];
        size_t len = m ? (merge_lens ? merge_lens[r] : strlen(m)) : 0;
        const char *sp = m ? memchr(m, ' ', len) : NULL;
        /* Exactly one space: no token spells 0x20 literally (it is Ġ). */
        if (!sp || sp == m || sp + 1 == m + len || memchr(sp + 1, ' ', (size_t)(m + len - sp - 1))) {
            ds4_err_set(err, "tokenizer: merge %lld \"%.*s\" is not \"left right\"", (long long)r, (int)(len > 60 ? 60 : len),
                        m ? m : "");
            goto done;
        }
        ml[r] = (tok_sv){m, (size_t)(sp - m)};
        mr[r] = (tok_sv){sp + 1, (size_t)(m + len - sp - 1)};
    }
    t = tok_build(strs, n_tokens, token_type, ml, mr, n_merges, bos_id, eos_id, err);
done:
    free(strs);
    free(ml);
    free(mr);
    return t;
}

/* Checks the parts of tokenizer.json that the engine hard-codes. */
static int json_check_pipeline(json_t *root, ds4_err *err) {
    json_t *model = json_object_get(root, "model");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!mtype || strcmp(mtype, "BPE") != 0) return ds4_err_set(err, "model.type is not \"BPE\"");
    if (json_is_true(json_object_get(model, "byte_fallback")) || json_is_true(json_object_get(model, "ignore_merges")))
        return ds4_err_set(err, "model.byte_fallback/ignore_merges are not supported");
    json_t *norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm)) {
        json_t *list = json_object_get(norm, "normalizers");
        if (!json_is_array(list) || json_array_size(list) != 0)
            return ds4_err_set(err, "normalizer is not empty (unsupported)");
    }
    json_t *pre = json_object_get(json_object_get(root, "pre_tokenizer"), "pretokenizers");
    if (!json_is_array(pre) || json_array_size(pre) != 4)
        return ds4_err_set(err, "pre_tokenizer is not the DeepSeek V3/V4 sequence (3 splits + ByteLevel)");
    for (int i = 0; i < 3; i++) {
        json_t *sp = json_array_get(pre, (size_t)i);
        const char *re = json_string_value(json_object_get(json_object_get(sp, "pattern"), "Regex"));
        const char *beh = json_string_value(json_object_get(sp, "behavior"));
        if (!re || strcmp(re, JSON_SPLITS[i]) != 0 || !beh || strcmp(beh, "Isolated") != 0 ||
            json_is_true(json_object_get(sp, "invert")))
            return ds4_err_set(err, "pre_tokenizer split %d differs from the DeepSeek V3/V4 regex (unsupported)", i + 1);
    }
    const char *bl = json_string_value(json_object_get(json_array_get(pre, 3), "type"));
    if (!bl || strcmp(bl, "ByteLevel") != 0) return ds4_err_set(err, "pre_tokenizer does not end with ByteLevel");
    return 0;
}

ds4_tokenizer *ds4_tokenizer_from_json_text(const char *json, size_t len, ds4_err *err) {
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root) return ds4_err_set(err, "tokenizer.json: line %d: %s", je.line, je.text), NULL;
    ds4_tokenizer *t = NULL;
    tok_sv *strs = NULL, *ml = NULL, *mr = NULL;
    int32_t *types = NULL;
    char what[256];
    if (json_check_pipeline(root, err) < 0) {
        ds4_err_prefix(err, "tokenizer.json");
        goto done;
    }
    json_t *vocab = json_object_get(json_object_get(root, "model"), "vocab");
    json_t *merges = json_object_get(json_object_get(root, "model"), "merges");
    json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(vocab) || !json_is_array(merges) || (added && !json_is_array(added))) {
        ds4_err_set(err, "tokenizer.json: model.vocab/model.merges/added_tokens missing or of the wrong type");
        goto done;
    }
    /* Vocabulary size = highest id + 1 over vocab and added tokens. */
    int64_t n = 0;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id >= (1 << 24)) {
            ds4_err_set(err, "tokenizer.json: vocab entry \"%.60s\" has a bad id", key);
            goto done;
        }
        if (id + 1 > n) n = id + 1;
    }
    size_t i;
    json_array_foreach(added, i, val) {
        json_int_t id = json_integer_value(json_object_get(val, "id"));
        if (!json_is_integer(json_object_get(val, "id")) || id < 0 || id >= (1 << 24) ||
            !json_is_string(json_object_get(val, "content"))) {
            ds4_err_set(err, "tokenizer.json: added_tokens[%zu] lacks a valid id/content", i);
            goto done;
        }
        if (id + 1 > n) n = id + 1;
    }
    strs = calloc((size_t)n + 1, sizeof *strs);
    types = calloc((size_t)n + 1, sizeof *types);
    size_t nm = json_array_size(merges);
    ml = malloc((nm + 1) * sizeof *ml);
    mr = malloc((nm + 1) * sizeof *mr);
    if (!strs || !types || !ml || !mr) {
        ds4_err_set(err, "tokenizer.json: out of memory");
        goto done;
    }
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_integer_value(val);
        strs[id] = (tok_sv){key, strlen(key)};
        types[id] = DS4_TOK_TYPE_NORMAL;
    }
    json_array_foreach(added, i, val) {
        json_int_t id = json_integer_value(json_object_get(val, "id"));
        json_t *c = json_object_get(val, "content");
        strs[id] = (tok_sv){json_string_value(c), json_string_length(c)};
        types[id] = json_is_true(json_object_get(val, "special")) ? DS4_TOK_TYPE_CONTROL : DS4_TOK_TYPE_USER_DEFINED;
    }
    for (int64_t id = 0; id < n; id++) {
        if (!types[id]) {
            ds4_err_set(err, "tokenizer.json: id %lld has no token (ids must be contiguous)", (long long)id);
            goto done;
        }
    }
    json_array_foreach(merges, i, val) {
        if (json_is_string(val)) {
            const char *m = json_string_value(val);
            size_t len = json_string_length(val);
            const char *sp = memchr(m, ' ', len);
            if (!sp || memchr(sp + 1, ' ', (size_t)(m + len - sp - 1))) {
                snprintf(what, sizeof what, "%.60s", m);
                ds4_err_set(err, "tokenizer.json: merge %zu \"%s\" is not \"left right\"", i, what);
                goto done;
            }
            ml[i] = (tok_sv){m, (size_t)(sp - m)};
            mr[i] = (tok_sv){sp + 1, (size_t)(m + len - sp - 1)};
        } else if (json_is_array(val) && json_array_size(val) == 2 && json_is_string(json_array_get(val, 0)) &&
                   json_is_string(json_array_get(val, 1))) { /* newer format: ["left", "right"] */
            json_t *a = json_array_get(val, 0), *b = json_array_get(val, 1);
            ml[i] = (tok_sv){json_string_value(a), json_string_length(a)};
            mr[i] = (tok_sv){json_string_value(b), json_string_length(b)};
        } else {
            ds4_err_set(err, "tokenizer.json: merge %zu is neither \"a b\" nor [a, b]", i);
            goto done;
        }
    }
    t = tok_build(strs, n, types, ml, mr, (int64_t)nm, -1, -1, err);
done:
    free(strs);
    free(types);
    free(ml);
    free(mr);
    json_decref(root);
    return t;
}

ds4_tokenizer *ds4_tokenizer_load_json(const char *path, ds4_err *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return ds4_err_set(err, "%s: %s", path, strerror(errno)), NULL;
    char *buf = NULL;
    long sz = -1;
    if (fseek(fp, 0, SEEK_END) == 0) sz = ftell(fp);
    if (sz < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return ds4_err_set(err, "%s: cannot determine size", path), NULL;
    }
    buf = malloc((size_t)sz + 1);
    if (!buf || fread(buf, 1, (size_t)sz, fp) != (size_t)sz) {
        fclose(fp);
        free(buf);
        return ds4_err_set(err, "%s: %s", path, buf ? "short read" : "out of memory"), NULL;
    }
    fclose(fp);
    ds4_tokenizer *t = ds4_tokenizer_from_json_text(buf, (size_t)sz, err);
    free(buf);
    if (!t) ds4_err_prefix(err, "%s", path);
    return t;
}

void ds4_tok_set_bpe_naive_max(ds4_tokenizer *t, int n) {
    t->naive_max = n;
    /* Cached results came from the other path; drop them. */
    while (t->pool) {
        struct tok_state *st = t->pool;
        t->pool = *(struct tok_state **)st;
        state_free(st);
    }
}

/* ======================================================================
 * Per-call scratch state and the piece cache
 * ====================================================================== */

enum {
    CACHE_SLOTS = 1 << 14,          /* slots; reset when 3/4 full */
    CACHE_MAX_KEY = 96,             /* longer pieces are rare: not cached */
    CACHE_ARENA_BYTES = 2 << 20,    /* reset when the arena would pass this */
};

typedef struct cache_slot {
    uint64_t h;
    uint32_t off;   /* arena offset: key bytes, then ids (4-aligned) */
    uint16_t klen;  /* 0 = empty */
    uint16_t nid;
} cache_slot;

typedef struct heap_ent {
    int32_t rank, pos, right, lid, rid, mid;
} heap_ent;

struct tok_state {
    struct tok_state *next; /* must stay first: see ds4_tokenizer_free */
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
    int32_t *sym, *nxt, *prv, *rk, *mid; /* BPE scratch, cap entries */
    heap_ent *heap;
    size_t cap, heap_cap;
    cache_slot *slots;
    uint8_t *arena;
    size_t arena_used;
    uint32_t n_slots_used;
};

static void state_free(struct tok_state *st) {
    if (!st) return;
    pcre2_match_data_free(st->md);
    pcre2_match_context_free(st->mc);
    pcre2_jit_stack_free(st->js);
    free(st->sym);
    free(st->nxt);
    free(st->prv);
    free(st->rk);
    free(st->mid);
    free(st->heap);
    free(st->slots);
    free(st->arena);
    free(st);
}

static struct tok_state *state_get(const ds4_tokenizer *tc, ds4_err *err) {
    ds4_tokenizer *t = (ds4_tokenizer *)tc; /* only the mutex-guarded pool is touched */
    pthread_mutex_lock(&t->pool_mu);
    struct tok_state *st = t->pool;
    if (st) t->pool = st->next;
    pthread_mutex_unlock(&t->pool_mu);
    if (st) return st;
    st = calloc(1, sizeof *st);
    if (!st) return ds4_err_set(err, "tokenizer: out of memory"), NULL;
    st->md = pcre2_match_data_create(2, NULL);
    st->mc = pcre2_match_context_create(NULL);
    /* A larger JIT stack than the 32 KiB default, for very long pieces. */
    st->js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    st->slots = calloc(CACHE_SLOTS, sizeof *st->slots);
    st->arena = malloc(CACHE_ARENA_BYTES);
    if (!st->md || !st->mc || !st->slots || !st->arena) {
        state_free(st);
        return ds4_err_set(err, "tokenizer: out of memory"), NULL;
    }
    if (st->js) pcre2_jit_stack_assign(st->mc, NULL, st->js);
    return st;
}

static void state_put(const ds4_tokenizer *tc, struct tok_state *st) {
    ds4_tokenizer *t = (ds4_tokenizer *)tc;
    pthread_mutex_lock(&t->pool_mu);
    st->next = t->pool;
    t->pool = st;
    pthread_mutex_unlock(&t->pool_mu);
}

static int state_reserve(struct tok_state *st, size_t n) {
    if (n <= st->cap) return 0;
    size_t c = st->cap ? st->cap : 64;
    while (c < n) c *= 2;
    int32_t **arrs[] = {&st->sym, &st->nxt, &st->prv, &st->rk, &st->mid};
    for (size_t i = 0; i < sizeof arrs / sizeof arrs[0]; i++) {
        int32_t *p = realloc(*arrs[i], c * sizeof(int32_t));
        if (!p) return -1;
        *arrs[i] = p;
    }
    st->cap = c;
    return 0;
}

static const int32_t *cache_get(struct tok_state *st, const uint8_t *p, size_t n, uint64_t h, size_t *nid) {
    for (uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
        cache_slot *s = &st->slots[i];
        if (!s->klen) return NULL;
        if (s->h == h && s->klen == n && memcmp(st->arena + s->off, p, n) == 0) {
            *nid = s->nid;
            return (const int32_t *)(st->arena + s->off + ((n + 3) & ~(size_t)3));
        }
    }
}

static void cache_put(struct tok_state *st, const uint8_t *p, size_t n, uint64_t h, const int32_t *ids, size_t nid) {
    size_t kpad = (n + 3) & ~(size_t)3, need = kpad + nid * sizeof(int32_t);
    if (st->n_slots_used >= CACHE_SLOTS / 4 * 3 || st->arena_used + need > CACHE_ARENA_BYTES) {
        /* Full: start over.  Text changes topic rarely enough that an LRU
         * buys little over a reset. */
        memset(st->slots, 0, CACHE_SLOTS * sizeof *st->slots);
        st->n_slots_used = 0;
        st->arena_used = 0;
    }
    uint32_t i = (uint32_t)h & (CACHE_SLOTS - 1);
    while (st->slots[i].klen) i = (i + 1) & (CACHE_SLOTS - 1);
    memcpy(st->arena + st->arena_used, p, n);
    memcpy(st->arena + st->arena_used + kpad, ids, nid * sizeof(int32_t));
    st->slots[i] = (cache_slot){.h = h, .off = (uint32_t)st->arena_used, .klen = (uint16_t)n, .nid = (uint16_t)nid};
    st->arena_used += need;
    st->n_slots_used++;
}

/* ======================================================================
 * BPE (§6)
 * ====================================================================== */

static int ids_reserve(ds4_tok_ids *v, size_t extra) {
    if (v->n + extra <= v->cap) return 0;
    size_t c = v->cap ? v->cap : 256;
    while (c < v->n + extra) c *= 2;
    int32_t *p = realloc(v->ids, c * sizeof *p);
    if (!p) return -1;
    v->ids = p;
    v->cap = c;
    return 0;
}

void ds4_tok_ids_free(ds4_tok_ids *v) {
    if (!v) return;
    free(v->ids);
    v->ids = NULL;
    v->n = v->cap = 0;
}

/* Small pieces: keep the rank of every adjacent pair, merge the leftmost
 * lowest-ranked one, refresh its two neighbours.  O(n^2) worst case. */
static size_t bpe_naive(const ds4_tokenizer *t, struct tok_state *st, size_t n) {
    int32_t *sym = st->sym, *rk = st->rk, *mid = st->mid;
    for (size_t i = 0; i + 1 < n; i++) {
        const tok_merge *m = merge_find(t, sym[i], sym[i + 1]);
        rk[i] = m ? m->rank : INT32_MAX;
        mid[i] = m ? m->id : -1;
    }
    while (n > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < n; i++)
            if (rk[i] < rk[best]) best = i;
        if (rk[best] == INT32_MAX) break;
        sym[best] = mid[best];
        memmove(sym + best + 1, sym + best + 2, (n - best - 2) * sizeof *sym);
        memmove(rk + best, rk + best + 1, (n - best - 2) * sizeof *rk);
        memmove(mid + best, mid + best + 1, (n - best - 2) * sizeof *mid);
        n--;
        for (size_t i = best ? best - 1 : 0; i <= best && i + 1 < n; i++) {
            const tok_merge *m = merge_find(t, sym[i], sym[i + 1]);
            rk[i] = m ? m->rank : INT32_MAX;
            mid[i] = m ? m->id : -1;
        }
    }
    return n;
}

static bool heap_less(const heap_ent *a, const heap_ent *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(struct tok_state *st, size_t *hn, heap_ent e) {
    if (*hn == st->heap_cap) {
        size_t c = st->heap_cap ? st->heap_cap * 2 : 256;
        heap_ent *p = realloc(st->heap, c * sizeof *p);
        if (!p) return -1;
        st->heap = p;
        st->heap_cap = c;
    }
    heap_ent *h = st->heap;
    size_t i = (*hn)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(&e, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = e;
    return 0;
}

static heap_ent heap_pop(struct tok_state *st, size_t *hn) {
    heap_ent *h = st->heap, top = h[0], last = h[--(*hn)];
    size_t i = 0, n = *hn;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (n) h[i] = last;
    return top;
}

static int heap_pair(const ds4_tokenizer *t, struct tok_state *st, size_t *hn, int32_t l, int32_t r) {
    const tok_merge *m = merge_find(t, st->sym[l], st->sym[r]);
    if (!m) return 0;
    return heap_push(st, hn, (heap_ent){m->rank, l, r, st->sym[l], st->sym[r], m->id});
}

/* Long pieces: linked list of symbols (a merged symbol keeps its left
 * position) and a min-heap of candidate pairs ordered by (rank, position),
 * stale entries skipped on pop.  O(n log n); same result as bpe_naive. */
static long bpe_heap(const ds4_tokenizer *t, struct tok_state *st, size_t n) {
    int32_t *sym = st->sym, *nxt = st->nxt, *prv = st->prv;
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        nxt[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
        prv[i] = (int32_t)i - 1;
    }
    for (size_t i = 0; i + 1 < n; i++)
        if (heap_pair(t, st, &hn, (int32_t)i, (int32_t)(i + 1)) < 0) return -1;
    while (hn) {
        heap_ent e = heap_pop(st, &hn);
        if (sym[e.pos] != e.lid || nxt[e.pos] != e.right || sym[e.right] != e.rid) continue; /* stale */
        sym[e.pos] = e.mid;
        int32_t nn = nxt[e.right];
        sym[e.right] = -1;
        nxt[e.pos] = nn;
        if (nn >= 0) prv[nn] = e.pos;
        if (prv[e.pos] >= 0 && heap_pair(t, st, &hn, prv[e.pos], e.pos) < 0) return -1;
        if (nn >= 0 && heap_pair(t, st, &hn, e.pos, nn) < 0) return -1;
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = nxt[i]) sym[k++] = sym[i]; /* k <= i: in-place compaction is safe */
    return (long)k;
}

static int bpe_piece(const ds4_tokenizer *t, struct tok_state *st, const uint8_t *p, size_t n, ds4_tok_ids *out) {
    if (n == 1) {
        if (ids_reserve(out, 1) < 0) return -1;
        out->ids[out->n++] = t->byte_id[p[0]];
        return 0;
    }
    uint64_t h = 0;
    if (n <= CACHE_MAX_KEY) {
        h = hash_bytes(p, n);
        size_t nid;
        const int32_t *c = cache_get(st, p, n, h, &nid);
        if (c) {
            if (ids_reserve(out, nid) < 0) return -1;
            memcpy(out->ids + out->n, c, nid * sizeof *c);
            out->n += nid;
            return 0;
        }
    }
    if (state_reserve(st, n) < 0) return -1;
    for (size_t i = 0; i < n; i++) st->sym[i] = t->byte_id[p[i]];
    long k = (long)n <= t->naive_max ? (long)bpe_naive(t, st, n) : bpe_heap(t, st, n);
    if (k < 0 || ids_reserve(out, (size_t)k) < 0) return -1;
    memcpy(out->ids + out->n, st->sym, (size_t)k * sizeof *st->sym);
    out->n += (size_t)k;
    if (n <= CACHE_MAX_KEY) cache_put(st, p, n, h, st->sym, (size_t)k);
    return 0;
}

/* ======================================================================
 * Pre-tokenization (§4): three "isolated" splits, applied in sequence
 * ====================================================================== */

/* Next match of re in s[0..n) at or after off: 1 (and [*ms, *me)), 0 none, -1 error. */
static int re_next(struct tok_state *st, void *re, const uint8_t *s, size_t n, size_t off, size_t *ms, size_t *me) {
    /* Subject = this piece only: (?!\S) must see the piece end as the end. */
    int rc = pcre2_match(re, s, n, off, PCRE2_NO_UTF_CHECK, st->md, st->mc);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) return -1;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(st->md);
    *ms = ov[0];
    *me = ov[1];
    return *me > *ms ? 1 : -1; /* no alternative can match empty */
}

static int split3(const ds4_tokenizer *t, struct tok_state *st, const uint8_t *s, size_t n, ds4_tok_ids *out) {
    size_t off = 0, ms, me;
    int r = 0;
    while (off < n && (r = re_next(st, t->re_main, s, n, off, &ms, &me)) > 0) {
        if (ms > off && bpe_piece(t, st, s + off, ms - off, out) < 0) return -1; /* gap piece */
        if (bpe_piece(t, st, s + ms, me - ms, out) < 0) return -1;
        off = me;
    }
    if (off < n && r < 0) return -1;
    if (off < n && bpe_piece(t, st, s + off, n - off, out) < 0) return -1;
    return 0;
}

/* Cheap pre-filter: CJK/kana code points (U+3040-U+30FF, U+4E00-U+9FA5)
 * have UTF-8 lead bytes E3..E9; without one, split 2 finds nothing. */
static bool maybe_cjk(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 0xE3 && s[i] <= 0xE9) return true;
    return false;
}

static int split2(const ds4_tokenizer *t, struct tok_state *st, const uint8_t *s, size_t n, ds4_tok_ids *out) {
    if (!maybe_cjk(s, n)) return split3(t, st, s, n, out);
    size_t off = 0, ms, me;
    int r = 0;
    while (off < n && (r = re_next(st, t->re_cjk, s, n, off, &ms, &me)) > 0) {
        if (ms > off && split3(t, st, s + off, ms - off, out) < 0) return -1;
        if (split3(t, st, s + ms, me - ms, out) < 0) return -1; /* kana run may hold P/S chars (U+30FB) */
        off = me;
    }
    if (off < n && r < 0) return -1;
    if (off < n && split3(t, st, s + off, n - off, out) < 0) return -1;
    return 0;
}

/* Pre-filter for split 1: ASCII text has numbers only as 0-9. */
static bool maybe_number(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] >= 0x80 || (s[i] >= '0' && s[i] <= '9')) return true;
    return false;
}

/* Encodes valid UTF-8. */
static int split1(const ds4_tokenizer *t, struct tok_state *st, const uint8_t *s, size_t n, ds4_tok_ids *out) {
    if (!maybe_number(s, n)) return split2(t, st, s, n, out);
    size_t off = 0, ms, me;
    int r = 0;
    while (off < n && (r = re_next(st, t->re_num, s, n, off, &ms, &me)) > 0) {
        if (ms > off && split2(t, st, s + off, ms - off, out) < 0) return -1;
        /* A run of <= 3 \p{N} chars: no CJK, and split 3 leaves it whole
         * (numbers are not L/M/P/S/space), so it is one BPE piece. */
        if (bpe_piece(t, st, s + ms, me - ms, out) < 0) return -1;
        off = me;
    }
    if (off < n && r < 0) return -1;
    if (off < n && split2(t, st, s + off, n - off, out) < 0) return -1;
    return 0;
}

/* Text between added tokens: well-formed stretches go to split 1; each byte
 * outside a well-formed sequence becomes its own single-byte token. */
static int encode_span(const ds4_tokenizer *t, struct tok_state *st, const uint8_t *s, size_t n, size_t base,
                       unsigned flags, ds4_tok_ids *out, ds4_err *err) {
    size_t i = 0, start = 0;
    while (i < n) {
        if (i + 8 <= n && is_ascii8(s + i)) { i += 8; continue; }
        int m, k = utf8_scan(s + i, n - i, &m);
        if (k > 0) { i += (size_t)k; continue; }
        if (flags & DS4_TOK_ENC_STRICT_UTF8)
            return ds4_err_set(err, "tokenizer: invalid UTF-8 at byte offset %zu (0x%02X)", base + i, s[i]);
        if (i > start && split1(t, st, s + start, i - start, out) < 0) goto oom;
        if (ids_reserve(out, 1) < 0) goto oom;
        out->ids[out->n++] = t->byte_id[s[i]];
        start = ++i;
    }
    if (n > start && split1(t, st, s + start, n - start, out) < 0) goto oom;
    return 0;
oom:
    return ds4_err_set(err, "tokenizer: out of memory (or regex failure) while encoding");
}

/* Longest added token starting at s (n bytes available): its id and length, or -1. */
static int32_t added_match(const ds4_tokenizer *t, const uint8_t *s, size_t n, size_t *len) {
    int32_t node = 0, best = -1;
    for (size_t j = 0; j < n; j++) {
        int32_t c = t->trie[node].child;
        while (c >= 0 && t->trie[c].byte != s[j]) c = t->trie[c].sibling;
        if (c < 0) break;
        node = c;
        if (t->trie[node].id >= 0) {
            best = t->trie[node].id;
            *len = j + 1;
        }
    }
    return best;
}

int ds4_tok_encode(const ds4_tokenizer *t, const char *text, size_t len, unsigned flags, ds4_tok_ids *out,
                   ds4_err *err) {
    if (!len) return 0;
    if (!text) return ds4_err_set(err, "tokenizer: NULL text");
    struct tok_state *st = state_get(t, err);
    if (!st) return -1;
    const uint8_t *s = (const uint8_t *)text;
    size_t start = 0, i = 0;
    int rc = 0;
    if (!(flags & DS4_TOK_ENC_NO_ADDED) && t->n_added) {
        /* §3: scan left to right, longest match; a match can only start on
         * a byte some added token starts with ('<' or 0xEF for V4). */
        while (i < len) {
            if (!t->added_first[s[i]]) { i++; continue; }
            size_t mlen = 0;
            int32_t id = added_match(t, s + i, len - i, &mlen);
            if (id < 0) { i++; continue; }
            if (i > start && (rc = encode_span(t, st, s + start, i - start, start, flags, out, err)) < 0) break;
            if (ids_reserve(out, 1) < 0) {
                rc = ds4_err_set(err, "tokenizer: out of memory");
                break;
            }
            out->ids[out->n++] = id;
            i += mlen;
            start = i;
        }
    }
    if (rc == 0 && len > start) rc = encode_span(t, st, s + start, len - start, start, flags, out, err);
    state_put(t, st);
    return rc;
}

/* ======================================================================
 * Decoding (§7)
 * ====================================================================== */

int ds4_tok_decode(const ds4_tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *out_len, ds4_err *err) {
    *out = NULL;
    *out_len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab)
            return ds4_err_set(err, "tokenizer: decode: id %d at index %zu out of range [0, %d)", ids[i], i, t->n_vocab);
        total += t->piece_off[ids[i] + 1] - t->piece_off[ids[i]];
    }
    char *buf = malloc(total + 1);
    if (!buf) return ds4_err_set(err, "tokenizer: decode: out of memory (%zu bytes)", total);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = t->piece_off[ids[i] + 1] - t->piece_off[ids[i]];
        memcpy(buf + o, t->piece_bytes + t->piece_off[ids[i]], l);
        o += l;
    }
    buf[o] = 0;
    *out = buf;
    *out_len = o;
    return 0;
}

void ds4_tok_stream_init(ds4_tok_stream *s, const ds4_tokenizer *t, enum ds4_tok_invalid mode) {
    memset(s, 0, sizeof *s);
    s->t = t;
    s->mode = mode;
}

void ds4_tok_stream_free(ds4_tok_stream *s) {
    free(s->out);
    s->out = NULL;
    s->out_len = s->out_cap = 0;
    s->n_pend = 0;
}

static int stream_reserve(ds4_tok_stream *s, size_t need, ds4_err *err) {
    if (need <= s->out_cap) return 0;
    size_t c = s->out_cap ? s->out_cap : 64;
    while (c < need) c *= 2;
    char *p = realloc(s->out, c);
    if (!p) return ds4_err_set(err, "tokenizer: stream: out of memory");
    s->out = p;
    s->out_cap = c;
    return 0;
}

static void stream_bad(ds4_tok_stream *s, const uint8_t *p, size_t m) {
    if (s->mode == DS4_TOK_INVALID_RAW) {
        memcpy(s->out + s->out_len, p, m);
        s->out_len += m;
    } else {
        memcpy(s->out + s->out_len, "\xEF\xBF\xBD", 3);
        s->out_len += 3;
    }
}

int ds4_tok_stream_push_bytes(ds4_tok_stream *s, const void *bytes, size_t n, const char **text, size_t *len,
                              ds4_err *err) {
    *text = NULL;
    *len = 0;
    size_t total = (size_t)s->n_pend + n;
    /* Worst case every byte is its own U+FFFD; +1 keeps a NUL for printing. */
    if (stream_reserve(s, total * 3 + 1 + total, err) < 0) return -1;
    /* Held-back bytes + new bytes, laid out after the output area. */
    uint8_t *buf = (uint8_t *)s->out + total * 3 + 1;
    memcpy(buf, s->pend, (size_t)s->n_pend);
    if (n) memcpy(buf + s->n_pend, bytes, n);
    s->out_len = 0;
    s->n_pend = 0;
    size_t i = 0;
    while (i < total) {
        int m, k = utf8_scan(buf + i, total - i, &m);
        if (k > 0) {
            memcpy(s->out + s->out_len, buf + i, (size_t)k);
            s->out_len += (size_t)k;
            i += (size_t)k;
        } else if (k == 0) {
            stream_bad(s, buf + i, (size_t)m);
            i += (size_t)m;
        } else { /* incomplete tail, <= 3 bytes: wait for more */
            memcpy(s->pend, buf + i, total - i);
            s->n_pend = (int)(total - i);
            break;
        }
    }
    s->out[s->out_len] = 0;
    *text = s->out;
    *len = s->out_len;
    return 0;
}

int ds4_tok_stream_push(ds4_tok_stream *s, int32_t id, const char **text, size_t *len, ds4_err *err) {
    size_t plen;
    const char *p = ds4_tok_piece(s->t, id, &plen);
    if (!p) {
        *text = NULL;
        *len = 0;
        return ds4_err_set(err, "tokenizer: stream: id %d out of range [0, %d)", id, s->t ? ds4_tok_n_vocab(s->t) : 0);
    }
    return ds4_tok_stream_push_bytes(s, p, plen, text, len, err);
}

int ds4_tok_stream_flush(ds4_tok_stream *s, const char **text, size_t *len, ds4_err *err) {
    if (stream_reserve(s, 8, err) < 0) return -1;
    s->out_len = 0;
    /* The held-back bytes are a valid prefix, hence one maximal subpart. */
    if (s->n_pend) stream_bad(s, s->pend, (size_t)s->n_pend);
    s->n_pend = 0;
    s->out[s->out_len] = 0;
    *text = s->out;
    *len = s->out_len;
    return 0;
}

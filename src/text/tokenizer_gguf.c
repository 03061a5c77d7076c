/* Tokenizer <-> GGUF metadata (TOKENIZER.md §9, MODEL.md §14).
 *
 * Kept apart from tokenizer.c so that programs which never touch GGUF do not
 * pull the GGUF reader/writer in from the static library.
 *
 * Keys: tokenizer.ggml.model "gpt2"; .pre "joyai-llm" (written, not checked
 * on load: the splits are implemented in code, not read from the file);
 * .tokens (string[n_vocab]: GPT-2 alphabet for normal tokens, literal content
 * for added ones); .merges (string[n_merges], "left right", rank = index);
 * .token_type (int32[n_vocab]: 1 normal, 3 control, 4 user-defined; added
 * tokens = types 3 and 4); .bos_token_id / .eos_token_id (u32). */
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "text/tokenizer_int.h"

static const gguf_kv *str_array(const gguf_file *f, const char *key, ds4_err *err) {
    const gguf_kv *kv = gguf_find_kv(f, key);
    if (!kv) return ds4_err_set(err, "GGUF tokenizer: key %s missing", key), NULL;
    if (kv->type != GGUF_TYPE_ARRAY || kv->arr_type != GGUF_TYPE_STRING)
        return ds4_err_set(err, "GGUF tokenizer: %s is not a string array", key), NULL;
    return kv;
}

ds4_tokenizer *ds4_tokenizer_load_gguf(const gguf_file *f, ds4_err *err) {
    gguf_str model;
    if (gguf_get_str(f, "tokenizer.ggml.model", &model, NULL) == 0 && !gguf_str_eq(model, "gpt2")) {
        char buf[64];
        return ds4_err_set(err, "GGUF tokenizer: tokenizer.ggml.model is \"%s\", expected \"gpt2\" (byte-level BPE)",
                           gguf_str_copy(model, buf, sizeof buf)),
               NULL;
    }
    const gguf_kv *tk = str_array(f, "tokenizer.ggml.tokens", err);
    const gguf_kv *mk = tk ? str_array(f, "tokenizer.ggml.merges", err) : NULL;
    if (!tk || !mk) return NULL;
    const gguf_kv *ty = gguf_find_kv(f, "tokenizer.ggml.token_type");
    if (!ty || ty->type != GGUF_TYPE_ARRAY || ty->arr_n != tk->arr_n)
        return ds4_err_set(err, "GGUF tokenizer: tokenizer.ggml.token_type missing or not an array of %llu entries "
                                "(needed to tell added tokens apart)",
                           (unsigned long long)tk->arr_n),
               NULL;
    uint64_t n = tk->arr_n, nm = mk->arr_n;
    if (n == 0 || n > (1u << 24) || nm > (1u << 24))
        return ds4_err_set(err, "GGUF tokenizer: implausible sizes (%llu tokens, %llu merges)", (unsigned long long)n,
                           (unsigned long long)nm),
               NULL;

    const char **toks = malloc(n * sizeof *toks);
    size_t *tlen = malloc(n * sizeof *tlen);
    int32_t *types = malloc(n * sizeof *types);
    const char **merges = malloc((nm + 1) * sizeof *merges);
    size_t *mlen = malloc((nm + 1) * sizeof *mlen);
    ds4_tokenizer *t = NULL;
    if (!toks || !tlen || !types || !merges || !mlen) {
        ds4_err_set(err, "GGUF tokenizer: out of memory");
        goto done;
    }
    for (uint64_t i = 0; i < n; i++) {
        gguf_str s = gguf_arr_str(tk, i);
        int64_t v;
        if (!s.ptr || gguf_arr_i64(ty, i, &v) != 0) {
            ds4_err_set(err, "GGUF tokenizer: entry %llu of tokens/token_type unreadable", (unsigned long long)i);
            goto done;
        }
        toks[i] = s.ptr;
        tlen[i] = (size_t)s.len;
        types[i] = (int32_t)v;
    }
    for (uint64_t i = 0; i < nm; i++) {
        gguf_str s = gguf_arr_str(mk, i);
        merges[i] = s.ptr ? s.ptr : "";
        mlen[i] = (size_t)s.len;
    }
    uint32_t bos = UINT32_MAX, eos = UINT32_MAX;
    int32_t b = -1, e = -1;
    if (gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &bos, NULL) == 0) b = bos < n ? (int32_t)bos : -2;
    if (gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &eos, NULL) == 0) e = eos < n ? (int32_t)eos : -2;
    if (b == -2 || e == -2) {
        ds4_err_set(err, "GGUF tokenizer: bos/eos id out of range (vocabulary %llu)", (unsigned long long)n);
        goto done;
    }
    t = ds4_tokenizer_from_arrays(toks, tlen, (int64_t)n, merges, mlen, (int64_t)nm, types, b, e, err);
    if (!t) ds4_err_prefix(err, "GGUF");
done:
    free(toks);
    free(tlen);
    free(types);
    free(merges);
    free(mlen);
    return t;
}

/* GPT-2 alphabet spelling of raw bytes, NUL-terminated (<= 2 bytes per byte). */
static void alphabet_encode(const uint8_t *p, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = tok_byte_to_cp(p[i]);
        if (cp < 0x80) {
            out[o++] = (char)cp;
        } else {
            out[o++] = (char)(0xC0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    out[o] = 0;
}

int ds4_tokenizer_write_gguf(const ds4_tokenizer *t, gguf_writer *w, ds4_err *err) {
    size_t n = (size_t)t->n_vocab, nm = (size_t)t->n_merges;
    /* One arena for every string: tokens at <= 2 bytes per raw byte (added
     * tokens verbatim), merges at <= 2 per byte plus space and NUL. */
    size_t bytes = t->piece_off[n] * 2 + n;
    for (size_t r = 0; r < nm; r++) {
        int32_t l = t->merge_lr[2 * r], rr = t->merge_lr[2 * r + 1];
        bytes += 2 * (t->piece_off[l + 1] - t->piece_off[l] + t->piece_off[rr + 1] - t->piece_off[rr]) + 2;
    }
    char *arena = malloc(bytes);
    const char **toks = malloc(n * sizeof *toks);
    const char **merges = malloc((nm + 1) * sizeof *merges);
    int32_t *types = malloc(n * sizeof *types);
    int rc = -1;
    if (!arena || !toks || !merges || !types) {
        ds4_err_set(err, "GGUF tokenizer writer: out of memory");
        goto done;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = (const uint8_t *)t->piece_bytes + t->piece_off[i];
        size_t len = t->piece_off[i + 1] - t->piece_off[i];
        toks[i] = arena + o;
        types[i] = t->type[i];
        if (t->type[i] == DS4_TOK_TYPE_NORMAL) {
            alphabet_encode(p, len, arena + o);
        } else {
            memcpy(arena + o, p, len);
            arena[o + len] = 0;
        }
        o += strlen(arena + o) + 1;
    }
    for (size_t r = 0; r < nm; r++) {
        int32_t l = t->merge_lr[2 * r], rr = t->merge_lr[2 * r + 1];
        merges[r] = arena + o;
        alphabet_encode((const uint8_t *)t->piece_bytes + t->piece_off[l], t->piece_off[l + 1] - t->piece_off[l], arena + o);
        o += strlen(arena + o);
        arena[o++] = ' ';
        alphabet_encode((const uint8_t *)t->piece_bytes + t->piece_off[rr], t->piece_off[rr + 1] - t->piece_off[rr],
                        arena + o);
        o += strlen(arena + o) + 1;
    }
    if (gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2") < 0 ||
        gguf_writer_add_str(w, "tokenizer.ggml.pre", "joyai-llm") < 0 ||
        gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, n) < 0 ||
        gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", merges, nm) < 0 ||
        gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types, n) < 0 ||
        (t->bos >= 0 && gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)t->bos) < 0) ||
        (t->eos >= 0 && gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)t->eos) < 0)) {
        const char *we = gguf_writer_error(w);
        ds4_err_set(err, "GGUF tokenizer writer: %s", we ? we : "add failed");
        goto done;
    }
    rc = 0;
done:
    free(arena);
    free(toks);
    free(merges);
    free(types);
    return rc;
}

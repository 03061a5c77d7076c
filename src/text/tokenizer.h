/* DeepSeek V4 byte-level BPE tokenizer (spec: shared/spec/TOKENIZER.md).
 *
 * What.  Text <-> token ids for the 129 280-entry V4 vocabulary: 128 000 BPE
 * strings, 127 741 ranked merges and 1 283 added tokens (ids 0-2 and
 * 128000-129279).  Encoding = added-token matching (TOKENIZER.md §3, longest
 * match, every added token whatever its "special" flag), the three regex
 * splits of §4 (PCRE2, UTF + UCP, JIT when available; no hand-made Unicode
 * tables), then BPE by merge rank inside each piece (§6).  Decoding
 * concatenates each token's raw bytes (§7); ds4_tok_stream emits only
 * complete UTF-8 characters, for streaming output.
 *
 * Data model.  Every id 0..n_vocab-1 has a byte string (its "piece": BPE
 * strings are stored after reversing the GPT-2 byte-to-unicode alphabet of
 * §5; added tokens are their literal UTF-8 content) and a type: 1 normal,
 * 3 control, 4 user-defined (the GGUF tokenizer.ggml.token_type values).
 * Added tokens are exactly the ids of type 3 or 4.  From tokenizer.json an
 * added token with "special": true gets type 3, one with false type 4, so
 * writing to GGUF and reading back gives the same added-token set (all 1 283).
 * BPE runs on ids: merges are stored as (left id, right id) -> (rank, id).
 *
 * Constructors: ds4_tokenizer_load_json (tokenizer.json via jansson; the
 * pre_tokenizer regexes in the file must be the V3/V4 ones, since the engine
 * implements those splits itself), ds4_tokenizer_from_arrays (the GGUF arrays
 * in memory) and, in tokenizer_gguf.c, ds4_tokenizer_load_gguf and the writer.
 *
 * Invalid UTF-8 input (no reference tokenizer defines it: HF takes only valid
 * strings).  Default: never fails, never crashes; each byte that is not part
 * of a well-formed UTF-8 sequence (Unicode Table 3-7: no overlongs,
 * surrogates or > U+10FFFF) is cut out as its own piece and becomes that
 * byte's single-byte token, and the valid stretches between are encoded as if
 * the bad bytes were added-token boundaries.  decode(encode(x)) == x holds for
 * every byte string.  With DS4_TOK_ENC_STRICT_UTF8 encoding fails instead,
 * naming the byte offset.  Valid input is unaffected either way.
 *
 * Ownership.  ds4_tokenizer is created by a constructor and destroyed with
 * ds4_tokenizer_free.  Pointers returned by ds4_tok_piece borrow from the
 * tokenizer.  ds4_tok_ids and the buffer of ds4_tok_decode are owned by the
 * caller (ds4_tok_ids_free / free).  Input strings are borrowed for the call.
 *
 * Threads.  A tokenizer is immutable after construction except for an
 * internal, mutex-guarded pool of per-call scratch states (PCRE2 match data,
 * BPE buffers, a per-piece result cache); every function taking a const
 * ds4_tokenizer * may be called from any number of threads at once.  A
 * ds4_tok_stream belongs to one thread.
 *
 * Errors: functions return -1 / NULL and write a message into ds4_err
 * (may be NULL). */
#ifndef DS4_TEXT_TOKENIZER_H
#define DS4_TEXT_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

typedef struct ds4_tokenizer ds4_tokenizer;

enum ds4_tok_type {
    DS4_TOK_TYPE_NORMAL = 1,       /* BPE vocabulary entry */
    DS4_TOK_TYPE_CONTROL = 3,      /* added token, "special": true */
    DS4_TOK_TYPE_USER_DEFINED = 4, /* added token, "special": false */
};

/* ---- Construction ---- */

/* Loads a Hugging Face tokenizer.json (model.type BPE, byte-level). */
ds4_tokenizer *ds4_tokenizer_load_json(const char *path, ds4_err *err);
/* Same from an in-memory JSON text (borrowed). */
ds4_tokenizer *ds4_tokenizer_from_json_text(const char *json, size_t len, ds4_err *err);

/* From GGUF-style arrays.  tokens[i] (length tok_lens[i], or strlen when
 * tok_lens is NULL) is id i's string: GPT-2 alphabet for type-1 entries,
 * literal UTF-8 for types 3/4.  merges[r] is "left right" (rank r).
 * token_type is required (1, 3, 4; other values are treated as normal).
 * bos_id/eos_id: -1 = look "<｜begin▁of▁sentence｜>"/"<｜end▁of▁sentence｜>" up.
 * All arrays are borrowed. */
ds4_tokenizer *ds4_tokenizer_from_arrays(const char *const *tokens, const size_t *tok_lens, int64_t n_tokens,
                                         const char *const *merges, const size_t *merge_lens, int64_t n_merges,
                                         const int32_t *token_type, int32_t bos_id, int32_t eos_id, ds4_err *err);

void ds4_tokenizer_free(ds4_tokenizer *t);

/* GGUF (tokenizer_gguf.c).  The loader reads tokenizer.ggml.tokens, .merges,
 * .token_type and, if present, .bos_token_id/.eos_token_id.  The writer adds
 * tokenizer.ggml.model = "gpt2", .pre = "joyai-llm", .tokens, .merges,
 * .token_type (int32), .bos_token_id, .eos_token_id (u32) as published ds4
 * GGUFs carry them (MODEL.md §14); call it before gguf_writer_begin_data. */
struct gguf_file;
struct gguf_writer;
ds4_tokenizer *ds4_tokenizer_load_gguf(const struct gguf_file *f, ds4_err *err);
int ds4_tokenizer_write_gguf(const ds4_tokenizer *t, struct gguf_writer *w, ds4_err *err);

/* ---- Vocabulary ---- */

int32_t ds4_tok_n_vocab(const ds4_tokenizer *t); /* 129 280 for V4 */
int32_t ds4_tok_n_merges(const ds4_tokenizer *t);
int32_t ds4_tok_n_added(const ds4_tokenizer *t);
int32_t ds4_tok_bos(const ds4_tokenizer *t);     /* -1 if unknown */
int32_t ds4_tok_eos(const ds4_tokenizer *t);
/* Raw bytes of id's piece (not NUL-terminated; *len set); NULL if out of range. */
const char *ds4_tok_piece(const ds4_tokenizer *t, int32_t id, size_t *len);
int ds4_tok_type(const ds4_tokenizer *t, int32_t id); /* enum ds4_tok_type, 0 if out of range */
bool ds4_tok_is_added(const ds4_tokenizer *t, int32_t id);
/* The id whose piece is exactly these bytes (an added token wins over a BPE
 * string with the same bytes); -1 if none.  ds4_tok_find_str uses strlen. */
int32_t ds4_tok_find(const ds4_tokenizer *t, const char *s, size_t len);
int32_t ds4_tok_find_str(const ds4_tokenizer *t, const char *z);

/* ---- Encoding ---- */

/* Growable id array; zero-initialise, free with ds4_tok_ids_free. */
typedef struct ds4_tok_ids {
    int32_t *ids;
    size_t n;   /* ids used */
    size_t cap; /* ids allocated */
} ds4_tok_ids;
void ds4_tok_ids_free(ds4_tok_ids *v);

enum ds4_tok_enc_flags {
    /* Do not match added tokens: encode the text with BPE only, e.g. untrusted
     * user content that must not turn "<｜User｜>" into a role token
     * (vectors_bpe_only.jsonl). */
    DS4_TOK_ENC_NO_ADDED = 1u << 0,
    /* Fail on invalid UTF-8 instead of encoding bad bytes one per token. */
    DS4_TOK_ENC_STRICT_UTF8 = 1u << 1,
};

/* Appends the ids of text[0..len) to out (no BOS is added).  Returns 0, or -1
 * on allocation failure, invalid UTF-8 under STRICT, or a PCRE2 resource limit
 * (only conceivable for multi-megabyte single pieces without JIT; 1 MB runs
 * are tested); out then holds a prefix of the ids. */
int ds4_tok_encode(const ds4_tokenizer *t, const char *text, size_t len, unsigned flags, ds4_tok_ids *out,
                   ds4_err *err);

/* ---- Decoding ---- */

/* Concatenated raw bytes of ids[0..n) into a malloc'd, NUL-terminated buffer
 * (*out, length *out_len, caller frees).  Bytes are passed through as is
 * (possibly invalid UTF-8).  -1 on an out-of-range id or allocation failure. */
int ds4_tok_decode(const ds4_tokenizer *t, const int32_t *ids, size_t n, char **out, size_t *out_len, ds4_err *err);

/* True iff s[0..len) is well-formed UTF-8; else *bad_off (if non-NULL) is the
 * offset of the first byte that is not part of a well-formed sequence. */
bool ds4_utf8_valid(const char *s, size_t len, size_t *bad_off);

/* What the streaming decoder does with bytes that can never become valid UTF-8. */
enum ds4_tok_invalid {
    DS4_TOK_INVALID_REPLACE = 0, /* one U+FFFD per maximal invalid subpart (as from_utf8_lossy) */
    DS4_TOK_INVALID_RAW = 1,     /* pass the bytes through unchanged */
};

/* Streaming decoder: push ids one at a time; each call yields the longest
 * output that ends on a complete character and keeps back an incomplete
 * trailing sequence (at most 3 bytes) until it completes or fails.
 * Zero-initialise or use ds4_tok_stream_init; free with ds4_tok_stream_free. */
typedef struct ds4_tok_stream {
    const ds4_tokenizer *t;    /* borrowed */
    enum ds4_tok_invalid mode;
    unsigned char pend[4];     /* held-back prefix of an incomplete character */
    int n_pend;                /* bytes in pend, 0..3 */
    char *out;                 /* output of the last call, owned */
    size_t out_len, out_cap;   /* bytes */
} ds4_tok_stream;

void ds4_tok_stream_init(ds4_tok_stream *s, const ds4_tokenizer *t, enum ds4_tok_invalid mode);
/* Feeds one id.  *text and *len receive the bytes now ready (valid until the next
 * call on s; *len may be 0).  -1 on an out-of-range id (stream unchanged). */
int ds4_tok_stream_push(ds4_tok_stream *s, int32_t id, const char **text, size_t *len, ds4_err *err);
/* Feeds raw bytes (same contract; for tests and non-token sources). */
int ds4_tok_stream_push_bytes(ds4_tok_stream *s, const void *bytes, size_t n, const char **text, size_t *len,
                              ds4_err *err);
/* End of stream: emits the held-back bytes (as U+FFFD or raw) and resets. */
int ds4_tok_stream_flush(ds4_tok_stream *s, const char **text, size_t *len, ds4_err *err);
void ds4_tok_stream_free(ds4_tok_stream *s);

/* Testing hook: pieces of up to n symbols use the O(n^2) merge loop, longer
 * ones the heap (default 48).  Both give the same ids; tests set 0 and a huge
 * value to check that.  Not thread-safe against concurrent encodes. */
void ds4_tok_set_bpe_naive_max(ds4_tokenizer *t, int n);

#endif

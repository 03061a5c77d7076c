/* Disk KV cache: checkpoint files of engine sessions keyed by prompt text
 * (API.md §18).
 *
 * A checkpoint is the engine's session payload (ds4_session_payload_save,
 * engine/engine.h) wrapped in the KVC container below, stored as
 * DIR/<sha1(key text)>.kv.  The key text is the decoded bytes of the cached
 * tokens, so a prompt that starts with those bytes can resume from the file:
 * the caller tokenizes only the remaining bytes.
 *
 * File layout (little-endian; API.md §18.2 plus one extension):
 *   off 0   48 B  header
 *                 0 "KVC"  3 u8 version 1  4 u8 routed-expert quant bits (2|4)
 *                 5 u8 reason (1 cold 2 continued 3 evict 4 shutdown)
 *                 6 u8 flags (bit0 KTM tool-map section, bit1/2 visible keys)
 *                 7 u8 0   8 u32 tokens   12 u32 hits   16 u32 ctx
 *                 20 u8[4] 0   24 u64 created   32 u64 last_used
 *                 40 u64 payload bytes
 *   off 48  u32 key_text_bytes, key text
 *           payload (payload bytes)
 *           [KTM section iff flags bit0: "KTM" u8 1, u32 count, entries]
 *   trailer [our extension, not in the reference layout]: 8 bytes
 *           "KCRC" u32 CRC-32 of every preceding byte of the file with the
 *           mutable header fields (hits @12, last_used @32) read as zero.
 *           Loaders verify it while streaming the payload; a torn or
 *           bit-flipped file is logged, deleted and treated as a miss.
 *           (Files without the trailer are rejected: this cache is
 *           disposable, so there is no compatibility to keep.)
 *
 * Writes go to NAME.tmp.<pid>, are fsync'd and renamed into place; the
 * directory is fsync'd after the rename.  Reads use buffered stdio, never
 * mmap.  Eviction: after each save, while the directory exceeds the budget,
 * delete the lowest score (hits·2^(−age/6h) + 1)·tokens/size, ×4 for
 * cold/evict/shutdown files; the file just written is protected.
 *
 * Ownership: kv_cache_open returns an owned handle (kv_cache_close).  Thread
 * safety: one thread (the server worker) uses a handle.  Errors: -1 with a
 * message in ds4_err; lookups treat any bad file as a miss (logged through
 * the log callback). */
#ifndef DS4_KV_KVCACHE_H
#define DS4_KV_KVCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "util/err.h"

enum kv_reason { KV_REASON_UNKNOWN = 0, KV_REASON_COLD = 1, KV_REASON_CONTINUED = 2, KV_REASON_EVICT = 3,
                 KV_REASON_SHUTDOWN = 4 };

#define KV_FLAG_TOOLMAP 1u

typedef struct kv_opts {
    const char *dir;
    uint64_t budget_bytes;
    uint32_t min_tokens;      /* smallest prefix saved or loaded */
    uint32_t ctx;             /* current context; files written for more are skipped */
    uint8_t quant_bits;       /* 2 or 4 */
    bool reject_different_quant;
    void (*log)(void *user, const char *msg);
    void *log_user;
} kv_opts;

typedef struct kv_cache kv_cache;

kv_cache *kv_cache_open(const kv_opts *o, ds4_err *err);
void kv_cache_close(kv_cache *c);

/* Writes a checkpoint of session s holding tokens[0..n) (n == s->pos) with
 * next-token logits; key = decoded text of those tokens.  extra (may be
 * NULL) is the KTM tool-map section.  Returns 0, 1 if skipped (too small, over
 * budget, identical file exists), -1 on error. */
int kv_cache_save(kv_cache *c, const char *key, size_t key_len, enum kv_reason reason, const ds4_session *s,
                  const int32_t *tokens, uint32_t n, const float *logits, const void *extra, size_t extra_len,
                  ds4_err *err);

typedef struct kv_hit {
    int32_t *tokens;          /* malloc'd, n_tokens entries */
    uint32_t n_tokens;
    size_t key_len;           /* bytes of the prompt the checkpoint covers */
    void *extra;              /* malloc'd KTM section or NULL */
    size_t extra_len;
    char name[48];            /* file name */
    enum kv_reason reason;
} kv_hit;

/* Finds the checkpoint with the longest key that is a byte prefix of
 * text[0..len) and loads it into s (logits: V floats).  Returns 1 on a hit
 * (*hit filled; free with kv_hit_free), 0 on a miss (s untouched unless a
 * corrupt candidate was tried: then s is reset), -1 on errors.  cold_max:
 * a loaded prefix longer than this is deleted ("consumed"), else its hit
 * count and last-used time are updated in place. */
int kv_cache_load_prefix(kv_cache *c, const char *text, size_t len, ds4_session *s, float *logits,
                         uint32_t cold_max, kv_hit *hit, ds4_err *err);
void kv_hit_free(kv_hit *h);

/* Calls fn with the KTM tool-map section of every checkpoint that has one
 * (header flag bit 0) and passes its checksum, so exact DSML replay works
 * after a restart whichever checkpoint later becomes the prefix hit
 * (API.md §19.4).  Reads each such file once, sequentially.  Returns the
 * number of sections passed to fn. */
int kv_cache_each_toolmap(kv_cache *c, void (*fn)(void *user, const void *data, size_t len), void *user);

/* While set, eviction spares every checkpoint whose key is a byte prefix of
 * text[0..len) (borrowed; NULL clears): the evict save made just before a
 * lookup must not delete the file the incoming prompt needs (API.md §18.5). */
void kv_cache_protect(kv_cache *c, const char *text, size_t len);

/* Deletes a checkpoint by file name (e.g. after a failed prefill). */
void kv_cache_delete(kv_cache *c, const char *name);
/* Total bytes of checkpoint files / cumulative bytes written by this process. */
uint64_t kv_cache_disk_bytes(kv_cache *c);
uint64_t kv_cache_written_bytes(kv_cache *c);

#endif

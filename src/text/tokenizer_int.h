/* Internal layout of ds4_tokenizer, shared by tokenizer.c (construction,
 * encode, decode) and tokenizer_gguf.c (GGUF read/write).  Not for other
 * modules: use tokenizer.h.  The tokenizer is immutable after construction
 * except for `pool`, which `pool_mu` guards. */
#ifndef DS4_TEXT_TOKENIZER_INT_H
#define DS4_TEXT_TOKENIZER_INT_H

#include <pthread.h>
#include <stdint.h>

#include "text/tokenizer.h"

typedef struct tok_merge {
    uint64_t key;  /* (left id << 32) | right id; UINT64_MAX = empty slot */
    int32_t rank;  /* line index in merges */
    int32_t id;    /* id of left+right */
} tok_merge;

typedef struct tok_trie_node {
    int32_t child;   /* first child node, -1 none */
    int32_t sibling; /* next sibling, -1 none */
    int32_t id;      /* added token ending here, -1 none */
    uint8_t byte;    /* edge label from the parent */
} tok_trie_node;

struct tok_state; /* per-call scratch, tokenizer.c */

struct ds4_tokenizer {
    int32_t n_vocab;       /* ids 0..n_vocab-1, all defined */
    int32_t n_merges;
    int32_t n_added;
    int32_t bos, eos;      /* -1 if unknown */
    uint8_t *type;         /* [n_vocab] enum ds4_tok_type */
    uint32_t *piece_off;   /* [n_vocab+1] offsets into piece_bytes */
    char *piece_bytes;     /* raw bytes of every piece, back to back */
    int32_t byte_id[256];  /* single-byte BPE token of each byte */
    int32_t *merge_lr;     /* [2*n_merges] left, right id by rank (for the GGUF writer) */

    tok_merge *mt;         /* merge hash, open addressing */
    uint32_t mt_mask;      /* slots - 1 */
    int32_t *ft;           /* piece-bytes -> id hash (ds4_tok_find), -1 empty */
    uint32_t ft_mask;

    tok_trie_node *trie;   /* added-token trie, node 0 = root */
    int32_t n_trie;
    uint8_t added_first[256]; /* 1 if some added token starts with this byte */

    void *re_num, *re_cjk, *re_main; /* pcre2_code_8 *: splits 1, 2, 3 */
    int naive_max;         /* BPE: pieces up to this many symbols use the O(n^2) loop */

    pthread_mutex_t pool_mu;
    struct tok_state *pool; /* idle scratch states, linked */
};

/* GPT-2 alphabet (TOKENIZER.md §5): code point of each byte, and the inverse
 * (code point < 324 -> byte, -1 if not in the alphabet). */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp);

#endif

/* Tool memory (API.md §19.2): tool-call id -> the exact DSML block the model
 * sampled for that turn, so a client's JSON replay renders back byte for byte.
 *
 * Structure: a chained hash table of ids (instead of the reference's radix
 * trees; lookups are by whole id only) whose entries point at shared,
 * reference-counted blocks (all ids of one turn share one block), plus an LRU
 * list.  Bounded by max_ids and 512 MiB of block bytes: least recently used
 * ids go first.  One mutex guards everything (used from connection threads
 * while rendering and from the worker after a turn).
 *
 * KTM section (API.md §18.2, written into disk checkpoints):
 *   "KTM" u8 version=1, u32 entry count, then per entry
 *   u32 id_len (1..256), u32 block_len (1..512 MiB), id bytes, block bytes. */
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

#define TM_MAX_BYTES ((size_t)512 << 20)

typedef struct tm_block {
    char *data;
    size_t len;
    int refs;
} tm_block;

typedef struct tm_entry {
    char *id;
    tm_block *blk;
    struct tm_entry *hnext;          /* hash chain */
    struct tm_entry *prev, *next;    /* LRU: head = most recent */
} tm_entry;

struct srv_toolmem {
    pthread_mutex_t mu;
    tm_entry **tab;
    size_t nbuckets, n, max_ids, bytes;
    tm_entry *head, *tail;
};

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

srv_toolmem *srv_toolmem_new(size_t max_ids) {
    srv_toolmem *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->max_ids = max_ids ? max_ids : 1;
    m->nbuckets = 1024;
    m->tab = calloc(m->nbuckets, sizeof *m->tab);
    if (!m->tab) { free(m); return NULL; }
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

static void lru_unlink(srv_toolmem *m, tm_entry *e) {
    if (e->prev) e->prev->next = e->next; else m->head = e->next;
    if (e->next) e->next->prev = e->prev; else m->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(srv_toolmem *m, tm_entry *e) {
    e->next = m->head;
    e->prev = NULL;
    if (m->head) m->head->prev = e;
    m->head = e;
    if (!m->tail) m->tail = e;
}

static void block_unref(srv_toolmem *m, tm_block *b) {
    if (--b->refs) return;
    m->bytes -= b->len;
    free(b->data);
    free(b);
}

static void remove_entry(srv_toolmem *m, tm_entry *e) {
    tm_entry **pp = &m->tab[hash_str(e->id) % m->nbuckets];
    while (*pp && *pp != e) pp = &(*pp)->hnext;
    if (*pp) *pp = e->hnext;
    lru_unlink(m, e);
    block_unref(m, e->blk);
    free(e->id);
    free(e);
    m->n--;
}

static tm_entry *find(srv_toolmem *m, const char *id) {
    for (tm_entry *e = m->tab[hash_str(id) % m->nbuckets]; e; e = e->hnext)
        if (!strcmp(e->id, id)) return e;
    return NULL;
}

static void grow(srv_toolmem *m) {
    if (m->n < m->nbuckets * 2) return;
    size_t nb = m->nbuckets * 4;
    tm_entry **t = calloc(nb, sizeof *t);
    if (!t) return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        for (tm_entry *e = m->tab[i], *nx; e; e = nx) {
            nx = e->hnext;
            size_t h = hash_str(e->id) % nb;
            e->hnext = t[h];
            t[h] = e;
        }
    }
    free(m->tab);
    m->tab = t;
    m->nbuckets = nb;
}

void srv_toolmem_free(srv_toolmem *m) {
    if (!m) return;
    while (m->head) remove_entry(m, m->head);
    free(m->tab);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

int srv_toolmem_put(srv_toolmem *m, const char *const *ids, size_t n, const char *block, size_t len) {
    if (!m || !n || !len || len > TM_MAX_BYTES) return -1;
    tm_block *b = calloc(1, sizeof *b);
    if (!b || !(b->data = malloc(len))) { free(b); return -1; }
    memcpy(b->data, block, len);
    b->len = len;
    pthread_mutex_lock(&m->mu);
    m->bytes += len;
    b->refs = 1; /* held during insertion */
    for (size_t i = 0; i < n; i++) {
        if (!ids[i] || !*ids[i] || strlen(ids[i]) > 256) continue;
        tm_entry *e = find(m, ids[i]);
        if (e) {
            lru_unlink(m, e);
            block_unref(m, e->blk);
        } else {
            e = calloc(1, sizeof *e);
            if (!e || !(e->id = strdup(ids[i]))) { free(e); continue; }
            size_t h = hash_str(e->id) % m->nbuckets;
            e->hnext = m->tab[h];
            m->tab[h] = e;
            m->n++;
        }
        e->blk = b;
        b->refs++;
        lru_front(m, e);
    }
    block_unref(m, b);
    while (m->tail && (m->n > m->max_ids || m->bytes > TM_MAX_BYTES)) remove_entry(m, m->tail);
    grow(m);
    pthread_mutex_unlock(&m->mu);
    return 0;
}

char *srv_toolmem_get(srv_toolmem *m, const char *id, size_t *len) {
    if (!m || !id) return NULL;
    pthread_mutex_lock(&m->mu);
    tm_entry *e = find(m, id);
    char *out = NULL;
    if (e && (out = malloc(e->blk->len + 1))) {
        memcpy(out, e->blk->data, e->blk->len);
        out[e->blk->len] = 0;
        *len = e->blk->len;
        lru_unlink(m, e);
        lru_front(m, e);
    }
    pthread_mutex_unlock(&m->mu);
    return out;
}

size_t srv_toolmem_count(srv_toolmem *m) {
    pthread_mutex_lock(&m->mu);
    size_t n = m->n;
    pthread_mutex_unlock(&m->mu);
    return n;
}

static void put_u32(ds4_buf *b, uint32_t v) {
    unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    ds4_buf_append(b, x, 4);
}

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int srv_toolmem_export(srv_toolmem *m, const char *text, size_t len, ds4_buf *out) {
    ds4_buf body = {0};
    uint32_t count = 0;
    pthread_mutex_lock(&m->mu);
    for (tm_entry *e = m->head; e; e = e->next) {
        if (!memmem(text, len, e->blk->data, e->blk->len)) continue;
        put_u32(&body, (uint32_t)strlen(e->id));
        put_u32(&body, (uint32_t)e->blk->len);
        ds4_buf_puts(&body, e->id);
        ds4_buf_append(&body, e->blk->data, e->blk->len);
        count++;
    }
    pthread_mutex_unlock(&m->mu);
    ds4_buf_append(out, "KTM\x01", 4);
    put_u32(out, count);
    if (body.len) ds4_buf_append(out, body.data, body.len);
    ds4_buf_free(&body);
    return (int)count;
}

int srv_toolmem_import(srv_toolmem *m, const void *data, size_t len, size_t max_entries) {
    const unsigned char *p = data;
    if (len < 8 || memcmp(p, "KTM\x01", 4)) return -1;
    uint32_t count = get_u32(p + 4);
    if (count > max_entries) return -1;
    size_t off = 8;
    int loaded = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (len - off < 8) break;
        uint32_t il = get_u32(p + off), bl = get_u32(p + off + 4);
        if (il < 1 || il > 256 || bl < 1 || bl > TM_MAX_BYTES || len - off - 8 < (size_t)il + bl) break;
        char id[257];
        memcpy(id, p + off + 8, il);
        id[il] = 0;
        const char *ids[1] = {id};
        if (strlen(id) == il && srv_toolmem_put(m, ids, 1, (const char *)p + off + 8 + il, bl) == 0) loaded++;
        off += 8 + (size_t)il + bl;
    }
    return loaded;
}

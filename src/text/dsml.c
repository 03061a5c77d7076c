/* Streaming DSML/reasoning parser; contract and grammar in dsml.h.
 *
 * Design: unprocessed input sits in `in` (read offset `pos`).  step() looks
 * at it and either makes a decision that depends only on bytes already seen
 * (emit, consume, change state) or reports that it needs more input.  Every
 * decision happens at a position that does not depend on how the input was
 * chunked, which is what makes all split points produce the same events.
 * Bytes of an open DSML block move from `in` to `blk`, so a block that turns
 * out malformed can be replayed verbatim as text. */
#include "text/dsml.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"

enum { S_REASON, S_TEXT, S_BLOCK };
enum { B_INVOKES, B_INVOKE_HDR, B_PARAMS, B_PARAM_HDR, B_VALUE, B_REASON_TAIL };
enum { T_INVOKE, T_END_BLOCK, T_PARAM, T_END_INVOKE, T_END_PARAM, T_COUNT };

#define MAX_HDR 4096 /* longest accepted attribute part of an invoke/parameter tag */

static const char THINK_OPEN[] = "<think>";
static const char THINK_END[] = "</think>";
/* Block openers and their tag prefixes (canonical first, then tolerated variants). */
static const char *const OPENERS[3] = {"<\xef\xbd\x9c" "DSML\xef\xbd\x9c" "tool_calls>", "<DSML\xef\xbd\x9c" "tool_calls>",
                                       "<tool_calls>"};
static const char *const PREFIXES[3] = {"\xef\xbd\x9c" "DSML\xef\xbd\x9c", "DSML\xef\xbd\x9c", ""};

typedef struct {
    ds4_dsml_event_type type;
    int index;
    char *name, *data, *raw;
    size_t len, raw_len;
} queued_event;

struct ds4_dsml_parser {
    ds4_dsml_cb cb;
    void *user;
    int no_tools;
    int state, bstate;
    int think_start_pending; /* reasoning: a repeated leading <think> may still come */
    int finished, oom;
    ds4_buf in;
    size_t pos;
    ds4_buf scratch; /* NUL-terminated copy of the event payload */
    /* current block */
    int blk_reason;  /* opened inside reasoning: events deferred until known */
    ds4_buf blk;     /* raw bytes consumed by the block */
    size_t blk_emitted;
    char tag[T_COUNT][48];
    size_t tag_len[T_COUNT];
    int first_index, next_index, calls_in_block;
    ds4_buf name, args, val, pnames;
    int nparams, is_string;
    queued_event *q;
    size_t nq, capq;
};

/* ------------------------------------------------------------- helpers */

static int is_ws(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

/* 1 = s starts with lit, 2 = s is a proper prefix of lit, 0 = neither. */
static int starts(const char *s, size_t n, const char *lit, size_t ll) {
    if (n >= ll) return memcmp(s, lit, ll) == 0;
    return memcmp(s, lit, n) == 0 ? 2 : 0;
}

/* Longest proper prefix of m that is a suffix of s. */
static size_t partial_suffix(const char *s, size_t n, const char *m, size_t ml) {
    size_t k = n < ml - 1 ? n : ml - 1;
    for (; k > 0; k--)
        if (memcmp(s + n - k, m, k) == 0) return k;
    return 0;
}

/* Length of s without an incomplete UTF-8 sequence at its end. */
static size_t utf8_cut(const char *s, size_t n) {
    for (size_t back = 1; back <= 4 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80) continue; /* continuation byte */
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return back < need ? n - back : n;
    }
    return n;
}

static size_t count_ws(const char *s, size_t n) {
    size_t k = 0;
    while (k < n && is_ws(s[k])) k++;
    return k;
}

/* Earliest block opener in s; returns its position or n, sets *variant. */
static size_t find_opener(const char *s, size_t n, int *variant) {
    size_t best = n;
    for (int v = 0; v < 3; v++) {
        const char *h = memmem(s, n, OPENERS[v], strlen(OPENERS[v]));
        if (h && (size_t)(h - s) < best) { best = (size_t)(h - s); *variant = v; }
    }
    return best;
}

static size_t opener_hold(const char *s, size_t n) {
    size_t h = 0;
    for (int v = 0; v < 3; v++) {
        size_t k = partial_suffix(s, n, OPENERS[v], strlen(OPENERS[v]));
        if (k > h) h = k;
    }
    return h;
}

static int json_escape(ds4_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    int rc = ds4_buf_reserve(b, n);
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { char e[2] = {'\\', (char)c}; rc = ds4_buf_append(b, e, 2); }
        else if (c == '\n') rc = ds4_buf_append(b, "\\n", 2);
        else if (c == '\r') rc = ds4_buf_append(b, "\\r", 2);
        else if (c == '\t') rc = ds4_buf_append(b, "\\t", 2);
        else if (c < 0x20) { char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]}; rc = ds4_buf_append(b, e, 6); }
        else rc = ds4_buf_putc(b, (char)c);
    }
    return rc;
}

static int valid_json(const char *s, size_t n, int object_only) {
    json_error_t je;
    json_t *v = json_loadb(s, n, (object_only ? 0 : JSON_DECODE_ANY) | JSON_ALLOW_NUL, &je);
    int ok = v && (!object_only || json_is_object(v));
    json_decref(v);
    return ok;
}

/* ------------------------------------------------------------- emitting */

static char *memdup0(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) { if (n) memcpy(d, s, n); d[n] = 0; }
    return d;
}

static void emit_now(ds4_dsml_parser *p, ds4_dsml_event_type type, int index, const char *name, const char *data,
                     size_t len, const char *raw, size_t raw_len) {
    ds4_buf_truncate(&p->scratch, 0);
    if (ds4_buf_append(&p->scratch, data ? data : "", data ? len : 0)) { p->oom = 1; return; }
    int same = raw == data;
    ds4_dsml_event ev = {type, index, name, p->scratch.data, p->scratch.len, same ? p->scratch.data : raw, raw_len};
    p->cb(p->user, &ev);
}

static void emit(ds4_dsml_parser *p, ds4_dsml_event_type type, int index, const char *name, const char *data, size_t len,
                 const char *raw, size_t raw_len) {
    if (!p->blk_reason || p->state != S_BLOCK) {
        emit_now(p, type, index, name, data, len, raw, raw_len);
        return;
    }
    if (p->nq == p->capq) {
        size_t cap = p->capq ? p->capq * 2 : 16;
        queued_event *q = realloc(p->q, cap * sizeof *q);
        if (!q) { p->oom = 1; return; }
        p->q = q;
        p->capq = cap;
    }
    queued_event *e = &p->q[p->nq];
    e->type = type;
    e->index = index;
    e->name = name ? strdup(name) : NULL;
    e->data = memdup0(data ? data : "", data ? len : 0);
    e->raw = memdup0(raw ? raw : "", raw ? raw_len : 0);
    e->len = data ? len : 0;
    e->raw_len = raw ? raw_len : 0;
    if ((name && !e->name) || !e->data || !e->raw) {
        free(e->name); free(e->data); free(e->raw);
        p->oom = 1;
        return;
    }
    p->nq++;
}

static void queue_clear(ds4_dsml_parser *p) {
    for (size_t i = 0; i < p->nq; i++) { free(p->q[i].name); free(p->q[i].data); free(p->q[i].raw); }
    p->nq = 0;
}

static void emit_text(ds4_dsml_parser *p, const char *s, size_t n) {
    if (n) emit(p, p->state == S_REASON ? DS4_DSML_REASONING : DS4_DSML_TEXT, -1, NULL, s, n, s, n);
}

/* A block event: its raw is everything the block consumed since the last one. */
static void emit_blk(ds4_dsml_parser *p, ds4_dsml_event_type type, const char *data, size_t len) {
    int idx = type == DS4_DSML_CALLS_END ? -1 : p->next_index;
    const char *name = (type == DS4_DSML_CALLS_END) ? NULL : p->name.data;
    emit(p, type, idx, name, data, len, p->blk.data + p->blk_emitted, p->blk.len - p->blk_emitted);
    p->blk_emitted = p->blk.len;
}

static void take(ds4_dsml_parser *p, size_t n) {
    if (ds4_buf_append(&p->blk, p->in.data + p->pos, n)) p->oom = 1;
    p->pos += n;
}

/* ---------------------------------------------------------- block state */

static void block_begin(ds4_dsml_parser *p, int variant, int in_reason) {
    static const char *const fmt[T_COUNT] = {"<%sinvoke", "</%stool_calls>", "<%sparameter", "</%sinvoke>",
                                             "</%sparameter>"};
    for (int t = 0; t < T_COUNT; t++) {
        snprintf(p->tag[t], sizeof p->tag[t], fmt[t], PREFIXES[variant]);
        p->tag_len[t] = strlen(p->tag[t]);
    }
    ds4_buf_truncate(&p->blk, 0);
    p->blk_emitted = 0;
    p->blk_reason = in_reason;
    p->first_index = p->next_index;
    p->calls_in_block = 0;
    p->bstate = B_INVOKES;
    p->state = S_BLOCK;
    ds4_buf_truncate(&p->name, 0);
    ds4_buf_putc(&p->name, 0), ds4_buf_truncate(&p->name, 0); /* keep name.data non-NULL */
}

static void block_reset(ds4_dsml_parser *p, int state) {
    ds4_buf_truncate(&p->blk, 0);
    p->blk_emitted = 0;
    p->blk_reason = 0;
    p->state = state;
    queue_clear(p);
}

/* Malformed block: never executed.  In text it becomes an ERROR plus the raw
 * bytes as text; inside reasoning it was never a call, just reasoning. */
static int block_fail(ds4_dsml_parser *p, const char *why) {
    int reason = p->blk_reason;
    p->next_index = p->first_index;
    ds4_buf raw = p->blk;
    p->blk = (ds4_buf){0};
    block_reset(p, reason ? S_REASON : S_TEXT);
    if (!reason) emit_now(p, DS4_DSML_ERROR, p->first_index, NULL, why, strlen(why), "", 0);
    emit_text(p, raw.data, raw.len);
    ds4_buf_free(&raw);
    return 1;
}

static int block_close(ds4_dsml_parser *p) {
    emit_blk(p, DS4_DSML_CALLS_END, "", 0);
    if (p->blk_reason) {
        p->bstate = B_REASON_TAIL;
        return 1;
    }
    block_reset(p, S_TEXT);
    return 1;
}

/* The block ended the output while still in reasoning: it is the action. */
static void reason_commit(ds4_dsml_parser *p) {
    p->state = S_TEXT; /* stops deferring */
    emit_now(p, DS4_DSML_REASONING_END, -1, NULL, "", 0, "", 0);
    for (size_t i = 0; i < p->nq; i++) {
        queued_event *e = &p->q[i];
        emit_now(p, e->type, e->index, e->name, e->data, e->len, e->raw, e->raw_len);
    }
    block_reset(p, S_TEXT);
}

/* Tiny cursor parser for tag attributes. */
typedef struct { const char *s; size_t n, i; } cur;
static int cur_ws(cur *c, int need) {
    size_t i0 = c->i;
    while (c->i < c->n && is_ws(c->s[c->i])) c->i++;
    return !need || c->i > i0;
}
static int cur_lit(cur *c, const char *lit) {
    size_t l = strlen(lit);
    if (c->n - c->i < l || memcmp(c->s + c->i, lit, l)) return 0;
    c->i += l;
    return 1;
}
/* Reads a quoted attribute value up to '"': non-empty, no control chars or '<'. */
static int cur_value(cur *c, const char **v, size_t *vl) {
    size_t i0 = c->i;
    while (c->i < c->n && c->s[c->i] != '"') {
        unsigned char ch = (unsigned char)c->s[c->i];
        if (ch < 0x20 || ch == '<') return 0;
        c->i++;
    }
    if (c->i == c->n || c->i == i0) return 0;
    *v = c->s + i0;
    *vl = c->i - i0;
    c->i++;
    return 1;
}

static int name_seen(ds4_dsml_parser *p, const char *k, size_t kl) {
    for (size_t i = 0; i < p->pnames.len;) {
        size_t l = strlen(p->pnames.data + i);
        if (l == kl && !memcmp(p->pnames.data + i, k, kl)) return 1;
        i += l + 1;
    }
    return 0;
}

static int arg_delta(ds4_dsml_parser *p, ds4_buf *d) {
    if (ds4_buf_append(&p->args, d->data ? d->data : "", d->len)) p->oom = 1;
    emit_blk(p, DS4_DSML_TOOL_ARGS, d->data ? d->data : "", d->len);
    ds4_buf_free(d);
    return 1;
}

static int step_block(ds4_dsml_parser *p, const char *s, size_t n, int eof) {
    switch (p->bstate) {
    case B_INVOKES:
    case B_PARAMS: {
        size_t k = count_ws(s, n);
        if (k) { take(p, k); return 1; }
        if (n == 0) return eof ? block_fail(p, "unterminated tool_calls block") : 0;
        int inv = p->bstate == B_INVOKES;
        int open_t = inv ? T_INVOKE : T_PARAM, close_t = inv ? T_END_BLOCK : T_END_INVOKE;
        int r1 = starts(s, n, p->tag[open_t], p->tag_len[open_t]);
        int r2 = starts(s, n, p->tag[close_t], p->tag_len[close_t]);
        if (r1 == 1) {
            take(p, p->tag_len[open_t]);
            p->bstate = inv ? B_INVOKE_HDR : B_PARAM_HDR;
            return 1;
        }
        if (r2 == 1) {
            if (inv) {
                if (!p->calls_in_block) return block_fail(p, "empty tool_calls block");
                take(p, p->tag_len[close_t]);
                return block_close(p);
            }
            /* end of invoke: arguments must form a JSON object */
            if (ds4_buf_putc(&p->args, '}')) p->oom = 1;
            if (!valid_json(p->args.data, p->args.len, 1)) return block_fail(p, "tool arguments are not valid JSON");
            take(p, p->tag_len[close_t]);
            emit_blk(p, DS4_DSML_TOOL_ARGS, "}", 1);
            emit_blk(p, DS4_DSML_TOOL_END, p->args.data, p->args.len);
            p->next_index++;
            p->calls_in_block++;
            p->bstate = B_INVOKES;
            return 1;
        }
        if ((r1 == 2 || r2 == 2) && !eof) return 0;
        return block_fail(p, inv ? "expected <invoke> or </tool_calls> in DSML block"
                                 : "expected <parameter> or </invoke> in DSML invoke");
    }
    case B_INVOKE_HDR:
    case B_PARAM_HDR: {
        const char *gt = memchr(s, '>', n < MAX_HDR ? n : MAX_HDR);
        if (!gt) {
            if (n >= MAX_HDR) return block_fail(p, "DSML tag too long");
            return eof ? block_fail(p, "unterminated DSML tag") : 0;
        }
        cur c = {s, (size_t)(gt - s), 0};
        const char *v, *sv = NULL;
        size_t vl, svl = 0;
        int ok = cur_ws(&c, 1) && cur_lit(&c, "name=\"") && cur_value(&c, &v, &vl);
        if (p->bstate == B_PARAM_HDR)
            ok = ok && cur_ws(&c, 1) && cur_lit(&c, "string=\"") && cur_value(&c, &sv, &svl);
        ok = ok && cur_ws(&c, 0) && c.i == c.n;
        if (p->bstate == B_INVOKE_HDR) {
            if (!ok) return block_fail(p, "bad DSML invoke tag");
            ds4_buf_truncate(&p->name, 0);
            if (ds4_buf_append(&p->name, v, vl)) p->oom = 1;
            take(p, (size_t)(gt - s) + 1);
            emit_blk(p, DS4_DSML_TOOL_START, p->name.data, p->name.len);
            ds4_buf_truncate(&p->args, 0);
            ds4_buf_truncate(&p->pnames, 0);
            p->nparams = 0;
            ds4_buf d = {0};
            if (ds4_buf_putc(&d, '{')) p->oom = 1;
            p->bstate = B_PARAMS;
            return arg_delta(p, &d);
        }
        int is_true = ok && svl == 4 && !memcmp(sv, "true", 4);
        int is_false = ok && svl == 5 && !memcmp(sv, "false", 5);
        if (!is_true && !is_false) return block_fail(p, "bad DSML parameter tag");
        if (name_seen(p, v, vl)) return block_fail(p, "duplicate DSML parameter name");
        if (ds4_buf_append(&p->pnames, v, vl) || ds4_buf_putc(&p->pnames, 0)) p->oom = 1;
        p->is_string = is_true;
        ds4_buf_truncate(&p->val, 0);
        ds4_buf d = {0};
        int rc = (p->nparams++ ? ds4_buf_putc(&d, ',') : 0) | ds4_buf_putc(&d, '"') | json_escape(&d, v, vl) |
                 ds4_buf_append(&d, is_true ? "\":\"" : "\":", is_true ? 3 : 2);
        if (rc) p->oom = 1;
        take(p, (size_t)(gt - s) + 1);
        p->bstate = B_VALUE;
        return arg_delta(p, &d);
    }
    case B_VALUE: {
        const char *ct = p->tag[T_END_PARAM];
        size_t cl = p->tag_len[T_END_PARAM];
        const char *e = memmem(s, n, ct, cl);
        const char *t = p->blk_reason ? memmem(s, n, THINK_END, sizeof THINK_END - 1) : NULL;
        if (t && (!e || t < e)) {
            take(p, (size_t)(t - s)); /* deterministic cut: exactly at </think> */
            return block_fail(p, "</think> inside a DSML block");
        }
        size_t k;
        if (e) k = (size_t)(e - s);
        else if (eof) { take(p, n); return block_fail(p, "unterminated DSML parameter"); }
        else {
            size_t h = partial_suffix(s, n, ct, cl);
            if (p->blk_reason) {
                size_t h2 = partial_suffix(s, n, THINK_END, sizeof THINK_END - 1);
                if (h2 > h) h = h2;
            }
            k = n - h;
            if (p->is_string) k = utf8_cut(s, k);
            if (k == 0) return 0;
        }
        ds4_buf d = {0};
        if (p->is_string) {
            if (json_escape(&d, s, k) || (e && ds4_buf_putc(&d, '"'))) p->oom = 1;
        } else {
            if (ds4_buf_append(&p->val, s, k)) p->oom = 1;
            if (e) {
                const char *vs = p->val.data ? p->val.data : "";
                size_t a = 0, b = p->val.len;
                while (a < b && is_ws(vs[a])) a++;
                while (b > a && is_ws(vs[b - 1])) b--;
                if (!valid_json(vs + a, b - a, 0)) {
                    take(p, k);
                    return block_fail(p, "DSML parameter value is not valid JSON");
                }
                if (ds4_buf_append(&d, vs + a, b - a)) p->oom = 1;
            }
        }
        take(p, k);
        if (e) {
            take(p, cl);
            p->bstate = B_PARAMS;
        }
        if (d.len || e) return arg_delta(p, &d);
        ds4_buf_free(&d);
        return 1;
    }
    case B_REASON_TAIL: {
        size_t k = count_ws(s, n);
        if (k < n) return block_fail(p, "DSML block inside reasoning"); /* more reasoning follows */
        if (!eof) return 0;
        reason_commit(p);
        return 1;
    }
    }
    return 0;
}

/* Text or reasoning outside blocks. */
static int step_plain(ds4_dsml_parser *p, const char *s, size_t n, int eof) {
    int reason = p->state == S_REASON;
    if (n == 0) return 0;
    if (reason && p->think_start_pending) {
        int r = starts(s, n, THINK_OPEN, sizeof THINK_OPEN - 1);
        if (r == 2 && !eof) return 0;
        p->think_start_pending = 0;
        if (r == 1) {
            emit(p, DS4_DSML_IGNORED, -1, NULL, "", 0, s, sizeof THINK_OPEN - 1);
            p->pos += sizeof THINK_OPEN - 1;
            return 1;
        }
    }
    int variant = 0;
    size_t op = p->no_tools ? n : find_opener(s, n, &variant);
    if (reason) {
        const char *te = memmem(s, n, THINK_END, sizeof THINK_END - 1);
        if (te && (size_t)(te - s) < op) {
            size_t k = (size_t)(te - s);
            emit_text(p, s, k);
            emit(p, DS4_DSML_REASONING_END, -1, NULL, "", 0, te, sizeof THINK_END - 1);
            p->pos += k + sizeof THINK_END - 1;
            p->state = S_TEXT;
            return 1;
        }
    }
    if (op < n) {
        size_t ws = op;
        while (ws > 0 && is_ws(s[ws - 1])) ws--;
        emit_text(p, s, ws);
        p->pos += ws;
        block_begin(p, variant, reason);
        take(p, op - ws + strlen(OPENERS[variant]));
        return 1;
    }
    size_t k = n;
    if (!eof) {
        size_t h = p->no_tools ? 0 : opener_hold(s, n);
        if (reason) {
            size_t h2 = partial_suffix(s, n, THINK_END, sizeof THINK_END - 1);
            if (h2 > h) h = h2;
        }
        k = n - h;
        if (!p->no_tools)
            while (k > 0 && is_ws(s[k - 1])) k--; /* may be the separator of a block */
        k = utf8_cut(s, k);
    }
    if (k == 0) return 0;
    emit_text(p, s, k);
    p->pos += k;
    return 1;
}

static int run(ds4_dsml_parser *p, int eof, ds4_err *err) {
    for (;;) {
        const char *s = p->in.data ? p->in.data + p->pos : "";
        size_t n = p->in.len - p->pos;
        int progressed = p->state == S_BLOCK ? step_block(p, s, n, eof) : step_plain(p, s, n, eof);
        if (p->oom) return ds4_err_set(err, "dsml: out of memory");
        if (!progressed) break;
    }
    ds4_buf_consume(&p->in, p->pos);
    p->pos = 0;
    return 0;
}

/* ------------------------------------------------------------ public API */

ds4_dsml_parser *ds4_dsml_new(const ds4_dsml_opts *opts, ds4_dsml_cb cb, void *user, ds4_err *err) {
    if (!cb) { ds4_err_set(err, "dsml: NULL callback"); return NULL; }
    ds4_dsml_parser *p = calloc(1, sizeof *p);
    if (!p) { ds4_err_set(err, "dsml: out of memory"); return NULL; }
    p->cb = cb;
    p->user = user;
    p->no_tools = opts && opts->no_tools;
    p->state = opts && opts->start_in_reasoning ? S_REASON : S_TEXT;
    p->think_start_pending = p->state == S_REASON;
    return p;
}

int ds4_dsml_feed(ds4_dsml_parser *p, const char *data, size_t len, ds4_err *err) {
    if (p->finished) return ds4_err_set(err, "dsml: feed after finish");
    if (p->oom) return ds4_err_set(err, "dsml: parser failed earlier (out of memory)");
    if (len && ds4_buf_append(&p->in, data, len)) return ds4_err_set(err, "dsml: out of memory");
    return run(p, 0, err);
}

int ds4_dsml_finish(ds4_dsml_parser *p, ds4_err *err) {
    if (p->finished) return 0;
    p->finished = 1;
    if (p->oom) return ds4_err_set(err, "dsml: parser failed earlier (out of memory)");
    return run(p, 1, err);
}

int ds4_dsml_in_reasoning(const ds4_dsml_parser *p) {
    return p->state == S_REASON || (p->state == S_BLOCK && p->blk_reason);
}

int ds4_dsml_in_block(const ds4_dsml_parser *p) { return p->state == S_BLOCK && !p->blk_reason; }

void ds4_dsml_free(ds4_dsml_parser *p) {
    if (!p) return;
    queue_clear(p);
    free(p->q);
    ds4_buf_free(&p->in);
    ds4_buf_free(&p->scratch);
    ds4_buf_free(&p->blk);
    ds4_buf_free(&p->name);
    ds4_buf_free(&p->args);
    ds4_buf_free(&p->val);
    ds4_buf_free(&p->pnames);
    free(p);
}

/* ------------------------------------------------------- whole output */

typedef struct {
    ds4_buf reasoning, content;
    ds4_dsml_call *calls;
    int *idx;
    size_t n, cap;
    int closed, errors, oom;
} collect;

static void collect_cb(void *user, const ds4_dsml_event *ev) {
    collect *c = user;
    switch (ev->type) {
    case DS4_DSML_REASONING: c->oom |= ds4_buf_append(&c->reasoning, ev->data, ev->len); break;
    case DS4_DSML_TEXT: c->oom |= ds4_buf_append(&c->content, ev->data, ev->len); break;
    case DS4_DSML_REASONING_END: c->closed = 1; break;
    case DS4_DSML_ERROR:
        c->errors++;
        while (c->n > 0 && c->idx[c->n - 1] >= ev->index) { /* retract the block's calls */
            c->n--;
            free(c->calls[c->n].name);
            free(c->calls[c->n].arguments);
        }
        break;
    case DS4_DSML_TOOL_END:
        if (c->n == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 4;
            ds4_dsml_call *nc = realloc(c->calls, cap * sizeof *nc);
            if (nc) c->calls = nc;
            int *ni = realloc(c->idx, cap * sizeof *ni);
            if (ni) c->idx = ni;
            if (!nc || !ni) { c->oom = 1; return; }
            c->cap = cap;
        }
        c->calls[c->n].name = strdup(ev->name ? ev->name : "");
        c->calls[c->n].arguments = memdup0(ev->data, ev->len);
        c->idx[c->n] = ev->index;
        c->n++;
        break;
    default: break;
    }
}

int ds4_dsml_parse_all(const char *text, size_t len, int start_in_reasoning, ds4_dsml_result *out, ds4_err *err) {
    memset(out, 0, sizeof *out);
    collect c = {0};
    ds4_dsml_opts o = {.start_in_reasoning = start_in_reasoning};
    ds4_dsml_parser *p = ds4_dsml_new(&o, collect_cb, &c, err);
    int rc = p ? 0 : -1;
    if (rc == 0) rc = ds4_dsml_feed(p, text, len, err);
    if (rc == 0) rc = ds4_dsml_finish(p, err);
    ds4_dsml_free(p);
    out->reasoning = ds4_buf_take(&c.reasoning, NULL);
    out->content = ds4_buf_take(&c.content, NULL);
    out->calls = c.calls;
    out->n_calls = c.n;
    out->reasoning_closed = c.closed;
    out->n_errors = c.errors;
    free(c.idx);
    for (size_t i = 0; i < c.n; i++)
        if (!c.calls[i].name || !c.calls[i].arguments) c.oom = 1;
    if (rc == 0 && (c.oom || !out->reasoning || !out->content)) rc = ds4_err_set(err, "dsml: out of memory");
    if (rc < 0) ds4_dsml_result_free(out);
    return rc;
}

void ds4_dsml_result_free(ds4_dsml_result *r) {
    free(r->reasoning);
    free(r->content);
    for (size_t i = 0; i < r->n_calls; i++) { free(r->calls[i].name); free(r->calls[i].arguments); }
    free(r->calls);
    memset(r, 0, sizeof *r);
}

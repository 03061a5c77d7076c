/* Tests for text/dsml: event sequences for reasoning, text and DSML calls;
 * recovery of malformed DSML; identical (merged) events for every split of
 * the input; byte accounting; and a deterministic fuzz run (mutations,
 * truncations, concatenations, random bytes) meant to run under ASan/UBSan. */
#include "test.h"

#include <jansson.h>

#include "text/chat.h"
#include "text/dsml.h"

#define DS DS4_TOK_DSML
#define OPEN "\n\n<" DS "tool_calls>\n"
#define CLOSE "\n</" DS "tool_calls>"

/* ---------------------------------------------------------- event log */

typedef struct {
    ds4_buf log;        /* merged, serialised events */
    int last_type, last_index;
    size_t last_hdr;    /* offset of the length field of the last mergeable entry */
    ds4_buf committed, pending; /* byte accounting */
    int bad_accounting;
    int bad_utf8;       /* a delta ended inside a UTF-8 sequence before finish */
    int finishing;
    ds4_buf text;       /* all TEXT data (for marker checks) */
} evlog;

static const char *const TYPE_NAMES[] = {"REASONING", "REASONING_END", "TEXT", "TOOL_START", "TOOL_ARGS",
                                         "TOOL_END", "CALLS_END", "ERROR", "IGNORED"};

static int ends_mid_utf8(const char *s, size_t n) {
    for (size_t back = 1; back <= 4 && back <= n; back++) {
        unsigned char c = (unsigned char)s[n - back];
        if ((c & 0xC0) == 0x80) continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return back < need;
    }
    return 0;
}

static void log_cb(void *user, const ds4_dsml_event *ev) {
    evlog *l = user;
    int mergeable = ev->type == DS4_DSML_REASONING || ev->type == DS4_DSML_TEXT || ev->type == DS4_DSML_TOOL_ARGS;
    if (mergeable && !l->finishing && ends_mid_utf8(ev->data, ev->len) && ev->type != DS4_DSML_TOOL_ARGS)
        l->bad_utf8 = 1;
    if (mergeable && l->log.len && l->last_type == (int)ev->type && l->last_index == ev->index) {
        ds4_buf_append(&l->log, ev->data, ev->len);
    } else {
        ds4_buf_printf(&l->log, "\n%s[%d]%s%s:", TYPE_NAMES[ev->type], ev->index, ev->name ? " " : "",
                       ev->name ? ev->name : "");
        ds4_buf_append(&l->log, ev->data, ev->len);
    }
    l->last_type = mergeable ? (int)ev->type : -1;
    l->last_index = ev->index;
    if (ev->type == DS4_DSML_TEXT) ds4_buf_append(&l->text, ev->data, ev->len);
    switch (ev->type) {
    case DS4_DSML_TOOL_START:
    case DS4_DSML_TOOL_ARGS:
    case DS4_DSML_TOOL_END: ds4_buf_append(&l->pending, ev->raw, ev->raw_len); break;
    case DS4_DSML_CALLS_END:
        ds4_buf_append(&l->committed, l->pending.data, l->pending.len);
        ds4_buf_append(&l->committed, ev->raw, ev->raw_len);
        ds4_buf_truncate(&l->pending, 0);
        break;
    case DS4_DSML_ERROR: ds4_buf_truncate(&l->pending, 0); break;
    default:
        if (l->pending.len) l->bad_accounting = 1;
        if ((ev->type == DS4_DSML_TEXT || ev->type == DS4_DSML_REASONING) &&
            (ev->raw_len != ev->len || memcmp(ev->raw, ev->data, ev->len)))
            l->bad_accounting = 1;
        ds4_buf_append(&l->committed, ev->raw, ev->raw_len);
    }
}

static void evlog_free(evlog *l) {
    ds4_buf_free(&l->log);
    ds4_buf_free(&l->committed);
    ds4_buf_free(&l->pending);
    ds4_buf_free(&l->text);
}

/* Parses `in` fed in the chunk sizes given by the cuts (sorted positions). */
static int parse_split(const char *in, size_t n, int reason, const size_t *cuts, size_t ncuts, evlog *l) {
    memset(l, 0, sizeof *l);
    l->last_type = -1;
    ds4_err err = {{0}};
    ds4_dsml_opts o = {.start_in_reasoning = reason};
    ds4_dsml_parser *p = ds4_dsml_new(&o, log_cb, l, &err);
    if (!p) return -1;
    size_t at = 0;
    int rc = 0;
    for (size_t i = 0; i <= ncuts && rc == 0; i++) {
        size_t end = i < ncuts ? cuts[i] : n;
        if (end < at) end = at;
        rc = ds4_dsml_feed(p, in + at, end - at, &err);
        at = end;
    }
    l->finishing = 1;
    if (rc == 0) rc = ds4_dsml_finish(p, &err);
    ds4_dsml_free(p);
    return rc;
}

static int same_log(const evlog *a, const evlog *b) {
    return a->log.len == b->log.len && (a->log.len == 0 || !memcmp(a->log.data, b->log.data, a->log.len));
}

static int accounting_ok(const evlog *l, const char *in, size_t n) {
    return !l->bad_accounting && l->pending.len == 0 && l->committed.len == n && !memcmp(l->committed.data ? l->committed.data : "", in, n);
}

static int valid_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!need || i + need > n) return 0;
        for (size_t k = 1; k < need; k++)
            if (((unsigned char)s[i + k] & 0xC0) != 0x80) return 0;
        i += need;
    }
    return 1;
}

/* One-shot vs every 2-way split vs byte-by-byte (or random cuts for long inputs). */
static int check_splits(const char *in, size_t n, int reason, unsigned *seed, int all_splits) {
    evlog ref, l;
    int utf8 = valid_utf8(in, n); /* deltas cut at character boundaries only matter for valid text */
    int ok = parse_split(in, n, reason, NULL, 0, &ref) == 0 && accounting_ok(&ref, in, n) && !(utf8 && ref.bad_utf8);
    if (!ok) fprintf(stderr, "  one-shot: accounting or utf8 failure\n");
    size_t *cuts = malloc((n + 1) * sizeof *cuts);
    for (size_t i = 0; i < n; i++) cuts[i] = i + 1;
    if (ok && parse_split(in, n, reason, cuts, n, &l) == 0) { /* single bytes */
        ok = same_log(&l, &ref) && accounting_ok(&l, in, n) && !(utf8 && l.bad_utf8);
        if (!ok) fprintf(stderr, "  byte-by-byte differs (acct %d utf8 %d):\n--- one-shot:%s\n--- bytes:%s\n", accounting_ok(&l, in, n), l.bad_utf8, ref.log.data, l.log.data);
        evlog_free(&l);
    }
    for (size_t c = 1; ok && all_splits && c < n; c++) {
        size_t cut = c;
        if (parse_split(in, n, reason, &cut, 1, &l) == 0) {
            ok = same_log(&l, &ref) && accounting_ok(&l, in, n);
            if (!ok) fprintf(stderr, "  split at %zu differs\n", c);
            evlog_free(&l);
        } else ok = 0;
    }
    for (int r = 0; ok && r < 3; r++) { /* random chunkings */
        size_t nc = 0;
        for (size_t i = 1; i < n; i++)
            if ((*seed = *seed * 1103515245u + 12345u) >> 16 & 1) cuts[nc++] = i;
        if (parse_split(in, n, reason, cuts, nc, &l) == 0) {
            ok = same_log(&l, &ref) && accounting_ok(&l, in, n);
            evlog_free(&l);
        } else ok = 0;
    }
    free(cuts);
    evlog_free(&ref);
    return ok;
}

/* Expects the merged one-shot log to equal `want` and all splits to agree. */
static void expect(const char *name, const char *in, int reason, const char *want) {
    evlog l;
    size_t n = strlen(in);
    CHECKF(parse_split(in, n, reason, NULL, 0, &l) == 0, "%s: parse failed", name);
    const char *got = l.log.data ? l.log.data : "";
    CHECKF(!strcmp(got, want), "%s:\n--- got:%s\n--- want:%s", name, got, want);
    CHECKF(accounting_ok(&l, in, n), "%s: byte accounting", name);
    evlog_free(&l);
    unsigned seed = 1;
    CHECKF(check_splits(in, n, reason, &seed, 1), "%s: split invariance", name);
}

#define INV(name) "<" DS "invoke name=\"" name "\">\n"
#define PAR(k, s, v) "<" DS "parameter name=\"" k "\" string=\"" s "\">" v "</" DS "parameter>\n"
#define EINV "</" DS "invoke>"

TEST(basic_events) {
    expect("reasoning_text", "abc</think>hello", 1, "\nREASONING[-1]:abc\nREASONING_END[-1]:\nTEXT[-1]:hello");
    expect("repeated_think", "<think>abc</think>x", 1,
           "\nIGNORED[-1]:\nREASONING[-1]:abc\nREASONING_END[-1]:\nTEXT[-1]:x");
    expect("chat_text", "just text </think> <b>", 0, "\nTEXT[-1]:just text </think> <b>");
    expect("unclosed_reasoning", "still thinking", 1, "\nREASONING[-1]:still thinking");
    expect("one_call", "r</think>Sure." OPEN INV("get_weather") PAR("city", "true", "Rome") PAR("days", "false", "2") EINV CLOSE, 1,
           "\nREASONING[-1]:r\nREASONING_END[-1]:\nTEXT[-1]:Sure.\nTOOL_START[0] get_weather:get_weather"
           "\nTOOL_ARGS[0] get_weather:{\"city\":\"Rome\",\"days\":2}"
           "\nTOOL_END[0] get_weather:{\"city\":\"Rome\",\"days\":2}\nCALLS_END[-1]:");
    expect("two_calls_no_args", OPEN INV("a") "\n" EINV "\n" INV("b") PAR("x", "true", "q\"\\\n<&") EINV CLOSE, 0,
           "\nTOOL_START[0] a:a\nTOOL_ARGS[0] a:{}\nTOOL_END[0] a:{}"
           "\nTOOL_START[1] b:b\nTOOL_ARGS[1] b:{\"x\":\"q\\\"\\\\\\n<&\"}\nTOOL_END[1] b:{\"x\":\"q\\\"\\\\\\n<&\"}"
           "\nCALLS_END[-1]:");
    expect("json_values", OPEN INV("f") PAR("a", "false", " [1, {\"b\": null}] ") PAR("t", "false", "true") EINV CLOSE, 0,
           "\nTOOL_START[0] f:f\nTOOL_ARGS[0] f:{\"a\":[1, {\"b\": null}],\"t\":true}"
           "\nTOOL_END[0] f:{\"a\":[1, {\"b\": null}],\"t\":true}\nCALLS_END[-1]:");
    expect("variant_no_first_bar",
           "x\n\n<DSML\xef\xbd\x9ctool_calls>\n<DSML\xef\xbd\x9cinvoke name=\"f\">\n</DSML\xef\xbd\x9cinvoke>\n</DSML\xef\xbd\x9ctool_calls>",
           0, "\nTEXT[-1]:x\nTOOL_START[0] f:f\nTOOL_ARGS[0] f:{}\nTOOL_END[0] f:{}\nCALLS_END[-1]:");
    expect("variant_plain", "<tool_calls><invoke name=\"f\"><parameter name=\"k\" string=\"true\">v</parameter></invoke></tool_calls>", 0,
           "\nTOOL_START[0] f:f\nTOOL_ARGS[0] f:{\"k\":\"v\"}\nTOOL_END[0] f:{\"k\":\"v\"}\nCALLS_END[-1]:");
    expect("text_after_block", OPEN INV("f") EINV CLOSE " tail", 0,
           "\nTOOL_START[0] f:f\nTOOL_ARGS[0] f:{}\nTOOL_END[0] f:{}\nCALLS_END[-1]:\nTEXT[-1]: tail");
    expect("trailing_ws_kept", "hello \n\n", 0, "\nTEXT[-1]:hello \n\n");
    expect("utf8", "\xe4\xbd\xa0\xe5\xa5\xbd</think>\xf0\x9f\x98\x80", 1,
           "\nREASONING[-1]:\xe4\xbd\xa0\xe5\xa5\xbd\nREASONING_END[-1]:\nTEXT[-1]:\xf0\x9f\x98\x80");
}

TEST(malformed) {
    /* Garbage between tags: ERROR then the whole block (with its separator) as text. */
    const char *g = "Hi" OPEN "garbage" EINV CLOSE;
    expect("garbage", g, 0,
           "\nTEXT[-1]:Hi\nERROR[0]:expected <invoke> or </tool_calls> in DSML block\nTEXT[-1]:" OPEN
           "garbage" EINV CLOSE);
    /* Complete call, then a broken one: the error retracts from the block's first index. */
    expect("retract", OPEN INV("f") EINV "\n" INV("g") "oops" EINV CLOSE, 0,
           "\nTOOL_START[0] f:f\nTOOL_ARGS[0] f:{}\nTOOL_END[0] f:{}\nTOOL_START[1] g:g\nTOOL_ARGS[1] g:{"
           "\nERROR[0]:expected <parameter> or </invoke> in DSML invoke\nTEXT[-1]:" OPEN INV("f") EINV "\n" INV("g")
           "oops" EINV CLOSE);
    expect("unterminated", "ok" OPEN INV("f") PAR("k", "true", "val"), 0,
           "\nTEXT[-1]:ok\nTOOL_START[0] f:f\nTOOL_ARGS[0] f:{\"k\":\"val\"\nERROR[0]:unterminated tool_calls block\nTEXT[-1]:" OPEN
           INV("f") PAR("k", "true", "val"));
    expect("unterminated_value", OPEN INV("f") "<" DS "parameter name=\"k\" string=\"true\">va", 0,
           "\nTOOL_START[0] f:f\nTOOL_ARGS[0] f:{\"k\":\"va\nERROR[0]:unterminated DSML parameter\nTEXT[-1]:" OPEN INV("f")
           "<" DS "parameter name=\"k\" string=\"true\">va");
    expect("bad_json_value", OPEN INV("f") PAR("k", "false", "[1,") EINV CLOSE, 0,
           "\nTOOL_START[0] f:f\nTOOL_ARGS[0] f:{\"k\":\nERROR[0]:DSML parameter value is not valid JSON\nTEXT[-1]:" OPEN
           INV("f") PAR("k", "false", "[1,") EINV CLOSE);
    expect("duplicate_param", OPEN INV("f") PAR("k", "true", "a") PAR("k", "true", "b") EINV CLOSE, 0,
           "\nTOOL_START[0] f:f\nTOOL_ARGS[0] f:{\"k\":\"a\"\nERROR[0]:duplicate DSML parameter name\nTEXT[-1]:" OPEN INV("f")
           PAR("k", "true", "a") PAR("k", "true", "b") EINV CLOSE);
    expect("bad_string_attr", OPEN INV("f") PAR("k", "yes", "a") EINV CLOSE, 0,
           "\nTOOL_START[0] f:f\nTOOL_ARGS[0] f:{\nERROR[0]:bad DSML parameter tag\nTEXT[-1]:" OPEN INV("f")
           PAR("k", "yes", "a") EINV CLOSE);
    expect("empty_name", OPEN "<" DS "invoke name=\"\">\n" EINV CLOSE, 0,
           "\nERROR[0]:bad DSML invoke tag\nTEXT[-1]:" OPEN "<" DS "invoke name=\"\">\n" EINV CLOSE);
    expect("empty_block", "x" OPEN CLOSE, 0, "\nTEXT[-1]:x\nERROR[0]:empty tool_calls block\nTEXT[-1]:" OPEN CLOSE);
    /* After a failed block the next one reuses the index. */
    expect("reuse_index", OPEN "x" CLOSE OPEN INV("f") EINV CLOSE, 0,
           "\nERROR[0]:expected <invoke> or </tool_calls> in DSML block\nTEXT[-1]:" OPEN "x" CLOSE
           "\nTOOL_START[0] f:f\nTOOL_ARGS[0] f:{}\nTOOL_END[0] f:{}\nCALLS_END[-1]:");
}

TEST(reasoning_dsml) {
    /* DSML inside reasoning followed by more reasoning: just reasoning. */
    expect("dsml_in_reasoning", "plan" OPEN INV("f") EINV CLOSE " more</think>answer", 1,
           "\nREASONING[-1]:plan" OPEN INV("f") EINV CLOSE " more\nREASONING_END[-1]:\nTEXT[-1]:answer");
    /* A complete block at the tail of unclosed reasoning: implicit </think>. */
    expect("implicit_think_end", "plan" OPEN INV("f") PAR("k", "true", "v") EINV CLOSE "\n", 1,
           "\nREASONING[-1]:plan\nREASONING_END[-1]:\nTOOL_START[0] f:f\nTOOL_ARGS[0] f:{\"k\":\"v\"}"
           "\nTOOL_END[0] f:{\"k\":\"v\"}\nCALLS_END[-1]:\nTEXT[-1]:\n");
    /* </think> inside a parameter value while in reasoning: the block was reasoning. */
    expect("think_end_in_value", "a" OPEN INV("f") "<" DS "parameter name=\"k\" string=\"true\">x</think>after", 1,
           "\nREASONING[-1]:a" OPEN INV("f") "<" DS "parameter name=\"k\" string=\"true\">x\nREASONING_END[-1]:\nTEXT[-1]:after");
    /* Broken block inside reasoning: reasoning, no ERROR. */
    expect("broken_in_reasoning", "a" OPEN "junk", 1, "\nREASONING[-1]:a" OPEN "junk");
}

TEST(no_partial_markers) {
    /* Fed byte by byte, text never shows a prefix of the opener until proven ordinary. */
    const char *in = "Look: <｜DSx and <tool_callz> then " OPEN INV("f") EINV CLOSE;
    evlog l;
    size_t n = strlen(in);
    size_t *cuts = malloc(n * sizeof *cuts);
    for (size_t i = 0; i < n; i++) cuts[i] = i + 1;
    CHECK(parse_split(in, n, 0, cuts, n, &l) == 0);
    CHECK(l.text.data && !strcmp(l.text.data, "Look: <｜DSx and <tool_callz> then"));
    evlog_free(&l);
    free(cuts);
    /* With tools disabled, DSML is plain text. */
    ds4_err err = {{0}};
    evlog m;
    memset(&m, 0, sizeof m);
    ds4_dsml_opts o = {.no_tools = 1};
    ds4_dsml_parser *p = ds4_dsml_new(&o, log_cb, &m, &err);
    CHECK(p && ds4_dsml_feed(p, in, n, &err) == 0 && ds4_dsml_finish(p, &err) == 0);
    CHECK(m.text.data && !strcmp(m.text.data, in));
    CHECK(ds4_dsml_feed(p, "x", 1, &err) == -1); /* misuse is reported */
    ds4_dsml_free(p);
    evlog_free(&m);
    /* A held partial marker is flushed as text at finish. */
    expect("partial_at_end", "abc <\xef\xbd\x9c" "DS", 0, "\nTEXT[-1]:abc <\xef\xbd\x9c" "DS");
}

TEST(parse_all_api) {
    ds4_dsml_result r;
    ds4_err err = {{0}};
    const char *in = "why</think>ok" OPEN INV("f") PAR("n", "false", "1") EINV "\n" INV("g") "bad" EINV CLOSE;
    CHECK(ds4_dsml_parse_all(in, strlen(in), 1, &r, &err) == 0);
    CHECK(!strcmp(r.reasoning, "why") && r.reasoning_closed);
    CHECK_EQ_INT(r.n_calls, 0); /* retracted by the error */
    CHECK_EQ_INT(r.n_errors, 1);
    CHECK_STR_CONTAINS(r.content, "ok\n\n<");
    ds4_dsml_result_free(&r);
}

/* ------------------------------------------------------------------ fuzz */

static unsigned rng_state = 12345;
static unsigned rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static const char *const SNIPPETS[] = {
    "<" DS "tool_calls>", "</" DS "tool_calls>", "<" DS "invoke name=\"f\">", "</" DS "invoke>",
    "<" DS "parameter name=\"k\" string=\"true\">", "<" DS "parameter name=\"j\" string=\"false\">",
    "</" DS "parameter>", "</think>", "<think>", "\n\n", "\"", "{", "[1, 2]", "<", "\xef\xbd\x9c", "\xe4\xbd", ">",
    "<tool_calls>", "<invoke name=\"p\">", "</invoke>", "</tool_calls>",
};

TEST(fuzz) {
    /* Corpus: model outputs rendered by the chat encoder (so they are valid DSML). */
    ds4_err err = {{0}};
    static const char *const args[] = {
        "{\"city\": \"Rome\", \"days\": 2}", "{}", "{\"cmd\": \"a && b < c\\n\\\"q\\\"\", \"n\": [1, {\"x\": null}]}",
        "{\"t\": \"\\u4f60\\u597d\", \"f\": 1.5, \"b\": false}"};
    ds4_buf corpus[8] = {{0}};
    size_t ncorp = 0;
    for (int i = 0; i < 4; i++) {
        ds4_chat_tool_call calls[2] = {{"a", "f1", (char *)args[i]}, {"b", "f2", (char *)args[(i + 1) % 4]}};
        ds4_buf *b = &corpus[ncorp++];
        ds4_buf_puts(b, i % 2 ? "reasoning here</think>Text " : "Visible answer.");
        ds4_chat_render_tool_calls(b, calls, (size_t)(1 + i % 2), &err);
        ds4_buf *c = &corpus[ncorp++];
        ds4_buf_puts(c, "plain text with <b> tags & no calls</think> \xe2\x9c\x93 ");
        ds4_buf_append(c, b->data, b->len);
    }
    int failures = 0, cases = 0;
    for (int it = 0; it < 4000; it++) {
        ds4_buf in = {0};
        int kind = (int)(rnd() % 5);
        const ds4_buf *base = &corpus[rnd() % ncorp];
        if (kind == 0) { /* byte mutations */
            ds4_buf_append(&in, base->data, base->len);
            for (int m = 0, nm = (int)(1 + rnd() % 4); m < nm && in.len; m++) in.data[rnd() % in.len] = (char)rnd();
        } else if (kind == 1) { /* truncation */
            ds4_buf_append(&in, base->data, rnd() % (base->len + 1));
        } else if (kind == 2) { /* concatenation of two outputs, maybe truncated */
            const ds4_buf *o = &corpus[rnd() % ncorp];
            ds4_buf_append(&in, base->data, base->len);
            ds4_buf_append(&in, o->data, rnd() % 2 ? o->len : rnd() % (o->len + 1));
        } else if (kind == 3) { /* splice marker snippets into an output */
            ds4_buf_append(&in, base->data, base->len);
            for (int m = 0, nm = (int)(1 + rnd() % 3); m < nm; m++) {
                const char *s = SNIPPETS[rnd() % (sizeof SNIPPETS / sizeof *SNIPPETS)];
                size_t at = rnd() % (in.len + 1);
                ds4_buf tail = {0};
                ds4_buf_append(&tail, in.data + at, in.len - at);
                ds4_buf_truncate(&in, at);
                ds4_buf_puts(&in, s);
                ds4_buf_append(&in, tail.data ? tail.data : "", tail.len);
                ds4_buf_free(&tail);
            }
        } else { /* random bytes biased towards markup characters */
            static const char alpha[] = "<>/\"= \n\xef\xbd\x9c" "DSMLthinkvocaprmeus_l";
            for (size_t k = 0, n = rnd() % 200; k < n; k++)
                ds4_buf_putc(&in, rnd() % 4 ? alpha[rnd() % (sizeof alpha - 1)] : (char)rnd());
        }
        cases++;
        unsigned seed = rnd();
        if (!check_splits(in.data ? in.data : "", in.len, (int)(rnd() % 2), &seed, it < 200)) {
            if (failures++ < 3) {
                fprintf(stderr, "  fuzz case %d failed (%zu bytes): ", it, in.len);
                fwrite(in.data, 1, in.len, stderr);
                fputc('\n', stderr);
            }
        }
        ds4_buf_free(&in);
    }
    CHECKF(failures == 0, "%d of %d fuzz cases failed", failures, cases);
    /* The unmutated corpus parses to calls without errors. */
    for (size_t i = 0; i < ncorp; i++) {
        ds4_dsml_result r;
        CHECK(ds4_dsml_parse_all(corpus[i].data, corpus[i].len, 0, &r, &err) == 0);
        CHECKF(r.n_calls >= 1 && r.n_errors == 0, "corpus %zu: %zu calls %d errors", i, r.n_calls, r.n_errors);
        ds4_dsml_result_free(&r);
        ds4_buf_free(&corpus[i]);
    }
}

int main(void) {
    RUN(basic_events);
    RUN(malformed);
    RUN(reasoning_dsml);
    RUN(no_partial_markers);
    RUN(parse_all_api);
    RUN(fuzz);
    TEST_END();
}

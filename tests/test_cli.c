/* Tests of the `ds4` command line, run as a user would run it.
 *
 * The test makes a tiny synthetic model with the real tokenizer
 * (data/tokenizer.json, the copy the demo uses) through the mkmodel library,
 * then runs the built binary (test_bindir()/ds4) and checks what it prints:
 *   - --dump-tokens against the ids and raw piece bytes of the shared vectors
 *     (vectors.jsonl, token_pieces.jsonl), partial UTF-8 pieces included;
 *   - --dump-tokens --chat against ENCODING.md example E1 and against the
 *     library (renderer + tokenizer), think-max fallback note;
 *   - one-shot -p: output, the statistics line, reproducible with --seed,
 *     greedy with --temp 0, -n respected;
 *   - bad input: empty prompt, invalid UTF-8 prompt file, missing model,
 *     unknown flag, bad number: message and exit code;
 *   - --demo one-shot (model created under a temporary XDG_CACHE_HOME);
 *   - the interactive chat driven through tmux (two sessions: turns, mode
 *     switch, prefix reuse, unknown command, Ctrl+C at the prompt, /quit;
 *     Ctrl+C during a long reply, Ctrl+D).  Skipped with a note only when
 *     tmux is not installed. */
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "convert/mkmodel.h"
#include "test.h"
#include "text/chat.h"
#include "text/tokenizer.h"

static char ds4_bin[PATH_MAX];
static char model[PATH_MAX];
static char tok_json[PATH_MAX + 64];
static ds4_tokenizer *tok;

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    if (b) b[n] = 0;
    if (len) *len = (size_t)n;
    return b;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

/* Runs `ds4 ARGS` through the shell; stdout/stderr into malloc'd strings. */
static int run_ds4(char **out, char **err, const char *fmt, ...) {
    char args[8192], cmd[8192 + 3 * PATH_MAX + 64], of[PATH_MAX], ef[PATH_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(of, sizeof of, "%s/out.txt", test_tmpdir());
    snprintf(ef, sizeof ef, "%s/err.txt", test_tmpdir());
    snprintf(cmd, sizeof cmd, "%s %s >%s 2>%s </dev/null", ds4_bin, args, of, ef);
    int st = system(cmd);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
    char *o = slurp(of, NULL), *e = slurp(ef, NULL);
    if (out) *out = o ? o : strdup(""); else free(o);
    if (err) *err = e ? e : strdup(""); else free(e);
    return rc;
}

/* Decodes one piece as ds4 --dump-tokens writes it: a JSON string in which
 * \u00XX with XX >= 80 stands for a raw byte (valid non-ASCII is raw). */
static int decode_piece(const char *s, unsigned char *out, size_t *n) {
    *n = 0;
    if (*s++ != '"') return -1;
    while (*s && *s != '"') {
        if (*s != '\\') { out[(*n)++] = (unsigned char)*s++; continue; }
        s++;
        switch (*s) {
        case '"': case '\\': case '/': out[(*n)++] = (unsigned char)*s; break;
        case 'n': out[(*n)++] = '\n'; break;
        case 'r': out[(*n)++] = '\r'; break;
        case 't': out[(*n)++] = '\t'; break;
        case 'b': out[(*n)++] = '\b'; break;
        case 'f': out[(*n)++] = '\f'; break;
        case 'u': {
            unsigned v;
            if (sscanf(s + 1, "%4x", &v) != 1 || v > 0xff) return -1;
            out[(*n)++] = (unsigned char)v;
            s += 4;
            break;
        }
        default: return -1;
        }
        s++;
    }
    return *s == '"' && !s[1] ? 0 : -1;
}

/* Parses "<id>\t<piece>" lines; pieces concatenated into *bytes. */
static int parse_dump(const char *out, int32_t *ids, int max, unsigned char *bytes, size_t *nbytes) {
    int n = 0;
    *nbytes = 0;
    const char *p = out;
    while (*p) {
        const char *eol = strchr(p, '\n');
        if (!eol) return -1;
        char line[4096];
        size_t l = (size_t)(eol - p);
        if (l >= sizeof line || n >= max) return -1;
        memcpy(line, p, l);
        line[l] = 0;
        char *tab = strchr(line, '\t');
        if (!tab) return -1;
        *tab = 0;
        ids[n++] = (int32_t)atol(line);
        size_t k;
        if (decode_piece(tab + 1, bytes + *nbytes, &k)) return -1;
        *nbytes += k;
        p = eol + 1;
    }
    return n;
}

static json_t *find_case(const char *file, const char *name) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/data/tokenizer/%s", test_shared_dir(), file);
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char *line = NULL;
    size_t cap = 0;
    json_t *hit = NULL;
    while (!hit && getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, 0, NULL);
        if (j && !strcmp(json_string_value(json_object_get(j, "name")), name)) hit = j;
        else json_decref(j);
    }
    free(line);
    fclose(f);
    return hit;
}

TEST(dump_tokens_vectors) {
    const char *names[] = {"hello_world", "italian_accents", "emoji_basic", "special_think_in_text",
                           "rendered_E1_chat_single_turn"};
    for (size_t c = 0; c < sizeof names / sizeof *names; c++) {
        json_t *v = find_case("vectors.jsonl", names[c]);
        json_t *pc = find_case("token_pieces.jsonl", names[c]);
        CHECKF(v && pc, "case %s missing in the shared vectors", names[c]);
        if (!v || !pc) { json_decref(v); json_decref(pc); continue; }
        const char *text = json_string_value(json_object_get(v, "text"));
        char pf[PATH_MAX];
        snprintf(pf, sizeof pf, "%s/prompt_%zu.txt", test_tmpdir(), c);
        write_file(pf, text, strlen(text));
        char *out, *err;
        int rc = run_ds4(&out, &err, "-m %s --dump-tokens --prompt-file %s", model, pf);
        CHECKF(rc == 0, "%s: exit %d: %s", names[c], rc, err);
        int32_t ids[4096];
        static unsigned char bytes[65536];
        size_t nb;
        int n = parse_dump(out, ids, 4096, bytes, &nb);
        json_t *eid = json_object_get(v, "ids"), *hex = json_object_get(pc, "pieces_hex");
        CHECKF(n == (int)json_array_size(eid), "%s: %d tokens, expected %zu; output:\n%s", names[c], n,
               json_array_size(eid), out);
        for (int i = 0; i < n && i < (int)json_array_size(eid); i++)
            CHECKF(ids[i] == json_integer_value(json_array_get(eid, (size_t)i)), "%s: token %d is %d", names[c], i,
                   ids[i]);
        /* Raw bytes of every piece, from the hex of the reference. */
        unsigned char want[65536];
        size_t nw = 0;
        for (size_t i = 0; i < json_array_size(hex); i++) {
            const char *h = json_string_value(json_array_get(hex, i));
            for (; h[0] && h[1]; h += 2) {
                unsigned b;
                sscanf(h, "%2x", &b);
                want[nw++] = (unsigned char)b;
            }
        }
        CHECKF(n >= 0 && nb == nw && !memcmp(bytes, want, nw), "%s: pieces differ from token_pieces.jsonl", names[c]);
        CHECKF(nb == strlen(text) && !memcmp(bytes, text, nb), "%s: pieces do not concatenate to the text", names[c]);
        free(out);
        free(err);
        json_decref(v);
        json_decref(pc);
    }
    /* -p gives the same as --prompt-file. */
    char *out;
    int rc = run_ds4(&out, NULL, "-m %s --dump-tokens -p 'Hello world'", model);
    CHECK_EQ_INT(rc, 0);
    CHECKF(!strcmp(out, "19923\t\"Hello\"\n2058\t\" world\"\n"), "got: %s", out);
    free(out);
}

/* ids of the rendered single-message chat via the library. */
static int lib_chat_ids(const char *system, const char *user, ds4_think_mode mode, ds4_tok_ids *v) {
    ds4_err e = {{0}};
    ds4_chat *c = ds4_chat_new(&e);
    if (system) ds4_chat_add(c, DS4_ROLE_SYSTEM, system, &e);
    ds4_chat_add(c, DS4_ROLE_USER, user, &e);
    ds4_chat_opts o = {.mode = mode, .n_ctx = 32768};
    size_t len;
    char *s = ds4_chat_render(c, &o, &len, &e);
    ds4_chat_free(c);
    if (!s) return -1;
    int rc = ds4_tok_encode(tok, s, len, 0, v, &e);
    free(s);
    return rc;
}

TEST(dump_tokens_chat) {
    char *out, *err;
    int32_t ids[512];
    static unsigned char bytes[65536];
    size_t nb;
    /* ENCODING.md E1. */
    int rc = run_ds4(&out, &err,
                     "-m %s --dump-tokens --chat --nothink --system 'You are a helpful assistant.' "
                     "-p 'What is the capital of Italy?'",
                     model);
    CHECKF(rc == 0, "exit %d: %s", rc, err);
    static const int32_t e1[] = {0, 3476, 477, 260, 11502, 22896, 16, 128803, 3085,
                                 344, 270, 6102, 294, 14251, 33, 128804, 128822};
    int n = parse_dump(out, ids, 512, bytes, &nb);
    CHECK_EQ_INT(n, 17);
    for (int i = 0; i < n && i < 17; i++) CHECKF(ids[i] == e1[i], "E1 token %d: %d != %d", i, ids[i], e1[i]);
    free(out);
    free(err);

    /* Default mode (think), no system, against the library. */
    const char *msg = "Ciao! Come stai? \xf0\x9f\x98\x80";
    rc = run_ds4(&out, &err, "-m %s --dump-tokens --chat -p '%s'", model, msg);
    CHECKF(rc == 0, "exit %d: %s", rc, err);
    ds4_tok_ids v = {0};
    CHECK(lib_chat_ids(NULL, msg, DS4_THINK_HIGH, &v) == 0);
    n = parse_dump(out, ids, 512, bytes, &nb);
    CHECK_EQ_INT(n, (int)v.n);
    for (int i = 0; i < n && i < (int)v.n; i++) CHECKF(ids[i] == v.ids[i], "token %d: %d != %d", i, ids[i], v.ids[i]);
    CHECK(n > 0 && ids[0] == 0 && ids[n - 1] == 128821); /* BOS ... <think> */
    ds4_tok_ids_free(&v);
    free(out);
    free(err);

    /* --think-max below the context threshold: a note, then think. */
    rc = run_ds4(&out, &err, "-m %s --dump-tokens --chat --think-max -p 'Hi'", model);
    CHECK_EQ_INT(rc, 0);
    CHECK_STR_CONTAINS(err, "--think-max needs a context of at least 393216");
    CHECK_STR_CONTAINS(out, "128821\t\"<think>\"");
    CHECK(!strstr(out, "Reasoning"));
    free(out);
    free(err);
    /* ... and at the threshold the Max prefix is there. */
    rc = run_ds4(&out, &err, "-m %s --dump-tokens --chat --think-max --ctx 393216 -p 'Hi'", model);
    CHECK_EQ_INT(rc, 0);
    CHECK_STR_CONTAINS(out, "\"Reason");
    free(out);
    free(err);
}

/* Last non-empty line of s (static buffer). */
/* Whether s holds a turn's statistics ("generation N tok"), not just the
 * word, which a random model's reply may contain. */
static int has_stats_line(const char *s) {
    for (const char *p = strstr(s, "generation "); p; p = strstr(p + 1, "generation ")) {
        const char *d = p + strlen("generation ");
        if (*d < '0' || *d > '9') continue;
        while (*d >= '0' && *d <= '9') d++;
        if (strncmp(d, " tok", 4) == 0) return 1;
    }
    return 0;
}

static const char *last_line(const char *s) {
    static char buf[4096];
    buf[0] = 0;
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        while (l && (p[l - 1] == ' ' || p[l - 1] == '\r')) l--;
        if (l) {
            if (l >= sizeof buf) l = sizeof buf - 1;
            memcpy(buf, p, l);
            buf[l] = 0;
        }
        if (!e) break;
        p = e + 1;
    }
    return buf;
}

static int stats_line_ok(const char *line, long want_gen) {
    long np, ng;
    double rp, rg;
    if (sscanf(line, "prefill %ld tok at %lf tok/s, generation %ld tok at %lf tok/s", &np, &rp, &ng, &rg) != 4)
        return 0;
    return np > 0 && (want_gen < 0 || ng == want_gen);
}

TEST(oneshot) {
    char *out1, *err1, *out2, *err2;
    int rc = run_ds4(&out1, &err1, "-m %s -p 'Hello, who are you?' -n 12 --seed 42 --nothink", model);
    CHECKF(rc == 0, "exit %d: %s", rc, err1);
    CHECKF(strlen(out1) > 1, "no answer printed: '%s'", out1);
    CHECKF(stats_line_ok(last_line(err1), 12), "bad stats line: '%s'", last_line(err1));
    CHECK_STR_CONTAINS(err1, "stopped at -n");
    rc = run_ds4(&out2, &err2, "-m %s -p 'Hello, who are you?' -n 12 --seed 42 --nothink", model);
    CHECK_EQ_INT(rc, 0);
    CHECKF(!strcmp(out1, out2), "same seed, different output:\n%s\n---\n%s", out1, out2);
    free(out2);
    free(err2);
    rc = run_ds4(&out2, &err2, "-m %s -p 'Hello, who are you?' -n 12 --seed 43 --nothink", model);
    CHECKF(strcmp(out1, out2), "seed 42 and 43 gave the same text: %s", out1);
    free(out1);
    free(err1);
    free(out2);
    free(err2);

    /* Greedy: the seed does not matter. */
    rc = run_ds4(&out1, &err1, "-m %s -p 'Tell me about Rome.' -n 10 --temp 0 --seed 1 --nothink", model);
    CHECK_EQ_INT(rc, 0);
    rc = run_ds4(&out2, &err2, "-m %s -p 'Tell me about Rome.' -n 10 --temp 0 --seed 999 --nothink", model);
    CHECK_EQ_INT(rc, 0);
    CHECKF(strlen(out1) > 1 && !strcmp(out1, out2), "greedy differs:\n%s\n---\n%s", out1, out2);
    free(out1);
    free(err1);
    free(out2);
    free(err2);

    /* Thinking mode (default), stdout not a terminal: reasoning goes to stderr,
     * the statistics line is still last; system prompt and sampler flags. */
    rc = run_ds4(&out1, &err1,
                 "-m %s -p 'Why is the sky blue?' --system 'Be brief.' -n 8 --seed 5 --top-k 40 --top-p 0.9 "
                 "--min-p 0.01 --repeat-penalty 1.1 --threads 1 --ctx 1024",
                 model);
    CHECKF(rc == 0, "exit %d: %s", rc, err1);
    CHECKF(stats_line_ok(last_line(err1), 8), "bad stats line: '%s'", last_line(err1));
    CHECKF(strlen(err1) > strlen(last_line(err1)) + 2, "no reasoning on stderr: '%s'", err1);
    free(out1);
    free(err1);
}

TEST(bad_input) {
    char *out, *err, path[PATH_MAX];
    int rc = run_ds4(&out, &err, "-m %s -p ''", model);
    CHECK_EQ_INT(rc, 2);
    CHECK_STR_CONTAINS(err, "empty prompt");
    free(out);
    free(err);

    snprintf(path, sizeof path, "%s/bad_utf8.txt", test_tmpdir());
    write_file(path, "caf\xc3\xa9 ok \xff\xfe then", 16);
    rc = run_ds4(&out, &err, "-m %s --prompt-file %s", model, path);
    CHECK_EQ_INT(rc, 2);
    CHECK_STR_CONTAINS(err, "not valid UTF-8");
    CHECK_STR_CONTAINS(err, "offset 9");
    free(out);
    free(err);

    rc = run_ds4(&out, &err, "-m %s/no-such-model.gguf -p 'Hi'", test_tmpdir());
    CHECK_EQ_INT(rc, 1);
    CHECK_STR_CONTAINS(err, "no-such-model.gguf' is missing");
    CHECK_STR_CONTAINS(err, "--demo");
    free(out);
    free(err);

    rc = run_ds4(&out, &err, "-m %s --frobnicate", model);
    CHECK_EQ_INT(rc, 2);
    CHECK_STR_CONTAINS(err, "unknown option '--frobnicate'");
    free(out);
    free(err);

    rc = run_ds4(&out, &err, "-m %s -p Hi -n lots", model);
    CHECK_EQ_INT(rc, 2);
    CHECK_STR_CONTAINS(err, "-n expects an integer");
    free(out);
    free(err);

    rc = run_ds4(&out, &err, "-m %s -p Hi -n 0", model);
    CHECK_EQ_INT(rc, 2);
    CHECK_STR_CONTAINS(err, "-n expects an integer in [1,");
    free(out);
    free(err);

    rc = run_ds4(&out, &err, "-m %s -p Hi --temp", model);
    CHECK_EQ_INT(rc, 2);
    CHECK_STR_CONTAINS(err, "--temp needs an argument");
    free(out);
    free(err);

    rc = run_ds4(&out, &err, "-m %s --prompt-file %s/nope.txt", model, test_tmpdir());
    CHECK_EQ_INT(rc, 2);
    CHECK_STR_CONTAINS(err, "cannot open");
    free(out);
    free(err);

    /* A prompt that does not fit the context is a runtime error that says so. */
    rc = run_ds4(&out, &err, "-m %s --ctx 16 -p 'one two three four five six seven eight nine ten eleven twelve "
                 "thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty'", model);
    CHECK_EQ_INT(rc, 1);
    CHECK_STR_CONTAINS(err, "context");
    free(out);
    free(err);

    rc = run_ds4(&out, &err, "--help");
    CHECK_EQ_INT(rc, 0);
    CHECK_STR_CONTAINS(out, "--prompt-file");
    free(out);
    free(err);
}

TEST(demo_oneshot) {
    char *out, *err;
    int rc = run_ds4(&out, &err, "--demo -p 'Hello' -n 4 --seed 1 --nothink");
    CHECKF(rc == 0, "exit %d: %s", rc, err);
    CHECK_STR_CONTAINS(err, "creating the demo model");
    CHECKF(stats_line_ok(last_line(err), 4), "bad stats line: '%s'", last_line(err));
    free(out);
    free(err);
    rc = run_ds4(&out, &err, "--demo -p 'Hello' -n 4 --seed 1 --nothink");
    CHECK_EQ_INT(rc, 0);
    CHECK(!strstr(err, "creating the demo model")); /* made once */
    free(out);
    free(err);
}

/* ---- interactive, through tmux ---- */

static char tmux_sock[64];

static int tmux(const char *fmt, ...) {
    char args[4096], cmd[4600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "tmux -L %s %s >/dev/null 2>&1", tmux_sock, args);
    return system(cmd);
}

static char *pane(const char *name) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "tmux -L %s capture-pane -p -J -S -3000 -t %s 2>/dev/null", tmux_sock, name);
    FILE *p = popen(cmd, "r");
    if (!p) return strdup("");
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    size_t r;
    while ((r = fread(b + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (n + 1 == cap) b = realloc(b, cap *= 2);
    }
    pclose(p);
    b[n] = 0;
    return b;
}

static int count_of(const char *hay, const char *needle) {
    int k = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) k++;
    return k;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Polls the pane until needle occurs `count` times (and, if last is set, the
 * last non-empty line equals it).  Returns the pane (caller frees) or NULL. */
static char *wait_for(const char *name, const char *needle, int count, const char *last, double timeout) {
    double t0 = now_s();
    for (;;) {
        char *s = pane(name);
        if (count_of(s, needle) >= count && (!last || !strcmp(last_line(s), last))) return s;
        if (now_s() - t0 > timeout) {
            fprintf(stderr, "  tmux %s: timeout waiting for %d x '%s'%s%s; screen:\n%s\n", name, count, needle,
                    last ? " then last line " : "", last ? last : "", s);
            free(s);
            return NULL;
        }
        free(s);
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* Types text literally, then Enter. */
static void type_line(const char *name, const char *text) {
    tmux("send-keys -t %s -l '%s'", name, text);
    tmux("send-keys -t %s Enter", name);
}

static void start_session(const char *name, const char *args) {
    tmux("new-session -d -s %s -x 120 -y 40 \"%s -m %s %s; echo EXITED rc=\\$?; sleep 120\"", name, ds4_bin, model,
         args);
}

#define EXPECT(s, ...) do { char *p_ = (s = wait_for(__VA_ARGS__)); CHECK(p_ != NULL); free(p_); } while (0)

TEST(interactive_tmux) {
    if (system("command -v tmux >/dev/null 2>&1") != 0) {
        printf("note: tmux is not installed: interactive test skipped\n");
        return;
    }
    snprintf(tmux_sock, sizeof tmux_sock, "ds4test%ld", (long)getpid());
    char *s;
    double T = 30; /* seconds per step (sanitizer builds are slower) */

    /* Session A: turns, /nothink, prefix reuse, unknown command, ^C at the prompt, /quit. */
    start_session("A", "-n 6 --seed 3");
    EXPECT(s, "A", "ds4 chat:", 1, ">", T);
    type_line("A", "Hello there");
    EXPECT(s, "A", "generation 6 tok", 1, ">", T);
    type_line("A", "/nothink");
    EXPECT(s, "A", "(mode: nothink)", 1, ">", T);
    type_line("A", "Second question");
    EXPECT(s, "A", "generation 6 tok", 2, ">", T);
    type_line("A", "Third question");
    s = wait_for("A", "generation 6 tok", 3, ">", T);
    CHECK(s != NULL);
    if (s) {
        /* The third turn continues the second: the session reused its tokens. */
        const char *third = strstr(strstr(strstr(s, "generation 6 tok") + 1, "generation 6 tok") + 1, "prefill");
        CHECKF(third && strstr(third, "cached") && strstr(third, "cached") < strstr(third, "generation"),
               "third turn did not reuse the KV prefix:\n%s", s);
    }
    free(s);
    type_line("A", "/bogus");
    EXPECT(s, "A", "unknown command '/bogus' (type /help for the list)", 1, ">", T);
    type_line("A", "   "); /* empty input: ignored, no turn */
    tmux("send-keys -t A -l 'typed but discarded'");
    tmux("send-keys -t A C-c");
    EXPECT(s, "A", "typed but discarded^C", 1, ">", T);
    type_line("A", "/help");
    EXPECT(s, "A", "commands:", 1, ">", T);
    s = pane("A");
    CHECKF(count_of(s, "generation 6 tok") == 3, "unexpected extra turn:\n%s", s);
    free(s);
    type_line("A", "/quit");
    EXPECT(s, "A", "EXITED rc=0", 1, NULL, T);

    /* Session B: Ctrl+C during a long reply returns to the prompt; Ctrl+D exits.
     * A fixed seed: the random model's reply is the same text every run (an
     * unseeded one once held the word "generation", read as the turn's
     * statistics line), and only its stats line is looked for. */
    start_session("B", "-n 1000000 --nothink --seed 2");
    EXPECT(s, "B", "ds4 chat:", 1, ">", T);
    type_line("B", "Tell me a very long story");
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
    s = pane("B");
    CHECKF(strcmp(last_line(s), ">") != 0 && !has_stats_line(s), "generation ended early:\n%s", s);
    free(s);
    tmux("send-keys -t B C-c");
    EXPECT(s, "B", "[interrupted]", 1, ">", T);
    s = pane("B");
    CHECK_STR_CONTAINS(s, ", interrupted");
    free(s);
    type_line("B", "/nothink");
    EXPECT(s, "B", "(mode: nothink)", 1, ">", T); /* still responsive */
    tmux("send-keys -t B C-d");
    EXPECT(s, "B", "EXITED rc=0", 1, NULL, T);
    tmux("kill-server");
}

int main(void) {
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd)) return 2;
    snprintf(ds4_bin, sizeof ds4_bin, "%s/ds4", test_bindir());
    char *abs = realpath(ds4_bin, NULL);
    if (!abs) {
        fprintf(stderr, "test_cli: %s not found (build it: make ds4)\n", ds4_bin);
        return 1;
    }
    snprintf(ds4_bin, sizeof ds4_bin, "%s", abs);
    free(abs);
    /* The demo's tokenizer copy if run from the repository, else the shared one. */
    snprintf(tok_json, sizeof tok_json, "%s/data/tokenizer.json", cwd);
    struct stat sb;
    if (stat(tok_json, &sb)) snprintf(tok_json, sizeof tok_json, "%s/data/tokenizer/tokenizer.json", test_shared_dir());
    /* --demo writes under XDG_CACHE_HOME: keep it in the scratch directory. */
    char cache[PATH_MAX];
    snprintf(cache, sizeof cache, "%s/cache", test_tmpdir());
    setenv("XDG_CACHE_HOME", cache, 1);
    setenv("DS4_TOKENIZER", tok_json, 1);

    snprintf(model, sizeof model, "%s/tiny.gguf", test_tmpdir());
    ds4_err err = {{0}};
    ds4_hparams hp;
    ds4_mkmodel_opts mo = {.recipe = "q8_0", .seed = 11, .tokenizer_json = tok_json};
    ds4_emit_stats st;
    if (ds4_mkmodel_preset("tiny", &hp, &err) || ds4_mkmodel(model, &hp, &mo, &st, &err) ||
        !(tok = ds4_tokenizer_load_json(tok_json, &err))) {
        fprintf(stderr, "test_cli: cannot make the test model: %s\n", err.msg);
        return 1;
    }
    RUN(dump_tokens_vectors);
    RUN(dump_tokens_chat);
    RUN(oneshot);
    RUN(bad_input);
    RUN(demo_oneshot);
    RUN(interactive_tmux);
    ds4_tokenizer_free(tok);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", test_tmpdir());
    if (!test_failures) (void)!system(cmd);
    TEST_END();
}

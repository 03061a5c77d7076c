/* ds4 terminal output.  Policy (also in `ds4 --help`):
 *   - the answer goes to stdout;
 *   - reasoning goes to stdout in ANSI faint when stdout is a terminal,
 *     otherwise to stderr (faint only if stderr is a terminal), so that
 *     `ds4 -p ... > out.txt` keeps only the answer in out.txt;
 *   - progress bar (terminal stderr only) and statistics go to stderr.
 * Output is flushed per piece so tokens appear as they are generated. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

#define FAINT "\033[2m"
#define RESET "\033[0m"

void ds4_term_init(ds4_term *t) {
    memset(t, 0, sizeof *t);
    t->out_tty = isatty(STDOUT_FILENO);
    t->err_tty = isatty(STDERR_FILENO);
    t->at_line_start_out = t->at_line_start_err = 1;
}

void ds4_term_begin_turn(ds4_term *t) {
    t->reasoning_open = 0;
    t->wrote_text = 0;
}

static void put(ds4_term *t, FILE *f, const char *s, size_t n) {
    if (!n) return;
    fwrite(s, 1, n, f);
    fflush(f);
    int eol = s[n - 1] == '\n';
    if (f == stdout) t->at_line_start_out = eol;
    else t->at_line_start_err = eol;
}

static FILE *reasoning_stream(const ds4_term *t) { return t->out_tty ? stdout : stderr; }
static int reasoning_faint(const ds4_term *t) { return t->out_tty || t->err_tty; }

void ds4_term_reasoning(ds4_term *t, const char *s, size_t n) {
    if (!n) return;
    FILE *f = reasoning_stream(t);
    if (!t->reasoning_open) {
        t->reasoning_open = 1;
        if (reasoning_faint(t)) fputs(FAINT, f);
    }
    put(t, f, s, n);
}

void ds4_term_reasoning_end(ds4_term *t) {
    if (!t->reasoning_open) return;
    FILE *f = reasoning_stream(t);
    if (reasoning_faint(t)) fputs(RESET, f);
    /* A blank line separates the reasoning from the answer on one stream. */
    if (f == stdout) put(t, f, t->at_line_start_out ? "\n" : "\n\n", t->at_line_start_out ? 1 : 2);
    else if (!t->at_line_start_err) put(t, f, "\n", 1);
    fflush(f);
    t->reasoning_open = 0;
}

void ds4_term_text(ds4_term *t, const char *s, size_t n) {
    if (!n) return;
    if (t->reasoning_open) ds4_term_reasoning_end(t);
    t->wrote_text = 1;
    put(t, stdout, s, n);
}

void ds4_term_end_turn(ds4_term *t) {
    if (t->reasoning_open) {
        FILE *f = reasoning_stream(t);
        if (reasoning_faint(t)) fputs(RESET, f);
        t->reasoning_open = 0;
    }
    if (!t->at_line_start_out) put(t, stdout, "\n", 1);
    if (!t->at_line_start_err) put(t, stderr, "\n", 1);
    fflush(stdout);
}

void ds4_term_progress(ds4_term *t, size_t done, size_t total) {
    if (!t->err_tty || total <= 256) return;
    enum { W = 30 };
    int fill = (int)(done * W / total);
    char bar[W + 1];
    for (int i = 0; i < W; i++) bar[i] = i < fill ? '#' : '.';
    bar[W] = 0;
    fprintf(stderr, "\r\033[Kprefill [%s] %zu/%zu tokens", bar, done, total);
    fflush(stderr);
    t->progress_shown = 1;
}

void ds4_term_progress_clear(ds4_term *t) {
    if (!t->progress_shown) return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    t->progress_shown = 0;
}

void ds4_term_stats(ds4_term *t, const ds4_gen_stats *st) {
    ds4_term_progress_clear(t);
    double pr = st->prefill_s > 0 ? (double)st->prefill_tokens / st->prefill_s : 0;
    double gr = st->gen_s > 0 ? (double)st->gen_tokens / st->gen_s : 0;
    char extra[96] = "";
    if (st->cached_tokens) snprintf(extra, sizeof extra, " (%zu cached)", st->cached_tokens);
    fprintf(stderr, "prefill %zu tok%s at %.1f tok/s, generation %zu tok at %.1f tok/s", st->prefill_tokens, extra, pr,
            st->gen_tokens, gr);
    if (st->cancelled_prefill || st->stop == DS4_GEN_STOP_CANCEL) fputs(", interrupted", stderr);
    else if (st->stop == DS4_GEN_STOP_MAX_TOKENS) fputs(", stopped at -n", stderr);
    else if (st->stop == DS4_GEN_STOP_CTX_FULL) fputs(", context full", stderr);
    fputc('\n', stderr);
    fflush(stderr);
    t->at_line_start_err = 1;
}

int ds4_json_escape_bytes(ds4_buf *out, const char *s, size_t n) {
    if (ds4_buf_putc(out, '"')) return -1;
    size_t i = 0;
    while (i < n) {
        size_t bad;
        size_t good = ds4_utf8_valid(s + i, n - i, &bad) ? n - i : bad;
        for (size_t j = i; j < i + good; j++) {
            unsigned char c = (unsigned char)s[j];
            int rc;
            switch (c) {
            case '"': rc = ds4_buf_puts(out, "\\\""); break;
            case '\\': rc = ds4_buf_puts(out, "\\\\"); break;
            case '\n': rc = ds4_buf_puts(out, "\\n"); break;
            case '\r': rc = ds4_buf_puts(out, "\\r"); break;
            case '\t': rc = ds4_buf_puts(out, "\\t"); break;
            case '\b': rc = ds4_buf_puts(out, "\\b"); break;
            case '\f': rc = ds4_buf_puts(out, "\\f"); break;
            default:
                rc = c < 0x20 || c == 0x7f ? ds4_buf_printf(out, "\\u%04x", c) : ds4_buf_putc(out, (char)c);
            }
            if (rc) return -1;
        }
        i += good;
        if (i < n) { /* one byte that is not part of well-formed UTF-8 */
            if (ds4_buf_printf(out, "\\u%04x", (unsigned char)s[i])) return -1;
            i++;
        }
    }
    return ds4_buf_putc(out, '"');
}

/* --trace FILE (API.md §2): a human-readable, append-only record of rendered
 * prompts, cache decisions, generated text and tool-parser events.  Lines are
 * written whole under a mutex and flushed, so a crash leaves a readable file.
 * The API key never reaches it (nothing here sees headers). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "server/srv_int.h"

struct srv_trace {
    pthread_mutex_t mu;
    FILE *f;
};

srv_trace *srv_trace_open(const char *path, ds4_err *err) {
    FILE *f = fopen(path, "a");
    if (!f) { ds4_err_set(err, "cannot open trace file %s", path); return NULL; }
    srv_trace *t = calloc(1, sizeof *t);
    if (!t) { fclose(f); ds4_err_set(err, "out of memory"); return NULL; }
    t->f = f;
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

void srv_trace_close(srv_trace *t) {
    if (!t) return;
    fclose(t->f);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

void srv_trace_printf(srv_trace *t, const char *fmt, ...) {
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    fprintf(t->f, "[%04d-%02d-%02d %02d:%02d:%02d] ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
            tm.tm_min, tm.tm_sec);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(t->f, fmt, ap);
    va_end(ap);
    fputc('\n', t->f);
    fflush(t->f);
    pthread_mutex_unlock(&t->mu);
}

void srv_trace_text(srv_trace *t, const char *label, const char *data, size_t len) {
    if (!t) return;
    pthread_mutex_lock(&t->mu);
    fprintf(t->f, "----- %s (%zu bytes) -----\n", label, len);
    fwrite(data, 1, len, t->f);
    fprintf(t->f, "\n----- end %s -----\n", label);
    fflush(t->f);
    pthread_mutex_unlock(&t->mu);
}

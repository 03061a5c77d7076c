/* Progress bar on stderr; see progress.h. */
#include "convert/progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

double ds4_progress_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void ds4_progress_init(ds4_progress_state *p) {
    p->tty = isatty(2);
    p->start = ds4_progress_now();
    p->last = 0;
}

void ds4_progress_bar(void *ud, const char *tensor, uint64_t done, uint64_t total) {
    ds4_progress_state *p = ud;
    if (!p || !p->tty) return;
    double now = ds4_progress_now();
    if (done < total && now - p->last < 0.1) return;
    p->last = now;
    double f = total ? (double)done / (double)total : 1.0;
    char bar[31];
    int k = (int)(f * 30);
    for (int i = 0; i < 30; i++) bar[i] = i < k ? '#' : '.';
    bar[30] = 0;
    double el = now - p->start, eta = f > 0.001 ? el / f - el : 0;
    fprintf(stderr, "\r\033[K[%s] %5.1f%%  %.2f/%.2f GB  %4.0fs left  %.48s", bar, f * 100, done / 1e9, total / 1e9, eta,
            tensor ? tensor : "");
    fflush(stderr);
}

void ds4_progress_end(ds4_progress_state *p) {
    if (p->tty) fputs("\r\033[K", stderr);
}

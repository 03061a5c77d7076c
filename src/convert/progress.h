/* Terminal progress reporting shared by ds4-convert and ds4-mkmodel.
 *
 * ds4_progress_bar() is a ds4_progress_fn (ud = ds4_progress_state *): on a
 * terminal it redraws one stderr line ("[#####.....]  45.1%  1.2/2.7 GB
 * tensor"), at most ten times a second; otherwise it prints nothing, and the
 * tools print one summary line at the end. */
#ifndef DS4_CONVERT_PROGRESS_H
#define DS4_CONVERT_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct ds4_progress_state {
    bool tty;
    double last;      /* time of the last redraw */
    double start;
} ds4_progress_state;

void ds4_progress_init(ds4_progress_state *p);   /* tty = isatty(stderr) */
void ds4_progress_bar(void *ud, const char *tensor, uint64_t done, uint64_t total);
void ds4_progress_end(ds4_progress_state *p);    /* finishes the line */
double ds4_progress_now(void);                   /* monotonic seconds */

#endif

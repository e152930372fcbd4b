/*  progress.h - the progress line of `dist map` on stderr: a bar, the
 *  count, the rate and the time left, redrawn at most ten times a second,
 *  and only when stderr is a terminal. */
#ifndef DIST_CLI_PROGRESS_H_INCLUDED
#define DIST_CLI_PROGRESS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    bool on;
    bool drawn;
    size_t total, done;
    int64_t start_ns, last_ns;
} cli_progress_t;

/* on: draw at all (isatty(2)). */
void cli_progress_init(cli_progress_t *p, size_t total, bool on);
void cli_progress_update(cli_progress_t *p, size_t more);
/* When results go to the same terminal: clear the bar before writing one
 * (the result then starts at column 0 and no old bar stays above it), and
 * draw it again after. Both do nothing when the bar is off. */
void cli_progress_clear(cli_progress_t *p);
void cli_progress_redraw(cli_progress_t *p);
/* Draws the final state and ends the line. */
void cli_progress_done(cli_progress_t *p);

#endif

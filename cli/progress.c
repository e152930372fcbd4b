/*  progress.c - see progress.h. */
#include "progress.h"

#include <stdio.h>
#include <time.h>

#define S_REDRAW_NS 100000000 /* ten times a second at most */
#define S_BAR 24

static int64_t s_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void s_duration(char *buf, size_t len, double s)
{
    if (s < 0)
        snprintf(buf, len, "?");
    else if (s < 60)
        snprintf(buf, len, "%.0fs", s);
    else if (s < 3600)
        snprintf(buf, len, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, len, "%dh%02dm", (int)s / 3600, (int)s % 3600 / 60);
}

static void s_draw(cli_progress_t *p, int64_t now)
{
    double el = (double)(now - p->start_ns) / 1e9;
    double rate = el > 0 ? (double)p->done / el : 0;
    double frac = p->total ? (double)p->done / (double)p->total : 1;
    char bar[S_BAR + 1];
    int full = (int)(frac * S_BAR);
    for (int i = 0; i < S_BAR; i++)
        bar[i] = i < full ? '#' : '.';
    bar[S_BAR] = 0;
    char eta[32];
    /* The first second's rate says little: no ETA before it. */
    s_duration(eta, sizeof eta, el >= 1 && rate > 0 ? (double)(p->total - p->done) / rate : -1);
    /* \033[K clears what a longer previous line left behind. */
    fprintf(stderr, "\r[%s] %3d%% %zu/%zu  %.0f/s  ETA %s\033[K", bar, (int)(frac * 100), p->done,
            p->total, rate, eta);
    fflush(stderr);
    p->drawn = true;
    p->last_ns = now;
}

void cli_progress_init(cli_progress_t *p, size_t total, bool on)
{
    p->on = on && total > 0;
    p->drawn = false;
    p->total = total;
    p->done = 0;
    p->start_ns = s_now_ns();
    p->last_ns = 0;
    if (p->on)
        s_draw(p, p->start_ns); /* at once: the first result may take a while */
}

void cli_progress_update(cli_progress_t *p, size_t more)
{
    p->done += more;
    if (!p->on)
        return;
    int64_t now = s_now_ns();
    if (now - p->last_ns >= S_REDRAW_NS)
        s_draw(p, now);
}

void cli_progress_clear(cli_progress_t *p)
{
    if (!p->on || !p->drawn)
        return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    p->drawn = false;
}

void cli_progress_redraw(cli_progress_t *p)
{
    if (p->on)
        s_draw(p, s_now_ns());
}

void cli_progress_done(cli_progress_t *p)
{
    if (!p->on)
        return;
    s_draw(p, s_now_ns());
    fputc('\n', stderr);
}

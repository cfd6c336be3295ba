/*
 * progress.c: per-item progress lines on a terminal or in a log
 * (progress.h).
 *
 * On a terminal the block of item lines is redrawn from its first line:
 * the cursor goes up by the number of lines drawn last time (ESC [ n A),
 * each line is rewritten and cleared to its end (ESC [ K). Lines are cut to
 * the terminal's width so that none wraps, which would break the count.
 */
#include "progress.h"

#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common.h"

#define REDRAW_SECONDS 0.1
#define LABEL_WIDTH 22
#define BAR_WIDTH 12

typedef struct {
    char *label;
    int64_t total, done, resumed_from;
    double start, end, last_line;
    bool ended;
    const char *note;
} item;

struct nc_progress {
    FILE *out;
    nc_progress_mode mode;
    item *items;
    int n, cap;
    int drawn_lines; /* lines of the block currently on the terminal */
    double last_draw;
};

nc_progress_mode nc_progress_mode_for_stderr(bool quiet) {
    if (quiet) return NC_PROGRESS_OFF;
    return isatty(STDERR_FILENO) ? NC_PROGRESS_BARS : NC_PROGRESS_LINES;
}

nc_progress *nc_progress_new(FILE *out, nc_progress_mode mode) {
    nc_progress *p = nc_xcalloc(1, sizeof *p);
    p->out = out;
    p->mode = mode;
    return p;
}

void nc_progress_free(nc_progress *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) free(p->items[i].label);
    free(p->items);
    free(p);
}

void nc_format_bytes(int64_t n, char *buf, size_t cap) {
    static const char *units[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1000 && u < 4) v /= 1000, u++;
    snprintf(buf, cap, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

static void format_duration(double s, char *buf, size_t cap) {
    if (!(s >= 0) || s > 359999) {
        snprintf(buf, cap, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, cap, "%ld:%02ld", t / 60, t % 60);
}

/* Bytes per second since the item started, not counting resumed bytes. */
static double item_rate(const item *it, double now) {
    double dt = now - it->start;
    return dt > 0.05 ? (double)(it->done - it->resumed_from) / dt : 0;
}

/* "12.3 MB / 45.6 MB, 3.2 MB/s, ETA 0:10" (or the end state). */
static void item_numbers(const item *it, double now, char *buf, size_t cap) {
    if (it->ended) now = it->end;
    char done[32], total[32], rate[32], eta[32];
    nc_format_bytes(it->done, done, sizeof done);
    nc_format_bytes(it->total, total, sizeof total);
    double r = item_rate(it, now);
    nc_format_bytes((int64_t)r, rate, sizeof rate);
    if (it->ended) {
        format_duration(now - it->start, eta, sizeof eta);
        snprintf(buf, cap, "%s%s%s in %s%s%s", it->total >= 0 ? total : done, it->note ? " " : "",
                 it->note ? it->note : "", eta, it->note ? "" : ", ", it->note ? "" : "done");
        return;
    }
    format_duration(r > 0 && it->total >= 0 ? (double)(it->total - it->done) / r : -1, eta, sizeof eta);
    if (it->total >= 0) snprintf(buf, cap, "%s/%s %s/s ETA %s", done, total, rate, eta);
    else snprintf(buf, cap, "%s %s/s", done, rate);
}

static int terminal_width(FILE *f) {
    struct winsize ws;
    if (ioctl(fileno(f), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40) return ws.ws_col;
    return 80;
}

static void draw_bars(nc_progress *p, double now) {
    int width = terminal_width(p->out) - 1;
    if (p->drawn_lines) fprintf(p->out, "\033[%dA", p->drawn_lines);
    for (int i = 0; i < p->n; i++) {
        const item *it = &p->items[i];
        char nums[160], line[512], bar[64];
        item_numbers(it, now, nums, sizeof nums);
        int bar_w = BAR_WIDTH;
        double frac = it->total > 0 ? (double)it->done / (double)it->total : (it->ended && !it->note ? 1 : 0);
        if (frac > 1) frac = 1;
        int fill = (int)(frac * bar_w);
        for (int k = 0; k < bar_w; k++) bar[k] = k < fill ? '#' : '.';
        bar[bar_w] = 0;
        int label_len = (int)strlen(it->label);
        const char *label = label_len > LABEL_WIDTH ? it->label + label_len - LABEL_WIDTH : it->label;
        snprintf(line, sizeof line, "%-*s [%s] %3d%% %s", LABEL_WIDTH, label, bar, (int)(frac * 100), nums);
        fprintf(p->out, "\r%.*s\033[K\n", width, line);
    }
    p->drawn_lines = p->n;
    p->last_draw = now;
    fflush(p->out);
}

static void print_line(nc_progress *p, item *it, double now, const char *what) {
    char nums[160];
    item_numbers(it, now, nums, sizeof nums);
    if (what) {
        char total[32];
        nc_format_bytes(it->total, total, sizeof total);
        fprintf(p->out, "%s: %s%s%s\n", it->label, what, it->total >= 0 ? " " : "", it->total >= 0 ? total : "");
    } else {
        int pct = it->total > 0 ? (int)(100.0 * (double)it->done / (double)it->total) : 0;
        if (it->ended) fprintf(p->out, "%s: %s\n", it->label, nums);
        else fprintf(p->out, "%s: %d%%, %s\n", it->label, pct, nums);
    }
    it->last_line = now;
    fflush(p->out);
}

int nc_progress_add(nc_progress *p, const char *label, int64_t total, int64_t done) {
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 8;
        p->items = nc_xrealloc(p->items, (size_t)p->cap * sizeof *p->items);
    }
    double now = nc_now();
    item *it = &p->items[p->n];
    *it = (item){.label = nc_xstrdup(label), .total = total, .done = done, .resumed_from = done, .start = now};
    if (p->mode == NC_PROGRESS_LINES) {
        char have[32];
        nc_format_bytes(done, have, sizeof have);
        if (done > 0) {
            char what[64];
            snprintf(what, sizeof what, "resuming at %s of", have);
            print_line(p, it, now, what);
        } else {
            print_line(p, it, now, "starting,");
        }
    }
    p->n++;
    if (p->mode == NC_PROGRESS_BARS) draw_bars(p, now);
    return p->n - 1;
}

void nc_progress_set(nc_progress *p, int id, int64_t done) {
    item *it = &p->items[id];
    it->done = done;
    double now;
    switch (p->mode) {
    case NC_PROGRESS_BARS:
        now = nc_now();
        if (now - p->last_draw >= REDRAW_SECONDS) draw_bars(p, now);
        break;
    case NC_PROGRESS_LINES:
        now = nc_now();
        if (now - it->last_line >= NC_PROGRESS_LINE_SECONDS) print_line(p, it, now, NULL);
        break;
    case NC_PROGRESS_OFF:
        break;
    }
}

void nc_progress_end(nc_progress *p, int id, const char *note) {
    item *it = &p->items[id];
    if (it->ended) return;
    double now = nc_now();
    it->ended = true;
    it->end = now;
    it->note = note;
    if (p->mode == NC_PROGRESS_BARS) draw_bars(p, now);
    else if (p->mode == NC_PROGRESS_LINES) print_line(p, it, now, NULL);
}

/*
 * progress.h: progress of long transfers on stderr (downloads, reading a
 * model's weights): one line per item, the way pip, huggingface_hub and
 * `ollama pull` show theirs.
 *
 *   NC_PROGRESS_BARS   a terminal: every item's line (name, bar, bytes done /
 *                      total, rate, ETA) redrawn in place, at most 10 times a
 *                      second
 *   NC_PROGRESS_LINES  a pipe or a file: one plain line when an item starts,
 *                      one every NC_PROGRESS_LINE_SECONDS while it runs, one
 *                      when it ends (nothing is redrawn, so logs stay clean)
 *   NC_PROGRESS_OFF    nothing (--quiet)
 *
 * Single-threaded: the caller updates from the thread that owns it.
 */
#ifndef NC_UTIL_PROGRESS_H
#define NC_UTIL_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define NC_PROGRESS_LINE_SECONDS 10.0

typedef enum { NC_PROGRESS_OFF, NC_PROGRESS_LINES, NC_PROGRESS_BARS } nc_progress_mode;

typedef struct nc_progress nc_progress;

/* The mode for stderr: OFF when quiet, BARS on a terminal, else LINES. */
nc_progress_mode nc_progress_mode_for_stderr(bool quiet);

/* A display writing to `out` (stderr normally). NC_PROGRESS_OFF is valid
 * and prints nothing, so callers need no special case. */
nc_progress *nc_progress_new(FILE *out, nc_progress_mode mode);
void nc_progress_free(nc_progress *p);

/* Starts an item: `label` (copied) and its total in bytes (-1: unknown);
 * `done` bytes are already there (a resumed download), and do not count
 * toward the rate. Returns the item's id. */
int nc_progress_add(nc_progress *p, const char *label, int64_t total, int64_t done);

/* Sets an item's bytes done; redraws when due. */
void nc_progress_set(nc_progress *p, int id, int64_t done);

/* Ends an item: `note` NULL for success ("done"), else a short reason
 * ("failed", "interrupted"). Draws its last state. */
void nc_progress_end(nc_progress *p, int id, const char *note);

/* "1.23 GB", "512 kB", "17 B" (decimal units, as the Hub shows sizes). */
void nc_format_bytes(int64_t n, char *buf, size_t cap);

#endif /* NC_UTIL_PROGRESS_H */

/*
 * hub_download.h: files of one commit into the cache, several at once.
 *
 * Each file goes to blobs/<etag>.incomplete, resumed with a Range request
 * when a previous run (or a dropped connection in this one) left part of
 * it; is checked against what the Hub says of it (the LFS sha256 in
 * X-Linked-Etag / ETag, else the size) before it is renamed to
 * blobs/<etag>; and only then linked from snapshots/<commit>/. So a file
 * that looks complete in the cache is complete. A failed checksum deletes
 * the partial file (resuming it could never succeed); anything else (no
 * space, Ctrl-C, a connection lost too often) keeps it for the next run.
 * The blob's lock file is held with flock() while it is written, as
 * huggingface_hub does, so a Python download of the same blob waits.
 */
#ifndef NC_HUB_HUB_DOWNLOAD_H
#define NC_HUB_HUB_DOWNLOAD_H

#include <signal.h>

#include "hub_api.h"
#include "hub_http.h"
#include "util/progress.h"

#define NC_HUB_PARALLEL_FILES 8 /* huggingface_hub's snapshot_download uses 8 workers too */

typedef struct {
    const nc_hub_http *http;
    const char *repo_id;
    const char *commit;
    const char *repo_dir;  /* <cache>/models--owner--name */
    const char *locks_dir; /* <cache>/.locks/models--owner--name */
    nc_progress *progress;
    volatile sig_atomic_t *interrupted; /* set (by a SIGINT handler) to stop, or NULL */
} nc_hub_fetch;

/* Makes snapshots/<commit>/<path> of every file present, downloading those
 * the cache lacks. Returns 0, or -1 with the first failure's message; a
 * stop by *interrupted fails with a message that says how to resume. */
int nc_hub_download(const nc_hub_fetch *f, const nc_hub_file *const *files, int n);

#endif /* NC_HUB_HUB_DOWNLOAD_H */

/*
 * hub_cache.h: huggingface_hub's cache layout, read and written so that a
 * model fetched by Python tools is used as it is, and ours is theirs:
 *
 *   <root>/models--OWNER--NAME/
 *       refs/<revision>                 the commit a branch or tag resolved to
 *       blobs/<etag>                    file contents, named by the Hub's ETag
 *                                       (sha256 of LFS files, git blob id of others)
 *       blobs/<etag>.incomplete         a download in progress (resumed from)
 *       snapshots/<commit>/<path>       relative symlinks to ../../blobs/<etag>
 *   <root>/.locks/models--OWNER--NAME/<etag>.lock   flock() while a blob is written
 *
 * The root is $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub,
 * else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub, as in
 * huggingface_hub's constants.py. "Last used" is the newest access time of
 * a repository's blobs, as its scan_cache_dir() reports it; using a cached
 * model refreshes it (nc_hub_cache_touch) even where the file system does
 * not record reads.
 */
#ifndef NC_HUB_HUB_CACHE_H
#define NC_HUB_HUB_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* snprintf for paths: fails (-1, nc_fail) instead of truncating. */
int nc_hub_pathf(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
int nc_hub_home(char *buf, size_t cap);

/* The cache root described above. */
int nc_hub_cache_root(char *buf, size_t cap);

/* "models--owner--name" for "owner/name". */
void nc_hub_repo_folder(const char *repo_id, char *buf, size_t cap);

/* The commit `revision` stands for in the cache of the repository at
 * repo_dir (a commit id stands for itself), into commit[41]. Returns 0 when
 * the cache has that commit's snapshot folder, 1 when it does not. */
int nc_hub_cache_commit(const char *repo_dir, const char *revision, char commit[41]);

/* Records refs/<revision> = commit (atomically; nothing for a commit id).
 * The snapshot folder must exist first: huggingface_hub reports a ref to a
 * missing snapshot as a corrupted cache. */
int nc_hub_cache_write_ref(const char *repo_dir, const char *revision, const char *commit);

/* Points snapshots/<commit>/<path> at blobs/<etag> with a relative symlink,
 * creating folders as needed and replacing what was there atomically. */
int nc_hub_cache_link(const char *repo_dir, const char *commit, const char *path, const char *etag);

/* Whether snapshots/<commit>/<path> leads to a regular file. */
bool nc_hub_cache_has_file(const char *repo_dir, const char *commit, const char *path);

/* Sets the access time of every file in folder `dir` (links followed, not
 * recursive) to now: the model there was just used. */
void nc_hub_cache_touch(const char *dir);

/* mkdir -p of `path` (mode 0755 before umask). */
int nc_hub_mkdirs(const char *path);

/* ==== what `nanochat list` and `nanochat rm` see (hub_cache_scan.c) ==== */

typedef struct {
    char commit[41];
    char refs[256];        /* its refs, comma-separated ("main, v1"), "" if detached */
    int64_t bytes;         /* sum of its files' sizes */
    int n_files;
    double last_modified;  /* newest blob mtime (s since the epoch) */
} nc_hub_cached_revision;

typedef struct {
    char repo_id[200];     /* "owner/name" */
    char *dir;             /* the repository's cache folder */
    nc_hub_cached_revision *revs;
    int n_revs;
    int64_t bytes;         /* blobs used by its snapshots, each counted once */
    int64_t partial_bytes; /* *.incomplete downloads waiting to be resumed */
    double last_used;      /* newest blob access time */
} nc_hub_cached_repo;

/* Every model repository in the cache at root, sorted by repo_id. A root
 * that does not exist yet is an empty cache. */
int nc_hub_cache_scan(const char *root, nc_hub_cached_repo **repos, int *n);
void nc_hub_cache_scan_free(nc_hub_cached_repo *repos, int n);

/* Removes repository repo_id from the cache, or only the snapshot of
 * `revision` (a ref or a commit), with its refs and the blobs no other
 * snapshot uses. *freed = bytes of blobs removed. Fails, naming what is
 * cached, when there is nothing to remove. */
int nc_hub_cache_remove(const char *root, const char *repo_id, const char *revision, int64_t *freed);

#endif /* NC_HUB_HUB_CACHE_H */

/*
 * hub_api.h: one question to the Hub's API: what does revision R of
 * repository O/N hold?
 *
 *   GET {endpoint}/api/models/{owner}/{name}/revision/{revision}?blobs=true
 *   -> {"sha": "<commit>", "siblings": [{"rfilename": "model_000650.pt",
 *       "size": 2076, "blobId": "<git blob id>",
 *       "lfs": {"sha256": "<sha256>", "size": 2076, "pointerSize": 135}}, ...]}
 *
 * (huggingface_hub's HfApi.model_info(files_metadata=True)). Each file's
 * blob name in the cache is its ETag: the LFS sha256 for LFS files, the git
 * blob id for the others, which is what the resolve URL's X-Linked-Etag /
 * ETag headers carry too.
 */
#ifndef NC_HUB_HUB_API_H
#define NC_HUB_HUB_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hub_http.h"
#include "hub_ref.h"

typedef struct {
    char *path;     /* relative to the repository root; nc_hub_path_is_safe */
    int64_t size;   /* bytes */
    char etag[65];  /* sha256 (LFS) or git blob id: the blob's name */
    bool lfs;       /* etag is the content's sha256 */
} nc_hub_file;

typedef struct {
    char commit[41];
    nc_hub_file *files;
    int n_files;
    int n_unsafe; /* entries dropped: paths that would leave the snapshot folder */
} nc_hub_listing;

/* Parses the API's answer. Entries whose path is unsafe (absolute, "..",
 * control characters) or that lack a size and a blob id are left out and
 * counted in n_unsafe; a missing or malformed "sha" is an error. */
int nc_hub_listing_parse(const char *json, size_t len, nc_hub_listing *out);
void nc_hub_listing_free(nc_hub_listing *l);

/* The file of the listing with that path, or NULL. */
const nc_hub_file *nc_hub_listing_find(const nc_hub_listing *l, const char *path);

/* Asks the Hub. Returns 0, or -1 with a message; *unreachable tells
 * whether the Hub could not be reached at all (the caller may fall back
 * to the cache). */
int nc_hub_listing_fetch(const nc_hub_http *s, const nc_hub_ref *ref, nc_hub_listing *out, bool *unreachable);

#endif /* NC_HUB_HUB_API_H */

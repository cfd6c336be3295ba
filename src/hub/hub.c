/* hub.c: hf: references -> local snapshot folders (hub.h). */
#include "hub.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "hub_api.h"
#include "hub_cache.h"
#include "hub_download.h"
#include "hub_select.h"
#include "util/common.h"
#include "util/mmap_file.h"

#define MAX_INDEX_BYTES ((size_t)64 << 20)

bool nc_hub_offline(void) {
    const char *names[] = {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"};
    for (size_t i = 0; i < NC_ARRAY_LEN(names); i++) {
        const char *v = getenv(names[i]);
        if (v && (!strcasecmp(v, "1") || !strcasecmp(v, "on") || !strcasecmp(v, "yes") || !strcasecmp(v, "true")))
            return true;
    }
    return false;
}

typedef struct {
    nc_hub_ref ref;
    char label[1400];
    char root[PATH_MAX], repo_dir[PATH_MAX], locks_dir[PATH_MAX];
} place;

static int set_dir(const place *p, const char *commit, nc_hub_result *out) {
    int n = snprintf(out->dir, sizeof out->dir, "%s/snapshots/%s%s%s", p->repo_dir, commit, p->ref.subdir[0] ? "/" : "",
                     p->ref.subdir);
    if (n < 0 || (size_t)n >= sizeof out->dir) return nc_fail("%s: the cache path is too long", p->label);
    snprintf(out->commit, sizeof out->commit, "%s", commit);
    return 0;
}

/* The cached snapshot of the revision, without asking the Hub. */
static int from_cache(const place *p, const char *why, bool quiet, nc_hub_result *out) {
    char commit[41];
    if (nc_hub_cache_commit(p->repo_dir, p->ref.revision, commit) != 0)
        return nc_fail("%s; %s is not in the cache %s either (fetch it once online: nanochat pull %s)", why, p->label,
                       p->root, p->label);
    if (set_dir(p, commit, out)) return -1;
    struct stat st;
    if (stat(out->dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return nc_fail("%s; the cached snapshot %.12s of %s has no folder %s", why, commit, p->label, p->ref.subdir);
    out->from_cache_only = true;
    if (!quiet) fprintf(stderr, "nanochat: %s; using the cached %s (commit %.12s)\n", why, p->label, commit);
    nc_hub_cache_touch(out->dir);
    return 0;
}

static int download_paths(const nc_hub_fetch *f, const nc_hub_listing *l, char *const *paths, int n) {
    const nc_hub_file **files = nc_xcalloc((size_t)(n ? n : 1), sizeof *files);
    for (int i = 0; i < n; i++) files[i] = nc_hub_listing_find(l, paths[i]); /* selected from l: never NULL */
    int rc = nc_hub_download(f, files, n);
    free(files);
    return rc;
}

/* Selection, then the downloads (two rounds for a sharded model: the
 * index says which shards to fetch). */
static int fetch_model(const place *p, const nc_hub_http *http, const nc_hub_listing *l, const nc_hub_options *o,
                       nc_hub_result *out) {
    nc_hub_select_options so = {.subdir = p->ref.subdir, .step = o->step, .source = o->source, .tag = o->tag};
    nc_hub_selection sel;
    if (nc_hub_select(l, p->label, &so, &sel)) return -1;
    char snap[PATH_MAX];
    nc_hub_pathf(snap, sizeof snap, "%s/snapshots/%s", p->repo_dir, l->commit);
    int rc = nc_hub_mkdirs(snap) || nc_hub_cache_write_ref(p->repo_dir, p->ref.revision, l->commit) ? -1 : 0;
    nc_progress *prog = nc_progress_new(stderr, nc_progress_mode_for_stderr(o->quiet));
    nc_hub_fetch f = {.http = http, .repo_id = p->ref.repo_id, .commit = l->commit, .repo_dir = p->repo_dir,
                      .locks_dir = p->locks_dir, .progress = prog, .interrupted = o->interrupted};
    if (!rc && o->tokenizer_only) {
        if (!sel.tokenizer) rc = nc_fail("%s has no tokenizer file beside its model", p->label);
        else rc = download_paths(&f, l, &sel.tokenizer, 1);
    } else if (!rc) {
        rc = download_paths(&f, l, sel.paths, sel.n);
        if (!rc && sel.index) {
            char index[PATH_MAX];
            nc_hub_pathf(index, sizeof index, "%s/%s", snap, sel.index);
            size_t len;
            char *text = nc_read_file(index, MAX_INDEX_BYTES, &len);
            int first = sel.n;
            rc = !text || nc_hub_select_shards(l, text, len, &sel) ? -1 : 0;
            free(text);
            if (!rc) rc = download_paths(&f, l, sel.paths + first, sel.n - first);
        }
    }
    nc_progress_free(prog);
    if (!rc) rc = set_dir(p, l->commit, out);
    if (!rc && sel.tokenizer) nc_hub_pathf(out->tokenizer, sizeof out->tokenizer, "%s/%s", snap, sel.tokenizer);
    if (!rc) nc_hub_cache_touch(out->dir);
    nc_hub_selection_free(&sel);
    return rc;
}

int nc_hub_resolve(const char *spec, const nc_hub_options *o, nc_hub_result *out) {
    memset(out, 0, sizeof *out);
    place p;
    if (nc_hub_ref_parse(spec, &p.ref) || nc_hub_cache_root(p.root, sizeof p.root)) return -1;
    nc_hub_ref_format(&p.ref, p.label, sizeof p.label);
    char folder[300];
    nc_hub_repo_folder(p.ref.repo_id, folder, sizeof folder);
    nc_hub_pathf(p.repo_dir, sizeof p.repo_dir, "%s/%s", p.root, folder);
    nc_hub_pathf(p.locks_dir, sizeof p.locks_dir, "%s/.locks/%s", p.root, folder);
    if (nc_hub_offline()) return from_cache(&p, "HF_HUB_OFFLINE is set", o->quiet, out);

    nc_hub_http http;
    if (nc_hub_http_init(&http)) return -1;
    nc_hub_listing l;
    bool unreachable;
    if (nc_hub_listing_fetch(&http, &p.ref, &l, &unreachable)) {
        if (!unreachable) return -1;
        char why[NC_ERROR_MAX];
        snprintf(why, sizeof why, "%s", nc_error());
        return from_cache(&p, why, o->quiet, out);
    }
    if (l.n_unsafe && !o->quiet)
        fprintf(stderr, "nanochat: %s: ignored %d listed file%s without a safe name, a size or a checksum\n", p.label,
                l.n_unsafe, l.n_unsafe == 1 ? "" : "s");
    int rc = fetch_model(&p, &http, &l, o, out);
    nc_hub_listing_free(&l);
    return rc;
}

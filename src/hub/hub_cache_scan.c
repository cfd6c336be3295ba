/*
 * hub_cache_scan.c: what the cache holds, and removing it (hub_cache.h):
 * the counterpart of huggingface_hub's scan_cache_dir() and
 * delete_revisions(), for `nanochat list` and `nanochat rm`.
 *
 * A repository's revisions are its snapshot folders; a revision's files are
 * the links under it (followed to their blobs); its refs are the files
 * under refs/ naming that commit. Sizes count each blob once per repository.
 */
#include "hub_cache.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hub_ref.h"
#include "util/common.h"

/* The blobs a repository's snapshots use (device + inode, deduplicated). */
typedef struct {
    struct {
        dev_t dev;
        ino_t ino;
        int64_t size;
        double atime, mtime;
    } *v;
    int n, cap;
} blob_set;

static bool blob_set_add(blob_set *s, const struct stat *st) {
    for (int i = 0; i < s->n; i++)
        if (s->v[i].dev == st->st_dev && s->v[i].ino == st->st_ino) return false;
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->v = nc_xrealloc(s->v, (size_t)s->cap * sizeof *s->v);
    }
    s->v[s->n].dev = st->st_dev;
    s->v[s->n].ino = st->st_ino;
    s->v[s->n].size = (int64_t)st->st_size;
    s->v[s->n].atime = (double)st->st_atim.tv_sec + 1e-9 * (double)st->st_atim.tv_nsec;
    s->v[s->n].mtime = (double)st->st_mtim.tv_sec + 1e-9 * (double)st->st_mtim.tv_nsec;
    s->n++;
    return true;
}

/* Walks the files under dir (a snapshot), adding their blobs to `all` and
 * to the revision's counts. Depth-limited: snapshot trees are shallow. */
static void walk_snapshot(const char *dir, int depth, nc_hub_cached_revision *rev, blob_set *all) {
    DIR *d = opendir(dir);
    if (!d || depth > 32) {
        if (d) closedir(d);
        return;
    }
    for (struct dirent *e; (e = readdir(d));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p) continue;
        struct stat st;
        if (stat(p, &st) != 0) continue; /* a dangling link: its blob is gone */
        if (S_ISDIR(st.st_mode)) {
            walk_snapshot(p, depth + 1, rev, all);
        } else if (S_ISREG(st.st_mode)) {
            rev->n_files++;
            rev->bytes += (int64_t)st.st_size;
            double mtime = (double)st.st_mtim.tv_sec + 1e-9 * (double)st.st_mtim.tv_nsec;
            if (mtime > rev->last_modified) rev->last_modified = mtime;
            blob_set_add(all, &st);
        }
    }
    closedir(d);
}

/* Calls fn(name, path, commit) for every ref under refs_dir, recursively
 * ("refs/pr/1" has the name "pr/1"); commit is the ref's content, trimmed. */
typedef void ref_fn(const char *name, const char *path, const char *commit, void *user);

static void walk_refs(const char *refs_dir, const char *prefix, int depth, ref_fn *fn, void *user) {
    DIR *d = opendir(refs_dir);
    if (!d || depth > 8) {
        if (d) closedir(d);
        return;
    }
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char p[PATH_MAX], name[300];
        if (nc_hub_pathf(p, sizeof p, "%s/%s", refs_dir, e->d_name) ||
            nc_hub_pathf(name, sizeof name, "%s%s", prefix, e->d_name))
            continue;
        struct stat st;
        if (stat(p, &st) != 0) continue;
        if (S_ISDIR(st.st_mode)) {
            char sub[300];
            if (!nc_hub_pathf(sub, sizeof sub, "%s/", name)) walk_refs(p, sub, depth + 1, fn, user);
            continue;
        }
        FILE *f = fopen(p, "r");
        if (!f) continue;
        char buf[64] = "";
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        buf[strcspn(buf, "\r\n ")] = 0;
        fn(name, p, buf, user);
    }
    closedir(d);
}

/* Appends the ref's name to rev->refs when it names rev->commit. */
static void add_ref(const char *name, const char *path, const char *commit, void *user) {
    nc_hub_cached_revision *rev = user;
    if (strcmp(commit, rev->commit)) return;
    size_t used = strlen(rev->refs);
    snprintf(rev->refs + used, sizeof rev->refs - used, "%s%s", used ? ", " : "", name);
}

/* Bytes of *.incomplete files in blobs/. */
static int64_t partial_bytes(const char *repo_dir) {
    char blobs[PATH_MAX];
    nc_hub_pathf(blobs, sizeof blobs, "%s/blobs", repo_dir);
    DIR *d = opendir(blobs);
    if (!d) return 0;
    int64_t total = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n <= 11 || strcmp(e->d_name + n - 11, ".incomplete")) continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, 0) == 0) total += (int64_t)st.st_size;
    }
    closedir(d);
    return total;
}

static void scan_repo(nc_hub_cached_repo *r) {
    char snaps[PATH_MAX], refs[PATH_MAX];
    snprintf(snaps, sizeof snaps, "%s/snapshots", r->dir);
    snprintf(refs, sizeof refs, "%s/refs", r->dir);
    blob_set all = {0};
    DIR *d = opendir(snaps);
    int cap = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        if (!nc_hub_is_commit(e->d_name)) continue;
        if (r->n_revs == cap) {
            cap = cap ? 2 * cap : 4;
            r->revs = nc_xrealloc(r->revs, (size_t)cap * sizeof *r->revs);
        }
        nc_hub_cached_revision *rev = &r->revs[r->n_revs++];
        memset(rev, 0, sizeof *rev);
        nc_hub_pathf(rev->commit, sizeof rev->commit, "%s", e->d_name);
        char p[PATH_MAX];
        nc_hub_pathf(p, sizeof p, "%s/%s", snaps, e->d_name);
        walk_snapshot(p, 0, rev, &all);
        walk_refs(refs, "", 0, add_ref, rev);
    }
    if (d) closedir(d);
    for (int i = 0; i < all.n; i++) {
        r->bytes += all.v[i].size;
        if (all.v[i].atime > r->last_used) r->last_used = all.v[i].atime;
    }
    free(all.v);
    r->partial_bytes = partial_bytes(r->dir);
}

static int cmp_repo(const void *a, const void *b) {
    return strcmp(((const nc_hub_cached_repo *)a)->repo_id, ((const nc_hub_cached_repo *)b)->repo_id);
}

int nc_hub_cache_scan(const char *root, nc_hub_cached_repo **repos, int *n) {
    *repos = NULL;
    *n = 0;
    DIR *d = opendir(root);
    if (!d) return errno == ENOENT ? 0 : nc_fail("cannot read the cache %s: %s", root, strerror(errno));
    int cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        /* models--owner--name; owner and name never hold "--" (hub_ref.c) */
        if (strncmp(e->d_name, "models--", 8)) continue;
        const char *owner = e->d_name + 8, *sep = strstr(owner, "--");
        if (!sep || strstr(sep + 2, "--")) continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            *repos = nc_xrealloc(*repos, (size_t)cap * sizeof **repos);
        }
        nc_hub_cached_repo *r = &(*repos)[(*n)++];
        memset(r, 0, sizeof *r);
        snprintf(r->repo_id, sizeof r->repo_id, "%.*s/%s", (int)(sep - owner), owner, sep + 2);
        size_t len = strlen(root) + strlen(e->d_name) + 2;
        r->dir = nc_xmalloc(len);
        snprintf(r->dir, len, "%s/%s", root, e->d_name);
        scan_repo(r);
    }
    closedir(d);
    qsort(*repos, (size_t)*n, sizeof **repos, cmp_repo);
    return 0;
}

void nc_hub_cache_scan_free(nc_hub_cached_repo *repos, int n) {
    for (int i = 0; i < n; i++) {
        free(repos[i].dir);
        free(repos[i].revs);
    }
    free(repos);
}

/* ==== removal ==== */

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st, (void)type, (void)ftw;
    if (remove(path) != 0 && errno != ENOENT) nc_fail("cannot remove %s: %s", path, strerror(errno));
    return 0;
}

/* rm -rf; errors are recorded but removal goes on. */
static void remove_tree(const char *path) { nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* Removes a ref that names the commit in `user`. */
static void remove_ref(const char *name, const char *path, const char *commit, void *user) {
    if (!strcmp(commit, (const char *)user)) unlink(path);
}

/* Removes the blobs of repo_dir that no snapshot uses; returns their bytes. */
static int64_t remove_unused_blobs(const char *repo_dir) {
    char snaps[PATH_MAX], blobs[PATH_MAX];
    nc_hub_pathf(snaps, sizeof snaps, "%s/snapshots", repo_dir);
    nc_hub_pathf(blobs, sizeof blobs, "%s/blobs", repo_dir);
    blob_set used = {0};
    nc_hub_cached_revision scratch;
    DIR *d = opendir(snaps);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char p[PATH_MAX];
        nc_hub_pathf(p, sizeof p, "%s/%s", snaps, e->d_name);
        memset(&scratch, 0, sizeof scratch);
        walk_snapshot(p, 0, &scratch, &used);
    }
    if (d) closedir(d);
    int64_t freed = 0;
    d = opendir(blobs);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, 0) != 0 || !S_ISREG(st.st_mode)) continue;
        bool in_use = false;
        for (int i = 0; i < used.n && !in_use; i++) in_use = used.v[i].dev == st.st_dev && used.v[i].ino == st.st_ino;
        if (!in_use && unlinkat(dirfd(d), e->d_name, 0) == 0) freed += (int64_t)st.st_size;
    }
    if (d) closedir(d);
    free(used.v);
    return freed;
}

int nc_hub_cache_remove(const char *root, const char *repo_id, const char *revision, int64_t *freed) {
    *freed = 0;
    char folder[300], repo_dir[PATH_MAX];
    nc_hub_repo_folder(repo_id, folder, sizeof folder);
    snprintf(repo_dir, sizeof repo_dir, "%s/%s", root, folder);
    struct stat st;
    if (stat(repo_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return nc_fail("hf:%s is not in the cache %s (`nanochat list` shows what is)", repo_id, root);
    nc_fail("%s", "");
    if (!revision) {
        nc_hub_cached_repo r = {0};
        r.dir = repo_dir;
        scan_repo(&r);
        *freed = r.bytes + r.partial_bytes;
        free(r.revs);
        remove_tree(repo_dir);
        char locks[PATH_MAX];
        snprintf(locks, sizeof locks, "%s/.locks/%s", root, folder);
        remove_tree(locks);
    } else {
        char commit[41];
        if (nc_hub_cache_commit(repo_dir, revision, commit) != 0)
            return nc_fail("hf:%s@%s is not in the cache %s (`nanochat list` shows the revisions it has)", repo_id,
                           revision, root);
        char snap[PATH_MAX], refs[PATH_MAX];
        nc_hub_pathf(snap, sizeof snap, "%s/snapshots/%s", repo_dir, commit);
        nc_hub_pathf(refs, sizeof refs, "%s/refs", repo_dir);
        remove_tree(snap);
        walk_refs(refs, "", 0, remove_ref, commit);
        *freed = remove_unused_blobs(repo_dir);
    }
    return nc_error()[0] ? -1 : 0;
}

/* hub_cache.c: huggingface_hub's cache folders: root, refs, links (hub_cache.h). */
#include "hub_cache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hub_ref.h"
#include "util/common.h"

int nc_hub_pathf(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap) return nc_fail("path too long: %.200s...", buf);
    return 0;
}

/* `value` with a leading "~/" replaced by $HOME, as os.path.expanduser. */
static int expand_home(const char *value, const char *suffix, char *buf, size_t cap) {
    const char *home = getenv("HOME");
    int n;
    if (value[0] == '~' && (value[1] == '/' || value[1] == 0) && home && *home)
        n = snprintf(buf, cap, "%s%s%s", home, value + 1, suffix);
    else
        n = snprintf(buf, cap, "%s%s", value, suffix);
    if (n < 0 || (size_t)n >= cap) return nc_fail("cache path %s%s is too long", value, suffix);
    return 0;
}

static const char *env_nonempty(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int nc_hub_home(char *buf, size_t cap) {
    const char *v;
    if ((v = env_nonempty("HF_HOME"))) return expand_home(v, "", buf, cap);
    if ((v = env_nonempty("XDG_CACHE_HOME"))) return expand_home(v, "/huggingface", buf, cap);
    if (!env_nonempty("HOME")) return nc_fail("cannot place the Hugging Face cache: set HF_HOME (HOME is not set)");
    return expand_home("~/.cache/huggingface", "", buf, cap);
}

int nc_hub_cache_root(char *buf, size_t cap) {
    const char *v;
    if ((v = env_nonempty("HF_HUB_CACHE")) || (v = env_nonempty("HUGGINGFACE_HUB_CACHE")))
        return expand_home(v, "", buf, cap);
    char home[PATH_MAX];
    if (nc_hub_home(home, sizeof home)) return -1;
    return expand_home(home, "/hub", buf, cap);
}

void nc_hub_repo_folder(const char *repo_id, char *buf, size_t cap) {
    const char *slash = strchr(repo_id, '/');
    if (slash) snprintf(buf, cap, "models--%.*s--%s", (int)(slash - repo_id), repo_id, slash + 1);
    else snprintf(buf, cap, "models--%s", repo_id);
}

int nc_hub_mkdirs(const char *path) {
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) return nc_fail("path too long: %s", path);
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) return nc_fail("cannot create folder %s: %s", p, strerror(errno));
            *s = c;
            if (!c) break;
        }
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return nc_fail("%s exists but is not a folder", path);
    return 0;
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int nc_hub_cache_commit(const char *repo_dir, const char *revision, char commit[41]) {
    char path[PATH_MAX];
    commit[0] = 0;
    if (nc_hub_is_commit(revision)) {
        snprintf(commit, 41, "%s", revision);
    } else {
        snprintf(path, sizeof path, "%s/refs/%s", repo_dir, revision);
        FILE *f = fopen(path, "r");
        if (!f) return 1;
        char buf[64] = "";
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = 0;
        if (!nc_hub_is_commit(buf)) return 1;
        snprintf(commit, 41, "%s", buf);
    }
    snprintf(path, sizeof path, "%s/snapshots/%s", repo_dir, commit);
    return is_dir(path) ? 0 : 1;
}

/* Writes `text` to `path` through a temporary file and rename(). */
static int write_atomically(const char *path, const char *text) {
    char tmp[PATH_MAX];
    nc_hub_pathf(tmp, sizeof tmp, "%s.%ld.tmp", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return nc_fail("cannot write %s: %s", tmp, strerror(errno));
    bool ok = fputs(text, f) >= 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return nc_fail("cannot write %s: %s", path, strerror(e));
    }
    return 0;
}

int nc_hub_cache_write_ref(const char *repo_dir, const char *revision, const char *commit) {
    if (!strcmp(revision, commit)) return 0;
    char dir[PATH_MAX], path[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/refs", repo_dir);
    if (nc_hub_mkdirs(dir)) return -1;
    nc_hub_pathf(path, sizeof path, "%s/%s", dir, revision);
    char have[41];
    if (nc_hub_cache_commit(repo_dir, revision, have) == 0 && !strcmp(have, commit)) return 0;
    return write_atomically(path, commit); /* no newline, as huggingface_hub writes it */
}

int nc_hub_cache_link(const char *repo_dir, const char *commit, const char *path, const char *etag) {
    char link[PATH_MAX], target[PATH_MAX], tmp[PATH_MAX];
    int n = snprintf(link, sizeof link, "%s/snapshots/%s/%s", repo_dir, commit, path);
    if (n < 0 || (size_t)n >= sizeof link) return nc_fail("cache path too long for %s", path);
    char *slash = strrchr(link, '/');
    *slash = 0;
    if (nc_hub_mkdirs(link)) return -1;
    *slash = '/';
    /* snapshots/<commit>/a/b/file -> ../../../blobs/<etag>: one ".." per folder below the repo's */
    size_t len = 0;
    int depth = 2;
    for (const char *s = path; *s; s++) depth += *s == '/';
    for (int i = 0; i < depth; i++) len += (size_t)snprintf(target + len, sizeof target - len, "../");
    snprintf(target + len, sizeof target - len, "blobs/%s", etag);
    nc_hub_pathf(tmp, sizeof tmp, "%s.%ld.tmp", link, (long)getpid());
    unlink(tmp);
    if (symlink(target, tmp) != 0) return nc_fail("cannot create link %s: %s", tmp, strerror(errno));
    if (rename(tmp, link) != 0) {
        int e = errno;
        unlink(tmp);
        return nc_fail("cannot create link %s: %s", link, strerror(e));
    }
    return 0;
}

bool nc_hub_cache_has_file(const char *repo_dir, const char *commit, const char *path) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/snapshots/%s/%s", repo_dir, commit, path);
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

void nc_hub_cache_touch(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    const struct timespec times[2] = {{.tv_nsec = UTIME_NOW}, {.tv_nsec = UTIME_OMIT}};
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.') utimensat(dirfd(d), e->d_name, times, 0);
    closedir(d);
}

/*
 * hub_download.c: parallel, resumable, verified downloads into the cache
 * (hub_download.h), on libcurl's multi interface: one thread drives every
 * transfer, so progress, Ctrl-C and retries need no locking.
 *
 * A file's life: cached (linked already) | blob present (link it) | locked
 * -> partial file opened, its bytes hashed -> GET resolve/<commit>/<path>
 * with "Range: bytes=<have>-" (the Hub redirects LFS files to a CDN; curl
 * follows) -> bytes appended and hashed as they come -> at the end, sizes
 * and the sha256 checked -> fsync, rename to the blob, link. A transfer
 * that breaks off is retried from where it stopped, with a growing pause,
 * until MAX_ATTEMPTS tries in a row bring no new byte.
 */
#include "hub_download.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "hub_cache.h"
#include "util/common.h"

#define MAX_ATTEMPTS 6
#define FIRST_PAUSE_S 0.25
#define MAX_PAUSE_S 8.0

typedef enum { X_WAITING, X_RUNNING, X_DONE, X_FAILED } xfer_state;

typedef struct {
    const nc_hub_fetch *f;
    const nc_hub_file *file;
    char blob[PATH_MAX], part[PATH_MAX];
    int fd, lock_fd;
    int64_t have;       /* bytes in the partial file */
    int64_t req_start;  /* `have` when the current request started */
    bool checked;       /* the current response's status was looked at */
    bool discard;       /* the current response is an error: its body is not the file */
    int write_errno;    /* a failed write (ENOSPC...) */
    bool overlong;      /* more bytes than the file has */
    EVP_MD_CTX *sha;
    int attempts;
    double retry_at;
    CURL *c;
    nc_hub_headers h;
    int prog;
    xfer_state state;
} xfer;

/* ==== the partial file ==== */

static int hash_existing(xfer *x) {
    EVP_DigestInit_ex(x->sha, EVP_sha256(), NULL);
    if (!x->file->lfs || x->have == 0) return 0;
    char *buf = nc_xmalloc((size_t)1 << 20);
    int64_t off = 0;
    while (off < x->have) {
        ssize_t k = pread(x->fd, buf, (size_t)NC_MIN((int64_t)1 << 20, x->have - off), off);
        if (k <= 0) {
            free(buf);
            return nc_fail("cannot read %s: %s", x->part, k < 0 ? strerror(errno) : "file shrank");
        }
        EVP_DigestUpdate(x->sha, buf, (size_t)k);
        off += k;
    }
    free(buf);
    return 0;
}

static int restart_from_zero(xfer *x) {
    if (ftruncate(x->fd, 0) != 0) return nc_fail("cannot truncate %s: %s", x->part, strerror(errno));
    x->have = 0;
    EVP_DigestInit_ex(x->sha, EVP_sha256(), NULL);
    return 0;
}

/* Takes the blob's lock and opens its partial file. 1 = the blob appeared
 * meanwhile (another process finished it), 0 = ready, -1 = error. */
static int xfer_open(xfer *x) {
    char lock[PATH_MAX];
    snprintf(lock, sizeof lock, "%s/%s.lock", x->f->locks_dir, x->file->etag);
    x->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (x->lock_fd < 0) return nc_fail("cannot create lock file %s: %s", lock, strerror(errno));
    if (flock(x->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr, "nanochat: waiting for another process that is downloading %s\n", x->file->path);
        if (flock(x->lock_fd, LOCK_EX) != 0) return nc_fail("cannot lock %s: %s", lock, strerror(errno));
    }
    struct stat st;
    if (stat(x->blob, &st) == 0 && S_ISREG(st.st_mode) && (int64_t)st.st_size == x->file->size) return 1;
    x->fd = open(x->part, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (x->fd < 0) return nc_fail("cannot create %s: %s", x->part, strerror(errno));
    if (fstat(x->fd, &st) != 0) return nc_fail("cannot stat %s: %s", x->part, strerror(errno));
    x->have = (int64_t)st.st_size;
    x->sha = EVP_MD_CTX_new();
    if (x->have > x->file->size) return restart_from_zero(x);
    return hash_existing(x);
}

static void xfer_close(xfer *x) {
    if (x->fd >= 0) close(x->fd);
    if (x->lock_fd >= 0) close(x->lock_fd); /* releases the flock */
    EVP_MD_CTX_free(x->sha);
    x->fd = x->lock_fd = -1;
    x->sha = NULL;
}

/* Checks the finished partial file and moves it into the cache. */
static int xfer_finish(xfer *x) {
    const nc_hub_file *f = x->file;
    if (x->h.etag[0] && strcmp(x->h.etag, f->etag))
        return nc_fail("%s: the Hub's ETag %s differs from its file list's %s (was the repository changed "
                       "meanwhile?); run again", f->path, x->h.etag, f->etag);
    if (x->have != f->size)
        return nc_fail("%s: got %lld bytes, the Hub lists %lld", f->path, (long long)x->have, (long long)f->size);
    if (f->lfs) {
        unsigned char md[32];
        unsigned int md_len = 0;
        EVP_DigestFinal_ex(x->sha, md, &md_len);
        char hex[65];
        for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
        if (strcmp(hex, f->etag)) {
            unlink(x->part);
            return nc_fail("%s: checksum mismatch (sha256 %s, the Hub says %s); the download was discarded, "
                           "nothing was cached", f->path, hex, f->etag);
        }
    }
    if (fsync(x->fd) != 0) return nc_fail("cannot write %s: %s", x->part, strerror(errno));
    if (rename(x->part, x->blob) != 0) return nc_fail("cannot move %s into the cache: %s", x->part, strerror(errno));
    return nc_hub_cache_link(x->f->repo_dir, x->f->commit, f->path, f->etag);
}

/* ==== libcurl callbacks ==== */

static size_t on_data(char *data, size_t size, size_t n, void *user) {
    xfer *x = user;
    size_t k = size * n;
    if (!x->checked) {
        x->checked = true;
        long status = 0;
        curl_easy_getinfo(x->c, CURLINFO_RESPONSE_CODE, &status);
        x->discard = status != 200 && status != 206;
        if (status == 206 && x->h.range_start != x->have) {
            restart_from_zero(x); /* not the part we asked for: the retry starts over */
            return 0;
        }
        if (status == 200 && x->have > 0 && restart_from_zero(x)) return 0;
    }
    if (x->discard) return k;
    if (x->have + (int64_t)k > x->file->size) {
        x->overlong = true;
        return 0;
    }
    for (size_t off = 0; off < k;) {
        ssize_t w = pwrite(x->fd, data + off, k - off, x->have + (int64_t)off);
        if (w < 0) {
            if (errno == EINTR) continue;
            x->write_errno = errno;
            return 0;
        }
        off += (size_t)w;
    }
    if (x->file->lfs) EVP_DigestUpdate(x->sha, data, k);
    x->have += (int64_t)k;
    return k;
}

static int on_progress(void *user, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    const xfer *x = user;
    return x->f->interrupted && *x->f->interrupted ? 1 : 0;
}

/* ".../resolve/<commit>/<path>" with each path component escaped. */
static void resolve_url(const xfer *x, char *url, size_t cap) {
    size_t used = (size_t)snprintf(url, cap, "%s/%s/resolve/%s/", x->f->http->endpoint, x->f->repo_id, x->f->commit);
    const char *p = x->file->path;
    while (*p && used < cap) {
        size_t n = strcspn(p, "/");
        char *e = curl_easy_escape(NULL, p, (int)n);
        used += (size_t)snprintf(url + used, cap - used, "%s%s", e ? e : "", p[n] ? "/" : "");
        curl_free(e);
        p += n + (p[n] ? 1 : 0);
    }
}

static int xfer_start(xfer *x, CURLM *m) {
    char url[4096], range[64];
    resolve_url(x, url, sizeof url);
    x->c = curl_easy_init();
    if (!x->c) return nc_fail("libcurl: cannot create a handle");
    nc_hub_headers_init(&x->h);
    nc_hub_http_setup(x->f->http, x->c, url, &x->h);
    curl_easy_setopt(x->c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(x->c, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(x->c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(x->c, CURLOPT_XFERINFODATA, x);
    curl_easy_setopt(x->c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(x->c, CURLOPT_PRIVATE, x);
    if (x->have > 0) {
        snprintf(range, sizeof range, "%lld-", (long long)x->have);
        curl_easy_setopt(x->c, CURLOPT_RANGE, range);
    }
    x->checked = x->discard = x->overlong = false;
    x->write_errno = 0;
    x->req_start = x->have;
    x->state = X_RUNNING;
    if (curl_multi_add_handle(m, x->c) != CURLM_OK) return nc_fail("libcurl: cannot start a transfer");
    return 0;
}

/* A finished request: 0 = file complete and cached, 1 = retry later,
 * -1 = failed for good (message set). */
static int xfer_done(xfer *x, CURLcode rc, double now) {
    const nc_hub_file *f = x->file;
    char kept[32];
    nc_format_bytes(x->have, kept, sizeof kept);
    if (x->write_errno) {
        bool full = x->write_errno == ENOSPC || x->write_errno == EDQUOT || x->write_errno == EFBIG;
        return nc_fail("%s writing %s: %s; %s kept in %s for the next run to resume", full ? "no space left" : "error",
                       f->path, strerror(x->write_errno), kept, x->part);
    }
    if (rc == CURLE_ABORTED_BY_CALLBACK)
        return nc_fail("interrupted; %s of %s kept: run the same command again to resume", kept, f->path);
    if (x->overlong) {
        restart_from_zero(x);
        return nc_fail("%s: the server sent more than the %lld bytes the Hub lists", f->path, (long long)f->size);
    }
    long status = x->h.status;
    if (rc == CURLE_OK && x->discard) {
        if (status == 416 && x->have == f->size) return xfer_finish(x);
        if (status == 416) restart_from_zero(x); /* our partial file is not a prefix of theirs */
        else if (status < 500 && status != 429) return nc_hub_http_fail(x->f->http, &x->h, x->f->repo_id, x->f->commit, f->path);
    } else if (rc == CURLE_OK && x->have == f->size) {
        return xfer_finish(x);
    }
    /* a dropped connection, a stall, a short body or a server error: try again from `have` */
    if (x->have > x->req_start) x->attempts = 0;
    if (++x->attempts >= MAX_ATTEMPTS)
        return nc_fail("%s: download failed %d times in a row (%s); %s kept: run again to resume", f->path,
                       MAX_ATTEMPTS, rc != CURLE_OK ? curl_easy_strerror(rc) : "server error", kept);
    double pause = FIRST_PAUSE_S;
    for (int i = 1; i < x->attempts && pause < MAX_PAUSE_S; i++) pause *= 2;
    x->retry_at = now + NC_MIN(pause, MAX_PAUSE_S);
    return 1;
}

/* ==== the loop ==== */

static int run_transfers(const nc_hub_fetch *f, xfer *xs, int n) {
    CURLM *m = curl_multi_init();
    if (!m) return nc_fail("libcurl: cannot create a multi handle");
    int running = 0, rc = 0;
    char first_error[NC_ERROR_MAX] = "";
    for (;;) {
        double now = nc_now();
        bool interrupted = f->interrupted && *f->interrupted;
        bool pending = false;
        for (int i = 0; i < n && !first_error[0] && !interrupted; i++) {
            xfer *x = &xs[i];
            if (x->state != X_WAITING) continue;
            pending = true;
            if (running >= NC_HUB_PARALLEL_FILES || x->retry_at > now) continue;
            if (xfer_start(x, m)) {
                snprintf(first_error, sizeof first_error, "%s", nc_error());
                break;
            }
            running++;
        }
        if (running == 0 && (!pending || first_error[0] || interrupted)) break;
        int still;
        curl_multi_perform(m, &still);
        for (CURLMsg *msg; (msg = curl_multi_info_read(m, &still));) {
            if (msg->msg != CURLMSG_DONE) continue;
            xfer *x;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            CURLcode cc = msg->data.result;
            curl_multi_remove_handle(m, x->c);
            curl_easy_cleanup(x->c);
            x->c = NULL;
            running--;
            int r = xfer_done(x, cc, nc_now());
            nc_progress_set(f->progress, x->prog, x->have);
            if (r == 1) {
                x->state = X_WAITING;
                continue;
            }
            x->state = r == 0 ? X_DONE : X_FAILED;
            nc_progress_end(f->progress, x->prog, r == 0 ? NULL : cc == CURLE_ABORTED_BY_CALLBACK ? "interrupted" : "failed");
            if (r < 0 && !first_error[0]) snprintf(first_error, sizeof first_error, "%s", nc_error());
            xfer_close(x);
        }
        /* stop the others at the first failure (their partial files stay) */
        if (first_error[0] || interrupted)
            for (int i = 0; i < n; i++)
                if (xs[i].state == X_RUNNING) {
                    curl_multi_remove_handle(m, xs[i].c);
                    curl_easy_cleanup(xs[i].c);
                    xs[i].c = NULL;
                    xs[i].state = X_FAILED;
                    nc_progress_end(f->progress, xs[i].prog, interrupted ? "interrupted" : "stopped");
                    running--;
                }
        for (int i = 0; i < n; i++)
            if (xs[i].state == X_RUNNING) nc_progress_set(f->progress, xs[i].prog, xs[i].have);
        if (running > 0 || pending) curl_multi_poll(m, NULL, 0, 100, NULL);
        if (interrupted && !first_error[0]) snprintf(first_error, sizeof first_error, "interrupted; partial files kept: run the same command again to resume");
    }
    curl_multi_cleanup(m);
    if (first_error[0]) rc = nc_fail("%s", first_error);
    return rc;
}

/* Fails early when the cache's file system cannot hold what is left to download. */
static int check_space(const char *blobs, const xfer *xs, int n) {
    int64_t need = 0;
    for (int i = 0; i < n; i++) need += xs[i].file->size - xs[i].have;
    struct statvfs vfs;
    if (statvfs(blobs, &vfs) != 0) return 0; /* unknown: the writes will tell */
    int64_t avail = (int64_t)vfs.f_bavail * (int64_t)vfs.f_frsize;
    if (need <= avail) return 0;
    char a[32], b[32];
    nc_format_bytes(need, a, sizeof a);
    nc_format_bytes(avail, b, sizeof b);
    return nc_fail("no space left for the download: it needs %s more and %s has %s free (`nanochat list` and "
                   "`nanochat rm` show and free what the cache holds)", a, blobs, b);
}

int nc_hub_download(const nc_hub_fetch *f, const nc_hub_file *const *files, int n) {
    char blobs[PATH_MAX];
    snprintf(blobs, sizeof blobs, "%s/blobs", f->repo_dir);
    xfer *xs = nc_xcalloc((size_t)(n ? n : 1), sizeof *xs);
    int rc = 0, todo = 0;
    for (int i = 0; i < n && !rc; i++) {
        const nc_hub_file *file = files[i];
        if (nc_hub_cache_has_file(f->repo_dir, f->commit, file->path)) continue;
        if (!todo && (nc_hub_mkdirs(blobs) || nc_hub_mkdirs(f->locks_dir))) {
            rc = -1;
            break;
        }
        xfer *x = &xs[todo];
        *x = (xfer){.f = f, .file = file, .fd = -1, .lock_fd = -1, .state = X_WAITING};
        nc_hub_pathf(x->blob, sizeof x->blob, "%s/%s", blobs, file->etag);
        nc_hub_pathf(x->part, sizeof x->part, "%s.incomplete", x->blob);
        int r = xfer_open(x);
        if (r == 0 && x->have == file->size) r = xfer_finish(x) ? -1 : 2; /* a previous run got every byte */
        if (r == 1) rc = nc_hub_cache_link(f->repo_dir, f->commit, file->path, file->etag);
        if (r >= 1) {
            xfer_close(x);
            continue;
        }
        if (r < 0) {
            xfer_close(x);
            rc = -1;
            break;
        }
        todo++;
    }
    if (!rc && todo) rc = check_space(blobs, xs, todo);
    for (int i = 0; i < todo && !rc; i++) xs[i].prog = nc_progress_add(f->progress, xs[i].file->path, xs[i].file->size, xs[i].have);
    if (!rc && todo) rc = run_transfers(f, xs, todo);
    for (int i = 0; i < todo; i++) {
        if (xs[i].c) curl_easy_cleanup(xs[i].c);
        xfer_close(&xs[i]);
    }
    free(xs);
    return rc;
}

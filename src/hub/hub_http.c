/* hub_http.c: libcurl set up the way the Hub expects, and its headers (hub_http.h). */
#include "hub_http.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "hub_cache.h"
#include "util/common.h"

#define CONNECT_TIMEOUT_S 15
#define STALL_SECONDS 30

void nc_hub_headers_init(nc_hub_headers *h) {
    memset(h, 0, sizeof *h);
    h->linked_size = -1;
    h->range_start = -1;
}

/* Copies a header value, trimmed, into dst; drops non-printable bytes. */
static void copy_value(char *dst, size_t cap, const char *v, size_t n) {
    while (n > 0 && (*v == ' ' || *v == '\t')) v++, n--;
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' || v[n - 1] == '\n')) n--;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++)
        if (v[i] >= 0x20 && v[i] < 0x7f) dst[o++] = v[i];
    dst[o] = 0;
}

/* ETag "W/\"abc\"" or "\"abc\"" -> "abc", as huggingface_hub's _normalize_etag. */
static void normalize_etag(char *dst, size_t cap, const char *v, size_t n) {
    char tmp[128];
    copy_value(tmp, sizeof tmp, v, n);
    const char *s = tmp;
    if (!strncmp(s, "W/", 2)) s += 2;
    while (*s == '"') s++;
    size_t len = strlen(s);
    while (len > 0 && s[len - 1] == '"') len--;
    snprintf(dst, cap, "%.*s", (int)len, s);
}

static int64_t parse_int64(const char *v, size_t n) {
    char buf[32];
    copy_value(buf, sizeof buf, v, n);
    if (!buf[0]) return -1;
    int64_t x = 0;
    for (const char *p = buf; *p; p++) {
        if (*p < '0' || *p > '9' || x > (INT64_MAX - 9) / 10) return -1;
        x = x * 10 + (*p - '0');
    }
    return x;
}

void nc_hub_headers_feed(nc_hub_headers *h, const char *line, size_t len) {
    if (len >= 5 && !strncmp(line, "HTTP/", 5)) {
        const char *sp = memchr(line, ' ', len);
        long status = 0;
        for (const char *p = sp ? sp + 1 : line + len; p < line + len && *p >= '0' && *p <= '9' && status < 1000; p++)
            status = status * 10 + (*p - '0');
        h->status = status;
        h->cur_from_hub = false;
        h->cur_etag[0] = h->cur_linked_etag[0] = 0;
        h->range_start = -1;
        h->error_code[0] = h->error_message[0] = 0;
        return;
    }
    if (len == 0 || line[0] == '\r' || line[0] == '\n') { /* end of this response's headers */
        if (h->cur_from_hub && h->status >= 200 && h->status < 400) {
            const char *e = h->cur_linked_etag[0] ? h->cur_linked_etag : h->cur_etag;
            if (e[0]) snprintf(h->etag, sizeof h->etag, "%s", e);
        }
        return;
    }
    const char *colon = memchr(line, ':', len);
    if (!colon) return;
    size_t name_len = (size_t)(colon - line);
    const char *v = colon + 1;
    size_t vn = len - name_len - 1;
#define IS(name) (name_len == sizeof name - 1 && !strncasecmp(line, name, name_len))
    if (IS("X-Repo-Commit")) {
        h->cur_from_hub = true;
        if (!h->commit[0]) copy_value(h->commit, sizeof h->commit, v, vn);
    } else if (IS("X-Linked-Etag")) {
        h->cur_from_hub = true;
        normalize_etag(h->cur_linked_etag, sizeof h->cur_linked_etag, v, vn);
    } else if (IS("ETag")) {
        normalize_etag(h->cur_etag, sizeof h->cur_etag, v, vn);
    } else if (IS("X-Linked-Size")) {
        h->linked_size = parse_int64(v, vn);
    } else if (IS("Content-Range")) {
        /* "bytes START-END/TOTAL" */
        char buf[96];
        copy_value(buf, sizeof buf, v, vn);
        const char *p = !strncasecmp(buf, "bytes ", 6) ? buf + 6 : NULL;
        const char *dash = p ? strchr(p, '-') : NULL;
        h->range_start = dash ? parse_int64(p, (size_t)(dash - p)) : -1;
    } else if (IS("X-Error-Code")) {
        copy_value(h->error_code, sizeof h->error_code, v, vn);
    } else if (IS("X-Error-Message")) {
        copy_value(h->error_message, sizeof h->error_message, v, vn);
    }
#undef IS
}

/* ==== the session ==== */

static int read_token_file(char *token, size_t cap) {
    char path[PATH_MAX];
    const char *p = getenv("HF_TOKEN_PATH");
    if (p && *p) {
        snprintf(path, sizeof path, "%s", p);
    } else {
        char home[PATH_MAX];
        if (nc_hub_home(home, sizeof home)) return 0;
        nc_hub_pathf(path, sizeof path, "%s/token", home);
    }
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(token, 1, cap - 1, f);
    fclose(f);
    token[n] = 0;
    return 0;
}

int nc_hub_http_init(nc_hub_http *s) {
    memset(s, 0, sizeof *s);
    const char *ep = getenv("HF_ENDPOINT");
    snprintf(s->endpoint, sizeof s->endpoint, "%s", ep && *ep ? ep : NC_HUB_DEFAULT_ENDPOINT);
    size_t n = strlen(s->endpoint);
    while (n > 0 && s->endpoint[n - 1] == '/') s->endpoint[--n] = 0;
    if (strncmp(s->endpoint, "http://", 7) && strncmp(s->endpoint, "https://", 8))
        return nc_fail("HF_ENDPOINT must be an http:// or https:// URL, got '%s'", s->endpoint);
    const char *t = getenv("HF_TOKEN");
    if (!t || !*t) t = getenv("HUGGING_FACE_HUB_TOKEN");
    if (t && *t) snprintf(s->token, sizeof s->token, "%s", t);
    else read_token_file(s->token, sizeof s->token);
    n = strlen(s->token);
    while (n > 0 && isspace((unsigned char)s->token[n - 1])) s->token[--n] = 0;
    for (size_t i = 0; i < n; i++)
        if (s->token[i] <= 0x20 || s->token[i] >= 0x7f)
            return nc_fail("the Hugging Face token (HF_TOKEN or the token file) holds a character a token "
                           "cannot have");
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return nc_fail("libcurl failed to initialize");
    return 0;
}

static size_t on_header(char *data, size_t size, size_t n, void *user) {
    nc_hub_headers_feed(user, data, size * n);
    return size * n;
}

void nc_hub_http_setup(const nc_hub_http *s, CURL *c, const char *url, nc_hub_headers *h) {
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_USERAGENT, "nanochat-c (libcurl)");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)STALL_SECONDS);
    if (s->token[0]) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
        curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, s->token);
    }
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
}

typedef struct {
    char *data;
    size_t len, cap, max;
    bool too_big;
} membuf;

static size_t on_body(char *data, size_t size, size_t n, void *user) {
    membuf *b = user;
    size_t k = size * n;
    if (b->len + k > b->max) {
        b->too_big = true;
        return 0;
    }
    if (b->len + k + 1 > b->cap) {
        b->cap = NC_MAX(b->cap * 2, b->len + k + 1);
        b->data = nc_xrealloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, data, k);
    b->len += k;
    return k;
}

int nc_hub_http_get(const nc_hub_http *s, const char *url, size_t max_bytes, nc_hub_headers *h, char **body,
                    size_t *len, CURLcode *curl_code) {
    *body = NULL;
    *len = 0;
    CURL *c = curl_easy_init();
    if (!c) return nc_fail("libcurl: cannot create a handle");
    nc_hub_headers_init(h);
    membuf b = {.max = max_bytes};
    nc_hub_http_setup(s, c, url, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    CURLcode rc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    *curl_code = rc;
    if (rc != CURLE_OK) {
        free(b.data);
        if (b.too_big) return nc_fail("%s: the answer is larger than %zu bytes", url, max_bytes);
        return nc_fail("%s", curl_easy_strerror(rc));
    }
    if (!b.data) b.data = nc_xmalloc(1);
    b.data[b.len] = 0;
    *body = b.data;
    *len = b.len;
    return 0;
}

bool nc_hub_http_unreachable(CURLcode code) {
    return code == CURLE_COULDNT_RESOLVE_HOST || code == CURLE_COULDNT_RESOLVE_PROXY ||
           code == CURLE_COULDNT_CONNECT || code == CURLE_OPERATION_TIMEDOUT || code == CURLE_SSL_CONNECT_ERROR ||
           code == CURLE_GOT_NOTHING || code == CURLE_RECV_ERROR || code == CURLE_SEND_ERROR;
}

int nc_hub_http_fail(const nc_hub_http *s, const nc_hub_headers *h, const char *repo_id, const char *revision,
                     const char *file) {
    const char *code = h->error_code;
    bool token = s->token[0] != 0;
    switch (h->status) {
    case 401:
    case 403:
        if (!strcmp(code, "GatedRepo"))
            return nc_fail("%s is gated: accept its conditions on its page on the Hub, then set HF_TOKEN to a token "
                           "of that account", repo_id);
        if (!strcmp(code, "RepoNotFound"))
            return nc_fail("repository %s not found on %s%s", repo_id, s->endpoint,
                           token ? " (or the token in HF_TOKEN cannot read it)"
                                 : " (if it is private or gated, set HF_TOKEN)");
        return nc_fail("%s: the Hub answered %ld: %s", repo_id, h->status,
                       token ? "the token in HF_TOKEN (or the token file) was refused, or cannot read this repository"
                             : "it needs a token: set HF_TOKEN (or log in with `hf auth login`)");
    case 404:
        if (!strcmp(code, "RevisionNotFound"))
            return nc_fail("revision '%s' not found in %s", revision, repo_id);
        if (file && (!strcmp(code, "EntryNotFound") || !code[0]))
            return nc_fail("file %s not found in %s at %s", file, repo_id, revision);
        return nc_fail("repository %s not found on %s", repo_id, s->endpoint);
    case 429:
        return nc_fail("the Hub limits the rate of requests (429): wait a minute and retry%s",
                       token ? "" : ", or set HF_TOKEN");
    default:
        if (h->status >= 500)
            return nc_fail("the Hub answered %ld (server error) for %s%s%s: try again later", h->status, repo_id,
                           file ? " " : "", file ? file : "");
        return nc_fail("unexpected answer %ld from the Hub for %s%s%s", h->status, repo_id, file ? " " : "",
                       file ? file : "");
    }
}

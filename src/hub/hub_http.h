/*
 * hub_http.h: the Hub's HTTP conventions on top of libcurl: where the Hub
 * is (HF_ENDPOINT), who we are (HF_TOKEN or the token file), the headers
 * that describe a file (X-Repo-Commit, X-Linked-Etag / ETag, X-Linked-Size,
 * X-Error-Code), and small GETs (the API's JSON).
 *
 * The token travels only to the Hub's own host: it is set as libcurl's
 * bearer credential, which libcurl drops when a redirect leaves the host
 * (the CDN that serves large files gets pre-signed URLs instead). It is
 * never printed.
 */
#ifndef NC_HUB_HUB_HTTP_H
#define NC_HUB_HUB_HTTP_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NC_HUB_DEFAULT_ENDPOINT "https://huggingface.co"

/* What the Hub said about a file or a request, from the headers of the
 * responses of one transfer (redirects included). */
typedef struct {
    long status;            /* the last response's status */
    char commit[64];        /* X-Repo-Commit */
    char etag[128];         /* X-Linked-Etag, else ETag, of a Hub response (quotes and W/ removed) */
    int64_t linked_size;    /* X-Linked-Size, -1 if absent */
    int64_t range_start;    /* start of the last response's Content-Range, -1 if absent */
    char error_code[64];    /* X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo) */
    char error_message[256];/* X-Error-Message */
    /* the response being read, folded into the fields above at its end */
    bool cur_from_hub;
    char cur_etag[128], cur_linked_etag[128];
} nc_hub_headers;

void nc_hub_headers_init(nc_hub_headers *h);

/* Feeds one header line (as libcurl hands them: "Name: value\r\n", a status
 * line, or the empty line ending a response's headers). Never fails:
 * malformed lines are ignored. */
void nc_hub_headers_feed(nc_hub_headers *h, const char *line, size_t len);

/* The session every request of one command shares. */
typedef struct {
    char endpoint[512];  /* no trailing '/' */
    char token[512];     /* "" when anonymous */
} nc_hub_http;

/* Reads HF_ENDPOINT and the token (HF_TOKEN, HUGGING_FACE_HUB_TOKEN, else
 * the file $HF_TOKEN_PATH or $HF_HOME/token). Fails on an endpoint that is
 * not http(s):// or a token with characters a header cannot carry. */
int nc_hub_http_init(nc_hub_http *s);

/* Applies the common options to a libcurl handle: the URL, redirects
 * (http/https only), the bearer token, timeouts (connect 15 s; a transfer
 * that moves nothing for 30 s is dropped), and the header parser writing
 * into `h`. */
void nc_hub_http_setup(const nc_hub_http *s, CURL *c, const char *url, nc_hub_headers *h);

/* GETs `url` into a malloc'ed, NUL-terminated body (at most max_bytes).
 * Returns 0 with *status set for any HTTP answer; -1 with a message for no
 * answer at all (*curl_code tells why: CURLE_COULDNT_CONNECT, ...). */
int nc_hub_http_get(const nc_hub_http *s, const char *url, size_t max_bytes, nc_hub_headers *h, char **body,
                    size_t *len, CURLcode *curl_code);

/* Whether a libcurl failure means the Hub could not be reached at all (no
 * network, DNS, refused, timed out before any answer). */
bool nc_hub_http_unreachable(CURLcode code);

/* The user-facing meaning of an HTTP error answer about `what` (a
 * repository, a revision or a file): 401/403 say to set HF_TOKEN, 404
 * names what is missing. Returns -1 (nc_fail). */
int nc_hub_http_fail(const nc_hub_http *s, const nc_hub_headers *h, const char *repo_id, const char *revision,
                     const char *file);

#endif /* NC_HUB_HUB_HTTP_H */

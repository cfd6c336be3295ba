/*
 * http_parse.h: the server's own reading of HTTP request heads and of the
 * header values it acts on (Content-Type, X-Request-Id, CORS origins and
 * header lists). Pure functions over bytes: no sockets, no libmicrohttpd,
 * so tests/fuzz/fuzz_request.c can throw anything at them.
 *
 * Why the server reads request heads itself: libmicrohttpd 0.9.75 answers a
 * head it rejects (URI or header fields too long, a malformed line or
 * Content-Length, an unsupported version) with a built-in HTML page, waits
 * for a line end however long the garbage before it, and gives a head that
 * trickles in no deadline. The gate (gate.c) therefore checks each head
 * with nc_http_head_check() before the library sees a byte, answers what it
 * rejects in the API's JSON shape, and hands the library only heads it
 * accepts: the checks below are at least as strict as the library's.
 */
#ifndef NC_SERVER_HTTP_PARSE_H
#define NC_SERVER_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Limits of a request head, as nginx's defaults (8 KiB a line, 32 KiB in
 * all): an API request needs a fraction, a browser's cookies for
 * localhost may need more than Node.js's 16 KiB. */
#define NC_HTTP_MAX_REQUEST_LINE 8192  /* 414 beyond */
#define NC_HTTP_MAX_HEAD 32768         /* request line + header fields; 431 beyond */
#define NC_HTTP_MAX_FIELDS 100         /* header fields (431) and query parameters (414) */
#define NC_HTTP_MAX_COOKIES 300        /* browsers keep up to 180 per site; 431 beyond */
#define NC_HTTP_MAX_METHOD 32
#define NC_HTTP_MAX_REQUEST_ID 128     /* a client's X-Request-Id is used up to this length */

typedef enum {
    NC_HEAD_MORE = 0,  /* no verdict yet: the head is incomplete and breaks no rule so far */
    NC_HEAD_DONE,      /* a complete head the library will accept */
    NC_HEAD_BAD,       /* rejected: answer `status` with `message` */
} nc_head_state;

typedef struct {
    size_t head_len;            /* DONE: bytes up to and including the blank line */
    char method[NC_HTTP_MAX_METHOD + 1];
    char path[256];             /* the target without its query, truncated (logs, error shape); "" if not read yet */
    int64_t content_length;     /* -1: none */
    bool chunked;               /* Transfer-Encoding: chunked */
    char request_id[NC_HTTP_MAX_REQUEST_ID + 1]; /* a valid X-Request-Id, else "" */
    char origin[256];           /* Origin, else "" (also when too long to be one) */
    int status;                 /* BAD: 400, 413, 414, 431, 501 or 505 */
    char message[160];          /* BAD: one line for the client */
} nc_head_info;

/* Reads the head at the start of `buf` (n bytes: the head so far, or the
 * head and more). A Content-Length above `max_body` is rejected (413).
 * MORE never comes with more than NC_HTTP_MAX_HEAD bytes of head. Fills
 * `out` as far as it read (method and path also for BAD, when known). */
nc_head_state nc_http_head_check(const char *buf, size_t n, uint64_t max_body, nc_head_info *out);

/* Whether a Content-Type value is JSON as the API requires:
 * application/json (any case), with a charset parameter only if utf-8. */
bool nc_http_is_json_type(const char *value);

/* Whether a client's X-Request-Id may be used as ours: 1 to
 * NC_HTTP_MAX_REQUEST_ID characters of [A-Za-z0-9._:+/=-] (UUIDs, W3C
 * trace ids, base64), safe to echo and to write into a log line. */
bool nc_http_request_id_valid(const char *s);

/* Whether a value is a comma-separated list of header names (HTTP
 * tokens), as Access-Control-Request-Headers must be, of at most 1024 bytes. */
bool nc_http_token_list_valid(const char *s);

/* --cors-origins: "*" (any origin) or a comma-separated list of
 * scheme://host[:port] origins. */
typedef struct {
    bool any;
    char **origins;
    int n;
} nc_origin_list;

/* Parses `spec`; -1 with a one-line reason in `err` if an entry is not an
 * http(s) origin. Free with nc_origin_list_free. */
int nc_origin_list_parse(const char *spec, nc_origin_list *out, char *err, size_t err_cap);
void nc_origin_list_free(nc_origin_list *l);
/* Whether a request's Origin header value is allowed (case-insensitive). */
bool nc_origin_allowed(const nc_origin_list *l, const char *origin);

#endif /* NC_SERVER_HTTP_PARSE_H */

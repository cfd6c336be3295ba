/*
 * http_parse.c: request heads and header values (see http_parse.h).
 *
 * The head is read from the start on every call (the gate peeks at the
 * socket, so it sees the head grow), rule by rule as RFC 9112 states them:
 * request-line = method SP request-target SP HTTP-version CRLF, then
 * field-name ":" OWS field-value OWS CRLF lines, then an empty line. A
 * bare LF ends a line too (the library accepts it); a CR anywhere else, a
 * control character, obs-fold or whitespace before a colon is a 400. A
 * verdict is given as soon as the bytes so far allow one: garbage in the
 * first bytes is a 400 at once, not after the line ends.
 */
#include "http_parse.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../util/common.h"

/* ==== characters ==== */

static bool is_tchar(unsigned char c) {
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* request-target: visible ASCII; bytes >= 0x80 pass (some clients send raw
 * UTF-8 paths, and the library takes them). */
static bool is_target_char(unsigned char c) { return c > 0x20 && c != 0x7F; }

/* field-value: HTAB, SP, visible ASCII, obs-text. */
static bool is_value_char(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7F); }

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

/* ==== verdicts ==== */

static nc_head_state bad(nc_head_info *out, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static nc_head_state bad(nc_head_info *out, int status, const char *fmt, ...) {
    out->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->message, sizeof out->message, fmt, ap);
    va_end(ap);
    return NC_HEAD_BAD;
}

/* No line end yet: a verdict only if the head is already too long. */
static nc_head_state more(nc_head_info *out, size_t n) {
    if (n > NC_HTTP_MAX_HEAD)
        return bad(out, 431, "the request head is larger than %d bytes", NC_HTTP_MAX_HEAD);
    return NC_HEAD_MORE;
}

/* Consumes the line end at b[*i] (CRLF or LF): 1 done, 0 incomplete, -1 malformed. */
static int line_end(const unsigned char *b, size_t n, size_t *i) {
    if (*i >= n) return 0;
    if (b[*i] == '\n') {
        (*i)++;
        return 1;
    }
    if (b[*i] != '\r') return -1;
    if (*i + 1 >= n) return 0;
    if (b[*i + 1] != '\n') return -1;
    *i += 2;
    return 1;
}

static void copy_text(char *dst, size_t cap, const unsigned char *src, size_t n) {
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = 0;
}

static bool name_is(const unsigned char *name, size_t len, const char *want) {
    return strlen(want) == len && !strncasecmp((const char *)name, want, len);
}

/* ==== the request line ==== */

static size_t count_query_params(const unsigned char *t, size_t n) {
    const unsigned char *q = memchr(t, '?', n);
    if (!q || q + 1 == t + n) return 0;
    size_t count = 1;
    for (const unsigned char *p = q + 1; p < t + n; p++) count += *p == '&';
    return count;
}

/* Reads the request line from b[*i]; NC_HEAD_DONE when it is complete. */
static nc_head_state request_line(const unsigned char *b, size_t n, size_t *pi, nc_head_info *out) {
    size_t i = *pi, line0 = i;
    const char *shape = "malformed request line (expected 'METHOD /path HTTP/1.1')";
    while (i < n && is_tchar(b[i])) {
        if (i - line0 >= NC_HTTP_MAX_METHOD) return bad(out, 400, "%s", shape);
        i++;
    }
    if (i == n) return more(out, n);
    if (b[i] != ' ' || i == line0) return bad(out, 400, "%s", shape);
    copy_text(out->method, sizeof out->method, b + line0, i - line0);
    size_t t = ++i;
    while (i < n && is_target_char(b[i])) i++;
    const unsigned char *query = memchr(b + t, '?', i - t);
    copy_text(out->path, sizeof out->path, b + t, (query ? (size_t)(query - b) : i) - t);
    if (i - line0 > NC_HTTP_MAX_REQUEST_LINE)
        return bad(out, 414, "the request line is longer than %d bytes", NC_HTTP_MAX_REQUEST_LINE);
    if (i == n) return more(out, n);
    if (b[i] != ' ' || i == t) return bad(out, 400, "%s", shape);
    if (count_query_params(b + t, i - t) > NC_HTTP_MAX_FIELDS)
        return bad(out, 414, "the request target has more than %d query parameters", NC_HTTP_MAX_FIELDS);
    i++;
    static const char proto[] = "HTTP/d.d";
    for (int k = 0; k < 8; k++, i++) {
        if (i == n) return more(out, n);
        bool ok = proto[k] == 'd' ? isdigit(b[i]) != 0 : b[i] == (unsigned char)proto[k];
        if (!ok) return bad(out, 400, "%s", shape);
    }
    char major = (char)b[i - 3], minor = (char)b[i - 1];
    if (major != '1') return bad(out, 505, "HTTP/%c.%c is not supported (use HTTP/1.1)", major, minor);
    int end = line_end(b, n, &i);
    if (end == 0) return more(out, n);
    if (end < 0) return bad(out, 400, "%s", shape);
    *pi = i;
    return NC_HEAD_DONE;
}

/* ==== header fields ==== */

typedef struct {
    bool has_length, has_encoding;
    size_t cookies;
} field_state;

static nc_head_state content_length(const unsigned char *v, size_t n, uint64_t max_body, field_state *st,
                                    nc_head_info *out) {
    if (n == 0) return bad(out, 400, "invalid Content-Length");
    for (size_t k = 0; k < n; k++)
        if (!isdigit(v[k])) return bad(out, 400, "invalid Content-Length");
    size_t k = 0;
    while (k + 1 < n && v[k] == '0') k++; /* leading zeros */
    uint64_t value = 0;
    bool huge = n - k > 18;
    for (; k < n && !huge; k++) value = value * 10 + (uint64_t)(v[k] - '0');
    if (st->has_length && (huge || (int64_t)value != out->content_length))
        return bad(out, 400, "conflicting Content-Length fields");
    if (huge || value > max_body)
        return bad(out, 413, "request body is larger than the limit of %llu bytes", (unsigned long long)max_body);
    st->has_length = true;
    out->content_length = (int64_t)value;
    return NC_HEAD_MORE;
}

/* One field (value trimmed of OWS); NC_HEAD_MORE to go on. */
static nc_head_state field(const unsigned char *name, size_t name_len, const unsigned char *v, size_t n,
                           uint64_t max_body, field_state *st, nc_head_info *out) {
    if (name_is(name, name_len, "content-length")) return content_length(v, n, max_body, st, out);
    if (name_is(name, name_len, "transfer-encoding")) {
        if (st->has_encoding) return bad(out, 400, "more than one Transfer-Encoding field");
        if (n != 7 || strncasecmp((const char *)v, "chunked", 7))
            return bad(out, 501, "only 'Transfer-Encoding: chunked' is supported");
        st->has_encoding = true;
        out->chunked = true;
    } else if (name_is(name, name_len, "x-request-id")) {
        char id[NC_HTTP_MAX_REQUEST_ID + 2];
        copy_text(id, sizeof id, v, n);
        if (!out->request_id[0] && n <= NC_HTTP_MAX_REQUEST_ID && nc_http_request_id_valid(id))
            memcpy(out->request_id, id, n + 1);
    } else if (name_is(name, name_len, "origin")) {
        if (n < sizeof out->origin) copy_text(out->origin, sizeof out->origin, v, n);
    } else if (name_is(name, name_len, "cookie")) {
        st->cookies += 1;
        for (size_t k = 0; k < n; k++) st->cookies += v[k] == ';';
        if (st->cookies > NC_HTTP_MAX_COOKIES) return bad(out, 431, "more than %d cookies", NC_HTTP_MAX_COOKIES);
    }
    return NC_HEAD_MORE;
}

nc_head_state nc_http_head_check(const char *buf, size_t n, uint64_t max_body, nc_head_info *out) {
    memset(out, 0, sizeof *out);
    out->content_length = -1;
    const unsigned char *b = (const unsigned char *)buf;
    size_t i = 0;
    /* Empty lines before the request line are tolerated (RFC 9112, 2.2). */
    for (int end; i < n && (b[i] == '\r' || b[i] == '\n');) {
        if ((end = line_end(b, n, &i)) == 0) return more(out, n);
        if (end < 0) return bad(out, 400, "malformed request line");
    }
    if (i == n) return more(out, n);
    nc_head_state s = request_line(b, n, &i, out);
    if (s != NC_HEAD_DONE) return s;
    field_state st = {0};
    int fields = 0;
    for (;;) {
        int end = line_end(b, n, &i);
        if (end > 0) break; /* the empty line: the head is complete */
        if (end == 0) return more(out, n);
        if (b[i] == ' ' || b[i] == '\t') return bad(out, 400, "folded (multi-line) header fields are not supported");
        size_t name = i;
        while (i < n && is_tchar(b[i])) i++;
        if (i == n) return more(out, n);
        if (b[i] != ':' || i == name) return bad(out, 400, "malformed header field (expected 'Name: value')");
        size_t name_len = i - name;
        i++;
        while (i < n && is_ows((char)b[i])) i++;
        size_t v = i;
        while (i < n && is_value_char(b[i])) i++;
        size_t v_end = i;
        while (v_end > v && is_ows((char)b[v_end - 1])) v_end--;
        end = line_end(b, n, &i);
        if (end == 0) return more(out, n);
        if (end < 0) return bad(out, 400, "a header field holds a control character");
        if (i > NC_HTTP_MAX_HEAD) return more(out, i); /* 431 */
        if (++fields > NC_HTTP_MAX_FIELDS) return bad(out, 431, "more than %d header fields", NC_HTTP_MAX_FIELDS);
        s = field(b + name, name_len, b + v, v_end - v, max_body, &st, out);
        if (s != NC_HEAD_MORE) return s;
    }
    if (i > NC_HTTP_MAX_HEAD) return more(out, i); /* 431 */
    if (st.has_encoding && st.has_length)
        return bad(out, 400, "a request may not carry both Transfer-Encoding and Content-Length");
    out->head_len = i;
    return NC_HEAD_DONE;
}

/* ==== header values ==== */

bool nc_http_is_json_type(const char *value) {
    if (!value) return false;
    const char *p = value;
    while (is_ows(*p)) p++;
    if (strncasecmp(p, "application/json", 16)) return false;
    p += 16;
    while (is_ows(*p)) p++;
    while (*p == ';') {
        p++;
        while (is_ows(*p)) p++;
        size_t n = strcspn(p, ";");
        if (n >= 8 && !strncasecmp(p, "charset=", 8)) {
            const char *cs = p + 8;
            size_t len = n - 8;
            while (len && is_ows(cs[len - 1])) len--;
            if (len >= 2 && cs[0] == '"' && cs[len - 1] == '"') {
                cs++;
                len -= 2;
            }
            bool utf8 = (len == 5 && !strncasecmp(cs, "utf-8", 5)) || (len == 4 && !strncasecmp(cs, "utf8", 4));
            if (!utf8) return false;
        }
        p += n;
    }
    return *p == 0;
}

bool nc_http_request_id_valid(const char *s) {
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= NC_HTTP_MAX_REQUEST_ID || !(isalnum((unsigned char)s[n]) || strchr("._:+/=-", s[n]))) return false;
    return n > 0;
}

bool nc_http_token_list_valid(const char *s) {
    if (strlen(s) > 1024) return false;
    const char *p = s;
    for (;;) {
        while (is_ows(*p)) p++;
        const char *t = p;
        while (is_tchar((unsigned char)*p)) p++;
        if (p == t) return false;
        while (is_ows(*p)) p++;
        if (*p == 0) return true;
        if (*p++ != ',') return false;
    }
}

/* ==== CORS origins ==== */

/* scheme://host[:port], scheme http or https, host a name, an IPv4 or a
 * bracketed IPv6 address; nothing after. */
static bool origin_valid(const char *o, size_t n) {
    size_t k;
    if (n > 8 && !strncasecmp(o, "https://", 8)) k = 8;
    else if (n > 7 && !strncasecmp(o, "http://", 7)) k = 7;
    else return false;
    size_t host = k;
    if (o[k] == '[') {
        while (k < n && o[k] != ']') {
            if (!(isxdigit((unsigned char)o[k]) || o[k] == ':' || o[k] == '.' || o[k] == '[')) return false;
            k++;
        }
        if (k == n) return false;
        k++;
    } else {
        while (k < n && (isalnum((unsigned char)o[k]) || o[k] == '.' || o[k] == '-')) k++;
        if (k == host) return false;
    }
    if (k < n && o[k] == ':') {
        size_t port = ++k;
        while (k < n && isdigit((unsigned char)o[k])) k++;
        if (k == port || k - port > 5) return false;
    }
    return k == n;
}

int nc_origin_list_parse(const char *spec, nc_origin_list *out, char *err, size_t err_cap) {
    memset(out, 0, sizeof *out);
    const char *p = spec;
    while (is_ows(*p)) p++;
    size_t len = strlen(p);
    while (len && is_ows(p[len - 1])) len--;
    if (len == 1 && p[0] == '*') {
        out->any = true;
        return 0;
    }
    for (const char *e = p; e < p + len;) {
        while (e < p + len && (is_ows(*e) || *e == ',')) e++;
        if (e == p + len) break;
        const char *stop = memchr(e, ',', (size_t)(p + len - e));
        if (!stop) stop = p + len;
        size_t n = (size_t)(stop - e);
        while (n && is_ows(e[n - 1])) n--;
        if (!origin_valid(e, n)) {
            snprintf(err, err_cap, "'%.*s' is not an origin (expected scheme://host[:port], e.g. "
                     "https://example.com, or * for any)", (int)NC_MIN(n, 80), e);
            nc_origin_list_free(out);
            return -1;
        }
        out->origins = nc_xrealloc(out->origins, sizeof *out->origins * (size_t)(out->n + 1));
        char *o = nc_xmalloc(n + 1);
        for (size_t k = 0; k < n; k++) o[k] = (char)tolower((unsigned char)e[k]);
        o[n] = 0;
        out->origins[out->n++] = o;
        e = stop;
    }
    if (out->n == 0) {
        snprintf(err, err_cap, "no origin given (a comma-separated list, or * for any)");
        return -1;
    }
    return 0;
}

void nc_origin_list_free(nc_origin_list *l) {
    for (int i = 0; i < l->n; i++) free(l->origins[i]);
    free(l->origins);
    memset(l, 0, sizeof *l);
}

bool nc_origin_allowed(const nc_origin_list *l, const char *origin) {
    if (l->any) return true;
    if (!origin) return false;
    for (int i = 0; i < l->n; i++)
        if (!strcasecmp(l->origins[i], origin)) return true;
    return false;
}

/*
 * sbuf.c: growable buffer and JSON string escaping (see sbuf.h).
 */
#include "sbuf.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../util/common.h"

static void reserve(nc_sbuf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    b->buf = nc_xrealloc(b->buf, cap);
    b->cap = cap;
}

void nc_sbuf_append(nc_sbuf *b, const void *data, size_t n) {
    reserve(b, n);
    if (n) memcpy(b->buf + b->len, data, n);
    b->len += n;
    b->buf[b->len] = 0;
}

void nc_sbuf_puts(nc_sbuf *b, const char *s) { nc_sbuf_append(b, s, strlen(s)); }

void nc_sbuf_printf(nc_sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    NC_ASSERT(n >= 0);
    reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 character at s[0..n), or 0 if invalid. */
static size_t utf8_char(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
    else return 0;
    if (len > n) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
    if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
    return len;
}

void nc_sbuf_json_string(nc_sbuf *b, const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    reserve(b, n + 2);
    b->buf[b->len++] = '"';
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            nc_sbuf_append(b, esc, 2);
            i++;
        } else if (c < 0x20) {
            char esc[8];
            const char *named = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
            if (named) nc_sbuf_puts(b, named);
            else {
                snprintf(esc, sizeof esc, "\\u%04x", c);
                nc_sbuf_puts(b, esc);
            }
            i++;
        } else {
            size_t len = utf8_char(s + i, n - i);
            if (len == 0) {
                nc_sbuf_append(b, "\xEF\xBF\xBD", 3);
                i++;
            } else {
                nc_sbuf_append(b, s + i, len);
                i += len;
            }
        }
    }
    nc_sbuf_append(b, "\"", 1);
}

void nc_sbuf_json_number(nc_sbuf *b, double v) {
    if (!isfinite(v)) {
        /* JSON has no -Infinity; a logprob of -inf is "impossible": say so
         * with the most negative finite float OpenAI clients accept. */
        if (isinf(v) && v < 0) nc_sbuf_puts(b, "-9999.0");
        else nc_sbuf_puts(b, "null");
        return;
    }
    nc_sbuf_printf(b, "%.9g", v);
}

void nc_sbuf_reset(nc_sbuf *b) {
    b->len = 0;
    if (b->buf) b->buf[0] = 0;
}

void nc_sbuf_free(nc_sbuf *b) {
    free(b->buf);
    b->buf = NULL;
    b->len = b->cap = 0;
}

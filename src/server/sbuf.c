/*
 * sbuf.c: growable buffer and JSON string escaping (see sbuf.h).
 */
#include "sbuf.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "../tokenizer/utf8.h"
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
            size_t len = nc_utf8_char(s + i, n - i);
            if (len == 0) {
                nc_sbuf_append(b, NC_UTF8_REPLACEMENT, 3);
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

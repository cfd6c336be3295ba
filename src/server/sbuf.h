/*
 * sbuf.h: a growable byte buffer for building HTTP bodies and SSE events,
 * with JSON string escaping. HTTP threads only (it allocates).
 */
#ifndef NC_SERVER_SBUF_H
#define NC_SERVER_SBUF_H

#include <stddef.h>

typedef struct {
    char *buf;   /* NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
} nc_sbuf;

void nc_sbuf_append(nc_sbuf *b, const void *data, size_t n);
void nc_sbuf_puts(nc_sbuf *b, const char *s);
void nc_sbuf_printf(nc_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends `n` bytes as a JSON string literal, quotes included. Invalid
 * UTF-8 is written as U+FFFD, so the output is always valid JSON. */
void nc_sbuf_json_string(nc_sbuf *b, const char *s, size_t n);
/* Appends a float the way JSON allows (no NaN/Inf: those become null). */
void nc_sbuf_json_number(nc_sbuf *b, double v);
void nc_sbuf_reset(nc_sbuf *b);
void nc_sbuf_free(nc_sbuf *b);

#endif /* NC_SERVER_SBUF_H */

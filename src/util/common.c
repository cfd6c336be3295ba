/* common.c: error reporting and checked allocation (see common.h). */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static _Thread_local char error_message[NC_ERROR_MAX];

int nc_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    return -1;
}

int nc_fail_context(const char *fmt, ...) {
    char old[NC_ERROR_MAX];
    memcpy(old, error_message, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(error_message, sizeof error_message, fmt, ap);
    va_end(ap);
    /* Append ": <old message>", truncating at the buffer's end. */
    size_t used = n < 0 ? 0 : NC_MIN((size_t)n, sizeof error_message - 1);
    size_t room = sizeof error_message - 1 - used;
    size_t old_len = strlen(old);
    if (room >= 2) {
        memcpy(error_message + used, ": ", 2);
        used += 2;
        room -= 2;
        size_t k = NC_MIN(old_len, room);
        memcpy(error_message + used, old, k);
        used += k;
    }
    error_message[used] = '\0';
    return -1;
}

const char *nc_error(void) { return error_message; }

void nc_die_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "%s:%d: fatal: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

void *nc_xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) nc_die("out of memory allocating %zu bytes", n);
    return p;
}

void *nc_xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) nc_die("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *nc_xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) nc_die("out of memory reallocating %zu bytes", n);
    return q;
}

char *nc_xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = nc_xmalloc(n);
    memcpy(d, s, n);
    return d;
}

void nc_xappend(char **buf, size_t *len, size_t *cap, const char *s, size_t n) {
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 64;
        while (c < *len + n + 1) c *= 2;
        *buf = nc_xrealloc(*buf, c);
        *cap = c;
    }
    if (n) memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
}

double nc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t nc_mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[128];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (size_t)kb * 1024;
}

struct timespec nc_monotonic_deadline(double seconds) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (!(seconds > 0)) return ts;
    time_t whole = (time_t)seconds;
    ts.tv_sec += whole;
    ts.tv_nsec += (long)((seconds - (double)whole) * 1e9);
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

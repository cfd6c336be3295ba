/*
 * common.h: the two tiers of errors, and small helpers every module uses.
 *
 * Tier 1, bugs and impossible states: NC_ASSERT / nc_die print file:line
 * and abort. Never use them for anything that comes from outside.
 *
 * Tier 2, bad input (files, flags, HTTP bodies, prompts): the function
 * records a one-line, user-actionable message with nc_fail() and returns
 * -1 (or NULL). The caller reads it with nc_error(). The message lives in a
 * thread-local buffer, so server threads do not clobber each other; like
 * errno, it is only meaningful right after a call reported failure.
 */
#ifndef NC_UTIL_COMMON_H
#define NC_UTIL_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define NC_ERROR_MAX 1024

/* Records an error message (printf-style) and returns -1, so that
 * `return nc_fail("bad thing %d", x);` reads naturally. */
int nc_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Prepends context to the current message: "loading X: <old message>". */
int nc_fail_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The message recorded by the last failing call on this thread ("" if none). */
const char *nc_error(void);

/* Tier 1: print "file:line: message" and abort. */
void nc_die_at(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
#define nc_die(...) nc_die_at(__FILE__, __LINE__, __VA_ARGS__)
#define NC_ASSERT(cond) \
    do { if (!(cond)) nc_die_at(__FILE__, __LINE__, "assertion failed: %s", #cond); } while (0)

/* Allocation that dies on failure: only for small, bounded allocations whose
 * failure means the machine is broken. Large, input-sized allocations use
 * plain malloc and report an error instead. */
void *nc_xmalloc(size_t n);
void *nc_xcalloc(size_t count, size_t size);
void *nc_xrealloc(void *p, size_t n);
char *nc_xstrdup(const char *s);
/* Appends n bytes to the growable text *buf (length *len, capacity *cap;
 * all zero to start) and keeps it NUL-terminated. Capacity doubles, so a
 * stream of appends rarely allocates. */
void nc_xappend(char **buf, size_t *len, size_t *cap, const char *s, size_t n);

/* Monotonic wall clock in seconds. */
double nc_now(void);

/* The CLOCK_MONOTONIC time `seconds` (>= 0) from now, as a deadline for
 * pthread_cond_timedwait on a condition variable set to that clock. */
struct timespec nc_monotonic_deadline(double seconds);

/* MemAvailable of /proc/meminfo in bytes (what can be allocated without
 * swapping), or 0 where unknown. */
size_t nc_mem_available(void);

#define NC_MIN(a, b) ((a) < (b) ? (a) : (b))
#define NC_MAX(a, b) ((a) > (b) ? (a) : (b))
#define NC_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif /* NC_UTIL_COMMON_H */

/*
 * check.h: the tiny test helpers every C test uses (antirez style).
 *
 *   CHECK(cond, "what", ...)   records a failure with file:line and a message
 *   CHECK_NEAR(a, b, tol)      relative/absolute closeness of two floats
 *   return check_summary("name");   prints "name: N checks, N failed", exit code
 *   check_read_file(path)      a whole file, NUL-terminated (malloc'ed), or NULL
 *
 * A test that cannot run here (no GPU) returns CHECK_SKIP (77), which
 * tests/run.sh counts as skipped.
 */
#ifndef NC_TESTS_CHECK_H
#define NC_TESTS_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK_SKIP 77

static int check_count, check_failed;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        check_count++;                                                     \
        if (!(cond)) {                                                     \
            check_failed++;                                                \
            if (check_failed <= 30) {                                      \
                fprintf(stderr, "%s:%d: FAIL: %s: ", __FILE__, __LINE__, #cond); \
                fprintf(stderr, __VA_ARGS__);                              \
                fputc('\n', stderr);                                       \
            }                                                              \
        }                                                                  \
    } while (0)

#define CHECK_NEAR(a, b, tol, ...)                                          \
    CHECK(fabs((double)(a) - (double)(b)) <= (tol) * (1.0 + fabs((double)(b))), __VA_ARGS__)

static inline char *check_read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = len >= 0 ? malloc((size_t)len + 1) : NULL;
    size_t got = s ? fread(s, 1, (size_t)len, f) : 0;
    fclose(f);
    if (s) s[got] = 0;
    return s;
}

static inline int check_summary(const char *name) {
    printf("%s: %d checks, %d failed\n", name, check_count, check_failed);
    return check_failed ? 1 : 0;
}

#endif /* NC_TESTS_CHECK_H */

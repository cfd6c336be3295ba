/* flags.c: shared option parsing (flags.h). */
#include "flags.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int nc_flag_take(const char *name, int argc, char **argv, int *i, const char **value) {
    const char *arg = argv[*i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0) return 0;
    if (arg[n] == '=') {
        *value = arg + n + 1;
        return 1;
    }
    if (arg[n] != 0) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "nanochat: option %s needs a value\n", name);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

int nc_flag_int(const char *opt, const char *v, long long lo, long long hi, long long *out) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "nanochat: %s expects an integer in %lld..%lld, got '%s'\n", opt, lo, hi, v);
        return -1;
    }
    *out = x;
    return 0;
}

int nc_flag_float(const char *opt, const char *v, double lo, double hi, bool lo_open, float *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x) || x < lo || x > hi || (lo_open && x == lo)) {
        fprintf(stderr, "nanochat: %s expects a number in %s%g, %g], got '%s'\n", opt, lo_open ? "(" : "[", lo, hi,
                v);
        return -1;
    }
    *out = (float)x;
    return 0;
}

/*
 * test_calculator.c: the C calculator tool against Python.
 *
 * Without arguments: checks every row of tests/data/calculator/cases.tsv
 * (hex of the expression, TAB, Python's str(use_calculator(expr)) or the
 * word NONE), written by tools/gen_calculator_cases.py from
 * tools/calculator_reference.py, i.e. from Python's own eval.
 *
 * With --stdin: a driver for tests/py/test_calculator_eval.py, which generates
 * fresh cases each run. Each input line is "E <hex expr>" (answered with
 * the result or NONE) or "F <16 hex digits>" (the bits of a double,
 * answered with our Python-style repr of it).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tool/calculator.h"
#include "tool/pyfloat.h"

/* Decodes hex into buf (cap bytes); returns the length or -1. */
static long unhex(const char *h, size_t hl, char *buf, size_t cap) {
    if (hl % 2 || hl / 2 >= cap) return -1;
    for (size_t i = 0; i < hl / 2; i++) {
        unsigned v;
        if (sscanf(h + 2 * i, "%2x", &v) != 1) return -1;
        buf[i] = (char)v;
    }
    buf[hl / 2] = 0;
    return (long)(hl / 2);
}

static char line[1 << 20], expr[1 << 19], result[NC_CALC_RESULT_MAX];

static int run_driver(void) {
    while (fgets(line, sizeof line, stdin)) {
        size_t n = strcspn(line, "\r\n");
        line[n] = 0;
        if (n >= 2 && line[0] == 'E') {
            long el = unhex(line + 2, n - 2, expr, sizeof expr);
            if (el < 0) {
                fprintf(stderr, "bad hex line\n");
                return 2;
            }
            int rl = nc_calculator(expr, (size_t)el, result, sizeof result);
            printf("%s\n", rl < 0 ? "NONE" : result);
        } else if (n >= 2 && line[0] == 'F') {
            uint64_t bits = strtoull(line + 2, NULL, 16);
            double x;
            memcpy(&x, &bits, sizeof x);
            char r[NC_PY_FLOAT_REPR_MAX];
            nc_py_float_repr(x, r, sizeof r);
            printf("%s\n", r);
        } else {
            fprintf(stderr, "bad driver line\n");
            return 2;
        }
    }
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--stdin")) return run_driver();
    const char *path = argc > 1 ? argv[1] : "tests/data/calculator/cases.tsv";
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s (run from the repository root)\n", path);
        return 1;
    }
    int rows = 0;
    while (fgets(line, sizeof line, f)) {
        size_t n = strcspn(line, "\r\n");
        line[n] = 0;
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        long el = unhex(line, (size_t)(tab - line), expr, sizeof expr);
        CHECK(el >= 0, "row %d: bad hex", rows);
        if (el < 0) continue;
        const char *want = tab + 1;
        int rl = nc_calculator(expr, (size_t)el, result, sizeof result);
        const char *got = rl < 0 ? "NONE" : result;
        CHECK(!strcmp(got, want), "row %d: %.60s%s -> got %.60s, Python %.60s", rows, expr,
              el > 60 ? "..." : "", got, want);
        rows++;
    }
    fclose(f);
    CHECK(rows >= 100, "only %d rows in %s", rows, path);
    printf("%d expressions compared\n", rows);
    return check_summary("test_calculator");
}

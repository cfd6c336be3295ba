/*
 * logit_rows.h: one row of logits against a reference row, for the GPU
 * tests (test_cuda_backend.c, test_cuda_tp.c). A row passes when its
 * largest difference is at most `tol` times the reference's largest
 * logit, and its top-1 token is the reference's unless the reference's
 * best two logits are closer than twice that difference (a near-tie,
 * where either is acceptable: docs/model.md, Precision).
 */
#ifndef NC_TESTS_LOGIT_ROWS_H
#define NC_TESTS_LOGIT_ROWS_H

#include <math.h>

#include "check.h"

static int logits_argmax(const float *x, int V) {
    int b = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Checks `got` against `ref` (V logits each); returns the relative
 * difference (infinite when `got` holds a NaN). */
static double check_logit_row(const float *got, const float *ref, int V, double tol, const char *what, int row) {
    double md = 0, mr = 0;
    for (int i = 0; i < V; i++) {
        md = fmax(md, fabs((double)got[i] - ref[i]));
        mr = fmax(mr, fabs((double)ref[i]));
        if (got[i] != got[i]) md = INFINITY;
    }
    double err = md / fmax(mr, 1e-30);
    CHECK(err <= tol, "%s: row %d: relative logit difference %.3g", what, row, err);
    int a = logits_argmax(got, V), r = logits_argmax(ref, V);
    CHECK(a == r || ref[r] - ref[a] <= 2 * md, "%s: row %d: top-1 %d (%.4f) vs reference %d (%.4f)", what, row, a,
          ref[a], r, ref[r]);
    return err;
}

#endif /* NC_TESTS_LOGIT_ROWS_H */

/*
 * test_gptq.c: GPTQ rounding (src/quant/gptq.h) against independent
 * references:
 *   - the problem of tests/data/quant/gptq.json (tools/make_gptq_fixtures.py:
 *     numpy, fp64, GPTQ as published, with the inverse Hessian's Cholesky
 *     factor, which gptq.c avoids): rebuilt bit for bit, its rows
 *     accumulated in two calls, rounded to int8 and fp8. At least 97% of the
 *     codes equal the reference's (the rest are near-ties that fp32 and fp64
 *     decide apart), the output error (w - q) H (w - q)^T within 2% of the
 *     reference's and below 60% of rounding to nearest's; the column no row
 *     ever sets is rounded to nearest; the scales are round to nearest's, bit
 *     for bit;
 *   - uncorrelated inputs (H diagonal): nothing to move, so every code must
 *     be round to nearest's exactly (model/quantize.h), on a shape whose K
 *     crosses the factorisation's and the rounding's blocks;
 *   - errors: no rows accumulated, a non-finite weight.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "model/quantize.h"
#include "quant/gptq.h"
#include "util/common.h"
#include "util/numeric.h"

#define FIXTURE "tests/data/quant/gptq.json"

typedef struct {
    uint64_t s;
} lcg;

/* The fixture generator's values: multiples of 2^-10 in [-1000, 1000] / 1024. */
static float lcg_next(lcg *g) {
    g->s = g->s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((int64_t)((g->s >> 33) % 2001) - 1000) / 1024.0f;
}

static nc_tensor f32_tensor(const char *name, float *data, int64_t rows, int64_t cols) {
    return (nc_tensor){.name = (char *)name, .dtype = NC_DTYPE_F32, .ndim = 2, .shape = {rows, cols},
                       .data = data, .nbytes = (size_t)(rows * cols) * sizeof(float)};
}

/* The value a code stands for, in units of the scale. */
static double code_value(uint8_t c, nc_weight_format f) {
    return f == NC_WEIGHTS_INT8 ? (double)(int8_t)c : (double)nc_f8e4m3_to_f32(c);
}

/* sum_r (w_r - q_r s_r) H (w_r - q_r s_r)^T with H = X^T X, in double. */
static double output_error(const float *W, const uint8_t *q, const float *s, nc_weight_format f, const float *X,
                           int64_t N, int64_t K, int64_t T) {
    double total = 0;
    double *d = malloc((size_t)K * sizeof(double));
    for (int64_t r = 0; r < N; r++) {
        for (int64_t k = 0; k < K; k++) d[k] = W[r * K + k] - code_value(q[r * K + k], f) * s[r];
        for (int64_t t = 0; t < T; t++) {
            double y = 0;
            for (int64_t k = 0; k < K; k++) y += d[k] * X[t * K + k];
            total += y * y;
        }
    }
    free(d);
    return total;
}

static void check_fixture(nc_gptq *g) {
    char *text = check_read_file(FIXTURE);
    CHECK(text, "cannot read " FIXTURE " (run from the repository root)");
    if (!text) return;
    cJSON *j = cJSON_Parse(text);
    int64_t N = cJSON_GetObjectItem(j, "N")->valueint, K = cJSON_GetObjectItem(j, "K")->valueint;
    int64_t T = cJSON_GetObjectItem(j, "T")->valueint, dead = cJSON_GetObjectItem(j, "dead")->valueint;
    lcg rng = {(uint64_t)cJSON_GetObjectItem(j, "seed")->valuedouble};
    float *z = malloc((size_t)(T * K) * sizeof(float)), *X = malloc((size_t)(T * K) * sizeof(float));
    float *W = malloc((size_t)(N * K) * sizeof(float));
    for (int64_t i = 0; i < T * K; i++) z[i] = lcg_next(&rng);
    for (int64_t t = 0; t < T; t++)
        for (int64_t k = 0; k < K; k++)
            X[t * K + k] = k == dead ? 0
                                     : (float)(1 + k % 5) *
                                           (z[t * K + k] + z[t * K + (k + 1) % K] / 2 + z[t * K] / 4);
    for (int64_t i = 0; i < N * K; i++) W[i] = lcg_next(&rng);
    nc_tensor w = f32_tensor("fixture.weight", W, N, K);

    nc_gptq_stats s;
    CHECK(nc_gptq_stats_init(&s, K) == 0, "stats: %s", nc_error());
    nc_gptq_accumulate(g, &s, X, 200, K);
    nc_gptq_accumulate(g, &s, X + 200 * K, T - 200, K);
    CHECK(s.rows == T, "rows accumulated: %lld", (long long)s.rows);
    CHECK(nc_gptq_factor(g, &s) == 0, "factor: %s", nc_error());

    const char *names[] = {"int8", "fp8"};
    nc_weight_format formats[] = {NC_WEIGHTS_INT8, NC_WEIGHTS_FP8};
    uint8_t *q = malloc((size_t)(N * K)), *rtn = malloc((size_t)(N * K));
    float *scale = malloc((size_t)N * sizeof(float)), *rtn_scale = malloc((size_t)N * sizeof(float));
    for (int fi = 0; fi < 2; fi++) {
        nc_weight_format f = formats[fi];
        const cJSON *ref = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "formats"), names[fi]);
        const char *hex = cJSON_GetObjectItem(ref, "codes")->valuestring;
        double want = cJSON_GetObjectItem(ref, "objective")->valuedouble;
        double nearest = cJSON_GetObjectItem(ref, "objective_nearest")->valuedouble;
        CHECK(nc_gptq_round(g, &s, &w, f, q, scale) == 0, "%s: %s", names[fi], nc_error());
        int64_t agree = 0, dead_same = 0, scale_same = 0;
        for (int64_t r = 0; r < N; r++) {
            float rs = f == NC_WEIGHTS_INT8 ? nc_quantize_row_int8(W + r * K, K, (int8_t *)rtn + r * K)
                                            : nc_quantize_row_fp8(W + r * K, K, rtn + r * K);
            rtn_scale[r] = rs;
            scale_same += memcmp(&rs, &scale[r], sizeof rs) == 0;
            dead_same += q[r * K + dead] == rtn[r * K + dead];
            for (int64_t k = 0; k < K; k++) {
                unsigned byte;
                sscanf(hex + 2 * (r * K + k), "%2x", &byte);
                agree += code_value(q[r * K + k], f) == code_value((uint8_t)byte, f);
            }
        }
        double got = output_error(W, q, scale, f, X, N, K, T);
        double ours_nearest = output_error(W, rtn, rtn_scale, f, X, N, K, T);
        CHECK(agree >= (int64_t)(0.97 * (double)(N * K)), "%s: %lld of %lld codes as the reference's", names[fi],
              (long long)agree, (long long)(N * K));
        CHECK(fabs(got - want) <= 0.02 * want, "%s: output error %.4f, reference %.4f", names[fi], got, want);
        CHECK(got < 0.6 * nearest, "%s: output error %.4f, round to nearest's %.4f (reference)", names[fi], got,
              nearest);
        CHECK_NEAR(ours_nearest, nearest, 1e-6, "%s: round to nearest's error %.6f, reference %.6f", names[fi],
                   ours_nearest, nearest);
        CHECK(scale_same == N, "%s: %lld of %lld scales as round to nearest's", names[fi], (long long)scale_same,
              (long long)N);
        CHECK(dead_same == N, "%s: the dead column's codes differ from round to nearest in %lld rows", names[fi],
              (long long)(N - dead_same));
    }
    nc_gptq_stats_free(&s);
    free(q);
    free(rtn);
    free(scale);
    free(rtn_scale);
    free(z);
    free(X);
    free(W);
    cJSON_Delete(j);
    free(text);
}

/* Inputs with uncorrelated columns: rows of one nonzero each. */
static void check_uncorrelated(nc_gptq *g) {
    const int64_t N = 37, K = 300;
    float *X = calloc((size_t)(3 * K * K), sizeof(float)), *W = malloc((size_t)(N * K) * sizeof(float));
    lcg rng = {7};
    for (int64_t k = 0; k < K; k++)
        for (int64_t rep = 0; rep < 3; rep++) X[(rep * K + k) * K + k] = (float)(1 + (k * 7 + rep) % 11) / 8.0f;
    for (int64_t i = 0; i < N * K; i++) W[i] = lcg_next(&rng) * (float)(1 + i % 3);
    nc_tensor w = f32_tensor("uncorrelated.weight", W, N, K);
    nc_gptq_stats s;
    CHECK(nc_gptq_stats_init(&s, K) == 0, "stats: %s", nc_error());
    nc_gptq_accumulate(g, &s, X, 3 * K, K);
    CHECK(nc_gptq_factor(g, &s) == 0, "factor: %s", nc_error());
    uint8_t *q = malloc((size_t)(N * K)), *rtn = malloc((size_t)K);
    float *scale = malloc((size_t)N * sizeof(float));
    for (int fi = 0; fi < 2; fi++) {
        nc_weight_format f = fi ? NC_WEIGHTS_FP8 : NC_WEIGHTS_INT8;
        CHECK(nc_gptq_round(g, &s, &w, f, q, scale) == 0, "round: %s", nc_error());
        int64_t same = 0;
        for (int64_t r = 0; r < N; r++) {
            float rs = f == NC_WEIGHTS_INT8 ? nc_quantize_row_int8(W + r * K, K, (int8_t *)rtn)
                                            : nc_quantize_row_fp8(W + r * K, K, rtn);
            same += memcmp(q + r * K, rtn, (size_t)K) == 0 && rs == scale[r];
        }
        CHECK(same == N, "%s: %lld of %lld rows as round to nearest", fi ? "fp8" : "int8", (long long)same,
              (long long)N);
    }
    nc_gptq_stats_free(&s);
    free(X);
    free(W);
    free(q);
    free(rtn);
    free(scale);
}

static void check_errors(nc_gptq *g) {
    nc_gptq_stats s;
    CHECK(nc_gptq_stats_init(&s, 8) == 0, "stats: %s", nc_error());
    CHECK(nc_gptq_factor(g, &s) == -1 && strstr(nc_error(), "no calibration rows"), "no rows: '%s'", nc_error());
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, W[16];
    for (int i = 0; i < 16; i++) W[i] = (float)i / 16;
    W[11] = NAN;
    nc_gptq_accumulate(g, &s, x, 1, 8);
    CHECK(nc_gptq_factor(g, &s) == 0, "one row, dampened: %s", nc_error());
    nc_tensor w = f32_tensor("bad.weight", W, 2, 8);
    uint8_t q[16];
    float scale[2];
    CHECK(nc_gptq_round(g, &s, &w, NC_WEIGHTS_FP8, q, scale) == -1 && strstr(nc_error(), "bad.weight") &&
              strstr(nc_error(), "row 1") && strstr(nc_error(), "non-finite"),
          "NaN weight: '%s'", nc_error());
    nc_gptq_stats_free(&s);
}

int main(void) {
    nc_gptq *g = nc_gptq_new(2);
    CHECK(g, "nc_gptq_new: %s", nc_error());
    if (!g) return check_summary("test_gptq");
    check_fixture(g);
    check_uncorrelated(g);
    check_errors(g);
    nc_gptq_free(g);
    return check_summary("test_gptq");
}

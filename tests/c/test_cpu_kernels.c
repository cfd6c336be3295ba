/*
 * test_cpu_kernels.c: the CPU backend's kernels (cpu_kernels.h), every
 * variant this CPU runs (NC_CPU_KERNELS=name limits it to one).
 *
 * Reference: the same products (and attention's scores and weighted sums)
 * in double precision, written here: of the dequantised weights (scale[r] *
 * q) for int8 / fp8 weights; of x rounded to bf16 for the avx512bf16
 * variant's bf16 products, which is what it multiplies; of the q8 math
 * (sum over blocks of d_b * xq . q, times scale[r]) for the VNNI variants'
 * int8 path. A result passes when |ours - exact| <= (K + 3) * 2^-24 *
 * sum_k |x_k w_k|, the worst-case error of any fp32 order of summation and
 * a final scaling (a wrong or missing term is off by a whole |x_k w_k|).
 *
 * Batch invariance: for every variant and weight type (bf16, fp32, int8,
 * fp8; int8 with q8 activations where the variant has them), a token's
 * outputs must be the same bits computed alone (decode), among T tokens at
 * any place (prefill tiles, leftover tokens), and with the rows split at
 * any boundaries (threads), with strided x and y. Shapes cover K below, at
 * and between whole steps (8 / 16 / 32 columns; the q8 kernels' 32 / 64
 * bytes) and N below and between tiles.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_kernels.h"
#include "check.h"
#include "cpu_variant.h"
#include "model/quantize.h"
#include "util/common.h"
#include "util/numeric.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float uniform(void) { /* in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)(rng >> 40) * 0x1p-23f - 1.0f;
}

/* W[i] (row-major index) as the math defines it: 8-bit ones dequantised. */
static double weight_at(const cpu_matrix *w, int64_t i) {
    switch (w->dtype) {
    case NC_DTYPE_BF16: return nc_bf16_to_f32(((const uint16_t *)w->data)[i]);
    case NC_DTYPE_I8: return (double)((const int8_t *)w->data)[i] * w->scale[i / w->cols];
    case NC_DTYPE_F8_E4M3: return (double)nc_f8e4m3_to_f32(((const uint8_t *)w->data)[i]) * w->scale[i / w->cols];
    default: return ((const float *)w->data)[i];
    }
}

/* x as the kernels multiply it: rounded to bf16 when `x_bf16` (what
 * vdpbf16ps multiplies), to its q8 value d_b * xq_k when xq is given. */
static double x_at(const float *x, int64_t ldx, const cpu_xq8 *xq, int64_t t, int64_t k, bool x_bf16) {
    if (xq) return (double)xq->d[t * xq->ldd + k / CPU_Q8_BLOCK] * xq->q[t * xq->ldq + k];
    return x_bf16 ? nc_round_bf16(x[t * ldx + k]) : x[t * ldx + k];
}

/* Checks y[t*ldy + r] against the exact product for every t < T, r < N. */
static void check_exact(const char *what, const float *x, int64_t ldx, const cpu_xq8 *xq, int64_t T,
                        const cpu_matrix *w, const float *y, int64_t ldy, bool x_bf16) {
    int64_t K = w->cols;
    for (int64_t t = 0; t < T; t++)
        for (int64_t r = 0; r < w->rows; r++) {
            double exact = 0, mag = 0;
            for (int64_t k = 0; k < K; k++) {
                double p = x_at(x, ldx, xq, t, k, x_bf16) * weight_at(w, r * K + k);
                exact += p;
                mag += fabs(p);
            }
            double err = fabs((double)y[t * ldy + r] - exact), bound = (double)(K + 3) * 0x1p-24 * mag + 1e-30;
            CHECK(err <= bound, "%s: token %lld row %lld: %.9g vs exact %.9g (bound %.3g)", what, (long long)t,
                  (long long)r, y[t * ldy + r], exact, bound);
        }
}

/* x [T, ldx] in q8 (cpu_kernels.h), into buffers the caller frees. */
static cpu_xq8 quantize_x(const float *x, int64_t ldx, int64_t T, int64_t K) {
    int64_t ldq = K + 1, ldd = (K + CPU_Q8_BLOCK - 1) / CPU_Q8_BLOCK + 2; /* strided rows */
    int8_t *q = malloc((size_t)(T * ldq));
    float *d = malloc(sizeof(float) * (size_t)(T * ldd));
    cpu_quantize_x_q8(x, ldx, T, K, q, ldq, d, ldd);
    return (cpu_xq8){q, d, ldq, ldd};
}

static void free_xq8(cpu_xq8 *xq) {
    free((void *)xq->q), free((void *)xq->d);
}

/* The weight matrix [N, K] of `dtype` from uniform values (8-bit: rows
 * quantised with their scales, as nanochat quantize writes them). */
static cpu_matrix random_matrix(nc_dtype dtype, int64_t N, int64_t K) {
    void *data = malloc((size_t)(N * K) * 4);
    float *scale = NULL, *row = malloc(sizeof(float) * (size_t)K);
    if (dtype == NC_DTYPE_I8 || dtype == NC_DTYPE_F8_E4M3) scale = malloc(sizeof(float) * (size_t)N);
    for (int64_t r = 0; r < N; r++) {
        for (int64_t k = 0; k < K; k++) row[k] = uniform() * (float)(1 + r % 3);
        for (int64_t k = 0; k < K; k++) {
            if (dtype == NC_DTYPE_BF16) ((uint16_t *)data)[r * K + k] = nc_f32_to_bf16(row[k]);
            if (dtype == NC_DTYPE_F32) ((float *)data)[r * K + k] = row[k];
        }
        if (dtype == NC_DTYPE_I8) scale[r] = nc_quantize_row_int8(row, K, (int8_t *)data + r * K);
        if (dtype == NC_DTYPE_F8_E4M3) scale[r] = nc_quantize_row_fp8(row, K, (uint8_t *)data + r * K);
    }
    free(row);
    return (cpu_matrix){data, dtype, N, K, scale};
}

/* With q8 (int8 weights on a VNNI variant): x is rounded per token first,
 * as the forward pass does, and the product is the q8 math. */
static void check_matmul(const cpu_kernels *k, nc_dtype dtype, bool q8, int64_t N, int64_t K, int64_t T,
                         float *scratch) {
    char what[128];
    snprintf(what, sizeof what, "%s %s%s N=%lld K=%lld T=%lld", k->name, nc_dtype_name(dtype), q8 ? " q8" : "",
             (long long)N, (long long)K, (long long)T);
    cpu_matrix w = random_matrix(dtype, N, K);
    int64_t ldx = K + 3, ldy = N + 5; /* strided rows */
    float *x = malloc(sizeof(float) * (size_t)(T * ldx)), *x1 = malloc(sizeof(float) * (size_t)(T * ldx));
    float *y = malloc(sizeof(float) * (size_t)(T * ldy)), *y1 = malloc(sizeof(float) * (size_t)(T * ldy));
    for (int64_t i = 0; i < T * ldx; i++) x[i] = uniform();

    cpu_xq8 xq = {0}, xq1 = {0};
    if (q8) xq = quantize_x(x, ldx, T, K);
    cpu_matmul(k, x, ldx, q8 ? &xq : NULL, T, &w, 0, N, y, ldy, scratch);
    check_exact(what, x, ldx, q8 ? &xq : NULL, T, &w, y, ldy, !k->exact && dtype == NC_DTYPE_BF16);

    /* each token alone (its x rounded alone): the same bits */
    bool same = true;
    for (int64_t t = 0; t < T; t++) {
        if (q8) xq1 = quantize_x(x + t * ldx, ldx, 1, K);
        cpu_matmul(k, x + t * ldx, ldx, q8 ? &xq1 : NULL, 1, &w, 0, N, y1, ldy, scratch);
        if (q8) free_xq8(&xq1);
        same = same && !memcmp(y1, y + t * ldy, sizeof(float) * (size_t)N);
    }
    CHECK(same, "%s: a token alone differs from the same token among %lld", what, (long long)T);

    /* the tokens reversed (other tile positions), the rows split at three random points */
    for (int64_t t = 0; t < T; t++) memcpy(x1 + t * ldx, x + (T - 1 - t) * ldx, sizeof(float) * (size_t)ldx);
    if (q8) xq1 = quantize_x(x1, ldx, T, K);
    int64_t cut[5] = {0, 0, 0, 0, N};
    for (int i = 1; i < 4; i++) cut[i] = (int64_t)((uniform() + 1.0f) * 0.5f * (float)N);
    for (int i = 1; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            if (cut[j] < cut[i]) {
                int64_t c = cut[i];
                cut[i] = cut[j], cut[j] = c;
            }
    for (int i = 0; i < 4; i++)
        if (cut[i] < cut[i + 1]) cpu_matmul(k, x1, ldx, q8 ? &xq1 : NULL, T, &w, cut[i], cut[i + 1], y1, ldy, scratch);
    same = true;
    for (int64_t t = 0; t < T; t++)
        same = same && !memcmp(y1 + t * ldy, y + (T - 1 - t) * ldy, sizeof(float) * (size_t)N);
    CHECK(same, "%s: reordered tokens and rows split at %lld/%lld/%lld differ", what, (long long)cut[1],
          (long long)cut[2], (long long)cut[3]);
    if (q8) free_xq8(&xq), free_xq8(&xq1);
    free((void *)w.data), free((void *)w.scale), free(x), free(x1), free(y), free(y1);
}

/* Attention over n keys of D: scores against a double reference, the mix
 * against out0 + sum p[s] v[s]; scores of keys alone equal those in a tile. */
static void check_attention(const cpu_kernels *k) {
    const int64_t Ds[] = {1, 8, 16, 20, 64, 128}, ns[] = {1, 3, 4, 5, 64};
    for (size_t a = 0; a < NC_ARRAY_LEN(Ds); a++)
        for (size_t b = 0; b < NC_ARRAY_LEN(ns); b++) {
            int64_t D = Ds[a], n = ns[b];
            float q[128], keys[64 * 128], p[64], sc[64], one, out[128], out0[128];
            for (int64_t i = 0; i < D; i++) q[i] = uniform(), out[i] = out0[i] = uniform();
            for (int64_t i = 0; i < n * D; i++) keys[i] = uniform();
            for (int64_t s = 0; s < n; s++) p[s] = uniform() + 1.0f;
            k->attn_scores(q, keys, n, D, 0.5f, sc);
            bool ok = true, same = true;
            for (int64_t s = 0; s < n; s++) {
                double exact = 0, mag = 0;
                for (int64_t d = 0; d < D; d++) {
                    exact += (double)q[d] * keys[s * D + d];
                    mag += fabs((double)q[d] * keys[s * D + d]);
                }
                ok = ok && fabs((double)sc[s] - 0.5 * exact) <= (double)(D + 3) * 0x1p-24 * mag;
                k->attn_scores(q, keys + s * D, 1, D, 0.5f, &one);
                same = same && !memcmp(&one, &sc[s], sizeof one);
            }
            CHECK(ok, "%s attn_scores D=%lld n=%lld", k->name, (long long)D, (long long)n);
            CHECK(same, "%s attn_scores D=%lld n=%lld: a key alone differs from the tile", k->name, (long long)D,
                  (long long)n);
            k->attn_mix(p, keys, n, D, out);
            ok = true;
            for (int64_t d = 0; d < D; d++) {
                double exact = out0[d], mag = fabs(out0[d]);
                for (int64_t s = 0; s < n; s++) {
                    exact += (double)p[s] * keys[s * D + d];
                    mag += fabs((double)p[s] * keys[s * D + d]);
                }
                ok = ok && fabs((double)out[d] - exact) <= (double)(n + 2) * 0x1p-24 * mag;
            }
            CHECK(ok, "%s attn_mix D=%lld n=%lld", k->name, (long long)D, (long long)n);
        }
}

int main(void) {
    const int64_t Ns[] = {1, 3, 4, 9, 30}, Ks[] = {1, 7, 8, 15, 16, 17, 31, 32, 33, 64, 100, 257};
    const int64_t Ts[] = {1, 2, 5, 6, 7, 13, 40};
    int tested = 0;
    for (int v = 0; cpu_kernel_variants[v]; v++) {
        const cpu_kernels *k = cpu_kernel_variants[v];
        if (!cpu_variant_wanted(k)) continue;
        float *scratch = malloc(sizeof(float) * (size_t)cpu_matmul_scratch_floats(5120)); /* the widest K below */
        /* bf16, fp32, int8 and fp8 weight-only, int8 with q8 activations */
        const nc_dtype dts[] = {NC_DTYPE_BF16, NC_DTYPE_F32, NC_DTYPE_I8, NC_DTYPE_F8_E4M3, NC_DTYPE_I8};
        for (size_t d = 0; d < NC_ARRAY_LEN(dts); d++) {
            bool q8 = d == NC_ARRAY_LEN(dts) - 1;
            if (q8 && !k->matmul_i8_q8) continue;
            for (size_t a = 0; a < NC_ARRAY_LEN(Ns); a++)
                for (size_t b = 0; b < NC_ARRAY_LEN(Ks); b++)
                    for (size_t c = 0; c < NC_ARRAY_LEN(Ts); c++)
                        check_matmul(k, dts[d], q8, Ns[a], Ks[b], Ts[c], scratch);
        }
        /* d20's shapes, and more tokens than one tile of x holds */
        check_matmul(k, NC_DTYPE_BF16, false, 21, 1280, 9, scratch);
        check_matmul(k, NC_DTYPE_BF16, false, 6, 1280, 160, scratch);
        check_matmul(k, NC_DTYPE_F32, false, 7, 1280, 151, scratch);
        check_matmul(k, NC_DTYPE_F8_E4M3, false, 9, 1280, 70, scratch);
        check_matmul(k, NC_DTYPE_I8, k->matmul_i8_q8 != NULL, 11, 5120, 13, scratch);
        check_attention(k);
        free(scratch);
        printf("%s: checked\n", k->name);
        tested++;
    }
    const char *only = getenv("NC_CPU_KERNELS");
    CHECK(tested > 0, "no kernel variant ran (NC_CPU_KERNELS=%s)", only ? only : "");
    return check_summary("test_cpu_kernels");
}

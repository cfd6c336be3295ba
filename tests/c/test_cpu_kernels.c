/*
 * test_cpu_kernels.c: the CPU backend's kernels (cpu_kernels.h), every
 * variant this CPU runs (NC_CPU_KERNELS=name limits it to one).
 *
 * Reference: the same products (and attention's scores and weighted sums)
 * in double precision, written here (for the avx512bf16 variant's bf16
 * products, of x rounded to bf16, which is what it multiplies). A
 * result passes when |ours - exact| <= (K + 2) * 2^-24 * sum_k |x_k w_k|,
 * the worst-case error of any fp32 order of summation (a wrong or missing
 * term is off by a whole |x_k w_k|).
 *
 * Batch invariance: for every variant and weight type, a token's outputs
 * must be the same bits computed alone (decode), among T tokens at any
 * place (prefill tiles, leftover tokens), and with the rows split at any
 * boundaries (threads), with strided x and y. Shapes cover K below, at and
 * between whole steps (8 / 16 / 32 columns) and N below and between tiles.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_kernels.h"
#include "check.h"
#include "util/common.h"
#include "util/numeric.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float uniform(void) { /* in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)(rng >> 40) * 0x1p-23f - 1.0f;
}

static float weight_at(const cpu_matrix *w, int64_t i) {
    return w->dtype == NC_DTYPE_BF16 ? nc_bf16_to_f32(((const uint16_t *)w->data)[i]) : ((const float *)w->data)[i];
}

/* Checks y[t*ldy + r] against the exact product for every t < T, r < N
 * (with x rounded to bf16 first when `x_bf16`: what vdpbf16ps multiplies). */
static void check_exact(const char *what, const float *x, int64_t ldx, int64_t T, const cpu_matrix *w, const float *y,
                        int64_t ldy, bool x_bf16) {
    int64_t K = w->cols;
    for (int64_t t = 0; t < T; t++)
        for (int64_t r = 0; r < w->rows; r++) {
            double exact = 0, mag = 0;
            for (int64_t k = 0; k < K; k++) {
                float xv = x_bf16 ? nc_round_bf16(x[t * ldx + k]) : x[t * ldx + k];
                double p = (double)xv * weight_at(w, r * K + k);
                exact += p;
                mag += fabs(p);
            }
            double err = fabs((double)y[t * ldy + r] - exact), bound = (double)(K + 2) * 0x1p-24 * mag + 1e-30;
            CHECK(err <= bound, "%s: token %lld row %lld: %.9g vs exact %.9g (bound %.3g)", what, (long long)t,
                  (long long)r, y[t * ldy + r], exact, bound);
        }
}

static void check_matmul(const cpu_kernels *k, nc_dtype dtype, int64_t N, int64_t K, int64_t T, float *scratch) {
    char what[128];
    snprintf(what, sizeof what, "%s %s N=%lld K=%lld T=%lld", k->name, nc_dtype_name(dtype), (long long)N,
             (long long)K, (long long)T);
    void *data = malloc((size_t)(N * K) * 4);
    for (int64_t i = 0; i < N * K; i++) {
        float v = uniform();
        if (dtype == NC_DTYPE_BF16) ((uint16_t *)data)[i] = nc_f32_to_bf16(v);
        else ((float *)data)[i] = v;
    }
    cpu_matrix w = {data, dtype, N, K};
    int64_t ldx = K + 3, ldy = N + 5; /* strided rows */
    float *x = malloc(sizeof(float) * (size_t)(T * ldx)), *x1 = malloc(sizeof(float) * (size_t)(T * ldx));
    float *y = malloc(sizeof(float) * (size_t)(T * ldy)), *y1 = malloc(sizeof(float) * (size_t)(T * ldy));
    for (int64_t i = 0; i < T * ldx; i++) x[i] = uniform();

    cpu_matmul(k, x, ldx, T, &w, 0, N, y, ldy, scratch);
    check_exact(what, x, ldx, T, &w, y, ldy, !k->exact && dtype == NC_DTYPE_BF16);

    /* each token alone: the same bits */
    bool same = true;
    for (int64_t t = 0; t < T; t++) {
        cpu_matmul(k, x + t * ldx, ldx, 1, &w, 0, N, y1, ldy, scratch);
        same = same && !memcmp(y1, y + t * ldy, sizeof(float) * (size_t)N);
    }
    CHECK(same, "%s: a token alone differs from the same token among %lld", what, (long long)T);

    /* the tokens reversed (other tile positions), the rows split at three random points */
    for (int64_t t = 0; t < T; t++) memcpy(x1 + t * ldx, x + (T - 1 - t) * ldx, sizeof(float) * (size_t)ldx);
    int64_t cut[5] = {0, 0, 0, 0, N};
    for (int i = 1; i < 4; i++) cut[i] = (int64_t)((uniform() + 1.0f) * 0.5f * (float)N);
    for (int i = 1; i < 4; i++)
        for (int j = i + 1; j < 4; j++)
            if (cut[j] < cut[i]) {
                int64_t c = cut[i];
                cut[i] = cut[j], cut[j] = c;
            }
    for (int i = 0; i < 4; i++)
        if (cut[i] < cut[i + 1]) cpu_matmul(k, x1, ldx, T, &w, cut[i], cut[i + 1], y1, ldy, scratch);
    same = true;
    for (int64_t t = 0; t < T; t++)
        same = same && !memcmp(y1 + t * ldy, y + (T - 1 - t) * ldy, sizeof(float) * (size_t)N);
    CHECK(same, "%s: reordered tokens and rows split at %lld/%lld/%lld differ", what, (long long)cut[1],
          (long long)cut[2], (long long)cut[3]);
    free(data), free(x), free(x1), free(y), free(y1);
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
    const char *only = getenv("NC_CPU_KERNELS");
    const int64_t Ns[] = {1, 3, 4, 9, 30}, Ks[] = {1, 7, 8, 15, 16, 17, 31, 32, 33, 64, 100, 257};
    const int64_t Ts[] = {1, 2, 5, 6, 7, 13, 40};
    int tested = 0;
    for (int v = 0; cpu_kernel_variants[v]; v++) {
        const cpu_kernels *k = cpu_kernel_variants[v];
        if (only && *only && strcmp(only, "auto") && strcmp(only, k->name)) continue;
        if (!cpu_kernels_supported(k)) {
            printf("%s: not supported on this CPU, skipped\n", k->name);
            continue;
        }
        float *scratch = malloc(sizeof(float) * (size_t)cpu_matmul_scratch_floats(1280));
        for (int d = 0; d < 2; d++)
            for (size_t a = 0; a < NC_ARRAY_LEN(Ns); a++)
                for (size_t b = 0; b < NC_ARRAY_LEN(Ks); b++)
                    for (size_t c = 0; c < NC_ARRAY_LEN(Ts); c++)
                        check_matmul(k, d ? NC_DTYPE_F32 : NC_DTYPE_BF16, Ns[a], Ks[b], Ts[c], scratch);
        /* d20's shapes, and more tokens than one tile of x holds */
        check_matmul(k, NC_DTYPE_BF16, 21, 1280, 9, scratch);
        check_matmul(k, NC_DTYPE_BF16, 6, 1280, 160, scratch);
        check_matmul(k, NC_DTYPE_F32, 7, 1280, 151, scratch);
        check_attention(k);
        free(scratch);
        printf("%s: checked\n", k->name);
        tested++;
    }
    CHECK(tested > 0, "no kernel variant ran (NC_CPU_KERNELS=%s)", only ? only : "");
    return check_summary("test_cpu_kernels");
}

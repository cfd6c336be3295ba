/*
 * cpu_kernels_scalar.c: portable C versions of the CPU kernels (cpu_kernels.h)
 * and the runtime selection of the best variant.
 *
 * These are the reference the vector variants are checked against
 * (tests/c/test_cpu_kernels.c, dev/kernels/cpu_matmul.c) and the fallback
 * on CPUs without AVX2. They accumulate in 8 interleaved partial sums (so
 * the compiler can vectorise them), in an order of summation of their own
 * that depends on neither T nor the rows asked for (cpu_kernels.h).
 */
#include <string.h>

#include "../../util/common.h"
#include "../../util/numeric.h"
#include "cpu_kernels.h"

static float dot_scalar(const float *a, const float *b, int64_t n) {
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float s = 0;
    for (; i < n; i++) s += a[i] * b[i];
    return s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

static void attn_scores_scalar(const float *q, const float *keys, int64_t n, int64_t D, float scale, float *scores) {
    for (int64_t s = 0; s < n; s++) scores[s] = dot_scalar(q, keys + s * D, D) * scale;
}

static void attn_mix_scalar(const float *p, const float *vals, int64_t n, int64_t D, float *out) {
    for (int64_t s = 0; s < n; s++)
        for (int64_t d = 0; d < D; d++) out[d] += p[s] * vals[s * D + d];
}

static void matmul_f32_scalar(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w,
                              int64_t r0, int64_t r1, float *y, int64_t ldy, float *scratch) {
    const float *W = w->data;
    int64_t K = w->cols;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t t = 0; t < T; t++) y[t * ldy + r] = dot_scalar(x + t * ldx, W + r * K, K);
}

/* bf16 rows are widened in chunks of 256 so the dot product stays shared. */
static void matmul_bf16_scalar(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w,
                               int64_t r0, int64_t r1, float *y, int64_t ldy, float *scratch) {
    const uint16_t *W = w->data;
    int64_t K = w->cols;
    enum { CHUNK = 256 };
    float row[CHUNK];
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t t = 0; t < T; t++) y[t * ldy + r] = 0;
        for (int64_t k0 = 0; k0 < K; k0 += CHUNK) {
            int64_t n = NC_MIN((int64_t)CHUNK, K - k0);
            for (int64_t k = 0; k < n; k++) row[k] = nc_bf16_to_f32(W[r * K + k0 + k]);
            for (int64_t t = 0; t < T; t++) y[t * ldy + r] += dot_scalar(x + t * ldx + k0, row, n);
        }
    }
}

const cpu_kernels cpu_kernels_scalar = {
    .name = "scalar",
    .exact = true,
    .matmul_bf16 = matmul_bf16_scalar,
    .matmul_f32 = matmul_f32_scalar,
    .attn_scores = attn_scores_scalar,
    .attn_mix = attn_mix_scalar,
};

const cpu_kernels *const cpu_kernel_variants[] = {
#if defined(__x86_64__)
    &cpu_kernels_avx512,
    &cpu_kernels_avx2,
    &cpu_kernels_avx512bf16,
#endif
    &cpu_kernels_scalar,
    NULL,
};

bool cpu_kernels_supported(const cpu_kernels *k) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (k == &cpu_kernels_avx512) return avx2 && __builtin_cpu_supports("avx512f");
    if (k == &cpu_kernels_avx512bf16)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512bf16");
    if (k == &cpu_kernels_avx2) return avx2;
#endif
    return k == &cpu_kernels_scalar;
}

const cpu_kernels *cpu_kernels_select(const char *isa) {
    bool want_auto = !isa || !*isa || !strcmp(isa, "auto");
    for (int i = 0; cpu_kernel_variants[i]; i++) {
        const cpu_kernels *k = cpu_kernel_variants[i];
        if ((want_auto ? k->exact : !strcmp(isa, k->name)) && cpu_kernels_supported(k)) return k;
    }
    return NULL;
}

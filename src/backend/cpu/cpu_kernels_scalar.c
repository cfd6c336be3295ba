/*
 * cpu_kernels_scalar.c: portable C versions of the CPU kernels (cpu_kernels.h)
 * and the runtime selection of the best variant.
 *
 * These are the reference the vector variants are checked against
 * (tests/c/test_cpu_kernels.c, tests/c/test_quant.c, dev/kernels/cpu_matmul.c)
 * and the fallback on CPUs without AVX2. They accumulate in 8 interleaved
 * partial sums (so the compiler can vectorise them), in an order of
 * summation of their own that depends on neither T nor the rows asked for
 * (cpu_kernels.h).
 */
#include <pthread.h>
#include <string.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "../../model/quantize.h"
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

/* ==== weights narrower than fp32 ==== */

static float f8_table[256];
static pthread_once_t f8_once = PTHREAD_ONCE_INIT;

static void f8_table_init(void) {
    for (int b = 0; b < 256; b++) f8_table[b] = nc_f8e4m3_to_f32((uint8_t)b);
}

const float *cpu_f8_table(void) {
    pthread_once(&f8_once, f8_table_init);
    return f8_table;
}

/* bf16, int8 and fp8 rows are widened to fp32 in chunks of 256 so the dot
 * product stays shared; an 8-bit row's sum is then multiplied by its scale. */
static void matmul_widened_scalar(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w, int64_t r0,
                                  int64_t r1, float *y, int64_t ldy, float *scratch) {
    const float *lut = cpu_f8_table();
    int64_t K = w->cols;
    enum { CHUNK = 256 };
    float row[CHUNK];
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t t = 0; t < T; t++) y[t * ldy + r] = 0;
        for (int64_t k0 = 0; k0 < K; k0 += CHUNK) {
            int64_t n = NC_MIN((int64_t)CHUNK, K - k0), at = r * K + k0;
            switch (w->dtype) {
            case NC_DTYPE_BF16:
                for (int64_t k = 0; k < n; k++) row[k] = nc_bf16_to_f32(((const uint16_t *)w->data)[at + k]);
                break;
            case NC_DTYPE_I8:
                for (int64_t k = 0; k < n; k++) row[k] = (float)((const int8_t *)w->data)[at + k];
                break;
            default:
                for (int64_t k = 0; k < n; k++) row[k] = lut[((const uint8_t *)w->data)[at + k]];
                break;
            }
            for (int64_t t = 0; t < T; t++) y[t * ldy + r] += dot_scalar(x + t * ldx + k0, row, n);
        }
        if (w->scale)
            for (int64_t t = 0; t < T; t++) y[t * ldy + r] *= w->scale[r];
    }
}

/* ==== q8 activations ==== */

void cpu_quantize_x_q8(const float *x, int64_t ldx, int64_t T, int64_t K, int8_t *q, int64_t ldq, float *d,
                       int64_t ldd) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t k = 0, b = 0; k < K; k += CPU_Q8_BLOCK, b++)
            d[t * ldd + b] = nc_quantize_row_int8(x + t * ldx + k, NC_MIN((int64_t)CPU_Q8_BLOCK, K - k), q + t * ldq + k);
}

void cpu_matmul_i8_q8_ref(const cpu_xq8 *x, int64_t T, const cpu_matrix *w, int64_t r0, int64_t r1, float *y,
                          int64_t ldy) {
    const int8_t *W = w->data;
    int64_t K = w->cols;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t t = 0; t < T; t++) {
            const int8_t *xq = x->q + t * x->ldq, *wq = W + r * K;
            float acc = 0;
            for (int64_t k = 0, b = 0; k < K; k += CPU_Q8_BLOCK, b++) {
                int32_t s = 0;
                for (int64_t i = k; i < NC_MIN(k + CPU_Q8_BLOCK, K); i++) s += (int32_t)xq[i] * wq[i];
                acc += x->d[t * x->ldd + b] * (float)s;
            }
            y[t * ldy + r] = acc * w->scale[r];
        }
}

const cpu_kernels cpu_kernels_scalar = {
    .name = "scalar",
    .exact = true,
    .matmul_bf16 = matmul_widened_scalar,
    .matmul_f32 = matmul_f32_scalar,
    .matmul_i8 = matmul_widened_scalar,
    .matmul_f8 = matmul_widened_scalar,
    .attn_scores = attn_scores_scalar,
    .attn_mix = attn_mix_scalar,
};

/* ==== selection ==== */

const cpu_kernels *const cpu_kernel_variants[] = {
#if defined(__x86_64__)
    &cpu_kernels_avx512vnni,
    &cpu_kernels_avx512,
    &cpu_kernels_avxvnni,
    &cpu_kernels_avx2,
    &cpu_kernels_avx512bf16,
#endif
    &cpu_kernels_scalar,
    NULL,
};

#if defined(__x86_64__)
/* CPUID bits that not every compiler's __builtin_cpu_supports knows (the
 * AVX state itself is checked through "avx2"). */
static bool cpuid_bit(unsigned leaf, unsigned sub, int reg, int bit) {
    unsigned r[4];
    if (!__get_cpuid_count(leaf, sub, &r[0], &r[1], &r[2], &r[3])) return false;
    return (r[reg] >> bit) & 1;
}
#endif

bool cpu_kernels_supported(const cpu_kernels *k) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpuid_bit(1, 0, 2, 29); /* F16C */
    bool avx512 = avx2 && __builtin_cpu_supports("avx512f");
    if (k == &cpu_kernels_avx512) return avx512;
    if (k == &cpu_kernels_avx512vnni)
        return avx512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               cpuid_bit(7, 0, 2, 11); /* AVX512_VNNI */
    if (k == &cpu_kernels_avx512bf16)
        return avx512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
    if (k == &cpu_kernels_avxvnni) return avx2 && cpuid_bit(7, 1, 0, 4); /* AVX-VNNI */
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

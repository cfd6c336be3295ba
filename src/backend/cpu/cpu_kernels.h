/*
 * cpu_kernels.h: the inner loops of the CPU backend, in interchangeable
 * instruction-set variants (portable scalar C, AVX2+FMA, and for int8
 * weights AVX-VNNI / AVX512-VNNI), picked once at backend init by runtime
 * CPU detection.
 *
 * By far the most time of a decoded token is spent in the matmul: it
 * streams every weight matrix from memory once, so it must run at memory
 * bandwidth. Weights are read in place (row-major [N, K] as PyTorch stores
 * nn.Linear): bf16 or fp32, or 8-bit with one fp32 scale per row
 * (docs/quantization.md); activations and accumulation are fp32.
 *
 * Two kinds of int8 math:
 *   - weight-only (scalar, avx2): y = s[r] * sum_k x[k] q[r, k] in fp32,
 *     the product of the fp32 activations with the dequantised weights up
 *     to fp32 rounding;
 *   - q8 activations (avxvnni, avx512vnni): x is first rounded to int8 in
 *     blocks of 32 (cpu_quantize_x_q8, llama.cpp's q8_0 idea) so that the
 *     products are exact int8 x int8 dot products (vpdpbusd):
 *     y = s[r] * sum_b d[b] * sum_{k in b} xq[k] q[r, k]. A different,
 *     slightly less precise math: tested against cpu_matmul_i8_q8_ref and
 *     measured with `nanochat eval` (docs/quantization.md).
 */
#ifndef NC_BACKEND_CPU_KERNELS_H
#define NC_BACKEND_CPU_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "../../formats/tensor.h"

/* A weight matrix as the kernels see it. */
typedef struct {
    const void *data;   /* [rows, cols] row-major: bf16, fp32, int8 or fp8 e4m3 */
    nc_dtype dtype;     /* NC_DTYPE_BF16, F32, I8 or F8_E4M3 */
    int64_t rows;       /* N: outputs */
    int64_t cols;       /* K: inputs */
    const float *scale; /* [rows] for I8 / F8_E4M3 (W[r, k] = scale[r] * q[r, k]), else NULL */
} cpu_matrix;

/*
 * y[t*ldy + r] = sum_k x[t*ldx + k] * W[r, k]  for t in [0, T), r in [r0, r1).
 * x: [T, K] fp32 (row stride ldx); y: [T, *] fp32 (row stride ldy).
 * Only rows [r0, r1) of W are read, so threads can split the rows.
 */
typedef void (*cpu_matmul_fn)(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w,
                              int64_t r0, int64_t r1, float *y, int64_t ldy);

/* Activations in int8, blocks of Q8_BLOCK along K: x[t, k] ~ d[t, k / 32] *
 * q[t, k]; the last block of a row may be shorter. */
#define CPU_Q8_BLOCK 32

typedef struct {
    const int8_t *q; /* [T, ldq] */
    const float *d;  /* [T, ldd], ldd >= ceil(K / 32) */
    int64_t ldq, ldd;
} cpu_xq8;

/* Rounds x [T, K] (row stride ldx) to out: each block as an int8 weight row
 * (quantize.h: d = max|x| / 127, q = rint(x / d)). */
void cpu_quantize_x_q8(const float *x, int64_t ldx, int64_t T, int64_t K, int8_t *q, int64_t ldq, float *d,
                       int64_t ldd);

/* y as cpu_matmul_fn, for int8 W and q8 activations. */
typedef void (*cpu_matmul_q8_fn)(const cpu_xq8 *x, int64_t T, const cpu_matrix *w, int64_t r0, int64_t r1,
                                 float *y, int64_t ldy);

/* The q8 math in plain C, blocks summed in order: what the VNNI kernels
 * compute up to fp32 summation order (their test reference). */
void cpu_matmul_i8_q8_ref(const cpu_xq8 *x, int64_t T, const cpu_matrix *w, int64_t r0, int64_t r1, float *y,
                          int64_t ldy);

typedef struct {
    const char *name;          /* "scalar", "avx2", "avxvnni", "avx512vnni" */
    cpu_matmul_fn matmul_bf16; /* W in bf16 */
    cpu_matmul_fn matmul_f32;  /* W in fp32 */
    cpu_matmul_fn matmul_i8;   /* W in int8, weight-only */
    cpu_matmul_fn matmul_f8;   /* W in fp8 e4m3, weight-only */
    cpu_matmul_q8_fn matmul_i8_q8; /* NULL, or int8 W with q8 activations (used instead of matmul_i8) */
    float (*dot)(const float *a, const float *b, int64_t n);           /* sum a[i]*b[i] */
    void (*axpy)(float alpha, const float *x, float *y, int64_t n);    /* y += alpha*x */
} cpu_kernels;

extern const cpu_kernels cpu_kernels_scalar;
#if defined(__x86_64__)
extern const cpu_kernels cpu_kernels_avx2, cpu_kernels_avxvnni, cpu_kernels_avx512vnni;
void cpu_matmul_i8_q8_avxvnni(const cpu_xq8 *x, int64_t T, const cpu_matrix *w, int64_t r0, int64_t r1, float *y,
                              int64_t ldy);
void cpu_matmul_i8_q8_avx512vnni(const cpu_xq8 *x, int64_t T, const cpu_matrix *w, int64_t r0, int64_t r1,
                                 float *y, int64_t ldy);
#endif

/* The kernels to use: `isa` "scalar" / "avx2" / "avxvnni" / "avx512vnni"
 * forces a variant (NULL when the CPU lacks it), NULL or "auto" picks the
 * best the CPU supports (in that order, last first). */
const cpu_kernels *cpu_kernels_select(const char *isa);

/* e4m3fn byte -> fp32 (256 entries; util/numeric.h's conversion). */
const float *cpu_f8_table(void);

/* Dispatches on w->dtype; int8 goes through matmul_i8_q8 when the kernels
 * have it and the caller quantised x into `xq`. */
static inline void cpu_matmul(const cpu_kernels *k, const float *x, int64_t ldx, const cpu_xq8 *xq, int64_t T,
                              const cpu_matrix *w, int64_t r0, int64_t r1, float *y, int64_t ldy) {
    switch (w->dtype) {
    case NC_DTYPE_BF16: k->matmul_bf16(x, ldx, T, w, r0, r1, y, ldy); break;
    case NC_DTYPE_I8:
        if (xq && k->matmul_i8_q8) k->matmul_i8_q8(xq, T, w, r0, r1, y, ldy);
        else k->matmul_i8(x, ldx, T, w, r0, r1, y, ldy);
        break;
    case NC_DTYPE_F8_E4M3: k->matmul_f8(x, ldx, T, w, r0, r1, y, ldy); break;
    default: k->matmul_f32(x, ldx, T, w, r0, r1, y, ldy); break;
    }
}

#endif /* NC_BACKEND_CPU_KERNELS_H */

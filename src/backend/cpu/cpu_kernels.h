/*
 * cpu_kernels.h: the inner loops of the CPU backend, in interchangeable
 * instruction-set variants (portable scalar C, AVX2+FMA), picked once at
 * backend init by runtime CPU detection.
 *
 * By far the most time of a decoded token is spent in cpu_matmul_fn: it
 * streams every weight matrix from memory once, so it must run at memory
 * bandwidth. Weights are read in place (bf16 or fp32, row-major [N, K] as
 * PyTorch stores nn.Linear); activations and accumulation are fp32.
 */
#ifndef NC_BACKEND_CPU_KERNELS_H
#define NC_BACKEND_CPU_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "../../formats/tensor.h"

/* A weight matrix as the kernels see it. */
typedef struct {
    const void *data; /* [rows, cols] row-major, bf16 or fp32 */
    nc_dtype dtype;   /* NC_DTYPE_BF16 or NC_DTYPE_F32 */
    int64_t rows;     /* N: outputs */
    int64_t cols;     /* K: inputs */
} cpu_matrix;

/*
 * y[t*ldy + r] = sum_k x[t*ldx + k] * W[r, k]  for t in [0, T), r in [r0, r1).
 * x: [T, K] fp32 (row stride ldx); y: [T, *] fp32 (row stride ldy).
 * Only rows [r0, r1) of W are read, so threads can split the rows.
 */
typedef void (*cpu_matmul_fn)(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w,
                              int64_t r0, int64_t r1, float *y, int64_t ldy);

typedef struct {
    const char *name;          /* "scalar", "avx2" */
    cpu_matmul_fn matmul_bf16; /* W in bf16 */
    cpu_matmul_fn matmul_f32;  /* W in fp32 */
    float (*dot)(const float *a, const float *b, int64_t n);           /* sum a[i]*b[i] */
    void (*axpy)(float alpha, const float *x, float *y, int64_t n);    /* y += alpha*x */
} cpu_kernels;

extern const cpu_kernels cpu_kernels_scalar;
#if defined(__x86_64__)
extern const cpu_kernels cpu_kernels_avx2;
#endif

/* The kernels to use: `isa` "scalar" / "avx2" forces a variant (NULL when
 * the CPU lacks it), NULL or "auto" picks the best the CPU supports. */
const cpu_kernels *cpu_kernels_select(const char *isa);

/* Dispatches on w->dtype. */
static inline void cpu_matmul(const cpu_kernels *k, const float *x, int64_t ldx, int64_t T,
                              const cpu_matrix *w, int64_t r0, int64_t r1, float *y, int64_t ldy) {
    (w->dtype == NC_DTYPE_BF16 ? k->matmul_bf16 : k->matmul_f32)(x, ldx, T, w, r0, r1, y, ldy);
}

#endif /* NC_BACKEND_CPU_KERNELS_H */

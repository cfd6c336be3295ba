/*
 * cpu_kernels.h: the inner loops of the CPU backend, in interchangeable
 * instruction-set variants, picked once at backend init by runtime CPU
 * detection (or forced with NC_CPU_KERNELS):
 *   scalar      portable C, the reference
 *   avx2        AVX2 + FMA, 8 lanes
 *   avx512      AVX-512F, 16 lanes (the default where the CPU has it)
 *   avx512bf16  avx512 with bf16 weights multiplied by vdpbf16ps: x is
 *               rounded to bf16 first, so it is NOT exact; opt-in only
 * The exact variants compute in fp32: bf16 weights are widened exactly (a
 * bf16 is the top half of an fp32), activations are never rounded.
 *
 * By far the most time of a decoded token is spent in cpu_matmul_fn: it
 * streams every weight matrix from memory once, so it must run at memory
 * bandwidth; prefill runs the same function on many tokens, where it must
 * run at the FMA units' rate. Weights are read in place (bf16 or fp32,
 * row-major [N, K] as PyTorch stores nn.Linear).
 *
 * Batch invariance (docs/performance.md, CPU backend): within one variant,
 * y[t, r] is the same bits whatever T, the token's place among them, and
 * the [r0, r1) split: every code path of a variant (one token or many, a
 * full block of rows or a leftover row) sums x[t, :] * W[r, :] in the one
 * order that variant defines, and a call never splits K.
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
 * scratch: cpu_matmul_scratch_floats(K) floats private to the calling thread.
 */
typedef void (*cpu_matmul_fn)(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w,
                              int64_t r0, int64_t r1, float *y, int64_t ldy, float *scratch);

typedef struct {
    const char *name;          /* "scalar", "avx2", "avx512", "avx512bf16" */
    bool exact;                /* fp32 arithmetic throughout ("auto" picks only these) */
    cpu_matmul_fn matmul_bf16; /* W in bf16 */
    cpu_matmul_fn matmul_f32;  /* W in fp32 */
    /* Attention over one tile of cached keys / values ([n, D] rows):
     * scores[s] = scale * (q . keys[s]), each dot in the variant's one order;
     * out[d] += p[0] * vals[0][d], then + p[1] * vals[1][d], ... in order of s
     * (so a query's result depends only on its own keys, never on tiling). */
    void (*attn_scores)(const float *q, const float *keys, int64_t n, int64_t D, float scale, float *scores);
    void (*attn_mix)(const float *p, const float *vals, int64_t n, int64_t D, float *out);
} cpu_kernels;

extern const cpu_kernels cpu_kernels_scalar;
#if defined(__x86_64__)
extern const cpu_kernels cpu_kernels_avx2;
extern const cpu_kernels cpu_kernels_avx512;
extern const cpu_kernels cpu_kernels_avx512bf16;
#endif

/* The variants this build knows, best first, NULL-terminated. */
extern const cpu_kernels *const cpu_kernel_variants[];

/* Whether this CPU can run variant `k`. */
bool cpu_kernels_supported(const cpu_kernels *k);

/* The kernels to use: `isa` names a variant (NULL when unknown or the CPU
 * lacks it), NULL, "" or "auto" picks the best exact one the CPU supports. */
const cpu_kernels *cpu_kernels_select(const char *isa);

/* Per-thread scratch a matmul over K columns needs, in floats: the vector
 * variants copy a tile of x there (in the order their loops read it), 8
 * tokens at least and at most 640 KB (with a panel of W, within a 2 MB L2). */
#define CPU_MATMUL_TILE_FLOATS (160 * 1024)
static inline int64_t cpu_matmul_x_floats(int64_t K) {
    int64_t tile = 8 * ((K + 63) / 64 * 64);
    return tile > CPU_MATMUL_TILE_FLOATS ? tile : CPU_MATMUL_TILE_FLOATS;
}
static inline int64_t cpu_matmul_scratch_floats(int64_t K) { return cpu_matmul_x_floats(K); }

/* Dispatches on w->dtype. */
static inline void cpu_matmul(const cpu_kernels *k, const float *x, int64_t ldx, int64_t T, const cpu_matrix *w,
                              int64_t r0, int64_t r1, float *y, int64_t ldy, float *scratch) {
    (w->dtype == NC_DTYPE_BF16 ? k->matmul_bf16 : k->matmul_f32)(x, ldx, T, w, r0, r1, y, ldy, scratch);
}

#endif /* NC_BACKEND_CPU_KERNELS_H */

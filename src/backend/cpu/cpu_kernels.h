/*
 * cpu_kernels.h: the inner loops of the CPU backend, in interchangeable
 * instruction-set variants, picked once at backend init by runtime CPU
 * detection (or forced with NC_CPU_KERNELS):
 *   scalar      portable C, the reference
 *   avx2        AVX2 + FMA + F16C, 8 lanes
 *   avxvnni     avx2, with int8 weights times q8 activations on AVX-VNNI
 *   avx512      AVX-512F, 16 lanes
 *   avx512vnni  avx512, with int8 weights times q8 activations on
 *               AVX512-VNNI (the default where the CPU has it)
 *   avx512bf16  avx512 with bf16 weights multiplied by vdpbf16ps: x is
 *               rounded to bf16 first, so it is NOT exact; opt-in only
 * The exact variants compute float weights in fp32: bf16 weights are
 * widened exactly (a bf16 is the top half of an fp32), activations are
 * never rounded.
 *
 * By far the most time of a decoded token is spent in cpu_matmul_fn: it
 * streams every weight matrix from memory once, so it must run at memory
 * bandwidth; prefill runs the same function on many tokens, where it must
 * run at the FMA units' rate. Weights are read in place (row-major [N, K]
 * as PyTorch stores nn.Linear): bf16 or fp32, or 8-bit with one fp32 scale
 * per row (docs/quantization.md).
 *
 * Two kinds of int8 math:
 *   - weight-only (scalar, avx2, avx512; fp8 weights everywhere):
 *     y = s[r] * sum_k x[k] q[r, k] in fp32, the product of the fp32
 *     activations with the dequantised weights up to fp32 rounding;
 *   - q8 activations (avxvnni, avx512vnni): x is first rounded to int8 in
 *     blocks of 32 (cpu_quantize_x_q8, llama.cpp's q8_0 idea) so that the
 *     products are exact int8 x int8 dot products (vpdpbusd):
 *     y = s[r] * sum_b d[b] * sum_{k in b} xq[k] q[r, k]. A different,
 *     slightly less precise math: tested against cpu_matmul_i8_q8_ref and
 *     measured with `nanochat eval` (docs/quantization.md).
 *
 * Batch invariance (docs/performance.md, CPU backend): within one variant,
 * y[t, r] is the same bits whatever T, the token's place among them, and
 * the [r0, r1) split: every code path of a variant (one token or many, a
 * full block of rows or a leftover row) sums x[t, :] * W[r, :] in the one
 * order that variant defines, and a call never splits K. The q8 path too:
 * each token's activations are rounded on their own (blocks along K, never
 * across tokens), and its block sums run in one order on every path.
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
 * scratch: cpu_matmul_scratch_floats(K) floats private to the calling thread.
 */
typedef void (*cpu_matmul_fn)(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w,
                              int64_t r0, int64_t r1, float *y, int64_t ldy, float *scratch);

/* Activations in int8, blocks of CPU_Q8_BLOCK along K: x[t, k] ~ d[t, k / 32]
 * * q[t, k]; the last block of a row may be shorter. */
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
    const char *name;          /* "scalar", "avx2", "avxvnni", "avx512", "avx512vnni", "avx512bf16" */
    bool exact;                /* float weights in fp32 arithmetic ("auto" picks only these) */
    cpu_matmul_fn matmul_bf16; /* W in bf16 */
    cpu_matmul_fn matmul_f32;  /* W in fp32 */
    cpu_matmul_fn matmul_i8;   /* W in int8, weight-only */
    cpu_matmul_fn matmul_f8;   /* W in fp8 e4m3, weight-only */
    cpu_matmul_q8_fn matmul_i8_q8; /* NULL, or int8 W with q8 activations (used instead of matmul_i8) */
    /* Attention over one tile of cached keys / values ([n, D] rows):
     * scores[s] = scale * (q . keys[s]), each dot in the variant's one order;
     * out[d] += p[0] * vals[0][d], then + p[1] * vals[1][d], ... in order of s
     * (so a query's result depends only on its own keys, never on tiling). */
    void (*attn_scores)(const float *q, const float *keys, int64_t n, int64_t D, float scale, float *scores);
    void (*attn_mix)(const float *p, const float *vals, int64_t n, int64_t D, float *out);
} cpu_kernels;

extern const cpu_kernels cpu_kernels_scalar;
#if defined(__x86_64__)
extern const cpu_kernels cpu_kernels_avx2, cpu_kernels_avxvnni;
extern const cpu_kernels cpu_kernels_avx512, cpu_kernels_avx512vnni, cpu_kernels_avx512bf16;
void cpu_matmul_i8_q8_avxvnni(const cpu_xq8 *x, int64_t T, const cpu_matrix *w, int64_t r0, int64_t r1, float *y,
                              int64_t ldy);
void cpu_matmul_i8_q8_avx512vnni(const cpu_xq8 *x, int64_t T, const cpu_matrix *w, int64_t r0, int64_t r1,
                                 float *y, int64_t ldy);
#endif

/* The variants this build knows, best first, NULL-terminated. */
extern const cpu_kernels *const cpu_kernel_variants[];

/* Whether this CPU can run variant `k`. */
bool cpu_kernels_supported(const cpu_kernels *k);

/* The kernels to use: `isa` names a variant (NULL when unknown or the CPU
 * lacks it), NULL, "" or "auto" picks the best exact one the CPU supports. */
const cpu_kernels *cpu_kernels_select(const char *isa);

/* e4m3fn byte -> fp32 (256 entries; util/numeric.h's conversion). */
const float *cpu_f8_table(void);

/* Per-thread scratch a matmul over K columns needs, in floats: the vector
 * variants copy a tile of x there (in the order their loops read it), 8
 * tokens at least and at most 640 KB (with a panel of W, within a 2 MB L2). */
#define CPU_MATMUL_TILE_FLOATS (160 * 1024)
static inline int64_t cpu_matmul_x_floats(int64_t K) {
    int64_t tile = 8 * ((K + 63) / 64 * 64);
    return tile > CPU_MATMUL_TILE_FLOATS ? tile : CPU_MATMUL_TILE_FLOATS;
}
static inline int64_t cpu_matmul_scratch_floats(int64_t K) { return cpu_matmul_x_floats(K); }

/* Dispatches on w->dtype; int8 goes through matmul_i8_q8 when the kernels
 * have it and the caller quantised x into `xq`. */
static inline void cpu_matmul(const cpu_kernels *k, const float *x, int64_t ldx, const cpu_xq8 *xq, int64_t T,
                              const cpu_matrix *w, int64_t r0, int64_t r1, float *y, int64_t ldy, float *scratch) {
    switch (w->dtype) {
    case NC_DTYPE_BF16: k->matmul_bf16(x, ldx, T, w, r0, r1, y, ldy, scratch); break;
    case NC_DTYPE_I8:
        if (xq && k->matmul_i8_q8) k->matmul_i8_q8(xq, T, w, r0, r1, y, ldy);
        else k->matmul_i8(x, ldx, T, w, r0, r1, y, ldy, scratch);
        break;
    case NC_DTYPE_F8_E4M3: k->matmul_f8(x, ldx, T, w, r0, r1, y, ldy, scratch); break;
    default: k->matmul_f32(x, ldx, T, w, r0, r1, y, ldy, scratch); break;
    }
}

#endif /* NC_BACKEND_CPU_KERNELS_H */

/*
 * cpu_kernels_avx2.c: AVX2 + FMA versions of the CPU kernels (cpu_kernels.h).
 *
 * Compiled for every x86-64 build with per-function target attributes, so
 * the binary still runs on CPUs without AVX2 (cpu_kernels_select() checks
 * __builtin_cpu_supports before handing these out).
 *
 * matmul: the output rows are processed 4 at a time, so each 8-wide slice
 * of x is loaded once for 4 weight rows and 4 independent memory streams
 * keep the prefetchers busy. bf16 weights are widened by zero-extending to
 * 32 bits and shifting left by 16 (bf16 is the top half of an fp32); int8
 * by sign-extending and converting; e4m3 by moving its bits into an fp16
 * (sign to bit 15, exponent and mantissa to bits 13..7: the same value
 * times 2^-8, subnormals included) and converting with F16C, the 2^8 going
 * into the row's scale (an e4m3 NaN, which the quantiser never writes,
 * reads as 480 here). 8-bit sums are multiplied by the row's scale at
 * the end: the weight-only math of cpu_kernels.h.
 *   - one token (decode): 4 rows x 16 columns per step, 8 accumulators,
 *     and a software prefetch of the same columns of the next 4-row block:
 *     the hardware prefetchers alone kept 4 interleaved streams at ~55-65%
 *     of the machine's read bandwidth, one block ahead reaches ~90%
 *     (dev/kernels/cpu_matvec.c, NOTES_CPU.md). The prefetch goes to L1
 *     while a block is small (<= 16 KB) and to L2 beyond, where it would
 *     evict x. Prefetching changes no arithmetic: results are bit-identical;
 *   - several tokens (prefill, batched decode): 4 rows x 2 tokens per step,
 *     tokens tiled by 64 so a tile of x stays in L2 while the 4-row block
 *     of W (at most a few tens of KB) stays in L1 across the tile.
 * Kernels are written once, generic over the weight type through
 * always-inline helpers whose `wt` argument is a compile-time constant.
 *
 * The VNNI variants (cpu_kernels_avxvnni, cpu_kernels_avx512vnni) are
 * these kernels with the q8 int8 matmul of cpu_kernels_vnni.c.
 */
#if defined(__x86_64__)

#include <immintrin.h>

#include "../../util/common.h"
#include "../../util/numeric.h"
#include "cpu_kernels.h"

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) static inline

enum { TOKEN_TILE = 64 };

/* Weight types (compile-time constants of the helpers below). */
enum { WT_F32, WT_BF16, WT_I8, WT_F8 };

static const int wt_size[] = {[WT_F32] = 4, [WT_BF16] = 2, [WT_I8] = 1, [WT_F8] = 1};

/* 8 weights from element i on, as fp32 (fp8: times 2^-8). */
AVX2_INLINE __m256 load_w8(const void *w, int64_t i, int wt) {
    switch (wt) {
    case WT_BF16: {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    case WT_I8:
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)w + i))));
    case WT_F8: {
        /* sign-extended to 16 bits and shifted left by 7, the sign lands in
         * bit 15 and exponent + mantissa in bits 13..7; bit 14 (a copy of
         * the sign) is cleared */
        __m128i b = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)((const uint8_t *)w + i)));
        return _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(b, 7), _mm_set1_epi16((short)0xbf80)));
    }
    default: return _mm256_loadu_ps((const float *)w + i);
    }
}

/* One weight as load_w8 scales it. */
AVX2_INLINE float load_w1(const void *w, int64_t i, int wt) {
    switch (wt) {
    case WT_BF16: return nc_bf16_to_f32(((const uint16_t *)w)[i]);
    case WT_I8: return (float)((const int8_t *)w)[i];
    case WT_F8: return nc_f8e4m3_to_f32(((const uint8_t *)w)[i]) * 0x1p-8f;
    default: return ((const float *)w)[i];
    }
}

/* What a row's sum is multiplied by: 1 for float weights, the row's scale
 * for int8, scale * 2^8 for fp8 (see load_w8). */
AVX2_INLINE float row_scale(const cpu_matrix *w, int64_t r, int wt) {
    return wt == WT_I8 ? w->scale[r] : wt == WT_F8 ? w->scale[r] * 0x1p8f : 1.0f;
}

AVX2_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Row `r` of W starts at element r*K. */
AVX2_INLINE const void *row_ptr(const void *W, int64_t r, int64_t K, int wt) {
    return (const char *)W + r * K * wt_size[wt];
}

/* Prefetch of the next block while computing this one: none, into L1, into L2. */
enum { PF_NONE, PF_L1, PF_L2 };

/* Prefetches `bytes` (64 or 128) of weights at p. */
AVX2_INLINE void prefetch_lines(const void *p, int bytes, int pf) {
    for (int o = 0; o < bytes; o += 64) {
        if (pf == PF_L1) _mm_prefetch((const char *)p + o, _MM_HINT_T0);
        else _mm_prefetch((const char *)p + o, _MM_HINT_T1);
    }
}

/* out[j] = x . W[r+j] for j < 4 (one token); with pf != PF_NONE also
 * prefetches rows r+4 .. r+7 column by column. */
AVX2_INLINE void block_4x1(const float *x, const void *W, int64_t r, int64_t K, int wt,
                           float *out, int pf) {
    const void *w0 = row_ptr(W, r, K, wt), *w1 = row_ptr(W, r + 1, K, wt);
    const void *w2 = row_ptr(W, r + 2, K, wt), *w3 = row_ptr(W, r + 3, K, wt);
    /* rows r+4 .. r+7 exist whenever pf != PF_NONE (the caller checks) */
    const char *n0 = pf != PF_NONE ? row_ptr(W, r + 4, K, wt) : w0;
    const char *n1 = pf != PF_NONE ? row_ptr(W, r + 5, K, wt) : w0;
    const char *n2 = pf != PF_NONE ? row_ptr(W, r + 6, K, wt) : w0;
    const char *n3 = pf != PF_NONE ? row_ptr(W, r + 7, K, wt) : w0;
    const int esize = wt_size[wt];
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int64_t k = 0;
    /* per prefetching step, a whole cache line of each row (32 columns of
     * bf16, 64 of 8-bit weights) or two (fp32); the same FMA sequence per
     * accumulator as the 16-column loop below */
    const int64_t step = esize == 1 ? 64 : 32;
    if (pf != PF_NONE)
        for (; k + step <= K; k += step) {
            prefetch_lines(n0 + k * esize, (int)step * esize, pf);
            prefetch_lines(n1 + k * esize, (int)step * esize, pf);
            prefetch_lines(n2 + k * esize, (int)step * esize, pf);
            prefetch_lines(n3 + k * esize, (int)step * esize, pf);
            for (int64_t kk = k; kk < k + step; kk += 16) {
                __m256 xa = _mm256_loadu_ps(x + kk), xb = _mm256_loadu_ps(x + kk + 8);
                a0 = _mm256_fmadd_ps(load_w8(w0, kk, wt), xa, a0);
                b0 = _mm256_fmadd_ps(load_w8(w0, kk + 8, wt), xb, b0);
                a1 = _mm256_fmadd_ps(load_w8(w1, kk, wt), xa, a1);
                b1 = _mm256_fmadd_ps(load_w8(w1, kk + 8, wt), xb, b1);
                a2 = _mm256_fmadd_ps(load_w8(w2, kk, wt), xa, a2);
                b2 = _mm256_fmadd_ps(load_w8(w2, kk + 8, wt), xb, b2);
                a3 = _mm256_fmadd_ps(load_w8(w3, kk, wt), xa, a3);
                b3 = _mm256_fmadd_ps(load_w8(w3, kk + 8, wt), xb, b3);
            }
        }
    for (; k + 16 <= K; k += 16) {
        __m256 xa = _mm256_loadu_ps(x + k), xb = _mm256_loadu_ps(x + k + 8);
        a0 = _mm256_fmadd_ps(load_w8(w0, k, wt), xa, a0);
        b0 = _mm256_fmadd_ps(load_w8(w0, k + 8, wt), xb, b0);
        a1 = _mm256_fmadd_ps(load_w8(w1, k, wt), xa, a1);
        b1 = _mm256_fmadd_ps(load_w8(w1, k + 8, wt), xb, b1);
        a2 = _mm256_fmadd_ps(load_w8(w2, k, wt), xa, a2);
        b2 = _mm256_fmadd_ps(load_w8(w2, k + 8, wt), xb, b2);
        a3 = _mm256_fmadd_ps(load_w8(w3, k, wt), xa, a3);
        b3 = _mm256_fmadd_ps(load_w8(w3, k + 8, wt), xb, b3);
    }
    for (; k + 8 <= K; k += 8) {
        __m256 xa = _mm256_loadu_ps(x + k);
        a0 = _mm256_fmadd_ps(load_w8(w0, k, wt), xa, a0);
        a1 = _mm256_fmadd_ps(load_w8(w1, k, wt), xa, a1);
        a2 = _mm256_fmadd_ps(load_w8(w2, k, wt), xa, a2);
        a3 = _mm256_fmadd_ps(load_w8(w3, k, wt), xa, a3);
    }
    float s0 = hsum8(_mm256_add_ps(a0, b0)), s1 = hsum8(_mm256_add_ps(a1, b1));
    float s2 = hsum8(_mm256_add_ps(a2, b2)), s3 = hsum8(_mm256_add_ps(a3, b3));
    for (; k < K; k++) {
        s0 += x[k] * load_w1(w0, k, wt);
        s1 += x[k] * load_w1(w1, k, wt);
        s2 += x[k] * load_w1(w2, k, wt);
        s3 += x[k] * load_w1(w3, k, wt);
    }
    out[0] = s0;
    out[1] = s1;
    out[2] = s2;
    out[3] = s3;
}

/* out[t*ldy + j] = x[t] . W[r+j] for j < 4, t < 2 (two tokens, rows ldx apart). */
AVX2_INLINE void block_4x2(const float *x, int64_t ldx, const void *W, int64_t r, int64_t K,
                           int wt, float *out, int64_t ldy) {
    const void *w0 = row_ptr(W, r, K, wt), *w1 = row_ptr(W, r + 1, K, wt);
    const void *w2 = row_ptr(W, r + 2, K, wt), *w3 = row_ptr(W, r + 3, K, wt);
    const float *x0 = x, *x1 = x + ldx;
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00;
    __m256 a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 xa = _mm256_loadu_ps(x0 + k), xb = _mm256_loadu_ps(x1 + k);
        __m256 v0 = load_w8(w0, k, wt), v1 = load_w8(w1, k, wt);
        a00 = _mm256_fmadd_ps(v0, xa, a00);
        a10 = _mm256_fmadd_ps(v0, xb, a10);
        a01 = _mm256_fmadd_ps(v1, xa, a01);
        a11 = _mm256_fmadd_ps(v1, xb, a11);
        __m256 v2 = load_w8(w2, k, wt), v3 = load_w8(w3, k, wt);
        a02 = _mm256_fmadd_ps(v2, xa, a02);
        a12 = _mm256_fmadd_ps(v2, xb, a12);
        a03 = _mm256_fmadd_ps(v3, xa, a03);
        a13 = _mm256_fmadd_ps(v3, xb, a13);
    }
    float s[2][4] = {{hsum8(a00), hsum8(a01), hsum8(a02), hsum8(a03)},
                     {hsum8(a10), hsum8(a11), hsum8(a12), hsum8(a13)}};
    for (; k < K; k++) {
        float w[4] = {load_w1(w0, k, wt), load_w1(w1, k, wt), load_w1(w2, k, wt),
                      load_w1(w3, k, wt)};
        for (int j = 0; j < 4; j++) {
            s[0][j] += x0[k] * w[j];
            s[1][j] += x1[k] * w[j];
        }
    }
    for (int j = 0; j < 4; j++) {
        out[j] = s[0][j];
        out[ldy + j] = s[1][j];
    }
}

/* One row, one token (the leftovers of the blocks above). */
AVX2_INLINE float block_1x1(const float *x, const void *W, int64_t r, int64_t K, int wt) {
    const void *w0 = row_ptr(W, r, K, wt);
    __m256 a = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) a = _mm256_fmadd_ps(load_w8(w0, k, wt), _mm256_loadu_ps(x + k), a);
    float s = hsum8(a);
    for (; k < K; k++) s += x[k] * load_w1(w0, k, wt);
    return s;
}

/* Multiplies y[t][r0..r1) by the rows' scales (8-bit weights only). */
AVX2_INLINE void scale_rows(const cpu_matrix *w, int64_t t0, int64_t t1, int64_t r0, int64_t r1, float *y,
                            int64_t ldy, int wt) {
    if (wt != WT_I8 && wt != WT_F8) return;
    for (int64_t t = t0; t < t1; t++)
        for (int64_t r = r0; r < r1; r++) y[t * ldy + r] *= row_scale(w, r, wt);
}

AVX2_INLINE void matmul_avx2(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w,
                             int64_t r0, int64_t r1, float *y, int64_t ldy, int wt) {
    const void *W = w->data;
    int64_t K = w->cols;
    if (T == 1) {
        int pf = 4 * K * wt_size[wt] <= 16384 ? PF_L1 : PF_L2;
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) block_4x1(x, W, r, K, wt, y + r, r + 8 <= r1 ? pf : PF_NONE);
        for (; r < r1; r++) y[r] = block_1x1(x, W, r, K, wt);
        scale_rows(w, 0, 1, r0, r1, y, ldy, wt);
        return;
    }
    for (int64_t t0 = 0; t0 < T; t0 += TOKEN_TILE) {
        int64_t t1 = NC_MIN(T, t0 + TOKEN_TILE);
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) {
            int64_t t = t0;
            for (; t + 2 <= t1; t += 2) block_4x2(x + t * ldx, ldx, W, r, K, wt, y + t * ldy + r, ldy);
            if (t < t1) block_4x1(x + t * ldx, W, r, K, wt, y + t * ldy + r, PF_NONE);
        }
        for (; r < r1; r++)
            for (int64_t t = t0; t < t1; t++) y[t * ldy + r] = block_1x1(x + t * ldx, W, r, K, wt);
        scale_rows(w, t0, t1, r0, r1, y, ldy, wt);
    }
}

AVX2 static void matmul_bf16_avx2(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w,
                                  int64_t r0, int64_t r1, float *y, int64_t ldy) {
    matmul_avx2(x, ldx, T, w, r0, r1, y, ldy, WT_BF16);
}

AVX2 static void matmul_f32_avx2(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w,
                                 int64_t r0, int64_t r1, float *y, int64_t ldy) {
    matmul_avx2(x, ldx, T, w, r0, r1, y, ldy, WT_F32);
}

AVX2 static void matmul_i8_avx2(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w, int64_t r0,
                                int64_t r1, float *y, int64_t ldy) {
    matmul_avx2(x, ldx, T, w, r0, r1, y, ldy, WT_I8);
}

AVX2 static void matmul_f8_avx2(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w, int64_t r0,
                                int64_t r1, float *y, int64_t ldy) {
    matmul_avx2(x, ldx, T, w, r0, r1, y, ldy, WT_F8);
}

AVX2 static float dot_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

AVX2 static void axpy_avx2(float alpha, const float *x, float *y, int64_t n) {
    __m256 a = _mm256_set1_ps(alpha);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(a, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += alpha * x[i];
}

const cpu_kernels cpu_kernels_avx2 = {
    .name = "avx2",
    .matmul_bf16 = matmul_bf16_avx2,
    .matmul_f32 = matmul_f32_avx2,
    .matmul_i8 = matmul_i8_avx2,
    .matmul_f8 = matmul_f8_avx2,
    .dot = dot_avx2,
    .axpy = axpy_avx2,
};

const cpu_kernels cpu_kernels_avxvnni = {
    .name = "avxvnni",
    .matmul_bf16 = matmul_bf16_avx2,
    .matmul_f32 = matmul_f32_avx2,
    .matmul_i8 = matmul_i8_avx2,
    .matmul_f8 = matmul_f8_avx2,
    .matmul_i8_q8 = cpu_matmul_i8_q8_avxvnni,
    .dot = dot_avx2,
    .axpy = axpy_avx2,
};

const cpu_kernels cpu_kernels_avx512vnni = {
    .name = "avx512vnni",
    .matmul_bf16 = matmul_bf16_avx2,
    .matmul_f32 = matmul_f32_avx2,
    .matmul_i8 = matmul_i8_avx2,
    .matmul_f8 = matmul_f8_avx2,
    .matmul_i8_q8 = cpu_matmul_i8_q8_avx512vnni,
    .dot = dot_avx2,
    .axpy = axpy_avx2,
};

#endif /* __x86_64__ */

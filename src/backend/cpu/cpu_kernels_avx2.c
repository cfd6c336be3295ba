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
 * 32 bits and shifting left by 16 (bf16 is the top half of an fp32).
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
 * Both round every output exactly alike, so a token's result is the same
 * whatever else is in the batch (block_4x2).
 * Kernels are written once, generic over the weight type through an
 * always-inline helper whose `bf16` argument is a compile-time constant.
 */
#if defined(__x86_64__)

#include <immintrin.h>

#include "../../util/common.h"
#include "../../util/numeric.h"
#include "cpu_kernels.h"

#define AVX2 __attribute__((target("avx2,fma")))
#define AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline

enum { TOKEN_TILE = 64, PANEL = 512 };

AVX2_INLINE __m256 load_w8(const void *w, int64_t i, bool bf16) {
    if (bf16) {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    return _mm256_loadu_ps((const float *)w + i);
}

AVX2_INLINE float load_w1(const void *w, int64_t i, bool bf16) {
    return bf16 ? nc_bf16_to_f32(((const uint16_t *)w)[i]) : ((const float *)w)[i];
}

AVX2_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* Row `r` of W starts at element r*K. */
AVX2_INLINE const void *row_ptr(const void *W, int64_t r, int64_t K, bool bf16) {
    return bf16 ? (const void *)((const uint16_t *)W + r * K) : (const void *)((const float *)W + r * K);
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
AVX2_INLINE void block_4x1(const float *x, const void *W, int64_t r, int64_t K, bool bf16,
                           float *out, int pf) {
    const void *w0 = row_ptr(W, r, K, bf16), *w1 = row_ptr(W, r + 1, K, bf16);
    const void *w2 = row_ptr(W, r + 2, K, bf16), *w3 = row_ptr(W, r + 3, K, bf16);
    /* rows r+4 .. r+7 exist whenever pf != PF_NONE (the caller checks) */
    const char *n0 = pf != PF_NONE ? row_ptr(W, r + 4, K, bf16) : w0;
    const char *n1 = pf != PF_NONE ? row_ptr(W, r + 5, K, bf16) : w0;
    const char *n2 = pf != PF_NONE ? row_ptr(W, r + 6, K, bf16) : w0;
    const char *n3 = pf != PF_NONE ? row_ptr(W, r + 7, K, bf16) : w0;
    const int esize = bf16 ? 2 : 4;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int64_t k = 0;
    /* 32 columns (one or two cache lines per row) per prefetching step; the
     * same FMA sequence per accumulator as the 16-column loop below */
    if (pf != PF_NONE)
        for (; k + 32 <= K; k += 32) {
            prefetch_lines(n0 + k * esize, 32 * esize, pf);
            prefetch_lines(n1 + k * esize, 32 * esize, pf);
            prefetch_lines(n2 + k * esize, 32 * esize, pf);
            prefetch_lines(n3 + k * esize, 32 * esize, pf);
            for (int64_t kk = k; kk < k + 32; kk += 16) {
                __m256 xa = _mm256_loadu_ps(x + kk), xb = _mm256_loadu_ps(x + kk + 8);
                a0 = _mm256_fmadd_ps(load_w8(w0, kk, bf16), xa, a0);
                b0 = _mm256_fmadd_ps(load_w8(w0, kk + 8, bf16), xb, b0);
                a1 = _mm256_fmadd_ps(load_w8(w1, kk, bf16), xa, a1);
                b1 = _mm256_fmadd_ps(load_w8(w1, kk + 8, bf16), xb, b1);
                a2 = _mm256_fmadd_ps(load_w8(w2, kk, bf16), xa, a2);
                b2 = _mm256_fmadd_ps(load_w8(w2, kk + 8, bf16), xb, b2);
                a3 = _mm256_fmadd_ps(load_w8(w3, kk, bf16), xa, a3);
                b3 = _mm256_fmadd_ps(load_w8(w3, kk + 8, bf16), xb, b3);
            }
        }
    for (; k + 16 <= K; k += 16) {
        __m256 xa = _mm256_loadu_ps(x + k), xb = _mm256_loadu_ps(x + k + 8);
        a0 = _mm256_fmadd_ps(load_w8(w0, k, bf16), xa, a0);
        b0 = _mm256_fmadd_ps(load_w8(w0, k + 8, bf16), xb, b0);
        a1 = _mm256_fmadd_ps(load_w8(w1, k, bf16), xa, a1);
        b1 = _mm256_fmadd_ps(load_w8(w1, k + 8, bf16), xb, b1);
        a2 = _mm256_fmadd_ps(load_w8(w2, k, bf16), xa, a2);
        b2 = _mm256_fmadd_ps(load_w8(w2, k + 8, bf16), xb, b2);
        a3 = _mm256_fmadd_ps(load_w8(w3, k, bf16), xa, a3);
        b3 = _mm256_fmadd_ps(load_w8(w3, k + 8, bf16), xb, b3);
    }
    for (; k + 8 <= K; k += 8) {
        __m256 xa = _mm256_loadu_ps(x + k);
        a0 = _mm256_fmadd_ps(load_w8(w0, k, bf16), xa, a0);
        a1 = _mm256_fmadd_ps(load_w8(w1, k, bf16), xa, a1);
        a2 = _mm256_fmadd_ps(load_w8(w2, k, bf16), xa, a2);
        a3 = _mm256_fmadd_ps(load_w8(w3, k, bf16), xa, a3);
    }
    float s0 = hsum8(_mm256_add_ps(a0, b0)), s1 = hsum8(_mm256_add_ps(a1, b1));
    float s2 = hsum8(_mm256_add_ps(a2, b2)), s3 = hsum8(_mm256_add_ps(a3, b3));
    for (; k < K; k++) {
        s0 += x[k] * load_w1(w0, k, bf16);
        s1 += x[k] * load_w1(w1, k, bf16);
        s2 += x[k] * load_w1(w2, k, bf16);
        s3 += x[k] * load_w1(w3, k, bf16);
    }
    out[0] = s0;
    out[1] = s1;
    out[2] = s2;
    out[3] = s3;
}

/* acc[t][j] += W[r+j][k..k+8) * x[t][k..k+8) for the 8-column slices at
 * k = first, first + 16, ... below `end`, for j < 4 and t < 2. */
AVX2_INLINE void slices_4x2(const float *x0, const float *x1, const void *w0, const void *w1, const void *w2,
                            const void *w3, int64_t first, int64_t end, bool bf16, __m256 acc[2][4]) {
    __m256 a00 = acc[0][0], a01 = acc[0][1], a02 = acc[0][2], a03 = acc[0][3];
    __m256 a10 = acc[1][0], a11 = acc[1][1], a12 = acc[1][2], a13 = acc[1][3];
    for (int64_t k = first; k + 8 <= end; k += 16) {
        __m256 xa = _mm256_loadu_ps(x0 + k), xb = _mm256_loadu_ps(x1 + k);
        __m256 v0 = load_w8(w0, k, bf16), v1 = load_w8(w1, k, bf16);
        a00 = _mm256_fmadd_ps(v0, xa, a00);
        a10 = _mm256_fmadd_ps(v0, xb, a10);
        a01 = _mm256_fmadd_ps(v1, xa, a01);
        a11 = _mm256_fmadd_ps(v1, xb, a11);
        __m256 v2 = load_w8(w2, k, bf16), v3 = load_w8(w3, k, bf16);
        a02 = _mm256_fmadd_ps(v2, xa, a02);
        a12 = _mm256_fmadd_ps(v2, xb, a12);
        a03 = _mm256_fmadd_ps(v3, xa, a03);
        a13 = _mm256_fmadd_ps(v3, xb, a13);
    }
    acc[0][0] = a00, acc[0][1] = a01, acc[0][2] = a02, acc[0][3] = a03;
    acc[1][0] = a10, acc[1][1] = a11, acc[1][2] = a12, acc[1][3] = a13;
}

/* out[t*ldy + j] = x[t] . W[r+j] for j < 4, t < 2 (two tokens, rows ldx
 * apart), rounded exactly as block_4x1 rounds each token alone, so a
 * token's result does not depend on the tokens beside it in the batch
 * (speculative decoding verifies several positions in one pass and must
 * reproduce one-token decode, docs/speculative.md). block_4x1 keeps two
 * accumulators per row, over the first and the second 8 columns of every
 * 16 (a leftover 8 going to the first), summed at the end; with two tokens
 * that is 16 accumulators, more than AVX2's registers, so the two halves
 * are two passes, each with 8 accumulators. The passes go panel by panel
 * of PANEL columns, so the second reads the 4 rows' panel from L1 (whole
 * rows of 5120 columns did not fit: prefill 25% slower); each accumulator
 * still adds its slices in column order. */
AVX2_INLINE void block_4x2(const float *x, int64_t ldx, const void *W, int64_t r, int64_t K,
                           bool bf16, float *out, int64_t ldy) {
    const void *w0 = row_ptr(W, r, K, bf16), *w1 = row_ptr(W, r + 1, K, bf16);
    const void *w2 = row_ptr(W, r + 2, K, bf16), *w3 = row_ptr(W, r + 3, K, bf16);
    const float *x0 = x, *x1 = x + ldx;
    __m256 a[2][4], b[2][4];
    for (int t = 0; t < 2; t++)
        for (int j = 0; j < 4; j++) a[t][j] = b[t][j] = _mm256_setzero_ps();
    int64_t k16 = K / 16 * 16, k8 = K / 8 * 8;
    for (int64_t p = 0; p < k8; p += PANEL) {
        int64_t end = NC_MIN(p + PANEL, k8);
        slices_4x2(x0, x1, w0, w1, w2, w3, p, end, bf16, a);                  /* first halves, a leftover 8 */
        slices_4x2(x0, x1, w0, w1, w2, w3, p + 8, NC_MIN(end, k16), bf16, b); /* second halves */
    }
    const void *w[4] = {w0, w1, w2, w3};
    for (int t = 0; t < 2; t++) {
        const float *xt = t ? x1 : x0;
        for (int j = 0; j < 4; j++) {
            float s = hsum8(_mm256_add_ps(a[t][j], b[t][j]));
            for (int64_t k = k8; k < K; k++) s += xt[k] * load_w1(w[j], k, bf16);
            out[t * ldy + j] = s;
        }
    }
}

/* One row, one token (the leftovers of the blocks above). */
AVX2_INLINE float block_1x1(const float *x, const void *W, int64_t r, int64_t K, bool bf16) {
    const void *w0 = row_ptr(W, r, K, bf16);
    __m256 a = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) a = _mm256_fmadd_ps(load_w8(w0, k, bf16), _mm256_loadu_ps(x + k), a);
    float s = hsum8(a);
    for (; k < K; k++) s += x[k] * load_w1(w0, k, bf16);
    return s;
}

AVX2_INLINE void matmul_avx2(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w,
                             int64_t r0, int64_t r1, float *y, int64_t ldy, bool bf16) {
    const void *W = w->data;
    int64_t K = w->cols;
    if (T == 1) {
        int pf = 4 * K * (bf16 ? 2 : 4) <= 16384 ? PF_L1 : PF_L2;
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) block_4x1(x, W, r, K, bf16, y + r, r + 8 <= r1 ? pf : PF_NONE);
        for (; r < r1; r++) y[r] = block_1x1(x, W, r, K, bf16);
        return;
    }
    for (int64_t t0 = 0; t0 < T; t0 += TOKEN_TILE) {
        int64_t t1 = NC_MIN(T, t0 + TOKEN_TILE);
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) {
            int64_t t = t0;
            for (; t + 2 <= t1; t += 2) block_4x2(x + t * ldx, ldx, W, r, K, bf16, y + t * ldy + r, ldy);
            if (t < t1) block_4x1(x + t * ldx, W, r, K, bf16, y + t * ldy + r, PF_NONE);
        }
        for (; r < r1; r++)
            for (int64_t t = t0; t < t1; t++) y[t * ldy + r] = block_1x1(x + t * ldx, W, r, K, bf16);
    }
}

AVX2 static void matmul_bf16_avx2(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w,
                                  int64_t r0, int64_t r1, float *y, int64_t ldy) {
    matmul_avx2(x, ldx, T, w, r0, r1, y, ldy, true);
}

AVX2 static void matmul_f32_avx2(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w,
                                 int64_t r0, int64_t r1, float *y, int64_t ldy) {
    matmul_avx2(x, ldx, T, w, r0, r1, y, ldy, false);
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
    .dot = dot_avx2,
    .axpy = axpy_avx2,
};

#endif /* __x86_64__ */

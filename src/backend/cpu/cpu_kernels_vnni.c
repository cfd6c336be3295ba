/*
 * cpu_kernels_vnni.c: int8 weights times q8 activations (cpu_kernels.h)
 * with vpdpbusd, in AVX512-VNNI (64 bytes a step) and AVX-VNNI (32) forms.
 *
 * vpdpbusd multiplies unsigned by signed bytes, four products per int32
 * lane. The activations are signed, so each step takes |xq| as the
 * unsigned side and gives the weights the sign of xq (negated where xq < 0;
 * |q| <= 127, so negation cannot overflow): |x| * (sign(x) w) = x w. Per
 * 32-element block the int32 lanes are converted to fp32 and accumulated
 * with the block's scale d (one block per 8 lanes); the row's sum times its
 * scale at the end. Integer products are exact, so these kernels differ
 * from cpu_matmul_i8_q8_ref only in the fp32 order of the block sums.
 *
 * Loop structure as the AVX2 kernels: 4 weight rows per step share the
 * activation loads; several tokens (prefill) are tiled by 64 so a 4-row
 * block of W (a few tens of KB) stays in L1/L2 across the tile. Compiled
 * with per-function target attributes; cpu_kernels_select() checks CPUID
 * before handing them out.
 */
#if defined(__x86_64__)

#include <immintrin.h>

#include "../../util/common.h"
#include "cpu_kernels.h"

#define VNNI512_INLINE \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma"), always_inline)) static inline
#define VNNI512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
#define AVXVNNI_INLINE __attribute__((target("avx2,fma,avxvnni"), always_inline)) static inline
#define AVXVNNI __attribute__((target("avx2,fma,avxvnni")))

enum { TOKEN_TILE = 64, BLOCK = CPU_Q8_BLOCK };

/* Sum over the blocks from k0 (a multiple of 32) to K in plain C: the
 * leftovers the vector loops do not cover. */
static inline float q8_tail(const int8_t *xq, const float *d, const int8_t *w, int64_t k0, int64_t K) {
    float acc = 0;
    for (int64_t k = k0; k < K; k += BLOCK) {
        int32_t s = 0;
        for (int64_t i = k; i < NC_MIN(k + BLOCK, K); i++) s += (int32_t)xq[i] * w[i];
        acc += d[k / BLOCK] * (float)s;
    }
    return acc;
}

/* The matmul around a 4-row block and a 1-row block (the same loops for
 * both instruction sets): rows in blocks of 4 for each token of a tile,
 * leftover rows one by one, then the rows' scales. */
#define Q8_MATMUL(TARGET, NAME, BLOCK_4X1, BLOCK_1X1)                                                      \
    TARGET void NAME(const cpu_xq8 *x, int64_t T, const cpu_matrix *w, int64_t r0, int64_t r1, float *y,     \
                     int64_t ldy) {                                                                        \
        const int8_t *W = w->data;                                                                         \
        int64_t K = w->cols;                                                                               \
        for (int64_t t0 = 0; t0 < T; t0 += TOKEN_TILE) {                                                   \
            int64_t t1 = NC_MIN(T, t0 + TOKEN_TILE), r = r0;                                               \
            for (; r + 4 <= r1; r += 4)                                                                    \
                for (int64_t t = t0; t < t1; t++)                                                          \
                    BLOCK_4X1(x->q + t * x->ldq, x->d + t * x->ldd, W, r, K, y + t * ldy + r);            \
            for (; r < r1; r++)                                                                            \
                for (int64_t t = t0; t < t1; t++)                                                          \
                    y[t * ldy + r] = BLOCK_1X1(x->q + t * x->ldq, x->d + t * x->ldd, W, r, K);            \
            for (int64_t t = t0; t < t1; t++)                                                              \
                for (int64_t rr = r0; rr < r1; rr++) y[t * ldy + rr] *= w->scale[rr];                      \
        }                                                                                                  \
    }

/* ==== AVX512-VNNI ==== */

VNNI512_INLINE float hsum16(__m512 v) { return _mm512_reduce_add_ps(v); }

/* out[j] = sum over K of x . W[r+j] for j < 4 (unscaled). */
VNNI512_INLINE void q8_block_4x1_512(const int8_t *xq, const float *d, const int8_t *W, int64_t r, int64_t K,
                                     float *out) {
    const int8_t *w[4] = {W + r * K, W + (r + 1) * K, W + (r + 2) * K, W + (r + 3) * K};
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const __m512i zero = _mm512_setzero_si512();
    /* lanes 0..7 take the first block's scale, 8..15 the second's */
    const __m512i lane_block = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    int64_t k = 0;
    for (; k + 64 <= K; k += 64) {
        __m512i xv = _mm512_loadu_si512(xq + k);
        __m512i xa = _mm512_abs_epi8(xv);
        __mmask64 neg = _mm512_movepi8_mask(xv);
        __m512 dv = _mm512_permutexvar_ps(lane_block, _mm512_castps128_ps512(_mm_castpd_ps(_mm_load_sd((const double *)(d + k / BLOCK)))));
        for (int j = 0; j < 4; j++) {
            __m512i wv = _mm512_loadu_si512(w[j] + k);
            wv = _mm512_mask_sub_epi8(wv, neg, zero, wv);
            __m512i p = _mm512_dpbusd_epi32(zero, xa, wv);
            acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), dv, acc[j]);
        }
    }
    if (k + 32 <= K) { /* one more whole block, 256 bits wide */
        __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + k));
        __m256i xa = _mm256_abs_epi8(xv);
        __mmask32 neg = _mm256_movepi8_mask(xv);
        __m256 dv = _mm256_set1_ps(d[k / BLOCK]);
        for (int j = 0; j < 4; j++) {
            __m256i wv = _mm256_loadu_si256((const __m256i *)(w[j] + k));
            wv = _mm256_mask_sub_epi8(wv, neg, _mm256_setzero_si256(), wv);
            __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), xa, wv);
            __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(p), dv);
            acc[j] = _mm512_add_ps(acc[j], _mm512_castps256_ps512(f)); /* upper half of the cast is zero */
        }
        k += 32;
    }
    for (int j = 0; j < 4; j++) out[j] = hsum16(acc[j]) + q8_tail(xq, d, w[j], k, K);
}

VNNI512_INLINE float q8_block_1x1_512(const int8_t *xq, const float *d, const int8_t *W, int64_t r, int64_t K) {
    const int8_t *w = W + r * K;
    __m512 acc = _mm512_setzero_ps();
    const __m512i zero = _mm512_setzero_si512();
    const __m512i lane_block = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    int64_t k = 0;
    for (; k + 64 <= K; k += 64) {
        __m512i xv = _mm512_loadu_si512(xq + k);
        __mmask64 neg = _mm512_movepi8_mask(xv);
        __m512 dv = _mm512_permutexvar_ps(lane_block, _mm512_castps128_ps512(_mm_castpd_ps(_mm_load_sd((const double *)(d + k / BLOCK)))));
        __m512i wv = _mm512_loadu_si512(w + k);
        wv = _mm512_mask_sub_epi8(wv, neg, zero, wv);
        __m512i p = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(xv), wv);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), dv, acc);
    }
    return hsum16(acc) + q8_tail(xq, d, w, k, K);
}

Q8_MATMUL(VNNI512, cpu_matmul_i8_q8_avx512vnni, q8_block_4x1_512, q8_block_1x1_512)

/* ==== AVX-VNNI (256 bits) ==== */

AVXVNNI_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* As q8_block_4x1_512, one 32-byte block a step; _mm256_sign_epi8 gives
 * |x| (sign of x onto itself) and the sign of x onto the weights (zero
 * where x is zero, which |x| = 0 makes harmless). */
AVXVNNI_INLINE void q8_block_4x1_256(const int8_t *xq, const float *d, const int8_t *W, int64_t r, int64_t K,
                                     float *out) {
    const int8_t *w[4] = {W + r * K, W + (r + 1) * K, W + (r + 2) * K, W + (r + 3) * K};
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + k));
        __m256i xa = _mm256_sign_epi8(xv, xv);
        __m256 dv = _mm256_set1_ps(d[k / BLOCK]);
        for (int j = 0; j < 4; j++) {
            __m256i wv = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(w[j] + k)), xv);
            __m256i p = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), xa, wv);
            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), dv, acc[j]);
        }
    }
    for (int j = 0; j < 4; j++) out[j] = hsum8(acc[j]) + q8_tail(xq, d, w[j], k, K);
}

AVXVNNI_INLINE float q8_block_1x1_256(const int8_t *xq, const float *d, const int8_t *W, int64_t r, int64_t K) {
    const int8_t *w = W + r * K;
    __m256 acc = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + k));
        __m256i wv = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(w + k)), xv);
        __m256i p = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(xv, xv), wv);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d[k / BLOCK]), acc);
    }
    return hsum8(acc) + q8_tail(xq, d, w, k, K);
}

Q8_MATMUL(AVXVNNI, cpu_matmul_i8_q8_avxvnni, q8_block_4x1_256, q8_block_1x1_256)

#endif /* __x86_64__ */

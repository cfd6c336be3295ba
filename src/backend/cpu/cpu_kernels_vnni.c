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
 * Loop structure: 4 weight rows per step share the activation loads;
 * several tokens (prefill) are tiled by 64 so a 4-row block of W (a few
 * tens of KB) stays in L1/L2 across the tile. A row left over after the
 * 4-row blocks runs the same code for one row, so each output sums its
 * blocks in one order whatever the split of rows or the number of tokens
 * (batch invariance, cpu_kernels.h); each token's x is rounded on its own.
 * Compiled with per-function target attributes; cpu_kernels_supported()
 * checks CPUID before handing them out.
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

/* Software prefetch of the next 4-row block while this one is computed
 * (one token: nothing else would bring it in early; the AVX2 kernels'
 * measurement, dev/kernels/NOTES_CPU.md): into L1 while a block is small,
 * into L2 beyond, where it would evict x. */
enum { PF_NONE, PF_L1, PF_L2 };

/* The cache line at p in each of the 4 rows from p on (rows K apart). */
static inline __attribute__((always_inline)) void prefetch_next_block(const int8_t *p, int64_t K, int pf) {
    if (pf == PF_NONE) return;
    for (int j = 0; j < 4; j++) {
        if (pf == PF_L1) _mm_prefetch((const char *)(p + j * K), _MM_HINT_T0);
        else _mm_prefetch((const char *)(p + j * K), _MM_HINT_T1);
    }
}

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

/* The matmul around R-row blocks (the same loops for both instruction
 * sets): rows in blocks of 4 for each token of a tile (one token: each
 * block prefetches the next), leftover rows one by one through the same
 * ROWS function, then the rows' scales. */
#define Q8_MATMUL(TARGET, NAME, ROWS)                                                                      \
    TARGET void NAME(const cpu_xq8 *x, int64_t T, const cpu_matrix *w, int64_t r0, int64_t r1, float *y,     \
                     int64_t ldy) {                                                                        \
        const int8_t *W = w->data;                                                                         \
        int64_t K = w->cols;                                                                               \
        int pf = T > 1 ? PF_NONE : 4 * K <= 16384 ? PF_L1 : PF_L2;                                         \
        for (int64_t t0 = 0; t0 < T; t0 += TOKEN_TILE) {                                                   \
            int64_t t1 = NC_MIN(T, t0 + TOKEN_TILE), r = r0;                                               \
            for (; r + 4 <= r1; r += 4)                                                                    \
                for (int64_t t = t0; t < t1; t++)                                                          \
                    ROWS(x->q + t * x->ldq, x->d + t * x->ldd, W + r * K, K, y + t * ldy + r, 4,          \
                         r + 8 <= r1 ? pf : PF_NONE);                                                      \
            for (; r < r1; r++)                                                                            \
                for (int64_t t = t0; t < t1; t++)                                                          \
                    ROWS(x->q + t * x->ldq, x->d + t * x->ldd, W + r * K, K, y + t * ldy + r, 1, PF_NONE); \
            for (int64_t t = t0; t < t1; t++)                                                              \
                for (int64_t rr = r0; rr < r1; rr++) y[t * ldy + rr] *= w->scale[rr];                      \
        }                                                                                                  \
    }

/* ==== AVX512-VNNI ==== */

/* One 64-byte step of one row: the int32 lanes of |x| . (sign(x) w), as
 * fp32, times the lanes' block scales, into acc. */
VNNI512_INLINE __m512 q8_step_512(__m512 acc, __m512i xa, __mmask64 neg, __m512 dv, const int8_t *w) {
    const __m512i zero = _mm512_setzero_si512();
    __m512i wv = _mm512_loadu_si512(w);
    wv = _mm512_mask_sub_epi8(wv, neg, zero, wv);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, xa, wv)), dv, acc);
}

/* The same for one 32-byte block (the rest of a row after the 64-byte steps). */
VNNI512_INLINE __m256 q8_step_512h(__m256 acc, __m256i xa, __mmask32 neg, __m256 dv, const int8_t *w) {
    const __m256i zero = _mm256_setzero_si256();
    __m256i wv = _mm256_loadu_si256((const __m256i *)w);
    wv = _mm256_mask_sub_epi8(wv, neg, zero, wv);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_dpbusd_epi32(zero, xa, wv)), dv, acc);
}

/* Block scales of the two 32-element blocks at d: lanes 0..7 the first, 8..15 the second. */
VNNI512_INLINE __m512 q8_scales_512(const float *d) {
    const __m512i lane_block = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_permutexvar_ps(lane_block, _mm512_castps128_ps512(_mm_castpd_ps(_mm_load_sd((const double *)d))));
}

/* out[j] = the unscaled sum of x . W[j] over K for j < R (rows K apart from
 * w0; R = 4 or 1, a constant after inlining so the accumulators stay in
 * registers): 64-byte steps, then one 32-byte block, then q8_tail. With pf,
 * also prefetches the 4 rows after these. */
VNNI512_INLINE void q8_rows_512(const int8_t *xq, const float *d, const int8_t *w0, int64_t K, float *out,
                                const int R, int pf) {
    const int8_t *w[4];
    __m512 a[4];
    __m256 h[4];
#pragma GCC unroll 4
    for (int j = 0; j < R; j++) w[j] = w0 + j * K, a[j] = _mm512_setzero_ps(), h[j] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 64 <= K; k += 64) {
        prefetch_next_block(w0 + 4 * K + k, K, pf);
        __m512i xv = _mm512_loadu_si512(xq + k);
        __m512i xa = _mm512_abs_epi8(xv);
        __mmask64 neg = _mm512_movepi8_mask(xv);
        __m512 dv = q8_scales_512(d + k / BLOCK);
#pragma GCC unroll 4
        for (int j = 0; j < R; j++) a[j] = q8_step_512(a[j], xa, neg, dv, w[j] + k);
    }
    if (k + 32 <= K) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + k));
        __m256i xa = _mm256_abs_epi8(xv);
        __mmask32 neg = _mm256_movepi8_mask(xv);
        __m256 dv = _mm256_set1_ps(d[k / BLOCK]);
#pragma GCC unroll 4
        for (int j = 0; j < R; j++) h[j] = q8_step_512h(h[j], xa, neg, dv, w[j] + k);
        k += 32;
    }
#pragma GCC unroll 4
    for (int j = 0; j < R; j++)
        out[j] = _mm512_reduce_add_ps(a[j]) + _mm512_reduce_add_ps(_mm512_zextps256_ps512(h[j])) +
                 q8_tail(xq, d, w[j], k, K);
}

Q8_MATMUL(VNNI512, cpu_matmul_i8_q8_avx512vnni, q8_rows_512)

/* ==== AVX-VNNI (256 bits) ==== */

AVXVNNI_INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One 32-byte block of one row: _mm256_sign_epi8 gives the weights the
 * sign of x (zero where x is zero, which |x| = 0 makes harmless). */
AVXVNNI_INLINE __m256 q8_step_256(__m256 acc, __m256i xv, __m256i xa, __m256 dv, const int8_t *w) {
    __m256i wv = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)w), xv);
    __m256i p = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), xa, wv);
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), dv, acc);
}

/* As q8_rows_512, one 32-byte block a step. */
AVXVNNI_INLINE void q8_rows_256(const int8_t *xq, const float *d, const int8_t *w0, int64_t K, float *out,
                                const int R, int pf) {
    const int8_t *w[4];
    __m256 a[4];
#pragma GCC unroll 4
    for (int j = 0; j < R; j++) w[j] = w0 + j * K, a[j] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= K; k += 32) {
        if (k % 64 == 0) prefetch_next_block(w0 + 4 * K + k, K, pf);
        __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + k));
        __m256i xa = _mm256_sign_epi8(xv, xv);
        __m256 dv = _mm256_set1_ps(d[k / BLOCK]);
#pragma GCC unroll 4
        for (int j = 0; j < R; j++) a[j] = q8_step_256(a[j], xv, xa, dv, w[j] + k);
    }
#pragma GCC unroll 4
    for (int j = 0; j < R; j++) out[j] = hsum8(a[j]) + q8_tail(xq, d, w[j], k, K);
}

Q8_MATMUL(AVXVNNI, cpu_matmul_i8_q8_avxvnni, q8_rows_256)

#endif /* __x86_64__ */

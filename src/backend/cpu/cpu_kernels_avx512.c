/*
 * cpu_kernels_avx512.c: AVX-512F versions of the CPU kernels (cpu_kernels.h),
 * 16 fp32 lanes: the matrix product of cpu_kernels_vec.h with a 4-row x
 * 6-token register tile (24 accumulators of the 32 registers), plus the
 * attention kernels.
 *
 * Compiled twice: as itself (the "avx512" variant, exact fp32), and from
 * cpu_kernels_avx512bf16.c with VEC_DPBF16 defined (the "avx512bf16"
 * variant: bf16 weights times x rounded to bf16 with vdpbf16ps; fp32
 * weights and attention as avx512). Every function has a per-function
 * target attribute; cpu_kernels_supported() checks the CPU before these are
 * handed out.
 */
#if defined(__x86_64__)

#include <immintrin.h>

#include "cpu_kernels.h"

#ifdef VEC_DPBF16
#define VEC_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16,avx2,fma")))
#define VARIANT(name) name##_avx512bf16
#define VARIANT_NAME "avx512bf16"
#else
#define VEC_TARGET __attribute__((target("avx512f,avx2,fma")))
#define VARIANT(name) name##_avx512
#define VARIANT_NAME "avx512"
#endif
#define VEC_INLINE VEC_TARGET __attribute__((always_inline)) static inline
#define VEC __m512
#define VL 16
#define TILE_ROWS 4
#define TILE_TOKS 6

VEC_INLINE __m512 vzero(void) { return _mm512_setzero_ps(); }
VEC_INLINE __m512 vload(const float *p) { return _mm512_loadu_ps(p); }
VEC_INLINE void vstoreu(float *p, __m512 v) { _mm512_storeu_ps(p, v); }
VEC_INLINE __m512 vset1(float f) { return _mm512_set1_ps(f); }
VEC_INLINE __m512 vadd(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
VEC_INLINE __m512 vfma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
VEC_INLINE __m512 vbf16_even(const char *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_loadu_si512(p), 16));
}
VEC_INLINE __m512 vbf16_odd(const char *p) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_loadu_si512(p), _mm512_set1_epi32((int)0xffff0000u)));
}

#ifdef VEC_DPBF16
/* acc[j] += w[2j] * x[2j] + w[2j+1] * x[2j+1] (bf16 pairs in each 32-bit lane). */
VEC_INLINE __m512 vdpbf16(__m512 acc, __m512 w, __m512 x) { return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)x); }
#endif

/* Lane i + lane i+8, then + i+4, + i+2, + i+1. */
VEC_INLINE float vhsum(__m512 v) {
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), hi);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#include "cpu_kernels_vec.h"

VEC_TARGET static void VARIANT(matmul_bf16)(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w, int64_t r0,
                                            int64_t r1, float *y, int64_t ldy, float *scratch) {
    VARIANT(matmul)(x, ldx, T, w, r0, r1, y, ldy, scratch, true);
}

VEC_TARGET static void VARIANT(matmul_f32)(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w, int64_t r0,
                                           int64_t r1, float *y, int64_t ldy, float *scratch) {
    VARIANT(matmul)(x, ldx, T, w, r0, r1, y, ldy, scratch, false);
}

const cpu_kernels VARIANT(cpu_kernels) = {
    .name = VARIANT_NAME,
#ifdef VEC_DPBF16
    .exact = false,
#else
    .exact = true,
#endif
    .matmul_bf16 = VARIANT(matmul_bf16),
    .matmul_f32 = VARIANT(matmul_f32),
    .attn_scores = VARIANT(attn_scores),
    .attn_mix = VARIANT(attn_mix),
};

#endif /* __x86_64__ */

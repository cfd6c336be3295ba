/*
 * cpu_kernels_avx512.c: AVX-512F versions of the CPU kernels (cpu_kernels.h),
 * 16 fp32 lanes: the matrix product of cpu_kernels_vec.h with a 4-row x
 * 6-token register tile (24 accumulators of the 32 registers), plus the
 * attention kernels.
 *
 * Compiled twice: as itself (the "avx512" variant, exact fp32, and
 * "avx512vnni": these with the q8 int8 matmul of cpu_kernels_vnni.c), and from
 * cpu_kernels_avx512bf16.c with VEC_DPBF16 defined (the "avx512bf16"
 * variant: bf16 weights times x rounded to bf16 with vdpbf16ps; fp32 and
 * 8-bit weights and attention as avx512). Every function has a per-function
 * target attribute; cpu_kernels_supported() checks the CPU before these are
 * handed out.
 */
#if defined(__x86_64__)

#include <immintrin.h>

#include "cpu_kernels.h"

#ifdef VEC_DPBF16
#define VEC_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16,avx2,fma,f16c")))
#define VARIANT(name) name##_avx512bf16
#define VARIANT_NAME "avx512bf16"
#else
#define VEC_TARGET __attribute__((target("avx512f,avx2,fma,f16c")))
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

VEC_INLINE __m512 vi8(const char *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
/* e4m3 -> fp16 bits as cpu_kernels_avx2.c's vf8, 16 at a time. */
VEC_INLINE __m512 vf8(const char *p) {
    __m256i b = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p));
    return _mm512_cvtph_ps(_mm256_and_si256(_mm256_slli_epi16(b, 7), _mm256_set1_epi16((short)0xbf80)));
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

const cpu_kernels VARIANT(cpu_kernels) = {
    .name = VARIANT_NAME,
#ifdef VEC_DPBF16
    .exact = false,
#else
    .exact = true,
#endif
    .matmul_bf16 = VARIANT(matmul_bf16),
    .matmul_f32 = VARIANT(matmul_f32),
    .matmul_i8 = VARIANT(matmul_i8),
    .matmul_f8 = VARIANT(matmul_f8),
    .attn_scores = VARIANT(attn_scores),
    .attn_mix = VARIANT(attn_mix),
};

#ifndef VEC_DPBF16
const cpu_kernels cpu_kernels_avx512vnni = {
    .name = "avx512vnni",
    .exact = true,
    .matmul_bf16 = matmul_bf16_avx512,
    .matmul_f32 = matmul_f32_avx512,
    .matmul_i8 = matmul_i8_avx512,
    .matmul_f8 = matmul_f8_avx512,
    .matmul_i8_q8 = cpu_matmul_i8_q8_avx512vnni,
    .attn_scores = attn_scores_avx512,
    .attn_mix = attn_mix_avx512,
};
#endif

#endif /* __x86_64__ */

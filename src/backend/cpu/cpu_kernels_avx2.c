/*
 * cpu_kernels_avx2.c: AVX2 + FMA (+ F16C for e4m3 weights) versions of the
 * CPU kernels (cpu_kernels.h), 8 fp32 lanes: the matrix product of
 * cpu_kernels_vec.h with a 4-row x 2-token register tile (8 accumulators:
 * AVX2 has 16 registers), plus the attention kernels. The "avxvnni"
 * variant is these with the q8 int8 matmul of cpu_kernels_vnni.c.
 *
 * Compiled for every x86-64 build with per-function target attributes, so
 * the binary still runs on CPUs without AVX2 (cpu_kernels_supported()
 * checks the CPU before these are handed out).
 */
#if defined(__x86_64__)

#include <immintrin.h>

#include "cpu_kernels.h"

#define VEC_TARGET __attribute__((target("avx2,fma,f16c")))
#define VEC_INLINE VEC_TARGET __attribute__((always_inline)) static inline
#define VEC __m256
#define VL 8
#define TILE_ROWS 4
#define TILE_TOKS 2
#define VARIANT(name) name##_avx2

VEC_INLINE __m256 vzero(void) { return _mm256_setzero_ps(); }
VEC_INLINE __m256 vload(const float *p) { return _mm256_loadu_ps(p); }
VEC_INLINE void vstoreu(float *p, __m256 v) { _mm256_storeu_ps(p, v); }
VEC_INLINE __m256 vset1(float f) { return _mm256_set1_ps(f); }
VEC_INLINE __m256 vadd(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
VEC_INLINE __m256 vfma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
VEC_INLINE __m256 vbf16_even(const char *p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_loadu_si256((const __m256i *)p), 16));
}
VEC_INLINE __m256 vbf16_odd(const char *p) {
    return _mm256_castsi256_ps(
        _mm256_and_si256(_mm256_loadu_si256((const __m256i *)p), _mm256_set1_epi32((int)0xffff0000u)));
}

VEC_INLINE __m256 vi8(const char *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
/* Sign-extended to 16 bits and shifted left by 7, an e4m3's sign lands in
 * bit 15 and exponent + mantissa in bits 13..7; bit 14 (a copy of the
 * sign) is cleared: an fp16 of the value times 2^-8. */
VEC_INLINE __m256 vf8(const char *p) {
    __m128i b = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)p));
    return _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(b, 7), _mm_set1_epi16((short)0xbf80)));
}

/* Lane i + lane i+4, then + i+2, + i+1. */
VEC_INLINE float vhsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#include "cpu_kernels_vec.h"

const cpu_kernels cpu_kernels_avx2 = {
    .name = "avx2",
    .exact = true,
    .matmul_bf16 = matmul_bf16_avx2,
    .matmul_f32 = matmul_f32_avx2,
    .matmul_i8 = matmul_i8_avx2,
    .matmul_f8 = matmul_f8_avx2,
    .attn_scores = attn_scores_avx2,
    .attn_mix = attn_mix_avx2,
};

const cpu_kernels cpu_kernels_avxvnni = {
    .name = "avxvnni",
    .exact = true,
    .matmul_bf16 = matmul_bf16_avx2,
    .matmul_f32 = matmul_f32_avx2,
    .matmul_i8 = matmul_i8_avx2,
    .matmul_f8 = matmul_f8_avx2,
    .matmul_i8_q8 = cpu_matmul_i8_q8_avxvnni,
    .attn_scores = attn_scores_avx2,
    .attn_mix = attn_mix_avx2,
};

#endif /* __x86_64__ */

/*
 * cpu_kernels_avx2.c: AVX2 + FMA versions of the CPU kernels (cpu_kernels.h),
 * 8 fp32 lanes: the matrix product of cpu_kernels_vec.h with a 4-row x
 * 2-token register tile (8 accumulators: AVX2 has 16 registers), plus the
 * attention kernels.
 *
 * Compiled for every x86-64 build with per-function target attributes, so
 * the binary still runs on CPUs without AVX2 (cpu_kernels_supported()
 * checks the CPU before these are handed out).
 */
#if defined(__x86_64__)

#include <immintrin.h>

#include "cpu_kernels.h"

#define VEC_TARGET __attribute__((target("avx2,fma")))
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

/* Lane i + lane i+4, then + i+2, + i+1. */
VEC_INLINE float vhsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#include "cpu_kernels_vec.h"

VEC_TARGET static void matmul_bf16_avx2(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w, int64_t r0,
                                        int64_t r1, float *y, int64_t ldy, float *scratch) {
    matmul_avx2(x, ldx, T, w, r0, r1, y, ldy, scratch, true);
}

VEC_TARGET static void matmul_f32_avx2(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w, int64_t r0,
                                       int64_t r1, float *y, int64_t ldy, float *scratch) {
    matmul_avx2(x, ldx, T, w, r0, r1, y, ldy, scratch, false);
}

const cpu_kernels cpu_kernels_avx2 = {
    .name = "avx2",
    .exact = true,
    .matmul_bf16 = matmul_bf16_avx2,
    .matmul_f32 = matmul_f32_avx2,
    .attn_scores = attn_scores_avx2,
    .attn_mix = attn_mix_avx2,
};

#endif /* __x86_64__ */

/*
 * cpu_kernels_avx512.c: AVX-512F versions of the CPU kernels (cpu_kernels.h),
 * 16 fp32 lanes: the matrix product of cpu_kernels_vec.h with a 4-row x
 * 6-token register tile (24 accumulators of the 32 registers), plus dot
 * and axpy.
 *
 * Compiled for every x86-64 build with per-function target attributes;
 * cpu_kernels_supported() checks the CPU before these are handed out.
 */
#if defined(__x86_64__)

#include <immintrin.h>

#include "cpu_kernels.h"

#define VEC_TARGET __attribute__((target("avx512f,avx2,fma")))
#define VEC_INLINE VEC_TARGET __attribute__((always_inline)) static inline
#define VEC __m512
#define VL 16
#define TILE_ROWS 4
#define TILE_TOKS 6
#define VARIANT(name) name##_avx512

VEC_INLINE __m512 vzero(void) { return _mm512_setzero_ps(); }
VEC_INLINE __m512 vload(const float *p) { return _mm512_loadu_ps(p); }
VEC_INLINE __m512 vfma(__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); }
VEC_INLINE __m512 vbf16_even(const char *p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_loadu_si512(p), 16));
}
VEC_INLINE __m512 vbf16_odd(const char *p) {
    return _mm512_castsi512_ps(_mm512_and_si512(_mm512_loadu_si512(p), _mm512_set1_epi32((int)0xffff0000u)));
}

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

VEC_TARGET static void matmul_bf16_avx512(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w, int64_t r0,
                                          int64_t r1, float *y, int64_t ldy, float *scratch) {
    matmul_avx512(x, ldx, T, w, r0, r1, y, ldy, scratch, true);
}

VEC_TARGET static void matmul_f32_avx512(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w, int64_t r0,
                                         int64_t r1, float *y, int64_t ldy, float *scratch) {
    matmul_avx512(x, ldx, T, w, r0, r1, y, ldy, scratch, false);
}

VEC_TARGET static float dot_avx512(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    if (i < n) { /* up to 31 more: masked loads read zeros past n */
        __mmask16 m0 = (__mmask16)(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, a + i), _mm512_maskz_loadu_ps(m0, b + i), s0);
        if (n - i > 16) {
            __mmask16 m1 = (__mmask16)((1u << (n - i - 16)) - 1);
            s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m1, a + i + 16), _mm512_maskz_loadu_ps(m1, b + i + 16), s1);
        }
    }
    return vhsum(_mm512_add_ps(s0, s1));
}

VEC_TARGET static void axpy_avx512(float alpha, const float *x, float *y, int64_t n) {
    __m512 a = _mm512_set1_ps(alpha);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(a, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

const cpu_kernels cpu_kernels_avx512 = {
    .name = "avx512",
    .matmul_bf16 = matmul_bf16_avx512,
    .matmul_f32 = matmul_f32_avx512,
    .dot = dot_avx512,
    .axpy = axpy_avx512,
};

#endif /* __x86_64__ */

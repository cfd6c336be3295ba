/*
 * numeric.h: bf16 / fp16 / fp8 (e4m3) <-> fp32 conversions and the int8
 * rounding of the quantised weight formats, shared by loaders, the
 * quantiser and the CPU backend. Rounding is round-to-nearest-even
 * everywhere, as PyTorch's .to(bfloat16) / .to(float8_e4m3fn) and numpy's
 * rint.
 */
#ifndef NC_UTIL_NUMERIC_H
#define NC_UTIL_NUMERIC_H

#include <stdint.h>
#include <string.h>

static inline float nc_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t nc_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                         /* nearest even */
    return (uint16_t)(u >> 16);
}

/* Rounds an fp32 value to the nearest bf16 and back (what PyTorch does when
 * it stores a float tensor as bfloat16 and reads it again). */
static inline float nc_round_bf16(float f) { return nc_bf16_to_f32(nc_f32_to_bf16(f)); }

static inline float nc_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { e++; mant <<= 1; } while (!(mant & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ==== 8-bit formats (docs/quantization.md) ==== */

/* x rounded to the nearest integer, ties to even, for |x| < 2^22: adding
 * 1.5 * 2^23 leaves no fraction bits, so the fp32 addition itself rounds
 * (the default rounding mode is nearest-even), and subtracting it back is
 * exact. Branch-free, so quantisation loops vectorise. */
static inline float nc_rint_small(float x) {
    const float magic = 12582912.0f;
    return (x + magic) - magic;
}

/* OCP FP8 E4M3FN ("float8_e4m3fn"): sign, 4 exponent bits (bias 7), 3
 * mantissa bits; no infinities; S.1111.111 is NaN, so the largest finite
 * magnitude is 448 = 1.75 * 2^8 (0x7e); subnormals are m * 2^-9, m = 1..7. */
#define NC_F8E4M3_MAX 448.0f

static inline float nc_f8e4m3_to_f32(uint8_t b) {
    uint32_t sign = (uint32_t)(b & 0x80u) << 24, exp = (b >> 3) & 0xfu, mant = b & 7u, u;
    if (exp == 15 && mant == 7) {
        u = sign | 0x7fc00000u;
    } else if (exp == 0) {
        float f = (float)mant * 0x1p-9f;
        memcpy(&u, &f, 4);
        u |= sign;
    } else {
        u = sign | ((exp + 127 - 7) << 23) | (mant << 20);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* fp32 -> e4m3fn, round to nearest even, saturating: magnitudes above 448
 * (infinity included) become +-448; NaN stays NaN. Branch-free (both the
 * subnormal and the normal rounding are computed, then one is selected),
 * so quantisation loops over it vectorise. */
static inline uint8_t nc_f32_to_f8e4m3(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    int32_t a = (int32_t)(u & 0x7fffffffu);
    /* normal: keep 3 mantissa bits, nearest even, rebias 127 -> 7 */
    int32_t normal = ((a + 0x7ffff + ((a >> 20) & 1)) >> 20) - ((127 - 7) << 3);
    /* below 2^-6: steps of 2^-9 (a result of 8 is 0x08 = 2^-6, the same value) */
    float mag;
    memcpy(&mag, &a, 4);
    mag = mag < 1.0f ? mag : 1.0f; /* only the subnormal range matters here; keeps inf / NaN out */
    int32_t sub = (int32_t)nc_rint_small(mag * 512.0f);
    int32_t r = a < 0x3c800000 ? sub : normal;
    r = a >= 0x43e00000 ? 0x7e : r; /* >= 448, infinity: saturate */
    r = a > 0x7f800000 ? 0x7f : r;  /* NaN */
    return (uint8_t)(((u >> 24) & 0x80u) | (uint32_t)r);
}

#endif /* NC_UTIL_NUMERIC_H */

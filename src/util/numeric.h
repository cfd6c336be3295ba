/*
 * numeric.h: bf16 / fp16 <-> fp32 conversions, shared by loaders and the CPU
 * backend. Rounding is round-to-nearest-even, as PyTorch's .to(bfloat16).
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

#endif /* NC_UTIL_NUMERIC_H */

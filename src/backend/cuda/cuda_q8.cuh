/*
 * cuda_q8.cuh: the 8-bit formats of docs/quantization.md on the device:
 * int8 and e4m3fn weights widened to fp32 / bf16 exactly (every int8 and
 * e4m3 value is exact in both), and fp32 rounded to e4m3 for the fp8 KV
 * cache. Shared by the GEMV, the GEMMs, the attention kernels and the KV
 * append.
 *
 * int8 -> fp32 without the conversion unit (I2F runs at a quarter of the
 * FMA rate, too slow for a GEMV that must widen ~13 weights per clock and
 * SM): the byte b, biased to u = b + 128, is placed in the mantissa of
 * 2^23 (0x4B0000uu = 8388608 + u) with one byte permute, and one FADD
 * removes 8388608 + 128.
 *
 * e4m3 -> fp32: on sm_89+ the hardware pair conversion e4m3x2 -> f16x2,
 * then f16 -> f32 (exact; HADD2.F32 on the FMA pipe). Older code (the sm_80
 * build running on an Ada card) moves the bits into an f16 instead, sign
 * to bit 15 and exponent|mantissa to bits 7..13, which is the value /
 * 2^8 for normals and subnormals alike, and multiplies by 2^8 in fp32.
 * 0x7f / 0xff (NaN in e4m3fn) never occurs: the quantiser saturates.
 *
 * fp32 -> e4m3 rounds to nearest even and saturates to +-448, as the CPU
 * quantiser (numeric.h) does: cuda_fp8.h's conversion (hardware on sm_89+,
 * its exact emulation elsewhere).
 */
#ifndef NC_BACKEND_CUDA_Q8_CUH
#define NC_BACKEND_CUDA_Q8_CUH

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "cuda_internal.cuh"

#define NC_E4M3_MAX 448.0f

/* Bytes i of the little-endian word w (b0..b3) as int8 values, exactly. */
__device__ __forceinline__ float nc_i8_byte_to_f32(uint32_t biased, int i) {
    return __int_as_float(__byte_perm(biased, 0x4B000000u, 0x7440 | i)) - 8388736.0f;
}
__device__ __forceinline__ void nc_i8x4_to_f32(uint32_t w, float *f) {
    uint32_t u = w ^ 0x80808080u; /* b + 128 as an unsigned byte */
    f[0] = nc_i8_byte_to_f32(u, 0);
    f[1] = nc_i8_byte_to_f32(u, 1);
    f[2] = nc_i8_byte_to_f32(u, 2);
    f[3] = nc_i8_byte_to_f32(u, 3);
}

/* Two e4m3 values (the low byte first) of the low 16 bits of v. */
__device__ __forceinline__ float2 nc_e4m3x2_to_f32(uint32_t v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
    uint32_t h;
    asm("{\n.reg .b16 lo, hi;\nmov.b32 {lo, hi}, %1;\ncvt.rn.f16x2.e4m3x2 %0, lo;\n}\n" : "=r"(h) : "r"(v));
    return __half22float2(*(const __half2 *)&h);
#else
    uint32_t t = __byte_perm(v, 0, 0x1404); /* byte 0 -> bits 8..15, byte 1 -> bits 24..31 */
    uint32_t h = (t & 0x80008000u) | ((t >> 1) & 0x3f803f80u);
    float2 f = __half22float2(*(const __half2 *)&h);
    return make_float2(f.x * 256.0f, f.y * 256.0f);
#endif
}
__device__ __forceinline__ void nc_e4m3x4_to_f32(uint32_t w, float *f) {
    float2 a = nc_e4m3x2_to_f32(w), b = nc_e4m3x2_to_f32(w >> 16);
    f[0] = a.x, f[1] = a.y, f[2] = b.x, f[3] = b.y;
}

/* FMT (NC_WEIGHT_INT8 / NC_WEIGHT_FP8): the 4 values of one 32-bit word. */
template <int FMT>
__device__ __forceinline__ void nc_q8x4_to_f32(uint32_t w, float *f) {
    if constexpr (FMT == NC_WEIGHT_INT8)
        nc_i8x4_to_f32(w, f);
    else
        nc_e4m3x4_to_f32(w, f);
}

/* Two values (the low byte first, in the low 16 bits of v) as a bf16x2
 * register, the first in the low half: an mma A-fragment register. The
 * values are exact in bf16, so their fp32 bits end in 16 zeros and the
 * packing is one byte permute. */
template <int FMT>
__device__ __forceinline__ uint32_t nc_q8x2_to_bf16x2(uint32_t v) {
    float2 f;
    if constexpr (FMT == NC_WEIGHT_INT8) {
        uint32_t u = v ^ 0x8080u;
        f = make_float2(nc_i8_byte_to_f32(u, 0), nc_i8_byte_to_f32(u, 1));
    } else {
        f = nc_e4m3x2_to_f32(v);
    }
    return __byte_perm(__float_as_uint(f.x), __float_as_uint(f.y), 0x7632);
}

/* The two mma A-fragment registers of one row and k16 step of 8-bit
 * weights in shared memory: the 16-byte chunk at shared address `addr`
 * holds the step's k 0..15 of the row; this thread (tq = lane % 4) takes k
 * 2tq, 2tq+1 (lo) and 8 + 2tq, +1 (hi), widened to bf16. The four threads
 * of a row read the same chunk (a broadcast). */
template <int FMT>
__device__ __forceinline__ void nc_q8_frag_row(unsigned addr, int tq, unsigned &lo, unsigned &hi) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
    uint32_t l = tq & 2 ? v.y : v.x, h = tq & 2 ? v.w : v.z;
    if (tq & 1) l >>= 16, h >>= 16;
    lo = nc_q8x2_to_bf16x2<FMT>(l);
    hi = nc_q8x2_to_bf16x2<FMT>(h);
}

/* e4m3 of a and b (round to nearest even, saturating), a in the low byte. */
__device__ __forceinline__ uint32_t nc_f32x2_to_e4m3x2(float a, float b) {
    return (uint32_t)__nv_cvt_float2_to_fp8x2(make_float2(a, b), __NV_SATFINITE, __NV_E4M3);
}

#endif /* NC_BACKEND_CUDA_Q8_CUH */

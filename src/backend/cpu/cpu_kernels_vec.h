/*
 * cpu_kernels_vec.h: the matrix product of the vector kernel variants,
 * written once for a vector of VL fp32 lanes and included by
 * cpu_kernels_avx2.c (VL 8) and cpu_kernels_avx512.c (VL 16). Each defines
 * before including it:
 *   VEC, VL              the vector type and its lanes
 *   VEC_TARGET           the ISA's target attribute
 *   VEC_INLINE           `static inline`, always inlined, with VEC_TARGET
 *   vzero(), vload(p), vstoreu(p, v), vset1(f), vadd(a, b), vfma(a, b, c) = a*b + c,
 *                        vhsum(v) (a fixed tree of adds)
 *   vbf16_even(p), vbf16_odd(p)  of the 2*VL bf16 at p, the even-indexed /
 *                        odd-indexed ones widened to fp32 (one op each)
 *   vi8(p), vf8(p)       the VL int8 / e4m3 bytes at p as fp32 (e4m3 times
 *                        2^-8, see below)
 *   TILE_ROWS, TILE_TOKS the register tile of several tokens
 *   VARIANT(name)        the variant's name for a function (name##_avx2 ...)
 *   VEC_DPBF16, vdpbf16(acc, w, x)  only for the avx512bf16 variant: bf16
 *                        products with vdpbf16ps (x rounded to bf16; see below)
 * and gets the variant's matmul_bf16 / _f32 / _i8 / _f8 and attention
 * kernels (static, named by VARIANT).
 *
 * Order of summation of y[t, r] (batch invariance, cpu_kernels.h): one
 * accumulator of VL lanes runs over K in steps; a step is
 *   fp32, int8, fp8 W: VL columns: acc = fma(W[k, k+VL), x[k, k+VL), acc)
 *   bf16 W: 2*VL columns: acc = fma(W evens, x evens, acc); acc = fma(W odds, x odds, acc)
 * The last, partial step reads zero-padded copies of W and x (0 * 0 adds
 * nothing); then vhsum's tree gives the sum, which for 8-bit weights is
 * multiplied by the row's scale (the weight-only math of cpu_kernels.h).
 * Every tile below runs this sequence per output element; tiles only
 * change how many run side by side.
 *
 * Why evens and odds: a 32-bit lane holding two bf16 gives the odd one as an
 * fp32 by masking off the low half and the even one by a shift, one op per
 * VL weights (a zero-extend and shift takes two). x is copied to scratch once
 * per tile of tokens in the matching order (each step's evens, then its
 * odds), zero-padded to whole steps.
 *
 * 8-bit weights are widened in the step: int8 by sign extension and
 * conversion; e4m3 by moving its bits into an fp16 (sign to bit 15,
 * exponent and mantissa to bits 13..7: the same value times 2^-8,
 * subnormals included) converted exactly, the 2^8 going into the row's
 * scale (an e4m3 NaN, which the quantiser never writes, reads as 480).
 *
 * With VEC_DPBF16 a bf16 step is one vdpbf16ps per row and token: x is
 * packed as bf16 (rounded to nearest even), in order, and each lane adds
 * the products of one pair of columns. That is NOT the exact fp32 product
 * (x loses 16 bits), but it is one order too, the same on every path.
 *
 * Tiles: one token (decode) runs 4 rows at a time, each step also
 * prefetching the same columns of the next 4 rows (into L1 while a 4-row
 * block is <= 16 KB, else L2: dev/kernels/NOTES_CPU.md); several tokens run
 * TILE_ROWS x TILE_TOKS register tiles: each widened W vector serves
 * TILE_TOKS tokens, each x vector TILE_ROWS rows. Tokens are taken in tiles
 * of at most CPU_MATMUL_TILE_FLOATS of x, which stay in L2 while the blocks
 * of rows of W pass over them.
 */
#include <math.h>
#include <string.h>

#include "../../util/numeric.h"

enum { PF_NONE, PF_L1, PF_L2 };

/* How a step reads W: fp32 weights, or narrower ones widened in the step. */
enum { W_F32, W_BF16, W_I8, W_F8 };

/* Columns per step; bytes per weight. */
#define STEP_COLS(wmode) ((wmode) == W_BF16 ? 2 * VL : VL)
#define W_BYTES(wmode) ((wmode) == W_F32 ? 4 : (wmode) == W_BF16 ? 2 : 1)

/* The scales of rows from r on (NULL for float weights: no offset on NULL). */
#define ROW_SCALES(scale, r) ((scale) ? (scale) + (r) : NULL)

/* Bytes of W rows that several-token products keep in L2 (>= 4 rows of any K). */
#define PANEL_BYTES(row_bytes) ((row_bytes) * 4 > 256 * 1024 ? (row_bytes) * 4 : 256 * 1024)

/* Rows [0, n) of x -> xp (row stride kp, a multiple of the step), in the
 * order the steps read them, zero-padded. */
static void VARIANT(pack_x)(const float *x, int64_t ldx, int64_t n, int64_t K, int64_t kp, int wmode, float *xp) {
    for (int64_t t = 0; t < n; t++) {
        const float *src = x + t * ldx;
        float *dst = xp + t * kp;
        if (wmode != W_BF16) {
            memcpy(dst, src, (size_t)K * sizeof(float));
            memset(dst + K, 0, (size_t)(kp - K) * sizeof(float));
            continue;
        }
#ifdef VEC_DPBF16
        uint16_t *d16 = (uint16_t *)xp + t * kp; /* bf16, in order */
        for (int64_t k = 0; k < kp; k++) d16[k] = k < K ? nc_f32_to_bf16(src[k]) : 0;
        (void)dst;
#else
        for (int64_t k0 = 0; k0 < kp; k0 += 2 * VL)
            for (int j = 0; j < VL; j++) {
                int64_t e = k0 + 2 * j;
                dst[k0 + j] = e < K ? src[e] : 0.0f;
                dst[k0 + VL + j] = e + 1 < K ? src[e + 1] : 0.0f;
            }
#endif
    }
}

/* Where column k of the packed x row at xp starts (bf16 x: 2-byte elements). */
static inline const float *VARIANT(x_at)(const float *xp, int64_t k, int wmode) {
#ifdef VEC_DPBF16
    if (wmode == W_BF16) return (const float *)((const uint16_t *)xp + k);
#endif
    (void)wmode;
    return xp + k;
}

/* One step for R rows (w[i] + wo: the step's first weight of row i, as
 * bytes) and MT tokens (xk + t*kp: the step's x of token t). */
VEC_INLINE void VARIANT(step)(VEC acc[TILE_ROWS][TILE_TOKS], const char *const *w, int64_t wo, const float *xk,
                              int64_t kp, const int R, const int MT, const int wmode) {
    VEC wv[TILE_ROWS];
    if (wmode != W_BF16) {
#pragma GCC unroll 8
        for (int i = 0; i < R; i++)
            wv[i] = wmode == W_I8 ? vi8(w[i] + wo) : wmode == W_F8 ? vf8(w[i] + wo) : vload((const float *)(w[i] + wo));
#pragma GCC unroll 8
        for (int t = 0; t < MT; t++) {
            VEC xv = vload(xk + t * kp);
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) acc[i][t] = vfma(wv[i], xv, acc[i][t]);
        }
        return;
    }
#ifdef VEC_DPBF16
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) wv[i] = vload((const float *)(w[i] + wo)); /* 2*VL bf16, raw */
#pragma GCC unroll 8
    for (int t = 0; t < MT; t++) {
        VEC xv = vload((const float *)((const uint16_t *)xk + t * kp));
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) acc[i][t] = vdpbf16(acc[i][t], wv[i], xv);
    }
    return;
#endif
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) wv[i] = vbf16_even(w[i] + wo);
#pragma GCC unroll 8
    for (int t = 0; t < MT; t++) {
        VEC xv = vload(xk + t * kp);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) acc[i][t] = vfma(wv[i], xv, acc[i][t]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) wv[i] = vbf16_odd(w[i] + wo);
#pragma GCC unroll 8
    for (int t = 0; t < MT; t++) {
        VEC xv = vload(xk + t * kp + VL);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) acc[i][t] = vfma(wv[i], xv, acc[i][t]);
    }
}

/* y[t*ldy + i] for i < R, t < MT: rows w0, w0 + row_bytes, ... of K
 * weights read as wmode says (8-bit ones then times scale[i]), x packed
 * (xp, stride kp). With pf, also prefetches the R rows after these (they
 * must exist): each step's bytes, or for 8-bit weights a 64-byte line
 * every few steps. */
VEC_INLINE void VARIANT(tile)(const float *xp, int64_t kp, const char *w0, int64_t row_bytes, int64_t K,
                              const float *scale, float *y, int64_t ldy, const int R, const int MT, const int wmode,
                              const int pf) {
    const int64_t es = W_BYTES(wmode), step = STEP_COLS(wmode), pf_every = es == 1 ? 64 / step : 1;
    const char *w[TILE_ROWS];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) w[i] = w0 + i * row_bytes;
    VEC acc[TILE_ROWS][TILE_TOKS];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
#pragma GCC unroll 8
        for (int t = 0; t < MT; t++) acc[i][t] = vzero();
    int64_t k = 0, full = K / step * step;
    for (; k < full; k += step) {
        if (pf != PF_NONE && (pf_every == 1 || k / step % pf_every == 0))
#pragma GCC unroll 8
            for (int i = 0; i < R; i++) {
                if (pf == PF_L1) _mm_prefetch(w[i] + R * row_bytes + k * es, _MM_HINT_T0);
                else _mm_prefetch(w[i] + R * row_bytes + k * es, _MM_HINT_T1);
            }
        VARIANT(step)(acc, w, k * es, VARIANT(x_at)(xp, k, wmode), kp, R, MT, wmode);
    }
    if (k < K) { /* the partial last step, from zero-padded copies */
        _Alignas(64) char tail[TILE_ROWS][VL * 4];
        const char *tw[TILE_ROWS];
        for (int i = 0; i < R; i++) {
            memset(tail[i], 0, sizeof tail[i]);
            memcpy(tail[i], w[i] + k * es, (size_t)((K - k) * es));
            tw[i] = tail[i];
        }
        VARIANT(step)(acc, tw, 0, VARIANT(x_at)(xp, k, wmode), kp, R, MT, wmode);
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        float s = wmode == W_I8 ? scale[i] : wmode == W_F8 ? scale[i] * 0x1p8f : 1.0f;
#pragma GCC unroll 8
        for (int t = 0; t < MT; t++)
            y[t * ldy + i] = wmode == W_I8 || wmode == W_F8 ? vhsum(acc[i][t]) * s : vhsum(acc[i][t]);
    }
}

/* Tokens [0, mt) of packed x (mt <= TILE_TOKS) for the TILE_ROWS-row blocks
 * of n_rows rows at w0 (row_bytes apart; their scales at scale), then the
 * rows left over one by one; mt is dispatched to a compile-time tile width. */
VEC_INLINE void VARIANT(tokens_rows)(const float *xp, int64_t kp, int64_t mt, const char *w0, int64_t row_bytes,
                                     int64_t K, const float *scale, int64_t n_rows, float *y, int64_t ldy,
                                     const int wmode) {
#pragma GCC unroll 8
    for (int width = TILE_TOKS; width >= 1; width--) {
        if (mt != width) continue;
        int64_t r = 0;
        for (; r + TILE_ROWS <= n_rows; r += TILE_ROWS)
            VARIANT(tile)(xp, kp, w0 + r * row_bytes, row_bytes, K, ROW_SCALES(scale, r), y + r, ldy, TILE_ROWS,
                          width, wmode, PF_NONE);
        for (; r < n_rows; r++)
            VARIANT(tile)(xp, kp, w0 + r * row_bytes, row_bytes, K, ROW_SCALES(scale, r), y + r, ldy, 1, width, wmode,
                          PF_NONE);
    }
}

VEC_INLINE void VARIANT(matmul)(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w, int64_t r0, int64_t r1,
                                float *y, int64_t ldy, float *scratch, const int wmode) {
    const int64_t K = w->cols, row_bytes = K * W_BYTES(wmode), step = STEP_COLS(wmode);
    const int64_t kp = (K + step - 1) / step * step;
    const char *W = w->data;
    const float *sc = w->scale; /* NULL for float weights */
    const int64_t tt = cpu_matmul_x_floats(K) / kp / TILE_TOKS * TILE_TOKS; /* >= 8 tokens' x */
    for (int64_t t0 = 0; t0 < T; t0 += tt) {
        int64_t n = T - t0 < tt ? T - t0 : tt;
        VARIANT(pack_x)(x + t0 * ldx, ldx, n, K, kp, wmode, scratch);
        float *yt = y + t0 * ldy;
        if (n == 1) { /* decode: blocks of 4 rows, prefetching the next block while one is left */
            const int pf = 4 * row_bytes <= 16384 ? PF_L1 : PF_L2;
            int64_t r = r0;
            for (; r + 8 <= r1; r += 4)
                VARIANT(tile)(scratch, kp, W + r * row_bytes, row_bytes, K, ROW_SCALES(sc, r), yt + r, ldy, 4, 1, wmode,
                              pf);
            for (; r + 4 <= r1; r += 4)
                VARIANT(tile)(scratch, kp, W + r * row_bytes, row_bytes, K, ROW_SCALES(sc, r), yt + r, ldy, 4, 1, wmode,
                              PF_NONE);
            for (; r < r1; r++)
                VARIANT(tile)(scratch, kp, W + r * row_bytes, row_bytes, K, ROW_SCALES(sc, r), yt + r, ldy, 1, 1, wmode,
                              PF_NONE);
            continue;
        }
        /* panels of rows small enough to stay in L2 while every token of the
         * tile passes; within one, a tile of tokens (in L1 for K <= ~1500)
         * meets every block of rows */
        const int64_t panel = PANEL_BYTES(row_bytes) / row_bytes / TILE_ROWS * TILE_ROWS;
        for (int64_t p0 = r0; p0 < r1; p0 += panel) {
            int64_t rows = r1 - p0 < panel ? r1 - p0 : panel;
            for (int64_t t = 0; t < n; t += TILE_TOKS)
                VARIANT(tokens_rows)(VARIANT(x_at)(scratch, t * kp, wmode), kp, n - t < TILE_TOKS ? n - t : TILE_TOKS,
                                     W + p0 * row_bytes, row_bytes, K, ROW_SCALES(sc, p0), rows, yt + t * ldy + p0, ldy,
                                     wmode);
        }
    }
}

/* The cpu_matmul_fn of one weight type: matmul with wmode a constant. */
#define VEC_MATMUL_FN(type, wmode)                                                                               \
    VEC_TARGET static void VARIANT(matmul_##type)(const float *x, int64_t ldx, int64_t T, const cpu_matrix *w,   \
                                                  int64_t r0, int64_t r1, float *y, int64_t ldy, float *scratch) { \
        VARIANT(matmul)(x, ldx, T, w, r0, r1, y, ldy, scratch, wmode);                                           \
    }
VEC_MATMUL_FN(bf16, W_BF16)
VEC_MATMUL_FN(f32, W_F32)
VEC_MATMUL_FN(i8, W_I8)
VEC_MATMUL_FN(f8, W_F8)

/* ==== attention ==== */

/* The dot products of q with 4 consecutive keys (1 unless `four`), each as
 * two accumulators over alternate VL-chunks (a zero-padded copy for a
 * partial last chunk), added and vhsum'd: the one order of a score. */
VEC_INLINE void VARIANT(dots)(const float *q, const float *k0, int64_t D, float scale, float *out, const bool four) {
    const int nk = four ? 4 : 1;
    const float *k[4];
    VEC a[4][2];
#pragma GCC unroll 4
    for (int j = 0; j < nk; j++) k[j] = k0 + j * D, a[j][0] = a[j][1] = vzero();
    int64_t d = 0, c = 0;
    for (; d + VL <= D; d += VL, c ^= 1) {
        VEC qv = vload(q + d);
#pragma GCC unroll 4
        for (int j = 0; j < nk; j++) a[j][c] = vfma(qv, vload(k[j] + d), a[j][c]);
    }
    if (d < D) {
        _Alignas(64) float qt[VL] = {0}, kt[VL];
        memcpy(qt, q + d, (size_t)(D - d) * sizeof(float));
        for (int j = 0; j < nk; j++) {
            memset(kt, 0, sizeof kt);
            memcpy(kt, k[j] + d, (size_t)(D - d) * sizeof(float));
            a[j][c] = vfma(vload(qt), vload(kt), a[j][c]);
        }
    }
#pragma GCC unroll 4
    for (int j = 0; j < nk; j++) out[j] = vhsum(vadd(a[j][0], a[j][1])) * scale;
}

VEC_TARGET static void VARIANT(attn_scores)(const float *q, const float *keys, int64_t n, int64_t D, float scale,
                                            float *scores) {
    int64_t s = 0;
    for (; s + 4 <= n; s += 4) VARIANT(dots)(q, keys + s * D, D, scale, scores + s, true);
    for (; s < n; s++) VARIANT(dots)(q, keys + s * D, D, scale, scores + s, false);
}

/* out in registers, up to 8 VL-chunks at a time (8 independent chains of
 * FMAs), over all n keys. */
VEC_TARGET static void VARIANT(attn_mix)(const float *p, const float *vals, int64_t n, int64_t D, float *out) {
    int64_t d = 0;
    for (; d + 8 * VL <= D; d += 8 * VL) {
        VEC acc[8];
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++) acc[c] = vload(out + d + c * VL);
        for (int64_t s = 0; s < n; s++) {
            VEC ps = vset1(p[s]);
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) acc[c] = vfma(ps, vload(vals + s * D + d + c * VL), acc[c]);
        }
#pragma GCC unroll 8
        for (int c = 0; c < 8; c++) vstoreu(out + d + c * VL, acc[c]);
    }
    for (; d + VL <= D; d += VL) {
        VEC acc = vload(out + d);
        for (int64_t s = 0; s < n; s++) acc = vfma(vset1(p[s]), vload(vals + s * D + d), acc);
        vstoreu(out + d, acc);
    }
    for (; d < D; d++)
        for (int64_t s = 0; s < n; s++) out[d] = fmaf(p[s], vals[s * D + d], out[d]);
}

/*
 * cuda_rope.cuh: RoPE + QK-norm (+ scale) of q and k, value embeddings and
 * the KV-cache append for one head of one token (docs/model.md), shared by
 * the rope/append kernel (cuda_elementwise.cu: prompts and batches of
 * several rows, bf16 qkv), the skinny GEMM's epilogue (cuda_gemm_skinny.cu:
 * the qkv product of 2..64 rows, bf16 qkv) and the decode attention kernel
 * (cuda_attn_decode.cu), which folds it in for batch-1 decode (fp32 qkv).
 *
 * With --kv-cache fp8 the key and value vectors are stored as e4m3 with one
 * fp32 scale per (token, kv head), s = max|x| / 448 and q = e4m3(x / s)
 * computed from the fp32 values exactly as the CPU backend's quantiser
 * does (docs/quantization.md): a warp maximum, one division per value.
 */
#ifndef NC_BACKEND_CUDA_ROPE_CUH
#define NC_BACKEND_CUDA_ROPE_CUH

#include "cuda_q8.cuh"

typedef struct nc_rope_args {
    const void *qkv;     /* [N, Q], fp32 (GEMV) or bf16 (GEMM) */
    const float *x;      /* [N, C] residual (attention input, for the ve gate) */
    const int32_t *tok, *tpos, *tseq, *s_bt, *bt;
    const float2 *rope;  /* [rope_len][D/2] */
    bf16 *q;             /* [N, H, D] */
    bf16 *kc, *vc;       /* this layer's cache: [n_blocks][Hkv][64][D] (bf16, or NULL) */
    uint8_t *kc8, *vc8;  /* or e4m3, the same layout */
    float *ksc, *vsc;    /* and their scales [n_blocks][Hkv][64] */
    const bf16 *ve;      /* [Vp, Hkv*D] or NULL */
    const float *ve_gate;/* [Hkv, ve_ch] */
    int H, Hkv, C, ve_ch;
    float eps, qk_scale, ve_scale;
} nc_rope_args;

/* Fills the arguments for `layer` of the current batch (cuda_elementwise.cu). */
void nc_cuda_rope_args_fill(const nc_cuda *cu, int layer, nc_rope_args *a);

/* Two consecutive values of a qkv row as fp32 (i even). */
__device__ __forceinline__ float2 nc_load2(const float *p, int i) { return *(const float2 *)(p + i); }
__device__ __forceinline__ float2 nc_load2(const bf16 *p, int i) {
    return __bfloat1622float2(*(const __nv_bfloat162 *)(p + i));
}
__device__ __forceinline__ void nc_store2(bf16 *p, int i, float a, float b) {
    *(__nv_bfloat162 *)(p + i) = __floats2bfloat162_rn(a, b);
}

/* One key or value vector into the fp8 cache: lane holds dims i0, i0 + 1
 * (lo) and i1, i1 + 1 (hi) of vector `vec` (index of its (token, kv head)
 * slot: bytes at vec * D, scale at vec). */
__device__ __forceinline__ void nc_store_kv8(uint8_t *c8, float *sc, size_t vec, int i0, int i1, int lane,
                                             float2 lo, float2 hi) {
    float amax = fmaxf(fmaxf(fabsf(lo.x), fabsf(lo.y)), fmaxf(fabsf(hi.x), fabsf(hi.y)));
    float s = nc_warp_max(amax) / NC_E4M3_MAX;
    uint32_t a = 0, b = 0;
    if (s != 0.0f) {
        a = nc_f32x2_to_e4m3x2(lo.x / s, lo.y / s);
        b = nc_f32x2_to_e4m3x2(hi.x / s, hi.y / s);
    }
    uint8_t *dst = c8 + vec * NC_HEAD_DIM;
    *(uint16_t *)(dst + i0) = (uint16_t)a;
    *(uint16_t *)(dst + i1) = (uint16_t)b;
    if (lane == 0) sc[vec] = s;
}

/* Head hh of token t (q heads 0..H-1, then the H..H+Hkv-1 k heads, then the
 * v heads), by one warp: lane l holds dims 2l, 2l+1 and their RoPE partners
 * 2l+64, 2l+65, so every load and store moves two values. A q head is
 * written to q_dst (D bf16, global or shared memory), k and v heads to the
 * cache slot of the token's position. TQ: element type of qkv. */
template <typename TQ>
__device__ __forceinline__ void nc_rope_head(const nc_rope_args &a, int t, int hh, int lane, bf16 *q_dst) {
    const int D = NC_HEAD_DIM, i0 = 2 * lane, i1 = 2 * lane + D / 2;
    int nheads = a.H + 2 * a.Hkv;
    const TQ *src = (const TQ *)a.qkv + (size_t)t * (nheads * D) + (size_t)hh * D;
    float2 lo = nc_load2(src, i0), hi = nc_load2(src, i1);
    int pos = a.tpos[t];
    int seq = a.tseq[t];
    int blk = a.bt[a.s_bt[seq] + pos / NC_KV_BLOCK_TOKENS];
    size_t vec0 = ((size_t)blk * a.Hkv) * NC_KV_BLOCK_TOKENS + pos % NC_KV_BLOCK_TOKENS, slot = vec0 * D;
    if (hh < a.H + a.Hkv) {
        float4 cs = *(const float4 *)(a.rope + (size_t)pos * (D / 2) + i0); /* (cos, sin) of pairs i0, i0 + 1 */
        float y0 = lo.x * cs.x + hi.x * cs.y, y2 = -lo.x * cs.y + hi.x * cs.x;
        float y1 = lo.y * cs.z + hi.y * cs.w, y3 = -lo.y * cs.w + hi.y * cs.z;
        float ss = nc_warp_sum(y0 * y0 + y1 * y1 + y2 * y2 + y3 * y3);
        float sc = rsqrtf(ss / (float)D + a.eps) * a.qk_scale;
        if (hh >= a.H && a.kc8) {
            nc_store_kv8(a.kc8, a.ksc, vec0 + (size_t)(hh - a.H) * NC_KV_BLOCK_TOKENS, i0, i1, lane,
                         make_float2(y0 * sc, y1 * sc), make_float2(y2 * sc, y3 * sc));
            return;
        }
        bf16 *dst = hh < a.H ? q_dst : a.kc + slot + (size_t)(hh - a.H) * NC_KV_BLOCK_TOKENS * D;
        nc_store2(dst, i0, y0 * sc, y1 * sc);
        nc_store2(dst, i1, y2 * sc, y3 * sc);
    } else {
        int j = hh - a.H - a.Hkv;
        if (a.ve) {
            const float *xr = a.x + (size_t)t * a.C;
            float ss = 0.0f;
            for (int c = lane; c < a.C; c += 32) ss += xr[c] * xr[c];
            float sc = rsqrtf(nc_warp_sum(ss) / (float)a.C + a.eps);
            float g = 0.0f;
            for (int c = lane; c < a.ve_ch; c += 32) g += xr[c] * sc * a.ve_gate[j * a.ve_ch + c];
            g = a.ve_scale / (1.0f + __expf(-nc_warp_sum(g)));
            const bf16 *ve = a.ve + ((size_t)a.tok[t] * a.Hkv + j) * D;
            float2 e0 = nc_load2(ve, i0), e1 = nc_load2(ve, i1);
            lo.x += g * e0.x, lo.y += g * e0.y, hi.x += g * e1.x, hi.y += g * e1.y;
        }
        if (a.vc8) {
            nc_store_kv8(a.vc8, a.vsc, vec0 + (size_t)j * NC_KV_BLOCK_TOKENS, i0, i1, lane, lo, hi);
            return;
        }
        bf16 *dst = a.vc + slot + (size_t)j * NC_KV_BLOCK_TOKENS * D;
        nc_store2(dst, i0, lo.x, lo.y);
        nc_store2(dst, i1, hi.x, hi.y);
    }
}

#endif /* NC_BACKEND_CUDA_ROPE_CUH */

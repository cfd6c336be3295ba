/*
 * cuda_rope.cuh: RoPE + QK-norm (+ scale) of q and k, value embeddings and
 * the KV-cache append for one head of one token (SPEC §1.1/§1.2), shared by
 * the rope/append kernel (cuda_elementwise.cu: prompts and mixed batches)
 * and the decode attention kernel (cuda_attn_decode.cu), which folds it in
 * for batches made only of decode rows, so both give the same bits.
 */
#ifndef NC_BACKEND_CUDA_ROPE_CUH
#define NC_BACKEND_CUDA_ROPE_CUH

#include "cuda_internal.cuh"

typedef struct {
    const void *qkv;     /* [N, Q], fp32 (GEMV) or bf16 (GEMM) */
    const float *x;      /* [N, C] residual (attention input, for the ve gate) */
    const int32_t *tok, *tpos, *tseq, *s_bt, *bt;
    const float2 *rope;  /* [rope_len][D/2] */
    bf16 *q;             /* [N, H, D] */
    bf16 *kc, *vc;       /* this layer's cache: [n_blocks][Hkv][64][D] */
    const bf16 *ve;      /* [Vp, Hkv*D] or NULL */
    const float *ve_gate;/* [Hkv, ve_ch] */
    int H, Hkv, C, ve_ch;
    float eps, qk_scale, ve_scale;
} nc_rope_args;

/* Fills the arguments for `layer` of the current batch (cuda_elementwise.cu). */
void nc_cuda_rope_args_fill(const nc_cuda *cu, int layer, nc_rope_args *a);

__device__ __forceinline__ float nc_to_f32(float v) { return v; }
__device__ __forceinline__ float nc_to_f32(bf16 v) { return __bfloat162float(v); }

/* Head hh of token t (q heads 0..H-1, then the H..H+Hkv-1 k heads, then the
 * v heads), by one warp: lane l holds dims l, l+32, l+64, l+96 (RoPE pairs
 * j with j + D/2). A q head is written to q_dst (D bf16, global or shared
 * memory), k and v heads to the cache slot of the token's position. TQ:
 * element type of qkv. */
template <typename TQ>
__device__ __forceinline__ void nc_rope_head(const nc_rope_args &a, int t, int hh, int lane, bf16 *q_dst) {
    const int D = NC_HEAD_DIM;
    int nheads = a.H + 2 * a.Hkv;
    const TQ *src = (const TQ *)a.qkv + (size_t)t * (nheads * D) + (size_t)hh * D;
    float v0 = nc_to_f32(src[lane]), v1 = nc_to_f32(src[lane + 32]);
    float v2 = nc_to_f32(src[lane + 64]), v3 = nc_to_f32(src[lane + 96]);
    int pos = a.tpos[t];
    int seq = a.tseq[t];
    int blk = a.bt[a.s_bt[seq] + pos / NC_KV_BLOCK_TOKENS];
    size_t slot = (((size_t)blk * a.Hkv) * NC_KV_BLOCK_TOKENS + pos % NC_KV_BLOCK_TOKENS) * D;
    if (hh < a.H + a.Hkv) {
        float2 cs0 = a.rope[(size_t)pos * (D / 2) + lane];
        float2 cs1 = a.rope[(size_t)pos * (D / 2) + lane + 32];
        float y0 = v0 * cs0.x + v2 * cs0.y, y2 = -v0 * cs0.y + v2 * cs0.x;
        float y1 = v1 * cs1.x + v3 * cs1.y, y3 = -v1 * cs1.y + v3 * cs1.x;
        float ss = nc_warp_sum(y0 * y0 + y1 * y1 + y2 * y2 + y3 * y3);
        float sc = rsqrtf(ss / (float)D + a.eps) * a.qk_scale;
        bf16 *dst = hh < a.H ? q_dst : a.kc + slot + (size_t)(hh - a.H) * NC_KV_BLOCK_TOKENS * D;
        dst[lane] = __float2bfloat16_rn(y0 * sc);
        dst[lane + 32] = __float2bfloat16_rn(y1 * sc);
        dst[lane + 64] = __float2bfloat16_rn(y2 * sc);
        dst[lane + 96] = __float2bfloat16_rn(y3 * sc);
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
            v0 += g * __bfloat162float(ve[lane]);
            v1 += g * __bfloat162float(ve[lane + 32]);
            v2 += g * __bfloat162float(ve[lane + 64]);
            v3 += g * __bfloat162float(ve[lane + 96]);
        }
        bf16 *dst = a.vc + slot + (size_t)j * NC_KV_BLOCK_TOKENS * D;
        dst[lane] = __float2bfloat16_rn(v0);
        dst[lane + 32] = __float2bfloat16_rn(v1);
        dst[lane + 64] = __float2bfloat16_rn(v2);
        dst[lane + 96] = __float2bfloat16_rn(v3);
    }
}

#endif /* NC_BACKEND_CUDA_ROPE_CUH */

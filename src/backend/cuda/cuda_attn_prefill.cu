/*
 * cuda_attn_prefill.cu: causal flash attention for prompt chunks on the
 * tensor cores (mma.sync m16n8k16, bf16 in, fp32 accumulate), reading keys
 * and values from the paged KV cache (the chunk's own K/V were appended
 * first, earlier chunks' are already there), so chunked prefill and prefix
 * reuse need nothing special.
 *
 * A CTA owns 64 query rows of one head (4 warps x 16 rows) and walks the
 * 64-key cache blocks from the first visible one (window) to the last
 * (causal), double-buffered with cp.async into padded shared memory
 * (rows of D + 8 bf16: ldmatrix reads 8 rows at a 4-bank offset each, no
 * conflicts). Per tile: S = Q·Kᵀ (Q fragments stay in registers), masking,
 * the online softmax in fp32 (exp2 domain), P rounded to bf16 and O += P·V
 * with V fragments from ldmatrix.trans. This is the FlashAttention-2 schedule.
 */
#include <math.h>

#include "cuda_internal.cuh"

#define META(cu, f) ((cu)->meta_d + (cu)->ml.f)
#define FPAD (NC_HEAD_DIM + 8)
#define FQ_ROWS 64
#define F_THREADS 128

typedef struct {
    const bf16 *q;          /* [N, H, D] */
    const bf16 *kc, *vc;    /* this layer: [n_blocks][Hkv][64][D] */
    const int32_t *items;   /* [n_items][2] (chunk, first query row) */
    const int32_t *s_tok0, *s_ntok, *s_pos, *s_bt, *bt;
    bf16 *out;              /* [N, H*D] */
    int H, Hkv, G, window;
    float scale_log2;       /* 1/sqrt(D) * log2(e) */
} fa_args;

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

__device__ __forceinline__ void ldsm_x4(unsigned &r0, unsigned &r1, unsigned &r2, unsigned &r3, const void *p) {
    unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(s));
}

__device__ __forceinline__ void ldsm_x4_t(unsigned &r0, unsigned &r1, unsigned &r2, unsigned &r3, const void *p) {
    unsigned s = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(s));
}

__device__ __forceinline__ void mma_bf16(float *d, const unsigned *a, unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(unsigned *)&v;
}

static const size_t FA_SMEM = 4 * (size_t)NC_KV_BLOCK_TOKENS * FPAD * 2; /* K, V x 2 stages */

__global__ void __launch_bounds__(F_THREADS) attn_prefill_kernel(fa_args a) {
    const int D = NC_HEAD_DIM, BT = NC_KV_BLOCK_TOKENS;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *ks = (bf16 *)smem;            /* [2][64][FPAD] */
    bf16 *vs = ks + 2 * BT * FPAD;      /* [2][64][FPAD] */

    nc_pdl_trigger();
    int h = blockIdx.y, hk = h / a.G;
    int seq = a.items[2 * blockIdx.x], q0 = a.items[2 * blockIdx.x + 1];
    int T = a.s_ntok[seq], tok0 = a.s_tok0[seq], pos0 = a.s_pos[seq];
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int g = lane >> 2, tq = lane & 3;
    int ra = q0 + warp * 16 + g, rb = ra + 8; /* chunk-relative query rows of this thread */
    int qpa = pos0 + ra, qpb = pos0 + rb;

    /* Q fragments (A operand, row-major 16 x 16 per k-step). */
    unsigned qa[8][4];
    {
        const unsigned *qra = (const unsigned *)(a.q + ((size_t)(tok0 + ra) * a.H + h) * D);
        const unsigned *qrb = (const unsigned *)(a.q + ((size_t)(tok0 + rb) * a.H + h) * D);
        bool va = ra < T, vb = rb < T;
#pragma unroll
        for (int kk = 0; kk < 8; kk++) {
            qa[kk][0] = va ? qra[kk * 8 + tq] : 0u;
            qa[kk][1] = vb ? qrb[kk * 8 + tq] : 0u;
            qa[kk][2] = va ? qra[kk * 8 + 4 + tq] : 0u;
            qa[kk][3] = vb ? qrb[kk * 8 + 4 + tq] : 0u;
        }
    }

    int last_row = min(q0 + FQ_ROWS, T) - 1;
    int kmax = pos0 + last_row;
    int kmin = a.window == INT32_MAX ? 0 : max(0, pos0 + q0 - a.window);
    int b_lo = kmin / BT, b_hi = kmax / BT;
    const int32_t *bt = a.bt + a.s_bt[seq];
    size_t tile = (size_t)BT * D;

#define LOAD_TILE(b, buf)                                                                   \
    do {                                                                                    \
        size_t off_ = (((size_t)bt[b]) * a.Hkv + hk) * tile;                                \
        const bf16 *kg_ = a.kc + off_, *vg_ = a.vc + off_;                                  \
        for (int c_ = tid; c_ < BT * D / 8; c_ += F_THREADS) {                              \
            int r_ = c_ / (D / 8), k_ = c_ % (D / 8);                                       \
            cp_async16(ks + (buf) * BT * FPAD + r_ * FPAD + k_ * 8, kg_ + (size_t)c_ * 8);  \
            cp_async16(vs + (buf) * BT * FPAD + r_ * FPAD + k_ * 8, vg_ + (size_t)c_ * 8);  \
        }                                                                                   \
        cp_async_commit();                                                                  \
    } while (0)

    float o[16][4];
#pragma unroll
    for (int n = 0; n < 16; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float ma = -INFINITY, mb = -INFINITY, la = 0.0f, lb = 0.0f;

    LOAD_TILE(b_lo, 0);
    for (int b = b_lo; b <= b_hi; b++) {
        int buf = (b - b_lo) & 1;
        if (b < b_hi) {
            LOAD_TILE(b + 1, buf ^ 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const bf16 *kt = ks + buf * BT * FPAD, *vt = vs + buf * BT * FPAD;

        /* S = Q Kᵀ: 16 rows x 64 keys per warp. */
        float s[8][4];
#pragma unroll
        for (int n = 0; n < 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < 8; kk++) {
#pragma unroll
            for (int np = 0; np < 4; np++) {
                int mi = lane >> 3, r = lane & 7;
                const bf16 *p = kt + (np * 16 + r + (mi >> 1) * 8) * FPAD + kk * 16 + (mi & 1) * 8;
                unsigned b0, b1, b2, b3;
                ldsm_x4(b0, b1, b2, b3, p);
                mma_bf16(s[2 * np], qa[kk], b0, b1);
                mma_bf16(s[2 * np + 1], qa[kk], b2, b3);
            }
        }
        /* mask + scale, row maxima */
        float mxa = -INFINITY, mxb = -INFINITY;
#pragma unroll
        for (int n = 0; n < 8; n++) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                int kpos = b * BT + n * 8 + 2 * tq + (i & 1);
                int qp = i < 2 ? qpa : qpb;
                bool ok = kpos <= qp && qp - kpos <= a.window;
                float v = ok ? s[n][i] * a.scale_log2 : -INFINITY;
                s[n][i] = v;
                if (i < 2) mxa = fmaxf(mxa, v); else mxb = fmaxf(mxb, v);
            }
        }
        mxa = fmaxf(mxa, __shfl_xor_sync(0xffffffffu, mxa, 1));
        mxa = fmaxf(mxa, __shfl_xor_sync(0xffffffffu, mxa, 2));
        mxb = fmaxf(mxb, __shfl_xor_sync(0xffffffffu, mxb, 1));
        mxb = fmaxf(mxb, __shfl_xor_sync(0xffffffffu, mxb, 2));
        float mna = fmaxf(ma, mxa), mnb = fmaxf(mb, mxb);
        float mua = mna == -INFINITY ? 0.0f : mna, mub = mnb == -INFINITY ? 0.0f : mnb;
        float ala = exp2f(ma - mua), alb = exp2f(mb - mub);
        ma = mna, mb = mnb;
        float suma = 0.0f, sumb = 0.0f;
#pragma unroll
        for (int n = 0; n < 8; n++) {
            s[n][0] = exp2f(s[n][0] - mua);
            s[n][1] = exp2f(s[n][1] - mua);
            s[n][2] = exp2f(s[n][2] - mub);
            s[n][3] = exp2f(s[n][3] - mub);
            suma += s[n][0] + s[n][1];
            sumb += s[n][2] + s[n][3];
        }
        la = la * ala + suma;
        lb = lb * alb + sumb;
#pragma unroll
        for (int n = 0; n < 16; n++) o[n][0] *= ala, o[n][1] *= ala, o[n][2] *= alb, o[n][3] *= alb;

        /* O += P V */
#pragma unroll
        for (int kk = 0; kk < 4; kk++) {
            unsigned pa[4];
            pa[0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
            pa[1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
            pa[2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
            for (int dp = 0; dp < 8; dp++) {
                int mi = lane >> 3, r = lane & 7;
                const bf16 *p = vt + (kk * 16 + r + (mi & 1) * 8) * FPAD + dp * 16 + (mi >> 1) * 8;
                unsigned b0, b1, b2, b3;
                ldsm_x4_t(b0, b1, b2, b3, p);
                mma_bf16(o[2 * dp], pa, b0, b1);
                mma_bf16(o[2 * dp + 1], pa, b2, b3);
            }
        }
        __syncthreads();
    }
#undef LOAD_TILE
    la += __shfl_xor_sync(0xffffffffu, la, 1);
    la += __shfl_xor_sync(0xffffffffu, la, 2);
    lb += __shfl_xor_sync(0xffffffffu, lb, 1);
    lb += __shfl_xor_sync(0xffffffffu, lb, 2);
    float ia = la > 0.0f ? 1.0f / la : 0.0f, ib = lb > 0.0f ? 1.0f / lb : 0.0f;
    if (ra < T) {
        bf16 *dst = a.out + ((size_t)(tok0 + ra) * a.H + h) * D;
#pragma unroll
        for (int n = 0; n < 16; n++)
            *(__nv_bfloat162 *)(dst + n * 8 + 2 * tq) = __floats2bfloat162_rn(o[n][0] * ia, o[n][1] * ia);
    }
    if (rb < T) {
        bf16 *dst = a.out + ((size_t)(tok0 + rb) * a.H + h) * D;
#pragma unroll
        for (int n = 0; n < 16; n++)
            *(__nv_bfloat162 *)(dst + n * 8 + 2 * tq) = __floats2bfloat162_rn(o[n][2] * ib, o[n][3] * ib);
    }
}

int nc_cuda_attn_prefill_init(nc_cuda *cu) {
    NC_CU_TRY(cudaFuncSetAttribute(attn_prefill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)FA_SMEM));
    return 0;
}

int nc_cuda_attn_prefill(nc_cuda *cu, int layer, int n_items) {
    size_t layer_elems = (size_t)cu->n_blocks * cu->Hkv * NC_KV_BLOCK_TOKENS * cu->D;
    fa_args a;
    a.q = cu->q;
    a.kc = cu->kc + layer * layer_elems;
    a.vc = cu->vc + layer * layer_elems;
    a.items = META(cu, items);
    a.s_tok0 = META(cu, s_tok0), a.s_ntok = META(cu, s_ntok), a.s_pos = META(cu, s_pos);
    a.s_bt = META(cu, s_bt), a.bt = META(cu, bt);
    a.out = cu->attn;
    a.H = cu->H, a.Hkv = cu->Hkv, a.G = cu->G;
    a.window = cu->layers[layer].window;
    a.scale_log2 = 1.4426950408889634f / sqrtf((float)cu->D);
    attn_prefill_kernel<<<dim3(n_items, cu->H), F_THREADS, FA_SMEM, cu->stream>>>(a);
    NC_CU_LAUNCHED("attn_prefill");
    return 0;
}

/*
 * cuda_attn_decode.cu: attention for one-token chunks (decode rows), split
 * over the KV length (flash-decoding).
 *
 * A d34 token has only 17 kv heads: one CTA per head would leave most of
 * 132 SMs idle while the cache streams. So each (row, kv head) is cut into
 * `splits` ranges of 64-key blocks, each CTA computes an unnormalised
 * partial softmax·V over its range (running max m, sum l, acc[D]) for all
 * G query heads of its kv head (GQA: the K/V tile is loaded once for the
 * group), and the last CTA of each (row, kv head) to finish merges the
 * partials (an arrival counter; no extra launch). Tiles of 64 keys x D
 * come through the paged cache's block table with cp.async, double
 * buffered. Keys outside [pos - window, pos] are masked (SPEC §1.2: key j
 * is visible to query i iff 0 <= i - j <= window).
 *
 * Split count is fixed per batch size (so a CUDA graph can replay it); the
 * ranges are derived on the device from each row's position.
 */
#include <math.h>

#include "cuda_internal.cuh"

#define META(cu, f) ((cu)->meta_d + (cu)->ml.f)
#define KPAD (NC_HEAD_DIM + 8) /* padded K row (bf16): conflict-free row reads */
#define DEC_THREADS 128

typedef struct {
    const bf16 *q;          /* [N, H, D] */
    const bf16 *kc, *vc;    /* this layer: [n_blocks][Hkv][64][D] */
    const int32_t *dec_seq, *s_tok0, *s_pos, *s_bt, *bt;
    float *part;            /* [nb][H][splits][D + 2] */
    int *count;             /* [nb][Hkv] CTAs done per (row, kv head); the last one merges */
    bf16 *out;              /* [N, H*D] */
    int H, Hkv, G, splits, window, nbuf;
    float qscale;           /* 1/sqrt(D) * log2(e) */
} dec_args;

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

/* nbuf: 2 double-buffers the tiles (a few CTAs, each walking many tiles:
 * batch 1 at long contexts); 1 halves shared memory so twice as many CTAs
 * fit on an SM (large decode batches, where there are CTAs to spare). */
static size_t dec_smem_bytes(int G, int nbuf) {
    return (size_t)G * NC_HEAD_DIM * 4                          /* q */
           + nbuf * (size_t)NC_KV_BLOCK_TOKENS * KPAD * 2       /* K tiles */
           + nbuf * (size_t)NC_KV_BLOCK_TOKENS * NC_HEAD_DIM * 2 /* V tiles */
           + (size_t)NC_MAX(G, 2) * NC_KV_BLOCK_TOKENS * 4    /* p (G = 1: two half-dots) */
           + 3 * (size_t)NC_ATTN_MAX_GROUP * 4;               /* m, l, alpha */
}

__global__ void __launch_bounds__(DEC_THREADS) attn_decode_kernel(dec_args a) {
    const int D = NC_HEAD_DIM, BT = NC_KV_BLOCK_TOKENS;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *ks = (bf16 *)smem;                      /* [nbuf][64][KPAD] */
    bf16 *vs = ks + a.nbuf * BT * KPAD;           /* [nbuf][64][D] */
    float *qs = (float *)(vs + a.nbuf * BT * D);  /* [G][D] */
    float *ps = qs + a.G * D;                     /* [G][64] */
    float *ms = ps + max(a.G, 2) * BT, *ls = ms + NC_ATTN_MAX_GROUP, *al = ls + NC_ATTN_MAX_GROUP;
    __shared__ bool last;

    nc_pdl_trigger();
    int split = blockIdx.x, hk = blockIdx.y, row = blockIdx.z;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int seq = a.dec_seq[row];
    int t = a.s_tok0[seq], pos = a.s_pos[seq];
    int lo = a.window == INT32_MAX ? 0 : max(0, pos - a.window);
    int b_lo = lo / BT, b_hi = pos / BT;
    int nblk = b_hi - b_lo + 1, per = (nblk + a.splits - 1) / a.splits;
    int sb = b_lo + split * per, se = min(sb + per, b_hi + 1);
    const int32_t *bt = a.bt + a.s_bt[seq];
    size_t tile = (size_t)BT * D;

    for (int i = tid; i < a.G * D; i += DEC_THREADS)
        qs[i] = __bfloat162float(a.q[((size_t)t * a.H + hk * a.G) * D + i]) * a.qscale;
    if (tid < NC_ATTN_MAX_GROUP) ms[tid] = -INFINITY, ls[tid] = 0.0f;
    __syncthreads();
    float acc[NC_ATTN_MAX_GROUP];
#pragma unroll
    for (int g = 0; g < NC_ATTN_MAX_GROUP; g++) acc[g] = 0.0f;

    /* Issue the loads of block b into buffer buf. */
#define LOAD_TILE(b, buf)                                                                   \
    do {                                                                                    \
        size_t off_ = (((size_t)bt[b]) * a.Hkv + hk) * tile;                                \
        const bf16 *kg_ = a.kc + off_, *vg_ = a.vc + off_;                                  \
        for (int c_ = tid; c_ < BT * D / 8; c_ += DEC_THREADS) {                            \
            int r_ = c_ / (D / 8), k_ = c_ % (D / 8);                                       \
            cp_async16(ks + (buf) * BT * KPAD + r_ * KPAD + k_ * 8, kg_ + (size_t)c_ * 8);  \
            cp_async16(vs + (buf) * BT * D + (size_t)c_ * 8, vg_ + (size_t)c_ * 8);         \
        }                                                                                   \
        cp_async_commit();                                                                  \
    } while (0)

    if (sb < se) LOAD_TILE(sb, 0);
    for (int b = sb; b < se; b++) {
        int buf = a.nbuf == 2 ? (b - sb) & 1 : 0;
        if (a.nbuf == 2 && b + 1 < se) {
            LOAD_TILE(b + 1, buf ^ 1);
            cp_async_wait<1>();
        } else {
            if (b > sb && a.nbuf == 1) LOAD_TILE(b, 0); /* the previous tile is consumed (barrier below) */
            cp_async_wait<0>();
        }
        __syncthreads();
        /* scores: thread -> key tid % 64. G = 1: the two thread halves take
         * half of D each (summed below); G > 1: heads g = tid / 64, +2, ... */
        {
            int key = tid & (BT - 1), grp = tid / BT;
            int kpos = b * BT + key;
            bool valid = kpos >= lo && kpos <= pos;
            const uint4 *kr = (const uint4 *)(ks + buf * BT * KPAD + key * KPAD);
            if (a.G == 1) {
                const float *qg = qs + grp * (D / 2);
                float sc = 0.0f;
#pragma unroll
                for (int c = 0; c < D / 16; c++) {
                    float kf[8];
                    nc_bf16x8_to_f32(kr[grp * (D / 16) + c], kf);
#pragma unroll
                    for (int i = 0; i < 8; i++) sc = fmaf(kf[i], qg[c * 8 + i], sc);
                }
                ps[grp * BT + key] = sc;
                __syncthreads();
                if (grp == 0) ps[key] = valid ? ps[key] + ps[BT + key] : -INFINITY;
            } else {
                for (int g = grp; g < a.G; g += DEC_THREADS / BT) {
                    const float *qg = qs + g * D;
                    float sc = 0.0f;
#pragma unroll
                    for (int c = 0; c < D / 8; c++) {
                        float kf[8];
                        nc_bf16x8_to_f32(kr[c], kf);
#pragma unroll
                        for (int i = 0; i < 8; i++) sc = fmaf(kf[i], qg[c * 8 + i], sc);
                    }
                    ps[g * BT + key] = valid ? sc : -INFINITY;
                }
            }
        }
        __syncthreads();
        /* online softmax, one warp per head */
        for (int g = warp; g < a.G; g += DEC_THREADS / 32) {
            float s0 = ps[g * BT + lane], s1 = ps[g * BT + lane + 32];
            float mt = nc_warp_max(fmaxf(s0, s1));
            float m_old = ms[g];
            float m_new = fmaxf(m_old, mt);
            float mu = m_new == -INFINITY ? 0.0f : m_new;
            float p0 = exp2f(s0 - mu), p1 = exp2f(s1 - mu);
            float sum = nc_warp_sum(p0 + p1);
            float alpha = exp2f(m_old - mu);
            ps[g * BT + lane] = p0;
            ps[g * BT + lane + 32] = p1;
            __syncwarp();
            if (lane == 0) {
                ms[g] = m_new;
                ls[g] = ls[g] * alpha + sum;
                al[g] = alpha;
            }
        }
        __syncthreads();
        /* acc[g] (dim tid) = acc * alpha + sum_j p[g][j] v[j][tid] */
        {
            const bf16 *vt = vs + buf * BT * D + tid;
#pragma unroll
            for (int g = 0; g < NC_ATTN_MAX_GROUP; g++)
                if (g < a.G) acc[g] *= al[g];
            for (int j = 0; j < BT; j++) {
                float v = __bfloat162float(vt[j * D]);
#pragma unroll
                for (int g = 0; g < NC_ATTN_MAX_GROUP; g++)
                    if (g < a.G) acc[g] = fmaf(ps[g * BT + j], v, acc[g]);
            }
        }
        __syncthreads();
    }
#undef LOAD_TILE
    for (int g = 0; g < a.G; g++) {
        float *p = a.part + (((size_t)row * a.H + hk * a.G + g) * a.splits + split) * (D + 2);
        float accg = 0.0f;
#pragma unroll
        for (int gg = 0; gg < NC_ATTN_MAX_GROUP; gg++)
            if (gg == g) accg = acc[gg];
        p[tid] = accg;
        if (tid == 0) p[D] = ms[g], p[D + 1] = ls[g];
    }
    /* The last CTA of this (row, kv head) to finish merges the splits
     * (saves a launch per layer); it resets the counter for the next use. */
    __threadfence();
    __syncthreads();
    if (tid == 0) {
        int done = atomicAdd(&a.count[row * a.Hkv + hk], 1);
        last = done == a.splits - 1;
        if (last) a.count[row * a.Hkv + hk] = 0;
    }
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int g = 0; g < a.G; g++) {
        const float *p = a.part + ((size_t)row * a.H + hk * a.G + g) * a.splits * (D + 2);
        float M = -INFINITY;
        for (int s = 0; s < a.splits; s++) M = fmaxf(M, __ldcg(p + s * (D + 2) + D));
        float num = 0.0f, den = 0.0f;
        for (int s = 0; s < a.splits; s++) {
            const float *q = p + s * (D + 2);
            float m = __ldcg(q + D);
            float w = m == -INFINITY ? 0.0f : exp2f(m - M);
            num = fmaf(w, __ldcg(q + tid), num);
            den = fmaf(w, __ldcg(q + D + 1), den);
        }
        a.out[((size_t)t * a.H + hk * a.G + g) * D + tid] = __float2bfloat16_rn(den > 0.0f ? num / den : 0.0f);
    }
}

int nc_cuda_attn_decode_init(nc_cuda *cu) {
    NC_CU_TRY(cudaFuncSetAttribute(attn_decode_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)dec_smem_bytes(NC_ATTN_MAX_GROUP, 2)));
    return 0;
}

int nc_cuda_attn_decode(nc_cuda *cu, int layer, int nb, int splits) {
    size_t layer_elems = (size_t)cu->n_blocks * cu->Hkv * NC_KV_BLOCK_TOKENS * cu->D;
    dec_args a;
    a.q = cu->q;
    a.kc = cu->kc + layer * layer_elems;
    a.vc = cu->vc + layer * layer_elems;
    a.dec_seq = META(cu, dec_seq), a.s_tok0 = META(cu, s_tok0), a.s_pos = META(cu, s_pos);
    a.s_bt = META(cu, s_bt), a.bt = META(cu, bt);
    a.part = cu->part;
    a.count = cu->attn_count;
    a.out = cu->attn;
    a.H = cu->H, a.Hkv = cu->Hkv, a.G = cu->G, a.splits = splits;
    a.window = cu->layers[layer].window;
    a.nbuf = cu->attn_nbuf ? cu->attn_nbuf : nb >= 8 ? 1 : 2;
    a.qscale = 1.4426950408889634f / sqrtf((float)cu->D);
    NC_ASSERT((int64_t)nb * splits * cu->H * (cu->D + 2) <= cu->part_floats);
    dim3 grid(splits, cu->Hkv, nb);
    attn_decode_kernel<<<grid, DEC_THREADS, dec_smem_bytes(cu->G, a.nbuf), cu->stream>>>(a);
    NC_CU_LAUNCHED("attn_decode");
    return 0;
}

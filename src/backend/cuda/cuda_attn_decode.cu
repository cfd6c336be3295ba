/*
 * cuda_attn_decode.cu: attention for one-token chunks (decode rows), split
 * over the KV length (flash-decoding), streamed straight from the paged
 * cache into registers.
 *
 * Decode attention reads every key and value of the row once and does
 * ~1 FMA per byte, so it must run at the memory bandwidth like the GEMVs.
 * The unit of work is a 16-key chunk of one (row, kv head): 4 KB of K and
 * 4 KB of V, contiguous inside a 64-token block of the paged cache
 * ([n_blocks][Hkv][64][D]). One warp takes a contiguous run of chunks and
 * keeps its own online softmax (running max m, sum l, acc[D]) for the G
 * query heads of its kv head (GQA: K/V read once for the group), so the
 * main loop has no shared memory and no barriers:
 *
 *   - per chunk every lane issues 8 + 8 coalesced 16-byte loads (K then V;
 *     a warp instruction covers 2 keys x 128 dims), i.e. 8 KB in flight per
 *     warp before any arithmetic;
 *   - lane l holds dims (l % 16) * 8 .. +8 of keys 2i + l / 16 (i < 8); its
 *     8 partial q·k sums are reduce-scattered over the 16 lanes of its half
 *     (8 shuffles) so each lane ends with the full score of one key;
 *   - softmax stats by warp reductions; the probability of each key is
 *     shuffled back to the lanes holding that key's V slice.
 *
 * The grid is (splits, Hkv, rows) CTAs of 4 warps. A CTA merges its warps'
 * partials in shared memory; with several splits the last CTA of a (row, kv
 * head) to finish merges the CTAs' partials (an arrival counter, no extra
 * launch). Batch 1 gets many splits (each warp one or two chunks, so the
 * whole context is in flight at once); large batches one split per row.
 * Keys outside [pos - window, pos] are masked (docs/model.md, Attention:
 * key j is visible to query i iff 0 <= i - j <= window). The split count
 * is fixed per batch size (a CUDA graph replays it); ranges are derived on
 * the device from each row's position.
 *
 * For batch-1 decode (the GEMV path) the kernel also does the work of the
 * rope_append kernel (one launch less per layer): each CTA computes its G
 * query heads from qkv into shared memory, and the CTA whose split holds
 * this step's position first appends the key and value (the same
 * nc_rope_head as the rope_append kernel, on the GEMV's fp32 qkv), then
 * reads that chunk through L2.
 *
 * fp8 cache (--kv-cache fp8): the same lanes, keys and dims with 8-byte
 * loads (8 e4m3 values) instead of 16-byte ones, so a chunk is 2 KB of K
 * and 2 KB of V: half the bytes of the bf16 cache for the same
 * instructions. Each lane also reads the fp32 scales of the key whose
 * score it ends with: the key scale multiplies that score (the key's
 * column of q·Kᵀ), the value scale that key's probability before it goes
 * to the lanes holding its V slice (the column of P), while the softmax
 * sum uses the probability itself.
 */
#include <math.h>

#include "cuda_internal.cuh"
#include "cuda_rope.cuh"

#define DEC_WARPS 4
#define DEC_THREADS (DEC_WARPS * 32)
#define DEC_CHUNK 16 /* keys per warp step */

typedef struct {
    const bf16 *q;          /* [N, H, D] */
    const bf16 *kc, *vc;    /* this layer: [n_blocks][Hkv][64][D] (bf16 cache) */
    const uint8_t *kc8, *vc8; /* fp8 cache: the same layout in e4m3 */
    const float *ksc, *vsc; /* and its scales [n_blocks][Hkv][64] */
    const int32_t *dec_seq, *s_tok0, *s_pos, *s_bt, *bt;
    float *part;            /* [nb][H][splits][D + 2] */
    int *count;             /* [nb][Hkv] CTAs done per (row, kv head); the last one merges */
    bf16 *out;              /* [N, H*D] */
    int H, Hkv, splits, window;
    float qscale;           /* 1/sqrt(D) * log2(e) */
    /* fused (batch-1 decode): q and this step's key and value come from the
     * GEMV's fp32 qkv through nc_rope_head here, not from a rope_append
     * kernel before */
    int fused;
    nc_rope_args rope;
} dec_args;

__device__ __forceinline__ uint4 ld_kv(const uint4 *p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

/* A load through L2 only: for the chunk this kernel itself just wrote
 * (fused append), which the non-coherent path must not serve. */
__device__ __forceinline__ uint4 ld_kv_fresh(const uint4 *p) { return __ldcg(p); }

__device__ __forceinline__ uint2 ld_kv(const uint2 *p) {
    uint2 r;
    asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0,%1}, [%2];" : "=r"(r.x), "=r"(r.y) : "l"(p));
    return r;
}
__device__ __forceinline__ uint2 ld_kv_fresh(const uint2 *p) { return __ldcg(p); }

/* One chunk's keys and values in a lane's registers: 8 x 8 dims of keys
 * 2i + lane / 16, as bf16 (16-byte loads) or e4m3 (8-byte loads, with the
 * scales of the key this lane scores, kl below). */
template <bool KV8>
struct dec_chunk {
    uint4 k[8], v[8];
};
template <>
struct dec_chunk<true> {
    uint2 k[8], v[8];
    float ks, vs;
};

__device__ __forceinline__ void kv_to_f32(uint4 u, float *f) { nc_bf16x8_to_f32(u, f); }
__device__ __forceinline__ void kv_to_f32(uint2 u, float *f) {
    nc_e4m3x4_to_f32(u.x, f);
    nc_e4m3x4_to_f32(u.y, f + 4);
}

/* v[0] (lane's 8 values v[0..7] summed over the 16 lanes of its half-warp,
 * value i of lane l going to key i) ends as the total of value i =
 * (l >> 1) & 7 (lanes l and l ^ 1 hold the same): a reduce-scatter in
 * 4 + 2 + 1 + 1 shuffles. */
__device__ __forceinline__ float reduce_scatter8(float *v, int lane) {
    bool b = lane & 8;
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float send = b ? v[j] : v[j + 4], keep = b ? v[j + 4] : v[j];
        v[j] = keep + __shfl_xor_sync(0xffffffffu, send, 8);
    }
    b = lane & 4;
#pragma unroll
    for (int j = 0; j < 2; j++) {
        float send = b ? v[j] : v[j + 2], keep = b ? v[j + 2] : v[j];
        v[j] = keep + __shfl_xor_sync(0xffffffffu, send, 4);
    }
    b = lane & 2;
    float send = b ? v[0] : v[1], keep = b ? v[1] : v[0];
    float s = keep + __shfl_xor_sync(0xffffffffu, send, 2);
    return s + __shfl_xor_sync(0xffffffffu, s, 1);
}

/* The 16 loads of a chunk, K first, from this lane's first K and V vector. */
template <typename T>
__device__ __forceinline__ void load16(const T *kp, const T *vp, T *k, T *v, bool fresh) {
    if (fresh) {
#pragma unroll
        for (int i = 0; i < 8; i++) k[i] = ld_kv_fresh(kp + 32 * i), v[i] = ld_kv_fresh(vp + 32 * i);
        return;
    }
#pragma unroll
    for (int i = 0; i < 8; i++) k[i] = ld_kv(kp + 32 * i);
#pragma unroll
    for (int i = 0; i < 8; i++) v[i] = ld_kv(vp + 32 * i);
}

/* Issues the 16 loads of chunk c (keys c*16 .. c*16+15 of kv head hk,
 * inside cache block blk) for this lane (and, fp8, the two scales of key
 * kl of the chunk). */
template <bool KV8>
__device__ __forceinline__ void load_chunk(const dec_args &a, int32_t blk, int hk, int c, int lane, int kl,
                                           dec_chunk<KV8> &r, bool fresh) {
    constexpr int D = NC_HEAD_DIM, BT = NC_KV_BLOCK_TOKENS, CPB = BT / DEC_CHUNK;
    size_t vec = ((size_t)blk * a.Hkv + hk) * BT + (size_t)(c % CPB) * DEC_CHUNK, off = vec * D;
    if constexpr (KV8) {
        r.ks = fresh ? __ldcg(a.ksc + vec + kl) : __ldg(a.ksc + vec + kl);
        r.vs = fresh ? __ldcg(a.vsc + vec + kl) : __ldg(a.vsc + vec + kl);
        load16((const uint2 *)(a.kc8 + off) + lane, (const uint2 *)(a.vc8 + off) + lane, r.k, r.v, fresh);
    } else {
        load16((const uint4 *)(a.kc + off) + lane, (const uint4 *)(a.vc + off) + lane, r.k, r.v, fresh);
    }
}

/* G: query heads per kv head (compile time: the per-head state lives in
 * registers). EARLY: issue the first chunk's loads before nc_pdl_wait().
 * KV8: the fp8 cache. */
template <int G, bool EARLY, bool KV8>
__global__ void __launch_bounds__(DEC_THREADS) attn_decode_kernel(dec_args a) {
    constexpr int D = NC_HEAD_DIM, BT = NC_KV_BLOCK_TOKENS, CPB = BT / DEC_CHUNK;
    static_assert(D == DEC_THREADS && D == 16 * 8, "one 16-lane row of 16-byte loads per key; a thread per dim");
    __shared__ float sm_m[DEC_WARPS][G], sm_l[DEC_WARPS][G];
    __shared__ __align__(16) float sm_acc[DEC_WARPS][G][D];
    __shared__ __align__(16) bf16 sm_q[G][D];
    __shared__ bool last;

    nc_pdl_trigger();
    int split = blockIdx.x, hk = blockIdx.y, row = blockIdx.z;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    int half = lane >> 4, dl = lane & 15;
    int seq = a.dec_seq[row];
    int t = a.s_tok0[seq], pos = a.s_pos[seq];
    int lo = a.window == INT32_MAX ? 0 : max(0, pos - a.window);
    int c_lo = lo / DEC_CHUNK, c_hi = pos / DEC_CHUNK;
    int workers = a.splits * DEC_WARPS, per = (c_hi - c_lo + workers) / workers;
    int cb = c_lo + (split * DEC_WARPS + warp) * per, ce = min(cb + per, c_hi + 1);
    const int32_t *bt = a.bt + a.s_bt[seq];

    /* Under PDL this CTA may start while the previous kernel still runs
     * (rope_append writing this step's key, value and q, or the qkv GEMV
     * when fused): the first chunk's loads are issued before waiting unless
     * it is chunk c_hi, which holds this step's key. */
    dec_chunk<KV8> ch;
    const int kl = 2 * ((lane >> 1) & 7) + half; /* the chunk's key whose score this lane ends with */
    int32_t blk = cb < ce ? __ldg(bt + cb / CPB) : 0;
    bool early = EARLY && cb < ce && cb != c_hi;
    if (early) load_chunk<KV8>(a, blk, hk, cb, lane, kl, ch, false);
    nc_pdl_wait();

    /* Fused: the CTA's G query heads into shared memory, and the split
     * that holds this step's key (chunk c_hi) appends the key and value of
     * kv head hk first; a warp per head. */
    bool fresh = false;
    if (a.fused) {
        int split_hi = (c_hi - c_lo) / per / DEC_WARPS;
        bool append = split == split_hi;
        for (int k = warp; k < G + (append ? 2 : 0); k += DEC_WARPS) {
            int hh = k < G ? hk * G + k : k == G ? a.H + hk : a.H + a.Hkv + hk;
            bf16 *qd = k < G ? sm_q[k] : NULL;
            nc_rope_head<float>(a.rope, t, hh, lane, qd);
        }
        __syncthreads();
        fresh = append;
    }

    float q[G][8], m[G], l[G], acc[G][8];
#pragma unroll
    for (int g = 0; g < G; g++) {
        uint4 u = a.fused ? ((const uint4 *)sm_q[g])[dl]
                          : __ldg((const uint4 *)(a.q + ((size_t)t * a.H + hk * G + g) * D) + dl);
        nc_bf16x8_to_f32(u, q[g]);
#pragma unroll
        for (int j = 0; j < 8; j++) q[g][j] *= a.qscale, acc[g][j] = 0.0f;
        m[g] = -INFINITY, l[g] = 0.0f;
    }
    for (int c = cb; c < ce; c++) {
        if (c != cb || !early) load_chunk<KV8>(a, blk, hk, c, lane, kl, ch, fresh && c == c_hi);
        if (c + 1 < ce) blk = __ldg(bt + (c + 1) / CPB); /* the next chunk's block, during this one's loads */
        int key = c * DEC_CHUNK + kl;
        bool valid = key >= lo && key <= pos;
        float p[G];
#pragma unroll
        for (int g = 0; g < G; g++) {
            float pr[8];
#pragma unroll
            for (int i = 0; i < 8; i++) {
                float kf[8];
                kv_to_f32(ch.k[i], kf);
                float s = 0.0f;
#pragma unroll
                for (int j = 0; j < 8; j++) s = fmaf(kf[j], q[g][j], s);
                pr[i] = s;
            }
            float sc = reduce_scatter8(pr, lane);
            if constexpr (KV8) sc *= ch.ks;
            sc = valid ? sc : -INFINITY;
            float mn = fmaxf(m[g], nc_warp_max(sc));
            float mu = mn == -INFINITY ? 0.0f : mn;
            float alpha = exp2f(m[g] - mu);
            p[g] = exp2f(sc - mu);
            l[g] = l[g] * alpha + nc_warp_sum(lane & 1 ? 0.0f : p[g]);
            m[g] = mn;
#pragma unroll
            for (int j = 0; j < 8; j++) acc[g][j] *= alpha;
        }
        if constexpr (KV8) { /* the value scale, in P's column (after the sum) */
#pragma unroll
            for (int g = 0; g < G; g++) p[g] *= ch.vs;
        }
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float vf[8];
            kv_to_f32(ch.v[i], vf);
#pragma unroll
            for (int g = 0; g < G; g++) {
                float pi = __shfl_sync(0xffffffffu, p[g], (lane & 16) | (i << 1));
#pragma unroll
                for (int j = 0; j < 8; j++) acc[g][j] = fmaf(pi, vf[j], acc[g][j]);
            }
        }
    }
    /* the two half-warps hold the same dims of different keys, same m */
#pragma unroll
    for (int g = 0; g < G; g++) {
#pragma unroll
        for (int j = 0; j < 8; j++) acc[g][j] += __shfl_xor_sync(0xffffffffu, acc[g][j], 16);
        if (lane < 16) {
            float4 *d = (float4 *)&sm_acc[warp][g][dl * 8];
            d[0] = make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
            d[1] = make_float4(acc[g][4], acc[g][5], acc[g][6], acc[g][7]);
        }
        if (lane == 0) sm_m[warp][g] = m[g], sm_l[warp][g] = l[g];
    }
    __syncthreads();
    /* merge the warps: thread tid owns dim tid */
    float num[G], den[G], mx[G];
#pragma unroll
    for (int g = 0; g < G; g++) {
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, sm_m[w][g]);
        float n = 0.0f, s = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) {
            float f = sm_m[w][g] == -INFINITY ? 0.0f : exp2f(sm_m[w][g] - M);
            n = fmaf(f, sm_acc[w][g][tid], n);
            s = fmaf(f, sm_l[w][g], s);
        }
        num[g] = n, den[g] = s, mx[g] = M;
    }
    if (a.splits == 1) {
#pragma unroll
        for (int g = 0; g < G; g++)
            a.out[((size_t)t * a.H + hk * G + g) * D + tid] = __float2bfloat16_rn(den[g] > 0.0f ? num[g] / den[g] : 0.0f);
        return;
    }
#pragma unroll
    for (int g = 0; g < G; g++) {
        float *p = a.part + (((size_t)row * a.H + hk * G + g) * a.splits + split) * (D + 2);
        p[tid] = num[g];
        if (tid == 0) p[D] = mx[g], p[D + 1] = den[g];
    }
    /* The last CTA of this (row, kv head) to finish merges the splits;
     * it resets the counter for the next use. */
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
#pragma unroll
    for (int g = 0; g < G; g++) {
        const float *p = a.part + ((size_t)row * a.H + hk * G + g) * a.splits * (D + 2);
        float M = -INFINITY;
        for (int s = 0; s < a.splits; s++) M = fmaxf(M, __ldcg(p + s * (D + 2) + D));
        float n = 0.0f, sum = 0.0f;
        for (int s = 0; s < a.splits; s++) {
            const float *ps = p + s * (D + 2);
            float ms = __ldcg(ps + D);
            float w = ms == -INFINITY ? 0.0f : exp2f(ms - M);
            n = fmaf(w, __ldcg(ps + tid), n);
            sum = fmaf(w, __ldcg(ps + D + 1), sum);
        }
        a.out[((size_t)t * a.H + hk * G + g) * D + tid] = __float2bfloat16_rn(sum > 0.0f ? n / sum : 0.0f);
    }
}

int nc_cuda_attn_decode(nc_cuda *cu, int layer, int nb, int splits, bool fused) {
    dec_args a = {};
    a.q = cu->q;
    nc_cuda_kv_layer kv = nc_cuda_kv_of(cu, layer);
    a.kc = kv.kc, a.vc = kv.vc, a.kc8 = kv.kc8, a.vc8 = kv.vc8, a.ksc = kv.ksc, a.vsc = kv.vsc;
    a.dec_seq = META(cu, dec_seq), a.s_tok0 = META(cu, s_tok0), a.s_pos = META(cu, s_pos);
    a.s_bt = META(cu, s_bt), a.bt = META(cu, bt);
    a.part = cu->part;
    a.count = cu->attn_count;
    a.out = cu->attn;
    a.H = cu->H, a.Hkv = cu->Hkv, a.splits = splits;
    a.window = cu->layers[layer].window;
    a.qscale = 1.4426950408889634f / sqrtf((float)cu->D);
    a.fused = fused;
    if (fused) nc_cuda_rope_args_fill(cu, layer, &a.rope); /* read only when fused */
    NC_ASSERT((int64_t)nb * splits * cu->H * (cu->D + 2) <= cu->part_floats);
    static void (*const with_early[2][NC_ATTN_MAX_GROUP + 1])(dec_args) = {
        {NULL, attn_decode_kernel<1, true, false>, attn_decode_kernel<2, true, false>,
         attn_decode_kernel<3, true, false>, attn_decode_kernel<4, true, false>, attn_decode_kernel<5, true, false>,
         attn_decode_kernel<6, true, false>, attn_decode_kernel<7, true, false>, attn_decode_kernel<8, true, false>},
        {NULL, attn_decode_kernel<1, true, true>, attn_decode_kernel<2, true, true>, attn_decode_kernel<3, true, true>,
         attn_decode_kernel<4, true, true>, attn_decode_kernel<5, true, true>, attn_decode_kernel<6, true, true>,
         attn_decode_kernel<7, true, true>, attn_decode_kernel<8, true, true>}};
    static void (*const without[2][NC_ATTN_MAX_GROUP + 1])(dec_args) = {
        {NULL, attn_decode_kernel<1, false, false>, attn_decode_kernel<2, false, false>,
         attn_decode_kernel<3, false, false>, attn_decode_kernel<4, false, false>,
         attn_decode_kernel<5, false, false>, attn_decode_kernel<6, false, false>,
         attn_decode_kernel<7, false, false>, attn_decode_kernel<8, false, false>},
        {NULL, attn_decode_kernel<1, false, true>, attn_decode_kernel<2, false, true>,
         attn_decode_kernel<3, false, true>, attn_decode_kernel<4, false, true>, attn_decode_kernel<5, false, true>,
         attn_decode_kernel<6, false, true>, attn_decode_kernel<7, false, true>, attn_decode_kernel<8, false, true>}};
    /* The first-chunk prefetch before the PDL wait keeps 16 uint4 live
     * across it (128 registers instead of 84 for G = 1): worth it when the
     * context is split over many small CTAs (batch 1..8 on d34), not when
     * each CTA streams a whole row, where 6 instead of 4 resident CTAs per
     * SM win (H100, d34 @640: batch 32 +5.5%, 64 +1.6%, 128 -1%). */
    void (*const *kernels)(dec_args) = (splits > 1 ? with_early : without)[cu->kv_fp8 ? 1 : 0];
    NC_ASSERT(cu->G >= 1 && cu->G <= NC_ATTN_MAX_GROUP); /* check_model refuses other group sizes */
    cudaError_t e = nc_launch(cu, kernels[cu->G], dim3(splits, cu->Hkv, nb), dim3(DEC_THREADS), 0, a);
    if (e != cudaSuccess) return nc_fail("cuda: launching attn_decode: %s", cudaGetErrorString(e));
    return 0;
}

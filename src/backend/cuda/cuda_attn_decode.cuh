/*
 * cuda_attn_decode.cuh: the pieces of split-KV decode attention (16-key
 * chunks streamed into registers, a warp's online softmax, the warp and
 * split merges; cuda_attn_decode.cu's top comment describes the method),
 * shared by the decode attention kernel and the deterministic one
 * (cuda_attn_decode.cu) and the persistent decode kernel's attention stage
 * (cuda_persist.cu). NW: warps per CTA (DEC_WARPS in the attention
 * kernels, more in the persistent kernel); the first D threads of a CTA own
 * a dim each in the merges, the others only read.
 */
#ifndef NC_BACKEND_CUDA_ATTN_DECODE_CUH
#define NC_BACKEND_CUDA_ATTN_DECODE_CUH

#include <math.h>

#include "cuda_internal.cuh"
#include "cuda_rope.cuh"

#define DEC_WARPS 4  /* warps per CTA of the attention kernels */
#define DEC_CHUNK 16 /* keys per warp step */

/* A barrier of the NW warps that run the attention: the whole CTA of the
 * attention kernels, the consumer warps of the persistent kernel (whose
 * producer warp never joins; it uses the same named barrier). */
template <int NW>
__device__ __forceinline__ void dec_sync() {
    asm volatile("bar.sync 1, %0;" ::"n"(NW * 32) : "memory");
}

typedef struct {
    const bf16 *q;          /* [N, H, D] */
    const bf16 *kc, *vc;    /* this layer: [n_blocks][Hkv][64][D] (bf16 cache) */
    const uint8_t *kc8, *vc8; /* fp8 cache: the same layout in e4m3 */
    const float *ksc, *vsc; /* and its scales [n_blocks][Hkv][64] */
    const int32_t *dec_seq, *s_tok0, *s_pos, *s_bt, *bt;
    const int32_t *dec_grp; /* grouped kernels (R > 1): [n_dec][2] the first decode row and the row count
                               of group z (count 0: none), rows of one verified chunk */
    const int32_t *s_new;   /* [S] first position of the sequence this forward writes */
    const int32_t *tpos, *tseq; /* attn_det: each token's position and chunk */
    int row0;               /* attn_det: the token of blockIdx.z = 0 */
    float *part;            /* [nb][H][splits][D + 2] (attn_det: splits = cu->det_splits) */
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

/* A CTA's shared memory: the NW warps' partial states for the merge, the
 * fused path's query heads, and whether this CTA merges the splits. */
template <int G, int NW = DEC_WARPS>
struct dec_shared {
    __align__(16) float acc[NW][G][NC_HEAD_DIM];
    __align__(16) bf16 q[G][NC_HEAD_DIM];
    float m[NW][G], l[NW][G];
    bool last;
};

/* The dim this thread owns in the merges (threads past the first D read
 * the same values as thread tid % D and store nothing). */
template <int NW>
__device__ __forceinline__ int dec_dim(int tid) {
    return NW * 32 == NC_HEAD_DIM ? tid : tid % NC_HEAD_DIM;
}
template <int NW>
__device__ __forceinline__ bool dec_dim_owner(int tid) {
    return NW * 32 == NC_HEAD_DIM || tid < NC_HEAD_DIM;
}

/* One chunk's keys (key = the one whose score this lane ends with) into a
 * warp's online softmax, for R rows of one sequence (the rows of a
 * verified chunk; 1 otherwise) and the G query heads of its kv head each:
 * the state of head g of row r is index r * G + g. Each row's scores are
 * masked outside its [lo[r], pos[r]]; running max m, sum l, and
 * acc += p · V. The chunk's keys and values are loaded once for all the
 * rows: the point of grouping them. */
template <int G, bool KV8, int R>
__device__ __forceinline__ void attend_rows(const dec_chunk<KV8> &ch, int key, const int (&lo)[R], const int (&pos)[R],
                                            int lane, const float (&q)[R * G][8], float (&m)[R * G],
                                            float (&l)[R * G], float (&acc)[R * G][8]) {
    constexpr int NH = R * G;
    float p[NH];
#pragma unroll
    for (int h = 0; h < NH; h++) {
        float pr[8];
#pragma unroll
        for (int i = 0; i < 8; i++) {
            float kf[8];
            kv_to_f32(ch.k[i], kf);
            float s = 0.0f;
#pragma unroll
            for (int j = 0; j < 8; j++) s = fmaf(kf[j], q[h][j], s);
            pr[i] = s;
        }
        float sc = reduce_scatter8(pr, lane);
        if constexpr (KV8) sc *= ch.ks;
        sc = key >= lo[h / G] && key <= pos[h / G] ? sc : -INFINITY;
        float mn = fmaxf(m[h], nc_warp_max(sc));
        float mu = mn == -INFINITY ? 0.0f : mn;
        float alpha = exp2f(m[h] - mu);
        p[h] = exp2f(sc - mu);
        l[h] = l[h] * alpha + nc_warp_sum(lane & 1 ? 0.0f : p[h]);
        m[h] = mn;
#pragma unroll
        for (int j = 0; j < 8; j++) acc[h][j] *= alpha;
    }
    if constexpr (KV8) { /* the value scale, in P's column (after the sum) */
#pragma unroll
        for (int h = 0; h < NH; h++) p[h] *= ch.vs;
    }
#pragma unroll
    for (int i = 0; i < 8; i++) {
        float vf[8];
        kv_to_f32(ch.v[i], vf);
#pragma unroll
        for (int h = 0; h < NH; h++) {
            float pi = __shfl_sync(0xffffffffu, p[h], (lane & 16) | (i << 1));
#pragma unroll
            for (int j = 0; j < 8; j++) acc[h][j] = fmaf(pi, vf[j], acc[h][j]);
        }
    }
}

/* attend_rows for one row whose keys are [lo, pos]. */
template <int G, bool KV8>
__device__ __forceinline__ void attend_chunk(const dec_chunk<KV8> &ch, int key, int lo, int pos, int lane,
                                             const float (&q)[G][8], float (&m)[G], float (&l)[G],
                                             float (&acc)[G][8]) {
    const int los[1] = {lo}, poss[1] = {pos};
    attend_rows<G, KV8, 1>(ch, key, los, poss, lane, q, m, l, acc);
}

/* Merges the CTA's warps (in warp order): thread tid ends with dim
 * dec_dim(tid) of each head's numerator, and every thread with its
 * denominator and max. Ends with a barrier after the reads, so sh may be
 * reused. */
template <int G, int NW>
__device__ __forceinline__ void merge_warps(dec_shared<G, NW> &sh, const float (&m)[G], const float (&l)[G],
                                            float (&acc)[G][8], float (&num)[G], float (&den)[G], float (&mx)[G]) {
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, dl = lane & 15, dim = dec_dim<NW>(tid);
    /* the two half-warps hold the same dims of different keys, same m */
#pragma unroll
    for (int g = 0; g < G; g++) {
#pragma unroll
        for (int j = 0; j < 8; j++) acc[g][j] += __shfl_xor_sync(0xffffffffu, acc[g][j], 16);
        if (lane < 16) {
            float4 *d = (float4 *)&sh.acc[warp][g][dl * 8];
            d[0] = make_float4(acc[g][0], acc[g][1], acc[g][2], acc[g][3]);
            d[1] = make_float4(acc[g][4], acc[g][5], acc[g][6], acc[g][7]);
        }
        if (lane == 0) sh.m[warp][g] = m[g], sh.l[warp][g] = l[g];
    }
    dec_sync<NW>();
#pragma unroll
    for (int g = 0; g < G; g++) {
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < NW; w++) M = fmaxf(M, sh.m[w][g]);
        float n = 0.0f, s = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; w++) {
            float f = sh.m[w][g] == -INFINITY ? 0.0f : exp2f(sh.m[w][g] - M);
            n = fmaf(f, sh.acc[w][g][dim], n);
            s = fmaf(f, sh.l[w][g], s);
        }
        num[g] = n, den[g] = s, mx[g] = M;
    }
    dec_sync<NW>();
}

/* A split's partial state of one head at p: its numerator dims, max and
 * denominator ([D + 2] floats), from merge_warps' outputs. */
template <int NW>
__device__ __forceinline__ void store_partial(float *p, float num, float mx, float den, int tid) {
    if (dec_dim_owner<NW>(tid)) p[tid] = num;
    if (tid == 0) p[NC_HEAD_DIM] = mx, p[NC_HEAD_DIM + 1] = den;
}

/* Dim `dim` of the output of n split partials at p, p + (D + 2), ...,
 * merged in split order. */
__device__ __forceinline__ float merge_splits(const float *p, int n, int dim) {
    constexpr int D = NC_HEAD_DIM;
    float M = -INFINITY;
    for (int s = 0; s < n; s++) M = fmaxf(M, __ldcg(p + s * (D + 2) + D));
    float num = 0.0f, sum = 0.0f;
    for (int s = 0; s < n; s++) {
        const float *ps = p + s * (D + 2);
        float ms = __ldcg(ps + D);
        float w = ms == -INFINITY ? 0.0f : exp2f(ms - M);
        num = fmaf(w, __ldcg(ps + dim), num);
        sum = fmaf(w, __ldcg(ps + D + 1), sum);
    }
    return sum > 0.0f ? num / sum : 0.0f;
}

/* Counts `done` finished splits of one (row, kv head) out of `total`
 * (an integer counter); true in the CTA that finished the last of them,
 * once the others' partials are visible to it; that CTA also resets the
 * counter for the next use. */
template <int G, int NW>
__device__ __forceinline__ bool arrive_last(dec_shared<G, NW> &sh, int *count, int done, int total) {
    __threadfence();
    dec_sync<NW>();
    if (threadIdx.x == 0) {
        int before = atomicAdd(count, done);
        sh.last = before + done == total;
        if (sh.last) *count = 0;
    }
    dec_sync<NW>();
    if (!sh.last) return false;
    __threadfence();
    return true;
}

/* Split `split` of (decode row z, kv head hk) by a CTA of NW warps (every
 * thread of the CTA calls it): the decode attention kernel's body.
 * G: query heads per kv head (compile time: the per-head state lives in
 * registers). EARLY: issue the first chunk's loads before nc_pdl_wait().
 * KV8: the fp8 cache. PF: each warp issues the next chunk's loads before
 * it attends the current one (two chunks in registers: a warp that streams
 * a long run of chunks never waits a whole memory round trip between
 * them, at the cost of fewer resident CTAs). R > 1: the CTA takes the rows
 * of group z instead (a.dec_grp: up to R consecutive rows of one verified
 * chunk), over the union of their keys, each chunk loaded once for all of
 * them (attend_rows); the last CTA of the group merges every row's splits. */
template <int G, bool EARLY, bool KV8, int NW, bool PF = false, int R = 1>
__device__ __forceinline__ void nc_attn_decode_cta(const dec_args &a, int split, int hk, int z,
                                                   dec_shared<R * G, NW> &sh) {
    constexpr int D = NC_HEAD_DIM, BT = NC_KV_BLOCK_TOKENS, CPB = BT / DEC_CHUNK, NH = R * G;
    static_assert(NW * 32 >= D && D == 16 * 8, "one 16-lane row of 16-byte loads per key; a thread per dim");
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, dim = dec_dim<NW>(tid);
    int half = lane >> 4, dl = lane & 15;
    int row0 = z, nr = 1;
    if constexpr (R > 1) {
        row0 = a.dec_grp[2 * z], nr = a.dec_grp[2 * z + 1];
        if (nr == 0) return; /* the batch has fewer groups than rows */
    }
    /* each row's token, position and keys [lo, pos]; a slot past the
     * group's rows sees no key (pos -1) and stores nothing */
    int seq = a.dec_seq[row0], t[R], pos[R], lo[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        int sr = r < nr ? a.dec_seq[row0 + r] : seq;
        t[r] = a.s_tok0[sr];
        pos[r] = r < nr ? a.s_pos[sr] : -1;
        lo[r] = a.window == INT32_MAX ? 0 : max(0, pos[r] - a.window);
    }
    int lo_all = lo[0], pos_all = pos[0];
#pragma unroll
    for (int r = 1; r < R; r++)
        if (r < nr) lo_all = min(lo_all, lo[r]), pos_all = max(pos_all, pos[r]);
    int c_lo = lo_all / DEC_CHUNK, c_hi = pos_all / DEC_CHUNK;
    int workers = a.splits * NW, per = (c_hi - c_lo + workers) / workers;
    int cb = c_lo + (split * NW + warp) * per, ce = min(cb + per, c_hi + 1);
    /* the block table of the group's last row: each row's copy ends at its
     * own position's block, and the last row's reaches the furthest */
    const int32_t *bt = a.bt + a.s_bt[R > 1 ? a.dec_seq[row0 + nr - 1] : seq];

    /* Under PDL this CTA may start while the previous kernel still runs
     * (rope_append writing this step's keys, values and q, or the qkv GEMV
     * when fused): the first chunk's loads are issued before waiting unless
     * it holds a key written in this step: chunk c_hi (this row's own), or
     * for a verified chunk run as decode rows, any from the chunk's first
     * position (s_new) on. */
    dec_chunk<KV8> ch;
    const int kl = 2 * ((lane >> 1) & 7) + half; /* the chunk's key whose score this lane ends with */
    int32_t blk = cb < ce ? __ldg(bt + cb / CPB) : 0;
    bool early = EARLY && cb < ce && cb < a.s_new[seq] / DEC_CHUNK;
    if (early) load_chunk<KV8>(a, blk, hk, cb, lane, kl, ch, false);
    nc_pdl_wait();

    /* Fused (one row): the CTA's G query heads into shared memory, and the
     * split that holds this step's key (chunk c_hi) appends the key and
     * value of kv head hk first; a warp per head. */
    bool fresh = false;
    if constexpr (R == 1) {
        if (a.fused) {
            int split_hi = (c_hi - c_lo) / per / NW;
            bool append = split == split_hi;
            for (int k = warp; k < G + (append ? 2 : 0); k += NW) {
                int hh = k < G ? hk * G + k : k == G ? a.H + hk : a.H + a.Hkv + hk;
                bf16 *qd = k < G ? sh.q[k] : NULL;
                nc_rope_head<float>(a.rope, t[0], hh, lane, qd);
            }
            dec_sync<NW>();
            fresh = append;
        }
    }

    float q[NH][8], m[NH], l[NH], acc[NH][8];
#pragma unroll
    for (int h = 0; h < NH; h++) {
        int r = h / G, g = h % G;
        uint4 u = R == 1 && a.fused ? ((const uint4 *)sh.q[g])[dl]
                                    : __ldg((const uint4 *)(a.q + ((size_t)t[r] * a.H + hk * G + g) * D) + dl);
        nc_bf16x8_to_f32(u, q[h]);
#pragma unroll
        for (int j = 0; j < 8; j++) q[h][j] *= a.qscale, acc[h][j] = 0.0f;
        m[h] = -INFINITY, l[h] = 0.0f;
    }
    if constexpr (PF) {
        dec_chunk<KV8> next;
        if (cb < ce && !early) load_chunk<KV8>(a, blk, hk, cb, lane, kl, ch, fresh && cb == c_hi);
        if (cb + 1 < ce) blk = __ldg(bt + (cb + 1) / CPB);
        for (int c = cb; c < ce; c++) {
            if (c + 1 < ce) {
                load_chunk<KV8>(a, blk, hk, c + 1, lane, kl, next, fresh && c + 1 == c_hi);
                if (c + 2 < ce) blk = __ldg(bt + (c + 2) / CPB);
            }
            attend_rows<G, KV8, R>(ch, c * DEC_CHUNK + kl, lo, pos, lane, q, m, l, acc);
            if (c + 1 < ce) ch = next;
        }
    } else {
        for (int c = cb; c < ce; c++) {
            if (c != cb || !early) load_chunk<KV8>(a, blk, hk, c, lane, kl, ch, fresh && c == c_hi);
            if (c + 1 < ce) blk = __ldg(bt + (c + 1) / CPB); /* the next chunk's block, during this one's loads */
            attend_rows<G, KV8, R>(ch, c * DEC_CHUNK + kl, lo, pos, lane, q, m, l, acc);
        }
    }
    float num[NH], den[NH], mx[NH];
    merge_warps<NH, NW>(sh, m, l, acc, num, den, mx);
    if (a.splits == 1) {
#pragma unroll
        for (int h = 0; h < NH; h++)
            if (h / G < nr && dec_dim_owner<NW>(tid))
                a.out[((size_t)t[h / G] * a.H + hk * G + h % G) * D + tid] =
                    __float2bfloat16_rn(den[h] > 0.0f ? num[h] / den[h] : 0.0f);
        return;
    }
    /* head h's partials: [row][H][splits][D + 2] */
#define DEC_PART(h) (a.part + (((size_t)(row0 + (h) / G) * a.H + hk * G + (h) % G) * a.splits) * (D + 2))
#pragma unroll
    for (int h = 0; h < NH; h++)
        if (h / G < nr) store_partial<NW>(DEC_PART(h) + (size_t)split * (D + 2), num[h], mx[h], den[h], tid);
    /* The last CTA of this (row or group, kv head) to finish merges the splits. */
    if (!arrive_last<NH, NW>(sh, &a.count[row0 * a.Hkv + hk], 1, a.splits)) return;
#pragma unroll
    for (int h = 0; h < NH; h++) {
        if (h / G >= nr) continue;
        float o = merge_splits(DEC_PART(h), a.splits, dim);
        if (dec_dim_owner<NW>(tid)) a.out[((size_t)t[h / G] * a.H + hk * G + h % G) * D + tid] = __float2bfloat16_rn(o);
    }
#undef DEC_PART
}

/* The kernels' arguments for `layer` of the current batch (its metadata
 * offsets), `splits` as the partials' stride; fused: RoPE + append from the
 * fp32 qkv inside (batch-1 decode). */
void nc_cuda_dec_args_fill(const nc_cuda *cu, int layer, int splits, bool fused, dec_args *a);

#endif /* NC_BACKEND_CUDA_ATTN_DECODE_CUH */

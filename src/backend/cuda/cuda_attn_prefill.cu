/*
 * cuda_attn_prefill.cu: causal flash attention for prompt chunks on the
 * tensor cores (bf16 in, fp32 accumulate), reading keys
 * and values from the paged KV cache (the chunk's own K/V were appended
 * first, earlier chunks' are already there), so chunked prefill and prefix
 * reuse need nothing special. This is FlashAttention-2's schedule; nanochat
 * calls F.scaled_dot_product_attention (flash) for the same math.
 *
 * Two kernels for the same work items: on sm_90 (H100) the wgmma one
 * (v3, after the mma.sync one below: ~1.4x faster, 62 vs 89 us for a d34
 * layer of 2048 tokens), elsewhere the mma.sync one (v2, sm_80+):
 *
 * Work item: 128 query rows of one head (NC_ATTN_PREFILL_ROWS). A CTA of
 * 256 threads is two warpgroups of 4 warps; each warp owns 32 rows (two
 * m16 row blocks, so every K/V fragment read from shared memory feeds two
 * MMAs), and the two warpgroups split the item's 64-key cache blocks
 * between them (even / odd), each with its own double-buffered cp.async
 * pipeline and named barrier; their partial (O, max, sum) are merged in
 * shared memory at the end. One CTA per SM (255 registers), so the 128-row
 * item's critical path is half its key blocks, and items are launched
 * longest first (all heads of an item together), which keeps the SMs
 * evenly loaded on a causal prompt.
 *
 * Per 64-key block and warp: S = Q·Kᵀ (Q fragments from shared memory),
 * the causal / window mask only on blocks that cross the warp's diagonal
 * or window edge (blocks wholly masked for the warp are skipped), the
 * online softmax in the exp2 domain (scale folded into one FMA, ex2.approx),
 * O rescaled only when a row maximum moved, P rounded to bf16 and
 * O += P·V with V fragments from ldmatrix.trans. Shared-memory rows are
 * padded to D + 8 bf16 so ldmatrix's 8 rows fall in distinct banks.
 *
 * The fp8 KV cache (--kv-cache fp8) runs the mma.sync kernel on every
 * architecture: each warpgroup copies a block's e4m3 bytes and scales raw
 * (cp.async, double-buffered, 16.5 KB instead of 32 KB) and widens them
 * exactly to bf16 into one K and one V tile; the key scales multiply S's
 * columns, the value scales P's columns after the row sums.
 */
#include <math.h>
#include <string.h>

#include "cuda_hopper.cuh"
#include "cuda_q8.cuh"

#define FPAD (NC_HEAD_DIM + 8)
#define FA_ROWS NC_ATTN_PREFILL_ROWS
#define FA_THREADS 256
#define FA_TILE_ELEMS (NC_KV_BLOCK_TOKENS * FPAD) /* one padded 64-key K or V block */

typedef struct {
    const bf16 *q;          /* [N, H, D] */
    const bf16 *kc, *vc;    /* this layer: [n_blocks][Hkv][64][D] (bf16 cache) */
    const uint8_t *kc8, *vc8; /* fp8 cache: the same layout in e4m3 */
    const float *ksc, *vsc; /* and its scales [n_blocks][Hkv][64] */
    const int32_t *items;   /* [n_items][2] (chunk, first query row) */
    const int32_t *s_tok0, *s_ntok, *s_pos, *s_bt, *bt;
    bf16 *out;              /* [N, H*D] */
    int H, Hkv, G, window;
    float scale_log2;       /* 1/sqrt(D) * log2(e) */
} fa_args;

/* cp.async of 16 bytes to a shared-space byte address. */
__device__ __forceinline__ void cp_async16(unsigned s, const void *gmem) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem));
}
/* 16 bytes, or zeros when src_bytes is 0. */
__device__ __forceinline__ void cp_async16_zfill(void *smem, const void *gmem, int src_bytes) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N)); }

/* Barrier over one warpgroup (128 threads); ids 1 and 2 (0 is __syncthreads). */
__device__ __forceinline__ void wg_barrier(int wg) {
    if (wg)
        asm volatile("bar.sync 2, 128;" ::: "memory");
    else
        asm volatile("bar.sync 1, 128;" ::: "memory");
}

__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/* ldmatrix at a shared-space byte address (32-bit addresses keep registers free). */
__device__ __forceinline__ void ldsm_x4(unsigned *r, unsigned s) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

__device__ __forceinline__ void ldsm_x4_t(unsigned *r, unsigned s) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s));
}

__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(unsigned *)&v;
}

/* Q [128][FPAD], then per warpgroup K [2][64][FPAD] and V [2][64][FPAD]. */
static const size_t FA_SMEM = ((size_t)FA_ROWS * FPAD + 2 * 4 * (size_t)FA_TILE_ELEMS) * 2;

/* One warpgroup's copy of a cache block (K and V, 16 KB each) into padded
 * shared memory: 1024 16-byte chunks each, 8 per thread. ks_t: this
 * thread's first K chunk (shared-space bytes); the V buffer follows the K
 * buffers at 2 * FA_TILE_ELEMS. kg, vg: this thread's first chunk. */
__device__ __forceinline__ void load_kv_block(unsigned ks_t, const bf16 *kg, const bf16 *vg) {
#pragma unroll
    for (int i = 0; i < 8; i++) {
        cp_async16(ks_t + i * 8 * FPAD * 2, kg + i * 8 * NC_HEAD_DIM);
        cp_async16(ks_t + (2 * FA_TILE_ELEMS + i * 8 * FPAD) * 2, vg + i * 8 * NC_HEAD_DIM);
    }
    cp_async_commit();
}

/* fp8 cache: a warpgroup's raw copy of one block (after its K and V
 * tiles): K bytes [64][D], V bytes, 64 key scales, 64 value scales. */
#define FA8_K 0
#define FA8_V (NC_KV_BLOCK_TOKENS * NC_HEAD_DIM)
#define FA8_KS (2 * FA8_V)
#define FA8_VS (FA8_KS + NC_KV_BLOCK_TOKENS * 4)
#define FA8_STAGE (FA8_VS + NC_KV_BLOCK_TOKENS * 4)
static_assert(2 * FA_TILE_ELEMS * 2 + 2 * FA8_STAGE <= 4 * FA_TILE_ELEMS * 2, "fp8 staging fits a warpgroup's share");

/* One warpgroup's raw copy of an fp8 cache block into staging st: 512 + 512
 * 16-byte chunks of K and V bytes (4 + 4 per thread) and the 2 x 256 bytes
 * of scales (threads 0..31). kg, vg: the block's bytes; ksg, vsg: its scales. */
__device__ __forceinline__ void load_kv8_block(unsigned st, const uint8_t *kg, const uint8_t *vg, const float *ksg,
                                               const float *vsg, int wtid) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        int c = wtid + 128 * i;
        cp_async16(st + FA8_K + 16 * c, kg + 16 * c);
        cp_async16(st + FA8_V + 16 * c, vg + 16 * c);
    }
    if (wtid < 16) cp_async16(st + FA8_KS + 16 * wtid, ksg + 4 * wtid);
    else if (wtid < 32) cp_async16(st + FA8_VS + 16 * (wtid - 16), vsg + 4 * (wtid - 16));
    cp_async_commit();
}

/* Widens a staged fp8 block into the padded bf16 K and V tiles (exact);
 * thread wtid: half wtid & 1 of row wtid / 2 of each. */
__device__ __forceinline__ void widen_kv8_block(unsigned st, unsigned kt, unsigned vt, int wtid) {
    int r = wtid >> 1, hh = wtid & 1;
#pragma unroll
    for (int kv = 0; kv < 2; kv++) {
        unsigned src = st + (kv ? FA8_V : FA8_K) + r * NC_HEAD_DIM + hh * 64;
        unsigned dst = (kv ? vt : kt) + (r * FPAD + hh * 64) * 2;
#pragma unroll
        for (int u = 0; u < 4; u++) {
            uint4 w, o0, o1;
            asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(w.x), "=r"(w.y), "=r"(w.z), "=r"(w.w) : "r"(src + 16 * u));
            o0.x = nc_q8x2_to_bf16x2<NC_WEIGHT_FP8>(w.x), o0.y = nc_q8x2_to_bf16x2<NC_WEIGHT_FP8>(w.x >> 16);
            o0.z = nc_q8x2_to_bf16x2<NC_WEIGHT_FP8>(w.y), o0.w = nc_q8x2_to_bf16x2<NC_WEIGHT_FP8>(w.y >> 16);
            o1.x = nc_q8x2_to_bf16x2<NC_WEIGHT_FP8>(w.z), o1.y = nc_q8x2_to_bf16x2<NC_WEIGHT_FP8>(w.z >> 16);
            o1.z = nc_q8x2_to_bf16x2<NC_WEIGHT_FP8>(w.w), o1.w = nc_q8x2_to_bf16x2<NC_WEIGHT_FP8>(w.w >> 16);
            asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(dst + 32 * u), "r"(o0.x), "r"(o0.y), "r"(o0.z), "r"(o0.w));
            asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(dst + 32 * u + 16), "r"(o1.x), "r"(o1.y), "r"(o1.z), "r"(o1.w));
        }
    }
}

/* fp8 cache: a 32-key half's S or P (two m16 row blocks x 4 n8 tiles, this
 * thread's columns 8n + 2tq, +1) times the scales of those keys. */
__device__ __forceinline__ void scale_columns(float (*s)[4][4], const float *sc, int tq) {
#pragma unroll
    for (int n = 0; n < 4; n++) {
        float2 c = *(const float2 *)(sc + n * 8 + 2 * tq);
#pragma unroll
        for (int rb = 0; rb < 2; rb++) {
            s[rb][n][0] *= c.x, s[rb][n][1] *= c.y;
            s[rb][n][2] *= c.x, s[rb][n][3] *= c.y;
        }
    }
}

/* KV8: the fp8 cache (one K and one V tile per warpgroup, then two staging
 * slots); else bf16 (two of each, double-buffered by cp.async). */
template <bool KV8>
__global__ void __launch_bounds__(FA_THREADS, 1) attn_prefill_kernel(fa_args a) {
    const int D = NC_HEAD_DIM, BT = NC_KV_BLOCK_TOKENS, NBUF = KV8 ? 1 : 2;
    extern __shared__ __align__(16) unsigned char smem[];
    nc_pdl_trigger();
    int tid = threadIdx.x, lane = tid & 31, warp = (tid >> 5) & 3, wg = tid >> 7, wtid = tid & 127;
    int g = lane >> 2, tq = lane & 3;
    bf16 *qs = (bf16 *)smem;                                /* [128][FPAD] */
    bf16 *ks = qs + FA_ROWS * FPAD + wg * 4 * FA_TILE_ELEMS; /* [NBUF][64][FPAD] of this warpgroup */
    bf16 *vs = ks + NBUF * FA_TILE_ELEMS;                   /* [NBUF][64][FPAD] */
    const unsigned st8 = (unsigned)__cvta_generic_to_shared(ks) + 2 * FA_TILE_ELEMS * 2; /* KV8: [2] staging */

    int item = blockIdx.x / a.H, h = blockIdx.x - item * a.H, hk = h / a.G;
    int seq = a.items[2 * item], q0 = a.items[2 * item + 1];
    int T = a.s_ntok[seq], tok0 = a.s_tok0[seq], pos0 = a.s_pos[seq];
    int kmax = pos0 + min(q0 + FA_ROWS, T) - 1;
    int kmin = a.window == INT32_MAX ? 0 : max(0, pos0 + q0 - a.window);
    int b_lo = kmin / BT, b_hi = kmax / BT;
    int nt = b_hi - b_lo >= wg ? (b_hi - b_lo - wg) / 2 + 1 : 0; /* blocks b_lo + wg, +2, ... */
    const int32_t *btab = a.bt + a.s_bt[seq];
    const size_t tile = (size_t)BT * D, kv_head = (size_t)a.Hkv * tile;
    /* this thread's 16-byte chunk of every K/V block copy: row wtid/16 (+8i), column (wtid%16)*8 */
    const size_t lane_off = hk * tile + (size_t)(wtid >> 4) * D + (wtid & 15) * 8;
    const bf16 *kbase = a.kc + lane_off, *vbase = a.vc + lane_off;
    const unsigned ks_t = (unsigned)__cvta_generic_to_shared(ks) + ((wtid >> 4) * FPAD + (wtid & 15) * 8) * 2;
    /* fp8: block b of head hk starts at byte / vector (b Hkv + hk) 64 (D) */
    auto load_block = [&](int b, int slot) {
        size_t vec = ((size_t)btab[b] * a.Hkv + hk) * BT;
        if constexpr (KV8)
            load_kv8_block(st8 + slot * FA8_STAGE, a.kc8 + vec * D, a.vc8 + vec * D, a.ksc + vec, a.vsc + vec, wtid);
        else
            load_kv_block(ks_t + slot * FA_TILE_ELEMS * 2, kbase + (size_t)btab[b] * kv_head,
                          vbase + (size_t)btab[b] * kv_head);
    };

    if (nt > 0) load_block(b_lo + wg, 0);
    {   /* Q rows q0 .. q0+127 of head h (zeros past the chunk) */
        int r = tid >> 4, c = (tid & 15) * 8;
#pragma unroll
        for (int i = 0; i < FA_ROWS / 16; i++) {
            int row = r + 16 * i;
            bool ok = q0 + row < T;
            const bf16 *src = ok ? a.q + ((size_t)(tok0 + q0 + row) * a.H + h) * D + c : a.q;
            cp_async16_zfill(qs + row * FPAD + c, src, ok ? 16 : 0);
        }
        cp_async_commit();
    }
    cp_async_wait<0>();
    __syncthreads();

    /* This thread's rows: qmin + rb*16 + g (+8), rb = 0, 1 (positions). */
    int qmin = pos0 + q0 + warp * 32, qmax = qmin + 31;
    const float sc = a.scale_log2;
    float o[2][16][4];
#pragma unroll
    for (int rb = 0; rb < 2; rb++)
#pragma unroll
        for (int n = 0; n < 16; n++) o[rb][n][0] = o[rb][n][1] = o[rb][n][2] = o[rb][n][3] = 0.0f;
    float m[2][2] = {{-INFINITY, -INFINITY}, {-INFINITY, -INFINITY}};
    float l[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
    /* per-lane ldmatrix addresses (bytes, shared space): Q rows of this warp,
     * K (non-transposed B) and V (transposed B) within a block */
    const unsigned qw = (unsigned)__cvta_generic_to_shared(qs) +
                        ((warp * 32 + (lane & 7) + ((lane >> 3) & 1) * 8) * FPAD + (lane >> 4) * 8) * 2;
    const unsigned kw = (unsigned)__cvta_generic_to_shared(ks) +
                        (((lane & 7) + (lane >> 4) * 8) * FPAD + ((lane >> 3) & 1) * 8) * 2;
    const unsigned vw = (unsigned)__cvta_generic_to_shared(vs) +
                        (((lane & 7) + ((lane >> 3) & 1) * 8) * FPAD + (lane >> 4) * 8) * 2;

    for (int j = 0; j < nt; j++) {
        int b = b_lo + wg + 2 * j, buf = KV8 ? 0 : j & 1;
        if (j + 1 < nt) {
            load_block(b + 2, (j & 1) ^ 1);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        wg_barrier(wg);
        const float *ksc_s = (const float *)(smem + (st8 - (unsigned)__cvta_generic_to_shared(smem)) +
                                             (j & 1) * FA8_STAGE + FA8_KS);
        const float *vsc_s = ksc_s + BT;
        if constexpr (KV8) {
            widen_kv8_block(st8 + (j & 1) * FA8_STAGE, (unsigned)__cvta_generic_to_shared(ks),
                            (unsigned)__cvta_generic_to_shared(vs), wtid);
            wg_barrier(wg);
        }
        /* the block in two 32-key halves: S stays at 32 registers per thread */
#pragma unroll 1
        for (int half = 0; half < 2; half++) {
            int kfirst = b * BT + half * 32, klast = kfirst + 31;
            if (kfirst > qmax || qmin - klast > a.window) continue; /* every row of this warp masked */
            const unsigned kt = kw + (buf * FA_TILE_ELEMS + half * 32 * FPAD) * 2;
            const unsigned vt = vw + (buf * FA_TILE_ELEMS + half * 32 * FPAD) * 2;
            /* S = Q Kᵀ: 32 rows x 32 keys per warp */
            float s[2][4][4];
#pragma unroll
            for (int rb = 0; rb < 2; rb++)
#pragma unroll
                for (int n = 0; n < 4; n++) s[rb][n][0] = s[rb][n][1] = s[rb][n][2] = s[rb][n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < 8; kk++) {
                unsigned qf[2][4];
                ldsm_x4(qf[0], qw + kk * 32);
                ldsm_x4(qf[1], qw + 16 * FPAD * 2 + kk * 32);
#pragma unroll
                for (int np = 0; np < 2; np++) {
                    unsigned kf[4];
                    ldsm_x4(kf, kt + (np * 16 * FPAD + kk * 16) * 2);
#pragma unroll
                    for (int rb = 0; rb < 2; rb++) {
                        nc_mma_bf16(s[rb][2 * np], qf[rb], kf[0], kf[1]);
                        nc_mma_bf16(s[rb][2 * np + 1], qf[rb], kf[2], kf[3]);
                    }
                }
            }
            if constexpr (KV8) scale_columns(s, ksc_s + half * 32, tq); /* the key scales, in S's columns */
            /* mask only where the keys cross this warp's diagonal or window edge */
            if (klast > qmin || qmax - kfirst > a.window) {
#pragma unroll
                for (int rb = 0; rb < 2; rb++)
#pragma unroll
                    for (int n = 0; n < 4; n++)
#pragma unroll
                        for (int i = 0; i < 4; i++) {
                            int kpos = kfirst + n * 8 + 2 * tq + (i & 1);
                            int qp = qmin + rb * 16 + g + (i >> 1) * 8;
                            if (kpos > qp || qp - kpos > a.window) s[rb][n][i] = -INFINITY;
                        }
            }
            /* online softmax (exp2 domain; m in raw score units), O rescaled
             * only when a row maximum of the warp moved */
#pragma unroll
            for (int rb = 0; rb < 2; rb++) {
                float alpha[2];
                bool moved = false;
#pragma unroll
                for (int hf = 0; hf < 2; hf++) {
                    float mx = fmaxf(s[rb][0][2 * hf], s[rb][0][2 * hf + 1]);
#pragma unroll
                    for (int n = 1; n < 4; n++) mx = fmaxf(mx, fmaxf(s[rb][n][2 * hf], s[rb][n][2 * hf + 1]));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                    float mn = fmaxf(m[rb][hf], mx);
                    float ms = mn == -INFINITY ? 0.0f : mn * sc;
                    bool mv = mn != m[rb][hf];
                    alpha[hf] = mv ? fast_exp2(m[rb][hf] * sc - ms) : 1.0f;
                    moved |= mv;
                    m[rb][hf] = mn;
                    float sum = 0.0f;
#pragma unroll
                    for (int n = 0; n < 4; n++) {
                        float p0 = fast_exp2(fmaf(s[rb][n][2 * hf], sc, -ms));
                        float p1 = fast_exp2(fmaf(s[rb][n][2 * hf + 1], sc, -ms));
                        s[rb][n][2 * hf] = p0, s[rb][n][2 * hf + 1] = p1;
                        sum += p0 + p1;
                    }
                    l[rb][hf] = l[rb][hf] * alpha[hf] + sum;
                }
                if (__any_sync(0xffffffffu, moved)) {
#pragma unroll
                    for (int n = 0; n < 16; n++) {
                        o[rb][n][0] *= alpha[0], o[rb][n][1] *= alpha[0];
                        o[rb][n][2] *= alpha[1], o[rb][n][3] *= alpha[1];
                    }
                }
            }
            if constexpr (KV8) scale_columns(s, vsc_s + half * 32, tq); /* the value scales, in P's (sums done) */
            /* O += P V, P as bf16 A fragments (16 keys per k-step) */
#pragma unroll
            for (int kk = 0; kk < 2; kk++) {
                unsigned p[2][4];
#pragma unroll
                for (int rb = 0; rb < 2; rb++) {
                    p[rb][0] = pack_bf16(s[rb][2 * kk][0], s[rb][2 * kk][1]);
                    p[rb][1] = pack_bf16(s[rb][2 * kk][2], s[rb][2 * kk][3]);
                    p[rb][2] = pack_bf16(s[rb][2 * kk + 1][0], s[rb][2 * kk + 1][1]);
                    p[rb][3] = pack_bf16(s[rb][2 * kk + 1][2], s[rb][2 * kk + 1][3]);
                }
#pragma unroll
                for (int dp = 0; dp < 8; dp++) {
                    unsigned vf[4];
                    ldsm_x4_t(vf, vt + (kk * 16 * FPAD + dp * 16) * 2);
#pragma unroll
                    for (int rb = 0; rb < 2; rb++) {
                        nc_mma_bf16(o[rb][2 * dp], p[rb], vf[0], vf[1]);
                        nc_mma_bf16(o[rb][2 * dp + 1], p[rb], vf[2], vf[3]);
                    }
                }
            }
        }
        wg_barrier(wg);
    }

    /* merge the two warpgroups' partials: thread t of warpgroup 1 holds the
     * same (row, column) elements as thread t of warpgroup 0 */
    __syncthreads();
    float *xs = (float *)(qs + FA_ROWS * FPAD); /* [136][128] floats over warpgroup 0's buffers */
    if (wg == 1) {
#pragma unroll
        for (int rb = 0; rb < 2; rb++)
#pragma unroll
            for (int n = 0; n < 16; n++)
#pragma unroll
                for (int i = 0; i < 4; i++) xs[((rb * 16 + n) * 4 + i) * 128 + wtid] = o[rb][n][i];
#pragma unroll
        for (int rb = 0; rb < 2; rb++)
#pragma unroll
            for (int hf = 0; hf < 2; hf++) {
                xs[(128 + rb * 2 + hf) * 128 + wtid] = m[rb][hf];
                xs[(132 + rb * 2 + hf) * 128 + wtid] = l[rb][hf];
            }
    }
    __syncthreads();
    if (wg == 1) return;
#pragma unroll
    for (int rb = 0; rb < 2; rb++) {
        float f0[2], f1[2];
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            float m1 = xs[(128 + rb * 2 + hf) * 128 + wtid], l1 = xs[(132 + rb * 2 + hf) * 128 + wtid];
            float m0 = m[rb][hf], mn = fmaxf(m0, m1);
            float a0 = m0 == -INFINITY ? 0.0f : fast_exp2((m0 - mn) * sc);
            float a1 = m1 == -INFINITY ? 0.0f : fast_exp2((m1 - mn) * sc);
            float ls = l[rb][hf] * a0 + l1 * a1;
            ls += __shfl_xor_sync(0xffffffffu, ls, 1);
            ls += __shfl_xor_sync(0xffffffffu, ls, 2);
            float inv = ls > 0.0f ? 1.0f / ls : 0.0f;
            f0[hf] = a0 * inv, f1[hf] = a1 * inv;
        }
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            int row = q0 + warp * 32 + rb * 16 + g + hf * 8; /* chunk-relative */
            if (row >= T) continue;
            bf16 *dst = a.out + ((size_t)(tok0 + row) * a.H + h) * D;
#pragma unroll
            for (int n = 0; n < 16; n++) {
                float v0 = o[rb][n][2 * hf] * f0[hf] + xs[((rb * 16 + n) * 4 + 2 * hf) * 128 + wtid] * f1[hf];
                float v1 = o[rb][n][2 * hf + 1] * f0[hf] + xs[((rb * 16 + n) * 4 + 2 * hf + 1) * 128 + wtid] * f1[hf];
                *(__nv_bfloat162 *)(dst + n * 8 + 2 * tq) = __floats2bfloat162_rn(v0, v1);
            }
        }
    }
}

/* ==== v3: wgmma (sm_90a) ====
 * Same work items and grid as above, but a CTA's two warpgroups own 64
 * query rows each and both walk all of the item's 64-key cache blocks, so
 * every K/V block is copied to shared memory once per CTA. Per block and
 * warpgroup: S = Q·Kᵀ as 8 wgmma m64n64k16 with Q and K read by the tensor
 * cores straight from shared memory (128-byte swizzle, written by cp.async
 * with the swizzle applied to the address), and O += P·V as 4 wgmma
 * m64n128k16 with P from registers (S's accumulator layout is the A
 * fragment layout) and V through the transposed-B descriptor. Software
 * pipelining inside a warpgroup: block j+1's Q·Kᵀ and block j's P·V are
 * issued together and block j+1's softmax runs while P·V is still on the
 * tensor cores; and the two warpgroups take turns to issue (ping-pong on
 * named barriers 3 and 4), so one's softmax overlaps the other's MMAs
 * (FlashAttention-3's schedule without the TMA producer warp). K and V have
 * rings of 3 block slots with full / empty mbarriers (cp.async arrives on
 * "full" when its copies land, each thread arrives on "empty" once its
 * warpgroup's MMAs that read the slot are done); every thread copies its
 * share of every block, so no producer warp is needed. */
#define WG_QBYTES (FA_ROWS * NC_HEAD_DIM * 2)          /* Q: 2 halves of D x [128 rows][128 B] */
#define WG_PAGE (NC_KV_BLOCK_TOKENS * NC_HEAD_DIM * 2) /* one K or V block: 2 x [64 rows][128 B] */
#define WG_RING 3
/* dynamic shared memory of the wgmma kernel with NPG blocks per step (231 KB at 2) */
#define WG_SMEM(npg) (1024 + WG_QBYTES + 2 * WG_RING * (npg) * WG_PAGE + 4 * WG_RING * 8)

#ifdef NC_HAVE_WGMMA
/* Ping-pong of the two warpgroups' MMA issue: named barrier 3 is warpgroup
 * 0's turn, 4 warpgroup 1's; each waits for its turn, issues, and passes
 * the turn on (one pass per wait, so the barriers balance at exit). */
__device__ __forceinline__ void pp_wait(int wg) {
    if (wg) asm volatile("bar.sync 4, 256;" ::: "memory");
    else asm volatile("bar.sync 3, 256;" ::: "memory");
}
__device__ __forceinline__ void pp_pass(int wg) {
    if (wg) asm volatile("bar.arrive 3, 256;" ::: "memory");
    else asm volatile("bar.arrive 4, 256;" ::: "memory");
}

/* This thread's share of one ring slot: the NPG 64-key blocks of step t (K
 * or V of one head; each block [64][D] bf16 contiguous in the cache), 4 x 16
 * bytes per block, into the swizzled slot (2 halves of D x [64 NPG rows][128
 * B], block p at row 64p). Blocks past the item's last (np blocks) are
 * zero-filled (finite, and their keys are masked). Arrives on bar once this
 * thread's copies land. */
template <int NPG>
__device__ __forceinline__ void wg_load_step(unsigned slot, const bf16 *base, const int32_t *btab, int t, int np,
                                             size_t kv_head, unsigned bar, int tid) {
    int c = tid & 15, r = tid >> 4;
    unsigned s = slot + (c >> 3) * (NPG * WG_PAGE / 2) + r * 128 + (((c & 7) ^ (r & 7)) << 4);
#pragma unroll
    for (int pg = 0; pg < NPG; pg++) {
        int idx = t * NPG + pg;
        bool ok = idx < np;
        const bf16 *gp = base + (ok ? (size_t)btab[idx] * kv_head : 0) + r * NC_HEAD_DIM + c * 8;
#pragma unroll
        for (int i = 0; i < 4; i++)
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s + (pg * 64 + i * 16) * 128),
                         "l"(gp + i * 16 * NC_HEAD_DIM), "r"(ok ? 16 : 0));
    }
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(bar) : "memory");
}

/* Online softmax of one 64 x (8 NI) block of S in place (exp2 domain, m in
 * raw score units): mask where needed, new row maxima, P = 2^(S·sc - m·sc),
 * partial row sums. Returns whether a row maximum of this warp moved;
 * alpha: the factor for O. */
template <int NI>
__device__ __forceinline__ bool wg_softmax(float *s, float *m, float *l, float *alpha, int kfirst, int qw, int tq,
                                           bool mask, int window, float sc) {
    if (mask) {
#pragma unroll
        for (int i = 0; i < NI; i++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int kpos = kfirst + i * 8 + 2 * tq + (e & 1), qp = qw + (e >> 1) * 8;
                if (kpos > qp || qp - kpos > window) s[4 * i + e] = -INFINITY;
            }
    }
    bool moved = false;
#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        float mx = fmaxf(s[2 * hf], s[2 * hf + 1]);
#pragma unroll
        for (int i = 1; i < NI; i++) mx = fmaxf(mx, fmaxf(s[4 * i + 2 * hf], s[4 * i + 2 * hf + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        float mn = fmaxf(m[hf], mx);
        float ms = mn == -INFINITY ? 0.0f : mn * sc;
        bool mv = mn != m[hf];
        alpha[hf] = mv ? fast_exp2(m[hf] * sc - ms) : 1.0f;
        moved |= mv;
        m[hf] = mn;
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < NI; i++) {
            float p0 = fast_exp2(fmaf(s[4 * i + 2 * hf], sc, -ms));
            float p1 = fast_exp2(fmaf(s[4 * i + 2 * hf + 1], sc, -ms));
            s[4 * i + 2 * hf] = p0, s[4 * i + 2 * hf + 1] = p1;
            sum += p0 + p1;
        }
        l[hf] = l[hf] * alpha[hf] + sum;
    }
    return __any_sync(0xffffffffu, moved);
}

/* S = Q·Kᵀ of one step: 8 wgmma (k16 steps over D) of N = 64 NPG keys; kb:
 * the K slot. */
template <int NPG>
__device__ __forceinline__ void wg_qk(float *s, unsigned qa, unsigned kb) {
#pragma unroll
    for (int kk = 0; kk < 8; kk++) {
        uint64_t da = wg_desc(qa + (kk >> 2) * (WG_QBYTES / 2) + (kk & 3) * 32, 16);
        uint64_t db = wg_desc(kb + (kk >> 2) * (NPG * WG_PAGE / 2) + (kk & 3) * 32, 16);
        if constexpr (NPG == 1)
            wgmma_ss<64>(s, da, db, kk);
        else
            wgmma_ss<128>(s, da, db, kk);
    }
}

/* O += P·V of one step: 4 NPG wgmma over 16-key slices; vb: the V slot. */
template <int NPG>
__device__ __forceinline__ void wg_pv(float *o, const unsigned *p, unsigned vb) {
#pragma unroll
    for (int kk = 0; kk < 4 * NPG; kk++) wgmma_rs<128, 1>(o, p + 4 * kk, wg_desc(vb + kk * 16 * 128, NPG * WG_PAGE / 2));
}
#endif /* NC_HAVE_WGMMA */

/* NPG: cache blocks (64 keys) per step: 1 (64-key steps) or 2 (128-key steps). */
template <int NPG>
__global__ void __launch_bounds__(FA_THREADS, 1) attn_prefill_wgmma_kernel(fa_args a) {
#ifdef NC_HAVE_WGMMA
    const int BT = NC_KV_BLOCK_TOKENS, SLOT = NPG * WG_PAGE, KEYS = NPG * BT, NS = 32 * NPG;
    extern __shared__ __align__(16) unsigned char smem[];
    nc_pdl_trigger();
    const int tid = threadIdx.x, lane = tid & 31, warp = (tid >> 5) & 3, wg = tid >> 7;
    const int g = lane >> 2, tq = lane & 3;
    const unsigned qs = ((unsigned)__cvta_generic_to_shared(smem) + 1023u) & ~1023u;
    const unsigned ks = qs + WG_QBYTES, vs = ks + WG_RING * SLOT, bars = vs + WG_RING * SLOT;
    /* mbarriers: K full [3], K empty [3], V full [3], V empty [3] */
#define KFULL(t) (bars + ((t) % WG_RING) * 8)
#define KEMPTY(t) (bars + (WG_RING + (t) % WG_RING) * 8)
#define VFULL(t) (bars + (2 * WG_RING + (t) % WG_RING) * 8)
#define VEMPTY(t) (bars + (3 * WG_RING + (t) % WG_RING) * 8)
#define PHASE(t) (((t) / WG_RING) & 1)

    int item = blockIdx.x / a.H, h = blockIdx.x - item * a.H, hk = h / a.G;
    int seq = a.items[2 * item], q0 = a.items[2 * item + 1];
    int T = a.s_ntok[seq], tok0 = a.s_tok0[seq], pos0 = a.s_pos[seq];
    int kmax = pos0 + min(q0 + FA_ROWS, T) - 1;
    int kmin = a.window == INT32_MAX ? 0 : max(0, pos0 + q0 - a.window);
    int b_lo = kmin / BT, np = kmax / BT - b_lo + 1, nt = (np + NPG - 1) / NPG; /* blocks, steps */
    const int32_t *btab = a.bt + a.s_bt[seq] + b_lo;
    const size_t tile = (size_t)BT * NC_HEAD_DIM, kv_head = (size_t)a.Hkv * tile;
    const bf16 *kbase = a.kc + hk * tile, *vbase = a.vc + hk * tile;

    if (tid == 0) {
        for (int i = 0; i < 4 * WG_RING; i++) mbar_init(bars + i * 8, FA_THREADS);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();
    {   /* Q rows q0 .. q0+127 of head h (zeros past the chunk), swizzled */
        int c = tid & 15, r = tid >> 4;
        unsigned s = qs + (c >> 3) * (WG_QBYTES / 2) + r * 128 + (((c & 7) ^ (r & 7)) << 4);
#pragma unroll
        for (int i = 0; i < FA_ROWS / 16; i++) {
            int row = r + 16 * i;
            bool ok = q0 + row < T;
            const bf16 *src = ok ? a.q + ((size_t)(tok0 + q0 + row) * a.H + h) * NC_HEAD_DIM + c * 8 : a.q;
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s + i * 16 * 128), "l"(src),
                         "r"(ok ? 16 : 0));
        }
        cp_async_commit();
    }
    for (int t = 0; t < WG_RING && t < nt; t++)
        wg_load_step<NPG>(ks + t * SLOT, kbase, btab, t, np, kv_head, KFULL(t), tid);
    for (int t = 0; t < WG_RING - 1 && t < nt; t++)
        wg_load_step<NPG>(vs + t * SLOT, vbase, btab, t, np, kv_head, VFULL(t), tid);
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();

    const float sc = a.scale_log2;
    const int qminw = pos0 + q0 + wg * 64, qw = qminw + warp * 16 + g;
    const unsigned qa = qs + wg * 64 * 128;
    float o[64], s[NS];
    unsigned p[NS / 2];
#pragma unroll
    for (int i = 0; i < 64; i++) o[i] = 0.0f;
#pragma unroll
    for (int i = 0; i < NS; i++) s[i] = 0.0f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, alpha[2];

    /* S_0 */
    mbar_wait(KFULL(0), 0);
    fence_proxy_async();
    if (wg) pp_pass(1); /* warpgroup 0 issues first */
    pp_wait(wg);
    wg_fence_regs<NS>(s);
    wg_fence();
    wg_qk<NPG>(s, qa, ks);
    wg_commit();
    pp_pass(wg);
    wg_wait<0>();
    wg_fence_regs<NS>(s);
    mbar_arrive(KEMPTY(0));
    {
        int kf = b_lo * BT;
        wg_softmax<8 * NPG>(s, m, l, alpha, kf, qw, tq, kf + KEYS - 1 > qminw || qminw + 63 - kf > a.window,
                                a.window, sc);
    }
#pragma unroll
    for (int i = 0; i < NS / 2; i++) p[i] = pack_bf16(s[2 * i], s[2 * i + 1]);

    /* step j+1's S and step j's P·V per round; the last step's P·V after */
    for (int j = 0; j < nt - 1; j++) {
        mbar_wait(KFULL(j + 1), PHASE(j + 1));
        mbar_wait(VFULL(j), PHASE(j));
        fence_proxy_async();
        pp_wait(wg);
        wg_fence_regs<64>(o);
        wg_fence_regs<NS>(s);
        wg_fence();
        wg_qk<NPG>(s, qa, ks + ((j + 1) % WG_RING) * SLOT);
        wg_commit();
        wg_pv<NPG>(o, p, vs + (j % WG_RING) * SLOT);
        wg_commit();
        pp_pass(wg);
        wg_wait<1>();
        wg_fence_regs<NS>(s);
        mbar_arrive(KEMPTY(j + 1));
        if (j + WG_RING < nt) { /* K step j+3 into step j's slot, once both warpgroups are done with it */
            mbar_wait(KEMPTY(j), PHASE(j));
            wg_load_step<NPG>(ks + (j % WG_RING) * SLOT, kbase, btab, j + WG_RING, np, kv_head, KFULL(j + WG_RING),
                              tid);
        }
        int kf = (b_lo + (j + 1) * NPG) * BT;
        bool moved = wg_softmax<8 * NPG>(s, m, l, alpha, kf, qw, tq,
                                             kf + KEYS - 1 > qminw || qminw + 63 - kf > a.window, a.window, sc);
        wg_wait<0>();
        wg_fence_regs<64>(o);
        mbar_arrive(VEMPTY(j));
        if (moved) {
#pragma unroll
            for (int i = 0; i < 16; i++) {
                o[4 * i] *= alpha[0], o[4 * i + 1] *= alpha[0];
                o[4 * i + 2] *= alpha[1], o[4 * i + 3] *= alpha[1];
            }
        }
#pragma unroll
        for (int i = 0; i < NS / 2; i++) p[i] = pack_bf16(s[2 * i], s[2 * i + 1]);
        if (j + WG_RING - 1 < nt) { /* V step j+2 into step j-1's slot */
            if (j >= 1) mbar_wait(VEMPTY(j - 1), PHASE(j - 1));
            wg_load_step<NPG>(vs + ((j + WG_RING - 1) % WG_RING) * SLOT, vbase, btab, j + WG_RING - 1, np, kv_head,
                              VFULL(j + WG_RING - 1), tid);
        }
    }
    mbar_wait(VFULL(nt - 1), PHASE(nt - 1));
    fence_proxy_async();
    pp_wait(wg);
    wg_fence_regs<64>(o);
    wg_fence();
    wg_pv<NPG>(o, p, vs + ((nt - 1) % WG_RING) * SLOT);
    wg_commit();
    if (!wg) pp_pass(0); /* warpgroup 1's last turn passes to nobody */
    wg_wait<0>();
    wg_fence_regs<64>(o);
#undef KFULL
#undef KEMPTY
#undef VFULL
#undef VEMPTY
#undef PHASE

#pragma unroll
    for (int hf = 0; hf < 2; hf++) {
        float ls = l[hf];
        ls += __shfl_xor_sync(0xffffffffu, ls, 1);
        ls += __shfl_xor_sync(0xffffffffu, ls, 2);
        float inv = ls > 0.0f ? 1.0f / ls : 0.0f;
        int row = q0 + wg * 64 + warp * 16 + g + hf * 8; /* chunk-relative */
        if (row >= T) continue;
        bf16 *dst = a.out + ((size_t)(tok0 + row) * a.H + h) * NC_HEAD_DIM + 2 * tq;
#pragma unroll
        for (int i = 0; i < 16; i++)
            *(__nv_bfloat162 *)(dst + i * 8) = __floats2bfloat162_rn(o[4 * i + 2 * hf] * inv, o[4 * i + 2 * hf + 1] * inv);
    }
#else
    __trap(); /* built without sm_90a: nc_cuda_attn_prefill_init does not select this kernel */
#endif /* NC_HAVE_WGMMA */
}

/* Which kernel runs: 0 the mma.sync one, 1 wgmma with 64-key steps, 2 wgmma
 * with 128-key steps (the default on sm_90 devices, built for sm_90a);
 * dev/kernels/attn_prefill.cu sets it to compare them, NC_CUDA_FA picks
 * between the wgmma ones on sm_90. */
static int fa_kernel;

int nc_cuda_attn_prefill_init(nc_cuda *cu) {
    /* wgmma needs this binary's sm_90a code on an sm_90 device (a build
     * for other architectures only has the trapping stub) */
    fa_kernel = cu->have_wgmma ? 2 : 0;
    if (fa_kernel && cu->env.cuda_fa) fa_kernel = cu->env.cuda_fa;
    NC_CU_TRY(cudaFuncSetAttribute(attn_prefill_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)FA_SMEM));
    NC_CU_TRY(cudaFuncSetAttribute(attn_prefill_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)FA_SMEM));
    NC_CU_TRY(cudaFuncSetAttribute(attn_prefill_wgmma_kernel<1>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)WG_SMEM(1)));
    NC_CU_TRY(cudaFuncSetAttribute(attn_prefill_wgmma_kernel<2>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)WG_SMEM(2)));
    return 0;
}

int nc_cuda_attn_prefill(nc_cuda *cu, int layer, int n_items) {
    fa_args a;
    memset(&a, 0, sizeof a);
    a.q = cu->q;
    nc_cuda_kv_layer kv = nc_cuda_kv_of(cu, layer);
    a.kc = kv.kc, a.vc = kv.vc, a.kc8 = kv.kc8, a.vc8 = kv.vc8, a.ksc = kv.ksc, a.vsc = kv.vsc;
    a.items = META(cu, items);
    a.s_tok0 = META(cu, s_tok0), a.s_ntok = META(cu, s_ntok), a.s_pos = META(cu, s_pos);
    a.s_bt = META(cu, s_bt), a.bt = META(cu, bt);
    a.out = cu->attn;
    a.H = cu->H, a.Hkv = cu->Hkv, a.G = cu->G;
    a.window = cu->layers[layer].window;
    a.scale_log2 = 1.4426950408889634f / sqrtf((float)cu->D);
    /* one CTA per (item, head), all heads of an item adjacent: the longest
     * items (nc_cuda_batch_pack sorts them) start first */
    unsigned grid = (unsigned)n_items * cu->H;
    if (cu->kv_fp8) /* the wgmma kernels read bf16 tiles only */
        attn_prefill_kernel<true><<<grid, FA_THREADS, FA_SMEM, cu->stream>>>(a);
    else if (fa_kernel == 2)
        attn_prefill_wgmma_kernel<2><<<grid, FA_THREADS, WG_SMEM(2), cu->stream>>>(a);
    else if (fa_kernel == 1)
        attn_prefill_wgmma_kernel<1><<<grid, FA_THREADS, WG_SMEM(1), cu->stream>>>(a);
    else
        attn_prefill_kernel<false><<<grid, FA_THREADS, FA_SMEM, cu->stream>>>(a);
    NC_CU_LAUNCHED("attn_prefill");
    return 0;
}

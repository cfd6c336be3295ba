/*
 * cuda_attn_prefill.cu: causal flash attention for prompt chunks on the
 * tensor cores (mma.sync m16n8k16, bf16 in, fp32 accumulate), reading keys
 * and values from the paged KV cache (the chunk's own K/V were appended
 * first, earlier chunks' are already there), so chunked prefill and prefix
 * reuse need nothing special. This is FlashAttention-2's schedule; nanochat
 * calls F.scaled_dot_product_attention (flash) for the same math.
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
 */
#include <math.h>

#include "cuda_internal.cuh"

#define META(cu, f) ((cu)->meta_d + (cu)->ml.f)
#define FPAD (NC_HEAD_DIM + 8)
#define FA_ROWS NC_ATTN_PREFILL_ROWS
#define FA_THREADS 256
#define FA_TILE_ELEMS (NC_KV_BLOCK_TOKENS * FPAD) /* one padded 64-key K or V block */

typedef struct {
    const bf16 *q;          /* [N, H, D] */
    const bf16 *kc, *vc;    /* this layer: [n_blocks][Hkv][64][D] */
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

__global__ void __launch_bounds__(FA_THREADS, 1) attn_prefill_kernel(fa_args a) {
    const int D = NC_HEAD_DIM, BT = NC_KV_BLOCK_TOKENS;
    extern __shared__ __align__(16) unsigned char smem[];
    nc_pdl_trigger();
    int tid = threadIdx.x, lane = tid & 31, warp = (tid >> 5) & 3, wg = tid >> 7, wtid = tid & 127;
    int g = lane >> 2, tq = lane & 3;
    bf16 *qs = (bf16 *)smem;                                /* [128][FPAD] */
    bf16 *ks = qs + FA_ROWS * FPAD + wg * 4 * FA_TILE_ELEMS; /* [2][64][FPAD] of this warpgroup */
    bf16 *vs = ks + 2 * FA_TILE_ELEMS;                      /* [2][64][FPAD] */

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

    if (nt > 0) {
        size_t off = (size_t)btab[b_lo + wg] * kv_head;
        load_kv_block(ks_t, kbase + off, vbase + off);
    }
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
        int b = b_lo + wg + 2 * j, buf = j & 1;
        if (j + 1 < nt) {
            size_t off = (size_t)btab[b + 2] * kv_head;
            load_kv_block(ks_t + (buf ^ 1) * FA_TILE_ELEMS * 2, kbase + off, vbase + off);
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        wg_barrier(wg);
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
                        mma_bf16(s[rb][2 * np], qf[rb], kf[0], kf[1]);
                        mma_bf16(s[rb][2 * np + 1], qf[rb], kf[2], kf[3]);
                    }
                }
            }
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
                        mma_bf16(o[rb][2 * dp], p[rb], vf[0], vf[1]);
                        mma_bf16(o[rb][2 * dp + 1], p[rb], vf[2], vf[3]);
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
    /* one CTA per (item, head), all heads of an item adjacent: the longest
     * items (build_meta sorts them) start first */
    attn_prefill_kernel<<<(unsigned)n_items * cu->H, FA_THREADS, FA_SMEM, cu->stream>>>(a);
    NC_CU_LAUNCHED("attn_prefill");
    return 0;
}

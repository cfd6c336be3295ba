/*
 * cuda_gemv_rows.cu: Y = X · Wᵀ for 1..8 token rows on the tensor cores,
 * read like a GEMV: the weights go straight from memory into the MMA's
 * registers, never through shared memory. The products it serves are
 * decode steps of 2..8 streams and verified draft chunks (docs/speculative.md)
 * with 8-bit weights, which read every weight once for a handful of rows:
 * the time is the weight stream, and what a kernel adds on top is its
 * ramp, its tail and its launch.
 *
 * Measured (H200, d34, dev/kernels/gemm_q8.cu, session 11): the step's
 * products of 2..8 rows in a graph took 1.34-1.37 ms with int8 weights
 * against 1.55-1.57 for the skinny GEMM, 1.30-1.33 against 1.36-1.37 with
 * fp8; with bf16 weights 1.77-1.83 against 1.43, so bf16 rows stay with the
 * skinny GEMM (its TMA ring streams bf16 tiles at 69% of the copy
 * bandwidth; here each warp's loads touch 8 rows x 64 bytes per
 * instruction, 33-36% on d34's layer matrices). With one row it loses to
 * the 8-bit GEMV (0.89-0.91x batch-1 decode tok/s; NC_CUDA_GEMV_Q8=tc).
 *
 * Why not the GEMV with more rows: a CUDA-core dot product needs every x
 * value in registers once per weight it meets, so R rows cost R times the
 * x reads (through L1) per weight byte; the GEMV's 4-row variant ran far
 * slower than the GEMMs (dev/kernels/NOTES.md, session 2). Why not the
 * skinny wgmma GEMM (cuda_gemm_skinny.cu) for 8-bit weights: its consumer
 * warps widen every weight on its way from shared memory into registers,
 * and stream d34's step at 31-36% of the copy bandwidth. Here an mma.sync
 * m16n8k16 takes the 8 token rows as its N: x costs one 16-byte read per
 * lane and k-block, served from L1, and the weights skip shared memory.
 *
 * Layout. CTA = 4 warps on one tile of 16 weight rows and one split of the
 * K range; each warp owns a contiguous run of at most GR_KB k-blocks of 64
 * bytes per row (32 bf16 or 64 8-bit values) and issues all of its weight
 * loads at once, before griddepcontrol.wait (weights never depend on the
 * previous kernel): lane (g, t) = (lane / 4, lane % 4) loads the 16 bytes
 * at offset 16t of rows g and g + 8 of each k-block. The MMA does not care
 * which k a fragment slot holds as long as A and B agree, so those 16
 * bytes are used as they lie: for mma step s the slot pair (2t, 2t+1) of
 * the fragment holds the values 4s, 4s+1 of the lane's chunk and (2t+8,
 * 2t+9) the values 4s+2, 4s+3, and the B fragment (token g) takes the same
 * values of x. 8-bit weights are widened exactly to bf16 in registers
 * (cuda_q8.cuh) and their row scale applied to the finished sum.
 *
 * Merging: the 4 warps' 16 x 8 accumulators meet in shared memory, one
 * output per thread, summed in warp order. With S > 1 splits (sized so each
 * warp loads one round: d34's 2176-byte rows of 8-bit weights are 34
 * k-blocks, 2 splits of 4-5 per warp, 8-10 loads per lane like the GEMV's
 * 9), each CTA writes its tile to a workspace and the last to arrive (a
 * counter per tile, reset by that CTA) adds the S partials in split order.
 * Deterministic, and a token row's result does not depend on the other
 * rows of the batch.
 *
 * Fused in, as the GEMV: RMSNorm of fp32 input rows (x is rounded to bf16
 * for the MMA and sum(x²) accumulated alongside, per token, partial per
 * split like the dot products; y / rms(x) at the end), the row scale, and
 * the epilogues. One row keeps the GEMV's conventions (fp32 store for the
 * fused batch-1 attention, ReLU² squared in fp32); 2+ rows the GEMMs' (bf16
 * store, ReLU² of the bf16-rounded output).
 */
#include "cuda_q8.cuh"

#define GR_WARPS 4
#define GR_TILE 16                        /* weight rows per CTA: the MMA's M */
#define GR_TOKENS 8                       /* token rows: the MMA's N */
#define GR_OUT (GR_TILE * GR_TOKENS)      /* outputs per CTA: one per thread */
#define GR_PART (GR_OUT + GR_TOKENS)      /* a split's partial: the outputs and each token's sum(x²) */
#define GR_KB 5                           /* 64-byte k-blocks per warp: 10 16-byte loads per lane */
#define GR_MAX_SPLITS 16

/* FMT: NC_WEIGHT_BF16 or an 8-bit format. */
template <int FMT>
struct gr_fmt {
    static constexpr int EB = FMT == NC_WEIGHT_BF16 ? 2 : 1; /* bytes per weight */
    static constexpr int KB_VALS = 64 / EB;                   /* k per 64-byte k-block */
    static constexpr int LANE_VALS = KB_VALS / 4;             /* k per lane and k-block: 8 or 16 */
    static constexpr int STEPS = KB_VALS / 16;                /* mma k16 steps per k-block */
};

typedef struct {
    const uint8_t *W;   /* [rows of the matrix, K] */
    const float *scale; /* [rows] of 8-bit weights */
    int rows, K, ld, n; /* outputs computed, k, output row stride, token rows */
    int splits;
    const void *x;      /* [n, K] fp32 (normed on the way) or bf16 */
    int norm, epi;
    bool one_row;       /* the GEMV's output conventions */
    void *out;
    float cap, eps;
    float *ws;          /* [tiles][splits][GR_PART] */
    int *count;         /* [tiles] arrivals, 0 between uses */
} gr_args;

__device__ __forceinline__ uint32_t gr_word(const uint4 &v, int i) {
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

__device__ __forceinline__ uint32_t gr_pack_bf16(float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *(const uint32_t *)&h;
}

/* NV values of token row x at k as bf16 pairs (NV / 2 registers); fp32 rows
 * also add their squares to *ss. */
template <int NV>
__device__ __forceinline__ void gr_load_x(const bf16 *x, uint32_t *p, float *ss) {
    (void)ss;
#pragma unroll
    for (int i = 0; i < NV / 8; i++) {
        uint4 v = __ldg((const uint4 *)x + i);
        p[4 * i] = v.x, p[4 * i + 1] = v.y, p[4 * i + 2] = v.z, p[4 * i + 3] = v.w;
    }
}
template <int NV>
__device__ __forceinline__ void gr_load_x(const float *x, uint32_t *p, float *ss) {
#pragma unroll
    for (int i = 0; i < NV / 4; i++) {
        float4 v = __ldg((const float4 *)x + i);
        *ss = fmaf(v.x, v.x, fmaf(v.y, v.y, fmaf(v.z, v.z, fmaf(v.w, v.w, *ss))));
        p[2 * i] = gr_pack_bf16(v.x, v.y), p[2 * i + 1] = gr_pack_bf16(v.z, v.w);
    }
}

/* The A fragment of mma step s from the lane's chunks of rows g (lo) and
 * g + 8 (hi): slots (2t, 2t+1) = values 4s, 4s+1, slots (2t+8, 2t+9) =
 * values 4s+2, 4s+3 of the chunk. */
template <int FMT>
__device__ __forceinline__ void gr_frag(const uint4 &lo, const uint4 &hi, int s, unsigned *a) {
    if constexpr (FMT == NC_WEIGHT_BF16) {
        a[0] = gr_word(lo, 2 * s), a[2] = gr_word(lo, 2 * s + 1);
        a[1] = gr_word(hi, 2 * s), a[3] = gr_word(hi, 2 * s + 1);
    } else {
        uint32_t l = gr_word(lo, s), h = gr_word(hi, s);
        a[0] = nc_q8x2_to_bf16x2<FMT>(l), a[2] = nc_q8x2_to_bf16x2<FMT>(l >> 16);
        a[1] = nc_q8x2_to_bf16x2<FMT>(h), a[3] = nc_q8x2_to_bf16x2<FMT>(h >> 16);
    }
}

template <typename TIn, int FMT>
__global__ void __launch_bounds__(GR_WARPS * 32) gemv_rows_kernel(const __grid_constant__ gr_args a) {
    using F = gr_fmt<FMT>;
    __shared__ float red[GR_WARPS][GR_PART];
    __shared__ int last;
    nc_pdl_trigger();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int tile = blockIdx.x, split = blockIdx.y, m0 = tile * GR_TILE;
    const int KB = a.K / F::KB_VALS;
    const int kb0 = (int)((int64_t)split * KB / a.splits), nk = (int)((int64_t)(split + 1) * KB / a.splits) - kb0;
    const int wk0 = kb0 + warp * nk / GR_WARPS, wn = kb0 + (warp + 1) * nk / GR_WARPS - wk0;

    /* the weights first: they do not depend on the previous kernel */
    const bool lo_live = m0 + g < a.rows, hi_live = m0 + g + 8 < a.rows;
    const size_t row_chunks = (size_t)a.K * F::EB / 16;
    const uint4 *wlo = (const uint4 *)a.W + (size_t)(m0 + g) * row_chunks + 4 * wk0 + t;
    const uint4 *whi = wlo + 8 * row_chunks;
    uint4 wv[GR_KB][2];
#pragma unroll
    for (int u = 0; u < GR_KB; u++) {
        wv[u][0] = wv[u][1] = make_uint4(0, 0, 0, 0);
        if (u < wn) {
            if (lo_live) wv[u][0] = nc_ld_stream(wlo + 4 * u);
            if (hi_live) wv[u][1] = nc_ld_stream(whi + 4 * u);
        }
    }
    nc_pdl_wait();

    const TIn *x = (const TIn *)a.x + (size_t)g * a.K + (size_t)wk0 * F::KB_VALS + t * F::LANE_VALS;
    const bool tok_live = g < a.n;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, ss = 0.0f;
#pragma unroll
    for (int u = 0; u < GR_KB; u++) {
        if (u >= wn) break;
        uint32_t xb[F::LANE_VALS / 2];
#pragma unroll
        for (int i = 0; i < F::LANE_VALS / 2; i++) xb[i] = 0;
        if (tok_live) gr_load_x<F::LANE_VALS>(x + u * F::KB_VALS, xb, &ss);
#pragma unroll
        for (int s = 0; s < F::STEPS; s++) {
            unsigned frag[4];
            gr_frag<FMT>(wv[u][0], wv[u][1], s, frag);
            nc_mma_bf16(acc, frag, xb[2 * s], xb[2 * s + 1]);
        }
    }

    /* acc[j]: weight row g + 8 (j >> 1), token 2t + (j & 1); red[w][n * 16 + m] */
    ss += __shfl_xor_sync(0xffffffffu, ss, 1);
    ss += __shfl_xor_sync(0xffffffffu, ss, 2);
#pragma unroll
    for (int j = 0; j < 4; j++) red[warp][(2 * t + (j & 1)) * GR_TILE + g + 8 * (j >> 1)] = acc[j];
    if (t == 0) red[warp][GR_OUT + g] = ss;
    __syncthreads();
    const int i = threadIdx.x, n = i / GR_TILE, m = m0 + i % GR_TILE;
    float y = 0.0f, xss = 0.0f;
#pragma unroll
    for (int w = 0; w < GR_WARPS; w++) y += red[w][i], xss += red[w][GR_OUT + n];

    if (a.splits > 1) { /* the last CTA of the tile to finish adds the splits' partials in order */
        float *part = a.ws + (size_t)tile * a.splits * GR_PART;
        part[split * GR_PART + i] = y;
        if (i % GR_TILE == 0) part[split * GR_PART + GR_OUT + n] = xss;
        __threadfence();
        __syncthreads();
        if (i == 0) last = atomicAdd(a.count + tile, 1) == a.splits - 1;
        __syncthreads();
        if (!last) return;
        __threadfence();
        y = 0.0f, xss = 0.0f;
        for (int s = 0; s < a.splits; s++) y += __ldcg(part + s * GR_PART + i), xss += __ldcg(part + s * GR_PART + GR_OUT + n);
        if (i == 0) a.count[tile] = 0;
    }
    if (n >= a.n || m >= a.rows) return;
    if (a.norm) y *= rsqrtf(xss / (float)a.K + a.eps);
    if constexpr (FMT != NC_WEIGHT_BF16) y *= __ldg(a.scale + m);
    size_t o = (size_t)n * a.ld + m;
    if (a.epi == NC_EPI_ADD) {
        ((float *)a.out)[o] += y;
    } else if (a.epi == NC_EPI_SOFTCAP) {
        ((float *)a.out)[o] = a.cap * tanhf(y / a.cap);
    } else if (a.epi == NC_EPI_RELU2) { /* the GEMMs square the bf16 linear output (nanochat), the GEMV y */
        float r = fmaxf(a.one_row ? y : __bfloat162float(__float2bfloat16_rn(y)), 0.0f);
        ((bf16 *)a.out)[o] = __float2bfloat16_rn(r * r);
    } else if (a.one_row) {
        ((float *)a.out)[o] = y;
    } else {
        ((bf16 *)a.out)[o] = __float2bfloat16_rn(y);
    }
}

/* ==== host ==== */

/* Splits of the K range: each warp one round of at most GR_KB k-blocks
 * (capped at GR_MAX_SPLITS: nc_cuda_gemv_rows_fits refuses wider rows). */
static int gr_splits(int K, int elem_bytes) {
    int KB = K * elem_bytes / 64, per_cta = GR_WARPS * GR_KB;
    return NC_MIN((KB + per_cta - 1) / per_cta, GR_MAX_SPLITS);
}

static int gr_elem_bytes(const nc_cuda_weight *w) { return w->format == NC_WEIGHT_BF16 ? 2 : 1; }

static int gr_tiles(int rows) { return (rows + GR_TILE - 1) / GR_TILE; }

bool nc_cuda_gemv_rows_fits(const nc_cuda *cu, const nc_cuda_weight *w, int n) {
    int eb = gr_elem_bytes(w), splits = gr_splits(w->cols, eb);
    size_t tiles = (size_t)gr_tiles(w->used_rows);
    return cu->gemv_rows_count && n >= 1 && n <= GR_TOKENS && w->cols % 64 == 0 &&
           splits * GR_WARPS * GR_KB * 64 >= w->cols * eb && tiles <= cu->gemv_rows_tiles &&
           tiles * splits * GR_PART <= cu->gemv_rows_ws_floats;
}

void nc_cuda_gemv_rows_scratch(const nc_cuda *cu, size_t *ws_floats, size_t *tiles) {
    /* the products project() gives it: those of 8-bit matrices (rows, K) */
    const int shapes[5][2] = {{cu->Q, cu->C}, {cu->C, cu->H * cu->D}, {cu->F, cu->C}, {cu->C, cu->F}, {cu->Vp, cu->C}};
    *ws_floats = *tiles = 0;
    for (int i = 0; i < 5; i++) {
        if ((i < 4 ? cu->layer_format : cu->lm_head.format) == NC_WEIGHT_BF16) continue;
        size_t t = (size_t)gr_tiles(shapes[i][0]);
        *tiles = NC_MAX(*tiles, t);
        *ws_floats = NC_MAX(*ws_floats, t * gr_splits(shapes[i][1], 1) * GR_PART);
    }
}

template <typename TIn, int FMT>
static cudaError_t gr_launch(nc_cuda *cu, const gr_args &a) {
    dim3 grid((unsigned)gr_tiles(a.rows), (unsigned)a.splits);
    return nc_launch(cu, gemv_rows_kernel<TIn, FMT>, grid, dim3(GR_WARPS * 32), 0, a);
}

template <typename TIn>
static cudaError_t gr_launch_fmt(nc_cuda *cu, nc_cuda_weight_format f, const gr_args &a) {
    return f == NC_WEIGHT_INT8  ? gr_launch<TIn, NC_WEIGHT_INT8>(cu, a)
           : f == NC_WEIGHT_FP8 ? gr_launch<TIn, NC_WEIGHT_FP8>(cu, a)
                                : gr_launch<TIn, NC_WEIGHT_BF16>(cu, a);
}

int nc_cuda_gemv_rows(nc_cuda *cu, const nc_cuda_weight *w, const void *in, bool in_bf16, bool norm, int n,
                      nc_cuda_epilogue epi, void *out) {
    NC_ASSERT(nc_cuda_gemv_rows_fits(cu, w, n) && (w->format == NC_WEIGHT_BF16 || w->scale) && !(norm && in_bf16));
    gr_args a;
    a.W = (const uint8_t *)w->data, a.scale = w->scale;
    a.rows = w->used_rows, a.K = w->cols, a.ld = w->rows, a.n = n;
    a.splits = gr_splits(w->cols, gr_elem_bytes(w));
    a.x = in, a.norm = norm, a.epi = (int)epi, a.one_row = n == 1;
    a.out = out, a.cap = epi == NC_EPI_SOFTCAP ? cu->cfg.softcap : 0.0f, a.eps = cu->cfg.norm_eps;
    a.ws = cu->gemv_rows_ws, a.count = cu->gemv_rows_count;
    cudaError_t e = in_bf16 ? gr_launch_fmt<bf16>(cu, w->format, a) : gr_launch_fmt<float>(cu, w->format, a);
    if (e != cudaSuccess)
        return nc_fail("cuda: launching the tensor-core GEMV (%d x %d x %d): %s", w->used_rows, n, w->cols,
                       cudaGetErrorString(e));
    return 0;
}

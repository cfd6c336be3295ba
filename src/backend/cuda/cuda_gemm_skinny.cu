/*
 * cuda_gemm_skinny.cu: Y = X · Wᵀ for 2..64 token rows on Hopper (sm_90a):
 * decode steps of a few to 64 streams and short prompt chunks (a chat's
 * next turn after the prefix cache), where the weight matrix is hundreds of
 * times larger than X and Y and the product is a stream of the weights
 * through the tensor cores.
 *
 * Why our own: cuBLASLt's kernels for these shapes stream the weights at
 * 1-2 TB/s and cannot start before the previous kernel ends. Here every CTA
 * loads its first weight tiles before it waits for the previous kernel
 * (programmatic dependent launch: the weights never depend on it), and the
 * ReLU², softcap and residual add are epilogues instead of separate passes.
 * H100, d34, in the decode graph: batch 2 +5%, 8 +3%, 32 +1%, 64 at par
 * (dev/kernels/NOTES.md); at 65..128 rows cuBLASLt stays faster, so larger
 * products go there.
 *
 * CTA = 128 weight rows (two consumer warpgroups of 64) x one K range, plus
 * one producer warp. The producer streams [128 x 64] weight tiles and the
 * matching [NT x 64] X tiles with TMA (128-byte swizzle) into a ring of
 * stages guarded by full / empty mbarriers; each consumer warpgroup runs
 * wgmma m64nNTk16 (NT = the token count rounded up to 16, 32 or 64) with
 * both operands in shared memory. Token rows past N and weight rows past M
 * arrive as zeros (TMA fills outside the tensor) and are not stored.
 *
 * One CTA per SM with the deepest ring that still leaves ~30 KB of shared
 * memory to the CTAs of the next kernels, which PDL starts beside it
 * (taking all 227 KB for the ring cost 4% at batch 64).
 *
 * Split-K: a matrix with few 128-row tiles (d34's attention and MLP
 * projections: 17) has its K range split over a thread-block cluster of
 * S <= 8 CTAs, sized so that every cluster is resident at once. Each CTA
 * writes its fp32 partial tile to its own shared memory; after a cluster
 * barrier every CTA sums a 1/S slice of the tile over all S partials,
 * always in split order (distributed shared memory), and applies the
 * epilogue: deterministic, no workspace, and a row's result does not depend
 * on how many other rows are in the batch.
 *
 * 8-bit weights (int8 / e4m3, docs/quantization.md): the weight tile is
 * [128 rows x 128 k] bytes (the same 128-byte swizzled rows, twice the k
 * per stage; the X tile is two [NT x 64] boxes), and the consumers widen
 * it in registers: per k16 step each thread reads the 16-byte chunk of its
 * two rows (the four threads of a row read the same chunk: a broadcast,
 * and the swizzle puts the 8 rows of a warp in distinct banks), keeps its
 * 2 + 2 bytes, widens them exactly to bf16 (cuda_q8.cuh) and issues wgmma
 * with A from registers. The row scale multiplies the finished sums in the
 * epilogue. Past 64 rows the grid has a third dimension of 128-token tiles
 * (prefill chunks, 65+ row batches): each re-reads the weight strip, from
 * L2 for every matrix but the lm_head.
 *
 * fp8 weights with e4m3 input rows (NC_CUDA_FP8_ACT, 65+ rows; the rows
 * quantised with one scale each by nc_cuda_quant_rows_e4m3): both tiles
 * are e4m3 [rows x 128 k] bytes, one TMA box each, and the consumers run
 * wgmma m64nNk32 e4m3 x e4m3 (N = 128 tokens, 256 from 256 rows) with both
 * operands in shared memory (the fp8 tensor cores: twice bf16's rate, no
 * widening), keeping one stage's MMAs in flight; the epilogue multiplies
 * by the weight row's scale times the token row's. cuBLASLt has no fp8
 * product with per-row scales on both sides on sm_90. On an H100 it runs
 * at 0.81x bf16's prefill (dev/kernels/NOTES.md, session 9: bound by its
 * schedule, tensor pipe 32-37% busy).
 */
#include <cuda.h>
#include <cudaTypedefs.h>
#include <stdlib.h>

#include "cuda_hopper.cuh"
#include "cuda_q8.cuh"
#include "cuda_rope.cuh"

#define SK_BM 128                /* weight rows (outputs) per CTA: two consumer warpgroups of 64 */
#define SK_BK 64                 /* k per stage: one 128-byte swizzled row */
#define SK_THREADS 288           /* 2 consumer warpgroups + 1 producer warp */
#define SK_MAX_ROWS 64           /* token rows: wgmma N of the largest variant */
#define SK_MAX_SPLITS 8          /* split-K CTAs per cluster (the portable cluster size) */
#define SK_MIN_KTILES 4          /* fewest 64-wide k-tiles per split */
#define SK_SMEM_BUDGET (196 * 1024) /* shared memory per CTA (see the top of the file) */
#define SK_FP8_ACT 3             /* the kernels' format code for fp8 weights x e4m3 input rows */

/* NT: token rows per tile (wgmma N); FMT: the weights' nc_cuda_weight_format,
 * or SK_FP8_ACT. */
template <int NT, int FMT>
struct sk_cfg {
    static constexpr bool Q8 = FMT != NC_WEIGHT_BF16;                   /* 8-bit weights */
    static constexpr bool X8 = FMT == SK_FP8_ACT;                       /* and e4m3 input rows */
    static constexpr int BK = Q8 ? 2 * SK_BK : SK_BK;                  /* k per stage: a 128-byte weight row */
    static constexpr int A_BYTES = SK_BM * 128;                         /* weight tile */
    static constexpr int X_BOXES = X8 ? 1 : BK / SK_BK;                 /* 128-byte boxes per X row and stage */
    static constexpr int B_BYTES = NT * 128 * X_BOXES;                  /* X tile */
    static constexpr int STAGE = A_BYTES + B_BYTES;                     /* a multiple of 1024 (swizzle atoms) */
    static constexpr int STAGES = (SK_SMEM_BUDGET - 1024) / (STAGE + 16); /* bf16: 10 / 9 / 8 at NT 16 / 32 / 64 */
    static constexpr int RS = SK_BM + 4; /* floats per token row of the reduction tile (+4: bank spread) */
    static constexpr int SMEM = 1024 + STAGES * STAGE + 2 * STAGES * 8;
    static_assert(NT * RS * 4 <= STAGES * STAGE, "the reduction tile reuses the ring");
};

typedef struct {
    int M, N, K, KT;      /* Y [N, M] = X [N, K] · W [M, K]ᵀ; KT = ceil(K / BK) */
    nc_cuda_epilogue epi;
    void *y;              /* bf16 (STORE, RELU2) or fp32 (ADD, SOFTCAP), row stride M */
    float cap;
    const float *scale;   /* [M] row scales of 8-bit weights */
    const float *xscale;  /* [N] row scales of e4m3 input rows (SK_FP8_ACT) */
    bool roped;           /* the qkv product: RoPE + append of each stored row's head (rope) */
    nc_rope_args rope;
} sk_args;

/* The A fragments of one k16 step of 8-bit weights: rows r and r + 8 of
 * the stage's swizzled [128 x 128] byte tile (r % 8 == g), k 16 kk + 2tq,
 * +1 (a[0], a[1]) and 16 kk + 8 + 2tq, +1 (a[2], a[3]). */
template <int FMT>
__device__ __forceinline__ void sk_q8_frag(unsigned tile, int r, int kk, int g, int tq, unsigned *a) {
#pragma unroll
    for (int h = 0; h < 2; h++) nc_q8_frag_row<FMT>(tile + (r + 8 * h) * 128 + ((kk ^ g) << 4), tq, a[h], a[2 + h]);
}

template <int NT, int FMT>
__global__ void __launch_bounds__(SK_THREADS, 1) skinny_gemm_kernel(const __grid_constant__ CUtensorMap wmap,
                                                                    const __grid_constant__ CUtensorMap xmap,
                                                                    sk_args a) {
#ifdef NC_HAVE_WGMMA
    using C = sk_cfg<NT, FMT>;
    extern __shared__ __align__(16) unsigned char smem[];
    nc_pdl_trigger();
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const unsigned raw = (unsigned)__cvta_generic_to_shared(smem), ring = (raw + 1023u) & ~1023u;
    const unsigned bars = ring + C::STAGES * C::STAGE;
#define FULL(s) (bars + (s) * 8)
#define EMPTY(s) (bars + (C::STAGES + (s)) * 8)
#define STAGE_A(s) (ring + (s) * C::STAGE)
#define STAGE_B(s) (ring + (s) * C::STAGE + C::A_BYTES)
    const int S = gridDim.y, split = blockIdx.y, m0 = blockIdx.x * SK_BM, n0 = blockIdx.z * NT;
    const int kt0 = (int)((int64_t)split * a.KT / S), nk = (int)((int64_t)(split + 1) * a.KT / S) - kt0;
    if (tid == 0) {
        for (int s = 0; s < C::STAGES; s++) {
            mbar_init(FULL(s), 1);  /* the producer's arrive + the TMA bytes */
            mbar_init(EMPTY(s), 8); /* lane 0 of each consumer warp */
        }
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    __syncthreads();

    float d[NT / 2];
    if (warp == 8) {
        if (lane == 0) { /* producer */
            int pre = min(C::STAGES, nk);
            for (int i = 0; i < pre; i++) { /* weights first: they do not depend on the previous kernel */
                mbar_arrive_expect_tx(FULL(i), C::STAGE);
                tma_load_2d(STAGE_A(i), &wmap, (kt0 + i) * C::BK, m0, FULL(i));
            }
            nc_pdl_wait();
            for (int i = 0; i < pre; i++)
#pragma unroll
                for (int h = 0; h < C::X_BOXES; h++)
                    tma_load_2d(STAGE_B(i) + h * NT * 128, &xmap, (kt0 + i) * C::BK + h * SK_BK, n0, FULL(i));
            for (int i = pre; i < nk; i++) {
                int s = i % C::STAGES;
                mbar_wait(EMPTY(s), (i / C::STAGES - 1) & 1);
                mbar_arrive_expect_tx(FULL(s), C::STAGE);
                tma_load_2d(STAGE_A(s), &wmap, (kt0 + i) * C::BK, m0, FULL(s));
#pragma unroll
                for (int h = 0; h < C::X_BOXES; h++)
                    tma_load_2d(STAGE_B(s) + h * NT * 128, &xmap, (kt0 + i) * C::BK + h * SK_BK, n0, FULL(s));
            }
        }
    } else { /* consumers: warpgroup wg owns weight rows m0 + 64 wg .. + 63 */
        const int wg = warp >> 2;
#pragma unroll
        for (int i = 0; i < NT / 2; i++) d[i] = 0.0f;
        for (int i = 0; i < nk; i++) {
            int s = i % C::STAGES;
            mbar_wait(FULL(s), (i / C::STAGES) & 1);
            unsigned sa = STAGE_A(s) + wg * 64 * 128, sb = STAGE_B(s);
            if constexpr (C::X8) { /* four k32 steps of e4m3 x e4m3 */
                static_assert(NT == 128 || NT == 256, "e4m3 input rows come in 128- or 256-token tiles");
                wg_fence_regs<NT / 2>(d);
                wg_fence();
#pragma unroll
                for (int kk = 0; kk < 4; kk++) wgmma_ss_e4m3<NT>(d, wg_desc(sa + kk * 32, 16), wg_desc(sb + kk * 32, 16), 1);
            } else if constexpr (C::Q8) {
                const int g = lane >> 2, tq = lane & 3, r = (warp & 3) * 16 + g;
                unsigned af[8][4];
#pragma unroll
                for (int kk = 0; kk < 8; kk++) sk_q8_frag<FMT>(sa, r, kk, g, tq, af[kk]);
                wg_fence_regs<NT / 2>(d);
                wg_fence();
#pragma unroll
                for (int kk = 0; kk < 8; kk++)
                    wgmma_rs<NT, 0>(d, af[kk], wg_desc(sb + (kk >> 2) * NT * 128 + (kk & 3) * 32, 16));
            } else {
                wg_fence_regs<NT / 2>(d);
                wg_fence();
#pragma unroll
                for (int kk = 0; kk < SK_BK / 16; kk++)
                    wgmma_ss<NT>(d, wg_desc(sa + kk * 32, 16), wg_desc(sb + kk * 32, 16), 1);
            }
            wg_commit();
            if constexpr (C::X8) { /* keep this stage's MMAs in flight, release the previous stage */
                wg_wait<1>();
                wg_fence_regs<NT / 2>(d);
                __syncwarp();
                if (i > 0 && lane == 0) mbar_arrive(EMPTY((i + C::STAGES - 1) % C::STAGES));
            } else {
                wg_wait<0>();
                wg_fence_regs<NT / 2>(d);
                __syncwarp();
                if (lane == 0) mbar_arrive(EMPTY(s));
            }
        }
        if constexpr (C::X8) {
            wg_wait<0>();
            wg_fence_regs<NT / 2>(d);
        }
    }
#undef FULL
#undef EMPTY
#undef STAGE_A
#undef STAGE_B
    nc_pdl_wait();   /* the epilogue touches buffers earlier kernels use (x for the residual add) */
    __syncthreads(); /* every MMA is done with the ring: it becomes the reduction tile [NT][RS] */
    float *tile = (float *)(smem + (ring - raw));
    if (warp < 8) {
        const int row = (warp >> 2) * 64 + (warp & 3) * 16 + (lane >> 2), tq = lane & 3;
#pragma unroll
        for (int i = 0; i < NT / 8; i++) {
            int col = 8 * i + 2 * tq;
            tile[col * C::RS + row] = d[4 * i];
            tile[(col + 1) * C::RS + row] = d[4 * i + 1];
            tile[col * C::RS + row + 8] = d[4 * i + 2];
            tile[(col + 1) * C::RS + row + 8] = d[4 * i + 3];
        }
    }
    if (S > 1) cluster_sync();
    else __syncthreads();

    /* this CTA's slice of the [NT][128] output tile, 4 outputs per item */
    const int items = NT * (SK_BM / 4);
    const int rank = S > 1 ? (int)cluster_rank() : 0;
    const int i1 = (rank + 1) * items / S;
    for (int i = rank * items / S + tid; i < i1; i += SK_THREADS) {
        int n = i / (SK_BM / 4), mi = (i % (SK_BM / 4)) * 4, m = m0 + mi;
        if (n0 + n >= a.N || m >= a.M) continue;
        unsigned addr = ring + (unsigned)(n * C::RS + mi) * 4;
        float4 v;
        if (S > 1) {
            v = ld_dsmem_f4(addr, 0);
            for (int p = 1; p < S; p++) {
                float4 t = ld_dsmem_f4(addr, p);
                v.x += t.x, v.y += t.y, v.z += t.z, v.w += t.w;
            }
        } else {
            v = *(const float4 *)&tile[n * C::RS + mi];
        }
        if constexpr (C::Q8) {
            float4 sc = __ldg((const float4 *)(a.scale + m));
            if constexpr (C::X8) {
                float xs = __ldg(a.xscale + n0 + n);
                sc.x *= xs, sc.y *= xs, sc.z *= xs, sc.w *= xs;
            }
            v.x *= sc.x, v.y *= sc.y, v.z *= sc.z, v.w *= sc.w;
        }
        size_t o = (size_t)(n0 + n) * a.M + m;
        if (a.epi == NC_EPI_ADD) {
            float4 *y = (float4 *)((float *)a.y + o), t = *y;
            t.x += v.x, t.y += v.y, t.z += v.z, t.w += v.w;
            *y = t;
        } else if (a.epi == NC_EPI_SOFTCAP) {
            float c = a.cap;
            *(float4 *)((float *)a.y + o) =
                make_float4(c * tanhf(v.x / c), c * tanhf(v.y / c), c * tanhf(v.z / c), c * tanhf(v.w / c));
        } else {
            __nv_bfloat162 lo = __floats2bfloat162_rn(v.x, v.y), hi = __floats2bfloat162_rn(v.z, v.w);
            if (a.epi == NC_EPI_RELU2) { /* nanochat: relu(bf16 linear output).square() in bf16 */
                float2 l = __bfloat1622float2(lo), h = __bfloat1622float2(hi);
                l.x = fmaxf(l.x, 0.0f), l.y = fmaxf(l.y, 0.0f), h.x = fmaxf(h.x, 0.0f), h.y = fmaxf(h.y, 0.0f);
                lo = __floats2bfloat162_rn(l.x * l.x, l.y * l.y);
                hi = __floats2bfloat162_rn(h.x * h.x, h.y * h.y);
            }
            uint2 u;
            u.x = *(unsigned *)&lo, u.y = *(unsigned *)&hi;
            *(uint2 *)((bf16 *)a.y + o) = u;
            if (a.roped) { /* this warp stored token row n0 + n of head blockIdx.x whole (sk_rope_ok) */
                int t = n0 + n, hh = blockIdx.x;
                __syncwarp();
                nc_rope_head<bf16>(a.rope, t, hh, lane,
                                   hh < a.rope.H ? a.rope.q + ((size_t)t * a.rope.H + hh) * NC_HEAD_DIM : NULL);
            }
        }
    }
    if (S > 1) cluster_sync(); /* peers keep their partial tiles until every slice is read */
#else
    __trap(); /* built without sm_90a: nc_cuda_skinny_init does not enable this path */
#endif /* NC_HAVE_WGMMA */
}

/* ==== host side ==== */

/* Variants: (format, NT). v = 4 * format + NT index nt: NT = 16 << nt
 * (16, 32, 64, 128); bf16 has no 128-token tiles (cuBLASLt serves its 65+
 * rows); e4m3 input rows (SK_FP8_ACT) come in 128 (nt 3) and 256 (nt 2)
 * token tiles only. */
#define SK_VARIANTS 16

static bool sk_exists(int v) {
    return v / 4 == SK_FP8_ACT ? v % 4 >= 2 : v % 4 != 3 || v / 4 != NC_WEIGHT_BF16;
}

/* The instantiation of variant v, as a type: sk_variant<NT, FMT>. */
template <int NT_, int FMT_>
struct sk_variant {
    static constexpr int NT = NT_, FMT = FMT_;
};

/* f(sk_variant<NT, FMT>{}) for NT index nt of format FMT; bf16 has no nt 3
 * (it falls back to 64, never asked for). The one place that maps indices
 * to instantiations: the kernel, its shared memory and its launch all go
 * through sk_visit. */
template <int FMT, typename F>
static auto sk_visit_nt(int nt, F f) {
    if constexpr (FMT == SK_FP8_ACT) {
        return nt == 2 ? f(sk_variant<256, FMT>{}) : f(sk_variant<128, FMT>{});
    } else {
        if constexpr (FMT != NC_WEIGHT_BF16)
            if (nt == 3) return f(sk_variant<128, FMT>{});
        switch (nt) {
        case 0: return f(sk_variant<16, FMT>{});
        case 1: return f(sk_variant<32, FMT>{});
        default: return f(sk_variant<64, FMT>{});
        }
    }
}

template <typename F>
static auto sk_visit(int v, F f) {
    switch (v / 4) {
    case NC_WEIGHT_BF16: return sk_visit_nt<NC_WEIGHT_BF16>(v % 4, f);
    case NC_WEIGHT_INT8: return sk_visit_nt<NC_WEIGHT_INT8>(v % 4, f);
    case NC_WEIGHT_FP8: return sk_visit_nt<NC_WEIGHT_FP8>(v % 4, f);
    default: return sk_visit_nt<SK_FP8_ACT>(v % 4, f);
    }
}

static const void *sk_kernel(int v) {
    return sk_visit(v, [](auto t) { return (const void *)skinny_gemm_kernel<decltype(t)::NT, decltype(t)::FMT>; });
}

static int sk_smem(int v) {
    return sk_visit(v, [](auto t) { return sk_cfg<decltype(t)::NT, decltype(t)::FMT>::SMEM; });
}

static int sk_tile_rows(int v) {
    return sk_visit(v, [](auto t) { return decltype(t)::NT; });
}

struct nc_cuda_skinny_state {
    PFN_cuTensorMapEncodeTiled_v12000 encode;
    /* clusters[v][s]: clusters of s CTAs of variant v that fit on the
     * device at once (GPC boundaries make it less than the SM count / s) */
    int clusters[SK_VARIANTS][SK_MAX_SPLITS + 1];
    bool q8;     /* the 8-bit variants could be set up (else the mma.sync GEMM serves 8-bit weights) */
    bool x8;     /* the e4m3 x e4m3 variant could be set up (else cuBLASLt, where it has one) */
};

/* clusters of `size` CTAs of variant v resident at once */
static cudaError_t sk_max_clusters(int v, int size, int *out) {
    cudaLaunchConfig_t cfg = {};
    cudaLaunchAttribute at;
    at.id = cudaLaunchAttributeClusterDimension;
    at.val.clusterDim.x = 1, at.val.clusterDim.y = (unsigned)size, at.val.clusterDim.z = 1;
    cfg.gridDim = dim3(1, (unsigned)size);
    cfg.blockDim = dim3(SK_THREADS);
    cfg.dynamicSmemBytes = (size_t)sk_smem(v);
    cfg.attrs = &at;
    cfg.numAttrs = 1;
    return cudaOccupancyMaxActiveClusters(out, sk_kernel(v), &cfg);
}

int nc_cuda_skinny_init(nc_cuda *cu) {
    cu->skinny = NULL;
    if (!cu->env.cuda_skinny) return 0; /* NC_CUDA_SKINNY=0: cuBLASLt / the mma.sync GEMM, for comparisons */
    /* wgmma + TMA need this binary's sm_90a code on an sm_90 device (a
     * build for other architectures only has the trapping stub) */
    if (!cu->have_wgmma) return 0;
    void *fn = NULL;
    cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess || !fn) {
        cudaGetLastError();
        return 0; /* a driver without TMA descriptors: cuBLASLt serves every batch */
    }
    nc_cuda_skinny_state *sk = (nc_cuda_skinny_state *)nc_xcalloc(1, sizeof *sk);
    sk->encode = (PFN_cuTensorMapEncodeTiled_v12000)fn;
    sk->q8 = sk->x8 = true;
    for (int v = 0; v < SK_VARIANTS; v++) {
        if (!sk_exists(v)) continue;
        int per_sm = 0;
        cudaError_t e = cudaFuncSetAttribute(sk_kernel(v), cudaFuncAttributeMaxDynamicSharedMemorySize, sk_smem(v));
        if (e == cudaSuccess)
            e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, sk_kernel(v), SK_THREADS, sk_smem(v));
        sk->clusters[v][1] = per_sm * cu->sm_count;
        for (int s = 2; s <= SK_MAX_SPLITS && e == cudaSuccess; s++) e = sk_max_clusters(v, s, &sk->clusters[v][s]);
        if (e != cudaSuccess || per_sm < 1) { /* an optional fast path: cuBLASLt / the mma.sync GEMM instead */
            cudaGetLastError();
            if (v / 4 == SK_FP8_ACT) {
                sk->x8 = false;
                continue;
            }
            if (v / 4 != NC_WEIGHT_BF16) {
                sk->q8 = false;
                continue;
            }
            free(sk);
            return 0;
        }
    }
    cu->skinny = sk;
    return 0;
}

void nc_cuda_skinny_free(nc_cuda *cu) {
    free(cu->skinny);
    cu->skinny = NULL;
}

bool nc_cuda_skinny_fits(const nc_cuda *cu, const nc_cuda_weight *w, const void *X, const void *Y, int n) {
    /* TMA: 16-byte aligned bases and row strides; the epilogue stores 4
     * outputs at a time */
    bool ok = w->format == NC_WEIGHT_BF16 ? n <= SK_MAX_ROWS : cu->skinny && cu->skinny->q8;
    return cu->skinny && n >= 2 && ok && w->rows % 8 == 0 && w->cols % 16 == 0 &&
           ((uintptr_t)w->data & 15) == 0 && ((uintptr_t)X & 15) == 0 && ((uintptr_t)Y & 15) == 0;
}

/* A 2-D tensor [rows, k] of `type` (row stride k elements of `elem`
 * bytes) read in [box_rows, 128-byte] boxes. */
static int sk_map(const nc_cuda_skinny_state *sk, CUtensorMap *map, CUtensorMapDataType type, size_t elem,
                  const void *base, int rows, int k, int box_rows) {
    cuuint64_t dims[2] = {(cuuint64_t)k, (cuuint64_t)rows}, strides[1] = {(cuuint64_t)k * elem};
    cuuint32_t box[2] = {(cuuint32_t)(128 / elem), (cuuint32_t)box_rows}, el[2] = {1, 1};
    CUresult r = sk->encode(map, type, 2, (void *)base, dims, strides, box, el, CU_TENSOR_MAP_INTERLEAVE_NONE,
                            CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS)
        return nc_fail("cuda: encoding a TMA descriptor for a %d x %d matrix failed (%d)", rows, k, (int)r);
    return 0;
}

/* The launch shape of a product of w with n rows in format fmt: variant v,
 * token tiles, split-K count and k-tiles. */
typedef struct {
    int v, tiles, splits, KT;
} sk_plan;

static sk_plan sk_plan_of(const nc_cuda_skinny_state *sk, const nc_cuda_weight *w, int fmt, int n) {
    bool q8 = fmt != NC_WEIGHT_BF16, x8 = fmt == SK_FP8_ACT;
    /* e4m3 rows: 256-token tiles (half the weight re-reads and shared-memory
     * fills per MMA) once there are 256 rows */
    int nt = x8 ? (n >= 256 ? 2 : 3) : n <= 16 ? 0 : n <= 32 ? 1 : n <= 64 ? 2 : 3;
    sk_plan p;
    p.v = 4 * fmt + nt;
    int rows_per_tile = sk_tile_rows(p.v), bk = q8 ? 2 * SK_BK : SK_BK, m_tiles = (w->rows + SK_BM - 1) / SK_BM;
    p.tiles = (n + rows_per_tile - 1) / rows_per_tile;
    p.KT = (w->cols + bk - 1) / bk;
    /* splits: as many as keep every cluster resident at once (so all CTAs
     * prefetch before the previous kernel ends), each with >= 4 k-tiles;
     * token tiles bring CTAs enough */
    p.splits = p.tiles > 1 ? 1 : NC_MIN(SK_MAX_SPLITS, p.KT / SK_MIN_KTILES);
    while (p.splits > 1 && m_tiles > sk->clusters[p.v][p.splits]) p.splits--;
    p.splits = NC_MAX(p.splits, 1);
    return p;
}

/* Whether the qkv product can do RoPE + append in its epilogue: one token
 * tile whose rows the S CTAs of a cluster share evenly (rank r finishes rows
 * r * NT / S .. (r + 1) * NT / S - 1, a warp per row: 32 items of 4 outputs
 * = one 128-row head), at most one row per warp. More rows per warp queue
 * up at the kernel's tail, where the rope_append kernel spreads them over
 * the GPU: on an H100 (d34, session 10) the epilogue gained 3% at 2 and 8
 * rows (8 per CTA) and lost 1.4% at 32 (16), 1% at 128 and 2% on an int8
 * prefill. */
static bool sk_rope_ok(const sk_plan *p) {
    int rows = sk_tile_rows(p->v);
    return p->tiles == 1 && rows % p->splits == 0 && rows / p->splits <= SK_THREADS / 32;
}

/* The product of a weight matrix with n input rows X (bf16, or e4m3 with
 * row scales xscale: fmt SK_FP8_ACT); rope: the qkv product, RoPE + append
 * in the epilogue (sk_rope_ok). */
static int sk_gemm(nc_cuda *cu, const nc_cuda_weight *w, int fmt, const void *X, const float *xscale, void *Y, int n,
                   nc_cuda_epilogue epi, const nc_rope_args *rope) {
    const nc_cuda_skinny_state *sk = cu->skinny;
    int m = w->rows, k = w->cols;
    bool q8 = fmt != NC_WEIGHT_BF16, x8 = fmt == SK_FP8_ACT;
    sk_plan p = sk_plan_of(sk, w, fmt, n);
    int v = p.v, rows_per_tile = sk_tile_rows(v), tiles = p.tiles, splits = p.splits;
    sk_args a = {m, n, k, p.KT, epi, Y, cu->cfg.softcap, w->scale, xscale, rope != NULL};
    if (rope) {
        NC_ASSERT(sk_rope_ok(&p) && epi == NC_EPI_STORE && m % SK_BM == 0 && rope->qkv == Y);
        a.rope = *rope;
    }
    int m_tiles = (m + SK_BM - 1) / SK_BM;
    CUtensorMap wmap, xmap;
    if (sk_map(sk, &wmap, q8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, q8 ? 1 : 2, w->data,
               m, k, SK_BM) ||
        sk_map(sk, &xmap, x8 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, x8 ? 1 : 2, X, n, k,
               rows_per_tile))
        return -1;

    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)m_tiles, (unsigned)splits, (unsigned)tiles);
    cfg.blockDim = dim3(SK_THREADS);
    cfg.dynamicSmemBytes = (size_t)sk_smem(v);
    cfg.stream = cu->stream;
    cudaLaunchAttribute at[2];
    int na = 0;
    if (cu->pdl) {
        at[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[na++].val.programmaticStreamSerializationAllowed = 1;
    }
    if (splits > 1) {
        at[na].id = cudaLaunchAttributeClusterDimension;
        at[na].val.clusterDim.x = 1, at[na].val.clusterDim.y = (unsigned)splits, at[na].val.clusterDim.z = 1;
        na++;
    }
    cfg.attrs = at;
    cfg.numAttrs = (unsigned)na;
    cudaError_t e = sk_visit(v, [&](auto t) {
        return cudaLaunchKernelEx(&cfg, skinny_gemm_kernel<decltype(t)::NT, decltype(t)::FMT>, wmap, xmap, a);
    });
    if (e != cudaSuccess)
        return nc_fail("cuda: launching the skinny GEMM (%d x %d x %d): %s", m, n, k, cudaGetErrorString(e));
    return 0;
}

int nc_cuda_skinny_gemm(nc_cuda *cu, const nc_cuda_weight *w, const bf16 *X, void *Y, int n, nc_cuda_epilogue epi) {
    NC_ASSERT(nc_cuda_skinny_fits(cu, w, X, Y, n));
    return sk_gemm(cu, w, (int)w->format, X, NULL, Y, n, epi, NULL);
}

bool nc_cuda_skinny_rope_fits(const nc_cuda *cu, const nc_cuda_weight *w, const void *X, const void *Y, int n) {
    if (!nc_cuda_skinny_fits(cu, w, X, Y, n)) return false;
    sk_plan p = sk_plan_of(cu->skinny, w, (int)w->format, n);
    return sk_rope_ok(&p);
}

int nc_cuda_skinny_gemm_rope(nc_cuda *cu, const nc_cuda_weight *w, const bf16 *X, void *Y, int n,
                             const nc_rope_args *rope) {
    NC_ASSERT(nc_cuda_skinny_rope_fits(cu, w, X, Y, n));
    return sk_gemm(cu, w, (int)w->format, X, NULL, Y, n, NC_EPI_STORE, rope);
}

bool nc_cuda_skinny_fp8_act_ready(const nc_cuda *cu) { return cu->skinny && cu->skinny->x8; }

int nc_cuda_skinny_gemm_fp8_act(nc_cuda *cu, const nc_cuda_weight *w, const uint8_t *X8, const float *xscale, void *Y,
                                int n, nc_cuda_epilogue epi) {
    NC_ASSERT(nc_cuda_skinny_fp8_act_ready(cu) && w->format == NC_WEIGHT_FP8 && xscale);
    NC_ASSERT(nc_cuda_skinny_fits(cu, w, X8, Y, n)); /* shapes and alignment as for bf16 rows */
    return sk_gemm(cu, w, SK_FP8_ACT, X8, xscale, Y, n, epi, NULL);
}

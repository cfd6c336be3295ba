/*
 * cuda_gemm_q8.cu: Y = X · Wᵀ on the tensor cores with mma.sync, for any
 * row count: 8-bit weights (int8, or e4m3 on sm_89+; docs/quantization.md)
 * on sm_80 (Ampere, Ada), and on Hopper whatever the wgmma skinny GEMM
 * (cuda_gemm_skinny.cu) does not take (NC_CUDA_SKINNY=0, odd shapes); and
 * under --deterministic every product of every row count, bf16 weights too
 * (docs/performance.md, Batch invariance). cuBLASLt has no weight-only
 * int8 / fp8 product with per-row scales, and the weights are never widened
 * to a bf16 copy in memory: they are widened on the way from shared memory
 * into the MMA's registers.
 *
 * CTA = 128 weight rows x 64 token rows, 8 warps as 4 (32 weight rows) x 2
 * (32 tokens), each warp 2 x 4 mma m16n8k16 (bf16 in, fp32 accumulate) per
 * k16 step. A 3-stage cp.async ring of [128 x 64] weight tiles (rows padded
 * to 80 bytes for 8-bit, 144 for bf16) and [64 x 64] bf16 X tiles (rows
 * padded to 72 values). 8-bit A fragments: the four threads of a row read
 * the same 16-byte chunk (a broadcast; the 80-byte rows put a warp's 8 rows
 * in distinct banks), keep their 2 + 2 bytes and widen them exactly to bf16
 * (cuda_q8.cuh); bf16 ones are two 32-bit reads (the 144-byte rows: 32
 * distinct banks). B fragments by ldmatrix. The row scale multiplies the
 * finished sums, then the epilogue (store / residual add / ReLU² / softcap,
 * as the other GEMMs).
 *
 * Batch invariance: there is no split-K. Every output is one warp's
 * accumulator, fed one mma per 16 values of k in increasing k, whatever
 * the number of token rows, the tile a row lands in or the rows beside it
 * (rows past N are zeros in other accumulator lanes), so a row's outputs
 * are the same bits in a product of 1 row or of 2048.
 */
#include "cuda_q8.cuh"

#define QG_BM 128
#define QG_BN 64
#define QG_BK 64
#define QG_THREADS 256
#define QG_STAGES 3
#define QG_XROW 72 /* bf16 per X row in shared memory */
#define QG_XBYTES (QG_BN * QG_XROW * 2)

/* Bytes per weight value, per padded weight row in shared memory, per
 * weight tile, and the kernel's shared memory, for weight format FMT. */
template <int FMT>
struct qg_shape {
    static constexpr int EB = FMT == NC_WEIGHT_BF16 ? 2 : 1;
    static constexpr int WROW = QG_BK * EB + 16;
    static constexpr int WBYTES = QG_BM * WROW;
    static constexpr int SMEM = QG_STAGES * (WBYTES + QG_XBYTES);
};

__device__ __forceinline__ void qg_cp16(unsigned s, const void *g, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(s), "l"(g), "r"(ok ? 16 : 0));
}

/* One stage: weight rows m0.. (values k0 .. k0+63) and X rows n0.. (k0 ..
 * k0+63); rows past M / N arrive as zeros. */
template <int FMT>
__device__ __forceinline__ void qg_load(unsigned ws, unsigned xs, const uint8_t *W, const bf16 *X, int M, int N,
                                        int K, int m0, int n0, int k0, int tid) {
    using S = qg_shape<FMT>;
    constexpr int CPR = QG_BK * S::EB / 16; /* 16-byte chunks per weight row */
#pragma unroll
    for (int i = 0; i < QG_BM * CPR / QG_THREADS; i++) {
        int c = tid + i * QG_THREADS, r = c / CPR, col = (c % CPR) * 16;
        bool ok = m0 + r < M;
        qg_cp16(ws + r * S::WROW + col, ok ? W + ((size_t)(m0 + r) * K + k0) * S::EB + col : W, ok);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {
        int c = tid + i * QG_THREADS, r = c >> 3, col = (c & 7) * 8;
        bool ok = n0 + r < N;
        qg_cp16(xs + (r * QG_XROW + col) * 2, ok ? X + (size_t)(n0 + r) * K + k0 + col : X, ok);
    }
    asm volatile("cp.async.commit_group;");
}

/* The two A-fragment registers of one weight row and k16 step (k 2tq, 2tq+1
 * and 8 + 2tq, +1 as bf16 pairs) from the row's step at shared address
 * `addr`. */
template <int FMT>
__device__ __forceinline__ void qg_frag_row(unsigned addr, int tq, unsigned &lo, unsigned &hi) {
    if constexpr (FMT == NC_WEIGHT_BF16) {
        asm volatile("ld.shared.u32 %0, [%1];" : "=r"(lo) : "r"(addr + 4 * tq));
        asm volatile("ld.shared.u32 %0, [%1];" : "=r"(hi) : "r"(addr + 16 + 4 * tq));
    } else {
        nc_q8_frag_row<FMT>(addr, tq, lo, hi);
    }
}

template <int FMT>
__global__ void __launch_bounds__(QG_THREADS) mma_gemm_kernel(const uint8_t *__restrict__ W,
                                                             const float *__restrict__ scale,
                                                             const bf16 *__restrict__ X, void *Y, int M, int N,
                                                             int K, int epi, float cap) {
    extern __shared__ __align__(16) unsigned char smem[];
    nc_pdl_trigger();
    nc_pdl_wait(); /* X, and Y for the residual add, come from earlier kernels */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, tq = lane & 3;
    const int wm = warp & 3, wn = warp >> 2, m0 = blockIdx.x * QG_BM, n0 = blockIdx.y * QG_BN;
    const unsigned base = (unsigned)__cvta_generic_to_shared(smem);
    const int KT = K / QG_BK;
    using S = qg_shape<FMT>;
#define WS(s) (base + (s) * (S::WBYTES + QG_XBYTES))
#define XS(s) (WS(s) + S::WBYTES)
#pragma unroll
    for (int s = 0; s < QG_STAGES - 1; s++) {
        if (s < KT) qg_load<FMT>(WS(s), XS(s), W, X, M, N, K, m0, n0, s * QG_BK, tid);
        else asm volatile("cp.async.commit_group;");
    }
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
    /* ldmatrix rows: tokens wn*32 + 16 np + (lane & 7) + 8 (lane >> 4), k half (lane >> 3) & 1 */
    const unsigned xl = ((wn * 32 + (lane & 7) + (lane >> 4) * 8) * QG_XROW + ((lane >> 3) & 1) * 8) * 2;
    for (int kt = 0; kt < KT; kt++) {
        asm volatile("cp.async.wait_group %0;" ::"n"(QG_STAGES - 2));
        __syncthreads(); /* stage kt landed for every thread; stage kt - 1 is free */
        int nk = kt + QG_STAGES - 1;
        if (nk < KT) qg_load<FMT>(WS(nk % QG_STAGES), XS(nk % QG_STAGES), W, X, M, N, K, m0, n0, nk * QG_BK, tid);
        else asm volatile("cp.async.commit_group;");
        const unsigned ws = WS(kt % QG_STAGES), xs = XS(kt % QG_STAGES);
#pragma unroll
        for (int kk = 0; kk < QG_BK / 16; kk++) {
            unsigned a[2][4];
#pragma unroll
            for (int mt = 0; mt < 2; mt++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    qg_frag_row<FMT>(ws + (wm * 32 + mt * 16 + g + 8 * h) * S::WROW + kk * 16 * S::EB, tq,
                                     a[mt][h], a[mt][2 + h]);
#pragma unroll
            for (int np = 0; np < 2; np++) {
                unsigned b[4];
                asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                             : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                             : "r"(xs + xl + (np * 16 * QG_XROW + kk * 16) * 2));
#pragma unroll
                for (int mt = 0; mt < 2; mt++) {
                    nc_mma_bf16(acc[mt][2 * np], a[mt], b[0], b[1]);
                    nc_mma_bf16(acc[mt][2 * np + 1], a[mt], b[2], b[3]);
                }
            }
        }
    }
#undef WS
#undef XS
    asm volatile("cp.async.wait_group 0;");
    /* acc[mt][nt][i]: weight row m0 + 32 wm + 16 mt + g + 8 (i >> 1), token
     * n0 + 32 wn + 8 nt + 2 tq + (i & 1) */
#pragma unroll
    for (int mt = 0; mt < 2; mt++)
#pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            int m = m0 + wm * 32 + mt * 16 + g + 8 * hf;
            if (m >= M) continue;
            float sc = FMT == NC_WEIGHT_BF16 ? 1.0f : __ldg(scale + m);
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    int n = n0 + wn * 32 + nt * 8 + 2 * tq + j;
                    if (n >= N) continue;
                    float y = acc[mt][nt][2 * hf + j] * sc;
                    size_t o = (size_t)n * M + m;
                    if (epi == NC_EPI_ADD) {
                        ((float *)Y)[o] += y;
                    } else if (epi == NC_EPI_SOFTCAP) {
                        ((float *)Y)[o] = cap * tanhf(y / cap);
                    } else if (epi == NC_EPI_RELU2) { /* nanochat: relu(bf16 linear output).square() in bf16 */
                        float t = fmaxf(__bfloat162float(__float2bfloat16_rn(y)), 0.0f);
                        ((bf16 *)Y)[o] = __float2bfloat16_rn(t * t);
                    } else {
                        ((bf16 *)Y)[o] = __float2bfloat16_rn(y);
                    }
                }
        }
}

/* Opts each format's kernel into its shared memory size. */
template <int FMT>
static int mma_gemm_setup() {
    NC_CU_TRY(cudaFuncSetAttribute(mma_gemm_kernel<FMT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   qg_shape<FMT>::SMEM));
    return 0;
}

int nc_cuda_mma_gemm_init(nc_cuda *cu) {
    (void)cu;
    return mma_gemm_setup<NC_WEIGHT_BF16>() || mma_gemm_setup<NC_WEIGHT_INT8>() || mma_gemm_setup<NC_WEIGHT_FP8>();
}

template <int FMT>
static cudaError_t mma_gemm_launch(nc_cuda *cu, const nc_cuda_weight *w, const bf16 *X, void *Y, int n,
                                   nc_cuda_epilogue epi) {
    int M = w->rows, K = w->cols;
    dim3 grid((unsigned)((M + QG_BM - 1) / QG_BM), (unsigned)((n + QG_BN - 1) / QG_BN));
    return nc_launch(cu, mma_gemm_kernel<FMT>, grid, dim3(QG_THREADS), qg_shape<FMT>::SMEM,
                     (const uint8_t *)w->data, w->scale, X, Y, M, n, K, (int)epi, cu->cfg.softcap);
}

int nc_cuda_mma_gemm(nc_cuda *cu, const nc_cuda_weight *w, const bf16 *X, void *Y, int n, nc_cuda_epilogue epi) {
    NC_ASSERT(w->cols % QG_BK == 0 && (w->format == NC_WEIGHT_BF16 || w->scale));
    cudaError_t e = w->format == NC_WEIGHT_INT8  ? mma_gemm_launch<NC_WEIGHT_INT8>(cu, w, X, Y, n, epi)
                    : w->format == NC_WEIGHT_FP8 ? mma_gemm_launch<NC_WEIGHT_FP8>(cu, w, X, Y, n, epi)
                                                 : mma_gemm_launch<NC_WEIGHT_BF16>(cu, w, X, Y, n, epi);
    if (e != cudaSuccess)
        return nc_fail("cuda: launching the mma.sync GEMM (%d x %d x %d): %s", w->rows, n, w->cols,
                       cudaGetErrorString(e));
    return 0;
}

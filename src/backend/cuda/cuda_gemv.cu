/*
 * cuda_gemv.cu: the decode matrix-vector products, y = W · x for 1..4 input
 * rows, where nearly all of a decode step's time goes (d34 streams 4.1 GB
 * of weights per token; PERF.md).
 *
 * One warp owns one output row and walks the whole K dimension in 16-byte
 * chunks (8 bf16), 4 chunks in flight per lane, with streaming loads that
 * skip L1 (every weight byte is used once). Rows are independent, so there
 * is no split-K reduction: the d34 shapes give 2176..65536 rows, i.e.
 * 2176+ warps, enough to fill 132 SMs, and results are deterministic (the
 * same row is summed in the same order whatever the batch).
 *
 * Fused in: RMSNorm of the input (nanochat's norm has no weight, so
 * rmsnorm(x)·Wᵀ = (x·Wᵀ) / rms(x); each warp reads all of x anyway and
 * accumulates sum(x²) alongside the dot product), and the epilogues: store,
 * residual add, ReLU² to bf16, fp32 softcap for the logits.
 */
#include "cuda_internal.cuh"

#define GEMV_WARPS 4
#define GEMV_UNROLL 4 /* 16-byte loads in flight per lane: 4 beat 8 (fewer registers, more warps; dev/kernels/gemv.cu) */

__device__ __forceinline__ uint4 ld_stream(const uint4 *p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

__device__ __forceinline__ void load_x8(const float *x, int c, float *f) {
    float4 a = __ldg((const float4 *)(x + 8 * (size_t)c));
    float4 b = __ldg((const float4 *)(x + 8 * (size_t)c + 4));
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}

__device__ __forceinline__ void load_x8(const bf16 *x, int c, float *f) {
    uint4 u = __ldg((const uint4 *)(x + 8 * (size_t)c));
    nc_bf16x8_to_f32(u, f);
}

/* NB: input rows the kernel is compiled for (1: a single decode row, with
 * the fewest registers and so the most warps in flight; NC_GEMV_MAX_ROWS
 * for small batches, nb <= NB at run time). A compile-time count because the
 * per-row accumulators live in registers. */
template <typename TIn, int NB>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_kernel(const bf16 *__restrict__ W, int rows, int K, const TIn *__restrict__ in, int64_t ld_in, int nb,
                int norm, int epi, void *out, int64_t ld_out, float cap, float eps) {
    int lane = threadIdx.x & 31;
    nc_pdl_trigger();
    int nch = K / 8;
    int r = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (r >= rows) {
        nc_pdl_wait();
        return;
    }
    const TIn *x[NB];
#pragma unroll
    for (int b = 0; b < NB; b++) x[b] = in + (b < nb ? (int64_t)b * ld_in : 0);
    const uint4 *w = (const uint4 *)(W + (size_t)r * K);
    float acc[NB], ss[NB];
#pragma unroll
    for (int b = 0; b < NB; b++) acc[b] = 0.0f, ss[b] = 0.0f;
    bool waited = false;
    for (int c0 = lane; c0 < nch; c0 += 32 * GEMV_UNROLL) {
        uint4 wv[GEMV_UNROLL];
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            int c = c0 + 32 * u;
            if (c < nch) wv[u] = ld_stream(w + c);
        }
        if (!waited) { /* weights do not depend on the previous kernel: they are in flight already */
            nc_pdl_wait();
            waited = true;
        }
#pragma unroll
        for (int u = 0; u < GEMV_UNROLL; u++) {
            int c = c0 + 32 * u;
            if (c < nch) {
                float wf[8];
                nc_bf16x8_to_f32(wv[u], wf);
#pragma unroll
                for (int b = 0; b < NB; b++) {
                    if (b < nb) {
                        float xf[8];
                        load_x8(x[b], c, xf);
#pragma unroll
                        for (int i = 0; i < 8; i++) {
                            acc[b] = fmaf(wf[i], xf[i], acc[b]);
                            if (norm) ss[b] = fmaf(xf[i], xf[i], ss[b]);
                        }
                    }
                }
            }
        }
    }
#pragma unroll
    for (int b = 0; b < NB; b++) {
        if (b < nb) {
            acc[b] = nc_warp_sum(acc[b]);
            if (norm) ss[b] = nc_warp_sum(ss[b]);
        }
    }
#pragma unroll
    for (int b = 0; b < NB; b++) {
        if (b < nb && lane == b) {
            float y = acc[b];
            if (norm) y *= rsqrtf(ss[b] / (float)K + eps);
            int64_t o = (int64_t)b * ld_out + r;
            if (epi == NC_EPI_STORE) {
                ((float *)out)[o] = y;
            } else if (epi == NC_EPI_ADD) {
                ((float *)out)[o] += y;
            } else if (epi == NC_EPI_RELU2) {
                float t = fmaxf(y, 0.0f);
                ((bf16 *)out)[o] = __float2bfloat16_rn(t * t);
            } else {
                ((float *)out)[o] = cap * tanhf(y / cap);
            }
        }
    }
}

int nc_cuda_gemv(nc_cuda *cu, const bf16 *W, int rows, int K, const void *in, bool in_bf16, int64_t ld_in, int nb,
                 bool norm, nc_cuda_epilogue epi, void *out, int64_t ld_out, float softcap) {
    NC_ASSERT(nb >= 1 && nb <= NC_GEMV_MAX_ROWS && K % 8 == 0);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((rows + GEMV_WARPS - 1) / GEMV_WARPS);
    cfg.blockDim = dim3(GEMV_WARPS * 32);
    cfg.stream = cu->stream;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = cu->pdl ? 1 : 0;
    float eps = cu->cfg.norm_eps;
    int n = (int)norm, e = (int)epi;
    cudaError_t err;
    const int M = NC_GEMV_MAX_ROWS;
    if (in_bf16) {
        const bf16 *x = (const bf16 *)in;
        err = nb == 1 ? cudaLaunchKernelEx(&cfg, gemv_kernel<bf16, 1>, W, rows, K, x, ld_in, nb, n, e, out, ld_out, softcap, eps)
                      : cudaLaunchKernelEx(&cfg, gemv_kernel<bf16, M>, W, rows, K, x, ld_in, nb, n, e, out, ld_out, softcap, eps);
    } else {
        const float *x = (const float *)in;
        err = nb == 1 ? cudaLaunchKernelEx(&cfg, gemv_kernel<float, 1>, W, rows, K, x, ld_in, nb, n, e, out, ld_out, softcap, eps)
                      : cudaLaunchKernelEx(&cfg, gemv_kernel<float, M>, W, rows, K, x, ld_in, nb, n, e, out, ld_out, softcap, eps);
    }
    if (err != cudaSuccess) return nc_fail("cuda: launching gemv: %s", cudaGetErrorString(err));
    return 0;
}

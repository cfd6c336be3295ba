/*
 * cuda_gemv.cu: the decode matrix-vector products, y = W · x for 1..4 input
 * rows, where nearly all of a decode step's time goes (d34 streams 4.1 GB
 * of weights per token; PERF.md).
 *
 * One warp owns one output row and walks the whole K dimension in 16-byte
 * chunks (8 bf16), 8 chunks in flight per lane, with streaming loads that
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

/* U: 16-byte loads in flight per lane (a compile-time count: the loads
 * land in a register array). Rows are walked grid-stride, so a grid capped
 * at what fits on the GPU at once (persistent) has no last-wave tail. */
template <typename TIn, int U>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_kernel(const bf16 *__restrict__ W, int rows, int K, const TIn *__restrict__ in, int64_t ld_in, int nb,
                int norm, int epi, void *out, int64_t ld_out, float cap, float eps) {
    int lane = threadIdx.x & 31;
    nc_pdl_trigger();
    int nch = K / 8;
    const TIn *x[NC_GEMV_MAX_ROWS];
#pragma unroll
    for (int b = 0; b < NC_GEMV_MAX_ROWS; b++) x[b] = in + (b < nb ? (int64_t)b * ld_in : 0);
    bool waited = false;
    for (int r = blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5); r < rows; r += gridDim.x * GEMV_WARPS) {
        const uint4 *w = (const uint4 *)(W + (size_t)r * K);
        float acc[NC_GEMV_MAX_ROWS], ss[NC_GEMV_MAX_ROWS];
#pragma unroll
        for (int b = 0; b < NC_GEMV_MAX_ROWS; b++) acc[b] = 0.0f, ss[b] = 0.0f;
        for (int c0 = lane; c0 < nch; c0 += 32 * U) {
            uint4 wv[U];
#pragma unroll
            for (int u = 0; u < U; u++) {
                int c = c0 + 32 * u;
                if (c < nch) wv[u] = ld_stream(w + c);
            }
            if (!waited) { /* weights do not depend on the previous kernel: they are in flight already */
                nc_pdl_wait();
                waited = true;
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
                int c = c0 + 32 * u;
                if (c < nch) {
                    float wf[8];
                    nc_bf16x8_to_f32(wv[u], wf);
#pragma unroll
                    for (int b = 0; b < NC_GEMV_MAX_ROWS; b++) {
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
        for (int b = 0; b < NC_GEMV_MAX_ROWS; b++) {
            if (b < nb) {
                acc[b] = nc_warp_sum(acc[b]);
                if (norm) ss[b] = nc_warp_sum(ss[b]);
            }
        }
#pragma unroll
        for (int b = 0; b < NC_GEMV_MAX_ROWS; b++) {
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
    if (!waited) nc_pdl_wait();
}

/* The four instantiations: [input bf16][unroll 8]. */
static void *gemv_fn(bool in_bf16, bool u8) {
    if (in_bf16) return u8 ? (void *)gemv_kernel<bf16, 8> : (void *)gemv_kernel<bf16, 4>;
    return u8 ? (void *)gemv_kernel<float, 8> : (void *)gemv_kernel<float, 4>;
}

int nc_cuda_gemv_init(nc_cuda *cu) {
    const char *v = getenv("NC_CUDA_GEMV");
    cu->gemv_variant = v ? atoi(v) : 0;
    if (cu->gemv_variant < 0 || cu->gemv_variant > 3) cu->gemv_variant = 0;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            int per_sm = 0;
            NC_CU_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_fn(i, j), GEMV_WARPS * 32, 0));
            cu->gemv_max_blocks[i][j] = NC_MAX(1, per_sm) * cu->sm_count;
        }
    return 0;
}

int nc_cuda_gemv(nc_cuda *cu, const bf16 *W, int rows, int K, const void *in, bool in_bf16, int64_t ld_in, int nb,
                 bool norm, nc_cuda_epilogue epi, void *out, int64_t ld_out, float softcap) {
    NC_ASSERT(nb >= 1 && nb <= NC_GEMV_MAX_ROWS && K % 8 == 0);
    /* variants (NC_CUDA_GEMV): 0 unroll 8, 1 unroll 4, 2 unroll 8 persistent, 3 unroll 4 persistent */
    bool u8 = !(cu->gemv_variant & 1), persistent = cu->gemv_variant & 2;
    int blocks = (rows + GEMV_WARPS - 1) / GEMV_WARPS;
    if (persistent) blocks = NC_MIN(blocks, cu->gemv_max_blocks[in_bf16][u8]);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(blocks);
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
    if (in_bf16) {
        const bf16 *x = (const bf16 *)in;
        err = u8 ? cudaLaunchKernelEx(&cfg, gemv_kernel<bf16, 8>, W, rows, K, x, ld_in, nb, n, e, out, ld_out, softcap, eps)
                 : cudaLaunchKernelEx(&cfg, gemv_kernel<bf16, 4>, W, rows, K, x, ld_in, nb, n, e, out, ld_out, softcap, eps);
    } else {
        const float *x = (const float *)in;
        err = u8 ? cudaLaunchKernelEx(&cfg, gemv_kernel<float, 8>, W, rows, K, x, ld_in, nb, n, e, out, ld_out, softcap, eps)
                 : cudaLaunchKernelEx(&cfg, gemv_kernel<float, 4>, W, rows, K, x, ld_in, nb, n, e, out, ld_out, softcap, eps);
    }
    if (err != cudaSuccess) return nc_fail("cuda: launching gemv: %s", cudaGetErrorString(err));
    return 0;
}

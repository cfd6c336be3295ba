/*
 * cuda_gemv.cu: the decode matrix-vector product y = W · x of a single
 * token (batch-1 decode), where nearly all of a decode step's time goes
 * (d34 streams 4.1 GB of weights per token; docs/performance.md, Floors).
 * Batches of two rows or more go to the GEMMs (project() in
 * cuda_forward.cu): a GEMV variant reading 2..4 input rows ran 1.2-1.8x
 * slower than cuBLASLt there (dev/kernels/NOTES.md).
 *
 * S warps own one output row (S = 1 for rows of up to 2304 values, 2 or 4
 * for wider ones: split-K, the partial sums merged in shared memory), and
 * each warp issues all the 16-byte loads of its slice at once (9 per lane
 * for a 2176-wide slice), with streaming loads that skip L1 (every weight
 * byte is used once): one memory round trip per warp instead of a loop of
 * dependent ones. Results are deterministic.
 *
 * The weight loads are issued before nc_pdl_wait(): weights do not depend on
 * the previous kernel, so under programmatic dependent launch a GEMV's first
 * round of loads streams while its predecessor finishes.
 *
 * Fused in: RMSNorm of the input (nanochat's norm has no weight, so
 * rmsnorm(x)·Wᵀ = (x·Wᵀ) / rms(x); each warp reads its slice of x anyway and
 * accumulates sum(x²) alongside the dot product), and the epilogues: store,
 * residual add, ReLU² to bf16, fp32 softcap for the logits.
 *
 * 8-bit weights (int8 / e4m3, docs/quantization.md) have their own kernel
 * of the same design: a 16-byte load is 16 weights instead of 8, widened
 * exactly to fp32 (cuda_q8.cuh) and multiplied with fp32 x, the row scale
 * applied once to the finished dot product. Widening costs ~2 instructions
 * per weight, and the weights of a byte now need twice the x values, so
 * each warp computes R rows at once (R = 2 by default; 1 and 4 are the
 * harness's variants, dev/kernels/gemv_q8.cu): every x value and every
 * sum(x²) term it loads serves R rows.
 */
#include "cuda_q8.cuh"

#define GEMV_WARPS 4
#define GEMV_LOADS 9    /* 16-byte loads per lane per round */
#define GEMV_SLICE (GEMV_LOADS * 256) /* widest K slice one warp loads in one round */

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

/* Output r of the epilogue `epi` (nc_cuda_epilogue) for the dot product y. */
__device__ __forceinline__ void gemv_store(int epi, void *out, int r, float y, float cap) {
    if (epi == NC_EPI_STORE) {
        ((float *)out)[r] = y;
    } else if (epi == NC_EPI_ADD) {
        ((float *)out)[r] += y;
    } else if (epi == NC_EPI_RELU2) {
        float t = fmaxf(y, 0.0f);
        ((bf16 *)out)[r] = __float2bfloat16_rn(t * t);
    } else {
        ((float *)out)[r] = cap * tanhf(y / cap);
    }
}

/* S (run time, 1, 2 or 4): warps per output row. */
template <typename TIn>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_kernel(const bf16 *__restrict__ W, int rows, int K, int S, const TIn *__restrict__ in, int norm, int epi,
                void *out, float cap, float eps) {
    __shared__ float part_acc[GEMV_WARPS], part_ss[GEMV_WARPS];
    nc_pdl_trigger();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int r = blockIdx.x * (GEMV_WARPS / S) + warp / S, ks = warp % S;
    int nch = K / 8 / S, c_base = ks * nch; /* this warp's 16-byte chunks */
    bool live = r < rows;
    const TIn *x = in + 8 * (int64_t)c_base;
    const uint4 *w = (const uint4 *)(W + (size_t)(live ? r : 0) * K) + c_base;
    float acc = 0.0f, ss = 0.0f;
    bool waited = false;
    for (int c0 = lane; c0 < nch; c0 += 32 * GEMV_LOADS) {
        uint4 wv[GEMV_LOADS];
#pragma unroll
        for (int u = 0; u < GEMV_LOADS; u++) {
            int c = c0 + 32 * u;
            if (live && c < nch) wv[u] = ld_stream(w + c);
        }
        if (!waited) { /* weights do not depend on the previous kernel: they are in flight already */
            nc_pdl_wait();
            waited = true;
        }
#pragma unroll
        for (int u = 0; u < GEMV_LOADS; u++) {
            int c = c0 + 32 * u;
            if (live && c < nch) {
                float wf[8], xf[8];
                nc_bf16x8_to_f32(wv[u], wf);
                load_x8(x, c, xf);
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    acc = fmaf(wf[i], xf[i], acc);
                    if (norm) ss = fmaf(xf[i], xf[i], ss);
                }
            }
        }
    }
    if (!waited) nc_pdl_wait();
    acc = nc_warp_sum(acc);
    if (norm) ss = nc_warp_sum(ss);
    if (S > 1) { /* merge the row's slices in the order ks = 0..S-1 */
        if (lane == 0) part_acc[warp] = acc, part_ss[warp] = ss;
        __syncthreads();
        if (ks != 0) return;
        acc = part_acc[warp], ss = part_ss[warp];
        for (int j = 1; j < S; j++) acc += part_acc[warp + j], ss += part_ss[warp + j];
    }
    if (!live || lane != 0) return;
    gemv_store(epi, out, r, norm ? acc * rsqrtf(ss / (float)K + eps) : acc, cap);
}

/* ==== 8-bit weights ==== */

/* 16-byte loads per lane, row and round, by rows per warp: ~10 in flight. */
template <int R>
struct gemv_q8_cfg {
    static constexpr int LOADS = R == 1 ? 9 : R == 2 ? 5 : 3;
    static constexpr int SLICE = LOADS * 32 * 16; /* widest K slice one warp loads in one round */
};

__device__ __forceinline__ void load_x16(const float *x, int c, float *f) {
    load_x8(x, 2 * c, f);
    load_x8(x, 2 * c + 1, f + 8);
}

__device__ __forceinline__ void load_x16(const bf16 *x, int c, float *f) {
    load_x8(x, 2 * c, f);
    load_x8(x, 2 * c + 1, f + 8);
}

/* acc += the 16 weights of w (k order) times xf[0..16). */
template <int FMT>
__device__ __forceinline__ float dot16(uint4 w, const float *xf, float acc) {
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        float f[4];
        nc_q8x4_to_f32<FMT>(words[j], f);
#pragma unroll
        for (int i = 0; i < 4; i++) acc = fmaf(f[i], xf[4 * j + i], acc);
    }
    return acc;
}

/* S warps per group of R consecutive rows (split-K as the bf16 kernel). */
template <typename TIn, int FMT, int R>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_q8_kernel(const uint8_t *__restrict__ W, const float *__restrict__ scale, int rows, int K, int S,
                   const TIn *__restrict__ in, int norm, int epi, void *out, float cap, float eps) {
    constexpr int LOADS = gemv_q8_cfg<R>::LOADS;
    __shared__ float part_acc[GEMV_WARPS][R], part_ss[GEMV_WARPS];
    nc_pdl_trigger();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int r0 = (blockIdx.x * (GEMV_WARPS / S) + warp / S) * R, ks = warp % S;
    int nch = K / 16 / S, c_base = ks * nch; /* this warp's 16-byte chunks of each row */
    const TIn *x = in + 16 * (int64_t)c_base;
    const uint4 *w[R];
    bool live[R];
#pragma unroll
    for (int i = 0; i < R; i++) {
        live[i] = r0 + i < rows;
        w[i] = (const uint4 *)(W + (size_t)(live[i] ? r0 + i : 0) * K) + c_base;
    }
    float acc[R], ss = 0.0f;
#pragma unroll
    for (int i = 0; i < R; i++) acc[i] = 0.0f;
    bool waited = false;
    for (int c0 = lane; c0 < nch; c0 += 32 * LOADS) {
        uint4 wv[R][LOADS];
#pragma unroll
        for (int u = 0; u < LOADS; u++)
#pragma unroll
            for (int i = 0; i < R; i++)
                if (live[i] && c0 + 32 * u < nch) wv[i][u] = ld_stream(w[i] + c0 + 32 * u);
        if (!waited) { /* weights do not depend on the previous kernel: they are in flight already */
            nc_pdl_wait();
            waited = true;
        }
#pragma unroll
        for (int u = 0; u < LOADS; u++) {
            int c = c0 + 32 * u;
            if (c >= nch) continue;
            float xf[16];
            load_x16(x, c, xf);
            if (norm) {
#pragma unroll
                for (int j = 0; j < 16; j++) ss = fmaf(xf[j], xf[j], ss);
            }
#pragma unroll
            for (int i = 0; i < R; i++)
                if (live[i]) acc[i] = dot16<FMT>(wv[i][u], xf, acc[i]);
        }
    }
    if (!waited) nc_pdl_wait();
#pragma unroll
    for (int i = 0; i < R; i++) acc[i] = nc_warp_sum(acc[i]);
    if (norm) ss = nc_warp_sum(ss);
    if (S > 1) { /* merge the rows' slices in the order ks = 0..S-1 */
        if (lane == 0) {
#pragma unroll
            for (int i = 0; i < R; i++) part_acc[warp][i] = acc[i];
            part_ss[warp] = ss;
        }
        __syncthreads();
        if (ks != 0) return;
#pragma unroll
        for (int i = 0; i < R; i++) {
            acc[i] = part_acc[warp][i];
            for (int j = 1; j < S; j++) acc[i] += part_acc[warp + j][i];
        }
        ss = part_ss[warp];
        for (int j = 1; j < S; j++) ss += part_ss[warp + j];
    }
    if (lane >= R) return;
    /* lane i stores row r0 + i (registers indexed by a constant only) */
    float a = acc[0];
#pragma unroll
    for (int i = 1; i < R; i++) a = lane == i ? acc[i] : a;
    int r = r0 + lane;
    if (r >= rows) return;
    gemv_store(epi, out, r, (norm ? a * rsqrtf(ss / (float)K + eps) : a) * __ldg(scale + r), cap);
}

/* Rows per warp of the 8-bit kernel: 1, 2 or 4 (dev/kernels/gemm_q8.cu
 * times each; 2 is the default). */
static int gemv_q8_rows = 2;

/* Warps per row group: the fewest that keep each warp's slice within a
 * round of loads and a whole number of 16-byte chunks. */
static int gemv_q8_split(int K, int slice) {
    int S = 1;
    while (S < GEMV_WARPS && K > S * slice && (K / 16) % (2 * S) == 0) S *= 2;
    return S;
}

template <typename TIn, int FMT>
static cudaError_t launch_q8(nc_cuda *cu, const nc_cuda_weight *w, const TIn *in, int norm, int epi, void *out,
                             float cap, float eps) {
    const uint8_t *W = (const uint8_t *)w->data;
    int rows = w->used_rows, K = w->cols, R = gemv_q8_rows;
    int S = gemv_q8_split(K, R == 1 ? gemv_q8_cfg<1>::SLICE : R == 2 ? gemv_q8_cfg<2>::SLICE : gemv_q8_cfg<4>::SLICE);
    int per_block = GEMV_WARPS / S * R;
    dim3 grid((rows + per_block - 1) / per_block), block(GEMV_WARPS * 32);
    if (R == 1) return nc_launch(cu, gemv_q8_kernel<TIn, FMT, 1>, grid, block, 0, W, w->scale, rows, K, S, in, norm, epi, out, cap, eps);
    if (R == 2) return nc_launch(cu, gemv_q8_kernel<TIn, FMT, 2>, grid, block, 0, W, w->scale, rows, K, S, in, norm, epi, out, cap, eps);
    return nc_launch(cu, gemv_q8_kernel<TIn, FMT, 4>, grid, block, 0, W, w->scale, rows, K, S, in, norm, epi, out, cap, eps);
}

/* ==== entry ==== */

/* Warps per row: the fewest that keep each warp's slice within
 * GEMV_SLICE and a whole number of 16-byte chunks. */
static int gemv_split(int K) {
    int S = 1;
    while (S < GEMV_WARPS && K > S * GEMV_SLICE && (K / 8) % (2 * S) == 0) S *= 2;
    return S;
}

int nc_cuda_gemv(nc_cuda *cu, const nc_cuda_weight *w, const void *in, bool in_bf16, bool norm,
                 nc_cuda_epilogue epi, void *out) {
    int rows = w->used_rows, K = w->cols, n = (int)norm, e = (int)epi;
    float eps = cu->cfg.norm_eps, softcap = epi == NC_EPI_SOFTCAP ? cu->cfg.softcap : 0.0f;
    cudaError_t err;
    if (w->format != NC_WEIGHT_BF16) {
        NC_ASSERT(K % 16 == 0 && w->scale);
        bool i8 = w->format == NC_WEIGHT_INT8;
        if (in_bf16)
            err = i8 ? launch_q8<bf16, NC_WEIGHT_INT8>(cu, w, (const bf16 *)in, n, e, out, softcap, eps)
                     : launch_q8<bf16, NC_WEIGHT_FP8>(cu, w, (const bf16 *)in, n, e, out, softcap, eps);
        else
            err = i8 ? launch_q8<float, NC_WEIGHT_INT8>(cu, w, (const float *)in, n, e, out, softcap, eps)
                     : launch_q8<float, NC_WEIGHT_FP8>(cu, w, (const float *)in, n, e, out, softcap, eps);
        if (err != cudaSuccess) return nc_fail("cuda: launching the 8-bit gemv: %s", cudaGetErrorString(err));
        return 0;
    }
    const bf16 *W = (const bf16 *)w->data;
    NC_ASSERT(K % 8 == 0);
    int S = gemv_split(K), per_block = GEMV_WARPS / S;
    dim3 grid((rows + per_block - 1) / per_block), block(GEMV_WARPS * 32);
    err = in_bf16 ? nc_launch(cu, gemv_kernel<bf16>, grid, block, 0, W, rows, K, S, (const bf16 *)in, n, e, out,
                              softcap, eps)
                  : nc_launch(cu, gemv_kernel<float>, grid, block, 0, W, rows, K, S, (const float *)in, n, e, out,
                              softcap, eps);
    if (err != cudaSuccess) return nc_fail("cuda: launching gemv: %s", cudaGetErrorString(err));
    return 0;
}

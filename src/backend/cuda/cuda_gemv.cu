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
 * 8-bit weights (int8 / e4m3, docs/quantization.md) are widened exactly to
 * fp32 (cuda_q8.cuh), multiplied with fp32 x, and the row scale applied
 * once to the finished dot product. A 16-byte load is 16 weights, so a
 * lane needs 64 bytes of fp32 x per load: read through L1 at every load,
 * as the first 8-bit kernel (gemv_q8_kernel, the default) does, x costs
 * L1 more cycles than the weights take to arrive, and that kernel streams
 * at 30-55% of the copy bandwidth. The streaming kernel
 * (gemv_q8_stream_kernel, NC_CUDA_GEMV_Q8=new) reads x once per CTA into shared memory, fp32 in a
 * layout where a warp's 16-byte reads hit distinct banks (or broadcast),
 * computes sum(x²) there once for the fused norm, and then each warp walks
 * a contiguous run of rows (the grid sized to fill every SM twice) as one
 * stream of steps: a step is one 16-byte load per lane, G lanes per row
 * (G = 32, 16 or 8, leaving at most a tenth of the lane steps idle: d34's
 * 136 chunks per row run as 16 lanes x 9 steps, the last one half full)
 * and 32 / G rows per step.
 * Each lane keeps GEMV_Q8_DEPTH loads in flight across row ends (the load
 * for step s + DEPTH is issued before step s's math), so a warp never waits
 * for a round of loads to come back. Finished rows collect one per lane and
 * leave in batches of 32: the row scales (prefetched a batch ahead) and
 * the epilogue are applied by the lane of the row, with coalesced stores.
 * No split-K: a wide row is a longer run of steps, and with many rows per
 * warp the grid fills the GPU without it. Rows of more than GEMV_Q8_MAX_K
 * values (x past 47 KB of shared memory) take the first kernel.
 * Measured on an H200 (bench/RESULTS.md, session 5), the streaming kernel
 * lost: 0.81-0.84x batch-1 decode tok/s with int8 and fp8 weights, and the
 * step's GEMVs in a graph 1.65 ms against 1.25 (R = 2) / 1.15 (R = 4) for
 * the first one. So the first kernel stays the default; dev/kernels/NOTES.md
 * has the figures and what to try next.
 */
#include "cuda_q8.cuh"

#define GEMV_WARPS 4
#define GEMV_LOADS 9    /* 16-byte loads per lane per round */
#define GEMV_SLICE (GEMV_LOADS * 256) /* widest K slice one warp loads in one round */

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
            if (live && c < nch) wv[u] = nc_ld_stream(w + c);
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

/* ==== 8-bit weights: the first kernel (the default) ====
 *
 * The bf16 kernel's design with 8-bit loads: S warps per group of R rows,
 * one round of loads per warp, x read through L1 at every load. Each warp
 * computes R rows at once (R = 4 by default; 1 and 2 are the harness's
 * variants, dev/kernels/gemm_q8.cu) so every x value and sum(x²) term it
 * loads serves R rows. */

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
                if (live[i] && c0 + 32 * u < nch) wv[i][u] = nc_ld_stream(w[i] + c0 + 32 * u);
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

/* Rows per warp of the first 8-bit kernel: 1, 2 or 4 (dev/kernels/gemm_q8.cu
 * times each; NC_CUDA_GEMV_Q8_ROWS picks one). 4 is the default: the whole
 * d34 step's GEMVs 1.154 ms against 1.252 at 2 in the harness, and batch-1
 * decode tok/s 1.04x / 1.06x at 128 / 1024 context (H200, bench/RESULTS.md,
 * session 6): each x value loaded serves more rows. */
static int gemv_q8_rows(const nc_cuda *cu) { return cu->env.cuda_gemv_q8_rows ? cu->env.cuda_gemv_q8_rows : 4; }

/* Warps per row group: the fewest that keep each warp's slice within a
 * round of loads and a whole number of 16-byte chunks. */
static int gemv_q8_split(int K, int slice) {
    int S = 1;
    while (S < GEMV_WARPS && K > S * slice && (K / 16) % (2 * S) == 0) S *= 2;
    return S;
}

template <typename TIn, int FMT>
static cudaError_t launch_q8_old(nc_cuda *cu, const nc_cuda_weight *w, const TIn *in, int norm, int epi, void *out,
                             float cap, float eps) {
    const uint8_t *W = (const uint8_t *)w->data;
    int rows = w->used_rows, K = w->cols, R = gemv_q8_rows(cu);
    int S = gemv_q8_split(K, R == 1 ? gemv_q8_cfg<1>::SLICE : R == 2 ? gemv_q8_cfg<2>::SLICE : gemv_q8_cfg<4>::SLICE);
    int per_block = GEMV_WARPS / S * R;
    dim3 grid((rows + per_block - 1) / per_block), block(GEMV_WARPS * 32);
    if (R == 1) return nc_launch(cu, gemv_q8_kernel<TIn, FMT, 1>, grid, block, 0, W, w->scale, rows, K, S, in, norm, epi, out, cap, eps);
    if (R == 2) return nc_launch(cu, gemv_q8_kernel<TIn, FMT, 2>, grid, block, 0, W, w->scale, rows, K, S, in, norm, epi, out, cap, eps);
    return nc_launch(cu, gemv_q8_kernel<TIn, FMT, 4>, grid, block, 0, W, w->scale, rows, K, S, in, norm, epi, out, cap, eps);
}

/* ==== 8-bit weights: the streaming kernel (the default) ==== */

#define GEMV_Q8_WARPS 8   /* warps per CTA */
#define GEMV_Q8_CTAS 2    /* CTAs per SM the grid is sized for */
#define GEMV_Q8_DEPTH 8   /* 16-byte loads each lane keeps in flight */
#define GEMV_Q8_MAX_K 12032 /* x as fp32 (47 KB) + the block sum's within the 48 KB a launch gets unasked */

/* Where a lane's next weight load is: step `s` of the warp's run, `j`
 * of the J steps of each row, the lane's row and its 16-byte chunk `p`. */
struct gemv_q8_cursor {
    const uint4 *p;
    int s, j, row;
};

/* Advances c by one step: G chunks along the row, or at the end of a row
 * to the lane's row RG rows on (RG = 32 / G rows per step). */
template <int G>
__device__ __forceinline__ void gemv_q8_advance(gemv_q8_cursor &c, int J, int nch) {
    c.s++, c.p += G;
    if (++c.j == J) { /* back by J * G chunks (past the row's end when its last step is partial), on RG rows */
        c.j = 0, c.row += 32 / G;
        c.p += (int64_t)(32 / G) * nch - (int64_t)J * G;
    }
}

/* G lanes per row (template: 32, 16 or 8); the grid's first n_warps warps
 * split the row groups (32 / G rows each) into contiguous runs whose
 * lengths differ by one at most; dynamic shared memory: K floats (x). */
template <typename TIn, int FMT, int G>
__global__ void __launch_bounds__(GEMV_Q8_WARPS * 32, GEMV_Q8_CTAS)
    gemv_q8_stream_kernel(const uint8_t *__restrict__ W, const float *__restrict__ scale, int rows, int K,
                          int n_warps, const TIn *__restrict__ in, int norm, int epi, void *out, float cap, float eps) {
    constexpr int RG = 32 / G, D = GEMV_Q8_DEPTH;
    extern __shared__ float4 xs[]; /* [4][nch]: x[16c + 4q .. +4) at q * nch + c */
    __shared__ float red[32];
    nc_pdl_trigger();
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, sub = lane % G;
    int nch = K / 16, J = (nch + G - 1) / G, n_groups = (rows + RG - 1) / RG;
    int gw = min((int)blockIdx.x * GEMV_Q8_WARPS + warp, n_warps);
    int g0 = (int)((int64_t)gw * n_groups / n_warps), g1 = (int)((int64_t)(gw + 1) * n_groups / n_warps);
    if (gw == n_warps) g1 = g0; /* a warp past the last run: it only helps to fill x */
    int steps = (g1 - g0) * J, row0 = g0 * RG, n_local = (g1 - g0) * RG, row_end = min(g1 * RG, rows);

    /* weights and scales do not depend on the previous kernel: the first
     * DEPTH loads and two batches of scales go out before the wait */
    gemv_q8_cursor ld = {(const uint4 *)W + (size_t)(row0 + lane / G) * nch + sub, 0, 0, row0 + lane / G};
    uint4 buf[D];
#pragma unroll
    for (int u = 0; u < D; u++) {
        buf[u] = make_uint4(0, 0, 0, 0);
        if (ld.s < steps && ld.row < rows && sub + G * ld.j < nch) buf[u] = nc_ld_stream(ld.p);
        gemv_q8_advance<G>(ld, J, nch);
    }
    float sc = row0 + lane < row_end ? __ldg(scale + row0 + lane) : 0.0f;
    float sc_next = row0 + 32 + lane < row_end ? __ldg(scale + row0 + 32 + lane) : 0.0f;
    nc_pdl_wait();

    float ss = 0.0f;
    for (int t = threadIdx.x; t < K / 8; t += blockDim.x) {
        float f[8];
        load_x8(in, t, f);
        if (norm) {
#pragma unroll
            for (int i = 0; i < 8; i++) ss = fmaf(f[i], f[i], ss);
        }
        int c = t >> 1, q = (t & 1) * 2;
        xs[q * nch + c] = make_float4(f[0], f[1], f[2], f[3]);
        xs[(q + 1) * nch + c] = make_float4(f[4], f[5], f[6], f[7]);
    }
    ss = nc_block_sum(ss, red); /* its barriers also publish xs */
    float rs = norm ? rsqrtf(ss / (float)K + eps) : 1.0f;

    float acc = 0.0f, y = 0.0f; /* y: this lane's row of the current batch of 32 */
    int j = 0, local = 0, batch = 0; /* compute cursor: step in row, the group's first local row, batch start */
    for (int s0 = 0; s0 < steps; s0 += D) {
#pragma unroll
        for (int u = 0; u < D; u++) {
            if (s0 + u >= steps) break;
            uint4 w = buf[u];
            if (ld.s < steps && ld.row < rows && sub + G * ld.j < nch) buf[u] = nc_ld_stream(ld.p);
            gemv_q8_advance<G>(ld, J, nch);
            int c = sub + G * j;
            if (c < nch) {
                float xf[16];
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    float4 v = xs[q * nch + c];
                    xf[4 * q] = v.x, xf[4 * q + 1] = v.y, xf[4 * q + 2] = v.z, xf[4 * q + 3] = v.w;
                }
                acc = dot16<FMT>(w, xf, acc);
            }
            if (++j < J) continue;
            /* the step ended the group's rows: sum each row's G lanes, hand
             * row local + i to lane (local + i) % 32 */
            j = 0;
#pragma unroll
            for (int o = G / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
            int i = lane - (local - batch);
            float v = __shfl_sync(0xffffffffu, acc, (i & (RG - 1)) * G);
            if (i >= 0 && i < RG) y = v;
            acc = 0.0f;
            local += RG;
            if (local - batch < 32 && local < n_local) continue;
            int r = row0 + batch + lane;
            if (r < row_end) gemv_store(epi, out, r, y * rs * sc, cap);
            batch += 32;
            sc = sc_next;
            sc_next = row0 + batch + 32 + lane < row_end ? __ldg(scale + row0 + batch + 32 + lane) : 0.0f;
        }
    }
}

/* Lanes per row of the streaming kernel for rows of nch 16-byte chunks:
 * the most (more row groups to spread over the SMs) that leave at most a
 * tenth of the lane steps idle, else the fewest idle. */
static int gemv_q8_lanes(int nch) {
    int best = 32, best_slots = 0;
    for (int G = 32; G >= 8; G /= 2) {
        int slots = (nch + G - 1) / G * G; /* lane steps per row, idle ones included */
        if (10 * nch >= 9 * slots) return G;
        if (best_slots == 0 || slots < best_slots) best = G, best_slots = slots;
    }
    return best;
}

template <typename TIn, int FMT, int G>
static cudaError_t launch_q8_stream(nc_cuda *cu, const nc_cuda_weight *w, const TIn *in, int norm, int epi,
                                    void *out, float cap, float eps) {
    int rows = w->used_rows, K = w->cols, n_groups = (rows + 32 / G - 1) / (32 / G);
    /* the longest run as short as the resident warps allow, and then as
     * few warps as give every run that length or one less: with one or two
     * groups per warp, runs of 1 and 2 would double the last warps' time */
    int most = cu->sm_count * GEMV_Q8_CTAS * GEMV_Q8_WARPS;
    int per_warp = n_groups > most ? (n_groups + most - 1) / most : 1;
    int n_warps = (n_groups + per_warp - 1) / per_warp;
    dim3 grid((n_warps + GEMV_Q8_WARPS - 1) / GEMV_Q8_WARPS), block(GEMV_Q8_WARPS * 32);
    return nc_launch(cu, gemv_q8_stream_kernel<TIn, FMT, G>, grid, block, (size_t)K * 4, (const uint8_t *)w->data,
                     w->scale, rows, K, n_warps, in, norm, epi, out, cap, eps);
}

/* The 8-bit GEMV: the first kernel, or with NC_CUDA_GEMV_Q8=new the
 * streaming one where x fits its shared memory (=tc: nc_cuda_gemv_rows,
 * chosen in nc_cuda_gemv). */
template <typename TIn, int FMT>
static cudaError_t launch_q8(nc_cuda *cu, const nc_cuda_weight *w, const TIn *in, int norm, int epi, void *out,
                             float cap, float eps) {
    if (cu->gemv_q8 != NC_GEMV_Q8_STREAM || w->cols > GEMV_Q8_MAX_K)
        return launch_q8_old<TIn, FMT>(cu, w, in, norm, epi, out, cap, eps);
    int G = gemv_q8_lanes(w->cols / 16);
    if (G == 32) return launch_q8_stream<TIn, FMT, 32>(cu, w, in, norm, epi, out, cap, eps);
    if (G == 16) return launch_q8_stream<TIn, FMT, 16>(cu, w, in, norm, epi, out, cap, eps);
    return launch_q8_stream<TIn, FMT, 8>(cu, w, in, norm, epi, out, cap, eps);
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
        if (cu->gemv_q8 == NC_GEMV_Q8_TC && nc_cuda_gemv_rows_fits(cu, w, 1))
            return nc_cuda_gemv_rows(cu, w, in, in_bf16, norm, 1, epi, out);
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

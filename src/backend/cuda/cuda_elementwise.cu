/*
 * cuda_elementwise.cu: the small kernels between the matrix products:
 * embedding (+ V6 smear), V2+ lambdas, RMSNorm to bf16 (GEMM inputs),
 * RoPE + QK-norm + value embeddings + KV-cache append, ReLU², the rows that
 * feed the lm_head (+ V6 backout), softcap, KV block copies, and the
 * per-row e4m3 quantisation of fp8 tensor-core inputs (NC_CUDA_FP8_ACT).
 *
 * Each mirrors one line of nanochat's GPT.forward (docs/model.md); all
 * arithmetic is fp32 and results are rounded to bf16 only where nanochat
 * keeps bf16 tensors (q, k, v, MLP hidden, GEMM inputs).
 */
#include "cuda_internal.cuh"
#include "cuda_q8.cuh"
#include "cuda_rope.cuh"

/* ==== embedding + smear ==== */

__device__ float row_inv_rms_bf16(const bf16 *row, int C, float eps, float *red) {
    float ss = 0.0f;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float v = __bfloat162float(row[c]);
        ss += v * v;
    }
    ss = nc_block_sum(ss, red);
    return rsqrtf(ss / (float)C + eps);
}

/* x[t] = rmsnorm(wte[tok]); V6: + lambda * sigmoid(e[:24] . Wsmear) * e_prev. */
__global__ void embed_kernel(const bf16 *__restrict__ wte, const int32_t *__restrict__ tok,
                             const int32_t *__restrict__ tprev, float *__restrict__ x, float *__restrict__ x0,
                             int C, float eps, const float *__restrict__ smear_gate, int smear_ch,
                             float smear_lambda) {
    __shared__ float red[32];
    nc_pdl_trigger();
    int t = blockIdx.x;
    const bf16 *e = wte + (size_t)tok[t] * C;
    float sc = row_inv_rms_bf16(e, C, eps, red);
    float *xr = x + (size_t)t * C;
    int prev = tprev[t];
    if (smear_gate && prev >= 0) {
        const bf16 *ep = wte + (size_t)prev * C;
        float scp = row_inv_rms_bf16(ep, C, eps, red);
        float g = 0.0f;
        for (int c = threadIdx.x; c < smear_ch; c += blockDim.x)
            g += __bfloat162float(e[c]) * sc * smear_gate[c];
        g = nc_block_sum(g, red);
        float k = smear_lambda / (1.0f + __expf(-g));
        for (int c = threadIdx.x; c < C; c += blockDim.x)
            xr[c] = __bfloat162float(e[c]) * sc + k * (__bfloat162float(ep[c]) * scp);
    } else {
        for (int c = threadIdx.x; c < C; c += blockDim.x) xr[c] = __bfloat162float(e[c]) * sc;
    }
    if (x0) {
        __syncthreads();
        for (int c = threadIdx.x; c < C; c += blockDim.x) x0[(size_t)t * C + c] = xr[c];
    }
}

int nc_cuda_embed(nc_cuda *cu, int n) {
    embed_kernel<<<n, 256, 0, cu->stream>>>(cu->wte, META(cu, tok), META(cu, tprev), cu->x, cu->x0, cu->C,
                                            cu->cfg.norm_eps, cu->smear_gate, cu->cfg.smear_channels,
                                            cu->smear_lambda);
    NC_CU_LAUNCHED("embed");
    return 0;
}

/* ==== lambdas (V2+) ==== */

__global__ void lambdas_kernel(float *__restrict__ x, const float *__restrict__ x0, int64_t n, float rl,
                               float xl) {
    nc_pdl_trigger();
    nc_pdl_wait();
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = rl * x[i] + xl * x0[i];
}

int nc_cuda_lambdas(nc_cuda *cu, int layer, int n) {
    const nc_cuda_layer *ly = &cu->layers[layer];
    int64_t cnt = (int64_t)n * cu->C;
    cudaError_t e = nc_launch(cu, lambdas_kernel, dim3((unsigned)((cnt + 255) / 256)), dim3(256), 0, cu->x,
                              (const float *)cu->x0, cnt, ly->resid_lambda, ly->x0_lambda);
    if (e != cudaSuccess) return nc_fail("cuda: launching lambdas: %s", cudaGetErrorString(e));
    return 0;
}

/* ==== RMSNorm -> bf16 ==== */

#define NORM_THREADS 256
#define NORM_VEC 4 /* 16-byte loads per thread held in registers */
#define NORM_MAX_C (NORM_VEC * 4 * NORM_THREADS) /* rows read in one round: every nanochat up to d64 */

/* Thread t's float4s t, t + 256, ... of row x (less lb * sub where sub,
 * V6's backout), all loads issued before any is used; zeros past C. */
__device__ __forceinline__ void row_load_v4(const float *__restrict__ x, const float *__restrict__ sub, float lb,
                                            int C, float4 *v) {
#pragma unroll
    for (int i = 0; i < NORM_VEC; i++) {
        int c = threadIdx.x + i * NORM_THREADS;
        v[i] = c < C / 4 ? ((const float4 *)x)[c] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    if (sub)
#pragma unroll
        for (int i = 0; i < NORM_VEC; i++) {
            int c = threadIdx.x + i * NORM_THREADS;
            if (c >= C / 4) break;
            float4 b = ((const float4 *)sub)[c];
            v[i].x -= lb * b.x, v[i].y -= lb * b.y, v[i].z -= lb * b.z, v[i].w -= lb * b.w;
        }
}

/* out = bf16(rmsnorm(x - lb * sub)) for one row, by a whole CTA of
 * NORM_THREADS. The norm sits between two products of every multi-row
 * step, so its latency is on the step's critical path: a row of up to
 * NORM_MAX_C values is read in one round of 16-byte loads kept in
 * registers and stored from them (a scalar loop that read the row twice
 * made verifying 4 drafts of d34 6% slower, bench/RESULTS.md session 12);
 * wider rows loop. */
__device__ void rmsnorm_row_bf16(const float *__restrict__ x, const float *__restrict__ sub, float lb,
                                 bf16 *__restrict__ o, int C, float eps, float *red) {
    float ss = 0.0f;
    if (C > NORM_MAX_C) {
        for (int c = threadIdx.x; c < C; c += NORM_THREADS) {
            float v = sub ? x[c] - lb * sub[c] : x[c];
            ss += v * v;
        }
        float sc = rsqrtf(nc_block_sum(ss, red) / (float)C + eps);
        for (int c = threadIdx.x; c < C; c += NORM_THREADS)
            o[c] = __float2bfloat16_rn((sub ? x[c] - lb * sub[c] : x[c]) * sc);
        return;
    }
    float4 v[NORM_VEC];
    row_load_v4(x, sub, lb, C, v);
#pragma unroll
    for (int i = 0; i < NORM_VEC; i++)
        ss = fmaf(v[i].x, v[i].x, fmaf(v[i].y, v[i].y, fmaf(v[i].z, v[i].z, fmaf(v[i].w, v[i].w, ss))));
    float sc = rsqrtf(nc_block_sum(ss, red) / (float)C + eps);
#pragma unroll
    for (int i = 0; i < NORM_VEC; i++) {
        int c = threadIdx.x + i * NORM_THREADS;
        if (c >= C / 4) break;
        __nv_bfloat162 lo = __floats2bfloat162_rn(v[i].x * sc, v[i].y * sc);
        __nv_bfloat162 hi = __floats2bfloat162_rn(v[i].z * sc, v[i].w * sc);
        ((uint2 *)o)[c] = make_uint2(*(unsigned *)&lo, *(unsigned *)&hi);
    }
}

/* One CTA per row. */
__global__ void __launch_bounds__(NORM_THREADS) rmsnorm_bf16_kernel(const float *__restrict__ x,
                                                                    bf16 *__restrict__ out, int C, float eps) {
    __shared__ float red[32];
    nc_pdl_trigger();
    nc_pdl_wait();
    rmsnorm_row_bf16(x + (size_t)blockIdx.x * C, NULL, 0.0f, out + (size_t)blockIdx.x * C, C, eps, red);
}

int nc_cuda_rmsnorm_bf16(nc_cuda *cu, const float *x, bf16 *out, int n) {
    NC_ASSERT(cu->C % 4 == 0); /* 16-byte rows (check_model: a multiple of 64) */
    cudaError_t e = nc_launch(cu, rmsnorm_bf16_kernel, dim3(n), dim3(NORM_THREADS), 0, x, out, cu->C,
                              cu->cfg.norm_eps);
    if (e != cudaSuccess) return nc_fail("cuda: launching rmsnorm: %s", cudaGetErrorString(e));
    return 0;
}

/* ==== RoPE + QK-norm + value embeddings + KV append ==== */

/* One warp per head (q heads, then k heads, then v heads) of one token of
 * the GEMM path's bf16 qkv (batch-1 decode's fp32 qkv is handled inside the
 * decode attention kernel). */
__global__ void __launch_bounds__(256) rope_append_kernel(nc_rope_args a) {
    nc_pdl_trigger();
    nc_pdl_wait();
    int t = blockIdx.x, lane = threadIdx.x & 31;
    int hh = blockIdx.y * 8 + (threadIdx.x >> 5);
    if (hh >= a.H + 2 * a.Hkv) return;
    nc_rope_head<bf16>(a, t, hh, lane, hh < a.H ? a.q + ((size_t)t * a.H + hh) * NC_HEAD_DIM : NULL);
}

void nc_cuda_rope_args_fill(const nc_cuda *cu, int layer, nc_rope_args *a) {
    const nc_cuda_layer *ly = &cu->layers[layer];
    a->qkv = cu->qkv;
    a->x = cu->x;
    a->tok = META(cu, tok), a->tpos = META(cu, tpos), a->tseq = META(cu, tseq);
    a->s_bt = META(cu, s_bt), a->bt = META(cu, bt);
    a->rope = cu->rope;
    a->q = cu->q;
    nc_cuda_kv_layer kv = nc_cuda_kv_of(cu, layer);
    a->kc = kv.kc, a->vc = kv.vc, a->kc8 = kv.kc8, a->vc8 = kv.vc8, a->ksc = kv.ksc, a->vsc = kv.vsc;
    a->ve = ly->ve;
    a->ve_gate = ly->ve_gate;
    a->H = cu->H, a->Hkv = cu->Hkv, a->C = cu->C, a->ve_ch = cu->cfg.ve_gate_channels;
    a->eps = cu->cfg.norm_eps, a->qk_scale = cu->cfg.qk_scale, a->ve_scale = cu->cfg.ve_gate_scale;
}

int nc_cuda_rope_append(nc_cuda *cu, int layer, int n) {
    nc_rope_args a;
    nc_cuda_rope_args_fill(cu, layer, &a);
    dim3 grid(n, (cu->H + 2 * cu->Hkv + 7) / 8);
    cudaError_t e = nc_launch(cu, rope_append_kernel, grid, dim3(256), 0, a);
    if (e != cudaSuccess) return nc_fail("cuda: launching rope_append: %s", cudaGetErrorString(e));
    return 0;
}

/* ==== ReLU² ==== */

__global__ void relu2_kernel(bf16 *__restrict__ u, int64_t n8) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n8) return;
    uint4 v = ((uint4 *)u)[i];
    __nv_bfloat162 *p = (__nv_bfloat162 *)&v;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        float2 f = __bfloat1622float2(p[k]);
        f.x = fmaxf(f.x, 0.0f), f.y = fmaxf(f.y, 0.0f);
        p[k] = __floats2bfloat162_rn(f.x * f.x, f.y * f.y);
    }
    ((uint4 *)u)[i] = v;
}

int nc_cuda_relu2(nc_cuda *cu, bf16 *u, int64_t count) {
    int64_t n8 = count / 8;
    relu2_kernel<<<(unsigned)((n8 + 255) / 256), 256, 0, cu->stream>>>(u, n8);
    NC_CU_LAUNCHED("relu2");
    return 0;
}

/* ==== e4m3 rows for the fp8 tensor cores ==== */

/* One CTA per row: its largest magnitude (the row stays in L1 for the
 * second pass), then every value times 448 / max rounded to e4m3 (round
 * to nearest even, saturating, as the fp8 KV cache). */
__global__ void __launch_bounds__(256) quant_rows_e4m3_kernel(const bf16 *__restrict__ x, int k,
                                                              uint8_t *__restrict__ out, float *__restrict__ scale) {
    __shared__ float red[32];
    const uint4 *row = (const uint4 *)(x + (size_t)blockIdx.x * k);
    int k8 = k / 8, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float amax = 0.0f;
    for (int i = threadIdx.x; i < k8; i += blockDim.x) {
        float f[8];
        nc_bf16x8_to_f32(row[i], f);
#pragma unroll
        for (int j = 0; j < 8; j++) amax = fmaxf(amax, fabsf(f[j]));
    }
    amax = nc_warp_max(amax);
    if (lane == 0) red[warp] = amax;
    __syncthreads();
    amax = nc_warp_max(lane < (int)(blockDim.x >> 5) ? red[lane] : 0.0f);
    float inv = amax > 0.0f ? NC_E4M3_MAX / amax : 1.0f;
    if (threadIdx.x == 0) scale[blockIdx.x] = amax > 0.0f ? amax / NC_E4M3_MAX : 1.0f;
    uint2 *o = (uint2 *)(out + (size_t)blockIdx.x * k);
    for (int i = threadIdx.x; i < k8; i += blockDim.x) {
        float f[8];
        nc_bf16x8_to_f32(row[i], f);
        o[i] = make_uint2(nc_f32x2_to_e4m3x2(f[0] * inv, f[1] * inv) | nc_f32x2_to_e4m3x2(f[2] * inv, f[3] * inv) << 16,
                          nc_f32x2_to_e4m3x2(f[4] * inv, f[5] * inv) | nc_f32x2_to_e4m3x2(f[6] * inv, f[7] * inv) << 16);
    }
}

int nc_cuda_quant_rows_e4m3(nc_cuda *cu, const bf16 *x, int n, int k, uint8_t *out, float *scale) {
    NC_ASSERT(k % 8 == 0);
    quant_rows_e4m3_kernel<<<(unsigned)n, 256, 0, cu->stream>>>(x, k, out, scale);
    NC_CU_LAUNCHED("quant_rows_e4m3");
    return 0;
}

/* ==== logits rows ==== */

__global__ void __launch_bounds__(NORM_THREADS) gather_rows_kernel(const float *__restrict__ x,
                                                                   const float *__restrict__ xb, float lb,
                                                                   const int32_t *__restrict__ lrow,
                                                                   float *__restrict__ xr, bf16 *__restrict__ hr,
                                                                   int C, float eps) {
    __shared__ float red[32];
    nc_pdl_trigger();
    nc_pdl_wait();
    int r = blockIdx.x;
    const float *src = x + (size_t)lrow[r] * C;
    const float *bsrc = xb ? xb + (size_t)lrow[r] * C : NULL;
    if (hr) {
        rmsnorm_row_bf16(src, bsrc, lb, hr + (size_t)r * C, C, eps, red);
        return;
    }
    float *dst = xr + (size_t)r * C;
    if (C > NORM_MAX_C) {
        for (int c = threadIdx.x; c < C; c += NORM_THREADS) dst[c] = bsrc ? src[c] - lb * bsrc[c] : src[c];
        return;
    }
    float4 v[NORM_VEC]; /* the batch-1 step's lm_head GEMV waits for this copy: one round of loads */
    row_load_v4(src, bsrc, lb, C, v);
#pragma unroll
    for (int i = 0; i < NORM_VEC; i++) {
        int c = threadIdx.x + i * NORM_THREADS;
        if (c >= C / 4) break;
        ((float4 *)dst)[c] = v[i];
    }
}

int nc_cuda_gather_rows(nc_cuda *cu, int r0, int R, bool to_bf16) {
    NC_ASSERT(cu->C % 4 == 0); /* 16-byte rows (check_model: a multiple of 64) */
    cudaError_t e = nc_launch(cu, gather_rows_kernel, dim3(R), dim3(NORM_THREADS), 0, (const float *)cu->x,
                              (const float *)(cu->cfg.has_smear ? cu->xb : NULL), cu->backout_lambda,
                              (const int32_t *)META(cu, lrow) + r0, to_bf16 ? NULL : cu->xr,
                              to_bf16 ? cu->h : NULL, cu->C, cu->cfg.norm_eps);
    if (e != cudaSuccess) return nc_fail("cuda: launching gather_rows: %s", cudaGetErrorString(e));
    return 0;
}

/* ==== softcap ==== */

__global__ void softcap_kernel(float *__restrict__ y, int64_t count, float cap) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) y[i] = cap * tanhf(y[i] / cap);
}

int nc_cuda_softcap(nc_cuda *cu, float *y, int rows, int cols) {
    int64_t count = (int64_t)rows * cols;
    softcap_kernel<<<(unsigned)((count + 255) / 256), 256, 0, cu->stream>>>(y, count, cu->cfg.softcap);
    NC_CU_LAUNCHED("softcap");
    return 0;
}

/* ==== KV block copy ==== */

/* One CTA per (layer, k|v, kv head): the first n rows of a 64 x D tile of
 * `es`-byte values (2: bf16, 1: e4m3), and of the tile's 64 scales when sk
 * and sv are not NULL (fp8). */
__global__ void copy_block_kernel(void *kc, void *vc, float *sk, float *sv, int es, int64_t n_blocks, int Hkv,
                                  int32_t src, int32_t dst, int n) {
    int i = blockIdx.x;
    int head = i % Hkv, kv = (i / Hkv) % 2, layer = i / (2 * Hkv);
    char *base = (char *)(kv ? vc : kc);
    size_t tile = (size_t)NC_KV_BLOCK_TOKENS * NC_HEAD_DIM * es;
    size_t ts = (((size_t)layer * n_blocks + src) * Hkv + head), td = (((size_t)layer * n_blocks + dst) * Hkv + head);
    const uint4 *s = (const uint4 *)(base + ts * tile);
    uint4 *d = (uint4 *)(base + td * tile);
    int cnt = n * NC_HEAD_DIM * es / 16;
    for (int k = threadIdx.x; k < cnt; k += blockDim.x) d[k] = s[k];
    float *sc = kv ? sv : sk;
    if (sc)
        for (int k = threadIdx.x; k < n; k += blockDim.x)
            sc[td * NC_KV_BLOCK_TOKENS + k] = sc[ts * NC_KV_BLOCK_TOKENS + k];
}

int nc_cuda_copy_block(nc_cuda *cu, int32_t src, int32_t dst, int32_t n) {
    if (cu->kv_fp8)
        copy_block_kernel<<<cu->L * 2 * cu->Hkv, 256, 0, cu->stream>>>(cu->kc8, cu->vc8, cu->ksc, cu->vsc, 1,
                                                                       cu->n_blocks, cu->Hkv, src, dst, n);
    else
        copy_block_kernel<<<cu->L * 2 * cu->Hkv, 256, 0, cu->stream>>>(cu->kc, cu->vc, NULL, NULL, 2, cu->n_blocks,
                                                                       cu->Hkv, src, dst, n);
    NC_CU_LAUNCHED("copy_block");
    return 0;
}

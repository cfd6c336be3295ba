/*
 * cuda_persist.cu: batch-1 decode as one persistent kernel per token on
 * Hopper (docs/performance.md, Persistent decode). A decode step of one row
 * with bf16 weights otherwise runs ~7 kernels per layer from a CUDA graph,
 * each with a few microseconds of ramp and tail in which HBM idles; here
 * one CTA per SM runs every layer, the stages separated by grid barriers,
 * and each CTA's weights stream continuously through shared memory:
 *
 *   per layer: qkv GEMV (RMSNorm folded in) | RoPE + KV append + split-KV
 *   attention | o-proj + residual | fc GEMV + ReLU² | proj + residual (+ the
 *   next layer's V2+ lambdas, the V6 backout copy); then the lm_head with
 *   the softcap. A bar is a grid barrier (5 per layer).
 *
 * Projections: CTA b owns the contiguous rows [rows·b/n, rows·(b+1)/n) of
 * each matrix, a contiguous byte range, which it reads in tiles of whole
 * rows (NC_CUDA_PERSIST_TILE, 64 KB by default). A CTA's tiles of the whole
 * step form one stream (ps_stream) issued bufs - 1 tiles ahead of use
 * (NC_CUDA_PERSIST_BUFS, 2 by default), across stages: the next stage's
 * first tiles are on their way before the grid barrier, so HBM keeps
 * streaming while CTAs wait for each other. NC_CUDA_PERSIST_LOAD picks how
 * a tile arrives: smem (the default) copies it into a ring of bufs tiles
 * in shared memory with cp.async; reg prefetches the tiles ahead into L2
 * (cp.async.bulk.prefetch) and loads each thread's chunks of the current
 * one straight into registers with 16-byte ld.global.nc, as the GEMV does.
 * Each thread multiplies 16-byte chunks of the tile with the stage's input
 * vector (fp32, staged in shared memory after the barrier), writes one
 * partial per chunk, and a warp per row sums its partials in a fixed
 * order: deterministic, like the GEMV.
 *
 * Attention: the (kv head, split) units of cuda_attn_decode.cuh's CTA
 * function, with 16 warps per CTA and splits = CTAs / kv heads, so the
 * whole context is streamed by the whole GPU at once; the last split of a
 * kv head to finish merges (an arrival counter, as in the graph path).
 *
 * Barriers: a 64-bit arrival counter that only grows (the host passes each
 * launch its start value); a CTA arrives after a __threadfence and spins
 * on an acquire load until every CTA of this barrier arrived. Every wait is
 * bounded: past PS_TIMEOUT_NS the CTA records which barrier in an error
 * word and every CTA leaves; the host turns that into an error after the
 * step (nc_cuda_persist_check) instead of hanging. The grid is launched
 * cooperatively, so all CTAs are resident or the launch fails.
 *
 * The embedding (and layer 0's lambdas) run as the small kernels before,
 * sampling as cuda_sample.cu after; all data written inside the kernel is
 * read through L2 (ld.cg) or after a barrier's acquire, never through the
 * non-coherent path.
 */
#include "cuda_attn_decode.cuh"

#define PS_WARPS 16
#define PS_THREADS (PS_WARPS * 32)
#define PS_TILE_DEFAULT 65536          /* bytes per weight tile (NC_CUDA_PERSIST_TILE) */
#define PS_BUFS_DEFAULT 2              /* tiles in flight (NC_CUDA_PERSIST_BUFS) */
#define PS_REG_LOADS 8                 /* reg: 16-byte loads per thread and tile (64 KB per CTA at most) */
#define PS_STAGES 5                    /* grid barriers per layer */
#define PS_TIMEOUT_NS 10000000000ull   /* a CTA waiting 10 s at a barrier means a bug: stop */

/* How a projection stage stores its outputs. */
enum { PS_EPI_QKV, PS_EPI_ADD, PS_EPI_RELU2, PS_EPI_PROJ, PS_EPI_SOFTCAP };

/* One layer as the kernel reads it (a device table built per batch layout). */
typedef struct {
    const bf16 *qkv, *o, *fc, *proj;
    float rl_next, xl_next; /* the next layer's V2+ lambdas (applied in this layer's proj epilogue) */
    dec_args attn;
} ps_layer;

typedef struct {
    const ps_layer *layers;
    const bf16 *lm_head;
    float *x, *x0, *xb, *qkv, *logits;
    bf16 *attn, *u;
    int L, C, Q, F, HD, V, Hkv, splits;
    int lambdas, smear_layer; /* V2+; the layer after which x is kept for the backout (V6), else -1 */
    float backout, eps, softcap;
    int tile_chunks, bufs, reg;    /* 16-byte chunks per tile, tiles in flight, loads into registers */
    unsigned long long *bar, base; /* arrival counter and its value at this launch */
    int *err;                      /* 0, or 1 + the barrier a CTA gave up at */
    unsigned long long *stamps;    /* NC_CUDA_PROFILE: CTA 0's time after each barrier, or NULL */
} ps_params;

struct nc_cuda_persist {
    void (*kernel)(ps_params);
    int grid, splits, tile_bytes, bufs;
    bool reg;
    size_t smem;
    char description[96];
    ps_layer *layers_d;
    nc_cuda_meta_layout built_for; /* the metadata offsets layers_d points into (used = 0) */
    bool built;
    unsigned long long *bar, base;
    int *err_d, *err_h;            /* err_h: pinned, filled after each step */
    unsigned long long *stamps_d;
    bool pending;                  /* a step ran whose error word is not checked yet */
};

/* A weight matrix of a projection stage (w NULL: none). */
typedef struct {
    const bf16 *w;
    int rows, K;
} ps_mat;

/* The kernel's shared memory: the ring of weight tiles (smem loads), the
 * stage's input vector, a tile's chunk partials, the block reductions and
 * the barrier's verdict. */
typedef struct {
    uint4 *ring;
    float *xs, *part, *red;
    int *flag;
} ps_smem;

/* The weight tiles of a step in the order the stages use them (every
 * CTA its own rows): the next tile to issue, tile t of stage s (stage
 * 4l + 0..3: layer l's qkv, o, fc, proj; 4L: the lm_head), and how many
 * tiles were issued and used so far (a tile's ring slot: its count %
 * bufs). Issuing runs bufs - 1 tiles ahead of use, across stages and
 * the grid barriers between them. */
typedef struct {
    int s, t, issued, used;
} ps_stream;

__device__ __forceinline__ void cp_async16(void *dst, const void *src) {
    unsigned s = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;" ::"r"(s), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
/* Waits until at most n (1..3) of this thread's cp.async groups are pending. */
__device__ __forceinline__ void cp_async_wait_upto(int n) {
    if (n <= 1)
        cp_async_wait<1>();
    else if (n == 2)
        cp_async_wait<2>();
    else
        cp_async_wait<3>();
}

/* Starts bringing `bytes` (a multiple of 16) at src into L2. */
__device__ __forceinline__ void prefetch_l2(const void *src, unsigned bytes) {
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(src), "r"(bytes) : "memory");
}

__device__ __forceinline__ unsigned long long ld_acquire(const unsigned long long *p) {
    unsigned long long v;
    asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
    return v;
}

__device__ __forceinline__ unsigned long long global_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* The matrix of stage s (see ps_stream). */
__device__ __forceinline__ ps_mat ps_stage_mat(const ps_params &p, int s) {
    if (s >= 4 * p.L) return ps_mat{p.lm_head, p.V, p.C};
    const ps_layer *ly = p.layers + s / 4;
    switch (s % 4) {
    case 0: return ps_mat{ly->qkv, p.Q, p.C};
    case 1: return ps_mat{ly->o, p.C, p.HD};
    case 2: return ps_mat{ly->fc, p.F, p.C};
    default: return ps_mat{ly->proj, p.C, p.F};
    }
}

/* This CTA's rows of m and its tiles of whole rows. */
typedef struct {
    int r0, r1, tile_rows, tiles;
} ps_span;

__device__ __forceinline__ ps_span ps_span_of(const ps_params &p, const ps_mat &m) {
    ps_span s;
    s.r0 = (int)((int64_t)m.rows * blockIdx.x / gridDim.x);
    s.r1 = (int)((int64_t)m.rows * (blockIdx.x + 1) / gridDim.x);
    s.tile_rows = max(1, p.tile_chunks / (m.K / 8));
    s.tiles = (s.r1 - s.r0 + s.tile_rows - 1) / s.tile_rows;
    return s;
}

/* Issues the next tile of the stream: into its ring slot as one cp.async
 * group (smem loads; an empty group past the last tile), or as an L2
 * prefetch (reg loads). */
__device__ void ps_issue_next(const ps_params &p, ps_stream &q, uint4 *ring) {
    for (; q.s <= 4 * p.L; q.s++, q.t = 0) {
        ps_mat m = ps_stage_mat(p, q.s);
        ps_span sp = ps_span_of(p, m);
        if (q.t >= sp.tiles) continue;
        int row0 = sp.r0 + q.t * sp.tile_rows, n = min(sp.tile_rows, sp.r1 - row0) * (m.K / 8);
        const uint4 *src = (const uint4 *)m.w + (size_t)row0 * (m.K / 8);
        if (p.reg) {
            if (threadIdx.x == 0) prefetch_l2(src, (unsigned)n * 16u);
        } else {
            uint4 *buf = ring + (size_t)(q.issued % p.bufs) * p.tile_chunks;
            for (int j = threadIdx.x; j < n; j += PS_THREADS) cp_async16(buf + j, src + j);
        }
        q.t++;
        break;
    }
    if (!p.reg) cp_async_commit();
    q.issued++;
}

/* The grid barrier (see the top comment); false when a CTA gave up, in
 * which case every thread of this CTA must leave the kernel. */
__device__ bool ps_sync(const ps_params &p, int &n_bar, int *flag) {
    __syncthreads();
    int k = n_bar++;
    if (threadIdx.x == 0) {
        unsigned long long target = p.base + (unsigned long long)(k + 1) * gridDim.x;
        __threadfence();
        atomicAdd(p.bar, 1ull);
        unsigned long long deadline = global_ns() + PS_TIMEOUT_NS;
        int ok = 1;
        while (ld_acquire(p.bar) < target) {
            if (*(volatile int *)p.err || global_ns() > deadline) {
                atomicCAS(p.err, 0, k + 1);
                ok = 0;
                break;
            }
        }
        __threadfence();
        *flag = ok;
        if (p.stamps && blockIdx.x == 0) p.stamps[k + 1] = global_ns();
    }
    __syncthreads();
    return *flag;
}

/* Stages the input vector of a projection into xs (fp32, K values): the
 * bf16 vector src, or (src NULL) the residual x, less the V6 backout for
 * the logits; returns the RMSNorm scale 1/rms of x (1 for bf16 inputs,
 * which are not normed). */
__device__ float ps_stage_input(const ps_params &p, const bf16 *src, bool logits, int K, float *xs, float *red) {
    float ss = 0.0f;
    for (int c = threadIdx.x; c < K; c += PS_THREADS) {
        float v;
        if (src) {
            v = __bfloat162float(__ldcg(src + c));
        } else {
            v = __ldcg(p.x + c);
            if (logits && p.smear_layer >= 0) v -= p.backout * __ldcg(p.xb + c);
        }
        xs[c] = v;
        ss = fmaf(v, v, ss);
    }
    ss = nc_block_sum(ss, red);
    return src ? 1.0f : rsqrtf(ss / (float)K + p.eps);
}

/* Row r's output y = dot(W[r], input) (before the norm scale s). */
__device__ __forceinline__ void ps_store(const ps_params &p, int epi, int layer, int r, float y, float s) {
    if (epi == PS_EPI_QKV) {
        p.qkv[r] = y * s;
    } else if (epi == PS_EPI_ADD) {
        p.x[r] = __ldcg(p.x + r) + y;
    } else if (epi == PS_EPI_RELU2) {
        float t = fmaxf(y * s, 0.0f);
        p.u[r] = __float2bfloat16_rn(t * t);
    } else if (epi == PS_EPI_PROJ) {
        float v = __ldcg(p.x + r) + y;
        if (layer == p.smear_layer) p.xb[r] = v;
        if (p.lambdas && layer + 1 < p.L) {
            const ps_layer *ly = p.layers + layer;
            v = ly->rl_next * v + ly->xl_next * p.x0[r];
        }
        p.x[r] = v;
    } else if (r < p.V) {
        p.logits[r] = p.softcap * tanhf(y * s / p.softcap);
    }
}

/* part[j] = 16-byte chunk j of a tile (K/8 chunks per row) times its
 * slice of the input vector xs. */
__device__ __forceinline__ void ps_chunk_dot(uint4 wv, int j, int k8, float inv_k8, const float *xs, float *part) {
    /* (j + 0.5) / k8 is at least 0.5 / k8 from an integer: exact row */
    int r = __float2int_rd(((float)j + 0.5f) * inv_k8), c = j - r * k8;
    float wf[8];
    nc_bf16x8_to_f32(wv, wf);
    float4 a = *(const float4 *)(xs + 8 * c), b = *(const float4 *)(xs + 8 * c + 4);
    float d = wf[0] * a.x;
    d = fmaf(wf[1], a.y, d), d = fmaf(wf[2], a.z, d), d = fmaf(wf[3], a.w, d);
    d = fmaf(wf[4], b.x, d), d = fmaf(wf[5], b.y, d), d = fmaf(wf[6], b.z, d), d = fmaf(wf[7], b.w, d);
    part[j] = d;
}

/* Stage s, a projection: in = its bf16 input vector, or NULL for the
 * RMSNorm of the residual. Each of this CTA's tiles: the stream issues
 * one tile more, the tile's chunks are multiplied (from the ring, or
 * loaded into registers) into one partial each, and a warp per row sums
 * its partials in a fixed order. */
__device__ void ps_project(const ps_params &p, int s, const bf16 *in, int epi, const ps_smem &sm, ps_stream &q) {
    ps_mat m = ps_stage_mat(p, s);
    ps_span sp = ps_span_of(p, m);
    int layer = min(s / 4, p.L - 1), k8 = m.K / 8, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    float scale = sp.tiles ? ps_stage_input(p, in, epi == PS_EPI_SOFTCAP, m.K, sm.xs, sm.red) : 1.0f;
    float inv_k8 = 1.0f / (float)k8;
    for (int t = 0; t < sp.tiles; t++, q.used++) {
        ps_issue_next(p, q, sm.ring);
        int row0 = sp.r0 + t * sp.tile_rows, nr = min(sp.tile_rows, sp.r1 - row0), n = nr * k8;
        if (p.reg) {
            const uint4 *src = (const uint4 *)m.w + (size_t)row0 * k8;
            uint4 wv[PS_REG_LOADS];
#pragma unroll
            for (int u = 0; u < PS_REG_LOADS; u++) {
                int j = threadIdx.x + u * PS_THREADS;
                if (j < n) wv[u] = ld_kv(src + j); /* the decode attention's streaming 16-byte load */
            }
#pragma unroll
            for (int u = 0; u < PS_REG_LOADS; u++) {
                int j = threadIdx.x + u * PS_THREADS;
                if (j < n) ps_chunk_dot(wv[u], j, k8, inv_k8, sm.xs, sm.part);
            }
        } else {
            cp_async_wait_upto(p.bufs - 1); /* tile q.used has landed */
            __syncthreads();
            const uint4 *w = sm.ring + (size_t)(q.used % p.bufs) * p.tile_chunks;
            for (int j = threadIdx.x; j < n; j += PS_THREADS) ps_chunk_dot(w[j], j, k8, inv_k8, sm.xs, sm.part);
        }
        __syncthreads();
        for (int r = warp; r < nr; r += PS_WARPS) {
            float y = 0.0f;
            for (int c = lane; c < k8; c += 32) y += sm.part[r * k8 + c];
            y = nc_warp_sum(y);
            if (lane == 0) ps_store(p, epi, layer, row0 + r, y, scale);
        }
        __syncthreads();
    }
}

template <int G, bool KV8>
__global__ void __launch_bounds__(PS_THREADS, 1) persist_kernel(ps_params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ float red[32];
    __shared__ int flag;
    ps_smem sm;
    sm.ring = (uint4 *)smem;
    sm.xs = (float *)(sm.ring + (p.reg ? 0 : (size_t)p.bufs * p.tile_chunks)); /* max(C, H·D, F) floats */
    sm.part = sm.xs + ((max(max(p.C, p.HD), p.F) + 3) & ~3);                     /* a tile's chunk partials */
    sm.red = red, sm.flag = &flag;
    dec_shared<G, PS_WARPS> &att = *(dec_shared<G, PS_WARPS> *)sm.xs; /* attention: over xs and part */
    int n_bar = 0;
    if (p.stamps && blockIdx.x == 0 && threadIdx.x == 0) p.stamps[0] = global_ns();
    ps_stream q = {0, 0, 0, 0};
    for (int i = 0; i + 1 < p.bufs; i++) ps_issue_next(p, q, sm.ring);
    for (int l = 0; l < p.L; l++) {
        const ps_layer *ly = p.layers + l;
        if (l > 0 && !ps_sync(p, n_bar, &flag)) break;
        ps_project(p, 4 * l, NULL, PS_EPI_QKV, sm, q);
        if (!ps_sync(p, n_bar, &flag)) break;
        for (int u = blockIdx.x; u < p.Hkv * p.splits; u += gridDim.x) {
            nc_attn_decode_cta<G, false, KV8, PS_WARPS>(ly->attn, u % p.splits, u / p.splits, 0, att);
            __syncthreads();
        }
        if (!ps_sync(p, n_bar, &flag)) break;
        ps_project(p, 4 * l + 1, p.attn, PS_EPI_ADD, sm, q);
        if (!ps_sync(p, n_bar, &flag)) break;
        ps_project(p, 4 * l + 2, NULL, PS_EPI_RELU2, sm, q);
        if (!ps_sync(p, n_bar, &flag)) break;
        ps_project(p, 4 * l + 3, p.u, PS_EPI_PROJ, sm, q);
        if (l + 1 == p.L && ps_sync(p, n_bar, &flag)) ps_project(p, 4 * p.L, NULL, PS_EPI_SOFTCAP, sm, q);
    }
    cp_async_wait<0>();
    if (p.stamps && blockIdx.x == 0 && threadIdx.x == 0) p.stamps[n_bar + 1] = global_ns();
#else
    __trap(); /* nc_cuda_persist_init enables this path only where the sm_90a code runs */
#endif
}

/* ==== host ==== */

static void (*const ps_kernels[2][NC_ATTN_MAX_GROUP + 1])(ps_params) = {
    {NULL, persist_kernel<1, false>, persist_kernel<2, false>, persist_kernel<3, false>, persist_kernel<4, false>,
     persist_kernel<5, false>, persist_kernel<6, false>, persist_kernel<7, false>, persist_kernel<8, false>},
    {NULL, persist_kernel<1, true>, persist_kernel<2, true>, persist_kernel<3, true>, persist_kernel<4, true>,
     persist_kernel<5, true>, persist_kernel<6, true>, persist_kernel<7, true>, persist_kernel<8, true>}};

static const size_t ps_attn_smem[NC_ATTN_MAX_GROUP + 1] = {
    0, sizeof(dec_shared<1, PS_WARPS>), sizeof(dec_shared<2, PS_WARPS>), sizeof(dec_shared<3, PS_WARPS>),
    sizeof(dec_shared<4, PS_WARPS>), sizeof(dec_shared<5, PS_WARPS>), sizeof(dec_shared<6, PS_WARPS>),
    sizeof(dec_shared<7, PS_WARPS>), sizeof(dec_shared<8, PS_WARPS>)};

static int barriers_per_step(const nc_cuda *cu) { return PS_STAGES * cu->L; }

/* The settings in force, for messages. */
static void knob_names(const nc_cuda *cu, int tile, int bufs, char *out, size_t n) {
    snprintf(out, n, "NC_CUDA_PERSIST_TILE=%d NC_CUDA_PERSIST_BUFS=%d NC_CUDA_PERSIST_LOAD=%s", tile, bufs,
             cu->env.cuda_persist_load);
}

int nc_cuda_persist_init(nc_cuda *cu) {
    cu->persist = NULL;
    /* sm_90 with this binary's sm_90a code, bf16 matrices; never under
     * --deterministic, whose batch-invariant kernels every step must use */
    if (!cu->env.cuda_persist || cu->det || cu->cc_major != 9 || !cu->have_wgmma ||
        cu->layer_format != NC_WEIGHT_BF16 || cu->lm_head.format != NC_WEIGHT_BF16)
        return 0;
    /* Tile and ring sizes: the defaults fall back to the graph path where
     * they do not fit; values set on purpose that do not fit are errors. */
    bool chosen = cu->env.cuda_persist_tile || cu->env.cuda_persist_bufs;
    int tile = cu->env.cuda_persist_tile ? cu->env.cuda_persist_tile : PS_TILE_DEFAULT;
    int bufs = cu->env.cuda_persist_bufs ? cu->env.cuda_persist_bufs : PS_BUFS_DEFAULT;
    bool reg = !strcmp(cu->env.cuda_persist_load, "reg");
    char knobs[160];
    knob_names(cu, tile, bufs, knobs, sizeof knobs);
    int widest = NC_MAX(NC_MAX(cu->C, cu->H * cu->D), cu->F);
    if (widest * 2 > tile) { /* a tile holds at least one whole row */
        if (!chosen) return 0;
        return nc_fail("cuda: the persistent decode kernel with %s: a %d-byte tile does not hold one %d-byte "
                       "row of this model; use a tile of at least %d bytes",
                       knobs, tile, widest * 2, (widest * 2 + 4095) / 4096 * 4096);
    }
    int tile_chunks = tile / 16;
    NC_ASSERT(tile_chunks <= PS_REG_LOADS * PS_THREADS); /* the env's range: 64 KB at most */
    size_t xs_floats = (size_t)((widest + 3) & ~3);
    size_t stage = (xs_floats + (size_t)tile_chunks) * sizeof(float);
    size_t smem = (reg ? 0 : (size_t)bufs * tile) + NC_MAX(stage, ps_attn_smem[cu->G]);
    int optin = 0;
    NC_CU_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, cu->device));
    if (smem + 1024 > (size_t)optin) { /* + the kernel's static shared memory */
        if (!chosen) return 0;
        return nc_fail("cuda: the persistent decode kernel with %s needs %zu bytes of shared memory per SM for "
                       "this model, the GPU has %d; use a smaller tile or fewer tiles in flight",
                       knobs, smem + 1024, optin);
    }
    void (*kernel)(ps_params) = ps_kernels[cu->kv_fp8 ? 1 : 0][cu->G];
    NC_CU_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int per_sm = 0;
    NC_CU_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, PS_THREADS, smem));
    if (per_sm < 1) return 0;
    nc_cuda_persist *ps = (nc_cuda_persist *)nc_xcalloc(1, sizeof *ps);
    cu->persist = ps;
    ps->kernel = kernel;
    ps->grid = cu->sm_count;
    ps->smem = smem;
    ps->tile_bytes = tile, ps->bufs = bufs, ps->reg = reg;
    snprintf(ps->description, sizeof ps->description, "persistent kernel (%d KB tiles, %d in flight, %s)",
             tile / 1024, bufs, reg ? "loaded into registers, prefetched to L2" : "through shared memory");
    int64_t part_cap = cu->part_floats / ((int64_t)cu->H * (cu->D + 2));
    ps->splits = (int)NC_MAX(1, NC_MIN(NC_MIN(ps->grid / cu->Hkv, NC_ATTN_MAX_SPLITS), part_cap));
    NC_CU_TRY(cudaMalloc((void **)&ps->layers_d, (size_t)cu->L * sizeof(ps_layer)));
    NC_CU_TRY(cudaMalloc((void **)&ps->bar, 16));
    NC_CU_TRY(cudaMemset(ps->bar, 0, 16));
    ps->err_d = (int *)(ps->bar + 1);
    NC_CU_TRY(cudaMallocHost((void **)&ps->err_h, sizeof(int)));
    *ps->err_h = 0;
    if (cu->profile)
        NC_CU_TRY(cudaMalloc((void **)&ps->stamps_d, (size_t)(barriers_per_step(cu) + 2) * sizeof(unsigned long long)));
    return 0;
}

const char *nc_cuda_persist_describe(const nc_cuda *cu) { return cu->persist ? cu->persist->description : NULL; }

void nc_cuda_persist_free(nc_cuda *cu) {
    nc_cuda_persist *ps = cu->persist;
    if (!ps) return;
    if (ps->layers_d) cudaFree(ps->layers_d);
    if (ps->bar) cudaFree(ps->bar);
    if (ps->stamps_d) cudaFree(ps->stamps_d);
    if (ps->err_h) cudaFreeHost(ps->err_h);
    free(ps);
    cu->persist = NULL;
}

/* The per-layer table: weights, lambdas and the attention arguments, which
 * point into the metadata of the batch layout (fixed for one decode row). */
static int build_layers(nc_cuda *cu) {
    nc_cuda_persist *ps = cu->persist;
    nc_cuda_meta_layout key = cu->ml;
    key.used = 0; /* the block table, last, grows with the context; the offsets stay */
    if (ps->built && !memcmp(&ps->built_for, &key, sizeof key)) return 0;
    ps_layer *t = (ps_layer *)nc_xcalloc((size_t)cu->L, sizeof *t);
    for (int l = 0; l < cu->L; l++) {
        const nc_cuda_layer *ly = &cu->layers[l];
        t[l].qkv = (const bf16 *)ly->qkv.data, t[l].o = (const bf16 *)ly->o.data;
        t[l].fc = (const bf16 *)ly->fc.data, t[l].proj = (const bf16 *)ly->proj.data;
        t[l].rl_next = l + 1 < cu->L ? cu->layers[l + 1].resid_lambda : 1.0f;
        t[l].xl_next = l + 1 < cu->L ? cu->layers[l + 1].x0_lambda : 0.0f;
        nc_cuda_dec_args_fill(cu, l, ps->splits, true, &t[l].attn);
    }
    /* from pageable memory: the copy is staged before the call returns */
    cudaError_t e = cudaMemcpyAsync(ps->layers_d, t, (size_t)cu->L * sizeof *t, cudaMemcpyHostToDevice, cu->stream);
    free(t);
    if (e != cudaSuccess) return nc_fail("cuda: uploading the persistent kernel's layer table: %s", cudaGetErrorString(e));
    ps->built_for = key;
    ps->built = true;
    return 0;
}

int nc_cuda_persist_step(nc_cuda *cu) {
    nc_cuda_persist *ps = cu->persist;
    if (build_layers(cu) || nc_cuda_embed(cu, 1) || (cu->cfg.has_lambdas && nc_cuda_lambdas(cu, 0, 1))) return -1;
    ps_params p = {};
    p.layers = ps->layers_d;
    p.lm_head = (const bf16 *)cu->lm_head.data;
    p.x = cu->x, p.x0 = cu->x0, p.xb = cu->xb, p.qkv = cu->qkv, p.logits = cu->logits;
    p.attn = cu->attn, p.u = cu->u;
    p.L = cu->L, p.C = cu->C, p.Q = cu->Q, p.F = cu->F, p.HD = cu->H * cu->D, p.V = cu->lm_head.used_rows;
    p.Hkv = cu->Hkv, p.splits = ps->splits;
    p.lambdas = cu->cfg.has_lambdas;
    p.smear_layer = cu->cfg.has_smear ? cu->L / 2 : -1;
    p.backout = cu->backout_lambda, p.eps = cu->cfg.norm_eps, p.softcap = cu->cfg.softcap;
    p.tile_chunks = ps->tile_bytes / 16, p.bufs = ps->bufs, p.reg = ps->reg;
    p.bar = ps->bar, p.base = ps->base, p.err = ps->err_d;
    p.stamps = ps->stamps_d;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(ps->grid);
    cfg.blockDim = dim3(PS_THREADS);
    cfg.dynamicSmemBytes = ps->smem;
    cfg.stream = cu->stream;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeCooperative; /* all CTAs resident, or the launch fails */
    at[0].val.cooperative = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    cudaError_t e = cudaLaunchKernelEx(&cfg, ps->kernel, p);
    if (e != cudaSuccess) return nc_fail("cuda: launching the persistent decode kernel: %s", cudaGetErrorString(e));
    ps->base += (unsigned long long)barriers_per_step(cu) * ps->grid;
    NC_CU_TRY(cudaMemcpyAsync(ps->err_h, ps->err_d, sizeof(int), cudaMemcpyDeviceToHost, cu->stream));
    ps->pending = true;
    return 0;
}

/* NC_CUDA_PROFILE: the stages' shares of the step from CTA 0's barrier
 * times (each stage's time includes its wait at the barrier after it). */
static int collect_profile(nc_cuda *cu) {
    nc_cuda_persist *ps = cu->persist;
    int n = barriers_per_step(cu) + 2;
    unsigned long long *t = (unsigned long long *)nc_xcalloc((size_t)n, sizeof *t);
    cudaError_t e = cudaMemcpy(t, ps->stamps_d, (size_t)n * sizeof *t, cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) {
        static const int stage[PS_STAGES] = {NC_PROF_QKV, NC_PROF_ATTN, NC_PROF_WO, NC_PROF_FC, NC_PROF_PROJ};
        for (int i = 0; i < NC_PROF_STAGES; i++) cu->prof_ms[i] = 0;
        for (int i = 0; i + 1 < n; i++)
            cu->prof_ms[i < n - 2 ? stage[i % PS_STAGES] : NC_PROF_LOGITS] += (double)(t[i + 1] - t[i]) * 1e-6;
    }
    free(t);
    if (e != cudaSuccess) return nc_fail("cuda: reading the persistent kernel's profile: %s", cudaGetErrorString(e));
    return 0;
}

int nc_cuda_persist_check(nc_cuda *cu) {
    nc_cuda_persist *ps = cu->persist;
    if (!ps || !ps->pending) return 0;
    ps->pending = false;
    int err = *(volatile int *)ps->err_h;
    if (!err) return ps->stamps_d ? collect_profile(cu) : 0;
    /* Fresh barrier and attention counters for the next step. */
    *ps->err_h = 0;
    ps->base = 0;
    NC_CU_TRY(cudaMemset(ps->bar, 0, 16));
    NC_CU_TRY(cudaMemset(cu->attn_count, 0, (size_t)cu->max_seqs * cu->Hkv * sizeof(int)));
    NC_CU_TRY(cudaDeviceSynchronize());
    static const char *const names[PS_STAGES] = {"qkv", "attention", "attention projection", "MLP fc", "MLP proj"};
    int k = err; /* barrier err - 1, counted as if a barrier preceded layer 0's qkv */
    int layer = k / PS_STAGES;
    return nc_fail("cuda: the persistent decode kernel gave up: a CTA waited %.0f s at the grid barrier before %s "
                   "%s%d (all CTAs must be resident on the GPU at once); NC_CUDA_PERSIST=0 selects the CUDA "
                   "graph path",
                   PS_TIMEOUT_NS * 1e-9, layer < cu->L ? names[k % PS_STAGES] : "the lm_head",
                   layer < cu->L ? "of layer " : "after layer ", layer < cu->L ? layer : cu->L - 1);
}

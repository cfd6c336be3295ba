/*
 * cuda_persist.cu: batch-1 decode as one persistent kernel per token on
 * Hopper (docs/performance.md, Persistent decode). A decode step of one row
 * otherwise runs ~7 kernels per layer from a CUDA graph, each with a few
 * microseconds of ramp and tail in which HBM idles; here one CTA per SM runs
 * every layer, the stages separated by grid barriers:
 *
 *   per layer: qkv GEMV (RMSNorm folded in) | RoPE + KV append + split-KV
 *   attention | o-proj + residual | fc GEMV + ReLU² | proj + residual (+ the
 *   next layer's V2+ lambdas, the V6 backout copy); then the lm_head with
 *   the softcap. A bar is a grid barrier (5 per layer).
 *
 * Weights never depend on activations, so each CTA streams them without
 * ever waiting for a barrier: a producer warp (one lane) walks the CTA's
 * weight tiles of the whole step in the order the stages use them and
 * copies each into a ring of shared-memory slots with one bulk copy (TMA,
 * cp.async.bulk, completing on the slot's "full" mbarrier), as far ahead as
 * the ring allows (NC_CUDA_PERSIST_BUFS slots; as many as fit by default,
 * ~170 KB on d34). The 8 consumer warps do everything else: they wait on a
 * slot's full barrier, multiply it, release it on its "empty" barrier, and
 * take the grid barriers. So while the consumers wait at a barrier, stage
 * their input vector or run attention, the next stage's weights keep
 * arriving; the stream only stalls where the ring is full.
 *
 * Tiles and pieces: CTA b owns the contiguous rows [rows·b/n, rows·(b+1)/n)
 * of each matrix, a contiguous byte range, cut into tiles of whole rows of
 * at most a slot (16·C bytes: 8 bf16 rows of C values, 2 of F = 4C; twice
 * as many 8-bit rows), in 16 pieces of C bytes, each within one row (every
 * row is a whole number of pieces). Consumer warp w multiplies pieces w and
 * w + 8 with the stage's input vector, staged in shared memory after the
 * barrier (fp32 when RMS-normed, else bf16 as written); the pieces of a row
 * are then summed in piece order by one lane: deterministic, like the GEMV.
 * 8-bit weights (int8 / e4m3) are widened exactly (cuda_q8.cuh) and the
 * row scale applied to the finished dot.
 *
 * Attention: the (kv head, split) units of cuda_attn_decode.cuh's CTA
 * function, run by the 8 consumer warps, with splits = CTAs / kv heads, so
 * the whole context is streamed by the whole GPU at once; the last split of
 * a kv head to finish merges (an arrival counter, as in the graph path).
 *
 * Barriers: a 64-bit arrival counter that only grows (the host passes each
 * launch its start value); a CTA arrives after a __threadfence and spins on
 * an acquire load until every CTA of this barrier arrived. Every wait (grid
 * barrier, slot full or empty) is bounded: past PS_TIMEOUT_NS the CTA
 * records what it waited for in an error word and every CTA leaves; the
 * host turns that into an error after the step (nc_cuda_persist_check)
 * instead of hanging. The producer leaves only once every copy it issued
 * has landed. The grid is launched cooperatively, so all CTAs are resident
 * or the launch fails.
 *
 * The embedding (and layer 0's lambdas) run as the small kernels before,
 * sampling as cuda_sample.cu after; all data written inside the kernel is
 * read through L2 (ld.cg) or after a barrier's acquire, never through the
 * non-coherent path.
 */
#include "cuda_attn_decode.cuh"
#include "cuda_q8.cuh"

/* 8 consumer warps and the producer: 3 warps per SM sub-partition at most,
 * so up to 168 registers a thread (17 warps would cap them at 96 and spill
 * the attention stage). */
#define PS_WARPS 8                         /* consumer warps */
#define PS_CONSUMERS (PS_WARPS * 32)
#define PS_THREADS (PS_CONSUMERS + 32)     /* + the producer warp */
#define PS_PIECES 16                       /* C-byte pieces per slot: two per consumer warp */
#define PS_MAX_SLOTS 16                    /* ring slots at most (NC_CUDA_PERSIST_BUFS) */
#define PS_STAGE_LOADS 8                   /* 16-byte loads per consumer thread staging a bf16 input vector */
#define PS_STAGE_LOADS_F32 4               /* and an fp32 one */
#define PS_STAGES 5                        /* grid barriers per layer */
#define PS_TIMEOUT_NS 10000000000ull       /* a wait of 10 s means a bug: stop */
#define PS_PROF_KINDS 6                    /* profiled stage kinds: qkv, attention, o, fc, proj, lm_head */

/* How a projection stage stores its outputs. */
enum { PS_EPI_QKV, PS_EPI_ADD, PS_EPI_RELU2, PS_EPI_PROJ, PS_EPI_SOFTCAP };

/* One weight matrix as the kernel reads it (nc_cuda_weight's data). */
typedef struct {
    const uint8_t *w;
    const float *scale; /* 8-bit row scales, else NULL */
    int format;         /* nc_cuda_weight_format */
} ps_weight;

/* One layer as the kernel reads it (a device table built per batch layout). */
typedef struct {
    ps_weight qkv, o, fc, proj;
    float rl_next, xl_next; /* the next layer's V2+ lambdas (applied in this layer's proj epilogue) */
    dec_args attn;
} ps_layer;

typedef struct {
    const ps_layer *layers;
    ps_weight lm_head;
    float *x, *x0, *xb, *qkv, *logits;
    bf16 *attn, *u;
    int L, C, Q, F, HD, V, Hkv, splits;
    int lambdas, smear_layer; /* V2+; the layer after which x is kept for the backout (V6), else -1 */
    float backout, eps, softcap;
    int slots;                     /* ring slots of 16·C bytes */
    int max_rows;                  /* rows of any matrix one CTA owns, at most (scale and residual staging) */
    unsigned long long *bar, base; /* arrival counter and its value at this launch */
    int *err;                      /* 0; 1 + the barrier a CTA gave up at; or -1 - the stage whose tiles it
                                      waited for in vain */
    unsigned long long *prof;      /* NC_CUDA_PROFILE: the times of ps_prof_at, or NULL */
} ps_params;

/* The matrix of stage s (stage 4l + 0..3: layer l's qkv, o, fc, proj; 4L:
 * the lm_head) with its shape. */
typedef struct {
    ps_weight w;
    int rows, K, row_bytes;
} ps_mat;

__device__ __forceinline__ ps_mat ps_stage_mat(const ps_params &p, int s) {
    ps_mat m;
    if (s >= 4 * p.L) {
        m.w = p.lm_head, m.rows = p.V, m.K = p.C;
    } else {
        const ps_layer *ly = p.layers + s / 4;
        switch (s % 4) {
        case 0: m.w = ly->qkv, m.rows = p.Q, m.K = p.C; break;
        case 1: m.w = ly->o, m.rows = p.C, m.K = p.HD; break;
        case 2: m.w = ly->fc, m.rows = p.F, m.K = p.C; break;
        default: m.w = ly->proj, m.rows = p.C, m.K = p.F; break;
        }
    }
    m.row_bytes = m.w.format == NC_WEIGHT_BF16 ? 2 * m.K : m.K;
    return m;
}

/* This CTA's rows of m and its tiles of whole rows (a slot each). */
typedef struct {
    int r0, r1, tile_rows, tiles;
} ps_span;

__device__ __forceinline__ ps_span ps_span_of(const ps_params &p, const ps_mat &m) {
    ps_span s;
    s.r0 = (int)((int64_t)m.rows * blockIdx.x / gridDim.x);
    s.r1 = (int)((int64_t)m.rows * (blockIdx.x + 1) / gridDim.x);
    s.tile_rows = 16 * p.C / m.row_bytes;
    s.tiles = (s.r1 - s.r0 + s.tile_rows - 1) / s.tile_rows;
    return s;
}

/* ==== the profile (NC_CUDA_PROFILE) ====
 *
 * p.prof holds, per CTA b of n: for each of the step's barriers k = 1 ..
 * 5L the %globaltimer when b arrived at it and when it left it (k = 0:
 * only "left", the kernel's start; k = 5L + 1: only "arrived", its end),
 * then the nanoseconds b's consumers waited for tiles that had not landed
 * yet and its producer waited for a free slot, per stage kind. A stage is
 * stream-bound where its consumers wait for tiles, consumer-bound where
 * the producer waits for slots. */
__host__ __device__ __forceinline__ size_t ps_prof_at(int k, int b, int left, int n) {
    return ((size_t)k * n + b) * 2 + left;
}
/* role 0: the consumers' wait for tiles; 1: the producer's wait for slots */
__host__ __device__ __forceinline__ size_t ps_prof_wait(int barriers, int b, int role, int kind, int n) {
    return ps_prof_at(barriers + 2, 0, 0, n) + ((size_t)b * 2 + role) * PS_PROF_KINDS + kind;
}
/* stage s's kind: qkv 0, (attention 1), o 2, fc 3, proj 4, lm_head 5 */
__host__ __device__ __forceinline__ int ps_prof_kind(int s, int L) {
    return s >= 4 * L ? 5 : s % 4 == 0 ? 0 : s % 4 + 1;
}

/* ==== mbarriers and bulk copies (sm_90) ==== */

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void mbar_init(uint64_t *b, int count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(b)), "r"(count) : "memory");
}

/* True once the phase of b with this parity has completed (acquire: the
 * data it guards is visible to the caller). */
__device__ __forceinline__ bool mbar_test(uint64_t *b, int parity) {
    uint32_t ok;
    asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                 : "=r"(ok)
                 : "r"(smem_addr(b)), "r"(parity)
                 : "memory");
    return ok != 0;
}

__device__ __forceinline__ void mbar_arrive(uint64_t *b) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(smem_addr(b)) : "memory");
}

/* Copies `bytes` (a multiple of 16, both addresses 16-byte aligned) from
 * global src to shared dst; the copy completes the current phase of `full`
 * (armed here for exactly these bytes). */
__device__ __forceinline__ void bulk_load(void *dst, const void *src, unsigned bytes, uint64_t *full) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(full)), "r"(bytes)
                 : "memory");
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     smem_addr(dst)),
                 "l"(src), "r"(bytes), "r"(smem_addr(full))
                 : "memory");
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

/* The barrier of the consumer warps (the producer warp never joins). */
__device__ __forceinline__ void ps_consumers_sync() {
    asm volatile("bar.sync 1, %0;" ::"n"(PS_CONSUMERS) : "memory");
}

/* Waits for the phase `parity` of b; false (the error word set to `code`
 * if no one set it yet) when another CTA gave up or PS_TIMEOUT_NS passed. */
__device__ bool ps_wait(const ps_params &p, uint64_t *b, int parity, int code) {
    if (mbar_test(b, parity)) return true;
    unsigned long long deadline = global_ns() + PS_TIMEOUT_NS;
    for (int spins = 0;; spins++) {
        if (mbar_test(b, parity)) return true;
        if ((spins & 255) == 255 && (*(volatile int *)p.err || global_ns() > deadline)) {
            atomicCAS(p.err, 0, code);
            return false;
        }
    }
}

/* ==== the producer ==== */

/* The producer lane: every tile of this CTA's step, in stage order, into
 * ring slot (tile index % slots) once the consumers released that slot's
 * previous tile. Leaves after every copy it issued has landed (a CTA must
 * not exit with bulk copies into its shared memory in flight). */
__device__ void ps_produce(const ps_params &p, uint8_t *ring, uint64_t *full, uint64_t *empty) {
    size_t slot_bytes = (size_t)16 * p.C;
    int i = 0;
    bool ok = true;
    for (int s = 0; ok && s <= 4 * p.L; s++) {
        ps_mat m = ps_stage_mat(p, s);
        ps_span sp = ps_span_of(p, m);
        unsigned long long waited = 0;
        for (int t = 0; t < sp.tiles; t++, i++) {
            int slot = i % p.slots;
            if (i >= p.slots) { /* the slot's previous tile must be released first */
                unsigned long long t0 = p.prof ? global_ns() : 0;
                if (!ps_wait(p, &empty[slot], (i / p.slots - 1) & 1, -1 - s)) {
                    ok = false;
                    break;
                }
                if (p.prof) waited += global_ns() - t0;
            }
            int row0 = sp.r0 + t * sp.tile_rows, nr = min(sp.tile_rows, sp.r1 - row0);
            bulk_load(ring + slot * slot_bytes, m.w.w + (size_t)row0 * m.row_bytes, (unsigned)(nr * m.row_bytes),
                      &full[slot]);
        }
        if (p.prof) p.prof[ps_prof_wait(PS_STAGES * p.L, blockIdx.x, 1, ps_prof_kind(s, p.L), gridDim.x)] += waited;
    }
    /* copies land whether or not anyone consumes them: no deadline needed */
    for (int j = max(0, i - p.slots); j < i; j++)
        while (!mbar_test(&full[j % p.slots], (j / p.slots) & 1)) {
        }
}

/* ==== the consumers ==== */

/* The grid barrier (see the top comment); false when a CTA gave up, in
 * which case every consumer of this CTA must leave the kernel. */
__device__ bool ps_sync(const ps_params &p, int &n_bar, int *flag) {
    ps_consumers_sync();
    int k = n_bar++;
    if (threadIdx.x == 0) {
        unsigned long long target = p.base + (unsigned long long)(k + 1) * gridDim.x;
        if (p.prof) p.prof[ps_prof_at(k + 1, blockIdx.x, 0, gridDim.x)] = global_ns();
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
        if (p.prof) p.prof[ps_prof_at(k + 1, blockIdx.x, 1, gridDim.x)] = global_ns();
    }
    ps_consumers_sync();
    return *flag;
}

/* The consumers' shared memory besides the ring: the stage's input vector
 * (or the attention's state, over the same bytes), this CTA's row scales
 * and residual rows for the stage, the pieces' partial sums (two tiles'
 * worth), the block reduction and the barrier's verdict. */
typedef struct {
    void *xs;
    float *scale, *res, *res0;
    float (*part)[PS_PIECES];
    float *red;
    int *flag;
} ps_smem;

/* Sum over the consumer threads; every consumer gets it. */
__device__ float ps_consumers_sum(float v, float *red) {
    v = nc_warp_sum(v);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
    ps_consumers_sync();
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < PS_WARPS; w++) s += red[w];
    return s;
}

/* Stages stage inputs after the barrier, all loads issued at once: the
 * input vector into sm.xs (in: bf16 as written; NULL: the residual x as
 * fp32, less the V6 backout for the logits), and this CTA's rows' scales
 * (8-bit) and residual values (the epilogues that add to x). Returns the
 * RMSNorm scale 1/rms of x (1 for bf16 inputs, which are not normed). */
__device__ float ps_stage_input(const ps_params &p, const ps_mat &m, const ps_span &sp, const bf16 *in, int epi,
                                int layer, const ps_smem &sm) {
    int tid = threadIdx.x, nrows = sp.r1 - sp.r0;
    bool logits = epi == PS_EPI_SOFTCAP, res = epi == PS_EPI_ADD || epi == PS_EPI_PROJ;
    bool res0 = epi == PS_EPI_PROJ && p.lambdas && layer + 1 < p.L;
    float rv = 0.0f, r0v = 0.0f;
    if (res && tid < nrows) {
        rv = __ldcg(p.x + sp.r0 + tid);
        if (res0) r0v = __ldcg(p.x0 + sp.r0 + tid);
    }
    float ss = 0.0f;
    if (in) {
        int n = m.K / 8; /* 16-byte chunks */
        uint4 v[PS_STAGE_LOADS];
#pragma unroll
        for (int u = 0; u < PS_STAGE_LOADS; u++)
            if (tid + u * PS_CONSUMERS < n) v[u] = __ldcg((const uint4 *)in + tid + u * PS_CONSUMERS);
#pragma unroll
        for (int u = 0; u < PS_STAGE_LOADS; u++)
            if (tid + u * PS_CONSUMERS < n) ((uint4 *)sm.xs)[tid + u * PS_CONSUMERS] = v[u];
    } else {
        int n = m.K / 4; /* float4s */
        bool backout = logits && p.smear_layer >= 0;
        float4 v[PS_STAGE_LOADS_F32], b[PS_STAGE_LOADS_F32];
#pragma unroll
        for (int u = 0; u < PS_STAGE_LOADS_F32; u++) {
            int c = tid + u * PS_CONSUMERS;
            if (c < n) {
                v[u] = __ldcg((const float4 *)p.x + c);
                if (backout) b[u] = __ldcg((const float4 *)p.xb + c);
            }
        }
#pragma unroll
        for (int u = 0; u < PS_STAGE_LOADS_F32; u++) {
            int c = tid + u * PS_CONSUMERS;
            if (c >= n) continue;
            float4 x = v[u];
            if (backout) {
                x.x -= p.backout * b[u].x, x.y -= p.backout * b[u].y;
                x.z -= p.backout * b[u].z, x.w -= p.backout * b[u].w;
            }
            ((float4 *)sm.xs)[c] = x;
            ss = fmaf(x.x, x.x, ss), ss = fmaf(x.y, x.y, ss), ss = fmaf(x.z, x.z, ss), ss = fmaf(x.w, x.w, ss);
        }
    }
    if (m.w.scale)
        for (int r = tid; r < nrows; r += PS_CONSUMERS) sm.scale[r] = __ldg(m.w.scale + sp.r0 + r);
    if (res && tid < nrows) {
        sm.res[tid] = rv;
        if (res0) sm.res0[tid] = r0v;
    }
    ss = ps_consumers_sum(ss, sm.red); /* its barrier also publishes xs, scale and res */
    return in ? 1.0f : rsqrtf(ss / (float)m.K + p.eps);
}

/* 8 input values from k (a multiple of 8) of the staged vector. */
__device__ __forceinline__ void xs8(const float *xs, int k, float *f) {
    float4 a = *(const float4 *)(xs + k), b = *(const float4 *)(xs + k + 4);
    f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w, f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
}
__device__ __forceinline__ void xs8(const bf16 *xs, int k, float *f) { nc_bf16x8_to_f32(*(const uint4 *)(xs + k), f); }

/* acc + the 16-byte chunk w (weights k..) times the staged input from k. */
template <int FMT, typename TX>
__device__ __forceinline__ float ps_chunk_dot(uint4 w, const TX *xs, int k, float acc) {
    float x[8];
    if constexpr (FMT == NC_WEIGHT_BF16) {
        float f[8];
        nc_bf16x8_to_f32(w, f);
        xs8(xs, k, x);
#pragma unroll
        for (int i = 0; i < 8; i++) acc = fmaf(f[i], x[i], acc);
    } else {
        const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int h = 0; h < 2; h++) {
            float f[8];
            nc_q8x4_to_f32<FMT>(words[2 * h], f);
            nc_q8x4_to_f32<FMT>(words[2 * h + 1], f + 4);
            xs8(xs, k + 8 * h, x);
#pragma unroll
            for (int i = 0; i < 8; i++) acc = fmaf(f[i], x[i], acc);
        }
    }
    return acc;
}

/* This warp's piece of a slot: C bytes at `piece`, weights from k0 on. */
template <int FMT, typename TX>
__device__ __forceinline__ float ps_piece_dot(const uint4 *piece, int chunks, const TX *xs, int k0) {
    constexpr int PER = FMT == NC_WEIGHT_BF16 ? 8 : 16; /* weights per chunk */
    float acc = 0.0f;
#pragma unroll 2
    for (int j = threadIdx.x & 31; j < chunks; j += 32) acc = ps_chunk_dot<FMT>(piece[j], xs, k0 + PER * j, acc);
    return acc;
}

/* Row r's output (its dot y times s: the norm and row scales), res / res0
 * its staged residual values. */
__device__ __forceinline__ void ps_store(const ps_params &p, int epi, int layer, int r, float y, float s, float res,
                                         float res0) {
    if (epi == PS_EPI_QKV) {
        p.qkv[r] = y * s;
    } else if (epi == PS_EPI_ADD) {
        p.x[r] = res + y * s;
    } else if (epi == PS_EPI_RELU2) {
        float t = fmaxf(y * s, 0.0f);
        p.u[r] = __float2bfloat16_rn(t * t);
    } else if (epi == PS_EPI_PROJ) {
        float v = res + y * s;
        if (layer == p.smear_layer) p.xb[r] = v;
        if (p.lambdas && layer + 1 < p.L) {
            const ps_layer *ly = p.layers + layer;
            v = ly->rl_next * v + ly->xl_next * res0;
        }
        p.x[r] = v;
    } else {
        p.logits[r] = p.softcap * tanhf(y * s / p.softcap);
    }
}

/* Stage s, a projection: in = its bf16 input vector, or NULL for the
 * RMSNorm of the residual; tile counts this CTA's tiles of the step (the
 * ring position). False when a wait gave up. */
template <int FMT>
__device__ bool ps_project_fmt(const ps_params &p, int s, const ps_mat &m, const ps_span &sp, const bf16 *in,
                               int epi, const uint8_t *ring, uint64_t *full, uint64_t *empty, const ps_smem &sm,
                               int &tile) {
    int layer = min(s / 4, p.L - 1), warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int esize = FMT == NC_WEIGHT_BF16 ? 2 : 1, pieces = m.row_bytes / p.C;
    float norm = ps_stage_input(p, m, sp, in, epi, layer, sm);
    unsigned long long waited = 0; /* NC_CUDA_PROFILE: thread 0's wait for tiles */
    for (int t = 0; t < sp.tiles; t++, tile++) {
        int slot = tile % p.slots, row0 = sp.r0 + t * sp.tile_rows, nr = min(sp.tile_rows, sp.r1 - row0);
        unsigned long long t0 = p.prof && threadIdx.x == 0 ? global_ns() : 0;
        if (!ps_wait(p, &full[slot], (tile / p.slots) & 1, -1 - s)) return false;
        if (p.prof && threadIdx.x == 0) waited += global_ns() - t0;
        float y[2] = {0.0f, 0.0f};
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int q = warp + h * PS_WARPS, row = q / pieces, k0 = (q % pieces) * p.C / esize;
            if (row >= nr) continue;
            const uint4 *piece = (const uint4 *)(ring + (size_t)slot * 16 * p.C + (size_t)q * p.C);
            y[h] = in ? ps_piece_dot<FMT>(piece, p.C / 16, (const bf16 *)sm.xs, k0)
                      : ps_piece_dot<FMT>(piece, p.C / 16, (const float *)sm.xs, k0);
            y[h] = nc_warp_sum(y[h]);
        }
        __syncwarp();
        if (lane == 0) {
            mbar_arrive(&empty[slot]); /* this warp is done reading the slot */
            sm.part[tile & 1][warp] = y[0], sm.part[tile & 1][warp + PS_WARPS] = y[1];
        }
        ps_consumers_sync();
        if (threadIdx.x < nr) { /* a thread per row sums its pieces in order */
            int r = threadIdx.x, i = row0 - sp.r0 + r;
            float d = 0.0f;
            for (int j = 0; j < pieces; j++) d += sm.part[tile & 1][r * pieces + j];
            float sc = FMT == NC_WEIGHT_BF16 ? norm : norm * sm.scale[i];
            ps_store(p, epi, layer, row0 + r, d, sc, sm.res[i], sm.res0[i]);
        }
    }
    if (p.prof && threadIdx.x == 0) p.prof[ps_prof_wait(PS_STAGES * p.L, blockIdx.x, 0, ps_prof_kind(s, p.L), gridDim.x)] += waited;
    return true;
}

__device__ bool ps_project(const ps_params &p, int s, const bf16 *in, int epi, const uint8_t *ring, uint64_t *full,
                           uint64_t *empty, const ps_smem &sm, int &tile) {
    ps_mat m = ps_stage_mat(p, s);
    ps_span sp = ps_span_of(p, m);
    if (sp.tiles == 0) return true;
    if (m.w.format == NC_WEIGHT_INT8)
        return ps_project_fmt<NC_WEIGHT_INT8>(p, s, m, sp, in, epi, ring, full, empty, sm, tile);
    if (m.w.format == NC_WEIGHT_FP8)
        return ps_project_fmt<NC_WEIGHT_FP8>(p, s, m, sp, in, epi, ring, full, empty, sm, tile);
    return ps_project_fmt<NC_WEIGHT_BF16>(p, s, m, sp, in, epi, ring, full, empty, sm, tile);
}

template <int G, bool KV8>
__global__ void __launch_bounds__(PS_THREADS, 1) persist_kernel(ps_params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    extern __shared__ __align__(128) uint8_t smem[];
    __shared__ __align__(8) uint64_t full[PS_MAX_SLOTS], empty[PS_MAX_SLOTS];
    __shared__ float part[2][PS_PIECES], red[PS_WARPS];
    __shared__ int flag;
    if (threadIdx.x == 0) {
        for (int i = 0; i < p.slots; i++) mbar_init(&full[i], 1), mbar_init(&empty[i], PS_WARPS);
        asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); /* visible to the bulk copies */
    }
    __syncthreads(); /* the only barrier of all threads: the producer warp leaves the others' after it */
    uint8_t *ring = smem;
    if (threadIdx.x >= PS_CONSUMERS) {
        if (threadIdx.x == PS_CONSUMERS) ps_produce(p, ring, full, empty);
        return;
    }
    ps_smem sm;
    size_t ring_bytes = (size_t)p.slots * 16 * p.C;
    sm.xs = smem + ring_bytes;
    size_t xs_bytes = max(max((size_t)4 * p.C, (size_t)2 * p.F), max((size_t)2 * p.HD, sizeof(dec_shared<G, PS_WARPS>)));
    sm.scale = (float *)(smem + ring_bytes + ((xs_bytes + 15) & ~(size_t)15));
    sm.res = sm.scale + p.max_rows, sm.res0 = sm.res + p.max_rows;
    sm.part = part, sm.red = red, sm.flag = &flag;
    dec_shared<G, PS_WARPS> &att = *(dec_shared<G, PS_WARPS> *)sm.xs; /* attention: over the input vector */
    int n_bar = 0, tile = 0;
    if (p.prof && threadIdx.x == 0) p.prof[ps_prof_at(0, blockIdx.x, 1, gridDim.x)] = global_ns();
    for (int l = 0; l < p.L; l++) {
        const ps_layer *ly = p.layers + l;
        if (l > 0 && !ps_sync(p, n_bar, &flag)) break;
        if (!ps_project(p, 4 * l, NULL, PS_EPI_QKV, ring, full, empty, sm, tile)) break;
        if (!ps_sync(p, n_bar, &flag)) break;
        for (int u = blockIdx.x; u < p.Hkv * p.splits; u += gridDim.x) {
            nc_attn_decode_cta<G, false, KV8, PS_WARPS>(ly->attn, u % p.splits, u / p.splits, 0, att);
            ps_consumers_sync();
        }
        if (!ps_sync(p, n_bar, &flag)) break;
        if (!ps_project(p, 4 * l + 1, p.attn, PS_EPI_ADD, ring, full, empty, sm, tile)) break;
        if (!ps_sync(p, n_bar, &flag)) break;
        if (!ps_project(p, 4 * l + 2, NULL, PS_EPI_RELU2, ring, full, empty, sm, tile)) break;
        if (!ps_sync(p, n_bar, &flag)) break;
        if (!ps_project(p, 4 * l + 3, p.u, PS_EPI_PROJ, ring, full, empty, sm, tile)) break;
        if (l + 1 == p.L && ps_sync(p, n_bar, &flag))
            ps_project(p, 4 * p.L, NULL, PS_EPI_SOFTCAP, ring, full, empty, sm, tile);
    }
    if (p.prof && threadIdx.x == 0) p.prof[ps_prof_at(n_bar + 1, blockIdx.x, 0, gridDim.x)] = global_ns();
#else
    __trap(); /* nc_cuda_persist_init enables this path only where the sm_90a code runs */
#endif
}

/* ==== host ==== */

struct nc_cuda_persist {
    void (*kernel)(ps_params);
    int grid, splits, slots, max_rows;
    size_t smem;
    char description[96];
    ps_layer *layers_d;
    nc_cuda_meta_layout built_for; /* the metadata offsets layers_d points into (used = 0) */
    bool built;
    unsigned long long *bar, base;
    int *err_d, *err_h;            /* err_h: pinned, filled after each step */
    unsigned long long *prof_d;    /* NC_CUDA_PROFILE: the times of ps_prof_at, or NULL */
    size_t prof_words;
    /* of the last profiled step, per stage kind, ms summed over layers: a CTA's work
       (from leaving a barrier to arriving at the next; mean and max over CTAs), the
       barrier after it (its last arrival to the mean release), the consumers' wait
       for tiles and the producer's wait for slots (means over CTAs) */
    double work_mean[PS_PROF_KINDS], work_max[PS_PROF_KINDS], barrier[PS_PROF_KINDS];
    double tile_wait[PS_PROF_KINDS], slot_wait[PS_PROF_KINDS];
    bool pending;                  /* a step ran whose error word is not checked yet */
};

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

static int row_bytes(const nc_cuda_weight *w, int K) { return w->format == NC_WEIGHT_BF16 ? 2 * K : K; }

/* Whether the kernel's tiling holds matrix w of rows of K values: every row
 * a whole number of C-byte pieces, at most a 16·C-byte slot. */
static bool fits_slots(const nc_cuda *cu, const nc_cuda_weight *w, int K) {
    int b = row_bytes(w, K);
    return b % cu->C == 0 && b <= 16 * cu->C;
}

static ps_weight ps_weight_of(const nc_cuda_weight *w) {
    return ps_weight{(const uint8_t *)w->data, w->scale, (int)w->format};
}

int nc_cuda_persist_init(nc_cuda *cu) {
    cu->persist = NULL;
    /* sm_90 with this binary's sm_90a code; never under --deterministic,
     * whose batch-invariant kernels every step must use */
    if (!cu->env.cuda_persist || cu->det || cu->cc_major != 9 || !cu->have_wgmma) return 0;
    /* Shapes the tiling and the staging hold (every nanochat: H·D = C, F =
     * 4C); others use the graph path. */
    const nc_cuda_layer *ly = &cu->layers[0];
    int grid = cu->sm_count, HD = cu->H * cu->D;
    if (cu->C % 16 || !fits_slots(cu, &ly->qkv, cu->C) || !fits_slots(cu, &ly->o, HD) ||
        !fits_slots(cu, &ly->fc, cu->C) || !fits_slots(cu, &ly->proj, cu->F) ||
        !fits_slots(cu, &cu->lm_head, cu->C) || cu->C / 4 > PS_STAGE_LOADS_F32 * PS_CONSUMERS ||
        NC_MAX(HD, cu->F) / 8 > PS_STAGE_LOADS * PS_CONSUMERS || (cu->C + grid - 1) / grid > PS_CONSUMERS)
        return 0;
    int max_rows = 0;
    const int all_rows[4] = {cu->Q, cu->C, cu->F, cu->lm_head.used_rows};
    for (int i = 0; i < 4; i++) max_rows = NC_MAX(max_rows, (all_rows[i] + grid - 1) / grid);
    /* shared memory: the ring, the input vector or the attention's state,
     * the row scales and residual values */
    size_t slot = (size_t)16 * cu->C;
    size_t xs = NC_MAX(NC_MAX((size_t)4 * cu->C, (size_t)2 * cu->F), NC_MAX((size_t)2 * HD, ps_attn_smem[cu->G]));
    size_t rest = ((xs + 15) & ~(size_t)15) + (size_t)3 * max_rows * sizeof(float);
    int optin = 0;
    NC_CU_TRY(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, cu->device));
    size_t avail = (size_t)optin > rest + 1024 ? (size_t)optin - rest - 1024 : 0; /* 1 KB: the static part */
    int fit = (int)NC_MIN((size_t)PS_MAX_SLOTS, avail / slot);
    int slots = cu->env.cuda_persist_bufs ? cu->env.cuda_persist_bufs : fit;
    if (slots > fit) {
        if (!cu->env.cuda_persist_bufs || fit < 2) return 0;
        return nc_fail("cuda: the persistent decode kernel with NC_CUDA_PERSIST_BUFS=%d: %d slots of %zu bytes need "
                       "%zu bytes of shared memory per SM beside %zu for this model, the GPU has %d; at most %d fit",
                       slots, slots, slot, (size_t)slots * slot, rest + 1024, optin, fit);
    }
    if (slots < 2) return 0;
    size_t smem = (size_t)slots * slot + rest;
    void (*kernel)(ps_params) = ps_kernels[cu->kv_fp8 ? 1 : 0][cu->G];
    NC_CU_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    int per_sm = 0;
    NC_CU_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, PS_THREADS, smem));
    if (per_sm < 1) return 0;
    nc_cuda_persist *ps = (nc_cuda_persist *)nc_xcalloc(1, sizeof *ps);
    cu->persist = ps;
    ps->kernel = kernel;
    ps->grid = grid, ps->slots = slots, ps->max_rows = max_rows;
    ps->smem = smem;
    snprintf(ps->description, sizeof ps->description, "persistent kernel (%d weight slots of %zu KB)", slots,
             slot / 1024);
    int64_t part_cap = cu->part_floats / ((int64_t)cu->H * (cu->D + 2));
    ps->splits = (int)NC_MAX(1, NC_MIN(NC_MIN(ps->grid / cu->Hkv, NC_ATTN_MAX_SPLITS), part_cap));
    NC_CU_TRY(cudaMalloc((void **)&ps->layers_d, (size_t)cu->L * sizeof(ps_layer)));
    NC_CU_TRY(cudaMalloc((void **)&ps->bar, 16));
    NC_CU_TRY(cudaMemset(ps->bar, 0, 16));
    ps->err_d = (int *)(ps->bar + 1);
    NC_CU_TRY(cudaMallocHost((void **)&ps->err_h, sizeof(int)));
    *ps->err_h = 0;
    if (cu->profile) {
        ps->prof_words = ps_prof_wait(barriers_per_step(cu), grid, 0, 0, grid);
        NC_CU_TRY(cudaMalloc((void **)&ps->prof_d, ps->prof_words * sizeof(unsigned long long)));
    }
    return 0;
}

const char *nc_cuda_persist_describe(const nc_cuda *cu) { return cu->persist ? cu->persist->description : NULL; }

void nc_cuda_persist_free(nc_cuda *cu) {
    nc_cuda_persist *ps = cu->persist;
    if (!ps) return;
    if (ps->layers_d) cudaFree(ps->layers_d);
    if (ps->bar) cudaFree(ps->bar);
    if (ps->prof_d) cudaFree(ps->prof_d);
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
        t[l].qkv = ps_weight_of(&ly->qkv), t[l].o = ps_weight_of(&ly->o);
        t[l].fc = ps_weight_of(&ly->fc), t[l].proj = ps_weight_of(&ly->proj);
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
    p.lm_head = ps_weight_of(&cu->lm_head);
    p.x = cu->x, p.x0 = cu->x0, p.xb = cu->xb, p.qkv = cu->qkv, p.logits = cu->logits;
    p.attn = cu->attn, p.u = cu->u;
    p.L = cu->L, p.C = cu->C, p.Q = cu->Q, p.F = cu->F, p.HD = cu->H * cu->D, p.V = cu->lm_head.used_rows;
    p.Hkv = cu->Hkv, p.splits = ps->splits;
    p.lambdas = cu->cfg.has_lambdas;
    p.smear_layer = cu->cfg.has_smear ? cu->L / 2 : -1;
    p.backout = cu->backout_lambda, p.eps = cu->cfg.norm_eps, p.softcap = cu->cfg.softcap;
    p.slots = ps->slots, p.max_rows = ps->max_rows;
    p.bar = ps->bar, p.base = ps->base, p.err = ps->err_d;
    p.prof = ps->prof_d;
    if (ps->prof_d) /* the wait sums accumulate */
        NC_CU_TRY(cudaMemsetAsync(ps->prof_d, 0, ps->prof_words * sizeof(unsigned long long), cu->stream));
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
 * times (each stage's time includes its wait at the barrier after it), and
 * the per-CTA breakdown that nc_cuda_persist_print_profile prints. */
static int collect_profile(nc_cuda *cu) {
    nc_cuda_persist *ps = cu->persist;
    int nb = barriers_per_step(cu), n = ps->grid;
    unsigned long long *t = (unsigned long long *)nc_xcalloc(ps->prof_words, sizeof *t);
    cudaError_t e = cudaMemcpy(t, ps->prof_d, ps->prof_words * sizeof *t, cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) {
        static const int stage[PS_STAGES] = {NC_PROF_QKV, NC_PROF_ATTN, NC_PROF_WO, NC_PROF_FC, NC_PROF_PROJ};
        for (int i = 0; i < NC_PROF_STAGES; i++) cu->prof_ms[i] = 0;
        for (int k = 0; k < PS_PROF_KINDS; k++)
            ps->work_mean[k] = ps->work_max[k] = ps->barrier[k] = ps->tile_wait[k] = ps->slot_wait[k] = 0;
        /* segment i: from leaving barrier i (0: the start) to arriving at barrier i + 1 (nb + 1: the end) */
        unsigned long long start = t[ps_prof_at(0, 0, 1, n)];
        for (int i = 0; i <= nb; i++) {
            int kind = i < nb ? i % PS_STAGES : 5;
            unsigned long long end0 = i < nb ? t[ps_prof_at(i + 1, 0, 1, n)] : t[ps_prof_at(i + 1, 0, 0, n)];
            cu->prof_ms[i < nb ? stage[i % PS_STAGES] : NC_PROF_LOGITS] += (double)(end0 - t[ps_prof_at(i, 0, 1, n)]) * 1e-6;
            /* times relative to the kernel's start on CTA 0 (%globaltimer counts ns from
               far away: as doubles the raw values would lose their low bits) */
            double sum = 0, mx = 0, last_arrival = 0, release = 0;
            for (int b = 0; b < n; b++) {
                unsigned long long arrived = t[ps_prof_at(i + 1, b, 0, n)];
                double arrive = (double)(long long)(arrived - start);
                double work = (double)(arrived - t[ps_prof_at(i, b, 1, n)]);
                sum += work, mx = NC_MAX(mx, work), last_arrival = NC_MAX(last_arrival, arrive);
                if (i < nb) release += (double)(long long)(t[ps_prof_at(i + 1, b, 1, n)] - start) / n;
            }
            ps->work_mean[kind] += sum / n * 1e-6, ps->work_max[kind] += mx * 1e-6;
            if (i < nb) ps->barrier[kind] += (release - last_arrival) * 1e-6;
        }
        for (int b = 0; b < n; b++)
            for (int k = 0; k < PS_PROF_KINDS; k++) {
                ps->tile_wait[k] += (double)t[ps_prof_wait(nb, b, 0, k, n)] * 1e-6 / n;
                ps->slot_wait[k] += (double)t[ps_prof_wait(nb, b, 1, k, n)] * 1e-6 / n;
            }
    }
    free(t);
    if (e != cudaSuccess) return nc_fail("cuda: reading the persistent kernel's profile: %s", cudaGetErrorString(e));
    return 0;
}

void nc_cuda_persist_print_profile(const nc_cuda *cu) {
    const nc_cuda_persist *ps = cu->persist;
    if (!ps || !ps->prof_d) return;
    static const char *const kinds[PS_PROF_KINDS] = {"qkv", "attention", "attn proj", "mlp fc", "mlp proj", "logits"};
    fprintf(stderr, "persistent kernel, last step (ms, summed over layers; means over CTAs unless max):\n"
                    "  %-12s %9s %9s %9s %11s %11s\n",
            "stage", "work", "work max", "barrier", "tile wait", "slot wait");
    for (int k = 0; k < PS_PROF_KINDS; k++)
        fprintf(stderr, "  %-12s %9.3f %9.3f %9.3f %11.3f %11.3f\n", kinds[k], ps->work_mean[k], ps->work_max[k],
                ps->barrier[k], ps->tile_wait[k], ps->slot_wait[k]);
    fprintf(stderr, "  (work: leaving one barrier to arriving at the next; barrier: last arrival to release; tile wait: "
                    "consumers waiting for weights to land, the stream's share; slot wait: the producer waiting for "
                    "a free slot, the consumers' share)\n");
}

int nc_cuda_persist_check(nc_cuda *cu) {
    nc_cuda_persist *ps = cu->persist;
    if (!ps || !ps->pending) return 0;
    ps->pending = false;
    int err = *(volatile int *)ps->err_h;
    if (!err) return ps->prof_d ? collect_profile(cu) : 0;
    /* Fresh barrier and attention counters for the next step. */
    *ps->err_h = 0;
    ps->base = 0;
    NC_CU_TRY(cudaMemset(ps->bar, 0, 16));
    NC_CU_TRY(cudaMemset(cu->attn_count, 0, (size_t)cu->max_seqs * cu->Hkv * sizeof(int)));
    NC_CU_TRY(cudaDeviceSynchronize());
    if (err < 0) { /* a tile wait: -1 - the stage's matrix (4·layer + qkv, o, fc, proj; 4L the lm_head) */
        static const char *const mats[4] = {"qkv", "attention projection", "MLP fc", "MLP proj"};
        int s = -1 - err;
        char what[64];
        if (s < 4 * cu->L)
            snprintf(what, sizeof what, "%s of layer %d", mats[s % 4], s / 4);
        else
            snprintf(what, sizeof what, "the lm_head");
        return nc_fail("cuda: the persistent decode kernel gave up: a CTA waited %.0f s for the weight tiles of %s "
                       "(a bulk copy that never landed, or its consumers left); NC_CUDA_PERSIST=0 selects the CUDA "
                       "graph path",
                       PS_TIMEOUT_NS * 1e-9, what);
    }
    static const char *const names[PS_STAGES] = {"qkv", "attention", "attention projection", "MLP fc", "MLP proj"};
    int k = err; /* barrier err - 1, counted as if a barrier preceded layer 0's qkv */
    int layer = k / PS_STAGES;
    return nc_fail("cuda: the persistent decode kernel gave up: a CTA waited %.0f s at the grid barrier before %s "
                   "%s%d (all CTAs must be resident on the GPU at once); NC_CUDA_PERSIST=0 selects the CUDA "
                   "graph path",
                   PS_TIMEOUT_NS * 1e-9, layer < cu->L ? names[k % PS_STAGES] : "the lm_head",
                   layer < cu->L ? "of layer " : "after layer ", layer < cu->L ? layer : cu->L - 1);
}

/*
 * cuda_sample.cu: one token per row of softcapped logits, on the device, so
 * a decode step returns ids instead of 256 KB of logits per row.
 *
 * Semantics follow engine/sampler.h (nanochat's sample_next_token plus
 * top-p and min-p) and its generator, xoroshiro128++ with one 53-bit
 * uniform per sampled token, drawn before anything else:
 *   temperature 0: argmax, lowest index on ties; the generator is untouched.
 *   0 < top_k <= 1024 (the common case, nanochat's default is 50): the k
 *     best (ties at the k-th value: lower ids first, exactly k) are selected
 *     with a 4-pass radix select on order-preserving keys, sorted by rank in
 *     shared memory (bitonic), and min-p, top-p and the draw walk them in
 *     rank order exactly like the host sampler: same token for the same
 *     generator state, up to summation order in the last bits.
 *   otherwise (no top-k, k > 1024, or k >= V): weights exp((x - max) / T) over the
 *     whole row; min-p is a threshold; top-p keeps the largest values whose
 *     mass reaches top_p (threshold found by a radix select on mass, summed in
 *     fixed point so that it is the same from run to run); the
 *     draw walks in index order. Same distribution as the host, but for a
 *     given uniform a different token than the host's rank-order walk.
 * One CTA of 1024 threads per row; every pass reads the row from L2.
 *
 * A row of a chunk that verifies drafts draws at position i with its
 * generator advanced i draws first (skip), as if the positions before it
 * had been decoded one at a time (backend.h, nc_device_sampling.tokens).
 *
 * A row with want_logprob also gets the sampled token's log-probability
 * under the model's own distribution (engine/sampler.h nc_sample_logprobs:
 * the temperature-1 log-softmax of the whole row, whatever the sampling
 * settings): x[token] - max - log(sum exp(x - max)). The sum rides along
 * the first pass, which reads the row anyway, as a running (max, sum) pair
 * per thread that is rescaled when the max grows (online softmax), so it
 * costs one expf per element and no extra read. fp32 throughout; the
 * threads' pairs are merged in a fixed order (warp butterfly, then the
 * warps in index order), so the value is the same from run to run.
 */
#include <math.h>

#include "cuda_internal.cuh"

#define ST 1024          /* threads per row */
#define SCAND 1024       /* candidates sorted in shared memory */

__device__ __forceinline__ unsigned fkey(float v) {
    if (v != v) return 0u; /* NaN ranks below everything */
    unsigned u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ unsigned long long rotl64(unsigned long long x, int k) {
    return (x << k) | (x >> (64 - k));
}

/* Inclusive block scan (1024 threads) of a double; `sh` >= 32 doubles. */
__device__ double block_scan_incl(double v, double *sh) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        double t = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += t;
    }
    __syncthreads();
    if (lane == 31) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double w = sh[lane];
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            double t = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += t;
        }
        sh[lane] = w;
    }
    __syncthreads();
    return warp ? v + sh[warp - 1] : v;
}

/* The block's total of an inclusive scan (the last thread's cum), given to
 * every thread through the shared *tot. */
__device__ __forceinline__ double scan_total(double cum, double *tot) {
    if (threadIdx.x == ST - 1) *tot = cum;
    __syncthreads();
    return *tot;
}

/* Picks the digit (255 = largest) where the descending cumulative of hist
 * reaches *rank; lowers *rank by what lies above it. Warp 0 only. */
template <typename T>
__device__ void pick_digit(const T *hist, T *rank, int *sel) {
    int lane = threadIdx.x & 31;
    T mine = 0;
#pragma unroll
    for (int j = 0; j < 8; j++) mine += hist[255 - 8 * lane - j];
    T incl = mine;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        T t = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += t;
    }
    T excl = incl - mine;
    T want = *rank;
    bool last = lane == 31;
    __syncwarp();
    if ((excl < want && want <= incl) || (last && incl < want)) {
        T cum = excl;
        int d = 255 - 8 * lane - 7;
        for (int j = 0; j < 8; j++) {
            T hj = hist[255 - 8 * lane - j];
            if (cum + hj >= want) {
                d = 255 - 8 * lane - j;
                break;
            }
            cum += hj;
        }
        *sel = d;
        *rank = want - cum;
    }
}

typedef struct {
    float mx;
    int am;
    float lse_m, lse_s;   /* the row's max and sum of exp(x - lse_m): its log-sum-exp (want_logprob) */
    unsigned tk;        /* keep key >= tk (0: all) */
    int take_eq;        /* top-k ties: how many == tk to keep (large path: all) */
    double u;
} samp_shared;

/* xoroshiro128++ (engine/sampler.h): one output of the state `in` as a
 * uniform in [0, 1) from its top 53 bits; the advanced state into `out`. */
__device__ __forceinline__ double draw_uniform(const unsigned long long *in, unsigned long long *out) {
    unsigned long long s0 = in[0], s1 = in[1];
    unsigned long long r = rotl64(s0 + s1, 17) + s0;
    s1 ^= s0;
    out[0] = rotl64(s0, 49) ^ s1 ^ (s1 << 21);
    out[1] = rotl64(s1, 28);
    return (double)(r >> 11) * 0x1.0p-53;
}

/* Running log-sum-exp: sum of exp(v - m) over the values seen, m their
 * max. As on the host, NaN values make the sum NaN and -inf ones add
 * nothing. */
__device__ __forceinline__ void lse_add(float &m, float &s, float v) {
    if (v > m) {
        s = s * expf(m - v) + 1.0f;
        m = v;
    } else if (v != -INFINITY) {
        s += expf(v - m);
    }
}

/* (m, s) += (om, os): both sums rescaled to the larger max. */
__device__ __forceinline__ void lse_merge(float &m, float &s, float om, float os) {
    float nm = fmaxf(m, om);
    if (nm == -INFINITY) { /* nothing but -inf (or NaN) on either side */
        s += os;
        return;
    }
    s = s * expf(m - nm) + os * expf(om - nm);
    m = nm;
}

/* Step 1: max and argmax of the row into S.mx / S.am (lowest index on
 * ties, NaN never wins), and with want_logprob its log-sum-exp into
 * S.lse_m / S.lse_s; a sampled row (temperature > 0) also draws its
 * uniform into S.u, advancing its generator in *state. */
__device__ __forceinline__ void row_max_and_draw(const float *x, int V, const nc_cuda_samp &sp, nc_cuda_samp *state,
                                                 samp_shared &S, float *fred, int *ired, float *lm, float *ls) {
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    bool lse = sp.want_logprob;
    float bv = -INFINITY, m = -INFINITY, s = 0.0f;
    int bi = 0x7fffffff;
    for (int i = tid; i < V; i += ST) {
        float v = x[i];
        if (v == v && (v > bv || bi == 0x7fffffff)) bv = v, bi = i;
        if (lse) lse_add(m, s, v);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (oi != 0x7fffffff && (bi == 0x7fffffff || ov > bv || (ov == bv && oi < bi))) bv = ov, bi = oi;
        if (lse) {
            float om = __shfl_xor_sync(0xffffffffu, m, o), os = __shfl_xor_sync(0xffffffffu, s, o);
            lse_merge(m, s, om, os);
        }
    }
    if (lane == 0) fred[warp] = bv, ired[warp] = bi, lm[warp] = m, ls[warp] = s;
    __syncthreads();
    if (tid == 0) {
        float mv = -INFINITY;
        int a = 0x7fffffff;
        for (int w = 0; w < ST / 32; w++)
            if (ired[w] != 0x7fffffff && (a == 0x7fffffff || fred[w] > mv || (fred[w] == mv && ired[w] < a)))
                mv = fred[w], a = ired[w];
        S.mx = mv;
        S.am = a == 0x7fffffff ? 0 : a;
        if (lse) {
            float rm = lm[0], rs = ls[0];
            for (int w = 1; w < ST / 32; w++) lse_merge(rm, rs, lm[w], ls[w]);
            S.lse_m = rm, S.lse_s = rs;
        }
        if (sp.temperature > 0.0f) {
            /* a verified position i draws as if i positions were emitted before it */
            unsigned long long g[2] = {sp.rng[0], sp.rng[1]};
            for (int i = 0; i < sp.skip; i++) draw_uniform(g, g);
            S.u = draw_uniform(g, state->rng);
        }
    }
    __syncthreads();
}

/* Step 2: the top-k threshold, by a radix select of the k-th largest key:
 * keep keys > S.tk, and the first S.take_eq keys == S.tk in index order
 * (S.tk = 0 and every tie kept without top-k). */
__device__ __forceinline__ void topk_threshold(const float *x, int V, int top_k, bool topk, samp_shared &S,
                                               unsigned *hist_u, unsigned &rank_u, int &sel) {
    int tid = threadIdx.x, warp = tid >> 5;
    if (tid == 0) S.tk = 0u, S.take_eq = 0x7fffffff, rank_u = (unsigned)top_k;
    if (topk) {
        unsigned prefix = 0u, mask = 0u;
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (int i = tid; i < 256; i += ST) hist_u[i] = 0u;
            __syncthreads();
            for (int i = tid; i < V; i += ST) {
                unsigned k = fkey(x[i]);
                if ((k & mask) == prefix) atomicAdd(&hist_u[(k >> shift) & 255u], 1u);
            }
            __syncthreads();
            if (warp == 0) pick_digit<unsigned>(hist_u, &rank_u, &sel);
            __syncthreads();
            prefix |= (unsigned)sel << shift;
            mask |= 255u << shift;
        }
        if (tid == 0) S.tk = prefix, S.take_eq = (int)rank_u;
    }
    __syncthreads();
}

/* Step 3a, part 1: the k candidates (keys above tk, then the first
 * S.take_eq ties) of this thread's chunk [c0, c1) into cv / ci, packed in
 * index order. */
__device__ __forceinline__ void gather_topk(const float *x, int c0, int c1, unsigned tk, const samp_shared &S,
                                            double *dsh, float *cv, int *ci) {
    int n_gt = 0, n_eq = 0;
    for (int i = c0; i < c1; i++) {
        unsigned k = fkey(x[i]);
        n_gt += k > tk;
        n_eq += k == tk && x[i] == x[i];
    }
    int eq_before = (int)block_scan_incl((double)n_eq, dsh) - n_eq;
    int take = max(0, min(n_eq, S.take_eq - eq_before));
    int mine = n_gt + take;
    int at = (int)block_scan_incl((double)mine, dsh) - mine;
    for (int i = c0, e = 0; i < c1; i++) {
        unsigned k = fkey(x[i]);
        bool eq = k == tk && x[i] == x[i];
        if (k > tk || (eq && e < take)) {
            cv[at] = x[i];
            ci[at] = i;
            at++;
        }
        e += eq;
    }
}

/* Step 3a, part 2: the n candidates sorted into rank order (value
 * descending, then id ascending) by a bitonic sort over SCAND slots, the
 * slots past n filled with -inf. */
__device__ __forceinline__ void sort_by_rank(int n, float *cv, int *ci) {
    int tid = threadIdx.x;
    __syncthreads();
    if (tid >= n) cv[tid] = -INFINITY, ci[tid] = 0x7fffffff;
    __syncthreads();
    for (int size = 2; size <= SCAND; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            int j = tid ^ stride;
            if (j > tid) {
                bool up = (tid & size) == 0;
                float va = cv[tid], vb = cv[j];
                int ia = ci[tid], ib = ci[j];
                bool a_first = va > vb || (va == vb && ia < ib);
                if (a_first != up) {
                    cv[tid] = vb, cv[j] = va;
                    ci[tid] = ib, ci[j] = ia;
                }
            }
            __syncthreads();
        }
    }
}

/* Step 3a, part 3: min-p, top-p and the draw over the n sorted candidates,
 * walking them in rank order like the host sampler; the token into *out. */
__device__ __forceinline__ void pick_in_rank_order(int n, const nc_cuda_samp &sp, float inv_t, const samp_shared &S,
                                                   const float *cv, const int *ci, double *dsh, int32_t *out) {
    int tid = threadIdx.x;
    float top = cv[0];
    float p = tid < n ? expf((cv[tid] - top) * inv_t) : 0.0f;
    bool keep = tid < n && !(sp.min_p > 0.0f && p < sp.min_p);
    double w = keep ? (double)p : 0.0;
    double cum = block_scan_incl(w, dsh);
    __shared__ double tot;
    __shared__ int n_keep;
    if (tid == 0) n_keep = 0x7fffffff;
    double sum = scan_total(cum, &tot);
    if (sp.top_p < 1.0f) {
        double target = (double)sp.top_p * sum;
        bool first = keep && cum >= target && (tid == 0 || cum - w < target);
        if (first) n_keep = tid + 1;
        __syncthreads();
        if (n_keep != 0x7fffffff) {
            keep = keep && tid < n_keep;
            w = keep ? w : 0.0;
            cum = block_scan_incl(w, dsh);
            sum = scan_total(cum, &tot);
        }
    }
    double r = S.u * sum;
    __shared__ int pick;
    if (tid == 0) pick = -1;
    __syncthreads();
    if (keep && r < cum && r >= cum - w) pick = ci[tid];
    __syncthreads();
    if (tid == 0) {
        if (pick < 0) { /* rounding left r at the very end: the last kept */
            pick = ci[0];
            for (int j = n - 1; j >= 0; j--) {
                float pj = expf((cv[j] - top) * inv_t);
                if (!(sp.min_p > 0.0f && pj < sp.min_p)) {
                    pick = ci[j];
                    break;
                }
            }
        }
        *out = pick;
    }
}

/* The whole-row path's weight of value v (key k): exp((v - max) / T) for
 * keys the top-k threshold keeps, else 0. */
#define WEIGHT(v, k) (((k) >= tk && (v) == (v)) ? fmaxf(expf(((v) - mx) * inv_t), 0.0f) : 0.0f)

/* Weights in the top-p histogram: fixed point with 32 fraction bits
 * (weights are <= 1, a row's sum < 2^48), so the shared-memory atomics add
 * integers, whose sum does not depend on the order the threads arrive in:
 * the threshold is the same from run to run. */
#define MASS_ONE 4294967296.0

/* Step 3b, part 1: the top-p threshold key tp, by a radix select on mass:
 * the largest values whose weights reach top_p * sum. */
__device__ __forceinline__ unsigned top_p_threshold(const float *x, int V, float top_p, double sum, unsigned tk,
                                                    float mx, float inv_t, float minw,
                                                    unsigned long long *hist_m, unsigned long long &rank_m, int &sel) {
    int tid = threadIdx.x, warp = tid >> 5;
    unsigned prefix = 0u, mask = 0u;
    if (tid == 0) rank_m = __double2ull_rn((double)top_p * sum * MASS_ONE);
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = tid; i < 256; i += ST) hist_m[i] = 0ull;
        __syncthreads();
        for (int i = tid; i < V; i += ST) {
            float v = x[i];
            unsigned k = fkey(v);
            float wv = WEIGHT(v, k);
            if (wv < minw) wv = 0.0f;
            if (wv > 0.0f && (k & mask) == prefix)
                atomicAdd(&hist_m[(k >> shift) & 255u], __double2ull_rn((double)wv * MASS_ONE));
        }
        __syncthreads();
        if (warp == 0) pick_digit<unsigned long long>(hist_m, &rank_m, &sel);
        __syncthreads();
        prefix |= (unsigned)sel << shift;
        mask |= 255u << shift;
    }
    return prefix;
}

/* Step 3b: weights exp((x - max) / T) over the whole row, min-p as a
 * threshold, top-p by mass, and the draw walking the row in index order;
 * the token into *out. */
__device__ __forceinline__ void sample_whole_row(const float *x, int V, const nc_cuda_samp &sp, const samp_shared &S,
                                                 unsigned tk, float mx, float inv_t, int c0, int c1, double *dsh,
                                                 unsigned long long *hist_m, unsigned long long &rank_m, int &sel,
                                                 int32_t *out) {
    int tid = threadIdx.x;
    float minw = sp.min_p > 0.0f ? sp.min_p : 0.0f;
    double part = 0.0;
    for (int i = c0; i < c1; i++) {
        float v = x[i];
        float wv = WEIGHT(v, fkey(v));
        if (wv < minw) wv = 0.0f;
        part += wv;
    }
    double cum = block_scan_incl(part, dsh);
    __shared__ double tot2;
    double sum = scan_total(cum, &tot2);
    unsigned tp = 0u;
    if (sp.top_p < 1.0f) {
        tp = top_p_threshold(x, V, sp.top_p, sum, tk, mx, inv_t, minw, hist_m, rank_m, sel);
        part = 0.0;
        for (int i = c0; i < c1; i++) {
            float v = x[i];
            unsigned k = fkey(v);
            float wv = k >= tp ? WEIGHT(v, k) : 0.0f;
            if (wv < minw) wv = 0.0f;
            part += wv;
        }
        cum = block_scan_incl(part, dsh);
        sum = scan_total(cum, &tot2);
    }
    double r = S.u * sum;
    __shared__ int pick2;
    if (tid == 0) pick2 = -1;
    __syncthreads();
    if (r < cum && r >= cum - part) {
        double c = cum - part;
        int found = -1;
        for (int i = c0; i < c1; i++) {
            float v = x[i];
            unsigned k = fkey(v);
            float wv = k >= tp ? WEIGHT(v, k) : 0.0f;
            if (wv < minw) wv = 0.0f;
            c += wv;
            if (wv > 0.0f) found = i;
            if (r < c) break;
        }
        pick2 = found;
    }
    __syncthreads();
    if (tid == 0) *out = pick2 >= 0 ? pick2 : S.am;
}
#undef WEIGHT

__global__ void __launch_bounds__(ST) sample_kernel(const float *__restrict__ logits, int64_t ld, int V,
                                                    nc_cuda_samp *samp, int32_t *out) {
    __shared__ samp_shared S;
    __shared__ double dsh[32];
    __shared__ float fred[32], lm[32], ls[32];
    __shared__ int ired[32];
    __shared__ unsigned hist_u[256];
    __shared__ unsigned long long hist_m[256];
    __shared__ int sel;
    __shared__ unsigned rank_u;
    __shared__ unsigned long long rank_m;
    __shared__ float cv[SCAND];
    __shared__ int ci[SCAND];

    int row = blockIdx.x, tid = threadIdx.x;
    const float *x = logits + (size_t)row * ld;
    nc_cuda_samp sp = samp[row];

    row_max_and_draw(x, V, sp, &samp[row], S, fred, ired, lm, ls);
    if (!(sp.temperature > 0.0f) || S.mx == -INFINITY) { /* greedy */
        if (tid == 0) out[row] = S.am;
    } else {
        float inv_t = 1.0f / sp.temperature;
        float mx = S.mx;
        bool topk = sp.top_k > 0 && sp.top_k < V;
        topk_threshold(x, V, sp.top_k, topk, S, hist_u, rank_u, sel);
        unsigned tk = S.tk;

        /* contiguous chunks per thread keep index order for ties and the draw */
        int chunk = (V + ST - 1) / ST;
        int c0 = min(tid * chunk, V), c1 = min(c0 + chunk, V);
        if (topk && sp.top_k <= SCAND) { /* 3a: sort the k candidates, walk like the host */
            gather_topk(x, c0, c1, tk, S, dsh, cv, ci);
            sort_by_rank(sp.top_k, cv, ci);
            pick_in_rank_order(sp.top_k, sp, inv_t, S, cv, ci, dsh, &out[row]);
        } else {
            sample_whole_row(x, V, sp, S, tk, mx, inv_t, c0, c1, dsh, hist_m, rank_m, sel, &out[row]);
        }
    }
    /* every path's token was written by thread 0 */
    if (tid == 0 && sp.want_logprob) {
        int t = out[row];
        samp[row].logprob = t >= 0 && t < V ? (x[t] - S.lse_m) - logf(S.lse_s) : NAN;
    }
}

int nc_cuda_sample(nc_cuda *cu, const float *logits, int64_t ld, int R) {
    sample_kernel<<<R, ST, 0, cu->stream>>>(logits, ld, cu->V, cu->samp_d, cu->out_tok_d);
    NC_CU_LAUNCHED("sample");
    return 0;
}

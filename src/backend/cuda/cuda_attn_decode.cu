/*
 * cuda_attn_decode.cu: attention for one-token chunks (decode rows), split
 * over the KV length (flash-decoding), streamed straight from the paged
 * cache into registers.
 *
 * Decode attention reads every key and value of the row once and does
 * ~1 FMA per byte, so it must run at the memory bandwidth like the GEMVs.
 * The unit of work is a 16-key chunk of one (row, kv head): 4 KB of K and
 * 4 KB of V, contiguous inside a 64-token block of the paged cache
 * ([n_blocks][Hkv][64][D]). One warp takes a contiguous run of chunks and
 * keeps its own online softmax (running max m, sum l, acc[D]) for the G
 * query heads of its kv head (GQA: K/V read once for the group), so the
 * main loop has no shared memory and no barriers:
 *
 *   - per chunk every lane issues 8 + 8 coalesced 16-byte loads (K then V;
 *     a warp instruction covers 2 keys x 128 dims), i.e. 8 KB in flight per
 *     warp before any arithmetic;
 *   - lane l holds dims (l % 16) * 8 .. +8 of keys 2i + l / 16 (i < 8); its
 *     8 partial q·k sums are reduce-scattered over the 16 lanes of its half
 *     (8 shuffles) so each lane ends with the full score of one key;
 *   - softmax stats by warp reductions; the probability of each key is
 *     shuffled back to the lanes holding that key's V slice.
 *
 * The grid is (splits, Hkv, rows) CTAs of 4 warps. A CTA merges its warps'
 * partials in shared memory; with several splits the last CTA of a (row, kv
 * head) to finish merges the CTAs' partials (an arrival counter, no extra
 * launch). Batch 1 gets many splits (each warp one or two chunks, so the
 * whole context is in flight at once); large batches one split per row.
 * Keys outside [pos - window, pos] are masked (docs/model.md, Attention:
 * key j is visible to query i iff 0 <= i - j <= window). The split count
 * is fixed per batch size (a CUDA graph replays it); ranges are derived on
 * the device from each row's position.
 *
 * For batch-1 decode (the GEMV path) the kernel also does the work of the
 * rope_append kernel (one launch less per layer): each CTA computes its G
 * query heads from qkv into shared memory, and the CTA whose split holds
 * this step's position first appends the key and value (the same
 * nc_rope_head as the rope_append kernel, on the GEMV's fp32 qkv), then
 * reads that chunk through L2.
 *
 * Verified chunks run as decode rows (cuda_batch.cu) read the same
 * sequence's cache once per row. Where that pays (cuda_batch.cu, pair_rows),
 * the paired kernel (R = 2) gives each CTA two consecutive rows of such a
 * chunk instead: every warp attends both rows over each chunk of keys and
 * values it loads, over the union of their key ranges, and the last CTA of
 * the pair merges both rows' splits (meta dec_grp lists the pairs).
 *
 * fp8 cache (--kv-cache fp8): the same lanes, keys and dims with 8-byte
 * loads (8 e4m3 values) instead of 16-byte ones, so a chunk is 2 KB of K
 * and 2 KB of V: half the bytes of the bf16 cache for the same
 * instructions. Each lane also reads the fp32 scales of the key whose
 * score it ends with: the key scale multiplies that score (the key's
 * column of q·Kᵀ), the value scale that key's probability before it goes
 * to the lanes holding its V slice (the column of P), while the softmax
 * sum uses the probability itself.
 */
#include "cuda_attn_decode.cuh"

#define DEC_THREADS (DEC_WARPS * 32)

template <int G, bool EARLY, bool KV8, bool PF = false, int R = 1>
__global__ void __launch_bounds__(DEC_THREADS) attn_decode_kernel(dec_args a) {
    __shared__ dec_shared<R * G> sh;
    nc_pdl_trigger();
    nc_attn_decode_cta<G, EARLY, KV8, DEC_WARPS, PF, R>(a, blockIdx.x, blockIdx.y, blockIdx.z, sh);
}

/* The paired kernel (R = 2 rows) for G query heads per kv head
 * (G <= NC_ATTN_PAIR_MAX_G). */
template <bool EARLY, bool KV8>
static void (*paired_kernel(int G))(dec_args) {
    static_assert(NC_ATTN_PAIR_MAX_G == 2, "instantiated for G = 1 and 2");
    return G == 1 ? attn_decode_kernel<1, EARLY, KV8, false, 2> : attn_decode_kernel<2, EARLY, KV8, false, 2>;
}

/* --deterministic: the attention of token a.row0 + blockIdx.z, for any
 * token of any batch (a decode row or a prompt token; its q and the cache
 * up to its position are ready). Its keys [lo, pos] are cut into splits of
 * NC_DET_SPLIT_KEYS from lo's chunk on, each split into DEC_WARPS runs of
 * DET_CHUNKS chunks, one per warp, whatever the grid: a split is always
 * reduced the same way (a warp's run in key order, the warps in warp
 * order), and the splits' partials are merged in split order. A CTA takes
 * splits blockIdx.x, + gridDim.x, ... of its (token, kv head) (the grid is
 * sized for parallelism only); the one that completes the last split (an
 * integer counter) merges them. The bits of a token's output thus depend on
 * its position, window, q, keys and values only. */
#define DET_CHUNKS (NC_DET_SPLIT_KEYS / DEC_CHUNK / DEC_WARPS)
template <int G, bool KV8>
__global__ void __launch_bounds__(DEC_THREADS) attn_det_kernel(dec_args a) {
    constexpr int D = NC_HEAD_DIM, CPB = NC_KV_BLOCK_TOKENS / DEC_CHUNK;
    static_assert(DET_CHUNKS * DEC_CHUNK * DEC_WARPS == NC_DET_SPLIT_KEYS, "a split is whole chunks per warp");
    __shared__ dec_shared<G> sh;
    nc_pdl_trigger();
    int hk = blockIdx.y, row = blockIdx.z, t = a.row0 + row;
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, dl = lane & 15;
    int pos = a.tpos[t];
    int lo = a.window == INT32_MAX ? 0 : max(0, pos - a.window);
    int c_lo = lo / DEC_CHUNK, c_hi = pos / DEC_CHUNK;
    int need = (c_hi - c_lo) / (DET_CHUNKS * DEC_WARPS) + 1;
    if ((int)blockIdx.x >= need) return;
    nc_pdl_wait(); /* q and the cache come from the rope_append kernel */
    const int32_t *bt = a.bt + a.s_bt[a.tseq[t]];
    const int kl = 2 * ((lane >> 1) & 7) + (lane >> 4); /* the chunk's key whose score this lane ends with */
    float q[G][8];
#pragma unroll
    for (int g = 0; g < G; g++) {
        nc_bf16x8_to_f32(__ldg((const uint4 *)(a.q + ((size_t)t * a.H + hk * G + g) * D) + dl), q[g]);
#pragma unroll
        for (int j = 0; j < 8; j++) q[g][j] *= a.qscale;
    }
    size_t part0 = ((size_t)row * a.H + hk * G) * a.splits; /* head g, split s: part0 + g * splits + s */
    int done = 0;
    for (int s = blockIdx.x; s < need; s += gridDim.x, done++) {
        float m[G], l[G], acc[G][8];
#pragma unroll
        for (int g = 0; g < G; g++) {
            m[g] = -INFINITY, l[g] = 0.0f;
#pragma unroll
            for (int j = 0; j < 8; j++) acc[g][j] = 0.0f;
        }
        int cb = c_lo + (s * DEC_WARPS + warp) * DET_CHUNKS, ce = min(cb + DET_CHUNKS, c_hi + 1);
        for (int c = cb; c < ce; c++) {
            dec_chunk<KV8> ch;
            load_chunk<KV8>(a, __ldg(bt + c / CPB), hk, c, lane, kl, ch, false);
            attend_chunk<G, KV8>(ch, c * DEC_CHUNK + kl, lo, pos, lane, q, m, l, acc);
        }
        float num[G], den[G], mx[G];
        merge_warps<G, DEC_WARPS>(sh, m, l, acc, num, den, mx);
        if (need == 1) {
#pragma unroll
            for (int g = 0; g < G; g++)
                a.out[((size_t)t * a.H + hk * G + g) * D + tid] =
                    __float2bfloat16_rn(den[g] > 0.0f ? num[g] / den[g] : 0.0f);
            return;
        }
#pragma unroll
        for (int g = 0; g < G; g++)
            store_partial<DEC_WARPS>(a.part + (part0 + (size_t)g * a.splits + s) * (D + 2), num[g], mx[g], den[g], tid);
    }
    if (!arrive_last<G, DEC_WARPS>(sh, &a.count[row * a.Hkv + hk], done, need)) return;
#pragma unroll
    for (int g = 0; g < G; g++)
        a.out[((size_t)t * a.H + hk * G + g) * D + tid] =
            __float2bfloat16_rn(merge_splits(a.part + (part0 + (size_t)g * a.splits) * (D + 2), need, tid));
}

void nc_cuda_dec_args_fill(const nc_cuda *cu, int layer, int splits, bool fused, dec_args *out) {
    dec_args a = {};
    a.q = cu->q;
    nc_cuda_kv_layer kv = nc_cuda_kv_of(cu, layer);
    a.kc = kv.kc, a.vc = kv.vc, a.kc8 = kv.kc8, a.vc8 = kv.vc8, a.ksc = kv.ksc, a.vsc = kv.vsc;
    a.dec_seq = META(cu, dec_seq), a.dec_grp = META(cu, dec_grp), a.s_tok0 = META(cu, s_tok0), a.s_pos = META(cu, s_pos);
    a.s_bt = META(cu, s_bt), a.bt = META(cu, bt), a.s_new = META(cu, s_new);
    a.tpos = META(cu, tpos), a.tseq = META(cu, tseq);
    a.part = cu->part;
    a.count = cu->attn_count;
    a.out = cu->attn;
    a.H = cu->H, a.Hkv = cu->Hkv, a.splits = splits;
    a.window = cu->layers[layer].window;
    a.qscale = 1.4426950408889634f / sqrtf((float)cu->D);
    a.fused = fused;
    if (fused) nc_cuda_rope_args_fill(cu, layer, &a.rope); /* read only when fused */
    *out = a;
}

int nc_cuda_attn_decode(nc_cuda *cu, int layer, int nb, int splits, bool fused, int group) {
    dec_args a;
    nc_cuda_dec_args_fill(cu, layer, splits, fused, &a);
    NC_ASSERT((int64_t)nb * splits * cu->H * (cu->D + 2) <= cu->part_floats);
    static void (*const with_early[2][NC_ATTN_MAX_GROUP + 1])(dec_args) = {
        {NULL, attn_decode_kernel<1, true, false>, attn_decode_kernel<2, true, false>,
         attn_decode_kernel<3, true, false>, attn_decode_kernel<4, true, false>, attn_decode_kernel<5, true, false>,
         attn_decode_kernel<6, true, false>, attn_decode_kernel<7, true, false>, attn_decode_kernel<8, true, false>},
        {NULL, attn_decode_kernel<1, true, true>, attn_decode_kernel<2, true, true>, attn_decode_kernel<3, true, true>,
         attn_decode_kernel<4, true, true>, attn_decode_kernel<5, true, true>, attn_decode_kernel<6, true, true>,
         attn_decode_kernel<7, true, true>, attn_decode_kernel<8, true, true>}};
    static void (*const without[2][NC_ATTN_MAX_GROUP + 1])(dec_args) = {
        {NULL, attn_decode_kernel<1, false, false>, attn_decode_kernel<2, false, false>,
         attn_decode_kernel<3, false, false>, attn_decode_kernel<4, false, false>,
         attn_decode_kernel<5, false, false>, attn_decode_kernel<6, false, false>,
         attn_decode_kernel<7, false, false>, attn_decode_kernel<8, false, false>},
        {NULL, attn_decode_kernel<1, false, true>, attn_decode_kernel<2, false, true>,
         attn_decode_kernel<3, false, true>, attn_decode_kernel<4, false, true>, attn_decode_kernel<5, false, true>,
         attn_decode_kernel<6, false, true>, attn_decode_kernel<7, false, true>, attn_decode_kernel<8, false, true>}};
    static void (*const prefetch[2][NC_ATTN_MAX_GROUP + 1])(dec_args) = {
        {NULL, attn_decode_kernel<1, false, false, true>, attn_decode_kernel<2, false, false, true>,
         attn_decode_kernel<3, false, false, true>, attn_decode_kernel<4, false, false, true>,
         attn_decode_kernel<5, false, false, true>, attn_decode_kernel<6, false, false, true>,
         attn_decode_kernel<7, false, false, true>, attn_decode_kernel<8, false, false, true>},
        {NULL, attn_decode_kernel<1, false, true, true>, attn_decode_kernel<2, false, true, true>,
         attn_decode_kernel<3, false, true, true>, attn_decode_kernel<4, false, true, true>,
         attn_decode_kernel<5, false, true, true>, attn_decode_kernel<6, false, true, true>,
         attn_decode_kernel<7, false, true, true>, attn_decode_kernel<8, false, true, true>}};
    /* The first-chunk prefetch before the PDL wait keeps 16 uint4 live
     * across it (128 registers instead of 84 for G = 1): worth it when the
     * context is split over many small CTAs (batch 1..8 on d34), not when
     * each CTA streams a whole row, where 6 instead of 4 resident CTAs per
     * SM win (H100, d34 @640: batch 32 +5.5%, 64 +1.6%, 128 -1%).
     * NC_CUDA_ATTN_PREFETCH=1 keeps the next chunk in flight through the
     * whole run instead (PF): the same trade for one-split batches, where
     * the fp8 cache's chunks are half the registers. */
    void (*const *kernels)(dec_args) =
        (splits > 1 ? with_early : cu->env.cuda_attn_prefetch ? prefetch : without)[cu->kv_fp8 ? 1 : 0];
    NC_ASSERT(cu->G >= 1 && cu->G <= NC_ATTN_MAX_GROUP); /* check_model refuses other group sizes */
    void (*kernel)(dec_args) = kernels[cu->G];
    if (group > 1) { /* grid z: the groups (at most nb; the rest of the CTAs return at once) */
        NC_ASSERT(group == 2 && !fused && cu->G <= NC_ATTN_PAIR_MAX_G);
        kernel = splits > 1 ? (cu->kv_fp8 ? paired_kernel<true, true> : paired_kernel<true, false>)(cu->G)
                            : (cu->kv_fp8 ? paired_kernel<false, true> : paired_kernel<false, false>)(cu->G);
    }
    cudaError_t e = nc_launch(cu, kernel, dim3(splits, cu->Hkv, nb), dim3(DEC_THREADS), 0, a);
    if (e != cudaSuccess) return nc_fail("cuda: launching attn_decode: %s", cudaGetErrorString(e));
    return 0;
}

int nc_cuda_attn_det(nc_cuda *cu, int layer, int n) {
    dec_args a;
    nc_cuda_dec_args_fill(cu, layer, cu->det_splits, false, &a);
    static void (*const kernels[2][NC_ATTN_MAX_GROUP + 1])(dec_args) = {
        {NULL, attn_det_kernel<1, false>, attn_det_kernel<2, false>, attn_det_kernel<3, false>,
         attn_det_kernel<4, false>, attn_det_kernel<5, false>, attn_det_kernel<6, false>, attn_det_kernel<7, false>,
         attn_det_kernel<8, false>},
        {NULL, attn_det_kernel<1, true>, attn_det_kernel<2, true>, attn_det_kernel<3, true>, attn_det_kernel<4, true>,
         attn_det_kernel<5, true>, attn_det_kernel<6, true>, attn_det_kernel<7, true>, attn_det_kernel<8, true>}};
    NC_ASSERT(cu->G >= 1 && cu->G <= NC_ATTN_MAX_GROUP);
    /* The partials and counters hold max_seqs rows: longer batches (prompt
     * chunks) run in launches of that many tokens. The grid's splits only
     * spread the work (a decode batch's count is fixed, for its graph). */
    for (int row0 = 0; row0 < n; row0 += cu->max_seqs) {
        int rows = NC_MIN(cu->max_seqs, n - row0);
        int splits = NC_MIN(nc_cuda_decode_splits(cu, rows), cu->det_splits);
        NC_ASSERT((int64_t)rows * cu->det_splits * cu->H * (cu->D + 2) <= cu->part_floats);
        a.row0 = row0;
        cudaError_t e = nc_launch(cu, kernels[cu->kv_fp8 ? 1 : 0][cu->G], dim3(splits, cu->Hkv, rows),
                                  dim3(DEC_THREADS), 0, a);
        if (e != cudaSuccess) return nc_fail("cuda: launching attn_det: %s", cudaGetErrorString(e));
    }
    return 0;
}

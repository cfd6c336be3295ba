/*
 * cuda_forward.cu: the forward pass (nanochat's GPT.forward with a KV
 * cache, docs/model.md) for a batch of chunks, and decode steps as CUDA
 * graphs. It reads like backend/cpu/cpu_forward.c: embed, then per layer
 * norm -> qkv -> RoPE + append -> attention -> out projection -> norm ->
 * MLP, then the logits of the rows that asked for them.
 *
 * Per forward: cuda_batch.cu validates the batch and uploads its metadata
 * (token ids, positions, block tables, ...) with one copy, then the layers
 * run. Every matrix product goes through project(), the one place that
 * picks a kernel for the row count and weight format: our GEMV for a
 * single token (batch-1 decode, the norm and epilogue fused) and its
 * tensor-core sibling for 2..8 rows of 8-bit weights, our skinny wgmma GEMM
 * up to 64 rows on sm_90a (8-bit weights: for every row count),
 * cuBLASLt otherwise (8-bit weights: our mma.sync GEMM). Attention runs split-KV for
 * one-token chunks and the tensor-core flash kernel for longer chunks, in
 * the same layer.
 *
 * --deterministic swaps in batch-invariant kernels (project_det,
 * nc_cuda_attn_det; docs/performance.md, Batch invariance) and leaves the
 * rest as it is, graphs included.
 *
 * A batch made only of one-token chunks (a decode step) is replayed from a
 * CUDA graph cached by batch size: every kernel reads positions, tokens and
 * block tables from the metadata buffer, whose layout depends only on the
 * batch size, so the same graph serves every step. The first step of a
 * size runs eagerly (which also plans its GEMMs); the second captures.
 * On Hopper a decode step of one row runs instead as one persistent
 * kernel (cuda_persist.cu).
 */
#include <string.h>

#include "cuda_internal.cuh"
#include "cuda_rope.cuh"

/* ==== profiling (NC_CUDA_PROFILE=1) ==== */

/* Marks the end of `stage`: the device time since the previous mark is
 * charged to it when the forward is collected. */
static void prof_mark(nc_cuda *cu, int stage) {
    if (!cu->profile || cu->prof_n >= NC_PROF_EVENTS) return;
    cudaEventRecord(cu->prof_ev[cu->prof_n], cu->stream);
    cu->prof_stage[cu->prof_n++] = stage;
}

/* Keeps the stage times of the latest forward (warm-up excluded that way). */
static void prof_collect(nc_cuda *cu) {
    if (!cu->profile) return;
    if (cu->prof_n < 2) {
        cu->prof_n = 0;
        return;
    }
    for (int i = 0; i < NC_PROF_STAGES; i++) cu->prof_ms[i] = 0;
    for (int i = 1; i < cu->prof_n; i++) {
        float ms = 0;
        if (cu->prof_stage[i] >= 0 && cudaEventElapsedTime(&ms, cu->prof_ev[i - 1], cu->prof_ev[i]) == cudaSuccess)
            cu->prof_ms[cu->prof_stage[i]] += ms;
    }
    cu->prof_n = 0;
}

/* ==== projections ==== */

/* The input rows of a projection: bf16 activations used as they are, or
 * rows of the residual stream RMS-normed on the way in (nanochat norms
 * before attention, before the MLP and before the lm_head). */
typedef enum {
    ROWS_BF16,   /* bf16 [n, cols] at p (attention output, MLP hidden) */
    ROWS_NORMED, /* rmsnorm of the fp32 residual rows [n, C] at p */
    ROWS_LOGITS, /* rmsnorm of the residual rows that asked for logits, from logits row r0 (V6: less
                    the backout) */
} rows_kind;

typedef struct {
    rows_kind kind;
    const void *p;
    int r0;
} proj_rows;

static proj_rows as_is(const bf16 *a) {
    proj_rows r = {ROWS_BF16, a, 0};
    return r;
}
static proj_rows normed(const float *x) {
    proj_rows r = {ROWS_NORMED, x, 0};
    return r;
}
static proj_rows logits_rows(int r0) {
    proj_rows r = {ROWS_LOGITS, NULL, r0};
    return r;
}

/* Whether project() serves n rows with the GEMV. Its fp32 q|k|v output is
 * what the fused decode attention reads (the GEMMs write bf16). */
static bool gemv_rows(const nc_cuda *cu, int n) { return !cu->det && n <= NC_GEMV_MAX_ROWS; }

/* Whether project() serves n rows (2+) of w with the tensor-core GEMV
 * (NC_CUDA_GEMV_ROWS): small decode batches and verified drafts of 8-bit
 * weights. A graph of d34's products of 2..8 rows took 0.86x the skinny
 * GEMM's time with int8 weights, 0.96x with fp8, but 1.27x with bf16
 * (H200, bench/RESULTS.md session 11): bf16 stays with the skinny GEMM. */
static bool gemv_tc_rows(const nc_cuda *cu, const nc_cuda_weight *w, int n) {
    return !cu->det && w->format != NC_WEIGHT_BF16 && n > NC_GEMV_MAX_ROWS && n <= cu->gemv_rows_max &&
           nc_cuda_gemv_rows_fits(cu, w, n);
}

/* The input rows of a GEMM as bf16: normed into cu->h where they are
 * normed (the logits rows gathered first), else as they are. */
static int gemm_input(nc_cuda *cu, proj_rows in, int n, const bf16 **x) {
    *x = in.kind == ROWS_BF16 ? (const bf16 *)in.p : cu->h;
    if (in.kind == ROWS_NORMED) return nc_cuda_rmsnorm_bf16(cu, (const float *)in.p, cu->h, n);
    if (in.kind == ROWS_LOGITS) return nc_cuda_gather_rows(cu, in.r0, n, true);
    return 0;
}

/* --deterministic: every row count through the one GEMM whose outputs do
 * not depend on the number of rows (the mma.sync kernel: no split-K, one
 * accumulation order over k), from bf16 input rows normed by the same
 * kernel for every row count; no GEMV (its fp32 normed input), no skinny
 * GEMM (its split-K), no cuBLASLt (its algorithm follows the shape). */
static int project_det(nc_cuda *cu, const nc_cuda_weight *w, proj_rows in, int n, nc_cuda_epilogue epi, void *out) {
    const bf16 *x;
    return gemm_input(cu, in, n, &x) || nc_cuda_mma_gemm(cu, w, x, out, n, epi);
}

/* out = epilogue(in · Wᵀ) for n input rows; out has row stride w->rows.
 * The one place that picks a matrix-product kernel:
 *   - one row (batch-1 decode): the GEMV, computing w->used_rows outputs
 *     with the RMSNorm of a normed input folded in (it reads the fp32 rows);
 *   - 8-bit weights, 2..NC_CUDA_GEMV_ROWS rows (8 by default): the
 *     tensor-core GEMV, the same way (cuda_gemv_rows.cu);
 *   - NC_CUDA_FP8_ACT, fp8 weights, 65 rows or more: the rows quantised
 *     to e4m3 (one scale each) and an fp8 tensor-core product: the skinny
 *     GEMM's e4m3 x e4m3 variant (sm_90a), else cuBLASLt's;
 *   - 2..64 rows: the skinny wgmma GEMM where it runs (sm_90a), and for
 *     8-bit weights every row count past one (token tiles past 64);
 *   - otherwise cuBLASLt (bf16, plus a ReLU² / softcap pass) or, for 8-bit
 *     weights, which cuBLASLt cannot widen, the mma.sync GEMM.
 * The GEMMs read bf16 rows: a normed input is first normed into cu->h (by
 * the gather kernel for the logits rows). Each weight format's kernels
 * widen its values themselves and apply its row scales
 * (docs/quantization.md). Under --deterministic, project_det instead. */
/* Whether the product of w with n rows quantises its rows to e4m3 first
 * (NC_CUDA_FP8_ACT). */
static bool e4m3_rows(const nc_cuda *cu, const nc_cuda_weight *w, int n) {
    return cu->fp8_act && w->format == NC_WEIGHT_FP8 && n >= NC_FP8_ACT_MIN_ROWS;
}

/* project() past the choice of GEMV or GEMM: the GEMMs on bf16 rows x. */
static int project_gemm(nc_cuda *cu, const nc_cuda_weight *w, const bf16 *x, int n, nc_cuda_epilogue epi, void *out) {
    if (e4m3_rows(cu, w, n)) {
        if (nc_cuda_quant_rows_e4m3(cu, x, n, w->cols, cu->act8, cu->act8_scale)) return -1;
        if (nc_cuda_skinny_fp8_act_ready(cu) && nc_cuda_skinny_fits(cu, w, cu->act8, out, n))
            return nc_cuda_skinny_gemm_fp8_act(cu, w, cu->act8, cu->act8_scale, out, n, epi);
        return nc_cuda_lt_matmul_fp8(cu, w, cu->act8, cu->act8_scale, out, n, epi);
    }
    if (nc_cuda_skinny_fits(cu, w, x, out, n)) return nc_cuda_skinny_gemm(cu, w, x, out, n, epi);
    if (w->format != NC_WEIGHT_BF16) return nc_cuda_mma_gemm(cu, w, x, out, n, epi);
    return nc_cuda_lt_matmul(cu, (const bf16 *)w->data, x, out, w->rows, n, w->cols, epi);
}

static int project(nc_cuda *cu, const nc_cuda_weight *w, proj_rows in, int n, nc_cuda_epilogue epi, void *out) {
    bool normed_in = in.kind != ROWS_BF16;
    NC_ASSERT(!normed_in || w->cols == cu->C);
    if (cu->det) return project_det(cu, w, in, n, epi, out);
    bool tc = gemv_tc_rows(cu, w, n);
    if (gemv_rows(cu, n) || tc) { /* both read fp32 rows and fold the norm in */
        const void *x = in.p;
        if (in.kind == ROWS_LOGITS) {
            if (nc_cuda_gather_rows(cu, in.r0, n, false)) return -1;
            x = cu->xr;
        }
        return tc ? nc_cuda_gemv_rows(cu, w, x, !normed_in, normed_in, n, epi, out)
                  : nc_cuda_gemv(cu, w, x, !normed_in, normed_in, epi, out);
    }
    const bf16 *x;
    return gemm_input(cu, in, n, &x) || project_gemm(cu, w, x, n, epi, out);
}

/* The qkv product of `layer` for the batch's n rows. *roped: its epilogue
 * also did RoPE + QK-norm and the KV-cache append (the skinny GEMM where
 * each warp of its epilogue finishes at most one whole token row of a head,
 * nc_cuda_skinny_rope_fits: d34's batches of 2..16 rows, verified chunks
 * included; one launch less per layer, +3% at 2 and 8 rows on an H100,
 * bench/RESULTS.md session 10; NC_CUDA_QKV_ROPE=0 turns it off); else the
 * caller runs the rope_append kernel, or the batch-1 decode attention
 * kernel does that work itself. Not under --deterministic nor tensor
 * parallelism (not measured there). */
static int project_qkv(nc_cuda *cu, int layer, int n, bool *roped) {
    const nc_cuda_weight *w = &cu->layers[layer].qkv;
    *roped = false;
    if (!cu->env.cuda_qkv_rope || cu->det || cu->tp || gemv_rows(cu, n) || gemv_tc_rows(cu, w, n) ||
        e4m3_rows(cu, w, n))
        return project(cu, w, normed(cu->x), n, NC_EPI_STORE, cu->qkv);
    const bf16 *x;
    if (gemm_input(cu, normed(cu->x), n, &x)) return -1;
    if (!nc_cuda_skinny_rope_fits(cu, w, x, cu->qkv, n)) return project_gemm(cu, w, x, n, NC_EPI_STORE, cu->qkv);
    nc_rope_args rope;
    nc_cuda_rope_args_fill(cu, layer, &rope);
    *roped = true;
    return nc_cuda_skinny_gemm_rope(cu, w, x, cu->qkv, n, &rope);
}

/* ==== the layers ==== */

/* A row-parallel product (attention out, MLP out) under tensor
 * parallelism: every rank adds its partial sum into x, which only rank 0
 * still holds (the others zero theirs first), and an all-reduce makes x
 * whole again on every rank. No-ops on a single GPU. */
static int rowpar_begin(nc_cuda *cu, int n) {
    if (!nc_cuda_tp_follower(cu)) return 0;
    NC_CU_TRY(cudaMemsetAsync(cu->x, 0, (size_t)n * cu->C * sizeof(float), cu->stream));
    return 0;
}

static int rowpar_end(nc_cuda *cu, int n) { return cu->tp ? cu->tp->all_reduce(cu, n) : 0; }

static int run_layers(nc_cuda *cu, const nc_cuda_batch *bs) {
    int N = bs->N;
    /* paired rows: the split count of as many rows as the fewest groups they make */
    int att_rows = (bs->n_dec + bs->dec_group - 1) / bs->dec_group;
    int splits = bs->n_dec && !cu->det ? nc_cuda_decode_splits(cu, att_rows) : 0;
    /* batch-1 decode: the attention kernel does RoPE + append itself from
     * the GEMV's fp32 q|k|v (one kernel less per layer, +1-4%; at larger
     * batches every CTA would do it before its KV stream starts, -1%) */
    bool fused = gemv_rows(cu, N);
    NC_ASSERT(!fused || !bs->n_items); /* one token is always a decode row */
    prof_mark(cu, -1);
    if (nc_cuda_embed(cu, N)) return -1;
    prof_mark(cu, NC_PROF_EMBED);
    for (int l = 0; l < cu->L; l++) {
        const nc_cuda_layer *ly = &cu->layers[l];
        if (cu->cfg.has_lambdas && nc_cuda_lambdas(cu, l, N)) return -1;
        /* attention: x += attn(rmsnorm(x) Wqkvᵀ) Woᵀ */
        bool roped;
        if (project_qkv(cu, l, N, &roped)) return -1;
        prof_mark(cu, NC_PROF_QKV);
        if (!fused && !roped && nc_cuda_rope_append(cu, l, N)) return -1;
        prof_mark(cu, NC_PROF_ROPE);
        if (cu->det) {
            if (nc_cuda_attn_det(cu, l, N)) return -1;
        } else {
            if (bs->n_dec && nc_cuda_attn_decode(cu, l, bs->n_dec, splits, fused, bs->dec_group)) return -1;
            if (bs->n_items && nc_cuda_attn_prefill(cu, l, bs->n_items)) return -1;
        }
        prof_mark(cu, NC_PROF_ATTN);
        if (rowpar_begin(cu, N) || project(cu, &ly->o, as_is(cu->attn), N, NC_EPI_ADD, cu->x) ||
            rowpar_end(cu, N))
            return -1;
        prof_mark(cu, NC_PROF_WO);
        /* MLP: x += relu(rmsnorm(x) Wfcᵀ)² Wprojᵀ */
        if (project(cu, &ly->fc, normed(cu->x), N, NC_EPI_RELU2, cu->u)) return -1;
        prof_mark(cu, NC_PROF_FC);
        if (rowpar_begin(cu, N) || project(cu, &ly->proj, as_is(cu->u), N, NC_EPI_ADD, cu->x) ||
            rowpar_end(cu, N))
            return -1;
        prof_mark(cu, NC_PROF_PROJ);
        if (cu->cfg.has_smear && l == cu->L / 2)
            NC_CU_TRY(cudaMemcpyAsync(cu->xb, cu->x, (size_t)N * cu->C * 4, cudaMemcpyDeviceToDevice, cu->stream));
    }
    return 0;
}

/* Softcapped logits of rows r0 .. r0+R-1 into cu->logits [R, Vp]. */
static int run_logits(nc_cuda *cu, int r0, int R) {
    if (nc_cuda_tp_follower(cu)) return 0;
    int rc = project(cu, &cu->lm_head, logits_rows(r0), R, NC_EPI_SOFTCAP, cu->logits);
    prof_mark(cu, NC_PROF_LOGITS);
    return rc;
}

/* Runs layers + logits of a decode batch from its graph (capturing it on
 * the second use of this batch size and grouping), or eagerly. */
static int run_decode(nc_cuda *cu, const nc_cuda_batch *bs, bool *seen) {
    int nb = bs->S, gi = bs->dec_group > 1 ? cu->max_seqs + 1 + nb : nb; /* the graph's index */
    /* one kernel for the whole step; a tensor-parallel rank holds part of
     * each matrix and sums across ranks between stages: graphs */
    if (nb == 1 && cu->persist && !cu->tp) return nc_cuda_persist_step(cu);
    if (!cu->use_graphs || !seen[gi]) {
        seen[gi] = true;
        return run_layers(cu, bs) || run_logits(cu, 0, nb);
    }
    if (!cu->graphs[gi]) {
        cudaGraph_t g = NULL;
        NC_CU_TRY(cudaStreamBeginCapture(cu->stream, cudaStreamCaptureModeThreadLocal));
        int rc = run_layers(cu, bs) || run_logits(cu, 0, nb);
        cudaError_t e = cudaStreamEndCapture(cu->stream, &g);
        if (rc) {
            if (g) cudaGraphDestroy(g);
            return -1;
        }
        if (e != cudaSuccess) return nc_fail("cuda: capturing the decode graph: %s", cudaGetErrorString(e));
        e = cudaGraphInstantiate(&cu->graphs[gi], g, 0);
        cudaGraphDestroy(g);
        if (e != cudaSuccess) {
            cu->graphs[gi] = NULL;
            return nc_fail("cuda: instantiating the decode graph: %s", cudaGetErrorString(e));
        }
    }
    NC_CU_TRY(cudaGraphLaunch(cu->graphs[gi], cu->stream));
    return 0;
}

static int sync_checked(nc_cuda *cu, const char *what) {
    if (cu->tp) return cu->tp->wait(cu, what);
    cudaError_t e = cudaStreamSynchronize(cu->stream);
    if (e != cudaSuccess) return nc_fail("cuda: %s failed on the device: %s", what, cudaGetErrorString(e));
    prof_collect(cu);
    return nc_cuda_persist_check(cu);
}

/* ==== ops ==== */

int nc_cuda_forward(nc_backend *b, const nc_batch *batch, float *logits) {
    nc_cuda *cu = nc_cuda_of(b);
    nc_cuda_batch bs;
    if (nc_cuda_batch_pack(cu, batch, &bs)) return -1;
    if (bs.R && !logits) return nc_fail("forward: the batch asks for logits but no buffer was given");
    if (bs.decode_only) {
        if (run_decode(cu, &bs, cu->graph_seen)) return -1;
    } else if (run_layers(cu, &bs)) {
        return -1;
    }
    if (nc_cuda_tp_follower(cu)) return sync_checked(cu, "forward");
    size_t V = cu->V;
    for (int r0 = 0; r0 < bs.R; r0 += cu->logits_rows) {
        int R = NC_MIN(cu->logits_rows, bs.R - r0);
        if (!bs.decode_only && run_logits(cu, r0, R)) return -1;
        NC_CU_TRY(cudaMemcpy2DAsync(cu->logits_h, V * 4, cu->logits, (size_t)cu->Vp * 4, V * 4, R,
                                    cudaMemcpyDeviceToHost, cu->stream));
        if (sync_checked(cu, "forward")) return -1;
        memcpy(logits + (size_t)r0 * V, cu->logits_h, (size_t)R * V * 4);
    }
    return bs.R ? 0 : sync_checked(cu, "forward");
}

int nc_cuda_forward_sample(nc_backend *b, const nc_batch *batch, nc_device_sampling *rows, int32_t *tokens_out) {
    nc_cuda *cu = nc_cuda_of(b);
    for (int s = 0; batch && batch->seqs && s < batch->n_seqs; s++)
        if (batch->seqs[s].logits == NC_LOGITS_ALL && (!rows[s].tokens || (rows[s].want_logprob && !rows[s].logprobs)))
            return nc_fail("forward_sample: chunk %d asks for NC_LOGITS_ALL without a buffer for its tokens", s);
    nc_cuda_batch bs;
    if (nc_cuda_batch_pack(cu, batch, &bs)) return -1;
    int R = bs.R; /* logits row r: the r-th position sampled (nc_cuda_sampling_pack) */
    if (R > cu->max_seqs)
        return nc_fail("forward_sample: %d positions to sample; this backend samples at most %d per call (max_seqs)",
                       R, cu->max_seqs);
    if (R == 0) return run_layers(cu, &bs) || sync_checked(cu, "forward_sample");
    if (nc_cuda_sampling_pack(cu, batch, rows, R)) return -1;
    if (bs.decode_only) {
        if (run_decode(cu, &bs, cu->graph_seen)) return -1;
    } else if (run_layers(cu, &bs) || run_logits(cu, 0, R)) {
        return -1;
    }
    if (nc_cuda_tp_follower(cu)) return sync_checked(cu, "forward_sample");
    if (nc_cuda_sample(cu, cu->logits, cu->Vp, R)) return -1;
    prof_mark(cu, NC_PROF_SAMPLE);
    NC_CU_TRY(cudaMemcpyAsync(cu->out_tok_h, cu->out_tok_d, R * sizeof(int32_t), cudaMemcpyDeviceToHost, cu->stream));
    NC_CU_TRY(cudaMemcpyAsync(cu->samp_h, cu->samp_d, R * sizeof(nc_cuda_samp), cudaMemcpyDeviceToHost, cu->stream));
    if (sync_checked(cu, "forward_sample")) return -1;
    nc_cuda_sampling_unpack(cu, R, rows, tokens_out);
    return 0;
}

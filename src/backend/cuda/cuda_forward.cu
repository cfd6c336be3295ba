/*
 * cuda_forward.cu: the forward pass of SPEC §1 (nanochat's GPT.forward with
 * a KV cache) for a batch of chunks, and decode steps as CUDA graphs.
 *
 * Per forward: validate the batch and pack its metadata (token ids,
 * positions, block tables, ...) into one pinned buffer, upload it with one
 * copy, then run the layers. A single token (batch-1 decode) uses our GEMVs
 * with the norm and epilogues fused; larger batches GEMMs (nc_cuda_matmul:
 * our skinny wgmma GEMM up to 64 rows on sm_90a, else cuBLASLt).
 * Attention runs split-KV for one-token chunks and the tensor-core flash
 * kernel for longer chunks, in the same layer. Logits are computed only for
 * rows that asked for them.
 *
 * A batch made only of one-token chunks (a decode step) is replayed from a
 * CUDA graph cached by batch size: every kernel reads positions, tokens and
 * block tables from the metadata buffer, whose layout depends only on the
 * batch size, so the same graph serves every step. The first step of a
 * size runs eagerly (which also plans its GEMMs); the second captures.
 */
#include <string.h>

#include "cuda_internal.cuh"

/* ==== batch metadata ==== */

typedef struct {
    int N, S, n_dec, n_items, R;
    bool decode_only;   /* every chunk is one token asking for its logits */
} batch_shape;

static int item_cost(const nc_cuda *cu, const int32_t *m, int64_t s_pos, int64_t s_ntok, int32_t seq, int32_t q0) {
    (void)cu;
    int last = NC_MIN(q0 + NC_ATTN_PREFILL_ROWS, m[s_ntok + seq]) - 1;
    return (m[s_pos + seq] + last) / NC_KV_BLOCK_TOKENS;
}

static int build_meta(nc_cuda *cu, const nc_batch *batch, batch_shape *bs) {
    if (!batch || batch->n_seqs < 1) return nc_fail("forward: empty batch");
    if (batch->n_seqs > cu->max_seqs)
        return nc_fail("forward: %d sequences in one batch; this backend was sized for %d (max_seqs)",
                       batch->n_seqs, cu->max_seqs);
    int N = 0, n_dec = 0, n_items = 0, R = 0;
    int64_t n_bt = 0;
    bool decode_only = true;
    for (int s = 0; s < batch->n_seqs; s++) {
        const nc_seq_chunk *c = &batch->seqs[s];
        if (c->n_tokens < 1 || !c->tokens) return nc_fail("forward: chunk %d has no tokens", s);
        if (c->pos < 0) return nc_fail("forward: chunk %d has negative position %d", s, c->pos);
        if (!c->block_table) return nc_fail("forward: chunk %d has no block table", s);
        if (c->logits != NC_LOGITS_NONE && c->logits != NC_LOGITS_LAST && c->logits != NC_LOGITS_ALL)
            return nc_fail("forward: chunk %d has an unknown logits mode %d", s, (int)c->logits);
        int64_t end = (int64_t)c->pos + c->n_tokens;
        if (end > cu->rope_len)
            return nc_fail("forward: chunk %d reaches position %lld; this backend's KV pool and rotary "
                           "table cover %lld positions",
                           s, (long long)end, (long long)cu->rope_len);
        N += c->n_tokens;
        if (N > cu->max_tokens)
            return nc_fail("forward: more than %d tokens in one batch (max_batch_tokens)", cu->max_tokens);
        n_bt += (end + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
        if (c->n_tokens == 1) n_dec++;
        else n_items += (c->n_tokens + NC_ATTN_PREFILL_ROWS - 1) / NC_ATTN_PREFILL_ROWS;
        R += c->logits == NC_LOGITS_ALL ? c->n_tokens : c->logits == NC_LOGITS_LAST ? 1 : 0;
        if (c->n_tokens != 1 || c->logits != NC_LOGITS_LAST) decode_only = false;
    }
    int S = batch->n_seqs;
    nc_cuda_meta_layout *ml = &cu->ml;
    int64_t off = 0;
    ml->tok = off, off += N;
    ml->tpos = off, off += N;
    ml->tprev = off, off += N;
    ml->tseq = off, off += N;
    ml->s_tok0 = off, off += S;
    ml->s_ntok = off, off += S;
    ml->s_pos = off, off += S;
    ml->s_bt = off, off += S;
    ml->dec_seq = off, off += n_dec;
    ml->items = off, off += 2 * (int64_t)n_items;
    ml->lrow = off, off += R;
    ml->bt = off, off += n_bt;
    ml->used = off;
    if (off > cu->meta_cap || n_items > cu->max_items)
        return nc_fail("forward: the batch's block tables exceed this backend's metadata capacity");

    int32_t *m = cu->meta_h;
    int t = 0, d = 0, it = 0, r = 0;
    int64_t b = 0;
    for (int s = 0; s < S; s++) {
        const nc_seq_chunk *c = &batch->seqs[s];
        m[ml->s_tok0 + s] = t;
        m[ml->s_ntok + s] = c->n_tokens;
        m[ml->s_pos + s] = c->pos;
        m[ml->s_bt + s] = (int32_t)b;
        int nblk = (int)(((int64_t)c->pos + c->n_tokens + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS);
        for (int k = 0; k < nblk; k++) {
            int32_t blk = c->block_table[k];
            if (blk < 0 || blk >= cu->n_blocks)
                return nc_fail("forward: chunk %d: block table entry %d is %d, outside the KV pool [0, %lld)",
                               s, k, blk, (long long)cu->n_blocks);
            m[ml->bt + b++] = blk;
        }
        for (int i = 0; i < c->n_tokens; i++, t++) {
            int32_t tok = c->tokens[i];
            if (tok < 0 || tok >= cu->Vp)
                return nc_fail("forward: chunk %d: token id %d outside the vocabulary [0, %d)", s, tok, cu->Vp);
            int32_t prev = i > 0 ? c->tokens[i - 1] : c->pos > 0 ? c->prev_token : -1;
            if (cu->cfg.has_smear && c->pos + i > 0 && (prev < 0 || prev >= cu->Vp))
                return nc_fail("forward: chunk %d at position %d needs the previous token (V6 smear), got %d",
                               s, c->pos, prev);
            m[ml->tok + t] = tok;
            m[ml->tpos + t] = c->pos + i;
            m[ml->tprev + t] = prev;
            m[ml->tseq + t] = s;
        }
        int tok0 = t - c->n_tokens;
        if (c->logits == NC_LOGITS_ALL)
            for (int i = 0; i < c->n_tokens; i++) m[ml->lrow + r++] = tok0 + i;
        else if (c->logits == NC_LOGITS_LAST)
            m[ml->lrow + r++] = t - 1;
        if (c->n_tokens == 1) {
            m[ml->dec_seq + d++] = s;
        } else {
            for (int q0 = 0; q0 < c->n_tokens; q0 += NC_ATTN_PREFILL_ROWS) { /* insertion sort: most keys first */
                int cost = item_cost(cu, m, ml->s_pos, ml->s_ntok, s, q0);
                int j = it++;
                while (j > 0 && item_cost(cu, m, ml->s_pos, ml->s_ntok, m[ml->items + 2 * (j - 1)],
                                          m[ml->items + 2 * (j - 1) + 1]) < cost) {
                    m[ml->items + 2 * j] = m[ml->items + 2 * (j - 1)];
                    m[ml->items + 2 * j + 1] = m[ml->items + 2 * (j - 1) + 1];
                    j--;
                }
                m[ml->items + 2 * j] = s;
                m[ml->items + 2 * j + 1] = q0;
            }
        }
    }
    bs->N = N, bs->S = S, bs->n_dec = n_dec, bs->n_items = n_items, bs->R = R;
    bs->decode_only = decode_only;
    NC_CU_TRY(cudaMemcpyAsync(cu->meta_d, cu->meta_h, (size_t)ml->used * 4, cudaMemcpyHostToDevice, cu->stream));
    return 0;
}

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

/* ==== the layers ==== */

static int run_layers(nc_cuda *cu, const batch_shape *bs) {
    int N = bs->N, C = cu->C, F = cu->F, HD = cu->H * cu->D;
    bool gemv = N <= NC_GEMV_MAX_ROWS;
    int splits = bs->n_dec ? nc_cuda_decode_splits(cu, bs->n_dec) : 0;
    prof_mark(cu, -1);
    if (nc_cuda_embed(cu, N)) return -1;
    prof_mark(cu, NC_PROF_EMBED);
    for (int l = 0; l < cu->L; l++) {
        const nc_cuda_layer *ly = &cu->layers[l];
        if (cu->cfg.has_lambdas && nc_cuda_lambdas(cu, l, N)) return -1;
        /* attention */
        if (gemv) {
            if (nc_cuda_gemv(cu, ly->wqkv, cu->Q, C, cu->x, false, true, NC_EPI_STORE, cu->qkv, 0.0f))
                return -1;
        } else {
            if (nc_cuda_rmsnorm_bf16(cu, cu->x, cu->h, N) ||
                nc_cuda_matmul(cu, ly->wqkv, cu->h, cu->qkv, cu->Q, N, C, NC_MM_BF16)) /* bf16 [N, Q] */
                return -1;
        }
        prof_mark(cu, NC_PROF_QKV);
        /* batch-1 decode: the attention kernel does RoPE + append itself
         * (one kernel less per layer, +1-4%; at larger batches every CTA
         * would do it before its KV stream starts, -1%) */
        bool fused = !bs->n_items && gemv;
        NC_ASSERT(fused || !gemv); /* one token is always a decode row */
        if (!fused && nc_cuda_rope_append(cu, l, N)) return -1;
        prof_mark(cu, NC_PROF_ROPE);
        if (bs->n_dec && nc_cuda_attn_decode(cu, l, bs->n_dec, splits, fused)) return -1;
        if (bs->n_items && nc_cuda_attn_prefill(cu, l, bs->n_items)) return -1;
        prof_mark(cu, NC_PROF_ATTN);
        if (gemv) {
            if (nc_cuda_gemv(cu, ly->wo, C, HD, cu->attn, true, false, NC_EPI_ADD, cu->x, 0.0f))
                return -1;
        } else if (nc_cuda_matmul(cu, ly->wo, cu->attn, cu->x, C, N, HD, NC_MM_ADD)) {
            return -1;
        }
        prof_mark(cu, NC_PROF_WO);
        /* MLP */
        if (gemv) {
            if (nc_cuda_gemv(cu, ly->wfc, F, C, cu->x, false, true, NC_EPI_RELU2, cu->u, 0.0f))
                return -1;
            prof_mark(cu, NC_PROF_FC);
            if (nc_cuda_gemv(cu, ly->wproj, C, F, cu->u, true, false, NC_EPI_ADD, cu->x, 0.0f))
                return -1;
        } else {
            if (nc_cuda_rmsnorm_bf16(cu, cu->x, cu->h, N) ||
                nc_cuda_matmul(cu, ly->wfc, cu->h, cu->u, F, N, C, NC_MM_RELU2))
                return -1;
            prof_mark(cu, NC_PROF_FC);
            if (nc_cuda_matmul(cu, ly->wproj, cu->u, cu->x, C, N, F, NC_MM_ADD)) return -1;
        }
        prof_mark(cu, NC_PROF_PROJ);
        if (cu->cfg.has_smear && l == cu->L / 2)
            NC_CU_TRY(cudaMemcpyAsync(cu->xb, cu->x, (size_t)N * C * 4, cudaMemcpyDeviceToDevice, cu->stream));
    }
    return 0;
}

/* Softcapped logits of rows r0 .. r0+R-1 into cu->logits [R, Vp]. */
static int run_logits(nc_cuda *cu, int r0, int R) {
    int rc;
    if (R <= NC_GEMV_MAX_ROWS)
        rc = nc_cuda_gather_rows(cu, r0, R, false) ||
             nc_cuda_gemv(cu, cu->lm_head, cu->V, cu->C, cu->xr, false, true, NC_EPI_SOFTCAP, cu->logits,
                          cu->cfg.softcap);
    else
        rc = nc_cuda_gather_rows(cu, r0, R, true) ||
             nc_cuda_matmul(cu, cu->lm_head, cu->h, cu->logits, cu->Vp, R, cu->C, NC_MM_SOFTCAP);
    prof_mark(cu, NC_PROF_LOGITS);
    return rc;
}

/* Runs layers + logits of a decode batch from its graph (capturing it on
 * the second use of this batch size), or eagerly. */
static int run_decode(nc_cuda *cu, const batch_shape *bs, bool *seen) {
    int nb = bs->S;
    if (!cu->use_graphs || !seen[nb]) {
        seen[nb] = true;
        return run_layers(cu, bs) || run_logits(cu, 0, nb);
    }
    if (!cu->graphs[nb]) {
        cudaGraph_t g = NULL;
        NC_CU_TRY(cudaStreamBeginCapture(cu->stream, cudaStreamCaptureModeThreadLocal));
        int rc = run_layers(cu, bs) || run_logits(cu, 0, nb);
        cudaError_t e = cudaStreamEndCapture(cu->stream, &g);
        if (rc) {
            if (g) cudaGraphDestroy(g);
            return -1;
        }
        if (e != cudaSuccess) return nc_fail("cuda: capturing the decode graph: %s", cudaGetErrorString(e));
        e = cudaGraphInstantiate(&cu->graphs[nb], g, 0);
        cudaGraphDestroy(g);
        if (e != cudaSuccess) {
            cu->graphs[nb] = NULL;
            return nc_fail("cuda: instantiating the decode graph: %s", cudaGetErrorString(e));
        }
    }
    NC_CU_TRY(cudaGraphLaunch(cu->graphs[nb], cu->stream));
    return 0;
}

static int sync_checked(nc_cuda *cu, const char *what) {
    cudaError_t e = cudaStreamSynchronize(cu->stream);
    if (e != cudaSuccess) return nc_fail("cuda: %s failed on the device: %s", what, cudaGetErrorString(e));
    prof_collect(cu);
    return 0;
}

/* ==== ops ==== */

int nc_cuda_forward(nc_backend *b, const nc_batch *batch, float *logits) {
    nc_cuda *cu = nc_cuda_of(b);
    batch_shape bs;
    if (build_meta(cu, batch, &bs)) return -1;
    if (bs.R && !logits) return nc_fail("forward: the batch asks for logits but no buffer was given");
    if (bs.decode_only) {
        if (run_decode(cu, &bs, cu->graph_seen)) return -1;
    } else if (run_layers(cu, &bs)) {
        return -1;
    }
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
    for (int s = 0; batch && s < batch->n_seqs; s++)
        if (batch->seqs[s].logits == NC_LOGITS_ALL)
            return nc_fail("forward_sample: chunk %d asks for NC_LOGITS_ALL (LAST or NONE only)", s);
    batch_shape bs;
    if (build_meta(cu, batch, &bs)) return -1;
    int R = bs.R;
    /* Logits row r belongs to the r-th chunk that asked for LAST. */
    int *chunk_of = cu->sample_chunk;
    for (int s = 0, r = 0; s < batch->n_seqs; s++)
        if (batch->seqs[s].logits == NC_LOGITS_LAST) chunk_of[r++] = s;
    for (int r = 0; r < R; r++) {
        const nc_device_sampling *src = &rows[chunk_of[r]];
        nc_cuda_samp *d = &cu->samp_h[r];
        d->temperature = src->temperature;
        d->top_k = src->top_k;
        d->top_p = src->top_p;
        d->min_p = src->min_p;
        d->rng[0] = src->rng_state[0];
        d->rng[1] = src->rng_state[1];
    }
    if (R == 0) return run_layers(cu, &bs) || sync_checked(cu, "forward_sample");
    NC_CU_TRY(cudaMemcpyAsync(cu->samp_d, cu->samp_h, R * sizeof(nc_cuda_samp), cudaMemcpyHostToDevice, cu->stream));
    if (bs.decode_only) {
        if (run_decode(cu, &bs, cu->graph_seen)) return -1;
    } else if (run_layers(cu, &bs) || run_logits(cu, 0, R)) {
        return -1;
    }
    if (nc_cuda_sample(cu, cu->logits, cu->Vp, R)) return -1;
    prof_mark(cu, NC_PROF_SAMPLE);
    NC_CU_TRY(cudaMemcpyAsync(cu->out_tok_h, cu->out_tok_d, R * sizeof(int32_t), cudaMemcpyDeviceToHost, cu->stream));
    NC_CU_TRY(cudaMemcpyAsync(cu->samp_h, cu->samp_d, R * sizeof(nc_cuda_samp), cudaMemcpyDeviceToHost, cu->stream));
    if (sync_checked(cu, "forward_sample")) return -1;
    for (int r = 0; r < R; r++) {
        int s = chunk_of[r];
        tokens_out[s] = cu->out_tok_h[r];
        rows[s].rng_state[0] = cu->samp_h[r].rng[0];
        rows[s].rng_state[1] = cu->samp_h[r].rng[1];
    }
    return 0;
}

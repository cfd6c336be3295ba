/*
 * cuda_batch.cu: a batch on the host side, before and after the kernels
 * run: validation against backend.h's contract, the metadata every kernel
 * reads, and the per-row sampling settings of forward_sample.
 *
 * Metadata (token ids, positions, previous tokens, chunk of each token,
 * per-chunk offsets, decode rows, prefill work items, logits rows, block
 * tables) is packed into one pinned int32 buffer at offsets that depend
 * only on the batch's sizes (cu->ml), and uploaded with one copy of exactly
 * the bytes used. A decode batch of nb rows always gets the same offsets,
 * which is what lets its CUDA graph be replayed (cuda_forward.cu).
 */
#include "cuda_internal.cuh"

/* Last 64-token block a prefill work item (chunk seq, query rows from q0)
 * reads: its keys, hence its cost. */
static int item_cost(const int32_t *m, const nc_cuda_meta_layout *ml, int32_t seq, int32_t q0) {
    int last = NC_MIN(q0 + NC_ATTN_PREFILL_ROWS, m[ml->s_ntok + seq]) - 1;
    return (m[ml->s_pos + seq] + last) / NC_KV_BLOCK_TOKENS;
}

/* Checks every chunk's fields and this backend's limits, and measures the
 * batch (array lengths of the metadata). */
static int check_batch(const nc_cuda *cu, const nc_batch *batch, nc_cuda_batch *bs, int64_t *n_bt) {
    if (!batch || !batch->seqs || batch->n_seqs < 1) return nc_fail("forward: empty batch");
    if (batch->n_seqs > cu->max_seqs)
        return nc_fail("forward: %d sequences in one batch; this backend was sized for %d (max_seqs)",
                       batch->n_seqs, cu->max_seqs);
    int N = 0, n_dec = 0, n_items = 0, R = 0;
    bool decode_only = true;
    *n_bt = 0;
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
        *n_bt += (end + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
        if (c->n_tokens == 1) n_dec++;
        else n_items += (c->n_tokens + NC_ATTN_PREFILL_ROWS - 1) / NC_ATTN_PREFILL_ROWS;
        R += c->logits == NC_LOGITS_ALL ? c->n_tokens : c->logits == NC_LOGITS_LAST ? 1 : 0;
        if (c->n_tokens != 1 || c->logits != NC_LOGITS_LAST) decode_only = false;
    }
    bs->N = N, bs->S = batch->n_seqs, bs->R = R, bs->n_dec = n_dec, bs->n_items = n_items;
    bs->decode_only = decode_only;
    return 0;
}

/* Offsets of the metadata arrays for this batch's sizes. */
static int plan_layout(nc_cuda *cu, const nc_cuda_batch *bs, int64_t n_bt) {
    nc_cuda_meta_layout *ml = &cu->ml;
    int64_t off = 0;
    ml->tok = off, off += bs->N;
    ml->tpos = off, off += bs->N;
    ml->tprev = off, off += bs->N;
    ml->tseq = off, off += bs->N;
    ml->s_tok0 = off, off += bs->S;
    ml->s_ntok = off, off += bs->S;
    ml->s_pos = off, off += bs->S;
    ml->s_bt = off, off += bs->S;
    ml->s_new = off, off += bs->S;
    ml->dec_seq = off, off += bs->n_dec;
    ml->dec_grp = off, off += bs->dec_group > 1 ? 2 * (int64_t)bs->n_dec : 0;
    ml->items = off, off += 2 * (int64_t)bs->n_items;
    ml->lrow = off, off += bs->R;
    ml->bt = off, off += n_bt;
    ml->used = off;
    if (off > cu->meta_cap || bs->n_items > cu->max_items)
        return nc_fail("forward: the batch's block tables exceed this backend's metadata capacity");
    return 0;
}

/* Chunk s's prefill work items, inserted into the list sorted by cost
 * (most keys first, so the longest items start first). */
static void add_items(int32_t *m, const nc_cuda_meta_layout *ml, int s, int n_tokens, int *it) {
    int32_t *items = m + ml->items;
    for (int q0 = 0; q0 < n_tokens; q0 += NC_ATTN_PREFILL_ROWS) {
        int cost = item_cost(m, ml, s, q0);
        int j = (*it)++;
        while (j > 0 && item_cost(m, ml, items[2 * (j - 1)], items[2 * (j - 1) + 1]) < cost) {
            items[2 * j] = items[2 * (j - 1)];
            items[2 * j + 1] = items[2 * (j - 1) + 1];
            j--;
        }
        items[2 * j] = s;
        items[2 * j + 1] = q0;
    }
}

/* Whether the n_rows rows of a verified chunk at position pos run their
 * decode attention in pairs (NC_CUDA_VERIFY_PAIRS; only where G <=
 * NC_ATTN_PAIR_MAX_G, the registers of the paired kernel). A pair reads
 * each chunk of the cache once for two rows, where single rows read it
 * twice (the repeat from L2), at the price of a heavier CTA (more
 * registers, two rows' math per chunk) and fewer of them. "auto" pairs
 * where that paid on an H100 (d34, bench/RESULTS.md session 10, call V):
 * from 3 rows with rows x context >= NC_PAIR_MIN_READS (verifying 2 drafts
 * at 1024: -0.7% time; 4 at 1024: -1%, at 4096: -6%; 8 at 128: -3%), not 2
 * rows (+1.5..5%) nor 5 rows at 128 (+2%). */
#define NC_PAIR_MIN_READS 1024
static bool pair_rows(const nc_cuda *cu, int n_rows, int pos) {
    if (cu->verify_pairs == NC_PAIRS_OFF || n_rows < 2) return false;
    return cu->verify_pairs == NC_PAIRS_ON || (n_rows >= 3 && (int64_t)n_rows * pos >= NC_PAIR_MIN_READS);
}

/* The groups of the n_dec decode rows for paired decode attention (meta
 * dec_grp), in row order: rows i and i + 1 (i even) of a verified chunk
 * that verify_as_rows paired (cu->verify_pair), an odd last row alone,
 * every other row alone; the slots past the last group get no rows. */
static void pair_up_rows(const nc_cuda *cu, int32_t *m, const nc_cuda_meta_layout *ml, int n_dec) {
    int32_t *grp = m + ml->dec_grp;
    int g = 0;
    for (int d = 0; d < n_dec; g++) {
        int i = cu->verify_pair[m[ml->dec_seq + d]];
        int n = i >= 0 && i % 2 == 0 && d + 1 < n_dec && cu->verify_pair[m[ml->dec_seq + d + 1]] == i + 1 ? 2 : 1;
        grp[2 * g] = d, grp[2 * g + 1] = n;
        d += n;
    }
    for (; g < n_dec; g++) grp[2 * g] = 0, grp[2 * g + 1] = 0;
}

/* Fills the metadata of every chunk, checking block ids and token ids;
 * with bs_group > 1, the decode rows' pairs too. */
static int fill_meta(nc_cuda *cu, const nc_batch *batch, const int32_t *first_new, int bs_group) {
    const nc_cuda_meta_layout *ml = &cu->ml;
    int32_t *m = cu->meta_h;
    int t = 0, d = 0, it = 0, r = 0;
    int64_t b = 0;
    for (int s = 0; s < batch->n_seqs; s++) {
        const nc_seq_chunk *c = &batch->seqs[s];
        m[ml->s_tok0 + s] = t;
        m[ml->s_ntok + s] = c->n_tokens;
        m[ml->s_pos + s] = c->pos;
        m[ml->s_bt + s] = (int32_t)b;
        m[ml->s_new + s] = first_new ? first_new[s] : c->pos;
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
            if (tok < 0 || tok >= cu->V)
                return nc_fail("forward: chunk %d: token id %d outside the vocabulary [0, %d)", s, tok, cu->V);
            int32_t prev = i > 0 ? c->tokens[i - 1] : c->pos > 0 ? c->prev_token : -1;
            if (cu->cfg.has_smear && c->pos + i > 0 && (prev < 0 || prev >= cu->V))
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
        if (c->n_tokens == 1) m[ml->dec_seq + d++] = s;
        else add_items(m, ml, s, c->n_tokens, &it);
    }
    if (bs_group > 1) pair_up_rows(cu, m, ml, d);
    return 0;
}

/* Verification as decode rows. A chunk asking for the logits of every
 * position and at most NC_CUDA_VERIFY_MAX_ROWS long (a decode row and its
 * drafts, docs/speculative.md) runs as that many one-token rows at
 * consecutive positions over the same block table. The step appends every
 * row's key and value before attention runs, and each row attends to the
 * keys up to its own position: the causal mask among the drafts. So the
 * decode kernels serve it (split-KV attention instead of a prefill tile
 * with a handful of queries; the rows read the sequence's cache each, the
 * repeats from L2), and a batch of such rows replays the CUDA graph of its
 * row count. The logits rows come out in the same order. Only where the
 * rows fit max_seqs, and unless NC_CUDA_VERIFY_ROWS=0 (docs/speculative.md:
 * verifying 4 drafts 1.11-1.19x a decode step on an H100 against
 * 1.22-1.36x as a prefill chunk); *batch is checked already. Each row's s_new is the
 * chunk's first position: attention must not read keys from there on
 * before the kernel that appends them has finished (cuda_attn_decode.cuh,
 * the early first chunk under PDL). */
static bool verify_as_rows(nc_cuda *cu, const nc_batch *batch, nc_batch *rows, bool *pairs) {
    *pairs = false;
    if (!cu->env.cuda_verify_rows) return false;
    int n = 0;
    bool any = false;
    for (int s = 0; s < batch->n_seqs; s++) {
        const nc_seq_chunk *c = &batch->seqs[s];
        bool verify = c->logits == NC_LOGITS_ALL && c->n_tokens <= NC_CUDA_VERIFY_MAX_ROWS;
        any |= verify;
        n += verify ? c->n_tokens : 1;
    }
    if (!any || n > cu->max_seqs) return false;
    nc_seq_chunk *out = cu->verify_rows;
    for (int s = 0, r = 0; s < batch->n_seqs; s++) {
        const nc_seq_chunk *c = &batch->seqs[s];
        if (c->logits != NC_LOGITS_ALL || c->n_tokens > NC_CUDA_VERIFY_MAX_ROWS) {
            cu->verify_new[r] = c->pos;
            cu->verify_pair[r] = -1;
            out[r++] = *c;
            continue;
        }
        bool paired = pair_rows(cu, c->n_tokens, c->pos);
        *pairs |= paired;
        for (int i = 0; i < c->n_tokens; i++) {
            cu->verify_new[r] = c->pos; /* rows i > 0 read keys the rows before them write in this forward */
            cu->verify_pair[r] = paired ? i : -1;
            out[r++] = (nc_seq_chunk){c->tokens + i, 1, c->pos + i, i ? c->tokens[i - 1] : c->prev_token,
                                      c->block_table, NC_LOGITS_LAST};
        }
    }
    *rows = (nc_batch){out, n};
    return true;
}

int nc_cuda_batch_pack(nc_cuda *cu, const nc_batch *batch, nc_cuda_batch *bs) {
    int64_t n_bt = 0;
    nc_batch rows;
    const int32_t *first_new = NULL;
    if (check_batch(cu, batch, bs, &n_bt)) return -1;
    bool pairs;
    bs->dec_group = 1;
    if (verify_as_rows(cu, batch, &rows, &pairs)) {
        batch = &rows;
        first_new = cu->verify_new;
        if (check_batch(cu, batch, bs, &n_bt)) return -1;
        bs->dec_group = pairs ? 2 : 1;
    }
    if (plan_layout(cu, bs, n_bt) || fill_meta(cu, batch, first_new, bs->dec_group)) return -1;
    NC_CU_TRY(cudaMemcpyAsync(cu->meta_d, cu->meta_h, (size_t)cu->ml.used * 4, cudaMemcpyHostToDevice, cu->stream));
    return 0;
}

/* ==== sampling rows ==== */

int nc_cuda_sampling_pack(nc_cuda *cu, const nc_batch *batch, const nc_device_sampling *rows, int R) {
    int *chunk_of = cu->sample_chunk, *pos_of = cu->sample_pos, r = 0;
    for (int s = 0; s < batch->n_seqs; s++) {
        const nc_seq_chunk *c = &batch->seqs[s];
        if (c->logits == NC_LOGITS_LAST) chunk_of[r] = s, pos_of[r++] = -1;
        if (c->logits == NC_LOGITS_ALL)
            for (int i = 0; i < c->n_tokens; i++) chunk_of[r] = s, pos_of[r++] = i;
    }
    NC_ASSERT(r == R);
    for (r = 0; r < R; r++) {
        const nc_device_sampling *src = &rows[chunk_of[r]];
        nc_cuda_samp *d = &cu->samp_h[r];
        d->temperature = src->temperature;
        d->top_k = src->top_k;
        d->top_p = src->top_p;
        d->min_p = src->min_p;
        d->rng[0] = src->rng_state[0];
        d->rng[1] = src->rng_state[1];
        d->want_logprob = src->want_logprob;
        d->skip = NC_MAX(pos_of[r], 0);
    }
    NC_CU_TRY(cudaMemcpyAsync(cu->samp_d, cu->samp_h, R * sizeof(nc_cuda_samp), cudaMemcpyHostToDevice, cu->stream));
    return 0;
}

void nc_cuda_sampling_unpack(nc_cuda *cu, int R, nc_device_sampling *rows, int32_t *tokens_out) {
    for (int r = 0; r < R; r++) {
        int s = cu->sample_chunk[r], i = cu->sample_pos[r];
        if (i >= 0) { /* a position of a verified chunk: the generator stays as it came */
            rows[s].tokens[i] = cu->out_tok_h[r];
            if (rows[s].want_logprob) rows[s].logprobs[i] = cu->samp_h[r].logprob;
            continue;
        }
        tokens_out[s] = cu->out_tok_h[r];
        rows[s].rng_state[0] = cu->samp_h[r].rng[0];
        rows[s].rng_state[1] = cu->samp_h[r].rng[1];
        if (rows[s].want_logprob) rows[s].logprob = cu->samp_h[r].logprob;
    }
}

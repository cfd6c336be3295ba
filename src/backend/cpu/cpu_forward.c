/*
 * cpu_forward.c: nanochat's forward pass (docs/model.md: V1 forward, Later generations) on the
 * CPU in fp32, for a batch of sequence chunks at their own positions.
 *
 * Mirrors nanochat/gpt.py GPT.forward with a KV cache: all tokens of the
 * batch are stacked into one [T, C] activation matrix, so every weight
 * matrix is streamed from memory once per forward however many sequences
 * take part (batched decode is nearly free up to the compute limit). Per
 * layer:
 *   (V2+) x = resid_lambda * x + x0_lambda * x0
 *   h = rmsnorm(x); q, k, v = h W^T          one parallel job, rows split over threads
 *   (V3+) v += gate * value_embed[token]; rope(q, k); q, k = s * rmsnorm_D(q, k);
 *   k, v -> paged cache                       one parallel job over tokens
 *   attention over the cache (window)         one parallel job over (token, head)
 *   x += att W_o^T; h = rmsnorm(x); x += relu(h W_fc^T)^2 W_proj^T
 * then (V6) x -= backout_lambda * x_layer(L/2); logits = softcap(rmsnorm(x) W_lm^T)
 * for the positions that asked for them. Per-token work that is cheap
 * (embedding, norms, residual adds) stays on the calling thread.
 *
 * Nothing here allocates: every buffer was sized at init (cpu_backend.c).
 */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "../../model/quantize.h"
#include "../../util/common.h"
#include "../../util/numeric.h"
#include "cpu_backend.h"

/* ==== small per-row helpers ==== */

/* y = x / sqrt(mean(x^2) + eps); nanochat's F.rms_norm without a weight. y may be x. */
static void rmsnorm(const float *x, float *y, int64_t n, float eps) {
    float acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += x[i + j] * x[i + j];
    float ss = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (; i < n; i++) ss += x[i] * x[i];
    float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (i = 0; i < n; i++) y[i] = x[i] * r;
}

/* out[0..n) = row `row` of an embedding table (bf16, f16 or f32), columns from `col`. */
static void embedding_row(const nc_tensor *t, int64_t row, int64_t col, int64_t n, float *out) {
    int64_t base = row * t->shape[1] + col;
    switch (t->dtype) {
    case NC_DTYPE_BF16: {
        const uint16_t *p = (const uint16_t *)t->data + base;
        for (int64_t i = 0; i < n; i++) out[i] = nc_bf16_to_f32(p[i]);
        break;
    }
    case NC_DTYPE_F16: {
        const uint16_t *p = (const uint16_t *)t->data + base;
        for (int64_t i = 0; i < n; i++) out[i] = nc_f16_to_f32(p[i]);
        break;
    }
    default:
        memcpy(out, (const float *)t->data + base, (size_t)n * sizeof(float));
    }
}

static inline float sigmoidf(float z) { return 1.0f / (1.0f + expf(-z)); }

/* The half-split RoPE of nanochat (rotates by -theta, docs/model.md, RoPE), one head. */
static void rope_head(float *x, const float *cs, const float *sn, int half) {
    for (int j = 0; j < half; j++) {
        float x1 = x[j], x2 = x[j + half];
        x[j] = x1 * cs[j] + x2 * sn[j];
        x[j + half] = x1 * (-sn[j]) + x2 * cs[j];
    }
}

/* ==== validation ==== */

static int check_batch(nc_backend *b, const nc_batch *batch, float *logits, int64_t *T_out,
                       int64_t *n_logits_out) {
    const cpu_state *st = cpu_state_of(b);
    const nc_model_config *c = &st->cfg;
    if (!batch || !batch->seqs || batch->n_seqs < 1)
        return nc_fail("forward: empty batch");
    if (batch->n_seqs > b->max_seqs)
        return nc_fail("forward: %d sequences in one batch; this backend was set up for at most %d",
                       batch->n_seqs, b->max_seqs);
    int64_t T = 0, n_logits = 0;
    for (int s = 0; s < batch->n_seqs; s++) {
        const nc_seq_chunk *q = &batch->seqs[s];
        if (q->n_tokens < 1 || !q->tokens) return nc_fail("forward: sequence %d has no tokens", s);
        if (q->pos < 0) return nc_fail("forward: sequence %d starts at negative position %d", s, q->pos);
        int64_t end = (int64_t)q->pos + q->n_tokens;
        if (end > st->rope_len)
            return nc_fail("forward: sequence %d reaches position %lld; this model supports at most %lld "
                           "positions (10 x sequence_len, as nanochat)",
                           s, (long long)end, (long long)st->rope_len);
        if (q->logits != NC_LOGITS_NONE && q->logits != NC_LOGITS_LAST && q->logits != NC_LOGITS_ALL)
            return nc_fail("forward: sequence %d has an invalid logits mode %d", s, (int)q->logits);
        for (int t = 0; t < q->n_tokens; t++)
            if (q->tokens[t] < 0 || q->tokens[t] >= c->vocab_size)
                return nc_fail("forward: sequence %d: token id %d at position %lld is outside the vocabulary "
                               "[0, %d)", s, q->tokens[t], (long long)q->pos + t, c->vocab_size);
        if (c->has_smear && q->pos > 0 && (q->prev_token < 0 || q->prev_token >= c->vocab_size))
            return nc_fail("forward: sequence %d continues at position %d but prev_token %d is not a valid id "
                           "(the smear of this model needs it)", s, q->pos, q->prev_token);
        if (!q->block_table) return nc_fail("forward: sequence %d has no block table", s);
        /* blocks that attention can read: from the oldest key in the widest window to the end */
        int64_t first = st->max_window >= q->pos ? 0 : (int64_t)q->pos - st->max_window;
        for (int64_t blk = first / NC_KV_BLOCK_TOKENS; blk <= (end - 1) / NC_KV_BLOCK_TOKENS; blk++) {
            int32_t id = q->block_table[blk];
            if (id < 0 || id >= b->n_kv_blocks)
                return nc_fail("forward: sequence %d: block table entry %lld (positions %lld..%lld) is %d, "
                               "outside the KV pool [0, %d)", s, (long long)blk,
                               (long long)blk * NC_KV_BLOCK_TOKENS, (long long)blk * NC_KV_BLOCK_TOKENS + 63,
                               id, b->n_kv_blocks);
        }
        T += q->n_tokens;
        n_logits += q->logits == NC_LOGITS_ALL ? q->n_tokens : q->logits == NC_LOGITS_LAST ? 1 : 0;
    }
    if (T > b->max_batch_tokens)
        return nc_fail("forward: %lld tokens in one batch; this backend was set up for at most %d",
                       (long long)T, b->max_batch_tokens);
    if (n_logits > 0 && !logits) return nc_fail("forward: logits requested but no output buffer given");
    *T_out = T;
    *n_logits_out = n_logits;
    return 0;
}

/* ==== parallel matmul ==== */

typedef enum {
    EPI_NONE,    /* y = x W^T */
    EPI_RELU2,   /* y = relu(x W^T)^2 */
    EPI_ADD,     /* y = x W^T, then resid += y */
    EPI_SOFTCAP, /* y = cap * tanh(x W^T / cap) */
} mm_epilogue;

typedef struct {
    const cpu_matrix *w;
    int64_t n_rows; /* rows of W to compute (lm_head: V of Vp) */
    float *y;       /* [T, ldy] */
    int64_t ldy;
} mm_segment;

typedef struct {
    const cpu_kernels *kern;
    const float *x; /* [T, ldx] */
    const cpu_xq8 *xq; /* x in q8 for int8 weights on the VNNI kernels, else NULL */
    int64_t ldx, T;
    mm_segment seg[3];
    int n_seg;
    mm_epilogue epi;
    float *resid;   /* EPI_ADD: [T, ldy of seg 0] */
    float cap;      /* EPI_SOFTCAP */
    float *scratch; /* per thread, scratch_floats each */
    int64_t scratch_floats;
} mm_job;

static void epilogue(const mm_job *j, const mm_segment *s, int64_t r0, int64_t r1) {
    for (int64_t t = 0; t < j->T; t++) {
        float *y = s->y + t * s->ldy;
        switch (j->epi) {
        case EPI_RELU2:
            for (int64_t r = r0; r < r1; r++) {
                float v = y[r] > 0 ? y[r] : 0;
                y[r] = v * v;
            }
            break;
        case EPI_ADD: {
            float *x = j->resid + t * s->ldy;
            for (int64_t r = r0; r < r1; r++) x[r] += y[r];
            break;
        }
        case EPI_SOFTCAP:
            for (int64_t r = r0; r < r1; r++) y[r] = j->cap * tanhf(y[r] / j->cap);
            break;
        case EPI_NONE:
            break;
        }
    }
}

static void mm_worker(void *ctx, int task, int n_tasks, int thread) {
    const mm_job *j = ctx;
    float *scratch = j->scratch + (int64_t)thread * j->scratch_floats;
    int64_t total = 0;
    for (int i = 0; i < j->n_seg; i++) total += j->seg[i].n_rows;
    long lo, hi;
    nc_split_range((long)total, n_tasks, task, 16, &lo, &hi);
    int64_t off = 0;
    for (int i = 0; i < j->n_seg; i++) {
        const mm_segment *s = &j->seg[i];
        int64_t a = NC_MAX((int64_t)lo, off) - off, b = NC_MIN((int64_t)hi, off + s->n_rows) - off;
        if (a < b) {
            cpu_matmul(j->kern, j->x, j->ldx, j->xq, j->T, s->w, a, b, s->y, s->ldy, scratch);
            if (j->epi != EPI_NONE) epilogue(j, s, a, b);
        }
        off += s->n_rows;
    }
}

typedef struct {
    const mm_job *mm;
    cpu_xq8 xq;
    int64_t K;
} q8_job;

static void q8_worker(void *ctx, int task, int n_tasks, int thread) {
    q8_job *j = ctx;
    long lo, hi;
    nc_split_range((long)j->mm->T, n_tasks, task, 1, &lo, &hi);
    cpu_quantize_x_q8(j->mm->x + lo * j->mm->ldx, j->mm->ldx, hi - lo, j->K, (int8_t *)j->xq.q + lo * j->xq.ldq,
                      j->xq.ldq, (float *)j->xq.d + lo * j->xq.ldd, j->xq.ldd);
}

/* Runs a job over its segments' rows on the pool; when its weights are
 * int8 and the kernels take q8 activations, x is quantised first, once for
 * all rows (on the pool when there are several tokens). */
static void run_mm_job(cpu_state *st, mm_job *j) {
    q8_job q;
    if (st->q8 && j->seg[0].w->dtype == NC_DTYPE_I8) {
        q.mm = j;
        q.K = j->seg[0].w->cols;
        q.xq = (cpu_xq8){st->xq, st->xd, q.K, (q.K + CPU_Q8_BLOCK - 1) / CPU_Q8_BLOCK};
        if (j->T == 1) q8_worker(&q, 0, 1, 0);
        else nc_threadpool_run(st->pool, q8_worker, &q, (int)NC_MIN(j->T, st->n_tasks));
        j->xq = &q.xq;
    }
    nc_threadpool_run(st->pool, mm_worker, j, st->n_tasks);
}

static void matmul1(cpu_state *st, const float *x, int64_t ldx, int64_t T, const cpu_matrix *w,
                    int64_t n_rows, float *y, int64_t ldy, mm_epilogue epi, float *resid, float cap) {
    mm_job j = {.kern = st->kern, .x = x, .ldx = ldx, .T = T, .n_seg = 1, .epi = epi, .resid = resid, .cap = cap,
                .scratch = st->mm_scratch, .scratch_floats = st->mm_scratch_floats};
    j.seg[0] = (mm_segment){w, n_rows, y, ldy};
    run_mm_job(st, &j);
}

/* ==== q, k, v post-processing and attention ==== */

typedef struct {
    cpu_state *st;
    const nc_batch *batch;
    int layer;
    int64_t T;
} layer_job;

/* Per token: value embedding, RoPE, QK-norm and scale, K/V into the cache. */
static void qkv_worker(void *ctx, int task, int n_tasks, int thread) {
    const layer_job *j = ctx;
    cpu_state *st = j->st;
    const nc_model_config *c = &st->cfg;
    const cpu_layer *L = &st->layers[j->layer];
    int D = c->head_dim, half = D / 2, H = c->n_head, Hkv = c->n_kv_head;
    for (int64_t i = task; i < j->T; i += n_tasks) {
        float *q = st->q + i * (int64_t)H * D, *k = st->k + i * (int64_t)Hkv * D, *v = st->v + i * (int64_t)Hkv * D;
        int32_t pos = st->tok_pos[i];
        if (L->value_embed) {
            const float *h = st->h + i * (int64_t)c->n_embd;
            int ch = c->ve_gate_channels;
            float *ve = st->att + i * (int64_t)H * D; /* free until attention writes it */
            embedding_row(L->value_embed, st->tok_id[i], 0, (int64_t)Hkv * D, ve);
            for (int hk = 0; hk < Hkv; hk++) {
                float z = 0;
                for (int e = 0; e < ch; e++) z += h[e] * L->ve_gate[hk * ch + e];
                float g = c->ve_gate_scale * sigmoidf(z);
                for (int d = 0; d < D; d++) v[hk * D + d] += g * ve[hk * D + d];
            }
        }
        const float *cs = st->rope_cos + (int64_t)pos * half, *sn = st->rope_sin + (int64_t)pos * half;
        for (int h = 0; h < H + Hkv; h++) {
            float *x = h < H ? q + h * D : k + (h - H) * D;
            rope_head(x, cs, sn, half);
            rmsnorm(x, x, D, c->norm_eps);
            if (c->qk_scale != 1.0f)
                for (int d = 0; d < D; d++) x[d] *= c->qk_scale;
        }
        const int32_t *table = j->batch->seqs[st->tok_seq[i]].block_table;
        int32_t block = table[pos / NC_KV_BLOCK_TOKENS];
        int slot = pos % NC_KV_BLOCK_TOKENS;
        for (int hk = 0; hk < Hkv; hk++)
            for (int kv = 0; kv < 2; kv++) {
                const float *src = (kv ? v : k) + hk * D;
                if (st->kv) {
                    memcpy(cpu_kv_tile(st, block, j->layer, kv, hk) + slot * D, src, (size_t)D * sizeof(float));
                } else {
                    uint8_t *tile = cpu_kv8_tile(st, block, j->layer, kv, hk);
                    cpu_kv8_scales(st, tile)[slot] = nc_quantize_row_fp8(src, D, tile + (size_t)slot * D);
                }
            }
    }
}

/* The keys (kv = 0) or values (kv = 1) of kv head `head` at slots
 * [slot, slot + n) of a block as [n, D] fp32 rows: in place for the fp32
 * cache (*scales NULL); for the fp8 one dequantised into this thread's
 * scratch tile, unscaled, with *scales their per-row scales. */
static inline const float *kv_rows(const cpu_state *st, int32_t block, int layer, int kv, int head, int64_t slot,
                                   int64_t n, int thread, const float **scales) {
    int64_t D = st->cfg.head_dim;
    if (st->kv) {
        *scales = NULL;
        return cpu_kv_tile(st, block, layer, kv, head) + slot * D;
    }
    uint8_t *tile = cpu_kv8_tile(st, block, layer, kv, head);
    const uint8_t *q = tile + slot * D;
    const float *lut = cpu_f8_table();
    float *rows = st->kv_tile + (int64_t)thread * NC_KV_BLOCK_TOKENS * (D + 1);
    for (int64_t i = 0; i < n * D; i++) rows[i] = lut[q[i]];
    *scales = cpu_kv8_scales(st, tile) + slot;
    return rows;
}

/* Per (token, query head): softmax(q k^T / sqrt(D)) v over the keys in its
 * window, in key order, whatever else is in the batch (batch invariance).
 * With the fp8 cache a key's score and a value's weight are multiplied by
 * its scale. */
static void attention_worker(void *ctx, int task, int n_tasks, int thread) {
    const layer_job *j = ctx;
    cpu_state *st = j->st;
    const nc_model_config *c = &st->cfg;
    const cpu_kernels *kern = st->kern;
    int D = c->head_dim, H = c->n_head, group = c->n_head / c->n_kv_head;
    int64_t window = st->layers[j->layer].window;
    float scale = (float)(1.0 / sqrt((double)D));
    float *p = st->scores + (int64_t)thread * st->rope_len;
    /* items head-major, a contiguous range per task: one head's keys and
     * values (a few hundred KB at most for a prompt) stay in L2 while its
     * queries pass; heads sharing a kv head (GQA) are neighbours */
    long lo, hi;
    nc_split_range((long)(j->T * H), n_tasks, task, 1, &lo, &hi);
    for (int64_t item = lo; item < hi; item++) {
        int64_t i = item % j->T;
        int h = (int)(item / j->T), hk = h / group;
        int64_t pos = st->tok_pos[i], first = window >= pos ? 0 : pos - window;
        const int32_t *table = j->batch->seqs[st->tok_seq[i]].block_table;
        const float *q = st->q + i * (int64_t)H * D + h * D;
        float *out = st->att + i * (int64_t)H * D + h * D;

        for (int64_t key = first; key <= pos;) {
            int64_t slot = key % NC_KV_BLOCK_TOKENS, n = NC_MIN(NC_KV_BLOCK_TOKENS - slot, pos + 1 - key);
            const float *ks, *kt = kv_rows(st, table[key / NC_KV_BLOCK_TOKENS], j->layer, 0, hk, slot, n, thread, &ks);
            kern->attn_scores(q, kt, n, D, scale, p + (key - first));
            if (ks)
                for (int64_t s = 0; s < n; s++) p[key - first + s] *= ks[s];
            key += n;
        }
        float max = -INFINITY, sum = 0;
        for (int64_t s = 0; s <= pos - first; s++) max = p[s] > max ? p[s] : max;
        for (int64_t s = 0; s <= pos - first; s++) {
            p[s] = expf(p[s] - max);
            sum += p[s];
        }
        memset(out, 0, (size_t)D * sizeof(float));
        for (int64_t key = first; key <= pos;) {
            int64_t slot = key % NC_KV_BLOCK_TOKENS, n = NC_MIN(NC_KV_BLOCK_TOKENS - slot, pos + 1 - key);
            const float *vs, *vt = kv_rows(st, table[key / NC_KV_BLOCK_TOKENS], j->layer, 1, hk, slot, n, thread, &vs);
            const float *pk = p + (key - first);
            if (vs) { /* the tile's weights times the values' scales, after its rows */
                float *pw = st->kv_tile + (int64_t)thread * NC_KV_BLOCK_TOKENS * (D + 1) + NC_KV_BLOCK_TOKENS * D;
                for (int64_t s = 0; s < n; s++) pw[s] = pk[s] * vs[s];
                pk = pw;
            }
            kern->attn_mix(pk, vt, n, D, out);
            key += n;
        }
        float inv = 1.0f / sum;
        for (int d = 0; d < D; d++) out[d] *= inv;
    }
}

/* ==== the forward pass ==== */

/* x[i] = rmsnorm(wte[token]), then (V6) the smear with the previous token's
 * pre-smear embedding: x[t] += lambda * sigmoid(e[t][:24] . w) * e[t-1]. */
static void embed_tokens(cpu_state *st, const nc_model *m, const nc_batch *batch) {
    const nc_model_config *c = &st->cfg;
    int64_t C = c->n_embd, i0 = 0;
    for (int s = 0; s < batch->n_seqs; s++) {
        const nc_seq_chunk *q = &batch->seqs[s];
        for (int t = 0; t < q->n_tokens; t++) {
            float *x = st->x + (i0 + t) * C;
            embedding_row(st->wte, q->tokens[t], 0, C, x);
            rmsnorm(x, x, C, c->norm_eps);
        }
        if (c->has_smear) {
            /* backwards, so e[t-1] is still the pre-smear embedding when x[t] needs it */
            for (int t = q->n_tokens - 1; t >= 0; t--) {
                float *x = st->x + (i0 + t) * C;
                const float *prev = NULL;
                if (t > 0) prev = x - C;
                else if (q->pos > 0) {
                    embedding_row(st->wte, q->prev_token, 0, C, st->prev_embed);
                    rmsnorm(st->prev_embed, st->prev_embed, C, c->norm_eps);
                    prev = st->prev_embed;
                }
                if (!prev) continue;
                float z = 0;
                for (int e = 0; e < c->smear_channels; e++) z += x[e] * st->smear_gate[e];
                float g = m->smear_lambda * sigmoidf(z);
                for (int64_t e = 0; e < C; e++) x[e] += g * prev[e];
            }
        }
        i0 += q->n_tokens;
    }
}

/* Reports a product's input rows to the observer, if one is set. */
static void observe(const cpu_state *st, int layer, nc_product p, const float *x, int64_t rows, int64_t cols) {
    if (st->observer) st->observer(st->observer_ctx, layer, p, x, rows, cols, cols);
}

int cpu_forward(nc_backend *b, const nc_batch *batch, float *logits) {
    cpu_state *st = cpu_state_of(b);
    const nc_model_config *c = &st->cfg;
    const nc_model *m = b->model;
    int64_t T = 0, n_logits = 0;
    if (check_batch(b, batch, logits, &T, &n_logits)) return -1;

    int64_t C = c->n_embd, QD = (int64_t)c->n_head * c->head_dim, KD = (int64_t)c->n_kv_head * c->head_dim;
    int64_t i = 0, n_out = 0;
    for (int s = 0; s < batch->n_seqs; s++) {
        const nc_seq_chunk *q = &batch->seqs[s];
        for (int t = 0; t < q->n_tokens; t++, i++) {
            st->tok_seq[i] = s;
            st->tok_pos[i] = q->pos + t;
            st->tok_id[i] = q->tokens[t];
            if (q->logits == NC_LOGITS_ALL || (q->logits == NC_LOGITS_LAST && t == q->n_tokens - 1))
                st->out_rows[n_out++] = (int32_t)i;
        }
    }

    embed_tokens(st, m, batch);
    if (c->has_lambdas) memcpy(st->x0, st->x, (size_t)(T * C) * sizeof(float));

    for (int l = 0; l < c->n_layer; l++) {
        const cpu_layer *L = &st->layers[l];
        if (c->has_lambdas) {
            float rl = m->resid_lambdas[l], xl = m->x0_lambdas[l];
            for (int64_t e = 0; e < T * C; e++) st->x[e] = rl * st->x[e] + xl * st->x0[e];
        }
        for (int64_t t = 0; t < T; t++) rmsnorm(st->x + t * C, st->h + t * C, C, c->norm_eps);
        observe(st, l, NC_PRODUCT_QKV, st->h, T, C);

        mm_job qkv = {.kern = st->kern, .x = st->h, .ldx = C, .T = T, .n_seg = 3, .epi = EPI_NONE,
                      .scratch = st->mm_scratch, .scratch_floats = st->mm_scratch_floats};
        qkv.seg[0] = (mm_segment){&L->c_q, QD, st->q, QD};
        qkv.seg[1] = (mm_segment){&L->c_k, KD, st->k, KD};
        qkv.seg[2] = (mm_segment){&L->c_v, KD, st->v, KD};
        run_mm_job(st, &qkv);

        layer_job lj = {st, batch, l, T};
        nc_threadpool_run(st->pool, qkv_worker, &lj, (int)NC_MIN(T, st->n_tasks));
        nc_threadpool_run(st->pool, attention_worker, &lj, (int)NC_MIN(T * c->n_head, st->n_tasks));
        observe(st, l, NC_PRODUCT_ATTN_PROJ, st->att, T, QD);
        matmul1(st, st->att, QD, T, &L->attn_proj, C, st->tmp, C, EPI_ADD, st->x, 0);

        for (int64_t t = 0; t < T; t++) rmsnorm(st->x + t * C, st->h + t * C, C, c->norm_eps);
        observe(st, l, NC_PRODUCT_MLP_FC, st->h, T, C);
        matmul1(st, st->h, C, T, &L->mlp_fc, c->mlp_hidden, st->fc, c->mlp_hidden, EPI_RELU2, NULL, 0);
        observe(st, l, NC_PRODUCT_MLP_PROJ, st->fc, T, c->mlp_hidden);
        matmul1(st, st->fc, c->mlp_hidden, T, &L->mlp_proj, C, st->tmp, C, EPI_ADD, st->x, 0);

        if (c->has_smear && l == c->n_layer / 2) memcpy(st->x_backout, st->x, (size_t)(T * C) * sizeof(float));
    }
    if (n_out == 0) return 0;

    for (int64_t r = 0; r < n_out; r++) {
        float *x = st->x + (int64_t)st->out_rows[r] * C, *h = st->h + r * C;
        if (c->has_smear) {
            const float *xb = st->x_backout + (int64_t)st->out_rows[r] * C;
            for (int64_t e = 0; e < C; e++) h[e] = x[e] - m->backout_lambda * xb[e];
            rmsnorm(h, h, C, c->norm_eps);
        } else {
            rmsnorm(x, h, C, c->norm_eps);
        }
    }
    observe(st, -1, NC_PRODUCT_LM_HEAD, st->h, n_out, C);
    matmul1(st, st->h, C, n_out, &st->lm_head, c->vocab_size, logits, c->vocab_size, EPI_SOFTCAP, NULL,
            c->softcap);
    return 0;
}

/*
 * test_cuda_det.c: --deterministic on the CUDA backend (docs/performance.md,
 * Batch invariance). Skips (exit 77) when no usable GPU is present.
 *
 * One target sequence (a 2100-token prompt, then decode steps, fixed token
 * ids) is run alone once, prompt in one forward, for reference logits of
 * every position. Then, each time into fresh KV blocks, and every logits
 * row compared with the reference bit for bit:
 *   - the prompt again in one chunk (the same run repeated);
 *   - in chunks of 64 and of 2048 (+ the rest), and token by token (decode
 *     rows: CUDA graphs from the second step);
 *   - in chunks of 64 inside batches of other sequences at random
 *     positions with random chunk lengths (requests arriving mid-flight,
 *     others decoding), the target at a random slot;
 *   - from a cached prefix (copy_kv_block of the first 512 positions, as the
 *     prefix cache and forks do) with the rest prefilled from there;
 * and the decode steps in batches of 1, 2, 3, 8, 31, 64, 100 and 128 rows
 * (random others at random positions). Decode steps read every earlier
 * key and value of every layer, so equal logits after a prefill also mean
 * equal K/V. Device sampling (temperature 1, top-p 0.9, no top-k: the
 * whole-row path) must give the target the same token and generator state
 * alone and inside a batch of 64.
 *
 * The reference itself is checked against the CPU backend (exact fp32)
 * with test_cuda_backend's tolerance (the deterministic kernels compute
 * the same bf16 math as the others), and the comparison's power is shown
 * by a run without --deterministic, where chunks of 64 must differ from
 * the one-chunk prefill somewhere (other kernels, other reduction orders).
 *
 * Shapes: d34 width with a small vocabulary (K = 2176, 17 heads, G = 1)
 * and a GQA model (G = 4); with bf16 weights, and int8 weights with the
 * fp8 cache (their kernels are batch-invariant the same way).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "check.h"
#include "engine/sampler.h"
#include "model/loader.h"
#include "model/model.h"
#include "model/quantize.h"
#include "util/common.h"

#define PROMPT 2100
#define STEPS 6
#define TOTAL (PROMPT + STEPS)
#define SEQ_BLOCKS ((TOTAL + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS)
#define OTHER_BLOCKS 8 /* others live in positions [0, 512) */
#define MAX_SEQS 128
#define MAX_TOKENS 2176 /* > PROMPT: the reference prefill is one forward */
#define LOGIT_TOL 3e-2  /* as test_cuda_backend: max|gpu - cpu| <= LOGIT_TOL * max|cpu| per row */
#define POOL (8 * SEQ_BLOCKS + MAX_SEQS * OTHER_BLOCKS)

typedef struct {
    nc_backend *be;
    int V;
    int32_t tok[TOTAL];        /* the target's ids */
    float *ref;                /* [TOTAL, V] reference logits */
    float *lg;                 /* [MAX_TOKENS, V] */
    int32_t next_block;        /* target tables are handed out from block 0 up */
    int32_t other_bt[MAX_SEQS][OTHER_BLOCKS];
    int32_t other_pos[MAX_SEQS]; /* positions filled so far */
    int32_t other_tok[MAX_SEQS][OTHER_BLOCKS * NC_KV_BLOCK_TOKENS];
    const char *label;
    bool strict;               /* false: differences are counted, not failures */
    int differ;                /* positions whose logits differed */
} det_ctx;

static uint64_t rng_state[2];
static int rnd(int n) { return (int)(nc_rng_next(rng_state) % (uint64_t)n); }

static int32_t *new_table(det_ctx *c) {
    static int32_t tables[8][SEQ_BLOCKS];
    int k = c->next_block / SEQ_BLOCKS;
    NC_ASSERT(k < 8);
    for (int b = 0; b < SEQ_BLOCKS; b++) tables[k][b] = c->next_block++;
    return tables[k];
}

/* The target's chunk of n tokens at pos. */
static nc_seq_chunk target_chunk(const det_ctx *c, const int32_t *bt, int pos, int n, nc_logits_mode lm) {
    nc_seq_chunk s = {c->tok + pos, n, pos, pos ? c->tok[pos - 1] : -1, bt, lm};
    return s;
}

static int run(det_ctx *c, nc_seq_chunk *seqs, int n) {
    nc_batch b = {seqs, n};
    int rc = c->be->ops->forward(c->be, &b, c->lg);
    CHECK(rc == 0, "%s: forward: %s", c->label, nc_error());
    return rc;
}

/* Logits row `row` of the last forward against the reference of `pos`. */
static void same_bits(det_ctx *c, int row, int pos, const char *what) {
    size_t V = (size_t)c->V;
    bool same = memcmp(c->lg + row * V, c->ref + pos * V, V * sizeof(float)) == 0;
    c->differ += !same;
    if (c->strict)
        CHECK(same, "%s: %s: logits of position %d differ from the target run alone", c->label, what, pos);
}

/* Logits row of the target inside a batch: rows are the chunks asking for
 * logits, in order; ALL chunks give one row per token. */
static int logits_row_of(const nc_seq_chunk *seqs, int n, int target) {
    int r = 0;
    for (int s = 0; s < target; s++)
        r += seqs[s].logits == NC_LOGITS_ALL ? seqs[s].n_tokens : seqs[s].logits == NC_LOGITS_LAST;
    return r;
}

/* The prompt into table bt from position `from`, `chunk` tokens a forward,
 * every position's logits compared (or recorded into ref when record). */
static void prompt_alone(det_ctx *c, const int32_t *bt, int from, int chunk, bool record, const char *what) {
    for (int pos = from; pos < PROMPT; pos += chunk) {
        int n = NC_MIN(chunk, PROMPT - pos);
        nc_seq_chunk s = target_chunk(c, bt, pos, n, n == 1 ? NC_LOGITS_LAST : NC_LOGITS_ALL);
        if (run(c, &s, 1)) return;
        for (int i = 0; i < n; i++) {
            if (record) memcpy(c->ref + (size_t)(pos + i) * c->V, c->lg + (size_t)i * c->V, (size_t)c->V * 4);
            else same_bits(c, i, pos + i, what);
        }
    }
}

/* One other sequence's next chunk: a new request (from position 0) when
 * it is full or at random, else a decode row or a prefill chunk of up to
 * max_n tokens. */
static nc_seq_chunk other_chunk(det_ctx *c, int o, int max_n, bool decode) {
    int cap = OTHER_BLOCKS * NC_KV_BLOCK_TOKENS;
    if (c->other_pos[o] >= cap - 1 || (!decode && rnd(8) == 0) || c->other_pos[o] == 0) c->other_pos[o] = 0;
    int pos = c->other_pos[o];
    int n = decode && pos > 0 ? 1 : 1 + rnd(NC_MIN(max_n, cap - pos));
    int32_t *t = c->other_tok[o];
    for (int i = 0; i < n; i++) t[pos + i] = rnd(c->V);
    nc_seq_chunk s = {t + pos, n, pos, pos ? t[pos - 1] : -1, c->other_bt[o], rnd(2) ? NC_LOGITS_LAST : NC_LOGITS_NONE};
    if (n == 1 && decode) s.logits = NC_LOGITS_LAST;
    c->other_pos[o] = pos + n;
    return s;
}

/* The prompt in chunks of 64 inside batches of random others (some
 * prefilling, some decoding, a random count each forward). */
static void prompt_in_batches(det_ctx *c, const int32_t *bt) {
    nc_seq_chunk seqs[MAX_SEQS];
    for (int pos = 0; pos < PROMPT; pos += 64) {
        int n = NC_MIN(64, PROMPT - pos);
        int k = 1 + rnd(MAX_SEQS - 1), target = rnd(k + 1), tokens = n, m = 0;
        for (int i = 0; i <= k && m < MAX_SEQS; i++) {
            if (i == target) {
                seqs[m++] = target_chunk(c, bt, pos, n, NC_LOGITS_ALL);
                continue;
            }
            int room = MAX_TOKENS - tokens - (k - i);
            if (room < 1) break;
            seqs[m] = other_chunk(c, i, NC_MIN(room, 150), rnd(3) != 0);
            tokens += seqs[m++].n_tokens;
        }
        int t = -1;
        for (int s = 0; s < m; s++)
            if (seqs[s].tokens == c->tok + pos) t = s;
        NC_ASSERT(t >= 0);
        if (run(c, seqs, m)) return;
        int r = logits_row_of(seqs, m, t);
        for (int i = 0; i < n; i++) same_bits(c, r + i, pos + i, "prompt in chunks of 64 among other requests");
    }
}

/* The decode steps (the prompt already in bt) in batches of `rows` rows:
 * the target at a random slot, the others decoding at random positions. */
static void decode_in_batches(det_ctx *c, const int32_t *bt, int rows) {
    nc_seq_chunk seqs[MAX_SEQS];
    char what[64];
    snprintf(what, sizeof what, "decode in a batch of %d", rows);
    for (int pos = PROMPT; pos < TOTAL; pos++) {
        int target = rnd(rows);
        for (int i = 0, o = 0; i < rows; i++)
            seqs[i] = i == target ? target_chunk(c, bt, pos, 1, NC_LOGITS_LAST) : other_chunk(c, o++, 1, true);
        if (run(c, seqs, rows)) return;
        same_bits(c, logits_row_of(seqs, rows, target), pos, what);
    }
}

/* The target's next token sampled on the device, alone and as row `slot`
 * of a batch of 64 decode rows: the same token and generator state. */
static void sampling_in_batches(det_ctx *c, const int32_t *bt) {
    if (!c->be->ops->forward_sample) return;
    nc_seq_chunk seqs[64];
    nc_device_sampling rows[64];
    int32_t out[64];
    for (int i = 0; i < 64; i++) {
        rows[i] = (nc_device_sampling){.temperature = 1.0f, .top_k = 0, .top_p = 0.9f, .min_p = 0.0f};
        nc_rng_seed(rows[i].rng_state, 1000 + (uint64_t)i);
    }
    uint64_t seed_state[2];
    nc_rng_seed(seed_state, 42);
    nc_device_sampling alone = rows[0];
    memcpy(alone.rng_state, seed_state, sizeof seed_state);
    seqs[0] = target_chunk(c, bt, PROMPT, 1, NC_LOGITS_LAST);
    nc_batch b1 = {seqs, 1};
    CHECK(c->be->ops->forward_sample(c->be, &b1, &alone, out) == 0, "%s: forward_sample: %s", c->label, nc_error());
    int32_t tok_alone = out[0];
    for (int trial = 0; trial < 4; trial++) {
        int slot = rnd(64);
        for (int i = 0, o = 0; i < 64; i++)
            seqs[i] = i == slot ? target_chunk(c, bt, PROMPT, 1, NC_LOGITS_LAST) : other_chunk(c, o++, 1, true);
        memcpy(rows[slot].rng_state, seed_state, sizeof seed_state);
        nc_batch b = {seqs, 64};
        CHECK(c->be->ops->forward_sample(c->be, &b, rows, out) == 0, "%s: forward_sample: %s", c->label, nc_error());
        CHECK(out[slot] == tok_alone && !memcmp(rows[slot].rng_state, alone.rng_state, sizeof alone.rng_state),
              "%s: sampled %d in a batch of 64 (slot %d), %d alone", c->label, out[slot], slot, tok_alone);
        nc_rng_seed(rows[slot].rng_state, 1000 + (uint64_t)slot);
    }
}

/* The reference prompt's logits against the CPU backend's. */
static void against_cpu(det_ctx *c, const nc_model *m, const nc_backend_params *p) {
    nc_backend_params cp = *p;
    cp.kv_cache = p->kv_cache; /* the CPU's fp8 cache rounds as the GPU's */
    cp.n_kv_blocks = SEQ_BLOCKS;
    cp.deterministic = false;
    nc_backend *cpu = nc_backend_create("cpu", m, &cp);
    CHECK(cpu != NULL, "cpu backend: %s", nc_error());
    if (!cpu) return;
    static int32_t bt[SEQ_BLOCKS];
    for (int b = 0; b < SEQ_BLOCKS; b++) bt[b] = b;
    nc_seq_chunk s = target_chunk(c, bt, 0, PROMPT, NC_LOGITS_ALL);
    nc_batch b = {&s, 1};
    CHECK(cpu->ops->forward(cpu, &b, c->lg) == 0, "cpu forward: %s", nc_error());
    double worst = 0;
    for (int pos = 0; pos < PROMPT; pos++) {
        const float *g = c->ref + (size_t)pos * c->V, *r = c->lg + (size_t)pos * c->V;
        double scale = 0, err = 0;
        for (int v = 0; v < c->V; v++) {
            scale = fmax(scale, fabs(r[v]));
            err = fmax(err, fabs((double)g[v] - r[v]));
        }
        worst = fmax(worst, err / fmax(scale, 1e-6));
    }
    CHECK(worst <= LOGIT_TOL, "%s: deterministic logits vs the CPU backend: relative error %.3g", c->label, worst);
    printf("%s: deterministic vs CPU backend: worst relative logit error %.3g\n", c->label, worst);
    nc_backend_free(cpu);
}

/* Without --deterministic, chunks of 64 against one forward: some
 * position must differ, or the comparisons above could not see a
 * difference either. */
static void sensitivity(const char *spec) {
    nc_model *m = nc_model_random(spec, 11);
    NC_ASSERT(m);
    nc_backend_params p = {.n_kv_blocks = 2 * SEQ_BLOCKS, .max_batch_tokens = MAX_TOKENS, .max_seqs = MAX_SEQS};
    det_ctx *c = nc_xcalloc(1, sizeof *c);
    c->label = "without --deterministic";
    c->be = nc_backend_create("cuda", m, &p);
    CHECK(c->be != NULL, "cuda backend: %s", nc_error());
    if (c->be) {
        c->V = m->cfg.vocab_size;
        c->ref = nc_xmalloc((size_t)TOTAL * c->V * sizeof(float));
        c->lg = nc_xmalloc((size_t)MAX_TOKENS * c->V * sizeof(float));
        for (int i = 0; i < TOTAL; i++) c->tok[i] = (int32_t)((i * 7919 + 13) % c->V);
        prompt_alone(c, new_table(c), 0, PROMPT, true, "reference");
        prompt_alone(c, new_table(c), 0, 64, false, "chunks of 64");
        CHECK(c->differ > 0, "without --deterministic every position matched: the bitwise comparison sees nothing");
        printf("%s %s: %d of %d positions differ between one forward and chunks of 64 (some expected)\n", spec,
               c->label, c->differ, PROMPT);
        nc_backend_free(c->be);
        free(c->ref);
        free(c->lg);
    }
    free(c);
    nc_model_free(m);
}

static void check_model(const char *spec, nc_weight_format wf, nc_kv_cache_format kv) {
    nc_model *m = nc_model_random(spec, 11);
    NC_ASSERT(m);
    CHECK(nc_model_quantize(m, wf, true, 0) == 0, "quantize: %s", nc_error());
    nc_backend_params p = {.n_kv_blocks = POOL, .max_batch_tokens = MAX_TOKENS, .max_seqs = MAX_SEQS, .kv_cache = kv,
                           .deterministic = true};
    det_ctx *c = nc_xcalloc(1, sizeof *c);
    char label[128];
    snprintf(label, sizeof label, "%s %s weights%s", spec, nc_weight_format_name(wf),
             kv == NC_KV_CACHE_FP8 ? ", fp8 KV" : "");
    c->label = label;
    c->strict = true;
    c->be = nc_backend_create("cuda", m, &p);
    CHECK(c->be != NULL, "%s: cuda backend: %s", label, nc_error());
    if (!c->be) {
        free(c);
        nc_model_free(m);
        return;
    }
    CHECK(c->be->deterministic && strstr(nc_backend_describe(c->be), "deterministic"),
          "%s: the backend does not say it is deterministic: %s", label, nc_backend_describe(c->be));
    c->V = m->cfg.vocab_size;
    c->ref = nc_xmalloc((size_t)TOTAL * c->V * sizeof(float));
    c->lg = nc_xmalloc((size_t)MAX_TOKENS * c->V * sizeof(float));
    for (int i = 0; i < TOTAL; i++) c->tok[i] = (int32_t)((i * 7919 + 13) % c->V);
    for (int o = 0; o < MAX_SEQS; o++)
        for (int b = 0; b < OTHER_BLOCKS; b++) c->other_bt[o][b] = 8 * SEQ_BLOCKS + o * OTHER_BLOCKS + b;
    nc_rng_seed(rng_state, 7);
    /* reference: the prompt in one forward, the decode steps alone */
    const int32_t *ref_bt = new_table(c);
    prompt_alone(c, ref_bt, 0, PROMPT, true, "reference");
    for (int pos = PROMPT; pos < TOTAL; pos++) {
        nc_seq_chunk s = target_chunk(c, ref_bt, pos, 1, NC_LOGITS_LAST);
        if (run(c, &s, 1)) break;
        memcpy(c->ref + (size_t)pos * c->V, c->lg, (size_t)c->V * 4);
    }
    against_cpu(c, m, &p);
    /* others get real context first (batches of prefill chunks) */
    for (int o = 0; o < MAX_SEQS; o += 8) {
        nc_seq_chunk seqs[8];
        for (int i = 0; i < 8; i++) seqs[i] = other_chunk(c, o + i, 200, false);
        run(c, seqs, 8);
    }
    prompt_alone(c, new_table(c), 0, PROMPT, false, "the prompt in one chunk again");
    prompt_alone(c, new_table(c), 0, 64, false, "the prompt in chunks of 64");
    prompt_alone(c, new_table(c), 0, 2048, false, "the prompt in chunks of 2048");
    int32_t *one_by_one = new_table(c);
    prompt_alone(c, one_by_one, 0, 1, false, "the prompt token by token");
    decode_in_batches(c, one_by_one, 1);
    int32_t *batched = new_table(c);
    prompt_in_batches(c, batched);
    static const int sizes[] = {1, 2, 3, 8, 31, 64, 100, 128};
    for (size_t i = 0; i < NC_ARRAY_LEN(sizes); i++) decode_in_batches(c, batched, sizes[i]);
    /* a cached prefix: the first 8 blocks copied, the rest prefilled */
    int32_t *forked = new_table(c);
    for (int b = 0; b < 8; b++)
        CHECK(c->be->ops->copy_kv_block(c->be, batched[b], forked[b], NC_KV_BLOCK_TOKENS) == 0, "copy: %s",
              nc_error());
    prompt_alone(c, forked, 8 * NC_KV_BLOCK_TOKENS, PROMPT, false, "after a cached prefix of 512");
    decode_in_batches(c, forked, 17);
    sampling_in_batches(c, batched);
    printf("%s: checked\n", label);
    nc_backend_free(c->be);
    free(c->ref);
    free(c->lg);
    free(c);
    nc_model_free(m);
}

int main(void) {
    if (!nc_backend_cuda_available()) {
        printf("skipped: no usable CUDA device (or CUDA not compiled in)\n");
        return CHECK_SKIP;
    }
    /* the CPU reference's weight-only kernels (the VNNI ones round
     * activations to int8) */
    if (nc_cpu_backend_force_isa("avx2")) nc_cpu_backend_force_isa("scalar");
    sensitivity("2,1024,8,2,4000");
    check_model("2,2176,17,17,8192", NC_WEIGHTS_FLOAT, NC_KV_CACHE_BF16);
    check_model("2,1024,8,2,4000", NC_WEIGHTS_FLOAT, NC_KV_CACHE_BF16);
    check_model("2,1024,8,2,4000", NC_WEIGHTS_INT8, NC_KV_CACHE_FP8);
    nc_cpu_backend_force_isa("auto");
    return check_summary("test_cuda_det");
}

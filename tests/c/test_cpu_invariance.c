/*
 * test_cpu_invariance.c: batch invariance of the CPU backend (issue 18;
 * docs/performance.md, CPU backend): a sequence's fp32 logits must be the
 * same bits however it is computed.
 *
 * Reference: the sequence's logits at every position from ONE forward of
 * its whole prompt, alone, on one thread. Every other way must match it
 * bit for bit (memcmp of each row):
 *   - token by token (decode), alone;
 *   - chunks of random sizes, each forward also carrying 1..15 other
 *     sequences (random tokens, random chunk sizes and logits modes, at
 *     their own positions) with the target at a random place in the batch;
 *   - a prefix computed in one block table, forked with copy_kv_block into
 *     another (the prefix cache's path), the rest computed there;
 * each on 1, 2 and 3 threads, for every kernel variant this CPU runs
 * (NC_CPU_KERNELS=name: that one) and four models: the V6 fixture (fp32
 * weights, sliding windows, smear, value embeddings; 260 positions so the
 * windows slide), a random V1 model with bf16 weights and GQA, and that
 * model quantised (docs/quantization.md) to int8 with the fp8 KV cache
 * (the VNNI variants: q8 activations) and to fp8. A model whose kernels
 * are the very functions an earlier variant ran on it (the VNNI variants
 * share avx2's and avx512's float kernels) is not run again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "check.h"
#include "cpu_variant.h"
#include "forward_fixture.h"
#include "model/loader.h"
#include "model/quantize.h"
#include "util/common.h"

enum { N_POS = 260, POOL = 160, MAX_TOKENS = 512, MAX_SEQS = 16, COMPANIONS = 15, COMP_LEN = 150 };

static uint64_t rng = 12345;
static uint32_t rnd(uint32_t n) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng >> 33) % n;
}

typedef struct {
    int32_t tokens[COMP_LEN];
    int32_t table[(COMP_LEN + 63) / 64];
    int pos;
} companion;

typedef struct {
    nc_backend *be;
    int V;
    float *batch_logits; /* [MAX_TOKENS, V] */
} ctx;

/* Runs target positions [p0, p1) of seq (table) in chunks (max_chunk; 0 =
 * all at once), with n_comp companions, into out[pos * V]. */
static void run(ctx *c, const int32_t *seq, const int32_t *table, int p0, int p1, int max_chunk, int n_comp,
                float *out) {
    static companion comp[COMPANIONS];
    for (int i = 0; i < n_comp; i++) { /* companions live in blocks after the target's */
        comp[i].pos = 0;
        for (int t = 0; t < COMP_LEN; t++) comp[i].tokens[t] = (int32_t)rnd((uint32_t)c->V);
        for (int b = 0; b < (COMP_LEN + 63) / 64; b++) comp[i].table[b] = 16 + i * ((COMP_LEN + 63) / 64) + b;
    }
    for (int pos = p0; pos < p1;) {
        int n = max_chunk ? 1 + (int)rnd((uint32_t)max_chunk) : p1 - pos;
        if (n > p1 - pos) n = p1 - pos;
        nc_seq_chunk chunks[MAX_SEQS];
        int where = n_comp ? (int)rnd((uint32_t)n_comp + 1) : 0, n_chunks = 0, rows_before = 0;
        int budget = MAX_TOKENS - n;
        for (int i = 0; i <= n_comp; i++) {
            if (i == where) {
                chunks[n_chunks++] = (nc_seq_chunk){seq + pos, n, pos, pos ? seq[pos - 1] : -1, table, NC_LOGITS_ALL};
                continue;
            }
            companion *q = &comp[i < where ? i : i - 1];
            if (q->pos == COMP_LEN) q->pos = 0; /* a new sequence in the same blocks */
            int m = 1 + (int)rnd(q->pos ? 4 : 40);
            if (m > COMP_LEN - q->pos) m = COMP_LEN - q->pos;
            if (m > budget) continue;
            budget -= m;
            nc_logits_mode mode = (nc_logits_mode)rnd(3);
            chunks[n_chunks++] = (nc_seq_chunk){q->tokens + q->pos, m, q->pos, q->pos ? q->tokens[q->pos - 1] : -1,
                                                q->table, mode};
            if (i < where) rows_before += mode == NC_LOGITS_ALL ? m : mode == NC_LOGITS_LAST ? 1 : 0;
            q->pos += m;
        }
        nc_batch b = {chunks, n_chunks};
        CHECK(c->be->ops->forward(c->be, &b, c->batch_logits) == 0, "forward: %s", nc_error());
        memcpy(out + (size_t)pos * c->V, c->batch_logits + (size_t)rows_before * c->V, sizeof(float) * (size_t)n * c->V);
        pos += n;
    }
}

static void compare(const char *model, const char *isa, const char *how, int threads, const float *ref,
                    const float *got, int V) {
    int first_bad = -1;
    for (int p = 0; p < N_POS && first_bad < 0; p++)
        if (memcmp(ref + (size_t)p * V, got + (size_t)p * V, sizeof(float) * (size_t)V)) first_bad = p;
    CHECK(first_bad < 0, "%s %s, %d threads, %s: logits at position %d differ from the one-chunk reference", model,
          isa, threads, how, first_bad);
}

typedef struct {
    const char *name;
    const nc_model *m;
    nc_dtype weights; /* of its layer matrices and lm_head (bf16 and fp32 run the same kernels' pair) */
    nc_kv_cache_format kv;
} model_case;

/* Whether variants a and b run the same functions on model case mc. */
static bool same_kernels(const cpu_kernels *a, const cpu_kernels *b, const model_case *mc) {
    if (a->attn_scores != b->attn_scores || a->attn_mix != b->attn_mix) return false;
    switch (mc->weights) {
    case NC_DTYPE_I8: return a->matmul_i8_q8 == b->matmul_i8_q8 && (a->matmul_i8_q8 || a->matmul_i8 == b->matmul_i8);
    case NC_DTYPE_F8_E4M3: return a->matmul_f8 == b->matmul_f8;
    default: return a->matmul_bf16 == b->matmul_bf16 && a->matmul_f32 == b->matmul_f32;
    }
}

static void check_model(const model_case *mc, const char *isa) {
    const char *name = mc->name;
    const nc_model *m = mc->m;
    int V = m->cfg.vocab_size;
    int32_t seq[N_POS], table[(N_POS + 63) / 64], table2[(N_POS + 63) / 64];
    for (int i = 0; i < N_POS; i++) seq[i] = (int32_t)rnd((uint32_t)V);
    for (int b = 0; b < (N_POS + 63) / 64; b++) table[b] = 2 * b, table2[b] = 2 * b + 1; /* interleaved */
    float *ref = malloc(sizeof(float) * (size_t)N_POS * V), *got = malloc(sizeof(float) * (size_t)N_POS * V);
    ctx c = {.V = V, .batch_logits = malloc(sizeof(float) * (size_t)MAX_TOKENS * V)};
    for (int threads = 1; threads <= 3; threads++) {
        nc_backend_params p = {.n_kv_blocks = POOL, .max_batch_tokens = MAX_TOKENS, .max_seqs = MAX_SEQS,
                               .n_threads = threads, .kv_cache = mc->kv};
        c.be = nc_backend_create("cpu", m, &p);
        CHECK(c.be != NULL, "backend: %s", nc_error());
        if (!c.be) break;
        if (threads == 1) run(&c, seq, table, 0, N_POS, 0, 0, ref);

        run(&c, seq, table, 0, N_POS, 1, 0, got);
        compare(name, isa, "token by token", threads, ref, got, V);
        for (int trial = 0; trial < 3; trial++) {
            memset(got, 0, sizeof(float) * (size_t)N_POS * V);
            run(&c, seq, table, 0, N_POS, trial == 0 ? 7 : 64, 1 + (int)rnd(COMPANIONS), got);
            compare(name, isa, "random chunks among other sequences", threads, ref, got, V);
        }
        /* a cached prefix: positions [0, split) in table, forked into table2 */
        int split = 1 + (int)rnd(N_POS - 2);
        memset(got, 0, sizeof(float) * (size_t)N_POS * V);
        run(&c, seq, table, 0, split, 48, 3, got);
        for (int b = 0; b * 64 < split; b++) {
            int n = split - b * 64 < 64 ? split - b * 64 : 64;
            CHECK(c.be->ops->copy_kv_block(c.be, table[b], table2[b], n) == 0, "copy_kv_block: %s", nc_error());
        }
        run(&c, seq, table2, split, N_POS, 32, 5, got);
        compare(name, isa, "prefix forked with copy_kv_block", threads, ref, got, V);
        nc_backend_free(c.be);
    }
    free(ref), free(got), free(c.batch_logits);
}

int main(void) {
    fixture fx;
    if (!fixture_load(&fx, "v6_gqa")) {
        fprintf(stderr, "cannot read " FIXTURE_DIR "/v6_gqa (run from the repository root)\n");
        return 1;
    }
    nc_model *rnd[3]; /* bf16, int8, fp8 */
    const nc_weight_format formats[3] = {NC_WEIGHTS_FLOAT, NC_WEIGHTS_INT8, NC_WEIGHTS_FP8};
    for (int i = 0; i < 3; i++) {
        rnd[i] = nc_model_random("3,256,2,1,700", 7);
        if (!rnd[i] || nc_model_quantize(rnd[i], formats[i], true, 2)) {
            fprintf(stderr, "random model: %s\n", nc_error());
            return 1;
        }
    }
    const model_case cases[] = {
        {"v6_gqa fp32", fx.model, NC_DTYPE_F32, NC_KV_CACHE_BF16},
        {"random V1 bf16", rnd[0], NC_DTYPE_BF16, NC_KV_CACHE_BF16},
        {"random V1 int8, fp8 KV cache", rnd[1], NC_DTYPE_I8, NC_KV_CACHE_FP8},
        {"random V1 fp8", rnd[2], NC_DTYPE_F8_E4M3, NC_KV_CACHE_BF16},
    };
    for (int k = 0; cpu_kernel_variants[k]; k++) {
        const cpu_kernels *kern = cpu_kernel_variants[k];
        if (!cpu_variant_wanted(kern)) continue;
        CHECK(nc_cpu_backend_force_isa(kern->name) == 0, "%s: %s", kern->name, nc_error());
        for (size_t i = 0; i < NC_ARRAY_LEN(cases); i++) {
            int seen = -1;
            for (int e = 0; e < k && seen < 0; e++)
                if (cpu_variant_wanted(cpu_kernel_variants[e]) && same_kernels(kern, cpu_kernel_variants[e], &cases[i]))
                    seen = e;
            if (seen >= 0) {
                printf("%s, %s: the kernels %s ran, not again\n", kern->name, cases[i].name,
                       cpu_kernel_variants[seen]->name);
                continue;
            }
            check_model(&cases[i], kern->name);
        }
        printf("%s: checked\n", kern->name);
    }
    nc_cpu_backend_force_isa("auto");
    for (int i = 0; i < 3; i++) nc_model_free(rnd[i]);
    fixture_free(&fx);
    return check_summary("test_cpu_invariance");
}

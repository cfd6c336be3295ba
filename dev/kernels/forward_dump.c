/*
 * dev/kernels/forward_dump.c: a fixed schedule of forward passes on a
 * backend, printing one FNV-1a hash per step of every logit and sampled
 * token it produced, to show that a refactor of the CUDA forward left its
 * results bit-identical: build it against the old and the new tree, run both
 * on the same GPU, diff the output (and run the old one twice first: a step
 * whose hash differs between two runs of one binary is not deterministic
 * there, so its comparison says nothing).
 *
 * Models: the forward fixtures V1 MHA, V1 GQA and V6 GQA (value embeddings,
 * smear, backout, sliding windows, vocabulary 500 padded to 512), d34-width
 * layers (2 layers, C 2176, 17 heads) and GQA with a 4000-token vocabulary.
 * Steps reach every projection kernel (the GEMV for one row, the skinny
 * wgmma GEMM for 2..64 rows on sm_90a, cuBLASLt beyond), both attention
 * kernels, the decode graphs (eager, capture, replay) and device sampling.
 * The two random models then run the same schedule again with int8 and
 * fp8 weights, the fp8 KV cache, and int8 weights with the fp8 cache
 * (docs/quantization.md): after the float sections, so a tree from before
 * the 8-bit formats prints the same float lines.
 *
 *   make && cc -O2 -std=c11 -D_GNU_SOURCE -Isrc -Itests/c -o build/forward_dump \
 *       dev/kernels/forward_dump.c build/libnanochat.a -lpcre2-8 -lcjson -lmicrohttpd -ledit -lm \
 *       -pthread -L$CUDA_HOME/lib64 -lcublasLt -lcudart -lstdc++
 *   build/forward_dump [cpu|cuda] > hashes.txt        (run from the repository root)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "forward_fixture.h"
#include "model/loader.h"
#include "model/quantize.h"
#include "util/common.h"

#define POOL 1024
#define MAX_TOKENS 512
#define MAX_SEQS 128
#define PROMPT 150
#define BLOCKS_PER_SEQ 8 /* positions < 512 */

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001B3ull;
    return h;
}

typedef struct {
    nc_backend *be;
    int V;
    float *logits;
    int32_t table[MAX_SEQS][BLOCKS_PER_SEQ];
    int32_t ids[MAX_SEQS][MAX_TOKENS]; /* each sequence's token ids */
    int pos[MAX_SEQS];                 /* positions written so far */
} run;

/* Runs one chunk of ns[i] tokens of each sequence seqs[i], i < k (from its
 * position), asking for `mode`, and prints the hash of the logits (when
 * name is not NULL). */
static void step(run *r, const char *name, const int *seqs, const int *ns, int k, nc_logits_mode mode) {
    nc_seq_chunk c[MAX_SEQS];
    int rows = 0;
    for (int i = 0; i < k; i++) {
        int s = seqs[i], p = r->pos[s];
        c[i] = (nc_seq_chunk){&r->ids[s][p], ns[i], p, p ? r->ids[s][p - 1] : -1, r->table[s], mode};
        rows += mode == NC_LOGITS_ALL ? ns[i] : mode == NC_LOGITS_LAST ? 1 : 0;
    }
    nc_batch b = {c, k};
    if (r->be->ops->forward(r->be, &b, r->logits)) {
        printf("%-28s error: %s\n", name ? name : "prefill", nc_error());
        return;
    }
    for (int i = 0; i < k; i++) r->pos[seqs[i]] += ns[i];
    if (name)
        printf("%-28s %016llx\n", name,
               (unsigned long long)fnv(0xCBF29CE484222325ull, r->logits, (size_t)rows * r->V * sizeof(float)));
}

/* Three forward_sample steps of the sequences seqs[0..k), each row with
 * its own settings (greedy, top-k, top-k + top-p + min-p, whole row). */
static void sample_steps(run *r, const char *name, const int *seqs, int k) {
    if (!r->be->ops->forward_sample) return;
    nc_device_sampling rows[MAX_SEQS];
    for (int i = 0; i < k; i++) {
        static const float temp[4] = {0.0f, 0.8f, 1.0f, 1.3f};
        rows[i] = (nc_device_sampling){temp[i % 4], i % 4 == 3 ? 0 : 50, i % 4 >= 2 ? 0.9f : 1.0f,
                                       i % 4 == 2 ? 0.05f : 0.0f, {0x9E3779B97F4A7C15ull * (i + 1), 42 + i}};
    }
    for (int rep = 0; rep < 3; rep++) {
        nc_seq_chunk c[MAX_SEQS];
        int32_t out[MAX_SEQS];
        for (int i = 0; i < k; i++) {
            int s = seqs[i], p = r->pos[s];
            c[i] = (nc_seq_chunk){&r->ids[s][p], 1, p, r->ids[s][p - 1], r->table[s], NC_LOGITS_LAST};
        }
        nc_batch b = {c, k};
        char what[64];
        snprintf(what, sizeof what, "%s %d", name, rep);
        if (r->be->ops->forward_sample(r->be, &b, rows, out)) {
            printf("%-28s error: %s\n", what, nc_error());
            return;
        }
        uint64_t h = fnv(0xCBF29CE484222325ull, out, (size_t)k * sizeof(int32_t));
        for (int i = 0; i < k; i++) h = fnv(h, rows[i].rng_state, sizeof rows[i].rng_state), r->pos[seqs[i]]++;
        printf("%-28s %016llx\n", what, (unsigned long long)h);
    }
}

static void schedule(const char *device, const char *label, const nc_model *m, nc_kv_cache_format kv) {
    nc_backend_params p = {.n_kv_blocks = POOL, .max_batch_tokens = MAX_TOKENS, .max_seqs = MAX_SEQS, .kv_cache = kv};
    run *r = nc_xcalloc(1, sizeof *r);
    r->be = nc_backend_create(device, m, &p);
    if (!r->be) {
        printf("%s: %s\n", label, nc_error());
        free(r);
        return;
    }
    printf("== %s (%s)\n", label, r->be->ops->describe(r->be));
    r->V = m->cfg.vocab_size;
    r->logits = nc_xmalloc(sizeof(float) * (size_t)MAX_TOKENS * r->V);
    uint64_t g = 88172645463325252ull;
    for (int s = 0; s < MAX_SEQS; s++) {
        for (int b = 0; b < BLOCKS_PER_SEQ; b++) /* disjoint, scrambled */
            r->table[s][b] = s * BLOCKS_PER_SEQ + (3 * b) % BLOCKS_PER_SEQ;
        for (int t = 0; t < MAX_TOKENS; t++) {
            g ^= g << 13, g ^= g >> 7, g ^= g << 17;
            r->ids[s][t] = (int32_t)(g % (uint64_t)r->V);
        }
    }
    int all[MAX_SEQS], ones[MAX_SEQS];
    for (int s = 0; s < MAX_SEQS; s++) all[s] = s, ones[s] = 1;
    int n;
    step(r, "prefill 150 (all rows)", all, (n = PROMPT, &n), 1, NC_LOGITS_ALL);
    for (int t = 0; t < 5; t++) step(r, "decode 1 row", all, ones, 1, NC_LOGITS_LAST);
    static const int chunks[] = {7, 45, 93};
    for (size_t i = 0; i < NC_ARRAY_LEN(chunks); i++) {
        char what[64];
        snprintf(what, sizeof what, "chunk %d (all rows)", chunks[i]);
        step(r, what, all + 1, &chunks[i], 1, NC_LOGITS_ALL);
    }
    for (int s = 2; s < 101; s++) step(r, NULL, all + s, (n = 20 + s % 50, &n), 1, NC_LOGITS_NONE);
    static const int mixed[] = {40, 1, 5};
    step(r, "ragged 40 + 1 + 5 (all rows)", (const int[]){1, 0, 2}, mixed, 3, NC_LOGITS_ALL);
    static const int sizes[] = {2, 8, 64, 65, 100};
    for (size_t i = 0; i < NC_ARRAY_LEN(sizes); i++)
        for (int rep = 0; rep < 3; rep++) { /* eager, capture, replay */
            char what[64];
            snprintf(what, sizeof what, "decode %d rows, step %d", sizes[i], rep);
            step(r, what, all, ones, sizes[i], NC_LOGITS_LAST);
        }
    sample_steps(r, "sample 8 rows", all, 8);
    sample_steps(r, "sample 1 row", all + 50, 1);
    free(r->logits);
    nc_backend_free(r->be);
    free(r);
}

int main(int argc, char **argv) {
    const char *device = argc > 1 ? argv[1] : "cuda";
    const char *fixtures[] = {"v1_mha", "v1_gqa", "v6_gqa"};
    for (size_t i = 0; i < NC_ARRAY_LEN(fixtures); i++) {
        fixture fx;
        if (!fixture_load(&fx, fixtures[i])) {
            fprintf(stderr, "cannot read the fixture %s (run from the repository root)\n", fixtures[i]);
            return 1;
        }
        schedule(device, fixtures[i], fx.model, NC_KV_CACHE_BF16);
        fixture_free(&fx);
    }
    const char *specs[] = {"2,2176,17", "2,1024,8,2,4000"};
    int n_modes;
    const fixture_mode *modes = fixture_modes(&n_modes);
    for (int k = 0; k < n_modes; k++)
        for (size_t i = 0; i < NC_ARRAY_LEN(specs); i++) {
            nc_model *m = nc_model_random(specs[i], 7);
            if (!m || nc_model_quantize(m, modes[k].weights, true, 0)) {
                fprintf(stderr, "%s: %s\n", specs[i], nc_error());
                return 1;
            }
            char label[96];
            if (k == 0) snprintf(label, sizeof label, "%s", specs[i]); /* the float lines as before */
            else snprintf(label, sizeof label, "%s %s weights%s", specs[i], nc_weight_format_name(modes[k].weights),
                          modes[k].kv == NC_KV_CACHE_FP8 ? ", fp8 KV" : "");
            schedule(device, label, m, modes[k].kv);
            nc_model_free(m);
        }
    return 0;
}

/*
 * calibrate.c: GPTQ rounding of a model from a calibration text
 * (calibrate.h).
 *
 * nc_model_quantize_rounded asks for the matrices in order (layer 0's six,
 * layer 1's, ..., lm_head). The first request for a layer whose statistics
 * are not held starts a pass: the statistics of the layers held so far are
 * dropped, and one run of the text through the float model's CPU backend
 * gathers those of that layer and as many following ones as the memory
 * budget allows (lm_head's with the last layers when they fit, else in a
 * pass of its own). Each product input is factored once, on its first use
 * (c_q, c_k and c_v share theirs).
 */
#include "calibrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../backend/backend.h"
#include "../util/common.h"
#include "../util/mmap_file.h"
#include "gptq.h"

#define CALIBRATION_MAX_TEXT ((size_t)256 << 20)

enum {
    PRODUCTS = 4,   /* per layer: NC_PRODUCT_QKV .. NC_PRODUCT_MLP_PROJ */
    CHUNK = 512,    /* positions per forward: bounds the logits buffer (CHUNK x V floats) */
};

struct nc_calibration {
    const nc_model *model;
    nc_calibration_params p;
    nc_tokens ids;          /* the text's tokens, at most max_tokens */
    int32_t bos;
    nc_gptq *gptq;
    nc_backend *backend;    /* CPU, float weights, one window at a time */
    float *logits;          /* [CHUNK, V] for passes that gather lm_head's inputs */
    int32_t *table;         /* KV blocks 0.. of the one sequence */
    /* what the current pass holds: layers [first, end), lm_head if head */
    int first, end;
    bool head;
    nc_gptq_stats *stats;   /* [(end - first) * PRODUCTS] */
    nc_gptq_stats head_stats;
    int passes;
    double pass_end;        /* nc_now() when the last pass ended: rounding time since */
};

static int64_t product_cols(const nc_model_config *c, nc_product p) {
    switch (p) {
    case NC_PRODUCT_ATTN_PROJ: return (int64_t)c->n_head * c->head_dim;
    case NC_PRODUCT_MLP_PROJ: return c->mlp_hidden;
    default: return c->n_embd;
    }
}

static size_t layer_bytes(const nc_model_config *c) {
    size_t n = 0;
    for (int p = 0; p < PRODUCTS; p++) n += nc_gptq_stats_bytes(product_cols(c, (nc_product)p));
    return n;
}

nc_calibration *nc_calibration_new(const nc_model *m, const nc_tokenizer *tok, const nc_calibration_params *p) {
    if (m->weights != NC_WEIGHTS_FLOAT) {
        nc_fail("calibration needs the float (bf16/fp32) model");
        return NULL;
    }
    size_t len;
    char *text = nc_read_file(p->text_path, CALIBRATION_MAX_TEXT, &len);
    if (!text) return NULL;
    nc_calibration *c = nc_xcalloc(1, sizeof *c);
    c->model = m;
    c->p = *p;
    if (c->p.max_tokens <= 0) c->p.max_tokens = NC_CALIBRATION_DEFAULT_TOKENS;
    if (c->p.memory == 0) c->p.memory = NC_MAX(nc_mem_available() / 2, NC_CALIBRATION_MIN_MEMORY);
    int rc = nc_tokenizer_encode(tok, text, len, &c->ids);
    free(text);
    if (rc) goto fail;
    if (c->ids.n < 2) {
        nc_fail("the calibration text %s holds %zu tokens; it needs a few thousand", p->text_path, c->ids.n);
        goto fail;
    }
    if ((int64_t)c->ids.n > c->p.max_tokens) c->ids.n = (size_t)c->p.max_tokens;
    if ((c->bos = nc_tokenizer_special_id(tok, NC_TOK_BOS)) < 0) {
        nc_fail("the tokenizer has no <|bos|> token to start calibration windows with");
        goto fail;
    }
    if (!(c->gptq = nc_gptq_new(p->n_threads))) goto fail;
    int window = m->cfg.sequence_len, n_blocks = (window + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
    nc_backend_params bp = {.n_kv_blocks = n_blocks, .max_batch_tokens = CHUNK, .max_seqs = 1,
                            .n_threads = p->n_threads};
    if (!(c->backend = nc_backend_create("cpu", m, &bp))) goto fail;
    NC_ASSERT(c->backend->ops->observe_products);
    c->table = nc_xmalloc((size_t)n_blocks * sizeof(int32_t));
    for (int b = 0; b < n_blocks; b++) c->table[b] = b;
    c->logits = malloc((size_t)CHUNK * (size_t)m->cfg.vocab_size * sizeof(float));
    if (!c->logits) {
        nc_fail("out of memory for %d x %d logits", CHUNK, m->cfg.vocab_size);
        goto fail;
    }
    return c;
fail:
    nc_calibration_free(c);
    return NULL;
}

static void drop_stats(nc_calibration *c) {
    for (int i = 0; c->stats && i < (c->end - c->first) * PRODUCTS; i++) nc_gptq_stats_free(&c->stats[i]);
    free(c->stats);
    c->stats = NULL;
    c->first = c->end = 0;
    nc_gptq_stats_free(&c->head_stats);
    c->head = false;
}

void nc_calibration_free(nc_calibration *c) {
    if (!c) return;
    drop_stats(c);
    if (c->backend) nc_backend_free(c->backend);
    nc_gptq_free(c->gptq);
    nc_tokens_free(&c->ids);
    free(c->logits);
    free(c->table);
    free(c);
}

int64_t nc_calibration_tokens(const nc_calibration *c) { return (int64_t)c->ids.n; }

static void observe(void *ctx, int32_t layer, nc_product product, const float *x, int64_t rows, int64_t cols,
                    int64_t ld) {
    nc_calibration *c = ctx;
    nc_gptq_stats *s = NULL;
    if (layer < 0) s = c->head ? &c->head_stats : NULL;
    else if (layer >= c->first && layer < c->end) s = &c->stats[(layer - c->first) * PRODUCTS + product];
    if (s) nc_gptq_accumulate(c->gptq, s, x, rows, ld);
}

/* One run of the text through the model, gathering the statistics of
 * layers [first, end) and of lm_head when `head`. */
static int run_pass(nc_calibration *c, int first, int end, bool head) {
    const nc_model_config *cfg = &c->model->cfg;
    drop_stats(c);
    c->stats = nc_xcalloc((size_t)(end - first) * PRODUCTS, sizeof *c->stats);
    c->first = first;
    c->end = end;
    c->head = head;
    for (int i = 0; i < (end - first) * PRODUCTS; i++)
        if (nc_gptq_stats_init(&c->stats[i], product_cols(cfg, (nc_product)(i % PRODUCTS)))) return -1;
    if (head && nc_gptq_stats_init(&c->head_stats, cfg->n_embd)) return -1;

    double t0 = nc_now();
    if (c->p.verbose) {
        fprintf(stderr, "calibration pass %d: ", ++c->passes);
        if (end > first) fprintf(stderr, "layers %d..%d%s", first, end - 1, head ? " and " : "");
        fprintf(stderr, "%s over %zu tokens ...", head ? "lm_head" : "", c->ids.n);
        fflush(stderr);
    }
    nc_backend *be = c->backend;
    be->ops->observe_products(be, observe, c);
    int rc = 0, window = cfg->sequence_len;
    int32_t *in = nc_xmalloc((size_t)window * sizeof(int32_t));
    /* windows as nanochat's evaluate_bpb cuts them: <|bos|> + window - 1 tokens */
    for (size_t start = 0; start < c->ids.n && rc == 0; start += (size_t)window) {
        int k = (int)NC_MIN((size_t)window, c->ids.n - start);
        in[0] = c->bos;
        memcpy(in + 1, c->ids.ids + start, (size_t)(k - 1) * sizeof(int32_t));
        for (int pos = 0; pos < k && rc == 0; pos += CHUNK) {
            int n = NC_MIN(CHUNK, k - pos);
            nc_seq_chunk ch = {in + pos, n, pos, pos ? in[pos - 1] : -1, c->table,
                               head ? NC_LOGITS_ALL : NC_LOGITS_NONE};
            nc_batch b = {&ch, 1};
            rc = be->ops->forward(be, &b, c->logits);
        }
    }
    be->ops->observe_products(be, NULL, NULL);
    free(in);
    c->pass_end = nc_now();
    if (c->p.verbose) fprintf(stderr, " %.1f s\n", c->pass_end - t0);
    return rc;
}

/* Makes sure the statistics of `layer` (-1: lm_head) are held. */
static int hold(nc_calibration *c, int layer) {
    if (layer < 0 ? c->head : (layer >= c->first && layer < c->end)) return 0;
    if (layer < 0) return run_pass(c, 0, 0, true);
    const nc_model_config *cfg = &c->model->cfg;
    size_t per_layer = layer_bytes(cfg), used = per_layer;
    int end = layer + 1;
    while (end < cfg->n_layer && used + per_layer <= c->p.memory) {
        used += per_layer;
        end++;
    }
    bool head = end == cfg->n_layer && used + nc_gptq_stats_bytes(cfg->n_embd) <= c->p.memory;
    return run_pass(c, layer, end, head);
}

static int round_matrix(void *ctx, int layer, nc_qmatrix which, const nc_tensor *w, nc_weight_format f,
                        uint8_t *q, float *scale) {
    static const nc_product input_of[] = {
        [NC_QMATRIX_C_Q] = NC_PRODUCT_QKV,        [NC_QMATRIX_C_K] = NC_PRODUCT_QKV,
        [NC_QMATRIX_C_V] = NC_PRODUCT_QKV,        [NC_QMATRIX_ATTN_PROJ] = NC_PRODUCT_ATTN_PROJ,
        [NC_QMATRIX_MLP_FC] = NC_PRODUCT_MLP_FC,  [NC_QMATRIX_MLP_PROJ] = NC_PRODUCT_MLP_PROJ,
        [NC_QMATRIX_LM_HEAD] = NC_PRODUCT_LM_HEAD,
    };
    nc_calibration *c = ctx;
    if (hold(c, which == NC_QMATRIX_LM_HEAD ? -1 : layer)) return -1;
    nc_gptq_stats *s = which == NC_QMATRIX_LM_HEAD ? &c->head_stats
                                                   : &c->stats[(layer - c->first) * PRODUCTS + input_of[which]];
    if (nc_gptq_factor(c->gptq, s)) {
        char why[256];
        snprintf(why, sizeof why, "%s", nc_error());
        return nc_fail("%s: %s", w->name, why);
    }
    if (nc_gptq_round(c->gptq, s, w, f, q, scale)) return -1;
    /* the last matrix of what this pass gathered: factoring and rounding done */
    bool last = which == NC_QMATRIX_LM_HEAD || (which == NC_QMATRIX_MLP_PROJ && layer == c->end - 1 && !c->head);
    if (c->p.verbose && last) fprintf(stderr, "  factored and rounded in %.1f s\n", nc_now() - c->pass_end);
    return 0;
}

nc_quant_rounding nc_calibration_rounding(nc_calibration *c) {
    return (nc_quant_rounding){.round = round_matrix, .ctx = c, .name = "gptq"};
}

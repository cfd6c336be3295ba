/*
 * cmd_bench.c: `nanochat bench`: throughput of a backend on the shapes of
 * docs/performance.md (Floors, Measuring), each next to its floor.
 *
 *   prefill      one prompt of N tokens (default 2048), batch 1, logits of
 *                the last position: time to first token -> tok/s and the
 *                achieved TFLOP/s (2 x matrix params x N + attention)
 *   decode       batch 1 at each context in --ctx (default 128,1024): median
 *                step time over --steps greedy tokens after a warm-up
 *   batch        --batch sizes (default 8,32,64,128) of sequences at
 *                --batch-ctx (default 512), median step time
 *   verify       --verify draft counts k (default none): one sequence at
 *                --verify-ctx (default 1024) verifying k drafts, i.e. a
 *                forward of k + 1 positions, each position's token drawn
 *                on the device where the backend can (sample_all), else
 *                its logits returned, as speculative decoding runs it
 *                (docs/speculative.md); median step time, and its ratio to
 *                a decode step at that context
 *
 * Decode floors: a step must read every weight once (the matrices and the
 * lm_head; one embedding row) plus the KV cache of every row's context.
 * Bytes / step time / the device's measured bandwidth is the "% of floor".
 * The bandwidth is measured in the same run: the backend's copy_bandwidth
 * op (CUDA: a 1 GiB device-to-device copy) or, for backends without one,
 * the host's read bandwidth as decode uses it: the run's --threads threads
 * streaming a buffer of at least 1 GiB and 4x the last-level cache, best of
 * 5 passes before the tests and 5 after (util/membw.h). Bytes count what
 * the backend stores, as its weight_elem_bytes / kv_vector_bytes ops say
 * (the CUDA backend keeps bf16 weights and a bf16 KV cache; the CPU reads
 * the checkpoint's weights in place, 8-bit ones with --weights int8/fp8,
 * and keeps an fp32 KV cache, or fp8 with a scale per vector with
 * --kv-cache fp8).
 *
 * Backend-agnostic: only backend.h calls. Decode steps use forward_sample
 * (greedy) when the backend has it, else forward + a host argmax.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli.h"
#include "model_args.h"
#include "util/common.h"
#include "util/membw.h"
#include "util/threadpool.h"

#define BENCH_MAX_LIST 16

typedef struct {
    int prefill;                 /* 0: skip */
    int ctx[BENCH_MAX_LIST], n_ctx;
    int batch[BENCH_MAX_LIST], n_batch;
    int verify[BENCH_MAX_LIST], n_verify;
    int batch_ctx, steps, batch_steps, verify_ctx;
    bool json;
} bench_opts;

typedef struct {
    char name[48];
    double tok_s, ms, gbs, floor_pct, tflops;
    double x_decode; /* verify rows: step time / a decode step's at the same context */
} bench_row;

static void usage(FILE *f) {
    fprintf(f,
            "usage: nanochat bench [--random d34 | -m PATH] [--device cuda|cpu] [--json] [options]\n"
            "\n"
            "Measures prefill, batch-1 decode and batched decode throughput, each with the\n"
            "fraction of its memory-bandwidth floor (bandwidth measured in the same run).\n"
            "\n"
            "  --prefill N          prompt length for the prefill test (default 2048, 0 = skip)\n"
            "  --ctx LIST           batch-1 decode contexts (default 128,1024; 'none' = skip)\n"
            "  --batch LIST         batched decode sizes (default 8,32,64,128; 'none' = skip)\n"
            "  --batch-ctx N        context of every sequence in the batched test (default 512)\n"
            "  --steps N            decode steps timed per context (default 64)\n"
            "  --batch-steps N      decode steps timed per batch size (default 16)\n"
            "  --verify LIST        draft counts k: time verifying k drafts (a forward of k + 1 positions,\n"
            "                       every position sampled) against a decode step (default none)\n"
            "  --verify-ctx N       context of the verify test (default 1024)\n"
            "  --quick              small sizes: --prefill 256 --ctx 128 --batch 8 --steps 16\n"
            "  --json               one JSON object on stdout\n"
            "  -h, --help           this help\n\n");
    nc_model_args_help(f);
}

static int parse_count(const char *opt, const char *v, int lo, int hi, int *out) {
    char *end;
    long x = strtol(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) {
        fprintf(stderr, "nanochat bench: %s expects an integer in %d..%d, got '%s'\n", opt, lo, hi, v);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int parse_list(const char *opt, const char *v, int lo, int hi, int *out, int *n) {
    *n = 0;
    if (!strcmp(v, "none")) return 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", v);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == BENCH_MAX_LIST) {
            fprintf(stderr, "nanochat bench: %s takes at most %d values\n", opt, BENCH_MAX_LIST);
            return -1;
        }
        if (parse_count(opt, tok, lo, hi, &out[(*n)++])) return -1;
    }
    if (*n == 0) {
        fprintf(stderr, "nanochat bench: %s needs a comma-separated list or 'none'\n", opt);
        return -1;
    }
    return 0;
}

/* ==== byte counts ==== */

/* Bytes of `rows` rows of `cols` values of a matrix stored as `dtype`:
 * an 8-bit matrix also streams one fp32 scale per row. */
static double matrix_bytes(nc_backend *be, nc_dtype dtype, double rows, double cols) {
    double elem = (double)be->ops->weight_elem_bytes(be, dtype);
    return rows * cols * elem + (nc_dtype_size(dtype) == 1 ? rows * sizeof(float) : 0);
}

/* Bytes of weights one decode step reads, as the backend stores them:
 * every matrix (with its row scales when 8-bit), the lm_head rows of the
 * real vocabulary, one embedding row
 * (counted at the width of a matrix of its dtype: a few KB either way). */
static double weight_bytes(nc_backend *be) {
    const nc_model *m = be->model;
    const nc_model_config *c = &m->cfg;
    double total = 0;
    for (int l = 0; l < c->n_layer; l++) {
        const nc_layer_weights *w = &m->layers[l];
        const nc_tensor *ts[] = {w->c_q, w->c_k, w->c_v, w->attn_proj, w->mlp_fc, w->mlp_proj};
        for (size_t i = 0; i < NC_ARRAY_LEN(ts); i++)
            total += matrix_bytes(be, ts[i]->dtype, (double)ts[i]->shape[0], (double)ts[i]->shape[1]);
    }
    total += matrix_bytes(be, m->lm_head->dtype, c->vocab_size, c->n_embd);
    total += (double)c->n_embd * (double)be->ops->weight_elem_bytes(be, m->wte->dtype);
    return total;
}

/* K and V of every layer for one position. */
static double kv_bytes_per_token(nc_backend *be) {
    const nc_model_config *c = &be->model->cfg;
    return (double)c->n_layer * 2 * c->n_kv_head * (double)be->ops->kv_vector_bytes(be);
}

/* Matrix parameters touched per prompt token (everything but wte and lm_head). */
static double matrix_params(const nc_model *m) {
    const nc_model_config *c = &m->cfg;
    double p = 0;
    for (int l = 0; l < c->n_layer; l++) {
        const nc_layer_weights *w = &m->layers[l];
        p += (double)nc_tensor_numel(w->c_q) + nc_tensor_numel(w->c_k) + nc_tensor_numel(w->c_v) +
             nc_tensor_numel(w->attn_proj) + nc_tensor_numel(w->mlp_fc) + nc_tensor_numel(w->mlp_proj);
    }
    return p;
}

/* ==== runs ==== */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n ? v[n / 2] : 0;
}

static void fill_prompt(int32_t *ids, int n, int V, uint32_t seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        ids[i] = (int32_t)((seed >> 8) % (uint32_t)(V - 16));
    }
}

/* Prefills sequences s0..s0+ns-1 (tables[s]) with `ctx` tokens each, as many
 * per forward as max_batch_tokens / max_seqs allow. */
static int prefill_seqs(nc_backend *be, int32_t **tables, int s0, int ns, const int32_t *ids, int ctx) {
    int chunk = NC_MIN(ctx, be->max_batch_tokens);
    nc_seq_chunk *c = nc_xcalloc((size_t)be->max_seqs, sizeof *c);
    int rc = 0;
    for (int pos = 0; pos < ctx && !rc; pos += chunk) {
        int n = NC_MIN(chunk, ctx - pos);
        int per = NC_MAX(1, NC_MIN(be->max_seqs, be->max_batch_tokens / n));
        for (int s = 0; s < ns && !rc; s += per) {
            int k = NC_MIN(per, ns - s);
            for (int j = 0; j < k; j++)
                c[j] = (nc_seq_chunk){ids + pos, n, pos, pos ? ids[pos - 1] : -1, tables[s0 + s + j], NC_LOGITS_NONE};
            nc_batch b = {c, k};
            rc = be->ops->forward(be, &b, NULL);
        }
    }
    free(c);
    return rc;
}

/* Times `steps` decode steps of nb rows at context ctx; returns the median
 * step time in seconds, or -1. */
static double time_decode(nc_backend *be, int32_t **tables, int nb, int ctx, int steps, const int32_t *ids) {
    const nc_model *m = be->model;
    int V = m->cfg.vocab_size;
    nc_seq_chunk *c = nc_xcalloc((size_t)nb, sizeof *c);
    nc_device_sampling *rows = nc_xcalloc((size_t)nb, sizeof *rows);
    int32_t *tok = nc_xcalloc((size_t)nb, sizeof *tok), *prev = nc_xcalloc((size_t)nb, sizeof *prev);
    int32_t *out = nc_xcalloc((size_t)nb, sizeof *out);
    float *logits = be->ops->forward_sample ? NULL : malloc((size_t)nb * V * sizeof(float));
    double *t = nc_xcalloc((size_t)steps + 2, sizeof *t);
    double result = -1;
    for (int s = 0; s < nb; s++) {
        tok[s] = ids[ctx], prev[s] = ids[ctx - 1];
        rows[s].top_p = 1.0f;
    }
    int warm = 2;
    for (int i = 0; i < steps + warm; i++) {
        for (int s = 0; s < nb; s++)
            c[s] = (nc_seq_chunk){&tok[s], 1, ctx + i, prev[s], tables[s], NC_LOGITS_LAST};
        nc_batch b = {c, nb};
        double t0 = nc_now();
        int rc;
        if (be->ops->forward_sample) {
            rc = be->ops->forward_sample(be, &b, rows, out);
            for (int s = 0; s < nb && !rc; s++) prev[s] = tok[s], tok[s] = out[s];
        } else {
            rc = logits ? be->ops->forward(be, &b, logits) : nc_fail("out of memory for logits");
            for (int s = 0; s < nb && !rc; s++) {
                const float *r = logits + (size_t)s * V;
                int best = 0;
                for (int v = 1; v < V; v++)
                    if (r[v] > r[best]) best = v;
                prev[s] = tok[s], tok[s] = best;
            }
        }
        if (rc) goto out;
        if (i >= warm) t[i - warm] = nc_now() - t0;
    }
    result = median(t, steps);
out:
    free(c), free(rows), free(tok), free(prev), free(out), free(logits), free(t);
    return result;
}

/* Times `steps` verifications of k drafts of one sequence at context ctx
 * (the same positions each time, as a row whose drafts keep failing):
 * median seconds, or -1. */
static double time_verify(nc_backend *be, int32_t *table, int k, int ctx, int steps, const int32_t *ids) {
    bool dev = be->ops->forward_sample && be->ops->sample_all; /* the scheduler's path */
    float *logits = dev ? NULL : malloc((size_t)(k + 1) * (size_t)be->model->cfg.vocab_size * sizeof(float));
    int32_t *tokens = nc_xcalloc((size_t)k + 1, sizeof *tokens), unused;
    double *t = nc_xcalloc((size_t)steps, sizeof *t);
    double result = dev || logits ? 0 : nc_fail("out of memory for logits");
    for (int i = 0; i < steps + 2 && result == 0; i++) {
        nc_seq_chunk c = {ids + ctx, k + 1, ctx, ids[ctx - 1], table, NC_LOGITS_ALL};
        nc_batch b = {&c, 1};
        nc_device_sampling greedy = {.top_p = 1.0f, .tokens = tokens};
        double t0 = nc_now();
        if (dev ? be->ops->forward_sample(be, &b, &greedy, &unused) : be->ops->forward(be, &b, logits)) result = -1;
        if (i >= 2) t[i - 2] = nc_now() - t0;
    }
    if (result == 0) result = median(t, steps);
    free(logits);
    free(tokens);
    free(t);
    return result;
}

/* ==== output ==== */

static void print_rows(const bench_opts *o, nc_backend *be, const char *model_desc, double params, double wbytes,
                       double bw, const char *bw_how, const bench_row *r, int n) {
    if (o->json) {
        printf("{\"device\": \"%s\", \"backend\": \"%s\", \"model\": \"%s\", \"params\": %.0f, "
               "\"weight_bytes_per_token\": %.0f, \"bandwidth_gbs\": %.1f, \"bandwidth_source\": \"%s\", "
               "\"results\": [",
               nc_backend_describe(be), be->ops->name, model_desc, params, wbytes, bw / 1e9, bw_how);
        for (int i = 0; i < n; i++) {
            printf("%s{\"test\": \"%s\", \"tok_s\": %.2f, \"ms\": %.4f, \"gb_s\": %.1f, \"floor_pct\": %.2f, "
                   "\"tflops\": %.2f",
                   i ? ", " : "", r[i].name, r[i].tok_s, r[i].ms, r[i].gbs, r[i].floor_pct, r[i].tflops);
            if (r[i].x_decode > 0) printf(", \"x_decode\": %.4f", r[i].x_decode);
            printf("}");
        }
        printf("]}\n");
        return;
    }
    printf("device:    %s\n", nc_backend_describe(be));
    printf("model:     %s, %.3g params, %.3f GB of weights read per decode step\n", model_desc, params, wbytes / 1e9);
    printf("bandwidth: %.1f GB/s (%s)\n\n", bw / 1e9, bw_how);
    printf("%-22s %12s %10s %9s %9s\n", "test", "tok/s", "ms/step", "GB/s", "% floor");
    for (int i = 0; i < n; i++) {
        if (r[i].x_decode > 0)
            printf("%-22s %12.1f %10.3f %9s %8.3fx a decode step\n", r[i].name, r[i].tok_s, r[i].ms, "-",
                   r[i].x_decode);
        else if (r[i].tflops >= 1)
            printf("%-22s %12.1f %10.3f %9s %8.1f TFLOP/s\n", r[i].name, r[i].tok_s, r[i].ms, "-", r[i].tflops);
        else if (r[i].tflops > 0)
            printf("%-22s %12.1f %10.3f %9s %8.1f GFLOP/s\n", r[i].name, r[i].tok_s, r[i].ms, "-", r[i].tflops * 1e3);
        else
            printf("%-22s %12.1f %10.3f %9.0f %8.1f%%\n", r[i].name, r[i].tok_s, r[i].ms, r[i].gbs, r[i].floor_pct);
    }
}

int cmd_bench(int argc, char **argv) {
    nc_model_args ma;
    nc_model_args_init(&ma);
    bench_opts o = {.prefill = 2048, .ctx = {128, 1024}, .n_ctx = 2, .batch = {8, 32, 64, 128}, .n_batch = 4,
                    .batch_ctx = 512, .steps = 64, .batch_steps = 16, .verify_ctx = 1024};
    for (int i = 1; i < argc; i++) {
        int r = nc_model_args_parse(&ma, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            o.json = true;
        } else if (!strcmp(a, "--quick")) {
            o.prefill = 256, o.ctx[0] = 128, o.n_ctx = 1, o.batch[0] = 8, o.n_batch = 1, o.steps = 16, o.batch_steps = 8;
        } else if (!strcmp(a, "--prefill") || !strcmp(a, "--ctx") || !strcmp(a, "--batch") ||
                   !strcmp(a, "--batch-ctx") || !strcmp(a, "--steps") || !strcmp(a, "--batch-steps") ||
                   !strcmp(a, "--verify") || !strcmp(a, "--verify-ctx")) {
            if (!v) {
                fprintf(stderr, "nanochat bench: %s needs a value\n", a);
                return 2;
            }
            i++;
            int rc = !strcmp(a, "--prefill")     ? parse_count(a, v, 0, 1 << 20, &o.prefill)
                     : !strcmp(a, "--ctx")       ? parse_list(a, v, 1, 1 << 20, o.ctx, &o.n_ctx)
                     : !strcmp(a, "--batch")     ? parse_list(a, v, 1, 4096, o.batch, &o.n_batch)
                     : !strcmp(a, "--batch-ctx") ? parse_count(a, v, 1, 1 << 20, &o.batch_ctx)
                     : !strcmp(a, "--steps")     ? parse_count(a, v, 1, 100000, &o.steps)
                     : !strcmp(a, "--verify")    ? parse_list(a, v, 1, 64, o.verify, &o.n_verify)
                     : !strcmp(a, "--verify-ctx") ? parse_count(a, v, 1, 1 << 20, &o.verify_ctx)
                                                 : parse_count(a, v, 1, 100000, &o.batch_steps);
            if (rc) return 2;
        } else {
            fprintf(stderr, "nanochat bench: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }

    nc_model *m = NULL;
    if (nc_model_args_load(&ma, &m, NULL)) return 1;
    const nc_model_config *cfg = &m->cfg;
    int V = cfg->vocab_size;
    int max_ctx = o.batch_ctx, max_k = 0;
    for (int i = 0; i < o.n_ctx; i++) max_ctx = NC_MAX(max_ctx, o.ctx[i]);
    for (int i = 0; i < o.n_verify; i++) max_k = NC_MAX(max_k, o.verify[i]);
    if (o.n_verify) max_ctx = NC_MAX(max_ctx, o.verify_ctx + max_k);
    int max_batch = 1;
    for (int i = 0; i < o.n_batch; i++) max_batch = NC_MAX(max_batch, o.batch[i]);
    if (o.n_verify) max_batch = NC_MAX(max_batch, max_k + 1); /* a verified position is sampled like a row */
    int steps = NC_MAX(o.steps, o.batch_steps) + 4;
    int per_seq_blocks = (max_ctx + steps + NC_KV_BLOCK_TOKENS) / NC_KV_BLOCK_TOKENS;
    int prefill_blocks = (o.prefill + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
    int batch_blocks = o.n_batch ? max_batch * ((o.batch_ctx + steps + NC_KV_BLOCK_TOKENS) / NC_KV_BLOCK_TOKENS) : 0;
    int pool = NC_MAX(NC_MAX(per_seq_blocks, prefill_blocks), batch_blocks);
    nc_backend_params p = {.n_kv_blocks = pool,
                           .max_batch_tokens = NC_MAX(NC_MAX(o.prefill, 512), max_batch),
                           .max_seqs = max_batch,
                           .n_threads = ma.threads};
    nc_backend *be = nc_model_args_backend(&ma, m, &p);
    if (!be) {
        nc_model_free(m);
        return 1;
    }
    double wbytes = weight_bytes(be), kvb = kv_bytes_per_token(be);
    double params = (double)nc_config_param_count(cfg);
    double bw = be->ops->copy_bandwidth ? be->ops->copy_bandwidth(be) : 0;
    char bw_how[96] = "device copy, read + written";
    /* the host's read rate, probed before and after the tests (best of both:
     * on a shared machine one probe may land in a busy moment) */
    int host_threads = ma.threads > 0 ? ma.threads : nc_default_threads();
    size_t probe = nc_read_bandwidth_bytes();
    bool host_bw = bw <= 0;
    if (host_bw) {
        bw = nc_read_bandwidth(host_threads, probe, 5);
        snprintf(bw_how, sizeof bw_how, "host read, %d thread%s, %zu MB, best of 10", host_threads,
                 host_threads == 1 ? "" : "s", probe >> 20);
        if (bw <= 0) {
            fprintf(stderr, "nanochat bench: %s\n", nc_error());
            nc_backend_free(be);
            nc_model_free(m);
            return 1;
        }
    }

    int n_ids = NC_MAX(NC_MAX(o.prefill, max_ctx), o.batch_ctx) + steps + 8;
    int32_t *ids = nc_xmalloc(sizeof(int32_t) * (size_t)n_ids);
    fill_prompt(ids, n_ids, V, 12345u);
    int32_t **tables = nc_xcalloc((size_t)max_batch, sizeof *tables);
    int tlen = NC_MAX(per_seq_blocks, prefill_blocks);
    int blocks_each = o.n_batch ? batch_blocks / max_batch : 0;
    for (int s = 0; s < max_batch; s++) {
        tables[s] = nc_xcalloc((size_t)tlen, sizeof(int32_t));
        for (int b = 0; b < tlen; b++) tables[s][b] = s == 0 ? b % pool : (s * blocks_each + b) % pool;
    }
    bench_row rows[3 * BENCH_MAX_LIST + 1];
    memset(rows, 0, sizeof rows);
    int nr = 0, rc = 0;
    char desc[160];
    snprintf(desc, sizeof desc, "%s", m->source ? m->source : "model");

    if (o.prefill > 0) {
        float *lg = nc_xmalloc((size_t)V * sizeof(float));
        double t[4];
        for (int rep = 0; rep < 4 && !rc; rep++) {
            nc_seq_chunk c = {ids, o.prefill, 0, -1, tables[0], NC_LOGITS_LAST};
            nc_batch b = {&c, 1};
            double t0 = nc_now();
            rc = be->ops->forward(be, &b, lg);
            t[rep] = nc_now() - t0;
        }
        free(lg);
        if (!rc) {
            double sec = median(t + 1, 3);
            double T = o.prefill;
            double flops = 2 * matrix_params(m) * T + 2.0 * V * cfg->n_embd +
                           2.0 * T * T * cfg->head_dim * cfg->n_head * cfg->n_layer; /* causal QK + PV */
            bench_row *r = &rows[nr++];
            snprintf(r->name, sizeof r->name, "prefill %d", o.prefill);
            r->tok_s = T / sec, r->ms = sec * 1e3, r->tflops = flops / sec / 1e12;
        }
    }
    for (int i = 0; i < o.n_ctx && !rc; i++) {
        int ctx = o.ctx[i];
        rc = prefill_seqs(be, tables, 0, 1, ids, ctx);
        double sec = rc ? -1 : time_decode(be, tables, 1, ctx, o.steps, ids);
        if (sec < 0) {
            rc = -1;
            break;
        }
        double bytes = wbytes + kvb * (ctx + o.steps / 2.0);
        bench_row *r = &rows[nr++];
        snprintf(r->name, sizeof r->name, "decode ctx %d", ctx);
        r->tok_s = 1.0 / sec, r->ms = sec * 1e3, r->gbs = bytes / sec / 1e9, r->floor_pct = 100.0 * bytes / sec / bw;
    }
    for (int i = 0; i < o.n_batch && !rc; i++) {
        int nb = o.batch[i], ctx = o.batch_ctx;
        rc = prefill_seqs(be, tables, 0, nb, ids, ctx);
        double sec = rc ? -1 : time_decode(be, tables, nb, ctx, o.batch_steps, ids);
        if (sec < 0) {
            rc = -1;
            break;
        }
        double bytes = wbytes + kvb * nb * (ctx + o.batch_steps / 2.0);
        bench_row *r = &rows[nr++];
        snprintf(r->name, sizeof r->name, "batch %d ctx %d", nb, ctx);
        r->tok_s = nb / sec, r->ms = sec * 1e3, r->gbs = bytes / sec / 1e9, r->floor_pct = 100.0 * bytes / sec / bw;
    }
    if (o.n_verify && !rc) {
        int ctx = o.verify_ctx;
        rc = prefill_seqs(be, tables, 0, 1, ids, ctx);
        double dec = rc ? -1 : time_decode(be, tables, 1, ctx, o.steps, ids);
        rc = dec < 0 ? -1 : prefill_seqs(be, tables, 0, 1, ids, ctx); /* decode moved on: back to ctx */
        for (int i = 0; i < o.n_verify && !rc; i++) {
            int k = o.verify[i];
            double sec = time_verify(be, tables[0], k, ctx, o.steps, ids);
            if (sec < 0) {
                rc = -1;
                break;
            }
            bench_row *r = &rows[nr++];
            snprintf(r->name, sizeof r->name, "verify %d ctx %d", k, ctx);
            r->tok_s = (k + 1) / sec, r->ms = sec * 1e3, r->x_decode = sec / dec;
        }
    }
    if (!rc && host_bw) {
        double again = nc_read_bandwidth(host_threads, probe, 5);
        if (again > bw) {
            for (int i = 0; i < nr; i++) rows[i].floor_pct *= bw / again;
            bw = again;
        }
    }
    if (rc) fprintf(stderr, "nanochat bench: %s\n", nc_error());
    else print_rows(&o, be, desc, params, wbytes, bw, bw_how, rows, nr);
    for (int s = 0; s < max_batch; s++) free(tables[s]);
    free(tables);
    free(ids);
    nc_backend_free(be);
    nc_model_free(m);
    return rc ? 1 : 0;
}

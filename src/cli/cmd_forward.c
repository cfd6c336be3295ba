/*
 * cmd_forward.c: `nanochat forward`: the raw logits of a token sequence,
 * for comparing a backend with PyTorch (or two backends with each other).
 *
 *   nanochat forward -m PATH --ids "1 2 3" --out FILE
 *
 * Runs the ids as one sequence from position 0 (prefill in chunks of up to
 * 512 tokens, every position's logits) and writes them to FILE as fp32,
 * row-major [T, V], little-endian, V = vocab_size (padding rows dropped,
 * softcap applied): exactly what nanochat's GPT.forward returns for the ids.
 * No tokenizer is needed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli.h"
#include "model_args.h"
#include "util/common.h"

#define FORWARD_CHUNK 512 /* tokens per forward call */

static void usage(FILE *f) {
    fprintf(f,
            "usage: nanochat forward [-m PATH | --random SHAPE] --ids \"ID ID ...\" --out FILE [options]\n"
            "\n"
            "Runs token ids (position 0 onwards) through the model and writes the logits of\n"
            "every position to FILE: fp32, row-major [T, V], little-endian, V = vocab_size,\n"
            "softcapped, as nanochat's GPT.forward returns them. '-' writes to stdout.\n"
            "\n"
            "  --ids LIST           token ids separated by spaces or commas (required)\n"
            "  --out FILE           output file (required)\n"
            "  -h, --help           this help\n\n");
    nc_model_args_help(f);
}

/* Parses "1 2, 3" into a new array; prints an error and returns -1 on junk. */
static int parse_ids(const char *s, int32_t **ids, int *n) {
    size_t cap = strlen(s) / 2 + 1;
    *ids = nc_xmalloc(cap * sizeof(int32_t));
    *n = 0;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && !strchr(" ,\t\n", *end))) {
            fprintf(stderr, "nanochat forward: --ids: '%.*s' is not a token id (a non-negative integer)\n",
                    (int)strcspn(p, " ,\t\n"), p);
            free(*ids);
            return -1;
        }
        (*ids)[(*n)++] = (int32_t)v;
        p = end;
    }
    if (*n == 0) {
        fprintf(stderr, "nanochat forward: --ids is empty\n");
        free(*ids);
        return -1;
    }
    return 0;
}

/* fp32 little-endian whatever the host order. */
static int write_logits(FILE *f, const float *x, size_t n) {
    unsigned char buf[4096];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        buf[k++] = (unsigned char)u;
        buf[k++] = (unsigned char)(u >> 8);
        buf[k++] = (unsigned char)(u >> 16);
        buf[k++] = (unsigned char)(u >> 24);
        if (k == sizeof buf || i + 1 == n) {
            if (fwrite(buf, 1, k, f) != k) return -1;
            k = 0;
        }
    }
    return 0;
}

static int run(const nc_model_args *a, const int32_t *ids, int n, const char *out_path) {
    nc_model *m = NULL;
    if (nc_model_args_load(a, &m, NULL)) return 1;
    int V = m->cfg.vocab_size, rc = 1;
    nc_backend *be = NULL;
    float *logits = NULL;
    int32_t *table = NULL;
    FILE *f = NULL;
    for (int i = 0; i < n; i++)
        if (ids[i] >= V) {
            fprintf(stderr, "nanochat forward: token id %d (position %d) is outside the vocabulary [0, %d)\n",
                    ids[i], i, V);
            goto done;
        }
    int chunk = NC_MIN(n, FORWARD_CHUNK);
    int n_blocks = (n + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
    nc_backend_params p = {.n_kv_blocks = n_blocks, .max_batch_tokens = chunk, .max_seqs = 1};
    if (!(be = nc_model_args_backend(a, m, &p))) goto done;
    logits = malloc((size_t)n * (size_t)V * sizeof(float));
    if (!logits) {
        fprintf(stderr, "nanochat forward: out of memory for %d x %d logits\n", n, V);
        goto done;
    }
    table = nc_xmalloc((size_t)n_blocks * sizeof(int32_t));
    for (int b = 0; b < n_blocks; b++) table[b] = b;
    double t0 = nc_now();
    for (int pos = 0; pos < n; pos += chunk) {
        int k = NC_MIN(chunk, n - pos);
        nc_seq_chunk c = {ids + pos, k, pos, pos ? ids[pos - 1] : -1, table, NC_LOGITS_ALL};
        nc_batch batch = {&c, 1};
        if (be->ops->forward(be, &batch, logits + (size_t)pos * V)) {
            fprintf(stderr, "nanochat forward: %s\n", nc_error());
            goto done;
        }
    }
    if (a->verbose)
        fprintf(stderr, "forward: %d tokens in %.3f s (%.1f tok/s)\n", n, nc_now() - t0, n / (nc_now() - t0));
    f = strcmp(out_path, "-") ? fopen(out_path, "wb") : stdout;
    if (!f) {
        fprintf(stderr, "nanochat forward: cannot write %s: %s\n", out_path, strerror(errno));
        goto done;
    }
    if (write_logits(f, logits, (size_t)n * V) || fflush(f)) {
        fprintf(stderr, "nanochat forward: writing %s failed: %s\n", out_path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    if (f && f != stdout && fclose(f) && rc == 0) {
        fprintf(stderr, "nanochat forward: writing %s failed: %s\n", out_path, strerror(errno));
        rc = 1;
    }
    free(table);
    free(logits);
    nc_backend_free(be);
    nc_model_free(m);
    return rc;
}

int cmd_forward(int argc, char **argv) {
    nc_model_args a;
    nc_model_args_init(&a);
    const char *ids_text = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        int r = nc_model_args_parse(&a, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--ids") || !strcmp(argv[i], "--out")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "nanochat forward: %s needs a value\n", argv[i]);
                return 2;
            }
            if (!strcmp(argv[i], "--ids")) ids_text = argv[++i];
            else out = argv[++i];
        } else {
            fprintf(stderr, "nanochat forward: unknown option '%s' (see nanochat forward --help)\n", argv[i]);
            return 2;
        }
    }
    if (!ids_text || !out) {
        fprintf(stderr, "nanochat forward: %s is required (see nanochat forward --help)\n",
                !ids_text ? "--ids" : "--out");
        return 2;
    }
    if (!*out) {
        fprintf(stderr, "nanochat forward: --out is empty\n");
        return 2;
    }
    int32_t *ids;
    int n;
    if (parse_ids(ids_text, &ids, &n)) return 2;
    int rc = run(&a, ids, n, out);
    free(ids);
    return rc;
}

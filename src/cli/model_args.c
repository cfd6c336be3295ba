/*
 * model_args.c: the model-selection options every subcommand shares
 * (model_args.h), and the one place that turns them into a model,
 * tokenizer and backend.
 *
 * Mirrors how nanochat's scripts pick a checkpoint (`-i sft|rl|mid|base`,
 * `-g d34`, `-s step` in chat_cli.py / chat_web.py via checkpoint_manager),
 * plus --random for checkpoint-free benchmarks. The loading itself (default
 * model, tokenizer check) is engine/runner.c's, shared with the public API;
 * this file adds the flags and the CLI's error printing.
 */
#include "model_args.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "engine/runner.h"
#include "flags.h"
#include "model/quantize.h"
#include "util/common.h"

void nc_model_args_init(nc_model_args *a) {
    memset(a, 0, sizeof *a);
    a->load.step = -1;
    a->random_seed = 1;
    a->device = "auto";
    a->threads = 0;
}

int nc_model_args_parse(nc_model_args *a, int argc, char **argv, int *i) {
    const char *v = NULL;
    int r;
    long long x;
    if ((r = nc_flag_take("-m", argc, argv, i, &v)) || (r = nc_flag_take("--model", argc, argv, i, &v))) {
        if (r < 0) return -1;
        if (!*v) {
            fprintf(stderr, "nanochat: -m needs a non-empty path\n");
            return -1;
        }
        a->load.path = v;
        return 1;
    }
    if ((r = nc_flag_take("--step", argc, argv, i, &v))) {
        if (r < 0 || nc_flag_int("--step", v, 0, INT_MAX, &x)) return -1;
        a->load.step = (int)x;
        return 1;
    }
    if ((r = nc_flag_take("--source", argc, argv, i, &v))) {
        if (r < 0) return -1;
        if (strcmp(v, "sft") && strcmp(v, "rl") && strcmp(v, "mid") && strcmp(v, "base")) {
            fprintf(stderr, "nanochat: --source must be sft, rl, mid or base, got '%s'\n", v);
            return -1;
        }
        a->load.source = v;
        return 1;
    }
    if ((r = nc_flag_take("--tag", argc, argv, i, &v))) {
        if (r < 0) return -1;
        if (!*v || strchr(v, '/')) {
            fprintf(stderr, "nanochat: --tag expects a checkpoint tag such as d34, got '%s'\n", v);
            return -1;
        }
        a->load.tag = v;
        return 1;
    }
    if ((r = nc_flag_take("--tokenizer", argc, argv, i, &v))) {
        if (r < 0) return -1;
        if (!*v) {
            fprintf(stderr, "nanochat: --tokenizer needs a file name\n");
            return -1;
        }
        a->load.tokenizer_path = v;
        return 1;
    }
    if ((r = nc_flag_take("--random", argc, argv, i, &v))) {
        if (r < 0) return -1;
        a->random_spec = v; /* validated when the model is built */
        return 1;
    }
    if ((r = nc_flag_take("--random-seed", argc, argv, i, &v))) {
        if (r < 0) return -1;
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (!*v || *end || errno || *v == '-') {
            fprintf(stderr, "nanochat: --random-seed expects a non-negative integer, got '%s'\n", v);
            return -1;
        }
        a->random_seed = s;
        return 1;
    }
    if ((r = nc_flag_take("--device", argc, argv, i, &v))) {
        if (r < 0) return -1;
        if (strcmp(v, "cpu") && strcmp(v, "cuda") && strcmp(v, "auto")) {
            fprintf(stderr, "nanochat: --device must be cpu, cuda or auto, got '%s'\n", v);
            return -1;
        }
        a->device = v;
        return 1;
    }
    if ((r = nc_flag_take("--threads", argc, argv, i, &v))) {
        if (r < 0 || nc_flag_int("--threads", v, 0, 1024, &x)) return -1;
        a->threads = (int)x;
        return 1;
    }
    if (!strcmp(argv[*i], "--verbose") || !strcmp(argv[*i], "-v")) {
        a->verbose = true;
        return 1;
    }
    if ((r = nc_flag_take("--weights", argc, argv, i, &v))) {
        nc_weight_format f;
        if (r < 0) return -1;
        if (nc_weight_format_parse(v, &f)) {
            fprintf(stderr, "nanochat: --weights: %s\n", nc_error());
            return -1;
        }
        a->weights = v;
        return 1;
    }
    if (!strcmp(argv[*i], "--lm-head-bf16")) {
        a->lm_head_float = true;
        return 1;
    }
    if ((r = nc_flag_take("--kv-cache", argc, argv, i, &v))) {
        if (r < 0) return -1;
        if (strcmp(v, "bf16") && strcmp(v, "fp8")) {
            fprintf(stderr, "nanochat: --kv-cache must be bf16 or fp8, got '%s'\n", v);
            return -1;
        }
        a->kv_cache = strcmp(v, "fp8") ? NC_KV_CACHE_BF16 : NC_KV_CACHE_FP8;
        return 1;
    }
    return 0;
}

void nc_model_args_help(FILE *f) {
    fprintf(f,
            "model options:\n"
            "  -m, --model PATH     checkpoint dir (model_<step>.pt + meta_<step>.json), nanochat base\n"
            "                       dir (~/.cache/nanochat), flat download, or Hugging Face dir\n"
            "                       (default: $NANOCHAT_MODEL, else models/picochat beside the build)\n"
            "  --step N             checkpoint step (default: the newest)\n"
            "  --source sft|rl|mid|base   which checkpoints of a base dir (default: sft > rl > mid > base)\n"
            "  --tag dN             model tag in a base dir (default: the largest d<N>)\n"
            "  --tokenizer FILE     tokenizer.pkl or tokenizer.json (default: found beside the model)\n"
            "  --random SPEC        random weights instead of -m: d20, d26, d32, d34 or L,C,H[,Hkv]\n"
            "  --random-seed N      seed for --random (default 1)\n"
            "  --device cpu|cuda|auto   where to run (default auto: cuda when a GPU is usable)\n"
            "  --threads N          CPU threads (default 0: all cores)\n"
            "  --weights bf16|int8|fp8   layer and lm_head weights: bf16 = the checkpoint's own float\n"
            "                       weights; int8 / fp8 = 8-bit with per-row scales, quantised at load\n"
            "                       (default: as the checkpoint stores them; docs/quantization.md)\n"
            "  --lm-head-bf16       with --weights int8/fp8: leave lm_head in float\n"
            "  --kv-cache bf16|fp8  KV cache precision: bf16 = full (fp32 on the CPU), fp8 = e4m3\n"
            "                       with per-token scales (default bf16)\n"
            "  -v, --verbose        timings on stderr\n");
}

/* --weights: quantise a float model at load; an 8-bit one stays as it is
 * (asking for another format, or for bf16, is refused: the float weights
 * are not in the file). */
static int apply_weights(const nc_model_args *a, nc_model *m) {
    nc_weight_format f;
    if (!a->weights) {
        if (a->lm_head_float) return nc_fail("--lm-head-bf16 applies with --weights int8 or fp8");
        return 0;
    }
    NC_ASSERT(nc_weight_format_parse(a->weights, &f) == 0);
    if (m->weights != NC_WEIGHTS_FLOAT && f != m->weights)
        return nc_fail("this checkpoint stores %s weights; --weights %s needs the float (bf16/fp32) checkpoint",
                       nc_weight_format_name(m->weights), a->weights);
    return nc_model_quantize(m, f, !a->lm_head_float, a->threads);
}

int nc_model_args_load_located(const nc_model_args *a, nc_model **model, nc_tokenizer **tok, bool tok_required,
                               nc_checkpoint_location *loc) {
    double t0 = nc_now();
    if (nc_runner_load(&a->load, a->random_spec, a->random_seed, model, tok, tok_required, loc) ||
        apply_weights(a, *model)) {
        fprintf(stderr, "nanochat: %s\n", nc_error());
        nc_model_free(*model);
        *model = NULL;
        nc_checkpoint_location_free(loc);
        return -1;
    }
    if (a->verbose) {
        const nc_model_config *c = &(*model)->cfg;
        fprintf(stderr, "loaded %s (%s, nanochat %s, L%d C%d H%d, %s weights) in %.2f s\n", (*model)->source,
                (*model)->format, nc_generation_name(c->generation), c->n_layer, c->n_embd, c->n_head,
                nc_weight_format_name((*model)->weights), nc_now() - t0);
    }
    return 0;
}

int nc_model_args_load(const nc_model_args *a, nc_model **model, nc_tokenizer **tok) {
    nc_checkpoint_location loc;
    int rc = nc_model_args_load_located(a, model, tok, true, &loc);
    nc_checkpoint_location_free(&loc);
    return rc;
}

nc_backend *nc_model_args_backend(const nc_model_args *a, const nc_model *model, const nc_backend_params *p) {
    nc_backend_params params = *p;
    if (params.n_threads == 0) params.n_threads = a->threads;
    if (params.kv_cache == NC_KV_CACHE_BF16) params.kv_cache = a->kv_cache;
    double t0 = nc_now();
    nc_backend *b = nc_backend_create(a->device, model, &params);
    if (!b) {
        fprintf(stderr, "nanochat: %s\n", nc_error());
        return NULL;
    }
    if (a->verbose)
        fprintf(stderr, "backend %s ready in %.2f s\n", b->ops->describe ? b->ops->describe(b) : b->ops->name,
                nc_now() - t0);
    return b;
}

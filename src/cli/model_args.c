/*
 * model_args.c: the model-selection options every subcommand shares
 * (model_args.h), and the one place that turns them into a model,
 * tokenizer and backend.
 *
 * Mirrors how nanochat's scripts pick a checkpoint (`-i sft|rl|mid|base`,
 * `-g d34`, `-s step` in chat_cli.py / chat_web.py via checkpoint_manager),
 * plus --random for checkpoint-free benchmarks. The loading itself (default
 * model, tokenizer check) is engine/runner.c's, shared with the public API;
 * this file adds the flags, models by name from the Hugging Face Hub (-m
 * hf:..., fetched into a local snapshot first by src/hub/), load progress
 * and the CLI's error printing.
 */
#include "model_args.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <string.h>

#include "engine/runner.h"
#include "flags.h"
#include "hub/hub.h"
#include "model/prefetch.h"
#include "util/common.h"
#include "util/progress.h"

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
        a->hub_repo[0] = a->hub_dir[0] = 0;
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
    if (!strcmp(argv[*i], "--quiet") || !strcmp(argv[*i], "-q")) {
        a->quiet = true;
        return 1;
    }
    return 0;
}

void nc_model_args_help(FILE *f) {
    fprintf(f,
            "model options:\n"
            "  -m, --model PATH     hf:OWNER/NAME[@REVISION][/SUBDIR]: a model on the Hugging Face Hub,\n"
            "                       downloaded once into its cache (HF_HOME, HF_HUB_CACHE, HF_TOKEN,\n"
            "                       HF_HUB_OFFLINE=1, HF_ENDPOINT apply); or a checkpoint dir\n"
            "                       (model_<step>.pt + meta_<step>.json), nanochat base dir\n"
            "                       (~/.cache/nanochat), flat download, or Hugging Face dir\n"
            "                       (default: $NANOCHAT_MODEL, else models/picochat beside the build)\n"
            "  --step N             checkpoint step (default: the newest)\n"
            "  --source sft|rl|mid|base   which checkpoints of a base dir (default: sft > rl > mid > base)\n"
            "  --tag dN             model tag in a base dir (default: the largest d<N>)\n"
            "  --tokenizer FILE     tokenizer.pkl or tokenizer.json (default: found beside the model)\n"
            "  --random SHAPE       random weights instead of -m: d20, d26, d32, d34 or L,C,H[,Hkv[,V]]\n"
            "  --random-seed N      seed for --random (default 1)\n"
            "  --device cpu|cuda|auto   where to run (default auto: cuda when a GPU is usable)\n"
            "  --threads N          CPU threads (default 0: one per physical core)\n"
            "  -v, --verbose        timings on stderr\n"
            "  -q, --quiet          no download or load progress on stderr\n");
}

/* ==== models from the Hub ==== */

static volatile sig_atomic_t hub_interrupted;

static void on_sigint(int sig) {
    (void)sig;
    hub_interrupted = 1;
}

int nc_model_args_fetch(nc_model_args *a) {
    if (!nc_hub_is_ref(a->load.path)) return 0;
    if (a->random_spec) {
        fprintf(stderr, "nanochat: -m and --random are mutually exclusive\n");
        return -1;
    }
    nc_hub_options o = {.step = a->load.step, .source = a->load.source, .tag = a->load.tag, .quiet = a->quiet,
                        .interrupted = &hub_interrupted};
    /* Ctrl-C stops the transfers cleanly (partial files stay for resuming) */
    struct sigaction sa = {.sa_handler = on_sigint}, old;
    sigemptyset(&sa.sa_mask);
    hub_interrupted = 0;
    sigaction(SIGINT, &sa, &old);
    nc_hub_result r;
    int rc = nc_hub_resolve(a->load.path, &o, &r);
    sigaction(SIGINT, &old, NULL);
    if (rc) {
        fprintf(stderr, "nanochat: %s\n", nc_error());
        return hub_interrupted ? -2 : -1;
    }
    nc_hub_ref ref;
    nc_hub_ref_parse(a->load.path, &ref);
    snprintf(a->hub_repo, sizeof a->hub_repo, "%s", ref.repo_id);
    snprintf(a->hub_dir, sizeof a->hub_dir, "%s", r.dir);
    a->load.path = a->hub_dir;
    return 0;
}

/* ==== loading ==== */

int nc_model_args_load_located(const nc_model_args *a, nc_model **model, nc_tokenizer **tok, bool tok_required,
                               nc_checkpoint_location *loc) {
    nc_model_args fetched;
    if (nc_hub_is_ref(a->load.path)) {
        fetched = *a;
        if (nc_model_args_fetch(&fetched)) {
            *model = NULL;
            if (tok) *tok = NULL;
            memset(loc, 0, sizeof *loc);
            return -1;
        }
        a = &fetched;
    }
    double t0 = nc_now();
    if (nc_runner_load(&a->load, a->random_spec, a->random_seed, model, tok, tok_required, loc)) {
        fprintf(stderr, "nanochat: %s\n", nc_error());
        nc_model_free(*model);
        *model = NULL;
        nc_checkpoint_location_free(loc);
        return -1;
    }
    if (a->verbose) {
        const nc_model_config *c = &(*model)->cfg;
        fprintf(stderr, "loaded %s (%s, nanochat %s, L%d C%d H%d) in %.2f s\n", (*model)->source,
                (*model)->format, nc_generation_name(c->generation), c->n_layer, c->n_embd, c->n_head,
                nc_now() - t0);
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
    if (!a->quiet && nc_progress_mode_for_stderr(false) == NC_PROGRESS_BARS) {
        nc_progress *p = nc_progress_new(stderr, NC_PROGRESS_BARS);
        nc_model_prefetch(model, p, "reading weights");
        nc_progress_free(p);
    }
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

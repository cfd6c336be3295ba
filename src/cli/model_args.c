/*
 * model_args.c: the model-selection options every subcommand shares
 * (model_args.h).
 *
 * Mirrors how nanochat's scripts pick a checkpoint (`-i sft|rl|mid|base`,
 * `-g d34`, `-s step` in chat_cli.py / chat_web.py via checkpoint_manager),
 * plus --random for checkpoint-free benchmarks. The loading itself (default
 * model, tokenizer check, timings) is engine/bundle.c's, shared with the
 * public API and the server; this file adds the flags, models by name from
 * the Hugging Face Hub (-m hf:..., fetched into a local snapshot first by
 * src/hub/), load progress and the CLI's error printing.
 */
#include "model_args.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <string.h>

#include "flags.h"
#include "hub/hub.h"
#include "model/quantize.h"
#include "util/common.h"
#include "util/progress.h"

void nc_model_args_init(nc_model_args *a) {
    memset(a, 0, sizeof *a);
    a->load.step = -1;
    a->random_seed = 1;
    a->device = "auto";
    a->threads = 0;
}

/* --tensor-parallel N over --device's GPU K (cuda: 0): "cuda:K+K+1+...".
 * Returns 1, or -1 after printing why the two do not go together. */
static int compose_device(nc_model_args *a) {
    a->tp_device[0] = 0;
    if (a->tensor_parallel <= 1) return 1;
    nc_device_name d;
    nc_device_name_parse(a->device, &d);
    if (!strcmp(d.kind, "cpu") || d.n_gpus > 1) {
        fprintf(stderr, "nanochat: --tensor-parallel %d needs --device cuda, cuda:N or auto (got '%s')\n",
                a->tensor_parallel, a->device);
        return -1;
    }
    int len = snprintf(a->tp_device, sizeof a->tp_device, "cuda:%d", d.gpus[0]);
    for (int k = 1; k < a->tensor_parallel; k++)
        len += snprintf(a->tp_device + len, sizeof a->tp_device - (size_t)len, "+%d", d.gpus[0] + k);
    return 1;
}

const char *nc_model_args_device(const nc_model_args *a) { return a->tp_device[0] ? a->tp_device : a->device; }

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
        nc_device_name d;
        if (r < 0) return -1;
        if (nc_device_name_parse(v, &d)) {
            fprintf(stderr, "nanochat: --device: %s\n", nc_error());
            return -1;
        }
        a->device = v;
        return compose_device(a);
    }
    if ((r = nc_flag_take("--tensor-parallel", argc, argv, i, &v))) {
        if (r < 0 || nc_flag_int("--tensor-parallel", v, 1, NC_BACKEND_MAX_GPUS, &x)) return -1;
        a->tensor_parallel = (int)x;
        return compose_device(a);
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
    if (!strcmp(argv[*i], "--deterministic")) {
        a->deterministic = true;
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
            "  --device cpu|cuda|cuda:N|auto   where to run (default auto: cuda when a GPU is usable;\n"
            "                       cuda:N: GPU N)\n"
            "  --tensor-parallel N  one engine over N GPUs (--device's and the next ones), layers split\n"
            "                       across them over NCCL (docs/multi-device.md)\n"
            "  --threads N          CPU threads (default 0: one per physical core)\n"
            "  --weights bf16|int8|fp8   layer and lm_head weights: bf16 = the checkpoint's own float\n"
            "                       weights; int8 / fp8 = 8-bit with per-row scales, quantised at load\n"
            "                       (default: as the checkpoint stores them; docs/quantization.md)\n"
            "  --lm-head-bf16       with --weights int8/fp8: leave lm_head in float\n"
            "  --kv-cache bf16|fp8  KV cache precision: bf16 = full (fp32 on the CPU), fp8 = e4m3\n"
            "                       with per-token scales (default bf16)\n"
            "  --deterministic      a request's tokens do not depend on the other requests in its\n"
            "                       batch, on how its prompt was chunked or on the run (CUDA:\n"
            "                       batch-invariant kernels, slower; the CPU backend always is)\n"
            "  -v, --verbose        timings on stderr\n"
            "  -q, --quiet          no download or load progress on stderr\n");
}

/* ==== speculative decoding ==== */

int nc_model_args_parse_spec(nc_model_args *a, int argc, char **argv, int *i) {
    const char *v = NULL;
    long long x;
    int r;
    if ((r = nc_flag_take("--draft-model", argc, argv, i, &v))) {
        if (r < 0) return -1;
        if (!*v) {
            fprintf(stderr, "nanochat: --draft-model needs a non-empty path\n");
            return -1;
        }
        a->draft_path = v;
        a->draft_dir[0] = 0;
        return 1;
    }
    if ((r = nc_flag_take("--spec-k", argc, argv, i, &v))) {
        if (r < 0 || nc_flag_int("--spec-k", v, 1, 64, &x)) return -1;
        a->spec.max_draft = (int32_t)x;
        return 1;
    }
    if ((r = nc_flag_take("--spec-ngram", argc, argv, i, &v))) {
        if (r < 0 || nc_flag_int("--spec-ngram", v, 0, NC_SPEC_MAX_NGRAM, &x)) return -1;
        a->spec.no_lookup = x == 0;
        a->spec.ngram_max = (int32_t)x;
        return 1;
    }
    if (!strcmp(argv[*i], "--no-spec")) {
        a->spec.off = true;
        return 1;
    }
    if (!strcmp(argv[*i], "--draft-sample")) {
        a->spec.draft_sample = true;
        return 1;
    }
    if (!strcmp(argv[*i], "--spec-always")) {
        a->spec.always = true;
        return 1;
    }
    if (!strcmp(argv[*i], "--spec")) {
        a->spec.force = true;
        return 1;
    }
    return 0;
}

void nc_model_args_spec_help(FILE *f) {
    fprintf(f,
            "speculative decoding (docs/speculative.md; the output is what decoding one token at a\n"
            "time gives, with the same seed too, unless --draft-sample):\n"
            "  --draft-model PATH   a smaller model with the same tokenizer drafts tokens for this one\n"
            "                       to verify (same device; any -m form, hf: included)\n"
            "  --draft-sample       sampled requests: the draft model samples its drafts, kept with\n"
            "                       probability min(1, p/q) (more kept; the distribution is the same,\n"
            "                       but a seed no longer reproduces the output without speculation)\n"
            "  --spec-k N           most draft tokens one sequence verifies per step, 1..64 (default 8)\n"
            "  --spec-ngram N       prompt lookup matches the last N..1 tokens, 0 = off (default 3)\n"
            "  --no-spec            no speculation (on the CPU, prompt lookup is on by default,\n"
            "                       drafting only where the measured cost of verifying is expected\n"
            "                       to pay; on the GPU, whose verification is not bit-exact, only\n"
            "                       with --spec, --spec-always or --draft-model)\n"
            "  --spec               speculate on the GPU too (greedy output may then differ from plain\n"
            "                       decoding where the top two tokens are within bf16 rounding)\n"
            "  --spec-always        verify every draft (up to --spec-k), paying or not: to measure\n"
            "                       acceptance\n");
}

/* ==== models from the Hub ==== */

static volatile sig_atomic_t hub_interrupted;

static void on_sigint(int sig) {
    (void)sig;
    hub_interrupted = 1;
}

/* Resolves and downloads the Hub model `ref` (its checkpoint chosen by
 * step/source/tag) into *r, Ctrl-C stopping the transfers cleanly (partial
 * files stay for resuming). Prints a one-line error and returns -1 on
 * failure, -2 when stopped by Ctrl-C. */
static int fetch_ref(const char *ref, const nc_model_args *a, const nc_load_options *sel, nc_hub_result *r) {
    nc_hub_options o = {.step = sel->step, .source = sel->source, .tag = sel->tag, .quiet = a->quiet,
                        .interrupted = &hub_interrupted};
    struct sigaction sa = {.sa_handler = on_sigint}, old;
    sigemptyset(&sa.sa_mask);
    hub_interrupted = 0;
    sigaction(SIGINT, &sa, &old);
    int rc = nc_hub_resolve(ref, &o, r);
    sigaction(SIGINT, &old, NULL);
    if (rc) {
        fprintf(stderr, "nanochat: %s\n", nc_error());
        return hub_interrupted ? -2 : -1;
    }
    return 0;
}

int nc_model_args_fetch(nc_model_args *a) {
    if (nc_hub_is_ref(a->load.path) && a->random_spec) {
        fprintf(stderr, "nanochat: -m and --random are mutually exclusive\n");
        return -1;
    }
    nc_hub_result r;
    int rc;
    if (nc_hub_is_ref(a->load.path)) {
        if ((rc = fetch_ref(a->load.path, a, &a->load, &r))) return rc;
        nc_hub_ref ref;
        nc_hub_ref_parse(a->load.path, &ref);
        snprintf(a->hub_repo, sizeof a->hub_repo, "%s", ref.repo_id);
        snprintf(a->hub_dir, sizeof a->hub_dir, "%s", r.dir);
        a->load.path = a->hub_dir;
    }
    if (nc_hub_is_ref(a->draft_path)) {
        nc_load_options newest = {.step = -1};
        if ((rc = fetch_ref(a->draft_path, a, &newest, &r))) return rc;
        snprintf(a->draft_dir, sizeof a->draft_dir, "%s", r.dir);
        a->draft_path = a->draft_dir;
    }
    return 0;
}

/* ==== loading ==== */

void nc_model_args_bundle(const nc_model_args *a, nc_bundle_options *o) {
    o->load = a->load;
    o->spec = a->spec;
    o->draft_path = a->draft_path;
    o->random_spec = a->random_spec;
    o->random_seed = a->random_seed;
    o->device = nc_model_args_device(a);
    o->threads = a->threads;
    o->weights = a->weights;
    o->lm_head_float = a->lm_head_float;
    o->kv_cache = a->kv_cache;
    o->deterministic = a->deterministic;
    o->log = a->verbose ? stderr : NULL;
}

/* The bundle options of `a`, with a Hub model fetched first when `fetched`
 * is non-NULL (into *fetched, whose hub_dir the options then point at), and
 * load progress on a terminal unless --quiet (*progress, to free with
 * nc_progress_free). Prints a one-line error and returns -1 when the fetch
 * fails. `progress` may be NULL: no progress then. */
static int bundle_options(const nc_model_args *a, nc_model_args *fetched, nc_bundle_options *o,
                          nc_progress **progress) {
    if (fetched) {
        *fetched = *a;
        if (nc_model_args_fetch(fetched)) return -1;
        a = fetched;
    }
    nc_bundle_options_init(o);
    nc_model_args_bundle(a, o);
    if (progress) {
        *progress = NULL;
        if (!a->quiet && nc_progress_mode_for_stderr(false) == NC_PROGRESS_BARS)
            *progress = nc_progress_new(stderr, NC_PROGRESS_BARS);
        o->progress = *progress;
    }
    return 0;
}

int nc_model_args_open(const nc_model_args *a, int32_t rows, nc_bundle *b) {
    nc_model_args fetched;
    nc_bundle_options o;
    nc_progress *progress;
    if (bundle_options(a, &fetched, &o, &progress)) return -1;
    o.rows = rows;
    int rc = nc_bundle_open(b, &o);
    nc_progress_free(progress);
    if (rc) {
        fprintf(stderr, "nanochat: %s\n", nc_error());
        return -1;
    }
    return 0;
}

int nc_model_args_load_located(const nc_model_args *a, nc_model **model, nc_tokenizer **tok, bool tok_required,
                               nc_checkpoint_location *loc) {
    nc_model_args fetched;
    nc_bundle_options o;
    if (bundle_options(a, &fetched, &o, NULL)) return -1;
    if (nc_bundle_load(&o, model, tok, tok_required, loc)) {
        fprintf(stderr, "nanochat: %s\n", nc_error());
        return -1;
    }
    return 0;
}

int nc_model_args_load(const nc_model_args *a, nc_model **model, nc_tokenizer **tok) {
    return nc_model_args_load_located(a, model, tok, true, NULL);
}

nc_backend *nc_model_args_backend(const nc_model_args *a, const nc_model *model, const nc_backend_params *p) {
    nc_bundle_options o;
    nc_progress *progress;
    bundle_options(a, NULL, &o, &progress); /* the model is loaded: nothing to fetch */
    nc_backend *b = nc_bundle_backend(&o, model, p);
    nc_progress_free(progress);
    if (!b) fprintf(stderr, "nanochat: %s\n", nc_error());
    return b;
}

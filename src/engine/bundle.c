/*
 * bundle.c: model + tokenizer loading with the bundled default, the
 * backend and scheduler sized for one user or for many, and one request
 * run to completion on the caller's thread (bundle.h).
 *
 * Mirrors nanochat's load_model() (checkpoint_manager.py) and the
 * generation loop of chat_cli.py, on top of the batching scheduler.
 */
#include "bundle.h"

#include <libgen.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../model/prefetch.h"
#include "../model/quantize.h"
#include "../util/common.h"
#include "spec_draft.h"

#define DRAFT_ROWS 4 /* rows that draft at once when the bundle serves many (a server) */

/* ==== the bundled default model ==== */

/* The source tree's models/ directory, set by the Makefile for this file
 * only: the fallback for programs that link the library from anywhere. */
#ifndef NC_SOURCE_MODELS_DIR
#define NC_SOURCE_MODELS_DIR ""
#endif

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int nc_default_model_path(char *buf, size_t cap) {
    const char *env = getenv("NANOCHAT_MODEL");
    if (env && *env) {
        int len = snprintf(buf, cap, "%s", env);
        if (len < 0 || (size_t)len >= cap) return nc_fail("$NANOCHAT_MODEL is too long");
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        if (*NC_SOURCE_MODELS_DIR && is_dir(NC_SOURCE_MODELS_DIR "/picochat")) {
            snprintf(buf, cap, "%s", NC_SOURCE_MODELS_DIR "/picochat");
            return 0;
        }
        return nc_fail("no model given (-m PATH or --random SHAPE) and the binary's location is unknown");
    }
    exe[n] = 0;
    char up[PATH_MAX + 4], real[PATH_MAX];
    snprintf(up, sizeof up, "%s/..", dirname(exe));
    int len = snprintf(buf, cap, "%s/models/picochat", realpath(up, real) ? real : up);
    if (len < 0 || (size_t)len >= cap) return nc_fail("the binary's directory path is too long");
    if (!is_dir(buf) && *NC_SOURCE_MODELS_DIR && is_dir(NC_SOURCE_MODELS_DIR "/picochat") &&
        strlen(NC_SOURCE_MODELS_DIR "/picochat") < cap)
        snprintf(buf, cap, "%s", NC_SOURCE_MODELS_DIR "/picochat");
    return 0;
}

/* ==== loading ==== */

/* Loads a tokenizer and checks that it fits `m` (its ids < vocab_size);
 * NULL + nc_error() naming the file otherwise. */
static nc_tokenizer *load_tokenizer(const char *path, const nc_model *m) {
    nc_tokenizer *tok = nc_tokenizer_load(path);
    if (!tok) {
        nc_fail_context("tokenizer %s", path);
        return NULL;
    }
    if (m && nc_tokenizer_vocab_size(tok) > m->cfg.vocab_size) {
        nc_fail("tokenizer %s has %d tokens but the model's vocab_size is %d: they do not belong together",
                path, nc_tokenizer_vocab_size(tok), m->cfg.vocab_size);
        nc_tokenizer_free(tok);
        return NULL;
    }
    return tok;
}

/* A tokenizer for a random model: the given file, else the default
 * model's, if it exists. */
static nc_tokenizer *random_model_tokenizer(const char *tokenizer_path, const nc_model *m) {
    if (tokenizer_path) return load_tokenizer(tokenizer_path, m);
    char path[PATH_MAX];
    if (nc_default_model_path(path, sizeof path) == 0 && is_dir(path)) {
        nc_load_options o = {.path = path, .step = -1};
        nc_checkpoint_location loc = {0};
        if (nc_checkpoint_locate(&o, &loc) == 0 && loc.tokenizer_file) {
            nc_tokenizer *tok = load_tokenizer(loc.tokenizer_file, m);
            nc_checkpoint_location_free(&loc);
            return tok;
        }
        nc_checkpoint_location_free(&loc);
    }
    nc_fail("--random needs a tokenizer: give --tokenizer FILE (none found at the default model %s)", path);
    return NULL;
}

/* The model the options name, and its tokenizer when `tok` is non-NULL
 * (see nc_bundle_load). On failure whatever was loaded is left in *model /
 * *tok / *loc for the caller to free. */
static int load_files(const nc_bundle_options *b, nc_model **model, nc_tokenizer **tok, bool tok_required,
                      nc_checkpoint_location *loc) {
    const nc_load_options *opts = &b->load;
    *model = NULL;
    if (tok) *tok = NULL;
    memset(loc, 0, sizeof *loc);
    loc->step = -1;
    if (b->random_spec && opts->path) return nc_fail("-m and --random are mutually exclusive");
    if (b->random_spec) {
        if (opts->step >= 0 || opts->source || opts->tag)
            return nc_fail("--step, --source and --tag select a checkpoint; they make no sense with --random");
        *model = nc_model_random(b->random_spec, b->random_seed);
        if (!*model) return -1;
        if (tok && !(*tok = random_model_tokenizer(opts->tokenizer_path, *model)) &&
            (tok_required || opts->tokenizer_path))
            return -1;
        return 0;
    }
    nc_load_options o = *opts;
    char path[PATH_MAX];
    if (!o.path) {
        if (nc_default_model_path(path, sizeof path)) return -1;
        struct stat st;
        if (stat(path, &st) != 0)
            return nc_fail("no model given (-m PATH or --random SHAPE), and the bundled default model %s "
                           "does not exist (yet): train or download it there, or set $NANOCHAT_MODEL", path);
        o.path = path;
    }
    *model = nc_model_load(&o, loc);
    if (!*model) return -1;
    if (!tok) return 0;
    if (!loc->tokenizer_file) {
        if (!tok_required) return 0;
        return nc_fail("no tokenizer found for %s (looked beside the model and in <base>/tokenizer/); "
                       "give --tokenizer FILE", o.path);
    }
    *tok = load_tokenizer(loc->tokenizer_file, *model);
    return *tok ? 0 : -1;
}

/* `weights`: quantise a float model at load; an 8-bit one stays as it is
 * (asking it for another format, or for bf16, is refused: its float
 * weights are not in the file). */
static int apply_weights(const nc_bundle_options *o, nc_model *m) {
    nc_weight_format f;
    if (!o->weights) {
        if (o->lm_head_float) return nc_fail("--lm-head-bf16 applies with --weights int8 or fp8");
        return 0;
    }
    if (nc_weight_format_parse(o->weights, &f)) return -1;
    if (m->weights != NC_WEIGHTS_FLOAT && f != m->weights)
        return nc_fail("this checkpoint stores %s weights; --weights %s needs the float (bf16/fp32) checkpoint",
                       nc_weight_format_name(m->weights), o->weights);
    return nc_model_quantize(m, f, !o->lm_head_float, o->threads);
}

int nc_bundle_load(const nc_bundle_options *o, nc_model **model, nc_tokenizer **tok, bool tok_required,
                   nc_checkpoint_location *loc) {
    nc_checkpoint_location here;
    if (!loc) loc = &here;
    double t0 = nc_now();
    int rc = load_files(o, model, tok, tok_required, loc);
    if (!rc) rc = apply_weights(o, *model);
    if (rc || loc == &here) nc_checkpoint_location_free(loc);
    if (rc) {
        nc_model_free(*model);
        *model = NULL;
        if (tok) {
            nc_tokenizer_free(*tok);
            *tok = NULL;
        }
        return -1;
    }
    if (o->log) {
        const nc_model_config *c = &(*model)->cfg;
        fprintf(o->log, "loaded %s (%s, nanochat %s, L%d C%d H%d, %s weights) in %.2f s\n", (*model)->source,
                (*model)->format, nc_generation_name(c->generation), c->n_layer, c->n_embd, c->n_head,
                nc_weight_format_name((*model)->weights), nc_now() - t0);
    }
    return 0;
}

/* ==== backend and scheduler ==== */

void nc_bundle_options_init(nc_bundle_options *o) {
    memset(o, 0, sizeof *o);
    o->load.step = -1;
    o->random_seed = 1;
    o->device = "auto";
}

nc_backend *nc_bundle_backend(const nc_bundle_options *o, const nc_model *model, const nc_backend_params *p) {
    nc_backend_params params = *p;
    if (params.n_threads == 0) params.n_threads = o->threads;
    if (params.kv_cache == NC_KV_CACHE_BF16) params.kv_cache = o->kv_cache;
    params.deterministic = params.deterministic || o->deterministic;
    if (o->progress) nc_model_prefetch(model, o->progress, "reading weights");
    double t0 = nc_now();
    nc_backend *b = nc_backend_create(o->device, model, &params);
    if (b && o->log)
        fprintf(o->log, "backend %s%s ready in %.2f s\n", nc_backend_describe(b),
                b->deterministic ? " (deterministic)" : "", nc_now() - t0);
    return b;
}

void nc_bundle_sizes(const nc_bundle_options *o, int32_t max_context, nc_backend_params *bp,
                         nc_scheduler_params *sp) {
    memset(bp, 0, sizeof *bp);
    memset(sp, 0, sizeof *sp);
    sp->max_context = max_context;
    sp->max_queue = o->max_queue;
    if (o->rows > 0) {
        /* n rows of a full context, plus room for the prefix cache of a chat. */
        int32_t per_seq = (max_context + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
        bp->n_kv_blocks = (o->rows + 2) * per_seq;
        bp->max_seqs = NC_MAX(o->rows, 16);
        sp->max_running = o->rows;
    } else {
        bp->n_kv_blocks = o->kv_blocks;
        bp->max_batch_tokens = o->max_batch_tokens;
        bp->max_seqs = o->max_batch;
        sp->max_running = o->max_batch;
    }
}

/* The options a draft model loads and runs with: the model's device,
 * threads and messages, nothing else of the model's. */
static void draft_options(const nc_bundle_options *o, nc_bundle_options *d) {
    nc_bundle_options_init(d);
    d->load.path = o->draft_path;
    d->device = o->device;
    d->threads = o->threads;
    d->log = o->log;
    d->progress = o->progress;
}

int nc_bundle_load_draft(const nc_bundle_options *o, const nc_model *model, const nc_tokenizer *tok,
                         nc_model **draft) {
    nc_bundle_options d;
    draft_options(o, &d);
    nc_tokenizer *draft_tok = NULL;
    if (nc_bundle_load(&d, draft, &draft_tok, true, NULL)) return nc_fail_context("draft model %s", o->draft_path);
    int rc = nc_spec_tokenizers_match(tok, draft_tok);
    nc_tokenizer_free(draft_tok);
    if (rc) rc = nc_fail_context("draft model %s does not fit this model (a draft must share its tokenizer)",
                                 o->draft_path);
    else if ((*draft)->cfg.vocab_size != model->cfg.vocab_size)
        rc = nc_fail("draft model %s: its vocabulary has %d ids, the model's %d", o->draft_path,
                     (*draft)->cfg.vocab_size, model->cfg.vocab_size);
    if (rc) {
        nc_model_free(*draft);
        *draft = NULL;
    }
    return rc;
}

nc_backend *nc_bundle_draft_backend(const nc_bundle_options *o, const nc_model *draft, int32_t max_context) {
    nc_bundle_options d;
    draft_options(o, &d);
    int32_t rows = o->draft_rows ? o->draft_rows : o->rows > 0 ? o->rows : DRAFT_ROWS;
    int32_t per_seq = (max_context + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
    nc_backend_params bp = {.n_kv_blocks = rows * per_seq, .max_seqs = rows};
    nc_backend *b = nc_bundle_backend(&d, draft, &bp);
    if (!b) nc_fail_context("draft model %s", o->draft_path);
    return b;
}

int nc_bundle_open(nc_bundle *b, const nc_bundle_options *o) {
    memset(b, 0, sizeof *b);
    if (o->max_context < 0)
        return nc_fail("max_context must be >= 0 (0: the model's sequence_len), got %d", o->max_context);
    if (nc_bundle_load(o, &b->model, &b->tok, true, NULL)) return -1;
    int32_t seq = b->model->cfg.sequence_len;
    if (o->max_context > seq && !o->long_context) {
        nc_fail("max_context %d exceeds the model's context of %d tokens (sequence_len)", o->max_context, seq);
        goto failed;
    }
    b->max_context = o->max_context ? o->max_context : seq;
    nc_backend_params bp;
    nc_scheduler_params sp;
    nc_bundle_sizes(o, b->max_context, &bp, &sp);
    sp.spec = o->spec;
    if (o->draft_path && !o->spec.off) {
        /* Before the model's backend, which may take the device's
         * remaining memory for its KV pool. */
        if (nc_bundle_load_draft(o, b->model, b->tok, &b->draft_model) ||
            !(b->draft_backend = nc_bundle_draft_backend(o, b->draft_model, b->max_context)))
            goto failed;
        sp.spec.draft = b->draft_backend;
    }
    if (!(b->backend = nc_bundle_backend(o, b->model, &bp))) goto failed;
    if (!(b->sched = nc_scheduler_create(b->backend, b->tok, &sp))) goto failed;
    return 0;
failed:
    nc_bundle_close(b);
    return -1;
}

void nc_bundle_close(nc_bundle *b) {
    nc_scheduler_free(b->sched);
    nc_backend_free(b->backend);
    nc_backend_free(b->draft_backend);
    nc_model_free(b->draft_model);
    nc_tokenizer_free(b->tok);
    nc_model_free(b->model);
    memset(b, 0, sizeof *b);
}

/* ==== one request ==== */

int nc_bundle_run(nc_bundle *b, const int32_t *prompt, int32_t n, const nc_gen_params *g, nc_gen_callback cb,
                  void *user) {
    return nc_scheduler_run(b->sched, prompt, n, g, cb, user);
}

/*
 * runner.c: model + tokenizer loading with the bundled default, sizes for
 * a single-user engine, and one request run to completion (runner.h).
 *
 * Mirrors nanochat's load_model() (checkpoint_manager.py: pick the
 * checkpoint, load its tokenizer beside it) and the generation loop of
 * chat_cli.py, on top of the batching scheduler.
 */
#include "runner.h"

#include <libgen.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../util/common.h"

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

nc_tokenizer *nc_runner_load_tokenizer(const char *path, const nc_model *m) {
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
    if (tokenizer_path) return nc_runner_load_tokenizer(tokenizer_path, m);
    char path[PATH_MAX];
    if (nc_default_model_path(path, sizeof path) == 0 && is_dir(path)) {
        nc_load_options o = {.path = path, .step = -1};
        nc_checkpoint_location loc = {0};
        if (nc_checkpoint_locate(&o, &loc) == 0 && loc.tokenizer_file) {
            nc_tokenizer *tok = nc_runner_load_tokenizer(loc.tokenizer_file, m);
            nc_checkpoint_location_free(&loc);
            return tok;
        }
        nc_checkpoint_location_free(&loc);
    }
    nc_fail("--random needs a tokenizer: give --tokenizer FILE (none found at the default model %s)", path);
    return NULL;
}

int nc_runner_load(const nc_load_options *opts, const char *random_spec, uint64_t random_seed, nc_model **model,
                   nc_tokenizer **tok, bool tok_required, nc_checkpoint_location *loc) {
    *model = NULL;
    if (tok) *tok = NULL;
    memset(loc, 0, sizeof *loc);
    loc->step = -1;
    if (random_spec && opts->path) return nc_fail("-m and --random are mutually exclusive");
    if (random_spec) {
        if (opts->step >= 0 || opts->source || opts->tag)
            return nc_fail("--step, --source and --tag select a checkpoint; they make no sense with --random");
        *model = nc_model_random(random_spec, random_seed);
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
    *tok = nc_runner_load_tokenizer(loc->tokenizer_file, *model);
    return *tok ? 0 : -1;
}

/* ==== sizes and one request ==== */

void nc_runner_sizes(int32_t max_context, int n_rows, nc_backend_params *bp, nc_scheduler_params *sp) {
    int32_t per_seq = (max_context + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
    /* n rows of a full context, plus room for the prefix cache of a chat. */
    memset(bp, 0, sizeof *bp);
    bp->n_kv_blocks = (n_rows + 2) * per_seq;
    bp->max_seqs = NC_MAX(n_rows, 16);
    memset(sp, 0, sizeof *sp);
    sp->max_context = max_context;
    sp->max_running = NC_MAX(n_rows, 1);
}

int nc_runner_run(nc_scheduler *s, const int32_t *prompt, int32_t n, const nc_gen_params *g, nc_gen_callback cb,
                  void *user) {
    if (nc_scheduler_submit(s, prompt, n, g, cb, user, NULL)) return -1;
    /* A failed step has already failed and retired its requests (their rows
     * got NC_FINISH_ERROR events): keep stepping until nothing is left. */
    while (nc_scheduler_step(s) != 0) {}
    return 0;
}

/*
 * model_args.h: the options every model-using subcommand shares, turned
 * into an engine bundle (engine/bundle.h) or its first parts, with the
 * CLI's error printing.
 *
 *   -m PATH            checkpoint dir, nanochat base dir, flat or HF download,
 *                      or hf:OWNER/NAME[@REVISION][/SUBDIR] from the Hugging Face Hub
 *   --step N --source sft|rl|mid|base --tag dN --tokenizer FILE
 *   --random SHAPE     random weights instead of -m (d20, d34, L,C,H[,Hkv[,V]])
 *   --device cpu|cuda|cuda:N|auto   --tensor-parallel N   --threads N
 *   --verbose   --quiet
 *   --weights bf16|int8|fp8 [--lm-head-bf16]   --kv-cache bf16|fp8   --deterministic
 * With neither -m nor --random, the bundled default model is used
 * (models/picochat beside the binary's build dir, or $NANOCHAT_MODEL).
 *
 * Speculative decoding (chat, generate, serve; docs/speculative.md):
 *   --draft-model PATH --draft-sample --no-spec --spec --spec-k N --spec-ngram N --spec-always
 */
#ifndef NC_CLI_MODEL_ARGS_H
#define NC_CLI_MODEL_ARGS_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "backend/backend.h"
#include "engine/bundle.h"
#include "hub/hub_ref.h"
#include "model/loader.h"
#include "tokenizer/tokenizer.h"

typedef struct {
    nc_load_options load;
    const char *random_spec; /* --random SHAPE, or NULL */
    uint64_t random_seed;    /* --random-seed N (default 1) */
    const char *device;      /* --device, default "auto" */
    int tensor_parallel;     /* --tensor-parallel N (0: off) */
    char tp_device[128];     /* the device name it makes of --device: "cuda:K+K+1+..." */
    int threads;             /* --threads, 0 = all cores */
    bool verbose;            /* --verbose: timings on stderr */
    bool quiet;              /* --quiet: no download or load progress */
    char hub_repo[200];      /* "owner/name" once an hf: model was fetched, else "" */
    char hub_dir[PATH_MAX];  /* its local snapshot folder (load.path then points here) */
    const char *weights;     /* --weights bf16|int8|fp8, or NULL: as the checkpoint stores them */
    bool lm_head_float;      /* --lm-head-bf16: leave lm_head unquantised */
    nc_kv_cache_format kv_cache; /* --kv-cache bf16|fp8 */
    bool deterministic;      /* --deterministic: batch-invariant kernels */
    const char *draft_path;  /* --draft-model PATH, or NULL */
    char draft_dir[PATH_MAX];/* an hf: draft model's local snapshot (draft_path then points here) */
    nc_spec_params spec;     /* --no-spec, --spec, --spec-k, --spec-ngram, --draft-sample, --spec-always */
} nc_model_args;

void nc_model_args_init(nc_model_args *a);

/* If argv[*i] is one of the options above, consumes it (and its value,
 * advancing *i) and returns 1; returns 0 if it is not; -1 after printing a
 * clear error for a bad value or a missing argument. */
int nc_model_args_parse(nc_model_args *a, int argc, char **argv, int *i);

/* Prints the options above, for a subcommand's --help. */
void nc_model_args_help(FILE *f);

/* Like nc_model_args_parse, for the speculative decoding options (the
 * commands that generate: chat, generate, serve). */
int nc_model_args_parse_spec(nc_model_args *a, int argc, char **argv, int *i);
void nc_model_args_spec_help(FILE *f);

/* If -m (or --draft-model) names a Hub model (hf:...), resolves it and
 * downloads what the cache lacks (src/hub/hub.h), then points load.path
 * (draft_path) at the local snapshot; nothing otherwise, or when already done. Ctrl-C stops the
 * download (partial files are kept for the next run). Prints a one-line
 * error and returns -1 on failure, -2 when stopped by Ctrl-C. The load functions below call it
 * themselves; a command calls it first to fetch before doing anything
 * else (serve: before it listens). */
int nc_model_args_fetch(nc_model_args *a);

/* The device name --device and --tensor-parallel select together. */
const char *nc_model_args_device(const nc_model_args *a);

/* Sets the bundle options these flags select (what to load, the device
 * and threads, speculation, --verbose as a log on stderr); the sizes are
 * left as they are. */
void nc_model_args_bundle(const nc_model_args *a, nc_bundle_options *o);

/* Opens the whole bundle, sized for `rows` samples of one conversation at
 * a time. Prints a one-line error and returns -1 on failure (nothing to
 * close then). With --verbose, prints the load and backend times. */
int nc_model_args_open(const nc_model_args *a, int32_t rows, nc_bundle *b);

/* Loads the model and, if `tok` is non-NULL, its tokenizer (required:
 * fails if none is found), and converts its weights as --weights asks
 * (model/quantize.h). Prints a one-line error and returns -1 on failure.
 * With --verbose, prints the load time. */
int nc_model_args_load(const nc_model_args *a, nc_model **model, nc_tokenizer **tok);

/* Like nc_model_args_load, but also returns where the files were found
 * (`loc`, zeroed for --random; free with nc_checkpoint_location_free), and
 * with tok_required false a missing tokenizer just leaves *tok NULL (a
 * tokenizer that exists but does not load is still an error). */
int nc_model_args_load_located(const nc_model_args *a, nc_model **model, nc_tokenizer **tok, bool tok_required,
                               nc_checkpoint_location *loc);

/* Creates the backend named by --device for `model`. Prints errors; with
 * --verbose, the time it took. On a terminal (unless --quiet), weights not
 * yet in memory are read first with a progress bar: the backend's own pass
 * over them would otherwise be a silent wait of seconds for a large model on
 * a cold disk. */
nc_backend *nc_model_args_backend(const nc_model_args *a, const nc_model *model,
                                  const nc_backend_params *p);

#endif /* NC_CLI_MODEL_ARGS_H */

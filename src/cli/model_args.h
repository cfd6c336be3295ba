/*
 * model_args.h: the options every model-using subcommand shares, and the
 * one place that turns them into a loaded model, tokenizer and backend.
 *
 *   -m PATH            checkpoint dir, nanochat base dir, flat or HF download
 *   --step N --source sft|rl|mid|base --tag dN --tokenizer FILE
 *   --random SPEC      random weights instead of -m (d20, d34, L,C,H[,Hkv])
 *   --device cpu|cuda|auto   --threads N   --verbose
 *   --weights bf16|int8|fp8 [--lm-head-bf16]   --kv-cache bf16|fp8
 * With neither -m nor --random, the bundled default model is used
 * (models/picochat beside the binary's build dir, or $NANOCHAT_MODEL).
 */
#ifndef NC_CLI_MODEL_ARGS_H
#define NC_CLI_MODEL_ARGS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "backend/backend.h"
#include "model/loader.h"
#include "tokenizer/tokenizer.h"

typedef struct {
    nc_load_options load;
    const char *random_spec; /* --random SPEC, or NULL */
    uint64_t random_seed;    /* --random-seed N (default 1) */
    const char *device;      /* --device, default "auto" */
    int threads;             /* --threads, 0 = all cores */
    bool verbose;            /* --verbose: timings on stderr */
    const char *weights;     /* --weights bf16|int8|fp8, or NULL: as the checkpoint stores them */
    bool lm_head_float;      /* --lm-head-bf16: leave lm_head unquantised */
    nc_kv_cache_format kv_cache; /* --kv-cache bf16|fp8 */
} nc_model_args;

void nc_model_args_init(nc_model_args *a);

/* If argv[*i] is one of the options above, consumes it (and its value,
 * advancing *i) and returns 1; returns 0 if it is not; -1 after printing a
 * clear error for a bad value or a missing argument. */
int nc_model_args_parse(nc_model_args *a, int argc, char **argv, int *i);

/* Prints the options above, for a subcommand's --help. */
void nc_model_args_help(FILE *f);

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

/* Creates the backend named by --device for `model` (with --threads and
 * --kv-cache unless `p` sets them). Prints errors. */
nc_backend *nc_model_args_backend(const nc_model_args *a, const nc_model *model,
                                  const nc_backend_params *p);

#endif /* NC_CLI_MODEL_ARGS_H */

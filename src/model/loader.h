/*
 * loader.h: from what the user typed after -m to an nc_model.
 *
 * Accepted layouts (docs/formats.md, Locating a checkpoint):
 *   - a checkpoint directory with model_<step>.pt + meta_<step>.json
 *     (newest step unless --step), tokenizer beside it or in ../../tokenizer/;
 *   - a nanochat base dir (~/.cache/nanochat layout): picks chatsft > chatrl
 *     > mid > base checkpoints and the largest d<N> tag (--source / --tag
 *     override), tokenizer in <base>/tokenizer/tokenizer.pkl;
 *   - a flat download directory holding the three files;
 *   - a Hugging Face directory: config.json (model_type "nanochat"),
 *     model.safetensors or sharded *.safetensors + index, tokenizer.json;
 *   - a `nanochat quantize` directory: model.safetensors (nanochat names,
 *     8-bit matrices + scales) + meta.json + tokenizer.
 */
#ifndef NC_MODEL_LOADER_H
#define NC_MODEL_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

typedef struct {
    const char *path;           /* -m PATH (required) */
    int step;                   /* --step N, or -1 for the newest */
    const char *source;         /* --source sft|rl|mid|base, or NULL for the best */
    const char *tag;            /* --tag d34, or NULL for the largest */
    const char *tokenizer_path; /* --tokenizer FILE, or NULL to find it */
} nc_load_options;

typedef struct {
    char *model_file;     /* the .pt file, or the first .safetensors shard */
    char *config_file;    /* meta_<step>.json or config.json */
    char *tokenizer_file; /* tokenizer.pkl or tokenizer.json; NULL if none found */
    char *format;         /* "nanochat", "huggingface" or "nanochat-safetensors" (`nanochat quantize`) */
    int step;             /* -1 for Hugging Face copies */
} nc_checkpoint_location;

/* Resolves the layout above into concrete files, or fails with a message
 * that says what was looked for and where. */
int nc_checkpoint_locate(const nc_load_options *opts, nc_checkpoint_location *loc);
void nc_checkpoint_location_free(nc_checkpoint_location *loc);

/* Locates and loads a model (mmapping its tensors). NULL + nc_error() on
 * failure. */
nc_model *nc_model_load(const nc_load_options *opts, nc_checkpoint_location *loc_out);

/* Sizes for nc_model_from_tensors from the text of a nanochat
 * meta_<step>.json ("model_config": sequence_len, vocab_size, n_layer,
 * n_head, n_kv_head, n_embd, [window_pattern]) or of a Hugging Face
 * config.json (model_type "nanochat"; V1 only, so it also sets generation
 * V1 and refuses a rope theta, softcap or MLP width nanochat never used).
 * `file` names the source in error messages. */
int nc_config_parse_meta(const char *json, size_t len, const char *file, nc_model_config *sizes);
int nc_config_parse_hf(const char *json, size_t len, const char *file, nc_model_config *sizes);

/* Every weight file of a located checkpoint (the .pt, or all safetensors
 * shards), malloc'ed array of malloc'ed paths; free with
 * nc_checkpoint_files_free. */
int nc_checkpoint_weight_files(const nc_checkpoint_location *loc, char ***files, int *n);
void nc_checkpoint_files_free(char **files, int n);

/* A model with random weights (never zeros) of a named shape: "d20", "d26",
 * "d32", "d34", or "L,C,H[,Hkv[,V]]" (D = C/H must be even). V1 architecture,
 * bf16 matrices, vocab V (default 65536), sequence_len 2048. Deterministic in `seed`. */
nc_model *nc_model_random(const char *spec, uint64_t seed);

#endif /* NC_MODEL_LOADER_H */

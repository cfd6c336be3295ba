/*
 * hub_select.h: which files of a repository the loader needs, decided from
 * the Hub's file list before anything is downloaded, by the rules the
 * locator (model/locate.c) applies to a local folder:
 *
 *   - a nanochat checkpoint folder: model_<step>.pt (the newest, or --step)
 *     + meta_<step>.json + the tokenizer found beside it
 *     (tokenizer.pkl, tokenizer/tokenizer.pkl, ../../tokenizer/tokenizer.pkl
 *     inside a *_checkpoints tree, tokenizer.json);
 *   - a Hugging Face folder: config.json + model.safetensors, or the index
 *     + the shards it names (a second step: the index must be read first)
 *     + tokenizer.json or tokenizer.pkl;
 *   - a nanochat base folder: {chatsft,chatrl,mid,base}_checkpoints/<tag>/
 *     (best source, largest d<N> tag, or --source / --tag) +
 *     tokenizer/tokenizer.pkl.
 * Nothing else: no optimizer shards, older steps, images or READMEs.
 */
#ifndef NC_HUB_HUB_SELECT_H
#define NC_HUB_HUB_SELECT_H

#include "hub_api.h"

typedef struct {
    char **paths;    /* repository paths to download (malloc'ed) */
    int n, cap;
    char *index;     /* a safetensors index whose shards are still to add, or NULL */
    char *tokenizer; /* the tokenizer's repository path, or NULL when there is none */
} nc_hub_selection;

typedef struct {
    const char *subdir; /* "" or the folder after hf:owner/name */
    int step;           /* --step, or -1 */
    const char *source; /* --source, or NULL */
    const char *tag;    /* --tag, or NULL */
} nc_hub_select_options;

/* Picks the files. Fails with a message that names the repository's
 * folders holding models, or lists what it holds, when no model is there. */
int nc_hub_select(const nc_hub_listing *l, const char *repo_label, const nc_hub_select_options *o,
                  nc_hub_selection *out);

/* Adds the shards named by the "weight_map" of the index (its text); every
 * shard must be a safe path present in the listing. */
int nc_hub_select_shards(const nc_hub_listing *l, const char *index_json, size_t len, nc_hub_selection *sel);

void nc_hub_selection_free(nc_hub_selection *s);

#endif /* NC_HUB_HUB_SELECT_H */

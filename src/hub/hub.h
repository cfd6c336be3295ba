/*
 * hub.h: `-m hf:OWNER/NAME[@REVISION][/SUBDIR]` -> a local folder the
 * locator (model/locate.c) can read, downloading what is missing.
 *
 * Online: the Hub's API resolves the revision to a commit and lists its
 * files; hub_select.h picks the ones the loader needs; hub_download.h
 * fetches those the cache lacks into huggingface_hub's cache layout
 * (hub_cache.h); the answer is <cache>/models--O--N/snapshots/<commit>/SUBDIR.
 * Offline (HF_HUB_OFFLINE=1), or when the Hub cannot be reached and the
 * cache has the revision: the cached snapshot, and a note saying so.
 *
 * Environment: HF_ENDPOINT, HF_TOKEN (or HF_TOKEN_PATH / $HF_HOME/token),
 * HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, as huggingface_hub reads them.
 */
#ifndef NC_HUB_HUB_H
#define NC_HUB_HUB_H

#include <limits.h>
#include <signal.h>
#include <stdbool.h>

#include "hub_ref.h"

typedef struct {
    int step;                           /* --step N, or -1 */
    const char *source, *tag;           /* --source / --tag, or NULL */
    bool quiet;                         /* no progress, no notes */
    bool tokenizer_only;                /* fetch only what finds the tokenizer */
    volatile sig_atomic_t *interrupted; /* set by the caller's SIGINT handler, or NULL */
} nc_hub_options;

typedef struct {
    char dir[PATH_MAX];       /* the snapshot folder (+ SUBDIR): give it to the locator */
    char tokenizer[PATH_MAX]; /* the tokenizer file when known, else "" */
    char commit[41];
    bool from_cache_only;     /* the Hub was not asked (offline) or not reachable */
} nc_hub_result;

/* Resolves and downloads `spec` ("hf:..."). Progress goes to stderr
 * (bars on a terminal, plain lines otherwise, nothing when quiet). Returns
 * 0, or -1 with a message (nc_error) that says what to do. */
int nc_hub_resolve(const char *spec, const nc_hub_options *o, nc_hub_result *out);

/* Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set to a true value
 * (1, ON, YES, TRUE, any case), as huggingface_hub reads it. */
bool nc_hub_offline(void);

#endif /* NC_HUB_HUB_H */

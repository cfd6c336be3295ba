/*
 * bundle.h: the model, its tokenizer, the backend that runs it and the
 * scheduler that drives the backend, opened and closed as one. Every
 * front end holds one: the CLI (`nanochat chat`, `generate`), the public
 * C API's nc_engine and the server, whose engine thread opens it after
 * the socket is listening.
 *
 * Mirrors nanochat's load_model() (checkpoint_manager.py: pick the
 * checkpoint, load its tokenizer beside it) followed by
 * Engine(model, tokenizer), on top of the batching scheduler. Opening
 * prints nothing (front ends report errors their own way: stderr, the
 * public error buffer) except the optional `log` lines.
 */
#ifndef NC_ENGINE_BUNDLE_H
#define NC_ENGINE_BUNDLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../backend/backend.h"
#include "../model/loader.h"
#include "../util/progress.h"
#include "../tokenizer/tokenizer.h"
#include "scheduler.h"

/* The bundled default model's directory: $NANOCHAT_MODEL if set (and only
 * it), else models/picochat beside the binary's directory
 * (<exe dir>/../models/picochat), else the models/picochat of the source
 * tree this library was built from. When none exists, the binary-relative
 * path is returned (so errors name where it was expected). */
int nc_default_model_path(char *buf, size_t cap);

typedef struct {
    /* What to load. */
    nc_load_options load;     /* the checkpoint (load.path NULL: the bundled default model) */
    const char *random_spec;  /* non-NULL: random weights of this shape instead (nc_model_random);
                                 the tokenizer is load.tokenizer_path, else the default model's */
    uint64_t random_seed;
    const char *weights;      /* "bf16", "int8", "fp8" (model/quantize.h), or NULL: as the checkpoint
                                 stores them; a float model is quantised at load */
    bool lm_head_float;       /* with an 8-bit `weights`: leave lm_head in float */
    /* Where to run it. */
    const char *device;       /* "cpu", "cuda" or "auto" (NULL: "auto") */
    int threads;              /* CPU threads (0: all cores) */
    nc_kv_cache_format kv_cache; /* the KV cache's precision (NC_KV_CACHE_BF16: full) */
    bool deterministic;       /* batch-invariant kernels (nc_backend_params.deterministic) */
    /* How much at once. */
    int max_context;          /* positions per sequence (0: the model's sequence_len) */
    bool long_context;        /* a max_context past sequence_len is allowed (up to the backend's
                                 rotary tables, 10 x, as nanochat's); else it is refused */
    int rows;                 /* > 0: one conversation at a time (CLI, C API): `rows` samples of
                                 a full context decoding together, plus room for a chat's prefix
                                 cache so its next turn prefills only the new tokens; the three
                                 sizes below are then ignored */
    int max_batch;            /* rows decoding at once (0: the backend's default) */
    int max_batch_tokens;     /* tokens per forward pass (0: the backend's default) */
    int kv_blocks;            /* KV pool size in blocks (0: the backend picks) */
    int max_queue;            /* waiting requests before submit refuses (0: the scheduler's default) */
    /* Speculative decoding (docs/speculative.md). */
    nc_spec_params spec;      /* its settings (spec.draft is set by open) */
    const char *draft_path;   /* a draft model (a checkpoint as load.path takes, with its tokenizer,
                                 which must be the model's), run on the same device; NULL: none */
    int draft_rows;           /* rows that may draft at once, each with a full context of the draft's
                                 KV (0: `rows`, else 4) */
    /* What to say. */
    FILE *log;                /* non-NULL: a line once the model is loaded and once the backend is
                                 ready, each with the seconds it took (--verbose) */
    nc_progress *progress;    /* non-NULL: weights not yet in memory are read before the backend is
                                 created, shown on it (the backend's own first pass over a cold
                                 multi-gigabyte checkpoint would be seconds of silence) */
} nc_bundle_options;

/* Zero sizes, load.step -1 (the newest checkpoint), random_seed 1,
 * device "auto". */
void nc_bundle_options_init(nc_bundle_options *o);

typedef struct {
    nc_model *model;       /* tensors mmapped */
    nc_tokenizer *tok;     /* read-only once loaded: safe to share between threads */
    nc_backend *backend;
    nc_scheduler *sched;   /* borrows backend and tok (and the draft backend) */
    int32_t max_context;   /* positions per sequence, as resolved */
    nc_model *draft_model; /* with draft_path: the draft model and its backend */
    nc_backend *draft_backend;
} nc_bundle;

/* Loads the model and its tokenizer (and a draft model, refused unless
 * its tokenizer is the model's), creates the backends and the
 * scheduler. Any thread may open a bundle (the server does it on its
 * engine thread). On failure returns -1 with nc_error() set and *b zeroed:
 * nothing is left to close. */
int nc_bundle_open(nc_bundle *b, const nc_bundle_options *o);
/* Frees what open created, in reverse order; a zeroed bundle is fine. */
void nc_bundle_close(nc_bundle *b);

/* The first two steps of open, for front ends that need a model and a
 * backend but no scheduler (`nanochat forward`, `bench`, `info`).
 *
 * nc_bundle_load loads the model (its weights converted as o->weights
 * asks) and, if `tok` is non-NULL, its tokenizer:
 * a missing one is an error when `tok_required`, else *tok stays NULL (a
 * tokenizer that exists but does not load is always an error). `loc` (may
 * be NULL) receives where the files were found, zeroed for a random model;
 * free it with nc_checkpoint_location_free. On failure returns -1 with
 * nc_error() set and nothing left to free. */
int nc_bundle_load(const nc_bundle_options *o, nc_model **model, nc_tokenizer **tok, bool tok_required,
                   nc_checkpoint_location *loc);
/* Creates the backend of o->device for `model`, sized by `p` (its zero
 * n_threads meaning o->threads, its default bf16 kv_cache o->kv_cache,
 * deterministic when either asks).
 * NULL + nc_error() on failure. */
nc_backend *nc_bundle_backend(const nc_bundle_options *o, const nc_model *model, const nc_backend_params *p);

/* The draft model of o->draft_path, in two steps as nc_bundle_open takes
 * them, for front ends that run several backends of one model (the
 * server's engines). nc_bundle_load_draft loads it, refused unless its
 * tokenizer and vocabulary are those of `model` / `tok`; -1 + nc_error()
 * with *draft NULL on failure. nc_bundle_draft_backend creates its backend
 * on o->device (o->threads), sized for o->draft_rows rows of
 * `max_context` positions; create it before the model's backend, which
 * may take the device's remaining memory for its KV pool. NULL +
 * nc_error() on failure. */
int nc_bundle_load_draft(const nc_bundle_options *o, const nc_model *model, const nc_tokenizer *tok,
                         nc_model **draft);
nc_backend *nc_bundle_draft_backend(const nc_bundle_options *o, const nc_model *draft, int32_t max_context);

/* The backend and scheduler sizes nc_bundle_open uses for `o` and a
 * context resolved to `max_context`, for front ends that create the
 * backend and scheduler themselves (`nanochat eval`). */
void nc_bundle_sizes(const nc_bundle_options *o, int32_t max_context, nc_backend_params *bp,
                     nc_scheduler_params *sp);

/* nc_scheduler_run on the bundle's scheduler: one request run to the end
 * on this thread. */
int nc_bundle_run(nc_bundle *b, const int32_t *prompt, int32_t n, const nc_gen_params *g, nc_gen_callback cb,
                  void *user);

#endif /* NC_ENGINE_BUNDLE_H */

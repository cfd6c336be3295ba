/*
 * runner.h: what every single-user front end of the engine shares: finding
 * and loading a model with its tokenizer (the bundled default included),
 * sizing a backend and scheduler for a few rows of full context, and
 * running one request to completion on the caller's thread.
 *
 * Used by the CLI (`nanochat chat`, `generate`, via cli/model_args.c and
 * cli/gen_run.c) and by the public C API (src/api/). Mirrors what
 * nanochat's chat_cli.py does with load_model() + Engine.generate(): one
 * conversation at a time, tokens reported as they come. The server has its
 * own sizing (many clients) but the same scheduler.
 */
#ifndef NC_ENGINE_RUNNER_H
#define NC_ENGINE_RUNNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../backend/backend.h"
#include "../model/loader.h"
#include "../tokenizer/tokenizer.h"
#include "scheduler.h"

/* The bundled default model's directory: $NANOCHAT_MODEL if set (and only
 * it), else models/picochat beside the binary's directory
 * (<exe dir>/../models/picochat), else the models/picochat of the source
 * tree this library was built from. When none exists, the binary-relative
 * path is returned (so errors name where it was expected). */
int nc_default_model_path(char *buf, size_t cap);

/* Loads a tokenizer and checks that it fits `m` (its ids < vocab_size);
 * NULL + nc_error() naming the file otherwise. `m` may be NULL. */
nc_tokenizer *nc_runner_load_tokenizer(const char *path, const nc_model *m);

/*
 * Loads the model named by `o` (o->path NULL: the bundled default model,
 * see nc_default_model_path) or, with `random_spec`, a random one
 * (nc_model_random; its tokenizer is o->tokenizer_path, else the default
 * model's). If `tok` is non-NULL the tokenizer is loaded too: a missing
 * one is an error when `tok_required`, else *tok stays NULL. `loc` (zeroed
 * first; may stay zero for a random model) receives where the files were
 * found; free it with nc_checkpoint_location_free. On failure returns -1
 * with nc_error() set; whatever was loaded is left in *model / *tok for
 * the caller to free.
 */
int nc_runner_load(const nc_load_options *o, const char *random_spec, uint64_t random_seed, nc_model **model,
                   nc_tokenizer **tok, bool tok_required, nc_checkpoint_location *loc);

/* Backend and scheduler sizes for up to `n_rows` rows of `max_context`
 * tokens each at once, plus room for a conversation's prefix cache (so the
 * next turn of a chat prefills only its new tokens). */
void nc_runner_sizes(int32_t max_context, int n_rows, nc_backend_params *bp, nc_scheduler_params *sp);

/* Submits one request and steps the scheduler on this thread until it has
 * no work left; `cb` runs here, inside the steps. The caller must be the
 * scheduler's only stepping thread. Returns -1 with nc_error() when the
 * request is refused (nothing ran, `cb` never called), else 0 once every
 * row finished: a backend failure reaches the rows as NC_FINISH_ERROR
 * events (the scheduler fails and retires the requests of a failed step). */
int nc_runner_run(nc_scheduler *s, const int32_t *prompt, int32_t n, const nc_gen_params *g, nc_gen_callback cb,
                  void *user);

#endif /* NC_ENGINE_RUNNER_H */

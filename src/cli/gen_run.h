/*
 * gen_run.h: what `nanochat chat` and `nanochat generate` share: the
 * sampling flags, running one request through an engine bundle
 * (model_args.h: nc_model_args_open) to completion while streaming its text (tool calls shown as
 * `[calculator: 37*41 = 1517]`, never as raw special tokens), and the
 * --json / --verbose reports.
 *
 * Mirrors nanochat's scripts/chat_cli.py generation loop (Engine.generate
 * with one sample, tokens printed as they come), on top of the same
 * scheduler the server uses.
 */
#ifndef NC_CLI_GEN_RUN_H
#define NC_CLI_GEN_RUN_H

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

#include "engine/bundle.h"
#include "engine/scheduler.h"
#include "engine/token_text.h"
#include "model_args.h"

/* ==== flags ==== */

/* If argv[*i] is a model or speculation option (model_args.h) or a
 * sampling flag (-n, --temperature, --top-k, --top-p, --min-p, --seed,
 * --max-tokens, --no-calculator), consumes it into *ma or *g and returns
 * 1; 0 if it is neither; -1 after printing a one-line error. */
int nc_cli_gen_parse(nc_model_args *ma, nc_gen_params *g, int argc, char **argv, int *i);
void nc_cli_gen_help(FILE *f);

/* ==== one request ==== */

typedef struct {
    nc_tokens tokens;        /* generated ids: forced tool tokens and the terminal one included */
    nc_finish_reason finish;
    char error[256];
} nc_cli_row;

typedef struct {
    nc_cli_row *rows;        /* [n] */
    int n;
    int32_t n_prompt, n_cached;
    double t_submit, t_first, t_last;
    FILE *stream;            /* where row 0's text is shown live, or NULL */
    nc_token_text display;   /* row 0's tokens -> text, tool calls as [calculator: EXPR = RESULT] */
    volatile sig_atomic_t *interrupt; /* nonzero: stop every row */
} nc_cli_run;

/* Runs prompt[0..n) with params `g` to completion. If `stream` is
 * non-NULL, row 0's text is printed there as it arrives. `interrupt` (may
 * be NULL) is polled at every token: when it becomes nonzero the request
 * is cancelled (finish "cancelled"). Returns 0 once every row finished
 * (see rows[].finish for errors), -1 (message printed) if the request was
 * refused. */
int nc_cli_run_request(nc_bundle *e, const int32_t *prompt, int32_t n, const nc_gen_params *g, FILE *stream,
                       volatile sig_atomic_t *interrupt, nc_cli_run *run);
void nc_cli_run_free(nc_cli_run *run);

/* {"text", "tokens", "finish_reason", "tool_calls", "usage"} for one row,
 * or {"choices": [...], "usage"} for several; one line on `f`. */
void nc_cli_print_json(const nc_cli_run *run, const nc_tokenizer *tok, FILE *f);
/* --verbose: prefill and decode speed on `f`. */
void nc_cli_print_timing(const nc_cli_run *run, FILE *f);
/* --verbose: the engine's speculation so far (tokens per verifying step,
 * drafts accepted by proposer). */
void nc_cli_print_spec(nc_bundle *e, FILE *f);

/* The text of a row (terminal token dropped, special tokens as their
 * text), malloc'ed. */
char *nc_cli_row_text(const nc_cli_row *row, const nc_tokenizer *tok);

#endif /* NC_CLI_GEN_RUN_H */

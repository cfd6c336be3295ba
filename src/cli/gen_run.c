/*
 * gen_run.c: sampling flags, one request run through the scheduler with
 * live display, and the JSON / timing reports (gen_run.h).
 */
#include "gen_run.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "flags.h"
#include "util/common.h"

/* ==== flags ==== */

int nc_cli_gen_parse(nc_model_args *ma, nc_gen_params *g, int argc, char **argv, int *i) {
    const char *v;
    int r = nc_model_args_parse(ma, argc, argv, i);
    if (!r) r = nc_model_args_parse_spec(ma, argc, argv, i);
    if (r) return r;
    long long x;
    if ((r = nc_flag_take("-n", argc, argv, i, &v)) || (r = nc_flag_take("--samples", argc, argv, i, &v))) {
        if (r < 0 || nc_flag_int("-n", v, 1, 256, &x)) return -1;
        g->n = (int32_t)x;
        return 1;
    }
    if ((r = nc_flag_take("--temperature", argc, argv, i, &v)) || (r = nc_flag_take("-t", argc, argv, i, &v)))
        return r < 0 || nc_flag_float("--temperature", v, 0, 10, false, &g->temperature) ? -1 : 1;
    if ((r = nc_flag_take("--top-k", argc, argv, i, &v)) || (r = nc_flag_take("-k", argc, argv, i, &v))) {
        if (r < 0 || nc_flag_int("--top-k", v, 0, 1 << 30, &x)) return -1;
        g->top_k = (int32_t)x;
        return 1;
    }
    if ((r = nc_flag_take("--top-p", argc, argv, i, &v))) return r < 0 || nc_flag_float("--top-p", v, 0, 1, true, &g->top_p) ? -1 : 1;
    if ((r = nc_flag_take("--min-p", argc, argv, i, &v))) return r < 0 || nc_flag_float("--min-p", v, 0, 1, false, &g->min_p) ? -1 : 1;
    if ((r = nc_flag_take("--seed", argc, argv, i, &v))) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (r < 0 || !*v || *end || errno || *v == '-') {
            if (r >= 0) fprintf(stderr, "nanochat: --seed expects a non-negative integer, got '%s'\n", v);
            return -1;
        }
        g->seed = s;
        return 1;
    }
    if ((r = nc_flag_take("--max-tokens", argc, argv, i, &v))) {
        if (r < 0 || nc_flag_int("--max-tokens", v, 1, 1 << 24, &x)) return -1;
        g->max_tokens = (int32_t)x;
        return 1;
    }
    if (!strcmp(argv[*i], "--no-calculator")) {
        g->use_calculator = false;
        return 1;
    }
    return 0;
}

void nc_cli_gen_help(FILE *f) {
    fprintf(f,
            "sampling options (defaults as nanochat's chat CLI):\n"
            "  -t, --temperature X  0 = greedy (lowest id on ties), up to 10 (default 0.6)\n"
            "  -k, --top-k N        keep the N most likely tokens, 0 = off (default 50)\n"
            "  --top-p X            nucleus sampling over the tempered distribution, (0, 1] (default 1 = off)\n"
            "  --min-p X            drop tokens below X times the best one's probability, [0, 1] (default 0)\n"
            "  --seed N             random seed; sample i uses seed + i (default 42)\n"
            "  --max-tokens N       tokens to generate, tool output included (default 256)\n"
            "  -n, --samples N      N independent samples from one prefill, 1..256 (default 1)\n"
            "  --no-calculator      do not run the calculator tool on <|python_start|>..<|python_end|>\n");
}

/* ==== display ==== */

/* A tool event as the CLI shows it: [calculator: 37*41 = 1517]. */
static void show_tool(FILE *f, const nc_tool_event *t) {
    switch (t->kind) {
    case NC_TOOL_CALL: fprintf(f, "[calculator: %s", t->expr); break;
    case NC_TOOL_RESULT: fprintf(f, " = %s]", t->result); break;
    case NC_TOOL_NO_RESULT: fputs("]", f); break;
    case NC_TOOL_CALL_CUT: fprintf(f, "[calculator: %s]", t->expr); break;
    case NC_TOOL_NONE: break;
    }
}

static void display(FILE *f, const nc_tool_event *t, const char *text, size_t len) {
    show_tool(f, t);
    fwrite(text, 1, len, f);
    fflush(f);
}

/* ==== one request ==== */

static bool on_event(void *user, const nc_gen_event *ev) {
    nc_cli_run *run = user;
    double now = nc_now();
    run->n_cached = ev->n_cached_tokens;
    if (ev->row >= 0 && ev->row < run->n) {
        nc_cli_row *row = &run->rows[ev->row];
        if (ev->token >= 0) {
            if (run->t_first == 0) run->t_first = now;
            run->t_last = now;
            nc_tokens_push(&row->tokens, ev->token);
            if (run->stream && ev->row == 0 && !ev->is_terminal) {
                nc_tool_event t;
                size_t len;
                const char *text = nc_token_text_feed(&run->display, ev->token, &len, &t);
                display(run->stream, &t, text, len);
            }
        }
        if (ev->finish != NC_FINISH_NONE) {
            row->finish = ev->finish;
            if (ev->error) snprintf(row->error, sizeof row->error, "%s", ev->error);
        }
    }
    return run->interrupt && *run->interrupt;
}

int nc_cli_run_request(nc_bundle *e, const int32_t *prompt, int32_t n, const nc_gen_params *g, FILE *stream,
                       volatile sig_atomic_t *interrupt, nc_cli_run *run) {
    memset(run, 0, sizeof *run);
    run->n = g->n;
    run->rows = nc_xcalloc((size_t)g->n, sizeof *run->rows);
    run->n_prompt = n;
    run->interrupt = interrupt;
    run->stream = stream;
    if (stream) nc_token_text_init(&run->display, e->tok, NC_TEXT_TOOL_CALLS);
    run->t_submit = nc_now();
    if (nc_bundle_run(e, prompt, n, g, on_event, run)) {
        fprintf(stderr, "nanochat: %s\n", nc_error());
        nc_cli_run_free(run);
        return -1;
    }
    if (stream) {
        nc_tool_event t;
        size_t len;
        const char *text = nc_token_text_end(&run->display, &len, &t);
        display(stream, &t, text, len);
    }
    return 0;
}

void nc_cli_run_free(nc_cli_run *run) {
    if (run->stream) nc_token_text_free(&run->display);
    for (int i = 0; i < run->n; i++) nc_tokens_free(&run->rows[i].tokens);
    free(run->rows);
    memset(run, 0, sizeof *run);
}

/* ==== reports ==== */

char *nc_cli_row_text(const nc_cli_row *row, const nc_tokenizer *tok) {
    size_t n = row->tokens.n;
    if (n && row->finish == NC_FINISH_STOP) n--; /* the terminal token is not text */
    char *s = nc_tokenizer_decode(tok, row->tokens.ids, n, NULL);
    return s ? s : nc_xstrdup("");
}

/* [{"expression": ..., "result": ... | null}]: the calls of a row's tokens
 * as its live display showed them (a call the row ended inside is left
 * out; a result it ended inside is what there was). */
static cJSON *tool_calls(const nc_cli_row *row, const nc_tokenizer *tok) {
    cJSON *arr = cJSON_CreateArray(), *call = NULL;
    nc_token_text text;
    nc_token_text_init(&text, tok, NC_TEXT_TOOL_CALLS);
    size_t n = row->tokens.n, len;
    if (n && row->finish == NC_FINISH_STOP) n--; /* the terminal token */
    for (size_t i = 0; i <= n; i++) {
        nc_tool_event t;
        if (i < n) nc_token_text_feed(&text, row->tokens.ids[i], &len, &t);
        else nc_token_text_end(&text, &len, &t);
        if (t.kind == NC_TOOL_CALL) {
            call = cJSON_CreateObject();
            cJSON_AddStringToObject(call, "expression", t.expr);
            cJSON_AddNullToObject(call, "result");
            cJSON_AddItemToArray(arr, call);
        } else if (t.kind == NC_TOOL_RESULT && call) {
            cJSON_ReplaceItemInObjectCaseSensitive(call, "result", cJSON_CreateString(t.result));
        }
    }
    nc_token_text_free(&text);
    return arr;
}

/* A JSON string literal for n bytes of UTF-8 that may hold NUL bytes
 * (cJSON's strings stop at the first NUL). */
static cJSON *json_string_n(const char *s, size_t n) {
    char *out = nc_xmalloc(6 * n + 3), *p = out;
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char)c;
        } else if (c < 0x20) {
            p += sprintf(p, "\\u%04x", c);
        } else {
            *p++ = (char)c;
        }
    }
    *p++ = '"';
    *p = 0;
    cJSON *j = cJSON_CreateRaw(out);
    free(out);
    return j;
}

static cJSON *row_json(const nc_cli_row *row, const nc_tokenizer *tok) {
    cJSON *o = cJSON_CreateObject();
    size_t n = row->tokens.n, len = 0;
    if (n && row->finish == NC_FINISH_STOP) n--;
    char *text = nc_tokenizer_decode(tok, row->tokens.ids, n, &len);
    cJSON_AddItemToObject(o, "text", text ? json_string_n(text, len) : cJSON_CreateString(""));
    free(text);
    cJSON *ids = cJSON_AddArrayToObject(o, "tokens");
    for (size_t i = 0; i < row->tokens.n; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(row->tokens.ids[i]));
    cJSON_AddStringToObject(o, "finish_reason", nc_finish_reason_name(row->finish));
    cJSON_AddItemToObject(o, "tool_calls", tool_calls(row, tok));
    if (row->finish == NC_FINISH_ERROR) cJSON_AddStringToObject(o, "error", row->error);
    return o;
}

void nc_cli_print_json(const nc_cli_run *run, const nc_tokenizer *tok, FILE *f) {
    cJSON *o;
    int64_t completion = 0;
    for (int i = 0; i < run->n; i++) completion += (int64_t)run->rows[i].tokens.n;
    if (run->n == 1) {
        o = row_json(&run->rows[0], tok);
    } else {
        o = cJSON_CreateObject();
        cJSON *ch = cJSON_AddArrayToObject(o, "choices");
        for (int i = 0; i < run->n; i++) {
            cJSON *r = row_json(&run->rows[i], tok);
            cJSON_AddNumberToObject(r, "index", i);
            cJSON_AddItemToArray(ch, r);
        }
    }
    cJSON *u = cJSON_AddObjectToObject(o, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", run->n_prompt);
    cJSON_AddNumberToObject(u, "cached_tokens", run->n_cached);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)completion);
    char *s = cJSON_PrintUnformatted(o);
    fprintf(f, "%s\n", s);
    fflush(f);
    free(s);
    cJSON_Delete(o);
}

void nc_cli_print_spec(nc_bundle *e, FILE *f) {
    nc_scheduler_stats st;
    nc_scheduler_get_stats(e->sched, &st);
    if (!st.spec_verifies) {
        fprintf(f, "speculation: no drafts verified\n");
        return;
    }
    fprintf(f, "speculation: %.2f tokens per verifying step (%lld steps);", (double)st.spec_emitted / st.spec_verifies,
            (long long)st.spec_verifies);
    for (int k = 0; k < NC_SPEC_KINDS; k++)
        if (st.spec_drafted[k])
            fprintf(f, " %s %lld/%lld accepted (%.0f%%)", nc_spec_kind_name((nc_spec_kind)k),
                    (long long)st.spec_accepted[k], (long long)st.spec_drafted[k],
                    100.0 * (double)st.spec_accepted[k] / (double)st.spec_drafted[k]);
    fprintf(f, "\n");
}

void nc_cli_print_timing(const nc_cli_run *run, FILE *f) {
    int64_t tokens = 0;
    for (int i = 0; i < run->n; i++) tokens += (int64_t)run->rows[i].tokens.n;
    int32_t prefilled = run->n_prompt - run->n_cached;
    if (run->t_first > 0) {
        double tp = run->t_first - run->t_submit;
        fprintf(f, "prefill: %d tokens (%d cached) in %.3f s, %.1f tok/s\n", prefilled, run->n_cached, tp,
                tp > 0 ? prefilled / tp : 0.0);
    }
    int64_t decoded = tokens - run->n; /* the first token of each row came with the prefill */
    double td = run->t_last - run->t_first;
    if (decoded > 0 && td > 0)
        fprintf(f, "decode: %lld tokens in %.3f s, %.1f tok/s\n", (long long)decoded, td, decoded / td);
}

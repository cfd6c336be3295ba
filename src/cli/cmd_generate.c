/*
 * cmd_generate.c: `nanochat generate`: raw completion, for base models.
 *
 * The prompt is <|bos|> + the text, encoded ordinarily (docs/model.md, Chat format), or exact
 * ids with --ids. The continuation streams to stdout as it is generated
 * (--json: one JSON object at the end instead). Mirrors nanochat's
 * base-model sampling (Engine.generate on tokenizer.encode(text,
 * prepend=bos)) with the same sampling flags as `nanochat chat`.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "flags.h"
#include "gen_run.h"
#include "model_args.h"
#include "util/common.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: nanochat generate (-p TEXT | --ids \"ID ID ...\") [options]\n"
            "\n"
            "Completes <|bos|> + TEXT with the model (a base model's raw continuation) and\n"
            "streams the new text to stdout.\n"
            "\n"
            "options:\n"
            "  -p, --prompt TEXT    the text to continue (\"-\": read it from stdin)\n"
            "  --ids \"ID ID ...\"    the prompt as token ids instead (nothing prepended)\n"
            "  --json               print {\"text\", \"tokens\", \"finish_reason\", \"tool_calls\", \"usage\"}\n"
            "                       (with -n N: {\"choices\": [...], \"usage\"}) instead of streaming\n"
            "  -h, --help           this help\n"
            "\n");
    nc_cli_gen_help(f);
    fprintf(f, "\n");
    nc_model_args_spec_help(f);
    fprintf(f, "\n");
    nc_model_args_help(f);
}

static volatile sig_atomic_t interrupted;
static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

/* "1 2 3" -> ids; -1 (message printed) on anything else. */
static int parse_ids(const char *s, nc_tokens *out) {
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) {
            fprintf(stderr, "nanochat: --ids expects non-negative token ids separated by spaces, got '%s'\n", s);
            return -1;
        }
        nc_tokens_push(out, (int32_t)v);
        p = end;
    }
    if (out->n == 0) {
        fprintf(stderr, "nanochat: --ids is empty\n");
        return -1;
    }
    return 0;
}

static char *read_stdin(void) {
    size_t cap = 4096, n = 0;
    char *buf = nc_xmalloc(cap);
    size_t k;
    while ((k = fread(buf + n, 1, cap - n - 1, stdin)) > 0) {
        n += k;
        if (n + 1 == cap) buf = nc_xrealloc(buf, cap *= 2);
    }
    buf[n] = 0;
    return buf;
}

int cmd_generate(int argc, char **argv) {
    nc_model_args ma;
    nc_model_args_init(&ma);
    nc_gen_params g = nc_gen_params_default();
    const char *text = NULL, *ids_arg = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        int r = nc_cli_gen_parse(&ma, &g, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i];
        if ((r = nc_flag_take("-p", argc, argv, &i, &text)) || (r = nc_flag_take("--prompt", argc, argv, &i, &text)) ||
            (r = nc_flag_take("--ids", argc, argv, &i, &ids_arg))) {
            if (r < 0) return 2;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else {
            fprintf(stderr, "nanochat generate: unknown option '%s' (see nanochat generate --help)\n", a);
            return 2;
        }
    }
    if (!text == !ids_arg) {
        fprintf(stderr, "nanochat generate: give exactly one of -p TEXT or --ids \"ID ...\"\n");
        return 2;
    }
    if (nc_gen_params_validate(&g)) {
        fprintf(stderr, "nanochat generate: %s\n", nc_error());
        return 2;
    }

    nc_bundle e;
    if (nc_model_args_open(&ma, g.n, &e)) return 1;
    nc_tokens prompt = {0};
    int rc = 1;
    char *owned = NULL;
    if (ids_arg) {
        if (parse_ids(ids_arg, &prompt)) goto done;
    } else {
        if (!strcmp(text, "-")) text = owned = read_stdin();
        int32_t bos = nc_tokenizer_special_id(e.tok, NC_TOK_BOS);
        if (bos >= 0) nc_tokens_push(&prompt, bos);
        if (nc_tokenizer_encode(e.tok, text, strlen(text), &prompt)) {
            fprintf(stderr, "nanochat generate: %s\n", nc_error());
            goto done;
        }
    }
    signal(SIGINT, on_sigint);
    nc_cli_run run;
    bool stream = !json && g.n == 1;
    if (nc_cli_run_request(&e, prompt.ids, (int32_t)prompt.n, &g, stream ? stdout : NULL, &interrupted, &run) == 0) {
        if (json) {
            nc_cli_print_json(&run, e.tok, stdout);
        } else if (stream) {
            printf("\n");
        } else {
            for (int i = 0; i < run.n; i++) {
                char *t = nc_cli_row_text(&run.rows[i], e.tok);
                printf("--- sample %d (%s) ---\n%s\n", i, nc_finish_reason_name(run.rows[i].finish), t);
                free(t);
            }
        }
        if (ma.verbose) {
            nc_cli_print_timing(&run, stderr);
            nc_cli_print_spec(&e, stderr);
        }
        rc = 0;
        for (int i = 0; i < run.n; i++)
            if (run.rows[i].finish == NC_FINISH_ERROR) {
                fprintf(stderr, "nanochat generate: %s\n", run.rows[i].error);
                rc = 1;
            }
        nc_cli_run_free(&run);
    }
done:
    free(owned);
    nc_tokens_free(&prompt);
    nc_bundle_close(&e);
    return rc;
}

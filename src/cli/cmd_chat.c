/*
 * cmd_chat.c: `nanochat chat`: talk to a chat model in the terminal.
 *
 * Mirrors nanochat's scripts/chat_cli.py: the conversation is kept as
 * tokens (<|bos|>, then <|user_start|> text <|user_end|><|assistant_start|>
 * reply <|assistant_end|> per turn), the reply streams as it is generated,
 * defaults temperature 0.6 and top_k 50. Differences, on purpose:
 *   - replies run through the batching scheduler, whose prefix cache keeps
 *     the previous turns' KV: each turn prefills only its new tokens;
 *   - line editing and history (libedit), /temperature and /topk, Ctrl-C
 *     stops the reply without leaving;
 *   - a conversation that outgrows the context is refused with the limit
 *     named (nanochat crashes), or with --truncate loses its oldest turns;
 *   - --system TEXT is merged into the first user message (docs/model.md, Chat format).
 * With -p TEXT: one reply, then exit (--json for scripts). With stdin not a
 * terminal: every input line is a user message, replies one per line.
 */
#include <editline/readline.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "flags.h"
#include "gen_run.h"
#include "model_args.h"
#include "util/common.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: nanochat chat [-p TEXT] [options]\n"
            "\n"
            "Chat with a nanochat model. Interactive: type a message, Enter sends; the reply\n"
            "streams as it is generated; Ctrl-C stops a reply, Ctrl-D or /quit leaves.\n"
            "Commands: /clear (new conversation), /temperature X, /topk N, /help, /quit.\n"
            "\n"
            "options:\n"
            "  -p, --prompt TEXT    answer one message and exit\n"
            "  --system TEXT        system prompt (merged into the first user message)\n"
            "  --json               with -p: print {\"text\", \"tokens\", \"finish_reason\", \"tool_calls\",\n"
            "                       \"usage\"} (with -n N: {\"choices\": [...]}) instead of the text\n"
            "  --truncate           when the conversation outgrows the context, drop its oldest\n"
            "                       turns (default: refuse, naming the limit)\n"
            "  -h, --help           this help\n"
            "\n"
            "A conversation fits when its tokens plus the reply's room (--max-tokens, at most\n"
            "half the context) stay within the model's context (sequence_len).\n"
            "\n");
    nc_cli_gen_help(f);
    fprintf(f, "\n");
    nc_model_args_spec_help(f);
    fprintf(f, "\n");
    nc_model_args_help(f);
}

/* ==== the conversation ==== */

typedef struct {
    char *user;      /* the user's message */
    nc_tokens reply; /* the assistant's tokens, <|assistant_end|> included */
} turn;

typedef struct {
    const char *system;
    turn *turns;
    int n, cap;
    int first;       /* oldest turn still in the conversation (after truncation) */
} conversation;

static void conv_clear(conversation *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->turns[i].user);
        nc_tokens_free(&c->turns[i].reply);
    }
    c->n = c->first = 0;
}

static int encode_user(const nc_tokenizer *tok, const conversation *c, const char *user, bool first,
                       nc_tokens *out) {
    if (first && c->system && *c->system) { /* nanochat: system + "\n\n" + first user message */
        size_t ls = strlen(c->system), lu = strlen(user);
        char *m = nc_xmalloc(ls + lu + 3);
        memcpy(m, c->system, ls);
        memcpy(m + ls, "\n\n", 2);
        memcpy(m + ls + 2, user, lu + 1);
        int rc = nc_tokenizer_encode(tok, m, ls + lu + 2, out);
        free(m);
        return rc;
    }
    return nc_tokenizer_encode(tok, user, strlen(user), out);
}

/* The prompt for a new message after turns [first, n). */
static int render(const nc_tokenizer *tok, const conversation *c, int first, const char *message, nc_tokens *out) {
    out->n = 0;
    int32_t sp[NC_TOK_SPECIAL_COUNT];
    for (int i = 0; i < NC_TOK_SPECIAL_COUNT; i++) sp[i] = nc_tokenizer_special_id(tok, (nc_special_token)i);
    for (int i = 0; i < NC_TOK_SPECIAL_COUNT; i++)
        if (sp[i] < 0 && i <= NC_TOK_ASSISTANT_END)
            return nc_fail("the tokenizer lacks %s: this is not a chat tokenizer", nc_special_token_text(i));
    nc_tokens_push(out, sp[NC_TOK_BOS]);
    for (int k = first; k <= c->n; k++) {
        const char *user = k < c->n ? c->turns[k].user : message;
        nc_tokens_push(out, sp[NC_TOK_USER_START]);
        if (encode_user(tok, c, user, k == first, out)) return -1;
        nc_tokens_push(out, sp[NC_TOK_USER_END]);
        nc_tokens_push(out, sp[NC_TOK_ASSISTANT_START]);
        if (k < c->n) nc_tokens_append(out, c->turns[k].reply.ids, c->turns[k].reply.n);
    }
    return 0;
}

/* Builds the prompt for `message`, dropping old turns with --truncate.
 * Returns -1 with a message when it cannot fit. */
static int build_prompt(const nc_bundle *e, conversation *c, const char *message, const nc_gen_params *g,
                        bool truncate, nc_tokens *out) {
    int32_t room = NC_MIN(g->max_tokens, e->max_context / 2);
    for (;;) {
        if (render(e->tok, c, c->first, message, out)) return -1;
        if ((int64_t)out->n + room <= e->max_context) return 0;
        if (!truncate || c->first == c->n) break;
        c->first++;
    }
    if (c->first == c->n && c->n > 0 && truncate)
        return nc_fail("this message alone is %zu tokens; with room for a %d-token reply it does not fit the "
                       "context limit of %d tokens", out->n, room, e->max_context);
    return nc_fail("the conversation is %zu tokens; with room for a %d-token reply it does not fit the context "
                   "limit of %d tokens: /clear starts over, --truncate drops old turns, --max-tokens lowers the room",
                   out->n, room, e->max_context);
}

/* ==== one exchange ==== */

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

/* Sends `message`, prints the reply (or JSON), adds the turn. 0 ok, -1 refused/failed. */
static int exchange(nc_bundle *e, conversation *c, const char *message, nc_gen_params *g, bool truncate,
                    bool json, bool interactive, bool verbose) {
    nc_tokens prompt = {0};
    if (build_prompt(e, c, message, g, truncate, &prompt)) {
        fprintf(stderr, "nanochat chat: %s\n", nc_error());
        nc_tokens_free(&prompt);
        return -1;
    }
    if (interactive) printf("Assistant: ");
    fflush(stdout);
    interrupted = 0;
    nc_cli_run run;
    bool stream = !json && g->n == 1;
    int rc = nc_cli_run_request(e, prompt.ids, (int32_t)prompt.n, g, stream ? stdout : NULL, &interrupted, &run);
    nc_tokens_free(&prompt);
    if (rc) return -1;
    if (json) {
        nc_cli_print_json(&run, e->tok, stdout);
    } else if (!stream) {
        for (int i = 0; i < run.n; i++) {
            char *t = nc_cli_row_text(&run.rows[i], e->tok);
            printf("--- sample %d (%s) ---\n%s\n", i, nc_finish_reason_name(run.rows[i].finish), t);
            free(t);
        }
    } else {
        if (run.rows[0].finish == NC_FINISH_CANCELLED) printf(" [stopped]");
        printf("\n");
    }
    if (verbose) {
        nc_cli_print_timing(&run, stderr);
        nc_cli_print_spec(e, stderr);
    }
    nc_cli_row *row = &run.rows[0];
    if (row->finish == NC_FINISH_ERROR) {
        fprintf(stderr, "nanochat chat: %s\n", row->error);
        rc = -1;
    } else {
        /* The turn joins the conversation as generated (sample 0), closed by <|assistant_end|>. */
        if (c->n == c->cap) {
            c->cap = c->cap ? 2 * c->cap : 8;
            c->turns = nc_xrealloc(c->turns, (size_t)c->cap * sizeof *c->turns);
        }
        turn *t = &c->turns[c->n++];
        t->user = nc_xstrdup(message);
        memset(&t->reply, 0, sizeof t->reply);
        int32_t end = nc_tokenizer_special_id(e->tok, NC_TOK_ASSISTANT_END);
        size_t n = row->tokens.n;
        if (n && row->finish == NC_FINISH_STOP) n--; /* <|bos|> or <|assistant_end|>: close with the latter */
        nc_tokens_append(&t->reply, row->tokens.ids, n);
        nc_tokens_push(&t->reply, end);
    }
    nc_cli_run_free(&run);
    return rc;
}

/* ==== interactive commands ==== */

static void help_commands(void) {
    printf("commands:\n"
           "  /clear          start a new conversation\n"
           "  /temperature X  sampling temperature, 0 = greedy (now used for the next replies)\n"
           "  /topk N         keep the N most likely tokens, 0 = off\n"
           "  /help           this list\n"
           "  /quit           leave (also /exit, Ctrl-D)\n"
           "Ctrl-C stops the reply being generated.\n");
}

/* Returns 1 to quit, 0 otherwise. */
static int command(const char *line, conversation *c, nc_gen_params *g) {
    char name[32] = {0};
    const char *arg = line + 1;
    size_t k = 0;
    while (*arg && *arg != ' ' && k + 1 < sizeof name) name[k++] = *arg++;
    while (*arg == ' ') arg++;
    char *end;
    if (!strcmp(name, "quit") || !strcmp(name, "exit")) return 1;
    if (!strcmp(name, "help")) {
        help_commands();
    } else if (!strcmp(name, "clear")) {
        conv_clear(c);
        printf("(new conversation)\n");
    } else if (!strcmp(name, "temperature")) {
        errno = 0;
        double t = strtod(arg, &end);
        if (!*arg || *end || errno || !(t >= 0 && t <= 10)) printf("usage: /temperature X with X in [0, 10]\n");
        else printf("temperature %g\n", (double)(g->temperature = (float)t));
    } else if (!strcmp(name, "topk")) {
        errno = 0;
        long v = strtol(arg, &end, 10);
        if (!*arg || *end || errno || v < 0 || v > (1 << 30)) printf("usage: /topk N with N >= 0 (0 = off)\n");
        else printf("top_k %d\n", g->top_k = (int32_t)v);
    } else {
        printf("unknown command '%s' (/help lists them)\n", line);
    }
    return 0;
}

static char *history_path(void) {
    const char *home = getenv("HOME");
    if (!home || !*home) return NULL;
    size_t n = strlen(home) + 32;
    char *p = nc_xmalloc(n);
    snprintf(p, n, "%s/.nanochat_history", home);
    return p;
}

/* ==== main ==== */

int cmd_chat(int argc, char **argv) {
    nc_model_args ma;
    nc_model_args_init(&ma);
    nc_gen_params g = nc_gen_params_default();
    const char *prompt = NULL;
    conversation conv = {0};
    bool json = false, truncate = false;
    for (int i = 1; i < argc; i++) {
        int r = nc_cli_gen_parse(&ma, &g, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *a = argv[i];
        if ((r = nc_flag_take("-p", argc, argv, &i, &prompt)) || (r = nc_flag_take("--prompt", argc, argv, &i, &prompt)) ||
            (r = nc_flag_take("--system", argc, argv, &i, &conv.system))) {
            if (r < 0) return 2;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--truncate")) {
            truncate = true;
        } else {
            fprintf(stderr, "nanochat chat: unknown option '%s' (see nanochat chat --help)\n", a);
            return 2;
        }
    }
    if (prompt && !*prompt) {
        fprintf(stderr, "nanochat chat: -p needs a non-empty message\n");
        return 2;
    }
    if (json && !prompt) {
        fprintf(stderr, "nanochat chat: --json needs -p TEXT (one message, one JSON answer)\n");
        return 2;
    }
    if (nc_gen_params_validate(&g)) {
        fprintf(stderr, "nanochat chat: %s\n", nc_error());
        return 2;
    }

    nc_bundle e;
    if (nc_model_args_open(&ma, g.n, &e)) return 1;
    struct sigaction sa = {0};
    sa.sa_handler = on_sigint; /* no SA_RESTART: a blocked read returns */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);

    int rc = 0;
    if (prompt) {
        rc = exchange(&e, &conv, prompt, &g, truncate, json, false, ma.verbose) ? 1 : 0;
    } else if (isatty(STDIN_FILENO)) {
        char *hist = history_path();
        rl_readline_name = "nanochat";
        using_history();
        if (hist) read_history(hist);
        printf("nanochat chat: %s (%s), context %d tokens. /help for commands, Ctrl-D to leave.\n",
               e.model->source ? e.model->source : "model", nc_generation_name(e.model->cfg.generation),
               e.max_context);
        for (;;) {
            interrupted = 0;
            char *line = readline("User: ");
            if (!line) {
                if (interrupted) { /* Ctrl-C at the prompt: a fresh line, not an exit */
                    printf("\n");
                    continue;
                }
                printf("\n");
                break;
            }
            char *s = line;
            while (*s == ' ' || *s == '\t') s++;
            if (*s) add_history(s);
            int quit = 0;
            if (*s == '/') quit = command(s, &conv, &g);
            else if (*s) exchange(&e, &conv, s, &g, truncate, false, true, ma.verbose);
            free(line);
            if (quit) break;
        }
        if (hist) write_history(hist);
        free(hist);
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline(&line, &cap, stdin)) > 0) {
            while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
            if (!n) continue;
            if (line[0] == '/') {
                if (command(line, &conv, &g)) break;
                continue;
            }
            if (exchange(&e, &conv, line, &g, truncate, false, false, ma.verbose)) rc = 1;
        }
        free(line);
    }
    conv_clear(&conv);
    free(conv.turns);
    nc_bundle_close(&e);
    return rc;
}

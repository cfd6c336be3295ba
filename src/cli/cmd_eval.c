/*
 * cmd_eval.c: `nanochat eval`: how well a model (in one weight / KV-cache
 * format) predicts a text, as bits per byte, and how far an 8-bit mode
 * drifts from another (--compare, or --compare-model for another file such
 * as the float checkpoint a quantized one came from): argmax agreement over
 * the text and the first divergence of greedy chats.
 *
 * Bits per byte follow nanochat's evaluate_bpb (nanochat/loss_eval.py):
 * the sum of the target tokens' cross-entropy losses in nats over
 * ln 2 x the sum of their byte lengths (special tokens count zero bytes and
 * are not scored; ordinary text has none). The text is encoded as one
 * document and cut into windows of sequence_len tokens, each run as its own
 * sequence <|bos|> + the window's tokens but the last, every token
 * predicted from the window's earlier ones: a row of nanochat's
 * BOS-aligned data loader (T inputs starting with BOS, T targets). Windows
 * do not overlap, so each token is scored once; the last one is shorter.
 *
 * Everything goes through backend.h, so the same numbers come from any
 * backend that runs the format. Losses are computed in double from the
 * fp32 softcapped logits.
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "cli.h"
#include "engine/bundle.h"
#include "engine/scheduler.h"
#include "flags.h"
#include "model_args.h"
#include "util/common.h"
#include "util/mmap_file.h"

#define EVAL_MAX_TEXT ((size_t)256 << 20)
#define EVAL_CHUNK 256 /* positions per forward: bounds the logits buffer (chunk x V floats) */

/* Fixed prompts for the greedy chats of --compare: the kinds of question
 * the bundled picochat answers (tool use, spelling, definitions, identity,
 * refusal) and two open ones. */
static const char *const chat_prompts[] = {
    "What is 123 * 45?",
    "How many r's are in strawberry?",
    "What does ocean mean?",
    "Who are you?",
    "Write a poem about the sea.",
    "What is 626 / 19?",
    "Tell me about the history of Rome.",
    "Why is the sky blue?",
};

static void usage(FILE *f) {
    fprintf(f,
            "usage: nanochat eval [-m PATH | --random SPEC] --text FILE [--compare W | --compare-model PATH]\n"
            "                     [--json] [options]\n"
            "\n"
            "Bits per byte of a text, computed as nanochat's evaluate_bpb: the text is cut into\n"
            "windows of the model's sequence_len tokens, each run as <|bos|> + the window, and\n"
            "bpb = sum of the tokens' losses (nats) / (ln 2 x bytes of the text).\n"
            "With --compare, the same model in another weight format (bf16 KV cache) runs beside\n"
            "it: its bits per byte, the fraction of positions whose argmax agrees, and the first\n"
            "token where greedy chats on fixed prompts diverge.\n"
            "\n"
            "  --text FILE          the text to score (UTF-8; required)\n"
            "  --compare W          the reference: --weights W (bf16, int8 or fp8) of the same model\n"
            "  --compare-model PATH the reference: another checkpoint as it is stored (e.g. the\n"
            "                       float one a `nanochat quantize` copy came from)\n"
            "  --chats N            greedy chats compared with --compare (default 5, at most %d, 0 = none)\n"
            "  --chat-tokens N      tokens generated per chat (default 64)\n"
            "  --window N           tokens per window (default: the model's sequence_len)\n"
            "  --limit N            score only the first N tokens of the text\n"
            "  --json               one JSON object on stdout\n"
            "  -h, --help           this help\n\n",
            (int)NC_ARRAY_LEN(chat_prompts));
    nc_model_args_help(f);
}

typedef struct {
    const char *text_path, *compare, *compare_model;
    int chats, chat_tokens, window;
    long long limit;
    bool json;
} eval_opts;

/* One model + backend being scored (a bundle whose scheduler is created
 * only for the chats, once the windows no longer use the KV blocks). */
typedef struct {
    nc_bundle bd;
    const char *weights, *kv_cache; /* as given, for the report */
    double nats;                    /* summed losses */
    float *logits;                  /* [chunk, V] */
    int32_t *argmax;                /* [window] of the current window */
    int32_t *table;                 /* KV blocks 0.. */
} scored;

/* ==== scoring ==== */

/* Runs inputs in[0..n) of one window through s from position 0, adding the
 * losses of targets tgt[0..n) to s->nats and storing the argmaxes. */
static int score_window(scored *s, const int32_t *in, const int32_t *tgt, int n, int chunk) {
    int V = s->bd.model->cfg.vocab_size;
    nc_backend *be = s->bd.backend;
    for (int pos = 0; pos < n; pos += chunk) {
        int k = NC_MIN(chunk, n - pos);
        nc_seq_chunk c = {in + pos, k, pos, pos ? in[pos - 1] : -1, s->table, NC_LOGITS_ALL};
        nc_batch b = {&c, 1};
        if (be->ops->forward(be, &b, s->logits)) return -1;
        for (int i = 0; i < k; i++) {
            const float *l = s->logits + (size_t)i * V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (l[v] > l[best]) best = v;
            double sum = 0;
            for (int v = 0; v < V; v++) sum += exp((double)l[v] - l[best]);
            s->nats += log(sum) + l[best] - l[tgt[pos + i]];
            s->argmax[pos + i] = best;
        }
    }
    return 0;
}

static void progress(int done, int total, double t0) {
    if (!isatty(STDERR_FILENO)) return;
    enum { WIDTH = 30 };
    int fill = total ? done * WIDTH / total : WIDTH;
    char bar[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++) bar[i] = i < fill ? '#' : '.';
    bar[WIDTH] = 0;
    fprintf(stderr, "\r  [%s] %d/%d windows, %.0f s", bar, done, total, nc_now() - t0);
    if (done == total) fprintf(stderr, "\n");
}

/* ==== greedy chats ==== */

static bool collect(void *user, const nc_gen_event *ev) {
    if (ev->token >= 0) nc_tokens_push(user, ev->token);
    return false;
}

/* Greedy reply (calculator on, as in a chat) of one prompt. */
static int greedy_chat(nc_bundle *bd, const char *prompt, int max_tokens, nc_tokens *out) {
    nc_chat_message msg = {NC_ROLE_USER, prompt, strlen(prompt)};
    nc_tokens ids = {0};
    if (nc_chat_render(bd->tok, &msg, 1, &ids)) return -1;
    nc_gen_params g = nc_gen_params_default();
    g.temperature = 0;
    g.max_tokens = max_tokens;
    int rc = nc_bundle_run(bd, ids.ids, (int32_t)ids.n, &g, collect, out);
    nc_tokens_free(&ids);
    return rc;
}

/* First index where a and b differ (the shorter length if one is a prefix
 * of the other), or -1 if they are equal. */
static int first_divergence(const nc_tokens *a, const nc_tokens *b) {
    size_t n = NC_MIN(a->n, b->n);
    for (size_t i = 0; i < n; i++)
        if (a->ids[i] != b->ids[i]) return (int)i;
    return a->n == b->n ? -1 : (int)n;
}

/* ==== setup ==== */

/* After s->bd.model is loaded: its backend and buffers. */
static int open_scored(scored *s, const nc_model_args *a, const nc_backend_params *bp, int window, int chunk) {
    const nc_model *m = s->bd.model;
    if (!(s->bd.backend = nc_model_args_backend(a, m, bp))) return -1;
    s->weights = a->weights ? a->weights : nc_weight_format_name(m->weights);
    s->kv_cache = a->kv_cache == NC_KV_CACHE_FP8 ? "fp8" : "bf16";
    s->logits = malloc((size_t)chunk * (size_t)m->cfg.vocab_size * sizeof(float));
    if (!s->logits) {
        fprintf(stderr, "nanochat eval: out of memory for %d x %d logits\n", chunk, m->cfg.vocab_size);
        return -1;
    }
    s->argmax = nc_xmalloc((size_t)window * sizeof(int32_t));
    int n_blocks = (window + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
    s->table = nc_xmalloc((size_t)n_blocks * sizeof(int32_t));
    for (int b = 0; b < n_blocks; b++) s->table[b] = b;
    return 0;
}

static void close_scored(scored *s) {
    nc_bundle_close(&s->bd);
    free(s->logits);
    free(s->argmax);
    free(s->table);
}

/* ==== report ==== */

typedef struct {
    const char *path;
    const char *reference_model; /* --compare-model, or NULL */
    long long bytes, tokens, positions_agree;
    int windows, window, n_chats;
    int divergence[NC_ARRAY_LEN(chat_prompts)];
    size_t chat_len[NC_ARRAY_LEN(chat_prompts)][2];
} eval_result;

static double bpb(const scored *s, const eval_result *r) { return s->nats / (log(2.0) * (double)r->bytes); }

static void print_json(const scored *a, const scored *b, const eval_result *r) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "text", r->path);
    cJSON_AddNumberToObject(j, "bytes", (double)r->bytes);
    cJSON_AddNumberToObject(j, "tokens", (double)r->tokens);
    cJSON_AddNumberToObject(j, "windows", r->windows);
    cJSON_AddNumberToObject(j, "window", r->window);
    cJSON_AddStringToObject(j, "weights", a->weights);
    cJSON_AddStringToObject(j, "kv_cache", a->kv_cache);
    cJSON_AddStringToObject(j, "backend", nc_backend_describe(a->bd.backend));
    cJSON_AddNumberToObject(j, "bpb", bpb(a, r));
    cJSON_AddNumberToObject(j, "nats_per_token", a->nats / (double)r->tokens);
    if (b) {
        cJSON *c = cJSON_AddObjectToObject(j, "compare");
        cJSON_AddStringToObject(c, "weights", b->weights);
        if (r->reference_model) cJSON_AddStringToObject(c, "model", r->reference_model);
        cJSON_AddNumberToObject(c, "bpb", bpb(b, r));
        cJSON_AddNumberToObject(c, "bpb_change_pct", 100.0 * (bpb(a, r) / bpb(b, r) - 1.0));
        cJSON_AddNumberToObject(c, "argmax_agreement", (double)r->positions_agree / (double)r->tokens);
        cJSON *chats = cJSON_AddArrayToObject(c, "chats");
        for (int i = 0; i < r->n_chats; i++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "prompt", chat_prompts[i]);
            if (r->divergence[i] < 0) cJSON_AddNullToObject(e, "first_divergence");
            else cJSON_AddNumberToObject(e, "first_divergence", r->divergence[i]);
            cJSON_AddNumberToObject(e, "tokens", (double)r->chat_len[i][0]);
            cJSON_AddNumberToObject(e, "reference_tokens", (double)r->chat_len[i][1]);
            cJSON_AddItemToArray(chats, e);
        }
    }
    char *text = cJSON_PrintUnformatted(j);
    printf("%s\n", text);
    free(text);
    cJSON_Delete(j);
}

static void print_text(const scored *a, const scored *b, const eval_result *r) {
    printf("text:        %s (%lld bytes, %lld tokens, %d windows of <= %d)\n", r->path, r->bytes, r->tokens,
           r->windows, r->window);
    printf("backend:     %s\n", nc_backend_describe(a->bd.backend));
    printf("mode:        weights %s, kv-cache %s\n", a->weights, a->kv_cache);
    printf("bits/byte:   %.5f (%.4f nats/token)\n", bpb(a, r), a->nats / (double)r->tokens);
    if (!b) return;
    printf("reference:   %s%sweights %s, kv-cache bf16: %.5f bits/byte (this mode %+.3f%%)\n",
           r->reference_model ? r->reference_model : "", r->reference_model ? ", " : "", b->weights, bpb(b, r),
           100.0 * (bpb(a, r) / bpb(b, r) - 1.0));
    printf("agreement:   argmax equal at %.3f%% of %lld positions\n",
           100.0 * (double)r->positions_agree / (double)r->tokens, r->tokens);
    for (int i = 0; i < r->n_chats; i++) {
        printf("chat %d:      %-40s ", i + 1, chat_prompts[i]);
        if (r->divergence[i] < 0) printf("identical (%zu tokens)\n", r->chat_len[i][0]);
        else printf("first divergence at token %d (of %zu / %zu)\n", r->divergence[i], r->chat_len[i][0],
                    r->chat_len[i][1]);
    }
}

/* ==== the command ==== */

static int run(const nc_model_args *ma, const eval_opts *o) {
    int rc = 1;
    scored a = {0}, b = {0};
    nc_tokens ids = {0};
    char *text = NULL;
    int32_t *in = NULL;
    eval_result r = {.path = o->text_path, .reference_model = o->compare_model};
    size_t len;

    if (!(text = nc_read_file(o->text_path, EVAL_MAX_TEXT, &len))) {
        fprintf(stderr, "nanochat eval: %s\n", nc_error());
        return 1;
    }
    /* Each backend serves the windows and then, through a scheduler, the chats. */
    if (nc_model_args_load(ma, &a.bd.model, &a.bd.tok)) goto out;
    const nc_tokenizer *tok = a.bd.tok;
    int seq = a.bd.model->cfg.sequence_len, window = o->window ? o->window : seq, chunk = NC_MIN(window, EVAL_CHUNK);
    nc_backend_params bp;
    nc_scheduler_params sp;
    nc_bundle_options sizes; /* one conversation at a time, as the CLI's chat */
    nc_bundle_options_init(&sizes);
    sizes.rows = 1;
    nc_bundle_sizes(&sizes, NC_MAX(window, seq), &bp, &sp);
    if (open_scored(&a, ma, &bp, window, chunk)) goto out;
    if (o->compare || o->compare_model) {
        nc_model_args rb = *ma;
        rb.weights = o->compare;
        if (o->compare_model) {
            rb.load = (nc_load_options){.path = o->compare_model, .step = -1};
            rb.random_spec = NULL;
        }
        rb.lm_head_float = false;
        rb.kv_cache = NC_KV_CACHE_BF16;
        if (nc_model_args_load(&rb, &b.bd.model, &b.bd.tok) || open_scored(&b, &rb, &bp, window, chunk)) goto out;
    }

    if (nc_tokenizer_encode(tok, text, len, &ids)) {
        fprintf(stderr, "nanochat eval: %s\n", nc_error());
        goto out;
    }
    size_t n = ids.n;
    if (o->limit > 0 && (size_t)o->limit < n) n = (size_t)o->limit;
    if (n == 0) {
        fprintf(stderr, "nanochat eval: %s holds no text to score\n", o->text_path);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        size_t tb;
        nc_tokenizer_token_bytes(tok, ids.ids[i], &tb);
        r.bytes += (long long)tb;
    }
    int32_t bos = nc_tokenizer_special_id(tok, NC_TOK_BOS);
    if (bos < 0) {
        fprintf(stderr, "nanochat eval: the tokenizer has no <|bos|> token\n");
        goto out;
    }
    r.tokens = (long long)n;
    r.window = window;
    r.windows = (int)((n + (size_t)window - 1) / (size_t)window);
    in = nc_xmalloc((size_t)window * sizeof(int32_t));
    double t0 = nc_now();
    for (int w = 0; w < r.windows; w++) {
        size_t start = (size_t)w * (size_t)window;
        int k = (int)NC_MIN((size_t)window, n - start);
        in[0] = bos;
        memcpy(in + 1, ids.ids + start, (size_t)(k - 1) * sizeof(int32_t));
        const int32_t *tgt = ids.ids + start;
        if (score_window(&a, in, tgt, k, chunk) || (b.bd.model && score_window(&b, in, tgt, k, chunk))) {
            fprintf(stderr, "%snanochat eval: %s\n", isatty(STDERR_FILENO) ? "\n" : "", nc_error());
            goto out;
        }
        if (b.bd.model)
            for (int i = 0; i < k; i++) r.positions_agree += a.argmax[i] == b.argmax[i];
        if (!o->json) progress(w + 1, r.windows, t0);
    }

    if (b.bd.model && o->chats > 0) {
        if (!(a.bd.sched = nc_scheduler_create(a.bd.backend, a.bd.tok, &sp)) ||
            !(b.bd.sched = nc_scheduler_create(b.bd.backend, b.bd.tok, &sp))) {
            fprintf(stderr, "nanochat eval: %s\n", nc_error());
            goto out;
        }
        r.n_chats = NC_MIN(o->chats, (int)NC_ARRAY_LEN(chat_prompts));
        for (int i = 0; i < r.n_chats; i++) {
            nc_tokens ca = {0}, cb = {0};
            int bad = greedy_chat(&a.bd, chat_prompts[i], o->chat_tokens, &ca) ||
                      greedy_chat(&b.bd, chat_prompts[i], o->chat_tokens, &cb);
            r.divergence[i] = first_divergence(&ca, &cb);
            r.chat_len[i][0] = ca.n;
            r.chat_len[i][1] = cb.n;
            nc_tokens_free(&ca);
            nc_tokens_free(&cb);
            if (bad) {
                fprintf(stderr, "nanochat eval: chat '%s': %s\n", chat_prompts[i], nc_error());
                goto out;
            }
        }
    }
    if (o->json) print_json(&a, b.bd.model ? &b : NULL, &r);
    else print_text(&a, b.bd.model ? &b : NULL, &r);
    rc = 0;
out:
    close_scored(&a);
    close_scored(&b);
    nc_tokens_free(&ids);
    free(in);
    free(text);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    nc_model_args a;
    nc_model_args_init(&a);
    eval_opts o = {.chats = 5, .chat_tokens = 64};
    for (int i = 1; i < argc; i++) {
        int r = nc_model_args_parse(&a, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *v;
        long long x;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            o.json = true;
        } else if ((r = nc_flag_take("--text", argc, argv, &i, &v))) {
            if (r < 0) return 2;
            o.text_path = v;
        } else if ((r = nc_flag_take("--compare", argc, argv, &i, &v))) {
            nc_weight_format f;
            if (r < 0) return 2;
            if (nc_weight_format_parse(v, &f)) {
                fprintf(stderr, "nanochat eval: --compare: %s\n", nc_error());
                return 2;
            }
            o.compare = v;
        } else if ((r = nc_flag_take("--compare-model", argc, argv, &i, &v))) {
            if (r < 0) return 2;
            o.compare_model = v;
        } else if ((r = nc_flag_take("--chats", argc, argv, &i, &v))) {
            if (r < 0 || nc_flag_int("--chats", v, 0, (long long)NC_ARRAY_LEN(chat_prompts), &x)) return 2;
            o.chats = (int)x;
        } else if ((r = nc_flag_take("--chat-tokens", argc, argv, &i, &v))) {
            if (r < 0 || nc_flag_int("--chat-tokens", v, 1, 4096, &x)) return 2;
            o.chat_tokens = (int)x;
        } else if ((r = nc_flag_take("--window", argc, argv, &i, &v))) {
            if (r < 0 || nc_flag_int("--window", v, 1, 1 << 20, &x)) return 2;
            o.window = (int)x;
        } else if ((r = nc_flag_take("--limit", argc, argv, &i, &v))) {
            if (r < 0 || nc_flag_int("--limit", v, 1, 1LL << 40, &x)) return 2;
            o.limit = x;
        } else {
            fprintf(stderr, "nanochat eval: unknown option '%s' (see nanochat eval --help)\n", argv[i]);
            return 2;
        }
    }
    if (!o.text_path) {
        fprintf(stderr, "nanochat eval: --text FILE is required (see nanochat eval --help)\n");
        return 2;
    }
    if (o.compare && o.compare_model) {
        fprintf(stderr, "nanochat eval: --compare and --compare-model are mutually exclusive\n");
        return 2;
    }
    return run(&a, &o);
}

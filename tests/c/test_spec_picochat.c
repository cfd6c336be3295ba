/*
 * test_spec_picochat.c: speculative decoding on the bundled picochat model
 * (CPU), over the 35 golden conversations of tests/data/picochat/golden.json
 * (PyTorch's fp32 greedy transcripts with nanochat's calculator forcing,
 * made by tools/train_picochat.py).
 *
 * Every conversation runs, all of them batched together, without
 * speculation and with: prompt lookup (every proposal verified, and only
 * those the price model takes), picochat drafting for itself (a second
 * backend: the draft always agrees, except where the calculator forces),
 * picochat cut to its first two layers as the draft (disagrees often),
 * models/picochat-draft (a quarter of picochat's size, trained to draft for
 * it: models/picochat-draft/README.md), and lookup with the cut draft.
 * Greedy, each transcript must equal PyTorch's
 * (a difference is accepted only where PyTorch's top-2 margin is below
 * TIE, as test_picochat_e2e accepts, and the rest of that case is then not
 * compared) and equal the engine's own without speculation token for
 * token. Sampled (temperature 2.5, hot enough to leave the greedy path;
 * top-k 50; a seed per conversation), prompt lookup, picochat drafting
 * for itself and the trained draft must give exactly the tokens of the run
 * without.
 * Prints each configuration's acceptance and tokens per verifying step
 * (the numbers of docs/speculative.md).
 *
 * NC_TEST_DEVICE=cuda runs the greedy half on the GPU (skipped without
 * one), one conversation at a time (a lone row decodes through the GEMV,
 * a verified chunk through the GEMMs: bf16 rounding differs there, unlike
 * the CPU's bit-exact batch invariance). A speculating run must then equal
 * the run without up to the first token where that run's own top-2 logit
 * margin is below GPU_TIE (its logprobs say), and the rest of that case is
 * not compared; such near-ties are counted and printed.
 * NC_TEST_CASES=N takes the first N conversations (compute-sanitizer).
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "check.h"
#include "engine/bundle.h"
#include "engine/scheduler.h"
#include "util/common.h"

#define GOLDEN "tests/data/picochat/golden.json"
#define MODEL "models/picochat"
#define DRAFT "models/picochat-draft" /* trained for drafting: half picochat's depth and width */
#define TIE 1e-3
#define GPU_TIE 0.05 /* logit margins below this are within bf16's rounding of the GPU's two paths */
#define MAX_CASES 64
#define MAX_TOK 512

typedef struct {
    const char *name, *finish;
    int max_tokens;
    int32_t prompt[MAX_TOK], tokens[MAX_TOK];
    int n_prompt, n_tokens;
    double margins[MAX_TOK];
} golden_case;

typedef struct {
    int32_t toks[MAX_TOK];
    float margin[MAX_TOK]; /* top-2 logprob margin of each sampled token (when logprobs were asked for) */
    int n;
    nc_finish_reason finish;
} reply;

static golden_case cases[MAX_CASES];
static int n_cases;
static bool gpu;

static int json_ids(const cJSON *arr, int32_t *out) {
    int n = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, arr) if (n < MAX_TOK) out[n++] = (int32_t)x->valueint;
    return n;
}

static cJSON *load_golden(void) {
    char *s = check_read_file(GOLDEN);
    if (!s) return NULL;
    cJSON *root = cJSON_Parse(s);
    free(s);
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
        if (n_cases == MAX_CASES) break;
        golden_case *g = &cases[n_cases++];
        g->name = cJSON_GetObjectItem(c, "name")->valuestring;
        g->finish = cJSON_GetObjectItem(c, "finish_reason")->valuestring;
        g->max_tokens = cJSON_GetObjectItem(c, "max_tokens")->valueint;
        g->n_prompt = json_ids(cJSON_GetObjectItem(c, "prompt_ids"), g->prompt);
        g->n_tokens = json_ids(cJSON_GetObjectItem(c, "tokens"), g->tokens);
        int k = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItem(c, "margins")) if (k < MAX_TOK) g->margins[k++] =
            cJSON_IsNumber(x) ? x->valuedouble : INFINITY;
    }
    return root;
}

static bool on_event(void *user, const nc_gen_event *ev) {
    reply *r = user;
    if (ev->token >= 0 && !ev->is_terminal && r->n < MAX_TOK) {
        r->margin[r->n] = ev->n_top >= 2 && !ev->forced ? ev->top[0].logprob - ev->top[1].logprob : INFINITY;
        r->toks[r->n++] = ev->token;
    }
    if (ev->finish != NC_FINISH_NONE) r->finish = ev->finish;
    return false;
}

/* Every case through one scheduler, batched (on the GPU one at a time);
 * returns its statistics. Runs without speculation report their margins. */
static nc_scheduler_stats run_all(nc_backend *target, const nc_tokenizer *tok, const nc_spec_params *spec,
                                  float temperature, reply *out) {
    nc_scheduler_params sp = {.max_running = gpu ? 1 : 8, .spec = *spec};
    nc_scheduler *s = nc_scheduler_create(target, tok, &sp);
    CHECK(s != NULL, "scheduler: %s", nc_error());
    nc_scheduler_stats st = {0};
    if (!s) return st;
    for (int i = 0; i < n_cases; i++) {
        nc_gen_params p = nc_gen_params_default();
        p.temperature = temperature;
        p.seed = 1000 + (uint64_t)i;
        p.max_tokens = cases[i].max_tokens;
        if (gpu && spec->off) p.top_logprobs = 2;
        memset(&out[i], 0, sizeof out[i]);
        CHECK(nc_scheduler_submit(s, cases[i].prompt, cases[i].n_prompt, &p, on_event, &out[i], NULL) == 0,
              "submit %s: %s", cases[i].name, nc_error());
    }
    while (nc_scheduler_step(s) > 0) {}
    nc_scheduler_get_stats(s, &st);
    CHECK(st.kv_blocks_used == 0, "KV blocks left in use: %d", st.kv_blocks_used);
    nc_scheduler_free(s);
    return st;
}

/* PyTorch's transcript, up to a reference near-tie. */
static void check_golden(const char *what, const golden_case *g, const reply *r) {
    int i = 0;
    while (i < g->n_tokens && i < r->n && g->tokens[i] == r->toks[i]) i++;
    if (i == g->n_tokens && r->n == g->n_tokens) {
        CHECK(!strcmp(nc_finish_reason_name(r->finish), g->finish), "%s %s: finish %s, PyTorch's %s", what, g->name,
              nc_finish_reason_name(r->finish), g->finish);
        return;
    }
    CHECK(i < g->n_tokens && g->margins[i] < TIE, "%s %s: token %d is %d, PyTorch's %d", what, g->name, i,
          i < r->n ? r->toks[i] : -1, i < g->n_tokens ? g->tokens[i] : -1);
}

/* The GPU's comparison: equal up to a near-tie of the run without. Returns
 * whether the case stopped at one. */
static bool check_gpu(const char *what, const golden_case *g, const reply *plain, const reply *r) {
    int i = 0;
    while (i < plain->n && i < r->n && plain->toks[i] == r->toks[i]) i++;
    if (i == plain->n && i == r->n) {
        CHECK(plain->finish == r->finish, "%s %s: finish %s vs %s", what, g->name, nc_finish_reason_name(r->finish),
              nc_finish_reason_name(plain->finish));
        return false;
    }
    bool tie = i < plain->n && plain->margin[i] < GPU_TIE;
    CHECK(tie, "%s %s: token %d is %d, %d without speculation (margin %.3g)", what, g->name, i,
          i < r->n ? r->toks[i] : -1, i < plain->n ? plain->toks[i] : -1, i < plain->n ? plain->margin[i] : 0.0);
    if (tie) printf("  %s %s: differs at token %d, a near-tie (margin %.3g) without speculation\n", what, g->name,
                    i, plain->margin[i]);
    return tie;
}

static void print_stats(const char *what, const nc_scheduler_stats *st) {
    printf("%-34s %5.2f tokens per verifying step (%lld steps)", what,
           st->spec_verifies ? (double)st->spec_emitted / (double)st->spec_verifies : 0.0,
           (long long)st->spec_verifies);
    for (int k = 0; k < NC_SPEC_KINDS; k++)
        if (st->spec_drafted[k])
            printf("; %s %lld/%lld = %.0f%%", nc_spec_kind_name((nc_spec_kind)k), (long long)st->spec_accepted[k],
                   (long long)st->spec_drafted[k], 100.0 * (double)st->spec_accepted[k] / (double)st->spec_drafted[k]);
    printf("\n");
}

int main(void) {
    const char *device = getenv("NC_TEST_DEVICE") && *getenv("NC_TEST_DEVICE") ? getenv("NC_TEST_DEVICE") : "cpu";
    gpu = !strcmp(device, "cuda");
    if (gpu && !nc_backend_cuda_available()) {
        printf("skipped: no usable CUDA device\n");
        return CHECK_SKIP;
    }
    cJSON *root = load_golden();
    if (!root) {
        printf("skipped: %s is not in this checkout\n", GOLDEN);
        return CHECK_SKIP;
    }
    const char *limit = getenv("NC_TEST_CASES");
    if (limit && atoi(limit) > 0) n_cases = NC_MIN(n_cases, atoi(limit));
    nc_bundle_options o;
    nc_bundle_options_init(&o);
    o.load.path = MODEL;
    nc_model *model = NULL;
    nc_tokenizer *tok = NULL;
    if (nc_bundle_load(&o, &model, &tok, true, NULL)) {
        printf("skipped: %s: %s\n", MODEL, nc_error());
        cJSON_Delete(root);
        return CHECK_SKIP;
    }
    int32_t per_seq = (model->cfg.sequence_len + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
    nc_backend_params tp = {.n_kv_blocks = 12 * per_seq, .max_seqs = 16, .n_threads = 2};
    nc_backend_params dp = {.n_kv_blocks = 4 * per_seq, .max_seqs = 4, .n_threads = 2};
    nc_model cut = *model; /* the first two layers: the same tokenizer, a weaker model */
    cut.cfg.n_layer = 2;
    nc_backend *target = nc_backend_create(device, model, &tp);
    nc_backend *self = nc_backend_create(device, model, &dp);
    nc_backend *weak = nc_backend_create(device, &cut, &dp);
    nc_bundle_options od;
    nc_bundle_options_init(&od);
    od.load.path = DRAFT;
    nc_model *draft_model = NULL;
    nc_tokenizer *draft_tok = NULL;
    CHECK(nc_bundle_load(&od, &draft_model, &draft_tok, true, NULL) == 0, "%s: %s", DRAFT, nc_error());
    nc_backend *trained = draft_model ? nc_backend_create(device, draft_model, &dp) : NULL;
    CHECK(target && self && weak && trained, "backends: %s", nc_error());
    if (!target || !self || !weak || !trained) return check_summary("test_spec_picochat");

    struct {
        const char *name;
        nc_spec_params spec;
        bool greedy_only;
    } configs[] = {
        {"prompt lookup, every proposal", {.always = true}, false},
        {"prompt lookup, priced", {.force = true}, true}, /* force: the default off CUDA's */
        {"draft: picochat itself", {.always = true, .no_lookup = true, .draft = self}, false},
        {"draft: picochat's first 2 layers", {.always = true, .no_lookup = true, .draft = weak}, true},
        {"draft: picochat-draft (trained)", {.always = true, .no_lookup = true, .draft = trained}, false},
        {"lookup + first-2-layers draft", {.always = true, .draft = weak}, true},
    };
    reply *plain = calloc(MAX_CASES, sizeof *plain), *spec = calloc(MAX_CASES, sizeof *spec);
    int ties = 0;
    for (int sampled = 0; sampled < (gpu ? 1 : 2); sampled++) {
        float temperature = sampled ? 2.5f : 0.0f;
        nc_spec_params off = {.off = true};
        run_all(target, tok, &off, temperature, plain);
        if (!sampled && !gpu)
            for (int i = 0; i < n_cases; i++) check_golden("without speculation", &cases[i], &plain[i]);
        for (size_t c = 0; c < NC_ARRAY_LEN(configs); c++) {
            if (sampled && configs[c].greedy_only) continue;
            nc_scheduler_stats st = run_all(target, tok, &configs[c].spec, temperature, spec);
            char what[96];
            snprintf(what, sizeof what, "%s %s:", sampled ? "sampled," : "greedy, ", configs[c].name);
            print_stats(what, &st);
            if (configs[c].spec.always) CHECK(st.spec_verifies > 0, "%s: nothing verified", what);
            for (int i = 0; i < n_cases; i++) {
                if (gpu) {
                    ties += check_gpu(what, &cases[i], &plain[i], &spec[i]);
                    continue;
                }
                bool same = spec[i].n == plain[i].n && spec[i].finish == plain[i].finish &&
                            !memcmp(spec[i].toks, plain[i].toks, sizeof(int32_t) * (size_t)plain[i].n);
                CHECK(same, "%s %s: differs from decoding without speculation", what, cases[i].name);
                if (!sampled) check_golden(what, &cases[i], &spec[i]);
            }
        }
    }
    printf("%s: %d conversations; %d runs differ from decoding without speculation, each at a near-tie of it\n",
           device, n_cases, ties);
    free(plain);
    free(spec);
    nc_backend_free(weak);
    nc_backend_free(trained);
    nc_model_free(draft_model);
    nc_tokenizer_free(draft_tok);
    nc_backend_free(self);
    nc_backend_free(target);
    nc_tokenizer_free(tok);
    nc_model_free(model);
    cJSON_Delete(root);
    return check_summary("test_spec_picochat");
}

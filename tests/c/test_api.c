/*
 * test_api.c: the public C API (include/nanochat.h) from the outside, on
 * the bundled picochat model, CPU.
 *
 * References (none of them our own engine's output):
 *   - tests/data/picochat/golden.json: PyTorch's greedy transcripts of 35
 *     conversations (fp32 CPU, nanochat's calculator forcing; made by
 *     tools/train_picochat.py): the rendered prompt ids, the generated ids
 *     (terminal token excluded), the finish reason, and the text with
 *     special tokens left out;
 *   - models/picochat/meta_004200.json: the model's sizes.
 * Checked: render_chat == the golden prompt ids; tokenize of a lone user
 * message == its ids inside the prompt; every greedy reply's tokens equal
 * PyTorch's (a difference is accepted only where PyTorch's top-2 margin is
 * below TIE, and the rest of that case is then not compared); detokenize
 * and the reply text agree with the golden text; streaming deltas
 * concatenate to the blocking text and report the same ids; a callback
 * stop; two threads sharing one engine; errors (bad path, bad options, bad
 * prompts, a prompt beyond max_context, re-entry from a callback) come back
 * through nc_engine_last_error() without crashing.
 */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "golden_cases.h"
#include "nanochat.h"

#define META "models/picochat/meta_004200.json"

/* The reply text with the tool's special tokens removed, as the golden
 * text shows it. */
static void strip_specials(const char *s, char *out) {
    static const char *specials[] = {"<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>"};
    while (*s) {
        size_t skip = 0;
        for (size_t k = 0; k < sizeof specials / sizeof *specials && !skip; k++)
            if (!strncmp(s, specials[k], strlen(specials[k]))) skip = strlen(specials[k]);
        if (skip) s += skip;
        else *out++ = *s++;
    }
    *out = 0;
}

/* ==== streaming ==== */

typedef struct {
    char text[8192];
    size_t len;
    int32_t ids[512];
    size_t n_ids;
    int stop_after; /* stop once this many tokens came (0: never) */
    nc_engine *reenter;
    int reenter_rc;
    char reenter_error[256];
} stream_sink;

static int sink(void *user, const char *delta, size_t len, int32_t token) {
    stream_sink *s = user;
    if (s->len + len < sizeof s->text) {
        memcpy(s->text + s->len, delta, len);
        s->len += len;
        s->text[s->len] = 0;
    }
    if (token >= 0 && s->n_ids < 512) s->ids[s->n_ids++] = token;
    if (s->reenter) {
        nc_prompt p = {.text = "x"};
        s->reenter_rc = nc_engine_generate(s->reenter, &p, NULL, NULL);
        snprintf(s->reenter_error, sizeof s->reenter_error, "%s", nc_engine_last_error());
        s->reenter = NULL;
    }
    return s->stop_after && (int)s->n_ids >= s->stop_after;
}

/* ==== golden conversations ==== */

/* Compares a reply with the golden case; returns whether it matched fully. */
static bool check_reply(const golden_case *g, const nc_reply *r) {
    size_t i;
    int same = golden_compare(g, r->tokens, r->n_tokens, &i);
    if (same != 1) {
        CHECK(same == 0, "%s: token %zu is %d, PyTorch's %d (margin %.4g); %zu vs %zu tokens", g->name, i,
              i < r->n_tokens ? r->tokens[i] : -1, i < g->n_tokens ? g->tokens[i] : -1,
              i < g->n_margins ? g->margins[i] : 0.0, r->n_tokens, g->n_tokens);
        return false;
    }
    CHECK(!strcmp(nc_reply_finish_name(r->finish), g->finish), "%s: finish %s, PyTorch's %s", g->name,
          nc_reply_finish_name(r->finish), g->finish);
    char *stripped = malloc(r->text_len + 1);
    strip_specials(r->text, stripped);
    CHECK(!strcmp(stripped, g->text), "%s: text '%s', PyTorch's '%s'", g->name, stripped, g->text);
    free(stripped);
    return true;
}

static void test_golden(nc_engine *e, const cJSON *cases) {
    int n_cases = 0, n_exact = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        golden_case g;
        if (load_case(c, &g)) continue;
        n_cases++;
        int32_t ids[512];
        int64_t n = nc_engine_render_chat(e, g.msgs, g.n_msgs, ids, 512);
        CHECK(n == (int64_t)g.n_prompt && !memcmp(ids, g.prompt, g.n_prompt * sizeof *ids),
              "%s: rendered prompt differs (%lld vs %zu ids)", g.name, (long long)n, g.n_prompt);
        if (g.n_msgs == 1) { /* <|bos|><|user_start|> text <|user_end|><|assistant_start|> */
            int64_t k = nc_engine_tokenize(e, g.msgs[0].content, strlen(g.msgs[0].content), ids, 512);
            CHECK(k == (int64_t)g.n_prompt - 4 && !memcmp(ids, g.prompt + 2, (size_t)k * sizeof *ids),
                  "%s: tokenize differs from the golden prompt", g.name);
        }
        nc_generate_options greedy = {.max_tokens = g.max_tokens};
        nc_prompt p = {.messages = g.msgs, .n_messages = g.n_msgs};
        nc_reply r;
        int rc = nc_engine_generate(e, &p, &greedy, &r);
        CHECK(rc == 0, "%s: generate failed: %s", g.name, nc_engine_last_error());
        CHECK(!strcmp(nc_engine_last_error(), ""), "%s: error '%s' after success", g.name, nc_engine_last_error());
        CHECK(r.n_prompt_tokens == (int32_t)g.n_prompt, "%s: n_prompt_tokens %d", g.name, r.n_prompt_tokens);
        if (rc == 0 && check_reply(&g, &r)) n_exact++;

        /* Decoding PyTorch's ids: the golden text once the tool's specials are dropped. */
        char text[8192], stripped[8192];
        int64_t len = nc_engine_detokenize(e, g.tokens, g.n_tokens, text, sizeof text);
        CHECK(len >= 0 && (size_t)len < sizeof text, "%s: detokenize failed: %s", g.name, nc_engine_last_error());
        if (len >= 0 && (size_t)len < sizeof text) {
            strip_specials(text, stripped);
            CHECK(!strcmp(stripped, g.text), "%s: detokenize gives '%s'", g.name, stripped);
            CHECK(rc != 0 || (r.text_len == (size_t)len && !strcmp(r.text, text)) || r.n_tokens != g.n_tokens,
                  "%s: reply text differs from detokenize of its tokens", g.name);
        }
        nc_reply_free(&r);
    }
    printf("golden: %d cases, %d equal PyTorch's tokens exactly\n", n_cases, n_exact);
    CHECK(n_cases >= 30, "only %d golden cases", n_cases);
}

/* Streaming equals blocking; a callback can stop the reply. */
static void test_stream(nc_engine *e) {
    nc_message m = {"user", "Who are you?"};
    nc_prompt p = {.messages = &m, .n_messages = 1};
    nc_generate_options greedy = {.max_tokens = 128};
    nc_reply blocking, streamed;
    CHECK(nc_engine_generate(e, &p, &greedy, &blocking) == 0, "blocking: %s", nc_engine_last_error());
    stream_sink *s = calloc(1, sizeof *s);
    CHECK(nc_engine_generate_stream(e, &p, &greedy, sink, s, &streamed) == 0, "stream: %s", nc_engine_last_error());
    CHECK(s->len == blocking.text_len && !memcmp(s->text, blocking.text, s->len),
          "deltas '%s' != blocking text '%s'", s->text, blocking.text);
    CHECK(s->n_ids == blocking.n_tokens && !memcmp(s->ids, blocking.tokens, s->n_ids * sizeof *s->ids),
          "streamed ids differ from the blocking reply's");
    CHECK(streamed.text_len == blocking.text_len && !strcmp(streamed.text, blocking.text), "stream reply text");
    CHECK(streamed.n_cached_tokens > 0, "the repeated prompt reused no cached tokens");
    nc_reply_free(&streamed);

    memset(s, 0, sizeof *s);
    s->stop_after = 3;
    CHECK(nc_engine_generate_stream(e, &p, &greedy, sink, s, &streamed) == 0, "stop: %s", nc_engine_last_error());
    CHECK(streamed.finish == NC_REPLY_CANCELLED, "finish %s after a stop", nc_reply_finish_name(streamed.finish));
    CHECK(streamed.n_tokens == 3 && !memcmp(streamed.tokens, blocking.tokens, 3 * sizeof(int32_t)),
          "stopped reply has %zu tokens", streamed.n_tokens);
    CHECK(streamed.text_len == s->len && !memcmp(streamed.text, s->text, s->len) &&
              !strncmp(blocking.text, s->text, s->len),
          "stopped text '%s' is not the start of '%s'", s->text, blocking.text);
    nc_reply_free(&streamed);

    /* Only the stream, no reply; and the same engine from its own callback: refused, no deadlock. */
    memset(s, 0, sizeof *s);
    s->reenter = e;
    CHECK(nc_engine_generate_stream(e, &p, &greedy, sink, s, NULL) == 0, "no reply: %s", nc_engine_last_error());
    CHECK(s->reenter_rc == -1 && strstr(s->reenter_error, "callback"), "re-entry gave %d '%s'", s->reenter_rc,
          s->reenter_error);
    CHECK(s->len == blocking.text_len, "stream without a reply");
    free(s);
    nc_reply_free(&blocking);
}

/* Two threads share one engine: both get PyTorch's reply. */
typedef struct {
    nc_engine *e;
    const golden_case *g;
    nc_reply r;
    int rc;
} thread_job;

static void *thread_main(void *arg) {
    thread_job *j = arg;
    nc_generate_options greedy = {.max_tokens = j->g->max_tokens};
    nc_prompt p = {.messages = j->g->msgs, .n_messages = j->g->n_msgs};
    j->rc = nc_engine_generate(j->e, &p, &greedy, &j->r);
    return NULL;
}

static void test_threads(nc_engine *e, const cJSON *cases) {
    golden_case g[2];
    load_case(cJSON_GetArrayItem(cases, 1), &g[0]);
    load_case(cJSON_GetArrayItem(cases, 9), &g[1]);
    thread_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (thread_job){.e = e, .g = &g[i % 2]};
        pthread_create(&th[i], NULL, thread_main, &jobs[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].rc == 0, "thread %d: %s", i, nc_engine_last_error());
        if (jobs[i].rc == 0) check_reply(jobs[i].g, &jobs[i].r);
        nc_reply_free(&jobs[i].r);
    }
}

/* ==== errors ==== */

#define EXPECT_FAIL(call, needle, what)                                                         \
    do {                                                                                        \
        int64_t rc_ = (call);                                                                   \
        CHECK(rc_ == -1 && strstr(nc_engine_last_error(), needle), "%s: rc %lld, error '%s'", what, \
              (long long)rc_, nc_engine_last_error());                                          \
    } while (0)

static void test_errors(nc_engine *e) {
    nc_engine_options bad = {.model_path = "/no/such/model-dir"};
    CHECK(nc_engine_open(&bad) == NULL && strstr(nc_engine_last_error(), "/no/such/model-dir"),
          "bad path: '%s'", nc_engine_last_error());
    nc_engine_options bad_dev = {.device = "tpu"};
    CHECK(nc_engine_open(&bad_dev) == NULL && strstr(nc_engine_last_error(), "device"), "bad device: '%s'",
          nc_engine_last_error());
    nc_engine_options bad_ctx = {.device = "cpu", .max_context = 100000};
    CHECK(nc_engine_open(&bad_ctx) == NULL && strstr(nc_engine_last_error(), "max_context"), "bad max_context: '%s'",
          nc_engine_last_error());
    nc_engine_options bad_tok = {.device = "cpu", .tokenizer_path = GOLDEN};
    CHECK(nc_engine_open(&bad_tok) == NULL && strstr(nc_engine_last_error(), "golden.json"), "bad tokenizer: '%s'",
          nc_engine_last_error());

    nc_message m = {"user", "Hello!"};
    nc_prompt ok = {.messages = &m, .n_messages = 1};
    nc_reply r;
    nc_generate_options o = {.temperature = -1};
    EXPECT_FAIL(nc_engine_generate(e, &ok, &o, &r), "temperature", "temperature -1");
    CHECK(r.n_tokens == 0 && r.text == NULL && r.tokens == NULL, "refused reply not zeroed");
    o = (nc_generate_options){.top_k = -5};
    EXPECT_FAIL(nc_engine_generate(e, &ok, &o, &r), "top_k", "top_k -5");
    o = (nc_generate_options){.top_p = 1.5f};
    EXPECT_FAIL(nc_engine_generate(e, &ok, &o, &r), "top_p", "top_p 1.5");
    o = (nc_generate_options){.max_tokens = -1};
    EXPECT_FAIL(nc_engine_generate(e, &ok, &o, &r), "max_tokens", "max_tokens -1");
    EXPECT_FAIL(nc_engine_generate(NULL, &ok, NULL, &r), "engine", "NULL engine");
    EXPECT_FAIL(nc_engine_generate(e, NULL, NULL, &r), "prompt", "NULL prompt");
    nc_prompt two = {.messages = &m, .n_messages = 1, .text = "hi"};
    EXPECT_FAIL(nc_engine_generate(e, &two, NULL, &r), "exactly one", "two prompts");
    nc_prompt none = {0};
    EXPECT_FAIL(nc_engine_generate(e, &none, NULL, &r), "exactly one", "no prompt");
    nc_message role = {"robot", "hi"};
    nc_prompt bad_role = {.messages = &role, .n_messages = 1};
    EXPECT_FAIL(nc_engine_generate(e, &bad_role, NULL, &r), "robot", "unknown role");
    nc_message null_content = {"user", NULL};
    nc_prompt nc = {.messages = &null_content, .n_messages = 1};
    EXPECT_FAIL(nc_engine_generate(e, &nc, NULL, &r), "content", "NULL content");
    nc_message late_system[2] = {{"user", "hi"}, {"system", "be brief"}};
    nc_prompt ls = {.messages = late_system, .n_messages = 2};
    EXPECT_FAIL(nc_engine_generate(e, &ls, NULL, &r), "system", "system not first");
    int32_t bad_ids[2] = {4087, 999999};
    nc_prompt bi = {.ids = bad_ids, .n_ids = 2};
    EXPECT_FAIL(nc_engine_generate(e, &bi, NULL, &r), "999999", "id outside the vocabulary");
    EXPECT_FAIL(nc_engine_detokenize(e, bad_ids, 2, NULL, 0), "999999", "detokenize a bad id");
    EXPECT_FAIL(nc_engine_tokenize(e, "abc", 3, NULL, 5), "cap", "NULL ids with cap");
    EXPECT_FAIL(nc_engine_render_chat(e, NULL, 0, NULL, 0), "empty", "empty conversation");

    /* A prompt longer than the context: refused, naming the limit. */
    size_t big = 600 * 6;
    char *text = malloc(big + 1);
    for (size_t i = 0; i < big; i += 6) memcpy(text + i, "hello ", 6);
    text[big] = 0;
    nc_prompt long_prompt = {.text = text};
    EXPECT_FAIL(nc_engine_generate(e, &long_prompt, NULL, &r), "context limit", "prompt beyond the context");
    free(text);
    nc_reply_free(&r);

    /* After all that, a success clears the error. */
    CHECK(nc_engine_special_token(e, "<|assistant_end|>") == 4091, "<|assistant_end|> id");
    CHECK(!strcmp(nc_engine_last_error(), ""), "error not cleared by a success");
    CHECK(nc_engine_special_token(e, "<|nope|>") == -1, "unknown special token");
}

int main(void) {
    unsetenv("NANOCHAT_MODEL"); /* the bundled model, wherever the test runs */
    char *golden = read_file(GOLDEN), *meta = read_file(META);
    if (!golden || !meta) {
        fprintf(stderr, "missing %s or %s (run from the repository root)\n", GOLDEN, META);
        return 1;
    }
    cJSON *gj = cJSON_Parse(golden), *mj = cJSON_Parse(meta);
    CHECK(gj && mj, "JSON parse");
    if (!gj || !mj) return check_summary("test_api");
    const cJSON *cases = cJSON_GetObjectItem(gj, "cases"), *cfg = cJSON_GetObjectItem(mj, "model_config");

    CHECK(!strcmp(nc_version(), NANOCHAT_VERSION), "nc_version %s vs header %s", nc_version(), NANOCHAT_VERSION);
    nc_engine_options opts = {.device = "cpu"}; /* model_path NULL: the bundled picochat */
    nc_engine *e = nc_engine_open(&opts);
    CHECK(e != NULL, "open the bundled model: %s", nc_engine_last_error());
    if (!e) return check_summary("test_api");

    nc_engine_info info;
    CHECK(nc_engine_get_info(e, &info) == 0, "info");
    CHECK(info.n_layer == cJSON_GetObjectItem(cfg, "n_layer")->valueint, "n_layer %d", info.n_layer);
    CHECK(info.n_embd == cJSON_GetObjectItem(cfg, "n_embd")->valueint, "n_embd %d", info.n_embd);
    CHECK(info.n_head == cJSON_GetObjectItem(cfg, "n_head")->valueint, "n_head %d", info.n_head);
    CHECK(info.vocab_size == cJSON_GetObjectItem(cfg, "vocab_size")->valueint, "vocab_size %d", info.vocab_size);
    CHECK(info.sequence_len == cJSON_GetObjectItem(cfg, "sequence_len")->valueint, "sequence_len %d",
          info.sequence_len);
    CHECK(info.max_context == info.sequence_len, "max_context %d", info.max_context);
    CHECK(!strcmp(info.generation, "V1") && strstr(info.source, "picochat") && info.device && *info.device,
          "info strings: %s %s %s", info.generation, info.source, info.device);

    test_golden(e, cases);
    test_stream(e);
    test_threads(e, cases);
    test_errors(e);
    nc_engine_close(e);
    nc_engine_close(NULL);

    cJSON_Delete(gj);
    cJSON_Delete(mj);
    free(golden);
    free(meta);
    return check_summary("test_api");
}

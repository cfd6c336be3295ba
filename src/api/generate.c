/*
 * generate.c: nc_engine_generate / nc_engine_generate_stream
 * (include/nanochat.h): a prompt (chat messages, completion text or ids)
 * and sampling options in, a reply (text, tokens, finish reason) out, with
 * text deltas streamed to a callback as tokens arrive.
 *
 * Mirrors nanochat's Engine.generate() for one sample as chat_cli.py and
 * chat_web.py drive it: render the conversation, sample until
 * <|assistant_end|> / <|bos|> or max_tokens, run the calculator tool, show
 * tokens as they come (engine/token_text.h: never half a UTF-8 character,
 * special tokens as their text). The scheduler and its stepping loop are
 * the engine bundle's (engine/bundle.h), shared with the CLI; the stepping
 * runs on the caller's thread under the engine's generation lock.
 */
#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include "../engine/token_text.h"
#include "../util/common.h"
#include "api_internal.h"

_Static_assert((int)NC_REPLY_STOP == (int)NC_FINISH_STOP && (int)NC_REPLY_LENGTH == (int)NC_FINISH_LENGTH &&
                   (int)NC_REPLY_CANCELLED == (int)NC_FINISH_CANCELLED &&
                   (int)NC_REPLY_ERROR == (int)NC_FINISH_ERROR,
               "public finish reasons mirror the scheduler's");

/* The engine a generation is running for on this thread: a callback that
 * starts another generation on it would deadlock on gen_lock. */
static _Thread_local const nc_engine *generating;

nc_generate_options nc_generate_options_default(void) {
    nc_gen_params g = nc_gen_params_default();
    return (nc_generate_options){.temperature = g.temperature, .top_k = g.top_k, .top_p = g.top_p,
                                 .min_p = g.min_p, .seed = g.seed, .max_tokens = g.max_tokens,
                                 .no_calculator = !g.use_calculator};
}

const char *nc_reply_finish_name(nc_reply_finish f) {
    return nc_finish_reason_name((nc_finish_reason)f);
}

void nc_reply_free(nc_reply *r) {
    if (!r) return;
    free(r->text);
    free(r->tokens);
    memset(r, 0, sizeof *r);
}

/* ==== inputs ==== */

/* Public options -> scheduler params (one row, no logprobs), validated. */
static int to_gen_params(const nc_generate_options *o, nc_gen_params *g) {
    *g = nc_gen_params_default();
    if (!o) return 0;
    if (o->max_tokens < 0) return nc_pub_fail("max_tokens must be >= 1 (0 = 256), got %d", o->max_tokens);
    g->temperature = o->temperature;
    g->top_k = o->top_k;
    g->top_p = o->top_p == 0.0f ? 1.0f : o->top_p;
    g->min_p = o->min_p;
    g->seed = o->seed;
    g->max_tokens = o->max_tokens ? o->max_tokens : 256;
    g->use_calculator = !o->no_calculator;
    return nc_gen_params_validate(g) ? nc_pub_failed() : 0;
}

static int build_prompt(const nc_engine *e, const nc_prompt *p, nc_tokens *out) {
    if (!p) return nc_pub_fail("the prompt is NULL");
    int given = (p->messages || p->n_messages) + (p->text != NULL) + (p->ids || p->n_ids);
    if (given != 1)
        return nc_pub_fail("the prompt must set exactly one of messages, text or ids (%d are set)", given);
    if (p->messages || p->n_messages) return nc_pub_render_messages(e, p->messages, p->n_messages, out);
    if (p->text) {
        int32_t bos = nc_tokenizer_special_id(e->b.tok, NC_TOK_BOS);
        if (bos < 0) return nc_pub_fail("the tokenizer has no <|bos|> token to start a completion with");
        nc_tokens_push(out, bos);
        return nc_tokenizer_encode(e->b.tok, p->text, strlen(p->text), out) ? nc_pub_failed() : 0;
    }
    if (!p->ids || !p->n_ids) return nc_pub_fail("the prompt's ids are empty");
    if (p->n_ids > INT32_MAX) return nc_pub_fail("the prompt has too many ids (%zu)", p->n_ids);
    nc_tokens_append(out, p->ids, p->n_ids);
    return 0;
}

/* ==== one call ==== */

typedef struct {
    const nc_engine *e;
    nc_stream_fn cb;
    void *user;
    bool stopped;            /* the callback asked to stop: no more deltas */
    nc_token_text decoder;   /* tokens -> text, special tokens as their text */
    int32_t *tokens;         /* generated ids, terminal excluded */
    size_t n_tokens, cap_tokens;
    char *text;              /* concatenated deltas */
    size_t len, cap;
    nc_finish_reason finish;
    char error[NC_ERROR_MAX];
    int32_t n_prompt, n_cached;
} gen_call;

/* Appends a delta to the reply's text and shows it to the callback.
 * Buffers grow geometrically, so the token loop rarely allocates. */
static void deliver(gen_call *c, const char *s, size_t n, int32_t token, bool final) {
    nc_xappend(&c->text, &c->len, &c->cap, s, n);
    if (c->cb && (!c->stopped || final) && c->cb(c->user, s, n, token)) c->stopped = true;
}

static bool on_event(void *user, const nc_gen_event *ev) {
    gen_call *c = user;
    c->n_cached = ev->n_cached_tokens;
    if (ev->row != 0) return false;
    if (ev->token >= 0 && !ev->is_terminal) {
        if (c->n_tokens == c->cap_tokens) {
            c->cap_tokens *= 2;
            c->tokens = nc_xrealloc(c->tokens, c->cap_tokens * sizeof *c->tokens);
        }
        c->tokens[c->n_tokens++] = ev->token;
        nc_tool_event tool; /* calls stay in the text in this view */
        size_t n;
        const char *s = nc_token_text_feed(&c->decoder, ev->token, &n, &tool);
        deliver(c, s, n, ev->token, false);
    }
    if (ev->finish != NC_FINISH_NONE) {
        c->finish = ev->finish;
        if (ev->error) snprintf(c->error, sizeof c->error, "%s", ev->error);
        nc_tool_event tool;
        size_t n;
        const char *s = nc_token_text_end(&c->decoder, &n, &tool);
        if (n > 0) deliver(c, s, n, -1, true);
    }
    return c->stopped;
}

static void reply_from(gen_call *c, nc_reply *r) {
    r->text = c->text;
    r->text_len = c->len;
    r->tokens = c->tokens;
    r->n_tokens = c->n_tokens;
    r->finish = (nc_reply_finish)c->finish;
    r->n_prompt_tokens = c->n_prompt;
    r->n_cached_tokens = c->n_cached;
    c->text = NULL;
    c->tokens = NULL;
}

int nc_engine_generate_stream(nc_engine *e, const nc_prompt *prompt, const nc_generate_options *opts,
                              nc_stream_fn cb, void *user, nc_reply *reply) {
    nc_pub_clear_error();
    if (reply) memset(reply, 0, sizeof *reply);
    if (!e) return nc_pub_fail("nc_engine_generate: engine is NULL");
    if (generating == e)
        return nc_pub_fail("nc_engine_generate: called from a stream callback of the same engine");
    nc_gen_params g;
    if (to_gen_params(opts, &g)) return -1;
    nc_tokens ids = {0};
    if (build_prompt(e, prompt, &ids)) {
        nc_tokens_free(&ids);
        return -1;
    }

    gen_call c = {.e = e, .cb = cb, .user = user, .n_prompt = (int32_t)ids.n};
    nc_token_text_init(&c.decoder, e->b.tok, NC_TEXT_AS_DECODED);
    c.cap_tokens = (size_t)NC_MIN(g.max_tokens, e->b.max_context) + 1;
    c.tokens = nc_xmalloc(c.cap_tokens * sizeof *c.tokens);
    c.cap = 8 * c.cap_tokens + 64;
    c.text = nc_xmalloc(c.cap);
    c.text[0] = 0;

    pthread_mutex_lock(&e->gen_lock);
    const nc_engine *outer = generating;
    generating = e;
    int rc = nc_bundle_run(&e->b, ids.ids, (int32_t)ids.n, &g, on_event, &c);
    generating = outer;
    pthread_mutex_unlock(&e->gen_lock);
    nc_tokens_free(&ids);

    if (rc) {
        nc_pub_failed(); /* refused: nothing ran, the reply stays empty */
    } else {
        if (c.finish == NC_FINISH_ERROR || c.finish == NC_FINISH_NONE) {
            rc = nc_pub_fail("generation failed: %s", c.error[0] ? c.error : "the request never finished");
            c.finish = NC_FINISH_ERROR;
        }
        if (reply) reply_from(&c, reply);
    }
    nc_token_text_free(&c.decoder);
    free(c.tokens);
    free(c.text);
    return rc;
}

int nc_engine_generate(nc_engine *e, const nc_prompt *prompt, const nc_generate_options *opts, nc_reply *reply) {
    return nc_engine_generate_stream(e, prompt, opts, NULL, NULL, reply);
}

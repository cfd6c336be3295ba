/*
 * engine.c: the public engine handle (include/nanochat.h): open and close,
 * the error buffer, model info, tokenize / detokenize and chat rendering.
 *
 * Thin on purpose: opening is engine/bundle.c's (the same code the CLI
 * and the server use, bundled default model included), hf: names are
 * hub/'s, tokens and chat rendering are the tokenizer's. What this layer
 * adds is the public conventions: no internal type crosses the header,
 * caller-sized buffers, every failure reported through
 * nc_engine_last_error() instead of stderr.
 */
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <string.h>

#include "../hub/hub.h"
#include "../util/common.h"
#include "api_internal.h"
#include "../model/quantize.h"

#define DEFAULT_MAX_BATCH 8
#define MAX_BATCH 4096
/* An embedded engine queues whatever its caller submits (an evaluation
 * may submit thousands of prompts at once); the server's limit is for
 * shedding load, which has no meaning here. */
#define QUEUE_UNLIMITED (1 << 30)

_Static_assert(sizeof(sig_atomic_t) == sizeof(int), "nc_engine_options.interrupt is read as a sig_atomic_t");

/* ==== errors ==== */

/* Separate from nc_error() so that a successful public call reads "" and
 * internal calls that fail and recover inside a public call leave no
 * trace. Thread-local like nc_error(). */
static _Thread_local char api_error[NC_ERROR_MAX];

void nc_pub_clear_error(void) {
    api_error[0] = 0;
}

int nc_pub_failed(void) {
    const char *msg = nc_error();
    snprintf(api_error, sizeof api_error, "%s", *msg ? msg : "unknown error");
    return -1;
}

int nc_pub_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(api_error, sizeof api_error, fmt, ap);
    va_end(ap);
    return -1;
}

const char *nc_engine_last_error(void) {
    return api_error;
}

const char *nc_version(void) {
    return NANOCHAT_VERSION;
}

/* ==== open / close ==== */

void nc_engine_close(nc_engine *e) {
    if (!e) return;
    nc_bundle_close(&e->b);
    nc_pub_requests_free_all(e);
    pthread_mutex_destroy(&e->gen_lock);
    pthread_mutex_destroy(&e->req_lock);
    free(e);
}

static int check_options(const nc_engine_options *o) {
    if (o->device && strcmp(o->device, "cpu") && strcmp(o->device, "cuda") && strcmp(o->device, "auto"))
        return nc_pub_fail("device must be \"cpu\", \"cuda\" or \"auto\", got \"%s\"", o->device);
    if (o->threads < 0 || o->threads > 1024)
        return nc_pub_fail("threads must be in 0..1024 (0 = all cores), got %d", o->threads);
    if (o->max_context < 0)
        return nc_pub_fail("max_context must be >= 0 (0 = the model's sequence_len), got %d", o->max_context);
    if (o->max_batch < 0 || o->max_batch > MAX_BATCH)
        return nc_pub_fail("max_batch must be in 0..%d (0 = %d), got %d", MAX_BATCH, DEFAULT_MAX_BATCH,
                           o->max_batch);
    if (o->kv_blocks < 0)
        return nc_pub_fail("kv_blocks must be >= 0 (0 = max_batch + 2 full contexts), got %d", o->kv_blocks);
    if (o->model_path && !*o->model_path) return nc_pub_fail("model_path is empty (NULL selects the default model)");
    if (o->random && o->model_path) return nc_pub_fail("model_path and random are mutually exclusive");
    if (o->tokenizer_path && !*o->tokenizer_path)
        return nc_pub_fail("tokenizer_path is empty (NULL finds it beside the model)");
    nc_weight_format f;
    if (o->weights && nc_weight_format_parse(o->weights, &f)) return nc_pub_failed();
    if (o->kv_cache && strcmp(o->kv_cache, "bf16") && strcmp(o->kv_cache, "fp8"))
        return nc_pub_fail("kv_cache must be \"bf16\" or \"fp8\", got \"%s\"", o->kv_cache);
    return 0;
}

/* An hf: model name becomes its local snapshot folder, r->dir (what the
 * cache lacks is downloaded first); other paths are left alone. */
static int resolve_hub(const nc_engine_options *o, nc_hub_result *r, const char **path) {
    if (!o->model_path || !nc_hub_is_ref(o->model_path)) return 0;
    nc_hub_options ho = {.step = -1, .quiet = !o->progress, .interrupted = (volatile sig_atomic_t *)o->interrupt};
    if (nc_hub_resolve(o->model_path, &ho, r)) return nc_pub_failed();
    *path = r->dir;
    return 0;
}

nc_engine *nc_engine_open(const nc_engine_options *opts) {
    nc_pub_clear_error();
    nc_engine_options o = {0};
    if (opts) o = *opts;
    if (check_options(&o)) return NULL;
    nc_hub_result *hub = calloc(1, sizeof *hub);
    nc_engine *e = calloc(1, sizeof *e);
    if (!e || !hub) {
        free(hub);
        free(e);
        nc_pub_fail("out of memory");
        return NULL;
    }
    pthread_mutex_init(&e->gen_lock, NULL);
    pthread_mutex_init(&e->req_lock, NULL);
    e->max_batch = o.max_batch ? o.max_batch : DEFAULT_MAX_BATCH;
    nc_bundle_options bo;
    nc_bundle_options_init(&bo);
    bo.load.path = o.model_path;
    bo.load.tokenizer_path = o.tokenizer_path;
    bo.random_spec = o.random;
    bo.device = o.device;
    bo.threads = o.threads;
    bo.weights = o.weights;
    bo.kv_cache = o.kv_cache && !strcmp(o.kv_cache, "fp8") ? NC_KV_CACHE_FP8 : NC_KV_CACHE_BF16;
    bo.deterministic = o.deterministic != 0;
    bo.max_context = o.max_context; /* within the model's sequence_len */
    bo.max_queue = QUEUE_UNLIMITED;
    if (o.kv_blocks) { /* the caller's pool, shared by max_batch rows */
        bo.max_batch = e->max_batch;
        bo.kv_blocks = o.kv_blocks;
    } else {
        bo.rows = e->max_batch;
    }
    int rc = resolve_hub(&o, hub, &bo.load.path);
    if (!rc && nc_bundle_open(&e->b, &bo)) rc = nc_pub_failed();
    free(hub);
    if (rc) {
        nc_engine_close(e);
        return NULL;
    }
    return e;
}

/* ==== queries ==== */

int nc_engine_get_info(const nc_engine *e, nc_engine_info *info) {
    nc_pub_clear_error();
    if (!e || !info) return nc_pub_fail("nc_engine_get_info: engine and info are required");
    const nc_model_config *c = &e->b.model->cfg;
    memset(info, 0, sizeof *info);
    info->n_layer = c->n_layer;
    info->n_embd = c->n_embd;
    info->n_head = c->n_head;
    info->n_kv_head = c->n_kv_head;
    info->vocab_size = c->vocab_size;
    info->sequence_len = c->sequence_len;
    info->max_context = e->b.max_context;
    info->n_params = nc_config_param_count(c);
    info->generation = nc_generation_name(c->generation);
    info->source = e->b.model->source ? e->b.model->source : "";
    info->format = e->b.model->format ? e->b.model->format : "";
    info->device = nc_backend_describe(e->b.backend);
    info->tokenizer_vocab_size = nc_tokenizer_vocab_size(e->b.tok);
    info->max_batch = e->max_batch;
    info->kv_blocks = e->b.backend->n_kv_blocks;
    return 0;
}

/* ==== tokens and text ==== */

/* Copies a token list into the caller's buffer; returns its full length. */
static int64_t give_ids(const nc_tokens *t, int32_t *ids, size_t cap) {
    size_t k = NC_MIN(cap, t->n);
    if (k) memcpy(ids, t->ids, k * sizeof *ids);
    return (int64_t)t->n;
}

int64_t nc_engine_tokenize(const nc_engine *e, const char *text, size_t len, int32_t *ids, size_t cap) {
    nc_pub_clear_error();
    if (!e || (!text && len)) return nc_pub_fail("nc_engine_tokenize: engine and text are required");
    if (cap && !ids) return nc_pub_fail("nc_engine_tokenize: ids is NULL but cap is %zu", cap);
    nc_tokens t = {0};
    int64_t n = nc_tokenizer_encode(e->b.tok, text ? text : "", len, &t) ? nc_pub_failed() : give_ids(&t, ids, cap);
    nc_tokens_free(&t);
    return n;
}

int64_t nc_engine_detokenize(const nc_engine *e, const int32_t *ids, size_t n, char *text, size_t cap) {
    nc_pub_clear_error();
    if (!e || (!ids && n)) return nc_pub_fail("nc_engine_detokenize: engine and ids are required");
    if (cap && !text) return nc_pub_fail("nc_engine_detokenize: text is NULL but cap is %zu", cap);
    size_t len = 0;
    char *s = nc_tokenizer_decode(e->b.tok, ids, n, &len);
    if (!s) return nc_pub_failed();
    if (cap) {
        size_t k = NC_MIN(len, cap - 1);
        memcpy(text, s, k);
        text[k] = 0;
    }
    free(s);
    return (int64_t)len;
}

int32_t nc_engine_special_token(const nc_engine *e, const char *name) {
    nc_pub_clear_error();
    if (!e || !name) return nc_pub_fail("nc_engine_special_token: engine and name are required");
    return nc_tokenizer_special_by_name(e->b.tok, name);
}

int nc_pub_render_messages(const nc_engine *e, const nc_message *msgs, size_t n_msgs, nc_tokens *out) {
    if (!msgs || n_msgs == 0) return nc_pub_fail("the conversation is empty");
    if (n_msgs > INT_MAX) return nc_pub_fail("too many messages (%zu)", n_msgs);
    nc_chat_message *cm = malloc(n_msgs * sizeof *cm);
    if (!cm) return nc_pub_fail("out of memory for %zu messages", n_msgs);
    int rc = 0;
    for (size_t i = 0; i < n_msgs && !rc; i++) {
        const char *role = msgs[i].role ? msgs[i].role : "(null)";
        if (!strcmp(role, "system")) cm[i].role = NC_ROLE_SYSTEM;
        else if (!strcmp(role, "user")) cm[i].role = NC_ROLE_USER;
        else if (!strcmp(role, "assistant")) cm[i].role = NC_ROLE_ASSISTANT;
        else rc = nc_pub_fail("message %zu: unknown role \"%s\" (system, user or assistant)", i, role);
        if (!rc && !msgs[i].content) rc = nc_pub_fail("message %zu: content is NULL", i);
        if (!rc) {
            cm[i].content = msgs[i].content;
            cm[i].len = strlen(msgs[i].content);
        }
    }
    if (!rc && nc_chat_render(e->b.tok, cm, (int)n_msgs, out)) rc = nc_pub_failed();
    free(cm);
    return rc;
}

int64_t nc_engine_render_chat(const nc_engine *e, const nc_message *msgs, size_t n_msgs, int32_t *ids,
                              size_t cap) {
    nc_pub_clear_error();
    if (!e) return nc_pub_fail("nc_engine_render_chat: engine is required");
    if (cap && !ids) return nc_pub_fail("nc_engine_render_chat: ids is NULL but cap is %zu", cap);
    nc_tokens t = {0};
    int64_t n = nc_pub_render_messages(e, msgs, n_msgs, &t) ? -1 : give_ids(&t, ids, cap);
    nc_tokens_free(&t);
    return n;
}

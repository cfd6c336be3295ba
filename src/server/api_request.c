/*
 * api_request.c: JSON request bodies -> nc_api_request (see api_request.h).
 *
 * Everything that arrives over HTTP is checked here once: types, ranges,
 * lengths and UTF-8. The rules: a JSON null is the same as an absent field;
 * unknown fields are ignored; a field of the wrong type or out of range is a
 * 400 whose message names the field and its allowed range. nanochat's own
 * endpoint keeps nanochat's limits and messages (chat_web.py).
 */
#include "api_request.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "../tokenizer/utf8.h"
#include "../util/common.h"

/* ==== errors ==== */

int nc_api_fail(nc_api_error *err, int status, const char *param, const char *fmt, ...) {
    err->status = status;
    err->code = NULL;
    snprintf(err->param, sizeof err->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* ==== typed field access ==== */

/* The field, or NULL when absent or JSON null. */
static const cJSON *field(const cJSON *obj, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
    return (f && !cJSON_IsNull(f)) ? f : NULL;
}

/* 1 = present and valid, 0 = absent, -1 = error (err filled). */
static int get_number(const cJSON *obj, const char *name, double lo, double hi, double *out,
                      nc_api_error *err) {
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!cJSON_IsNumber(f))
        return nc_api_fail(err, 400, name, "'%s' must be a number", name);
    double v = f->valuedouble;
    if (!isfinite(v) || v < lo || v > hi)
        return nc_api_fail(err, 400, name, "'%s' must be between %g and %g (got %g)", name, lo, hi, v);
    *out = v;
    return 1;
}

static bool is_integer(const cJSON *f) {
    if (!cJSON_IsNumber(f)) return false;
    double v = f->valuedouble;
    return isfinite(v) && v == floor(v) && fabs(v) <= 9007199254740992.0; /* 2^53 */
}

static int get_int(const cJSON *obj, const char *name, int64_t lo, int64_t hi, int64_t *out,
                   nc_api_error *err) {
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!is_integer(f))
        return nc_api_fail(err, 400, name, "'%s' must be an integer", name);
    double v = f->valuedouble;
    if (v < (double)lo || v > (double)hi)
        return nc_api_fail(err, 400, name, "'%s' must be between %lld and %lld (got %.0f)", name,
                           (long long)lo, (long long)hi, v);
    *out = (int64_t)v;
    return 1;
}

static int get_bool(const cJSON *obj, const char *name, bool *out, nc_api_error *err) {
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!cJSON_IsBool(f))
        return nc_api_fail(err, 400, name, "'%s' must be a boolean", name);
    *out = cJSON_IsTrue(f);
    return 1;
}

/* Copies a JSON string after checking its UTF-8; `param` names it in errors. */
static int copy_string(const cJSON *f, const char *param, char **out, size_t *out_len,
                       nc_api_error *err) {
    if (!cJSON_IsString(f) || !f->valuestring)
        return nc_api_fail(err, 400, param, "'%s' must be a string", param);
    size_t n = strlen(f->valuestring);
    if (!nc_utf8_valid(f->valuestring, n))
        return nc_api_fail(err, 400, param, "'%s' is not valid UTF-8", param);
    char *s = malloc(n + 1);
    if (!s) return nc_api_fail(err, 500, param, "out of memory");
    memcpy(s, f->valuestring, n + 1);
    *out = s;
    if (out_len) *out_len = n;
    return 0;
}

/* ==== messages ==== */

static int parse_role(const cJSON *m, const char *param, bool openai, nc_role *role, nc_api_error *err) {
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(m, "role");
    if (!cJSON_IsString(r) || !r->valuestring)
        return nc_api_fail(err, 400, param, "'%s.role' must be a string", param);
    const char *s = r->valuestring;
    if (!strcmp(s, "user")) *role = NC_ROLE_USER;
    else if (!strcmp(s, "assistant")) *role = NC_ROLE_ASSISTANT;
    else if (!strcmp(s, "system") || (openai && !strcmp(s, "developer"))) *role = NC_ROLE_SYSTEM;
    else
        return nc_api_fail(err, 400, param, "'%s.role' must be 'user', 'assistant' or 'system'%s",
                           param, openai ? " (or 'developer'); tool messages are not supported" : "");
    return 0;
}

/* OpenAI content: a string, or an array of parts of which the "text" parts
 * are joined; null (an assistant turn that only called tools) is empty. */
static int parse_openai_content(const cJSON *c, nc_role role, const char *param, char **out, size_t *len,
                                nc_api_error *err) {
    if (!c || (cJSON_IsNull(c) && role != NC_ROLE_ASSISTANT))
        return nc_api_fail(err, 400, param, "'%s' is required", param);
    if (cJSON_IsNull(c)) {
        *out = nc_xstrdup("");
        *len = 0;
        return 0;
    }
    if (cJSON_IsString(c)) return copy_string(c, param, out, len, err);
    if (!cJSON_IsArray(c))
        return nc_api_fail(err, 400, param, "'%s' must be a string or an array of text parts", param);
    size_t total = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type) || strcmp(type->valuestring, "text") ||
            !cJSON_IsString(text))
            return nc_api_fail(err, 400, param, "'%s' parts must be {\"type\": \"text\", \"text\": ...} "
                               "(this model reads text only)", param);
        total += strlen(text->valuestring);
    }
    char *s = malloc(total + 1);
    if (!s) return nc_api_fail(err, 500, param, "out of memory");
    size_t at = 0;
    cJSON_ArrayForEach(part, c) {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        size_t n = strlen(t);
        memcpy(s + at, t, n);
        at += n;
    }
    s[at] = 0;
    if (!nc_utf8_valid(s, at)) {
        free(s);
        return nc_api_fail(err, 400, param, "'%s' is not valid UTF-8", param);
    }
    *out = s;
    *len = at;
    return 0;
}

static int parse_messages(const cJSON *root, nc_api_kind kind, nc_api_request *r, nc_api_error *err) {
    bool nanochat = kind == NC_API_NANOCHAT;
    const cJSON *msgs = field(root, "messages");
    if (!msgs)
        return nc_api_fail(err, 400, "messages", nanochat ? "At least one message is required"
                                                          : "'messages' is required");
    if (!cJSON_IsArray(msgs))
        return nc_api_fail(err, 400, "messages", "'messages' must be an array");
    int n = cJSON_GetArraySize(msgs);
    int max = nanochat ? NC_NANOCHAT_MAX_MESSAGES : NC_API_MAX_MESSAGES;
    if (n == 0)
        return nc_api_fail(err, 400, "messages", "At least one message is required");
    if (n > max)
        return nc_api_fail(err, 400, "messages",
                           "Too many messages. Maximum %d messages allowed per request", max);
    r->messages = nc_xcalloc((size_t)n, sizeof *r->messages);
    size_t total_chars = 0;
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        char param[64];
        snprintf(param, sizeof param, "messages[%d]", i);
        if (!cJSON_IsObject(m))
            return nc_api_fail(err, 400, param, "'%s' must be an object with 'role' and 'content'", param);
        nc_chat_message *cm = &r->messages[i];
        if (parse_role(m, param, !nanochat, &cm->role, err)) return -1;
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(m, "content");
        char cparam[80];
        snprintf(cparam, sizeof cparam, "messages[%d].content", i);
        char *text = NULL;
        size_t len = 0;
        if (nanochat) {
            if (!cJSON_IsString(c))
                return nc_api_fail(err, 400, cparam, "'%s' must be a string", cparam);
            if (copy_string(c, cparam, &text, &len, err)) return -1;
        } else if (parse_openai_content(c, cm->role, cparam, &text, &len, err)) {
            return -1;
        }
        cm->content = text;
        cm->len = len;
        r->n_messages = ++i;
        if (nanochat) {
            size_t chars = nc_utf8_length(text, len);
            if (chars == 0)
                return nc_api_fail(err, 400, cparam, "Message %d has empty content", i - 1);
            if (chars > NC_NANOCHAT_MAX_MESSAGE_CHARS)
                return nc_api_fail(err, 400, cparam,
                                   "Message %d is too long. Maximum %d characters allowed per message",
                                   i - 1, NC_NANOCHAT_MAX_MESSAGE_CHARS);
            total_chars += chars;
        }
    }
    if (nanochat && total_chars > NC_NANOCHAT_MAX_TOTAL_CHARS)
        return nc_api_fail(err, 400, "messages",
                           "Total conversation is too long. Maximum %d characters allowed",
                           NC_NANOCHAT_MAX_TOTAL_CHARS);
    return 0;
}

/* ==== completions prompt and token lists ==== */

static int parse_id_array(const cJSON *a, const char *param, nc_api_request *r, nc_api_error *err) {
    int n = cJSON_GetArraySize(a);
    r->prompt_ids = nc_xmalloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    r->has_prompt_ids = true;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        if (!is_integer(e) || e->valuedouble < 0 || e->valuedouble > INT32_MAX)
            return nc_api_fail(err, 400, param, "'%s' must hold non-negative integer token ids", param);
        r->prompt_ids[r->n_prompt_ids++] = (int32_t)e->valuedouble;
    }
    return 0;
}

static int parse_prompt(const cJSON *root, nc_api_request *r, nc_api_error *err) {
    const cJSON *p = field(root, "prompt");
    if (!p) return nc_api_fail(err, 400, "prompt", "'prompt' is required");
    if (cJSON_IsString(p)) return copy_string(p, "prompt", &r->prompt, &r->prompt_len, err);
    if (!cJSON_IsArray(p))
        return nc_api_fail(err, 400, "prompt", "'prompt' must be a string or an array of token ids");
    int n = cJSON_GetArraySize(p);
    const cJSON *first = cJSON_GetArrayItem(p, 0);
    if (n >= 1 && (cJSON_IsString(first) || cJSON_IsArray(first))) {
        if (n > 1)
            return nc_api_fail(err, 400, "prompt", "only one prompt per request is supported "
                               "(use n for several completions of one prompt)");
        if (cJSON_IsString(first)) return copy_string(first, "prompt", &r->prompt, &r->prompt_len, err);
        return parse_id_array(first, "prompt", r, err);
    }
    return parse_id_array(p, "prompt", r, err);
}

/* ==== stop strings ==== */

static int add_stop(nc_api_request *r, const cJSON *s, nc_api_error *err) {
    if (!cJSON_IsString(s))
        return nc_api_fail(err, 400, "stop", "'stop' must be a string or an array of strings");
    if (r->n_stop >= NC_API_MAX_STOP)
        return nc_api_fail(err, 400, "stop", "'stop' may hold at most %d strings", NC_API_MAX_STOP);
    size_t n;
    char *copy;
    if (copy_string(s, "stop", &copy, &n, err)) return -1;
    if (n == 0 || n > NC_API_MAX_STOP_BYTES) {
        free(copy);
        return nc_api_fail(err, 400, "stop", "each stop string must be 1 to %d bytes long",
                           NC_API_MAX_STOP_BYTES);
    }
    r->stop[r->n_stop] = copy;
    r->stop_len[r->n_stop++] = n;
    return 0;
}

static int parse_stop(const cJSON *root, nc_api_request *r, nc_api_error *err) {
    const cJSON *s = field(root, "stop");
    if (!s) return 0;
    if (cJSON_IsArray(s)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, s) if (add_stop(r, e, err)) return -1;
        return 0;
    }
    return add_stop(r, s, err);
}

/* ==== sampling ==== */

static void gen_defaults(nc_gen_params *g, nc_api_kind kind) {
    memset(g, 0, sizeof *g);
    bool nanochat = kind == NC_API_NANOCHAT;
    g->temperature = nanochat ? NC_NANOCHAT_DEFAULT_TEMPERATURE : 1.0f; /* OpenAI's default is 1 */
    g->top_k = nanochat ? NC_NANOCHAT_DEFAULT_TOP_K : 0;
    g->top_p = 1.0f;
    g->min_p = 0.0f;
    g->max_tokens = nanochat ? NC_NANOCHAT_DEFAULT_MAX_TOKENS : 0;
    g->n = 1;
    g->use_calculator = true;
    g->top_logprobs = -1;
    g->speculative = true;
}

static int parse_nanochat_sampling(const cJSON *root, nc_api_request *r, nc_api_error *err) {
    double d;
    int64_t v;
    int k;
    if ((k = get_number(root, "temperature", 0.0, 2.0, &d, err)) < 0) return -1;
    if (k) r->gen.temperature = (float)d;
    if ((k = get_int(root, "top_k", 0, NC_NANOCHAT_MAX_TOP_K, &v, err)) < 0) return -1;
    if (k) r->gen.top_k = (int32_t)v;
    if ((k = get_int(root, "max_tokens", 1, NC_NANOCHAT_MAX_MAX_TOKENS, &v, err)) < 0) return -1;
    if (k) r->gen.max_tokens = (int32_t)v;
    if ((k = get_int(root, "seed", INT64_MIN / 2, INT64_MAX / 2, &v, err)) < 0) return -1;
    if (k) { r->gen.seed = (uint64_t)v; r->seed_given = true; }
    return 0;
}

/* An optional string field, copied into *out. */
static int get_string(const cJSON *root, const char *name, char **out, nc_api_error *err) {
    const cJSON *v = field(root, name);
    if (!v) return 0;
    if (!cJSON_IsString(v)) return nc_api_fail(err, 400, name, "'%s' must be a string", name);
    *out = nc_xstrdup(v->valuestring);
    return 0;
}

static int parse_openai_sampling(const cJSON *root, nc_api_request *r, int32_t max_tokens_limit,
                                 nc_api_error *err) {
    double d;
    int64_t v;
    int k;
    if ((k = get_number(root, "temperature", 0.0, 2.0, &d, err)) < 0) return -1;
    if (k) r->gen.temperature = (float)d;
    if ((k = get_number(root, "top_p", 0.0, 1.0, &d, err)) < 0) return -1;
    if (k) {
        if (d == 0.0) r->gen.temperature = 0.0f; /* nothing but the top token survives */
        else r->gen.top_p = (float)d;
    }
    if ((k = get_int(root, "top_k", -1, NC_API_MAX_TOP_K, &v, err)) < 0) return -1;
    if (k) r->gen.top_k = v < 0 ? 0 : (int32_t)v; /* -1 = off, as in vLLM */
    if ((k = get_number(root, "min_p", 0.0, 1.0, &d, err)) < 0) return -1;
    if (k) r->gen.min_p = (float)d;
    int64_t hi = max_tokens_limit > 0 ? max_tokens_limit : INT32_MAX;
    if ((k = get_int(root, "max_tokens", 1, hi, &v, err)) < 0) return -1;
    if (k) r->gen.max_tokens = (int32_t)v;
    if ((k = get_int(root, "max_completion_tokens", 1, hi, &v, err)) < 0) return -1;
    if (k) r->gen.max_tokens = (int32_t)v;
    if ((k = get_int(root, "n", 1, NC_API_MAX_N, &v, err)) < 0) return -1;
    if (k) r->gen.n = (int32_t)v;
    if ((k = get_int(root, "seed", INT64_MIN / 2, INT64_MAX / 2, &v, err)) < 0) return -1;
    if (k) { r->gen.seed = (uint64_t)v; r->seed_given = true; }
    /* Accepted for compatibility; the engine has no penalties, so only 0 is honest. */
    if (get_number(root, "presence_penalty", -2.0, 2.0, &d, err) < 0) return -1;
    if (get_number(root, "frequency_penalty", -2.0, 2.0, &d, err) < 0) return -1;
    if (parse_stop(root, r, err)) return -1;

    if (r->kind == NC_API_CHAT) {
        if (get_bool(root, "logprobs", &r->logprobs, err) < 0) return -1;
        if ((k = get_int(root, "top_logprobs", 0, NC_MAX_TOP_LOGPROBS, &v, err)) < 0) return -1;
        if (k && !r->logprobs)
            return nc_api_fail(err, 400, "top_logprobs", "'top_logprobs' requires 'logprobs': true");
        if (r->logprobs) r->gen.top_logprobs = k ? (int32_t)v : 0;
    } else {
        /* Legacy completions: logprobs is the number of alternatives. */
        if ((k = get_int(root, "logprobs", 0, NC_MAX_TOP_LOGPROBS, &v, err)) < 0) return -1;
        if (k) { r->logprobs = true; r->gen.top_logprobs = (int32_t)v; }
        if (get_bool(root, "echo", &r->echo, err) < 0) return -1;
    }

    if (get_bool(root, "stream", &r->stream, err) < 0) return -1;
    const cJSON *so = field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so))
            return nc_api_fail(err, 400, "stream_options", "'stream_options' must be an object");
        if (get_bool(so, "include_usage", &r->include_usage, err) < 0) return -1;
    }
    /* `user` names the end user: the server keeps a user's requests on
     * one engine, whose prefix cache holds their conversation. */
    if (get_string(root, "model", &r->model, err) || get_string(root, "user", &r->user, err)) return -1;
    return 0;
}

/* ==== entry point ==== */

static int parse_root(nc_api_kind kind, const cJSON *root, int32_t max_tokens_limit,
                      nc_api_request *r, nc_api_error *err) {
    switch (kind) {
    case NC_API_NANOCHAT:
        if (parse_messages(root, kind, r, err) || parse_nanochat_sampling(root, r, err)) return -1;
        break;
    case NC_API_CHAT:
        if (parse_messages(root, kind, r, err) ||
            parse_openai_sampling(root, r, max_tokens_limit, err))
            return -1;
        break;
    case NC_API_COMPLETION:
        if (parse_prompt(root, r, err) || parse_openai_sampling(root, r, max_tokens_limit, err))
            return -1;
        break;
    case NC_API_TOKENIZE:
        if (field(root, "messages")) {
            if (parse_messages(root, NC_API_CHAT, r, err)) return -1;
        } else if (parse_prompt(root, r, err)) {
            return -1;
        }
        if (get_bool(root, "add_special_tokens", &r->add_special_tokens, err) < 0) return -1;
        break;
    case NC_API_DETOKENIZE: {
        const cJSON *t = field(root, "tokens");
        if (!t) return nc_api_fail(err, 400, "tokens", "'tokens' is required");
        if (!cJSON_IsArray(t))
            return nc_api_fail(err, 400, "tokens", "'tokens' must be an array of token ids");
        if (parse_id_array(t, "tokens", r, err)) return -1;
        break;
    }
    }
    if (get_bool(root, "truncate", &r->truncate, err) < 0) return -1;
    /* ours: false opts this request out of speculative decoding (docs/speculative.md) */
    if (get_bool(root, "speculative", &r->gen.speculative, err) < 0) return -1;
    return 0;
}

int nc_api_parse(nc_api_kind kind, const char *body, size_t len, int32_t max_tokens_limit,
                 nc_api_request *out, nc_api_error *err) {
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    out->kind = kind;
    gen_defaults(&out->gen, kind);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (root && end) {
        while (end < body + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')) end++;
        if (end != body + len) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    if (!root)
        return nc_api_fail(err, 400, NULL, "request body is not valid JSON");
    int rc = 0;
    if (!cJSON_IsObject(root))
        rc = nc_api_fail(err, 400, NULL, "request body must be a JSON object");
    else
        rc = parse_root(kind, root, max_tokens_limit, out, err);
    cJSON_Delete(root);
    if (rc) {
        nc_api_request_free(out);
        memset(out, 0, sizeof *out);
    }
    return rc;
}

void nc_api_request_free(nc_api_request *r) {
    for (int i = 0; i < r->n_messages; i++) free((char *)r->messages[i].content);
    free(r->messages);
    free(r->prompt);
    free(r->prompt_ids);
    for (int i = 0; i < r->n_stop; i++) free(r->stop[i]);
    free(r->model);
    free(r->user);
    memset(r, 0, sizeof *r);
}

/*
 * fuzz_request.c: libFuzzer target over the server's request parsers: the
 * JSON bodies (src/server/api_request.c), the request heads and header
 * values the gate and the handlers act on (src/server/http_parse.c), and
 * the JSON string writer (sbuf.c).
 *
 * The first input byte picks the parser: below 0xF0 an endpoint dialect
 * (the rest is the body), from 0xF0 an HTTP parser (the rest is its
 * input). Beyond "no crash, no leak, no UB" (ASan/UBSan), every accepted
 * request must satisfy the documented ranges, a request head's verdict
 * must depend on the head alone (its prefixes are undecided, the same
 * bytes decide the same way), and any byte string written with
 * nc_sbuf_json_string must parse back with cJSON as valid JSON.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/api_request.h"
#include "server/http_parse.h"
#include "server/sbuf.h"
#include "tokenizer/utf8.h"

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

static void check_request(const nc_api_request *r) {
    const nc_gen_params *g = &r->gen;
    REQUIRE(g->temperature >= 0.0f && g->temperature <= 2.0f);
    REQUIRE(g->top_p > 0.0f && g->top_p <= 1.0f);
    REQUIRE(g->min_p >= 0.0f && g->min_p <= 1.0f);
    REQUIRE(g->top_k >= 0);
    REQUIRE(g->n >= 1 && g->n <= NC_API_MAX_N);
    REQUIRE(g->max_tokens >= 0);
    REQUIRE(g->top_logprobs >= -1 && g->top_logprobs <= NC_MAX_TOP_LOGPROBS);
    REQUIRE(r->logprobs == (g->top_logprobs >= 0));
    REQUIRE(r->n_stop >= 0 && r->n_stop <= NC_API_MAX_STOP);
    for (int i = 0; i < r->n_stop; i++)
        REQUIRE(r->stop_len[i] >= 1 && r->stop_len[i] <= NC_API_MAX_STOP_BYTES && nc_utf8_valid(r->stop[i], r->stop_len[i]));
    for (int i = 0; i < r->n_messages; i++) {
        REQUIRE(r->messages[i].content != NULL);
        REQUIRE(nc_utf8_valid(r->messages[i].content, r->messages[i].len));
    }
    if (r->kind == NC_API_NANOCHAT) {
        REQUIRE(r->n_messages >= 1 && r->n_messages <= NC_NANOCHAT_MAX_MESSAGES);
        REQUIRE(g->top_k <= NC_NANOCHAT_MAX_TOP_K);
        REQUIRE(g->max_tokens >= 1 && g->max_tokens <= NC_NANOCHAT_MAX_MAX_TOKENS);
        size_t total = 0;
        for (int i = 0; i < r->n_messages; i++) {
            size_t chars = nc_utf8_length(r->messages[i].content, r->messages[i].len);
            REQUIRE(chars >= 1 && chars <= NC_NANOCHAT_MAX_MESSAGE_CHARS);
            total += chars;
        }
        REQUIRE(total <= NC_NANOCHAT_MAX_TOTAL_CHARS);
    }
    if (r->kind == NC_API_CHAT) REQUIRE(r->n_messages >= 1);
    if (r->kind == NC_API_COMPLETION) REQUIRE(r->prompt != NULL || r->has_prompt_ids);
    if (r->prompt) REQUIRE(nc_utf8_valid(r->prompt, r->prompt_len));
    for (int32_t i = 0; i < r->n_prompt_ids; i++) REQUIRE(r->prompt_ids[i] >= 0);
}

static void check_json_string(const uint8_t *data, size_t size) {
    nc_sbuf b = {0};
    nc_sbuf_json_string(&b, (const char *)data, size);
    cJSON *j = cJSON_ParseWithLength(b.buf, b.len);
    REQUIRE(j && cJSON_IsString(j));
    /* Valid UTF-8 without NUL bytes must come back unchanged. */
    if (nc_utf8_valid((const char *)data, size) && !memchr(data, 0, size))
        REQUIRE(strlen(j->valuestring) == size && !memcmp(j->valuestring, data, size));
    cJSON_Delete(j);
    nc_sbuf_free(&b);
}

/* ==== HTTP heads and header values ==== */

static bool is_tchar(unsigned char c) { return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c)); }

static void check_head(const char *buf, size_t n, uint64_t max_body) {
    nc_head_info h;
    nc_head_state st = nc_http_head_check(buf, n, max_body, &h);
    REQUIRE(memchr(h.method, 0, sizeof h.method) && memchr(h.path, 0, sizeof h.path));
    REQUIRE(memchr(h.request_id, 0, sizeof h.request_id) && memchr(h.origin, 0, sizeof h.origin));
    REQUIRE(!h.request_id[0] || nc_http_request_id_valid(h.request_id));
    if (st == NC_HEAD_MORE) {
        REQUIRE(n <= NC_HTTP_MAX_HEAD);
    } else if (st == NC_HEAD_BAD) {
        REQUIRE(h.status == 400 || h.status == 413 || h.status == 414 || h.status == 431 || h.status == 501 ||
                h.status == 505);
        REQUIRE(h.message[0] && memchr(h.message, 0, sizeof h.message));
    } else {
        REQUIRE(st == NC_HEAD_DONE);
        REQUIRE(h.head_len >= 4 && h.head_len <= n && h.head_len <= NC_HTTP_MAX_HEAD && buf[h.head_len - 1] == '\n');
        REQUIRE(h.method[0]);
        for (const char *m = h.method; *m; m++) REQUIRE(is_tchar((unsigned char)*m));
        REQUIRE(h.content_length >= -1 && (h.content_length < 0 || (uint64_t)h.content_length <= max_body));
        REQUIRE(!(h.chunked && h.content_length >= 0));
        /* The verdict depends on the head alone: the same bytes decide the
         * same way, and a prefix of them decides nothing yet. */
        nc_head_info again;
        REQUIRE(nc_http_head_check(buf, h.head_len, max_body, &again) == NC_HEAD_DONE && again.head_len == h.head_len);
        REQUIRE(nc_http_head_check(buf, h.head_len - 1, max_body, &again) == NC_HEAD_MORE);
        REQUIRE(nc_http_head_check(buf, h.head_len / 2, max_body, &again) == NC_HEAD_MORE);
    }
}

/* A NUL-terminated copy of data[0..n) (header values arrive as C strings). */
static char *cstr(const uint8_t *data, size_t n) {
    char *s = malloc(n + 1);
    memcpy(s, data, n);
    s[n] = 0;
    return s;
}

static void check_http(int which, const uint8_t *data, size_t n) {
    char *s = cstr(data, n);
    switch (which) {
    case 0:
        check_head((const char *)data, n, 1u << 20);
        check_head((const char *)data, n, 0);
        break;
    case 1:
        if (nc_http_is_json_type(s)) {
            const char *p = s + strspn(s, " \t");
            REQUIRE(!strncasecmp(p, "application/json", 16));
        }
        break;
    case 2:
        if (nc_http_request_id_valid(s)) {
            size_t len = strlen(s);
            REQUIRE(len >= 1 && len <= NC_HTTP_MAX_REQUEST_ID);
            for (size_t i = 0; i < len; i++) REQUIRE(isalnum((unsigned char)s[i]) || strchr("._:+/=-", s[i]));
        }
        break;
    case 3:
        if (nc_http_token_list_valid(s))
            for (const char *p = s; *p; p++) REQUIRE(is_tchar((unsigned char)*p) || strchr(" \t,", *p));
        break;
    default: {
        /* An origin list, then (after a NUL) a request's Origin. */
        const char *origin = strlen(s) < n ? s + strlen(s) + 1 : NULL;
        nc_origin_list l;
        char err[256];
        if (nc_origin_list_parse(s, &l, err, sizeof err) == 0) {
            REQUIRE(l.any || l.n > 0);
            for (int i = 0; i < l.n; i++) {
                REQUIRE(!strncmp(l.origins[i], "http://", 7) || !strncmp(l.origins[i], "https://", 8));
                for (const char *p = l.origins[i]; *p; p++) REQUIRE(!isupper((unsigned char)*p) && *p != ',' && *p > ' ');
            }
            bool allowed = nc_origin_allowed(&l, origin);
            bool listed = false;
            for (int i = 0; i < l.n && origin; i++) listed |= !strcasecmp(l.origins[i], origin);
            REQUIRE(allowed == (l.any || listed));
            nc_origin_list_free(&l);
        } else {
            REQUIRE(err[0] && memchr(err, 0, sizeof err));
        }
        break;
    }
    }
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    if (data[0] >= 0xF0) {
        check_http((data[0] & 0x0F) % 5, data + 1, size - 1);
        return 0;
    }
    nc_api_kind kind = (nc_api_kind)(data[0] % 5);
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    nc_api_request r;
    nc_api_error e;
    int32_t limit = (data[0] / 5) % 2 ? 256 : 0;
    if (nc_api_parse(kind, body, len, limit, &r, &e) == 0) {
        REQUIRE(r.kind == kind);
        check_request(&r);
        if (limit > 0 && (kind == NC_API_CHAT || kind == NC_API_COMPLETION)) REQUIRE(r.gen.max_tokens <= limit);
        nc_api_request_free(&r);
    } else {
        REQUIRE(e.status == 400 || e.status == 500);
        REQUIRE(memchr(e.message, 0, sizeof e.message) != NULL && e.message[0]);
    }
    check_json_string(data, size);
    return 0;
}

/*
 * fuzz_request.c: libFuzzer target over the server's request parsers
 * (src/server/api_request.c) and its JSON string writer (sbuf.c).
 *
 * The first input byte picks the endpoint dialect; the rest is the body.
 * Beyond "no crash, no leak, no UB" (ASan/UBSan), every accepted request
 * must satisfy the documented ranges, and any byte string written with
 * nc_sbuf_json_string must parse back with cJSON as valid JSON.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/api_request.h"
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
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

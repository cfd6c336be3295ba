/*
 * fuzz_tokenizer.c: libFuzzer target over the tokenizer: the tokenizer.pkl
 * and tokenizer.json readers, and encode/decode/stream-decode of arbitrary
 * bytes. Seeds: tests/fuzz/corpus/tokenizer/ (tools/make_tokenizer_fixtures.py).
 *
 * The first byte picks what the rest is:
 *   0  a tokenizer.pkl          1  a tokenizer.json
 *   2  text to encode           3  token ids (little-endian uint16) to decode
 * Beyond "no crash, no leak, no UB", the text modes check invariants:
 * encoding never yields a special or unknown id; decode(encode(x)) is x
 * read with errors="replace" (x itself when x is valid UTF-8); streaming
 * decode emits only valid UTF-8 and joins to the same text as decode.
 * Text goes through the fixture tokenizer (tests/data/tokenizer/tokenizer.pkl,
 * the fuzzers run from the repository root).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

static nc_tokenizer *fixture(void) {
    static nc_tokenizer *t;
    if (!t) t = nc_tokenizer_load("tests/data/tokenizer/tokenizer.pkl");
    REQUIRE(t != NULL); /* run from the repository root */
    return t;
}

/* Stream-decodes ids and checks the chunks against the whole decode. */
static void check_stream(const nc_tokenizer *t, const int32_t *ids, size_t n, const char *whole,
                         size_t whole_len) {
    size_t cap = 4 * nc_tokenizer_max_token_bytes(t) + 8, off = 0;
    char *buf = malloc(cap);
    nc_stream_decoder d = {0};
    for (size_t i = 0; i <= n; i++) {
        int k = i < n ? nc_stream_decode(&d, t, ids[i], buf, cap) : nc_stream_flush(&d, buf, cap);
        REQUIRE(k >= 0);
        REQUIRE(nc_utf8_valid_prefix((const uint8_t *)buf, (size_t)k) == (size_t)k);
        REQUIRE(off + (size_t)k <= whole_len && !memcmp(whole + off, buf, (size_t)k));
        off += (size_t)k;
    }
    REQUIRE(off == whole_len);
    free(buf);
}

static void fuzz_text(const uint8_t *data, size_t len) {
    const nc_tokenizer *t = fixture();
    nc_tokens ids = {0};
    REQUIRE(nc_tokenizer_encode(t, (const char *)data, len, &ids) == 0);
    for (size_t i = 0; i < ids.n; i++) {
        size_t bl;
        REQUIRE(!nc_tokenizer_is_special(t, ids.ids[i]));
        REQUIRE(nc_tokenizer_token_bytes(t, ids.ids[i], &bl) != NULL);
    }
    size_t out_len;
    char *text = nc_tokenizer_decode(t, ids.ids, ids.n, &out_len);
    REQUIRE(text != NULL);
    uint8_t *clean = malloc(3 * len + 1);
    size_t clean_len = nc_utf8_replace(data, len, clean, true, NULL);
    REQUIRE(out_len == clean_len && !memcmp(text, clean, clean_len));
    if (nc_utf8_valid_prefix(data, len) == len) REQUIRE(out_len == len && !memcmp(text, data, len));
    check_stream(t, ids.ids, ids.n, text, out_len);
    free(clean);
    free(text);
    nc_tokens_free(&ids);
}

static void fuzz_ids(const uint8_t *data, size_t len) {
    const nc_tokenizer *t = fixture();
    size_t n = len / 2;
    int32_t *ids = malloc((n + 1) * sizeof *ids);
    int valid = 1;
    for (size_t i = 0; i < n; i++) {
        ids[i] = (int32_t)(data[2 * i] | (data[2 * i + 1] << 8)) % (nc_tokenizer_vocab_size(t) + 16);
        size_t bl;
        if (!nc_tokenizer_token_bytes(t, ids[i], &bl)) valid = 0;
    }
    size_t out_len;
    char *text = nc_tokenizer_decode(t, ids, n, &out_len);
    REQUIRE((text != NULL) == valid);
    if (text) {
        REQUIRE(nc_utf8_valid_prefix((const uint8_t *)text, out_len) == out_len);
        check_stream(t, ids, n, text, out_len);
    }
    free(text);
    free(ids);
}

static void fuzz_file(nc_tokenizer *t) {
    if (!t) return;
    static const char sample[] = "Hello wörld, it's 2024! 你好 😀\r\n\t<|bos|>";
    nc_tokens ids = {0};
    REQUIRE(nc_tokenizer_encode(t, sample, sizeof sample - 1, &ids) == 0);
    size_t out_len;
    char *text = nc_tokenizer_decode(t, ids.ids, ids.n, &out_len);
    /* Whatever it encodes decodes (a pattern from the file may skip text,
     * as tiktoken's find_iter would, so the text need not come back). */
    REQUIRE(text && out_len <= sizeof sample - 1);
    free(text);
    nc_tokens_free(&ids);
    nc_tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0:
        fuzz_file(nc_tokenizer_from_pickle(p, n));
        break;
    case 1: {
        char *s = malloc(n + 1);
        memcpy(s, p, n);
        s[n] = 0;
        fuzz_file(nc_tokenizer_from_hf_json(s, n));
        free(s);
        break;
    }
    case 2:
        fuzz_text(p, n);
        break;
    default:
        fuzz_ids(p, n);
        break;
    }
    return 0;
}

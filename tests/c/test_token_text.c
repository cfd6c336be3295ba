/*
 * test_token_text.c: generated tokens -> visible text and calculator
 * events (src/engine/token_text.c).
 *
 * The byte tokenizer (byte_tokenizer.h) lets each script spell out its
 * tokens exactly, splitting UTF-8 characters at will. A script runs through nc_token_text and its output
 * is written as one transcript: visible text as is, events as
 * [call:EXPR] [result:EXPR=RESULT] [none] [cut:EXPR], each where it
 * happened. The expected transcripts are written by hand from the rules of
 * nanochat's Engine.generate (a result is the <|output_start|> ..
 * <|output_end|> right after a call; <|python_start|> restarts the
 * expression); the U+FFFD cases are what Python's
 * bytes.decode("utf-8", "replace") gives for the same bytes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "byte_tokenizer.h"
#include "check.h"
#include "engine/token_text.h"

enum { UNKNOWN = 300 }; /* beyond the byte tokenizer's vocabulary */

/* One step of a script: a byte string (one token per byte) or one
 * special (or unknown) id. */
typedef struct {
    const char *text; /* one token per byte, when special == 0 */
    int special;      /* a special (or unknown) id, when text == NULL */
} item;

#define T(s) {s, 0}
#define S(id) {NULL, id}

typedef struct {
    char *s;
    size_t len, cap;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void put_event(sbuf *b, const nc_tool_event *e) {
    char tmp[8192];
    switch (e->kind) {
    case NC_TOOL_CALL: snprintf(tmp, sizeof tmp, "[call:%s]", e->expr); break;
    case NC_TOOL_RESULT: snprintf(tmp, sizeof tmp, "[result:%s=%s]", e->expr, e->result); break;
    case NC_TOOL_NO_RESULT: snprintf(tmp, sizeof tmp, "[none]"); break;
    case NC_TOOL_CALL_CUT: snprintf(tmp, sizeof tmp, "[cut:%s]", e->expr); break;
    default: return;
    }
    put(b, tmp, strlen(tmp));
}

/* Runs the items through a fresh nc_token_text; returns the transcript. */
static char *run(const nc_tokenizer *tok, nc_text_view view, const item *items, int n_items) {
    nc_token_text t;
    nc_token_text_init(&t, tok, view);
    sbuf out = {0};
    put(&out, "", 0);
    size_t len;
    nc_tool_event ev;
    for (int i = 0; i < n_items; i++) {
        int32_t ids[8192];
        int n = 0;
        if (items[i].text)
            for (const char *p = items[i].text; *p; p++) ids[n++] = (uint8_t)*p;
        else
            ids[n++] = items[i].special;
        for (int k = 0; k < n; k++) {
            const char *s = nc_token_text_feed(&t, ids[k], &len, &ev);
            put_event(&out, &ev);
            put(&out, s, len);
        }
    }
    const char *s = nc_token_text_end(&t, &len, &ev);
    put_event(&out, &ev);
    put(&out, s, len);
    nc_token_text_free(&t);
    return out.s;
}

#define EXPECT(view, want, ...)                                                       \
    do {                                                                              \
        const item its[] = {__VA_ARGS__};                                             \
        char *got = run(tok, view, its, (int)(sizeof its / sizeof *its));             \
        CHECK(!strcmp(got, want), "line %d: got '%s', want '%s'", __LINE__, got, want); \
        free(got);                                                                    \
    } while (0)

#define FFFD "\xEF\xBF\xBD"

int main(void) {
    nc_tokenizer *tok = byte_tokenizer();
    CHECK(tok != NULL, "byte tokenizer");
    if (!tok) return check_summary("test_token_text");
    const nc_text_view CALLS = NC_TEXT_TOOL_CALLS, DECODED = NC_TEXT_AS_DECODED;

    /* A call and its forced result, between text. */
    EXPECT(CALLS, "Hi [call:37*41][result:37*41=1517] ok", T("Hi "), S(PY_START), T("37*41"), S(PY_END), S(OUT_START), T("1517"),
           S(OUT_END), T(" ok"));
    /* The same tokens as tokenizer.decode() shows them. */
    EXPECT(DECODED, "Hi <|python_start|>37*41<|python_end|><|output_start|>1517<|output_end|> ok", T("Hi "), S(PY_START),
           T("37*41"), S(PY_END), S(OUT_START), T("1517"), S(OUT_END), T(" ok"));
    /* No result (the calculator refused): the next token says so, then is text. */
    EXPECT(CALLS, "a[call:1/0][none]b", T("a"), S(PY_START), T("1/0"), S(PY_END), T("b"));
    EXPECT(CALLS, "[call:1/0][none][call:2+2][result:2+2=4]", S(PY_START), T("1/0"), S(PY_END), S(PY_START), T("2+2"), S(PY_END),
           S(OUT_START), T("4"), S(OUT_END));
    /* The row ends inside an expression, right after a call, inside a result. */
    EXPECT(CALLS, "x[cut:2+]", T("x"), S(PY_START), T("2+"));
    EXPECT(CALLS, "[call:1+1][none]", S(PY_START), T("1+1"), S(PY_END));
    EXPECT(CALLS, "[call:9*9][result:9*9=8]", S(PY_START), T("9*9"), S(PY_END), S(OUT_START), T("8"));
    /* <|python_start|> restarts the expression, as in nanochat's engine. */
    EXPECT(CALLS, "[call:2+2][result:2+2=4]", S(PY_START), T("1+"), S(PY_START), T("2+2"), S(PY_END), S(OUT_START), T("4"), S(OUT_END));
    /* Other special tokens are neither text nor part of a call. */
    EXPECT(CALLS, "[call:3*3][none]ab", S(PY_START), T("3"), S(USER_START), T("*3"), S(PY_END), S(BOS), T("a"),
           S(ASSIST_START), T("b"));
    /* Tool tokens out of place change nothing. */
    EXPECT(CALLS, "abc", T("a"), S(OUT_START), T("b"), S(OUT_END), T("c"));
    EXPECT(CALLS, "ab", T("a"), S(PY_END), T("b"));
    /* A character split over three tokens, in text and in an expression. */
    EXPECT(CALLS, "\xE2\x82\xAC", T("\xE2\x82\xAC"));
    EXPECT(CALLS, "[call:\xE2\x82\xAC][none]", S(PY_START), T("\xE2\x82\xAC"), S(PY_END));
    /* b"\xe2\x82".decode("utf-8", "replace") == "\ufffd": a special token cuts it. */
    EXPECT(CALLS, FFFD "a", T("\xE2\x82"), S(USER_START), T("a"));
    EXPECT(DECODED, FFFD "<|user_start|>a", T("\xE2\x82"), S(USER_START), T("a"));
    EXPECT(CALLS, "[call:" FFFD "][none]", S(PY_START), T("\xE2\x82"), S(PY_END));
    /* ... and so does the end of the row. */
    EXPECT(CALLS, "a" FFFD, T("a\xE2\x82"));
    /* b"\xe2\x28".decode("utf-8", "replace") == "\ufffd(" */
    EXPECT(CALLS, FFFD "(", T("\xE2("));
    /* An id the tokenizer lacks shows U+FFFD, after what was pending. */
    EXPECT(CALLS, "a" FFFD "b", T("a"), S(UNKNOWN), T("b"));
    EXPECT(CALLS, FFFD FFFD "b", T("\xE2"), S(UNKNOWN), T("b"));

    /* Results longer than any fixed buffer arrive whole (4300 digits is
     * the calculator's limit). */
    static char digits[4301], want[4400];
    for (int i = 0; i < 4300; i++) digits[i] = (char)('1' + i % 9);
    snprintf(want, sizeof want, "[call:big][result:big=%s]", digits);
    EXPECT(CALLS, want, S(PY_START), T("big"), S(PY_END), S(OUT_START), T(digits), S(OUT_END));

    nc_tokenizer_free(tok);
    return check_summary("test_token_text");
}

/*
 * test_tokenizer.c: the tokenizer against reference outputs made by
 * tiktoken and Python (tests/data/tokenizer/, tools/make_tokenizer_fixtures.py).
 *
 *   test_tokenizer                 unit tests (run from the repository root)
 *   test_tokenizer --stream FILE   stdin: lines of space-separated ids; stdout:
 *                                  one JSON array per line with the chunks
 *                                  nc_stream_decode emits, the flush last
 *                                  (used by tests/py/test_tokenizer_tiktoken.py)
 *   test_tokenizer --bench FILE CORPUS [REPEAT]
 *                                  encoding speed on one core, in MB/s
 */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "util/common.h"

#define DATA "tests/data/tokenizer/"

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

/* Ids of a JSON array into `out` (cleared first). */
static void json_ids(const cJSON *arr, nc_tokens *out) {
    out->n = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) nc_tokens_push(out, (int32_t)v->valuedouble);
}

static int ids_equal(const nc_tokens *a, const nc_tokens *b, size_t *first_diff) {
    size_t i = 0;
    while (i < a->n && i < b->n && a->ids[i] == b->ids[i]) i++;
    *first_diff = i;
    return a->n == b->n && i == a->n;
}

/* Checks one tokenizer against every case of cases.json. */
static void check_cases(const nc_tokenizer *t, const cJSON *cases, const char *which) {
    nc_tokens want = {0}, got = {0};
    CHECK(nc_tokenizer_vocab_size(t) == cJSON_GetObjectItem(cases, "vocab_size")->valueint,
          "%s: vocab size %d", which, nc_tokenizer_vocab_size(t));
    CHECK(!strcmp(nc_tokenizer_pattern(t), cJSON_GetObjectItem(cases, "pattern")->valuestring),
          "%s: pattern '%s'", which, nc_tokenizer_pattern(t));
    const cJSON *sp;
    cJSON_ArrayForEach(sp, cJSON_GetObjectItem(cases, "special_tokens")) {
        CHECK(nc_tokenizer_special_by_name(t, sp->string) == sp->valueint, "%s: special %s",
              which, sp->string);
        CHECK(nc_tokenizer_is_special(t, sp->valueint), "%s: is_special(%d)", which, sp->valueint);
    }
    for (int s = 0; s < NC_TOK_SPECIAL_COUNT; s++) {
        int32_t id = nc_tokenizer_special_id(t, (nc_special_token)s);
        CHECK(id == nc_tokenizer_vocab_size(t) - NC_TOK_SPECIAL_COUNT + s, "%s: special %d id %d",
              which, s, id);
    }

    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(cases, "encode")) {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        size_t len = strlen(text), at;
        json_ids(cJSON_GetObjectItem(c, "ids"), &want);
        got.n = 0;
        CHECK(nc_tokenizer_encode(t, text, len, &got) == 0, "%s: encode failed: %s", which,
              nc_error());
        CHECK(ids_equal(&got, &want, &at), "%s: encode '%.60s': %zu ids, want %zu, first diff at %zu",
              which, text, got.n, want.n, at);
        size_t dlen = 0;
        char *back = nc_tokenizer_decode(t, got.ids, got.n, &dlen);
        CHECK(back && dlen == len && !memcmp(back, text, len), "%s: decode(encode('%.60s'))", which,
              text);
        free(back);
    }
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(cases, "encode_bytes")) {
        const char *hex = cJSON_GetObjectItem(c, "hex")->valuestring;
        size_t n = strlen(hex) / 2, at;
        char *raw = malloc(n + 1);
        for (size_t i = 0; i < n; i++) {
            unsigned v;
            sscanf(hex + 2 * i, "%2x", &v);
            raw[i] = (char)v;
        }
        json_ids(cJSON_GetObjectItem(c, "ids"), &want);
        got.n = 0;
        CHECK(nc_tokenizer_encode(t, raw, n, &got) == 0, "%s: encode bytes failed", which);
        CHECK(ids_equal(&got, &want, &at), "%s: encode invalid UTF-8 %.40s: first diff at %zu",
              which, hex, at);
        free(raw);
    }
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(cases, "decode")) {
        json_ids(cJSON_GetObjectItem(c, "ids"), &want);
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        size_t dlen = 0;
        char *got_text = nc_tokenizer_decode(t, want.ids, want.n, &dlen);
        CHECK(got_text && dlen == strlen(text) && !memcmp(got_text, text, dlen),
              "%s: decode of %zu ids gives '%s', want '%s'", which, want.n, got_text, text);
        free(got_text);
    }
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(cases, "stream")) {
        json_ids(cJSON_GetObjectItem(c, "ids"), &want);
        const cJSON *chunks = cJSON_GetObjectItem(c, "chunks");
        nc_stream_decoder d = {0};
        char buf[4096];
        for (size_t i = 0; i <= want.n; i++) {
            int n = i < want.n ? nc_stream_decode(&d, t, want.ids[i], buf, sizeof buf)
                               : nc_stream_flush(&d, buf, sizeof buf);
            const char *w = cJSON_GetArrayItem(chunks, (int)i)->valuestring;
            CHECK(n >= 0 && (size_t)n == strlen(w) && !memcmp(buf, w, (size_t)n),
                  "%s: stream chunk %zu: got %d bytes '%.*s', want '%s'", which, i, n,
                  n > 0 ? n : 0, buf, w);
        }
    }
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(cases, "chat")) {
        const cJSON *msgs = cJSON_GetObjectItem(c, "messages"), *m;
        nc_chat_message cm[16];
        int n = 0;
        cJSON_ArrayForEach(m, msgs) {
            const char *role = cJSON_GetObjectItem(m, "role")->valuestring;
            cm[n].role = !strcmp(role, "system") ? NC_ROLE_SYSTEM
                         : !strcmp(role, "user") ? NC_ROLE_USER : NC_ROLE_ASSISTANT;
            cm[n].content = cJSON_GetObjectItem(m, "content")->valuestring;
            cm[n].len = strlen(cm[n].content);
            n++;
        }
        json_ids(cJSON_GetObjectItem(c, "ids"), &want);
        got.n = 0;
        size_t at;
        CHECK(nc_chat_render(t, cm, n, &got) == 0, "%s: chat render failed: %s", which, nc_error());
        CHECK(ids_equal(&got, &want, &at), "%s: chat '%.40s': first diff at %zu", which,
              cm[0].content, at);
    }
    nc_tokens_free(&want);
    nc_tokens_free(&got);
}

/* Errors are reported, never crash, and leave outputs as they were. */
static void check_errors(const nc_tokenizer *t) {
    int32_t bad[] = {5, nc_tokenizer_vocab_size(t)};
    CHECK(nc_tokenizer_decode(t, bad, 2, NULL) == NULL, "decode of an out-of-range id");
    CHECK(strstr(nc_error(), "not in the vocabulary") != NULL, "message: %s", nc_error());
    int32_t neg = -1;
    CHECK(nc_tokenizer_decode(t, &neg, 1, NULL) == NULL, "decode of id -1");
    size_t len;
    CHECK(nc_tokenizer_token_bytes(t, -1, &len) == NULL, "token_bytes(-1)");
    nc_stream_decoder d = {0};
    char buf[64];
    CHECK(nc_stream_decode(&d, t, 1 << 30, buf, sizeof buf) == -1, "stream of a bad id");

    nc_tokens out = {0};
    nc_tokens_push(&out, 7);
    CHECK(nc_chat_render(t, NULL, 0, &out) == -1, "empty conversation");
    nc_chat_message sys_only[] = {{NC_ROLE_SYSTEM, "s", 1}};
    CHECK(nc_chat_render(t, sys_only, 1, &out) == -1, "system message alone");
    nc_chat_message sys_asst[] = {{NC_ROLE_SYSTEM, "s", 1}, {NC_ROLE_ASSISTANT, "a", 1}};
    CHECK(nc_chat_render(t, sys_asst, 2, &out) == -1, "system then assistant");
    nc_chat_message sys_late[] = {{NC_ROLE_USER, "u", 1}, {NC_ROLE_SYSTEM, "s", 1}};
    CHECK(nc_chat_render(t, sys_late, 2, &out) == -1, "system message not first");
    CHECK(strstr(nc_error(), "message 1") != NULL, "message: %s", nc_error());
    CHECK(out.n == 1 && out.ids[0] == 7, "failed renders leave the output alone");
    nc_tokens_free(&out);

    const char *missing = "tests/data/tokenizer/no-such-file.pkl";
    CHECK(nc_tokenizer_load(missing) == NULL && strstr(nc_error(), missing), "missing file: %s",
          nc_error());
    CHECK(nc_tokenizer_load("/dev/null") == NULL && strstr(nc_error(), "empty"), "empty file: %s",
          nc_error());
}

/* Corrupted files: every truncation of the .pkl and some of the .json must
 * fail cleanly (the fuzzer goes further). */
static void check_corrupt(void) {
    size_t len;
    char *pkl = slurp(DATA "tokenizer.pkl", &len);
    const char *tmp = "build-tokenizer-test.tmp";
    for (size_t cut = 0; cut < len; cut += 1 + cut / 3) {
        nc_tokenizer *t = nc_tokenizer_from_pickle((const uint8_t *)pkl, cut);
        CHECK(t == NULL, "pickle truncated to %zu bytes loaded", cut);
        nc_tokenizer_free(t);
    }
    free(pkl);
    char *json = slurp(DATA "tokenizer.json", &len);
    for (size_t cut = 1; cut < len; cut += 1 + cut / 2) {
        nc_tokenizer *t = nc_tokenizer_from_hf_json(json, cut);
        CHECK(t == NULL, "json truncated to %zu bytes loaded", cut);
        nc_tokenizer_free(t);
    }
    free(json);
    const char *junk[] = {"hello", "{}", "{\"model\":{\"vocab\":{}}}", "[1,2]", "\x80\x04junk"};
    for (size_t i = 0; i < NC_ARRAY_LEN(junk); i++) {
        FILE *f = fopen(tmp, "wb");
        fwrite(junk[i], 1, strlen(junk[i]), f);
        fclose(f);
        nc_tokenizer *t = nc_tokenizer_load(tmp);
        CHECK(t == NULL && nc_error()[0], "junk tokenizer %zu loaded", i);
        nc_tokenizer_free(t);
    }
    remove(tmp);
}

/* \p{L}, \p{N} and \s agree with tiktoken's regex code point by code
 * point (see "class_probe" in tools/make_tokenizer_fixtures.py). */
static void check_class_probe(const cJSON *cases) {
    const cJSON *probe = cJSON_GetObjectItem(cases, "class_probe"), *v;
    const cJSON *cps = cJSON_GetObjectItem(probe, "codepoints");
    int n = cJSON_GetArraySize(cps);
    uint8_t *blob = malloc((size_t)n * 5 + 256), *p = blob;
    const uint8_t **tb = malloc(((size_t)n + 256) * sizeof *tb);
    size_t *tl = malloc(((size_t)n + 256) * sizeof *tl);
    char *text = malloc((size_t)n * 5 + 1);
    size_t tn = 0;
    for (int b = 0; b < 256; b++) {
        *p = (uint8_t)b;
        tb[b] = p++;
        tl[b] = 1;
    }
    int r = 256;
    cJSON_ArrayForEach(v, cps) { /* the token "x" + UTF-8 of the code point */
        uint32_t c = (uint32_t)v->valuedouble;
        uint8_t *start = p;
        *p++ = 'x';
        if (c < 0x800) {
            *p++ = (uint8_t)(0xC0 | (c >> 6));
        } else if (c < 0x10000) {
            *p++ = (uint8_t)(0xE0 | (c >> 12));
            *p++ = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        } else {
            *p++ = (uint8_t)(0xF0 | (c >> 18));
            *p++ = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
            *p++ = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        }
        *p++ = (uint8_t)(0x80 | (c & 0x3F));
        tb[r] = start;
        tl[r] = (size_t)(p - start);
        memcpy(text + tn, start, tl[r]);
        tn += tl[r++];
    }
    const cJSON *ids;
    cJSON_ArrayForEach(ids, cJSON_GetObjectItem(probe, "ids")) {
        char pattern[64];
        snprintf(pattern, sizeof pattern, "x%s|[\\s\\S]", ids->string);
        nc_tokenizer *t = nc_tokenizer_from_ranks(pattern, tb, tl, r, NULL, NULL, 0);
        CHECK(t != NULL, "probe tokenizer for %s: %s", ids->string, nc_error());
        if (!t) continue;
        nc_tokens want = {0}, got = {0};
        json_ids(ids, &want);
        nc_tokenizer_encode(t, text, tn, &got);
        size_t at;
        CHECK(ids_equal(&got, &want, &at), "class %s differs from tiktoken's at id %zu (%d vs %d)",
              ids->string, at, at < got.n ? got.ids[at] : -1, at < want.n ? want.ids[at] : -1);
        nc_tokens_free(&want);
        nc_tokens_free(&got);
        nc_tokenizer_free(t);
    }
    free(blob);
    free(tb);
    free(tl);
    free(text);
}

/* nc_tokenizer_from_ranks validates its input. */
static void check_from_ranks(void) {
    uint8_t bytes[256];
    const uint8_t *tb[300];
    size_t tl[300];
    for (int i = 0; i < 256; i++) {
        bytes[i] = (uint8_t)i;
        tb[i] = &bytes[i];
        tl[i] = 1;
    }
    tb[256] = (const uint8_t *)"ab";
    tl[256] = 2;
    const char *names[] = {"<|bos|>", "<|user_start|>"};
    int32_t ids[] = {257, 258};
    nc_tokenizer *t = nc_tokenizer_from_ranks(NULL, tb, tl, 257, names, ids, 2);
    CHECK(t != NULL, "from_ranks: %s", nc_error());
    if (t) {
        nc_tokens out = {0};
        nc_tokenizer_encode(t, "abab", 4, &out);
        CHECK(out.n == 2 && out.ids[0] == 256 && out.ids[1] == 256, "encode abab");
        CHECK(nc_tokenizer_special_id(t, NC_TOK_BOS) == 257, "bos");
        CHECK(nc_tokenizer_special_id(t, NC_TOK_OUTPUT_END) == -1, "missing special");
        nc_tokens_free(&out);
        nc_tokenizer_free(t);
    }
    tb[256] = (const uint8_t *)"a";
    tl[256] = 1;
    CHECK(nc_tokenizer_from_ranks(NULL, tb, tl, 257, names, ids, 2) == NULL, "duplicate token");
    tb[256] = (const uint8_t *)"ab";
    tl[256] = 2;
    tl[65] = 0;
    CHECK(nc_tokenizer_from_ranks(NULL, tb, tl, 257, names, ids, 2) == NULL &&
              strstr(nc_error(), "0x41"), "missing byte: %s", nc_error());
    tl[65] = 1;
    int32_t clash[] = {256, 258};
    CHECK(nc_tokenizer_from_ranks(NULL, tb, tl, 257, names, clash, 2) == NULL,
          "special on a mergeable id");
    CHECK(nc_tokenizer_from_ranks("(unclosed", tb, tl, 257, names, ids, 2) == NULL &&
              strstr(nc_error(), "pattern"), "bad pattern: %s", nc_error());
}

/* ==== many threads on one tokenizer ==== */

typedef struct {
    const nc_tokenizer *t;
    const cJSON *cases;
    int failures;
} thread_arg;

static void *encode_all(void *p) {
    thread_arg *a = p;
    nc_tokens got = {0};
    for (int rep = 0; rep < 20; rep++) {
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(a->cases, "encode")) {
            const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
            const cJSON *ids = cJSON_GetObjectItem(c, "ids");
            got.n = 0;
            nc_tokenizer_encode(a->t, text, strlen(text), &got);
            if ((int)got.n != cJSON_GetArraySize(ids)) {
                a->failures++;
                continue;
            }
            for (size_t i = 0; i < got.n; i++)
                if (got.ids[i] != (int32_t)cJSON_GetArrayItem(ids, (int)i)->valuedouble) {
                    a->failures++;
                    break;
                }
        }
    }
    nc_tokens_free(&got);
    return NULL;
}

static void check_threads(const nc_tokenizer *t, const cJSON *cases) {
    pthread_t th[4];
    thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (thread_arg){t, cases, 0};
        pthread_create(&th[i], NULL, encode_all, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(args[i].failures == 0, "thread %d: %d mismatches", i, args[i].failures);
    }
}

/* ==== modes for other tools ==== */

/* Prints s[0..n) as a JSON string (it may hold NUL bytes). */
static void put_json_string(const char *s, int n) {
    putchar('"');
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static int stream_mode(const char *path) {
    nc_tokenizer *t = nc_tokenizer_load(path);
    if (!t) {
        fprintf(stderr, "%s\n", nc_error());
        return 1;
    }
    size_t cap = 4 * nc_tokenizer_max_token_bytes(t) + 8;
    char *buf = malloc(cap), *line = NULL;
    size_t lcap = 0;
    while (getline(&line, &lcap, stdin) > 0) {
        nc_stream_decoder d = {0};
        char *p = line, *end;
        putchar('[');
        for (;;) {
            long id = strtol(p, &end, 10);
            int n = end == p ? nc_stream_flush(&d, buf, cap) : nc_stream_decode(&d, t, (int32_t)id, buf, cap);
            if (n < 0) {
                fprintf(stderr, "%s\n", nc_error());
                return 1;
            }
            if (p != line) putchar(',');
            put_json_string(buf, n);
            if (end == p) break;
            p = end;
        }
        puts("]");
    }
    free(line);
    free(buf);
    nc_tokenizer_free(t);
    return 0;
}

static int bench_mode(const char *path, const char *corpus, int repeat) {
    nc_tokenizer *t = nc_tokenizer_load(path);
    size_t len;
    char *text = slurp(corpus, &len);
    if (!t || !text) {
        fprintf(stderr, "cannot load %s or %s: %s\n", path, corpus, nc_error());
        return 1;
    }
    nc_tokens out = {0};
    nc_tokenizer_encode(t, text, len, &out); /* warm-up */
    /* Thread CPU time, not wall time: the machine may be shared. */
    double best = 1e30, best_wall = 1e30;
    for (int r = 0; r < repeat; r++) {
        out.n = 0;
        struct timespec a, b;
        double w0 = nc_now();
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
        nc_tokenizer_encode(t, text, len, &out);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
        best_wall = NC_MIN(best_wall, nc_now() - w0);
        best = NC_MIN(best, (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec));
    }
    printf("nanochat-c: %zu bytes -> %zu tokens, best of %d: %.4f s cpu (%.4f s wall), %.2f MB/s\n",
           len, out.n, repeat, best, best_wall, (double)len / best / 1e6);
    nc_tokens_free(&out);
    free(text);
    nc_tokenizer_free(t);
    return 0;
}

/* The UTF-8 validator the server checks request strings with, against
 * Python: `valid` is whether bytes.decode("utf-8") succeeds, `chars` the
 * len() of the result (computed with CPython 3.11). */
static void check_utf8(void) {
    static const struct {
        const char *bytes;
        size_t n;
        bool valid;
        int chars;
    } cases[] = {
        {"", 0, 1, 0},
        {"\x61\x62\x63", 3, 1, 3},
        {"\xc3\xa9", 2, 1, 1},
        {"\xe2\x82\xac", 3, 1, 1},
        {"\xf0\x9f\x98\x80", 4, 1, 1},
        {"\xc0\xaf", 2, 0, -1},             /* overlong '/' */
        {"\xc1\xbf", 2, 0, -1},
        {"\xe0\x80\xaf", 3, 0, -1},
        {"\xe0\xa0\x80", 3, 1, 1},
        {"\xed\x9f\xbf", 3, 1, 1},
        {"\xed\xa0\x80", 3, 0, -1},         /* surrogate U+D800 */
        {"\xf0\x8f\xbf\xbf", 4, 0, -1},
        {"\xf4\x8f\xbf\xbf", 4, 1, 1},      /* U+10FFFF */
        {"\xf4\x90\x80\x80", 4, 0, -1},     /* beyond U+10FFFF */
        {"\xf5\x80\x80\x80", 4, 0, -1},
        {"\x80", 1, 0, -1},
        {"\xc3", 1, 0, -1},
        {"\x61\xe2\x82", 3, 0, -1},
        {"\xff", 1, 0, -1},
        {"\x6f\x6b\x20\xe4\xb8\xad\xe6\x96\x87\x20\xf0\x9f\x8e\x89", 14, 1, 7},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *b = cases[i].bytes;
        size_t n = cases[i].n;
        CHECK(nc_utf8_valid(b, n) == cases[i].valid, "utf8 case %zu: valid %d", i, (int)cases[i].valid);
        CHECK((nc_utf8_valid_prefix((const uint8_t *)b, n) == n) == cases[i].valid, "utf8 case %zu: prefix", i);
        if (cases[i].valid) CHECK(nc_utf8_length(b, n) == (size_t)cases[i].chars, "utf8 case %zu: length", i);
        if (cases[i].valid && n && (size_t)cases[i].chars == 1)
            CHECK(nc_utf8_char((const uint8_t *)b, n) == n, "utf8 case %zu: one character", i);
        if (!cases[i].valid && n == 1) CHECK(nc_utf8_char((const uint8_t *)b, n) == 0, "utf8 case %zu: no character", i);
    }
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--stream")) return stream_mode(argv[2]);
    if ((argc == 4 || argc == 5) && !strcmp(argv[1], "--bench"))
        return bench_mode(argv[2], argv[3], argc == 5 ? atoi(argv[4]) : 5);
    if (argc != 1) {
        fprintf(stderr, "usage: test_tokenizer [--stream TOKENIZER | --bench TOKENIZER CORPUS [REPEAT]]\n");
        return 2;
    }
    size_t len;
    char *json = slurp(DATA "cases.json", &len);
    if (!json) {
        fprintf(stderr, "cannot read " DATA "cases.json (run from the repository root)\n");
        return 1;
    }
    cJSON *cases = cJSON_Parse(json);
    free(json);
    CHECK(cases != NULL, "cases.json parses");
    if (!cases) return check_summary("test_tokenizer");
    CHECK(!strcmp(NC_NANOCHAT_PATTERN, cJSON_GetObjectItem(cases, "pattern")->valuestring),
          "built-in pattern equals nanochat's SPLIT_PATTERN");

    const char *files[] = {DATA "tokenizer.pkl", DATA "tokenizer.json"};
    for (int i = 0; i < 2; i++) {
        nc_tokenizer *t = nc_tokenizer_load(files[i]);
        CHECK(t != NULL, "load %s: %s", files[i], nc_error());
        if (!t) continue;
        check_cases(t, cases, files[i]);
        if (i == 0) {
            check_errors(t);
            check_threads(t, cases);
        }
        nc_tokenizer_free(t);
    }
    check_corrupt();
    check_from_ranks();
    check_utf8();
    check_class_probe(cases);
    cJSON_Delete(cases);
    return check_summary("test_tokenizer");
}

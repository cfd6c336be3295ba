/*
 * golden_cases.h: the picochat golden transcripts (tests/data/picochat/
 * golden.json: PyTorch's greedy replies to 35 conversations, fp32 CPU,
 * nanochat's calculator forcing, made by tools/train_picochat.py) read
 * into plain structs, for the tests of the public API. A header of static
 * functions because every tests/c/test_*.c builds alone.
 */
#ifndef NC_TESTS_GOLDEN_CASES_H
#define NC_TESTS_GOLDEN_CASES_H

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nanochat.h"

#define GOLDEN "tests/data/picochat/golden.json"
#define TIE 1e-3 /* fp32 engines differ by ~1e-5 in logits; margins below this are reference ties */

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    fclose(f);
    s[got] = 0;
    return s;
}

static size_t json_ids(const cJSON *arr, int32_t *out, size_t cap) {
    size_t n = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, arr) if (n < cap) out[n++] = (int32_t)x->valueint;
    return n;
}

typedef struct {
    nc_message msgs[4];
    size_t n_msgs;
    int max_tokens;
    int32_t prompt[512], tokens[512];
    size_t n_prompt, n_tokens, n_margins;
    double margins[512]; /* PyTorch's top-2 logit margin at each step (the terminal token's last) */
    const char *name, *text, *finish;
} golden_case;

static int load_case(const cJSON *c, golden_case *g) {
    memset(g, 0, sizeof *g);
    g->name = cJSON_GetObjectItem(c, "name")->valuestring;
    g->text = cJSON_GetObjectItem(c, "text")->valuestring;
    g->finish = cJSON_GetObjectItem(c, "finish_reason")->valuestring;
    g->max_tokens = cJSON_GetObjectItem(c, "max_tokens")->valueint;
    const cJSON *m;
    cJSON_ArrayForEach(m, cJSON_GetObjectItem(c, "messages")) {
        if (g->n_msgs == 4) return -1;
        g->msgs[g->n_msgs].role = cJSON_GetObjectItem(m, "role")->valuestring;
        g->msgs[g->n_msgs++].content = cJSON_GetObjectItem(m, "content")->valuestring;
    }
    g->n_prompt = json_ids(cJSON_GetObjectItem(c, "prompt_ids"), g->prompt, 512);
    g->n_tokens = json_ids(cJSON_GetObjectItem(c, "tokens"), g->tokens, 512);
    size_t k = 0;
    const cJSON *x;
    /* null at a step the calculator forced: no choice there, never a tie */
    cJSON_ArrayForEach(x, cJSON_GetObjectItem(c, "margins")) if (k < 512) g->margins[k++] =
        cJSON_IsNumber(x) ? x->valuedouble : INFINITY;
    g->n_margins = k;
    return 0;
}

/* Whether `tokens` (the terminal token excluded) are PyTorch's: 1 equal, 0
 * different where PyTorch had a near-tie (accepted; the rest of the case
 * is not comparable), -1 different. *at gets the first difference. */
static int golden_compare(const golden_case *g, const int32_t *tokens, size_t n, size_t *at) {
    size_t i = 0;
    while (i < g->n_tokens && i < n && g->tokens[i] == tokens[i]) i++;
    *at = i;
    if (i == g->n_tokens && n == g->n_tokens) return 1;
    return i < g->n_margins && g->margins[i] < TIE ? 0 : -1;
}

#endif /* NC_TESTS_GOLDEN_CASES_H */

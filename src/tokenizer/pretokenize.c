/*
 * pretokenize.c: splits text into pieces with the tokenizer's regex, as
 * tiktoken does with fancy-regex's find_iter (nanochat's SPLIT_PATTERN,
 * SPEC §3, but any pattern from a tokenizer file is compiled the same way).
 *
 * PCRE2 speaks the pattern's dialect natively (possessive quantifiers,
 * \p{L}/\p{N}, lookahead); PCRE2_UCP makes \s, \w and (?i) Unicode-aware
 * like Rust's regex. The pattern is JIT-compiled once; each pass owns its
 * match data, so one tokenizer serves many threads. The text is validated
 * once by the caller and every match runs with PCRE2_NO_UTF_CHECK: without
 * it PCRE2 would re-validate the whole remaining text on every match,
 * which is quadratic.
 *
 * Known difference: PCRE2's Unicode tables are those of its release
 * (Unicode 14 in PCRE2 10.42) while tiktoken's Rust regex uses a newer
 * Unicode; letters and digits assigned after Unicode 14 are split
 * differently (tests/py/test_tokenizer_tiktoken.py draws random text from
 * Unicode 14's repertoire).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "util/common.h"

struct nc_pretok {
    pcre2_code *code;
    bool jit; /* JIT compilation succeeded: use pcre2_jit_match */
};

nc_pretok *nc_pretok_new(const char *pattern) {
    int err;
    PCRE2_SIZE erroff;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                     PCRE2_UTF | PCRE2_UCP, &err, &erroff, NULL);
    if (!code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        nc_fail("tokenizer: split pattern does not compile at offset %zu: %s", (size_t)erroff,
                (const char *)msg);
        return NULL;
    }
    nc_pretok *re = nc_xcalloc(1, sizeof *re);
    re->code = code;
    re->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    return re;
}

void nc_pretok_free(nc_pretok *re) {
    if (!re) return;
    pcre2_code_free(re->code);
    free(re);
}

void nc_pretok_iter_init(nc_pretok_iter *it, const nc_pretok *re, const uint8_t *text, size_t len) {
    memset(it, 0, sizeof *it);
    it->re = re;
    it->text = text;
    it->len = len;
    it->match_data = pcre2_match_data_create(1, NULL);
    if (!it->match_data) nc_die("out of memory for PCRE2 match data");
}

void nc_pretok_iter_done(nc_pretok_iter *it) {
    pcre2_match_data_free(it->match_data);
    pcre2_match_context_free(it->match_ctx);
    pcre2_jit_stack_free(it->jit_stack);
    memset(it, 0, sizeof *it);
}

/* The first JIT stack overflow (a pathological pattern or text) gets a
 * bigger private stack; 32 kB on the machine stack serves everything else. */
static int grow_jit_stack(nc_pretok_iter *it) {
    if (it->jit_stack) return -1;
    it->match_ctx = pcre2_match_context_create(NULL);
    it->jit_stack = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, NULL);
    if (!it->match_ctx || !it->jit_stack) return -1;
    pcre2_jit_stack_assign(it->match_ctx, NULL, it->jit_stack);
    return 0;
}

/* Advances past one UTF-8 character (the text is valid UTF-8). */
static size_t next_char(const uint8_t *p, size_t len, size_t i) {
    i++;
    while (i < len && (p[i] & 0xC0) == 0x80) i++;
    return i;
}

int nc_pretok_next(nc_pretok_iter *it, size_t *start, size_t *end) {
    while (it->pos < it->len) {
        int rc;
        for (;;) {
            if (it->re->jit)
                rc = pcre2_jit_match(it->re->code, it->text, it->len, it->pos, PCRE2_NO_UTF_CHECK,
                                     it->match_data, it->match_ctx);
            else
                rc = pcre2_match(it->re->code, it->text, it->len, it->pos, PCRE2_NO_UTF_CHECK,
                                 it->match_data, it->match_ctx);
            if (rc != PCRE2_ERROR_JIT_STACKLIMIT || grow_jit_stack(it) != 0) break;
        }
        if (rc == PCRE2_ERROR_NOMATCH) {
            it->pos = it->len; /* find_iter drops text that nothing matches */
            return 0;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return nc_fail("tokenizer: splitting text failed at byte %zu: %s", it->pos,
                           (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(it->match_data);
        size_t s = ov[0], e = ov[1];
        if (e <= s) { /* an empty match: move on one character, emit nothing */
            it->pos = next_char(it->text, it->len, s > it->pos ? s : it->pos);
            continue;
        }
        it->pos = e;
        *start = s;
        *end = e;
        return 1;
    }
    return 0;
}

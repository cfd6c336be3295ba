/*
 * pretokenize.c: splits text into pieces with the tokenizer's regex, as
 * tiktoken does with fancy-regex's find_iter (nanochat's SPLIT_PATTERN,
 * docs/model.md, Tokenizer; any pattern from a tokenizer file is compiled the same way).
 *
 * PCRE2 speaks the pattern's dialect natively (possessive quantifiers,
 * \p{L}/\p{N}, lookahead); PCRE2_UCP makes \s, \w and (?i) Unicode-aware
 * like Rust's regex. The pattern is JIT-compiled once; each pass owns its
 * match data, so one tokenizer serves many threads. The text is validated
 * once by the caller and every match runs with PCRE2_NO_UTF_CHECK: without
 * it PCRE2 would re-validate the whole remaining text on every match,
 * which is quadratic.
 *
 * Matching tiktoken's character classes exactly. PCRE2's Unicode tables
 * are those of its release (Unicode 14 in PCRE2 10.42) and its \s has a
 * list of its own, while tiktoken's Rust regex uses Unicode 16. Before
 * compiling, the pattern is rewritten so both agree on every code point
 * (tools/gen_unicode_extra.py asks tiktoken about all 1.1M of them; the
 * tests probe every patched one and a sample of the rest):
 *   \p{L}, \p{N}  (spelled so, as in nanochat's pattern) gain the letters
 *                 and digits assigned after Unicode 14 (unicode_extra.h);
 *   \s, \S       become Unicode's White_Space property, which Rust uses:
 *                 \s is [\t-\r\x{85}\p{Z}]; PCRE2's own \s also holds
 *                 U+180E (a format character since Unicode 6.3), so \S is
 *                 PCRE2's \S plus U+180E, which also works inside a class.
 * The rewritten pattern is ~25% slower (PCRE2 checks the added ranges for
 * every character), and only matters for text holding one of the code
 * points where the tables differ, which are rare (newly encoded scripts,
 * CJK Extension H/I). So both patterns are compiled, and a pass picks the
 * rewritten one only when its text holds such a code point.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "unicode_extra.h"
#include "util/common.h"

struct nc_pretok {
    pcre2_code *fast;  /* the pattern as written */
    pcre2_code *exact; /* rewritten to tiktoken's classes (== fast if no change) */
    bool jit;          /* JIT compilation of both succeeded: use pcre2_jit_match */
};

/* ==== pattern rewriting ==== */

#define WHITE_SPACE "\\t-\\r\\x{85}\\p{Z}"

typedef struct {
    char *s;
    size_t n, cap;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = 2 * (b->n + n + 1);
        b->s = nc_xrealloc(b->s, b->cap);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void sb_str(strbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* The pattern with \p{L}, \p{N}, \s and \S replaced as described at the
 * top, inside and outside character classes. Returns a malloc'ed string. */
static char *rewrite_pattern(const char *pat) {
    strbuf b = {0};
    sb_str(&b, "");
    bool in_class = false;
    size_t n = strlen(pat);
    for (size_t i = 0; i < n;) {
        char c = pat[i];
        if (c == '\\' && i + 1 < n) {
            const char *e = pat + i;
            if (!strncmp(e, "\\p{L}", 5) || !strncmp(e, "\\p{N}", 5)) {
                const char *extra = e[3] == 'L' ? NC_UNICODE_EXTRA_L : NC_UNICODE_EXTRA_N;
                if (!in_class) sb_str(&b, "[");
                sb_add(&b, e, 5);
                sb_str(&b, extra);
                if (!in_class) sb_str(&b, "]");
                i += 5;
            } else if (e[1] == 's') {
                sb_str(&b, in_class ? WHITE_SPACE : "[" WHITE_SPACE "]");
                i += 2;
            } else if (e[1] == 'S') { /* PCRE2's \S lacks only U+180E */
                sb_str(&b, in_class ? "\\S\\x{180e}" : "[\\S\\x{180e}]");
                i += 2;
            } else if (e[1] == 'Q') { /* \Q...\E: literal text, copied as is */
                const char *end = strstr(e + 2, "\\E");
                size_t len = end ? (size_t)(end - e) + 2 : n - i;
                sb_add(&b, e, len);
                i += len;
            } else {
                sb_add(&b, e, 2);
                i += 2;
            }
            continue;
        }
        if (!in_class && c == '[') {
            /* A class starts; a ']' right after '[' or '[^' is a literal. */
            size_t j = i + 1;
            if (j < n && pat[j] == '^') j++;
            if (j < n && pat[j] == ']') j++;
            sb_add(&b, pat + i, j - i);
            in_class = true;
            i = j;
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && pat[i + 1] == ':') { /* [:alpha:] */
            const char *end = strstr(pat + i + 2, ":]");
            size_t len = end ? (size_t)(end - (pat + i)) + 2 : n - i;
            sb_add(&b, pat + i, len);
            i += len;
            continue;
        }
        if (in_class && c == ']') in_class = false;
        sb_add(&b, &c, 1);
        i++;
    }
    return b.s;
}

/* Compiles with UTF + UCP; NULL + PCRE2's message in msg on failure. */
static pcre2_code *compile(const char *pattern, char *msg, size_t cap, size_t *erroff) {
    int err;
    PCRE2_SIZE off;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                     PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    if (!code) {
        pcre2_get_error_message(err, (PCRE2_UCHAR *)msg, cap);
        *erroff = (size_t)off;
    }
    return code;
}

nc_pretok *nc_pretok_new(const char *pattern) {
    char msg[256];
    size_t erroff;
    pcre2_code *fast = compile(pattern, msg, sizeof msg, &erroff);
    if (!fast) {
        nc_fail("tokenizer: split pattern does not compile at offset %zu: %s", erroff, msg);
        return NULL;
    }
    char *rewritten = rewrite_pattern(pattern);
    pcre2_code *exact = fast;
    if (strcmp(rewritten, pattern) != 0) exact = compile(rewritten, msg, sizeof msg, &erroff);
    free(rewritten);
    if (!exact) {
        pcre2_code_free(fast);
        nc_fail("tokenizer: split pattern cannot be adapted to tiktoken's Unicode classes: %s", msg);
        return NULL;
    }
    nc_pretok *re = nc_xcalloc(1, sizeof *re);
    re->fast = fast;
    re->exact = exact;
    re->jit = pcre2_jit_compile(fast, PCRE2_JIT_COMPLETE) == 0 &&
              (exact == fast || pcre2_jit_compile(exact, PCRE2_JIT_COMPLETE) == 0);
    return re;
}

void nc_pretok_free(nc_pretok *re) {
    if (!re) return;
    if (re->exact != re->fast) pcre2_code_free(re->exact);
    pcre2_code_free(re->fast);
    free(re);
}

/* Whether valid UTF-8 text holds a code point on which PCRE2's and
 * tiktoken's classes differ (all are >= U+180E: 3- and 4-byte sequences). */
static bool text_needs_exact(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = p[i];
        if (c < 0xE0) { /* ASCII, 2-byte sequences (< U+0800) and their tails */
            i++;
            continue;
        }
        uint32_t cp;
        if (c < 0xF0) {
            cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F);
            i += 3;
        } else {
            cp = ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(p[i + 1] & 0x3F) << 12) |
                 ((uint32_t)(p[i + 2] & 0x3F) << 6) | (p[i + 3] & 0x3F);
            i += 4;
        }
        if (cp < nc_unicode_differs[0][0]) continue;
        size_t lo = 0, hi = NC_ARRAY_LEN(nc_unicode_differs);
        while (lo < hi) { /* first range whose end is >= cp */
            size_t mid = (lo + hi) / 2;
            if (nc_unicode_differs[mid][1] < cp)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo < NC_ARRAY_LEN(nc_unicode_differs) && nc_unicode_differs[lo][0] <= cp) return true;
    }
    return false;
}

void nc_pretok_iter_init(nc_pretok_iter *it, const nc_pretok *re, const uint8_t *text, size_t len) {
    memset(it, 0, sizeof *it);
    it->re = re;
    it->code = re->exact != re->fast && text_needs_exact(text, len) ? re->exact : re->fast;
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
                rc = pcre2_jit_match(it->code, it->text, it->len, it->pos, PCRE2_NO_UTF_CHECK,
                                     it->match_data, it->match_ctx);
            else
                rc = pcre2_match(it->code, it->text, it->len, it->pos, PCRE2_NO_UTF_CHECK,
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

/*
 * token_text.c: generated tokens -> visible text and calculator events
 * (token_text.h).
 *
 * Every token is first decoded into `scratch` by the one stream decoder of
 * the row; in the tool-call view, what belongs to an expression or a
 * result then moves to its buffer instead of being returned as text.
 */
#include "token_text.h"

#include <stdlib.h>
#include <string.h>

#include "../tokenizer/utf8.h"
#include "../util/common.h"

enum { IN_TEXT, IN_EXPR, AFTER_CALL, IN_RESULT };

void nc_token_text_init(nc_token_text *t, const nc_tokenizer *tok, nc_text_view view) {
    memset(t, 0, sizeof *t);
    t->tok = tok;
    t->view = view;
    t->py_start = nc_tokenizer_special_id(tok, NC_TOK_PYTHON_START);
    t->py_end = nc_tokenizer_special_id(tok, NC_TOK_PYTHON_END);
    t->out_start = nc_tokenizer_special_id(tok, NC_TOK_OUTPUT_START);
    t->out_end = nc_tokenizer_special_id(tok, NC_TOK_OUTPUT_END);
    /* Worst cases: a token's bytes after up to 3 pending ones, each a
     * 3-byte U+FFFD (nc_stream_decode's requirement), or a flushed
     * partial character followed by a special token's text. */
    t->scratch_cap = 4 * nc_tokenizer_max_token_bytes(tok) + 64;
    t->scratch = nc_xmalloc(t->scratch_cap);
}

void nc_token_text_free(nc_token_text *t) {
    free(t->scratch);
    free(t->expr.s);
    free(t->result.s);
    memset(t, 0, sizeof *t);
}

static void buf_clear(nc_text_buf *b) {
    b->len = 0;
    if (b->s) b->s[0] = 0;
}

static void buf_put(nc_text_buf *b, const char *s, size_t n) { nc_xappend(&b->s, &b->len, &b->cap, s, n); }

static const char *buf_str(const nc_text_buf *b) { return b->s ? b->s : ""; }

static void event(nc_token_text *t, nc_tool_kind kind, nc_tool_event *tool) {
    tool->kind = kind;
    tool->expr = kind == NC_TOOL_NO_RESULT ? NULL : buf_str(&t->expr);
    tool->result = kind == NC_TOOL_RESULT ? buf_str(&t->result) : NULL;
}

/* Bytes of the current character cut short, as U+FFFD, into scratch. */
static size_t flush(nc_token_text *t) {
    int n = nc_stream_flush(&t->dec, t->scratch, t->scratch_cap);
    return n > 0 ? (size_t)n : 0;
}

/* Text decoded while inside a call belongs to the call, not the row. */
static size_t route(nc_token_text *t, size_t n) {
    if (t->state == IN_EXPR) buf_put(&t->expr, t->scratch, n);
    else if (t->state == IN_RESULT) buf_put(&t->result, t->scratch, n);
    else return n;
    return 0;
}

/* A special token in the tool-call view: moves between text, expression
 * and result. */
static void tool_token(nc_token_text *t, int32_t id, nc_tool_event *tool) {
    if (t->state == AFTER_CALL && id != t->out_start) {
        event(t, NC_TOOL_NO_RESULT, tool);
        t->state = IN_TEXT;
    }
    if (id == t->py_start) {
        t->state = IN_EXPR;
        buf_clear(&t->expr);
        buf_clear(&t->result);
    } else if (id == t->py_end && t->state == IN_EXPR) {
        t->state = AFTER_CALL;
        event(t, NC_TOOL_CALL, tool);
    } else if (id == t->out_start && t->state == AFTER_CALL) {
        t->state = IN_RESULT;
        buf_clear(&t->result);
    } else if (id == t->out_end && t->state == IN_RESULT) {
        t->state = IN_TEXT;
        event(t, NC_TOOL_RESULT, tool);
    }
}

const char *nc_token_text_feed(nc_token_text *t, int32_t id, size_t *len, nc_tool_event *tool) {
    memset(tool, 0, sizeof *tool);
    size_t n;
    if (nc_tokenizer_is_special(t->tok, id)) {
        n = route(t, flush(t));
        if (t->view == NC_TEXT_AS_DECODED) {
            size_t sl = 0;
            const uint8_t *b = nc_tokenizer_token_bytes(t->tok, id, &sl);
            if (b) memcpy(t->scratch + n, b, sl);
            n += b ? sl : 0;
        } else {
            tool_token(t, id, tool);
        }
    } else {
        if (t->state == AFTER_CALL) {
            event(t, NC_TOOL_NO_RESULT, tool);
            t->state = IN_TEXT;
        }
        int k = nc_stream_decode(&t->dec, t->tok, id, t->scratch, t->scratch_cap);
        if (k < 0) { /* an id the tokenizer lacks */
            n = flush(t);
            memcpy(t->scratch + n, NC_UTF8_REPLACEMENT, 3);
            n += 3;
        } else {
            n = (size_t)k;
        }
        n = route(t, n);
    }
    *len = n;
    return t->scratch;
}

const char *nc_token_text_end(nc_token_text *t, size_t *len, nc_tool_event *tool) {
    memset(tool, 0, sizeof *tool);
    *len = route(t, flush(t));
    if (t->state == IN_EXPR) event(t, NC_TOOL_CALL_CUT, tool);
    else if (t->state == AFTER_CALL) event(t, NC_TOOL_NO_RESULT, tool);
    else if (t->state == IN_RESULT) event(t, NC_TOOL_RESULT, tool);
    t->state = IN_TEXT;
    return t->scratch;
}

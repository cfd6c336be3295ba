/*
 * token_text.h: a row's generated tokens as the text a reader sees, the
 * one place where sampled ids become text for every front end: the
 * server's two protocols, the CLI's live display and --json, the C API.
 *
 * Text is decoded as a stream (nc_stream_decode): never half a UTF-8
 * character, malformed bytes as U+FFFD the way Python's
 * decode("utf-8", "replace") does. A special token ends any pending
 * partial character; an id the tokenizer lacks (random weights whose
 * vocabulary outgrows the tokenizer) shows as U+FFFD.
 *
 * Two views of the calculator tool (<|python_start|> EXPR <|python_end|>,
 * then <|output_start|> RESULT <|output_end|> when the engine forces one):
 *   NC_TEXT_AS_DECODED  every token's text, special tokens included, as
 *                       nanochat's tokenizer.decode() renders them (the
 *                       OpenAI API, the C API);
 *   NC_TEXT_TOOL_CALLS  calls and results kept out of the text and
 *                       reported as events instead (nanochat's protocol
 *                       and web page, the CLI's [calculator: 37*41 = 1517]);
 *                       other special tokens are not text.
 * Calls are followed as nanochat's Engine.generate follows them: a
 * <|python_start|> anywhere starts a new expression, <|python_end|> closes
 * an open one, and a result is the <|output_start|> .. <|output_end|> that
 * comes right after a call (that is where the engine forces it).
 *
 * The terminal token (<|assistant_end|> / <|bos|>) is never text: callers
 * do not feed it.
 */
#ifndef NC_ENGINE_TOKEN_TEXT_H
#define NC_ENGINE_TOKEN_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "../tokenizer/tokenizer.h"

typedef enum { NC_TEXT_AS_DECODED, NC_TEXT_TOOL_CALLS } nc_text_view;

typedef enum {
    NC_TOOL_NONE = 0,
    NC_TOOL_CALL,      /* <|python_end|> closed an expression (expr); a result may follow */
    NC_TOOL_RESULT,    /* the call's result (expr, result): closed by <|output_end|>, or cut
                          short by the end of the row (from nc_token_text_end only) */
    NC_TOOL_NO_RESULT, /* the last call got no result (the calculator had none, or was off) */
    NC_TOOL_CALL_CUT,  /* the row ended inside an expression (expr: what there was) */
} nc_tool_kind;

typedef struct {
    nc_tool_kind kind;
    const char *expr;   /* NUL-terminated, decoded; with CALL, RESULT, CALL_CUT */
    const char *result; /* with RESULT */
} nc_tool_event;        /* pointers valid until the next feed / end */

typedef struct {
    char *s;
    size_t len, cap;
} nc_text_buf;

typedef struct {
    const nc_tokenizer *tok;         /* borrowed */
    nc_text_view view;
    int32_t py_start, py_end, out_start, out_end; /* the tool's token ids (-1: absent) */
    int state;                       /* text, expression, after a call, result */
    nc_stream_decoder dec;
    char *scratch;                   /* one token's text */
    size_t scratch_cap;
    nc_text_buf expr, result;
} nc_token_text;

void nc_token_text_init(nc_token_text *t, const nc_tokenizer *tok, nc_text_view view);
void nc_token_text_free(nc_token_text *t);

/* Feeds one generated token. Returns the text it adds to the row (*len
 * bytes, not NUL-terminated, valid until the next call) and fills *tool
 * with the tool event it causes (NC_TOOL_NONE for most tokens); an event
 * comes before the returned text. */
const char *nc_token_text_feed(nc_token_text *t, int32_t id, size_t *len, nc_tool_event *tool);

/* The row ended: returns the text the decoder still held (a cut character
 * as U+FFFD) and, in NC_TEXT_TOOL_CALLS, reports a call left open (CALL_CUT,
 * NO_RESULT, or RESULT with the result so far). The state is then the
 * start of a row again. */
const char *nc_token_text_end(nc_token_text *t, size_t *len, nc_tool_event *tool);

#endif /* NC_ENGINE_TOKEN_TEXT_H */

/*
 * gen_text.h: turns a request's token events into text, per row: streaming
 * UTF-8 decode (never half a character), OpenAI stop strings matched on the
 * text across token boundaries (with the text that could still become a
 * stop string held back from the stream), logprob records, and the
 * calculator tool.
 *
 * Tokens become text through engine/token_text.h, in one of its two views:
 *   - tool_events (nanochat protocol, our web page): calls kept out of the
 *     text and reported as NC_FEED_TOOL events carrying the expression
 *     and, once forced, its result;
 *   - otherwise (OpenAI API): their special-token text stays in the
 *     content, as nanochat's tokenizer.decode() renders it, so a client sees
 *     exactly what the model produced.
 * The terminal token (<|assistant_end|> / <|bos|>) is never text.
 */
#ifndef NC_SERVER_GEN_TEXT_H
#define NC_SERVER_GEN_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../engine/token_text.h"
#include "../tokenizer/tokenizer.h"
#include "gen_queue.h"

/* One generated token's logprob record (OpenAI logprobs). */
typedef struct {
    int32_t token;
    float logprob;
    int32_t n_top;
    size_t text_offset;  /* byte offset of its text in the row's text */
} nc_lp_entry;

typedef struct {
    nc_token_text decoder; /* tokens -> text (and tool events) */
    char *text;            /* visible text (stop string and beyond removed) */
    size_t len, cap;
    size_t sent;           /* bytes already streamed (protocol-owned) */
    int32_t n_tokens;      /* tokens generated before the row ended (terminal included) */
    nc_finish_reason finish;
    bool done;             /* no more text will come (engine finish or stop string) */
    bool stop_hit;         /* ended by a stop string (OpenAI finish_reason "stop") */
    bool finish_sent;      /* protocol-owned */
    nc_lp_entry *lp;       /* [n_lp] when logprobs were asked for */
    nc_token_logprob *lp_top; /* [n_lp * top_per] */
    size_t n_lp, cap_lp;
    size_t lp_sent;        /* protocol-owned */
} nc_row_text;

typedef struct {
    const nc_tokenizer *tok;
    int32_t n_rows;
    int32_t top_logprobs;        /* -1: no logprob records */
    char *const *stop;           /* borrowed from the request */
    const size_t *stop_len;
    int n_stop;
    nc_row_text *rows;           /* [n_rows] */
} nc_gen_text;

/* Borrows tok and the stop strings. */
void nc_gen_text_init(nc_gen_text *g, const nc_tokenizer *tok, int32_t n_rows, bool tool_events,
                      int32_t top_logprobs, char *const *stop, const size_t *stop_len, int n_stop);
void nc_gen_text_free(nc_gen_text *g);

enum { NC_FEED_STOP_HIT = 1, NC_FEED_TOOL = 2 };

/* Feeds one queue event (its alternatives in `tops`). Returns a mask of
 * NC_FEED_STOP_HIT (the row just matched a stop string: ask the engine to
 * stop it) and NC_FEED_TOOL (`*tool` holds a call or its result; text
 * before it is in the row already, so flush the row before reporting the
 * tool). */
int nc_gen_text_feed(nc_gen_text *g, const nc_gq_event *ev, const nc_token_logprob *tops,
                     nc_tool_event *tool);

/* End of the row's text that may be sent now: all of it once done, else
 * short of any suffix that could still grow into a stop string. */
size_t nc_gen_text_releasable(const nc_gen_text *g, int32_t row);

bool nc_gen_text_all_done(const nc_gen_text *g);

/* OpenAI's finish_reason of a finished row: "stop" or "length" (a cancelled
 * or failed row reports "stop"/"error" as named by nc_finish_reason_name). */
const char *nc_gen_text_finish_reason(const nc_row_text *r);

#endif /* NC_SERVER_GEN_TEXT_H */

/*
 * gen_text.c: token events -> per-row text, stop strings, logprob records,
 * tool events (see gen_text.h). Runs on the HTTP thread that consumes the
 * request's queue.
 */
#include "gen_text.h"

#include <stdlib.h>
#include <string.h>

#include "../util/common.h"

void nc_gen_text_init(nc_gen_text *g, const nc_tokenizer *tok, int32_t n_rows, bool tool_events,
                      int32_t top_logprobs, char *const *stop, const size_t *stop_len, int n_stop) {
    memset(g, 0, sizeof *g);
    g->tok = tok;
    g->n_rows = n_rows;
    g->top_logprobs = top_logprobs;
    g->stop = stop;
    g->stop_len = stop_len;
    g->n_stop = n_stop;
    g->rows = nc_xcalloc((size_t)n_rows, sizeof *g->rows);
    for (int32_t r = 0; r < n_rows; r++)
        nc_token_text_init(&g->rows[r].decoder, tok, tool_events ? NC_TEXT_TOOL_CALLS : NC_TEXT_AS_DECODED);
}

void nc_gen_text_free(nc_gen_text *g) {
    for (int32_t r = 0; r < g->n_rows && g->rows; r++) {
        nc_token_text_free(&g->rows[r].decoder);
        free(g->rows[r].text);
        free(g->rows[r].lp);
        free(g->rows[r].lp_top);
    }
    free(g->rows);
    memset(g, 0, sizeof *g);
}

static void text_append(nc_row_text *r, const char *s, size_t n) {
    if (n) nc_xappend(&r->text, &r->len, &r->cap, s, n);
}

/* Earliest match of any stop string that ends after `from_end`: the text
 * before `from_end` was already searched. Returns its offset or -1. */
static long find_stop(const nc_gen_text *g, const nc_row_text *r, size_t from_end) {
    long best = -1;
    for (int s = 0; s < g->n_stop; s++) {
        size_t sl = g->stop_len[s];
        if (sl > r->len) continue;
        size_t start = from_end >= sl ? from_end - sl + 1 : 0;
        for (size_t i = start; i + sl <= r->len; i++) {
            if (best >= 0 && (long)i >= best) break;
            if (!memcmp(r->text + i, g->stop[s], sl)) { best = (long)i; break; }
        }
    }
    return best;
}

static void record_logprob(nc_gen_text *g, nc_row_text *r, const nc_gq_event *ev,
                           const nc_token_logprob *tops, size_t offset) {
    if (g->top_logprobs < 0) return;
    int32_t per = g->top_logprobs;
    if (r->n_lp == r->cap_lp) {
        r->cap_lp = r->cap_lp ? r->cap_lp * 2 : 64;
        r->lp = nc_xrealloc(r->lp, r->cap_lp * sizeof *r->lp);
        if (per > 0) r->lp_top = nc_xrealloc(r->lp_top, r->cap_lp * (size_t)per * sizeof *r->lp_top);
    }
    nc_lp_entry *e = &r->lp[r->n_lp];
    e->token = ev->token;
    e->logprob = ev->has_logprob ? ev->logprob : 0.0f; /* forced tool tokens: probability 1 */
    e->n_top = ev->has_logprob ? NC_MIN(ev->n_top, per) : 0;
    e->text_offset = offset;
    if (per > 0 && e->n_top > 0)
        memcpy(&r->lp_top[r->n_lp * (size_t)per], tops, sizeof *tops * (size_t)e->n_top);
    r->n_lp++;
}

int nc_gen_text_feed(nc_gen_text *g, const nc_gq_event *ev, const nc_token_logprob *tops,
                     nc_tool_event *tool) {
    NC_ASSERT(ev->row >= 0 && ev->row < g->n_rows);
    nc_row_text *r = &g->rows[ev->row];
    int flags = 0;
    if (ev->token >= 0 && !r->done) {
        r->n_tokens++;
        if (!ev->terminal) {
            size_t before = r->len, n;
            const char *s = nc_token_text_feed(&r->decoder, ev->token, &n, tool);
            /* Calls and results are reported; a call that got no result
             * shows nothing in this protocol. */
            if (tool->kind == NC_TOOL_CALL || tool->kind == NC_TOOL_RESULT) flags |= NC_FEED_TOOL;
            text_append(r, s, n);
            record_logprob(g, r, ev, tops, before);
            if (g->n_stop > 0 && r->len > before) {
                long at = find_stop(g, r, before);
                if (at >= 0) {
                    r->len = (size_t)at;
                    r->text[r->len] = 0;
                    /* Logprob records of tokens that start inside the stop string go too. */
                    while (r->n_lp > 0 && r->lp[r->n_lp - 1].text_offset >= r->len)
                        r->n_lp--;
                    r->done = true;
                    r->stop_hit = true;
                    r->finish = NC_FINISH_STOP;
                    flags |= NC_FEED_STOP_HIT;
                }
            }
        }
    }
    if (ev->finish != NC_FINISH_NONE && !r->done) {
        nc_tool_event cut; /* a call the row ended inside is not reported */
        size_t n;
        const char *s = nc_token_text_end(&r->decoder, &n, &cut);
        text_append(r, s, n);
        r->finish = (nc_finish_reason)ev->finish;
        r->done = true;
    }
    return flags;
}

size_t nc_gen_text_releasable(const nc_gen_text *g, int32_t row) {
    const nc_row_text *r = &g->rows[row];
    if (r->done || g->n_stop == 0) return r->len;
    size_t hold = 0;
    for (int s = 0; s < g->n_stop; s++) {
        size_t sl = g->stop_len[s];
        for (size_t k = NC_MIN(sl - 1, r->len); k > hold; k--)
            if (!memcmp(r->text + r->len - k, g->stop[s], k)) { hold = k; break; }
    }
    size_t end = r->len - hold;
    return end > r->sent ? end : r->sent;
}

bool nc_gen_text_all_done(const nc_gen_text *g) {
    for (int32_t r = 0; r < g->n_rows; r++)
        if (!g->rows[r].done) return false;
    return true;
}

const char *nc_gen_text_finish_reason(const nc_row_text *r) {
    if (r->stop_hit) return "stop";
    switch (r->finish) {
    case NC_FINISH_LENGTH: return "length";
    case NC_FINISH_ERROR: return "error";
    default: return "stop";
    }
}

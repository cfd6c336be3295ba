/*
 * sched_mock.h: the mock backend, scripted model (over the byte tokenizer
 * of byte_tokenizer.h) and reference generator of test_scheduler.c (see
 * its top comment). A header of static functions because every
 * tests/c/test_*.c builds alone.
 */
#ifndef NC_TESTS_SCHED_MOCK_H
#define NC_TESTS_SCHED_MOCK_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "byte_tokenizer.h"
#include "check.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "util/common.h"

/* ==== the scripted model ==== */

static uint64_t hash_tokens(const int32_t *h, int n) {
    uint64_t x = 1469598103934665603ull;
    for (int i = 0; i < n; i++) x = (x ^ (uint64_t)(h[i] + 1)) * 1099511628211ull;
    return x;
}

/* The most likely next token after history h[0..n). */
static int32_t next_token(const int32_t *h, int n) {
    int a = -1;
    for (int i = n - 1; i >= 0; i--)
        if (h[i] == ASSIST_START) { a = i; break; }
    bool calc = false, stopper = false;
    int quote = -1;
    for (int i = 0; i < (a < 0 ? n : a); i++) {
        calc |= h[i] == '#';
        stopper |= h[i] == 'S';
        if (h[i] == 'Q' && quote < 0) quote = i;
    }
    if (a >= 0 && quote >= 0) { /* 'Q': the reply repeats the text after it, then ends */
        int src = quote + 1 + (n - 1 - a);
        return src < a && h[src] != USER_END ? h[src] : ASSIST_END;
    }
    int py = -1, pye = -1, oute = -1;
    for (int i = a + 1; i < n; i++) {
        if (h[i] == PY_START) py = i;
        if (h[i] == PY_END) pye = i;
        if (h[i] == OUT_END) oute = i;
    }
    if (calc && py < 0) return PY_START;
    if (py >= 0 && pye < 0) {
        int k = n - 1 - py;
        return k < 3 ? "6*7"[k] : PY_END;
    }
    if (oute == n - 1) return ASSIST_END;
    if (pye == n - 1) return 'N'; /* the tool gave nothing */
    if (stopper && n - 1 - a >= 3) return ASSIST_END;
    return 'a' + (int32_t)(hash_tokens(h, n) % 26);
}

/* Logits: the scripted token first, two runners-up close behind (so
 * sampling at temperature ~1 does pick them), everything else low. Tool
 * and stop tokens stand out more, so sampled runs reach them too. */
static void model_logits(const int32_t *h, int n, float *out) {
    for (int i = 0; i < V; i++) out[i] = -3.0f + 0.001f * (float)(i % 7);
    uint64_t x = hash_tokens(h, n);
    out['a' + (int32_t)((x >> 8) % 26)] = 2.0f;
    out['A' + (int32_t)((x >> 16) % 26)] = 2.5f;
    int32_t t = next_token(h, n);
    bool scripted = t >= NB || t == '6' || t == '*' || t == '7';
    out[t] = scripted ? 6.0f : 3.0f;
}

/* ==== mock backend ==== */

#define MAX_LOG 20000
typedef struct {
    int n_seqs, tokens, max_chunk, n_prefill, n_decode, first_pos;
    bool sample_call;
} batch_rec;

typedef void (*logits_fn)(const int32_t *h, int n, float *out);

typedef struct {
    nc_backend b;
    nc_backend_ops ops;   /* b.ops: a copy of mock_ops_host / _dev that a test may change */
    nc_model model;
    logits_fn logits;     /* the "model" (model_logits unless a test drafts with another) */
    double cost_base, cost_per_token; /* seconds each forward takes (busy-waited), 0: none */
    double simulated;     /* the sum of those seconds over every forward (the noise-free device time) */
    int32_t *kv;          /* [n_blocks * 64] token stored at each slot, -1 unwritten */
    int errors;           /* contract violations seen */
    int sampled_all;      /* chunks verified by forward_sample (every position sampled) */
    char first_error[256];
    batch_rec log[MAX_LOG];
    int n_log;
    bool fail_next;
} mock;

static mock *mock_of(nc_backend *b) { return (mock *)b; }

static void mock_error(mock *m, const char *msg) {
    if (!m->errors++) snprintf(m->first_error, sizeof m->first_error, "%s", msg);
}

/* Runs one chunk: checks it, reads the history back through its block
 * table, writes its tokens. Returns the history length (pos + n) in h. */
static int run_chunk(mock *m, const nc_seq_chunk *c, int32_t *h) {
    if (c->n_tokens < 1 || c->pos < 0) mock_error(m, "bad chunk shape");
    int end = c->pos + c->n_tokens;
    for (int p = 0; p < end; p++) {
        int32_t blk = c->block_table[p / 64];
        if (blk < 0 || blk >= m->b.n_kv_blocks) {
            mock_error(m, "block id out of the pool");
            return 0;
        }
        int32_t *slot = &m->kv[(size_t)blk * 64 + p % 64];
        if (p < c->pos) {
            if (*slot < 0) mock_error(m, "reads an unwritten KV slot");
            h[p] = *slot;
        } else {
            h[p] = c->tokens[p - c->pos];
            *slot = h[p];
        }
    }
    if (c->pos > 0 && c->prev_token != h[c->pos - 1]) mock_error(m, "prev_token differs from the cache");
    if (c->pos == 0 && c->prev_token != -1) mock_error(m, "prev_token at position 0 must be -1");
    return end;
}

static void record(mock *m, const nc_batch *batch, bool sample_call) {
    if (m->n_log >= MAX_LOG) return;
    batch_rec *r = &m->log[m->n_log++];
    memset(r, 0, sizeof *r);
    r->n_seqs = batch->n_seqs;
    r->sample_call = sample_call;
    r->first_pos = batch->n_seqs ? batch->seqs[0].pos : -1;
    for (int i = 0; i < batch->n_seqs; i++) {
        const nc_seq_chunk *c = &batch->seqs[i];
        r->tokens += c->n_tokens;
        r->max_chunk = NC_MAX(r->max_chunk, c->n_tokens);
        if (c->n_tokens > 1 || c->logits == NC_LOGITS_NONE) r->n_prefill++;
        else r->n_decode++;
    }
    if (batch->n_seqs > m->b.max_seqs) mock_error(m, "too many sequences in a batch");
    if (r->tokens > m->b.max_batch_tokens) mock_error(m, "too many tokens in a batch");
}

static int32_t hist[8192];

/* A device whose forward takes cost_base + cost_per_token * tokens. */
static void mock_spend(mock *m, const nc_batch *batch) {
    int tokens = 0;
    for (int i = 0; i < batch->n_seqs; i++) tokens += batch->seqs[i].n_tokens;
    double cost = m->cost_base + m->cost_per_token * tokens, until = nc_now() + cost;
    m->simulated += cost;
    if (cost > 0)
        while (nc_now() < until) {}
}

static int mock_forward(nc_backend *b, const nc_batch *batch, float *logits) {
    mock *m = mock_of(b);
    record(m, batch, false);
    mock_spend(m, batch);
    if (m->fail_next) {
        m->fail_next = false;
        return nc_fail("mock device lost");
    }
    int row = 0;
    for (int i = 0; i < batch->n_seqs; i++) {
        const nc_seq_chunk *c = &batch->seqs[i];
        int n = run_chunk(m, c, hist);
        if (c->logits == NC_LOGITS_LAST) m->logits(hist, n, logits + (size_t)V * row++);
        if (c->logits == NC_LOGITS_ALL) /* speculative verification: every position's */
            for (int p = c->pos; p < n; p++) m->logits(hist, p + 1, logits + (size_t)V * row++);
    }
    return 0;
}

static int mock_forward_sample(nc_backend *b, const nc_batch *batch, nc_device_sampling *rows, int32_t *out) {
    mock *m = mock_of(b);
    record(m, batch, true);
    mock_spend(m, batch);
    static float lg[V];
    nc_sampler_scratch scr;
    nc_sampler_scratch_init(&scr, V);
    int sampled = 0;
    for (int i = 0; i < batch->n_seqs; i++) {
        const nc_seq_chunk *c = &batch->seqs[i];
        int n = run_chunk(m, c, hist);
        if (c->logits == NC_LOGITS_NONE) continue; /* fills the cache only */
        nc_sampling sp = {rows[i].temperature, rows[i].top_k, rows[i].top_p, rows[i].min_p};
        if (c->logits == NC_LOGITS_ALL) { /* verification: every position, the generator left as it came */
            if (!b->ops->sample_all || !rows[i].tokens) mock_error(m, "forward_sample chunk with ALL");
            if (!rows[i].tokens) continue;
            m->sampled_all++;
            uint64_t g[2] = {rows[i].rng_state[0], rows[i].rng_state[1]};
            for (int p = c->pos; p < n; p++, sampled++) {
                m->logits(hist, p + 1, lg);
                uint64_t gi[2] = {g[0], g[1]}; /* position p - pos: as many draws skipped */
                rows[i].tokens[p - c->pos] = nc_sample(lg, V, &sp, gi, &scr);
                if (sp.temperature > 0) nc_rng_next(g);
                if (rows[i].want_logprob)
                    rows[i].logprobs[p - c->pos] = nc_sample_logprobs(lg, V, rows[i].tokens[p - c->pos], 0, NULL, NULL);
            }
            continue;
        }
        sampled++;
        m->logits(hist, n, lg);
        out[i] = nc_sample(lg, V, &sp, rows[i].rng_state, &scr); /* a device mirroring the host sampler */
        if (rows[i].want_logprob) {
            if (!b->ops->sample_logprobs) mock_error(m, "want_logprob sent to a backend without sample_logprobs");
            rows[i].logprob = nc_sample_logprobs(lg, V, out[i], 0, NULL, NULL);
        }
    }
    if (sampled > m->b.max_seqs) mock_error(m, "forward_sample: more positions sampled than max_seqs");
    nc_sampler_scratch_free(&scr);
    return 0;
}

static int mock_copy(nc_backend *b, int32_t src, int32_t dst, int32_t n) {
    mock *m = mock_of(b);
    if (src < 0 || dst < 0 || src >= b->n_kv_blocks || dst >= b->n_kv_blocks || n < 0 || n > 64 || src == dst)
        mock_error(m, "bad copy_kv_block");
    memcpy(&m->kv[(size_t)dst * 64], &m->kv[(size_t)src * 64], (size_t)n * sizeof(int32_t));
    for (int i = n; i < 64; i++) m->kv[(size_t)dst * 64 + i] = -1; /* the rest is garbage: mark it */
    return 0;
}

static const char *mock_describe(nc_backend *b) { return "mock"; }

/* Both batch-invariant: a position's logits are a function of its history. */
static const nc_backend_ops mock_ops_host = {.name = "mock", .forward = mock_forward, .copy_kv_block = mock_copy,
                                             .describe = mock_describe, .batch_invariant = true};
static const nc_backend_ops mock_ops_dev = {.name = "mock-dev", .forward = mock_forward,
                                            .forward_sample = mock_forward_sample, .sample_all = true,
                                            .copy_kv_block = mock_copy, .describe = mock_describe,
                                            .batch_invariant = true};
/* ... which also returns the sampled token's log-probability, like the
 * CUDA backend (not batch-invariant either: no speculation by default, so
 * every step can sample on the device) */
static const nc_backend_ops mock_ops_dev_logprobs = {.name = "mock-dev-logprobs", .forward = mock_forward,
                                                     .forward_sample = mock_forward_sample,
                                                     .sample_logprobs = true, .sample_all = true,
                                                     .copy_kv_block = mock_copy,
                                                     .describe = mock_describe};

static mock *mock_new(int n_blocks, int max_seqs, int max_batch_tokens, bool device_sampling) {
    mock *m = calloc(1, sizeof *m);
    m->model.cfg.vocab_size = V;
    m->model.cfg.padded_vocab = V;
    m->model.cfg.sequence_len = 1024;
    m->ops = device_sampling ? mock_ops_dev : mock_ops_host;
    m->b.ops = &m->ops;
    m->b.model = &m->model;
    m->b.n_kv_blocks = n_blocks;
    m->b.max_seqs = max_seqs;
    m->b.max_batch_tokens = max_batch_tokens;
    m->logits = model_logits;
    m->kv = malloc(sizeof(int32_t) * 64 * (size_t)n_blocks);
    for (int i = 0; i < 64 * n_blocks; i++) m->kv[i] = -1;
    return m;
}

static void mock_free(mock *m) {
    CHECK(m->errors == 0, "mock backend saw %d contract violations; first: %s", m->errors, m->first_error);
    free(m->kv);
    free(m);
}

/* ==== collecting events ==== */

#define MAX_ROWS 8
#define MAX_OUT 1200
typedef struct {
    int32_t toks[MAX_ROWS][MAX_OUT];
    bool forced[MAX_ROWS][MAX_OUT];
    float logprob[MAX_ROWS][MAX_OUT];
    int n[MAX_ROWS];
    nc_finish_reason finish[MAX_ROWS];
    int n_finish_events[MAX_ROWS];
    bool terminal_seen[MAX_ROWS];
    int events_after_finish;
    int n_cached;
    int stop_after;      /* callback returns true after this many tokens (0: never) */
    int steps_seen;      /* set by the driver: step index of the last token */
    int last_step[MAX_ROWS];
    nc_scheduler *sched; /* set: the queue's count seen at each row's final event */
    int32_t queued_at_finish[MAX_ROWS];
} collector;

static int g_step;

static bool on_event(void *user, const nc_gen_event *ev) {
    collector *c = user;
    int r = ev->row;
    if (r < 0 || r >= MAX_ROWS) return true;
    if (c->n_finish_events[r]) c->events_after_finish++;
    c->n_cached = ev->n_cached_tokens;
    if (ev->token >= 0 && c->n[r] < MAX_OUT) {
        c->forced[r][c->n[r]] = ev->forced;
        c->logprob[r][c->n[r]] = ev->chosen.logprob;
        c->toks[r][c->n[r]++] = ev->token;
        c->last_step[r] = g_step;
        if (ev->is_terminal) c->terminal_seen[r] = true;
    }
    if (ev->finish != NC_FINISH_NONE) {
        c->finish[r] = ev->finish;
        c->n_finish_events[r]++;
        if (c->sched) {
            nc_scheduler_stats st;
            nc_scheduler_get_stats(c->sched, &st);
            c->queued_at_finish[r] = st.queued;
        }
    }
    return c->stop_after > 0 && c->n[r] >= c->stop_after;
}

static int run_all(nc_scheduler *s) {
    int steps = 0, left;
    while ((left = nc_scheduler_step(s)) > 0 && steps < 100000) {
        steps++;
        g_step++;
    }
    return left < 0 ? -1 : steps;
}

/* ==== reference generator (docs/model.md, Sampling and Calculator, applied to the script) ==== */

typedef struct {
    int32_t toks[MAX_OUT];
    bool forced[MAX_OUT];
    int n;
    nc_finish_reason finish;
} ref_out;

static void ref_generate(const int32_t *prompt, int np, int max_tokens, int max_context, bool calc, ref_out *o) {
    static int32_t h[8192];
    memcpy(h, prompt, sizeof(int32_t) * (size_t)np);
    int n = np;
    int32_t pending[8];
    int n_pending = 0, next_pending = 0;
    int py = -1;
    o->n = 0;
    for (;;) {
        int32_t t;
        bool forced = next_pending < n_pending;
        if (forced) t = pending[next_pending++];
        else t = next_token(h, n);
        h[n++] = t;
        o->forced[o->n] = forced;
        o->toks[o->n++] = t;
        if (calc && t == PY_START) py = n;
        if (calc && t == PY_END && py >= 0) {
            /* the script's expression is always 6*7: nanochat forces its str() */
            bool is_6x7 = n - 1 - py == 3 && h[py] == '6' && h[py + 1] == '*' && h[py + 2] == '7';
            if (is_6x7) {
                int32_t f[4] = {OUT_START, '4', '2', OUT_END};
                memcpy(pending, f, sizeof f);
                n_pending = 4;
                next_pending = 0;
            }
            py = -1;
        }
        if (!forced && (t == ASSIST_END || t == BOS)) {
            o->finish = NC_FINISH_STOP;
            return;
        }
        if (o->n >= max_tokens || n >= max_context) {
            o->finish = NC_FINISH_LENGTH;
            return;
        }
    }
}

/* <|bos|><|user_start|> text <|user_end|><|assistant_start|> */
static int chat_prompt(const char *text, int32_t *out) {
    int n = 0;
    out[n++] = BOS;
    out[n++] = USER_START;
    for (const char *p = text; *p; p++) out[n++] = (uint8_t)*p;
    out[n++] = USER_END;
    out[n++] = ASSIST_START;
    return n;
}

static nc_gen_params greedy(int max_tokens) {
    nc_gen_params p = nc_gen_params_default();
    p.temperature = 0.0f;
    p.max_tokens = max_tokens;
    return p;
}

static void check_matches_ref(const char *what, collector *c, int row, const ref_out *ref) {
    int n = c->n[row];
    bool same = n == ref->n;
    for (int i = 0; i < n && same; i++) same = c->toks[row][i] == ref->toks[i] && c->forced[row][i] == ref->forced[i];
    CHECK(same, "%s: row %d: %d tokens vs reference %d (first difference shown in order)", what, row, n, ref->n);
    if (!same) {
        for (int i = 0; i < NC_MIN(n, ref->n); i++)
            if (c->toks[row][i] != ref->toks[i] || c->forced[row][i] != ref->forced[i]) {
                fprintf(stderr, "  token %d: got %d%s, want %d%s\n", i, c->toks[row][i], c->forced[row][i] ? "(f)" : "",
                        ref->toks[i], ref->forced[i] ? "(f)" : "");
                break;
            }
    }
    CHECK(c->finish[row] == ref->finish, "%s: finish %s, want %s", what, nc_finish_reason_name(c->finish[row]),
          nc_finish_reason_name(ref->finish));
    CHECK(c->n_finish_events[row] == 1, "%s: %d finish events", what, c->n_finish_events[row]);
}

/* One greedy request for chat_prompt(text), stepped to its end on `s`
 * and checked against the reference generator (the scheduler's context
 * is `max_context`). Returns its collector (the caller frees it). */
static inline collector *run_greedy_checked(nc_scheduler *s, const char *what, const char *text, int max_tokens,
                                            int max_context) {
    int32_t prompt[512];
    int np = chat_prompt(text, prompt);
    nc_gen_params p = greedy(max_tokens);
    collector *c = calloc(1, sizeof *c);
    CHECK(nc_scheduler_submit(s, prompt, np, &p, on_event, c, NULL) == 0, "%s: submit: %s", what, nc_error());
    run_all(s);
    ref_out ref;
    ref_generate(prompt, np, max_tokens, max_context, true, &ref);
    check_matches_ref(what, c, 0, &ref);
    return c;
}

#endif /* NC_TESTS_SCHED_MOCK_H */

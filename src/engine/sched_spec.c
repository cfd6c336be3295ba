/*
 * sched_spec.c: the scheduler's speculative decoding (docs/speculative.md):
 * which rows verify how many draft tokens each step, and the exact
 * verification of what comes back.
 *
 * Planning. A row's candidates are, in this order: the calculator's pending
 * tokens (certain: the row will emit them whatever the model says), then a
 * prompt-lookup continuation; a row with neither may ask the draft model.
 * A candidate's worth is the probability that it is accepted, from moving
 * averages of this row's (and, for new rows, every row's) history. Its
 * price is what one more position costs a step: a linear fit
 * t(T) = alpha + beta T of the measured seconds of decode steps by their
 * token count T (per T the least of the latest few, and only once there
 * are three: on a busy machine the noise is all delays, and a mean would
 * pull every T towards the same cost), pulled towards a small prior slope
 * where the data do not pin it
 * down, and as old measurements fade (so a price measured in a bad moment
 * is tried again later). Nothing is drafted before plain steps are
 * measured, and a step holds at most twice the positions of the largest
 * step recently measured, so learning what positions cost takes steps of
 * 2, 4, 8 ... positions and stops at the first size that does not pay.
 * Candidates are taken best first while they raise the step's expected
 * tokens per second: with G tokens expected from the chosen T positions,
 * one of acceptance g is worth it when (G + g) / t(T + 1) > G / t(T); and
 * the step drafts at all only if that beats plain decoding by MARGIN. The
 * price is of the whole step (the forward pass and the host's sampling and
 * bookkeeping); a draft model's own forwards are priced per draft step.
 * So a backend that verifies 5 positions for about the price of 1 (a GPU
 * reading every weight once) drafts eagerly, one whose cost grows with
 * every position (a small model on a CPU) only on near certainties, and a
 * row whose proposals keep failing stops drafting; its unverified
 * prompt-lookup proposals are still scored against what it emits
 * ("shadow" proposals), so it resumes when they start to match.
 *
 * Verification. Position i's logits are the target's own for the token
 * after the accepted ones (a CPU forward is batch-invariant: bit for bit
 * what one-token decode computes). A certain draft (the calculator's,
 * prompt lookup's, a draft model's argmax) is checked by drawing the
 * target's own token exactly as one-at-a-time decoding draws it (the row's
 * next uniform, its settings) and keeping the draft if they agree: that is
 * speculative sampling for a point-mass q (the draft survives with
 * probability p(draft), else the token follows p without the draft), and
 * the row's random stream advances as it would without speculation, so the
 * output is the same token for token, sampled or greedy. Only a draft
 * model told to sample (draft_sample) proposes from its distribution q; then
 * nc_sample_verify accepts with min(1, p/q) and resamples the residual: the
 * distribution is still exactly the target's, the realisation not the one
 * without speculation. Every token goes through sched_emit: events, stop
 * tokens, max_tokens, the calculator and logprobs behave as without
 * speculation.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/common.h"
#include "sched_internal.h"

#define DEFAULT_MAX_DRAFT 8
#define DEFAULT_NGRAM_MAX 3
#define DEFAULT_NGRAM_MIN 1
#define COST_TAU 256.0      /* steps over which a cost measurement fades (e-fold) */
#define COST_TRUST 3        /* measurements of a token count before the fit (and exploring beyond) uses it */
#define PRIOR_SLOPE 0.02    /* price of one more position before measurements, relative to a step */
#define PRIOR_WEIGHT 0.25   /* ... and its weight against them (observations x tokens^2): one measured
                               step one position away outweighs it fourfold */
#define MARGIN 0.1          /* drafts must raise a step's expected tokens per second by 10%: the price is
                               a noisy estimate, and a break-even bet is not worth the risk */
#define ROW_RATE 0.3f       /* moving-average weights of one verified draft: a row's */
#define ALL_RATE 0.05f      /* ... and the scheduler-wide one */
#define DRAFT_PROBE 16      /* steps without drafting after which the draft model is tried anyway */

const char *nc_spec_kind_name(nc_spec_kind k) {
    switch (k) {
    case NC_SPEC_LOOKUP: return "lookup";
    case NC_SPEC_DRAFT_MODEL: return "draft_model";
    case NC_SPEC_CALCULATOR: return "calculator";
    case NC_SPEC_KINDS: break;
    }
    return "unknown";
}

/* One candidate draft: the j-th (1-based) of a row, accepted with probability g. */
struct spec_cand {
    sched_row *row;
    int32_t order;  /* the row's place in this step, to break ties */
    int32_t j;
    double g;
};

/* ==== setup ==== */

int sched_spec_init(nc_scheduler *s, const nc_spec_params *in) {
    sched_spec *sp = &s->spec;
    nc_spec_params p = *in;
    if (p.max_draft < 0 || p.ngram_max < 0 || p.ngram_min < 0)
        return nc_fail("speculation: parameters must not be negative");
    if (!p.max_draft) p.max_draft = DEFAULT_MAX_DRAFT;
    if (!p.ngram_max) p.ngram_max = DEFAULT_NGRAM_MAX;
    if (!p.ngram_min) p.ngram_min = NC_MIN(DEFAULT_NGRAM_MIN, p.ngram_max);
    if (p.ngram_max > NC_SPEC_MAX_NGRAM || p.ngram_min > p.ngram_max)
        return nc_fail("speculation: n-gram sizes must satisfy 1 <= min <= max <= %d, got %d..%d", NC_SPEC_MAX_NGRAM,
                       p.ngram_min, p.ngram_max);
    /* the default: only where verification is exact (docs/speculative.md, Exactness) */
    if (!s->backend->ops->batch_invariant && !p.force && !p.always && !p.draft) p.off = true;
    sp->p = p;
    sp->max_tokens = NC_MIN(s->max_batch_tokens, 8 * p.max_draft);
    for (int n = 0; n <= NC_SPEC_MAX_NGRAM; n++) {
        sp->first[n] = 0.5f;
        sp->next[n] = 0.7f;
    }
    sp->draft_first = 0.6f;
    sp->draft_next = 0.7f;
    if (p.draft && !p.off && !(sp->drafter = nc_drafter_create(p.draft, s->V, s->max_context, p.max_draft)))
        return -1;
    size_t mr = (size_t)s->max_running;
    sp->cands = nc_xmalloc(mr * (size_t)p.max_draft * sizeof *sp->cands);
    sp->reqs = nc_xcalloc(mr, sizeof *sp->reqs);
    sp->req_rows = nc_xcalloc(mr, sizeof *sp->req_rows);
    return 0;
}

void sched_spec_free(nc_scheduler *s) {
    nc_drafter_free(s->spec.drafter);
    free(s->spec.cands);
    free(s->spec.reqs);
    free(s->spec.req_rows);
}

void sched_spec_row_init(nc_scheduler *s, sched_row *row) {
    spec_row *x = &row->spec;
    memset(x, 0, sizeof *x);
    memcpy(x->first, s->spec.first, sizeof x->first);
    memcpy(x->next, s->spec.next, sizeof x->next);
    x->draft_first = s->spec.draft_first;
    x->draft_next = s->spec.draft_next;
    x->shadow = -1;
    x->draft.slot = -1;
}

void sched_spec_row_end(nc_scheduler *s, sched_row *row) {
    if (s->spec.drafter) nc_drafter_release(s->spec.drafter, &row->spec.draft);
}

/* ==== the price of a position ==== */

static void cost_observe(sched_spec *sp, int32_t T, double seconds) {
    if (T < 1 || T > SPEC_COST_T || !(seconds > 0)) return;
    spec_cost_bucket *b = &sp->cost[T];
    b->recent[b->head] = seconds;
    b->head = (b->head + 1) % SPEC_COST_RECENT;
    b->n = NC_MIN(b->n + 1, SPEC_COST_RECENT);
    b->at = sp->step;
}

static double bucket_seconds(const spec_cost_bucket *b) {
    double t = b->recent[0];
    for (int32_t i = 1; i < b->n; i++) t = fmin(t, b->recent[i]);
    return t;
}

/* Weighted least squares of seconds on T over the buckets (weights fade
 * with age), the slope shrunk towards PRIOR_SLOPE of the mean step. */
static void cost_fit(sched_spec *sp) {
    double S = 0, ST = 0, STT = 0, St = 0, STt = 0;
    sp->explore = 2;
    sp->trusted = 0;
    for (int32_t T = 1; T <= SPEC_COST_T; T++) {
        const spec_cost_bucket *b = &sp->cost[T];
        if (!b->n) continue;
        double w = b->n * exp(-(double)(sp->step - b->at) / COST_TAU), t = bucket_seconds(b);
        if (b->n < COST_TRUST) continue; /* one step's delay must not price T for good */
        if (w >= 1.0) sp->explore = 2 * T;
        sp->trusted++;
        S += w;
        ST += w * T;
        STT += w * T * T;
        St += w * t;
        STt += w * T * t;
    }
    if (S <= 0) { /* nothing measured yet: a 10 ms step */
        sp->alpha = 0.01;
        sp->beta = PRIOR_SLOPE * sp->alpha;
        return;
    }
    double Tm = ST / S, tm = St / S;
    double sxx = STT - S * Tm * Tm, sxy = STt - S * Tm * tm;
    double beta = (sxy + PRIOR_WEIGHT * PRIOR_SLOPE * tm) / (fmax(sxx, 0.0) + PRIOR_WEIGHT);
    sp->beta = fmax(beta, 0.0);
    sp->alpha = fmax(tm - sp->beta * Tm, 1e-3 * tm);
}

static double cost(const sched_spec *sp, int32_t T) { return sp->alpha + sp->beta * T; }

/* ==== acceptance estimates ==== */

static void ema(float *v, bool hit, float rate) { *v += rate * ((hit ? 1.0f : 0.0f) - *v); }

/* One verified (or shadowed) draft token: the i-th of its proposer's run. */
static void observe(nc_scheduler *s, spec_row *x, nc_spec_kind kind, int32_t i, bool hit) {
    sched_spec *sp = &s->spec;
    if (kind == NC_SPEC_LOOKUP) {
        ema(i ? &x->next[x->ngram] : &x->first[x->ngram], hit, ROW_RATE);
        ema(i ? &sp->next[x->ngram] : &sp->first[x->ngram], hit, ALL_RATE);
    } else if (kind == NC_SPEC_DRAFT_MODEL) {
        ema(i ? &x->draft_next : &x->draft_first, hit, ROW_RATE);
        ema(i ? &sp->draft_next : &sp->draft_first, hit, ALL_RATE);
    }
}

/* ==== planning ==== */

static int cmp_cand(const void *pa, const void *pb) {
    const struct spec_cand *a = pa, *b = pb;
    if (a->g != b->g) return a->g > b->g ? -1 : 1;
    if (a->order != b->order) return a->order < b->order ? -1 : 1;
    return a->j < b->j ? -1 : a->j > b->j;
}

/* Drafts a row may verify at all: none past its token limit (they could
 * never be emitted, and the KV reservation ends there). */
static int32_t draft_room(const nc_scheduler *s, const sched_row *row) {
    return NC_MIN(s->spec.p.max_draft, row->req->row_tokens - row->n_tokens - 1);
}

/* The calculator's pending tokens, then a prompt-lookup continuation, as
 * candidates. Returns how many. */
static int32_t row_candidates(nc_scheduler *s, sched_row *row, int32_t order, struct spec_cand *out) {
    sched_spec *sp = &s->spec;
    spec_row *x = &row->spec;
    int32_t room = draft_room(s, row);
    if (room < 1) return 0;
    int32_t N = row->n_tokens, *d = row->tokens + N;
    int32_t f = NC_MIN(row->n_forced - row->forced_pos, room);
    if (f > 0) memcpy(d, row->forced + row->forced_pos, (size_t)f * sizeof *d);
    int32_t m = 0;
    if (!sp->p.no_lookup && f < room)
        m = nc_spec_lookup(row->tokens, N + f, sp->p.ngram_min, sp->p.ngram_max, room - f, d + f, &x->ngram);
    x->n_calc = f;
    x->kind = NC_SPEC_LOOKUP;
    double g = 1.0;
    for (int32_t j = 0; j < f + m; j++) {
        if (j >= f) g *= j == f ? x->first[x->ngram] : x->next[x->ngram];
        out[j] = (struct spec_cand){row, order, j + 1, g};
    }
    if (f == 0 && m > 0) {
        x->shadow = d[0];
        x->shadow_at = N;
    }
    return f + m;
}

/* Asks the draft model for k drafts for each row of reqs[0..n) (fewer where
 * a row's room ends sooner), within `budget` drafts in all, if that raises
 * the step's expected tokens per second. Updates *G and *T. */
static int32_t plan_draft_model(nc_scheduler *s, int32_t n, int32_t budget, double *G, int32_t *T) {
    sched_spec *sp = &s->spec;
    double t_draft = nc_drafter_step_seconds(sp->drafter);
    double best = (1 + MARGIN) * *G / cost(sp, *T); /* plain decoding, with the margin to beat */
    int32_t best_k = 0;
    bool probe = false;
    for (int32_t i = 0; i < n; i++) probe |= sp->req_rows[i]->spec.draft_idle >= DRAFT_PROBE;
    for (int32_t k = 1; k <= sp->p.max_draft; k++) {
        double gain = 0;
        int32_t extra = 0;
        for (int32_t i = 0; i < n; i++) {
            const spec_row *x = &sp->req_rows[i]->spec;
            int32_t kk = NC_MIN(k, draft_room(s, sp->req_rows[i]));
            double g = 1.0;
            for (int32_t j = 0; j < kk; j++) gain += g *= j ? x->draft_next : x->draft_first;
            extra += kk;
        }
        if (extra > budget) break;
        /* k draft steps (the first one also catches up) */
        double rate = (*G + gain) / (cost(sp, *T + extra) + k * t_draft);
        if (rate > best) {
            best = rate;
            best_k = k;
        }
    }
    if (best_k == 0 && probe && n <= budget) best_k = 1;
    if (sp->p.always) best_k = NC_MIN(sp->p.max_draft, budget / NC_MAX(n, 1));
    for (int32_t i = 0; i < n; i++) {
        sched_row *row = sp->req_rows[i];
        nc_draft_req *r = &sp->reqs[i];
        row->spec.draft_idle = best_k ? 0 : row->spec.draft_idle + 1;
        const nc_gen_params *gp = &row->req->params;
        /* certain (argmax) drafts unless the draft model is to sample (docs/speculative.md) */
        nc_sampling ds = {sp->p.draft_sample ? gp->temperature : 0.0f, gp->top_k, gp->top_p, gp->min_p};
        *r = (nc_draft_req){&row->spec.draft, row->tokens, row->n_tokens, NC_MIN(best_k, draft_room(s, row)), ds,
                            row->rng, row->tokens + row->n_tokens, NULL};
    }
    if (!best_k) return 0;
    double spent = nc_drafter_propose(sp->drafter, sp->reqs, n);
    if (spent < 0) return 0;
    s->acc.forward_seconds += spent;
    sp->draft_seconds = spent;
    int32_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        spec_row *x = &sp->req_rows[i]->spec;
        if (sp->reqs[i].k < 1) continue;
        x->n_draft = sp->reqs[i].k;
        x->n_calc = 0;
        x->kind = NC_SPEC_DRAFT_MODEL;
        x->q = sp->reqs[i].q;
        double g = 1.0;
        for (int32_t j = 0; j < x->n_draft; j++) *G += g *= j ? x->draft_next : x->draft_first;
        total += x->n_draft;
    }
    *T += total;
    return total;
}

int32_t sched_spec_plan(nc_scheduler *s) {
    sched_spec *sp = &s->spec;
    sp->step++;
    sp->draft_seconds = 0;
    int32_t rows = s->n_decoding, n_cand = 0, n_draft_rows = 0;
    for (int32_t i = 0; i < rows; i++) {
        sched_row *row = s->decoding[i];
        row->spec.n_draft = 0;
        row->spec.shadow = -1;
        row->spec.q = NULL;
        if (sp->p.off || !row->req->params.speculative) continue;
        int32_t c = row_candidates(s, row, i, sp->cands + n_cand);
        n_cand += c;
        if (c == 0 && sp->drafter &&
            nc_drafter_can_draft(sp->drafter, &row->spec.draft, row->n_tokens, draft_room(s, row)))
            sp->req_rows[n_draft_rows++] = row;
    }
    int32_t budget = NC_MIN(sp->max_tokens, s->max_batch_tokens - rows), total = 0;
    const nc_backend_ops *ops = s->backend->ops;
    if (ops->forward_sample && ops->sample_all) /* verified on the device: max_seqs positions per call */
        budget = NC_MIN(budget, s->max_seqs - rows);
    if (budget <= 0 || (n_cand == 0 && n_draft_rows == 0)) return 0;
    cost_fit(sp);
    qsort(sp->cands, (size_t)n_cand, sizeof *sp->cands, cmp_cand);
    if (!sp->p.always) { /* plain steps are measured first: the price to beat */
        if (!sp->trusted) budget = 0;
        budget = NC_MIN(budget, NC_MAX(sp->explore, 2 * rows) - rows);
    }
    double G = rows;
    int32_t T = rows;
    for (int32_t c = 0; c < n_cand && total < budget; c++) {
        struct spec_cand *k = &sp->cands[c];
        spec_row *x = &k->row->spec;
        if (k->j != x->n_draft + 1) continue; /* its row stopped before it */
        if (!sp->p.always && (G + k->g) * cost(sp, T) <= G * cost(sp, T + 1)) break;
        x->n_draft++;
        G += k->g;
        T++;
        total++;
    }
    if (!sp->p.always && G / cost(sp, T) < (1 + MARGIN) * rows / cost(sp, rows)) { /* not worth it after all */
        for (int32_t c = 0; c < n_cand; c++) sp->cands[c].row->spec.n_draft = 0;
        G = T = rows;
        total = 0;
    }
    for (int32_t c = 0; c < n_cand; c++) /* a verified proposal is observed directly, not shadowed */
        if (sp->cands[c].row->spec.n_draft > sp->cands[c].row->spec.n_calc) sp->cands[c].row->spec.shadow = -1;
    if (n_draft_rows && nc_drafter_ok(sp->drafter))
        total += plan_draft_model(s, n_draft_rows, budget - total, &G, &T);
    return total;
}

/* ==== verification ==== */

bool sched_spec_device_verifiable(const sched_row *row) {
    return !row->spec.q || row->spec.n_draft == row->spec.n_calc;
}

/* The target's token at a verified position that the device drew (with
 * the generator advanced by the positions before it): what sched_sample
 * gives from the same logits, the row's generator kept in step. */
static int32_t device_token(sched_row *row, const int32_t *tokens, int32_t i) {
    if (row->req->params.temperature > 0.0f) nc_rng_next(row->rng);
    return row->forced_pos < row->n_forced ? row->forced[row->forced_pos] : tokens[i];
}

void sched_spec_verify(nc_scheduler *s, sched_row *row, const float *logits, const int32_t *tokens,
                       const float *logprobs) {
    spec_row *x = &row->spec;
    const nc_gen_params *p = &row->req->params;
    nc_sampling sp = {p->temperature, p->top_k, p->top_p, p->min_p};
    int32_t N = row->n_tokens, k = x->n_draft, accepted = 0;
    NC_ASSERT(logits || sched_spec_device_verifiable(row));
    row->n_computed = N; /* the chunk's first position held the row's last token */
    for (int32_t i = 0; i <= k; i++) {
        const float *lg = logits ? logits + (size_t)i * (size_t)s->V : NULL;
        int32_t draft = i < k ? row->tokens[N + i] : -1, tok;
        bool ok;
        if (x->q && i >= x->n_calc && draft >= 0 && row->forced_pos == row->n_forced) {
            /* a draft drawn from the draft model's q: min(1, p/q), else the residual */
            const float *q = x->q + (size_t)(i - x->n_calc) * (size_t)s->V;
            tok = nc_sample_verify(lg, s->V, &sp, draft, q, row->rng, &s->scratch, &ok);
        } else {
            /* a certain draft: the target's own token, drawn as one-at-a-time decoding would */
            tok = lg ? sched_sample(s, row, lg) : device_token(row, tokens, i);
            ok = tok == draft;
        }
        if (i < k) {
            nc_spec_kind kind = i < x->n_calc ? NC_SPEC_CALCULATOR : x->kind;
            s->acc.spec_drafted[kind]++;
            s->acc.spec_accepted[kind] += ok;
            observe(s, x, kind, i < x->n_calc ? i : i - x->n_calc, ok);
        }
        if (ok) {
            row->n_computed = N + i + 1; /* position N + i holds the token just accepted */
            accepted++;
        }
        sched_emit(s, row, tok, lg, logprobs ? logprobs[i] : 0.0f);
        if (!ok || row->state != ROW_LIVE) break;
    }
    s->acc.spec_verifies++;
    s->acc.spec_emitted += row->n_tokens - N;
    if (s->spec.drafter) nc_drafter_keep(&x->draft, N + accepted);
    x->n_draft = 0;
}

void sched_spec_after_step(nc_scheduler *s, int32_t tokens, bool decode_only, double seconds) {
    if (decode_only) cost_observe(&s->spec, tokens, seconds - s->spec.draft_seconds);
    for (int32_t i = 0; i < s->n_decoding; i++) {
        sched_row *row = s->decoding[i];
        spec_row *x = &row->spec;
        if (x->shadow < 0) continue;
        if (row->n_tokens > x->shadow_at) observe(s, x, NC_SPEC_LOOKUP, 0, row->tokens[x->shadow_at] == x->shadow);
        x->shadow = -1;
    }
}

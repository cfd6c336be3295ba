/*
 * sampler.c: temperature / top-k / top-p / min-p sampling and logprobs
 * (see sampler.h for the order of operations and the generator).
 *
 * Mirrors nanochat's engine.py `sample_next_token`: argmax at temperature
 * 0, else top-k, divide by temperature, softmax, one draw. The vocabulary is
 * 32k-65k, so the common path (top_k = 50) selects the k best with a small
 * heap in one pass instead of sorting everything; only top-p without top-k
 * sorts, and then only the tokens that can possibly be in the nucleus.
 */
#include "sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../util/common.h"

/* ==== random generator ==== */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void nc_rng_seed(uint64_t state[2], uint64_t seed) {
    uint64_t x = seed;
    state[0] = splitmix64(&x);
    state[1] = splitmix64(&x);
    if (!state[0] && !state[1]) state[1] = 1; /* the all-zero state is a fixed point */
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t nc_rng_next(uint64_t s[2]) {
    uint64_t s0 = s[0], s1 = s[1];
    uint64_t result = rotl(s0 + s1, 17) + s0;
    s1 ^= s0;
    s[0] = rotl(s0, 49) ^ s1 ^ (s1 << 21);
    s[1] = rotl(s1, 28);
    return result;
}

double nc_rng_uniform(uint64_t s[2]) { return (double)(nc_rng_next(s) >> 11) * 0x1.0p-53; }

/* ==== scratch ==== */

int nc_sampler_scratch_init(nc_sampler_scratch *s, int32_t vocab) {
    memset(s, 0, sizeof *s);
    if (vocab <= 0) return nc_fail("sampler: vocabulary size must be positive, got %d", vocab);
    s->cand = malloc((size_t)vocab * sizeof *s->cand);
    if (!s->cand) return nc_fail("sampler: out of memory for a vocabulary of %d", vocab);
    s->cap = vocab;
    return 0;
}

void nc_sampler_scratch_free(nc_sampler_scratch *s) {
    free(s->cand);
    memset(s, 0, sizeof *s);
}

/* ==== argmax ==== */

int32_t nc_sample_argmax(const float *logits, int32_t V) {
    int32_t best = 0;
    float bv = 0.0f;
    bool found = false;
    for (int32_t i = 0; i < V; i++) {
        float v = logits[i];
        if (v != v) continue; /* NaN */
        if (!found || v > bv) {
            bv = v;
            best = i;
            found = true;
        }
    }
    return best;
}

/* ==== ordering and top-k selection ==== */

/* "a ranks above b": larger value, then lower id. */
static inline bool ranks_above(nc_sample_cand a, nc_sample_cand b) {
    return a.v > b.v || (a.v == b.v && a.id < b.id);
}

static int cmp_rank(const void *pa, const void *pb) {
    nc_sample_cand a = *(const nc_sample_cand *)pa, b = *(const nc_sample_cand *)pb;
    return ranks_above(a, b) ? -1 : ranks_above(b, a) ? 1 : 0;
}

/* Min-heap by rank of the k best seen so far: c[0] is the worst of them. */
static void heap_sift_down(nc_sample_cand *c, int32_t n, int32_t i) {
    for (;;) {
        int32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && ranks_above(c[m], c[l])) m = l;
        if (r < n && ranks_above(c[m], c[r])) m = r;
        if (m == i) return;
        nc_sample_cand t = c[i]; c[i] = c[m]; c[m] = t;
        i = m;
    }
}

static void heap_sift_up(nc_sample_cand *c, int32_t i) {
    while (i > 0) {
        int32_t p = (i - 1) / 2;
        if (!ranks_above(c[p], c[i])) return;
        nc_sample_cand t = c[i]; c[i] = c[p]; c[p] = t;
        i = p;
    }
}

/* Selects the k best non-NaN logits into c[0..), best first (lower id
 * first among equals). Returns how many (< k only if fewer are non-NaN). */
static int32_t select_top_k(const float *logits, int32_t V, int32_t k, nc_sample_cand *c) {
    int32_t n = 0;
    for (int32_t i = 0; i < V; i++) {
        float v = logits[i];
        if (v != v) continue;
        if (n < k) {
            c[n] = (nc_sample_cand){v, i};
            heap_sift_up(c, n++);
        } else if (v > c[0].v) { /* an equal value never displaces: its id is higher */
            c[0] = (nc_sample_cand){v, i};
            heap_sift_down(c, n, 0);
        }
    }
    for (int32_t end = n - 1; end > 0; end--) { /* heap sort: worst goes to the end */
        nc_sample_cand t = c[0]; c[0] = c[end]; c[end] = t;
        heap_sift_down(c, end, 0);
    }
    return n;
}

/* ==== sampling ==== */

/* The candidates nc_sample draws from, in c[0..n) with unnormalised
 * weights (the best token's weight is 1), and their total in *sum: steps
 * 2-5 of sampler.h. Degenerate logits (all NaN, all -inf) give the single
 * token nc_sample has always returned for them (0, the argmax). */
static int32_t distribution(const float *logits, int32_t V, const nc_sampling *sp, nc_sample_cand *c,
                            double *sum_out) {
    int32_t n = 0;
    if (sp->top_k > 0 && sp->top_k < V) {
        n = select_top_k(logits, V, sp->top_k, c);
    } else {
        for (int32_t i = 0; i < V; i++)
            if (logits[i] == logits[i]) c[n++] = (nc_sample_cand){logits[i], i};
    }
    float mx = n ? c[0].v : 0.0f;
    for (int32_t j = 1; j < n; j++) mx = c[j].v > mx ? c[j].v : mx;
    if (n == 0 || mx == -INFINITY) {
        c[0] = (nc_sample_cand){1.0f, n ? nc_sample_argmax(logits, V) : 0};
        *sum_out = 1.0;
        return 1;
    }

    /* Tempered probabilities relative to the best token (weight 1). */
    float inv_t = 1.0f / sp->temperature;
    double sum = 0.0;
    for (int32_t j = 0; j < n; j++) {
        c[j].v = expf((c[j].v - mx) * inv_t);
        sum += c[j].v;
    }

    /* min-p: drop tokens below min_p times the best token's probability. */
    if (sp->min_p > 0.0f) {
        int32_t m = 0;
        sum = 0.0;
        for (int32_t j = 0; j < n; j++) {
            if (c[j].v < sp->min_p) continue;
            c[m++] = c[j];
            sum += c[j].v;
        }
        n = m;
    }

    /* top-p: keep the shortest most-probable prefix whose mass reaches
     * top_p. A token with probability below (1 - top_p) / (n - 1) is never
     * needed to reach top_p (all of them together weigh at most 1 - top_p),
     * so those are dropped before sorting; the cutoff is halved as a margin
     * against rounding. */
    if (sp->top_p < 1.0f && n > 1) {
        double cutoff = 0.5 * (1.0 - (double)sp->top_p) / (double)(n - 1) * sum;
        int32_t m = 0;
        for (int32_t j = 0; j < n; j++)
            if ((double)c[j].v >= cutoff) c[m++] = c[j];
        qsort(c, (size_t)m, sizeof *c, cmp_rank);
        double target = (double)sp->top_p * sum, cum = 0.0;
        int32_t keep = m;
        for (int32_t j = 0; j < m; j++) {
            cum += c[j].v;
            if (cum >= target) {
                keep = j + 1;
                break;
            }
        }
        n = keep;
        sum = 0.0;
        for (int32_t j = 0; j < n; j++) sum += c[j].v;
    }
    *sum_out = sum;
    return n;
}

/* Walks the candidates in order until their mass passes u * sum. */
static int32_t draw(const nc_sample_cand *c, int32_t n, double sum, double u) {
    double r = u * sum, cum = 0.0;
    for (int32_t j = 0; j < n; j++) {
        cum += c[j].v;
        if (r < cum) return c[j].id;
    }
    return c[n - 1].id; /* rounding left r at the very end */
}

int32_t nc_sample(const float *logits, int32_t V, const nc_sampling *sp, uint64_t rng[2],
                  nc_sampler_scratch *scr) {
    return nc_sample_draft(logits, V, sp, rng, scr, NULL);
}

int32_t nc_sample_draft(const float *logits, int32_t V, const nc_sampling *sp, uint64_t rng[2],
                        nc_sampler_scratch *scr, float *q) {
    NC_ASSERT(scr->cap >= V && V > 0);
    if (!(sp->temperature > 0.0f)) return nc_sample_argmax(logits, V);
    double u = nc_rng_uniform(rng); /* exactly one draw per sampled token */
    double sum;
    int32_t n = distribution(logits, V, sp, scr->cand, &sum);
    if (q) {
        memset(q, 0, (size_t)V * sizeof *q);
        for (int32_t j = 0; j < n; j++) q[scr->cand[j].id] = (float)(scr->cand[j].v / sum);
    }
    return draw(scr->cand, n, sum, u);
}

/* ==== speculative verification ==== */

int32_t nc_sample_verify(const float *logits, int32_t V, const nc_sampling *sp, int32_t draft, const float *q,
                         uint64_t rng[2], nc_sampler_scratch *scr, bool *accepted) {
    NC_ASSERT(scr->cap >= V && V > 0 && draft >= 0 && draft < V && q);
    if (!(sp->temperature > 0.0f)) {
        int32_t t = nc_sample_argmax(logits, V);
        *accepted = t == draft;
        return t;
    }
    nc_sample_cand *c = scr->cand;
    double sum;
    int32_t n = distribution(logits, V, sp, c, &sum);
    double p_draft = 0.0;
    for (int32_t j = 0; j < n; j++)
        if (c[j].id == draft) p_draft = c[j].v / sum;
    /* accept with probability min(1, p/q): u < p/q, written without the division */
    *accepted = nc_rng_uniform(rng) * (double)q[draft] < p_draft;
    if (*accepted) return draft;
    /* the residual max(0, p - q), renormalised by draw() */
    double rsum = 0.0;
    int32_t m = 0;
    for (int32_t j = 0; j < n; j++) {
        double r = c[j].v / sum - (double)q[c[j].id];
        if (r <= 0.0) continue;
        c[m++] = (nc_sample_cand){(float)r, c[j].id};
        rsum += (float)r;
    }
    double u = nc_rng_uniform(rng);
    if (m == 0) { /* p <= q everywhere: only rounding (p == q) gets here */
        n = distribution(logits, V, sp, c, &sum);
        return draw(c, n, sum, u);
    }
    return draw(c, m, rsum, u);
}

/* ==== logprobs ==== */

float nc_sample_logprobs(const float *logits, int32_t V, int32_t token, int32_t n_top,
                         int32_t *top_ids, float *top_lp) {
    NC_ASSERT(n_top >= 0 && n_top <= 64 && token >= 0 && token < V);
    float mx = -INFINITY;
    for (int32_t i = 0; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0.0;
    for (int32_t i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    double lse = (double)mx + log(sum);

    if (n_top > 0) {
        float tv[64];
        int32_t ti[64];
        int32_t n = 0;
        for (int32_t i = 0; i < V; i++) {
            float v = logits[i];
            if (v != v) continue;
            if (n == n_top && !(v > tv[n - 1])) continue;
            int32_t j = n < n_top ? n++ : n - 1; /* slot to fill, then bubble up */
            while (j > 0 && v > tv[j - 1]) {
                tv[j] = tv[j - 1];
                ti[j] = ti[j - 1];
                j--;
            }
            tv[j] = v;
            ti[j] = i;
        }
        for (int32_t j = 0; j < n_top; j++) {
            top_ids[j] = j < n ? ti[j] : -1;
            top_lp[j] = j < n ? (float)((double)tv[j] - lse) : -INFINITY;
        }
    }
    return (float)((double)logits[token] - lse);
}

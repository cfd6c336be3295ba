/*
 * sampler.h: turning one row of logits into one token (docs/model.md, Sampling), and the
 * seeded random generator every sampling path shares.
 *
 * Order of operations (nanochat's `sample_next_token`, extended by top-p and
 * min-p, which nanochat does not have):
 *   1. temperature == 0: argmax, lowest index on ties. Nothing else applies
 *      and the generator is not advanced.
 *   2. top_k > 0: keep the k largest logits (ties at the k-th value: lower
 *      indices first, so exactly k survive).
 *   3. divide the kept logits by the temperature, softmax.
 *   4. min_p > 0: drop tokens whose probability is below min_p * p_max.
 *   5. top_p < 1: keep the smallest set of most probable tokens whose mass
 *      reaches top_p (the token that crosses top_p is kept).
 *   6. renormalise and draw with ONE uniform from the generator.
 * So top-p and min-p see the tempered distribution, as in HF transformers
 * and vLLM. Every sampled row (temperature > 0) consumes exactly one
 * generator output per token, whatever else is set: a device sampler that
 * mirrors nc_rng_* below stays in step with the host one.
 *
 * Generator: xoroshiro128++ (Blackman & Vigna), 128 bits of state as the two
 * uint64 of nc_device_sampling.rng_state, seeded through splitmix64 so that
 * seeds 42 and 43 give unrelated streams. Uniforms are 53-bit doubles.
 *
 * No allocation per call: the caller owns an nc_sampler_scratch sized for
 * the vocabulary.
 */
#ifndef NC_ENGINE_SAMPLER_H
#define NC_ENGINE_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

/* ==== random generator ==== */

/* Fills state[2] from a 64-bit seed (splitmix64 twice; never all zero). */
void nc_rng_seed(uint64_t state[2], uint64_t seed);
/* Next 64 random bits (xoroshiro128++); advances the state. */
uint64_t nc_rng_next(uint64_t state[2]);
/* Uniform double in [0, 1) from the top 53 bits of nc_rng_next. */
double nc_rng_uniform(uint64_t state[2]);

/* ==== sampling ==== */

typedef struct {
    float temperature; /* 0: argmax; else > 0 */
    int32_t top_k;     /* 0: off */
    float top_p;       /* 1: off; in (0, 1] */
    float min_p;       /* 0: off; in [0, 1] */
} nc_sampling;

/* A candidate token: its (logit, later probability) value and id. */
typedef struct {
    float v;
    int32_t id;
} nc_sample_cand;

/* Work space for one row at a time: V candidates (8 bytes each). */
typedef struct {
    nc_sample_cand *cand; /* [V] */
    int32_t cap;          /* V */
} nc_sampler_scratch;

/* Allocates scratch for a vocabulary of `vocab` ids. -1 + nc_error() on
 * allocation failure. */
int nc_sampler_scratch_init(nc_sampler_scratch *s, int32_t vocab);
void nc_sampler_scratch_free(nc_sampler_scratch *s);

/* Index of the largest logit, lowest index on ties. NaNs never win (unless
 * every entry is NaN, then 0). */
int32_t nc_sample_argmax(const float *logits, int32_t V);

/* Samples one id from logits[V] with the settings above; `rng` advances by
 * one output when temperature > 0. `scr` must have cap >= V. */
int32_t nc_sample(const float *logits, int32_t V, const nc_sampling *sp, uint64_t rng[2],
                  nc_sampler_scratch *scr);

/* nc_sample, which also writes the distribution it drew from to q[V]
 * (probabilities, zero for filtered tokens) when q is non-NULL and
 * temperature > 0: a draft model's proposal for speculative decoding. */
int32_t nc_sample_draft(const float *logits, int32_t V, const nc_sampling *sp, uint64_t rng[2],
                        nc_sampler_scratch *scr, float *q);

/*
 * Speculative sampling (Leviathan et al. 2023; docs/speculative.md): the
 * next token given the target's logits and a draft token that a draft
 * model drew from its distribution q[V]. p is exactly the distribution
 * nc_sample draws from with `sp`. The draft is kept with probability
 * min(1, p(draft) / q(draft)); otherwise a token is drawn from
 * max(0, p - q) renormalised, so the token returned is distributed as p.
 * *accepted says which happened. Temperature 0: the argmax, accepted when
 * it is the draft. Uses one or two uniforms. (A draft that is certain, q a
 * point mass, needs none of this: drawing the target's token with
 * nc_sample and comparing has the same law.)
 */
int32_t nc_sample_verify(const float *logits, int32_t V, const nc_sampling *sp, int32_t draft, const float *q,
                         uint64_t rng[2], nc_sampler_scratch *scr, bool *accepted);

/*
 * Log-probabilities under softmax(logits) (temperature 1, no filtering: the
 * model's own distribution). Returns logprob of `token`; if n_top > 0 also
 * writes the n_top most probable ids (descending; lowest index first on
 * ties) and their log-probabilities to top_ids/top_lp. n_top <= 64.
 */
float nc_sample_logprobs(const float *logits, int32_t V, int32_t token, int32_t n_top,
                         int32_t *top_ids, float *top_lp);

#endif /* NC_ENGINE_SAMPLER_H */

/*
 * test_sampler.c: the sampler against independently computed references.
 *
 * - The generator: splitmix64 seeding + xoroshiro128++ outputs against
 *   values from a separate Python implementation of the published
 *   algorithms (splitmix64(0) = 0xe220a8397b1dcdaf is Vigna's own value).
 * - Sampling statistics: fixed logits, many draws, each token's frequency
 *   against the probability computed here in double precision straight
 *   from the definition (docs/model.md, Sampling + sampler.h), within 5 binomial standard
 *   deviations (+1e-4): a wrong temperature, filter or tie rule moves some
 *   frequency by far more.
 * - argmax ties (lowest index), NaN handling, reproducibility with a seed,
 *   logprobs against a double-precision log-softmax.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/sampler.h"

#define NDRAW 200000

static const float *ref_logits;
static int cmp_ref(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    if (ref_logits[x] != ref_logits[y]) return ref_logits[x] > ref_logits[y] ? -1 : 1;
    return x - y;
}

/* Reference probabilities: top-k (lower id first on ties), temperature,
 * softmax, min-p relative to the max, top-p over the sorted distribution. */
static void reference_probs(const float *logits, int V, const nc_sampling *sp, double *p) {
    int *order = malloc(sizeof(int) * (size_t)V);
    for (int i = 0; i < V; i++) order[i] = i;
    ref_logits = logits;
    qsort(order, (size_t)V, sizeof(int), cmp_ref); /* (logit desc, id asc) */
    int n = (sp->top_k > 0 && sp->top_k < V) ? sp->top_k : V;
    for (int i = 0; i < V; i++) p[i] = 0;
    double mx = logits[order[0]], sum = 0;
    for (int j = 0; j < n; j++) {
        p[order[j]] = exp(((double)logits[order[j]] - mx) / sp->temperature);
        sum += p[order[j]];
    }
    for (int j = 0; j < n; j++) p[order[j]] /= sum;
    if (sp->min_p > 0) {
        double pmax = p[order[0]];
        sum = 0;
        for (int j = 0; j < n; j++) {
            if (p[order[j]] < sp->min_p * pmax) p[order[j]] = 0;
            sum += p[order[j]];
        }
        for (int j = 0; j < n; j++) p[order[j]] /= sum;
    }
    if (sp->top_p < 1) {
        double cum = 0;
        int j = 0;
        for (; j < n; j++) {
            cum += p[order[j]];
            if (cum >= sp->top_p) break;
        }
        sum = 0;
        for (int q = 0; q < n; q++) {
            if (q > j) p[order[q]] = 0;
            sum += p[order[q]];
        }
        for (int q = 0; q < n; q++) p[order[q]] /= sum;
    }
    free(order);
}

static void check_distribution(const char *name, const float *logits, int V, nc_sampling sp,
                               uint64_t seed, int ndraw) {
    nc_sampler_scratch scr;
    CHECK(nc_sampler_scratch_init(&scr, V) == 0, "scratch");
    double *p = malloc(sizeof(double) * (size_t)V);
    long *count = calloc((size_t)V, sizeof(long));
    reference_probs(logits, V, &sp, p);
    uint64_t rng[2];
    nc_rng_seed(rng, seed);
    int out_of_range = 0;
    for (int d = 0; d < ndraw; d++) {
        int32_t t = nc_sample(logits, V, &sp, rng, &scr);
        if (t >= 0 && t < V) count[t]++;
        else out_of_range++;
    }
    CHECK(out_of_range == 0, "%s: %d tokens out of range", name, out_of_range);
    int bad = 0;
    for (int i = 0; i < V; i++) {
        double f = (double)count[i] / ndraw;
        double tol = 5.0 * sqrt(p[i] * (1 - p[i]) / ndraw) + 1e-4;
        if (p[i] == 0) tol = 0; /* a filtered token must never appear */
        if (fabs(f - p[i]) > tol && bad++ < 5)
            fprintf(stderr, "%s: token %d freq %.5f expected %.5f (tol %.5f)\n", name, i, f, p[i], tol);
    }
    CHECK(bad == 0, "%s: %d tokens off their expected frequency", name, bad);
    free(p);
    free(count);
    nc_sampler_scratch_free(&scr);
}

static void test_rng(void) {
    uint64_t s[2];
    nc_rng_seed(s, 0);
    CHECK(s[0] == 0xe220a8397b1dcdafull && s[1] == 0x6e789e6aa1b965f4ull, "splitmix64 seeding of 0");
    const uint64_t want0[4] = {0x6f68e1e7e2646ee1ull, 0xbf971b7f454094adull, 0x48f2de556f30de38ull,
                               0x6ea7c59f89bbfc75ull};
    for (int i = 0; i < 4; i++) CHECK(nc_rng_next(s) == want0[i], "xoroshiro128++ output %d (seed 0)", i);
    nc_rng_seed(s, 42);
    const uint64_t want42[4] = {0xe88af6caef1d3c23ull, 0x54a303b2a5a54931ull, 0xf370812ccd646345ull,
                                0x345839c63f9abb35ull};
    for (int i = 0; i < 4; i++) CHECK(nc_rng_next(s) == want42[i], "xoroshiro128++ output %d (seed 42)", i);
    double lo = 1, hi = 0, mean = 0;
    for (int i = 0; i < 100000; i++) {
        double u = nc_rng_uniform(s);
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
        mean += u;
    }
    mean /= 100000;
    CHECK(lo >= 0 && hi < 1, "uniform in [0,1): %g %g", lo, hi);
    CHECK(fabs(mean - 0.5) < 0.005, "uniform mean %g", mean);
}

static void test_argmax(void) {
    const float a[] = {1, 5, 5, 2};
    CHECK(nc_sample_argmax(a, 4) == 1, "argmax tie -> lowest index");
    const float b[] = {3, 3, 3};
    CHECK(nc_sample_argmax(b, 3) == 0, "all equal -> 0");
    const float c[] = {NAN, -1, 7, NAN, 7};
    CHECK(nc_sample_argmax(c, 5) == 2, "NaN skipped");
    const float d[] = {-INFINITY, -INFINITY, -3};
    CHECK(nc_sample_argmax(d, 3) == 2, "-inf");
    nc_sampler_scratch scr;
    nc_sampler_scratch_init(&scr, 4);
    uint64_t rng[2], before[2];
    nc_rng_seed(rng, 7);
    memcpy(before, rng, sizeof rng);
    nc_sampling sp = {0.0f, 50, 1.0f, 0.0f};
    CHECK(nc_sample(a, 4, &sp, rng, &scr) == 1, "temperature 0 -> argmax");
    CHECK(!memcmp(before, rng, sizeof rng), "temperature 0 does not advance the generator");
    sp.temperature = 0.7f;
    nc_sample(a, 4, &sp, rng, &scr);
    nc_rng_next(before);
    CHECK(!memcmp(before, rng, sizeof rng), "a sampled token advances the generator by one output");
    sp.top_p = 0.3f;
    sp.min_p = 0.2f;
    memcpy(before, rng, sizeof rng);
    nc_sample(a, 4, &sp, rng, &scr);
    nc_rng_next(before);
    CHECK(!memcmp(before, rng, sizeof rng), "filters do not change the number of draws");
    nc_sampler_scratch_free(&scr);
}

static void test_reproducible(void) {
    enum { V = 1000, N = 500 };
    float *logits = malloc(sizeof(float) * V);
    for (int i = 0; i < V; i++) logits[i] = (float)sin(i * 0.37) * 3.0f;
    nc_sampler_scratch scr;
    nc_sampler_scratch_init(&scr, V);
    nc_sampling sp = {0.8f, 0, 0.95f, 0.0f};
    int32_t a[N], b[N], c[N];
    uint64_t r[2];
    nc_rng_seed(r, 42);
    for (int i = 0; i < N; i++) a[i] = nc_sample(logits, V, &sp, r, &scr);
    nc_rng_seed(r, 42);
    for (int i = 0; i < N; i++) b[i] = nc_sample(logits, V, &sp, r, &scr);
    nc_rng_seed(r, 43);
    for (int i = 0; i < N; i++) c[i] = nc_sample(logits, V, &sp, r, &scr);
    CHECK(!memcmp(a, b, sizeof a), "same seed -> same tokens");
    CHECK(memcmp(a, c, sizeof a) != 0, "different seed -> different tokens");
    nc_sampler_scratch_free(&scr);
    free(logits);
}

static void test_logprobs(void) {
    enum { V = 300 };
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = (float)cos(i * 1.3) * 4.0f;
    logits[17] = logits[5] = 6.0f; /* a tie at the top: lower id first */
    double mx = 6.0, s = 0;
    for (int i = 0; i < V; i++) s += exp(logits[i] - mx);
    double lse = mx + log(s);
    int32_t ids[5];
    float lp[5];
    float chosen = nc_sample_logprobs(logits, V, 42, 5, ids, lp);
    CHECK_NEAR(chosen, logits[42] - lse, 1e-5, "chosen logprob");
    CHECK(ids[0] == 5 && ids[1] == 17, "tie order %d %d", ids[0], ids[1]);
    for (int j = 0; j < 5; j++) CHECK_NEAR(lp[j], logits[ids[j]] - lse, 1e-5, "top %d", j);
    for (int j = 1; j < 5; j++) CHECK(logits[ids[j]] <= logits[ids[j - 1]], "descending");
    int better = 0; /* nothing outside the top 5 beats the 5th */
    for (int i = 0; i < V; i++) {
        int in = 0;
        for (int j = 0; j < 5; j++) in |= ids[j] == i;
        if (!in && logits[i] > logits[ids[4]]) better++;
    }
    CHECK(better == 0, "top 5 really are the top 5");
}

int main(void) {
    test_rng();
    test_argmax();
    test_reproducible();
    test_logprobs();

    const float small[8] = {2.0f, 1.0f, 0.5f, 0.0f, -1.0f, 3.0f, 3.0f, -INFINITY};
    check_distribution("T=1", small, 8, (nc_sampling){1.0f, 0, 1.0f, 0.0f}, 1, NDRAW);
    check_distribution("T=0.5", small, 8, (nc_sampling){0.5f, 0, 1.0f, 0.0f}, 2, NDRAW);
    check_distribution("T=2", small, 8, (nc_sampling){2.0f, 0, 1.0f, 0.0f}, 3, NDRAW);
    check_distribution("top_k=3", small, 8, (nc_sampling){1.0f, 3, 1.0f, 0.0f}, 4, NDRAW);
    check_distribution("top_k=2 tie", small, 8, (nc_sampling){1.0f, 2, 1.0f, 0.0f}, 5, NDRAW);
    check_distribution("top_k=1", small, 8, (nc_sampling){1.0f, 1, 1.0f, 0.0f}, 6, NDRAW);
    check_distribution("top_p=0.8", small, 8, (nc_sampling){1.0f, 0, 0.8f, 0.0f}, 7, NDRAW);
    check_distribution("top_p=0.5 T=0.7", small, 8, (nc_sampling){0.7f, 0, 0.5f, 0.0f}, 8, NDRAW);
    check_distribution("min_p=0.3", small, 8, (nc_sampling){1.0f, 0, 1.0f, 0.3f}, 9, NDRAW);
    check_distribution("min_p=0.05 T=1.5", small, 8, (nc_sampling){1.5f, 0, 1.0f, 0.05f}, 10, NDRAW);
    check_distribution("all filters", small, 8, (nc_sampling){0.9f, 4, 0.9f, 0.1f}, 11, NDRAW);

    /* A real-sized vocabulary: nanochat's default top_k 50 at T 0.6, and
     * top-p over the whole vocabulary (exercises the pre-sort cutoff). */
    enum { BIGV = 65536 };
    float *big = malloc(sizeof(float) * BIGV);
    uint64_t r[2];
    nc_rng_seed(r, 99);
    for (int i = 0; i < BIGV; i++) big[i] = (float)(nc_rng_uniform(r) * 4.0 - 8.0);
    for (int i = 0; i < 12; i++) big[(i * 7919) % BIGV] = 6.0f + 0.25f * (float)(i % 5);
    check_distribution("V=65536 top_k=50 T=0.6", big, BIGV, (nc_sampling){0.6f, 50, 1.0f, 0.0f}, 12, 20000);
    check_distribution("V=65536 top_p=0.5", big, BIGV, (nc_sampling){1.0f, 0, 0.5f, 0.0f}, 13, 4000);
    free(big);
    return check_summary("test_sampler");
}

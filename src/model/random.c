/*
 * random.c: nc_model_random (loader.h): a V1 model with random weights of a
 * named shape, for benchmarks and tests that need no checkpoint.
 *
 * Shapes follow the published nanochat runs (docs/formats.md, Random models): d20 (L20 C1280 H10),
 * d26 (L26 C1664 H13), d32 (L32 C2048 H16), d34 (L34 C2176 H17), or
 * "L,C,H[,Hkv]". Vocab 65536, sequence_len 2048, every matrix bf16 (what
 * nanochat runs on the GPU), uniform in +-sqrt(3/fan_in) (unit-variance
 * outputs, like nanochat's 1/sqrt(fan_in) normal init) and never exactly
 * zero. d34 is 2.2e9 values, so the fill runs on every core; each block of
 * 2^20 values has its own generator seeded from (seed, tensor, block), so
 * the result does not depend on the thread count. Every tensor is allocated
 * in 2 MB pages (util/hugepage.h) before the fill touches it: decode
 * streams these weights every token, and with 4 KB pages the TLB and the
 * prefetchers' page-boundary stops cost a third of the read bandwidth.
 */
#include "loader.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../util/common.h"
#include "../util/hugepage.h"

#define FILL_BLOCK ((int64_t)1 << 20)

typedef struct {
    uint16_t *data; /* bf16 */
    int64_t numel;
    float scale;    /* values uniform in [-scale, scale] */
    uint64_t seed;
} fill_job;

typedef struct {
    fill_job *jobs;
    int n_jobs;
    int64_t total_blocks;
    int64_t *block_start; /* [n_jobs + 1] prefix sums of blocks per job */
    int64_t next;         /* next block to claim (atomic) */
} fill_work;

/* A 32-bit integer hash (lowbias32): cheap and vectorisable, so the fill
 * runs at memory speed. */
static inline uint32_t hash32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* One bf16 value from counter i: an odd signed 32-bit hash scaled to
 * (-scale, scale) (never zero), rounded to nearest even. */
static inline uint16_t random_bf16(uint32_t key, uint32_t i, float mul) {
    int32_t r = (int32_t)(hash32(key + i) | 1u);
    float f = (float)r * mul;
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u); /* no NaN or overflow is possible here */
    return (uint16_t)(u >> 16);
}

static void fill_block(const fill_job *j, int64_t block) {
    uint32_t key = hash32((uint32_t)j->seed ^ hash32((uint32_t)(j->seed >> 32) + (uint32_t)block));
    int64_t begin = block * FILL_BLOCK, end = NC_MIN(begin + FILL_BLOCK, j->numel);
    uint16_t *out = j->data + begin;
    uint32_t n = (uint32_t)(end - begin), i = 0;
    const float mul = j->scale * (1.0f / 2147483648.0f);
    /* fixed-length inner loops so that -O2 vectorises them */
    for (; i + 64 <= n; i += 64)
        for (uint32_t k = 0; k < 64; k++) out[i + k] = random_bf16(key, i + k, mul);
    for (; i < n; i++) out[i] = random_bf16(key, i, mul);
}

static void *fill_thread(void *arg) {
    fill_work *w = arg;
    for (;;) {
        int64_t b = __atomic_fetch_add(&w->next, 1, __ATOMIC_RELAXED);
        if (b >= w->total_blocks) return NULL;
        int j = 0;
        while (w->block_start[j + 1] <= b) j++;
        fill_block(&w->jobs[j], b - w->block_start[j]);
    }
}

static void fill_all(fill_job *jobs, int n_jobs) {
    fill_work w = {.jobs = jobs, .n_jobs = n_jobs};
    w.block_start = nc_xmalloc((size_t)(n_jobs + 1) * sizeof(int64_t));
    w.block_start[0] = 0;
    for (int i = 0; i < n_jobs; i++)
        w.block_start[i + 1] = w.block_start[i] + (jobs[i].numel + FILL_BLOCK - 1) / FILL_BLOCK;
    w.total_blocks = w.block_start[n_jobs];
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int n_threads = (int)NC_MAX(1, NC_MIN(ncpu, 64));
    n_threads = (int)NC_MIN((int64_t)n_threads, NC_MAX(w.total_blocks, 1));
    pthread_t th[64];
    int started = 0;
    for (int t = 1; t < n_threads; t++)
        if (pthread_create(&th[started], NULL, fill_thread, &w) == 0) started++;
    fill_thread(&w);
    for (int t = 0; t < started; t++) pthread_join(th[t], NULL);
    free(w.block_start);
}

/* Parses "d20" etc. or "L,C,H[,Hkv[,V]]" into cfg sizes (V: the vocabulary,
 * default 65536, stored padded to a multiple of 64 rows as nanochat does). */
static int parse_spec(const char *spec, nc_model_config *c) {
    static const struct {
        const char *name;
        int L, C, H;
    } named[] = {{"d20", 20, 1280, 10}, {"d26", 26, 1664, 13}, {"d32", 32, 2048, 16}, {"d34", 34, 2176, 17}};
    for (size_t i = 0; i < NC_ARRAY_LEN(named); i++)
        if (!strcmp(spec, named[i].name)) {
            c->n_layer = named[i].L;
            c->n_embd = named[i].C;
            c->n_head = c->n_kv_head = named[i].H;
            c->vocab_size = 65536;
            return 0;
        }
    int v[5] = {0, 0, 0, 0, 0}, n = 0;
    const char *p = spec;
    while (n < 5) {
        char *end;
        long x = strtol(p, &end, 10);
        if (end == p || x < 1 || x > (1 << 20)) break;
        v[n++] = (int)x;
        p = end;
        if (*p != ',') break;
        p++;
    }
    if (*p || n < 3)
        return nc_fail("bad --random spec '%s': use d20, d26, d32, d34 or L,C,H[,Hkv[,V]] (e.g. 4,256,2)", spec);
    c->n_layer = v[0];
    c->n_embd = v[1];
    c->n_head = v[2];
    c->n_kv_head = n >= 4 ? v[3] : v[2];
    c->vocab_size = n == 5 ? v[4] : 65536;
    if (c->n_embd % c->n_head || (c->n_embd / c->n_head) % 2)
        return nc_fail("bad --random spec '%s': C/H must be an even integer (the head dim)", spec);
    if (c->n_head % c->n_kv_head)
        return nc_fail("bad --random spec '%s': Hkv must divide H", spec);
    return 0;
}

nc_model *nc_model_random(const char *spec, uint64_t seed) {
    nc_model_config sizes = {0};
    if (parse_spec(spec, &sizes)) return NULL;
    sizes.sequence_len = 2048;
    sizes.generation = NC_GEN_V1;
    const int64_t V = ((int64_t)sizes.vocab_size + 63) / 64 * 64, C = sizes.n_embd, D = C / sizes.n_head;
    const int64_t qd = (int64_t)sizes.n_head * D, kvd = (int64_t)sizes.n_kv_head * D, F = 4 * C;
    const int L = sizes.n_layer;

    int n_jobs = 2 + 6 * L;
    fill_job *jobs = nc_xcalloc((size_t)n_jobs, sizeof(fill_job));
    char (*names)[64] = nc_xcalloc((size_t)n_jobs, sizeof *names);
    int64_t (*shapes)[2] = nc_xcalloc((size_t)n_jobs, sizeof *shapes);
    int k = 0;
    /* wte: nanochat inits embeddings with std 1 (rmsnorm follows anyway). */
    snprintf(names[k], 64, "transformer.wte.weight");
    shapes[k][0] = V, shapes[k][1] = C, jobs[k++].scale = sqrtf(3.0f);
    snprintf(names[k], 64, "lm_head.weight");
    shapes[k][0] = V, shapes[k][1] = C, jobs[k++].scale = sqrtf(3.0f / (float)C);
    for (int l = 0; l < L; l++) {
        const struct {
            const char *suffix;
            int64_t out, in;
        } m[] = {{"attn.c_q", qd, C}, {"attn.c_k", kvd, C}, {"attn.c_v", kvd, C},
                 {"attn.c_proj", C, qd}, {"mlp.c_fc", F, C}, {"mlp.c_proj", C, F}};
        for (int i = 0; i < 6; i++) {
            snprintf(names[k], 64, "transformer.h.%d.%s.weight", l, m[i].suffix);
            shapes[k][0] = m[i].out, shapes[k][1] = m[i].in;
            jobs[k++].scale = sqrtf(3.0f / (float)m[i].in);
        }
    }
    NC_ASSERT(k == n_jobs);

    int i;
    /* one arena for all tensors, each 64-byte aligned: no 2 MB page is
     * left half-used between tensors */
    size_t arena_bytes = 0;
    bool too_big = false;
    for (i = 0; i < n_jobs; i++) {
        jobs[i].numel = shapes[i][0] * shapes[i][1];
        jobs[i].seed = seed * 0x9e3779b97f4a7c15ull + (uint64_t)(i + 1) * 0xbf58476d1ce4e5b9ull;
        size_t bytes = ((size_t)jobs[i].numel * sizeof(uint16_t) + 63) & ~(size_t)63;
        too_big |= (uint64_t)jobs[i].numel > ((uint64_t)1 << 50) || bytes > SIZE_MAX / 2 - arena_bytes;
        if (!too_big) arena_bytes += bytes;
    }
    nc_tensor_set *ts = nc_tensor_set_new();
    nc_model *model = NULL;
    uint8_t *arena = too_big ? NULL : nc_alloc_huge(arena_bytes);
    if (!arena) {
        nc_fail("out of memory allocating random weights for '%s' (%zu MB)", spec, arena_bytes >> 20);
        i = -1;
    } else {
        nc_tensor_set_keep_buffer(ts, arena);
        size_t off = 0;
        for (i = 0; i < n_jobs; i++) {
            jobs[i].data = (uint16_t *)(arena + off);
            off += ((size_t)jobs[i].numel * sizeof(uint16_t) + 63) & ~(size_t)63;
            if (nc_tensor_set_add(ts, names[i], NC_DTYPE_BF16, 2, shapes[i], jobs[i].data)) break;
        }
    }
    if (i == n_jobs) {
        fill_all(jobs, n_jobs);
        char source[96];
        snprintf(source, sizeof source, "random %s (seed %llu)", spec, (unsigned long long)seed);
        model = nc_model_from_tensors(ts, &sizes, source, "random");
    }
    if (!model) nc_tensor_set_free(ts);
    free(jobs);
    free(names);
    free(shapes);
    return model;
}

/*
 * gptq.c: GPTQ rounding of 8-bit weights (gptq.h; docs/quantization.md,
 * "Calibrated rounding").
 *
 * Three steps, each built on the CPU backend's fp32 matrix product
 * y = x W^T (cpu_kernels.h), split over a thread pool:
 *   1. accumulate H = sum x^T x (its lower triangle) over calibration rows;
 *   2. factor: act order, dampening, and H = R R^T with R upper triangular,
 *      computed as the ordinary lower Cholesky factor M of H with rows and
 *      columns reversed (R_ij = M[K-1-i][K-1-j]); then the factor is packed
 *      for step 3 as G_ij = R_ij / R_jj;
 *   3. round: each weight row independently, left to right in act order,
 *      q_j = round(w_j + sum_{i<j} d_i G_ij) with d_i = w_i - q_i, in blocks
 *      of GPTQ_BLOCK columns: the sum over earlier blocks is one product per
 *      block, the rest a short loop.
 */
#include "gptq.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../backend/cpu/cpu_kernels.h"
#include "../model/quantize.h"
#include "../util/common.h"
#include "../util/numeric.h"
#include "../util/threadpool.h"

enum {
    ROW_BLOCK = 32,    /* rows of H (accumulation, trailing updates) or of W (rounding) per task */
    CHOL_BLOCK = 128,  /* columns factored per panel */
    GPTQ_BLOCK = 128,  /* columns rounded per block */
};

/* Dampening: H + lambda I with lambda this fraction of H's mean diagonal
 * (GPTQ's 1%), raised tenfold while the factorisation fails. */
static const float DAMP[] = {0.01f, 0.1f, 1.0f};

struct nc_gptq {
    nc_threadpool *pool;
    int n_threads;
    const cpu_kernels *kern;
    float *scratch;
    size_t scratch_floats;
    float *xt;          /* nc_gptq_accumulate's x^T, grown as needed */
    size_t xt_floats;
};

nc_gptq *nc_gptq_new(int n_threads) {
    const cpu_kernels *kern = cpu_kernels_select(NULL);
    if (!kern) {
        nc_fail("no CPU matmul kernels for this machine");
        return NULL;
    }
    nc_threadpool *pool = nc_threadpool_new(n_threads);
    if (!pool) return NULL;
    nc_gptq *g = nc_xcalloc(1, sizeof *g);
    g->pool = pool;
    g->n_threads = nc_threadpool_size(pool);
    g->kern = kern;
    return g;
}

void nc_gptq_free(nc_gptq *g) {
    if (!g) return;
    nc_threadpool_free(g->pool);
    free(g->scratch);
    free(g->xt);
    free(g);
}

/* n floats of scratch for each thread (contents undefined). */
static float *thread_scratch(nc_gptq *g, size_t per_thread) {
    size_t n = per_thread * (size_t)g->n_threads;
    if (n > g->scratch_floats) {
        free(g->scratch);
        g->scratch = nc_xmalloc(n * sizeof(float));
        g->scratch_floats = n;
    }
    return g->scratch;
}

/* y[t * ldy + r] = sum_k x[t * ldx + k] * w[r * k_len + k] for t < T, r in
 * [r0, r1): the backend's product with W an fp32 matrix [w_rows, k_len]. */
static void product(const nc_gptq *g, const float *x, int64_t ldx, int64_t T, const float *w, int64_t w_rows,
                    int64_t k_len, int64_t r0, int64_t r1, float *y, int64_t ldy, float *mm_scratch) {
    cpu_matrix m = {.data = w, .dtype = NC_DTYPE_F32, .rows = w_rows, .cols = k_len, .scale = NULL};
    g->kern->matmul_f32(x, ldx, T, &m, r0, r1, y, ldy, mm_scratch);
}

/* ==== statistics ==== */

size_t nc_gptq_stats_bytes(int64_t K) { return (size_t)K * (size_t)K * sizeof(float) + (size_t)K * sizeof(int32_t); }

int nc_gptq_stats_init(nc_gptq_stats *s, int64_t K) {
    *s = (nc_gptq_stats){.K = K};
    s->h = calloc((size_t)K * (size_t)K, sizeof(float));
    s->order = calloc((size_t)K, sizeof(int32_t));
    if (!s->h || !s->order) {
        nc_gptq_stats_free(s);
        return nc_fail("out of memory for the %lld x %lld calibration statistics", (long long)K, (long long)K);
    }
    return 0;
}

void nc_gptq_stats_free(nc_gptq_stats *s) {
    free(s->h);
    free(s->order);
    *s = (nc_gptq_stats){0};
}

/* Task b accumulates rows [b * ROW_BLOCK, ...) of H's lower triangle from
 * xt = x^T [K, n]; the biggest blocks (the last rows) go first. */
typedef struct {
    const nc_gptq *g;
    float *h;
    const float *xt;
    int64_t K, n;
    float *scratch;
    size_t per_thread;
} accumulate_job;

static void accumulate_worker(void *ctx, int task, int n_tasks, int thread) {
    const accumulate_job *j = ctx;
    int64_t K = j->K, i0 = (int64_t)(n_tasks - 1 - task) * ROW_BLOCK, i1 = NC_MIN(i0 + ROW_BLOCK, K);
    float *y = j->scratch + (size_t)thread * j->per_thread, *mm = y + (size_t)ROW_BLOCK * (size_t)K;
    product(j->g, j->xt + i0 * j->n, j->n, i1 - i0, j->xt, K, j->n, 0, i1, y, K, mm);
    for (int64_t i = i0; i < i1; i++) {
        float *hi = j->h + i * K;
        const float *yi = y + (i - i0) * K;
        for (int64_t c = 0; c <= i; c++) hi[c] += yi[c];
    }
}

void nc_gptq_accumulate(nc_gptq *g, nc_gptq_stats *s, const float *x, int64_t rows, int64_t ld) {
    NC_ASSERT(!s->factored);
    if (rows <= 0) return;
    int64_t K = s->K;
    size_t per_thread = (size_t)ROW_BLOCK * (size_t)K + (size_t)cpu_matmul_scratch_floats(rows);
    if ((size_t)K * (size_t)rows > g->xt_floats) {
        free(g->xt);
        g->xt_floats = (size_t)K * (size_t)rows;
        g->xt = nc_xmalloc(g->xt_floats * sizeof(float));
    }
    float *xt = g->xt;
    /* x^T in tiles of 32 x 32, so that neither side is read with a long stride */
    for (int64_t t0 = 0; t0 < rows; t0 += 32)
        for (int64_t c0 = 0; c0 < K; c0 += 32)
            for (int64_t t = t0; t < NC_MIN(t0 + 32, rows); t++)
                for (int64_t c = c0; c < NC_MIN(c0 + 32, K); c++) xt[c * rows + t] = x[t * ld + c];
    accumulate_job j = {g, s->h, xt, K, rows, thread_scratch(g, per_thread), per_thread};
    nc_threadpool_run(g->pool, accumulate_worker, &j, (int)((K + ROW_BLOCK - 1) / ROW_BLOCK));
    s->rows += rows;
}

/* ==== the factor ==== */

/* Lower Cholesky factorisation A = M M^T in place (row-major [K, K], only
 * the lower triangle is read or written), right-looking in panels of
 * CHOL_BLOCK columns: factor the panel's diagonal block, solve the rows
 * below it, then subtract the panel's outer product from the trailing
 * matrix (a product per ROW_BLOCK rows). False if A is not (numerically)
 * positive definite. */
typedef struct {
    const nc_gptq *g;
    float *A;
    int64_t K, k0, k1;
    float *panel;      /* [K - k1, k1 - k0]: the solved rows below the diagonal block */
    float *scratch;
    size_t per_thread;
} chol_job;

static void panel_worker(void *ctx, int task, int n_tasks, int thread) {
    const chol_job *j = ctx;
    int64_t K = j->K, k0 = j->k0, nb = j->k1 - j->k0;
    long lo, hi;
    nc_split_range((long)(K - j->k1), n_tasks, task, 1, &lo, &hi);
    for (int64_t i = j->k1 + lo; i < j->k1 + hi; i++) {
        float *ai = j->A + i * K;
        for (int64_t c = k0; c < j->k1; c++) {
            const float *ac = j->A + c * K;
            double v = ai[c];
            for (int64_t p = k0; p < c; p++) v -= (double)ai[p] * ac[p];
            ai[c] = (float)(v / ac[c]);
        }
        memcpy(j->panel + (i - j->k1) * nb, ai + k0, (size_t)nb * sizeof(float));
    }
}

static void trailing_worker(void *ctx, int task, int n_tasks, int thread) {
    const chol_job *j = ctx;
    int64_t K = j->K, k1 = j->k1, nb = j->k1 - j->k0;
    int64_t i0 = k1 + (int64_t)(n_tasks - 1 - task) * ROW_BLOCK, i1 = NC_MIN(i0 + ROW_BLOCK, K);
    float *y = j->scratch + (size_t)thread * j->per_thread, *mm = y + (size_t)ROW_BLOCK * (size_t)(K - k1);
    product(j->g, j->panel + (i0 - k1) * nb, nb, i1 - i0, j->panel, K - k1, nb, 0, i1 - k1, y, K - k1, mm);
    for (int64_t i = i0; i < i1; i++) {
        float *ai = j->A + i * K;
        const float *yi = y + (i - i0) * (K - k1);
        for (int64_t c = k1; c <= i; c++) ai[c] -= yi[c - k1];
    }
}

static bool cholesky(nc_gptq *g, float *A, int64_t K) {
    float *panel = nc_xmalloc((size_t)K * CHOL_BLOCK * sizeof(float));
    bool ok = true;
    for (int64_t k0 = 0; k0 < K && ok; k0 += CHOL_BLOCK) {
        int64_t k1 = NC_MIN(k0 + CHOL_BLOCK, K);
        for (int64_t c = k0; c < k1 && ok; c++) {
            float *ac = A + c * K;
            double d = ac[c];
            for (int64_t p = k0; p < c; p++) d -= (double)ac[p] * ac[p];
            if (!(d > 0)) {
                ok = false;
                break;
            }
            ac[c] = (float)sqrt(d);
            for (int64_t i = c + 1; i < k1; i++) {
                float *ai = A + i * K;
                double v = ai[c];
                for (int64_t p = k0; p < c; p++) v -= (double)ai[p] * ac[p];
                ai[c] = (float)(v / ac[c]);
            }
        }
        if (!ok || k1 == K) break;
        size_t per_thread = (size_t)ROW_BLOCK * (size_t)(K - k1) + (size_t)cpu_matmul_scratch_floats(k1 - k0);
        chol_job j = {g, A, K, k0, k1, panel, thread_scratch(g, per_thread), per_thread};
        nc_threadpool_run(g->pool, panel_worker, &j, (int)NC_MIN(K - k1, 4 * g->n_threads));
        nc_threadpool_run(g->pool, trailing_worker, &j, (int)((K - k1 + ROW_BLOCK - 1) / ROW_BLOCK));
    }
    free(panel);
    return ok;
}

/*
 * The factor, packed for rounding. For block t of GPTQ_BLOCK positions
 * [b, e) (b = t * GPTQ_BLOCK, positions in act order), at offset
 * GPTQ_BLOCK^2 * t (t + 1) / 2 floats (every block before the last is
 * full):
 *   earlier [e - b, b]:     G_ij for target j in [b, e), source i < b
 *   within  [e - b, e - b]: G_ij for i, j in [b, e), 0 where i >= j
 * so that a block's sum over earlier columns is one product with `earlier`.
 */
static size_t block_offset(int64_t t) { return (size_t)GPTQ_BLOCK * GPTQ_BLOCK * (size_t)(t * (t + 1) / 2); }

typedef struct {
    const float *M; /* the lower Cholesky factor of the reversed matrix */
    float *G;
    int64_t K;
} pack_job;

static void pack_worker(void *ctx, int task, int n_tasks, int thread) {
    const pack_job *j = ctx;
    int64_t K = j->K, b = (int64_t)task * GPTQ_BLOCK, e = NC_MIN(b + GPTQ_BLOCK, K), n = e - b;
    float *earlier = j->G + block_offset(task), *within = earlier + n * b;
    memset(within, 0, (size_t)(n * n) * sizeof(float));
    /* R_ij = M[K-1-i][K-1-j]: for source i, the targets j in [b, e) are a
     * contiguous run of M's row K-1-i (columns K-1-j descend as j rises). */
    for (int64_t i = 0; i < e - 1; i++) {
        const float *row = j->M + (K - 1 - i) * K;
        for (int64_t jj = NC_MAX(b, i + 1); jj < e; jj++) {
            float g = row[K - 1 - jj] / j->M[(K - 1 - jj) * K + (K - 1 - jj)];
            if (i < b) earlier[(jj - b) * b + i] = g;
            else within[(jj - b) * n + (i - b)] = g;
        }
    }
}

/* The symmetric H's entry (i, j) from its lower triangle. */
static inline float h_at(const float *h, int64_t K, int64_t i, int64_t j) {
    return i >= j ? h[i * K + j] : h[j * K + i];
}

/* qsort_r order of column indices: decreasing H_jj, ties lower index first. */
static int by_diag_desc(const void *a, const void *b, void *diag) {
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    const float *d = diag;
    if (d[i] != d[j]) return d[i] > d[j] ? -1 : 1;
    return (i > j) - (i < j);
}

int nc_gptq_factor(nc_gptq *g, nc_gptq_stats *s) {
    if (s->factored) return 0;
    int64_t K = s->K;
    if (s->rows == 0) return nc_fail("no calibration rows reached this product");
    float *diag = nc_xmalloc((size_t)K * sizeof(float));
    double mean = 0;
    for (int64_t i = 0; i < K; i++) {
        /* a column no calibration row ever set (a dead unit) is rounded to
         * nearest: H_ii = 1 with nothing beside it moves no error */
        if (s->h[i * K + i] == 0) s->h[i * K + i] = 1;
        diag[i] = s->h[i * K + i];
        mean += diag[i];
    }
    mean /= (double)K;
    for (int64_t i = 0; i < K; i++) s->order[i] = (int32_t)i;
    qsort_r(s->order, (size_t)K, sizeof(int32_t), by_diag_desc, diag);
    free(diag);

    float *A = malloc((size_t)K * (size_t)K * sizeof(float));
    if (!A) return nc_fail("out of memory factoring a %lld x %lld matrix", (long long)K, (long long)K);
    bool ok = false;
    for (size_t attempt = 0; attempt < NC_ARRAY_LEN(DAMP) && !ok; attempt++) {
        float lambda = (float)(DAMP[attempt] * mean);
        /* A = the act-ordered H reversed: A[a][b] = H[order[K-1-a]][order[K-1-b]] */
        for (int64_t a = 0; a < K; a++) {
            int64_t i = s->order[K - 1 - a];
            for (int64_t b = 0; b <= a; b++) A[a * K + b] = h_at(s->h, K, i, s->order[K - 1 - b]);
            A[a * K + a] += lambda;
        }
        ok = cholesky(g, A, K);
    }
    if (!ok) {
        free(A);
        return nc_fail("the calibration statistics of a %lld-column input are not positive definite", (long long)K);
    }
    int64_t n_blocks = (K + GPTQ_BLOCK - 1) / GPTQ_BLOCK;
    size_t packed = block_offset(n_blocks - 1) + (size_t)(K - (n_blocks - 1) * GPTQ_BLOCK) * (size_t)K;
    float *G = malloc(packed * sizeof(float));
    if (!G) {
        free(A);
        return nc_fail("out of memory for a %lld-column factor", (long long)K);
    }
    pack_job pj = {A, G, K};
    nc_threadpool_run(g->pool, pack_worker, &pj, (int)n_blocks);
    free(A);
    free(s->h);
    s->h = G;
    s->factored = true;
    return 0;
}

/* ==== rounding ==== */

/* The code of v / s in format f, and its value (the code times s). */
static inline uint8_t round_code(float v, float s, nc_weight_format f, float *value) {
    if (f == NC_WEIGHTS_INT8) {
        float c = v / s;
        c = nc_rint_small(c > 127.0f ? 127.0f : c < -127.0f ? -127.0f : c);
        *value = c * s;
        return (uint8_t)(int8_t)(int32_t)c;
    }
    uint8_t b = nc_f32_to_f8e4m3(v / s);
    *value = nc_f8e4m3_to_f32(b) * s;
    return b;
}

typedef struct {
    const nc_gptq *g;
    const nc_gptq_stats *s;
    const nc_tensor *w;
    nc_weight_format f;
    uint8_t *q;
    float *scale;
    float *scratch;
    size_t per_thread;
    int failed;         /* 0, or 1 + the first row found non-finite */
} round_job;

static void round_worker(void *ctx, int task, int n_tasks, int thread) {
    round_job *j = ctx;
    const int64_t K = j->s->K, N = j->w->shape[0];
    const int32_t *order = j->s->order;
    int64_t r0 = (int64_t)task * ROW_BLOCK, n = NC_MIN(r0 + ROW_BLOCK, N) - r0;
    float *wp = j->scratch + (size_t)thread * j->per_thread; /* [n, K] the rows, act order */
    float *d = wp + (size_t)ROW_BLOCK * (size_t)K;           /* [n, K] w - value of q, act order */
    float *y = d + (size_t)ROW_BLOCK * (size_t)K;            /* [n, GPTQ_BLOCK] */
    float *row = y + (size_t)ROW_BLOCK * GPTQ_BLOCK;         /* [K] */
    float *mm = row + K;
    for (int64_t r = 0; r < n; r++) {
        const float *src = nc_quantize_row_f32(j->w, r0 + r, row);
        if (!nc_quantize_row_scale(src, K, j->f, &j->scale[r0 + r])) {
            int expected = 0;
            __atomic_compare_exchange_n(&j->failed, &expected, (int)(r0 + r) + 1, false, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED);
            return;
        }
        for (int64_t c = 0; c < K; c++) wp[r * K + c] = src[order[c]];
    }
    for (int64_t b = 0; b < K; b += GPTQ_BLOCK) {
        int64_t e = NC_MIN(b + GPTQ_BLOCK, K), nb = e - b;
        const float *earlier = j->s->h + block_offset(b / GPTQ_BLOCK), *within = earlier + nb * b;
        if (b > 0) product(j->g, d, K, n, earlier, nb, b, 0, nb, y, GPTQ_BLOCK, mm);
        else memset(y, 0, (size_t)(n * GPTQ_BLOCK) * sizeof(float));
        for (int64_t r = 0; r < n; r++) {
            float s = j->scale[r0 + r], *dr = d + r * K, *yr = y + r * GPTQ_BLOCK;
            const float *wr = wp + r * K;
            uint8_t *qr = j->q + (r0 + r) * K;
            for (int64_t c = b; c < e; c++) {
                const float *gc = within + (c - b) * nb;
                float acc = yr[c - b];
                for (int64_t i = b; i < c; i++) acc += dr[i] * gc[i - b];
                float value = 0;
                qr[order[c]] = s == 0 ? 0 : round_code(wr[c] + acc, s, j->f, &value);
                dr[c] = wr[c] - value;
            }
        }
    }
}

int nc_gptq_round(nc_gptq *g, const nc_gptq_stats *s, const nc_tensor *w, nc_weight_format f, uint8_t *q,
                  float *scale) {
    NC_ASSERT(s->factored && w->ndim == 2 && w->shape[1] == s->K);
    NC_ASSERT(f == NC_WEIGHTS_INT8 || f == NC_WEIGHTS_FP8);
    int64_t K = s->K, N = w->shape[0];
    size_t per_thread = 2 * (size_t)ROW_BLOCK * (size_t)K + (size_t)ROW_BLOCK * GPTQ_BLOCK + (size_t)K +
                        (size_t)cpu_matmul_scratch_floats(K);
    round_job j = {g, s, w, f, q, scale, thread_scratch(g, per_thread), per_thread, 0};
    nc_threadpool_run(g->pool, round_worker, &j, (int)((N + ROW_BLOCK - 1) / ROW_BLOCK));
    if (j.failed)
        return nc_fail("tensor '%s' row %d holds a non-finite value; it cannot be quantised", w->name, j.failed - 1);
    return 0;
}

/*
 * gptq.h: rounding a weight matrix to int8 or fp8 so that its products,
 * rather than its weights one by one, stay closest to the float ones: GPTQ
 * (Frantar et al., "GPTQ: Accurate Post-Training Quantization for
 * Generative Pre-trained Transformers", 2022), from statistics of the
 * product's input rows on a calibration text (docs/quantization.md,
 * "Calibrated rounding").
 *
 * For one weight row w, its rounding q and inputs x, the output error over
 * the calibration rows is sum_x ((w - q) . x)^2 = (w - q) H (w - q)^T with
 * H = sum x^T x. Rounding to nearest ignores H. GPTQ rounds the columns one
 * at a time, those with the largest H_jj first ("act order"), and moves
 * each column's rounding error onto the columns not yet rounded, as far as
 * H lets them absorb it. The codes and scales are the same format as round
 * to nearest (model/quantize.h): a GPTQ file loads and runs everywhere.
 *
 * The algebra, in act order, with H dampened (+ 1% of its mean diagonal)
 * and factored as H = R R^T, R upper triangular:
 *     q_j = round(w_j + sum_{i<j} (w_i - q_i) R_ij / R_jj)
 * with w the original row. This is GPTQ's update (which uses U = chol(H^-1),
 * upper, and U = R^-1) without forming the inverse: one Cholesky
 * factorisation (K^3 / 3) per input, then N K^2 / 2 per matrix of N rows.
 *
 * The heavy loops are products of fp32 matrices done by the CPU backend's
 * matmul kernels (backend/cpu/cpu_kernels.h), split over a thread pool.
 */
#ifndef NC_QUANT_GPTQ_H
#define NC_QUANT_GPTQ_H

#include <stdbool.h>
#include <stdint.h>

#include "../formats/tensor.h"
#include "../model/model.h"

/* Threads, kernels and scratch, shared by the calls below (one at a time). */
typedef struct nc_gptq nc_gptq;

/* n_threads <= 0: one per physical core. NULL + nc_error() on failure. */
nc_gptq *nc_gptq_new(int n_threads);
void nc_gptq_free(nc_gptq *g);

/* The statistics of one product input of K columns: H = sum x^T x while
 * accumulating, then its factor. */
typedef struct {
    int64_t K;
    float *h;        /* [K, K]: H (lower triangle); after factoring, the
                        packed factor (gptq.c, "The factor") */
    int32_t *order;  /* [K] after factoring: column order[j] is rounded j-th */
    int64_t rows;    /* calibration rows accumulated */
    bool factored;
} nc_gptq_stats;

/* H = 0 for K columns; -1 + nc_error() when out of memory. */
int nc_gptq_stats_init(nc_gptq_stats *s, int64_t K);
void nc_gptq_stats_free(nc_gptq_stats *s);

/* Bytes nc_gptq_stats_init allocates for K columns (for memory planning). */
size_t nc_gptq_stats_bytes(int64_t K);

/* H += x^T x for rows x [rows, K] (row stride ld). */
void nc_gptq_accumulate(nc_gptq *g, nc_gptq_stats *s, const float *x, int64_t rows, int64_t ld);

/* Dampens and factors H (once; then ready for nc_gptq_round). Fails with
 * -1 + nc_error() when no row was accumulated or H is not positive
 * definite even after stronger dampening. */
int nc_gptq_factor(nc_gptq *g, nc_gptq_stats *s);

/* Rounds w (float [N, K], K = s->K) to format f: q [N, K] (int8 or e4m3
 * bytes) and scale [N] exactly as round to nearest computes the scales
 * (nc_quantize_row_scale), the codes chosen by GPTQ. -1 + nc_error() on a
 * non-finite weight. */
int nc_gptq_round(nc_gptq *g, const nc_gptq_stats *s, const nc_tensor *w, nc_weight_format f, uint8_t *q,
                  float *scale);

#endif /* NC_QUANT_GPTQ_H */

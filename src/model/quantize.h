/*
 * quantize.h: 8-bit weights from float ones, the formats of --weights int8
 * and --weights fp8 (docs/quantization.md).
 *
 * Both are symmetric with one fp32 scale per output channel (row r of an
 * nn.Linear weight W [out, in]), computed from the fp32 value of every
 * weight of the row:
 *   int8: s = max|w| / 127,  q = clamp(rint(w / s), -127, 127)
 *   fp8:  s = max|w| / 448,  q = e4m3fn(w / s), nearest even, saturating
 * (w / s an fp32 division, rint ties to even); W[r, k] is then s * q. A row
 * of zeros gets s = 0 and q = 0. Quantised: every layer's c_q, c_k, c_v,
 * attn c_proj, mlp c_fc, mlp c_proj, and (optionally) lm_head; wte, value
 * embeddings, gates and lambdas stay as they are (one embedding row is read
 * per token, the rest is tiny).
 */
#ifndef NC_MODEL_QUANTIZE_H
#define NC_MODEL_QUANTIZE_H

#include <stdbool.h>
#include <stdint.h>

#include "model.h"

/* The scale of a row of n fp32 values in format f (max|w| / 127 or / 448;
 * 0 for a row of zeros); false if the row holds an infinity or a NaN. */
bool nc_quantize_row_scale(const float *w, int64_t n, nc_weight_format f, float *scale);

/* Row r of a float (f32, bf16, f16) matrix [rows, cols] as fp32: in place
 * for f32, else converted into buf [cols]. */
const float *nc_quantize_row_f32(const nc_tensor *t, int64_t r, float *buf);

/* One row of n fp32 values -> q[0..n) and its scale (returned). The row
 * must be finite. */
float nc_quantize_row_int8(const float *w, int64_t n, int8_t *q);
float nc_quantize_row_fp8(const float *w, int64_t n, uint8_t *q);

/*
 * Converts the model's float layer matrices (and lm_head when `lm_head`) to
 * `f` in place, on n_threads threads (0: one per CPU): each becomes an I8 /
 * F8_E4M3 tensor of the same name, with its scale `<name>_scale` (F32
 * [rows]) added to the model's tensor set, and the set's metadata records
 * the format, exactly as a file written by `nanochat quantize` loads. The
 * float data is given back to the system (its pages, where they lie in
 * memory the set owns or maps).
 * f == NC_WEIGHTS_FLOAT, or the format the model already has, changes
 * nothing. Fails (model unchanged) on an already 8-bit model asked for
 * another format, a non-finite weight, or when out of memory.
 */
int nc_model_quantize(nc_model *m, nc_weight_format f, bool lm_head, int n_threads);

/* The matrices nc_model_quantize converts, in the order it converts them:
 * every layer's six, layer by layer, then lm_head. */
typedef enum {
    NC_QMATRIX_C_Q,
    NC_QMATRIX_C_K,
    NC_QMATRIX_C_V,
    NC_QMATRIX_ATTN_PROJ,
    NC_QMATRIX_MLP_FC,
    NC_QMATRIX_MLP_PROJ,
    NC_QMATRIX_LM_HEAD,
} nc_qmatrix;

/*
 * A rounding other than to nearest, for the same format (the codes of
 * calibrated rounding, quant/calibrate.h): round() is called once per
 * matrix, in the order above, from the calling thread, with the float
 * tensor `w` [rows, cols] (layer -1 for lm_head); it writes q [rows, cols]
 * (int8 or e4m3 bytes) and scale [rows], the scales exactly as
 * nc_quantize_row_scale computes them, and returns 0, or -1 + nc_error().
 * `name` goes into the metadata (NC_QUANT_META_ROUNDING).
 */
typedef struct {
    int (*round)(void *ctx, int layer, nc_qmatrix which, const nc_tensor *w, nc_weight_format f, uint8_t *q,
                 float *scale);
    void *ctx;
    const char *name;
} nc_quant_rounding;

/* nc_model_quantize with the codes chosen by `rounding` (NULL: to nearest). */
int nc_model_quantize_rounded(nc_model *m, nc_weight_format f, bool lm_head, int n_threads,
                              const nc_quant_rounding *rounding);

#endif /* NC_MODEL_QUANTIZE_H */

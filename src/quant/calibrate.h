/*
 * calibrate.h: calibrated (GPTQ) rounding of a whole model's 8-bit
 * weights: the float model runs over a calibration text on the CPU
 * backend, which reports the input rows of every weight product
 * (nc_backend_ops.observe_products); their statistics (gptq.h) choose each
 * matrix's codes. The result is a rounding for nc_model_quantize_rounded
 * (model/quantize.h): the same format as rounding to nearest, a smaller
 * output error (docs/quantization.md, "Calibrated rounding").
 *
 * The statistics of a layer take 4 bytes x (3 C^2 + (4C)^2) (d34: 360 MB),
 * so they are gathered for as many consecutive layers as fit in the memory
 * budget per pass over the text; a model whose layers do not all fit takes
 * several passes (each a whole forward: the budget trades memory for time). The forward passes use the float weights throughout
 * (every matrix is rounded from the float model's inputs).
 */
#ifndef NC_QUANT_CALIBRATE_H
#define NC_QUANT_CALIBRATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../model/model.h"
#include "../model/quantize.h"
#include "../tokenizer/tokenizer.h"

#define NC_CALIBRATION_DEFAULT_TOKENS 16384
#define NC_CALIBRATION_MIN_MEMORY ((size_t)1 << 30)

typedef struct {
    const char *text_path; /* UTF-8 text, cut into windows of the model's sequence_len tokens */
    int64_t max_tokens;    /* tokens of it used (0: NC_CALIBRATION_DEFAULT_TOKENS) */
    int n_threads;         /* 0: one per physical core */
    size_t memory;         /* bytes of statistics held at once (0: half the available memory,
                              at least NC_CALIBRATION_MIN_MEMORY) */
    bool verbose;          /* a line per pass on stderr */
} nc_calibration_params;

typedef struct nc_calibration nc_calibration;

/* Reads and tokenizes the text for `m` (float weights, which must outlive
 * the calibration). NULL + nc_error() on an unreadable or empty text. */
nc_calibration *nc_calibration_new(const nc_model *m, const nc_tokenizer *tok, const nc_calibration_params *p);
void nc_calibration_free(nc_calibration *c);

/* Tokens the calibration runs (at most max_tokens). */
int64_t nc_calibration_tokens(const nc_calibration *c);

/* The rounding to pass to nc_model_quantize_rounded(m, ...). */
nc_quant_rounding nc_calibration_rounding(nc_calibration *c);

#endif /* NC_QUANT_CALIBRATE_H */

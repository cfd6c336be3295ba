/*
 * model.h: a nanochat model in memory: its configuration (sizes from the
 * checkpoint's meta/config, the architecture generation recognised from the
 * tensors present, docs/formats.md, Recognising the generation) and a table
 * of weight tensors by role.
 *
 * Dimension letters, used in shape comments everywhere:
 *   L = layers, C = n_embd, H = n_head, Hkv = n_kv_head, D = head dim (C/H),
 *   F = 4C (MLP hidden), V = vocab_size (real), Vp = padded vocab (rows of
 *   wte/lm_head), T = tokens in a chunk, pos = absolute position.
 *
 * Data flows one way: files -> model -> backend <- engine <- server/CLI.
 * The model owns its nc_tensor_set; tensors point into mmapped checkpoint
 * files. Backends read weights from here (the CPU backend in place, the
 * CUDA backend by uploading).
 */
#ifndef NC_MODEL_MODEL_H
#define NC_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "../formats/tensor.h"

typedef enum {
    NC_GEN_UNKNOWN = 0,
    NC_GEN_V1 = 1, /* classic: all published d20/d26/d32/d34 */
    NC_GEN_V2 = 2, /* + resid_lambdas, x0_lambdas, sliding windows */
    NC_GEN_V3 = 3, /* + value embeddings, ve_gate [Hkv,32], gate 2*sigmoid, softcap 15 */
    NC_GEN_V4 = 4, /* as V3 with softcap 20: not distinguishable by keys alone */
    NC_GEN_V5 = 5, /* ve_gate [Hkv,12], gate 3*sigmoid, qk*1.15, rope 100000 */
    NC_GEN_V6 = 6, /* + smear, backout; qk*1.2; what nanochat trains today */
} nc_generation;

const char *nc_generation_name(nc_generation g); /* "V1", ... */

#define NC_WINDOW_PATTERN_MAX 64

typedef struct {
    int n_layer;            /* L */
    int n_embd;             /* C */
    int n_head;             /* H */
    int n_kv_head;          /* Hkv; H is a multiple of it */
    int head_dim;           /* D = C / H */
    int mlp_hidden;         /* F = 4C */
    int vocab_size;         /* V: logits beyond it are dropped before the softcap */
    int padded_vocab;       /* Vp: rows of wte and lm_head (>= V) */
    int sequence_len;       /* training context; sets window sizes */
    nc_generation generation;

    /* Constants the generation implies (docs/model.md, Generations). */
    float rope_base;        /* 10000 (V1-V4) or 100000 (V5, V6) */
    float softcap;          /* 15 (20 for V4) */
    float qk_scale;         /* applied after QK-norm: 1 (V1-V4), 1.15 (V5), 1.2 (V6) */
    float norm_eps;         /* FLT_EPSILON: nanochat passes no eps to F.rms_norm */
    bool rope_tables_bf16;  /* V1 rounds cos/sin tables to bf16 even on CPU */

    bool has_lambdas;       /* resid_lambdas / x0_lambdas (V2+) */
    bool has_value_embeds;  /* value_embeds + ve_gate (V3+) */
    int ve_gate_channels;   /* 32 (V3/V4) or 12 (V5/V6) */
    float ve_gate_scale;    /* 2 (V3/V4) or 3 (V5/V6) */
    bool has_smear;         /* smear_gate, smear_lambda, backout_lambda (V6) */
    int smear_channels;     /* 24 */

    char window_pattern[NC_WINDOW_PATTERN_MAX]; /* e.g. "SSSL"; "L" for V1 */
} nc_model_config;

/* Attention window of layer l in tokens: key j is visible to query i iff
 * 0 <= i - j <= window. Full attention returns INT32_MAX for V1; for V2+ the
 * L window is sequence_len (so even L layers slide past it). */
int nc_config_window(const nc_model_config *c, int layer);

/* Whether layer l carries a value embedding (V3+: l % 2 == (L-1) % 2). */
bool nc_config_has_value_embed(const nc_model_config *c, int layer);

/* Parameter count (all weight tensors, padded rows included). */
int64_t nc_config_param_count(const nc_model_config *c);

/* How the linear layers' weights are stored (docs/quantization.md). */
typedef enum {
    NC_WEIGHTS_FLOAT = 0, /* f32 / bf16 / f16 as in the checkpoint ("bf16" on the command line) */
    NC_WEIGHTS_INT8,      /* I8 q, symmetric: W[r, k] = scale[r] * q[r, k], q in -127..127 */
    NC_WEIGHTS_FP8,       /* F8_E4M3 q: W[r, k] = scale[r] * e4m3(q[r, k]) */
} nc_weight_format;

/* "bf16", "int8", "fp8": the names of --weights. */
const char *nc_weight_format_name(nc_weight_format f);
/* Parses one of those names; -1 + nc_error() listing them otherwise. */
int nc_weight_format_parse(const char *name, nc_weight_format *out);
/* Of an 8-bit format: the matrices' dtype (I8, F8_E4M3) and the name its
 * files' metadata gives it ("int8", "fp8_e4m3"). */
nc_dtype nc_weight_format_dtype(nc_weight_format f);
const char *nc_weight_format_meta(nc_weight_format f);

/* safetensors "__metadata__" of an 8-bit file (written by `nanochat
 * quantize`, checked when one is loaded). */
#define NC_QUANT_META_FORMAT "nanochat.weights"  /* "int8" or "fp8_e4m3" */
#define NC_QUANT_META_SCHEME "nanochat.scheme"   /* NC_QUANT_SCHEME */
#define NC_QUANT_META_VERSION "nanochat.version" /* NC_QUANT_VERSION */
#define NC_QUANT_META_ROUNDING "nanochat.rounding" /* "nearest", or "gptq" (informational: the format is the same) */
#define NC_QUANT_SCHEME "per_channel_absmax"
#define NC_QUANT_VERSION "1"

/* Per-row scales (F32 [rows]) of a layer's 8-bit matrices; NULL members
 * for float weights. Named as the matrices of nc_layer_weights. */
typedef struct {
    const nc_tensor *c_q, *c_k, *c_v, *attn_proj, *mlp_fc, *mlp_proj;
} nc_layer_scales;

typedef struct {
    const nc_tensor *c_q;         /* [H*D, C]   */
    const nc_tensor *c_k;         /* [Hkv*D, C] */
    const nc_tensor *c_v;         /* [Hkv*D, C] */
    const nc_tensor *attn_proj;   /* [C, H*D]   */
    const nc_tensor *mlp_fc;      /* [F, C]     */
    const nc_tensor *mlp_proj;    /* [C, F]     */
    const nc_tensor *ve_gate;     /* [Hkv, ve_gate_channels] or NULL */
    const nc_tensor *value_embed; /* [Vp, Hkv*D] or NULL */
    nc_layer_scales scale;        /* [rows] each, when the six matrices are 8-bit */
} nc_layer_weights;

typedef struct {
    nc_model_config cfg;
    const nc_tensor *wte;        /* [Vp, C] */
    const nc_tensor *lm_head;    /* [Vp, C] */
    const nc_tensor *lm_head_scale; /* [Vp] when lm_head is 8-bit, else NULL */
    nc_weight_format weights;    /* of the layers' six matrices; lm_head is this or float */
    nc_layer_weights *layers;    /* [L] */
    float *resid_lambdas;        /* [L] fp32 copies, or NULL before V2 */
    float *x0_lambdas;           /* [L] */
    const nc_tensor *smear_gate; /* [1, smear_channels] or NULL */
    float smear_lambda;          /* V6 scalars, 0 otherwise */
    float backout_lambda;

    nc_tensor_set *tensors;      /* owns every tensor above */
    char *source;                /* human-readable origin (path or "random d20") */
    char *format;                /* "nanochat .pt", "safetensors", "random" */
} nc_model;

/*
 * Builds a model from a tensor set using nanochat state-dict names
 * (`transformer.wte.weight`, `transformer.h.{l}.attn.c_q.weight`, ...;
 * 8-bit matrices with `<name>_scale` beside them and the set's metadata
 * saying which format, docs/quantization.md) and
 * the sizes in `sizes` (n_layer, n_embd, n_head, n_kv_head, vocab_size,
 * sequence_len, window_pattern; the rest is filled in here). Recognises the
 * generation from the tensors present, checks every shape, and fails with a
 * message naming the missing, unexpected or mis-shaped tensor.
 * On success the model takes ownership of `tensors`; on failure the caller
 * still owns it.
 */
nc_model *nc_model_from_tensors(nc_tensor_set *tensors, const nc_model_config *sizes,
                                const char *source, const char *format);

void nc_model_free(nc_model *m);

#endif /* NC_MODEL_MODEL_H */

/*
 * cpu_backend.h: the CPU backend's private state, shared by its files:
 *   cpu_backend.c  init / free / describe / copy_kv_block (weights, KV pool, scratch)
 *   cpu_forward.c  the forward pass (docs/model.md) over a batch of sequence chunks
 *   cpu_weights.c  moves mmapped weight matrices into 2 MB pages (decode speed)
 *   cpu_kernels*.[ch]  matmul and attention kernels in scalar, AVX2, AVX-512 and VNNI variants
 *
 * KV cache: one pool of n_kv_blocks blocks; block b holds, for every layer,
 * keys and values of NC_KV_BLOCK_TOKENS (= 64) consecutive positions of one
 * sequence, laid out [L][2 (k, v)][Hkv][64][D] fp32, so a head's keys of a
 * block are one contiguous 64 x D tile. Keys are stored after RoPE and
 * QK-norm (and the V5/V6 q,k scale), exactly what attention consumes.
 * With --kv-cache fp8 a tile is instead 64 x D e4m3 bytes followed by the
 * 64 positions' fp32 scales (per token and kv head: max|x| / 448,
 * quantised as an fp8 weight row, model/quantize.h), dequantised as
 * attention reads them.
 */
#ifndef NC_BACKEND_CPU_BACKEND_H
#define NC_BACKEND_CPU_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../util/threadpool.h"
#include "../backend.h"
#include "cpu_kernels.h"

extern const nc_backend_ops nc_cpu_backend_ops;

/* Forces a kernel variant (a cpu_kernels.h name, or "auto") for backends created
 * afterwards in this process (tests and benchmarks compare them); it takes
 * precedence over the NC_CPU_KERNELS environment variable, which does the
 * same from outside. Fails if the CPU lacks the variant. */
int nc_cpu_backend_force_isa(const char *isa);

typedef struct {
    cpu_matrix c_q;               /* [H*D, C]   */
    cpu_matrix c_k;               /* [Hkv*D, C] */
    cpu_matrix c_v;               /* [Hkv*D, C] */
    cpu_matrix attn_proj;         /* [C, H*D]   */
    cpu_matrix mlp_fc;            /* [F, C]     */
    cpu_matrix mlp_proj;          /* [C, F]     */
    const nc_tensor *value_embed; /* [Vp, Hkv*D] or NULL */
    float *ve_gate;               /* [Hkv, ve_gate_channels] fp32 copy, or NULL */
    int32_t window;               /* attention window in tokens (INT32_MAX: full) */
} cpu_layer;

typedef struct {
    nc_model_config cfg;
    const cpu_kernels *kern;
    nc_threadpool *pool;
    int n_threads;
    int n_tasks;                /* tasks per parallel job: a few per thread, so a
                                   thread the OS deschedules delays little */

    /* weights (pointing into the model, or into `owned` for converted f16) */
    const nc_tensor *wte;       /* [Vp, C] */
    cpu_matrix lm_head;         /* [Vp, C] */
    cpu_layer *layers;          /* [L] */
    bool q8;                    /* int8 layer matrices go through kern->matmul_i8_q8 */
    float *smear_gate;          /* [smear_channels] fp32 copy, or NULL */
    void **owned;               /* buffers to free */
    int n_owned;

    /* rotary tables: position p, pair j at [p * D/2 + j] */
    int64_t rope_len;           /* positions covered (nanochat: 10 * sequence_len) */
    float *rope_cos;            /* [rope_len, D/2] */
    float *rope_sin;            /* [rope_len, D/2] */

    /* paged KV cache: kv (fp32) or kv8 (fp8), the other NULL */
    float *kv;                  /* [n_kv_blocks][L][2][Hkv][64][D] */
    size_t kv_block_floats;     /* floats per block: L * 2 * Hkv * 64 * D */
    uint8_t *kv8;               /* [n_kv_blocks][L][2][Hkv] tiles of [64][D] e4m3 + [64] fp32 scales */
    size_t kv8_block_bytes;     /* bytes per block: L * 2 * Hkv * 64 * (D + 4) */
    int32_t max_window;         /* largest layer window (INT32_MAX: full attention) */

    /* scratch, sized for max_batch_tokens (T) and max_seqs (S) at init */
    float *x;                   /* [T, C] residual stream */
    float *x0;                  /* [T, C] embedding after smear (V2+ x0 lambdas) */
    float *x_backout;           /* [T, C] output of layer L/2 (V6) */
    float *h;                   /* [T, C] normed input of a sublayer, also the logits input */
    float *tmp;                 /* [T, C] sublayer output before the residual add */
    float *q;                   /* [T, H*D] */
    float *k;                   /* [T, Hkv*D] */
    float *v;                   /* [T, Hkv*D] */
    float *att;                 /* [T, H*D] attention output, heads side by side */
    float *fc;                  /* [T, F] MLP hidden */
    float *prev_embed;          /* [C] rmsnorm(wte[prev_token]) for the smear */
    float *scores;              /* [n_threads, rope_len] attention probabilities */
    float *kv_tile;             /* [n_threads, 64 * D + 64] an fp8 tile dequantised, its weights */
    int8_t *xq;                 /* [T, F] q8 activations (st->q8) */
    float *xd;                  /* [T, ceil(F / 32)] their block scales */
    float *mm_scratch;          /* [n_threads, mm_scratch_floats] matmul tiles of x */
    int64_t mm_scratch_floats;
    int32_t *tok_seq;           /* [T] index of the chunk each token belongs to */
    int32_t *tok_pos;           /* [T] absolute position of each token */
    int32_t *tok_id;            /* [T] token id */
    int32_t *out_rows;          /* [T] tokens whose logits are wanted, in order */

    nc_product_observer observer; /* observe_products: reported the inputs of every product, or NULL */
    void *observer_ctx;

    char description[160];
} cpu_state;

static inline cpu_state *cpu_state_of(nc_backend *b) { return (cpu_state *)b->impl; }

/* Pointer to the 64 x D tile of keys (kv = 0) or values (kv = 1) of kv head
 * `head` in layer `layer` of block `block`. */
static inline float *cpu_kv_tile(const cpu_state *st, int32_t block, int layer, int kv, int head) {
    const nc_model_config *c = &st->cfg;
    size_t tile = (size_t)NC_KV_BLOCK_TOKENS * (size_t)c->head_dim;
    size_t idx = (((size_t)layer * 2 + (size_t)kv) * (size_t)c->n_kv_head + (size_t)head) * tile;
    return st->kv + (size_t)block * st->kv_block_floats + idx;
}

/* The fp8 cache's tile (kv8 set): 64 x D e4m3 values, then 64 fp32 scales. */
static inline uint8_t *cpu_kv8_tile(const cpu_state *st, int32_t block, int layer, int kv, int head) {
    const nc_model_config *c = &st->cfg;
    size_t tile = (size_t)NC_KV_BLOCK_TOKENS * ((size_t)c->head_dim + sizeof(float));
    size_t idx = (((size_t)layer * 2 + (size_t)kv) * (size_t)c->n_kv_head + (size_t)head) * tile;
    return st->kv8 + (size_t)block * st->kv8_block_bytes + idx;
}

static inline float *cpu_kv8_scales(const cpu_state *st, uint8_t *tile) {
    return (float *)(tile + (size_t)NC_KV_BLOCK_TOKENS * (size_t)st->cfg.head_dim);
}

/* Copies the streamed matrices (layers' six, lm_head) that lie in a file
 * mapping of m->tensors into one 2 MB-page arena owned by st and repoints
 * them, as `mode` ("auto", "copy" or "map": NC_CPU_WEIGHTS, read into
 * b->env) asks (cpu_weights.c). Sets *placement to a short description.
 * Needs st->pool and the matrices set up. -1 + nc_error() when a forced
 * copy fails. */
int cpu_place_weights(cpu_state *st, const nc_model *m, const char *mode, const char **placement);

/* The forward pass (cpu_forward.c), installed as nc_cpu_backend_ops.forward. */
int cpu_forward(nc_backend *b, const nc_batch *batch, float *logits);

#endif /* NC_BACKEND_CPU_BACKEND_H */

/*
 * backend.h: the one interface between the engine and the hardware.
 *
 * A backend runs the forward pass of docs/model.md for a batch of independent
 * sequences, each contributing a chunk of consecutive tokens (a prefill
 * chunk of many, or a decode step of one) at its own position. It owns the
 * weights in its preferred form and a paged KV cache: a pool of blocks of
 * NC_KV_BLOCK_TOKENS positions each, for all layers. The engine owns the
 * block tables (which blocks hold which sequence's positions) and passes
 * them with every chunk; it never touches cache memory itself.
 *
 * Implementations: backend/cpu (reference, exact fp32) and backend/cuda.
 * Nothing outside backend/ knows which one it is talking to.
 */
#ifndef NC_BACKEND_BACKEND_H
#define NC_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../model/model.h"

/* Positions per KV block. 64 keeps block tables short and lets attention
 * kernels stream a block of keys (64 x D) as one contiguous tile. */
#define NC_KV_BLOCK_TOKENS 64

typedef enum {
    NC_LOGITS_NONE = 0, /* chunk only fills the cache (an early prefill chunk) */
    NC_LOGITS_LAST = 1, /* logits of the chunk's last position */
    NC_LOGITS_ALL = 2,  /* logits of every position (tests, `nanochat forward`) */
} nc_logits_mode;

/* One sequence's share of a forward pass. */
typedef struct {
    const int32_t *tokens;      /* [n_tokens] token ids at positions pos .. pos+n_tokens-1 */
    int32_t n_tokens;           /* >= 1 */
    int32_t pos;                /* absolute position of tokens[0]; BOS is position 0 */
    int32_t prev_token;         /* token at pos-1 (V6 smear needs its embedding); -1 when pos == 0 */
    const int32_t *block_table; /* KV blocks of this sequence: entry b holds positions
                                   [b*64, b*64+64); covers pos + n_tokens positions */
    nc_logits_mode logits;
} nc_seq_chunk;

typedef struct {
    const nc_seq_chunk *seqs;
    int32_t n_seqs;
} nc_batch;

/* How the KV cache stores keys and values (--kv-cache). */
typedef enum {
    NC_KV_CACHE_BF16 = 0, /* full precision, the default: bf16 on CUDA, fp32 on the CPU */
    NC_KV_CACHE_FP8 = 1,  /* e4m3 with one fp32 scale per token and kv head (docs/quantization.md) */
} nc_kv_cache_format;

typedef struct {
    int32_t n_kv_blocks;      /* KV pool size in blocks (0: backend picks from memory) */
    int32_t max_batch_tokens; /* largest sum of n_tokens in one forward */
    int32_t max_seqs;         /* largest n_seqs in one forward */
    int32_t n_threads;        /* CPU threads (0: all cores) */
    nc_kv_cache_format kv_cache;
    /* --deterministic: every row's logits, K/V and sampled token are the
     * same bits whatever else is in its batch, however its prompt was
     * chunked, and from run to run (docs/performance.md, Batch invariance).
     * The CPU backend is always so; CUDA switches to batch-invariant
     * kernels, at some cost in speed. */
    bool deterministic;
} nc_backend_params;

/*
 * Switches for comparisons and diagnosis (the README's table of environment
 * switches; the defaults are the fast paths). nc_backend_create reads them
 * from the environment once, with nc_backend_env_read, into b->env before
 * the backend's init; no backend reads an environment variable itself.
 * One convention for all: unset or empty keeps the default; on/off
 * switches take 0 or 1; numbers a value in their range; the others one of
 * their listed words; anything else fails backend creation with a message
 * naming the variable.
 */
typedef struct {
    bool cuda_graphs;        /* NC_CUDA_GRAPHS (1): replay decode steps from CUDA graphs */
    bool cuda_pdl;           /* NC_CUDA_PDL (1): programmatic dependent launch (sm_90) */
    bool cuda_profile;       /* NC_CUDA_PROFILE (0): per-stage GPU time of the last forward on stderr
                                at exit (eager launches) */
    bool cuda_skinny;        /* NC_CUDA_SKINNY (1): our wgmma GEMM for 2..64 rows (sm_90a; 8-bit weights:
                                every row count past one, else the mma.sync GEMM) */
    const char *cuda_gemv_q8; /* NC_CUDA_GEMV_Q8: the 8-bit batch-1 GEMV, "old" (the first kernel), "new"
                                 (the streaming one; 0.81-0.84x decode tok/s) or "tc" (the tensor-core
                                 GEMV of cuda_gemv_rows.cu with one row) */
    int cuda_gemv_rows;      /* NC_CUDA_GEMV_ROWS: the most rows of a product of 8-bit weights the
                                tensor-core GEMV takes, 1..8 (1: none, the skinny GEMM from 2 rows; 0
                                unset: 8) */
    bool cuda_verify_rows;   /* NC_CUDA_VERIFY_ROWS (1): chunks verifying drafts (NC_LOGITS_ALL, up to 16
                                positions) run as decode rows (cuda_batch.cu); 0: as prefill chunks */
    bool cuda_fp8_act;       /* NC_CUDA_FP8_ACT (0): products of fp8 weights with more than 64 rows (prefill)
                                on the fp8 tensor cores, the input rows quantised to e4m3 per row */
    bool cuda_qkv_rope;      /* NC_CUDA_QKV_ROPE (1): RoPE + append in the epilogue of the skinny GEMM's qkv
                                product (cuda_forward.cu, project_qkv); 0: the rope_append kernel after it */
    bool cuda_attn_prefetch; /* NC_CUDA_ATTN_PREFETCH (0): decode attention of one-split batches keeps the
                                next 16-key chunk's loads in flight (cuda_attn_decode.cu) */
    const char *cuda_verify_pairs; /* NC_CUDA_VERIFY_PAIRS: "auto" (pairs where they pay), "on" (every
                                      verified chunk of 2+ rows) or "off": decode attention of a verified
                                      chunk's rows in pairs, each chunk of keys loaded once for both
                                      (cuda_batch.cu) */
    int cuda_gemv_q8_rows;   /* NC_CUDA_GEMV_Q8_ROWS: rows per warp of the first 8-bit GEMV, 1, 2 or 4
                                (0 unset: 4) */
    bool cuda_persist;       /* NC_CUDA_PERSIST (0): batch-1 decode as one persistent kernel per token
                                (sm_90; else CUDA graphs) */
    int cuda_persist_bufs;   /* NC_CUDA_PERSIST_BUFS: its ring's weight slots (2..16; 0 unset: as many
                                as fit in shared memory) */
    int cuda_fa;             /* NC_CUDA_FA: 0 unset (the default kernel); 1 or 2: prefill attention's
                                wgmma kernel with 64- or 128-key steps (sm_90) */
    const char *tp_allreduce; /* NC_TP_ALLREDUCE: "auto" (small sums one-shot over peer memory) or "nccl"
                                 (cuda_tp.cu) */
    const char *cpu_weights; /* NC_CPU_WEIGHTS: "auto", "copy" or "map" (cpu_weights.c) */
    const char *cpu_kernels; /* NC_CPU_KERNELS: "auto" or a variant of cpu_kernels.h: "avx512vnni",
                                "avx512", "avxvnni", "avx2", "scalar", "avx512bf16" */
} nc_backend_env;

/* Fills *env from the environment (the defaults where a switch is unset or
 * empty); -1 + nc_error() naming the variable on a value outside its set. */
int nc_backend_env_read(nc_backend_env *env);

/* Per-row sampling settings, for backends that sample on the device. */
typedef struct {
    float temperature; /* 0: argmax (lowest index on ties) */
    int32_t top_k;     /* 0: off */
    float top_p;       /* 1: off */
    float min_p;       /* 0: off */
    uint64_t rng_state[2]; /* in/out: the row's generator state (see engine/sampler.h) */
    /* in: also return the sampled token's log-probability (backends whose
     * ops set sample_logprobs; others ignore it) */
    bool want_logprob;
    /* out, written only when want_logprob: log-probability of the sampled
     * token under the model's own distribution, the temperature-1 softmax
     * of the whole softcapped row, whatever the temperature, top-k, top-p
     * or min-p (engine/sampler.h nc_sample_logprobs) */
    float logprob;
    /* For a chunk asking NC_LOGITS_ALL (a decode row verifying drafts;
     * backends whose ops set sample_all): out, the token drawn at each of
     * its n_tokens positions into tokens[0 .. n_tokens), position i drawn
     * with the generator advanced by i draws from rng_state (so each is the
     * draw one-at-a-time decoding would make there, had the positions before
     * it been emitted), and, with want_logprob, their log-probabilities into
     * logprobs[0 .. n_tokens). rng_state is left as it came: how far the
     * row's generator moves depends on how many positions the caller keeps.
     * NULL for the other chunks. */
    int32_t *tokens;
    float *logprobs;
} nc_device_sampling;

typedef struct nc_backend nc_backend;

/* The products whose input rows a forward can report (observe_products). */
typedef enum {
    NC_PRODUCT_QKV,       /* c_q, c_k, c_v: the normed residual, [T, C] */
    NC_PRODUCT_ATTN_PROJ, /* attention's c_proj: the heads' outputs, [T, H*D] */
    NC_PRODUCT_MLP_FC,    /* mlp c_fc: the normed residual, [T, C] */
    NC_PRODUCT_MLP_PROJ,  /* mlp c_proj: relu(c_fc x)^2, [T, 4C] */
    NC_PRODUCT_LM_HEAD,   /* lm_head (layer -1): the final normed rows that asked for logits, [n, C] */
} nc_product;

/* Called during a forward with the input rows x [rows, cols] (row stride
 * ld, fp32) of one product of one layer, before the product uses them. */
typedef void (*nc_product_observer)(void *ctx, int32_t layer, nc_product product, const float *x, int64_t rows,
                                    int64_t cols, int64_t ld);

typedef struct {
    const char *name; /* "cpu", "cuda" */
    /* Prepares weights, the KV pool and scratch sized by `p`; fills
     * b->n_kv_blocks etc. with what was actually allocated. */
    int (*init)(nc_backend *b, const nc_backend_params *p);
    void (*free)(nc_backend *b);
    /* Runs the batch; writes softcapped fp32 logits for every position that
     * asked for them, in batch order, as rows of V = vocab_size floats to
     * `logits` (host memory). */
    int (*forward)(nc_backend *b, const nc_batch *batch, float *logits);
    /* Optional (NULL if unsupported): like forward, but the backend samples
     * one token on the device for every chunk that asks for NC_LOGITS_LAST,
     * so only ids cross to the host. Chunks may also ask for NC_LOGITS_NONE
     * (a mid-prompt chunk that only fills the cache: one pass over the
     * weights serves the whole step). rows[] and tokens_out[] are indexed by
     * chunk; entries of NONE chunks are left untouched. NC_LOGITS_ALL is
     * refused unless ops->sample_all (then rows[].tokens gets the ids). */
    int (*forward_sample)(nc_backend *b, const nc_batch *batch, nc_device_sampling *rows,
                          int32_t *tokens_out);
    /* forward_sample fills rows[].logprob for the rows that set
     * want_logprob, so a caller that needs only the chosen token's
     * log-probability (RL rollouts, evals, logprobs without alternatives)
     * keeps sampling on the device. */
    bool sample_logprobs;
    /* forward_sample also takes chunks asking NC_LOGITS_ALL (see
     * nc_device_sampling.tokens): speculative verification samples on the
     * device too, and only ids cross to the host. At most max_seqs sampled
     * positions per call. */
    bool sample_all;
    /* Copies the first n_tokens positions of block src into block dst, all
     * layers (used to fork a sequence: multi-sample, prefix reuse). */
    int (*copy_kv_block)(nc_backend *b, int32_t src, int32_t dst, int32_t n_tokens);
    /* Optional (NULL: the name): a human-readable description of the
     * device and how the backend uses it ("cpu: 2 threads, avx2 kernels,
     * ..." / "NVIDIA H100 ..."). Callers use nc_backend_describe(). */
    const char *(*describe)(nc_backend *b);
    /* Optional (NULL if unsupported): the device's measured copy bandwidth
     * in bytes/s (read + written), the ceiling `nanochat bench` compares
     * with; 0 on failure. Backends without it are measured with memcpy. */
    double (*copy_bandwidth)(nc_backend *b);
    /* Optional (NULL if there is nothing to prepare): readies the fast path
     * of decode steps of 1..max_rows rows ahead of time (CUDA: runs and
     * captures each batch size's graph), so that the first steps of a busy
     * server do not pay for it. Only before any sequence holds KV blocks: it
     * overwrites position 0 of the first max_rows blocks. */
    int (*prepare_decode)(nc_backend *b, int32_t max_rows);
    /* How this backend stores what every decode step streams from memory:
     * the bytes per element of a weight matrix that the checkpoint holds
     * as `dtype` (a backend may convert weights at init; 8-bit matrices
     * also stream a 4-byte scale per row, counted by the caller), and the
     * bytes one cached key or value vector (one token, one kv head: D
     * values plus any scale) takes. For front ends that count a step's
     * memory traffic against the device's bandwidth (`nanochat bench`'s
     * floor) without knowing which backend they talk to. */
    size_t (*weight_elem_bytes)(nc_backend *b, nc_dtype dtype);
    size_t (*kv_vector_bytes)(nc_backend *b);
    /* Whether a position's logits are the same bits whatever else a forward
     * computes: the sequences beside it, how its sequence is chunked, how
     * many positions its chunk has. Then verifying several positions in one
     * chunk reproduces one-at-a-time decoding exactly, and the engine
     * speculates by default (docs/speculative.md, Exactness). CPU: true
     * (docs/performance.md, Batch invariance); CUDA: false (a lone decode
     * row and a chunk take different GEMM paths). */
    bool batch_invariant;
    /* Optional (NULL if unsupported; the CPU backend has it): every later
     * forward reports the input rows of its weight products to `fn` (NULL
     * stops it), the statistics calibrated rounding of 8-bit weights is
     * computed from (quant/calibrate.h). */
    void (*observe_products)(nc_backend *b, nc_product_observer fn, void *ctx);
} nc_backend_ops;

/* The most GPUs one device name selects (one engine over them: tensor
 * parallel). */
#define NC_BACKEND_MAX_GPUS 16

struct nc_backend {
    const nc_backend_ops *ops;
    const nc_model *model;      /* not owned; must outlive the backend */
    int32_t gpus[NC_BACKEND_MAX_GPUS]; /* the CUDA devices its name selected (set before init) */
    int32_t n_gpus;             /* 0 for the CPU */
    int32_t n_kv_blocks;        /* actual pool size */
    int32_t max_batch_tokens;
    int32_t max_seqs;
    bool deterministic;         /* as requested in the parameters (the CPU backend is always so) */
    nc_backend_env env;         /* the switches, read before init */
    void *impl;                 /* backend-private state */
};

/* A device name, parsed: "cpu"; "auto"; "cuda" or "cuda:N" (GPU N, 0 by
 * default); "cuda:N+M+..." (one engine over those GPUs, tensor parallel
 * over NCCL: docs/multi-device.md). */
typedef struct {
    char kind[8];                      /* "cpu", "cuda" or "auto" */
    int32_t gpus[NC_BACKEND_MAX_GPUS]; /* cuda: the GPUs, in rank order */
    int32_t n_gpus;                    /* cuda: >= 1; else 0 */
} nc_device_name;

/* -1 + nc_error() naming what is wrong with `name`. */
int nc_device_name_parse(const char *name, nc_device_name *out);

/*
 * Creates a backend for `model` on `device` (a name as above; "auto": cuda
 * on GPU 0 when a usable GPU is present, else cpu). Fails with a clear
 * message naming the device when it is unavailable (no such GPU, a GPU
 * older than sm_80, out of memory, CUDA or tensor-parallel support not
 * compiled in).
 */
nc_backend *nc_backend_create(const char *device, const nc_model *model, const nc_backend_params *p);
void nc_backend_free(nc_backend *b);

/* What the backend says about itself (its describe op), else its name:
 * for logs, /health, the C API's engine info. Valid while the backend lives. */
const char *nc_backend_describe(nc_backend *b);

/* Whether a CUDA device usable by this build is present (quiet probe). */
bool nc_backend_cuda_available(void);

/* How many CUDA devices this process sees (0 without CUDA support). */
int nc_backend_cuda_count(void);

#endif /* NC_BACKEND_BACKEND_H */

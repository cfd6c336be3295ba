/*
 * cpu_backend.c: the CPU backend's setup: weights in place (f16 converted
 * once), rotary tables, the paged KV pool, scratch buffers and the thread
 * pool, all sized at init so the forward pass never allocates.
 *
 * Rotary tables follow nanochat's GPT._precompute_rotary_embeddings:
 * inv_freq = 1 / base^(arange(0, D, 2) / D) in fp32, theta = pos * inv_freq
 * in fp32, for 10 * sequence_len positions; V1 rounds cos/sin to bf16 even
 * on the CPU (docs/model.md, RoPE), later generations keep them fp32.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../../util/common.h"
#include "../../util/numeric.h"
#include "cpu_backend.h"

/* Defaults for zero params (backend.h): a chat-sized batch and a pool of
 * four full-length sequences. */
#define DEFAULT_MAX_BATCH_TOKENS 512
#define DEFAULT_MAX_SEQS 16
#define DEFAULT_POOL_SEQUENCES 4

static const char *forced_isa = NULL;

int nc_cpu_backend_force_isa(const char *isa) {
    if (!cpu_kernels_select(isa)) return nc_fail("this CPU cannot run the '%s' kernels", isa);
    forced_isa = isa;
    return 0;
}

static void *own(cpu_state *st, void *buffer) {
    st->owned = nc_xrealloc(st->owned, (size_t)(st->n_owned + 1) * sizeof(void *));
    st->owned[st->n_owned++] = buffer;
    return buffer;
}

/* Large allocation that reports failure instead of dying. */
static void *alloc_floats(cpu_state *st, size_t count, const char *what) {
    if (count > SIZE_MAX / sizeof(float)) {
        nc_fail("cpu backend: %s is too large", what);
        return NULL;
    }
    void *p = malloc(count ? count * sizeof(float) : 1);
    if (!p) {
        nc_fail("cpu backend: out of memory allocating %s (%zu MB)", what, count * sizeof(float) >> 20);
        return NULL;
    }
    return own(st, p);
}

/* `scale`: the per-row scales of an 8-bit matrix (NULL for float ones). */
static int matrix_from_tensor(cpu_state *st, const nc_tensor *t, const nc_tensor *scale, const char *what,
                              cpu_matrix *m) {
    if (!t) return nc_fail("cpu backend: model has no %s tensor", what);
    if (t->ndim != 2) return nc_fail("cpu backend: %s (%s) is not a matrix", what, t->name);
    m->rows = t->shape[0];
    m->cols = t->shape[1];
    m->scale = NULL;
    switch (t->dtype) {
    case NC_DTYPE_I8:
    case NC_DTYPE_F8_E4M3:
        if (!scale || scale->dtype != NC_DTYPE_F32 || nc_tensor_numel(scale) != m->rows)
            return nc_fail("cpu backend: %s (%s) is 8-bit without f32 scales for its %lld rows", what, t->name,
                           (long long)m->rows);
        m->data = t->data;
        m->dtype = t->dtype;
        m->scale = scale->data;
        return 0;
    case NC_DTYPE_BF16:
    case NC_DTYPE_F32:
        m->data = t->data;
        m->dtype = t->dtype;
        return 0;
    case NC_DTYPE_F16: {
        size_t n = (size_t)nc_tensor_numel(t);
        float *f = alloc_floats(st, n, t->name);
        if (!f) return -1;
        const uint16_t *src = t->data;
        for (size_t i = 0; i < n; i++) f[i] = nc_f16_to_f32(src[i]);
        m->data = f;
        m->dtype = NC_DTYPE_F32;
        return 0;
    }
    default:
        return nc_fail("cpu backend: %s (%s) has dtype %s; expected bf16, f16, f32, i8 or f8_e4m3", what, t->name,
                       nc_dtype_name(t->dtype));
    }
}

/* A small float tensor copied to fp32 (gates), or NULL on a bad dtype. */
static float *copy_f32(cpu_state *st, const nc_tensor *t) {
    if (t->dtype != NC_DTYPE_F32 && t->dtype != NC_DTYPE_BF16 && t->dtype != NC_DTYPE_F16) {
        nc_fail("cpu backend: %s has dtype %s; expected a float type", t->name, nc_dtype_name(t->dtype));
        return NULL;
    }
    int64_t n = nc_tensor_numel(t);
    float *f = alloc_floats(st, (size_t)n, t->name);
    if (f)
        for (int64_t i = 0; i < n; i++) f[i] = nc_tensor_get_f32(t, i);
    return f;
}

static int embedding_ok(const nc_tensor *t, const char *what) {
    if (t->dtype != NC_DTYPE_F32 && t->dtype != NC_DTYPE_BF16 && t->dtype != NC_DTYPE_F16)
        return nc_fail("cpu backend: %s (%s) has dtype %s; expected bf16, f16 or f32", what, t->name,
                       nc_dtype_name(t->dtype));
    return 0;
}

static int setup_weights(cpu_state *st, const nc_model *m) {
    const nc_model_config *c = &st->cfg;
    if (!m->wte) return nc_fail("cpu backend: model has no wte tensor");
    if (embedding_ok(m->wte, "wte")) return -1;
    st->wte = m->wte;
    if (matrix_from_tensor(st, m->lm_head, m->lm_head_scale, "lm_head", &st->lm_head)) return -1;
    st->layers = own(st, nc_xcalloc((size_t)c->n_layer, sizeof(cpu_layer)));
    st->max_window = 0;
    for (int l = 0; l < c->n_layer; l++) {
        const nc_layer_weights *w = &m->layers[l];
        cpu_layer *cl = &st->layers[l];
        const nc_layer_scales *sc = &w->scale;
        if (matrix_from_tensor(st, w->c_q, sc->c_q, "c_q", &cl->c_q) ||
            matrix_from_tensor(st, w->c_k, sc->c_k, "c_k", &cl->c_k) ||
            matrix_from_tensor(st, w->c_v, sc->c_v, "c_v", &cl->c_v) ||
            matrix_from_tensor(st, w->attn_proj, sc->attn_proj, "attn.c_proj", &cl->attn_proj) ||
            matrix_from_tensor(st, w->mlp_fc, sc->mlp_fc, "mlp.c_fc", &cl->mlp_fc) ||
            matrix_from_tensor(st, w->mlp_proj, sc->mlp_proj, "mlp.c_proj", &cl->mlp_proj))
            return nc_fail_context("layer %d", l);
        if (c->has_value_embeds && nc_config_has_value_embed(c, l)) {
            if (!w->value_embed || !w->ve_gate)
                return nc_fail("cpu backend: layer %d lacks its value embedding or gate", l);
            if (embedding_ok(w->value_embed, "value_embed")) return -1;
            cl->value_embed = w->value_embed;
            if (!(cl->ve_gate = copy_f32(st, w->ve_gate))) return -1;
        }
        int window = nc_config_window(c, l);
        cl->window = window < 0 ? INT32_MAX : window;
        st->max_window = NC_MAX(st->max_window, cl->window);
    }
    if (c->has_smear) {
        if (!m->smear_gate) return nc_fail("cpu backend: V6 model without smear_gate");
        if (!(st->smear_gate = copy_f32(st, m->smear_gate))) return -1;
    }
    return 0;
}

static int setup_rope(cpu_state *st) {
    const nc_model_config *c = &st->cfg;
    int half = c->head_dim / 2;
    st->rope_len = 10 * (int64_t)c->sequence_len;
    size_t n = (size_t)st->rope_len * (size_t)half;
    if (!(st->rope_cos = alloc_floats(st, n, "rotary table")) ||
        !(st->rope_sin = alloc_floats(st, n, "rotary table")))
        return -1;
    float *inv_freq = nc_xmalloc((size_t)half * sizeof(float));
    for (int j = 0; j < half; j++)
        inv_freq[j] = 1.0f / powf(c->rope_base, (float)(2 * j) / (float)c->head_dim);
    for (int64_t p = 0; p < st->rope_len; p++) {
        for (int j = 0; j < half; j++) {
            float theta = (float)p * inv_freq[j];
            /* cos/sin in double, rounded once: PyTorch's fp32 cos is within 1 ulp of this */
            float cs = (float)cos((double)theta), sn = (float)sin((double)theta);
            if (c->rope_tables_bf16) {
                cs = nc_round_bf16(cs);
                sn = nc_round_bf16(sn);
            }
            st->rope_cos[p * half + j] = cs;
            st->rope_sin[p * half + j] = sn;
        }
    }
    free(inv_freq);
    return 0;
}

static int setup_buffers(cpu_state *st, int64_t T) {
    const nc_model_config *c = &st->cfg;
    size_t C = (size_t)c->n_embd, QD = (size_t)c->n_head * c->head_dim;
    size_t KD = (size_t)c->n_kv_head * c->head_dim, F = (size_t)c->mlp_hidden;
    float **bufs[] = {&st->x, &st->x0, &st->x_backout, &st->h, &st->tmp};
    for (size_t i = 0; i < NC_ARRAY_LEN(bufs); i++)
        if (!(*bufs[i] = alloc_floats(st, (size_t)T * C, "activations"))) return -1;
    if (!(st->q = alloc_floats(st, (size_t)T * QD, "activations")) ||
        !(st->att = alloc_floats(st, (size_t)T * QD, "activations")) ||
        !(st->k = alloc_floats(st, (size_t)T * KD, "activations")) ||
        !(st->v = alloc_floats(st, (size_t)T * KD, "activations")) ||
        !(st->fc = alloc_floats(st, (size_t)T * F, "activations")) ||
        !(st->prev_embed = alloc_floats(st, C, "activations")) ||
        !(st->scores = alloc_floats(st, (size_t)st->n_threads * (size_t)st->rope_len, "attention scores")))
        return -1;
    if (st->q8) { /* the widest input of a layer matrix is F (mlp.c_proj) */
        size_t blocks = (F + CPU_Q8_BLOCK - 1) / CPU_Q8_BLOCK;
        if (!(st->xd = alloc_floats(st, (size_t)T * blocks, "activation scales")) ||
            !(st->xq = alloc_floats(st, ((size_t)T * F + 3) / 4, "q8 activations")))
            return -1;
    }
    st->mm_scratch_floats = cpu_matmul_scratch_floats((int64_t)NC_MAX(NC_MAX(C, QD), F));
    if (!(st->mm_scratch = alloc_floats(st, (size_t)st->n_threads * (size_t)st->mm_scratch_floats, "matmul scratch")))
        return -1;
    st->tok_seq = own(st, nc_xmalloc((size_t)T * sizeof(int32_t)));
    st->tok_pos = own(st, nc_xmalloc((size_t)T * sizeof(int32_t)));
    st->tok_id = own(st, nc_xmalloc((size_t)T * sizeof(int32_t)));
    st->out_rows = own(st, nc_xmalloc((size_t)T * sizeof(int32_t)));
    return 0;
}

/* The KV pool: fp32, or fp8 tiles with their scales (cpu_backend.h).
 * Pages are touched only when used. */
static int setup_kv(cpu_state *st, int32_t n_blocks, nc_kv_cache_format format) {
    const nc_model_config *c = &st->cfg;
    size_t tiles = (size_t)c->n_layer * 2 * (size_t)c->n_kv_head;
    size_t per_block = format == NC_KV_CACHE_FP8
                           ? tiles * NC_KV_BLOCK_TOKENS * ((size_t)c->head_dim + sizeof(float))
                           : tiles * NC_KV_BLOCK_TOKENS * (size_t)c->head_dim * sizeof(float);
    size_t bytes = per_block * (size_t)n_blocks;
    if (per_block == 0 || bytes / per_block != (size_t)n_blocks)
        return nc_fail("cpu backend: KV pool of %d blocks is too large", n_blocks);
    void *pool = malloc(bytes);
    if (!pool)
        return nc_fail("cpu backend: out of memory for a KV pool of %d blocks (%zu MB); ask for fewer", n_blocks,
                       bytes >> 20);
    if (format == NC_KV_CACHE_FP8) {
        st->kv8 = pool;
        st->kv8_block_bytes = per_block;
        /* attention's per-thread copy of a tile in fp32, and its weights */
        size_t scratch = (size_t)st->n_threads * (NC_KV_BLOCK_TOKENS * ((size_t)c->head_dim + 1));
        if (!(st->kv_tile = alloc_floats(st, scratch, "attention scratch"))) return -1;
    } else {
        st->kv = pool;
        st->kv_block_floats = per_block / sizeof(float);
    }
    return 0;
}

static void cpu_free(nc_backend *b) {
    cpu_state *st = cpu_state_of(b);
    if (!st) return;
    nc_threadpool_free(st->pool);
    for (int i = 0; i < st->n_owned; i++) free(st->owned[i]);
    free(st->owned);
    free(st->kv);
    free(st->kv8);
    free(st);
    b->impl = NULL;
}

static int cpu_init(nc_backend *b, const nc_backend_params *p) {
    const nc_model *m = b->model;
    const nc_model_config *c = &m->cfg;
    if (p->n_kv_blocks < 0 || p->max_batch_tokens < 0 || p->max_seqs < 0 || p->n_threads < 0)
        return nc_fail("cpu backend: negative size in backend parameters");
    if (c->generation == NC_GEN_UNKNOWN)
        return nc_fail("cpu backend: unknown model generation");
    if (c->head_dim <= 0 || c->head_dim % 2 || c->n_kv_head <= 0 || c->n_head % c->n_kv_head ||
        c->n_head * c->head_dim != c->n_embd || c->sequence_len <= 0 || c->vocab_size <= 0 ||
        c->vocab_size > c->padded_vocab)
        return nc_fail("cpu backend: inconsistent model sizes (C=%d H=%d Hkv=%d D=%d V=%d Vp=%d)",
                       c->n_embd, c->n_head, c->n_kv_head, c->head_dim, c->vocab_size, c->padded_vocab);

    /* NC_CPU_KERNELS picks the kernels (benchmarks, tests) */
    const char *isa = forced_isa ? forced_isa : b->env.cpu_kernels;
    const cpu_kernels *kern = cpu_kernels_select(isa);
    if (!kern) {
        char names[96] = "";
        for (int i = 0; cpu_kernel_variants[i]; i++)
            if (cpu_kernels_supported(cpu_kernel_variants[i]))
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s, ", cpu_kernel_variants[i]->name);
        return nc_fail("cpu backend: NC_CPU_KERNELS=%s is not available here (%sauto)", isa, names);
    }

    if (p->kv_cache != NC_KV_CACHE_BF16 && p->kv_cache != NC_KV_CACHE_FP8)
        return nc_fail("cpu backend: unknown KV cache format %d", (int)p->kv_cache);

    cpu_state *st = nc_xcalloc(1, sizeof *st);
    b->impl = st;
    st->cfg = *c;
    st->kern = kern;
    st->q8 = m->weights == NC_WEIGHTS_INT8 && kern->matmul_i8_q8;

    b->max_batch_tokens = p->max_batch_tokens ? p->max_batch_tokens : DEFAULT_MAX_BATCH_TOKENS;
    b->max_seqs = p->max_seqs ? p->max_seqs : DEFAULT_MAX_SEQS;
    int32_t blocks_per_seq = (c->sequence_len + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
    b->n_kv_blocks = p->n_kv_blocks ? p->n_kv_blocks : DEFAULT_POOL_SEQUENCES * blocks_per_seq;

    st->pool = nc_threadpool_new(p->n_threads);
    if (!st->pool) goto fail;
    st->n_threads = nc_threadpool_size(st->pool);
    st->n_tasks = st->n_threads > 1 ? 4 * st->n_threads : 1;

    const char *placement = "";
    if (setup_weights(st, m) || cpu_place_weights(st, m, b->env.cpu_weights, &placement) || setup_rope(st) ||
        setup_buffers(st, b->max_batch_tokens))
        goto fail;

    if (setup_kv(st, b->n_kv_blocks, p->kv_cache)) goto fail;
    snprintf(st->description, sizeof st->description, "cpu: %d thread%s, %s kernels, %s%s weights %s%s",
             st->n_threads, st->n_threads == 1 ? "" : "s", st->kern->name,
             m->weights == NC_WEIGHTS_FLOAT ? "float" : nc_weight_format_name(m->weights),
             st->q8 ? " (q8 activations)" : "", placement, st->kv8 ? ", fp8 KV cache" : "");
    return 0;
fail:
    cpu_free(b);
    return -1;
}

static int cpu_copy_kv_block(nc_backend *b, int32_t src, int32_t dst, int32_t n_tokens) {
    cpu_state *st = cpu_state_of(b);
    if (src < 0 || src >= b->n_kv_blocks || dst < 0 || dst >= b->n_kv_blocks)
        return nc_fail("copy_kv_block: block %d -> %d outside the KV pool [0, %d)", src, dst, b->n_kv_blocks);
    if (n_tokens < 0 || n_tokens > NC_KV_BLOCK_TOKENS)
        return nc_fail("copy_kv_block: %d tokens; a block holds 0..%d", n_tokens, NC_KV_BLOCK_TOKENS);
    if (src == dst || n_tokens == 0) return 0;
    size_t D = (size_t)st->cfg.head_dim, n = (size_t)n_tokens;
    for (int l = 0; l < st->cfg.n_layer; l++)
        for (int kv = 0; kv < 2; kv++)
            for (int h = 0; h < st->cfg.n_kv_head; h++) {
                if (st->kv) {
                    memcpy(cpu_kv_tile(st, dst, l, kv, h), cpu_kv_tile(st, src, l, kv, h), n * D * sizeof(float));
                    continue;
                }
                uint8_t *from = cpu_kv8_tile(st, src, l, kv, h), *to = cpu_kv8_tile(st, dst, l, kv, h);
                memcpy(to, from, n * D);
                memcpy(cpu_kv8_scales(st, to), cpu_kv8_scales(st, from), n * sizeof(float));
            }
    return 0;
}

static const char *cpu_describe(nc_backend *b) { return cpu_state_of(b)->description; }

/* Matrices are read in place (8-bit ones too), f16 ones as the fp32
 * copies made at init (matrix_from_tensor); the KV cache is fp32, or e4m3
 * with one fp32 scale per vector (--kv-cache fp8). */
static size_t cpu_weight_elem_bytes(nc_backend *b, nc_dtype dtype) {
    return dtype == NC_DTYPE_F16 ? sizeof(float) : nc_dtype_size(dtype);
}

static size_t cpu_kv_vector_bytes(nc_backend *b) {
    const cpu_state *st = cpu_state_of(b);
    size_t D = (size_t)st->cfg.head_dim;
    return st->kv8 ? D + sizeof(float) : D * sizeof(float);
}

static void cpu_observe_products(nc_backend *b, nc_product_observer fn, void *ctx) {
    cpu_state *st = cpu_state_of(b);
    st->observer = fn;
    st->observer_ctx = ctx;
}

const nc_backend_ops nc_cpu_backend_ops = {
    .name = "cpu",
    .init = cpu_init,
    .free = cpu_free,
    .forward = cpu_forward,
    .forward_sample = NULL,
    .copy_kv_block = cpu_copy_kv_block,
    .describe = cpu_describe,
    .weight_elem_bytes = cpu_weight_elem_bytes,
    .kv_vector_bytes = cpu_kv_vector_bytes,
    .batch_invariant = true,
    .observe_products = cpu_observe_products,
};

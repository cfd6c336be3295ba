/*
 * fuzz_formats.c: libFuzzer target over the checkpoint readers: the ZIP
 * reader + unpickler as a torch .pt (torch_ckpt.c, zip.c, pickle.c), the
 * unpickler alone, the safetensors header parser, and the meta_*.json /
 * config.json parsers (loader.c). Seeds: tests/fuzz/corpus/formats/ (made by
 * tools/make_checkpoint_fixtures.py).
 *
 * The first byte picks the reader; the rest is the file. Beyond "no crash,
 * no leak, no UB" (ASan/UBSan), every tensor a reader accepts must lie
 * wholly inside the input or in memory the set owns: all its bytes are read
 * here, so a lying header that slipped through shows up as an ASan report.
 * Accepted .pt and safetensors files are also offered to model
 * construction (safetensors: 8-bit matrices, their scales and the format
 * metadata included; seed safetensors_int8, tools/make_quant_fixtures.py).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/pickle.h"
#include "formats/safetensors.h"
#include "formats/torch_ckpt.h"
#include "model/loader.h"
#include "model/model.h"

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

static volatile uint64_t sink;

static void touch_tensors(const nc_tensor_set *s) {
    for (int i = 0; i < nc_tensor_set_count(s); i++) {
        const nc_tensor *t = nc_tensor_set_at(s, i);
        REQUIRE(t->ndim >= 0 && t->ndim <= NC_MAX_DIMS);
        REQUIRE(t->nbytes == (size_t)nc_tensor_numel(t) * nc_dtype_size(t->dtype));
        const uint8_t *p = t->data;
        uint64_t h = 0;
        for (size_t k = 0; k < t->nbytes; k++) h = h * 31 + p[k];
        sink += h;
    }
}

/* Walks a pickle tree a few levels deep (trees may be cyclic). */
static void walk(const nc_pickle_obj *o, int depth) {
    char buf[64];
    nc_pickle_describe(o, buf, sizeof buf);
    sink += (uint64_t)strlen(buf);
    if (!o || depth > 4) return;
    size_t n;
    const nc_pickle_obj *const *kv = nc_pickle_pairs(o, &n);
    for (size_t i = 0; kv && i < n && i < 16; i++) {
        walk(kv[2 * i], depth + 1);
        walk(kv[2 * i + 1], depth + 1);
    }
    if (o->kind == NC_PK_TUPLE || o->kind == NC_PK_LIST)
        for (size_t i = 0; i < o->n && i < 16; i++) walk(o->u.items[i], depth + 1);
    if (o->kind == NC_PK_STR || o->kind == NC_PK_BYTES) sink += o->n ? (uint8_t)o->u.s[o->n - 1] : 0;
    if (o->kind == NC_PK_OBJECT) {
        walk(o->u.object.callable, depth + 1);
        walk(o->u.object.args, depth + 1);
        walk(o->u.object.state, depth + 1);
    }
    if (o->kind == NC_PK_PERSID) walk(o->u.persid.pid, depth + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const uint8_t *d = data + 1;
    size_t n = size - 1;
    switch (data[0] % 5) {
    case 0: {
        nc_tensor_set *s = nc_tensor_set_new();
        if (nc_torch_read(d, n, s) == 0) {
            touch_tensors(s);
            const nc_tensor *wte = nc_tensor_set_find(s, "transformer.wte.weight");
            if (wte && wte->ndim == 2 && wte->shape[1] > 0 && wte->shape[1] <= 4096 && wte->shape[0] > 0 &&
                wte->shape[0] <= (1 << 20)) {
                int C = (int)wte->shape[1];
                nc_model_config sizes = {.n_layer = 2, .n_embd = C, .n_head = C % 2 ? 1 : 2, .n_kv_head = 1,
                                         .vocab_size = (int)wte->shape[0], .sequence_len = 256};
                nc_model *m = nc_model_from_tensors(s, &sizes, "fuzz", "fuzz");
                if (m) {
                    for (int l = 0; l < m->cfg.n_layer; l++) REQUIRE(nc_config_window(&m->cfg, l) > 0);
                    REQUIRE(nc_config_param_count(&m->cfg) > 0);
                    nc_model_free(m);
                    s = NULL;
                }
            }
        }
        nc_tensor_set_free(s);
        break;
    }
    case 1: {
        nc_pickle *p = nc_pickle_load(d, n);
        if (p) {
            walk(nc_pickle_root(p), 0);
            nc_pickle_free(p);
        }
        break;
    }
    case 2: {
        nc_tensor_set *s = nc_tensor_set_new();
        if (nc_safetensors_read(d, n, s, NULL) == 0) {
            touch_tensors(s);
            const nc_tensor *wte = nc_tensor_set_find(s, "transformer.wte.weight");
            if (wte && wte->ndim == 2 && wte->shape[1] > 0 && wte->shape[1] <= 4096 && wte->shape[0] > 0 &&
                wte->shape[0] <= (1 << 20)) {
                int C = (int)wte->shape[1], L = 0;
                char name[64];
                for (; L < 4; L++) {
                    snprintf(name, sizeof name, "transformer.h.%d.attn.c_q.weight", L);
                    if (!nc_tensor_set_find(s, name)) break;
                }
                nc_model_config sizes = {.n_layer = L ? L : 1, .n_embd = C, .n_head = C % 4 ? 1 : 2, .n_kv_head = 1,
                                         .vocab_size = (int)wte->shape[0], .sequence_len = 64};
                nc_model *m = nc_model_from_tensors(s, &sizes, "fuzz", "fuzz");
                if (m) {
                    for (int l = 0; l < m->cfg.n_layer; l++)
                        REQUIRE((m->weights == NC_WEIGHTS_FLOAT) == (m->layers[l].scale.c_q == NULL));
                    REQUIRE(m->lm_head_scale == NULL || m->lm_head_scale->nbytes == 4 * (size_t)m->lm_head->shape[0]);
                    nc_model_free(m);
                    s = NULL;
                }
            }
        }
        nc_tensor_set_free(s);
        break;
    }
    case 3:
    case 4: {
        nc_model_config c;
        int rc = data[0] % 5 == 3 ? nc_config_parse_meta((const char *)d, n, "fuzz", &c)
                                  : nc_config_parse_hf((const char *)d, n, "fuzz", &c);
        if (rc == 0) {
            REQUIRE(c.n_layer > 0 && c.n_embd > 0 && c.n_head > 0 && c.n_kv_head > 0);
            REQUIRE(c.vocab_size > 0 && c.sequence_len > 0);
            REQUIRE(memchr(c.window_pattern, 0, sizeof c.window_pattern) != NULL);
        }
        break;
    }
    }
    return 0;
}

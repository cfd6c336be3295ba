/*
 * loader.c: nc_model_load (loader.h): located files -> sizes -> tensors ->
 * nc_model.
 *
 * nanochat checkpoints: sizes from meta_<step>.json's "model_config"
 * (nanochat's GPTConfig as written by checkpoint_manager.save_checkpoint),
 * tensors from model_<step>.pt (torch_ckpt.h).
 * Hugging Face copies (transformers' `nanochat` model type, V1 only): sizes
 * from config.json, tensors from safetensors, renamed to nanochat's names so
 * the rest of the engine sees one model. The transformers port's numerics
 * (rms_norm_eps 1e-6, fp32 rotary tables) are deliberately not adopted: the
 * engine follows nanochat (docs/model.md, RMSNorm), so rms_norm_eps is ignored; a config
 * whose rope theta, softcap or MLP width differ from nanochat V1 is refused.
 * `nanochat quantize` output: sizes from its meta.json (nanochat's meta
 * format), tensors from model.safetensors under nanochat's own names, 8-bit
 * matrices and their scales checked by nc_model_from_tensors.
 */
#include "loader.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "../formats/safetensors.h"
#include "../formats/torch_ckpt.h"
#include "../util/common.h"
#include "../util/mmap_file.h"

#define MAX_CONFIG_BYTES ((size_t)16 << 20)

/* An integer member in 1..INT_MAX; `required` decides whether absence is an error. */
static int json_int(const cJSON *obj, const char *key, bool required, int *out, const char *file) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v) return required ? nc_fail("%s: missing \"%s\"", file, key) : 1;
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    if (!(d >= 1 && d <= 2147483647.0) || d != (double)(int)d)
        return nc_fail("%s: \"%s\" must be a positive integer", file, key);
    *out = (int)d;
    return 0;
}

static cJSON *parse_object(const char *text, size_t len, const char *file) {
    cJSON *j = cJSON_ParseWithLength(text, len);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        nc_fail("%s is not a JSON object", file);
        return NULL;
    }
    return j;
}

/* meta_<step>.json: {"step": ..., "model_config": {"sequence_len", "vocab_size",
 * "n_layer", "n_head", "n_kv_head", "n_embd", ["window_pattern"]}, ...} */
static int parse_meta(const cJSON *j, const char *file, nc_model_config *c) {
    memset(c, 0, sizeof *c);
    const cJSON *mc = cJSON_GetObjectItemCaseSensitive(j, "model_config");
    if (!cJSON_IsObject(mc)) return nc_fail("%s: no \"model_config\" object (not a nanochat meta file?)", file);
    if (json_int(mc, "sequence_len", true, &c->sequence_len, file) ||
        json_int(mc, "vocab_size", true, &c->vocab_size, file) || json_int(mc, "n_layer", true, &c->n_layer, file) ||
        json_int(mc, "n_head", true, &c->n_head, file) || json_int(mc, "n_kv_head", true, &c->n_kv_head, file) ||
        json_int(mc, "n_embd", true, &c->n_embd, file))
        return -1;
    const cJSON *wp = cJSON_GetObjectItemCaseSensitive(mc, "window_pattern");
    if (wp && !cJSON_IsNull(wp)) {
        if (!cJSON_IsString(wp) || strlen(wp->valuestring) >= sizeof c->window_pattern || !wp->valuestring[0])
            return nc_fail("%s: \"window_pattern\" must be a short string such as \"SSSL\"", file);
        snprintf(c->window_pattern, sizeof c->window_pattern, "%s", wp->valuestring);
    }
    return 0;
}

static bool near(double a, double b) { return a > b - 1e-6 * b && a < b + 1e-6 * b; }

/* config.json of transformers' NanoChatConfig. */
static int parse_hf(const cJSON *j, const char *file, nc_model_config *c) {
    memset(c, 0, sizeof *c);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    if (!cJSON_IsString(mt) || strcmp(mt->valuestring, "nanochat") != 0)
        return nc_fail("%s: model_type is %s%s%s, not \"nanochat\"", file, cJSON_IsString(mt) ? "\"" : "",
                       cJSON_IsString(mt) ? mt->valuestring : "missing", cJSON_IsString(mt) ? "\"" : "");
    int inter = 0, head_dim = 0;
    if (json_int(j, "hidden_size", true, &c->n_embd, file) ||
        json_int(j, "num_hidden_layers", true, &c->n_layer, file) ||
        json_int(j, "num_attention_heads", true, &c->n_head, file) ||
        json_int(j, "max_position_embeddings", true, &c->sequence_len, file) ||
        json_int(j, "vocab_size", true, &c->vocab_size, file) ||
        json_int(j, "intermediate_size", true, &inter, file))
        return -1;
    /* transformers' documented default: as many kv heads as heads */
    int r = json_int(j, "num_key_value_heads", false, &c->n_kv_head, file);
    if (r < 0) return -1;
    if (r > 0) c->n_kv_head = c->n_head;
    if ((r = json_int(j, "head_dim", false, &head_dim, file)) < 0) return -1;
    if (r == 0 && head_dim * c->n_head != c->n_embd)
        return nc_fail("%s: head_dim %d x %d heads != hidden_size %d (nanochat has D = C / H)", file, head_dim,
                       c->n_head, c->n_embd);
    if ((int64_t)inter != 4 * (int64_t)c->n_embd)
        return nc_fail("%s: intermediate_size %d is not 4 x hidden_size %d as in nanochat", file, inter, c->n_embd);
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(j, "rope_parameters");
    const cJSON *theta = cJSON_GetObjectItemCaseSensitive(rp ? rp : j, "rope_theta");
    if (theta && (!cJSON_IsNumber(theta) || !near(theta->valuedouble, 10000.0)))
        return nc_fail("%s: rope_theta must be 10000 (nanochat V1)", file);
    const cJSON *rt = rp ? cJSON_GetObjectItemCaseSensitive(rp, "rope_type") : NULL;
    if (rt && (!cJSON_IsString(rt) || strcmp(rt->valuestring, "default")))
        return nc_fail("%s: rope_type must be \"default\"", file);
    const cJSON *cap = cJSON_GetObjectItemCaseSensitive(j, "final_logit_softcapping");
    if (cap && (!cJSON_IsNumber(cap) || !near(cap->valuedouble, 15.0)))
        return nc_fail("%s: final_logit_softcapping must be 15 (nanochat V1)", file);
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "relu2")))
        return nc_fail("%s: hidden_act must be \"relu2\"", file);
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(j, "tie_word_embeddings");
    if (cJSON_IsTrue(tie)) return nc_fail("%s: tie_word_embeddings is true; nanochat never ties lm_head", file);
    const cJSON *bias = cJSON_GetObjectItemCaseSensitive(j, "attention_bias");
    if (cJSON_IsTrue(bias)) return nc_fail("%s: attention_bias is true; nanochat has no biases", file);
    c->generation = NC_GEN_V1;
    return 0;
}

int nc_config_parse_meta(const char *json, size_t len, const char *file, nc_model_config *sizes) {
    cJSON *j = parse_object(json, len, file);
    int rc = j ? parse_meta(j, file, sizes) : -1;
    cJSON_Delete(j);
    return rc;
}

int nc_config_parse_hf(const char *json, size_t len, const char *file, nc_model_config *sizes) {
    cJSON *j = parse_object(json, len, file);
    int rc = j ? parse_hf(j, file, sizes) : -1;
    cJSON_Delete(j);
    return rc;
}

/* transformers' names -> nanochat's (docs/formats.md, Hugging Face copies). Unknown names pass through
 * unchanged, so the model check reports them as unexpected. */
static void hf_rename(const char *name, char *out, size_t cap) {
    static const struct {
        const char *hf, *nano;
    } per_layer[] = {{"self_attn.q_proj.weight", "attn.c_q.weight"}, {"self_attn.k_proj.weight", "attn.c_k.weight"},
                     {"self_attn.v_proj.weight", "attn.c_v.weight"}, {"self_attn.o_proj.weight", "attn.c_proj.weight"},
                     {"mlp.fc1.weight", "mlp.c_fc.weight"},           {"mlp.fc2.weight", "mlp.c_proj.weight"}};
    if (!strcmp(name, "model.embed_tokens.weight")) {
        snprintf(out, cap, "transformer.wte.weight");
        return;
    }
    int layer, used = 0;
    if (sscanf(name, "model.layers.%d.%n", &layer, &used) == 1 && used > 0 && layer >= 0) {
        for (size_t i = 0; i < NC_ARRAY_LEN(per_layer); i++)
            if (!strcmp(name + used, per_layer[i].hf)) {
                snprintf(out, cap, "transformer.h.%d.%s", layer, per_layer[i].nano);
                return;
            }
    }
    snprintf(out, cap, "%s", name);
}

static nc_model *load_located(const nc_checkpoint_location *loc) {
    size_t len;
    char *text = nc_read_file(loc->config_file, MAX_CONFIG_BYTES, &len);
    if (!text) return NULL;
    nc_model_config sizes;
    bool hf = !strcmp(loc->format, "huggingface"), quantized = !strcmp(loc->format, "nanochat-safetensors");
    int rc = hf ? nc_config_parse_hf(text, len, loc->config_file, &sizes)
                : nc_config_parse_meta(text, len, loc->config_file, &sizes);
    free(text);
    if (rc) return NULL;

    nc_tensor_set *ts = NULL;
    char index[4096] = "";
    if (quantized) {
        ts = nc_tensor_set_new();
        if (nc_safetensors_load(loc->model_file, ts, NULL)) {
            nc_tensor_set_free(ts);
            ts = NULL;
        }
    } else if (!hf) {
        ts = nc_torch_load(loc->model_file);
    } else {
        ts = nc_tensor_set_new();
        const char *slash = strrchr(loc->model_file, '/');
        const char *base = slash ? slash + 1 : loc->model_file;
        if (!strcmp(base, "model.safetensors")) {
            rc = nc_safetensors_load(loc->model_file, ts, hf_rename);
        } else {
            snprintf(index, sizeof index, "%.*smodel.safetensors.index.json", (int)(base - loc->model_file),
                     loc->model_file);
            rc = nc_safetensors_load_index(index, ts, hf_rename);
        }
        if (rc) {
            nc_tensor_set_free(ts);
            ts = NULL;
        }
    }
    if (!ts) return NULL;
    const char *source = index[0] ? index : loc->model_file;
    nc_model *m = nc_model_from_tensors(ts, &sizes, source,
                                        quantized ? "nanochat safetensors" : hf ? "safetensors" : "nanochat .pt");
    if (!m) {
        nc_fail_context("%s", source);
        nc_tensor_set_free(ts);
    }
    return m;
}

nc_model *nc_model_load(const nc_load_options *opts, nc_checkpoint_location *loc_out) {
    nc_checkpoint_location loc;
    if (nc_checkpoint_locate(opts, &loc)) {
        if (loc_out) memset(loc_out, 0, sizeof *loc_out);
        return NULL;
    }
    nc_model *m = load_located(&loc);
    if (m && loc_out) {
        *loc_out = loc;
    } else {
        nc_checkpoint_location_free(&loc);
        if (loc_out) *loc_out = loc;
    }
    return m;
}

/*
 * cmd_info.c: `nanochat info`: what a checkpoint is, without running it.
 *
 * Loads the model exactly as every other command does (so a checkpoint that
 * info accepts is one chat/serve accept), then prints the generation
 * (docs/formats.md, Recognising the generation), sizes, attention windows,
 * parameter count, the weight format (float, or 8-bit int8 / fp8 with
 * per-row scales, docs/quantization.md), tensor dtypes, the files with
 * their sizes, the step, and the special token ids if a tokenizer is
 * found. --json prints the same as one JSON object.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "model_args.h"
#include "util/common.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: nanochat info [-m PATH | --random SHAPE] [--json] [options]\n"
            "\n"
            "Describes a checkpoint: architecture generation, layers, dims, heads, vocab,\n"
            "sequence length, attention windows, parameter count, dtypes, files, step and\n"
            "special token ids.\n"
            "\n"
            "  --json               one JSON object on stdout\n"
            "  -h, --help           this help\n\n");
    nc_model_args_help(f);
}

static int64_t file_size(const char *path) {
    struct stat st;
    return path && stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

static void human_bytes(int64_t n, char *buf, size_t cap) {
    const char *units[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1000 && u < 4) v /= 1000, u++;
    snprintf(buf, cap, u ? "%.2f %s" : "%.0f %s", v, units[u]);
}

/* "int8" / "fp8" / "bf16" (float as stored) of the layers and of lm_head. */
static const char *lm_head_format(const nc_model *m) {
    return m->lm_head_scale ? nc_weight_format_name(m->weights) : "bf16";
}

/* Whether the 8-bit codes were chosen by GPTQ (the file's metadata; files
 * written before the key existed round to nearest). */
static bool gptq_rounded(const nc_model *m) {
    const char *r = nc_tensor_set_meta(m->tensors, NC_QUANT_META_ROUNDING);
    return r && !strcmp(r, "gptq");
}

/* Tensor count and element count per dtype. */
typedef struct {
    int count[NC_DTYPE_COUNT];
    int64_t numel[NC_DTYPE_COUNT];
} dtype_stats;

static void count_dtypes(const nc_model *m, dtype_stats *s) {
    memset(s, 0, sizeof *s);
    for (int i = 0; i < nc_tensor_set_count(m->tensors); i++) {
        const nc_tensor *t = nc_tensor_set_at(m->tensors, i);
        s->count[t->dtype]++;
        s->numel[t->dtype] += nc_tensor_numel(t);
    }
}

/* "SSSL -> windows 1024/2048" style summary of the per-layer windows. */
static void describe_windows(const nc_model_config *c, char *buf, size_t cap) {
    if (c->generation == NC_GEN_V1) {
        snprintf(buf, cap, "full causal attention");
        return;
    }
    int s_win = -1;
    for (int l = 0; l < c->n_layer; l++)
        if (nc_config_window(c, l) != c->sequence_len) s_win = nc_config_window(c, l);
    if (s_win < 0) snprintf(buf, cap, "pattern %s: every layer L = %d", c->window_pattern, c->sequence_len);
    else snprintf(buf, cap, "pattern %s: S = %d, L = %d tokens (last layer L)", c->window_pattern, s_win,
                  c->sequence_len);
}

/* A copy of s with every byte that is not part of well-formed UTF-8
 * replaced by U+FFFD: paths are bytes, JSON must be UTF-8. */
static char *utf8_clean(const char *s) {
    size_t n = strlen(s);
    char *out = nc_xmalloc(3 * n + 1), *o = out;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int len = *p < 0x80 ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 0;
        bool good = len > 0;
        for (int k = 1; good && k < len; k++) good = (p[k] & 0xc0) == 0x80;
        if (good && len > 1) {
            uint32_t cp = *p & (0x7f >> len);
            for (int k = 1; k < len; k++) cp = cp << 6 | (p[k] & 0x3f);
            static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
            good = cp >= min_cp[len] && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff);
        }
        if (good) {
            memcpy(o, p, (size_t)len);
            o += len;
            p += len;
        } else {
            memcpy(o, "\xef\xbf\xbd", 3);
            o += 3;
            p++;
        }
    }
    *o = 0;
    return out;
}

static void add_clean_string(cJSON *obj, const char *key, const char *value) {
    char *clean = utf8_clean(value);
    cJSON_AddStringToObject(obj, key, clean);
    free(clean);
}

static cJSON *file_json(const char *path) {
    cJSON *f = cJSON_CreateObject();
    add_clean_string(f, "path", path);
    cJSON_AddNumberToObject(f, "bytes", (double)file_size(path));
    return f;
}

static void print_json(const nc_model *m, const nc_checkpoint_location *loc, char **files, int n_files,
                       const nc_tokenizer *tok) {
    const nc_model_config *c = &m->cfg;
    cJSON *j = cJSON_CreateObject();
    add_clean_string(j, "source", m->source);
    cJSON_AddStringToObject(j, "format", m->format);
    if (loc->step >= 0) cJSON_AddNumberToObject(j, "step", loc->step);
    else cJSON_AddNullToObject(j, "step");
    cJSON_AddStringToObject(j, "generation", nc_generation_name(c->generation));
    cJSON_AddNumberToObject(j, "n_layer", c->n_layer);
    cJSON_AddNumberToObject(j, "n_embd", c->n_embd);
    cJSON_AddNumberToObject(j, "n_head", c->n_head);
    cJSON_AddNumberToObject(j, "n_kv_head", c->n_kv_head);
    cJSON_AddNumberToObject(j, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(j, "mlp_hidden", c->mlp_hidden);
    cJSON_AddNumberToObject(j, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(j, "padded_vocab", c->padded_vocab);
    cJSON_AddNumberToObject(j, "sequence_len", c->sequence_len);
    cJSON_AddStringToObject(j, "window_pattern", c->window_pattern);
    cJSON *win = cJSON_AddArrayToObject(j, "windows");
    for (int l = 0; l < c->n_layer; l++) {
        int w = nc_config_window(c, l);
        cJSON_AddItemToArray(win, w == INT32_MAX ? cJSON_CreateNull() : cJSON_CreateNumber(w));
    }
    cJSON_AddNumberToObject(j, "rope_base", c->rope_base);
    cJSON_AddNumberToObject(j, "softcap", c->softcap);
    cJSON_AddNumberToObject(j, "qk_scale", c->qk_scale);
    cJSON_AddNumberToObject(j, "parameters", (double)nc_config_param_count(c));
    cJSON_AddStringToObject(j, "weight_format", nc_weight_format_name(m->weights));
    cJSON_AddStringToObject(j, "lm_head_format", lm_head_format(m));
    if (m->weights == NC_WEIGHTS_FLOAT) cJSON_AddNullToObject(j, "rounding");
    else cJSON_AddStringToObject(j, "rounding", gptq_rounded(m) ? "gptq" : "nearest");
    cJSON_AddNumberToObject(j, "tensor_bytes", (double)nc_tensor_set_bytes(m->tensors));
    dtype_stats ds;
    count_dtypes(m, &ds);
    cJSON *dt = cJSON_AddObjectToObject(j, "dtypes");
    for (int d = 0; d < NC_DTYPE_COUNT; d++) {
        if (!ds.count[d]) continue;
        cJSON *e = cJSON_AddObjectToObject(dt, nc_dtype_name((nc_dtype)d));
        cJSON_AddNumberToObject(e, "tensors", ds.count[d]);
        cJSON_AddNumberToObject(e, "elements", (double)ds.numel[d]);
    }
    cJSON *fj = cJSON_AddObjectToObject(j, "files");
    cJSON *wf = cJSON_AddArrayToObject(fj, "weights");
    for (int i = 0; i < n_files; i++) cJSON_AddItemToArray(wf, file_json(files[i]));
    if (loc->config_file) cJSON_AddItemToObject(fj, "config", file_json(loc->config_file));
    if (loc->tokenizer_file) cJSON_AddItemToObject(fj, "tokenizer", file_json(loc->tokenizer_file));
    if (tok) {
        cJSON *t = cJSON_AddObjectToObject(j, "tokenizer");
        cJSON_AddNumberToObject(t, "vocab_size", nc_tokenizer_vocab_size(tok));
        cJSON *sp = cJSON_AddObjectToObject(t, "special_tokens");
        for (int s = 0; s < NC_TOK_SPECIAL_COUNT; s++) {
            int32_t id = nc_tokenizer_special_id(tok, (nc_special_token)s);
            if (id >= 0) cJSON_AddNumberToObject(sp, nc_special_token_text((nc_special_token)s), id);
        }
    } else {
        cJSON_AddNullToObject(j, "tokenizer");
    }
    char *text = cJSON_Print(j);
    printf("%s\n", text);
    free(text);
    cJSON_Delete(j);
}

static void print_text(const nc_model *m, const nc_checkpoint_location *loc, char **files, int n_files,
                       const nc_tokenizer *tok) {
    const nc_model_config *c = &m->cfg;
    char buf[256], size[32];
    printf("model:        %s\n", m->source);
    printf("format:       %s", m->format);
    if (loc->step >= 0) printf(", step %d", loc->step);
    printf("\n");
    printf("generation:   nanochat %s\n", nc_generation_name(c->generation));
    printf("layers:       %d\n", c->n_layer);
    printf("n_embd:       %d\n", c->n_embd);
    printf("heads:        %d (kv heads %d, head dim %d)\n", c->n_head, c->n_kv_head, c->head_dim);
    printf("mlp hidden:   %d\n", c->mlp_hidden);
    printf("vocab:        %d (padded rows %d)\n", c->vocab_size, c->padded_vocab);
    printf("sequence_len: %d\n", c->sequence_len);
    describe_windows(c, buf, sizeof buf);
    printf("attention:    %s\n", buf);
    printf("constants:    rope base %g, softcap %g, qk scale %g%s%s%s\n", c->rope_base, c->softcap, c->qk_scale,
           c->has_lambdas ? ", resid/x0 lambdas" : "", c->has_value_embeds ? ", value embeddings" : "",
           c->has_smear ? ", smear + backout" : "");
    int64_t params = nc_config_param_count(c);
    printf("parameters:   %lld (%.3f B)\n", (long long)params, (double)params / 1e9);
    if (m->weights == NC_WEIGHTS_FLOAT)
        printf("weights:      float, as stored (--weights bf16)\n");
    else
        printf("weights:      %s with one fp32 scale per row (layers; lm_head %s), %s\n",
               nc_weight_format_name(m->weights), lm_head_format(m),
               gptq_rounded(m) ? "rounded by GPTQ" : "rounded to nearest");
    dtype_stats ds;
    count_dtypes(m, &ds);
    printf("dtypes:      ");
    for (int d = 0; d < NC_DTYPE_COUNT; d++)
        if (ds.count[d])
            printf(" %s: %d tensors (%lld values);", nc_dtype_name((nc_dtype)d), ds.count[d], (long long)ds.numel[d]);
    human_bytes((int64_t)nc_tensor_set_bytes(m->tensors), size, sizeof size);
    printf(" %s in all\n", size);
    for (int i = 0; i < n_files; i++) {
        human_bytes(file_size(files[i]), size, sizeof size);
        printf("%s %s (%s)\n", i ? "              " : "files:       ", files[i], size);
    }
    if (loc->config_file) {
        human_bytes(file_size(loc->config_file), size, sizeof size);
        printf("config:       %s (%s)\n", loc->config_file, size);
    }
    if (!tok) {
        printf("tokenizer:    none found\n");
        return;
    }
    human_bytes(file_size(loc->tokenizer_file), size, sizeof size);
    printf("tokenizer:    %s (%s, %d tokens)\n", loc->tokenizer_file ? loc->tokenizer_file : "?", size,
           nc_tokenizer_vocab_size(tok));
    printf("special ids: ");
    for (int s = 0; s < NC_TOK_SPECIAL_COUNT; s++) {
        int32_t id = nc_tokenizer_special_id(tok, (nc_special_token)s);
        if (id >= 0) printf(" %s=%d", nc_special_token_text((nc_special_token)s), id);
    }
    printf("\n");
}

int cmd_info(int argc, char **argv) {
    nc_model_args a;
    nc_model_args_init(&a);
    bool json = false;
    for (int i = 1; i < argc; i++) {
        int r = nc_model_args_parse(&a, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "nanochat info: unknown option '%s' (see nanochat info --help)\n", argv[i]);
            return 2;
        }
    }
    nc_model *m;
    nc_tokenizer *tok;
    nc_checkpoint_location loc;
    if (nc_model_args_load_located(&a, &m, &tok, false, &loc)) return 1;
    char **files = NULL;
    int n_files = 0;
    if (loc.model_file && nc_checkpoint_weight_files(&loc, &files, &n_files)) {
        fprintf(stderr, "nanochat: %s\n", nc_error());
        nc_model_free(m);
        nc_tokenizer_free(tok);
        nc_checkpoint_location_free(&loc);
        return 1;
    }
    if (json) print_json(m, &loc, files, n_files, tok);
    else print_text(m, &loc, files, n_files, tok);
    nc_checkpoint_files_free(files, n_files);
    nc_model_free(m);
    nc_tokenizer_free(tok);
    nc_checkpoint_location_free(&loc);
    return 0;
}

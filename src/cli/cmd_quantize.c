/*
 * cmd_quantize.c: `nanochat quantize`: an int8 / fp8 copy of a checkpoint
 * that loads directly, so a user stores and downloads half the bytes.
 *
 *   nanochat quantize -m IN --weights int8|fp8 -o OUTDIR [--lm-head-bf16]
 *                     [--calibrate TEXT [--calibrate-tokens N]]
 *
 * OUTDIR gets model.safetensors (nanochat's state-dict names; each 8-bit
 * matrix with its `<name>_scale`, the format in "__metadata__",
 * docs/quantization.md), meta.json (the checkpoint's meta_<step>.json
 * copied as it is, or written from the config for a Hugging Face or random
 * source) and the tokenizer file copied. `-m OUTDIR` then finds it
 * (model/locate.c). The tensors written are exactly those that --weights
 * produces at load (model/quantize.h), so both give bit-identical logits;
 * with --calibrate, the codes are chosen by GPTQ from the model's inputs
 * on a text instead (quant/calibrate.h): same format, smaller error.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "flags.h"
#include "formats/safetensors.h"
#include "model/quantize.h"
#include "model_args.h"
#include "quant/calibrate.h"
#include "util/common.h"
#include "util/mmap_file.h"

#define MAX_SIDE_FILE ((size_t)64 << 20) /* meta / tokenizer files */

static void usage(FILE *f) {
    fprintf(f,
            "usage: nanochat quantize [-m PATH | --random SPEC] --weights int8|fp8 -o OUTDIR [options]\n"
            "\n"
            "Writes an 8-bit copy of a float (bf16/fp32) checkpoint that `-m OUTDIR` loads directly:\n"
            "OUTDIR/model.safetensors (every layer matrix and the lm_head as int8 or fp8 e4m3 with\n"
            "one fp32 scale per row), OUTDIR/meta.json and the tokenizer. Same weights as\n"
            "--weights int8|fp8 at load, unless --calibrate: then each matrix is rounded by GPTQ\n"
            "to keep its products on the text's inputs closest to the float ones (the same\n"
            "format, a smaller loss; minutes on a CPU for a d20, docs/quantization.md).\n"
            "\n"
            "  -o, --out OUTDIR     output directory (created if missing; must not hold a model)\n"
            "  --calibrate TEXT     choose the codes by GPTQ on this UTF-8 text (text like the\n"
            "                       model's own: its training or chat data)\n"
            "  --calibrate-tokens N tokens of the text used (default %d)\n"
            "  --calibrate-memory MB\n"
            "                       statistics held at once (default: half the available memory;\n"
            "                       a model whose layers' statistics do not fit takes several\n"
            "                       passes over the text, each a whole forward)\n"
            "  -h, --help           this help\n\n",
            NC_CALIBRATION_DEFAULT_TOKENS);
    nc_model_args_help(f);
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return nc_fail("cannot write %s: %s", path, strerror(errno));
    bool ok = fwrite(data, 1, n, f) == n;
    if (fclose(f) != 0) ok = false;
    return ok ? 0 : nc_fail("writing %s failed: %s", path, strerror(errno));
}

static int copy_file(const char *from, const char *to) {
    size_t n;
    char *data = nc_read_file(from, MAX_SIDE_FILE, &n);
    if (!data) return -1;
    int rc = write_file(to, data, n);
    free(data);
    return rc;
}

/* meta.json for sources without a nanochat meta file: nanochat's
 * "model_config" from the config. */
static int write_meta(const nc_model *m, const char *path) {
    const nc_model_config *c = &m->cfg;
    cJSON *j = cJSON_CreateObject(), *mc = cJSON_AddObjectToObject(j, "model_config");
    cJSON_AddNumberToObject(mc, "sequence_len", c->sequence_len);
    cJSON_AddNumberToObject(mc, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(mc, "n_layer", c->n_layer);
    cJSON_AddNumberToObject(mc, "n_head", c->n_head);
    cJSON_AddNumberToObject(mc, "n_kv_head", c->n_kv_head);
    cJSON_AddNumberToObject(mc, "n_embd", c->n_embd);
    if (c->generation != NC_GEN_V1) cJSON_AddStringToObject(mc, "window_pattern", c->window_pattern);
    cJSON_AddStringToObject(j, "source", m->source);
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    int rc = write_file(path, text, strlen(text));
    free(text);
    return rc;
}

typedef struct {
    const char *out_dir;
    const char *calibrate; /* text path, or NULL: round to nearest */
    long long calibrate_tokens;
    long long calibrate_memory_mb;
} quantize_opts;

static int run(const nc_model_args *a, const quantize_opts *o) {
    const char *out_dir = o->out_dir;
    nc_weight_format f;
    NC_ASSERT(nc_weight_format_parse(a->weights, &f) == 0);
    if (f == NC_WEIGHTS_FLOAT) {
        fprintf(stderr, "nanochat quantize: --weights must be int8 or fp8\n");
        return 2;
    }
    char st_path[4096], meta_path[4096], tok_path[4096];
    snprintf(st_path, sizeof st_path, "%s/model.safetensors", out_dir);
    snprintf(meta_path, sizeof meta_path, "%s/meta.json", out_dir);
    if (exists(st_path)) {
        fprintf(stderr, "nanochat quantize: %s already exists; remove it or pick another -o\n", st_path);
        return 1;
    }
    /* Load as stored (so an 8-bit source is recognised), then convert. */
    nc_model_args as_stored = *a;
    as_stored.weights = NULL;
    as_stored.lm_head_float = false;
    nc_model *m = NULL;
    nc_tokenizer *tok = NULL;
    nc_checkpoint_location loc;
    nc_calibration *calib = NULL;
    if (nc_model_args_load_located(&as_stored, &m, &tok, false, &loc)) return 1;
    int rc = 1;
    double t0 = nc_now();
    if (m->weights != NC_WEIGHTS_FLOAT) {
        fprintf(stderr, "nanochat quantize: %s already holds %s weights; quantize needs a float (bf16/fp32) "
                        "checkpoint\n", m->source, nc_weight_format_name(m->weights));
        goto done;
    }
    if (o->calibrate) {
        nc_calibration_params cp = {.text_path = o->calibrate, .max_tokens = o->calibrate_tokens,
                                    .n_threads = a->threads, .memory = (size_t)o->calibrate_memory_mb << 20,
                                    .verbose = true};
        if (!(calib = nc_calibration_new(m, tok, &cp))) {
            fprintf(stderr, "nanochat quantize: %s\n", nc_error());
            goto done;
        }
    }
    nc_quant_rounding rounding = calib ? nc_calibration_rounding(calib) : (nc_quant_rounding){0};
    if (nc_model_quantize_rounded(m, f, !a->lm_head_float, a->threads, calib ? &rounding : NULL)) {
        fprintf(stderr, "nanochat quantize: %s\n", nc_error());
        goto done;
    }
    double t_quant = nc_now() - t0;
    if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "nanochat quantize: cannot create %s: %s\n", out_dir, strerror(errno));
        goto done;
    }
    bool nanochat_meta = loc.format && !strcmp(loc.format, "nanochat") && loc.config_file;
    if (nc_safetensors_save(st_path, m->tensors) ||
        (nanochat_meta ? copy_file(loc.config_file, meta_path) : write_meta(m, meta_path))) {
        fprintf(stderr, "nanochat quantize: %s\n", nc_error());
        goto done;
    }
    const char *tok_name = "none found";
    if (loc.tokenizer_file) {
        const char *slash = strrchr(loc.tokenizer_file, '/');
        tok_name = slash ? slash + 1 : loc.tokenizer_file;
        snprintf(tok_path, sizeof tok_path, "%s/%s", out_dir, tok_name);
        if (copy_file(loc.tokenizer_file, tok_path)) {
            fprintf(stderr, "nanochat quantize: %s\n", nc_error());
            goto done;
        }
    }
    struct stat st;
    double mb = stat(st_path, &st) == 0 ? (double)st.st_size / 1e6 : 0;
    char how[96] = "";
    if (calib) snprintf(how, sizeof how, " by GPTQ on %lld tokens", (long long)nc_calibration_tokens(calib));
    printf("wrote %s: model.safetensors (%.1f MB, %s weights, lm_head %s; quantised%s in %.2f s), meta.json%s, "
           "tokenizer %s\n",
           out_dir, mb, nc_weight_format_name(f), a->lm_head_float ? "float" : nc_weight_format_name(f), how, t_quant,
           nanochat_meta ? " (copied)" : "", tok_name);
    rc = 0;
done:
    nc_calibration_free(calib);
    nc_model_free(m);
    nc_tokenizer_free(tok);
    nc_checkpoint_location_free(&loc);
    return rc;
}

int cmd_quantize(int argc, char **argv) {
    nc_model_args a;
    nc_model_args_init(&a);
    quantize_opts o = {0};
    for (int i = 1; i < argc; i++) {
        int r = nc_model_args_parse(&a, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        const char *v;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if ((r = nc_flag_take("-o", argc, argv, &i, &v)) || (r = nc_flag_take("--out", argc, argv, &i, &v))) {
            if (r < 0) return 2;
            o.out_dir = v;
        } else if ((r = nc_flag_take("--calibrate", argc, argv, &i, &v))) {
            if (r < 0) return 2;
            o.calibrate = v;
        } else if ((r = nc_flag_take("--calibrate-tokens", argc, argv, &i, &v))) {
            if (r < 0 || nc_flag_int("--calibrate-tokens", v, 2, 1LL << 30, &o.calibrate_tokens)) return 2;
        } else if ((r = nc_flag_take("--calibrate-memory", argc, argv, &i, &v))) {
            if (r < 0 || nc_flag_int("--calibrate-memory", v, 1, 1LL << 30, &o.calibrate_memory_mb)) return 2;
        } else {
            fprintf(stderr, "nanochat quantize: unknown option '%s' (see nanochat quantize --help)\n", argv[i]);
            return 2;
        }
    }
    if ((o.calibrate_tokens || o.calibrate_memory_mb) && !o.calibrate) {
        fprintf(stderr, "nanochat quantize: --calibrate-%s needs --calibrate TEXT\n",
                o.calibrate_tokens ? "tokens" : "memory");
        return 2;
    }
    if (!a.weights || !o.out_dir || !*o.out_dir) {
        fprintf(stderr, "nanochat quantize: %s is required (see nanochat quantize --help)\n",
                !a.weights ? "--weights int8|fp8" : "-o OUTDIR");
        return 2;
    }
    return run(&a, &o);
}

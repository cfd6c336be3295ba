/*
 * locate.c: nc_checkpoint_locate (loader.h): what the user typed after -m
 * -> the concrete model, config and tokenizer files.
 *
 * Mirrors nanochat/checkpoint_manager.py: in a base dir the source picks
 * `<base>/{chatsft,chatrl,mid,base}_checkpoints/`, the tag is the largest
 * `d<N>` (else the most recently modified tag dir, as nanochat's
 * find_largest_model does), and the step is the largest model_<step>.pt
 * (find_last_step). The tokenizer lives in `<base>/tokenizer/` (nanochat's
 * get_tokenizer) or beside the model in flat downloads.
 *
 * A directory written by `nanochat quantize` (model.safetensors with
 * nanochat's tensor names + meta.json + tokenizer, docs/quantization.md) is
 * format "nanochat-safetensors".
 */
#include "loader.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../util/common.h"
#include "../util/mmap_file.h"

static bool is_file(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static char *join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = nc_xmalloc(n);
    snprintf(s, n, "%s/%s", a, b);
    return s;
}

/* The step of "model_<digits>.pt", or -1. */
static long parse_model_step(const char *name) {
    if (strncmp(name, "model_", 6) != 0) return -1;
    const char *p = name + 6, *q = p;
    while (*q >= '0' && *q <= '9') q++;
    if (q == p || q - p > 9 || strcmp(q, ".pt") != 0) return -1;
    return strtol(p, NULL, 10);
}

/* Picks model_<step>.pt in dir (the largest step, or `want` if >= 0) and
 * its meta_<step>.json. */
static int locate_step_dir(const char *dir, int want, nc_checkpoint_location *loc) {
    DIR *d = opendir(dir);
    if (!d) return nc_fail("cannot read directory %s: %s", dir, strerror(errno));
    long best = -1;
    char best_name[NAME_MAX + 1] = "", steps[256] = "";
    size_t steps_len = 0;
    for (struct dirent *e; (e = readdir(d));) {
        long s = parse_model_step(e->d_name);
        if (s < 0) continue;
        if (steps_len < sizeof steps - 16)
            steps_len += (size_t)snprintf(steps + steps_len, sizeof steps - steps_len, "%s%ld", steps_len ? ", " : "", s);
        bool take = want >= 0 ? s == want : s > best;
        if (take) {
            best = s;
            snprintf(best_name, sizeof best_name, "%s", e->d_name);
        }
    }
    closedir(d);
    if (best < 0) {
        if (want >= 0 && steps_len)
            return nc_fail("no checkpoint for --step %d in %s (steps present: %s)", want, dir, steps);
        return nc_fail("no model_<step>.pt in %s", dir);
    }
    loc->model_file = join(dir, best_name);
    /* meta_<same digits>.json */
    char meta[NAME_MAX + 8];
    snprintf(meta, sizeof meta, "meta_%.*s.json", (int)(strlen(best_name) - 9), best_name + 6);
    loc->config_file = join(dir, meta);
    if (!is_file(loc->config_file))
        return nc_fail("found %s but not its %s (nanochat writes both; the sizes are in the meta file)",
                       loc->model_file, meta);
    loc->step = (int)best;
    loc->format = nc_xstrdup("nanochat");
    return 0;
}

/* First existing file among candidates, or NULL. */
static char *first_file(const char *const *candidates, int n) {
    for (int i = 0; i < n; i++)
        if (candidates[i] && is_file(candidates[i])) return nc_xstrdup(candidates[i]);
    return NULL;
}

/* Whether dir is <base>/<something>_checkpoints/<tag> (a nanochat base dir layout). */
static bool in_checkpoints_tree(const char *dir) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", dir);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = 0;
    char *slash = strrchr(buf, '/');
    if (!slash) return false;
    *slash = 0;
    const char *parent = strrchr(buf, '/') ? strrchr(buf, '/') + 1 : buf;
    size_t m = strlen(parent);
    return m > 12 && !strcmp(parent + m - 12, "_checkpoints");
}

static void find_tokenizer_near(const char *dir, nc_checkpoint_location *loc) {
    char *a = join(dir, "tokenizer.pkl"), *b = join(dir, "tokenizer/tokenizer.pkl");
    char *c = in_checkpoints_tree(dir) ? join(dir, "../../tokenizer/tokenizer.pkl") : NULL;
    char *d = join(dir, "tokenizer.json");
    const char *cands[] = {a, b, c, d};
    loc->tokenizer_file = first_file(cands, 4);
    free(a), free(b), free(c), free(d);
}

/* ==== Hugging Face directories ==== */

/* The alphabetically first shard named in an index's weight_map. */
static char *first_shard(const char *index) {
    char *text = nc_read_file(index, (size_t)64 << 20, NULL);
    if (!text) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    const char *best = NULL;
    for (const cJSON *e = cJSON_IsObject(map) ? map->child : NULL; e; e = e->next)
        if (cJSON_IsString(e) && (!best || strcmp(e->valuestring, best) < 0)) best = e->valuestring;
    char *r = NULL;
    if (!best || strchr(best, '/')) nc_fail("%s: no usable weight_map", index);
    else r = nc_xstrdup(best);
    cJSON_Delete(j);
    return r;
}

static int locate_hf(const char *dir, const nc_load_options *o, nc_checkpoint_location *loc) {
    if (o->step >= 0) return nc_fail("--step applies to nanochat checkpoints, not to the Hugging Face copy %s", dir);
    loc->config_file = join(dir, "config.json");
    if (!is_file(loc->config_file)) return nc_fail("%s has no config.json", dir);
    char *single = join(dir, "model.safetensors"), *index = join(dir, "model.safetensors.index.json");
    if (is_file(single)) {
        loc->model_file = single;
        single = NULL;
    } else if (is_file(index)) {
        char *shard = first_shard(index);
        if (shard) loc->model_file = join(dir, shard);
        free(shard);
    } else {
        nc_fail("%s has config.json but neither model.safetensors nor model.safetensors.index.json", dir);
    }
    free(single);
    free(index);
    if (!loc->model_file) return -1;
    char *a = join(dir, "tokenizer.json"), *b = join(dir, "tokenizer.pkl");
    const char *cands[] = {a, b};
    loc->tokenizer_file = first_file(cands, 2);
    free(a), free(b);
    loc->format = nc_xstrdup("huggingface");
    loc->step = -1;
    return 0;
}

/* ==== `nanochat quantize` output ==== */

/* Whether dir holds model.safetensors + meta.json. */
static bool is_quantized_dir(const char *dir) {
    char *st = join(dir, "model.safetensors"), *meta = join(dir, "meta.json");
    bool yes = is_file(st) && is_file(meta);
    free(st);
    free(meta);
    return yes;
}

static int locate_quantized(const char *dir, const nc_load_options *o, nc_checkpoint_location *loc) {
    if (o->step >= 0) return nc_fail("--step applies to nanochat checkpoints, not to the quantised copy %s", dir);
    loc->model_file = join(dir, "model.safetensors");
    loc->config_file = join(dir, "meta.json");
    char *a = join(dir, "tokenizer.pkl"), *b = join(dir, "tokenizer.json");
    const char *cands[] = {a, b};
    loc->tokenizer_file = first_file(cands, 2);
    free(a), free(b);
    loc->format = nc_xstrdup("nanochat-safetensors");
    loc->step = -1;
    return 0;
}

/* ==== nanochat base dirs ==== */

static const struct {
    const char *source, *dir;
} sources[] = {{"sft", "chatsft_checkpoints"}, {"rl", "chatrl_checkpoints"}, {"mid", "mid_checkpoints"},
               {"base", "base_checkpoints"}};

static bool has_checkpoint(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return false;
    bool found = false;
    for (struct dirent *e; !found && (e = readdir(d));) found = parse_model_step(e->d_name) >= 0;
    closedir(d);
    return found;
}

/* The tag dir to use under a source dir: --tag, else the largest d<N>,
 * else the most recently modified (only dirs holding a checkpoint count). */
static char *pick_tag(const char *src_dir, const char *tag) {
    if (tag) {
        char *p = join(src_dir, tag);
        if (!is_dir(p)) {
            nc_fail("no tag '%s' in %s", tag, src_dir);
            free(p);
            return NULL;
        }
        return p;
    }
    DIR *d = opendir(src_dir);
    if (!d) {
        nc_fail("cannot read directory %s: %s", src_dir, strerror(errno));
        return NULL;
    }
    char *best = NULL;
    long best_n = -1;
    double best_mtime = -1;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char *p = join(src_dir, e->d_name);
        struct stat st;
        if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode) || !has_checkpoint(p)) {
            free(p);
            continue;
        }
        long n = -1;
        if (e->d_name[0] == 'd' && e->d_name[1]) {
            char *end;
            n = strtol(e->d_name + 1, &end, 10);
            if (*end || n < 0) n = -1;
        }
        double mtime = (double)st.st_mtim.tv_sec + 1e-9 * (double)st.st_mtim.tv_nsec;
        bool better = n >= 0 ? n > best_n : (best_n < 0 && mtime > best_mtime);
        if (better) {
            free(best);
            best = p;
            best_n = n >= 0 ? n : best_n;
            best_mtime = mtime;
        } else {
            free(p);
        }
    }
    closedir(d);
    if (!best) nc_fail("no tag directory with a model_<step>.pt under %s", src_dir);
    return best;
}

static int locate_base(const char *base, const nc_load_options *o, nc_checkpoint_location *loc) {
    char *src_dir = NULL, *tag_dir = NULL;
    for (size_t i = 0; i < NC_ARRAY_LEN(sources) && !tag_dir; i++) {
        if (o->source && strcmp(o->source, sources[i].source)) continue;
        free(src_dir);
        src_dir = join(base, sources[i].dir);
        if (!is_dir(src_dir)) continue;
        if (o->source) {
            tag_dir = pick_tag(src_dir, o->tag);
            if (!tag_dir) break;
        } else {
            /* The best source is the first that holds the tag asked for (or any). */
            char *t = pick_tag(src_dir, o->tag);
            if (t && has_checkpoint(t)) tag_dir = t;
            else free(t);
        }
    }
    if (!tag_dir) {
        if (o->source && (!src_dir || !is_dir(src_dir)))
            nc_fail("--source %s: %s does not exist", o->source, src_dir ? src_dir : base);
        else if (!o->source)
            nc_fail("no checkpoints%s%s found under %s/{chatsft,chatrl,mid,base}_checkpoints", o->tag ? " with tag " : "",
                    o->tag ? o->tag : "", base);
        free(src_dir);
        return -1;
    }
    free(src_dir);
    int rc = locate_step_dir(tag_dir, o->step, loc);
    free(tag_dir);
    if (rc) return rc;
    char *t = join(base, "tokenizer/tokenizer.pkl");
    const char *cands[] = {t};
    loc->tokenizer_file = first_file(cands, 1);
    free(t);
    return 0;
}

static bool is_base_dir(const char *dir) {
    for (size_t i = 0; i < NC_ARRAY_LEN(sources); i++) {
        char *p = join(dir, sources[i].dir);
        bool yes = is_dir(p);
        free(p);
        if (yes) return true;
    }
    return false;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static int locate(const nc_load_options *o, nc_checkpoint_location *loc) {
    const char *path = o->path;
    if (!path || !*path) return nc_fail("no model path given");
    struct stat st;
    if (stat(path, &st) != 0) return nc_fail("model path %s: %s", path, strerror(errno));
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') dir[--n] = 0;
    if (S_ISREG(st.st_mode)) {
        /* A file: use its directory, pinned to that file where it names a step. */
        char *slash = strrchr(dir, '/');
        const char *base = slash ? slash + 1 : dir;
        long step = parse_model_step(base);
        char parent[PATH_MAX];
        if (slash) snprintf(parent, sizeof parent, "%.*s", (int)(slash - dir), dir);
        else snprintf(parent, sizeof parent, ".");
        if (!parent[0]) snprintf(parent, sizeof parent, "/");
        if (step >= 0) {
            if (o->step >= 0 && o->step != step)
                return nc_fail("--step %d contradicts the model file %s", o->step, path);
            if (o->source || o->tag) return nc_fail("--source/--tag apply to a nanochat base dir, not to a file");
            if (locate_step_dir(parent, (int)step, loc)) return -1;
            find_tokenizer_near(parent, loc);
            return 0;
        }
        if (!strcmp(base, "model.safetensors") && is_quantized_dir(parent)) {
            if (o->source || o->tag) return nc_fail("--source/--tag apply to a nanochat base dir, not to a file");
            return locate_quantized(parent, o, loc);
        }
        if (ends_with(base, ".safetensors") || !strcmp(base, "config.json") || ends_with(base, ".index.json"))
            return locate_hf(parent, o, loc);
        return nc_fail("%s: not a model file (expected model_<step>.pt or a Hugging Face directory)", path);
    }
    if (!S_ISDIR(st.st_mode)) return nc_fail("model path %s is neither a file nor a directory", path);
    char *cfg = join(dir, "config.json");
    bool hf = is_file(cfg);
    free(cfg);
    bool base = is_base_dir(dir);
    if ((o->source || o->tag) && !base)
        return nc_fail("--source/--tag apply to a nanochat base dir (with *_checkpoints/ folders); %s is not one",
                       dir);
    /* nanochat files first: a flat download may carry a config.json too */
    if (has_checkpoint(dir)) {
        if (locate_step_dir(dir, o->step, loc)) return -1;
        find_tokenizer_near(dir, loc);
        return 0;
    }
    if (is_quantized_dir(dir)) return locate_quantized(dir, o, loc);
    if (hf) return locate_hf(dir, o, loc);
    if (base) return locate_base(dir, o, loc);
    return nc_fail("%s holds no model: looked for model_<step>.pt + meta_<step>.json, a nanochat base dir "
                   "(chatsft_checkpoints/, base_checkpoints/, ...), a Hugging Face config.json + "
                   "*.safetensors, or model.safetensors + meta.json (`nanochat quantize`)", dir);
}

int nc_checkpoint_locate(const nc_load_options *opts, nc_checkpoint_location *loc) {
    memset(loc, 0, sizeof *loc);
    loc->step = -1;
    int rc = locate(opts, loc);
    if (rc == 0 && opts->tokenizer_path) {
        if (!is_file(opts->tokenizer_path)) {
            rc = nc_fail("--tokenizer %s: no such file", opts->tokenizer_path);
        } else {
            free(loc->tokenizer_file);
            loc->tokenizer_file = nc_xstrdup(opts->tokenizer_path);
        }
    }
    if (rc) nc_checkpoint_location_free(loc);
    return rc;
}

void nc_checkpoint_location_free(nc_checkpoint_location *loc) {
    free(loc->model_file);
    free(loc->config_file);
    free(loc->tokenizer_file);
    free(loc->format);
    memset(loc, 0, sizeof *loc);
    loc->step = -1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int nc_checkpoint_weight_files(const nc_checkpoint_location *loc, char ***files, int *n) {
    *files = NULL;
    *n = 0;
    if (!loc->model_file) return nc_fail("no model file located");
    const char *slash = strrchr(loc->model_file, '/');
    const char *base = slash ? slash + 1 : loc->model_file;
    if (!loc->format || strcmp(loc->format, "huggingface") || !strcmp(base, "model.safetensors")) {
        *files = nc_xmalloc(sizeof(char *));
        (*files)[(*n)++] = nc_xstrdup(loc->model_file);
        return 0;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - loc->model_file) : 1, slash ? loc->model_file : ".");
    char *index = join(dir, "model.safetensors.index.json");
    char *text = nc_read_file(index, (size_t)64 << 20, NULL);
    free(index);
    if (!text) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    int cap = 0;
    for (const cJSON *e = cJSON_IsObject(map) ? map->child : NULL; e; e = e->next) {
        if (!cJSON_IsString(e)) continue;
        char *path = join(dir, e->valuestring);
        bool seen = false;
        for (int i = 0; i < *n && !seen; i++) seen = !strcmp((*files)[i], path);
        if (seen) {
            free(path);
            continue;
        }
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            *files = nc_xrealloc(*files, (size_t)cap * sizeof(char *));
        }
        (*files)[(*n)++] = path;
    }
    cJSON_Delete(j);
    if (*n == 0) return nc_fail("%s/model.safetensors.index.json lists no shards", dir);
    qsort(*files, (size_t)*n, sizeof(char *), cmp_str);
    return 0;
}

void nc_checkpoint_files_free(char **files, int n) {
    for (int i = 0; i < n; i++) free(files[i]);
    free(files);
}

/* hub_select.c: the files a model needs, from the Hub's file list (hub_select.h). */
#include "hub_select.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "hub_cache.h"
#include "util/common.h"

static void add_path(nc_hub_selection *s, const char *path) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->paths[i], path)) return;
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 8;
        s->paths = nc_xrealloc(s->paths, (size_t)s->cap * sizeof *s->paths);
    }
    s->paths[s->n++] = nc_xstrdup(path);
}

void nc_hub_selection_free(nc_hub_selection *s) {
    for (int i = 0; i < s->n; i++) free(s->paths[i]);
    free(s->paths);
    free(s->index);
    free(s->tokenizer);
    memset(s, 0, sizeof *s);
}

/* "dir/name", or "name" when dir is "". */
static void join(const char *dir, const char *name, char *buf, size_t cap) {
    nc_hub_pathf(buf, cap, "%s%s%s", dir, dir[0] ? "/" : "", name);
}

static bool listed(const nc_hub_listing *l, const char *dir, const char *name) {
    char p[PATH_MAX];
    join(dir, name, p, sizeof p);
    return nc_hub_listing_find(l, p) != NULL;
}

/* The part of `path` after "dir/" if it lies directly in dir, else NULL. */
static const char *child_of(const char *path, const char *dir) {
    size_t n = strlen(dir);
    if (n) {
        if (strncmp(path, dir, n) || path[n] != '/') return NULL;
        path += n + 1;
    }
    return strchr(path, '/') ? NULL : path;
}

/* The step of "model_<digits>.pt", or -1 (as the locator reads it). */
static long model_step(const char *name) {
    if (strncmp(name, "model_", 6)) return -1;
    const char *p = name + 6, *q = p;
    while (*q >= '0' && *q <= '9') q++;
    if (q == p || q - p > 9 || strcmp(q, ".pt")) return -1;
    return strtol(p, NULL, 10);
}

static bool has_checkpoint(const nc_hub_listing *l, const char *dir) {
    for (int i = 0; i < l->n_files; i++) {
        const char *c = child_of(l->files[i].path, dir);
        if (c && model_step(c) >= 0) return true;
    }
    return false;
}

/* The first candidate present, added to the selection as its tokenizer. */
static void pick_tokenizer(const nc_hub_listing *l, nc_hub_selection *s, const char *const *cands, int n) {
    for (int i = 0; i < n; i++)
        if (cands[i] && nc_hub_listing_find(l, cands[i])) {
            add_path(s, cands[i]);
            s->tokenizer = nc_xstrdup(cands[i]);
            return;
        }
}

/* model_<step>.pt + meta_<step>.json in dir. */
static int select_step(const nc_hub_listing *l, const char *label, const char *dir, int want, nc_hub_selection *s) {
    const char *best = NULL;
    long best_step = -1;
    char steps[256] = "";
    size_t used = 0;
    for (int i = 0; i < l->n_files; i++) {
        const char *c = child_of(l->files[i].path, dir);
        long st = c ? model_step(c) : -1;
        if (st < 0) continue;
        if (used < sizeof steps - 16) used += (size_t)snprintf(steps + used, sizeof steps - used, "%s%ld", used ? ", " : "", st);
        if (want >= 0 ? st == want : st > best_step) {
            best = l->files[i].path;
            best_step = st;
        }
    }
    if (!best) return nc_fail("no checkpoint for --step %d in %s%s%s (steps there: %s)", want, label, dir[0] ? "/" : "", dir, steps);
    const char *name = strrchr(best, '/') ? strrchr(best, '/') + 1 : best;
    char meta[PATH_MAX], meta_name[NAME_MAX + 1];
    snprintf(meta_name, sizeof meta_name, "meta_%.*s.json", (int)(strlen(name) - 9), name + 6);
    join(dir, meta_name, meta, sizeof meta);
    if (!nc_hub_listing_find(l, meta))
        return nc_fail("%s has %s but not its %s (nanochat writes both; the sizes are in the meta file)", label, best, meta);
    add_path(s, best);
    add_path(s, meta);
    return 0;
}

/* Whether dir is <x>/<something>_checkpoints/<tag>; sets up = "<x>". */
static bool in_checkpoints_tree(const char *dir, char *up, size_t cap) {
    const char *tag = strrchr(dir, '/');
    if (!tag) return false;
    int parent_end = (int)(tag - dir);
    int parent_start = parent_end;
    while (parent_start > 0 && dir[parent_start - 1] != '/') parent_start--;
    int n = parent_end - parent_start;
    if (n <= 12 || strncmp(dir + parent_end - 12, "_checkpoints", 12)) return false;
    snprintf(up, cap, "%.*s", parent_start > 0 ? parent_start - 1 : 0, dir);
    return true;
}

static int select_native(const nc_hub_listing *l, const char *label, const char *dir, int step, nc_hub_selection *s) {
    if (select_step(l, label, dir, step, s)) return -1;
    char a[PATH_MAX], b[PATH_MAX], c[PATH_MAX], d[PATH_MAX], up[PATH_MAX];
    join(dir, "tokenizer.pkl", a, sizeof a);
    join(dir, "tokenizer/tokenizer.pkl", b, sizeof b);
    bool tree = in_checkpoints_tree(dir, up, sizeof up);
    if (tree) join(up, "tokenizer/tokenizer.pkl", c, sizeof c);
    join(dir, "tokenizer.json", d, sizeof d);
    const char *cands[] = {a, b, tree ? c : NULL, d};
    pick_tokenizer(l, s, cands, 4);
    return 0;
}

static int select_hf(const nc_hub_listing *l, const char *label, const char *dir, const nc_hub_select_options *o,
                     nc_hub_selection *s) {
    if (o->step >= 0) return nc_fail("--step applies to nanochat checkpoints, not to the Hugging Face copy %s", label);
    if (o->source || o->tag)
        return nc_fail("--source/--tag apply to a nanochat base dir (with *_checkpoints/ folders); %s is not one", label);
    char p[PATH_MAX];
    join(dir, "config.json", p, sizeof p);
    add_path(s, p);
    if (listed(l, dir, "model.safetensors")) {
        join(dir, "model.safetensors", p, sizeof p);
        add_path(s, p);
    } else if (listed(l, dir, "model.safetensors.index.json")) {
        join(dir, "model.safetensors.index.json", p, sizeof p);
        add_path(s, p);
        s->index = nc_xstrdup(p);
    } else {
        return nc_fail("%s has config.json but neither model.safetensors nor model.safetensors.index.json", label);
    }
    char a[PATH_MAX], b[PATH_MAX];
    join(dir, "tokenizer.json", a, sizeof a);
    join(dir, "tokenizer.pkl", b, sizeof b);
    const char *cands[] = {a, b};
    pick_tokenizer(l, s, cands, 2);
    return 0;
}

static const struct {
    const char *source, *dir;
} sources[] = {{"sft", "chatsft_checkpoints"}, {"rl", "chatrl_checkpoints"}, {"mid", "mid_checkpoints"},
               {"base", "base_checkpoints"}};

/* The tag folder under src_dir: `tag`, else the largest d<N>, else the
 * last name (the Hub has no modification times to prefer). "" if none. */
static void pick_tag(const nc_hub_listing *l, const char *src_dir, const char *tag, char *out, size_t cap) {
    out[0] = 0;
    long best_n = -1;
    size_t n = strlen(src_dir);
    for (int i = 0; i < l->n_files; i++) {
        const char *p = l->files[i].path;
        if (strncmp(p, src_dir, n) || p[n] != '/') continue;
        const char *t = p + n + 1, *slash = strchr(t, '/');
        if (!slash || strchr(slash + 1, '/') || model_step(slash + 1) < 0) continue;
        char name[NAME_MAX + 1];
        snprintf(name, sizeof name, "%.*s", (int)(slash - t), t);
        if (tag) {
            if (!strcmp(name, tag)) snprintf(out, cap, "%s/%s", src_dir, name);
            continue;
        }
        char *end;
        long dn = name[0] == 'd' && name[1] ? strtol(name + 1, &end, 10) : -1;
        if (dn >= 0 && *end) dn = -1;
        bool better = dn >= 0 ? dn > best_n : best_n < 0 && strcmp(name, out[0] ? strrchr(out, '/') + 1 : "") > 0;
        if (better) {
            snprintf(out, cap, "%s/%s", src_dir, name);
            if (dn >= 0) best_n = dn;
        }
    }
}

static bool is_base(const nc_hub_listing *l, const char *dir) {
    for (size_t i = 0; i < NC_ARRAY_LEN(sources); i++) {
        char src[PATH_MAX], tag[PATH_MAX];
        join(dir, sources[i].dir, src, sizeof src);
        pick_tag(l, src, NULL, tag, sizeof tag);
        if (tag[0]) return true;
    }
    return false;
}

static int select_base(const nc_hub_listing *l, const char *label, const char *dir, const nc_hub_select_options *o,
                       nc_hub_selection *s) {
    char src[PATH_MAX], tag[PATH_MAX] = "";
    for (size_t i = 0; i < NC_ARRAY_LEN(sources) && !tag[0]; i++) {
        if (o->source && strcmp(o->source, sources[i].source)) continue;
        join(dir, sources[i].dir, src, sizeof src);
        pick_tag(l, src, o->tag, tag, sizeof tag);
    }
    if (!tag[0]) {
        if (o->source) return nc_fail("--source %s: %s has no %s%s%s", o->source, label, src, o->tag ? "/" : "", o->tag ? o->tag : "");
        return nc_fail("no checkpoints with tag %s found under %s/{chatsft,chatrl,mid,base}_checkpoints", o->tag, label);
    }
    if (select_step(l, label, tag, o->step, s)) return -1;
    char t[PATH_MAX];
    join(dir, "tokenizer/tokenizer.pkl", t, sizeof t);
    const char *cands[] = {t};
    pick_tokenizer(l, s, cands, 1);
    return 0;
}

/* "no model" message: the folders that hold one, else the first files. */
static int fail_no_model(const nc_hub_listing *l, const char *label) {
    char where[512] = "", files[512] = "";
    size_t wu = 0, fu = 0;
    int n_where = 0;
    for (int i = 0; i < l->n_files; i++) {
        const char *p = l->files[i].path, *slash = strrchr(p, '/');
        const char *name = slash ? slash + 1 : p;
        if (fu < sizeof files - 1)
            fu += (size_t)snprintf(files + fu, sizeof files - fu, "%s%s", fu ? ", " : "", p);
        if (!slash || (model_step(name) < 0 && strcmp(name, "config.json"))) continue;
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - p), p);
        if (strstr(where, dir) || wu >= sizeof where - 1) continue;
        wu += (size_t)snprintf(where + wu, sizeof where - wu, "%s%s", wu ? ", " : "", dir);
        n_where++;
    }
    if (n_where)
        return nc_fail("%s holds no model at its top; models are in %s: add the folder, e.g. %s/%.*s", label, where,
                       label, (int)strcspn(where, ","), where);
    if (fu >= sizeof files - 1) snprintf(files + sizeof files - 5, 5, "...");
    return nc_fail("%s holds no nanochat model (no model_<step>.pt + meta_<step>.json, no config.json + "
                   "*.safetensors); it has %d file%s: %s", label, l->n_files, l->n_files == 1 ? "" : "s",
                   l->n_files ? files : "none");
}

int nc_hub_select(const nc_hub_listing *l, const char *label, const nc_hub_select_options *o, nc_hub_selection *out) {
    memset(out, 0, sizeof *out);
    const char *dir = o->subdir ? o->subdir : "";
    bool base = is_base(l, dir);
    int rc;
    if ((o->source || o->tag) && !base && !listed(l, dir, "config.json"))
        rc = nc_fail("--source/--tag apply to a nanochat base dir (with *_checkpoints/ folders); %s is not one", label);
    else if (has_checkpoint(l, dir)) rc = select_native(l, label, dir, o->step, out);
    else if (listed(l, dir, "config.json")) rc = select_hf(l, label, dir, o, out);
    else if (base) rc = select_base(l, label, dir, o, out);
    else rc = fail_no_model(l, label);
    if (rc) nc_hub_selection_free(out);
    return rc;
}

int nc_hub_select_shards(const nc_hub_listing *l, const char *index_json, size_t len, nc_hub_selection *sel) {
    const char *slash = strrchr(sel->index, '/');
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - sel->index) : 0, sel->index);
    cJSON *j = cJSON_ParseWithLength(index_json, len);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    int rc = cJSON_IsObject(map) && map->child ? 0 : nc_fail("%s: no \"weight_map\" naming the shards", sel->index);
    for (const cJSON *e = rc ? NULL : map->child; e && !rc; e = e->next) {
        char p[PATH_MAX];
        if (!cJSON_IsString(e) || !nc_hub_path_is_safe(e->valuestring) || strchr(e->valuestring, '/')) {
            rc = nc_fail("%s: shard name %s is not a file beside the index", sel->index,
                         cJSON_IsString(e) ? e->valuestring : "(not a string)");
            break;
        }
        join(dir, e->valuestring, p, sizeof p);
        if (!nc_hub_listing_find(l, p)) rc = nc_fail("%s names %s, which the repository does not have", sel->index, p);
        else add_path(sel, p);
    }
    cJSON_Delete(j);
    return rc;
}

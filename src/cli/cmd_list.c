/*
 * cmd_list.c: `nanochat list` and `nanochat rm`: the models in the Hugging
 * Face cache (huggingface_hub's layout, src/hub/hub_cache.h), whoever
 * downloaded them, and removing one, like `ollama list` / `ollama rm` or
 * `hf cache scan` / `hf cache delete`.
 */
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "hub/hub_cache.h"
#include "hub/hub_ref.h"
#include "util/common.h"
#include "util/progress.h"

static void list_usage(FILE *f) {
    fprintf(f,
            "usage: nanochat list [--json]\n"
            "\n"
            "Lists the models in the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else\n"
            "~/.cache/huggingface/hub), downloaded by `nanochat pull`, `-m hf:...` or Python's\n"
            "huggingface_hub: repository, revisions (refs and commit), size, last use. Use one\n"
            "with -m hf:OWNER/NAME; remove one with `nanochat rm`.\n"
            "\n"
            "  --json               one JSON array on stdout\n"
            "  -h, --help           this help\n");
}

static void rm_usage(FILE *f) {
    fprintf(f,
            "usage: nanochat rm hf:OWNER/NAME[@REVISION]\n"
            "\n"
            "Removes a model from the Hugging Face cache: the whole repository, or with\n"
            "@REVISION (a branch, tag or commit) only that snapshot and the files no other\n"
            "snapshot uses. Partial downloads of the repository go with it.\n"
            "\n"
            "  -h, --help           this help\n");
}

/* "just now", "5 minutes ago", "3 days ago", or the date. */
static void format_age(double t, char *buf, size_t cap) {
    if (t <= 0) {
        snprintf(buf, cap, "never");
        return;
    }
    double age = (double)time(NULL) - t;
    if (age < 60) snprintf(buf, cap, "just now");
    else if (age < 3600) snprintf(buf, cap, "%d minute%s ago", (int)(age / 60), age < 120 ? "" : "s");
    else if (age < 86400) snprintf(buf, cap, "%d hour%s ago", (int)(age / 3600), age < 7200 ? "" : "s");
    else if (age < 30 * 86400) snprintf(buf, cap, "%d day%s ago", (int)(age / 86400), age < 2 * 86400 ? "" : "s");
    else {
        time_t tt = (time_t)t;
        struct tm tm;
        localtime_r(&tt, &tm);
        strftime(buf, cap, "%Y-%m-%d", &tm);
    }
}

static void print_json(const nc_hub_cached_repo *repos, int n) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        const nc_hub_cached_repo *r = &repos[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "repo", r->repo_id);
        cJSON_AddStringToObject(o, "path", r->dir);
        cJSON_AddNumberToObject(o, "size", (double)r->bytes);
        cJSON_AddNumberToObject(o, "partial_size", (double)r->partial_bytes);
        cJSON_AddNumberToObject(o, "last_used", r->last_used);
        cJSON *revs = cJSON_AddArrayToObject(o, "revisions");
        for (int k = 0; k < r->n_revs; k++) {
            const nc_hub_cached_revision *v = &r->revs[k];
            cJSON *rv = cJSON_CreateObject();
            cJSON_AddStringToObject(rv, "commit", v->commit);
            cJSON *refs = cJSON_AddArrayToObject(rv, "refs");
            for (const char *p = v->refs; *p;) {
                size_t len = strcspn(p, ",");
                char ref[256];
                snprintf(ref, sizeof ref, "%.*s", (int)len, p);
                cJSON_AddItemToArray(refs, cJSON_CreateString(ref));
                p += len;
                while (*p == ',' || *p == ' ') p++;
            }
            cJSON_AddNumberToObject(rv, "size", (double)v->bytes);
            cJSON_AddNumberToObject(rv, "files", v->n_files);
            cJSON_AddNumberToObject(rv, "last_modified", v->last_modified);
            cJSON_AddItemToArray(revs, rv);
        }
        cJSON_AddItemToArray(arr, o);
    }
    char *text = cJSON_Print(arr);
    printf("%s\n", text);
    free(text);
    cJSON_Delete(arr);
}

static void print_table(const nc_hub_cached_repo *repos, int n, const char *root) {
    printf("%-36s %-26s %10s  %s\n", "REPO", "REVISION", "SIZE", "LAST USED");
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        const nc_hub_cached_repo *r = &repos[i];
        char used[64], size[32], partial[32], rev[300];
        format_age(r->last_used, used, sizeof used);
        total += r->bytes + r->partial_bytes;
        for (int k = 0; k < NC_MAX(r->n_revs, 1); k++) {
            const nc_hub_cached_revision *v = r->n_revs ? &r->revs[k] : NULL;
            if (v) snprintf(rev, sizeof rev, "%s%s%.8s", v->refs[0] ? v->refs : "", v->refs[0] ? " " : "", v->commit);
            else snprintf(rev, sizeof rev, "-");
            nc_format_bytes(v ? v->bytes : 0, size, sizeof size);
            printf("%-36s %-26s %10s  %s\n", k ? "" : r->repo_id, rev, size, k ? "" : used);
        }
        if (r->partial_bytes) {
            nc_format_bytes(r->partial_bytes, partial, sizeof partial);
            printf("%-36s %-26s %10s  (run the same pull again to resume)\n", "", "partial download", partial);
        }
    }
    char t[32];
    nc_format_bytes(total, t, sizeof t);
    printf("%d model%s, %s in %s\n", n, n == 1 ? "" : "s", t, root);
}

int cmd_list(int argc, char **argv) {
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            list_usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--json")) {
            json = true;
            continue;
        }
        fprintf(stderr, "nanochat list: unknown option '%s' (see nanochat list --help)\n", argv[i]);
        return 2;
    }
    char root[PATH_MAX];
    nc_hub_cached_repo *repos;
    int n;
    if (nc_hub_cache_root(root, sizeof root) || nc_hub_cache_scan(root, &repos, &n)) {
        fprintf(stderr, "nanochat list: %s\n", nc_error());
        return 1;
    }
    if (json) print_json(repos, n);
    else print_table(repos, n, root);
    nc_hub_cache_scan_free(repos, n);
    return 0;
}

int cmd_rm(int argc, char **argv) {
    const char *spec = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            rm_usage(stdout);
            return 0;
        }
        if (argv[i][0] == '-' || spec) {
            fprintf(stderr, "nanochat rm: unexpected argument '%s' (see nanochat rm --help)\n", argv[i]);
            return 2;
        }
        spec = argv[i];
    }
    nc_hub_ref ref;
    if (!spec) {
        fprintf(stderr, "nanochat rm: give the model to remove, hf:OWNER/NAME[@REVISION] (`nanochat list` shows them)\n");
        return 2;
    }
    if (nc_hub_ref_parse(spec, &ref)) {
        fprintf(stderr, "nanochat rm: %s\n", nc_error());
        return 2;
    }
    if (ref.subdir[0]) {
        fprintf(stderr, "nanochat rm: remove a repository or a revision, not a folder: hf:%s%s%s\n", ref.repo_id,
                ref.has_revision ? "@" : "", ref.has_revision ? ref.revision : "");
        return 2;
    }
    char root[PATH_MAX];
    int64_t freed;
    if (nc_hub_cache_root(root, sizeof root) ||
        nc_hub_cache_remove(root, ref.repo_id, ref.has_revision ? ref.revision : NULL, &freed)) {
        fprintf(stderr, "nanochat rm: %s\n", nc_error());
        return 1;
    }
    char f[32];
    nc_format_bytes(freed, f, sizeof f);
    printf("removed hf:%s%s%s (%s freed)\n", ref.repo_id, ref.has_revision ? "@" : "", ref.has_revision ? ref.revision : "", f);
    return 0;
}

/* hub_api.c: a revision's commit and file list from the Hub's API (hub_api.h). */
#include "hub_api.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "util/common.h"

#define MAX_LISTING_BYTES ((size_t)64 << 20)

static bool is_hex(const char *s, size_t n) {
    if (strlen(s) != n) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

static bool size_of(const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0 && v->valuedouble < 9.0e15) ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return false;
    *out = (int64_t)v->valuedouble;
    return true;
}

/* One sibling -> file; false when it cannot be used safely. */
static bool parse_sibling(const cJSON *e, nc_hub_file *f) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "rfilename");
    if (!cJSON_IsString(name) || !nc_hub_path_is_safe(name->valuestring)) return false;
    const cJSON *lfs = cJSON_GetObjectItemCaseSensitive(e, "lfs");
    memset(f, 0, sizeof *f);
    if (cJSON_IsObject(lfs)) {
        const cJSON *sha = cJSON_GetObjectItemCaseSensitive(lfs, "sha256");
        if (!cJSON_IsString(sha) || !is_hex(sha->valuestring, 64) ||
            !size_of(cJSON_GetObjectItemCaseSensitive(lfs, "size"), &f->size))
            return false;
        snprintf(f->etag, sizeof f->etag, "%s", sha->valuestring);
        f->lfs = true;
    } else {
        const cJSON *blob = cJSON_GetObjectItemCaseSensitive(e, "blobId");
        if (!cJSON_IsString(blob) || !is_hex(blob->valuestring, 40) ||
            !size_of(cJSON_GetObjectItemCaseSensitive(e, "size"), &f->size))
            return false;
        snprintf(f->etag, sizeof f->etag, "%s", blob->valuestring);
    }
    f->path = nc_xstrdup(name->valuestring);
    return true;
}

int nc_hub_listing_parse(const char *json, size_t len, nc_hub_listing *out) {
    memset(out, 0, sizeof *out);
    cJSON *j = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return nc_fail("the Hub's API answered something that is not a JSON object");
    }
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(j, "sha");
    const cJSON *sib = cJSON_GetObjectItemCaseSensitive(j, "siblings");
    if (!cJSON_IsString(sha) || !is_hex(sha->valuestring, 40) || !cJSON_IsArray(sib)) {
        cJSON_Delete(j);
        return nc_fail("the Hub's API answer has no commit \"sha\" or no \"siblings\" list");
    }
    snprintf(out->commit, sizeof out->commit, "%s", sha->valuestring);
    int n = cJSON_GetArraySize(sib);
    out->files = nc_xcalloc((size_t)(n ? n : 1), sizeof *out->files);
    const cJSON *e;
    cJSON_ArrayForEach(e, sib) {
        bool dup = false;
        if (!parse_sibling(e, &out->files[out->n_files])) {
            out->n_unsafe++;
            continue;
        }
        for (int i = 0; i < out->n_files && !dup; i++) dup = !strcmp(out->files[i].path, out->files[out->n_files].path);
        if (dup) {
            free(out->files[out->n_files].path);
            out->n_unsafe++;
            continue;
        }
        out->n_files++;
    }
    cJSON_Delete(j);
    return 0;
}

void nc_hub_listing_free(nc_hub_listing *l) {
    for (int i = 0; i < l->n_files; i++) free(l->files[i].path);
    free(l->files);
    memset(l, 0, sizeof *l);
}

const nc_hub_file *nc_hub_listing_find(const nc_hub_listing *l, const char *path) {
    for (int i = 0; i < l->n_files; i++)
        if (!strcmp(l->files[i].path, path)) return &l->files[i];
    return NULL;
}

int nc_hub_listing_fetch(const nc_hub_http *s, const nc_hub_ref *ref, nc_hub_listing *out, bool *unreachable) {
    memset(out, 0, sizeof *out);
    *unreachable = false;
    char url[1024];
    snprintf(url, sizeof url, "%s/api/models/%s/revision/%s?blobs=true", s->endpoint, ref->repo_id, ref->revision);
    nc_hub_headers h;
    char *body;
    size_t len;
    CURLcode cc;
    if (nc_hub_http_get(s, url, MAX_LISTING_BYTES, &h, &body, &len, &cc)) {
        *unreachable = nc_hub_http_unreachable(cc);
        return nc_fail_context("cannot reach %s", s->endpoint);
    }
    int rc;
    if (h.status != 200) rc = nc_hub_http_fail(s, &h, ref->repo_id, ref->revision, NULL);
    else rc = nc_hub_listing_parse(body, len, out);
    free(body);
    return rc;
}

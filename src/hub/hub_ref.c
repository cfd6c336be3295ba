/* hub_ref.c: hf: references and repository paths (hub_ref.h). */
#include "hub_ref.h"

#include <stdio.h>
#include <string.h>

#include "util/common.h"

bool nc_hub_is_ref(const char *spec) { return spec && !strncmp(spec, "hf:", 3); }

static bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.';
}

/* An owner or repository name: [A-Za-z0-9._-]{1,96}, not starting or
 * ending with '-' or '.', no "--" or "..". */
static bool name_is_valid(const char *s, size_t n) {
    if (n == 0 || n > NC_HUB_NAME_MAX) return false;
    if (s[0] == '-' || s[0] == '.' || s[n - 1] == '-' || s[n - 1] == '.') return false;
    for (size_t i = 0; i < n; i++) {
        if (!name_char(s[i])) return false;
        if (i && (s[i] == '-' || s[i] == '.') && s[i - 1] == s[i]) return false;
    }
    return true;
}

/* A revision: a branch, tag or commit without '/', never "." or "..". */
static bool revision_is_valid(const char *s, size_t n) {
    if (n == 0 || n >= NC_HUB_REV_MAX) return false;
    if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) return false;
    for (size_t i = 0; i < n; i++)
        if (!name_char(s[i]) && s[i] != '+') return false;
    return true;
}

bool nc_hub_path_is_safe(const char *path) {
    size_t n = strlen(path);
    if (n == 0 || n >= NC_HUB_PATH_MAX || path[0] == '/') return false;
    const char *comp = path;
    for (size_t i = 0; i <= n; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c == '/' || c == 0) {
            size_t len = (size_t)(path + i - comp);
            if (len == 0 || (len == 1 && comp[0] == '.') || (len == 2 && comp[0] == '.' && comp[1] == '.'))
                return false;
            comp = path + i + 1;
        } else if (c < 0x20 || c == 0x7f || c == '\\') {
            return false;
        }
    }
    return true;
}

bool nc_hub_is_commit(const char *s) {
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) return false;
    }
    return n == 40;
}

int nc_hub_ref_parse(const char *spec, nc_hub_ref *out) {
    memset(out, 0, sizeof *out);
    if (!nc_hub_is_ref(spec)) return nc_fail("'%s' is not a Hub reference (expected hf:OWNER/NAME)", spec);
    const char *p = spec + 3;
    const char *slash = strchr(p, '/');
    if (!slash || !name_is_valid(p, (size_t)(slash - p)))
        return nc_fail("%s: expected hf:OWNER/NAME[@REVISION][/SUBDIR], with OWNER made of letters, digits, "
                       "'-', '_' and '.'", spec);
    const char *name = slash + 1;
    size_t name_len = strcspn(name, "@/");
    if (!name_is_valid(name, name_len))
        return nc_fail("%s: the repository name must be 1-%d letters, digits, '-', '_' or '.' (no '--' or '..')",
                       spec, NC_HUB_NAME_MAX);
    snprintf(out->repo_id, sizeof out->repo_id, "%.*s", (int)(name + name_len - p), p);
    const char *rest = name + name_len;
    snprintf(out->revision, sizeof out->revision, "main");
    if (*rest == '@') {
        const char *rev = rest + 1;
        size_t rev_len = strcspn(rev, "/");
        if (!revision_is_valid(rev, rev_len))
            return nc_fail("%s: bad revision after '@' (a branch, tag or commit of letters, digits, '-', '_', "
                           "'.' or '+')", spec);
        snprintf(out->revision, sizeof out->revision, "%.*s", (int)rev_len, rev);
        out->has_revision = true;
        rest = rev + rev_len;
    }
    if (*rest == '/') {
        size_t n = strlen(rest + 1);
        while (n > 0 && rest[1 + n - 1] == '/') n--;
        if (n >= sizeof out->subdir) return nc_fail("%s: the folder is too long", spec);
        snprintf(out->subdir, sizeof out->subdir, "%.*s", (int)n, rest + 1);
        if (n > 0 && !nc_hub_path_is_safe(out->subdir))
            return nc_fail("%s: bad folder '%s' (no '.', '..' or empty parts)", spec, out->subdir);
    }
    return 0;
}

void nc_hub_ref_format(const nc_hub_ref *r, char *buf, int cap) {
    snprintf(buf, (size_t)cap, "hf:%s%s%s%s%s", r->repo_id, r->has_revision ? "@" : "",
             r->has_revision ? r->revision : "", r->subdir[0] ? "/" : "", r->subdir);
}

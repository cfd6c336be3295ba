/*
 * hub_ref.h: the names the Hugging Face Hub layer accepts from outside,
 * checked before they reach a URL or a path.
 *
 *   hf:OWNER/NAME[@REVISION][/SUBDIR]   what follows -m (nc_hub_ref_parse)
 *   file names from the Hub's API       must stay inside the snapshot folder
 *                                       (nc_hub_path_is_safe)
 *
 * Repository names follow the Hub's rules (letters, digits, '-', '_', '.';
 * no "--" or ".." and at most 96 characters per part), so a name always maps
 * to exactly one cache folder `models--OWNER--NAME`. The revision ends at
 * the first '/' (a branch, a tag or a commit; the default is "main");
 * what follows is a folder inside the repository.
 */
#ifndef NC_HUB_HUB_REF_H
#define NC_HUB_HUB_REF_H

#include <stdbool.h>

#define NC_HUB_NAME_MAX 96   /* the Hub's limit on an owner or repository name */
#define NC_HUB_REV_MAX 256
#define NC_HUB_PATH_MAX 1024 /* a file's path inside a repository */

typedef struct {
    char repo_id[2 * NC_HUB_NAME_MAX + 2]; /* "owner/name" */
    char revision[NC_HUB_REV_MAX];         /* "main" unless @REVISION */
    char subdir[NC_HUB_PATH_MAX];          /* "" or "a/b" (no leading or trailing '/') */
    bool has_revision;                     /* @REVISION was written */
} nc_hub_ref;

/* Whether `spec` starts with "hf:" (the only scheme this layer serves). */
bool nc_hub_is_ref(const char *spec);

/* Parses "hf:OWNER/NAME[@REVISION][/SUBDIR]". Returns -1 with a message
 * naming the bad part (nc_error) for anything else. */
int nc_hub_ref_parse(const char *spec, nc_hub_ref *out);

/* "hf:owner/name[@rev][/subdir]" back, for messages (`buf` of cap bytes). */
void nc_hub_ref_format(const nc_hub_ref *r, char *buf, int cap);

/* A path inside a repository that is safe to create under a snapshot
 * folder: relative, made of non-empty components other than "." and "..",
 * printable ASCII or UTF-8 bytes without '\\' or control characters, and
 * shorter than NC_HUB_PATH_MAX. */
bool nc_hub_path_is_safe(const char *path);

/* Whether s is a full commit id: 40 lowercase or uppercase hex digits. */
bool nc_hub_is_commit(const char *s);

#endif /* NC_HUB_HUB_REF_H */

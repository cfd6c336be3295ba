/*
 * tokenizer_pkl.c: reads nanochat's tokenizer.pkl, the pickle of a
 * tiktoken Encoding (RustBPETokenizer.save: pickle.dump(enc, f)).
 *
 * tiktoken pickles an Encoding as NEWOBJ(tiktoken.core.Encoding) + BUILD
 * with its __getstate__ dict:
 *   {"name": str, "pat_str": str, "mergeable_ranks": {bytes: int},
 *    "special_tokens": {str: int}}
 * (or just the name, for encodings built into tiktoken, which we cannot
 * use: their ranks are not in the file). A bare state dict is accepted too.
 * The pickle is parsed by formats/pickle.c; nothing is executed.
 */
#include <stdlib.h>
#include <string.h>

#include "formats/pickle.h"
#include "tok_internal.h"
#include "util/common.h"

/* The state dict of the Encoding, or NULL + nc_error(). */
static const nc_pickle_obj *encoding_state(const nc_pickle_obj *root) {
    char desc[128];
    if (root->kind == NC_PK_DICT) return root;
    if (root->kind == NC_PK_OBJECT) {
        const nc_pickle_obj *cls = root->u.object.callable;
        if (!nc_pickle_is_global(cls, "tiktoken.core", "Encoding")) {
            nc_fail("tokenizer.pkl holds a %s, not a tiktoken Encoding",
                    nc_pickle_describe(cls, desc, sizeof desc));
            return NULL;
        }
        const nc_pickle_obj *st = root->u.object.state;
        if (st && st->kind == NC_PK_STR) {
            nc_fail("tokenizer.pkl refers to tiktoken's built-in encoding '%s'; its ranks are "
                    "not in the file", st->u.s);
            return NULL;
        }
        if (st && st->kind == NC_PK_DICT) return st;
        nc_fail("tokenizer.pkl: the Encoding has no state dict");
        return NULL;
    }
    nc_fail("tokenizer.pkl holds a %s, not a tiktoken Encoding",
            nc_pickle_describe(root, desc, sizeof desc));
    return NULL;
}

nc_tokenizer *nc_tokenizer_from_pickle(const uint8_t *data, size_t len) {
    nc_pickle *pk = nc_pickle_load(data, len);
    if (!pk) {
        nc_fail_context("tokenizer.pkl");
        return NULL;
    }
    nc_tokenizer *t = NULL;
    const uint8_t **bytes = NULL;
    size_t *lens = NULL;
    const char **snames = NULL;
    int32_t *sids = NULL;
    char desc[128];
    const nc_pickle_obj *st = encoding_state(nc_pickle_root(pk));
    if (!st) goto done;
    const nc_pickle_obj *pat = nc_pickle_dict_get(st, "pat_str");
    const nc_pickle_obj *ranks = nc_pickle_dict_get(st, "mergeable_ranks");
    const nc_pickle_obj *specials = nc_pickle_dict_get(st, "special_tokens");
    if (!pat || pat->kind != NC_PK_STR) {
        nc_fail("tokenizer.pkl: no pat_str string in the Encoding state");
        goto done;
    }
    if (strlen(pat->u.s) != pat->n) {
        nc_fail("tokenizer.pkl: pat_str contains a NUL character");
        goto done;
    }
    size_t n_pairs = 0, n_spairs = 0;
    if (!ranks || ranks->kind != NC_PK_DICT) {
        nc_fail("tokenizer.pkl: no mergeable_ranks dict in the Encoding state");
        goto done;
    }
    const nc_pickle_obj *const *rp = nc_pickle_pairs(ranks, &n_pairs);
    if (specials && specials->kind != NC_PK_DICT) {
        nc_fail("tokenizer.pkl: special_tokens is a %s, not a dict",
                nc_pickle_describe(specials, desc, sizeof desc));
        goto done;
    }
    const nc_pickle_obj *const *sp = specials ? nc_pickle_pairs(specials, &n_spairs) : NULL;
    if (n_pairs == 0 || !rp) {
        nc_fail("tokenizer.pkl: mergeable_ranks is empty");
        goto done;
    }
    if (n_pairs > (1u << 26)) {
        nc_fail("tokenizer.pkl: %zu mergeable ranks is too many", n_pairs);
        goto done;
    }
    int64_t max_rank = -1;
    for (size_t i = 0; i < n_pairs; i++) {
        const nc_pickle_obj *k = rp[2 * i], *v = rp[2 * i + 1];
        if (k->kind != NC_PK_BYTES || k->n == 0 || v->kind != NC_PK_INT || v->u.i < 0 ||
            v->u.i >= 4 * (int64_t)n_pairs + 1024) {
            nc_fail("tokenizer.pkl: mergeable_ranks entry %zu is %s -> %s, expected bytes -> "
                    "rank", i, nc_pickle_describe(k, desc, sizeof desc),
                    v->kind == NC_PK_INT ? "an out-of-range int" : nc_pickle_kind_name(v->kind));
            goto done;
        }
        if (v->u.i > max_rank) max_rank = v->u.i;
    }
    int32_t n_ranks = (int32_t)max_rank + 1;
    bytes = nc_xcalloc((size_t)n_ranks, sizeof *bytes);
    lens = nc_xcalloc((size_t)n_ranks, sizeof *lens);
    for (size_t i = 0; i < n_pairs; i++) {
        int32_t r = (int32_t)rp[2 * i + 1]->u.i;
        if (bytes[r]) {
            nc_fail("tokenizer.pkl: rank %d is given to two tokens", r);
            goto done;
        }
        bytes[r] = (const uint8_t *)rp[2 * i]->u.s;
        lens[r] = rp[2 * i]->n;
    }
    snames = nc_xcalloc(n_spairs + 1, sizeof *snames);
    sids = nc_xcalloc(n_spairs + 1, sizeof *sids);
    for (size_t i = 0; i < n_spairs; i++) {
        const nc_pickle_obj *k = sp[2 * i], *v = sp[2 * i + 1];
        if (k->kind != NC_PK_STR || strlen(k->u.s) != k->n || v->kind != NC_PK_INT ||
            v->u.i < 0 || v->u.i > (1 << 28)) {
            nc_fail("tokenizer.pkl: special_tokens entry %zu is %s, expected str -> id", i,
                    nc_pickle_describe(k, desc, sizeof desc));
            goto done;
        }
        snames[i] = k->u.s;
        sids[i] = (int32_t)v->u.i;
    }
    t = nc_tokenizer_from_ranks(pat->u.s, bytes, lens, n_ranks, snames, sids, (int)n_spairs);
done:
    free(bytes);
    free(lens);
    free(snames);
    free(sids);
    nc_pickle_free(pk);
    return t;
}

/*
 * tokenizer_json.c: reads the tokenizer.json of a Hugging Face copy of a
 * nanochat model.
 *
 * transformers' nanochat converter turns tokenizer.pkl into tokenizer.json
 * with TikTokenConverter: model.vocab maps each token's bytes, spelled with
 * GPT-2's byte-to-unicode alphabet, to its tiktoken rank; model.merges are
 * derived from those ranks (and ignore_merges is set, i.e. whole pieces
 * are looked up first, as tiktoken does); added_tokens hold the 9 specials;
 * pre_tokenizer is Sequence[Split(Regex(pattern)), ByteLevel(use_regex
 * false)]. So the vocab ids *are* the mergeable ranks and we can rebuild
 * the tiktoken tokenizer exactly from the vocab, the Split regex and the
 * added tokens; merges are not needed.
 *
 * GPT-2's alphabet: the printable bytes 0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF stand
 * for themselves (as code points); the other 68 bytes, in increasing order,
 * are spelled U+0100, U+0101, ...
 */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "util/common.h"

/* Code point -> byte for GPT-2's alphabet (code points < 0x144). */
#define GPT2_CODEPOINTS 0x144

static void gpt2_byte_decoder(int16_t dec[GPT2_CODEPOINTS]) {
    for (int c = 0; c < GPT2_CODEPOINTS; c++) dec[c] = -1;
    int next = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        if (printable)
            dec[b] = (int16_t)b;
        else
            dec[256 + next++] = (int16_t)b;
    }
}

/* Decodes one vocab key into bytes (out has room for strlen(key) bytes).
 * Returns the byte count, or -1 if a character is outside the alphabet. */
static long decode_key(const char *key, const int16_t *dec, uint8_t *out) {
    const uint8_t *p = (const uint8_t *)key;
    long n = 0;
    while (*p) {
        uint32_t cp;
        if (p[0] < 0x80) {
            cp = p[0];
            p += 1;
        } else if ((p[0] & 0xE0) == 0xC0 && (p[1] & 0xC0) == 0x80) {
            cp = ((uint32_t)(p[0] & 0x1F) << 6) | (p[1] & 0x3F);
            p += 2;
        } else {
            return -1; /* every GPT-2 code point is below U+0800 */
        }
        if (cp >= GPT2_CODEPOINTS || dec[cp] < 0) return -1;
        out[n++] = (uint8_t)dec[cp];
    }
    return n;
}

/* The Regex of the first Split pre-tokenizer (alone or inside a Sequence). */
static const char *split_pattern(const cJSON *pre) {
    if (!cJSON_IsObject(pre)) return NULL;
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(pre, "type");
    if (!cJSON_IsString(type)) return NULL;
    if (!strcmp(type->valuestring, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(pre, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        return cJSON_IsString(re) ? re->valuestring : NULL;
    }
    if (!strcmp(type->valuestring, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
        const cJSON *item;
        cJSON_ArrayForEach(item, list) {
            const char *p = split_pattern(item);
            if (p) return p;
        }
    }
    return NULL;
}

/* An integer id in 0..2^28 from a JSON number, or -1. */
static int32_t json_id(const cJSON *v) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= (1 << 28)) || d != (double)(int32_t)d) return -1;
    return (int32_t)d;
}

nc_tokenizer *nc_tokenizer_from_hf_json(const char *data, size_t len) {
    cJSON *root = cJSON_ParseWithLength(data, len);
    nc_tokenizer *t = NULL;
    uint8_t **bytes = NULL;
    size_t *lens = NULL;
    const char **snames = NULL;
    int32_t *sids = NULL;
    int n_special = 0;
    int32_t n_ranks = 0;
    if (!root) {
        nc_fail("tokenizer.json: invalid JSON near byte %zu",
                cJSON_GetErrorPtr() ? (size_t)(cJSON_GetErrorPtr() - data) : (size_t)0);
        return NULL;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(model) || !cJSON_IsObject(vocab)) {
        nc_fail("tokenizer.json: no model.vocab object");
        goto done;
    }
    if (cJSON_IsString(mtype) && strcmp(mtype->valuestring, "BPE") != 0) {
        nc_fail("tokenizer.json: model type '%s' is not a byte-level BPE", mtype->valuestring);
        goto done;
    }
    const char *pattern = split_pattern(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"));
    if (!pattern) {
        nc_fail("tokenizer.json: no Split pre-tokenizer with a Regex pattern "
                "(nanochat's tokenizer.json has one)");
        goto done;
    }

    /* Added tokens are the specials; their ids are excluded from the ranks. */
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    int n_added = cJSON_GetArraySize(added);
    snames = nc_xcalloc((size_t)n_added + 1, sizeof *snames);
    sids = nc_xcalloc((size_t)n_added + 1, sizeof *sids);
    const cJSON *item;
    cJSON_ArrayForEach(item, added) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(item, "content");
        int32_t id = json_id(cJSON_GetObjectItemCaseSensitive(item, "id"));
        if (!cJSON_IsString(content) || id < 0) {
            nc_fail("tokenizer.json: added token %d lacks a content string or a valid id", n_special);
            goto done;
        }
        snames[n_special] = content->valuestring;
        sids[n_special++] = id;
    }

    int n_vocab = cJSON_GetArraySize(vocab);
    cJSON_ArrayForEach(item, vocab) {
        int32_t id = json_id(item);
        if (id < 0) {
            nc_fail("tokenizer.json: vocab entry '%.40s' has an invalid id", item->string);
            goto done;
        }
        if (id + 1 > n_ranks) n_ranks = id + 1;
    }
    if (n_ranks > 4 * n_vocab + 1024) {
        nc_fail("tokenizer.json: vocab ids reach %d for %d entries", n_ranks - 1, n_vocab);
        goto done;
    }
    bytes = nc_xcalloc((size_t)n_ranks + 1, sizeof *bytes);
    lens = nc_xcalloc((size_t)n_ranks + 1, sizeof *lens);
    int16_t dec[GPT2_CODEPOINTS];
    gpt2_byte_decoder(dec);
    cJSON_ArrayForEach(item, vocab) {
        int32_t id = json_id(item);
        bool is_special = false;
        for (int s = 0; s < n_special; s++) is_special |= sids[s] == id;
        if (is_special) continue;
        if (bytes[id]) {
            nc_fail("tokenizer.json: id %d appears twice in the vocab", id);
            goto done;
        }
        size_t klen = strlen(item->string);
        bytes[id] = nc_xmalloc(klen + 1);
        long n = decode_key(item->string, dec, bytes[id]);
        if (n <= 0) {
            nc_fail("tokenizer.json: vocab entry '%.40s' (id %d) is not spelled in GPT-2's "
                    "byte alphabet", item->string, id);
            goto done;
        }
        lens[id] = (size_t)n;
    }
    /* Trailing holes (e.g. the specials' ids at the end) are not ranks. */
    while (n_ranks > 0 && !bytes[n_ranks - 1]) n_ranks--;
    t = nc_tokenizer_from_ranks(pattern, (const uint8_t *const *)bytes, lens, n_ranks, snames, sids,
                                n_special);
done:
    if (bytes)
        for (int32_t r = 0; r < n_ranks; r++) free(bytes[r]);
    free(bytes);
    free(lens);
    free(snames);
    free(sids);
    cJSON_Delete(root);
    return t;
}

/*
 * tokenizer.c: the tokenizer object: building it from ranks, loading it
 * from a file, special tokens, encoding and decoding (tokenizer.h).
 *
 * Mirrors nanochat's RustBPETokenizer (nanochat/tokenizer.py), which wraps
 * a tiktoken Encoding: encode() is tiktoken's encode_ordinary (specials
 * typed in the text stay plain text), decode() joins token bytes and
 * decodes UTF-8 with errors="replace".
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "util/common.h"

/* ==== token arrays ==== */

void nc_tokens_push(nc_tokens *t, int32_t id) {
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->ids = nc_xrealloc(t->ids, t->cap * sizeof *t->ids);
    }
    t->ids[t->n++] = id;
}

void nc_tokens_append(nc_tokens *t, const int32_t *ids, size_t n) {
    if (t->n + n > t->cap) {
        size_t cap = t->cap ? t->cap : 64;
        while (cap < t->n + n) cap *= 2;
        t->ids = nc_xrealloc(t->ids, cap * sizeof *t->ids);
        t->cap = cap;
    }
    if (n) memcpy(t->ids + t->n, ids, n * sizeof *ids);
    t->n += n;
}

void nc_tokens_free(nc_tokens *t) {
    free(t->ids);
    t->ids = NULL;
    t->n = t->cap = 0;
}

/* ==== special tokens ==== */

static const char *const special_texts[NC_TOK_SPECIAL_COUNT] = {
    "<|bos|>",           "<|user_start|>",   "<|user_end|>",
    "<|assistant_start|>", "<|assistant_end|>", "<|python_start|>",
    "<|python_end|>",    "<|output_start|>", "<|output_end|>",
};

const char *nc_special_token_text(nc_special_token s) {
    NC_ASSERT(s >= 0 && s < NC_TOK_SPECIAL_COUNT);
    return special_texts[s];
}

int32_t nc_tokenizer_special_id(const nc_tokenizer *t, nc_special_token s) {
    if (s < 0 || s >= NC_TOK_SPECIAL_COUNT) return -1;
    return t->nanochat[s];
}

int32_t nc_tokenizer_special_by_name(const nc_tokenizer *t, const char *name) {
    for (int i = 0; i < t->n_special; i++)
        if (!strcmp(t->specials[i].name, name)) return t->specials[i].id;
    return -1;
}

int nc_tokenizer_is_special(const nc_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->vocab && t->special_of_id[id] >= 0;
}

int nc_tokenizer_vocab_size(const nc_tokenizer *t) { return t->vocab; }

size_t nc_tokenizer_max_token_bytes(const nc_tokenizer *t) {
    size_t m = t->ranks.max_len;
    for (int i = 0; i < t->n_special; i++) m = NC_MAX(m, t->specials[i].len);
    return m;
}

const char *nc_tokenizer_pattern(const nc_tokenizer *t) { return t->pattern; }

/* ==== building ==== */

nc_tokenizer *nc_tokenizer_from_ranks(const char *pattern, const uint8_t *const *token_bytes,
                                      const size_t *token_lens, int n_ranks,
                                      const char *const *special_names, const int32_t *special_ids,
                                      int n_special) {
    if (n_special < 0 || n_special > 1 << 20) {
        nc_fail("tokenizer: %d special tokens", n_special);
        return NULL;
    }
    nc_tokenizer *t = nc_xcalloc(1, sizeof *t);
    if (nc_rank_table_init(&t->ranks, token_bytes, token_lens, n_ranks) != 0) {
        free(t);
        return NULL;
    }
    t->pattern = nc_xstrdup(pattern ? pattern : NC_NANOCHAT_PATTERN);
    t->vocab = n_ranks;
    for (int i = 0; i < NC_TOK_SPECIAL_COUNT; i++) t->nanochat[i] = -1;
    t->specials = nc_xcalloc((size_t)n_special + 1, sizeof *t->specials);
    for (int i = 0; i < n_special; i++) {
        int32_t id = special_ids[i];
        const char *name = special_names[i];
        if (!name || !*name) {
            nc_fail("tokenizer: special token %d has an empty name", id);
            goto fail;
        }
        if (id < 0 || id > (1 << 28)) {
            nc_fail("tokenizer: special token '%s' has id %d", name, id);
            goto fail;
        }
        if (id < n_ranks && t->ranks.offs[id + 1] > t->ranks.offs[id]) {
            nc_fail("tokenizer: special token '%s' has id %d, already a mergeable token", name, id);
            goto fail;
        }
        if (nc_tokenizer_special_by_name(t, name) >= 0) {
            nc_fail("tokenizer: special token '%s' appears twice", name);
            goto fail;
        }
        t->specials[i] = (nc_special_entry){nc_xstrdup(name), strlen(name), id};
        t->n_special = i + 1;
        t->vocab = NC_MAX(t->vocab, id + 1);
        for (int s = 0; s < NC_TOK_SPECIAL_COUNT; s++)
            if (!strcmp(name, special_texts[s])) t->nanochat[s] = id;
    }
    /* id -> special index; a special may also sit in a hole of the ranks
     * (Hugging Face-trained vocabularies put them first). */
    t->special_of_id = nc_xmalloc((size_t)t->vocab * sizeof *t->special_of_id);
    for (int32_t i = 0; i < t->vocab; i++) t->special_of_id[i] = -1;
    for (int i = 0; i < t->n_special; i++) {
        int32_t id = t->specials[i].id;
        if (t->special_of_id[id] >= 0) {
            nc_fail("tokenizer: special tokens '%s' and '%s' share id %d",
                    t->specials[t->special_of_id[id]].name, t->specials[i].name, id);
            goto fail;
        }
        t->special_of_id[id] = i;
    }
    t->re = nc_pretok_new(t->pattern);
    if (!t->re) goto fail;
    return t;
fail:
    nc_tokenizer_free(t);
    return NULL;
}

void nc_tokenizer_free(nc_tokenizer *t) {
    if (!t) return;
    nc_rank_table_free(&t->ranks);
    nc_pretok_free(t->re);
    free(t->pattern);
    for (int i = 0; i < t->n_special; i++) free(t->specials[i].name);
    free(t->specials);
    free(t->special_of_id);
    free(t);
}

/* ==== loading ==== */

/* Reads a whole file; NULL + nc_error() on failure. */
static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        nc_fail("cannot open tokenizer '%s': %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap + 1);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        if (cap > ((size_t)1 << 32)) {
            free(buf);
            buf = NULL;
            nc_fail("tokenizer '%s' is larger than 4 GiB", path);
            fclose(f);
            return NULL;
        }
        cap *= 2;
        uint8_t *nb = realloc(buf, cap + 1);
        if (!nb) free(buf);
        buf = nb;
    }
    if (!buf) {
        fclose(f);
        nc_fail("out of memory reading tokenizer '%s'", path);
        return NULL;
    }
    if (ferror(f)) {
        nc_fail("cannot read tokenizer '%s': %s", path, strerror(errno));
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

nc_tokenizer *nc_tokenizer_load(const char *path) {
    size_t len;
    uint8_t *data = read_file(path, &len);
    if (!data) return NULL;
    size_t i = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r')) i++;
    nc_tokenizer *t = NULL;
    if (len == 0) {
        nc_fail("tokenizer file is empty");
    } else if (data[0] == 0x80) { /* pickle PROTO opcode: tokenizer.pkl */
        t = nc_tokenizer_from_pickle(data, len);
    } else if (i < len && data[i] == '{') {
        t = nc_tokenizer_from_hf_json((const char *)data, len);
    } else {
        nc_fail("not a tokenizer.pkl (pickle) or tokenizer.json (JSON object)");
    }
    free(data);
    if (!t) nc_fail_context("loading tokenizer '%s'", path);
    return t;
}

/* ==== encoding ==== */

/* Encodes valid UTF-8 text. */
static int encode_valid(const nc_tokenizer *t, const uint8_t *text, size_t len, nc_tokens *out) {
    nc_pretok_iter it;
    nc_pretok_iter_init(&it, t->re, text, len);
    size_t s, e;
    int rc;
    while ((rc = nc_pretok_next(&it, &s, &e)) == 1) {
        if (nc_bpe_encode_piece(&t->ranks, text + s, e - s, out) != 0) {
            rc = -1;
            break;
        }
    }
    nc_pretok_iter_done(&it);
    return rc;
}

int nc_tokenizer_encode(const nc_tokenizer *t, const char *text, size_t len, nc_tokens *out) {
    if (len >= UINT32_MAX) return nc_fail("tokenizer: text of %zu bytes is too long (< 4 GiB)", len);
    const uint8_t *p = (const uint8_t *)text;
    size_t valid = nc_utf8_valid_prefix(p, len);
    if (valid == len) return encode_valid(t, p, len, out);
    /* Invalid UTF-8 is read the way Python reads bytes with
     * errors="replace": each bad sequence becomes U+FFFD. */
    if (len > SIZE_MAX / 3 - 1) return nc_fail("tokenizer: text too long");
    uint8_t *clean = malloc(3 * len + 1);
    if (!clean) return nc_fail("tokenizer: out of memory for %zu bytes of text", len);
    size_t n = nc_utf8_replace(p, len, clean, true, NULL);
    int rc = n >= UINT32_MAX ? nc_fail("tokenizer: text too long") : encode_valid(t, clean, n, out);
    free(clean);
    return rc;
}

/* ==== decoding ==== */

const uint8_t *nc_tokenizer_token_bytes(const nc_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->vocab) return NULL;
    if (id < t->ranks.n_ranks) {
        uint32_t a = t->ranks.offs[id], b = t->ranks.offs[id + 1];
        if (a < b) {
            *len = b - a;
            return t->ranks.blob + a;
        }
    }
    int32_t si = t->special_of_id[id];
    if (si < 0) return NULL; /* a hole */
    *len = t->specials[si].len;
    return (const uint8_t *)t->specials[si].name;
}

char *nc_tokenizer_decode(const nc_tokenizer *t, const int32_t *ids, size_t n, size_t *out_len) {
    size_t total = 0, len;
    for (size_t i = 0; i < n; i++) {
        if (!nc_tokenizer_token_bytes(t, ids[i], &len)) {
            nc_fail("token id %d is not in the vocabulary (0..%d)", ids[i], t->vocab - 1);
            return NULL;
        }
        total += len;
    }
    uint8_t *raw = malloc(total + 1);
    char *text = total <= (SIZE_MAX - 1) / 3 ? malloc(3 * total + 1) : NULL;
    if (!raw || !text) {
        free(raw);
        free(text);
        nc_fail("out of memory decoding %zu tokens", n);
        return NULL;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *b = nc_tokenizer_token_bytes(t, ids[i], &len);
        memcpy(raw + off, b, len);
        off += len;
    }
    size_t m = nc_utf8_replace(raw, total, (uint8_t *)text, true, NULL);
    free(raw);
    text[m] = 0;
    if (out_len) *out_len = m;
    return text;
}

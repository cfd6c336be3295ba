/*
 * tok_internal.h: the tokenizer's private pieces, shared by the files of
 * src/tokenizer/ only (the public contract is tokenizer.h).
 *
 *   bpe.c          the rank table (byte string -> rank) and the merge loop
 *   pretokenize.c  the PCRE2 split of text into pieces
 *   utf8.c         UTF-8 validation and Python-compatible replacement
 *                  (its contract, utf8.h, is public: the server uses it too)
 *   tokenizer.c    building, loading, encode/decode, special tokens
 *
 * Vocabulary layout (tiktoken): ids 0..n_ranks-1 are mergeable tokens whose
 * id is also their merge priority (lower merges first); special tokens
 * carry their own ids, normally right after the ranks. A rank table may
 * have holes (an id with no bytes), which tiktoken allows too.
 */
#ifndef NC_TOKENIZER_TOK_INTERNAL_H
#define NC_TOKENIZER_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"
#include "utf8.h"

/* nanochat's split pattern (docs/model.md, Tokenizer): GPT-4's with \p{N}{1,2}. */
#define NC_NANOCHAT_PATTERN                                                             \
    "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}{1,2}| ?[^\\s\\p{L}\\p{N}]++" \
    "[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"

/* ==== rank table (bpe.c) ==== */

/* One 16-byte slot: a key of up to 8 bytes is compared without touching
 * the blob (most lookups are short pairs during merging). */
typedef struct {
    uint64_t head; /* the key's first 8 bytes, zero-padded, little-endian */
    int32_t rank;  /* -1 = empty slot */
    uint32_t len;  /* key length in bytes */
} nc_rank_slot;

/* Open-addressing hash of byte strings -> rank; the bytes live in one blob. */
typedef struct {
    int32_t n_ranks;      /* ids 0..n_ranks-1 (some may be holes) */
    uint8_t *blob;        /* every token's bytes, back to back */
    uint32_t *offs;       /* [n_ranks + 1]: token r is blob[offs[r] .. offs[r+1]) */
    nc_rank_slot *slots;  /* [mask + 1] */
    uint32_t mask;        /* capacity - 1, capacity a power of two >= 2 n_ranks */
    int32_t byte_rank[256]; /* rank of each single byte */
    size_t max_len;       /* longest token in bytes */
} nc_rank_table;

/* Builds the table from token_bytes[r] / token_lens[r] (a NULL or
 * zero-length entry is a hole). Fails on a duplicate token, a missing
 * single byte, or more than 4 GiB of token bytes. */
int nc_rank_table_init(nc_rank_table *tab, const uint8_t *const *token_bytes,
                       const size_t *token_lens, int32_t n_ranks);
void nc_rank_table_free(nc_rank_table *tab);

/* Rank of the byte string p[0..n), or -1. */
int32_t nc_rank_lookup(const nc_rank_table *tab, const uint8_t *p, size_t n);

/* Byte-pair encodes one piece (tiktoken's byte_pair_merge): appends its
 * ids to out. Pieces must be shorter than 4 GiB. -1 only when out of
 * memory for a very long piece. */
int nc_bpe_encode_piece(const nc_rank_table *tab, const uint8_t *p, size_t n, nc_tokens *out);

/* ==== pre-tokenizer (pretokenize.c) ==== */

typedef struct nc_pretok nc_pretok;

/* Compiles `pattern` (PCRE2 syntax, UTF + UCP, JIT when available). */
nc_pretok *nc_pretok_new(const char *pattern);
void nc_pretok_free(nc_pretok *re);

/* One pass over a text: owns its match data, so any number of passes may
 * run on one nc_pretok from different threads at once. */
typedef struct {
    const nc_pretok *re;
    const void *code;  /* pcre2_code_8 *: the pattern this pass runs */
    void *match_data;  /* pcre2_match_data_8 * */
    void *match_ctx;   /* pcre2_match_context_8 *, only after a JIT stack overflow */
    void *jit_stack;   /* pcre2_jit_stack_8 *, idem */
    const uint8_t *text;
    size_t len, pos;
} nc_pretok_iter;

/* `text` must be valid UTF-8 (nc_utf8_valid): it is not re-checked. */
void nc_pretok_iter_init(nc_pretok_iter *it, const nc_pretok *re, const uint8_t *text, size_t len);
/* Next piece [*start, *end): 1, or 0 at the end, or -1 + nc_error(). */
int nc_pretok_next(nc_pretok_iter *it, size_t *start, size_t *end);
void nc_pretok_iter_done(nc_pretok_iter *it);

/* ==== the tokenizer object (tokenizer.c) ==== */

typedef struct {
    char *name;   /* "<|bos|>" */
    size_t len;
    int32_t id;
} nc_special_entry;

struct nc_tokenizer {
    nc_rank_table ranks;
    nc_pretok *re;
    char *pattern;
    nc_special_entry *specials; /* [n_special] */
    int n_special;
    int32_t vocab;               /* max id + 1 */
    int32_t *special_of_id;      /* [vocab]: index into specials, or -1 */
    int32_t nanochat[NC_TOK_SPECIAL_COUNT]; /* id of each nanochat special, or -1 */
};

/* Format readers: each returns a tokenizer built with
 * nc_tokenizer_from_ranks, or NULL + nc_error(). `data` is the whole file. */
nc_tokenizer *nc_tokenizer_from_pickle(const uint8_t *data, size_t len);
nc_tokenizer *nc_tokenizer_from_hf_json(const char *data, size_t len);

#endif /* NC_TOKENIZER_TOK_INTERNAL_H */

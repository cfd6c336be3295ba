/*
 * tokenizer.h: nanochat's byte-level BPE with tiktoken semantics
 * (docs/model.md, Tokenizer), the chat renderer (docs/model.md, Chat format)
 * and a streaming decoder.
 *
 * Encoding: split the text with nanochat's regex (PCRE2, Unicode, JIT),
 * then merge each chunk's bytes by lowest rank until no adjacent pair is in
 * the table. Special tokens are only ever produced by nc_tokenizer_special /
 * the chat renderer: text a user types is always encoded "ordinarily".
 */
#ifndef NC_TOKENIZER_TOKENIZER_H
#define NC_TOKENIZER_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

/* A growable array of token ids. */
typedef struct {
    int32_t *ids;
    size_t n;
    size_t cap;
} nc_tokens;

void nc_tokens_push(nc_tokens *t, int32_t id);
void nc_tokens_append(nc_tokens *t, const int32_t *ids, size_t n);
void nc_tokens_free(nc_tokens *t);

typedef struct nc_tokenizer nc_tokenizer;

/* The nine special tokens, in id order after the mergeable ranks. */
typedef enum {
    NC_TOK_BOS = 0,
    NC_TOK_USER_START,
    NC_TOK_USER_END,
    NC_TOK_ASSISTANT_START,
    NC_TOK_ASSISTANT_END,
    NC_TOK_PYTHON_START,
    NC_TOK_PYTHON_END,
    NC_TOK_OUTPUT_START,
    NC_TOK_OUTPUT_END,
    NC_TOK_SPECIAL_COUNT
} nc_special_token;

const char *nc_special_token_text(nc_special_token s); /* "<|bos|>", ... */

/* Loads tokenizer.pkl (pickled tiktoken Encoding state) or tokenizer.json
 * (Hugging Face), chosen by content. NULL + nc_error() on failure. */
nc_tokenizer *nc_tokenizer_load(const char *path);

/* Builds a tokenizer from ranks: token_bytes[r] / token_lens[r] for
 * r = 0..n_ranks-1, plus special tokens by name and id. Copies everything. */
nc_tokenizer *nc_tokenizer_from_ranks(const char *pattern, const uint8_t *const *token_bytes,
                                      const size_t *token_lens, int n_ranks,
                                      const char *const *special_names, const int32_t *special_ids,
                                      int n_special);

void nc_tokenizer_free(nc_tokenizer *t);

/* Ids in use: n_ranks + specials (highest id + 1). */
int nc_tokenizer_vocab_size(const nc_tokenizer *t);

/* Id of a nanochat special token, or -1 if this tokenizer lacks it. */
int32_t nc_tokenizer_special_id(const nc_tokenizer *t, nc_special_token s);
/* Id of a special token by its text ("<|bos|>"), or -1. */
int32_t nc_tokenizer_special_by_name(const nc_tokenizer *t, const char *name);
int nc_tokenizer_is_special(const nc_tokenizer *t, int32_t id);

/* Ordinary encoding of `len` bytes of UTF-8 text: appends ids to `out`.
 * Never produces special tokens. Thread-safe (the tokenizer is read-only).
 * Invalid UTF-8 is first decoded as Python's errors="replace" would (each
 * bad sequence becomes U+FFFD). */
int nc_tokenizer_encode(const nc_tokenizer *t, const char *text, size_t len, nc_tokens *out);

/* The bytes of one token (specials give their text). NULL for an unknown id. */
const uint8_t *nc_tokenizer_token_bytes(const nc_tokenizer *t, int32_t id, size_t *len);

/* The longest token in bytes (specials included): size stream buffers with
 * 4 * this + 8. */
size_t nc_tokenizer_max_token_bytes(const nc_tokenizer *t);

/* The split regex this tokenizer uses (from its file, or nanochat's). */
const char *nc_tokenizer_pattern(const nc_tokenizer *t);

/* Decodes ids to UTF-8 (invalid sequences become U+FFFD, as Python's
 * errors="replace"). Returns a malloc'ed NUL-terminated string, or NULL
 * with nc_error() if an id is out of range. */
char *nc_tokenizer_decode(const nc_tokenizer *t, const int32_t *ids, size_t n, size_t *out_len);

/* ==== streaming decode ==== */

/* Holds back the bytes of an incomplete UTF-8 character until the tokens
 * that complete it arrive; never emits half a character. */
typedef struct {
    uint8_t pending[8];
    int n_pending;
} nc_stream_decoder;

/* Feeds one token; writes the newly complete text to `out` (capacity
 * `cap`, at least 4 * max token length + 8, see
 * nc_tokenizer_max_token_bytes) and returns its length, or -1 for an
 * unknown id (or a too small `out`). Malformed bytes become U+FFFD at once;
 * the joined output equals nc_tokenizer_decode of the whole stream.
 * Never allocates. Start from a zeroed decoder. */
int nc_stream_decode(nc_stream_decoder *d, const nc_tokenizer *t, int32_t id, char *out, size_t cap);
/* Flushes whatever is pending (as U+FFFD) at the end of a stream. */
int nc_stream_flush(nc_stream_decoder *d, char *out, size_t cap);

/* ==== chat rendering ==== */

typedef enum { NC_ROLE_SYSTEM, NC_ROLE_USER, NC_ROLE_ASSISTANT } nc_role;

typedef struct {
    nc_role role;
    const char *content;
    size_t len;
} nc_chat_message;

/* Renders a conversation as nanochat does (docs/model.md, Chat format): <|bos|>, then each
 * message wrapped in its start/end tokens, then <|assistant_start|>. A system
 * message is merged into the first user message as system + "\n\n" + user.
 * Like nanochat's web server, roles need not alternate. Fails (clear
 * message) on an empty conversation or a system message that is not first.
 * Appends to `out`. */
int nc_chat_render(const nc_tokenizer *t, const nc_chat_message *msgs, int n_msgs, nc_tokens *out);

#endif /* NC_TOKENIZER_TOKENIZER_H */

/*
 * chat.c: renders a conversation into token ids the way nanochat does.
 *
 * Mirrors nanochat's chat_web.py / chat_cli.py prompt building plus the
 * system-message surgery of RustBPETokenizer.render_conversation:
 *
 *   <|bos|>
 *   <|user_start|> encode(user text) <|user_end|>            per user message
 *   <|assistant_start|> encode(text) <|assistant_end|>       per assistant message
 *   <|assistant_start|>                                      the model answers here
 *
 * A leading system message is merged into the following user message as
 * system + "\n\n" + user and encoded as one text (not two encodings glued
 * together: BPE pieces may cross the join).
 */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "util/common.h"

int nc_chat_render(const nc_tokenizer *t, const nc_chat_message *msgs, int n_msgs, nc_tokens *out) {
    if (n_msgs <= 0) return nc_fail("chat: the conversation has no messages");
    static const nc_special_token needed[] = {NC_TOK_BOS, NC_TOK_USER_START, NC_TOK_USER_END,
                                              NC_TOK_ASSISTANT_START, NC_TOK_ASSISTANT_END};
    for (size_t i = 0; i < NC_ARRAY_LEN(needed); i++) {
        if (nc_tokenizer_special_id(t, needed[i]) < 0)
            return nc_fail("chat: the tokenizer has no %s token", nc_special_token_text(needed[i]));
    }
    for (int i = 0; i < n_msgs; i++) {
        if (msgs[i].role != NC_ROLE_SYSTEM && msgs[i].role != NC_ROLE_USER &&
            msgs[i].role != NC_ROLE_ASSISTANT)
            return nc_fail("chat: message %d has an unknown role", i);
        if (msgs[i].role == NC_ROLE_SYSTEM && i > 0)
            return nc_fail("chat: message %d is a system message; only the first may be", i);
        if (!msgs[i].content && msgs[i].len)
            return nc_fail("chat: message %d has no content", i);
    }
    int first = 0;
    char *merged = NULL;
    size_t merged_len = 0;
    if (msgs[0].role == NC_ROLE_SYSTEM) {
        if (n_msgs < 2 || msgs[1].role != NC_ROLE_USER)
            return nc_fail("chat: a system message must be followed by a user message");
        merged_len = msgs[0].len + 2 + msgs[1].len;
        merged = malloc(merged_len + 1);
        if (!merged) return nc_fail("chat: out of memory");
        if (msgs[0].len) memcpy(merged, msgs[0].content, msgs[0].len);
        memcpy(merged + msgs[0].len, "\n\n", 2);
        if (msgs[1].len) memcpy(merged + msgs[0].len + 2, msgs[1].content, msgs[1].len);
        merged[merged_len] = 0;
        first = 1;
    }
    size_t n0 = out->n;
    int rc = 0;
    nc_tokens_push(out, nc_tokenizer_special_id(t, NC_TOK_BOS));
    for (int i = first; i < n_msgs && rc == 0; i++) {
        bool user = msgs[i].role == NC_ROLE_USER;
        const char *text = msgs[i].content ? msgs[i].content : "";
        size_t len = msgs[i].len;
        if (i == first && merged) {
            text = merged;
            len = merged_len;
        }
        nc_tokens_push(out, nc_tokenizer_special_id(t, user ? NC_TOK_USER_START : NC_TOK_ASSISTANT_START));
        rc = nc_tokenizer_encode(t, text, len, out);
        nc_tokens_push(out, nc_tokenizer_special_id(t, user ? NC_TOK_USER_END : NC_TOK_ASSISTANT_END));
    }
    nc_tokens_push(out, nc_tokenizer_special_id(t, NC_TOK_ASSISTANT_START));
    free(merged);
    if (rc != 0) {
        out->n = n0; /* leave `out` as it was */
        return nc_fail_context("chat");
    }
    return 0;
}

/*
 * stream.c: decoding a stream of sampled tokens into text as it arrives.
 *
 * A token may end in the middle of a UTF-8 character (byte-level BPE splits
 * emoji and CJK freely), so the decoder holds back the bytes of an
 * incomplete character until the tokens that complete it arrive. Anything
 * that can no longer become valid is replaced by U+FFFD right away. The
 * concatenation of everything emitted plus the final flush equals Python's
 * b"".join(token_bytes).decode("utf-8", "replace") of the whole stream,
 * which is what nanochat shows once generation ends.
 */
#include <string.h>

#include "tok_internal.h"
#include "util/common.h"

int nc_stream_decode(nc_stream_decoder *d, const nc_tokenizer *t, int32_t id, char *out, size_t cap) {
    size_t len;
    const uint8_t *b = nc_tokenizer_token_bytes(t, id, &len);
    if (!b) return nc_fail("token id %d is not in the vocabulary (0..%d)", id, t->vocab - 1);
    NC_ASSERT(d->n_pending >= 0 && d->n_pending <= 3);
    /* Worst case: every byte becomes a 3-byte U+FFFD. */
    if (cap < 3 * ((size_t)d->n_pending + len)) {
        return nc_fail("stream decode: output buffer of %zu bytes is too small for a %zu-byte token",
                       cap, len);
    }
    uint8_t *o = (uint8_t *)out;
    size_t n_out = 0, k = 0;
    /* First finish (or give up on) the pending character, byte by byte. */
    uint8_t buf[8];
    size_t nb = (size_t)d->n_pending;
    memcpy(buf, d->pending, nb);
    while (nb > 0 && k < len) {
        buf[nb++] = b[k++];
        size_t used;
        n_out += nc_utf8_replace(buf, nb, o + n_out, false, &used);
        memmove(buf, buf + used, nb - used);
        nb -= used;
    }
    if (nb == 0 && k < len) { /* then the rest of the token in one go */
        size_t used;
        n_out += nc_utf8_replace(b + k, len - k, o + n_out, false, &used);
        k += used;
        nb = len - k; /* an incomplete character at the end: at most 3 bytes */
        memcpy(buf, b + k, nb);
    }
    NC_ASSERT(nb <= 3);
    memcpy(d->pending, buf, nb);
    d->n_pending = (int)nb;
    return (int)n_out;
}

int nc_stream_flush(nc_stream_decoder *d, char *out, size_t cap) {
    NC_ASSERT(d->n_pending >= 0 && d->n_pending <= 3);
    if (d->n_pending == 0) return 0;
    if (cap < 3 * (size_t)d->n_pending) return nc_fail("stream flush: output buffer too small");
    size_t n = nc_utf8_replace(d->pending, (size_t)d->n_pending, (uint8_t *)out, true, NULL);
    d->n_pending = 0;
    return (int)n;
}

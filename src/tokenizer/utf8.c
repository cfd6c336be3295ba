/*
 * utf8.c: UTF-8 validation, counting and decoding with replacement
 * (utf8.h).
 *
 * Token bytes are arbitrary (a token may hold half a character), so every
 * decode must turn byte strings into valid UTF-8. nanochat decodes with
 * tiktoken, i.e. Python's bytes.decode("utf-8", errors="replace"), which
 * follows Unicode's "maximal subpart" rule: each ill-formed sequence is
 * cut at the first byte that cannot continue it, and the bytes before that
 * cut (the lead byte and the continuation bytes that were still valid)
 * become one U+FFFD. The byte that broke the sequence starts over. The
 * well-formed sequences (Unicode Table 3-7) are:
 *
 *   00..7F
 *   C2..DF 80..BF
 *   E0 A0..BF 80..BF      E1..EC 80..BF 80..BF
 *   ED 80..9F 80..BF      EE..EF 80..BF 80..BF
 *   F0 90..BF 80..BF 80..BF   F1..F3 80..BF x3   F4 80..8F 80..BF 80..BF
 */
#include <string.h>

#include "utf8.h"

/* Result of looking at the sequence starting at p[0]. */
typedef enum { SEQ_VALID, SEQ_INVALID, SEQ_TRUNCATED } seq_kind;

/* Classifies the sequence at p[0..n) (n >= 1); *len is the sequence length
 * for SEQ_VALID, the maximal subpart to replace for SEQ_INVALID, and n for
 * SEQ_TRUNCATED (every byte so far could still start a valid sequence). */
static seq_kind utf8_seq(const uint8_t *p, size_t n, size_t *len) {
    uint8_t c = p[0];
    if (c < 0x80) {
        *len = 1;
        return SEQ_VALID;
    }
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *len = 1; /* 80..C1, F5..FF can never start a sequence */
        return SEQ_INVALID;
    }
    for (size_t k = 1; k < need; k++) {
        if (k >= n) {
            *len = n;
            return SEQ_TRUNCATED;
        }
        uint8_t b = p[k];
        uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
        if (b < l || b > h) {
            *len = k;
            return SEQ_INVALID;
        }
    }
    *len = need;
    return SEQ_VALID;
}

size_t nc_utf8_char(const uint8_t *p, size_t n) {
    size_t len;
    return utf8_seq(p, n, &len) == SEQ_VALID ? len : 0;
}

size_t nc_utf8_valid_prefix(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        /* ASCII runs eight bytes at a time: most text is mostly ASCII. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        size_t len;
        if (utf8_seq(p + i, n - i, &len) != SEQ_VALID) return i;
        i += len;
    }
    return n;
}

bool nc_utf8_valid(const char *s, size_t n) {
    return nc_utf8_valid_prefix((const uint8_t *)s, n) == n;
}

size_t nc_utf8_length(const char *s, size_t n) {
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80) count++; /* every byte but a continuation starts one */
    return count;
}

size_t nc_utf8_replace(const uint8_t *p, size_t n, uint8_t *out, bool final, size_t *consumed) {
    size_t i = 0, o = 0;
    while (i < n) {
        size_t len;
        seq_kind k = utf8_seq(p + i, n - i, &len);
        if (k == SEQ_VALID) {
            memcpy(out + o, p + i, len);
            o += len;
        } else if (k == SEQ_INVALID || final) {
            memcpy(out + o, NC_UTF8_REPLACEMENT, 3);
            o += 3;
        } else {
            break; /* truncated and more bytes may come: keep them */
        }
        i += len;
    }
    if (consumed) *consumed = i;
    return o;
}

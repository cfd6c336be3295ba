/*
 * utf8.h: UTF-8 validation, counting and decoding with replacement, the
 * one implementation every layer uses: the tokenizer (text in, token
 * bytes out), the server (request strings, JSON output) and the API.
 *
 * "Valid" is Unicode's well-formed UTF-8 (Table 3-7): no overlong forms,
 * no surrogates (U+D800..U+DFFF), nothing above U+10FFFF. Replacement
 * follows Python's bytes.decode("utf-8", errors="replace"), which is what
 * nanochat's tokenizer.decode() does through tiktoken.
 */
#ifndef NC_TOKENIZER_UTF8_H
#define NC_TOKENIZER_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NC_UTF8_REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD, 3 bytes */

/* Length (1..4) of the well-formed character at p[0..n), n >= 1; 0 when
 * p[0] does not start one that fits in n bytes. */
size_t nc_utf8_char(const uint8_t *p, size_t n);

/* Length of the longest valid UTF-8 prefix of p[0..n). */
size_t nc_utf8_valid_prefix(const uint8_t *p, size_t n);

/* Whether s[0..n) is valid UTF-8. */
bool nc_utf8_valid(const char *s, size_t n);

/* Number of code points in valid UTF-8 s[0..n) (Python's len() of the
 * decoded str). */
size_t nc_utf8_length(const char *s, size_t n);

/* Decodes p[0..n) to valid UTF-8 in out (capacity >= 3 n), replacing each
 * maximal ill-formed subpart with U+FFFD exactly like Python's
 * bytes.decode("utf-8", "replace"). With `final` false, a trailing
 * incomplete-but-valid-so-far sequence is not decoded: *consumed tells
 * how many input bytes were used (n when final). Returns bytes written. */
size_t nc_utf8_replace(const uint8_t *p, size_t n, uint8_t *out, bool final, size_t *consumed);

#endif /* NC_TOKENIZER_UTF8_H */

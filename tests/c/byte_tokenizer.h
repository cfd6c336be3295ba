/*
 * byte_tokenizer.h: the tiny tokenizer of the C tests that follow tokens
 * one by one: id b is the single byte b (0..255), then nanochat's nine
 * special tokens in their usual order. A test can spell out any byte
 * sequence, UTF-8 characters split where it likes.
 */
#ifndef NC_TESTS_BYTE_TOKENIZER_H
#define NC_TESTS_BYTE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"

enum { NB = 256, V = 265 };
enum { BOS = 256, USER_START, USER_END, ASSIST_START, ASSIST_END, PY_START, PY_END, OUT_START, OUT_END };

/* The byte tokenizer with ids a and b swapped: byte tokens (< NB) trade
 * their bytes, special tokens their ids (a == b: the plain one). A test
 * that compares tokenizers gets one that differs in one place. */
static nc_tokenizer *byte_tokenizer_swapped(int32_t a, int32_t b) {
    static uint8_t bytes[NB];
    const uint8_t *tb[NB];
    size_t tl[NB];
    for (int i = 0; i < NB; i++) {
        bytes[i] = (uint8_t)(i == a ? b : i == b ? a : i);
        tb[i] = &bytes[i];
        tl[i] = 1;
    }
    const char *names[9] = {"<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>",
                            "<|assistant_end|>", "<|python_start|>", "<|python_end|>", "<|output_start|>",
                            "<|output_end|>"};
    int32_t ids[9];
    for (int i = 0; i < 9; i++) ids[i] = BOS + i == a ? b : BOS + i == b ? a : BOS + i;
    return nc_tokenizer_from_ranks(NULL, tb, tl, NB, names, ids, 9);
}

static nc_tokenizer *byte_tokenizer(void) { return byte_tokenizer_swapped(0, 0); }

#endif /* NC_TESTS_BYTE_TOKENIZER_H */

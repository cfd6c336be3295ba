/*
 * bigint.h: the arbitrary-precision integers the calculator tool needs
 * (docs/model.md, Calculator: Python ints), and nothing more: + - * floor-division, decimal
 * conversion both ways, and correctly rounded conversion / true division
 * to double, all with Python's semantics.
 *
 * Sign-magnitude, 32-bit limbs, schoolbook algorithms (Knuth's algorithm D
 * for division). Sizes are bounded by NC_BIGINT_MAX_LIMBS so that a hostile
 * expression cannot make the calculator slow: a result beyond the bound is a
 * failure, never a long computation.
 */
#ifndef NC_TOOL_BIGINT_H
#define NC_TOOL_BIGINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 4096 limbs = 131072 bits, about 39000 decimal digits: far beyond what a
 * bounded expression can build (its digits add up under multiplication),
 * small enough that a schoolbook product stays well under a millisecond. */
#define NC_BIGINT_MAX_LIMBS 4096

typedef struct {
    uint32_t *d; /* limbs, least significant first */
    int32_t n;   /* limbs in use: 0 for zero, else d[n-1] != 0 */
    int32_t cap; /* limbs allocated */
    bool neg;    /* sign; never set for zero */
} nc_bigint;

void nc_big_init(nc_bigint *a); /* zero, nothing allocated */
void nc_big_free(nc_bigint *a);

/* All functions below return 0 on success and -1 (with nc_error()) on
 * failure: out of memory, or a result beyond NC_BIGINT_MAX_LIMBS. The
 * result argument must not alias an operand. */
int nc_big_copy(nc_bigint *r, const nc_bigint *a);
/* `len` ASCII decimal digits (no sign, no separators). */
int nc_big_from_dec(nc_bigint *r, const char *s, size_t len);
int nc_big_add(nc_bigint *r, const nc_bigint *a, const nc_bigint *b);
int nc_big_sub(nc_bigint *r, const nc_bigint *a, const nc_bigint *b);
int nc_big_mul(nc_bigint *r, const nc_bigint *a, const nc_bigint *b);
/* Python's a // b (rounds toward minus infinity); fails if b == 0. */
int nc_big_floordiv(nc_bigint *r, const nc_bigint *a, const nc_bigint *b);
void nc_big_negate(nc_bigint *a);

/* Python's float(a): correctly rounded (half to even); fails with
 * "int too large to convert to float" past DBL_MAX. */
int nc_big_to_double(const nc_bigint *a, double *out);
/* Python's a / b for ints: the correctly rounded quotient; fails if b == 0
 * or the result overflows a double. */
int nc_big_true_div(const nc_bigint *a, const nc_bigint *b, double *out);

/* Decimal text, "-" for negatives, NUL-terminated. Returns the length, or
 * -1 if it (with its NUL) does not fit in `cap` bytes. */
int64_t nc_big_to_dec(const nc_bigint *a, char *out, size_t cap);

/* Whether a fits in int64 (then *v holds it). */
bool nc_big_to_i64(const nc_bigint *a, int64_t *v);

#endif /* NC_TOOL_BIGINT_H */

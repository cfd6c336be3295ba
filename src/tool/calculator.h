/*
 * calculator.h: nanochat's calculator tool, `use_calculator(expr)` of
 * engine.py (docs/model.md, Calculator), implemented with a small parser and evaluator of its
 * own: nothing is ever handed to an interpreter.
 *
 * Behaviour, as Python's:
 *   - commas are removed first;
 *   - if every char is in "0123456789*+-/.() ": refused if it contains
 *     "**", else evaluated as Python arithmetic: ints of arbitrary size,
 *     `/` true division (a float, correctly rounded even for huge ints),
 *     `//` floor division, unary + and -, parentheses, float literals
 *     ("1.5", ".5", "5."), int op float -> float, and the oddities the
 *     character set allows: `()` (an empty tuple; `() + ()`, `() * 3`) and
 *     `...` (Ellipsis). Division by zero, a leading-zero literal ("01"),
 *     a call like "(2)(3)", any syntax error: no result.
 *   - else only letters, digits, '"()._ and space are allowed, ".count("
 *     must occur and none of __ import exec eval compile open file input
 *     raw_input globals locals vars dir getattr setattr delattr hasattr
 *     (any case): then `'text'.count('sub')` is evaluated as Python would:
 *     single, double or triple quotes, prefixes r u f b (and rb/br/fr/rf),
 *     adjacent literals concatenated, parentheses around either side, str
 *     vs bytes mismatch an error, non-overlapping count, an empty `sub`
 *     counting len + 1.
 *   - the result is printed as Python's str(): 7, -3, 0.2, 10.0, 1e-05,
 *     0.30000000000000004, inf, nan, (), Ellipsis.
 *
 * Bounds (the 3 s limit of nanochat, made structural): expressions of at
 * most NC_CALC_MAX_EXPR bytes; at most 200 nested parentheses (Python's own
 * limit); at most 1000 nested operators (Python's compiler fails somewhere
 * under 3000, depending on its stack); integer literals and results of at
 * most 4300 digits (Python's int/str conversion limit; nanochat itself
 * would raise in str(result) beyond it); intermediate integers bounded by
 * NC_BIGINT_MAX_LIMBS. Beyond a bound: no result.
 *
 * Deliberate difference: in the string path, only the form above is
 * evaluated. Other valid Python made of those characters (keywords such as
 * `if`/`and`/`not`, other methods like 'a'.upper().count('A'), a bare
 * string) gives no result here.
 */
#ifndef NC_TOOL_CALCULATOR_H
#define NC_TOOL_CALCULATOR_H

#include <stddef.h>

#define NC_CALC_MAX_EXPR 16384
#define NC_CALC_MAX_DIGITS 4300
/* Room for any result: 4300 digits, a sign and the NUL. */
#define NC_CALC_RESULT_MAX 4304

/* Evaluates `len` bytes of `expr` as use_calculator does. On a result,
 * writes str(result) NUL-terminated to `out` (cap >= NC_CALC_RESULT_MAX)
 * and returns its length; returns -1 for "no result" (nanochat's None). */
int nc_calculator(const char *expr, size_t len, char *out, size_t cap);

#endif /* NC_TOOL_CALCULATOR_H */

/*
 * pyfloat.h: the two places where Python's float behaviour is not plain
 * IEEE arithmetic, for the calculator tool (docs/model.md, Calculator): how str()/repr()
 * prints a float, and what `//` does with floats.
 */
#ifndef NC_TOOL_PYFLOAT_H
#define NC_TOOL_PYFLOAT_H

#include <stddef.h>

/* Longest output: "-" + 17 digits + "." + "e-308" and change; 32 is ample. */
#define NC_PY_FLOAT_REPR_MAX 32

/*
 * Python's repr(x) (= str(x)): the shortest digit string that reads back
 * as x (closest to x among equally short ones), in fixed notation when the
 * decimal exponent is in [-4, 16) ("0.0001", "1234567890123456.0", "10.0"),
 * else scientific with a signed, at least two-digit exponent ("1e-05",
 * "1e+16", "1.5e+300"); "inf", "-inf", "nan", "-0.0". Writes a NUL-terminated
 * string to out (cap >= NC_PY_FLOAT_REPR_MAX) and returns its length.
 */
int nc_py_float_repr(double x, char *out, size_t cap);

/* Python's float floor division a // b (CPython's float_floor_div: fmod,
 * sign fix-up, snapping to an integral value). b must be nonzero. */
double nc_py_float_floordiv(double a, double b);

#endif /* NC_TOOL_PYFLOAT_H */

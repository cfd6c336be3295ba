/*
 * pyfloat.c: Python's float printing and float floor division (see
 * pyfloat.h), for the calculator tool.
 *
 * Shortest round-trip digits: for p = 1..17 significant digits, the
 * correctly rounded p-digit decimal (glibc's printf rounds exactly) is the
 * p-digit number closest to x; if it reads back as x, no shorter string
 * exists (it was tried at p - 1) and no equally short one is closer, which
 * is what Python's dtoa (David Gay's mode 0) returns. One corner remains:
 * at a power of two the interval of numbers reading back as x is lopsided,
 * so the closest p-digit number can miss it while its neighbour on the
 * other side hits it; the neighbour is tried too.
 */
#include "pyfloat.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Shortest digits of |x| (finite, nonzero): digits[] without trailing
 * zeros and the decimal exponent E of the first digit (x = d.ddd * 10^E). */
static void shortest_digits(double x, char *digits, int *ndigits, int *exp10) {
    char buf[64];
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*e", p - 1, x);
        double back = strtod(buf, NULL);
        /* mantissa digits (p of them) and exponent from "d.ddde+XX" */
        char *e = strchr(buf, 'e');
        int E = atoi(e + 1);
        uint64_t m = 0;
        for (char *c = buf; c < e; c++)
            if (*c >= '0' && *c <= '9') m = m * 10 + (uint64_t)(*c - '0');
        if (back != x) {
            uint64_t alt = back > x ? m - 1 : m + 1; /* the neighbour across x */
            char tmp[64];
            snprintf(tmp, sizeof tmp, "%llue%d", (unsigned long long)alt, E - (p - 1));
            if (alt == 0 || strtod(tmp, NULL) != x) continue;
            m = alt;
        }
        /* m * 10^(E - p + 1): write m's digits, fix E if m changed length. */
        char md[24];
        int len = snprintf(md, sizeof md, "%llu", (unsigned long long)m);
        E += len - p;
        while (len > 1 && md[len - 1] == '0') len--;
        memcpy(digits, md, (size_t)len);
        *ndigits = len;
        *exp10 = E;
        return;
    }
    /* 17 significant digits always round-trip a double. */
    snprintf(buf, sizeof buf, "%.16e", x);
    char *e = strchr(buf, 'e');
    int n = 0;
    for (char *c = buf; c < e; c++)
        if (*c >= '0' && *c <= '9') digits[n++] = *c;
    while (n > 1 && digits[n - 1] == '0') n--;
    *ndigits = n;
    *exp10 = atoi(e + 1);
}

int nc_py_float_repr(double x, char *out, size_t cap) {
    char s[NC_PY_FLOAT_REPR_MAX + 8];
    int n = 0;
    if (isnan(x)) {
        n = snprintf(s, sizeof s, "nan");
    } else if (isinf(x)) {
        n = snprintf(s, sizeof s, "%s", x < 0 ? "-inf" : "inf");
    } else if (x == 0.0) {
        n = snprintf(s, sizeof s, "%s", signbit(x) ? "-0.0" : "0.0");
    } else {
        char d[24];
        int nd, E;
        if (signbit(x)) s[n++] = '-';
        shortest_digits(fabs(x), d, &nd, &E);
        int decpt = E + 1; /* digits are 0.ddd * 10^decpt */
        if (decpt > -4 && decpt <= 16) {
            if (decpt <= 0) {
                s[n++] = '0';
                s[n++] = '.';
                for (int i = 0; i < -decpt; i++) s[n++] = '0';
                for (int i = 0; i < nd; i++) s[n++] = d[i];
            } else if (decpt < nd) {
                for (int i = 0; i < nd; i++) {
                    if (i == decpt) s[n++] = '.';
                    s[n++] = d[i];
                }
            } else {
                for (int i = 0; i < nd; i++) s[n++] = d[i];
                for (int i = nd; i < decpt; i++) s[n++] = '0';
                s[n++] = '.';
                s[n++] = '0';
            }
        } else {
            s[n++] = d[0];
            if (nd > 1) {
                s[n++] = '.';
                for (int i = 1; i < nd; i++) s[n++] = d[i];
            }
            n += snprintf(s + n, sizeof s - (size_t)n, "e%c%02d", E < 0 ? '-' : '+', E < 0 ? -E : E);
        }
        s[n] = 0;
    }
    if ((size_t)n + 1 > cap) return -1;
    memcpy(out, s, (size_t)n + 1);
    return n;
}

double nc_py_float_floordiv(double vx, double wx) {
    double mod = fmod(vx, wx);
    double div = (vx - mod) / wx;
    if (mod) {
        if ((wx < 0) != (mod < 0)) div -= 1.0; /* remainder takes the divisor's sign */
    }
    double floordiv;
    if (div) {
        floordiv = floor(div);
        if (div - floordiv > 0.5) floordiv += 1.0; /* snap to the nearest integral value */
    } else {
        floordiv = copysign(0.0, vx / wx);
    }
    return floordiv;
}

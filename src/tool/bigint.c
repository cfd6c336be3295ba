/*
 * bigint.c: bounded arbitrary-precision integers for the calculator tool
 * (see bigint.h). Magnitude helpers work on raw limb arrays; the signed
 * wrappers apply Python's rules (floor division, correctly rounded true
 * division and int -> float conversion).
 */
#include "bigint.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/common.h"

/* ==== storage ==== */

void nc_big_init(nc_bigint *a) { memset(a, 0, sizeof *a); }

void nc_big_free(nc_bigint *a) {
    free(a->d);
    nc_big_init(a);
}

static int reserve(nc_bigint *a, int32_t limbs) {
    if (limbs > NC_BIGINT_MAX_LIMBS)
        return nc_fail("integer too large for the calculator (over %d bits)", NC_BIGINT_MAX_LIMBS * 32);
    if (limbs <= a->cap) return 0;
    uint32_t *d = realloc(a->d, (size_t)limbs * sizeof *d);
    if (!d) return nc_fail("calculator: out of memory");
    a->d = d;
    a->cap = limbs;
    return 0;
}

static void trim(nc_bigint *a) {
    while (a->n > 0 && a->d[a->n - 1] == 0) a->n--;
    if (a->n == 0) a->neg = false;
}

void nc_big_negate(nc_bigint *a) {
    if (a->n) a->neg = !a->neg;
}

int nc_big_copy(nc_bigint *r, const nc_bigint *a) {
    if (reserve(r, a->n)) return -1;
    if (a->n) memcpy(r->d, a->d, (size_t)a->n * sizeof *r->d);
    r->n = a->n;
    r->neg = a->neg;
    return 0;
}

bool nc_big_to_i64(const nc_bigint *a, int64_t *v) {
    if (a->n > 2) return false;
    uint64_t m = 0;
    for (int32_t i = a->n - 1; i >= 0; i--) m = (m << 32) | a->d[i];
    if (a->neg) {
        if (m > (uint64_t)INT64_MAX + 1) return false;
        *v = m == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m;
    } else {
        if (m > (uint64_t)INT64_MAX) return false;
        *v = (int64_t)m;
    }
    return true;
}

/* ==== magnitudes ==== */

static int mag_cmp(const uint32_t *a, int32_t na, const uint32_t *b, int32_t nb) {
    if (na != nb) return na < nb ? -1 : 1;
    for (int32_t i = na - 1; i >= 0; i--)
        if (a[i] != b[i]) return a[i] < b[i] ? -1 : 1;
    return 0;
}

/* r = |a| + |b|; r has room for max(na, nb) + 1 limbs. Returns limbs used. */
static int32_t mag_add(uint32_t *r, const uint32_t *a, int32_t na, const uint32_t *b, int32_t nb) {
    if (na < nb) {
        const uint32_t *t = a; a = b; b = t;
        int32_t tn = na; na = nb; nb = tn;
    }
    uint64_t carry = 0;
    for (int32_t i = 0; i < na; i++) {
        carry += (uint64_t)a[i] + (i < nb ? b[i] : 0);
        r[i] = (uint32_t)carry;
        carry >>= 32;
    }
    r[na] = (uint32_t)carry;
    return na + 1;
}

/* r = |a| - |b| with |a| >= |b|. Returns limbs used (na). */
static int32_t mag_sub(uint32_t *r, const uint32_t *a, int32_t na, const uint32_t *b, int32_t nb) {
    int64_t borrow = 0;
    for (int32_t i = 0; i < na; i++) {
        int64_t t = (int64_t)a[i] - (i < nb ? b[i] : 0) - borrow;
        borrow = t < 0;
        r[i] = (uint32_t)(t + (borrow ? ((int64_t)1 << 32) : 0));
    }
    return na;
}

/* Signed addition of a and (b with sign flipped if `negate_b`). */
static int add_signed(nc_bigint *r, const nc_bigint *a, const nc_bigint *b, bool negate_b) {
    bool bneg = negate_b ? !b->neg && b->n : b->neg;
    if (reserve(r, NC_MAX(a->n, b->n) + 1)) return -1;
    if (a->neg == bneg) {
        r->n = mag_add(r->d, a->d, a->n, b->d, b->n);
        r->neg = a->neg;
    } else if (mag_cmp(a->d, a->n, b->d, b->n) >= 0) {
        r->n = mag_sub(r->d, a->d, a->n, b->d, b->n);
        r->neg = a->neg;
    } else {
        r->n = mag_sub(r->d, b->d, b->n, a->d, a->n);
        r->neg = bneg;
    }
    trim(r);
    return 0;
}

int nc_big_add(nc_bigint *r, const nc_bigint *a, const nc_bigint *b) { return add_signed(r, a, b, false); }
int nc_big_sub(nc_bigint *r, const nc_bigint *a, const nc_bigint *b) { return add_signed(r, a, b, true); }

int nc_big_mul(nc_bigint *r, const nc_bigint *a, const nc_bigint *b) {
    if (a->n == 0 || b->n == 0) {
        r->n = 0;
        r->neg = false;
        return 0;
    }
    if (reserve(r, a->n + b->n)) return -1;
    memset(r->d, 0, (size_t)(a->n + b->n) * sizeof *r->d);
    for (int32_t i = 0; i < a->n; i++) {
        uint64_t carry = 0, ai = a->d[i];
        for (int32_t j = 0; j < b->n; j++) {
            carry += ai * b->d[j] + r->d[i + j];
            r->d[i + j] = (uint32_t)carry;
            carry >>= 32;
        }
        r->d[i + b->n] = (uint32_t)carry;
    }
    r->n = a->n + b->n;
    r->neg = a->neg != b->neg;
    trim(r);
    return 0;
}

static int clz32(uint32_t x) { return x ? __builtin_clz(x) : 32; }

/* q = |u| / |v| (truncated), *rem_nonzero = remainder != 0. v nonzero,
 * |u| >= |v|. q needs nu - nv + 1 limbs; `work` needs nu + 1 + nv limbs.
 * Knuth vol. 2, 4.3.1, algorithm D (as in Hacker's Delight divmnu). */
static void mag_divmod(uint32_t *q, const uint32_t *u, int32_t nu, const uint32_t *v, int32_t nv,
                       uint32_t *work, bool *rem_nonzero) {
    if (nv == 1) {
        uint64_t rem = 0;
        for (int32_t i = nu - 1; i >= 0; i--) {
            uint64_t cur = (rem << 32) | u[i];
            q[i] = (uint32_t)(cur / v[0]);
            rem = cur % v[0];
        }
        *rem_nonzero = rem != 0;
        return;
    }
    int s = clz32(v[nv - 1]);
    uint32_t *un = work, *vn = work + nu + 1;
    for (int32_t i = nv - 1; i > 0; i--)
        vn[i] = (v[i] << s) | (s ? (uint32_t)((uint64_t)v[i - 1] >> (32 - s)) : 0);
    vn[0] = v[0] << s;
    un[nu] = s ? (uint32_t)((uint64_t)u[nu - 1] >> (32 - s)) : 0;
    for (int32_t i = nu - 1; i > 0; i--)
        un[i] = (u[i] << s) | (s ? (uint32_t)((uint64_t)u[i - 1] >> (32 - s)) : 0);
    un[0] = u[0] << s;

    const uint64_t B = (uint64_t)1 << 32;
    for (int32_t j = nu - nv; j >= 0; j--) {
        uint64_t num = ((uint64_t)un[j + nv] << 32) | un[j + nv - 1];
        uint64_t qhat = num / vn[nv - 1], rhat = num % vn[nv - 1];
        while (qhat >= B || qhat * vn[nv - 2] > ((rhat << 32) | un[j + nv - 2])) {
            qhat--;
            rhat += vn[nv - 1];
            if (rhat >= B) break;
        }
        int64_t borrow = 0, t;
        for (int32_t i = 0; i < nv; i++) {
            uint64_t p = qhat * vn[i];
            t = (int64_t)un[i + j] - borrow - (int64_t)(p & 0xffffffffu);
            un[i + j] = (uint32_t)t;
            borrow = (int64_t)(p >> 32) - (t >> 32);
        }
        t = (int64_t)un[j + nv] - borrow;
        un[j + nv] = (uint32_t)t;
        q[j] = (uint32_t)qhat;
        if (t < 0) { /* qhat was one too large: add the divisor back */
            q[j]--;
            uint64_t carry = 0;
            for (int32_t i = 0; i < nv; i++) {
                carry += (uint64_t)un[i + j] + vn[i];
                un[i + j] = (uint32_t)carry;
                carry >>= 32;
            }
            un[j + nv] += (uint32_t)carry;
        }
    }
    bool nz = false;
    for (int32_t i = 0; i < nv; i++) nz |= un[i] != 0;
    *rem_nonzero = nz;
}

/* Truncated |a| / |b| into r (sign not set), with the remainder's
 * nonzeroness. b nonzero. */
static int divmod_trunc(nc_bigint *r, const nc_bigint *a, const nc_bigint *b, bool *rem_nonzero) {
    if (mag_cmp(a->d, a->n, b->d, b->n) < 0) {
        r->n = 0;
        r->neg = false;
        *rem_nonzero = a->n != 0;
        return 0;
    }
    if (reserve(r, a->n - b->n + 1)) return -1;
    uint32_t *work = malloc((size_t)(a->n + 1 + b->n) * sizeof *work);
    if (!work) return nc_fail("calculator: out of memory");
    mag_divmod(r->d, a->d, a->n, b->d, b->n, work, rem_nonzero);
    free(work);
    r->n = a->n - b->n + 1;
    r->neg = false;
    trim(r);
    return 0;
}

int nc_big_floordiv(nc_bigint *r, const nc_bigint *a, const nc_bigint *b) {
    if (b->n == 0) return nc_fail("integer division or modulo by zero");
    bool rem;
    if (divmod_trunc(r, a, b, &rem)) return -1;
    if (a->neg != b->neg && a->n) {
        if (rem) { /* floor = -(trunc + 1) when the signs differ */
            if (reserve(r, r->n + 1)) return -1;
            uint64_t carry = 1;
            for (int32_t i = 0; i < r->n && carry; i++) {
                carry += r->d[i];
                r->d[i] = (uint32_t)carry;
                carry >>= 32;
            }
            if (carry) r->d[r->n++] = (uint32_t)carry;
        }
        r->neg = r->n != 0;
    }
    return 0;
}

/* ==== conversion to double ==== */

static int bitlen(const nc_bigint *a) { return a->n ? a->n * 32 - clz32(a->d[a->n - 1]) : 0; }

/* The double nearest to q * 2^e (ties to even), q < 2^63; `sticky` says
 * that the true value is slightly above q * 2^e (bits below q's last one).
 * Rounds once, straight to the final precision, subnormals included.
 * Returns +inf on overflow. */
static double round_scaled(uint64_t q, bool sticky, int64_t e) {
    if (q == 0) return 0.0;
    int bl = 64 - __builtin_clzll(q);
    int64_t top = e + bl - 1;                    /* exponent of the leading bit */
    int64_t lsb = top >= -1022 ? top - 52 : -1074; /* exponent of the last kept bit */
    int64_t drop = lsb - e;
    if (drop > 0) {
        if (drop > 63) return 0.0; /* far below half the smallest subnormal */
        uint64_t low = q & (((uint64_t)1 << drop) - 1), half = (uint64_t)1 << (drop - 1);
        q >>= drop;
        if (low > half || (low == half && (sticky || (q & 1)))) q++;
        e = lsb;
    }
    /* Exact (q has at most 53 significant bits) unless it overflows to inf. */
    return ldexp((double)q, (int)NC_MIN(e, (int64_t)4000));
}

int nc_big_to_double(const nc_bigint *a, double *out) {
    int L = bitlen(a);
    uint64_t q = 0;
    bool sticky = false;
    int64_t e = 0;
    if (L <= 63) {
        for (int32_t i = a->n - 1; i >= 0; i--) q = (q << 32) | a->d[i];
    } else {
        int sh = L - 63; /* keep the top 63 bits */
        for (int b = 0; b < 63; b++) {
            int bit = sh + b;
            if ((a->d[bit / 32] >> (bit % 32)) & 1) q |= (uint64_t)1 << b;
        }
        for (int32_t i = 0; i < sh / 32 && !sticky; i++) sticky = a->d[i] != 0;
        if (!sticky && sh % 32) sticky = (a->d[sh / 32] & ((1u << (sh % 32)) - 1)) != 0;
        e = sh;
    }
    double d = round_scaled(q, sticky, e);
    if (isinf(d)) return nc_fail("int too large to convert to float");
    *out = a->neg ? -d : d;
    return 0;
}

/* dst = |a| << s (limbs), sign dropped. */
static int shift_left(nc_bigint *dst, const nc_bigint *a, int64_t s) {
    int32_t limbs = (int32_t)(s / 32), bits = (int32_t)(s % 32);
    if (reserve(dst, a->n + limbs + 1)) return -1;
    memset(dst->d, 0, (size_t)(a->n + limbs + 1) * sizeof *dst->d);
    for (int32_t i = 0; i < a->n; i++) {
        uint64_t v = (uint64_t)a->d[i] << bits;
        dst->d[i + limbs] |= (uint32_t)v;
        dst->d[i + limbs + 1] |= (uint32_t)(v >> 32);
    }
    dst->n = a->n + limbs + 1;
    dst->neg = false;
    trim(dst);
    return 0;
}

int nc_big_true_div(const nc_bigint *a, const nc_bigint *b, double *out) {
    if (b->n == 0) return nc_fail("division by zero");
    bool neg = a->neg != b->neg;
    int la = bitlen(a), lb = bitlen(b);
    if (la <= 53 && lb <= 53) { /* both exact as doubles: one IEEE division rounds correctly */
        double x, y;
        nc_big_to_double(a, &x);
        nc_big_to_double(b, &y);
        *out = x / y;
        return 0;
    }
    double sign = neg ? -1.0 : 1.0;
    if (la == 0) {
        *out = 0.0 * sign;
        return 0;
    }
    int64_t diff = (int64_t)la - lb; /* 2^(diff-1) < |a/b| < 2^(diff+1) */
    if (diff > 1025) return nc_fail("integer division result too large for a float");
    if (diff < -1100) {
        *out = 0.0 * sign;
        return 0;
    }
    /* Scale so the quotient has 55-56 bits (two or more below the 53 kept),
     * but never finer than 2^-1076, two bits below the smallest subnormal. */
    int64_t shift = 55 - diff;
    if (shift > 1076) shift = 1076;
    nc_bigint num, den, q;
    nc_big_init(&num);
    nc_big_init(&den);
    nc_big_init(&q);
    int rc = -1;
    bool rem = false;
    nc_bigint absa = *a, absb = *b;
    absa.neg = absb.neg = false;
    if (shift >= 0 ? (shift_left(&num, &absa, shift) || nc_big_copy(&den, &absb))
                   : (nc_big_copy(&num, &absa) || shift_left(&den, &absb, -shift)))
        goto done;
    if (divmod_trunc(&q, &num, &den, &rem)) goto done;
    NC_ASSERT(q.n <= 2);
    uint64_t qv = q.n ? q.d[0] : 0;
    if (q.n == 2) qv |= (uint64_t)q.d[1] << 32;
    double d = round_scaled(qv, rem, -shift);
    if (isinf(d)) {
        nc_fail("integer division result too large for a float");
        goto done;
    }
    *out = sign * d;
    rc = 0;
done:
    nc_big_free(&num);
    nc_big_free(&den);
    nc_big_free(&q);
    return rc;
}

/* ==== decimal ==== */

int nc_big_from_dec(nc_bigint *r, const char *s, size_t len) {
    r->n = 0;
    r->neg = false;
    /* 9 digits per step: multiply by 10^k and add the chunk. */
    size_t i = 0;
    while (i < len) {
        size_t k = NC_MIN(len - i, (size_t)9);
        uint32_t chunk = 0, mul = 1;
        for (size_t j = 0; j < k; j++) {
            char c = s[i + j];
            if (c < '0' || c > '9') return nc_fail("calculator: bad digit");
            chunk = chunk * 10 + (uint32_t)(c - '0');
            mul *= 10;
        }
        if (reserve(r, r->n + 1)) return -1;
        uint64_t carry = chunk;
        for (int32_t q = 0; q < r->n; q++) {
            carry += (uint64_t)r->d[q] * mul;
            r->d[q] = (uint32_t)carry;
            carry >>= 32;
        }
        if (carry) r->d[r->n++] = (uint32_t)carry;
        i += k;
    }
    trim(r);
    return 0;
}

int64_t nc_big_to_dec(const nc_bigint *a, char *out, size_t cap) {
    if (a->n == 0) {
        if (cap < 2) return -1;
        out[0] = '0';
        out[1] = 0;
        return 1;
    }
    /* Repeated division by 10^9 on a scratch copy; chunks come out least
     * significant first (a limb holds under 9.64 digits: n * 10 / 9 + 2
     * chunks always suffice). */
    uint32_t *t = malloc((size_t)a->n * sizeof *t);
    uint32_t *chunks = malloc(((size_t)a->n * 10 / 9 + 2) * sizeof *chunks);
    if (!t || !chunks) {
        free(t);
        free(chunks);
        return -1;
    }
    memcpy(t, a->d, (size_t)a->n * sizeof *t);
    int32_t n = a->n, nc = 0;
    while (n > 0) {
        uint64_t rem = 0;
        for (int32_t i = n - 1; i >= 0; i--) {
            uint64_t cur = (rem << 32) | t[i];
            t[i] = (uint32_t)(cur / 1000000000u);
            rem = cur % 1000000000u;
        }
        chunks[nc++] = (uint32_t)rem;
        while (n > 0 && t[n - 1] == 0) n--;
    }
    char head[16];
    int hl = snprintf(head, sizeof head, "%s%u", a->neg ? "-" : "", chunks[nc - 1]);
    size_t len = (size_t)hl + (size_t)(nc - 1) * 9;
    int64_t rc = -1;
    if (len + 1 <= cap) {
        memcpy(out, head, (size_t)hl);
        char *p = out + hl;
        for (int32_t i = nc - 2; i >= 0; i--) {
            uint32_t c = chunks[i];
            for (int j = 8; j >= 0; j--) {
                p[j] = (char)('0' + c % 10);
                c /= 10;
            }
            p += 9;
        }
        *p = 0;
        rc = (int64_t)len;
    }
    free(t);
    free(chunks);
    return rc;
}

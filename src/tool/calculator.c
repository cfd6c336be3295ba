/*
 * calculator.c: nanochat's `use_calculator` (engine.py), as a bounded
 * tokenizer + recursive-descent parser + evaluator (see calculator.h for
 * the exact behaviour and bounds).
 *
 * Arithmetic path grammar (the subset of Python's that the character set
 * "0123456789*+-/.() " can spell):
 *   expr   := term (('+' | '-') term)*
 *   term   := factor (('*' | '/' | '//') factor)*
 *   factor := ('+' | '-')* atom          -- a call "atom (" is an error
 *   atom   := INT | FLOAT | '...' | '(' ')' | '(' expr ')'
 * Operator chains are loops, not recursion; only parentheses recurse (at
 * most 200 deep), so the C stack stays small whatever the input.
 *
 * String path grammar:
 *   operand := atom ('.' 'count' '(' operand ')')*
 *   atom    := STRING+ | '(' ')' | '(' operand ')'
 */
#include "calculator.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../util/common.h"
#include "bigint.h"
#include "pyfloat.h"

#define MAX_PAREN_DEPTH 200 /* Python's tokenizer: "too many nested parentheses" */
#define MAX_OP_DEPTH 1000   /* nested operators; Python's compiler gives up below 3000 */

/* ==== arithmetic path: values ==== */

typedef enum { VAL_INT, VAL_FLOAT, VAL_TUPLE, VAL_ELLIPSIS } val_kind;

typedef struct {
    val_kind kind;
    nc_bigint i;  /* VAL_INT */
    double f;     /* VAL_FLOAT */
    int depth;    /* nested operators below this value (Python's AST depth) */
} value;

static void value_init(value *v) {
    memset(v, 0, sizeof *v);
    nc_big_init(&v->i);
}

static void value_free(value *v) { nc_big_free(&v->i); }

/* Python's float(x) for an int or float value; false if not a number or
 * the int overflows a double. */
static bool as_double(const value *v, double *out) {
    if (v->kind == VAL_FLOAT) {
        *out = v->f;
        return true;
    }
    return v->kind == VAL_INT && nc_big_to_double(&v->i, out) == 0;
}

/* a op b into r (r distinct from a and b). false: Python raises. */
static bool apply_binary(char op, const value *a, const value *b, value *r) {
    r->depth = 1 + NC_MAX(a->depth, b->depth);
    if (r->depth > MAX_OP_DEPTH) return false;
    bool tuple_a = a->kind == VAL_TUPLE, tuple_b = b->kind == VAL_TUPLE;
    if (tuple_a || tuple_b) { /* () + (), () * n, n * (): all give () */
        int64_t n;
        r->kind = VAL_TUPLE;
        if (op == '+') return tuple_a && tuple_b;
        if (op == '*' && tuple_a && b->kind == VAL_INT) return nc_big_to_i64(&b->i, &n);
        if (op == '*' && tuple_b && a->kind == VAL_INT) return nc_big_to_i64(&a->i, &n);
        return false;
    }
    if (a->kind == VAL_ELLIPSIS || b->kind == VAL_ELLIPSIS) return false;
    if (a->kind == VAL_INT && b->kind == VAL_INT) {
        if (op == '/') {
            r->kind = VAL_FLOAT;
            return nc_big_true_div(&a->i, &b->i, &r->f) == 0;
        }
        r->kind = VAL_INT;
        switch (op) {
        case '+': return nc_big_add(&r->i, &a->i, &b->i) == 0;
        case '-': return nc_big_sub(&r->i, &a->i, &b->i) == 0;
        case '*': return nc_big_mul(&r->i, &a->i, &b->i) == 0;
        default: return nc_big_floordiv(&r->i, &a->i, &b->i) == 0; /* 'F': // */
        }
    }
    double x, y;
    if (!as_double(a, &x) || !as_double(b, &y)) return false;
    r->kind = VAL_FLOAT;
    switch (op) {
    case '+': r->f = x + y; return true;
    case '-': r->f = x - y; return true;
    case '*': r->f = x * y; return true;
    case '/':
        if (y == 0.0) return false; /* ZeroDivisionError */
        r->f = x / y;
        return true;
    default:
        if (y == 0.0) return false;
        r->f = nc_py_float_floordiv(x, y);
        return true;
    }
}

/* ==== arithmetic path: tokens ==== */

typedef enum {
    T_END, T_INT, T_FLOAT, T_PLUS, T_MINUS, T_STAR, T_SLASH, T_DSLASH,
    T_LPAREN, T_RPAREN, T_ELLIPSIS, T_BAD
} tok_kind;

typedef struct {
    const char *s;
    size_t n, pos;
    tok_kind tk;        /* current token */
    size_t tstart, tlen;
    int paren_depth;
} arith;

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* Python's tokenizer for this character set. */
static void next_token(arith *a) {
    while (a->pos < a->n && a->s[a->pos] == ' ') a->pos++;
    a->tstart = a->pos;
    a->tlen = 0;
    if (a->pos >= a->n) {
        a->tk = T_END;
        return;
    }
    const char *s = a->s;
    size_t p = a->pos, n = a->n;
    char c = s[p];
    if (is_digit(c) || (c == '.' && p + 1 < n && is_digit(s[p + 1]))) {
        size_t q = p;
        while (q < n && is_digit(s[q])) q++;
        if (q < n && s[q] == '.') {
            q++;
            while (q < n && is_digit(s[q])) q++;
            a->tk = T_FLOAT;
        } else {
            a->tk = T_INT;
            if (s[p] == '0') /* "leading zeros in decimal integer literals are not permitted" */
                for (size_t k = p; k < q; k++)
                    if (s[k] != '0') a->tk = T_BAD;
        }
        a->tlen = q - p;
    } else if (c == '.') {
        bool dots = p + 2 < n && s[p + 1] == '.' && s[p + 2] == '.';
        a->tk = dots ? T_ELLIPSIS : T_BAD;
        a->tlen = dots ? 3 : 1;
    } else if (c == '/' && p + 1 < n && s[p + 1] == '/') {
        a->tk = T_DSLASH;
        a->tlen = 2;
    } else {
        a->tlen = 1;
        a->tk = c == '+' ? T_PLUS : c == '-' ? T_MINUS : c == '*' ? T_STAR : c == '/' ? T_SLASH
              : c == '(' ? T_LPAREN : c == ')' ? T_RPAREN : T_BAD;
    }
    a->pos += a->tlen;
}

/* ==== arithmetic path: parser/evaluator ==== */

static bool parse_expr(arith *a, value *out);

static bool parse_atom(arith *a, value *out) {
    const char *t = a->s + a->tstart;
    size_t len = a->tlen;
    switch (a->tk) {
    case T_INT: {
        size_t z = 0;
        while (z < len && t[z] == '0') z++;
        if (len - z > NC_CALC_MAX_DIGITS) return false; /* Python's int/str limit */
        out->kind = VAL_INT;
        if (nc_big_from_dec(&out->i, t + z, len - z)) return false;
        next_token(a);
        break;
    }
    case T_FLOAT: {
        char small[64], *buf = len < sizeof small ? small : malloc(len + 1);
        if (!buf) return false;
        memcpy(buf, t, len);
        buf[len] = 0;
        out->kind = VAL_FLOAT;
        out->f = strtod(buf, NULL); /* correctly rounded, overflow -> inf as Python */
        if (buf != small) free(buf);
        next_token(a);
        break;
    }
    case T_ELLIPSIS:
        out->kind = VAL_ELLIPSIS;
        next_token(a);
        break;
    case T_LPAREN:
        if (++a->paren_depth > MAX_PAREN_DEPTH) return false;
        next_token(a);
        if (a->tk == T_RPAREN) {
            out->kind = VAL_TUPLE;
        } else {
            if (!parse_expr(a, out)) return false;
            if (a->tk != T_RPAREN) return false;
        }
        a->paren_depth--;
        next_token(a);
        break;
    default:
        return false;
    }
    return a->tk != T_LPAREN; /* "x(...)" calls a number or tuple: TypeError */
}

static bool parse_factor(arith *a, value *out) {
    int n_ops = 0, n_minus = 0;
    while (a->tk == T_PLUS || a->tk == T_MINUS) {
        n_minus += a->tk == T_MINUS;
        if (++n_ops > MAX_OP_DEPTH) return false;
        next_token(a);
    }
    if (!parse_atom(a, out)) return false;
    if (n_ops == 0) return true;
    if (out->kind != VAL_INT && out->kind != VAL_FLOAT) return false; /* bad operand type for unary */
    out->depth += n_ops;
    if (out->depth > MAX_OP_DEPTH) return false;
    if (n_minus % 2) {
        if (out->kind == VAL_INT) nc_big_negate(&out->i);
        else out->f = -out->f;
    }
    return true;
}

static bool parse_term(arith *a, value *out) {
    if (!parse_factor(a, out)) return false;
    while (a->tk == T_STAR || a->tk == T_SLASH || a->tk == T_DSLASH) {
        char op = a->tk == T_STAR ? '*' : a->tk == T_SLASH ? '/' : 'F';
        next_token(a);
        value rhs, res;
        value_init(&rhs);
        value_init(&res);
        bool ok = parse_factor(a, &rhs) && apply_binary(op, out, &rhs, &res);
        value_free(&rhs);
        value_free(out);
        *out = res;
        if (!ok) return false;
    }
    return true;
}

static bool parse_expr(arith *a, value *out) {
    if (!parse_term(a, out)) return false;
    while (a->tk == T_PLUS || a->tk == T_MINUS) {
        char op = a->tk == T_PLUS ? '+' : '-';
        next_token(a);
        value rhs, res;
        value_init(&rhs);
        value_init(&res);
        bool ok = parse_term(a, &rhs) && apply_binary(op, out, &rhs, &res);
        value_free(&rhs);
        value_free(out);
        *out = res;
        if (!ok) return false;
    }
    return true;
}

/* str(value) into out; -1 if Python's str() would raise (over 4300 digits). */
static int value_str(const value *v, char *out, size_t cap) {
    switch (v->kind) {
    case VAL_INT: {
        if (v->i.n > NC_CALC_MAX_DIGITS / 9 + 2) return -1; /* > 4300 digits for sure */
        int64_t len = nc_big_to_dec(&v->i, out, cap);
        if (len < 0 || len - (v->i.neg ? 1 : 0) > NC_CALC_MAX_DIGITS) return -1;
        return (int)len;
    }
    case VAL_FLOAT: return nc_py_float_repr(v->f, out, cap);
    case VAL_TUPLE: return snprintf(out, cap, "()");
    default: return snprintf(out, cap, "Ellipsis");
    }
}

static int eval_arith(const char *e, size_t n, char *out, size_t cap) {
    arith a = {.s = e, .n = n};
    value v;
    value_init(&v);
    next_token(&a);
    int rc = -1;
    if (parse_expr(&a, &v) && a.tk == T_END) rc = value_str(&v, out, cap);
    value_free(&v);
    return rc;
}

/* ==== string path ==== */

typedef enum { S_STR, S_BYTES, S_INT, S_TUPLE } sval_kind;

typedef struct {
    sval_kind kind;
    const char *p; /* S_STR / S_BYTES: text (in the scratch buffer) */
    size_t len;
    int64_t n;     /* S_INT */
} sval;

typedef struct {
    const char *s;
    size_t n, pos;
    char *buf;     /* concatenated literal contents; as large as the input */
    size_t used;
    int paren_depth;
} strp;

static void s_skip(strp *x) {
    while (x->pos < x->n && x->s[x->pos] == ' ') x->pos++;
}

static bool s_peek(strp *x, char c) {
    s_skip(x);
    return x->pos < x->n && x->s[x->pos] == c;
}

/* If a string literal (with an optional prefix) starts here, reads it,
 * appends its content to the scratch buffer and sets *is_bytes. Returns
 * 1 read, 0 not a literal here, -1 malformed. */
static int s_literal(strp *x, bool *is_bytes) {
    const char *s = x->s;
    size_t p = x->pos;
    bool b = false, r = false, u = false, f = false;
    while (p < x->n && isalpha((unsigned char)s[p])) { /* tokenizer's prefix rules */
        char c = (char)tolower((unsigned char)s[p]);
        if (c == 'b' && !b && !u && !f) b = true;
        else if (c == 'u' && !b && !u && !r && !f) u = true;
        else if (c == 'r' && !r && !u) r = true;
        else if (c == 'f' && !f && !b && !u) f = true;
        else return 0;
        p++;
    }
    if (p >= x->n || (s[p] != '\'' && s[p] != '"')) return 0;
    char q = s[p];
    bool triple = p + 2 < x->n && s[p + 1] == q && s[p + 2] == q;
    size_t start = p + (triple ? 3 : 1), end = start;
    for (;;) {
        if (end >= x->n) return -1; /* unterminated */
        if (s[end] == q && (!triple || (end + 2 < x->n && s[end + 1] == q && s[end + 2] == q))) break;
        end++;
    }
    memcpy(x->buf + x->used, s + start, end - start);
    x->used += end - start;
    x->pos = end + (triple ? 3 : 1);
    *is_bytes = b;
    return 1;
}

static bool s_operand(strp *x, sval *out);

static bool s_atom(strp *x, sval *out) {
    s_skip(x);
    if (s_peek(x, '(')) {
        if (++x->paren_depth > MAX_PAREN_DEPTH) return false;
        x->pos++;
        if (s_peek(x, ')')) {
            out->kind = S_TUPLE;
        } else if (!s_operand(x, out) || !s_peek(x, ')')) {
            return false;
        }
        x->pos++;
        x->paren_depth--;
        return true;
    }
    /* One or more adjacent literals, concatenated (str and bytes do not mix). */
    size_t begin = x->used;
    int n = 0;
    bool first_bytes = false;
    for (;;) {
        s_skip(x);
        bool is_bytes;
        int rc = s_literal(x, &is_bytes);
        if (rc < 0) return false;
        if (rc == 0) break;
        if (n++ == 0) first_bytes = is_bytes;
        else if (is_bytes != first_bytes) return false; /* "cannot mix bytes and nonbytes literals" */
    }
    if (n == 0) return false;
    out->kind = first_bytes ? S_BYTES : S_STR;
    out->p = x->buf + begin;
    out->len = x->used - begin;
    return true;
}

/* Non-overlapping occurrences, as str.count / bytes.count. */
static int64_t count_sub(const char *s, size_t n, const char *sub, size_t m) {
    if (m == 0) return (int64_t)n + 1;
    int64_t c = 0;
    for (size_t i = 0; i + m <= n;) {
        if (!memcmp(s + i, sub, m)) {
            c++;
            i += m;
        } else {
            i++;
        }
    }
    return c;
}

static bool s_operand(strp *x, sval *out) {
    if (!s_atom(x, out)) return false;
    while (s_peek(x, '.')) {
        x->pos++;
        s_skip(x);
        if (x->n - x->pos < 5 || memcmp(x->s + x->pos, "count", 5) ||
            (x->pos + 5 < x->n && (isalnum((unsigned char)x->s[x->pos + 5]) || x->s[x->pos + 5] == '_')))
            return false; /* any other attribute: not evaluated here */
        x->pos += 5;
        if (!s_peek(x, '(')) return false;
        x->pos++;
        if (s_peek(x, ')')) return false; /* count() takes at least 1 argument */
        sval arg;
        if (!s_operand(x, &arg) || !s_peek(x, ')')) return false;
        x->pos++;
        if (out->kind == S_TUPLE) { /* ().count(anything) */
            out->kind = S_INT;
            out->n = 0;
        } else if ((out->kind == S_STR || out->kind == S_BYTES) && arg.kind == out->kind) {
            out->n = count_sub(out->p, out->len, arg.p, arg.len);
            out->kind = S_INT;
        } else {
            return false; /* int has no .count; str vs bytes: TypeError */
        }
    }
    return !s_peek(x, '('); /* calling the result: TypeError */
}

/* str(value): an int in decimal, a str as itself, bytes as Python's repr
 * (b'...', double quotes if it holds ' but no "), () for the tuple. */
static int sval_str(const sval *v, char *out, size_t cap) {
    switch (v->kind) {
    case S_INT: return snprintf(out, cap, "%lld", (long long)v->n);
    case S_TUPLE: return snprintf(out, cap, "()");
    case S_STR:
        if (v->len + 1 > cap) return -1;
        memcpy(out, v->p, v->len);
        out[v->len] = 0;
        return (int)v->len;
    default: {
        char q = memchr(v->p, '\'', v->len) && !memchr(v->p, '"', v->len) ? '"' : '\'';
        size_t n = 0;
        if (2 * v->len + 4 > cap) return -1;
        out[n++] = 'b';
        out[n++] = q;
        for (size_t i = 0; i < v->len; i++) {
            if (v->p[i] == q) out[n++] = '\\';
            out[n++] = v->p[i];
        }
        out[n++] = q;
        out[n] = 0;
        return (int)n;
    }
    }
}

static int eval_string(const char *e, size_t n, char *out, size_t cap) {
    static const char *const banned[] = {"__", "import", "exec", "eval", "compile", "open",
                                         "file", "input", "raw_input", "globals", "locals",
                                         "vars", "dir", "getattr", "setattr", "delattr", "hasattr"};
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)e[i];
        if (!c || (!isalnum(c) && !strchr("'\"()._ ", c))) return -1;
    }
    char *lower = malloc(n + 1);
    if (!lower) return -1;
    for (size_t i = 0; i < n; i++) lower[i] = (char)tolower((unsigned char)e[i]);
    lower[n] = 0;
    bool bad = false;
    for (size_t i = 0; i < NC_ARRAY_LEN(banned); i++) bad |= strstr(lower, banned[i]) != NULL;
    free(lower);
    if (bad || !memmem(e, n, ".count(", 7)) return -1;

    strp x = {.s = e, .n = n, .buf = malloc(n + 1)};
    if (!x.buf) return -1;
    sval v;
    int rc = -1;
    if (s_operand(&x, &v) && (s_skip(&x), x.pos == n)) rc = sval_str(&v, out, cap);
    free(x.buf);
    return rc;
}

/* ==== entry point ==== */

int nc_calculator(const char *expr, size_t len, char *out, size_t cap) {
    NC_ASSERT(cap >= NC_CALC_RESULT_MAX);
    if (len > NC_CALC_MAX_EXPR) return -1;
    char *e = malloc(len + 1);
    if (!e) return -1;
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (expr[i] != ',') e[n++] = expr[i];
    e[n] = 0;
    bool arith_chars = true;
    for (size_t i = 0; i < n && arith_chars; i++) {
        if (!e[i]) arith_chars = false; /* a NUL byte is no digit */
        else arith_chars = strchr("0123456789*+-/.() ", e[i]) != NULL;
    }
    int rc;
    if (arith_chars) rc = memmem(e, n, "**", 2) ? -1 : eval_arith(e, n, out, cap);
    else rc = eval_string(e, n, out, cap);
    free(e);
    return rc;
}

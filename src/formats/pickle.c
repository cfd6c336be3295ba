/*
 * pickle.c: a non-executing unpickler for the opcodes torch.save (protocol
 * 2) and pickle.dump of a tiktoken Encoding (protocol 4/5) emit (pickle.h).
 *
 * It follows CPython's Lib/pickle.py `_Unpickler` opcode by opcode, but
 * instead of importing and calling, it records: GLOBAL -> a GLOBAL node,
 * REDUCE/NEWOBJ -> an OBJECT node (callable + args), BUILD -> the OBJECT's
 * state, SETITEM(S) on an OBJECT -> its key/value pairs (OrderedDict).
 *
 * Memory: every node and array lives in one arena (chunks freed together).
 * Each opcode adds at most one node plus one stack slot, and a container
 * grows by doubling, so memory is a bounded multiple of the input size;
 * the arena also enforces a hard cap. The memo is a dense array whose
 * indices may not exceed the input length (an honest pickle never needs
 * more memo slots than it has bytes).
 */
#include "pickle.h"

#include <stdio.h>
#include <string.h>

#include "../util/common.h"

/* ==== arena ==== */

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} chunk;

typedef struct {
    chunk *head;
    size_t total, limit;
} arena;

static void *arena_alloc(arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = NC_MAX(n, (size_t)1 << 20);
        if (a->total + cap > a->limit) return NULL;
        chunk *c = malloc(sizeof(chunk) + cap);
        if (!c) return NULL;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
        a->total += cap;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

static void arena_free(arena *a) {
    for (chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->head = NULL;
}

/* ==== unpickler state ==== */

/* A node plus the capacity of its growable item array (lists, dicts,
 * OBJECT pairs); consumers only see the public part. */
typedef struct {
    nc_pickle_obj o;
    size_t cap;
} node;

struct nc_pickle {
    arena mem;
    const nc_pickle_obj *root;
};

typedef struct {
    arena *mem;
    const uint8_t *d;
    size_t len, pos;
    size_t op_pos;      /* offset of the opcode being executed */
    uint8_t op;
    node **stack;       /* [n_stack] */
    size_t n_stack, cap_stack;
    size_t *marks;      /* stack heights at MARK */
    size_t n_marks, cap_marks;
    node **memo;        /* dense, NULL = unset */
    size_t cap_memo, n_memo_set;
} unpickler;

static int fail_at(unpickler *u, const char *what) {
    int c = u->op;
    char shown[8] = "";
    if (c >= 0x20 && c < 0x7f) snprintf(shown, sizeof shown, " '%c'", c);
    return nc_fail("pickle: %s at offset %zu (opcode 0x%02x%s)", what, u->op_pos, c, shown);
}

/* Grows an input-sized array (stack, marks, memo) or reports failure. */
static int grow(unpickler *u, void **array, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 0;
    size_t n = NC_MAX(need, *cap ? 2 * *cap : 64);
    void *p = realloc(*array, n * elem);
    if (!p) return fail_at(u, "out of memory (pickle too large)");
    memset((char *)p + *cap * elem, 0, (n - *cap) * elem);
    *array = p;
    *cap = n;
    return 0;
}

static node *new_node(unpickler *u, nc_pickle_kind kind) {
    node *n = arena_alloc(u->mem, sizeof(node));
    if (!n) return NULL;
    memset(n, 0, sizeof *n);
    n->o.kind = kind;
    return n;
}

static int oom(unpickler *u) { return fail_at(u, "out of memory (pickle too large)"); }

/* Grows a node's item array to hold `need` pointers. */
static int reserve_items(unpickler *u, node *n, const nc_pickle_obj ***items, size_t need) {
    if (need <= n->cap) return 0;
    size_t cap = NC_MAX(need, n->cap ? 2 * n->cap : 4);
    const nc_pickle_obj **a = arena_alloc(u->mem, cap * sizeof(void *));
    if (!a) return oom(u);
    if (*items) memcpy(a, *items, n->cap * sizeof(void *));
    *items = a;
    n->cap = cap;
    return 0;
}

static int push(unpickler *u, node *n) {
    if (!n) return oom(u);
    if (grow(u, (void **)&u->stack, &u->cap_stack, u->n_stack + 1, sizeof(node *))) return -1;
    u->stack[u->n_stack++] = n;
    return 0;
}

static node *pop(unpickler *u) {
    size_t floor = u->n_marks ? u->marks[u->n_marks - 1] : 0;
    if (u->n_stack <= floor) {
        fail_at(u, "stack underflow");
        return NULL;
    }
    return u->stack[--u->n_stack];
}

static node *top(unpickler *u) {
    size_t floor = u->n_marks ? u->marks[u->n_marks - 1] : 0;
    if (u->n_stack <= floor) {
        fail_at(u, "stack underflow");
        return NULL;
    }
    return u->stack[u->n_stack - 1];
}

/* Pops everything above the last MARK (and the mark): sets *items and *n to
 * the popped range (still in u->stack, valid until the next push). */
static int pop_mark(unpickler *u, node ***items, size_t *n) {
    if (!u->n_marks) return fail_at(u, "no MARK on the stack");
    size_t m = u->marks[--u->n_marks];
    *items = u->stack ? u->stack + m : NULL; /* NULL when nothing was ever pushed */
    *n = u->n_stack - m;
    u->n_stack = m;
    return 0;
}

static const uint8_t *take(unpickler *u, size_t n) {
    if (u->len - u->pos < n) {
        fail_at(u, "truncated pickle");
        return NULL;
    }
    const uint8_t *p = u->d + u->pos;
    u->pos += n;
    return p;
}

static int take_uint(unpickler *u, int bytes, uint64_t *out) {
    const uint8_t *p = take(u, (size_t)bytes);
    if (!p) return -1;
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    *out = v;
    return 0;
}

/* ==== node builders ==== */

static node *make_seq(unpickler *u, nc_pickle_kind kind, node **items, size_t n) {
    node *t = new_node(u, kind);
    if (!t) return NULL;
    const nc_pickle_obj **a = NULL;
    if (n && reserve_items(u, t, &a, n)) return NULL;
    for (size_t i = 0; i < n; i++) a[i] = &items[i]->o;
    t->o.u.items = a;
    t->o.n = n;
    return t;
}

static int push_string(unpickler *u, nc_pickle_kind kind, uint64_t n) {
    if (n > u->len - u->pos) return fail_at(u, "string runs past the end of the pickle");
    const uint8_t *p = take(u, (size_t)n);
    node *s = new_node(u, kind);
    char *copy = s ? arena_alloc(u->mem, (size_t)n + 1) : NULL;
    if (!copy) return oom(u);
    memcpy(copy, p, (size_t)n);
    copy[n] = 0;
    s->o.u.s = copy;
    s->o.n = (size_t)n;
    return push(u, s);
}

static int push_int(unpickler *u, int64_t v) {
    node *n = new_node(u, NC_PK_INT);
    if (n) n->o.u.i = v;
    return push(u, n);
}

/* LONG1 / LONG4: little-endian two's complement of n bytes. */
static int push_long(unpickler *u, uint64_t n) {
    if (n > 8) return fail_at(u, "integer wider than 64 bits");
    const uint8_t *p = take(u, (size_t)n);
    if (!p) return -1;
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = v << 8 | p[i];
    if (n > 0 && n < 8 && (p[n - 1] & 0x80)) v |= ~(uint64_t)0 << (8 * n); /* sign-extend */
    return push_int(u, (int64_t)v);
}

/* Adds key/value pairs to a DICT or an OBJECT (OrderedDict built by REDUCE). */
static int add_pairs(unpickler *u, node *target, node **kv, size_t n) {
    if (n % 2) return fail_at(u, "odd number of items for SETITEMS");
    const nc_pickle_obj ***items;
    if (target->o.kind == NC_PK_DICT) items = &target->o.u.items;
    else if (target->o.kind == NC_PK_OBJECT) items = &target->o.u.object.items;
    else return fail_at(u, "SETITEM(S) on something that is not a dict");
    size_t have = target->o.n;
    if (reserve_items(u, target, items, 2 * have + n)) return -1;
    for (size_t i = 0; i < n; i++) (*items)[2 * have + i] = &kv[i]->o;
    target->o.n = have + n / 2;
    return 0;
}

static int add_items(unpickler *u, node *target, node **v, size_t n) {
    if (target->o.kind != NC_PK_LIST) return fail_at(u, "APPEND(S)/ADDITEMS on something that is not a list");
    if (reserve_items(u, target, &target->o.u.items, target->o.n + n)) return -1;
    for (size_t i = 0; i < n; i++) target->o.u.items[target->o.n + i] = &v[i]->o;
    target->o.n += n;
    return 0;
}

static node *make_global(unpickler *u, const char *module, size_t mlen, const char *name, size_t nlen) {
    node *g = new_node(u, NC_PK_GLOBAL);
    char *m = g ? arena_alloc(u->mem, mlen + nlen + 2) : NULL;
    if (!m) return NULL;
    memcpy(m, module, mlen);
    m[mlen] = 0;
    memcpy(m + mlen + 1, name, nlen);
    m[mlen + 1 + nlen] = 0;
    g->o.u.global.module = m;
    g->o.u.global.name = m + mlen + 1;
    return g;
}

/* GLOBAL: "module\nname\n" */
static int op_global(unpickler *u) {
    const char *lines[2];
    size_t lens[2];
    for (int i = 0; i < 2; i++) {
        const uint8_t *start = u->d + u->pos, *nl = memchr(start, '\n', u->len - u->pos);
        if (!nl) return fail_at(u, "unterminated GLOBAL name");
        lines[i] = (const char *)start;
        lens[i] = (size_t)(nl - start);
        u->pos += lens[i] + 1;
    }
    return push(u, make_global(u, lines[0], lens[0], lines[1], lens[1]));
}

static node *make_object(unpickler *u, node *callable, node *args) {
    if (args->o.kind != NC_PK_TUPLE) {
        fail_at(u, "call arguments are not a tuple");
        return NULL;
    }
    node *o = new_node(u, NC_PK_OBJECT);
    if (!o) {
        oom(u);
        return NULL;
    }
    o->o.u.object.callable = &callable->o;
    o->o.u.object.args = &args->o;
    return o;
}

static int memo_put(unpickler *u, uint64_t idx) {
    node *t = top(u);
    if (!t) return -1;
    if (idx >= u->len) return fail_at(u, "memo index out of range");
    if (grow(u, (void **)&u->memo, &u->cap_memo, (size_t)idx + 1, sizeof(node *))) return -1;
    if (!u->memo[idx]) u->n_memo_set++;
    u->memo[idx] = t;
    return 0;
}

static int memo_get(unpickler *u, uint64_t idx) {
    if (idx >= u->cap_memo || !u->memo[idx]) return fail_at(u, "memo lookup of an unset index");
    return push(u, u->memo[idx]);
}

/* ==== the opcode loop ==== */

static int run(unpickler *u, node **result) {
    for (;;) {
        u->op_pos = u->pos;
        if (u->pos >= u->len) return fail_at(u, "pickle ends without STOP");
        u->op = u->d[u->pos++];
        uint64_t n;
        node *a, *b, *c, **items = NULL;
        size_t count = 0;
        switch (u->op) {
        case 0x80: /* PROTO */
            if (take_uint(u, 1, &n)) return -1;
            if (n > 5) return fail_at(u, "unsupported pickle protocol");
            break;
        case 0x95: /* FRAME: a length prefix we need not honour */
            if (take_uint(u, 8, &n)) return -1;
            break;
        case '.': /* STOP */
            if (!(a = pop(u))) return -1;
            *result = a;
            return 0;
        case '(': /* MARK */
            if (grow(u, (void **)&u->marks, &u->cap_marks, u->n_marks + 1, sizeof(size_t))) return -1;
            u->marks[u->n_marks++] = u->n_stack;
            break;
        case '0': /* POP */
            if (!pop(u)) return -1;
            break;
        case '1': /* POP_MARK */
            if (pop_mark(u, &items, &count)) return -1;
            break;
        case '2': /* DUP */
            if (!(a = top(u)) || push(u, a)) return -1;
            break;
        case 'N': if (push(u, new_node(u, NC_PK_NONE))) return -1; break;
        case 0x88: /* NEWTRUE */
        case 0x89: /* NEWFALSE */
            if (!(a = new_node(u, NC_PK_BOOL))) return oom(u);
            a->o.u.b = u->op == 0x88;
            if (push(u, a)) return -1;
            break;
        case 'J': /* BININT */
            if (take_uint(u, 4, &n) || push_int(u, (int32_t)(uint32_t)n)) return -1;
            break;
        case 'K': /* BININT1 */
            if (take_uint(u, 1, &n) || push_int(u, (int64_t)n)) return -1;
            break;
        case 'M': /* BININT2 */
            if (take_uint(u, 2, &n) || push_int(u, (int64_t)n)) return -1;
            break;
        case 0x8a: /* LONG1 */
            if (take_uint(u, 1, &n) || push_long(u, n)) return -1;
            break;
        case 0x8b: /* LONG4 */
            if (take_uint(u, 4, &n) || push_long(u, n)) return -1;
            break;
        case 'G': { /* BINFLOAT: big-endian double */
            const uint8_t *p = take(u, 8);
            if (!p) return -1;
            uint64_t bits = 0;
            for (int i = 0; i < 8; i++) bits = bits << 8 | p[i];
            if (!(a = new_node(u, NC_PK_FLOAT))) return oom(u);
            memcpy(&a->o.u.f, &bits, 8);
            if (push(u, a)) return -1;
            break;
        }
        case 'X': /* BINUNICODE */
            if (take_uint(u, 4, &n) || push_string(u, NC_PK_STR, n)) return -1;
            break;
        case 0x8c: /* SHORT_BINUNICODE */
            if (take_uint(u, 1, &n) || push_string(u, NC_PK_STR, n)) return -1;
            break;
        case 0x8d: /* BINUNICODE8 */
            if (take_uint(u, 8, &n) || push_string(u, NC_PK_STR, n)) return -1;
            break;
        case 'T': /* BINSTRING (Python 2 str, read as text) */
            if (take_uint(u, 4, &n) || push_string(u, NC_PK_STR, n)) return -1;
            break;
        case 'U': /* SHORT_BINSTRING */
            if (take_uint(u, 1, &n) || push_string(u, NC_PK_STR, n)) return -1;
            break;
        case 'B': /* BINBYTES */
            if (take_uint(u, 4, &n) || push_string(u, NC_PK_BYTES, n)) return -1;
            break;
        case 'C': /* SHORT_BINBYTES */
            if (take_uint(u, 1, &n) || push_string(u, NC_PK_BYTES, n)) return -1;
            break;
        case 0x8e: /* BINBYTES8 */
        case 0x96: /* BYTEARRAY8 */
            if (take_uint(u, 8, &n) || push_string(u, NC_PK_BYTES, n)) return -1;
            break;
        case ')': if (push(u, make_seq(u, NC_PK_TUPLE, NULL, 0))) return -1; break;
        case ']': if (push(u, make_seq(u, NC_PK_LIST, NULL, 0))) return -1; break;
        case '}': if (push(u, make_seq(u, NC_PK_DICT, NULL, 0))) return -1; break;
        case 0x8f: /* EMPTY_SET: a list will do */
            if (push(u, make_seq(u, NC_PK_LIST, NULL, 0))) return -1;
            break;
        case 't': /* TUPLE */
            if (pop_mark(u, &items, &count) || push(u, make_seq(u, NC_PK_TUPLE, items, count))) return -1;
            break;
        case 'l': /* LIST */
        case 0x91: /* FROZENSET */
            if (pop_mark(u, &items, &count) || push(u, make_seq(u, NC_PK_LIST, items, count))) return -1;
            break;
        case 'd': /* DICT */
            if (pop_mark(u, &items, &count)) return -1;
            if (!(a = make_seq(u, NC_PK_DICT, NULL, 0))) return oom(u);
            /* items still sit in u->stack above the new height: copy before pushing */
            if (add_pairs(u, a, items, count) || push(u, a)) return -1;
            break;
        case 0x85: /* TUPLE1 */
        case 0x86: /* TUPLE2 */
        case 0x87: { /* TUPLE3 */
            size_t k = (size_t)(u->op - 0x84);
            size_t floor = u->n_marks ? u->marks[u->n_marks - 1] : 0;
            if (u->n_stack - floor < k) return fail_at(u, "stack underflow");
            u->n_stack -= k;
            if (push(u, make_seq(u, NC_PK_TUPLE, u->stack + u->n_stack, k))) return -1;
            break;
        }
        case 'a': /* APPEND */
            if (!(a = pop(u)) || !(b = top(u)) || add_items(u, b, &a, 1)) return -1;
            break;
        case 'e': /* APPENDS */
        case 0x90: /* ADDITEMS */
            if (pop_mark(u, &items, &count) || !(b = top(u)) || add_items(u, b, items, count)) return -1;
            break;
        case 's': { /* SETITEM */
            node *kv[2];
            if (!(kv[1] = pop(u)) || !(kv[0] = pop(u)) || !(b = top(u)) || add_pairs(u, b, kv, 2)) return -1;
            break;
        }
        case 'u': /* SETITEMS */
            if (pop_mark(u, &items, &count) || !(b = top(u)) || add_pairs(u, b, items, count)) return -1;
            break;
        case 'c': /* GLOBAL */
            if (op_global(u)) return -1;
            break;
        case 0x93: /* STACK_GLOBAL */
            if (!(b = pop(u)) || !(a = pop(u))) return -1;
            if (a->o.kind != NC_PK_STR || b->o.kind != NC_PK_STR)
                return fail_at(u, "STACK_GLOBAL needs two strings");
            if (push(u, make_global(u, a->o.u.s, a->o.n, b->o.u.s, b->o.n))) return -1;
            break;
        case 'R': /* REDUCE */
        case 0x81: /* NEWOBJ */
            if (!(b = pop(u)) || !(a = pop(u))) return -1;
            if (!(c = make_object(u, a, b)) || push(u, c)) return -1;
            break;
        case 0x92: /* NEWOBJ_EX */
            if (!(c = pop(u)) || !(b = pop(u)) || !(a = pop(u))) return -1;
            if (c->o.kind != NC_PK_DICT || c->o.n != 0)
                return fail_at(u, "NEWOBJ_EX with keyword arguments is not supported");
            if (!(c = make_object(u, a, b)) || push(u, c)) return -1;
            break;
        case 'b': /* BUILD */
            if (!(b = pop(u)) || !(a = top(u))) return -1;
            if (a->o.kind != NC_PK_OBJECT) return fail_at(u, "BUILD on something that is not an object");
            a->o.u.object.state = &b->o;
            break;
        case 'Q': /* BINPERSID */
            if (!(a = pop(u))) return -1;
            if (!(b = new_node(u, NC_PK_PERSID))) return oom(u);
            b->o.u.persid.pid = &a->o;
            if (push(u, b)) return -1;
            break;
        case 'q': /* BINPUT */
            if (take_uint(u, 1, &n) || memo_put(u, n)) return -1;
            break;
        case 'r': /* LONG_BINPUT */
            if (take_uint(u, 4, &n) || memo_put(u, n)) return -1;
            break;
        case 0x94: /* MEMOIZE */
            if (memo_put(u, u->n_memo_set)) return -1;
            break;
        case 'h': /* BINGET */
            if (take_uint(u, 1, &n) || memo_get(u, n)) return -1;
            break;
        case 'j': /* LONG_BINGET */
            if (take_uint(u, 4, &n) || memo_get(u, n)) return -1;
            break;
        default: {
            int c = u->op;
            char shown[8] = "";
            if (c >= 0x20 && c < 0x7f) snprintf(shown, sizeof shown, " ('%c')", c);
            return nc_fail("pickle: unsupported opcode 0x%02x%s at offset %zu", c, shown, u->op_pos);
        }
        }
    }
}

nc_pickle *nc_pickle_load(const uint8_t *data, size_t len) {
    nc_pickle *p = nc_xcalloc(1, sizeof *p);
    /* Hard cap well above what any opcode sequence of this length can use. */
    p->mem.limit = (size_t)64 << 20;
    p->mem.limit += len > SIZE_MAX / 256 ? SIZE_MAX / 2 : len * 128;
    unpickler u = {.mem = &p->mem, .d = data, .len = len};
    node *root = NULL;
    int rc = run(&u, &root);
    free(u.stack);
    free(u.marks);
    free(u.memo);
    if (rc) {
        nc_pickle_free(p);
        return NULL;
    }
    p->root = &root->o;
    return p;
}

const nc_pickle_obj *nc_pickle_root(const nc_pickle *p) { return p->root; }

void nc_pickle_free(nc_pickle *p) {
    if (!p) return;
    arena_free(&p->mem);
    free(p);
}

/* ==== helpers ==== */

const char *nc_pickle_kind_name(nc_pickle_kind k) {
    static const char *names[NC_PK_KIND_COUNT] = {"None", "bool", "int", "float", "str", "bytes",
                                                  "tuple", "list", "dict", "global", "object", "persistent id"};
    return (k >= 0 && k < NC_PK_KIND_COUNT) ? names[k] : "?";
}

bool nc_pickle_is_global(const nc_pickle_obj *o, const char *module, const char *name) {
    return o && o->kind == NC_PK_GLOBAL && !strcmp(o->u.global.module, module) && !strcmp(o->u.global.name, name);
}

bool nc_pickle_is_str(const nc_pickle_obj *o, const char *s) {
    return o && o->kind == NC_PK_STR && o->n == strlen(s) && !memcmp(o->u.s, s, o->n);
}

const nc_pickle_obj *const *nc_pickle_pairs(const nc_pickle_obj *o, size_t *n_pairs) {
    *n_pairs = 0;
    if (!o) return NULL;
    if (o->kind == NC_PK_DICT) {
        *n_pairs = o->n;
        return o->u.items;
    }
    if (o->kind == NC_PK_OBJECT) {
        *n_pairs = o->n;
        return o->u.object.items;
    }
    return NULL;
}

const nc_pickle_obj *nc_pickle_dict_get(const nc_pickle_obj *o, const char *key) {
    size_t n;
    const nc_pickle_obj *const *kv = nc_pickle_pairs(o, &n);
    for (size_t i = 0; i < n; i++)
        if (nc_pickle_is_str(kv[2 * i], key)) return kv[2 * i + 1];
    return NULL;
}

const char *nc_pickle_describe(const nc_pickle_obj *o, char *buf, size_t cap) {
    if (!o) {
        snprintf(buf, cap, "nothing");
        return buf;
    }
    switch (o->kind) {
    case NC_PK_INT: snprintf(buf, cap, "int %lld", (long long)o->u.i); break;
    case NC_PK_FLOAT: snprintf(buf, cap, "float %g", o->u.f); break;
    case NC_PK_BOOL: snprintf(buf, cap, "%s", o->u.b ? "True" : "False"); break;
    case NC_PK_STR: snprintf(buf, cap, "str '%.40s'", o->u.s); break;
    case NC_PK_BYTES: snprintf(buf, cap, "bytes of length %zu", o->n); break;
    case NC_PK_TUPLE:
    case NC_PK_LIST:
    case NC_PK_DICT: snprintf(buf, cap, "%s of %zu", nc_pickle_kind_name(o->kind), o->n); break;
    case NC_PK_GLOBAL: snprintf(buf, cap, "global %.60s.%.60s", o->u.global.module, o->u.global.name); break;
    case NC_PK_OBJECT:
        if (o->u.object.callable->kind == NC_PK_GLOBAL)
            snprintf(buf, cap, "object %.60s.%.60s(...)", o->u.object.callable->u.global.module,
                     o->u.object.callable->u.global.name);
        else snprintf(buf, cap, "object");
        break;
    default: snprintf(buf, cap, "%s", nc_pickle_kind_name(o->kind)); break;
    }
    return buf;
}

/*
 * pickle.h: an unpickler for the subset of Python's pickle format that
 * nanochat's files use, into a small read-only object tree.
 *
 *   - torch.save(state_dict) writes `<archive>/data.pkl` with protocol 2:
 *     GLOBAL, REDUCE, BINPERSID, BINUNICODE, BININT*, LONG1, TUPLE*, MARK,
 *     EMPTY_DICT, SETITEMS, BUILD, BINPUT/BINGET, ...
 *   - pickle.dump(tiktoken.Encoding) (nanochat's tokenizer.pkl) writes
 *     protocol 4/5: FRAME, SHORT_BINUNICODE, SHORT_BINBYTES, BINBYTES(8),
 *     MEMOIZE, STACK_GLOBAL, NEWOBJ(_EX), BUILD, EMPTY_DICT, SETITEMS, ...
 *
 * Nothing is executed: a GLOBAL is recorded by name, REDUCE/NEWOBJ become an
 * OBJECT node holding the callable and its arguments, BUILD attaches the
 * state to it, and a persistent id becomes a PERSID node. Interpreting those
 * (e.g. `torch._utils._rebuild_tensor_v2`) is the caller's job.
 *
 * Representation is flat and cheap: a dict is an array of key/value pairs
 * in insertion order (a 65k-entry mergeable_ranks dict is one array of
 * 131k pointers), all nodes live in one arena freed at once. The parser is a
 * stack machine (no recursion); memory is bounded by a fixed multiple of the
 * input size; an unknown opcode or malformed input fails with a message that
 * names the opcode and its byte offset. A hostile pickle can build cycles
 * (a list appended to itself), so consumers walk only the shapes they expect.
 */
#ifndef NC_FORMATS_PICKLE_H
#define NC_FORMATS_PICKLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    NC_PK_NONE = 0,
    NC_PK_BOOL,    /* u.b */
    NC_PK_INT,     /* u.i (values outside int64 are refused) */
    NC_PK_FLOAT,   /* u.f */
    NC_PK_STR,     /* u.s: UTF-8 bytes as stored, NUL-terminated, length n */
    NC_PK_BYTES,   /* u.s: raw bytes (NUL-terminated for convenience), length n */
    NC_PK_TUPLE,   /* u.items[0..n) */
    NC_PK_LIST,    /* u.items[0..n) (also sets and frozensets) */
    NC_PK_DICT,    /* n pairs: key u.items[2k], value u.items[2k+1], insertion order */
    NC_PK_GLOBAL,  /* u.global: "module", "name" (e.g. "collections", "OrderedDict") */
    NC_PK_OBJECT,  /* u.object: callable(*args), from REDUCE / NEWOBJ / NEWOBJ_EX */
    NC_PK_PERSID,  /* u.persid: a persistent id (torch: ('storage', type, key, loc, numel)) */
    NC_PK_KIND_COUNT
} nc_pickle_kind;

typedef struct nc_pickle_obj nc_pickle_obj;

struct nc_pickle_obj {
    nc_pickle_kind kind;
    size_t n; /* STR/BYTES: byte length; TUPLE/LIST: items; DICT: pairs; OBJECT: pairs */
    union {
        bool b;
        int64_t i;
        double f;
        const char *s;
        const nc_pickle_obj **items;
        struct {
            const char *module, *name;
        } global;
        struct {
            const nc_pickle_obj *callable; /* usually a GLOBAL */
            const nc_pickle_obj *args;     /* a TUPLE (NEWOBJ_EX: args; kwargs dropped if empty) */
            const nc_pickle_obj *state;    /* set by BUILD, or NULL */
            const nc_pickle_obj **items;   /* pairs added by SETITEM(S), e.g. an OrderedDict's
                                              entries: key items[2k], value items[2k+1] */
        } object;
        struct {
            const nc_pickle_obj *pid;      /* the persistent id object (usually a TUPLE) */
        } persid;
    } u;
};

typedef struct nc_pickle nc_pickle;

/*
 * Unpickles `len` bytes (one pickle, up to its STOP opcode; trailing bytes
 * are ignored). The input is copied from as needed and need not outlive the
 * result. Returns NULL with nc_error() set on malformed input, e.g.
 * "pickle: unsupported opcode 0x63 ('c') at offset 1234".
 */
nc_pickle *nc_pickle_load(const uint8_t *data, size_t len);

/* The top-level object (what pickle.load would return). Valid until
 * nc_pickle_free(). */
const nc_pickle_obj *nc_pickle_root(const nc_pickle *p);

/* Frees every node at once; NULL is fine. */
void nc_pickle_free(nc_pickle *p);

/* ==== helpers for consumers ==== */

const char *nc_pickle_kind_name(nc_pickle_kind k); /* "dict", "str", ... */

/* Whether o is a GLOBAL module.name (both compared exactly). */
bool nc_pickle_is_global(const nc_pickle_obj *o, const char *module, const char *name);

/* Whether o is a STR equal to the NUL-terminated `s`. */
bool nc_pickle_is_str(const nc_pickle_obj *o, const char *s);

/* The key/value pairs of a DICT, or of an OBJECT filled by SETITEMS (an
 * OrderedDict): sets *n_pairs and returns the flat [key, value, ...] array,
 * or NULL (with *n_pairs = 0) for any other kind. */
const nc_pickle_obj *const *nc_pickle_pairs(const nc_pickle_obj *o, size_t *n_pairs);

/* Value for the string key `key` in a DICT (or SETITEMS-filled OBJECT), or
 * NULL. Linear scan: meant for small dicts such as a tiktoken state. */
const nc_pickle_obj *nc_pickle_dict_get(const nc_pickle_obj *o, const char *key);

/* Writes a short one-line description of o ("tuple of 5", "str 'storage'",
 * "global torch._utils._rebuild_tensor_v2") into buf, for error messages.
 * Returns buf. */
const char *nc_pickle_describe(const nc_pickle_obj *o, char *buf, size_t cap);

#endif /* NC_FORMATS_PICKLE_H */

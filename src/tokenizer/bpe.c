/*
 * bpe.c: the rank table and the byte-pair merge loop (tiktoken semantics,
 * which nanochat uses for inference: tiktoken's byte_pair_merge).
 *
 * A piece (one regex match) becomes tokens like this: start from its
 * single bytes; repeatedly find the adjacent pair whose concatenation has
 * the lowest rank (leftmost on ties) and merge it; stop when no adjacent
 * concatenation is a token. Most pieces are whole tokens, so the caller
 * looks the piece up first and only falls back to merging when that fails.
 *
 * The table is open addressing over byte strings (linear probing, load
 * <= 1/2): a slot holds the key's length, its first 8 bytes and its rank,
 * so short keys, the bulk of the merge loop's lookups, are settled by one
 * 16-byte read; longer keys compare their tail with the blob.
 *
 * Two merge loops with identical results:
 *   - short pieces (the common case): tiktoken's array of (start, pair rank)
 *     with a linear scan for the minimum, O(n^2) but tiny and cache-friendly;
 *   - long pieces (a 100 kB run of letters): a linked list of parts and a
 *     binary heap of (pair rank, start) with lazy invalidation, O(n log n).
 *     The heap orders ties by start offset, so it also merges leftmost first.
 */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"
#include "util/common.h"

/* ==== hashing ==== */

static inline uint64_t load64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint32_t load32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint64_t mix64(uint64_t x) { /* murmur3's finalizer */
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* The first min(n, 8) bytes of p as a zero-padded little-endian word,
 * without reading outside p[0..n): two overlapping loads whose common
 * bytes agree, so OR-ing them is exact. */
static inline uint64_t key_head(const uint8_t *p, size_t n) {
    if (n >= 8) return load64(p);
    if (n >= 4) return (uint64_t)load32(p) | ((uint64_t)load32(p + n - 4) << (8 * (n - 4)));
    if (n == 0) return 0;
    return (uint64_t)p[0] | ((uint64_t)p[n / 2] << (8 * (n / 2))) | ((uint64_t)p[n - 1] << (8 * (n - 1)));
}

/* Hash of a byte string whose head word is `head`. */
static inline uint64_t hash_key(const uint8_t *p, size_t n, uint64_t head) {
    uint64_t h = mix64(head ^ (0x9E3779B97F4A7C15ull * (uint64_t)(n + 1)));
    if (n > 8) {
        size_t i = 8;
        for (; i + 8 < n; i += 8) h = mix64(h ^ load64(p + i));
        h = mix64(h ^ load64(p + n - 8));
    }
    return h;
}

/* ==== the table ==== */

int nc_rank_table_init(nc_rank_table *tab, const uint8_t *const *token_bytes,
                       const size_t *token_lens, int32_t n_ranks) {
    memset(tab, 0, sizeof *tab);
    if (n_ranks < 256 || n_ranks > (1 << 28)) {
        return nc_fail("tokenizer: %d mergeable tokens (expected 256 to 2^28)", n_ranks);
    }
    size_t total = 0;
    for (int32_t r = 0; r < n_ranks; r++) total += token_bytes[r] ? token_lens[r] : 0;
    if (total > UINT32_MAX) return nc_fail("tokenizer: more than 4 GiB of token bytes");
    tab->n_ranks = n_ranks;
    tab->blob = malloc(total ? total : 1);
    tab->offs = malloc(((size_t)n_ranks + 1) * sizeof *tab->offs);
    uint32_t cap = 1024;
    while (cap < 2u * (uint32_t)n_ranks) cap *= 2;
    tab->slots = malloc((size_t)cap * sizeof *tab->slots);
    if (!tab->blob || !tab->offs || !tab->slots) {
        nc_rank_table_free(tab);
        return nc_fail("tokenizer: out of memory for %d tokens", n_ranks);
    }
    tab->mask = cap - 1;
    for (uint32_t s = 0; s < cap; s++) tab->slots[s].rank = -1;
    for (int b = 0; b < 256; b++) tab->byte_rank[b] = -1;

    size_t off = 0;
    for (int32_t r = 0; r < n_ranks; r++) {
        tab->offs[r] = (uint32_t)off;
        size_t n = token_bytes[r] ? token_lens[r] : 0;
        if (n == 0) continue; /* a hole */
        const uint8_t *p = token_bytes[r];
        int32_t dup = nc_rank_lookup(tab, p, n);
        if (dup >= 0) {
            nc_rank_table_free(tab);
            return nc_fail("tokenizer: tokens %d and %d have the same bytes", dup, r);
        }
        memcpy(tab->blob + off, p, n);
        off += n;
        uint64_t head = key_head(p, n);
        uint32_t s = (uint32_t)hash_key(p, n, head) & tab->mask;
        while (tab->slots[s].rank >= 0) s = (s + 1) & tab->mask;
        tab->slots[s] = (nc_rank_slot){head, r, (uint32_t)n};
        if (n == 1) tab->byte_rank[p[0]] = r;
        if (n > tab->max_len) tab->max_len = n;
    }
    tab->offs[n_ranks] = (uint32_t)off;
    for (int b = 0; b < 256; b++) {
        if (tab->byte_rank[b] < 0) {
            nc_rank_table_free(tab);
            return nc_fail("tokenizer: no token for the single byte 0x%02x "
                           "(a byte-level BPE needs all 256)", b);
        }
    }
    return 0;
}

void nc_rank_table_free(nc_rank_table *tab) {
    free(tab->blob);
    free(tab->offs);
    free(tab->slots);
    memset(tab, 0, sizeof *tab);
}

int32_t nc_rank_lookup(const nc_rank_table *tab, const uint8_t *p, size_t n) {
    if (n == 1) return tab->byte_rank[p[0]];
    if (n == 0 || n > tab->max_len) return -1;
    uint64_t head = key_head(p, n);
    for (uint32_t s = (uint32_t)hash_key(p, n, head) & tab->mask;; s = (s + 1) & tab->mask) {
        const nc_rank_slot *slot = &tab->slots[s];
        if (slot->rank < 0) return -1;
        if (slot->head == head && slot->len == n &&
            (n <= 8 || memcmp(tab->blob + tab->offs[slot->rank] + 8, p + 8, n - 8) == 0))
            return slot->rank;
    }
}

/* ==== merging ==== */

#define NO_RANK INT32_MAX

static inline int32_t pair_rank(const nc_rank_table *tab, const uint8_t *p, size_t a, size_t b) {
    int32_t r = nc_rank_lookup(tab, p + a, b - a);
    return r < 0 ? NO_RANK : r;
}

/* Short pieces: parts[i] = start offset of part i (parts[m] = n is the end),
 * rank[i] = rank of parts i and i+1 merged, tok[i] = token of part i. */
#define SHORT_PIECE 256

static void merge_short(const nc_rank_table *tab, const uint8_t *p, size_t n, nc_tokens *out) {
    uint32_t parts[SHORT_PIECE + 1];
    int32_t rank[SHORT_PIECE], tok[SHORT_PIECE];
    size_t m = n; /* number of parts */
    for (size_t i = 0; i <= n; i++) parts[i] = (uint32_t)i;
    for (size_t i = 0; i < n; i++) tok[i] = tab->byte_rank[p[i]];
    for (size_t i = 0; i + 1 < n; i++) rank[i] = pair_rank(tab, p, i, i + 2);
    if (n) rank[n - 1] = NO_RANK;
    for (;;) {
        int32_t best = NO_RANK;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < m; i++) {
            if (rank[i] < best) {
                best = rank[i];
                bi = i;
            }
        }
        if (best == NO_RANK) break;
        /* merge parts bi and bi+1 into one token of rank `best` */
        tok[bi] = best;
        memmove(&parts[bi + 1], &parts[bi + 2], (m - bi - 1) * sizeof parts[0]);
        memmove(&tok[bi + 1], &tok[bi + 2], (m - bi - 2) * sizeof tok[0]);
        memmove(&rank[bi + 1], &rank[bi + 2], (m - bi - 2) * sizeof rank[0]);
        m--;
        rank[bi] = bi + 1 < m ? pair_rank(tab, p, parts[bi], parts[bi + 2]) : NO_RANK;
        if (bi > 0) rank[bi - 1] = pair_rank(tab, p, parts[bi - 1], parts[bi + 1]);
    }
    nc_tokens_append(out, tok, m);
}

/* Long pieces: parts form a linked list indexed by start offset. */
typedef struct {
    int32_t rank;
    uint32_t start;
    uint32_t version;
} heap_entry;

static inline int heap_less(const heap_entry *a, const heap_entry *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->start < b->start);
}

static void heap_push(heap_entry *h, size_t *n, heap_entry e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(&e, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = e;
}

static heap_entry heap_pop(heap_entry *h, size_t *n) {
    heap_entry top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

static int merge_long(const nc_rank_table *tab, const uint8_t *p, size_t n, nc_tokens *out) {
    /* next[s]: start of the part after the one starting at s (n at the end);
     * prev[s]: start of the part before (UINT32_MAX for the first);
     * alive[s]: a part starts at s; version[s] bumps when its pair changes.
     * The heap holds n - 1 initial pairs plus at most 2 per merge. */
    uint32_t *next = malloc(n * sizeof *next), *prev = malloc(n * sizeof *prev);
    uint32_t *version = calloc(n, sizeof *version);
    int32_t *tok = malloc(n * sizeof *tok);
    uint8_t *alive = malloc(n);
    heap_entry *heap = malloc(3 * n * sizeof *heap);
    int rc = 0;
    if (!next || !prev || !version || !tok || !alive || !heap) {
        rc = nc_fail("tokenizer: out of memory encoding a %zu-byte piece", n);
        goto done;
    }
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        next[i] = (uint32_t)(i + 1);
        prev[i] = i ? (uint32_t)(i - 1) : UINT32_MAX;
        tok[i] = tab->byte_rank[p[i]];
        alive[i] = 1;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        int32_t r = pair_rank(tab, p, i, i + 2);
        if (r != NO_RANK) heap_push(heap, &hn, (heap_entry){r, (uint32_t)i, 0});
    }
    while (hn) {
        heap_entry e = heap_pop(heap, &hn);
        uint32_t s = e.start;
        if (!alive[s] || version[s] != e.version) continue; /* stale entry */
        uint32_t nx = next[s]; /* merge the part at s with the one at nx */
        tok[s] = e.rank;
        alive[nx] = 0;
        next[s] = next[nx];
        if (next[s] < n) prev[next[s]] = s;
        version[s]++;
        if (next[s] < n) {
            int32_t r = pair_rank(tab, p, s, next[next[s]]);
            if (r != NO_RANK) heap_push(heap, &hn, (heap_entry){r, s, version[s]});
        }
        if (prev[s] != UINT32_MAX) {
            uint32_t ps = prev[s];
            version[ps]++;
            int32_t r = pair_rank(tab, p, ps, next[s]);
            if (r != NO_RANK) heap_push(heap, &hn, (heap_entry){r, ps, version[ps]});
        }
    }
    for (size_t s = 0; s < n; s = next[s]) nc_tokens_push(out, tok[s]);
done:
    free(next);
    free(prev);
    free(version);
    free(tok);
    free(alive);
    free(heap);
    return rc;
}

int nc_bpe_encode_piece(const nc_rank_table *tab, const uint8_t *p, size_t n, nc_tokens *out) {
    if (n == 0) return 0;
    int32_t whole = nc_rank_lookup(tab, p, n);
    if (whole >= 0) {
        nc_tokens_push(out, whole);
        return 0;
    }
    if (n <= SHORT_PIECE) {
        merge_short(tab, p, n, out);
        return 0;
    }
    return merge_long(tab, p, n, out);
}

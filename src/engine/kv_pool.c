/*
 * kv_pool.c: KV block reference counting and the prefix cache (see
 * kv_pool.h). The cache is a small array scanned linearly: lookups happen
 * once per admitted request and compare token lists, which is cheap next
 * to the prefill they save.
 */
#include "kv_pool.h"

#include <stdlib.h>
#include <string.h>

#include "../backend/backend.h"
#include "../util/common.h"

/* ==== block pool ==== */

int nc_kv_pool_init(nc_kv_pool *p, int32_t n_blocks) {
    memset(p, 0, sizeof *p);
    if (n_blocks <= 0) return nc_fail("scheduler: the backend has no KV blocks");
    p->row_refs = calloc((size_t)n_blocks, sizeof *p->row_refs);
    p->cache_refs = calloc((size_t)n_blocks, sizeof *p->cache_refs);
    p->free_ids = malloc((size_t)n_blocks * sizeof *p->free_ids);
    if (!p->row_refs || !p->cache_refs || !p->free_ids) {
        nc_kv_pool_free(p);
        return nc_fail("scheduler: out of memory for %d KV block records", n_blocks);
    }
    p->n_blocks = n_blocks;
    /* Stack top = lowest id, so allocation order is 0, 1, 2, ... */
    for (int32_t i = 0; i < n_blocks; i++) p->free_ids[i] = n_blocks - 1 - i;
    p->n_free = n_blocks;
    return 0;
}

void nc_kv_pool_free(nc_kv_pool *p) {
    free(p->row_refs);
    free(p->cache_refs);
    free(p->free_ids);
    memset(p, 0, sizeof *p);
}

/* Keeps n_used / n_cached right around a change of block b's counts. */
static void account(nc_kv_pool *p, int32_t b, int sign) {
    if (p->row_refs[b] > 0) p->n_used += sign;
    else if (p->cache_refs[b] > 0) p->n_cached += sign;
}

int32_t nc_kv_pool_alloc(nc_kv_pool *p) {
    if (p->n_free == 0) return -1;
    int32_t b = p->free_ids[--p->n_free];
    NC_ASSERT(p->row_refs[b] == 0 && p->cache_refs[b] == 0);
    p->row_refs[b] = 1;
    p->n_used++;
    return b;
}

void nc_kv_pool_ref(nc_kv_pool *p, int32_t b, bool cache) {
    NC_ASSERT(b >= 0 && b < p->n_blocks && (p->row_refs[b] > 0 || p->cache_refs[b] > 0));
    account(p, b, -1);
    if (cache) p->cache_refs[b]++;
    else p->row_refs[b]++;
    account(p, b, +1);
}

void nc_kv_pool_unref(nc_kv_pool *p, int32_t b, bool cache) {
    NC_ASSERT(b >= 0 && b < p->n_blocks);
    int32_t *refs = cache ? p->cache_refs : p->row_refs;
    NC_ASSERT(refs[b] > 0);
    account(p, b, -1);
    refs[b]--;
    account(p, b, +1);
    if (p->row_refs[b] == 0 && p->cache_refs[b] == 0) p->free_ids[p->n_free++] = b;
}

/* ==== prefix cache ==== */

void nc_prefix_cache_init(nc_prefix_cache *c, int32_t max_entries) {
    memset(c, 0, sizeof *c);
    c->cap = max_entries > 0 ? max_entries : 1;
    c->entries = nc_xcalloc((size_t)c->cap, sizeof *c->entries);
    pthread_mutex_init(&c->mu, NULL);
}

/* The caller holds c->mu. */
static void drop_entry(nc_prefix_cache *c, nc_kv_pool *p, int32_t i) {
    nc_prefix_entry *e = &c->entries[i];
    for (int32_t b = 0; b < e->n_blocks; b++) nc_kv_pool_unref(p, e->blocks[b], true);
    free(e->tokens);
    free(e->blocks);
    c->entries[i] = c->entries[--c->n];
}

void nc_prefix_cache_free(nc_prefix_cache *c, nc_kv_pool *p) {
    if (!c->entries) return;
    pthread_mutex_lock(&c->mu);
    while (c->n > 0) drop_entry(c, p, c->n - 1);
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_destroy(&c->mu);
    free(c->entries);
    memset(c, 0, sizeof *c);
}

static int32_t common_prefix(const int32_t *a, int32_t na, const int32_t *b, int32_t nb) {
    int32_t n = NC_MIN(na, nb), i = 0;
    while (i < n && a[i] == b[i]) i++;
    return i;
}

int32_t nc_prefix_cache_lookup(const nc_prefix_cache *c, const int32_t *tokens, int32_t n,
                               int32_t *match) {
    int32_t best = -1, best_len = 0;
    for (int32_t i = 0; i < c->n; i++) {
        int32_t m = common_prefix(c->entries[i].tokens, c->entries[i].n_tokens, tokens, n);
        if (m > best_len) {
            best = i;
            best_len = m;
        }
    }
    *match = best_len;
    return best;
}

int32_t nc_prefix_cache_match(nc_prefix_cache *c, const int32_t *tokens, int32_t n) {
    int32_t match;
    pthread_mutex_lock(&c->mu);
    nc_prefix_cache_lookup(c, tokens, n, &match);
    pthread_mutex_unlock(&c->mu);
    return match;
}

void nc_prefix_cache_touch(nc_prefix_cache *c, int32_t entry) {
    c->entries[entry].last_used = ++c->clock;
}

/* The caller holds c->mu. */
static bool evict_lru(nc_prefix_cache *c, nc_kv_pool *p) {
    if (c->n == 0) return false;
    int32_t lru = 0;
    for (int32_t i = 1; i < c->n; i++)
        if (c->entries[i].last_used < c->entries[lru].last_used) lru = i;
    drop_entry(c, p, lru);
    return true;
}

bool nc_prefix_cache_evict_lru(nc_prefix_cache *c, nc_kv_pool *p) {
    pthread_mutex_lock(&c->mu);
    bool dropped = evict_lru(c, p);
    pthread_mutex_unlock(&c->mu);
    return dropped;
}

void nc_prefix_cache_insert(nc_prefix_cache *c, nc_kv_pool *p, const int32_t *tokens,
                            int32_t n_tokens, const int32_t *blocks, int32_t n_blocks) {
    int32_t need = (n_tokens + NC_KV_BLOCK_TOKENS - 1) / NC_KV_BLOCK_TOKENS;
    NC_ASSERT(need <= n_blocks);
    bool keep = n_tokens > 0;
    pthread_mutex_lock(&c->mu);
    for (int32_t i = 0; i < c->n && keep; i++) {
        nc_prefix_entry *e = &c->entries[i];
        if (e->n_tokens >= n_tokens && common_prefix(e->tokens, e->n_tokens, tokens, n_tokens) == n_tokens) {
            keep = false; /* already covered by a longer (or equal) entry */
            nc_prefix_cache_touch(c, i);
        }
    }
    for (int32_t i = 0; i < c->n && keep;) { /* entries the new one extends */
        nc_prefix_entry *e = &c->entries[i];
        if (e->n_tokens < n_tokens && common_prefix(e->tokens, e->n_tokens, tokens, n_tokens) == e->n_tokens)
            drop_entry(c, p, i);
        else
            i++;
    }
    if (keep) {
        int32_t *tk = malloc((size_t)n_tokens * sizeof *tk);
        int32_t *bl = malloc((size_t)need * sizeof *bl);
        if (!tk || !bl) { /* no memory for the record: just do not cache */
            free(tk);
            free(bl);
            keep = false;
        } else {
            if (c->n == c->cap) evict_lru(c, p);
            memcpy(tk, tokens, (size_t)n_tokens * sizeof *tk);
            for (int32_t b = 0; b < need; b++) {
                bl[b] = blocks[b];
                nc_kv_pool_ref(p, blocks[b], true); /* the cache's reference ... */
                nc_kv_pool_unref(p, blocks[b], false); /* ... replaces the row's */
            }
            c->entries[c->n++] = (nc_prefix_entry){tk, n_tokens, bl, need, ++c->clock};
        }
    }
    pthread_mutex_unlock(&c->mu);
    for (int32_t b = keep ? need : 0; b < n_blocks; b++) nc_kv_pool_unref(p, blocks[b], false);
}

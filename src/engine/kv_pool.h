/*
 * kv_pool.h: the scheduler's bookkeeping of the backend's KV blocks, and
 * the prefix cache that keeps finished conversations' blocks for reuse.
 *
 * The backend owns the memory of NC_KV_BLOCK_TOKENS-position blocks; this
 * only hands out block ids and counts references. A block is shared when
 * sequences fork (n samples from one prompt) or reuse a cached prefix: only
 * full blocks are ever shared, so nobody writes into a shared block (a
 * partial last block is copied instead). References are counted per owner
 * kind, so the pool can tell blocks that running rows need from blocks
 * only the prefix cache holds (reclaimable at any time).
 *
 * Mirrors what nanochat lacks: its Engine re-prefills the whole history
 * every turn and gives every sample its own full copy of the cache.
 * Used by the scheduler's stepping thread, with one exception: other
 * threads may ask how much of a prompt the cache holds
 * (nc_prefix_cache_match, for a router choosing between engines). So the
 * functions that change the cache's entries take its mutex; the stepping
 * thread's own lookups, which only read, do not need it.
 */
#ifndef NC_ENGINE_KV_POOL_H
#define NC_ENGINE_KV_POOL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* ==== block pool ==== */

typedef struct {
    int32_t n_blocks;
    int32_t *row_refs;   /* [n_blocks] references from running rows */
    int32_t *cache_refs; /* [n_blocks] references from prefix-cache entries */
    int32_t *free_ids;   /* stack of unreferenced block ids */
    int32_t n_free;
    int32_t n_used;      /* blocks with row_refs > 0 */
    int32_t n_cached;    /* blocks held only by the cache (row_refs == 0 < cache_refs) */
} nc_kv_pool;

int nc_kv_pool_init(nc_kv_pool *p, int32_t n_blocks);
void nc_kv_pool_free(nc_kv_pool *p);

/* Takes a free block for a row (row_refs = 1); -1 if none is free. */
int32_t nc_kv_pool_alloc(nc_kv_pool *p);
/* Adds / drops one reference of the given kind (cache = prefix cache). A
 * block with no references left returns to the free stack. */
void nc_kv_pool_ref(nc_kv_pool *p, int32_t block, bool cache);
void nc_kv_pool_unref(nc_kv_pool *p, int32_t block, bool cache);

/* ==== prefix cache ==== */

typedef struct {
    int32_t *tokens;    /* [n_tokens] the tokens whose KV the blocks hold */
    int32_t n_tokens;
    int32_t *blocks;    /* [ceil(n_tokens / NC_KV_BLOCK_TOKENS)] */
    int32_t n_blocks;
    uint64_t last_used; /* LRU clock */
} nc_prefix_entry;

typedef struct {
    nc_prefix_entry *entries;
    int32_t n, cap;
    uint64_t clock;
    pthread_mutex_t mu;  /* held while entries are added or dropped, and by nc_prefix_cache_match */
} nc_prefix_cache;

/* `max_entries` bounds the number of sequences kept (each costs a token
 * list); blocks are bounded by the pool, which evicts via evict_lru. */
void nc_prefix_cache_init(nc_prefix_cache *c, int32_t max_entries);
/* Drops every entry (returning its references to the pool). */
void nc_prefix_cache_free(nc_prefix_cache *c, nc_kv_pool *p);

/* The entry sharing the longest prefix with tokens[0..n); *match gets the
 * length of that prefix. -1 (and *match = 0) if none shares a token. */
int32_t nc_prefix_cache_lookup(const nc_prefix_cache *c, const int32_t *tokens, int32_t n,
                               int32_t *match);
/* The length of the longest prefix of tokens[0..n) that an entry holds;
 * any thread may call it (under the cache's mutex). */
int32_t nc_prefix_cache_match(nc_prefix_cache *c, const int32_t *tokens, int32_t n);
/* Marks an entry as just used. */
void nc_prefix_cache_touch(nc_prefix_cache *c, int32_t entry);

/*
 * Keeps a finished sequence: tokens[0..n_tokens) computed into blocks
 * [0..n_blocks) (n_blocks >= ceil(n_tokens / 64); extra blocks are
 * released). Takes over the caller's row references. An entry that is a
 * prefix of the new one is replaced; if the new one is a prefix of an
 * existing entry it is not stored (its references are dropped).
 */
void nc_prefix_cache_insert(nc_prefix_cache *c, nc_kv_pool *p, const int32_t *tokens,
                            int32_t n_tokens, const int32_t *blocks, int32_t n_blocks);

/* Drops the least recently used entry; false if the cache is empty. */
bool nc_prefix_cache_evict_lru(nc_prefix_cache *c, nc_kv_pool *p);

#endif /* NC_ENGINE_KV_POOL_H */

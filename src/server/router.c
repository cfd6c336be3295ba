/*
 * router.c: which engine a new request goes to (docs/multi-device.md,
 * Routing).
 *
 * The rules, in order (nc_route_choose):
 *   1. Only engines that serve (loaded, not failed) are considered.
 *   2. A request with a session key (X-Session-Id, or OpenAI's `user`)
 *      goes where that key went last: the engine whose prefix cache holds
 *      the conversation so far. The same key as the deploy guide's HAProxy
 *      stick table, so one server behind the balancer keeps conversations
 *      on one engine the way the balancer keeps them on one server.
 *   3. Otherwise the engine whose prefix cache holds the most whole 64-token
 *      blocks of the prompt (at least one), asked of each scheduler
 *      (nc_scheduler_cached_prefix): a client that sends no key but resends
 *      its conversation still lands where that conversation is cached.
 *      Engines holding equally many blocks are told apart by load.
 *   4. Otherwise, and whenever the engine rules 2-3 pick is saturated (its
 *      outstanding rows fill its batch) while the least loaded one has room,
 *      the engine with the fewest outstanding rows: rows routed to it and not
 *      yet ended, counted here at the moment of the choice, so a burst of
 *      requests spreads at once instead of waiting for the schedulers'
 *      next statistics. Ties rotate.
 * The key's entry then records the engine chosen.
 *
 * Session keys live in a fixed table of 64-bit hashes (a collision only
 * sends a conversation to another engine: a cache miss, not an error),
 * probed over 8 slots; entries expire after 30 minutes, as the balancer's,
 * and a full neighbourhood drops its oldest.
 */
#include "srv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../util/common.h"

#define SESSION_SLOTS (1 << 16)
#define SESSION_TTL_S 1800.0
#define SESSION_PROBE 8

/* ==== the decision ==== */

static bool saturated(const nc_route_engine *e) { return e->load >= e->capacity; }

int nc_route_choose(const nc_route_engine *e, int n, int sticky, unsigned turn) {
    int least = -1;
    for (int k = 0; k < n; k++) {
        int i = (int)((turn + (unsigned)k) % (unsigned)n);
        if (e[i].serving && (least < 0 || e[i].load < e[least].load)) least = i;
    }
    if (least < 0) return -1;
    /* An affinity pick yields to balance only when it would queue while
     * another engine has room. */
    bool room_elsewhere = !saturated(&e[least]);
    if (sticky >= 0 && sticky < n && e[sticky].serving)
        return saturated(&e[sticky]) && room_elsewhere ? least : sticky;
    int best = -1, best_blocks = 0;
    for (int i = 0; i < n; i++) {
        int blocks = e[i].cached / NC_KV_BLOCK_TOKENS;
        if (!e[i].serving || blocks < 1) continue;
        if (blocks > best_blocks || (blocks == best_blocks && e[i].load < e[best].load)) {
            best = i;
            best_blocks = blocks;
        }
    }
    if (best >= 0 && !(saturated(&e[best]) && room_elsewhere)) return best;
    return least;
}

/* ==== session keys ==== */

typedef struct {
    uint64_t hash;   /* 0: empty */
    int32_t engine;
    double t;        /* last use */
} session_slot;

struct nc_session_table {
    pthread_mutex_t mu;
    session_slot *slots;
    int32_t mask;
    double ttl_s;
};

nc_session_table *nc_session_table_new(int32_t capacity, double ttl_s) {
    nc_session_table *t = nc_xcalloc(1, sizeof *t);
    if (capacity <= 0) capacity = SESSION_SLOTS;
    if (ttl_s <= 0) ttl_s = SESSION_TTL_S;
    int32_t cap = 16;
    while (cap < capacity) cap *= 2;
    t->slots = nc_xcalloc((size_t)cap, sizeof *t->slots);
    t->mask = cap - 1;
    t->ttl_s = ttl_s;
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

void nc_session_table_free(nc_session_table *t) {
    if (!t) return;
    pthread_mutex_destroy(&t->mu);
    free(t->slots);
    free(t);
}

/* FNV-1a, never 0 (the empty mark). */
static uint64_t key_hash(const char *key) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    return h ? h : 1;
}

int nc_session_lookup(nc_session_table *t, const char *key, double now) {
    uint64_t h = key_hash(key);
    int engine = -1;
    pthread_mutex_lock(&t->mu);
    for (int k = 0; k < SESSION_PROBE; k++) {
        const session_slot *s = &t->slots[(h + (uint64_t)k) & (uint64_t)t->mask];
        if (s->hash == h && now - s->t <= t->ttl_s) {
            engine = s->engine;
            break;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return engine;
}

/* How readily a slot is given to a new key: empty or expired ones first,
 * then the longest unused. */
static double staleness(const session_slot *s, double now, double ttl_s) {
    return s->hash == 0 || now - s->t > ttl_s ? INFINITY : now - s->t;
}

void nc_session_store(nc_session_table *t, const char *key, int engine, double now) {
    uint64_t h = key_hash(key);
    pthread_mutex_lock(&t->mu);
    session_slot *pick = NULL;
    for (int k = 0; k < SESSION_PROBE; k++) {
        session_slot *s = &t->slots[(h + (uint64_t)k) & (uint64_t)t->mask];
        if (s->hash == h) {
            pick = s;
            break;
        }
        if (!pick || staleness(s, now, t->ttl_s) > staleness(pick, now, t->ttl_s)) pick = s;
    }
    pick->hash = h;
    pick->engine = engine;
    pick->t = now;
    pthread_mutex_unlock(&t->mu);
}

/* ==== picking for a request ==== */

nc_srv_engine *nc_router_pick(nc_srv *srv, const nc_tokens *prompt, const char *session, int32_t rows) {
    int n = srv->n_engines;
    nc_route_engine view[NC_SERVER_MAX_ENGINES];
    for (int i = 0; i < n; i++) {
        nc_srv_engine *e = &srv->engines[i];
        view[i].serving = atomic_load_explicit(&e->state, memory_order_acquire) == NC_ENGINE_READY;
        view[i].load = atomic_load(&e->outstanding);
        view[i].capacity = e->capacity;
        view[i].cached = 0;
    }
    double now = nc_now();
    int sticky = session && *session ? nc_session_lookup(srv->sessions, session, now) : -1;
    if (n > 1 && (sticky < 0 || !view[sticky].serving))
        for (int i = 0; i < n; i++)
            if (view[i].serving)
                view[i].cached = nc_scheduler_cached_prefix(srv->engines[i].sched, prompt->ids, (int32_t)prompt->n);
    int k = nc_route_choose(view, n, sticky, atomic_fetch_add(&srv->route_turn, 1));
    if (k < 0) return NULL;
    if (session && *session) nc_session_store(srv->sessions, session, k, now);
    atomic_fetch_add(&srv->engines[k].outstanding, rows);
    return &srv->engines[k];
}

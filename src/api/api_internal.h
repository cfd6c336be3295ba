/*
 * api_internal.h: the nc_engine handle behind include/nanochat.h, and the
 * public API's error buffer, shared by the files of src/api/.
 */
#ifndef NC_API_INTERNAL_H
#define NC_API_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "../engine/bundle.h"
#include "../../include/nanochat.h"

struct nc_engine {
    nc_bundle b;              /* owned; its scheduler is stepped only by the holder of gen_lock */
    pthread_mutex_t gen_lock; /* one stepping thread at a time */
    pthread_mutex_t req_lock; /* the requests below and what their rows collected */
    nc_request *requests;     /* submitted and not yet freed (or freed but still running) */
    int32_t max_batch;        /* rows decoding together, as resolved */
};

/* The engine a generation is running for on this thread (inside its
 * stream callback): stepping it again would deadlock on gen_lock. */
extern _Thread_local const nc_engine *nc_pub_generating;

/* Frees every request of `e` (nc_engine_close, after the scheduler). */
void nc_pub_requests_free_all(nc_engine *e);

/* Clears the public error (a call that succeeds leaves "" behind). */
void nc_pub_clear_error(void);
/* Copies the internal message (nc_error()) into the public buffer and
 * returns -1: `return nc_pub_failed();` after an internal call failed. */
int nc_pub_failed(void);
/* nc_fail + nc_pub_failed in one: records `fmt` publicly and returns -1. */
int nc_pub_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Public sampling options (NULL: nanochat's chat CLI defaults) -> scheduler
 * params for one row without log-probabilities, validated. */
int nc_pub_gen_params(const nc_generate_options *o, nc_gen_params *g);
/* The prompt's ids (messages rendered, text after <|bos|>, or the ids as
 * given), appended to `out`. */
int nc_pub_build_prompt(const nc_engine *e, const nc_prompt *p, nc_tokens *out);

/* Renders public messages as nanochat's chat prompt, appending to `out`. */
int nc_pub_render_messages(const nc_engine *e, const nc_message *msgs, size_t n_msgs, nc_tokens *out);

#endif /* NC_API_INTERNAL_H */

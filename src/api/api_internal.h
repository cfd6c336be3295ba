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
    pthread_mutex_t gen_lock; /* one generation at a time */
};

/* Clears the public error (a call that succeeds leaves "" behind). */
void nc_pub_clear_error(void);
/* Copies the internal message (nc_error()) into the public buffer and
 * returns -1: `return nc_pub_failed();` after an internal call failed. */
int nc_pub_failed(void);
/* nc_fail + nc_pub_failed in one: records `fmt` publicly and returns -1. */
int nc_pub_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Renders public messages as nanochat's chat prompt, appending to `out`. */
int nc_pub_render_messages(const nc_engine *e, const nc_message *msgs, size_t n_msgs, nc_tokens *out);

#endif /* NC_API_INTERNAL_H */

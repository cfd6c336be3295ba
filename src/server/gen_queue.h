/*
 * gen_queue.h: the bounded hand-off between the engine thread (producer,
 * inside nc_scheduler_step) and one HTTP connection thread (consumer).
 *
 * The engine never waits on a client: nc_gen_queue_callback() copies the
 * event into a ring allocated at submit time and returns at once. If a
 * client falls so far behind that the ring fills (max_lag undelivered
 * tokens, NC_GQ_DEFAULT_MAX_LAG by default), the callback asks the scheduler to stop the row and
 * the consumer sees an error; finish events have reserved slots, so none is
 * ever dropped. The queue is reference counted: one reference for the HTTP
 * side, one for the engine until every row has reported its finish (and
 * one for the waker while it owes the consumer a wake-up).
 */
#ifndef NC_SERVER_GEN_QUEUE_H
#define NC_SERVER_GEN_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "../engine/scheduler.h"

/* Undelivered token events per request before it is cancelled: minutes of
 * output at any realistic speed, while TCP buffers hold many more bytes. */
#define NC_GQ_DEFAULT_MAX_LAG 4096

struct nc_srv_metrics;
typedef struct nc_gen_waker nc_gen_waker;

typedef struct {
    int32_t row;
    int32_t token;        /* -1: a pure finish event */
    bool forced;          /* calculator output, not sampled */
    bool terminal;        /* the stop token: not part of the text */
    bool has_logprob;     /* chosen/top are valid */
    uint8_t finish;       /* nc_finish_reason */
    float logprob;        /* chosen token's log-probability */
    int32_t n_top;        /* alternatives stored in the queue's top area */
} nc_gq_event;

typedef struct nc_gen_queue {
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* broadcast after pushes (by the waker, if any) */
    int refs;                    /* HTTP side + engine side (+ the waker while a wake is pending) */
    nc_gen_waker *waker;         /* wakes the consumer off the engine thread, or NULL */
    bool wake_pending;           /* queued on the waker */

    nc_gq_event *ring;           /* [cap] */
    nc_token_logprob *tops;      /* [cap * top_per] alternatives, or NULL */
    int32_t top_per;             /* alternatives per event (request's top_logprobs, -1: none) */
    int32_t cap;                 /* token slots + one reserved finish slot per row */
    int32_t max_lag;             /* token slots */
    int32_t head, count, n_token_events;

    int32_t n_rows;
    int32_t rows_finished;       /* finish events received from the engine */
    bool *row_stop;              /* [n_rows] consumer asks the engine to stop a row */
    bool cancel_all;             /* consumer gave up on the whole request */
    bool overflowed;             /* the client fell too far behind */
    char error[256];             /* first NC_FINISH_ERROR message */
    int32_t n_prompt_tokens;     /* from the engine's events */
    int32_t n_cached_tokens;

    /* Engine-thread-only timing for metrics. */
    struct nc_srv_metrics *metrics;
    double t_submit;             /* when the request was submitted (nc_now) */
    bool first_seen;
    double *t_last;              /* [n_rows] time of the row's previous token */
} nc_gen_queue;

/* Wakes the consumers of queues on a thread of its own. The engine thread
 * delivers a token to every running request each step, and a wake-up of
 * a waiting consumer is a system call (~2 us): 64 of them are ~2% of a
 * 64-stream GPU step, during which the GPU would sit idle. With a waker,
 * the engine only queues the wake-ups and kicks the waker once per step.
 * NULL if the thread cannot be started. */
nc_gen_waker *nc_gen_waker_create(void);
/* After a step's deliveries: wake every consumer with new events. */
void nc_gen_waker_kick(nc_gen_waker *w);
/* Wakes whatever is still pending, then stops the thread. */
void nc_gen_waker_free(nc_gen_waker *w);

/* A queue for `n_rows` rows and `top_per` alternatives per token (the
 * request's top_logprobs: -1 when it wants no logprobs), holding at most
 * `max_lag` undelivered tokens, with one reference per side. Consumers are
 * woken through `waker` (see above; the engine must kick it after each
 * step) or, with NULL, at every push. NULL if out of memory. */
nc_gen_queue *nc_gen_queue_create(int32_t n_rows, int32_t top_per, int32_t max_lag,
                                  struct nc_srv_metrics *metrics, nc_gen_waker *waker);

/* Drops one reference; frees the queue with the last. */
void nc_gen_queue_release(nc_gen_queue *q);

/* The scheduler callback (nc_gen_callback); `user` is the queue. Drops the
 * engine's reference after the last row's finish. */
bool nc_gen_queue_callback(void *user, const nc_gen_event *ev);

/* Consumer: waits up to `timeout_s` for events, then moves up to `max` of
 * them into `out` (and their alternatives into `tops_out`, `max * top_per`
 * entries). Returns the number taken. *engine_done is set once every row
 * has finished on the engine side and all events were taken. */
int32_t nc_gen_queue_take(nc_gen_queue *q, nc_gq_event *out, nc_token_logprob *tops_out,
                          int32_t max, double timeout_s, bool *engine_done);

/* Consumer: asks the engine to stop one row (stop string hit) or all rows;
 * takes effect at the row's next event. */
void nc_gen_queue_stop_row(nc_gen_queue *q, int32_t row);
void nc_gen_queue_stop_all(nc_gen_queue *q);

/* Consumer: whether the ring overflowed; the engine's first error message
 * (copied into `buf`), if any. */
bool nc_gen_queue_overflowed(nc_gen_queue *q);
bool nc_gen_queue_error(nc_gen_queue *q, char *buf, size_t cap);

#endif /* NC_SERVER_GEN_QUEUE_H */

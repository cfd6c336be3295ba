/*
 * log.h: the server's log on stderr: one line per HTTP request (the
 * request log an operator reads), the server's own messages (listening,
 * ready, shutting down), and, at debug level, libmicrohttpd's.
 *
 * Two formats (--log-format): "text", readable, with the server's
 * messages as `nanochat serve: ...` lines as before; "json", JSON Lines
 * with the same fields for every line of a kind. A request line never
 * holds message or prompt text: only sizes, times and outcomes
 * (docs/server.md, Logs).
 */
#ifndef NC_SERVER_LOG_H
#define NC_SERVER_LOG_H

#include <stdbool.h>
#include <stdint.h>

typedef enum { NC_LOG_DEBUG = 0, NC_LOG_INFO, NC_LOG_WARN, NC_LOG_ERROR } nc_log_level;
typedef enum { NC_LOG_TEXT = 0, NC_LOG_JSON } nc_log_format;

/* Parse a --log-level / --log-format value; -1 if unknown. */
int nc_log_level_parse(const char *s, nc_log_level *out);
int nc_log_format_parse(const char *s, nc_log_format *out);

/* Sets the format and the lowest level written (default text, info). */
void nc_log_setup(nc_log_format format, nc_log_level min_level);
bool nc_log_enabled(nc_log_level level);

/* One of the server's own messages (no trailing newline). */
void nc_log(nc_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* What one request's log line reports. Generation fields are meaningful
 * only when `generation` is set. */
typedef struct {
    char id[136];               /* also sent as X-Request-Id */
    char client[64];            /* peer address */
    char method[33];            /* "" if the request line was never read */
    char route[200];            /* the path, without the query */
    int status;                 /* 499: the client left before an answer */
    double t_start;             /* nc_now() at the request's first byte */
    bool generation;
    int32_t prompt_tokens, cached_tokens, completion_tokens;
    double t_first_token;       /* nc_now() when the first token reached the server's
                                   HTTP side, 0: none */
    char finish[40];            /* "stop", "length", "stop,length", "cancelled", "timeout", ... */
    bool disconnected;          /* the client closed the connection before the end */
} nc_reqlog;

/* Writes the line of a finished request: info level, warn for 5xx.
 * `model` is reported for generation requests. */
void nc_log_request(const nc_reqlog *r, const char *model);

/* A new request id "req_<16 hex digits>" (unique in this process, not
 * guessable from the previous one) into `out` (at least 24 bytes). */
void nc_log_new_request_id(char *out);

#endif /* NC_SERVER_LOG_H */

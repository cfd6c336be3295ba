/*
 * http.c: the libmicrohttpd side of the server: one thread per connection
 * (so a handler may block while its request generates), a route table,
 * request bodies with a size limit (413) and the read deadline (408),
 * API-key checks (401), the Content-Type rule (415), CORS, JSON and
 * Server-Sent-Events responses, client-disconnect detection, and each
 * request's log line. Connections arrive from the gate (gate.c) with a
 * request head already checked; every response closes its connection.
 *
 * Streaming: an SSE response is a chunked response whose content callback
 * blocks (in short slices) on the request's event queue and returns each
 * event as soon as it exists, so tokens reach the client as generated. A
 * client that leaves is noticed either by a failed write or, while nothing
 * is being written (queued, prefilling), by peeking at its socket; the
 * response is then destroyed and the request cancelled, freeing its KV
 * blocks at the engine's next step.
 *
 * Errors the library raises itself in the middle of a body (a malformed
 * chunk) come with a built-in HTML page; its error log line, which it
 * writes on the connection's thread just before, is the cue to write the
 * JSON answer first (see mhd_log).
 */
#include "srv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../util/common.h"

/* Headers a browser may send cross-origin when its preflight does not
 * name them (the chat page's and the OpenAI clients' usual ones). */
#define NC_CORS_DEFAULT_HEADERS "Authorization, Content-Type, X-Session-Id, X-Request-Id"
/* After an answer written in the middle of a request: how long, and how
 * much, the rest of the client's request is read and dropped, so closing
 * does not reset the connection before the client read the answer. */
#define NC_LINGER_S 2.0
#define NC_LINGER_BYTES (16u << 20)

/* The request whose callback runs on this thread (a connection thread
 * serves one connection): for the library's error log (mhd_log). */
static _Thread_local nc_conn *thread_conn;

/* ==== CORS ==== */

/* The Access-Control-Allow-Origin value for a request with this Origin
 * header: "*" (any origin allowed), the origin itself (listed), or NULL. */
static const char *cors_allow(const nc_srv *srv, const char *origin) {
    if (srv->cors.any) return "*";
    return origin && nc_origin_allowed(&srv->cors, origin) ? origin : NULL;
}

static void add_cors_headers(struct MHD_Response *r, const nc_srv *srv, const char *origin) {
    const char *allow = cors_allow(srv, origin);
    if (allow) {
        MHD_add_response_header(r, "Access-Control-Allow-Origin", allow);
        MHD_add_response_header(r, "Access-Control-Expose-Headers", "X-Request-Id");
    }
    if (!srv->cors.any) MHD_add_response_header(r, "Vary", "Origin");
}

/* ==== responses ==== */

static enum MHD_Result queue(struct MHD_Connection *conn, nc_conn *c, int status, struct MHD_Response *r) {
    /* One request per connection: the next one comes on a new connection,
     * through the gate's checks (gate.c). */
    MHD_add_response_header(r, "Connection", "close");
    MHD_add_response_header(r, "Server", "nanochat-c");
    if (c) {
        add_cors_headers(r, c->srv, c->origin);
        MHD_add_response_header(r, "X-Request-Id", c->log.id);
        if (c->job && c->job->engine) {
            char engine[16];
            snprintf(engine, sizeof engine, "%d", c->job->engine->index);
            MHD_add_response_header(r, "X-Nanochat-Engine", engine); /* which engine generated it */
        }
    }
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    if (c) {
        c->responded = true;
        c->log.status = status;
        nc_metrics_request(&c->srv->metrics, c->ep, status);
    }
    return ret;
}

enum MHD_Result nc_http_send(struct MHD_Connection *conn, nc_conn *c, int status, const char *type,
                             const char *data, size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    return queue(conn, c, status, r);
}

enum MHD_Result nc_http_json(struct MHD_Connection *conn, nc_conn *c, int status, const nc_sbuf *body) {
    return nc_http_send(conn, c, status, "application/json", body->buf ? body->buf : "", body->len);
}

static void error_body(nc_sbuf *b, const nc_api_error *e, bool nanochat) {
    const char *type = e->status >= 500 ? "server_error" : "invalid_request_error";
    nc_sbuf_puts(b, "{");
    if (nanochat) {
        nc_sbuf_puts(b, "\"detail\":");
        nc_sbuf_json_string(b, e->message, strlen(e->message));
        nc_sbuf_puts(b, ",");
    }
    nc_sbuf_puts(b, "\"error\":{\"message\":");
    nc_sbuf_json_string(b, e->message, strlen(e->message));
    nc_sbuf_printf(b, ",\"type\":\"%s\",\"param\":", type);
    if (e->param[0]) nc_sbuf_json_string(b, e->param, strlen(e->param));
    else nc_sbuf_puts(b, "null");
    nc_sbuf_puts(b, ",\"code\":");
    if (e->code) nc_sbuf_json_string(b, e->code, strlen(e->code));
    else nc_sbuf_puts(b, "null");
    nc_sbuf_puts(b, "}}");
}

static enum MHD_Result send_error(struct MHD_Connection *conn, nc_conn *c, const nc_api_error *e,
                                  int retry_after_s) {
    nc_sbuf b = {0};
    error_body(&b, e, c && c->ep == NC_EP_NANOCHAT);
    struct MHD_Response *r = MHD_create_response_from_buffer(b.len, b.buf, MHD_RESPMEM_MUST_COPY);
    nc_sbuf_free(&b);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (retry_after_s > 0) {
        char v[16];
        snprintf(v, sizeof v, "%d", retry_after_s);
        MHD_add_response_header(r, "Retry-After", v);
    }
    if (e->status == 401) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
    return queue(conn, c, e->status, r);
}

enum MHD_Result nc_http_error(struct MHD_Connection *conn, nc_conn *c, const nc_api_error *e) {
    return send_error(conn, c, e, e->status == 503 ? 1 : 0);
}

enum MHD_Result nc_http_error_retry(struct MHD_Connection *conn, nc_conn *c, const nc_api_error *e,
                                    int retry_after_s) {
    return send_error(conn, c, e, retry_after_s);
}

static enum MHD_Result fail(struct MHD_Connection *conn, nc_conn *c, int status, const char *code,
                            const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static enum MHD_Result fail(struct MHD_Connection *conn, nc_conn *c, int status, const char *code,
                            const char *fmt, ...) {
    nc_api_error e = {.status = status, .code = code};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    va_end(ap);
    return send_error(conn, c, &e, 0);
}

/* ==== answers written to the socket ==== */

void nc_http_format_raw_error(nc_srv *srv, nc_sbuf *out, const nc_api_error *e, bool nanochat,
                              const char *request_id, const char *origin, int retry_after_s) {
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    nc_sbuf body = {0};
    error_body(&body, e, nanochat);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    const char *reason = MHD_get_reason_phrase_for((unsigned)e->status);
    nc_sbuf_printf(out, "HTTP/1.1 %d %s\r\nDate: %s, %02d %s %d %02d:%02d:%02d GMT\r\nServer: nanochat-c\r\n"
                   "Connection: close\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nX-Request-Id: %s\r\n",
                   e->status, reason && reason[0] ? reason : "Error", days[tm.tm_wday], tm.tm_mday,
                   months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, body.len, request_id);
    const char *allow = cors_allow(srv, origin);
    if (allow)
        nc_sbuf_printf(out, "Access-Control-Allow-Origin: %s\r\nAccess-Control-Expose-Headers: X-Request-Id\r\n", allow);
    if (!srv->cors.any) nc_sbuf_puts(out, "Vary: Origin\r\n");
    if (retry_after_s > 0) nc_sbuf_printf(out, "Retry-After: %d\r\n", retry_after_s);
    nc_sbuf_puts(out, "\r\n");
    nc_sbuf_append(out, body.buf, body.len);
    nc_sbuf_free(&body);
}

void nc_http_format_address(const struct sockaddr *sa, char *out, size_t cap) {
    snprintf(out, cap, "-");
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
    } else if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) inet_ntop(AF_INET, &a->s6_addr[12], out, (socklen_t)cap);
        else inet_ntop(AF_INET6, a, out, (socklen_t)cap);
    }
}

/* Writes a JSON error straight to the socket while the library is still
 * reading the request (it cannot queue a response then). */
static void write_raw_error(nc_conn *c, int status, const char *code, const char *message) {
    nc_api_error e = {.status = status, .code = code};
    snprintf(e.message, sizeof e.message, "%s", message);
    nc_sbuf out = {0};
    nc_http_format_raw_error(c->srv, &out, &e, c->ep == NC_EP_NANOCHAT, c->log.id, c->origin, 0);
    /* A few hundred bytes: the socket's send buffer, empty while a request
     * is read, takes them in one call. */
    ssize_t sent = send(c->fd, out.buf, out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)sent;
    nc_sbuf_free(&out);
    c->responded = true;
    c->log.status = status;
    nc_metrics_request(&c->srv->metrics, c->ep, status);
}

/* Ends our side, then reads and drops what the client still sends until
 * it closes (or NC_LINGER_S / NC_LINGER_BYTES), so the answer arrives. */
static void linger(int fd) {
    shutdown(fd, SHUT_WR);
    double until = nc_now() + NC_LINGER_S;
    size_t total = 0;
    char buf[16384];
    for (double left; (left = until - nc_now()) > 0 && total < NC_LINGER_BYTES;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(left * 1000) + 1) <= 0) break;
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
        if (n > 0) total += (size_t)n;
    }
}

/* A request that cannot go on while its body arrives: answer, drain,
 * and let the library close the connection. */
static enum MHD_Result abort_request(nc_conn *c, int status, const char *code, const char *message) {
    write_raw_error(c, status, code, message);
    linger(c->fd);
    return MHD_NO;
}

/* ==== server-sent events ==== */

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    nc_sse *s = cls;
    while (s->out_pos >= s->out.len) {
        if (s->abort) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (s->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        nc_sbuf_reset(&s->out);
        s->out_pos = 0;
        s->produce(s);
    }
    size_t n = NC_MIN(max, s->out.len - s->out_pos);
    memcpy(buf, s->out.buf + s->out_pos, n);
    s->out_pos += n;
    return (ssize_t)n;
}

static void sse_free(void *cls) {
    nc_sse *s = cls;
    nc_sbuf_free(&s->out);
    s->destroy(s);
}

enum MHD_Result nc_http_sse(struct MHD_Connection *conn, nc_conn *c, nc_sse *s) {
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, s, sse_free);
    if (!r) {
        sse_free(s);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    if (c) c->streaming = true;
    return queue(conn, c, 200, r);
}

/* ==== disconnects ==== */

int nc_http_client_fd(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

bool nc_http_client_gone(int fd) {
    if (fd < 0) return false;
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return false;
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL | POLLRDHUP)) return true;
    if (p.revents & POLLIN) {
        char ch;
        ssize_t r = recv(fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT);
        if (r == 0) return true;
        if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;
    }
    return false;
}

/* ==== routing ==== */

typedef enum MHD_Result (*route_fn)(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c);

typedef struct {
    const char *path;   /* the whole path, or its start when `prefix` */
    const char *method;
    nc_endpoint ep;
    route_fn fn;
    bool auth;          /* needs the API key when one is set */
    bool json_body;     /* the body must be Content-Type: application/json */
    bool prefix;        /* the path continues (an id) */
} route;

static const route routes[] = {
    {"/", "GET", NC_EP_ROOT, nc_api_index, false, false, false},
    {"/chat/completions", "POST", NC_EP_NANOCHAT, nc_api_nanochat, true, true, false},
    {"/v1/chat/completions", "POST", NC_EP_CHAT, nc_api_openai, true, true, false},
    {"/v1/completions", "POST", NC_EP_COMPLETIONS, nc_api_openai, true, true, false},
    {"/v1/models", "GET", NC_EP_MODELS, nc_api_models, true, false, false},
    {"/v1/models/", "GET", NC_EP_MODEL, nc_api_model, true, false, true},
    {"/tokenize", "POST", NC_EP_TOKENIZE, nc_api_tokenize, true, true, false},
    {"/detokenize", "POST", NC_EP_DETOKENIZE, nc_api_tokenize, true, true, false},
    {"/health", "GET", NC_EP_HEALTH, nc_api_health, false, false, false},
    {"/stats", "GET", NC_EP_STATS, nc_api_stats, false, false, false},
    {"/metrics", "GET", NC_EP_METRICS, nc_api_metrics, false, false, false},
};

static const route *find_route(const char *url) {
    for (size_t i = 0; i < NC_ARRAY_LEN(routes); i++) {
        const route *rt = &routes[i];
        size_t n = strlen(rt->path);
        if (rt->prefix ? !strncmp(url, rt->path, n) && url[n] : !strcmp(url, rt->path)) return rt;
    }
    if (!strcmp(url, "/index.html")) return &routes[0];
    return NULL;
}

/* Constant-time comparison of the bearer token with the key. */
static bool auth_ok(nc_srv *srv, struct MHD_Connection *conn) {
    const char *key = srv->opt.api_key;
    if (!key || !key[0]) return true;
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    while (*h == ' ') h++;
    size_t hl = strlen(h), kl = strlen(key);
    unsigned diff = (unsigned)(hl ^ kl);
    for (size_t i = 0; i < kl; i++) diff |= (unsigned char)key[i] ^ (unsigned char)(i < hl ? h[i] : 0);
    return diff == 0;
}

/* A CORS preflight: the origin, if --cors-origins names some, must be one
 * of them; the headers the browser asks for are allowed as asked (browser
 * SDKs add their own, e.g. the OpenAI JavaScript library's X-Stainless-*). */
static enum MHD_Result preflight(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c) {
    if (c->origin && !cors_allow(srv, c->origin))
        return fail(conn, c, 403, "origin_not_allowed",
                    "cross-origin requests from this origin are not allowed (see --cors-origins)");
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    const char *asked = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Access-Control-Request-Headers");
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers",
                            asked && nc_http_token_list_valid(asked) ? asked : NC_CORS_DEFAULT_HEADERS);
    MHD_add_response_header(r, "Access-Control-Max-Age", "86400");
    MHD_add_response_header(r, "Vary", "Access-Control-Request-Headers");
    return queue(conn, c, 204, r);
}

/* First callback of a request: everything decidable from the headers. */
static enum MHD_Result on_headers(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c, const char *method) {
    const route *rt = find_route(c->url);
    c->ep = rt ? rt->ep : NC_EP_OTHER;
    if (!strcmp(method, "OPTIONS")) return preflight(srv, conn, c);
    if (!rt) return fail(conn, c, 404, "not_found", "no route for %s %s", method, c->url);
    bool get_like = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (strcmp(method, rt->method) && !(get_like && !strcmp(rt->method, "GET")))
        return fail(conn, c, 405, "method_not_allowed", "%s expects %s, not %s", rt->path, rt->method, method);
    if (rt->auth && !auth_ok(srv, conn))
        return fail(conn, c, 401, "invalid_api_key",
                    "missing or invalid API key: send the header 'Authorization: Bearer <key>'");
    if (rt->json_body) {
        /* A cross-site form or a fetch() without a preflight can only send
         * text/plain, form or multipart bodies: requiring JSON keeps other
         * web pages from spending this server's compute. */
        const char *type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (!nc_http_is_json_type(type))
            return fail(conn, c, 415, "unsupported_media_type",
                        "the request body must be JSON with 'Content-Type: application/json' (got %s%.60s%s)",
                        type ? "'" : "", type ? type : "no Content-Type", type ? "'" : "");
    }
    return MHD_YES;
}

/* ==== library callbacks ==== */

static nc_conn *conn_new(nc_srv *srv, struct MHD_Connection *conn, const char *url, const char *method) {
    nc_conn *c = nc_xcalloc(1, sizeof *c);
    c->srv = srv;
    c->conn = conn;
    c->url = url;
    c->fd = nc_http_client_fd(conn);
    c->origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    c->log.t_start = nc_gate_first_byte(srv->gate, c->fd);
    c->deadline = c->log.t_start + srv->opt.read_timeout_s;
    const char *session = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Session-Id");
    if (session) snprintf(c->session, sizeof c->session, "%s", session);
    const char *id = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if (id && nc_http_request_id_valid(id)) snprintf(c->log.id, sizeof c->log.id, "%s", id);
    else nc_log_new_request_id(c->log.id);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) nc_http_format_address(ci->client_addr, c->log.client, sizeof c->log.client);
    else snprintf(c->log.client, sizeof c->log.client, "-");
    snprintf(c->log.method, sizeof c->log.method, "%s", method);
    snprintf(c->log.route, sizeof c->log.route, "%s", url);
    return c;
}

/* The library's idle timeout, cut to what is left of the read deadline
 * while the body arrives (a body trickling in never looks idle). */
static void limit_timeout(nc_conn *c) {
    double left = c->deadline - nc_now();
    if (left >= c->srv->opt.idle_timeout_s) return;
    MHD_set_connection_option(c->conn, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)NC_MAX(1.0, ceil(left)));
    c->short_timeout = true;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    nc_srv *srv = cls;
    nc_conn *c = *con_cls;
    if (!c) {
        c = *con_cls = conn_new(srv, conn, url, method);
        thread_conn = c;
        if (nc_now() > c->deadline)
            return fail(conn, c, 408, "request_timeout", "the request was not received within %g s (--read-timeout)",
                        srv->opt.read_timeout_s);
        limit_timeout(c);
        return on_headers(srv, conn, c, method);
    }
    thread_conn = c;
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (c->responded) return MHD_YES; /* answered from the headers: the library drops the body */
        char msg[160];
        if (nc_now() > c->deadline) {
            snprintf(msg, sizeof msg, "the request was not received within %g s (--read-timeout)",
                     srv->opt.read_timeout_s);
            return abort_request(c, 408, "request_timeout", msg);
        }
        if (c->body.len + n > srv->opt.max_body_bytes) {
            /* A chunked body has no Content-Length for the gate to check. */
            snprintf(msg, sizeof msg, "request body is larger than the limit of %zu bytes", srv->opt.max_body_bytes);
            return abort_request(c, 413, "request_too_large", msg);
        }
        nc_sbuf_append(&c->body, upload_data, n);
        return MHD_YES;
    }
    if (!c->body_done) {
        c->body_done = true;
        if (c->short_timeout)
            MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)srv->opt.idle_timeout_s);
    }
    if (c->responded) return MHD_YES;
    const route *rt = find_route(url);
    NC_ASSERT(rt); /* on_headers answered unknown routes */
    if (!c->body.buf) nc_sbuf_append(&c->body, "", 0);
    return rt->fn(srv, conn, c);
}

/* A connection's slot in the gate's counts is given back when its one
 * request is done, or when it closes without one, whichever comes first:
 * the rest of its life is the close, and a client that opens its next
 * connection as soon as it has the answer must find its slot free. */
typedef struct {
    bool released;
} conn_slot;

static void release_slot(nc_srv *srv, struct MHD_Connection *conn, conn_slot *slot) {
    if (!slot || slot->released) return;
    slot->released = true;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) nc_gate_released(srv->gate, ci->client_addr);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    nc_srv *srv = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        *socket_context = nc_xcalloc(1, sizeof(conn_slot));
        return;
    }
    release_slot(srv, conn, *socket_context);
    free(*socket_context);
    *socket_context = NULL;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    nc_srv *srv = cls;
    const union MHD_ConnectionInfo *sc = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (sc) release_slot(srv, conn, sc->socket_context);
    nc_conn *c = *con_cls;
    if (!c) return;
    if (thread_conn == c) thread_conn = NULL;
    if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED && !c->body_done && !c->responded) {
        char msg[160];
        snprintf(msg, sizeof msg, "the request was not received within %g s (--read-timeout)",
                 srv->opt.read_timeout_s);
        write_raw_error(c, 408, "request_timeout", msg); /* the library closes the connection next */
    }
    if (c->job) nc_job_report(c->job);
    /* A stream ends in error only when its client is gone (a failure of
     * the request itself is sent as an event and ends the stream normally). */
    if (toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT || toe == MHD_REQUEST_TERMINATED_READ_ERROR ||
        (toe == MHD_REQUEST_TERMINATED_WITH_ERROR && c->streaming))
        c->log.disconnected = true;
    if (!c->responded) {
        c->log.status = 499; /* nginx's code for a client that left before the answer */
        c->log.disconnected = true;
    }
    nc_log_request(&c->log, c->log.generation ? srv->model_name : NULL);
    nc_sbuf_free(&c->body);
    free(c);
    *con_cls = NULL;
}

/* The line libmicrohttpd (0.9.75, connection.c: transmit_error_response_len)
 * logs right before it answers a request with one of its HTML error pages. */
#define MHD_ERROR_PAGE_FORMAT "Error processing request (HTTP response code is %u ('%s')). Closing connection.\n"

/* The library's messages, at debug level. When one announces an HTML
 * error page for the request this thread serves, the JSON answer is
 * written first and the socket's sending side shut: the page then fails
 * to go out and the library closes the connection. */
static void mhd_log(void *cls, const char *fmt, va_list ap) {
    nc_conn *c = thread_conn;
    if (c && !c->responded && !strcmp(fmt, MHD_ERROR_PAGE_FORMAT)) {
        va_list aq;
        va_copy(aq, ap);
        int status = (int)va_arg(aq, unsigned);
        va_end(aq);
        const char *msg = status == 413 ? "a chunk of the request body is too large"
                        : status == 431 ? "the request's trailer fields are too large"
                        : status >= 500 ? "the request could not be processed"
                                        : "the request body is malformed (chunked encoding)";
        write_raw_error(c, status, status >= 500 ? NULL : status == 400 ? "bad_request" : "request_too_large", msg);
        shutdown(c->fd, SHUT_WR);
    }
    if (!nc_log_enabled(NC_LOG_DEBUG)) return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    nc_log(NC_LOG_DEBUG, "libmicrohttpd: %s", msg);
}

/* ==== daemon ==== */

int nc_http_start(nc_srv *srv) {
    /* The gate accepts connections and hands each over (MHD_add_connection).
     * The library's own connection limit is only a backstop: the gate
     * keeps to --max-connections. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_USE_NO_LISTEN_SOCKET;
    srv->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, srv,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, srv, /* first, or some messages bypass it */
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)(2 * srv->opt.max_connections + 64),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)srv->opt.idle_timeout_s,
        /* Room for the largest head the gate lets through (NC_HTTP_MAX_HEAD
         * bytes, read into half the pool, and a record for each field,
         * query parameter and cookie at the other end): the library's
         * default of 32 KiB is not. Only what a request uses is touched. */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024),
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
        MHD_OPTION_END);
    if (!srv->daemon) {
        nc_log(NC_LOG_ERROR, "cannot start the HTTP daemon");
        return -1;
    }
    if (nc_gate_start(srv)) {
        MHD_stop_daemon(srv->daemon);
        srv->daemon = NULL;
        return -1;
    }
    return 0;
}

void nc_http_quiesce(nc_srv *srv) { nc_gate_quiesce(srv); }

void nc_http_stop(nc_srv *srv) {
    nc_gate_stop(srv); /* nothing new reaches the daemon */
    if (srv->daemon) MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
    nc_gate_free(srv);
}

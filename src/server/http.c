/*
 * http.c: the libmicrohttpd side of the server: one thread per connection
 * (so a handler may block while its request generates), a route table,
 * request bodies with a size limit (413), API-key checks (401), CORS, JSON
 * and Server-Sent-Events responses, and client-disconnect detection.
 *
 * Streaming: an SSE response is a chunked response whose content callback
 * blocks (in short slices) on the request's event queue and returns each
 * event as soon as it exists, so tokens reach the client as generated. A
 * client that leaves is noticed either by a failed write or, while nothing
 * is being written (queued, prefilling), by peeking at its socket; the
 * response is then destroyed and the request cancelled, freeing its KV
 * blocks at the engine's next step.
 */
#include "srv.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../util/common.h"

/* ==== responses ==== */

static void add_common_headers(struct MHD_Response *r) {
    MHD_add_response_header(r, "Access-Control-Allow-Origin", "*");
    MHD_add_response_header(r, "Server", "nanochat-c");
}

static enum MHD_Result queue(struct MHD_Connection *conn, nc_conn *c, int status, struct MHD_Response *r) {
    add_common_headers(r);
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    if (c) {
        c->responded = true;
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
    const char *path;
    const char *method;
    nc_endpoint ep;
    route_fn fn;
    bool auth;      /* needs the API key when one is set */
} route;

static const route routes[] = {
    {"/", "GET", NC_EP_ROOT, nc_api_index, false},
    {"/chat/completions", "POST", NC_EP_NANOCHAT, nc_api_nanochat, true},
    {"/v1/chat/completions", "POST", NC_EP_CHAT, nc_api_openai, true},
    {"/v1/completions", "POST", NC_EP_COMPLETIONS, nc_api_openai, true},
    {"/v1/models", "GET", NC_EP_MODELS, nc_api_models, true},
    {"/tokenize", "POST", NC_EP_TOKENIZE, nc_api_tokenize, true},
    {"/detokenize", "POST", NC_EP_DETOKENIZE, nc_api_tokenize, true},
    {"/health", "GET", NC_EP_HEALTH, nc_api_health, false},
    {"/stats", "GET", NC_EP_STATS, nc_api_stats, false},
    {"/metrics", "GET", NC_EP_METRICS, nc_api_metrics, false},
};

static const route *find_route(const char *url) {
    for (size_t i = 0; i < NC_ARRAY_LEN(routes); i++)
        if (!strcmp(url, routes[i].path)) return &routes[i];
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

static enum MHD_Result options_response(struct MHD_Connection *conn, nc_conn *c) {
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type, X-Session-Id");
    MHD_add_response_header(r, "Access-Control-Max-Age", "86400");
    return queue(conn, c, 204, r);
}

/* First callback of a request: everything decidable from the headers. */
static enum MHD_Result on_headers(nc_srv *srv, struct MHD_Connection *conn, nc_conn *c,
                                  const char *url, const char *method) {
    const route *rt = find_route(url);
    c->ep = rt ? rt->ep : NC_EP_OTHER;
    if (!strcmp(method, "OPTIONS")) return options_response(conn, c);
    if (!rt) return fail(conn, c, 404, "not_found", "no route for %s %s", method, url);
    bool get_like = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    if (strcmp(method, rt->method) && !(get_like && !strcmp(rt->method, "GET")))
        return fail(conn, c, 405, "method_not_allowed", "%s expects %s, not %s", url, rt->method, method);
    if (rt->auth && !auth_ok(srv, conn))
        return fail(conn, c, 401, "invalid_api_key",
                    "missing or invalid API key: send the header 'Authorization: Bearer <key>'");
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(cl, &end, 10);
        if (errno || end == cl || v > srv->opt.max_body_bytes)
            return fail(conn, c, 413, "request_too_large",
                        "request body is larger than the limit of %zu bytes", srv->opt.max_body_bytes);
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    nc_srv *srv = cls;
    nc_conn *c = *con_cls;
    if (!c) {
        c = nc_xcalloc(1, sizeof *c);
        c->srv = srv;
        c->t_start = nc_now();
        *con_cls = c;
        /* Tokens go out as many small writes: without TCP_NODELAY, Nagle's
         * algorithm holds each one until the client's delayed ACK (~40 ms). */
        int fd = nc_http_client_fd(conn), one = 1;
        if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        return on_headers(srv, conn, c, url, method);
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (c->responded) return MHD_YES;
        if (c->too_large) {
            /* Discarding a chunked body; give up on a client that keeps
             * sending far past the limit. */
            c->body.len += n;
            return c->body.len > 8 * srv->opt.max_body_bytes ? MHD_NO : MHD_YES;
        }
        if (c->body.len + n > srv->opt.max_body_bytes) {
            c->too_large = true;
            nc_sbuf_free(&c->body);
            c->body.len = n;
            return MHD_YES;
        }
        nc_sbuf_append(&c->body, upload_data, n);
        return MHD_YES;
    }
    if (c->responded) return MHD_YES;
    if (c->too_large)
        return fail(conn, c, 413, "request_too_large", "request body is larger than the limit of %zu bytes",
                    srv->opt.max_body_bytes);
    const route *rt = find_route(url);
    NC_ASSERT(rt); /* on_headers answered unknown routes */
    if (!c->body.buf) nc_sbuf_append(&c->body, "", 0);
    return rt->fn(srv, conn, c);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    nc_conn *c = *con_cls;
    if (!c) return;
    nc_sbuf_free(&c->body);
    free(c);
    *con_cls = NULL;
}

/* ==== daemon ==== */

int nc_http_start(nc_srv *srv) {
    char port[16];
    snprintf(port, sizeof port, "%d", srv->opt.port);
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(srv->opt.host, port, &hints, &res);
    if (rc || !res) {
        fprintf(stderr, "nanochat serve: cannot resolve host '%s': %s\n", srv->opt.host, gai_strerror(rc));
        return -1;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;
    if (res->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    srv->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, srv,
        MHD_OPTION_SOCK_ADDR, res->ai_addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)srv->opt.max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)srv->opt.idle_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_END); /* no LISTENING_ADDRESS_REUSE: SO_REUSEPORT would let two servers share a port */
    freeaddrinfo(res);
    if (!srv->daemon) {
        fprintf(stderr, "nanochat serve: cannot listen on %s:%d (port in use or not permitted)\n",
                srv->opt.host, srv->opt.port);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    int bound = di ? di->port : srv->opt.port;
    bool v6 = strchr(srv->opt.host, ':') != NULL;
    fprintf(stderr, "nanochat serve: listening on http://%s%s%s:%d\n", v6 ? "[" : "", srv->opt.host,
            v6 ? "]" : "", bound);
    fflush(stderr);
    return 0;
}

/* The listening socket MHD hands back on quiesce: ours to close, but only
 * after MHD_stop_daemon (its threads may still look at it until then). */
static MHD_socket quiesced_fd = MHD_INVALID_SOCKET;

void nc_http_quiesce(nc_srv *srv) {
    if (!srv->daemon || quiesced_fd != MHD_INVALID_SOCKET) return;
    quiesced_fd = MHD_quiesce_daemon(srv->daemon);
    /* Open but unaccepted, the socket would still complete handshakes into
     * its backlog, and those clients would wait out the whole shutdown.
     * Shutting it down leaves the LISTEN state at once (Linux): queued and
     * new connections are refused, so a load balancer retries them on
     * another replica straight away. */
    if (quiesced_fd != MHD_INVALID_SOCKET) shutdown(quiesced_fd, SHUT_RDWR);
}

void nc_http_stop(nc_srv *srv) {
    if (srv->daemon) MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
    if (quiesced_fd != MHD_INVALID_SOCKET) close(quiesced_fd);
    quiesced_fd = MHD_INVALID_SOCKET;
}

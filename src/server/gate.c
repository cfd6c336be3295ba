/*
 * gate.c: the listening socket, and a first look at every request before
 * libmicrohttpd sees it: the server's defence against clients that hold
 * connections without completing a request, and its way to answer a
 * malformed request head in JSON (http_parse.h says why the library cannot).
 *
 * One thread accepts connections and watches each until its request head
 * is complete (epoll, edge-triggered, peeking: the bytes stay in the socket
 * for the library to read). It
 *   - counts connections per client address and in all; a connection over
 *     --max-connections-per-ip or --max-connections is answered 429 or 503
 *     at once;
 *   - checks the head with nc_http_head_check() and answers what that
 *     rejects (400, 413, 414, 431, 501, 505) in the API's JSON shape;
 *   - gives a request --read-timeout seconds from its first byte to arrive
 *     whole (a 408 otherwise, however steadily the bytes trickle in), and
 *     closes a connection that sends nothing for --idle-timeout;
 *   - hands a connection with a good head to the library
 *     (MHD_add_connection), which reads the same bytes, runs the handlers,
 *     and closes it after that one request (every response says
 *     `Connection: close`, so every request passes through here). The
 *     body's share of the read deadline is kept by http.c, from
 *     nc_gate_first_byte().
 * A connection waiting here costs a file descriptor and ~200 bytes, not a
 * thread: slow clients cannot use up the library's thread per connection.
 * After answering, the gate reads and drops what the client still sends,
 * for up to NC_GATE_LINGER_S, before closing: closing with unread bytes
 * resets the connection, and the client could lose the answer.
 */
#include "srv.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../util/common.h"
#include "http_parse.h"

#define NC_GATE_LINGER_S 2.0
#define NC_GATE_LINGER_BYTES (4u << 20)
#define NC_GATE_MAX_LINGERING 256 /* refused connections draining at once; more are closed unanswered */
#define NC_GATE_SWEEP_S 0.05      /* deadline checks */
#define NC_GATE_BUCKETS 1024

/* A client address: IPv4 as ::ffff:a.b.c.d, IPv6 as is. */
typedef struct {
    uint8_t b[16];
} addr_key;

typedef struct addr_count {
    addr_key key;
    int n;
    struct addr_count *next;
} addr_count;

typedef struct gate_conn {
    int fd;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    addr_key key;
    bool counted;           /* holds a slot in the counts */
    double t_accept;
    double t_first, t_last; /* first and latest bytes (0: none yet) */
    size_t seen;            /* bytes peeked so far */
    double linger_until;    /* > 0: answered; draining until then */
    size_t drained;
    struct gate_conn *prev, *next;
} gate_conn;

struct nc_gate {
    nc_srv *srv;
    int listen_fd, epoll_fd, wake_fd;
    pthread_t thread;
    bool started;
    _Atomic bool stop;
    double accept_paused_until; /* out of file descriptors: retry accept() later */

    /* Shared with the library's threads (nc_gate_first_byte, nc_gate_released). */
    pthread_mutex_t mu;
    int total;
    addr_count *buckets[NC_GATE_BUCKETS];
    double *first_byte; /* by fd: first byte of a handed-off connection */
    int first_byte_cap;

    /* Gate thread only. */
    gate_conn *conns;
    int n_lingering;
    char peek[NC_HTTP_MAX_HEAD + 1];
};

/* ==== counts ==== */

static addr_key key_of(const struct sockaddr *sa) {
    addr_key k = {{0}};
    if (sa->sa_family == AF_INET) {
        k.b[10] = k.b[11] = 0xff;
        memcpy(k.b + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(k.b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    }
    return k;
}

static addr_count **bucket(nc_gate *g, const addr_key *k) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (int i = 0; i < 16; i++) h = (h ^ k->b[i]) * 16777619u;
    return &g->buckets[h % NC_GATE_BUCKETS];
}

/* Takes a slot for a new connection: 0, or the status refusing it. */
static int take_slot(nc_gate *g, const addr_key *k) {
    const nc_server_options *o = &g->srv->opt;
    pthread_mutex_lock(&g->mu);
    addr_count **head = bucket(g, k), *a = *head;
    while (a && memcmp(&a->key, k, sizeof *k)) a = a->next;
    int refusal = g->total >= o->max_connections ? 503 : a && a->n >= o->max_connections_per_ip ? 429 : 0;
    if (!refusal) {
        if (!a) {
            a = nc_xcalloc(1, sizeof *a);
            a->key = *k;
            a->next = *head;
            *head = a;
        }
        a->n++;
        g->total++;
    }
    pthread_mutex_unlock(&g->mu);
    return refusal;
}

static void give_slot(nc_gate *g, const addr_key *k) {
    pthread_mutex_lock(&g->mu);
    addr_count **p = bucket(g, k);
    while (*p && memcmp(&(*p)->key, k, sizeof *k)) p = &(*p)->next;
    if (*p) {
        g->total--;
        if (--(*p)->n == 0) {
            addr_count *dead = *p;
            *p = dead->next;
            free(dead);
        }
    }
    pthread_mutex_unlock(&g->mu);
}

void nc_gate_released(nc_gate *g, const struct sockaddr *addr) {
    addr_key k = key_of(addr);
    give_slot(g, &k);
}

double nc_gate_first_byte(nc_gate *g, int fd) {
    pthread_mutex_lock(&g->mu);
    double t = fd >= 0 && fd < g->first_byte_cap ? g->first_byte[fd] : 0.0;
    pthread_mutex_unlock(&g->mu);
    return t > 0 ? t : nc_now();
}

static void set_first_byte(nc_gate *g, int fd, double t) {
    pthread_mutex_lock(&g->mu);
    if (fd >= g->first_byte_cap) {
        int cap = NC_MAX(fd + 1, 2 * g->first_byte_cap);
        g->first_byte = nc_xrealloc(g->first_byte, sizeof *g->first_byte * (size_t)cap);
        memset(g->first_byte + g->first_byte_cap, 0, sizeof *g->first_byte * (size_t)(cap - g->first_byte_cap));
        g->first_byte_cap = cap;
    }
    g->first_byte[fd] = t;
    pthread_mutex_unlock(&g->mu);
}

/* ==== connections waiting here ==== */

static void unlink_conn(nc_gate *g, gate_conn *c) {
    if (c->prev) c->prev->next = c->next;
    else g->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (c->linger_until > 0) g->n_lingering--;
}

static void close_conn(nc_gate *g, gate_conn *c) {
    unlink_conn(g, c);
    close(c->fd); /* also leaves the epoll set */
    if (c->counted) give_slot(g, &c->key);
    free(c);
}

static const char *error_code(int status) {
    switch (status) {
    case 408: return "request_timeout";
    case 413: return "request_too_large";
    case 414: return "uri_too_long";
    case 429: return "too_many_connections";
    case 431: return "request_header_fields_too_large";
    case 501: return "not_implemented";
    case 503: return "server_busy";
    case 505: return "http_version_not_supported";
    default: return "bad_request";
    }
}

static void drain(nc_gate *g, gate_conn *c) {
    for (;;) {
        ssize_t n = recv(c->fd, g->peek, sizeof g->peek, MSG_DONTWAIT);
        if (n > 0) {
            c->drained += (size_t)n;
            if (c->drained <= NC_GATE_LINGER_BYTES) continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            return;
        }
        close_conn(g, c); /* closed by the client, an error, or too much */
        return;
    }
}

/* Answers `status` with the API's JSON error, logs the request, then
 * drains the connection until it closes or NC_GATE_LINGER_S pass. `head`
 * is what was read of the request (NULL: nothing). `c` may be freed. */
static void answer(nc_gate *g, gate_conn *c, int status, const char *message, const nc_head_info *head) {
    nc_srv *srv = g->srv;
    nc_api_error e = {.status = status, .code = error_code(status)};
    snprintf(e.message, sizeof e.message, "%s", message);
    nc_reqlog log = {.status = status, .t_start = c->t_first > 0 ? c->t_first : c->t_accept};
    if (head && head->request_id[0]) snprintf(log.id, sizeof log.id, "%s", head->request_id);
    else nc_log_new_request_id(log.id);
    nc_http_format_address((const struct sockaddr *)&c->addr, log.client, sizeof log.client);
    if (head && head->method[0]) {
        snprintf(log.method, sizeof log.method, "%s", head->method);
        snprintf(log.route, sizeof log.route, "%.*s", (int)sizeof log.route - 1, head->path);
    }
    bool nanochat = head && !strcmp(head->path, "/chat/completions");
    const char *origin = head && head->origin[0] ? head->origin : NULL;
    nc_sbuf out = {0};
    nc_http_format_raw_error(srv, &out, &e, nanochat, log.id, origin, status == 429 || status == 503 ? 1 : 0);
    /* A few hundred bytes into an empty send buffer: one call sends them. */
    ssize_t sent = send(c->fd, out.buf, out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)sent;
    nc_sbuf_free(&out);
    shutdown(c->fd, SHUT_WR);
    c->linger_until = nc_now() + NC_GATE_LINGER_S;
    g->n_lingering++;
    nc_metrics_request(&srv->metrics, NC_EP_OTHER, status);
    nc_log_request(&log, NULL);
    drain(g, c); /* the head already here, and whatever followed */
}

static void hand_off(nc_gate *g, gate_conn *c) {
    unlink_conn(g, c);
    epoll_ctl(g->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
    set_first_byte(g, c->fd, c->t_first);
    /* The library owns the socket from here (and closes it on failure). */
    if (MHD_add_connection(g->srv->daemon, c->fd, (const struct sockaddr *)&c->addr, c->addr_len) != MHD_YES) {
        nc_log(NC_LOG_WARN, "could not hand a connection to libmicrohttpd: %s", strerror(errno));
        give_slot(g, &c->key);
    }
    free(c);
}

/* New bytes, or the client's end closed (`hangup`). */
static void on_readable(nc_gate *g, gate_conn *c, bool hangup) {
    if (c->linger_until > 0) {
        drain(g, c);
        return;
    }
    ssize_t n = recv(c->fd, g->peek, sizeof g->peek, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) { /* the client left before completing its request */
        close_conn(g, c);
        return;
    }
    double now = nc_now();
    if (c->t_first == 0) c->t_first = now;
    if ((size_t)n > c->seen) {
        c->seen = (size_t)n;
        c->t_last = now;
    }
    nc_head_info head;
    switch (nc_http_head_check(g->peek, (size_t)n, g->srv->opt.max_body_bytes, &head)) {
    case NC_HEAD_MORE:
        NC_ASSERT((size_t)n < sizeof g->peek);
        /* A peek shows the bytes before the end: the client closed its
         * side with the head unfinished, and nothing more can come. */
        if (hangup) answer(g, c, 400, "the request ended before its head was complete", &head);
        break;
    case NC_HEAD_BAD:
        answer(g, c, head.status, head.message, &head);
        break;
    case NC_HEAD_DONE:
        hand_off(g, c);
        break;
    }
}

static void admit(nc_gate *g, int fd, const struct sockaddr_storage *addr, socklen_t addr_len) {
    int one = 1;
    /* Tokens go out as many small writes: without TCP_NODELAY, Nagle's
     * algorithm holds each one until the client's delayed ACK (~40 ms). */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    gate_conn *c = nc_xcalloc(1, sizeof *c);
    c->fd = fd;
    memcpy(&c->addr, addr, addr_len);
    c->addr_len = addr_len;
    c->key = key_of((const struct sockaddr *)addr);
    c->t_accept = nc_now();
    c->next = g->conns;
    if (g->conns) g->conns->prev = c;
    g->conns = c;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(g->epoll_fd, EPOLL_CTL_ADD, fd, &ev)) {
        close_conn(g, c);
        return;
    }
    int refusal = take_slot(g, &c->key);
    if (!refusal) {
        c->counted = true;
        return; /* the head is read when it arrives (EPOLLET reports data already there) */
    }
    if (g->n_lingering >= NC_GATE_MAX_LINGERING) {
        close_conn(g, c);
        return;
    }
    char msg[160], addr_text[64];
    nc_http_format_address((const struct sockaddr *)addr, addr_text, sizeof addr_text);
    if (refusal == 429)
        snprintf(msg, sizeof msg, "too many connections from %s (at most %d per client address); retry shortly",
                 addr_text, g->srv->opt.max_connections_per_ip);
    else
        snprintf(msg, sizeof msg, "the server is at its limit of %d connections; retry shortly",
                 g->srv->opt.max_connections);
    answer(g, c, refusal, msg, NULL);
}

/* Bytes of a connection's answer the kernel may hold for a client that is
 * not reading (Linux books twice the value set). Left to autotuning, a
 * socket's send buffer grows to tcp_wmem's maximum (4 MiB by default, and
 * on loopback a few events are enough to get there): a stalled stream would
 * park megabytes in the kernel before --max-lag counted a token. 128 KiB
 * still carries a token stream, or a large answer, at megabytes per second
 * over a 100 ms round trip. */
#define NC_HTTP_SEND_BUFFER (128 * 1024)

static void accept_all(nc_gate *g) {
    for (;;) {
        struct sockaddr_storage addr;
        socklen_t len = sizeof addr;
        int fd = accept4(g->listen_fd, (struct sockaddr *)&addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            int sndbuf = NC_HTTP_SEND_BUFFER;
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf); /* best effort */
            admit(g, fd, &addr, len);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
            /* The listening socket stays readable: stop watching it a moment. */
            nc_log(NC_LOG_WARN, "accept: %s; new connections wait", strerror(errno));
            struct epoll_event ev = {.events = 0, .data.ptr = &g->listen_fd};
            epoll_ctl(g->epoll_fd, EPOLL_CTL_MOD, g->listen_fd, &ev);
            g->accept_paused_until = nc_now() + 0.1;
        }
        return;
    }
}

/* Deadlines: idle connections, requests past --read-timeout, lingering. */
static void sweep(nc_gate *g, double now) {
    const nc_server_options *o = &g->srv->opt;
    if (g->accept_paused_until > 0 && now >= g->accept_paused_until && !atomic_load(&g->srv->stopping)) {
        g->accept_paused_until = 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &g->listen_fd};
        epoll_ctl(g->epoll_fd, EPOLL_CTL_MOD, g->listen_fd, &ev);
    }
    for (gate_conn *c = g->conns, *next; c; c = next) {
        next = c->next;
        char msg[160];
        if (c->linger_until > 0) {
            if (now >= c->linger_until) close_conn(g, c);
        } else if (c->t_first == 0) {
            if (now - c->t_accept >= o->idle_timeout_s) close_conn(g, c); /* never sent a byte */
        } else if (now - c->t_first >= o->read_timeout_s) {
            snprintf(msg, sizeof msg, "the request was not received within %g s (--read-timeout)", o->read_timeout_s);
            answer(g, c, 408, msg, NULL);
        } else if (now - c->t_last >= o->idle_timeout_s) {
            snprintf(msg, sizeof msg, "the request stopped arriving for %d s (--idle-timeout)", o->idle_timeout_s);
            answer(g, c, 408, msg, NULL);
        }
    }
}

static void *gate_main(void *arg) {
    nc_gate *g = arg;
    struct epoll_event evs[64];
    double last_sweep = 0.0;
    while (!atomic_load(&g->stop)) {
        int n = epoll_wait(g->epoll_fd, evs, (int)NC_ARRAY_LEN(evs), (int)(NC_GATE_SWEEP_S * 1000));
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &g->listen_fd) accept_all(g);
            else if (p != &g->wake_fd) on_readable(g, p, (evs[i].events & (EPOLLRDHUP | EPOLLHUP)) != 0);
        }
        double now = nc_now();
        if (now - last_sweep >= NC_GATE_SWEEP_S) {
            sweep(g, now);
            last_sweep = now;
        }
    }
    while (g->conns) close_conn(g, g->conns);
    return NULL;
}

/* ==== start and stop ==== */

static int open_listener(nc_srv *srv, int *bound_port) {
    const char *host = srv->opt.host;
    bool v6 = strchr(host, ':') != NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", srv->opt.port);
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc || !res) {
        nc_log(NC_LOG_ERROR, "cannot resolve host '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    /* SO_REUSEADDR lets a restart bind over connections in TIME_WAIT; not
     * SO_REUSEPORT, which would let two servers share the port. */
    if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd >= 0 && res->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, SOMAXCONN)) {
        int err = errno;
        const char *why = err == EADDRINUSE ? "the port is in use (another server? pick one with --port)"
                        : err == EACCES ? "permission denied (ports below 1024 need privileges)"
                        : strerror(err);
        nc_log(NC_LOG_ERROR, "cannot listen on %s%s%s:%d: %s", v6 ? "[" : "", host, v6 ? "]" : "",
               srv->opt.port, why);
        if (fd >= 0) close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    *bound_port = srv->opt.port;
    if (!getsockname(fd, (struct sockaddr *)&ss, &len))
        *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                      : ((struct sockaddr_in *)&ss)->sin_port);
    nc_log(NC_LOG_INFO, "listening on http://%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", *bound_port);
    return fd;
}

int nc_gate_start(nc_srv *srv) {
    int port;
    int fd = open_listener(srv, &port);
    if (fd < 0) return -1;
    nc_gate *g = nc_xcalloc(1, sizeof *g);
    g->srv = srv;
    g->listen_fd = fd;
    pthread_mutex_init(&g->mu, NULL);
    g->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    g->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &g->listen_fd};
    struct epoll_event wev = {.events = EPOLLIN, .data.ptr = &g->wake_fd};
    if (g->epoll_fd < 0 || g->wake_fd < 0 || epoll_ctl(g->epoll_fd, EPOLL_CTL_ADD, fd, &lev) ||
        epoll_ctl(g->epoll_fd, EPOLL_CTL_ADD, g->wake_fd, &wev) || pthread_create(&g->thread, NULL, gate_main, g)) {
        nc_log(NC_LOG_ERROR, "cannot start the accept thread: %s", strerror(errno));
        srv->gate = g;
        nc_gate_free(srv);
        return -1;
    }
    g->started = true;
    srv->gate = g;
    return 0;
}

void nc_gate_quiesce(nc_srv *srv) {
    nc_gate *g = srv->gate;
    if (!g) return;
    /* Out of the epoll set first: a shut-down socket reads as always ready. */
    epoll_ctl(g->epoll_fd, EPOLL_CTL_DEL, g->listen_fd, NULL);
    /* Open but unaccepted, the socket would still complete handshakes into
     * its backlog, and those clients would wait out the whole shutdown.
     * Shutting it down leaves the LISTEN state at once (Linux): queued and
     * new connections are refused, so a load balancer retries them on
     * another replica straight away. */
    shutdown(g->listen_fd, SHUT_RDWR);
}

void nc_gate_stop(nc_srv *srv) {
    nc_gate *g = srv->gate;
    if (!g || !g->started) return;
    atomic_store(&g->stop, true);
    uint64_t one = 1;
    ssize_t w = write(g->wake_fd, &one, sizeof one);
    (void)w;
    pthread_join(g->thread, NULL);
    g->started = false;
}

void nc_gate_free(nc_srv *srv) {
    nc_gate *g = srv->gate;
    if (!g) return;
    nc_gate_stop(srv);
    if (g->listen_fd >= 0) close(g->listen_fd);
    if (g->epoll_fd >= 0) close(g->epoll_fd);
    if (g->wake_fd >= 0) close(g->wake_fd);
    for (int i = 0; i < NC_GATE_BUCKETS; i++)
        for (addr_count *a = g->buckets[i], *next; a; a = next) {
            next = a->next;
            free(a);
        }
    free(g->first_byte);
    pthread_mutex_destroy(&g->mu);
    free(g);
    srv->gate = NULL;
}

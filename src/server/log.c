/*
 * log.c: the server's log lines (see log.h).
 *
 * Each line is formatted whole and written with one fwrite under a mutex,
 * so lines from concurrent requests never interleave. Times are UTC with
 * milliseconds (ISO 8601); durations are milliseconds from the request's
 * first byte.
 */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../util/common.h"
#include "sbuf.h"

static nc_log_format log_format = NC_LOG_TEXT;
static nc_log_level log_min = NC_LOG_INFO;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int nc_log_level_parse(const char *s, nc_log_level *out) {
    for (int i = 0; i < (int)NC_ARRAY_LEN(level_names); i++)
        if (!strcmp(s, level_names[i])) {
            *out = (nc_log_level)i;
            return 0;
        }
    return -1;
}

int nc_log_format_parse(const char *s, nc_log_format *out) {
    if (!strcmp(s, "text")) *out = NC_LOG_TEXT;
    else if (!strcmp(s, "json")) *out = NC_LOG_JSON;
    else return -1;
    return 0;
}

void nc_log_setup(nc_log_format format, nc_log_level min_level) {
    log_format = format;
    log_min = min_level;
}

bool nc_log_enabled(nc_log_level level) { return level >= log_min; }

static void write_line(nc_sbuf *b) {
    nc_sbuf_puts(b, "\n");
    pthread_mutex_lock(&log_mu);
    fwrite(b->buf, 1, b->len, stderr);
    fflush(stderr);
    pthread_mutex_unlock(&log_mu);
    nc_sbuf_free(b);
}

/* "2025-06-01T12:34:56.789Z" */
static void put_time(nc_sbuf *b) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char s[32];
    strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%S", &tm);
    nc_sbuf_printf(b, "%s.%03ldZ", s, ts.tv_nsec / 1000000);
}

void nc_log(nc_log_level level, const char *fmt, ...) {
    if (!nc_log_enabled(level)) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    nc_sbuf b = {0};
    if (log_format == NC_LOG_JSON) {
        nc_sbuf_puts(&b, "{\"time\":\"");
        put_time(&b);
        nc_sbuf_printf(&b, "\",\"level\":\"%s\",\"msg\":", level_names[level]);
        nc_sbuf_json_string(&b, msg, n);
        nc_sbuf_puts(&b, "}");
    } else {
        nc_sbuf_printf(&b, "nanochat serve: %s%s", level == NC_LOG_DEBUG ? "debug: " : "", msg);
    }
    write_line(&b);
}

/* ==== request lines ==== */

/* Text form of a string inside double quotes: printable ASCII as is,
 * anything else (and the quote and backslash) as \xNN, so a line stays one
 * line whatever a client sent. */
static void put_quoted(nc_sbuf *b, const char *s) {
    nc_sbuf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p >= 0x20 && *p < 0x7F && *p != '"' && *p != '\\') nc_sbuf_append(b, p, 1);
        else nc_sbuf_printf(b, "\\x%02X", *p);
    }
    nc_sbuf_puts(b, "\"");
}

static void request_json(nc_sbuf *b, const nc_reqlog *r, const char *model, nc_log_level level, double total_ms,
                         double ttft_ms) {
    nc_sbuf_puts(b, "{\"time\":\"");
    put_time(b);
    nc_sbuf_printf(b, "\",\"level\":\"%s\",\"type\":\"request\",\"request_id\":", level_names[level]);
    nc_sbuf_json_string(b, r->id, strlen(r->id));
    nc_sbuf_puts(b, ",\"client\":");
    nc_sbuf_json_string(b, r->client, strlen(r->client));
    nc_sbuf_puts(b, ",\"method\":");
    if (r->method[0]) nc_sbuf_json_string(b, r->method, strlen(r->method));
    else nc_sbuf_puts(b, "null");
    nc_sbuf_puts(b, ",\"route\":");
    if (r->method[0]) nc_sbuf_json_string(b, r->route, strlen(r->route));
    else nc_sbuf_puts(b, "null");
    nc_sbuf_printf(b, ",\"status\":%d,\"model\":", r->status);
    if (r->generation) {
        nc_sbuf_json_string(b, model ? model : "", model ? strlen(model) : 0);
        nc_sbuf_printf(b, ",\"prompt_tokens\":%d,\"cached_tokens\":%d,\"completion_tokens\":%d,\"ttft_ms\":",
                       r->prompt_tokens, r->cached_tokens, r->completion_tokens);
        if (ttft_ms >= 0) nc_sbuf_printf(b, "%.1f", ttft_ms);
        else nc_sbuf_puts(b, "null");
    } else {
        nc_sbuf_puts(b, "null,\"prompt_tokens\":null,\"cached_tokens\":null,\"completion_tokens\":null,"
                        "\"ttft_ms\":null");
    }
    nc_sbuf_printf(b, ",\"total_ms\":%.1f,\"finish_reason\":", total_ms);
    if (r->generation && r->finish[0]) nc_sbuf_json_string(b, r->finish, strlen(r->finish));
    else nc_sbuf_puts(b, "null");
    nc_sbuf_printf(b, ",\"disconnected\":%s}", r->disconnected ? "true" : "false");
}

static void request_text(nc_sbuf *b, const nc_reqlog *r, const char *model, nc_log_level level, double total_ms,
                         double ttft_ms) {
    put_time(b);
    nc_sbuf_printf(b, " %s %s %s ", level == NC_LOG_INFO ? "INFO" : "WARN", r->id, r->client);
    char request[sizeof r->method + sizeof r->route + 1];
    snprintf(request, sizeof request, "%s %s", r->method, r->route);
    put_quoted(b, r->method[0] ? request : "-");
    nc_sbuf_printf(b, " %d %.1fms", r->status, total_ms);
    if (r->generation) {
        nc_sbuf_puts(b, " model=");
        put_quoted(b, model ? model : "");
        nc_sbuf_printf(b, " prompt=%d cached=%d completion=%d", r->prompt_tokens, r->cached_tokens,
                       r->completion_tokens);
        if (ttft_ms >= 0) nc_sbuf_printf(b, " ttft=%.1fms", ttft_ms);
        if (r->finish[0]) nc_sbuf_printf(b, " finish=%s", r->finish);
    }
    if (r->disconnected) nc_sbuf_puts(b, " disconnected");
}

void nc_log_request(const nc_reqlog *r, const char *model) {
    nc_log_level level = r->status >= 500 ? NC_LOG_WARN : NC_LOG_INFO;
    if (!nc_log_enabled(level)) return;
    double now = nc_now();
    double total_ms = 1000.0 * (now - r->t_start);
    double ttft_ms = r->t_first_token > 0 ? 1000.0 * (r->t_first_token - r->t_start) : -1.0;
    nc_sbuf b = {0};
    if (log_format == NC_LOG_JSON) request_json(&b, r, model, level, total_ms, ttft_ms);
    else request_text(&b, r, model, level, total_ms, ttft_ms);
    write_line(&b);
}

static uint64_t id_seed;
static _Atomic uint64_t id_counter;
static pthread_once_t id_once = PTHREAD_ONCE_INIT;

static void id_seed_init(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    id_seed = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 40;
}

void nc_log_new_request_id(char *out) {
    pthread_once(&id_once, id_seed_init);
    /* splitmix64 of distinct inputs: distinct outputs, no visible order. */
    uint64_t z = id_seed + (atomic_fetch_add(&id_counter, 1) + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    snprintf(out, 24, "req_%016llx", (unsigned long long)z);
}

/*
 * cmd_serve.c: `nanochat serve`: the HTTP server of src/server/ (nanochat's
 * web protocol and UI, an OpenAI-compatible API, metrics) over the
 * continuous-batching scheduler. Mirrors nanochat's scripts/chat_web.py.
 *
 * This file only parses and validates flags; the model's bundle is opened
 * by the server's engine thread, after the socket is already listening, so
 * /health can say "ready": false while it loads.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "flags.h"
#include "model_args.h"
#include "server/http_parse.h"
#include "server/server.h"
#include "util/common.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: nanochat serve [-m PATH | --random SHAPE] [--host 127.0.0.1] [--port 8000] [options]\n"
            "\n"
            "Serves the model over HTTP: a chat page at /, nanochat's POST /chat/completions (SSE),\n"
            "the OpenAI API (POST /v1/chat/completions, /v1/completions, GET /v1/models),\n"
            "POST /tokenize, /detokenize, GET /health, /stats and /metrics (Prometheus).\n"
            "Requests share every forward pass (continuous batching). SIGINT/SIGTERM stop it\n"
            "gracefully. POST routes need 'Content-Type: application/json' (415 otherwise); each\n"
            "response carries an X-Request-Id (the client's, if it sent a valid one) and closes\n"
            "its connection. docs/server.md has the details.\n"
            "\n"
            "server options:\n"
            "  --host ADDR          address to bind (default 127.0.0.1; 0.0.0.0 for all)\n"
            "  --port N             TCP port (default 8000; 0 picks a free one, printed at start)\n"
            "  --api-key KEY        require 'Authorization: Bearer KEY' on the API routes\n"
            "                       (default: $NANOCHAT_API_KEY, else none)\n"
            "  --model-name NAME    model id reported by /v1/models (default: OWNER/NAME of an hf:\n"
            "                       model, else the model's directory)\n"
            "  --max-batch N        sequences decoding at once (default: the backend's)\n"
            "  --max-batch-tokens N tokens per forward pass (default: the backend's)\n"
            "  --max-context N      positions per sequence (default: the model's sequence_len)\n"
            "  --kv-blocks N        KV-cache pool size in 64-token blocks (default: the backend picks)\n"
            "  --max-queue N        waiting requests before answering 503 (default 256), per engine\n"
            "  --devices LIST       one engine per device, one HTTP front and a router between them:\n"
            "                       cuda:0,cuda:1,... or all (every GPU), or cpu,cpu (cpu:T: a CPU\n"
            "                       engine of T threads; plain cpu engines share --threads); with\n"
            "                       --tensor-parallel N, each N GPUs make one engine\n"
            "                       (docs/multi-device.md; default: one engine on --device)\n"
            "  --max-connections N  concurrent HTTP connections (default 512; 503 beyond)\n"
            "  --max-connections-per-ip N\n"
            "                       of them from one client address (default: half of\n"
            "                       --max-connections; 429 beyond)\n"
            "  --max-body BYTES     request body limit, 413 beyond (default 1048576)\n"
            "  --read-timeout S     a request (head and body) must arrive whole within S seconds\n"
            "                       of its first byte, however steadily it trickles (default 30;\n"
            "                       408 beyond)\n"
            "  --timeout SECONDS    per-request limit, then the request is cancelled (default 600)\n"
            "  --idle-timeout S     close connections silent this long (default 30)\n"
            "  --max-lag N          undelivered tokens before a client that stopped reading\n"
            "                       is cancelled (default 4096)\n"
            "  --cors-origins LIST  origins browsers may call the API from: * (default: any)\n"
            "                       or a comma-separated list, e.g. https://app.example.com\n"
            "                       (same-origin pages, like the chat page, always work)\n"
            "  --log-format F       text (default) or json: one line per request (id, client,\n"
            "                       method, route, status, tokens, TTFT, time, finish reason;\n"
            "                       never message text), JSON Lines with json\n"
            "  --log-level L        debug, info (default), warn or error; debug adds\n"
            "                       libmicrohttpd's messages; warn logs only 5xx requests\n"
            "  -h, --help           this help\n\n");
    nc_model_args_spec_help(f);
    fprintf(f, "\n");
    nc_model_args_help(f);
}

/* --log-format, --log-level and --cors-origins: one-line errors here,
 * before anything starts. */
static int check_text_flags(nc_server_options *o, const char *log_format, const char *log_level) {
    if (nc_log_format_parse(log_format, &o->log_format)) {
        fprintf(stderr, "nanochat serve: --log-format must be text or json, not '%s'\n", log_format);
        return -1;
    }
    if (nc_log_level_parse(log_level, &o->log_level)) {
        fprintf(stderr, "nanochat serve: --log-level must be debug, info, warn or error, not '%s'\n", log_level);
        return -1;
    }
    nc_origin_list origins;
    char why[256];
    if (nc_origin_list_parse(o->cors_origins, &origins, why, sizeof why)) {
        fprintf(stderr, "nanochat serve: --cors-origins: %s\n", why);
        return -1;
    }
    nc_origin_list_free(&origins);
    return 0;
}

/* --devices: the engines' devices, checked before anything starts. */
static int parse_devices(nc_server_options *o, const nc_model_args *a, const char *list) {
    if (strcmp(a->device, "auto")) {
        fprintf(stderr, "nanochat serve: give --device or --devices, not both (--devices lists every engine's)\n");
        return -1;
    }
    char why[256];
    int gpus = strcmp(list, "all") ? 0 : nc_backend_cuda_count();
    if (nc_server_parse_devices(list, a->tensor_parallel, a->threads, gpus, o->devices, &o->n_devices, why,
                                sizeof why)) {
        fprintf(stderr, "nanochat serve: --devices %s: %s\n", list, why);
        return -1;
    }
    return 0;
}

/* Integer flags: name, bounds, where to store. */
typedef struct {
    const char *name;
    long lo, hi;
    int *dst;
} int_flag;

int cmd_serve(int argc, char **argv) {
    nc_model_args a;
    nc_model_args_init(&a);
    nc_server_options o;
    nc_server_options_init(&o);
    const char *log_format = "text", *log_level = "info", *devices = NULL;
    const char *env_key = getenv("NANOCHAT_API_KEY");
    if (env_key && *env_key) o.api_key = env_key;
    long long body = (long long)o.max_body_bytes, timeout = (long long)o.request_timeout_s;
    long long read_timeout = (long long)o.read_timeout_s;
    int_flag ints[] = {
        {"--port", 0, 65535, &o.port},
        {"--max-batch", 1, 4096, &o.model.max_batch},
        {"--max-batch-tokens", 1, 1 << 20, &o.model.max_batch_tokens},
        {"--max-context", 2, 1 << 20, &o.model.max_context},
        {"--kv-blocks", 1, 1 << 24, &o.model.kv_blocks},
        {"--max-queue", 1, 1 << 20, &o.model.max_queue},
        {"--max-connections", 1, 65536, &o.max_connections},
        {"--max-connections-per-ip", 1, 65536, &o.max_connections_per_ip},
        {"--idle-timeout", 1, 86400, &o.idle_timeout_s},
        {"--max-lag", 1, 1 << 20, &o.max_lag_tokens},
    };
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            usage(stdout);
            return 0;
        }
        int r = nc_model_args_parse(&a, argc, argv, &i);
        if (!r) r = nc_model_args_parse_spec(&a, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        bool known = false;
        for (size_t k = 0; k < NC_ARRAY_LEN(ints) && !known; k++) {
            if (strcmp(arg, ints[k].name)) continue;
            known = true;
            long long v;
            if (i + 1 >= argc) {
                fprintf(stderr, "nanochat serve: %s needs a value\n", arg);
                return 2;
            }
            if (nc_flag_int(arg, argv[++i], ints[k].lo, ints[k].hi, &v)) return 2;
            *ints[k].dst = (int)v;
        }
        if (known) continue;
        const char **str = !strcmp(arg, "--host") ? &o.host : !strcmp(arg, "--api-key") ? &o.api_key
                         : !strcmp(arg, "--model-name") ? &o.model_name : !strcmp(arg, "--cors-origins") ? &o.cors_origins
                         : !strcmp(arg, "--log-format") ? &log_format : !strcmp(arg, "--log-level") ? &log_level
                         : !strcmp(arg, "--devices") ? &devices : NULL;
        long long *num = !strcmp(arg, "--max-body") ? &body : !strcmp(arg, "--timeout") ? &timeout
                       : !strcmp(arg, "--read-timeout") ? &read_timeout : NULL;
        if (!str && !num) {
            fprintf(stderr, "nanochat serve: unknown option '%s' (see nanochat serve --help)\n", arg);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "nanochat serve: %s needs a value\n", arg);
            return 2;
        }
        const char *v = argv[++i];
        if (str) {
            if (!*v) {
                fprintf(stderr, "nanochat serve: %s needs a non-empty value\n", arg);
                return 2;
            }
            *str = v;
        } else if (nc_flag_int(arg, v, num == &body ? 1024 : 1, num == &body ? (1LL << 30) : 86400 * 7, num)) {
            return 2;
        }
    }
    o.max_body_bytes = (size_t)body;
    o.request_timeout_s = (double)timeout;
    o.read_timeout_s = (double)read_timeout;
    if (check_text_flags(&o, log_format, log_level)) return 2;
    if (devices && parse_devices(&o, &a, devices)) return 2;
    /* a Hub model is downloaded before the server listens (Ctrl-C stops the download) */
    int fetched = nc_model_args_fetch(&a);
    if (fetched) return fetched == -2 ? 130 : 1;
    if (!o.model_name && a.hub_repo[0]) o.model_name = a.hub_repo;
    nc_model_args_bundle(&a, &o.model);
    nc_progress *progress = NULL;
    if (!a.quiet && nc_progress_mode_for_stderr(false) == NC_PROGRESS_BARS)
        o.model.progress = progress = nc_progress_new(stderr, NC_PROGRESS_BARS);
    int rc = nc_server_run(&o);
    nc_progress_free(progress);
    return rc ? 1 : 0;
}

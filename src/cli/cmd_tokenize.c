/*
 * cmd_tokenize.c: `nanochat tokenize`: the tokenizer on the command line.
 *
 *   text on stdin           -> token ids, space-separated, on one line
 *   --decode: ids on stdin  -> text (UTF-8, invalid bytes as U+FFFD)
 *   --chat: a JSON array of {"role": "system|user|assistant", "content": ...}
 *                           -> the ids of the prompt nanochat would build
 *   --jsonl: one input per line (a JSON string, a line of ids, or a JSON
 *            messages array), one output per line (ids, or a JSON string)
 *
 * Only the tokenizer is loaded, never the weights: --tokenizer FILE alone
 * is enough, and with -m PATH the tokenizer is found where nanochat puts it
 * (nc_checkpoint_locate), so tokenizing a 9 GB checkpoint is instant.
 * Mirrors nothing in nanochat itself; it exposes tokenizer.h for scripts
 * and tests (tests/py/test_tokenizer_tiktoken.py compares it with tiktoken).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "hub/hub.h"
#include "model/loader.h"
#include "model_args.h"
#include "tokenizer/tokenizer.h"
#include "util/common.h"

typedef enum { MODE_ENCODE, MODE_DECODE, MODE_CHAT } tok_mode;

static void usage(FILE *f) {
    fprintf(f,
            "usage: nanochat tokenize [--decode | --chat] [--jsonl] (-m PATH | --tokenizer FILE)\n"
            "\n"
            "Text on stdin -> token ids on stdout (space-separated, one line). Text that looks\n"
            "like a special token (\"<|bos|>\") is encoded as plain text, as nanochat does.\n"
            "\n"
            "options:\n"
            "  --decode             ids on stdin (whitespace-separated) -> text on stdout\n"
            "  --chat               stdin is a JSON array of messages\n"
            "                       [{\"role\": \"system|user|assistant\", \"content\": \"...\"}]\n"
            "                       -> ids of the prompt: <|bos|>, each message in its start/end\n"
            "                       tokens (a system message merged into the first user message),\n"
            "                       then <|assistant_start|>\n"
            "  --jsonl              one input per line, one output per line: each line is a JSON\n"
            "                       string (encode), a line of ids (--decode: prints a JSON string)\n"
            "                       or a JSON messages array (--chat)\n"
            "  -h, --help           this help\n"
            "\n"
            "tokenizer (only the tokenizer is loaded, never the weights):\n"
            "  --tokenizer FILE     tokenizer.pkl (nanochat) or tokenizer.json (Hugging Face)\n"
            "  -m, --model PATH     find the tokenizer of this checkpoint, base dir or HF copy; with\n"
            "                       hf:OWNER/NAME[@REVISION][/SUBDIR] only the tokenizer is downloaded\n"
            "  --step N, --source sft|rl|mid|base, --tag dN   select the checkpoint, as for -m\n"
            "  (neither: the tokenizer of the default model, $NANOCHAT_MODEL or models/picochat)\n");
}

/* ==== finding the tokenizer ==== */

/* The tokenizer of a Hub model: only its file is downloaded (offline, the
 * cached snapshot is searched as a local folder). */
static nc_tokenizer *open_hub_tokenizer(const nc_model_args *a, nc_load_options *o, char *dir, size_t cap) {
    nc_hub_options ho = {.step = a->load.step, .source = a->load.source, .tag = a->load.tag, .quiet = a->quiet,
                         .tokenizer_only = true};
    nc_hub_result r;
    if (nc_hub_resolve(a->load.path, &ho, &r)) return NULL;
    if (r.tokenizer[0]) return nc_tokenizer_load(r.tokenizer);
    snprintf(dir, cap, "%s", r.dir);
    o->path = dir;
    return NULL;
}

static nc_tokenizer *open_tokenizer(const nc_model_args *a) {
    if (a->load.tokenizer_path) return nc_tokenizer_load(a->load.tokenizer_path);
    nc_load_options o = a->load;
    char hub_dir[PATH_MAX];
    if (nc_hub_is_ref(o.path)) {
        nc_tokenizer *t = open_hub_tokenizer(a, &o, hub_dir, sizeof hub_dir);
        if (t || nc_hub_is_ref(o.path)) return t;
    }
    char def[PATH_MAX];
    if (!o.path) { /* the default model, as nc_model_args_load finds it */
        const char *env = getenv("NANOCHAT_MODEL");
        if (env && *env) {
            snprintf(def, sizeof def, "%s", env);
        } else {
            char exe[PATH_MAX];
            ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
            if (n <= 0) {
                nc_fail("no tokenizer given: use --tokenizer FILE or -m PATH");
                return NULL;
            }
            exe[n] = 0;
            snprintf(def, sizeof def, "%s/../models/picochat", dirname(exe));
        }
        o.path = def;
    }
    nc_checkpoint_location loc = {0};
    if (nc_checkpoint_locate(&o, &loc) != 0) {
        nc_checkpoint_location_free(&loc);
        if (!a->load.path) nc_fail_context("no --tokenizer or -m given, and the default model");
        return NULL;
    }
    nc_tokenizer *t = NULL;
    if (!loc.tokenizer_file)
        nc_fail("no tokenizer found for %s (looked beside the model and in <base>/tokenizer/); "
                "give --tokenizer FILE", o.path);
    else
        t = nc_tokenizer_load(loc.tokenizer_file);
    nc_checkpoint_location_free(&loc);
    return t;
}

/* ==== input ==== */

static char *read_all(FILE *f, size_t *len) {
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        cap *= 2;
        char *nb = realloc(buf, cap + 1);
        if (!nb) free(buf);
        buf = nb;
    }
    if (!buf) {
        nc_fail("out of memory reading stdin");
        return NULL;
    }
    if (ferror(f)) {
        free(buf);
        nc_fail("cannot read stdin: %s", strerror(errno));
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* ==== the three modes, on one input each ==== */

/* Prints s[0..n) as a JSON string; unlike cJSON's printer it keeps NULs. */
static void print_json_string(const char *s, size_t n) {
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c < 0x20 || c == 0x7f)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    fputs("\"\n", stdout);
}

/* Whether JSON text holds an escaped NUL (\u0000), which cJSON would cut
 * the string at: refused rather than tokenized wrongly. */
static bool json_has_nul(const char *s, size_t n) {
    for (size_t i = 0; i + 6 <= n; i++) {
        if (s[i] != '\\') continue;
        if ((s[i + 1] == 'u' || s[i + 1] == 'U') && !strncmp(s + i + 2, "0000", 4)) return true;
        i++; /* skip the escaped character */
    }
    return false;
}

static void print_ids(const nc_tokens *ids) {
    for (size_t i = 0; i < ids->n; i++) printf(i ? " %d" : "%d", ids->ids[i]);
    putchar('\n');
}

/* Parses whitespace-separated ids of text[0..len) into out. */
static int parse_ids(const nc_tokenizer *t, const char *text, size_t len, nc_tokens *out) {
    const char *p = text, *end = text + len;
    int vocab = nc_tokenizer_vocab_size(t);
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',')) p++;
        if (p >= end) return 0;
        const char *q = p;
        while (q < end && *q != ' ' && *q != '\t' && *q != '\n' && *q != '\r' && *q != ',') q++;
        char word[32];
        size_t wn = (size_t)(q - p);
        if (wn >= sizeof word) return nc_fail("'%.20s...' is not a token id", p);
        memcpy(word, p, wn);
        word[wn] = 0;
        char *e;
        errno = 0;
        long id = strtol(word, &e, 10);
        if (*e || errno || wn == 0) return nc_fail("'%s' is not a token id", word);
        if (id < 0 || id >= vocab || !nc_tokenizer_token_bytes(t, (int32_t)id, &wn))
            return nc_fail("token id %ld is out of range (this tokenizer has ids 0..%d)", id, vocab - 1);
        nc_tokens_push(out, (int32_t)id);
        p = q;
    }
}

/* Parses a JSON messages array into msgs (pointing into `root`). */
static int parse_messages(const cJSON *root, nc_chat_message **msgs, int *n) {
    if (!cJSON_IsArray(root))
        return nc_fail("--chat expects a JSON array of {\"role\": ..., \"content\": ...} objects");
    int count = cJSON_GetArraySize(root);
    *msgs = nc_xcalloc((size_t)count + 1, sizeof **msgs);
    *n = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, root) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        int i = *n;
        if (!cJSON_IsObject(m)) return nc_fail("message %d is not a JSON object", i);
        if (!cJSON_IsString(role)) return nc_fail("message %d has no \"role\" string", i);
        if (!cJSON_IsString(content)) return nc_fail("message %d has no \"content\" string", i);
        const char *r = role->valuestring;
        if (!strcmp(r, "system"))
            (*msgs)[i].role = NC_ROLE_SYSTEM;
        else if (!strcmp(r, "user"))
            (*msgs)[i].role = NC_ROLE_USER;
        else if (!strcmp(r, "assistant"))
            (*msgs)[i].role = NC_ROLE_ASSISTANT;
        else
            return nc_fail("message %d has role '%.40s' (expected system, user or assistant)", i, r);
        (*msgs)[i].content = content->valuestring;
        (*msgs)[i].len = strlen(content->valuestring);
        (*n)++;
    }
    return 0;
}

static int run_chat(const nc_tokenizer *t, const char *json, size_t len, nc_tokens *ids) {
    if (json_has_nul(json, len)) return nc_fail("message contents with NUL characters (\\u0000) are not supported");
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        return nc_fail("--chat input is not valid JSON (near byte %zu)",
                       at && at >= json && at <= json + len ? (size_t)(at - json) : len);
    }
    nc_chat_message *msgs = NULL;
    int n = 0;
    int rc = parse_messages(root, &msgs, &n);
    if (rc == 0) rc = nc_chat_render(t, msgs, n, ids);
    free(msgs);
    cJSON_Delete(root);
    return rc;
}

/* One input -> one output. `line` tells whether the input was one --jsonl
 * line (JSON-encoded for encode; decode output is then a JSON string). */
static int run_one(const nc_tokenizer *t, tok_mode mode, bool jsonl, const char *in, size_t len) {
    nc_tokens ids = {0};
    int rc = 0;
    if (mode == MODE_CHAT) {
        if ((rc = run_chat(t, in, len, &ids)) == 0) print_ids(&ids);
    } else if (mode == MODE_ENCODE) {
        if (jsonl) {
            cJSON *s = json_has_nul(in, len) ? NULL : cJSON_ParseWithLength(in, len);
            if (!s && json_has_nul(in, len))
                rc = nc_fail("--jsonl strings with NUL characters (\\u0000) are not supported");
            else if (!cJSON_IsString(s))
                rc = nc_fail("--jsonl expects one JSON string per line");
            else
                rc = nc_tokenizer_encode(t, s->valuestring, strlen(s->valuestring), &ids);
            cJSON_Delete(s);
        } else {
            rc = nc_tokenizer_encode(t, in, len, &ids);
        }
        if (rc == 0) print_ids(&ids);
    } else {
        size_t n = 0;
        char *text = NULL;
        if ((rc = parse_ids(t, in, len, &ids)) == 0 && (text = nc_tokenizer_decode(t, ids.ids, ids.n, &n))) {
            if (jsonl)
                print_json_string(text, n);
            else
                fwrite(text, 1, n, stdout);
        } else {
            rc = -1;
        }
        free(text);
    }
    nc_tokens_free(&ids);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    nc_model_args a;
    nc_model_args_init(&a);
    tok_mode mode = MODE_ENCODE;
    bool jsonl = false, mode_set = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(arg, "--decode") || !strcmp(arg, "--chat")) {
            tok_mode m = arg[2] == 'd' ? MODE_DECODE : MODE_CHAT;
            if (mode_set && m != mode) {
                fprintf(stderr, "nanochat tokenize: --decode and --chat exclude each other\n");
                return 2;
            }
            mode = m;
            mode_set = true;
            continue;
        }
        if (!strcmp(arg, "--jsonl")) {
            jsonl = true;
            continue;
        }
        int r = nc_model_args_parse(&a, argc, argv, &i);
        if (r < 0) return 2;
        if (r == 0) {
            fprintf(stderr, "nanochat tokenize: unknown option '%s' (see --help)\n", arg);
            return 2;
        }
    }
    if (a.random_spec) {
        fprintf(stderr, "nanochat tokenize: --random has no tokenizer; use --tokenizer FILE\n");
        return 2;
    }
    if (a.load.tokenizer_path && (a.load.path || a.load.step >= 0 || a.load.source || a.load.tag)) {
        fprintf(stderr, "nanochat tokenize: give either --tokenizer FILE or -m PATH, not both\n");
        return 2;
    }
    nc_tokenizer *t = open_tokenizer(&a);
    if (!t) {
        fprintf(stderr, "nanochat tokenize: %s\n", nc_error());
        return 1;
    }
    size_t len;
    char *in = read_all(stdin, &len);
    int rc = in ? 0 : -1;
    if (in && !jsonl) {
        rc = run_one(t, mode, false, in, len);
    } else if (in) {
        size_t line_no = 0;
        for (char *p = in, *end = in + len; p < end && rc == 0; line_no++) {
            char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
            rc = run_one(t, mode, true, p, n);
            if (rc) nc_fail_context("line %zu", line_no + 1);
            p += n + 1;
        }
    }
    free(in);
    nc_tokenizer_free(t);
    if (fflush(stdout) != 0 && rc == 0) rc = nc_fail("cannot write stdout: %s", strerror(errno));
    if (rc) {
        fprintf(stderr, "nanochat tokenize: %s\n", nc_error());
        return 1;
    }
    return 0;
}

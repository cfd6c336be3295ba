/*
 * test_hub.c: the Hub layer's pure parts, against expectations written out
 * by hand from the rules they implement (hub_ref.h, hub_api.h, hub_http.h,
 * hub_select.h, hub_cache.h): hf: references, safe paths, the API's file
 * list, response headers, which files a model needs, the cache's root.
 * The network parts run in tests/py/test_hub_e2e.py against a mock Hub.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "hub/hub_api.h"
#include "hub/hub_cache.h"
#include "hub/hub_http.h"
#include "hub/hub_ref.h"
#include "hub/hub_select.h"
#include "util/common.h"

static void test_refs(void) {
    nc_hub_ref r;
    CHECK(nc_hub_ref_parse("hf:karpathy/nanochat-d32", &r) == 0 && !strcmp(r.repo_id, "karpathy/nanochat-d32") &&
              !strcmp(r.revision, "main") && !r.has_revision && !r.subdir[0],
          "plain reference");
    CHECK(nc_hub_ref_parse("hf:a/b@v1.0/chatsft_checkpoints/d32/", &r) == 0 && !strcmp(r.repo_id, "a/b") &&
              !strcmp(r.revision, "v1.0") && !strcmp(r.subdir, "chatsft_checkpoints/d32"),
          "revision and folder (trailing / dropped): %s %s", r.revision, r.subdir);
    CHECK(nc_hub_ref_parse("hf:a/b/sub", &r) == 0 && !strcmp(r.revision, "main") && !strcmp(r.subdir, "sub"),
          "folder without revision");
    const char *bad[] = {"a/b", "hf:", "hf:a", "hf:a/", "hf:/b", "hf:a/b@", "hf:a/b@x/..", "hf:a/b/../c",
                         "hf:a/b/./c", "hf:a/b//c", "hf:a--x/b", "hf:a/b..c", "hf:-a/b", "hf:a/b.", "hf:a b/c",
                         "hf:a/b@..", "hf:a/b@re\\v"};
    for (size_t i = 0; i < NC_ARRAY_LEN(bad); i++) CHECK(nc_hub_ref_parse(bad[i], &r) != 0, "refused: %s", bad[i]);
    char buf[256];
    nc_hub_ref_parse("hf:a/b@dev/x", &r);
    nc_hub_ref_format(&r, buf, sizeof buf);
    CHECK(!strcmp(buf, "hf:a/b@dev/x"), "formatted back: %s", buf);
}

static void test_paths(void) {
    const char *good[] = {"model_000650.pt", "chatsft_checkpoints/d32/meta_000650.json", "a.b/c..d", "\xc3\xa9t\xc3\xa9"};
    const char *bad[] = {"", "/etc/passwd", "../x", "a/../b", "a/..", "./a", "a//b", "a/", "a\\b", "a\nb", ".."};
    for (size_t i = 0; i < NC_ARRAY_LEN(good); i++) CHECK(nc_hub_path_is_safe(good[i]), "safe: %s", good[i]);
    for (size_t i = 0; i < NC_ARRAY_LEN(bad); i++) CHECK(!nc_hub_path_is_safe(bad[i]), "unsafe: %s", bad[i]);
    CHECK(nc_hub_is_commit("0123456789abcdef0123456789abcdef01234567"), "commit id");
    CHECK(!nc_hub_is_commit("main") && !nc_hub_is_commit("0123456789abcdef0123456789abcdef0123456"), "not commits");
}

#define SHA1 "1111111111111111111111111111111111111111"
#define SHA256 "2222222222222222222222222222222222222222222222222222222222222222"

static const char *LISTING =
    "{\"sha\":\"" SHA1 "\",\"siblings\":["
    "{\"rfilename\":\"model_004200.pt\",\"size\":10,\"blobId\":\"" SHA1 "\",\"lfs\":{\"sha256\":\"" SHA256
    "\",\"size\":13644109}},"
    "{\"rfilename\":\"meta_004200.json\",\"size\":867,\"blobId\":\"" SHA1 "\"},"
    "{\"rfilename\":\"../escape\",\"size\":1,\"blobId\":\"" SHA1 "\"},"
    "{\"rfilename\":\"nosize.json\",\"blobId\":\"" SHA1 "\"},"
    "{\"rfilename\":\"meta_004200.json\",\"size\":867,\"blobId\":\"" SHA1 "\"}]}";

static void test_listing(void) {
    nc_hub_listing l;
    CHECK(nc_hub_listing_parse(LISTING, strlen(LISTING), &l) == 0, "listing parses: %s", nc_error());
    CHECK(l.n_files == 2 && l.n_unsafe == 3, "2 usable files, 3 dropped (unsafe, no size, duplicate): %d %d",
          l.n_files, l.n_unsafe);
    const nc_hub_file *f = nc_hub_listing_find(&l, "model_004200.pt");
    CHECK(f && f->lfs && f->size == 13644109 && !strcmp(f->etag, SHA256), "LFS file: sha256 and LFS size");
    f = nc_hub_listing_find(&l, "meta_004200.json");
    CHECK(f && !f->lfs && f->size == 867 && !strcmp(f->etag, SHA1), "git file: blob id and size");
    nc_hub_listing_free(&l);
    const char *bad[] = {"[]", "{}", "{\"sha\":\"abc\",\"siblings\":[]}", "{\"sha\":\"" SHA1 "\"}", "nope"};
    for (size_t i = 0; i < NC_ARRAY_LEN(bad); i++) {
        CHECK(nc_hub_listing_parse(bad[i], strlen(bad[i]), &l) != 0, "refused listing: %s", bad[i]);
        nc_hub_listing_free(&l);
    }
}

static void feed(nc_hub_headers *h, const char *line) { nc_hub_headers_feed(h, line, strlen(line)); }

static void test_headers(void) {
    nc_hub_headers h;
    nc_hub_headers_init(&h);
    feed(&h, "HTTP/1.1 302 Found\r\n");
    feed(&h, "x-repo-commit: " SHA1 "\r\n");
    feed(&h, "ETag: W/\"pointer\"\r\n");
    feed(&h, "X-Linked-Etag: \"" SHA256 "\"\r\n");
    feed(&h, "X-Linked-Size: 13644109\r\n");
    feed(&h, "\r\n");
    feed(&h, "HTTP/1.1 206 Partial Content\r\n");
    feed(&h, "ETag: \"cdn-etag\"\r\n");
    feed(&h, "Content-Range: bytes 3000000-13644108/13644109\r\n");
    feed(&h, "\r\n");
    CHECK(h.status == 206 && !strcmp(h.commit, SHA1), "last status, the Hub's commit");
    CHECK(!strcmp(h.etag, SHA256), "X-Linked-Etag of the Hub's response wins over the CDN's ETag: %s", h.etag);
    CHECK(h.linked_size == 13644109 && h.range_start == 3000000, "sizes: %lld %lld", (long long)h.linked_size,
          (long long)h.range_start);
    nc_hub_headers_init(&h);
    feed(&h, "HTTP/2 404\r\n");
    feed(&h, "X-Error-Code: RevisionNotFound\r\n");
    feed(&h, "\r\n");
    CHECK(h.status == 404 && !strcmp(h.error_code, "RevisionNotFound") && !h.etag[0], "error code of a 404");
    nc_hub_headers_init(&h);
    feed(&h, "HTTP/1.1 200 OK\r\n");
    feed(&h, "X-Repo-Commit: " SHA1 "\r\n");
    feed(&h, "ETag: \"" SHA1 "\"\r\n");
    feed(&h, "\r\n");
    CHECK(!strcmp(h.etag, SHA1), "a small file's ETag: %s", h.etag);
}

/* A listing of `paths`, every file 1 byte with a dummy blob id. */
static void make_listing(nc_hub_listing *l, const char *const *paths, int n) {
    memset(l, 0, sizeof *l);
    l->files = nc_xcalloc((size_t)n, sizeof *l->files);
    for (int i = 0; i < n; i++) {
        l->files[i].path = nc_xstrdup(paths[i]);
        l->files[i].size = 1;
        snprintf(l->files[i].etag, sizeof l->files[i].etag, SHA1);
    }
    l->n_files = n;
}

/* Runs a selection; returns its paths joined by ' ' (static buffer), or "ERR: message". */
static const char *select_str(const char *const *paths, int n, const char *subdir, int step, const char *source,
                              const char *tag) {
    static char out[2048];
    nc_hub_listing l;
    make_listing(&l, paths, n);
    nc_hub_select_options o = {.subdir = subdir, .step = step, .source = source, .tag = tag};
    nc_hub_selection s;
    if (nc_hub_select(&l, "hf:o/n", &o, &s)) {
        snprintf(out, sizeof out, "ERR: %s", nc_error());
    } else {
        size_t u = 0;
        out[0] = 0;
        for (int i = 0; i < s.n; i++) u += (size_t)snprintf(out + u, sizeof out - u, "%s%s", i ? " " : "", s.paths[i]);
        if (s.index) u += (size_t)snprintf(out + u, sizeof out - u, " | index %s", s.index);
        if (s.tokenizer) snprintf(out + u, sizeof out - u, " | tok %s", s.tokenizer);
        nc_hub_selection_free(&s);
    }
    nc_hub_listing_free(&l);
    return out;
}

#define SEL(paths, ...) select_str(paths, (int)NC_ARRAY_LEN(paths), __VA_ARGS__)
#define EXPECT(got, want) CHECK(!strcmp((got), (want)), "got '%s', want '%s'", (got), (want))

static void test_select(void) {
    const char *native[] = {"README.md", "model_000100.pt", "meta_000100.json", "model_004200.pt", "meta_004200.json",
                            "optim_004200_rank0.pt", "tokenizer.pkl", "token_bytes.pt", "loss.png"};
    EXPECT(SEL(native, "", -1, NULL, NULL), "model_004200.pt meta_004200.json tokenizer.pkl | tok tokenizer.pkl");
    EXPECT(SEL(native, "", 100, NULL, NULL), "model_000100.pt meta_000100.json tokenizer.pkl | tok tokenizer.pkl");
    CHECK(!strncmp(SEL(native, "", 7, NULL, NULL), "ERR: no checkpoint for --step 7", 31), "missing step");
    const char *no_meta[] = {"model_000005.pt", "tokenizer.pkl"};
    CHECK(strstr(SEL(no_meta, "", -1, NULL, NULL), "but not its meta_000005.json") != NULL, "meta required");
    const char *hf[] = {"config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
                        "model-00002-of-00002.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"};
    EXPECT(SEL(hf, "", -1, NULL, NULL),
           "config.json model.safetensors.index.json tokenizer.json | index model.safetensors.index.json | tok "
           "tokenizer.json");
    CHECK(!strncmp(SEL(hf, "", 3, NULL, NULL), "ERR: --step applies", 19), "--step on an HF copy");
    const char *base[] = {"base_checkpoints/d20/model_000010.pt",   "base_checkpoints/d20/meta_000010.json",
                          "chatsft_checkpoints/d20/model_000003.pt", "chatsft_checkpoints/d20/meta_000003.json",
                          "chatsft_checkpoints/d32/model_000007.pt", "chatsft_checkpoints/d32/meta_000007.json",
                          "tokenizer/tokenizer.pkl",                 "tokenizer/token_bytes.pt"};
    EXPECT(SEL(base, "", -1, NULL, NULL),
           "chatsft_checkpoints/d32/model_000007.pt chatsft_checkpoints/d32/meta_000007.json "
           "tokenizer/tokenizer.pkl | tok tokenizer/tokenizer.pkl");
    EXPECT(SEL(base, "", -1, "base", NULL),
           "base_checkpoints/d20/model_000010.pt base_checkpoints/d20/meta_000010.json tokenizer/tokenizer.pkl | tok "
           "tokenizer/tokenizer.pkl");
    EXPECT(SEL(base, "", -1, NULL, "d20"),
           "chatsft_checkpoints/d20/model_000003.pt chatsft_checkpoints/d20/meta_000003.json tokenizer/tokenizer.pkl "
           "| tok tokenizer/tokenizer.pkl");
    EXPECT(SEL(base, "chatsft_checkpoints/d32", -1, NULL, NULL),
           "chatsft_checkpoints/d32/model_000007.pt chatsft_checkpoints/d32/meta_000007.json tokenizer/tokenizer.pkl "
           "| tok tokenizer/tokenizer.pkl");
    CHECK(strstr(SEL(base, "", -1, "rl", NULL), "ERR: --source rl") != NULL, "missing source");
    const char *nested[] = {"README.md", "d32/model_000650.pt", "d32/meta_000650.json", "d32/tokenizer.pkl"};
    const char *msg = SEL(nested, "", -1, NULL, NULL);
    CHECK(strstr(msg, "models are in d32") && strstr(msg, "hf:o/n/d32"), "points at the folder: %s", msg);
    const char *none[] = {"README.md", "data.csv"};
    msg = SEL(none, "", -1, NULL, NULL);
    CHECK(strstr(msg, "no nanochat model") && strstr(msg, "README.md, data.csv"), "lists the files: %s", msg);

    /* shards come from the index, and must be plain names listed beside it */
    nc_hub_listing l;
    make_listing(&l, hf, (int)NC_ARRAY_LEN(hf));
    nc_hub_select_options o = {.subdir = "", .step = -1};
    nc_hub_selection s;
    CHECK(nc_hub_select(&l, "hf:o/n", &o, &s) == 0, "hf selection");
    const char *index = "{\"weight_map\":{\"a\":\"model-00001-of-00002.safetensors\","
                        "\"b\":\"model-00002-of-00002.safetensors\",\"c\":\"model-00001-of-00002.safetensors\"}}";
    CHECK(nc_hub_select_shards(&l, index, strlen(index), &s) == 0 && s.n == 5 &&
              !strcmp(s.paths[3], "model-00001-of-00002.safetensors") &&
              !strcmp(s.paths[4], "model-00002-of-00002.safetensors"),
          "two shards added once each (%d paths)", s.n);
    const char *evil[] = {"{\"weight_map\":{\"a\":\"../x.safetensors\"}}", "{\"weight_map\":{\"a\":\"/x\"}}",
                          "{\"weight_map\":{\"a\":\"sub/x.safetensors\"}}", "{\"weight_map\":{\"a\":\"gone.safetensors\"}}",
                          "{\"weight_map\":{}}", "[]"};
    for (size_t i = 0; i < NC_ARRAY_LEN(evil); i++)
        CHECK(nc_hub_select_shards(&l, evil[i], strlen(evil[i]), &s) != 0, "refused index %s", evil[i]);
    nc_hub_selection_free(&s);
    nc_hub_listing_free(&l);
}

static void test_cache_root(void) {
    char buf[4096];
    unsetenv("HF_HUB_CACHE");
    unsetenv("HUGGINGFACE_HUB_CACHE");
    unsetenv("HF_HOME");
    unsetenv("XDG_CACHE_HOME");
    setenv("HOME", "/home/u", 1);
    CHECK(nc_hub_cache_root(buf, sizeof buf) == 0 && !strcmp(buf, "/home/u/.cache/huggingface/hub"), "default: %s", buf);
    setenv("XDG_CACHE_HOME", "/xdg", 1);
    CHECK(nc_hub_cache_root(buf, sizeof buf) == 0 && !strcmp(buf, "/xdg/huggingface/hub"), "XDG: %s", buf);
    setenv("HF_HOME", "~/hf", 1);
    CHECK(nc_hub_cache_root(buf, sizeof buf) == 0 && !strcmp(buf, "/home/u/hf/hub"), "HF_HOME with ~: %s", buf);
    setenv("HF_HUB_CACHE", "/c", 1);
    CHECK(nc_hub_cache_root(buf, sizeof buf) == 0 && !strcmp(buf, "/c"), "HF_HUB_CACHE first: %s", buf);
    nc_hub_repo_folder("karpathy/nanochat-d32", buf, sizeof buf);
    CHECK(!strcmp(buf, "models--karpathy--nanochat-d32"), "repo folder: %s", buf);
}

int main(void) {
    test_refs();
    test_paths();
    test_listing();
    test_headers();
    test_select();
    test_cache_root();
    return check_summary("test_hub");
}

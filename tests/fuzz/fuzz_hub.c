/*
 * fuzz_hub.c: libFuzzer target over what the Hub layer parses from the
 * network or the command line: the API's file list (hub_api.c), response
 * header lines (hub_http.c), hf: references and paths (hub_ref.c), the file
 * selection over a parsed list and a safetensors index (hub_select.c).
 * Seeds: tests/fuzz/corpus/hub/.
 *
 * The first byte picks the parser; the rest is its input. Beyond "no
 * crash, no leak, no UB": every accepted listing path and every selected
 * path must be safe (nc_hub_path_is_safe), whatever the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hub/hub_api.h"
#include "hub/hub_http.h"
#include "hub/hub_ref.h"
#include "hub/hub_select.h"

#define REQUIRE(c) do { if (!(c)) abort(); } while (0)

static void fuzz_listing(const char *text, size_t len) {
    nc_hub_listing l;
    if (nc_hub_listing_parse(text, len, &l) == 0) {
        REQUIRE(strlen(l.commit) == 40);
        for (int i = 0; i < l.n_files; i++) REQUIRE(nc_hub_path_is_safe(l.files[i].path) && l.files[i].size >= 0);
        const char *subdirs[] = {"", "chatsft_checkpoints/d32", "a"};
        for (int k = 0; k < 3; k++) {
            nc_hub_select_options o = {.subdir = subdirs[k], .step = k == 2 ? 5 : -1};
            nc_hub_selection s;
            if (nc_hub_select(&l, "hf:o/n", &o, &s) == 0) {
                for (int i = 0; i < s.n; i++) REQUIRE(nc_hub_listing_find(&l, s.paths[i]) != NULL);
                if (s.index) nc_hub_select_shards(&l, text, len, &s);
                for (int i = 0; i < s.n; i++) REQUIRE(nc_hub_path_is_safe(s.paths[i]));
                nc_hub_selection_free(&s);
            }
        }
    }
    nc_hub_listing_free(&l);
}

static void fuzz_headers(const char *text, size_t len) {
    nc_hub_headers h;
    nc_hub_headers_init(&h);
    for (size_t start = 0; start < len;) {
        const char *nl = memchr(text + start, '\n', len - start);
        size_t end = nl ? (size_t)(nl - text) + 1 : len;
        nc_hub_headers_feed(&h, text + start, end - start);
        start = end;
    }
    REQUIRE(memchr(h.etag, 0, sizeof h.etag) && memchr(h.commit, 0, sizeof h.commit));
    REQUIRE(memchr(h.error_code, 0, sizeof h.error_code) && memchr(h.error_message, 0, sizeof h.error_message));
}

static void fuzz_ref(const char *text) {
    nc_hub_ref r;
    if (nc_hub_ref_parse(text, &r) == 0) {
        REQUIRE(strchr(r.repo_id, '/') && !strstr(r.repo_id, "--") && !strstr(r.repo_id, ".."));
        REQUIRE(!strchr(r.revision, '/') && strcmp(r.revision, "..") && r.revision[0]);
        REQUIRE(!r.subdir[0] || nc_hub_path_is_safe(r.subdir));
        char buf[2048];
        nc_hub_ref_format(&r, buf, sizeof buf);
    }
    nc_hub_path_is_safe(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    char *text = malloc(size);
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    switch (data[0] % 3) {
    case 0: fuzz_listing(text, size - 1); break;
    case 1: fuzz_headers(text, size - 1); break;
    default: fuzz_ref(text); break;
    }
    free(text);
    return 0;
}

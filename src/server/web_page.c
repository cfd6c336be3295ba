/*
 * web_page.c: the chat page (src/server/web/index.html) embedded in the
 * binary at build time with the assembler's .incbin, so `nanochat serve`
 * needs no files beside the model and the build needs no code generator.
 * The path is relative to the repository root, where make runs the
 * compiler; the Makefile lists the HTML as a dependency of this object.
 */
#include "srv.h"

__asm__(".section .rodata\n"
        ".balign 16\n"
        ".local nc_web_index_start\n"
        "nc_web_index_start:\n"
        ".incbin \"src/server/web/index.html\"\n"
        ".local nc_web_index_end\n"
        "nc_web_index_end:\n"
        ".byte 0\n"
        ".balign 8\n"
        ".local nc_web_index_size\n"
        "nc_web_index_size:\n"
        ".quad nc_web_index_end - nc_web_index_start\n"
        ".previous\n");

extern const char nc_web_index_start[] __attribute__((visibility("hidden")));
extern const unsigned long long nc_web_index_size __attribute__((visibility("hidden")));

const char *nc_web_index_html(size_t *len) {
    *len = (size_t)nc_web_index_size;
    return nc_web_index_start;
}

/*
 * chat_once.c: the smallest program embedding nanochat-c: asks the bundled
 * model one question (argv[1], or a default) and prints the answer as it is
 * generated. Uses only include/nanochat.h; `make` builds it as
 * build/examples/chat_once.
 */
#include <stdio.h>

#include "nanochat.h"

static int print_delta(void *user, const char *text, size_t len, int32_t token) {
    (void)user, (void)token;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0; /* nonzero would stop the reply */
}

int main(int argc, char **argv) {
    nc_engine *e = nc_engine_open(NULL); /* the bundled picochat, on the GPU if there is one */
    if (!e) {
        fprintf(stderr, "chat_once: %s\n", nc_engine_last_error());
        return 1;
    }
    nc_message question = {"user", argc > 1 ? argv[1] : "What is 123 * 45?"};
    nc_prompt prompt = {.messages = &question, .n_messages = 1};
    nc_generate_options greedy = {0}; /* all zero: greedy decoding, up to 256 tokens */
    int rc = nc_engine_generate_stream(e, &prompt, &greedy, print_delta, NULL, NULL);
    printf("\n");
    if (rc) fprintf(stderr, "chat_once: %s\n", nc_engine_last_error());
    nc_engine_close(e);
    return rc ? 1 : 0;
}

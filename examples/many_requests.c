/*
 * many_requests.c: several prompts, several samples each, generated
 * together through the public API's requests (include/nanochat.h):
 * submit them all, step the engine until they are done, read each row's
 * tokens and masks (1 sampled, 0 forced by the calculator). The loop of an
 * evaluation or of RL rollouts, in C.
 *
 *     build/examples/many_requests [MODEL]      (default: the bundled picochat)
 */
#include <stdio.h>
#include <stdlib.h>

#include "nanochat.h"

#define SAMPLES 2

int main(int argc, char **argv) {
    nc_engine_options eo = {.model_path = argc > 1 ? argv[1] : NULL, .max_batch = 8};
    nc_engine *e = nc_engine_open(&eo);
    if (!e) {
        fprintf(stderr, "many_requests: %s\n", nc_engine_last_error());
        return 1;
    }
    const char *questions[] = {"What is 123 * 45?", "How many r's are in strawberry?", "Who are you?"};
    enum { N = sizeof questions / sizeof *questions };
    nc_request *req[N];
    for (int i = 0; i < N; i++) {
        nc_message m = {"user", questions[i]};
        nc_prompt p = {.messages = &m, .n_messages = 1};
        nc_request_options o = {.sampling = {.temperature = 0.8f, .top_k = 50, .seed = 42 + 100 * (uint64_t)i,
                                             .max_tokens = 96},
                                .n = SAMPLES};
        if (!(req[i] = nc_request_submit(e, &p, &o))) {
            fprintf(stderr, "many_requests: %s\n", nc_engine_last_error());
            return 1;
        }
    }
    int steps = 0, left;
    while ((left = nc_engine_step(e)) > 0) steps++; /* every request advances at each step */
    if (left < 0) fprintf(stderr, "many_requests: %s\n", nc_engine_last_error());
    printf("%d requests x %d samples in %d steps\n", N, SAMPLES, steps);

    for (int i = 0; i < N; i++) {
        for (int row = 0; row < SAMPLES; row++) {
            int64_t n = nc_request_read(req[i], row, 0, NULL, NULL, NULL, 0, NULL);
            int32_t *tokens = malloc((size_t)(n ? n : 1) * sizeof *tokens);
            uint8_t *masks = malloc((size_t)(n ? n : 1));
            nc_reply_finish finish;
            nc_request_read(req[i], row, 0, tokens, masks, NULL, (size_t)n, &finish);
            int forced = 0;
            for (int64_t k = 0; k < n; k++) forced += !masks[k];
            int64_t len = nc_engine_detokenize(e, tokens, (size_t)n, NULL, 0);
            char *text = malloc((size_t)(len > 0 ? len : 0) + 1);
            nc_engine_detokenize(e, tokens, (size_t)n, text, (size_t)len + 1);
            printf("[%s #%d] %s (%lld tokens, %d forced, %s)\n", questions[i], row, text, (long long)n, forced,
                   nc_reply_finish_name(finish));
            free(text);
            free(masks);
            free(tokens);
        }
        nc_request_free(req[i]);
    }
    nc_engine_close(e);
    return 0;
}

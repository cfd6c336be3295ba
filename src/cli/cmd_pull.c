/*
 * cmd_pull.c: `nanochat pull hf:OWNER/NAME[@REVISION][/SUBDIR]`: downloads
 * a model from the Hugging Face Hub into huggingface_hub's cache without
 * running it, as `ollama pull` or `hf download` do, and prints the local
 * folder that -m accepts. The same fetch runs implicitly for `-m hf:...`
 * on every other command (model_args.c, src/hub/).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "model_args.h"
#include "model/loader.h"
#include "util/common.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: nanochat pull hf:OWNER/NAME[@REVISION][/SUBDIR] [--step N] [--source S] [--tag dN] [-q]\n"
            "\n"
            "Downloads the files a nanochat model needs from the Hugging Face Hub (the newest\n"
            "step of a native checkpoint with its meta file and tokenizer, or config.json +\n"
            "safetensors + tokenizer.json; nothing else) into the Hugging Face cache, resuming\n"
            "partial files and checking every file against the Hub's checksum. Prints the local\n"
            "snapshot folder on stdout. Ctrl-C stops; running it again resumes.\n"
            "\n"
            "  REVISION             branch, tag or commit (default main)\n"
            "  SUBDIR               folder of the repository holding the model\n"
            "  --step N, --source sft|rl|mid|base, --tag dN   which checkpoint, as for -m\n"
            "  -q, --quiet          no progress on stderr\n"
            "  -h, --help           this help\n"
            "\n"
            "environment:\n"
            "  HF_TOKEN             token for private or gated repositories (else the file\n"
            "                       $HF_TOKEN_PATH or $HF_HOME/token, as `hf auth login` writes it)\n"
            "  HF_HOME, HF_HUB_CACHE   where the cache is (default ~/.cache/huggingface/hub)\n"
            "  HF_HUB_OFFLINE=1     never use the network: only what is cached\n"
            "  HF_ENDPOINT          the Hub's base URL (default https://huggingface.co)\n");
}

int cmd_pull(int argc, char **argv) {
    nc_model_args a;
    nc_model_args_init(&a);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        int r = nc_model_args_parse(&a, argc, argv, &i);
        if (r < 0) return 2;
        if (r > 0) continue;
        if (argv[i][0] == '-' || a.load.path) {
            fprintf(stderr, "nanochat pull: unexpected argument '%s' (see nanochat pull --help)\n", argv[i]);
            return 2;
        }
        a.load.path = argv[i];
    }
    if (!a.load.path || !nc_hub_is_ref(a.load.path)) {
        fprintf(stderr, "nanochat pull: give a Hub model, hf:OWNER/NAME[@REVISION][/SUBDIR]%s%s\n",
                a.load.path ? ", not " : "", a.load.path ? a.load.path : "");
        return 2;
    }
    int rc = nc_model_args_fetch(&a);
    if (rc) return rc == -2 ? 130 : 1;
    /* what was fetched is what the loader will accept */
    nc_checkpoint_location loc;
    if (nc_checkpoint_locate(&a.load, &loc)) {
        fprintf(stderr, "nanochat pull: %s\n", nc_error());
        return 1;
    }
    nc_checkpoint_location_free(&loc);
    printf("%s\n", a.hub_dir);
    return 0;
}

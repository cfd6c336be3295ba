/*
 * main.c: the `nanochat` program: dispatches to one subcommand per file
 * (cli/cmd_*.c). Each subcommand parses and validates its own flags and
 * prints --help.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const nc_command commands[] = {
    {"info", "describe a checkpoint (generation, sizes, dtypes, special tokens)", cmd_info},
    {"tokenize", "text on stdin -> token ids (or --decode, --chat)", cmd_tokenize},
    {"forward", "token ids -> fp32 logits of every position (compare with PyTorch)", cmd_forward},
    {"bench", "prefill / decode / batched throughput vs the bandwidth floor", cmd_bench},
    {"eval", "bits per byte of a text; --compare an 8-bit mode with bf16", cmd_eval},
    {"quantize", "write an int8 / fp8 copy of a checkpoint that loads directly", cmd_quantize},
    {"chat", "talk to a chat model (interactive, or -p TEXT once)", cmd_chat},
    {"generate", "complete a text with a base model (<|bos|> + text)", cmd_generate},
    {"serve", "HTTP server: chat page, nanochat + OpenAI APIs, metrics", cmd_serve},
    {"pull", "download a model from the Hugging Face Hub (hf:OWNER/NAME) into its cache", cmd_pull},
    {"list", "models in the Hugging Face cache: repo, revision, size, last used", cmd_list},
    {"rm", "remove a model (or one revision) from the Hugging Face cache", cmd_rm},
};

static void print_usage(FILE *f) {
    fprintf(f, "usage: nanochat <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nEvery model-using command takes -m hf:OWNER/NAME[@REVISION][/SUBDIR] (a model on the\n"
               "Hugging Face Hub, downloaded once) or -m PATH (a local checkpoint).\n"
               "Run `nanochat <command> --help` for a command's options.\n");
}

int main(int argc, char **argv) {
    /* NVLink multicast stays off in tensor parallel's NCCL unless the user
     * asks for it (backend/cuda/cuda_tp.cu says why); set here, before any
     * thread exists, since setenv races with getenv in other threads. */
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    if (argc < 2) {
        print_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        print_usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "nanochat: unknown command '%s'\n", argv[1]);
    print_usage(stderr);
    return 2;
}

/*
 * flags.h: the small option-parsing helpers every subcommand shares:
 * `--name VALUE` / `--name=VALUE` matching and range-checked numbers, each
 * printing a one-line error (the CLI's tier-2 errors) on bad input.
 */
#ifndef NC_CLI_FLAGS_H
#define NC_CLI_FLAGS_H

#include <stdbool.h>

/* Matches `--name VALUE` or `--name=VALUE` at argv[*i]. Returns 1 and sets
 * *value (advancing *i past a separate value), 0 if argv[*i] is another
 * option, -1 (message printed) if the value is missing. */
int nc_flag_take(const char *name, int argc, char **argv, int *i, const char **value);

/* Parses a base-10 integer in [lo, hi]; -1 with a message naming `opt`. */
int nc_flag_int(const char *opt, const char *v, long long lo, long long hi, long long *out);

/* Parses a finite number in [lo, hi] ((lo, hi] when lo_open). */
int nc_flag_float(const char *opt, const char *v, double lo, double hi, bool lo_open, float *out);

#endif /* NC_CLI_FLAGS_H */

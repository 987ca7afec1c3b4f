/*
 * What the two front ends share: the program name, error printing in one
 * format ("mbuild: error: ..."), and the exit statuses, which are the
 * library's error codes.
 */
#ifndef MBUILD_CLI_H
#define MBUILD_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "mbuild/error.h"

/* Set once by main; used as the prefix of every diagnostic. */
extern const char *cli_program;

/* The exit-status table printed at the end of every --help. */
extern const char cli_exit_codes[];

/* Print "PROGRAM: error: MESSAGE" to stderr and return the exit status to use. */
int cli_fail(const struct mb_error *err);

/* As cli_fail for a usage error found by the front end itself; returns MB_ERR_INPUT. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Print the --version report (ours, QEMU's, the libraries') to stdout; returns the exit status. */
int cli_version(void);

/* A subcommand: its name, its one-line summary and its entry point. */
struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
};

/* Run the subcommand named argv[0] from `table`, or fail with a usage error. */
int cli_dispatch(const struct cli_command *table, size_t count, int argc, char **argv);

/*
 * The whole of a front end's main once cli_program is set: --help (through
 * `usage`, which prints to its stream and returns the status given),
 * --version, then the subcommand from `table`.
 */
int cli_main(int argc, char **argv, const struct cli_command *table, size_t count,
             int (*usage)(FILE *out, int status));

/* Print the table's names and summaries, indented, to `out`. */
void cli_print_commands(FILE *out, const struct cli_command *table, size_t count);

/* Human-readable size: "1.5 GiB", "300 B". */
void cli_format_size(unsigned long long bytes, char *buf, size_t size);

/* "2026-12-04 05:10" in local time. */
void cli_format_time(long long unix_seconds, char *buf, size_t size);

#endif

/*
 * machine: per-project VMs started from mbuild's cached images.
 *
 * NEEDSWORK: only --help and --version work; the commands below need the
 * step runner and the QEMU driver first.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int not_yet(int argc, char **argv)
{
    (void)argc;
    fprintf(stderr, "%s: error: '%s' is not available in this version\n", cli_program, argv[0]);
    return MB_ERR_GENERAL;
}

static const struct cli_command commands[] = {
    {"init", "write a commented Machinefile for this project", not_yet},
    {"start", "start this project's VM, building or pulling its image", not_yet},
    {"shell", "open a shell in a running VM", not_yet},
    {"exec", "run a command in a running VM", not_yet},
    {"stop", "stop a VM", not_yet},
    {"ls", "list VMs", not_yet},
    {"rm", "remove a VM and its volumes", not_yet},
};

#define COMMAND_COUNT (sizeof(commands) / sizeof(commands[0]))

static int usage(FILE *out, int status)
{
    fprintf(out,
            "Usage: %s COMMAND [OPTIONS]\n"
            "       %s --version | --help\n\n"
            "Runs one VM per project from the image its Machinefile describes.\n\n"
            "Commands (not available in this version yet):\n",
            cli_program, cli_program);
    cli_print_commands(out, commands, COMMAND_COUNT);
    fprintf(out, "\n%s", cli_exit_codes);
    return status;
}

int main(int argc, char **argv)
{
    cli_program = "machine";
    if (argc < 2)
        return usage(stderr, MB_ERR_INPUT);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0)
        return usage(stdout, 0);
    if (strcmp(argv[1], "--version") == 0)
        return cli_version();
    if (argv[1][0] == '-')
        return cli_usage_error("unknown option '%s'", argv[1]);
    return cli_dispatch(commands, COMMAND_COUNT, argc - 1, argv + 1);
}

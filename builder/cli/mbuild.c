/*
 * mbuild: builds a Machinefile into cached layers. Only parses arguments,
 * calls libmbuild and prints; each subcommand lives in its own file.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"

static const struct cli_command commands[] = {
    {"build", "plan and build a Machinefile's layers", cmd_build},
    {"cache", "list and verify the local layer cache", cmd_cache},
};

#define COMMAND_COUNT (sizeof(commands) / sizeof(commands[0]))

static int usage(FILE *out, int status)
{
    fprintf(out,
            "Usage: %s COMMAND [OPTIONS]\n"
            "       %s --version | --help\n\n"
            "Builds VM images from a Machinefile, one cached layer per step.\n\n"
            "Commands:\n",
            cli_program, cli_program);
    cli_print_commands(out, commands, COMMAND_COUNT);
    fprintf(out,
            "\nRun '%s COMMAND --help' for a command's options.\n"
            "The cache is $MBUILD_CACHE, else $XDG_CACHE_HOME/mbuild, else ~/.cache/mbuild.\n\n%s",
            cli_program, cli_exit_codes);
    return status;
}

int main(int argc, char **argv)
{
    cli_program = "mbuild";
    return cli_main(argc, argv, commands, COMMAND_COUNT, usage);
}

/*
 * machine: per-project VMs started from mbuild's cached images. Only
 * parses arguments and dispatches; the commands live in machine_cmds.c.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "machine_cmds.h"

static const struct cli_command commands[] = {
    {"init", "write a commented Machinefile for this project", cmd_machine_init},
    {"start", "start this project's VM, building its image first", cmd_machine_start},
    {"shell", "open a shell in a running VM", cmd_machine_shell},
    {"exec", "run a command in a running VM", cmd_machine_exec},
    {"ssh-config", "print a Host block for ~/.ssh/config", cmd_machine_ssh_config},
    {"stop", "stop a VM", cmd_machine_stop},
    {"ls", "list VMs", cmd_machine_ls},
    {"reset", "drop a VM's root disk: the next start is fresh", cmd_machine_reset},
    {"rm", "remove a VM and its volumes", cmd_machine_rm},
};

#define COMMAND_COUNT (sizeof(commands) / sizeof(commands[0]))

static int usage(FILE *out, int status)
{
    fprintf(out,
            "Usage: %s COMMAND [OPTIONS]\n"
            "       %s --version | --help\n\n"
            "Runs one VM per project from the image its Machinefile describes.\n\n"
            "Commands:\n",
            cli_program, cli_program);
    cli_print_commands(out, commands, COMMAND_COUNT);
    fprintf(out,
            "\nA command's NAME defaults to the machine of the project in the current\n"
            "directory. Machines live in $XDG_DATA_HOME/machine (~/.local/share/machine).\n\n%s",
            cli_exit_codes);
    return status;
}

int main(int argc, char **argv)
{
    cli_program = "machine";
    return cli_main(argc, argv, commands, COMMAND_COUNT, usage);
}

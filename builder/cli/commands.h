/* mbuild's subcommands, one file each. */
#ifndef MBUILD_COMMANDS_H
#define MBUILD_COMMANDS_H

int cmd_build(int argc, char **argv);
int cmd_cache(int argc, char **argv);

#endif

/* machine's subcommands (machine_cmds.c). */
#ifndef MBUILD_MACHINE_CMDS_H
#define MBUILD_MACHINE_CMDS_H

int cmd_machine_init(int argc, char **argv);
int cmd_machine_start(int argc, char **argv);
int cmd_machine_shell(int argc, char **argv);
int cmd_machine_exec(int argc, char **argv);
int cmd_machine_ssh_config(int argc, char **argv);
int cmd_machine_stop(int argc, char **argv);
int cmd_machine_ls(int argc, char **argv);
int cmd_machine_reset(int argc, char **argv);
int cmd_machine_rm(int argc, char **argv);

#endif

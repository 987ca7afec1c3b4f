/*
 * What machine.c (state) and machine_boot.c (processes) share. Nothing
 * outside builder/machine*.c includes this file.
 */
#ifndef MB_MACHINE_INTERNAL_H
#define MB_MACHINE_INTERNAL_H

#include <stdbool.h>
#include <sys/types.h>

#include "mbuild/machine.h"

/* "<m->dir>/<name>", malloc'ed. */
char *machine_path(const struct mb_machine *m, const char *name);

/* The machine's live QEMU and passt processes, from their pid files; 0 when not running. */
pid_t machine_qemu_pid(const struct mb_machine *m);
pid_t machine_passt_pid(const struct mb_machine *m);
/* A mount's virtiofsd, from its pid file ("fs<N>.pid"); 0 when not running. */
pid_t machine_share_pid(const struct mb_machine *m, const char *pid_file);

int machine_read_state(struct mb_machine *m, struct mb_error *err);
int machine_write_state(const struct mb_machine *m, struct mb_error *err);

bool machine_name_ok(const char *name);
char *machine_new_name(const char *project_dir, struct mb_error *err);

/* SIGKILL its QEMU, passt and virtiofsd if they run, and forget their pids. */
void machine_kill(struct mb_machine *m);

#endif

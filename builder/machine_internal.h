/*
 * What machine.c (state), machine_boot.c (processes) and machine_share.c
 * (project mounts) share. Nothing outside builder/machine*.c includes this
 * file.
 */
#ifndef MB_MACHINE_INTERNAL_H
#define MB_MACHINE_INTERNAL_H

#include <stdbool.h>
#include <sys/types.h>

#include "mbuild/machine.h"
#include "vm_args.h"

/* "<m->dir>/<name>", malloc'ed. */
char *machine_path(const struct mb_machine *m, const char *name);

/* The machine's live QEMU and passt processes, from their pid files; 0 when not running. */
pid_t machine_qemu_pid(const struct mb_machine *m);
pid_t machine_passt_pid(const struct mb_machine *m);
/* A mount's virtiofsd, from its pid file ("fs<N>.pid"); 0 when not running. */
pid_t machine_share_pid(const struct mb_machine *m, const char *pid_file);

/* Write pid to `file` in m's directory. */
int machine_write_pid(const struct mb_machine *m, const char *file, pid_t pid,
                      struct mb_error *err);

/*
 * Start what the Machinefile's mounts need on the host: virtiofsd per
 * mount (pid in fs<N>.pid, socket fs<N>.sock), or nothing for a mount
 * left to 9p. virtiofs[i] says which mount i got.
 */
int machine_share_start(const struct mb_machine_start *o, const struct mb_machine *m,
                        bool *virtiofs, struct mb_error *err);

/* QEMU's arguments for the mounts as machine_share_start left them. */
void machine_share_args(struct vm_args *a, const struct mb_machine *m,
                        const struct mb_machinefile *mf, const bool *virtiofs);

int machine_read_state(struct mb_machine *m, struct mb_error *err);
int machine_write_state(const struct mb_machine *m, struct mb_error *err);

bool machine_name_ok(const char *name);
char *machine_new_name(const char *project_dir, struct mb_error *err);

/* SIGKILL its QEMU, passt and virtiofsd if they run, and forget their pids. */
void machine_kill(struct mb_machine *m);

#endif

/*
 * Machines: per-project VMs booted from an assembled image (image.h).
 *
 * A machine's state lives in <root>/<name>/, where <root> is
 * $XDG_DATA_HOME/machine (default ~/.local/share/machine):
 *
 *   machine.json        name, project, image, ssh port (atomic writes)
 *   root.qcow2          its own overlay on the image's flattened disk
 *   volumes/<n>.img     named ext4 disks that outlive restarts
 *   id_ed25519[.pub]    the key `machine exec` and `shell` log in with
 *   host_ed25519[.pub]  the guest's host key, made here and so pinned
 *   known_hosts         that pin, for ssh
 *   qemu.pid passt.pid  the running VM's processes, when it runs
 *   console.log         its serial console
 *   lock                held while a start or stop is under way
 *
 * A machine is disposable: each start begins on a fresh overlay unless
 * the Machinefile says `persistent: true` (or the start asks to keep it).
 * The appliance kernel boots it and hands over to the image's own init;
 * the keys reach the guest through QEMU's fw_cfg, never the image.
 * Nothing here needs root.
 */
#ifndef MBUILD_MACHINE_H
#define MBUILD_MACHINE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "mbuild/appliance.h"
#include "mbuild/error.h"
#include "mbuild/machinefile.h"
#include "mbuild/progress.h"

struct mb_machine {
    char *name;
    char *dir;         /* <root>/<name> */
    char *project_dir; /* absolute */
    char *image;       /* "sha256:..." of the image's top layer */
    char *ports;       /* "8080:80,3000:3000" as forwarded, or "" */
    int ssh_port;      /* on 127.0.0.1, while it runs */
    bool running;      /* its QEMU is alive (a stale pid file counts as stopped) */
};

/* <root>, malloc'ed: $XDG_DATA_HOME/machine, else ~/.local/share/machine. */
char *mb_machine_root(struct mb_error *err);

/* 1 and *out filled when a machine named `name` exists, 0 when not, -1 on error. */
int mb_machine_load(const char *name, struct mb_machine *out, struct mb_error *err);

/* The machine of the project at `project_dir` (absolute): 1, 0 when none, -1. */
int mb_machine_of_project(const char *project_dir, struct mb_machine *out, struct mb_error *err);

/* Every machine, by name. Free each with mb_machine_clear, then the array. */
int mb_machine_list(struct mb_machine **out, size_t *count, struct mb_error *err);

struct mb_machine_start {
    const struct mb_machinefile *mf;
    const char *image; /* "sha256:..." of the top layer */
    const char *disk;  /* the image's flattened disk (mb_image_assemble) */
    const struct mb_appliance *appliance;
    const char *name;         /* NULL: the project's machine, else a new unique name */
    bool keep_root;           /* keep the root disk (also when mf->persistent) */
    bool host_loopback;       /* let the guest reach the host's 127.0.0.1 at its gateway */
    unsigned timeout_seconds; /* for the guest to answer ssh */
    const struct mb_progress *progress;
};

/*
 * Create the machine if needed and boot it; return when `ssh true`
 * succeeds. *already is true when it was running (nothing is done then).
 * A VM that does not come up is killed; its console's last lines are in
 * the error.
 */
int mb_machine_start(const struct mb_machine_start *opts, struct mb_machine *out, bool *already,
                     struct mb_error *err);

/* Clean shutdown over ssh, then SIGTERM and SIGKILL after a timeout. Stopped is success. */
int mb_machine_stop(struct mb_machine *m, struct mb_error *err);

/* Drop the root disk now (stopping the machine first): the next start is fresh. Volumes stay. */
int mb_machine_reset(struct mb_machine *m, struct mb_error *err);

/* Remove the machine and its volumes; a running one only with `force` (it is killed). */
int mb_machine_remove(struct mb_machine *m, bool force, struct mb_error *err);

/*
 * The ssh command line reaching the machine, NULL-terminated and
 * malloc'ed (free with mb_machine_argv_free): with `tty` for a shell, and
 * `command` (NULL for a login shell) quoted for the guest's shell.
 */
char **mb_machine_ssh_argv(const struct mb_machine *m, bool tty, char *const *command,
                           struct mb_error *err);
void mb_machine_argv_free(char **argv);

void mb_machine_clear(struct mb_machine *m);

#endif

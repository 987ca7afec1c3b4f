/*
 * Sharing a host directory over virtiofs without root: Debian's C
 * virtiofsd (qemu-system-common) run inside a user and mount namespace of
 * its own. Internal to builder/machine*.c.
 */
#ifndef MB_VIRTIOFS_H
#define MB_VIRTIOFS_H

#include <stdbool.h>
#include <sys/types.h>

#include "mbuild/error.h"

#define VIRTIOFSD_PATH "/usr/lib/qemu/virtiofsd"

/*
 * Start virtiofsd serving `source` (read-only unless `writable`) on the
 * unix socket `socket`, output appended to `log`, and wait until the
 * socket is there. On failure nothing is left running and the error says
 * why (the caller then shares over 9p).
 */
int virtiofs_start(const char *source, bool writable, const char *socket, const char *log,
                   pid_t *pid, struct mb_error *err);

#endif

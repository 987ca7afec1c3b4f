/*
 * virtiofsd for an ordinary user: see virtiofs.h.
 *
 * Bookworm's virtiofsd wants root: it calls setgroups, locks a file under
 * /run and builds its own sandbox. In a user namespace where the user is
 * root (`unshare --map-auto --map-root-user`) and with a private tmpfs on
 * /run (`--mount`, then mount), all three work, and nothing of the host
 * changes. Files the user owns show as root's in the guest, and what the
 * guest writes lands as the user's. A read-only share is a read-only bind
 * mount of the source made in that namespace, so the guest cannot write
 * whatever it asks of virtiofsd.
 */
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mbuild/clock.h"
#include "mbuild/spawn.h"
#include "virtiofs.h"
#include "vm_args.h"

#define SOCKET_WAIT_MS 5000

/*
 * Run in the new mount namespace as `sh -c SCRIPT virtiofsd MODE SOURCE
 * ARGS...`: $0 is virtiofsd, $1 rw|ro, $2 the source, the rest its options.
 */
static const char script[] = "set -e; prog=$0 mode=$1 source=$2; shift 2; "
                             "mount -t tmpfs -o mode=0755 machine-run /run; "
                             "if [ \"$mode\" = ro ]; then mount --bind \"$source\" \"$source\"; "
                             "mount -o remount,bind,ro \"$source\"; fi; "
                             "exec \"$prog\" \"$@\"";

static bool is_socket(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* True once the socket is there; false when virtiofsd exited or took too long. */
static bool wait_socket(const char *socket, pid_t pid)
{
    long long deadline = mb_clock_ms() + SOCKET_WAIT_MS;

    while (mb_clock_ms() < deadline) {
        if (is_socket(socket))
            return true;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return false;
        mb_sleep_ms(20);
    }
    return false;
}

int virtiofs_start(const char *source, bool writable, const char *socket, const char *log,
                   pid_t *pid, struct mb_error *err)
{
    struct vm_args a = {0};
    int rc;

    if (access(VIRTIOFSD_PATH, X_OK) != 0)
        return mb_error_set(err, MB_ERR_GENERAL, "%s is not installed", VIRTIOFSD_PATH);
    unlink(socket);
    vm_args_add(&a, "unshare");
    if (geteuid() != 0) { /* root needs only the mount namespace */
        vm_args_add(&a, "--map-auto");
        vm_args_add(&a, "--map-root-user");
    }
    vm_args_add(&a, "--mount");
    vm_args_add(&a, "sh");
    vm_args_add(&a, "-c");
    vm_args_add(&a, "%s", script);
    vm_args_add(&a, VIRTIOFSD_PATH);
    vm_args_add(&a, "%s", writable ? "rw" : "ro");
    vm_args_add(&a, "%s", source);
    vm_args_add(&a, "--socket-path=%s", socket);
    vm_args_add(&a, "-o");
    vm_args_add(&a, "source=%s", source);
    rc = a.oom ? mb_error_set(err, MB_ERR_GENERAL, "out of memory")
               : mb_spawn_detached((const char *const *)a.v, log, -1, pid, err);
    if (rc == 0 && !wait_socket(socket, *pid)) {
        kill(*pid, SIGKILL);
        waitpid(*pid, NULL, 0);
        unlink(socket);
        rc = mb_error_set(err, MB_ERR_GENERAL, "virtiofsd did not start (see %s)", log);
    }
    vm_args_free(&a);
    return rc;
}

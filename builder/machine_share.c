/*
 * The project's mounts, host side. Each goes over virtiofs where Debian's
 * C virtiofsd (qemu-system-common) starts, else over QEMU's own 9p.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "machine_internal.h"
#include "mbuild/clock.h"
#include "mbuild/spawn.h"
#include "vm_args.h"

#define VIRTIOFSD_PATH "/usr/lib/qemu/virtiofsd"
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

/*
 * Start virtiofsd serving `source` (read-only unless `writable`) on the
 * unix socket `socket`, output appended to `log`, and wait until the
 * socket is there. On failure nothing is left running.
 */
static int virtiofs_start(const char *source, bool writable, const char *socket, const char *log,
                          pid_t *pid, struct mb_error *err)
{
    struct vm_args a = {0};
    int rc;

    if (access(VIRTIOFSD_PATH, X_OK) != 0)
        return mb_error_set(err, MB_ERR_GENERAL, "%s is not installed", VIRTIOFSD_PATH);
    if (strlen(socket) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return mb_error_set(err, MB_ERR_GENERAL, "socket path '%s' is too long", socket);
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

/*
 * One virtiofsd per mount; a mount whose virtiofsd does not start, and
 * every mount when MACHINE_SHARE=9p, is shared over 9p instead.
 */
int machine_share_start(const struct mb_machine_start *o, const struct mb_machine *m,
                        bool *virtiofs, struct mb_error *err)
{
    const char *force = getenv("MACHINE_SHARE");
    bool try = force == NULL || strcmp(force, "9p") != 0;
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < o->mf->mount_count; i++) {
        char *source = NULL, *socket = NULL, *log = NULL, pid_file[32];
        struct mb_error why;
        pid_t pid;

        virtiofs[i] = false;
        snprintf(pid_file, sizeof(pid_file), "fs%zu.pid", i);
        if (asprintf(&source, "%s/%s", o->mf->project_dir, o->mf->mounts[i].source) < 0 ||
            asprintf(&socket, "%s/fs%zu.sock", m->dir, i) < 0 ||
            asprintf(&log, "%s/fs%zu.log", m->dir, i) < 0)
            rc = mb_error_set(err, MB_ERR_GENERAL, "out of memory");
        else if (try &&
                 virtiofs_start(source, o->mf->mounts[i].writable, socket, log, &pid, &why) == 0)
            virtiofs[i] = (rc = machine_write_pid(m, pid_file, pid, err)) == 0;
        else if (try)
            mb_progress_say(o->progress, "machine '%s': %s; sharing '%s' over 9p", m->name, why.msg,
                            o->mf->mounts[i].source);
        free(source);
        free(socket);
        free(log);
    }
    return rc;
}

/*
 * virtiofs needs the guest's memory shared with virtiofsd (a memfd);
 * 9p is QEMU's own.
 */
void machine_share_args(struct vm_args *a, const struct mb_machine *m,
                        const struct mb_machinefile *mf, const bool *virtiofs)
{
    bool shared_memory = false;

    for (size_t i = 0; i < mf->mount_count; i++) {
        if (virtiofs[i]) {
            shared_memory = true;
            vm_args_add(a, "-chardev");
            vm_args_add(a, "socket,id=fs%zu,path=%s/fs%zu.sock", i, m->dir, i);
            vm_args_add(a, "-device");
            vm_args_add(a, "vhost-user-fs-device,chardev=fs%zu,tag=m%zu", i, i);
            continue;
        }
        vm_args_add(a, "-fsdev");
        vm_args_add(a, "local,id=fs%zu,path=%s/%s,security_model=none%s", i, mf->project_dir,
                    mf->mounts[i].source, mf->mounts[i].writable ? "" : ",readonly=on");
        vm_args_add(a, "-device");
        vm_args_add(a, "virtio-9p-device,fsdev=fs%zu,mount_tag=m%zu", i, i);
    }
    if (shared_memory) {
        vm_args_add(a, "-object");
        vm_args_add(a, "memory-backend-memfd,id=mem,share=on,size=%lluM",
                    (unsigned long long)(mf->memory / (1024 * 1024)));
        vm_args_add(a, "-machine");
        vm_args_add(a, "memory-backend=mem");
    }
}

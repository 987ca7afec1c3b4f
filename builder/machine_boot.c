/*
 * Booting and stopping a machine: its keys, volumes and root overlay,
 * then passt and QEMU as daemons that outlive `machine start`, and a wait
 * until the guest answers ssh.
 *
 * The guest side is the appliance's init in machine mode: it mounts the
 * root, the volumes (mb.vol=DEV:TARGET) and the project shares
 * (mb.share=TAG:TARGET:ro|rw:virtiofs|9p), installs the keys QEMU passes through
 * fw_cfg (opt/mbuild/authorized_keys, opt/mbuild/host_key) and hands over
 * to the image's own /sbin/init.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "machine_internal.h"
#include "mbuild/clock.h"
#include "mbuild/fsutil.h"
#include "mbuild/qcow2.h"
#include "mbuild/spawn.h"
#include "mbuild/stepvm.h"
#include "vm_args.h"

#define SSH_TRY_TIMEOUT_MS 5000
#define STOP_TIMEOUT_MS    30000
/* The appliance prints its marker within the console's first bytes. */
#define CONSOLE_MARKER_WITHIN (256 * 1024)

/* Run a helper program to completion; a non-zero exit is an error carrying its output. */
static int run_tool(const char *const argv[], struct mb_error *err)
{
    struct mb_spawn_options opts = {60000, 4096, NULL};
    struct mb_spawn_result res;
    int rc = 0;

    if (mb_spawn_capture(argv, &opts, &res, err) < 0)
        return -1;
    if (res.exit_status != 0)
        rc = mb_error_set(err, MB_ERR_GENERAL, "%s failed: %.*s", argv[0],
                          (int)strcspn(res.output, "\n"), res.output);
    mb_spawn_result_free(&res);
    return rc;
}

static bool exists(const char *path)
{
    return access(path, F_OK) == 0;
}

static int make_key(const struct mb_machine *m, const char *file, struct mb_error *err)
{
    char *path = machine_path(m, file), comment[96];
    int rc = 0;

    snprintf(comment, sizeof(comment), "machine-%s", m->name);
    if (path != NULL && !exists(path)) {
        const char *argv[] = {"ssh-keygen", "-q",    "-t", "ed25519", "-N", "",
                              "-C",         comment, "-f", path,      NULL};

        rc = run_tool(argv, err);
    }
    free(path);
    return rc;
}

/* The client key, the guest's host key, and known_hosts pinning the latter. */
static int ensure_keys(const struct mb_machine *m, struct mb_error *err)
{
    char *pub = machine_path(m, "host_ed25519.pub"), *known = machine_path(m, "known_hosts");
    char *text = NULL, *line = NULL;
    size_t len;
    int rc = make_key(m, "id_ed25519", err);

    if (rc == 0)
        rc = make_key(m, "host_ed25519", err);
    if (rc == 0)
        rc = mb_fs_read_file(pub, 4096, &text, &len, err);
    if (rc == 0) {
        text[strcspn(text, "\n")] = '\0';
        rc = asprintf(&line, "machine-%s %s\n", m->name, text) < 0
                 ? mb_error_set(err, MB_ERR_GENERAL, "out of memory")
                 : mb_fs_write_atomic(known, line, strlen(line), err);
    }
    free(text);
    free(line);
    free(pub);
    free(known);
    return rc < 0 ? mb_error_prefix(err, "make ssh keys") : 0;
}

static char *mke2fs_path(void)
{
    return strdup(access("/usr/sbin/mke2fs", X_OK) == 0 ? "/usr/sbin/mke2fs"
                  : access("/sbin/mke2fs", X_OK) == 0   ? "/sbin/mke2fs"
                                                        : "mke2fs");
}

/*
 * A volume is a qcow2 disk holding an ext4 file system, made on first use:
 * mke2fs on a sparse raw file, then converted (only what mke2fs wrote).
 */
static int make_volume(const char *path, const struct mb_volume *v, struct mb_error *err)
{
    char *raw = NULL, *part = NULL, *mke2fs = mke2fs_path();
    int fd, rc;

    rc =
        asprintf(&raw, "%s.raw", path) < 0 || asprintf(&part, "%s.part", path) < 0 || mke2fs == NULL
            ? mb_error_set(err, MB_ERR_GENERAL, "out of memory")
            : 0;
    fd = rc == 0 ? open(raw, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
    if (rc == 0 && (fd < 0 || ftruncate(fd, (off_t)v->size) < 0))
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "create '%s'", raw);
    if (fd >= 0)
        close(fd);
    if (rc == 0) {
        const char *argv[] = {mke2fs, "-q", "-F", "-t", "ext4", "-L", v->name, raw, NULL};

        rc = run_tool(argv, err);
    }
    if (rc == 0)
        rc = mb_qcow2_convert(raw, "raw", part, err);
    if (rc == 0 && rename(part, path) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "publish '%s'", path);
    if (raw != NULL)
        unlink(raw);
    if (rc < 0 && part != NULL)
        unlink(part);
    free(raw);
    free(part);
    free(mke2fs);
    return rc < 0 ? mb_error_prefix(err, "volume '%s'", v->name) : 0;
}

static char *volume_path(const struct mb_machine *m, const struct mb_volume *v)
{
    char *path;

    return asprintf(&path, "%s/volumes/%s.qcow2", m->dir, v->name) < 0 ? NULL : path;
}

static int ensure_volumes(const struct mb_machine *m, const struct mb_machinefile *mf,
                          struct mb_error *err)
{
    char *dir = machine_path(m, "volumes");
    int rc = mf->volume_count > 0 ? mb_fs_mkdir_p(dir, 0700, err) : 0;

    for (size_t i = 0; rc == 0 && i < mf->volume_count; i++) {
        char *path = volume_path(m, &mf->volumes[i]);

        if (path == NULL)
            rc = mb_error_set(err, MB_ERR_GENERAL, "out of memory");
        else if (!exists(path))
            rc = make_volume(path, &mf->volumes[i], err);
        free(path);
    }
    free(dir);
    return rc;
}

/* A free TCP port on 127.0.0.1 for the guest's ssh, as the kernel picks it. */
static int free_port(int *port, struct mb_error *err)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = 0;

    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "find a free port");
    *port = ntohs(addr.sin_port);
    if (fd >= 0)
        close(fd);
    return rc;
}

/*
 * passt on one end of a socket pair, forwarding ssh and the Machinefile's
 * ports; the host's loopback stays closed to the guest unless asked.
 */
static int start_passt(const struct mb_machine *m, const struct mb_machine_start *o, int *qemu_fd,
                       struct mb_error *err)
{
    const struct mb_machinefile *mf = o->mf;
    struct vm_args a = {0};
    int pair[2], rc;
    pid_t pid;
    char *log = machine_path(m, "passt.log");

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "socketpair");
    vm_args_passt(&a, pair[0], o->host_loopback);
    vm_args_add(&a, "-t");
    vm_args_add(&a, "127.0.0.1/%d:22", m->ssh_port);
    for (size_t i = 0; i < mf->port_count; i++) {
        vm_args_add(&a, "-t");
        vm_args_add(&a, "127.0.0.1/%u:%u", mf->ports[i].host, mf->ports[i].guest);
    }
    rc = a.oom || log == NULL
             ? mb_error_set(err, MB_ERR_GENERAL, "out of memory")
             : mb_spawn_detached((const char *const *)a.v, log, pair[0], &pid, err);
    if (rc == 0)
        rc = machine_write_pid(m, "passt.pid", pid, err);
    close(pair[0]);
    if (rc == 0)
        *qemu_fd = pair[1];
    else
        close(pair[1]);
    vm_args_free(&a);
    free(log);
    return rc < 0 ? mb_error_prefix(err, "start passt") : 0;
}

/* The kernel command line: machine mode, network, volumes and shares. */
static void kernel_append(struct vm_args *a, const struct mb_machinefile *mf, const bool *virtiofs)
{
    char line[4096];
    size_t len = (size_t)snprintf(line, sizeof(line), "mb.mode=machine mb.net=1");

    for (size_t i = 0; i < mf->volume_count && len < sizeof(line); i++)
        len += (size_t)snprintf(line + len, sizeof(line) - len, " mb.vol=vd%c:%s", (char)('b' + i),
                                mf->volumes[i].target);
    for (size_t i = 0; i < mf->mount_count && len < sizeof(line); i++)
        len += (size_t)snprintf(line + len, sizeof(line) - len, " mb.share=m%zu:%s:%s:%s", i,
                                mf->mounts[i].target, mf->mounts[i].writable ? "rw" : "ro",
                                virtiofs[i] ? "virtiofs" : "9p");
    vm_args_append(a, line);
}

static void disk_args(struct vm_args *a, const struct mb_machine *m,
                      const struct mb_machinefile *mf)
{
    vm_args_add(a, "-drive");
    vm_args_add(a, "if=none,id=root,format=qcow2,discard=unmap,file=%s/root.qcow2", m->dir);
    vm_args_add(a, "-device");
    vm_args_add(a, "virtio-blk-device,drive=root");
    for (size_t i = 0; i < mf->volume_count; i++) {
        vm_args_add(a, "-drive");
        vm_args_add(a, "if=none,id=vol%zu,format=qcow2,discard=unmap,file=%s/volumes/%s.qcow2", i,
                    m->dir, mf->volumes[i].name);
        vm_args_add(a, "-device");
        vm_args_add(a, "virtio-blk-device,drive=vol%zu", i);
    }
}

static int start_qemu(const struct mb_machine_start *o, const struct mb_machine *m, int net_fd,
                      const bool *virtiofs, pid_t *pid, struct mb_error *err)
{
    const struct mb_machinefile *mf = o->mf;
    bool kvm = mb_vm_use_kvm(o->appliance, o->progress);
    char *log = machine_path(m, "console.log"), *old_log = machine_path(m, "console.log.1");
    struct vm_args a = {0};
    int rc;

    vm_args_boot(&a, o->appliance, kvm, mf->memory, mf->cpus);
    vm_args_add(&a, "-name");
    vm_args_add(&a, "machine-%s", m->name);
    /* Modern virtio-mmio: vhost-user devices (virtiofsd) refuse the legacy one. */
    vm_args_add(&a, "-global");
    vm_args_add(&a, "virtio-mmio.force-legacy=false");
    kernel_append(&a, mf, virtiofs);
    disk_args(&a, m, mf);
    machine_share_args(&a, m, mf, virtiofs);
    vm_args_add(&a, "-fw_cfg");
    vm_args_add(&a, "name=opt/mbuild/authorized_keys,file=%s/id_ed25519.pub", m->dir);
    vm_args_add(&a, "-fw_cfg");
    vm_args_add(&a, "name=opt/mbuild/host_key,file=%s/host_ed25519", m->dir);
    vm_args_add(&a, "-netdev");
    vm_args_add(&a, "stream,id=net,server=off,addr.type=fd,addr.str=%d", net_fd);
    vm_args_add(&a, "-device");
    vm_args_add(&a, "virtio-net-device,netdev=net");
    /* Memory the guest frees goes back to the host. */
    vm_args_add(&a, "-device");
    vm_args_add(&a, "virtio-balloon-device,free-page-reporting=on");
    rc = a.oom || log == NULL || old_log == NULL
             ? mb_error_set(err, MB_ERR_GENERAL, "out of memory")
             : 0;
    /* This boot's console starts empty; the last one's is kept beside it. */
    if (rc == 0 && rename(log, old_log) < 0 && errno != ENOENT)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "rename '%s'", log);
    if (rc == 0)
        rc = mb_spawn_detached((const char *const *)a.v, log, net_fd, pid, err);
    if (rc == 0)
        rc = machine_write_pid(m, "qemu.pid", *pid, err);
    vm_args_free(&a);
    free(log);
    free(old_log);
    return rc;
}

/* The last lines of the console, for an error about a VM that did not come up. */
static void console_tail(const struct mb_machine *m, char *out, size_t size)
{
    char *path = machine_path(m, "console.log");
    int fd = path == NULL ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    off_t end = fd < 0 ? 0 : lseek(fd, 0, SEEK_END);
    ssize_t n = 0;

    out[0] = '\0';
    if (fd >= 0 && lseek(fd, end > (off_t)size - 1 ? end - (off_t)size + 1 : 0, SEEK_SET) >= 0)
        n = read(fd, out, size - 1);
    out[n > 0 ? n : 0] = '\0';
    if (fd >= 0)
        close(fd);
    free(path);
}

/*
 * True when the guest's ssh server greets us on the forwarded port. A
 * banner is all `ready` waits for: the first real session (the user's)
 * then checks the pinned host key, and a handshake less is about a second
 * less under emulation for OpenSSH.
 */
static bool ssh_greets(const struct mb_machine *m)
{
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)m->ssh_port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct pollfd p = {fd, POLLIN, 0};
    static const char ident[] = "SSH-2.0-machine-ready-probe\r\n";
    char banner[8] = "";
    bool ok = false;

    /* Both sides send their identification first; Dropbear waits for ours. */
    if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0 &&
        send(fd, ident, sizeof(ident) - 1, MSG_NOSIGNAL) == (ssize_t)sizeof(ident) - 1 &&
        poll(&p, 1, SSH_TRY_TIMEOUT_MS) == 1)
        ok = recv(fd, banner, 4, MSG_WAITALL) == 4 && memcmp(banner, "SSH-", 4) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/*
 * True once the appliance printed its ready marker: the guest's network is
 * up then, so an ssh attempt fails fast (a refused port) until sshd runs,
 * where before it would hang on passt's half-open connection.
 */
static bool appliance_done(const struct mb_machine *m)
{
    static const char marker[] = "MBUILD-MACHINE-READY-FOR-INIT";
    char *path = machine_path(m, "console.log");
    int fd = path == NULL ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    char *text = malloc(CONSOLE_MARKER_WITHIN + 1);
    ssize_t n = fd < 0 || text == NULL ? -1 : read(fd, text, CONSOLE_MARKER_WITHIN);
    bool found = false;

    if (n > 0) {
        text[n] = '\0';
        /* The console may hold NULs; search each NUL-terminated piece. */
        for (char *p = text; !found && p < text + n; p += strlen(p) + 1)
            found = strstr(p, marker) != NULL;
    }
    if (fd >= 0)
        close(fd);
    free(text);
    free(path);
    return found;
}

static int wait_ready(const struct mb_machine *m, pid_t qemu, unsigned timeout_s,
                      struct mb_error *err)
{
    long long deadline = mb_clock_ms() + (long long)timeout_s * 1000;
    bool network_up = false;
    char tail[1500];
    int status;

    while (mb_clock_ms() < deadline) {
        if (waitpid(qemu, &status, WNOHANG) == qemu || kill(qemu, 0) < 0) {
            console_tail(m, tail, sizeof(tail));
            return mb_error_set(err, MB_ERR_GENERAL, "the VM stopped while booting; console:\n%s",
                                tail);
        }
        network_up = network_up || appliance_done(m);
        if (network_up && ssh_greets(m))
            return 0;
        mb_sleep_ms(network_up ? 200 : 50);
    }
    console_tail(m, tail, sizeof(tail));
    return mb_error_set(err, MB_ERR_GENERAL, "no ssh answer after %us; console:\n%s", timeout_s,
                        tail);
}

static int lock_name(const char *name, struct mb_error *err)
{
    char *root = mb_machine_root(err), *path = NULL;
    int fd = -1;

    if (root != NULL && mb_fs_mkdir_p(root, 0700, err) == 0) {
        if (asprintf(&path, "%s/.%s.lock", root, name) < 0)
            mb_error_set(err, MB_ERR_GENERAL, "out of memory");
        else
            fd = mb_fs_lock(path, LOCK_EX, err);
    }
    free(root);
    free(path);
    return fd < 0 ? -1 : fd;
}

/* Which machine to start: the one named, the project's, or a new one. */
static char *choose_name(const struct mb_machine_start *o, struct mb_error *err)
{
    struct mb_machine m;
    char *name;
    int found;

    if (o->name != NULL) {
        if (!machine_name_ok(o->name)) {
            mb_error_set(err, MB_ERR_INPUT,
                         "'%s' is not a machine name: use a-z, 0-9, '.', '_' and '-'", o->name);
            return NULL;
        }
        return strdup(o->name);
    }
    found = mb_machine_of_project(o->mf->project_dir, &m, err);
    if (found < 0)
        return NULL;
    name = found ? strdup(m.name) : machine_new_name(o->mf->project_dir, err);
    mb_machine_clear(&m);
    return name;
}

static char *ports_text(const struct mb_machinefile *mf)
{
    char text[2048] = "";
    size_t len = 0;

    for (size_t i = 0; i < mf->port_count && len < sizeof(text); i++)
        len += (size_t)snprintf(text + len, sizeof(text) - len, "%s%u:%u", i ? "," : "",
                                mf->ports[i].host, mf->ports[i].guest);
    return strdup(text);
}

/* The root overlay: fresh unless kept, and always fresh on another image. */
static int prepare_root(const struct mb_machine_start *o, const struct mb_machine *m,
                        bool same_image, struct mb_error *err)
{
    char *root = machine_path(m, "root.qcow2");
    int rc = 0;

    if (root == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    if (!(o->keep_root || o->mf->persistent) || !same_image || !exists(root)) {
        unlink(root);
        rc = mb_qcow2_create_overlay(root, o->disk, err);
    }
    free(root);
    return rc;
}

static int boot(const struct mb_machine_start *o, struct mb_machine *m, bool same_image,
                struct mb_error *err)
{
    bool *virtiofs = calloc(o->mf->mount_count + 1, sizeof(*virtiofs));
    pid_t qemu = 0;
    int net_fd = -1;
    int rc = virtiofs == NULL ? mb_error_set(err, MB_ERR_GENERAL, "out of memory")
                              : mb_fs_mkdir_p(m->dir, 0700, err);

    if (rc == 0)
        rc = ensure_keys(m, err);
    if (rc == 0)
        rc = ensure_volumes(m, o->mf, err);
    if (rc == 0)
        rc = prepare_root(o, m, same_image, err);
    if (rc == 0)
        rc = free_port(&m->ssh_port, err);
    if (rc == 0)
        rc = machine_write_state(m, err);
    if (rc == 0)
        rc = start_passt(m, o, &net_fd, err);
    if (rc == 0)
        rc = machine_share_start(o, m, virtiofs, err);
    mb_progress_say(o->progress, "machine '%s': booting", m->name);
    if (rc == 0)
        rc = start_qemu(o, m, net_fd, virtiofs, &qemu, err);
    if (net_fd >= 0)
        close(net_fd);
    if (rc == 0)
        rc = wait_ready(m, qemu, o->timeout_seconds, err);
    if (rc < 0)
        machine_kill(m);
    free(virtiofs);
    return rc;
}

static int fill_new(const struct mb_machine_start *o, const char *name, struct mb_machine *m,
                    struct mb_error *err)
{
    char *root = mb_machine_root(err);

    if (root == NULL)
        return -1;
    m->name = strdup(name);
    m->project_dir = strdup(o->mf->project_dir);
    if (asprintf(&m->dir, "%s/%s", root, name) < 0)
        m->dir = NULL;
    free(root);
    return m->name && m->project_dir && m->dir ? 0 : mb_error_set(err, MB_ERR_GENERAL, "oom");
}

/* The machine's image and ports become this start's. */
static int take_start(const struct mb_machine_start *o, struct mb_machine *m, struct mb_error *err)
{
    free(m->image);
    free(m->ports);
    m->image = strdup(o->image);
    m->ports = ports_text(o->mf);
    return m->image && m->ports ? 0 : mb_error_set(err, MB_ERR_GENERAL, "out of memory");
}

/*
 * Decide which machine this start is and lock it: the name is chosen and
 * a new machine's state written under a lock on all names, so two starts
 * of one project at once agree on one machine. Returns the name's lock,
 * or -1; *found says whether the machine existed.
 */
static int claim(const struct mb_machine_start *o, struct mb_machine *out, int *found,
                 struct mb_error *err)
{
    int all = lock_name("-names", err), lock = -1; /* "-names" is no machine's name */
    char *name = all < 0 ? NULL : choose_name(o, err);

    *found = -1;
    if (name != NULL && (lock = lock_name(name, err)) >= 0)
        *found = mb_machine_load(name, out, err);
    if (*found == 1 && strcmp(out->project_dir, o->mf->project_dir) != 0)
        *found =
            mb_error_set(err, MB_ERR_INPUT, "machine '%s' belongs to '%s'", name, out->project_dir);
    if (*found == 0 &&
        (fill_new(o, name, out, err) < 0 || take_start(o, out, err) < 0 ||
         mb_fs_mkdir_p(out->dir, 0700, err) < 0 || machine_write_state(out, err) < 0))
        *found = -1;
    if (*found < 0 && lock >= 0) {
        close(lock);
        lock = -1;
    }
    if (all >= 0)
        close(all);
    free(name);
    return lock;
}

int mb_machine_start(const struct mb_machine_start *o, struct mb_machine *out, bool *already,
                     struct mb_error *err)
{
    bool same_image = false;
    int found, rc = 0;
    int lock;

    memset(out, 0, sizeof(*out));
    *already = false;
    lock = claim(o, out, &found, err);
    if (lock < 0)
        return mb_error_prefix(err, "start machine");
    if (found == 1 && out->running) {
        *already = true;
    } else {
        if (found == 1) {
            same_image = strcmp(out->image, o->image) == 0;
            rc = take_start(o, out, err);
        }
        if (rc == 0)
            rc = boot(o, out, same_image, err);
        out->running = rc == 0;
    }
    close(lock);
    return rc < 0 ? mb_error_prefix(err, "start machine") : 0;
}

static bool wait_gone(pid_t pid, long ms)
{
    for (long waited = 0; waited < ms; waited += 100) {
        if (kill(pid, 0) < 0)
            return true;
        waitpid(pid, NULL, WNOHANG);
        mb_sleep_ms(100);
    }
    return kill(pid, 0) < 0;
}

static void remove_file(const struct mb_machine *m, const char *file)
{
    char *path = machine_path(m, file);

    if (path != NULL)
        unlink(path);
    free(path);
}

/* The virtiofsd of each mount, fs0.pid, fs1.pid, ... up to the first missing file. */
static void kill_shares(const struct mb_machine *m)
{
    char file[32];

    for (size_t i = 0;; i++) {
        char *path;
        pid_t pid;

        snprintf(file, sizeof(file), "fs%zu.pid", i);
        path = machine_path(m, file);
        if (path == NULL || !exists(path)) {
            free(path);
            return;
        }
        pid = machine_share_pid(m, file);
        if (pid > 0) {
            kill(pid, SIGKILL);
            wait_gone(pid, 5000);
        }
        unlink(path);
        free(path);
        snprintf(file, sizeof(file), "fs%zu.sock", i);
        remove_file(m, file);
    }
}

void machine_kill(struct mb_machine *m)
{
    pid_t qemu = machine_qemu_pid(m), passt = machine_passt_pid(m);

    if (qemu > 0) {
        kill(qemu, SIGKILL);
        wait_gone(qemu, 5000);
    }
    if (passt > 0) {
        kill(passt, SIGKILL);
        wait_gone(passt, 5000);
    }
    remove_file(m, "qemu.pid");
    remove_file(m, "passt.pid");
    kill_shares(m);
    m->running = false;
}

int mb_machine_stop(struct mb_machine *m, struct mb_error *err)
{
    char *const command[] = {"sh", "-c", "sync; poweroff", NULL};
    struct mb_spawn_options opts = {10000, 4096, NULL};
    struct mb_spawn_result res;
    pid_t qemu = machine_qemu_pid(m);
    char **argv;

    (void)err;
    if (qemu > 0) {
        argv = mb_machine_ssh_argv(m, false, command, err);
        if (argv != NULL && mb_spawn_capture((const char *const *)argv, &opts, &res, err) == 0)
            mb_spawn_result_free(&res);
        mb_machine_argv_free(argv);
        /* A guest that does not power off in time is stopped as a crashed host would. */
        if (!wait_gone(qemu, STOP_TIMEOUT_MS)) {
            kill(qemu, SIGTERM);
            wait_gone(qemu, 5000);
        }
    }
    machine_kill(m);
    mb_error_clear(err);
    return 0;
}

/* 'arg' with each ' written as '\'' : one word for the guest's shell. */
static char *quoted(char *const *command)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    if (f == NULL)
        return NULL;
    for (size_t i = 0; command[i] != NULL; i++) {
        fputs(i ? " '" : "'", f);
        for (const char *c = command[i]; *c != '\0'; c++)
            fputs(*c == '\'' ? "'\\''" : (char[]){*c, '\0'}, f);
        fputc('\'', f);
    }
    return fclose(f) == 0 ? text : NULL;
}

char **mb_machine_ssh_argv(const struct mb_machine *m, bool tty, char *const *command,
                           struct mb_error *err)
{
    struct vm_args a = {0};
    char **out;
    char *remote = NULL;

    vm_args_add(&a, "ssh");
    vm_args_add(&a, "-F");
    vm_args_add(&a, "/dev/null");
    vm_args_add(&a, "-i");
    vm_args_add(&a, "%s/id_ed25519", m->dir);
    vm_args_add(&a, "-p");
    vm_args_add(&a, "%d", m->ssh_port);
    for (const char *const *o =
             (const char *const[]){"IdentitiesOnly=yes", "BatchMode=yes",
                                   "StrictHostKeyChecking=yes", "LogLevel=ERROR",
                                   "ConnectTimeout=5", "ServerAliveInterval=15", NULL};
         *o != NULL; o++) {
        vm_args_add(&a, "-o");
        vm_args_add(&a, "%s", *o);
    }
    vm_args_add(&a, "-o");
    vm_args_add(&a, "UserKnownHostsFile=%s/known_hosts", m->dir);
    vm_args_add(&a, "-o");
    vm_args_add(&a, "HostKeyAlias=machine-%s", m->name);
    vm_args_add(&a, "%s", tty ? "-t" : "-T");
    vm_args_add(&a, "root@127.0.0.1");
    if (command != NULL && command[0] != NULL) {
        remote = quoted(command);
        vm_args_add(&a, "--");
        vm_args_add(&a, "%s", remote != NULL ? remote : "");
    }
    free(remote);
    if (a.oom) {
        vm_args_free(&a);
        mb_error_set(err, MB_ERR_GENERAL, "out of memory");
        return NULL;
    }
    out = calloc(a.n + 1, sizeof(*out));
    if (out == NULL) {
        vm_args_free(&a);
        mb_error_set(err, MB_ERR_GENERAL, "out of memory");
        return NULL;
    }
    memcpy(out, a.v, a.n * sizeof(*out));
    return out;
}

void mb_machine_argv_free(char **argv)
{
    if (argv == NULL)
        return;
    for (size_t i = 0; argv[i] != NULL; i++)
        free(argv[i]);
    free(argv);
}

int mb_machine_reset(struct mb_machine *m, struct mb_error *err)
{
    char *root = machine_path(m, "root.qcow2");

    if (root == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    if (m->running)
        mb_machine_stop(m, err);
    if (unlink(root) < 0 && errno != ENOENT) {
        mb_error_errno(err, MB_ERR_GENERAL, errno, "remove '%s'", root);
        free(root);
        return -1;
    }
    free(root);
    return 0;
}

/*
 * The `tiny` base image: Debian's busybox-static on a small ext4 root
 * filesystem, for tests and quick starts.
 *
 * The root tree is made in a stage directory under <cache>/tmp/, then
 * `mke2fs -d` copies it into a raw image and `qemu-img convert` turns that
 * into a qcow2 (sparse: a few MB for a 1 GiB filesystem). mke2fs -d copies
 * each file's owner from the host, so an ordinary user runs it inside
 * `unshare --map-root-user`, where their own uid and gid are 0 and the
 * stage, all theirs, lands as root's. Only that one uid and gid are mapped
 * (no newuidmap or /etc/subuid needed), so the stage must hold nothing
 * owned by anyone else: it is made without setgid and with our own group.
 * Those steps, shared with the other recipes, are in rootfs.c.
 *
 * A machine is entered over ssh, so the image carries Debian's Dropbear
 * with the shared libraries it runs on and glibc's loader (about 4 MB),
 * and busybox init starts it from /etc/inittab. The host key is not in
 * the image: the appliance installs the one the host made for the machine
 * (see recipes/appliance/init).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mbuild/base.h"
#include "mbuild/debpkg.h"
#include "mbuild/fsutil.h"
#include "mbuild/spawn.h"
#include "rootfs.h"

#define TINY_FS_SIZE    (1024L * 1024 * 1024)
#define TOOL_TIMEOUT_MS (2 * 60 * 1000)

/* Debian's directory for this architecture's libraries, and glibc's loader. */
#define MULTIARCH   "x86_64-linux-gnu"
#define LOADER      "ld-linux-x86-64.so.2"
#define LOADER_LINK "lib64/" LOADER

/* The root tree's directories, each after its parent. */
static const struct {
    const char *path;
    mode_t mode;
} tree_dirs[] = {
    {"bin", 0755},      {"dev", 0755},
    {"etc", 0755},      {"etc/dropbear", 0755},
    {"lib", 0755},      {"lib/" MULTIARCH, 0755},
    {"lib64", 0755},    {"proc", 0555},
    {"root", 0700},     {"sbin", 0755},
    {"sys", 0555},      {"tmp", 01777},
    {"usr", 0755},      {"usr/bin", 0755},
    {"usr/lib", 0755},  {"usr/lib/" MULTIARCH, 0755},
    {"usr/sbin", 0755}, {"var", 0755},
    {"work", 0755},
};

static const struct {
    const char *path;
    const char *content;
} etc_files[] = {
    {"etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"},
    {"etc/group", "root:x:0:\n"},
    {"etc/hostname", "tiny\n"},
    {"etc/shells", "/bin/sh\n"},
    {"etc/fstab", "proc /proc proc defaults 0 0\n"
                  "sysfs /sys sysfs defaults 0 0\n"
                  "devpts /dev/pts devpts mode=620,ptmxmode=666 0 0\n"},
    /*
     * busybox init. The appliance hands over with /dev mounted and the
     * network configured. Dropbear stays in the foreground for init to
     * restart it; -s: keys only, never a password. A stop is `poweroff`
     * (init runs the shutdown lines, then kills what is left).
     */
    {"etc/inittab", "::sysinit:/bin/mkdir -p /dev/pts\n"
                    "::sysinit:/bin/mount -a\n"
                    "::sysinit:/bin/hostname -F /etc/hostname\n"
                    "::sysinit:/sbin/ip link set lo up\n"
                    "::respawn:/usr/sbin/dropbear -F -E -s -r "
                    "/etc/dropbear/dropbear_ed25519_host_key\n"
                    "::ctrlaltdel:/sbin/poweroff\n"
                    "::shutdown:/bin/sync\n"
                    "::shutdown:/bin/umount -a -r\n"},
};

/* The packages the ssh server comes from: dropbear-bin and its libraries' packages. */
static const char *const ssh_packages[] = {"dropbear-bin", "libc6",       "libcrypt1", "libgmp10",
                                           "libtomcrypt1", "libtommath1", "zlib1g"};

/*
 * What the image takes from them, at the same paths. A library is often a
 * symlink to a versioned file beside it (libz.so.1 -> libz.so.1.2.13):
 * the link comes as it is, and every regular file whose name continues
 * the library's name ("libz.so.1.") with it, wherever it is in the archive.
 */
static const char *const ssh_files[] = {
    "usr/sbin/dropbear",
    "usr/bin/dropbearkey",
    "usr/bin/dropbearconvert",
    "lib/" MULTIARCH "/" LOADER,
    "lib/" MULTIARCH "/libc.so.6",
    "lib/" MULTIARCH "/libcrypt.so.1",
    "lib/" MULTIARCH "/libz.so.1",
    "usr/lib/" MULTIARCH "/libgmp.so.10",
    "usr/lib/" MULTIARCH "/libtomcrypt.so.1",
    "usr/lib/" MULTIARCH "/libtommath.so.1",
};

#define SSH_FILE_COUNT (sizeof(ssh_files) / sizeof(ssh_files[0]))

/* Where `busybox --list-full` may place an applet. */
static const char *const applet_dirs[] = {"bin/", "sbin/", "usr/bin/", "usr/sbin/"};

static int make_dirs(int root_fd, struct mb_error *err)
{
    for (size_t i = 0; i < sizeof(tree_dirs) / sizeof(tree_dirs[0]); i++) {
        /* fchmodat because mkdirat's mode passes through the umask */
        if (mkdirat(root_fd, tree_dirs[i].path, 0700) < 0 ||
            fchmodat(root_fd, tree_dirs[i].path, tree_dirs[i].mode, 0) < 0)
            return mb_error_errno(err, MB_ERR_GENERAL, errno, "create '/%s'", tree_dirs[i].path);
    }
    return 0;
}

static int write_file(int root_fd, const char *path, const char *content, struct mb_error *err)
{
    int fd = openat(root_fd, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int rc;

    if (fd < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "create '/%s'", path);
    rc = mb_fs_write_all(fd, content, strlen(content), err);
    if (rc == 0 && fchmod(fd, 0644) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "chmod '/%s'", path);
    if (close(fd) < 0 && rc == 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "write '/%s'", path);
    return rc < 0 ? mb_error_prefix(err, "write '/%s'", path) : 0;
}

/* Stream the entry's content into a new file `path` of the tree, with `mode` (nothing more). */
static int extract_file(int root_fd, struct archive *a, const char *path, mode_t mode,
                        struct mb_error *err)
{
    int fd = openat(root_fd, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0700);
    int rc = 0;

    if (fd < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "create '/%s'", path);
    if (archive_read_data_into_fd(a, fd) != ARCHIVE_OK)
        rc = mb_error_set(err, MB_ERR_GENERAL, "extract '/%s': %s", path, archive_error_string(a));
    else if (fchmod(fd, mode) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "chmod '/%s'", path);
    if (close(fd) < 0 && rc == 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "write '/%s'", path);
    return rc;
}

struct busybox_target {
    int root_fd;
    bool found;
};

/* mb_deb_each_file callback: stream ./bin/busybox into the tree, then stop. */
static int take_busybox(void *ctx, struct archive *a, struct archive_entry *e, struct mb_error *err)
{
    struct busybox_target *t = ctx;

    if (archive_entry_filetype(e) != AE_IFREG ||
        strcmp(archive_entry_pathname(e), "./bin/busybox") != 0)
        return 0;
    if (extract_file(t->root_fd, a, "bin/busybox", 0755, err) < 0)
        return -1;
    t->found = true;
    return 1;
}

/* Whether the package's `path` is one of ssh_files or a file one of them may link to. */
static bool wanted_for_ssh(const char *path, bool regular)
{
    for (size_t i = 0; i < SSH_FILE_COUNT; i++) {
        size_t len = strlen(ssh_files[i]);

        if (strncmp(path, ssh_files[i], len) == 0 &&
            (path[len] == '\0' || (regular && path[len] == '.' && strchr(path + len, '/') == NULL)))
            return true;
    }
    return false;
}

/*
 * mb_deb_each_file callback: the entries of ssh_files into the tree. A
 * symlink must name a file in its own directory, so that it resolves the
 * same in the tree and in the guest.
 */
static int take_ssh_file(void *ctx, struct archive *a, struct archive_entry *e,
                         struct mb_error *err)
{
    const int *root_fd = ctx;
    const char *path = archive_entry_pathname(e), *target;
    mode_t type = archive_entry_filetype(e);

    if (strncmp(path, "./", 2) != 0 || !wanted_for_ssh(path + 2, type == AE_IFREG))
        return 0;
    path += 2;
    if (type == AE_IFREG)
        return extract_file(*root_fd, a, path, archive_entry_perm(e) & 0755, err);
    target = archive_entry_symlink(e);
    if (type != AE_IFLNK || target == NULL || target[0] == '\0' || strchr(target, '/') != NULL ||
        strcmp(target, "..") == 0)
        return mb_error_set(err, MB_ERR_GENERAL, "'/%s' is neither a file nor a link beside one",
                            path);
    if (symlinkat(target, *root_fd, path) < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "link '/%s'", path);
    return 0;
}

/* Every one of ssh_files a regular file in the tree (through its link), and the loader's link. */
static int check_ssh_files(int root_fd, struct mb_error *err)
{
    struct stat st;

    for (size_t i = 0; i < SSH_FILE_COUNT; i++)
        if (fstatat(root_fd, ssh_files[i], &st, 0) < 0 || !S_ISREG(st.st_mode))
            return mb_error_set(err, MB_ERR_GENERAL, "the packages hold no '/%s'", ssh_files[i]);
    /* binaries name the loader by this absolute path, which is where libc6 links it too */
    if (symlinkat("/lib/" MULTIARCH "/" LOADER, root_fd, LOADER_LINK) < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "link '/%s'", LOADER_LINK);
    return 0;
}

/* Fetch the packages of the ssh server and take its files from them into the tree. */
static int add_ssh_server(const char *cache_dir, int root_fd, struct mb_error *err)
{
    struct mb_deb deb;
    char *path = NULL;
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < sizeof(ssh_packages) / sizeof(ssh_packages[0]); i++) {
        rc = mb_deb_resolve(ssh_packages[i], NULL, &deb, err);
        if (rc == 0)
            rc = mb_deb_fetch(cache_dir, &deb, &path, err);
        if (rc == 0)
            rc = mb_deb_each_file(path, take_ssh_file, &root_fd, err);
        free(path);
        path = NULL;
    }
    if (rc == 0)
        rc = check_ssh_files(root_fd, err);
    return rc < 0 ? mb_error_prefix(err, "add the ssh server") : 0;
}

static bool applet_char(char c)
{
    return isalnum((unsigned char)c) || strchr("._+-[]", c) != NULL;
}

/* Whether line[0..len) is "DIR/NAME", DIR one of applet_dirs and NAME a plain file name. */
static bool is_applet_path(const char *line, size_t len)
{
    for (size_t i = 0; i < sizeof(applet_dirs) / sizeof(applet_dirs[0]); i++) {
        size_t dlen = strlen(applet_dirs[i]);

        if (len <= dlen || strncmp(line, applet_dirs[i], dlen) != 0 || line[dlen] == '.')
            continue;
        for (size_t j = dlen; j < len; j++)
            if (!applet_char(line[j]))
                return false;
        return true;
    }
    return false;
}

/*
 * A symlink to /bin/busybox for every applet the extracted busybox lists,
 * in the directory it names. It is a static binary for the host's arch,
 * so it runs here; it comes from a package apt verified.
 */
static int link_applets(const char *root, int root_fd, struct mb_error *err)
{
    char *busybox = mb_path_join(root, "bin/busybox");
    const char *argv[] = {busybox, "--list-full", NULL};
    struct mb_spawn_result res;
    struct stat st;
    char *next;
    int rc = 0;

    if (busybox == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    rc = rootfs_run(ROOTFS_AS_IS, argv, TOOL_TIMEOUT_MS, &res, err);
    free(busybox);
    if (rc < 0)
        return mb_error_prefix(err, "list busybox applets");
    if (res.truncated)
        rc = mb_error_set(err, MB_ERR_GENERAL, "list busybox applets: too much output");
    for (char *line = res.output; rc == 0 && *line != '\0'; line = next) {
        size_t len = strcspn(line, "\n");

        next = line + len + (line[len] == '\n');
        if (!is_applet_path(line, len))
            continue;
        line[len] = '\0';
        if (symlinkat("/bin/busybox", root_fd, line) < 0 && errno != EEXIST)
            rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "link '/%s'", line);
    }
    mb_spawn_result_free(&res);
    if (rc == 0 && fstatat(root_fd, "bin/sh", &st, AT_SYMLINK_NOFOLLOW) < 0)
        rc = mb_error_set(err, MB_ERR_GENERAL, "busybox lists no 'sh' applet");
    return rc;
}

/* Fill the stage's root tree: directories, busybox and its applets, /etc, the ssh server. */
static int populate(const char *cache_dir, const char *root, const char *deb, struct mb_error *err)
{
    struct busybox_target target = {.found = false};
    int rc;

    if (mkdir(root, 0700) < 0 || chmod(root, 0755) < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "create '%s'", root);
    target.root_fd = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (target.root_fd < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "open '%s'", root);
    rc = make_dirs(target.root_fd, err);
    if (rc == 0)
        rc = mb_deb_each_file(deb, take_busybox, &target, err);
    if (rc == 0 && !target.found)
        rc = mb_error_set(err, MB_ERR_GENERAL, "'%s' holds no ./bin/busybox", deb);
    for (size_t i = 0; rc == 0 && i < sizeof(etc_files) / sizeof(etc_files[0]); i++)
        rc = write_file(target.root_fd, etc_files[i].path, etc_files[i].content, err);
    if (rc == 0)
        rc = link_applets(root, target.root_fd, err);
    if (rc == 0)
        rc = add_ssh_server(cache_dir, target.root_fd, err);
    close(target.root_fd);
    return rc;
}

static int build_in_stage(const char *cache_dir, const char *stage, const char *deb,
                          const char *dest, struct mb_error *err)
{
    char *root = mb_path_join(stage, "root");
    char *raw = mb_path_join(stage, "root.img");
    int rc;

    if (root == NULL || raw == NULL)
        rc = mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    else
        rc = populate(cache_dir, root, deb, err);
    if (rc == 0)
        rc = rootfs_make_ext4(root, raw, TINY_FS_SIZE, ROOTFS_AS_ROOT, err);
    if (rc == 0)
        rc = rootfs_publish_qcow2(raw, dest, err);
    free(root);
    free(raw);
    return rc;
}

int mb_base_make_tiny(const char *cache_dir, const char *dest, struct mb_error *err)
{
    struct mb_deb busybox;
    char *deb = NULL, *stage;
    int rc;

    /* first: it makes <cache>/tmp/, where mb_deb_fetch downloads */
    stage = rootfs_make_stage(cache_dir, "tiny", err);
    if (stage == NULL)
        return mb_error_prefix(err, "make base 'tiny'");
    rc = mb_deb_resolve("busybox-static", NULL, &busybox, err);
    if (rc == 0)
        rc = mb_deb_fetch(cache_dir, &busybox, &deb, err);
    if (rc == 0)
        rc = build_in_stage(cache_dir, stage, deb, dest, err);
    rootfs_remove_stage(stage, ROOTFS_AS_ROOT);
    free(stage);
    free(deb);
    return rc < 0 ? mb_error_prefix(err, "make base 'tiny'") : 0;
}

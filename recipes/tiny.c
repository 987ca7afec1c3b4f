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

/* The root tree's directories, each after its parent. */
static const struct {
    const char *path;
    mode_t mode;
} tree_dirs[] = {
    {"bin", 0755},      {"dev", 0755}, {"etc", 0755},  {"proc", 0555}, {"root", 0700},
    {"sbin", 0755},     {"sys", 0555}, {"tmp", 01777}, {"usr", 0755},  {"usr/bin", 0755},
    {"usr/sbin", 0755}, {"var", 0755}, {"work", 0755},
};

static const struct {
    const char *path;
    const char *content;
} etc_files[] = {
    {"etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"},
    {"etc/group", "root:x:0:\n"},
    {"etc/hostname", "tiny\n"},
};

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

struct busybox_target {
    int root_fd;
    bool found;
};

/* mb_deb_each_file callback: stream ./bin/busybox into the tree, then stop. */
static int take_busybox(void *ctx, struct archive *a, struct archive_entry *e, struct mb_error *err)
{
    struct busybox_target *t = ctx;
    int fd, rc = 0;

    if (archive_entry_filetype(e) != AE_IFREG ||
        strcmp(archive_entry_pathname(e), "./bin/busybox") != 0)
        return 0;
    fd = openat(t->root_fd, "bin/busybox", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                0700);
    if (fd < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "create '/bin/busybox'");
    if (archive_read_data_into_fd(a, fd) != ARCHIVE_OK)
        rc = mb_error_set(err, MB_ERR_GENERAL, "extract busybox: %s", archive_error_string(a));
    else if (fchmod(fd, 0755) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "chmod '/bin/busybox'");
    if (close(fd) < 0 && rc == 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "write '/bin/busybox'");
    t->found = rc == 0;
    return rc < 0 ? -1 : 1;
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

/* Fill the stage's root tree: directories, busybox and its applets, /etc. */
static int populate(const char *root, const char *deb, struct mb_error *err)
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
    close(target.root_fd);
    return rc;
}

static int build_in_stage(const char *stage, const char *deb, const char *dest,
                          struct mb_error *err)
{
    char *root = mb_path_join(stage, "root");
    char *raw = mb_path_join(stage, "root.img");
    int rc;

    if (root == NULL || raw == NULL)
        rc = mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    else
        rc = populate(root, deb, err);
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
        rc = build_in_stage(stage, deb, dest, err);
    rootfs_remove_stage(stage, ROOTFS_AS_ROOT);
    free(stage);
    free(deb);
    return rc < 0 ? mb_error_prefix(err, "make base 'tiny'") : 0;
}

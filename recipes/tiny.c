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
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mbuild/base.h"
#include "mbuild/debpkg.h"
#include "mbuild/fsutil.h"
#include "mbuild/spawn.h"

#define TINY_FS_SIZE    "1G"
#define TOOL_TIMEOUT_MS (2 * 60 * 1000)
#define TOOL_OUTPUT_MAX (256 * 1024)

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

/* Run a helper to completion; *res (when not NULL) keeps its output for the caller to free. */
static int run_tool(const char *const argv[], struct mb_spawn_result *res, struct mb_error *err)
{
    const struct mb_spawn_options opts = {.timeout_ms = TOOL_TIMEOUT_MS,
                                          .max_output = TOOL_OUTPUT_MAX};
    struct mb_spawn_result local;
    struct mb_spawn_result *r = res != NULL ? res : &local;
    int rc = 0, len;

    if (mb_spawn_capture(argv, &opts, r, err) < 0)
        return -1;
    len = (int)(r->output_len < 500 ? r->output_len : 500);
    while (len > 0 && isspace((unsigned char)r->output[len - 1]))
        len--;
    if (r->timed_out)
        rc = mb_error_set(err, MB_ERR_GENERAL, "'%s' timed out", argv[0]);
    else if (r->exit_status == -1)
        rc = mb_error_set(err, MB_ERR_GENERAL, "'%s' killed by signal %d", argv[0], r->term_signal);
    else if (r->exit_status != 0)
        rc = mb_error_set(err, MB_ERR_GENERAL, "'%s' exited with status %d: %.*s", argv[0],
                          r->exit_status, len, r->output);
    if (rc < 0 || res == NULL)
        mb_spawn_result_free(r);
    return rc;
}

/*
 * The absolute path of `name` from PATH or, failing that, /usr/sbin and
 * /sbin, which an ordinary user's PATH often lacks; malloc'ed, or NULL.
 */
static char *find_program(const char *name)
{
    const char *env = getenv("PATH");
    char *dirs, *save = NULL, *found = NULL;

    if (asprintf(&dirs, "%s:/usr/sbin:/sbin", env != NULL ? env : "") < 0)
        return NULL;
    for (char *d = strtok_r(dirs, ":", &save); d != NULL && found == NULL;
         d = strtok_r(NULL, ":", &save)) {
        if (d[0] != '/')
            continue; /* a relative PATH entry depends on where we happen to run */
        found = mb_path_join(d, name);
        if (found != NULL && access(found, X_OK) != 0) {
            free(found);
            found = NULL;
        }
    }
    free(dirs);
    return found;
}

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
    rc = run_tool(argv, &res, err);
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

/* mke2fs -d the tree into a raw image, as uid 0 in a user namespace unless we are root. */
static int make_ext4(const char *root, const char *raw, struct mb_error *err)
{
    char *mke2fs = find_program("mke2fs");
    const char *argv[16];
    size_t n = 0;
    int rc;

    if (mke2fs == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "'mke2fs' not found (install e2fsprogs)");
    if (geteuid() != 0) {
        argv[n++] = "unshare";
        argv[n++] = "--map-root-user";
    }
    argv[n++] = mke2fs;
    argv[n++] = "-q";
    argv[n++] = "-t";
    argv[n++] = "ext4";
    argv[n++] = "-d";
    argv[n++] = root;
    argv[n++] = "-E";
    argv[n++] = "root_owner=0:0";
    argv[n++] = raw;
    argv[n++] = TINY_FS_SIZE;
    argv[n] = NULL;
    rc = run_tool(argv, NULL, err);
    free(mke2fs);
    return rc < 0 ? mb_error_prefix(err, "make the ext4 filesystem") : 0;
}

/* The directory holding `path`, malloc'ed. */
static char *parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL)
        return strdup(".");
    return strndup(path, slash == path ? 1 : (size_t)(slash - path));
}

/* qemu-img convert writes without syncing; the image must be on disk before it is published. */
static int sync_file(const char *path, struct mb_error *err)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    int rc = 0;

    if (fd < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "open '%s'", path);
    if (fchmod(fd, 0644) < 0 || fsync(fd) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "sync '%s'", path);
    close(fd);
    return rc;
}

/* Convert the raw image to a qcow2 in a temp beside `dest`, then rename it over `dest`. */
static int publish_qcow2(const char *raw, const char *dest, struct mb_error *err)
{
    char *tmp = NULL, *dir = NULL;
    const char *argv[] = {"qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, NULL, NULL};
    int fd, rc;

    if (asprintf(&tmp, "%s.tmp-XXXXXX", dest) < 0)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "create a temp file beside '%s'", dest);
        free(tmp);
        return rc;
    }
    close(fd);
    argv[8] = tmp;
    rc = run_tool(argv, NULL, err);
    if (rc == 0)
        rc = sync_file(tmp, err);
    if (rc == 0 && rename(tmp, dest) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "rename to '%s'", dest);
    if (rc == 0 && (dir = parent_dir(dest)) == NULL)
        rc = mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    if (rc == 0)
        rc = mb_fs_fsync_dir(dir, err);
    if (rc < 0)
        unlink(tmp); /* after a successful rename it is gone already */
    free(dir);
    free(tmp);
    return rc < 0 ? mb_error_prefix(err, "write '%s'", dest) : 0;
}

/* A fresh <cache>/tmp/tiny-XXXXXX that everything made in it inherits our own gid from. */
static char *make_stage(const char *cache_dir, struct mb_error *err)
{
    char *tmp = mb_path_join(cache_dir, "tmp");
    char *stage = NULL;

    if (tmp == NULL) {
        mb_error_set(err, MB_ERR_GENERAL, "out of memory");
        return NULL;
    }
    if (mb_fs_mkdir_p(tmp, 0755, err) < 0) {
        free(tmp);
        return NULL;
    }
    if (asprintf(&stage, "%s/tiny-XXXXXX", tmp) < 0) {
        mb_error_set(err, MB_ERR_GENERAL, "out of memory");
        stage = NULL;
    } else if (mkdtemp(stage) == NULL) {
        mb_error_errno(err, MB_ERR_GENERAL, errno, "make a stage in '%s'", tmp);
        free(stage);
        stage = NULL;
    } else if (chown(stage, (uid_t)-1, getegid()) < 0 || chmod(stage, 0700) < 0) {
        /* chmod after chown: a setgid bit inherited from the cache goes too */
        mb_error_errno(err, MB_ERR_GENERAL, errno, "make a stage in '%s'", tmp);
        rmdir(stage);
        free(stage);
        stage = NULL;
    }
    free(tmp);
    return stage;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0; /* remove what can be removed, whatever fails */
}

static void remove_tree(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
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
        rc = make_ext4(root, raw, err);
    if (rc == 0)
        rc = publish_qcow2(raw, dest, err);
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
    stage = make_stage(cache_dir, err);
    if (stage == NULL)
        return mb_error_prefix(err, "make base 'tiny'");
    rc = mb_deb_resolve("busybox-static", NULL, &busybox, err);
    if (rc == 0)
        rc = mb_deb_fetch(cache_dir, &busybox, &deb, err);
    if (rc == 0)
        rc = build_in_stage(stage, deb, dest, err);
    remove_tree(stage);
    free(stage);
    free(deb);
    return rc < 0 ? mb_error_prefix(err, "make base 'tiny'") : 0;
}

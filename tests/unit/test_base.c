/*
 * Base recipes: `tiny` comes out as a standalone qcow2 whose filesystem
 * holds busybox and its applet links, owned by root whoever built it, and
 * a build leaves nothing behind in the cache's temp area, on success or
 * failure; `debian-12` as one with systemd, setuid sudo and the user
 * `dev`. The image is inspected from outside with qemu-img and debugfs.
 *
 * Needs `apt-get download` to work. Debian packages are kept across runs
 * in <build>/test-cache/debs and copied into each test's own cache. The
 * debian-12 build needs mmdebstrap and downloads ~100 MB from Debian's
 * mirror each time (under a minute).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <grp.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mbuild/base.h"
#include "mbuild/debpkg.h"
#include "mbuild/fsutil.h"
#include "mbuild/spawn.h"

#include "helpers.h"

#define GIB         (1024L * 1024 * 1024)
#define NOBODY      65534
#define SHARED_DEBS MB_BUILD_DIR "/test-cache"

static char *work;      /* the test's own directory */
static char *cache_dir; /* work/cache, with a copy of busybox-static's .deb in debs/ */

/* Copy busybox-static's .deb, fetched once into SHARED_DEBS, into `cache`/debs/. */
static void seed_debs(const char *cache)
{
    struct mb_error err = {0};
    struct mb_deb deb;
    char *shared = NULL, *debs = mbt_path(cache, "debs"), *copy;
    char *data;
    size_t len;

    cr_assert_eq(mb_fs_mkdir_p(SHARED_DEBS "/tmp", 0755, &err), 0, "%s", err.msg);
    cr_assert_eq(mb_deb_resolve("busybox-static", NULL, &deb, &err), 0, "%s", err.msg);
    cr_assert_eq(mb_deb_fetch(SHARED_DEBS, &deb, &shared, &err), 0, "%s", err.msg);
    cr_assert_eq(mb_fs_read_file(shared, 64L * 1024 * 1024, &data, &len, &err), 0, "%s", err.msg);
    cr_assert_eq(mb_fs_mkdir_p(debs, 0755, &err), 0, "%s", err.msg);
    copy = mbt_path(debs, strrchr(shared, '/') + 1);
    cr_assert_eq(mb_fs_write_atomic(copy, data, len, &err), 0, "%s", err.msg);
    chmod(copy, 0644);
    free(copy);
    free(data);
    free(debs);
    free(shared);
}

static void setup(void)
{
    work = mbt_tempdir();
    chmod(work, 0755); /* the unprivileged test's child must reach into it */
    cache_dir = mbt_path(work, "cache");
    seed_debs(cache_dir);
}

static void teardown(void)
{
    mbt_rm_rf(work);
    free(cache_dir);
    free(work);
}

TestSuite(base, .init = setup, .fini = teardown, .timeout = 300);

/* debugfs is in /usr/sbin, which an ordinary user's PATH may lack. */
static const char *sbin_tool(const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "/usr/sbin/%s", name);
    return access(buf, X_OK) == 0 ? buf : name;
}

/* Run argv; it must exit 0. Returns its output, malloc'ed. */
static char *run(const char *const argv[])
{
    const struct mb_spawn_options opts = {.timeout_ms = 60000, .max_output = 1 << 20};
    struct mb_spawn_result res;
    struct mb_error err = {0};

    cr_assert_eq(mb_spawn_capture(argv, &opts, &res, &err), 0, "%s", err.msg);
    cr_assert_eq(res.exit_status, 0, "%s: %s", argv[0], res.output);
    return res.output;
}

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;

    cr_assert_not_null(d, "open '%s'", dir);
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

/* Format qcow2, no backing file, `virtual_size` bytes, at most `max_bytes` on disk. */
static void check_qcow2(const char *image, long virtual_size, long max_bytes)
{
    const char *argv[] = {"qemu-img", "info", "--output=json", "-f", "qcow2", image, NULL};
    char *out = run(argv);
    json_error_t jerr;
    json_t *info = json_loads(out, 0, &jerr);
    struct stat st;

    cr_assert_not_null(info, "qemu-img info: %s", jerr.text);
    cr_assert_str_eq(json_string_value(json_object_get(info, "format")), "qcow2");
    cr_assert_null(json_object_get(info, "backing-filename"), "%s", out);
    cr_assert_null(json_object_get(info, "full-backing-filename"), "%s", out);
    cr_assert_eq(json_integer_value(json_object_get(info, "virtual-size")), virtual_size);
    cr_assert_eq(stat(image, &st), 0);
    cr_assert_lt(st.st_size, max_bytes, "the image takes %lld bytes", (long long)st.st_size);
    json_decref(info);
    free(out);
}

struct inode {
    char type[32];
    unsigned mode, uid, gid;
    char link[256]; /* a fast symlink's target */
};

static void parse_field(const char *out, const char *label, const char *fmt, void *value)
{
    const char *p = strstr(out, label);

    cr_assert_not_null(p, "no '%s' in: %s", label, out);
    cr_assert_eq(sscanf(p + strlen(label), fmt, value), 1, "bad '%s' in: %s", label, out);
}

/* debugfs's view of `path` in the raw image. */
static void stat_in_image(const char *raw, const char *path, struct inode *ino)
{
    char tool[64], request[300];
    const char *argv[] = {sbin_tool("debugfs", tool, sizeof(tool)), "-R", request, raw, NULL};
    char *out, *link;

    snprintf(request, sizeof(request), "stat %s", path);
    out = run(argv);
    memset(ino, 0, sizeof(*ino));
    parse_field(out, "Type: ", "%31s", ino->type);
    parse_field(out, "Mode: ", "%o", &ino->mode);
    parse_field(out, "User: ", "%u", &ino->uid);
    parse_field(out, "Group: ", "%u", &ino->gid);
    link = strstr(out, "Fast link dest: \"");
    if (link != NULL)
        sscanf(link + 17, "%255[^\"]", ino->link);
    free(out);
}

static void check_filesystem(const char *image)
{
    char *raw = mbt_path(work, "root.raw");
    const char *argv[] = {"qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw, NULL};
    static const struct {
        const char *path;
        const char *type;
        unsigned mode;
    } want[] = {
        {"/", "directory", 0755},         {"/bin/busybox", "regular", 0755},
        {"/tmp", "directory", 01777},     {"/root", "directory", 0700},
        {"/etc/passwd", "regular", 0644}, {"/work", "directory", 0755},
        {"/usr/sbin", "directory", 0755}, {"/proc", "directory", 0555},
    };
    static const char *const links[] = {"/bin/sh", "/bin/ls", "/sbin/ifconfig", "/usr/bin/env"};
    struct inode ino;

    free(run(argv));
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        stat_in_image(raw, want[i].path, &ino);
        cr_expect_str_eq(ino.type, want[i].type, "%s", want[i].path);
        cr_expect_eq(ino.mode, want[i].mode, "%s: mode %o", want[i].path, ino.mode);
        cr_expect_eq(ino.uid, 0, "%s: uid %u", want[i].path, ino.uid);
        cr_expect_eq(ino.gid, 0, "%s: gid %u", want[i].path, ino.gid);
    }
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
        stat_in_image(raw, links[i], &ino);
        cr_expect_str_eq(ino.type, "symlink", "%s", links[i]);
        cr_expect_str_eq(ino.link, "/bin/busybox", "%s", links[i]);
        cr_expect_eq(ino.uid, 0, "%s: uid %u", links[i], ino.uid);
    }
    free(raw);
}

/* What a finished build leaves: the image and an empty temp area, nothing beside the image. */
static void check_no_leftovers(const char *dest_dir, size_t expected)
{
    char *tmp = mbt_path(cache_dir, "tmp");

    cr_expect_eq(count_entries(tmp), 0, "files left in '%s'", tmp);
    cr_expect_eq(count_entries(dest_dir), expected, "files left in '%s'", dest_dir);
    free(tmp);
}

Test(base, tiny_is_a_standalone_qcow2_owned_by_root)
{
    struct mb_error err = {0};
    char *out_dir = mbt_path(work, "out");
    char *dest = mbt_path(out_dir, "tiny.qcow2");

    cr_assert_eq(mkdir(out_dir, 0755), 0);
    cr_assert_eq(mb_base_make_tiny(cache_dir, dest, &err), 0, "%s", err.msg);
    check_qcow2(dest, GIB, 32L * 1024 * 1024);
    check_filesystem(dest);
    check_no_leftovers(out_dir, 1);
    free(dest);
    free(out_dir);
}

/* Run as root (as CI does), build as `nobody`: the user-namespace path must give the same owners.
 */
Test(base, tiny_built_by_an_ordinary_user_is_owned_by_root)
{
    char *out_dir = mbt_path(work, "out");
    char *dest = mbt_path(out_dir, "tiny.qcow2");
    char *debs = mbt_path(cache_dir, "debs");
    int status;
    pid_t pid;

    if (geteuid() != 0)
        cr_skip_test("not root: the other test already builds as an ordinary user");
    cr_assert_eq(mkdir(out_dir, 0755), 0);
    cr_assert_eq(chown(out_dir, NOBODY, NOBODY), 0);
    cr_assert_eq(chown(cache_dir, NOBODY, NOBODY), 0);
    /* tiny also needs Dropbear's packages, which nobody fetches into the cache's debs/. */
    cr_assert_eq(chown(debs, NOBODY, NOBODY), 0);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        struct mb_error err = {0};

        if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
            _exit(2);
        if (mb_base_make_tiny(cache_dir, dest, &err) < 0) {
            fprintf(stderr, "%s\n", err.msg);
            _exit(1);
        }
        _exit(0);
    }
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the unprivileged build failed");
    check_qcow2(dest, GIB, 32L * 1024 * 1024);
    check_filesystem(dest);
    check_no_leftovers(out_dir, 1);
    free(debs);
    free(dest);
    free(out_dir);
}

Test(base, tiny_failure_leaves_nothing_behind)
{
    struct mb_error err = {0};
    char *dest = mbt_path(work, "missing/tiny.qcow2");
    char *missing = mbt_path(work, "missing");

    cr_assert_eq(mb_base_make_tiny(cache_dir, dest, &err), -1);
    cr_expect_eq(err.code, MB_ERR_GENERAL);
    cr_expect_not_null(strstr(err.msg, "make base 'tiny'"), "%s", err.msg);
    cr_expect_not_null(strstr(err.msg, dest), "%s", err.msg);
    cr_expect_neq(access(missing, F_OK), 0);
    check_no_leftovers(work, 1); /* only the cache */
    free(missing);
    free(dest);
}

/* debugfs's output for `request` on the raw image. */
static char *debugfs(const char *raw, const char *request)
{
    char tool[64];
    const char *argv[] = {sbin_tool("debugfs", tool, sizeof(tool)), "-R", request, raw, NULL};

    return run(argv);
}

/* Names in directory `dir` of the raw image other than . and .., one per line. */
static size_t count_in_image(const char *raw, const char *dir)
{
    char request[300];
    char *out, *save = NULL;
    size_t n = 0;

    snprintf(request, sizeof(request), "ls -p %s", dir);
    out = debugfs(raw, request);
    /* ls -p prints /inode/mode/uid/gid/name/size/ per entry */
    for (char *line = strtok_r(out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char name[256];

        if (sscanf(line, "/%*u/%*o/%*u/%*u/%255[^/]/", name) == 1 && strcmp(name, ".") != 0 &&
            strcmp(name, "..") != 0)
            n++;
    }
    free(out);
    return n;
}

static void expect_content(const char *raw, const char *path, const char *needle)
{
    char request[300];
    char *out;

    snprintf(request, sizeof(request), "cat %s", path);
    out = debugfs(raw, request);
    cr_expect_not_null(strstr(out, needle), "%s lacks '%s': %s", path, needle, out);
    free(out);
}

static void check_debian_filesystem(const char *image)
{
    char *raw = mbt_path(work, "root.raw");
    const char *argv[] = {"qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw, NULL};
    static const struct {
        const char *path;
        const char *type;
        unsigned mode, uid, gid;
    } want[] = {
        {"/", "directory", 0755, 0, 0},
        {"/usr/bin/sudo", "regular", 04755, 0, 0},
        {"/etc/sudoers.d/dev", "regular", 0440, 0, 0},
        {"/etc/shadow", "regular", 0640, 0, 42}, /* group shadow, kept from Debian */
        {"/home/dev", "directory", 0755, 1000, 1000},
        {"/home/dev/.bashrc", "regular", 0644, 1000, 1000},
        {"/dev", "directory", 0755, 0, 0},
        {"/tmp", "directory", 01777, 0, 0},
    };
    struct inode ino;

    free(run(argv));
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        stat_in_image(raw, want[i].path, &ino);
        cr_expect_str_eq(ino.type, want[i].type, "%s", want[i].path);
        cr_expect_eq(ino.mode, want[i].mode, "%s: mode %o", want[i].path, ino.mode);
        cr_expect_eq(ino.uid, want[i].uid, "%s: uid %u", want[i].path, ino.uid);
        cr_expect_eq(ino.gid, want[i].gid, "%s: gid %u", want[i].path, ino.gid);
    }
    stat_in_image(raw, "/sbin/init", &ino); /* /sbin is a link to usr/sbin; debugfs follows it */
    cr_expect_str_eq(ino.type, "symlink");
    cr_expect_str_eq(ino.link, "/lib/systemd/systemd");
    stat_in_image(raw, "/lib/systemd/systemd", &ino);
    cr_expect_str_eq(ino.type, "regular");
    cr_expect_eq(count_in_image(raw, "/dev"), 0, "/dev is not empty");
    expect_content(raw, "/etc/sudoers.d/dev", "dev ALL=(ALL:ALL) NOPASSWD: ALL\n");
    expect_content(raw, "/etc/passwd", "\ndev:x:1000:1000:dev:/home/dev:/bin/bash\n");
    expect_content(raw, "/etc/group", "\ndev:x:1000:\n");
    expect_content(raw, "/etc/hostname", "debian\n");
    expect_content(raw, "/etc/hosts", "127.0.1.1\tdebian\n");
    free(raw);
}

Test(base, debian12_has_systemd_setuid_sudo_and_user_dev, .timeout = 600)
{
    struct mb_error err = {0};
    char *out_dir = mbt_path(work, "out");
    char *dest = mbt_path(out_dir, "debian-12.qcow2");

    cr_assert_eq(mkdir(out_dir, 0755), 0);
    cr_assert_eq(mb_base_make_debian12(cache_dir, dest, &err), 0, "%s", err.msg);
    check_qcow2(dest, 20 * GIB, 512L * 1024 * 1024);
    check_debian_filesystem(dest);
    check_no_leftovers(out_dir, 1);
    free(dest);
    free(out_dir);
}

/* `nobody` has no subordinate ids: the build must say what is missing, before any download. */
Test(base, debian12_without_subordinate_ids_fails_at_once)
{
    char *out_dir = mbt_path(work, "out");
    char *dest = mbt_path(out_dir, "debian-12.qcow2");
    char msg[MB_ERROR_MAX + 1];
    ssize_t len;
    int status, fds[2];
    pid_t pid;

    if (geteuid() != 0)
        cr_skip_test("not root: cannot build as 'nobody'");
    cr_assert_eq(mkdir(out_dir, 0755), 0);
    cr_assert_eq(chown(out_dir, NOBODY, NOBODY), 0);
    cr_assert_eq(chown(cache_dir, NOBODY, NOBODY), 0);
    cr_assert_eq(pipe(fds), 0);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        struct mb_error err = {0};

        close(fds[0]);
        if (setgroups(0, NULL) < 0 || setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
            _exit(2);
        if (mb_base_make_debian12(cache_dir, dest, &err) == 0)
            _exit(0);
        _exit(write(fds[1], err.msg, strlen(err.msg)) > 0 ? 1 : 2);
    }
    close(fds[1]);
    len = read(fds[0], msg, sizeof(msg) - 1);
    close(fds[0]);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "the build did not fail as expected");
    cr_assert_gt(len, 0);
    msg[len] = '\0';
    cr_expect_not_null(strstr(msg, "make base 'debian-12'"), "%s", msg);
    cr_expect_not_null(strstr(msg, "/etc/subuid"), "%s", msg);
    cr_expect_not_null(strstr(msg, "uidmap"), "%s", msg);
    cr_expect_eq(count_entries(out_dir), 0, "files left in '%s'", out_dir);
    free(dest);
    free(out_dir);
}

/*
 * The `debian-12` base image: Debian bookworm with systemd, udev,
 * openssh-server and sudo, and a user `dev` who may sudo.
 *
 * mmdebstrap writes the root filesystem as a tar (--mode=root as root,
 * else --mode=unshare) from Debian's mirror, its default: deb.debian.org
 * with bookworm-updates and the security archive. What this recipe
 * changes is written here with libarchive into a second, small tar: the
 * account files with `dev` appended, its home (a copy of /etc/skel) and
 * sudoers entry, /etc/hostname and /etc/hosts, an /etc/fstab that mounts
 * nothing and an empty /etc/resolv.conf (mmdebstrap leaves the host's
 * hostname and resolver there). Both tars are unpacked into the stage
 * without ./dev's contents (devtmpfs provides them, and a user namespace
 * cannot make device nodes), then mke2fs -d and qemu-img convert finish
 * as for `tiny`.
 *
 * The tree holds files of many owners (root, _apt, dev, ...). An ordinary
 * user unpacks it, makes the filesystem from it and removes it inside
 * `unshare --map-auto --map-root-user`, where their subordinate ids stand
 * for the image's; mmdebstrap --mode=unshare needs the same. GNU tar runs
 * with --numeric-owner: the names in the tar are the image's, not the
 * host's. The posix ACL on /var/log/journal is not carried over;
 * systemd-tmpfiles sets it again at every boot.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mbuild/base.h"
#include "mbuild/fsutil.h"
#include "rootfs.h"

#define SUITE      "bookworm"
#define PACKAGES   "systemd-sysv,udev,openssh-server,sudo,ca-certificates,iproute2"
#define FS_SIZE    (20LL * 1024 * 1024 * 1024)
#define USER_ID    1000
#define USER_ID_S  "1000"
#define SKEL_MAX   32
#define SMALL_MAX  (1024 * 1024) /* an account or skeleton file */
#define FETCH_MS   (30 * 60 * 1000)
#define UNPACK_MS  (10 * 60 * 1000)
#define PROBE_MS   (30 * 1000)
#define READ_BLOCK (64 * 1024)

/* Account files and the line each gets for `dev`, in the order they are written. */
static const struct {
    const char *path;
    const char *line;
} accounts[] = {
    {"./etc/passwd", "dev:x:" USER_ID_S ":" USER_ID_S ":dev:/home/dev:/bin/bash\n"},
    {"./etc/group", "dev:x:" USER_ID_S ":\n"},
    {"./etc/shadow", "dev:*::0:99999:7:::\n"}, /* no password: ssh keys, then sudo */
    {"./etc/gshadow", "dev:!::\n"},
};
#define N_ACCOUNTS (sizeof(accounts) / sizeof(accounts[0]))

#define HOSTNAME "debian"

/* Root's files this recipe writes, replacing mmdebstrap's where they exist. */
static const struct {
    const char *path;
    mode_t mode;
    const char *content;
} etc_files[] = {
    {"./etc/hostname", 0644, HOSTNAME "\n"},
    /* sudo looks its host up; without nss-myhostname only this file answers */
    {"./etc/hosts", 0644,
     "127.0.0.1\tlocalhost\n127.0.1.1\t" HOSTNAME "\n\n"
     "::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\n"
     "ff02::2\tip6-allrouters\n"},
    {"./etc/fstab", 0644,
     "# The root filesystem is mounted before init runs, and nothing else is:\n"
     "# /dev, /proc, /sys and /run are systemd's.\n"},
    /* a file, so a step VM can bind its resolver over it */
    {"./etc/resolv.conf", 0644, ""},
    {"./etc/sudoers.d/dev", 0440, "dev ALL=(ALL:ALL) NOPASSWD: ALL\n"},
};

/* A small file taken from mmdebstrap's tar: its header and content. */
struct taken {
    struct archive_entry *entry;
    char *data;
    size_t len;
};

struct base_files {
    struct taken accounts[N_ACCOUNTS];
    struct taken skel[SKEL_MAX];
    size_t n_skel;
};

static void free_taken(struct taken *t)
{
    if (t->entry != NULL)
        archive_entry_free(t->entry);
    free(t->data);
    memset(t, 0, sizeof(*t));
}

static void free_base_files(struct base_files *bf)
{
    for (size_t i = 0; i < N_ACCOUNTS; i++)
        free_taken(&bf->accounts[i]);
    for (size_t i = 0; i < bf->n_skel; i++)
        free_taken(&bf->skel[i]);
}

/*
 * As an ordinary user, check at once that a user namespace with our
 * subordinate ids can be made, rather than after a minute of mmdebstrap.
 */
static int check_subids(struct mb_error *err)
{
    const char *argv[] = {"true", NULL};

    if (geteuid() == 0)
        return 0;
    if (rootfs_run(ROOTFS_AS_ROOT_WITH_SUBIDS, argv, PROBE_MS, NULL, err) < 0)
        return mb_error_prefix(err, "map subordinate ids (an ordinary user needs newuidmap and "
                                    "newgidmap from 'uidmap', and ranges in /etc/subuid and "
                                    "/etc/subgid)");
    return 0;
}

static int bootstrap(const char *tar, struct mb_error *err)
{
    char *mmdebstrap = rootfs_find_program("mmdebstrap");
    const char *argv[] = {
        mmdebstrap,
        "--quiet",
        geteuid() == 0 ? "--mode=root" : "--mode=unshare",
        "--variant=minbase",
        "--include=" PACKAGES,
        SUITE,
        tar,
        NULL,
    };
    int rc;

    if (mmdebstrap == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "'mmdebstrap' not found (install mmdebstrap)");
    rc = rootfs_run(ROOTFS_AS_IS, argv, FETCH_MS, NULL, err);
    free(mmdebstrap);
    return rc < 0 ? mb_error_prefix(err, "bootstrap Debian " SUITE) : 0;
}

static int read_data(struct archive *a, struct archive_entry *e, struct taken *t,
                     struct mb_error *err)
{
    la_int64_t size = archive_entry_size(e);
    const char *path = archive_entry_pathname(e);

    if (size < 0 || size > SMALL_MAX)
        return mb_error_set(err, MB_ERR_GENERAL, "'%s' is too large", path);
    t->data = malloc((size_t)size + 1);
    t->entry = archive_entry_clone(e);
    if (t->data == NULL || t->entry == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    if (archive_read_data(a, t->data, (size_t)size) != size)
        return mb_error_set(err, MB_ERR_GENERAL, "read '%s': %s", path, archive_error_string(a));
    t->len = (size_t)size;
    t->data[t->len] = '\0';
    return 0;
}

/* Keep an account file or a file directly in /etc/skel; skip everything else. */
static int take_entry(struct archive *a, struct archive_entry *e, struct base_files *bf,
                      struct mb_error *err)
{
    const char *path = archive_entry_pathname(e);
    const char *skel = "./etc/skel/";

    if (path == NULL || archive_entry_filetype(e) != AE_IFREG)
        return 0;
    for (size_t i = 0; i < N_ACCOUNTS; i++)
        if (strcmp(path, accounts[i].path) == 0 && bf->accounts[i].entry == NULL)
            return read_data(a, e, &bf->accounts[i], err);
    if (strncmp(path, skel, strlen(skel)) != 0 || strchr(path + strlen(skel), '/') != NULL)
        return 0;
    if (bf->n_skel == SKEL_MAX)
        return mb_error_set(err, MB_ERR_GENERAL, "more than %d files in /etc/skel", SKEL_MAX);
    return read_data(a, e, &bf->skel[bf->n_skel++], err);
}

/* Read the account and skeleton files out of mmdebstrap's tar. */
static int read_base_files(const char *tar, struct base_files *bf, struct mb_error *err)
{
    struct archive *a = archive_read_new();
    struct archive_entry *e;
    int rc = 0, r = ARCHIVE_FATAL;

    if (a == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    archive_read_support_format_tar(a);
    if (archive_read_open_filename(a, tar, READ_BLOCK) != ARCHIVE_OK)
        rc = mb_error_set(err, MB_ERR_GENERAL, "%s", archive_error_string(a));
    /* ARCHIVE_WARN: a name not in our locale's charset (a CA certificate's); never one we want */
    while (rc == 0 && ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK || r == ARCHIVE_WARN))
        rc = take_entry(a, e, bf, err);
    if (rc == 0 && r != ARCHIVE_EOF)
        rc = mb_error_set(err, MB_ERR_GENERAL, "%s", archive_error_string(a));
    archive_read_free(a);
    for (size_t i = 0; rc == 0 && i < N_ACCOUNTS; i++)
        if (bf->accounts[i].entry == NULL)
            rc = mb_error_set(err, MB_ERR_GENERAL, "no '%s'", accounts[i].path + 1);
    return rc < 0 ? mb_error_prefix(err, "read '%s'", tar) : 0;
}

/* Whether a line of the colon-separated `text` names `name` or, in its third field, `id`. */
static bool has_account(const char *text, const char *name, const char *id)
{
    size_t nlen = strlen(name), idlen = strlen(id);

    for (const char *line = text; *line != '\0'; line += strcspn(line, "\n") + 1) {
        const char *f = line;

        if (strncmp(f, name, nlen) == 0 && f[nlen] == ':')
            return true;
        for (int field = 0; field < 2 && f != NULL; field++) {
            f = strpbrk(f, ":\n");
            f = f != NULL && *f == ':' ? f + 1 : NULL;
        }
        if (f != NULL && strncmp(f, id, idlen) == 0 && (f[idlen] == ':' || f[idlen] == '\n'))
            return true;
        if (line[strcspn(line, "\n")] == '\0')
            break;
    }
    return false;
}

static int add_entry(struct archive *w, struct archive_entry *e, const char *data, size_t len,
                     struct mb_error *err)
{
    if (archive_entry_filetype(e) == AE_IFREG)
        archive_entry_set_size(e, (la_int64_t)len);
    if (archive_write_header(w, e) != ARCHIVE_OK ||
        (len > 0 && archive_write_data(w, data, len) != (la_ssize_t)len))
        return mb_error_set(err, MB_ERR_GENERAL, "add '%s': %s", archive_entry_pathname(e),
                            archive_error_string(w));
    return 0;
}

static int add_new(struct archive *w, const char *path, mode_t type_mode, int64_t id,
                   const char *data, struct mb_error *err)
{
    struct archive_entry *e = archive_entry_new();
    int rc;

    if (e == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    archive_entry_set_pathname(e, path);
    archive_entry_set_mode(e, type_mode);
    archive_entry_set_uid(e, id);
    archive_entry_set_gid(e, id);
    archive_entry_set_mtime(e, time(NULL), 0);
    rc = add_entry(w, e, data, data != NULL ? strlen(data) : 0, err);
    archive_entry_free(e);
    return rc;
}

/* An account file as mmdebstrap made it (same owner and mode), with dev's line appended. */
static int add_account(struct archive *w, const struct taken *t, const char *line,
                       struct mb_error *err)
{
    bool newline = t->len > 0 && t->data[t->len - 1] != '\n';
    char *text;
    int rc, len;

    len = asprintf(&text, "%s%s%s", t->data, newline ? "\n" : "", line);
    if (len < 0)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    rc = add_entry(w, t->entry, text, (size_t)len, err);
    free(text);
    return rc;
}

/* /home/dev with a copy of /etc/skel, all dev's. */
static int add_home(struct archive *w, const struct base_files *bf, struct mb_error *err)
{
    int rc = add_new(w, "./home/dev/", AE_IFDIR | 0755, USER_ID, NULL, err);

    for (size_t i = 0; rc == 0 && i < bf->n_skel; i++) {
        const struct taken *t = &bf->skel[i];
        const char *name = strrchr(archive_entry_pathname(t->entry), '/') + 1;
        struct archive_entry *e = archive_entry_new();
        char *path = NULL;

        if (e == NULL || asprintf(&path, "./home/dev/%s", name) < 0) {
            rc = mb_error_set(err, MB_ERR_GENERAL, "out of memory");
            path = NULL;
        } else {
            archive_entry_set_pathname(e, path);
            archive_entry_set_mode(e, AE_IFREG | (archive_entry_perm(t->entry) & 0777));
            archive_entry_set_uid(e, USER_ID);
            archive_entry_set_gid(e, USER_ID);
            archive_entry_set_mtime(e, archive_entry_mtime(t->entry), 0);
            rc = add_entry(w, e, t->data, t->len, err);
        }
        free(path);
        if (e != NULL)
            archive_entry_free(e);
    }
    return rc;
}

static int write_entries(struct archive *w, const struct base_files *bf, struct mb_error *err)
{
    int rc = 0;

    for (size_t i = 0; rc == 0 && i < N_ACCOUNTS; i++)
        rc = add_account(w, &bf->accounts[i], accounts[i].line, err);
    for (size_t i = 0; rc == 0 && i < sizeof(etc_files) / sizeof(etc_files[0]); i++)
        rc = add_new(w, etc_files[i].path, AE_IFREG | etc_files[i].mode, 0, etc_files[i].content,
                     err);
    if (rc == 0)
        rc = add_home(w, bf, err);
    return rc;
}

/* The tar of what this recipe adds to and changes in mmdebstrap's tree. */
static int write_changes(const char *path, const struct base_files *bf, struct mb_error *err)
{
    struct archive *w = archive_write_new();
    int rc = 0;

    if (w == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    if (archive_write_set_format_pax_restricted(w) != ARCHIVE_OK ||
        archive_write_open_filename(w, path) != ARCHIVE_OK)
        rc = mb_error_set(err, MB_ERR_GENERAL, "%s", archive_error_string(w));
    if (rc == 0)
        rc = write_entries(w, bf, err);
    if (rc == 0 && archive_write_close(w) != ARCHIVE_OK)
        rc = mb_error_set(err, MB_ERR_GENERAL, "%s", archive_error_string(w));
    archive_write_free(w);
    return rc < 0 ? mb_error_prefix(err, "write '%s'", path) : 0;
}

static int make_changes(const char *base_tar, const char *changes_tar, struct mb_error *err)
{
    struct base_files bf = {0};
    int rc = read_base_files(base_tar, &bf, err);

    if (rc == 0 && (has_account(bf.accounts[0].data, "dev", USER_ID_S) ||
                    has_account(bf.accounts[1].data, "dev", USER_ID_S)))
        rc = mb_error_set(err, MB_ERR_GENERAL,
                          "the root filesystem has a 'dev' or id " USER_ID_S " already");
    if (rc == 0)
        rc = write_changes(changes_tar, &bf, err);
    free_base_files(&bf);
    return rc;
}

/*
 * Unpack `tar` into `root` as the image's root, keeping owners and modes,
 * never ./dev's content (devtmpfs provides it) and never the ssh host keys
 * openssh-server made during mmdebstrap: every machine from the image
 * would share them. A machine's own host key arrives at boot (fw_cfg).
 */
static int unpack(const char *tar, const char *root, struct mb_error *err)
{
    const char *argv[] = {"tar",
                          "-x",
                          "--numeric-owner",
                          "--same-owner",
                          "--same-permissions",
                          "--anchored",
                          "--exclude=./dev/?*",
                          "--exclude=./etc/ssh/ssh_host_*",
                          "-f",
                          tar,
                          "-C",
                          root,
                          NULL};

    if (rootfs_run(ROOTFS_AS_ROOT_WITH_SUBIDS, argv, UNPACK_MS, NULL, err) < 0)
        return mb_error_prefix(err, "unpack '%s'", tar);
    return 0;
}

static int build_in_stage(const char *stage, const char *dest, struct mb_error *err)
{
    char *base = mb_path_join(stage, "base.tar"), *changes = mb_path_join(stage, "changes.tar");
    char *root = mb_path_join(stage, "root"), *raw = mb_path_join(stage, "root.img");
    int rc = 0;

    if (base == NULL || changes == NULL || root == NULL || raw == NULL)
        rc = mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    if (rc == 0)
        rc = bootstrap(base, err);
    if (rc == 0)
        rc = make_changes(base, changes, err);
    /* the unpacked tree becomes the namespace root's: ours, seen from outside */
    if (rc == 0 && (mkdir(root, 0700) < 0 || chmod(root, 0755) < 0))
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "create '%s'", root);
    if (rc == 0)
        rc = unpack(base, root, err);
    if (rc == 0)
        unlink(base); /* 250 MB less in the temp area from here on */
    if (rc == 0)
        rc = unpack(changes, root, err);
    if (rc == 0)
        rc = rootfs_make_ext4(root, raw, FS_SIZE, ROOTFS_AS_ROOT_WITH_SUBIDS, err);
    if (rc == 0)
        rc = rootfs_publish_qcow2(raw, dest, err);
    free(base);
    free(changes);
    free(root);
    free(raw);
    return rc;
}

int mb_base_make_debian12(const char *cache_dir, const char *dest, struct mb_error *err)
{
    char *stage;
    int rc;

    if (check_subids(err) < 0)
        return mb_error_prefix(err, "make base 'debian-12'");
    stage = rootfs_make_stage(cache_dir, "debian-12", err);
    if (stage == NULL)
        return mb_error_prefix(err, "make base 'debian-12'");
    rc = build_in_stage(stage, dest, err);
    rootfs_remove_stage(stage, ROOTFS_AS_ROOT_WITH_SUBIDS);
    free(stage);
    return rc < 0 ? mb_error_prefix(err, "make base 'debian-12'") : 0;
}

/*
 * The steps every base recipe shares, from a root tree in a stage to the
 * published qcow2 (see rootfs.h).
 *
 * mke2fs -d copies each file's owner from the host, so the tree is owned
 * as the image's files must be: by root, or, for an ordinary user, by
 * themselves seen from a user namespace where they are uid 0. A tree with
 * other owners (a Debian root filesystem: _apt, messagebus, the image's
 * own users) needs those ids mapped too, from the user's subordinate
 * range, and only inside that namespace can the user write or delete
 * those files.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mbuild/clock.h"
#include "mbuild/cancel.h"
#include "mbuild/fsutil.h"
#include "rootfs.h"

#define OUTPUT_KEEP     (256 * 1024)
#define ERROR_QUOTE_MAX 500
#define POLL_MS         200
#define LONG_TIMEOUT_MS (10 * 60 * 1000)
#define STOP_GRACE_MS   (10 * 1000)

/* Append buf[0..n) to the output kept in r, dropping its oldest bytes past OUTPUT_KEEP. */
static void keep_tail(struct mb_spawn_result *r, const char *buf, size_t n)
{
    if (r->output_len + n > OUTPUT_KEEP) {
        size_t drop = r->output_len + n - OUTPUT_KEEP;

        if (drop >= r->output_len) {
            buf += drop - r->output_len;
            n -= drop - r->output_len;
            r->output_len = 0;
        } else {
            memmove(r->output, r->output + drop, r->output_len - drop);
            r->output_len -= drop;
        }
        r->truncated = true;
    }
    memcpy(r->output + r->output_len, buf, n);
    r->output_len += n;
}

enum wait_end { WAIT_EOF, WAIT_TIMEOUT, WAIT_CANCELLED };

/* Read the child's output until it closes it, timeout_ms pass or (if `cancellable`) a cancel. */
static enum wait_end collect(int fd, int timeout_ms, bool cancellable, struct mb_spawn_result *r)
{
    long long deadline = mb_clock_ms() + timeout_ms;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    char buf[8192];

    for (;;) {
        long long left = deadline - mb_clock_ms();
        ssize_t n;
        int ready;

        if (cancellable && mb_cancel_requested())
            return WAIT_CANCELLED;
        if (left <= 0)
            return WAIT_TIMEOUT;
        ready = poll(&pfd, 1, left < POLL_MS ? (int)left : POLL_MS);
        if (ready < 0 && errno != EINTR)
            return WAIT_EOF;
        if (ready <= 0)
            continue;
        n = read(fd, buf, sizeof(buf));
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return WAIT_EOF;
        keep_tail(r, buf, (size_t)n);
    }
}

/*
 * Stop the child's process group: SIGTERM first, because mmdebstrap then
 * removes its chroot under $TMPDIR, which in --mode=unshare belongs to our
 * subordinate ids and which we could not remove ourselves; SIGKILL for
 * whatever is left after the grace period.
 */
static void stop(struct mb_child *child, struct mb_spawn_result *r)
{
    kill(-child->pid, SIGTERM);
    collect(child->out_fd, STOP_GRACE_MS, false, r);
    mb_child_kill(child);
}

/* The last line or so of the output, for an error message: *start and its length. */
static int output_end(const struct mb_spawn_result *r, const char **start)
{
    size_t len = r->output_len, from = len > ERROR_QUOTE_MAX ? len - ERROR_QUOTE_MAX : 0;

    while (len > from && isspace((unsigned char)r->output[len - 1]))
        len--;
    if (from > 0) {
        const char *nl = memchr(r->output + from, '\n', len - from);

        if (nl != NULL)
            from = (size_t)(nl + 1 - r->output);
    }
    *start = r->output + from;
    return (int)(len - from);
}

static int check_result(const char *name, const struct mb_spawn_result *r, struct mb_error *err)
{
    const char *tail;
    int len = output_end(r, &tail);

    if (r->timed_out)
        return mb_error_set(err, MB_ERR_GENERAL, "'%s' timed out", name);
    if (r->exit_status == -1)
        return mb_error_set(err, MB_ERR_GENERAL, "'%s' killed by signal %d", name, r->term_signal);
    if (r->exit_status != 0)
        return mb_error_set(err, MB_ERR_GENERAL, "'%s' exited with status %d: %.*s", name,
                            r->exit_status, len, tail);
    return 0;
}

/* argv behind the `unshare` options that make us uid 0 as `user` asks; malloc'ed. */
static const char **as_user(enum rootfs_user user, const char *const argv[])
{
    static const char *const own[] = {"unshare", "--map-root-user", NULL};
    static const char *const subids[] = {"unshare", "--map-auto", "--map-root-user", NULL};
    const char *const *prefix = user == ROOTFS_AS_ROOT ? own : subids;
    size_t n = 0, p = 0, argc = 0;
    const char **full;

    if (user == ROOTFS_AS_IS || geteuid() == 0)
        prefix = own + 2; /* empty */
    while (prefix[p] != NULL)
        p++;
    while (argv[argc] != NULL)
        argc++;
    full = calloc(p + argc + 1, sizeof(*full));
    if (full == NULL)
        return NULL;
    for (size_t i = 0; i < p; i++)
        full[n++] = prefix[i];
    for (size_t i = 0; i < argc; i++)
        full[n++] = argv[i];
    return full;
}

static int run(enum rootfs_user user, const char *const argv[], int timeout_ms, bool cancellable,
               struct mb_spawn_result *res, struct mb_error *err)
{
    struct mb_spawn_result local;
    struct mb_spawn_result *r = res != NULL ? res : &local;
    const char **full = as_user(user, argv);
    struct mb_child child;
    enum wait_end end;
    int rc;

    memset(r, 0, sizeof(*r));
    r->output = malloc(OUTPUT_KEEP + 1);
    if (full == NULL || r->output == NULL) {
        free(full);
        mb_spawn_result_free(r);
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    }
    rc = mb_child_start(full, NULL, true, -1, &child, err);
    free(full);
    if (rc < 0) {
        mb_spawn_result_free(r);
        return -1;
    }
    end = collect(child.out_fd, timeout_ms, cancellable, r);
    if (end != WAIT_EOF)
        stop(&child, r);
    mb_child_wait(&child, r);
    r->timed_out = end == WAIT_TIMEOUT;
    r->output[r->output_len] = '\0';
    if (end == WAIT_CANCELLED)
        rc = mb_error_set(err, MB_ERR_INTERRUPTED, "interrupted");
    else
        rc = check_result(argv[0], r, err);
    if (rc < 0 || res == NULL)
        mb_spawn_result_free(r);
    return rc;
}

int rootfs_run(enum rootfs_user user, const char *const argv[], int timeout_ms,
               struct mb_spawn_result *res, struct mb_error *err)
{
    return run(user, argv, timeout_ms, true, res, err);
}

char *rootfs_find_program(const char *name)
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

char *rootfs_make_stage(const char *cache_dir, const char *recipe, struct mb_error *err)
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
    if (asprintf(&stage, "%s/%s-XXXXXX", tmp, recipe) < 0) {
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

void rootfs_remove_stage(const char *stage, enum rootfs_user user)
{
    struct mb_error ignored;

    if (user == ROOTFS_AS_ROOT_WITH_SUBIDS && geteuid() != 0) {
        const char *argv[] = {"rm", "-rf", "--one-file-system", "--", stage, NULL};

        /* not cancellable: this is the cleanup after a cancellation */
        run(user, argv, LONG_TIMEOUT_MS, false, NULL, &ignored);
    }
    mb_fs_remove_tree(stage, &ignored);
}

static int make_sparse_file(const char *path, off_t size, struct mb_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    int rc = 0;

    if (fd < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "create '%s'", path);
    if (ftruncate(fd, size) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "size '%s'", path);
    close(fd);
    return rc;
}

int rootfs_make_ext4(const char *root, const char *raw, off_t size, enum rootfs_user user,
                     struct mb_error *err)
{
    char *mke2fs = rootfs_find_program("mke2fs");
    int rc;

    if (mke2fs == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "'mke2fs' not found (install e2fsprogs)");
    /*
     * On an existing file mke2fs punches it out (discard) and, knowing it
     * reads back as zeros, marks the inode tables zeroed without writing
     * them; a file it creates itself gets them left for the guest's kernel.
     */
    rc = make_sparse_file(raw, size, err);
    if (rc == 0) {
        const char *argv[] = {mke2fs,           "-q", "-t", "ext4", "-d", root, "-E",
                              "root_owner=0:0", raw,  NULL};

        rc = rootfs_run(user, argv, LONG_TIMEOUT_MS, NULL, err);
    }
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

int rootfs_publish_qcow2(const char *raw, const char *dest, struct mb_error *err)
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
    rc = rootfs_run(ROOTFS_AS_IS, argv, LONG_TIMEOUT_MS, NULL, err);
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

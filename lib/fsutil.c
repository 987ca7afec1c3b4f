/*
 * Small, careful file-system primitives. Every descriptor is opened
 * close-on-exec, since the library spawns QEMU and friends.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/openat2.h>

#include "mbuild/cancel.h"
#include "mbuild/fsutil.h"

int mb_fs_write_all(int fd, const void *buf, size_t len, struct mb_error *err)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return mb_error_errno(err, MB_ERR_GENERAL, errno, "write");
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

ssize_t mb_fs_read_all(int fd, void *buf, size_t len, struct mb_error *err)
{
    char *p = buf;
    size_t done = 0;

    while (done < len) {
        ssize_t n = read(fd, p + done, len - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return mb_error_errno(err, MB_ERR_GENERAL, errno, "read");
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

int mb_fs_mkdir_p(const char *path, mode_t mode, struct mb_error *err)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);

    if (len == 0 || len >= sizeof(buf))
        return mb_error_set(err, MB_ERR_GENERAL, "bad directory path '%s'", path);
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) < 0 && errno != EEXIST)
            return mb_error_errno(err, MB_ERR_GENERAL, errno, "create directory '%s'", buf);
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "create directory '%s'", buf);
    return 0;
}

int mb_fs_fsync_dir(const char *dir, struct mb_error *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc;

    if (fd < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "open directory '%s'", dir);
    rc = fsync(fd);
    close(fd);
    if (rc < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "fsync directory '%s'", dir);
    return 0;
}

int mb_fs_read_file(const char *path, size_t max, char **out, size_t *len, struct mb_error *err)
{
    struct stat st;
    char *buf;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return mb_error_errno(err, MB_ERR_INPUT, errno, "open '%s'", path);
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mb_error_set(err, MB_ERR_INPUT, "'%s' is not a regular file", path);
    }
    if ((size_t)st.st_size > max) {
        close(fd);
        return mb_error_set(err, MB_ERR_INPUT, "'%s' is larger than %zu bytes", path, max);
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        close(fd);
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    }
    /* Read one byte more than stat said, to notice a file that grew. */
    n = mb_fs_read_all(fd, buf, (size_t)st.st_size + 1, err);
    close(fd);
    if (n < 0 || (size_t)n > (size_t)st.st_size) {
        free(buf);
        if (n < 0)
            return mb_error_prefix(err, "read '%s'", path);
        return mb_error_set(err, MB_ERR_INPUT, "'%s' changed while being read", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = (size_t)n;
    return 0;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (slash == NULL)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

int mb_fs_write_atomic(const char *path, const void *data, size_t len, struct mb_error *err)
{
    char tmp[PATH_MAX];
    char *dir;
    int fd;
    int rc;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", path) >= (int)sizeof(tmp))
        return mb_error_set(err, MB_ERR_GENERAL, "path too long: '%s'", path);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "create temp file for '%s'", path);
    rc = mb_fs_write_all(fd, data, len, err);
    if (rc == 0 && fsync(fd) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "fsync '%s'", tmp);
    close(fd);
    if (rc == 0 && rename(tmp, path) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "rename to '%s'", path);
    if (rc < 0) {
        unlink(tmp);
        return mb_error_prefix(err, "write '%s'", path);
    }
    dir = dir_of(path);
    if (dir == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    rc = mb_fs_fsync_dir(dir, err);
    free(dir);
    return rc;
}

char *mb_path_join(const char *a, const char *b)
{
    size_t la = strlen(a);
    char *out;

    while (la > 1 && a[la - 1] == '/')
        la--;
    while (*b == '/')
        b++;
    out = malloc(la + 1 + strlen(b) + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, a, la);
    out[la] = '/';
    strcpy(out + la + 1, b);
    return out;
}

int mb_fs_open_beneath(int dirfd, const char *relpath, int flags)
{
    struct open_how how = {
        .flags = (unsigned)(flags | O_CLOEXEC),
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    long fd;

    do
        fd = syscall(SYS_openat2, dirfd, relpath, &how, sizeof(how));
    while (fd < 0 && errno == EINTR);
    return (int)fd;
}

/* nftw passes no context: the first failure of the walk under way (one at a time per thread). */
static __thread int remove_errno;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) < 0 && errno != ENOENT && remove_errno == 0)
        remove_errno = errno;
    return 0;
}

int mb_fs_remove_tree(const char *path, struct mb_error *err)
{
    remove_errno = 0;
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
        remove_errno = errno;
    if (remove_errno != 0)
        return mb_error_errno(err, MB_ERR_GENERAL, remove_errno, "remove '%s'", path);
    return 0;
}

int mb_fs_lock(const char *path, int operation, struct mb_error *err)
{
    int fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

    if (fd < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "open lock '%s'", path);
    while (flock(fd, operation) < 0) {
        if (errno == EINTR && !mb_cancel_requested())
            continue;
        close(fd);
        if (errno == EWOULDBLOCK)
            return -2;
        if (errno == EINTR)
            return mb_error_set(err, MB_ERR_INTERRUPTED, "interrupted");
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "lock '%s'", path);
    }
    return fd;
}

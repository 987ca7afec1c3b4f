/*
 * File-system helpers shared by every module: whole writes and reads that
 * retry EINTR, directories made on demand, and atomic publication (temp
 * file, fsync, rename, fsync of the directory) so that a reader never sees
 * a partial file and a crash leaves the old one in place.
 */
#ifndef MBUILD_FSUTIL_H
#define MBUILD_FSUTIL_H

#include <stddef.h>
#include <sys/types.h>

#include "mbuild/error.h"

/* write(2) until everything is written; retries EINTR. */
int mb_fs_write_all(int fd, const void *buf, size_t len, struct mb_error *err);

/* read(2) until len bytes or end of file; returns bytes read or -1. */
ssize_t mb_fs_read_all(int fd, void *buf, size_t len, struct mb_error *err);

/* mkdir -p with `mode` for each directory it creates. */
int mb_fs_mkdir_p(const char *path, mode_t mode, struct mb_error *err);

int mb_fs_fsync_dir(const char *dir, struct mb_error *err);

/*
 * Read a whole regular file of at most `max` bytes into a NUL-terminated
 * malloc'ed buffer. A larger file is an MB_ERR_INPUT error. The caller
 * frees *out.
 */
int mb_fs_read_file(const char *path, size_t max, char **out, size_t *len, struct mb_error *err);

/* Publish `data` at `path` atomically (temp in the same directory, fsync, rename). */
int mb_fs_write_atomic(const char *path, const void *data, size_t len, struct mb_error *err);

/*
 * Open `relpath` beneath the directory `dirfd` with openat2(RESOLVE_BENEATH):
 * absolute paths, "..", and symlinks that lead outside the directory fail
 * (EXDEV), whatever races happen meanwhile. `flags` are open(2) flags;
 * O_CLOEXEC is always added. Returns the fd, or -1 with errno set.
 */
int mb_fs_open_beneath(int dirfd, const char *relpath, int flags);

/*
 * rm -rf of `path`, never following symlinks: removes all it can, and
 * fails with the first error other than a missing file. Callers that only
 * clean up may ignore the result.
 */
int mb_fs_remove_tree(const char *path, struct mb_error *err);

/* Join two path parts with one '/', malloc'ed; NULL only on out of memory. */
char *mb_path_join(const char *a, const char *b);

/*
 * Open (creating it) the lock file `path` and flock it with `operation`
 * (LOCK_EX or LOCK_SH, with LOCK_NB to try). Returns the descriptor that
 * holds the lock; -2 when LOCK_NB and it is taken; -1 on error, also when
 * a wait is cut short by SIGINT/SIGTERM (MB_ERR_INTERRUPTED).
 */
int mb_fs_lock(const char *path, int operation, struct mb_error *err);

#endif

/*
 * What store.c and index.c share inside the cache module: the open cache,
 * held as directory fds so that every later path is resolved relative to
 * the layout opened once, and the few helpers both halves need. Nothing
 * outside cache/ includes this file.
 */
#ifndef MB_CACHE_INTERNAL_H
#define MB_CACHE_INTERNAL_H

#include <dirent.h>
#include <stddef.h>

#include "mbuild/cache.h"

struct mb_cache {
    char *dir;
    int dir_fd;
    int blobs_fd; /* blobs/sha256 */
    int keys_fd;
    int tmp_fd;
};

/* A directory stream over `dir_fd`, which stays open and owned by the caller. */
DIR *cache_opendir(int dir_fd, struct mb_error *err);

/* The next name other than "." and "..": 1, or 0 at the end, or -1 on a read error. */
int cache_next_entry(DIR *d, const char **name, struct mb_error *err);

/*
 * Read all of the regular file open at `fd`, at most `max` bytes, into a
 * NUL-terminated malloc'ed buffer. A file that is larger, not regular or
 * changing fails with `bad_code`.
 */
int cache_read_fd(int fd, size_t max, int bad_code, char **out, size_t *len, struct mb_error *err);

/*
 * Hash the entry `name` of blobs/sha256 (not following symlinks). Returns
 * 1 when it is a regular file and *out holds its digest, 0 when it is
 * missing or not a regular file, -1 when it could not be read.
 */
int cache_hash_blob_entry(const struct mb_cache *cache, const char *name, struct mb_digest *out,
                          struct mb_error *err);

/* Remove the key index's own temp files left by killed writers. Best effort. */
void cache_sweep_key_temps(struct mb_cache *cache);

#endif

/*
 * The blob store: finding and opening the cache directory, creating its
 * OCI layout, and writing, reading and extracting blobs.
 *
 * A blob is published only under the digest computed from its own bytes
 * while they were written, and only by a no-replace rename out of tmp/, so
 * blobs/sha256/ holds complete files or nothing: a writer killed at any
 * point leaves at most a temp file, which the next mb_cache_open() sweeps
 * once no process holds its lock. Nothing read back is trusted: every
 * reader re-hashes, and layers are decompressed with a bounded window so
 * that a hostile frame fails instead of making us allocate.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zstd.h>

#include "mbuild/cache.h"
#include "mbuild/fsutil.h"
#include "internal.h"

/* Every read and every compressed write goes through buffers of this size. */
enum { CHUNK = 1 << 20 };

#define LAYER_LEVEL 3

/*
 * The zstd window of layer frames, as a power of two. Long-distance
 * matching finds repeats anywhere in the window, so a larger one compresses
 * disk images better, but the compressor keeps the whole window resident.
 * Measured storing a 1 GiB file (peak RSS of the storing process, with
 * LAYER_WORKERS below): 2^23 about 25 MiB, 2^24 about 33 MiB, 2^25 about
 * 49 MiB, against a 64 MiB budget; 2^25 would leave too little room.
 * Readers accept this window and nothing larger, so it may be raised
 * later but never lowered: old blobs would become unreadable.
 */
#ifndef LAYER_WINDOW_LOG
#define LAYER_WINDOW_LOG 24
#endif

/*
 * Compression threads besides the caller's, which reads and hashes. Two
 * keep both cores of a small machine compressing while we hash; see
 * bench/store.sh for the measurement.
 */
#ifndef LAYER_WORKERS
#define LAYER_WORKERS 2
#endif

#define OCI_LAYOUT "{\"imageLayoutVersion\":\"1.0.0\"}\n"
#define EMPTY_INDEX                                                                                \
    "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","              \
    "\"manifests\":[]}\n"

static int oom(struct mb_error *err)
{
    return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
}

static bool is_set(const char *s)
{
    return s != NULL && *s != '\0';
}

static char *dup_or_fail(const char *s, struct mb_error *err)
{
    char *copy = strdup(s);

    if (copy == NULL)
        oom(err);
    return copy;
}

static char *join_or_fail(const char *a, const char *b, struct mb_error *err)
{
    char *path = mb_path_join(a, b);

    if (path == NULL)
        oom(err);
    return path;
}

char *mb_cache_default_dir(const char *flag, struct mb_error *err)
{
    const char *env;

    if (flag != NULL) {
        if (*flag == '\0') {
            mb_error_set(err, MB_ERR_INPUT, "empty cache directory");
            return NULL;
        }
        return dup_or_fail(flag, err);
    }
    env = getenv("MBUILD_CACHE");
    if (is_set(env))
        return dup_or_fail(env, err);
    /* The XDG spec says a relative value is invalid and must be ignored. */
    env = getenv("XDG_CACHE_HOME");
    if (is_set(env) && env[0] == '/')
        return join_or_fail(env, "mbuild", err);
    env = getenv("HOME");
    if (is_set(env))
        return join_or_fail(env, ".cache/mbuild", err);
    mb_error_set(err, MB_ERR_INPUT, "no cache directory: set MBUILD_CACHE, XDG_CACHE_HOME or HOME");
    return NULL;
}

DIR *cache_opendir(int dir_fd, struct mb_error *err)
{
    int fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d;

    if (fd < 0) {
        mb_error_errno(err, MB_ERR_GENERAL, errno, "open directory");
        return NULL;
    }
    d = fdopendir(fd);
    if (d == NULL) {
        mb_error_errno(err, MB_ERR_GENERAL, errno, "open directory");
        close(fd);
    }
    return d;
}

int cache_next_entry(DIR *d, const char **name, struct mb_error *err)
{
    struct dirent *ent;

    for (;;) {
        errno = 0;
        ent = readdir(d);
        if (ent == NULL && errno != 0)
            return mb_error_errno(err, MB_ERR_GENERAL, errno, "read directory");
        if (ent == NULL)
            return 0;
        if (strcmp(ent->d_name, ".") != 0 && strcmp(ent->d_name, "..") != 0)
            break;
    }
    *name = ent->d_name;
    return 1;
}

static int lock_fd(int fd, int op)
{
    int rc;

    do
        rc = flock(fd, op);
    while (rc < 0 && errno == EINTR);
    return rc;
}

/* Whether `name` in `dir_fd` still is the file open at `fd`. */
static bool still_linked(int dir_fd, const char *name, int fd)
{
    struct stat by_name;
    struct stat by_fd;

    return fstatat(dir_fd, name, &by_name, AT_SYMLINK_NOFOLLOW) == 0 && fstat(fd, &by_fd) == 0 &&
           by_name.st_dev == by_fd.st_dev && by_name.st_ino == by_fd.st_ino;
}

/* A file being written in tmp/, locked by its writer for its whole life. */
struct temp {
    int fd;
    char name[96];
};

static int temp_name(const char *kind, char *name, size_t size, struct mb_error *err)
{
    struct mb_digest rnd;
    char hex[MB_DIGEST_HEX_LEN + 1];
    size_t got = 0;

    while (got < sizeof(rnd.bytes)) {
        ssize_t n = getrandom(rnd.bytes + got, sizeof(rnd.bytes) - got, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return mb_error_errno(err, MB_ERR_GENERAL, errno, "getrandom");
        got += (size_t)n;
    }
    mb_digest_hex(&rnd, hex);
    snprintf(name, size, "%s-%s", kind, hex);
    return 0;
}

static void temp_discard(struct mb_cache *c, struct temp *t)
{
    if (t->fd < 0)
        return;
    /* Unlink before closing: once unlocked, the name may be swept by others. */
    unlinkat(c->tmp_fd, t->name, 0);
    close(t->fd);
    t->fd = -1;
}

/*
 * The lock can only be taken once the file exists, so a sweeper may find
 * it unlocked in between and remove it. It unlinks before unlocking, so
 * checking that the name still leads to our file once we hold the lock
 * tells us whether that happened; then we start over with a new name.
 */
static int temp_create(struct mb_cache *c, const char *kind, mode_t mode, struct temp *t,
                       struct mb_error *err)
{
    for (int attempt = 0; attempt < 16; attempt++) {
        if (temp_name(kind, t->name, sizeof(t->name), err) < 0)
            return -1;
        t->fd =
            openat(c->tmp_fd, t->name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (t->fd < 0 && errno == EEXIST)
            continue;
        if (t->fd < 0)
            return mb_error_errno(err, MB_ERR_GENERAL, errno, "create temp file in '%s/tmp'",
                                  c->dir);
        if (lock_fd(t->fd, LOCK_EX) < 0) {
            int saved = errno;

            temp_discard(c, t);
            return mb_error_errno(err, MB_ERR_GENERAL, saved, "lock temp file");
        }
        if (still_linked(c->tmp_fd, t->name, t->fd))
            return 0;
        close(t->fd);
        t->fd = -1;
    }
    return mb_error_set(err, MB_ERR_GENERAL, "cannot create a temp file in '%s/tmp'", c->dir);
}

static int rename_noreplace(int from_fd, const char *from, int to_fd, const char *to)
{
    if (renameat2(from_fd, from, to_fd, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -1;
    /* Some file systems lack RENAME_NOREPLACE; link(2) never replaces either. */
    if (linkat(from_fd, from, to_fd, to, 0) < 0)
        return -1;
    unlinkat(from_fd, from, 0);
    return 0;
}

/*
 * Move a finished temp to `name` in `dir_fd`, never replacing what is
 * there: names come from digests, so an existing file is what we were
 * about to write, and EEXIST is a hit. The lock is held until our name
 * has left tmp/, so no sweeper can take a file being published.
 */
static int temp_publish(struct mb_cache *c, struct temp *t, int dir_fd, const char *name,
                        bool *existed, struct mb_error *err)
{
    int rc;

    if (fsync(t->fd) < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "fsync temp file");
    rc = rename_noreplace(c->tmp_fd, t->name, dir_fd, name);
    if (rc < 0 && errno != EEXIST)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "publish '%s'", name);
    *existed = rc < 0;
    if (*existed)
        unlinkat(c->tmp_fd, t->name, 0);
    close(t->fd);
    t->fd = -1;
    /* Also on a hit: its writer may not have made the name durable yet. */
    if (fsync(dir_fd) < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "fsync directory of '%s'", name);
    return 0;
}

/*
 * A temp whose lock we can take has no live writer (the kernel dropped the
 * lock when it died), so it will never be finished.
 */
static void sweep_one(int tmp_fd, const char *name)
{
    int fd = openat(tmp_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat st;

    if (fd < 0)
        return;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && lock_fd(fd, LOCK_EX | LOCK_NB) == 0 &&
        still_linked(tmp_fd, name, fd))
        unlinkat(tmp_fd, name, 0);
    close(fd);
}

/* A temp that cannot be removed now is only skipped: the next open retries. */
static int sweep_temps(struct mb_cache *c, struct mb_error *err)
{
    DIR *d = cache_opendir(c->tmp_fd, err);
    const char *name = NULL;
    int rc;

    if (d == NULL)
        return mb_error_prefix(err, "sweep tmp");
    while ((rc = cache_next_entry(d, &name, err)) > 0)
        sweep_one(c->tmp_fd, name);
    closedir(d);
    return rc < 0 ? mb_error_prefix(err, "sweep tmp") : 0;
}

static int make_layout_dirs(struct mb_cache *c, struct mb_error *err)
{
    static const char *const dirs[] = {"blobs", "blobs/sha256", "keys", "tmp", "plans"};

    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
        if (mkdirat(c->dir_fd, dirs[i], 0755) < 0 && errno != EEXIST)
            return mb_error_errno(err, MB_ERR_GENERAL, errno, "create '%s'", dirs[i]);
    return 0;
}

static int open_subdir(struct mb_cache *c, const char *name, int *out, struct mb_error *err)
{
    *out = mb_fs_open_beneath(c->dir_fd, name, O_RDONLY | O_DIRECTORY);
    if (*out < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "open '%s'", name);
    return 0;
}

/* Written once and never replaced, so a concurrent open cannot undo another's. */
static int ensure_layout_file(struct mb_cache *c, const char *name, const char *content,
                              struct mb_error *err)
{
    struct temp t = {.fd = -1};
    struct stat st;
    bool existed;

    if (fstatat(c->dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return 0;
    if (errno != ENOENT)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "stat '%s'", name);
    if (temp_create(c, "layout", 0644, &t, err) < 0 ||
        mb_fs_write_all(t.fd, content, strlen(content), err) < 0 ||
        temp_publish(c, &t, c->dir_fd, name, &existed, err) < 0) {
        temp_discard(c, &t);
        return mb_error_prefix(err, "write '%s'", name);
    }
    return 0;
}

static int open_layout(struct mb_cache *c, const char *dir, struct mb_error *err)
{
    c->dir = strdup(dir);
    if (c->dir == NULL)
        return oom(err);
    /* The root is private: layers hold whatever the steps put in them. */
    if (mb_fs_mkdir_p(dir, 0700, err) < 0)
        return -1;
    c->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (c->dir_fd < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "open");
    if (make_layout_dirs(c, err) < 0 || open_subdir(c, "blobs/sha256", &c->blobs_fd, err) < 0 ||
        open_subdir(c, "keys", &c->keys_fd, err) < 0 || open_subdir(c, "tmp", &c->tmp_fd, err) < 0)
        return -1;
    if (sweep_temps(c, err) < 0)
        return -1;
    cache_sweep_key_temps(c);
    if (ensure_layout_file(c, "oci-layout", OCI_LAYOUT, err) < 0 ||
        ensure_layout_file(c, "index.json", EMPTY_INDEX, err) < 0)
        return -1;
    return 0;
}

int mb_cache_open(const char *dir, struct mb_cache **out, struct mb_error *err)
{
    struct mb_cache *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return oom(err);
    c->dir_fd = c->blobs_fd = c->keys_fd = c->tmp_fd = -1;
    if (open_layout(c, dir, err) < 0) {
        mb_cache_close(c);
        return mb_error_prefix(err, "open cache '%s'", dir);
    }
    *out = c;
    return 0;
}

static void close_if_open(int fd)
{
    if (fd >= 0)
        close(fd);
}

void mb_cache_close(struct mb_cache *cache)
{
    if (cache == NULL)
        return;
    close_if_open(cache->tmp_fd);
    close_if_open(cache->keys_fd);
    close_if_open(cache->blobs_fd);
    close_if_open(cache->dir_fd);
    free(cache->dir);
    free(cache);
}

const char *mb_cache_dir(const struct mb_cache *cache)
{
    return cache->dir;
}

char *mb_cache_blob_path(const struct mb_cache *cache, const struct mb_digest *digest)
{
    char hex[MB_DIGEST_HEX_LEN + 1];
    char *path;

    mb_digest_hex(digest, hex);
    if (asprintf(&path, "%s/blobs/sha256/%s", cache->dir, hex) < 0)
        return NULL;
    return path;
}

bool mb_cache_has_blob(const struct mb_cache *cache, const struct mb_digest *digest)
{
    char hex[MB_DIGEST_HEX_LEN + 1];
    struct stat st;

    mb_digest_hex(digest, hex);
    return fstatat(cache->blobs_fd, hex, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

static int zstd_check(size_t rc, const char *what, struct mb_error *err)
{
    if (ZSTD_isError(rc))
        return mb_error_set(err, MB_ERR_GENERAL, "%s: %s", what, ZSTD_getErrorName(rc));
    return 0;
}

/* Storing one layer: the source is read once, hashed, compressed and hashed again. */
struct layer_writer {
    ZSTD_CCtx *zc;
    struct mb_sha256 *diff_hash;
    struct mb_sha256 *blob_hash;
    unsigned char *in;
    unsigned char *out;
    struct temp tmp;
    uint64_t diff_size;
    uint64_t blob_size;
};

static int compressor_setup(ZSTD_CCtx *zc, uint64_t size, struct mb_error *err)
{
    static const struct {
        ZSTD_cParameter param;
        int value;
    } params[] = {
        {ZSTD_c_compressionLevel, LAYER_LEVEL},
        {ZSTD_c_windowLog, LAYER_WINDOW_LOG},
        {ZSTD_c_enableLongDistanceMatching, 1},
    };

    for (size_t i = 0; i < sizeof(params) / sizeof(params[0]); i++)
        if (zstd_check(ZSTD_CCtx_setParameter(zc, params[i].param, params[i].value),
                       "configure zstd", err) < 0)
            return -1;
    /* A libzstd built without threads refuses workers; it still compresses. */
    ZSTD_CCtx_setParameter(zc, ZSTD_c_nbWorkers, LAYER_WORKERS);
    return zstd_check(ZSTD_CCtx_setPledgedSrcSize(zc, size), "configure zstd", err);
}

static void writer_free(struct layer_writer *w, struct mb_cache *c)
{
    temp_discard(c, &w->tmp);
    ZSTD_freeCCtx(w->zc);
    mb_sha256_free(w->diff_hash);
    mb_sha256_free(w->blob_hash);
    free(w->in);
    free(w->out);
}

static int writer_init(struct layer_writer *w, struct mb_cache *c, uint64_t size,
                       struct mb_error *err)
{
    memset(w, 0, sizeof(*w));
    w->tmp.fd = -1;
    w->diff_hash = mb_sha256_new(err);
    w->blob_hash = mb_sha256_new(err);
    if (w->diff_hash == NULL || w->blob_hash == NULL)
        return -1;
    w->zc = ZSTD_createCCtx();
    w->in = malloc(CHUNK);
    w->out = malloc(CHUNK);
    if (w->zc == NULL || w->in == NULL || w->out == NULL)
        return oom(err);
    if (compressor_setup(w->zc, size, err) < 0)
        return -1;
    return temp_create(c, "layer", 0444, &w->tmp, err);
}

static int writer_emit(struct layer_writer *w, size_t len, struct mb_error *err)
{
    if (len == 0)
        return 0;
    mb_sha256_update(w->blob_hash, w->out, len);
    w->blob_size += len;
    if (mb_fs_write_all(w->tmp.fd, w->out, len, err) < 0)
        return mb_error_prefix(err, "write temp file");
    return 0;
}

/* Feed `len` bytes (the last ones when `end`) and write out what zstd produces. */
static int writer_feed(struct layer_writer *w, size_t len, bool end, struct mb_error *err)
{
    ZSTD_inBuffer in = {w->in, len, 0};
    ZSTD_EndDirective mode = end ? ZSTD_e_end : ZSTD_e_continue;
    size_t left;

    do {
        ZSTD_outBuffer out = {w->out, CHUNK, 0};

        left = ZSTD_compressStream2(w->zc, &out, &in, mode);
        if (zstd_check(left, "compress", err) < 0 || writer_emit(w, out.pos, err) < 0)
            return -1;
    } while (end ? left != 0 : in.pos < in.size);
    return 0;
}

static int writer_copy(struct layer_writer *w, int fd, uint64_t expected, struct mb_error *err)
{
    for (;;) {
        ssize_t n = mb_fs_read_all(fd, w->in, CHUNK, err);
        bool end;

        if (n < 0)
            return -1;
        end = n < CHUNK;
        mb_sha256_update(w->diff_hash, w->in, (size_t)n);
        w->diff_size += (uint64_t)n;
        /* Checked before zstd sees it, which would only say "srcSize wrong". */
        if (w->diff_size > expected || (end && w->diff_size != expected))
            return mb_error_set(err, MB_ERR_INPUT, "file changed while being read");
        if (writer_feed(w, (size_t)n, end, err) < 0)
            return -1;
        if (end)
            return 0;
    }
}

static int writer_publish(struct layer_writer *w, struct mb_cache *c, struct mb_blob_info *out,
                          struct mb_error *err)
{
    char hex[MB_DIGEST_HEX_LEN + 1];
    struct mb_blob_info info;

    mb_sha256_final(w->diff_hash, &info.diff_digest);
    mb_sha256_final(w->blob_hash, &info.digest);
    info.diff_size = w->diff_size;
    info.size = w->blob_size;
    mb_digest_hex(&info.digest, hex);
    if (temp_publish(c, &w->tmp, c->blobs_fd, hex, &info.existed, err) < 0)
        return -1;
    *out = info;
    return 0;
}

static int open_source(const char *path, uint64_t *size, struct mb_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;

    if (fd < 0)
        return mb_error_errno(err, MB_ERR_INPUT, errno, "open");
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mb_error_set(err, MB_ERR_INPUT, "not a regular file");
    }
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    *size = (uint64_t)st.st_size;
    return fd;
}

int mb_cache_put_layer_file(struct mb_cache *cache, const char *path, struct mb_blob_info *out,
                            struct mb_error *err)
{
    struct layer_writer w;
    uint64_t size = 0;
    int fd = open_source(path, &size, err);
    int rc = fd < 0 ? -1 : writer_init(&w, cache, size, err);

    if (rc == 0)
        rc = writer_copy(&w, fd, size, err);
    if (rc == 0)
        rc = writer_publish(&w, cache, out, err);
    if (fd >= 0) {
        writer_free(&w, cache);
        close(fd);
    }
    if (rc < 0)
        return mb_error_prefix(err, "store layer '%s'", path);
    return 0;
}

int mb_cache_put_blob(struct mb_cache *cache, const void *data, size_t len, struct mb_digest *out,
                      struct mb_error *err)
{
    char hex[MB_DIGEST_HEX_LEN + 1];
    struct temp t = {.fd = -1};
    struct mb_digest digest;
    bool existed;

    mb_sha256_buf(data, len, &digest);
    mb_digest_hex(&digest, hex);
    if (!mb_cache_has_blob(cache, &digest) &&
        (temp_create(cache, "blob", 0444, &t, err) < 0 ||
         mb_fs_write_all(t.fd, data, len, err) < 0 ||
         temp_publish(cache, &t, cache->blobs_fd, hex, &existed, err) < 0)) {
        temp_discard(cache, &t);
        return mb_error_prefix(err, "store blob sha256:%s", hex);
    }
    *out = digest;
    return 0;
}

/* Blobs are opened by digest only, never through a symlink, and must be regular files. */
static int open_blob(const struct mb_cache *c, const struct mb_digest *digest, struct mb_error *err)
{
    char hex[MB_DIGEST_HEX_LEN + 1];
    struct stat st;
    int fd;

    mb_digest_hex(digest, hex);
    fd = openat(c->blobs_fd, hex, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return mb_error_set(err, MB_ERR_GENERAL, "not in the cache");
    if (fd < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "open");
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mb_error_set(err, MB_ERR_INTEGRITY, "not a regular file");
    }
    return fd;
}

int cache_hash_blob_entry(const struct mb_cache *cache, const char *name, struct mb_digest *out,
                          struct mb_error *err)
{
    int fd = openat(cache->blobs_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    struct stat st;
    int rc;

    if (fd < 0 && (errno == ENOENT || errno == ELOOP))
        return 0;
    if (fd < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "open");
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return 0;
    }
    rc = mb_sha256_fd(fd, out, err);
    close(fd);
    return rc < 0 ? -1 : 1;
}

int cache_read_fd(int fd, size_t max, int bad_code, char **out, size_t *len, struct mb_error *err)
{
    struct stat st;
    char *buf;
    ssize_t n;

    if (fstat(fd, &st) < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "stat");
    if (!S_ISREG(st.st_mode))
        return mb_error_set(err, bad_code, "not a regular file");
    if ((uint64_t)st.st_size > max)
        return mb_error_set(err, bad_code, "larger than %zu bytes", max);
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL)
        return oom(err);
    /* One byte more than stat said, to notice a file that grew. */
    n = mb_fs_read_all(fd, buf, (size_t)st.st_size + 1, err);
    if (n >= 0 && n != st.st_size)
        n = mb_error_set(err, bad_code, "changed while being read");
    if (n < 0) {
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *out = buf;
    *len = (size_t)n;
    return 0;
}

static int check_digest(const struct mb_digest *want, const struct mb_digest *got, const char *what,
                        struct mb_error *err)
{
    char want_str[MB_DIGEST_STR_LEN];
    char got_str[MB_DIGEST_STR_LEN];

    if (mb_digest_equal(want, got))
        return 0;
    mb_digest_str(want, want_str);
    mb_digest_str(got, got_str);
    return mb_error_set(err, MB_ERR_INTEGRITY, "%s digest mismatch: expected %s, content is %s",
                        what, want_str, got_str);
}

int mb_cache_read_blob(struct mb_cache *cache, const struct mb_digest *digest, size_t max,
                       char **out, size_t *len, struct mb_error *err)
{
    char name[MB_DIGEST_STR_LEN];
    struct mb_digest got;
    char *buf = NULL;
    size_t n = 0;
    int fd = open_blob(cache, digest, err);
    int rc = fd < 0 ? -1 : cache_read_fd(fd, max, MB_ERR_INPUT, &buf, &n, err);

    if (fd >= 0)
        close(fd);
    if (rc == 0) {
        mb_sha256_buf(buf, n, &got);
        rc = check_digest(digest, &got, "blob", err);
    }
    if (rc < 0) {
        free(buf);
        mb_digest_str(digest, name);
        return mb_error_prefix(err, "read blob %s", name);
    }
    *out = buf;
    *len = n;
    return 0;
}

/*
 * Extracting one layer. A decoding failure is kept aside while the rest of
 * the blob is still hashed: if the digest does not match, damage is the
 * explanation worth reporting, not whatever zstd made of it.
 */
struct layer_reader {
    ZSTD_DCtx *zd;
    struct mb_sha256 *blob_hash;
    struct mb_sha256 *diff_hash;
    unsigned char *in;
    unsigned char *out;
    uint64_t offset;   /* bytes of output so far, holes included */
    size_t frame_left; /* 0 only between complete frames */
    bool bad;
    struct mb_error decode_err;
};

static void reader_free(struct layer_reader *r)
{
    ZSTD_freeDCtx(r->zd);
    mb_sha256_free(r->blob_hash);
    mb_sha256_free(r->diff_hash);
    free(r->in);
    free(r->out);
}

static int reader_init(struct layer_reader *r, struct mb_error *err)
{
    memset(r, 0, sizeof(*r));
    r->frame_left = 1; /* an empty blob holds no frame */
    r->blob_hash = mb_sha256_new(err);
    r->diff_hash = mb_sha256_new(err);
    if (r->blob_hash == NULL || r->diff_hash == NULL)
        return -1;
    r->zd = ZSTD_createDCtx();
    r->in = malloc(CHUNK);
    r->out = malloc(CHUNK);
    if (r->zd == NULL || r->in == NULL || r->out == NULL)
        return oom(err);
    /* A frame asking for more than we ever write is refused before allocating. */
    return zstd_check(ZSTD_DCtx_setParameter(r->zd, ZSTD_d_windowLogMax, LAYER_WINDOW_LOG),
                      "configure zstd", err);
}

static int pwrite_all(int fd, const unsigned char *buf, size_t len, uint64_t offset,
                      struct mb_error *err)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, buf, len, (off_t)offset);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return mb_error_errno(err, MB_ERR_GENERAL, errno, "write");
        buf += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

enum { BLOCK = 4096 };

static bool block_is_zero(const unsigned char *buf, size_t len, size_t pos)
{
    size_t n = len - pos < BLOCK ? len - pos : BLOCK;

    return buf[pos] == 0 && memcmp(buf + pos, buf + pos + 1, n - 1) == 0;
}

/*
 * Layers are disk images, mostly unallocated: runs of zero blocks are left
 * as holes, and the file gets its full size from ftruncate() at the end.
 */
static int write_sparse(int fd, const unsigned char *buf, size_t len, uint64_t *offset,
                        struct mb_error *err)
{
    size_t pos = 0;

    while (pos < len) {
        bool zero = block_is_zero(buf, len, pos);
        size_t end = pos;

        while (end < len && block_is_zero(buf, len, end) == zero)
            end += len - end < BLOCK ? len - end : BLOCK;
        if (!zero && pwrite_all(fd, buf + pos, end - pos, *offset, err) < 0)
            return -1;
        *offset += end - pos;
        pos = end;
    }
    return 0;
}

/* Decode `len` bytes of blob into `fd`; only writing can fail here. */
static int reader_feed(struct layer_reader *r, int fd, size_t len, struct mb_error *err)
{
    ZSTD_inBuffer in = {r->in, len, 0};
    bool full;

    do {
        ZSTD_outBuffer out = {r->out, CHUNK, 0};
        size_t rc = ZSTD_decompressStream(r->zd, &out, &in);

        if (ZSTD_isError(rc)) {
            r->bad = true;
            mb_error_set(&r->decode_err, MB_ERR_INTEGRITY, "not a valid zstd stream: %s",
                         ZSTD_getErrorName(rc));
            return 0;
        }
        r->frame_left = rc;
        mb_sha256_update(r->diff_hash, r->out, out.pos);
        if (write_sparse(fd, r->out, out.pos, &r->offset, err) < 0)
            return -1;
        full = out.pos == out.size;
        /* At a frame's end zstd has flushed all; asking again would start the next frame. */
    } while (in.pos < in.size || (full && r->frame_left != 0));
    return 0;
}

static int reader_copy(struct layer_reader *r, int blob_fd, int fd, struct mb_error *err)
{
    for (;;) {
        ssize_t n = mb_fs_read_all(blob_fd, r->in, CHUNK, err);

        if (n <= 0)
            return (int)n;
        mb_sha256_update(r->blob_hash, r->in, (size_t)n);
        if (!r->bad && reader_feed(r, fd, (size_t)n, err) < 0)
            return -1;
    }
}

static int reader_check(struct layer_reader *r, const struct mb_digest *digest,
                        const struct mb_digest *diff_digest, struct mb_error *err)
{
    struct mb_digest got;

    mb_sha256_final(r->blob_hash, &got);
    if (check_digest(digest, &got, "blob", err) < 0)
        return -1;
    if (r->bad)
        return mb_error_set(err, r->decode_err.code, "%s", r->decode_err.msg);
    if (r->frame_left != 0)
        return mb_error_set(err, MB_ERR_INTEGRITY, "blob ends inside a zstd frame");
    mb_sha256_final(r->diff_hash, &got);
    if (diff_digest != NULL)
        return check_digest(diff_digest, &got, "uncompressed", err);
    return 0;
}

static int finish_dest(int fd, uint64_t size, const char *tmp, const char *dest,
                       struct mb_error *err)
{
    char *dir;
    char *slash;
    int rc;

    if (ftruncate(fd, (off_t)size) < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "resize '%s'", tmp);
    if (fsync(fd) < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "fsync '%s'", tmp);
    if (rename(tmp, dest) < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "rename to '%s'", dest);
    slash = strrchr(dest, '/');
    if (slash == NULL)
        dir = strdup(".");
    else if (slash == dest)
        dir = strdup("/");
    else
        dir = strndup(dest, (size_t)(slash - dest));
    if (dir == NULL)
        return oom(err);
    rc = mb_fs_fsync_dir(dir, err);
    free(dir);
    return rc;
}

/* NEEDSWORK: a killed extraction leaves "<dest>.tmp-*" behind; nothing sweeps it. */
static int create_beside(const char *dest, char **tmp, struct mb_error *err)
{
    int fd;

    if (asprintf(tmp, "%s.tmp-XXXXXX", dest) < 0) {
        *tmp = NULL;
        return oom(err);
    }
    fd = mkostemp(*tmp, O_CLOEXEC);
    if (fd < 0) {
        mb_error_errno(err, MB_ERR_GENERAL, errno, "create temp file for '%s'", dest);
        free(*tmp);
        *tmp = NULL;
    }
    return fd;
}

static int extract_to(struct mb_cache *cache, const struct mb_digest *digest,
                      const struct mb_digest *diff_digest, const char *dest, char **tmp,
                      struct mb_error *err)
{
    struct layer_reader r;
    int blob_fd = open_blob(cache, digest, err);
    int fd = blob_fd < 0 ? -1 : create_beside(dest, tmp, err);
    int rc = fd < 0 ? -1 : reader_init(&r, err);

    if (fd >= 0) {
        if (rc == 0)
            rc = reader_copy(&r, blob_fd, fd, err);
        if (rc == 0)
            rc = reader_check(&r, digest, diff_digest, err);
        if (rc == 0)
            rc = finish_dest(fd, r.offset, *tmp, dest, err);
        reader_free(&r);
        close(fd);
    }
    if (blob_fd >= 0)
        close(blob_fd);
    return rc;
}

/*
 * NEEDSWORK: output is bounded only by the blob; a hostile frame that
 * expands without end fills the disk before the uncompressed digest can
 * refuse it. The key record's diff size would bound it.
 */
int mb_cache_extract_layer(struct mb_cache *cache, const struct mb_digest *digest,
                           const struct mb_digest *diff_digest, const char *dest,
                           struct mb_error *err)
{
    char name[MB_DIGEST_STR_LEN];
    char *tmp = NULL;
    int rc = extract_to(cache, digest, diff_digest, dest, &tmp, err);

    if (tmp != NULL && rc < 0)
        unlink(tmp);
    free(tmp);
    if (rc == 0)
        return 0;
    /* The contract: after a failure, no file at `dest` at all, stale or partial. */
    unlink(dest);
    mb_digest_str(digest, name);
    return mb_error_prefix(err, "extract blob %s", name);
}

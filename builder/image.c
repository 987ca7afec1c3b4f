/*
 * Flattening an image: `qemu-img convert` of the top layer's unpacked
 * chain into a temp file beside the final one, then a rename, under a
 * lock so two machines starting at once flatten once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include "mbuild/build.h"
#include "mbuild/fsutil.h"
#include "mbuild/image.h"
#include "mbuild/qcow2.h"

static int flatten(struct mb_cache *cache, const struct mb_digest *top, const char *dest,
                   const struct mb_progress *progress, struct mb_error *err)
{
    char *chain = mb_build_unpacked_layer(cache, top, err);
    char *part = NULL;
    int rc;

    if (chain == NULL)
        return -1;
    mb_progress_say(progress, "image: flattening its layers into one disk");
    rc = asprintf(&part, "%s.part", dest) < 0 ? mb_error_set(err, MB_ERR_GENERAL, "out of memory")
                                              : mb_qcow2_convert(chain, "qcow2", part, err);
    if (rc == 0 && rename(part, dest) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "publish '%s'", dest);
    if (rc < 0 && part != NULL)
        unlink(part);
    free(part);
    free(chain);
    return rc;
}

int mb_image_assemble(struct mb_cache *cache, const struct mb_digest *top,
                      const struct mb_progress *progress, char **path, bool *assembled,
                      struct mb_error *err)
{
    char hex[MB_DIGEST_HEX_LEN + 1], *dir = NULL, *lock_path = NULL;
    struct mb_error ignored;
    int lock = -1, rc;

    *path = NULL;
    *assembled = false;
    mb_digest_hex(top, hex);
    rc = asprintf(&dir, "%s/images/%s", mb_cache_dir(cache), hex) < 0 ||
                 asprintf(path, "%s/disk.qcow2", dir) < 0
             ? mb_error_set(err, MB_ERR_GENERAL, "out of memory")
             : mb_fs_mkdir_p(dir, 0755, err);
    if (rc == 0 && (lock_path = mb_path_join(dir, "lock")) == NULL)
        rc = mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    if (rc == 0)
        rc = lock = mb_fs_lock(lock_path, LOCK_EX, err);
    if (rc >= 0 && (access(*path, R_OK) != 0 || mb_qcow2_check(*path, NULL, &ignored) < 0)) {
        unlink(*path);
        rc = flatten(cache, top, *path, progress, err);
        *assembled = rc == 0;
    }
    if (lock >= 0)
        close(lock);
    free(lock_path);
    free(dir);
    if (rc < 0) {
        free(*path);
        *path = NULL;
        return mb_error_prefix(err, "assemble image %.12s", hex);
    }
    return 0;
}

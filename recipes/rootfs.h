/*
 * What the base recipes (tiny.c, debian.c) share: running their helper
 * programs, as root in a user namespace when we are not root; a stage
 * directory under <cache>/tmp/ and its removal; an ext4 filesystem made
 * from a tree with `mke2fs -d`; and the qcow2 published atomically.
 * Nothing outside recipes/ includes this file.
 */
#ifndef MB_RECIPES_ROOTFS_H
#define MB_RECIPES_ROOTFS_H

#include <sys/types.h>

#include "mbuild/error.h"
#include "mbuild/spawn.h"

/*
 * Who a helper runs as. Root runs every helper directly; an ordinary user
 * runs the last two kinds inside `unshare`, where their own uid and gid
 * are 0, so files they own read as root's.
 */
enum rootfs_user {
    ROOTFS_AS_IS,
    /* uid 0 standing for us alone (no newuidmap needed): the tree must hold only our files */
    ROOTFS_AS_ROOT,
    /* uid 0 plus our subordinate ids from /etc/subuid and /etc/subgid as 1..N (newuidmap) */
    ROOTFS_AS_ROOT_WITH_SUBIDS,
};

/*
 * Run argv to completion as `user`, stopped after timeout_ms or when
 * mb_cancel_requested() (then MB_ERR_INTERRUPTED): SIGTERM to its process
 * group, SIGKILL 10 s later. A non-zero exit is an
 * error quoting the end of its output. *res, when not NULL, keeps the
 * result and the last 256 KiB of output (`truncated` when more was
 * dropped) for the caller to free with mb_spawn_result_free().
 */
int rootfs_run(enum rootfs_user user, const char *const argv[], int timeout_ms,
               struct mb_spawn_result *res, struct mb_error *err);

/* The absolute path of `name` from PATH, /usr/sbin or /sbin; malloc'ed, or NULL. */
char *rootfs_find_program(const char *name);

/*
 * A fresh <cache_dir>/tmp/<recipe>-XXXXXX, mode 0700, whose group is our
 * own (nothing made in it inherits a setgid group from the cache).
 * malloc'ed, or NULL with `err` filled.
 */
char *rootfs_make_stage(const char *cache_dir, const char *recipe, struct mb_error *err);

/*
 * Remove the stage and all in it, whatever fails, also after a
 * cancellation. A stage holding files of our subordinate ids is removed as
 * ROOTFS_AS_ROOT_WITH_SUBIDS: only there may we delete them.
 */
void rootfs_remove_stage(const char *stage, enum rootfs_user user);

/*
 * Make `raw`, a new sparse file of `size` bytes, an ext4 filesystem holding
 * a copy of the tree `root` (owners, modes, links) with mke2fs -d, run as
 * `user` so that the tree's owners read as the image's. Inode tables are
 * marked zeroed, so the guest kernel has no lazy initialisation to do.
 */
int rootfs_make_ext4(const char *root, const char *raw, off_t size, enum rootfs_user user,
                     struct mb_error *err);

/* Convert `raw` to a qcow2 in a temp beside `dest`, sync it, rename it over `dest`. */
int rootfs_publish_qcow2(const char *raw, const char *dest, struct mb_error *err);

#endif

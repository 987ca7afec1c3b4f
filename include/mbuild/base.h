/*
 * Base images mbuild makes itself from Debian's packages, without root
 * and without installing anything on the host: each is a standalone qcow2
 * (no backing file) holding one ext4 root filesystem, whose files are
 * owned by root inside the image whoever ran the build.
 *
 * Work files go to <cache_dir>/tmp/ and are removed whether the build
 * succeeds or not. The image is written to a temp file beside `dest`,
 * synced, and renamed over `dest` only on success, so `dest` is either
 * the old file, absent, or the whole new image. Packages come through
 * mb_deb_fetch (apt-get download into <cache_dir>/debs/).
 */
#ifndef MBUILD_BASE_H
#define MBUILD_BASE_H

#include "mbuild/error.h"

/*
 * Make the `tiny` base: Debian's busybox-static as /bin/busybox with a
 * symlink for every applet it lists (/bin/sh among them), the usual
 * top-level directories, and /etc/passwd, /etc/group and /etc/hostname
 * for root, on a 1 GiB ext4 filesystem in a sparse qcow2 at `dest`.
 * Returns 0, or -1 with `err` filled.
 */
int mb_base_make_tiny(const char *cache_dir, const char *dest, struct mb_error *err);

#endif

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
 * mb_deb_fetch (apt-get download into <cache_dir>/debs/) or, for
 * debian-12, through mmdebstrap.
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

/*
 * Make the `debian-12` base: Debian bookworm as mmdebstrap's minbase
 * variant with systemd-sysv, udev, openssh-server, sudo, ca-certificates
 * and iproute2 from Debian's mirror, plus a user `dev` (uid and gid 1000,
 * home /home/dev, passwordless sudo through /etc/sudoers.d/dev), hostname
 * `debian`, an /etc/fstab that mounts nothing and an empty /dev (the
 * kernel's devtmpfs fills it), on a 20 GiB ext4 filesystem in a sparse
 * qcow2 at `dest` (about 280 MB). /sbin/init is systemd.
 *
 * Needs mmdebstrap on the host and network access to the mirror. When not
 * root it runs mmdebstrap --mode=unshare and works inside `unshare
 * --map-auto --map-root-user`, both of which need newuidmap and newgidmap
 * (package `uidmap`) and a range for the user in /etc/subuid and
 * /etc/subgid; without them it fails at once, before downloading. Takes
 * about 40 s, and up to ~1 GB in <cache_dir>/tmp/ plus mmdebstrap's own
 * chroot (~600 MB) under $TMPDIR while it runs; stops with
 * MB_ERR_INTERRUPTED when mb_cancel_requested(). Returns 0, or -1 with
 * `err` filled.
 */
int mb_base_make_debian12(const char *cache_dir, const char *dest, struct mb_error *err);

#endif

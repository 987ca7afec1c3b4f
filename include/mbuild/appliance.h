/*
 * The build appliance: the kernel and initramfs every step VM boots.
 *
 * Made from Debian's kernel and busybox-static packages (fetched, never
 * installed): the kernel's uncompressed image, which boots directly (PVH)
 * and saves the ~6 s of XZ decompression a TCG guest would spend, and an
 * initramfs (cpio newc, written with libarchive) holding busybox, the
 * virtio, ext4, network and share modules, and recipes/appliance/init.
 *
 * It lives in <cache>/appliance/<key>/, keyed by the two packages'
 * digests, the init scripts and the module list, so a new kernel or
 * busybox from the mirror makes a new appliance.
 */
#ifndef MBUILD_APPLIANCE_H
#define MBUILD_APPLIANCE_H

#include "mbuild/error.h"
#include "mbuild/hash.h"
#include "mbuild/progress.h"

struct mb_appliance {
    char *dir;    /* <cache>/appliance/<hex> */
    char *kernel; /* dir/vmlinux */
    char *initrd; /* dir/initramfs.cpio */
    struct mb_digest key;
};

/* Find or make the appliance for what apt offers now. Free with mb_appliance_clear. */
int mb_appliance_ensure(const char *cache_dir, const struct mb_progress *progress,
                        struct mb_appliance *out, struct mb_error *err);

void mb_appliance_clear(struct mb_appliance *app);

#endif

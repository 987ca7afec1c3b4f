/*
 * Images ready to boot. An image is the ordered chain of its layers; its
 * identity here is the key of its top layer (a key covers every layer
 * beneath it). To boot, the chain is unpacked once and flattened into one
 * standalone qcow2, kept at
 *
 *   <cache>/images/<top key hex>/disk.qcow2
 *
 * and shared by every machine made from the image: each machine boots an
 * overlay of its own on it, so creating one copies nothing. The flattened
 * disk is derived data: missing or failing `qemu-img check`, it is made
 * again from the blobs.
 */
#ifndef MBUILD_IMAGE_H
#define MBUILD_IMAGE_H

#include <stdbool.h>

#include "mbuild/cache.h"
#include "mbuild/error.h"
#include "mbuild/hash.h"
#include "mbuild/progress.h"

/*
 * The flattened disk of the image whose top layer is `top` (which must be
 * in the cache), made when missing or damaged. *path is malloc'ed;
 * *assembled says whether this call had to make it.
 */
int mb_image_assemble(struct mb_cache *cache, const struct mb_digest *top,
                      const struct mb_progress *progress, char **path, bool *assembled,
                      struct mb_error *err);

#endif

/*
 * Downloading a file pinned by its digest, with libcurl: https anywhere,
 * plain http only to this machine's loopback. The content is hashed as it
 * streams into a temp file beside `dest`; only a matching digest is
 * renamed to `dest`, so `dest` never holds unverified bytes.
 */
#ifndef MBUILD_DOWNLOAD_H
#define MBUILD_DOWNLOAD_H

#include "mbuild/error.h"
#include "mbuild/hash.h"
#include "mbuild/progress.h"

/*
 * Fetch `url` to `dest`. A digest mismatch is MB_ERR_INTEGRITY, an HTTP
 * error or a network failure MB_ERR_GENERAL, cancellation (cancel.h)
 * MB_ERR_INTERRUPTED.
 */
int mb_download(const char *url, const struct mb_digest *want, const char *dest,
                const struct mb_progress *progress, struct mb_error *err);

#endif

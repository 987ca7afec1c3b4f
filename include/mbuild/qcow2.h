/*
 * qcow2 files through `qemu-img`, the one program that edits them: every
 * call names the formats explicitly (-f, -F, -O), so no image is ever
 * probed, and a backing file is only ever one we name.
 *
 * Errors carry qemu-img's own message.
 */
#ifndef MBUILD_QCOW2_H
#define MBUILD_QCOW2_H

#include <stdbool.h>
#include <stdint.h>

#include "mbuild/error.h"

/* Create `path` as a qcow2 overlay whose backing file is the qcow2 `backing`. */
int mb_qcow2_create_overlay(const char *path, const char *backing, struct mb_error *err);

/*
 * Rewrite the backing reference of `path` without touching its data
 * (`rebase -u`): to `backing` (a qcow2, resolved relative to `path`'s
 * directory when relative), or to none when `backing` is NULL.
 */
int mb_qcow2_set_backing(const char *path, const char *backing, struct mb_error *err);

/* Convert `src` in format `src_format` ("raw" or "qcow2") to a standalone qcow2 `dest`. */
int mb_qcow2_convert(const char *src, const char *src_format, const char *dest,
                     struct mb_error *err);

/*
 * Check a qcow2 that came from somewhere else before anything opens it
 * with its backing chain: it must be qcow2, with no external data file,
 * and no backing file (`backing_allowed` NULL) or exactly that name.
 * Failures are MB_ERR_INTEGRITY.
 */
int mb_qcow2_check(const char *path, const char *backing_allowed, struct mb_error *err);

#endif

/*
 * The layers of a Machinefile and their cache keys.
 *
 * A Machinefile becomes an ordered list of layers: the base, then one layer
 * for `packages:` when it has any, then one per step. Each layer carries
 * every input that decides its content, and its key is the SHA-256 of a
 * canonical, versioned encoding of those inputs (see key.c):
 *   the parent's key (none for the base), the kind and text, the env in
 *   effect (sorted by name), every copied file's target path, type, mode
 *   and content digest, the network setting, the target arch, and the
 *   layer-format version.
 * Never a host path, an mtime, an owner or a runtime setting: the same
 * Machinefile in another directory or on another machine gives the same
 * keys, which is what lets CI's layers serve a laptop.
 */
#ifndef MBUILD_LAYERS_H
#define MBUILD_LAYERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mbuild/error.h"
#include "mbuild/hash.h"
#include "mbuild/machinefile.h"

/* Bump when the stored form of a layer changes: every key changes with it. */
#define MB_LAYER_FORMAT_VERSION 1

enum mb_layer_kind {
    MB_LAYER_BASE,
    MB_LAYER_PACKAGES,
    MB_LAYER_RUN,
};

enum mb_file_type {
    MB_FILE_REGULAR = 'f',
    MB_FILE_DIRECTORY = 'd',
    MB_FILE_SYMLINK = 'l',
};

/* One file a step copies into the VM, after directories are expanded. */
struct mb_copied_file {
    char *source; /* relative to the project directory */
    char *target; /* absolute path in the VM */
    enum mb_file_type type;
    uint32_t mode;           /* permission bits, 07777 */
    struct mb_digest digest; /* of the content; of the link text for a symlink */
};

struct mb_layer {
    enum mb_layer_kind kind;
    char *name;        /* "base", "packages", or the step's name */
    char *text;        /* base descriptor, package list, or the step's script */
    struct mb_env env; /* env in effect, sorted by name */
    struct mb_copied_file *files;
    size_t file_count;
    bool network;
    const char *arch; /* borrowed from the Machinefile */
    bool has_parent;
    struct mb_digest parent; /* the previous layer's key */
    struct mb_digest key;
    const struct mb_step *step; /* NULL for base and packages */
};

/*
 * Derive the layers of `mf`, reading and hashing every copied file and a
 * local base image (all beneath the project directory). Errors about the
 * Machinefile's content are MB_ERR_INPUT and start with "PATH:LINE:COL: ".
 */
int mb_layers_from_machinefile(const struct mb_machinefile *mf, struct mb_layer **out,
                               size_t *count, struct mb_error *err);

void mb_layers_free(struct mb_layer *layers, size_t count);

/* Compute layer->key from its inputs. */
void mb_layer_compute_key(struct mb_layer *layer);

/* "base", "packages" or "run". */
const char *mb_layer_kind_name(enum mb_layer_kind kind);

#endif

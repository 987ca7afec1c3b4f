/*
 * Debian packages as build inputs: what the build appliance and the base
 * recipes are made of, fetched without installing anything on the host.
 *
 * Versions and digests come from apt's own metadata (`apt-cache show`);
 * downloads go through `apt-get download`, which runs as an ordinary user
 * and verifies what it fetches; the .deb is checked again against apt's
 * SHA-256 and kept in <cache>/debs/<sha256>.deb. Reading a .deb (an ar
 * archive holding data.tar.*) is libarchive's work.
 */
#ifndef MBUILD_DEBPKG_H
#define MBUILD_DEBPKG_H

#include <archive.h>
#include <archive_entry.h>

#include "mbuild/error.h"
#include "mbuild/hash.h"

struct mb_deb {
    char name[128];
    char version[128];
    struct mb_digest sha256; /* of the .deb, from apt's metadata */
};

/*
 * What apt would install for `name` now. A metapackage whose name is
 * `name` and whose first dependency starts with `follow_prefix` (for
 * instance "linux-image-amd64" and "linux-image-") is followed to that
 * dependency; pass NULL to take `name` as it is.
 */
int mb_deb_resolve(const char *name, const char *follow_prefix, struct mb_deb *out,
                   struct mb_error *err);

/* Make sure the .deb is in <cache_dir>/debs/; *path gets its malloc'ed path. */
int mb_deb_fetch(const char *cache_dir, const struct mb_deb *deb, char **path,
                 struct mb_error *err);

/*
 * Called for each entry of the package's data archive. Return 0 to go on,
 * 1 to stop early, -1 (with err filled) to fail. The callback may read
 * the entry's content with archive_read_data(a, ...).
 */
typedef int (*mb_deb_entry_fn)(void *ctx, struct archive *a, struct archive_entry *entry,
                               struct mb_error *err);

int mb_deb_each_file(const char *deb_path, mb_deb_entry_fn fn, void *ctx, struct mb_error *err);

#endif

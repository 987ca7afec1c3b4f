/*
 * The local cache: a content-addressed blob store laid out as an OCI image
 * layout, plus the key index that maps a layer key to the blob holding it.
 *
 *   <dir>/oci-layout            {"imageLayoutVersion": "1.0.0"}
 *   <dir>/index.json            OCI index of the images (derived data)
 *   <dir>/blobs/sha256/<hex>    blobs, named by the digest of their bytes
 *   <dir>/keys/<hex>.json       layer key -> blob and layer metadata
 *   <dir>/tmp/                  blobs being written; swept when stale
 *   <dir>/plans/                last recorded plan per Machinefile
 *
 * Blobs are written to a temp file while hashed, fsynced, then published
 * with a no-replace rename: a blob that already exists is a hit, so two
 * processes storing the same content both succeed and leave one blob. A
 * killed writer leaves only its temp file, which mb_cache_open() removes
 * once no process holds its lock. Every read re-hashes and refuses a
 * mismatch with MB_ERR_INTEGRITY.
 *
 * All functions are safe to call from several processes on one cache.
 */
#ifndef MBUILD_CACHE_H
#define MBUILD_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "mbuild/error.h"
#include "mbuild/hash.h"

#define MB_LAYER_MEDIA_TYPE "application/vnd.mbuild.layer.v1.qcow2+zstd"

struct mb_cache;

/*
 * The cache directory to use: `flag` if not NULL, else $MBUILD_CACHE, else
 * $XDG_CACHE_HOME/mbuild, else ~/.cache/mbuild. Malloc'ed.
 */
char *mb_cache_default_dir(const char *flag, struct mb_error *err);

/* Open (creating the layout if missing) and sweep stale temp files. */
int mb_cache_open(const char *dir, struct mb_cache **out, struct mb_error *err);
void mb_cache_close(struct mb_cache *cache);
const char *mb_cache_dir(const struct mb_cache *cache);

/* Malloc'ed "<dir>/blobs/sha256/<hex>". */
char *mb_cache_blob_path(const struct mb_cache *cache, const struct mb_digest *digest);
bool mb_cache_has_blob(const struct mb_cache *cache, const struct mb_digest *digest);

/* What storing a layer produced. */
struct mb_blob_info {
    struct mb_digest digest;      /* of the compressed blob, its name */
    uint64_t size;                /* compressed bytes */
    struct mb_digest diff_digest; /* of the uncompressed file */
    uint64_t diff_size;           /* uncompressed bytes */
    bool existed;                 /* the blob was already in the cache */
};

/*
 * Store the file at `path` as a zstd-compressed blob, reading it once and
 * streaming: memory stays bounded whatever its size.
 */
int mb_cache_put_layer_file(struct mb_cache *cache, const char *path, struct mb_blob_info *out,
                            struct mb_error *err);

/* Store a small blob (a manifest, a config) from memory. */
int mb_cache_put_blob(struct mb_cache *cache, const void *data, size_t len, struct mb_digest *out,
                      struct mb_error *err);

/*
 * Decompress a layer blob to `dest` (created, or truncated), verifying the
 * blob's digest and, when `diff_digest` is not NULL, the uncompressed one.
 * On any failure `dest` is removed.
 */
int mb_cache_extract_layer(struct mb_cache *cache, const struct mb_digest *digest,
                           const struct mb_digest *diff_digest, const char *dest,
                           struct mb_error *err);

/* Read a whole blob of at most `max` bytes, verified. The caller frees *out. */
int mb_cache_read_blob(struct mb_cache *cache, const struct mb_digest *digest, size_t max,
                       char **out, size_t *len, struct mb_error *err);

/* One layer in the key index. */
struct mb_layer_record {
    struct mb_digest key;
    bool has_parent;
    struct mb_digest parent_key;
    struct mb_blob_info blob; /* `existed` is not stored */
    char *step;               /* what the layer is: "run: npm ci", malloc'ed */
    int64_t created;          /* Unix seconds */
    int64_t last_used;        /* Unix seconds */
    int64_t build_ms;         /* how long making the layer took; 0 when unknown */
};

/* Record (or replace) a layer in the key index, atomically. */
int mb_cache_put_layer_record(struct mb_cache *cache, const struct mb_layer_record *rec,
                              struct mb_error *err);

/* 1 and *out filled when found, 0 when the key is not cached, -1 on error. */
int mb_cache_get_layer_record(struct mb_cache *cache, const struct mb_digest *key,
                              struct mb_layer_record *out, struct mb_error *err);

/* Mark a cached layer as used now. */
int mb_cache_touch_layer(struct mb_cache *cache, const struct mb_digest *key, struct mb_error *err);

/* Every layer in the index, sorted by creation time. Free with mb_layer_records_free. */
int mb_cache_list_layers(struct mb_cache *cache, struct mb_layer_record **out, size_t *count,
                         struct mb_error *err);

void mb_layer_record_clear(struct mb_layer_record *rec);
void mb_layer_records_free(struct mb_layer_record *recs, size_t count);

/* What mb_cache_verify found. */
struct mb_verify_report {
    size_t blobs_checked;
    size_t blobs_damaged;
    size_t records_checked;
    size_t records_damaged; /* unreadable, or naming a missing or damaged blob */
};

/* Called once per problem found, with a one-line description. */
typedef void (*mb_verify_problem_fn)(void *ctx, const char *problem);

/*
 * Re-hash every blob and check every key record. Damage is reported, not
 * an error: the return is -1 only when the check itself could not run.
 */
int mb_cache_verify(struct mb_cache *cache, mb_verify_problem_fn on_problem, void *ctx,
                    struct mb_verify_report *out, struct mb_error *err);

#endif

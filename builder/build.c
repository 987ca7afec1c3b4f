/*
 * The build: for each layer the plan misses, under a lock on its key,
 * make the layer's disk (a base image, or an overlay provisioned by a
 * step VM), store it, record it, and keep it unpacked for the next step.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mbuild/clock.h"
#include "mbuild/appliance.h"
#include "mbuild/base.h"
#include "mbuild/build.h"
#include "mbuild/cancel.h"
#include "mbuild/download.h"
#include "mbuild/fsutil.h"
#include "mbuild/payload.h"
#include "mbuild/qcow2.h"
#include "mbuild/recipe.h"

struct build {
    struct mb_cache *cache;
    const struct mb_plan *plan;
    const struct mb_build_options *opts;
    struct mb_build_failure *failure;
    struct mb_appliance appliance;
    char *work; /* <cache>/work/<random>, ours while its lock is held */
    int work_lock;
};

/* Paths inside the cache: "<cache>/<dir>/<key hex><suffix>", malloc'ed. */
static char *key_path(struct mb_cache *cache, const char *dir, const struct mb_digest *key,
                      const char *suffix)
{
    char hex[MB_DIGEST_HEX_LEN + 1];
    char *path;

    mb_digest_hex(key, hex);
    if (asprintf(&path, "%s/%s/%s%s", mb_cache_dir(cache), dir, hex, suffix) < 0)
        return NULL;
    return path;
}

/* Best effort: what is left, the next build's sweep removes. */
static void remove_tree(const char *path)
{
    struct mb_error ignored;

    mb_fs_remove_tree(path, &ignored);
}

/* Work directories of builds that died (their lock is free) are removed. */
static void sweep_work(const char *work_root)
{
    DIR *d = opendir(work_root);
    struct dirent *e;
    struct mb_error err;

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        char *lock, *dir;
        int fd;

        if (e->d_name[0] == '.' || strstr(e->d_name, ".lock") == NULL)
            continue;
        if (asprintf(&lock, "%s/%s", work_root, e->d_name) < 0)
            continue;
        fd = mb_fs_lock(lock, LOCK_EX | LOCK_NB, &err);
        if (fd >= 0 && (dir = strndup(lock, strlen(lock) - strlen(".lock"))) != NULL) {
            remove_tree(dir);
            unlink(lock);
            free(dir);
        }
        if (fd >= 0)
            close(fd);
        free(lock);
    }
    closedir(d);
}

static int make_dirs(struct mb_cache *cache, struct mb_error *err)
{
    static const char *const dirs[] = {"layers", "logs", "locks", "work"};

    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        char *path = mb_path_join(mb_cache_dir(cache), dirs[i]);
        int rc = path == NULL ? mb_error_set(err, MB_ERR_GENERAL, "out of memory")
                              : mb_fs_mkdir_p(path, 0755, err);

        free(path);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/*
 * A fresh work directory, locked for the life of this build. The lock
 * file comes first and is locked before the directory exists, so another
 * build's sweep never takes a directory being made for its own.
 */
static int open_work(struct build *b, struct mb_error *err)
{
    char *root = mb_path_join(mb_cache_dir(b->cache), "work");
    char *lock = NULL;
    struct stat st;
    int fd = -1;

    if (root == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    sweep_work(root);
    /* A sweeper may take and unlink a new lock file before we lock it: then try again. */
    for (int tries = 0; fd < 0 && tries < 10; tries++) {
        free(lock);
        if (asprintf(&lock, "%s/build-XXXXXX.lock", root) < 0 ||
            (fd = mkostemps(lock, 5, O_CLOEXEC)) < 0)
            break;
        while (flock(fd, LOCK_EX) < 0 && errno == EINTR)
            ;
        if (fstat(fd, &st) == 0 && st.st_nlink == 0) {
            close(fd);
            fd = -1;
        }
    }
    free(root);
    if (fd < 0) {
        free(lock);
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "make a work directory");
    }
    b->work_lock = fd;
    b->work = strndup(lock, strlen(lock) - strlen(".lock"));
    free(lock);
    if (b->work == NULL || mkdir(b->work, 0700) < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "make a work directory");
    return 0;
}

static void close_work(struct build *b)
{
    char *lock;

    if (b->work == NULL)
        return;
    remove_tree(b->work);
    if (asprintf(&lock, "%s.lock", b->work) >= 0) {
        unlink(lock);
        free(lock);
    }
    if (b->work_lock >= 0)
        close(b->work_lock);
    free(b->work);
}

static char *work_path(const struct build *b, const char *name)
{
    return mb_path_join(b->work, name);
}

/* Decompress a cached layer next to its final name, check it, point it at its parent. */
static int unpack_layer(struct mb_cache *cache, const struct mb_layer_record *rec, const char *dest,
                        struct mb_error *err)
{
    char hex[MB_DIGEST_HEX_LEN + 1], parent[MB_DIGEST_HEX_LEN + 8];
    char *part;
    int rc;

    if (asprintf(&part, "%s.part-%d", dest, (int)getpid()) < 0)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    rc = mb_cache_extract_layer(cache, &rec->blob.digest, &rec->blob.diff_digest, part, err);
    if (rc == 0)
        rc = mb_qcow2_check(part, NULL, err);
    if (rc == 0 && rec->has_parent) {
        mb_digest_hex(&rec->parent_key, hex);
        snprintf(parent, sizeof(parent), "%s.qcow2", hex);
        rc = mb_qcow2_set_backing(part, parent, err);
    }
    if (rc == 0 && rename(part, dest) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "publish '%s'", dest);
    if (rc < 0)
        unlink(part);
    free(part);
    return rc;
}

char *mb_build_unpacked_layer(struct mb_cache *cache, const struct mb_digest *key,
                              struct mb_error *err)
{
    struct mb_layer_record rec;
    char *path = key_path(cache, "layers", key, ".qcow2");
    char *parent = NULL;
    int found;

    if (path == NULL) {
        mb_error_set(err, MB_ERR_GENERAL, "out of memory");
        return NULL;
    }
    if (access(path, R_OK) == 0)
        return path;
    found = mb_cache_get_layer_record(cache, key, &rec, err);
    if (found == 0)
        mb_error_set(err, MB_ERR_GENERAL, "layer is not in the cache");
    if (found == 1 && rec.has_parent)
        parent = mb_build_unpacked_layer(cache, &rec.parent_key, err);
    if (found == 1 && (!rec.has_parent || parent != NULL) &&
        unpack_layer(cache, &rec, path, err) == 0) {
        free(parent);
        mb_layer_record_clear(&rec);
        return path;
    }
    if (found == 1)
        mb_layer_record_clear(&rec);
    free(parent);
    free(path);
    return NULL;
}

/* An image from outside as a standalone qcow2 at `dest`: a qcow2 is checked before use. */
static int import_image(const char *src, const char *dest, struct mb_error *err)
{
    static const unsigned char qcow2_magic[4] = {'Q', 'F', 'I', 0xfb};
    unsigned char magic[4] = {0};
    bool qcow2;
    int fd, rc;

    fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || mb_fs_read_all(fd, magic, sizeof(magic), err) < 0) {
        rc = mb_error_errno(err, MB_ERR_INPUT, errno, "read '%s'", src);
    } else {
        qcow2 = memcmp(magic, qcow2_magic, sizeof(magic)) == 0;
        rc = qcow2 ? mb_qcow2_check(src, NULL, err) : 0;
        if (rc == 0)
            rc = mb_qcow2_convert(src, qcow2 ? "qcow2" : "raw", dest, err);
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

/* 1 when `path` exists and holds content of digest `want`, else 0. */
static int verified(const char *path, const struct mb_digest *want)
{
    struct mb_digest got;
    struct mb_error err;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int ok = fd >= 0 && mb_sha256_fd(fd, &got, &err) == 0 && mb_digest_equal(&got, want);

    if (fd >= 0)
        close(fd);
    return ok;
}

/* A URL base, downloaded once into <cache>/downloads/<hex> and re-verified on use. */
static int import_remote_base(struct build *b, const char *dest, struct mb_error *err)
{
    const struct mb_machinefile *mf = b->plan->mf;
    struct mb_digest want;
    char *dir = mb_path_join(mb_cache_dir(b->cache), "downloads"), *path;
    int rc;

    if (mb_digest_parse(mf->base_digest, &want, err) < 0) {
        free(dir);
        return -1;
    }
    path = key_path(b->cache, "downloads", &want, "");
    rc = dir != NULL && path != NULL ? mb_fs_mkdir_p(dir, 0755, err)
                                     : mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    if (rc == 0 && !verified(path, &want))
        rc = mb_download(mf->base, &want, path, b->opts->progress, err);
    if (rc == 0)
        rc = import_image(path, dest, err);
    free(dir);
    free(path);
    return rc < 0 ? mb_error_prefix(err, "%s:%u:%u: base", mf->path, mf->base_mark.line,
                                    mf->base_mark.column)
                  : 0;
}

/*
 * A local image: it must still hold the content its key was computed from
 * (the layer's text is "image sha256:..."), so a file changed or swapped
 * since the plan fails instead of being stored under the wrong key.
 */
static int import_local_base(const struct mb_machinefile *mf, const struct mb_layer *layer,
                             const char *dest, struct mb_error *err)
{
    char *src = mb_path_join(mf->project_dir, mf->base);
    struct mb_digest want;
    int rc;

    if (src == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    rc = strncmp(layer->text, "image ", 6) == 0 ? mb_digest_parse(layer->text + 6, &want, err)
                                                : mb_error_set(err, MB_ERR_GENERAL, "no digest");
    if (rc == 0 && !verified(src, &want))
        rc = mb_error_set(err, MB_ERR_INPUT, "'%s' changed since it was planned", mf->base);
    if (rc == 0)
        rc = import_image(src, dest, err);
    free(src);
    return rc < 0 ? mb_error_prefix(err, "%s:%u:%u: base", mf->path, mf->base_mark.line,
                                    mf->base_mark.column)
                  : 0;
}

static int make_base(struct build *b, const struct mb_layer *layer, const char *dest,
                     struct mb_error *err)
{
    const struct mb_machinefile *mf = b->plan->mf;

    if (mf->base_digest != NULL)
        return import_remote_base(b, dest, err);
    if (mb_recipe_find(mf->base) == NULL)
        return import_local_base(mf, layer, dest, err);
    mb_progress_say(b->opts->progress, "base: making the '%s' image", mf->base);
    if (strcmp(mf->base, "tiny") == 0)
        return mb_base_make_tiny(mb_cache_dir(b->cache), dest, err);
    if (strcmp(mf->base, "debian-12") == 0)
        return mb_base_make_debian12(mb_cache_dir(b->cache), dest, err);
    return mb_error_set(err, MB_ERR_INPUT, "%s:%u:%u: base '%s' cannot be built yet", mf->path,
                        mf->base_mark.line, mf->base_mark.column, mf->base);
}

/* A packages layer gets the default step timeout. */
static uint64_t layer_timeout(const struct mb_layer *layer)
{
    return layer->step != NULL ? layer->step->timeout_seconds : 30 * 60;
}

static int step_failed(struct build *b, const struct mb_layer *layer,
                       struct mb_step_outcome *outcome, struct mb_error *err)
{
    b->failure->tail = outcome->tail;
    outcome->tail = NULL;
    if (outcome->timed_out)
        return mb_error_set(err, MB_ERR_STEP, "step '%s' timed out after %llus", layer->name,
                            (unsigned long long)layer_timeout(layer));
    if (outcome->exit_status < 0)
        return mb_error_set(err, MB_ERR_STEP, "step '%s': the VM stopped without a status",
                            layer->name);
    return mb_error_set(err, MB_ERR_STEP, "step '%s' failed with exit status %d", layer->name,
                        outcome->exit_status);
}

static int run_step(struct build *b, const struct mb_layer *layer, const char *disk,
                    struct mb_error *err)
{
    const struct mb_machinefile *mf = b->plan->mf;
    struct mb_step_outcome outcome;
    char *payload = work_path(b, "payload.tar"), *log = work_path(b, "console.log");
    struct mb_step_vm vm = {
        .appliance = &b->appliance,
        .disk = disk,
        .payload = payload,
        .log = log,
        .network = layer->network,
        .cpus = mf->cpus,
        .memory = mf->memory,
        .timeout_seconds = layer_timeout(layer),
        .on_output = b->opts->on_output,
        .ctx = b->opts->ctx,
        .progress = b->opts->progress,
    };
    int rc = 0;

    if (b->appliance.kernel == NULL)
        rc = mb_appliance_ensure(mb_cache_dir(b->cache), b->opts->progress, &b->appliance, err);
    if (rc == 0)
        rc = mb_payload_write(mf, layer, b->opts->ca_file, payload, err);
    if (rc == 0) {
        mb_progress_say(b->opts->progress, "%s: running in a VM", layer->name);
        rc = mb_step_vm_run(&vm, &outcome, err);
        if (rc == 0 && (outcome.exit_status != 0 || outcome.timed_out))
            rc = step_failed(b, layer, &outcome, err);
        mb_step_outcome_clear(&outcome);
    }
    free(payload);
    free(log);
    return rc;
}

static int packages_possible(const struct mb_machinefile *mf, struct mb_error *err)
{
    const struct mb_recipe *recipe = mb_recipe_find(mf->base);

    if (recipe != NULL && recipe->package_manager == NULL)
        return mb_error_set(err, MB_ERR_INPUT,
                            "%s:%u:%u: base '%s' has no package manager for `packages:`", mf->path,
                            mf->packages_mark.line, mf->packages_mark.column, mf->base);
    return 0;
}

/* Make the disk of `layer` at `disk`: the base image, or an overlay provisioned by its step. */
static int make_disk(struct build *b, const struct mb_layer *layer, const char *disk,
                     struct mb_error *err)
{
    char *parent;
    int rc;

    if (layer->kind == MB_LAYER_BASE)
        return make_base(b, layer, disk, err);
    if (layer->kind == MB_LAYER_PACKAGES && packages_possible(b->plan->mf, err) < 0)
        return -1;
    parent = mb_build_unpacked_layer(b->cache, &layer->parent, err);
    if (parent == NULL)
        return mb_error_prefix(err, "parent of '%s'", layer->name);
    rc = mb_qcow2_create_overlay(disk, parent, err);
    free(parent);
    return rc < 0 ? -1 : run_step(b, layer, disk, err);
}

/* Store the disk as the layer's blob and record it; keep disk and log unpacked. */
static int capture(struct build *b, const struct mb_layer *layer, const char *disk,
                   long long start_ms, uint64_t *size, struct mb_error *err)
{
    struct mb_layer_record rec = {0};
    char hex[MB_DIGEST_HEX_LEN + 1], parent[MB_DIGEST_HEX_LEN + 8];
    char *unpacked = key_path(b->cache, "layers", &layer->key, ".qcow2");
    char *log = key_path(b->cache, "logs", &layer->key, ".log");
    char *console = work_path(b, "console.log");
    int rc = unpacked && log && console ? 0 : mb_error_set(err, MB_ERR_GENERAL, "out of memory");

    /* No host path may reach a layer: the blob has no backing name at all. */
    if (rc == 0 && layer->has_parent)
        rc = mb_qcow2_set_backing(disk, NULL, err);
    if (rc == 0)
        rc = mb_cache_put_layer_file(b->cache, disk, &rec.blob, err);
    rec.key = layer->key;
    rec.has_parent = layer->has_parent;
    rec.parent_key = layer->parent;
    rec.step = layer->name;
    rec.created = rec.last_used = (int64_t)time(NULL);
    rec.build_ms = (int64_t)(mb_clock_seconds_since(start_ms) * 1000);
    if (rc == 0 && layer->has_parent) {
        mb_digest_hex(&layer->parent, hex);
        snprintf(parent, sizeof(parent), "%s.qcow2", hex);
        rc = mb_qcow2_set_backing(disk, parent, err);
    }
    if (rc == 0 && rename(disk, unpacked) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "keep '%s'", unpacked);
    if (rc == 0)
        rename(console, log); /* a missing log (a base has none) is no failure */
    if (rc == 0)
        rc = mb_cache_put_layer_record(b->cache, &rec, err);
    *size = rec.blob.size;
    free(unpacked);
    free(log);
    free(console);
    return rc < 0 ? mb_error_prefix(err, "store layer '%s'", layer->name) : 0;
}

static bool must_rebuild(const struct build *b, const struct mb_layer *layer)
{
    return b->opts->refresh || (b->opts->no_cache && layer->kind != MB_LAYER_BASE);
}

/* The layer is (now) in the cache: someone else may have built it while we waited. */
static int cached_size(struct build *b, const struct mb_layer *layer, uint64_t *size,
                       struct mb_error *err)
{
    struct mb_layer_record rec;
    int found = mb_cache_get_layer_record(b->cache, &layer->key, &rec, err);

    if (found == 1) {
        *size = rec.blob.size;
        mb_layer_record_clear(&rec);
        if (mb_cache_touch_layer(b->cache, &layer->key, err) < 0)
            return -1;
    }
    return found;
}

static int build_layer(struct build *b, size_t i, bool force, struct mb_error *err)
{
    const struct mb_layer *layer = &b->plan->layers[i];
    char *lock = key_path(b->cache, "locks", &layer->key, "");
    char *disk = work_path(b, "layer.qcow2");
    long long start_ms = mb_clock_ms();
    uint64_t size = 0;
    int lock_fd, found = 0, rc = 0;

    lock_fd = lock == NULL ? -1 : mb_fs_lock(lock, LOCK_EX, err);
    if (lock_fd < 0)
        rc = -1;
    if (rc == 0 && !force)
        found = rc = cached_size(b, layer, &size, err);
    if (rc == 0 && found == 0) {
        rc = make_disk(b, layer, disk, err);
        if (rc == 0)
            rc = capture(b, layer, disk, start_ms, &size, err);
        unlink(disk);
    }
    if (lock_fd >= 0)
        close(lock_fd);
    free(lock);
    free(disk);
    if (rc < 0)
        return -1;
    if (b->opts->on_layer != NULL)
        b->opts->on_layer(b->opts->ctx, i, layer, found == 0, mb_clock_seconds_since(start_ms),
                          size);
    return 0;
}

int mb_build_run(struct mb_cache *cache, const struct mb_plan *plan,
                 const struct mb_build_options *opts, struct mb_build_failure *failure,
                 struct mb_error *err)
{
    struct build b = {
        .cache = cache, .plan = plan, .opts = opts, .failure = failure, .work_lock = -1};
    int rc;

    failure->tail = NULL;
    rc = make_dirs(cache, err);
    if (rc == 0)
        rc = open_work(&b, err);
    for (size_t i = 0; rc == 0 && i < plan->count; i++) {
        const struct mb_layer *layer = &plan->layers[i];
        bool force = must_rebuild(&b, layer);

        if (plan->entries[i].cached && !force) {
            uint64_t size = 0;

            rc = cached_size(&b, layer, &size, err) < 0 ? -1 : 0;
            if (rc == 0 && opts->on_layer != NULL)
                opts->on_layer(opts->ctx, i, layer, false, 0, size);
            continue;
        }
        rc = build_layer(&b, i, force, err);
        if (rc == 0 && mb_cancel_requested())
            rc = mb_error_set(err, MB_ERR_INTERRUPTED, "interrupted");
    }
    close_work(&b);
    mb_appliance_clear(&b.appliance);
    return rc;
}

/*
 * The key index and the cache check.
 *
 * keys/<key hex>.json maps a layer key to the blob holding the layer and
 * what is known about it. The index is derived data, so a reader treats
 * every record as possibly damaged: each field is checked, and a record
 * that does not parse, or names a key other than its file's, is
 * MB_ERR_INTEGRITY, never a crash and never a guess. mb_cache_verify()
 * re-hashes every blob and checks every record against them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "mbuild/cache.h"
#include "mbuild/fsutil.h"
#include "internal.h"

#define RECORD_VERSION 1
#define RECORD_MAX     (1024 * 1024)
#define RECORD_SUFFIX  ".json"
/* "<64 hex>.json" and a NUL */
#define RECORD_NAME_LEN (MB_DIGEST_HEX_LEN + sizeof(RECORD_SUFFIX))
/* What mb_fs_write_atomic() names its temp files, after the record's own name. */
#define RECORD_TEMP_MARK ".json.tmp-"
/* A record's temp lives for milliseconds; one this old lost its writer. */
#define RECORD_TEMP_STALE_SECONDS 3600

static void record_name(const struct mb_digest *key, char name[RECORD_NAME_LEN])
{
    mb_digest_hex(key, name);
    memcpy(name + MB_DIGEST_HEX_LEN, RECORD_SUFFIX, sizeof(RECORD_SUFFIX));
}

/* Whether `name` is "<64 lowercase hex>.json", and the key it names. */
static bool record_name_key(const char *name, struct mb_digest *key)
{
    char hex[MB_DIGEST_HEX_LEN + 1];
    struct mb_error ignored;

    if (strlen(name) != RECORD_NAME_LEN - 1 || strcmp(name + MB_DIGEST_HEX_LEN, RECORD_SUFFIX) != 0)
        return false;
    memcpy(hex, name, MB_DIGEST_HEX_LEN);
    hex[MB_DIGEST_HEX_LEN] = '\0';
    return mb_digest_parse_hex(hex, key, &ignored) == 0;
}

static int damaged(struct mb_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int damaged(struct mb_error *err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    err->code = MB_ERR_INTEGRITY;
    return -1;
}

static int oom(struct mb_error *err)
{
    return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
}

/* The fields of a record as jansson hands them over; strings borrowed from the JSON. */
struct record_fields {
    json_int_t version;
    const char *key;
    const char *parent_key;
    const char *digest;
    json_int_t size;
    const char *diff_digest;
    json_int_t diff_size;
    const char *step;
    json_int_t created;
    json_int_t last_used;
    json_int_t build_ms;
};

static int field_digest(const char *field, const char *text, struct mb_digest *out,
                        struct mb_error *err)
{
    if (mb_digest_parse(text, out, err) == 0)
        return 0;
    mb_error_prefix(err, "field '%s'", field);
    err->code = MB_ERR_INTEGRITY;
    return -1;
}

static int field_count(const char *field, json_int_t value, struct mb_error *err)
{
    if (value < 0)
        return damaged(err, "field '%s' is negative", field);
    return 0;
}

static int fields_check(const struct record_fields *f, struct mb_error *err)
{
    if (f->version != RECORD_VERSION)
        return damaged(err, "unknown record version %lld", (long long)f->version);
    if (field_count("size", f->size, err) < 0 || field_count("diff_size", f->diff_size, err) < 0 ||
        field_count("created", f->created, err) < 0 ||
        field_count("last_used", f->last_used, err) < 0 ||
        field_count("build_ms", f->build_ms, err) < 0)
        return -1;
    return 0;
}

static int fields_to_record(const struct record_fields *f, struct mb_layer_record *rec,
                            struct mb_error *err)
{
    if (fields_check(f, err) < 0 || field_digest("key", f->key, &rec->key, err) < 0 ||
        field_digest("digest", f->digest, &rec->blob.digest, err) < 0 ||
        field_digest("diff_digest", f->diff_digest, &rec->blob.diff_digest, err) < 0)
        return -1;
    rec->has_parent = f->parent_key != NULL;
    if (rec->has_parent && field_digest("parent_key", f->parent_key, &rec->parent_key, err) < 0)
        return -1;
    rec->blob.size = (uint64_t)f->size;
    rec->blob.diff_size = (uint64_t)f->diff_size;
    rec->created = f->created;
    rec->last_used = f->last_used;
    rec->build_ms = f->build_ms;
    rec->step = strdup(f->step);
    if (rec->step == NULL)
        return oom(err);
    return 0;
}

/* Strict: every field present with its type, no other field, no duplicate. */
static int record_decode(const char *text, size_t len, const struct mb_digest *want,
                         struct mb_layer_record *rec, struct mb_error *err)
{
    struct record_fields f = {0};
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    int rc;

    memset(rec, 0, sizeof(*rec));
    if (root == NULL)
        return damaged(err, "line %d: %s", jerr.line, jerr.text);
    rc = json_unpack_ex(
        root, &jerr, JSON_STRICT, "{s:I, s:s, s?s, s:s, s:I, s:s, s:I, s:s, s:I, s:I, s?I}",
        "version", &f.version, "key", &f.key, "parent_key", &f.parent_key, "digest", &f.digest,
        "size", &f.size, "diff_digest", &f.diff_digest, "diff_size", &f.diff_size, "step", &f.step,
        "created", &f.created, "last_used", &f.last_used, "build_ms", &f.build_ms);
    if (rc < 0)
        rc = damaged(err, "%s", jerr.text);
    if (rc == 0)
        rc = fields_to_record(&f, rec, err);
    if (rc == 0 && !mb_digest_equal(&rec->key, want))
        rc = damaged(err, "record is for key %s", f.key);
    json_decref(root);
    if (rc < 0)
        mb_layer_record_clear(rec);
    return rc;
}

static int record_check(struct mb_cache *cache, const struct mb_layer_record *rec,
                        struct mb_error *err)
{
    char blob[MB_DIGEST_STR_LEN];

    if (rec->blob.size > INT64_MAX || rec->blob.diff_size > INT64_MAX)
        return mb_error_set(err, MB_ERR_GENERAL, "size out of range");
    if (rec->created < 0 || rec->last_used < 0)
        return mb_error_set(err, MB_ERR_GENERAL, "time before 1970");
    /* A record naming a missing blob is damage to verify; never write one. */
    if (!mb_cache_has_blob(cache, &rec->blob.digest)) {
        mb_digest_str(&rec->blob.digest, blob);
        return mb_error_set(err, MB_ERR_GENERAL, "blob %s is not in the cache", blob);
    }
    return 0;
}

/* Malloc'ed JSON text of a record, with a final newline. */
static char *record_encode(const struct mb_layer_record *rec, struct mb_error *err)
{
    char key[MB_DIGEST_STR_LEN], parent[MB_DIGEST_STR_LEN];
    char digest[MB_DIGEST_STR_LEN], diff[MB_DIGEST_STR_LEN];
    json_error_t jerr;
    json_t *obj;
    char *text;
    char *line = NULL;

    mb_digest_str(&rec->key, key);
    mb_digest_str(&rec->parent_key, parent);
    mb_digest_str(&rec->blob.digest, digest);
    mb_digest_str(&rec->blob.diff_digest, diff);
    obj = json_pack_ex(&jerr, 0, "{s:i, s:s, s:s*, s:s, s:I, s:s, s:I, s:s, s:I, s:I, s:I}",
                       "version", RECORD_VERSION, "key", key, "parent_key",
                       rec->has_parent ? parent : NULL, "digest", digest, "size",
                       (json_int_t)rec->blob.size, "diff_digest", diff, "diff_size",
                       (json_int_t)rec->blob.diff_size, "step", rec->step ? rec->step : "",
                       "created", (json_int_t)rec->created, "last_used", (json_int_t)rec->last_used,
                       "build_ms", (json_int_t)rec->build_ms);
    if (obj == NULL) {
        mb_error_set(err, MB_ERR_GENERAL, "encode record: %s", jerr.text);
        return NULL;
    }
    text = json_dumps(obj, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(obj);
    if (text == NULL || asprintf(&line, "%s\n", text) < 0) {
        line = NULL;
        oom(err);
    }
    free(text);
    return line;
}

int mb_cache_put_layer_record(struct mb_cache *cache, const struct mb_layer_record *rec,
                              struct mb_error *err)
{
    char name[RECORD_NAME_LEN];
    char key[MB_DIGEST_STR_LEN];
    char *text = NULL;
    char *path = NULL;
    int rc = record_check(cache, rec, err);

    record_name(&rec->key, name);
    if (rc == 0 && (text = record_encode(rec, err)) == NULL)
        rc = -1;
    if (rc == 0 && asprintf(&path, "%s/keys/%s", cache->dir, name) < 0) {
        path = NULL;
        rc = oom(err);
    }
    if (rc == 0)
        rc = mb_fs_write_atomic(path, text, strlen(text), err);
    free(text);
    free(path);
    if (rc < 0) {
        mb_digest_str(&rec->key, key);
        return mb_error_prefix(err, "record layer %s", key);
    }
    return 0;
}

int mb_cache_get_layer_record(struct mb_cache *cache, const struct mb_digest *key,
                              struct mb_layer_record *out, struct mb_error *err)
{
    char name[RECORD_NAME_LEN];
    char *text = NULL;
    size_t len;
    int fd;
    int rc;

    record_name(key, name);
    fd = openat(cache->keys_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return 0;
    if (fd < 0)
        rc = errno == ELOOP ? damaged(err, "a symlink")
                            : mb_error_errno(err, MB_ERR_GENERAL, errno, "open");
    else
        rc = cache_read_fd(fd, RECORD_MAX, MB_ERR_INTEGRITY, &text, &len, err);
    if (fd >= 0)
        close(fd);
    if (rc == 0)
        rc = record_decode(text, len, key, out, err);
    free(text);
    if (rc < 0)
        return mb_error_prefix(err, "key record 'keys/%s'", name);
    return 1;
}

/*
 * NEEDSWORK: read, modify, write without a lock: a record replaced by
 * another process meanwhile is overwritten with the old one, newer time.
 */
int mb_cache_touch_layer(struct mb_cache *cache, const struct mb_digest *key, struct mb_error *err)
{
    char name[MB_DIGEST_STR_LEN];
    struct mb_layer_record rec;
    int rc = mb_cache_get_layer_record(cache, key, &rec, err);

    mb_digest_str(key, name);
    if (rc == 0)
        return mb_error_set(err, MB_ERR_GENERAL, "touch layer %s: not in the key index", name);
    if (rc < 0)
        return mb_error_prefix(err, "touch layer %s", name);
    rec.last_used = (int64_t)time(NULL);
    rc = mb_cache_put_layer_record(cache, &rec, err);
    mb_layer_record_clear(&rec);
    if (rc < 0)
        return mb_error_prefix(err, "touch layer %s", name);
    return 0;
}

void mb_layer_record_clear(struct mb_layer_record *rec)
{
    free(rec->step);
    rec->step = NULL;
}

void mb_layer_records_free(struct mb_layer_record *recs, size_t count)
{
    for (size_t i = 0; i < count; i++)
        mb_layer_record_clear(&recs[i]);
    free(recs);
}

struct record_list {
    struct mb_layer_record *recs;
    size_t count;
    size_t cap;
};

/* A record removed since the directory was read is simply not listed. */
static int list_add(struct mb_cache *cache, struct record_list *list, const struct mb_digest *key,
                    struct mb_error *err)
{
    struct mb_layer_record rec;
    int found = mb_cache_get_layer_record(cache, key, &rec, err);

    if (found <= 0)
        return found;
    if (list->count == list->cap) {
        size_t cap = list->cap ? 2 * list->cap : 16;
        struct mb_layer_record *grown = reallocarray(list->recs, cap, sizeof(*grown));

        if (grown == NULL) {
            mb_layer_record_clear(&rec);
            return oom(err);
        }
        list->recs = grown;
        list->cap = cap;
    }
    list->recs[list->count++] = rec;
    return 0;
}

static int record_order(const void *pa, const void *pb)
{
    const struct mb_layer_record *a = pa;
    const struct mb_layer_record *b = pb;

    if (a->created != b->created)
        return a->created < b->created ? -1 : 1;
    return memcmp(a->key.bytes, b->key.bytes, MB_DIGEST_LEN);
}

int mb_cache_list_layers(struct mb_cache *cache, struct mb_layer_record **out, size_t *count,
                         struct mb_error *err)
{
    struct record_list list = {0};
    DIR *d = cache_opendir(cache->keys_fd, err);
    const char *name = NULL;
    struct mb_digest key;
    int rc;

    if (d == NULL)
        return mb_error_prefix(err, "list layers");
    while ((rc = cache_next_entry(d, &name, err)) > 0)
        if (record_name_key(name, &key) && (rc = list_add(cache, &list, &key, err)) < 0)
            break;
    closedir(d);
    if (rc < 0) {
        mb_layer_records_free(list.recs, list.count);
        return mb_error_prefix(err, "list layers");
    }
    if (list.count > 1)
        qsort(list.recs, list.count, sizeof(list.recs[0]), record_order);
    *out = list.recs;
    *count = list.count;
    return 0;
}

void cache_sweep_key_temps(struct mb_cache *cache)
{
    struct mb_error ignored;
    DIR *d = cache_opendir(cache->keys_fd, &ignored);
    time_t stale = time(NULL) - RECORD_TEMP_STALE_SECONDS;
    const char *name = NULL;
    struct stat st;

    if (d == NULL)
        return;
    while (cache_next_entry(d, &name, &ignored) > 0)
        if (strstr(name, RECORD_TEMP_MARK) != NULL &&
            fstatat(cache->keys_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
            st.st_mtime < stale)
            unlinkat(cache->keys_fd, name, 0);
    closedir(d);
}

/* One run of mb_cache_verify. */
struct verify {
    struct mb_cache *cache;
    mb_verify_problem_fn on_problem;
    void *ctx;
    struct mb_verify_report report;
    struct mb_digest *damaged; /* blobs found damaged, for the records naming them */
    size_t n_damaged;
};

static void problem(struct verify *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(struct verify *v, const char *fmt, ...)
{
    char line[MB_ERROR_MAX + 256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (v->on_problem != NULL)
        v->on_problem(v->ctx, line);
}

static int remember_damaged(struct verify *v, const struct mb_digest *digest, struct mb_error *err)
{
    struct mb_digest *grown = reallocarray(v->damaged, v->n_damaged + 1, sizeof(*grown));

    if (grown == NULL)
        return oom(err);
    v->damaged = grown;
    v->damaged[v->n_damaged++] = *digest;
    return 0;
}

static bool is_damaged(const struct verify *v, const struct mb_digest *digest)
{
    for (size_t i = 0; i < v->n_damaged; i++)
        if (mb_digest_equal(&v->damaged[i], digest))
            return true;
    return false;
}

/* An unreadable blob is damage to report, not a reason to stop checking. */
static int verify_blob(struct verify *v, const char *name, struct mb_error *err)
{
    struct mb_digest want, got;
    char got_str[MB_DIGEST_STR_LEN];
    struct mb_error berr;
    int rc;

    v->report.blobs_checked++;
    if (mb_digest_parse_hex(name, &want, &berr) < 0) {
        v->report.blobs_damaged++;
        problem(v, "blobs/sha256/%s: name is not a sha256 digest", name);
        return 0;
    }
    rc = cache_hash_blob_entry(v->cache, name, &got, &berr);
    if (rc == 1 && mb_digest_equal(&want, &got))
        return 0;
    v->report.blobs_damaged++;
    if (rc < 0)
        problem(v, "blob sha256:%s is unreadable: %s", name, berr.msg);
    else if (rc == 0)
        problem(v, "blob sha256:%s is not a regular file", name);
    else {
        mb_digest_str(&got, got_str);
        problem(v, "blob sha256:%s is damaged: its content hashes to %s", name, got_str);
    }
    return remember_damaged(v, &want, err);
}

static int verify_blobs(struct verify *v, struct mb_error *err)
{
    DIR *d = cache_opendir(v->cache->blobs_fd, err);
    const char *name = NULL;
    int rc;

    if (d == NULL)
        return mb_error_prefix(err, "check blobs");
    while ((rc = cache_next_entry(d, &name, err)) > 0)
        if ((rc = verify_blob(v, name, err)) < 0)
            break;
    closedir(d);
    return rc < 0 ? mb_error_prefix(err, "check blobs") : 0;
}

static void verify_record_blob(struct verify *v, const char *name,
                               const struct mb_layer_record *rec)
{
    char blob[MB_DIGEST_STR_LEN];
    const char *why = NULL;

    if (!mb_cache_has_blob(v->cache, &rec->blob.digest))
        why = "missing";
    else if (is_damaged(v, &rec->blob.digest))
        why = "damaged";
    if (why == NULL)
        return;
    v->report.records_damaged++;
    mb_digest_str(&rec->blob.digest, blob);
    problem(v, "key record 'keys/%s' names blob %s, which is %s", name, blob, why);
}

static void verify_record(struct verify *v, const char *name)
{
    struct mb_layer_record rec;
    struct mb_digest key;
    struct mb_error rerr;
    int found;

    /* Another process's record being written right now. */
    if (strstr(name, RECORD_TEMP_MARK) != NULL)
        return;
    v->report.records_checked++;
    if (!record_name_key(name, &key)) {
        v->report.records_damaged++;
        problem(v, "keys/%s: not a key record", name);
        return;
    }
    found = mb_cache_get_layer_record(v->cache, &key, &rec, &rerr);
    if (found == 0) {
        v->report.records_checked--; /* removed meanwhile */
        return;
    }
    if (found < 0) {
        v->report.records_damaged++;
        problem(v, "%s", rerr.msg);
        return;
    }
    verify_record_blob(v, name, &rec);
    mb_layer_record_clear(&rec);
}

static int verify_records(struct verify *v, struct mb_error *err)
{
    DIR *d = cache_opendir(v->cache->keys_fd, err);
    const char *name = NULL;
    int rc;

    if (d == NULL)
        return mb_error_prefix(err, "check key records");
    while ((rc = cache_next_entry(d, &name, err)) > 0)
        verify_record(v, name);
    closedir(d);
    return rc < 0 ? mb_error_prefix(err, "check key records") : 0;
}

/*
 * NEEDSWORK: damage is only reported; rebuilding the key index and
 * index.json from blob metadata (DESIGN.md) needs the image manifests.
 * Uncompressed digests are checked on extraction, not here: that would
 * mean decompressing every layer.
 */
int mb_cache_verify(struct mb_cache *cache, mb_verify_problem_fn on_problem, void *ctx,
                    struct mb_verify_report *out, struct mb_error *err)
{
    struct verify v = {.cache = cache, .on_problem = on_problem, .ctx = ctx};
    int rc = verify_blobs(&v, err);

    if (rc == 0)
        rc = verify_records(&v, err);
    free(v.damaged);
    if (rc < 0)
        return mb_error_prefix(err, "verify cache '%s'", cache->dir);
    *out = v.report;
    return 0;
}

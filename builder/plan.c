/*
 * The build plan and the explanation of each cache miss.
 *
 * A miss is explained by the first of the layer's own inputs that differs
 * from the recorded plan (script, arch, network, env, copied files), and
 * only then by its parent: a changed step says "step script changed", the
 * steps after it say "parent layer changed".
 */
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mbuild/fsutil.h"
#include "mbuild/plan.h"

#define RECORD_MAX_SIZE (16 * 1024 * 1024)

static void digest_of(const char *text, char out[MB_DIGEST_STR_LEN])
{
    struct mb_digest d;

    mb_sha256_buf(text, strlen(text), &d);
    mb_digest_str(&d, out);
}

static json_t *digest_json(const struct mb_digest *d)
{
    char s[MB_DIGEST_STR_LEN];

    mb_digest_str(d, s);
    return json_string(s);
}

static json_t *file_json(const struct mb_copied_file *f)
{
    char type[2] = {(char)f->type, '\0'};
    char mode[8];

    snprintf(mode, sizeof(mode), "%04o", (unsigned)f->mode);
    return json_pack("{s:s, s:s, s:s, s:o}", "source", f->source, "type", type, "mode", mode,
                     "digest", digest_json(&f->digest));
}

/* A layer's inputs as recorded: digests only, never the text itself. */
static json_t *layer_record_json(const struct mb_layer *layer)
{
    char text[MB_DIGEST_STR_LEN];
    json_t *env = json_object();
    json_t *files = json_object();

    digest_of(layer->text, text);
    for (size_t i = 0; i < layer->env.count; i++) {
        char value[MB_DIGEST_STR_LEN];

        digest_of(layer->env.vars[i].value, value);
        json_object_set_new(env, layer->env.vars[i].name, json_string(value));
    }
    for (size_t i = 0; i < layer->file_count; i++)
        json_object_set_new(files, layer->files[i].target, file_json(&layer->files[i]));
    return json_pack("{s:s, s:s, s:o, s:o*, s:s, s:s, s:b, s:o, s:o}", "name", layer->name, "kind",
                     mb_layer_kind_name(layer->kind), "key", digest_json(&layer->key), "parent",
                     layer->has_parent ? digest_json(&layer->parent) : NULL, "text", text, "arch",
                     layer->arch, "network", layer->network, "env", env, "files", files);
}

static char *record_path(struct mb_cache *cache, const struct mb_machinefile *mf)
{
    char *copy = strdup(mf->path);
    char digest[MB_DIGEST_HEX_LEN + 1];
    struct mb_digest d;
    char *abs = NULL, *path = NULL;

    if (copy == NULL)
        return NULL;
    if (asprintf(&abs, "%s/%s", mf->project_dir, basename(copy)) >= 0) {
        mb_sha256_buf(abs, strlen(abs), &d);
        mb_digest_hex(&d, digest);
        if (asprintf(&path, "%s/plans/%s.json", mb_cache_dir(cache), digest) < 0)
            path = NULL;
    }
    free(abs);
    free(copy);
    return path;
}

/* The recorded layers for `mf`, or NULL when none (or unreadable: a record is only a hint). */
static json_t *load_record(struct mb_cache *cache, const struct mb_machinefile *mf)
{
    char *path = record_path(cache, mf);
    struct mb_error err;
    json_t *root = NULL, *layers;
    char *text;
    size_t len;

    if (path != NULL && mb_fs_read_file(path, RECORD_MAX_SIZE, &text, &len, &err) == 0) {
        root = json_loadb(text, len, 0, NULL);
        free(text);
    }
    free(path);
    layers = json_object_get(root, "layers");
    if (!json_is_array(layers) ||
        json_integer_value(json_object_get(root, "version")) != MB_PLAN_FORMAT_VERSION) {
        json_decref(root);
        return NULL;
    }
    json_incref(layers);
    json_decref(root);
    return layers;
}

static char *format(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static char *format(const char *fmt, ...)
{
    va_list ap;
    char *out;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&out, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : out;
}

/* The first difference between two env maps of name -> value digest. */
static char *env_change(json_t *cur, json_t *old)
{
    const char *name;
    json_t *value;

    json_object_foreach(cur, name, value)
    {
        json_t *was = json_object_get(old, name);

        if (was == NULL)
            return format("env '%s' added", name);
        if (!json_equal(value, was))
            return format("env '%s' changed", name);
    }
    json_object_foreach(old, name, value)
    {
        if (json_object_get(cur, name) == NULL)
            return format("env '%s' removed", name);
    }
    return NULL;
}

/* Absent in both counts as the same (a base has no parent); json_equal says no to NULLs. */
static bool same_field(json_t *a, json_t *b, const char *field)
{
    json_t *x = json_object_get(a, field), *y = json_object_get(b, field);

    return (x == NULL && y == NULL) || json_equal(x, y);
}

/* The first difference between two maps of target -> copied file, named by source. */
static char *file_change(json_t *cur, json_t *old)
{
    const char *target;
    json_t *f;

    json_object_foreach(cur, target, f)
    {
        const char *source = json_string_value(json_object_get(f, "source"));
        json_t *was = json_object_get(old, target);

        if (was == NULL)
            return format("copied file '%s' added", source);
        if (!same_field(f, was, "digest") || !same_field(f, was, "type"))
            return format("copied file '%s' changed", source);
        if (!same_field(f, was, "mode"))
            return format("mode of copied file '%s' changed", source);
    }
    json_object_foreach(old, target, f)
    {
        if (json_object_get(cur, target) == NULL)
            return format("copied file '%s' removed",
                          json_string_value(json_object_get(f, "source")));
    }
    return NULL;
}

static const char *text_change(json_t *cur)
{
    const char *kind = json_string_value(json_object_get(cur, "kind"));

    if (strcmp(kind, "base") == 0)
        return "base image changed";
    if (strcmp(kind, "packages") == 0)
        return "package list changed";
    return "step script changed";
}

/* Why a layer whose inputs are `cur` misses, given what was recorded at its position. */
static char *explain_miss(json_t *cur, json_t *old, bool had_record)
{
    char *change;

    if (old == NULL)
        return strdup(had_record ? "new layer since the last plan" : "not built yet");
    if (!same_field(cur, old, "kind"))
        return strdup("a different kind of layer than at the last plan");
    if (!same_field(cur, old, "text"))
        return strdup(text_change(cur));
    if (!same_field(cur, old, "arch"))
        return strdup("arch changed");
    if (!same_field(cur, old, "network"))
        return strdup("network setting changed");
    change = env_change(json_object_get(cur, "env"), json_object_get(old, "env"));
    if (change != NULL)
        return change;
    change = file_change(json_object_get(cur, "files"), json_object_get(old, "files"));
    if (change != NULL)
        return change;
    if (!same_field(cur, old, "parent"))
        return strdup("parent layer changed");
    if (same_field(cur, old, "key"))
        return strdup("not in the cache (inputs unchanged since the last plan)");
    return strdup("inputs changed");
}

static int plan_entry(struct mb_cache *cache, struct mb_plan *plan, size_t i, json_t *record,
                      struct mb_error *err)
{
    struct mb_plan_entry *e = &plan->entries[i];
    struct mb_layer_record rec;
    json_t *cur;
    int found;

    e->layer = &plan->layers[i];
    found = mb_cache_get_layer_record(cache, &e->layer->key, &rec, err);
    if (found < 0)
        return mb_error_prefix(err, "look up layer '%s'", e->layer->name);
    e->cached = found == 1;
    if (e->cached) {
        mb_layer_record_clear(&rec);
        return 0;
    }
    cur = layer_record_json(e->layer);
    e->reason = explain_miss(cur, json_array_get(record, i), record != NULL);
    json_decref(cur);
    if (e->reason == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    return 0;
}

int mb_plan_make(struct mb_cache *cache, const struct mb_machinefile *mf, struct mb_plan **out,
                 struct mb_error *err)
{
    struct mb_plan *plan = calloc(1, sizeof(*plan));
    json_t *record;
    int rc = 0;

    if (plan == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    plan->mf = mf;
    if (mb_layers_from_machinefile(mf, &plan->layers, &plan->count, err) < 0) {
        free(plan);
        return -1;
    }
    plan->entries = calloc(plan->count, sizeof(*plan->entries));
    if (plan->entries == NULL) {
        mb_plan_free(plan);
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    }
    record = load_record(cache, mf);
    plan->had_record = record != NULL;
    for (size_t i = 0; i < plan->count && rc == 0; i++)
        rc = plan_entry(cache, plan, i, record, err);
    json_decref(record);
    if (rc < 0) {
        mb_plan_free(plan);
        return -1;
    }
    *out = plan;
    return 0;
}

int mb_plan_record(struct mb_cache *cache, const struct mb_plan *plan, struct mb_error *err)
{
    char *path = record_path(cache, plan->mf);
    json_t *layers = json_array();
    json_t *root;
    char *text;
    int rc;

    for (size_t i = 0; i < plan->count; i++)
        json_array_append_new(layers, layer_record_json(&plan->layers[i]));
    root = json_pack("{s:i, s:o}", "version", MB_PLAN_FORMAT_VERSION, "layers", layers);
    text = root == NULL ? NULL : json_dumps(root, JSON_INDENT(1) | JSON_SORT_KEYS);
    json_decref(root);
    if (path == NULL || text == NULL) {
        free(path);
        free(text);
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    }
    rc = mb_fs_write_atomic(path, text, strlen(text), err);
    free(path);
    free(text);
    return rc < 0 ? mb_error_prefix(err, "record plan") : 0;
}

static json_t *entry_json(const struct mb_plan_entry *e, size_t index)
{
    const struct mb_layer *l = e->layer;

    return json_pack("{s:I, s:s, s:s, s:s, s:o, s:o*, s:b, s:s*}", "index", (json_int_t)index,
                     "name", l->name, "kind", mb_layer_kind_name(l->kind), "text", l->text, "key",
                     digest_json(&l->key), "parent", l->has_parent ? digest_json(&l->parent) : NULL,
                     "cached", e->cached, "reason", e->reason);
}

char *mb_plan_to_json(const struct mb_plan *plan, struct mb_error *err)
{
    json_t *layers = json_array();
    size_t cached = 0;
    json_t *root;
    char *text;

    for (size_t i = 0; i < plan->count; i++) {
        json_array_append_new(layers, entry_json(&plan->entries[i], i));
        cached += plan->entries[i].cached;
    }
    root = json_pack("{s:i, s:s, s:o, s:{s:I, s:I, s:I}}", "version", MB_PLAN_FORMAT_VERSION,
                     "machinefile", plan->mf->path, "layers", layers, "summary", "layers",
                     (json_int_t)plan->count, "cached", (json_int_t)cached, "missing",
                     (json_int_t)(plan->count - cached));
    text = root == NULL ? NULL : json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (text == NULL) {
        mb_error_set(err, MB_ERR_GENERAL, "cannot encode the plan as JSON");
        return NULL;
    }
    char *out = realloc(text, strlen(text) + 2);

    if (out == NULL) {
        free(text);
        mb_error_set(err, MB_ERR_GENERAL, "out of memory");
        return NULL;
    }
    strcat(out, "\n");
    return out;
}

void mb_plan_free(struct mb_plan *plan)
{
    if (plan == NULL)
        return;
    for (size_t i = 0; plan->entries != NULL && i < plan->count; i++)
        free(plan->entries[i].reason);
    free(plan->entries);
    mb_layers_free(plan->layers, plan->count);
    free(plan);
}

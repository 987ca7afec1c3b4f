/*
 * The build plan: hits come from the cache's key index, and each miss is
 * explained by the first input that changed since the recorded plan.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mbuild/plan.h"

#include "helpers.h"

struct fixture {
    char *dir;
    char *machinefile;
    struct mb_cache *cache;
};

static struct fixture setup(const char *text)
{
    struct fixture f;
    struct mb_error err = {0};
    char *cache_dir;

    f.dir = mbt_tempdir();
    f.machinefile = mbt_path(f.dir, "Machinefile");
    mbt_write(f.dir, "Machinefile", text);
    mbt_write(f.dir, "data.txt", "data\n");
    cache_dir = mbt_path(f.dir, "cache");
    cr_assert_eq(mb_cache_open(cache_dir, &f.cache, &err), 0, "%s", err.msg);
    free(cache_dir);
    return f;
}

static void teardown(struct fixture *f)
{
    mb_cache_close(f->cache);
    mbt_rm_rf(f->dir);
    free(f->dir);
    free(f->machinefile);
}

static struct mb_plan *plan_of(struct fixture *f, struct mb_machinefile **mf)
{
    struct mb_error err = {0};
    struct mb_plan *plan;

    cr_assert_eq(mb_machinefile_load(f->machinefile, mf, &err), 0, "%s", err.msg);
    cr_assert_eq(mb_plan_make(f->cache, *mf, &plan, &err), 0, "%s", err.msg);
    return plan;
}

/* Pretend layer `i` of the plan was built: an index record pointing at a real blob. */
static void mark_built(struct fixture *f, const struct mb_plan *plan, size_t i)
{
    struct mb_layer_record rec = {0};
    struct mb_error err = {0};
    char *blob = mbt_path(f->dir, "layer.bin");

    mbt_write(f->dir, "layer.bin", plan->layers[i].name);
    cr_assert_eq(mb_cache_put_layer_file(f->cache, blob, &rec.blob, &err), 0, "%s", err.msg);
    rec.key = plan->layers[i].key;
    rec.has_parent = plan->layers[i].has_parent;
    rec.parent_key = plan->layers[i].parent;
    rec.step = plan->layers[i].name;
    rec.created = rec.last_used = 1;
    cr_assert_eq(mb_cache_put_layer_record(f->cache, &rec, &err), 0, "%s", err.msg);
    free(blob);
}

static const char file_v1[] = "version: 1\nbase: tiny\nsteps:\n"
                              "  - {name: one, run: echo 1, copy: [data.txt]}\n"
                              "  - {name: two, run: echo 2}\n";

Test(plan, hits_come_from_the_key_index)
{
    struct fixture f = setup(file_v1);
    struct mb_machinefile *mf;
    struct mb_plan *plan = plan_of(&f, &mf);

    cr_assert_eq(plan->count, 3);
    for (size_t i = 0; i < plan->count; i++) {
        cr_assert(!plan->entries[i].cached);
        cr_assert_str_eq(plan->entries[i].reason, "not built yet");
    }
    mark_built(&f, plan, 0);
    mark_built(&f, plan, 1);
    mb_plan_free(plan);
    mb_machinefile_free(mf);

    plan = plan_of(&f, &mf);
    cr_assert(plan->entries[0].cached);
    cr_assert(plan->entries[1].cached);
    cr_assert_null(plan->entries[1].reason);
    cr_assert(!plan->entries[2].cached);
    mb_plan_free(plan);
    mb_machinefile_free(mf);
    teardown(&f);
}

struct reason_case {
    const char *edit_from;
    const char *edit_to;
    const char *data; /* new content of data.txt, or NULL */
    size_t layer;
    const char *reason;
};

static const struct reason_case reason_cases[] = {
    {"echo 1", "echo one", NULL, 1, "step script changed"},
    {"echo 1", "echo one", NULL, 2, "parent layer changed"},
    {"echo 1", "echo 1", "changed\n", 1, "copied file 'data.txt' changed"},
    {"steps:", "env: {X: y}\nsteps:", NULL, 1, "env 'X' added"},
    {"run: echo 2", "run: echo 2, network: false", NULL, 2, "network setting changed"},
    {"base: tiny", "base: debian-12", NULL, 0, "base image changed"},
    {"run: echo 2}\n", "run: echo 2}\n  - {run: echo 3}\n", NULL, 3,
     "new layer since the last plan"},
    {"echo 1", "echo one", NULL, 0, "not in the cache (inputs unchanged since the last plan)"},
};

static void check_reason(const struct reason_case *c)
{
    struct fixture f = setup(file_v1);
    struct mb_machinefile *mf;
    struct mb_error err = {0};
    struct mb_plan *plan = plan_of(&f, &mf);
    const char *at = strstr(file_v1, c->edit_from);
    char text[1024];

    cr_assert_eq(mb_plan_record(f.cache, plan, &err), 0, "%s", err.msg);
    mb_plan_free(plan);
    mb_machinefile_free(mf);
    snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - file_v1), file_v1, c->edit_to,
             at + strlen(c->edit_from));
    mbt_write(f.dir, "Machinefile", text);
    if (c->data != NULL)
        mbt_write(f.dir, "data.txt", c->data);

    plan = plan_of(&f, &mf);
    cr_assert(plan->had_record);
    cr_assert_str_eq(plan->entries[c->layer].reason, c->reason, "edit '%s': layer %zu: '%s'",
                     c->edit_to, c->layer, plan->entries[c->layer].reason);
    mb_plan_free(plan);
    mb_machinefile_free(mf);
    teardown(&f);
}

Test(plan, each_miss_names_what_changed)
{
    for (size_t i = 0; i < sizeof(reason_cases) / sizeof(reason_cases[0]); i++)
        check_reason(&reason_cases[i]);
}

Test(plan, json_document_is_versioned_and_lists_every_layer)
{
    struct fixture f = setup(file_v1);
    struct mb_machinefile *mf;
    struct mb_error err = {0};
    struct mb_plan *plan = plan_of(&f, &mf);
    char *text = mb_plan_to_json(plan, &err);
    char key[MB_DIGEST_STR_LEN];
    json_t *doc;

    cr_assert_not_null(text, "%s", err.msg);
    doc = json_loads(text, 0, NULL);
    cr_assert_not_null(doc);
    cr_assert_eq(json_integer_value(json_object_get(doc, "version")), MB_PLAN_FORMAT_VERSION);
    cr_assert_eq(json_array_size(json_object_get(doc, "layers")), 3);
    mb_digest_str(&plan->layers[2].key, key);
    cr_assert_str_eq(json_string_value(
                         json_object_get(json_array_get(json_object_get(doc, "layers"), 2), "key")),
                     key);
    json_decref(doc);
    free(text);
    mb_plan_free(plan);
    mb_machinefile_free(mf);
    teardown(&f);
}

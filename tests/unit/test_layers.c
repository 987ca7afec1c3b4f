/*
 * Layer keys: the same inputs give the same key wherever the project lives;
 * each input that decides a layer's content changes that layer's key and
 * every later one, never an earlier one; nothing else changes any key.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <utime.h>

#include "mbuild/layers.h"

#include "helpers.h"

#define MAX_LAYERS 8

static const char base_file[] = "version: 1\n"
                                "base: tiny\n"
                                "env: {A: one, B: two}\n"
                                "packages: [git, curl]\n"
                                "steps:\n"
                                "  - name: first\n"
                                "    run: echo first\n"
                                "  - name: copy\n"
                                "    copy: [app.sh, conf]\n"
                                "    run: /work/app.sh\n"
                                "  - name: last\n"
                                "    run: echo last\n";

struct keys {
    size_t count;
    struct mb_digest key[MAX_LAYERS];
};

/* A project in a new directory: the Machinefile `text` and the files it copies. */
static char *make_project(const char *text)
{
    char *dir = mbt_tempdir();
    char *script;

    mbt_write(dir, "Machinefile", text);
    mbt_write(dir, "app.sh", "#!/bin/sh\necho app\n");
    mbt_write(dir, "conf/a.conf", "a=1\n");
    mbt_write(dir, "conf/sub/b.conf", "b=2\n");
    script = mbt_path(dir, "app.sh");
    chmod(script, 0755);
    free(script);
    return dir;
}

static struct keys keys_of(const char *dir)
{
    char *path = mbt_path(dir, "Machinefile");
    struct mb_machinefile *mf;
    struct mb_layer *layers;
    struct mb_error err = {0};
    struct keys k = {0};

    cr_assert_eq(mb_machinefile_load(path, &mf, &err), 0, "%s", err.msg);
    cr_assert_eq(mb_layers_from_machinefile(mf, &layers, &k.count, &err), 0, "%s", err.msg);
    cr_assert_leq(k.count, MAX_LAYERS);
    for (size_t i = 0; i < k.count; i++)
        k.key[i] = layers[i].key;
    mb_layers_free(layers, k.count);
    mb_machinefile_free(mf);
    free(path);
    return k;
}

/* Assert layers [0, from) kept their keys and [from, count) all changed. */
static void assert_changed_from(const struct keys *a, const struct keys *b, size_t from)
{
    cr_assert_eq(a->count, b->count);
    for (size_t i = 0; i < a->count; i++) {
        bool same = mb_digest_equal(&a->key[i], &b->key[i]);

        if (i < from)
            cr_assert(same, "layer %zu changed but should not have", i);
        else
            cr_assert(!same, "layer %zu kept its key but should have changed", i);
    }
}

static void edit_and_compare(const char *edited_text, size_t from)
{
    char *a = make_project(base_file);
    char *b = make_project(edited_text);
    struct keys ka = keys_of(a), kb = keys_of(b);

    assert_changed_from(&ka, &kb, from);
    mbt_rm_rf(a);
    mbt_rm_rf(b);
    free(a);
    free(b);
}

/* Replace the first `from` in base_file with `to`; static buffer. */
static const char *edited(const char *from, const char *to)
{
    static char buf[4096];
    const char *at = strstr(base_file, from);

    cr_assert_not_null(at, "'%s' not in the base file", from);
    snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(at - base_file), base_file, to, at + strlen(from));
    return buf;
}

Test(layers, five_layers_in_order)
{
    char *dir = make_project(base_file);
    struct keys k = keys_of(dir);

    cr_assert_eq(k.count, 5); /* base, packages, first, copy, last */
    for (size_t i = 1; i < k.count; i++)
        cr_assert(!mb_digest_equal(&k.key[i], &k.key[i - 1]));
    mbt_rm_rf(dir);
    free(dir);
}

Test(layers, same_inputs_same_keys_across_directories_and_runs)
{
    char *a = make_project(base_file);
    char *b = make_project(base_file);
    struct keys k1 = keys_of(a), k2 = keys_of(a), k3 = keys_of(b);

    assert_changed_from(&k1, &k2, k1.count);
    assert_changed_from(&k1, &k3, k1.count);
    mbt_rm_rf(a);
    mbt_rm_rf(b);
    free(a);
    free(b);
}

Test(layers, mtime_of_a_copied_file_changes_nothing)
{
    char *dir = make_project(base_file);
    char *file = mbt_path(dir, "conf/a.conf");
    struct utimbuf old = {.actime = 1000000000, .modtime = 1000000000};
    struct keys before = keys_of(dir), after;

    cr_assert_eq(utime(file, &old), 0);
    after = keys_of(dir);
    assert_changed_from(&before, &after, before.count);
    mbt_rm_rf(dir);
    free(dir);
    free(file);
}

Test(layers, content_of_a_copied_file_changes_its_step_and_later)
{
    char *dir = make_project(base_file);
    struct keys before = keys_of(dir), after;

    mbt_write(dir, "conf/sub/b.conf", "b=3\n");
    after = keys_of(dir);
    assert_changed_from(&before, &after, 3);
    mbt_rm_rf(dir);
    free(dir);
}

Test(layers, mode_of_a_copied_file_changes_its_step_and_later)
{
    char *dir = make_project(base_file);
    char *file = mbt_path(dir, "app.sh");
    struct keys before = keys_of(dir), after;

    cr_assert_eq(chmod(file, 0644), 0);
    after = keys_of(dir);
    assert_changed_from(&before, &after, 3);
    mbt_rm_rf(dir);
    free(dir);
    free(file);
}

Test(layers, new_file_in_a_copied_directory_changes_its_step_and_later)
{
    char *dir = make_project(base_file);
    struct keys before = keys_of(dir), after;

    mbt_write(dir, "conf/c.conf", "c=1\n");
    after = keys_of(dir);
    assert_changed_from(&before, &after, 3);
    mbt_rm_rf(dir);
    free(dir);
}

Test(layers, reordering_env_keys_changes_nothing)
{
    edit_and_compare(edited("env: {A: one, B: two}", "env: {B: two, A: one}"), 5);
}

Test(layers, reordering_packages_changes_nothing)
{
    edit_and_compare(edited("packages: [git, curl]", "packages: [curl, git, curl]"), 5);
}

Test(layers, runtime_settings_and_step_names_change_nothing)
{
    edit_and_compare(edited("steps:\n", "cpus: 4\nmemory: 8GiB\ndisk: 50G\n"
                                        "ports: [\"3000:3000\"]\npersistent: true\n"
                                        "mounts: [{source: ., target: /work}]\n"
                                        "volumes: [{name: v, target: /v, size: 1G}]\n"
                                        "steps:\n"),
                     5);
    edit_and_compare(edited("name: first", "name: renamed"), 5);
    edit_and_compare(edited("    run: echo first\n", "    run: echo first\n    timeout: 5m\n"), 5);
}

struct key_change {
    const char *from;
    const char *to;
    size_t first_changed;
};

/* Each input, edited, and the first layer whose key must change. */
static const struct key_change key_changes[] = {
    {"base: tiny", "base: debian-12", 0},
    {"version: 1\n", "version: 1\narch: aarch64\n", 0},
    {"packages: [git, curl]", "packages: [git]", 1},
    {"env: {A: one, B: two}", "env: {A: one, B: three}", 1},
    {"run: echo first", "run: echo First", 2},
    {"    run: echo first\n", "    run: echo first\n    env: {C: x}\n", 2},
    {"    run: echo first\n", "    run: echo first\n    network: false\n", 2},
    {"copy: [app.sh, conf]", "copy: [conf, app.sh]", 3},
    {"copy: [app.sh, conf]", "copy: [app.sh, {source: conf, target: /etc/conf}]", 3},
    {"run: echo last", "run: echo Last", 4},
};

Test(layers, each_input_changes_its_layer_and_later_only)
{
    for (size_t i = 0; i < sizeof(key_changes) / sizeof(key_changes[0]); i++)
        edit_and_compare(edited(key_changes[i].from, key_changes[i].to),
                         key_changes[i].first_changed);
}

Test(layers, unknown_recipe_is_an_input_error_at_the_base)
{
    char *dir = make_project("version: 1\nbase: plan9\n");
    char *path = mbt_path(dir, "Machinefile");
    struct mb_machinefile *mf;
    struct mb_layer *layers;
    struct mb_error err = {0};
    size_t count;

    cr_assert_eq(mb_machinefile_load(path, &mf, &err), 0, "%s", err.msg);
    cr_assert_eq(mb_layers_from_machinefile(mf, &layers, &count, &err), -1);
    cr_assert_eq(err.code, MB_ERR_INPUT);
    cr_assert_not_null(strstr(err.msg, "Machinefile:2:7: unknown base 'plan9'"), "%s", err.msg);
    mb_machinefile_free(mf);
    mbt_rm_rf(dir);
    free(dir);
    free(path);
}

Test(layers, local_base_image_is_keyed_by_content)
{
    char *a = make_project("version: 1\nbase: images/base.qcow2\n");
    char *b = make_project("version: 1\nbase: images/base.qcow2\n");
    struct keys ka, kb;

    mbt_write(a, "images/base.qcow2", "image one");
    mbt_write(b, "images/base.qcow2", "image one");
    ka = keys_of(a);
    kb = keys_of(b);
    assert_changed_from(&ka, &kb, 1);
    mbt_write(b, "images/base.qcow2", "image two");
    kb = keys_of(b);
    assert_changed_from(&ka, &kb, 0);
    mbt_rm_rf(a);
    mbt_rm_rf(b);
    free(a);
    free(b);
}

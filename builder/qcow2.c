/*
 * Running qemu-img with captured output and a time limit, and reading its
 * JSON answers with jansson.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mbuild/qcow2.h"
#include "mbuild/spawn.h"

#define QEMU_IMG_TIMEOUT_MS (10 * 60 * 1000)
#define QEMU_IMG_MAX_OUTPUT (64 * 1024)

/* Run qemu-img; on success *output (may be NULL) gets what it printed. */
static int qemu_img(const char *const argv[], char **output, struct mb_error *err)
{
    struct mb_spawn_options opts = {QEMU_IMG_TIMEOUT_MS, QEMU_IMG_MAX_OUTPUT, NULL};
    struct mb_spawn_result res;

    if (mb_spawn_capture(argv, &opts, &res, err) < 0)
        return -1;
    if (res.exit_status != 0) {
        size_t len = strcspn(res.output, "\n");

        mb_error_set(err, MB_ERR_GENERAL, "qemu-img %s: %.*s", argv[1], (int)len,
                     res.timed_out ? "timed out" : res.output);
        mb_spawn_result_free(&res);
        return -1;
    }
    if (output != NULL) {
        *output = res.output;
        res.output = NULL;
    }
    mb_spawn_result_free(&res);
    return 0;
}

int mb_qcow2_create_overlay(const char *path, const char *backing, struct mb_error *err)
{
    const char *argv[] = {"qemu-img", "create", "-q",    "-f", "qcow2", "-F",
                          "qcow2",    "-b",     backing, path, NULL};

    return qemu_img(argv, NULL, err) < 0 ? mb_error_prefix(err, "create '%s'", path) : 0;
}

int mb_qcow2_set_backing(const char *path, const char *backing, struct mb_error *err)
{
    const char *with[] = {"qemu-img", "rebase", "-u",    "-f", "qcow2", "-F",
                          "qcow2",    "-b",     backing, path, NULL};
    const char *without[] = {"qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "", path, NULL};

    if (qemu_img(backing != NULL ? with : without, NULL, err) < 0)
        return mb_error_prefix(err, "set the backing file of '%s'", path);
    return 0;
}

int mb_qcow2_convert(const char *src, const char *src_format, const char *dest,
                     struct mb_error *err)
{
    const char *argv[] = {"qemu-img", "convert", "-f", src_format, "-O", "qcow2", src, dest, NULL};

    return qemu_img(argv, NULL, err) < 0 ? mb_error_prefix(err, "convert '%s'", src) : 0;
}

static int check_info(json_t *info, const char *backing_allowed, struct mb_error *err)
{
    const char *format = json_string_value(json_object_get(info, "format"));
    const char *backing = json_string_value(json_object_get(info, "backing-filename"));
    json_t *data = json_object_get(info, "format-specific");

    data = json_object_get(json_object_get(data, "data"), "data-file");
    if (format == NULL || strcmp(format, "qcow2") != 0)
        return mb_error_set(err, MB_ERR_INTEGRITY, "not a qcow2 image");
    if (data != NULL)
        return mb_error_set(err, MB_ERR_INTEGRITY, "has an external data file");
    if (backing != NULL && (backing_allowed == NULL || strcmp(backing, backing_allowed) != 0))
        return mb_error_set(err, MB_ERR_INTEGRITY, "has an unexpected backing file '%s'", backing);
    return 0;
}

int mb_qcow2_check(const char *path, const char *backing_allowed, struct mb_error *err)
{
    /* info opens only this file: neither its backing file nor a data file is followed. */
    const char *argv[] = {"qemu-img", "info", "-f", "qcow2", "--output=json", path, NULL};
    char *output = NULL;
    json_t *info;
    int rc;

    if (qemu_img(argv, &output, err) < 0)
        return mb_error_prefix(err, "check '%s'", path);
    info = json_loads(output, 0, NULL);
    free(output);
    if (info == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "check '%s': qemu-img info printed no JSON", path);
    rc = check_info(info, backing_allowed, err);
    json_decref(info);
    return rc < 0 ? mb_error_prefix(err, "check '%s'", path) : 0;
}

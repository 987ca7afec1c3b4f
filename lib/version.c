/*
 * The --version report. QEMU versions come from running the programs,
 * since they are found in PATH at run time, not linked.
 */
#include <archive.h>
#include <curl/curl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>
#include <zstd.h>

#include "mbuild/spawn.h"
#include "mbuild/version.h"

const char *mb_version(void)
{
    return MB_VERSION;
}

/* The first line of `prog --version`, reduced to its version number. */
static void program_version(const char *prog, char *buf, size_t size)
{
    const char *argv[] = {prog, "--version", NULL};
    const struct mb_spawn_options opts = {.timeout_ms = 5000, .max_output = 4096};
    struct mb_spawn_result res;
    struct mb_error err;
    const char *v;

    snprintf(buf, size, "not found");
    if (mb_spawn_capture(argv, &opts, &res, &err) < 0)
        return;
    v = strstr(res.output, "version ");
    if (res.exit_status == 0 && v != NULL)
        snprintf(buf, size, "%.*s", (int)strcspn(v + 8, " \n"), v + 8);
    mb_spawn_result_free(&res);
}

char *mb_version_report(const char *program, struct mb_error *err)
{
    char img[64], sys[64];
    char *out;

    program_version("qemu-img", img, sizeof(img));
    program_version("qemu-system-x86_64", sys, sizeof(sys));
    if (asprintf(&out,
                 "%s %s\n"
                 "qemu-img %s\n"
                 "qemu-system-x86_64 %s\n"
                 "libyaml %s\n"
                 "%s\n"
                 "zstd %s\n"
                 "libcurl %s\n"
                 "%s\n"
                 "jansson %s\n",
                 program, MB_VERSION, img, sys, yaml_get_version_string(), archive_version_string(),
                 ZSTD_versionString(), curl_version_info(CURLVERSION_NOW)->version,
                 OpenSSL_version(OPENSSL_VERSION), jansson_version_str()) < 0) {
        mb_error_set(err, MB_ERR_GENERAL, "out of memory");
        return NULL;
    }
    return out;
}

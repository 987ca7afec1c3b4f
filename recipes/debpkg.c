/*
 * Debian packages, resolved with apt-cache, fetched with apt-get download
 * and read with libarchive. Nothing is installed on the host.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mbuild/debpkg.h"
#include "mbuild/fsutil.h"
#include "mbuild/spawn.h"

#define APT_TIMEOUT_MS (10 * 60 * 1000)

/* The value of "Field: value" in apt's RFC 822 output, copied into buf. */
static bool field_value(const char *text, const char *field, char *buf, size_t size)
{
    size_t flen = strlen(field);

    for (const char *line = text; line != NULL && *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);

        if (len > flen + 1 && strncmp(line, field, flen) == 0 && line[flen] == ':') {
            const char *v = line + flen + 1;

            while (*v == ' ')
                v++;
            snprintf(buf, size, "%.*s", (int)(len - (size_t)(v - line)), v);
            return true;
        }
        line = end ? end + 1 : NULL;
    }
    return false;
}

static int apt_cache_show(const char *name, struct mb_spawn_result *res, struct mb_error *err)
{
    const char *argv[] = {"apt-cache", "show", "--no-all-versions", name, NULL};
    const struct mb_spawn_options opts = {.timeout_ms = 60000, .max_output = 1 << 20};

    if (mb_spawn_capture(argv, &opts, res, err) < 0)
        return mb_error_prefix(err, "look up Debian package '%s'", name);
    if (res->exit_status != 0 || res->output_len == 0) {
        mb_spawn_result_free(res);
        return mb_error_set(err, MB_ERR_GENERAL,
                            "Debian package '%s' is unknown to apt (run 'apt-get update'?)", name);
    }
    return 0;
}

/* The first package named in a Depends field: "linux-image-6.1.0-57-amd64 (= 6.1.1)". */
static void first_dependency(const char *depends, char *buf, size_t size)
{
    snprintf(buf, size, "%.*s", (int)strcspn(depends, " ,|("), depends);
}

int mb_deb_resolve(const char *name, const char *follow_prefix, struct mb_deb *out,
                   struct mb_error *err)
{
    struct mb_spawn_result res;
    char depends[512], digest[128];
    int rc = 0;

    if (apt_cache_show(name, &res, err) < 0)
        return -1;
    if (follow_prefix != NULL && field_value(res.output, "Depends", depends, sizeof(depends)) &&
        strncmp(depends, follow_prefix, strlen(follow_prefix)) == 0) {
        char target[128];

        first_dependency(depends, target, sizeof(target));
        mb_spawn_result_free(&res);
        return mb_deb_resolve(target, NULL, out, err);
    }
    memset(out, 0, sizeof(*out));
    if (!field_value(res.output, "Package", out->name, sizeof(out->name)) ||
        !field_value(res.output, "Version", out->version, sizeof(out->version)) ||
        !field_value(res.output, "SHA256", digest, sizeof(digest)))
        rc = mb_error_set(err, MB_ERR_GENERAL, "apt-cache show '%s': missing fields", name);
    else if (mb_digest_parse_hex(digest, &out->sha256, err) < 0)
        rc = mb_error_prefix(err, "apt-cache show '%s'", name);
    mb_spawn_result_free(&res);
    return rc;
}

static int verify_file(const char *path, const struct mb_digest *want, struct mb_error *err)
{
    struct mb_digest got;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc;

    if (fd < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "open '%s'", path);
    rc = mb_sha256_fd(fd, &got, err);
    close(fd);
    if (rc < 0)
        return mb_error_prefix(err, "read '%s'", path);
    if (!mb_digest_equal(&got, want))
        return mb_error_set(err, MB_ERR_INTEGRITY, "'%s' does not match apt's SHA-256", path);
    return 0;
}

/* The one .deb apt-get download left in `dir`, malloc'ed. */
static char *downloaded_file(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char *path = NULL;

    if (d == NULL)
        return NULL;
    while ((e = readdir(d)) != NULL && path == NULL) {
        size_t len = strlen(e->d_name);

        if (len > 4 && strcmp(e->d_name + len - 4, ".deb") == 0)
            path = mb_path_join(dir, e->d_name);
    }
    closedir(d);
    return path;
}

static void remove_dir(const char *dir)
{
    char *file;

    while ((file = downloaded_file(dir)) != NULL) {
        unlink(file);
        free(file);
    }
    rmdir(dir);
}

static int download(const char *tmp, const struct mb_deb *deb, const char *dest,
                    struct mb_error *err)
{
    char spec[300];
    const char *argv[] = {"apt-get", "download", "-q", spec, NULL};
    const struct mb_spawn_options opts = {
        .timeout_ms = APT_TIMEOUT_MS, .max_output = 64 * 1024, .cwd = tmp};
    struct mb_spawn_result res;
    char *file;
    int rc;

    snprintf(spec, sizeof(spec), "%s=%s", deb->name, deb->version);
    if (mb_spawn_capture(argv, &opts, &res, err) < 0)
        return -1;
    if (res.exit_status != 0) {
        rc = mb_error_set(err, MB_ERR_GENERAL, "apt-get download %s failed: %.500s", spec,
                          res.output);
        mb_spawn_result_free(&res);
        return rc;
    }
    mb_spawn_result_free(&res);
    file = downloaded_file(tmp);
    if (file == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "apt-get download %s left no .deb", spec);
    rc = verify_file(file, &deb->sha256, err);
    if (rc == 0 && rename(file, dest) < 0)
        rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "rename to '%s'", dest);
    free(file);
    return rc;
}

int mb_deb_fetch(const char *cache_dir, const struct mb_deb *deb, char **path, struct mb_error *err)
{
    char hex[MB_DIGEST_HEX_LEN + 1];
    char *dir, *dest = NULL, *tmp = NULL;
    int rc;

    mb_digest_hex(&deb->sha256, hex);
    dir = mb_path_join(cache_dir, "debs");
    if (dir == NULL || mb_fs_mkdir_p(dir, 0755, err) < 0 ||
        asprintf(&dest, "%s/%s.deb", dir, hex) < 0) {
        free(dir);
        return err->msg[0] ? -1 : mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    }
    free(dir);
    if (access(dest, F_OK) == 0 && verify_file(dest, &deb->sha256, err) == 0) {
        *path = dest;
        return 0;
    }
    if (asprintf(&tmp, "%s/tmp/deb-XXXXXX", cache_dir) < 0 || mkdtemp(tmp) == NULL) {
        free(tmp);
        free(dest);
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "make a download directory");
    }
    rc = download(tmp, deb, dest, err);
    remove_dir(tmp);
    free(tmp);
    if (rc < 0) {
        free(dest);
        return mb_error_prefix(err, "fetch Debian package %s %s", deb->name, deb->version);
    }
    *path = dest;
    return 0;
}

/* libarchive reads the inner data.tar.* straight out of the outer ar archive. */
struct member {
    struct archive *outer;
    char block[64 * 1024];
};

static la_ssize_t read_member(struct archive *inner, void *data, const void **buf)
{
    struct member *m = data;

    (void)inner;
    *buf = m->block;
    return archive_read_data(m->outer, m->block, sizeof(m->block));
}

static int each_data_entry(struct archive *outer, mb_deb_entry_fn fn, void *ctx,
                           struct mb_error *err)
{
    struct archive *inner = archive_read_new();
    struct member *m = malloc(sizeof(*m));
    struct archive_entry *entry;
    int rc = 0, r = ARCHIVE_OK;

    if (m == NULL) {
        archive_read_free(inner);
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    }
    m->outer = outer;

    archive_read_support_filter_all(inner);
    archive_read_support_format_tar(inner);
    if (archive_read_open(inner, m, NULL, read_member, NULL) != ARCHIVE_OK)
        rc = mb_error_set(err, MB_ERR_GENERAL, "data archive: %s", archive_error_string(inner));
    while (rc == 0 && (r = archive_read_next_header(inner, &entry)) == ARCHIVE_OK)
        rc = fn(ctx, inner, entry, err);
    if (rc == 0 && r != ARCHIVE_EOF)
        rc = mb_error_set(err, MB_ERR_GENERAL, "data archive: %s", archive_error_string(inner));
    archive_read_free(inner);
    free(m);
    return rc < 0 ? -1 : 0;
}

int mb_deb_each_file(const char *deb_path, mb_deb_entry_fn fn, void *ctx, struct mb_error *err)
{
    struct archive *outer = archive_read_new();
    struct archive_entry *entry;
    int rc = 1;

    archive_read_support_format_ar(outer);
    if (archive_read_open_filename(outer, deb_path, 64 * 1024) != ARCHIVE_OK) {
        rc = mb_error_set(err, MB_ERR_GENERAL, "open '%s': %s", deb_path,
                          archive_error_string(outer));
    } else {
        while (rc == 1 && archive_read_next_header(outer, &entry) == ARCHIVE_OK)
            if (strncmp(archive_entry_pathname(entry), "data.tar", 8) == 0)
                rc = each_data_entry(outer, fn, ctx, err);
        if (rc == 1)
            rc = mb_error_set(err, MB_ERR_GENERAL, "'%s' has no data archive", deb_path);
        else if (rc < 0)
            mb_error_prefix(err, "read '%s'", deb_path);
    }
    archive_read_free(outer);
    return rc;
}

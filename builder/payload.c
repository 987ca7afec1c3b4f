/*
 * Writing a step's payload tar with libarchive: the script, the env and
 * the copied files, all owned by root, with the modes the key recorded.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "mbuild/fsutil.h"
#include "mbuild/hash.h"
#include "mbuild/payload.h"

#define COPY_CHUNK (256 * 1024)

int mb_payload_script(const struct mb_layer *layer, char **out, struct mb_error *err)
{
    int n;

    switch (layer->kind) {
    case MB_LAYER_RUN:
        n = asprintf(out, "%s\n", layer->text);
        break;
    case MB_LAYER_PACKAGES:
        n = asprintf(out,
                     "export DEBIAN_FRONTEND=noninteractive\n"
                     "apt-get update -q\n"
                     "apt-get install -y -q --no-install-recommends %s\n"
                     "apt-get clean\n"
                     "rm -rf /var/lib/apt/lists/*\n",
                     layer->text);
        break;
    default:
        return mb_error_set(err, MB_ERR_GENERAL, "a %s layer runs no script",
                            mb_layer_kind_name(layer->kind));
    }
    if (n < 0)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    return 0;
}

/* `export NAME='value'` lines; a ' inside a value becomes '\''. */
static char *env_text(const struct mb_env *env)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);

    if (f == NULL)
        return NULL;
    for (size_t i = 0; i < env->count; i++) {
        fprintf(f, "export %s='", env->vars[i].name);
        for (const char *c = env->vars[i].value; *c != '\0'; c++)
            fputs(*c == '\'' ? "'\\''" : (char[]){*c, '\0'}, f);
        fputs("'\n", f);
    }
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

static int archive_fail(struct archive *a, const char *what, struct mb_error *err)
{
    return mb_error_set(err, MB_ERR_GENERAL, "write payload: %s: %s", what,
                        archive_error_string(a));
}

static struct archive_entry *new_entry(const char *path, mode_t type, unsigned mode, int64_t size)
{
    struct archive_entry *e = archive_entry_new();

    if (e == NULL)
        return NULL;
    archive_entry_set_pathname(e, path);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, mode);
    archive_entry_set_size(e, size);
    archive_entry_set_uid(e, 0);
    archive_entry_set_gid(e, 0);
    archive_entry_set_mtime(e, 0, 0);
    return e;
}

static int add_buffer(struct archive *a, const char *path, const char *data, struct mb_error *err)
{
    size_t len = strlen(data);
    struct archive_entry *e = new_entry(path, AE_IFREG, 0644, (int64_t)len);
    int rc = 0;

    if (e == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    if (archive_write_header(a, e) != ARCHIVE_OK ||
        archive_write_data(a, data, len) != (la_ssize_t)len)
        rc = archive_fail(a, path, err);
    archive_entry_free(e);
    return rc;
}

/* Stream a regular file's content into the archive, hashing it on the way. */
static int copy_content(struct archive *a, int fd, struct mb_digest *digest, struct mb_error *err)
{
    struct mb_sha256 *h = mb_sha256_new(err);
    char *buf = malloc(COPY_CHUNK);
    ssize_t n = 0;
    int rc = 0;

    if (h == NULL || buf == NULL) {
        mb_sha256_free(h);
        free(buf);
        return h == NULL ? -1 : mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    }
    while (rc == 0 && (n = mb_fs_read_all(fd, buf, COPY_CHUNK, err)) > 0) {
        mb_sha256_update(h, buf, (size_t)n);
        if (archive_write_data(a, buf, (size_t)n) != n)
            rc = archive_fail(a, "file data", err);
    }
    if (n < 0)
        rc = -1;
    mb_sha256_final(h, digest);
    mb_sha256_free(h);
    free(buf);
    return rc;
}

static int add_regular(struct archive *a, int project_fd, const struct mb_copied_file *f,
                       const char *path, struct mb_error *err)
{
    int fd = mb_fs_open_beneath(project_fd, f->source, O_RDONLY | O_NOFOLLOW);
    struct archive_entry *e = NULL;
    struct mb_digest digest;
    struct stat st;
    int rc = 0;

    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        rc = mb_error_errno(err, MB_ERR_INPUT, fd < 0 ? errno : EINVAL, "read '%s'", f->source);
    } else if ((e = new_entry(path, AE_IFREG, f->mode, st.st_size)) == NULL) {
        rc = mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    } else if (archive_write_header(a, e) != ARCHIVE_OK) {
        rc = archive_fail(a, path, err);
    } else if (copy_content(a, fd, &digest, err) < 0) {
        rc = mb_error_prefix(err, "copy '%s'", f->source);
    } else if (!mb_digest_equal(&digest, &f->digest)) {
        rc =
            mb_error_set(err, MB_ERR_INPUT, "copied file '%s' changed during the build", f->source);
    }
    archive_entry_free(e);
    if (fd >= 0)
        close(fd);
    return rc;
}

static int add_symlink(struct archive *a, int project_fd, const struct mb_copied_file *f,
                       const char *path, struct mb_error *err)
{
    char link[4096];
    ssize_t n = readlinkat(project_fd, f->source, link, sizeof(link) - 1);
    struct archive_entry *e;
    struct mb_digest digest;
    int rc = 0;

    if (n < 0)
        return mb_error_errno(err, MB_ERR_INPUT, errno, "read symlink '%s'", f->source);
    link[n] = '\0';
    mb_sha256_buf(link, (size_t)n, &digest);
    if (!mb_digest_equal(&digest, &f->digest))
        return mb_error_set(err, MB_ERR_INPUT, "copied symlink '%s' changed during the build",
                            f->source);
    e = new_entry(path, AE_IFLNK, 0777, 0);
    if (e == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    archive_entry_set_symlink(e, link);
    if (archive_write_header(a, e) != ARCHIVE_OK)
        rc = archive_fail(a, path, err);
    archive_entry_free(e);
    return rc;
}

static int add_file(struct archive *a, int project_fd, const struct mb_copied_file *f,
                    struct mb_error *err)
{
    struct archive_entry *e;
    char *path;
    int rc = 0;

    /* Targets are absolute and normalised by the parser; "files" + target stays inside. */
    if (asprintf(&path, "files%s", f->target) < 0)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    if (f->type == MB_FILE_REGULAR) {
        rc = add_regular(a, project_fd, f, path, err);
    } else if (f->type == MB_FILE_SYMLINK) {
        rc = add_symlink(a, project_fd, f, path, err);
    } else if ((e = new_entry(path, AE_IFDIR, f->mode, 0)) == NULL) {
        rc = mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    } else {
        if (archive_write_header(a, e) != ARCHIVE_OK)
            rc = archive_fail(a, path, err);
        archive_entry_free(e);
    }
    free(path);
    return rc;
}

/* The extra certificates, from a file the user named on the command line. */
static int add_ca(struct archive *a, const char *ca_file, struct mb_error *err)
{
    char *text;
    size_t len;
    int rc;

    if (mb_fs_read_file(ca_file, 16 * 1024 * 1024, &text, &len, err) < 0)
        return mb_error_prefix(err, "certificates");
    rc = add_buffer(a, "ca.pem", text, err);
    free(text);
    return rc;
}

static int write_entries(struct archive *a, const struct mb_machinefile *mf,
                         const struct mb_layer *layer, const char *ca_file, struct mb_error *err)
{
    char *script = NULL, *env = env_text(&layer->env);
    int project_fd = -1, rc;

    if (env == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    rc = mb_payload_script(layer, &script, err);
    if (rc == 0)
        rc = add_buffer(a, "step.sh", script, err);
    if (rc == 0)
        rc = add_buffer(a, "env", env, err);
    if (rc == 0 && ca_file != NULL)
        rc = add_ca(a, ca_file, err);
    if (rc == 0 && layer->file_count > 0) {
        project_fd = open(mf->project_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (project_fd < 0)
            rc = mb_error_errno(err, MB_ERR_GENERAL, errno, "open '%s'", mf->project_dir);
    }
    for (size_t i = 0; rc == 0 && i < layer->file_count; i++)
        rc = add_file(a, project_fd, &layer->files[i], err);
    if (project_fd >= 0)
        close(project_fd);
    free(script);
    free(env);
    return rc;
}

int mb_payload_write(const struct mb_machinefile *mf, const struct mb_layer *layer,
                     const char *ca_file, const char *dest, struct mb_error *err)
{
    struct archive *a = archive_write_new();
    int rc;

    if (a == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    archive_write_set_format_pax_restricted(a);
    if (archive_write_open_filename(a, dest) != ARCHIVE_OK) {
        rc = mb_error_set(err, MB_ERR_GENERAL, "create '%s': %s", dest, archive_error_string(a));
        archive_write_free(a);
        return rc;
    }
    rc = write_entries(a, mf, layer, ca_file, err);
    if (archive_write_close(a) != ARCHIVE_OK && rc == 0)
        rc = archive_fail(a, dest, err);
    archive_write_free(a);
    if (rc < 0)
        unlink(dest);
    return rc < 0 ? mb_error_prefix(err, "step '%s'", layer->name) : 0;
}

/*
 * From a parsed Machinefile to its list of layers, with every input that
 * goes into a key: the base descriptor, the package list, each step's
 * script, env and copied files.
 *
 * Copied files are read beneath the project directory only (openat2 with
 * RESOLVE_BENEATH); a directory is walked in name order so the list, and so
 * the key, does not depend on the order the file system returns entries.
 * Symlinks inside a copied directory are copied as links, and each must
 * still resolve beneath the project.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mbuild/layers.h"
#include "mbuild/fsutil.h"
#include "mbuild/recipe.h"

/* Where copied files are being collected, and what to blame in errors. */
struct walk {
    const struct mb_machinefile *mf;
    const struct mb_copy *copy;
    int project_fd;
    struct mb_copied_file *files;
    size_t count;
    size_t cap;
};

static int copy_error(struct walk *w, struct mb_error *err, const char *fmt, const char *what,
                      int errnum)
{
    char detail[512];

    snprintf(detail, sizeof(detail), fmt, what);
    return mb_error_set(err, MB_ERR_INPUT, "%s:%u:%u: copy '%s': %s%s%s", w->mf->path,
                        w->copy->mark.line, w->copy->mark.column, w->copy->source, detail,
                        errnum ? ": " : "", errnum ? strerror(errnum) : "");
}

static struct mb_copied_file *add_file(struct walk *w, const char *source, const char *target)
{
    struct mb_copied_file *f;

    if (w->count == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 8;
        struct mb_copied_file *grown = realloc(w->files, cap * sizeof(*grown));

        if (grown == NULL)
            return NULL;
        w->files = grown;
        w->cap = cap;
    }
    f = &w->files[w->count];
    memset(f, 0, sizeof(*f));
    f->source = strdup(source);
    f->target = strdup(target);
    if (f->source == NULL || f->target == NULL) {
        free(f->source);
        free(f->target);
        return NULL;
    }
    w->count++;
    return f;
}

static int hash_regular(struct walk *w, int fd, struct mb_copied_file *f, struct mb_error *err)
{
    if (mb_sha256_fd(fd, &f->digest, err) < 0)
        return mb_error_prefix(err, "%s:%u:%u: copy '%s': read '%s'", w->mf->path,
                               w->copy->mark.line, w->copy->mark.column, w->copy->source,
                               f->source);
    return 0;
}

static int walk_dir(struct walk *w, int dirfd, const char *source, const char *target,
                    struct mb_error *err);

/* Record the regular file open at `fd` (stat'ed as `st`): its mode and content digest. */
static int add_regular(struct walk *w, int fd, const struct stat *st, const char *source,
                       const char *target, struct mb_error *err)
{
    struct mb_copied_file *f = add_file(w, source, target);

    if (f == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    f->type = MB_FILE_REGULAR;
    f->mode = st->st_mode & 07777;
    return hash_regular(w, fd, f, err);
}

static int name_order(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int skip_dot(const struct dirent *d)
{
    return strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0;
}

static int add_symlink(struct walk *w, int dirfd, const char *name, const char *source,
                       const char *target, struct mb_error *err)
{
    char link[4096];
    ssize_t n = readlinkat(dirfd, name, link, sizeof(link));
    struct mb_copied_file *f;
    int fd;

    if (n < 0 || n == (ssize_t)sizeof(link))
        return copy_error(w, err, "cannot read symlink '%s'", source, n < 0 ? errno : 0);
    fd = mb_fs_open_beneath(w->project_fd, source, O_PATH);
    if (fd < 0 && errno != ENOENT)
        return copy_error(w, err, "symlink '%s' points outside the project directory", source, 0);
    if (fd >= 0)
        close(fd);
    f = add_file(w, source, target);
    if (f == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    f->type = MB_FILE_SYMLINK;
    f->mode = 0777;
    mb_sha256_buf(link, (size_t)n, &f->digest);
    return 0;
}

/* Add one entry of a directory being walked: `name` relative to dirfd. */
static int walk_entry(struct walk *w, int dirfd, const char *name, const char *source,
                      const char *target, struct mb_error *err)
{
    struct stat st;
    int fd, rc;

    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return copy_error(w, err, "cannot stat '%s'", source, errno);
    if (S_ISLNK(st.st_mode))
        return add_symlink(w, dirfd, name, source, target, err);
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
        return copy_error(w, err, "'%s' is neither a file, a directory nor a symlink", source, 0);
    fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return copy_error(w, err, "cannot open '%s'", source, errno);
    if (S_ISDIR(st.st_mode)) {
        rc = walk_dir(w, fd, source, target, err);
        close(fd);
        return rc;
    }
    rc = add_regular(w, fd, &st, source, target, err);
    close(fd);
    return rc;
}

/* Record the directory open at `fd` (which it consumes a dup of) and its entries. */
static int walk_dir(struct walk *w, int fd, const char *source, const char *target,
                    struct mb_error *err)
{
    struct mb_copied_file *f;
    struct dirent **names;
    struct stat st;
    int n, rc = 0;

    if (fstat(fd, &st) < 0)
        return copy_error(w, err, "cannot stat '%s'", source, errno);
    f = add_file(w, source, target);
    if (f == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    f->type = MB_FILE_DIRECTORY;
    f->mode = st.st_mode & 07777;
    n = scandirat(fd, ".", &names, skip_dot, name_order);
    if (n < 0)
        return copy_error(w, err, "cannot list '%s'", source, errno);
    for (int i = 0; i < n; i++) {
        char *src = NULL, *dst = NULL;

        if (rc == 0 && (asprintf(&src, "%s/%s", source, names[i]->d_name) < 0 ||
                        asprintf(&dst, "%s/%s", target, names[i]->d_name) < 0))
            rc = mb_error_set(err, MB_ERR_GENERAL, "out of memory");
        if (rc == 0)
            rc = walk_entry(w, fd, names[i]->d_name, src, dst, err);
        free(src);
        free(dst);
        free(names[i]);
    }
    free(names);
    return rc;
}

/* Expand one `copy` entry: a file, or a directory and all beneath it. */
static int expand_copy(struct walk *w, const struct mb_copy *copy, struct mb_error *err)
{
    struct stat st;
    int fd, rc;

    w->copy = copy;
    fd = mb_fs_open_beneath(w->project_fd, copy->source, O_RDONLY);
    if (fd < 0)
        return copy_error(w, err, "cannot open%s", errno == EXDEV ? " beneath the project" : "",
                          errno);
    if (fstat(fd, &st) < 0) {
        close(fd);
        return copy_error(w, err, "cannot stat%s", "", errno);
    }
    if (S_ISDIR(st.st_mode)) {
        rc = walk_dir(w, fd, copy->source, copy->target, err);
    } else if (!S_ISREG(st.st_mode)) {
        rc = copy_error(w, err, "not a regular file or directory%s", "", 0);
    } else {
        rc = add_regular(w, fd, &st, copy->source, copy->target, err);
    }
    close(fd);
    return rc;
}

static void free_files(struct mb_copied_file *files, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(files[i].source);
        free(files[i].target);
    }
    free(files);
}

static int collect_copies(const struct mb_machinefile *mf, const struct mb_step *step,
                          struct mb_layer *layer, struct mb_error *err)
{
    struct walk w = {.mf = mf};
    int rc = 0;

    if (step->copy_count == 0)
        return 0;
    w.project_fd = open(mf->project_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (w.project_fd < 0)
        return mb_error_errno(err, MB_ERR_INPUT, errno, "open project directory '%s'",
                              mf->project_dir);
    for (size_t i = 0; i < step->copy_count && rc == 0; i++)
        rc = expand_copy(&w, &step->copies[i], err);
    close(w.project_fd);
    if (rc < 0) {
        free_files(w.files, w.count);
        return -1;
    }
    layer->files = w.files;
    layer->file_count = w.count;
    return 0;
}

/* A `base:` naming a file rather than a recipe, by the Machinefile's rule. */
static bool base_is_path(const char *base)
{
    static const char *const image_suffixes[] = {".qcow2", ".img", ".raw"};
    size_t len = strlen(base);

    if (strchr(base, '/') != NULL)
        return true;
    for (size_t i = 0; i < sizeof(image_suffixes) / sizeof(image_suffixes[0]); i++) {
        size_t n = strlen(image_suffixes[i]);

        if (len > n && strcmp(base + len - n, image_suffixes[i]) == 0)
            return true;
    }
    return false;
}

/*
 * NEEDSWORK: a local base image is re-hashed on every plan; remember its
 * digest by device, inode, size and mtime.
 */
static int local_image_text(const struct mb_machinefile *mf, char **text, struct mb_error *err)
{
    char digest[MB_DIGEST_STR_LEN];
    struct mb_digest d;
    int dirfd, fd, rc;

    dirfd = open(mf->project_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    fd = dirfd < 0 ? -1 : mb_fs_open_beneath(dirfd, mf->base, O_RDONLY);
    if (dirfd >= 0)
        close(dirfd);
    if (fd < 0)
        return mb_error_errno(err, MB_ERR_INPUT, errno, "%s:%u:%u: base image '%s'", mf->path,
                              mf->base_mark.line, mf->base_mark.column, mf->base);
    rc = mb_sha256_fd(fd, &d, err);
    close(fd);
    if (rc < 0)
        return mb_error_prefix(err, "%s:%u:%u: base image '%s'", mf->path, mf->base_mark.line,
                               mf->base_mark.column, mf->base);
    mb_digest_str(&d, digest);
    return asprintf(text, "image %s", digest) < 0 ? -1 : 0;
}

/* The base layer's text: what identifies the base's content. */
static int base_text(const struct mb_machinefile *mf, char **text, struct mb_error *err)
{
    const struct mb_recipe *recipe;

    if (mf->base_digest != NULL)
        return asprintf(text, "image %s", mf->base_digest) < 0 ? -1 : 0;
    if (base_is_path(mf->base))
        return local_image_text(mf, text, err);
    recipe = mb_recipe_find(mf->base);
    if (recipe == NULL)
        return mb_error_set(err, MB_ERR_INPUT, "%s:%u:%u: unknown base '%s' (known: %s)", mf->path,
                            mf->base_mark.line, mf->base_mark.column, mf->base, mb_recipe_names());
    return asprintf(text, "recipe %s %u", recipe->name, recipe->version) < 0 ? -1 : 0;
}

static int by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Packages sorted and without repeats: their order does not change what apt installs. */
static char *package_text(const struct mb_machinefile *mf)
{
    const char **sorted = malloc(mf->package_count * sizeof(*sorted));
    size_t len = 1;
    char *text;

    if (sorted == NULL)
        return NULL;
    for (size_t i = 0; i < mf->package_count; i++) {
        sorted[i] = mf->packages[i];
        len += strlen(mf->packages[i]) + 1;
    }
    qsort(sorted, mf->package_count, sizeof(*sorted), by_string);
    text = malloc(len);
    if (text != NULL) {
        text[0] = '\0';
        for (size_t i = 0; i < mf->package_count; i++) {
            if (i > 0 && strcmp(sorted[i], sorted[i - 1]) == 0)
                continue;
            if (text[0] != '\0')
                strcat(text, " ");
            strcat(text, sorted[i]);
        }
    }
    free(sorted);
    return text;
}

static void layer_clear(struct mb_layer *layer)
{
    free(layer->name);
    free(layer->text);
    mb_env_free(&layer->env);
    free_files(layer->files, layer->file_count);
}

static int fill_step(const struct mb_machinefile *mf, const struct mb_step *step,
                     struct mb_layer *layer, struct mb_error *err)
{
    layer->kind = MB_LAYER_RUN;
    layer->step = step;
    layer->network = step->network;
    layer->name = strdup(step->name);
    layer->text = strdup(step->run);
    if (layer->name == NULL || layer->text == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    if (mb_machinefile_step_env(mf, step, &layer->env, err) < 0)
        return -1;
    return collect_copies(mf, step, layer, err);
}

static int fill_packages(const struct mb_machinefile *mf, struct mb_layer *layer,
                         struct mb_error *err)
{
    const struct mb_step no_step = {0};

    layer->kind = MB_LAYER_PACKAGES;
    layer->network = true;
    layer->name = strdup("packages");
    layer->text = package_text(mf);
    if (layer->name == NULL || layer->text == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    return mb_machinefile_step_env(mf, &no_step, &layer->env, err);
}

static int fill_base(const struct mb_machinefile *mf, struct mb_layer *layer, struct mb_error *err)
{
    layer->kind = MB_LAYER_BASE;
    layer->network = true;
    layer->name = strdup("base");
    if (layer->name == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    if (base_text(mf, &layer->text, err) < 0)
        return err->msg[0] ? -1 : mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    return 0;
}

int mb_layers_from_machinefile(const struct mb_machinefile *mf, struct mb_layer **out,
                               size_t *count, struct mb_error *err)
{
    size_t n = 1 + (mf->package_count > 0) + mf->step_count;
    struct mb_layer *layers = calloc(n, sizeof(*layers));
    size_t i = 0;
    int rc;

    if (layers == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    err->msg[0] = '\0';
    rc = fill_base(mf, &layers[i++], err);
    if (rc == 0 && mf->package_count > 0)
        rc = fill_packages(mf, &layers[i++], err);
    for (size_t s = 0; rc == 0 && s < mf->step_count; s++)
        rc = fill_step(mf, &mf->steps[s], &layers[i++], err);
    if (rc < 0) {
        mb_layers_free(layers, n);
        return -1;
    }
    for (i = 0; i < n; i++) {
        layers[i].arch = mf->arch;
        layers[i].has_parent = i > 0;
        if (i > 0)
            layers[i].parent = layers[i - 1].key;
        mb_layer_compute_key(&layers[i]);
    }
    *out = layers;
    *count = n;
    return 0;
}

void mb_layers_free(struct mb_layer *layers, size_t count)
{
    if (layers == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        layer_clear(&layers[i]);
    free(layers);
}

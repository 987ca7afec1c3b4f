/*
 * Machine state: where machines live, their names, their state file, and
 * whether their VM is running. Booting is machine_boot.c's work.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "machine_internal.h"
#include "mbuild/fsutil.h"

#define STATE_VERSION 1
#define STATE_MAX     (64 * 1024)

char *mb_machine_root(struct mb_error *err)
{
    const char *data = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    char *root = NULL;

    if (data != NULL && data[0] == '/')
        return asprintf(&root, "%s/machine", data) < 0 ? NULL : root;
    if (home == NULL || home[0] != '/') {
        mb_error_set(err, MB_ERR_GENERAL, "neither $XDG_DATA_HOME nor $HOME is set");
        return NULL;
    }
    return asprintf(&root, "%s/.local/share/machine", home) < 0 ? NULL : root;
}

char *machine_path(const struct mb_machine *m, const char *name)
{
    return mb_path_join(m->dir, name);
}

/*
 * The pid in `file` of m's directory when that process is alive and its
 * command line holds `needle` (a pid can be reused), else 0.
 */
static pid_t live_pid(const struct mb_machine *m, const char *file, const char *needle)
{
    char *path = machine_path(m, file), *text = NULL, cmdline[8192];
    struct mb_error err;
    size_t len;
    pid_t pid = 0;
    ssize_t n;
    int fd;

    if (path != NULL && mb_fs_read_file(path, 64, &text, &len, &err) == 0)
        pid = (pid_t)atoi(text);
    free(text);
    free(path);
    if (pid <= 0 || kill(pid, 0) < 0)
        return 0;
    snprintf(cmdline, sizeof(cmdline), "/proc/%d/cmdline", (int)pid);
    fd = open(cmdline, O_RDONLY | O_CLOEXEC);
    n = fd < 0 ? -1 : read(fd, cmdline, sizeof(cmdline) - 1);
    if (fd >= 0)
        close(fd);
    if (n <= 0)
        return 0;
    for (ssize_t i = 0; i < n; i++)
        if (cmdline[i] == '\0')
            cmdline[i] = ' ';
    cmdline[n] = '\0';
    return strstr(cmdline, needle) != NULL ? pid : 0;
}

/* QEMU names the machine's directory (its disks) in its argv; passt has nothing of ours. */
pid_t machine_qemu_pid(const struct mb_machine *m)
{
    return live_pid(m, "qemu.pid", m->dir);
}

pid_t machine_passt_pid(const struct mb_machine *m)
{
    return live_pid(m, "passt.pid", "passt");
}

int machine_write_pid(const struct mb_machine *m, const char *file, pid_t pid, struct mb_error *err)
{
    char *path = machine_path(m, file), text[32];
    int rc;

    snprintf(text, sizeof(text), "%d\n", (int)pid);
    rc = path == NULL ? mb_error_set(err, MB_ERR_GENERAL, "out of memory")
                      : mb_fs_write_atomic(path, text, strlen(text), err);
    free(path);
    return rc;
}

/* virtiofsd's argv names its socket in the machine's directory. */
pid_t machine_share_pid(const struct mb_machine *m, const char *pid_file)
{
    return live_pid(m, pid_file, m->dir);
}

static int state_decode(json_t *doc, struct mb_machine *m, struct mb_error *err)
{
    const char *name, *project, *image, *ports = "";
    json_int_t version, port = 0;
    json_error_t jerr;

    if (json_unpack_ex(doc, &jerr, 0, "{s:I, s:s, s:s, s:s, s?s, s?I}", "version", &version, "name",
                       &name, "project_dir", &project, "image", &image, "ports", &ports, "ssh_port",
                       &port) < 0)
        return mb_error_set(err, MB_ERR_INTEGRITY, "damaged state: %s", jerr.text);
    if (version != STATE_VERSION)
        return mb_error_set(err, MB_ERR_GENERAL, "state version %lld is not %d", (long long)version,
                            STATE_VERSION);
    m->name = strdup(name);
    m->project_dir = strdup(project);
    m->image = strdup(image);
    m->ports = strdup(ports);
    m->ssh_port = (int)port;
    if (m->name == NULL || m->project_dir == NULL || m->image == NULL || m->ports == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    return 0;
}

int machine_read_state(struct mb_machine *m, struct mb_error *err)
{
    char *path = machine_path(m, "machine.json"), *text = NULL;
    json_t *doc = NULL;
    size_t len;
    int rc = path == NULL ? mb_error_set(err, MB_ERR_GENERAL, "out of memory")
                          : mb_fs_read_file(path, STATE_MAX, &text, &len, err);

    if (rc == 0 && (doc = json_loadb(text, len, 0, NULL)) == NULL)
        rc = mb_error_set(err, MB_ERR_INTEGRITY, "'%s' is not JSON", path);
    if (rc == 0)
        rc = state_decode(doc, m, err);
    json_decref(doc);
    free(text);
    free(path);
    return rc;
}

int machine_write_state(const struct mb_machine *m, struct mb_error *err)
{
    char *path = machine_path(m, "machine.json"), *text;
    json_t *doc = json_pack("{s:i, s:s, s:s, s:s, s:s, s:i}", "version", STATE_VERSION, "name",
                            m->name, "project_dir", m->project_dir, "image", m->image, "ports",
                            m->ports != NULL ? m->ports : "", "ssh_port", m->ssh_port);
    int rc;

    text = doc == NULL ? NULL : json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
    rc = path == NULL || text == NULL ? mb_error_set(err, MB_ERR_GENERAL, "out of memory")
                                      : mb_fs_write_atomic(path, text, strlen(text), err);
    json_decref(doc);
    free(text);
    free(path);
    return rc;
}

/* A name is a path component we make ourselves: [a-z0-9][a-z0-9._-]*, at most 63 bytes. */
bool machine_name_ok(const char *name)
{
    size_t len = strlen(name);

    return len > 0 && len < 64 && strchr("abcdefghijklmnopqrstuvwxyz0123456789", name[0]) &&
           strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789._-") == len;
}

int mb_machine_load(const char *name, struct mb_machine *out, struct mb_error *err)
{
    char *root;
    struct stat st;

    memset(out, 0, sizeof(*out));
    if (!machine_name_ok(name))
        return mb_error_set(err, MB_ERR_INPUT, "'%s' is not a machine name", name);
    root = mb_machine_root(err);
    if (root == NULL || asprintf(&out->dir, "%s/%s", root, name) < 0) {
        free(root);
        return -1;
    }
    free(root);
    if (stat(out->dir, &st) < 0) {
        mb_machine_clear(out);
        return 0;
    }
    if (machine_read_state(out, err) < 0) {
        mb_machine_clear(out);
        return mb_error_prefix(err, "machine '%s'", name);
    }
    out->running = machine_qemu_pid(out) > 0;
    return 1;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct mb_machine *)a)->name, ((const struct mb_machine *)b)->name);
}

int mb_machine_list(struct mb_machine **out, size_t *count, struct mb_error *err)
{
    char *root = mb_machine_root(err);
    DIR *d = root == NULL ? NULL : opendir(root);
    struct dirent *e;
    struct mb_machine *all = NULL;
    size_t n = 0;

    *out = NULL;
    *count = 0;
    if (root == NULL)
        return -1;
    free(root);
    if (d == NULL)
        return errno == ENOENT ? 0 : mb_error_errno(err, MB_ERR_GENERAL, errno, "list machines");
    while ((e = readdir(d)) != NULL) {
        struct mb_machine m, *grown;
        struct mb_error ignored;

        if (!machine_name_ok(e->d_name) || mb_machine_load(e->d_name, &m, &ignored) != 1)
            continue;
        grown = realloc(all, (n + 1) * sizeof(*all));
        if (grown == NULL) {
            mb_machine_clear(&m);
            break;
        }
        all = grown;
        all[n++] = m;
    }
    closedir(d);
    qsort(all, n, sizeof(*all), by_name);
    *out = all;
    *count = n;
    return 0;
}

int mb_machine_of_project(const char *project_dir, struct mb_machine *out, struct mb_error *err)
{
    struct mb_machine *all;
    size_t n;
    int found = 0;

    memset(out, 0, sizeof(*out));
    if (mb_machine_list(&all, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!found && strcmp(all[i].project_dir, project_dir) == 0) {
            *out = all[i];
            found = 1;
            continue;
        }
        mb_machine_clear(&all[i]);
    }
    free(all);
    return found;
}

/* The project directory's name, made into a machine name, made unique with -2, -3, ... */
char *machine_new_name(const char *project_dir, struct mb_error *err)
{
    char *copy = strdup(project_dir), base[48], *name = NULL;
    size_t len = 0;

    if (copy == NULL)
        return NULL;
    for (const char *c = basename(copy); *c != '\0' && len < sizeof(base) - 1; c++) {
        char lower = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);

        base[len++] = strchr("abcdefghijklmnopqrstuvwxyz0123456789._-", lower) ? lower : '-';
    }
    base[len] = '\0';
    free(copy);
    if (len == 0 || !machine_name_ok(base))
        snprintf(base, sizeof(base), "machine");
    for (int i = 1; i < 1000; i++) {
        struct mb_machine m;
        int found;

        free(name);
        if ((i == 1 ? asprintf(&name, "%s", base) : asprintf(&name, "%s-%d", base, i)) < 0)
            return NULL;
        found = mb_machine_load(name, &m, err);
        mb_machine_clear(&m);
        if (found == 0)
            return name;
        if (found < 0)
            break;
    }
    free(name);
    if (err->msg[0] == '\0')
        mb_error_set(err, MB_ERR_GENERAL, "no free machine name for '%s'", project_dir);
    return NULL;
}

int mb_machine_remove(struct mb_machine *m, bool force, struct mb_error *err)
{
    if (m->running && !force)
        return mb_error_set(err, MB_ERR_INPUT,
                            "machine '%s' is running: stop it first, or use --force", m->name);
    machine_kill(m);
    return mb_fs_remove_tree(m->dir, err);
}

void mb_machine_clear(struct mb_machine *m)
{
    free(m->name);
    free(m->dir);
    free(m->project_dir);
    free(m->image);
    free(m->ports);
    memset(m, 0, sizeof(*m));
}

/* Work directories and small file helpers for the unit tests. */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers.h"

static void die(const char *what)
{
    perror(what);
    abort();
}

char *mbt_tempdir(void)
{
    const char *base = getenv("TMPDIR");
    char *path;

    if (base == NULL || *base == '\0')
        base = "/tmp";
    if (asprintf(&path, "%s/mbtest-XXXXXX", base) < 0)
        die("asprintf");
    if (mkdtemp(path) == NULL)
        die("mkdtemp");
    return path;
}

char *mbt_path(const char *dir, const char *name)
{
    char *path;

    if (asprintf(&path, "%s/%s", dir, name) < 0)
        die("asprintf");
    return path;
}

static void make_parents(char *path)
{
    for (char *p = path + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
}

void mbt_write(const char *dir, const char *name, const char *content)
{
    char *path = mbt_path(dir, name);
    FILE *f;

    make_parents(path);
    f = fopen(path, "w");
    if (f == NULL)
        die(path);
    fputs(content, f);
    if (fclose(f) != 0)
        die(path);
    free(path);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void mbt_rm_rf(const char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

size_t mbt_peak_rss(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t kib = 0;

    if (f == NULL)
        die("/proc/self/status");
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmHWM: %zu kB", &kib) == 1)
            break;
    fclose(f);
    return kib * 1024;
}

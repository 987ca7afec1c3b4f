/*
 * Helpers shared by the unit test suites: each test works in a directory
 * of its own, made fresh and removed after.
 */
#ifndef MB_TEST_HELPERS_H
#define MB_TEST_HELPERS_H

#include <stddef.h>

/* A new empty directory under $TMPDIR (or /tmp); malloc'ed path. Aborts on failure. */
char *mbt_tempdir(void);

/* Write `content` to dir/name, creating parent directories. Aborts on failure. */
void mbt_write(const char *dir, const char *name, const char *content);

/* Malloc'ed "dir/name". */
char *mbt_path(const char *dir, const char *name);

/* rm -rf, for a test's own directory. */
void mbt_rm_rf(const char *dir);

/* Peak resident set size of this process so far, in bytes (VmHWM). */
size_t mbt_peak_rss(void);

#endif

/*
 * Versions: this project's, the libraries it was built with and runs
 * with, and the QEMU programs it finds in PATH.
 */
#ifndef MBUILD_VERSION_H
#define MBUILD_VERSION_H

#include "mbuild/error.h"

/* "0.1.0" */
const char *mb_version(void);

/*
 * A multi-line report, one component per line ("qemu-img 7.2.22"), for
 * --version. A program that is missing shows as "not found". Malloc'ed.
 */
char *mb_version_report(const char *program, struct mb_error *err);

#endif

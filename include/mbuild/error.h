/*
 * Errors carried out of libmbuild.
 *
 * Every fallible library call takes a `struct mb_error *` as its last
 * argument and returns a negative value (or NULL) on failure after filling
 * it in. Callers add context on the way up with mb_error_prefix(), so the
 * message a user finally sees reads outermost first:
 *   "build Machinefile: store layer: write blob: No space left on device".
 * The library never prints; only the front ends do, and they turn `code`
 * into the process exit status.
 */
#ifndef MBUILD_ERROR_H
#define MBUILD_ERROR_H

#include <stdarg.h>

/* Exit statuses of mbuild and machine; `code` of an error is one of these. */
enum mb_status {
    MB_OK = 0,
    MB_ERR_GENERAL = 1,      /* anything not listed below */
    MB_ERR_INPUT = 2,        /* bad command line or Machinefile */
    MB_ERR_STEP = 3,         /* a build step failed or timed out */
    MB_ERR_INTEGRITY = 4,    /* a digest did not match: damaged or hostile data */
    MB_ERR_INTERRUPTED = 130 /* SIGINT or SIGTERM */
};

#define MB_ERROR_MAX 2048

struct mb_error {
    int code;
    char msg[MB_ERROR_MAX];
};

/* Replace the error with a formatted message; returns -1 for `return mb_error_set(...)`. */
int mb_error_set(struct mb_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* As mb_error_set, with ": strerror(errnum)" appended. */
int mb_error_errno(struct mb_error *err, int code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Prepend "context: " to the message, keeping the code; returns -1. */
int mb_error_prefix(struct mb_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Clear an error before reuse. */
void mb_error_clear(struct mb_error *err);

#endif

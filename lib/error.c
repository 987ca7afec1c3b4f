/*
 * The error contract of libmbuild: fill, then prefix context on the way up.
 * Messages are truncated, never overflowed, at MB_ERROR_MAX.
 */
#include <stdio.h>
#include <string.h>

#include "mbuild/error.h"

int mb_error_set(struct mb_error *err, int code, const char *fmt, ...)
{
    va_list ap;

    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return -1;
}

int mb_error_errno(struct mb_error *err, int code, int errnum, const char *fmt, ...)
{
    va_list ap;
    size_t len;

    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    len = strlen(err->msg);
    snprintf(err->msg + len, sizeof(err->msg) - len, ": %s", strerror(errnum));
    return -1;
}

int mb_error_prefix(struct mb_error *err, const char *fmt, ...)
{
    char context[MB_ERROR_MAX];
    char old[MB_ERROR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(context, sizeof(context), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    snprintf(err->msg, sizeof(err->msg), "%s: %s", context, old);
    return -1;
}

void mb_error_clear(struct mb_error *err)
{
    err->code = MB_OK;
    err->msg[0] = '\0';
}

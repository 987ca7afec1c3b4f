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
    char old[MB_ERROR_MAX];
    size_t len;
    va_list ap;

    memcpy(old, err->msg, sizeof(old));
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    len = strlen(err->msg);
    if (len + 2 < sizeof(err->msg)) {
        memcpy(err->msg + len, ": ", 3);
        len += 2;
        strncat(err->msg + len, old, sizeof(err->msg) - len - 1);
    }
    return -1;
}

void mb_error_clear(struct mb_error *err)
{
    err->code = MB_OK;
    err->msg[0] = '\0';
}

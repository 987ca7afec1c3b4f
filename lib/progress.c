/* The progress callback, called only when a front end asked for it. */
#include <stdarg.h>
#include <stdio.h>

#include "mbuild/progress.h"

void mb_progress_say(const struct mb_progress *p, const char *fmt, ...)
{
    char text[1024];
    va_list ap;

    if (p == NULL || p->message == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    p->message(p->ctx, text);
}

/*
 * Progress from the library to a front end: the library never prints, it
 * says what it is doing through this callback and the front end decides
 * how (and whether) to show it.
 */
#ifndef MBUILD_PROGRESS_H
#define MBUILD_PROGRESS_H

struct mb_progress {
    /* A phase starts or a line of step output arrives; `text` has no newline. */
    void (*message)(void *ctx, const char *text);
    void *ctx;
};

/* Call p->message when p and its callback are set. */
void mb_progress_say(const struct mb_progress *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif

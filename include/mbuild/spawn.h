/*
 * Running helper programs (qemu-img, qemu-system-*, ssh): posix_spawn with
 * an argv array, never a shell. The child gets its own process group, so a
 * timeout kills it and everything it started; stdin is /dev/null; stdout
 * and stderr are captured together up to a size cap.
 */
#ifndef MBUILD_SPAWN_H
#define MBUILD_SPAWN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "mbuild/error.h"

struct mb_spawn_result {
    int exit_status; /* exit code, or -1 when killed by a signal */
    int term_signal; /* the signal, when exit_status is -1 */
    bool timed_out;  /* killed because the timeout passed */
    char *output;    /* stdout and stderr interleaved, NUL-terminated, malloc'ed */
    size_t output_len;
    bool truncated; /* output was longer than the cap; the rest was read and dropped */
};

struct mb_spawn_options {
    int timeout_ms;    /* 0 for no limit */
    size_t max_output; /* bytes of output kept */
    const char *cwd;   /* the child's working directory, or NULL for ours */
};

/*
 * Run argv[0] (looked up in PATH) and wait for it. Returns -1 only when it
 * could not be run; a non-zero exit is reported in *out, not as an error.
 */
int mb_spawn_capture(const char *const argv[], const struct mb_spawn_options *opts,
                     struct mb_spawn_result *out, struct mb_error *err);

void mb_spawn_result_free(struct mb_spawn_result *res);

/* A child left running: its pid (also its process group) and its output pipe. */
struct mb_child {
    pid_t pid;
    int out_fd; /* stdout and stderr, read end, or -1 when not captured */
};

/*
 * Start argv[0] in a process group of its own, stdin from /dev/null, and
 * stdout and stderr into a pipe (`capture`) or to /dev/null. `pass_fd`,
 * unless -1, is left open in the child under the same number (every other
 * descriptor of ours is close-on-exec).
 */
int mb_child_start(const char *const argv[], const char *cwd, bool capture, int pass_fd,
                   struct mb_child *child, struct mb_error *err);

/*
 * Start argv[0] as a daemon that outlives us: a session of its own (so a
 * Ctrl-C at our terminal does not reach it), stdin from /dev/null, stdout
 * and stderr appended to `log`, `pass_fd` (unless -1) kept open.
 */
int mb_spawn_detached(const char *const argv[], const char *log, int pass_fd, pid_t *pid,
                      struct mb_error *err);

/* SIGKILL the child's whole process group. */
void mb_child_kill(const struct mb_child *child);

/* Wait for the child, close its pipe; fills exit_status and term_signal of *res. */
void mb_child_wait(struct mb_child *child, struct mb_spawn_result *res);

#endif

/*
 * posix_spawn with captured output, a size cap and a timeout that kills the
 * child's whole process group.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mbuild/clock.h"
#include "mbuild/spawn.h"

extern char **environ;

int mb_child_start(const char *const argv[], const char *cwd, bool capture, int pass_fd,
                   struct mb_child *child, struct mb_error *err)
{
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int fds[2] = {-1, -1};
    int rc;

    if (capture && pipe2(fds, O_CLOEXEC) < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "pipe");
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    if (capture) {
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
    } else {
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
    }
    if (cwd != NULL)
        posix_spawn_file_actions_addchdir_np(&actions, cwd);
    /* dup2 onto itself clears close-on-exec in the child only. */
    if (pass_fd >= 0)
        posix_spawn_file_actions_adddup2(&actions, pass_fd, pass_fd);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    rc = posix_spawnp(&child->pid, argv[0], &actions, &attr, (char *const *)argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    if (capture)
        close(fds[1]);
    child->out_fd = fds[0];
    if (rc != 0) {
        if (capture)
            close(fds[0]);
        child->out_fd = -1;
        return mb_error_errno(err, MB_ERR_GENERAL, rc, "run '%s'", argv[0]);
    }
    return 0;
}

int mb_spawn_detached(const char *const argv[], const char *log, int pass_fd, pid_t *pid,
                      struct mb_error *err)
{
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    int rc;

    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    if (pass_fd >= 0)
        posix_spawn_file_actions_adddup2(&actions, pass_fd, pass_fd);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
    rc = posix_spawnp(pid, argv[0], &actions, &attr, (char *const *)argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0)
        return mb_error_errno(err, MB_ERR_GENERAL, rc, "run '%s'", argv[0]);
    return 0;
}

void mb_child_kill(const struct mb_child *child)
{
    kill(-child->pid, SIGKILL);
}

void mb_child_wait(struct mb_child *child, struct mb_spawn_result *res)
{
    int status;

    if (child->out_fd >= 0)
        close(child->out_fd);
    child->out_fd = -1;
    while (waitpid(child->pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(status)) {
        res->exit_status = WEXITSTATUS(status);
    } else {
        res->exit_status = -1;
        res->term_signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    }
}

/* Append what is readable to the capture; returns 0 at end of file, 1 for more. */
static int drain(int fd, struct mb_spawn_result *out, size_t max_output)
{
    char buf[8192];
    ssize_t n = read(fd, buf, sizeof(buf));

    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 1 : 0;
    if (n == 0)
        return 0;
    size_t room = max_output - out->output_len;
    size_t take = (size_t)n < room ? (size_t)n : room;

    if (take < (size_t)n)
        out->truncated = true;
    memcpy(out->output + out->output_len, buf, take);
    out->output_len += take;
    return 1;
}

static void collect(int fd, pid_t pid, int timeout_ms, size_t max_output,
                    struct mb_spawn_result *out)
{
    long long deadline = timeout_ms > 0 ? mb_clock_ms() + timeout_ms : 0;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    for (;;) {
        int wait_ms = -1;

        if (deadline != 0) {
            long long left = deadline - mb_clock_ms();

            if (left <= 0) {
                out->timed_out = true;
                kill(-pid, SIGKILL);
                break;
            }
            wait_ms = (int)left;
        }
        int rc = poll(&pfd, 1, wait_ms);

        if (rc < 0 && errno != EINTR)
            break;
        if (rc > 0 && drain(fd, out, max_output) == 0)
            break;
    }
}

int mb_spawn_capture(const char *const argv[], const struct mb_spawn_options *opts,
                     struct mb_spawn_result *out, struct mb_error *err)
{
    struct mb_child child;

    memset(out, 0, sizeof(*out));
    out->output = malloc(opts->max_output + 1);
    if (out->output == NULL)
        return mb_error_set(err, MB_ERR_GENERAL, "out of memory");
    if (mb_child_start(argv, opts->cwd, true, -1, &child, err) < 0) {
        mb_spawn_result_free(out);
        return -1;
    }
    collect(child.out_fd, child.pid, opts->timeout_ms, opts->max_output, out);
    mb_child_wait(&child, out);
    out->output[out->output_len] = '\0';
    return 0;
}

void mb_spawn_result_free(struct mb_spawn_result *res)
{
    free(res->output);
    res->output = NULL;
    res->output_len = 0;
}

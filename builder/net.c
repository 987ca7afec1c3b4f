/*
 * Starting passt for one VM on a socket pair: passt gets one end by
 * number (--fd), QEMU the other, and neither needs a path in the file
 * system (run as root, passt drops to the user nobody, who could not
 * reach a socket in our private directories anyway).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mbuild/net.h"

#define MAX_FORWARDS 64

int mb_net_start(const struct mb_net_forward *forwards, size_t count, struct mb_net *out,
                 struct mb_error *err)
{
    const char *argv[8 + 2 * MAX_FORWARDS];
    char specs[MAX_FORWARDS][32], fd_text[16];
    int pair[2];
    size_t n = 0;

    out->passt.pid = -1;
    out->passt.out_fd = -1;
    out->qemu_fd = -1;
    if (count > MAX_FORWARDS)
        return mb_error_set(err, MB_ERR_INPUT, "at most %d forwarded ports", MAX_FORWARDS);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "start passt: socketpair");
    snprintf(fd_text, sizeof(fd_text), "%d", pair[0]);
    argv[n++] = "passt";
    argv[n++] = "--foreground";
    argv[n++] = "--quiet";
    argv[n++] = "--no-map-gw";
    argv[n++] = "--fd";
    argv[n++] = fd_text;
    for (size_t i = 0; i < count; i++) {
        snprintf(specs[i], sizeof(specs[i]), "127.0.0.1/%u:%u", forwards[i].host,
                 forwards[i].guest);
        argv[n++] = "-t";
        argv[n++] = specs[i];
    }
    argv[n] = NULL;
    if (mb_child_start(argv, NULL, false, pair[0], &out->passt, err) < 0) {
        close(pair[0]);
        close(pair[1]);
        return mb_error_prefix(err, "start passt");
    }
    close(pair[0]);
    out->qemu_fd = pair[1];
    return 0;
}

void mb_net_release(struct mb_net *net)
{
    if (net->qemu_fd >= 0)
        close(net->qemu_fd);
    net->qemu_fd = -1;
}

void mb_net_stop(struct mb_net *net)
{
    struct mb_spawn_result res = {0};

    mb_net_release(net);
    if (net->passt.pid > 0) {
        mb_child_kill(&net->passt);
        mb_child_wait(&net->passt, &res);
    }
    net->passt.pid = -1;
}

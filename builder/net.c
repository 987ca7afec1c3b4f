/*
 * Starting passt for one VM on a socket pair: passt gets one end by
 * number (--fd), QEMU the other, and neither needs a path in the file
 * system (run as root, passt drops to the user nobody, who could not
 * reach a socket in our private directories anyway).
 */
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mbuild/net.h"
#include "vm_args.h"

int mb_net_start(struct mb_net *out, struct mb_error *err)
{
    struct vm_args a = {0};
    int pair[2], rc;

    out->passt.pid = -1;
    out->passt.out_fd = -1;
    out->qemu_fd = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
        return mb_error_errno(err, MB_ERR_GENERAL, errno, "start passt: socketpair");
    vm_args_passt(&a, pair[0], false);
    rc = a.oom ? mb_error_set(err, MB_ERR_GENERAL, "out of memory")
               : mb_child_start((const char *const *)a.v, NULL, false, pair[0], &out->passt, err);
    vm_args_free(&a);
    close(pair[0]);
    if (rc < 0) {
        close(pair[1]);
        return mb_error_prefix(err, "start passt");
    }
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

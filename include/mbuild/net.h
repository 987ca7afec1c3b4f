/*
 * A VM's network: Debian's passt, which gives the guest DHCP, DNS and
 * outbound TCP/UDP through the host's sockets, as an ordinary user, and
 * which QEMU reaches through `-netdev stream` on a Unix socket.
 *
 * Always started with --no-map-gw: plain user-mode NAT maps the gateway
 * address to the host's own 127.0.0.1, which would let a hostile package
 * in the guest reach a database or a dev server on the laptop. With it,
 * the guest reaches the outside world and nothing listening on the host's
 * loopback. This is a step VM's network; machines start the same passt
 * (vm_args_passt) as a daemon with their forwarded ports.
 */
#ifndef MBUILD_NET_H
#define MBUILD_NET_H

#include "mbuild/error.h"
#include "mbuild/spawn.h"

struct mb_net {
    struct mb_child passt;
    int qemu_fd; /* QEMU's end: -netdev stream,addr.type=fd,addr.str=<fd>; -1 once handed over */
};

/*
 * Start passt on one end of a socket pair; the other end is for QEMU
 * (pass it to the child with mb_child_start, then mb_net_release it).
 * No socket file exists anywhere, so nothing else can connect, and passt
 * exits when QEMU goes away. Free with mb_net_stop.
 */
int mb_net_start(struct mb_net *out, struct mb_error *err);

/* Close our copy of QEMU's end once QEMU has it. */
void mb_net_release(struct mb_net *net);

/* Kill passt if it still runs and close what mb_net_start opened. */
void mb_net_stop(struct mb_net *net);

#endif

/*
 * QEMU command lines for the appliance's VMs, shared by step VMs
 * (stepvm.c) and machines (machine_boot.c): an argv that owns its
 * strings, and the part both boot the same way. Internal to builder/.
 */
#ifndef MB_VM_ARGS_H
#define MB_VM_ARGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mbuild/appliance.h"

#define VM_ARGS_MAX 256

struct vm_args {
    char *v[VM_ARGS_MAX + 1]; /* NULL-terminated */
    size_t n;
    bool oom; /* an add failed: the argv is incomplete and must not run */
};

void vm_args_add(struct vm_args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vm_args_free(struct vm_args *a);

/*
 * qemu-system-x86_64 on the microvm machine (virtio-mmio, no PCI, no
 * firmware: the appliance kernel boots directly through its PVH entry),
 * KVM or TCG, no default devices, the console on stdio, and the
 * appliance's kernel and initramfs. The caller adds -append and devices.
 */
void vm_args_boot(struct vm_args *a, const struct mb_appliance *appliance, bool kvm,
                  uint64_t memory, unsigned cpus);

/*
 * passt serving the VM on the socket `fd`, as it must always run: in the
 * foreground, and with --no-map-gw so the guest cannot reach the host's
 * own loopback, unless `host_loopback` asks for exactly that. The caller
 * adds port forwards (-t 127.0.0.1/HOST:GUEST).
 */
void vm_args_passt(struct vm_args *a, int fd, bool host_loopback);

/* The kernel command line every appliance boot starts with. */
void vm_args_append(struct vm_args *a, const char *extra);

#endif

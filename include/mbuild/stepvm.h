/*
 * One step in a throwaway VM: boot the build appliance on the layer's
 * overlay and the step's payload, stream the serial console, read the
 * exit-status line, and make sure no QEMU (or passt) outlives the call.
 *
 * The VM is QEMU's `microvm` machine with the appliance's uncompressed
 * kernel (PVH entry), virtio-mmio disks and, when the step may use the
 * network, a virtio-net card on passt (see net.h). KVM is used when it
 * works (probed once per host boot; MBUILD_ACCEL=kvm or tcg decides
 * instead). Without it (CI, laptops without nested virtualisation) QEMU
 * runs under TCG: a trivial step takes about 2.3 s here, boot included.
 */
#ifndef MBUILD_STEPVM_H
#define MBUILD_STEPVM_H

#include <stdbool.h>
#include <stdint.h>

#include "mbuild/appliance.h"
#include "mbuild/error.h"
#include "mbuild/progress.h"

/* Called once per line the step prints (no newline), as it arrives. */
typedef void (*mb_step_output_fn)(void *ctx, const char *line);

struct mb_step_vm {
    const struct mb_appliance *appliance;
    const char *disk;    /* qcow2 the step writes: an overlay on its parent */
    const char *payload; /* tar from mb_payload_write */
    const char *log;     /* the whole console, appended; NULL for none */
    bool network;
    unsigned cpus;
    uint64_t memory; /* bytes */
    uint64_t timeout_seconds;
    mb_step_output_fn on_output;
    void *ctx;
    const struct mb_progress *progress; /* phases, such as probing KVM; may be NULL */
};

#define MB_STEP_TAIL_LINES 20

struct mb_step_outcome {
    int exit_status; /* the step's; -1 when it never reported one */
    bool timed_out;
    char *tail; /* its last MB_STEP_TAIL_LINES lines of output, malloc'ed */
};

/*
 * Run the step. Returns 0 when the VM ran to the end, whatever the step's
 * status (see *out); -1 when it could not run, or when the run was
 * cancelled (MB_ERR_INTERRUPTED, see cancel.h). The VM is dead either way.
 */
int mb_step_vm_run(const struct mb_step_vm *vm, struct mb_step_outcome *out, struct mb_error *err);

void mb_step_outcome_clear(struct mb_step_outcome *out);

/*
 * Shared with the machine runtime, which boots the same appliance:
 * whether KVM works here (probed once per host boot, or MBUILD_ACCEL=kvm
 * or tcg), and the host's TSC rate in kHz for the guest's tsc_early_khz=
 * (microvm has no PIT or HPET to calibrate against; 0 when unknown).
 */
bool mb_vm_use_kvm(const struct mb_appliance *appliance, const struct mb_progress *progress);
unsigned long mb_vm_tsc_khz(void);

#endif

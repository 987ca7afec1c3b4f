#!/bin/bash
# Building layers: what mbuild adds around the VMs it runs.
#
#   bench/build.sh [BUILD_DIR] [EXAMPLE]
#
# 1. A fully cached rebuild of EXAMPLE (default examples/node-agent; it is
#    built first when the cache lacks it, which takes minutes) against
#    `qemu-img info` of its top layer, a process that does almost nothing.
# 2. The per-step overhead: `mbuild build --no-cache` of a one-step
#    Machinefile whose step is `true`, against a plain qemu-system boot of
#    the same appliance kernel and initramfs on an overlay of the same base
#    with the same payload and no mbuild around it.
# Each figure is the best of ROUNDS runs (default 5); ratios are ours over
# the reference. Uses its own cache under WORK (default a temp dir), or
# $MBUILD_CACHE when set, so a warm cache can be reused across runs.
set -euo pipefail

build=$(realpath "${1:-build}")
example=$(realpath "${2:-examples/node-agent}")
rounds=${ROUNDS:-5}
mbuild=$build/mbuild
work=$(mktemp -d "${TMPDIR:-/tmp}/mbuild-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
export MBUILD_CACHE=${MBUILD_CACHE:-$work/cache}

now() { date +%s.%N; }
best() { sort -g | head -n 1; }
# time_of CMD...: wall seconds of one run, output discarded.
time_of() {
    local start end
    start=$(now)
    "$@" >/dev/null 2>&1
    end=$(now)
    echo "$end - $start" | bc -l
}
# best_of CMD...: the best wall time of $rounds runs.
best_of() {
    local i
    for ((i = 0; i < rounds; i++)); do time_of "$@"; done | best
}
ratio() { echo "$1 / $2" | bc -l; }

echo "building $example/Machinefile (once, if not cached)" >&2
"$mbuild" build --progress=none -f "$example/Machinefile" >/dev/null
top=$("$mbuild" build --plan --json -f "$example/Machinefile" | jq -r '.layers[-1].key')
top_file=$MBUILD_CACHE/layers/${top#sha256:}.qcow2

cached=$(best_of "$mbuild" build --progress=none -f "$example/Machinefile")
info=$(best_of qemu-img info -f qcow2 "$top_file")
printf 'cached rebuild       %.4f s   qemu-img info %.4f s   ratio %.2f\n' "$cached" "$info" \
    "$(ratio "$cached" "$info")"

# One step running `true`, without network, through mbuild ...
mkdir -p "$work/step"
printf 'version: 1\nbase: tiny\nsteps:\n  - {name: noop, run: "true", network: false}\n' \
    >"$work/step/Machinefile"
"$mbuild" build --progress=none -f "$work/step/Machinefile" >/dev/null
step=$(best_of "$mbuild" build --no-cache --progress=none -f "$work/step/Machinefile")

# ... and the same VM by hand.
plan=$("$mbuild" build --plan --json -f "$work/step/Machinefile")
base=$MBUILD_CACHE/layers/$(jq -r '.layers[0].key' <<<"$plan" | cut -d: -f2).qcow2
appliance=$(ls -d "$MBUILD_CACHE"/appliance/*/ | head -n 1)
mkdir -p "$work/payload"
echo true >"$work/payload/step.sh"
: >"$work/payload/env"
tar -cf "$work/payload.tar" -C "$work/payload" .
khz=$(awk '/cpu MHz/ { printf "%d", $4 * 1000; exit }' /proc/cpuinfo)
plain_boot() {
    rm -f "$work/overlay.qcow2"
    qemu-img create -q -f qcow2 -F qcow2 -b "$base" "$work/overlay.qcow2"
    qemu-system-x86_64 -machine microvm,acpi=on -accel tcg,tb-size=64 -nodefaults \
        -no-user-config -no-reboot -display none -serial stdio -m 2048M -smp 2 \
        -kernel "$appliance/vmlinux" -initrd "$appliance/initramfs.cpio" \
        -append "console=ttyS0 quiet pci=off mitigations=off cryptomgr.notests tsc_early_khz=$khz panic=-1 reboot=t mb.nonce=0" \
        -drive "if=none,id=root,format=qcow2,cache=unsafe,discard=unmap,file=$work/overlay.qcow2" \
        -device virtio-blk-device,drive=root \
        -drive "if=none,id=payload,format=raw,readonly=on,file=$work/payload.tar" \
        -device virtio-blk-device,drive=payload
}
plain=$(best_of plain_boot)
printf 'step running true    %.3f s   plain qemu boot %.3f s   ratio %.2f (+%.3f s)\n' "$step" \
    "$plain" "$(ratio "$step" "$plain")" "$(echo "$step - $plain" | bc -l)"

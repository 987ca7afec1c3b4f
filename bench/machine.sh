#!/bin/bash
# Starting a machine: what `machine` adds to booting the same VM by hand.
#
#   bench/machine.sh [BUILD_DIR] [EXAMPLE]
#
# 1. `machine start` to the first successful `machine exec true`, against
#    a plain qemu-system boot of the same flattened image and appliance to
#    the point where the appliance hands over to the image's init (its
#    MBUILD-MACHINE-READY-FOR-INIT line on the serial console), in the same
#    run. Best of ROUNDS (default 3) each.
# 2. Creating a new machine on an assembled image (`machine start --name`
#    of a second machine, up to the moment QEMU is launched, is not
#    separable from outside: reported is the wall time of making the
#    overlay with qemu-img, which is what creation costs).
# 3. Host memory (PSS of QEMU, from /proc/PID/smaps_rollup) of the idle
#    machine 60 s after it answered.
# EXAMPLE defaults to examples/tiny. Uses its own cache and machine state.
set -euo pipefail

build=$(realpath "${1:-build}")
example=$(realpath "${2:-examples/tiny}")
rounds=${ROUNDS:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/machine-bench.XXXXXX")
export MBUILD_CACHE=${MBUILD_CACHE:-$work/cache} XDG_DATA_HOME=$work/data
trap '"$build/machine" rm --force bench >/dev/null 2>&1; rm -rf "$work"' EXIT

now() { date +%s.%N; }
best() { sort -g | head -n 1; }

cp -r "$example" "$work/project"
cd "$work/project"
"$build/machine" start --name bench --progress=none >/dev/null
"$build/machine" stop bench >/dev/null

start_to_exec() {
    local start end
    start=$(now)
    "$build/machine" start --name bench --progress=none >/dev/null
    "$build/machine" exec bench -- true
    end=$(now)
    "$build/machine" stop bench >/dev/null
    echo "$end - $start" | bc -l
}

disk=$(ls "$MBUILD_CACHE"/images/*/disk.qcow2 | head -n 1)
appliance=$(ls -d "$MBUILD_CACHE"/appliance/*/ | head -n 1)
khz=$(awk '/cpu MHz/ { printf "%d", $4 * 1000; exit }' /proc/cpuinfo)
plain_boot() {
    rm -f "$work/overlay.qcow2"
    qemu-img create -q -f qcow2 -F qcow2 -b "$disk" "$work/overlay.qcow2"
    local start end
    start=$(now)
    timeout 300 qemu-system-x86_64 -machine microvm,acpi=on -accel tcg,tb-size=64 -nodefaults \
        -no-user-config -no-reboot -display none -serial stdio -m 256M -smp 1 \
        -kernel "$appliance/vmlinux" -initrd "$appliance/initramfs.cpio" \
        -append "console=ttyS0 quiet pci=off mitigations=off cryptomgr.notests tsc_early_khz=$khz panic=-1 mb.mode=machine" \
        -drive "if=none,id=root,format=qcow2,file=$work/overlay.qcow2" \
        -device virtio-blk-device,drive=root | grep -m1 -q MBUILD-MACHINE-READY-FOR-INIT
    end=$(now)
    pkill -f "$work/overlay.qcow2" || true
    echo "$end - $start" | bc -l
}

ours=$(for ((i = 0; i < rounds; i++)); do start_to_exec; done | best)
plain=$(for ((i = 0; i < rounds; i++)); do plain_boot; done | best)
printf 'start to exec true   %.2f s   plain boot to init %.2f s   ratio %.2f\n' "$ours" "$plain" \
    "$(echo "$ours / $plain" | bc -l)"

start=$(now)
qemu-img create -q -f qcow2 -F qcow2 -b "$disk" "$work/new.qcow2"
end=$(now)
printf 'new machine overlay  %.3f s\n' "$(echo "$end - $start" | bc -l)"

"$build/machine" start --name bench --progress=none >/dev/null
"$build/machine" exec bench -- true
sleep 60
pid=$(cat "$XDG_DATA_HOME/machine/bench/qemu.pid")
pss=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup")
printf 'idle QEMU PSS        %.0f MiB (60 s after boot, free page reporting on)\n' \
    "$(echo "$pss / 1024" | bc -l)"

#!/bin/bash
# Starting a machine: what `machine` adds to booting the same VM by hand,
# and what an idle machine costs the host.
#
#   bench/machine.sh [BUILD_DIR] [EXAMPLE...]
#
# For each example (default: examples/tiny and a one-step debian-12
# project made here):
# 1. `machine start` to the first successful `machine exec true`, against
#    the very QEMU, passt and virtiofsd command lines it ran, started by
#    hand on a fresh overlay of the same image to the first successful
#    `ssh true` (bench/machine_plain.py), in the same run. Best of ROUNDS
#    (default 3) each.
# 2. Creating a new machine's disk on the assembled image: the wall time
#    of the qemu-img overlay, which is all a new machine writes.
# 3. Host memory of an idle machine: the guest fills half its memory with
#    a file in a tmpfs and deletes it (as a build that ends does), then
#    idles 60 s. PSS of all the machine's processes (QEMU, passt,
#    virtiofsd), split into anonymous, shared (guest RAM when virtiofs
#    shares it) and file-backed (the kernel image QEMU keeps mapped: page
#    cache, shared by every machine), with free page reporting (the
#    machine itself) and without (the same command lines by hand, the
#    balloon's free-page-reporting=off).
# Uses its own cache (unless MBUILD_CACHE is set) and machine state.
set -euo pipefail

build=$(realpath "${1:-build}")
shift || true
here=$(dirname "$(realpath "$0")")
rounds=${ROUNDS:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/machine-bench.XXXXXX")
export MBUILD_CACHE=${MBUILD_CACHE:-$work/cache} XDG_DATA_HOME=$work/data
machine=$build/machine
state=$XDG_DATA_HOME/machine/bench
trap '"$machine" rm --force bench >/dev/null 2>&1; rm -rf "$work"' EXIT

now() { date +%s.%N; }
best() { sort -g | head -n 1; }
calc() { echo "$1" | bc -l; }

debian_project() {
    mkdir -p "$work/debian-12"
    printf 'version: 1\nbase: debian-12\ncpus: 2\nmemory: 1GiB\nsteps:\n  - {run: "true"}\n%s\n' \
        'mounts: [{source: ., target: /work, writable: true}]' >"$work/debian-12/Machinefile"
    echo "$work/debian-12"
}

start_to_exec() {
    local start end
    start=$(now)
    "$machine" start --name bench --progress=none >/dev/null
    "$machine" exec bench -- true
    end=$(now)
    "$machine" stop bench >/dev/null
    calc "$end - $start"
}

# The command lines of the running machine, one word per line.
save_argv() {
    local f
    tr '\0' '\n' <"/proc/$(cat "$state/qemu.pid")/cmdline" >"$work/qemu.argv"
    tr '\0' '\n' <"/proc/$(cat "$state/passt.pid")/cmdline" >"$work/passt.argv"
    rm -f "$work"/fs*.argv
    for f in "$state"/fs*.pid; do
        [[ -e $f ]] && tr '\0' '\n' <"/proc/$(cat "$f")/cmdline" >"$work/$(basename "$f" .pid).argv"
    done
    return 0
}

plain() {
    rm -f "$state/root.qcow2"
    qemu-img create -q -f qcow2 -F qcow2 -b "$disk" "$state/root.qcow2"
    python3 "$here/machine_plain.py" "$work" "$state" "$port" "$@"
}

# In the guest: fill half the memory (a tmpfs of 50% until full), then free it.
workload='mkdir -p /tmp/bench-mem && mount -t tmpfs -o size=50% bench /tmp/bench-mem &&
  { dd if=/dev/zero of=/tmp/bench-mem/x bs=1M 2>/dev/null; umount /tmp/bench-mem; }'

# PSS, Pss_Anon, Pss_Shmem, Pss_File (KiB) summed over the machine's processes and children.
machine_pss() {
    local pids=() pid
    for pid in $(cat "$state"/*.pid); do
        pids+=("$pid" $(pgrep -P "$pid" || true))
    done
    for kind in Pss Pss_Anon Pss_Shmem Pss_File; do
        for pid in "${pids[@]}"; do awk -v k="$kind:" '$1 == k { print $2 }' "/proc/$pid/smaps_rollup"; done |
            awk '{ s += $1 } END { printf "%d ", s }'
    done
}

report_pss() {
    printf '  idle, free page reporting %-3s PSS %4.0f MiB (anonymous %.0f, shared %.0f, file %.0f)\n' \
        "$1" "$(calc "$2 / 1024")" "$(calc "$3 / 1024")" "$(calc "$4 / 1024")" "$(calc "$5 / 1024")"
}

bench_example() {
    local example=$1 ours plainboot start end pss
    rm -rf "$work/project" "$XDG_DATA_HOME"
    cp -r "$example" "$work/project"
    cd "$work/project"
    echo "== $(basename "$example") ($(grep -m1 '^base:' Machinefile))"
    # The first start builds and assembles; not timed.
    "$machine" start --name bench --progress=none >/dev/null
    save_argv
    port=$(jq -r .ssh_port "$state/machine.json")
    disk=$(qemu-img info -U --output=json "$state/root.qcow2" | jq -r '."full-backing-filename"')
    "$machine" stop bench >/dev/null

    ours=$(for ((i = 0; i < rounds; i++)); do start_to_exec; done | best)
    plainboot=$(for ((i = 0; i < rounds; i++)); do plain time; done | best)
    printf '  start to exec true %.2f s, same VM by hand to ssh %.2f s, ratio %.3f\n' \
        "$ours" "$plainboot" "$(calc "$ours / $plainboot")"

    start=$(now)
    qemu-img create -q -f qcow2 -F qcow2 -b "$disk" "$work/new.qcow2"
    end=$(now)
    rm -f "$work/new.qcow2"
    printf '  new machine overlay %.3f s\n' "$(calc "$end - $start")"

    "$machine" start --name bench --progress=none >/dev/null
    "$machine" exec bench -- sh -c "$workload"
    sleep 60
    pss=$(machine_pss)
    "$machine" stop bench >/dev/null
    report_pss on: $pss
    pss=$(plain idle "$workload" --no-free-page-reporting)
    report_pss off: $pss
    cd "$work"
}

examples=("$@")
[[ ${#examples[@]} -gt 0 ]] || examples=("$(realpath "$here/../examples/tiny")" "$(debian_project)")
for e in "${examples[@]}"; do
    bench_example "$(realpath "$e")"
done

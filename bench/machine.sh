#!/bin/bash
# Starting a machine: what `machine` adds to booting the same VM by hand.
#
#   bench/machine.sh [BUILD_DIR] [EXAMPLE]
#
# 1. `machine start` to the first successful `machine exec true`, against
#    the same QEMU and passt command lines started by hand on a fresh
#    overlay of the same image, to the first successful `ssh true`, in the
#    same run. Best of ROUNDS (default 3) each.
# 2. Creating a new machine's disk on an assembled image: the wall time of
#    the qemu-img overlay, which is all a new machine copies.
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

start_to_exec() {
    local start end
    start=$(now)
    "$build/machine" start --name bench --progress=none >/dev/null
    "$build/machine" exec bench -- true
    end=$(now)
    "$build/machine" stop bench >/dev/null
    echo "$end - $start" | bc -l
}

# The plain boot: the very QEMU and passt command lines the machine ran
# (read from /proc while it ran), started by hand on a fresh overlay, timed
# to the first successful `ssh true` with the same key.
"$build/machine" start --name bench --progress=none >/dev/null
state=$XDG_DATA_HOME/machine/bench
tr '\0' '\n' <"/proc/$(cat "$state/qemu.pid")/cmdline" >"$work/qemu.argv"
tr '\0' '\n' <"/proc/$(cat "$state/passt.pid")/cmdline" >"$work/passt.argv"
port=$(jq -r .ssh_port "$state/machine.json")
"$build/machine" stop bench >/dev/null
disk=$(ls "$MBUILD_CACHE"/images/*/disk.qcow2 | head -n 1)
plain_boot() {
    rm -f "$state/root.qcow2"
    qemu-img create -q -f qcow2 -F qcow2 -b "$disk" "$state/root.qcow2"
    python3 - "$work" "$state" "$port" <<'PY'
import os, socket, subprocess, sys, time
work, state, port = sys.argv[1], sys.argv[2], sys.argv[3]
qemu = open(work + "/qemu.argv").read().split("\n")[:-1]
passt = open(work + "/passt.argv").read().split("\n")[:-1]
a, b = socket.socketpair()
passt[passt.index("--fd") + 1] = str(a.fileno())
qemu = [w.replace(w[w.find("addr.str="):], "addr.str=%d" % b.fileno())
        if "addr.str=" in w else w for w in qemu]
start = time.time()
p = subprocess.Popen(passt, pass_fds=[a.fileno()], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
q = subprocess.Popen(qemu, pass_fds=[b.fileno()], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL)
a.close(); b.close()
ssh = ["ssh", "-F", "/dev/null", "-i", state + "/id_ed25519", "-p", port, "-o", "BatchMode=yes",
       "-o", "UserKnownHostsFile=" + state + "/known_hosts", "-o", "HostKeyAlias=machine-bench",
       "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "root@127.0.0.1", "true"]
while subprocess.run(ssh).returncode != 0:
    time.sleep(0.3)
print(time.time() - start)
q.kill(); p.kill(); q.wait(); p.wait()
PY
}

ours=$(for ((i = 0; i < rounds; i++)); do start_to_exec; done | best)
plain=$(for ((i = 0; i < rounds; i++)); do plain_boot; done | best)
printf 'start to exec true   %.2f s   plain qemu+passt to ssh %.2f s   ratio %.2f\n' "$ours" "$plain" \
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

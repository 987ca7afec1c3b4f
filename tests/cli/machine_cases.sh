# machine: real VMs started from tiny images, entered over ssh. Sourced by
# run.sh; each test has its own directory, cache and machine state
# ($XDG_DATA_HOME), and removes the machines it started.

source "$ROOT/tests/cli/vm_cases.sh" # seed_cache, write_machinefile, layer_count
unset -f $(declare -F | awk '{print $3}' | grep '^test_vm_')

machine_env() {
    export XDG_DATA_HOME=$PWD/data
    seed_cache
}

# Kill whatever a failed test left running.
machine_cleanup() {
    local m
    for m in $("$MACHINE" ls --json 2>/dev/null | jq -r '.machines[].name'); do
        "$MACHINE" rm --force "$m" >/dev/null 2>&1
    done
}

start_in() {
    (cd "$1" && "$MACHINE" start "${@:2}")
}

# write_tiny_machine [LINES]: project/Machinefile for a small tiny machine
# of one step, then LINES (mounts, volumes, ...).
write_tiny_machine() {
    write_machinefile "version: 1
base: tiny
memory: 256MiB
cpus: 1
steps:
  - {run: \"true\"}${1:+
$1}"
}

# expect_shares FS: the project's mounts are of type FS, /work writable,
# /ro not even after the guest remounts it, and host symlinks resolve.
expect_shares() {
    run "$MACHINE" exec project -- awk '$2 == "/work" || $2 == "/ro" {print $2, $3}' /proc/mounts
    expect_out "^/work $1$"
    expect_out "^/ro $1$"
    (cd project && "$MACHINE" exec -- sh -c 'echo from-guest > /work/out.txt') ||
        fail "exec in the project directory failed"
    [[ $(cat project/out.txt 2>/dev/null) == from-guest ]] || fail "writable mount not written"
    run "$MACHINE" exec project -- sh -c 'cat /ro/link && touch /ro/new'
    expect_out '^read-only$'
    [[ $status -ne 0 && ! -e project/ro/new ]] || fail "read-only mount was writable"
    run "$MACHINE" exec project -- sh -c 'mount -o remount,rw /ro; touch /ro/new'
    [[ ! -e project/ro/new ]] || fail "the guest made a read-only mount writable"
}

test_machine_start_exec_mounts_ports_and_isolation() {
    machine_env
    local port=$((20000 + RANDOM % 10000)) secret=$((30000 + RANDOM % 10000))
    mkdir -p project/ro
    echo from-host >project/hello.txt
    echo read-only >project/ro/file
    ln -s file project/ro/link
    write_machinefile "version: 1
base: tiny
memory: 256MiB
cpus: 1
steps:
  - {name: web, run: 'mkdir -p /www && echo served-by-guest > /www/index.html'}
ports: [\"$port:8080\"]
mounts:
  - {source: ., target: /work, writable: true}
  - {source: ro, target: /ro}"
    mkdir -p served && echo host-secret >served/index.html
    python3 -m http.server "$secret" --bind 127.0.0.1 --directory served >/dev/null 2>&1 &
    local server=$!

    run start_in project
    expect_status 0
    expect_out "^machine 'project' is ready in [0-9.]+s$"

    run "$MACHINE" exec project -- sh -c 'cat /work/hello.txt; exit 3'
    expect_status 3
    expect_out '^from-host$'
    expect_shares virtiofs

    "$MACHINE" exec project -- sh -c 'httpd -p 8080 -h /www' || fail "guest httpd"
    sleep 1
    [[ $(curl -s --max-time 10 "http://127.0.0.1:$port/") == served-by-guest ]] ||
        fail "forwarded port does not reach the guest"

    run "$MACHINE" exec project -- sh -c "gw=\$(ip route | awk '/default/ {print \$3}');
        for a in \$gw 127.0.0.1 10.0.2.2; do
          timeout 5 wget -q -O - http://\$a:$secret/ 2>/dev/null | grep -q host-secret &&
            echo reached-\$a; done; echo done"
    kill $server
    expect_out '^done$'
    expect_no_out 'reached'

    run "$MACHINE" start project
    expect_status 0
    expect_out "already running"
    run "$MACHINE" ls --json
    [[ $(jq -r '.machines[0].state' <<<"$out") == running ]] || fail "ls does not show it running"
    [[ -n $(pgrep -f "virtiofsd.*$XDG_DATA_HOME") ]] || fail "no virtiofsd serves the mounts"
    run "$MACHINE" stop project
    expect_status 0
    [[ -z $(pgrep -f "(qemu-system|virtiofsd).*$XDG_DATA_HOME") ]] ||
        fail "QEMU or virtiofsd still runs after stop"
    machine_cleanup
}

# Where virtiofsd cannot run (MACHINE_SHARE=9p stands in for that), the
# same mounts go over 9p with the same guarantees.
test_machine_mounts_fall_back_to_9p() {
    machine_env
    mkdir -p project/ro
    echo read-only >project/ro/file
    ln -s file project/ro/link
    write_tiny_machine 'mounts:
  - {source: ., target: /work, writable: true}
  - {source: ro, target: /ro}'
    MACHINE_SHARE=9p start_in project >/dev/null || fail "start with 9p shares"
    expect_shares 9p
    [[ -z $(pgrep -f "virtiofsd.*$XDG_DATA_HOME") ]] || fail "virtiofsd runs for 9p shares"
    machine_cleanup
}

test_machine_root_is_fresh_each_start_volumes_last() {
    machine_env
    write_tiny_machine 'volumes:
  - {name: data, target: /data, size: 64MiB}'
    run start_in project
    expect_status 0
    "$MACHINE" exec project -- sh -c 'echo root > /root-file; echo vol > /data/vol-file; sync' ||
        fail "write files"
    local volume=$XDG_DATA_HOME/machine/project/volumes/data.qcow2
    [[ $(qemu-img info -U -f qcow2 --output=json "$volume" | jq -r .format) == qcow2 ]] ||
        fail "the volume is not a qcow2 disk in the machine's directory"
    run "$MACHINE" stop project
    expect_status 0
    expect_out "machine 'project' stopped"
    [[ -z $(pgrep -f "qemu-system.*$XDG_DATA_HOME") ]] || fail "QEMU still runs after stop"
    run start_in project
    expect_status 0
    run "$MACHINE" exec project -- sh -c 'cat /data/vol-file; ls /root-file'
    expect_out '^vol$'
    [[ $status -ne 0 ]] || fail "a file in the root survived a restart"

    # persistent: true keeps the root disk too.
    "$MACHINE" stop project >/dev/null
    sed -i 's/^cpus: 1$/cpus: 1\npersistent: true/' project/Machinefile
    start_in project >/dev/null || fail "start persistent"
    "$MACHINE" exec project -- sh -c 'echo kept > /root-file; sync' || fail "write root"
    "$MACHINE" stop project >/dev/null
    start_in project >/dev/null || fail "restart persistent"
    run "$MACHINE" exec project -- cat /root-file /data/vol-file
    expect_out '^kept$'
    expect_out '^vol$'

    # reset drops the kept root disk now; the volume stays.
    run "$MACHINE" reset project
    expect_status 0
    start_in project >/dev/null || fail "start after reset"
    run "$MACHINE" exec project -- sh -c 'cat /data/vol-file; ls /root-file'
    expect_out '^vol$'
    [[ $status -ne 0 ]] || fail "reset kept the root disk"

    run "$MACHINE" rm project
    expect_status 2
    expect_err "is running"
    run "$MACHINE" rm --force project
    expect_status 0
    [[ ! -e $XDG_DATA_HOME/machine/project ]] || fail "machine state left behind"
    [[ -n $(ls "$MBUILD_CACHE"/images/*/disk.qcow2) ]] || fail "rm removed the image"
    machine_cleanup
}

test_machine_two_machines_share_the_image_not_their_disks() {
    machine_env
    write_tiny_machine
    run start_in project --name one
    expect_status 0
    expect_err 'flattening'
    local disk
    disk=$(ls "$MBUILD_CACHE"/images/*/disk.qcow2)
    local before
    before=$(stat -c '%i %Y' "$disk")
    run start_in project --name two
    expect_status 0
    expect_no_out 'flattening'
    grep -q flattening <<<"$err" && fail "the second machine flattened the image again"
    [[ $(stat -c '%i %Y' "$disk") == "$before" ]] || fail "the flattened image was rewritten"
    "$MACHINE" exec one -- sh -c 'echo mine > /only-in-one; sync' || fail "write in one"
    run "$MACHINE" exec two -- ls /only-in-one
    [[ $status -ne 0 ]] || fail "a write in one machine is visible in the other"
    run "$MACHINE" ls
    expect_out '^one +running'
    expect_out '^two +running'
    machine_cleanup
}

test_machine_open_host_loopback_on_purpose() {
    machine_env
    local secret=$((30000 + RANDOM % 10000))
    write_tiny_machine
    mkdir -p served && echo host-secret >served/index.html
    python3 -m http.server "$secret" --bind 127.0.0.1 --directory served >/dev/null 2>&1 &
    local server=$!
    run start_in project --open-host-loopback
    expect_status 0
    run "$MACHINE" exec project -- sh -c "gw=\$(ip route | awk '/default/ {print \$3}');
        timeout 5 wget -q -O - http://\$gw:$secret/"
    kill $server
    expect_out '^host-secret$'
    machine_cleanup
}

test_machine_two_starts_at_once_boot_one_vm() {
    machine_env
    write_tiny_machine
    # Build first: the race under test is the start, not the build.
    "$MBUILD" build --progress=none -f project/Machinefile >/dev/null || fail "build"
    (cd project && "$MACHINE" start --progress=none >../one.out 2>&1) &
    local one=$!
    (cd project && "$MACHINE" start --progress=none >../two.out 2>&1) &
    local two=$!
    wait $one || fail "first start failed: $(cat one.out)"
    wait $two || fail "second start failed: $(cat two.out)"
    [[ $(cat one.out two.out | grep -c 'is ready in') == 1 ]] || fail "not exactly one boot"
    [[ $(cat one.out two.out | grep -c 'already running') == 1 ]] || fail "no 'already running'"
    [[ $(pgrep -fc "qemu-system.*$XDG_DATA_HOME") == 1 ]] || fail "not exactly one QEMU"
    machine_cleanup
}

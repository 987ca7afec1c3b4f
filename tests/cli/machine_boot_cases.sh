# The guest side of `machine start`, without the machine program: the
# appliance's machine mode (mb.mode=machine) and the `tiny` base's ssh
# server, booted by hand in real QEMU (TCG unless MBUILD_ACCEL=kvm) the
# way builder/machine_boot.c boots them. Sourced by run.sh. The appliance
# and the tiny image are built once, by mbuild, in a cache these tests
# share; each test has its own overlay, keys, volume and share.

BOOT_CACHE=$WORK/boot-cache
PATH=$PATH:/usr/sbin:/sbin # mke2fs, debugfs and e2fsck for an ordinary user

# Start passt on one end of a socket pair and exec QEMU with the other
# (its number replaces @NETFD@ in QEMU's argv). Arguments: PORT
# PASST_PID_FILE QEMU-ARGV...; passt forwards 127.0.0.1:PORT to the guest's 22.
BOOT_PY='
import os, socket, subprocess, sys
port, pid_file, qemu = sys.argv[1], sys.argv[2], sys.argv[3:]
ours, theirs = socket.socketpair()
passt = subprocess.Popen(
    ["passt", "--foreground", "--quiet", "--no-map-gw", "--fd", str(ours.fileno()),
     "-t", "127.0.0.1/%s:22" % port],
    pass_fds=[ours.fileno()], stdin=subprocess.DEVNULL)
with open(pid_file, "w") as f:
    f.write("%d\n" % passt.pid)
ours.close()
os.set_inheritable(theirs.fileno(), True)
os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
qemu = [w.replace("@NETFD@", str(theirs.fileno())) for w in qemu]
os.execvp(qemu[0], qemu)
'

# The top layer of a one-step Machinefile on tiny, built once: sets $layer.
build_tiny_layer() {
    export MBUILD_CACHE=$BOOT_CACHE
    mkdir -p "$WORK/boot-project"
    printf 'version: 1\nbase: tiny\nsteps:\n  - run: "echo built > /built"\n' \
        >"$WORK/boot-project/Machinefile"
    if ! "$MBUILD" build --progress=none -f "$WORK/boot-project/Machinefile" >/dev/null \
        2>"$WORK/err"; then
        fail "build failed: $(tail -5 "$WORK/err")"
        return 1
    fi
    local key
    key=$("$MBUILD" build --plan --json -f "$WORK/boot-project/Machinefile" | jq -r '.layers[-1].key')
    layer=$MBUILD_CACHE/layers/${key#sha256:}.qcow2
    [[ -f $layer ]] || {
        fail "no layer file '$layer'"
        return 1
    }
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# boot_machine EXTRA_CMDLINE [QEMU-ARGS...]: boot the layer on a fresh
# overlay in the background with machine mode, the network, the keys in
# fw_cfg and ssh on $port. Sets $qemu_pid, $port; the console goes to ./console.log.
boot_machine() {
    local appliance tsc_khz accel=tcg,tb-size=64
    appliance=$(ls -d "$MBUILD_CACHE"/appliance/*/ | head -1)
    tsc_khz=$(awk -F: '/^cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)
    [[ ${MBUILD_ACCEL:-} == kvm ]] && accel=kvm
    qemu-img create -q -f qcow2 -F qcow2 -b "$layer" root.qcow2 || fail "qemu-img create"
    ssh-keygen -q -t ed25519 -N '' -C client -f id_ed25519 || fail "client key"
    ssh-keygen -q -t ed25519 -N '' -C host -f host_ed25519 || fail "host key"
    port=$(free_port)
    echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 host_ed25519.pub)" >known_hosts
    python3 -c "$BOOT_PY" "$port" passt.pid \
        qemu-system-x86_64 -machine microvm,acpi=on -accel "$accel" \
        -nodefaults -no-user-config -no-reboot -display none -serial stdio \
        -m 256M -smp 1 -kernel "$appliance/vmlinux" -initrd "$appliance/initramfs.cpio" \
        -append "console=ttyS0 quiet pci=off mitigations=off cryptomgr.notests \
tsc_early_khz=$tsc_khz panic=-1 mb.mode=machine mb.net=1 $1" \
        -drive if=none,id=root,format=qcow2,discard=unmap,file=root.qcow2 \
        -device virtio-blk-device,drive=root \
        -fw_cfg name=opt/mbuild/authorized_keys,file=id_ed25519.pub \
        -fw_cfg name=opt/mbuild/host_key,file=host_ed25519 \
        -netdev stream,id=net,server=off,addr.type=fd,addr.str=@NETFD@ \
        -device virtio-net-device,netdev=net "${@:2}" >console.log 2>&1 &
    qemu_pid=$!
}

# guest_ssh COMMAND...: as root, pinning the host key in ${known_hosts:-known_hosts}.
guest_ssh() {
    ssh -F /dev/null -i id_ed25519 -p "$port" -o IdentitiesOnly=yes -o BatchMode=yes \
        -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$PWD/${known_hosts:-known_hosts}" \
        -o ConnectTimeout=5 -o LogLevel=ERROR root@127.0.0.1 "$@"
}

# wait_ssh SECONDS: until `ssh true` succeeds; sets $boot_ms, the time since QEMU's launch.
wait_ssh() {
    local start=$1 deadline=$(($(date +%s) + $2))
    boot_ms=
    while (($(date +%s) < deadline)); do
        kill -0 "$qemu_pid" 2>/dev/null || break
        if guest_ssh true 2>/dev/null; then
            boot_ms=$((($(date +%s%N) - start) / 1000000))
            return 0
        fi
        sleep 0.2
    done
    fail "no ssh answer; console: $(tail -15 console.log)"
    return 1
}

# wait_gone PID SECONDS: 0 once the process has exited.
wait_gone() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# Kill what a boot left running (nothing, when the guest powered off).
boot_cleanup() {
    [[ -n ${qemu_pid:-} ]] && kill -9 "$qemu_pid" 2>/dev/null
    [[ -f passt.pid ]] && kill -9 "$(cat passt.pid)" 2>/dev/null
    qemu_pid=
    wait 2>/dev/null
}

test_machine_boot_tiny_answers_pinned_ssh_with_share_and_volume() {
    build_tiny_layer || return
    mkdir -p share ro-share
    echo from-host >share/host-file
    echo read-only >ro-share/file
    truncate -s 64M volume.img
    mke2fs -q -F -t ext4 volume.img || fail "mke2fs"

    local start
    start=$(date +%s%N)
    boot_machine "mb.vol=vdb:/data mb.share=work:/work:rw:9p mb.share=ro:/srv/ro:ro:9p" \
        -drive if=none,id=vol0,format=raw,file=volume.img -device virtio-blk-device,drive=vol0 \
        -fsdev "local,id=fs0,path=$PWD/share,security_model=none" \
        -device virtio-9p-device,fsdev=fs0,mount_tag=work \
        -fsdev "local,id=fs1,path=$PWD/ro-share,security_model=none" \
        -device virtio-9p-device,fsdev=fs1,mount_tag=ro
    wait_ssh "$start" 120 || {
        boot_cleanup
        return
    }
    echo "  boot to ssh: $boot_ms ms" >&2
    grep -q '^MBUILD-MACHINE-READY-FOR-INIT' console.log || fail "no ready marker on the console"

    run guest_ssh uname -a
    expect_status 0
    expect_out '^Linux tiny [^ ]+-amd64 .* x86_64'
    run guest_ssh 'cat /built /work/host-file; echo from-guest > /work/guest-file'
    expect_out '^built$'
    expect_out '^from-host$'
    [[ $(cat share/guest-file 2>/dev/null) == from-guest ]] || fail "the share is not writable"
    run guest_ssh 'cat /srv/ro/file; touch /srv/ro/new'
    expect_out '^read-only$'
    [[ $status -ne 0 && ! -e ro-share/new ]] || fail "the read-only share was writable"
    run guest_ssh 'grep " /data " /proc/mounts; echo kept > /data/file
        stat -c "%a %n" /root/.ssh /root/.ssh/authorized_keys; grep -c nameserver /etc/resolv.conf'
    expect_out '^/dev/vdb /data ext4 rw'
    expect_out '^700 /root/.ssh$'
    expect_out '^600 /root/.ssh/authorized_keys$'
    expect_out '^[1-9]$'

    # The guest proves it holds the host's key: any other key is refused.
    ssh-keygen -q -t ed25519 -N '' -f other_host
    echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 other_host.pub)" >known_hosts.other
    known_hosts=known_hosts.other run guest_ssh true
    [[ $status -ne 0 ]] || fail "ssh accepted a host key other than the pinned one"
    expect_err 'Host key verification failed'

    # `poweroff` goes through the image's init: QEMU exits, the volume keeps its file.
    guest_ssh 'sync; poweroff'
    wait_gone "$qemu_pid" 60 || fail "QEMU still runs after poweroff"
    [[ $(debugfs -R 'cat /file' volume.img 2>/dev/null) == kept ]] || fail "volume lost its file"
    qemu-img convert -f qcow2 -O raw root.qcow2 root.raw
    e2fsck -fn root.raw >/dev/null 2>&1 || fail "the root file system needs repair after poweroff"
    boot_cleanup
}

test_machine_boot_failure_powers_off_with_the_reason() {
    build_tiny_layer || return
    boot_machine "mb.share=missing:/work:rw:9p"
    wait_gone "$qemu_pid" 120 || fail "QEMU still runs after a failed mount"
    grep -q "^mbuild-appliance: cannot mount share 'missing' at '/work'" console.log ||
        fail "no reason on the console: $(tail -5 console.log)"
    grep -q 'MBUILD-MACHINE-READY-FOR-INIT' console.log && fail "ready marker after a failure"
    boot_cleanup
}

test_machine_boot_refuses_a_target_leaving_the_root() {
    build_tiny_layer || return
    boot_machine "mb.share=work:/tmp/../etc:rw:9p"
    wait_gone "$qemu_pid" 120 || fail "QEMU still runs after a bad target"
    grep -q "^mbuild-appliance: '/tmp/../etc' is not a clean absolute path" console.log ||
        fail "no reason on the console: $(tail -5 console.log)"
    boot_cleanup
}

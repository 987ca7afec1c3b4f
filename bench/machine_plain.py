#!/usr/bin/env python3
"""The reference for bench/machine.sh: boot a machine's VM by hand.

    machine_plain.py WORK STATE PORT time
    machine_plain.py WORK STATE PORT idle WORKLOAD [--no-free-page-reporting]

Runs the very command lines a machine ran (WORK/qemu.argv, passt.argv and
fs*.argv, one word per line, read from /proc while it ran) on a fresh
overlay made beforehand, with a new socket pair between passt and QEMU.
virtiofsd gets the namespace `machine` gives it (no user namespace for
root). Waits for the first successful `ssh true` with the machine's key.

time: prints the seconds from launch to that ssh.
idle: then runs the shell command WORKLOAD in the guest, sleeps 60 s and
      prints the PSS in KiB of all the VM's processes (QEMU, passt,
      virtiofsd): in all, anonymous, shared memory, file-backed.
"""
import glob
import os
import socket
import subprocess
import sys
import time


def words(path):
    with open(path) as f:
        return f.read().split("\n")[:-1]


# What bench/machine.sh reports, in this order.
KINDS = ("Pss", "Pss_Anon", "Pss_Shmem", "Pss_File")


def pss_kib(pid, kind):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith(kind + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid):
    """pid and its descendants."""
    out = [pid]
    try:
        children = open("/proc/%d/task/%d/children" % (pid, pid)).read().split()
    except OSError:
        children = []
    for child in children:
        out += tree(int(child))
    return out


def virtiofsd(argv):
    wrap = ["unshare"] + ([] if os.geteuid() == 0 else ["--map-auto", "--map-root-user"])
    script = 'mount -t tmpfs -o mode=0755 bench /run && exec "$0" "$@"'
    return wrap + ["--mount", "sh", "-c", script] + argv


def main():
    work, state, port, mode = sys.argv[1:5]
    qemu = words(work + "/qemu.argv")
    passt = words(work + "/passt.argv")
    if "--no-free-page-reporting" in sys.argv:
        qemu = [w.replace("free-page-reporting=on", "free-page-reporting=off") for w in qemu]
    a, b = socket.socketpair()
    passt[passt.index("--fd") + 1] = str(a.fileno())
    qemu = [w[: w.find("addr.str=")] + "addr.str=%d" % b.fileno() if "addr.str=" in w else w
            for w in qemu]
    start = time.time()
    procs = [subprocess.Popen(passt, pass_fds=[a.fileno()], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    for fs in sorted(glob.glob(work + "/fs*.argv")):
        sock = [w for w in words(fs) if w.startswith("--socket-path=")][0].split("=", 1)[1]
        if os.path.exists(sock):
            os.unlink(sock)
        procs.append(subprocess.Popen(virtiofsd(words(fs)), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        while not os.path.exists(sock):
            time.sleep(0.01)
    console = open(work + "/plain-console.log", "w+b")
    q = subprocess.Popen(qemu, pass_fds=[b.fileno()], stdout=console, stderr=subprocess.DEVNULL)
    procs.append(q)
    a.close()
    b.close()
    ssh = ["ssh", "-F", "/dev/null", "-i", state + "/id_ed25519", "-p", port,
           "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=" + state + "/known_hosts",
           "-o", "HostKeyAlias=machine-bench", "-o", "ConnectTimeout=5",
           "-o", "LogLevel=ERROR", "root@127.0.0.1", "true"]
    # As `machine` does: ssh once the appliance says the network is up.
    while b"MBUILD-MACHINE-READY-FOR-INIT" not in open(console.name, "rb").read():
        time.sleep(0.05)
    while subprocess.run(ssh, stderr=subprocess.DEVNULL).returncode != 0:
        time.sleep(0.2)
    if mode == "time":
        print(time.time() - start)
    else:
        subprocess.run(ssh[:-1] + [sys.argv[5]], stdout=subprocess.DEVNULL)
        time.sleep(60)
        pids = [pid for p in procs for pid in tree(p.pid)]
        print(" ".join(str(sum(pss_kib(pid, k) for pid in pids)) for k in KINDS))
    for p in procs:
        p.kill()
        p.wait()


main()

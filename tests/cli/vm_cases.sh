# Build tests that boot real VMs (the `tiny` base, QEMU under TCG when KVM
# does not work), sourced by run.sh. Each runs in a fresh directory with a
# fresh cache; the build appliance and the Debian packages it is made of
# are made once in a seed cache and linked into each test's cache, since
# they are not what these tests are about.

# Link the appliance and the fetched packages of the seed cache into $MBUILD_CACHE.
seed_cache() {
    local seed=$WORK/seed
    if [[ ! -d $seed/appliance ]]; then
        mkdir -p "$seed/project"
        printf 'version: 1\nbase: tiny\nsteps:\n  - run: "true"\n' >"$seed/project/Machinefile"
        "$MBUILD" build --progress=none --cache "$seed/cache" -f "$seed/project/Machinefile" \
            >/dev/null || fail "seed build failed"
        mv "$seed/cache/appliance" "$seed/cache/debs" "$seed/"
    fi
    mkdir -p "$MBUILD_CACHE"
    cp -al "$seed/appliance" "$seed/debs" "$MBUILD_CACHE/"
}

# write_machinefile TEXT: the project's Machinefile, in ./project.
write_machinefile() {
    mkdir -p project
    printf '%s\n' "$1" >project/Machinefile
}

layer_count() {
    "$MBUILD" cache ls --json | jq '.layers | length'
}

# QEMU processes started from this test's cache.
qemu_left() {
    pgrep -f "qemu-system.*$MBUILD_CACHE" || true
}

expect_cache_valid() {
    run "$MBUILD" cache verify
    [[ $status -eq 0 ]] || fail "cache verify failed: $out $err"
    [[ -z $(ls -A "$MBUILD_CACHE/work" | grep -v '\.lock$') ]] || fail "work directory left behind"
    [[ -z $(qemu_left) ]] || fail "a QEMU process was left running"
}

test_vm_steps_see_earlier_layers_env_and_copied_files() {
    seed_cache
    mkdir -p project/conf
    printf 'copied content\n' >project/conf/app.conf
    chmod 0640 project/conf/app.conf
    write_machinefile 'version: 1
base: tiny
env: {GREETING: hello}
steps:
  - name: write
    copy: [conf]
    env: {STEP_ONLY: "one two"}
    run: |
      echo "conf=$(cat /work/conf/app.conf) mode=$(stat -c %a /work/conf/app.conf)"
      echo "env=$GREETING/$STEP_ONLY"
      mkdir -p /data && echo from-write > /data/file
  - name: read
    run: |
      echo "read=$(cat /data/file)"
      echo "env=$GREETING/${STEP_ONLY:-unset}"'
    run "$MBUILD" build -f project/Machinefile
    expect_status 0
    expect_err '^write \| conf=copied content mode=640$'
    expect_err '^write \| env=hello/one two$'
    expect_err '^read \| read=from-write$'
    expect_err '^read \| env=hello/unset$'
    expect_out '^\[3/3\] read +built in'
    [[ $(layer_count) == 3 ]] || fail "expected 3 layers in the cache"
    # Each built layer keeps its duration and its VM's console.
    local key
    for key in $("$MBUILD" cache ls --json | jq -r '.layers[] | select(.step != "base") | select(.build_ms > 1000) | .key'); do
        grep -qE "^(conf|read)=" "$MBUILD_CACHE/logs/${key#sha256:}.log" || fail "no log for $key"
    done
    [[ $("$MBUILD" cache ls --json | jq '[.layers[] | select(.step != "base" and .build_ms > 1000)] | length') == 2 ]] ||
        fail "step durations not recorded"
    expect_cache_valid
    # Nothing of the host reaches a stored layer: no backing path in any blob.
    for blob in "$MBUILD_CACHE"/blobs/sha256/*; do
        zstd -dc "$blob" 2>/dev/null | grep -qa "$MBUILD_CACHE" && fail "host path in blob $blob"
    done

    run "$MBUILD" build -f project/Machinefile
    expect_status 0
    expect_out '^\[3/3\] read +cached'
    expect_no_out 'built'
}

test_vm_failing_step_exits_3_and_caches_nothing_of_it() {
    seed_cache
    write_machinefile 'version: 1
base: tiny
steps:
  - {name: fine, run: "echo fine > /fine"}
  - name: broken
    run: |
      echo about to fail
      exit 7'
    run "$MBUILD" build -f project/Machinefile
    expect_status 3
    expect_err "step 'broken' failed with exit status 7"
    expect_err '^  \| about to fail$'
    [[ $(layer_count) == 2 ]] || fail "expected only base and 'fine' cached"
    expect_cache_valid
}

test_vm_step_past_its_timeout_is_killed() {
    seed_cache
    write_machinefile 'version: 1
base: tiny
steps:
  - {name: slow, run: "echo sleeping; sleep 600", timeout: 10s}'
    local start=$SECONDS
    run "$MBUILD" build -f project/Machinefile
    expect_status 3
    expect_err "step 'slow' timed out after 10s"
    ((SECONDS - start < 120)) || fail "the timeout did not stop the step"
    [[ $(layer_count) == 1 ]] || fail "expected only the base cached"
    expect_cache_valid
}

test_vm_sigint_during_a_step_leaves_the_cache_valid() {
    seed_cache
    write_machinefile 'version: 1
base: tiny
steps:
  - {name: long, run: "echo started; sleep 600"}'
    "$MBUILD" build -f project/Machinefile >out.txt 2>err.txt &
    local pid=$! i
    for ((i = 0; i < 600; i++)); do
        grep -q '^long | started' err.txt && break
        sleep 0.1
    done
    grep -q '^long | started' err.txt || fail "the step never started"
    kill -INT $pid
    wait $pid
    status=$?
    err=$(cat err.txt)
    expect_status 130
    expect_err 'interrupted'
    [[ $(layer_count) == 1 ]] || fail "expected only the base cached"
    expect_cache_valid
}

test_vm_network_false_has_no_nic_and_true_has_one() {
    seed_cache
    write_machinefile 'version: 1
base: tiny
steps:
  - {name: online, run: "ip -4 addr show eth0 | grep -q inet && echo has-address"}
  - {name: offline, network: false, run: "ip link show eth0 2>/dev/null && exit 1; echo no-nic"}'
    run "$MBUILD" build -f project/Machinefile
    expect_status 0
    expect_err '^online \| has-address$'
    expect_err '^offline \| no-nic$'
}

test_vm_step_cannot_reach_services_on_the_host_loopback() {
    seed_cache
    local port=$((20000 + RANDOM % 20000))
    mkdir -p served && echo host-secret >served/index.html
    python3 -m http.server "$port" --bind 127.0.0.1 --directory served >/dev/null 2>&1 &
    local server=$!
    sleep 1
    curl -s "http://127.0.0.1:$port/" | grep -q host-secret || fail "test server did not start"
    write_machinefile "version: 1
base: tiny
steps:
  - name: probe
    run: |
      gw=\$(ip route | awk '/default/ {print \$3}')
      me=\$(ip -4 addr show eth0 | awk '/inet / {sub(\"/.*\", \"\", \$2); print \$2}')
      echo \"gateway=\$gw self=\$me\"
      for a in \$gw \$me 127.0.0.1 10.0.2.2; do
        if timeout 5 wget -q -O - http://\$a:$port/ 2>/dev/null | grep -q host-secret; then
          echo reached-host-via-\$a
        fi
      done
      echo probe-done"
    run "$MBUILD" build -f project/Machinefile
    kill $server
    expect_status 0
    expect_err '^probe \| gateway=[0-9.]+ self=[0-9.]+$'
    expect_err '^probe \| probe-done$'
    grep -q 'reached-host' <<<"$err" && fail "a step reached the host's loopback"
}

test_vm_editing_the_last_step_rebuilds_only_it() {
    seed_cache
    write_machinefile 'version: 1
base: tiny
steps:
  - {name: first, run: "echo 1 > /one"}
  - {name: last, run: "cat /one"}'
    run "$MBUILD" build -f project/Machinefile
    expect_status 0
    local before
    before=$("$MBUILD" cache ls --json | jq -r '.layers[] | select(.step == "first") | .digest')
    sed -i 's|cat /one|cat /one; echo edited|' project/Machinefile
    run "$MBUILD" build --plan -f project/Machinefile
    expect_out 'miss: step script changed'
    run "$MBUILD" build -f project/Machinefile
    expect_status 0
    expect_out '^\[1/3\] base +cached'
    expect_out '^\[2/3\] first +cached'
    expect_out '^\[3/3\] last +built'
    expect_err '^last \| edited$'
    [[ $(layer_count) == 4 ]] || fail "expected base, first and two versions of last"
    [[ $("$MBUILD" cache ls --json | jq -r '.layers[] | select(.step == "first") | .digest') == "$before" ]] ||
        fail "layer 'first' changed"
}

# As root (CI), build as an ordinary user the test creates: nothing needs
# root, and nothing lands outside that user's cache.
test_vm_build_as_an_ordinary_user_leaves_nothing_outside_the_cache() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "  (already an ordinary user: the other tests cover it)" >&2
        return
    fi
    id mbtest >/dev/null 2>&1 || useradd -m mbtest || fail "cannot create user mbtest"
    user_runnable_binaries
    local home
    home=$(getent passwd mbtest | cut -d: -f6)
    rm -rf "$home/.cache/mbuild" "$home/project"
    mkdir -p "$home/project"
    cp "$ROOT/examples/tiny/Machinefile" "$ROOT/examples/tiny/hello.sh" "$home/project/"
    chown -R mbtest: "$home/project"
    touch stamp
    run runuser -u mbtest -- env -i HOME="$home" PATH=/usr/bin:/bin \
        "$MBUILD" build -f "$home/project/Machinefile"
    expect_status 0
    expect_out '^\[4/4\] offline +built'
    [[ -d $home/.cache/mbuild/blobs/sha256 ]] || fail "no cache in the user's home"
    local stray
    stray=$(find /tmp /var/tmp /run /dev/shm "$home" -xdev -newer stamp -user mbtest \
        -not -path "$home" -not -path "$home/.cache" -not -path "$home/.cache/mbuild*" 2>/dev/null)
    [[ -z $stray ]] || fail "files left outside the cache: $stray"
    [[ -z $(pgrep -u mbtest) ]] || fail "processes of mbtest left running"
}

# The tiny base as a raw image at $1, made through a base-only build.
tiny_raw_image() {
    mkdir -p tinybase
    printf 'version: 1\nbase: tiny\n' >tinybase/Machinefile
    "$MBUILD" build --progress=none -f tinybase/Machinefile >/dev/null || fail "tiny base build"
    local key
    key=$("$MBUILD" build --plan --json -f tinybase/Machinefile | jq -r '.layers[0].key')
    qemu-img convert -f qcow2 -O raw "$MBUILD_CACHE/layers/${key#sha256:}.qcow2" "$1"
}

test_vm_local_image_and_url_bases() {
    seed_cache
    mkdir -p project
    tiny_raw_image project/root.img
    write_machinefile 'version: 1
base: root.img
steps:
  - {name: hello, run: "echo from-local-base"}'
    run "$MBUILD" build -f project/Machinefile
    expect_status 0
    expect_err '^hello \| from-local-base$'

    # Other content than root.img (same bytes would be the same, already cached, base).
    local port=$((20000 + RANDOM % 20000)) digest
    cp project/root.img project/url.img
    truncate -s +1M project/url.img
    digest=sha256:$(sha256sum project/url.img | cut -d' ' -f1)
    python3 -m http.server "$port" --bind 127.0.0.1 --directory project >/dev/null 2>&1 &
    local server=$!
    sleep 1
    write_machinefile "version: 1
base: {url: \"http://127.0.0.1:$port/url.img\", digest: \"$digest\"}
steps:
  - {name: hello, run: \"echo from-url-base\"}"
    run "$MBUILD" build -f project/Machinefile
    expect_status 0
    expect_err '^hello \| from-url-base$'
    [[ -f $MBUILD_CACHE/downloads/${digest#sha256:} ]] || fail "download not kept"

    # The same URL pinned to other content: refused, nothing kept, nothing built.
    local before
    before=$(layer_count)
    sed -i "s/$digest/sha256:$(printf '%064d' 0)/" project/Machinefile
    run "$MBUILD" build -f project/Machinefile
    kill $server
    expect_status 4
    expect_err "not the pinned sha256:0000"
    [[ $(layer_count) == "$before" ]] || fail "a layer was stored"
    [[ -z $(ls "$MBUILD_CACHE/downloads" | grep -v "^${digest#sha256:}$") ]] ||
        fail "unverified download kept"
}

test_vm_hostile_qcow2_base_is_refused_before_use() {
    seed_cache
    mkdir -p project
    qemu-img create -q -f qcow2 -F raw -b /etc/passwd project/evil.qcow2
    write_machinefile 'version: 1
base: evil.qcow2
steps:
  - {run: "true"}'
    run "$MBUILD" build -f project/Machinefile
    expect_status 4
    expect_err "Machinefile:2:7: base: check .*evil.qcow2.: has an unexpected backing file '/etc/passwd'"
    [[ $(layer_count) == 0 ]] || fail "a layer was stored"
}

test_vm_packages_need_a_base_with_a_package_manager() {
    seed_cache
    write_machinefile 'version: 1
base: tiny
packages: [git]
steps:
  - {run: "true"}'
    run "$MBUILD" build -f project/Machinefile
    expect_status 2
    expect_err "Machinefile:3:[0-9]+: base 'tiny' has no package manager"
}

test_vm_refresh_rebuilds_everything_and_json_reports_it() {
    seed_cache
    write_machinefile 'version: 1
base: tiny
steps:
  - {name: only, run: "true"}'
    run "$MBUILD" build --json --progress=none -f project/Machinefile
    expect_status 0
    [[ $(jq -r '[.layers[].built] | all' <<<"$out") == true ]] || fail "first build not all built"
    [[ -z $err ]] || fail "--progress=none printed: $err"
    run "$MBUILD" build --json -f project/Machinefile
    [[ $(jq -r '[.layers[].built] | any' <<<"$out") == false ]] || fail "second build built"
    run "$MBUILD" build --no-cache --json -f project/Machinefile
    [[ $(jq -r '[.layers[].built] | join(",")' <<<"$out") == false,true ]] ||
        fail "--no-cache should rebuild all but the base"
    run "$MBUILD" build --refresh --json -f project/Machinefile
    [[ $(jq -r '[.layers[].built] | all' <<<"$out") == true ]] || fail "--refresh rebuilt not all"
    expect_cache_valid
}

# An ordinary user the test creates when run as root (CI), with the
# subordinate ids debian-12 needs; sets $user_home. Returns 1 when not root.
ordinary_user() {
    [[ $(id -u) -eq 0 ]] || return 1
    id mbtest >/dev/null 2>&1 || useradd -m mbtest || fail "cannot create user mbtest"
    grep -q '^mbtest:' /etc/subuid 2>/dev/null ||
        usermod --add-subuids 200000-265535 --add-subgids 200000-265535 mbtest ||
        fail "cannot give mbtest subordinate ids"
    user_home=$(getent passwd mbtest | cut -d: -f6)
    user_runnable_binaries
}

# Point $MBUILD and $MACHINE at copies mbtest can run when the build
# directory is closed to it (a checkout under a 0700 mktemp directory).
user_runnable_binaries() {
    runuser -u mbtest -- test -x "$MBUILD" -a -x "$MACHINE" && return
    local dir
    dir=$(mktemp -d /tmp/mbtest-bin.XXXXXX) && chmod 0755 "$dir" &&
        install -m 0755 "$MBUILD" "$MACHINE" "$dir/" || fail "cannot copy the binaries for mbtest"
    cleanup="$cleanup $dir"
    MBUILD=$dir/$(basename "$MBUILD") MACHINE=$dir/$(basename "$MACHINE")
}

# as_user CMD...: run as mbtest with a minimal environment.
as_user() {
    runuser -u mbtest -- env -i HOME="$user_home" PATH=/usr/bin:/bin "$@"
}

# The example the README leads to, from scratch on debian-12, as an
# ordinary user when run as root: the base from Debian's mirror, packages
# through apt in a step VM, `npm ci` and a global install from npm's
# registry, all through the VM's NAT.
test_vm_node_agent_example_builds_from_scratch() {
    seed_cache
    # Behind a TLS-inspecting proxy (as on the machines CI runs on), npm in
    # the VM needs the CA this host trusts; elsewhere this changes nothing.
    local project=$PWD/project runner=() ca=/etc/ssl/certs/ca-certificates.crt
    if ordinary_user; then
        # A directory of its own in the user's home: another run may share the user.
        local own
        own=$(runuser -u mbtest -- mktemp -d "$user_home/test-XXXXXX")
        project=$own/node-agent
        export MBUILD_CACHE=$own/cache
        seed_cache
        runner=(as_user env MBUILD_CACHE="$MBUILD_CACHE")
    fi
    [[ -r $ca ]] && runner+=(env MBUILD_CA_CERT="$ca")
    cp -r "$ROOT/examples/node-agent" "$project"
    # The example plus one step that proves what the layers hold.
    awk '/^ports:/ && !done { print "  - name: verify"; print "    run: node --version && ls /work/node_modules/is-number && command -v codex"; done = 1 } { print }' \
        "$ROOT/examples/node-agent/Machinefile" >"$project/Machinefile"
    [[ -n ${user_home:-} ]] && chown -R mbtest: "$project" "$MBUILD_CACHE"
    run "${runner[@]}" "$MBUILD" build -f "$project/Machinefile"
    expect_status 0
    expect_out '^\[1/5\] base +built'
    expect_out '^\[5/5\] verify +built'
    expect_err '^verify \| v[0-9]+\.'
    expect_err '^verify \| /usr/(local/)?bin/codex$'
    run "${runner[@]}" "$MBUILD" build -f "$project/Machinefile"
    expect_status 0
    [[ $(grep -c ' cached,' <<<"$out") == 5 ]] || fail "second build was not all cache hits"
    expect_cache_valid

    # And a machine from it, with systemd and OpenSSH, where node runs.
    local data=${own:-$PWD}/machine-data name
    name=$(basename "$project")
    runner+=(env XDG_DATA_HOME="$data")
    run "${runner[@]}" "$MACHINE" start --progress=none "$project"
    expect_status 0
    expect_out "^machine '$name' is ready"
    run "${runner[@]}" "$MACHINE" exec "$name" -- node --version
    expect_status 0
    expect_out '^v[0-9]+\.'
    # The project is shared over virtiofs, also for an ordinary user.
    run "${runner[@]}" "$MACHINE" exec "$name" -- sh -c \
        'awk "\$2 == \"/work\" {print \$3}" /proc/mounts; echo from-vm > /work/written'
    expect_out '^virtiofs$'
    [[ $(cat "$project/written" 2>/dev/null) == from-vm ]] || fail "the VM could not write /work"
    "${runner[@]}" "$MACHINE" rm --force "$name" >/dev/null 2>&1
    [[ -n ${own:-} ]] && rm -rf "$own"
}

test_vm_ca_cert_reaches_the_step_but_no_key_or_layer() {
    seed_cache
    printf -- '-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n' >extra.pem
    write_machinefile 'version: 1
base: tiny
steps:
  - {name: tls, run: "head -n 1 \"$NODE_EXTRA_CA_CERTS\"; grep -c MIIBfake \"$SSL_CERT_FILE\""}'
    local keys
    keys=$("$MBUILD" build --plan --json -f project/Machinefile | jq -r '.layers[].key')
    run "$MBUILD" build --ca-cert extra.pem -f project/Machinefile
    expect_status 0
    expect_err '^tls \| -----BEGIN CERTIFICATE-----$'
    expect_err '^tls \| 1$'
    [[ $("$MBUILD" build --plan --json -f project/Machinefile | jq -r '.layers[].key') == "$keys" ]] ||
        fail "the certificate changed a key"
    # A later step built without it finds no trace of it in the layer.
    printf '  - {name: after, run: "test ! -e /.mbuild/ca.pem && ! grep -rqs MIIBfake /etc /root /tmp && echo clean"}\n' \
        >>project/Machinefile
    run "$MBUILD" build -f project/Machinefile
    expect_status 0
    expect_out '^\[2/3\] tls +cached'
    expect_err '^after \| clean$'
    run "$MBUILD" build --ca-cert missing.pem --no-cache -f project/Machinefile
    expect_status 2
    expect_err "certificates: open 'missing.pem'"
}

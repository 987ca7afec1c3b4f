# The CLI test cases, sourced by run.sh: one function per case, run in a
# fresh directory with MBUILD_CACHE pointing into it. $ROOT is the
# repository, $MBUILD and $MACHINE the programs under test.

# A copy of examples/tiny to edit freely.
tiny_project() {
    cp -r "$ROOT/examples/tiny" project
}

# The keys of a plan, one per line.
plan_keys() {
    "$MBUILD" build --plan --json -f "$1" | jq -r '.layers[].key'
}

test_help_lists_commands_and_exit_codes() {
    run "$MBUILD" --help
    expect_status 0
    expect_out '^Usage: mbuild COMMAND'
    expect_out '^  build '
    expect_out '^  cache '
    expect_out '^  4 +damaged'
    for cmd in build cache; do
        run "$MBUILD" $cmd --help
        expect_status 0
        expect_out "^Usage: mbuild $cmd"
        expect_out 'Exit status'
    done
    run "$MACHINE" --help
    expect_status 0
    expect_out '^Usage: machine COMMAND'
    expect_out '^  start '
}

test_version_names_qemu_and_libraries() {
    run "$MBUILD" --version
    expect_status 0
    expect_out '^mbuild [0-9]+\.[0-9]+\.[0-9]+$'
    expect_out "^qemu-img $(qemu-img --version | sed -n 's/.*version \([^ ]*\).*/\1/p;q')$"
    expect_out '^libyaml [0-9.]+$'
    expect_out '^zstd [0-9.]+$'
    expect_out '^libarchive [0-9.]+'
    run "$MACHINE" --version
    expect_status 0
    expect_out '^machine [0-9.]+$'
}

test_bad_usage_exits_2() {
    run "$MBUILD" frobnicate
    expect_status 2
    expect_err "unknown command 'frobnicate'"
    run "$MBUILD" build --plan --bogus
    expect_status 2
    expect_err "unknown or incomplete option '--bogus'"
    run "$MBUILD"
    expect_status 2
}

test_plan_prints_every_layer_with_its_full_key() {
    run "$MBUILD" build --plan -f "$ROOT/examples/tiny/Machinefile"
    expect_status 0
    expect_out 'Machinefile: 4 layers, 0 cached, 4 to build'
    expect_out '^\[1/4\] base +base: recipe tiny [0-9]+$'
    expect_out '^\[2/4\] greet +run: /work/hello.sh'
    expect_out '^\[4/4\] offline '
    [[ $(grep -cE '^      sha256:[0-9a-f]{64}  miss: not built yet$' <<<"$out") -eq 4 ]] ||
        fail "expected 4 full keys, all missing"
}

test_plan_json_is_versioned_and_complete() {
    run "$MBUILD" build --plan --json -f "$ROOT/examples/node-agent/Machinefile"
    expect_status 0
    [[ $(jq -r .version <<<"$out") == 1 ]] || fail "no version 1"
    [[ $(jq -r '.layers | length' <<<"$out") == 4 ]] || fail "expected 4 layers"
    [[ $(jq -r '.layers[1].kind' <<<"$out") == packages ]] || fail "layer 2 is not packages"
    [[ $(jq -r '.layers[1].text' <<<"$out") == "ca-certificates git nodejs npm" ]] ||
        fail "packages not sorted"
    [[ $(jq -r '.layers[2].parent' <<<"$out") == $(jq -r '.layers[1].key' <<<"$out") ]] ||
        fail "layer 3's parent is not layer 2"
    [[ $(jq -r '.summary.missing' <<<"$out") == 4 ]] || fail "summary wrong"
}

test_keys_do_not_depend_on_directory_or_mtime() {
    tiny_project
    cp -r project elsewhere
    touch -d '2001-01-01' elsewhere/hello.sh
    [[ $(plan_keys project/Machinefile) == $(plan_keys elsewhere/Machinefile) ]] ||
        fail "keys differ between two copies of the same project"
    MBUILD_CACHE=$PWD/other-cache
    [[ $(plan_keys project/Machinefile) == $(plan_keys elsewhere/Machinefile) ]] ||
        fail "keys differ with another cache"
}

test_miss_reasons_name_what_changed() {
    tiny_project
    "$MBUILD" build --plan -f project/Machinefile >/dev/null
    sed -i 's|> /opt/tools/motd|> /opt/tools/motd2|' project/Machinefile
    for attempt in first repeated; do
        run "$MBUILD" build --plan -f project/Machinefile
        expect_status 0
        expect_out '^\[1/4\] base'
        expect_out 'miss: not in the cache \(inputs unchanged since the last plan\)'
        grep -A1 '^\[3/4\] tools' <<<"$out" | grep -q 'miss: step script changed' ||
            fail "$attempt plan: tools is not 'step script changed'"
        grep -A1 '^\[4/4\] offline' <<<"$out" | grep -q 'miss: parent layer changed' ||
            fail "$attempt plan: offline is not 'parent layer changed'"
    done
}

test_miss_reason_names_the_copied_file() {
    tiny_project
    "$MBUILD" build --plan -f project/Machinefile >/dev/null
    echo 'echo changed' >>project/hello.sh
    run "$MBUILD" build --plan -f project/Machinefile
    grep -A1 '^\[2/4\] greet' <<<"$out" | grep -q "miss: copied file 'hello.sh' changed" ||
        fail "greet does not name hello.sh"
    git -C "$ROOT" show HEAD:examples/tiny/hello.sh >project/hello.sh 2>/dev/null ||
        cp "$ROOT/examples/tiny/hello.sh" project/hello.sh
    chmod 644 project/hello.sh
    run "$MBUILD" build --plan -f project/Machinefile
    grep -A1 '^\[2/4\] greet' <<<"$out" | grep -q "miss: mode of copied file 'hello.sh' changed" ||
        fail "greet does not name the mode change"
}

test_env_change_is_named() {
    tiny_project
    "$MBUILD" build --plan -f project/Machinefile >/dev/null
    sed -i 's/GREETING: hello/GREETING: hi/' project/Machinefile
    run "$MBUILD" build --plan -f project/Machinefile
    grep -A1 '^\[2/4\] greet' <<<"$out" | grep -q "miss: env 'GREETING' changed" ||
        fail "greet does not name GREETING"
}

test_hostile_machinefiles_exit_2_with_line_and_column() {
    mkdir p
    local cases=(
        # file text | expected "line:column: message" part
        $'version: 1\nbase: tiny\npakages: [git]\n|3:1: unknown key .pakages. \\(did you mean .packages.\\?\\)'
        $'version: 1\nbase: tiny\nbase: tiny\n|3:1: duplicate key .base.'
        $'version: 1\nbase: &b tiny\n|2:7: .*anchor'
        $'version: 1\nbase: tiny\nsteps:\n  - run: ls\n    copy: [../secret]\n|5:12: .*\\.\\.'
        $'version: 1\nbase: tiny\nsteps:\n  - run: ls\n    copy: [/etc/passwd]\n|5:12: .*absolute'
        $'version: 1\nbase: tiny\nmemory: 2 lots\n|3:9: '
        $'version: 1\nbase: tiny\nports: ["70000:80"]\n|3:9: '
        $'base: tiny\n|1:1: .*version'
        $'version: 1\nbase: tiny\nsteps:\n\t- run: ls\n|4:1: tab'
        $'|1:1: empty Machinefile'
        $'version: 1\nbase: tiny\n---\nversion: 1\n|3:1: '
    )
    for c in "${cases[@]}"; do
        printf '%s' "${c%%|*}" >p/Machinefile
        run "$MBUILD" build --plan -f p/Machinefile
        expect_status 2
        expect_err "^mbuild: error: p/Machinefile:${c##*|}"
    done
}

test_copy_through_symlink_out_of_project_is_refused() {
    mkdir p
    echo secret >outside
    ln -s ../outside p/link
    printf 'version: 1\nbase: tiny\nsteps:\n  - run: cat /work/link\n    copy: [link]\n' \
        >p/Machinefile
    run "$MBUILD" build --plan -f p/Machinefile
    expect_status 2
    expect_err '^mbuild: error: p/Machinefile:5:12: '
}

test_missing_machinefile_is_an_input_error() {
    run "$MBUILD" build --plan -f nowhere/Machinefile
    expect_status 2
    expect_err 'nowhere/Machinefile'
}

test_build_rejects_a_bad_progress_mode() {
    run "$MBUILD" build --progress=fancy -f "$ROOT/examples/tiny/Machinefile"
    expect_status 2
    expect_err "--progress must be auto, plain or none, not 'fancy'"
}

test_cache_ls_and_verify_on_an_empty_cache() {
    run "$MBUILD" cache ls
    expect_status 0
    expect_out '^KEY +SIZE +CREATED +LAST USED +STEP$'
    run "$MBUILD" cache ls --json
    expect_status 0
    [[ $(jq -r '.layers | length' <<<"$out") == 0 ]] || fail "layers not empty"
    run "$MBUILD" cache verify
    expect_status 0
    expect_out '^0 blobs checked, 0 damaged'
    [[ -f $MBUILD_CACHE/oci-layout && -f $MBUILD_CACHE/index.json ]] ||
        fail "the cache is not an OCI layout"
}

test_cache_verify_exits_4_on_a_damaged_blob() {
    "$MBUILD" cache verify >/dev/null
    local hex
    hex=$(printf 'original' | sha256sum | cut -d' ' -f1)
    printf 'tampered' >"$MBUILD_CACHE/blobs/sha256/$hex"
    run "$MBUILD" cache verify
    expect_status 4
    expect_err "damaged: .*$hex"
    expect_out '^1 blobs checked, 1 damaged'
}

test_cache_dir_flag_and_env() {
    run "$MBUILD" cache ls --cache "$PWD/flag-cache"
    expect_status 0
    [[ -f flag-cache/oci-layout ]] || fail "--cache was not used"
    unset MBUILD_CACHE
    XDG_CACHE_HOME=$PWD/xdg run "$MBUILD" cache ls
    expect_status 0
    [[ -f xdg/mbuild/oci-layout ]] || fail "XDG_CACHE_HOME was not used"
}

#!/usr/bin/env bash
# CLI tests: run mbuild and machine as a user would and check stdout,
# stderr and the exit status of each. Each test gets its own directory
# and cache. Usage: run.sh PATH/TO/mbuild PATH/TO/machine [CASES]
# CASES is a file of test_* functions beside this one (default cases.sh);
# MB_TEST_ONLY=REGEX runs only the tests whose names match.
set -u
MBUILD=$(readlink -f "$1")
MACHINE=$(readlink -f "$2")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d)
# Whatever a test left running (a VM, passt, virtiofsd) names $WORK in its argv.
# Tests may add paths outside $WORK to $cleanup.
cleanup=
trap 'pkill -KILL -f -- "$WORK"; sleep 0.5; rm -rf "$WORK" $cleanup' EXIT
passed=0
failed=0
status=0 out='' err=''

# run CMD...: sets $out, $err, $status
run() {
    "$@" >"$WORK/out" 2>"$WORK/err"
    status=$?
    out=$(cat "$WORK/out")
    err=$(cat "$WORK/err")
}

fail() {
    echo "FAIL: $current: $*" >&2
    echo "  status: $status" >&2
    echo "  stdout: ${out:0:2000}" >&2
    echo "  stderr: ${err:0:2000}" >&2
    ok=false
}

expect_status() { [[ $status -eq $1 ]] || fail "expected exit status $1"; }
expect_out() { grep -qE -- "$1" <<<"$out" || fail "stdout does not match '$1'"; }
expect_err() { grep -qE -- "$1" <<<"$err" || fail "stderr does not match '$1'"; }
expect_no_out() { grep -qE -- "$1" <<<"$out" && fail "stdout matches '$1'"; }

# Run each function named test_* in a fresh directory with a fresh cache.
main() {
    for t in $(declare -F | awk '{print $3}' | grep '^test_' | grep -E -- "${MB_TEST_ONLY:-.}"); do
        current=$t
        ok=true
        mkdir -p "$WORK/$t"
        cd "$WORK/$t" || exit 1
        export MBUILD_CACHE="$WORK/$t/cache"
        $t
        if $ok; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
    done
    echo "$passed passed, $failed failed"
    [[ $failed -eq 0 ]]
}

source "$ROOT/tests/cli/${3:-cases.sh}"
main

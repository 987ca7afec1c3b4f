#!/bin/bash
# Storing a layer: mbuild's store (read once; hash, compress, hash, fsync,
# publish) against the reference pair a shell script would run,
#   zstd -3 -T0 FILE -o X && sha256sum X FILE
# on a real qcow2 image of an ext4 file system filled with files from this
# machine's /usr (binaries, Python, documentation, manuals): partly
# compressible, like a provisioned layer, and no random bytes.
#
#   bench/store.sh [BUILD_DIR] [WORK_DIR]
#
# Prints both wall times (best of ROUNDS runs each, page cache warm for
# both), their ratio (ours / reference; below 1 means ours is faster) and
# both compressed sizes. Needs mke2fs (e2fsprogs), qemu-img (qemu-utils)
# and zstd. Keeps WORK_DIR when given, else removes its own on exit.
set -euo pipefail

build=${1:-build}
work=${2:-}
rounds=${ROUNDS:-3}
sources=(/usr/lib/gcc /usr/lib/python3.11 /usr/share/doc /usr/share/man)

bench_store=$(realpath "$build/bench_store")
if [[ -z $work ]]; then
    work=$(mktemp -d "${TMPDIR:-/tmp}/mbuild-bench.XXXXXX")
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
image=$work/layer.qcow2

now() { date +%s.%N; }

make_image() {
    local stage=$work/stage
    mkdir -p "$stage"
    for src in "${sources[@]}"; do
        [[ -d $src ]] && cp -a --no-preserve=ownership "$src" "$stage/" 2>/dev/null || true
    done
    mke2fs -q -F -t ext4 -d "$stage" "$work/layer.raw" 1G
    qemu-img convert -f raw -O qcow2 "$work/layer.raw" "$image"
    rm -rf "$stage" "$work/layer.raw"
}

# Wall seconds of one run of ours; its compressed size goes to $work/ours.size.
run_ours() {
    rm -rf "$work/cache"
    local start end
    start=$(now)
    "$bench_store" "$work/cache" "$image" >"$work/ours.out"
    end=$(now)
    awk '$1 == "compressed" { print $2 }' "$work/ours.out" >"$work/ours.size"
    echo "$end - $start" | bc -l
}

run_reference() {
    rm -f "$work/ref.zst"
    local start end
    start=$(now)
    zstd -q -3 -T0 "$image" -o "$work/ref.zst" && sha256sum "$work/ref.zst" "$image" >/dev/null
    end=$(now)
    stat -c %s "$work/ref.zst" >"$work/ref.size"
    echo "$end - $start" | bc -l
}

best() { sort -g | head -n 1; }

[[ -f $image ]] || make_image
size=$(stat -c %s "$image")
cat "$image" >/dev/null # both start from a warm page cache

ours=() ref=()
for ((i = 0; i < rounds; i++)); do
    ours+=("$(run_ours)")
    ref+=("$(run_reference)")
done
ours_best=$(printf '%s\n' "${ours[@]}" | best)
ref_best=$(printf '%s\n' "${ref[@]}" | best)

printf 'image           %s (%d MB, qcow2)\n' "$image" $((size / 1000000))
printf 'ours            %.3f s   runs: %s\n' "$ours_best" "${ours[*]}"
printf 'zstd+sha256sum  %.3f s   runs: %s\n' "$ref_best" "${ref[*]}"
printf 'ratio           %.2f (ours / reference)\n' "$(echo "$ours_best / $ref_best" | bc -l)"
printf 'compressed      ours %d bytes, zstd -3 %d bytes\n' "$(cat "$work/ours.size")" \
    "$(cat "$work/ref.size")"
grep peak_rss_kib "$work/ours.out" | awk '{ printf "peak RSS        ours %.1f MiB\n", $2 / 1024 }'

#!/usr/bin/env bash
# The payload of a GPU check on a machine that reaches no package index and takes at most 64 MiB a call.
#
#   scripts/device_payload.sh OUT_DIR                 # here: bundles + wheels -> SHA256SUMS, tar, parts
#   scripts/device_payload.sh --on-device DIR         # there: join, verify, install, run gpu_check.py
#   scripts/device_payload.sh --unpack DIR            # there: join and verify only
#
# Packing (OUT_DIR must be new or empty, and git-ignored, e.g. build/device-payload, so that the
# device tool can carry its parts):
#   - bundles: all-minilm-l6-v2 fp16 and int8, --target tensorrt (exported here), or BUNDLES="DIR ..."
#   - wheels: with DOWNLOAD=1, onnxruntime-gpu==1.30.0 (a CUDA 13 build, like the machine's libraries
#     and its CPU onnxruntime 1.30) and tokenizers, for CPython 3.12 manylinux_2_28 x86_64, from PyPI;
#     or the wheels in WHEELS=DIR (nothing is downloaded then)
#   - SHA256SUMS over every file, one tar, split into part-00, part-01, ... of at most PART_MIB MiB
#     (default 56), with parts.sha256 (each part and the whole tar)
#   - then prints the device calls: each carries one part into REMOTE_DIR (default
#     /tmp/edge-bge-payload) on the machine, one right after the other (the machine is released after
#     30 s idle); the last one runs this script there with --on-device.
# On the device: each part and the joined tar are checked against parts.sha256 and every file against
# SHA256SUMS before anything is installed; the wheels go in with pip --no-index --no-deps --target
# DIR/site; the nvidia-* libraries of the machine's site-packages go on LD_LIBRARY_PATH; then
# scripts/gpu_check.py runs every bundle with --budget-s 420 (GPU_CHECK_ARGS replaces its options),
# writing its rows to $OUT/gpu_check.jsonl ($OUT: the device tool's output folder, else DIR).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-}"
ORT_GPU="onnxruntime-gpu==1.30.0"
TOKENIZERS="tokenizers==0.22.2"

die() { echo "device_payload: $*" >&2; exit 1; }

python_cmd() {
    if [[ -n "$PYTHON" ]]; then echo "$PYTHON"
    elif [[ -x "$ROOT/.venv/bin/python" ]]; then echo "$ROOT/.venv/bin/python"
    else echo python3; fi
}

check_parts() {  # DIR: every part, then the joined tar, against parts.sha256
    local dir="$1" name sum
    [[ -f "$dir/parts.sha256" ]] || die "$dir/parts.sha256 is missing"
    while read -r sum name; do
        [[ "$name" == payload.tar || -f "$dir/$name" ]] || die "$name is missing from $dir"
    done < "$dir/parts.sha256"
    (cd "$dir" && grep -v ' payload.tar$' parts.sha256 | sha256sum --quiet -c -) \
        || die "a part does not match parts.sha256 (damaged in transit): carry it again"
    cat "$dir"/part-* > "$dir/payload.tar"
    (cd "$dir" && grep ' payload.tar$' parts.sha256 | sha256sum --quiet -c -) || die "the joined payload.tar does not match"
}

unpack() {  # DIR -> DIR/payload, every file checked
    local dir="$1"
    check_parts "$dir"
    rm -rf "$dir/payload"
    mkdir -p "$dir/payload"
    tar -C "$dir/payload" -xf "$dir/payload.tar"
    rm -f "$dir/payload.tar"
    (cd "$dir/payload" && sha256sum --quiet -c SHA256SUMS) || die "a file does not match SHA256SUMS"
    echo "device_payload: $(wc -l < "$dir/payload/SHA256SUMS") files verified in $dir/payload"
}

on_device() {
    local dir="$1" py site libs
    py="$(python_cmd)"
    unpack "$dir"
    site="$dir/site"
    rm -rf "$site"
    "$py" -m pip install --quiet --no-index --no-deps --target "$site" "$dir"/payload/wheels/*.whl
    libs="$("$py" - "$site" <<'EOF'
import glob, os, site, sys
roots = [sys.argv[1], *site.getsitepackages(), site.getusersitepackages()]
found = [d for r in roots for d in sorted(glob.glob(os.path.join(r, "nvidia", "**", "lib"), recursive=True))]
print(":".join(dict.fromkeys(found)))
EOF
)"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "device_payload: LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    "$py" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
    local out="${OUT:-$dir}"
    mkdir -p "$out"
    # shellcheck disable=SC2086  # GPU_CHECK_ARGS is a list of options
    "$py" "$ROOT/scripts/gpu_check.py" "$dir"/payload/bundles/* ${GPU_CHECK_ARGS:---providers tensorrt,cuda,cpu --budget-s 420} \
        --json-lines "$out/gpu_check.jsonl"
}

pack() {
    local out="$1" py stage part_mib="${PART_MIB:-56}" remote="${REMOTE_DIR:-/tmp/edge-bge-payload}"
    py="$(python_cmd)"
    [[ "$part_mib" =~ ^[1-9][0-9]*$ ]] || die "PART_MIB must be a whole number of MiB, got '$part_mib'"
    if [[ -e "$out" && -n "$(ls -A "$out")" ]]; then die "$out is not empty"; fi
    mkdir -p "$out"
    out="$(cd "$out" && pwd)"
    stage="$out/stage"
    mkdir -p "$stage/bundles" "$stage/wheels"

    if [[ -n "${BUNDLES:-}" ]]; then
        for b in $BUNDLES; do
            [[ -f "$b/edge_bge.json" ]] || die "$b is not a bundle (no edge_bge.json)"
            cp -r "$b" "$stage/bundles/$(basename "$b")"
        done
    else
        for precision in fp16 int8; do
            "$py" -m edge_bge export all-minilm-l6-v2 --precision "$precision" --target tensorrt \
                --out "$stage/bundles/all-minilm-l6-v2-$precision-tensorrt"
        done
    fi

    if [[ -n "${WHEELS:-}" ]]; then
        compgen -G "$WHEELS/*.whl" > /dev/null || die "no .whl in $WHEELS"
        cp "$WHEELS"/*.whl "$stage/wheels/"
    elif [[ "${DOWNLOAD:-0}" == 1 ]]; then
        "$py" -m pip download --quiet --no-deps --only-binary=:all: --dest "$stage/wheels" \
            --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            "$ORT_GPU" "$TOKENIZERS"  # pip takes only the platforms named: tokenizers is a manylinux_2_17 wheel
    else
        die "no wheels: set DOWNLOAD=1 (pip download $ORT_GPU $TOKENIZERS) or WHEELS=DIR"
    fi

    (cd "$stage" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS)
    tar -C "$stage" -cf "$out/payload.tar" .
    split -b "${part_mib}M" -d -a 2 "$out/payload.tar" "$out/part-"
    (cd "$out" && sha256sum part-* payload.tar > parts.sha256)
    rm -rf "$stage" "$out/payload.tar"

    local parts=("$out"/part-*) rel n i
    n="${#parts[@]}"
    rel="$(realpath --relative-to="$ROOT" "$out")"
    case "$rel" in ../*) echo "device_payload: warning: $out is outside the repository; the device tool carries only paths inside it" >&2;; esac
    if ! git -C "$ROOT" check-ignore -q "$rel/part-00" 2>/dev/null; then
        echo "device_payload: warning: $rel is not git-ignored; carry takes ignored paths (use build/...)" >&2
    fi
    echo "device_payload: $(du -sh "$out" | cut -f1) in $n parts of at most $part_mib MiB in $rel"
    echo "device calls, one right after the other (each carries one part; the working tree travels too):"
    for ((i = 0; i < n; i++)); do
        local name carry command
        name="$(basename "${parts[$i]}")"
        carry="[\"$rel/$name\"]"
        command="mkdir -p $remote && cp $rel/$name $remote/"
        if ((i == n - 1)); then
            carry="[\"$rel/$name\", \"$rel/parts.sha256\"]"
            command="$command && cp $rel/parts.sha256 $remote/ && bash scripts/device_payload.sh --on-device $remote"
            echo "  $((i + 1))/$n: run(carry=$carry, timeout_s=600, command=\"$command\")"
        else
            echo "  $((i + 1))/$n: run(carry=$carry, timeout_s=60, command=\"$command\")"
        fi
    done
}

case "${1:-}" in
    --on-device) [[ $# -eq 2 ]] || die "usage: $0 --on-device DIR"; on_device "$2" ;;
    --unpack) [[ $# -eq 2 ]] || die "usage: $0 --unpack DIR"; unpack "$2" ;;
    -h | --help | "") sed -n '2,27p' "$0"; [[ $# -eq 1 ]] ;;
    -*) die "unknown option $1" ;;
    *) [[ $# -eq 1 ]] || die "usage: $0 OUT_DIR"; pack "$1" ;;
esac

#!/usr/bin/env bash
# Create .venv with the runtime, the export toolchain and the test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# strace: tests/test_network.py watches the runtime's system calls (no network, no telemetry files)
if ! command -v strace >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null
    else
        echo "setup.sh: strace is missing; install it (apt-get install strace) for tests/test_network.py" >&2
    fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
# torch first, pinned to the CPU build, so nothing below pulls a multi-GB CUDA build
pip install -q "torch==2.13.0"
pip install -q -r requirements-dev.txt
pip install -q --no-deps -e . -e ./export

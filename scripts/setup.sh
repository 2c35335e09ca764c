#!/usr/bin/env bash
# Create .venv with the runtime, the export toolchain and the test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
# torch first, pinned to the CPU build, so nothing below pulls a multi-GB CUDA build
pip install -q "torch==2.13.0"
pip install -q -r requirements-dev.txt
pip install -q --no-deps -e . -e ./export

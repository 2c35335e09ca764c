#!/usr/bin/env bash
# The whole test suite, on a fresh machine: sets up .venv, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# lint first: style and import faults fail in seconds, not after the suite
python -m ruff check edge_bge export tests scripts benchmarks
python -m ruff format --check edge_bge export tests scripts benchmarks
python -m pytest tests -q -p no:cacheprovider "$@"

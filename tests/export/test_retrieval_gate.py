"""The export's gate from the user's data: nDCG@10 of the bundle against the PyTorch reference's."""

from __future__ import annotations

import pytest

from edge_bge import Manifest
from edge_bge.cli import main
from edge_bge.kinds import Kind
from edge_bge_export import pipeline
from edge_bge_export.errors import ExportError, ParityError
from edge_bge_export.heads import head
from edge_bge_export.recipes import load_recipe
from edge_bge_export.retrieval import prepare, retrieval_gate

from ..helpers import ROOT

EVAL_DATA = ROOT / "benchmarks" / "eval-data"
QUIET = {"report": lambda m: None}


def test_an_export_records_its_retrieval_against_the_reference(tmp_path, tiny_bge_dir):
    out = pipeline.export(str(tiny_bge_dir), out=tmp_path / "b", eval_data=EVAL_DATA, max_ndcg_drop=0.005, **QUIET)
    got = Manifest.load(out).parity["retrieval"]
    assert got["queries"] == 250 and got["documents"] == 450 and got["max_drop"] == 0.005
    # fp32 ranks as its reference does, within a point (a random tiny model: low, with near-ties that
    # rounding may reorder)
    assert 0 <= got["ndcg@10"] <= 1 and abs(got["ndcg@10"] - got["reference_ndcg@10"]) < 0.005


def test_a_bundle_that_loses_search_quality_is_refused(tiny_fp32, minilm_dir):
    # the tiny random bundle put against MiniLM's reference: its rankings are far worse, so the gate refuses
    recipe, dense = load_recipe("all-minilm-l6-v2"), head(Kind.EMBEDDING)
    data = prepare(EVAL_DATA, recipe, dense, 0.01)
    with pytest.raises(ParityError, match=r"loses \d+\.\d\d nDCG@10 points against the PyTorch reference"):
        retrieval_gate(tiny_fp32, minilm_dir, recipe, dense, data, 0.01)
    assert retrieval_gate(tiny_fp32, minilm_dir, recipe, dense, data, 0.99)["reference_ndcg@10"] > 0.5


def test_the_gate_refuses_what_it_cannot_measure(tiny_bge_dir, tmp_path, capsys):
    with pytest.raises(ExportError, match="gives scores of pairs"):
        prepare(EVAL_DATA, load_recipe("bge-reranker-base"), head(Kind.RERANKER), 0.01)
    with pytest.raises(ExportError, match="must be in"):
        prepare(EVAL_DATA, load_recipe("all-minilm-l6-v2"), head(Kind.EMBEDDING), 2)
    assert main(["export", str(tiny_bge_dir), "--out", str(tmp_path / "x"), "--max-ndcg-drop", "0.01"]) == 2
    assert "--max-ndcg-drop needs --eval-data" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_missing_eval_data_writes_nothing(tmp_path, tiny_bge_dir):
    with pytest.raises(ExportError, match="--eval-data: no such data"):  # before any export work
        pipeline.export(str(tiny_bge_dir), out=tmp_path / "b", eval_data=tmp_path / "nope", **QUIET)
    assert not (tmp_path / "b").exists()

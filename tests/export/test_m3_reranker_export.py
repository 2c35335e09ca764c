"""bge-m3 and reranker exports: kind detection, head checks, gates per precision."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from edge_bge.manifest import Kind, Manifest, Pooling
from edge_bge_export import pipeline
from edge_bge_export.errors import ExportError

QUIET = {"report": lambda m: None}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_m3_bundle_meets_gate(bundles, tiny_m3_dir, precision):
    m = Manifest.load(bundles.get(tiny_m3_dir, precision))
    assert m.kind is Kind.M3 and m.outputs == ("dense", "sparse", "colbert")
    assert m.inputs == ("input_ids", "attention_mask") and m.architecture == "xlm-roberta"
    assert m.special_token_ids == (0, 1, 2, 3)
    assert m.parity["reference"] == "FlagEmbedding BGEM3FlagModel"
    assert m.parity["summary"]["cosine_min"] >= m.parity["gate"]["min"]
    if precision == "fp32":
        assert m.parity["summary"]["sparse_max_abs_diff"] <= 1e-4
        assert m.parity["summary"]["colbert_cosine_min"] >= 0.9999


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_reranker_bundle_meets_gate(bundles, tiny_reranker_dir, precision):
    m = Manifest.load(bundles.get(tiny_reranker_dir, precision))
    assert m.kind is Kind.RERANKER and m.outputs == ("logits",) and m.pooling is None
    assert m.query_max_length == 384
    assert set(m.parity["summary"]) == {"pearson", "logits_max_abs_diff"}  # one correlation, named as such
    assert m.parity["summary"]["pearson"] >= m.parity["gate"]["min"] >= 0.998
    tok = json.loads((bundles.get(tiny_reranker_dir, precision) / "tokenizer.json").read_text())
    assert tok["truncation"]["strategy"] == "OnlySecond"


def test_kind_override_exports_dense_only(bundles, tiny_m3_dir):
    m = Manifest.load(bundles.get(tiny_m3_dir, "fp32", kind=Kind.EMBEDDING, pooling=Pooling.CLS))
    assert m.kind is Kind.EMBEDDING and m.outputs == ("embedding",) and m.pooling is Pooling.CLS


def test_one_head_missing_is_refused(tmp_path, tiny_m3_dir):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_m3_dir, ckpt)
    (ckpt / "sparse_linear.pt").unlink()
    with pytest.raises(ExportError, match="sparse_linear"):
        pipeline.export(str(ckpt), out=tmp_path / "b", **QUIET)
    assert not (tmp_path / "b").exists()


def test_head_of_wrong_shape_is_named(tmp_path, tiny_m3_dir):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_m3_dir, ckpt)
    torch.save(torch.nn.Linear(32, 7).state_dict(), ckpt / "colbert_linear.pt")
    with pytest.raises(ExportError, match=r"colbert_linear.pt holds .*expected tensors of shape .*\(32, 32\)"):
        pipeline.export(str(ckpt), out=tmp_path / "b", **QUIET)


def test_directory_fitting_no_kind_is_refused(tmp_path, tiny_m3_dir):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_m3_dir, ckpt)
    for f in ("sparse_linear.pt", "colbert_linear.pt"):
        (ckpt / f).unlink()
    with pytest.raises(ExportError, match="--pooling"):
        pipeline.export(str(ckpt), out=tmp_path / "b", **QUIET)

"""Export pipeline: parity per precision and target, fusions, manifest, and every refusal."""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
import pytest

from edge_bge import Embedder
from edge_bge.manifest import Manifest
from edge_bge_export import int8, pipeline
from edge_bge_export.errors import ExportError, ParityError
from edge_bge_export.recipes import Recipe, list_recipes, load_recipe

QUIET = {"report": lambda m: None}


@pytest.mark.parametrize("target", ["cpu", "tensorrt"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tiny_bge_meets_its_gate(bundles, tiny_bge_dir, precision, target):
    path = bundles.get(tiny_bge_dir, precision, target)
    m = Manifest.load(path)
    assert m.precision.value == precision
    assert m.target.value == target  # one vocabulary: the manifest says what --target said
    assert m.pooling.value == "cls" and m.normalize and m.max_length == 512
    summary, gate = m.parity["summary"], m.parity["gate"]
    assert m.parity["probe_texts"] >= 64
    for key, threshold in gate.items():
        assert summary[f"cosine_{key}"] >= threshold
    int8_min = 0.995 if target == "cpu" else 0.99
    assert gate["min"] == {"fp32": 0.99999, "fp16": 0.999, "int8": int8_min}[precision]
    if target == "tensorrt":
        assert "fused_operators" not in m.optimization
    if precision == "int8":
        # int8 is verified on the probes and the calibration texts
        assert m.parity["probe_texts"] > 300
        assert m.optimization["precision"]["scheme"] == ("rowwise-int8" if target == "cpu" else "static-qdq-int8")


def test_tiny_bge_fusions_counted(bundles, tiny_bge_dir):
    m = Manifest.load(bundles.get(tiny_bge_dir, "fp32", "cpu"))
    fused = m.optimization["fused_operators"]
    assert fused["Attention"] == 2
    assert fused["SkipLayerNormalization"] == 4
    assert fused["EmbedLayerNormalization"] == 1


def test_minilm_fusions_and_truncation(minilm_fp32):
    m = Manifest.load(minilm_fp32)
    assert m.optimization["fused_operators"] == {
        "EmbedLayerNormalization": 1,
        "Attention": 6,
        "SkipLayerNormalization": 12,
        "BiasGelu": 6,
    }
    assert m.max_length == 256 and m.pooling.value == "mean"
    assert m.parity["reference"] == "sentence-transformers"
    assert m.parity["summary"]["cosine_min"] >= 0.99999
    tok = json.loads((minilm_fp32 / "tokenizer.json").read_text())
    assert tok["padding"] is None
    assert tok["truncation"]["max_length"] == 256


def test_minilm_int8_gate_recorded(minilm_int8, minilm_fp32):
    m = Manifest.load(minilm_int8)
    assert m.parity["gate"] == {"min": 0.995, "mean": 0.998}
    assert m.parity["summary"]["cosine_min"] >= 0.995
    assert m.parity["summary"]["cosine_mean"] >= 0.998
    info = m.optimization["precision"]
    assert info["scheme"] == "rowwise-int8"
    # SmoothQuant on every weight node, its strength chosen per node by the node's own error
    assert len(info["smoothquant_alpha"]) == 24 and set(info["smoothquant_alpha"].values()) <= set(int8.ALPHAS)
    assert m.optimization["embeddings"]["int8_embeddings"] == ["/encoder/embeddings/word_embeddings/Gather"]
    # every weight node is int8 or named as kept in fp32, and only the search's first choices are kept
    assert info["int8_nodes"] + len(info["kept_fp32"]) == 24
    assert len(info["kept_fp32"]) <= 3
    if info["kept_fp32"]:
        assert set(info["kept_fp32"]) == set(info["search"]["ranking"][: len(info["kept_fp32"])])
    assert info["search"]["aim"]["min"] > 0.995
    assert (minilm_int8 / "model.onnx").stat().st_size < 0.35 * (minilm_fp32 / "model.onnx").stat().st_size


def test_minilm_int8_runs_integer_kernels(minilm_int8):
    import onnx

    ops = [n.op_type for n in onnx.load(str(minilm_int8 / "model.onnx")).graph.node]
    info = Manifest.load(minilm_int8).optimization["precision"]
    int8_nodes = [n for n in info["smoothquant_alpha"] if n not in info["kept_fp32"]]
    assert len(int8_nodes) == info["int8_nodes"] >= 21
    # Attention becomes three GEMMs (Q, K, V) and MultiHeadAttention
    assert ops.count("MatMulIntegerToFloat") == sum(3 if n.startswith("Attention") else 1 for n in int8_nodes)
    assert "MatMulNBits" not in ops and "DynamicQuantizeMatMul" not in ops and "DynamicQuantizeLinear" not in ops


def test_manifest_round_trip(minilm_fp32):
    m = Manifest.load(minilm_fp32)
    again = Manifest.from_dict(json.loads(m.dumps()))
    assert again == m
    assert set(m.files) == {"model.onnx", "tokenizer.json"}
    assert m.exported_with["onnxruntime"]


def test_checkpoint_without_pooling_is_refused_then_accepted(tmp_path, tiny_bare_bert_dir):
    with pytest.raises(ExportError, match="--pooling"):
        pipeline.export(str(tiny_bare_bert_dir), out=tmp_path / "b", **QUIET)
    assert not (tmp_path / "b").exists()
    from edge_bge.manifest import Pooling

    out = pipeline.export(str(tiny_bare_bert_dir), out=tmp_path / "b", pooling=Pooling.MEAN, **QUIET)
    m = Manifest.load(out)
    assert m.pooling is Pooling.MEAN and m.max_length == 512
    assert m.parity["reference"] == "transformers"


def test_unknown_recipe_lists_known(tmp_path):
    with pytest.raises(ExportError) as e:
        pipeline.export("bge-nonexistent", out=tmp_path / "b", **QUIET)
    assert "bge-small-en-v1.5" in str(e.value) and "all-minilm-l6-v2" in str(e.value)


def test_recipes_parse():
    names = list_recipes()
    for name in ("bge-small-en-v1.5", "bge-base-en-v1.5", "bge-large-en-v1.5", "bge-small-zh-v1.5", "all-minilm-l6-v2"):
        assert name in names
    for name in names:
        r = load_recipe(name)
        assert isinstance(r, Recipe) and r.max_length > 0
    assert load_recipe("bge-large-zh-v1.5").query_instruction == "为这个句子生成表示以用于检索相关文章："
    assert load_recipe("bge-base-en-v1.5").pooling.value == "cls"
    m3 = load_recipe("bge-m3")
    assert m3.kind.value == "m3" and m3.max_length == 8192 and m3.heads["sparse"] == "sparse_linear.pt"
    for name in ("bge-reranker-base", "bge-reranker-large", "bge-reranker-v2-m3"):
        assert load_recipe(name).kind.value == "reranker" and load_recipe(name).pooling is None


def test_missing_files_named(tmp_path, tiny_bge_dir):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_bge_dir, ckpt)
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(ExportError, match="model.safetensors"):
        pipeline.export(str(ckpt), out=tmp_path / "b", **QUIET)


def test_unsupported_architecture(tmp_path, tiny_bge_dir):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_bge_dir, ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExportError, match="supported: bert, xlm-roberta"):
        pipeline.export(str(ckpt), out=tmp_path / "b", **QUIET)


@pytest.mark.parametrize(
    "kw,match", [({"precision": "int4"}, "fp32, fp16, int8"), ({"target": "tpu"}, "cpu, tensorrt")]
)
def test_unknown_precision_or_target(tmp_path, tiny_bge_dir, kw, match):
    with pytest.raises(ExportError, match=match):
        pipeline.export(str(tiny_bge_dir), out=tmp_path / "b", **kw, **QUIET)


def test_existing_out_refused_unless_force(tmp_path, tiny_bge_dir, tiny_fp32):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="--force"):
        pipeline.export(str(tiny_bge_dir), out=out, **QUIET)
    assert (out / "keep.txt").exists()
    pipeline.export(str(tiny_bge_dir), out=out, force=True, **QUIET)
    assert not (out / "keep.txt").exists() and Manifest.load(out).name == tiny_bge_dir.name


def test_unwritable_out(tmp_path, tiny_bge_dir):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ExportError, match="cannot create"):
        pipeline.export(str(tiny_bge_dir), out=blocker / "sub" / "b", **QUIET)


def test_full_disk_leaves_nothing(tmp_path, tiny_bge_dir, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path))

    monkeypatch.setattr(pipeline.shutil, "copyfile", full)
    with pytest.raises(ExportError, match="No space left"):
        pipeline.export(str(tiny_bge_dir), out=tmp_path / "b", **QUIET)
    assert list(tmp_path.iterdir()) == []


def test_parity_failure_names_worst_text_and_writes_nothing(tmp_path, tiny_bge_dir, monkeypatch):
    monkeypatch.setattr(Recipe, "gate", lambda self, p, **kw: {"min": 1.5})
    with pytest.raises(ParityError) as e:
        pipeline.export(str(tiny_bge_dir), out=tmp_path / "b", **QUIET)
    assert "worst text" in str(e.value) and e.value.worst_text
    assert 0 < e.value.cosine <= 1.0 + 1e-6
    assert list(tmp_path.iterdir()) == []


def test_exported_bundle_matches_transformers_by_hand(tiny_fp32, tiny_bge_dir):
    """Independent of the export's own check: CLS, normalisation and instruction, by hand."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    texts = ["what is a panda?", "The giant panda is a bear species endemic to China.", ""]
    tok = AutoTokenizer.from_pretrained(str(tiny_bge_dir))
    model = AutoModel.from_pretrained(str(tiny_bge_dir)).eval()
    instruction = "Represent this sentence for searching relevant passages: "
    queries = [instruction + t for t in texts]
    with torch.inference_mode():
        enc = tok(queries, padding=True, truncation=True, max_length=512, return_tensors="pt")
        want = torch.nn.functional.normalize(model(**enc).last_hidden_state[:, 0], dim=-1).numpy()
    emb = Embedder(tiny_fp32, providers="cpu")
    got = emb.embed_queries(texts)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert not np.allclose(emb.embed(texts), got, atol=1e-3)  # the instruction matters


def test_external_data_bundle(tmp_path, tiny_bge_dir):
    """Graphs past 2 GiB keep weights in model.onnx.data: forced here on a tiny model."""
    from edge_bge import ModelFilesError
    from edge_bge.bundle import external_data_locations

    out = pipeline.export(str(tiny_bge_dir), out=tmp_path / "b", external_data=True, **QUIET)
    m = Manifest.load(out)
    assert set(m.files) == {"model.onnx", "model.onnx.data", "tokenizer.json"}
    assert external_data_locations(out / "model.onnx") == {"model.onnx.data"}
    assert (out / "model.onnx").stat().st_size < 100_000 < (out / "model.onnx.data").stat().st_size
    assert (out / "model.onnx.data").stat().st_mode & 0o777 == 0o644
    assert m.parity["summary"]["cosine_min"] >= 0.99999
    Embedder(out).embed(["loads from the external data"])
    with (out / "model.onnx.data").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    with pytest.raises(ModelFilesError, match="model.onnx.data does not match"):
        Embedder(out)


def test_minilm_tensorrt_int8_quantizes_only_gemm_inputs(bundles):
    import onnx

    path = bundles.get("all-minilm-l6-v2", "int8", "tensorrt")
    m = Manifest.load(path)
    assert m.parity["gate"] == {"min": 0.99, "mean": 0.995}
    assert m.parity["summary"]["cosine_min"] >= 0.99 and m.parity["summary"]["cosine_mean"] >= 0.995
    assert m.optimization["precision"]["scheme"] == "static-qdq-int8"
    graph = onnx.load(str(path / "model.onnx")).graph
    consumers: dict[str, list[str]] = {}
    producer = {o: n.op_type for n in graph.node for o in n.output}
    for n in graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n.op_type)
    dq = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    q = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    # Q/DQ only in front of GEMMs (TensorRT's int8 GEMM pattern), never on a GEMM's output
    assert dq and all(set(consumers[n.output[0]]) <= {"MatMul", "Gemm"} for n in dq)
    assert q and all(producer.get(n.input[0]) not in ("MatMul", "Gemm") for n in q)
    gemms = [
        n for n in graph.node if n.op_type in ("MatMul", "Gemm") and producer.get(n.input[1]) == "DequantizeLinear"
    ]
    assert len(gemms) == 36 - len(m.optimization["precision"]["kept_fp32"])

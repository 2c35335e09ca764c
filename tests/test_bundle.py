"""Opening bundles: manifest validation, hashes, external-data confinement."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edge_bge import Embedder, ManifestError, ModelFilesError
from edge_bge.bundle import external_data_locations
from edge_bge.manifest import Manifest, sha256_file


@pytest.fixture
def copy(tmp_path, tiny_fp32):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_fp32, dst)
    return dst


def _edit(bundle, **fields):
    path = bundle / "edge_bge.json"
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def test_unknown_format_version(copy):
    _edit(copy, format_version=99)
    with pytest.raises(ManifestError, match="format_version is 99.*reads: 1"):
        Embedder(copy)


@pytest.mark.parametrize(
    "field,value,listed",
    [
        ("kind", "vision", "'embedding', 'm3', 'reranker'"),
        ("pooling", "max", "'cls', 'mean'"),
        ("precision", "int4", "'fp32', 'fp16', 'int8'"),
        ("target", "gpu", "'cpu-fused', 'plain'"),
    ],
)
def test_unknown_values_list_valid_ones(copy, field, value, listed):
    _edit(copy, **{field: value})
    with pytest.raises(ManifestError) as e:
        Embedder(copy)
    assert listed in str(e.value)


def test_pooling_must_be_stated(copy):
    _edit(copy, pooling=None)
    with pytest.raises(ManifestError, match="pooling"):
        Manifest.load(copy)


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="edge-bge bundle"):
        Embedder(tmp_path)


def test_tampered_model_refused(copy):
    with (copy / "tokenizer.json").open("a") as f:
        f.write(" ")
    with pytest.raises(ModelFilesError, match="tokenizer.json does not match"):
        Embedder(copy)


def test_external_data_outside_bundle_refused(tmp_path, copy):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(4, np.float32).tobytes())
    w = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../secret.bin"), ("offset", "0"), ("length", "16")):
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["embedding"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [4])],
        initializer=[w],
    )
    onnx.save(helper.make_model(graph), str(copy / "model.onnx"))
    assert external_data_locations(copy / "model.onnx") == {"../secret.bin"}
    files = json.loads((copy / "edge_bge.json").read_text())["files"]
    files["model.onnx"] = sha256_file(copy / "model.onnx")
    _edit(copy, files=files)
    with pytest.raises(ModelFilesError, match="outside the bundle"):
        Embedder(copy)


def test_real_bundle_has_no_external_data(tiny_fp32):
    assert external_data_locations(tiny_fp32 / "model.onnx") == set()

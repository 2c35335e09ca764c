"""Row-wise int8 on small graphs: what the rewritten graph computes, row by row."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_bge_export import int8, optimize


def _matmul_graph(path, w: np.ndarray, *, gelu_bias: np.ndarray | None = None, skip_ln: bool = False):
    """X [B, S, K] (-> BiasGelu) -> MatMul W (-> SkipLayerNormalization with a bias) -> Y."""
    k, n = w.shape
    nodes, inits = [], [numpy_helper.from_array(w, "W")]
    x = "X"
    if gelu_bias is not None:
        inits.append(numpy_helper.from_array(gelu_bias, "gb"))
        nodes.append(helper.make_node("BiasGelu", ["X", "gb"], ["g"], domain="com.microsoft", name="gelu"))
        x = "g"
    nodes.append(helper.make_node("MatMul", [x, "W"], ["mm" if skip_ln else "Y"], name="mm"))
    if skip_ln:
        rng = np.random.default_rng(1)
        for name, v in (("gamma", 1 + 0.1 * rng.standard_normal(n)), ("beta", 0.1 * rng.standard_normal(n))):
            inits.append(numpy_helper.from_array(v.astype(np.float32), name))
        inits.append(numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "bias"))
        nodes.append(
            helper.make_node(
                "SkipLayerNormalization",
                ["mm", "R", "gamma", "beta", "bias"],
                ["Y"],
                domain="com.microsoft",
                name="sln",
            )
        )
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["b", "s", k])]
    if skip_ln:
        inputs.append(helper.make_tensor_value_info("R", TensorProto.FLOAT, ["b", "s", n]))
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    onnx.save(model, str(path))
    return path


def _run(path, **feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["Y"], feeds)[0]


def _calibration(path, x: np.ndarray, **more: np.ndarray) -> int8.Calibration:
    return int8.calibrate(path, [{"X": x, **more, "attention_mask": np.ones(x.shape[:2], np.int64)}])


@pytest.fixture
def w():
    return np.random.default_rng(0).standard_normal((64, 48)).astype(np.float32) / 8


def test_rows_are_quantized_on_their_own(tmp_path, w):
    x = np.random.default_rng(2).standard_normal((3, 5, 64)).astype(np.float32)
    x[1, 2] *= 1000  # one huge row: per-tensor scales would flatten every other row
    x[2, 4] = 0  # an all-zero row must give zeros, not NaN
    src = _matmul_graph(tmp_path / "f.onnx", w)
    info = int8.quantize(src, tmp_path / "q.onnx", exclude=[], calibration=None)
    assert info["int8_nodes"] == 1 and info["kept_fp32"] == []
    ops = [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]
    assert "MatMulIntegerToFloat" in ops and "MatMul" not in ops
    got, want = _run(tmp_path / "q.onnx", X=x), x @ w
    assert np.isfinite(got).all() and np.all(got[2, 4] == 0)
    rel = np.linalg.norm(got - want, axis=-1) / np.maximum(np.linalg.norm(want, axis=-1), 1e-9)
    assert rel.max() < 0.02  # each row, the huge one's neighbours included
    # a row alone gives bit-for-bit what it gives inside the batch
    np.testing.assert_array_equal(_run(tmp_path / "q.onnx", X=x[1:2, :3]), got[1:2, :3])


def test_smoothquant_and_gelu_shift_keep_the_function(tmp_path, w):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 7, 64)).astype(np.float32)
    x[..., 5] *= 40  # an outlier channel, as BERT's LayerNorm outputs have
    src = _matmul_graph(tmp_path / "f.onnx", w, gelu_bias=np.zeros(64, np.float32), skip_ln=True)
    r = rng.standard_normal((2, 7, 48)).astype(np.float32)
    want = _run(src, X=x, R=r)
    calib = _calibration(src, x, R=r)
    plain = int8.quantize(src, tmp_path / "q0.onnx", exclude=[], calibration=None)
    smooth = int8.quantize(src, tmp_path / "q1.onnx", exclude=[], calibration=calib)
    assert plain["smoothquant_alpha"] is None and smooth["smoothquant_alpha"]["mm"] in int8.ALPHAS
    # the GELU shift's correction went into the SkipLayerNormalization bias: no extra node
    ops = [n.op_type for n in onnx.load(str(tmp_path / "q1.onnx")).graph.node]
    assert "Sub" not in ops and ops.count("SkipLayerNormalization") == 1
    err = {k: np.abs(_run(tmp_path / f"q{k}.onnx", X=x, R=r) - want).max() for k in (0, 1)}
    assert err[1] < 0.05 and err[1] < err[0]
    # the error estimate that ranks nodes for the search agrees with the graph
    assert 0 < int8.local_errors(src, calib)["mm"] < 0.05


def test_excluded_nodes_stay_fp32_exactly(tmp_path, w):
    x = np.random.default_rng(4).standard_normal((2, 3, 64)).astype(np.float32)
    src = _matmul_graph(tmp_path / "f.onnx", w)
    info = int8.quantize(src, tmp_path / "q.onnx", exclude=["mm"], calibration=_calibration(src, x))
    assert info["int8_nodes"] == 0 and info["kept_fp32"] == ["mm"]
    np.testing.assert_allclose(_run(tmp_path / "q.onnx", X=x), x @ w, rtol=1e-5, atol=1e-5)


def test_split_skip_layernorm_is_the_same_function(tmp_path, w):
    src = _matmul_graph(tmp_path / "f.onnx", w, skip_ln=True)
    rng = np.random.default_rng(5)
    x, r = rng.standard_normal((2, 6, 64)).astype(np.float32), rng.standard_normal((2, 6, 48)).astype(np.float32)
    assert optimize.split_skip_layernorm(src, tmp_path / "s.onnx") == 1
    ops = [n.op_type for n in onnx.load(str(tmp_path / "s.onnx")).graph.node]
    assert ops == ["MatMul", "Add", "Add", "LayerNormalization"]
    np.testing.assert_allclose(_run(tmp_path / "s.onnx", X=x, R=r), _run(src, X=x, R=r), rtol=1e-5, atol=1e-5)

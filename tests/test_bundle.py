"""Opening bundles: manifest validation, hashes, external-data confinement."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edge_bge import Embedder, ManifestError, ModelFilesError
from edge_bge.bundle import Bundle, external_data_locations
from edge_bge.manifest import Manifest, Target, sha256_file


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


@pytest.mark.parametrize(
    ("written", "read"), [("cpu-fused", Target.CPU), ("plain", Target.TENSORRT), ("cpu", Target.CPU)]
)
def test_bundles_written_with_the_older_target_names_still_load(copy, written, read):
    _edit(copy, target=written, format_version=1 if written != "cpu" else 2)
    model = Embedder(copy)
    assert model.manifest.target is read and model.manifest.to_dict()["target"] == read.value
    assert model.embed(["still loads"]).shape == (1, model.dim)


def test_unknown_format_version(copy):
    _edit(copy, format_version=99)
    with pytest.raises(ManifestError, match="format_version is 99.*reads: 1, 2 .a newer bundle needs a newer edge-bge"):
        Embedder(copy)


@pytest.mark.parametrize(
    "field,value,listed",
    [
        ("kind", "vision", "'embedding', 'm3', 'reranker'"),
        ("pooling", "max", "'cls', 'mean'"),
        ("precision", "int4", "'fp32', 'fp16', 'int8'"),
        ("target", "gpu", "'cpu', 'tensorrt'"),
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


# ---- external data anywhere in the model -----------------------------------------------------------
def _ext(name: str, location: str = "../secret.bin"):
    """A float [4] tensor whose bytes ONNX Runtime would read from ``location``."""
    from onnx import TensorProto, numpy_helper

    t = numpy_helper.from_array(np.zeros(4, np.float32), name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        entry = t.external_data.add()
        entry.key, entry.value = k, v
    return t


def _graph(nodes, name="g", initializer=(), sparse=()):
    from onnx import TensorProto, helper

    return helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [4])],
        initializer=list(initializer),
        sparse_initializer=list(sparse),
    )


def _constant(location: str, out: str = "c"):
    from onnx import helper

    return helper.make_node("Constant", [], [out], value=_ext("w", location))


def _if(then_nodes, depth: int):
    """An If whose then-branch holds ``then_nodes``, nested ``depth`` times."""
    from onnx import TensorProto, helper

    node_list = then_nodes
    for level in range(depth):
        branch = helper.make_graph(
            node_list, f"then{level}", [], [helper.make_tensor_value_info("c", TensorProto.FLOAT, [4])]
        )
        other = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["c"])],
            f"else{level}",
            [],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [4])],
        )
        node_list = [helper.make_node("If", ["cond"], ["c"], then_branch=branch, else_branch=other)]
    return node_list


def _model(where: str, location: str = "../secret.bin"):
    """A model naming external data ``location`` in one of the places onnx.proto3 lets a tensor sit."""
    from onnx import TensorProto, helper

    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    call = helper.make_node("f", ["x"], ["embedding"], domain="local")
    add = helper.make_node("Add", ["x", "c"], ["embedding"])
    functions = []
    graph = _graph([add])
    if where == "initializer":
        graph = _graph([helper.make_node("Add", ["x", "w"], ["embedding"])], initializer=[_ext("w", location)])
    elif where == "sparse initializer":
        sparse = helper.make_sparse_tensor(
            _ext("w", location), helper.make_tensor("i", TensorProto.INT64, [1], [0]), [4]
        )
        graph = _graph([helper.make_node("Add", ["x", "w"], ["embedding"])], sparse=[sparse])
    elif where == "nested If":
        graph = _graph([*_if([_constant(location)], depth=3), add])
    elif where == "attribute tensors":
        graph = _graph(
            [
                helper.make_node("Custom", ["x"], ["c"], domain="local", ts=[_ext("a", "a.bin"), _ext("w", location)]),
                add,
            ]
        )
    elif where == "attribute sparse_tensor":
        sparse = helper.make_sparse_tensor(
            helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]), _ext("i", location), [4]
        )
        graph = _graph([helper.make_node("Constant", [], ["c"], sparse_value=sparse), add])
    elif where == "function node":
        body = [_constant(location), helper.make_node("Add", ["x", "c"], ["embedding"])]
        functions = [helper.make_function("local", "f", ["x"], ["embedding"], body, opsets)]
        graph = _graph([call])
    elif where == "function attribute default":
        body = [helper.make_node("Identity", ["x"], ["embedding"])]
        default = helper.make_attribute("bias", _ext("w", location))
        functions = [helper.make_function("local", "f", ["x"], ["embedding"], body, opsets, attribute_protos=[default])]
        graph = _graph([call])
    elif where == "If inside a function":
        body = [*_if([_constant(location)], depth=2), helper.make_node("Add", ["x", "c"], ["embedding"])]
        functions = [helper.make_function("local", "f", ["x"], ["embedding"], body, opsets)]
        graph = _graph([call])
    elif where == "training graph":
        model = helper.make_model(graph, opset_imports=opsets)
        info = model.training_info.add()
        info.initialization.CopyFrom(_graph([add], "init", initializer=[_ext("w", location)]))
        return model
    else:
        raise AssertionError(where)
    return helper.make_model(graph, opset_imports=opsets, functions=functions)


def _install(bundle, model, extra_files=()) -> None:
    """Write ``model`` as the bundle's graph and record its sha256 (and any extra files') in the manifest."""
    import onnx

    onnx.save(model, str(bundle / "model.onnx"))
    files = json.loads((bundle / "edge_bge.json").read_text())["files"]
    for name in ("model.onnx", *extra_files):
        files[name] = sha256_file(bundle / name)
    _edit(bundle, files=files)


PLACES = [
    "initializer",
    "sparse initializer",
    "nested If",
    "attribute tensors",
    "attribute sparse_tensor",
    "function node",
    "function attribute default",
    "If inside a function",
    "training graph",
]


@pytest.mark.parametrize("where", PLACES)
def test_external_data_outside_the_bundle_is_refused_wherever_it_sits(tmp_path, copy, where):
    (tmp_path / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
    _install(copy, _model(where))
    assert "../secret.bin" in external_data_locations(copy / "model.onnx")
    with pytest.raises(ModelFilesError, match=r"'\.\./secret\.bin' outside the bundle"):
        Embedder(copy)


@pytest.mark.parametrize("where", ["function node", "If inside a function", "training graph"])
def test_external_data_inside_the_bundle_must_be_listed(copy, where):
    (copy / "w.bin").write_bytes(np.ones(4, np.float32).tobytes())
    _install(copy, _model(where, "w.bin"))
    with pytest.raises(ModelFilesError, match="'w.bin' that the manifest does not list"):
        Bundle(copy)
    _install(copy, _model(where, "w.bin"), extra_files=["w.bin"])
    assert Bundle(copy).manifest.files["w.bin"] == sha256_file(copy / "w.bin")  # listed and hashed: accepted


def test_onnxruntime_memory_address_marker_is_refused(copy):
    marker = "*/_ORT_MEM_ADDR_/*"  # ONNX Runtime reads the offset of such a tensor as a pointer
    _install(copy, _model("function node", marker))
    files = json.loads((copy / "edge_bge.json").read_text())["files"]
    _edit(copy, files={**files, marker: "0" * 64})
    with pytest.raises(ModelFilesError, match="in-memory marker"):
        Bundle(copy, verify=False)


def test_ep_context_nodes_are_refused(copy):
    from onnx import helper

    node = helper.make_node(
        "EPContext", ["x"], ["embedding"], domain="com.microsoft", ep_cache_context="../engine.bin", embed_mode=0
    )
    _install(copy, helper.make_model(_graph([node])))
    with pytest.raises(ModelFilesError, match="EPContext"):
        Bundle(copy)


def test_a_bundle_with_its_weights_in_external_data_still_loads(copy, tiny_fp32):
    import onnx

    model = onnx.load(str(copy / "model.onnx"))
    onnx.save_model(
        model, str(copy / "model.onnx"), save_as_external_data=True, location="model.onnx.data", size_threshold=0
    )
    files = json.loads((copy / "edge_bge.json").read_text())["files"]
    files.update({n: sha256_file(copy / n) for n in ("model.onnx", "model.onnx.data")})
    _edit(copy, files=files)
    assert external_data_locations(copy / "model.onnx") == {"model.onnx.data"}
    texts = ["hello world", "external weights"]
    np.testing.assert_array_equal(Embedder(copy).embed(texts), Embedder(tiny_fp32).embed(texts))


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    out, n = bytearray(), len(payload)
    for value in (number << 3 | 2, n):
        while value > 0x7F:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out) + payload


def test_subgraphs_nested_past_protobufs_depth_limit_are_walked(tmp_path):
    # graph{initializer} inside node{attribute{g}} 1000 times: written by hand, as the onnx package
    # itself stops at 100 levels; the walk must neither recurse nor miss the tensor
    graph = _field(5, _ext("w").SerializeToString())
    for _ in range(1000):
        graph = _field(1, _field(5, _field(6, graph)))  # node.attribute.g
    (tmp_path / "deep.onnx").write_bytes(_field(7, graph))
    assert external_data_locations(tmp_path / "deep.onnx") == {"../secret.bin"}


# ---- the manifest: strict types, and checked against the graph ---------------------------------------
@pytest.mark.parametrize(
    "field,value",
    [
        ("format_version", True),
        ("name", 5),
        ("name", ""),
        ("kind", 5),
        ("architecture", None),
        ("precision", ["fp32"]),
        ("dim", "32"),
        ("dim", True),
        ("max_length", 0),
        ("normalize", "yes"),
        ("query_instruction", 5),
        ("inputs", None),
        ("inputs", "input_ids"),
        ("inputs", ["input_ids", 1]),
        ("inputs", ["input_ids", "input_ids", "attention_mask"]),
        ("inputs", ["input_ids"]),
        ("outputs", None),
        ("outputs", ["emb"]),
        ("files", ["model.onnx"]),
        ("files", {"model.onnx": 5, "tokenizer.json": "0" * 64}),
        ("parity", [1]),
        ("source", "hub"),
        ("exported_with", {"torch": 2}),
        ("optimization", 5),
        ("special_token_ids", ["a"]),
        ("special_token_ids", [-1]),
        ("special_token_ids", 3),
        ("query_max_length", "384"),
        ("query_max_length", 0),
    ],
)
def test_manifest_field_of_the_wrong_type_is_named(copy, field, value):
    _edit(copy, **{field: value})
    with pytest.raises(ManifestError, match=f"format_version|'{field}'") as e:
        Manifest.load(copy)
    assert field in str(e.value)


def test_optional_manifest_fields_may_be_null(copy):
    _edit(copy, parity=None, source=None, optimization=None, special_token_ids=None, query_max_length=None)
    m = Manifest.load(copy)
    assert (m.parity, m.special_token_ids, m.query_max_length) == ({}, (), None)


def test_manifest_dim_must_match_the_graph(copy):
    _edit(copy, dim=768)  # the graph's embedding is [batch, 32]
    with pytest.raises(ManifestError, match=r"'dim' is 768; the graph's 'embedding' output has 32"):
        Embedder(copy)


def test_manifest_inputs_must_match_the_graph(copy):
    _edit(copy, inputs=["input_ids", "attention_mask"])  # the BERT graph also takes token_type_ids
    with pytest.raises(ManifestError, match="'inputs' is .*the graph's inputs are .*token_type_ids"):
        Embedder(copy)


def test_graph_output_name_must_match_the_manifest(copy):
    import onnx

    model = onnx.load(str(copy / "model.onnx"))
    for node in model.graph.node:
        node.output[:] = ["vector" if o == "embedding" else o for o in node.output]
    model.graph.output[0].name = "vector"
    _install(copy, model)
    with pytest.raises(ManifestError, match=r"'outputs' is \['embedding'\]; the graph's outputs are \['vector'\]"):
        Embedder(copy)


def _toy(bundle, *, input_type=None, output_type=None, dim: int = 32, rank: int = 2) -> None:
    """A small graph with the bundle contract's names: embedding = sum(input_ids) * ones [dim]."""
    from onnx import TensorProto, helper, numpy_helper

    input_type = TensorProto.INT64 if input_type is None else input_type
    output_type = TensorProto.FLOAT if output_type is None else output_type
    names = ("input_ids", "attention_mask", "token_type_ids")
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids"], to=output_type),
        helper.make_node("ReduceSum", ["ids", "axis"], ["total"], keepdims=1),  # [batch, 1]
    ]
    if rank == 3:
        nodes.append(helper.make_node("Unsqueeze", ["total", "axis"], ["total3"]))  # [batch, 1, 1]
    nodes.append(helper.make_node("Mul", [nodes[-1].output[0], "ones"], ["embedding"]))
    shape = [1] * (rank - 1) + [dim]
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info(n, input_type, ["batch", "sequence"]) for n in names],
        [helper.make_tensor_value_info("embedding", output_type, ["batch", *shape[1:]])],
        initializer=[
            numpy_helper.from_array(np.array([1], np.int64), "axis"),
            numpy_helper.from_array(np.ones(shape, helper.tensor_dtype_to_np_dtype(output_type)), "ones"),
        ],
    )
    _install(bundle, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_toy_graph_runs(copy):
    _toy(copy)  # the graph the next test breaks, whole: it loads and embeds
    assert Embedder(copy).embed("hello").shape == (32,)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"input_type": 6}, r"'inputs': graph input 'input_ids' is tensor\(int32\), expected tensor\(int64\)"),
        ({"output_type": 11}, r"'outputs': graph output 'embedding' is tensor\(double\)"),
        (
            {"rank": 3},
            r"'outputs': graph output 'embedding' has shape \['batch', 1, 32\], expected rank 2",
        ),
        ({"dim": 16}, r"'dim' is 32; the graph's 'embedding' output has 16"),
    ],
)
def test_graph_types_and_shapes_must_match_the_contract(copy, change, message):
    _toy(copy, **change)
    with pytest.raises(ManifestError, match=message):
        Embedder(copy)


def test_serve_refuses_a_bundle_whose_manifest_disagrees_with_the_graph(copy):
    import socket
    import subprocess
    import sys

    _edit(copy, dim=768)
    with socket.socket() as s:  # a free port, should the server wrongly start
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "edge_bge", "serve", str(copy), "--port", str(port), "--no-warmup"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == SERVE_BAD_BUNDLE_EXIT, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("edge-bge: error: manifest field 'dim' is 768"), done.stderr


# edge_bge/cli/__init__.py: serve refuses a bundle it cannot load with 2 (a configuration fault), not 1
SERVE_BAD_BUNDLE_EXIT = 2

"""Providers: chains, TensorRT / CUDA options, engine-cache keys, strict mode, IO binding, build_engine.

CI has no GPU: ONNX Runtime's GPU side is replaced by a fake InferenceSession where a test needs one.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import os
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

from edge_bge import Embedder, ProviderError, batching
from edge_bge import providers as P
from edge_bge.batching import GPU_MAX_BATCH_TOKENS
from edge_bge.manifest import MODEL_NAME, Kind, Manifest, Pooling, Precision, Target
from edge_bge.providers import machine as M
from edge_bge.providers import registry, resolve, tensorrt

from .helpers import corpus_texts
from .test_imports import PACKAGE, import_graph

TRT, CUDA, CPU = P.TRT, P.CUDA, P.CPU
ALL = [TRT, CUDA, CPU]
BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
XLMR_INPUTS = ("input_ids", "attention_mask")


def manifest(
    kind: Kind = Kind.EMBEDDING,
    precision: Precision = Precision.FP32,
    target: Target = Target.TENSORRT,
    *,
    inputs: tuple[str, ...] = BERT_INPUTS,
    max_length: int = 512,
    scheme: str | None = None,
    sha: str = "a" * 64,
) -> Manifest:
    outputs = {Kind.EMBEDDING: ("embedding",), Kind.M3: ("dense", "sparse", "colbert"), Kind.RERANKER: ("logits",)}
    return Manifest(
        name="bge-test v1",
        kind=kind,
        architecture="bert",
        precision=precision,
        target=target,
        dim=32,
        max_length=max_length,
        pooling=None if kind is Kind.RERANKER else Pooling.CLS,
        normalize=kind is not Kind.RERANKER,
        query_instruction="",
        inputs=inputs,
        outputs=outputs[kind],
        files={"model.onnx": sha, "tokenizer.json": "b" * 64},
        optimization={"precision": {"scheme": scheme}} if scheme else {},
    )


@pytest.fixture
def machine(monkeypatch):
    """A GPU machine as far as edge-bge can tell: known TensorRT version and GPU name."""
    monkeypatch.setattr(M, "tensorrt_version", lambda: "10.9.0")
    monkeypatch.setattr(M, "gpu_name", lambda device_id=0: "NVIDIA Test GPU")
    monkeypatch.setattr(ort, "__version__", "1.22.0")


class FakeORT:
    """ONNX Runtime with GPU providers: ``loads`` is what a session really gets; ``stderr`` what the C++
    logger prints while creating it; ``raises`` an exception from the constructor when TensorRT is in
    the chain; ``fails`` the providers whose session cannot be created when first in the chain;
    ``cpu_ops`` the operators no GPU provider takes (they run on the CPU); ``context`` what TensorRT's
    EP-context model covers when it dumps one ("all", or "part": one partition)."""

    def __init__(
        self, monkeypatch, available, *, loads=None, stderr=b"", raises=None, fails=(), cpu_ops=(), context="all"
    ):
        self.available, self.loads, self.stderr, self.raises = list(available), loads, stderr, raises
        self.fails, self.cpu_ops, self.context = set(fails), set(cpu_ops), context
        self.sessions: list[FakeSession] = []
        monkeypatch.setattr(ort, "get_available_providers", lambda: list(self.available))
        monkeypatch.setattr(ort, "InferenceSession", self.session)

    def session(self, path, sess_options=None, providers=None, **kw):
        if self.stderr:
            os.write(2, self.stderr)
        names = [p if isinstance(p, str) else p[0] for p in providers]
        if self.raises is not None and TRT in names:
            raise self.raises
        if names[0] in self.fails:
            raise RuntimeError(f"cannot start {names[0]}")
        for name, options in [p for p in providers if not isinstance(p, str)]:
            unknown = set(options) - KNOWN_OPTIONS.get(name, set(options))
            if unknown:  # as ONNX Runtime's provider factories answer
                raise RuntimeError(f"[ONNXRuntimeError] : 1 : FAIL : Unknown provider option: {sorted(unknown)[0]}")
        s = FakeSession(path, providers, kw, self, sess_options)
        self.sessions.append(s)
        return s


KNOWN_OPTIONS = {
    CUDA: {"device_id", "arena_extend_strategy", "gpu_mem_limit", "cudnn_conv_algo_search"},
    TRT: {k for k in P.tensorrt_options(manifest(), max_batch_tokens=64)}
    | {"trt_engine_cache_path", "trt_timing_cache_path", "trt_dump_ep_context_model", "trt_ep_context_file_path"}
    | {"trt_ep_context_embed_mode"},
}
# The fake graph's nodes as ONNX Runtime runs them: (name, op, values in its output per warm-up batch)
GRAPH = [
    ("/embeddings/Gather", "Gather", 16 * 16 * 32),
    ("/shape/Shape", "Shape", 2),
    ("/shape/Concat", "Concat", 3),
    *[(f"/layer.{i}/MatMul", "MatMulIntegerToFloat" if i % 2 else "MatMul", 16 * 16 * 32) for i in range(4)],
    ("/pool/ReduceSum", "ReduceSum", 16 * 32),
]


class FakeSession:
    def __init__(self, path, providers, kw, fake, sess_options):
        self.path, self.kw, self.fallback, self.sess_options = path, kw, True, sess_options
        self.chain = [(p, {}) if isinstance(p, str) else p for p in providers]
        names = [n for n, _ in self.chain]
        self.got = [n for n in names if fake.loads is None or n in fake.loads]
        if CPU not in self.got:
            self.got.append(CPU)
        self.cpu_ops, self.batches = fake.cpu_ops, []
        if config_entry(sess_options, "session.disable_cpu_ep_fallback") == "1":
            if self.got[0] != CPU and fake.cpu_ops:
                raise RuntimeError(
                    "This session contains graph nodes that are assigned to the default CPU EP, but fallback to "
                    "CPU EP has been explicitly disabled by the user."
                )
        for name, options in self.chain:  # the TensorRT provider when asked to dump an EP-context model
            if name == TRT and options.get("trt_dump_ep_context_model"):
                context = Path(options["trt_ep_context_file_path"])
                engines = context.parent / options["trt_engine_cache_path"]
                if any(engines.glob("*.engine")):
                    continue  # an engine in the cache is loaded: nothing is built, nothing is dumped
                engines.mkdir(parents=True, exist_ok=True)
                (engines / "TRTKernel_graph_main_0.engine").write_bytes(b"serialized engine")
                write_context_model(context, fake.context)

    def options(self, name):
        return dict(self.chain)[name]

    def get_providers(self):
        return list(self.got)

    def disable_fallback(self):
        self.fallback = False

    def run(self, outputs, feeds):
        self.batches.append(next(iter(feeds.values())).shape)
        return [np.zeros((len(next(iter(feeds.values()))), 32), np.float32) for _ in outputs]

    def end_profiling(self):
        """ONNX Runtime's profile of the runs so far: each node's provider, duration and output shape."""
        if not (self.sess_options and self.sess_options.enable_profiling):
            return ""
        events = [
            {
                "cat": "Node",
                "name": f"{name}_kernel_time",
                "dur": 100,
                "args": {
                    "op_name": op,
                    "provider": CPU if op in self.cpu_ops or op in ("Shape", "Concat") else self.got[0],
                    "output_type_shape": [{"float": [values]}],
                },
            }
            for name, op, values in GRAPH
        ]
        path = Path(f"{self.sess_options.profile_file_prefix}_fake.json")
        path.write_text(json.dumps([{"cat": "Session", "name": "model_run", "dur": 900}, *events]))
        return str(path)

    def get_inputs(self):  # the tiny BERT bundles' graph, as Manifest.check_session reads it
        names = ("input_ids", "attention_mask", "token_type_ids")
        return [SimpleNamespace(name=n, type="tensor(int64)", shape=["batch", "sequence"]) for n in names]

    def get_outputs(self):
        return [SimpleNamespace(name="embedding", type="tensor(float)", shape=["batch", 32])]


def config_entry(options: ort.SessionOptions | None, key: str) -> str | None:
    try:
        return None if options is None else options.get_session_config_entry(key)
    except RuntimeError:  # ONNX Runtime's answer for a key never set
        return None


def write_context_model(path: Path, covers: str) -> None:
    """An EP-context model as ONNX Runtime writes it: one EPContext node over the whole graph, or (``covers``
    "part") over a partition, whose output is an inner tensor of the graph."""
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in BERT_INPUTS]
    output = "embedding" if covers == "all" else "/encoder/layer.0/output/LayerNorm/output_0"
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", 32])]
    node = helper.make_node(
        "EPContext",
        list(BERT_INPUTS),
        [output],
        domain="com.microsoft",
        embed_mode=0,
        ep_cache_context="prebuilt/TRTKernel_graph_main_0.engine",
    )
    graph = helper.make_graph([node], "ctx", inputs, outputs)
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]),
        str(path),
    )


# ---- chains ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "available,chain",
    [(ALL, ALL), (ALL[1:], ALL[1:]), (ALL[2:], ALL[2:]), ([TRT, CPU], [TRT, CPU])],
)
def test_auto_order(available, chain):
    assert resolve("auto", available) == chain


def test_aliases_and_lists():
    assert resolve("cpu", ALL) == [CPU]
    assert resolve("CUDA", ALL) == [CUDA]
    assert resolve("tensorrt", ALL) == [TRT, CUDA]  # CUDA takes what TensorRT does not
    assert resolve("tensorrt", [TRT, CPU]) == [TRT]
    assert resolve([CUDA, CPU], ALL) == ALL[1:]
    with pytest.raises(ProviderError, match="unknown provider"):
        resolve("gpu", ALL)
    with pytest.raises(ProviderError, match="empty"):
        resolve([], ALL)


@pytest.mark.parametrize(
    "available,loads,got",
    [
        ([CPU], None, [CPU]),
        ([CUDA, CPU], None, [CUDA, CPU]),
        ([TRT, CUDA, CPU], None, [TRT, CUDA, CPU]),
        ([TRT, CPU], None, [TRT, CPU]),
        ([TRT, CUDA, CPU], {CUDA, CPU}, [CUDA, CPU]),  # TensorRT libraries missing: auto goes on with CUDA
        ([TRT, CUDA, CPU], {CPU}, [CPU]),
    ],
)
def test_auto_with_each_availability(monkeypatch, machine, tmp_path, caplog, available, loads, got):
    fake = FakeORT(monkeypatch, available, loads=loads)
    with caplog.at_level(logging.WARNING, logger="edge_bge"):
        s = P.open_session("m.onnx", manifest=manifest(), max_batch_tokens=8192, cache_dir=tmp_path)
    assert s.providers == got
    assert s.providers.requested == [p for p in ALL if p in available]
    assert s.providers.io_binding is (got[0] != CPU) and (s.run is not None) is (got[0] != CPU)
    assert ("running on" in caplog.text) is (loads is not None)
    if available != [CPU]:  # the GPU path: no silent CPU fallback, neither when creating nor when running
        assert fake.sessions[0].kw == {"enable_fallback": 0} and fake.sessions[0].fallback is False


# ---- strict mode -------------------------------------------------------------------------------


def test_strict_refuses_missing_provider(tiny_fp32):
    with pytest.raises(ProviderError, match="CUDAExecutionProvider not available"):
        Embedder(tiny_fp32, providers="cuda")


def test_side_by_side_install_is_named(monkeypatch):
    FakeORT(monkeypatch, [CPU])
    monkeypatch.setattr(M, "_ort_distributions", lambda: {"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.22.0"})
    with pytest.raises(ProviderError, match="both onnxruntime 1.22.0 and onnxruntime-gpu 1.22.0 are installed"):
        P.open_session("m.onnx", providers="tensorrt")


REASON = (
    b"[E:onnxruntime:Default, provider_bridge_ort.cc:2195 TryGetProviderInfo_TensorRT] Failed to load library "
    b"libonnxruntime_providers_tensorrt.so with error: libnvinfer.so.10: cannot open shared object file\n"
)


def test_strict_raises_with_onnxruntime_reason(monkeypatch, machine, tmp_path):
    FakeORT(monkeypatch, ALL, loads={CUDA, CPU}, stderr=REASON)
    with pytest.raises(ProviderError, match=r"requested TensorrtExecutionProvider.*libnvinfer\.so\.10: cannot open"):
        P.open_session("m.onnx", manifest=manifest(), providers="tensorrt", max_batch_tokens=8192, cache_dir=tmp_path)


def test_not_strict_warns_with_reason(monkeypatch, machine, tmp_path, caplog):
    FakeORT(monkeypatch, ALL, loads={CUDA, CPU}, stderr=REASON)
    with caplog.at_level(logging.WARNING, logger="edge_bge"):
        s = P.open_session("m.onnx", manifest=manifest(), providers="tensorrt", strict=False, cache_dir=tmp_path)
    assert s.providers == [CUDA, CPU] and s.providers.requested == [TRT, CUDA]
    assert "libnvinfer.so.10" in caplog.text


def test_not_strict_skips_absent_provider(monkeypatch, caplog):
    FakeORT(monkeypatch, [CUDA, CPU])
    with caplog.at_level(logging.WARNING, logger="edge_bge"):
        s = P.open_session("m.onnx", providers=[TRT, CUDA], strict=False)
    assert s.providers == [CUDA, CPU] and "TensorrtExecutionProvider not available" in caplog.text


def test_session_failure_is_provider_error(monkeypatch, machine, tmp_path):
    FakeORT(monkeypatch, ALL, stderr=b"TensorRT EP failed to create engine from network\n", raises=RuntimeError("x"))
    with pytest.raises(ProviderError, match="could not create a session.*failed to create engine"):
        P.open_session("m.onnx", manifest=manifest(), providers="tensorrt", max_batch_tokens=8192, cache_dir=tmp_path)


def test_auto_goes_on_when_a_session_fails(monkeypatch, machine, tmp_path, caplog):
    fake = FakeORT(monkeypatch, ALL, stderr=b"TensorRT EP out of memory\n", raises=RuntimeError("engine build"))
    with caplog.at_level(logging.WARNING, logger="edge_bge"):
        s = P.open_session("m.onnx", manifest=manifest(), max_batch_tokens=8192, cache_dir=tmp_path)
    assert s.providers == [CUDA, CPU] and s.providers.requested == ALL and s.providers.io_binding
    assert "engine build" in caplog.text and "trying CUDAExecutionProvider" in caplog.text
    assert fake.sessions[0].kw == {"enable_fallback": 0}


def test_auto_goes_down_the_whole_chain(monkeypatch, machine, tmp_path, caplog):
    fake = FakeORT(monkeypatch, ALL, fails={TRT, CUDA})
    with caplog.at_level(logging.WARNING, logger="edge_bge"):
        s = P.open_session("m.onnx", manifest=manifest(), max_batch_tokens=8192, cache_dir=tmp_path)
    assert s.providers == [CPU] and s.providers.requested == ALL and not s.providers.io_binding
    assert [x.chain[0][0] for x in fake.sessions] == [CPU]
    assert "trying CUDAExecutionProvider, CPUExecutionProvider" in caplog.text
    assert "cannot start CUDAExecutionProvider" in caplog.text and caplog.text.endswith("trying CPUExecutionProvider\n")
    with pytest.raises(ProviderError, match="cannot start CUDAExecutionProvider"):  # asked for by name: no fallback
        P.open_session("m.onnx", providers=[CUDA, CPU])


def test_session_request_is_what_open_session_opens(tiny_fp32):
    request = P.SessionRequest(tiny_fp32 / MODEL_NAME, providers="cpu", threads=1, spin=False)
    opened = request.open()
    assert opened.providers == [CPU] and opened.run is None and opened.providers.model == str(request.model_path)
    assert opened.session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(AttributeError):
        request.threads = 2  # frozen: a request is a value


OPENVINO = "OpenVINOExecutionProvider"


def test_a_new_provider_is_one_registry_entry(monkeypatch):
    entry = registry.Provider(OPENVINO, aliases=("openvino",), auto=True, defaults=lambda c: {"device_type": "CPU"})
    monkeypatch.setattr(registry, "PROVIDERS", (*registry.PROVIDERS[:2], entry, registry.PROVIDERS[2]))
    fake = FakeORT(monkeypatch, [OPENVINO, CPU])
    assert resolve("auto", [OPENVINO, CPU]) == [OPENVINO, CPU] and resolve("OpenVINO", ALL) == [OPENVINO]
    s = P.open_session("m.onnx", providers="openvino")
    assert fake.sessions[0].options(OPENVINO) == {"device_type": "CPU"} and s.providers == [OPENVINO, CPU]
    assert s.run is None and fake.sessions[0].kw == {}  # host memory: no IO binding, ONNX Runtime's own path
    P.open_session("m.onnx", providers=[(OPENVINO, {"device_type": "GPU", "cache_dir": "/c"})])
    assert fake.sessions[1].options(OPENVINO) == {"device_type": "GPU", "cache_dir": "/c"}


def test_an_unknown_provider_gets_the_callers_options_as_given(monkeypatch):
    fake = FakeORT(monkeypatch, [OPENVINO, CPU])
    assert registry.lookup(OPENVINO) == registry.Provider(OPENVINO)
    s = P.open_session("m.onnx", providers=[(OPENVINO, {"device_type": "CPU"}), CPU])
    assert fake.sessions[0].chain == [(OPENVINO, {"device_type": "CPU"}), (CPU, {})] and s.run is None
    with pytest.raises(ProviderError, match="unknown provider 'openvino'; use 'auto', 'cpu', 'cuda', 'tensorrt'"):
        resolve("openvino", ALL)


def test_io_binding_runs_on_the_registrys_device(monkeypatch, tiny_fp32):
    """An entry's io_device is where IO binding puts the tensors: here the CPU, with the real ONNX Runtime."""
    texts = corpus_texts(40)
    want = Embedder(tiny_fp32, providers="cpu").embed(texts)
    cpu = dataclasses.replace(registry.lookup(CPU), io_device="cpu")  # an OrtValue device
    monkeypatch.setattr(registry, "PROVIDERS", (*registry.PROVIDERS[:2], cpu))
    bound = Embedder(tiny_fp32, providers="cpu")
    assert bound.providers == [CPU] and bound.providers.io_binding and bound._device_run is not None
    np.testing.assert_allclose(bound.embed(texts), want, rtol=0, atol=1e-6)


def test_public_names():
    public = {n for n, v in vars(P).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert set(P.__all__) == public - {"annotations"}
    assert "make_session" not in public


def test_reports_real_providers(tiny_fp32):
    model = Embedder(tiny_fp32, providers="cpu")
    assert model.providers == [CPU]
    assert model.providers.requested == [CPU] and model.providers.io_binding is False


# ---- TensorRT and CUDA options -----------------------------------------------------------------

CASES = {
    "embedding-fp32-plain": (manifest(), False, False),
    "embedding-fp16-plain": (manifest(precision=Precision.FP16), True, False),
    "embedding-int8-qdq": (manifest(precision=Precision.INT8, scheme="static-qdq-int8"), False, True),
    "embedding-int8-dynamic": (
        manifest(precision=Precision.INT8, target=Target.CPU, scheme="dynamic-int8"),
        False,
        False,
    ),
    "m3-fp16": (manifest(Kind.M3, Precision.FP16, inputs=XLMR_INPUTS, max_length=8192), True, False),
    "m3-int8-qdq": (manifest(Kind.M3, Precision.INT8, inputs=XLMR_INPUTS, scheme="static-qdq-int8"), False, True),
    "reranker-fp32": (manifest(Kind.RERANKER, inputs=XLMR_INPUTS), False, False),
    "reranker-fp16": (manifest(Kind.RERANKER, Precision.FP16), True, False),
}


@pytest.mark.parametrize("case", CASES)
def test_tensorrt_options_per_bundle(case):
    m, fp16, int8 = CASES[case]
    o = P.tensorrt_options(m, max_batch_tokens=8192)
    assert o["trt_fp16_enable"] is fp16 and o["trt_int8_enable"] is int8
    assert o["trt_layer_norm_fp32_fallback"] is True
    assert o["trt_engine_cache_enable"] is True and o["trt_timing_cache_enable"] is True
    profile = P.shape_profile(m.max_length, 8192)
    assert o["trt_profile_max_shapes"] == ",".join(f"{n}:{profile.max[0]}x{m.max_length}" for n in m.inputs)
    assert o["trt_profile_min_shapes"] == ",".join(f"{n}:1x1" for n in m.inputs)
    assert P.tensorrt_options(m, max_batch_tokens=8192, fp16=True)["trt_fp16_enable"] is True  # the user asks


@pytest.mark.parametrize("case", CASES)
def test_session_options_and_cache_paths_per_bundle(monkeypatch, machine, tmp_path, case):
    m, fp16, int8 = CASES[case]
    fake = FakeORT(monkeypatch, ALL)
    s = P.open_session("m.onnx", manifest=m, providers="tensorrt", max_batch_tokens=4096, cache_dir=tmp_path)
    trt, cuda = fake.sessions[0].options(TRT), fake.sessions[0].options(CUDA)
    assert s.providers.options[TRT] == trt
    assert trt["trt_fp16_enable"] is fp16 and trt["trt_int8_enable"] is int8
    engine = Path(trt["trt_engine_cache_path"])
    parts = P.engine_key_parts(m.files[MODEL_NAME], profile=P.shape_profile(m.max_length, 4096), options=trt)
    assert engine.parent == tmp_path / "tensorrt" / f"bge-test-v1-{P.engine_key(parts)}" and engine.is_dir()
    assert Path(trt["trt_timing_cache_path"]).parent == tmp_path / "tensorrt" / "timing"
    assert cuda == {"device_id": 0, "arena_extend_strategy": "kSameAsRequested"}


def test_user_options_override(monkeypatch, machine, tmp_path):
    fake = FakeORT(monkeypatch, ALL)
    chain = [(TRT, {"fp16": True, "device_id": 1}), (CUDA, {"gpu_mem_limit": 2 << 30}), CPU]
    P.open_session("m.onnx", manifest=manifest(), providers=chain, max_batch_tokens=8192, cache_dir=tmp_path)
    trt, cuda = fake.sessions[0].options(TRT), fake.sessions[0].options(CUDA)
    assert trt["trt_fp16_enable"] is True and "fp16" not in trt and trt["device_id"] == 1
    assert cuda == {"device_id": 1, "arena_extend_strategy": "kSameAsRequested", "gpu_mem_limit": 2 << 30}
    P.open_session("m.onnx", manifest=manifest(), providers=[(TRT, {"trt_engine_cache_path": "/mine"})])
    assert fake.sessions[1].options(TRT)["trt_engine_cache_path"] == "/mine"  # the caller's path, as given


def test_cuda_options():
    assert P.cuda_options(device_id=2, gpu_mem_limit=1 << 30, arena_extend_strategy="kNextPowerOfTwo") == {
        "device_id": 2,
        "arena_extend_strategy": "kNextPowerOfTwo",
        "gpu_mem_limit": 1 << 30,
    }


# ---- shape profile -----------------------------------------------------------------------------


POLICY = ("DEFAULT_MAX_BATCH_TOKENS", "GPU_MAX_BATCH_TOKENS", "MAX_BATCH_ROWS", "MIN_TOKENS")


def test_batch_policy_has_one_home():
    """The budgets and row limits are assigned in batching.py only, and providers never reach the embedder."""
    homes = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for target in targets:
                if isinstance(target, ast.Name) and target.id in POLICY:
                    homes.setdefault(target.id, []).append(path.relative_to(PACKAGE).as_posix())
    assert homes == {name: ["batching.py"] for name in POLICY}
    assert set(POLICY) <= set(batching.__all__) and "batches" in batching.__all__
    graph = import_graph()
    reached, todo = set(), [m for m in graph if m.startswith("edge_bge.providers")]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo.extend(graph[module])
    assert "edge_bge.batching" in reached and "edge_bge.embedder" not in reached


@pytest.mark.parametrize("budget", [64, 512, 8192, 1 << 20])
@pytest.mark.parametrize("max_length", [16, 512, 8192])
def test_profile_covers_every_batch(budget, max_length):
    profile = P.shape_profile(max_length, budget)
    rng = np.random.default_rng(budget + max_length)
    lengths = rng.integers(batching.MIN_TOKENS, max_length + 1, size=3000).tolist() + [batching.MIN_TOKENS] * 600
    # the batcher is held to the profile's rows, as the Embedder holds it (SessionProviders.max_rows)
    for index in batching.plan(lengths, max_batch_tokens=budget, max_batch_size=profile.max[0]):
        rows, longest = len(index), max(lengths[i] for i in index)
        assert profile.min[0] <= rows <= profile.max[0] and profile.min[1] <= longest <= profile.max[1]
    assert all(lo <= opt <= hi for lo, opt, hi in zip(profile.min, profile.opt, profile.max, strict=True))
    assert profile.opt[1] == min(max_length, tensorrt.OPT_TOKENS)
    # the box TensorRT reserves memory for stays within the stated bound, with any text up to max_length
    assert profile.max[0] * profile.max[1] <= max(tensorrt.PROFILE_TOKENS, budget, max_length)
    assert profile.max[1] == max_length


def test_m3_profile_is_bounded():
    """bge-m3 (8192 tokens) at the GPU budget: 16 rows of up to 8192 tokens, not 256 x 8192."""
    m3 = manifest(Kind.M3, Precision.FP16, inputs=XLMR_INPUTS, max_length=8192)
    profile = P.shape_profile(8192, GPU_MAX_BATCH_TOKENS)
    assert profile.max == (16, 8192) and profile.max[0] * profile.max[1] == tensorrt.PROFILE_TOKENS
    options = P.tensorrt_options(m3, max_batch_tokens=GPU_MAX_BATCH_TOKENS)
    assert options["trt_profile_max_shapes"] == "input_ids:16x8192,attention_mask:16x8192"
    assert tensorrt.profile_max(options) == (16, 8192)
    assert P.shape_profile(512, GPU_MAX_BATCH_TOKENS).max == (256, 512)  # a 512-token model keeps 256 rows
    assert P.shape_profile(8192, 1 << 20).max == (128, 8192)  # a caller's larger budget is a larger box
    assert tensorrt.profile_max({"trt_profile_max_shapes": "input_ids:8x512,attention_mask:4x512"}) == (4, 512)
    assert tensorrt.profile_max({}) is None and tensorrt.profile_max({"trt_profile_max_shapes": "x:8"}) is None


def test_batcher_never_leaves_the_profile(monkeypatch, machine, tmp_path, tiny_qdq):
    """On TensorRT the Embedder cuts no batch with more rows than the engine's profile holds."""
    monkeypatch.setattr(tensorrt, "PROFILE_TOKENS", 4 * 512)  # a box of 4 rows at the bundle's 512 tokens
    fake = FakeORT(monkeypatch, ALL)
    monkeypatch.setenv("EDGE_BGE_CACHE_DIR", str(tmp_path))
    model = Embedder(tiny_qdq, providers="tensorrt", max_batch_tokens=2048)  # 40 short texts fit one batch
    trt = fake.sessions[0].options(TRT)
    assert trt["trt_profile_max_shapes"].startswith("input_ids:4x512,") and model.providers.max_rows == 4
    model._device_run = None  # the fake session has no IO binding: its run() sees every batch
    model.embed(corpus_texts(40))
    shapes = fake.sessions[0].batches[1:]  # after the warm-up batch
    assert sum(rows for rows, _ in shapes) == 40 and max(rows for rows, _ in shapes) == 4
    assert Embedder(tiny_qdq, providers="cpu").providers.max_rows == batching.MAX_BATCH_ROWS


# ---- engine cache key ----------------------------------------------------------------------------


def test_cache_key_changes_with_each_part(monkeypatch, machine):
    profile = P.shape_profile(512, 8192)
    options = P.tensorrt_options(manifest(), max_batch_tokens=8192)

    def key(sha="a" * 64, prof=profile, opts=options):
        return P.engine_key(P.engine_key_parts(sha, profile=prof, options=opts))

    base = key()
    assert key() == base
    changed = {
        "model": key(sha="c" * 64),
        "profile": key(prof=P.shape_profile(512, 4096)),
        "max_length": key(prof=P.shape_profile(8192, 8192)),
        "fp16": key(opts={**options, "trt_fp16_enable": True}),
        "int8": key(opts={**options, "trt_int8_enable": True}),
        "builder": key(opts={**options, "trt_builder_optimization_level": 5}),
        "caller's profile": key(opts={**options, "trt_profile_max_shapes": "input_ids:8x512"}),
    }
    monkeypatch.setattr(ort, "__version__", "1.23.0")
    changed["onnxruntime"] = key()
    monkeypatch.setattr(ort, "__version__", "1.22.0")
    monkeypatch.setattr(M, "tensorrt_version", lambda: "10.12.0")
    changed["tensorrt"] = key()
    monkeypatch.setattr(M, "tensorrt_version", lambda: None)
    changed["tensorrt unknown"] = key()
    monkeypatch.setattr(M, "tensorrt_version", lambda: "10.9.0")
    monkeypatch.setattr(M, "gpu_name", lambda device_id=0: "NVIDIA Jetson AGX Orin")
    changed["gpu"] = key()
    monkeypatch.setattr(M, "gpu_name", lambda device_id=0: None)
    changed["gpu unknown"] = key()
    monkeypatch.setattr(M, "gpu_name", lambda device_id=0: "NVIDIA Test GPU")
    assert key() == base
    assert base not in changed.values() and len(set(changed.values())) == len(changed)
    # where things go and how they are spelled do not change the engine
    same = {**options, "trt_engine_cache_path": "/elsewhere", "trt_fp16_enable": "False", "device_id": 3}
    assert key(opts=same) == base


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGE_BGE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert P.default_cache_dir() == tmp_path / ".cache" / "edge-bge"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert P.default_cache_dir() == tmp_path / "xdg" / "edge-bge"
    monkeypatch.setenv("EDGE_BGE_CACHE_DIR", str(tmp_path / "mine"))
    assert P.default_cache_dir() == tmp_path / "mine"


def test_gpu_name(monkeypatch):
    calls = []

    def run(cmd, **kw):
        calls.append(cmd)
        return type("Done", (), {"stdout": "NVIDIA H100 80GB HBM3\n"})()

    M.gpu_name.cache_clear()
    monkeypatch.setattr(M.subprocess, "run", run)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    try:
        assert M.gpu_name(1) == "NVIDIA H100 80GB HBM3" and calls[-1][-1] == "1"
        assert M.gpu_name(0) == "NVIDIA H100 80GB HBM3" and calls[-1][-1] == "3"

        def absent(cmd, **kw):
            raise FileNotFoundError("nvidia-smi")

        M.gpu_name.cache_clear()
        monkeypatch.setattr(M.subprocess, "run", absent)
        assert M.gpu_name(0) is None
    finally:
        M.gpu_name.cache_clear()


def test_tensorrt_version(monkeypatch):
    class Lib:
        def __init__(self, value):
            self.getInferLibVersion = type("Fn", (), {"restype": None, "__call__": lambda s: value})()

    def missing(*a, **k):
        raise OSError("not found")

    def no_dist(name):
        raise M.importlib.metadata.PackageNotFoundError(name)

    M.tensorrt_version.cache_clear()
    try:
        monkeypatch.setattr(M.ctypes, "CDLL", missing)
        monkeypatch.setattr(M.importlib.metadata, "version", no_dist)
        assert M.tensorrt_version() is None
        M.tensorrt_version.cache_clear()
        monkeypatch.setattr(M.importlib.metadata, "version", lambda d: "10.9.0.34" if d == "tensorrt" else no_dist(d))
        assert M.tensorrt_version() == "10.9.0.34"
        for raw, want in ((100900, "10.9.0"), (101300, "10.13.0"), (8601, "8.6.1")):
            M.tensorrt_version.cache_clear()
            monkeypatch.setattr(M.ctypes, "CDLL", lambda name, raw=raw: Lib(raw))
            assert M.tensorrt_version() == want
    finally:
        M.tensorrt_version.cache_clear()


def test_environment_without_gpu():
    env = P.environment()
    assert env["onnxruntime"] == ort.__version__ and CPU in env["providers_available"]
    assert set(env) >= {"tensorrt", "gpu", "cache_dir", "onnxruntime_distributions"}


# ---- IO binding --------------------------------------------------------------------------------


def test_io_binding_run_matches_session_run(tiny_fp32):
    model = Embedder(tiny_fp32, providers="cpu")
    texts = corpus_texts(40)
    want = model.embed(texts)
    batch = next(model._batches(model.tokenizer.encode(texts)))
    run = P.bound_run(model.session, device_type="cpu")
    (got,) = run(["embedding"], batch.feeds)
    np.testing.assert_allclose(got, model.session.run(["embedding"], batch.feeds)[0], rtol=0, atol=1e-6)
    model._device_run = run  # the Embedder's GPU run path, exercised on the CPU
    np.testing.assert_allclose(model.embed(texts), want, rtol=0, atol=1e-6)


# ---- int8 for TensorRT: the QDQ graph on the CPU provider ------------------------------------------


@pytest.fixture(scope="session")
def tiny_qdq(bundles, tiny_bge_dir):
    return bundles.get(tiny_bge_dir, "int8", "tensorrt")


def test_qdq_int8_parity_on_cpu(tiny_qdq, tiny_fp32):
    texts = corpus_texts(300)
    qdq = Embedder(tiny_qdq, providers="cpu")
    assert (
        qdq.manifest.target is Target.TENSORRT and qdq.manifest.optimization["precision"]["scheme"] == "static-qdq-int8"
    )
    got, want = qdq.embed(texts), Embedder(tiny_fp32, providers="cpu").embed(texts)
    cos = np.sum(got * want, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cos.min() >= 0.99, cos.min()


def test_qdq_bundle_gets_int8_tensorrt(monkeypatch, machine, tmp_path, tiny_qdq):
    fake = FakeORT(monkeypatch, ALL)
    monkeypatch.setenv("EDGE_BGE_CACHE_DIR", str(tmp_path))
    model = Embedder(tiny_qdq, providers="tensorrt")
    trt = fake.sessions[0].options(TRT)
    assert trt["trt_int8_enable"] is True and trt["trt_fp16_enable"] is False
    assert trt["trt_profile_max_shapes"] == "input_ids:256x512,attention_mask:256x512,token_type_ids:256x512"
    assert trt["trt_engine_cache_path"].startswith(str(tmp_path))
    assert model.providers == [TRT, CUDA, CPU] and model.providers.io_binding and model._device_run is not None


# ---- engines ahead of time -----------------------------------------------------------------------


def test_build_engine_needs_tensorrt(tiny_qdq, tmp_path):
    with pytest.raises(ProviderError, match="TensorrtExecutionProvider not available"):
        P.build_engine(tiny_qdq, cache_dir=tmp_path)


def test_build_engine_needs_plain_graph(tiny_fp32, tmp_path):
    with pytest.raises(ProviderError, match="--target tensorrt"):
        P.build_engine(tiny_fp32, cache_dir=tmp_path)


def test_build_engine_then_load_it(monkeypatch, machine, tmp_path, tiny_qdq):
    fake = FakeORT(monkeypatch, ALL)
    built = P.build_engine(tiny_qdq, cache_dir=tmp_path)
    trt = fake.sessions[0].options(TRT)
    assert trt["trt_dump_ep_context_model"] is True and trt["trt_ep_context_embed_mode"] == 0
    assert trt["trt_ep_context_file_path"] == str(built.context_model) and trt["trt_engine_cache_path"] == "prebuilt"
    assert fake.sessions[0].chain == [(TRT, trt)]  # TensorRT alone, no CUDA behind it
    assert config_entry(fake.sessions[0].sess_options, "session.disable_cpu_ep_fallback") == "1"
    assert not built.reused and built.context_model.is_file() and built.path.parent == tmp_path / "tensorrt"
    record = json.loads((built.path / "edge_bge_engine.json").read_text())
    assert record["key"] == built.key and record["parts"]["gpu"] == "NVIDIA Test GPU"
    assert record["max_batch_tokens"] == GPU_MAX_BATCH_TOKENS

    again = P.build_engine(tiny_qdq, cache_dir=tmp_path)
    assert again.reused and again.key == built.key and len(fake.sessions) == 1

    # an Embedder with the same budget and options loads the EP-context model instead of model.onnx
    monkeypatch.setenv("EDGE_BGE_CACHE_DIR", str(tmp_path))
    model = Embedder(tiny_qdq, providers="tensorrt")
    assert fake.sessions[-1].path == str(built.context_model) == model.providers.model
    assert fake.sessions[-1].options(TRT)["trt_engine_cache_path"] == str(built.path / "engine")
    # another budget is another profile, so another engine: model.onnx, built and cached on first use
    Embedder(tiny_qdq, providers="tensorrt", max_batch_tokens=2048)
    assert fake.sessions[-1].path.endswith("model.onnx")
    # a damaged EP-context model is not loaded
    built.context_model.write_bytes(b"tampered")
    Embedder(tiny_qdq, providers="tensorrt")
    assert fake.sessions[-1].path.endswith("model.onnx")


def test_build_engine_with_an_engine_in_the_runtime_cache(monkeypatch, machine, tmp_path, tiny_qdq):
    """An Embedder's engine in the cache does not stop build-engine: it builds into a folder of its own."""
    fake = FakeORT(monkeypatch, ALL)
    monkeypatch.setenv("EDGE_BGE_CACHE_DIR", str(tmp_path))
    model = Embedder(tiny_qdq, providers="tensorrt")
    runtime_cache = Path(model.providers.options[TRT]["trt_engine_cache_path"])
    (runtime_cache / "TRTKernel_graph_main_0.engine").write_bytes(b"the Embedder's engine")
    stale = runtime_cache.parent / "prebuilt" / "old.engine"
    stale.parent.mkdir()
    stale.write_bytes(b"an interrupted build's engine")
    built = P.build_engine(tiny_qdq, cache_dir=tmp_path)
    assert built.context_model.is_file() and not built.reused and not stale.exists()
    assert (built.path / "prebuilt" / "TRTKernel_graph_main_0.engine").is_file()
    assert json.loads((built.path / "edge_bge_engine.json").read_text())["engine_dir"] == "prebuilt"
    Embedder(tiny_qdq, providers="tensorrt")
    assert fake.sessions[-1].path == str(built.context_model)


def test_build_engine_refuses_a_graph_tensorrt_takes_in_part(monkeypatch, machine, tmp_path, tiny_qdq):
    # nodes TensorRT leaves: ONNX Runtime refuses the session, as CPU fallback is off
    FakeORT(monkeypatch, [TRT, CPU], cpu_ops={"MatMulIntegerToFloat"})
    with pytest.raises(ProviderError, match="whole graph.*fallback to CPU EP has been explicitly disabled"):
        P.build_engine(tiny_qdq, cache_dir=tmp_path)
    # an EP-context model over one partition: its outputs are not the bundle's
    fake = FakeORT(monkeypatch, ALL, context="part")
    with pytest.raises(ProviderError, match=r"covers part of the graph only.*outputs \['/encoder/layer.0"):
        P.build_engine(tiny_qdq, cache_dir=tmp_path)
    assert not list(tmp_path.glob("tensorrt/*/model_ctx.onnx")) and not list(tmp_path.glob("tensorrt/*/*.json"))
    monkeypatch.setenv("EDGE_BGE_CACHE_DIR", str(tmp_path))
    Embedder(tiny_qdq, providers="tensorrt")
    assert fake.sessions[-1].path.endswith("model.onnx")  # nothing half-built is loaded


def test_context_io_reads_onnx_without_onnx(tiny_qdq, tmp_path):
    import onnx

    from edge_bge.providers.build import context_io

    path = tiny_qdq / MODEL_NAME
    model = onnx.load(str(path), load_external_data=False)
    inputs, outputs, ops = context_io(path)
    assert inputs == [i.name for i in model.graph.input] and outputs == [o.name for o in model.graph.output]
    assert ops == [n.op_type for n in model.graph.node]
    write_context_model(tmp_path / "ctx.onnx", "all")
    assert context_io(tmp_path / "ctx.onnx") == (list(BERT_INPUTS), ["embedding"], ["EPContext"])
    (tmp_path / "bad.onnx").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated"):
        context_io(tmp_path / "bad.onnx")


# ---- placement: where the nodes ran ----------------------------------------------------------------


@pytest.mark.parametrize("graph", ["cpu", "tensorrt"])
def test_placement_from_onnxruntime_profile(graph, tiny_fp32, tiny_qdq, tmp_path):
    """Real ONNX Runtime profiling on the CPU: every node of the optimized graph is in the placement."""
    import onnx

    bundle = {"cpu": tiny_fp32, "tensorrt": tiny_qdq}[graph]
    opened = P.SessionRequest(bundle / MODEL_NAME, providers="cpu", placement=True).open()
    found = opened.providers.placement
    assert found is not None and found.nodes == {CPU: 1.0} and found.time == {CPU: 1.0}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(bundle / MODEL_NAME), options, providers=[CPU])
    nodes = onnx.load(str(tmp_path / "optimized.onnx")).graph.node
    assert sorted(r.op for r in found.runs) == sorted(n.op_type for n in nodes)  # one run per node
    assert {n.name for n in nodes if n.name} <= {r.name for r in found.runs}
    shape_ops = {r.op for r in found.runs if r.shape_only}
    assert shape_ops <= {"Shape", "Gather", "Unsqueeze", "Concat", "Slice", "Squeeze", "Cast", "Reshape"}
    assert bool(shape_ops) is (graph == "tensorrt")  # the unfused graph computes shapes; the fused one does not
    assert {"MatMul", "Attention", "MatMulInteger", "DequantizeLinear"} & {r.op for r in found.compute}
    report = found.to_dict()
    assert report["nodes"] == {CPU: 1.0} and report["compute_nodes"] == len(found.compute) > 0
    assert report["shape_nodes"] == len(found.runs) - len(found.compute)
    assert f"{len(found.compute)} compute nodes: CPUExecutionProvider 100.0%" in found.describe()
    assert P.SessionRequest(bundle / MODEL_NAME, providers="cpu").open().providers.placement is None


AZURE = "AzureExecutionProvider"  # in every ONNX Runtime build; it runs no node of these graphs


def test_strict_refuses_nodes_that_fell_to_the_cpu(monkeypatch, tiny_fp32):
    """Real ONNX Runtime: a provider on a device that runs none of the nodes (Azure's, made a device
    provider here) registers fine, and only the profile shows every node on the CPU."""
    if AZURE not in ort.get_available_providers():
        pytest.fail(f"this ONNX Runtime build has no {AZURE}")
    device = registry.Provider(AZURE, io_device="cpu")
    monkeypatch.setattr(registry, "PROVIDERS", (*registry.PROVIDERS, device))
    with pytest.raises(
        ProviderError,
        match=r"AzureExecutionProvider runs 0\.0% of the graph's \d+ compute nodes; "
        r"\d+ fell to CPUExecutionProvider: .*\(MatMul\)",
    ):
        Embedder(tiny_fp32, providers=[AZURE, CPU])
    model = Embedder(tiny_fp32, providers=[AZURE, CPU], strict=False)
    assert model.providers == [AZURE, CPU] and model.providers.placement.nodes == {CPU: 1.0}
    np.testing.assert_allclose(model.embed(["a cat"]), Embedder(tiny_fp32, providers="cpu").embed(["a cat"]), atol=1e-6)


def test_cpu_target_int8_on_cuda_is_refused_in_strict_mode(monkeypatch, machine, tmp_path, caplog):
    cpu_int8 = manifest(precision=Precision.INT8, target=Target.CPU, scheme="dynamic-int8")
    FakeORT(monkeypatch, ALL, cpu_ops={"MatMulIntegerToFloat"})
    with pytest.raises(
        ProviderError,
        match=r"CUDAExecutionProvider runs 66\.7% of the graph's 6 compute nodes; "
        r"2 fell to CPUExecutionProvider: /layer.1/MatMul \(MatMulIntegerToFloat\), /layer.3/MatMul"
        r".*export with --target tensorrt",
    ):
        P.open_session("m.onnx", manifest=cpu_int8, providers="cuda", max_batch_tokens=8192, cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING, logger="edge_bge"):
        s = P.open_session("m.onnx", manifest=cpu_int8, max_batch_tokens=8192, cache_dir=tmp_path)  # auto: warns
    assert s.providers[0] == TRT and "2 fell to CPUExecutionProvider" in caplog.text
    assert s.providers.placement.nodes == {TRT: 4 / 6, CPU: 2 / 6}
    FakeORT(monkeypatch, ALL)  # every compute node on the GPU; Shape and Concat on the CPU do not count
    s = P.open_session("m.onnx", manifest=manifest(), providers="cuda", max_batch_tokens=8192, cache_dir=tmp_path)
    assert s.providers.placement.nodes == {CUDA: 1.0} and s.providers.placement.time[CPU] == pytest.approx(2 / 8)
    assert P.shortfall(s.providers.placement, s.providers, P.GPU_PROVIDERS) == []


def test_fp16_option_never_reaches_cuda(monkeypatch, machine, tmp_path, caplog):
    fake = FakeORT(monkeypatch, ALL)  # it rejects unknown options as ONNX Runtime does
    with caplog.at_level(logging.WARNING, logger="edge_bge"):
        P.open_session("m.onnx", manifest=manifest(), providers=[(CUDA, {"fp16": True})], max_batch_tokens=8192)
    assert fake.sessions[-1].options(CUDA) == {"device_id": 0, "arena_extend_strategy": "kSameAsRequested"}
    assert "CUDAExecutionProvider ignores edge-bge's 'fp16' option" in caplog.text
    chain = [(TRT, {"fp16": True}), (CUDA, {"fp16": True})]
    P.open_session("m.onnx", manifest=manifest(), providers=chain, max_batch_tokens=8192, cache_dir=tmp_path)
    assert fake.sessions[-1].options(TRT)["trt_fp16_enable"] is True and "fp16" not in fake.sessions[-1].options(CUDA)


def test_gpu_sessions_preload_cuda_libraries(monkeypatch, machine, tmp_path, caplog, capsys):
    calls = []

    def preload(**kw):
        calls.append(kw)
        print("Failed to load /site-packages/nvidia/cudnn/lib/libcudnn.so.9")

    FakeORT(monkeypatch, ALL)
    monkeypatch.setattr(ort, "preload_dlls", preload, raising=False)
    M.preload_gpu_libraries.cache_clear()
    try:
        with caplog.at_level(logging.DEBUG, logger="edge_bge"):
            P.open_session("m.onnx", manifest=manifest(), providers="cpu")
            assert calls == []  # a CPU session needs no CUDA
            for _ in range(2):
                P.open_session("m.onnx", manifest=manifest(), providers="cuda", cache_dir=tmp_path)
        assert calls == [{}] and "libcudnn.so.9" in caplog.text and "libcudnn" not in capsys.readouterr().out
        M.preload_gpu_libraries.cache_clear()
        monkeypatch.delattr(ort, "preload_dlls")  # ONNX Runtime before 1.21
        assert M.preload_gpu_libraries() is False
    finally:
        M.preload_gpu_libraries.cache_clear()


def test_info_providers_check(monkeypatch, machine, tmp_path, tiny_fp32, capsys):
    from edge_bge.cli import main

    assert main(["info", str(tiny_fp32), "--providers-check", "--providers", "cpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["providers"]
    assert report["chosen"] == [CPU] and report["placement"]["nodes"] == {CPU: 1.0}
    assert report["placement"]["compute_nodes"] > 0 and report["placement"]["cpu_nodes"] == []
    FakeORT(monkeypatch, ALL, cpu_ops={"MatMulIntegerToFloat"})  # a CPU-target int8 graph on CUDA
    monkeypatch.setenv("EDGE_BGE_CACHE_DIR", str(tmp_path))
    assert main(["info", str(tiny_fp32), "--providers-check", "--providers", "cuda"]) == 1
    out = capsys.readouterr().out
    assert "placement  6 compute nodes: CUDAExecutionProvider 66.7%, CPUExecutionProvider 33.3%" in out
    assert "on CPUExecutionProvider: /layer.1/MatMul (MatMulIntegerToFloat)" in out


def test_a_gpu_listed_but_not_loaded_leaves_the_cpu_budget(tiny_fp32, monkeypatch):
    # onnxruntime-gpu lists TensorRT and CUDA on hosts without a GPU: "auto" then falls back to the CPU,
    # which must batch with the CPU's budget, not the GPU's 16x larger one
    monkeypatch.setattr(P, "wants_gpu", lambda providers: True)
    model = Embedder(tiny_fp32)
    assert not model.on_gpu and model.max_batch_tokens == batching.DEFAULT_MAX_BATCH_TOKENS
    assert Embedder(tiny_fp32, max_batch_tokens=GPU_MAX_BATCH_TOKENS).max_batch_tokens == GPU_MAX_BATCH_TOKENS

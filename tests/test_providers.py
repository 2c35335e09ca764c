"""Providers: chains, TensorRT / CUDA options, engine-cache keys, strict mode, IO binding, build_engine.

CI has no GPU: ONNX Runtime's GPU side is replaced by a fake InferenceSession where a test needs one.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

from edge_bge import Embedder, ProviderError, batching
from edge_bge import providers as P
from edge_bge.embedder import GPU_MAX_BATCH_TOKENS
from edge_bge.manifest import Kind, Manifest, Pooling, Precision, Target
from edge_bge.providers import resolve

from .conftest import corpus_texts

TRT, CUDA, CPU = P.TRT, P.CUDA, P.CPU
ALL = [TRT, CUDA, CPU]
BERT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
XLMR_INPUTS = ("input_ids", "attention_mask")


def manifest(
    kind: Kind = Kind.EMBEDDING,
    precision: Precision = Precision.FP32,
    target: Target = Target.PLAIN,
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
    monkeypatch.setattr(P, "tensorrt_version", lambda: "10.9.0")
    monkeypatch.setattr(P, "gpu_name", lambda device_id=0: "NVIDIA Test GPU")
    monkeypatch.setattr(ort, "__version__", "1.22.0")


class FakeORT:
    """ONNX Runtime with GPU providers: ``loads`` is what a session really gets; ``stderr`` what the C++
    logger prints while creating it; ``raises`` an exception from the constructor."""

    def __init__(self, monkeypatch, available, *, loads=None, stderr=b"", raises=None):
        self.available, self.loads, self.stderr, self.raises = list(available), loads, stderr, raises
        self.sessions: list[FakeSession] = []
        monkeypatch.setattr(ort, "get_available_providers", lambda: list(self.available))
        monkeypatch.setattr(ort, "InferenceSession", self.session)

    def session(self, path, sess_options=None, providers=None, **kw):
        if self.stderr:
            os.write(2, self.stderr)
        if self.raises is not None and TRT in [p if isinstance(p, str) else p[0] for p in providers]:
            raise self.raises
        s = FakeSession(path, providers, kw, self.loads)
        self.sessions.append(s)
        return s


class FakeSession:
    def __init__(self, path, providers, kw, loads):
        self.path, self.kw, self.fallback = path, kw, True
        self.chain = [(p, {}) if isinstance(p, str) else p for p in providers]
        names = [n for n, _ in self.chain]
        self.got = [n for n in names if loads is None or n in loads]
        if CPU not in self.got:
            self.got.append(CPU)
        for name, options in self.chain:  # what the TensorRT provider writes when asked to dump an EP-context model
            if name == TRT and options.get("trt_dump_ep_context_model"):
                Path(options["trt_ep_context_file_path"]).write_bytes(b"fake EP-context model")

    def options(self, name):
        return dict(self.chain)[name]

    def get_providers(self):
        return list(self.got)

    def disable_fallback(self):
        self.fallback = False

    def run(self, outputs, feeds):
        return [np.zeros((len(next(iter(feeds.values()))), 32), np.float32) for _ in outputs]

    def get_inputs(self):  # the tiny BERT bundles' graph, as Manifest.check_session reads it
        names = ("input_ids", "attention_mask", "token_type_ids")
        return [SimpleNamespace(name=n, type="tensor(int64)", shape=["batch", "sequence"]) for n in names]

    def get_outputs(self):
        return [SimpleNamespace(name="embedding", type="tensor(float)", shape=["batch", 32])]


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
    monkeypatch.setattr(P, "_ort_distributions", lambda: {"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.22.0"})
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
        manifest(precision=Precision.INT8, target=Target.CPU_FUSED, scheme="dynamic-int8"),
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
    parts = P.engine_key_parts(m.files["model.onnx"], profile=P.shape_profile(m.max_length, 4096), options=trt)
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


def test_profile_rows_match_batching():
    assert inspect.signature(batching.plan).parameters["max_batch_size"].default == P.MAX_BATCH_ROWS


@pytest.mark.parametrize("budget", [64, 512, 8192, 1 << 20])
@pytest.mark.parametrize("max_length", [16, 512, 8192])
def test_profile_covers_every_batch(budget, max_length):
    profile = P.shape_profile(max_length, budget)
    rng = np.random.default_rng(budget + max_length)
    lengths = rng.integers(P.MIN_TOKENS, max_length + 1, size=3000).tolist() + [P.MIN_TOKENS] * 600
    for index in batching.plan(lengths, max_batch_tokens=budget):
        rows, longest = len(index), max(lengths[i] for i in index)
        assert profile.min[0] <= rows <= profile.max[0] and profile.min[1] <= longest <= profile.max[1]
    assert all(lo <= opt <= hi for lo, opt, hi in zip(profile.min, profile.opt, profile.max, strict=True))
    assert profile.opt[1] == min(max_length, P.OPT_TOKENS)


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
    monkeypatch.setattr(P, "tensorrt_version", lambda: "10.12.0")
    changed["tensorrt"] = key()
    monkeypatch.setattr(P, "tensorrt_version", lambda: None)
    changed["tensorrt unknown"] = key()
    monkeypatch.setattr(P, "tensorrt_version", lambda: "10.9.0")
    monkeypatch.setattr(P, "gpu_name", lambda device_id=0: "NVIDIA Jetson AGX Orin")
    changed["gpu"] = key()
    monkeypatch.setattr(P, "gpu_name", lambda device_id=0: None)
    changed["gpu unknown"] = key()
    monkeypatch.setattr(P, "gpu_name", lambda device_id=0: "NVIDIA Test GPU")
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

    P.gpu_name.cache_clear()
    monkeypatch.setattr(P.subprocess, "run", run)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    try:
        assert P.gpu_name(1) == "NVIDIA H100 80GB HBM3" and calls[-1][-1] == "1"
        assert P.gpu_name(0) == "NVIDIA H100 80GB HBM3" and calls[-1][-1] == "3"

        def absent(cmd, **kw):
            raise FileNotFoundError("nvidia-smi")

        P.gpu_name.cache_clear()
        monkeypatch.setattr(P.subprocess, "run", absent)
        assert P.gpu_name(0) is None
    finally:
        P.gpu_name.cache_clear()


def test_tensorrt_version(monkeypatch):
    class Lib:
        def __init__(self, value):
            self.getInferLibVersion = type("Fn", (), {"restype": None, "__call__": lambda s: value})()

    def missing(*a, **k):
        raise OSError("not found")

    def no_dist(name):
        raise P.importlib.metadata.PackageNotFoundError(name)

    P.tensorrt_version.cache_clear()
    try:
        monkeypatch.setattr(P.ctypes, "CDLL", missing)
        monkeypatch.setattr(P.importlib.metadata, "version", no_dist)
        assert P.tensorrt_version() is None
        P.tensorrt_version.cache_clear()
        monkeypatch.setattr(P.importlib.metadata, "version", lambda d: "10.9.0.34" if d == "tensorrt" else no_dist(d))
        assert P.tensorrt_version() == "10.9.0.34"
        for raw, want in ((100900, "10.9.0"), (101300, "10.13.0"), (8601, "8.6.1")):
            P.tensorrt_version.cache_clear()
            monkeypatch.setattr(P.ctypes, "CDLL", lambda name, raw=raw: Lib(raw))
            assert P.tensorrt_version() == want
    finally:
        P.tensorrt_version.cache_clear()


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
    assert qdq.manifest.target is Target.PLAIN and qdq.manifest.optimization["precision"]["scheme"] == "static-qdq-int8"
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
    assert trt["trt_ep_context_file_path"] == str(built.context_model) and trt["trt_engine_cache_path"] == "engine"
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

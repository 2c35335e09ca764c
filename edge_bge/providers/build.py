"""TensorRT engines built ahead of time (``edge-bge build-engine BUNDLE``): ONNX Runtime's EP-context model.

It opens a session, so it sits above ``session`` (which plans TensorRT through the registry). The
build runs on TensorRT alone, with ONNX Runtime's CPU fallback switched off, into an empty engine
folder of its own: ONNX Runtime writes an EP-context model only for an engine it builds, not for one
it finds in a cache, and only a model TensorRT takes whole can be loaded as one engine.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..batching import GPU_MAX_BATCH_TOKENS
from ..bundle import Bundle, proto_fields
from ..errors import ModelFilesError, ProviderError
from ..manifest import Target, sha256_file
from . import tensorrt
from .registry import TRT
from .session import SessionRequest
from .spec import PlanContext

__all__ = ["EngineBuild", "build_engine"]


@dataclass(frozen=True)
class EngineBuild:
    """A pre-built TensorRT engine: its directory, EP-context model, key and what the key hashes."""

    path: Path
    context_model: Path
    key: str
    parts: dict[str, Any]
    seconds: float  # the build, or 0.0 when an engine of this key was already there
    reused: bool


def build_engine(
    bundle: str | os.PathLike[str],
    *,
    max_batch_tokens: int | None = None,
    fp16: bool = False,
    device_id: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    force: bool = False,
    threads: int | None = None,
) -> EngineBuild:
    """Build the TensorRT engine of a bundle ahead of time, for ``edge-bge build-engine BUNDLE``.

    Run it on the edge node (or one with the same GPU, TensorRT and ONNX Runtime): an engine only
    runs where it was built. It writes ONNX Runtime's EP-context model (``model_ctx.onnx``, pointing at
    the serialized engine beside it) into the engine cache under ``cache_dir`` (default
    ``default_cache_dir()``, or $EDGE_BGE_CACHE_DIR), keyed like the runtime's cache. An ``Embedder``
    opened with the same ``max_batch_tokens`` (default: the Embedder's) and TensorRT options then loads
    it directly: no ONNX parsing, no TensorRT build on a cold start. Needs a bundle exported with
    ``--target tensorrt``. ``force`` rebuilds an existing engine. ProviderError when TensorRT is not
    usable here, when TensorRT cannot take every node of the graph, or when the EP-context model's
    inputs and outputs are not the bundle's; the result says where the engine is and how long the
    build took (seconds).
    """
    b = Bundle(bundle)
    if b.manifest.target is not Target.TENSORRT:
        raise ProviderError(
            f"{bundle} is a {b.manifest.target.value!r} graph; TensorRT engines are built from bundles "
            "exported with --target tensorrt (the plain graph)"
        )
    budget = max_batch_tokens or GPU_MAX_BATCH_TOKENS
    trt: dict[str, Any] = {"device_id": device_id, "fp16": fp16}
    context = PlanContext(b.manifest, budget, Path(cache_dir) if cache_dir else None, device_id)
    planned = tensorrt.plan(trt, context)
    engine = planned.cache
    if not isinstance(engine, tensorrt.Engine):  # cannot happen: no cache path of the caller's
        raise ProviderError("no engine cache directory")
    if not force and engine.prebuilt() is not None:
        return EngineBuild(engine.dir, engine.context_model, engine.key, engine.parts, 0.0, True)
    (engine.dir / tensorrt.ENGINE_RECORD).unlink(missing_ok=True)
    engine.context_model.unlink(missing_ok=True)
    folder = engine.dir / tensorrt.PREBUILT_DIR  # empty: ONNX Runtime must build, not load a cached engine
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    dump = {
        "trt_dump_ep_context_model": True,
        "trt_ep_context_file_path": str(engine.context_model),
        "trt_ep_context_embed_mode": 0,  # the engine stays a file beside the model, not a 2 GB-limited attribute
        "trt_engine_cache_path": tensorrt.PREBUILT_DIR,  # relative to the EP-context model, as ONNX Runtime requires
    }
    start = time.perf_counter()
    request = SessionRequest(
        b.model_path,
        manifest=b.manifest,
        providers=[(TRT, dict(trt))],  # TensorRT alone: no CUDA behind it to take what it leaves
        threads=threads,
        max_batch_tokens=budget,
        cache_dir=cache_dir,
        build={TRT: dump},
        placement=False,
        config={"session.disable_cpu_ep_fallback": "1"},  # nor the CPU: a node TensorRT leaves is an error
    )
    try:
        opened = request.open()
    except ProviderError as e:
        raise ProviderError(f"TensorRT could not build an engine for the whole graph of {bundle}: {e}") from e
    # one small batch: an engine ONNX Runtime builds lazily is built (and dumped) now
    feeds = {name: np.ones((1, min(8, b.manifest.max_length)), dtype=np.int64) for name in b.manifest.inputs}
    if "token_type_ids" in feeds:
        feeds["token_type_ids"][:] = 0
    opened.session.run([b.manifest.outputs[0]], feeds)
    seconds = time.perf_counter() - start
    del opened
    if not engine.context_model.is_file():
        raise ProviderError(
            f"ONNX Runtime wrote no EP-context model at {engine.context_model} (its TensorRT provider writes "
            "one from version 1.18, when it builds the engine)"
        )
    try:
        inputs, outputs, ops = context_io(engine.context_model)
    except ValueError as e:
        engine.context_model.unlink()
        raise ProviderError(f"cannot read the EP-context model {engine.context_model}: {e}") from e
    if set(inputs) != set(b.manifest.inputs) or set(outputs) != set(b.manifest.outputs) or set(ops) != {"EPContext"}:
        engine.context_model.unlink()
        raise ProviderError(
            f"the EP-context model covers part of the graph only: inputs {inputs}, outputs {outputs}, nodes "
            f"{sorted(set(ops))}; the bundle's are inputs {list(b.manifest.inputs)}, outputs "
            f"{list(b.manifest.outputs)}, one EPContext node"
        )
    record = {
        "key": engine.key,
        "parts": engine.parts,
        "bundle": str(Path(bundle).resolve()),
        "name": b.manifest.name,
        "max_batch_tokens": budget,
        "options": {k: tensorrt.canon(v) for k, v in planned.options.items()},
        "build_seconds": round(seconds, 3),
        "context_sha256": sha256_file(engine.context_model),
        "engine_dir": tensorrt.PREBUILT_DIR,
    }
    (engine.dir / tensorrt.ENGINE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return EngineBuild(engine.dir, engine.context_model, engine.key, engine.parts, seconds, False)


def context_io(path: Path) -> tuple[list[str], list[str], list[str]]:
    """An ONNX model's graph inputs, outputs and node op types, read from its protobuf without ``onnx``.

    ValueError when the file is not a readable ModelProto."""

    def text(message: memoryview, number: int) -> str:
        return next((bytes(v).decode("utf-8") for f, v in proto_fields(message) if f == number and v is not None), "")

    try:
        graph = [v for f, v in proto_fields(memoryview(path.read_bytes())) if f == 7]  # ModelProto.graph
        if len(graph) != 1 or graph[0] is None:
            raise ValueError("no graph")
        inputs, outputs, ops = [], [], []
        for number, value in proto_fields(graph[0]):
            if value is None:
                continue
            if number in (11, 12):  # GraphProto.input / output: ValueInfoProto, name = 1
                (inputs if number == 11 else outputs).append(text(value, 1))
            elif number == 1:  # GraphProto.node: NodeProto, op_type = 4
                ops.append(text(value, 4))
    except ModelFilesError as e:  # the bundle's protobuf reader: truncated or not ONNX
        raise ValueError(str(e)) from None
    return inputs, outputs, ops

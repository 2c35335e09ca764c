"""Execution providers: which ones to ask ONNX Runtime for, with which options, and whether it gave them.

This is the only module that knows execution-provider names and options.

- ``resolve``: "auto" / "cpu" / "cuda" / "tensorrt" / an ONNX Runtime list -> a provider chain.
- ``tensorrt_options``, ``cuda_options``: what edge-bge passes; options the caller gives in an
  ONNX Runtime list (``[("TensorrtExecutionProvider", {...}), ...]``) override them.
- ``shape_profile``, ``engine_key_parts``, ``engine_key``: TensorRT's shape profile and the key of
  its engine cache, so that a new model, ONNX Runtime, TensorRT, GPU or profile never loads a stale engine.
- ``open_session``: the session, the providers it really got, and its run function (IO binding on GPUs).
- ``build_engine``: a TensorRT engine built ahead of time (ONNX Runtime's EP-context model).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from .errors import ProviderError
from .manifest import Manifest, Precision, Target, sha256_file

__all__ = [
    "ALIASES",
    "AUTO_ORDER",
    "EngineBuild",
    "Session",
    "SessionProviders",
    "ShapeProfile",
    "build_engine",
    "bound_run",
    "cpu_budget",
    "cuda_options",
    "default_cache_dir",
    "default_threads",
    "engine_key",
    "engine_key_parts",
    "environment",
    "gpu_name",
    "make_session",
    "open_session",
    "resolve",
    "shape_profile",
    "tensorrt_options",
    "tensorrt_version",
]

log = logging.getLogger("edge_bge")

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
ALIASES = {"cpu": CPU, "cuda": CUDA, "tensorrt": TRT}
AUTO_ORDER = (TRT, CUDA, CPU)
GPU_PROVIDERS = (TRT, CUDA)

# Rows per batch never exceed batching.plan's max_batch_size (a test checks they agree).
MAX_BATCH_ROWS = 256
# The shortest tokenized text: [CLS] [SEP] (BERT) or <s> </s> (XLM-R).
MIN_TOKENS = 2
# TensorRT tunes its kernels for the opt shape: batches of sentence-to-paragraph texts.
OPT_TOKENS = 128
CONTEXT_MODEL = "model_ctx.onnx"  # the EP-context model build_engine writes
ENGINE_RECORD = "edge_bge_engine.json"  # what it was built from, beside it

ProviderSpec = str | tuple[str, dict[str, Any]]
RunFn = Callable[[Sequence[str], Mapping[str, np.ndarray]], list[np.ndarray]]


def default_threads() -> int:
    """ONNX Runtime's intra-op threads when none are asked for: ``cpu_budget()``'s count."""
    return cpu_budget()[0]


def cpu_budget(*, root: str | os.PathLike[str] = "/", affinity: int | None = None) -> tuple[int, str]:
    """The CPUs this process can use, and where that number comes from.

    The smaller of the affinity mask (taskset, cgroup cpusets) and the cgroup CPU quota (``docker run
    --cpus``, Kubernetes CPU limits), rounded down, at least 1. The source is "affinity", "cpu count"
    (no affinity mask on this system), "cgroup v1 quota" or "cgroup v2 quota". ``root``: where
    /proc/self/cgroup and /sys/fs/cgroup are found (tests point it at fake files); ``affinity``: the
    mask's size (default: this process's). A cgroup file that cannot be read or parsed is logged
    (debug) and ignored.
    """
    if affinity is None:
        try:
            affinity, source = len(os.sched_getaffinity(0)), "affinity"
        except AttributeError:  # not Linux
            affinity, source = os.cpu_count() or 1, "cpu count"
    else:
        source = "affinity"
    count = max(1, affinity)
    quota = _cgroup_quota(Path(root))
    if quota is not None and int(quota[0]) < count:
        count, source = max(1, int(quota[0])), quota[1]
    return count, source


def _cgroup_quota(root: Path) -> tuple[float, str] | None:
    """The smallest CPU quota (in CPUs) on the process's cgroup path and its parents, and its version."""
    try:
        lines = (root / "proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError as e:
        log.debug("no cgroup CPU quota: cannot read /proc/self/cgroup (%s)", e)
        return None
    found: list[tuple[float, str]] = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "" and line.startswith("0::"):  # cgroup v2: one unified hierarchy
            quota = _walk(root / "sys/fs/cgroup", path, _v2_quota)
            version = "cgroup v2 quota"
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's hierarchy
            mounts = [root / "sys/fs/cgroup" / controllers, root / "sys/fs/cgroup/cpu"]
            mount = next((m for m in mounts if m.is_dir()), mounts[0])
            quota = _walk(mount, path, _v1_quota)
            version = "cgroup v1 quota"
        else:
            continue
        if quota is not None:
            found.append((quota, version))
    return min(found) if found else None


def _walk(mount: Path, path: str, read: Callable[[Path], float | None]) -> float | None:
    """The smallest quota from the cgroup's directory up to the mount (a parent's limit binds its children).

    Inside a container the mount is the container's own cgroup while /proc/self/cgroup may name the
    host's path: directories that do not exist are skipped."""
    parts = [p for p in path.strip().split("/") if p and p not in (".", "..")]
    quotas = []
    for depth in range(len(parts), -1, -1):
        directory = mount.joinpath(*parts[:depth])
        if directory.is_dir():
            quota = read(directory)
            if quota is not None:
                quotas.append(quota)
    return min(quotas) if quotas else None


def _read_numbers(path: Path) -> list[str] | None:
    try:
        return path.read_text(encoding="ascii").split()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise _Unreadable(f"cannot read {path}: {e}") from None


class _Unreadable(Exception):
    pass


def _v2_quota(directory: Path) -> float | None:
    """cpu.max: "<quota> <period>" in microseconds, or "max <period>" for no limit."""
    return _quota(directory / "cpu.max", lambda: _read_numbers(directory / "cpu.max"))


def _v1_quota(directory: Path) -> float | None:
    """cpu.cfs_quota_us (-1: no limit) over cpu.cfs_period_us."""
    quota = directory / "cpu.cfs_quota_us"

    def fields() -> list[str] | None:
        q = _read_numbers(quota)
        if q is None or q == ["-1"]:
            return q
        period = _read_numbers(directory / "cpu.cfs_period_us")
        if period is None:
            raise ValueError("cpu.cfs_period_us is missing")
        return q + period

    return _quota(quota, fields)


def _quota(path: Path, fields: Callable[[], list[str] | None]) -> float | None:
    try:
        values = fields()
        if values is None:
            return None
        if values[:1] in (["max"], ["-1"]):  # no limit
            return None
        if len(values) != 2:
            raise ValueError(f"expected a quota and a period, got {' '.join(values)!r}")
        quota, period = int(values[0]), int(values[1])
        if quota <= 0 or period <= 0:
            raise ValueError(f"quota {quota} and period {period} must be positive")
    except (_Unreadable, ValueError) as e:
        log.debug("ignoring the cgroup CPU quota in %s: %s", path, e)
        return None
    return quota / period


def resolve(requested: str | Sequence[ProviderSpec], available: Sequence[str]) -> list[ProviderSpec]:
    """Turn "auto" / "cpu" / "cuda" / "tensorrt" / an explicit ORT list into a provider chain.

    "auto" is TensorRT, CUDA, CPU among the available ones; "tensorrt" has CUDA behind it (when
    available) for any node TensorRT does not take, so that such nodes stay on the GPU.
    """
    if isinstance(requested, str):
        key = requested.lower()
        if key == "auto":
            return [p for p in AUTO_ORDER if p in available]
        if key in ALIASES:
            chain: list[ProviderSpec] = [ALIASES[key]]
            if key == "tensorrt" and CUDA in available:
                chain.append(CUDA)
        elif requested in AUTO_ORDER or requested.endswith("ExecutionProvider"):
            chain = [requested]
        else:
            raise ProviderError(
                f"unknown provider {requested!r}; use 'auto', {', '.join(map(repr, ALIASES))} or an ONNX Runtime list"
            )
    else:
        chain = list(requested)
    if not chain:
        raise ProviderError("the provider list is empty")
    return chain


def wants_gpu(requested: str | Sequence[ProviderSpec]) -> bool:
    """Whether the chain this request resolves to here starts with a GPU provider."""
    try:
        chain = resolve(requested, ort.get_available_providers())
    except ProviderError:
        return False
    return bool(chain) and _name(chain[0]) in (TRT, CUDA)


def _name(spec: ProviderSpec) -> str:
    return spec if isinstance(spec, str) else spec[0]


def _user_options(spec: ProviderSpec) -> dict[str, Any]:
    return {} if isinstance(spec, str) else dict(spec[1])


# ---- what this machine has ------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Root of edge-bge's caches: $EDGE_BGE_CACHE_DIR, else $XDG_CACHE_HOME/edge-bge, else ~/.cache/edge-bge."""
    if os.environ.get("EDGE_BGE_CACHE_DIR"):
        return Path(os.environ["EDGE_BGE_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "edge-bge"


def _decode_trt_version(v: int) -> str:
    # NV_TENSORRT_VERSION: major*1000+minor*100+patch up to TensorRT 8, major*10000+minor*100+patch from 10
    if v >= 100000:
        return f"{v // 10000}.{v // 100 % 100}.{v % 100}"
    return f"{v // 1000}.{v // 100 % 10}.{v % 100}"


@functools.cache
def tensorrt_version() -> str | None:
    """The TensorRT version ONNX Runtime will load (libnvinfer), else the installed wheel's; None if unknown."""
    names = ("nvinfer_10.dll", "nvinfer.dll") if os.name == "nt" else ("libnvinfer.so.10", "libnvinfer.so.8")
    for lib in names:
        try:
            fn = ctypes.CDLL(lib).getInferLibVersion
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int32
        return _decode_trt_version(int(fn()))
    for dist in ("tensorrt-cu12-libs", "tensorrt-cu13-libs", "tensorrt-cu11-libs", "tensorrt-libs", "tensorrt"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


@functools.cache
def gpu_name(device_id: int = 0) -> str | None:
    """The name of CUDA device ``device_id`` as nvidia-smi reports it; None without nvidia-smi or a GPU."""
    index = str(device_id)
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if visible and device_id < len(visible):
        index = visible[device_id]  # CUDA numbers the visible devices; nvidia-smi takes the index or UUID
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", index],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out else None


def _ort_distributions() -> dict[str, str]:
    found = {}
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def environment(device_id: int = 0) -> dict[str, Any]:
    """What a GPU session depends on: ONNX Runtime and its providers, TensorRT, the GPU, the cache."""
    return {
        "onnxruntime": ort.__version__,
        "onnxruntime_distributions": _ort_distributions(),
        "providers_available": ort.get_available_providers(),
        "tensorrt": tensorrt_version(),
        "gpu": gpu_name(device_id),
        "cache_dir": str(default_cache_dir()),
    }


def _absent_hint() -> str:
    dists = _ort_distributions()
    if len(dists) > 1:
        return (
            f"both {' and '.join(f'{k} {v}' for k, v in dists.items())} are installed: they share the "
            "'onnxruntime' package and the last one installed wins. Fix: pip uninstall -y onnxruntime "
            "onnxruntime-gpu && pip install onnxruntime-gpu"
        )
    return "for GPUs install edge-bge[gpu] and make sure only onnxruntime-gpu is installed, not also onnxruntime"


# ---- TensorRT: shape profile, options, engine cache -------------------------------------------


@dataclass(frozen=True)
class ShapeProfile:
    """TensorRT's min / opt / max (rows, tokens), the same for every graph input."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def options(self, inputs: Sequence[str]) -> dict[str, str]:
        def spec(shape: tuple[int, int]) -> str:
            return ",".join(f"{name}:{shape[0]}x{shape[1]}" for name in inputs)

        return {
            "trt_profile_min_shapes": spec(self.min),
            "trt_profile_opt_shapes": spec(self.opt),
            "trt_profile_max_shapes": spec(self.max),
        }


def shape_profile(max_length: int, max_batch_tokens: int) -> ShapeProfile:
    """The profile covering every batch the Embedder cuts: rows x padded tokens within the token budget,
    one text up to max_length. An input outside the profile fails on TensorRT; it is never rebuilt."""
    rows = min(MAX_BATCH_ROWS, max(1, max_batch_tokens // MIN_TOKENS))
    opt_tokens = min(max_length, OPT_TOKENS)
    opt_rows = min(rows, max(1, max_batch_tokens // opt_tokens))
    return ShapeProfile(min=(1, 1), opt=(opt_rows, opt_tokens), max=(rows, max_length))


def _is_qdq(manifest: Manifest) -> bool:
    scheme = (manifest.optimization.get("precision") or {}).get("scheme")
    if scheme is not None:
        return scheme == "static-qdq-int8"
    return manifest.precision is Precision.INT8 and manifest.target is Target.PLAIN


def tensorrt_options(
    manifest: Manifest, *, max_batch_tokens: int, fp16: bool = False, device_id: int = 0
) -> dict[str, Any]:
    """TensorRT options for a bundle, without the cache paths (``open_session`` adds them).

    fp16 kernels when the bundle is fp16 or ``fp16=True``; int8 for QDQ int8 bundles (the scales are
    in the graph, no calibration table); LayerNorm's Pow + ReduceMean kept fp32; engine and timing caches.
    """
    return {
        "device_id": device_id,
        "trt_fp16_enable": fp16 or manifest.precision is Precision.FP16,
        "trt_int8_enable": _is_qdq(manifest),
        "trt_layer_norm_fp32_fallback": True,
        "trt_engine_cache_enable": True,
        "trt_timing_cache_enable": True,
        **shape_profile(manifest.max_length, max_batch_tokens).options(manifest.inputs),
    }


def cuda_options(
    *, device_id: int = 0, gpu_mem_limit: int | None = None, arena_extend_strategy: str = "kSameAsRequested"
) -> dict[str, Any]:
    """CUDA options. kSameAsRequested grows the memory arena by what a batch needs, not the next power
    of two: batches of varying shape waste less memory on small GPUs. gpu_mem_limit caps the arena (bytes)."""
    options: dict[str, Any] = {"device_id": device_id, "arena_extend_strategy": arena_extend_strategy}
    if gpu_mem_limit is not None:
        options["gpu_mem_limit"] = int(gpu_mem_limit)
    return options


# Options that say where caches go or what to dump; they do not change the engine.
_NOT_IN_KEY = frozenset(
    {
        "device_id",
        "trt_engine_cache_enable",
        "trt_engine_cache_path",
        "trt_timing_cache_enable",
        "trt_timing_cache_path",
        "trt_force_timing_cache",
        "trt_dump_ep_context_model",
        "trt_ep_context_file_path",
        "trt_ep_context_embed_mode",
        "trt_detailed_build_log",
        "trt_dump_subgraphs",
    }
)


def _canon(value: Any) -> str:
    if isinstance(value, bool) or str(value).lower() in ("true", "false"):
        return "1" if str(value).lower() == "true" else "0"
    return str(value)


def engine_key_parts(
    model_sha256: str, *, profile: ShapeProfile, options: Mapping[str, Any], device_id: int = 0
) -> dict[str, Any]:
    """Everything a TensorRT engine depends on; ``None`` for a version or GPU that cannot be found."""
    return {
        "model_sha256": model_sha256,
        "onnxruntime": ort.__version__,
        "tensorrt": tensorrt_version(),
        "gpu": gpu_name(device_id),
        "profile": {"min": list(profile.min), "opt": list(profile.opt), "max": list(profile.max)},
        # the profile strings too: a caller's own trt_profile_* shapes must not share an engine with ours
        "options": {k: _canon(v) for k, v in sorted(options.items()) if k not in _NOT_IN_KEY},
    }


def engine_key(parts: Mapping[str, Any]) -> str:
    """24 hex digits of the sha256 of the parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class _Engine:
    dir: Path  # the engine cache (and any EP-context model) of this key
    timing: Path  # the timing cache: kernel timings, not the model, so shared by all models on this TensorRT and GPU
    key: str
    parts: dict[str, Any]

    @property
    def context_model(self) -> Path:
        return self.dir / CONTEXT_MODEL

    def prebuilt(self) -> Path | None:
        """The EP-context model when build_engine wrote one for this key and it is intact."""
        try:
            record = json.loads((self.dir / ENGINE_RECORD).read_text(encoding="utf-8"))
            intact = record["key"] == self.key and record["context_sha256"] == sha256_file(self.context_model)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return self.context_model if intact else None


def _engine_for(manifest: Manifest, options: dict[str, Any], cache_root: Path, max_batch_tokens: int) -> _Engine:
    profile = shape_profile(manifest.max_length, max_batch_tokens)
    device_id = int(options.get("device_id", 0))
    parts = engine_key_parts(manifest.files["model.onnx"], profile=profile, options=options, device_id=device_id)
    key = engine_key(parts)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", manifest.name).strip("-")[:64] or "model"
    timing = engine_key({"tensorrt": parts["tensorrt"], "gpu": parts["gpu"]})[:16]
    root = cache_root / "tensorrt"
    return _Engine(root / f"{name}-{key}", root / "timing" / timing, key, parts)


# ---- sessions -------------------------------------------------------------------------------


class SessionProviders(list):  # type: ignore[type-arg]
    """The providers the session got, highest priority first (a list of ONNX Runtime names).

    ``requested``: the chain asked for after resolving "auto" and aliases; ``options``: the options
    passed to each; ``model``: the graph loaded (model.onnx, or a pre-built engine's EP-context model);
    ``io_binding``: whether batches run through IO binding on the GPU.
    """

    def __init__(
        self,
        got: Sequence[str],
        *,
        requested: Sequence[str] = (),
        options: Mapping[str, Mapping[str, Any]] | None = None,
        model: str = "",
        io_binding: bool = False,
    ) -> None:
        super().__init__(got)
        self.requested = list(requested)
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self.model = model
        self.io_binding = io_binding


@dataclass(frozen=True)
class Session:
    """An InferenceSession, what it got, and ``run`` (IO binding on a GPU; None: call session.run)."""

    session: ort.InferenceSession
    providers: SessionProviders
    run: RunFn | None


def bound_run(session: ort.InferenceSession, *, device_type: str = "cuda", device_id: int = 0) -> RunFn:
    """run(outputs, feeds) through IO binding: each input is copied to the device once, the outputs stay
    there until the graph ends, and only the requested outputs ([batch, dim] for an embedder) come back."""

    def run(outputs: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        binding = session.io_binding()
        values = []  # the device copies must outlive the run
        for name, array in feeds.items():
            values.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device_type, device_id))
            binding.bind_ortvalue_input(name, values[-1])
        for name in outputs:
            binding.bind_output(name, device_type, device_id)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    return run


@contextlib.contextmanager
def _ort_stderr() -> Iterator[list[str]]:
    """Collect what ONNX Runtime's C++ logger writes to fd 2 (why a provider did not load); the text is
    passed on to stderr afterwards. Other threads' stderr in this window comes out late, not lost."""
    lines: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:
        yield lines
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            data = tmp.read()
            if data:
                os.write(2, data)
            lines.extend(data.decode("utf-8", "replace").splitlines())


_REASON = re.compile(r"fail|error|cannot|could not|unable|not found|require|no such file|not supported", re.I)


def _reason(lines: Sequence[str]) -> str:
    found = [line.strip() for line in lines if _REASON.search(line)][-6:]
    return "; ".join(found)[-1500:] if found else "ONNX Runtime logged no reason"


def _plan(
    chain: list[ProviderSpec], manifest: Manifest | None, max_batch_tokens: int | None, cache_dir: Path | None
) -> tuple[list[tuple[str, dict[str, Any]]], _Engine | None]:
    """Options for each provider in the chain: edge-bge's defaults, then the caller's on top."""
    user = {_name(s): _user_options(s) for s in chain}
    gpu_device = next((int(user[p]["device_id"]) for p in GPU_PROVIDERS if "device_id" in user.get(p, {})), 0)
    planned: list[tuple[str, dict[str, Any]]] = []
    engine = None
    for name, mine in user.items():
        fp16 = _canon(mine.pop("fp16", False)) == "1" if name == TRT else False  # edge-bge's own: "fp16 kernels"
        if name == CUDA:
            options = {**cuda_options(device_id=gpu_device), **mine}
        elif name == TRT and manifest is not None and max_batch_tokens is not None:
            options = {**tensorrt_options(manifest, max_batch_tokens=max_batch_tokens, fp16=fp16), **mine}
            options["device_id"] = int(mine.get("device_id", gpu_device))
            if manifest.target is Target.CPU_FUSED:
                log.warning(
                    "%s is a cpu-fused graph: TensorRT cannot take ONNX Runtime's fused operators and leaves "
                    "them to CUDA; export with --target tensorrt for TensorRT",
                    manifest.name,
                )
            if "trt_engine_cache_path" in mine:  # the caller's own cache path is used as given
                options.setdefault("trt_timing_cache_path", mine["trt_engine_cache_path"])
            else:
                engine = _engine_for(manifest, options, cache_dir or default_cache_dir(), max_batch_tokens)
                options["trt_engine_cache_path"] = str(engine.dir / "engine")
                options.setdefault("trt_timing_cache_path", str(engine.timing))
        else:
            options = {"trt_fp16_enable": True, **mine} if fp16 else mine
        planned.append((name, options))
    return planned, engine


def open_session(
    model_path: str | os.PathLike[str],
    *,
    manifest: Manifest | None = None,
    providers: str | Sequence[ProviderSpec] = "auto",
    threads: int | None = None,
    strict: bool = True,
    max_batch_tokens: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    spin: bool = True,
) -> Session:
    """One InferenceSession with explicit options; ProviderError if a requested provider did not load.

    With the bundle's manifest and the batch token budget, TensorRT gets its shape profile, precision
    and engine cache (under ``cache_dir``, default ``default_cache_dir()``), and a pre-built engine of
    the same key (``build_engine``) is loaded instead of building one. On CUDA and TensorRT, ``run``
    uses IO binding. An option ``"fp16": True`` for TensorRT asks for fp16 kernels on any bundle.
    "auto" never fails for a provider that did not load (it warns and runs on the next one); with
    ``strict`` an explicitly requested provider that is absent or did not load is a ProviderError.
    ``spin``: ONNX Runtime's intra-op threads spin-wait for more work when they run out (the next
    operator starts sooner; the waiting burns CPU); False lets them sleep (benchmarks/spinning.py).
    """
    return _open(model_path, manifest, providers, threads, strict, max_batch_tokens, cache_dir, None, spin=spin)


def _open(
    model_path: str | os.PathLike[str],
    manifest: Manifest | None,
    providers: str | Sequence[ProviderSpec],
    threads: int | None,
    strict: bool,
    max_batch_tokens: int | None,
    cache_dir: str | os.PathLike[str] | None,
    build: Mapping[str, Any] | None,  # build_engine's EP-context options for TensorRT
    *,
    spin: bool = True,
) -> Session:
    available = ort.get_available_providers()
    auto = isinstance(providers, str) and providers.lower() == "auto"
    chain = resolve(providers, available)
    absent = [_name(s) for s in chain if _name(s) not in available]
    if absent:
        if strict:
            raise ProviderError(
                f"{', '.join(absent)} not available in this ONNX Runtime build "
                f"(available: {', '.join(available)}); {_absent_hint()}"
            )
        log.warning("%s not available in this ONNX Runtime build; skipping", ", ".join(absent))
        chain = [s for s in chain if _name(s) in available] or [CPU]
    wanted = [_name(s) for s in chain]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    path, logged = str(model_path), []
    if not any(p in GPU_PROVIDERS for p in wanted):  # the CPU path, as ONNX Runtime was always called here
        planned: list[Any] = chain
        try:
            session = ort.InferenceSession(path, sess_options=options, providers=chain)
        except Exception as e:  # ORT raises its own exception types without a common base
            raise ProviderError(f"ONNX Runtime could not create a session on {wanted}: {e}") from e
    else:
        planned, engine = _plan(chain, manifest, max_batch_tokens, Path(cache_dir) if cache_dir else None)
        prebuilt = None
        if build is not None:
            planned = [(n, {**o, **build} if n == TRT else o) for n, o in planned]
        elif engine is not None:
            prebuilt = engine.prebuilt()
            if prebuilt is not None:
                path = str(prebuilt)
                log.info("loading the pre-built TensorRT engine in %s", engine.dir)
            elif not (engine.dir / "engine").is_dir():
                log.info("building a TensorRT engine for this model and GPU (once; cached in %s)", engine.dir)
        if engine is not None:
            (engine.dir / "engine").mkdir(parents=True, exist_ok=True)
            engine.timing.mkdir(parents=True, exist_ok=True)
        failed: Exception | None = None
        with _ort_stderr() as logged:
            try:
                # enable_fallback=0: ONNX Runtime must not quietly retry on the CPU when a GPU provider fails
                session = ort.InferenceSession(path, sess_options=options, providers=planned, enable_fallback=0)
            except Exception as e:
                failed = e
        if failed is not None:
            what = f"the pre-built engine {prebuilt}" if prebuilt else f"a session on {wanted}"
            message = f"ONNX Runtime could not create {what}: {failed} ({_reason(logged)})"
            if auto and len(chain) > 1 and build is None:  # "auto" goes on down its chain, saying why
                log.warning("%s; trying %s", message, ", ".join(wanted[1:]))
                rest = _open(
                    model_path, manifest, chain[1:], threads, False, max_batch_tokens, cache_dir, None, spin=spin
                )
                rest.providers.requested = wanted
                return rest
            raise ProviderError(message) from failed
        session.disable_fallback()  # nor at run time
    got = session.get_providers()
    missing = [p for p in wanted if p not in got and p != CPU]
    if missing:
        message = f"requested {', '.join(missing)} but ONNX Runtime loaded only {', '.join(got)}"
        if strict and not auto:
            raise ProviderError(f"{message}. ONNX Runtime said: {_reason(logged)}")
        log.warning("%s; running on %s. ONNX Runtime said: %s", message, got[0], _reason(logged))
    run = None
    if got[0] in GPU_PROVIDERS:
        device = next((o.get("device_id", 0) for n, o in planned if n == got[0]), 0)
        run = bound_run(session, device_type="cuda", device_id=int(device))
    named = [(s, {}) if isinstance(s, str) else s for s in planned]
    report = SessionProviders(got, requested=wanted, options=dict(named), model=path, io_binding=run is not None)
    return Session(session, report, run)


def make_session(
    model_path: str,
    *,
    providers: str | Sequence[ProviderSpec] = "auto",
    threads: int | None = None,
    strict: bool = True,
    manifest: Manifest | None = None,
    max_batch_tokens: int | None = None,
) -> ort.InferenceSession:
    """``open_session(...).session``."""
    return open_session(
        model_path,
        manifest=manifest,
        providers=providers,
        threads=threads,
        strict=strict,
        max_batch_tokens=max_batch_tokens,
    ).session


# ---- engines ahead of time --------------------------------------------------------------------


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
    usable here; the result says where the engine is and how long the build took (seconds).
    """
    from .bundle import Bundle
    from .embedder import GPU_MAX_BATCH_TOKENS

    b = Bundle(bundle)
    if b.manifest.target is not Target.PLAIN:
        raise ProviderError(
            f"{bundle} is a {b.manifest.target.value!r} graph; TensorRT engines are built from bundles "
            "exported with --target tensorrt (the plain graph)"
        )
    budget = max_batch_tokens or GPU_MAX_BATCH_TOKENS
    trt: dict[str, Any] = {"device_id": device_id, "fp16": fp16}
    planned, engine = _plan([(TRT, dict(trt))], b.manifest, budget, Path(cache_dir) if cache_dir else None)
    if engine is None:  # cannot happen: no cache path of the caller's
        raise ProviderError("no engine cache directory")
    if not force and engine.prebuilt() is not None:
        return EngineBuild(engine.dir, engine.context_model, engine.key, engine.parts, 0.0, True)
    engine.dir.mkdir(parents=True, exist_ok=True)
    engine.context_model.unlink(missing_ok=True)
    extra = {
        "trt_dump_ep_context_model": True,
        "trt_ep_context_file_path": str(engine.context_model),
        "trt_ep_context_embed_mode": 0,  # the engine stays a file beside the model, not a 2 GB-limited attribute
        "trt_engine_cache_path": "engine",  # relative to the EP-context model, as ONNX Runtime requires
    }
    chain: list[ProviderSpec] = [(TRT, dict(trt))]
    if CUDA in ort.get_available_providers():
        chain.append(CUDA)
    start = time.perf_counter()
    opened = _open(b.model_path, b.manifest, chain, threads, True, budget, cache_dir, extra)
    # one small batch: an engine ONNX Runtime builds lazily is built (and dumped) now
    feeds = {name: np.ones((1, min(8, b.manifest.max_length)), dtype=np.int64) for name in b.manifest.inputs}
    if "token_type_ids" in feeds:
        feeds["token_type_ids"][:] = 0
    opened.session.run([b.manifest.outputs[0]], feeds)
    seconds = time.perf_counter() - start
    del opened
    if not engine.context_model.is_file():
        raise ProviderError(
            f"ONNX Runtime did not write {engine.context_model}: every node must run on TensorRT for an "
            "EP-context model (is this ONNX Runtime older than 1.18?)"
        )
    record = {
        "key": engine.key,
        "parts": engine.parts,
        "bundle": str(Path(bundle).resolve()),
        "name": b.manifest.name,
        "max_batch_tokens": budget,
        "options": {k: _canon(v) for k, v in planned[0][1].items()},
        "build_seconds": round(seconds, 3),
        "context_sha256": sha256_file(engine.context_model),
    }
    (engine.dir / ENGINE_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return EngineBuild(engine.dir, engine.context_model, engine.key, engine.parts, seconds, False)

"""Sessions: one InferenceSession from a ``SessionRequest``, the providers it really got, and its run function.

On a device provider (CUDA, TensorRT) ONNX Runtime may not quietly fall back to the CPU: a provider
that did not load is an error (``strict``) or a warning naming ONNX Runtime's reason; "auto" goes on
down its chain, one provider at a time, saying why.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from ..batching import MAX_BATCH_ROWS
from ..errors import ProviderError
from ..manifest import Manifest
from . import machine
from .chain import is_auto, resolve
from .cuda import bound_run
from .placement import WARMUP, Placement, describe_shortfall, measure, shortfall
from .registry import CPU, TRT, lookup
from .spec import ModelCache, PlanContext, ProviderSpec, RunFn, name_of, options_of
from .tensorrt import profile_max

__all__ = ["Session", "SessionProviders", "SessionRequest", "open_session"]

log = logging.getLogger("edge_bge")

Planned = list[tuple[str, dict[str, Any]]]


class SessionProviders(list):  # type: ignore[type-arg]
    """The providers the session got, highest priority first (a list of ONNX Runtime names).

    ``requested``: the chain asked for after resolving "auto" and aliases; ``options``: the options
    passed to each; ``model``: the graph loaded (model.onnx, or a pre-built engine's EP-context model);
    ``io_binding``: whether batches run through IO binding on the GPU; ``placement``: where the nodes
    of the warm-up batch ran (``placement.Placement``; None when not measured: CPU sessions unless
    asked); ``max_rows``: the most rows a batch may have (TensorRT's shape profile; else MAX_BATCH_ROWS).
    """

    def __init__(
        self,
        got: Sequence[str],
        *,
        requested: Sequence[str] = (),
        options: Mapping[str, Mapping[str, Any]] | None = None,
        model: str = "",
        io_binding: bool = False,
        placement: Placement | None = None,
        max_rows: int = MAX_BATCH_ROWS,
    ) -> None:
        super().__init__(got)
        self.requested = list(requested)
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self.model = model
        self.io_binding = io_binding
        self.placement = placement
        self.max_rows = max_rows


@dataclass(frozen=True)
class Session:
    """An InferenceSession, what it got, and ``run`` (IO binding on a GPU; None: call session.run)."""

    session: ort.InferenceSession
    providers: SessionProviders
    run: RunFn | None


@dataclass(frozen=True)
class SessionRequest:
    """Everything a session is opened from; ``open_session`` documents each field."""

    model_path: str | os.PathLike[str]
    manifest: Manifest | None = None
    providers: str | Sequence[ProviderSpec] = "auto"
    threads: int | None = None
    strict: bool = True
    max_batch_tokens: int | None = None
    cache_dir: str | os.PathLike[str] | None = None
    spin: bool = True
    # build_engine's options added per provider (TensorRT's EP-context dump): no pre-built model is
    # loaded and "auto" does not fall back
    build: Mapping[str, Mapping[str, Any]] | None = None
    # measure where the nodes of a warm-up batch run (``placement``): None on GPU sessions only
    placement: bool | None = None
    # session config entries (``SessionOptions.add_session_config_entry``), e.g. session.disable_cpu_ep_fallback
    config: Mapping[str, str] | None = None

    def open(self) -> Session:
        """The session; ProviderError when a requested provider is absent or did not load (see ``open_session``)."""
        available = ort.get_available_providers()
        chain = _present(resolve(self.providers, available), available, self.strict)
        requested = [name_of(s) for s in chain]
        while True:  # "auto" goes on down its chain, one provider at a time
            try:
                with tempfile.TemporaryDirectory(prefix="edge-bge-profile-") as profile:
                    return self._attempt(chain, requested, profile)
            except _Failed as failed:
                if not (is_auto(self.providers) and len(chain) > 1 and self.build is None):
                    raise ProviderError(str(failed)) from failed.__cause__
                chain = chain[1:]
                log.warning("%s; trying %s", failed, ", ".join(name_of(s) for s in chain))

    def _attempt(self, chain: list[ProviderSpec], requested: list[str], profile: str) -> Session:
        wanted = [name_of(s) for s in chain]
        on_device = any(lookup(name).on_device for name in wanted)
        planned, cache = self._plan(chain)
        options = _session_options(self.threads, self.spin, self.config)
        measuring = self.placement if self.placement is not None else lookup(wanted[0]).on_device
        if measuring:  # ONNX Runtime profiles from the start; placement.measure ends it after one batch
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(profile, "placement")
        path, logged = str(self.model_path), []
        if not on_device:  # host memory only, as ONNX Runtime always ran here
            try:
                session = ort.InferenceSession(path, sess_options=options, providers=planned)
            except Exception as e:  # ORT raises its own exception types without a common base
                raise ProviderError(f"ONNX Runtime could not create a session on {wanted}: {e}") from e
        else:
            machine.preload_gpu_libraries()  # pip's CUDA and cuDNN libraries, where ONNX Runtime can load them
            prebuilt = None if cache is None else cache.prepare(load_prebuilt=self.build is None)
            path = str(prebuilt or path)
            failed: Exception | None = None
            with _ort_stderr() as logged:
                try:
                    # enable_fallback=0: ONNX Runtime must not quietly retry on the CPU when a device provider fails
                    session = ort.InferenceSession(path, sess_options=options, providers=planned, enable_fallback=0)
                except Exception as e:
                    failed = e
            if failed is not None:
                what = f"the pre-built engine {prebuilt}" if prebuilt else f"a session on {wanted}"
                raise _Failed(f"ONNX Runtime could not create {what}: {failed} ({_reason(logged)})") from failed
            session.disable_fallback()  # nor at run time
        got = session.get_providers()
        missing = [p for p in wanted if p not in got and p != CPU]
        if missing:
            message = f"requested {', '.join(missing)} but ONNX Runtime loaded only {', '.join(got)}"
            if self.strict and not is_auto(self.providers):
                raise ProviderError(f"{message}. ONNX Runtime said: {_reason(logged)}")
            log.warning("%s; running on %s. ONNX Runtime said: %s", message, got[0], _reason(logged))
        trt = dict(planned).get(TRT) if TRT in got else None
        max_rows = (profile_max(trt) or (MAX_BATCH_ROWS,))[0] if trt is not None else MAX_BATCH_ROWS
        found = self._placement(session, got, max_rows) if measuring else None
        run = None
        device = lookup(got[0]).io_device
        if device is not None:
            device_id = next((o.get("device_id", 0) for n, o in planned if n == got[0]), 0)
            run = bound_run(session, device_type=device, device_id=int(device_id))
        report = SessionProviders(
            got,
            requested=requested,
            options=dict(planned),
            model=path,
            io_binding=run is not None,
            placement=found,
            max_rows=max_rows,
        )
        return Session(session, report, run)

    def _placement(self, session: ort.InferenceSession, got: list[str], max_rows: int) -> Placement | None:
        """Where one warm-up batch's nodes ran; on a GPU, compute nodes on the CPU are an error (``strict``)."""
        tokens = min(WARMUP[1], self.manifest.max_length) if self.manifest else WARMUP[1]
        try:
            found = measure(session, rows=min(WARMUP[0], max_rows), tokens=tokens)
        except Exception as e:  # ORT's own exception types: a session that cannot run a batch
            raise _Failed(f"the warm-up batch failed on {got[0]}: {e}") from e
        fell = shortfall(found, got, [p for p in got if lookup(p).on_device])
        if fell and found is not None:
            message = describe_shortfall(found, got, fell, self.manifest.target.value if self.manifest else None)
            if self.strict and not is_auto(self.providers):
                raise ProviderError(f"{message}; strict=False runs it as it is")
            log.warning("%s", message)
        return found

    def _plan(self, chain: list[ProviderSpec]) -> tuple[Planned, ModelCache | None]:
        """Each provider's options from its registry entry: edge-bge's defaults, then the caller's on top."""
        user = {name_of(s): options_of(s) for s in chain}
        device_id = next((int(o["device_id"]) for n, o in user.items() if lookup(n).on_device and "device_id" in o), 0)
        cache_dir = Path(self.cache_dir) if self.cache_dir else None
        context = PlanContext(self.manifest, self.max_batch_tokens, cache_dir, device_id)
        planned: Planned = []
        cache = None
        for name, mine in user.items():
            plan = lookup(name).plan(mine, context)
            extra = (self.build or {}).get(name, {})
            planned.append((name, {**plan.options, **extra}))
            cache = plan.cache or cache
        return planned, cache


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
    A GPU session runs one warm-up batch profiled (``providers.placement``); with ``strict`` a GPU
    provider asked for by name that leaves compute nodes to the CPU is a ProviderError naming them.
    ``threads``: ONNX Runtime's intra-op threads (default: ``default_threads()``). ``spin``: those
    threads spin-wait for more work when they run out (the next operator starts sooner; the waiting
    burns CPU); False lets them sleep (benchmarks/spinning.py).
    """
    request = SessionRequest(
        model_path,
        manifest=manifest,
        providers=providers,
        threads=threads,
        strict=strict,
        max_batch_tokens=max_batch_tokens,
        cache_dir=cache_dir,
        spin=spin,
    )
    return request.open()


class _Failed(Exception):
    """A device provider's session could not be created (the message says why)."""


def _present(chain: list[ProviderSpec], available: Sequence[str], strict: bool) -> list[ProviderSpec]:
    """The chain without providers this ONNX Runtime lacks: an error when ``strict``, else a warning."""
    absent = [name_of(s) for s in chain if name_of(s) not in available]
    if not absent:
        return chain
    if strict:
        raise ProviderError(
            f"{', '.join(absent)} not available in this ONNX Runtime build "
            f"(available: {', '.join(available)}); {machine.absent_hint()}"
        )
    log.warning("%s not available in this ONNX Runtime build; skipping", ", ".join(absent))
    return [s for s in chain if name_of(s) in available] or [CPU]


def _session_options(threads: int | None, spin: bool, config: Mapping[str, str] | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    options.intra_op_num_threads = threads or machine.default_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


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

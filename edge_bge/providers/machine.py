"""What this machine offers a session: usable CPUs (affinity and cgroup quota), TensorRT, the GPU, caches.

Everything here reads the system and changes nothing; a fact that cannot be found is ``None`` (or,
for the CPU budget, the affinity mask alone), never an error.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.metadata
import io
import logging
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime as ort

__all__ = [
    "absent_hint",
    "cpu_budget",
    "default_cache_dir",
    "default_threads",
    "environment",
    "gpu_name",
    "preload_gpu_libraries",
    "tensorrt_version",
]

log = logging.getLogger("edge_bge")


# ---- CPUs ------------------------------------------------------------------------------------------


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


class _Unreadable(Exception):
    pass


def _read_numbers(path: Path) -> list[str] | None:
    try:
        return path.read_text(encoding="ascii").split()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise _Unreadable(f"cannot read {path}: {e}") from None


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


# ---- caches, TensorRT, the GPU, ONNX Runtime -----------------------------------------------------


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


@functools.cache
def preload_gpu_libraries() -> bool:
    """Load the CUDA and cuDNN libraries of pip's nvidia-* wheels through ``onnxruntime.preload_dlls()``.

    ONNX Runtime finds libraries installed by pip (``onnxruntime-gpu[cuda,cudnn]``, or PyTorch's) only
    this way or through LD_LIBRARY_PATH. Called once, before the first session on a GPU provider.
    Returns whether it ran: False on a build without ``preload_dlls`` (before 1.21) or when it failed
    (logged; the session then says what is missing). A CPU build's returns without loading anything.
    What it prints goes to the debug log, not to stdout.
    """
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return False
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said):
            preload()
    except Exception as e:  # a directory or library it could not use: the session says what is missing
        log.debug("onnxruntime.preload_dlls() failed: %s", e)
        return False
    finally:
        if said.getvalue().strip():
            log.debug("onnxruntime.preload_dlls(): %s", said.getvalue().strip())
    return True


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


def absent_hint() -> str:
    """Why a GPU provider may be missing from this ONNX Runtime, and what to do about it."""
    dists = _ort_distributions()
    if len(dists) > 1:
        return (
            f"both {' and '.join(f'{k} {v}' for k, v in dists.items())} are installed: they share the "
            "'onnxruntime' package and the last one installed wins. Fix: pip uninstall -y onnxruntime "
            "onnxruntime-gpu && pip install onnxruntime-gpu"
        )
    return "for GPUs install edge-bge[gpu] and make sure only onnxruntime-gpu is installed, not also onnxruntime"

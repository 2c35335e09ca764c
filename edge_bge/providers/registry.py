"""The execution providers edge-bge knows: one entry each, in the order "auto" tries them.

A new provider is one module (its options, how to plan them) plus one entry here. A provider the
table does not know (any other ``*ExecutionProvider`` this ONNX Runtime has) runs with the caller's
options as given, on host memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import cuda, tensorrt
from .spec import Plan, PlanContext

__all__ = [
    "ALIASES",
    "AUTO_ORDER",
    "CPU",
    "CUDA",
    "GPU_PROVIDERS",
    "PROVIDERS",
    "TRT",
    "Provider",
    "by_alias",
    "lookup",
]

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
# edge-bge's own options, understood by a provider's planner and never passed on to ONNX Runtime (which
# rejects an unknown one: "Unknown provider option"); only TensorRT's planner acts on "fp16".
PSEUDO_OPTIONS = ("fp16",)

log = logging.getLogger("edge_bge")


def _no_options(context: PlanContext) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Provider:
    """One execution provider as edge-bge uses it."""

    name: str  # ONNX Runtime's name
    aliases: tuple[str, ...] = ()  # what users may write instead (lower case)
    io_device: str | None = None  # the OrtValue device IO binding copies to; None: host memory, session.run
    auto: bool = False  # whether "auto" tries it (in the table's order)
    behind: tuple[str, ...] = ()  # put behind it when asked for by alias and available (nodes it does not take)
    defaults: Callable[[PlanContext], dict[str, Any]] = _no_options  # edge-bge's options for it
    planner: Callable[[dict[str, Any], PlanContext], Plan] | None = None  # None: defaults, then the caller's

    @property
    def on_device(self) -> bool:
        """Whether it runs on an accelerator: IO binding, and no silent CPU fallback when it fails."""
        return self.io_device is not None

    def plan(self, user: dict[str, Any], context: PlanContext) -> Plan:
        """Its options for a session: edge-bge's, then the caller's ``user`` options on top."""
        if self.planner is not None:
            return self.planner(dict(user), context)
        ignored = [k for k in PSEUDO_OPTIONS if k in user]
        if ignored:
            log.warning(
                "%s ignores edge-bge's %s option (TensorRT's: fp16 kernels); it runs the bundle's own "
                "precision: export with --precision fp16 for fp16 on it",
                self.name,
                ", ".join(map(repr, ignored)),
            )
        return Plan({**self.defaults(context), **{k: v for k, v in user.items() if k not in PSEUDO_OPTIONS}})


PROVIDERS: tuple[Provider, ...] = (
    # CUDA behind TensorRT takes any node TensorRT does not, so that such nodes stay on the GPU
    Provider(TRT, aliases=("tensorrt",), io_device="cuda", auto=True, behind=(CUDA,), planner=tensorrt.plan),
    Provider(CUDA, aliases=("cuda",), io_device="cuda", auto=True, defaults=cuda.defaults),
    Provider(CPU, aliases=("cpu",), auto=True),
)

# The exported views of the table; the functions below read the table itself.
ALIASES = {alias: p.name for p in PROVIDERS for alias in p.aliases}
AUTO_ORDER = tuple(p.name for p in PROVIDERS if p.auto)
GPU_PROVIDERS = tuple(p.name for p in PROVIDERS if p.on_device)


def lookup(name: str) -> Provider:
    """The entry of ONNX Runtime's provider ``name``; an unknown one gets an entry with no options of ours."""
    return next((p for p in PROVIDERS if p.name == name), None) or Provider(name)


def known(name: str) -> bool:
    """Whether ``name`` has an entry."""
    return any(p.name == name for p in PROVIDERS)


def by_alias(alias: str) -> Provider | None:
    """The entry users call ``alias`` (any case), if any."""
    return next((p for p in PROVIDERS if alias.lower() in p.aliases), None)


def auto_chain(available: Sequence[str]) -> list[str]:
    """What "auto" asks for: the entries "auto" tries, in order, among the available providers."""
    return [p.name for p in PROVIDERS if p.auto and p.name in available]


def aliases() -> list[str]:
    """Every alias, sorted."""
    return sorted(alias for p in PROVIDERS for alias in p.aliases)

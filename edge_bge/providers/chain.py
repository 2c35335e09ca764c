"""Chain resolution: the caller's ``providers=`` -> the ordered list of providers to ask ONNX Runtime for."""

from __future__ import annotations

from collections.abc import Sequence

import onnxruntime as ort

from ..errors import ProviderError
from . import registry
from .spec import ProviderSpec, name_of

__all__ = ["is_auto", "resolve", "wants_gpu"]


def is_auto(requested: str | Sequence[ProviderSpec]) -> bool:
    """Whether the caller left the choice to edge-bge ("auto", any case)."""
    return isinstance(requested, str) and requested.lower() == "auto"


def resolve(requested: str | Sequence[ProviderSpec], available: Sequence[str]) -> list[ProviderSpec]:
    """Turn "auto" / an alias ("cpu", "cuda", "tensorrt") / an ONNX Runtime name or list into a provider chain.

    "auto" is the registry's providers in order (TensorRT, CUDA, CPU) among the available ones; an
    alias brings the providers its entry puts behind it when available ("tensorrt": CUDA, for any
    node TensorRT does not take, so that such nodes stay on the GPU). A list is taken as given.
    """
    if isinstance(requested, str):
        if is_auto(requested):
            return list(registry.auto_chain(available))
        entry = registry.by_alias(requested)
        chain: list[ProviderSpec]
        if entry is not None:
            chain = [entry.name, *(b for b in entry.behind if b in available)]
        elif registry.known(requested) or requested.endswith("ExecutionProvider"):
            chain = [requested]
        else:
            names = ", ".join(map(repr, registry.aliases()))
            raise ProviderError(f"unknown provider {requested!r}; use 'auto', {names} or an ONNX Runtime list")
    else:
        chain = list(requested)
    if not chain:
        raise ProviderError("the provider list is empty")
    return chain


def wants_gpu(requested: str | Sequence[ProviderSpec]) -> bool:
    """Whether the chain this request resolves to here starts with a provider on a device (a GPU)."""
    try:
        chain = resolve(requested, ort.get_available_providers())
    except ProviderError:
        return False
    return bool(chain) and registry.lookup(name_of(chain[0])).on_device

from __future__ import annotations

import pytest

from edge_bge import Embedder, ProviderError
from edge_bge.providers import resolve

ALL = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    "available,chain",
    [(ALL, ALL), (ALL[1:], ALL[1:]), (ALL[2:], ALL[2:]), (["TensorrtExecutionProvider", "CPUExecutionProvider"],
     ["TensorrtExecutionProvider", "CPUExecutionProvider"])],
)
def test_auto_order(available, chain):
    assert resolve("auto", available) == chain


def test_aliases_and_lists():
    assert resolve("cpu", ALL) == ["CPUExecutionProvider"]
    assert resolve("CUDA", ALL) == ["CUDAExecutionProvider"]
    assert resolve(["CUDAExecutionProvider", "CPUExecutionProvider"], ALL) == ALL[1:]
    with pytest.raises(ProviderError, match="unknown provider"):
        resolve("gpu", ALL)


def test_strict_refuses_missing_provider(tiny_fp32):
    with pytest.raises(ProviderError, match="CUDAExecutionProvider not available"):
        Embedder(tiny_fp32, providers="cuda")


def test_reports_real_providers(tiny_fp32):
    assert Embedder(tiny_fp32, providers="cpu").providers == ["CPUExecutionProvider"]

"""scripts/gpu_check.py runs on a CPU-only machine too, reporting the GPU providers as unavailable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
FAST = ["--iters", "3", "--warmup", "1", "--check-texts", "24"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_cpu_provider(tiny_fp32):
    done = run(str(tiny_fp32), "--providers", "cpu", *FAST)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "| cpu | CPUExecutionProvider |" in out and "| ok |" in out
    for tokens in ("32", "128", "512"):
        for batch in ("1", "32"):
            assert f"| fp32 | cpu | {batch} | {tokens} |" in out
    assert "import torch" not in done.stderr


@pytest.mark.skipif("TensorrtExecutionProvider" in ort.get_available_providers(), reason="a GPU machine")
def test_gpu_providers_reported_unavailable(tiny_fp32, tmp_path):
    report = tmp_path / "report.json"
    done = run(str(tiny_fp32), "--providers", "tensorrt,cuda,cpu", "--lengths", "32", "--json", str(report), *FAST)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("unavailable (not in this ONNX Runtime build") == 2
    assert run(str(tiny_fp32), "--providers", "tensorrt", "--require-gpu", *FAST).returncode == 2
    assert '"provider": "tensorrt"' in report.read_text()

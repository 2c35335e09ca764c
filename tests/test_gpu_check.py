"""scripts/gpu_check.py in its CPU mode: CPU rows measured, absent GPU providers said, rows written as measured."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

from .test_providers import ALL, REASON, FakeORT, machine, tiny_qdq  # noqa: F401 (fixtures)

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
FAST = ["--iters", "3", "--warmup", "1", "--check-texts", "24", "--lengths", "16,64", "--batches", "1,4"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_rows_and_absent_providers(tiny_fp32, tmp_path):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.fail("this test is for a machine without a GPU build of ONNX Runtime")
    report = tmp_path / "rows.jsonl"
    done = run(
        str(tiny_fp32), "--providers", "tensorrt,cuda,cpu", "--json-lines", str(report), "--budget-s", "240", *FAST
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for name in ("tensorrt", "cuda"):  # one line each, saying why
        said = [x for x in lines if x.startswith(f"{name}: absent: ")]
        assert len(said) == 1 and "is not in this ONNX Runtime build (it has " in said[0]
    rows = rows_of(report)
    assert [r["provider"] for r in rows if r["status"] == "absent"] == ["tensorrt", "cuda"]
    cpu = [r for r in rows if r["provider"] == "cpu"]
    assert [(r["rows"], r["tokens"]) for r in cpu] == [(1, 16), (4, 16), (1, 64), (4, 64)]
    for r in cpu:
        assert r["status"] == "ok" and r["ran_on"] == "CPUExecutionProvider" and r["precision"] == "fp32"
        assert r["placement"]["nodes"] == {"CPUExecutionProvider": 1.0} and r["placement"]["compute_nodes"] > 0
        assert r["cos_min"] >= 0.99999 and r["gate"] == 0.999 and r["prebuilt_load_s"] is None
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["texts_per_s"] > 0 and 1 <= r["iters"] <= 3
        assert set(r["build_s"]) == {"cold", "warm"}
    assert sum(" cpu 4x64: ok; p50 " in x for x in lines) == 1  # and a readable line per row
    assert run(str(tiny_fp32), "--providers", "tensorrt", "--require-gpu", *FAST).returncode == 2


def test_a_spent_budget_skips_rows(tiny_fp32, tmp_path):
    report = tmp_path / "rows.jsonl"
    done = run(str(tiny_fp32), "--providers", "cpu", "--json-lines", str(report), "--budget-s", "0", *FAST)
    assert done.returncode == 0, done.stderr
    assert rows_of(report) == [
        {"bundle": str(tiny_fp32), "provider": "cpu", "status": "skipped", "error": "budget spent"}
    ]


def test_a_unit_past_its_deadline_is_stopped(gpu_check, tiny_fp32, tmp_path, capsys):
    rows = gpu_check.Rows(str(tmp_path / "rows.jsonl"))
    args = SimpleNamespace(check_texts=8, iters=1, warmup=1, batches_text="1", lengths_text="16", trt_fp16=False)
    np.save(tmp_path / "ref.npy", np.zeros((8, 32), np.float32))
    gpu_check.run_unit(str(tiny_fp32), "cpu", str(tmp_path / "ref.npy"), time.time(), args, rows)
    (row,) = rows_of(tmp_path / "rows.jsonl")
    assert row["status"] == "timed out" and row["error"].startswith("budget spent in: ")
    assert "cpu: timed out: budget spent in" in capsys.readouterr().out


def test_rows_are_on_disk_as_soon_as_written(gpu_check, tmp_path):
    rows = gpu_check.Rows(str(tmp_path / "rows.jsonl"))
    rows.write({"provider": "cuda", "status": "absent", "reason": "not in this build"})
    assert rows_of(tmp_path / "rows.jsonl") == [{"provider": "cuda", "status": "absent", "reason": "not in this build"}]
    rows.write({"provider": "tensorrt", "status": "absent", "reason": "not in this build"})
    assert len(rows_of(tmp_path / "rows.jsonl")) == 2  # before the file is closed


def test_a_failure_row_keeps_the_whole_error(gpu_check, monkeypatch, machine, tiny_qdq, tmp_path, capsys):  # noqa: F811
    """ONNX Runtime's reason comes at the end of a long message: the row keeps all of it."""
    cause = RuntimeError("TensorRT EP could not create the session: " + "detail " * 60)
    FakeORT(monkeypatch, ALL, stderr=REASON, raises=cause)
    np.save(tmp_path / "ref.npy", np.zeros((8, 32), np.float32))
    args = SimpleNamespace(
        unit=(str(tiny_qdq), "tensorrt"),
        reference=str(tmp_path / "ref.npy"),
        deadline=time.time() + 60,
        check_texts=8,
        trt_fp16=False,
    )
    monkeypatch.setenv("EDGE_BGE_CACHE_DIR", str(tmp_path))
    assert gpu_check.unit(args) == 0
    records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    (row,) = [r for r in records if "status" in r]
    assert row["status"] == "failed" and row["provider"] == "tensorrt" and len(row["error"]) > 400
    assert "libnvinfer.so.10: cannot open shared object file" in row["error"]
    assert [r["step"] for r in records if "step" in r] == ["cold start"]

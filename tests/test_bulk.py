"""Bulk embedding into Parquet parts: equal to Embedder.embed, resumable after a kill, bad rows set
aside, clear refusals; and the same on real Ray (local, a two-node cluster, an actor killed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edge_bge import Embedder, InputError
from edge_bge.bulk import JOB, REJECTS, BulkError, embed_files

from .helpers import ROOT, corpus_texts


def write_inputs(root: Path, n: int = 600) -> list[Path]:
    """A .jsonl with ids, a .txt and a .parquet: n texts in all, in this order."""
    texts = [t.replace("\n", " ") for t in corpus_texts(n)]
    third = n // 3
    a, b, c = root / "a.jsonl", root / "b.txt", root / "c.parquet"
    a.write_text("".join(json.dumps({"id": f"a{i}", "text": t}) + "\n" for i, t in enumerate(texts[:third])))
    b.write_text("".join(t + "\n" for t in texts[third : 2 * third]))
    pq.write_table(pa.table({"text": texts[2 * third :], "id": [f"c{i}" for i in range(n - 2 * third)]}), c)
    return [a, b, c]


def all_vectors(out: Path) -> tuple[list, np.ndarray]:
    ids, vectors = [], []
    for p in sorted(out.glob("part-*.parquet")):
        t = pq.read_table(p)
        ids += [(p.name[:10], i) for i in t.column("id").to_pylist()]
        vectors.append(np.stack(t.column("embedding").to_numpy(zero_copy_only=False)))
    return ids, np.concatenate(vectors)


def expected(bundle: Path, inputs: list[Path]) -> np.ndarray:
    texts = [json.loads(line)["text"] for line in inputs[0].read_text().splitlines()]
    texts += inputs[1].read_text().splitlines()
    texts += pq.read_table(inputs[2]).column("text").to_pylist()
    return Embedder(bundle).embed(texts)


def test_bulk_equals_embed_and_every_id_once(minilm_int8, tmp_path):
    inputs = write_inputs(tmp_path)
    result = embed_files(minilm_int8, [str(tmp_path / "*.*")], tmp_path / "out", id_field="id", part_rows=128)
    assert result.rows == 600 and result.parts_written == 6
    ids, got = all_vectors(tmp_path / "out")
    assert len(ids) == len(set(ids)) == 600
    assert [i for _, i in ids[:2]] == ["a0", "a1"] and ids[200][1] == 1  # .txt without ids: line numbers
    assert float((got * expected(minilm_int8, inputs)).sum(axis=1).min()) >= 0.99999
    job = json.loads((tmp_path / "out" / JOB).read_text())
    assert job["bundle"]["name"] == "all-minilm-l6-v2" and len(job["inputs"]) == 3
    for name, part in job["parts"].items():
        assert part["rows"] == pq.read_metadata(tmp_path / "out" / name).num_rows
    assert pq.read_schema(tmp_path / "out" / "part-00000-00000.parquet").field("embedding").type == pa.list_(
        pa.float32(), 384
    )


def test_m3_sparse_and_colbert_columns(bundles, tiny_m3_dir, tmp_path):
    m3 = bundles.get(tiny_m3_dir, "fp32")
    (tmp_path / "t.txt").write_text("".join(t.replace("\n", " ") + "\n" for t in corpus_texts(40)))
    embed_files(m3, [tmp_path / "t.txt"], tmp_path / "out", sparse=True, colbert=True)
    table = pq.read_table(tmp_path / "out" / "part-00000-00000.parquet")
    want = Embedder(m3).encode(corpus_texts(40)[:3], dense=True, sparse=True, colbert=True)
    indices, values = table.column("sparse_indices")[0].as_py(), table.column("sparse_values")[0].as_py()
    assert dict(zip(indices, values, strict=True)) == (pytest.approx(want.sparse[0], abs=1e-5))
    np.testing.assert_allclose(np.asarray(table.column("colbert")[1].as_py()), want.colbert[1], atol=1e-5)
    with pytest.raises(BulkError, match="--sparse needs a bge-m3 bundle"):
        embed_files(bundles.get("all-minilm-l6-v2", "fp32"), [tmp_path / "t.txt"], tmp_path / "o2", sparse=True)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_bge", "embed", *args], capture_output=True, text=True, cwd=ROOT)


def test_killed_job_resumes_without_recomputing_or_duplicating(minilm_fp32, tmp_path):
    inputs = write_inputs(tmp_path, 600)
    out = tmp_path / "out"
    args = [str(minilm_fp32), "--input", *map(str, inputs), "--out", str(out), "--part-rows", "60", "--id-field", "id"]
    proc = subprocess.Popen([sys.executable, "-m", "edge_bge", "embed", *args], cwd=ROOT, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it once a few parts are finished
        try:
            if len(json.loads((out / JOB).read_text()).get("parts", {})) >= 3:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = json.loads((out / JOB).read_text())["parts"]
    assert 3 <= len(finished) < 10
    mtimes = {name: (out / name).stat().st_mtime_ns for name in finished}
    again = _cli(*args)
    assert again.returncode == 0, again.stderr
    assert f"{sum(p['rows'] for p in finished.values())} in {len(finished)} parts already done" in again.stderr
    assert {name: (out / name).stat().st_mtime_ns for name in finished} == mtimes
    assert not list(out.glob(".*.tmp"))
    ids, got = all_vectors(out)
    assert len(ids) == len(set(ids)) == 600
    assert float((got * expected(minilm_fp32, inputs)).sum(axis=1).min()) >= 0.99999


def test_bad_rows_stop_the_job_or_go_to_rejects(tiny_fp32, tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = [
        json.dumps({"text": "fine one"}),
        json.dumps({"text": 5}),
        "{not json",
        json.dumps({"text": ""}),
        json.dumps({"body": "no text field"}),
        json.dumps({"text": "fine two"}),
    ]
    bad.write_bytes(("\n".join(lines) + "\n").encode() + b'{"text": "\xff\xfe"}\n')
    with pytest.raises(InputError, match=r"bad.jsonl:2: field 'text' is int, expected a string"):
        embed_files(tiny_fp32, [bad], tmp_path / "out")
    result = embed_files(tiny_fp32, [bad], tmp_path / "out2", skip_bad=True)
    assert result.rows == 2 and result.rejected == 5
    rejects = [json.loads(line) for line in (tmp_path / "out2" / REJECTS).read_text().splitlines()]
    assert [r["row"] for r in rejects] == [2, 3, 4, 5, 7]
    assert "not UTF-8" in rejects[-1]["reason"] and "not valid JSON" in rejects[1]["reason"]
    assert pq.read_table(tmp_path / "out2" / "part-00000-00000.parquet").column("id").to_pylist() == [1, 6]
    assert "5 rejected" in result.line()


def test_refusals_exit_2_with_one_line(tiny_fp32, minilm_fp32, tmp_path):
    (tmp_path / "t.txt").write_text("one\ntwo\n")
    out = tmp_path / "out"
    assert _cli(str(tiny_fp32), "--input", str(tmp_path / "t.txt"), "--out", str(out)).returncode == 0
    cases = [
        ([str(tmp_path / "missing"), "--input", str(tmp_path / "t.txt")], "not a bundle directory"),
        ([str(tiny_fp32), "--input", str(tmp_path / "absent.txt")], "absent.txt: not a readable file"),
        ([str(tiny_fp32), "--input", str(tmp_path / "t.txt"), "--sparse"], "--sparse needs a bge-m3 bundle"),
        ([str(minilm_fp32), "--input", str(tmp_path / "t.txt")], "holds the output of another job (the bundle"),
    ]
    for argv, message in cases:
        done = _cli(*argv, "--out", str(out) if "another" in message else str(tmp_path / "o"))
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert _cli(str(minilm_fp32), "--input", str(tmp_path / "t.txt"), "--out", str(out), "--overwrite").returncode == 0
    # the single-file forms keep working
    single = _cli(str(tiny_fp32), "--input", str(tmp_path / "t.txt"), "--output", str(tmp_path / "v.npy"))
    assert single.returncode == 0 and np.load(tmp_path / "v.npy").shape == (2, 32)


# ---- Ray -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_ray_local_equals_in_process_and_survives_a_killed_actor(local_ray, minilm_int8, tmp_path):
    import psutil

    inputs = write_inputs(tmp_path, 900)
    here = embed_files(minilm_int8, inputs, tmp_path / "here", id_field="id", part_rows=100)
    errors: list[BaseException] = []

    def job() -> None:
        try:
            embed_files(minilm_int8, inputs, tmp_path / "ray", id_field="id", part_rows=100, ray=True, threads=1)
        except BaseException as e:  # reported below
            errors.append(e)

    thread = threading.Thread(target=job)
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and thread.is_alive():
        alive = [p for p in psutil.process_iter(["cmdline"]) if "EmbedBatch" in " ".join(p.info["cmdline"] or [])]
        parts = (
            json.loads((tmp_path / "ray" / JOB).read_text()).get("parts", {})
            if (tmp_path / "ray" / JOB).exists()
            else {}
        )
        if alive and len(parts) >= 1:
            killed = alive[0].pid  # an actor process (titled ray::MapWorker(MapBatches(EmbedBatch)))
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.1)
    thread.join(300)
    assert not errors, errors
    assert killed is not None, "the job ended before an actor could be killed"
    ids_here, v_here = all_vectors(tmp_path / "here")
    ids_ray, v_ray = all_vectors(tmp_path / "ray")
    assert ids_ray == ids_here and len(set(ids_ray)) == 900 == here.rows
    assert float((v_here * v_ray).sum(axis=1).min()) >= 0.99999


def test_ray_two_node_cluster(minilm_int8, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    try:
        inputs = write_inputs(tmp_path, 300)
        here = embed_files(minilm_int8, inputs, tmp_path / "here", part_rows=100)
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        there = embed_files(minilm_int8, inputs, tmp_path / "ray", part_rows=100, ray=cluster.address, actors=2)
        assert there.rows == here.rows == 300
        ids_here, v_here = all_vectors(tmp_path / "here")
        ids_ray, v_ray = all_vectors(tmp_path / "ray")
        assert ids_ray == ids_here
        assert float((v_here * v_ray).sum(axis=1).min()) >= 0.99999
    finally:
        ray.shutdown()
        cluster.shutdown()

"""The edge-bge command line: inputs and outputs of embed, rerank, info, bench, serve; exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_bge import Embedder
from edge_bge.bench import bench_texts
from edge_bge.cli import build_parser, main
from edge_bge.cli.serve import api_key as _api_key

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tiny_fp32: Path) -> Embedder:
    return Embedder(tiny_fp32)


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def _stdin(monkeypatch: pytest.MonkeyPatch, text: str, *, tty: bool = False) -> None:
    stream = io.StringIO(text)
    stream.isatty = lambda: tty  # type: ignore[method-assign]
    monkeypatch.setattr(sys, "stdin", stream)


def test_embed_arguments_print_json_lines_with_exact_vectors(tiny_fp32, tiny, capsys):
    assert main(["embed", str(tiny_fp32), "first text", "second text"]) == 0
    rows = _lines(capsys.readouterr().out)
    assert [r["text"] for r in rows] == ["first text", "second text"]
    np.testing.assert_array_equal(
        np.array([r["embedding"] for r in rows], np.float32), tiny.embed(["first text", "second text"])
    )


def test_embed_stdin_skips_blank_lines_and_queries_get_the_instruction(tiny_fp32, tiny, capsys, monkeypatch):
    _stdin(monkeypatch, "where is it?\n\n  \nwho knows\n")
    assert main(["embed", str(tiny_fp32), "--queries"]) == 0
    rows = _lines(capsys.readouterr().out)
    assert [r["text"] for r in rows] == ["where is it?", "who knows"]
    want = tiny.embed_queries(["where is it?", "who knows"])
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows]), want, atol=1e-6)
    assert not np.allclose(want, tiny.embed(["where is it?", "who knows"]))


def test_embed_txt_to_npy_and_texts_after_options(tiny_fp32, tiny, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("alpha\n\nbeta gamma\ndelta\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    assert main(["embed", str(tiny_fp32), "--input", str(src), "-o", str(out)]) == 0
    assert capsys.readouterr().err == ""  # no progress bar when stderr is not a terminal
    np.testing.assert_array_equal(np.load(out), tiny.embed(["alpha", "beta gamma", "delta"]))
    out2 = tmp_path / "args.npy"
    assert main(["embed", str(tiny_fp32), "-o", str(out2), "one", "two"]) == 0
    np.testing.assert_array_equal(np.load(out2), tiny.embed(["one", "two"]))


def test_embed_jsonl_field_keeps_the_records(tiny_fp32, tiny, tmp_path):
    src = tmp_path / "docs.jsonl"
    src.write_text('{"id": 1, "body": "first"}\n\n{"id": 2, "body": "zweite"}\n', encoding="utf-8")
    out = tmp_path / "docs.out.jsonl"
    assert main(["embed", str(tiny_fp32), "-i", str(src), "--field", "body", "-o", str(out)]) == 0
    rows = _lines(out.read_text(encoding="utf-8"))
    assert [(r["id"], r["body"]) for r in rows] == [(1, "first"), (2, "zweite")]
    np.testing.assert_array_equal(np.array([r["embedding"] for r in rows], np.float32), tiny.embed(["first", "zweite"]))


def test_progress_bar_on_files_only_when_stderr_is_a_terminal(tiny_fp32, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in.txt"
    src.write_text("a\nb\nc\n", encoding="utf-8")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["embed", str(tiny_fp32), "-i", str(src), "-o", str(tmp_path / "o.npy")]) == 0
    assert "3/3" in capsys.readouterr().err
    assert main(["embed", str(tiny_fp32), "x", "-o", str(tmp_path / "p.npy")]) == 0  # arguments: no bar
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("argv", "stdin_tty", "message"),
    [
        (["embed", "{b}"], True, "no texts"),
        (["embed", "{b}", "text", "-i", "x.txt"], False, "not both"),
        (["embed", "{b}", "text", "-o", "out.csv"], False, ".npy or .jsonl"),
        (["embed", "{b}", "-i", "in.csv"], False, ".txt"),
        (["embed", "{b}", "text", "--bogus"], False, "unrecognized arguments"),
        (["rerank", "{b}", "doc"], False, "--query"),
        (["rerank", "{b}", "-q", "q", "doc", "--top-k", "0"], False, "--top-k"),
        (["serve", "{b}", "--max-items", "10", "--max-queue", "5"], False, "max_queue_items"),
        (["serve", "{b}", "--api-key", "a", "--api-key-file", "f"], False, "not allowed with"),
        (["bench", "{b}", "--texts", "0"], False, "at least 1"),
        (["frobnicate"], False, "invalid choice"),
    ],
)
def test_usage_errors_exit_2(tiny_fp32, capsys, monkeypatch, argv, stdin_tty, message):
    _stdin(monkeypatch, "", tty=stdin_tty)
    assert main([a.replace("{b}", str(tiny_fp32)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_empty_api_key_file_is_a_usage_error(tiny_fp32, tmp_path, capsys):
    key = tmp_path / "key"
    key.write_text("\n", encoding="utf-8")
    assert main(["serve", str(tiny_fp32), "--api-key-file", str(key)]) == 2
    assert "is empty" in capsys.readouterr().err


def test_api_key_comes_from_the_file_the_flag_or_the_environment(tmp_path, monkeypatch):
    parser = build_parser()
    key = tmp_path / "key"
    key.write_text("  from-file\n", encoding="utf-8")
    monkeypatch.setenv("EDGE_BGE_API_KEY", "from-env")
    assert _api_key(parser.parse_args(["serve", "b", "--api-key-file", str(key)])) == "from-file"
    assert _api_key(parser.parse_args(["serve", "b", "--api-key", "from-flag"])) == "from-flag"
    assert _api_key(parser.parse_args(["serve", "b"])) == "from-env"
    monkeypatch.delenv("EDGE_BGE_API_KEY")
    assert _api_key(parser.parse_args(["serve", "b"])) is None


def test_errors_exit_with_one_line(tiny_fp32, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 5}\n', encoding="utf-8")
    cases = [
        (["embed", str(tmp_path / "missing"), "x"], "bundle directory not found"),
        (["embed", str(tiny_fp32), "-i", str(bad)], "bad.jsonl:2: expected a JSON object with a string field 'text'"),
        (["embed", str(tiny_fp32), "-i", str(tmp_path / "absent.txt")], "absent.txt"),
        (["rerank", str(tiny_fp32), "-q", "q", "doc"], "rerank needs one of kind 'reranker'"),
        (["build-engine", str(tiny_fp32), "--cache-dir", str(tmp_path)], "exported with --target tensorrt"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("edge-bge: error: ") and message in err, err
    # serve: a bundle it cannot load is a configuration fault, exit 2 (an orchestrator need not retry)
    assert main(["serve", str(tmp_path), "--no-warmup"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "edge_bge.json not found" in err, err


def test_debug_shows_the_traceback_only_when_asked(tmp_path):
    base = [sys.executable, "-m", "edge_bge"]
    quiet = subprocess.run([*base, "embed", str(tmp_path), "x"], capture_output=True, text=True, cwd=ROOT)
    loud = subprocess.run([*base, "embed", str(tmp_path), "x", "--debug"], capture_output=True, text=True, cwd=ROOT)
    assert quiet.returncode == 1 and quiet.stderr.count("\n") == 1 and "Traceback" not in quiet.stderr
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "ManifestError" in loud.stderr


def test_info_reports_manifest_parity_and_providers(tiny_fp32, capsys):
    assert main(["info", str(tiny_fp32), "--json", "--providers", "cpu"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["manifest"]["kind"] == "embedding" and info["manifest"]["dim"] == 32
    assert "summary" in info["manifest"]["parity"]
    assert "CPUExecutionProvider" in info["providers"]["available"]
    assert info["providers"]["chosen"] == ["CPUExecutionProvider"]
    assert main(["info", str(tiny_fp32)]) == 0
    text = capsys.readouterr().out
    assert "parity     against sentence-transformers: cosine_min" in text
    assert "chosen: CPUExecutionProvider" in text and 'query      "Represent this sentence' in text


def test_bench_measures_the_built_in_mixed_set(tiny_fp32, tiny, capsys):
    texts = bench_texts(60)
    assert texts == bench_texts(60)  # fixed
    lengths = tiny.count_tokens(texts)
    assert min(lengths) < 20 and max(lengths) >= 200
    assert main(["bench", str(tiny_fp32), "--texts", "24", "--repeat", "2", "--latency-samples", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["texts"] == 24 and result["tokens"] == sum(tiny.count_tokens(bench_texts(24)))
    assert result["throughput_texts_per_s"] > 0 and len(result["batch_seconds"]) == 2
    assert 0 < result["latency_ms_p50"] <= result["latency_ms_p99"]


def test_rerank_command_orders_documents(bundles, tiny_reranker_dir, capsys):
    from edge_bge import Reranker

    bundle = bundles.get(tiny_reranker_dir, "fp32")
    docs = ["pandas are bears", "the stock market fell", "bamboo forests in China"]
    assert main(["rerank", str(bundle), "-q", "what do pandas eat?", *docs]) == 0
    out = capsys.readouterr().out
    want = Reranker(bundle).rerank("what do pandas eat?", docs)
    assert [r.text for r in want][0] in out.splitlines()[0]

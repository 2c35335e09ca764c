"""edge-bge eval: retrieval metrics on the shipped dataset, against pytrec_eval and by hand; bge-m3 modes;
the reranker; the comparison and its exit codes; bad input."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval

from edge_bge import Embedder, Reranker
from edge_bge.cli import main
from edge_bge.evaluation import evaluate, load_data, markdown, mean_metrics, ndcg_at_k

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "eval-data"
METRICS = ["ndcg@10", "recall@10", "recall@100", "mrr@10"]


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["eval", *map(str, argv)])
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def minilm_cli(minilm_fp32, minilm_int8, tmp_path_factory):
    """fp32 against int8 on the shipped dataset through the command line, with --out and --plot."""
    tmp = tmp_path_factory.mktemp("eval")
    rc, out, err = _cli([minilm_fp32, minilm_int8, "--data", DATA, "--out", tmp / "r.json", "--plot", tmp / "r.png"])
    return rc, out, err, tmp


@pytest.fixture(scope="module")
def m3_fp32(bundles, tiny_m3_dir):
    return bundles.get(tiny_m3_dir, "fp32")


@pytest.fixture(scope="module")
def reranker_fp32(bundles, tiny_reranker_dir):
    return bundles.get(tiny_reranker_dir, "fp32")


# ---- MiniLM fp32 vs int8 on the shipped dataset ----------------------------------------------------
def test_fp32_vs_int8_table_json_and_plot(minilm_cli, minilm_fp32, minilm_int8):
    rc, out, err, tmp = minilm_cli
    assert rc == 0, err
    report = json.loads((tmp / "r.json").read_text())
    assert (report["queries"], report["documents"], report["queries_left_out"], report["k"]) == (250, 450, 0, 10)
    fp32, int8 = report["bundles"]
    assert (fp32["path"], fp32["precision"], int8["path"], int8["precision"]) == (
        str(minilm_fp32),
        "fp32",
        str(minilm_int8),
        "int8",
    )
    assert fp32["name"] == int8["name"] == "all-minilm-l6-v2"
    for b in (fp32, int8):
        assert list(b["modes"]) == ["dense"] and b["modes"]["dense"]["scored"] == "all documents"
        assert all(0.0 <= b["modes"]["dense"][m] <= 1.0 for m in METRICS)
    f, i = fp32["modes"]["dense"], int8["modes"]["dense"]
    assert f["ndcg@10"] > 0.4  # a real retrieval task the model solves, far above chance (about 0.01)
    assert f["recall@10"] <= f["recall@100"] and f["mrr@10"] <= f["recall@10"]
    assert f["ndcg@10"] >= i["ndcg@10"] - 0.02
    for m in METRICS:
        assert int8["delta"]["dense"][m] == pytest.approx(i[m] - f[m], abs=1e-12)
        assert fp32["delta"]["dense"][m] == 0.0
    lines = out.splitlines()
    assert lines[0].startswith("| bundle | precision | mode | nDCG@10 | R@10 | R@100 | MRR@10 | queries | docs |")
    assert lines[2].startswith(f"| {minilm_fp32.name} | fp32 | dense | {f['ndcg@10']:.4f} | ")
    delta = 100 * int8["delta"]["dense"]["ndcg@10"]
    assert lines[3].startswith(f"| {minilm_int8.name} | int8 | dense | {i['ndcg@10']:.4f} ({delta:+.2f}) | ")
    assert lines[3].endswith("| 250 | 450 |")
    assert (tmp / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fail_below_exit_code_both_ways(minilm_fp32, minilm_int8, tiny_fp32, tmp_path):
    # a pairs file from the shipped data: 60 queries, their documents and 60 distractors as negatives
    docs = [json.loads(line)["text"] for line in (DATA / "corpus.jsonl").open()]
    queries = [json.loads(line)["text"] for line in (DATA / "queries.jsonl").open()][:60]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"query": q, "positive": docs[n], "negatives": [docs[300 + n]]}) + "\n"
            for n, q in enumerate(queries)
        )
    )
    rc, out, err = _cli([minilm_fp32, minilm_int8, "--data", pairs, "--fail-below", "0.05"])
    assert rc == 0, err
    assert "| 60 | 120 |" in out
    # a random tiny BERT loses far more than one point against MiniLM
    rc, out, err = _cli([minilm_fp32, tiny_fp32, "--data", pairs, "--fail-below", "0.01", "--out", tmp_path / "r.json"])
    assert rc == 1
    assert f"{tiny_fp32} dense: nDCG@10 -0." in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["bundles"][1]["delta"]["dense"]["ndcg@10"] < -0.2 and report["failed"]
    rc, _, err = _cli([minilm_fp32, tiny_fp32, "--data", pairs, "--fail-below", "1"])
    assert rc == 0, err


# ---- metrics: pytrec_eval and by hand --------------------------------------------------------------
def test_metrics_match_pytrec_eval_on_a_real_run(minilm_fp32):
    data = load_data(DATA)
    report, (result,) = evaluate([minilm_fp32], data)
    run = result.runs["dense"]
    # graded qrels: the true document grade 2, another retrieved document and one far away grade 1
    qrels = {
        qid: {data.doc_ids[n]: 2, data.doc_ids[int(run.index[n, 3])]: 1, data.doc_ids[(n + 7) % 450]: 1}
        for n, qid in enumerate(data.query_ids)
    }
    scored = {
        qid: {data.doc_ids[i]: float(s) for i, s in zip(run.index[n], run.scores[n], strict=True)}
        for n, qid in enumerate(data.query_ids)
    }
    cut10 = {qid: dict(list(docs.items())[:10]) for qid, docs in scored.items()}
    rankings = {qid: [data.doc_ids[i] for i in run.index[n]] for n, qid in enumerate(data.query_ids)}
    for rels in (data.qrels, qrels):
        trec = pytrec_eval.RelevanceEvaluator(rels, {"ndcg_cut.10", "recall.10", "recall.100"}).evaluate(scored)
        rr = pytrec_eval.RelevanceEvaluator(rels, {"recip_rank"}).evaluate(cut10)
        ours = mean_metrics(rankings, rels, 10)
        for name, key, table in [
            ("ndcg@10", "ndcg_cut_10", trec),
            ("recall@10", "recall_10", trec),
            ("recall@100", "recall_100", trec),
            ("mrr@10", "recip_rank", rr),
        ]:
            assert ours[name] == pytest.approx(np.mean([table[q][key] for q in rels]), abs=1e-9), name
        per_query = [ndcg_at_k(rankings[q], rels[q], 10) for q in rels]
        np.testing.assert_allclose(per_query, [trec[q]["ndcg_cut_10"] for q in rels], atol=1e-9)
    assert report["bundles"][0]["modes"]["dense"]["ndcg@10"] == pytest.approx(
        mean_metrics(rankings, data.qrels, 10)["ndcg@10"]
    )


def test_toy_ndcg_by_hand():
    qrels = {"q1": {"a": 1}, "q2": {"a": 2, "b": 1}, "q3": {"x": 1, "y": 0}}
    rankings = {"q1": ["a", "b", "c"], "q2": ["c", "b", "a"], "q3": ["a", "y"]}
    # q1: 1; q2: DCG = 0 + 1/log2(3) + 2/log2(4), ideal = 2/log2(2) + 1/log2(3); q3: 0
    q2 = (1 / math.log2(3) + 2 / 2) / (2 + 1 / math.log2(3))
    assert q2 == pytest.approx(0.6199062332840657, abs=1e-15)
    got = mean_metrics(rankings, qrels, 10)
    assert got["ndcg@10"] == pytest.approx((1 + q2 + 0) / 3, abs=1e-15)
    assert got["mrr@10"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert got["recall@10"] == pytest.approx(2 / 3)
    assert mean_metrics(rankings, qrels, 1)["ndcg@1"] == pytest.approx(1 / 3)  # only q1's first is relevant
    run = {q: {d: 10.0 - r for r, d in enumerate(docs)} for q, docs in rankings.items()}
    trec = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    assert [trec[q]["ndcg_cut_10"] for q in ("q1", "q2", "q3")] == pytest.approx([1.0, q2, 0.0], abs=1e-12)


# ---- bge-m3 modes and the reranker -----------------------------------------------------------------
@pytest.mark.parametrize("large_corpus", [10_000, 100])  # every document, or each query's dense top-100
def test_m3_all_modes_and_hybrid_is_the_weighted_scores(m3_fp32, reranker_fp32, large_corpus):
    data = load_data(DATA)
    report, (result,) = evaluate([m3_fp32], data, reranker=reranker_fp32, large_corpus=large_corpus)
    assert list(result.runs) == ["dense", "sparse", "colbert", "hybrid", "dense+rerank"]
    modes = report["bundles"][0]["modes"]
    for mode, figures in modes.items():
        assert all(0.0 <= figures[m] <= 1.0 for m in METRICS), mode
    expected = "all documents" if large_corpus > 450 else "dense top-100"
    assert [modes[m]["scored"] for m in ("dense", "sparse", "colbert", "hybrid")] == ["all documents"] + [expected] * 3
    assert report["hybrid_weights"] == {"dense": 1.0, "sparse": 1.0, "colbert": 1.0}  # Embedder.compute_score's
    table = markdown(report)
    assert "hybrid = (1.0 dense + 1.0 sparse + 1.0 colbert) / sum of weights." in table
    assert ("scored each query's dense top-100 only" in table) == (large_corpus < 450)
    assert f"dense+rerank: each query's dense top-100 reordered by {reranker_fp32}." in table
    # each mode's scores are those of the project's pairwise scoring (compute_score) for the documents it ranked
    model = Embedder(m3_fp32)
    for mode, key in [("sparse", "sparse"), ("colbert", "colbert"), ("hybrid", "colbert+sparse+dense")]:
        run = result.runs[mode]
        for q in (0, 1, 77):
            pairs = [(data.queries[q], data.docs[i]) for i in run.index[q, :4]]
            parts = model.compute_score(pairs)
            np.testing.assert_allclose(run.scores[q, :4], parts[key], atol=2e-5)
            if mode == "hybrid":
                weighted = (parts["dense"] + parts["sparse"] + parts["colbert"]) / 3
                np.testing.assert_allclose(run.scores[q, :4], weighted, atol=2e-5)
            assert list(run.scores[q]) == sorted(run.scores[q], reverse=True)
    # dense+rerank: the dense top-100 in the reranker's order
    dense, reranked = result.runs["dense"], result.runs["dense+rerank"]
    assert modes["dense+rerank"]["recall@100"] == modes["dense"]["recall@100"]
    for q in (0, 5):
        assert sorted(reranked.index[q]) == sorted(dense.index[q])
        logits = Reranker(reranker_fp32).score([(data.queries[q], data.docs[i]) for i in reranked.index[q]])
        np.testing.assert_allclose(reranked.scores[q], logits, atol=1e-5)


# ---- bad input: one line on stderr, exit 2 ---------------------------------------------------------
def _beir(tmp_path: Path, qrels: str | None) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(DATA / "corpus.jsonl", root)
    shutil.copy(DATA / "queries.jsonl", root)
    if qrels is not None:
        (root / "qrels").mkdir()
        (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


@pytest.mark.parametrize(
    "case, message",
    [
        ("no qrels", "no qrels file "),
        ("unknown docs", "7 corpus ids in the qrels are not in the corpus: 'x0', 'x1', 'x2', 'x3', 'x4' and 2 more"),
        ("unknown queries", "1 query ids in the qrels are not in queries.jsonl: 'nope'"),
        ("no relevant", "no query has a relevant document (grade >= 1): nothing to evaluate"),
        ("empty pairs", "no pairs"),
        ("sparse on dense", "mode 'sparse' needs a bundle of kind 'm3'; {tiny} is of kind 'embedding'"),
        ("reranker as bundle", "{reranker} is a reranker bundle: give it with --reranker"),
        ("embedder as reranker", "--reranker {tiny} is a bundle of kind 'embedding', not 'reranker'"),
        ("missing bundle", "no bundle folder {tmp}/nowhere"),
        ("unknown mode", "unknown mode 'lexical'; the modes are dense, sparse, colbert, hybrid"),
    ],
)
def test_bad_input_exits_2_with_one_line(case, message, tiny_fp32, reranker_fp32, tmp_path):
    bundle, extra = [tiny_fp32], []
    data: Path = DATA
    if case == "no qrels":
        data = _beir(tmp_path, None)
    elif case == "unknown docs":
        data = _beir(tmp_path, "q0\td0\t1\n" + "".join(f"q{n}\tx{n}\t1\n" for n in range(7)))
    elif case == "unknown queries":
        data = _beir(tmp_path, "q0\td0\t1\nnope\td1\t1\n")
    elif case == "no relevant":
        data = _beir(tmp_path, "q0\td0\t0\nq1\td1\t0\n")
    elif case == "empty pairs":
        data = tmp_path / "pairs.jsonl"
        data.write_text("\n")
    elif case == "sparse on dense":
        extra = ["--modes", "dense,sparse"]
    elif case == "reranker as bundle":
        bundle = [tiny_fp32, reranker_fp32]
    elif case == "embedder as reranker":
        extra = ["--reranker", tiny_fp32]
    elif case == "missing bundle":
        bundle = [tiny_fp32, tmp_path / "nowhere"]
    elif case == "unknown mode":
        extra = ["--modes", "lexical"]
    rc, out, err = _cli([*bundle, "--data", data, *extra])
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("edge-bge: error: "), err
    assert message.format(tiny=tiny_fp32, reranker=reranker_fp32, tmp=tmp_path) in err, err
    if case == "no qrels":
        assert str(data / "qrels" / "test.tsv") in err

"""Servers that fit containers (issue 11, item 4): CPU quotas, thread spinning, EDGE_BGE_* variables,
served model names, JSON logs."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from edge_bge import Embedder, Reranker
from edge_bge import providers as P
from edge_bge.cli import build_parser, main
from edge_bge.cli.serve import flags_from_env as _flags_from_env
from edge_bge.server import Registry, Served, ServerConfig

from .server.helpers import cos, running, wait_ready

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tiny_fp32: Path) -> Embedder:
    return Embedder(tiny_fp32)


@pytest.fixture(scope="module")
def reranker(bundles: Any, tiny_reranker_dir: Path) -> Reranker:
    return Reranker(bundles.get(tiny_reranker_dir, "fp32"))


# ---- threads from the CPU quota ----------------------------------------------------------------------
def fake_root(tmp_path: Path, proc_cgroup: str, files: dict[str, str | bytes | None]) -> Path:
    """A filesystem root with /proc/self/cgroup and files under /sys/fs/cgroup (None: a directory)."""
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(proc_cgroup)
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    for name, content in files.items():
        path = tmp_path / "sys/fs/cgroup" / name
        if content is None:
            path.mkdir(parents=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return tmp_path


V2_HOST = "0::/kubepods.slice/pod1.slice/cri-abc.scope\n"
V1_DOCKER = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n2:cpuset:/docker/abc\n0::/\n"


@pytest.mark.parametrize(
    ("proc_cgroup", "files", "want"),
    [
        # docker --cpus 2.5 (cgroup v2, own namespace): 2 threads, rounded down
        ("0::/\n", {"cpu.max": "250000 100000\n"}, (2, "cgroup v2 quota")),
        # no limit
        ("0::/\n", {"cpu.max": "max 100000\n"}, (16, "affinity")),
        # Kubernetes on the host's view: the pod's limit binds the container whose own cpu.max says max
        (
            V2_HOST,
            {
                "kubepods.slice/pod1.slice/cpu.max": "300000 100000",
                "kubepods.slice/pod1.slice/cri-abc.scope/cpu.max": "max 100000",
            },
            (3, "cgroup v2 quota"),
        ),
        # /proc/self/cgroup names the host's path; only the container's own cgroup is mounted
        ("0::/system.slice/docker-abc.scope\n", {"cpu.max": "400000 100000"}, (4, "cgroup v2 quota")),
        # a quota above the affinity mask: the mask counts
        ("0::/\n", {"cpu.max": "3200000 100000"}, (16, "affinity")),
        # under one CPU: still one thread
        ("0::/\n", {"cpu.max": "50000 100000"}, (1, "cgroup v2 quota")),
        # cgroup v1 (docker on an older host): the cpu controller's hierarchy, host path not mounted
        (
            V1_DOCKER,
            {"cpu,cpuacct/cpu.cfs_quota_us": "150000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
            (1, "cgroup v1 quota"),
        ),
        (
            V1_DOCKER,
            {"cpu,cpuacct/cpu.cfs_quota_us": "600000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
            (6, "cgroup v1 quota"),
        ),
        (
            V1_DOCKER,
            {"cpu,cpuacct/cpu.cfs_quota_us": "-1", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            (16, "affinity"),
        ),
        # v1 mounted as plain "cpu", the hybrid layout
        (
            "1:cpu:/\n0::/\n",
            {"cpu/cpu.cfs_quota_us": "200000", "cpu/cpu.cfs_period_us": "100000"},
            (2, "cgroup v1 quota"),
        ),
        # no cgroup files at all (not Linux-like, or /sys not mounted)
        ("0::/\n", {}, (16, "affinity")),
    ],
)
def test_threads_come_from_the_smaller_of_affinity_and_cgroup_quota(tmp_path, proc_cgroup, files, want):
    root = fake_root(tmp_path, proc_cgroup, files)
    assert P.cpu_budget(root=root, affinity=16) == want


@pytest.mark.parametrize(
    ("proc_cgroup", "files", "logged"),
    [
        ("0::/\n", {"cpu.max": None}, "cannot read"),  # a directory where the file should be
        ("0::/\n", {"cpu.max": b"\xff\xfe\x00\x01"}, "cannot read"),  # not text
        ("0::/\n", {"cpu.max": "lots of CPUs please"}, "expected a quota and a period"),
        ("0::/\n", {"cpu.max": "two 100000"}, "invalid literal"),
        ("0::/\n", {"cpu.max": "0 100000"}, "must be positive"),
        ("0::/\n", {"cpu.max": ""}, "expected a quota and a period"),
        (V1_DOCKER, {"cpu,cpuacct/cpu.cfs_quota_us": "150000"}, "cpu.cfs_period_us is missing"),
        (V1_DOCKER, {"cpu,cpuacct/cpu.cfs_quota_us": "1e5", "cpu,cpuacct/cpu.cfs_period_us": "100000"}, "invalid"),
    ],
)
def test_unreadable_or_garbage_cgroup_files_fall_back_to_affinity_with_a_debug_log(
    tmp_path, caplog, proc_cgroup, files, logged
):
    root = fake_root(tmp_path, proc_cgroup, files)
    with caplog.at_level(logging.DEBUG, logger="edge_bge"):
        assert P.cpu_budget(root=root, affinity=8) == (8, "affinity")
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("ignoring the cgroup CPU quota" in m and logged in m for m in debug), debug


def test_no_proc_cgroup_is_affinity_and_the_real_budget_is_sane(tmp_path):
    assert P.cpu_budget(root=tmp_path, affinity=3) == (3, "affinity")
    n, source = P.cpu_budget()
    assert 1 <= n <= len(os.sched_getaffinity(0))
    assert source in ("affinity", "cgroup v1 quota", "cgroup v2 quota")
    assert P.default_threads() == n


def test_a_quota_sets_the_session_threads_and_info_shows_its_source(tmp_path, monkeypatch, tiny_fp32):
    root = fake_root(tmp_path, "0::/\n", {"cpu.max": "150000 100000"})
    budget = functools.partial(P.cpu_budget, root=root, affinity=64)
    monkeypatch.setattr(P.machine, "cpu_budget", budget)  # what sessions use
    monkeypatch.setattr(P, "cpu_budget", budget)  # what /info reports
    model = Embedder(tiny_fp32)
    assert model.session.get_session_options().intra_op_num_threads == 1
    assert Embedder(tiny_fp32, threads=3).session.get_session_options().intra_op_num_threads == 3
    with running([model]) as s:
        wait_ready(s.url)
        info = s.client.get("/info").json()
    assert info["cpus"] == {"usable": 1, "source": "cgroup v2 quota"}
    assert info["models"][0]["threads"] == 1


# ---- spinning ------------------------------------------------------------------------------------
def test_spinning_is_a_session_option(tiny_fp32):
    def spin_entry(model: Embedder) -> str:
        return model.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")

    assert spin_entry(Embedder(tiny_fp32)) == "1"  # in-process default: ONNX Runtime's, spinning
    quiet = Embedder(tiny_fp32, spin=False)
    assert spin_entry(quiet) == "0"
    assert Served(quiet).session_threads[1] is False
    np.testing.assert_array_equal(quiet.embed(["same vectors"]), Embedder(tiny_fp32).embed(["same vectors"]))


# ---- EDGE_BGE_* variables --------------------------------------------------------------------------
@pytest.fixture
def captured(monkeypatch) -> SimpleNamespace:
    """``edge-bge serve`` up to the point of serving: the config and the models it would serve."""
    import edge_bge.server as server

    got = SimpleNamespace(config=None, served=None)

    def fake_serve(served, config, **kw):
        got.served, got.config = served, config

    monkeypatch.setattr(server, "serve", fake_serve)
    for name in list(os.environ):
        if name.startswith("EDGE_BGE_"):
            monkeypatch.delenv(name)
    return got


def test_every_kind_of_value_comes_from_the_environment(captured, tiny_fp32, tmp_path, monkeypatch):
    key = tmp_path / "key"
    key.write_text("file-key\n")
    env = {
        "EDGE_BGE_PORT": "9123",  # int
        "EDGE_BGE_MAX_QUEUE": " 5000 ",
        "EDGE_BGE_REQUEST_TIMEOUT": "12.5",  # float
        "EDGE_BGE_TRUNCATE": "no",  # bool (BooleanOptionalAction)
        "EDGE_BGE_WARMUP": "FALSE",
        "EDGE_BGE_LENIENT_CONTENT_TYPE": "yes",  # bool (store_true)
        "EDGE_BGE_STRICT_MODEL_NAMES": "1",
        "EDGE_BGE_SPIN": "true",
        "EDGE_BGE_NO_VERIFY": "0",
        "EDGE_BGE_HOST": "127.0.0.2",  # string
        "EDGE_BGE_PROVIDERS": "cpu",
        "EDGE_BGE_API_KEY_FILE": str(key),
        "EDGE_BGE_CORS_ORIGIN": "https://a.example, https://b.example",  # list
        "EDGE_BGE_SERVED_MODEL_NAME": "from-env",
        "EDGE_BGE_MAX_ITEMS": "",  # empty: unset
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["serve", str(tiny_fp32)]) == 0
    c = captured.config
    assert (c.port, c.max_queue_items, c.request_timeout) == (9123, 5000, 12.5)
    assert (c.truncate, c.warmup, c.lenient_content_type, c.strict_model_names) == (False, False, True, True)
    assert (c.host, c.api_key, c.cors_origins) == ("127.0.0.2", "file-key", ("https://a.example", "https://b.example"))
    assert c.max_items == ServerConfig().max_items
    (served,) = captured.served
    assert served.name == "from-env" and served.session_threads[1] is True  # EDGE_BGE_SPIN=true
    assert list(served.model.providers) == ["CPUExecutionProvider"]


def test_a_flag_given_wins_over_its_variable(captured, tiny_fp32, monkeypatch):
    monkeypatch.setenv("EDGE_BGE_PORT", "9123")
    monkeypatch.setenv("EDGE_BGE_TRUNCATE", "1")
    monkeypatch.setenv("EDGE_BGE_CORS_ORIGIN", "https://a.example,https://b.example")
    monkeypatch.setenv("EDGE_BGE_API_KEY_FILE", "/nonexistent/key")
    monkeypatch.setenv("EDGE_BGE_MAX_ITEMS", "not a number")  # never read: the flag is given
    monkeypatch.setenv("EDGE_BGE_SPIN", "1")
    argv = ["serve", str(tiny_fp32), "--port", "9200", "--no-truncate", "--cors-origin", "https://c.example"]
    argv += ["--api-key", "flag-key", "--max-items", "10", "--no-spin", "--no-warmup"]
    assert main(argv) == 0
    c = captured.config
    assert (c.port, c.truncate, c.cors_origins, c.api_key, c.max_items) == (
        9200,
        False,
        ("https://c.example",),
        "flag-key",
        10,
    )
    assert captured.served[0].session_threads[1] is False
    # without flags: the server default (no spinning), and the existing EDGE_BGE_API_KEY still works
    monkeypatch.delenv("EDGE_BGE_SPIN")
    monkeypatch.delenv("EDGE_BGE_API_KEY_FILE")
    monkeypatch.delenv("EDGE_BGE_MAX_ITEMS")
    monkeypatch.setenv("EDGE_BGE_API_KEY", "env-key")
    assert main(["serve", str(tiny_fp32)]) == 0
    assert captured.config.api_key == "env-key" and captured.config.port == 9123
    assert captured.served[0].session_threads[1] is False


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("EDGE_BGE_PORT", "eighty", "an integer"),
        ("EDGE_BGE_REQUEST_TIMEOUT", "soon", "a number"),
        ("EDGE_BGE_TRUNCATE", "maybe", "1/0, true/false or yes/no"),
        ("EDGE_BGE_JSON_LOGS", "2", "1/0, true/false or yes/no"),
        ("EDGE_BGE_MAX_CONNECTIONS", "1.5", "an integer"),
    ],
)
def test_an_invalid_variable_exits_2_naming_it_and_its_value(
    captured, tiny_fp32, monkeypatch, capsys, name, value, expected
):
    monkeypatch.setenv(name, value)
    assert main(["serve", str(tiny_fp32)]) == 2
    err = capsys.readouterr().err
    assert f"{name}={value!r}" in err and expected in err and "Traceback" not in err
    assert captured.config is None


def test_help_shows_each_variable_next_to_its_flag(capsys):
    assert main(["serve", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # the help's line breaks undone
    out = text[text.index("options:") :]
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = [a for a in serve._actions if a.option_strings and a.dest not in ("help", "debug")]
    assert len(flags) >= 25
    for action in flags:
        long = next(o for o in action.option_strings if o.startswith("--"))
        var = "EDGE_BGE_" + long[2:].upper().replace("-", "_")
        assert f"[${var}]" in out, var
        # beside its own flag: after the flag's name, before the next flag's
        start = out.index(action.option_strings[-1] + " ")
        after = out.find(" --", start + len(action.option_strings[-1]))
        assert start < out.index(f"[${var}]") < (after if after > 0 else len(out)), var


def test_api_key_variables_keep_their_order(tmp_path):
    args = build_parser().parse_args(["serve", "b"])
    key = tmp_path / "k"
    key.write_text("from-file")
    env = {"EDGE_BGE_API_KEY": "from-env", "EDGE_BGE_API_KEY_FILE": str(key)}
    assert _flags_from_env(args, env) == {"api_key": "EDGE_BGE_API_KEY", "api_key_file": "EDGE_BGE_API_KEY_FILE"}
    from edge_bge.cli.serve import api_key as _api_key

    assert _api_key(args) == "from-file"


# ---- model names -----------------------------------------------------------------------------------
def test_one_embedding_model_answers_any_name_from_the_openai_client(tiny):
    with running([Served(tiny, name="my-embedder")]) as s:
        wait_ready(s.url)
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
        texts = ["a container on a small host", "another text"]
        for name in ("text-embedding-3-small", "my-embedder", tiny.manifest.name):
            resp = client.embeddings.create(model=name, input=texts)
            got = np.array([d.embedding for d in resp.data], dtype=np.float32)
            assert cos(got, tiny.embed(texts)).min() >= 1 - 1e-6
            assert resp.model == "my-embedder"  # the served name, as OpenAI and TEI answer
        assert [m.id for m in client.models.list().data] == ["my-embedder"]
        assert s.client.post("/embed", json={"inputs": "x", "model": "whatever"}).status_code == 200


def test_strict_model_names_restores_the_404(tiny):
    with running([Served(tiny, name="my-embedder")], strict_model_names=True) as s:
        wait_ready(s.url)
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.NotFoundError) as e:
            client.embeddings.create(model="text-embedding-3-small", input="x")
        assert "'my-embedder'" in e.value.message and e.value.body["param"] == "model"
        assert client.embeddings.create(model="my-embedder", input="x").model == "my-embedder"


def test_with_several_models_of_the_kind_an_unknown_name_is_a_404_listing_them(tiny, reranker, minilm_fp32):
    other = Embedder(minilm_fp32)
    with running([Served(tiny, name="small"), Served(other, name="mini"), Served(reranker, name="judge")]) as s:
        wait_ready(s.url)
        r = s.client.post("/v1/embeddings", json={"input": "x", "model": "text-embedding-3-small"})
        assert r.status_code == 404
        message = r.json()["error"]["message"]
        assert all(f"'{n}'" in message for n in ("small", "mini", "judge"))
        # the one reranker still answers any name on the rerank routes
        r = s.client.post("/rerank", json={"query": "q", "texts": ["a", "b"], "model": "bge-reranker-v2-m3"})
        assert r.status_code == 200 and len(r.json()) == 2
        r = s.client.post("/v1/rerank", json={"query": "q", "documents": ["a"], "model": "rerank-english-v3.0"})
        assert r.status_code == 200 and r.json()["model"] == "judge"
        # a served name of the wrong kind stays an error
        r = s.client.post("/rerank", json={"query": "q", "texts": ["a"], "model": "mini"})
        assert r.status_code == 400 and "of kind" in r.json()["error"]


def test_served_model_names_need_one_per_bundle(captured, tiny_fp32, minilm_fp32, capsys):
    assert main(["serve", str(tiny_fp32), str(minilm_fp32), "--served-model-name", "a"]) == 2
    assert "one --served-model-name per bundle" in capsys.readouterr().err
    argv = ["serve", str(tiny_fp32), str(minilm_fp32), "--served-model-name", "a", "--served-model-name", "a"]
    assert main(argv) == 2
    argv = ["serve", str(tiny_fp32), str(minilm_fp32), "--served-model-name", "a", "--served-model-name", "b"]
    assert main([*argv, "--no-warmup"]) == 0
    assert [s.name for s in captured.served] == ["a", "b"]
    registry = Registry(captured.served)
    assert registry.pick("embed", "b", route="/embed") is captured.served[1]


# ---- JSON logs -------------------------------------------------------------------------------------
SECRET = "zebra-quokka-7731 confidential"


def json_server(bundle: Path, tmp: Path, *args: str) -> Any:
    from .server.helpers import serve_process

    return serve_process(bundle, "--json-logs", *args, tmp=tmp)


def traffic(url: str) -> dict[str, httpx.Response]:
    with httpx.Client(base_url=url) as c:
        return {
            "embed": c.post("/v1/embeddings", json={"input": [SECRET, "two"]}, headers={"X-Request-Id": "req-42"}),
            "tei": c.post("/embed", json={"inputs": SECRET}),
            "bad_id": c.get("/health", headers={"X-Request-Id": "has spaces\tand tabs"}),
            "invalid": c.post("/v1/embeddings", json={"input": [SECRET, 5]}),
            "missing": c.get("/nowhere"),
        }


def test_json_logs_one_object_per_line_with_request_ids_and_no_texts(tiny_fp32, tmp_path):
    with json_server(tiny_fp32, tmp_path) as s:
        got = traffic(s.url)
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(30) == 0
    lines = [line for line in s.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(isinstance(r, dict) and {"ts", "level", "event", "message"} <= set(r) for r in records)
    assert SECRET.split()[0] not in s.log()

    events = [r["event"] for r in records]
    for name in ("startup", "warmup", "ready", "drain"):
        assert name in events, events
    startup = next(r for r in records if r["event"] == "startup" and "cpus_source" in r)
    assert startup["cpus"] >= 1 and startup["cpus_source"] in ("affinity", "cgroup v1 quota", "cgroup v2 quota")
    assert list(startup["spinning"].values()) == [False]  # the server's default

    access = {r["request_id"]: r for r in records if r["event"] == "access"}
    assert got["embed"].headers["x-request-id"] == "req-42"
    embed = access["req-42"]
    assert (embed["method"], embed["route"], embed["status"], embed["texts"]) == ("POST", "/v1/embeddings", 200, 2)
    assert embed["tokens"] == got["embed"].json()["usage"]["total_tokens"] and embed["ms"] > 0
    assert "inputs" not in embed
    for what, route, status in (
        ("tei", "/embed", 200),
        ("invalid", "/v1/embeddings", 400),  # OpenAI answers a field that fails validation with 400
        ("missing", "/nowhere", 404),
    ):
        rid = got[what].headers["x-request-id"]
        assert len(rid) == 32 and access[rid]["route"] == route and access[rid]["status"] == status
    assert access[got["invalid"].headers["x-request-id"]]["error"] == "validation"
    assert access[got["tei"].headers["x-request-id"]]["texts"] == 1
    bad = got["bad_id"].headers["x-request-id"]
    assert bad != "has spaces\tand tabs" and len(bad) == 32 and access[bad]["route"] == "/health"


def test_log_texts_puts_the_texts_in_the_access_lines(tiny_fp32, tmp_path):
    with json_server(tiny_fp32, tmp_path, "--log-texts", "--no-warmup") as s:
        traffic(s.url)
    records = [json.loads(line) for line in s.log().splitlines() if line.strip()]
    embed = next(r for r in records if r.get("request_id") == "req-42")
    assert embed["inputs"] == [SECRET, "two"]


def test_log_texts_without_json_logs_is_a_usage_error(captured, tiny_fp32, capsys):
    assert main(["serve", str(tiny_fp32), "--log-texts"]) == 2
    assert "json_logs" in capsys.readouterr().err

"""Prometheus text exposition (format 0.0.4) for the server, without a client library.

Series:
    edge_bge_requests_total{route,status}              counter
    edge_bge_request_failures_total{route,type}        counter (type = errors.Kind)
    edge_bge_request_duration_seconds{route}           histogram, arrival to answer
    edge_bge_queue_duration_seconds{model}             histogram, queued to run start
    edge_bge_inference_duration_seconds{model,op}      histogram, one coalesced run
    edge_bge_batch_texts{model,op}                     histogram, texts per coalesced run
    edge_bge_batch_tokens{model,op}                    histogram, tokens per coalesced run
    edge_bge_batch_requests{model,op}                  histogram, requests per coalesced run
    edge_bge_dropped_total{model,reason}               counter, queued work dropped (disconnect, timeout)
    edge_bge_connections_closed_total{reason}          counter, connections the server closed before a
                                                       request: refused (limit), evicted, header_timeout
    edge_bge_connections_open                          gauge, open HTTP connections (set by ``serve``)
    edge_bge_queue_depth{model}                        gauge, texts waiting
    edge_bge_ready                                     gauge, 1 when /ready answers 200
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Sequence

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TEXTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_TOKENS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_REQUESTS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    items = list(labels) + ([extra] if extra else [])
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _num(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Histogram:
    def __init__(self, name: str, help_: str, buckets: Sequence[float]) -> None:
        self.name, self.help, self.buckets = name, help_, tuple(buckets)
        self.series: dict[Labels, list[float]] = {}  # counts per bucket (+Inf last), then sum

    def observe(self, labels: Labels, value: float) -> None:
        row = self.series.setdefault(labels, [0.0] * (len(self.buckets) + 2))
        row[bisect.bisect_left(self.buckets, value)] += 1
        row[-1] += value

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        for labels, row in sorted(self.series.items()):
            cumulative = 0.0
            for bound, count in zip((*self.buckets, float("inf")), row[:-1], strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else _num(bound)
                out.append(f"{self.name}_bucket{_labels(labels, ('le', le))} {_num(cumulative)}")
            out.append(f"{self.name}_sum{_labels(labels)} {_num(row[-1])}")
            out.append(f"{self.name}_count{_labels(labels)} {_num(cumulative)}")
        return out


class _Counter:
    def __init__(self, name: str, help_: str, kind: str = "counter") -> None:
        self.name, self.help, self.kind = name, help_, kind
        self.series: dict[Labels, float] = {}

    def inc(self, labels: Labels, value: float = 1.0) -> None:
        self.series[labels] = self.series.get(labels, 0.0) + value

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        out += [f"{self.name}{_labels(labels)} {_num(v)}" for labels, v in sorted(self.series.items())]
        return out


class Metrics:
    """Thread-safe: observed from the event loop and from the batchers' worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = _Counter("edge_bge_requests_total", "HTTP requests answered, by route and status.")
        self.failures = _Counter("edge_bge_request_failures_total", "Requests answered with an error, by type.")
        self.dropped = _Counter("edge_bge_dropped_total", "Queued requests dropped before running, by reason.")
        self.connections_closed = _Counter(
            "edge_bge_connections_closed_total",
            "Connections closed by the server before they sent a request: refused (limit), evicted, header_timeout.",
        )
        self.request_seconds = _Histogram(
            "edge_bge_request_duration_seconds", "Seconds from a request's arrival to its answer.", _SECONDS
        )
        self.queue_seconds = _Histogram(
            "edge_bge_queue_duration_seconds", "Seconds a request waited in the queue before its run.", _SECONDS
        )
        self.inference_seconds = _Histogram(
            "edge_bge_inference_duration_seconds", "Seconds one coalesced run took on the model.", _SECONDS
        )
        self.batch_texts = _Histogram("edge_bge_batch_texts", "Texts (or pairs) per coalesced run.", _TEXTS)
        self.batch_tokens = _Histogram("edge_bge_batch_tokens", "Tokens per coalesced run.", _TOKENS)
        self.batch_requests = _Histogram("edge_bge_batch_requests", "Requests per coalesced run.", _REQUESTS)
        self._gauges: dict[str, tuple[str, Callable[[], list[tuple[Labels, float]]]]] = {}

    def gauge(self, name: str, help_: str, read: Callable[[], list[tuple[Labels, float]]]) -> None:
        """Register a gauge read at scrape time."""
        self._gauges[name] = (help_, read)

    def request(self, route: str, status: int, seconds: float, failure: str | None) -> None:
        with self._lock:
            self.requests.inc((("route", route), ("status", str(status))))
            self.request_seconds.observe((("route", route),), seconds)
            if failure is not None:
                self.failures.inc((("route", route), ("type", failure)))

    def run(self, model: str, op: str, *, seconds: float, texts: int, tokens: int, queued: Sequence[float]) -> None:
        labels = (("model", model), ("op", op))
        with self._lock:
            self.inference_seconds.observe(labels, seconds)
            self.batch_texts.observe(labels, texts)
            self.batch_tokens.observe(labels, tokens)
            self.batch_requests.observe(labels, len(queued))
            for q in queued:
                self.queue_seconds.observe((("model", model),), q)

    def drop(self, model: str, reason: str) -> None:
        with self._lock:
            self.dropped.inc((("model", model), ("reason", reason)))

    def connection_closed(self, reason: str) -> None:
        with self._lock:
            self.connections_closed.inc((("reason", reason),))

    def render(self) -> str:
        with self._lock:
            lines: list[str] = []
            for metric in (
                self.requests,
                self.failures,
                self.dropped,
                self.connections_closed,
                self.request_seconds,
                self.queue_seconds,
                self.inference_seconds,
                self.batch_texts,
                self.batch_tokens,
                self.batch_requests,
            ):
                lines += metric.lines()
        for name, (help_, read) in self._gauges.items():
            gauge = _Counter(name, help_, kind="gauge")
            for labels, value in read():
                gauge.inc(labels, value)
            lines += gauge.lines()
        return "\n".join(lines) + "\n"

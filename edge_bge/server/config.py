"""``ServerConfig``: every knob of ``edge-bge serve``, with the reason for each default."""

from __future__ import annotations

from dataclasses import dataclass

from ..batching import DEFAULT_MAX_BATCH_TOKENS
from ..errors import InputError

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """Limits, batching and security settings of the HTTP server (all keyword-only in practice)."""

    # Loopback only: exposing a model server to the network is a decision the operator makes with --host.
    host: str = "127.0.0.1"
    port: int = 8080
    # None: no authentication (fine on loopback). Compared in constant time (hmac.compare_digest).
    api_key: str | None = None
    # Browsers may call the server only from these origins; empty = CORS off (no Access-Control headers).
    cors_origins: tuple[str, ...] = ()

    # Micro-batching. Texts from concurrent requests are coalesced until this many tokens are queued
    # (the Embedder then cuts them into ONNX Runtime calls of at most this many padded tokens).
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS
    # Texts per coalesced run: bounds the memory one run can take regardless of token counts.
    max_batch_items: int = 1024
    # How long the first queued request waits for company when the model is idle. A few ms costs
    # little latency and lets bursts share one run; while a run is busy, requests coalesce anyway.
    batch_wait_ms: float = 2.0
    # Texts waiting (not yet running) per model before new requests get 429: about a few seconds of work.
    max_queue_items: int = 4096

    # Per-request limits (413 beyond them). 2048 items is OpenAI's own limit per request.
    max_items: int = 2048
    max_chars: int = 1_000_000  # characters summed over a request's texts
    max_body_bytes: int = 8 * 1024 * 1024
    # Seconds from a request's arrival until it is answered 504 and its queued work dropped.
    request_timeout: float = 60.0
    # Seconds SIGTERM waits for in-flight requests before the server exits anyway.
    drain_timeout: float = 30.0
    # Over-long texts are truncated to the model's max_length (as sentence-transformers does) unless
    # a request says truncate=false (TEI routes) or the server is started with --no-truncate.
    truncate: bool = True
    # Run the largest batch once before /ready turns 200, so out-of-memory shows at start, not under load.
    warmup: bool = True
    # Seconds suggested to clients in Retry-After when the queue is full or the server is warming up.
    retry_after: int = 1
    # POSTs must say Content-Type: application/json (415 otherwise). A POST without one is what a
    # browser sends as a "simple" cross-origin request, which skips the CORS preflight; True accepts it.
    lenient_content_type: bool = False
    # /tokenize requests admitted at once (running on a pool of half the cores, or waiting for it); more
    # get 429. Tokenizing needs no model, so /tokenize does not queue behind inference; but tokenizing a
    # 1 MB text takes ~0.5 s of CPU, and more threads at it would slow the event loop down.
    max_tokenize_requests: int = 4

    # Connections: a stranger without the key must not be able to stall the server.
    # Open HTTP connections at most. When full, a new connection closes the oldest one that is still
    # waiting for a request (silent or idle); when all are busy with requests it gets a 503 and is
    # closed at once. `serve` lowers it to fit the process's file-descriptor limit (RLIMIT_NOFILE).
    max_connections: int = 1024
    # Seconds a connection has to send complete request headers, counted from its connect or from its
    # previous answer. Silent and trickling (slowloris) connections are closed after it.
    header_timeout: float = 10.0
    # Seconds an idle connection is kept open between requests (at most header_timeout).
    keep_alive_timeout: float = 5.0

    # Model names. OpenAI clients send a model name of their own ("text-embedding-3-small"): a name
    # that no bundle is served under still gets the one bundle that can answer the route, as TEI does.
    # True answers 404 instead. With several bundles able to answer, an unknown name is always a 404.
    strict_model_names: bool = False

    # Logs. True: one JSON object per line on stderr: an access line per request (request id, route,
    # status, model, texts, tokens, ms) and the events (startup, warm-up, drain, errors).
    json_logs: bool = False
    # The request's texts in the JSON access lines. Off by default: texts are users' data, and logs
    # are kept, shipped and read by more people than the texts were meant for.
    log_texts: bool = False

    def __post_init__(self) -> None:
        positive = {
            "port": self.port,
            "max_batch_tokens": self.max_batch_tokens,
            "max_batch_items": self.max_batch_items,
            "max_queue_items": self.max_queue_items,
            "max_items": self.max_items,
            "max_chars": self.max_chars,
            "max_body_bytes": self.max_body_bytes,
            "request_timeout": self.request_timeout,
            "retry_after": self.retry_after,
            "max_tokenize_requests": self.max_tokenize_requests,
            "max_connections": self.max_connections,
            "header_timeout": self.header_timeout,
            "keep_alive_timeout": self.keep_alive_timeout,
        }
        for name, value in positive.items():
            if value <= 0:
                raise InputError(f"{name} must be positive, got {value}")
        if self.batch_wait_ms < 0 or self.drain_timeout < 0:
            raise InputError("batch_wait_ms and drain_timeout must be zero or positive")
        if not 0 < self.port < 65536:
            raise InputError(f"port must be in 1..65535, got {self.port}")
        if self.max_items > self.max_queue_items:
            raise InputError(
                f"max_items ({self.max_items}) must not exceed max_queue_items ({self.max_queue_items}): "
                "a request that large could never be queued"
            )
        if self.keep_alive_timeout > self.header_timeout:
            raise InputError(
                f"keep_alive_timeout ({self.keep_alive_timeout:g} s) must not exceed header_timeout "
                f"({self.header_timeout:g} s): an idle connection must send its next request within header_timeout"
            )
        if self.log_texts and not self.json_logs:
            raise InputError("log_texts puts texts in the JSON access lines: it needs json_logs")
        if self.api_key is not None and not self.api_key:
            raise InputError("the API key is empty")

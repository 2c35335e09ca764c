"""Request ids, access records and JSON logs (``serve --json-logs``).

Every request gets an id: its ``X-Request-Id`` header when it sends a sane one, else a new one; the
answer carries it back in ``X-Request-Id``. While a request runs, ``current()`` is its ``Access``
record, which the service fills in (model, texts, tokens; the texts themselves only with
``log_texts``). With JSON logs each request ends in one access line, and every other log record of
the server (startup, warm-up, drain, errors, uvicorn's own) is one JSON object on a line too::

    {"ts": "2025-01-01T12:00:00.123Z", "level": "info", "event": "access", "message": "POST /v1/embeddings 200",
     "request_id": "...", "method": "POST", "route": "/v1/embeddings", "status": 200, "model": "...",
     "texts": 3, "tokens": 41, "ms": 12.3}
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Access", "JsonFormatter", "RequestIdMiddleware", "current", "event", "use_json_logs"]

log = logging.getLogger("edge_bge")

# An incoming X-Request-Id is kept when it is this short and made of these characters; otherwise the
# server makes one (a client must not be able to write arbitrary text into the logs).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
_ROUTE_CHARS = 200  # an unmatched path is the client's text: logged cut to this length


@dataclass
class Access:
    """What one request did, for its access line."""

    request_id: str
    method: str
    route: str
    status: int | None = None
    model: str | None = None
    texts: int | None = None  # texts (or query-passage pairs) in the request
    tokens: int | None = None  # tokens run through the model
    error: str | None = None  # the error kind of a failed request
    inputs: list[Any] | None = None  # the texts, only when the server logs them (log_texts)

    def fields(self, ms: float, *, with_texts: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "request_id": self.request_id,
            "method": self.method,
            "route": self.route,
            "status": self.status,
            "model": self.model,
            "texts": self.texts,
            "tokens": self.tokens,
            "ms": round(ms, 2),
        }
        if self.error is not None:
            out["error"] = self.error
        if with_texts and self.inputs is not None:
            out["inputs"] = self.inputs
        return out


_current: ContextVar[Access | None] = ContextVar("edge_bge_access", default=None)


def current() -> Access | None:
    """The access record of the request this code runs for (None outside a request)."""
    return _current.get()


def event(name: str, **fields: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the record's event name and fields in JSON logs (ignored by text logs)."""
    return {"event": name, "fields": fields}


class RequestIdMiddleware:
    """Outermost ASGI layer: request id in and out, the access record, and the access line."""

    def __init__(self, app: ASGIApp, *, access_log: bool, log_texts: bool) -> None:
        self.app, self.access_log, self.log_texts = app, access_log, log_texts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers") or [] if k == b"x-request-id"), b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        access = Access(request_id, scope.get("method", ""), scope.get("path", "")[:_ROUTE_CHARS])
        header = (b"x-request-id", request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                access.status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        token = _current.set(access)
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
            if self.access_log:
                if access.status is None:  # the app raised before answering: Starlette answers 500
                    access.status = 500
                ms = (time.perf_counter() - t0) * 1000
                log.info(
                    "%s %s %s",
                    access.method,
                    access.route,
                    access.status,
                    extra=event("access", **access.fields(ms, with_texts=self.log_texts)),
                )


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, event, message, the record's fields, any exception."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        out: dict[str, Any] = {
            "ts": ts,
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or ("error" if record.levelno >= logging.ERROR else "log"),
            "message": record.getMessage(),
        }
        if record.name != "edge_bge":
            out["logger"] = record.name
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        access = current()
        if access is not None and "request_id" not in out:  # an error logged while serving a request
            out["request_id"] = access.request_id
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def use_json_logs(*, debug: bool = False) -> None:
    """Every log record of the process as a JSON line on stderr; edge-bge's own from level info up.

    Once set up, a second call changes nothing."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.captureWarnings(True)  # warnings.warn(...) as records too, not free text on stderr

"""HTTP errors: one table from error kind to status, and the JSON body each dialect expects.

Every failure a route can meet becomes an ``ApiError`` with a ``Kind``; ``TABLE`` gives its HTTP
status (as text-embeddings-inference's router does in one place), and ``render`` writes the body
in the route's dialect:

    OpenAI   {"error": {"message", "type", "param", "code"}}
    TEI      {"error", "error_type"}
    Cohere   {"message", "error_type"}     (also what Jina's clients read)

4xx kinds are the client's fault (an aborted upload is 499, ``CLIENT_CLOSED``): they are counted
by status in /metrics and never logged with a traceback; only ``INTERNAL`` is.
"""

from __future__ import annotations

import enum
import json
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.responses import Response

from ..errors import EdgeBGEError, InferenceError, InputError

__all__ = ["ApiError", "Dialect", "Kind", "TABLE", "JSONResponse", "dialect_for", "from_exception", "render"]


class Kind(str, enum.Enum):
    INVALID_JSON = "invalid_json"
    VALIDATION = "validation"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    TOO_LARGE = "too_large"
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNSUPPORTED = "unsupported"  # the loaded bundle cannot do what the route asks (e.g. /rerank on an embedder)
    OVERLOADED = "overloaded"
    UNAVAILABLE = "unavailable"  # warming up or draining
    TIMEOUT = "timeout"
    BODY_TIMEOUT = "body_timeout"  # the client did not send its whole body within the request deadline
    CLIENT_CLOSED = "client_closed"  # the client went away; nobody reads this answer
    BACKEND = "backend"  # ONNX Runtime failed
    INTERNAL = "internal"


# kind -> (HTTP status, OpenAI error type)
TABLE: dict[Kind, tuple[int, str]] = {
    Kind.INVALID_JSON: (400, "invalid_request_error"),
    Kind.VALIDATION: (422, "invalid_request_error"),
    Kind.UNSUPPORTED: (400, "invalid_request_error"),
    Kind.UNAUTHORIZED: (401, "authentication_error"),
    Kind.NOT_FOUND: (404, "invalid_request_error"),
    Kind.METHOD_NOT_ALLOWED: (405, "invalid_request_error"),
    Kind.BODY_TIMEOUT: (408, "invalid_request_error"),
    Kind.TOO_LARGE: (413, "invalid_request_error"),
    Kind.UNSUPPORTED_MEDIA_TYPE: (415, "invalid_request_error"),
    Kind.OVERLOADED: (429, "rate_limit_error"),
    Kind.CLIENT_CLOSED: (499, "invalid_request_error"),
    Kind.BACKEND: (500, "server_error"),
    Kind.INTERNAL: (500, "server_error"),
    Kind.UNAVAILABLE: (503, "server_error"),
    Kind.TIMEOUT: (504, "server_error"),
}


class Dialect(str, enum.Enum):
    OPENAI = "openai"
    TEI = "tei"
    COHERE = "cohere"


def dialect_for(path: str) -> Dialect:
    """The error dialect of a URL path: /v1/rerank is Cohere/Jina, other /v1/ routes OpenAI, the rest TEI."""
    if path.rstrip("/") == "/v1/rerank":
        return Dialect.COHERE
    if path.startswith("/v1/"):
        return Dialect.OPENAI
    return Dialect.TEI


class ApiError(Exception):
    """An answer other than 2xx; ``param`` names the request field at fault when there is one."""

    def __init__(
        self, kind: Kind, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.kind, self.message, self.param, self.headers = kind, message, param, headers or {}

    @property
    def status(self) -> int:
        return TABLE[self.kind][0]


def from_exception(exc: BaseException) -> ApiError:
    """Map an exception from the runtime to an ApiError (unknown ones are internal errors)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ClientDisconnect):  # a client fault, not ours: 499, no traceback
        return ApiError(Kind.CLIENT_CLOSED, "the client closed the connection before sending the whole body")
    if isinstance(exc, InputError):
        return ApiError(Kind.VALIDATION, str(exc))
    if isinstance(exc, InferenceError):
        return ApiError(Kind.BACKEND, str(exc))
    if isinstance(exc, EdgeBGEError):
        return ApiError(Kind.BACKEND, str(exc))
    return ApiError(Kind.INTERNAL, f"internal error ({type(exc).__name__}); see the server log")


class JSONResponse(Response):
    """Compact UTF-8 JSON; NaN and infinities are refused rather than sent as invalid JSON."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate echoed back: escape it instead
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def body(dialect: Dialect, err: ApiError) -> dict[str, Any]:
    if dialect is Dialect.OPENAI:
        return {
            "error": {"message": err.message, "type": TABLE[err.kind][1], "param": err.param, "code": err.kind.value}
        }
    if dialect is Dialect.COHERE:
        return {"message": err.message, "error_type": err.kind.value}
    return {"error": err.message, "error_type": err.kind.value}


def render(dialect: Dialect, err: ApiError) -> JSONResponse:
    headers = dict(err.headers)
    if err.kind in (Kind.OVERLOADED, Kind.UNAVAILABLE) and "Retry-After" not in headers:
        headers["Retry-After"] = "1"
    if err.kind is Kind.UNAUTHORIZED:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(body(dialect, err), status_code=err.status, headers=headers)

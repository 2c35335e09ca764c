"""HTTP errors: one table from error kind to status; each dialect module writes its own error body.

Every failure a route can meet becomes an ``ApiError`` with an ``ErrorKind``; ``TABLE`` gives its
HTTP status (as text-embeddings-inference's router does in one place), and ``render`` writes the
body with the route's dialect (``error_body`` of openai_api, tei_api, cohere_api, ollama_api).

4xx kinds are the client's fault (an aborted upload is 499, ``CLIENT_CLOSED``): they are counted
by status in /metrics and never logged with a traceback; only ``INTERNAL`` is.
"""

from __future__ import annotations

import enum
import json
from typing import TYPE_CHECKING, Any

from starlette.requests import ClientDisconnect
from starlette.responses import Response

from ..errors import EdgeBGEError, InferenceError, InputError

if TYPE_CHECKING:
    from .routes import Dialect

__all__ = ["ApiError", "ErrorKind", "TABLE", "JSONResponse", "from_exception", "render", "status_in"]


class ErrorKind(str, enum.Enum):
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
TABLE: dict[ErrorKind, tuple[int, str]] = {
    ErrorKind.INVALID_JSON: (400, "invalid_request_error"),
    ErrorKind.VALIDATION: (422, "invalid_request_error"),
    ErrorKind.UNSUPPORTED: (400, "invalid_request_error"),
    ErrorKind.UNAUTHORIZED: (401, "authentication_error"),
    ErrorKind.NOT_FOUND: (404, "invalid_request_error"),
    ErrorKind.METHOD_NOT_ALLOWED: (405, "invalid_request_error"),
    ErrorKind.BODY_TIMEOUT: (408, "invalid_request_error"),
    ErrorKind.TOO_LARGE: (413, "invalid_request_error"),
    ErrorKind.UNSUPPORTED_MEDIA_TYPE: (415, "invalid_request_error"),
    ErrorKind.OVERLOADED: (429, "rate_limit_error"),
    ErrorKind.CLIENT_CLOSED: (499, "invalid_request_error"),
    ErrorKind.BACKEND: (500, "server_error"),
    ErrorKind.INTERNAL: (500, "server_error"),
    ErrorKind.UNAVAILABLE: (503, "server_error"),
    ErrorKind.TIMEOUT: (504, "server_error"),
}


class ApiError(Exception):
    """An answer other than 2xx; ``param`` names the request field at fault when there is one."""

    def __init__(
        self, kind: ErrorKind, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
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
        return ApiError(ErrorKind.CLIENT_CLOSED, "the client closed the connection before sending the whole body")
    if isinstance(exc, InputError):
        return ApiError(ErrorKind.VALIDATION, str(exc))
    if isinstance(exc, InferenceError):
        return ApiError(ErrorKind.BACKEND, str(exc))
    if isinstance(exc, EdgeBGEError):
        return ApiError(ErrorKind.BACKEND, str(exc))
    return ApiError(ErrorKind.INTERNAL, f"internal error ({type(exc).__name__}); see the server log")


class JSONResponse(Response):
    """Compact UTF-8 JSON; NaN and infinities are refused rather than sent as invalid JSON."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate echoed back: escape it instead
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def render(dialect: Dialect, err: ApiError) -> JSONResponse:
    """The error answer in ``dialect``'s body, with Retry-After / WWW-Authenticate where they belong."""
    headers = dict(err.headers)
    if err.kind in (ErrorKind.OVERLOADED, ErrorKind.UNAVAILABLE) and "Retry-After" not in headers:
        headers["Retry-After"] = "1"
    if err.kind is ErrorKind.UNAUTHORIZED:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(dialect.error_body(err), status_code=status_in(dialect, err), headers=headers)


def status_in(dialect: Dialect, err: ApiError) -> int:
    """The status ``err`` has in ``dialect``: TABLE's, unless the dialect's ``STATUS`` says otherwise (OpenAI
    and Ollama answer a field that fails validation with 400, where TEI answers 422)."""
    return getattr(dialect, "STATUS", {}).get(err.kind, err.status)

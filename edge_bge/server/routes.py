"""``Route``: one HTTP route of a dialect, and ``Dialect``: what a dialect module exports.

A dialect module (openai_api, tei_api, cohere_api, ollama_api) has ``NAME``, ``ROUTES`` (a list of
``Route``), ``PREFIXES`` (paths whose errors it answers even when no route matched, e.g. "/v1/")
and ``error_body(err)``, the JSON its clients read for an error; optionally ``STATUS``, statuses that
differ from errors.TABLE in that API. ``dialects.DIALECTS`` lists them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from starlette.requests import Request

    from .errors import ApiError
    from .service import Service

__all__ = ["Dialect", "Handler", "Route", "STRINGS"]

Handler = Callable[["Service", "Request"], Awaitable[Any]]

# JSON schema of a field that takes one text or a list of texts
STRINGS: dict[str, Any] = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    body: dict[str, Any] | None = None  # JSON schema of the request body, for /openapi.json


class Dialect(Protocol):
    """What a dialect module exports (modules satisfy this structurally)."""

    NAME: str
    ROUTES: list[Route]
    PREFIXES: tuple[str, ...]

    def error_body(self, err: ApiError) -> dict[str, Any]: ...

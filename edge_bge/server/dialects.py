"""The HTTP dialects the server speaks. Adding one is a module (see routes.Dialect) plus an entry here."""

from __future__ import annotations

from . import cohere_api, ollama_api, openai_api, tei_api
from .routes import Dialect, Route

__all__ = ["DEFAULT", "DIALECTS", "dialect_for", "routes"]

DIALECTS: tuple[Dialect, ...] = (openai_api, tei_api, cohere_api, ollama_api)
DEFAULT: Dialect = tei_api  # errors on paths no dialect claims (/health, /info, unknown paths) are TEI-shaped

_BY_PATH: dict[str, Dialect] = {}
for _dialect in DIALECTS:
    for _route in _dialect.ROUTES:
        _owner = _BY_PATH.setdefault(_route.path, _dialect)
        if _owner is not _dialect:  # two dialects on one path: a programming error, caught at import
            raise RuntimeError(f"{_route.path} is claimed by both {_owner.NAME} and {_dialect.NAME}")
_PREFIXES = sorted(((p, d) for d in DIALECTS for p in d.PREFIXES), key=lambda pd: -len(pd[0]))


def dialect_for(path: str) -> Dialect:
    """The dialect whose error body a path answers with: its route's, else the longest prefix's, else TEI's."""
    path = path.rstrip("/") or "/"
    exact = _BY_PATH.get(path)
    if exact is not None:
        return exact
    for prefix, dialect in _PREFIXES:
        if path.startswith(prefix):
            return dialect
    return DEFAULT


def routes() -> list[Route]:
    return [route for d in DIALECTS for route in d.ROUTES]

"""Reading and checking request bodies: every bad input becomes an ApiError naming the field."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.requests import Request

from .config import ServerConfig
from .errors import ApiError
from .errors import ErrorKind as E

__all__ = [
    "PARSE_ON_LOOP_BYTES",
    "check_dimensions",
    "read_json",
    "texts",
    "flag",
    "optional_int",
    "one_text",
    "prompt_prefix",
]

_JSON_TYPES = ("application/json",)
# Bodies larger than this are parsed on a worker thread: json.loads of a few MB takes milliseconds
# that the event loop (and /health) should not wait for. Smaller ones are parsed faster than a hand-off.
PARSE_ON_LOOP_BYTES = 64 * 1024

TOKEN_IDS_HINT = (
    "this server takes text, not token ids: send strings "
    "(LangChain's OpenAIEmbeddings: set check_embedding_ctx_length=False)"
)


def _type(value: Any) -> str:
    return (
        "null"
        if value is None
        else {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
            type(value), "number" if isinstance(value, (int, float)) else type(value).__name__
        )
    )


async def read_json(request: Request, config: ServerConfig) -> dict[str, Any]:
    """The body as a JSON object: 415 without a JSON content type, 413 past max_body_bytes, 400 for bad JSON.

    The whole body must arrive within the request deadline (408 otherwise); bodies over
    ``PARSE_ON_LOOP_BYTES`` are parsed on a worker thread so the event loop keeps answering.
    """
    ctype = request.headers.get("content-type")
    if ctype is None:
        if not config.lenient_content_type:
            raise ApiError(
                E.UNSUPPORTED_MEDIA_TYPE, "the request has no content type; send 'Content-Type: application/json'"
            )
    elif ctype.split(";")[0].strip().lower() not in _JSON_TYPES:
        raise ApiError(E.UNSUPPORTED_MEDIA_TYPE, f"content type {ctype!r} is not supported; send application/json")
    limit = config.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(E.TOO_LARGE, f"the body has {declared} bytes, more than the limit of {limit}")
    t0 = getattr(request.state, "t0", None)
    left = config.request_timeout - (time.perf_counter() - t0 if t0 is not None else 0.0)
    try:
        raw = await asyncio.wait_for(_read_body(request, limit), max(left, 0.0))
    except asyncio.TimeoutError:
        raise ApiError(
            E.BODY_TIMEOUT, f"the body did not arrive within the request deadline of {config.request_timeout:g} s"
        ) from None
    if len(raw) > PARSE_ON_LOOP_BYTES:
        return await asyncio.to_thread(_parse, raw)
    return _parse(raw)


async def _read_body(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(E.TOO_LARGE, f"the body has more than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise ApiError(E.INVALID_JSON, "the body is empty; send a JSON object")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ApiError(E.INVALID_JSON, f"the body is not UTF-8 (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ApiError(
            E.INVALID_JSON, f"the body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise ApiError(E.INVALID_JSON, "the body is nested too deeply") from None
    except ValueError as e:  # e.g. an integer literal past Python's digit limit
        raise ApiError(E.INVALID_JSON, f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ApiError(E.VALIDATION, f"the body must be a JSON object, got {_type(data)}")
    return data


def _check_text(text: str, where: str, param: str) -> None:
    if not text:
        raise ApiError(E.VALIDATION, f"{where} is an empty string; send non-empty text", param=param)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(
            E.VALIDATION, f"{where} is not valid Unicode ({e.reason} at position {e.start})", param=param
        ) from None


def one_text(value: Any, param: str) -> str:
    """A required, non-empty, valid string field."""
    if value is None:
        raise ApiError(E.VALIDATION, f"'{param}' is required and must be a non-empty string", param=param)
    if not isinstance(value, str):
        raise ApiError(E.VALIDATION, f"'{param}' must be a string, got {_type(value)}", param=param)
    _check_text(value, f"'{param}'", param)
    return value


def texts(value: Any, param: str, config: ServerConfig, *, objects: bool = False) -> list[str]:
    """A string or a non-empty list of non-empty strings (``objects``: also {"text": ...} items)."""
    if value is None:
        raise ApiError(E.VALIDATION, f"'{param}' is required: a string or a list of strings", param=param)
    if isinstance(value, str):
        value = [value]
    elif not isinstance(value, list):
        raise ApiError(
            E.VALIDATION, f"'{param}' must be a string or a list of strings, got {_type(value)}", param=param
        )
    if not value:
        raise ApiError(E.VALIDATION, f"'{param}' is an empty list; send at least one text", param=param)
    if len(value) > config.max_items:
        raise ApiError(
            E.TOO_LARGE, f"'{param}' has {len(value)} items, more than the limit of {config.max_items}", param=param
        )
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value) or all(
        isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool) for t in v) for v in value
    ):
        raise ApiError(E.UNSUPPORTED, f"'{param}' holds token ids; {TOKEN_IDS_HINT}", param=param)
    out: list[str] = []
    chars = 0
    for i, item in enumerate(value):
        if objects and isinstance(item, dict):
            item = _object_text(item)
            if not isinstance(item, str):
                raise ApiError(
                    E.VALIDATION,
                    f"{param}[{i}] must have a string field 'text' or 'content' parts of type 'text'",
                    param=param,
                )
        if not isinstance(item, str):
            raise ApiError(E.VALIDATION, f"{param}[{i}] is {_type(item)}, expected a string", param=param)
        _check_text(item, f"{param}[{i}]", param)
        chars += len(item)
        out.append(item)
    if chars > config.max_chars:
        raise ApiError(
            E.TOO_LARGE, f"'{param}' has {chars} characters, more than the limit of {config.max_chars}", param=param
        )
    return out


def _object_text(item: dict[str, Any]) -> str | None:
    """The text of ``{"text": ...}`` (Cohere v1, Jina) or ``{"content": [{"type": "text", "text": ...}]}``
    (Cohere v2; text parts joined by a space); None when it holds no text."""
    if "content" in item and isinstance(item["content"], list):
        parts = [c.get("text") for c in item["content"] if isinstance(c, dict) and c.get("type") == "text"]
        if parts and all(isinstance(t, str) for t in parts):
            return " ".join(parts)
        return None
    text = item.get("text")
    return text if isinstance(text, str) else None


def flag(data: dict[str, Any], key: str, default: bool) -> bool:
    """An optional boolean field (null = default)."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(E.VALIDATION, f"'{key}' must be true or false, got {_type(value)}", param=key)
    return value


def optional_int(data: dict[str, Any], key: str, *, minimum: int = 1) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ApiError(E.VALIDATION, f"'{key}' must be an integer of at least {minimum}, got {_type(value)}", param=key)
    return value


def prompt_prefix(data: dict[str, Any], query_instruction: str) -> str:
    """TEI's prompt_name: "query" prepends the bundle's query instruction; null adds nothing."""
    name = data.get("prompt_name")
    if name is None:
        return ""
    if name != "query":
        raise ApiError(
            E.VALIDATION, f"'prompt_name' must be \"query\" or null, got {json.dumps(name)[:40]}", param="prompt_name"
        )
    return query_instruction


def check_dimensions(data: dict[str, Any], dim: int) -> None:
    """``dimensions`` may only restate the model's own size (no Matryoshka truncation)."""
    value = data.get("dimensions")
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value != dim:
        raise ApiError(
            E.VALIDATION,
            f"this model gives {dim}-dimensional vectors; 'dimensions' must be {dim} or left out",
            param="dimensions",
        )

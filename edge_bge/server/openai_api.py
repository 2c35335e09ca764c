"""The OpenAI dialect: POST /v1/embeddings and GET /v1/models; errors as {"error": {message, type, param, code}}."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from starlette.requests import Request

from .errors import TABLE, ApiError
from .errors import ErrorKind as E
from .inputs import check_dimensions, read_json, texts
from .routes import STRINGS, Route
from .service import Service

__all__ = ["NAME", "PREFIXES", "ROUTES", "STATUS", "error_body"]

NAME = "openai"
PREFIXES = ("/v1/",)  # Cohere's /v1/ routes are claimed by cohere_api itself
# a request field that fails validation is a 400 in this API (TEI's is 422)
STATUS = {E.VALIDATION: 400}

EMBEDDINGS_BODY = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "input": STRINGS,
        "model": {"type": "string"},
        "encoding_format": {"type": "string", "enum": ["float", "base64"]},
        "dimensions": {"type": "integer"},
        "user": {"type": "string"},
    },
}


def error_body(err: ApiError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": TABLE[err.kind][1], "param": err.param, "code": err.kind.value}}


def _b64(vector: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")


async def embeddings(service: Service, request: Request) -> Any:
    config = service.config
    service.check_ready(request)
    data = await read_json(request, config)
    served = service.registry.pick("embed", data.get("model"), route="/v1/embeddings")
    items = texts(data.get("input"), "input", config)
    fmt = data.get("encoding_format")
    if fmt is None:
        fmt = "float"
    if fmt not in ("float", "base64"):
        raise ApiError(E.VALIDATION, '\'encoding_format\' must be "float" or "base64"', param="encoding_format")
    check_dimensions(data, served.manifest.dim)
    encoded = await service.tokenize(served, items, param="input", truncate=config.truncate)
    vectors = await service.submit(request, served, "embed", encoded)
    if fmt == "base64":
        rows: list[Any] = [_b64(v) for v in vectors]
    else:
        rows = vectors.tolist()
    total = sum(len(e) for e in encoded)
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
        "model": served.name,
        "usage": {"prompt_tokens": total, "total_tokens": total},
    }


async def models(service: Service, request: Request) -> Any:
    created = int(service.started)
    return {
        "object": "list",
        "data": [{"id": s.name, "object": "model", "created": created, "owned_by": "edge-bge"} for s in service.served],
    }


ROUTES = [
    Route("POST", "/v1/embeddings", embeddings, "OpenAI embeddings (float or base64 float32 LE)", EMBEDDINGS_BODY),
    Route("GET", "/v1/models", models, "OpenAI model list: the served bundles"),
]

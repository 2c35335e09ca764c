"""The Ollama dialect: POST /api/embed, the older POST /api/embeddings, GET /api/tags, POST /api/show and
GET /api/version.

Errors are ``{"error": message}``, as Ollama's clients read them. Ollama names models with a tag
("bge-m3:latest"); a name with the tag ":latest" is served by the bundle of the name without it.
/api/embed gives L2-normalised vectors, as Ollama does; /api/embeddings gives the model's own.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from starlette.requests import Request

from .. import __version__
from ..manifest import MODEL_NAME
from .errors import ApiError
from .errors import ErrorKind as E
from .inputs import check_dimensions, flag, one_text, read_json, texts
from .models import Served
from .routes import STRINGS, Route
from .service import Service

__all__ = ["NAME", "PREFIXES", "ROUTES", "STATUS", "error_body"]

NAME = "ollama"
PREFIXES = ("/api/",)
# a request field that fails validation is a 400 in this API (TEI's is 422)
STATUS = {E.VALIDATION: 400}
TAG = ":latest"

_EMBED_BODY = {
    "type": "object",
    "required": ["model"],
    "properties": {
        "model": {"type": "string"},
        "input": STRINGS,
        "truncate": {"type": "boolean"},
        "dimensions": {"type": "integer"},
        "options": {"type": "object"},
        "keep_alive": {"oneOf": [{"type": "string"}, {"type": "number"}]},
    },
}
_EMBEDDINGS_BODY = {
    "type": "object",
    "required": ["model"],
    "properties": {
        "model": {"type": "string"},
        "prompt": {"type": "string"},
        "options": {"type": "object"},
        "keep_alive": {"oneOf": [{"type": "string"}, {"type": "number"}]},
    },
}

_SHOW_BODY = {"type": "object", "properties": {"model": {"type": "string"}, "name": {"type": "string"}}}


def error_body(err: ApiError) -> dict[str, Any]:
    return {"error": err.message}


def _pick(service: Service, data: dict[str, Any], route: str) -> Served:
    name = data.get("model")
    if name is None or name == "":
        raise ApiError(E.VALIDATION, "'model' is required", param="model")
    registry = service.registry
    if isinstance(name, str) and name not in registry.by_name and name.endswith(TAG):
        name = name[: -len(TAG)]
    return registry.pick("embed", name, route=route)


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == []


async def embed(service: Service, request: Request) -> Any:
    t0 = time.perf_counter()
    service.check_ready(request)
    data = await read_json(request, service.config)
    served = _pick(service, data, "/api/embed")
    check_dimensions(data, served.manifest.dim)
    truncate = flag(data, "truncate", True)  # Ollama truncates unless told not to
    if _empty(data.get("input")):  # Ollama answers an empty input (a "load the model" call) with no vectors
        return {"model": data["model"], "embeddings": []}
    items = texts(data.get("input"), "input", service.config)
    encoded = await service.tokenize(served, items, param="input", truncate=truncate)
    vectors = await service.submit(request, served, "embed", encoded)
    vectors = served.unit(vectors)  # Ollama's /api/embed gives unit vectors
    took = int((time.perf_counter() - t0) * 1e9)
    return {
        "model": data["model"],
        "embeddings": vectors.tolist(),
        "total_duration": took,
        "load_duration": 0,
        "prompt_eval_count": sum(len(e) for e in encoded),
    }


async def embeddings(service: Service, request: Request) -> Any:
    service.check_ready(request)
    data = await read_json(request, service.config)
    served = _pick(service, data, "/api/embeddings")
    if _empty(data.get("prompt")):
        return {"embedding": []}
    text = one_text(data.get("prompt"), "prompt")
    encoded = await service.tokenize(served, [text], param="prompt", truncate=True)
    vectors = await service.submit(request, served, "embed", encoded)
    return {"embedding": vectors[0].tolist()}


def _details(served: Served) -> dict[str, Any]:
    m = served.manifest
    return {
        "format": "onnx",
        "family": m.architecture,
        "families": [m.architecture],
        "parameter_size": "",
        "quantization_level": m.precision.value,
    }


async def tags(service: Service, request: Request) -> Any:
    modified = dt.datetime.fromtimestamp(service.started, dt.timezone.utc).isoformat()
    models = []
    for s in service.served:
        if "embed" not in s.ops:
            continue
        name = s.name if ":" in s.name else s.name + TAG
        digest = s.manifest.files.get(MODEL_NAME, "")
        models.append({"name": name, "model": name, "modified_at": modified, "digest": digest, "details": _details(s)})
    return {"models": models}


async def show(service: Service, request: Request) -> Any:
    """What Ollama's clients read of a model: its details and the sizes in ``model_info``."""
    service.check_ready(request)
    data = await read_json(request, service.config)
    if data.get("model") is None and data.get("name") is not None:  # the older field name
        data["model"] = data["name"]
    served = _pick(service, data, "/api/show")
    m, arch = served.manifest, served.manifest.architecture
    return {
        "modelfile": "",
        "parameters": "",
        "template": "",
        "details": _details(served),
        "model_info": {
            "general.architecture": arch,
            f"{arch}.embedding_length": m.dim,
            f"{arch}.context_length": m.max_length,
        },
        "capabilities": ["embedding"],
    }


async def version(service: Service, request: Request) -> Any:
    return {"version": __version__}


ROUTES = [
    Route("POST", "/api/embed", embed, "Ollama: embeddings of one text or many (L2-normalised)", _EMBED_BODY),
    Route("POST", "/api/embeddings", embeddings, "Ollama (older API): the embedding of one prompt", _EMBEDDINGS_BODY),
    Route("GET", "/api/tags", tags, "Ollama: the served embedding models"),
    Route("POST", "/api/show", show, "Ollama: a model's details and sizes", _SHOW_BODY),
    Route("GET", "/api/version", version, "Ollama: the server's version (edge-bge's)"),
]

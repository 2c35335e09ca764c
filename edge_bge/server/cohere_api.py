"""The Cohere dialect (also what Jina's clients read): POST /v1/embed, /v2/embed, /v1/rerank and
/v2/rerank; errors as {message, error_type}.

Embeddings come in the types Cohere names (``embedding_types``): float, int8, uint8, binary, ubinary,
with ``edge_bge.quantize``'s conventions (int8/uint8 by the ranges the bundle's export recorded).
``input_type`` "search_query" applies the bundle's query instruction; the other types embed as is.
``truncate``: "END" (the default) cuts over-long texts at max_length, "NONE" answers 413 instead.
Every type is computed from the vectors ``Embedder.embed`` gives, so ``Embedder.embed(texts,
dtype=...)`` in Python returns the same values.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
from starlette.requests import Request

from ..errors import InputError
from ..quantize import DTYPES, quantizer
from ..reranker import sigmoid
from .errors import ApiError
from .errors import ErrorKind as E
from .inputs import flag, one_text, optional_int, read_json, texts
from .models import Served
from .routes import Route
from .service import Service
from .tei_api import pair_scores

__all__ = ["NAME", "PREFIXES", "ROUTES", "error_body"]

NAME = "cohere"
PREFIXES = ("/v2/",)  # its /v1/ routes share /v1/ with OpenAI's, each claimed by its exact path

_RERANK_BODY = {
    "type": "object",
    "required": ["query", "documents"],
    "properties": {
        "query": {"type": "string"},
        "documents": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "object"}]}},
        "top_n": {"type": "integer", "minimum": 1},
        "return_documents": {"type": "boolean"},
        "model": {"type": "string"},
    },
}


_TYPES = [t for t in DTYPES if t not in ("float32", "float16")]
INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
_EMBED_BODY = {
    "type": "object",
    "properties": {
        "texts": {"type": "array", "items": {"type": "string"}},
        "model": {"type": "string"},
        "input_type": {"type": "string", "enum": list(INPUT_TYPES)},
        "embedding_types": {"type": "array", "items": {"type": "string", "enum": ["float", *_TYPES]}},
        "truncate": {"type": "string", "enum": ["NONE", "END"]},
    },
    "required": ["texts"],
}


def error_body(err: ApiError) -> dict[str, Any]:
    return {"message": err.message, "error_type": err.kind.value}


def _embedding_types(data: dict[str, Any], default: list[str] | None) -> list[str] | None:
    value = data.get("embedding_types")
    if value is None:
        return default
    accepted = ["float", *_TYPES]
    if isinstance(value, list) and "base64" in value:  # Cohere's, not implemented here
        raise ApiError(
            E.UNSUPPORTED,
            f"embedding type 'base64' is not served here; served: {', '.join(accepted)}",
            param="embedding_types",
        )
    if not isinstance(value, list) or not value or any(v not in accepted for v in value):
        raise ApiError(
            E.VALIDATION,
            f"'embedding_types' must be a non-empty list of {', '.join(accepted)}; got {str(value)[:60]}",
            param="embedding_types",
        )
    return list(dict.fromkeys(value))


def _converters(served: Served, types: list[str]) -> dict[str, Any]:
    out = {}
    for t in types:
        try:
            out[t] = quantizer(
                "float32" if t == "float" else t, served.manifest.quantization_ranges, bundle=served.name
            )
        except InputError as e:
            raise ApiError(E.UNSUPPORTED, str(e), param="embedding_types") from None
    return out


async def _embed(service: Service, request: Request, version: int) -> Any:
    service.check_ready(request)
    data = await read_json(request, service.config)
    route = f"/v{version}/embed"
    served = service.registry.pick("embed", data.get("model"), route=route)
    param = "texts" if data.get("texts") is not None or version == 1 else "inputs"
    items = texts(data.get(param), param, service.config, objects=version == 2)
    input_type = data.get("input_type")
    if input_type is None and version == 2:
        raise ApiError(E.VALIDATION, f"'input_type' is required: one of {', '.join(INPUT_TYPES)}", param="input_type")
    if input_type is not None and input_type not in INPUT_TYPES:
        raise ApiError(E.VALIDATION, f"'input_type' must be one of {', '.join(INPUT_TYPES)}", param="input_type")
    truncate = data.get("truncate") or "END"
    if truncate == "START":  # Cohere's, not implemented here: the model sees a text's beginning
        raise ApiError(E.UNSUPPORTED, '\'truncate\': "START" is not served here; use "END" or "NONE"', param="truncate")
    if truncate not in ("NONE", "END"):
        raise ApiError(
            E.VALIDATION, '\'truncate\' must be "END" (cut at max_length) or "NONE" (refuse)', param="truncate"
        )
    types = _embedding_types(data, None if version == 1 else ["float"])
    converters = _converters(served, types or ["float"])
    instruction = served.manifest.query_instruction if input_type == "search_query" else ""
    inputs = [instruction + t for t in items] if instruction else items
    encoded = await service.tokenize(served, inputs, param=param, truncate=truncate == "END")
    vectors = await service.submit(request, served, "embed", encoded)
    meta = {"api_version": {"version": str(version)}, "billed_units": {"input_tokens": sum(len(e) for e in encoded)}}
    answer: dict[str, Any] = {"id": str(uuid.uuid4()), "texts": items, "meta": meta}
    if types is None:  # v1 without embedding_types: plain floats
        answer.update(embeddings=vectors.tolist(), response_type="embeddings_floats")
    else:
        answer["embeddings"] = {t: convert(vectors).tolist() for t, convert in converters.items()}
        if version == 1:
            answer["response_type"] = "embeddings_by_type"
    return answer


async def embed_v1(service: Service, request: Request) -> Any:
    return await _embed(service, request, 1)


async def embed_v2(service: Service, request: Request) -> Any:
    return await _embed(service, request, 2)


async def rerank(service: Service, request: Request) -> Any:
    service.check_ready(request)
    data = await read_json(request, service.config)
    served = service.registry.pick("score", data.get("model"), route=request.url.path)
    query = one_text(data.get("query"), "query")
    docs = texts(data.get("documents"), "documents", service.config, objects=True)
    top_n = optional_int(data, "top_n")
    return_documents = flag(data, "return_documents", False)
    logits, total = await pair_scores(service, request, served, query, docs, "documents", service.config.truncate)
    scores = sigmoid(logits)
    results = []
    for i in np.argsort(-scores, kind="stable")[:top_n]:
        row: dict[str, Any] = {"index": int(i), "relevance_score": float(scores[i])}
        if return_documents:
            row["document"] = {"text": docs[i]}
        results.append(row)
    return {"id": str(uuid.uuid4()), "model": served.name, "results": results, "usage": {"total_tokens": total}}


ROUTES = [
    Route("POST", "/v1/embed", embed_v1, "Cohere embed (v1): float or compact embedding_types", _EMBED_BODY),
    Route("POST", "/v2/embed", embed_v2, "Cohere embed (v2): embeddings by type", _EMBED_BODY),
    Route("POST", "/v1/rerank", rerank, "Cohere/Jina rerank: index and relevance_score", _RERANK_BODY),
    Route("POST", "/v2/rerank", rerank, "Cohere rerank (v2): index and relevance_score", _RERANK_BODY),
]

"""The text-embeddings-inference dialect: /embed, /embed_sparse, /rerank, /tokenize; errors as {error, error_type}."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from ..errors import InputError
from ..quantize import DTYPES, quantizer
from ..reranker import sigmoid
from .errors import ApiError
from .errors import ErrorKind as E
from .inputs import check_dimensions, flag, one_text, prompt_prefix, read_json, texts
from .models import Served
from .routes import STRINGS, Route
from .service import Service

__all__ = ["NAME", "PREFIXES", "ROUTES", "error_body", "pair_scores"]

NAME = "tei"
PREFIXES: tuple[str, ...] = ()  # the default dialect (see dialects.DEFAULT)
_EMBED_BODY = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "inputs": STRINGS,
        "normalize": {"type": "boolean"},
        "truncate": {"type": "boolean"},
        "prompt_name": {"type": "string", "enum": ["query"]},
        "dtype": {"type": "string", "enum": ["float32", "float16", "int8", "uint8", "binary", "ubinary"]},
        "model": {"type": "string"},
    },
}
_SPARSE_BODY = {**_EMBED_BODY, "properties": {k: v for k, v in _EMBED_BODY["properties"].items() if k != "dtype"}}
_RERANK_BODY = {
    "type": "object",
    "required": ["query"],
    "properties": {
        "query": {"type": "string"},
        "texts": {"type": "array", "items": {"type": "string"}},
        "documents": {"type": "array", "items": {"type": "string"}},
        "raw_scores": {"type": "boolean"},
        "return_text": {"type": "boolean"},
        "truncate": {"type": "boolean"},
        "model": {"type": "string"},
    },
}
_TOKENIZE_BODY = {
    "type": "object",
    "required": ["inputs"],
    "properties": {"inputs": STRINGS, "add_special_tokens": {"type": "boolean"}, "prompt_name": {"type": "string"}},
}


def error_body(err: ApiError) -> dict[str, Any]:
    return {"error": err.message, "error_type": err.kind.value}


async def _embed_inputs(service: Service, data: dict[str, Any], op: str, route: str) -> tuple[Served, list[str], bool]:
    served = service.registry.pick(op, data.get("model"), route=route)
    items = texts(data.get("inputs"), "inputs", service.config)
    truncate = flag(data, "truncate", service.config.truncate)
    prefix = prompt_prefix(data, served.manifest.query_instruction)
    return served, [prefix + t for t in items] if prefix else items, truncate


async def embed(service: Service, request: Request) -> Any:
    service.check_ready(request)
    data = await read_json(request, service.config)
    served, items, truncate = await _embed_inputs(service, data, "embed", "/embed")
    normalize = flag(data, "normalize", True)
    check_dimensions(data, served.manifest.dim)
    if not normalize and served.manifest.normalize:
        raise ApiError(
            E.VALIDATION,
            f"{served.name!r} L2-normalises inside its graph, so normalize=false cannot be served; leave it out",
            param="normalize",
        )
    dtype, convert = _dtype(data, served)
    encoded = await service.tokenize(served, items, param="inputs", truncate=truncate)
    vectors = await service.submit(request, served, "embed", encoded)
    if dtype in ("int8", "uint8", "binary", "ubinary"):  # from the model's own vectors, as the ranges were
        return convert(vectors).tolist()
    return convert(served.unit(vectors) if normalize else vectors).tolist()


def _dtype(data: dict[str, Any], served: Served) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """The optional ``dtype`` field: compact vectors as ``Embedder.embed(dtype=...)`` gives them."""
    dtype = data.get("dtype")
    dtype = "float32" if dtype is None else dtype  # null: the default, as for every optional field
    try:
        return dtype, quantizer(dtype, served.manifest.quantization_ranges, bundle=repr(served.name))
    except InputError as e:
        kind = E.UNSUPPORTED if dtype in DTYPES else E.VALIDATION
        raise ApiError(kind, f"'dtype': {e}", param="dtype") from None


async def embed_sparse(service: Service, request: Request) -> Any:
    service.check_ready(request)
    data = await read_json(request, service.config)
    served, items, truncate = await _embed_inputs(service, data, "sparse", "/embed_sparse")
    encoded = await service.tokenize(served, items, param="inputs", truncate=truncate)
    weights = await service.submit(request, served, "sparse", encoded)
    return [[{"index": k, "value": float(v)} for k, v in sorted((int(k), v) for k, v in w.items())] for w in weights]


async def pair_scores(
    service: Service, request: Request, served: Served, query: str, docs: list[str], param: str, truncate: bool
) -> tuple[np.ndarray, int]:
    pairs = [(query, d) for d in docs]
    encoded = await service.tokenize(served, pairs, param=param, truncate=truncate, pairs=True)
    logits = await service.submit(request, served, "score", encoded)
    return np.asarray(logits, dtype=np.float32).reshape(-1), sum(len(e) for e in encoded)


def _docs(data: dict[str, Any], service: Service) -> tuple[list[str], str]:
    param = "documents" if data.get("texts") is None and data.get("documents") is not None else "texts"
    return texts(data.get(param), param, service.config), param


async def rerank(service: Service, request: Request) -> Any:
    service.check_ready(request)
    data = await read_json(request, service.config)
    served = service.registry.pick("score", data.get("model"), route="/rerank")
    query = one_text(data.get("query"), "query")
    docs, param = _docs(data, service)
    raw = flag(data, "raw_scores", False)
    return_text = flag(data, "return_text", False)
    truncate = flag(data, "truncate", service.config.truncate)
    logits, _ = await pair_scores(service, request, served, query, docs, param, truncate)
    scores = logits if raw else sigmoid(logits)
    out = []
    for i in np.argsort(-scores, kind="stable"):
        row: dict[str, Any] = {"index": int(i), "score": float(scores[i])}
        if return_text:
            row["text"] = docs[i]
        out.append(row)
    return out


# Tokens per json.dumps call when writing a /tokenize answer (up to 2048 texts of max_length tokens
# each): the C encoder keeps the GIL for a whole call, so a large answer is written in ~2 ms slices
# and the event loop's thread gets its turns in between.
_TOKENS_PER_DUMP = 2048


def _tokens_json(served: Served, items: list[str], special: bool) -> bytes:
    """The /tokenize answer as JSON bytes; runs on the tokenize pool, never on the event loop."""
    encodings = served.model.tokenizer.encodings(items, add_special_tokens=special)
    answers = []
    for text, enc in zip(items, encodings, strict=True):
        tokens = []
        for tid, tok, (start, stop), is_special in zip(
            enc.ids, enc.tokens, enc.offsets, enc.special_tokens_mask, strict=True
        ):
            if is_special:
                tokens.append({"id": tid, "text": tok, "special": True, "start": None, "stop": None})
            else:
                tokens.append({"id": tid, "text": text[start:stop], "special": False, "start": start, "stop": stop})
        pieces = (
            json.dumps(tokens[i : i + _TOKENS_PER_DUMP], ensure_ascii=False, separators=(",", ":"))[1:-1]
            for i in range(0, len(tokens), _TOKENS_PER_DUMP)
        )
        answers.append("[" + ",".join(pieces) + "]")
    return ("[" + ",".join(answers) + "]").encode("utf-8")


async def tokenize(service: Service, request: Request) -> Any:
    service.check_ready(request)
    data = await read_json(request, service.config)
    served = service.registry.pick(None, data.get("model"), route="/tokenize")
    items = texts(data.get("inputs"), "inputs", service.config)
    special = flag(data, "add_special_tokens", True)
    prefix = prompt_prefix(data, served.manifest.query_instruction)
    items = [prefix + t for t in items] if prefix else items
    body = await service.tokenize_work(_tokens_json, served, items, special)
    return Response(body, media_type="application/json")


ROUTES = [
    Route("POST", "/embed", embed, "TEI: dense embeddings", _EMBED_BODY),
    Route("POST", "/embed_sparse", embed_sparse, "TEI: bge-m3 sparse (lexical) weights per token id", _SPARSE_BODY),
    Route("POST", "/rerank", rerank, "TEI: score texts against a query with a reranker bundle", _RERANK_BODY),
    Route("POST", "/tokenize", tokenize, "TEI: the tokens a text becomes", _TOKENIZE_BODY),
]

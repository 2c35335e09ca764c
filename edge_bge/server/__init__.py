"""The edge-bge HTTP server (extra ``server``): OpenAI, text-embeddings-inference, Cohere/Jina and Ollama routes.

app.py        create_app: operations routes, the dialects' routes, API key, CORS, JSON errors everywhere
routes.py     Route, and what a dialect module exports
dialects.py   the list of dialects; which one answers a path's errors
openai_api.py /v1/embeddings, /v1/models
tei_api.py    /embed, /embed_sparse, /rerank, /tokenize
cohere_api.py /v1/rerank (Cohere and Jina clients)
ollama_api.py /api/embed, /api/embeddings, /api/tags, /api/version
service.py    readiness, token counting, queued runs with deadlines and disconnect detection
batcher.py    micro-batching of concurrent requests on one worker thread per model
models.py     the served bundles and what each kind can do
inputs.py     request bodies checked field by field
errors.py     one table from error kind to HTTP status
metrics.py    Prometheus text
run.py        uvicorn with SIGTERM drain
"""

from __future__ import annotations

from .app import create_app
from .config import ServerConfig
from .models import Registry, Served, load_model
from .run import serve
from .service import Service

__all__ = ["Registry", "Served", "ServerConfig", "Service", "create_app", "load_model", "serve"]

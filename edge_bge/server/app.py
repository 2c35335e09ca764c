"""``create_app``: the FastAPI application: routes of every dialect, API key, CORS, JSON errors."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__, providers
from ..kinds import spec
from .config import ServerConfig
from .dialects import dialect_for, routes
from .errors import ApiError, JSONResponse, from_exception, render
from .errors import ErrorKind as E
from .logs import RequestIdMiddleware, current, event
from .metrics import CONTENT_TYPE
from .models import Registry, Served
from .routes import Route
from .service import Service

__all__ = ["create_app", "OPS_ROUTES"]

log = logging.getLogger("edge_bge")


# ---- operations routes -----------------------------------------------------------------------
# The operations routes answer from the event loop itself: a probe must not wait for a worker thread
# (asyncio's default pool can be busy with other requests' tokenizing and encoding).
async def health(service: Service, request: Request) -> Any:
    return JSONResponse({"status": "ok"})


async def ready(service: Service, request: Request) -> Any:
    service.check_ready(request)
    return JSONResponse({"status": "ready"})


async def info(service: Service, request: Request) -> Any:
    first = service.served[0]
    m, c = first.manifest, service.config
    model_type = (
        {"reranker": {"id2label": {"0": "LABEL_0"}}}
        if "score" in spec(m.kind).ops
        else {"embedding": {"pooling": m.pooling.value if m.pooling else None}}
    )
    cpus, source = providers.cpu_budget()
    info = {
        "model_id": first.name,
        "model_dtype": m.precision.value,
        "model_type": model_type,
        "max_input_length": m.max_length,
        "max_batch_tokens": c.max_batch_tokens,
        "max_client_batch_size": c.max_items,
        "max_queue_items": c.max_queue_items,
        "auto_truncate": c.truncate,
        "version": __version__,
        "ready": service.is_ready,
        # what ONNX Runtime's threads default to: the affinity mask or a smaller cgroup CPU quota
        "cpus": {"usable": cpus, "source": source},
        "models": [s.describe() for s in service.served],
    }
    return JSONResponse(info)


async def metrics(service: Service, request: Request) -> Any:
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)


OPS_ROUTES = [
    Route("GET", "/health", health, "Liveness: 200 while the process serves HTTP (no API key needed)"),
    Route("GET", "/ready", ready, "Readiness: 503 while warming up or draining"),
    Route("GET", "/info", info, "The served bundles and the server's limits"),
    Route("GET", "/metrics", metrics, "Prometheus text exposition"),
]


# ---- plumbing ----------------------------------------------------------------------------------
def _endpoint(service: Service, route: Route) -> Callable[[Request], Awaitable[Response]]:
    dialect = dialect_for(route.path)

    async def answer(request: Request) -> Response:
        t0 = time.perf_counter()
        request.state.t0 = t0
        err: ApiError | None = None
        try:
            result = await route.handler(service, request)
            # encoding thousands of floats takes a while: not on the event loop's thread
            response = result if isinstance(result, Response) else await asyncio.to_thread(JSONResponse, result)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when --drain-timeout ends: they get a JSON 503
            # (uvicorn would send a plain-text 500). Any other cancellation is not ours to swallow.
            if not service.draining:
                raise
            _uncancel()
            err = ApiError(
                E.UNAVAILABLE,
                f"the server shut down before this request finished (drain timeout "
                f"{service.config.drain_timeout:g} s); retry",
                headers={"Retry-After": str(service.config.retry_after)},
            )
            log.warning(
                "%s %s: unfinished at the end of the drain, answered 503",
                route.method,
                route.path,
                extra=event("drain", route=route.path),
            )
        except Exception as exc:
            err = from_exception(exc)
            if err.kind is E.INTERNAL:
                log.exception("%s %s failed", route.method, route.path, extra=event("error", route=route.path))
            elif err.kind is E.CLIENT_CLOSED:  # a client fault: one line, no traceback
                log.info("%s %s: %s", route.method, route.path, err.message)
        if err is not None:
            response = render(dialect, err)
            _access_error(err)
        service.metrics.request(
            route.path, response.status_code, time.perf_counter() - t0, err.kind.value if err else None
        )
        return response

    async def endpoint(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        large = service.trimmer.started(int(declared) if declared.isdigit() else 0)
        try:
            response = await answer(request)
        except BaseException:
            if large:
                service.trimmer.ended()
            raise
        if large:  # the trim waits until the answer's own bytes have been sent (Starlette runs this after)
            response.background = _then(response.background, service.trimmer.ended)
        return response

    endpoint.__name__ = route.handler.__name__
    return endpoint


def _then(background: BackgroundTask | None, after: Callable[[], None]) -> BackgroundTask:
    """``background`` (a response's task, run once it has been sent), then ``after``."""

    async def both() -> None:
        try:
            if background is not None:
                await background()
        finally:
            after()

    return BackgroundTask(both)


def _access_error(err: ApiError) -> None:
    access = current()
    if access is not None:
        access.error = err.kind.value


def _uncancel() -> None:
    """Undo the cancellation this task has handled (Python 3.11+ counts them)."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)
    if uncancel is not None:
        uncancel()


_STATUS_KIND = {401: E.UNAUTHORIZED, 404: E.NOT_FOUND, 405: E.METHOD_NOT_ALLOWED, 413: E.TOO_LARGE}


class ApiKeyMiddleware:
    """Every route but /health needs ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""

    def __init__(self, app: ASGIApp, *, key: str, service: Service, paths: set[str]) -> None:
        self.app, self.key, self.service, self.paths = app, key.encode("utf-8"), service, paths

    @staticmethod
    def _given(scope: Scope) -> list[bytes]:
        """Every key the request offers: Bearer tokens in Authorization, and X-API-Key values."""
        given = []
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given.append(token.strip())
            elif name == b"x-api-key":
                given.append(value.strip())
        return given

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        given = self._given(scope)
        # a correct key in either header passes; every offered key is compared, each in constant time
        if any([hmac.compare_digest(g, self.key) for g in given]):  # a list: no short cut
            await self.app(scope, receive, send)
            return
        message = "missing API key" if not given else "wrong API key"
        err = ApiError(E.UNAUTHORIZED, f"{message}: send the header 'Authorization: Bearer <key>'")
        route = scope["path"] if scope["path"] in self.paths else "unmatched"
        self.service.metrics.request(route, err.status, 0.0, err.kind.value)
        _access_error(err)
        await render(dialect_for(scope["path"]), err)(scope, receive, send)


def create_app(
    models: Registry | Sequence[Served], config: ServerConfig | None = None, *, service: Service | None = None
) -> FastAPI:
    """The ASGI application serving ``models``. Starting it (lifespan) starts the batchers and the warm-up."""
    config = config or ServerConfig()
    registry = models if isinstance(models, Registry) else Registry(models)
    service = service or Service(registry, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)  # joins the batchers' threads: not on the event loop

    app = FastAPI(
        title="edge-bge",
        version=__version__,
        description="BGE models on ONNX Runtime: OpenAI, text-embeddings-inference, Cohere/Jina and Ollama compatible.",
        docs_url=None,  # the docs pages load scripts from a CDN; /openapi.json stays
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    served_routes = [*OPS_ROUTES, *routes()]
    for route in served_routes:
        extra = None
        if route.body is not None:
            extra = {"requestBody": {"required": True, "content": {"application/json": {"schema": route.body}}}}
        app.add_api_route(
            route.path,
            _endpoint(service, route),
            methods=[route.method],
            summary=route.summary,
            openapi_extra=extra,
            response_class=JSONResponse,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        kind = _STATUS_KIND.get(exc.status_code, E.VALIDATION)
        if kind is E.NOT_FOUND:
            message = f"no route {request.url.path}; see /openapi.json"
        elif kind is E.METHOD_NOT_ALLOWED:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        err = ApiError(kind, message, headers=dict(exc.headers or {}))
        _access_error(err)
        response = render(dialect_for(request.url.path), err)
        service.metrics.request("unmatched", response.status_code, 0.0, kind.value)
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path, extra=event("error"))
        return render(dialect_for(request.url.path), from_exception(exc))

    if config.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, key=config.api_key, service=service, paths={r.path for r in served_routes})
    if config.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-Id"],
            expose_headers=["X-Request-Id"],
        )
    # outermost: every answer, a 401 or a CORS preflight too, carries its request id (and is logged)
    app.add_middleware(RequestIdMiddleware, access_log=config.json_logs, log_texts=config.log_texts)
    return app

"""``Service``: what the routes share: registry, config, metrics, readiness, and the way to the batchers."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.requests import Request

from ..tokenize import Encoded
from .batcher import Batcher, QueueFull, Stopped
from .config import ServerConfig
from .errors import ApiError, from_exception
from .errors import ErrorKind as E
from .logs import current, event
from .memory import Trimmer
from .metrics import Metrics
from .models import Registry, Served

__all__ = ["Service"]

log = logging.getLogger("edge_bge")

T = TypeVar("T")

# scope key: when the HTTP protocol accepted the request (time.monotonic), set by GuardedH11Protocol
ARRIVED = "edge_bge.arrived"


async def _disconnected(request: Request) -> None:
    """Return when the client has gone away (the body has been read before this is awaited)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
        await asyncio.sleep(0.01)  # a stray empty body message: do not spin


class Service:
    """Readiness (warming up, ready, draining), token counting, and queued runs with deadlines."""

    def __init__(self, registry: Registry, config: ServerConfig, metrics: Metrics | None = None) -> None:
        self.registry, self.config = registry, config
        registry.strict = config.strict_model_names
        self.metrics = metrics or Metrics()
        self.trimmer = Trimmer()  # gives memory back after large requests
        self.started = time.time()
        self.ready = False
        self.draining = False
        self.drain_started: float | None = None  # monotonic time of the first SIGTERM
        self.warmup_error: str | None = None
        self._warm_thread: threading.Thread | None = None
        # /tokenize: a pool of its own, so it neither waits behind inference nor fills asyncio's default
        # pool; half the cores at most, so tokenizing never takes the CPU the event loop needs
        threads = max(1, min(config.max_tokenize_requests, (os.cpu_count() or 2) // 2))
        self._tokenize_pool = ThreadPoolExecutor(threads, thread_name_prefix="edge-bge-tokenize")
        self._tokenizing = 0  # admitted: running or waiting for a thread
        for served in registry.served:
            served.batcher = Batcher(
                served.name,
                served.run,
                metrics=self.metrics,
                max_batch_tokens=config.max_batch_tokens,
                max_batch_items=config.max_batch_items,
                wait_s=config.batch_wait_ms / 1000.0,
                max_queue_items=config.max_queue_items,
            )
        self.metrics.gauge(
            "edge_bge_queue_depth",
            "Texts (or pairs) queued and not yet running, per model.",
            lambda: [((("model", s.name),), float(self._batcher(s).depth)) for s in self.registry.served],
        )
        self.metrics.gauge("edge_bge_ready", "1 when /ready answers 200.", lambda: [((), float(self.is_ready))])

    @staticmethod
    def _batcher(served: Served) -> Batcher:
        if served.batcher is None:
            raise RuntimeError(f"{served.name} has no batcher")
        return served.batcher

    @property
    def served(self) -> Sequence[Served]:
        return self.registry.served

    @property
    def is_ready(self) -> bool:
        return self.ready and not self.draining

    # ---- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the batchers and warm the models up on a thread; /ready turns 200 when it is done."""
        for served in self.served:
            self._batcher(served).start()
        if not self.config.warmup:
            self.ready = True
            return
        self._warm_thread = threading.Thread(target=self._warm_up, name="edge-bge-warmup", daemon=True)
        self._warm_thread.start()

    def _warm_up(self) -> None:
        for served in self.served:
            t0 = time.perf_counter()
            try:
                served.warm_up(
                    max_batch_tokens=self.config.max_batch_tokens, max_batch_items=self.config.max_batch_items
                )
            except Exception as e:  # reported by /ready; the server stays unready
                self.warmup_error = f"warm-up of {served.name!r} failed: {e}"
                log.error("%s", self.warmup_error, extra=event("warmup", model=served.name, ok=False))
                return
            seconds = time.perf_counter() - t0
            log.info(
                "warmed up %s in %.2f s",
                served.name,
                seconds,
                extra=event("warmup", model=served.name, s=round(seconds, 3)),
            )
        self.ready = True
        log.info("ready", extra=event("ready"))

    def wait_ready(self, timeout: float | None = None) -> bool:
        if self._warm_thread is not None:
            self._warm_thread.join(timeout)
        return self.ready

    def stop(self) -> None:
        """Finish what is queued and end the worker threads (after the HTTP server has drained)."""
        self.draining = True
        for served in self.served:
            if served.batcher is not None:
                served.batcher.stop(timeout=self.config.drain_timeout)
        self._tokenize_pool.shutdown(wait=False, cancel_futures=True)

    def start_draining(self) -> None:
        if self.drain_started is None:
            self.drain_started = time.monotonic()
        self.draining = True

    def check_ready(self, request: Request) -> None:
        """503 unless ready. Routes that work call it first, before reading the body. A request whose
        headers arrived before SIGTERM is accepted (the HTTP protocol stamps that moment in its scope,
        even if the app runs a little later), and is finished even if SIGTERM comes while it is read,
        tokenized or queued."""
        retry = {"Retry-After": str(self.config.retry_after)}
        arrived = request.scope.get(ARRIVED, time.monotonic())
        if self.draining and (self.drain_started is None or arrived >= self.drain_started):
            raise ApiError(E.UNAVAILABLE, "the server is shutting down", headers=retry)
        if not self.ready:
            raise ApiError(E.UNAVAILABLE, self.warmup_error or "the server is warming up", headers=retry)

    # ---- work --------------------------------------------------------------------------------
    async def tokenize(
        self, served: Served, items: Sequence[Any], *, param: str, truncate: bool, pairs: bool = False
    ) -> list[Encoded]:
        """Token ids per input, made once per request (off the event loop); 413 for an over-long input
        when ``truncate`` is false."""
        access = current()
        if access is not None:  # for the access line
            access.model, access.texts = served.name, len(items)
            if self.config.log_texts:
                access.inputs = list(items)
        return await asyncio.to_thread(served.tokenize, items, param=param, truncate=truncate, pairs=pairs)

    async def submit(self, request: Request, served: Served, op: str, encoded: list[Encoded]) -> Any:
        """Queue tokenized inputs for ``op`` and wait for exactly their results, the deadline, or the client leaving.

        No readiness check here: the route checked it when the request arrived (see check_ready).
        """
        batcher = self._batcher(served)
        tokens = sum(len(e) for e in encoded)
        access = current()
        if access is not None:
            access.tokens = tokens
        try:
            job = batcher.submit(op, encoded, tokens)
        except Stopped as e:
            raise ApiError(E.UNAVAILABLE, str(e), headers={"Retry-After": str(self.config.retry_after)}) from None
        except QueueFull as e:
            raise ApiError(
                E.OVERLOADED,
                f"the server is busy ({e}); retry later",
                headers={"Retry-After": str(self.config.retry_after)},
            ) from None
        t0 = getattr(request.state, "t0", time.perf_counter())
        remaining = max(0.0, self.config.request_timeout - (time.perf_counter() - t0))
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({job.future, watcher}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the server gave up on this request (shutdown deadline)
            batcher.cancel(job)
            job.future.cancel()
            raise
        finally:
            watcher.cancel()
        if job.future in done:
            error = job.future.exception()
            if error is not None:
                raise from_exception(error)
            return job.future.result()
        dropped = batcher.cancel(job)
        job.future.cancel()  # a run already under way: its result is discarded
        if watcher in done:
            if dropped:
                self.metrics.drop(served.name, "disconnect")
            raise ApiError(E.CLIENT_CLOSED, "the client closed the connection before the answer")
        if dropped:
            self.metrics.drop(served.name, "timeout")
        raise ApiError(E.TIMEOUT, f"no answer within the request deadline of {self.config.request_timeout:g} s")

    async def tokenize_work(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` for /tokenize on its pool: at most max_tokenize_requests at once, 429 past that."""
        limit = self.config.max_tokenize_requests
        if self._tokenizing >= limit:
            raise ApiError(
                E.OVERLOADED,
                f"{self._tokenizing} /tokenize requests are being worked on (limit {limit}); retry later",
                headers={"Retry-After": str(self.config.retry_after)},
            )
        self._tokenizing += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, functools.partial(fn, *args))
        finally:
            self._tokenizing -= 1

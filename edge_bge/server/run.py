"""``serve``: uvicorn with guarded connections and a SIGTERM drain.

SIGTERM (or Ctrl-C) turns /ready to 503 and stops accepting connections; requests accepted before
it finish, for up to ``drain_timeout`` (those still running then get a JSON 503 with Retry-After);
then the process exits 0.

Connections. uvicorn 0.54's h11 protocol arms no timer on a fresh connection and applies
``limit_concurrency`` only once a request has arrived, so a socket that never sends a byte holds a
file descriptor for ever. ``GuardedH11Protocol`` adds two things to it:

- a header deadline: a connection whose request headers are not complete ``header_timeout`` seconds
  after it connected (or after its previous answer) is closed;
- a connection limit: at ``max_connections`` open, a new connection closes the oldest connection still
  waiting for a request; when every connection is busy with one, the new one is answered a short JSON
  503 and closed at once, before anything is parsed.

``serve`` raises the soft RLIMIT_NOFILE to the hard limit and keeps the connection limit below it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .. import providers
from .app import create_app
from .config import ServerConfig
from .dialects import DEFAULT
from .errors import ApiError, ErrorKind, JSONResponse
from .logs import event, use_json_logs
from .metrics import Metrics
from .models import Registry, Served
from .service import ARRIVED, Service

__all__ = ["serve", "build_server", "DrainingServer", "GuardedH11Protocol", "raise_fd_limit", "connection_limit"]

log = logging.getLogger("edge_bge")

# listen() backlog; asyncio also accepts up to this many connections in one turn of the event loop
BACKLOG = 256
# File descriptors kept out of the connection limit: the listener, the event loop, logs and bundle
# files (64), plus two accept bursts that stay open for a loop turn or two until they are refused.
FD_RESERVE = 64 + 2 * BACKLOG


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but the first SIGTERM/SIGINT marks the service draining and the process exits 0."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.service.draining:
            log.info(
                "%s: draining (up to %g s for requests in flight)",
                signal.Signals(sig).name,
                self.service.config.drain_timeout,
                extra=event("drain", signal=signal.Signals(sig).name, drain_timeout=self.service.config.drain_timeout),
            )
        self.service.start_draining()  # /ready and requests that arrive from now on answer 503
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for in-flight requests
        else:
            self.should_exit = True
        # Unlike uvicorn, do not re-raise the signal after the drain: a drained server exits 0.

    async def startup(self, sockets: Any = None) -> None:
        asyncio.get_running_loop().set_exception_handler(_accept_errors_in_one_line)
        await super().startup(sockets=sockets)


def _accept_errors_in_one_line(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Out of file descriptors, asyncio stops accepting for a second and logs a traceback each time: one line."""
    exc = context.get("exception")
    if isinstance(exc, OSError) and "accept" in str(context.get("message", "")):
        log.warning("cannot accept connections for a moment: %s", exc)
        return
    loop.default_exception_handler(context)


# ---- connections ---------------------------------------------------------------------------------
@dataclass(eq=False)
class _Guard:
    """What the connections of one server share."""

    limit: int
    header_timeout: float
    metrics: Metrics
    refusal: bytes  # the whole HTTP answer to a connection past the limit
    waiting: dict[GuardedH11Protocol, None] = field(default_factory=dict)  # waiting for a request, oldest first
    refused: int = 0  # since the last log line
    logged_at: float = -math.inf

    def refused_one(self) -> None:
        self.metrics.connection_closed("refused")
        self.refused += 1
        now = time.monotonic()
        if now - self.logged_at >= 10.0:  # a flood of refusals is a few log lines, not one each
            log.warning(
                "refused %d connection(s): %d are open, the limit (--max-connections)", self.refused, self.limit
            )
            self.refused, self.logged_at = 0, now


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a connection limit (see the module docstring).

    ``guard`` is set on the subclass that ``build_server`` makes for each server.
    """

    guard: ClassVar[_Guard]
    _refused = False
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        guard = self.guard
        if len(self.connections) >= guard.limit and not self._evict_oldest_waiting():
            self._refused = True
            transport.write(guard.refusal)  # type: ignore[attr-defined]
            transport.close()
            guard.refused_one()
            return
        super().connection_made(transport)  # type: ignore[arg-type]
        self._wait_for_request()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # headers complete (or a protocol error answered 400)
            self._stop_waiting()

    def handle_events(self) -> None:
        super().handle_events()
        # the moment a request is accepted: its headers are parsed and its task made, though the app
        # may not run until later; a SIGTERM after this moment still lets it finish (Service.check_ready)
        if self.scope is not None:
            self.scope.setdefault(ARRIVED, time.monotonic())  # type: ignore[misc]

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE and self not in self.guard.waiting:
            self._wait_for_request()  # kept alive: the next request's headers are due within header_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._stop_waiting()
        super().connection_lost(exc)

    def _wait_for_request(self) -> None:
        self.guard.waiting[self] = None
        self._header_timer = self.loop.call_later(self.guard.header_timeout, self._close, "header_timeout")

    def _stop_waiting(self) -> None:
        self.guard.waiting.pop(self, None)
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _evict_oldest_waiting(self) -> bool:
        victim = next(iter(self.guard.waiting), None)
        if victim is None:
            return False
        victim._close("evicted")
        return True

    def _close(self, reason: str) -> None:
        self._stop_waiting()
        if self.transport.is_closing():
            return
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()
        self.guard.metrics.connection_closed(reason)
        log.debug("closed a connection that sent no complete request (%s)", reason)


def _fd_soft_limit() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def raise_fd_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit now (None: no limit, or no such thing).

    Many systems start processes with a soft limit of 1024 descriptors and a far higher hard one.
    """
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= want:
        return _fd_soft_limit()
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError) as e:  # e.g. macOS caps the soft limit below an infinite hard one
        log.debug("could not raise RLIMIT_NOFILE from %d to %d: %s", soft, want, e)
    return _fd_soft_limit()


def connection_limit(wanted: int, fd_limit: int | None) -> int:
    """``wanted`` connections, or fewer so that they, FD_RESERVE and the process fit in ``fd_limit`` descriptors."""
    if fd_limit is None:
        return wanted
    fits = max(fd_limit - FD_RESERVE, fd_limit // 4, 1)
    if fits >= wanted:
        return wanted
    log.warning(
        "the process may open %d files (RLIMIT_NOFILE): serving at most %d connections, not %d",
        fd_limit,
        fits,
        wanted,
    )
    return fits


def build_server(service: Service, *, log_level: str = "warning") -> DrainingServer:
    """The uvicorn server for ``service``: guarded connections, drain on SIGTERM. ``.run()`` serves."""
    config = service.config
    app = create_app(service.registry, config, service=service)
    limit = connection_limit(config.max_connections, _fd_soft_limit())
    refusal = ApiError(ErrorKind.UNAVAILABLE, f"too many open connections (limit {limit}); retry later")
    payload = JSONResponse(DEFAULT.error_body(refusal)).body
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\nretry-after: {config.retry_after}\r\nconnection: close\r\n\r\n"
    )
    guard = _Guard(limit, config.header_timeout, service.metrics, head.encode("ascii") + payload)
    protocol = type("EdgeBGEH11Protocol", (GuardedH11Protocol,), {"guard": guard})
    uv = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        http=protocol,
        ws="none",
        lifespan="on",
        log_level=log_level,
        backlog=BACKLOG,
        timeout_keep_alive=config.keep_alive_timeout,  # type: ignore[arg-type]
        timeout_graceful_shutdown=config.drain_timeout,  # type: ignore[arg-type]
        limit_concurrency=None,  # counted per connection above, with a JSON answer instead of a text one
        server_header=False,
        # JSON logs: the app writes the access lines, and uvicorn's loggers keep the JSON handler
        access_log=log_level != "warning" and not config.json_logs,
        log_config=None if config.json_logs else uvicorn.config.LOGGING_CONFIG,
    )
    server = DrainingServer(uv, service)
    service.metrics.gauge(
        "edge_bge_connections_open",
        "Open HTTP connections.",
        lambda: [((), float(len(server.server_state.connections)))],
    )
    return server


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(models: Sequence[Served], config: ServerConfig, *, log_level: str = "warning") -> None:
    """Serve ``models`` on config.host:config.port until SIGTERM or SIGINT.

    With ``config.json_logs`` the whole process logs JSON lines on stderr (``logs.use_json_logs``)."""
    if config.json_logs:
        use_json_logs(debug=log_level == "debug")
    if not _is_loopback(config.host) and config.api_key is None:
        log.warning(
            "serving on %s without an API key: anyone who can reach it can use it", config.host, extra=event("startup")
        )
    raise_fd_limit()
    server = build_server(Service(Registry(models), config), log_level=log_level)
    cpus, source = providers.cpu_budget()
    threads = {s.name: s.session_threads for s in models}
    log.info(
        "CPUs usable: %d (%s); ONNX Runtime intra-op threads: %s",
        cpus,
        source,
        ", ".join(f"{name} {n} ({'spinning' if spin else 'not spinning'})" for name, (n, spin) in threads.items()),
        extra=event(
            "startup",
            cpus=cpus,
            cpus_source=source,
            threads={name: n for name, (n, _) in threads.items()},
            spinning={name: spin for name, (_, spin) in threads.items()},
        ),
    )
    names = ", ".join(f"{s.name} ({s.kind.value})" for s in models)
    log.warning(
        "serving %s on http://%s:%d",
        names,
        config.host,
        config.port,
        extra=event("startup", models=[s.name for s in models], host=config.host, port=config.port),
    )
    server.run()
    log.info("stopped", extra=event("drain", done=True))

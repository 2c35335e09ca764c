"""``serve``: run the app under uvicorn; SIGTERM turns /ready to 503, drains in-flight requests, then exits."""

from __future__ import annotations

import ipaddress
import logging
import signal
from collections.abc import Sequence
from types import FrameType

import uvicorn

from .app import create_app
from .config import ServerConfig
from .models import Registry, Served
from .service import Service

__all__ = ["serve", "DrainingServer"]

log = logging.getLogger("edge_bge")


class DrainingServer(uvicorn.Server):
    """uvicorn's server, but the first SIGTERM/SIGINT marks the service draining and the process exits 0."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self.service = service

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.service.draining = True  # /ready answers 503 from now on
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting for in-flight requests
        else:
            self.should_exit = True
        # Unlike uvicorn, do not re-raise the signal after the drain: a drained server exits 0.


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(models: Sequence[Served], config: ServerConfig, *, log_level: str = "warning") -> None:
    """Serve ``models`` on config.host:config.port until SIGTERM or SIGINT."""
    if not _is_loopback(config.host) and config.api_key is None:
        log.warning("serving on %s without an API key: anyone who can reach it can use it", config.host)
    service = Service(Registry(models), config)
    app = create_app(service.registry, config, service=service)
    uv = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=log_level,
        timeout_graceful_shutdown=int(max(1, config.drain_timeout)),
        server_header=False,
        limit_concurrency=None,
        access_log=log_level != "warning",
    )
    server = DrainingServer(uv, service)
    names = ", ".join(f"{s.name} ({s.kind.value})" for s in models)
    log.warning("serving %s on http://%s:%d", names, config.host, config.port)
    server.run()

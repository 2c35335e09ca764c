"""Giving freed memory back to the system after large requests.

glibc keeps the memory a request freed in its heaps for reuse: after six 1 MB requests a server
held 110 MB more than when warm, though nothing was alive. When the last large request in flight
has been answered, ``malloc_trim(0)`` returns the free pages of every heap (a few ms, on a worker
thread). Where the C library has no ``malloc_trim`` (musl, macOS) this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Callable

__all__ = ["LARGE_BODY_BYTES", "Trimmer"]

# Bodies at least this large count as large requests (a few hundred texts, or one long one).
LARGE_BODY_BYTES = 256 * 1024
# Seconds between the last large answer and the trim, for the answer's own bytes to be sent and freed.
TRIM_DELAY_S = 0.25


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


class Trimmer:
    """Counts large requests in flight (on the event loop's thread) and trims when none is left."""

    def __init__(self) -> None:
        self._trim = _malloc_trim()
        self._large = 0
        self.trims = 0

    def started(self, body_bytes: int) -> bool:
        """Note a request; True when it is large (then call ``ended`` when it has been answered)."""
        if self._trim is None or body_bytes < LARGE_BODY_BYTES:
            return False
        self._large += 1
        return True

    def ended(self) -> None:
        self._large -= 1
        if self._large == 0:
            loop = asyncio.get_running_loop()
            loop.call_later(TRIM_DELAY_S, self._run, loop)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._large == 0 and self._trim is not None:
            self.trims += 1
            loop.run_in_executor(None, self._trim, 0)

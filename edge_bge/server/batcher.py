"""Micro-batching: texts from concurrent requests coalesced into token-budget runs on a worker thread.

Requests ``submit`` a job (an operation, its texts or pairs, their token counts) from the event
loop and await the job's future. One worker thread per model takes the oldest job, waits up to
``wait_s`` for company (or until ``max_batch_tokens`` are queued), takes queued jobs of the same
operation in arrival order while they fit the budget (always at least one), runs them as one call
and hands each job exactly its own slice of the result. Jobs cancelled while queued (client gone,
deadline passed) are removed before they run.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .metrics import Metrics

__all__ = ["Batcher", "Job", "QueueFull", "Stopped"]

log = logging.getLogger("edge_bge")

RunFn = Callable[[str, list[Any]], Any]  # (op, items) -> array [n, ...] or list of n results


class QueueFull(Exception):
    """The queue holds ``max_queue_items`` texts already."""


class Stopped(Exception):
    """The batcher has been stopped (the server is shutting down)."""


@dataclass(eq=False)
class Job:
    op: str
    items: list[Any]
    tokens: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.perf_counter)


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled by its request (client gone, deadline)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class Batcher:
    """One model's queue and worker thread."""

    def __init__(
        self,
        name: str,
        run: RunFn,
        *,
        metrics: Metrics,
        max_batch_tokens: int,
        max_batch_items: int,
        wait_s: float,
        max_queue_items: int,
    ) -> None:
        self.name, self._run, self.metrics = name, run, metrics
        self.max_batch_tokens, self.max_batch_items = max_batch_tokens, max_batch_items
        self.wait_s, self.max_queue_items = wait_s, max_queue_items
        self._queue: collections.deque[Job] = collections.deque()
        self._depth = 0  # texts queued
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        """Texts (or pairs) queued and not yet running."""
        return self._depth

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=f"edge-bge-batcher-{self.name}", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Run what is queued, then end the worker thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, op: str, items: list[Any], tokens: int) -> Job:
        """Queue a job; call from the event loop thread. QueueFull when it would exceed the bound; Stopped after stop()."""
        loop = asyncio.get_running_loop()
        job = Job(op, items, tokens, loop, loop.create_future())
        with self._cond:
            if self._stopping:
                raise Stopped("the server is shutting down")
            if self._depth + len(items) > self.max_queue_items:
                raise QueueFull(f"{self._depth} texts are queued for {self.name!r} (limit {self.max_queue_items})")
            self._queue.append(job)
            self._depth += len(items)
            self._cond.notify_all()
        return job

    def cancel(self, job: Job) -> bool:
        """Remove a job that has not started (call from the event loop); True when it was still queued."""
        with self._cond:
            try:
                self._queue.remove(job)
            except ValueError:
                return False
            self._depth -= len(job.items)
            self._cond.notify_all()
        job.future.cancel()
        return True

    # ---- worker thread -----------------------------------------------------------------------
    def _full(self) -> bool:
        op = self._queue[0].op
        tokens = items = 0
        for job in self._queue:
            if job.op == op:
                tokens += job.tokens
                items += len(job.items)
        return tokens >= self.max_batch_tokens or items >= self.max_batch_items

    def _take(self) -> list[Job]:
        op = self._queue[0].op
        taken: list[Job] = []
        tokens = items = 0
        for job in list(self._queue):
            if job.op != op:
                continue
            if taken and (tokens + job.tokens > self.max_batch_tokens or items + len(job.items) > self.max_batch_items):
                break
            taken.append(job)
            tokens += job.tokens
            items += len(job.items)
        for job in taken:
            self._queue.remove(job)
        self._depth -= items
        return taken

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return  # stopping, nothing left
                deadline = self._queue[0].enqueued + self.wait_s
                while self._queue and not self._stopping and not self._full():
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                if not self._queue:
                    continue
                jobs = self._take()
            self._execute(jobs)

    def _execute(self, jobs: Sequence[Job]) -> None:
        op = jobs[0].op
        items = [item for job in jobs for item in job.items]
        start = time.perf_counter()
        error: BaseException | None = None
        result: Any = None
        try:
            result = self._run(op, items)
            if len(result) != len(items):
                raise RuntimeError(f"{op} returned {len(result)} results for {len(items)} inputs")
        except Exception as e:  # handed to every waiting request, which maps it to an HTTP error
            log.error("%s failed on a batch of %d: %s", op, len(items), e)
            error = e
        seconds = time.perf_counter() - start
        self.metrics.run(
            self.name,
            op,
            seconds=seconds,
            texts=len(items),
            tokens=sum(job.tokens for job in jobs),
            queued=[start - job.enqueued for job in jobs],
        )
        offset = 0
        for job in jobs:
            part = None if error is not None else result[offset : offset + len(job.items)]
            offset += len(job.items)
            try:
                job.loop.call_soon_threadsafe(_resolve, job.future, part, error)
            except RuntimeError:  # the event loop has closed: nobody is waiting any more
                pass

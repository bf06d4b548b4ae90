"""Group commit: many coroutines submit work, one thread commits it in shared transactions.

`submit(item)` returns an asyncio future that resolves with the writer's result
for that item once the transaction holding it has committed (or fails with the
writer's exception, so the caller can answer AE instead of AA). The thread takes
whatever is queued when it becomes free, up to `max_batch` items: an idle engine
commits each message at once (latency = one commit), a busy one shares each
fsync among everything that arrived during the previous commit (throughput
grows with concurrency). Futures are resolved with one loop callback per batch.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any, Callable

_STOP = object()


class GroupCommitter:
    def __init__(self, write_batch: Callable[[list[Any]], list[Any]], max_batch: int = 512,
                 name: str = "group-commit"):
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.batches = 0          # counters for logs and metrics
        self.items = 0
        self.write_seconds = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()

    def submit(self, item: Any) -> asyncio.Future:
        future = self._loop.create_future()
        self._queue.put((item, future))
        return future

    async def close(self) -> None:
        """Commit everything already submitted, then stop the thread."""
        self._queue.put(_STOP)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)

    def _run(self) -> None:
        get, get_nowait = self._queue.get, self._queue.get_nowait
        stopping = False
        while not stopping:
            first = get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    nxt = get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stopping = True
                    break
                batch.append(nxt)
            started = time.perf_counter()
            try:
                results = self._write_batch([item for item, _ in batch])
                error = None
            except Exception as exc:  # reported to every waiting submitter
                results, error = None, exc
            self.write_seconds += time.perf_counter() - started
            self.batches += 1
            self.items += len(batch)
            self._loop.call_soon_threadsafe(_resolve, batch, results, error)


def _resolve(batch: list, results: list | None, error: Exception | None) -> None:
    for i, (_, future) in enumerate(batch):
        if future.done():  # the submitter went away (connection closed)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(results[i])

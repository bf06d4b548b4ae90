"""Group commit: many coroutines submit work, one thread commits it in shared transactions.

`submit(item)` returns an asyncio future that resolves with the writer's result
for that item once the transaction holding it has committed (or fails with the
writer's exception, so the caller can answer AE instead of AA). The thread takes
whatever is queued when it becomes free, up to `max_batch` items: an idle engine
commits each message at once (latency = one commit), a busy one shares each
fsync among everything that arrived during the previous commit (throughput
grows with concurrency). Futures are resolved with one loop callback per batch.

Two lanes. Frames waiting for their ACK are *urgent*. Processed messages
(`submit(..., background=True)`: referral updates, ~0.3-0.6 ms each; delivery
claims and outcomes) are written one item per transaction, when no urgent item
is waiting and one of: frames kept the writer busy less than `busy_share` of the
last BUSY_WINDOW seconds (a steady 500 msg/s: processing keeps up, each frame
waits at most for one short background transaction), no urgent item has arrived
for `idle_gap` seconds (a burst that keeps the writer busy with frames: processing
takes the gaps), or background work has waited `max_wait` seconds — processing
never starves: under full load it still gets one item per `max_wait`, delaying
ACKs by one such transaction at most that often. (Several background items per
transaction were tried: the outbound queue gained nothing measurable and ACK
latency at 2,000 msg/s grew.)

With `write_background` (PostgreSQL: a second connection) the background lane has its own
thread and transactions, so frames never wait behind it: a referral update there holds the
cluster-wide write lock (engine/db.py), which another node's update may hold for a while,
and an ACK must not wait for that. SQLite has one writer, so it keeps the two lanes in one.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any, Callable


BUSY_WINDOW = 0.1     # seconds over which the writer's recent busy share is measured


class GroupCommitter:
    def __init__(self, write_batch: Callable[[list[Any]], list[Any]], max_batch: int = 512,
                 name: str = "group-commit", idle_gap: float = 0.002, max_wait: float = 0.05,
                 write_background: Callable[[list[Any]], list[Any]] | None = None, busy_share: float = 0.3):
        self._write_batch = write_batch
        self._write_background = write_background
        self._max_batch = max_batch
        self._idle_gap = idle_gap
        self._max_wait = max_wait
        self._busy_share = busy_share
        self._recent: deque = deque()       # (ended, seconds) of the frames' transactions in the last BUSY_WINDOW
        self._recent_busy = 0.0
        self._urgent: deque = deque()
        self._background: deque = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._sleeping = 0        # writer threads waiting in _wait (under the lock)
        self._last_urgent = 0.0
        self._last_background = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._background_thread = threading.Thread(target=self._run_background, name=f"{name}-background",
                                                   daemon=True) if write_background is not None else None
        self.batches = 0          # counters for logs and metrics
        self.items = 0
        self.write_seconds = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread.start()
        if self._background_thread is not None:
            self._background_thread.start()

    def submit(self, item: Any, background: bool = False) -> asyncio.Future:
        future = self._loop.create_future()
        with self._cond:
            if background:
                self._background.append((item, future))
            else:
                self._urgent.append((item, future))
                self._last_urgent = time.monotonic()
            if self._sleeping:          # a busy writer takes the item with its next batch: no wake-up owed
                self._cond.notify_all()     # two threads may wait (the urgent and the background lane)
        return future

    def quiet_for(self) -> float:
        """Seconds since the last urgent item (a frame waiting for its ACK) was submitted."""
        return time.monotonic() - self._last_urgent

    def _wait(self, timeout: float | None = None) -> None:
        """Under the lock: sleep until `submit` (or `close`) wakes this thread, or `timeout`."""
        self._sleeping += 1
        try:
            self._cond.wait(timeout)
        finally:
            self._sleeping -= 1

    async def close(self) -> None:
        """Commit everything already submitted, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        if self._background_thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._background_thread.join)

    def _next_batch(self) -> tuple[list, bool] | None:
        """Under the lock: the next transaction's items and whether they are urgent, or None to stop.
        Waits while there is nothing to do."""
        while True:
            now = time.monotonic()
            background = bool(self._background) and self._write_background is None
            if background and now - self._last_background >= self._max_wait:   # never starved, frames or not
                self._last_background = now
                return [self._background.popleft()], False
            if self._urgent:
                n = min(len(self._urgent), self._max_batch)
                return [self._urgent.popleft() for _ in range(n)], True
            if background:
                if self._stopping or now - self._last_urgent >= self._idle_gap or self._busy(now) < self._busy_share:
                    self._last_background = now
                    return [self._background.popleft()], False
                self._wait(min(self._last_urgent + self._idle_gap, self._last_background + self._max_wait) - now)
                continue
            if self._stopping:
                return None
            self._wait()

    def _busy(self, now: float) -> float:
        """Under the lock: the share of the last BUSY_WINDOW seconds the writer spent committing frames."""
        recent = self._recent
        while recent and recent[0][0] < now - BUSY_WINDOW:
            self._recent_busy -= recent.popleft()[1]
        return self._recent_busy / BUSY_WINDOW

    def _run_background(self) -> None:
        """The background lane's own thread (with `write_background`): one item per transaction."""
        while True:
            with self._cond:
                while not self._background and not self._stopping:
                    self._wait()
                if not self._background:
                    return
                batch = [self._background.popleft()]
            self._commit(batch, self._write_background)

    def _run(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
            if batch is None:
                return
            batch, urgent = batch
            seconds = self._commit(batch, self._write_batch)
            if urgent and self._write_background is None:    # the busy share only matters to one lane
                with self._cond:
                    ended = time.monotonic()
                    self._recent.append((ended, seconds))
                    self._recent_busy += seconds
                    self._busy(ended)                         # drop what left the window: bounded

    def _commit(self, batch: list, write: Callable[[list[Any]], list[Any]]) -> float:
        """Write one transaction and hand its results to the loop; returns the seconds it took."""
        started = time.perf_counter()
        try:
            results = write([item for item, _ in batch])
            error = None
        except Exception as exc:  # reported to every waiting submitter
            results, error = None, exc
        seconds = time.perf_counter() - started
        self.write_seconds += seconds
        self.batches += 1
        self.items += len(batch)
        self._loop.call_soon_threadsafe(_resolve, batch, results, error)
        return seconds


def _resolve(batch: list, results: list | None, error: Exception | None) -> None:
    for i, (_, future) in enumerate(batch):
        if future.done():  # the submitter went away (connection closed)
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(results[i])

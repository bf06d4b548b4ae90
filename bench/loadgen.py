"""Asyncio MLLP load generator: throughput and ACK latency of an MLLP server.

What it measures, for N messages sent over C connections with at most W
un-ACKed messages per connection:

* ``msgs_per_s``: correctly ACKed messages / (last ACK time - start time).
* ACK latency percentiles (p50/p90/p99/max, ms):
  - closed loop (default, no ``rate``): from the moment the message is written
    to the socket until its ACK is fully received;
  - open loop (``rate`` R msgs/s across all connections): message i is due at
    ``t0 + i/R`` and latency is measured from that *scheduled* time, so time a
    message spends waiting for a free connection/window slot is counted
    (no coordinated omission).
* errors: ACKs whose MSA-1 is not AA/CA (``nack``), whose MSA-2 is not the
  sent MSH-10 (``mismatch``), un-parseable or unsolicited ACKs (``bad_ack``),
  messages in flight on a dropped connection (``conn_lost``), never ACKed
  before ``timeout`` (``timeout``) or never sent (``unsent``).

Efficiency: callback-based ``asyncio.Protocol`` (no task per message, no
futures), messages pre-built (up to ``prebuild_mb``; beyond that each one is a
single bytes concatenation at send time), uvloop when importable.

    python -m bench.loadgen --port 2575 -n 20000 -c 16 [-w 1] [--rate 2000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
from array import array
from collections import deque
from time import perf_counter
from typing import Callable

from bench.aio import check_loopback, loop_name, run
from bench.message import orm_o01_parts
from bench.mllp import FrameError, FrameReader, parse_msa

OK_CODES = (b"AA", b"CA")
ERROR_KINDS = ("nack", "mismatch", "bad_ack", "conn_lost", "timeout", "unsent", "connect")


def make_prefix() -> str:
    """A run-unique MSH-10 prefix, so repeated runs never reuse control ids."""
    return "B" + os.urandom(4).hex().upper()


class Messages:
    """Message i = template with MSH-10 = prefix + 9-digit i; MLLP-framed."""

    def __init__(self, n: int, prefix: str, prebuild_mb: float = 256) -> None:
        head, tail = orm_o01_parts()
        self.n = n
        self._head = b"\x0b" + head
        self._tail = tail + b"\x1c\x0d"
        self._prefix = prefix.encode("ascii")
        self.size = len(self._head) + len(self._prefix) + 9 + len(self._tail)
        if n * self.size <= prebuild_mb * 1024 * 1024:
            frames = [self._build(i) for i in range(n)]
            self.frame: Callable[[int], bytes] = frames.__getitem__
        else:
            self.frame = self._build

    def control_id(self, i: int) -> bytes:
        return self._prefix + b"%09d" % i

    def _build(self, i: int) -> bytes:
        return self._head + self.control_id(i) + self._tail


class _Run:
    """Shared state of one load run; connections pull work from it."""

    def __init__(self, msgs: Messages, window: int, rate: float | None,
                 progress: Callable[[int], None] | None, progress_every: int) -> None:
        self.msgs = msgs
        self.n = msgs.n
        self.window = window
        self.rate = rate
        self.released = 0 if rate else self.n  # messages allowed to be sent so far
        self.next_idx = 0                       # next message to send
        self.done_count = 0                     # ACKed or failed
        self.ok = 0
        self.errors = dict.fromkeys(ERROR_KINDS, 0)
        self.lat = array("d")
        self.idle: deque[_Conn] = deque()       # one entry per free window slot
        self.conns: set[_Conn] = set()
        self.t0 = 0.0
        self.t_last = 0.0
        self.closing = False                    # run over: stop accounting
        self.progress = progress
        self.progress_every = max(1, progress_every)
        self.done = asyncio.get_running_loop().create_future()

    def send(self, conn: _Conn) -> None:
        i = self.next_idx
        self.next_idx = i + 1
        start = self.t0 + i / self.rate if self.rate else perf_counter()
        conn.inflight.append((self.msgs.control_id(i), start))
        conn.transport.write(self.msgs.frame(i))

    def pump(self) -> None:
        """Give released-but-unsent messages to free window slots."""
        idle = self.idle
        while idle and self.next_idx < self.released:
            conn = idle.popleft()
            if conn.transport is not None:
                self.send(conn)

    def finish(self, count: int) -> None:
        self.done_count += count
        if self.progress and self.done_count // self.progress_every != (self.done_count - count) // self.progress_every:
            self.progress(self.done_count)
        if self.done_count >= self.n and not self.done.done():
            self.done.set_result(None)


class _Conn(asyncio.Protocol):
    """One MLLP client connection; ACKs are matched in order to the in-flight queue."""

    def __init__(self, run_: _Run) -> None:
        self.run = run_
        self.reader = FrameReader()
        self.inflight: deque[tuple[bytes, float]] = deque()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.run.conns.add(self)

    def data_received(self, data: bytes) -> None:
        r = self.run
        now = perf_counter()
        try:
            acks = self.reader.feed(data)
        except FrameError:
            self.transport.abort()
            return
        for ack in acks:
            if not self.inflight:
                r.errors["bad_ack"] += 1
                continue
            cid, start = self.inflight.popleft()
            r.lat.append(now - start)
            code, got = parse_msa(ack)
            if code in OK_CODES:
                if got == cid:
                    r.ok += 1
                else:
                    r.errors["mismatch"] += 1
            else:
                r.errors["nack" if code else "bad_ack"] += 1
            r.t_last = now
            if r.next_idx < r.released:
                r.send(self)
            else:
                r.idle.append(self)
            r.finish(1)

    def connection_lost(self, exc) -> None:
        r = self.run
        self.transport = None
        r.conns.discard(self)
        if r.closing:
            return
        lost = len(self.inflight)
        self.inflight.clear()
        r.errors["conn_lost"] += lost
        if lost:
            r.finish(lost)
        if not r.conns and not r.done.done():  # nothing left to send on
            unsent = r.n - r.next_idx
            r.errors["unsent"] += unsent
            r.next_idx = r.n
            r.finish(unsent)


PACE_TICK = 0.001   # the pacer wakes at most this often and releases every message due by then


async def _pace(r: _Run, deadline: float) -> None:
    """Open loop: release message i at t0 + i/rate (bounded by n and the deadline).

    Sleeps of under a millisecond return at once on uvloop (libuv timers count whole ms), so waking
    for each message 0.5 ms apart spun a whole core in the load generator, taken from the server
    under test on a 2-core machine. The pacer sleeps at least PACE_TICK; a message released up to that
    much late still counts its latency from its scheduled time (against the server, never for it)."""
    rate = r.rate
    while r.released < r.n and perf_counter() < deadline and not r.done.done():
        due = min(r.n, int((perf_counter() - r.t0) * rate) + 1)
        if due > r.released:
            r.released = due
            r.pump()
        await asyncio.sleep(max(PACE_TICK, r.t0 + due / rate - perf_counter()))


def percentile(sorted_vals, p: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0.0 if empty)."""
    if not sorted_vals:
        return 0.0
    return sorted_vals[max(0, math.ceil(p / 100 * len(sorted_vals)) - 1)]


async def run_load(host: str = "127.0.0.1", port: int = 2575, n: int = 10000, connections: int = 16,
                   window: int = 1, rate: float | None = None, timeout: float = 120.0,
                   prefix: str | None = None, prebuild_mb: float = 256,
                   progress: Callable[[int], None] | None = None, progress_every: int = 0) -> dict:
    """Send n ORM^O01 messages over `connections` MLLP connections and report results.

    ``progress(done_count)`` is called each time another ``progress_every``
    messages have completed (ACKed or failed). Returns a dict of results.
    """
    check_loopback(host)
    if n < 1 or connections < 1 or window < 1 or (rate is not None and rate <= 0):
        raise ValueError("n, connections, window (and rate, if given) must be positive")
    loop = asyncio.get_running_loop()
    msgs = Messages(n, prefix or make_prefix(), prebuild_mb)
    r = _Run(msgs, window, rate, progress, progress_every or n)

    results = await asyncio.gather(
        *(asyncio.wait_for(loop.create_connection(lambda: _Conn(r), host, port), timeout)
          for _ in range(connections)), return_exceptions=True)
    failed = [e for e in results if isinstance(e, BaseException)]
    r.errors["connect"] = len(failed)
    deadline = perf_counter() + timeout
    pacer = None
    if r.conns:
        for conn in list(r.conns):
            r.idle.extend([conn] * window)
        if rate:
            r.t0 = perf_counter() + 0.01
            pacer = asyncio.ensure_future(_pace(r, deadline))
        else:
            r.t0 = perf_counter()
            r.pump()
        try:
            await asyncio.wait_for(asyncio.shield(r.done), max(0.0, deadline - perf_counter()))
        except asyncio.TimeoutError:
            pass
    if pacer is not None:
        pacer.cancel()
    # whatever is still outstanding failed
    r.closing = True
    inflight = sum(len(c.inflight) for c in r.conns)
    r.errors["timeout"] += inflight
    r.errors["unsent"] += r.n - r.next_idx
    for conn in list(r.conns):
        conn.transport.close()
    await asyncio.sleep(0)

    lat = sorted(r.lat)
    elapsed = (r.t_last - r.t0) if r.t_last > r.t0 else 0.0
    return {
        "n": n, "connections": connections, "window": window, "offered_rate": rate,
        "ok": r.ok, "errors": sum(r.errors.values()),
        "error_kinds": {k: v for k, v in r.errors.items() if v},
        "elapsed_s": round(elapsed, 4),
        "msgs_per_s": round(r.ok / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(lat, 50) * 1e3, 3),
        "p90_ms": round(percentile(lat, 90) * 1e3, 3),
        "p99_ms": round(percentile(lat, 99) * 1e3, 3),
        "max_ms": round((lat[-1] if lat else 0.0) * 1e3, 3),
        "msg_bytes": msgs.size - 3, "loop": loop_name(),
    }


def format_result(res: dict) -> str:
    mode = f"open loop @ {res['offered_rate']:g} msg/s" if res["offered_rate"] else "closed loop"
    errs = f" {res['error_kinds']}" if res["errors"] else ""
    return (f"{res['ok']}/{res['n']} ok, {res['connections']} conn x window {res['window']}, {mode}, "
            f"{res['loop']}: {res['msgs_per_s']:.0f} msg/s, latency ms p50 {res['p50_ms']:.2f} "
            f"p90 {res['p90_ms']:.2f} p99 {res['p99_ms']:.2f} max {res['max_ms']:.2f}, "
            f"errors {res['errors']}{errs}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="MLLP load generator (ORM^O01 v2.5.1, ~2 KB)")
    p.add_argument("--host", default="127.0.0.1", help="loopback only")
    p.add_argument("--port", type=int, default=2575)
    p.add_argument("-n", "--messages", type=int, default=20000)
    p.add_argument("-c", "--connections", type=int, default=16)
    p.add_argument("-w", "--window", type=int, default=1, help="messages in flight per connection")
    p.add_argument("-r", "--rate", type=float, default=None, help="offered load msgs/s (open loop)")
    p.add_argument("--timeout", type=float, default=120.0, help="whole-run time limit, seconds")
    p.add_argument("--json", action="store_true", help="print the result dict as JSON")
    a = p.parse_args(argv)
    res = run(run_load(a.host, a.port, a.messages, a.connections, a.window, a.rate, a.timeout))
    print(json.dumps(res) if a.json else format_result(res))
    return 1 if res["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

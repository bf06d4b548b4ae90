"""MLLP listener: the asyncio edge of the inbound path.

Per frame: `engine.intake.take_frame` (pure) -> journal via group commit -> ACK.
The ACK is written only after the frame's messages are committed; ACKs on a
connection go out in the order the frames arrived (the committer resolves in
submission order). A connection with more than `_PAUSE_AT` frames waiting for
their commit stops being read until it drains below `_RESUME_AT`, so a sender
pipelining without waiting cannot grow our memory without bound.
"""
from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Callable

from channels.mllp.framing import Frame, Junk, MLLPDecoder, Oversize, Truncated, frame
from engine.config import Channel
from engine.db import error_text
from engine.group_commit import GroupCommitter
from engine.intake import FrameIntake, acks, store_failed_acks, take_broken, take_frame

log = logging.getLogger("engine.mllp")

_PAUSE_AT = 256
_RESUME_AT = 64


class MLLPListener:
    def __init__(self, channel: Channel, committer: GroupCommitter,
                 on_committed: Callable[[], None] = lambda: None,
                 on_ack: Callable[[str, str, float], None] = lambda channel, code, seconds: None):
        self.channel = channel
        self.source = channel.source
        self.committer = committer
        self.on_committed = on_committed
        self.on_ack = on_ack
        self.connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.source.host, self.source.port,
                                                reuse_address=True, backlog=1024)
        log.info("listening", extra={"fields": {"channel": self.channel.name, "host": self.source.host,
                                                "port": self.port}})

    async def stop(self, drain_seconds: float = 30.0) -> None:
        """Stop accepting, let in-flight frames commit and be ACKed, then close connections."""
        if self._server is None:
            return
        self._server.close()
        for conn in list(self.connections):
            conn.stop_reading()
        deadline = time.monotonic() + drain_seconds
        while any(c.pending for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.close()
        # connection_lost runs on a later loop turn and may journal a cut-off frame.
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self._server = None


class _Connection(asyncio.Protocol):
    def __init__(self, listener: MLLPListener):
        self.listener = listener
        self.decoder = MLLPDecoder(listener.source.max_message_bytes)
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.pending = 0
        self._paused = False
        self._closed = False
        self._idle: asyncio.TimerHandle | None = None
        self._last_data = 0.0

    # -- asyncio callbacks --------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        listener = self.listener
        if len(listener.connections) >= listener.source.max_connections:
            log.warning("connection refused: too many connections", extra={"fields": {
                "channel": listener.channel.name, "peer": self.peer, "limit": listener.source.max_connections}})
            transport.close()
            self._closed = True
            return
        listener.connections.add(self)
        self._arm_idle()
        log.info("connection opened", extra={"fields": {"channel": listener.channel.name, "peer": self.peer}})

    def data_received(self, data: bytes) -> None:
        self._last_data = asyncio.get_running_loop().time()
        for event in self.decoder.feed(data):
            self._on_event(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
        for event in self.decoder.close():  # journal what was cut off; nobody is left to ACK it
            self._on_event(event)
        self.listener.connections.discard(self)
        log.info("connection closed", extra={"fields": {"channel": self.listener.channel.name, "peer": self.peer}})

    # -- frames ---------------------------------------------------------------

    def _on_event(self, event) -> None:
        name = self.listener.channel.name
        if isinstance(event, Frame):
            intake = take_frame(event.payload, name, self.peer)
        elif isinstance(event, Truncated):
            intake = take_broken(event.payload, f"incomplete MLLP frame: {event.reason}", name, self.peer)
        elif isinstance(event, Oversize):
            intake = take_broken(event.head, f"message of {event.size} bytes exceeds max_message_bytes "
                                             f"({event.limit}); first {len(event.head)} bytes kept", name, self.peer)
        else:
            assert isinstance(event, Junk)
            log.warning("bytes outside MLLP frames discarded", extra={"fields": {
                "channel": name, "peer": self.peer, "bytes": event.size}})
            return
        self.pending += 1
        future = self.listener.committer.submit(intake.messages())
        future.add_done_callback(partial(self._committed, intake, time.perf_counter()))
        if self.pending >= _PAUSE_AT and not self._paused and not self._closed:
            self._paused = True
            self.transport.pause_reading()

    def _committed(self, intake: FrameIntake, started: float, future: asyncio.Future) -> None:
        self.pending -= 1
        error = future.exception()
        if error is not None:
            log.error("journal write failed; answering AE", extra={"fields": {
                "channel": self.listener.channel.name, "error": error_text(error)}})   # no values from the database
            payloads = store_failed_acks(intake, type(error).__name__)
        else:
            self.listener.on_committed()
            payloads = acks(intake, future.result())
            for received, stored in zip(intake.received, future.result()):
                m = received.message
                if m.status == "error":
                    log.warning("message refused", extra={"fields": {
                        "channel": m.channel, "message_id": stored.id, "control_id": m.control_id,
                        "ack": m.ack_code, "error": m.error}})
                elif log.isEnabledFor(logging.DEBUG):
                    log.debug("message stored", extra={"fields": {
                        "channel": m.channel, "message_id": stored.id, "control_id": m.control_id,
                        "type": m.message_type, "duplicate_of": stored.duplicate_of}})
        if self._closed:
            return
        seconds = time.perf_counter() - started
        for payload in payloads:
            self.transport.write(frame(payload))
        code = intake.received[0].message.ack_code if error is None else "AE"
        self.listener.on_ack(self.listener.channel.name, code, seconds)
        if self._paused and self.pending <= _RESUME_AT:
            self._paused = False
            self.transport.resume_reading()

    # -- lifecycle --------------------------------------------------------------

    def _arm_idle(self, delay: float | None = None) -> None:
        # One timer per connection that re-arms itself, not a cancel/re-create per read.
        loop = asyncio.get_running_loop()
        if delay is None:
            self._last_data = loop.time()
            delay = self.listener.source.idle_timeout_seconds
        self._idle = loop.call_later(delay, self._on_idle)

    def _on_idle(self) -> None:
        timeout = self.listener.source.idle_timeout_seconds
        quiet = asyncio.get_running_loop().time() - self._last_data
        if quiet < timeout or self.pending:
            self._arm_idle(max(timeout - quiet, 0.05))
            return
        log.info("connection idle timeout", extra={"fields": {"channel": self.listener.channel.name,
                                                              "peer": self.peer}})
        self.close()

    def stop_reading(self) -> None:
        if self.transport is not None and not self._closed and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

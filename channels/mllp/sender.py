"""MLLP sender: delivers queued HL7 messages to one peer over one persistent connection.

Window 1: a message is written, then its ACK is awaited before the next one goes
(`deliver` calls are serialized). ACK frames are read with the project's pure
decoder (`channels.mllp.framing`), so a large ACK or one split across reads is
handled the same way the listener handles inbound frames.

How each situation ends (see `DeliveryResult`):
- MSA-1 AA/CA -> sent; AE/CE -> the `on_error` policy; AR/CR -> the `on_reject`
  policy; any other MSA-1 -> the `on_error` policy. Detail names the code and the
  MSA-3/ERR text.
- replies that arrived while no message was waiting (a repeated or application ACK
  for an earlier message) are discarded before the next message is written.
- MSA-2 is not the sent MSH-10 (an ACK meant for an earlier message), no MSA in
  the reply, an ACK cut off or oversized -> retry, and the connection is dropped:
  its stream state is unknown.
- no ACK within `ack_timeout` -> retry, connection dropped (a late ACK can then
  never be taken for the next message).
- cannot connect -> retry at once with the error. Connect attempts back off
  exponentially (`reconnect_backoff` = first delay, cap); while backing off,
  `deliver` returns retry without touching the network, so a down peer is not
  hammered in a tight loop. The backoff between attempts of one row is the queue's.
- the peer closed a reused connection while it sat idle (found closed before
  sending, or closed/reset with no byte of reply right after the write, the way
  a stale keep-alive connection fails) -> reconnect and send once more on the
  fresh connection. Any other failure is returned, never resent here.
- payload over `max_message_bytes`, no MSH or MSH-10, or MSH-10 different from
  the row's control id -> dead (no resend can fix it).
Logs carry the destination, row id, control id and peer, never message content.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Literal

from channels.mllp.client import msa
from channels.mllp.framing import Frame, Junk, MLLPDecoder, Oversize, Truncated, frame
from channels.outbound import Delivery, DeliveryResult, dead, retry, sent
from engine.hl7v2.header import HeaderError, read_header

log = logging.getLogger("engine.mllp.sender")

Policy = Literal["retry", "dead", "sent"]
_ACCEPT = {"AA", "CA"}
_ERROR = {"AE", "CE"}
_REJECT = {"AR", "CR"}
_MAX_ACK_BYTES = 1024 * 1024      # an ACK is small; a 1 MiB one means a confused peer
_DETAIL_CHARS = 500


class _Link(asyncio.Protocol):
    """One TCP connection: frames go out through the transport, replies come in through the decoder."""

    def __init__(self) -> None:
        self.decoder = MLLPDecoder(max_bytes=_MAX_ACK_BYTES, keep_bytes=4096)
        self.transport: asyncio.Transport | None = None
        self.replies: deque[Frame | Truncated | Oversize] = deque()
        self.received = 0          # bytes received since the last write
        self.closed = False
        self.close_reason = ""
        self.lost: asyncio.Future = asyncio.get_running_loop().create_future()
        self._wake: asyncio.Future | None = None
        self._writable: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        for event in self.decoder.feed(data):
            if not isinstance(event, Junk):    # padding or noise between frames is harmless
                self.replies.append(event)
        if self.replies:
            self._set(self._wake)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.close_reason = f"{type(exc).__name__}: {exc}" if exc else "peer closed the connection"
        self.replies.extend(self.decoder.close())
        self._set(self._wake)
        self._set(self._writable)
        self._set(self.lost)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._set(self._writable)
        self._writable = None

    @staticmethod
    def _set(future: asyncio.Future | None) -> None:
        if future is not None and not future.done():
            future.set_result(None)

    def send(self, data: bytes) -> int:
        """Write one frame. Returns how many unread replies were discarded: frames that arrived
        before this message was sent (a second ACK for an earlier message) cannot be its ACK."""
        stale = len(self.replies)
        self.replies.clear()
        self.received = 0
        self.transport.write(data)
        return stale

    @staticmethod
    async def _wait(future: asyncio.Future, deadline: float) -> None:
        """Wait for `future`, or until the loop-time `deadline`, whichever comes first."""
        timer = asyncio.get_running_loop().call_at(deadline, _Link._set, future)
        try:
            await future
        finally:
            timer.cancel()

    async def drained(self, deadline: float) -> bool:
        """The kernel took all written bytes (or the connection closed); False on timeout."""
        loop = asyncio.get_running_loop()
        while self._writable is not None and not self.closed:
            if loop.time() >= deadline:
                return False
            await self._wait(self._writable, deadline)
        return True

    async def reply(self, deadline: float) -> Frame | Truncated | Oversize | None:
        """The next reply frame; None when the connection closed without one. Raises TimeoutError."""
        loop = asyncio.get_running_loop()
        while not self.replies:
            if self.closed:
                return None
            if loop.time() >= deadline:
                raise TimeoutError
            self._wake = loop.create_future()
            await self._wait(self._wake, deadline)
        return self.replies.popleft()

    def drop(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class MLLPSender:
    """A connector (see channels.outbound.Connector) for one MLLP peer."""

    def __init__(self, host: str, port: int, *, ack_timeout: float = 10.0, connect_timeout: float = 5.0,
                 on_error: Policy = "retry", on_reject: Policy = "dead",
                 max_message_bytes: int = 64 * 1024 * 1024,
                 reconnect_backoff: tuple[float, float] = (0.1, 5.0), name: str | None = None):
        for key, value in (("on_error", on_error), ("on_reject", on_reject)):
            if value not in ("retry", "dead", "sent"):
                raise ValueError(f"{key} must be 'retry', 'dead' or 'sent', not {value!r}")
        if ack_timeout <= 0 or connect_timeout <= 0 or max_message_bytes < 1:
            raise ValueError("ack_timeout, connect_timeout and max_message_bytes must be positive")
        self.host, self.port = host, port
        self.peer = f"{host}:{port}"
        self.name = name or self.peer
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.on_error: Policy = on_error
        self.on_reject: Policy = on_reject
        self.max_message_bytes = max_message_bytes
        self.backoff_first, self.backoff_cap = reconnect_backoff
        self._link: _Link | None = None
        self._lock = asyncio.Lock()
        self._failures = 0                 # connect failures in a row
        self._last_error = ""
        self._not_before = 0.0             # monotonic time before which no connect is tried
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.closed

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        async with self._lock:
            result = await self._deliver(delivery)
        if result.outcome != "sent" or result.detail:
            level = logging.INFO if result.outcome == "sent" else logging.WARNING
            log.log(level, "mllp delivery " + ("accepted by policy" if result.outcome == "sent" else "failed"),
                    extra={"fields": {"destination": delivery.destination, "outbound_id": delivery.id,
                                      "control_id": delivery.control_id, "peer": self.peer,
                                      "outcome": result.outcome, "attempt": delivery.attempt}})
        return result

    async def close(self) -> None:
        """Close the connection; a delivery in flight ends as retry, later ones return retry at once."""
        self._closed = True
        link, self._link = self._link, None
        if link is not None and not link.closed:
            link.transport.close()
            try:
                await asyncio.wait_for(asyncio.shield(link.lost), 2.0)
            except asyncio.TimeoutError:
                link.drop()

    async def _deliver(self, delivery: Delivery) -> DeliveryResult:
        payload = delivery.payload
        if len(payload) > self.max_message_bytes:
            return dead(f"message is {len(payload):,} bytes, over this destination's limit of "
                        f"{self.max_message_bytes:,} bytes")
        control_id = _control_id(delivery)
        if isinstance(control_id, DeliveryResult):
            return control_id
        wire = frame(payload)
        link = self._link if self.connected else None
        if link is not None:
            result = await self._exchange(link, wire, control_id)
            if result is not None:
                return result
            self._link = None      # a stale idle connection: the peer had closed it; one more try below
            if not self._closed:
                log.info("peer had closed the idle connection; sending on a new one",
                         extra={"fields": {"destination": delivery.destination, "outbound_id": delivery.id,
                                           "peer": self.peer}})
        if self._closed:
            return retry("the sender was closed (engine stopping)")
        link = await self._connect()
        if isinstance(link, DeliveryResult):
            return link
        result = await self._exchange(link, wire, control_id)
        if result is None:
            self._link = None
            return retry(f"{self.peer} closed the connection without an ACK ({link.close_reason})")
        return result

    async def _connect(self) -> _Link | DeliveryResult:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        if now < self._not_before:
            return retry(f"{self.peer} is unreachable ({self._failures} failed connection attempts, last: "
                         f"{self._last_error}); next attempt in {self._not_before - now:.1f} s")
        try:
            _, link = await asyncio.wait_for(loop.create_connection(_Link, self.host, self.port),
                                             self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self._failures += 1
            self._last_error = _describe(exc) if not isinstance(exc, asyncio.TimeoutError) else \
                f"no answer within {self.connect_timeout:g} s"
            self._not_before = time.monotonic() + min(self.backoff_cap,
                                                      self.backoff_first * 2 ** (self._failures - 1))
            log.log(logging.WARNING if self._failures == 1 else logging.DEBUG, "mllp connect failed",
                    extra={"fields": {"sender": self.name, "peer": self.peer, "failures": self._failures,
                                      "error": self._last_error}})
            return retry(f"cannot connect to {self.peer}: {self._last_error}")
        if self._failures:
            log.info("mllp peer reachable again", extra={"fields": {"sender": self.name, "peer": self.peer,
                                                                     "failures": self._failures}})
        self._failures, self._not_before = 0, 0.0
        self._link = link
        return link

    async def _exchange(self, link: _Link, wire: bytes, control_id: str) -> DeliveryResult | None:
        """Send one frame and judge its ACK. None: the connection was closed with no reply at all."""
        if link.closed:
            return None
        loop = asyncio.get_running_loop()
        if link.send(wire):
            log.debug("discarded replies that arrived between messages", extra={"fields": {"peer": self.peer}})
        deadline = loop.time() + self.ack_timeout
        if not await link.drained(deadline):
            return self._drop(link, retry(f"{self.peer} did not read the message within {self.ack_timeout:g} s "
                                          "(connection dropped)"))
        try:
            reply = await link.reply(deadline)
        except TimeoutError:
            return self._drop(link, retry(f"no ACK from {self.peer} within {self.ack_timeout:g} s "
                                          "(connection dropped)"))
        if reply is None:
            if link.received:
                return self._drop(link, retry(f"{self.peer} closed the connection without an ACK"))
            return None
        if isinstance(reply, Truncated):
            return self._drop(link, retry(f"ACK cut off: {reply.reason}",
                                          ack=reply.payload[:_DETAIL_CHARS].decode("utf-8", "replace")))
        if isinstance(reply, Oversize):
            return self._drop(link, retry(f"reply of {reply.size:,} bytes is over {reply.limit:,} bytes: not an ACK"))
        return self._judge(link, reply.payload, control_id)

    def _judge(self, link: _Link, ack: bytes, control_id: str) -> DeliveryResult:
        text = ack.decode("utf-8", "replace")
        code, acked_id, _ = msa(ack)
        code = code.strip().upper()
        if not code:
            return self._drop(link, retry("reply has no MSA segment: not an ACK", ack=text))
        if acked_id.strip() != control_id:
            return self._drop(link, retry(f"ACK is for another message: MSA-2 {acked_id.strip()!r}, "
                                          f"sent MSH-10 {control_id!r} (connection dropped)", ack=text))
        if code in _ACCEPT:
            return sent(ack=text)
        said = error_text(ack)
        if code in _REJECT:
            return _apply(self.on_reject, f"{code} (rejected){': ' + said if said else ''}", text)
        known = "" if code in _ERROR else " (unknown ACK code)"
        return _apply(self.on_error, f"{code}{known}{': ' + said if said else ''}", text)

    def _drop(self, link: _Link, result: DeliveryResult) -> DeliveryResult:
        link.drop()
        if self._link is link:
            self._link = None
        return result


def _apply(policy: Policy, detail: str, ack: str) -> DeliveryResult:
    if policy == "sent":
        return sent(detail=f"accepted by policy despite {detail}", ack=ack)
    return retry(detail, ack=ack) if policy == "retry" else dead(detail, ack=ack)


def _control_id(delivery: Delivery) -> str | DeliveryResult:
    """The MSH-10 the ACK must echo: the row's control id, checked against the payload's MSH."""
    payload = delivery.payload
    end = payload.find(b"\r")
    msh = payload[:end + 1] if end >= 0 else payload + b"\r"
    try:
        header = read_header(msh)
    except HeaderError as exc:
        return dead(f"not a sendable HL7 message: {exc.text}")
    found = header.control_id.strip()
    if delivery.control_id is not None and delivery.control_id != found:
        return dead(f"the row's control id {delivery.control_id!r} differs from the payload's MSH-10 {found!r}")
    return found


def error_text(ack: bytes) -> str:
    """MSA-3 and the ERR segments' text of an ACK, joined and unescaped ('' when there is none).

    ERR from 2.5: ERR-3 (code^text) and ERR-8 (user message); before 2.5: ERR-1
    (segment^seq^field^code&text).
    """
    segments = ack.replace(b"\n", b"\r").split(b"\r")
    msh = segments[0] if segments and segments[0].startswith(b"MSH") else b"MSH|^~\\&"
    fs = msh[3:4].decode("latin-1") or "|"
    enc = (msh[4:8].decode("latin-1") + "^~\\&")[:4]
    comp, sub = enc[0], enc[3]
    texts: list[str] = []
    for raw in segments:
        seg = raw.decode("utf-8", "replace")
        fields = seg.split(fs)
        if seg.startswith("MSA") and len(fields) > 3 and fields[3].strip():
            texts.append(fields[3])
        elif seg.startswith("ERR"):
            if len(fields) > 8 and fields[8].strip():
                texts.append(fields[8])
            if len(fields) > 3 and fields[3].strip():
                parts = fields[3].split(comp)
                texts.append(" ".join(p for p in parts[:2] if p))
            elif len(fields) > 1 and fields[1].strip():
                code = fields[1].split(comp)[3:4]
                texts.append(" ".join(p for p in (code[0].split(sub)[:2] if code else []) if p))
    unique = list(dict.fromkeys(_unescape(t.strip(), fs, enc) for t in texts if t.strip()))
    return "; ".join(unique)[:_DETAIL_CHARS]


def _unescape(text: str, fs: str, enc: str) -> str:
    esc = enc[2]
    if esc not in text:
        return text
    for code, char in (("F", fs), ("S", enc[0]), ("R", enc[1]), ("T", enc[3]), ("E", esc)):
        text = text.replace(f"{esc}{code}{esc}", char)
    return text


def _describe(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__

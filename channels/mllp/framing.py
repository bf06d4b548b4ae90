"""MLLP framing as a pure object: bytes in, frames and framing problems out.

A frame is <VT 0x0B> payload <FS 0x1C><CR 0x0D>. `MLLPDecoder.feed(data)` takes
whatever a socket read returned and gives back the events it completes; `close()`
reports a frame cut off by the end of the connection. No I/O, no asyncio: the
listener, the client and the tests all feed the same object.

Bound: the end-block search resumes where the previous one stopped and consumed
bytes are dropped from the front of a bytearray (amortised O(1) in CPython), so
a message of n bytes costs O(n) however it is split into reads, and a sender
cannot make us rescan a growing buffer (quadratic time) with tiny reads.

Untidy traffic, and what each case yields:
- bytes before a start block (other than blank CR/LF/space/NUL padding)
  -> `Junk`, then framing resumes at the next start block;
- FS not followed by CR -> the frame is accepted (some senders omit the CR);
- a start block inside an open frame (the end block went missing)
  -> `Truncated` for the open frame, and the new frame starts;
- the connection ends inside a frame -> `close()` returns `Truncated`;
- a payload over `max_bytes` -> kept only up to `keep_bytes`, the rest is
  discarded until its end block, then `Oversize` (so it can still be answered).
"""
from __future__ import annotations

from dataclasses import dataclass

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c"
CARRIAGE_RETURN = b"\r"
_PADDING = b"\r\n \t\x00"


def frame(payload: bytes) -> bytes:
    """Wrap one payload for the wire."""
    return START_BLOCK + payload + END_BLOCK + CARRIAGE_RETURN


@dataclass(frozen=True, slots=True)
class Frame:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Junk:
    """Bytes outside any frame; `head` is at most 64 bytes of them."""
    size: int
    head: bytes


@dataclass(frozen=True, slots=True)
class Truncated:
    """A frame that never got its end block."""
    payload: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class Oversize:
    """A complete frame larger than the limit; `head` is its first bytes."""
    size: int
    head: bytes
    limit: int


Event = Frame | Junk | Truncated | Oversize


class MLLPDecoder:
    def __init__(self, max_bytes: int = 64 * 1024 * 1024, keep_bytes: int = 64 * 1024):
        if max_bytes < 1 or keep_bytes < 1:
            raise ValueError("max_bytes and keep_bytes must be positive")
        self.max_bytes = max_bytes
        self.keep_bytes = min(keep_bytes, max_bytes)
        self._buf = bytearray()
        self._in_frame = False
        self._scanned = 0          # bytes of _buf already searched for FS/VT
        self._oversize = 0         # bytes dropped from the current oversized frame
        self._oversize_head = b""
        self._swallow_cr = False   # a frame just ended at FS; its CR may follow

    @property
    def in_frame(self) -> bool:
        """True while a frame has started and not ended (for idle-timeout reports)."""
        return self._in_frame

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        buf = self._buf
        buf += data
        while buf:
            if not self._in_frame:
                if self._swallow_cr:
                    self._swallow_cr = False
                    if buf[:1] == CARRIAGE_RETURN:
                        del buf[:1]
                        continue
                start = buf.find(START_BLOCK)
                outside = buf if start < 0 else buf[:start]
                if outside.strip(_PADDING):
                    events.append(Junk(len(outside), bytes(outside[:64])))
                if start < 0:
                    buf.clear()
                    break
                del buf[: start + 1]
                self._in_frame = True
                self._scanned = 0
                continue
            end = buf.find(END_BLOCK, self._scanned)
            restart = buf.find(START_BLOCK, self._scanned, end if end >= 0 else len(buf))
            if restart >= 0:
                events.append(self._finish_truncated(restart, "start block before end block"))
                continue
            if end < 0:
                self._scanned = len(buf)
                if self._oversize or len(buf) > self.max_bytes:
                    self._spill()
                break
            events.append(self._finish(end))
        return events

    def close(self) -> list[Event]:
        """The connection ended: report an unfinished frame, if any."""
        if not self._in_frame:
            return []
        event = self._finish_truncated(len(self._buf), "connection closed before end block")
        self._buf.clear()
        return [event]

    def _finish(self, end: int) -> Event:
        buf = self._buf
        if self._oversize or end > self.max_bytes:
            self._spill(upto=end)
            event: Event = Oversize(self._oversize, self._oversize_head, self.max_bytes)
            del buf[:1]
        else:
            event = Frame(bytes(buf[:end]))
            del buf[: end + 1]
        self._reset_frame()
        self._swallow_cr = True
        return event

    def _finish_truncated(self, end: int, reason: str) -> Event:
        if self._oversize:
            self._spill(upto=end)
            event: Event = Oversize(self._oversize, self._oversize_head, self.max_bytes)
        else:
            event = Truncated(bytes(self._buf[:end]), reason)
            del self._buf[:end]
        self._reset_frame()
        return event

    def _spill(self, upto: int | None = None) -> None:
        """Drop an oversized frame's bytes, keeping only its head."""
        buf = self._buf
        n = len(buf) if upto is None else upto
        if not self._oversize_head:
            self._oversize_head = bytes(buf[: self.keep_bytes])
        self._oversize += n
        del buf[:n]
        self._scanned = 0

    def _reset_frame(self) -> None:
        self._in_frame = False
        self._scanned = 0
        self._oversize = 0
        self._oversize_head = b""

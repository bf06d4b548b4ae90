"""MLLP framing and the minimal HL7 byte slicing the benchmark tools need.

Nothing is measured here. Shared by the load generator and the raw-asyncio
baseline servers, so that none of them needs an HL7 library:

* ``frame`` / ``FrameReader``: MLLP envelope ``0x0B <message> 0x1C 0x0D``.
* ``msh10``: slice the message control id out of the MSH segment.
* ``canned_ack``: a fixed ACK echoing a control id in MSA-2.
* ``parse_msa``: (MSA-1, MSA-2) of an ACK.
"""

from __future__ import annotations

SB = b"\x0b"
EB = b"\x1c"
TRAILER = b"\x1c\x0d"
MAX_FRAME = 16 * 1024 * 1024  # refuse to buffer more than this without a frame end


class FrameError(ValueError):
    """The peer sent more than MAX_FRAME bytes without an MLLP end block."""


def frame(msg: bytes) -> bytes:
    """Wrap one HL7 message in the MLLP envelope."""
    return SB + msg + TRAILER


class FrameReader:
    """Incremental MLLP de-framer: feed it received bytes, get complete messages back."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out = []
        start = 0
        size = len(buf)
        while start < size:  # bounded: start strictly grows or we break
            end = buf.find(TRAILER, start)
            if end < 0:
                break
            sb = buf.find(SB, start, end)
            out.append(bytes(buf[(sb + 1 if sb >= 0 else start):end]))
            start = end + 2
        if start:
            del buf[:start]
        if len(buf) > MAX_FRAME:
            raise FrameError(f"no MLLP end block within {MAX_FRAME} bytes")
        return out


def msh10(msg: bytes) -> bytes:
    """MSH-10 of a CR-separated HL7 message, by slicing (b"" if absent)."""
    end = msg.find(b"\r")
    seg = msg if end < 0 else msg[:end]
    parts = seg.split(seg[3:4] or b"|", 10)
    # parts[0] = "MSH", parts[1] = MSH-2 (encoding chars), parts[n-1] = MSH-n
    return parts[9] if len(parts) > 9 else b""


_ACK_HEAD = b"\x0bMSH|^~\\&|BENCH|BENCH|SENDER|SENDER|20240101000000||ACK^O01^ACK|ACK"
_ACK_MID = b"|P|2.5.1\rMSA|"


def canned_ack(control_id: bytes, code: bytes = b"AA") -> bytes:
    """An MLLP-framed ACK with MSA-1 = code and MSA-2 = control_id."""
    return b"".join((_ACK_HEAD, control_id, _ACK_MID, code, b"|", control_id, b"\r\x1c\x0d"))


def parse_msa(ack: bytes) -> tuple[bytes, bytes]:
    """(MSA-1, MSA-2) of an ACK message (unframed); (b"", b"") if there is no MSA."""
    i = ack.find(b"\rMSA")
    if i < 0:
        return b"", b""
    end = ack.find(b"\r", i + 1)
    parts = ack[i + 1:end if end >= 0 else len(ack)].split(ack[3:4] or b"|", 3)
    return (parts[1] if len(parts) > 1 else b""), (parts[2] if len(parts) > 2 else b"")

"""Splitting one MLLP frame into messages.

A frame holds one message, several messages back to back (some senders do
that), or an HL7 batch: [FHS] BHS {MSH ...} BTS [FTS]. Every message found is
returned, so none goes unanswered. Works on prepared (CR-separated) bytes and
costs one pass over the frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class BatchEnvelope:
    """The batch/file header and trailer segments around the messages, as bytes."""
    fhs: bytes | None = None
    bhs: bytes | None = None
    bts: bytes | None = None
    fts: bytes | None = None
    problems: list[str] = field(default_factory=list)


_ENVELOPE = (b"FHS", b"BHS", b"BTS", b"FTS")


def split_frame(prepared: bytes) -> tuple[list[bytes], BatchEnvelope | None]:
    """Return (messages, envelope); envelope is None for a frame that is not a batch.

    Each message is CR-separated and ends with a CR. Bytes before the first MSH
    of a non-batch frame stay with it (so `read_header` reports them).
    """
    if not prepared.startswith((b"FHS", b"BHS")):
        if prepared.find(b"\rMSH") < 0:
            return [prepared], None
        return _split_messages(prepared), None

    envelope = BatchEnvelope()
    messages: list[bytes] = []
    current: list[bytes] = []
    for segment in prepared.split(b"\r"):
        if not segment:
            continue
        name = segment[:3]
        if name in _ENVELOPE and (len(segment) == 3 or not segment[3:4].isalnum()):
            if current:
                messages.append(b"\r".join(current) + b"\r")
                current = []
            attr = name.decode().lower()
            if getattr(envelope, attr) is not None:
                envelope.problems.append(f"repeated {name.decode()} segment")
            setattr(envelope, attr, segment)
        elif name == b"MSH":
            if current:
                messages.append(b"\r".join(current) + b"\r")
            current = [segment]
        elif current:
            current.append(segment)
        else:
            envelope.problems.append(f"segment {name.decode('latin-1', 'replace')} outside any message")
    if current:
        messages.append(b"\r".join(current) + b"\r")
    if not messages:   # nothing to split out: the frame itself is refused (and kept) as one message
        return [prepared], None
    _check_count(envelope, len(messages))
    return messages, envelope


def _split_messages(prepared: bytes) -> list[bytes]:
    messages = []
    start = 0
    while True:
        nxt = prepared.find(b"\rMSH", start)
        if nxt < 0:
            messages.append(prepared[start:])
            return messages
        messages.append(prepared[start:nxt + 1])
        start = nxt + 1


def _check_count(envelope: BatchEnvelope, found: int) -> None:
    """BTS-1 is the number of messages the sender meant to put in the batch."""
    if envelope.bts is None:
        envelope.problems.append("batch has no BTS trailer")
        return
    sep = envelope.bts[3:4]
    fields = envelope.bts.split(sep) if sep else []
    declared = fields[1].strip() if len(fields) > 1 else b""
    if declared and declared.isdigit() and int(declared) != found:
        envelope.problems.append(f"BTS-1 declares {int(declared)} messages, batch holds {found}")

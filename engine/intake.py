"""From one MLLP frame to journal rows and the ACKs to send once they are committed.

Pure functions, no I/O: the listener calls `take_frame` (or `take_broken` for a
truncated or oversize frame), hands `FrameIntake.messages()` to the journal,
and after the commit calls `acks` with what the journal returned. Work per
message is slicing the MSH, one decode check and one hash — the full parse
happens after the ACK (engine.processor).

ACK codes: a message whose MSH cannot be trusted (no MSH, bad separators, no
MSH-9/MSH-10, unsupported version) is refused with AR; one whose bytes break
the character set it declares gets AE. Both are still journaled, status
'error', with the reason, so nothing a sender sent is lost.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from engine.hl7v2 import (AckCode, BatchEnvelope, CharsetError, ErrorDetail, Header, HeaderError, build_ack,
                          decode, enhanced_ack_wanted, first_patient_id, prepare, read_header, split_frame,
                          wants_enhanced_ack)
from engine.hl7v2.ack import ack_code_for, build_batch_ack
from engine.store import InboundMessage, Stored, now_iso

INTERNAL_ERROR = "207"


@dataclass(slots=True)
class Received:
    message: InboundMessage
    header: Header | None
    code: AckCode
    errors: list[ErrorDetail] = field(default_factory=list)


@dataclass(slots=True)
class FrameIntake:
    received: list[Received]
    envelope: BatchEnvelope | None = None

    def messages(self) -> list[InboundMessage]:
        return [r.message for r in self.received]


def _content_hash(message: bytes) -> str:
    return hashlib.blake2b(message, digest_size=16).hexdigest()


def take_frame(payload: bytes, channel: str, peer: str) -> FrameIntake:
    received_at = now_iso()
    prepared = prepare(payload)
    pieces, envelope = split_frame(prepared)
    frame_warnings = list(envelope.problems) if envelope else []
    if len(pieces) > 1 and envelope is None:
        frame_warnings.append(f"one of {len(pieces)} messages sent in a single MLLP frame")
    if payload.startswith(b"\xef\xbb\xbf"):
        frame_warnings.append("UTF-8 byte-order mark removed")
    out = []
    for piece in pieces:
        # A single-message frame keeps its bytes exactly as received.
        raw = payload if len(pieces) == 1 and envelope is None else piece
        out.append(_take_message(piece, raw, channel, peer, received_at, frame_warnings))
    return FrameIntake(out, envelope)


def _take_message(message: bytes, raw: bytes, channel: str, peer: str, received_at: str,
                  frame_warnings: list[str]) -> Received:
    warnings = list(frame_warnings)
    entry = InboundMessage(channel=channel, received_at=received_at, peer=peer, raw=raw,
                           content_hash=_content_hash(message), status="received", ack_code="AA")
    header: Header | None = None
    try:
        header = read_header(message)
        decoded = decode(message, header.text(18))
        entry.charset = decoded.codec
        if decoded.warning:
            warnings.append(decoded.warning)
        code, errors = AckCode.AA, []
    except HeaderError as exc:
        header = exc.header
        code, errors = AckCode.AR, [ErrorDetail(exc.code, exc.text, exc.field)]
    except CharsetError as exc:
        code, errors = AckCode.AE, [ErrorDetail("102", exc.text, "MSH-18")]
    except Exception as exc:  # a bug must not lose the message: journal it as an error and say so
        code, errors = AckCode.AE, [ErrorDetail(INTERNAL_ERROR, f"internal error reading the header: "
                                                                f"{type(exc).__name__}: {exc}", "")]
    if header is not None:
        entry.control_id = header.control_id or None
        entry.sender = header.sender
        entry.message_type = header.message_type or None
        entry.version = header.version or None
        if code is AckCode.AA:
            entry.patient_id = first_patient_id(message, header)
    entry.ack_code = ack_code_for(header, code)
    if errors:
        entry.status, entry.error = "error", errors[0].text
    entry.warnings = "; ".join(warnings) or None
    return Received(entry, header, code, errors)


def take_broken(payload: bytes, reason: str, channel: str, peer: str) -> FrameIntake:
    """A truncated or oversize frame: journaled as an error, answered AR when its MSH is readable."""
    intake = take_frame(payload, channel, peer)
    first = intake.received[0]
    first.code = AckCode.AR
    first.errors = [ErrorDetail("100", reason, "")] + first.errors
    first.message.status, first.message.error = "error", reason
    first.message.ack_code = ack_code_for(first.header, AckCode.AR)
    intake.received = [first]
    intake.envelope = None
    return intake


def _ack_timestamp() -> str:
    t = now_iso()
    return f"{t[0:4]}{t[5:7]}{t[8:10]}{t[11:13]}{t[14:16]}{t[17:19]}+0000"


def acks(intake: FrameIntake, stored: list[Stored]) -> list[bytes]:
    """The ACK payloads to send for a committed frame (one per message; one batch ACK for a batch).

    Enhanced-mode messages whose MSH-15 asks for no accept ACK in this case are skipped,
    except refusals (AR/CR), which are always answered.
    """
    timestamp = _ack_timestamp()
    out = []
    for received, row in zip(intake.received, stored):
        header = received.header
        # A refused message is always answered: its MSH-15 cannot be trusted, and a
        # sender left waiting for an ACK that never comes is worse than an unasked-for one.
        if received.code is not AckCode.AR and wants_enhanced_ack(header) \
                and not enhanced_ack_wanted(header, received.code is AckCode.AA):
            continue
        errors = list(received.errors)
        if row.control_id_reused:
            errors.append(ErrorDetail("0", "control id was used before with different content; "
                                           "accepted as a new message", "MSH-10", "W"))
        out.append(build_ack(header, received.code, f"ACK{row.id}", timestamp, errors))
    if intake.envelope is not None:
        envelope = intake.envelope
        return [build_batch_ack(envelope.fhs, envelope.bhs, out, f"BACK{stored[0].id}", timestamp)]
    return out


def store_failed_acks(intake: FrameIntake, reason: str) -> list[bytes]:
    """ACKs for a frame the journal could not store: AE, so the sender keeps and resends it."""
    timestamp = _ack_timestamp()
    error = ErrorDetail(INTERNAL_ERROR, f"message not stored ({reason}); please resend", "")
    return [build_ack(r.header, AckCode.AE, "ACK0", timestamp, [error]) for r in intake.received]

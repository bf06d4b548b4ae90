"""What the delivery loop hands a destination connector, and what it gets back.

A connector delivers one queued row at a time and reports one of three outcomes:
`sent` (the peer confirmed it), `retry` (try the row again later; the queue owns
the backoff between attempts of a row) or `dead` (retrying cannot help: a refusal,
an unusable payload). Connectors never raise for a delivery problem — a refused
message, a down peer, a full disk are all a `DeliveryResult` whose `detail` tells
the analyst what happened. They do raise for programming errors (a bad argument).

`detail` and `ack` may carry what the peer said (an ACK's error text, an HTTP body
head); they go to the queue row, never to logs at INFO or above.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Outcome = Literal["sent", "retry", "dead"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One queued outbound row handed to a connector."""
    id: int                 # queue row id
    destination: str        # destination name
    message_type: str       # "SIU^S12", "MDM^T02", "fax", "email", "sms", ...
    control_id: str | None  # MSH-10 of an HL7 payload (the same on every resend)
    payload: bytes          # HL7 (segments joined by \r, no MLLP framing) or UTF-8 JSON for fax/email/sms/webhook
    attempt: int            # 1 on the first try


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    outcome: Outcome           # retry: try again later (backoff by the queue); dead: never retry
    detail: str | None = None  # the error or refusal, for the analyst (no PHI beyond what the ACK says)
    ack: str | None = None     # the ACK/response received, as text (HL7 ACK, HTTP status + body head, SMTP reply)


def sent(detail: str | None = None, ack: str | None = None) -> DeliveryResult:
    return DeliveryResult("sent", detail, ack)


def retry(detail: str, ack: str | None = None) -> DeliveryResult:
    return DeliveryResult("retry", detail, ack)


def dead(detail: str, ack: str | None = None) -> DeliveryResult:
    return DeliveryResult("dead", detail, ack)


class Connector(Protocol):
    async def deliver(self, delivery: Delivery) -> DeliveryResult: ...

    async def close(self) -> None: ...

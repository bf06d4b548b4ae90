"""SMTP sender: delivers outbound email (patient outreach, notices) through one mail server.

Payload (UTF-8 JSON): {"to": "...", "subject": "...", "body": "plain text", "html": optional}.
Each row opens one SMTP session in a worker thread (smtplib blocks): EHLO,
STARTTLS if asked, AUTH if a username is set, MAIL, RCPT, DATA. The message has
a Message-ID derived from the destination and row id, the same on every resend.

Outcomes:
- the server accepts DATA -> sent (`ack` is its reply, e.g. "250 2.0.0 Ok: queued");
- a 4xx reply at any step, a connection failure, a dropped session or a timeout -> retry;
- a 5xx reply (unknown recipient, refused sender, rejected content, failed AUTH)
  -> dead, with the server's reply;
- payload not JSON, no valid recipient address -> dead.
"""
from __future__ import annotations

import asyncio
import json
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from channels.outbound import Delivery, DeliveryResult, dead, retry, sent


class _Refused(Exception):
    def __init__(self, code: int, reply: str, step: str):
        super().__init__(f"{code} {reply}")
        self.code, self.reply, self.step = code, reply, step


def build_email(payload: bytes, sender: str, message_id: str) -> tuple[EmailMessage, str]:
    """(the message, the recipient). Raises ValueError naming what is wrong with the payload."""
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"email payload is not UTF-8 JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("email payload is not a JSON object")
    to = str(doc.get("to") or "").strip()
    if "@" not in to or any(c in to for c in " \r\n,;<>"):
        raise ValueError("no valid recipient address (to)")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = str(doc.get("subject") or "")
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = message_id
    message.set_content(str(doc.get("body") or ""))
    if doc.get("html"):
        message.add_alternative(str(doc["html"]), subtype="html")
    return message, to


class SMTPSender:
    """A connector (channels.outbound.Connector) for one SMTP server."""

    def __init__(self, host: str, port: int, *, sender: str, starttls: bool = False,
                 username: str | None = None, password: str | None = None, timeout: float = 10):
        if "@" not in sender:
            raise ValueError(f"sender {sender!r} is not an email address")
        self.host, self.port = host, port
        self.sender = sender
        self.starttls = starttls
        self.username, self.password = username, password
        self.timeout = timeout

    async def deliver(self, delivery: Delivery) -> DeliveryResult:
        domain = self.sender.rsplit("@", 1)[1]
        try:
            message, to = build_email(delivery.payload, self.sender,
                                      f"<{delivery.destination}.{delivery.id}@{domain}>")
        except ValueError as exc:
            return dead(str(exc))
        try:
            code, reply = await asyncio.to_thread(self._send, message, to)
        except _Refused as exc:
            detail = f"{exc.step} refused by {self.host}:{self.port}: {exc.code} {exc.reply}"
            return dead(detail, ack=str(exc)) if 500 <= exc.code < 600 else retry(detail, ack=str(exc))
        except (smtplib.SMTPException, OSError) as exc:
            return retry(f"cannot deliver through {self.host}:{self.port}: {type(exc).__name__}: {exc}")
        return sent(ack=f"{code} {reply}")

    async def close(self) -> None:
        pass        # a session per row: nothing stays open

    def _send(self, message: EmailMessage, to: str) -> tuple[int, str]:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            step = "EHLO"
            try:
                _check(smtp.ehlo(), step)
                if self.starttls:
                    step = "STARTTLS"
                    smtp.starttls(context=ssl.create_default_context())
                    _check(smtp.ehlo(), "EHLO")
                if self.username:
                    step = "AUTH"
                    try:
                        smtp.login(self.username, self.password or "")
                    except smtplib.SMTPNotSupportedError:
                        raise _Refused(530, "the server does not offer AUTH", step) from None
                step = "MAIL FROM"
                _check(smtp.mail(self.sender), step)
                step = "RCPT TO"
                _check(smtp.rcpt(to), step)
                step = "DATA"
                code, reply = smtp.data(message.as_bytes())     # raises only for a refused DATA command
                _check((code, reply), "message")
            except smtplib.SMTPResponseException as exc:
                raise _Refused(exc.smtp_code, _text(exc.smtp_error), step) from None
            return code, _text(reply)


def _check(answer: tuple[int, bytes], step: str) -> None:
    code, reply = answer
    if not 200 <= code < 300:
        raise _Refused(code, _text(reply), step)


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())[:300]

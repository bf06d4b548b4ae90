"""Real test peers on loopback for outbound tests: an MLLP EHR, an SMTP server, an HTTP endpoint.

Each runs in a background thread (its own event loop or server thread), so both
blocking tests and asyncio tests can talk to it, and records what it received.

    with MLLPReceiver() as ehr:                     # AA to everything by default
        ehr.script(Reply("AE", text="bad PID"), Reply(answer=False))   # then one per message
        ... deliver to ("127.0.0.1", ehr.port) ...
        ehr.wait_for(2)                             # -> the raw messages, in order
        ehr.stop(); ehr.start()                     # the peer goes down, comes back on the same port

A scripted reply can: use any MSA-1 (AA/AE/AR/CA/CE/CR), wait before answering
(`delay`), never answer (`answer=False`, the sender times out), echo a wrong
MSA-2 (`control_id`), ACK twice (`repeat=2`), or close the connection after the
message (`close`).
"""
from __future__ import annotations

import asyncio
import email
import email.policy
import http.server
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from channels.mllp.framing import Frame, MLLPDecoder, frame
from engine.hl7v2 import AckCode, ErrorDetail, HeaderError, build_ack, prepare, read_header

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait(condition: threading.Condition, ready, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    with condition:
        while not ready():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
            condition.wait(left)


# --- MLLP -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """How the receiver answers one message."""
    code: str = "AA"               # MSA-1 as sent
    delay: float = 0.0             # seconds before answering
    answer: bool = True            # False: no ACK at all (the sender's ACK timeout fires)
    control_id: str | None = None  # MSA-2 to send instead of the message's MSH-10
    close: bool = False            # close the connection after this message (after the ACK, if any)
    text: str = ""                 # error text (MSA-3 and ERR) for AE/AR/CE/CR
    repeat: int = 1                # send the ACK this many times (peers that ACK twice)


class MLLPReceiver:
    """An MLLP peer answering ACKs built with the engine's one ACK builder."""

    def __init__(self, port: int = 0, default: Reply = Reply()):
        self.default = default
        self.messages: list[bytes] = []
        self.connections = 0                   # connections accepted so far
        self._port = port
        self._script: deque[Reply] = deque()
        self._changed = threading.Condition()
        self._open: set[asyncio.Transport] = set()
        self._server: asyncio.AbstractServer | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mllp-receiver", daemon=True)
        self._thread.start()
        self.start()

    def __enter__(self) -> "MLLPReceiver":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    def _call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> None:
        """Listen (again) on the same port."""
        async def listen():
            self._server = await self._loop.create_server(lambda: _Peer(self), HOST, self._port,
                                                          reuse_address=True)
            self._port = self._server.sockets[0].getsockname()[1]
        if self._server is None:
            self._call(listen())

    def stop(self) -> None:
        """Go down: stop listening and cut every open connection."""
        async def down():
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
            await self._close_all(abort=True)
        self._call(down())

    def close_connections(self) -> None:
        """Close open connections cleanly (FIN), the way a peer's idle timeout does; keep listening."""
        self._call(self._close_all(abort=False))

    async def _close_all(self, abort: bool) -> None:
        for transport in list(self._open):
            transport.abort() if abort else transport.close()
        while self._open:
            await asyncio.sleep(0.005)

    def shutdown(self) -> None:
        if self._loop.is_closed():
            return
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def script(self, *replies: Reply) -> None:
        """Answer the next messages with these replies, one each, then with `default` again."""
        self._script.extend(replies)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[bytes]:
        """Until at least n messages were received; returns all of them in arrival order."""
        _wait(self._changed, lambda: len(self.messages) >= n, timeout, f"{n} messages (have {len(self.messages)})")
        return list(self.messages)

    def control_ids(self) -> list[str]:
        return [_msh10(m) for m in self.messages]

    def _received(self, message: bytes) -> Reply:
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()
        return self._script.popleft() if self._script else self.default


class _Peer(asyncio.Protocol):
    def __init__(self, receiver: MLLPReceiver):
        self.receiver = receiver
        self.decoder = MLLPDecoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.receiver._open.add(transport)
        self.receiver.connections += 1

    def connection_lost(self, exc) -> None:
        self.receiver._open.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        for event in self.decoder.feed(data):
            if isinstance(event, Frame):
                message = event.payload
                reply = self.receiver._received(message)
                if reply.delay:
                    asyncio.get_running_loop().call_later(reply.delay, self._answer, message, reply)
                else:
                    self._answer(message, reply)

    def _answer(self, message: bytes, reply: Reply) -> None:
        if self.transport.is_closing():
            return
        if reply.answer:
            self.transport.write(frame(make_ack(message, reply)) * reply.repeat)
        if reply.close:
            self.transport.close()


def make_ack(message: bytes, reply: Reply = Reply()) -> bytes:
    """The ACK the receiver sends for `message` (engine.hl7v2.build_ack, then MSA-1/MSA-2 as the reply says)."""
    try:
        header = read_header(prepare(message))
    except HeaderError as exc:
        header = exc.header
    code = AckCode({"A": "AA", "E": "AE", "R": "AR"}[reply.code[1:2].upper() or "A"])
    errors = (ErrorDetail("207", reply.text),) if reply.text else ()
    ack = build_ack(header, code, f"ACK{time.monotonic_ns()}", datetime.now().strftime("%Y%m%d%H%M%S"), errors)
    segments = ack.rstrip(b"\r").split(b"\r")
    fs = segments[0][3:4]
    for i, segment in enumerate(segments):
        if segment.startswith(b"MSA"):
            fields = segment.split(fs) + [b""] * 3
            fields[1] = reply.code.encode()
            if reply.control_id is not None:
                fields[2] = reply.control_id.encode()
            segments[i] = fs.join(fields[:max(3, len(segment.split(fs)))])
    return b"\r".join(segments) + b"\r"


def _msh10(message: bytes) -> str:
    msh = message.split(b"\r", 1)[0]
    fields = msh.split(msh[3:4] or b"|")
    return fields[9].decode("latin-1") if len(fields) > 9 else ""


# --- SMTP -------------------------------------------------------------------------------------------------

@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    raw: bytes


class SMTPReceiver:
    """An aiosmtpd server on loopback recording accepted mail.

    `data_replies` (consumed one per message, then "250 OK") and `rcpt_reply` (every
    RCPT, when set) let a test make the server refuse: e.g. "550 5.1.1 no such user",
    "451 4.3.0 try later".
    """

    def __init__(self):
        from aiosmtpd.controller import Controller
        self.messages: list[ReceivedMail] = []
        self.data_replies: deque[str] = deque()
        self.rcpt_reply: str | None = None
        self._changed = threading.Condition()
        self.port = free_port()
        self._controller = Controller(_SMTPHandler(self), hostname=HOST, port=self.port)
        self._controller.start()

    def __enter__(self) -> "SMTPReceiver":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, n: int, timeout: float = 10.0) -> list[ReceivedMail]:
        _wait(self._changed, lambda: len(self.messages) >= n, timeout, f"{n} mails (have {len(self.messages)})")
        return list(self.messages)


class _SMTPHandler:
    def __init__(self, receiver: SMTPReceiver):
        self.receiver = receiver

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.receiver.rcpt_reply:
            return self.receiver.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        r = self.receiver
        reply = r.data_replies.popleft() if r.data_replies else "250 2.0.0 Message accepted for delivery"
        if reply.startswith("250"):
            raw = envelope.original_content or envelope.content
            message = email.message_from_bytes(raw, policy=email.policy.default)
            with r._changed:
                r.messages.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message, raw))
                r._changed.notify_all()
        return reply


# --- HTTP -------------------------------------------------------------------------------------------------

@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HTTPReceiver:
    """A tiny HTTP server on loopback recording POSTs; answers `statuses` in turn, then `default_status`."""
    default_status: int = 200
    statuses: deque[int] = field(default_factory=deque)
    delay: float = 0.0
    requests: list[ReceivedRequest] = field(default_factory=list)

    def __post_init__(self):
        self._changed = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._changed:
                    receiver.requests.append(ReceivedRequest(self.path, dict(self.headers.items()), body))
                    status = receiver.statuses.popleft() if receiver.statuses else receiver.default_status
                    receiver._changed.notify_all()
                if receiver.delay:
                    time.sleep(receiver.delay)
                answer = b'{"status": %d}' % status
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):    # keep test output quiet
                pass

        self._server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{HOST}:{self.port}/sms"
        self._thread = threading.Thread(target=self._server.serve_forever, name="http-receiver", daemon=True)
        self._thread.start()

    def __enter__(self) -> "HTTPReceiver":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        _wait(self._changed, lambda: len(self.requests) >= n, timeout, f"{n} requests (have {len(self.requests)})")
        return list(self.requests)

"""A small blocking MLLP client: send frames, read ACK frames. Used by `run_engine.py send` and tests.

`send(payload)` writes one frame and returns the next frame the peer sends back;
it raises `TimeoutError` when no ACK arrives in time and `ConnectionError` when
the peer closes first.
"""
from __future__ import annotations

import socket

from channels.mllp.framing import Frame, MLLPDecoder, frame


class MLLPClient:
    def __init__(self, host: str, port: int, timeout: float = 30.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.decoder = MLLPDecoder()
        self._ready: list[bytes] = []

    def __enter__(self) -> "MLLPClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send_only(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def receive(self) -> bytes:
        while not self._ready:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no ACK from the peer before the timeout") from None
            if not data:
                raise ConnectionError("the peer closed the connection without an ACK")
            self._ready += [e.payload for e in self.decoder.feed(data) if isinstance(e, Frame)]
        return self._ready.pop(0)

    def send(self, payload: bytes) -> bytes:
        self.send_only(payload)
        return self.receive()


def msa(ack: bytes) -> tuple[str, str, str]:
    """(MSA-1, MSA-2, MSA-3) of an ACK, or ('', '', '') when it has no MSA."""
    for segment in ack.replace(b"\n", b"\r").split(b"\r"):
        if segment.startswith(b"MSA"):
            sep = segment[3:4].decode("latin-1")
            parts = segment.decode("latin-1", "replace").split(sep) + ["", "", ""]
            return parts[1], parts[2], parts[3]
    return "", "", ""

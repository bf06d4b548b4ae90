"""Event-loop selection and the common skeleton of the baseline MLLP servers.

Nothing is measured here. ``run`` runs a coroutine on uvloop when it is
importable (plain asyncio otherwise). ``server_main`` gives every baseline
server the same command line (``--port``, ``--host``, ``--loop``,
``--max-seconds``), prints ``READY`` once listening, and shuts down cleanly on
SIGTERM / SIGINT or after ``--max-seconds`` (so an orphaned server cannot live
forever). ``FrameProtocol`` is an asyncio protocol that de-frames MLLP and
hands each message to ``handle``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys
from typing import Awaitable, Callable

from bench.mllp import FrameError, FrameReader

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in requirements.txt
    uvloop = None


def run(coro: Awaitable, use_uvloop: bool = True):
    """Run coro to completion on a fresh loop (uvloop if available and wanted)."""
    if use_uvloop and uvloop is not None:
        return uvloop.run(coro)
    return asyncio.run(coro)


def loop_name(use_uvloop: bool = True) -> str:
    return "uvloop" if use_uvloop and uvloop is not None else "asyncio"


def check_loopback(host: str) -> str:
    """Benchmarks only ever talk to loopback; refuse anything else."""
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"refusing non-loopback host {host!r}")
    return host


class FrameProtocol(asyncio.Protocol):
    """De-frames MLLP; subclasses implement ``handle(msg: bytes)`` and reply via ``self.transport``."""

    def __init__(self) -> None:
        self.transport = None
        self._reader = FrameReader()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            msgs = self._reader.feed(data)
        except FrameError:
            self.transport.abort()
            return
        for msg in msgs:
            self.handle(msg)

    def handle(self, msg: bytes) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def connection_lost(self, exc) -> None:
        self.transport = None


# make_server(args) -> (asyncio.Server, cleanup callable)
ServerFactory = Callable[[argparse.Namespace], Awaitable[tuple[asyncio.AbstractServer, Callable[[], None]]]]


def server_main(description: str, make_server: ServerFactory,
                add_args: Callable[[argparse.ArgumentParser], None] | None = None,
                argv: list[str] | None = None) -> None:
    """Parse the common CLI, start the server, print READY, serve until SIGTERM."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1", help="loopback only")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument("--max-seconds", type=float, default=6 * 3600,
                   help="exit on its own after this long (safety bound)")
    if add_args:
        add_args(p)
    args = p.parse_args(argv)
    check_loopback(args.host)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server, cleanup = await make_server(args)
        print("READY", flush=True)
        try:
            await asyncio.wait_for(stop.wait(), args.max_seconds)
        except asyncio.TimeoutError:
            print("max-seconds reached, exiting", file=sys.stderr)
        server.close()
        await server.wait_closed()
        cleanup()

    run(main(), use_uvloop=args.loop == "uvloop")

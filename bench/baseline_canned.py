"""Baseline: canned-ACK MLLP server (raw asyncio, no HL7 library) -- the upper bound.

Measures nothing itself; under load it shows the cost of MLLP framing + TCP +
the event loop alone. Each frame is answered with a fixed AA ACK whose MSA-2
echoes MSH-10 (found by slicing the MSH segment). Nothing is parsed or stored.

    python bench/baseline_canned.py --port 2575      # prints READY, stops on SIGTERM
"""

import asyncio
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.aio import FrameProtocol, server_main
from bench.mllp import canned_ack, msh10


class CannedAck(FrameProtocol):
    def handle(self, msg: bytes) -> None:
        self.transport.write(canned_ack(msh10(msg)))


async def make_server(args):
    server = await asyncio.get_running_loop().create_server(CannedAck, args.host, args.port)
    return server, lambda: None


if __name__ == "__main__":
    server_main(__doc__.splitlines()[0], make_server)

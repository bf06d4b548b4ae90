"""Baseline: the MLLP server a Python user would write with python-hl7 (0.4.5).

Measures nothing itself; under load it shows the cost of a full python-hl7
round trip per message: ``hl7.mllp.start_hl7_server`` (python-hl7's own
asyncio MLLP streams), ``reader.readmessage()`` (= decode + ``hl7.parse``),
``msg.create_ack()`` and ``writer.writemessage()``. Nothing is stored.

    python bench/baseline_python_hl7.py --port 2575  # prints READY, stops on SIGTERM
"""

import asyncio
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import hl7.mllp

from bench.aio import server_main


async def handle_connection(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
    """One task per connection: read, parse, ACK, until the peer closes."""
    try:
        while not reader.at_eof():  # ends when the client closes the connection
            msg = await reader.readmessage()          # hl7.parse() of the decoded block
            writer.writemessage(msg.create_ack("AA"))  # MSA-2 = MSH-10 of msg
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def make_server(args):
    server = await hl7.mllp.start_hl7_server(handle_connection, args.host, args.port, encoding="utf-8")
    return server, lambda: None


if __name__ == "__main__":
    server_main(__doc__.splitlines()[0], make_server)

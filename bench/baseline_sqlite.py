"""Baseline: durable store-then-ACK with SQLite, one COMMIT per message (raw asyncio).

Measures nothing itself; under load it shows what a straightforward "persist
before ACK" costs: each frame's MSH-10 is sliced out (no HL7 library), the raw
message is INSERTed into a SQLite file (journal_mode=WAL, synchronous=FULL) and
COMMITted on its own -- no group commit -- on a single writer thread
(``run_in_executor`` with a 1-thread pool); only then is the AA ACK sent
(AE if the insert failed).

    python bench/baseline_sqlite.py --port 2575 --db /tmp/x/msgs.db
"""

import asyncio
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.aio import FrameProtocol, server_main
from bench.mllp import canned_ack, msh10


class Store:
    """SQLite message table; ``insert`` runs on the single writer thread only."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS messages ("
                        "id INTEGER PRIMARY KEY, control_id TEXT NOT NULL, "
                        "received_at REAL NOT NULL, raw BLOB NOT NULL)")
        self.db.commit()
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")

    def insert(self, control_id: str, raw: bytes) -> None:
        self.db.execute("INSERT INTO messages (control_id, received_at, raw) VALUES (?, ?, ?)",
                        (control_id, time.time(), raw))
        self.db.commit()

    def close(self) -> None:
        self.writer.shutdown(wait=True)
        self.db.close()


class StoreThenAck(FrameProtocol):
    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.loop = asyncio.get_running_loop()

    def handle(self, msg: bytes) -> None:
        cid = msh10(msg)
        fut = self.loop.run_in_executor(self.store.writer, self.store.insert, cid.decode("ascii", "replace"), msg)
        fut.add_done_callback(partial(self._committed, cid))

    def _committed(self, cid: bytes, fut: asyncio.Future) -> None:
        if self.transport is None:  # client went away before the commit finished
            return
        ok = not fut.cancelled() and fut.exception() is None
        self.transport.write(canned_ack(cid, b"AA" if ok else b"AE"))


async def make_server(args):
    store = Store(args.db)
    server = await asyncio.get_running_loop().create_server(lambda: StoreThenAck(store), args.host, args.port)
    return server, store.close


def add_args(p) -> None:
    p.add_argument("--db", required=True, help="SQLite file to write")


if __name__ == "__main__":
    server_main(__doc__.splitlines()[0], make_server, add_args)

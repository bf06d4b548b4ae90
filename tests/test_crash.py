"""Durability: kill -9 during a load, restart, and every message that got AA is there exactly once.

Clients send unique control ids and remember which ones were answered AA; the
engine process is killed with SIGKILL mid-load. After a restart the journal
must hold each AA'd control id exactly once (not counting rows marked
'duplicate'), and every message left unprocessed must be processed.
"""
from __future__ import annotations

import threading
import time

import psutil
import pytest

from channels.mllp.client import MLLPClient, msa
from engine.store import Journal
from tests.test_listener import orm

pytestmark = pytest.mark.slow


def test_kill_9_during_load_loses_and_duplicates_nothing_that_was_acked(engine_process, tmp_path):
    from tests.conftest import write_config
    path = write_config(tmp_path, isolation="process")
    engine = engine_process(path)
    acked: list[str] = []
    sent_unacked: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def load(worker: int) -> None:
        n = 0
        try:
            with MLLPClient("127.0.0.1", engine.port, timeout=10) as client:
                while not stop.is_set() and n < 100_000:
                    cid = f"W{worker}-{n}"
                    try:
                        code = msa(client.send(orm(worker * 1_000_000 + n, cid)))[0]
                    except (ConnectionError, TimeoutError, OSError):
                        with lock:
                            sent_unacked.append(cid)
                        return
                    if code == "AA":
                        with lock:
                            acked.append(cid)
                    n += 1
        except OSError:
            return

    threads = [threading.Thread(target=load, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    workers = psutil.Process(engine.proc.pid).children(recursive=True)
    assert workers, "the processor worker process should be running"
    engine.kill()
    stop.set()
    for t in threads:
        t.join(20)
    assert len(acked) > 500, "the load did not get going"
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, "worker processes outlived the killed engine"

    restarted = engine_process(path)
    # Senders resend what they never got an ACK for: those must not turn into second copies either.
    with MLLPClient("127.0.0.1", restarted.port) as client:
        for cid in sent_unacked:
            worker, n = cid[1:].split("-")
            assert msa(client.send(orm(int(worker) * 1_000_000 + int(n), cid)))[0] == "AA"
    journal = Journal(restarted.config.store_location, readonly=True)
    deadline = time.monotonic() + 60
    while journal.counts().get("received") and time.monotonic() < deadline:
        time.sleep(0.2)
    rows = journal.conn.execute(
        "SELECT control_id, count(*) FROM messages WHERE status != 'duplicate' GROUP BY control_id").fetchall()
    copies = {cid: count for cid, count in rows}
    assert all(copies.get(cid) == 1 for cid in acked), "an acknowledged message is missing or doubled"
    assert all(copies.get(cid) == 1 for cid in sent_unacked)
    assert max(copies.values()) == 1
    assert journal.counts().get("received", 0) == 0
    assert restarted.terminate() == 0

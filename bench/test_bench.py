"""Tests of the benchmark harness itself (not of the engine): run with `pytest bench`.

Checks the message template, MLLP helpers, that the load generator counts
ACK errors correctly, and that each baseline server starts (READY), answers a
small load without errors and exits 0 on SIGTERM (marked slow: starts processes).
The outbound benchmark's --queue and --loop modes run once at a tiny size (slow).
"""

import asyncio
import json
import tempfile
from pathlib import Path

import hl7
import pytest

from bench import aio, procs
from bench.loadgen import run_load
from bench.message import orm_o01
from bench.mllp import FrameReader, canned_ack, frame, msh10, parse_msa

pytestmark = pytest.mark.timeout(120)


def test_message_shape():
    msg = orm_o01("ABC123")
    segs = msg.rstrip(b"\r").split(b"\r")
    assert len(segs) == 25 and segs[0].startswith(b"MSH") and 1500 <= len(msg) <= 3000
    parsed = hl7.parse(msg.decode())
    assert str(parsed.segment("MSH")(10)) == "ABC123"
    assert str(parsed.segment("MSH")(9)).startswith("ORM^O01") and str(parsed.segment("MSH")(12)) == "2.5.1"
    assert msh10(msg) == b"ABC123"


def test_framing_and_acks():
    reader = FrameReader()
    data = frame(b"MSH|a") + frame(b"MSH|b")
    assert reader.feed(data[:3]) == [] and reader.feed(data[3:]) == [b"MSH|a", b"MSH|b"]
    assert parse_msa(canned_ack(b"X1", b"AE")[1:-2]) == (b"AE", b"X1")
    py_ack = str(hl7.parse(orm_o01("X2").decode()).create_ack()).encode()
    assert parse_msa(py_ack) == (b"AA", b"X2")


class _BadServer(asyncio.Protocol):
    """Answers with a wrong MSA-2 (mode 'mismatch'), AE ('nack'), or hangs up ('close')."""

    def __init__(self, mode):
        self.mode, self.reader = mode, FrameReader()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        for msg in self.reader.feed(data):
            if self.mode == "close":
                self.transport.close()
            else:
                self.transport.write(canned_ack(b"WRONG") if self.mode == "mismatch" else canned_ack(msh10(msg), b"AE"))


@pytest.mark.parametrize("mode, kind", [("mismatch", "mismatch"), ("nack", "nack"), ("close", "conn_lost")])
def test_loadgen_counts_errors(mode, kind):
    async def go():
        server = await asyncio.get_running_loop().create_server(lambda: _BadServer(mode), procs.HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await run_load(port=port, n=50, connections=2, timeout=10)
        finally:
            server.close()

    res = aio.run(go())
    assert res["ok"] == 0 and res["errors"] == 50 and res["error_kinds"].get(kind)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["canned", "python-hl7", "sqlite"])
def test_baseline_serves_and_stops(name):
    with tempfile.TemporaryDirectory() as d:
        with procs.running(name, Path(d)) as srv:
            closed = aio.run(run_load(port=srv.port, n=300, connections=4, window=2, timeout=60))
            opened = aio.run(run_load(port=srv.port, n=100, connections=4, rate=500, timeout=60))
        if name == "sqlite":
            import sqlite3
            with sqlite3.connect(Path(d) / "messages.db") as db:
                assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 400
    for res in (closed, opened):
        assert res["errors"] == 0 and res["ok"] == res["n"], res
    assert srv.exit_code == 0


@pytest.mark.slow
def test_outbound_queue_mode_delivers_every_row_once_in_id_order(capsys):
    from bench.bench_outbound import main
    main(["--queue", "-n", "300", "--warmup", "20", "--rounds", "1", "--batch", "64", "--json"])
    trials = json.loads(capsys.readouterr().out)
    [sender], [queue] = trials["sender"], trials["queue"]
    assert sender["errors"] == 0 and sender["messages"] == 300
    assert queue["errors"] == 0 and queue["received"] == 300 and queue["received_once_in_id_order"] is True
    # 5 batches of 64: the first claim, then each batch's outcomes together with the next claim (+ start-up)
    assert queue["msgs_per_s"] > 0 and 5 + 1 <= queue["writer_transactions"] <= 5 + 3


@pytest.mark.slow
def test_outbound_loop_mode_matches_every_notification_to_its_siu(capsys):
    from bench.bench_outbound import main
    main(["--loop", "--rate", "40", "--seconds", "2", "--rounds", "1", "--json"])
    [trial] = json.loads(capsys.readouterr().out)["loop"]
    assert trial["referrals"] == 80 and trial["matched"] == 80 and trial["duplicates"] == 0
    assert trial["orm_bad_acks"] == 0 and trial["siu_bad_acks"] == 0 and trial["engine_exit"] == 0
    assert trial["outbound_sent"] == trial["outbound_rows"] == 80
    # the notification needs the SIU committed (what its ACK confirms) and processed first
    assert trial["notification"]["p50_ms"] > trial["ack"]["p50_ms"] > 0

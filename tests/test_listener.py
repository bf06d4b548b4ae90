"""The MLLP listener end to end: real sockets on loopback, a real SQLite journal.

Every message that gets AA is in the journal; malformed input gets AE/AR with an
ERR saying why, is journaled with status 'error', and the listener stays up.
"""
from __future__ import annotations

import socket
import threading
import time

import hl7
import pytest

from channels.mllp.client import MLLPClient, msa
from channels.mllp.framing import frame
from tests.conftest import sample, sample_files

ORM = (b"MSH|^~\\&|EPIC|GENHOSP|ENGINE|SPEC|20261123101500||ORM^O01^ORM_O01|{cid}|P|2.5.1\r"
       b"PID|1||MRN{n}^^^GENHOSP^MR||TESTPATIENT^ALEX||19700101|F\r"
       b"ORC|NW|PL{n}\rOBR|1|PL{n}||CARDCONS^Cardiology consult\r")


def orm(n: int, cid: str | None = None) -> bytes:
    return ORM.replace(b"{cid}", (cid or f"C{n}").encode()).replace(b"{n}", str(n).encode())


def fields(ack: bytes, segment: str) -> list[str]:
    for line in ack.decode("latin-1").split("\r"):
        if line.startswith(segment):
            return line.split(line[3]) if segment == "MSH" else line.split("|")
    return []


def test_every_sample_message_gets_a_positive_ack_and_is_journaled_once(engine):
    expected = {}
    with MLLPClient("127.0.0.1", engine.port) as client:
        for path in sample_files():
            if path.name.startswith("batch"):
                continue
            message = sample(path.name)
            control_id = hl7.parse(message.decode("latin-1")).segment("MSH")[10][0]
            code, echoed, _ = msa(client.send(message))
            assert code in ("AA", "CA"), path.name
            assert echoed == control_id
            expected[control_id] = path.name
    journal = engine.journal()
    for control_id, name in expected.items():
        rows = journal.search(control_id=control_id)
        assert len(rows) == 1, name
        assert rows[0]["status"] in ("received", "transformed")
    row = journal.search(control_id=hl7.parse(sample("ORM_O01_v2.5.1_bench25.hl7").decode()).segment("MSH")[10][0])[0]
    assert row["message_type"] == "ORM^O01" and row["version"] == "2.5.1" and row["patient_id"]
    assert journal.get(row["id"])["raw"] == sample("ORM_O01_v2.5.1_bench25.hl7")


def test_ack_mirrors_sender_receiver_version_and_echoes_control_id(engine):
    with MLLPClient("127.0.0.1", engine.port) as client:
        ack = client.send(orm(1, "CTRL-77"))
    msh = fields(ack, "MSH")
    assert msh[2:6] == ["ENGINE", "SPEC", "EPIC", "GENHOSP"]
    assert msh[8] == "ACK^O01^ACK" and msh[11] == "2.5.1"
    assert fields(ack, "MSA")[1:3] == ["AA", "CTRL-77"]


def test_pipelined_messages_are_answered_in_order(engine):
    with MLLPClient("127.0.0.1", engine.port) as client:
        client.sock.sendall(b"".join(frame(orm(n)) for n in range(200)))
        echoed = [msa(client.receive())[1] for _ in range(200)]
    assert echoed == [f"C{n}" for n in range(200)]


def test_two_messages_in_one_frame_get_two_acks(engine):
    with MLLPClient("127.0.0.1", engine.port) as client:
        client.send_only(orm(1) + orm(2))
        first, second = client.receive(), client.receive()
    assert msa(first)[:2] == ("AA", "C1") and msa(second)[:2] == ("AA", "C2")
    journal = engine.journal()
    assert "single MLLP frame" in journal.search(control_id="C2")[0]["warnings"]


def test_batch_file_is_split_and_answered_with_a_batch_ack(engine):
    batch = sample("batch_ORM_ADT_v2.5.1.hl7")
    with MLLPClient("127.0.0.1", engine.port) as client:
        ack = client.send(batch)
    segments = [s for s in ack.decode().split("\r") if s]
    assert [s[:3] for s in segments[:2]] == ["FHS", "BHS"] and segments[-2:] == ["BTS|4", "FTS|1"]
    assert [s.split("|")[1] for s in segments if s.startswith("MSA")] in (["AA"] * 4, ["CA"] * 4)
    assert sum(engine.journal().counts().values()) == 4


@pytest.mark.parametrize("raw, code, where", [
    (b"MSH|^~\\&|A|B|C|D|2026||||P|2.5.1\rPID|1\r", "AR", "MSH^1^9"),
    (b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|||2.5.1\rPID|1\r", "AR", "MSH^1^10"),
    (b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|X|P|9.9\rPID|1\r", "AR", "MSH^1^12"),
    (b"MSHA^~\\&A", "AR", "MSH^1^1"),
    (b"MSH|AB|A|B|C|D|2026||ADT^A01|X|P|2.5\r", "AR", "MSH^1^2"),
    (bytes(b for b in range(256) if b not in (0x0B, 0x1C)) * 4, "AR", "MSH"),
    (b"", "AR", "MSH"),
    (b"PID|1||123\r", "AR", "MSH"),
    (b"MSH|^~\\&|A|B|C|D|2026||ADT^A01|X|P|2.5.1||||||UNICODE UTF-8\rPID|1||1||M\xfcller\r", "AE", "MSH^1^18"),
])
def test_malformed_messages_are_refused_with_a_reason_journaled_and_the_listener_stays_up(engine, raw, code, where):
    with MLLPClient("127.0.0.1", engine.port) as client:
        ack = client.send(raw)
        assert msa(ack)[0] == code
        err = fields(ack, "ERR")
        assert err and err[2].startswith(where) and err[8]
        assert msa(client.send(orm(1)))[0] == "AA"   # same connection still served
    rows = engine.journal().search(status="error")
    assert len(rows) == 1 and rows[0]["ack_code"] == code and rows[0]["error"]
    assert engine.journal().get(rows[0]["id"])["raw"] == raw


def test_binary_junk_between_frames_is_discarded_and_the_next_frame_answered(engine):
    with MLLPClient("127.0.0.1", engine.port) as client:
        client.sock.sendall(bytes(range(256)) + b"\x1c\r" + b"GET / HTTP/1.0\r\n\r\n")
        assert msa(client.send(orm(1)))[:2] in (("AR", ""), ("AA", "C1"))
    with MLLPClient("127.0.0.1", engine.port) as client:
        assert msa(client.send(orm(2)))[:2] == ("AA", "C2")


def test_untidy_but_valid_traffic_is_accepted(engine):
    variants = {
        "lf": orm(1).replace(b"\r", b"\n"),
        "crlf": orm(2).replace(b"\r", b"\r\n"),
        "bom": b"\xef\xbb\xbf" + orm(3),
        "blank lines": b"\r\n" + orm(4).replace(b"\rPID", b"\r\r\n\rPID") + b"\n\n",
        "latin-1 undeclared": orm(5).replace(b"TESTPATIENT", b"GON\xc7ALVES"),
    }
    with MLLPClient("127.0.0.1", engine.port) as client:
        for name, raw in variants.items():
            assert msa(client.send(raw))[0] == "AA", name
    engine.wait_processed()
    journal = engine.journal()
    assert journal.counts() == {"transformed": 5}
    assert "cp1252" in journal.search(control_id="C5")[0]["warnings"]


def test_messages_of_several_megabytes_are_stored_whole(engine):
    note = b"OBX|1|ED|PDF^Consult note||^AP^PDF^Base64^" + b"QUJD" * (2 * 1024 * 1024) + b"\r"
    message = orm(9) + note
    with MLLPClient("127.0.0.1", engine.port, timeout=60) as client:
        assert msa(client.send(message))[0] == "AA"
    journal = engine.journal()
    assert journal.get(journal.search(control_id="C9")[0]["id"])["raw"] == message


def test_oversize_message_is_refused_and_its_head_kept(make_engine):
    engine = make_engine(max_bytes=4096)
    with MLLPClient("127.0.0.1", engine.port) as client:
        ack = client.send(orm(1) + b"NTE|1||" + b"x" * 10000 + b"\r")
        assert msa(ack)[:2] == ("AR", "C1")
        assert "exceeds max_message_bytes" in msa(ack)[2]
        assert msa(client.send(orm(2)))[0] == "AA"
    row = engine.journal().search(status="error")[0]
    assert row["control_id"] == "C1" and "exceeds" in row["error"]


def test_many_concurrent_clients(engine):
    results: dict[int, list[str]] = {}

    def client_run(k: int) -> None:
        with MLLPClient("127.0.0.1", engine.port) as client:
            results[k] = [msa(client.send(orm(k * 1000 + i)))[0] for i in range(40)]

    threads = [threading.Thread(target=client_run, args=(k,)) for k in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(codes == ["AA"] * 40 for codes in results.values()) and len(results) == 24
    assert sum(engine.journal().counts().values()) == 24 * 40
    assert engine.engine.committer.batches < 24 * 40   # transactions were shared


def test_resent_message_is_acked_again_but_processed_once(engine):
    with MLLPClient("127.0.0.1", engine.port) as client:
        assert msa(client.send(orm(1)))[:2] == ("AA", "C1")
        assert msa(client.send(orm(1)))[:2] == ("AA", "C1")
    engine.wait_processed()
    rows = engine.journal().search(control_id="C1")
    assert sorted(r["status"] for r in rows) == ["duplicate", "transformed"]
    original = [r for r in rows if r["status"] == "transformed"][0]
    assert [r for r in rows if r["status"] == "duplicate"][0]["duplicate_of"] == original["id"]


def test_reused_control_id_with_other_content_is_processed_and_flagged(engine):
    with MLLPClient("127.0.0.1", engine.port) as client:
        client.send(orm(1, "SAME"))
        ack = client.send(orm(2, "SAME"))
    assert msa(ack)[:2] == ("AA", "SAME")
    assert fields(ack, "ERR")[4] == "W"
    engine.wait_processed()
    rows = engine.journal().search(control_id="SAME")
    assert [r["status"] for r in rows] == ["transformed", "transformed"]
    assert "reused" in rows[0]["warnings"]


def test_duplicate_window_zero_processes_resends(make_engine, tmp_path):
    engine = make_engine(store_extra="  duplicate_window_hours: 0")
    with MLLPClient("127.0.0.1", engine.port) as client:
        client.send(orm(1))
        client.send(orm(1))
    engine.wait_processed()
    assert [r["status"] for r in engine.journal().search(control_id="C1")] == ["transformed", "transformed"]


def test_channel_message_types_and_filters_decide_filtered(make_engine):
    engine = make_engine(channel_extra="    message_types: [ORM^O01]\n"
                                       "    filters:\n      - path: MSH-4\n        not_in: [TESTFAC]\n")
    adt = b"MSH|^~\\&|A|GENHOSP|C|D|2026||ADT^A08|A1|P|2.5.1\rPID|1||9\r"
    test_orm = orm(2).replace(b"|GENHOSP|ENGINE", b"|TESTFAC|ENGINE")
    with MLLPClient("127.0.0.1", engine.port) as client:
        for m in (orm(1), adt, test_orm):
            assert msa(client.send(m))[0] == "AA"
    engine.wait_processed()
    journal = engine.journal()
    assert journal.search(control_id="C1")[0]["status"] == "transformed"
    assert "message_types" in journal.search(control_id="A1")[0]["error"]
    assert journal.search(control_id="C2")[0]["status"] == "filtered"


def test_strict_channel_rejects_structurally_invalid_messages_after_the_ack(make_engine):
    engine = make_engine(channel_extra="    strict: true\n")
    no_evn = b"MSH|^~\\&|A|B|C|D|20261123||ADT^A04^ADT_A01|S1|P|2.5\rPID|1||MRN1^^^H^MR||DOE^JANE\rPV1|1|O\r"
    with MLLPClient("127.0.0.1", engine.port) as client:
        assert msa(client.send(no_evn))[0] == "AA"
    engine.wait_processed()
    row = engine.journal().search(control_id="S1")[0]
    assert row["status"] == "error" and "strict validation" in row["error"]


def test_restart_keeps_the_journal_and_recognises_resends(make_engine, tmp_path):
    from tests.conftest import write_config
    path = write_config(tmp_path)
    first = make_engine(path)
    with MLLPClient("127.0.0.1", first.port) as client:
        for n in range(10):
            client.send(orm(n))
    first.stop()
    second = make_engine(path)
    with MLLPClient("127.0.0.1", second.port) as client:
        assert msa(client.send(orm(3)))[0] == "AA"
    second.wait_processed()
    counts = second.journal().counts()
    assert counts == {"transformed": 10, "duplicate": 1}


def test_idle_connection_is_closed_and_a_cut_off_frame_kept(make_engine):
    engine = make_engine(idle_timeout=0.5)
    sock = socket.create_connection(("127.0.0.1", engine.port))
    sock.sendall(b"\x0b" + orm(1)[:60])
    sock.settimeout(5)
    assert sock.recv(100) == b""   # closed by the engine
    sock.close()
    deadline = time.monotonic() + 5
    while not engine.journal().search(status="error") and time.monotonic() < deadline:
        time.sleep(0.05)
    row = engine.journal().search(status="error")[0]
    assert "connection closed before end block" in row["error"]


def test_stop_drains_in_flight_messages(make_engine):
    engine = make_engine()
    client = MLLPClient("127.0.0.1", engine.port)
    client.sock.sendall(b"".join(frame(orm(n)) for n in range(300)))
    acked = [msa(client.receive())[1] for _ in range(5)]
    engine.stop()
    try:
        while True:
            acked.append(msa(client.receive())[1])
    except (ConnectionError, TimeoutError, OSError):
        pass
    client.close()
    from engine.store import Journal
    journal = Journal(engine.config.store_location, readonly=True)
    stored = {r["control_id"] for r in journal.search(limit=1000)}
    assert set(acked) <= stored and len(acked) >= 5


def test_a_journal_failure_is_answered_ae_so_the_sender_keeps_the_message(engine, monkeypatch):
    # A full or failing disk cannot be produced safely here; the journal's writer is made to fail instead.
    def failing_write(items):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(engine.engine.committer, "_write_batch", failing_write)
    with MLLPClient("127.0.0.1", engine.port) as client:
        ack = client.send(orm(1))
        code, echoed, text = msa(ack)
        assert (code, echoed) == ("AE", "C1") and "not stored" in text
        assert fields(ack, "ERR")[3].startswith("207")
        monkeypatch.undo()
        assert msa(client.send(orm(1)))[:2] == ("AA", "C1")
    assert [r["status"] for r in engine.journal().search(control_id="C1")] in (["received"], ["transformed"])



def test_the_journal_records_the_ack_code_as_sent_in_enhanced_mode(engine):
    enhanced = orm(1).replace(b"|P|2.5.1\r", b"|P|2.5.1|||AL|NE\r")
    with MLLPClient("127.0.0.1", engine.port) as client:
        assert msa(client.send(enhanced))[0] == "CA"
    assert engine.journal().search(control_id="C1")[0]["ack_code"] == "CA"

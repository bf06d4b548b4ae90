"""Workflow 1 of DESIGN.md end to end, with real sockets: the referring EHR learns what happened.

ORM in -> SIU S12 in -> SIU notification out (ACKed by a real MLLP receiver) ->
ORU consult note in -> MDM out -> ACK -> referral closed. Plus: a destination down
for a while (order kept, nothing lost), a restart mid-queue, dead letters, resend.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from channels.mllp.client import MLLPClient, msa
from engine.config import load_config
from engine.hl7v2.parse import get, parse
from engine.store import write_transaction
from tests.conftest import EngineThread, open_store, sample, wait_until, write_config
from tests.receivers import MLLPReceiver, Reply

pytestmark = pytest.mark.store

STORY = ["ORM_O01_v2.5.1_bench25.hl7", "SIU_S12_v2.5.1.hl7", "SIU_S13_v2.5.1.hl7", "SIU_S14_v2.5.1.hl7",
         "ORU_R01_v2.5.1_consultnote.hl7"]


def loop_config(tmp_path: Path, ehr_port: int, *, extra_rules: str = "", max_attempts: int = 12,
                backoff: float = 0.05, order: str = "per_destination") -> Path:
    return write_config(tmp_path, channel_extra=f"""    transformer: {{mappings: {Path.cwd() / 'mappings'}}}
    destinations:
      - {{name: referring_ehr, type: mllp, host: 127.0.0.1, port: {ehr_port}, ack_timeout_seconds: 2,
          receiving_application: REFERRING_EHR, receiving_facility: MAPLE}}
      - {{name: fax_outbox, type: fax, directory: ./var/fax/outbox}}
outbound:
  order: {order}
  max_attempts: {max_attempts}
  backoff_seconds: {backoff}
  max_backoff_seconds: 0.2
  templates: {Path.cwd() / 'mappings' / 'outbound'}
  rules:
    - name: appointment_to_referrer
      on: [appointment.booked, appointment.rescheduled, appointment.modified, appointment.completed,
           appointment.canceled, appointment.no_show]
      origin: hl7
      send: siu_notification
      to: referring_ehr
    - name: consult_note_to_referrer
      on: [note.received]
      origin: hl7
      send: mdm_t02
      to: referring_ehr
      closes_loop: true
{extra_rules}
schedules:
  retry_pump_seconds: 0.2
outreach:
  templates: {Path.cwd() / 'mappings' / 'outreach'}
""")


def send_all(port: int, names: list[str]) -> None:
    with MLLPClient("127.0.0.1", port) as client:
        for name in names:
            assert msa(client.send(sample(name).replace(b"\n", b"\r")))[0] in ("AA", "CA"), name


def connect(db):
    """A connection to the engine's store (either backend), rows readable by name."""
    conn = open_store(db)
    conn.row_factory = sqlite3.Row        # PostgreSQL's rows always are
    return conn


def referral(db, referral_id: int = 1) -> dict:
    conn = connect(db)
    try:
        row = conn.execute("SELECT * FROM referrals WHERE id=?", (referral_id,)).fetchone()
        if row is None:             # not processed yet
            return {"status": None, "history": [], "outbound": []}
        r = dict(row)
        r["history"] = [tuple(h) for h in conn.execute(
            "SELECT from_status, to_status, cause_kind FROM status_history WHERE referral_id=? ORDER BY id",
            (referral_id,))]
        r["outbound"] = [dict(o) for o in conn.execute("SELECT * FROM outbound WHERE referral_id=? ORDER BY id",
                                                         (referral_id,))]
        return r
    finally:
        conn.close()


def types_and_ids(messages: list[bytes]) -> list[tuple[str, str]]:
    out = []
    for raw in messages:
        m = parse(raw.decode("utf-8"))
        out.append((f"{get(m, 'MSH-9.1')}^{get(m, 'MSH-9.2')}", get(m, "MSH-10")))
    return out


def test_workflow_1_closes_the_loop_over_real_mllp(tmp_path):
    with MLLPReceiver() as ehr:
        engine = EngineThread(load_config(loop_config(tmp_path, ehr.port))).start()
        try:
            send_all(engine.port, STORY)
            received = ehr.wait_for(4, timeout=30)
            db = engine.config.store_location
            wait_until(lambda: referral(db)["status"] == "closed", what="closed")
            r = referral(db)
        finally:
            engine.stop()
    kinds = [t for t, _ in types_and_ids(received)]
    assert kinds == ["SIU^S12", "SIU^S13", "SIU^S14", "MDM^T02"] + kinds[4:] and len(kinds) == 4
    # what the referring EHR got is about its patient and its order
    siu = parse(received[0].decode())
    assert get(siu, "SCH-26.1") == "RF250304-0481" and get(siu, "PID-3.1") == "10483726"
    assert get(siu, "MSH-5") == "REFERRING_EHR" and get(siu, "MSH-6") == "MAPLE"
    mdm = parse(received[3].decode())
    assert get(mdm, "TXA-13.1") == "RF250304-0481"
    assert len([s for s in received[3].split(b"\r") if s.startswith(b"OBX|")]) > 20
    # the history: ... completed by the note, closed by the MDM's delivery
    assert r["history"][-2:] == [("scheduled", "completed", "message"), ("completed", "closed", "outbound")]
    assert [o["status"] for o in r["outbound"]] == ["sent"] * 4
    assert all(o["ack"] and "MSA|AA|" + o["control_id"] in o["ack"] for o in r["outbound"])


def test_a_destination_down_queues_in_order_and_delivers_when_back(tmp_path):
    with MLLPReceiver() as ehr:
        ehr.stop()                                  # the referring EHR is down
        engine = EngineThread(load_config(loop_config(tmp_path, ehr.port))).start()
        try:
            send_all(engine.port, STORY)
            db = engine.config.store_location
            wait_until(lambda: len(referral(db)["outbound"]) == 4, what="4 queued")
            time.sleep(0.5)                         # several failed attempts
            r = referral(db)
            assert r["status"] == "completed"       # not closed: the note has not arrived
            assert r["outbound"][0]["attempts"] >= 2 and r["outbound"][0]["last_error"]
            assert all(o["attempts"] == 0 for o in r["outbound"][1:])   # held back behind the first
            ehr.start()
            received = ehr.wait_for(4, timeout=30)
            wait_until(lambda: referral(db)["status"] == "closed", what="closed")
        finally:
            engine.stop()
    sent = [o["control_id"] for o in referral(db)["outbound"]]
    assert [cid for _, cid in types_and_ids(received)] == sent        # in order, each once
    assert len(received) == 4


def test_restart_mid_queue_delivers_each_message_with_its_control_id(tmp_path):
    with MLLPReceiver() as ehr:
        ehr.stop()
        path = loop_config(tmp_path, ehr.port)
        engine = EngineThread(load_config(path)).start()
        send_all(engine.port, STORY[:3])
        db = engine.config.store_location
        wait_until(lambda: len(referral(db)["outbound"]) == 2, what="2 queued")
        engine.stop()
        queued = [o["control_id"] for o in referral(db)["outbound"]]
        ehr.start()
        engine = EngineThread(load_config(path)).start()
        try:
            received = ehr.wait_for(2, timeout=30)
            wait_until(lambda: all(o["status"] == "sent" for o in referral(db)["outbound"]), what="sent")
        finally:
            engine.stop()
    assert [cid for _, cid in types_and_ids(received)] == queued


def test_a_rejected_message_goes_dead_and_the_coordinator_sees_it_then_resend(tmp_path):
    from engine import outbound
    with MLLPReceiver() as ehr:
        ehr.script(Reply("AR", text="unknown patient"))
        engine = EngineThread(load_config(loop_config(tmp_path, ehr.port))).start()
        try:
            send_all(engine.port, STORY[:3])
            ehr.wait_for(2, timeout=30)
            db = engine.config.store_location
            wait_until(lambda: [o["status"] for o in referral(db)["outbound"]] == ["dead", "sent"], what="dead+sent")
            r = referral(db)
            assert "AR" in r["outbound"][0]["last_error"] and "unknown patient" in r["outbound"][0]["last_error"]
            conn = connect(db)
            reasons = [row[0] for row in conn.execute("SELECT reason FROM review_exceptions WHERE referral_id=1")]
            assert any("dead" in reason and "referring_ehr" in reason for reason in reasons)
            # resend: same payload, same MSH-10, delivered this time
            dead_id = r["outbound"][0]["id"]
            with write_transaction(conn):
                assert outbound.resend(conn, dead_id)
            conn.close()
            engine.engine.delivery.wake()
            received = ehr.wait_for(3, timeout=30)
            assert types_and_ids(received)[2][1] == r["outbound"][0]["control_id"]
            wait_until(lambda: referral(db)["outbound"][0]["status"] == "sent", what="resent")
        finally:
            engine.stop()


FAX_RULES = """    - name: status_letter_by_fax
      on: [appointment.booked]
      origin: fax
      send: fax_letter
      to: fax_outbox
    - name: consult_note_by_fax
      on: [note.received]
      origin: fax
      send: fax_letter
      to: fax_outbox
      closes_loop: true
"""


def test_a_fax_only_referrer_gets_the_consult_note_as_a_pdf_in_the_fax_outbox(tmp_path):
    import subprocess
    with MLLPReceiver() as ehr:
        engine = EngineThread(load_config(loop_config(tmp_path, ehr.port, extra_rules=FAX_RULES))).start()
        try:
            send_all(engine.port, STORY[:1])
            db = engine.config.store_location
            wait_until(lambda: referral(db)["status"] == "ready", what="referral")
            # the referral came by fax: the referring practice is known only by its fax number
            conn = connect(db)
            with write_transaction(conn):
                provider = json.loads(conn.execute("SELECT referring_provider FROM referrals WHERE id=1").fetchone()[0]
                                      or "{}")
                conn.execute("UPDATE referrals SET origin='fax', referring_provider=? WHERE id=1",
                             (json.dumps({**provider, "fax": "5555550199"}),))
            conn.close()
            send_all(engine.port, STORY[1:2] + STORY[3:])
            wait_until(lambda: referral(db)["status"] == "closed", what="closed by the fax")
        finally:
            engine.stop()
    r = referral(db)
    assert [(o["rule"], o["message_type"], o["status"]) for o in r["outbound"]] == [
        ("status_letter_by_fax", "fax", "sent"), ("consult_note_by_fax", "fax", "sent")]
    assert ehr.messages == []                       # nothing went to the referring EHR's MLLP
    outbox = tmp_path / "var" / "fax" / "outbox"
    pdfs, sidecars = sorted(outbox.glob("*.pdf")), sorted(outbox.glob("*.json"))
    assert len(pdfs) == 2 and len(sidecars) == 2
    note_pdf = next(p for p in pdfs if "consult" in p.name)
    text = subprocess.run(["pdftotext", str(note_pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "Consult note: THEODORE FAIRWEATHER" in text and "(555) 555-0199" in text
    oru = sample("ORU_R01_v2.5.1_consultnote.hl7").decode()
    first_line = next(line.split("|")[5] for line in oru.splitlines() if line.startswith("OBX|") and
                      line.split("|")[5].strip() and "\\" not in line.split("|")[5])
    assert " ".join(first_line.split()) in " ".join(text.split())    # the note's own text, wrapped on the page
    assert {json.loads(s.read_text())["fax_number"] for s in sidecars} == {"5555550199"}
    assert r["history"][-1] == ("completed", "closed", "outbound")


def test_a_patient_reminder_reaches_a_real_smtp_server_and_the_timeline(tmp_path):
    from tests.receivers import SMTPReceiver
    with MLLPReceiver() as ehr, SMTPReceiver() as smtp:
        path = loop_config(tmp_path, ehr.port)
        text = path.read_text()
        text = text.replace("      - {name: fax_outbox", f"""      - {{name: mail, type: smtp, host: 127.0.0.1, port: {smtp.port},
          sender: referrals@riverbend.example}}
      - {{name: fax_outbox""")
        text = text.replace("outreach:\n", "outreach:\n  email: mail\n  quiet_hours: null\n")
        path.write_text(text)
        engine = EngineThread(load_config(path)).start()
        try:
            send_all(engine.port, ["ORM_O01_v2.5.1_bench25.hl7", "SIU_S12_v2.5.1.hl7", "ADT_A08_v2.5.1.hl7"])
            db = engine.config.store_location
            wait_until(lambda: referral(db)["status"] == "scheduled", what="scheduled")
            import subprocess
            import sys
            # the day before the appointment (2025-03-24 10:30): the reminder sweep, as the schedule runs it
            out = subprocess.run([sys.executable, "run_engine.py", "sweep", "reminders", "--config", str(path),
                                  "--at", "2025-03-23T12:00:00+00:00"], capture_output=True, text=True, check=True)
            assert json.loads(out.stdout) == {"reminded": 1}
            engine.engine.delivery.wake()
            [mail] = smtp.wait_for(1, timeout=20)
        finally:
            engine.stop()
    assert mail.rcpt_tos == ["tjfairweather@example.net"]
    assert mail.message["Subject"] == "Appointment reminder"
    assert "THEODORE" in mail.message.get_body().get_content().upper()
    conn = connect(db)
    kinds = [r[0] for r in conn.execute("SELECT kind FROM referral_events WHERE referral_id=1")]
    assert "outreach" in kinds
    assert conn.execute("SELECT status FROM outbound WHERE message_type='email'").fetchone()[0] == "sent"
    conn.close()


def test_a_coordinators_decision_reaches_the_rules_a_return_referral_goes_back(tmp_path):
    from engine import coordinator
    rule = """    - name: declined_back_to_referrer
      on: ["status:declined"]
      send: rri_i12
      to: referring_ehr
"""
    with MLLPReceiver() as ehr:
        engine = EngineThread(load_config(loop_config(tmp_path, ehr.port, extra_rules=rule))).start()
        try:
            send_all(engine.port, STORY[:1])
            db = engine.config.store_location
            wait_until(lambda: referral(db)["status"] == "ready", what="referral")
            conn = connect(db)
            coordinator.set_status(conn, 1, "declined", "dr.haddad", "outside our scope; refer to EP clinic")
            conn.close()
            [rri] = ehr.wait_for(1, timeout=20)       # the engine plans it within the retry pump's period
            wait_until(lambda: referral(db)["outbound"] and referral(db)["outbound"][0]["status"] == "sent",
                       what="recorded sent")
        finally:
            engine.stop()
    m = parse(rri.decode())
    assert (get(m, "MSH-9.1"), get(m, "MSH-9.2"), get(m, "RF1-6.1")) == ("RRI", "I12", "RF250304-0481")
    assert referral(db)["outbound"][0]["rule"] == "declined_back_to_referrer"

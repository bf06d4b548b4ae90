"""Eligibility at intake: referral in -> X12 270 out -> 271 back -> coverage on the referral.

The payer is payer_simulator/ running as a real HTTP server on loopback (it reads the
engine's X12 as text, imports nothing from the engine); the engine runs whole (MLLP in,
journal, writer, delivery over HTTP). Every 270 the engine sends is validated with pyx12.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from engine import x12
from engine.config import ConfigError, PayerRule, load_config
from engine.eligibility import inquiry_270, read_271
from payer_simulator import PayerSimulator, Rules
from payer_simulator.server import Payer
from tests.conftest import REPO, EngineThread, free_port, open_store, sample, write_config
from tests.test_closed_loop import wait_until

pytestmark = pytest.mark.store

RULES = REPO / "payer_simulator" / "rules.yaml"
MEMBER, PLACER = b"W48213377", b"RF250304-0481"


def payer_config(tmp_path: Path, payer_url: str, *, auth_specialties: tuple[str, ...] = (), turnaround: float = 3,
                 follow_up_hours: float = 24, destination: str = "payer_gateway", keep_response: bool = True) -> Path:
    """One MLLP channel with the real mappings, a payer gateway webhook and one payer (the sample's)."""
    auth = f"""      prior_auth:
        - specialty: [{', '.join(auth_specialties)}]
          documents: [clinical notes]
""" if auth_specialties else ""
    return write_config(tmp_path, channel_extra=f"""    transformer: {{mappings: {REPO / 'mappings'}}}
    destinations:
      - {{name: payer_gateway, type: webhook, url: "{payer_url}", content_type: application/edi-x12,
          keep_response: {str(keep_response).lower()}, timeout_seconds: 5}}
      - {{name: files, type: file, directory: ./var/out}}
outbound:
  backoff_seconds: 0.05
  max_backoff_seconds: 0.2
  templates: {REPO / 'mappings' / 'outbound'}
schedules:
  retry_pump_seconds: 0.2
outreach:
  templates: {REPO / 'mappings' / 'outreach'}
payers:
  destination: {destination}
  escalate_to: referral-desk
  follow_up_hours: {follow_up_hours}
  rules:
    - name: CASCADIA MUTUAL HEALTH PLAN
      aliases: [Cascadia Mutual]
      payer_id: CMH94317
      turnaround_days: {turnaround}
{auth}""")


def order(member: str = "W48213377", placer: str = "RF250304-0481") -> bytes:
    """The sample cardiology order (Cascadia Mutual) for another member id / order number."""
    return sample("ORM_O01_v2.5.1_bench25.hl7").replace(MEMBER, member.encode()).replace(PLACER, placer.encode())


def send_orders(port: int, *orders: bytes) -> None:
    from channels.mllp.client import MLLPClient, msa
    with MLLPClient("127.0.0.1", port) as client:
        for raw in orders:
            assert msa(client.send(raw))[0] in ("AA", "CA")


def row(db, sql: str, *args) -> dict | None:
    """One row of the store at `db` (a SQLite file or a PostgreSQL URL) as a dict, or None."""
    found = rows(db, sql, *args)
    return found[0] if found else None


def rows(db, sql: str, *args) -> list[dict]:
    """The rows as dicts, by column name from the cursor (either backend's rows)."""
    conn = open_store(db)
    try:
        cur = conn.execute(sql, args)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        conn.close()


def referral(db, referral_id: int = 1) -> dict:
    return row(db, "SELECT * FROM referrals WHERE id=?", referral_id) or {}


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "run_engine.py"), *args, "--config", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.fixture
def payer():
    with PayerSimulator(Rules.load(RULES)) as simulator:
        yield simulator


# ---- the X12 itself ---------------------------------------------------------------------------------

SUBJECT = {"id": 7, "patient_family_name": "Fairweather", "patient_given_name": "Theodore",
           "patient_birth_date": "1958-03-14", "patient_sex": "M", "member_id": "W48213377"}
CASCADIA = PayerRule(name="CASCADIA MUTUAL HEALTH PLAN", payer_id="CMH94317")


def make_270(member: str = "W48213377", **over) -> str:
    return inquiry_270({**SUBJECT, "member_id": member, **over}, CASCADIA, submitter_id="RIVERBEND",
                       provider_name="RIVERBEND REFERRAL CENTER", provider_npi="1234567893", control_number=42,
                       trace="RE7-42", at=datetime(2026, 11, 23, 9, 30, tzinfo=timezone.utc))


def test_the_270_is_valid_5010_for_pyx12_and_carries_the_patient_and_payer():
    text = make_270()
    assert x12.validate(text, "270") == []
    doc = x12.read(text)
    assert (doc.functional_id, doc.version, doc.transaction_set) == ("HS", "005010X279A1", "270")
    nm1 = {s.get(1): s for s in doc.all("NM1")}
    assert nm1["PR"].get(9) == "CMH94317" and nm1["1P"].get(9) == "1234567893"
    assert (nm1["IL"].get(3), nm1["IL"].get(9)) == ("FAIRWEATHER", "W48213377")
    assert doc.first("DMG").get(2) == "19580314" and doc.first("TRN").get(2) == "RE7-42"
    # no birth date: no DMG, still valid; delimiters inside data never break the interchange
    odd = make_270(patient_birth_date=None, patient_family_name="O*Brien~Smith:Jr^")
    assert x12.validate(odd, "270") == [] and x12.read(odd).first("DMG") is None


def test_pyx12_names_what_is_wrong_in_a_broken_270():
    broken = make_270().replace("EQ*30", "EQ*ZZZ").replace("DMG*D8", "DMG*XX")
    problems = x12.validate(broken, "270")
    assert any(p.startswith("EQ01") for p in problems) and any(p.startswith("DMG01") for p in problems)
    with pytest.raises(x12.X12Error, match="SE count"):
        x12.read(make_270().replace("SE*13*", "SE*12*"))


def test_validation_cost_is_measured_so_it_stays_off_the_hot_path():
    x12.validate(make_270(), "270")                # builds the derived maps once
    started = time.perf_counter()
    for _ in range(5):
        assert x12.validate(make_270(), "270") == []
    per_message = (time.perf_counter() - started) / 5
    print(f"pyx12 validation of one 270: {per_message * 1000:.0f} ms")
    assert per_message < 2.0                       # ~0.1 s here: start-up and tests only, never per message


@pytest.mark.parametrize("member, status, detail", [
    ("W48213377", "active", "plan PPO GOLD, copay 40.00, in network"),
    ("OON55", "active", "out of network"),
    ("INACT9", "inactive", "inactive coverage"),
    ("NOTFOUND1", "rejected", "AAA 75: subscriber/insured not found"),
])
def test_reading_the_simulated_payers_271(member, status, detail):
    code, answer = Payer(Rules.load(RULES)).answer(make_270(member))
    assert code == 200 and x12.validate(answer, "271") == []
    coverage = read_271(answer, expected_trace="RE7-42")
    assert coverage.status == status and detail in coverage.summary()


def test_an_unusable_271_names_the_segment_and_element():
    _, answer = Payer(Rules.load(RULES)).answer(make_270("BAD271X"))
    with pytest.raises(x12.X12Error, match=r"^EB07: '4O\.OO' is not a monetary amount"):
        read_271(answer)
    _, good = Payer(Rules.load(RULES)).answer(make_270())
    with pytest.raises(x12.X12Error, match="^TRN02: answers trace 'RE7-42'"):
        read_271(good, expected_trace="RE9-99")
    with pytest.raises(x12.X12Error, match="^ST01: expected a 271"):
        read_271(make_270())
    with pytest.raises(x12.X12Error, match="^EB: the 271 has no EB"):
        read_271(good.replace("EB*1*IND*30**PPO GOLD~", "").replace("EB*B*", "MSG*B*").replace("SE*14*", "SE*13*"))
    with pytest.raises(x12.X12Error, match="^ISA: not an X12"):
        read_271("<html>gateway error</html>")


# ---- the engine end to end ----------------------------------------------------------------------------

def test_referral_in_270_out_271_back_eligibility_recorded(tmp_path, payer):
    path = payer_config(tmp_path, payer.url)
    engine = EngineThread(load_config(path)).start()
    try:
        send_orders(engine.port, order())
        db = engine.config.store_location
        wait_until(lambda: referral(db).get("coverage_status") == "active", what="coverage recorded")
    finally:
        engine.stop()
    r = referral(db)
    assert r["status"] == "ready" and r["coverage_plan"] == "PPO GOLD" and r["coverage_checked_at"]
    # what went out is a valid 5010 270 for this patient and payer
    [sent] = payer.received
    assert x12.validate(sent, "270") == []
    assert "NM1*IL*1*FAIRWEATHER*THEODORE****MI*W48213377" in sent and "NM1*PR*2*CASCADIA MUTUAL" in sent
    request = row(db, "SELECT * FROM payer_requests WHERE referral_id=1")
    assert (request["kind"], request["status"], request["outcome"]) == ("eligibility", "answered", "active")
    assert json.loads(request["result"])["copay"] == "40.00"
    out = row(db, "SELECT * FROM outbound WHERE id=?", request["outbound_id"])
    assert out["status"] == "sent" and out["message_type"] == "x12_270" and "ST*271*" in out["ack"]
    events = [(e["kind"], e["to_value"]) for e in rows(db, "SELECT * FROM referral_events WHERE referral_id=1")]
    assert ("eligibility", "pending") in events and ("eligibility", "active") in events
    # the CLI says what was asked and answered
    result = cli(path, "eligibility", "1", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["coverage"]["coverage_status"] == "active"
    assert doc["inquiries"][0]["summary"] == "active, plan PPO GOLD, copay 40.00, in network"
    text = cli(path, "eligibility", "1").stdout
    assert "coverage active, plan PPO GOLD" in text and "270 #1" in text


def test_inactive_coverage_makes_the_referral_incomplete_with_the_reason(tmp_path, payer):
    engine = EngineThread(load_config(payer_config(tmp_path, payer.url))).start()
    unknown = order("ZZ100", "ORD-ACME").replace(b"CASCADIA MUTUAL HEALTH PLAN", b"ACME HEALTH").replace(
        b"CMH94317", b"ACME01")
    try:
        send_orders(engine.port, order("INACT0042"), unknown)
        db = engine.config.store_location
        wait_until(lambda: referral(db).get("status") == "incomplete", what="incomplete")
        wait_until(lambda: referral(db, 2).get("status") == "ready", what="the other referral")
    finally:
        engine.stop()
    # a payer the rules do not know: no 270, an event telling the coordinator to verify by phone
    assert [e["to_value"] for e in rows(db, "SELECT * FROM referral_events WHERE referral_id=2 AND "
                                            "kind='eligibility'")] == ["unknown_payer"]
    assert rows(db, "SELECT * FROM payer_requests WHERE referral_id=2") == [] and len(payer.received) == 1
    r = referral(db)
    assert r["coverage_status"] == "inactive" and "active_coverage" in json.loads(r["missing"])
    last = rows(db, "SELECT * FROM status_history WHERE referral_id=1 ORDER BY id")[-1]
    assert (last["from_status"], last["to_status"], last["cause_kind"]) == ("ready", "incomplete", "payer")
    assert "coverage inactive" in last["detail"]
    assert r["next_action"].startswith("Coverage inactive with CASCADIA MUTUAL HEALTH PLAN")


def test_a_new_member_id_asks_again_and_active_coverage_makes_it_ready(tmp_path, payer):
    engine = EngineThread(load_config(payer_config(tmp_path, payer.url))).start()
    try:
        db = engine.config.store_location
        send_orders(engine.port, order("INACT0042"))
        wait_until(lambda: referral(db).get("status") == "incomplete", what="incomplete")
        # the practice sends the corrected insurance: an order update for the same order number
        update = order("W77700012").replace(b"ORC|NW|", b"ORC|XO|").replace(b"MFP250304091215481", b"MFP2503XO")
        send_orders(engine.port, update)
        wait_until(lambda: referral(db).get("status") == "ready", what="ready after the new member id")
    finally:
        engine.stop()
    asked = rows(db, "SELECT member_id, outcome FROM payer_requests WHERE referral_id=1 ORDER BY id")
    assert asked == [{"member_id": "INACT0042", "outcome": "inactive"}, {"member_id": "W77700012", "outcome": "active"}]
    assert "active_coverage" not in json.loads(referral(db)["missing"])


def test_payer_unreachable_is_retried_and_the_referral_visibly_waits(tmp_path):
    port = free_port()
    simulator = PayerSimulator(Rules.load(RULES), port=port)        # not started: the payer is down
    engine = EngineThread(load_config(payer_config(tmp_path, f"http://127.0.0.1:{port}/x12"))).start()
    try:
        send_orders(engine.port, order())
        db = engine.config.store_location
        wait_until(lambda: (row(db, "SELECT attempts FROM outbound WHERE message_type='x12_270'") or
                            {}).get("attempts", 0) >= 3, what="several attempts")
        r = referral(db)
        assert r["coverage_status"] == "pending" and r["status"] == "ready"
        assert r["next_action"].startswith("Eligibility pending: waiting for CASCADIA")
        out = row(db, "SELECT * FROM outbound WHERE message_type='x12_270'")
        assert out["status"] in ("error", "sending", "queued") and "cannot reach" in out["last_error"]
        timeline = cli(engine.config.source_file, "referral", "1", "--json")
        events = json.loads(timeline.stdout)["events"]
        assert any(e["kind"] == "eligibility" and e["to_value"] == "pending" for e in events)
        simulator.start()                                           # the payer is back
        wait_until(lambda: referral(db).get("coverage_status") == "active", what="answered after the outage")
    finally:
        engine.stop()
        simulator.stop()
    assert len(simulator.received) == 1
    assert row(db, "SELECT status FROM outbound WHERE message_type='x12_270'")["status"] == "sent"


def test_a_malformed_271_is_kept_with_a_clear_error_and_a_review_exception(tmp_path, payer):
    engine = EngineThread(load_config(payer_config(tmp_path, payer.url))).start()
    try:
        send_orders(engine.port, order("BAD271A"))
        db = engine.config.store_location
        wait_until(lambda: row(db, "SELECT 1 FROM review_exceptions WHERE referral_id=1"), what="exception")
    finally:
        engine.stop()
    out = row(db, "SELECT * FROM outbound WHERE message_type='x12_270'")
    assert out["status"] == "sent" and "EB*B*IND*3" in out["ack"]              # the answer itself is kept
    assert out["last_error"] == "response not applied: X12Error: EB07: '4O.OO' is not a monetary amount"
    exception = row(db, "SELECT * FROM review_exceptions WHERE referral_id=1")
    assert "EB07" in exception["reason"] and exception["event"] == "response.x12_270"
    r = referral(db)
    assert r["coverage_status"] == "pending" and r["status"] == "ready"      # nothing half-applied
    assert row(db, "SELECT status FROM payer_requests WHERE referral_id=1")["status"] == "asked"


def test_payer_config_errors_name_file_key_and_what_is_valid(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(payer_config(tmp_path, "http://127.0.0.1:9/x12", destination="files"))
    assert "payers.destination: 'files' is a file destination; expected webhook" in str(err.value)
    assert "config.yaml:" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(payer_config(tmp_path, "http://127.0.0.1:9/x12", keep_response=False))
    assert "set keep_response: true" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(payer_config(tmp_path, "http://127.0.0.1:9/x12", destination="nowhere"))
    assert "payers.destination: no destination named 'nowhere' (destinations: files, payer_gateway)" in str(err.value)


def test_the_shipped_config_has_a_payer_gateway_on_the_simulators_port():
    config = load_config(REPO / "config.yaml", env={})
    gateway = config.destinations()[config.payers.destination]
    assert gateway.url == "http://127.0.0.1:8590/x12" and gateway.keep_response
    assert {r.payer_id for r in config.payers.rules} >= {"CMH94317", "NWH30388"}

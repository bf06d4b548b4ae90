"""Prior authorization at intake: an auth-required referral -> 278 -> pending -> approved -> ready.

Same real parts as tests/test_eligibility.py: the whole engine, payer_simulator/ as a real
HTTP payer on loopback, the CLI as a subprocess. The sweep that escalates overdue and
follows up pended requests is run through the CLI at a chosen time.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from engine import x12
from engine.authorization import auth_kpis, read_278, request_278
from engine.config import PriorAuthRule, load_config
from payer_simulator import Rules
from payer_simulator.server import Payer
from tests.conftest import EngineThread, open_store
from tests.test_closed_loop import wait_until
from tests.test_eligibility import (CASCADIA, RULES, SUBJECT, cli, order, payer, payer_config, referral, row,
                                    rows, send_orders)

__all__ = ["payer"]       # the simulator fixture, shared with test_eligibility

pytestmark = pytest.mark.store


def make_278(member: str = "W48213377", service_code: str | None = "99243", diagnoses=("I25.10", "R07.9")) -> str:
    return request_278({**SUBJECT, "member_id": member, "service_code": service_code}, CASCADIA,
                       PriorAuthRule(service_type="3"), list(diagnoses), submitter_id="RIVERBEND",
                       provider_name="RIVERBEND REFERRAL CENTER", provider_npi="1234567893", control_number=43,
                       trace="RA7-43", at=datetime(2026, 11, 23, 9, 30, tzinfo=timezone.utc))


def test_the_278_request_is_a_well_formed_005010X217_interchange():
    for text in (make_278(), make_278(service_code=None, diagnoses=())):
        assert x12.validate(text, "278_request") == [], text
        doc = x12.read(text)                       # pyx12's reader: envelope, counts, HL numbering
        assert (doc.functional_id, doc.version, doc.transaction_set) == ("HI", "005010X217", "278")
        levels = [(s.get(1), s.get(2), s.get(3)) for s in doc.all("HL")]
        assert levels[:4] == [("1", "", "20"), ("2", "1", "21"), ("3", "2", "22"), ("4", "3", "EV")]
        assert doc.first("BHT").get(2) == "13" and doc.first("UM").get(1) == "SC"
    doc = x12.read(make_278())
    assert doc.first("HI").elements == ("ABK:I2510", "ABF:R079")
    assert doc.first("SV1").get(1) == "HC:99243" and doc.all("HL")[-1].get(3) == "SS"


@pytest.mark.parametrize("member, status, number", [
    ("W48213377", "approved", True), ("DENY7", "denied", False), ("PEND7", "pending", False),
    ("INFO7", "more_info", False)])
def test_reading_the_simulated_payers_278_response(member, status, number):
    code, answer = Payer(Rules.load(RULES)).answer(make_278(member))
    assert code == 200 and x12.validate(answer, "278_response") == []
    decision = read_278(answer, expected_trace="RA7-43")
    assert decision.status == status and bool(decision.number) == number
    if status == "approved":
        assert decision.valid_from and decision.valid_to > decision.valid_from


def test_an_unusable_278_names_the_segment_and_element():
    _, broken = Payer(Rules.load(RULES)).answer(make_278("BAD278X"))
    with pytest.raises(x12.X12Error, match="^ST/SE: SE count of 16 for SE02=.* is wrong. I count 14"):
        read_278(broken)
    _, good = Payer(Rules.load(RULES)).answer(make_278())
    with pytest.raises(x12.X12Error, match="^HCR02: approval"):
        read_278(good.replace("HCR*A1*AUTH000001", "HCR*A1"))
    with pytest.raises(x12.X12Error, match="^HCR01: unknown action code 'ZZ'"):
        read_278(good.replace("HCR*A1*", "HCR*ZZ*"))
    with pytest.raises(x12.X12Error, match=r"^BHT02: this 278 is a request"):
        read_278(make_278())


def sweep(path, at: datetime) -> dict:
    result = cli(path, "sweep", "auth_overdue", "--at", at.isoformat())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_auth_required_referral_278_pending_then_approved_then_ready(tmp_path, payer):
    path = payer_config(tmp_path, payer.url, auth_specialties=("cardiology",), follow_up_hours=24)
    engine = EngineThread(load_config(path)).start()
    try:
        send_orders(engine.port, order("PEND0001"))
        db = engine.config.store_location
        wait_until(lambda: referral(db).get("authorization_status") == "pending", what="pended by the payer")
        r = referral(db)
        assert r["status"] == "auth_pending" and r["authorization_required"] == 1
        history = [(h["from_status"], h["to_status"]) for h in rows(db, "SELECT * FROM status_history ORDER BY id")]
        assert history == [(None, "ready"), ("ready", "auth_pending")]
        # the 270 went first, the 278 after the 271 said active; both valid for pyx12
        assert [t[t.index("ST*") + 3:t.index("ST*") + 6] for t in payer.received] == ["270", "278"]
        assert x12.validate(payer.received[0], "270") == [] and x12.validate(payer.received[1], "278_request") == []
        assert "HI*ABK:R079*ABF:I10*ABF:E119" in payer.received[1]
        # a day later the sweep asks again; the payer has decided by then
        result = sweep(path, datetime.now(timezone.utc) + timedelta(hours=25))
        assert result == {"escalated": 0, "followed_up": 1}
        wait_until(lambda: referral(db).get("status") == "ready", what="ready once approved")
    finally:
        engine.stop()
    r = referral(db)
    assert r["authorization_status"] == "approved" and r["authorization_number"].startswith("AUTH")
    assert r["authorization_valid_from"] and r["authorization_valid_to"] > r["authorization_valid_from"]
    assert r["next_action"].startswith(f"Authorization approved (#{r['authorization_number']}")
    last = rows(db, "SELECT * FROM status_history ORDER BY id")[-1]
    assert (last["from_status"], last["to_status"], last["cause_kind"]) == ("auth_pending", "ready", "payer")
    assert len(payer.received) == 3 and x12.validate(payer.received[2], "278_request") == []
    # the move the payer's answer caused reaches the outbound rules like a message's would
    assert [(t["from_status"], t["to_status"], t["cause_kind"]) for t in rows(db, "SELECT * FROM rule_triggers")] \
        == [("auth_pending", "ready", "payer")]
    doc = json.loads(cli(path, "auth", "1", "--json").stdout)
    [a] = doc["authorizations"]
    assert a["status"] == "approved" and [q["outcome"] for q in a["requests"]] == ["pending", "approved"]
    assert doc["referral"]["status"] == "ready"


@pytest.mark.slow
def test_denial_opens_a_review_exception_and_tells_the_coordinator(tmp_path, payer):
    path = payer_config(tmp_path, payer.url, auth_specialties=("cardiology",))
    engine = EngineThread(load_config(path)).start()
    try:
        send_orders(engine.port, order("W48213377", "ORD-APPROVED"), order("DENY0001", "ORD-DENIED"))
        db = engine.config.store_location
        wait_until(lambda: referral(db, 2).get("authorization_status") == "denied", what="denied")
        wait_until(lambda: referral(db, 1).get("status") == "ready", what="the other approved")
    finally:
        engine.stop()
    r = referral(db, 2)
    assert r["status"] == "auth_pending" and r["owner"] == "referral-desk"
    assert r["next_action"].startswith("Authorization denied by CASCADIA MUTUAL HEALTH PLAN: notify the referring")
    exception = row(db, "SELECT * FROM review_exceptions WHERE referral_id=2")
    assert exception["event"] == "authorization.denied" and "Not medically necessary" in exception["reason"]
    conn = open_store(db)
    try:
        kpis = auth_kpis(conn)
    finally:
        conn.close()
    [cascadia] = kpis["by_payer"]
    assert (cascadia["approved"], cascadia["denied"], cascadia["denial_rate"]) == (1, 1, 0.5)
    assert kpis["decided"] == 2 and kpis["turnaround_days"]["median"] < 0.01
    assert kpis["waiting_on_auth"]["referrals"] == 1
    # the same figures on the dashboard's KPI page and in its CSV export
    from datetime import date, timedelta
    from engine import kpis as dashboard_kpis
    from engine.web.app import create_app
    today = date.today()
    conn = open_store(db)
    try:
        report = dashboard_kpis.report(conn, today - timedelta(days=1), today)
    finally:
        conn.close()
    assert report["authorization"]["by_payer"] == kpis["by_payer"]
    assert "payer,authorizations_decided,approved,denied,denial_rate" in dashboard_kpis.to_csv(report)
    import subprocess
    import sys
    subprocess.run([sys.executable, "run_engine.py", "user", "add", "kim", "--role", "viewer", "--config", str(path)],
                   input="kpi page password\n", text=True, check=True, capture_output=True)
    from tests.test_web_api import login
    page = login(create_app(load_config(path)), "kim", "kpi page password").get("/kpis").text
    assert 'id="auth-by-payer"' in page and "CASCADIA MUTUAL HEALTH PLAN" in page and "50.0 %" in page


@pytest.mark.slow
def test_more_info_then_a_decision_by_phone_with_auth_set(tmp_path, payer):
    path = payer_config(tmp_path, payer.url, auth_specialties=("cardiology",))
    engine = EngineThread(load_config(path)).start()
    try:
        send_orders(engine.port, order("INFO0001"))
        db = engine.config.store_location
        wait_until(lambda: referral(db).get("authorization_status") == "more_info", what="more info")
        assert "needs more information" in referral(db)["next_action"]
        assert "send clinical notes" in referral(db)["next_action"]
        refused = cli(path, "auth-set", "1", "--status", "approved", "--by", "alice")
        assert refused.returncode == 2 and "needs the authorization number" in refused.stderr
        done = cli(path, "auth-set", "1", "--status", "approved", "--number", "PH-2211", "--valid-from",
                   "2026-12-01", "--valid-to", "2027-02-28", "--by", "alice", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["referral_status"] == "ready"
    finally:
        engine.stop()
    r = referral(db)
    assert (r["status"], r["authorization_number"], r["authorization_valid_to"]) == ("ready", "PH-2211", "2027-02-28")
    last = rows(db, "SELECT * FROM status_history ORDER BY id")[-1]
    assert (last["to_status"], last["cause_kind"], last["cause_id"]) == ("ready", "user", "alice")
    assert [(t["to_status"], t["cause_kind"]) for t in rows(db, "SELECT * FROM rule_triggers")] == [("ready", "user")]
    auth = row(db, "SELECT * FROM authorizations WHERE referral_id=1")
    assert (auth["status"], auth["decided_by"]) == ("approved", "alice")


@pytest.mark.slow
def test_a_malformed_278_and_an_overdue_authorization(tmp_path, payer):
    path = payer_config(tmp_path, payer.url, auth_specialties=("cardiology",), turnaround=2, follow_up_hours=500)
    engine = EngineThread(load_config(path)).start()
    try:
        send_orders(engine.port, order("BAD278Q"))
        db = engine.config.store_location
        wait_until(lambda: row(db, "SELECT 1 FROM review_exceptions WHERE referral_id=1"), what="exception")
    finally:
        engine.stop()
    out = row(db, "SELECT * FROM outbound WHERE message_type='x12_278'")
    assert out["status"] == "sent" and "HCR*A1*" in out["ack"]
    assert out["last_error"].startswith("response not applied: X12Error: ST/SE: SE count of 16")
    assert "ST/SE: SE count" in row(db, "SELECT reason FROM review_exceptions WHERE referral_id=1")["reason"]
    auth = row(db, "SELECT * FROM authorizations WHERE referral_id=1")
    assert auth["status"] == "requested" and referral(db)["status"] == "auth_pending"     # nothing half-applied
    # the payer never decides: past its 2-day turnaround the referral is escalated, once per period
    requested = datetime.fromisoformat(auth["requested_at"])
    assert sweep(path, requested + timedelta(days=1)) == {"escalated": 0, "followed_up": 0}
    assert sweep(path, requested + timedelta(days=2, hours=1)) == {"escalated": 1, "followed_up": 0}
    assert sweep(path, requested + timedelta(days=3)) == {"escalated": 0, "followed_up": 0}
    r = referral(db)
    assert r["next_action"].startswith("Prior authorization overdue with CASCADIA") and r["owner"] == "referral-desk"
    assert [e["to_value"] for e in rows(db, "SELECT * FROM referral_events WHERE kind='auth_overdue'")] == ["1"]


@pytest.mark.slow
def test_pas_bundle_export_validates_with_fhir_resources(tmp_path):
    from fhir.resources.R4B.bundle import Bundle
    path = payer_config(tmp_path, "http://127.0.0.1:9/x12", auth_specialties=("cardiology",))
    engine = EngineThread(load_config(path)).start()       # the payer is down: the bundle needs no answer
    try:
        send_orders(engine.port, order())
        db = engine.config.store_location
        wait_until(lambda: referral(db).get("status") == "auth_pending", what="auth pending")
    finally:
        engine.stop()
    result = cli(path, "auth-bundle", "1")
    assert result.returncode == 0, result.stderr
    bundle = json.loads(result.stdout)
    Bundle.model_validate(bundle)
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds[0] == "Claim" and {"Patient", "Coverage", "Practitioner", "Organization"} <= set(kinds)
    claim = bundle["entry"][0]["resource"]
    assert claim["use"] == "preauthorization" and claim["priority"]["coding"][0]["code"] == "stat"
    assert [d["diagnosisCodeableConcept"]["coding"][0]["code"] for d in claim["diagnosis"]] == ["R07.9", "I10", "E11.9"]
    coverage = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Coverage")
    assert coverage["subscriberId"] == "W48213377"
    assert cli(path, "auth-bundle", "99").returncode == 1

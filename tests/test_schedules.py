"""Scheduled sweeps (engine/schedules.py) and patient outreach (engine/outreach.py) on a real store,
and the APScheduler jobs of a running engine, with their job store in the engine's database."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from engine.config import AgingSchedule, NoteChaseSchedule, OutreachConfig, QuietHours, ReminderSchedule, load_config
from engine.normalized import Patient
from engine.outreach import Outreach, after_quiet_hours, record_reply
from engine.schedules import aging_sweep, no_show_sweep, note_chase_sweep, reminder_sweep
from tests.conftest import EngineThread, open_store, write_config
from tests.test_referrals import MRN, Engine, order, siu

pytestmark = pytest.mark.store

NY = ZoneInfo("America/New_York")
OUTREACH = Path(__file__).parent.parent / "mappings" / "outreach"


def created(e: Engine, referral_id: int = 1) -> datetime:
    return datetime.fromisoformat(e.store.get(referral_id)["created_at"])


def events(e: Engine, kind: str, referral_id: int = 1) -> list[dict]:
    return [ev for ev in e.store.events(referral_id) if ev["kind"] == kind]


def sweep(e: Engine, fn, *args):
    with e.journal.conn:
        e.journal.conn.execute("BEGIN IMMEDIATE")
        return fn(e.journal.conn, *args)


def test_aging_escalates_one_level_per_sla_period_then_leaks(store_url):
    e = Engine(store_url)
    e.send(order(urgency="urgent"))                      # SLA 3 days; the order is complete: 'ready'
    t0, cfg = created(e), AgingSchedule(escalate_to="referral-desk", expire_days=90)
    assert sweep(e, aging_sweep, cfg, t0 + timedelta(days=2.9)) == {"escalated": 0, "leaked": 0}
    assert sweep(e, aging_sweep, cfg, t0 + timedelta(days=3.1)) == {"escalated": 1, "leaked": 0}
    r = e.store.get(1)
    assert (r["escalation_level"], r["owner"]) == (1, "referral-desk")
    assert r["next_action"].startswith("Escalated (level 1): past the 3-day SLA for urgent")
    assert sweep(e, aging_sweep, cfg, t0 + timedelta(days=4)) == {"escalated": 0, "leaked": 0}   # idempotent
    assert sweep(e, aging_sweep, cfg, t0 + timedelta(days=6.5))["escalated"] == 1
    assert [(ev["from_value"], ev["to_value"]) for ev in events(e, "escalated")] == [("0", "1"), ("1", "2")]
    assert sweep(e, aging_sweep, cfg, t0 + timedelta(days=91)) == {"escalated": 0, "leaked": 1}
    assert e.history()[-1] == ("ready", "leaked")
    assert e.store.timeline(1)["history"][-1]["cause_kind"] == "schedule"


def test_a_scheduled_referral_does_not_age(store_url):
    e = Engine(store_url)
    e.send(order())
    e.send(siu("appointment.booked"))
    assert sweep(e, aging_sweep, AgingSchedule(), created(e) + timedelta(days=60)) == {"escalated": 0, "leaked": 0}


def test_note_chase_asks_the_specialist_once_per_period(store_url):
    e = Engine(store_url)
    e.send(order())
    e.send(siu("appointment.booked"))
    e.send(siu("appointment.modified", status="completed"))
    completed = datetime.fromisoformat(e.store.timeline(1)["history"][-1]["at"])
    cfg = NoteChaseSchedule(after_days=7, repeat_days=7, to="office_mail", recipient="cardiology@example.org")
    assert sweep(e, note_chase_sweep, cfg, completed + timedelta(days=6), "per_destination") == {"chased": 0}
    assert sweep(e, note_chase_sweep, cfg, completed + timedelta(days=8), "per_destination") == {"chased": 1}
    assert sweep(e, note_chase_sweep, cfg, completed + timedelta(days=9), "per_destination") == {"chased": 0}
    assert sweep(e, note_chase_sweep, cfg, completed + timedelta(days=15), "per_destination") == {"chased": 1}
    rows = e.journal.conn.execute("SELECT destination, payload FROM outbound ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["office_mail", "office_mail"]
    assert json.loads(rows[0][1])["to"] == "cardiology@example.org"
    assert e.store.get(1)["next_action"].startswith("Consult note missing")


def outreach(**kw) -> Outreach:
    cfg = OutreachConfig(sms="sms_gateway", email="mail", templates=OUTREACH, callback_phone="(555) 555-0100",
                         quiet_hours=QuietHours(start="20:00", end="08:00", timezone="America/New_York"), **kw)
    return Outreach(cfg, {}, "per_destination")


def booked_with_contact(e: Engine, start: datetime, **patient) -> None:
    e.send(order(patient=Patient(identifiers=[MRN], family_name="FAIRWEATHER", given_name="Theodore",
                                 phone="5555550142", **patient)))
    e.send(siu("appointment.booked", start=start.isoformat()))


def queued(e: Engine) -> list[tuple[str, str, dict, str]]:
    return [(r[0], r[1], json.loads(r[2]), r[3]) for r in e.journal.conn.execute(
        "SELECT destination, message_type, payload, next_attempt_at FROM outbound ORDER BY id")]


def test_reminder_by_sms_in_the_patients_language_once(store_url):
    e = Engine(store_url)
    now = datetime(2026, 11, 23, 15, 0, tzinfo=NY)
    booked_with_contact(e, now + timedelta(hours=30), language="es")
    o = outreach()
    assert sweep(e, reminder_sweep, ReminderSchedule(hours_before=48), now, o) == {"reminded": 1}
    assert sweep(e, reminder_sweep, ReminderSchedule(hours_before=48), now, o) == {"reminded": 0}
    [(destination, kind, payload, due)] = queued(e)
    assert (destination, kind, payload["to"]) == ("sms_gateway", "sms", "5555550142")
    assert payload["text"].startswith("Hola Theodore, le recordamos su cita de cardiology el Nov 24, 2026 a las")
    assert datetime.fromisoformat(due) == now
    assert events(e, "outreach")[0]["to_value"] == "sms"


def test_email_preference_and_quiet_hours_hold_the_message_until_morning(store_url):
    e = Engine(store_url)
    late = datetime(2026, 11, 23, 22, 30, tzinfo=NY)
    booked_with_contact(e, late + timedelta(hours=20), email="theo@example.org", contact_preference="email")
    sweep(e, reminder_sweep, ReminderSchedule(), late, outreach())
    [(destination, kind, payload, due)] = queued(e)
    assert (destination, kind, payload["to"], payload["subject"]) == ("mail", "email", "theo@example.org",
                                                                      "Appointment reminder")
    assert datetime.fromisoformat(due) == datetime(2026, 11, 24, 8, 0, tzinfo=NY)
    assert "held for quiet hours" in events(e, "outreach")[0]["detail"]


def test_quiet_hours_across_midnight():
    assert after_quiet_hours(datetime(2026, 1, 5, 7, 0, tzinfo=NY), "20:00", "08:00", NY) == \
        datetime(2026, 1, 5, 8, 0, tzinfo=NY)
    noon = datetime(2026, 1, 5, 12, 0, tzinfo=NY)
    assert after_quiet_hours(noon, "20:00", "08:00", NY) == noon
    assert after_quiet_hours(noon, "12:00", "13:00", NY) == datetime(2026, 1, 5, 13, 0, tzinfo=NY)


def test_no_show_follow_up_once_per_no_show_and_replies_on_the_timeline(store_url):
    e = Engine(store_url)
    booked_with_contact(e, datetime(2026, 11, 20, 9, 0, tzinfo=NY))
    e.send(siu("appointment.no_show"))
    now = datetime(2026, 11, 23, 12, 0, tzinfo=NY)
    assert sweep(e, no_show_sweep, now, outreach()) == {"followed_up": 1}
    assert sweep(e, no_show_sweep, now, outreach()) == {"followed_up": 0}
    [(_, _, payload, _)] = queued(e)
    assert "we missed you" in payload["text"] and "(555) 555-0100" in payload["text"]
    with e.journal.conn:
        record_reply(e.journal.conn, 1, "sms", "Can I come Friday?", "sms-gateway")
    assert events(e, "outreach_reply")[0]["detail"] == "Can I come Friday?"


def test_no_reachable_channel_is_recorded_not_sent(store_url):
    e = Engine(store_url)
    e.send(order())                                        # no phone, no e-mail
    e.send(siu("appointment.booked", start=(datetime.now(timezone.utc) + timedelta(hours=3)).isoformat()))
    assert sweep(e, reminder_sweep, ReminderSchedule(), datetime.now(timezone.utc), outreach())["reminded"] == 1
    assert queued(e) == [] and events(e, "outreach")[0]["to_value"] == "none"


def query(db, sql: str) -> list:
    """The rows of one query on a connection of its own, closed after."""
    conn = open_store(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.slow
def test_a_running_engine_escalates_an_aging_referral_on_schedule_and_keeps_its_jobs(tmp_path):
    from channels.mllp.client import MLLPClient, msa
    from tests.conftest import sample
    path = write_config(tmp_path, channel_extra=f"""    transformer: {{mappings: {Path.cwd() / 'mappings'}}}
schedules:
  retry_pump_seconds: 0.5
  aging: {{every_minutes: 0.02, sla_days: {{stat: 0.00001, urgent: 0.00001, routine: 0.00001}},
           expire_days: null, escalate_to: referral-desk}}
  note_chase: null
  reminders: null
  no_show_follow_up: null
outreach:
  templates: {OUTREACH}
""")
    engine = EngineThread(load_config(path)).start()
    try:
        with MLLPClient("127.0.0.1", engine.port) as client:
            assert msa(client.send(sample("ORM_O01_v2.5.1_bench25.hl7").replace(b"\n", b"\r")))[0] in ("AA", "CA")
        db = engine.config.store_location
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            row = next(iter(query(db, "SELECT owner, escalation_level FROM referrals WHERE id=1")), None)
            if row and row[1]:
                break
            time.sleep(0.1)
        assert row[0] == "referral-desk" and row[1] >= 1
    finally:
        engine.stop()
    jobs = {r[0] for r in query(db, "SELECT id FROM apscheduler_jobs")}
    assert jobs == {"aging"}          # the retry pump is an in-memory asyncio task, not a stored job
    engine = EngineThread(load_config(path)).start()      # restart: the same jobs, no duplicates
    engine.stop()
    assert {r[0] for r in query(db, "SELECT id FROM apscheduler_jobs")} == jobs


def test_every_leaked_referral_gets_its_own_messages(tmp_path, store_url):
    from engine.rules import OutboundPlanner
    from engine.templates import Templates
    path = write_config(tmp_path, channel_extra=f"""    destinations:
      - {{name: referrer_files, type: file, directory: ./out}}
outbound:
  templates: {Path.cwd() / 'mappings' / 'outbound'}
  rules:
    - {{name: leaked_back, on: ["status:leaked"], send: rri_i12, to: referrer_files}}
""")
    config = load_config(path)
    planner = OutboundPlanner(config, Templates.load(config.outbound.templates, check=False))
    e = Engine(store_url)
    e.send(order(urgency="urgent"))
    e.send(order(urgency="urgent", placer_order_number="RF-OTHER"))
    cfg = AgingSchedule(expire_days=90)
    assert sweep(e, aging_sweep, cfg, created(e) + timedelta(days=91), planner) == {"escalated": 0, "leaked": 2}
    rows = e.journal.conn.execute("SELECT referral_id, rule FROM outbound ORDER BY id").fetchall()
    assert [tuple(r) for r in rows] == [(1, "leaked_back"), (2, "leaked_back")]


def test_a_sweep_from_the_cli_leaves_the_rules_to_the_engine(store_url):
    from engine.rules import plan_triggers
    e = Engine(store_url)
    e.send(order())
    sweep(e, aging_sweep, AgingSchedule(expire_days=90), created(e) + timedelta(days=91))    # no planner
    [trigger] = e.journal.conn.execute("SELECT to_status, planned_at FROM rule_triggers").fetchall()
    assert tuple(trigger) == ("leaked", None)
    seen = []
    with e.journal.conn:
        e.journal.conn.execute("BEGIN IMMEDIATE")
        assert plan_triggers(e.journal.conn, lambda conn, message_id, applied: seen.append(applied.to_status)) == 1
    assert seen == ["leaked"]


def test_a_job_runs_once_per_period_among_nodes_sharing_the_store(store_url):
    """Every node's scheduler fires its jobs; claim_run (in the writer's transaction, under the store's
    write lock) lets one node run a job per half period, and records which one."""
    from engine.schedules import claim_run
    from engine.store import write_transaction
    Engine(store_url).journal.close()              # a migrated store
    first, second = open_store(store_url), open_store(store_url)
    t0 = datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc)
    try:
        with write_transaction(first):
            assert claim_run(first, "aging", t0, 900, "node1") is True
        with write_transaction(second):            # node2's scheduler fires a second later: not again
            assert claim_run(second, "aging", t0 + timedelta(seconds=1), 900, "node2") is False
            assert claim_run(second, "note_chase", t0 + timedelta(seconds=1), 900, "node2") is True
        with write_transaction(second):            # the next period: whoever fires first runs it
            assert claim_run(second, "aging", t0 + timedelta(seconds=900), 900, "node2") is True
        assert dict(first.execute("SELECT job, node FROM schedule_runs ORDER BY job").fetchall()) == \
            {"aging": "node2", "note_chase": "node2"}
    finally:
        first.close()
        second.close()

"""Coordinator actions on a real store (each backend: SQLite, PostgreSQL): owner, next action, status
by hand, resolving exceptions.

A status change can be caused by a message, a schedule or a user; a user's change goes through the same
`ReferralStore.set_status` (cause_kind 'user', cause_id the user name, detail the reason). Owner and next
action changes, and resolutions, are `referral_events` rows of the same shape.
"""
from __future__ import annotations

import json
import re
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import coordinator
from engine.coordinator import ExceptionAlreadyResolved, InvalidDue, UnknownException, UnknownReferral, parse_due
from engine.lifecycle import MANUAL_TRANSITIONS, TRANSITIONS, ManualTransitionRefused, ReferralStatus, \
    manual_transition
from engine.normalized import Appointment, Insurance, Mapped
from engine.store import Journal
from tests.conftest import open_store
from tests.test_referrals import CARDIOLOGY_STORY, PLACER, SEQ_EVENTS, Engine, note, order, send_samples, siu, \
    story_engine
from tests.test_referrals import fresh_store  # noqa: F401  (a fixture: pytest finds it by name)

pytestmark = pytest.mark.store

S = ReferralStatus
AT = "2026-11-23T10:00:00.000000+00:00"


def test_each_action_writes_its_row_with_cause_user(store_url):
    e = Engine(store_url)
    e.send(order())
    conn = e.journal.conn
    assert coordinator.assign(conn, 1, "ana", "lead.kim", AT)["owner"] == "ana"
    r = coordinator.set_next_action(conn, 1, "call the patient to book", "2026-12-01", "ana", AT)
    assert (r["next_action"], r["next_action_due"]) == ("call the patient to book", "2026-12-01")
    assert coordinator.set_status(conn, 1, "canceled", "ana", "patient chose another clinic", AT)["status"] == \
        "canceled"
    late = e.send(note())                                    # a note for a canceled referral: an exception
    [exc] = e.referral()["exceptions"]
    assert exc["message_id"] == late and exc["resolved_at"] is None
    resolved = coordinator.resolve_exception(conn, exc["id"], "ana", "clinic confirmed: not our patient", AT)
    assert (resolved["resolved_by"], resolved["resolution_note"]) == ("ana", "clinic confirmed: not our patient")
    assert coordinator.set_status(conn, 1, "ready", "ana", "patient came back to us", AT)["status"] == "ready"

    t = e.referral()
    assert [(h["from_status"], h["to_status"], h["cause_kind"], h["cause_id"], h["detail"]) for h in t["history"]] \
        == [(None, "ready", "message", "1", "referral created"),
            ("ready", "canceled", "user", "ana", "patient chose another clinic"),
            ("canceled", "ready", "user", "ana", "patient came back to us")]
    assert [(ev["kind"], ev["from_value"], ev["to_value"], ev["cause_kind"], ev["cause_id"], ev["detail"])
            for ev in t["events"]] == [
        ("owner", None, "ana", "user", "lead.kim", None),
        ("next_action", None, "call the patient to book (due 2026-12-01)", "user", "ana", None),
        ("exception_resolved", "consult note on a canceled referral", str(exc["id"]), "user", "ana",
         "clinic confirmed: not our patient")]
    assert t["exceptions"][0]["resolved_at"] == AT
    # the worklist by owner
    assert [r["id"] for r in e.store.search(owner="ana")] == [1] and e.store.search(owner="bob") == []
    # re-assigning keeps who had it before
    coordinator.assign(conn, 1, "bob", "lead.kim", AT)
    assert e.referral()["events"][-1]["from_value"] == "ana"


def test_a_reopened_referral_follows_messages_again(store_url):
    e = Engine(store_url)
    e.send(order())
    e.send(siu("appointment.booked"))
    e.send(siu("appointment.no_show", event_time="2025-03-24T11:00:00"))
    coordinator.set_status(e.journal.conn, 1, "ready", "ana", "patient asked for a new date", AT)
    e.send(siu("appointment.rescheduled", start="2025-04-02T09:00:00"))
    assert e.history() == [(None, "ready"), ("ready", "scheduled"), ("scheduled", "no_show"), ("no_show", "ready"),
                           ("ready", "scheduled")]
    assert [h["cause_kind"] for h in e.referral()["history"]] == ["message"] * 3 + ["user", "message"]


@pytest.mark.parametrize("current, to, says", [
    (S.SCHEDULED, "ready", "scheduled -> ready is not a coordinator action; from scheduled a coordinator may "
                           "set: canceled"),
    (S.READY, "scheduled", "(scheduled comes from the scheduling system's SIU messages); from ready a coordinator "
                           "may set: canceled, declined, rejected"),
    (S.SCHEDULED, "completed", "completed comes from a visit-completed or consult-note message"),
    (S.COMPLETED, "closed", "a completed referral cannot be changed by hand"),
    (S.CLOSED, "ready", "a closed referral cannot be changed by hand"),
    (S.NO_SHOW, "declined", "from no_show a coordinator may set: canceled, ready"),
    (S.READY, "lost", "'lost' is not a referral status"),
    (S.READY, "ready", "ready -> ready is not a coordinator action"),
    (S.INCOMPLETE, "ready", "needs a reason"),
])
def test_refused_transitions_name_the_allowed_ones(current, to, says):
    with pytest.raises(ManualTransitionRefused) as refused:
        manual_transition(current, to, "" if says == "needs a reason" else "why")
    assert says in str(refused.value)
    assert refused.value.allowed == tuple(sorted(MANUAL_TRANSITIONS[current]))


def test_manual_transitions_are_moves_the_engine_may_make_and_never_the_messages_own():
    for current, allowed in MANUAL_TRANSITIONS.items():
        assert allowed <= TRANSITIONS[current], current
        assert not allowed & {S.SCHEDULED, S.COMPLETED, S.CLOSED, S.LEAKED}
    assert set(MANUAL_TRANSITIONS) == set(ReferralStatus)
    for current in (S.RECEIVED, S.NEEDS_REVIEW, S.INCOMPLETE):
        assert manual_transition(current, "ready", "reviewed").to == S.READY
    assert manual_transition(S.CANCELED, "ready", " reopen ").detail == "reopen"


def test_refused_or_unknown_actions_write_nothing(store_url):
    e = Engine(store_url)
    e.send(order())
    e.send(siu("appointment.booked"))
    conn = e.journal.conn
    before = e.referral()
    with pytest.raises(ManualTransitionRefused, match="may set: canceled"):
        coordinator.set_status(conn, 1, "ready", "ana", "try", AT)
    with pytest.raises(UnknownReferral, match="no referral with id 99"):
        coordinator.set_status(conn, 99, "canceled", "ana", "x", AT)
    with pytest.raises(UnknownReferral):
        coordinator.assign(conn, 99, "ana", "ana", AT)
    with pytest.raises(UnknownReferral):
        coordinator.set_next_action(conn, 99, "x", None, "ana", AT)
    with pytest.raises(InvalidDue, match="use YYYY-MM-DD"):
        coordinator.set_next_action(conn, 1, "x", "next tuesday", "ana", AT)
    with pytest.raises(UnknownException, match="no review exception with id 5"):
        coordinator.resolve_exception(conn, 5, "ana")
    assert e.referral() == before
    assert not conn.in_transaction


def test_an_exception_resolves_once(store_url):
    e = Engine(store_url)
    e.send(order())
    e.send(Mapped(event="referral.cancel", placer_order_number=PLACER))
    e.send(note())
    [exc] = e.referral()["exceptions"]
    coordinator.resolve_exception(e.journal.conn, exc["id"], "ana", at=AT)
    with pytest.raises(ExceptionAlreadyResolved, match=re.escape(f"resolved at {AT} by ana")):
        coordinator.resolve_exception(e.journal.conn, exc["id"], "bob")
    assert len(e.referral()["events"]) == 1 and e.referral()["referral"]["status"] == "canceled"


def test_due_dates_are_stored_as_iso():
    assert parse_due("2026-12-01") == "2026-12-01"
    assert parse_due("2026-12-01T09:00+01:00") == "2026-12-01T08:00:00+00:00"
    assert parse_due(None) is None and parse_due(" ") is None
    for bad in ("2026-13-01", "12/01/2026", "tomorrow"):
        with pytest.raises(InvalidDue):
            parse_due(bad)


def test_a_user_action_waits_for_the_engines_writer(store_url):
    """The single-writer discipline: the action's BEGIN IMMEDIATE waits (SQLite's busy_timeout, or
    PostgreSQL's advisory write lock) while another connection holds the write lock, then commits; it
    never fails with 'database is locked'."""
    e = Engine(store_url)
    e.send(order())
    writer = open_store(store_url)
    writer.execute("BEGIN IMMEDIATE")
    user = Journal(store_url)
    done: list = []
    thread = threading.Thread(target=lambda: done.append(coordinator.assign(user.conn, 1, "ana", "ana")))
    thread.start()
    time.sleep(0.3)
    assert done == []                                  # waiting for the lock, not failed
    writer.execute("COMMIT")
    thread.join(10)
    assert done and done[0]["owner"] == "ana"
    writer.close()
    user.close()


# ---- property: messages and coordinator actions mixed ---------------------------------------------

message_step = st.tuples(st.just("message"), st.sampled_from(SEQ_EVENTS), st.booleans())
user_step = st.tuples(st.just("user"), st.integers(0, 5), st.sampled_from(list(ReferralStatus)))


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.one_of(message_step, user_step), max_size=14), complete=st.booleans())
def test_messages_and_user_actions_keep_one_history_row_per_change(fresh_store, steps, complete):
    with fresh_store() as location:
        e = Engine(location)
        e.send(order() if complete else order(insurance=[]))
        changes, by_user = 1, 0
        for kind, a, b in steps:
            before = S(e.store.get(1)["status"])
            if kind == "message":
                e.send(Mapped(event=a, placer_order_number=PLACER,
                              appointment=Appointment(placer_id="A1" if b else f"A{e.n}"),
                              insurance=[Insurance(member_id="M1")] if a == "referral.update" else []))
            else:
                allowed = sorted(MANUAL_TRANSITIONS[before])
                if b in allowed:
                    target = b
                elif allowed:
                    target = allowed[a % len(allowed)]
                else:
                    target = None
                if target is None or b not in allowed and a == 5:     # sometimes try a refused one
                    with pytest.raises(ManualTransitionRefused):
                        coordinator.set_status(e.journal.conn, 1, b, "ana", "random", AT)
                else:
                    coordinator.set_status(e.journal.conn, 1, target, "ana", "random", AT)
                    by_user += 1
            after = S(e.store.get(1)["status"])
            changes += after != before
        t = e.referral()
        history = t["history"]
        assert len(history) == changes
        assert sum(h["cause_kind"] == "user" for h in history) == by_user
        assert all(a["to_status"] == b["from_status"] for a, b in zip(history, history[1:]))
        assert all(S(h["to_status"]) in TRANSITIONS[None if h["from_status"] is None else S(h["from_status"])]
                   for h in history)
        assert history[-1]["to_status"] == t["referral"]["status"]
        e.journal.close()


# ---- the CLI, end to end, while the engine runs and receives the cardiology story ------------------

def test_cli_coordinator_commands_on_the_cardiology_story(make_engine, tmp_path):
    from typer.testing import CliRunner

    import run_engine
    engine = story_engine(make_engine, tmp_path)
    send_samples(engine, CARDIOLOGY_STORY[:3])                 # ORM, S12, S13: scheduled
    config = str(tmp_path / "config.yaml")
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(run_engine.app, [*args, "--config", config])
        assert result.exit_code == code, result.output
        return result

    def cli(*args):
        return run(*args).stdout

    [referral] = json.loads(cli("referrals", "--json"))["referrals"]
    rid = str(referral["id"])
    assert referral["status"] == "scheduled"
    assert "owner ana" in cli("assign", rid, "--owner", "ana", "--by", "lead.kim")
    shown = json.loads(cli("next-action", rid, "--text", "confirm transport", "--due", "2026-12-01", "--by", "ana",
                           "--json"))["referral"]
    assert (shown["next_action"], shown["next_action_due"]) == ("confirm transport", "2026-12-01")
    refused = run("set-status", rid, "ready", "--by", "ana", "--reason", "x", code=2)
    assert "from scheduled a coordinator may set: canceled" in refused.output
    assert f"referral {rid}: canceled; owner ana" in cli("set-status", rid, "canceled", "--by", "ana", "--reason",
                                                         "patient moved away")
    send_samples(engine, ["SIU_S14_v2.5.1.hl7"])              # the visit completes on a canceled referral
    timeline = json.loads(cli("referral", rid, "--json"))
    [exc] = timeline["exceptions"]
    assert exc["reason"] == "visit completed on a canceled referral" and exc["resolved_at"] is None
    assert f"#{exc['id']}" in cli("referral", rid) and "OPEN" in cli("referral", rid)
    assert "resolved by ana: the visit did happen" in cli("resolve-exception", str(exc["id"]), "--by", "ana",
                                                          "--note", "the visit did happen")
    assert "was resolved at" in run("resolve-exception", str(exc["id"]), "--by", "ana", code=2).output
    assert json.loads(cli("set-status", rid, "ready", "--by", "ana", "--reason", "reopened after the visit",
                          "--json"))["referral"]["status"] == "ready"

    timeline = json.loads(cli("referral", rid, "--json"))
    assert [(h["from_status"], h["to_status"], h["cause_kind"]) for h in timeline["history"]] == [
        (None, "ready", "message"), ("ready", "scheduled", "message"), ("scheduled", "canceled", "user"),
        ("canceled", "ready", "user")]
    assert [ev["kind"] for ev in timeline["events"]] == ["owner", "next_action", "exception_resolved"]
    text = cli("referral", rid)
    for expected in ("owner                 ana", "next_action           confirm transport",
                     "next_action_due       2026-12-01", "--- coordinator events ---", "patient moved away",
                     "resolved", "user ana"):
        assert expected in text, expected
    assert [r["id"] for r in json.loads(cli("referrals", "--owner", "ana", "--json"))["referrals"]] == [int(rid)]
    assert "no referral with id 999" in run("assign", "999", "--owner", "x", "--by", "y", code=2).output
    assert "no review exception with id 999" in run("resolve-exception", "999", "--by", "y", code=2).output
    assert "use YYYY-MM-DD" in run("next-action", rid, "--text", "x", "--due", "soon", "--by", "y", code=2).output
    engine.wait_processed()
    journal = engine.journal()
    assert journal.counts() == {"transformed": 4}
    journal.close()

"""The outbound queue (engine/outbound.py) on a real store (SQLite, PostgreSQL): order, retries, dead letters,
resend."""
from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from engine import outbound
from engine.outbound import Outbound
from engine.store import Journal
from tests.conftest import open_store

pytestmark = pytest.mark.store

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


def at(seconds: float = 0) -> str:
    return outbound.now_iso(T0 + timedelta(seconds=seconds))


@pytest.fixture
def conn(store_url):
    Journal(store_url).close()
    c = open_store(store_url)
    c.row_factory = sqlite3.Row        # rows by name on SQLite too (PostgreSQL's always are)
    yield c
    c.close()


def put(conn, n: int, destination: str = "ehr", patient: str | None = None, order: str = "per_destination",
        **kw) -> list[int]:
    return [outbound.enqueue(conn, Outbound(destination, "SIU^S12", f"MSH|{i}".encode(), control_id=f"C{i}",
                                            patient_key=patient, **kw), order=order, at=at())
            for i in range(n)]


def claim(conn, destination="ehr", seconds: float = 0, limit: int = 64) -> list[int]:
    return [r["id"] for r in outbound.claim_due(conn, destination, limit=limit, now=at(seconds))]


def fail(conn, row_id, seconds: float = 0, dead: bool = False, max_attempts: int = 5) -> str:
    return outbound.record_failure(conn, row_id, "peer down", None, dead=dead, max_attempts=max_attempts,
                                   backoff=2.0, max_backoff=60.0, at=at(seconds))


def test_rows_are_claimed_in_order_and_not_twice(conn):
    ids = put(conn, 5)
    assert claim(conn, limit=3) == ids[:3]
    assert claim(conn) == []                     # the head is in flight: later rows wait behind it
    for i in ids[:3]:
        assert outbound.record_sent(conn, i, "MSA|AA|x", at())
    assert claim(conn) == ids[3:]


def test_a_failed_row_holds_back_its_destination_until_its_retry_time(conn):
    ids = put(conn, 3)
    claim(conn)
    outbound.release(conn, ids[1:], at())        # the delivery loop gives back the rest of the batch
    assert fail(conn, ids[0]) == "error"
    assert claim(conn, seconds=1) == []          # backoff 2 s: nothing may overtake the failed head
    assert outbound.next_due(conn, "ehr") == at(2)
    assert claim(conn, seconds=2.1) == ids       # due again, still first
    row = outbound.get(conn, ids[0])
    assert row["attempts"] == 1 and row["last_error"] == "peer down" and row["status"] == "sending"


def test_backoff_doubles_and_dead_after_max_attempts(conn):
    [row_id] = put(conn, 1)
    dues = []
    for attempt in range(1, 5):
        claim(conn, seconds=1000 * attempt)
        assert fail(conn, row_id, seconds=1000 * attempt, max_attempts=5) == "error"
        dues.append((datetime.fromisoformat(outbound.get(conn, row_id)["next_attempt_at"]) - T0).total_seconds()
                    - 1000 * attempt)
    assert dues == [2, 4, 8, 16]
    claim(conn, seconds=9000)
    assert fail(conn, row_id, seconds=9000, max_attempts=5) == "dead"
    assert outbound.dead_letters(conn)[0]["id"] == row_id


def test_a_dead_row_does_not_block_the_rest(conn):
    ids = put(conn, 3)
    claim(conn, limit=1)
    assert fail(conn, ids[0], dead=True) == "dead"
    assert claim(conn) == ids[1:]


def test_per_patient_order_lets_other_patients_pass_a_failing_one(conn):
    a = put(conn, 2, patient="A", order="per_patient")
    b = put(conn, 2, patient="B", order="per_patient")
    assert claim(conn, limit=1) == [a[0]]
    fail(conn, a[0])
    assert claim(conn) == b                       # B's messages go; A's second waits behind A's first
    assert outbound.get(conn, a[1])["status"] == "queued"


def test_the_dedupe_key_makes_enqueue_idempotent(conn):
    first = put(conn, 1, dedupe_key="rule1:msg7")
    assert first[0] is not None
    assert put(conn, 1, dedupe_key="rule1:msg7") == [None]
    assert conn.execute("SELECT count(*) FROM outbound").fetchone()[0] == 1


def test_claims_of_a_dead_worker_come_back_after_the_lease(conn):
    ids = put(conn, 2)
    outbound.claim_due(conn, "ehr", now=at(), worker="node-a", lease_seconds=30)
    assert outbound.release_expired(conn, now=at(10)) == 0
    assert outbound.release_expired(conn, now=at(31)) == 2
    assert claim(conn, seconds=31) == ids
    # and a restarting node takes back its own claims at once
    assert outbound.release_expired(conn, now=at(32), worker="local") == 2


def test_resend_queues_a_dead_or_sent_row_again_with_the_same_control_id(conn):
    [row_id] = put(conn, 1)
    claim(conn)
    fail(conn, row_id, dead=True)
    assert outbound.resend(conn, row_id, at(5))
    row = outbound.get(conn, row_id)
    assert (row["status"], row["attempts"], row["control_id"]) == ("queued", 0, "C0")
    assert claim(conn, seconds=5) == [row_id]
    assert not outbound.resend(conn, row_id)      # being sent right now
    assert not outbound.resend(conn, 999)


def test_queue_depths_per_destination(conn):
    put(conn, 3, "ehr")
    put(conn, 1, "fax")
    claim(conn, "fax")
    depths = {d["destination"]: d for d in outbound.queue_depths(conn)}
    assert (depths["ehr"]["queued"], depths["fax"]["sending"]) == (3, 1)
    assert depths["ehr"]["oldest_owed"] == at()


def test_a_patient_with_a_long_backlog_does_not_starve_the_others(conn):
    a = put(conn, 300, patient="A", order="per_patient")
    claim(conn, limit=1)
    fail(conn, a[0])                              # A's head waits for its retry; 299 more of A behind it
    [b] = put(conn, 1, patient="B", order="per_patient")
    assert claim(conn, seconds=1) == [b]


def test_a_message_held_for_later_holds_nothing_back(conn):
    [held] = [outbound.enqueue(conn, Outbound("mail", "email", b"{}", rule="appointment_reminder"),
                               at=at(), due=at(3600))]       # quiet hours: due in an hour
    later = put(conn, 2, destination="mail")
    assert claim(conn, "mail") == later           # the note-chase e-mails go now
    assert claim(conn, "mail", seconds=3601) == [held]

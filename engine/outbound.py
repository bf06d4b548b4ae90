"""The durable outbound queue: one row per message the engine owes a destination.

A row is written in the same transaction as the referral change that caused it
(a transactional outbox), so a status change and the messages it owes are
never separated by a crash. Delivery is at-least-once: a row is resent with the
same MSH-10 until its destination confirms it, so receivers can de-duplicate.

Row statuses: `queued` (due at `next_attempt_at`), `sending` (claimed by a
delivery worker), `sent` (confirmed), `error` (the last attempt failed; due
again at `next_attempt_at`), `dead` (gave up: refused, or `max_attempts`
reached; `resend` queues it again).

Order: rows with the same `order_key` are delivered in id order; a row that is
not yet delivered (queued/sending/error) holds back every later row of its key.
The key is the destination (`per_destination`) or destination + patient
(`per_patient`, so one patient's failing message does not stop the others).
A dead row holds nothing back: one poison message must not stop a destination;
the dead-letter list shows it.

`dedupe_key` makes enqueueing idempotent: a rule or a schedule that fires twice
for the same cause (a replayed message, a job run after a restart) adds nothing.
All SQL here runs on both store backends (engine.db); callers own the transaction.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlite_utils

from engine.db import any_of
from engine.store import now_iso  # noqa: F401 (re-exported: callers use outbound.now_iso)

STATUSES = ("queued", "sending", "sent", "error", "dead")
PENDING = ("queued", "sending", "error")


def migrate_outbound(db: sqlite_utils.Database) -> None:
    """Migration 4: the outbound queue, and what referrals need to close the loop and age."""
    db["outbound"].create({
        "id": int, "destination": str, "order_key": str, "referral_id": int, "source_message_id": int,
        "rule": str, "dedupe_key": str, "message_type": str, "control_id": str, "payload": bytes,
        "status": str, "attempts": int, "next_attempt_at": str, "last_error": str, "ack": str,
        "closes_loop": int, "created_at": str, "updated_at": str, "sent_at": str,
        "claimed_by": str, "lease_until": str,
    }, pk="id", not_null={"destination", "order_key", "message_type", "payload", "status", "created_at"},
        defaults={"attempts": 0, "closes_loop": 0})
    t = db["outbound"]
    t.create_index(["destination", "status", "id"])      # claims and depths
    t.create_index(["status", "next_attempt_at"])
    t.create_index(["referral_id", "id"])                 # the referral timeline
    t.create_index(["control_id"])
    t.create_index(["dedupe_key"], unique=True)          # NULLs are distinct: only keyed rows are unique
    r = db["referrals"]
    r.add_column("origin", str)               # hl7 | fax: how the referral came, so how to answer
    r.add_column("escalated_at", str)         # the aging sweep's last escalation
    r.add_column("escalation_level", int)
    db["appointments"].add_column("reminded_at", str)


@dataclass(frozen=True, slots=True)
class Outbound:
    """A message to enqueue."""
    destination: str
    message_type: str
    payload: bytes
    control_id: str | None = None
    referral_id: int | None = None
    source_message_id: int | None = None
    rule: str | None = None
    dedupe_key: str | None = None
    patient_key: str | None = None     # for per_patient ordering
    closes_loop: bool = False


def order_key(item: Outbound, order: str) -> str:
    if order == "per_patient" and item.patient_key:
        return f"{item.destination}|{item.patient_key}"
    return item.destination


def enqueue(conn: sqlite3.Connection, item: Outbound, *, order: str = "per_destination",
            at: str | None = None, due: str | None = None) -> int | None:
    """Add one row, due at `due` (default now); returns its id, or None when `dedupe_key` says it was
    enqueued before."""
    at = at or now_iso()
    cur = conn.execute(
        "INSERT INTO outbound (destination, order_key, referral_id, source_message_id, rule, dedupe_key, "
        "message_type, control_id, payload, status, attempts, next_attempt_at, closes_loop, created_at, updated_at) "
        "VALUES (?,?,?,?,?,?,?,?,?,'queued',0,?,?,?,?) ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        (item.destination, order_key(item, order), item.referral_id, item.source_message_id, item.rule,
         item.dedupe_key, item.message_type, item.control_id, item.payload, due or at, int(item.closes_loop), at, at))
    row = cur.fetchone()            # no row: the dedupe key was enqueued before
    return row[0] if row else None


def claim_due(conn: sqlite3.Connection, destination: str, *, limit: int = 64, now: str | None = None,
              worker: str = "local", lease_seconds: float = 300.0, max_scan: int = 20_000) -> list[sqlite3.Row]:
    """Claim up to `limit` rows of `destination` that may be sent now, in id order, as 'sending'.

    A row may be sent when it is due and no earlier row of its order key is still owed, except rows
    claimed in this same call before it (the caller sends them in order and releases the rest of a
    key when one fails). An order key never spans destinations, so the scan in id order sees every
    earlier row of a key before the key's later rows. A row held for later on purpose (never tried,
    due in the future: outreach waiting for the end of quiet hours) holds nothing back.
    Bound: reads the owed rows of the destination in pages of 4×limit, at most `max_scan` rows, and
    stops at once when the destination-wide key (`per_destination`) is blocked.
    The caller commits; a crashed worker's rows come back after `lease_seconds` (`release_expired`)."""
    now = now or now_iso()
    blocked: set[str] = set()
    claimed: list = []
    after, scanned, page = 0, 0, limit * 4
    while len(claimed) < limit and scanned < max_scan:
        # The owed rows in id order straight off the partial index `outbound_owed` (no payloads, no sort).
        rows = conn.execute(
            "SELECT id, order_key, status, next_attempt_at, attempts FROM outbound INDEXED BY outbound_owed "
            "WHERE destination=? AND status IN ('queued','sending','error') AND id>? ORDER BY id LIMIT ?",
            (destination, after, page)).fetchall()
        for row in rows:
            key = row["order_key"]
            if key in blocked:
                continue
            if row["status"] != "sending" and row["attempts"] == 0 and row["next_attempt_at"] > now:
                continue            # held for later on purpose: not a reason to hold back the others
            if row["status"] == "sending" or row["next_attempt_at"] > now:
                blocked.add(key)    # in flight, or waiting for its retry: later rows of its key wait
                continue
            claimed.append(row)
            if len(claimed) == limit:
                break
        if len(rows) < page or destination in blocked:
            break
        after, scanned = rows[-1]["id"], scanned + len(rows)
    if not claimed:
        return []
    lease = now_iso(datetime.fromisoformat(now) + timedelta(seconds=lease_seconds))
    ids = [r[0] for r in claimed]
    conn.executemany("UPDATE outbound SET status='sending', claimed_by=?, lease_until=?, updated_at=? "
                     "WHERE id=?", [(worker, lease, now, i) for i in ids])
    match, param = any_of(conn, ids)
    return conn.execute(f"SELECT * FROM outbound WHERE id {match} ORDER BY id", (param,)).fetchall()


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Exponential: base, 2×base, 4×base ... capped."""
    return min(cap, base * (2 ** max(0, attempts - 1)))


def record_sent(conn: sqlite3.Connection, outbound_id: int, ack: str | None, at: str | None = None) -> bool:
    at = at or now_iso()
    return bool(conn.execute(
        "UPDATE outbound SET status='sent', attempts=attempts+1, ack=?, last_error=NULL, sent_at=?, updated_at=?, "
        "claimed_by=NULL, lease_until=NULL WHERE id=? AND status!='sent'", (ack, at, at, outbound_id)).rowcount)


def record_failure(conn: sqlite3.Connection, outbound_id: int, detail: str | None, ack: str | None, *,
                   dead: bool, max_attempts: int, backoff: float, max_backoff: float,
                   at: str | None = None) -> str:
    """One failed attempt: 'error' with the next attempt time, or 'dead' (refused, or out of attempts).
    Returns the new status."""
    at = at or now_iso()
    row = conn.execute("SELECT attempts FROM outbound WHERE id=?", (outbound_id,)).fetchone()
    attempts = (row[0] if row else 0) + 1
    status = "dead" if dead or attempts >= max_attempts else "error"
    due = now_iso(datetime.fromisoformat(at) + timedelta(seconds=backoff_seconds(attempts, backoff, max_backoff)))
    conn.execute("UPDATE outbound SET status=?, attempts=?, last_error=?, ack=?, next_attempt_at=?, updated_at=?, "
                 "claimed_by=NULL, lease_until=NULL WHERE id=? AND status!='sent'",
                 (status, attempts, detail, ack, due, at, outbound_id))
    return status


def release(conn: sqlite3.Connection, ids: list[int], at: str | None = None, worker: str | None = None) -> None:
    """Give claimed rows back unsent (shutdown, or an earlier row of their key failed). With `worker`,
    only rows that worker still holds: a row whose lease ran out while this worker was slow may have been
    claimed by another node since, and is being sent there (releasing it would let a third claim send it
    again, out of order)."""
    at = at or now_iso()
    mine = " AND claimed_by=?" if worker is not None else ""
    conn.executemany("UPDATE outbound SET status=CASE WHEN attempts>0 THEN 'error' ELSE 'queued' END, "
                     f"claimed_by=NULL, lease_until=NULL, updated_at=? WHERE id=? AND status='sending'{mine}",
                     [(at, i, worker) if worker is not None else (at, i) for i in ids])


def release_expired(conn: sqlite3.Connection, now: str | None = None, worker: str | None = None) -> int:
    """Rows left 'sending' by a worker that died (lease expired), or all of `worker`'s at its start-up."""
    now = now or now_iso()
    if worker is not None:
        where, args = "status='sending' AND (claimed_by=? OR lease_until<?)", (worker, now)
    else:
        where, args = "status='sending' AND lease_until<?", (now,)
    return conn.execute(f"UPDATE outbound SET status=CASE WHEN attempts>0 THEN 'error' ELSE 'queued' END, "
                        f"claimed_by=NULL, lease_until=NULL WHERE {where}", args).rowcount


def resend(conn: sqlite3.Connection, outbound_id: int, at: str | None = None) -> bool:
    """Queue a row again now (dead, error or sent), keeping its payload and MSH-10. False if no such row."""
    at = at or now_iso()
    return bool(conn.execute(
        "UPDATE outbound SET status='queued', next_attempt_at=?, attempts=0, last_error=NULL, updated_at=?, "
        "claimed_by=NULL, lease_until=NULL WHERE id=? AND status!='sending'", (at, at, outbound_id)).rowcount)


def next_due(conn: sqlite3.Connection, destination: str, scan: int = 1000) -> str | None:
    """When the destination's worker should look again: the earliest due time among the heads of its
    order keys (a later row of a key waits for its head, whatever its own time). None: nothing owed,
    or only rows in flight. Bound: looks at the first `scan` owed rows."""
    heads: dict[str, str | None] = {}
    for key, status, due in conn.execute(
            "SELECT order_key, status, next_attempt_at FROM outbound INDEXED BY outbound_owed WHERE destination=? "
            "AND status IN ('queued','sending','error') ORDER BY id LIMIT ?", (destination, scan)):
        if key not in heads:
            heads[key] = None if status == "sending" else due
    times = [t for t in heads.values() if t]
    return min(times) if times else None


def queue_depths(conn: sqlite3.Connection) -> list[dict]:
    """Per destination: rows per status, oldest owed row's age source, last error."""
    out: dict[str, dict] = {}
    for destination, status, n, oldest in conn.execute(
            "SELECT destination, status, count(*), min(created_at) FROM outbound "
            "WHERE status IN ('queued','sending','error','dead') GROUP BY destination, status"):
        d = out.setdefault(destination, {"destination": destination, **{s: 0 for s in STATUSES if s != "sent"},
                                         "oldest_owed": None})
        d[status] = n
        if status in PENDING and oldest and (d["oldest_owed"] is None or oldest < d["oldest_owed"]):
            d["oldest_owed"] = oldest
    for d in out.values():
        row = conn.execute("SELECT last_error FROM outbound WHERE destination=? AND status IN ('error','dead') "
                           "AND last_error IS NOT NULL ORDER BY id DESC LIMIT 1", (d["destination"],)).fetchone()
        d["last_error"] = row[0] if row else None
    return sorted(out.values(), key=lambda d: d["destination"])


def dead_letters(conn: sqlite3.Connection, limit: int = 100, destination: str | None = None) -> list[dict]:
    where, args = "status='dead'", []
    if destination:
        where += " AND destination=?"
        args.append(destination)
    return [dict(r) for r in conn.execute(
        f"SELECT id, destination, referral_id, message_type, control_id, attempts, last_error, ack, created_at, "
        f"updated_at FROM outbound WHERE {where} ORDER BY id DESC LIMIT ?", (*args, limit))]


def listing(conn: sqlite3.Connection, *, status: str | None = None, destination: str | None = None,
            referral_id: int | None = None, before_id: int | None = None, limit: int = 50) -> list[dict]:
    """Rows newest first (keyset paging by id), without payloads."""
    where, args = [], []
    for column, value in (("status", status), ("destination", destination), ("referral_id", referral_id)):
        if value is not None:
            where.append(f"{column}=?")
            args.append(value)
    if before_id is not None:
        where.append("id<?")
        args.append(before_id)
    sql = ("SELECT id, destination, referral_id, source_message_id, rule, message_type, control_id, status, attempts, "
           "next_attempt_at, last_error, ack, closes_loop, created_at, sent_at FROM outbound")
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [dict(r) for r in conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))]


def get(conn: sqlite3.Connection, outbound_id: int) -> dict | None:
    row = conn.execute("SELECT * FROM outbound WHERE id=?", (outbound_id,)).fetchone()
    return dict(row) if row else None

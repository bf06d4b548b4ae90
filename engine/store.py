"""The engine's store: the message journal (and, as the engine grows, referrals and queues).

SQLite in WAL mode is the embedded default; PostgreSQL serves several nodes
(engine/db.py: one interface, the same SQL). One writer connection per engine
belongs to the group-commit thread (`append_frames`); readers (CLI, processor,
web) open their own connections, which WAL (or PostgreSQL) lets run beside it.

Durability: `synchronous=FULL` (the default) fsyncs the WAL at every commit, so a
message whose ACK said AA survives a crash of the process *and* of the machine.
`NORMAL` survives a process crash but may lose the last commits on power loss.

Schema changes are numbered migrations (SQLite: PRAGMA user_version; PostgreSQL:
the schema_version table); a database from an older release is upgraded at open,
and a newer one is refused by name.
"""
from __future__ import annotations

import hashlib
from contextlib import contextmanager
import logging
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import sqlite_utils

from engine import db as backend
from engine.db import StoreError, connect, dialect  # noqa: F401 (re-exported: the store's public names)

log = logging.getLogger("engine.store")

WAL_SIZE_LIMIT = 64 * 1024 * 1024

STATUSES = ("received", "duplicate", "filtered", "transformed", "queued", "sent", "error")


@dataclass(slots=True)
class InboundMessage:
    """One received message as the hot path hands it to the journal."""
    channel: str
    received_at: str
    peer: str
    raw: bytes
    content_hash: str
    status: str                      # 'received', or 'error' when it was refused
    ack_code: str
    control_id: str | None = None
    sender: str | None = None
    message_type: str | None = None
    version: str | None = None
    charset: str | None = None
    patient_id: str | None = None
    error: str | None = None
    warnings: str | None = None


@dataclass(frozen=True, slots=True)
class WriterTask:
    """Work from outside the message pipeline (delivery results, queue claims, schedules, coordinator
    actions) run by the single journal writer inside its transaction: `run(conn)` returns the result."""
    name: str
    run: Callable[[sqlite3.Connection], Any]


@dataclass(frozen=True, slots=True)
class StatusChange:
    """Move a message out of 'received' after processing; `reason` says why (error, filter).

    `mapped` (an engine.normalized.Mapped) is what the mapping made of a 'transformed' message: the
    writer applies it to its referral in the same transaction (engine.referrals.apply_message)."""
    id: int
    status: str
    reason: str | None = None
    mapped: object | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    id: int
    duplicate_of: int | None = None
    control_id_reused: bool = False


def _migrate_1(db: sqlite_utils.Database) -> None:
    db["messages"].create({
        "id": int, "channel": str, "received_at": str, "peer": str, "control_id": str, "sender": str,
        "message_type": str, "version": str, "charset": str, "patient_id": str, "raw": bytes,
        "content_hash": str, "status": str, "ack_code": str, "error": str, "warnings": str,
        "duplicate_of": int, "updated_at": str,
    }, pk="id", not_null={"channel", "received_at", "raw", "status"})
    table = db["messages"]
    table.create_index(["control_id", "sender"])   # search by control id; duplicate detection
    table.create_index(["patient_id"])
    table.create_index(["status", "id"])
    table.create_index(["message_type", "received_at"])
    table.create_index(["received_at"])


def _migrate_2(db: sqlite_utils.Database) -> None:
    from engine.referral_store import migrate_referrals
    migrate_referrals(db)


def _migrate_3(db: sqlite_utils.Database) -> None:
    from engine.referral_store import migrate_coordinator
    migrate_coordinator(db)


def _migrate_4(db: sqlite_utils.Database) -> None:
    from engine.outbound import migrate_outbound
    migrate_outbound(db)


def _migrate_5(db: sqlite_utils.Database) -> None:
    from engine.fax_intake import migrate_faxes
    migrate_faxes(db)


def _migrate_6(db: sqlite_utils.Database) -> None:
    from engine.web.schema import migrate_web
    migrate_web(db)


def _migrate_7(db: sqlite_utils.Database) -> None:
    from engine.payers import migrate_payers
    migrate_payers(db)


def _migrate_8(db: sqlite_utils.Database) -> None:
    from engine.rules import migrate_triggers
    migrate_triggers(db)


def _migrate_9(db) -> None:
    """Several nodes on one PostgreSQL store: which node received each message, and which one claimed it
    for processing (Journal.next_batch)."""
    db["messages"].add_column("received_by", str)
    db["messages"].add_column("claimed_by", str)
    db["messages"].add_column("claim_until", str)


def _migrate_10(db) -> None:
    from engine.schedules import migrate_schedule_runs
    migrate_schedule_runs(db)


def _migrate_11(db) -> None:
    """Every order message applied to a referral asks whether the referral was canceled
    (ReferralStore.order_canceled): an index on the few cancel rows, not a walk over all of its messages."""
    db.execute("CREATE INDEX IF NOT EXISTS idx_referral_messages_cancel ON referral_messages (referral_id) "
               "WHERE event='referral.cancel' AND outcome='applied'")


MIGRATIONS = [(1, _migrate_1), (2, _migrate_2), (3, _migrate_3), (4, _migrate_4), (5, _migrate_5), (6, _migrate_6),
              (7, _migrate_7), (8, _migrate_8), (9, _migrate_9), (10, _migrate_10), (11, _migrate_11)]
SCHEMA_VERSION = MIGRATIONS[-1][0]


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One short `BEGIN IMMEDIATE` transaction on a connection outside the journal writer (CLI, web):
    it waits for the writer's commit (busy_timeout), holds the lock for a few statements, and rolls back
    on any error. (`with conn:` would not begin one: connections here run with isolation_level=None.)"""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


_this_second: tuple[int, str] = (-1, "")


def now_iso(at: datetime | None = None) -> str:
    """UTC ISO 8601 with microseconds, the one format every stored time uses (now, or `at`).

    Now is asked for twice per inbound message (received, ACK): the date and time of day are formatted
    once per second, not by datetime each time (~4 µs, 9 % of the event loop's work at 2,000 msg/s)."""
    global _this_second
    if at is not None:
        return at.astimezone(timezone.utc).isoformat(timespec="microseconds")
    second, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    cached = _this_second
    if cached[0] != second:
        cached = _this_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{nanoseconds // 1000:06d}+00:00"


def migrate(conn, location) -> None:
    """Bring the store at `location` up to SCHEMA_VERSION (engine.db.migrate: both backends)."""
    backend.migrate(conn, location, MIGRATIONS, SCHEMA_VERSION)


class Journal:
    """Reads and writes of the message journal over one store connection (SQLite or PostgreSQL)."""

    def __init__(self, location: backend.Location, synchronous: str = "FULL", duplicate_window_hours: float = 168.0,
                 readonly: bool = False, referral_rules=None, after_apply=None, node: str | None = None):
        self.location = location     # a SQLite file, or a postgresql:// URL (engine.db)
        self.postgres = backend.is_postgres(location)
        self.referral_rules = referral_rules    # engine.config.ReferralsConfig; None = the defaults
        # Called as after_apply(conn, message_id, applied) inside the transaction that applied a message
        # to its referral: the outbound rules queue what the change owes (engine.rules.OutboundPlanner).
        self.after_apply = after_apply
        self.node = node             # recorded on each message this engine receives (several nodes: which one)
        self.conn = connect(location, synchronous, readonly)
        if not readonly:
            migrate(self.conn, location)
        elif self.postgres and backend.schema_version(self.conn) == 0:
            # As a missing SQLite file does (engine.db): a database the engine never set up is refused by
            # name, instead of a reader failing later on its first query with "relation does not exist".
            self.conn.close()
            raise StoreError(f"{backend.describe(location)}: no store here (has the engine run with this config?)")
        if not readonly and not self.postgres:
            # SQLite checkpoints inside the commit that crosses 1,000 WAL pages (a few ms, now and then).
            # It must be the writer: a checkpoint from another connection never catches up with a busy
            # writer, so the WAL would never restart and would grow without bound (measured: 1.4 GB
            # after 250,000 messages). The file is cut back to this size after each restart.
            self.conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        if not self.postgres:
            self.conn.row_factory = sqlite3.Row
        self.duplicate_window = timedelta(hours=duplicate_window_hours)

    def close(self) -> None:
        self.conn.close()

    # ---- writes (the group-commit thread) -------------------------------

    def write(self, items: list) -> list:
        """The group-commit writer's entry: frames (lists of InboundMessage) to append, lists of
        StatusChange to apply, and WriterTasks to run, all in one transaction. Returns one result per
        item, in order (a task's result, or the exception it raised: its own work is rolled back to a
        savepoint, the rest of the transaction commits)."""
        def kind(item) -> str:
            if isinstance(item, WriterTask):
                return "task"
            return "changes" if item and isinstance(item[0], StatusChange) else "frame"
        kinds = [kind(item) for item in items]
        frames = [item for item, k in zip(items, kinds) if k == "frame"]
        changes = [c for item, k in zip(items, kinds) if k == "changes" for c in item]
        tasks = [item for item, k in zip(items, kinds) if k == "task"]
        stored = iter(self.append_frames(frames, commit=not (changes or tasks)) if frames else [])
        changed, done = 0, []
        if changes or tasks:
            if not frames:
                self.conn.execute("BEGIN IMMEDIATE")
            elif self.postgres:        # appends began without the single-writer lock; changes and tasks need it
                self.conn.execute("SELECT pg_advisory_xact_lock(?)", (backend.WRITE_LOCK,))
            try:
                if changes:
                    changed = self._apply(changes)
                done = [self._run_task(task) for task in tasks]
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        results = iter(done)
        return [changed if k == "changes" else next(results) if k == "task" else next(stored) for k in kinds]

    def _run_task(self, task: "WriterTask"):
        self.conn.execute("SAVEPOINT task")
        try:
            result = task.run(self.conn)
        except Exception as exc:
            self.conn.execute("ROLLBACK TO task")
            self.conn.execute("RELEASE task")
            log.error("writer task failed", extra={"fields": {"task": task.name, "error": type(exc).__name__}})
            log.debug("writer task failed", exc_info=True)
            return exc
        self.conn.execute("RELEASE task")
        return result

    def append_frames(self, frames: list[list[InboundMessage]], commit: bool = True) -> list[list[Stored]]:
        """Store every message of every frame in one transaction; returns ids in the same shape.

        A message with the same sender, control id and content as one accepted
        inside the duplicate window (earlier, or earlier in this batch) is stored
        as status 'duplicate' pointing at the original; the same control id with
        other content is stored and processed, with a warning that the sender
        reused the control id. Cost: one indexed look-up for the whole batch,
        one executemany, one commit.
        """
        conn = self.conn
        flat = [m for frame in frames for m in frame]
        conn.execute("BEGIN" if self.postgres else "BEGIN IMMEDIATE")
        try:
            if self.postgres:
                self._lock_control_ids(flat)
            earlier = self._accepted_with_same_control_ids(flat)
            ids = iter(self._new_ids(len(flat)))
            rows, results = [], []
            for frame in frames:
                stored = []
                for m in frame:
                    message_id = next(ids)
                    status, warnings, duplicate_of, reused = m.status, m.warnings, None, False
                    if m.status == "received" and m.control_id:
                        same_id = earlier.setdefault((m.sender, m.control_id), [])
                        duplicate_of = next((i for i, h in same_id if h == m.content_hash), None)
                        if duplicate_of is not None:
                            status = "duplicate"
                        else:
                            if same_id:
                                reused = True
                                note = "control id reused by the sender with different content"
                                warnings = f"{warnings}; {note}" if warnings else note
                            same_id.append((message_id, m.content_hash))
                    rows.append((message_id, m.channel, m.received_at, m.peer, m.control_id, m.sender,
                                 m.message_type, m.version, m.charset, m.patient_id, m.raw, m.content_hash, status,
                                 m.ack_code, m.error, warnings, duplicate_of, m.received_at, self.node))
                    stored.append(Stored(message_id, duplicate_of, reused))
                results.append(stored)
            conn.executemany(
                "INSERT INTO messages (id, channel, received_at, peer, control_id, sender, message_type, version, "
                "charset, patient_id, raw, content_hash, status, ack_code, error, warnings, duplicate_of, "
                "updated_at, received_by) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            if commit:
                conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return results

    def _new_ids(self, count: int) -> list[int]:
        """Ids for `count` new messages. SQLite: after the largest (the write lock is held). PostgreSQL:
        from the table's sequence, so nodes appending at once never collide."""
        if self.postgres:
            return [r[0] for r in self.conn.execute(
                "SELECT nextval(pg_get_serial_sequence('messages', 'id')) FROM generate_series(1, ?)", (count,))]
        first = (self.conn.execute("SELECT max(id) FROM messages").fetchone()[0] or 0) + 1
        return list(range(first, first + count))

    def _lock_control_ids(self, messages: list[InboundMessage]) -> None:
        """PostgreSQL: nodes append at once, so the duplicate check takes a transaction lock per
        (sender, control id), in one order (no deadlock): the same message sent to two nodes is
        stored once as the original and once as its duplicate, never twice as an original."""
        keys = sorted({int.from_bytes(hashlib.blake2b(f"{m.sender}|{m.control_id}".encode(), digest_size=8).digest(),
                                      "big", signed=True)
                       for m in messages if m.status == "received" and m.control_id})
        if keys:
            self.conn.execute("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(? AS BIGINT[])) AS k",
                              ("{" + ",".join(map(str, keys)) + "}",))

    def _accepted_with_same_control_ids(self, messages: list[InboundMessage]) -> dict[tuple, list[tuple]]:
        """(sender, control id) -> [(id, content hash)] of accepted originals inside the duplicate window."""
        wanted = {(m.sender, m.control_id) for m in messages if m.status == "received" and m.control_id}
        found: dict[tuple, list[tuple]] = {}
        if not wanted:
            return found
        cutoff = (datetime.now(timezone.utc) - self.duplicate_window).isoformat(timespec="microseconds")
        among, control_ids = backend.any_of(self.conn, sorted({cid for _, cid in wanted}))
        for message_id, sender, control_id, content_hash in self.conn.execute(
                f"SELECT id, sender, control_id, content_hash FROM messages "
                f"WHERE control_id {among} AND received_at>=? "
                f"AND duplicate_of IS NULL AND status!='error' ORDER BY id", (control_ids, cutoff)):
            if (sender, control_id) in wanted:
                found.setdefault((sender, control_id), []).append((message_id, content_hash))
        return found

    def _apply(self, changes: list[StatusChange]) -> int:
        """Only rows still in 'received' change, so applying the same changes twice changes nothing.

        A 'transformed' change carrying a mapped message also updates its referral, in this transaction;
        if that fails, the message goes to 'error' with the reason (one bad message never blocks a batch)."""
        now = now_iso()
        plain = [c for c in changes if c.mapped is None]
        moved = self.conn.executemany(
            "UPDATE messages SET status=?, error=?, updated_at=? WHERE id=? AND status='received'",
            [(c.status, c.reason, now, c.id) for c in plain]).rowcount if plain else 0
        mapped = [c for c in changes if c.mapped is not None]
        if mapped:
            from engine.config import ReferralsConfig
            from engine.referral_store import ReferralStore
            from engine.referrals import apply_message
            store, rules = ReferralStore(self.conn), self.referral_rules or ReferralsConfig()
            for c in mapped:
                if not self.conn.execute("UPDATE messages SET status=?, error=?, updated_at=? WHERE id=? AND "
                                         "status='received'", (c.status, c.reason, now, c.id)).rowcount:
                    continue
                moved += 1
                if c.status != "transformed":
                    continue
                self.conn.execute("SAVEPOINT message")    # the referral change and what it owes, or neither
                try:
                    applied = apply_message(store, rules, c.id, c.mapped, now)
                    if self.after_apply is not None and applied.referral_id is not None:
                        self.after_apply(self.conn, c.id, applied)
                    self.conn.execute("RELEASE message")
                except Exception as exc:   # the log carries ids only; the reason (may hold data) goes to the row
                    self.conn.execute("ROLLBACK TO message")
                    self.conn.execute("RELEASE message")
                    log.error("referral update failed", extra={"fields": {"message_id": c.id,
                                                                           "error": type(exc).__name__}})
                    log.debug("referral update failed", exc_info=True)
                    self.conn.execute("UPDATE messages SET status='error', error=? WHERE id=?",
                                      (f"referral update failed: {type(exc).__name__}: {exc}", c.id))
        return moved

    def requeue(self, since: str | None = None, channel: str | None = None,
                message_ids: list[int] | None = None) -> int:
        """Put processed messages back to 'received' so the processor runs them through the current
        mappings again (replay). Only messages that were accepted (ACK AA/CA) and are not duplicates;
        referral updates already applied are not repeated (engine.referrals is idempotent per message)."""
        accepted = "ack_code IN ('AA', 'CA')"   # AA, or CA in enhanced mode
        where = ["status IN ('transformed', 'filtered', 'error')", accepted, "duplicate_of IS NULL"]
        args: list = []
        if since:
            where.append("received_at>=?")
            args.append(since)
        if channel:
            where.append("channel=?")
            args.append(channel)
        if message_ids is not None:
            among, ids = backend.any_of(self.conn, message_ids)
            where.append(f"id {among}")
            args.append(ids)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            count = self.conn.execute(f"UPDATE messages SET status='received', updated_at=? WHERE "
                                      f"{' AND '.join(where)}", [now_iso(), *args]).rowcount
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return count

    def link(self, message_id: int, referral_id: int) -> str | None:
        """A coordinator links an unmatched message to a referral; the message is requeued so the
        processor replays it against that referral. Returns None, or why it cannot be linked."""
        from engine.referral_store import ReferralStore
        store = ReferralStore(self.conn)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            if store.get(referral_id) is None:
                problem = f"no referral with id {referral_id}"
            elif not store.request_link(message_id, referral_id):
                problem = f"message {message_id} is not waiting in the unmatched list"
            else:
                problem = None
                self.conn.execute("UPDATE messages SET status='received', updated_at=? WHERE id=?",
                                  (now_iso(), message_id))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return problem

    # ---- reads ---------------------------------------------------------

    def next_batch(self, limit: int, node: str, lease_seconds: float = 60.0) -> list:
        """The messages this node processes next, oldest first. SQLite (one node): `pending`.

        PostgreSQL (several nodes): claimed for `lease_seconds` (a dead node's claim runs out and another
        node takes the batch; applying is idempotent, so a slow node's late apply changes nothing). A
        message is left alone while an earlier message of the same patient is claimed by another node:
        one patient's messages apply in order across nodes. Claims are serialized by a short advisory
        lock, so each claim sees every other node's claims (SKIP LOCKED covers rows a writer holds)."""
        if not self.postgres:
            return self.pending(limit)
        now = datetime.now(timezone.utc)
        until = now_iso(now + timedelta(seconds=lease_seconds))
        self.conn.execute("BEGIN")
        try:
            self.conn.execute("SELECT pg_advisory_xact_lock(?)", (backend.CLAIM_LOCK,))
            rows = self.conn.execute(
                "UPDATE messages SET claimed_by=?, claim_until=? WHERE id IN ("
                " SELECT m.id FROM messages m WHERE m.status='received'"
                " AND (m.claim_until IS NULL OR m.claim_until<? OR m.claimed_by=?)"
                " AND NOT EXISTS (SELECT 1 FROM messages e WHERE e.patient_id=m.patient_id AND e.status='received'"
                "  AND e.id<m.id AND e.claimed_by<>? AND e.claim_until>=?)"
                " ORDER BY m.id LIMIT ? FOR UPDATE SKIP LOCKED) "
                "RETURNING id, channel, raw, charset, message_type",
                (node, until, now_iso(now), node, node, now_iso(now), limit)).fetchall()
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return sorted(rows, key=lambda r: r[0])

    def pending(self, limit: int) -> list[sqlite3.Row]:
        """Messages acknowledged but not yet processed, oldest first."""
        return self.conn.execute(
            "SELECT id, channel, raw, charset, message_type FROM messages WHERE status='received' "
            "ORDER BY id LIMIT ?", (limit,)).fetchall()

    def get(self, message_id: int) -> sqlite3.Row | None:
        return self.conn.execute("SELECT * FROM messages WHERE id=?", (message_id,)).fetchone()

    def search(self, *, control_id: str | None = None, patient_id: str | None = None,
               message_type: str | None = None, status: str | None = None, channel: str | None = None,
               since: str | None = None, until: str | None = None, limit: int = 100) -> list[sqlite3.Row]:
        """Newest first. `message_type` 'ORM' matches every ORM trigger; 'ORM^O01' exactly."""
        where, args = [], []
        for column, value in (("control_id", control_id), ("patient_id", patient_id), ("status", status),
                              ("channel", channel)):
            if value is not None:
                where.append(f"{column}=?")
                args.append(value)
        if message_type:
            if "^" in message_type:
                where.append("message_type=?")
                args.append(message_type)
            else:
                where.append("(message_type=? OR message_type LIKE ?)")
                args += [message_type, f"{message_type}^%"]
        if since:
            where.append("received_at>=?")
            args.append(since)
        if until:
            where.append("received_at<?")
            args.append(until)
        sql = ("SELECT id, channel, received_at, peer, control_id, sender, message_type, version, patient_id, "
               "status, ack_code, error, warnings, duplicate_of, length(raw) AS size FROM messages")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        return self.conn.execute(sql, args).fetchall()

    def counts(self) -> dict[str, int]:
        return {row[0]: row[1] for row in self.conn.execute("SELECT status, count(*) FROM messages GROUP BY status")}

    def iter_ids(self) -> Iterator[int]:
        for row in self.conn.execute("SELECT id FROM messages ORDER BY id"):
            yield row[0]

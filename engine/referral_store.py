"""The referral tables: schema (migration 2), look-ups for matching, writes, worklist reads.

All referral SQL lives here, behind `ReferralStore`, in the one dialect both backends accept
(engine.db: SQLite, or PostgreSQL). The store never decides anything: the lifecycle
and `engine.referrals` do, and `set_status` is the one place that writes status
history. Writes run inside the caller's transaction (the journal's single
writer), so a message's status and its referral changes commit together.
"""
from __future__ import annotations

import json
from typing import Any, Iterable

import sqlite_utils

from engine.db import any_of
from engine.matching import Candidate, parse_time

# Columns of `referrals` that hold JSON (decoded on read).
JSON_COLUMNS = ("patient", "referring_provider", "receiving_provider", "insurance", "missing", "extras")


def migrate_referrals(db: sqlite_utils.Database) -> None:
    """Migration 2: referrals and everything hanging off them (`db`: engine.db.PgSchema on PostgreSQL)."""
    db["referrals"].create({
        "id": int, "status": str, "urgency": str, "specialty": str, "service_code": str, "service_text": str,
        "reason": str, "placer_order_number": str, "filler_order_number": str, "referral_number": str,
        "patient_mrn": str, "patient_family_name": str, "patient_given_name": str, "patient_birth_date": str,
        "patient_sex": str, "patient_phone": str, "patient": str,
        "referring_npi": str, "referring_name": str, "referring_provider": str,
        "receiving_department": str, "receiving_destination": str, "receiving_provider": str,
        "payer": str, "member_id": str, "insurance": str,
        "authorization_required": int, "authorization_number": str, "authorization_status": str,
        "owner": str, "next_action": str, "next_action_due": str,
        "referred_at": str, "created_at": str, "updated_at": str, "source_message_id": int,
        "leakage_risk": int, "missing": str, "note_received": int, "extras": str,
    }, pk="id", not_null={"status", "created_at", "updated_at"}, defaults={"leakage_risk": 0, "note_received": 0})
    t = db["referrals"]
    t.create_index(["status", "specialty", "created_at"])       # worklists
    t.create_index(["placer_order_number"])
    t.create_index(["filler_order_number"])
    t.create_index(["referral_number"])
    t.create_index(["owner", "status"])
    t.create_index(["status", "next_action_due"])               # aging / escalation
    t.create_index(["created_at"])                              # KPIs by period
    t.create_index(["patient_mrn"])

    db["referral_identifiers"].create({"referral_id": int, "identifier": str, "authority": str, "type": str},
                                      not_null={"referral_id", "identifier"},
                                      foreign_keys=[("referral_id", "referrals", "id")])
    db["referral_identifiers"].create_index(["identifier", "authority"])
    db["referral_identifiers"].create_index(["referral_id", "identifier", "authority"], unique=True)

    db["diagnoses"].create({"id": int, "referral_id": int, "code": str, "system": str, "description": str,
                            "valid": int}, pk="id", not_null={"referral_id", "code"},
                           foreign_keys=[("referral_id", "referrals", "id")])
    db["diagnoses"].create_index(["referral_id", "code"], unique=True)
    db["diagnoses"].create_index(["code"])

    db["appointments"].create({"id": int, "referral_id": int, "placer_id": str, "filler_id": str, "start": str,
                               "duration_minutes": int, "location": str, "provider": str, "status": str,
                               "reason": str, "message_id": int, "event_time": str, "created_at": str,
                               "updated_at": str},
                              pk="id", not_null={"referral_id"}, foreign_keys=[("referral_id", "referrals", "id")])
    db["appointments"].create_index(["referral_id"])
    db["appointments"].create_index(["placer_id"])
    db["appointments"].create_index(["filler_id"])
    db["appointments"].create_index(["status", "start"])

    db["documents"].create({"id": int, "referral_id": int, "message_id": int, "kind": str, "document_id": str,
                            "title": str, "author": str, "date": str, "status": str, "text": str,
                            "content_type": str, "content": bytes, "received_at": str},
                           pk="id", not_null={"referral_id", "kind"}, foreign_keys=[("referral_id", "referrals", "id")])
    db["documents"].create_index(["referral_id"])

    db["status_history"].create({"id": int, "referral_id": int, "from_status": str, "to_status": str, "at": str,
                                 "cause_kind": str, "cause_id": str, "detail": str},
                                pk="id", not_null={"referral_id", "to_status", "at", "cause_kind"},
                                foreign_keys=[("referral_id", "referrals", "id")])
    db["status_history"].create_index(["referral_id", "id"])
    db["status_history"].create_index(["to_status", "at"])     # KPIs: time to scheduled / completed

    db["referral_messages"].create({"message_id": int, "referral_id": int, "event": str, "outcome": str,
                                    "rule": str, "at": str}, pk="message_id", not_null={"referral_id", "event"},
                                   foreign_keys=[("referral_id", "referrals", "id"), ("message_id", "messages", "id")])
    db["referral_messages"].create_index(["referral_id", "message_id"])

    db["review_exceptions"].create({"id": int, "referral_id": int, "message_id": int, "event": str, "status": str,
                                    "reason": str, "created_at": str, "resolved_at": str},
                                   pk="id", not_null={"referral_id", "reason", "created_at"},
                                   foreign_keys=[("referral_id", "referrals", "id")])
    db["review_exceptions"].create_index(["resolved_at", "created_at"])
    db["review_exceptions"].create_index(["referral_id"])

    db["unmatched"].create({"message_id": int, "event": str, "candidates": str, "created_at": str,
                            "resolved_at": str, "link_referral_id": int, "resolved_referral_id": int},
                           pk="message_id", not_null={"event", "created_at"},
                           foreign_keys=[("message_id", "messages", "id")])
    db["unmatched"].create_index(["resolved_at", "created_at"])


def migrate_coordinator(db: sqlite_utils.Database) -> None:
    """Migration 3: what coordinators do besides changing status (owner, next action, resolving a review
    exception), one `referral_events` row each, shaped like `status_history` (from/to value, at, cause).
    A separate table keeps `status_history` one row per real status change, which the KPIs count."""
    db["referral_events"].create({"id": int, "referral_id": int, "kind": str, "from_value": str, "to_value": str,
                                  "at": str, "cause_kind": str, "cause_id": str, "detail": str},
                                 pk="id", not_null={"referral_id", "kind", "at", "cause_kind"},
                                 foreign_keys=[("referral_id", "referrals", "id")])
    db["referral_events"].create_index(["referral_id", "id"])
    db["review_exceptions"].add_column("resolved_by", str)
    db["review_exceptions"].add_column("resolution_note", str)


def _row(row) -> dict | None:
    if row is None:
        return None
    out = dict(row)
    for key in JSON_COLUMNS:
        if key in out and out[key] is not None:
            out[key] = json.loads(out[key])
    return out


_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True)   # json.dumps would build one per call


def _json(value: Any) -> str | None:
    return None if value is None else _ENCODER.encode(value)


class ReferralStore:
    """Referral reads and writes over one connection (the journal's writer, or a reader's)."""

    def __init__(self, conn):
        self.conn = conn            # an engine.db connection, either backend

    # ---- look-ups for matching (engine.matching.ReferralLookup) ----------------

    def linked_referral(self, message_id: int) -> int | None:
        row = self.conn.execute("SELECT link_referral_id FROM unmatched WHERE message_id=?", (message_id,)).fetchone()
        return row[0] if row else None

    def by_order_number(self, placer: str | None, filler: str | None) -> list[int]:
        """A placer number may have been stored as the referral number (RF1-6) and vice versa."""
        if placer:
            sql, args = "placer_order_number=? OR referral_number=?", (placer, placer)
        else:
            sql, args = "filler_order_number=?", (filler,)
        return [r[0] for r in self.conn.execute(f"SELECT id FROM referrals WHERE {sql} LIMIT 5", args)]

    def by_referral_number(self, number: str) -> list[int]:
        return [r[0] for r in self.conn.execute(
            "SELECT id FROM referrals WHERE referral_number=? OR placer_order_number=? LIMIT 5", (number, number))]

    def by_appointment(self, placer_id: str | None, filler_id: str | None) -> list[int]:
        found: set[int] = set()
        if placer_id:
            found |= {r[0] for r in self.conn.execute(
                "SELECT referral_id FROM appointments WHERE placer_id=?", (placer_id,))}
        if filler_id and not found:
            found |= {r[0] for r in self.conn.execute(
                "SELECT referral_id FROM appointments WHERE filler_id=?", (filler_id,))}
        return sorted(found)

    def by_patient(self, identifiers: list[tuple[str, str | None]]) -> list[Candidate]:
        """An identifier without authority matches any authority; with one, only the same (or none stored)."""
        ids: set[int] = set()
        for identifier, authority in identifiers:
            if authority:
                rows = self.conn.execute(
                    "SELECT referral_id FROM referral_identifiers WHERE identifier=? AND "
                    "(authority=? OR authority IS NULL) LIMIT 200", (identifier, authority))
            else:
                rows = self.conn.execute(
                    "SELECT referral_id FROM referral_identifiers WHERE identifier=? LIMIT 200", (identifier,))
            ids |= {r[0] for r in rows}
        if not ids:
            return []
        among, param = any_of(self.conn, sorted(ids))
        return [Candidate(r[0], r[1], r[2], r[3], r[4]) for r in self.conn.execute(
            f"SELECT id, status, specialty, referred_at, referral_number FROM referrals WHERE id {among} ORDER BY id",
            (param,))]

    # ---- reads ------------------------------------------------------------------

    def get(self, referral_id: int) -> dict | None:
        return _row(self.conn.execute("SELECT * FROM referrals WHERE id=?", (referral_id,)).fetchone())

    def is_applied(self, message_id: int) -> bool:
        """The message already changed (or was refused by) a referral: applying it again changes nothing."""
        return self.conn.execute("SELECT 1 FROM referral_messages WHERE message_id=?",
                                 (message_id,)).fetchone() is not None

    def appointments(self, referral_id: int) -> list[dict]:
        return [dict(r) for r in self.conn.execute(
            "SELECT * FROM appointments WHERE referral_id=? ORDER BY id", (referral_id,))]

    def diagnoses(self, referral_id: int) -> list[dict]:
        return [dict(r) for r in self.conn.execute(
            "SELECT code, system, description, valid FROM diagnoses WHERE referral_id=? ORDER BY id", (referral_id,))]

    def identifiers(self, referral_id: int) -> list[dict]:
        return [dict(r) for r in self.conn.execute(
            "SELECT identifier, authority, type FROM referral_identifiers WHERE referral_id=? ORDER BY rowid",
            (referral_id,))]

    def completeness_counts(self, referral_id: int) -> tuple[int, int, int]:
        """(diagnoses, patient identifiers, documents) of a referral, for the completeness rules."""
        return tuple(self.conn.execute(           # positional: PostgreSQL's driver takes no :name parameters
            "SELECT (SELECT count(*) FROM diagnoses WHERE referral_id=?), "
            "(SELECT count(*) FROM referral_identifiers WHERE referral_id=?), "
            "(SELECT count(*) FROM documents WHERE referral_id=?)", (referral_id,) * 3).fetchone())

    def order_canceled(self, referral_id: int) -> bool:
        return self.conn.execute("SELECT 1 FROM referral_messages WHERE referral_id=? AND event='referral.cancel' "
                                 "AND outcome='applied' LIMIT 1", (referral_id,)).fetchone() is not None

    def search(self, *, status: str | None = None, specialty: str | None = None, urgency: str | None = None,
               patient_id: str | None = None, owner: str | None = None, limit: int = 100) -> list[dict]:
        """Worklist order: oldest first within the filter (what has waited longest comes first)."""
        where, args = [], []
        for column, value in (("status", status), ("specialty", specialty), ("urgency", urgency), ("owner", owner)):
            if value is not None:
                where.append(f"r.{column}=?")
                args.append(value)
        if patient_id is not None:
            where.append("r.id IN (SELECT referral_id FROM referral_identifiers WHERE identifier=?)")
            args.append(patient_id)
        sql = ("SELECT r.id, r.status, r.urgency, r.specialty, r.service_text, r.reason, r.placer_order_number, "
               "r.referral_number, r.patient_mrn, r.patient_family_name, r.patient_given_name, r.patient_birth_date, "
               "r.referring_npi, r.referring_name, r.receiving_department, r.receiving_destination, r.payer, "
               "r.member_id, r.owner, r.next_action, r.next_action_due, r.leakage_risk, r.missing, r.note_received, "
               "r.referred_at, r.created_at, r.updated_at FROM referrals r")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.created_at, r.id LIMIT ?"
        args.append(limit)
        return [_row(r) for r in self.conn.execute(sql, args)]

    def timeline(self, referral_id: int) -> dict | None:
        referral = self.get(referral_id)
        if referral is None:
            return None
        q = self.conn.execute
        return {
            "referral": referral,
            "identifiers": self.identifiers(referral_id),
            "diagnoses": self.diagnoses(referral_id),
            "appointments": self.appointments(referral_id),
            "documents": [dict(r) for r in q(
                "SELECT id, message_id, kind, document_id, title, author, date, status, content_type, "
                "length(text) AS text_chars, length(content) AS content_bytes, received_at FROM documents "
                "WHERE referral_id=? ORDER BY id", (referral_id,))],
            "history": [dict(r) for r in q(
                "SELECT from_status, to_status, at, cause_kind, cause_id, detail FROM status_history "
                "WHERE referral_id=? ORDER BY id", (referral_id,))],
            "messages": [dict(r) for r in q(
                "SELECT l.message_id, l.event, l.outcome, l.rule, l.at, m.message_type, m.control_id, m.received_at "
                "FROM referral_messages l LEFT JOIN messages m ON m.id=l.message_id WHERE l.referral_id=? "
                "ORDER BY l.message_id", (referral_id,))],
            "exceptions": [dict(r) for r in q(
                "SELECT id, message_id, event, status, reason, created_at, resolved_at, resolved_by, "
                "resolution_note FROM review_exceptions WHERE referral_id=? ORDER BY id", (referral_id,))],
            "events": self.events(referral_id),
            "outbound": [dict(r) for r in q(
                "SELECT id, destination, rule, message_type, control_id, status, attempts, last_error, created_at, "
                "sent_at, closes_loop FROM outbound WHERE referral_id=? ORDER BY id", (referral_id,))],
        }

    def unmatched(self, include_resolved: bool = False, limit: int = 100) -> list[dict]:
        sql = ("SELECT u.message_id, u.event, u.candidates, u.created_at, u.resolved_at, u.link_referral_id, "
               "u.resolved_referral_id, m.message_type, m.control_id, m.patient_id, m.received_at "
               "FROM unmatched u LEFT JOIN messages m ON m.id=u.message_id")
        if not include_resolved:
            sql += " WHERE u.resolved_at IS NULL"
        sql += " ORDER BY u.message_id LIMIT ?"
        out = []
        for r in self.conn.execute(sql, (limit,)):
            row = dict(r)
            row["candidates"] = json.loads(row["candidates"] or "[]")
            out.append(row)
        return out

    # ---- writes (inside the caller's transaction) -------------------------------

    def savepoint(self) -> None:
        """One message's referral changes are all-or-nothing inside the writer's larger transaction."""
        self.conn.execute("SAVEPOINT referral_message")

    def release_savepoint(self) -> None:
        self.conn.execute("RELEASE referral_message")

    def rollback_savepoint(self) -> None:
        self.conn.execute("ROLLBACK TO referral_message")
        self.conn.execute("RELEASE referral_message")

    def create(self, fields: dict, at: str) -> int:
        fields = {**fields, "created_at": at, "updated_at": at}
        columns = list(fields)
        values = [_json(v) if k in JSON_COLUMNS else v for k, v in fields.items()]
        # RETURNING, not lastrowid (SQLite only); the row is fetched before the next statement
        return self.conn.execute(f"INSERT INTO referrals ({', '.join(columns)}) VALUES "
                                 f"({', '.join('?' * len(columns))}) RETURNING id", values).fetchone()[0]

    def update(self, referral_id: int, fields: dict, at: str) -> None:
        """Set data fields; status only ever changes through `set_status`."""
        self._write_row(referral_id, {k: v for k, v in fields.items() if k != "status"}, at)

    def _write_row(self, referral_id: int, fields: dict, at: str) -> None:
        fields = {**fields, "updated_at": at}
        sets = ", ".join(f"{k}=?" for k in fields)
        values = [_json(v) if k in JSON_COLUMNS else v for k, v in fields.items()]
        self.conn.execute(f"UPDATE referrals SET {sets} WHERE id=?", [*values, referral_id])

    def set_status(self, referral_id: int, from_status: str | None, to_status: str, at: str, cause_kind: str,
                   cause_id: str | int | None, detail: str | None = None, fields: dict | None = None) -> None:
        """The one place that changes a referral's status, and it always writes the history row with it.
        `fields`: data the same event changed (as for `update`), written in the same row update."""
        self._write_row(referral_id, {**(fields or {}), "status": to_status}, at)
        self.conn.execute(
            "INSERT INTO status_history (referral_id, from_status, to_status, at, cause_kind, cause_id, detail) "
            "VALUES (?,?,?,?,?,?,?)",
            (referral_id, from_status, to_status, at, cause_kind, None if cause_id is None else str(cause_id), detail))

    def add_identifiers(self, referral_id: int, identifiers: Iterable[tuple[str, str | None, str | None]]) -> None:
        self.conn.executemany("INSERT INTO referral_identifiers (referral_id, identifier, authority, type) "
                              "VALUES (?,?,?,?) ON CONFLICT DO NOTHING", [(referral_id, *i) for i in identifiers])

    def add_diagnoses(self, referral_id: int, diagnoses: Iterable[tuple[str, str | None, str | None, bool]]) -> None:
        self.conn.executemany("INSERT INTO diagnoses (referral_id, code, system, description, valid) "
                              "VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
                              [(referral_id, c, s, d, int(v)) for c, s, d, v in diagnoses])

    def upsert_appointment(self, referral_id: int, appointment: dict, message_id: int | None,
                           event_time: str | None, at: str) -> None:
        """Same placer or filler id on the same referral = the same appointment. The state from the
        message with the latest event time wins, so a late S12 never undoes the S13 that overtook it."""
        existing = None
        for column in ("placer_id", "filler_id"):
            if appointment.get(column) and existing is None:
                existing = self.conn.execute(f"SELECT id, event_time FROM appointments WHERE referral_id=? AND "
                                             f"{column}=?", (referral_id, appointment[column])).fetchone()
        if existing is None:
            columns = ["referral_id", *appointment, "message_id", "event_time", "created_at", "updated_at"]
            self.conn.execute(f"INSERT INTO appointments ({', '.join(columns)}) VALUES "
                              f"({', '.join('?' * len(columns))})",
                              [referral_id, *appointment.values(), message_id, event_time, at, at])
            return
        newer, stored = parse_time(event_time), parse_time(existing[1])
        if newer and stored and newer < stored:
            return
        values = {k: v for k, v in appointment.items() if v is not None}
        values.update(message_id=message_id, event_time=event_time or existing[1], updated_at=at)
        self.conn.execute(f"UPDATE appointments SET {', '.join(f'{k}=?' for k in values)} WHERE id=?",
                          [*values.values(), existing[0]])

    def active_appointments(self, referral_id: int) -> int:
        return self.conn.execute("SELECT count(*) FROM appointments WHERE referral_id=? AND "
                                 "coalesce(status, 'booked') NOT IN ('canceled', 'no_show', 'completed')",
                                 (referral_id,)).fetchone()[0]

    def add_document(self, referral_id: int, message_id: int | None, document: dict, content: bytes | None,
                     at: str) -> None:
        columns = ["referral_id", "message_id", *document, "content", "received_at"]
        self.conn.execute(f"INSERT INTO documents ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                          [referral_id, message_id, *document.values(), content, at])

    def link_message(self, message_id: int, referral_id: int, event: str, outcome: str, rule: str | None,
                     at: str) -> None:
        self.conn.execute("INSERT INTO referral_messages (message_id, referral_id, event, outcome, rule, at) "
                          "VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                          (message_id, referral_id, event, outcome, rule, at))
        self.conn.execute("UPDATE unmatched SET resolved_at=?, resolved_referral_id=? WHERE message_id=? AND "
                          "resolved_at IS NULL", (at, referral_id, message_id))

    def add_exception(self, referral_id: int, message_id: int | None, event: str, status: str, reason: str,
                      at: str) -> None:
        self.conn.execute("INSERT INTO review_exceptions (referral_id, message_id, event, status, reason, created_at) "
                          "VALUES (?,?,?,?,?,?)", (referral_id, message_id, event, status, reason, at))

    def keep_unmatched(self, message_id: int, event: str, candidates: Iterable[int], at: str) -> None:
        self.conn.execute(
            "INSERT INTO unmatched (message_id, event, candidates, created_at) VALUES (?,?,?,?) "
            "ON CONFLICT(message_id) DO UPDATE SET event=excluded.event, candidates=excluded.candidates",
            (message_id, event, json.dumps(sorted(candidates)), at))

    def request_link(self, message_id: int, referral_id: int) -> bool:
        """A coordinator's decision: this unmatched message belongs to that referral. False if not unmatched."""
        cur = self.conn.execute("UPDATE unmatched SET link_referral_id=? WHERE message_id=? AND resolved_at IS NULL",
                                (referral_id, message_id))
        return cur.rowcount == 1

    # ---- coordinator actions (inside the caller's transaction; engine.coordinator opens it) --------

    def add_event(self, referral_id: int, kind: str, from_value: str | None, to_value: str | None, at: str,
                  cause_kind: str, cause_id: str | None, detail: str | None = None) -> None:
        """The one place that writes `referral_events` (owner, next action, exception resolved)."""
        self.conn.execute(
            "INSERT INTO referral_events (referral_id, kind, from_value, to_value, at, cause_kind, cause_id, detail) "
            "VALUES (?,?,?,?,?,?,?,?)", (referral_id, kind, from_value, to_value, at, cause_kind, cause_id, detail))

    def assign(self, referral_id: int, owner: str, by_user: str, at: str) -> bool:
        """Set the owner, with an 'owner' event (from the previous owner). False: no such referral."""
        row = self.conn.execute("SELECT owner FROM referrals WHERE id=?", (referral_id,)).fetchone()
        if row is None:
            return False
        self.conn.execute("UPDATE referrals SET owner=?, updated_at=? WHERE id=?", (owner, at, referral_id))
        self.add_event(referral_id, "owner", row[0], owner, at, "user", by_user)
        return True

    def set_next_action(self, referral_id: int, text: str, due: str | None, by_user: str, at: str) -> bool:
        """Set the next action and its due date/time (ISO, already checked), with a 'next_action' event
        whose from/to values are "text (due)". False: no such referral."""
        row = self.conn.execute("SELECT next_action, next_action_due FROM referrals WHERE id=?",
                                (referral_id,)).fetchone()
        if row is None:
            return False
        self.conn.execute("UPDATE referrals SET next_action=?, next_action_due=?, updated_at=? WHERE id=?",
                          (text, due, at, referral_id))
        before = None if row[0] is None and row[1] is None else f"{row[0] or ''} (due {row[1] or '-'})"
        self.add_event(referral_id, "next_action", before, f"{text} (due {due or '-'})", at, "user", by_user)
        return True

    def exception(self, exception_id: int) -> dict | None:
        row = self.conn.execute("SELECT * FROM review_exceptions WHERE id=?", (exception_id,)).fetchone()
        return None if row is None else dict(row)

    def resolve_exception(self, exception_id: int, by_user: str, note: str | None, at: str) -> bool:
        """Mark an open review exception resolved, with an 'exception_resolved' event on its referral.
        False: no such exception, or already resolved. The referral's status is not touched."""
        row = self.conn.execute("SELECT referral_id, reason FROM review_exceptions WHERE id=? AND resolved_at IS NULL",
                                (exception_id,)).fetchone()
        if row is None:
            return False
        self.conn.execute("UPDATE review_exceptions SET resolved_at=?, resolved_by=?, resolution_note=? WHERE id=?",
                          (at, by_user, note, exception_id))
        self.add_event(row[0], "exception_resolved", row[1], str(exception_id), at, "user", by_user, note)
        return True

    def events(self, referral_id: int) -> list[dict]:
        return [dict(r) for r in self.conn.execute(
            "SELECT kind, from_value, to_value, at, cause_kind, cause_id, detail FROM referral_events "
            "WHERE referral_id=? ORDER BY id", (referral_id,))]
